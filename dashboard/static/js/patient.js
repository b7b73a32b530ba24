// Patient page: latest vitals, one uPlot chart per vital for 1 h / 24 h / 7 d / 30 d (downsampled by the server),
// alert thresholds drawn as dashed lines, alert markers as vertical lines, live readings merged into every range
// (see mergeLive), the daily summary table and the CSV export.
import uPlot from "/vendor/uplot/uPlot.esm.js";
import { get } from "./api.js";
import { currentLang, fmtAge, fmtDateTime, fmtDay, fmtNumber, t } from "./i18n.js";
import { Inbox, ruleLabel } from "./inbox.js";

const CHARTS = [
  { id: "hr", metrics: ["heart_rate", "pulse_rate"], thresholds: "heart_rate", digits: 0 },
  { id: "spo2", metrics: ["spo2"], thresholds: "spo2", digits: 0 },
  { id: "bp", metrics: ["systolic_bp", "diastolic_bp"], thresholds: "systolic_bp", digits: 0 },
  { id: "temp", metrics: ["body_temperature"], thresholds: "body_temperature", digits: 1 },
  { id: "weight", metrics: ["body_weight"], thresholds: null, digits: 1 },
  { id: "glucose", metrics: ["glucose"], thresholds: "glucose", digits: 0 },
];
const DIGITS = { body_temperature: 1, body_weight: 1, bmi: 1, body_height: 2 };
const COLORS = ["#0b5cad", "#7a3db8"];
const SEV_COLOR = { low: "#6b7280", medium: "#b45309", high: "#b91c1c" };
const RANGE_S = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

// A series is broken (not joined) across a silence longer than 3 of its usual intervals (at least 2 min): a stopped
// gateway or a night without measurements must not look like a straight line of data.
function gapBreaks(t) {
  if (t.length < 3) return [];
  const d = [];
  for (let i = 1; i < t.length; i++) d.push(t[i] - t[i - 1]);
  const sorted = [...d].sort((a, b) => a - b);
  const limit = Math.max(120, 3 * sorted[Math.floor(sorted.length / 2)]);
  const breaks = [];
  d.forEach((dt, i) => { if (dt > limit) breaks.push((t[i] + t[i + 1]) / 2); });
  return breaks;
}

// Merge per-metric columns into uPlot's aligned data [xs, ys1, ys2...]: `undefined` where a series has no point at
// that x (joined over), `null` at the middle of each long silence (a visible gap; spanGaps is off).
export function align(series) {
  const breaks = series.map((s) => gapBreaks(s.t));
  const xs = [...new Set([...series.flatMap((s) => s.t), ...breaks.flat()])].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s, k) => {
    const col = new Array(xs.length).fill(undefined);
    s.t.forEach((x, i) => { col[index.get(x)] = s.v[i]; });
    for (const b of breaks[k]) col[index.get(b)] = null;
    return col;
  });
  return [xs, ...ys];
}

const ORIGIN_S = 946857600; // 2000-01-03T00:00:00Z: the server's bucket origin (store.rollups.ORIGIN)

// Merge one live reading into a chart series as the server would have reduced it. Raw series (bucket_s 0, the 1 h
// range): append the point. Downsampled series: readings fall into buckets of bucket_s seconds (the server's min/max
// pre-buckets, same origin); the last bucket is drawn as its minimum, maximum and latest reading (in time order), so
// peaks stay visible and the line ends at the newest value; a reading in a later bucket starts a new one. Readings
// older than the last bucket are left to the next load. Points that slide out of the range are dropped. Returns
// whether the series changed.
export function mergeLive(s, ts, value, rangeS, nowS) {
  const n = s.t.length;
  if (!s.bucket_s) {
    if (n && ts <= s.t[n - 1]) return false;
    s.t.push(ts);
    s.v.push(value);
  } else {
    const w = s.bucket_s;
    const b = Math.floor((ts - ORIGIN_S) / w);
    if (!s.tail || s.tail.b !== b) {
      if (s.tail && b < s.tail.b) return false;
      if (n && Math.floor((s.t[n - 1] - ORIGIN_S) / w) > b) return false;
      // start the bucket, folding in the server's points already in it
      let start = n;
      while (start > 0 && Math.floor((s.t[start - 1] - ORIGIN_S) / w) === b) start--;
      const tail = { b, start, lo: [ts, value], hi: [ts, value], last: [ts, value] };
      for (let i = start; i < n; i++) foldPoint(tail, s.t[i], s.v[i]);
      s.tail = tail;
    } else if (ts < s.tail.last[0] && value >= s.tail.lo[1] && value <= s.tail.hi[1]) {
      return false; // an older reading inside the bucket's extremes changes nothing drawn
    }
    foldPoint(s.tail, ts, value);
    const pts = [s.tail.lo, s.tail.hi, s.tail.last]
      .sort((a, c) => a[0] - c[0])
      .filter((p, i, all) => i === 0 || p[0] !== all[i - 1][0]);
    s.t.length = s.tail.start;
    s.v.length = s.tail.start;
    for (const [pt, pv] of pts) { s.t.push(pt); s.v.push(pv); }
  }
  let drop = 0;
  while (drop < s.t.length && s.t[drop] < nowS - rangeS) drop++;
  if (drop) {
    s.t.splice(0, drop);
    s.v.splice(0, drop);
    if (s.tail) s.tail.start = Math.max(0, s.tail.start - drop);
  }
  return true;
}

