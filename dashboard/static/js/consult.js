// Consultation view: open a teleconsultation for the patient, join its signaling room as the doctor, invite guests
// (consult_invite.js), admit the patient (or their gateway's agent) and the guests from the waiting room, call every
// admitted seat (mesh; the doctor always offers: docs/teleconsultation.md), show one tile per remote seat
// (consult_tiles.js) + self video, the live vitals panel beside it (vitals_panel.js: the "vitals" data channel, the server's
// vitals websocket as fallback), end the call, and save notes to the consultation record. Signaling and negotiation
// come from the teleconsultation module's /consult/static/call.js.
import { PeerSession, Signaling, watchFirstFrame } from "/consult/static/call.js";
import { get, post, put } from "./api.js";
import { fmtDateTime, t } from "./i18n.js";
import { InviteForm } from "./consult_invite.js";
import { Tiles, seatLabel } from "./consult_tiles.js";
import { GatewayCall } from "./gateway_call.js";
import { VitalsPanel } from "./vitals_panel.js";

export class ConsultView {
  constructor(root, patientId, { state = null } = {}) {
    this.root = root;
    this.patientId = patientId;
    this.state = state;
    this.sig = null;
    this.sessions = {};
    this.local = null;
    this.peers = {};
    this.vitals = new Map();
    this.metrics = { firstFrameMs: null, firstFrameBySeat: {}, vitalsMessages: 0, state: "idle", lastVitalsAt: null, errors: [] };
    this.ready = this.start().catch((err) => this._fail(err));
  }

  destroy() {
    if (this.panel) this.panel.destroy();
    if (this.gwCall) this.gwCall.destroy();
    this.destroyed = true;
    if (this.rx) this.rx.destroy();
    this._closeAll();
    if (this.sig) this.sig.close();
    if (this.local) for (const tr of this.local.getTracks()) tr.stop();
    clearTimeout(this._saveTimer);
  }

  _fail(err) {
    this.metrics.errors.push(String(err.detail || err.message || err));
    this._status(t("consult.error", { detail: err.detail || err.message || String(err) }));
  }

  _status(text, state) {
    if (state) { this.metrics.state = state; this.root.dataset.state = state; }
    this.statusEl.textContent = text;
  }

  _build(patient) {
    this.root.replaceChildren();
    this.root.className = "consult";
    const h = document.createElement("h1");
    h.textContent = t("consult.title", { patient: patient.display_name });
    this.statusEl = document.createElement("p");
    this.statusEl.className = "status";
    this.statusEl.setAttribute("role", "status");
    const stage = document.createElement("div");
    stage.className = "stage";
    this.tiles = new Tiles();
    this.self = Object.assign(document.createElement("video"), { autoplay: true, playsInline: true, muted: true });
    this.self.id = "self-video";
    this.self.setAttribute("aria-label", t("consult.self"));
    stage.append(this.tiles.el, this.self);
    this.panel = new VitalsPanel({ patientId: this.patientId, state: this.state });
    const media = Object.assign(document.createElement("div"), { className: "media" });
    media.append(stage, this.panel.root);

    const lobby = document.createElement("section");
    lobby.setAttribute("aria-labelledby", "lobby-h");
    const lh = document.createElement("h2");
    lh.id = "lobby-h";
    lh.textContent = t("consult.lobby");
    this.lobbyList = document.createElement("ul");
    this.lobbyList.className = "lobby";
    this.lobbyEmpty = Object.assign(document.createElement("p"), { className: "muted", textContent: t("consult.lobby.empty") });
    lobby.append(lh, this.lobbyList, this.lobbyEmpty);

    const controls = document.createElement("div");
    controls.className = "controls";
    this.callBtn = Object.assign(document.createElement("button"), { type: "button", className: "primary", textContent: t("consult.call"), disabled: true });
    // "Appeler": with nobody in the room it rings the patient's gateway (gateway_call.js), else it calls the peer.
    this.gwCall = new GatewayCall({ patientId: this.patientId, feed: window.tbib ? window.tbib.feed : null });
    this.callBtn.id = "call-btn";
    this.callBtn.onclick = () => (Object.keys(this.peers).length ? this.callAll()
      : this.gwCall.ring(this.consultation.id).catch((err) => this._fail(err)));
    this.endBtn = Object.assign(document.createElement("button"), { type: "button", className: "danger", textContent: t("consult.end") });
    this.endBtn.id = "end-call";
    this.endBtn.onclick = () => this.end();
    this.linkBtn = Object.assign(document.createElement("button"), { type: "button", textContent: t("consult.patient_link") });
    this.linkBtn.onclick = () => this.patientLink();
    this.linkOut = document.createElement("output");
    controls.append(this.callBtn, " ", this.gwCall.el, " ", this.endBtn, " ", this.linkBtn, " ", this.panel.toggle, " ", this.linkOut);

    const notes = document.createElement("section");
    notes.setAttribute("aria-labelledby", "notes-h");
    const nh = document.createElement("h2");
    nh.id = "notes-h";
    nh.textContent = t("consult.notes");
    const label = Object.assign(document.createElement("label"), { htmlFor: "consult-notes", className: "sr-only", textContent: t("consult.notes") });
    this.notes = Object.assign(document.createElement("textarea"), { id: "consult-notes", rows: 6, maxLength: 20000 });
    this.notes.oninput = () => { clearTimeout(this._saveTimer); this._saveTimer = setTimeout(() => this.saveNotes(), 1500); };
    this.saveBtn = Object.assign(document.createElement("button"), { type: "button", textContent: t("consult.notes.save") });
    this.saveBtn.onclick = () => this.saveNotes();
    this.savedEl = Object.assign(document.createElement("span"), { className: "muted" });
    this.savedEl.setAttribute("role", "status");
    notes.append(nh, label, this.notes, this.saveBtn, " ", this.savedEl);

    const back = Object.assign(document.createElement("a"), { href: `#/patient/${this.patientId}`, textContent: t("consult.back") });
    const left = Object.assign(document.createElement("div"), { className: "call-col" });
    left.append(media, controls);
    const side = Object.assign(document.createElement("div"), { className: "side-col" });
    this.invite = new InviteForm({ patientId: this.patientId });
    side.append(this.invite.el, lobby, notes, back);
    // The ordonnance of this consultation (issue 18): rx_history.js, filled once the consultation exists.
    this.rxBox = Object.assign(document.createElement("section"), { className: "rx-panel" });
    this.rxBox.setAttribute("aria-labelledby", "rx-h");
    this.rxBody = document.createElement("div");
    this.rxBox.append(Object.assign(document.createElement("h2"), { id: "rx-h", textContent: t("rx.section") }), this.rxBody);
    this.root.append(h, this.statusEl, left, side, this.rxBox);
  }

