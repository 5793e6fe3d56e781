#!/usr/bin/env node
// A command-line watcher of one login session, used by e2e.sh: a real
// WebSocket client (the `ws` package pinned in web/tests/package-lock.json),
// the standard STOMP client (@stomp/stompjs, pinned there too, unchanged,
// over that WebSocket) or an SSE client (Node's fetch), as a non-browser
// client of the edge API (browser secret in the Authorization header).
//
//   node deploy/local/watch.mjs --base=http://127.0.0.1:8080 --session=ID
//        --secret=SECRET --transport=ws|stomp|sse [--want-node=edge-1]
//        [--until=CONFIRMED] [--reconnect] [--timeout=30]
//
// (Use the --name=value form: ids and secrets may start with "-".)
//
// Prints one JSON line per happening on stdout:
//   {"event":"open","node":"edge-1","attempt":1}
//   {"event":"state","state":"SCANNED","version":7,"node":"edge-1","at":1764450000123.456}
// ("at": when the message was read, milliseconds since the epoch)
//   {"event":"drop","reason":"..."}   {"event":"retry","reason":"..."}
//   {"event":"done","state":"CONFIRMED"}
// --want-node: re-open the connection through the balancer until the edge
// that answers (X-Edge-Node) is this one (at most 12 tries).
// --reconnect: after a drop, connect again through --base and resume from the
// newest version (WebSocket ?since=, STOMP since header, SSE Last-Event-ID).
// Exit status: 0 when --until (or, without it, any final state) was reached,
// 1 on another final state or timeout, 2 on bad usage, 3 on a drop without
// --reconnect.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const requireFromTests = createRequire(path.join(here, '../../web/tests/package.json'));

const FINAL = new Set(['REDEEMED', 'DENIED', 'CANCELLED', 'EXPIRED']);
const MAX_NODE_TRIES = 12;

function usage(message) {
  process.stderr.write(`watch.mjs: ${message}\n`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    options: {
      base: { type: 'string' },
      session: { type: 'string' },
      secret: { type: 'string' },
      transport: { type: 'string', default: 'ws' },
      'want-node': { type: 'string' },
      until: { type: 'string' },
      reconnect: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '30' },
    },
  }).values;
} catch (err) {
  usage(err.message);
}
if (!args.base || !args.session || !args.secret) usage('--base, --session and --secret are required');
if (!['ws', 'stomp', 'sse'].includes(args.transport)) usage('--transport is ws, stomp or sse');
const timeoutMs = Number(args.timeout) * 1000;
if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage('--timeout is a number of seconds');

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
let last = null; // newest snapshot
let attempts = 0;
let finished = false;

function finish(code, state) {
  if (finished) return;
  finished = true;
  out({ event: 'done', state: state ?? (last && last.state) ?? null });
  process.exit(code);
}

setTimeout(() => {
  out({ event: 'timeout' });
  finish(1);
}, timeoutMs).unref();

