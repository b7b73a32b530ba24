// The pharmacist's page (issue 18), #/pharmacy and #/pharmacy/<id>/<code> (the URL in the ordonnance's QR code): scan
// the QR (a scanner types its text into the first field) or type the ordonnance's number and access code, see the
// prescription as a pharmacy may (no other patient data), the signature check (green check, red cross when the stored
// record no longer matches its signature), then dispense all or part of each line with its batch and, where allowed, a
// generic of the same DCI. A 409 (dispensed elsewhere meanwhile, cancelled, expired) is said in words and the
// prescription reloaded. API: docs/prescriptions.md, "HTTP API" (POST /pharmacy/lookup, .../dispense, GET /pharmacy/me).
import { get, post } from "./api.js";
import { fmtDateTime, fmtNumber, t } from "./i18n.js";
import { dispenseItem } from "./rx_history.js";
import { errorText, field, fmtDate, h, nextId, statusPill } from "./rx.js";

const DISPENSABLE = new Set(["issued", "partially_dispensed"]);

function conflictText(err) {
  const d = err.body && err.body.detail;
  if (d && typeof d === "object" && d.code) {
    // Ours when the code is known here (in the page's language), else the server's French sentence.
    const key = `rx.conflict.${d.code}`;
    const s = t(key, { n: d.line_no || "" });
    return { code: d.code, text: s !== key ? s : d.message || d.code };
  }
  if (err.status === 404) return { code: "not_found", text: t("rx.pharmacy.not_found") };
  if (err.status === 429) return { code: "too_many", text: t("rx.pharmacy.too_many") };
  if (err.status === 403) return { code: "forbidden", text: t("rx.pharmacy.forbidden", { detail: err.detail }) };
  return { code: "error", text: errorText(err) };
}

export class PharmacyView {
  // id, code: from the route #/pharmacy/<id>/<code> (the QR's URL), or undefined.
  constructor(root, { id, code } = {}) {
    this.root = root;
    this.prescription = null;
    this.accessCode = null;
    this._build();
    this.ready = this.start(id, code);
  }

  destroy() { this.destroyed = true; }

  _build() {
    this.root.className = "pharmacy";
    this.who = h("p", { class: "muted rx-pharmacy-name" });
    this.scan = h("input", { type: "text", autocomplete: "off", spellcheck: false, class: "rx-scan", name: "qr" });
    this.rxId = h("input", { type: "text", autocomplete: "off", spellcheck: false, class: "rx-id", name: "prescription_id" });
    this.code = h("input", { type: "text", autocomplete: "off", spellcheck: false, class: "rx-code", name: "access_code", maxLength: 24 });
    this.formError = h("p", { class: "error rx-lookup-error", role: "alert" });
    const scanForm = h("form", { class: "rx-scan-form", onsubmit: (ev) => { ev.preventDefault(); this.lookup({ qr: this.scan.value.trim() }); } },
      field(t("rx.pharmacy.scan"), this.scan, t("rx.pharmacy.scan_hint")), h("button", { type: "submit", class: "primary" }, t("rx.pharmacy.open")));
    const manual = h("form", { class: "rx-manual-form", onsubmit: (ev) => {
      ev.preventDefault();
      this.lookup({ prescription_id: this.rxId.value.trim(), access_code: this.code.value.trim() });
    } }, h("div", { class: "rx-row" }, field(t("rx.pharmacy.id"), this.rxId), field(t("rx.pharmacy.code"), this.code, t("rx.pharmacy.code_hint"))),
    h("button", { type: "submit" }, t("rx.pharmacy.open")));
    this.view = h("section", { class: "rx-pharmacy-rx", "aria-live": "polite" });
    this.root.replaceChildren(h("h1", {}, t("rx.pharmacy.title")), this.who, scanForm,
      h("details", { class: "rx-manual" }, h("summary", {}, t("rx.pharmacy.manual")), manual), this.formError, this.view);
  }

  async start(id, code) {
    get("/pharmacy/me").then((me) => {
      const p = me.pharmacy;
      this.who.textContent = `${p.name}${p.city ? `, ${p.city}` : ""}${p.license_no ? ` — ${t("rx.pharmacy.license", { n: p.license_no })}` : ""}`;
    }).catch((err) => { this.who.textContent = conflictText(err).text; });
    if (id && code) {
      // The code came in the URL fragment: drop it from the address bar and history once read.
      history.replaceState(null, "", "#/pharmacy");
      await this.lookup({ prescription_id: id, access_code: code });
    } else this.scan.focus();
  }

