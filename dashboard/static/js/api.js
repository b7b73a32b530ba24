// HTTP client of the dashboard: cookie session (HttpOnly access + refresh cookies, SameSite=Strict) with the CSRF
// token echoed in X-CSRF-Token on every state-changing request; one transparent refresh on 401.
const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.body = body; // the parsed JSON error body (structured details, e.g. prescription check problems)
  }
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

let csrf = null;
let refreshing = null;

function csrfToken() { return csrf || cookie("tbib_csrf"); }

async function raw(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    const token = csrfToken();
    if (token) headers["X-CSRF-Token"] = token;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(API + path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function errorOf(res) {
  try {
    const j = await res.json();
    return new ApiError(res.status, typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail), j);
  } catch { return new ApiError(res.status, res.statusText); }
}

// Refresh the cookie session once (concurrent callers share the attempt). Resolves true when renewed.
export function refresh() {
  if (!refreshing) {
    refreshing = raw("POST", "/auth/refresh", { mode: "cookie" })
      .then(async (res) => {
        if (!res.ok) return false;
        const j = await res.json();
        if (j.csrf_token) csrf = j.csrf_token;
        return true;
      })
      .catch(() => false)
      .finally(() => { setTimeout(() => { refreshing = null; }, 0); });
  }
  return refreshing;
}

export async function request(method, path, body) {
  let res = await raw(method, path, body);
  if (res.status === 401 && !path.startsWith("/auth/")) {
    if (await refresh()) res = await raw(method, path, body);
  }
  if (!res.ok) {
    const err = await errorOf(res);
    if (res.status === 401) window.dispatchEvent(new CustomEvent("tbib:unauthenticated"));
    throw err;
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const put = (path, body = {}) => request("PUT", path, body);
export const del = (path) => request("DELETE", path);

export async function login(username, password, totp) {
  const body = { username, password, mode: "cookie" };
  if (totp) body.totp = totp;
  const res = await raw("POST", "/auth/login", body);
  if (!res.ok) throw await errorOf(res);
  const j = await res.json();
  csrf = j.csrf_token;
  return j.user;
}

export async function logout() {
  try { await raw("POST", "/auth/logout"); } finally { csrf = null; }
}

// The current user, or null when not logged in (after one refresh attempt).
export async function me() {
  try { return await get("/auth/me"); } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x)); else u.append(k, v);
  }
  const s = u.toString();
  return s ? `?${s}` : "";
}
