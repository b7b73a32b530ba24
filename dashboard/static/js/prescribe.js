// The doctor writes an ordonnance (issue 18), inside the consultation page and from the patient page: formulary search by
// name prefix (an ARIA combobox), one fieldset per line (dose, times a day, duration, quantity, repeats, French
// instructions, generic substitution), validity, live server checks (POST .../prescriptions/check) shown per line, then
// issue (POST .../prescriptions: frozen and signed by the server) and print (the server's ordonnance page and PDF).
// API: docs/prescriptions.md, "HTTP API".
import { get, post } from "./api.js";
import { fmtNumber, t } from "./i18n.js";
import { errorText, field, fmtDate, h, issuesOf, nextId } from "./rx.js";

const CHECK_DELAY_MS = 400;
const SEARCH_DELAY_MS = 150;

// An issue of the server as a list item: "Ligne 2 : <message>" (the server's French message; the code as a data attribute).
export function issueItem(issue) {
  const sev = issue.severity || "error";
  return h("li", { class: `rx-issue sev-${sev}`, dataset: { code: issue.code, severity: sev } },
    h("span", { class: "rx-sev" }, t(`rx.severity.${sev}`)), " ",
    issue.line_no ? h("strong", {}, `${t("rx.line_n", { n: issue.line_no })} : `) : "",
    issue.message || issue.code);
}

export function printLinks(prescriptionId) {
  const base = `/api/v1/prescriptions/${prescriptionId}`;
  return h("span", { class: "rx-print" },
    h("a", { class: "button primary", href: `${base}/ordonnance.html`, target: "_blank", rel: "noopener", dataset: { print: "html" } }, t("rx.print")),
    " ",
    h("a", { class: "button", href: `${base}/ordonnance.pdf`, target: "_blank", rel: "noopener", dataset: { print: "pdf" } }, t("rx.pdf")));
}

// Formulary search: a combobox over GET /formulary?q=<prefix>; onPick(entry).
class FormularySearch {
  constructor(onPick) {
    this.onPick = onPick;
    this.items = [];
    this.active = -1;
    const listId = nextId("rx-formulary");
    this.input = h("input", {
      type: "search", autocomplete: "off", role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false",
      "aria-controls": listId, placeholder: t("rx.search.placeholder"), class: "rx-search-input",
    });
    this.list = h("ul", { id: listId, role: "listbox", class: "rx-options", hidden: true, "aria-label": t("rx.search.results") });
    this.status = h("span", { class: "sr-only", role: "status" });
    this.input.oninput = () => { clearTimeout(this._timer); this._timer = setTimeout(() => this.search(), SEARCH_DELAY_MS); };
    this.input.onkeydown = (ev) => this._key(ev);
    this.input.onblur = () => setTimeout(() => this.close(), 150);
    this.el = h("div", { class: "rx-search" }, field(t("rx.search"), this.input, t("rx.search.hint")), this.list, this.status);
  }

  async search() {
    const q = this.input.value.trim();
    if (!q) { this.close(); return; }
    const seq = (this._seq = (this._seq || 0) + 1);
    let items;
    try { items = await get(`/formulary?q=${encodeURIComponent(q)}&limit=12`); } catch (err) {
      this.status.textContent = errorText(err);
      return;
    }
    if (seq !== this._seq) return; // an older answer
    this.items = items;
    this.active = items.length ? 0 : -1;
    this.list.replaceChildren(...items.map((m, i) => h("li", {
      id: `${this.list.id}-${i}`, role: "option", class: "rx-option", dataset: { formularyId: m.id },
      "aria-selected": String(i === this.active),
      onmousedown: (ev) => { ev.preventDefault(); this.pick(i); },
    }, h("span", { class: "rx-opt-label" }, m.label), " ", h("span", { class: "muted" }, `${m.inn} · ${m.atc}`),
    m.antibiotic ? h("span", { class: "pill rx-abx" }, t("rx.antibiotic")) : "")));
    if (!items.length) this.list.append(h("li", { class: "muted rx-none", role: "presentation" }, t("rx.search.none")));
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this._mark();
    this.status.textContent = t("rx.search.count", { n: items.length });
  }

