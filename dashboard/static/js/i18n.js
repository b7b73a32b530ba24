// Translations (French by default, English, Arabic) and Intl formatting of numbers, dates and ages.
// Arabic (written right to left: <html dir="rtl">) covers the patient space (i18n/me.ar.json); the clinician pages
// fall back to French for keys Arabic does not have. Each language loads "<lang>.json" and "me.<lang>.json".
const LANGS = ["fr", "en", "ar"];
const FALLBACK = { ar: "fr" };
let lang = "fr";
let dict = {};

async function load(name) {
  const res = await fetch(`/app/i18n/${name}.json`, { cache: "no-cache" });
  return res.ok ? res.json() : {};
}

// Intl locale: Moroccan Arabic conventions with Western digits (ar-MA uses "latn" numerals).
export function intlLocale() { return lang === "ar" ? "ar-MA" : lang; }
const listeners = new Set();

export function currentLang() { return lang; }

export async function setLang(next) {
  if (!LANGS.includes(next)) next = "fr";
  const base = FALLBACK[next];
  const parts = await Promise.all([base ? load(base) : {}, base ? load(`me.${base}`) : {}, load(next), load(`me.${next}`)]);
  dict = Object.assign({}, ...parts);
  lang = next;
  localStorage.setItem("tbib.lang", next);
  document.documentElement.lang = next;
  document.documentElement.dir = next === "ar" ? "rtl" : "ltr";
  translateDom(document);
  for (const fn of listeners) fn(next);
}

export function initialLang() {
  const saved = localStorage.getItem("tbib.lang");
  return LANGS.includes(saved) ? saved : "fr";
}

export function onLangChange(fn) { listeners.add(fn); }

export function t(key, vars = {}) {
  let s = dict[key];
  if (s === undefined) s = key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? `{${k}}` : String(vars[k])));
}

export function translateDom(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

const numberFormats = new Map();
export function fmtNumber(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const key = `${lang}:${digits}`;
  let f = numberFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(intlLocale(), { minimumFractionDigits: digits, maximumFractionDigits: digits });
    numberFormats.set(key, f);
  }
  return f.format(value);
}

export function fmtDateTime(value, opts = { dateStyle: "short", timeStyle: "medium" }) {
  if (!value) return "—";
  const d = value instanceof Date ? value : new Date(value);
  return new Intl.DateTimeFormat(intlLocale(), opts).format(d);
}

export function fmtDay(isoDay) {
  const [y, m, d] = isoDay.split("-").map(Number);
  return new Intl.DateTimeFormat(intlLocale(), { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" })
    .format(new Date(Date.UTC(y, m - 1, d)));
}

let rtf = null;
let rtfLang = null;
// "il y a 12 s" / "12 sec. ago"
export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (rtfLang !== lang) { rtf = new Intl.RelativeTimeFormat(intlLocale(), { numeric: "always", style: "short" }); rtfLang = lang; }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return rtf.format(-s, "second");
  if (s < 3600) return rtf.format(-Math.floor(s / 60), "minute");
  if (s < 86400) return rtf.format(-Math.floor(s / 3600), "hour");
  return rtf.format(-Math.floor(s / 86400), "day");
}
