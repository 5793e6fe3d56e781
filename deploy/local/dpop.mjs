#!/usr/bin/env node
// A key of key-bound redemption for e2e.sh (what web/qrlogin-key.js does in a
// browser, with Node's WebCrypto): makes an ECDSA P-256 key, prints its public
// JWK, and signs redeem proofs (RFC 9449 style: typ dpop+jwt, ES256, jwk
// header; htm, htu, iat, jti, sid claims). The private key is written to a
// file for the length of one test run only; a browser keeps it unextractable.
//
//   node deploy/local/dpop.mjs keygen KEYFILE        prints the public JWK
//   node deploy/local/dpop.mjs proof KEYFILE SID HTU prints a proof
import { readFileSync, writeFileSync } from 'node:fs';

const { subtle } = globalThis.crypto;
const ALG = { name: 'ECDSA', namedCurve: 'P-256' };
const b64 = (bytes) => Buffer.from(bytes).toString('base64url');
const publicOf = ({ kty, crv, x, y }) => ({ kty, crv, x, y });

const [command, file, sid, htu] = process.argv.slice(2);
if (command === 'keygen' && file) {
  const pair = await subtle.generateKey(ALG, true, ['sign']);
  const jwk = await subtle.exportKey('jwk', pair.privateKey);
  writeFileSync(file, JSON.stringify(jwk), { mode: 0o600 });
  console.log(JSON.stringify(publicOf(jwk)));
} else if (command === 'proof' && file && sid && htu) {
  const jwk = JSON.parse(readFileSync(file, 'utf8'));
  const key = await subtle.importKey('jwk', jwk, ALG, false, ['sign']);
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: publicOf(jwk) };
  const claims = {
    htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: b64(globalThis.crypto.getRandomValues(new Uint8Array(16))), sid,
  };
  const signed = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  const signature = await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, Buffer.from(signed));
  console.log(`${signed}.${b64(new Uint8Array(signature))}`);
} else {
  console.error('usage: dpop.mjs keygen KEYFILE | proof KEYFILE SID HTU');
  process.exit(2);
}
