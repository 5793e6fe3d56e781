// The few STOMP 1.2 frames the qrlogin watcher speaks over WebSocket
// (docs/protocol.md, "STOMP 1.2 over WebSocket"): encoding client frames,
// reading server frames, and the heart-beat rule. Written here rather than
// loading @stomp/stompjs so that the page needs no build step and no
// third-party code; stompjs itself works unchanged against the same
// endpoint (web/tests/browser.test.mjs logs in with it).

/** STOMP 1.2 header escaping (not in CONNECT, as the specification says). */
function escape(text) {
  return String(text).replace(/[\\\r\n:]/g, (c) => ({ '\\': '\\\\', '\r': '\\r', '\n': '\\n', ':': '\\c' })[c]);
}

function unescape(text) {
  return text.replace(/\\(.)/g, (_, c) => ({ r: '\r', n: '\n', c: ':', '\\': '\\' })[c] ?? c);
}

/** A client frame as text: command, headers, empty line, body, NUL. */
export function stompFrame(command, headers = {}, body = '') {
  const put = command === 'CONNECT' ? String : escape;
  const lines = Object.entries(headers).map(([name, value]) => `${put(name)}:${put(value)}`);
  return `${command}\n${lines.join('\n')}${lines.length ? '\n' : ''}\n${body}\0`;
}

/**
 * The frames in one WebSocket message; EOLs between them (heart-beats) are
 * skipped. A body runs to the NUL: the server's bodies (JSON snapshots,
 * error texts) never contain one. The first of a repeated header wins.
 */
export function parseStompFrames(text) {
  const frames = [];
  let rest = text;
  for (;;) {
    rest = rest.replace(/^(\r?\n)+/, '');
    if (!rest) return frames;
    const nul = rest.indexOf('\0');
    if (nul < 0) return frames;
    const raw = rest.slice(0, nul);
    rest = rest.slice(nul + 1);
    const split = raw.search(/\r?\n\r?\n/);
    const head = (split < 0 ? raw : raw.slice(0, split)).split(/\r?\n/);
    const body = split < 0 ? '' : raw.slice(split).replace(/^\r?\n\r?\n/, '');
    const command = head.shift();
    const headers = {};
    const plain = command === 'CONNECTED';
    for (const line of head) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const name = plain ? line.slice(0, colon) : unescape(line.slice(0, colon));
      if (!(name in headers)) headers[name] = plain ? line.slice(colon + 1) : unescape(line.slice(colon + 1));
    }
    frames.push({ command, headers, body });
  }
}

/**
 * Heart-beat intervals from CONNECTED's `heart-beat: sx,sy` and what this
 * client offered (`cx,cy`): `send` how often the client must send an EOL,
 * `expect` how often the server will; 0 when either side declined.
 */
export function stompBeats(header, cx, cy) {
  const [sx, sy] = String(header ?? '0,0').split(',').map((v) => Number(v) || 0);
  return {
    send: cx && sy ? Math.max(cx, sy) : 0,
    expect: cy && sx ? Math.max(cy, sx) : 0,
  };
}
