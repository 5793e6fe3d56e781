// Load and measurement for the Socket.IO peer: waiting clients spread over
// worker processes (this file, forked; each bound to its own loopback
// source address), "confirms" posted at a fixed rate to the node that does
// NOT hold the client's socket, latency from the confirm's start to the
// client's receipt (CLOCK_MONOTONIC in both processes).
//
//   node sio-bench.mjs ws      --urls U1,U2 --nodes sio-1=URL,sio-2=URL --waiting N --rates 500,1000 ...
//   node sio-bench.mjs polling --urls U1    --nodes sio-1=URL,sio-2=URL --sessions M ...
//
// Writes the result rows (README.md "Output") as a JSON array to --json-out.
// Every phase has a limit; workers are killed when the coordinator ends.
import { fork } from 'node:child_process';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import {
  latencySummary, latencyHistogram, rssKib, loadAverage, count, mergeCounts, nowNs,
} from './stats.mjs';

const SELF = fileURLToPath(import.meta.url);

function parse() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      urls: { type: 'string' },
      nodes: { type: 'string' },
      waiting: { type: 'string', default: '1000' },
      sessions: { type: 'string', default: '200' },
      rates: { type: 'string', default: '500' },
      workers: { type: 'string', default: '4' },
      'src-first': { type: 'string', default: '2' },
      'connect-timeout': { type: 'string', default: '180' },
      'deliver-timeout': { type: 'string', default: '30' },
      'settle': { type: 'string', default: '2' },
      measure: { type: 'string', multiple: true, default: [] },
      'memory-of': { type: 'string' },
      redis: { type: 'string' },
      'haproxy-log': { type: 'string', multiple: true, default: [] },
      'json-out': { type: 'string' },
      variant: { type: 'string', default: 'redis-adapter' },
      reconnection: { type: 'boolean', default: false },
    },
  });
  const mode = positionals[0];
  if (!['ws', 'polling'].includes(mode) || !values.urls || !values.nodes || !values['json-out']) {
    console.error('usage: sio-bench.mjs ws|polling --urls U[,U] --nodes NAME=URL,NAME=URL --json-out FILE [...]');
    process.exit(2);
  }
  const nodes = values.nodes.split(',').map((kv) => {
    const [name, url] = kv.split('=');
    return { name, url: new URL(url) };
  });
  const measure = values.measure.map((kv) => {
    const [name, pid] = kv.split('=');
    return { name, pid: Number(pid) };
  });
  return {
    mode,
    urls: values.urls.split(','),
    nodes,
    waiting: Number(values.waiting),
    sessions: Number(values.sessions),
    rates: values.rates.split(',').map(Number),
    workers: Math.max(1, Number(values.workers)),
    srcFirst: Number(values['src-first']),
    connectTimeoutMs: Number(values['connect-timeout']) * 1000,
    deliverTimeoutMs: Number(values['deliver-timeout']) * 1000,
    settleMs: Number(values.settle) * 1000,
    measure,
    memoryOf: values['memory-of'] ? values['memory-of'].split(',') : measure.map((m) => m.name),
    redis: values.redis,
    haproxyLogs: values['haproxy-log'],
    jsonOut: values['json-out'],
    variant: values.variant,
    reconnection: values.reconnection,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (msg) => process.stderr.write(`sio-bench: ${msg}\n`);

/** A worker process and a promise-based request/answer over its IPC channel. */
class Worker {
  constructor(index) {
    this.index = index;
    this.child = fork(SELF, ['worker'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.waiters = [];
    this.child.on('message', (m) => {
      const w = this.waiters.shift();
      if (w) w.resolve(m);
    });
    this.child.on('exit', (code) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`worker ${index} exited (${code})`));
    });
  }

  ask(msg, timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${this.index}: no answer to ${msg.cmd} in ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.child.send(msg);
    });
  }

  kill() {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

function memory(measure) {
  const out = {};
  for (const m of measure) out[m.name] = rssKib(m.pid);
  return out;
}

const sum = (obj, names) => names.reduce((a, n) => a + (obj[n] ?? 0), 0);

async function redisBytes(url) {
  if (!url) return null;
  const c = createClient({ url });
  c.on('error', () => {});
  try {
    await c.connect();
    const info = await c.info('stats');
    await c.quit();
    const get = (k) => Number((new RegExp(`${k}:(\\d+)`).exec(info) || [])[1] || 0);
    return { in: get('total_net_input_bytes'), out: get('total_net_output_bytes') };
  } catch {
    return null;
  }
}

async function nodeStats(nodes) {
  const out = {};
  for (const n of nodes) {
    try {
      const res = await fetch(new URL('/stats', n.url), { signal: AbortSignal.timeout(3000) });
      out[n.name] = await res.json();
    } catch (e) {
      out[n.name] = { error: e.message };
    }
  }
  return out;
}

/** Engine.IO errors each node counted between two /stats answers. */
function engineErrorsSince(before, after) {
  const out = {};
  for (const [name, a] of Object.entries(after)) {
    const b = before[name]?.engine_errors ?? {};
    out[name] = {};
    for (const [k, v] of Object.entries(a.engine_errors ?? {})) {
      if (v - (b[k] ?? 0) > 0) out[name][k] = v - (b[k] ?? 0);
    }
  }
  return out;
}

/** HAProxy log lines (log-format "status=%ST ...") counted by status. */
function haproxyStatuses(paths) {
  const out = {};
  for (const p of paths) {
    if (!existsSync(p)) continue;
    for (const m of readFileSync(p, 'utf8').matchAll(/status=(\d+)/g)) count(out, m[1]);
  }
  return out;
}

/** Posts confirms at `rate`/s; returns per-session start times and failures. */
async function confirmAtRate(order, rate, round, agent, errors) {
  let accepted = 0;
  let failed = 0;
  let next = 0;
  const inflight = new Set();
  const started = performance.now();
  const post = ({ room, node }) => new Promise((resolve) => {
    const t = nowNs();
    const req = request({
      agent, host: node.url.hostname, port: node.url.port, method: 'POST',
      path: `/confirm?room=${encodeURIComponent(room)}&t=${t}&r=${round}`,
      headers: { 'content-length': 0 },
      timeout: 10000,
    }, (res) => {
      res.resume();
      if (res.statusCode === 204) accepted += 1;
      else { failed += 1; count(errors, `confirm HTTP ${res.statusCode}`); }
      resolve();
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => { failed += 1; count(errors, `confirm ${e.message}`); resolve(); });
    req.end();
  });
  while (next < order.length) {
    const due = Math.min(order.length, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
    while (next < due) {
      const p = post(order[next++]);
      inflight.add(p);
      p.then(() => inflight.delete(p));
    }
    await sleep(1);
  }
  const sendSecs = (performance.now() - started) / 1000;
  await Promise.all(inflight);
  return { accepted, failed, sendSecs };
}

async function coordinator() {
  const o = parse();
  const rows = [];
  const workers = [];
  const killAll = () => workers.forEach((w) => w.kill());
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });

  const names = o.memoryOf;
  const baseline = memory(o.measure);
  const total = o.mode === 'ws' ? o.waiting : o.sessions;
  const nWorkers = o.mode === 'ws' ? Math.min(o.workers, total) : 1;
  for (let w = 0; w < nWorkers; w++) workers.push(new Worker(w));

  // Sessions: s<i>, worker w takes i ≡ w (mod nWorkers); URLs alternate.
  const plans = workers.map((w) => ({
    cmd: 'connect',
    sessions: [],
    urls: o.urls,
    src: `127.0.0.${o.srcFirst + w.index}`,
    transport: o.mode === 'ws' ? 'websocket' : 'polling',
    reconnection: o.reconnection,
    connectTimeoutMs: o.connectTimeoutMs,
  }));
  for (let i = 0; i < total; i++) plans[i % nWorkers].sessions.push(`s${i}`);

  const load = { start: loadAverage() };
  const connectStarted = performance.now();
  const connected = await Promise.all(workers.map((w, i) => w.ask(plans[i], o.connectTimeoutMs + 30000)));
  const setupSecs = (performance.now() - connectStarted) / 1000;
  const errors = {};
  const nodeOf = {};
  let held = 0;
  const setupBytes = { rx: 0, tx: 0 };
  for (const c of connected) {
    held += c.connected;
    mergeCounts(errors, c.errors);
    Object.assign(nodeOf, c.nodes);
    setupBytes.rx += c.bytes.rx;
    setupBytes.tx += c.bytes.tx;
  }
  log(`${held} of ${total} connected (${o.mode}) in ${setupSecs.toFixed(1)} s`);

  if (o.mode === 'ws') {
    await sleep(o.settleMs);
    const idle = memory(o.measure);
    const perConn = held > 0 ? (sum(idle, names) - sum(baseline, names)) / held : null;
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    const otherNode = (room) => {
      const holder = nodeOf[room];
      return o.nodes.find((n) => n.name !== holder) ?? o.nodes[0];
    };
    const rooms = Object.keys(nodeOf);
    for (const [k, rate] of o.rates.entries()) {
      const round = k + 1;
      const started = await Promise.all(workers.map((w) => w.ask({ cmd: 'round', round }, 10000)));
      const openAtStart = started.reduce((a, s) => a + s.open, 0);
      for (const s of started) {
        for (const [k, v] of Object.entries(s.errors)) count(errors, `before round ${round}: ${k}`, v);
      }
      const roundErrors = { ...errors };
      const redisBefore = await redisBytes(o.redis);
      const order = rooms.map((room) => ({ room, node: otherNode(room) }));
      log(`round ${round}: ${order.length} confirms at ${rate}/s`);
      const sent = await confirmAtRate(order, rate, round, agent, roundErrors);
      const deadline = performance.now() + o.deliverTimeoutMs;
      let delivered = 0;
      for (;;) {
        const progress = await Promise.all(workers.map((w) => w.ask({ cmd: 'progress' }, 10000)));
        delivered = progress.reduce((a, p) => a + p.delivered, 0);
        if (delivered >= sent.accepted || performance.now() > deadline) break;
        await sleep(100);
      }
      const collected = await Promise.all(workers.map((w) => w.ask({ cmd: 'collect' }, 30000)));
      const redisAfter = await redisBytes(o.redis);
      const samples = collected.flatMap((c) => c.samples);
      const rx = collected.reduce((a, c) => a + c.bytes.rx, 0);
      const tx = collected.reduce((a, c) => a + c.bytes.tx, 0);
      const frame = collected.reduce((a, c) => a + c.frameBytes, 0);
      for (const c of collected) mergeCounts(roundErrors, c.errors);
      const lost = sent.accepted - delivered;
      if (lost > 0) count(roundErrors, 'not delivered within the deadline', lost);
      const processes = memory(o.measure);
      rows.push({
        system: 'socketio',
        variant: o.variant,
        transport: 'ws',
        waiting: openAtStart,
        held_after_setup: held,
        rate,
        achieved_rate: Number((order.length / sent.sendSecs).toFixed(1)),
        latency_ms: latencySummary(samples),
        latency_histogram: latencyHistogram(samples),
        delivered: samples.length,
        expected: order.length,
        confirms_accepted: sent.accepted,
        bytes_per_event: delivered ? Number((rx / delivered).toFixed(1)) : null,
        bytes_per_login: delivered && held
          ? Number(((setupBytes.rx + setupBytes.tx) / held + (rx + tx) / delivered).toFixed(1)) : null,
        bytes: {
          client_rx_per_event: delivered ? Number((rx / delivered).toFixed(1)) : null,
          client_tx_per_event: delivered ? Number((tx / delivered).toFixed(1)) : null,
          frame_per_event: delivered ? Number((frame / delivered).toFixed(1)) : null,
          redis_in_per_event: redisBefore && redisAfter && delivered
            ? Number(((redisAfter.in - redisBefore.in) / delivered).toFixed(1)) : null,
          redis_out_per_event: redisBefore && redisAfter && delivered
            ? Number(((redisAfter.out - redisBefore.out) / delivered).toFixed(1)) : null,
          setup_rx_per_conn: held ? Number((setupBytes.rx / held).toFixed(1)) : null,
          setup_tx_per_conn: held ? Number((setupBytes.tx / held).toFixed(1)) : null,
        },
        http_requests_per_wait: 1,
        memory_per_conn_kib: perConn === null ? null : Number(perConn.toFixed(2)),
        memory_kib: { baseline, idle_with_waiting: idle },
        setup_rate_per_s: Number((held / setupSecs).toFixed(1)),
        setup_secs: Number(setupSecs.toFixed(2)),
        processes,
        errors: roundErrors,
        load_average: { start: load.start, end: loadAverage() },
        date: new Date().toISOString(),
      });
      log(`round ${round}: ${samples.length}/${order.length} delivered, p50 ${rows.at(-1).latency_ms.p50} p99 ${rows.at(-1).latency_ms.p99} ms`);
    }
  } else {
    // Long polling behind round-robin: confirm every session on the node
    // that does not hold it (or on the first node when none said hello),
    // then count who got the event.
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const engineBefore = await nodeStats(o.nodes);
    const order = plans[0].sessions.map((room) => ({
      room,
      node: o.nodes.find((n) => n.name !== nodeOf[room]) ?? o.nodes[0],
    }));
    const atConfirm = await workers[0].ask({ cmd: 'round', round: 1 }, 10000);
    mergeCounts(errors, atConfirm.errors);
    const roundErrors = {};
    const sent = await confirmAtRate(order, 100, 1, agent, roundErrors);
    await sleep(o.deliverTimeoutMs);
    const [c] = await Promise.all(workers.map((w) => w.ask({ cmd: 'collect' }, 30000)));
    mergeCounts(errors, c.errors);
    mergeCounts(errors, roundErrors);
    const statuses = haproxyStatuses(o.haproxyLogs);
    rows.push({
      system: 'socketio',
      variant: o.variant,
      transport: 'long-poll',
      sessions: total,
      waiting: total,
      connected: held,
      failed_to_connect: total - held,
      still_connected_at_confirm: atConfirm.open,
      still_connected_at_end: c.stillConnected,
      delivered: c.samples.length,
      expected: total,
      lost: total - c.samples.length,
      latency_ms: latencySummary(c.samples),
      confirms_accepted: sent.accepted,
      http_statuses_at_balancer: statuses,
      server_engine_errors: engineErrorsSince(engineBefore, await nodeStats(o.nodes)),
      errors,
      load_average: { start: load.start, end: loadAverage() },
      date: new Date().toISOString(),
    });
    log(`long polling: ${held}/${total} connected, ${c.samples.length}/${total} got the event; balancer statuses ${JSON.stringify(statuses)}`);
  }
  writeFileSync(o.jsonOut, JSON.stringify(rows, null, 1) + '\n');
  killAll();
  process.exit(0);
}

// Dispatch last: the classes and functions above must be initialised first.
if (process.argv[2] === 'worker') {
  await import('./sio-worker.mjs');
} else {
  await coordinator();
}
