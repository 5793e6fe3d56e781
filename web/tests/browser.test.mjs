// Browser tests of the demo pages against a running local cluster
// (deploy/local/up.sh): Debian's Chromium, driven by playwright-core, opens
// the login page through HAProxy, a second browser context plays the phone
// (signs in, opens the QR link, picks the number the login page shows), the
// login page names the account and signs in on the user's click. Once per
// transport; then a login with the standard STOMP client, @stomp/stompjs
// (the pinned npm package, unchanged, loaded into a page of the site's
// origin); then the attacks of docs/security.md (an observer who scans
// first and confirms, a wrong number, a link that asks the page to redeem
// without a click (`?autoRedeem=1`), a replaced QR code (skipped when the
// PENDING deadline is shorter than a rotation), a stolen browser secret);
// then a denied and a cancelled login,
// an expired QR code being replaced (skipped unless the PENDING deadline is
// at most 30 s), 'auto' falling back to SSE when WebSockets are refused, and
// failover: the edge holding the page's WebSocket or event stream is killed
// (deploy/local/ctl.sh) and started again, so run these against a local
// cluster only.
//
//   cd web/tests && npm ci && node browser.test.mjs [TEST...]
//   TEST: ws stomp sse longpoll poll stompjs observer wrong-match
//         auto-redeem-link replaced stolen-secret deny cancel cancel-stomp
//         expiry fallback failover-ws failover-sse
//
// QRLOGIN_BASE_URL overrides the URL (default: the running cluster's public
// URL from deploy/local/run/cluster.env, else http://127.0.0.1:8080).
// Screenshots go to artifacts/screenshots/. The last line is
// "N passed, N failed" (", N skipped" when some were); the exit status is 1
// when a test failed.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const shots = path.join(root, 'artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TRANSPORT_LABEL = {
  ws: 'WebSocket',
  stomp: 'STOMP over WebSocket',
  sse: 'Server-Sent Events',
  longpoll: 'long polling',
  poll: 'short polling',
};
const STOMPJS_BUNDLE = path.join(here, 'node_modules/@stomp/stompjs/bundles/stomp.umd.js');

function baseUrl() {
  if (process.env.QRLOGIN_BASE_URL) return process.env.QRLOGIN_BASE_URL.replace(/\/$/, '');
  const envFile = path.join(root, 'deploy/local/run/cluster.env');
  if (existsSync(envFile)) {
    const match = readFileSync(envFile, 'utf8').match(/^QRLOGIN_LOCAL_PUBLIC_URL=(\S+)$/m);
    if (match) return match[1].replace(/^'|'$/g, '').replace(/\/$/, '');
  }
  return 'http://127.0.0.1:8080';
}

