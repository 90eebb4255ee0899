// JSON over fetch with the session's CSRF token. Errors carry the API's payload.

export class ApiError extends Error {
  constructor(status, payload) {
    super((payload && payload.detail) || `request failed (${status})`);
    this.status = status;
    this.payload = payload || {};
  }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function request(method, url, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") opts.headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  let payload = null;
  try { payload = await resp.json(); } catch { payload = null; }
  if (!resp.ok) throw new ApiError(resp.status, payload);
  return payload;
}

export const getJSON = (url) => request("GET", url);
export const postJSON = (url, body = {}) => request("POST", url, body);
export const putJSON = (url, body = {}) => request("PUT", url, body);
export const patchJSON = (url, body = {}) => request("PATCH", url, body);
export const deleteJSON = (url) => request("DELETE", url);

// One readable line per field error: "stages.1.data.0.weight: must be >= 0".
export function errorLines(err) {
  const p = (err && err.payload) || {};
  const lines = [];
  const walk = (prefix, v) => {
    if (Array.isArray(v)) v.forEach((m) => (typeof m === "object" ? walk(prefix, m) : lines.push([prefix, String(m)])));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    else if (v !== undefined && v !== null) lines.push([prefix, String(v)]);
  };
  if (p.errors) walk("", p.errors);
  else for (const [k, v] of Object.entries(p)) if (k !== "detail") walk(k, v);
  if (!lines.length) lines.push(["", (err && err.message) || "request failed"]);
  return lines;
}
