// Patient list: keyed rows, DOM writes batched per animation frame (500 patients update at 1 Hz without jank):
// live frames only mark rows dirty; one requestAnimationFrame callback patches the changed cells' text of the rows
// that are on screen (an IntersectionObserver tracks them; off-screen rows are patched when they scroll into view),
// and reorders rows only when the acuity order changed.
import { fmtAge, fmtNumber, t } from "./i18n.js";

const VITALS = [
  { key: "hr", metrics: ["heart_rate", "pulse_rate"], digits: 0 },
  { key: "spo2", metrics: ["spo2"], digits: 0 },
  { key: "bp", metrics: ["systolic_bp", "diastolic_bp"], digits: 0 },
  { key: "temp", metrics: ["body_temperature"], digits: 1 },
  { key: "glucose", metrics: ["glucose"], digits: 0 },
  { key: "weight", metrics: ["body_weight"], digits: 1 },
];
const RISK_CLASS = { low: "risk-low", "low-medium": "risk-lowmed", medium: "risk-med", high: "risk-high" };

function newest(latest, metrics) {
  let best = null;
  for (const m of metrics) {
    const v = latest[m];
    if (v && (!best || Date.parse(v.measured_at) > Date.parse(best.measured_at))) best = v;
  }
  return best;
}

function ageS(iso, now) { return iso ? Math.max(0, (now - Date.parse(iso)) / 1000) : null; }

function vitalText(col, latest) {
  if (col.key === "bp") {
    const s = latest.systolic_bp;
    const d = latest.diastolic_bp;
    if (!s) return ["—", null];
    return [`${fmtNumber(s.value)}/${d ? fmtNumber(d.value) : "—"}`, s.measured_at];
  }
  const v = newest(latest, col.metrics);
  return v ? [fmtNumber(v.value, col.digits), v.measured_at] : ["—", null];
}

