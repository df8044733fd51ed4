#!/usr/bin/env node
// Issue a mod_notary contract link with Node.js's own crypto (docs/token.md).
//
// usage: node issue_token.js KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]
//   (the arguments as in issue_token.py)
//
// No npm package is needed (Node.js 16 or later; Debian: nodejs). A JOSE
// library such as `jose` does the same; this shows what it must produce.
'use strict';
const crypto = require('crypto');
const fs = require('fs');

const LIFETIME = 600; // seconds; the notary accepts at most NotaryTokenMaxAge (900)

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function consumerCertDer(consumer) {
  if (consumer.startsWith(':')) { // a Client-Cert header value, ":BASE64-DER:"
    const b64 = consumer.trim().replace(/^:|:$/g, '');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error('Client-Cert is not :BASE64:');
    return Buffer.from(b64, 'base64');
  }
  return new crypto.X509Certificate(fs.readFileSync(consumer)).raw;
}

function defaultAlg(key) {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
  }
  throw new Error('the key must be RSA, EC P-256, EC P-384 or Ed25519');
}

function sign(alg, key, input) {
  switch (alg) {
    case 'RS256': return crypto.sign('sha256', input, key);
    case 'PS256': return crypto.sign('sha256', input,
      { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    // JWS wants ECDSA signatures as R || S, not DER
    case 'ES256': return crypto.sign('sha256', input, { key, dsaEncoding: 'ieee-p1363' });
    case 'ES384': return crypto.sign('sha384', input, { key, dsaEncoding: 'ieee-p1363' });
    case 'EdDSA': return crypto.sign(null, input, key);
    default: throw new Error(`unsupported alg ${alg}`);
  }
}

function issueToken(key, certDer, audience, jti, alg) {
  alg = alg || defaultAlg(key);
  const now = Math.floor(Date.now() / 1000);
  const x5t = b64url(crypto.createHash('sha256').update(certDer).digest());
  const claims = { aud: audience, cnf: { 'x5t#S256': x5t }, iat: now, exp: now + LIFETIME };
  if (jti) claims.jti = jti;
  const input = b64url(JSON.stringify({ alg, typ: 'notary+jwt' })) + '.'
    + b64url(JSON.stringify(claims));
  return input + '.' + b64url(sign(alg, key, Buffer.from(input)));
}

function contractLink(notaryUrl, merchant, path, token) {
  const sep = path.includes('?') ? '&' : '?';
  return `${notaryUrl.replace(/\/+$/, '')}/${merchant}${path}${sep}notary_token=${token}`;
}

function main(argv) {
  if (argv.length < 5 || argv.length > 7) {
    console.error('usage: issue_token.js KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]');
    process.exit(2);
  }
  const [keyFile, consumer, notaryUrl, merchant, path, jti, alg] = argv;
  const key = crypto.createPrivateKey(fs.readFileSync(keyFile));
  const audience = new URL(notaryUrl).hostname; // aud: host only, no port
  const token = issueToken(key, consumerCertDer(consumer), audience, jti, alg);
  console.log(contractLink(notaryUrl, merchant, path, token));
}

main(process.argv.slice(2));