  _mark() {
    this.list.querySelectorAll("[role=option]").forEach((li, i) => li.setAttribute("aria-selected", String(i === this.active)));
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  _key(ev) {
    const open = !this.list.hidden && this.items.length;
    if (ev.key === "ArrowDown" && open) { this.active = (this.active + 1) % this.items.length; this._mark(); ev.preventDefault(); }
    else if (ev.key === "ArrowUp" && open) { this.active = (this.active - 1 + this.items.length) % this.items.length; this._mark(); ev.preventDefault(); }
    else if (ev.key === "Enter") { ev.preventDefault(); if (open && this.active >= 0) this.pick(this.active); }
    else if (ev.key === "Escape") this.close();
  }

  pick(i) {
    const m = this.items[i];
    this.close();
    this.input.value = "";
    if (m) this.onPick(m);
  }

  close() {
    this.list.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }
}

// One line of the form: formulary entry or free text, and its posology.
class LineForm {
  constructor(entry, onChange, onRemove) {
    this.entry = entry; // a formulary entry, or null for free text
    const num = (props) => h("input", { type: "number", inputMode: "decimal", oninput: onChange, onchange: onChange, ...props });
    const txt = (props) => h("input", { type: "text", oninput: onChange, ...props });
    this.medicine = entry ? null : txt({ maxLength: 200, required: true, class: "rx-medicine" });
    this.dose = num({ min: 0, step: "any", value: "1", class: "rx-dose" });
    this.doseUnit = txt({ maxLength: 40, value: entry ? entry.form : "", class: "rx-dose-unit" });
    this.perDay = num({ min: 1, max: 24, step: 1, value: "1", class: "rx-per-day" });
    this.days = num({ min: 1, max: 365, step: 1, value: "7", class: "rx-days" });
    this.quantity = num({ min: 0, step: 1, value: "1", class: "rx-quantity" });
    this.quantityUnit = txt({ maxLength: 40, value: t("rx.unit.box"), class: "rx-quantity-unit" });
    this.repeats = num({ min: 0, max: 11, step: 1, value: "0", class: "rx-repeats" });
    this.instructions = h("textarea", { rows: 2, maxLength: 500, oninput: onChange, class: "rx-instructions", lang: "fr" });
    this.substitution = h("input", { type: "checkbox", checked: true, onchange: onChange, class: "rx-substitution" });
    this.issues = h("ul", { class: "rx-issues rx-line-issues" });
    this.validity = h("p", { class: "muted rx-line-validity" });
    this.legend = h("legend");
    const remove = h("button", { type: "button", class: "rx-remove", onclick: onRemove }, t("rx.line.remove"));
    this.el = h("fieldset", { class: "rx-line", dataset: entry ? { formularyId: entry.id } : { free: "true" } },
      this.legend,
      entry ? "" : field(t("rx.line.medicine"), this.medicine, t("rx.line.free_hint")),
      h("div", { class: "rx-row" },
        field(t("rx.line.dose"), this.dose), field(t("rx.line.dose_unit"), this.doseUnit),
        field(t("rx.line.per_day"), this.perDay), field(t("rx.line.days"), this.days)),
      h("div", { class: "rx-row" },
        field(t("rx.line.quantity"), this.quantity), field(t("rx.line.quantity_unit"), this.quantityUnit),
        field(t("rx.line.repeats"), this.repeats)),
      field(t("rx.line.instructions"), this.instructions),
      h("div", { class: "field field-check" }, this.substitution,
        h("label", { for: this.substitution.id = nextId("rx-sub") }, t("rx.line.substitution"))),
      this.validity, this.issues, remove);
  }

  // The values of a stored line (revising a prescription).
  fill(l) {
    if (this.medicine) this.medicine.value = l.medicine;
    this.dose.value = String(l.dose);
    this.doseUnit.value = l.dose_unit;
    this.perDay.value = String(l.times_per_day);
    this.days.value = String(l.duration_days);
    this.quantity.value = String(l.quantity);
    this.quantityUnit.value = l.quantity_unit;
    this.repeats.value = String(l.repeats || 0);
    this.instructions.value = l.instructions || "";
    this.substitution.checked = l.substitution_allowed !== false;
  }

  setNumber(n) {
    this.no = n;
    const name = this.entry ? this.entry.label : t("rx.line.free");
    this.legend.replaceChildren(`${t("rx.line_n", { n })} — ${name}`,
      this.entry ? "" : h("span", { class: "pill rx-free" }, t("rx.free_text")),
      this.entry && this.entry.antibiotic ? h("span", { class: "pill rx-abx" }, t("rx.antibiotic")) : "");
  }

  body() {
    const n = (el) => (el.value === "" ? null : Number(el.value));
    return {
      formulary_id: this.entry ? this.entry.id : null,
      medicine: this.entry ? null : this.medicine.value.trim(),
      dose: n(this.dose), dose_unit: this.doseUnit.value.trim(),
      times_per_day: n(this.perDay), duration_days: n(this.days),
      quantity: n(this.quantity), quantity_unit: this.quantityUnit.value.trim() || t("rx.unit.box"),
      repeats: n(this.repeats) ?? 0,
      instructions: this.instructions.value.trim(), substitution_allowed: this.substitution.checked,
    };
  }
}

export class PrescriptionEditor {
  // opts: { patientId, consultationId?, onIssued?(prescription) }
  constructor(root, { patientId, consultationId = null, onIssued = null }) {
    this.root = root;
    this.patientId = patientId;
    this.consultationId = consultationId;
    this.onIssued = onIssued;
    this.lines = [];
    this._build();
    this.ready = this.loadAllergies();
  }

