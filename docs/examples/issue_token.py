#!/usr/bin/python3
"""Issue a mod_notary contract link with PyJWT (docs/token.md).

usage: issue_token.py KEY.pem CONSUMER NOTARY_URL MERCHANT PATH [JTI [ALG]]

  KEY.pem     private key of the TLS certificate your backend presents to
              the notary (RSA, EC P-256, EC P-384 or Ed25519; PEM)
  CONSUMER    the consumer's certificate: a PEM file (mod_ssl's
              SSL_CLIENT_CERT), or the value of the Client-Cert header
              the notary sent you (RFC 9440: ":BASE64-DER:")
  NOTARY_URL  the notary as consumers reach it: https://notary.example.com
  MERCHANT    your NotaryMerchant name there
  PATH        the page on your site the link opens: /contract/start
  JTI         optional token id (an order number), kept with the session
  ALG         optional: PS256 instead of RS256 for an RSA key

Debian: python3-jwt python3-cryptography
"""
import base64
import hashlib
import sys
import time
import urllib.parse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

LIFETIME = 600  # seconds; the notary accepts at most NotaryTokenMaxAge (900)


def consumer_cert_der(consumer):
    if consumer.startswith(":"):  # a Client-Cert header value
        return base64.b64decode(consumer.strip().strip(":"), validate=True)
    with open(consumer, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)


def default_alg(key):
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name == "secp256r1":
            return "ES256"
        if key.curve.name == "secp384r1":
            return "ES384"
    raise ValueError("the key must be RSA, EC P-256, EC P-384 or Ed25519")


def issue_token(key, cert_der, audience, jti=None, alg=None):
    now = int(time.time())
    x5t = base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=")
    claims = {"aud": audience, "cnf": {"x5t#S256": x5t.decode()},
              "iat": now, "exp": now + LIFETIME}
    if jti:
        claims["jti"] = jti
    # PyJWT writes ECDSA signatures as R || S and PS256 with a 32-byte salt
    return jwt.encode(claims, key, algorithm=alg or default_alg(key),
                      headers={"typ": "notary+jwt"})


def contract_link(notary_url, merchant, path, token):
    sep = "&" if "?" in path else "?"
    return f"{notary_url.rstrip('/')}/{merchant}{path}{sep}notary_token={token}"


def main(argv):
    if len(argv) not in (6, 7, 8):
        sys.exit(__doc__)
    keyfile, consumer, notary_url, merchant, path = argv[1:6]
    jti = argv[6] if len(argv) > 6 else None
    alg = argv[7] if len(argv) > 7 else None
    with open(keyfile, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    audience = urllib.parse.urlsplit(notary_url).hostname  # aud: host only
    token = issue_token(key, consumer_cert_der(consumer), audience, jti, alg)
    print(contract_link(notary_url, merchant, path, token))


if __name__ == "__main__":
    main(sys.argv)
