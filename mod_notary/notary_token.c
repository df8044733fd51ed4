/* The notary token: compact JWS parse, claim checks, signature verify and
 * issue. See notary_token.h and docs/token.md. */
#include <string.h>

#include <apr_strings.h>
#include <apr_cstr.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>

#include "notary_util.h"
#include "notary_token.h"

/* NumericDates beyond 9999-12-31T23:59:59Z are refused as malformed, so
 * that time arithmetic can never overflow. */
#define NOTARY_DATE_MAX APR_INT64_C(253402300799)

enum { ALG_RS256,
       ALG_PS256,
       ALG_ES256,
       ALG_ES384,
       ALG_EDDSA };

static const struct {
    const char *name;
    int id;
} algs[] = {
    { "RS256", ALG_RS256 },
    { "PS256", ALG_PS256 },
    { "ES256", ALG_ES256 },
    { "ES384", ALG_ES384 },
    { "EdDSA", ALG_EDDSA },
};

/* alg values are case-sensitive (RFC 7515 4.1.1). */
static int alg_lookup(const char *name)
{
    size_t i;

    for (i = 0; name && i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcmp(name, algs[i].name) == 0)
            return algs[i].id;
    return -1;
}

/* Attacker-supplied text goes into logs and a 403 body: keep it short and
 * printable, with nothing that HTML or a log line could misread. */
static const char *safe_str(apr_pool_t *p, const char *s)
{
    apr_size_t n = strlen(s), i, max = 32;
    char *o = apr_pstrndup(p, s, n > max ? max : n);

    for (i = 0; o[i]; i++)
        if (o[i] < 0x20 || o[i] > 0x7e || strchr("<>&\"'\\", o[i]))
            o[i] = '?';
    return n > max ? apr_pstrcat(p, o, "...", NULL) : o;
}

/* OpenSSL's reason for the last failure, for the signer's error messages. */
static const char *ossl_err(apr_pool_t *p, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];

    if (!e)
        return what;
    ERR_error_string_n(e, buf, sizeof(buf));
    return apr_psprintf(p, "%s: %s", what, buf);
}

/* ---- key policy -------------------------------------------------------- */

static int ec_curve_nid(EVP_PKEY *key)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    char name[64];
    size_t len = 0;
    int nid;

    if (EVP_PKEY_get_group_name(key, name, sizeof(name), &len) != 1)
        return NID_undef; /* explicit curve parameters: never accepted */
    nid = OBJ_sn2nid(name);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(name);
    return nid;
#else
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
    const EC_GROUP *g = ec ? EC_KEY_get0_group(ec) : NULL;

    return g ? EC_GROUP_get_curve_name(g) : NID_undef;
#endif
}

/* Does the key's type allow computing alg at all (no size/curve policy)? */
static int alg_key_family_ok(int alg, EVP_PKEY *key)
{
    int type = EVP_PKEY_base_id(key);

    switch (alg) {
    case ALG_RS256: return type == EVP_PKEY_RSA;
    case ALG_PS256: return type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS;
    case ALG_ES256:
    case ALG_ES384: return type == EVP_PKEY_EC;
    case ALG_EDDSA: return type == EVP_PKEY_ED25519;
    }
    return 0;
}

/* The verifier's rule, also applied when issuing. */
static notary_token_status alg_fits_key(int alg, EVP_PKEY *key, const char **why)
{
    int type = EVP_PKEY_base_id(key);

    switch (alg) {
    case ALG_RS256:
    case ALG_PS256:
        if (!alg_key_family_ok(alg, key)) {
            *why = alg == ALG_RS256 ? "RS256 needs an RSA key"
                                    : "PS256 needs an RSA key";
            return NOTARY_TOKEN_ALG_KEY_MISMATCH;
        }
        if (EVP_PKEY_bits(key) < 2048) {
            *why = "RSA key is shorter than 2048 bits";
            return NOTARY_TOKEN_ALG_KEY_MISMATCH;
        }
        return NOTARY_TOKEN_OK;
    case ALG_ES256:
    case ALG_ES384:
        if (type != EVP_PKEY_EC) {
            *why = alg == ALG_ES256 ? "ES256 needs an EC P-256 key" : "ES384 needs an EC P-384 key";
            return NOTARY_TOKEN_ALG_KEY_MISMATCH;
        }
        if (ec_curve_nid(key) != (alg == ALG_ES256 ? NID_X9_62_prime256v1 : NID_secp384r1)) {
            *why = alg == ALG_ES256 ? "ES256 needs curve P-256; the key is on another curve"
                                    : "ES384 needs curve P-384; the key is on another curve";
            return NOTARY_TOKEN_ALG_KEY_MISMATCH;
        }
        return NOTARY_TOKEN_OK;
    case ALG_EDDSA:
        if (type != EVP_PKEY_ED25519) {
            /* Ed448 is a mismatch too: the contract names Ed25519 only. */
            *why = type == EVP_PKEY_ED448 ? "EdDSA tokens must be Ed25519; the key is Ed448"
                                          : "EdDSA needs an Ed25519 key";
            return NOTARY_TOKEN_ALG_KEY_MISMATCH;
        }
        return NOTARY_TOKEN_OK;
    }
    *why = "unsupported alg";
    return NOTARY_TOKEN_ALG_UNSUPPORTED;
}