  destroy() { this.destroyed = true; clearTimeout(this._checkTimer); }

  _build() {
    this.allergies = h("p", { class: "rx-allergies", role: "note" }, t("rx.allergies.loading"));
    this.search = new FormularySearch((m) => this.addLine(m));
    const free = h("button", { type: "button", class: "rx-add-free", onclick: () => this.addLine(null) }, t("rx.line.add_free"));
    this.linesBox = h("div", { class: "rx-lines" });
    this.empty = h("p", { class: "muted rx-empty" }, t("rx.lines.empty"));
    this.validityDays = h("input", { type: "number", min: 1, max: 365, step: 1, class: "rx-validity", oninput: () => this.scheduleCheck() });
    this.validUntil = h("p", { class: "muted rx-valid-until", role: "status" });
    this.issues = h("ul", { class: "rx-issues rx-all-issues", "aria-live": "polite" });
    this.ack = h("input", { type: "checkbox", class: "rx-ack" });
    this.ackRow = h("div", { class: "field field-check rx-ack-row", hidden: true }, this.ack,
      h("label", { for: this.ack.id = nextId("rx-ack") }, t("rx.ack_warnings")));
    this.error = h("p", { class: "error", role: "alert" });
    this.issueBtn = h("button", { type: "submit", class: "primary rx-issue-btn" }, t("rx.issue"));
    this.result = h("div", { class: "rx-result", role: "status" });
    this.revisingBox = h("div", { class: "rx-revising", role: "note", hidden: true });
    this.form = h("form", { class: "rx-form", novalidate: true, onsubmit: (ev) => { ev.preventDefault(); this.issue(); } },
      this.revisingBox, this.allergies,
      h("div", { class: "rx-add" }, this.search.el, free),
      this.empty, this.linesBox,
      field(t("rx.validity"), this.validityDays, t("rx.validity.hint")), this.validUntil,
      this.issues, this.ackRow, this.error, this.issueBtn);
    this.root.replaceChildren(this.form, this.result);
  }

  async loadAllergies() {
    try {
      const a = await get(`/patients/${this.patientId}/allergies`);
      if (this.destroyed) return;
      this.showAllergies(a.allergies);
    } catch (err) { this.allergies.textContent = errorText(err); }
  }

  showAllergies(list) {
    this.allergies.className = `rx-allergies${list.length ? " has-allergies" : ""}`;
    this.allergies.textContent = list.length
      ? t("rx.allergies.known", { list: list.map((a) => a.substance + (a.atc ? ` (${a.atc})` : "")).join(", ") })
      : t("rx.allergies.none");
  }

  // Start from a stored prescription: issuing then makes its new version (POST /prescriptions/{id}/revise), the old
  // one is cancelled by the server. onDone() when the doctor gives up.
  revise(rx, onDone) {
    this.lines = [];
    this._build();
    this.loadAllergies();
    this.revising = rx;
    for (const l of rx.lines) {
      const entry = l.free_text ? null : { id: l.formulary_id, label: l.medicine, form: l.dose_unit, antibiotic: l.antibiotic };
      this.addLine(entry).fill(l);
    }
    this.revisingBox.hidden = false;
    this.revisingBox.replaceChildren(t("rx.revise.note", { date: fmtDate(rx.issued_at) }), " ",
      h("button", { type: "button", class: "rx-revise-stop", onclick: () => { this.revising = null; this.lines = []; this._build(); this.loadAllergies(); if (onDone) onDone(); } }, t("rx.revise.stop")));
    this.issueBtn.textContent = t("rx.revise.issue");
    this.scheduleCheck();
    this.search.input.focus();
  }

  addLine(entry) {
    const line = new LineForm(entry, () => this.scheduleCheck(), () => this.removeLine(line));
    this.lines.push(line);
    this.linesBox.append(line.el);
    this._renumber();
    this.scheduleCheck();
    (line.medicine || line.dose).focus();
    return line;
  }

  removeLine(line) {
    this.lines = this.lines.filter((l) => l !== line);
    line.el.remove();
    this._renumber();
    this.scheduleCheck();
    this.search.input.focus();
  }

