// Administration page (issue 19 item 6), #/admin, admins only: accounts (list, create doctor / nurse / patient linked to
// a new patient record / pharmacist linked to a pharmacy, disable / enable), care-team assignments, gateway enrolment
// with the one-time provisioning code and its QR (server-rendered SVG), the gateway's devices (enrol / unenrol), and
// revocation with an inline confirmation. French and English strings are here (the page is not in the patient space).
// API: docs/security.md, "Enrolment and care-team admin from the UI".
import { get, post } from "./api.js";
import { currentLang, fmtDateTime } from "./i18n.js";

const STRINGS = {
  fr: {
    title: "Administration", users: "Comptes", create_user: "Créer un compte", username: "Identifiant",
    display_name: "Nom affiché", password: "Mot de passe (10 caractères au moins)", role: "Rôle",
    "role.doctor": "Médecin", "role.nurse": "Infirmier·e", "role.patient": "Patient", "role.pharmacist": "Pharmacien·ne",
    "role.admin": "Administrateur", patient_name: "Nom du patient (nouveau dossier)", pharmacy: "Pharmacie",
    no_pharmacy: "— aucune —", create: "Créer", created: "Compte {u} créé.", status: "État", active: "actif",
    disabled: "désactivé", disable: "Désactiver", enable: "Réactiver", actions: "Actions",
    care_team: "Équipes de soins", clinician: "Soignant", patient: "Patient", assign: "Affecter",
    assigned: "{c} affecté·e à {p}.", since: "Depuis", end: "Retirer", ended: "Affectation retirée.",
    gateways: "Passerelles", enrol_gateway: "Enrôler une passerelle", gateway_id: "Identifiant de la passerelle",
    gateway_hint: "Lettres, chiffres, « - », « _ » ou « . », par ex. gw-0042", issue_code: "Générer le code",
    code_title: "Code d’installation à usage unique", code_hint:
      "Saisissez ce code sur la passerelle (ou scannez le QR). Il n’est affiché qu’une fois et expire à {t}.",
    credential: "Identifiant MQTT", "cred.none": "en attente d’installation", "cred.active": "active",
    "cred.revoked": "révoquée", devices: "Appareils", show_devices: "Appareils de {g}", revoke: "Révoquer",
    revoke_confirm: "Révoquer {g} ? Sa connexion MQTT sera coupée immédiatement.", confirm: "Confirmer la révocation",
    cancel: "Annuler", revoked: "Passerelle {g} révoquée.", address: "Adresse Bluetooth", model: "Modèle",
    kind: "Type", enrol_device: "Enrôler l’appareil", unenrol: "Désenrôler", enrolled: "enrôlé",
    unenrolled: "désenrôlé", none: "Aucun.", error: "Erreur : {d}", loading: "Chargement…", close: "Fermer",
  },
  en: {
    title: "Administration", users: "Accounts", create_user: "Create an account", username: "Username",
    display_name: "Display name", password: "Password (at least 10 characters)", role: "Role",
    "role.doctor": "Doctor", "role.nurse": "Nurse", "role.patient": "Patient", "role.pharmacist": "Pharmacist",
    "role.admin": "Administrator", patient_name: "Patient name (new record)", pharmacy: "Pharmacy",
    no_pharmacy: "— none —", create: "Create", created: "Account {u} created.", status: "Status", active: "active",
    disabled: "disabled", disable: "Disable", enable: "Enable", actions: "Actions",
    care_team: "Care teams", clinician: "Clinician", patient: "Patient", assign: "Assign",
    assigned: "{c} assigned to {p}.", since: "Since", end: "Remove", ended: "Assignment removed.",
    gateways: "Gateways", enrol_gateway: "Enrol a gateway", gateway_id: "Gateway id",
    gateway_hint: "Letters, digits, “-”, “_” or “.”, e.g. gw-0042", issue_code: "Generate the code",
    code_title: "One-time provisioning code", code_hint:
      "Enter this code on the gateway (or scan the QR). It is shown only once and expires at {t}.",
    credential: "MQTT credential", "cred.none": "waiting for installation", "cred.active": "active",
    "cred.revoked": "revoked", devices: "Devices", show_devices: "Devices of {g}", revoke: "Revoke",
    revoke_confirm: "Revoke {g}? Its MQTT connection is cut at once.", confirm: "Confirm revocation",
    cancel: "Cancel", revoked: "Gateway {g} revoked.", address: "Bluetooth address", model: "Model",
    kind: "Kind", enrol_device: "Enrol the device", unenrol: "Unenrol", enrolled: "enrolled",
    unenrolled: "unenrolled", none: "None.", error: "Error: {d}", loading: "Loading…", close: "Close",
  },
};