const BASE = baseUrl();

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Opens the login page with a transport preset; returns the page and the phone link. */
async function openLogin(browser, transport, errors, { blockWebSocket = false, query = '' } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  if (blockWebSocket) {
    // A network that refuses WebSocket upgrades: every socket fails before it opens.
    await context.addInitScript(() => {
      class RefusedWebSocket extends EventTarget {
        constructor() {
          super();
          this.readyState = 0;
          setTimeout(() => {
            this.readyState = 3;
            if (this.onerror) this.onerror(new Event('error'));
            if (this.onclose) this.onclose({ code: 1006, reason: '' });
          }, 50);
        }
        send() {}
        close() {}
      }
      Object.assign(RefusedWebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
      window.WebSocket = RefusedWebSocket;
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`login page: ${err.message}`));
  await page.goto(`${BASE}/?transport=${transport}${query}`);
  const link = page.locator('#phone-link');
  await link.waitFor({ state: 'visible', timeout: 10000 });
  const href = await link.getAttribute('href');
  assert(/\/m\/[A-Za-z0-9_-]{22}#\d+\.[A-Za-z0-9_-]{16}$/.test(href), `phone link ${href} is not <base>/m/<id>#<epoch>.<tag>`);
  assert(await page.locator('#qr').isVisible(), 'QR code image is not visible');
  const sessionId = (await page.locator('#session-id').textContent()).trim();
  assert(href.includes(`/m/${sessionId}#`), `phone link ${href} does not name session ${sessionId}`);
  const bound = (await page.locator('#key-bound').textContent()).trim();
  assert(bound === 'bound to this page', `the login is not key-bound ("${bound}")`);
  await page.locator('#state[data-state="PENDING"]').waitFor({ timeout: 5000 });
  // Every transport names the edge serving it once its first answer arrives.
  await page.waitForFunction(() => /^edge-\d$/.test(document.getElementById('held-node').textContent), null, {
    timeout: 10000,
  });
  return { context, page, href, sessionId };
}

/** The phone: signs in as `name`, opens the QR link, and returns the page on the request view. */
async function openPhone(browser, href, name, errors) {
  const context = await browser.newContext({ viewport: { width: 420, height: 860 }, isMobile: true });
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`phone page: ${err.message}`));
  await page.goto(href);
  await page.locator('#user-name').fill(name);
  await page.locator('#sign-in').click();
  await page.locator('#match-choices .match-choice').first().waitFor({ state: 'visible', timeout: 10000 });
  const choices = await page.locator('#match-choices .match-choice').count();
  assert(choices === 3, `phone offers ${choices} numbers, expected 3`);
  assert(!(await page.locator('#confirm').isVisible()), 'a plain Confirm is offered beside the numbers');
  const ip = (await page.locator('#ctx-ip').textContent()).trim();
  assert(/^(\d{1,3}\.){3}\d{1,3}$|:/.test(ip), `phone shows "${ip}" as the browser's IP`);
  const ua = await page.locator('#ctx-ua').textContent();
  assert(/Chrome/.test(ua), `phone shows "${ua}" as the browser`);
  assert(/^edge-\d$/.test((await page.locator('#scan-node').textContent()).trim()), 'phone does not name the scanning node');
  return { context, page };
}

/** The number the login page shows after the scan. */
async function shownNumber(login) {
  await login.page.locator('#match').waitFor({ state: 'visible', timeout: 10000 });
  const code = (await login.page.locator('#match-code').textContent()).trim();
  assert(/^\d{2}$/.test(code), `login page shows "${code}" as the number to pick`);
  return code;
}

/** The phone picks `code` (the number on the login page, or another). */
async function pick(phone, code) {
  await phone.page.locator(`#match-choices .match-choice[data-code="${code}"]`).click();
}

/** What auth shows for the demo user `name`: the name and the account
 * (preferred_username, the demo phone's user id), never the name alone. */
const shownAs = (name) => `${name} (${name.toLowerCase()})`;

/** The login page names `name`'s account as the confirming one; the user clicks Continue. */
async function continueAs(login, name) {
  await login.page.locator('#confirm-box').waitFor({ state: 'visible', timeout: 15000 });
  const named = (await login.page.locator('#confirming-name').textContent()).trim();
  assert(named === shownAs(name), `login page names "${named}" as the confirming account, expected ${shownAs(name)}`);
  await login.page.locator('#continue').click();
}

async function loginFlow(browser, transport) {
  const errors = [];
  const name = { ws: 'Alice', stomp: 'Ivan', sse: 'Bob', longpoll: 'Carol', poll: 'Dave' }[transport];
  const login = await openLogin(browser, transport, errors);
  await login.page.screenshot({ path: path.join(shots, `login-${transport}-qr.png`) });
  const phone = await openPhone(browser, login.href, name, errors);
  await login.page.locator('#state[data-state="SCANNED"]').waitFor({ timeout: 10000 });
  const code = await shownNumber(login);
  // The number-matching step on both screens.
  await login.page.screenshot({ path: path.join(shots, `login-${transport}-match.png`) });
  await phone.page.screenshot({ path: path.join(shots, `phone-${transport}-match.png`) });
  await pick(phone, code);
  await phone.page.locator('#result[data-kind="ok"]').waitFor({ timeout: 10000 });
  await phone.page.screenshot({ path: path.join(shots, `phone-${transport}-confirmed.png`) });
  await continueAs(login, name);

  const signedIn = login.page.locator('#signed-in-name');
  await signedIn.waitFor({ state: 'visible', timeout: 15000 });
  const shown = (await signedIn.textContent()).trim();
  assert(shown === shownAs(name), `login page shows "${shown}", expected ${shownAs(name)}`);
  const over = (await login.page.locator('#signed-in-transport').textContent()).trim();
  assert(over === TRANSPORT_LABEL[transport], `delivered over "${over}", expected ${TRANSPORT_LABEL[transport]}`);
  const timeline = await login.page.locator('#timeline').textContent();
  assert(timeline.includes(`Confirmed by ${name}`), 'timeline lacks the confirmation');
  await login.page.screenshot({ path: path.join(shots, `login-${transport}-signed-in.png`) });
  assert(errors.length === 0, errors.join('; '));
  await login.context.close();
  await phone.context.close();
  return `${name} signed in over ${over}`;
}

/** A phone signed in as `name` on `href`, whatever the scan answers. */
async function phoneAt(browser, href, name, errors) {
  const context = await browser.newContext({ viewport: { width: 420, height: 860 }, isMobile: true });
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`phone page: ${err.message}`));
  await page.goto(href);
  await page.locator('#user-name').fill(name);
  await page.locator('#sign-in').click();
  return { context, page };
}

