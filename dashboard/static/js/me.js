// The patient's own space (#/me, /patient): my readings (uPlot charts of 7 days), my devices and their battery, my
// alerts in plain words, my consultations ("Rejoindre" joins the call in this browser), my consents, who saw my
// record, my prescriptions (extension point: registerSection). French, English, Arabic (RTL; charts stay LTR: time
// runs left to right in every language, the figure is dir="ltr" so uPlot's axes and legend are not mirrored).
import uPlot from "/vendor/uplot/uPlot.esm.js";
import { get } from "./api.js";
import { fmtAge, fmtDateTime, fmtNumber, intlLocale, t } from "./i18n.js";
import { align } from "./patient.js";
import { AccessSection, ConsentSection, ConsultSection, PrescriptionSlot } from "./me_care.js";

const CHARTS = [
  { id: "bp", metrics: ["systolic_bp", "diastolic_bp"], digits: 0 },
  { id: "hr", metrics: ["heart_rate"], digits: 0 },
  { id: "spo2", metrics: ["spo2"], digits: 0 },
  { id: "temp", metrics: ["body_temperature"], digits: 1 },
  { id: "weight", metrics: ["body_weight"], digits: 1 },
  { id: "glucose", metrics: ["glucose"], digits: 0 },
];
const COLORS = ["#0b5cad", "#7a3db8"];
const RANGE = "7d";
const RANGE_S = 7 * 86400;

// Sections added by other features (prescriptions): { id, title: i18n key, render(root, ctx) -> Promise }.
const extra = [];
export function registerSection(section) { extra.push(section); }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

export function section(id, titleKey) {
  const s = el("section", { class: "me-card", id: `me-${id}`, "aria-labelledby": `me-${id}-h` });
  s.append(el("h2", { id: `me-${id}-h`, text: t(titleKey) }));
  return s;
}

// An alert in plain words: what happened, in a sentence a patient understands (never a rule code).
export function plainAlert(a) {
  const rule = String(a.rule || "");
  if (rule.startsWith("no_data:")) return t("me.alert.no_data", { metric: t(`me.metric.${rule.slice(8)}`) });
  const key = `me.alert.${rule}`;
  const s = t(key);
  return s === key ? t("me.alert.other") : s;
}

export class MePage {
  constructor(root, user) {
    this.root = root;
    this.user = user;
    this.pid = user.patient_id;
    this.plots = [];
    this.sections = [];
    this.ready = this.load();
  }

  destroy() {
    this.destroyed = true;
    for (const p of this.plots) p.destroy();
    for (const s of this.sections) if (s.destroy) s.destroy();
    clearInterval(this._timer);
  }