export class PatientList {
  constructor(root, state, { onOpen }) {
    this.root = root;
    this.state = state;
    this.onOpen = onOpen;
    this.rows = new Map();
    this.dirty = new Set();
    this.visible = new Set();
    this.stale = new Set();
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const id = e.target.dataset.id;
        if (e.isIntersecting) {
          this.visible.add(id);
          if (this.stale.delete(id)) this.dirty.add(id);
        } else this.visible.delete(id);
      }
      if (this.dirty.size) this.schedule();
    }, { rootMargin: "300px 0px" });
    this.needsOrder = true;
    this.frame = 0;
    this.metrics = { renders: 0, lastRenderMs: 0, firstRenderAt: null };
    this._build();
    this._onPatients = () => { for (const id of this.state.patients.keys()) this.dirty.add(id); this.needsOrder = true; this.schedule(); };
    this._onVitals = (ev) => { for (const id of ev.detail.touched) this.dirty.add(id); this.schedule(); };
    this._onPatient = (ev) => { this.dirty.add(ev.detail); this.schedule(); };
    this._onReorder = () => { this.needsOrder = true; this.schedule(); };
    state.addEventListener("patients", this._onPatients);
    state.addEventListener("vitals", this._onVitals);
    state.addEventListener("patient", this._onPatient);
    state.addEventListener("reorder", this._onReorder);
    this._ages = setInterval(() => { for (const id of this.rows.keys()) this.dirty.add(id); this.schedule(); }, 5000);
    this._onPatients();
  }

  destroy() {
    this.state.removeEventListener("patients", this._onPatients);
    this.state.removeEventListener("vitals", this._onVitals);
    this.state.removeEventListener("patient", this._onPatient);
    this.state.removeEventListener("reorder", this._onReorder);
    clearInterval(this._ages);
    cancelAnimationFrame(this.frame);
    this.observer.disconnect();
  }

  _build() {
    this.root.replaceChildren();
    const h = document.createElement("h1");
    h.id = "patients-title";
    h.textContent = t("patients.title");
    this.summary = document.createElement("p");
    this.summary.className = "muted";
    this.summary.setAttribute("aria-live", "polite");
    const table = document.createElement("table");
    table.className = "patients";
    table.setAttribute("aria-labelledby", "patients-title");
    const cols = document.createElement("colgroup");
    for (const key of ["patient", "news2", "alerts", ...VITALS.map((c) => c.key), "last", "link"]) {
      const col = document.createElement("col");
      col.className = `c-${key}`;
      cols.append(col);
    }
    table.append(cols);
    const head = table.createTHead().insertRow();
    for (const key of ["patient", "news2", "alerts", ...VITALS.map((c) => c.key), "last", "link"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = t(`col.${key}`);
      head.append(th);
    }
    this.tbody = table.createTBody();
    this.empty = document.createElement("p");
    this.empty.className = "muted";
    this.empty.textContent = t("patients.empty");
    this.empty.hidden = true;
    this.root.append(h, this.summary, table, this.empty);
  }

  _row(id) {
    const tr = document.createElement("tr");
    tr.dataset.id = id;
    const cells = {};
    const name = tr.insertCell();
    const a = document.createElement("a");
    a.href = `#/patient/${id}`;
    name.append(a);
    cells.name = a;
    const news = tr.insertCell();
    news.className = "news2";
    cells.news2 = document.createElement("span");
    cells.news2.className = "pill";
    cells.partial = document.createElement("span");
    cells.partial.className = "partial";
    news.append(cells.news2, cells.partial);
    cells.alerts = tr.insertCell();
    for (const col of VITALS) {
      const td = tr.insertCell();
      td.className = "num";
      cells[col.key] = td;
    }
    cells.last = tr.insertCell();
    const link = tr.insertCell();
    cells.link = document.createElement("span");
    cells.link.className = "conn-dot";
    link.append(cells.link);
    tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") this.onOpen(id); });
    const row = { tr, cells, text: {}, filled: false };
    this.rows.set(id, row);
    this.observer.observe(tr);
    return row;
  }

  // Write text only when it changed (no layout thrash).
  _set(row, key, el, value, attr) {
    if (row.text[key] === value) return;
    row.text[key] = value;
    if (attr) el.setAttribute(attr, value); else el.textContent = value;
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    const t0 = performance.now();
    const now = Date.now();
    const state = this.state;
    for (const id of this.dirty) {
      const p = state.patients.get(id);
      let row = this.rows.get(id);
      if (!p) { if (row) { this.observer.unobserve(row.tr); row.tr.remove(); this.rows.delete(id); } continue; }
      if (!row) { row = this._row(id); this.needsOrder = true; }
      if (row.filled && !this.visible.has(id)) { this.stale.add(id); continue; } // patched when scrolled into view
      row.filled = true;
      const c = row.cells;
      this._set(row, "name", c.name, p.display_name);
      this._set(row, "news2", c.news2, String(p.news2.total));
      this._set(row, "risk", c.news2, `pill ${RISK_CLASS[p.news2.risk] || ""}`, "class");
      this._set(row, "riskTitle", c.news2, `${t("news2")} ${p.news2.total} — ${t(`risk.${p.news2.risk}`)}`, "title");
      this._set(row, "partial", c.partial, p.news2.partial ? t("news2.partial") : "");
      const alertText = p.open_alerts ? `${p.open_alerts} · ${t(`sev.${p.max_severity}`)}` : "0";
      this._set(row, "alerts", c.alerts, alertText);
      this._set(row, "alertsClass", c.alerts, p.open_alerts ? `sev sev-${p.max_severity}` : "sev", "class");
      for (const col of VITALS) {
        const [text, at] = vitalText(col, p.latest);
        this._set(row, col.key, c[col.key], text);
        const age = ageS(at, now);
        this._set(row, `${col.key}Title`, c[col.key], at ? fmtAge(age) : "", "title");
        this._set(row, `${col.key}Old`, c[col.key], age !== null && age > 3600 ? "num old" : "num", "class");
      }
      const lastAge = ageS(p.last_data_at, now);
      const gwAge = Math.min(...(p.gateways || []).map((g) => ageS(g.last_seen_at, now) ?? Infinity), Infinity);
      const conn = p.connectivity === "offline" ? "offline" : lastAge !== null && lastAge <= 180 ? "online"
        : gwAge <= 180 ? "idle" : lastAge === null ? "never" : "stale";
      const lastText = lastAge === null ? t("nodata.never") : lastAge > 180 ? t("nodata.since", { age: fmtAge(lastAge) }) : fmtAge(lastAge);
      this._set(row, "last", c.last, lastText);
      this._set(row, "connClass", c.link, `conn-dot ${conn}`, "class");
      this._set(row, "connTitle", c.link, t(`connectivity.${conn}`), "title");
      this._set(row, "connLabel", c.link, t(`connectivity.${conn}`), "aria-label");
      this._set(row, "rowClass", row.tr, p.max_severity ? `sev-row-${p.max_severity}` : "", "class");
    }
    this.dirty.clear();
    if (this.needsOrder) {
      this.needsOrder = false;
      const ids = state.sortedIds();
      let cursor = this.tbody.firstChild;
      for (const id of ids) {
        const row = this.rows.get(id) || this._row(id);
        if (row.tr === cursor) cursor = cursor.nextSibling;
        else this.tbody.insertBefore(row.tr, cursor);
      }
      this.empty.hidden = ids.length > 0;
      const open = [...state.patients.values()].reduce((n, p) => n + (p.open_alerts ? 1 : 0), 0);
      this.summary.textContent = t("patients.summary", { n: ids.length, alerts: open });
    }
    this.metrics.renders += 1;
    this.metrics.lastRenderMs = performance.now() - t0;
    this.metrics.maxRenderMs = Math.max(this.metrics.maxRenderMs || 0, this.metrics.lastRenderMs);
    if (this.metrics.firstRenderAt === null && this.rows.size) this.metrics.firstRenderAt = performance.now();
  }
}
