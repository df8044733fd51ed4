/* The notary token: a compact JWS (RFC 7515) made by the merchant with the
 * private key of its backend's TLS certificate, binding a consumer's
 * certificate (cnf x5t#S256, RFC 8705) to this notary (aud) for a short
 * time. Bytes in, verdict out; no httpd. Format: docs/token.md.
 *
 * A token is good when notary_token_parse, notary_token_check_claims and
 * notary_token_verify_signature (with the key the merchant's backend
 * presented) all return NOTARY_TOKEN_OK; the last two may run in either
 * order. All functions are thread-safe and keep no state between calls;
 * they leave the thread's OpenSSL error queue as they found it. */
#ifndef NOTARY_TOKEN_H
#define NOTARY_TOKEN_H

#include <apr_pools.h>
#include <openssl/evp.h>

typedef enum {
    NOTARY_TOKEN_OK = 0,
    NOTARY_TOKEN_MISSING,   /* glue uses it: no token and no session */
    NOTARY_TOKEN_TOO_LARGE, /* compact form longer than NOTARY_TOKEN_MAX_LEN */
    NOTARY_TOKEN_MALFORMED, /* not 3 base64url parts, bad JSON, wrong types */
    NOTARY_TOKEN_ALG_NONE,
    NOTARY_TOKEN_ALG_HMAC,         /* HS256/HS384/HS512 */
    NOTARY_TOKEN_ALG_UNSUPPORTED,  /* not one of RS256 PS256 ES256 ES384 EdDSA */
    NOTARY_TOKEN_ALG_KEY_MISMATCH, /* alg does not fit the presented key */
    NOTARY_TOKEN_BAD_TYP,          /* typ present and not notary+jwt or JWT */
    NOTARY_TOKEN_CRIT,             /* a crit header: we understand no extensions */
    NOTARY_TOKEN_MISSING_CLAIM,    /* aud, cnf.x5t#S256, exp or iat missing */
    NOTARY_TOKEN_EXPIRED,          /* now > exp + skew */
    NOTARY_TOKEN_NOT_YET_VALID,    /* iat (or nbf) > now + skew */
    NOTARY_TOKEN_LIFETIME,         /* exp - iat > max_age, or exp <= iat */
    NOTARY_TOKEN_AUDIENCE,         /* aud does not name this notary */
    NOTARY_TOKEN_BINDING,          /* cnf x5t#S256 is not the consumer's certificate */
    NOTARY_TOKEN_BAD_SIGNATURE
} notary_token_status;

#define NOTARY_TOKEN_MAX_LEN 4096 /* well inside LimitRequestLine (8190) */
#define NOTARY_TOKEN_SKEW 60

typedef struct notary_token {
    const char *alg;
    const char *typ;       /* NULL if absent */
    const char *aud_first; /* for logs */
    apr_int64_t iat, exp;  /* NumericDate, seconds (non-integer JSON numbers floored) */
    const char *jti;       /* NULL if absent */
    unsigned char cnf_x5t_s256[32];
    const char *signing_input;
    apr_size_t signing_input_len; /* "b64(header).b64(payload)" */
    unsigned char *sig;
    apr_size_t sig_len;
    /* private */
    const char **auds;
    int n_auds;
    int has_nbf;
    apr_int64_t nbf;
} notary_token;

/* Parse compact JWS and check header + claim syntax; no key needed.
 * *detail (if detail is not NULL) gets a short human reason on failure. */
notary_token_status notary_token_parse(apr_pool_t *p, const char *compact, apr_size_t len,
                                       notary_token **tok, const char **detail);

/* Check claims, in this order: binding (cnf x5t#S256 == cert_sha256),
 * audience (case-insensitive host compare, one trailing dot ignored),
 * lifetime (exp > iat and exp - iat <= max_age), expiry (now > exp + skew),
 * not yet valid (iat or nbf > now + skew). On a refusal *detail, made in p,
 * names the expected value: the audience, max_age, the skew. */
notary_token_status notary_token_check_claims(apr_pool_t *p, const notary_token *tok,
                                              const char *audience,
                                              const unsigned char cert_sha256[32],
                                              apr_int64_t now, apr_int64_t max_age,
                                              const char **detail);

/* Check that alg fits the key (RSA >= 2048 bits for RS256/PS256, P-256 for
 * ES256, P-384 for ES384, Ed25519 for EdDSA) and that the signature
 * verifies with it. */
notary_token_status notary_token_verify_signature(const notary_token *tok, EVP_PKEY *key,
                                                  const char **detail);

/* One line, lower case, no trailing newline. */
const char *notary_token_status_str(notary_token_status s);

/* The enum name without prefix: "OK", "EXPIRED", ... (for logs, the test
 * vectors in docs/vectors/). "UNKNOWN" for values outside the enum. */
const char *notary_token_status_name(notary_token_status s);

/* Issue a token. alg NULL: the default for the key (RSA: RS256, P-256: ES256,
 * P-384: ES384, Ed25519: EdDSA). Refuses an alg that does not fit the key by
 * the same rule the verifier applies. Header {"alg":..,"typ":"notary+jwt"};
 * claims aud, cnf {"x5t#S256"}, iat, exp, and jti if not NULL.
 * Returns NULL and sets *err on failure. */
const char *notary_token_sign(apr_pool_t *p, EVP_PKEY *key, const char *alg, const char *aud,
                              const unsigned char cert_sha256[32], apr_int64_t iat,
                              apr_int64_t exp, const char *jti, const char **err);

/* Sign arbitrary header and payload JSON text with one of the five algs,
 * checking only that the key's type can compute it (no size or curve
 * policy). For tests and vector generation, to make tokens the verifier
 * must refuse. Returns the compact JWS or NULL and *err. */
const char *notary_token_sign_raw(apr_pool_t *p, EVP_PKEY *key, const char *alg,
                                  const char *header_json, const char *payload_json,
                                  const char **err);

#endif /* NOTARY_TOKEN_H */