/** Handles one snapshot; true when watching is over. */
function onSnapshot(snapshot) {
  const isNew =
    !last || snapshot.version > last.version || (FINAL.has(snapshot.state) && !FINAL.has(last.state));
  if (!isNew) return false;
  last = snapshot;
  const at = Number((performance.timeOrigin + performance.now()).toFixed(3));
  out({ event: 'state', state: snapshot.state, version: snapshot.version, node: snapshot.node, at });
  if (args.until && snapshot.state === args.until) {
    finish(0, snapshot.state);
    return true;
  }
  if (FINAL.has(snapshot.state)) {
    finish(args.until ? 1 : 0, snapshot.state);
    return true;
  }
  return false;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** After a drop: stop (exit 3) or come back after the given delay. */
async function dropped(reason, delayMs) {
  out({ event: 'drop', reason });
  if (!args.reconnect) finish(3);
  await sleep(delayMs);
  connect();
}

function wrongNode(node) {
  return args['want-node'] && node !== args['want-node'] && attempts < MAX_NODE_TRIES && !last;
}

function connectWebSocket() {
  const WebSocket = requireFromTests('ws');
  const url = new URL(`/v1/login-sessions/${args.session}/ws`, args.base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  if (last) url.searchParams.set('since', String(last.version));
  const ws = new WebSocket(url, {
    headers: { Authorization: `Bearer ${args.secret}` },
    origin: new URL(args.base).origin,
    handshakeTimeout: 5000,
  });
  let node = null;
  let settled = false;
  const again = (reason, delayMs) => {
    if (settled || finished) return;
    settled = true;
    dropped(reason, delayMs);
  };
  ws.on('upgrade', (response) => {
    node = response.headers['x-edge-node'] ?? null;
    if (wrongNode(node)) {
      out({ event: 'retry', reason: `landed on ${node}, want ${args['want-node']}` });
      settled = true;
      ws.terminate();
      connect();
      return;
    }
    out({ event: 'open', node, attempt: attempts });
  });
  ws.on('unexpected-response', (_request, response) => {
    again(`upgrade refused: HTTP ${response.statusCode} from ${response.headers['x-edge-node'] ?? '?'}`, 500);
  });
  ws.on('message', (data) => {
    let message;
    try {
      message = JSON.parse(String(data));
    } catch {
      return;
    }
    if (message.type === 'state') onSnapshot(message.session);
    if (message.type === 'error') out({ event: 'error', error: message.error });
  });
  ws.on('close', (code, reason) => {
    const delay = code === 1012 ? 300 + Math.random() * 700 : 500;
    again(`closed ${code} ${String(reason)}`.trim(), delay);
  });
  ws.on('error', (err) => again(`error ${err.message}`, 500));
}

async function connectEventSource() {
  const url = new URL(`/v1/login-sessions/${args.session}/events`, args.base);
  const headers = { Authorization: `Bearer ${args.secret}`, Accept: 'text/event-stream' };
  if (last) headers['Last-Event-ID'] = String(last.version);
  const controller = new AbortController();
  let retryMs = 500;
  let response;
  try {
    response = await fetch(url, { headers, signal: controller.signal });
  } catch (err) {
    return dropped(`connect failed: ${err.cause?.code ?? err.message}`, retryMs);
  }
  const node = response.headers.get('x-edge-node');
  if (response.status !== 200) {
    controller.abort();
    return dropped(`HTTP ${response.status} from ${node ?? '?'}`, retryMs);
  }
  if (wrongNode(node)) {
    out({ event: 'retry', reason: `landed on ${node}, want ${args['want-node']}` });
    controller.abort();
    return connect();
  }
  out({ event: 'open', node, attempt: attempts });
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('retry:')) retryMs = Number(line.slice(6).trim()) || retryMs;
          if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
        }
        if (data && onSnapshot(JSON.parse(data))) return;
      }
    }
  } catch (err) {
    return dropped(`stream failed: ${err.cause?.code ?? err.message}`, retryMs);
  }
  return dropped('stream ended', retryMs);
}

/**
 * STOMP with @stomp/stompjs as any application would use it: CONNECT,
 * SUBSCRIBE to the session's topic (with `since` once a snapshot is held),
 * a MESSAGE per snapshot; the ERROR a draining node sends carries
 * retry-after-ms. Reconnects are this script's (stompjs's own are off).
 */
function connectStomp() {
  const WebSocket = requireFromTests('ws');
  const { Client } = requireFromTests('@stomp/stompjs');
  const url = new URL(`/v1/login-sessions/${args.session}/stomp`, args.base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  let node = null;
  let settled = false;
  let retryMs = 500;
  const client = new Client({
    reconnectDelay: 0,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    webSocketFactory: () => {
      const ws = new WebSocket(url, ['v12.stomp', 'v11.stomp'], {
        headers: { Authorization: `Bearer ${args.secret}` },
        origin: new URL(args.base).origin,
        handshakeTimeout: 5000,
      });
      ws.on('upgrade', (response) => {
        node = response.headers['x-edge-node'] ?? null;
      });
      ws.on('unexpected-response', (_request, response) => {
        again(`upgrade refused: HTTP ${response.statusCode} from ${response.headers['x-edge-node'] ?? '?'}`, 500);
      });
      return ws;
    },
  });
  const again = (reason, delayMs) => {
    if (settled || finished) return;
    settled = true;
    client.deactivate();
    dropped(reason, delayMs);
  };
  client.onConnect = () => {
    if (wrongNode(node)) {
      out({ event: 'retry', reason: `landed on ${node}, want ${args['want-node']}` });
      settled = true;
      client.deactivate().then(connect);
      return;
    }
    out({ event: 'open', node, attempt: attempts });
    const headers = last ? { since: String(last.version) } : {};
    client.subscribe(
      `/topic/login-sessions.${args.session}`,
      (message) => {
        let snapshot;
        try {
          snapshot = JSON.parse(message.body);
        } catch {
          return;
        }
        if (onSnapshot(snapshot)) client.deactivate();
      },
      headers,
    );
  };
  client.onStompError = (frame) => {
    const hint = Number(frame.headers['retry-after-ms']);
    if (hint > 0) retryMs = hint;
    out({ event: 'error', error: { message: frame.headers.message, body: frame.body } });
  };
  client.onWebSocketClose = (event) => again(`closed ${event.code} ${event.reason ?? ''}`.trim(), retryMs);
  client.activate();
}

function connect() {
  if (finished) return;
  attempts += 1;
  if (args.transport === 'ws') connectWebSocket();
  else if (args.transport === 'stomp') connectStomp();
  else connectEventSource();
}

connect();
