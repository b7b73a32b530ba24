// Invitation form of the consultation (issue 19 item 3): role (nurse, interpreter, family) + display name ->
// POST .../consultations/{id}/invites -> the one-time link (shown once: the server keeps only its hash) with a copy
// button. The guest opens it, waits in the waiting room, and the doctor admits or refuses them there. Below, the
// consultation's invitations with their status (GET .../invites); an unused one can be withdrawn (DELETE).
import { del, get, post } from "./api.js";
import { t } from "./i18n.js";

const ROLES = ["nurse", "interpreter", "family"];

export class InviteForm {
  constructor({ patientId, consultationId = null }) {
    this.patientId = patientId;
    this.consultationId = consultationId;
    this.created = [];
    this.list = Object.assign(document.createElement("ul"), { className: "invites", id: "invite-list" });
    const el = Object.assign(document.createElement("section"), { className: "invite" });
    el.setAttribute("aria-labelledby", "invite-h");
    const h = Object.assign(document.createElement("h2"), { id: "invite-h", textContent: t("consult.invite") });
    const form = Object.assign(document.createElement("form"), { id: "invite-form" });
    this.role = Object.assign(document.createElement("select"), { id: "invite-role", name: "role" });
    this.role.append(...ROLES.map((r) => Object.assign(document.createElement("option"), { value: r, textContent: t(`role.${r}`) })));
    this.name = Object.assign(document.createElement("input"), { id: "invite-name", name: "name", required: true, maxLength: 80, autocomplete: "off" });
    const submit = Object.assign(document.createElement("button"), { type: "submit", id: "invite-create", textContent: t("consult.invite.create") });
    form.append(this._label("invite-role", t("consult.invite.role")), this.role, this._label("invite-name", t("consult.invite.name")), this.name, submit);
    form.onsubmit = (ev) => { ev.preventDefault(); this.create().catch(() => {}); };
    this.out = Object.assign(document.createElement("div"), { className: "invite-out", hidden: true });
    this.outText = document.createElement("p");
    this.link = Object.assign(document.createElement("input"), { id: "invite-link", readOnly: true });
    this.link.setAttribute("aria-label", t("consult.invite.link_label"));
    this.copyBtn = Object.assign(document.createElement("button"), { type: "button", id: "invite-copy", textContent: t("consult.invite.copy") });
    this.copyBtn.onclick = () => this.copy();
    this.msg = Object.assign(document.createElement("span"), { className: "muted" });
    this.msg.setAttribute("role", "status");
    this.out.append(this.outText, this.link, " ", this.copyBtn);
    el.append(h, form, this.out, this.msg, this.list);
    this.el = el;
  }

  _label(id, text) { return Object.assign(document.createElement("label"), { htmlFor: id, textContent: text }); }

  async create() {
    this.msg.textContent = "";
    const name = this.name.value.trim();
    if (!name || !this.consultationId) return null;
    try {
      const inv = await post(`/patients/${this.patientId}/consultations/${this.consultationId}/invites`, { role: this.role.value, name });
      this.created.push(inv);
      this.outText.textContent = t("consult.invite.link", { who: `${inv.name} (${t(`role.${inv.role}`)})` });
      this.link.value = `${location.origin}${inv.link_path}`;
      this.out.hidden = false;
      this.name.value = "";
      await this.refresh();
      return inv;
    } catch (err) {
      this.msg.textContent = t("consult.invite.failed", { detail: err.detail || err.message });
      throw err;
    }
  }

  get base() { return `/patients/${this.patientId}/consultations/${this.consultationId}/invites`; }

  async setConsultation(id) {
    this.consultationId = id;
    await this.refresh().catch(() => {});
  }

  // The invitations of this consultation with their status; "Withdraw" on the unused ones.
  async refresh() {
    if (!this.consultationId) return;
    const invites = await get(this.base);
    this.list.replaceChildren(...invites.map((inv) => {
      const li = Object.assign(document.createElement("li"), { textContent: `${inv.name} (${t(`role.${inv.role}`)}) — ${t(`consult.invite.status.${inv.status}`)} ` });
      li.dataset.invite = inv.id;
      li.dataset.status = inv.status;
      if (inv.status === "pending") {
        const b = Object.assign(document.createElement("button"), { type: "button", textContent: t("consult.invite.withdraw") });
        b.setAttribute("aria-label", `${t("consult.invite.withdraw")} ${inv.name}`);
        b.onclick = () => this.withdraw(inv.id);
        li.append(b);
      }
      return li;
    }));
  }

  async withdraw(id) {
    try {
      await del(`${this.base}/${id}`);
      if (this.created.some((i) => i.id === id)) { this.out.hidden = true; this.link.value = ""; }
    } catch (err) {
      this.msg.textContent = t("consult.invite.failed", { detail: err.detail || err.message });
    }
    await this.refresh().catch(() => {});
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.link.value);
    } catch {
      this.link.select(); // no clipboard permission: leave the link selected for Ctrl+C
      document.execCommand("copy");
    }
    this.msg.textContent = t("consult.invite.copied");
  }
}
