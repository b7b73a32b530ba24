// Minimal doctor page: join, admit from the lobby, call (offer + trickle), show video and the vitals channel.
// Fragment parameters: token (required), autoadmit=1, autocall=1, media=fake|none, relay=1 (TURN relay candidates
// only), turn=udp|tcp (only that TURN URL), panel=1 (the dashboard's vitals panel, when the server serves /app/).
// Exposes window.tbib for tests.
import { PeerSession, Signaling, fragmentParams, selectedRoute, turnOnly, watchFirstFrame } from "./call.js";

const params = fragmentParams();
const $ = (id) => document.getElementById(id);
const state = { status: "connecting", joined: null, peers: {}, waiting: [], errors: [], vitals: [], calls: [] };
let sig = null;
let session = null;
let localStream = null;
let panel = null;

// The dashboard's vitals panel (served under /app/ by the full server or `standalone --dashboard-assets`).
async function mountPanel() {
  const [{ VitalsPanel }, i18n] = await Promise.all([import("/app/js/vitals_panel.js"), import("/app/js/i18n.js")]);
  await i18n.setLang("en");
  panel = new VitalsPanel({ patientId: "" });
  $("panel").append(panel.root);
}

function setStatus(s) { state.status = s; $("status").textContent = s; }

function renderLobby(waiting) {
  state.waiting = waiting;
  const ul = $("waiting");
  ul.replaceChildren();
  for (const w of waiting) {
    const li = document.createElement("li");
    const admit = document.createElement("button");
    admit.textContent = `Admit ${w.role}`;
    admit.onclick = () => sig.send("admit", { seat: w.seat });
    const deny = document.createElement("button");
    deny.textContent = "Deny";
    deny.onclick = () => sig.send("deny", { seat: w.seat, reason: "declined by the doctor" });
    li.append(`${w.role} ${w.subject} `, admit, " ", deny);
    ul.append(li);
    if (params.get("autoadmit") === "1") sig.send("admit", { seat: w.seat });
  }
}

function startCall(peer = "patient") {
  if (session) session.close();
  const t0 = performance.now();
  // firstVitals: the first reading *taken* after the vitals channel opened here (earlier ones were queued by the agent).
  const metrics = {
    peer, t0, firstFrameMs: null, firstFrameVia: null, connectedMs: null, vitalsOpenAt: null, firstVitals: null,
    firstVitalsAny: null, route: null,
  };
  state.calls.push(metrics);
  const peerInfo = state.peers[peer] || {};
  const turn = params.get("turn");
  session = new PeerSession(sig, {
    peer, polite: false, stream: localStream, vitals: true,
    iceServers: turn ? turnOnly(state.joined.iceServers, turn) : state.joined.iceServers,
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
  });
  const pc = session.pc;
  session.addEventListener("track", (ev) => {
    const { track, streams } = ev.detail;
    if (track.kind !== "video") return;
    const video = $("remote");
    video.srcObject = streams[0] || new MediaStream([track]);
    video.play().catch(() => {});
    watchFirstFrame(pc, video, t0, (ms, via) => {
      if (metrics.firstFrameMs === null) { metrics.firstFrameMs = ms; metrics.firstFrameVia = via; }
    });
  });
  session.addEventListener("state", (ev) => {
    if (ev.detail === "connected" && metrics.connectedMs === null) {
      metrics.connectedMs = performance.now() - t0;
      const route = (tries) => selectedRoute(pc).then((r) => {
        if (r) metrics.route = r; else if (tries > 0) setTimeout(() => route(tries - 1), 50);
      }).catch(() => {});
      route(40);
    }
    setStatus(`call ${ev.detail}`);
  });
  session.addEventListener("vitals", (ev) => {
    const { msg, receivedAt } = ev.detail;
    const entry = { ...msg, receivedAt, latencyMs: receivedAt - Date.parse(msg.measured_at) };
    state.vitals.push(entry);
    if (metrics.firstVitalsAny === null) metrics.firstVitalsAny = { ...entry, sinceClickMs: performance.now() - t0 };
    const takenAfterOpen = metrics.vitalsOpenAt !== null && Date.parse(msg.measured_at) >= metrics.vitalsOpenAt;
    if (metrics.firstVitals === null && takenAfterOpen) metrics.firstVitals = entry;
    if (panel) panel.push(msg, "call");
    const li = document.createElement("li");
    li.textContent = `${msg.metric} ${msg.value} ${msg.unit} (${msg.measured_at})`;
    $("vitals").prepend(li);
    while ($("vitals").childElementCount > 50) $("vitals").lastElementChild.remove();
  });
  session.addEventListener("vitals-open", () => { metrics.vitalsOpenAt = Date.now(); });
  session.addEventListener("renegotiate", () => {
    // aiortc agents cannot restart ICE: a fresh connection; browsers: ICE restart.
    if (peerInfo.role === "agent" || (state.peers[peer] || {}).role === "agent") startCall(peer);
    else session.restartIce();
  });
  session.addEventListener("failure", (ev) => state.errors.push(String(ev.detail)));
  $("hangup").disabled = false;
  return metrics;
}

function hangup() {
  if (session) session.close();
  session = null;
  $("hangup").disabled = true;
}

async function main() {
  const token = params.get("token");
  if (!token) { setStatus("missing #token= in the address"); return; }
  if (params.get("panel") === "1") await mountPanel().catch((err) => state.errors.push(`panel: ${err}`));
  if (params.get("media") !== "none") {
    try {
      localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
      $("local").srcObject = localStream;
    } catch (err) { state.errors.push(`getUserMedia: ${err}`); }
  }
  sig = new Signaling();
  await sig.connect();
  sig.on("lobby", (f) => renderLobby(f.waiting));
  sig.on("peer-joined", (f) => {
    state.peers[f.seat] = { role: f.role, connected: true };
    $("call").disabled = false;
    if (params.get("autocall") === "1") startCall(f.seat);
  });
  sig.on("peer-left", (f) => {
    if (state.peers[f.seat]) state.peers[f.seat].connected = false;
    if (!f.temporary) { delete state.peers[f.seat]; hangup(); }
  });
  sig.on("error", (f) => state.errors.push(`${f.code}: ${f.detail}`));
  sig.on("joined", (f) => {
    if (!f.resumed || !state.joined) return;
    state.resumed = (state.resumed || 0) + 1;
    setStatus("back in the room");
    // Our socket dropped: the agent cannot restart ICE, so call again; a browser patient gets an ICE restart.
    if (session && !session.closed) {
      if ((state.peers[session.peer] || {}).role === "agent") startCall(session.peer); else session.restartIce();
    }
  });
  sig.on("close", () => setStatus("signaling closed"));
  state.joined = await sig.join(token);
  for (const p of state.joined.peers) state.peers[p.seat] = { role: p.role, connected: p.connected };
  $("call").disabled = Object.keys(state.peers).length === 0;
  $("call").onclick = () => startCall();
  $("hangup").onclick = hangup;
  setStatus("in the room");
}

window.tbib = {
  state, startCall, hangup, get signaling() { return sig; }, get session() { return session; }, get panel() { return panel; },
};
main().catch((err) => { state.errors.push(String(err)); setStatus(`error: ${err.message}`); });