/**
 * An observer who saw the QR code (and the number: the worst case) scans
 * first and confirms with their own account. The login page must not sign
 * its user in: it names the observer's account and waits for a click, and
 * "Not you? Start over" replaces the login in one click. No redeem request
 * is ever sent.
 */
async function observerFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  const redeems = [];
  login.page.on('request', (r) => {
    if (r.url().includes('/redeem')) redeems.push(r.url());
  });
  const mallory = await openPhone(browser, login.href, 'Mallory', errors);
  const code = await shownNumber(login);
  const early = await login.page.locator('#login-view').textContent();
  assert(!early.includes('Mallory'), 'the login page named the scanner before any confirm');
  await pick(mallory, code);
  await mallory.page.locator('#result[data-kind="ok"]').waitFor({ timeout: 10000 });
  await login.page.locator('#confirm-box').waitFor({ state: 'visible', timeout: 15000 });
  const named = (await login.page.locator('#confirming-name').textContent()).trim();
  assert(named === shownAs('Mallory'), `login page names "${named}", expected ${shownAs('Mallory')}`);
  assert((await login.page.locator('#continue').textContent()).includes('Continue as Mallory'), 'no "Continue as Mallory"');
  assert(!(await login.page.locator('#signed-in-view').isVisible()), 'signed in without a click');
  assert(redeems.length === 0, `the page redeemed by itself: ${redeems.join(', ')}`);
  await login.page.screenshot({ path: path.join(shots, 'attack-observer-confirmed.png') });
  await login.page.locator('#not-you').click();
  await login.page.waitForFunction(
    (old) => {
      const id = document.getElementById('session-id').textContent.trim();
      return id !== old && /^[A-Za-z0-9_-]{22}$/.test(id);
    },
    login.sessionId,
    { timeout: 10000 },
  );
  await login.page.locator('#state[data-state="PENDING"]').waitFor({ timeout: 10000 });
  assert(await login.page.locator('#qr').isVisible(), 'no fresh QR code after "Not you? Start over"');
  assert(redeems.length === 0, `a redeem was sent: ${redeems.join(', ')}`);
  const timeline = await login.page.locator('#timeline').textContent();
  assert(timeline.includes('Cancelled: not you'), 'the old login was not cancelled');
  await login.page.screenshot({ path: path.join(shots, 'attack-observer-start-over.png') });
  assert(errors.length === 0, errors.join('; '));
  await mallory.context.close();
  await login.context.close();
  return 'Mallory confirmed first: the page named her, sent no redeem, and "Not you? Start over" showed a fresh code';
}

/**
 * A link to the login page with `?autoRedeem=1` (which once skipped the
 * click) sent to a victim: the page must still ask before redeeming. The
 * check is made as the "Continue as" box (or the signed-in view) appears:
 * a page that redeems by itself has disabled the button by then, in the
 * same task.
 */
