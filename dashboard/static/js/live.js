// The dashboard's live feed (/ws/v1/patients, protocol in teleconsult/api/live.py): alert events with replay by last
// event id, coalesced vitals, heartbeats. Reconnects by itself with backoff; the state it reports is honest:
// "connecting" (first attempt), "live" (hello received and heartbeats arriving), "reconnecting" (lost, retrying),
// "offline" (the browser says it has no network), "stopped".
import { refresh } from "./api.js";

const HEARTBEAT_TIMEOUT_MS = 40_000; // the server pings every 15 s

export class LiveFeed extends EventTarget {
  constructor({ path = "/ws/v1/patients" } = {}) {
    super();
    this.path = path;
    this.ws = null;
    this.state = "stopped";
    this.lastEventId = 0;
    this.attempt = 0;
    this.stats = { connects: 0, frames: 0, replayed: 0, lastFrameAt: 0 };
    this._timer = null;
    this._watchdog = null;
    this._stopped = true;
    window.addEventListener("online", () => { if (!this._stopped) this._reconnectSoon(0); });
    window.addEventListener("offline", () => { if (!this._stopped) this._setState("offline"); });
  }

  start(lastEventId) {
    if (typeof lastEventId === "number") this.lastEventId = Math.max(this.lastEventId, lastEventId);
    this._stopped = false;
    this._open();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._watchdog);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this._setState("stopped");
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.force) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt, ...detail } }));
  }

  _open() {
    clearTimeout(this._timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${this.path}?last_event_id=${this.lastEventId}`;
    this._setState(this.stats.connects === 0 ? "connecting" : "reconnecting");
    let ws;
    try { ws = new WebSocket(url); } catch { this._reconnectSoon(); return; }
    this.ws = ws;
    let helloSeen = false;
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this.stats.frames += 1;
      this.stats.lastFrameAt = Date.now();
      this._armWatchdog();
      if (frame.type === "hello") {
        helloSeen = true;
        this.attempt = 0;
        this.stats.connects += 1;
        this._setState("live", { force: true, reconnected: this.stats.connects > 1 });
      } else if (frame.type === "alert") {
        if (frame.id <= this.lastEventId) return; // already seen (replay overlap)
        this.lastEventId = frame.id;
        this.dispatchEvent(new CustomEvent("alert", { detail: frame }));
      } else if (frame.type === "vitals") {
        this.dispatchEvent(new CustomEvent("vitals", { detail: frame.items }));
      } else if (frame.type === "call") {
        this.dispatchEvent(new CustomEvent("call", { detail: frame })); // gateway_call.js
      } else if (frame.type === "resync") {
        this.dispatchEvent(new CustomEvent("resync", { detail: frame.reason }));
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this._watchdog);
      if (this._stopped) return;
      // 1008: the session expired or was revoked: renew it before retrying.
      if (ev.code === 1008 || !helloSeen) refresh();
      this._reconnectSoon();
    };
  }

  _armWatchdog() {
    clearTimeout(this._watchdog);
    this._watchdog = setTimeout(() => {
      // No frame (not even a ping) for too long: the connection is dead even if the socket does not know it yet.
      if (this.ws) { const ws = this.ws; this.ws = null; ws.close(4000, "heartbeat timeout"); }
      this._reconnectSoon(0);
    }, HEARTBEAT_TIMEOUT_MS);
  }

  _reconnectSoon(delayMs) {
    clearTimeout(this._timer);
    if (this._stopped) return;
    this.attempt += 1;
    if (!navigator.onLine) { this._setState("offline"); return; }
    const base = delayMs ?? Math.min(15_000, 500 * 2 ** Math.min(this.attempt - 1, 5));
    const wait = delayMs === 0 ? 0 : base / 2 + Math.random() * base / 2; // jitter
    this._setState("reconnecting", { force: true, retryInMs: Math.round(wait) });
    this._timer = setTimeout(() => this._open(), wait);
  }

  // Test hook: drop the socket as a network cut would.
  cut() { if (this.ws) this.ws.close(4001, "cut"); }
}