static const EVP_MD *alg_md(int alg)
{
    switch (alg) {
    case ALG_RS256:
    case ALG_PS256:
    case ALG_ES256: return EVP_sha256();
    case ALG_ES384: return EVP_sha384();
    }
    return NULL; /* EdDSA hashes internally */
}

/* RSA padding for the alg; PS256 is PSS, MGF1-SHA256, salt 32 (RFC 7518 3.5). */
static int set_rsa_padding(int alg, EVP_PKEY_CTX *pctx)
{
    if (alg == ALG_RS256)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
    if (alg == ALG_PS256)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0
            && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
    return 1;
}

/* ---- parse --------------------------------------------------------------- */

static json_t *load_part(apr_pool_t *p, const char *b64, apr_size_t len,
                         const char *what, const char **why)
{
    json_error_t jerr;
    unsigned char *raw;
    apr_size_t n = 0;
    json_t *j;

    raw = notary_b64url_decode(p, b64, len, &n);
    if (!raw) {
        *why = apr_psprintf(p, "token %s is not base64url", what);
        return NULL;
    }
    /* Duplicate names are refused: two parsers must never disagree. */
    j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        *why = apr_psprintf(p, "token %s is not JSON: %s", what, safe_str(p, jerr.text));
        return NULL;
    }
    if (!json_is_object(j)) {
        *why = apr_psprintf(p, "token %s is not a JSON object", what);
        json_decref(j);
        return NULL;
    }
    return j;
}

static notary_token_status parse_header(apr_pool_t *p, json_t *hdr, notary_token *tok,
                                        const char **why)
{
    json_t *alg = json_object_get(hdr, "alg"), *typ = json_object_get(hdr, "typ");
    const char *a, *t;

    if (!alg) {
        *why = "token header has no alg";
        return NOTARY_TOKEN_MALFORMED;
    }
    if (!json_is_string(alg)) {
        *why = "token header alg is not a string";
        return NOTARY_TOKEN_MALFORMED;
    }
    a = json_string_value(alg);
    /* Case-blind here only to name the refusal; acceptance is exact. */
    if (apr_cstr_casecmp(a, "none") == 0) {
        *why = "token alg is none";
        return NOTARY_TOKEN_ALG_NONE;
    }
    if (apr_cstr_casecmp(a, "HS256") == 0 || apr_cstr_casecmp(a, "HS384") == 0
        || apr_cstr_casecmp(a, "HS512") == 0) {
        *why = apr_psprintf(p, "token alg is %s (HMAC)", safe_str(p, a));
        return NOTARY_TOKEN_ALG_HMAC;
    }
    if (alg_lookup(a) < 0) {
        *why = apr_psprintf(p, "token alg \"%s\" is not one of RS256 PS256 ES256 ES384 EdDSA",
                            safe_str(p, a));
        return NOTARY_TOKEN_ALG_UNSUPPORTED;
    }
    tok->alg = apr_pstrdup(p, a);

    if (json_object_get(hdr, "crit")) {
        *why = "token header has crit; no extensions are understood";
        return NOTARY_TOKEN_CRIT;
    }
    if (typ) {
        if (!json_is_string(typ)) {
            *why = "token header typ is not a string";
            return NOTARY_TOKEN_MALFORMED;
        }
        t = json_string_value(typ);
        /* RFC 7515 4.1.9: compare case-blind, "application/" may be left out. */
        if (apr_cstr_casecmp(t, "notary+jwt") && apr_cstr_casecmp(t, "application/notary+jwt")
            && apr_cstr_casecmp(t, "JWT") && apr_cstr_casecmp(t, "application/jwt")) {
            *why = apr_psprintf(p, "token typ \"%s\" is not notary+jwt or JWT", safe_str(p, t));
            return NOTARY_TOKEN_BAD_TYP;
        }
        tok->typ = apr_pstrdup(p, t);
    }
    /* kid, x5t, jwk, x5c, jku, x5u: ignored; the key is the presented one. */
    return NOTARY_TOKEN_OK;
}

