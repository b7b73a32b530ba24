// Guest page (invitation link /consult/guest#invite=<secret>): use the link once for a join token (kept in
// sessionStorage so a reload of the page does not need the link again), open camera + microphone, wait in the lobby
// until the doctor admits us, then join the mesh: answer the offers of seats before ours, offer to browser seats after
// ours (never to the gateway agent: it answers the doctor only). Exposes window.tbib for tests.
import { PeerSession, Signaling, fragmentParams } from "./call.js";

const SEAT_ORDER = ["doctor", "nurse", "interpreter", "family", "patient"];
const fr = document.documentElement.lang !== "en";
const T = fr
  ? { waiting: "en attente : le médecin va vous faire entrer…", joined: "dans la consultation", used: "lien déjà utilisé ou expiré : demandez-en un nouveau au médecin", denied: "le médecin n'a pas pu vous recevoir", ended: "consultation terminée", left: "vous avez quitté" }
  : { waiting: "waiting: the doctor will let you in…", joined: "in the consultation", used: "link already used or expired: ask the doctor for a new one", denied: "the doctor could not take you in", ended: "consultation ended", left: "you left" };
const $ = (id) => document.getElementById(id);
const state = { status: "connecting", joined: null, errors: [], sessions: {}, remoteTracks: 0 };
let sig = null;
let stream = null;

function setStatus(s) { state.status = s; $("status").textContent = s; }

function open(peer, polite) {
  if (state.sessions[peer]) state.sessions[peer].close();
  const s = new PeerSession(sig, {
    peer, polite, iceServers: state.joined.iceServers,
    stream: polite ? null : stream, answerStream: polite ? stream : null, recvVideo: !polite, recvAudio: !polite,
  });
  state.sessions[peer] = s;
  s.addEventListener("track", (ev) => {
    if (ev.detail.track.kind !== "video") return;
    state.remoteTracks += 1;
    let v = document.getElementById(`remote-${peer}`);
    if (!v) {
      v = Object.assign(document.createElement("video"), { id: `remote-${peer}`, autoplay: true, playsInline: true, muted: true });
      $("remotes").append(v);
    }
    v.srcObject = ev.detail.streams[0] || new MediaStream([ev.detail.track]);
  });
  s.addEventListener("failure", (ev) => state.errors.push(String(ev.detail)));
  return s;
}

function offerTo(peer, role) {
  const mine = SEAT_ORDER.indexOf(state.joined.seat);
  if (role !== "agent" && SEAT_ORDER.indexOf(peer) > mine) open(peer, false);
}

async function joinToken(secret) {
  const kept = sessionStorage.getItem(`tbib-invite-${secret.slice(0, 12)}`);
  if (kept) return JSON.parse(kept);
  const r = await fetch("/api/v1/invites/redeem", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ secret }) });
  if (!r.ok) throw new Error(T.used);
  const body = await r.json();
  sessionStorage.setItem(`tbib-invite-${secret.slice(0, 12)}`, JSON.stringify(body));
  return body;
}

async function main() {
  const secret = fragmentParams().get("invite");
  if (!secret) { setStatus(T.used); return; }
  let tok;
  try { tok = await joinToken(secret); } catch (err) { setStatus(err.message); return; }
  $("title").textContent += ` — ${tok.name}`;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    $("local").srcObject = stream;
  } catch (err) { state.errors.push(`camera/microphone: ${err}`); }
  sig = new Signaling();
  await sig.connect();
  sig.on("lobby", () => setStatus(T.waiting));
  sig.on("deny", () => setStatus(T.denied));
  sig.on("bye", () => { setStatus(T.ended); for (const s of Object.values(state.sessions)) s.close(); });
  sig.on("error", (f) => state.errors.push(`${f.code}: ${f.detail}`));
  sig.on("offer", (f) => { const s = state.sessions[f.from]; if (!s || s.closed) open(f.from, true); });
  sig.on("peer-joined", (f) => { if (state.joined && f.resumed === false) offerTo(f.seat, f.role); });
  sig.on("peer-left", (f) => { if (!f.temporary && state.sessions[f.seat]) { state.sessions[f.seat].close(); delete state.sessions[f.seat]; } });
  try {
    state.joined = await sig.join(tok.token);
  } catch (err) {
    if (state.status === T.denied) return; // refused from the waiting room: keep saying so, not "error: denied"
    throw err;
  }
  setStatus(T.joined);
  for (const p of state.joined.peers || []) offerTo(p.seat, p.role);
  $("leave").onclick = () => { sig.send("bye", { reason: "guest left" }); sig.close(); setStatus(T.left); };
}

window.tbib = { state };
main().catch((err) => { state.errors.push(String(err)); setStatus(`error: ${err.message}`); });
