// Live vitals panel of the consultation (issue 19 item 1): beside the video (an overlay toggled by a button on narrow
// screens). HR, SpO2, BP, temperature, respiratory rate, weight and glucose, each with its age, a "stale" badge when
// it is older than its expected cadence, and a sparkline of the last minutes; NEWS2 with its missing parameters (the
// server's score, from the dashboard state); the alerts raised since the call began, acknowledged from the panel.
//
// Sources: the call's "vitals" data channel (the patient's gateway agent, push(msg, "call")) and, as a fallback, the
// server's vitals websocket through DashboardState ("vitals" events) with the snapshot's latest values to start
// with. Both feed one store per metric; the newest measured_at wins (a late duplicate never moves a value back), and
// each value says where it came from. `metrics.callLatencyMs` holds, per data-channel reading, measured_at -> the
// animation frame that drew it (the "value on the doctor's screen" figure of `tbib bench call`).
import { post } from "./api.js";
import { fmtAge, fmtDateTime, fmtNumber, t } from "./i18n.js";
import { ALERT_ACTIONS, ruleLabel } from "./inbox.js";

// Expected time between two readings (s): older is "stale". Continuous devices stream every second or so during a
// call; spot devices (cuff, thermometer, scale, glucose meter) are measured a few times a day at home.
export const CADENCE_S = {
  heart_rate: 15, pulse_rate: 15, spo2: 15, respiratory_rate: 60,
  systolic_bp: 12 * 3600, diastolic_bp: 12 * 3600, body_temperature: 12 * 3600, body_weight: 36 * 3600,
  glucose: 12 * 3600,
};
// Tiles in display order; `metrics` are merged (newest first), `pair` draws a second value (diastolic).
export const TILES = [
  { id: "hr", label: "metric.heart_rate", metrics: ["heart_rate", "pulse_rate"], digits: 0 },
  { id: "spo2", label: "metric.spo2", metrics: ["spo2"], digits: 0 },
  { id: "bp", label: "vp.bp", metrics: ["systolic_bp"], pair: "diastolic_bp", digits: 0 },
  { id: "temp", label: "metric.body_temperature", metrics: ["body_temperature"], digits: 1 },
  { id: "rr", label: "metric.respiratory_rate", metrics: ["respiratory_rate"], digits: 0 },
  { id: "weight", label: "metric.body_weight", metrics: ["body_weight"], digits: 1 },
  { id: "glucose", label: "metric.glucose", metrics: ["glucose"], digits: 0 },
];
const SPARK_W = 120;
const SPARK_H = 28;
const SVG = "http://www.w3.org/2000/svg";
const MAX_POINTS = 600;

// The store: metric -> { value, unit, at (ms), source, points: [[at, value]...] (sorted) }. Pure: no DOM.
export class VitalsStore {
  constructor(windowS = 600) { this.windowS = windowS; this.byMetric = new Map(); }

  // Returns true when the reading changed what is shown (a newer value, or a new sparkline point).
  add(metric, value, unit, measuredAt, source) {
    const at = typeof measuredAt === "number" ? measuredAt : Date.parse(measuredAt);
    if (!Number.isFinite(at) || typeof value !== "number" || !Number.isFinite(value)) return false;
    let m = this.byMetric.get(metric);
    if (!m) { m = { value, unit, at, source, points: [] }; this.byMetric.set(metric, m); }
    const pts = m.points;
    let i = pts.length;
    while (i > 0 && pts[i - 1][0] > at) i--;
    const dup = i > 0 && pts[i - 1][0] === at;
    if (!dup) pts.splice(i, 0, [at, value]);
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    if (at > m.at || (at === m.at && m.points.length === 1)) Object.assign(m, { value, unit, at, source });
    else if (at === m.at && source === "call") m.source = "call"; // same reading by both paths: the call was first
    return !dup;
  }