/* 0: ok; 1: not a number; 2: out of range. Reals are floored. */
static int numeric_date(json_t *v, apr_int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > NOTARY_DATE_MAX)
            return 2;
        *out = (apr_int64_t)i;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0.0 && d < (double)NOTARY_DATE_MAX + 1.0))
            return 2;
        *out = (apr_int64_t)d; /* truncation == floor for d >= 0 */
        return 0;
    }
    return 1;
}

static notary_token_status date_claim(apr_pool_t *p, json_t *claims, const char *name,
                                      int required, apr_int64_t *out, int *present,
                                      const char **why)
{
    json_t *v = json_object_get(claims, name);
    int rc;

    if (present)
        *present = v != NULL;
    if (!v) {
        if (!required)
            return NOTARY_TOKEN_OK;
        *why = apr_psprintf(p, "token has no %s claim", name);
        return NOTARY_TOKEN_MISSING_CLAIM;
    }
    rc = numeric_date(v, out);
    if (rc == 1) {
        *why = apr_psprintf(p, "token %s is not a number", name);
        return NOTARY_TOKEN_MALFORMED;
    }
    if (rc == 2) {
        *why = apr_psprintf(p, "token %s is out of range (0 to year 9999)", name);
        return NOTARY_TOKEN_MALFORMED;
    }
    return NOTARY_TOKEN_OK;
}

static notary_token_status parse_claims(apr_pool_t *p, json_t *claims, notary_token *tok,
                                        const char **why)
{
    json_t *aud = json_object_get(claims, "aud"), *cnf = json_object_get(claims, "cnf");
    json_t *x5t, *jti = json_object_get(claims, "jti");
    notary_token_status st;
    unsigned char *hash;
    apr_size_t i, n = 0;

    if (!aud) {
        *why = "token has no aud claim";
        return NOTARY_TOKEN_MISSING_CLAIM;
    }
    if (json_is_string(aud)) {
        tok->n_auds = 1;
        tok->auds = apr_palloc(p, sizeof(*tok->auds));
        tok->auds[0] = apr_pstrdup(p, json_string_value(aud));
    }
    else if (json_is_array(aud) && json_array_size(aud) > 0) {
        tok->n_auds = (int)json_array_size(aud);
        tok->auds = apr_palloc(p, sizeof(*tok->auds) * json_array_size(aud));
        for (i = 0; i < json_array_size(aud); i++) {
            json_t *e = json_array_get(aud, i);
            if (!json_is_string(e)) {
                *why = "token aud array holds a non-string";
                return NOTARY_TOKEN_MALFORMED;
            }
            tok->auds[i] = apr_pstrdup(p, json_string_value(e));
        }
    }
    else {
        *why = "token aud is neither a string nor a non-empty array of strings";
        return NOTARY_TOKEN_MALFORMED;
    }
    tok->aud_first = tok->auds[0];

    if (!cnf) {
        *why = "token has no cnf claim";
        return NOTARY_TOKEN_MISSING_CLAIM;
    }
    if (!json_is_object(cnf)) {
        *why = "token cnf is not an object";
        return NOTARY_TOKEN_MALFORMED;
    }
    x5t = json_object_get(cnf, "x5t#S256");
    if (!x5t) {
        *why = "token cnf has no x5t#S256";
        return NOTARY_TOKEN_MISSING_CLAIM;
    }
    if (!json_is_string(x5t)) {
        *why = "token cnf x5t#S256 is not a string";
        return NOTARY_TOKEN_MALFORMED;
    }
    hash = notary_b64url_decode(p, json_string_value(x5t), json_string_length(x5t), &n);
    if (!hash || n != 32) {
        *why = "token cnf x5t#S256 is not the base64url of 32 bytes";
        return NOTARY_TOKEN_MALFORMED;
    }
    memcpy(tok->cnf_x5t_s256, hash, 32);

    if ((st = date_claim(p, claims, "exp", 1, &tok->exp, NULL, why)) != NOTARY_TOKEN_OK
        || (st = date_claim(p, claims, "iat", 1, &tok->iat, NULL, why)) != NOTARY_TOKEN_OK
        || (st = date_claim(p, claims, "nbf", 0, &tok->nbf, &tok->has_nbf, why)) != NOTARY_TOKEN_OK)
        return st;

    if (jti) {
        if (!json_is_string(jti)) {
            *why = "token jti is not a string";
            return NOTARY_TOKEN_MALFORMED;
        }
        tok->jti = apr_pstrdup(p, json_string_value(jti));
    }
    return NOTARY_TOKEN_OK;
}