function foldPoint(tail, ts, value) {
  if (value < tail.lo[1] || (value === tail.lo[1] && ts < tail.lo[0])) tail.lo = [ts, value];
  if (value > tail.hi[1] || (value === tail.hi[1] && ts > tail.hi[0])) tail.hi = [ts, value];
  if (ts >= tail.last[0]) tail.last = [ts, value];
}

function thresholdPlugin(getLevels, getMarks) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        const { left, top, width, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = Math.max(1, devicePixelRatio);
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        for (const lv of getLevels()) {
          for (const y of [lv.low, lv.high]) {
            if (y === null || y === undefined) continue;
            const py = u.valToPos(y, "y", true);
            if (py < top || py > top + height) continue;
            ctx.strokeStyle = SEV_COLOR[lv.severity];
            ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(left + width, py); ctx.stroke();
          }
        }
        ctx.setLineDash([]);
        for (const m of getMarks()) {
          const px = u.valToPos(m.t, "x", true);
          if (px < left || px > left + width) continue;
          ctx.strokeStyle = SEV_COLOR[m.severity];
          ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke();
          ctx.fillStyle = SEV_COLOR[m.severity];
          ctx.beginPath(); ctx.arc(px, top + 5 * devicePixelRatio, 4 * devicePixelRatio, 0, 2 * Math.PI); ctx.fill();
        }
        ctx.restore();
      }],
    },
  };
}

export class PatientPage {
  constructor(root, state, feed, patientId, { onConsult }) {
    this.root = root;
    this.state = state;
    this.feed = feed;
    this.id = patientId;
    this.range = sessionStorage.getItem("tbib.range") || "1h";
    this.charts = new Map();
    this.onConsult = onConsult;
    this.metrics = { chartPoints: {} };
    this._onVitals = (ev) => this._live(ev.detail.items);
    this._onAlert = (ev) => { if (String(ev.detail.frame.alert.patient_id) === this.id) this._refreshHeader(); };
    state.addEventListener("vitals", this._onVitals);
    state.addEventListener("alert", this._onAlert);
    this._resize = new ResizeObserver(() => this._fit());
    this.ready = this.load();
  }

  destroy() {
    this.destroyed = true;
    this.state.removeEventListener("vitals", this._onVitals);
    this.state.removeEventListener("alert", this._onAlert);
    this._resize.disconnect();
    for (const c of this.charts.values()) c.plot.destroy();
    if (this.inbox) this.inbox.destroy();
    if (this.rx) this.rx.destroy();
    clearInterval(this._ages);
  }

  // Vitals and alerts arrive on the sockets while the detail is still loading, and the user may leave the page before
  // it has loaded: nothing is drawn before _build, and nothing at all once the page is destroyed (its root is reused).
  async load() {
    const detail = await get(`/patients/${this.id}`);
    if (this.destroyed) return;
    this.detail = detail;
    this._build();
    await Promise.all([this.loadCharts(), this.loadSummary()]);
    if (this.destroyed) return;
    this._ages = setInterval(() => this._refreshLatest(), 5000);
  }

