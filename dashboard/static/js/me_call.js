// The call from the patient's phone browser: camera + microphone, the consultation's join token (role "patient"),
// the signaling room's lobby until the doctor admits, then the polite side of the doctor's offers (call.js, the
// same flow as /consult/patient, translated and in the patient space). window.tbib.call exposes state for tests.
import { PeerSession, Signaling } from "/consult/static/call.js";
import { t } from "./i18n.js";

export class CallView {
  constructor(root, token, status, onClose) {
    this.root = root;
    this.token = token;
    this.statusEl = status;
    this.onClose = onClose;
    this.sig = null;
    this.session = null;
    this.stream = null;
    this.state = { status: "preparing", joined: null, remoteTracks: 0, connection: null, errors: [] };
    window.tbib = Object.assign(window.tbib || {}, { call: this });
  }

  setStatus(key, vars) {
    this.state.status = key;
    this.statusEl.textContent = t(`me.call.${key}`, vars);
    this.statusEl.dataset.state = key;
  }

  async start() {
    const box = document.createElement("div");
    box.className = "me-call";
    box.setAttribute("dir", "ltr");
    this.remote = Object.assign(document.createElement("video"), { autoplay: true, playsInline: true });
    this.remote.setAttribute("aria-label", t("me.call.remote"));
    this.local = Object.assign(document.createElement("video"), { autoplay: true, playsInline: true, muted: true });
    this.local.setAttribute("aria-label", t("me.call.local"));
    const leave = document.createElement("button");
    leave.type = "button";
    leave.className = "danger big";
    leave.id = "me-leave";
    leave.textContent = t("me.call.leave");
    leave.onclick = () => this.leave();
    box.append(this.remote, this.local);
    this.statusEl.after(box, leave);
    this.box = box;
    this.leaveButton = leave;
    this.setStatus("camera");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: true });
      this.local.srcObject = this.stream;
    } catch (err) {
      this.state.errors.push(`camera/microphone: ${err}`);
    }
    this.sig = new Signaling();
    await this.sig.connect();
    this.sig.on("lobby", () => this.setStatus("waiting"));
    this.sig.on("deny", () => this.setStatus("denied"));
    this.sig.on("bye", () => { this.setStatus("ended"); if (this.session) this.session.close(); });
    this.sig.on("error", (f) => this.state.errors.push(`${f.code}: ${f.detail}`));
    this.sig.on("offer", (f) => { if (!this.session || this.session.closed || this.session.peer !== f.from) this.open(f.from); });
    this.sig.on("joined", (f) => {
      if (f.resumed && this.state.joined) this.sig.send("renegotiate-request", { to: "doctor", reason: "patient reconnected" });
    });
    this.sig.on("peer-left", (f) => { if (!f.temporary && this.session && this.session.peer === f.seat) this.session.close(); });
    this.setStatus("waiting");
    this.state.joined = await this.sig.join(this.token.token);
    this.setStatus("admitted");
    leave.focus();
  }

  open(peer) {
    if (this.session) this.session.close();
    this.session = new PeerSession(this.sig, {
      peer, polite: true, iceServers: this.state.joined.iceServers, answerStream: this.stream, recvVideo: false, recvAudio: false,
    });
    this.session.addEventListener("track", (ev) => {
      this.state.remoteTracks += 1;
      this.remote.srcObject = ev.detail.streams[0] || new MediaStream([ev.detail.track]);
    });
    this.session.addEventListener("state", (ev) => {
      this.state.connection = ev.detail;
      if (ev.detail === "connected") this.setStatus("connected");
    });
    this.session.addEventListener("failure", (ev) => this.state.errors.push(String(ev.detail)));
  }

  leave() {
    try { if (this.sig && this.sig.ws && this.sig.ws.readyState === 1) this.sig.send("bye", { reason: "patient left" }); } catch { /* closing */ }
    if (this.session) this.session.close();
    if (this.sig) this.sig.close();
    if (this.stream) for (const tr of this.stream.getTracks()) tr.stop();
    this.setStatus("left");
    if (this.box) this.box.remove();
    if (this.leaveButton) this.leaveButton.remove();
    this.onClose();
  }
}
