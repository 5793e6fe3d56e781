// The demo phone app: signs in as a demo user (a development token issued by
// the edge), opens a login from its QR URL (sending the whole payload read,
// which the server checks is the code on screen now), shows where the login
// comes from (IP, browser, time, and a warning when it comes from another
// network than the phone), and confirms by picking the number shown on the
// other screen among three, or denies it. Each answer names the edge node
// that handled it.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'qrlogin-demo-user';
const SESSION_ID = /^[A-Za-z0-9_-]{22}$/;

let user = loadUser(); // { token, display_name, user_id }
let sessionId = null;
let countdownTimer = null;
let payload = ''; // the QR payload read (the URL with its #epoch.tag)

function loadUser() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
    return saved && saved.token ? saved : null;
  } catch {
    return null;
  }
}

/** A user id from a display name: lower-case letters and digits. */
function userIdFor(name) {
  const id = name.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  return id || 'user';
}

async function api(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw Object.assign(new Error(`cannot reach the login service (${err.message})`), { code: 'network' });
  }
  const node = response.headers.get('X-Edge-Node');
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = (data && data.error) || {};
    throw Object.assign(new Error(detail.message || `HTTP ${response.status}`), {
      code: detail.code || `http_${response.status}`,
      status: response.status,
      node,
    });
  }
  return { data, node };
}

function show(view) {
  for (const id of ['sign-in-view', 'open-view', 'request-view']) $(id).hidden = id !== view;
  $('who').hidden = !user;
  if (user) $('who-name').textContent = user.display_name;
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message;
  el.hidden = !message;
}

/** The session id in /m/<id>, in a pasted URL, or a bare id. */
function sessionIdFrom(text) {
  const value = text.trim();
  if (SESSION_ID.test(value)) return value;
  let path = value;
  try {
    path = new URL(value, location.href).pathname;
  } catch {
    return null;
  }
  const match = path.match(/\/m\/([A-Za-z0-9_-]{22})\/?$/);
  return match ? match[1] : null;
}

async function signIn(displayName) {
  const name = displayName.trim();
  if (!name) {
    showError('sign-in-error', 'Pick a name first.');
    return;
  }
  $('sign-in').disabled = true;
  showError('sign-in-error', '');
  try {
    const body = { user_id: userIdFor(name), display_name: name };
    const { data } = await api('POST', '/v1/dev/token', { body });
    user = { token: data.token, display_name: name, user_id: body.user_id };
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(user));
    route();
  } catch (error) {
    showError(
      'sign-in-error',
      error.status === 404
        ? 'This edge does not issue demo tokens (QRLOGIN_DEV_USER_TOKEN_KEY_FILE is not set).'
        : `Could not sign in: ${error.message}`,
    );
  } finally {
    $('sign-in').disabled = false;
  }
}