async function autoRedeemLinkFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'ws', errors, { query: '&autoRedeem=1' });
  const redeems = [];
  login.page.on('request', (r) => {
    if (r.url().includes('/redeem')) redeems.push(r.url());
  });
  const phone = await openPhone(browser, login.href, 'Oscar', errors);
  await pick(phone, await shownNumber(login));
  await phone.page.locator('#result[data-kind="ok"]').waitFor({ timeout: 10000 });
  // Whichever comes first: the question, or (a page that does not ask) the signed-in view.
  await login.page.locator('#confirm-box:visible, #signed-in-view:visible').first().waitFor({ timeout: 15000 });
  assert(!(await login.page.locator('#signed-in-view').isVisible()), 'signed in without a click');
  assert(await login.page.locator('#continue').isEnabled(), 'the page started redeeming without a click');
  assert(redeems.length === 0, `the page redeemed by itself: ${redeems.join(', ')}`);
  await continueAs(login, 'Oscar');
  await login.page.locator('#signed-in-name').waitFor({ state: 'visible', timeout: 15000 });
  assert(redeems.length === 1, `${redeems.length} redeem requests for one click`);
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await login.context.close();
  return '?autoRedeem=1 is ignored: the page asked "Continue as Oscar" and redeemed on the click';
}

/** A relayed QR code: the phone's user sees no number of their own and picks a wrong one. */
async function wrongMatchFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  const phone = await openPhone(browser, login.href, 'Ivan', errors);
  const code = await shownNumber(login);
  const choices = await phone.page.locator('#match-choices .match-choice').evaluateAll((bs) => bs.map((b) => b.dataset.code));
  const wrong = choices.find((c) => c !== code);
  assert(choices.includes(code) && wrong, `phone offers ${choices} for ${code}`);
  await pick(phone, wrong);
  await phone.page.locator('#result[data-kind="denied"]').waitFor({ timeout: 10000 });
  await login.page.locator('#state[data-state="DENIED"]').waitFor({ timeout: 10000 });
  const hint = await login.page.locator('#hint').textContent();
  assert(hint.includes('not the one shown here'), `login page hint after a wrong number: "${hint}"`);
  assert(!(await login.page.locator('#signed-in-view').isVisible()), 'signed in after a wrong number');
  await login.page.screenshot({ path: path.join(shots, 'attack-wrong-match-login.png') });
  await phone.page.screenshot({ path: path.join(shots, 'attack-wrong-match-phone.png') });
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await login.context.close();
  return `picked ${wrong} instead of ${code}: DENIED on both pages`;
}

/**
 * A photo of an old QR code: the login page replaces the code every
 * QRLOGIN_QR_ROTATION (25 s by default); once the grace (3 s) after the
 * change is over, the old link fails with "replaced" and the new one scans.
 */
async function replacedFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  // The code is replaced every QRLOGIN_QR_ROTATION (20–30 s): a cluster
  // whose PENDING deadline comes first (e2e.sh --start: 15 s) never shows a
  // second code, and the test is reported as skipped there.
  const ttl = await login.page.evaluate(() => {
    const m = document.getElementById('countdown').textContent.match(/(\d+):(\d+)/);
    return m ? Number(m[1]) * 60 + Number(m[2]) : null;
  });
  if (ttl === null || ttl < 40) {
    await login.context.close();
    return { skip: `PENDING deadline is ${ttl}s, shorter than a QR rotation; run against a cluster with the default deadline` };
  }
  const first = await login.page.locator('#qr').getAttribute('data-epoch');
  await login.page.waitForFunction(
    (old) => document.getElementById('qr').dataset.epoch !== old,
    first,
    { timeout: 35000 },
  );
  const href = await login.page.locator('#phone-link').getAttribute('href');
  assert(href !== login.href && href.includes(`/m/${login.sessionId}#`), `phone link after the rotation: ${href}`);
  await login.page.waitForFunction(() => document.getElementById('qr').naturalWidth > 0, null, { timeout: 10000 });
  // The previous code stays good for QRLOGIN_QR_GRACE (3 s) after the change.
  await login.page.waitForTimeout(3500);
  const old = await phoneAt(browser, login.href, 'Judy', errors);
  await old.page.locator('#result[data-kind="error"]').waitFor({ timeout: 10000 });
  const said = await old.page.locator('#result').textContent();
  assert(said.includes('replaced by a newer one'), `the old code's scan said "${said}"`);
  await old.page.screenshot({ path: path.join(shots, 'attack-replaced-phone.png') });
  await old.context.close();
  const phone = await openPhone(browser, href, 'Judy', errors);
  await pick(phone, await shownNumber(login));
  await continueAs(login, 'Judy');
  await login.page.locator('#signed-in-name').waitFor({ state: 'visible', timeout: 15000 });
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await login.context.close();
  return `code ${first} replaced by ${href.split('#')[1].split('.')[0]}: the old one was refused, the new one signed Judy in`;
}

