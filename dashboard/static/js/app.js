// tbib dashboard entry: session, hash router (#/patients, #/alerts, #/patient/<id>, #/consult/<id>), live feed,
// connection state. window.tbib exposes state and metrics for tests and benchmarks.
import { login, logout, me } from "./api.js";
import { initialLang, onLangChange, setLang, t, translateDom } from "./i18n.js";
import { Inbox, beep, notify } from "./inbox.js";
import { LiveFeed } from "./live.js";
import { PatientList } from "./patients.js";
import { DashboardState } from "./state.js";

const $ = (id) => document.getElementById(id);
const main = $("main");
const state = new DashboardState();
const feed = new LiveFeed();
let view = null;
let user = null;
const metrics = { navStart: performance.timeOrigin, listInteractiveMs: null, connectionStates: [] };

window.tbib = { state, feed, metrics, get view() { return view; }, get user() { return user; } };

function announce(text) { $("announce").textContent = text; }

function showConnection(detail) {
  const el = $("conn");
  const s = detail.state;
  el.dataset.state = s;
  let text = t(`conn.${s}`);
  if (s === "reconnecting" && detail.retryInMs !== undefined) text = t("conn.retry", { s: Math.ceil(detail.retryInMs / 1000) });
  el.textContent = text;
  metrics.connectionStates.push({ state: s, at: Date.now() });
}

function updateAlertCount() {
  const n = [...state.alerts.values()].filter((a) => a.state === "open").length;
  $("alert-count").textContent = n ? String(n) : "";
  $("alert-count").title = t("alerts.open_count", { n });
  document.title = n ? `(${n}) ${t("title")}` : t("title");
}

function setView(next) {
  if (view && view.destroy) view.destroy();
  view = next;
}

async function route() {
  if (!user) return;
  const [, name, id, code] = (location.hash || "#/patients").split("/");
  main.replaceChildren();
  main.className = "";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  // The patient space's "prescriptions" section registers itself with me.js (issue 18: me_rx.js).
  if (user.role === "patient") await import("./me_rx.js").catch(() => {});
  if (user.role === "patient") {
    // The patient's own space (issue 19): the only page of a patient account; #/me/<section> scrolls to a section.
    try {
      const { MePage } = await import("./me.js");
      const page = new MePage(main, user);
      setView(page);
      if (name === "me" && id) page.ready.then(() => page.focusSection(id)).catch(() => {});
    } catch (err) {
      main.textContent = t("patient.unavailable", { detail: err.message });
    }
  } else if (name === "pharmacy" || user.role === "pharmacist") {
    // Pharmacists have this page only; #/pharmacy/<id>/<code> is the URL in the ordonnance's QR code (issue 18).
    const { PharmacyView } = await import("./pharmacy.js");
    setView(new PharmacyView(main, name === "pharmacy" ? { id, code } : {}));
  } else if (name === "patient" && id) {
    // Loaded on demand: charts need uPlot from node_modules (`make setup`); the list and inbox work without it.
    try {
      const { PatientPage } = await import("./patient.js");
      setView(new PatientPage(main, state, feed, id, { onConsult: (pid) => { location.hash = `#/consult/${pid}`; } }));
    } catch (err) {
      main.textContent = t("patient.unavailable", { detail: err.message });
    }
  } else if (name === "consult" && id) {
    // Loaded on demand: it imports the signaling module's call.js, which exists only with the signaling extension.
    try {
      const { ConsultView } = await import("./consult.js");
      setView(new ConsultView(main, id, { state }));
    } catch (err) {
      main.textContent = t("consult.error", { detail: err.message });
    }
  } else if (name === "admin" && user.role === "admin") {
    // Account, care-team, gateway and device administration (issue 19 item 6).
    const { AdminView } = await import("./admin.js");
    setView(new AdminView(main));
  } else if (name === "alerts") {
    setView(new Inbox(main, state));
  } else {
    setView(new PatientList(main, state, { onOpen: (pid) => { location.hash = `#/patient/${pid}`; } }));
  }
  main.focus({ preventScroll: true });
}

let snapshotTimer = null;
// NEWS2 and connectivity are computed by the server: refresh the snapshot shortly after vitals changed.
function scheduleSnapshot(delay = 10_000) {
  if (snapshotTimer) return;
  snapshotTimer = setTimeout(async () => {
    snapshotTimer = null;
    try { await state.loadPatients(); } catch { /* the next vitals will retry */ }
  }, delay);
}