  // The newest of several metrics (heart_rate / pulse_rate).
  newest(metrics) {
    let best = null;
    for (const name of metrics) {
      const m = this.byMetric.get(name);
      if (m && (!best || m.at > best.at)) best = { ...m, metric: name };
    }
    return best;
  }

  points(metric, nowMs) {
    const m = this.byMetric.get(metric);
    if (!m) return [];
    const from = nowMs - this.windowS * 1000;
    return m.points.filter(([at]) => at >= from);
  }
}

export function isStale(metric, atMs, nowMs, cadence = CADENCE_S) {
  const c = cadence[metric];
  return c !== undefined && nowMs - atMs > c * 1000;
}

// "x1,y1 x2,y2 ..." for an SVG polyline of `series` ([[t, v]...] lists) scaled together into w x h.
export function sparkPoints(series, fromMs, toMs, w = SPARK_W, h = SPARK_H) {
  const all = series.flat();
  if (!all.length) return series.map(() => "");
  let lo = Math.min(...all.map((p) => p[1]));
  let hi = Math.max(...all.map((p) => p[1]));
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const span = Math.max(1, toMs - fromMs);
  return series.map((pts) => pts.map(([at, v]) => {
    const x = ((at - fromMs) / span) * w;
    const y = h - 2 - ((v - lo) / (hi - lo)) * (h - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  }).join(" "));
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class VitalsPanel {
  constructor({ patientId, state = null, since = Date.now(), windowS = 600, cadence = CADENCE_S } = {}) {
    this.patientId = String(patientId || "");
    this.state = state;
    this.since = since;
    this.cadence = cadence;
    this.store = new VitalsStore(windowS);
    // callDraws: [measured_at, drawn at, sent_at] (ms since the epoch) of each data-channel reading (the benchmark)
    this.metrics = { call: 0, server: 0, ignored: 0, draws: 0, callLatencyMs: [], callDraws: [], lastSource: null };
    this._pending = [];
    this._frame = 0;
    this._acking = new Set();
    this._build();
    this._onVitals = (ev) => this._fromServer(ev.detail.items);
    this._onAlerts = () => this._renderAlerts();
    this._onPatient = () => this._renderNews2();
    if (state) {
      state.addEventListener("vitals", this._onVitals);
      state.addEventListener("alert", this._onAlerts);
      state.addEventListener("alerts", this._onAlerts);
      state.addEventListener("patient", this._onPatient);
      state.addEventListener("patients", this._onPatient);
      const p = state.patients.get(this.patientId);
      if (p) for (const [metric, v] of Object.entries(p.latest || {})) this.store.add(metric, v.value, v.unit, v.measured_at, "server");
    }
    this._ticker = setInterval(() => this._draw(), 1000); // ages and stale badges move with the clock
    this.render();
    this._renderAlerts();
  }

  // The call's start (alerts raised since then are listed).
  setSince(ms) { if (Number.isFinite(ms)) { this.since = ms; this._renderAlerts(); } }

  destroy() {
    clearInterval(this._ticker);
    cancelAnimationFrame(this._frame);
    if (this.state) {
      this.state.removeEventListener("vitals", this._onVitals);
      this.state.removeEventListener("alert", this._onAlerts);
      this.state.removeEventListener("alerts", this._onAlerts);
      this.state.removeEventListener("patient", this._onPatient);
      this.state.removeEventListener("patients", this._onPatient);
    }
  }

  _build() {
    const root = el("aside", "vitals-panel");
    root.id = "vitals-panel";
    root.setAttribute("aria-labelledby", "vp-h");
    const h = el("h2", "", t("consult.vitals"));
    h.id = "vp-h";
    this.grid = el("div", "vp-tiles");
    this.tiles = new Map();
    for (const spec of TILES) {
      const tile = el("section", "vp-tile");
      tile.dataset.tile = spec.id;
      tile.setAttribute("aria-label", t(spec.label));
      const label = el("h3", "vp-label", t(spec.label));
      const value = el("p", "vp-value", "—");
      const meta = el("p", "vp-meta");
      const age = el("span", "vp-age");
      const stale = el("span", "pill vp-stale", t("vp.stale"));
      stale.hidden = true;
      const src = el("span", "vp-src");
      meta.append(age, " ", stale, " ", src);
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("class", "vp-spark");
      svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      const lines = [spec.pair ? 2 : 1].flatMap((n) => Array.from({ length: n }, (_, k) => {
        const pl = document.createElementNS(SVG, "polyline");
        pl.setAttribute("class", `vp-line vp-line-${k}`);
        svg.append(pl);
        return pl;
      }));
      tile.append(label, value, meta, svg);
      this.grid.append(tile);
      this.tiles.set(spec.id, { spec, tile, value, age, stale, src, lines });
    }
    this.news = el("p", "vp-news2");
    this.news.hidden = true;
    const ah = el("h3", "vp-alerts-h", t("vp.alerts"));
    this.alertList = el("ul", "vp-alerts");
    this.alertEmpty = el("p", "muted vp-alerts-empty", t("vp.alerts.none"));
    this.alertsBox = el("section", "vp-alerts-box");
    this.alertsBox.append(ah, this.alertList, this.alertEmpty);
    this.alertsBox.hidden = !this.state;
    root.append(h, this.news, this.grid, this.alertsBox);
    this.root = root;
    // On narrow screens the panel lies over the video: this button shows and hides it.
    this.toggle = el("button", "vp-toggle", t("consult.vitals"));
    this.toggle.type = "button";
    this.toggle.setAttribute("aria-controls", root.id);
    this.toggle.setAttribute("aria-expanded", "false");
    this.toggle.onclick = () => this.setOpen(root.dataset.open !== "true");
  }

  setOpen(open) {
    this.root.dataset.open = String(open);
    this.toggle.setAttribute("aria-expanded", String(open));
  }

  // A message of the call's data channel ({type: "reading", metric, value, unit, measured_at, sent_at}).
  push(msg, source = "call") {
    if (!msg || (msg.type && msg.type !== "reading") || typeof msg.metric !== "string") { this.metrics.ignored += 1; return; }
    if (this.store.add(msg.metric, msg.value, msg.unit, msg.measured_at, source)) {
      this.metrics[source] = (this.metrics[source] || 0) + 1;
      this.metrics.lastSource = source;
      if (source === "call") this._pending.push([Date.parse(msg.measured_at), Date.parse(msg.sent_at)]);
      this.render();
    }
  }

  // Live websocket items [[patient_id, metric, value, unit, measured_at], ...] (the fallback path).
  _fromServer(items) {
    let changed = false;
    for (const [pid, metric, value, unit, measuredAt] of items) {
      if (pid !== this.patientId) continue;
      if (this.store.add(metric, value, unit, measuredAt, "server")) { changed = true; this.metrics.server += 1; this.metrics.lastSource = "server"; }
    }
    if (changed) this.render();
  }

  render() {
    if (this._frame) return;
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this._draw();
      const drawnAt = performance.timeOrigin + performance.now();
      for (const [at, sent] of this._pending) {
        this.metrics.callLatencyMs.push(drawnAt - at);
        this.metrics.callDraws.push([at, drawnAt, sent]);
      }
      if (this.metrics.callLatencyMs.length > 5000) this.metrics.callLatencyMs.splice(0, 1000);
      if (this.metrics.callDraws.length > 20000) this.metrics.callDraws.splice(0, 5000);
      this._pending = [];
    });
  }

  _draw() {
    const now = Date.now();
    this.metrics.draws += 1;
    for (const { spec, tile, value, age, stale, src, lines } of this.tiles.values()) {
      const cur = this.store.newest(spec.metrics);
      if (!cur) { tile.dataset.state = "empty"; continue; }
      let text = fmtNumber(cur.value, spec.digits);
      let unit = t(`unit.${cur.unit}`);
      let series = [this.store.points(cur.metric, now)];
      let isOld = isStale(cur.metric, cur.at, now, this.cadence);
      if (spec.pair) {
        const dia = this.store.newest([spec.pair]);
        if (dia && Math.abs(dia.at - cur.at) < 60_000) text += `/${fmtNumber(dia.value, spec.digits)}`;
        series = [series[0], this.store.points(spec.pair, now)];
        unit = t(`unit.${cur.unit}`);
        isOld = isOld && (!dia || isStale(spec.pair, dia.at, now, this.cadence));
      }
      value.textContent = `${text} ${unit}`;
      value.dataset.metric = cur.metric;
      value.dataset.value = String(cur.value);
      age.textContent = fmtAge((now - cur.at) / 1000);
      age.title = fmtDateTime(cur.at);
      stale.hidden = !isOld;
      src.textContent = t(`vp.src.${cur.source}`);
      src.dataset.source = cur.source;
      tile.dataset.state = isOld ? "stale" : "fresh";
      tile.dataset.source = cur.source;
      tile.dataset.measuredAt = String(cur.at);
      // x axis: from the oldest point shown (at most the window) to now, so that a short call fills the line
      const oldest = Math.min(...series.flat().map((p) => p[0]), now - 30_000);
      sparkPoints(series, oldest, now).forEach((pts, k) => lines[k].setAttribute("points", pts));
    }
    this._renderNews2();
  }

  _renderNews2() {
    const p = this.state && this.state.patients.get(this.patientId);
    if (!p || !p.news2) { this.news.hidden = true; return; }
    const n = p.news2;
    const missing = (n.missing || []).map((m) => t(`news2.param.${m}`)).join(", ");
    this.news.hidden = false;
    this.news.className = `vp-news2 risk-${n.risk}`;
    this.news.dataset.total = String(n.total);
    this.news.textContent = `${t("news2")} ${n.total} — ${t(`risk.${n.risk}`)}` +
      (n.partial ? ` · ${t("vp.news2.missing", { missing })}` : "");
  }

  // Alerts of this patient raised since the call began (open first), each with its acknowledge button.
  _renderAlerts() {
    if (!this.state) return;
    const mine = [...this.state.alerts.values()]
      .filter((a) => String(a.patient_id) === this.patientId && Date.parse(a.raised_at) >= this.since)
      .sort((a, b) => (a.state === "open" ? 0 : 1) - (b.state === "open" ? 0 : 1) || Date.parse(b.raised_at) - Date.parse(a.raised_at));
    this.alertEmpty.hidden = mine.length > 0;
    this.alertList.replaceChildren(...mine.map((a) => {
      const li = el("li", `alert sev-${a.severity} state-${a.state}`);
      li.dataset.alertId = a.id;
      const rule = ruleLabel(a.rule);
      li.append(el("span", `pill sev-${a.severity}`, t(`sev.${a.severity}`)), " ", el("span", "rule", rule), " ");
      const when = el("time", "", fmtDateTime(a.raised_at, { timeStyle: "medium" }));
      when.dateTime = a.raised_at;
      li.append(when, " ", el("span", "state", t(`state.${a.state}`)));
      if (a.state === "open") {
        const b = el("button", "vp-ack", t("alert.acknowledge"));
        b.type = "button";
        b.disabled = this._acking.has(a.id);
        b.setAttribute("aria-label", `${t("alert.acknowledge")} — ${rule}`);
        b.onclick = () => this.acknowledge(a, b);
        li.append(" ", b);
      }
      return li;
    }));
  }

  async acknowledge(alert, button) {
    this._acking.add(alert.id);
    if (button) button.disabled = true;
    try {
      await post(ALERT_ACTIONS.acknowledge(alert.id), { note: t("vp.ack.note") });
    } catch (err) {
      this._acking.delete(alert.id);
      if (button) { button.disabled = false; button.title = t("alert.failed", { detail: err.detail || err.message }); }
      return false;
    }
    this._acking.delete(alert.id);
    return true; // the alert's "acknowledged" event arrives on the live feed and redraws the list
  }
}