notary_token_status notary_token_parse(apr_pool_t *p, const char *compact, apr_size_t len,
                                       notary_token **tok_out, const char **detail)
{
    notary_token_status st = NOTARY_TOKEN_MALFORMED;
    const char *why = NULL, *dot1, *dot2, *s;
    json_t *hdr = NULL, *claims = NULL;
    notary_token *tok;
    apr_size_t slen;

    *tok_out = NULL;
    if (!compact || len == 0) {
        why = "token is empty";
        goto cleanup;
    }
    if (len > NOTARY_TOKEN_MAX_LEN) {
        st = NOTARY_TOKEN_TOO_LARGE;
        why = apr_psprintf(p, "token is %" APR_SIZE_T_FMT " bytes, more than %d",
                           len, NOTARY_TOKEN_MAX_LEN);
        goto cleanup;
    }
    dot1 = memchr(compact, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (apr_size_t)(dot1 + 1 - compact)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (apr_size_t)(dot2 + 1 - compact))) {
        why = "token is not three base64url parts joined by '.'";
        goto cleanup;
    }
    s = dot2 + 1;
    slen = len - (apr_size_t)(s - compact);
    /* An empty signature is judged after the header, so that the classic
     * "alg":"none" token is named as such. */
    if (dot1 == compact || dot2 == dot1 + 1) {
        why = "token has an empty part";
        goto cleanup;
    }

    tok = apr_pcalloc(p, sizeof(*tok));
    if (!(hdr = load_part(p, compact, (apr_size_t)(dot1 - compact), "header", &why)))
        goto cleanup;
    if ((st = parse_header(p, hdr, tok, &why)) != NOTARY_TOKEN_OK)
        goto cleanup;
    st = NOTARY_TOKEN_MALFORMED;
    if (!(claims = load_part(p, dot1 + 1, (apr_size_t)(dot2 - dot1 - 1), "payload", &why)))
        goto cleanup;
    if ((st = parse_claims(p, claims, tok, &why)) != NOTARY_TOKEN_OK)
        goto cleanup;
    st = NOTARY_TOKEN_MALFORMED;
    if (slen == 0) {
        why = "token has an empty signature";
        goto cleanup;
    }
    if (!(tok->sig = notary_b64url_decode(p, s, slen, &tok->sig_len))) {
        why = "token signature is not base64url";
        goto cleanup;
    }
    tok->signing_input_len = (apr_size_t)(dot2 - compact);
    tok->signing_input = apr_pstrmemdup(p, compact, tok->signing_input_len);
    *tok_out = tok;
    st = NOTARY_TOKEN_OK;

cleanup:
    json_decref(hdr);
    json_decref(claims);
    if (detail)
        *detail = st == NOTARY_TOKEN_OK ? NULL : why;
    return st;
}

/* ---- claims ------------------------------------------------------------- */

/* Host names compare case-blind (ASCII); one trailing dot is the same name. */
static int host_eq(const char *a, const char *b)
{
    apr_size_t la = strlen(a), lb = strlen(b);

    if (la && a[la - 1] == '.') la--;
    if (lb && b[lb - 1] == '.') lb--;
    return la == lb && la > 0 && apr_cstr_casecmpn(a, b, la) == 0;
}

