// Client-side state shared by the views: my patients (keyed by id), the alert inbox (keyed by alert id), thresholds.
// The server is the source of truth: snapshots come from GET /patients and /patients/alerts; live frames patch them.
import { get } from "./api.js";

export const SEVERITY_RANK = { low: 1, medium: 2, high: 3 };

export class DashboardState extends EventTarget {
  constructor() {
    super();
    this.patients = new Map();
    this.alerts = new Map();
    this.thresholds = {};
    this.lastEventId = 0;
    this.loadedAt = 0;
  }

  async loadPatients() {
    const snap = await get("/patients");
    const seen = new Set();
    for (const row of snap.patients) {
      seen.add(row.id);
      const old = this.patients.get(row.id);
      if (old) {
        // keep live values newer than the snapshot
        for (const [metric, v] of Object.entries(old.latest)) {
          const s = row.latest[metric];
          if (!s || Date.parse(s.measured_at) < Date.parse(v.measured_at)) row.latest[metric] = v;
        }
      }
      this.patients.set(row.id, row);
    }
    for (const id of [...this.patients.keys()]) if (!seen.has(id)) this.patients.delete(id);
    this.order = snap.patients.map((r) => r.id);
    this.thresholds = snap.thresholds;
    this.loadedAt = Date.now();
    this.dispatchEvent(new CustomEvent("patients", { detail: { full: true } }));
    return snap;
  }

  async loadAlerts() {
    const snap = await get("/patients/alerts");
    this.alerts.clear();
    for (const a of snap.alerts) this.alerts.set(a.id, a);
    this.lastEventId = Math.max(this.lastEventId, snap.last_event_id);
    this.dispatchEvent(new CustomEvent("alerts", { detail: { full: true } }));
    return snap;
  }

  // A live alert frame: update the inbox and the patient's open-alert summary.
  applyAlert(frame) {
    const a = frame.alert;
    const prev = this.alerts.get(a.id);
    const p = this.patients.get(String(a.patient_id));
    if (p) a.patient_name = p.display_name;
    else if (prev) a.patient_name = prev.patient_name;
    if (a.state === "resolved") this.alerts.delete(a.id); else this.alerts.set(a.id, a);
    this.lastEventId = Math.max(this.lastEventId, frame.id);
    if (p) this._summarize(p);
    this.dispatchEvent(new CustomEvent("alert", { detail: { frame, isNew: !prev && frame.event === "raised" } }));
  }

  _summarize(p) {
    let count = 0;
    let max = null;
    const rules = [];
    for (const a of this.alerts.values()) {
      if (String(a.patient_id) !== p.id) continue;
      count += 1;
      rules.push(a.rule);
      if (!max || SEVERITY_RANK[a.severity] > SEVERITY_RANK[max]) max = a.severity;
    }
    const changed = p.open_alerts !== count || p.max_severity !== max;
    p.open_alerts = count;
    p.max_severity = max;
    p.alert_rules = rules.sort();
    if (changed) this.dispatchEvent(new CustomEvent("reorder"));
    this.dispatchEvent(new CustomEvent("patient", { detail: p.id }));
  }

  // Live vitals: [[patient_id, metric, value, unit, measured_at], ...]
  applyVitals(items) {
    const touched = new Set();
    for (const [pid, metric, value, unit, measuredAt] of items) {
      const p = this.patients.get(pid);
      if (!p) continue;
      const cur = p.latest[metric];
      if (cur && Date.parse(cur.measured_at) > Date.parse(measuredAt)) continue; // latest = newest measured_at
      p.latest[metric] = { value, unit, measured_at: measuredAt };
      if (!p.last_data_at || Date.parse(measuredAt) > Date.parse(p.last_data_at)) p.last_data_at = measuredAt;
      touched.add(pid);
    }
    if (touched.size) this.dispatchEvent(new CustomEvent("vitals", { detail: { touched, items } }));
  }

  sortedIds() {
    const rows = [...this.patients.values()];
    rows.sort((a, b) => {
      const sa = SEVERITY_RANK[a.max_severity] || 0;
      const sb = SEVERITY_RANK[b.max_severity] || 0;
      if (sa !== sb) return sb - sa;
      if (a.news2.total !== b.news2.total) return b.news2.total - a.news2.total;
      if (a.open_alerts !== b.open_alerts) return b.open_alerts - a.open_alerts;
      const la = a.last_data_at ? Date.parse(a.last_data_at) : Infinity;
      const lb = b.last_data_at ? Date.parse(b.last_data_at) : Infinity;
      if (la !== lb) return la - lb;
      return a.display_name.localeCompare(b.display_name);
    });
    return rows.map((r) => r.id);
  }
}
