/**
 * qrlogin-client.js: browser client for qrlogin cross-device QR-code login.
 *
 * Plain ES modules without dependencies: this file (the API) with
 * qrlogin-http.js (requests, errors), qrlogin-key.js (the browser key of
 * key-bound redemption), qrlogin-watcher.js (transports) and
 * qrlogin-stomp.js (the STOMP frames the watcher needs) beside it. Serve
 * them from the same origin as the qrlogin edge API
 * (directly or through your reverse proxy): the browser secret travels in
 * the HttpOnly cookie that `createLogin()` receives, and that cookie is only
 * sent to the same origin (SameSite=Strict).
 *
 *   import { createLogin, watch, redeem, cancel } from '/qrlogin-client.js';
 *
 *   const login = await createLogin({ bindKey: true });
 *   // login = { sessionId, qrPayload, qrSvg, snapshot, keyBound, pollIntervalMs, node }
 *   //   qrSvg: SVG text of the QR code; qrPayload: the URL it encodes (it
 *   //   is replaced every QRLOGIN_QR_ROTATION: show snapshot.qr_payload of
 *   //   each PENDING snapshot, e.g. as the image
 *   //   /v1/login-sessions/<id>/qr.svg?e=<epoch>); snapshot: the session
 *   //   (see below); node: edge that created it. keyBound: the session is
 *   //   bound to a non-extractable WebCrypto key made here (qrlogin-key.js;
 *   //   bindKey: false, or a page that is not a secure context, skips it),
 *   //   and only redeem() on this page, which signs a proof with it, can
 *   //   redeem the session: a stolen browser secret alone cannot.
 *
 *   const watcher = watch(login.sessionId, {
 *     transport: 'auto',          // 'auto' | 'ws' | 'stomp' | 'sse' | 'longpoll' | 'poll'
 *     snapshot: login.snapshot,   // optional: the newest snapshot already known
 *     onState(snapshot, info) {}, // each newer snapshot; info = { transport }
 *     onTransport(info) {},       // { transport, status, node, reason, delayMs }
 *                                 // status: 'connecting' | 'open' | 'held' (node:
 *                                 // the edge now serving this watcher) |
 *                                 // 'reconnecting' | 'fallback' | 'closed'
 *     onError(error) {},          // fatal QrLoginError; the watcher has stopped
 *     pollIntervalMs: 2000,       // short polling period (at least the
 *                                 // server's poll_interval_ms; a 429
 *                                 // slow_down waits Retry-After)
 *     longPollWaitSeconds: 25,    // long-poll hold asked from the server
 *     baseUrl: '',                // prefix of the API (default: same origin)
 *   });
 *   watcher.stop();               // stop watching (no request is sent)
 *   await watcher.cancel();       // cancel the login (over the WebSocket or
 *                                 // STOMP connection when one is open, else DELETE)
 *   watcher.transport;            // the transport in use now
 *   watcher.snapshot;             // the newest snapshot seen
 *
 *   // On CONFIRMED, show snapshot.user_display_name and redeem only when the
 *   // user agrees ("Continue as Alice"): whoever scanned the code confirmed
 *   // with *their* account, and redeeming signs this page into it.
 *   const result = await redeem(login.sessionId);
 *   // { access_token, token_type, expires_at, user: { id, display_name }, node }
 *   await cancel(login.sessionId); // the CANCELLED snapshot (also after
 *                                  // CONFIRMED: "Not you? Start over")
 *
 * A snapshot is the JSON of docs/protocol.md: { session_id, state, version,
 * expires_at, updated_at, user_display_name, qr_payload, match_code,
 * deny_reason, poll_interval_ms, node }, where `node` is the edge that
 * delivered it; qr_payload is set while PENDING, match_code (the number the
 * user must pick on the phone) while SCANNED, user_display_name from
 * CONFIRMED on, deny_reason ('user', 'wrong_match') with DENIED. Failed requests reject with QrLoginError { status, code,
 * message, node }, `code` being the API's stable error code ('network' when
 * no response came back).
 *
 * Behaviour of watch():
 * - 'auto' starts with WebSocket and falls back to SSE, then long polling,
 *   then short polling when a transport cannot be established twice in a row
 *   while the API itself answers (a blocked upgrade, a buffering proxy). An
 *   explicit transport never falls back. 'stomp' (STOMP 1.2 over WebSocket,
 *   `/v1/login-sessions/{id}/stomp`) is used only when asked for.
 * - Every reconnect resumes from the newest version seen: WebSocket and SSE
 *   with `?since=`, STOMP with a `since` header on SUBSCRIBE, EventSource's
 *   own reconnects with Last-Event-ID, long polling with `since`. Reconnects
 *   wait with jittered exponential backoff (0.5 s doubling up to 15 s); a
 *   WebSocket closed with 1012 (node draining) comes back after a short
 *   jittered delay, STOMP after the draining ERROR's `retry-after-ms`, and
 *   SSE follows the server's `retry:`.
 * - Snapshots are de-duplicated by version: one is new when its version is
 *   higher, when it is final and the previous one was not (an edge reports
 *   a deadline as EXPIRED with the last stored version), or when it is a
 *   PENDING one of the same version with a later QR payload (rotation).
 * - Watching stops by itself at a final state (REDEEMED, DENIED, CANCELLED,
 *   EXPIRED), and on errors that retrying cannot fix (unknown session, not
 *   the creating browser), which are passed to onError.
 */

import { Watcher } from './qrlogin-watcher.js';
import { TRANSPORTS, QrLoginError, checkSessionId } from './qrlogin-http.js';

export {
  TRANSPORTS, STATES, QrLoginError, isFinal, createLogin, redeem, cancel, getSnapshot, forgetKey, qrEpoch,
} from './qrlogin-http.js';

/** Watches a session over the best transport; see the header for options. */
export function watch(sessionId, options = {}) {
  checkSessionId(sessionId);
  const mode = options.transport ?? 'auto';
  if (mode !== 'auto' && !TRANSPORTS.includes(mode)) {
    throw new QrLoginError(`unknown transport "${mode}" (auto, ${TRANSPORTS.join(', ')})`, {
      status: 400,
      code: 'invalid_argument',
    });
  }
  const watcher = new Watcher(sessionId, mode, options);
  watcher.connect();
  return watcher;
}