  async lookup(body) {
    this.formError.textContent = "";
    if (!(body.qr || (body.prescription_id && body.access_code))) { this.formError.textContent = t("rx.pharmacy.missing"); return; }
    try {
      const rx = await post("/pharmacy/lookup", body);
      if (this.destroyed) return;
      this.accessCode = body.access_code || null;
      this.qr = body.qr || null;
      this.scan.value = "";
      this.code.value = "";
      this.show(rx);
      this.view.querySelector("h2").focus();
    } catch (err) {
      this.formError.textContent = conflictText(err).text;
      this.root.dataset.lookup = String(err.status);
    }
  }

  // The access code for dispensing: typed, or taken from the scanned text (…/#/pharmacy/<id>/<code> or <id>/<code>).
  _code() {
    if (this.accessCode) return this.accessCode;
    return (this.qr || "").trim().split("/").pop();
  }

  show(rx) {
    this.prescription = rx;
    this.root.dataset.prescriptionId = rx.id;
    this.root.dataset.status = rx.status;
    this.root.dataset.signature = rx.signature && rx.signature.valid ? "valid" : "invalid";
    const sigOk = rx.signature && rx.signature.valid;
    const sig = h("p", { class: `rx-sig ${sigOk ? "ok" : "bad"}`, role: sigOk ? "status" : "alert", dataset: { valid: String(!!sigOk) } },
      h("span", { class: "rx-sig-icon", "aria-hidden": "true" }, sigOk ? "✓" : "✗"), " ",
      sigOk ? t("rx.sig.ok", { alg: rx.signature.algorithm, key: rx.signature.key_id }) : t("rx.sig.bad_long"));
    const p = rx.prescriber || {};
    const parts = [
      h("h2", { tabIndex: -1 }, t("rx.pharmacy.rx_title", { date: fmtDate(rx.issued_at) }), " ", statusPill(rx.status)),
      sig,
      h("dl", { class: "rx-facts" },
        h("dt", {}, t("rx.prescriber")), h("dd", {}, `${p.display_name || ""}${p.registration_number ? ` — ${p.registration_number}` : ""}`),
        h("dt", {}, t("rx.patient")), h("dd", {}, `${rx.patient.display_name}${rx.patient.birth_date ? ` — ${t("rx.born", { date: fmtDate(rx.patient.birth_date) })}` : ""}`),
        h("dt", {}, t("rx.validity.short")), h("dd", {}, t("rx.valid_until", { date: fmtDate(rx.valid_until) })),
        h("dt", {}, t("rx.pharmacy.number")), h("dd", { class: "rx-number" }, rx.id)),
    ];
    if (rx.status === "cancelled") {
      parts.push(h("p", { class: "rx-cancelled", role: "alert" }, t("rx.cancelled", {
        date: fmtDateTime(rx.cancelled_at, { dateStyle: "medium", timeStyle: "short" }), reason: rx.cancel_reason || "—" })));
    } else if (rx.status === "expired") parts.push(h("p", { class: "rx-cancelled", role: "alert" }, t("rx.expired", { date: fmtDate(rx.valid_until) })));
    const canDispense = sigOk && DISPENSABLE.has(rx.status);
    this.rows = rx.lines.map((l) => this._line(l, canDispense));
    this.result = h("div", { class: "rx-dispense-result", role: "status" });
    this.error = h("p", { class: "error rx-dispense-error", role: "alert", tabIndex: -1 });
    const form = h("form", { class: "rx-dispense-form", onsubmit: (ev) => { ev.preventDefault(); this.dispense(); } },
      h("ol", { class: "rx-plines" }, ...this.rows.map((r) => r.el)),
      canDispense ? h("button", { type: "submit", class: "primary rx-dispense-btn" }, t("rx.dispense")) : h("p", { class: "muted" }, t("rx.pharmacy.not_dispensable")),
      this.error, this.result);
    parts.push(form);
    if (rx.dispenses && rx.dispenses.length) {
      parts.push(h("h3", {}, t("rx.dispenses")), h("ul", { class: "rx-dispenses" }, ...rx.dispenses.map((d) => dispenseItem(d, Object.fromEntries(rx.lines.map((l) => [l.line_no, l]))))));
    }
    this.view.replaceChildren(...parts);
    for (const r of this.rows) if (r.loadGenerics) r.loadGenerics();
  }