  _build() {
    const d = this.detail;
    this.root.replaceChildren();
    const head = document.createElement("div");
    head.className = "patient-head";
    const h = document.createElement("h1");
    h.textContent = d.display_name;
    this.news = document.createElement("p");
    this.news.className = "news2-line";
    const consult = document.createElement("button");
    consult.type = "button";
    consult.className = "primary";
    consult.id = "start-consult";
    consult.textContent = t("consult.start");
    consult.onclick = () => this.onConsult(this.id);
    // "Appeler": open the consultation page, which rings the patient's gateway once it is in the room (gateway_call.js).
    const ring = Object.assign(document.createElement("button"), { type: "button", id: "call-patient", textContent: t("consult.call") });
    ring.onclick = () => { sessionStorage.setItem("tbib.ring", this.id); this.onConsult(this.id); };
    head.append(h, this.news, consult, " ", ring);
    // No decision on file is no consent (issue 19): say what tbib does not do for this patient.
    const c = d.consents || {};
    if (!c.teleconsultation) { consult.disabled = ring.disabled = true; consult.title = ring.title = t("consent.no_teleconsultation"); }
    for (const purpose of ["remote_monitoring", "teleconsultation"]) {
      if (c[purpose]) continue;
      head.append(Object.assign(document.createElement("p"), {
        className: "consent-missing", role: "note", textContent: t(`consent.no_${purpose}`),
      }));
    }

    this.latestBox = document.createElement("dl");
    this.latestBox.className = "latest";

    const alertsSec = document.createElement("section");
    alertsSec.setAttribute("aria-labelledby", "p-alerts");
    const ah = document.createElement("h2");
    ah.id = "p-alerts";
    ah.textContent = t("alerts.title");
    const inboxRoot = document.createElement("div");
    alertsSec.append(ah, inboxRoot);
    this.inbox = new Inbox(inboxRoot, this.state, { compact: true, patientId: this.id });

    const chartsSec = document.createElement("section");
    chartsSec.setAttribute("aria-labelledby", "p-charts");
    const ch = document.createElement("h2");
    ch.id = "p-charts";
    ch.textContent = t("charts.title");
    const ranges = document.createElement("div");
    ranges.className = "ranges";
    ranges.setAttribute("role", "group");
    ranges.setAttribute("aria-label", t("charts.range"));
    for (const r of Object.keys(RANGE_S)) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = t(`range.${r}`);
      b.dataset.range = r;
      b.setAttribute("aria-pressed", String(r === this.range));
      b.onclick = () => this.setRange(r);
      ranges.append(b);
    }
    this.csv = document.createElement("a");
    this.csv.className = "button";
    this.csv.id = "csv-export";
    this.csv.textContent = t("export.csv");
    ranges.append(this.csv);
    this.rangeButtons = ranges;
    this.grid = document.createElement("div");
    this.grid.className = "charts";
    chartsSec.append(ch, ranges, this.grid);

    const sumSec = document.createElement("section");
    sumSec.setAttribute("aria-labelledby", "p-summary");
    const sh = document.createElement("h2");
    sh.id = "p-summary";
    sh.textContent = t("summary.title");
    this.summaryBox = document.createElement("div");
    sumSec.append(sh, this.summaryBox);

    const devSec = document.createElement("section");
    devSec.setAttribute("aria-labelledby", "p-devices");
    const dh = document.createElement("h2");
    dh.id = "p-devices";
    dh.textContent = t("devices.title");
    this.devicesBox = document.createElement("ul");
    this.devicesBox.className = "devices";
    devSec.append(dh, this.devicesBox);

    // Prescriptions, their dispenses and the allergy list (issue 18: rx_history.js).
    const rxSec = document.createElement("section");
    rxSec.setAttribute("aria-labelledby", "p-rx");
    rxSec.className = "rx-section";
    const rxBody = document.createElement("div");
    rxSec.append(Object.assign(document.createElement("h2"), { id: "p-rx", textContent: t("rx.section.patient") }), rxBody);
    // Loaded after the page's own requests have gone (the detail, the charts): nothing here waits for it.
    import("./rx_history.js").then(({ PrescriptionHistory }) => {
      if (!this.destroyed) this.rx = new PrescriptionHistory(rxBody, this.id);
    }).catch((err) => { rxBody.textContent = t("rx.error", { detail: err.message }); });

