// Alert inbox: open and acknowledged alerts of my patients, live; acknowledge / resolve with a note (audited by the
// server); escalations shown; a sound and a system notification for new alerts when the doctor allowed them.
import { post } from "./api.js";
import { fmtDateTime, t } from "./i18n.js";
import { SEVERITY_RANK } from "./state.js";

// Alert lifecycle routes of the alerts service (issue 7).
export const ALERT_ACTIONS = {
  acknowledge: (id) => `/alerts/${id}/acknowledge`,
  resolve: (id) => `/alerts/${id}/resolve`,
};

export function ruleLabel(rule) {
  if (rule.startsWith("no_data:")) return t("rule.no_data", { metric: t(`metric.${rule.slice(8)}`) });
  const key = `rule.${rule}`;
  const s = t(key);
  return s === key ? rule : s;
}

function sortAlerts(alerts) {
  return [...alerts].sort((a, b) => {
    const sa = a.state === "open" ? 1 : 0;
    const sb = b.state === "open" ? 1 : 0;
    if (sa !== sb) return sb - sa;
    const va = SEVERITY_RANK[a.severity] || 0;
    const vb = SEVERITY_RANK[b.severity] || 0;
    if (va !== vb) return vb - va;
    return Date.parse(b.raised_at) - Date.parse(a.raised_at);
  });
}

// ---- sound and notifications ---------------------------------------------------------------------------------------
let audioCtx = null;
export function beep(severity) {
  if (localStorage.getItem("tbib.sound") === "off") return;
  try {
    audioCtx = audioCtx || new AudioContext();
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    osc.frequency.value = severity === "high" ? 880 : 660;
    gain.gain.setValueAtTime(0.001, audioCtx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.2, audioCtx.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.001, audioCtx.currentTime + 0.4);
    osc.connect(gain).connect(audioCtx.destination);
    osc.start();
    osc.stop(audioCtx.currentTime + 0.45);
  } catch { /* no audio device */ }
}

export function notify(alert) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(t("notify.title", { patient: alert.patient_name || "" }), {
      body: `${t(`sev.${alert.severity}`)} — ${ruleLabel(alert.rule)}`,
      tag: `tbib-alert-${alert.id}`,
    });
    n.onclick = () => { window.focus(); location.hash = `#/patient/${alert.patient_id}`; };
  } catch { /* not allowed in this context */ }
}

// ---- the action dialog ---------------------------------------------------------------------------------------------
export function openAlertDialog(alert, action, onDone) {
  const dlg = document.getElementById("alert-dialog");
  const note = document.getElementById("alert-note");
  const err = document.getElementById("alert-dialog-error");
  document.getElementById("alert-dialog-title").textContent = t(`alert.${action}.title`);
  document.getElementById("alert-dialog-desc").textContent =
    `${alert.patient_name || ""} — ${ruleLabel(alert.rule)} (${t(`sev.${alert.severity}`)})`;
  const ok = document.getElementById("alert-ok");
  ok.textContent = t(`alert.${action}`);
  note.value = "";
  err.textContent = "";
  const form = document.getElementById("alert-form");
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    ok.disabled = true;
    try {
      await post(ALERT_ACTIONS[action](alert.id), { note: note.value.trim() });
      dlg.close();
      if (onDone) onDone();
    } catch (e) {
      err.textContent = t("alert.failed", { detail: e.detail || e.message });
    } finally { ok.disabled = false; }
  };
  document.getElementById("alert-cancel").onclick = () => dlg.close();
  dlg.showModal();
  note.focus();
}

// ---- the inbox view ------------------------------------------------------------------------------------------------
export class Inbox {
  constructor(root, state, { compact = false, patientId = null } = {}) {
    this.root = root;
    this.state = state;
    this.compact = compact;
    this.patientId = patientId;
    this.frame = 0;
    this._on = () => this.schedule();
    state.addEventListener("alerts", this._on);
    state.addEventListener("alert", this._on);
    this._build();
    this.render();
  }

