// Shared pieces of the e-prescription pages (issue 18): a tiny element builder, the API paths of docs/prescriptions.md
// ("HTTP API"), status pills, error texts. No page state here.
import { fmtDateTime, t } from "./i18n.js";

// h("button", { type: "button", onclick }, "text", child...) — properties when the element has them, else attributes.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el[k] = v;
    else if (k.startsWith("aria-") || k === "role" || k === "for" || k === "list" || k === "form") el.setAttribute(k, v === true ? "" : String(v));
    else if (k in el) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

// A labelled field: <div class="field"><label for=id>text</label><input id=id ...></div>
export function field(labelText, control, hint) {
  if (!control.id) control.id = nextId("rx-f");
  const parts = [h("label", { for: control.id }, labelText), control];
  if (hint) {
    const hid = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hid);
    parts.push(h("span", { class: "hint", id: hid }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}

export function statusPill(status) {
  return h("span", { class: `pill rx-status rx-${status}`, dataset: { status } }, t(`rx.status.${status}`));
}

// The issues of a 422: a failed check {detail: {issues: [...]}}, or FastAPI's validation list {detail: [{loc, msg}]}
// (loc ["body", "lines", 0, "dose"] is line 1).
export function issuesOf(err) {
  const d = err && err.body && err.body.detail;
  if (d && Array.isArray(d.issues)) return d.issues;
  if (!Array.isArray(d)) return null;
  return d.map((x) => {
    const loc = x.loc || [];
    const line = loc[1] === "lines" && typeof loc[2] === "number" ? loc[2] + 1 : null;
    const name = loc.slice(line ? 3 : 1).join(".");
    return { code: "invalid", severity: "error", line_no: line, message: t("rx.invalid_field", { field: name, detail: x.msg }) };
  });
}

export function errorText(err) {
  return t("rx.error", { detail: (err && (err.detail || err.message)) || String(err) });
}

// A day: "7 déc. 2026"; a date-only value ("1961-04-02", a birth date) is that calendar day, whatever the time zone.
export function fmtDate(value) {
  if (!value) return "—";
  const dayOnly = typeof value === "string" && /^\d{4}-\d{2}-\d{2}$/.test(value);
  return fmtDateTime(value, dayOnly ? { dateStyle: "medium", timeZone: "UTC" } : { dateStyle: "medium" });
}