/** The browser secret (its cookie) without the page's key cannot redeem. */
async function stolenSecretFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  const phone = await openPhone(browser, login.href, 'Karl', errors);
  await pick(phone, await shownNumber(login));
  await login.page.locator('#confirm-box').waitFor({ state: 'visible', timeout: 15000 });
  const cookies = await login.context.cookies();
  const secret = cookies.find((c) => c.name.endsWith(`qrl_bs_${login.sessionId}`));
  assert(secret && secret.httpOnly, 'no HttpOnly secret cookie for the session');
  const stolen = await fetch(`${BASE}/v1/login-sessions/${login.sessionId}/redeem`, {
    method: 'POST',
    headers: { Cookie: `${secret.name}=${secret.value}`, 'Content-Type': 'application/json' },
    body: '{}',
  });
  const body = await stolen.json();
  assert(stolen.status === 401 && body.error.code === 'proof_required', `the stolen secret redeemed: HTTP ${stolen.status} ${JSON.stringify(body)}`);
  await continueAs(login, 'Karl');
  await login.page.locator('#signed-in-name').waitFor({ state: 'visible', timeout: 15000 });
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await login.context.close();
  return 'the secret cookie alone: 401 proof_required; the page (with its key) signed Karl in';
}

/**
 * @stomp/stompjs as any site would use it, against the edge's STOMP
 * endpoint through HAProxy: a page of the site's origin creates a session
 * (the secret cookie is set), stompjs connects to
 * /v1/login-sessions/<id>/stomp and subscribes to the session's topic, the
 * phone confirms, the MESSAGE arrives; deactivate() sends DISCONNECT with a
 * receipt and stompjs reports the RECEIPT; the page redeems. A second
 * session is cancelled with a SEND from stompjs.
 */
