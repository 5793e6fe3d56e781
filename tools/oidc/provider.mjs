// A real OpenID Provider for the tests: panva's oidc-provider, on
// 127.0.0.1 and a free port, issuing the phone's tokens headlessly.
//
// Why client credentials with resource indicators: the phone token auth
// checks is an access token for qrlogin (RFC 9068 JWT access token, `aud`
// qrlogin), and oidc-provider issues those without a browser for the
// client_credentials grant when the resource server asks for the JWT
// format. (ID tokens need an interactive login.) Each test user is a client
// (`sub` is the client id), and extraTokenClaims adds the claims a real
// provider puts in an access token: preferred_username, name, email,
// email_verified.
//
// The resource picks the signing algorithm, all with the same audience:
//   urn:qrlogin:rs256 (RS256), urn:qrlogin:ps256 (PS256),
//   urn:qrlogin:es256 (ES256), urn:qrlogin:eddsa (EdDSA).
//
//   node provider.mjs [--audience AUD] [--users alice,bob,carol]
//
// Prints one JSON line once it listens: {"issuer", "port", "kids"}. Then
// reads commands on stdin, one per line, and answers one JSON line each:
//   rotate    new keys (RSA, P-256, Ed25519) sign from now on; the old ones
//             stay published (an overlap)
//   withdraw  only the newest keys stay published
//   keys      the published kids
// Every answer also says how often the key set was fetched (`jwks_fetches`).
// Exits when stdin closes (the test dropped it) or on SIGTERM.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import Provider from 'oidc-provider';

// stdout carries the answers only: oidc-provider's own notices go to stderr.
for (const level of ['log', 'info', 'warn']) {
  console[level] = (...args) => process.stderr.write(`${args.join(' ')}\n`);
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const audience = arg('audience', 'qrlogin');
const users = arg('users', 'alice,bob,carol').split(',');
const ALGS = { rs256: 'RS256', ps256: 'PS256', es256: 'ES256', eddsa: 'EdDSA' };

/** A fresh generation of signing keys, newest first in the keystore. */
function generation() {
  const stamp = randomUUID().slice(0, 8);
  const jwk = (type, options, kid) => {
    const { privateKey } = generateKeyPairSync(type, options);
    return { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig' };
  };
  return [
    jwk('rsa', { modulusLength: 2048 }, `rsa-${stamp}`),
    jwk('ec', { namedCurve: 'P-256' }, `ec-${stamp}`),
    jwk('ed25519', {}, `ed-${stamp}`),
  ];
}

let generations = [generation()];
let current;

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: users.map((id) => ({
      client_id: id,
      client_secret: `secret-of-${id}`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: generations.flat() },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(_ctx, resource) {
          const alg = ALGS[resource.replace(/^urn:qrlogin:/, '')];
          if (!alg) throw new Provider.errors.InvalidTarget();
          return {
            scope: 'login',
            audience,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    },
    extraTokenClaims(_ctx, token) {
      const id = token.clientId;
      return {
        preferred_username: id,
        name: id.charAt(0).toUpperCase() + id.slice(1),
        email: `${id}@example.test`,
        email_verified: true,
      };
    },
  });
  provider.on('server_error', (_ctx, err) => process.stderr.write(`provider: ${err.stack}\n`));
  return provider;
}

const kids = () => generations.flat().map((k) => k.kid);

let jwksFetches = 0;
const server = createServer((req, res) => {
  if (req.url.startsWith('/jwks')) jwksFetches += 1;
  current.callback()(req, res);
});
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  current = build(issuer);
  process.stdout.write(`${JSON.stringify({ issuer, port, kids: kids() })}\n`);

  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const command = line.trim();
    if (command === 'rotate') {
      generations = [generation(), ...generations];
    } else if (command === 'withdraw') {
      generations = [generations[0]];
    } else if (command !== 'keys') {
      process.stdout.write(`${JSON.stringify({ error: `unknown command ${command}` })}\n`);
      return;
    }
    // A new instance with the new keystore; the issuer and clients stay.
    current = build(issuer);
    process.stdout.write(`${JSON.stringify({ done: command, kids: kids(), jwks_fetches: jwksFetches })}\n`);
  });
  commands.on('close', () => process.exit(0));
});
process.on('SIGTERM', () => process.exit(0));
