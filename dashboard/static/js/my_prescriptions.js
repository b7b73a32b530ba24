// The patient's own prescriptions (issue 18, item 6), for the patient's space: each ordonnance with its status in plain
// words (émise, partiellement délivrée, délivrée, expirée, annulée), what is left to collect, and on demand the QR code
// and access code to show at the pharmacy (GET /prescriptions/{id}/qr.svg and /access-code: the patient's own
// account only). API: docs/prescriptions.md, "HTTP API".
import { get } from "./api.js";
import { fmtNumber, t } from "./i18n.js";
import { errorText, fmtDate, h, nextId, statusPill } from "./rx.js";

export class MyPrescriptions {
  // heading: false inside a section that has its own (the patient space's "prescriptions" slot).
  constructor(root, patientId, { heading = true } = {}) {
    this.root = root;
    this.patientId = patientId;
    this.list = h("ol", { class: "rx-list rx-mine" });
    this.status = h("p", { class: "muted", role: "status" });
    if (heading) {
      const hid = nextId("rx-mine-h");
      this.root.replaceChildren(h("section", { class: "rx-my", "aria-labelledby": hid },
        h("h2", { id: hid }, t("rx.mine.title")), this.status, this.list));
    } else this.root.replaceChildren(h("div", { class: "rx-my" }, this.status, this.list));
    this.ready = this.load();
  }

  destroy() { this.destroyed = true; }

  async load() {
    let list;
    try { list = await get(`/patients/${this.patientId}/prescriptions`); } catch (err) { this.status.textContent = errorText(err); return; }
    if (this.destroyed) return;
    this.status.textContent = list.length ? "" : t("rx.mine.empty");
    this.list.replaceChildren(...list.map((rx) => this.item(rx)));
    this.root.dataset.loaded = String(list.length);
  }

  item(rx) {
    const open = rx.status === "issued" || rx.status === "partially_dispensed";
    const qrBox = h("div", { class: "rx-qr", hidden: true });
    const btn = open ? h("button", { type: "button", class: "rx-show-qr", "aria-expanded": "false",
      onclick: () => this.toggleQr(rx, qrBox, btn) }, t("rx.mine.show_qr")) : "";
    return h("li", { class: `rx-item rx-${rx.status}`, dataset: { prescriptionId: rx.id, status: rx.status } },
      h("p", { class: "rx-head" }, statusPill(rx.status), " ", h("strong", {}, t("rx.item.title", { date: fmtDate(rx.issued_at) })),
        " ", h("span", { class: "muted" }, `${rx.prescriber ? rx.prescriber.display_name : ""} · ${t("rx.valid_until", { date: fmtDate(rx.valid_until) })}`)),
      rx.status === "cancelled" ? h("p", { class: "rx-cancelled" }, rx.superseded_by ? t("rx.superseded") : t("rx.mine.cancelled", { reason: rx.cancel_reason || "—" })) : "",
      h("ul", { class: "rx-hlines" }, ...rx.lines.map((l) => h("li", { dataset: { lineNo: l.line_no, status: l.status } },
        h("strong", {}, l.medicine), " — ",
        t("rx.posology", { dose: fmtNumber(l.dose, Number.isInteger(l.dose) ? 0 : 1), unit: l.dose_unit, n: l.times_per_day, days: l.duration_days }),
        l.instructions ? h("span", { lang: "fr" }, ` — ${l.instructions}`) : "", " · ",
        t("rx.mine.left", { n: fmtNumber(l.remaining), total: fmtNumber(l.quantity * (1 + (l.repeats || 0))), unit: l.quantity_unit })))),
      btn, qrBox);
  }

  async toggleQr(rx, box, btn) {
    const show = box.hidden;
    box.hidden = !show;
    btn.setAttribute("aria-expanded", String(show));
    btn.textContent = show ? t("rx.mine.hide_qr") : t("rx.mine.show_qr");
    if (!show || box.childElementCount) return;
    try {
      const a = await get(`/prescriptions/${rx.id}/access-code`);
      box.append(h("img", { src: `/api/v1/prescriptions/${rx.id}/qr.svg`, alt: t("rx.mine.qr_alt"), width: 220, height: 220 }),
        h("p", {}, t("rx.mine.code"), " ", h("strong", { class: "rx-access-code" }, a.access_code)),
        h("p", { class: "muted" }, t("rx.mine.qr_hint")));
    } catch (err) { box.append(h("p", { class: "error" }, errorText(err))); }
  }
}