async function stompjsFlow(browser) {
  const errors = [];
  // The site's pages forbid inline scripts (Content-Security-Policy
  // script-src 'self'), and the unmodified stompjs bundle is injected
  // inline: this test checks the STOMP endpoint, not the demo's policy.
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  page.on('pageerror', (err) => errors.push(`stompjs page: ${err.message}`));
  // A document of the site's origin (its cookies and Origin; a page the
  // test made up would not be allowed to reach a loopback address), without
  // the demo's own scripts: the style sheet.
  await page.goto(`${BASE}/style.css`);
  await page.addScriptTag({ path: STOMPJS_BUNDLE });
  const start = () =>
    page.evaluate(async () => {
      const r = await fetch('/v1/login-sessions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      const created = await r.json();
      const id = created.session_id;
      const url = new URL(`/v1/login-sessions/${id}/stomp`, location.href);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      const seen = { id, qr: created.qr_payload, states: [], bodies: [], headers: [], connected: null, receipt: null, errors: [] };
      window.seen = seen;
      const client = new StompJs.Client({ brokerURL: url.href, reconnectDelay: 0 });
      window.client = client;
      client.onConnect = (frame) => {
        seen.connected = frame.headers;
        client.subscribe(`/topic/login-sessions.${id}`, (message) => {
          seen.headers.push(message.headers);
          const body = JSON.parse(message.body);
          seen.bodies.push(body);
          seen.states.push(body.state);
        });
      };
      client.onDisconnect = (frame) => {
        seen.receipt = frame.headers['receipt-id'] ?? null;
      };
      client.onStompError = (frame) => seen.errors.push(frame.headers.message);
      client.activate();
      return { id, qr: created.qr_payload };
    });
  const waitState = (state) =>
    page.waitForFunction((s) => window.seen.states.includes(s), state, { timeout: 15000 });

  const login = await start();
  await waitState('PENDING');
  const connected = await page.evaluate(() => window.seen.connected);
  assert(connected.version === '1.2', `CONNECTED version ${connected.version}`);
  assert(/^\d+,\d+$/.test(connected['heart-beat']), `CONNECTED heart-beat ${connected['heart-beat']}`);
  const phone = await openPhone(browser, login.qr, 'Judy', errors);
  await waitState('SCANNED');
  // The number to pick arrives in the SCANNED MESSAGE (only the browser
  // side ever sees it).
  const code = await page.evaluate(() => window.seen.bodies.find((b) => b.state === 'SCANNED').match_code);
  assert(Number.isInteger(code), `SCANNED MESSAGE without a match code: ${code}`);
  await pick(phone, code);
  await waitState('CONFIRMED');
  const headers = await page.evaluate(() => window.seen.headers.at(-1));
  assert(headers['content-type'] === 'application/json', `content-type ${headers['content-type']}`);
  assert(headers.destination === `/topic/login-sessions.${login.id}`, `destination ${headers.destination}`);
  assert(headers.subscription && headers['message-id'], 'MESSAGE without subscription or message-id');
  await page.evaluate(() => window.client.deactivate());
  await page.waitForFunction(() => window.seen.receipt !== null, null, { timeout: 10000 });
  const receipt = await page.evaluate(() => window.seen.receipt);
  const redeemed = await page.evaluate(async (id) => {
    const r = await fetch(`/v1/login-sessions/${id}/redeem`, { method: 'POST' });
    return { status: r.status, body: await r.json() };
  }, login.id);
  assert(redeemed.status === 200 && redeemed.body.user.display_name === shownAs('Judy'), `redeem: ${JSON.stringify(redeemed)}`);

  // Cancel with a SEND from stompjs; the CANCELLED MESSAGE follows.
  const second = await start();
  await waitState('PENDING');
  await page.evaluate((id) => {
    window.client.publish({ destination: `/app/login-sessions.${id}.cancel` });
  }, second.id);
  await waitState('CANCELLED');
  const stompErrors = await page.evaluate(() => window.seen.errors);
  assert(stompErrors.length === 0, `STOMP ERROR frames: ${stompErrors.join(', ')}`);
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await context.close();
  return `stompjs ${connected.version} (heart-beat ${connected['heart-beat']}): Judy confirmed, MESSAGE CONFIRMED, DISCONNECT answered by RECEIPT ${receipt}, redeemed; a SEND cancelled another session`;
}

async function denyFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  const phone = await openPhone(browser, login.href, 'Erin', errors);
  await phone.page.locator('#deny').click();
  await phone.page.locator('#result[data-kind="denied"]').waitFor({ timeout: 10000 });
  await login.page.locator('#state[data-state="DENIED"]').waitFor({ timeout: 10000 });
  assert(await login.page.locator('#restart').isVisible(), 'no "New QR code" button after a denial');
  assert(!(await login.page.locator('#signed-in-view').isVisible()), 'signed in after a denial');
  const over = (await login.page.locator('#transport-now').textContent()).trim();
  await login.page.screenshot({ path: path.join(shots, 'login-auto-denied.png') });
  assert(errors.length === 0, errors.join('; '));
  await login.context.close();
  await phone.context.close();
  return `denial shown on the login page (auto picked ${over})`;
}