notary_token_status notary_token_check_claims(apr_pool_t *p, const notary_token *tok,
                                              const char *audience,
                                              const unsigned char cert_sha256[32],
                                              apr_int64_t now, apr_int64_t max_age,
                                              const char **detail)
{
    notary_token_status st;
    const char *why = NULL;
    int i, aud_ok = 0;

    /* Each refusal says what was expected, so that a merchant can fix its
     * issuer from the 403 alone. */
    if (!tok) {
        st = NOTARY_TOKEN_MALFORMED;
        why = "no parsed token";
        goto done;
    }
    if (!cert_sha256 || CRYPTO_memcmp(tok->cnf_x5t_s256, cert_sha256, 32) != 0) {
        st = NOTARY_TOKEN_BINDING;
        why = "token cnf x5t#S256 is not the SHA-256 of the consumer's certificate";
        goto done;
    }
    for (i = 0; audience && i < tok->n_auds; i++)
        if (host_eq(tok->auds[i], audience))
            aud_ok = 1;
    if (!aud_ok) {
        st = NOTARY_TOKEN_AUDIENCE;
        why = audience ? apr_psprintf(p, "token aud does not name this notary: aud must be "
                                         "\"%s\"",
                                      audience)
                       : "token aud does not name this notary: no audience is configured";
        goto done;
    }
    if (tok->exp <= tok->iat) {
        st = NOTARY_TOKEN_LIFETIME;
        why = apr_psprintf(p, "token exp (%" APR_INT64_T_FMT ") is not after iat (%" APR_INT64_T_FMT "): exp must be later than iat",
                           tok->exp, tok->iat);
        goto done;
    }
    if (tok->exp - tok->iat > max_age) {
        st = NOTARY_TOKEN_LIFETIME;
        why = apr_psprintf(p, "token lifetime (exp - iat) is %" APR_INT64_T_FMT " s: at most NotaryTokenMaxAge %" APR_INT64_T_FMT " s is accepted",
                           tok->exp - tok->iat, max_age);
        goto done;
    }
    /* Dates are within [0, year 9999] (parse), so this cannot overflow. */
    if (now - NOTARY_TOKEN_SKEW > tok->exp) {
        st = NOTARY_TOKEN_EXPIRED;
        why = apr_psprintf(p, "token exp is %" APR_INT64_T_FMT " s in the past: at most %d s of clock skew is allowed",
                           now - tok->exp, NOTARY_TOKEN_SKEW);
        goto done;
    }
    if (tok->iat - NOTARY_TOKEN_SKEW > now) {
        st = NOTARY_TOKEN_NOT_YET_VALID;
        why = apr_psprintf(p, "token iat is %" APR_INT64_T_FMT " s in the future: at most %d s of clock skew is allowed",
                           tok->iat - now, NOTARY_TOKEN_SKEW);
        goto done;
    }
    if (tok->has_nbf && tok->nbf - NOTARY_TOKEN_SKEW > now) {
        st = NOTARY_TOKEN_NOT_YET_VALID;
        why = apr_psprintf(p, "token nbf is %" APR_INT64_T_FMT " s in the future: at most %d s of clock skew is allowed",
                           tok->nbf - now, NOTARY_TOKEN_SKEW);
        goto done;
    }
    st = NOTARY_TOKEN_OK;

done:
    if (detail)
        *detail = why;
    return st;
}

/* ---- signatures ---------------------------------------------------------- */

/* Width of R and S in a JWS ECDSA signature. */
static int ec_width(int alg)
{
    return alg == ALG_ES256 ? 32 : alg == ALG_ES384 ? 48
                                                    : 0;
}

