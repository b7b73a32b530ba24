// tbib call client (ES module): signaling over /ws/v1/signaling and WebRTC negotiation roles.
// Protocol reference: docs/teleconsultation.md. Used by /consult/patient, /consult/doctor and the dashboard.
//
// Roles: the doctor's browser is the impolite peer and makes the offers (with trickle ICE); a patient's browser is the
// polite peer (perfect negotiation). The aiortc gateway agent never offers: it answers with all its candidates and sends
// `renegotiate-request`, which the doctor answers with a fresh RTCPeerConnection (aiortc has no ICE restart).

export const PROTOCOL_VERSION = 1;

export function signalingUrl(path = "/ws/v1/signaling") {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${path}`;
}

export function fragmentParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

// Close codes after which rejoining makes no sense: normal, policy violation, replaced, denied, ended.
const FINAL_CLOSE_CODES = new Set([1000, 1008, 4000, 4003, 4004]);

export class Signaling extends EventTarget {
  // With `reconnect`, a dropped socket is reopened and the seat reclaimed with the same token within the server's
  // grace period; listeners stay attached and get `joined` with `resumed: true`.
  constructor(url = signalingUrl(), { reconnect = true } = {}) {
    super();
    this.url = url;
    this.seq = 0;
    this.ws = null;
    this.joined = null;
    this.token = null;
    this.reconnect = reconnect;
    this.closedByUs = false;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      this.seq = 0;
      ws.onerror = () => reject(new Error(`cannot reach ${this.url}`));
      ws.onclose = (ev) => {
        this.dispatchEvent(new CustomEvent("close", { detail: { code: ev.code, reason: ev.reason } }));
        if (this.reconnect && this.token && !this.closedByUs && !FINAL_CLOSE_CODES.has(ev.code)) {
          setTimeout(() => this._rejoin(1), 250);
        }
      };
      ws.onmessage = (ev) => {
        let frame;
        try { frame = JSON.parse(ev.data); } catch { return; }
        if (frame.type === "hello") resolve(frame);
        if (frame.type === "joined") this.joined = frame;
        this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
        this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
      };
    });
  }

  async _rejoin(attempt) {
    try {
      await this.connect();
      this.send("join", { token: this.token });
    } catch {
      if (attempt < 8) setTimeout(() => this._rejoin(attempt + 1), Math.min(250 * 2 ** attempt, 5000));
    }
  }

  send(type, fields = {}) {
    this.seq += 1;
    this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, seq: this.seq, type, ...fields }));
  }

  on(type, fn) {
    this.addEventListener(type, (ev) => fn(ev.detail));
  }

  // Resolves with `joined` (or with `lobby` when `waitInLobby` is false); rejects on error/deny.
  join(token, { waitInLobby = true } = {}) {
    return new Promise((resolve, reject) => {
      const done = (fn) => (ev) => { cleanup(); fn(ev.detail); };
      const onJoined = done(resolve);
      const onLobby = (ev) => { if (!waitInLobby) { cleanup(); resolve(ev.detail); } };
      const onError = done((f) => reject(new Error(`${f.code}: ${f.detail}`)));
      const onDeny = done((f) => reject(new Error(`denied: ${f.reason}`)));
      const cleanup = () => {
        this.removeEventListener("joined", onJoined);
        this.removeEventListener("lobby", onLobby);
        this.removeEventListener("error", onError);
        this.removeEventListener("deny", onDeny);
      };
      this.addEventListener("joined", onJoined);
      this.addEventListener("lobby", onLobby);
      this.addEventListener("error", onError);
      this.addEventListener("deny", onDeny);
      this.token = token;
      this.send("join", { token });
    });
  }

  close() { this.closedByUs = true; if (this.ws) this.ws.close(1000, "bye"); }
}

// One RTCPeerConnection towards one remote seat, with the perfect-negotiation pattern.
export class PeerSession extends EventTarget {
  // `stream` is sent from the start (offerer); `answerStream` is attached to the transceivers of the first remote offer
  // (answerer: no offer of its own, so no glare with an aiortc or doctor offerer).
  constructor(sig, {
    peer, polite, iceServers = [], stream = null, answerStream = null, recvVideo = true, recvAudio = true, vitals = false,
    iceTransportPolicy = "all",
  }) {
    super();
    this.sig = sig;
    this.peer = peer;
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.closed = false;
    this.answerStream = answerStream;
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) => {
      if (!this.closed) sig.send("candidate", { to: peer, candidate: candidate ? candidate.toJSON() : null });
    };
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        sig.send(pc.localDescription.type, { to: peer, sdp: pc.localDescription.sdp });
      } catch (err) {
        this.dispatchEvent(new CustomEvent("failure", { detail: err }));
      } finally {
        this.makingOffer = false;
      }
    };
    pc.ontrack = (ev) => this.dispatchEvent(new CustomEvent("track", { detail: ev }));
    pc.ondatachannel = (ev) => this._channel(ev.channel);
    pc.onconnectionstatechange = () =>
      this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
    if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
    const kinds = new Set(stream ? stream.getTracks().map((t) => t.kind) : []);
    if (recvVideo && !kinds.has("video")) pc.addTransceiver("video", { direction: "recvonly" });
    if (recvAudio && !kinds.has("audio")) pc.addTransceiver("audio", { direction: "recvonly" });
    if (vitals) this._channel(pc.createDataChannel("vitals"));
    this._onFrame = (ev) => this._signal(ev.detail);
    sig.addEventListener("frame", this._onFrame);
  }

  _channel(ch) {
    if (ch.label !== "vitals") return;
    const opened = () => this.dispatchEvent(new CustomEvent("vitals-open", { detail: ch }));
    if (ch.readyState === "open") opened(); else ch.onopen = opened;
    ch.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this.dispatchEvent(new CustomEvent("vitals", { detail: { msg, receivedAt: Date.now() } }));
    };
  }

  async _signal(frame) {
    if (this.closed || frame.from !== this.peer) return;
    const pc = this.pc;
    try {
      if (frame.type === "offer" || frame.type === "answer") {
        const collision = frame.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await pc.setRemoteDescription({ type: frame.type, sdp: frame.sdp });
        if (frame.type === "offer") {
          if (this.answerStream) {
            for (const track of this.answerStream.getTracks()) pc.addTrack(track, this.answerStream);
            this.answerStream = null;
          }
          await pc.setLocalDescription();
          this.sig.send("answer", { to: this.peer, sdp: pc.localDescription.sdp });
        }
      } else if (frame.type === "candidate") {
        try {
          await pc.addIceCandidate(frame.candidate);
        } catch (err) {
          if (!this.ignoreOffer) throw err;
        }
      } else if (frame.type === "renegotiate-request") {
        this.dispatchEvent(new CustomEvent("renegotiate", { detail: frame }));
      }
    } catch (err) {
      this.dispatchEvent(new CustomEvent("failure", { detail: err }));
    }
  }

  restartIce() { this.pc.restartIce(); }

  close() {
    this.closed = true;
    this.sig.removeEventListener("frame", this._onFrame);
    this.pc.close();
  }
}

// The path of the connected call (the selected candidate pair): {local, remote, protocol, relayProtocol}, where
// local/remote are candidate types ("host", "srflx", "relay") and relayProtocol says how we reach our TURN server
// ("udp", "tcp", "tls") when local is "relay". null before a pair is selected.
export async function selectedRoute(pc) {
  const stats = await pc.getStats();
  for (const s of stats.values()) {
    if (s.type !== "transport" || !s.selectedCandidatePairId) continue;
    const pair = stats.get(s.selectedCandidatePairId);
    const l = pair && stats.get(pair.localCandidateId);
    const r = pair && stats.get(pair.remoteCandidateId);
    if (l && r) return { local: l.candidateType, remote: r.candidateType, protocol: l.protocol, relayProtocol: l.relayProtocol || null };
  }
  return null;
}

// Only the TURN URLs of `transport` ("udp" or "tcp") in a browser-shaped iceServers list (STUN entries dropped).
export function turnOnly(iceServers, transport) {
  return iceServers
    .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => /^turns?:/.test(u) && (u.includes(`transport=${transport}`) || (transport === "tcp" && u.startsWith("turns:")))) }))
    .filter((s) => s.urls.length);
}

// Calls `fn(elapsedMs, via)` once, when the first remote video frame is decoded.
export function watchFirstFrame(pc, video, t0, fn) {
  let done = false;
  const finish = (via) => { if (!done) { done = true; fn(performance.now() - t0, via); } };
  if (video && "requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(() => finish("requestVideoFrameCallback"));
  }
  const poll = async () => {
    if (done || pc.connectionState === "closed") return;
    const stats = await pc.getStats();
    for (const s of stats.values()) {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0) { finish("getStats"); return; }
    }
    setTimeout(poll, 5);
  };
  poll();
}