/** Cancel on the login page (over the open WebSocket, or STOMP SEND) ends the login. */
async function cancelFlow(browser, transport = 'ws') {
  const errors = [];
  const login = await openLogin(browser, transport, errors);
  await login.page.locator('#cancel').click();
  await login.page.locator('#state[data-state="CANCELLED"]').waitFor({ timeout: 10000 });
  assert(await login.page.locator('#restart').isVisible(), 'no "New QR code" button after cancelling');
  const first = (await login.page.locator('#session-id').textContent()).trim();
  await login.page.locator('#restart').click();
  await login.page.locator('#state[data-state="PENDING"]').waitFor({ timeout: 10000 });
  const second = (await login.page.locator('#session-id').textContent()).trim();
  assert(second !== first, '"New QR code" kept the cancelled session');
  assert(errors.length === 0, errors.join('; '));
  await login.context.close();
  const over = transport === 'ws' ? 'the WebSocket' : 'a STOMP SEND';
  return `cancelled over ${over}; "New QR code" started a fresh session`;
}

/**
 * An expired QR code is replaced by a fresh session. Needs a short PENDING
 * deadline (e2e.sh --start and up.sh with QRLOGIN_PENDING_TTL=15s); with a
 * longer one the test is reported as skipped.
 */
async function expiryFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors);
  const first = (await login.page.locator('#session-id').textContent()).trim();
  const ttl = await login.page.evaluate(() => {
    const m = document.getElementById('countdown').textContent.match(/(\d+):(\d+)/);
    return m ? Number(m[1]) * 60 + Number(m[2]) : null;
  });
  if (ttl === null || ttl > 30) {
    await login.context.close();
    return { skip: `PENDING deadline is ${ttl}s; start the cluster with QRLOGIN_PENDING_TTL=15s` };
  }
  await login.page.waitForFunction(
    (old) => {
      const id = document.getElementById('session-id').textContent.trim();
      return id !== old && /^[A-Za-z0-9_-]{22}$/.test(id) && !document.getElementById('qr').hidden;
    },
    first,
    { timeout: (ttl + 10) * 1000 },
  );
  const timeline = await login.page.locator('#timeline').textContent();
  assert(timeline.includes('EXPIRED'), 'timeline does not show EXPIRED');
  assert(timeline.includes('The QR code expired; creating a fresh one'), 'timeline does not show the renewal');
  await login.page.locator('#state[data-state="PENDING"]').waitFor({ timeout: 5000 });
  await login.page.screenshot({ path: path.join(shots, 'login-auto-renewed.png') });
  assert(errors.length === 0, errors.join('; '));
  await login.context.close();
  return `the ${ttl}s QR code expired and a fresh session replaced it`;
}

/** With WebSockets refused, 'auto' must fall back to SSE and still sign in. */
async function fallbackFlow(browser) {
  const errors = [];
  const login = await openLogin(browser, 'auto', errors, { blockWebSocket: true });
  const now = (await login.page.locator('#transport-now').textContent()).trim();
  assert(now === 'Server-Sent Events', `auto settled on "${now}", expected Server-Sent Events`);
  const timeline = await login.page.locator('#timeline').textContent();
  assert(timeline.includes('Falling back to Server-Sent Events'), 'timeline does not show the fallback');
  const phone = await openPhone(browser, login.href, 'Heidi', errors);
  await pick(phone, await shownNumber(login));
  await continueAs(login, 'Heidi');
  await login.page.locator('#signed-in-name').waitFor({ state: 'visible', timeout: 15000 });
  const shown = (await login.page.locator('#signed-in-name').textContent()).trim();
  assert(shown === shownAs('Heidi'), `login page shows "${shown}", expected ${shownAs('Heidi')}`);
  await login.page.screenshot({ path: path.join(shots, 'login-auto-fallback.png') });
  assert(errors.length === 0, errors.join('; '));
  await phone.context.close();
  await login.context.close();
  return 'WebSocket refused twice, auto fell back to SSE, Heidi signed in';
}

/**
 * Kills (SIGKILL) the edge that holds the login page's WebSocket or event
 * stream, confirms on the phone meanwhile, and expects the page to resume on
 * the other edge and sign in. The killed edge is started again afterwards.
 */
