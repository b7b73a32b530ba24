// The prescriptions of one patient for the care team (issue 18): status of each (émise, partiellement délivrée, délivrée,
// expirée, annulée — cancellation with who, when and why), each line's dispensed share (adherence at a glance), every
// dispense event (pharmacy, quantity, batch, generic substitution), print and cancel for the prescriber, and the
// patient's allergy list, editable by the care team. Also "new prescription", opening the editor of prescribe.js.
// API: docs/prescriptions.md, "HTTP API".
import { get, post, put } from "./api.js";
import { fmtDateTime, fmtNumber, t } from "./i18n.js";
import { PrescriptionEditor, printLinks } from "./prescribe.js";
import { errorText, field, fmtDate, h, nextId, statusPill } from "./rx.js";

// One line with its dispensed share: "Amoxicilline 500 mg — 1 gélule × 3/j, 7 j — délivré 1 / 2 boîtes".
export function lineItem(l) {
  const total = l.quantity * (1 + (l.repeats || 0));
  const meterId = nextId("rx-meter");
  return h("li", { class: "rx-hline", dataset: { lineNo: l.line_no, status: l.status } },
    h("span", { class: "rx-med" }, l.medicine), l.free_text ? h("span", { class: "pill rx-free" }, t("rx.free_text")) : "",
    " ", h("span", { class: "muted" }, t("rx.posology", { dose: fmtNumber(l.dose, Number.isInteger(l.dose) ? 0 : 1), unit: l.dose_unit, n: l.times_per_day, days: l.duration_days })),
    l.instructions ? h("span", { class: "rx-instr", lang: "fr" }, ` — ${l.instructions}`) : "",
    h("span", { class: "rx-adherence" },
      h("label", { for: meterId, class: "rx-dispensed" }, t("rx.dispensed_of", { n: fmtNumber(l.dispensed), total: fmtNumber(total), unit: l.quantity_unit })),
      h("meter", { id: meterId, min: 0, max: total || 1, value: l.dispensed, class: "rx-meter" }),
      l.repeats ? h("span", { class: "muted" }, t("rx.repeats_left", { n: l.repeats_left })) : "",
      l.status !== "issued" ? statusPill(l.status) : ""));
}

export function dispenseItem(d, linesByNo = {}) {
  return h("li", { class: "rx-dispense", dataset: { dispenseId: d.id } },
    h("time", { dateTime: d.at }, fmtDateTime(d.at, { dateStyle: "medium", timeStyle: "short" })), " — ",
    h("strong", {}, d.pharmacy ? `${d.pharmacy.name}${d.pharmacy.city ? `, ${d.pharmacy.city}` : ""}` : ""), " : ",
    d.lines.map((x, i) => {
      const prescribed = x.medicine || (linesByNo[x.line_no] && linesByNo[x.line_no].medicine) || "";
      const sub = x.substituted ? t("rx.substituted", { medicine: x.dispensed_medicine }) : "";
      return h("span", { class: "rx-dline" }, i ? " ; " : "",
        t("rx.dispense.line", { n: fmtNumber(x.quantity), medicine: prescribed }),
        x.batch ? ` (${t("rx.batch")} ${x.batch})` : "", sub ? h("em", { class: "rx-sub" }, ` ${sub}`) : "");
    }));
}

export class AllergyEditor {
  constructor(root, patientId, { onSaved } = {}) {
    this.root = root;
    this.patientId = patientId;
    this.onSaved = onSaved;
    this.list = h("ul", { class: "rx-allergy-list" });
    this.substance = h("input", { type: "text", maxLength: 100, class: "rx-allergy-substance", autocomplete: "off" });
    this.atc = h("input", { type: "text", maxLength: 7, class: "rx-allergy-atc", pattern: "[A-Za-z0-9]{1,7}" });
    this.note = h("input", { type: "text", maxLength: 200, class: "rx-allergy-note" });
    this.status = h("p", { class: "muted", role: "status" });
    const add = h("form", { class: "rx-allergy-add", onsubmit: (ev) => { ev.preventDefault(); this.add(); } },
      field(t("rx.allergy.substance"), this.substance), field(t("rx.allergy.atc"), this.atc, t("rx.allergy.atc_hint")),
      field(t("rx.allergy.note"), this.note), h("button", { type: "submit" }, t("rx.allergy.add")));
    this.root.replaceChildren(this.list, add, this.status);
    this.items = [];
    this.ready = this.load();
  }

