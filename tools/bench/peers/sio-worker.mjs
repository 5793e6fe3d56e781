// A worker process of sio-bench.mjs: holds its share of Socket.IO clients
// (bound to one loopback source address) and answers the coordinator over
// the IPC channel: connect, round, progress, collect.
import { io } from 'socket.io-client';
import { count, nowNs } from './stats.mjs';

/** Clients connecting at once per worker (the rest wait their turn; 128 as qrlogin-loadgen). */
const CONNECT_CONCURRENCY = 128;

const clients = new Map(); // session -> { socket, node, rx0, tx0 }
let round = 0;
let samples = [];
let frameBytes = 0;
let errors = {};

/** The ws package's net.Socket under a WebSocket transport, when there is one. */
function rawSocket(socket) {
  return socket.io?.engine?.transport?.ws?._socket ?? null;
}

function socketBytes() {
  let rx = 0;
  let tx = 0;
  for (const c of clients.values()) {
    const raw = rawSocket(c.socket);
    if (raw) {
      rx += raw.bytesRead;
      tx += raw.bytesWritten;
    }
  }
  return { rx, tx };
}

/** Size of a server-to-client WebSocket frame carrying `len` payload bytes. */
const wsFrame = (len) => len + (len < 126 ? 2 : len < 65536 ? 4 : 10);

function errorKey(prefix, err) {
  let key = `${prefix}: ${err?.message ?? err}`;
  const d = err?.description;
  if (d !== undefined) key += ` (${typeof d === 'object' ? d.message ?? JSON.stringify(d) : d})`;
  const body = err?.context?.responseText;
  if (typeof body === 'string' && body.length) key += ` ${body.slice(0, 80)}`;
  return key;
}

function connectOne(session, url, plan) {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: [plan.transport],
      auth: { session },
      reconnection: plan.reconnection,
      forceNew: true,
      timeout: Math.min(plan.connectTimeoutMs, 20000),
      localAddress: plan.src,
    });
    const c = { socket, node: null };
    clients.set(session, c);
    let settled = false;
    const done = (ok) => {
      if (!settled) {
        settled = true;
        resolve(ok);
      }
    };
    socket.on('hello', (m) => {
      c.node = m.node;
      done(true);
    });
    socket.on('connect_error', (err) => {
      count(errors, errorKey('connect_error', err));
      if (!plan.reconnection) done(false);
    });
    socket.on('disconnect', (reason, detail) => {
      count(errors, errorKey(`disconnect ${reason}`, detail ?? ''));
    });
    // Engine.IO "message" payloads: a Socket.IO EVENT is '2[...]'; on the
    // wire it is one WebSocket frame carrying '4' + that payload.
    socket.io.engine?.on('data', (data) => {
      if (typeof data === 'string' && data.startsWith('2["state"')) frameBytes += wsFrame(Buffer.byteLength(data) + 1);
    });
    socket.on('state', (m) => {
      if (Number(m.r) !== round) {
        count(errors, 'event of another round');
        return;
      }
      samples.push(Number(nowNs() - BigInt(m.t)) / 1e6);
    });
    setTimeout(() => done(false), plan.connectTimeoutMs).unref();
  });
}

async function connectAll(plan) {
  const started = performance.now();
  let next = 0;
  let ok = 0;
  const lane = async () => {
    while (next < plan.sessions.length) {
      const i = next++;
      if (await connectOne(plan.sessions[i], plan.urls[i % plan.urls.length], plan)) ok += 1;
    }
  };
  await Promise.all(Array.from({ length: CONNECT_CONCURRENCY }, lane));
  const nodes = {};
  for (const [s, c] of clients) if (c.node) nodes[s] = c.node;
  const bytes = socketBytes();
  const result = {
    connected: ok,
    nodes,
    errors,
    bytes,
    secs: (performance.now() - started) / 1000,
  };
  errors = {};
  return result;
}

let roundBytes = { rx: 0, tx: 0 };

process.on('message', async (msg) => {
  switch (msg.cmd) {
    case 'connect':
      process.send(await connectAll(msg));
      break;
    case 'round': {
      // Errors since the last answer (sockets that dropped after the
      // connect phase) go back with the count of sockets still connected.
      let open = 0;
      for (const c of clients.values()) if (c.socket.connected) open += 1;
      const before = errors;
      round = msg.round;
      samples = [];
      frameBytes = 0;
      errors = {};
      roundBytes = socketBytes();
      process.send({ open, errors: before });
      break;
    }
    case 'progress':
      process.send({ delivered: samples.length });
      break;
    case 'collect': {
      const now = socketBytes();
      let stillConnected = 0;
      for (const c of clients.values()) if (c.socket.connected) stillConnected += 1;
      process.send({
        samples,
        frameBytes,
        errors,
        stillConnected,
        bytes: { rx: now.rx - roundBytes.rx, tx: now.tx - roundBytes.tx },
      });
      break;
    }
    default:
      process.send({ error: `unknown command ${msg.cmd}` });
  }
});
process.on('disconnect', () => process.exit(0));