  async start() {
    const patient = await get(`/patients/${this.patientId}`);
    this.patientName = patient.display_name;
    this._build(patient);
    this._status(t("consult.opening"), "opening");
    this.consultation = await post(`/patients/${this.patientId}/consultations`, { reason: t("consult.reason") });
    this.root.dataset.consultationId = this.consultation.id;
    this.invite.setConsultation(this.consultation.id);
    import("./rx_history.js").then(({ PrescriptionHistory }) => {
      if (!this.destroyed) this.rx = new PrescriptionHistory(this.rxBody, this.patientId, { consultationId: this.consultation.id, allergies: false, open: true });
    }).catch((err) => { this.rxBody.textContent = t("rx.error", { detail: err.message }); });
    this.panel.setSince(Date.parse(this.consultation.created_at));
    const tok = await post(`/patients/${this.patientId}/consultations/${this.consultation.id}/join-token`, { role: "doctor" });
    try {
      this.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
      this.self.srcObject = this.local;
    } catch (err) { this.metrics.errors.push(`camera: ${err.message}`); }
    this.sig = new Signaling();
    await this.sig.connect();
    this.sig.on("lobby", (f) => this._lobby(f.waiting));
    this.sig.on("peer-joined", (f) => {
      this.peers[f.seat] = this._who(f);
      this.callBtn.disabled = false;
      if (!this.sessions[f.seat] || f.resumed === false) this.call(f.seat);
    });
    this.sig.on("peer-left", (f) => {
      if (f.temporary) return;
      const who = this.peers[f.seat];
      delete this.peers[f.seat];
      if (this.sessions[f.seat]) { this.sessions[f.seat].close(); delete this.sessions[f.seat]; }
      this.tiles.remove(f.seat);
      const left = who && who.name ? t("consult.guest_left", { who: seatLabel(who) }) : t("consult.peer_left");
      this._status(left, Object.keys(this.sessions).length ? this.metrics.state : "waiting");
    });
    this.sig.on("bye", (f) => { if (f.end) this._ended(); });
    this.sig.on("close", () => { if (this.metrics.state !== "ended") this._status(t("consult.signaling_closed"), "closed"); });
    this.sig.on("error", (f) => this.metrics.errors.push(`${f.code}: ${f.detail}`));
    const joined = await this.sig.join(tok.token);
    this.iceServers = joined.iceServers || [];
    for (const p of joined.peers || []) this.peers[p.seat] = this._who(p);
    this._status(t("consult.waiting"), "waiting");
    this.callBtn.disabled = false;
    if (sessionStorage.getItem("tbib.ring") === this.patientId) { // "Appeler" on the patient page
      sessionStorage.removeItem("tbib.ring");
      if (!Object.keys(this.peers).length) this.gwCall.ring(this.consultation.id).catch((err) => this._fail(err));
    }
    this.callAll();
  }