notary_token_status notary_token_verify_signature(const notary_token *tok, EVP_PKEY *key,
                                                  const char **detail)
{
    notary_token_status st = NOTARY_TOKEN_BAD_SIGNATURE;
    const char *why = NULL;
    EVP_MD_CTX *mdctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    ECDSA_SIG *esig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char der[160], *q;
    const unsigned char *sig;
    size_t sig_len;
    int alg, w, n;

    /* Verification failures are the token's fault: do not leave them in the
     * thread's error queue, where mod_ssl would find them later. */
    ERR_set_mark();
    if (!tok || !tok->sig || !tok->signing_input) {
        st = NOTARY_TOKEN_MALFORMED;
        why = "no parsed token";
        goto cleanup;
    }
    if (!key) {
        st = NOTARY_TOKEN_ALG_KEY_MISMATCH;
        why = "no key to verify with";
        goto cleanup;
    }
    if ((alg = alg_lookup(tok->alg)) < 0) {
        st = NOTARY_TOKEN_ALG_UNSUPPORTED;
        why = "token alg is not supported";
        goto cleanup;
    }
    if ((st = alg_fits_key(alg, key, &why)) != NOTARY_TOKEN_OK)
        goto cleanup;
    st = NOTARY_TOKEN_BAD_SIGNATURE;

    sig = tok->sig;
    sig_len = tok->sig_len;
    if ((w = ec_width(alg)) > 0) {
        /* JWS carries R||S of fixed width; OpenSSL wants DER. */
        if (sig_len != (size_t)(2 * w)) {
            why = alg == ALG_ES256 ? "ES256 signature is not 64 bytes (R||S)"
                                   : "ES384 signature is not 96 bytes (R||S)";
            goto cleanup;
        }
        if (!(esig = ECDSA_SIG_new())
            || !(r = BN_bin2bn(sig, w, NULL)) || !(s = BN_bin2bn(sig + w, w, NULL))) {
            why = "internal error: out of memory";
            goto cleanup;
        }
        if (ECDSA_SIG_set0(esig, r, s) != 1) {
            why = "internal error: ECDSA_SIG_set0";
            goto cleanup;
        }
        r = s = NULL; /* owned by esig now */
        n = i2d_ECDSA_SIG(esig, NULL);
        if (n <= 0 || n > (int)sizeof(der)) {
            why = "internal error: i2d_ECDSA_SIG";
            goto cleanup;
        }
        q = der;
        if (i2d_ECDSA_SIG(esig, &q) != n) {
            why = "internal error: i2d_ECDSA_SIG";
            goto cleanup;
        }
        sig = der;
        sig_len = (size_t)n;
    }
    else if (alg == ALG_EDDSA) {
        if (sig_len != 64) {
            why = "EdDSA signature is not 64 bytes";
            goto cleanup;
        }
    }
    else if (EVP_PKEY_size(key) <= 0 || sig_len != (size_t)EVP_PKEY_size(key)) {
        /* RFC 7518 3.3: as long as the modulus, no shorter. */
        why = "RSA signature length is not the key's modulus length";
        goto cleanup;
    }

    if (!(mdctx = EVP_MD_CTX_new())) {
        why = "internal error: out of memory";
        goto cleanup;
    }
    if (EVP_DigestVerifyInit(mdctx, &pctx, alg_md(alg), NULL, key) != 1
        || !set_rsa_padding(alg, pctx)) {
        why = "cannot set up signature verification with this key";
        goto cleanup;
    }
    if (EVP_DigestVerify(mdctx, sig, sig_len, (const unsigned char *)tok->signing_input,
                         tok->signing_input_len)
        != 1) {
        why = "token signature does not verify with the key the merchant presented";
        goto cleanup;
    }
    st = NOTARY_TOKEN_OK;
    why = NULL;

cleanup:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(esig);
    EVP_MD_CTX_free(mdctx); /* frees pctx too */
    ERR_pop_to_mark();
    if (detail)
        *detail = why;
    return st;
}

/* ---- issuing ------------------------------------------------------------- */

static const char *json_text(apr_pool_t *p, json_t *j)
{
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    char *buf;

    if (n == 0)
        return NULL;
    buf = apr_palloc(p, n + 1);
    if (json_dumpb(j, buf, n, JSON_COMPACT) != n)
        return NULL;
    buf[n] = '\0';
    return buf;
}