  async load() {
    try { this.render((await get(`/patients/${this.patientId}/allergies`)).allergies); } catch (err) { this.status.textContent = errorText(err); }
  }

  render(items) {
    this.items = items;
    this.list.replaceChildren(...items.map((a, i) => h("li", { class: "rx-allergy", dataset: { substance: a.substance } },
      h("strong", {}, a.substance), a.atc ? ` (ATC ${a.atc})` : "", a.note ? ` — ${a.note}` : "", " ",
      h("button", { type: "button", class: "rx-allergy-remove", "aria-label": t("rx.allergy.remove", { substance: a.substance }), onclick: () => this.save(this.items.filter((_, j) => j !== i)) }, t("rx.allergy.remove_short")))));
    if (!items.length) this.list.append(h("li", { class: "muted" }, t("rx.allergies.none")));
  }

  add() {
    const substance = this.substance.value.trim();
    if (!substance) { this.status.textContent = t("rx.allergy.required"); this.substance.focus(); return; }
    const atc = this.atc.value.trim().toUpperCase();
    this.save([...this.items, { substance, atc: atc || null, note: this.note.value.trim() }]).then((ok) => {
      if (!ok) return;
      this.substance.value = ""; this.atc.value = ""; this.note.value = "";
      this.substance.focus();
    });
  }

  async save(items) {
    try {
      const r = await put(`/patients/${this.patientId}/allergies`, { allergies: items });
      this.render(r.allergies);
      this.status.textContent = t("rx.allergy.saved", { at: fmtDateTime(r.updated_at) });
      this.root.dataset.saved = r.updated_at || "";
      if (this.onSaved) this.onSaved(r.allergies);
      return true;
    } catch (err) { this.status.textContent = errorText(err); return false; }
  }
}

// The patient's prescriptions (newest first) for the care team, with "Nouvelle ordonnance" when the user is a doctor.
export class PrescriptionHistory {
  // opts: { user (default: the signed-in one), consultationId?, editor: bool (the "new prescription" button, doctors),
  // open: bool (the editor open at once, as in the consultation), allergies: bool (the editable allergy list) }
  constructor(root, patientId, { user = null, consultationId = null, editor = true, open = false, allergies = true } = {}) {
    this.root = root;
    this.patientId = patientId;
    this.user = user || (window.tbib && window.tbib.user) || {};
    this.consultationId = consultationId;
    this.isDoctor = this.user.role === "doctor";
    this.editorBox = h("div", { class: "rx-editor", hidden: true });
    this.listBox = h("ol", { class: "rx-list", reversed: true });
    this.status = h("p", { class: "muted", role: "status" });
    const parts = [];
    if (allergies) {
      const ah = h("h3", { id: nextId("rx-allergies-h") }, t("rx.allergies"));
      this.allergyBox = h("div", { class: "rx-allergies-box" });
      parts.push(h("div", { class: "rx-allergy-section", role: "group", "aria-labelledby": ah.id }, ah, this.allergyBox));
    }
    if (editor && this.isDoctor) {
      this.newBtn = h("button", { type: "button", class: "primary rx-new-btn", "aria-expanded": "false", onclick: () => this.toggleEditor() }, t("rx.new"));
      parts.push(h("p", {}, this.newBtn), this.editorBox);
    }
    const lh = h("h3", { id: nextId("rx-list-h") }, t("rx.list"));
    parts.push(lh, this.status, this.listBox);
    this.root.replaceChildren(...parts);
    if (allergies) this.allergies = new AllergyEditor(this.allergyBox, patientId, { onSaved: (list) => { if (this.editor) this.editor.showAllergies(list); } });
    if (open && this.newBtn) this.toggleEditor(true, false);
    this.ready = this.load();
  }

  destroy() { this.destroyed = true; if (this.editor) this.editor.destroy(); }

  toggleEditor(open = this.editorBox.hidden, focus = true) {
    this.editorBox.hidden = !open;
    this.newBtn.setAttribute("aria-expanded", String(open));
    if (open && !this.editor) {
      this.editor = new PrescriptionEditor(this.editorBox, { patientId: this.patientId, consultationId: this.consultationId, onIssued: () => this.load() });
    }
    if (open && focus) this.editor.search.input.focus();
  }

