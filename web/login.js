// The demo login page: creates a login session bound to a WebCrypto key,
// shows its QR code (replaced at every rotation), watches it over the chosen
// transport, shows the number to pick on the phone after the scan, names
// the account that confirmed and redeems only when the user clicks
// "Continue as …" ("Not you? Start over" cancels and shows a fresh code).
// Nothing in the URL turns the click off: a link anyone can send would
// otherwise sign its opener in as whoever confirmed on a phone.
// Every step is written to a timeline with the edge node that served it, to
// make visible that any node can deliver any session's events.
import { createLogin, watch, redeem, cancel, forgetKey, isFinal, qrEpoch } from '/qrlogin-client.js';

const $ = (id) => document.getElementById(id);
const TRANSPORT_NAMES = {
  ws: 'WebSocket',
  stomp: 'STOMP over WebSocket',
  sse: 'Server-Sent Events',
  longpoll: 'long polling',
  poll: 'short polling',
  auto: 'auto',
};
const SHORT_NAMES = { ws: 'WebSocket', stomp: 'STOMP', sse: 'SSE', longpoll: 'long poll', poll: 'short poll' };
const HINTS = {
  PENDING: 'Waiting for a phone to scan the code.',
  SCANNED: 'Scanned. Pick the number below on your phone.',
  CONFIRMED: 'Confirmed on the phone. Is this you?',
  REDEEMED: 'Signed in.',
  DENIED: 'The login was refused on the phone.',
  CANCELLED: 'This login was cancelled.',
  EXPIRED: 'This QR code expired.',
};

let login = null; // { sessionId, qrPayload, qrSvg, snapshot, keyBound, node }
let watcher = null;
let countdownTimer = null;
let creating = false;
let lastTransport = 'auto';
const params = new URLSearchParams(location.search);

function chosenTransport() {
  const input = document.querySelector('input[name="transport"]:checked');
  return input ? input.value : 'auto';
}

function nodeChip(node) {
  const span = document.createElement('span');
  span.className = 'node';
  span.textContent = node || 'unknown node';
  return span;
}

/** Adds one line to the timeline: time, text, and the node that served it. */
function addEvent(text, { node = null, kind = '' } = {}) {
  const li = document.createElement('li');
  if (kind) li.dataset.kind = kind;
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = `${now.toLocaleTimeString([], { hour12: false })}.${String(now.getMilliseconds()).padStart(3, '0')}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(time, body);
  if (node) li.append(nodeChip(node));
  $('timeline').prepend(li);
}

function setState(state) {
  const badge = $('state');
  badge.textContent = state;
  badge.dataset.state = state;
  $('hint').textContent = HINTS[state] || '';
  const open = state === 'PENDING';
  $('cancel').disabled = !open;
  $('cancel').hidden = !open;
  const overlay = $('qr-overlay');
  if (state === 'PENDING') {
    overlay.hidden = true;
  } else {
    overlay.hidden = false;
    overlay.textContent = state === 'SCANNED' || state === 'CONFIRMED' ? '✓ Scanned' : HINTS[state];
  }
  // Someone else's phone may have scanned the code: one click gets a fresh one.
  $('not-you').hidden = !(state === 'SCANNED' || state === 'CONFIRMED');
  $('not-you').disabled = false;
  $('match').hidden = state !== 'SCANNED';
  $('confirm-box').hidden = state !== 'CONFIRMED';
  $('restart').hidden = !(state === 'DENIED' || state === 'CANCELLED');
  if (state !== 'PENDING') $('phone-link').hidden = true;
}

/** Shows the QR code of `payload` (the image is the code on screen now). */
function showQr(payload) {
  const epoch = qrEpoch(payload);
  $('qr').src = `/v1/login-sessions/${login.sessionId}/qr.svg?e=${epoch ?? 0}`;
  $('qr').dataset.epoch = String(epoch ?? '');
  $('phone-link').href = payload;
}

function startCountdown(expiresAt) {
  clearInterval(countdownTimer);
  const out = $('countdown');
  if (!expiresAt) {
    out.textContent = '';
    return;
  }
  const deadline = Date.parse(expiresAt);
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    out.textContent = `expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
  };
  tick();
  countdownTimer = setInterval(tick, 1000);
}

