// Patient page (phone browser): open camera + microphone, join with the link's token, wait to be admitted, then
// answer the doctor's offers (polite peer of the perfect-negotiation pattern). Exposes window.tbib for tests.
import { PeerSession, Signaling, fragmentParams } from "./call.js";

const params = fragmentParams();
const $ = (id) => document.getElementById(id);
const state = { status: "connecting", joined: null, errors: [], remoteTracks: 0, connection: null };
let sig = null;
let session = null;
let stream = null;

function setStatus(s) { state.status = s; $("status").textContent = s; }

// Created on the doctor's first offer; the same "frame" event then delivers that offer to the session.
function openSession(peer) {
  if (session) session.close();
  session = new PeerSession(sig, {
    peer, polite: true, iceServers: state.joined.iceServers, answerStream: stream, recvVideo: false, recvAudio: false,
  });
  session.addEventListener("track", (ev) => {
    state.remoteTracks += 1;
    $("remote").srcObject = ev.detail.streams[0] || new MediaStream([ev.detail.track]);
  });
  session.addEventListener("state", (ev) => { state.connection = ev.detail; setStatus(`call ${ev.detail}`); });
  session.addEventListener("failure", (ev) => state.errors.push(String(ev.detail)));
}

async function main() {
  const token = params.get("token");
  if (!token) { setStatus("this link is incomplete: ask your doctor for a new one"); return; }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: true });
    $("local").srcObject = stream;
  } catch (err) {
    state.errors.push(`camera/microphone: ${err}`);
  }
  sig = new Signaling();
  await sig.connect();
  sig.on("lobby", () => setStatus("waiting for your doctor to let you in…"));
  sig.on("deny", (f) => setStatus(`the doctor could not take the call: ${f.reason}`));
  sig.on("bye", (f) => { setStatus(`call ended: ${f.reason}`); if (session) session.close(); });
  sig.on("error", (f) => state.errors.push(`${f.code}: ${f.detail}`));
  sig.on("offer", (f) => { if (!session || session.closed || session.peer !== f.from) openSession(f.from); });
  sig.on("joined", (f) => {
    // Our socket dropped and we got our seat back: ask the doctor for a new negotiation (ICE restart).
    if (f.resumed && state.joined) sig.send("renegotiate-request", { to: "doctor", reason: "patient reconnected" });
  });
  sig.on("peer-left", (f) => { if (!f.temporary && session && session.peer === f.seat) session.close(); });
  state.joined = await sig.join(token);
  setStatus("connected: the doctor will call you");
  $("leave").onclick = () => {
    sig.send("bye", { reason: "patient left" });
    if (session) session.close();
    setStatus("you left");
  };
}

window.tbib = { state, get session() { return session; } };
main().catch((err) => { state.errors.push(String(err)); setStatus(`error: ${err.message}`); });