  destroy() {
    this.state.removeEventListener("alerts", this._on);
    this.state.removeEventListener("alert", this._on);
    cancelAnimationFrame(this.frame);
  }

  schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); }); }

  _build() {
    this.root.replaceChildren();
    if (!this.compact) {
      const h = document.createElement("h1");
      h.textContent = t("alerts.title");
      const tools = document.createElement("div");
      tools.className = "tools";
      const notifBtn = document.createElement("button");
      notifBtn.type = "button";
      const label = () => {
        const p = "Notification" in window ? Notification.permission : "unsupported";
        notifBtn.textContent = t(`notify.${p}`);
        notifBtn.disabled = p !== "default";
      };
      label();
      notifBtn.onclick = async () => { await Notification.requestPermission(); label(); };
      const sound = document.createElement("button");
      sound.type = "button";
      const soundLabel = () => {
        const off = localStorage.getItem("tbib.sound") === "off";
        sound.textContent = t(off ? "sound.off" : "sound.on");
        sound.setAttribute("aria-pressed", String(!off));
      };
      soundLabel();
      sound.onclick = () => {
        localStorage.setItem("tbib.sound", localStorage.getItem("tbib.sound") === "off" ? "on" : "off");
        soundLabel();
        beep("medium");
      };
      tools.append(notifBtn, " ", sound);
      this.root.append(h, tools);
    }
    this.list = document.createElement("ul");
    this.list.className = "inbox";
    this.list.setAttribute("aria-label", t("alerts.title"));
    this.empty = document.createElement("p");
    this.empty.className = "muted";
    this.empty.textContent = t("alerts.empty");
    this.root.append(this.list, this.empty);
  }

  render() {
    let alerts = [...this.state.alerts.values()];
    if (this.patientId) alerts = alerts.filter((a) => String(a.patient_id) === this.patientId);
    alerts = sortAlerts(alerts);
    this.empty.hidden = alerts.length > 0;
    const items = alerts.map((a) => this._item(a));
    this.list.replaceChildren(...items);
  }

  _item(a) {
    const li = document.createElement("li");
    li.className = `alert sev-${a.severity} state-${a.state}`;
    li.dataset.alertId = a.id;
    const sev = document.createElement("span");
    sev.className = `pill sev-${a.severity}`;
    sev.textContent = t(`sev.${a.severity}`);
    const who = document.createElement("a");
    who.href = `#/patient/${a.patient_id}`;
    who.textContent = a.patient_name || String(a.patient_id).slice(0, 8);
    const what = document.createElement("span");
    what.className = "rule";
    what.textContent = ruleLabel(a.rule);
    const when = document.createElement("time");
    when.dateTime = a.raised_at;
    when.textContent = fmtDateTime(a.raised_at);
    const st = document.createElement("span");
    st.className = "state";
    st.textContent = t(`state.${a.state}`);
    li.append(sev, " ", who, " ", what, " ", when, " ", st);
    if (a.escalated_at) {
      const esc = document.createElement("span");
      esc.className = "pill escalated";
      esc.textContent = t("alert.escalated");
      esc.title = fmtDateTime(a.escalated_at);
      li.append(" ", esc);
    }
    if (a.notes) {
      const notes = document.createElement("q");
      notes.className = "notes";
      notes.textContent = a.notes;
      li.append(" ", notes);
    }
    const actions = document.createElement("span");
    actions.className = "actions";
    if (a.state === "open") actions.append(this._button(a, "acknowledge"));
    actions.append(this._button(a, "resolve"));
    li.append(actions);
    return li;
  }

  _button(a, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t(`alert.${action}`);
    b.setAttribute("aria-label", `${t(`alert.${action}`)} — ${a.patient_name || ""} ${ruleLabel(a.rule)}`);
    b.onclick = () => openAlertDialog(a, action);
    return b;
  }
}