function setStateBadge(snapshot) {
  const badge = $('ctx-state');
  badge.textContent = snapshot.state;
  badge.dataset.state = snapshot.state;
  clearInterval(countdownTimer);
  const out = $('ctx-countdown');
  out.textContent = '';
  if (snapshot.expires_at) {
    const deadline = Date.parse(snapshot.expires_at);
    const tick = () => {
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      out.textContent = `${left} s left`;
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  }
}

function showResult(kind, text) {
  const result = $('result');
  result.dataset.kind = kind;
  result.textContent = text;
  result.hidden = false;
}

/** "Chrome 131 on Windows" from a User-Agent, for a quick check by the user. */
function summarize(ua) {
  const browser =
    [/(Edg)\/(\d+)/, /(OPR)\/(\d+)/, /(Firefox)\/(\d+)/, /(HeadlessChrome|Chrome|CriOS)\/(\d+)/, /Version\/(\d+)[^]*(Safari)/]
      .map((re) => ua.match(re))
      .find(Boolean);
  let name = null;
  if (browser) {
    const [, a, b] = browser;
    const names = { Edg: 'Edge', OPR: 'Opera', CriOS: 'Chrome' };
    name = /^\d+$/.test(a) ? `${b} ${a}` : `${names[a] || a} ${b}`;
  }
  const os = [
    [/Windows/, 'Windows'], [/Android/, 'Android'], [/iPhone|iPad/, 'iOS'],
    [/Mac OS X/, 'macOS'], [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux'],
  ].find(([re]) => re.test(ua));
  if (!name) return null;
  return os ? `${name} on ${os[1]}` : name;
}

function showUserAgent(ua) {
  const cell = $('ctx-ua');
  cell.replaceChildren();
  if (!ua) {
    cell.textContent = '(not sent)';
    return;
  }
  const summary = summarize(ua);
  if (summary) {
    const strong = document.createElement('span');
    strong.className = 'ua-summary';
    strong.textContent = summary;
    cell.append(strong);
  }
  const full = document.createElement('span');
  full.className = 'ua-full';
  full.textContent = ua;
  cell.append(full);
}

function ago(date) {
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

const FRIENDLY = {
  qr_replaced: 'This QR code was replaced by a newer one. Scan the code on the other screen again.',
  qr_invalid: 'This is not a valid qrlogin QR code (or not the one of this login).',
  wrong_match: 'That was not the number on the other screen, so the login was refused. If you started it, start again there.',
  match_required: 'Pick the number shown on the other screen.',
  rate_limited: 'Too many logins from your account just now; wait a minute.',
  expired: 'This login expired. Ask for a fresh QR code.',
  not_found: 'No such login (it may have expired and been removed).',
  failed_precondition: 'This login cannot be changed any more',
  permission_denied: 'Another user already scanned this login.',
  unauthenticated: 'Your sign-in is no longer valid; sign in again.',
};

function explain(error) {
  const base = FRIENDLY[error.code];
  if (error.code === 'failed_precondition') return `${base}: ${error.message}`;
  return base || error.message;
}

/** The QR payload in a URL: the whole URL when it carries `#<epoch>.<tag>`. */
function payloadFrom(text) {
  return /#\d+\.[A-Za-z0-9_-]+$/.test(text.trim()) ? text.trim() : '';
}

/** Offers the three numbers (number matching), or a plain Confirm without. */
function showChoices(choices) {
  const box = $('match-choices');
  box.replaceChildren();
  const matching = Array.isArray(choices) && choices.length > 0;
  for (const code of matching ? choices : []) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'button secondary match-choice';
    button.dataset.code = String(code);
    button.textContent = String(code);
    button.addEventListener('click', () => decide('confirm', code));
    box.append(button);
  }
  box.hidden = !matching;
  $('match-lead').hidden = !matching;
  $('confirm').hidden = matching;
}

async function scan(id) {
  sessionId = id;
  show('request-view');
  $('result').hidden = true;
  $('decision').hidden = true;
  $('proximity').hidden = true;
  $('request-lead').hidden = false;
  $('request-title').textContent = 'Opening the login…';
  for (const field of ['ctx-ip', 'ctx-ua', 'ctx-time', 'scan-node']) $(field).textContent = '—';
  try {
    const { data, node } = await api('POST', `/v1/login-sessions/${id}/scan`, {
      token: user.token,
      body: { qr_payload: payload },
    });
    $('request-title').textContent = 'Sign in on another device?';
    $('ctx-ip').textContent = data.browser.ip;
    showUserAgent(data.browser.user_agent);
    const created = new Date(data.browser.created_at);
    $('ctx-time').textContent = `${created.toLocaleString()} (${ago(created)})`;
    $('scan-node').textContent = node || '—';
    setStateBadge(data.session);
    // A hint, never a block: a phone on mobile data is on another network too.
    $('proximity').hidden = data.same_network !== false;
    showChoices(data.match_choices);
    $('decision').hidden = data.session.state !== 'SCANNED';
  } catch (error) {
    if (error.code === 'unauthenticated') {
      signOut();
      sessionId = null;
      route();
      showError('sign-in-error', explain(error));
      return;
    }
    $('request-title').textContent = 'Cannot open this login';
    showResult('error', explain(error));
  }
}

async function decide(action, matchCode = null) {
  const buttons = [$('confirm'), $('deny'), ...document.querySelectorAll('.match-choice')];
  for (const b of buttons) b.disabled = true;
  try {
    const body = action === 'confirm' && matchCode !== null ? { match_code: matchCode } : {};
    const { data, node } = await api('POST', `/v1/login-sessions/${sessionId}/${action}`, { token: user.token, body });
    setStateBadge(data);
    $('decision').hidden = true;
    const where = node ? ` (handled by ${node})` : '';
    $('request-lead').hidden = true;
    if (action === 'confirm') {
      $('request-title').textContent = 'Login confirmed';
      showResult('ok', `Confirmed${where}. You can return to the other device.`);
    } else {
      $('request-title').textContent = 'Login denied';
      showResult('denied', `Denied${where}. The other device was told.`);
    }
  } catch (error) {
    if (error.code === 'wrong_match') {
      $('decision').hidden = true;
      $('request-lead').hidden = true;
      $('request-title').textContent = 'Login refused';
      showResult('denied', `${explain(error)}${error.node ? ` (answered by ${error.node})` : ''}`);
      return;
    }
    showResult('error', `${explain(error)}${error.node ? ` (answered by ${error.node})` : ''}`);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  user = null;
}

/** Decides what to show from the sign-in state and the URL. */
function route() {
  if (!user) {
    show('sign-in-view');
    $('user-name').focus();
    return;
  }
  const id = sessionIdFrom(location.pathname);
  if (id && id !== sessionId) {
    payload = payloadFrom(location.href);
    scan(id);
  } else if (!id) {
    show('open-view');
    $('qr-url').focus();
  } else {
    show('request-view');
  }
}

document.querySelectorAll('.chip').forEach((chip) => {
  chip.addEventListener('click', () => {
    $('user-name').value = chip.dataset.name;
    document.querySelectorAll('.chip').forEach((c) => c.classList.toggle('selected', c === chip));
  });
});
$('sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault();
  signIn($('user-name').value);
});
$('open-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = sessionIdFrom($('qr-url').value);
  if (!id) {
    showError('open-error', 'That is not a qrlogin QR URL (…/m/<22-character id>) or session id.');
    return;
  }
  showError('open-error', '');
  payload = payloadFrom($('qr-url').value);
  const fragment = payload ? payload.slice(payload.indexOf('#')) : '';
  history.pushState(null, '', `/m/${id}${fragment}`);
  scan(id);
});
$('confirm').addEventListener('click', () => decide('confirm'));
$('deny').addEventListener('click', () => decide('deny'));
$('switch-user').addEventListener('click', () => {
  signOut();
  sessionId = null;
  route();
});
$('scan-another').addEventListener('click', () => {
  sessionId = null;
  history.pushState(null, '', '/phone.html');
  $('qr-url').value = '';
  route();
});
window.addEventListener('popstate', () => {
  sessionId = null;
  route();
});

route();
