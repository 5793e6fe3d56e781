// One Socket.IO node of the peer comparison: a waiting client joins the
// room of its session; a "confirm" posted to any node is emitted to that
// room through @socket.io/redis-adapter, so the node holding the socket
// delivers it. The HTTP side (/confirm, /stats) plays the phone's request.
//
//   node sio-server.mjs --port P --redis redis://127.0.0.1:R --name sio-1
//
// Prints "ready <port>" on stdout once it listens and its adapter is up.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    redis: { type: 'string' },
    name: { type: 'string', default: 'sio' },
  },
});
if (!opt.port || !opt.redis) {
  console.error('usage: sio-server.mjs --port P --redis URL [--name N]');
  process.exit(2);
}

const stats = {
  connections: 0,
  confirms: 0,
  engine_errors: {},
};

const pub = createClient({ url: opt.redis });
const sub = pub.duplicate();
for (const c of [pub, sub]) c.on('error', (e) => console.error(`redis: ${e.message}`));
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer((req, res) => {
  // POST /confirm?room=ID&t=NS&r=ROUND : emit the confirm to the session's room.
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/confirm') {
    const room = url.searchParams.get('room');
    const t = url.searchParams.get('t');
    const r = url.searchParams.get('r') ?? '0';
    req.resume();
    if (!room || !t) {
      res.writeHead(400).end();
      return;
    }
    stats.confirms += 1;
    io.to(room).emit('state', { state: 'CONFIRMED', session: room, t, r, by: opt.name });
    res.writeHead(204).end();
    return;
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    stats.connections = io.engine.clientsCount;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
    return;
  }
  // Engine.IO answers its own paths; anything else is not ours.
  if (!url.pathname.startsWith('/socket.io/')) res.writeHead(404).end();
});

const io = new Server(http, {
  adapter: createAdapter(pub, sub),
  // Defaults of Socket.IO 4 otherwise: ping every 25 s, both transports.
  cors: { origin: true },
});

// Engine.IO refuses a request it cannot place (e.g. a long-poll request
// whose session lives on the other node: code 1, "Session ID unknown").
io.engine.on('connection_error', (err) => {
  const key = `${err.code} ${err.message}`;
  stats.engine_errors[key] = (stats.engine_errors[key] || 0) + 1;
});

io.on('connection', (socket) => {
  const session = socket.handshake.auth?.session ?? socket.handshake.query?.session;
  if (typeof session !== 'string' || session.length === 0 || session.length > 64) {
    socket.disconnect(true);
    return;
  }
  socket.join(session);
  socket.emit('hello', { node: opt.name });
});

const stop = () => {
  io.close();
  Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

http.listen(Number(opt.port), opt.host, () => {
  process.stdout.write(`ready ${opt.port}\n`);
});
