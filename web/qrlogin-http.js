// The HTTP side of the qrlogin browser client: the error type, one JSON
// request helper, and the plain calls that need no connection of their own.
// Shared by qrlogin-client.js (the public API) and qrlogin-watcher.js.
import { canBindKeys, generateKey, proof } from './qrlogin-key.js';

export const TRANSPORTS = Object.freeze(['ws', 'stomp', 'sse', 'longpoll', 'poll']);
/** What 'auto' tries, in order (STOMP only when asked for: it adds nothing
 * over the plain WebSocket for a watcher). */
export const AUTO_ORDER = Object.freeze(['ws', 'sse', 'longpoll', 'poll']);
export const STATES = Object.freeze([
  'PENDING', 'SCANNED', 'CONFIRMED', 'REDEEMED', 'DENIED', 'CANCELLED', 'EXPIRED',
]);
const FINAL_STATES = new Set(['REDEEMED', 'DENIED', 'CANCELLED', 'EXPIRED']);
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;
/** Errors after which retrying the same request cannot succeed. */
const FATAL_CODES = new Set([
  'invalid_argument', 'unauthenticated', 'permission_denied', 'not_found', 'origin_not_allowed',
]);

/** True for the states after which a session never changes again. */
export function isFinal(state) {
  return FINAL_STATES.has(state);
}

/** A failed qrlogin request: HTTP status, the API's stable code, the edge node. */
export class QrLoginError extends Error {
  constructor(message, { status = 0, code = 'network', node = null, retryAfterMs = null, pollIntervalMs = null } = {}) {
    super(message);
    this.name = 'QrLoginError';
    this.status = status;
    this.code = code;
    this.node = node;
    this.retryAfterMs = retryAfterMs;
    // With `slow_down`: the pace the server asks for from now on.
    this.pollIntervalMs = pollIntervalMs;
  }

  /** True when retrying cannot help (the session is gone or not ours). */
  get fatal() {
    return FATAL_CODES.has(this.code);
  }
}

export function checkSessionId(sessionId) {
  if (typeof sessionId !== 'string' || !SESSION_ID.test(sessionId)) {
    throw new QrLoginError('a session id is 22 characters of A-Z, a-z, 0-9, "-" and "_"', {
      status: 400,
      code: 'invalid_argument',
    });
  }
}

export function sessionPath(sessionId, suffix = '') {
  return `/v1/login-sessions/${encodeURIComponent(sessionId)}${suffix}`;
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : null;
}

/** One JSON request to the edge API; resolves to { data, node }. */
export async function request(method, path, { baseUrl = '', body, signal, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(baseUrl + path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: body === undefined ? headers : { ...headers, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new QrLoginError(`cannot reach the login service (${err && err.message})`);
  }
  const node = response.headers.get('X-Edge-Node');
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && data.error ? data.error : {};
    throw new QrLoginError(detail.message || `HTTP ${response.status}`, {
      status: response.status,
      code: detail.code || `http_${response.status}`,
      node,
      retryAfterMs: parseRetryAfter(response.headers.get('Retry-After')),
      pollIntervalMs: Number.isFinite(detail.poll_interval_ms) ? detail.poll_interval_ms : null,
    });
  }
  if (data === null || typeof data !== 'object') {
    throw new QrLoginError('the login service sent a response that is not JSON', {
      status: response.status,
      code: 'bad_response',
      node,
    });
  }
  return { data, node };
}

export function snapshotOf(data) {
  const {
    session_id, state, version, expires_at, updated_at, user_display_name,
    qr_payload = null, match_code = null, deny_reason = null, poll_interval_ms = null, node,
  } = data;
  return {
    session_id, state, version, expires_at, updated_at, user_display_name,
    qr_payload, match_code, deny_reason, poll_interval_ms, node,
  };
}

/** The epoch of a QR payload `…/m/<id>#<epoch>.<tag>` (null when none). */
export function qrEpoch(payload) {
  const match = typeof payload === 'string' ? payload.match(/#(\d+)\./) : null;
  return match ? Number(match[1]) : null;
}

/** The keys of the logins this page created, by session id (memory only). */
const keys = new Map();

/**
 * Starts a login: a new session in PENDING, its QR code, and the secret
 * cookie. Unless `bindKey` is false, the session is bound to a fresh
 * non-extractable WebCrypto key (where the page is a secure context), so
 * that only this page can redeem it.
 */
export async function createLogin({ baseUrl = '', bindKey = true } = {}) {
  const key = bindKey && canBindKeys() ? await generateKey() : null;
  const body = key ? { public_key: key.publicJwk } : {};
  const { data, node } = await request('POST', '/v1/login-sessions', { baseUrl, body });
  if (key) keys.set(data.session_id, key);
  return {
    sessionId: data.session_id,
    qrPayload: data.qr_payload,
    qrSvg: data.qr_svg,
    snapshot: snapshotOf(data),
    keyBound: Boolean(key && data.key_thumbprint),
    pollIntervalMs: data.poll_interval_ms ?? null,
    node,
  };
}

/** One-time redemption of a CONFIRMED session; a second call fails (409). */
export async function redeem(sessionId, { baseUrl = '' } = {}) {
  checkSessionId(sessionId);
  const path = sessionPath(sessionId, '/redeem');
  const key = keys.get(sessionId);
  const headers = {};
  if (key) {
    const htu = new URL(baseUrl + path, globalThis.location?.href).href;
    headers.DPoP = await proof(key, sessionId, htu);
  }
  const { data, node } = await request('POST', path, { baseUrl, body: {}, headers });
  keys.delete(sessionId);
  return { ...data, node };
}

/** Forgets the key of a login this page will not redeem (started over). */
export function forgetKey(sessionId) {
  keys.delete(sessionId);
}

/** Cancels a PENDING, SCANNED or CONFIRMED session; resolves to the CANCELLED snapshot. */
export async function cancel(sessionId, { baseUrl = '' } = {}) {
  checkSessionId(sessionId);
  const { data } = await request('DELETE', sessionPath(sessionId), { baseUrl });
  return snapshotOf(data);
}

/** Reads the current snapshot once (what short polling does). */
export async function getSnapshot(sessionId, { baseUrl = '' } = {}) {
  checkSessionId(sessionId);
  const { data } = await request('GET', sessionPath(sessionId), { baseUrl });
  return snapshotOf(data);
}
