// Translations (French by default, English) and Intl formatting of numbers, dates and ages.
const LANGS = ["fr", "en"];
let lang = "fr";
let dict = {};
const listeners = new Set();

export function currentLang() { return lang; }

export async function setLang(next) {
  if (!LANGS.includes(next)) next = "fr";
  const res = await fetch(`/app/i18n/${next}.json`, { cache: "no-cache" });
  dict = await res.json();
  lang = next;
  localStorage.setItem("tbib.lang", next);
  document.documentElement.lang = next;
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
    f = new Intl.NumberFormat(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits });
    numberFormats.set(key, f);
  }
  return f.format(value);
}

export function fmtDateTime(value, opts = { dateStyle: "short", timeStyle: "medium" }) {
  if (!value) return "—";
  const d = value instanceof Date ? value : new Date(value);
  return new Intl.DateTimeFormat(lang, opts).format(d);
}

export function fmtDay(isoDay) {
  const [y, m, d] = isoDay.split("-").map(Number);
  return new Intl.DateTimeFormat(lang, { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" })
    .format(new Date(Date.UTC(y, m - 1, d)));
}

let rtf = null;
let rtfLang = null;
// "il y a 12 s" / "12 sec. ago"
export function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (rtfLang !== lang) { rtf = new Intl.RelativeTimeFormat(lang, { numeric: "always", style: "short" }); rtfLang = lang; }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return rtf.format(-s, "second");
  if (s < 3600) return rtf.format(-Math.floor(s / 60), "minute");
  if (s < 86400) return rtf.format(-Math.floor(s / 3600), "hour");
  return rtf.format(-Math.floor(s / 86400), "day");
}
