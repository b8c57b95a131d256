// The HTTP API client: same origin, JSON in and out, the API key (when the
// operator logged in with one) sent as "Authorization: Bearer <key>".

const KEY = 'umbra.apiKey';

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  who = null;
}

// Who the key belongs to (GET /api/whoami), once loadIdentity has run.
let who = null;

/** Ask the server whose key this is; throws an ApiError 401 for a bad key. */
export async function loadIdentity() {
  who = await api('/api/whoami');
  return who;
}

/** {name, role, authentication} of the signed-in key, or null. */
export function identity() {
  return who;
}

/** Why the signed-in key may not change things, or '' when it may
 * (operators and admins; everyone when authentication is off). */
export function readOnlyReason() {
  if (!who || who.role !== 'viewer') return '';
  return `Your API key (${who.name}) has the viewer role: changes need operator.`;
}

/** An error answer from the API: status, message and (registry API) the
 * offending field. */
export class ApiError extends Error {
  constructor(status, body, path) {
    const msg = (body && (body.message || body.error)) || `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.field = body && body.field;
    this.body = body;
    this.path = path;
  }
}

const listeners = new Set();

/** fn(err) runs whenever the API answers 401 (no key, or a wrong one). */
export function onUnauthorized(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Tell the onUnauthorized listeners (the event stream's 401 uses this). */
export function notifyUnauthorized(err) {
  listeners.forEach((fn) => fn(err));
}

export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = authHeaders({ Accept: 'application/json' });
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text.trim() };
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data, path);
    if (res.status === 401) notifyUnauthorized(err);
    throw err;
  }
  return data;
}

export const enc = encodeURIComponent;

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else u.set(k, v);
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}