  // Name + role of a seat: the guest's name from the invitation, the patient's own name for the patient's seat.
  _who(f) { return { role: f.role, name: f.name || (f.seat === "patient" ? this.patientName : null) }; }

  get session() { return this.sessions.patient || Object.values(this.sessions)[0] || null; }

  callAll() { for (const seat of Object.keys(this.peers)) this.call(seat); }

  _closeAll() {
    for (const s of Object.values(this.sessions)) s.close();
    this.sessions = {};
  }

  _lobby(waiting) {
    for (const w of waiting) if (w.role === "agent" && this.gwCall.expectsAgent()) this.sig.send("admit", { seat: w.seat });
    this.lobbyEmpty.hidden = waiting.length > 0;
    if (waiting.some((w) => w.name)) this.invite.refresh().catch(() => {}); // a guest knocks: their link is now used
    this.lobbyList.replaceChildren(...waiting.map((w) => {
      const li = document.createElement("li");
      const who = seatLabel(w);
      li.dataset.seat = w.seat;
      const admit = Object.assign(document.createElement("button"), { type: "button", className: "primary", textContent: t("consult.admit") });
      admit.dataset.seat = w.seat;
      admit.setAttribute("aria-label", `${t("consult.admit")} ${who}`);
      admit.onclick = () => { this.sig.send("admit", { seat: w.seat }); this._status(t("consult.admitting"), "admitting"); };
      const deny = Object.assign(document.createElement("button"), { type: "button", textContent: t("consult.deny") });
      deny.setAttribute("aria-label", `${t("consult.deny")} ${who}`);
      deny.onclick = () => this.sig.send("deny", { seat: w.seat, reason: "declined by the doctor" });
      li.append(Object.assign(document.createElement("span"), { className: "who", textContent: who }), " ", admit, " ", deny);
      return li;
    }));
  }

  // One offering peer connection per remote seat; the vitals channel only towards the patient's seat.
  call(peer) {
    if (this.sessions[peer]) this.sessions[peer].close();
    const t0 = performance.now();
    const who = this.peers[peer] || { role: peer };
    const role = who.role;
    this._status(t("consult.calling"), "calling");
    const s = new PeerSession(this.sig, { peer, polite: false, iceServers: this.iceServers, stream: this.local, vitals: peer === "patient" });
    this.sessions[peer] = s;
    s.addEventListener("track", (ev) => {
      const { track, streams } = ev.detail;
      if (track.kind !== "video") return;
      const video = this.tiles.video(peer, who);
      video.srcObject = streams[0] || new MediaStream([track]);
      video.play().catch(() => {});
      watchFirstFrame(s.pc, video, t0, (ms) => {
        if (this.metrics.firstFrameMs === null) this.metrics.firstFrameMs = ms;
        this.metrics.firstFrameBySeat[peer] = ms;
      });
    });
    s.addEventListener("state", (ev) => {
      if (this.sessions[peer] !== s) return;
      if (ev.detail === "connected") this._status(t("consult.connected"), "connected");
      else if (ev.detail === "failed" || ev.detail === "disconnected") this._status(t(`consult.${ev.detail}`), ev.detail);
    });
    s.addEventListener("vitals", (ev) => this._vital(ev.detail.msg));
    s.addEventListener("renegotiate", () => { if (role === "agent") this.call(peer); else s.restartIce(); });
    s.addEventListener("failure", (ev) => this.metrics.errors.push(String(ev.detail)));
  }

  _vital(msg) {
    if (msg.type && msg.type !== "reading") return;
    this.metrics.vitalsMessages += 1;
    this.metrics.lastVitalsAt = Date.now();
    this.vitals.set(msg.metric, msg);
    this.panel.push(msg, "call");
  }

  async patientLink() {
    // The patient joins from their own app (their own join-token call); tell the doctor where.
    this.linkOut.textContent = t("consult.patient_link.help");
  }

  async saveNotes() {
    if (!this.consultation) return;
    try {
      const r = await put(`/patients/${this.patientId}/consultation-notes/${this.consultation.id}`, { text: this.notes.value });
      this.savedEl.textContent = t("consult.notes.saved", { at: fmtDateTime(r.updated_at) });
      this.root.dataset.notesSaved = r.updated_at;
    } catch (err) {
      this.savedEl.textContent = t("consult.notes.failed", { detail: err.detail || err.message });
    }
  }

  async end() {
    await this.saveNotes();
    if (this.sig && this.sig.ws && this.sig.ws.readyState === WebSocket.OPEN) this.sig.send("bye", { end: true, reason: "ended by the doctor" });
    this._ended();
  }

  _ended() {
    this._closeAll();
    if (this.local) for (const tr of this.local.getTracks()) tr.stop();
    this.callBtn.disabled = true;
    this.endBtn.disabled = true;
    this._status(t("consult.ended"), "ended");
  }
}