    this.root.append(head, this.latestBox, alertsSec, chartsSec, sumSec, devSec, rxSec);
    this._refreshHeader();
    this._refreshLatest();
    this._devices();
  }

  _refreshHeader() {
    if (!this.news || this.destroyed) return;
    const p = this.state.patients.get(this.id) || this.detail;
    const n = p.news2;
    const missing = n.missing.map((m) => t(`news2.param.${m}`)).join(", ");
    this.news.textContent = `${t("news2")} ${n.total} — ${t(`risk.${n.risk}`)}` +
      (n.partial ? ` (${t("news2.partial_long", { missing })})` : "");
    this.news.className = `news2-line risk-${n.risk}`;
  }

  _refreshLatest() {
    if (!this.latestBox || this.destroyed) return;
    const p = this.state.patients.get(this.id) || this.detail;
    const now = Date.now();
    const items = [];
    for (const [metric, v] of Object.entries(p.latest)) {
      if (metric === "rr_interval" || metric === "energy_expended") continue;
      const dt = document.createElement("dt");
      dt.textContent = t(`metric.${metric}`);
      const dd = document.createElement("dd");
      const digits = DIGITS[metric] || 0;
      dd.textContent = `${fmtNumber(v.value, digits)} ${t(`unit.${v.unit}`)} · ${fmtAge((now - Date.parse(v.measured_at)) / 1000)}`;
      dd.dataset.metric = metric;
      items.push(dt, dd);
    }
    this.latestBox.replaceChildren(...items);
    this._refreshHeader();
  }

  _devices() {
    const items = this.detail.devices.map((d) => {
      const li = document.createElement("li");
      const last = d.last_measured_at ? fmtAge(d.age_s) : t("nodata.never");
      li.textContent = `${t(`kind.${d.kind}`)} · ${d.model || d.address} · ${t("devices.last")} ${last}`;
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.textContent = t("devices.none");
      items.push(li);
    }
    this.devicesBox.replaceChildren(...items);
  }

  setRange(r) {
    this.range = r;
    sessionStorage.setItem("tbib.range", r);
    for (const b of this.rangeButtons.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.range === r));
    this.loadCharts();
  }

  async loadCharts() {
    const range = this.range;
    this.csv.href = `/api/v1/patients/${this.id}/readings.csv?range=${range}`;
    this.csv.setAttribute("download", `tbib-${this.id.slice(0, 8)}-${range}.csv`);
    const width = Math.max(280, Math.floor(this.grid.clientWidth / (this.grid.clientWidth > 900 ? 2 : 1)) - 24);
    const jobs = CHARTS.map(async (spec) => {
      const results = await Promise.all(spec.metrics.map((m) =>
        get(`/patients/${this.id}/history?metric=${m}&range=${range}&max_points=${Math.min(2000, width)}`)));
      return { spec, results };
    });
    const loaded = await Promise.all(jobs);
    if (range !== this.range || this.destroyed) return;
    for (const c of this.charts.values()) c.plot.destroy();
    this.charts.clear();
    this.grid.replaceChildren();
    for (const { spec, results } of loaded) this._chart(spec, results, width);
    this.grid.dataset.range = range;
    this._resize.observe(this.grid);
  }

  _chart(spec, results, width) {
    const present = results.filter((r) => r.t.length);
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.chart = spec.id;
    const cap = document.createElement("figcaption");
    const unit = results[0].unit;
    cap.textContent = `${t(`chart.${spec.id}`)} (${t(`unit.${unit}`)})`;
    fig.append(cap);
    this.grid.append(fig);
    const points = results.reduce((n, r) => n + r.t.length, 0);
    this.metrics.chartPoints[spec.id] = points;
    fig.dataset.points = String(points);
    fig.dataset.source = [...new Set(results.map((r) => r.source))].join(",");
    if (!present.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = t("charts.nodata");
      fig.append(p);
      return;
    }
    const levels = spec.thresholds ? (results[0].thresholds.length ? results[0].thresholds : (this.detail.thresholds[spec.thresholds] || [])) : [];
    const marks = results.flatMap((r) => r.alerts);
    const data = align(present);
    const now = Date.now() / 1000;
    const opts = {
      width,
      height: 200,
      scales: {
        x: { time: true, range: () => [now - RANGE_S[this.range], Date.now() / 1000] },
        y: { range: (u, min, max) => padRange(min, max, levels) },
      },
      series: [
        { label: t("charts.time"), value: (u, ts) => (ts === null ? "—" : fmtDateTime(ts * 1000)) },
        ...present.map((r, i) => ({
          label: t(`metric.${r.metric}`),
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: false,
          points: { show: r.t.length < 80 },
          value: (u, v) => (v === null ? "—" : fmtNumber(v, spec.digits)),
        })),
      ],
      axes: [
        { values: (u, vals) => vals.map((v) => axisTime(v, this.range)) },
        { values: (u, vals, axis, space, incr) => vals.map((v) => fmtNumber(v, incr < 1 ? 1 : 0)) },
      ],
      plugins: [thresholdPlugin(() => levels, () => marks)],
    };
    const plot = new uPlot(opts, data, fig);
    const desc = document.createElement("p");
    desc.className = "sr-only";
    const last = present.map((r) => `${t(`metric.${r.metric}`)} ${fmtNumber(r.v[r.v.length - 1], spec.digits)}`).join(", ");
    desc.textContent = t("charts.a11y", { n: points, last, alerts: marks.map((m) => ruleLabel(m.rule)).join(", ") || "—" });
    fig.append(desc);
    const series = present.map((r) => ({ metric: r.metric, t: [...r.t], v: [...r.v], bucket_s: r.bucket_s || 0, tail: null }));
    fig.dataset.lastT = String(Math.max(...series.map((x) => x.t[x.t.length - 1])));
    this.charts.set(spec.id, { plot, spec, series });
  }

  _fit() {
    const width = Math.max(280, Math.floor(this.grid.clientWidth / (this.grid.clientWidth > 900 ? 2 : 1)) - 24);
    for (const c of this.charts.values()) if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({ width, height: 200 });
  }

  // Live readings: merged into the charts of every range (mergeLive), without reloading them.
  _live(items) {
    let mine = false;
    const touched = new Set();
    const nowS = Date.now() / 1000;
    for (const [pid, metric, value, , measuredAt] of items) {
      if (pid !== this.id) continue;
      mine = true;
      const ts = Date.parse(measuredAt) / 1000;
      for (const c of this.charts.values()) {
        const s = c.series.find((x) => x.metric === metric);
        if (s && mergeLive(s, ts, value, RANGE_S[this.range], nowS)) touched.add(c);
      }
    }
    for (const c of touched) {
      c.plot.setData(align(c.series), false);
      c.plot.setScale("x", { min: nowS - RANGE_S[this.range], max: nowS });
      const points = c.series.reduce((n, s) => n + s.t.length, 0);
      this.metrics.chartPoints[c.spec.id] = points;
      const fig = c.plot.root.parentElement;
      fig.dataset.points = String(points);
      fig.dataset.lastT = String(Math.max(...c.series.filter((s) => s.t.length).map((s) => s.t[s.t.length - 1])));
      fig.dataset.live = String((+fig.dataset.live || 0) + 1);
    }
    if (mine) this._refreshLatest();
  }

  async loadSummary() {
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const s = await get(`/patients/${this.id}/summary?days=7&tz=${encodeURIComponent(tz)}`);
    if (this.destroyed) return;
    const table = document.createElement("table");
    table.className = "summary";
    const cap = table.createCaption();
    cap.textContent = t("summary.caption", { tz: s.tz, days: s.days });
    const head = table.createTHead().insertRow();
    for (const k of ["metric", "day", "count", "min", "mean", "max"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = t(`summary.${k}`);
      head.append(th);
    }
    const body = table.createTBody();
    for (const [metric, rows] of Object.entries(s.metrics)) {
      const digits = metric === "body_temperature" || metric === "body_weight" ? 1 : 0;
      for (const r of rows) {
        const tr = body.insertRow();
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = t(`metric.${metric}`);
        tr.append(th);
        for (const v of [fmtDay(r.day), fmtNumber(r.count), fmtNumber(r.min, digits), fmtNumber(r.mean, digits), fmtNumber(r.max, digits)]) {
          tr.insertCell().textContent = v;
        }
      }
    }
    if (!body.rows.length) {
      this.summaryBox.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", textContent: t("charts.nodata") }));
      return;
    }
    this.summaryBox.replaceChildren(table);
  }
}

// y range: the data with 10 % padding (at least 1 unit), so that a single reading is not drawn on a 0-60 axis, widened
// to the alert thresholds that lie within 15 % of the data (so the nearby limits are visible).
function padRange(min, max, levels = []) {
  if (min === null || max === null) return [0, 1];
  const near = Math.max(Math.abs(min), Math.abs(max)) * 0.15;
  for (const lv of levels) {
    for (const y of [lv.low, lv.high]) {
      if (y === null || y === undefined) continue;
      if (y >= min - near && y <= max + near) { min = Math.min(min, y); max = Math.max(max, y); }
    }
  }
  const pad = Math.max((max - min) * 0.1, 1);
  return [min - pad, max + pad];
}

const axisFormats = new Map();
// Localized 24 h clock for 1 h / 24 h, day and month beyond.
function axisTime(ts, range) {
  const short = range === "1h" || range === "24h";
  const key = `${currentLang()}:${short}`;
  let f = axisFormats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(currentLang(), short ? { hour: "2-digit", minute: "2-digit" } : { day: "numeric", month: "short" });
    axisFormats.set(key, f);
  }
  return f.format(new Date(ts * 1000));
}
