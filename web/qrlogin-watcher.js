// The watcher behind watch() in qrlogin-client.js: one login session followed
// over WebSocket, STOMP over WebSocket, SSE, long polling or short polling,
// with fallback, resume by version, jittered backoff and de-duplication (see
// that file's header).
import {
  AUTO_ORDER, STATES, QrLoginError, isFinal, request, sessionPath, getSnapshot, cancel, qrEpoch,
} from './qrlogin-http.js';
import { stompFrame, parseStompFrames, stompBeats } from './qrlogin-stomp.js';

const TRANSPORT_LABELS = {
  ws: 'WebSocket', stomp: 'STOMP', sse: 'SSE', longpoll: 'long polling', poll: 'short polling',
};
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
/** Failed establishments in a row before 'auto' tries the next transport. */
const FALLBACK_AFTER = 2;

function available(transport) {
  if (transport === 'ws' || transport === 'stomp') return typeof WebSocket === 'function';
  if (transport === 'sse') return typeof EventSource === 'function';
  return true;
}

const noop = () => {};
const sleepJitter = (minMs, maxMs) => minMs + Math.random() * (maxMs - minMs);

export class Watcher {
  constructor(sessionId, mode, options) {
    this.sessionId = sessionId;
    this.mode = mode;
    this.baseUrl = options.baseUrl ?? '';
    this.onStateCb = options.onState ?? noop;
    this.onTransportCb = options.onTransport ?? noop;
    this.onErrorCb = options.onError ?? noop;
    this.pollIntervalMs = Math.max(250, options.pollIntervalMs ?? 2000);
    this.longPollWaitSeconds = Math.min(60, Math.max(1, options.longPollWaitSeconds ?? 25));
    this.snapshot = options.snapshot ?? null;
    this.stopped = false;
    this.generation = 0; // callbacks of an older connection see a different number and do nothing
    this.failures = 0; // establishments that failed in a row
    this.retries = 0; // reconnects since the last successful message (backoff exponent)
    this.timer = null;
    this.teardown = noop;
    this.socket = null;
    this.heldBy = null; // the edge that answered last on the current connection
    this.resumed = false; // true once this transport connected: reconnects resume by version
    const order = mode === 'auto' ? AUTO_ORDER : [mode];
    this.candidates = order.filter(available);
    if (this.candidates.length === 0) this.candidates = ['poll'];
    this.transport = this.candidates[0];
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.timer);
    this.teardown();
    this.teardown = noop;
  }

  async cancel() {
    const ws = this.socket;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (this.transport === 'stomp') {
        const destination = `/app/login-sessions.${this.sessionId}.cancel`;
        ws.send(stompFrame('SEND', { destination, 'content-length': '0' }));
      } else {
        ws.send(JSON.stringify({ type: 'cancel' }));
      }
      return;
    }
    const snapshot = await cancel(this.sessionId, { baseUrl: this.baseUrl });
    this.deliver(snapshot);
  }

  emit(status, extra = {}) {
    try {
      this.onTransportCb({ transport: this.transport, status, ...extra });
    } catch (err) {
      console.error('qrlogin: onTransport callback failed', err);
    }
  }

  connect() {
    if (this.stopped) return;
    this.generation += 1;
    const generation = this.generation;
    this.teardown();
    this.teardown = noop;
    this.heldBy = null;
    this.emit('connecting');
    const run = {
      ws: () => this.connectWebSocket(generation),
      stomp: () => this.connectStomp(generation),
      sse: () => this.connectEventSource(generation),
      longpoll: () => this.runLongPoll(generation),
      poll: () => this.runShortPoll(generation),
    }[this.transport];
    run();
  }

  current(generation) {
    return !this.stopped && generation === this.generation;
  }

  /** Hands a snapshot to onState when it is newer than the last one. */
  deliver(snapshot) {
    if (this.stopped || !snapshot || typeof snapshot.version !== 'number') return false;
    const last = this.snapshot;
    // A rotated QR code keeps the version (nothing was written): a PENDING
    // snapshot of the same version with a later payload is news too.
    const rotated =
      last &&
      snapshot.version === last.version &&
      snapshot.state === 'PENDING' &&
      last.state === 'PENDING' &&
      (qrEpoch(snapshot.qr_payload) ?? -1) > (qrEpoch(last.qr_payload) ?? -1);
    const isNew =
      !last ||
      snapshot.version > last.version ||
      (isFinal(snapshot.state) && !isFinal(last.state)) ||
      rotated;
    if (isNew) {
      this.snapshot = snapshot;
      try {
        this.onStateCb(snapshot, { transport: this.transport });
      } catch (err) {
        console.error('qrlogin: onState callback failed', err);
      }
    }
    if (isFinal(this.snapshot.state)) this.finish();
    return isNew;
  }

  finish() {
    if (this.stopped) return;
    this.stop();
    this.emit('closed', { reason: `session ${this.snapshot.state}` });
  }

  fail(error) {
    if (this.stopped) return;
    this.stop();
    this.emit('closed', { reason: error.message });
    try {
      this.onErrorCb(error);
    } catch (err) {
      console.error('qrlogin: onError callback failed', err);
    }
  }

  established(node = null) {
    this.resumed = true;
    this.failures = 0;
    this.retries = 0;
    this.emit('open', { node });
  }

  /** Reports the edge serving this watcher whenever it changes. */
  servedBy(node) {
    if (!node || node === this.heldBy) return;
    this.heldBy = node;
    this.emit('held', { node });
  }

  backoffMs() {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.retries);
    this.retries = Math.min(this.retries + 1, 10);
    return Math.round(sleepJitter(ceiling / 2, ceiling));
  }

  /**
   * The connection ended before a final state. A connection that never got
   * going is followed by one plain GET: it tells a dead session (stop) from
   * a transport the network refuses (fall back) from an unreachable service
   * (just retry), and it brings any missed state.
   */
  async dropped(reason, { wasOpen, delayMs = null }) {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.teardown();
    this.teardown = noop;
    let serviceAnswers = false;
    if (!wasOpen && ['ws', 'stomp', 'sse'].includes(this.transport)) {
      try {
        this.deliver(await getSnapshot(this.sessionId, { baseUrl: this.baseUrl }));
        serviceAnswers = true;
      } catch (err) {
        if (err instanceof QrLoginError && err.fatal) return this.fail(err);
      }
      if (!this.current(generation)) return;
    }
    if (!wasOpen && serviceAnswers) this.failures += 1;
    const index = this.candidates.indexOf(this.transport);
    if (this.failures >= FALLBACK_AFTER && index + 1 < this.candidates.length) {
      const from = this.transport;
      this.transport = this.candidates[index + 1];
      this.failures = 0;
      this.retries = 0;
      this.resumed = false;
      this.emit('fallback', { reason: `${TRANSPORT_LABELS[from]} could not be established (${reason})` });
      this.connect();
      return;
    }
    const wait = delayMs ?? this.backoffMs();
    this.emit('reconnecting', { reason, delayMs: wait });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  url(path, since) {
    const url = new URL(this.baseUrl + sessionPath(this.sessionId, path), globalThis.location?.href);
    if (since !== undefined) url.searchParams.set('since', String(since));
    return url;
  }

  /** The version to resume from once this transport has been connected;
   * none before, so that the edge starts with the current snapshot (and
   * thereby names itself). */
  resumeFrom() {
    return this.resumed && this.snapshot ? this.snapshot.version : undefined;
  }

  connectWebSocket(generation) {
    const url = this.url('/ws', this.resumeFrom());
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.dropped(`WebSocket refused: ${err.message}`, { wasOpen: false });
      return;
    }
    this.socket = ws;
    let opened = false;
    ws.onopen = () => {
      if (!this.current(generation)) return;
      opened = true;
      this.established();
    };
    ws.onmessage = (event) => {
      if (!this.current(generation)) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === 'state') {
        this.retries = 0;
        this.servedBy(message.session && message.session.node);
        this.deliver(message.session);
      } else if (message.type === 'error' && message.error) {
        const error = new QrLoginError(message.error.message || message.error.code, {
          code: message.error.code,
        });
        if (error.fatal) this.fail(error);
      }
    };
    ws.onclose = (event) => {
      if (!this.current(generation)) return;
      if (event.code === 1012) {
        // The node is draining: come back soon, through the balancer, elsewhere.
        this.dropped('the node is restarting (1012)', { wasOpen: true, delayMs: Math.round(sleepJitter(250, 1250)) });
      } else {
        this.dropped(`WebSocket closed (${event.code}${event.reason ? ` ${event.reason}` : ''})`, { wasOpen: opened });
      }
    };
    this.teardown = () => {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      this.socket = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
    };
  }

  /**
   * STOMP 1.2 over WebSocket with the few frames a watcher needs
   * (qrlogin-stomp.js): CONNECT with heart-beats, SUBSCRIBE to the
   * session's topic (with `since` when resuming), a MESSAGE per snapshot,
   * SEND for cancel. The server's ERROR while draining carries
   * retry-after-ms; heart-beats go both ways, and a server silent for twice
   * its interval counts as a dropped connection.
   */
  connectStomp(generation) {
    const url = this.url('/stomp');
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(url, ['v12.stomp', 'v11.stomp']);
    } catch (err) {
      this.dropped(`STOMP refused: ${err.message}`, { wasOpen: false });
      return;
    }
    this.socket = ws;
    let opened = false;
    let heard = Date.now();
    let beats = [];
    let retryAfterMs = null;
    let lastError = null;
    const since = this.resumeFrom();
    ws.onopen = () => {
      if (!this.current(generation)) return;
      ws.send(stompFrame('CONNECT', {
        'accept-version': '1.2,1.1',
        host: globalThis.location?.host ?? url.host,
        'heart-beat': '10000,10000',
      }));
    };
    ws.onmessage = (event) => {
      if (!this.current(generation)) return;
      heard = Date.now();
      for (const frame of parseStompFrames(String(event.data))) {
        if (frame.command === 'CONNECTED') {
          opened = true;
          const { send, expect } = stompBeats(frame.headers['heart-beat'], 10000, 10000);
          if (send) beats.push(setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('\n'), send));
          if (expect) {
            beats.push(setInterval(() => {
              if (Date.now() - heard > 2 * expect) ws.close(4000, 'no heart-beat from the server');
            }, expect));
          }
          const headers = { id: 'sub-0', destination: `/topic/login-sessions.${this.sessionId}` };
          if (since !== undefined) headers.since = String(since);
          ws.send(stompFrame('SUBSCRIBE', headers));
          this.established();
        } else if (frame.command === 'MESSAGE') {
          let snapshot;
          try {
            snapshot = JSON.parse(frame.body);
          } catch {
            continue;
          }
          this.retries = 0;
          this.servedBy(snapshot.node);
          this.deliver(snapshot);
        } else if (frame.command === 'ERROR') {
          lastError = frame.headers.message || 'ERROR';
          const hint = Number(frame.headers['retry-after-ms']);
          if (hint > 0) retryAfterMs = hint;
        }
      }
    };
    ws.onclose = (event) => {
      if (!this.current(generation)) return;
      if (event.code === 1012 || retryAfterMs !== null) {
        // The node is draining: come back after its hint, through the balancer.
        this.dropped('the node is restarting (1012)', {
          wasOpen: true,
          delayMs: retryAfterMs ?? Math.round(sleepJitter(250, 1250)),
        });
      } else {
        const why = lastError ? `, ERROR ${lastError}` : '';
        this.dropped(`STOMP closed (${event.code}${why})`, { wasOpen: opened });
      }
    };
    this.teardown = () => {
      beats.forEach(clearInterval);
      beats = [];
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      this.socket = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
    };
  }

  connectEventSource(generation) {
    const url = this.url('/events', this.resumeFrom());
    const source = new EventSource(url);
    let opened = false;
    const onEvent = (event) => {
      if (!this.current(generation)) return;
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch {
        return;
      }
      this.retries = 0;
      this.servedBy(snapshot.node);
      this.deliver(snapshot);
    };
    for (const state of STATES) source.addEventListener(state, onEvent);
    source.addEventListener('message', onEvent);
    source.onopen = () => {
      if (!this.current(generation)) return;
      if (opened) {
        this.emit('open', { reason: 'resumed with Last-Event-ID' });
      } else {
        opened = true;
        this.established();
      }
    };
    source.onerror = () => {
      if (!this.current(generation)) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error or a wrong content type).
        this.dropped('event stream refused', { wasOpen: false });
      } else {
        // The browser reconnects by itself after the server's retry: delay
        // and sends Last-Event-ID, so nothing is missed.
        this.emit('reconnecting', { reason: 'event stream interrupted; resuming with Last-Event-ID' });
      }
    };
    this.teardown = () => source.close();
  }

  /** One GET with an abort that fires on stop() or after timeoutMs. */
  async poll(generation, query, timeoutMs) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    this.teardown = () => controller.abort();
    try {
      return await request('GET', sessionPath(this.sessionId) + query, {
        baseUrl: this.baseUrl,
        signal: controller.signal,
      });
    } catch (err) {
      if (err && err.name === 'AbortError') {
        if (!this.current(generation)) return null;
        throw new QrLoginError('the request timed out', { code: 'timeout' });
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** After a 429 `slow_down`: poll no faster than the server now asks. */
  slowDown(err) {
    if (err instanceof QrLoginError && err.code === 'slow_down' && Number.isFinite(err.pollIntervalMs)) {
      this.pollIntervalMs = Math.max(this.pollIntervalMs, err.pollIntervalMs);
    }
  }

  async runLongPoll(generation) {
    let opened = false;
    while (this.current(generation)) {
      // Each connection starts with a plain GET (the current snapshot at
      // once), then holds requests with since=<newest version>.
      const since = opened && this.snapshot ? this.snapshot.version : null;
      // While PENDING, say which QR code is on screen: a newer one is news.
      const epoch = this.snapshot && this.snapshot.state === 'PENDING' ? qrEpoch(this.snapshot.qr_payload) : null;
      const held = epoch === null ? '' : `&qr=${epoch}`;
      const query = since === null ? '' : `?since=${since}${held}&wait=${this.longPollWaitSeconds}s`;
      const started = Date.now();
      let result;
      try {
        result = await this.poll(generation, query, (this.longPollWaitSeconds + 15) * 1000);
      } catch (err) {
        if (!this.current(generation)) return;
        if (err instanceof QrLoginError && err.fatal) return this.fail(err);
        this.slowDown(err);
        return this.dropped(err.message, { wasOpen: opened, delayMs: err.retryAfterMs ?? null });
      }
      if (!result || !this.current(generation)) return;
      if (!opened) {
        opened = true;
        this.established(result.node);
      }
      this.retries = 0;
      this.servedBy(result.node);
      const isNew = this.deliver(result.data);
      // A server that answers an unchanged snapshot at once (it should hold
      // the request) must not turn this loop into a busy loop.
      if (since !== null && !isNew && Date.now() - started < 1000) {
        await new Promise((resolve) => setTimeout(resolve, this.pollIntervalMs));
      }
    }
  }

  async runShortPoll(generation) {
    let opened = false;
    while (this.current(generation)) {
      let result;
      try {
        result = await this.poll(generation, '', 15000);
      } catch (err) {
        if (!this.current(generation)) return;
        if (err instanceof QrLoginError && err.fatal) return this.fail(err);
        this.slowDown(err);
        return this.dropped(err.message, { wasOpen: opened, delayMs: err.retryAfterMs ?? null });
      }
      if (!result || !this.current(generation)) return;
      if (!opened) {
        opened = true;
        this.established(result.node);
      }
      this.retries = 0;
      this.servedBy(result.node);
      this.deliver(result.data);
      if (!this.current(generation)) return;
      // Keep the pace the server asks for (never faster than configured).
      const asked = result.data.poll_interval_ms;
      const interval = Number.isFinite(asked) ? Math.max(this.pollIntervalMs, asked) : this.pollIntervalMs;
      await new Promise((resolve) => {
        this.timer = setTimeout(resolve, interval);
      });
    }
  }
}
