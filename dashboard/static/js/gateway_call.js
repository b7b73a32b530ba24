// "Appeler" / "Call" (issue 19 item 2): ring the patient's gateway — POST .../consultations/{id}/call makes the
// server send a signed join command to it — and show the call's progress from the live feed's "call" frames
// (/ws/v1/patients, docs/teleconsultation.md): ça sonne, la passerelle se connecte, en salle d'attente, a rejoint,
// connecté; la passerelle est hors ligne (no gateway, gateway offline, no answer); échec (with the gateway's reason).
import { post } from "./api.js";
import { t } from "./i18n.js";

const EXPECTING_AGENT = new Set(["sending", "ringing", "joining", "waiting"]);
const FINAL = new Set(["connected", "offline", "failed", "ended"]);

export class GatewayCall {
  constructor({ patientId, feed = null }) {
    this.patientId = patientId;
    this.feed = feed;
    this.callId = null;
    this.state = "idle";
    this.reason = null;
    this.history = [];
    this.early = [];
    this.el = Object.assign(document.createElement("span"), { id: "gateway-call", className: "gateway-call" });
    this.el.setAttribute("role", "status");
    this.el.dataset.state = "idle";
    this._onCall = (ev) => this._frame(ev.detail);
    if (feed) feed.addEventListener("call", this._onCall);
  }

  destroy() { if (this.feed) this.feed.removeEventListener("call", this._onCall); }

  // True while the gateway's agent is on its way: the doctor's page admits it from the waiting room by itself.
  expectsAgent() { return EXPECTING_AGENT.has(this.state); }

  async ring(consultationId) {
    this.callId = null;
    this.early = this.early.filter((f) => Date.now() - f._seenAt < 10_000);
    this.clickedAt = performance.now();
    this._set("sending", null);
    const r = await post(`/patients/${this.patientId}/consultations/${consultationId}/call`, {});
    this.callId = r.call_id;
    this.gatewayId = r.gateway_id;
    this._set(r.state, r.reason);
    for (const f of this.early.splice(0)) this._frame(f); // frames that beat the HTTP answer
    return r;
  }

  _frame(f) {
    if (f.patient_id !== this.patientId) return;
    if (this.callId === null) { this.early.push({ ...f, _seenAt: Date.now() }); return; }
    if (f.call_id !== this.callId) return;
    // The gateway repeats "ringing" after the server's own; a call that connected stays connected until it ends.
    if (FINAL.has(this.state) && !(this.state === "connected" && (f.state === "ended" || f.state === "failed"))) return;
    this._set(f.state, f.reason);
  }

  _reasonText(reason) {
    if (!reason) return "";
    const key = `call.reason.${reason}`;
    const text = t(key);
    return text === key ? reason : text;
  }

  _set(state, reason) {
    this.state = state;
    this.reason = reason || null;
    this.history.push({ state, reason: this.reason, ms: Math.round(performance.now() - (this.clickedAt || 0)) });
    this.el.dataset.state = state;
    this.el.textContent = t(`call.${state}`, { reason: this._reasonText(reason) });
    this.el.dispatchEvent(new CustomEvent("state", { detail: { state, reason } }));
  }
}