  async load() {
    if (!document.querySelector("link[data-me-css]")) {
      document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href: "/app/css/me.css" }));
      document.head.lastChild.dataset.meCss = "";
    }
    this.root.className = "me";
    document.title = t("me.title");
    if (!this.pid) { this.root.replaceChildren(el("p", { class: "error", text: t("me.no_record") })); return; }
    const [detail, space] = await Promise.all([get(`/patients/${this.pid}`), get(`/patients/${this.pid}/space`)]);
    if (this.destroyed) return;
    this.detail = detail;
    this.space = space;
    this._build();
    await this._charts();
    this._timer = setInterval(() => this._refresh().catch(() => {}), 30_000);
  }

  _build() {
    const head = el("div", { class: "me-head" });
    head.append(el("h1", { text: t("me.hello", { name: this.space.display_name }) }));
    head.append(el("p", { class: "me-sub", text: t("me.intro") }));
    const nav = el("nav", { class: "me-nav", "aria-label": t("me.nav") });
    const ids = ["readings", "devices", "alerts", "consults", "consents", "access", "prescriptions"];
    for (const id of ids) nav.append(el("a", { href: `#/me/${id}`, "data-section": id, text: t(`me.nav.${id}`) }));
    nav.addEventListener("click", (ev) => {
      const a = ev.target.closest("a[data-section]");
      if (!a) return;
      ev.preventDefault();
      history.replaceState(null, "", `#/me/${a.dataset.section}`);
      this.focusSection(a.dataset.section);
    });
    this.refusedBox = el("div", { id: "me-refused" });
    this.readings = section("readings", "me.readings.title");
    this.latestBox = el("dl", { class: "me-latest" });
    this.grid = el("div", { class: "me-charts" });
    this.readings.append(this.latestBox, el("p", { class: "muted", text: t("me.readings.range") }), this.grid);
    this.devices = section("devices", "me.devices.title");
    this.alerts = section("alerts", "me.alerts.title");
    const ctx = { pid: this.pid, user: this.user, space: this.space, reload: () => this._refresh() };
    const consults = new ConsultSection(section("consults", "me.consults.title"), ctx);
    const consents = new ConsentSection(section("consents", "me.consents.title"), ctx);
    const access = new AccessSection(section("access", "me.access.title"), ctx);
    const rx = new PrescriptionSlot(section("prescriptions", "me.rx.title"), ctx, extra);
    this.sections = [consults, consents, access, rx];
    this.root.replaceChildren(head, nav, this.refusedBox, this.readings, this.devices, this.alerts,
      ...this.sections.map((s) => s.root));
    this._latest();
    this._devices();
    this._refused();
    this._alerts().catch(() => {});
    for (const s of this.sections) s.load().catch((err) => s.root.append(el("p", { class: "error", text: err.message })));
  }

  focusSection(id) {
    const s = this.root.querySelector(`#me-${id}`);
    if (!s) return;
    s.scrollIntoView({ block: "start" });
    const h = s.querySelector("h2");
    h.tabIndex = -1;
    h.focus({ preventScroll: true });
  }

  async _refresh() {
    const [detail, space] = await Promise.all([get(`/patients/${this.pid}`), get(`/patients/${this.pid}/space`)]);
    if (this.destroyed) return;
    this.detail = detail;
    this.space = space;
    this._latest();
    this._devices();
    this._refused();
    for (const s of this.sections) s.update?.(space);
  }

  // Readings refused for lack of consent: said to the person concerned, with the way to change it.
  _refused() {
    const r = this.space.refused_readings;
    const monitoring = this.space.consents.find((c) => c.purpose === "remote_monitoring");
    this.refusedBox.replaceChildren();
    if (monitoring && monitoring.granted) return;
    const box = el("div", { class: "me-warning", role: "status" });
    box.append(el("p", { text: t("me.refused.nomonitoring") }));
    if (r.messages) box.append(el("p", { text: t("me.refused.count", { n: r.messages, when: fmtDateTime(r.last_at) }) }));
    box.append(el("a", { href: "#/me/consents", class: "button", text: t("me.refused.change") }));
    box.querySelector("a").onclick = (ev) => { ev.preventDefault(); this.focusSection("consents"); };
    this.refusedBox.append(box);
  }

  _latest() {
    const l = this.detail.latest;
    const items = [];
    const now = Date.now();
    const show = (label, value, at) => {
      items.push(el("dt", { text: label }), el("dd", {}, el("span", { class: "me-value", text: value }),
        el("span", { class: "muted", text: ` · ${fmtAge((now - Date.parse(at)) / 1000)}` })));
    };
    if (l.systolic_bp && l.diastolic_bp) {
      show(t("me.metric.bp"), `${fmtNumber(l.systolic_bp.value)}/${fmtNumber(l.diastolic_bp.value)} ${t("unit.mm[Hg]")}`, l.systolic_bp.measured_at);
    }
    for (const [m, digits] of [["heart_rate", 0], ["spo2", 0], ["body_temperature", 1], ["body_weight", 1], ["glucose", 0]]) {
      if (l[m]) show(t(`me.metric.${m}`), `${fmtNumber(l[m].value, digits)} ${t(`unit.${l[m].unit}`)}`, l[m].measured_at);
    }
    if (!items.length) items.push(el("dd", { class: "muted", text: t("me.readings.none") }));
    this.latestBox.replaceChildren(...items);
  }

  async _charts() {
    const width = Math.max(260, Math.min(560, this.grid.clientWidth - 8));
    const loaded = await Promise.all(CHARTS.map(async (spec) => ({
      spec,
      results: await Promise.all(spec.metrics.map((m) => get(`/patients/${this.pid}/history?metric=${m}&range=${RANGE}&max_points=${width}`))),
    })));
    if (this.destroyed) return;
    for (const { spec, results } of loaded) this._chart(spec, results, width);
  }

  _chart(spec, results, width) {
    const present = results.filter((r) => r.t.length);
    const fig = el("figure", { class: "me-chart", "data-chart": spec.id, dir: "ltr" });
    const cap = el("figcaption", { dir: "auto", text: `${t(`me.chart.${spec.id}`)} (${t(`unit.${results[0].unit}`)})` });
    fig.append(cap);
    this.grid.append(fig);
    if (!present.length) { fig.append(el("p", { class: "muted", dir: "auto", text: t("me.readings.nodata") })); return; }
    const now = Date.now() / 1000;
    const opts = {
      width, height: 180,
      legend: { show: present.length > 1 },
      scales: { x: { time: true, range: () => [now - RANGE_S, now] } },
      series: [
        { label: t("charts.time"), value: (u, ts) => (ts === null ? "—" : fmtDateTime(ts * 1000)) },
        ...present.map((r, i) => ({
          label: t(`me.metric.${r.metric}`), stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
          points: { show: r.t.length < 60 }, value: (u, v) => (v === null ? "—" : fmtNumber(v, spec.digits)),
        })),
      ],
      axes: [
        { values: (u, vals) => vals.map((v) => new Intl.DateTimeFormat(intlLocale(), { day: "numeric", month: "short" }).format(new Date(v * 1000))) },
        { values: (u, vals) => vals.map((v) => fmtNumber(v, spec.digits)) },
      ],
    };
    this.plots.push(new uPlot(opts, align(present), fig));
    const last = present.map((r) => `${t(`me.metric.${r.metric}`)} ${fmtNumber(r.v[r.v.length - 1], spec.digits)}`).join(", ");
    fig.append(el("p", { class: "sr-only", text: t("me.chart.a11y", { last }) }));
  }

  _devices() {
    const ul = el("ul", { class: "me-devices" });
    for (const d of this.space.devices) {
      const li = el("li");
      li.append(el("strong", { text: t(`kind.${d.kind}`) }), el("span", { class: "muted", text: ` ${d.model || d.address}` }));
      const last = d.last_measured_at ? t("me.devices.last", { age: fmtAge(d.age_s) }) : t("me.devices.never");
      li.append(el("p", { text: last }));
      const battery = d.battery_pct === null
        ? t("me.devices.battery_unknown")
        : t(d.battery_low ? "me.devices.battery_low" : "me.devices.battery", { pct: fmtNumber(d.battery_pct) });
      li.append(el("p", { class: d.battery_low ? "me-low" : "", text: battery }));
      ul.append(li);
    }
    if (!this.space.devices.length) ul.append(el("li", { text: t("me.devices.none") }));
    const gws = this.space.gateways.map((g) => el("p", { class: "muted",
      text: g.last_seen_at ? t("me.gateway.seen", { age: fmtAge(g.age_s) }) : t("me.gateway.never") }));
    this.devices.replaceChildren(this.devices.querySelector("h2"), ul, ...gws);
  }

  async _alerts() {
    const alerts = await get(`/patients/${this.pid}/alerts?limit=20`);
    if (this.destroyed) return;
    const ul = el("ul", { class: "me-alerts" });
    for (const a of alerts) {
      const li = el("li", { "data-alert-id": String(a.id), "data-rule": a.rule });
      li.append(el("p", { class: "me-alert-text", text: plainAlert(a) }));
      const state = t(`me.alert.state.${a.state}`);
      li.append(el("p", { class: "muted", text: `${fmtDateTime(a.raised_at, { dateStyle: "medium", timeStyle: "short" })} · ${state}` }));
      ul.append(li);
    }
    if (!alerts.length) ul.append(el("li", { text: t("me.alerts.none") }));
    this.alerts.replaceChildren(this.alerts.querySelector("h2"), el("p", { class: "muted", text: t("me.alerts.intro") }), ul);
  }
}
