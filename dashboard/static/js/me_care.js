// Sections of the patient space about care and rights: consultations (join the call in this browser, camera +
// microphone, the existing join-token + signaling flow), consents (view, grant, withdraw per purpose, with what each
// means), the access log (law 09-08 right of access: who saw my record), and the prescriptions slot.
import { get, post } from "./api.js";
import { fmtDateTime, t } from "./i18n.js";

const PURPOSES = ["remote_monitoring", "teleconsultation", "data_sharing"];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function button(text, cls, onclick, attrs = {}) {
  const b = el("button", { type: "button", class: cls, ...attrs, text });
  b.onclick = onclick;
  return b;
}

function replaceBody(root, ...children) { root.replaceChildren(root.querySelector("h2"), ...children); }

// --- consultations and the call --------------------------------------------------------------------------------------

export class ConsultSection {
  constructor(root, ctx) { this.root = root; this.ctx = ctx; this.call = null; }

  async load() { this.render(this.ctx.space); }

  update(space) { if (!this.call) this.render(space); }

  destroy() { if (this.call) this.call.leave(); }

  render(space) {
    const ul = el("ul", { class: "me-consults" });
    for (const c of space.consultations) {
      const li = el("li", { "data-consultation": c.id });
      const when = c.scheduled_for || c.created_at;
      li.append(el("p", {}, el("strong", { text: fmtDateTime(when, { dateStyle: "full", timeStyle: "short" }) })));
      li.append(el("p", { text: t("me.consults.with", { doctor: c.doctor_name || "—" }) }));
      if (c.reason) li.append(el("p", { class: "muted", dir: "auto", text: c.reason }));
      if (c.ended_at) li.append(el("p", { class: "muted", text: t("me.consults.ended") }));
      else li.append(button(t("me.consults.join"), "primary big join", () => this.join(c, li)));
      ul.append(li);
    }
    if (!space.consultations.length) ul.append(el("li", { text: t("me.consults.none") }));
    replaceBody(this.root, ul);
  }

  async join(c, li) {
    const status = el("p", { class: "me-call-status", role: "status", "aria-live": "polite", text: t("me.call.preparing") });
    li.append(status);
    try {
      const tok = await post(`/patients/${this.ctx.pid}/consultations/${c.id}/join-token`, { role: "patient" });
      const { CallView } = await import("./me_call.js");
      this.call = new CallView(this.root, tok, status, () => { this.call = null; this.render(this.ctx.space); });
      await this.call.start();
    } catch (err) {
      status.className = "error";
      status.textContent = err.status === 403 ? t("me.call.refused") : t("me.call.failed", { detail: err.message });
    }
  }
}

// --- consents -------------------------------------------------------------------------------------------------------

export class ConsentSection {
  constructor(root, ctx) { this.root = root; this.ctx = ctx; }

  async load() { this.render(this.ctx.space); }

  update(space) { this.render(space); }

  render(space) {
    const list = el("div", { class: "me-consents" });
    list.append(el("p", { class: "muted", text: t("me.consents.intro") }));
    for (const purpose of PURPOSES) {
      const c = space.consents.find((x) => x.purpose === purpose);
      const card = el("article", { class: "me-consent", "data-purpose": purpose, "aria-labelledby": `c-${purpose}` });
      card.append(el("h3", { id: `c-${purpose}`, text: t(`me.consent.${purpose}`) }));
      const state = !c.decided ? "none" : c.granted ? "granted" : "withdrawn";
      card.append(el("p", { class: `me-state me-state-${state}`, "data-state": state, text: t(`me.consents.state.${state}`) }));
      if (c.decided) {
        const who = c.basis === "legacy" ? t("me.consents.legacy") : c.recorded_by_me ? t("me.consents.by_me") : t("me.consents.by_team");
        card.append(el("p", { class: "muted", text: `${fmtDateTime(c.recorded_at, { dateStyle: "medium" })} · ${who}` }));
      }
      card.append(el("p", {}, el("strong", { text: t("me.consents.allows") }), " ", t(`me.consent.${purpose}.allows`)));
      card.append(el("p", {}, el("strong", { text: t("me.consents.without") }), " ", t(`me.consent.${purpose}.without`)));
      const actions = el("div", { class: "actions" });
      const grant = c.granted && c.basis !== "legacy" ? null
        : button(c.basis === "legacy" && c.granted ? t("me.consents.confirm") : t("me.consents.grant"), "primary big",
          () => this.decide(purpose, true), { "data-action": "grant" });
      const withdraw = !c.granted ? null
        : button(t("me.consents.withdraw"), "big", () => this.ask(card, purpose), { "data-action": "withdraw" });
      actions.append(...[grant, withdraw].filter(Boolean));
      card.append(actions);
      list.append(card);
    }
    replaceBody(this.root, list);
  }

