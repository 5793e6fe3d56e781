// The HTTP side of the qrlogin browser client: the error type, one JSON
// request helper, and the plain calls that need no connection of their own.
// Shared by qrlogin-client.js (the public API) and qrlogin-watcher.js.

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
  constructor(message, { status = 0, code = 'network', node = null, retryAfterMs = null } = {}) {
    super(message);
    this.name = 'QrLoginError';
    this.status = status;
    this.code = code;
    this.node = node;
    this.retryAfterMs = retryAfterMs;
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
export async function request(method, path, { baseUrl = '', body, signal } = {}) {
  let response;
  try {
    response = await fetch(baseUrl + path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
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
  const { session_id, state, version, expires_at, updated_at, user_display_name, node } = data;
  return { session_id, state, version, expires_at, updated_at, user_display_name, node };
}

/** Starts a login: a new session in PENDING, its QR code, and the secret cookie. */
export async function createLogin({ baseUrl = '' } = {}) {
  const { data, node } = await request('POST', '/v1/login-sessions', { baseUrl, body: {} });
  return {
    sessionId: data.session_id,
    qrPayload: data.qr_payload,
    qrSvg: data.qr_svg,
    snapshot: snapshotOf(data),
    node,
  };
}

/** One-time redemption of a CONFIRMED session; a second call fails (409). */
export async function redeem(sessionId, { baseUrl = '' } = {}) {
  checkSessionId(sessionId);
  const { data, node } = await request('POST', sessionPath(sessionId, '/redeem'), { baseUrl, body: {} });
  return { ...data, node };
}

/** Cancels a PENDING or SCANNED session; resolves to the CANCELLED snapshot. */
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