async function failoverFlow(browser, transport) {
  const errors = [];
  const name = transport === 'ws' ? 'Frank' : 'Grace';
  const login = await openLogin(browser, transport, errors);
  const held = login.page.locator('#held-node');
  const victim = (await held.textContent()).trim();
  const ctl = path.join(root, 'deploy/local/ctl.sh');
  execFileSync(ctl, ['kill', victim], { stdio: 'ignore' });
  try {
    const phone = await openPhone(browser, login.href, name, errors);
    await pick(phone, await shownNumber(login));
    await phone.page.locator('#result[data-kind="ok"]').waitFor({ timeout: 10000 });
    await continueAs(login, name);
    await login.page.locator('#signed-in-name').waitFor({ state: 'visible', timeout: 20000 });
    const shown = (await login.page.locator('#signed-in-name').textContent()).trim();
    assert(shown === shownAs(name), `login page shows "${shown}", expected ${shownAs(name)}`);
    const now = (await held.textContent()).trim();
    assert(now !== victim && /^edge-\d$/.test(now), `after killing ${victim} the page is served by "${now}"`);
    await login.page.screenshot({ path: path.join(shots, `login-${transport}-failover.png`) });
    assert(errors.length === 0, errors.join('; '));
    await phone.context.close();
    await login.context.close();
    return `killed ${victim} under the ${TRANSPORT_LABEL[transport]} watcher; resumed on ${now}; ${name} signed in`;
  } finally {
    execFileSync(ctl, ['start', victim], { stdio: 'ignore' });
  }
}

const TESTS = {
  ws: (b) => loginFlow(b, 'ws'),
  stomp: (b) => loginFlow(b, 'stomp'),
  sse: (b) => loginFlow(b, 'sse'),
  longpoll: (b) => loginFlow(b, 'longpoll'),
  poll: (b) => loginFlow(b, 'poll'),
  stompjs: stompjsFlow,
  observer: observerFlow,
  'wrong-match': wrongMatchFlow,
  'auto-redeem-link': autoRedeemLinkFlow,
  replaced: replacedFlow,
  'stolen-secret': stolenSecretFlow,
  deny: denyFlow,
  cancel: (b) => cancelFlow(b, 'ws'),
  'cancel-stomp': (b) => cancelFlow(b, 'stomp'),
  fallback: fallbackFlow,
  expiry: expiryFlow,
  'failover-ws': (b) => failoverFlow(b, 'ws'),
  'failover-sse': (b) => failoverFlow(b, 'sse'),
};

async function main() {
  const wanted = process.argv.slice(2);
  for (const name of wanted) {
    if (!TESTS[name]) {
      console.error(`unknown test "${name}" (${Object.keys(TESTS).join(', ')})`);
      process.exit(2);
    }
  }
  const names = wanted.length ? wanted : Object.keys(TESTS);
  mkdirSync(shots, { recursive: true });
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  } catch (err) {
    console.error(`cannot start ${CHROMIUM}: ${err.message}`);
    console.log(`0 passed, ${names.length} failed`);
    process.exit(1);
  }
  try {
    // The demo page through the balancer: some edge is up and serving.
    // (Readiness itself is on the edges' operations ports.)
    const ready = await fetch(`${BASE}/`).catch(() => null);
    if (!ready || !ready.ok) {
      console.error(`${BASE} is not ready; start the cluster with deploy/local/up.sh`);
      console.log(`0 passed, ${names.length} failed`);
      process.exit(1);
    }
    for (const name of names) {
      const started = Date.now();
      try {
        const detail = await TESTS[name](browser);
        if (detail && detail.skip) {
          console.log(`skip - ${name}: ${detail.skip}`);
          skipped += 1;
        } else {
          console.log(`ok - ${name}: ${detail} (${Date.now() - started} ms)`);
          passed += 1;
        }
      } catch (err) {
        console.log(`FAIL - ${name}: ${err.message.split('\n')[0]}`);
        failed += 1;
      }
    }
  } finally {
    await browser.close();
  }
  console.log(`screenshots: ${shots}`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(failed ? 1 : 0);
}

main();