const char *notary_token_sign_raw(apr_pool_t *p, EVP_PKEY *key, const char *alg_name,
                                  const char *header_json, const char *payload_json,
                                  const char **err)
{
    const char *out = NULL, *why = NULL, *input;
    EVP_MD_CTX *mdctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    ECDSA_SIG *esig = NULL;
    const BIGNUM *r, *s;
    unsigned char *sig = NULL, *raw;
    const unsigned char *q;
    size_t sig_len = 0;
    int alg, w;

    ERR_set_mark();
    if (!key || !header_json || !payload_json) {
        why = "no key, header or payload";
        goto cleanup;
    }
    if ((alg = alg_lookup(alg_name)) < 0) {
        why = apr_psprintf(p, "alg %s is not one of RS256 PS256 ES256 ES384 EdDSA",
                           alg_name ? alg_name : "(null)");
        goto cleanup;
    }
    if (!alg_key_family_ok(alg, key)) {
        why = apr_psprintf(p, "a %s key cannot make %s signatures",
                           OBJ_nid2sn(EVP_PKEY_base_id(key)), alg_name);
        goto cleanup;
    }
    input = apr_pstrcat(p,
                        notary_b64url_encode(p, (const unsigned char *)header_json, strlen(header_json)), ".",
                        notary_b64url_encode(p, (const unsigned char *)payload_json, strlen(payload_json)),
                        NULL);

    if (!(mdctx = EVP_MD_CTX_new())) {
        why = "out of memory";
        goto cleanup;
    }
    if (EVP_DigestSignInit(mdctx, &pctx, alg_md(alg), NULL, key) != 1
        || !set_rsa_padding(alg, pctx)) {
        why = ossl_err(p, "cannot set up signing with this key");
        goto cleanup;
    }
    if (EVP_DigestSign(mdctx, NULL, &sig_len, (const unsigned char *)input, strlen(input)) != 1
        || sig_len == 0) {
        why = ossl_err(p, "cannot size the signature");
        goto cleanup;
    }
    sig = apr_palloc(p, sig_len);
    if (EVP_DigestSign(mdctx, sig, &sig_len, (const unsigned char *)input, strlen(input)) != 1) {
        why = ossl_err(p, "signing failed");
        goto cleanup;
    }

    if (alg == ALG_ES256 || alg == ALG_ES384) {
        /* DER to JWS R||S, each as wide as the curve's order. */
        w = (EVP_PKEY_bits(key) + 7) / 8;
        q = sig;
        if (w <= 0 || !(esig = d2i_ECDSA_SIG(NULL, &q, (long)sig_len))) {
            why = ossl_err(p, "cannot decode the ECDSA signature");
            goto cleanup;
        }
        ECDSA_SIG_get0(esig, &r, &s);
        raw = apr_palloc(p, (apr_size_t)(2 * w));
        if (BN_bn2binpad(r, raw, w) != w || BN_bn2binpad(s, raw + w, w) != w) {
            why = "cannot encode the ECDSA signature as R||S";
            goto cleanup;
        }
        sig = raw;
        sig_len = (size_t)(2 * w);
    }
    out = apr_pstrcat(p, input, ".", notary_b64url_encode(p, sig, sig_len), NULL);

cleanup:
    ECDSA_SIG_free(esig);
    EVP_MD_CTX_free(mdctx);
    ERR_pop_to_mark();
    if (!out && err)
        *err = why;
    return out;
}

const char *notary_token_sign(apr_pool_t *p, EVP_PKEY *key, const char *alg, const char *aud,
                              const unsigned char cert_sha256[32], apr_int64_t iat,
                              apr_int64_t exp, const char *jti, const char **err)
{
    const char *out = NULL, *why = NULL, *htext, *ctext;
    json_t *hdr = NULL, *claims = NULL, *j;
    int id, nid;

    if (!key || !aud || !*aud || !cert_sha256) {
        why = "a key, an audience and the consumer certificate's hash are required";
        goto cleanup;
    }
    if (!alg) {
        switch (EVP_PKEY_base_id(key)) {
        case EVP_PKEY_RSA: alg = "RS256"; break;
        case EVP_PKEY_RSA_PSS: alg = "PS256"; break;
        case EVP_PKEY_ED25519: alg = "EdDSA"; break;
        case EVP_PKEY_EC:
            nid = ec_curve_nid(key);
            alg = nid == NID_X9_62_prime256v1 ? "ES256" : nid == NID_secp384r1 ? "ES384"
                                                                               : NULL;
            break;
        }
        if (!alg) {
            why = "no token algorithm for this key type (RSA, EC P-256, EC P-384, Ed25519)";
            goto cleanup;
        }
    }
    if ((id = alg_lookup(alg)) < 0) {
        why = apr_psprintf(p, "alg %s is not one of RS256 PS256 ES256 ES384 EdDSA", alg);
        goto cleanup;
    }
    if (alg_fits_key(id, key, &why) != NOTARY_TOKEN_OK)
        goto cleanup;
    if (iat < 0 || exp > NOTARY_DATE_MAX || exp <= iat) {
        why = "exp must be after iat, both between 1970 and 9999";
        goto cleanup;
    }

    hdr = json_pack("{s:s, s:s}", "alg", alg, "typ", "notary+jwt");
    claims = json_pack("{s:s, s:{s:s}, s:I, s:I}", "aud", aud,
                       "cnf", "x5t#S256", notary_b64url_encode(p, cert_sha256, 32),
                       "iat", (json_int_t)iat, "exp", (json_int_t)exp);
    if (!hdr || !claims) {
        why = "cannot build the token JSON (aud not UTF-8?)";
        goto cleanup;
    }
    if (jti) {
        if (!(j = json_string(jti)) || json_object_set_new(claims, "jti", j) != 0) {
            why = "cannot add jti (not UTF-8?)";
            goto cleanup;
        }
    }
    if (!(htext = json_text(p, hdr)) || !(ctext = json_text(p, claims))) {
        why = "cannot serialize the token JSON";
        goto cleanup;
    }
    out = notary_token_sign_raw(p, key, alg, htext, ctext, &why);

cleanup:
    json_decref(hdr);
    json_decref(claims);
    if (!out && err)
        *err = why;
    return out;
}