  _renumber() {
    this.lines.forEach((l, i) => l.setNumber(i + 1));
    this.empty.hidden = this.lines.length > 0;
  }

  body() {
    const v = this.validityDays.value;
    return {
      consultation_id: this.consultationId, validity_days: v === "" ? null : Number(v), note: "",
      acknowledge_warnings: this.ack.checked, lines: this.lines.map((l) => l.body()),
    };
  }

  scheduleCheck() {
    clearTimeout(this._checkTimer);
    this._checkTimer = setTimeout(() => this.check(), CHECK_DELAY_MS);
  }

  // Live checks: the server's rules (duplicate DCI, quantity zero, dose range, allergy...), nothing stored.
  async check() {
    if (!this.lines.length) { this.showIssues([]); this.validUntil.textContent = ""; return null; }
    const seq = (this._checkSeq = (this._checkSeq || 0) + 1);
    try {
      const r = await post(`/patients/${this.patientId}/prescriptions/check`, this.body());
      if (seq !== this._checkSeq || this.destroyed) return null;
      this.showIssues(r.issues);
      this.validUntil.textContent = r.valid_until ? t("rx.valid_until", { date: fmtDate(r.valid_until) }) : "";
      for (const l of r.lines || []) {
        const line = this.lines[l.line_no - 1];
        if (line) line.validity.textContent = l.valid_until && l.valid_until !== r.valid_until ? t("rx.line.valid_until", { date: fmtDate(l.valid_until) }) : "";
      }
      this.root.dataset.checked = String(seq);
      return r;
    } catch (err) {
      if (seq !== this._checkSeq) return null;
      const issues = issuesOf(err);
      if (issues) this.showIssues(issues);
      else this.error.textContent = errorText(err);
      return null;
    }
  }

  showIssues(issues) {
    for (const l of this.lines) l.issues.replaceChildren();
    const general = [];
    for (const issue of issues) {
      const line = issue.line_no ? this.lines[issue.line_no - 1] : null;
      if (line) line.issues.append(issueItem(issue)); else general.push(issueItem(issue));
    }
    for (const l of this.lines) l.el.classList.toggle("has-error", issues.some((i) => i.line_no === l.no && i.severity === "error"));
    this.issues.replaceChildren(...general);
    const warnings = issues.filter((i) => i.severity === "warning").length;
    this.ackRow.hidden = warnings === 0;
    if (!warnings) this.ack.checked = false;
    this.root.dataset.issues = issues.map((i) => i.code).join(",");
  }

  async issue() {
    this.error.textContent = "";
    if (!this.lines.length) { this.error.textContent = t("rx.lines.empty"); return; }
    this.issueBtn.disabled = true;
    clearTimeout(this._checkTimer);
    this._checkSeq = (this._checkSeq || 0) + 1; // a pending live check must not overwrite what issuing says
    try {
      const url = this.revising ? `/prescriptions/${this.revising.id}/revise` : `/patients/${this.patientId}/prescriptions`;
      const rx = await post(url, this.body());
      this.revising = null;
      this.issued(rx);
    } catch (err) {
      const d = err.body && err.body.detail;
      const issues = err.status === 422 ? issuesOf(err) : null;
      if (issues) {
        this.showIssues(issues);
        this.error.textContent = (d && d.message) || t("rx.invalid");
        (this.form.querySelector(".rx-issue.sev-error, .rx-issue.sev-warning") || this.error).scrollIntoView({ block: "center" });
      } else {
        this.error.textContent = d && d.message ? d.message : errorText(err);
      }
    } finally { this.issueBtn.disabled = false; }
  }

  issued(rx) {
    this.root.dataset.prescriptionId = rx.id;
    const lines = rx.lines.map((l) => h("li", {}, `${l.medicine} — ${fmtNumber(l.quantity)} ${l.quantity_unit}`));
    const again = h("button", { type: "button", class: "rx-new", onclick: () => { this.lines = []; this._build(); this.loadAllergies(); } }, t("rx.new"));
    this.form.hidden = true;
    this.result.replaceChildren(
      h("h3", { tabIndex: -1, class: "rx-issued-title" }, t("rx.issued", { date: fmtDate(rx.issued_at) })),
      h("p", {}, t("rx.issued.validity", { date: fmtDate(rx.valid_until) }), " ",
        h("span", { class: "rx-sig ok" }, t("rx.signed", { alg: rx.signature.algorithm, key: rx.signature.key_id }))),
      h("ul", {}, ...lines), h("p", { class: "muted" }, t("rx.issued.hint")),
      h("p", {}, printLinks(rx.id), " ", again));
    this.result.querySelector("h3").focus();
    if (this.onIssued) this.onIssued(rx);
  }
}