  // Withdrawing stops care: one more, explicit step, saying what will stop.
  ask(card, purpose) {
    const box = el("div", { class: "me-confirm", role: "alertdialog", "aria-labelledby": `q-${purpose}` });
    box.append(el("p", { id: `q-${purpose}`, text: t("me.consents.sure", { what: t(`me.consent.${purpose}.without`) }) }));
    const yes = button(t("me.consents.yes_withdraw"), "danger big", () => this.decide(purpose, false), { "data-action": "confirm-withdraw" });
    const no = button(t("cancel"), "big", () => this.render(this.ctx.space));
    box.append(yes, no);
    card.querySelector(".actions").replaceWith(box);
    no.focus();
  }

  async decide(purpose, granted) {
    try {
      await post(`/patients/${this.ctx.pid}/consents`, { purpose, granted });
      await this.ctx.reload();
      const h = this.root.querySelector(`[data-purpose="${purpose}"] .me-state`);
      if (h) { h.tabIndex = -1; h.focus(); }
      document.getElementById("announce").textContent = t(granted ? "me.consents.done_grant" : "me.consents.done_withdraw");
    } catch (err) {
      this.root.append(el("p", { class: "error", role: "alert", text: t("me.failed", { detail: err.message }) }));
    }
  }
}

// --- access log -------------------------------------------------------------------------------------------------------

// What an access was, in plain words, from the route it used.
export function plainAccess(e) {
  const r = e.resource || "";
  const topic = /consents/.test(r) ? "consents" : /consultation/.test(r) ? "consultations" : /access-log/.test(r) ? "access"
    : /alerts|alert-profile/.test(r) ? "alerts" : /history|summary|readings|Observation|everything/.test(r) ? "readings"
      : /prescription/.test(r) ? "prescriptions" : /ws\/v1|subscribe/.test(r) || e.action === "subscribe" ? "live" : "record";
  const verb = e.action === "write" ? "write" : e.action === "export" ? "export" : "read";
  return t(`me.access.${verb}`, { what: t(`me.access.topic.${topic}`) });
}

export class AccessSection {
  constructor(root, ctx) { this.root = root; this.ctx = ctx; this.mine = false; }

  async load() {
    const rows = await get(`/patients/${this.ctx.pid}/access-log?limit=50${this.mine ? "" : "&others_only=true"}`);
    const table = el("table", { class: "me-access" });
    table.createCaption().textContent = t("me.access.caption");
    const head = table.createTHead().insertRow();
    for (const k of ["when", "who", "what"]) head.append(el("th", { scope: "col", text: t(`me.access.col.${k}`) }));
    const body = table.createTBody();
    for (const e of rows) {
      const tr = body.insertRow();
      tr.dataset.id = String(e.id);
      tr.insertCell().textContent = fmtDateTime(e.occurred_at, { dateStyle: "short", timeStyle: "short" });
      const who = e.actor_username === this.ctx.user.username ? t("me.access.you")
        : `${e.actor_display_name || e.actor_username || "—"} (${t(`me.role.${e.actor_role || "system"}`)})`;
      const cell = tr.insertCell();
      cell.dir = "auto";
      cell.textContent = who;
      // a refused attempt is said in the same cell (three columns fit a phone)
      tr.insertCell().textContent = plainAccess(e) + (e.outcome === "allowed" ? "" : ` — ${t("me.access.denied")}`);
    }
    const toggle = el("label", { class: "me-toggle" });
    const box = el("input", { type: "checkbox", id: "me-access-mine" });
    box.checked = this.mine;
    box.onchange = () => { this.mine = box.checked; this.load().catch(() => {}); };
    toggle.append(box, " ", t("me.access.show_mine"));
    const intro = el("p", { class: "muted", text: t("me.access.intro") });
    replaceBody(this.root, intro, toggle, rows.length ? table : el("p", { text: t("me.access.none") }));
  }
}

// --- prescriptions: the extension point -------------------------------------------------------------------------------

// The prescriptions feature registers a section with me.js's registerSection({ id: "prescriptions", render }) in
// me_rx.js, loaded here when the server lists "prescriptions" in /space.sections (its routes exist). Until then the
// slot says so plainly.
export class PrescriptionSlot {
  constructor(root, ctx, extra) { this.root = root; this.ctx = ctx; this.extra = extra; }

  async load() {
    const offered = this.ctx.space.sections.includes("prescriptions");
    if (offered && !this.extra.some((s) => s.id === "prescriptions")) {
      try { await import("./me_rx.js"); } catch { /* the prescriptions module is not installed: the slot stays */ }
    }
    const mine = this.extra.find((s) => s.id === "prescriptions");
    if (mine && this.ctx.space.sections.includes("prescriptions")) {
      const body = el("div", { class: "me-rx" });
      replaceBody(this.root, body);
      await mine.render(body, this.ctx);
      return;
    }
    replaceBody(this.root, el("p", { class: "muted", "data-slot": "prescriptions", text: t("me.rx.soon") }));
  }
}