function describe(snapshot) {
  switch (snapshot.state) {
    case 'PENDING':
      return `New QR code (v${snapshot.version}, code ${qrEpoch(snapshot.qr_payload)})`;
    case 'SCANNED':
      return snapshot.match_code
        ? `Scanned; number ${snapshot.match_code} to pick (v${snapshot.version})`
        : `Scanned (v${snapshot.version})`;
    case 'CONFIRMED':
      return `Confirmed by ${snapshot.user_display_name || 'the user'} (v${snapshot.version})`;
    case 'DENIED':
      return snapshot.deny_reason === 'wrong_match'
        ? `DENIED: a wrong number was picked (v${snapshot.version})`
        : `DENIED (v${snapshot.version})`;
    default:
      return `${snapshot.state} (v${snapshot.version})`;
  }
}

function onState(snapshot, { transport }) {
  lastTransport = transport;
  setState(snapshot.state);
  startCountdown(snapshot.expires_at);
  $('delivery-node').textContent = snapshot.node || '—';
  addEvent(`${describe(snapshot)} via ${SHORT_NAMES[transport]}`, {
    node: snapshot.node,
    kind: snapshot.state,
  });
  if (snapshot.state === 'PENDING' && snapshot.qr_payload) showQr(snapshot.qr_payload);
  if (snapshot.state === 'SCANNED') $('match-code').textContent = snapshot.match_code ?? '—';
  if (snapshot.state === 'DENIED' && snapshot.deny_reason === 'wrong_match') {
    $('hint').textContent =
      'The number picked on the phone was not the one shown here. If that was not you, someone else scanned this code.';
  }
  if (snapshot.state === 'CONFIRMED') {
    const name = snapshot.user_display_name || 'this account';
    $('confirming-name').textContent = name;
    $('continue').textContent = `Continue as ${name}`;
    $('continue').disabled = false;
  }
  if (snapshot.state === 'EXPIRED') {
    addEvent('The QR code expired; creating a fresh one', { kind: 'info' });
    start();
  }
}

function onTransport(info) {
  const label = TRANSPORT_NAMES[info.transport];
  const name = label[0].toUpperCase() + label.slice(1);
  if (info.status === 'open') {
    $('transport-now').textContent = label;
    addEvent(`${name} connected`, { node: info.node, kind: 'transport' });
  } else if (info.status === 'held') {
    $('held-node').textContent = info.node;
    // A WebSocket (plain or STOMP) or an event stream stays on one edge;
    // polls move between edges with every request, so only the field above
    // follows them.
    if (['ws', 'stomp', 'sse'].includes(info.transport)) {
      addEvent(`${name} held on`, { node: info.node, kind: 'transport' });
    }
  } else if (info.status === 'reconnecting') {
    const after = info.delayMs ? `, retrying in ${(info.delayMs / 1000).toFixed(1)} s` : '';
    addEvent(`${name}: ${info.reason}${after}`, { kind: 'warn' });
  } else if (info.status === 'fallback') {
    $('transport-now').textContent = label;
    addEvent(`Falling back to ${label}: ${info.reason}`, { kind: 'warn' });
  }
}

function onError(error) {
  addEvent(`Stopped watching: ${error.message} (${error.code})`, { node: error.node, kind: 'error' });
  $('hint').textContent = `Something went wrong: ${error.message}`;
  $('restart').hidden = false;
}

function startWatching() {
  if (watcher) watcher.stop();
  if (!login) return;
  const transport = chosenTransport();
  addEvent(`Watching with ${TRANSPORT_NAMES[transport]}`, { kind: 'info' });
  watcher = watch(login.sessionId, {
    transport,
    snapshot: login.snapshot,
    onState: (snapshot, info) => {
      login.snapshot = snapshot;
      onState(snapshot, info);
    },
    onTransport,
    onError,
  });
}

async function doRedeem(transport) {
  $('continue').disabled = true;
  try {
    const result = await redeem(login.sessionId);
    addEvent(`Redeemed: signed in as ${result.user.display_name}`, { node: result.node, kind: 'REDEEMED' });
    showSignedIn(result, transport);
  } catch (error) {
    addEvent(`Redeem failed: ${error.message} (${error.code})`, { node: error.node, kind: 'error' });
    $('hint').textContent = `Could not sign in: ${error.message}`;
    $('restart').hidden = false;
  }
}

