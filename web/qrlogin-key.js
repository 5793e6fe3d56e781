// Key-bound redemption in the browser (docs/protocol.md, "QR protocol";
// RFC 9449's DPoP, reduced to one request): an ECDSA P-256 key
// pair made with WebCrypto at create, whose private half is not extractable
// (script on the page can use it, but cannot read it out and send it away),
// the public JWK sent with create, and a fresh signed proof with redeem.
// The key lives in this page's memory for one login; nothing is stored.

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' };

/** True where WebCrypto can make the key (a secure context: https or localhost). */
export function canBindKeys() {
  return Boolean(globalThis.crypto && globalThis.crypto.subtle && globalThis.isSecureContext !== false);
}

/** A new key pair: { privateKey (not extractable), publicJwk }. */
export async function generateKey() {
  const pair = await crypto.subtle.generateKey(ALGORITHM, false, ['sign']);
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', pair.publicKey);
  return { privateKey: pair.privateKey, publicJwk: { kty, crv, x, y } };
}

function base64url(bytes) {
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const utf8 = (text) => new TextEncoder().encode(text);

/**
 * The proof for `POST htu` of session `sessionId`: a JWT with
 * `typ: dpop+jwt`, `alg: ES256`, the public `jwk` in its header and `htm`,
 * `htu`, `iat`, `jti`, `sid` in its claims. WebCrypto's ECDSA signature is
 * already the 64-byte r‖s that JWS wants.
 */
export async function proof(key, sessionId, htu, htm = 'POST') {
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicJwk };
  const jti = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const claims = { htm, htu, iat: Math.floor(Date.now() / 1000), jti, sid: sessionId };
  const signed = `${base64url(utf8(JSON.stringify(header)))}.${base64url(utf8(JSON.stringify(claims)))}`;
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, utf8(signed));
  return `${signed}.${base64url(new Uint8Array(signature))}`;
}