  revise(rx) {
    this.toggleEditor(true, false);
    this.editor.revise(rx, () => this.toggleEditor(false));
    this.editorBox.scrollIntoView({ block: "start" });
  }

  async load() {
    let list;
    try { list = await get(`/patients/${this.patientId}/prescriptions`); } catch (err) { this.status.textContent = errorText(err); return; }
    if (this.destroyed) return;
    this.status.textContent = list.length ? "" : t("rx.list.empty");
    this.listBox.replaceChildren(...list.map((rx) => this.item(rx)));
    this.root.dataset.loaded = String(list.length);
  }

  item(rx) {
    const mine = this.isDoctor && rx.prescriber && rx.prescriber.id === this.user.id;
    const byNo = Object.fromEntries(rx.lines.map((l) => [l.line_no, l]));
    const head = h("div", { class: "rx-head" }, statusPill(rx.status), " ",
      h("strong", {}, t("rx.item.title", { date: fmtDate(rx.issued_at) })), " ",
      h("span", { class: "muted" }, `${rx.prescriber ? rx.prescriber.display_name : ""} · ${t("rx.valid_until", { date: fmtDate(rx.valid_until) })}`),
      rx.version > 1 ? h("span", { class: "muted" }, ` · ${t("rx.version", { n: rx.version })}`) : "",
      rx.signature && !rx.signature.valid ? h("span", { class: "rx-sig bad" }, t("rx.sig.bad")) : "");
    const parts = [head];
    if (rx.status === "cancelled") {
      parts.push(h("p", { class: "rx-cancelled", role: "note" }, rx.superseded_by ? t("rx.superseded") :
        t("rx.cancelled", { date: fmtDateTime(rx.cancelled_at, { dateStyle: "medium", timeStyle: "short" }), reason: rx.cancel_reason || "—" })));
    }
    parts.push(h("ul", { class: "rx-hlines" }, ...rx.lines.map(lineItem)));
    if (rx.dispenses && rx.dispenses.length) {
      parts.push(h("p", { class: "rx-dispenses-h" }, t("rx.dispenses")), h("ul", { class: "rx-dispenses" }, ...rx.dispenses.map((d) => dispenseItem(d, byNo))));
    } else if (rx.status !== "cancelled") parts.push(h("p", { class: "muted" }, t("rx.dispenses.none")));
    if (mine) {
      const actions = h("p", { class: "rx-actions" }, printLinks(rx.id));
      if (rx.status === "issued" && !(rx.dispenses && rx.dispenses.length) && this.newBtn) {
        // A change is a new version (the server cancels this one), only while nothing was dispensed.
        actions.append(" ", h("button", { type: "button", class: "rx-revise", onclick: () => this.revise(rx) }, t("rx.revise")));
      }
      if (rx.status === "issued" || rx.status === "partially_dispensed") {
        actions.append(" ", h("button", { type: "button", class: "danger rx-cancel", onclick: () => this.cancel(rx, actions) }, t("rx.cancel")));
      }
      parts.push(actions);
    }
    return h("li", { class: `rx-item rx-${rx.status}`, dataset: { prescriptionId: rx.id, status: rx.status } }, ...parts);
  }

  // Cancel with a reason (inline form: keyboard-first, no modal).
  cancel(rx, actions) {
    if (actions.querySelector("form")) return;
    const reason = h("input", { type: "text", maxLength: 500, required: true, class: "rx-cancel-reason" });
    const err = h("span", { class: "error", role: "alert" });
    const form = h("form", { class: "rx-cancel-form", onsubmit: async (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) { err.textContent = t("rx.cancel.reason_required"); reason.focus(); return; }
      try {
        await post(`/prescriptions/${rx.id}/cancel`, { reason: reason.value.trim() });
        await this.load();
      } catch (e) { err.textContent = e.body && e.body.detail && e.body.detail.message ? e.body.detail.message : errorText(e); }
    } }, field(t("rx.cancel.reason"), reason), h("button", { type: "submit", class: "danger" }, t("rx.cancel.confirm")), " ",
    h("button", { type: "button", onclick: () => form.remove() }, t("cancel")), err);
    actions.append(form);
    reason.focus();
  }
}
