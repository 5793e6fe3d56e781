// The GRIP origin behind Pushpin: answers GET /stream/<session> with
// headers that tell Pushpin to hold the response open as a stream
// subscribed to channel <session>, and a first SSE event ("ready") so the
// client knows it is held. Keep-alive comment every 15 s of silence, as
// qrlogin's SSE heartbeat. Prints "ready <port>" once it listens.
//
//   node origin.mjs --port P
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({ options: { port: { type: 'string' } } });
if (!opt.port) {
  console.error('usage: origin.mjs --port P');
  process.exit(2);
}

const server = createServer((req, res) => {
  const m = /^\/stream\/([A-Za-z0-9_-]{1,64})$/.exec(req.url ?? '');
  if (req.method !== 'GET' || !m) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    'grip-hold': 'stream',
    'grip-channel': m[1],
    'grip-keep-alive': ':\\n\\n; format=cstring; timeout=15',
  });
  res.end(`event: ready\ndata: ${m[1]}\n\n`);
});
server.keepAliveTimeout = 60000;
process.on('SIGTERM', () => process.exit(0));
server.listen(Number(opt.port), '127.0.0.1', () => process.stdout.write(`ready ${opt.port}\n`));