  _line(l, canDispense) {
    const total = l.quantity * (1 + (l.repeats || 0));
    const open = canDispense && l.fill_remaining > 0 && DISPENSABLE.has(l.status);
    const qty = h("input", { type: "number", min: 0, max: l.fill_remaining, step: 1, value: String(open ? l.fill_remaining : 0), disabled: !open, class: "rx-dqty" });
    const batch = h("input", { type: "text", maxLength: 40, disabled: !open, class: "rx-batch", autocomplete: "off" });
    const sub = h("select", { disabled: !open || !l.substitution_allowed || l.free_text, class: "rx-generic" },
      h("option", { value: "" }, t("rx.generic.none")));
    const lineId = nextId("rx-pl");
    const el = h("li", { class: `rx-pline rx-${l.status}`, dataset: { lineNo: l.line_no, status: l.status } }, h("div", { role: "group", "aria-labelledby": lineId },
      h("p", { id: lineId, class: "rx-pline-title" }, h("strong", {}, l.medicine), " ", statusPill(l.status),
        l.free_text ? h("span", { class: "pill rx-free" }, t("rx.free_text")) : ""),
      h("p", {}, t("rx.posology", { dose: fmtNumber(l.dose, Number.isInteger(l.dose) ? 0 : 1), unit: l.dose_unit, n: l.times_per_day, days: l.duration_days }),
        l.instructions ? h("span", { lang: "fr" }, ` — ${l.instructions}`) : ""),
      h("p", { class: "rx-remaining" }, t("rx.pharmacy.quantities", {
        prescribed: fmtNumber(total), unit: l.quantity_unit, dispensed: fmtNumber(l.dispensed), remaining: fmtNumber(l.remaining), fill: fmtNumber(l.fill_remaining) }),
      l.repeats ? ` ${t("rx.repeats_left", { n: l.repeats_left })}` : "",
      l.substitution_allowed ? "" : h("strong", {}, ` ${t("rx.generic.refused")}`)),
      open ? h("div", { class: "rx-row" }, field(t("rx.pharmacy.qty", { unit: l.quantity_unit }), qty), field(t("rx.batch"), batch),
        field(t("rx.generic"), sub)) : ""));
    const row = { el, line: l, qty, batch, sub };
    if (open && l.substitution_allowed && !l.free_text && l.inn) {
      row.loadGenerics = async () => {
        try {
          // Same DCI and, when the prescribed product is known, the same form (a tablet for a tablet).
          const all = (await get(`/formulary?q=${encodeURIComponent(l.inn)}&limit=50`)).filter((m) => m.inn === l.inn);
          const prescribed = all.find((m) => m.id === l.formulary_id);
          const same = all.filter((m) => m.id !== l.formulary_id && (!prescribed || m.form === prescribed.form));
          sub.append(...same.map((m) => h("option", { value: m.id }, m.label)));
          if (!same.length) sub.disabled = true;
        } catch { sub.disabled = true; }
      };
    }
    return row;
  }

  async dispense() {
    const rx = this.prescription;
    this.error.textContent = "";
    const lines = [];
    for (const r of this.rows) {
      if (r.qty.disabled) continue;
      const n = Number(r.qty.value);
      if (!Number.isInteger(n) || n < 0 || n > r.line.fill_remaining) {
        this.error.textContent = t("rx.pharmacy.bad_qty", { n: r.line.line_no, max: r.line.fill_remaining });
        r.qty.focus();
        return;
      }
      if (n > 0) lines.push({ line_no: r.line.line_no, quantity: n, batch: r.batch.value.trim() || null, substitute_formulary_id: r.sub.value || null });
    }
    if (!lines.length) { this.error.textContent = t("rx.pharmacy.nothing"); return; }
    const btn = this.view.querySelector(".rx-dispense-btn");
    btn.disabled = true;
    try {
      const r = await post(`/pharmacy/prescriptions/${rx.id}/dispense`, { access_code: this._code(), expected_revision: rx.revision, lines });
      this.show(r.prescription);
      this.result.textContent = t("rx.dispensed.ok", { at: fmtDateTime(r.dispense.at, { timeStyle: "short" }) });
      this.root.dataset.dispensed = r.dispense.id;
    } catch (err) {
      const c = conflictText(err);
      this.root.dataset.conflict = c.code;
      if (err.status === 409) {
        // Reload what is left (another pharmacy may have dispensed meanwhile), then say why this one was refused.
        try { this.show(await post("/pharmacy/lookup", this.qr ? { qr: this.qr } : { prescription_id: rx.id, access_code: this.accessCode })); } catch { /* keep the old view */ }
        this.root.dataset.conflict = c.code;
      } else btn.disabled = false;
      this.error.textContent = c.text;
      this.error.focus();
    }
  }
}