export function tr(key, vars = {}) {
  const table = STRINGS[currentLang()] || STRINGS.fr;
  const s = table[key] ?? STRINGS.fr[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? `{${k}}` : String(vars[k])));
}

let seq = 0;
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el[k] = v;
    else if (k in el && !k.startsWith("aria-") && k !== "role" && k !== "for") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function field(label, control, hint) {
  if (!control.id) control.id = `adm-${++seq}`;
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    control.setAttribute("aria-describedby", `${control.id}-hint`);
    parts.push(h("span", { class: "hint", id: `${control.id}-hint` }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

function select(name, options, value) {
  const s = h("select", { name });
  for (const [v, label] of options) s.append(h("option", { value: v, selected: v === value }, label));
  return s;
}

const ROLES = ["doctor", "nurse", "patient", "pharmacist", "admin"];

export class AdminView {
  constructor(root) {
    this.root = root;
    this.root.className = "admin";
    this.status = h("p", { class: "admin-status", role: "status", "aria-live": "polite" });
    this.error = h("p", { class: "error admin-error", role: "alert" });
    this.usersBox = h("div", { class: "admin-users" });
    this.teamBox = h("div", { class: "admin-team" });
    this.gwBox = h("div", { class: "admin-gateways" });
    this.codeBox = h("div", { class: "admin-code", "aria-live": "polite" });
    this.devBox = h("section", { class: "admin-devices", hidden: true });
    this.root.replaceChildren(
      h("h1", {}, tr("title")), this.status, this.error,
      h("section", { "aria-labelledby": "adm-users-h" }, h("h2", { id: "adm-users-h" }, tr("users")), this.userForm(), this.usersBox),
      h("section", { "aria-labelledby": "adm-team-h" }, h("h2", { id: "adm-team-h" }, tr("care_team")), this.teamForm = h("div"), this.teamBox),
      h("section", { "aria-labelledby": "adm-gw-h" }, h("h2", { id: "adm-gw-h" }, tr("gateways")), this.gwForm = h("div"), this.codeBox, this.gwBox),
      this.devBox,
    );
    this.ready = this.reload().catch((err) => this.fail(err));
  }

  destroy() {}

  say(text) { this.error.textContent = ""; this.status.textContent = text; }
  fail(err) { this.status.textContent = ""; this.error.textContent = tr("error", { d: err.detail || err.message }); }

  async act(fn) {
    try { await fn(); } catch (err) { this.fail(err); }
  }

  async reload() {
    const [users, records, teams, gateways, pharmacies] = await Promise.all([
      get("/users"), get("/admin/patients"), get("/care-team?active=true"), get("/gateways"),
      get("/pharmacies").catch(() => []),
    ]);
    Object.assign(this, { users, records, teams, gateways, pharmacies });
    this.renderUsers();
    this.renderPharmacies();
    this.renderTeam();
    this.renderGateways();
  }

  // ---- accounts ----------------------------------------------------------------------------------------------------
  userForm() {
    const f = {
      username: h("input", { name: "username", required: true, autocomplete: "off", maxLength: 64 }),
      display: h("input", { name: "display_name", maxLength: 200 }),
      password: h("input", { name: "password", type: "password", required: true, minLength: 10, autocomplete: "new-password" }),
      role: select("role", ROLES.map((r) => [r, tr(`role.${r}`)]), "doctor"),
      patientName: h("input", { name: "patient_name", maxLength: 200 }),
      pharmacy: select("pharmacy_id", [["", tr("no_pharmacy")]], ""),
    };
    this.pharmacySelect = f.pharmacy;
    const patientRow = field(tr("patient_name"), f.patientName);
    const pharmacyRow = field(tr("pharmacy"), f.pharmacy);
    const sync = () => {
      patientRow.hidden = f.role.value !== "patient";
      f.patientName.required = f.role.value === "patient";
      pharmacyRow.hidden = f.role.value !== "pharmacist";
    };
    f.role.onchange = sync;
    sync();
    const form = h("form", { class: "admin-user-form", onsubmit: (ev) => {
      ev.preventDefault();
      this.act(async () => {
        const body = { username: f.username.value.trim(), password: f.password.value, role: f.role.value,
          display_name: f.display.value.trim() };
        if (body.role === "patient") {
          const name = f.patientName.value.trim() || body.display_name;
          body.patient_id = (await post("/admin/patients", { display_name: name })).id;
        }
        if (body.role === "pharmacist" && f.pharmacy.value) body.pharmacy_id = f.pharmacy.value;
        const u = await post("/users", body);
        form.reset();
        sync();
        await this.reload();
        this.say(tr("created", { u: u.username }));
      });
    } },
    h("fieldset", {}, h("legend", {}, tr("create_user")),
      field(tr("username"), f.username), field(tr("display_name"), f.display), field(tr("password"), f.password),
      field(tr("role"), f.role), patientRow, pharmacyRow,
      h("button", { type: "submit", class: "primary" }, tr("create"))));
    return form;
  }

  renderPharmacies() {
    const s = this.pharmacySelect;
    s.replaceChildren(h("option", { value: "" }, tr("no_pharmacy")),
      ...this.pharmacies.map((p) => h("option", { value: p.id }, p.city ? `${p.name} (${p.city})` : p.name)));
  }

  renderUsers() {
    const rows = this.users.map((u) => h("tr", { dataset: { username: u.username } },
      h("td", {}, u.username), h("td", {}, u.display_name), h("td", {}, tr(`role.${u.role}`)),
      h("td", {}, u.disabled ? tr("disabled") : tr("active")),
      h("td", {}, h("button", { type: "button", onclick: () => this.act(async () => {
        await post(`/users/${u.id}/${u.disabled ? "enable" : "disable"}`);
        await this.reload();
        this.say(`${u.username}: ${u.disabled ? tr("active") : tr("disabled")}`);
      }) }, u.disabled ? tr("enable") : tr("disable")))));
    this.usersBox.replaceChildren(h("table", { class: "admin-table" },
      h("thead", {}, h("tr", {}, ...[tr("username"), tr("display_name"), tr("role"), tr("status"), tr("actions")].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...rows)));
  }

  // ---- care team ---------------------------------------------------------------------------------------------------
  patientName(id) {
    const r = this.records.find((p) => p.id === id);
    return r ? r.display_name : id;
  }

  userName(id) {
    const u = this.users.find((x) => x.id === id);
    return u ? (u.display_name || u.username) : id;
  }

  patientSelect(name) {
    return select(name, this.records.map((p) => [p.id, p.display_name]), this.records[0] && this.records[0].id);
  }

  renderTeam() {
    const clinicians = this.users.filter((u) => ["doctor", "nurse", "admin"].includes(u.role) && !u.disabled);
    const c = select("clinician_id", clinicians.map((u) => [u.id, `${u.display_name || u.username} (${tr(`role.${u.role}`)})`]));
    const p = this.patientSelect("patient_id");
    this.teamForm.replaceChildren(h("form", { class: "admin-team-form", onsubmit: (ev) => {
      ev.preventDefault();
      this.act(async () => {
        await post("/care-team", { clinician_id: c.value, patient_id: p.value });
        const [cn, pn] = [this.userName(c.value), this.patientName(p.value)];
        await this.reload();
        this.say(tr("assigned", { c: cn, p: pn }));
      });
    } }, h("div", { class: "admin-row" }, field(tr("clinician"), c), field(tr("patient"), p),
      h("button", { type: "submit", class: "primary" }, tr("assign")))));
    const rows = this.teams.map((a) => h("tr", { dataset: { assignment: a.id } },
      h("td", {}, this.userName(a.clinician_id)), h("td", {}, this.patientName(a.patient_id)),
      h("td", {}, fmtDateTime(a.valid_from)),
      h("td", {}, h("button", { type: "button", onclick: () => this.act(async () => {
        await post(`/care-team/${a.id}/end`);
        await this.reload();
        this.say(tr("ended"));
      }) }, tr("end")))));
    this.teamBox.replaceChildren(h("table", { class: "admin-table admin-team-table" },
      h("thead", {}, h("tr", {}, ...[tr("clinician"), tr("patient"), tr("since"), tr("actions")].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...rows)));
  }

  // ---- gateways ----------------------------------------------------------------------------------------------------
  renderGateways() {
    const id = h("input", { name: "gateway_id", required: true, maxLength: 64, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", autocomplete: "off" });
    const p = this.patientSelect("gateway_patient_id");
    this.gwForm.replaceChildren(h("form", { class: "admin-gw-form", onsubmit: (ev) => {
      ev.preventDefault();
      this.act(async () => {
        const issued = await post("/gateways", { gateway_id: id.value.trim(), patient_id: p.value });
        this.showCode(issued);
        await this.reload();
      });
    } }, h("fieldset", {}, h("legend", {}, tr("enrol_gateway")),
      h("div", { class: "admin-row" }, field(tr("gateway_id"), id, tr("gateway_hint")), field(tr("patient"), p),
        h("button", { type: "submit", class: "primary" }, tr("issue_code"))))));
    const rows = this.gateways.map((g) => {
      const actions = h("td", {});
      actions.append(h("button", { type: "button", onclick: () => this.act(() => this.showDevices(g)) }, tr("devices")));
      if (g.credential === "active" || g.code_expires_at) {
        actions.append(h("button", { type: "button", class: "danger", onclick: () => this.confirmRevoke(g, actions) }, tr("revoke")));
      }
      return h("tr", { dataset: { gateway: g.gateway_id, credential: g.credential } },
        h("td", {}, g.gateway_id), h("td", {}, g.patient_name || "—"), h("td", { class: "admin-cred" }, tr(`cred.${g.credential}`)),
        h("td", {}, String(g.devices)), actions);
    });
    this.gwBox.replaceChildren(h("table", { class: "admin-table admin-gw-table" },
      h("thead", {}, h("tr", {}, ...[tr("gateway_id"), tr("patient"), tr("credential"), tr("devices"), tr("actions")].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, ...rows)));
  }

  showCode(issued) {
    const qr = h("div", { class: "admin-qr", role: "img", "aria-label": `QR ${issued.gateway_id}` });
    // segno's SVG, rendered by our server from a validated gateway id and a code of [0-9A-Z-]: no user markup.
    qr.innerHTML = issued.qr_svg;
    this.codeBox.replaceChildren(h("div", { class: "admin-code-card", tabindex: "-1" },
      h("h3", {}, `${tr("code_title")} — ${issued.gateway_id}`),
      h("p", { class: "admin-code-value", dataset: { code: issued.code } }, h("code", {}, issued.code)),
      h("p", { class: "hint" }, tr("code_hint", { t: fmtDateTime(issued.expires_at) })), qr,
      h("button", { type: "button", onclick: () => this.codeBox.replaceChildren() }, tr("close"))));
    this.codeBox.firstChild.focus();
  }

  confirmRevoke(g, cell) {
    const cancel = h("button", { type: "button" }, tr("cancel"));
    const ok = h("button", { type: "button", class: "danger admin-confirm" }, tr("confirm"));
    const box = h("div", { class: "admin-confirm-box", role: "alertdialog", "aria-label": tr("revoke_confirm", { g: g.gateway_id }) },
      h("p", {}, tr("revoke_confirm", { g: g.gateway_id })), ok, cancel);
    const before = [...cell.childNodes];
    cell.replaceChildren(box);
    cancel.onclick = () => { cell.replaceChildren(...before); before[before.length - 1].focus(); };
    box.onkeydown = (ev) => { if (ev.key === "Escape") cancel.onclick(); };
    ok.onclick = () => this.act(async () => {
      await post(`/gateways/${encodeURIComponent(g.gateway_id)}/revoke`);
      await this.reload();
      this.say(tr("revoked", { g: g.gateway_id }));
    });
    cancel.focus();
  }

  async showDevices(g) {
    const list = await get(`/gateways/${encodeURIComponent(g.gateway_id)}/devices`);
    const address = h("input", { name: "address", required: true, maxLength: 64, autocomplete: "off" });
    const model = h("input", { name: "model", maxLength: 100 });
    const kind = select("kind", ["oximeter", "bp_monitor", "thermometer", "scale", "glucometer", "hr_monitor"].map((k) => [k, k]));
    const rows = list.map((d) => h("tr", { dataset: { device: d.id } },
      h("td", {}, d.address), h("td", {}, d.model || "—"), h("td", {}, d.kind || "—"),
      h("td", {}, d.unenrolled_at ? tr("unenrolled") : tr("enrolled")),
      h("td", {}, d.unenrolled_at ? "" : h("button", { type: "button", onclick: () => this.act(async () => {
        await post(`/gateways/${encodeURIComponent(g.gateway_id)}/devices/${d.id}/unenrol`);
        await this.showDevices(g);
        await this.reload();
      }) }, tr("unenrol")))));
    this.devBox.hidden = false;
    this.devBox.replaceChildren(h("h2", { tabindex: "-1" }, tr("show_devices", { g: g.gateway_id })),
      list.length ? h("table", { class: "admin-table admin-dev-table" },
        h("thead", {}, h("tr", {}, ...[tr("address"), tr("model"), tr("kind"), tr("status"), tr("actions")].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, ...rows)) : h("p", {}, tr("none")),
      h("form", { class: "admin-dev-form", onsubmit: (ev) => {
        ev.preventDefault();
        this.act(async () => {
          await post(`/gateways/${encodeURIComponent(g.gateway_id)}/devices`,
            { address: address.value.trim(), model: model.value.trim() || null, kind: kind.value });
          await this.showDevices(g);
          await this.reload();
        });
      } }, h("div", { class: "admin-row" }, field(tr("address"), address), field(tr("model"), model), field(tr("kind"), kind),
        h("button", { type: "submit", class: "primary" }, tr("enrol_device")))));
    this.devBox.firstChild.focus();
  }
}