/* ---- names ---------------------------------------------------------------- */

const char *notary_token_status_str(notary_token_status s)
{
    switch (s) {
    case NOTARY_TOKEN_OK: return "token verified";
    case NOTARY_TOKEN_MISSING: return "no token and no contract session";
    case NOTARY_TOKEN_TOO_LARGE: return "token too large";
    case NOTARY_TOKEN_MALFORMED: return "token malformed";
    case NOTARY_TOKEN_ALG_NONE: return "token algorithm none is refused";
    case NOTARY_TOKEN_ALG_HMAC: return "token hmac algorithms (hs256, hs384, hs512) are refused";
    case NOTARY_TOKEN_ALG_UNSUPPORTED: return "token algorithm not supported";
    case NOTARY_TOKEN_ALG_KEY_MISMATCH: return "token algorithm does not fit the key the merchant presented";
    case NOTARY_TOKEN_BAD_TYP: return "token typ is not notary+jwt or jwt";
    case NOTARY_TOKEN_CRIT: return "token has critical header extensions";
    case NOTARY_TOKEN_MISSING_CLAIM: return "token lacks a required claim";
    case NOTARY_TOKEN_EXPIRED: return "token expired";
    case NOTARY_TOKEN_NOT_YET_VALID: return "token not yet valid";
    case NOTARY_TOKEN_LIFETIME: return "token lifetime too long";
    case NOTARY_TOKEN_AUDIENCE: return "token is for another notary";
    case NOTARY_TOKEN_BINDING: return "token is bound to another consumer certificate";
    case NOTARY_TOKEN_BAD_SIGNATURE: return "token signature does not verify with the key the merchant presented";
    }
    return "token status unknown";
}

const char *notary_token_status_name(notary_token_status s)
{
    switch (s) {
    case NOTARY_TOKEN_OK: return "OK";
    case NOTARY_TOKEN_MISSING: return "MISSING";
    case NOTARY_TOKEN_TOO_LARGE: return "TOO_LARGE";
    case NOTARY_TOKEN_MALFORMED: return "MALFORMED";
    case NOTARY_TOKEN_ALG_NONE: return "ALG_NONE";
    case NOTARY_TOKEN_ALG_HMAC: return "ALG_HMAC";
    case NOTARY_TOKEN_ALG_UNSUPPORTED: return "ALG_UNSUPPORTED";
    case NOTARY_TOKEN_ALG_KEY_MISMATCH: return "ALG_KEY_MISMATCH";
    case NOTARY_TOKEN_BAD_TYP: return "BAD_TYP";
    case NOTARY_TOKEN_CRIT: return "CRIT";
    case NOTARY_TOKEN_MISSING_CLAIM: return "MISSING_CLAIM";
    case NOTARY_TOKEN_EXPIRED: return "EXPIRED";
    case NOTARY_TOKEN_NOT_YET_VALID: return "NOT_YET_VALID";
    case NOTARY_TOKEN_LIFETIME: return "LIFETIME";
    case NOTARY_TOKEN_AUDIENCE: return "AUDIENCE";
    case NOTARY_TOKEN_BINDING: return "BINDING";
    case NOTARY_TOKEN_BAD_SIGNATURE: return "BAD_SIGNATURE";
    }
    return "UNKNOWN";
}