function showSignedIn(result, transport) {
  if (watcher) watcher.stop();
  clearInterval(countdownTimer);
  $('login-view').hidden = true;
  $('signed-in-view').hidden = false;
  const name = result.user.display_name;
  $('signed-in-name').textContent = name;
  $('avatar').textContent = (name.trim()[0] || '?').toUpperCase();
  $('signed-in-id').textContent = result.user.id;
  $('token-expiry').textContent = new Date(result.expires_at).toLocaleString();
  $('redeem-node').textContent = result.node || '—';
  $('signed-in-transport').textContent = TRANSPORT_NAMES[transport];
  document.title = `Signed in as ${name} · qrlogin`;
}

async function start() {
  if (creating) return;
  creating = true;
  if (watcher) watcher.stop();
  watcher = null;
  $('qr').hidden = true;
  $('qr-placeholder').hidden = false;
  $('qr-placeholder').textContent = 'Creating a login…';
  $('qr-overlay').hidden = true;
  $('phone-link').hidden = true;
  $('restart').hidden = true;
  try {
    login = await createLogin();
  } catch (error) {
    creating = false;
    $('qr-placeholder').textContent = 'Could not create a login.';
    addEvent(`Create failed: ${error.message} (${error.code})`, { node: error.node, kind: 'error' });
    $('hint').textContent = error.retryAfterMs
      ? `Too many logins from this address; try again in ${Math.ceil(error.retryAfterMs / 1000)} s.`
      : `The login service is not reachable: ${error.message}`;
    $('restart').hidden = false;
    return;
  }
  creating = false;
  const qr = $('qr');
  qr.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(login.qrSvg);
  qr.dataset.epoch = String(qrEpoch(login.qrPayload) ?? '');
  qr.hidden = false;
  $('qr-placeholder').hidden = true;
  const link = $('phone-link');
  link.href = login.qrPayload;
  link.hidden = false;
  $('key-bound').textContent = login.keyBound ? 'bound to this page' : 'not bound (no WebCrypto here)';
  $('session-id').textContent = login.sessionId;
  $('created-node').textContent = login.node || '—';
  $('delivery-node').textContent = '—';
  $('held-node').textContent = '—';
  setState(login.snapshot.state);
  startCountdown(login.snapshot.expires_at);
  addEvent(`Login session created (v${login.snapshot.version}${login.keyBound ? ', key-bound' : ''})`, {
    node: login.node,
    kind: 'PENDING',
  });
  startWatching();
}

function signOut() {
  // The access token cookie is HttpOnly and scoped to this demo; a new login
  // replaces it. Starting over shows a fresh QR code.
  $('signed-in-view').hidden = true;
  $('login-view').hidden = false;
  document.title = 'Sign in with your phone · qrlogin';
  $('timeline').replaceChildren();
  start();
}

document.querySelectorAll('input[name="transport"]').forEach((input) => {
  input.addEventListener('change', () => {
    if (login && !isFinal(login.snapshot.state)) startWatching();
  });
});
$('cancel').addEventListener('click', async () => {
  if (!watcher) return;
  $('cancel').disabled = true;
  try {
    await watcher.cancel();
  } catch (error) {
    addEvent(`Cancel failed: ${error.message} (${error.code})`, { node: error.node, kind: 'error' });
  }
});
$('restart').addEventListener('click', () => start());
$('continue').addEventListener('click', () => doRedeem(lastTransport));
// "Not you? Start over": cancel this login (whoever scanned it cannot use
// it any more) and show a fresh QR code, in one click.
$('not-you').addEventListener('click', async () => {
  if (!login) return;
  $('not-you').disabled = true;
  const old = login.sessionId;
  if (watcher) watcher.stop();
  watcher = null;
  forgetKey(old);
  try {
    await cancel(old);
    addEvent('Cancelled: not you', { kind: 'CANCELLED' });
  } catch (error) {
    addEvent(`Cancel failed: ${error.message} (${error.code})`, { node: error.node, kind: 'warn' });
  }
  start();
});
$('sign-out').addEventListener('click', signOut);

const preset = params.get('transport');
if (preset) {
  const input = document.querySelector(`input[name="transport"][value="${CSS.escape(preset)}"]`);
  if (input) input.checked = true;
}
start();