async function resync() {
  await Promise.all([state.loadPatients(), state.loadAlerts()]);
  feed.lastEventId = Math.max(feed.lastEventId, state.lastEventId);
  updateAlertCount();
}

function wireFeed() {
  feed.addEventListener("state", (ev) => {
    showConnection(ev.detail);
    if (ev.detail.state === "live" && metrics.liveAt === undefined) metrics.liveAt = performance.now();
    if (ev.detail.state === "live" && ev.detail.reconnected) {
      // Alert events were replayed from the last id; vitals are state: reload the snapshot.
      state.loadPatients().catch(() => {});
      announce(t("conn.restored"));
    }
  });
  feed.addEventListener("alert", (ev) => {
    state.applyAlert(ev.detail);
    updateAlertCount();
    const a = ev.detail.alert;
    if (ev.detail.event === "raised" || ev.detail.event === "escalated") {
      beep(a.severity);
      notify(a);
      announce(t("notify.title", { patient: a.patient_name || "" }));
    }
  });
  feed.addEventListener("vitals", (ev) => {
    const t0 = performance.now();
    state.applyVitals(ev.detail);
    const ms = performance.now() - t0;
    metrics.vitalsApplyMaxMs = Math.max(metrics.vitalsApplyMaxMs || 0, ms);
    scheduleSnapshot();
  });
  feed.addEventListener("resync", () => { resync().catch(() => {}); });
}

async function enter(u) {
  user = u;
  $("who").textContent = `${u.display_name || u.username}`;
  $("logout").hidden = false;
  $("nav").hidden = false;
  // Links with data-role are for that role only; a pharmacist sees only those (no patient list, no live feed).
  // A patient sees only their own space (#/me): no clinician links, no live feed of the care team.
  const pharmacist = u.role === "pharmacist";
  const solo = pharmacist || u.role === "patient";
  for (const a of $("nav").querySelectorAll("a")) a.hidden = a.dataset.role ? a.dataset.role !== u.role : solo;
  $("alert-count").hidden = solo;
  $("conn").hidden = solo; // no live feed for them: a "Hors ligne" badge would only mislead
  $("conn").hidden = u.role === "patient";
  const t0 = performance.now();
  if (!solo) {
    await resync();
    feed.start(state.lastEventId);
  }
  await route();
  // Time to interactive of the list: data loaded, rows in the DOM, live feed connected.
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  metrics.listInteractiveMs = performance.now();
  metrics.enterMs = performance.now() - t0;
}

function loginView(message) {
  setView(null);
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  const form = document.createElement("form");
  form.className = "login";
  form.innerHTML = `
    <h1 data-i18n="login.title"></h1>
    <p class="error" role="alert" id="login-error"></p>
    <label for="username" data-i18n="login.username"></label>
    <input id="username" name="username" autocomplete="username" required>
    <label for="password" data-i18n="login.password"></label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <div id="totp-row" hidden><label for="totp" data-i18n="login.totp"></label>
    <input id="totp" name="totp" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}"></div>
    <button type="submit" class="primary" data-i18n="login.submit"></button>`;
  main.replaceChildren(form);
  translateDom(form);
  if (message) $("login-error").textContent = message;
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const btn = form.querySelector("button");
    btn.disabled = true;
    try {
      const u = await login($("username").value.trim(), $("password").value, $("totp").value.trim() || undefined);
      if (!location.hash || location.hash === "#/login") location.hash = u.role === "patient" ? "#/me" : "#/patients";
      await enter(u);
    } catch (err) {
      if (err.detail === "totp_required") { $("totp-row").hidden = false; $("totp").focus(); }
      $("login-error").textContent = err.status === 429 ? t("login.locked") : err.status === 401 ? t("login.failed") : t("login.error", { detail: err.detail || err.message });
    } finally { btn.disabled = false; }
  };
  $("username").focus();
}

async function boot() {
  await setLang(initialLang());
  $("lang").value = initialLang();
  $("lang").onchange = (ev) => setLang(ev.target.value);
  onLangChange(() => { if (user) route(); showConnection({ state: feed.state }); updateAlertCount(); });
  $("logout").onclick = async () => { feed.stop(); await logout(); user = null; state.patients.clear(); state.alerts.clear(); loginView(); };
  window.addEventListener("hashchange", route);
  window.addEventListener("tbib:unauthenticated", () => { if (user) { feed.stop(); user = null; loginView(t("login.expired")); } });
  wireFeed();
  showConnection({ state: "stopped" });
  const u = await me();
  if (u) await enter(u); else loginView();
}

boot().catch((err) => { main.textContent = `tbib: ${err.message}`; });
