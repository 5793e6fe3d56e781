// The demo login page: creates a login session, shows its QR code, watches it
// over the chosen transport, redeems it on CONFIRMED and shows who signed in.
// Every step is written to a timeline with the edge node that served it, to
// make visible that any node can deliver any session's events.
import { createLogin, watch, redeem, isFinal } from '/qrlogin-client.js';

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
  SCANNED: 'Scanned. Waiting for the confirmation on the phone…',
  CONFIRMED: 'Confirmed on the phone. Signing you in…',
  REDEEMED: 'Signed in.',
  DENIED: 'The login was refused on the phone.',
  CANCELLED: 'This login was cancelled.',
  EXPIRED: 'This QR code expired.',
};

let login = null; // { sessionId, qrPayload, qrSvg, snapshot, node }
let watcher = null;
let countdownTimer = null;
let creating = false;

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
  const open = state === 'PENDING' || state === 'SCANNED';
  $('cancel').disabled = !open;
  $('cancel').hidden = !open;
  const overlay = $('qr-overlay');
  if (state === 'PENDING') {
    overlay.hidden = true;
  } else {
    overlay.hidden = false;
    overlay.textContent = state === 'SCANNED' || state === 'CONFIRMED' ? '✓ Scanned' : HINTS[state];
  }
  $('restart').hidden = !(state === 'DENIED' || state === 'CANCELLED');
  if (isFinal(state)) $('phone-link').hidden = true;
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
    case 'SCANNED':
      return `Scanned by ${snapshot.user_display_name || 'a user'} (v${snapshot.version})`;
    case 'CONFIRMED':
      return `Confirmed by ${snapshot.user_display_name || 'the user'} (v${snapshot.version})`;
    default:
      return `${snapshot.state} (v${snapshot.version})`;
  }
}

function onState(snapshot, { transport }) {
  setState(snapshot.state);
  startCountdown(snapshot.expires_at);
  $('delivery-node').textContent = snapshot.node || '—';
  addEvent(`${describe(snapshot)} via ${SHORT_NAMES[transport]}`, {
    node: snapshot.node,
    kind: snapshot.state,
  });
  if (snapshot.state === 'CONFIRMED') doRedeem(transport);
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
  qr.hidden = false;
  $('qr-placeholder').hidden = true;
  const link = $('phone-link');
  link.href = login.qrPayload;
  link.hidden = false;
  $('session-id').textContent = login.sessionId;
  $('created-node').textContent = login.node || '—';
  $('delivery-node').textContent = '—';
  $('held-node').textContent = '—';
  setState(login.snapshot.state);
  startCountdown(login.snapshot.expires_at);
  addEvent(`Login session created (v${login.snapshot.version})`, { node: login.node, kind: 'PENDING' });
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
$('sign-out').addEventListener('click', signOut);

const preset = new URLSearchParams(location.search).get('transport');
if (preset) {
  const input = document.querySelector(`input[name="transport"][value="${CSS.escape(preset)}"]`);
  if (input) input.checked = true;
}
start();
