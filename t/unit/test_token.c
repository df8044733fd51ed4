/* Unit tests of the token core (notary_util, notary_token), TAP.
 * Keys and the consumer certificate are made in-process; the vectors in
 * docs/vectors/ are read from $NOTARY_SRCDIR (default "."). */
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "notary_util.h"
#include "notary_token.h"
#include "tap.h"

#define NOW APR_INT64_C(1700000000)
#define AUD "notary.example"
#define MAXAGE 900

static apr_pool_t *pool;
static EVP_PKEY *k_rsa, *k_rsa_b, *k_rsa1024, *k_p256, *k_p256_b, *k_p384, *k_ed25519,
    *k_ed448, *k_k256;
static unsigned char csha[32], other_sha[32];

/* ---- fixtures ------------------------------------------------------------- */

static EVP_PKEY *keygen(int type, int param)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type, NULL);
    EVP_PKEY *k = NULL;

    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1)
        goto cleanup;
    if (type == EVP_PKEY_RSA && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, param) <= 0)
        goto cleanup;
    if (type == EVP_PKEY_EC && (EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, param) <= 0 || EVP_PKEY_CTX_set_ec_param_enc(ctx, OPENSSL_EC_NAMED_CURVE) <= 0))
        goto cleanup;
    if (EVP_PKEY_keygen(ctx, &k) != 1)
        k = NULL;
cleanup:
    EVP_PKEY_CTX_free(ctx);
    if (!k) {
        diag("keygen(%d, %d) failed", type, param);
        exit(2);
    }
    return k;
}

static X509 *self_signed(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    X509_NAME *name = NULL;

    if (!x || X509_set_version(x, 2) != 1
        || ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1
        || !X509_gmtime_adj(X509_getm_notBefore(x), 0)
        || !X509_gmtime_adj(X509_getm_notAfter(x), 86400)
        || !(name = X509_get_subject_name(x))
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                                      -1, -1, 0)
               != 1
        || X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, key) != 1
        || X509_sign(x, key, EVP_sha256()) <= 0) {
        diag("self_signed failed");
        exit(2);
    }
    return x;
}

static const char *b64(const void *d, size_t n)
{
    return notary_b64url_encode(pool, d, n);
}

static const char *b64s(const char *s)
{
    return b64(s, strlen(s));
}

static const char *claims(const char *aud_json, const unsigned char *sha, apr_int64_t iat,
                          apr_int64_t exp, const char *extra)
{
    return apr_psprintf(pool, "{\"aud\":%s,\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "%s}",
                        aud_json, b64(sha, 32), iat, exp, extra ? extra : "");
}

static const char *std_claims(void)
{
    return claims("\"" AUD "\"", csha, NOW, NOW + 600, NULL);
}

static const char *raw(EVP_PKEY *k, const char *alg, const char *hdr, const char *pl)
{
    const char *err = NULL, *t = notary_token_sign_raw(pool, k, alg, hdr, pl, &err);

    if (!t)
        diag("sign_raw(%s) failed: %s", alg, err ? err : "?");
    return t ? t : "";
}

static const char *hdr_for(const char *alg)
{
    return apr_psprintf(pool, "{\"alg\":\"%s\",\"typ\":\"notary+jwt\"}", alg);
}

/* An unsigned JWS of arbitrary parts (for header checks made before the key). */
static const char *unsigned_jws(const char *hdr, const char *pl, const char *sig)
{
    return apr_pstrcat(pool, b64s(hdr), ".", b64s(pl), ".", sig, NULL);
}

static const char *hmac_jws(const char *alg, const EVP_MD *md, const void *key, size_t klen)
{
    const char *input = apr_pstrcat(pool, b64s(hdr_for(alg)), ".", b64s(std_claims()), NULL);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;

    if (!HMAC(md, key, (int)klen, (const unsigned char *)input, strlen(input), mac, &mlen))
        diag("HMAC failed");
    return apr_pstrcat(pool, input, ".", b64(mac, mlen), NULL);
}

/* Parse, verify with key, check claims: the order the glue uses. */
static notary_token_status verdict_at(const char *t, EVP_PKEY *key, const char *aud,
                                      const unsigned char *sha, apr_int64_t now,
                                      apr_int64_t max_age, const char **detail)
{
    notary_token *tok = NULL;
    notary_token_status st;

    *detail = NULL;
    st = notary_token_parse(pool, t, strlen(t), &tok, detail);
    if (st == NOTARY_TOKEN_OK)
        st = notary_token_verify_signature(tok, key, detail);
    if (st == NOTARY_TOKEN_OK)
        st = notary_token_check_claims(pool, tok, aud, sha, now, max_age, detail);
    return st;
}

static notary_token_status verdict(const char *t, EVP_PKEY *key, const char **detail)
{
    return verdict_at(t, key, AUD, csha, NOW, MAXAGE, detail);
}

#define is_status(got, want, detail, ...) \
    do { \
        notary_token_status g2_ = (got), w2_ = (want); \
        ok(g2_ == w2_, __VA_ARGS__); \
        if (g2_ != w2_) printf("#   got %s (%s), want %s\n", notary_token_status_name(g2_), \
                               (detail) ? (detail) : "no detail", notary_token_status_name(w2_)); \
    } while (0)

#define expect(t, key, want, ...) \
    do { \
        const char *d_ = NULL; \
        notary_token_status s_ = verdict((t), (key), &d_); \
        is_status(s_, (want), d_, __VA_ARGS__); \
    } while (0)

/* Replace one character of the signature part, keeping it valid base64url. */
static const char *flip_sig(const char *t)
{
    char *c = apr_pstrdup(pool, t);
    char *s = strrchr(c, '.') + 1;

    s[2] = s[2] == 'A' ? 'B' : 'A';
    return c;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_b64url(void)
{
    static const struct {
        const char *in, *out;
    } v[] = {
        { "", "" },
        { "f", "Zg" },
        { "fo", "Zm8" },
        { "foo", "Zm9v" },
        { "foob", "Zm9vYg" },
        { "fooba", "Zm9vYmE" },
        { "foobar", "Zm9vYmFy" },
    };
    static const char *bad[] = { "Zg==", "Zg=", "Z", "Zh", "Zm9", "Zm+v", "Zm/v", "Zm 9v",
                                 "Zm9v\n", "Zm9v=", "Zm.v", "Zm9\xc3\xa9" };
    const unsigned char bin[] = { 0xfb, 0xff, 0xbf };
    unsigned char *d;
    apr_size_t i, n = 99;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        is_str(b64s(v[i].in), v[i].out, "b64url encode '%s'", v[i].in);
        d = notary_b64url_decode(pool, v[i].out, strlen(v[i].out), &n);
        ok(d && n == strlen(v[i].in) && memcmp(d, v[i].in, n) == 0,
           "b64url decode '%s'", v[i].out);
    }
    is_str(b64(bin, 3), "-_-_", "b64url uses - and _");
    d = notary_b64url_decode(pool, "-_-_", 4, &n);
    ok(d && n == 3 && memcmp(d, bin, 3) == 0, "b64url decodes - and _");
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(notary_b64url_decode(pool, bad[i], strlen(bad[i]), &n) == NULL,
           "b64url refuses '%s'", notary_hex(pool, (const unsigned char *)bad[i], strlen(bad[i])));
    ok(notary_b64url_decode(pool, "Zm\0v", 4, &n) == NULL, "b64url refuses an embedded NUL");
}

static void test_util(void)
{
    unsigned char h[32], *der;
    const unsigned char *q;
    apr_size_t len = 0;
    EVP_PKEY *back;
    X509 *x, *y;
    BIO *bio;
    char *pem;
    long plen;

    notary_sha256("abc", 3, h);
    is_str(notary_hex(pool, h, 32),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256('abc')");
    x = self_signed(k_p256, "pem-test");
    der = notary_x509_spki_der(pool, x, &len);
    q = der;
    back = der ? d2i_PUBKEY(NULL, &q, (long)len) : NULL;
    ok(back && EVP_PKEY_eq(back, k_p256) == 1, "x509_spki_der: the certificate's P-256 key");
    EVP_PKEY_free(back);
    {
        unsigned char *re = NULL;
        int n = i2d_PUBKEY(k_p256, &re);
        ok(der && n == (int)len && !memcmp(re, der, len),
           "... the same bytes as the key re-encoded (i2d_PUBKEY)");
        OPENSSL_free(re);
    }
    ok(notary_x509_spki_der(pool, NULL, &len) == NULL, "x509_spki_der: no certificate, NULL");

    bio = BIO_new(BIO_s_mem());
    ok(bio && PEM_write_bio_X509(bio, x) == 1, "write a PEM certificate");
    plen = BIO_get_mem_data(bio, &pem);
    y = notary_x509_from_pem(pem, (apr_size_t)plen);
    ok(y && X509_cmp(x, y) == 0, "x509_from_pem reads it back");
    der = notary_x509_der(pool, y, &len);
    ok(der && (long)len == i2d_X509(x, NULL), "x509_der has the DER length (%d)", (int)len);
    X509_free(y);
    ok(notary_x509_from_pem(pem, 40) == NULL, "x509_from_pem refuses a truncated PEM");
    ok(notary_x509_from_pem("hello", 5) == NULL, "x509_from_pem refuses non-PEM");
    ok(ERR_peek_error() == 0, "x509_from_pem leaves no errors in the queue");
    BIO_free(bio);
    X509_free(x);
}

static void test_each_alg(void)
{
    static const struct {
        const char *alg;
        EVP_PKEY **key;
        size_t sig_len;
    } v[] = {
        { "RS256", &k_rsa, 256 },
        { "PS256", &k_rsa, 256 },
        { "ES256", &k_p256, 64 },
        { "ES384", &k_p384, 96 },
        { "EdDSA", &k_ed25519, 64 },
    };
    size_t i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        const char *err = NULL, *d = NULL, *t;
        notary_token *tok = NULL;
        notary_token_status st;

        t = notary_token_sign(pool, *v[i].key, v[i].alg, AUD, csha, NOW, NOW + 600, "id-1", &err);
        ok(t != NULL, "%s: sign (%s)", v[i].alg, t ? "ok" : err);
        if (!t)
            continue;
        st = notary_token_parse(pool, t, strlen(t), &tok, &d);
        is_status(st, NOTARY_TOKEN_OK, d, "%s: parse", v[i].alg);
        if (st != NOTARY_TOKEN_OK)
            continue;
        is_str(tok->alg, v[i].alg, "%s: alg", v[i].alg);
        is_str(tok->typ, "notary+jwt", "%s: typ", v[i].alg);
        is_str(tok->aud_first, AUD, "%s: aud", v[i].alg);
        is_str(tok->jti, "id-1", "%s: jti", v[i].alg);
        is_int(tok->iat, NOW, "%s: iat", v[i].alg);
        is_int(tok->exp, NOW + 600, "%s: exp", v[i].alg);
        is_int(tok->sig_len, v[i].sig_len, "%s: signature length", v[i].alg);
        ok(memcmp(tok->cnf_x5t_s256, csha, 32) == 0, "%s: cnf x5t#S256", v[i].alg);
        ok(tok->signing_input_len == (apr_size_t)(strrchr(t, '.') - t)
               && strncmp(tok->signing_input, t, tok->signing_input_len) == 0,
           "%s: signing input", v[i].alg);
        st = notary_token_verify_signature(tok, *v[i].key, &d);
        is_status(st, NOTARY_TOKEN_OK, d, "%s: signature verifies", v[i].alg);
        st = notary_token_check_claims(pool, tok, AUD, csha, NOW, MAXAGE, &d);
        is_status(st, NOTARY_TOKEN_OK, d, "%s: claims check", v[i].alg);
        expect(flip_sig(t), *v[i].key, NOTARY_TOKEN_BAD_SIGNATURE, "%s: flipped signature bit", v[i].alg);
    }
}

static void test_sign_defaults(void)
{
    static const struct {
        EVP_PKEY **key;
        const char *alg;
    } v[] = {
        { &k_rsa, "RS256" },
        { &k_p256, "ES256" },
        { &k_p384, "ES384" },
        { &k_ed25519, "EdDSA" },
    };
    const char *err, *t, *d;
    notary_token *tok;
    size_t i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        err = NULL;
        tok = NULL;
        t = notary_token_sign(pool, *v[i].key, NULL, AUD, csha, NOW, NOW + 60, NULL, &err);
        ok(t && notary_token_parse(pool, t, strlen(t), &tok, &d) == NOTARY_TOKEN_OK
               && strcmp(tok->alg, v[i].alg) == 0 && tok->jti == NULL,
           "default alg %s (%s)", v[i].alg, t ? (tok ? tok->alg : d) : err);
    }
    err = NULL;
    ok(!notary_token_sign(pool, k_rsa, "ES256", AUD, csha, NOW, NOW + 60, NULL, &err) && err,
       "sign refuses ES256 with an RSA key (%s)", err ? err : "no error");
    err = NULL;
    ok(!notary_token_sign(pool, k_rsa1024, NULL, AUD, csha, NOW, NOW + 60, NULL, &err) && err,
       "sign refuses RSA-1024 (%s)", err ? err : "no error");
    err = NULL;
    ok(!notary_token_sign(pool, k_p256, "ES384", AUD, csha, NOW, NOW + 60, NULL, &err) && err,
       "sign refuses ES384 with P-256 (%s)", err ? err : "no error");
    err = NULL;
    ok(!notary_token_sign(pool, k_ed448, NULL, AUD, csha, NOW, NOW + 60, NULL, &err) && err,
       "sign refuses Ed448 (%s)", err ? err : "no error");
    err = NULL;
    ok(!notary_token_sign(pool, k_rsa, "HS256", AUD, csha, NOW, NOW + 60, NULL, &err) && err,
       "sign refuses HS256 (%s)", err ? err : "no error");
    err = NULL;
    ok(!notary_token_sign(pool, k_rsa, NULL, AUD, csha, NOW, NOW, NULL, &err) && err,
       "sign refuses exp == iat (%s)", err ? err : "no error");
}

/* An RSA-PSS key (id-RSASSA-PSS in the certificate) fits PS256 only. */
static void test_rsa_pss_key(void)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA_PSS, NULL);
    EVP_PKEY *k = NULL;
    const char *err = NULL, *t;
    notary_token *tok = NULL;

    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) <= 0
        || EVP_PKEY_keygen(ctx, &k) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    ok(k != NULL, "generate an RSA-PSS key");
    if (!k)
        return;
    t = notary_token_sign(pool, k, NULL, AUD, csha, NOW, NOW + 600, NULL, &err);
    ok(t && notary_token_parse(pool, t, strlen(t), &tok, &err) == NOTARY_TOKEN_OK
           && strcmp(tok->alg, "PS256") == 0,
       "RSA-PSS key: default alg PS256 (%s)",
       tok ? tok->alg : err);
    expect(t ? t : "", k, NOTARY_TOKEN_OK, "RSA-PSS key: PS256 verifies");
    expect(raw(k_rsa, "RS256", hdr_for("RS256"), std_claims()), k, NOTARY_TOKEN_ALG_KEY_MISMATCH,
           "RSA-PSS key: RS256 does not fit");
    EVP_PKEY_free(k);
}

static void test_alg_refusals(void)
{
    unsigned char *der;
    apr_size_t dlen = 0;
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    long plen = 0;

    expect(unsigned_jws("{\"alg\":\"none\"}", std_claims(), ""), k_rsa, NOTARY_TOKEN_ALG_NONE,
           "alg none with an empty signature");
    expect(unsigned_jws("{\"alg\":\"none\",\"typ\":\"JWT\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_NONE, "alg none with a signature");
    expect(unsigned_jws("{\"alg\":\"NoNe\"}", std_claims(), ""), k_rsa, NOTARY_TOKEN_ALG_NONE,
           "alg NoNe");
    expect(hmac_jws("HS256", EVP_sha256(), "secret", 6), k_rsa, NOTARY_TOKEN_ALG_HMAC, "HS256");
    expect(hmac_jws("HS384", EVP_sha384(), "secret", 6), k_rsa, NOTARY_TOKEN_ALG_HMAC, "HS384");
    expect(hmac_jws("HS512", EVP_sha512(), "secret", 6), k_rsa, NOTARY_TOKEN_ALG_HMAC, "HS512");

    /* The classic confusion: HMAC keyed with the verifier's public key. */
    if (bio && PEM_write_bio_PUBKEY(bio, k_rsa) == 1)
        plen = BIO_get_mem_data(bio, &pem);
    ok(plen > 0, "merchant public key as PEM");
    expect(hmac_jws("HS256", EVP_sha256(), pem, (size_t)plen), k_rsa, NOTARY_TOKEN_ALG_HMAC,
           "HS256 keyed with the merchant's public key PEM");
    {
        unsigned char *re = NULL;
        int n = i2d_PUBKEY(k_rsa, &re);
        der = n > 0 ? apr_pmemdup(pool, re, (apr_size_t)n) : NULL;
        dlen = n > 0 ? (apr_size_t)n : 0;
        OPENSSL_free(re);
    }
    expect(hmac_jws("HS256", EVP_sha256(), der, dlen), k_rsa, NOTARY_TOKEN_ALG_HMAC,
           "HS256 keyed with the merchant's public key DER");
    BIO_free(bio);

    expect(unsigned_jws("{\"alg\":\"RS512\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "RS512");
    expect(unsigned_jws("{\"alg\":\"ES512\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "ES512");
    expect(unsigned_jws("{\"alg\":\"PS384\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "PS384");
    expect(unsigned_jws("{\"alg\":\"rs256\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "rs256 (alg is case-sensitive)");
    expect(unsigned_jws("{\"alg\":\"Ed25519\"}", std_claims(), "c2ln"), k_ed25519,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "Ed25519 (the JWS name is EdDSA)");
    expect(unsigned_jws("{\"alg\":\"RSA-OAEP\",\"enc\":\"A128GCM\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_ALG_UNSUPPORTED, "a JWE alg");
    expect(unsigned_jws("{\"typ\":\"JWT\"}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_MALFORMED, "no alg");
    expect(unsigned_jws("{\"alg\":256}", std_claims(), "c2ln"), k_rsa,
           NOTARY_TOKEN_MALFORMED, "alg is a number");
}

static void test_key_mismatch(void)
{
    const char *es256 = raw(k_p256, "ES256", hdr_for("ES256"), std_claims());
    const char *es384 = raw(k_p384, "ES384", hdr_for("ES384"), std_claims());
    const char *rs256 = raw(k_rsa, "RS256", hdr_for("RS256"), std_claims());
    const char *ps256 = raw(k_rsa, "PS256", hdr_for("PS256"), std_claims());
    const char *eddsa = raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), std_claims());

    expect(es256, k_rsa, NOTARY_TOKEN_ALG_KEY_MISMATCH, "ES256 with an RSA key");
    expect(es256, k_p384, NOTARY_TOKEN_ALG_KEY_MISMATCH, "ES256 with a P-384 key");
    expect(es384, k_p256, NOTARY_TOKEN_ALG_KEY_MISMATCH, "ES384 with a P-256 key");
    expect(rs256, k_p256, NOTARY_TOKEN_ALG_KEY_MISMATCH, "RS256 with a P-256 key");
    expect(rs256, k_ed25519, NOTARY_TOKEN_ALG_KEY_MISMATCH, "RS256 with an Ed25519 key");
    expect(ps256, k_p384, NOTARY_TOKEN_ALG_KEY_MISMATCH, "PS256 with a P-384 key");
    expect(eddsa, k_rsa, NOTARY_TOKEN_ALG_KEY_MISMATCH, "EdDSA with an RSA key");
    expect(eddsa, k_ed448, NOTARY_TOKEN_ALG_KEY_MISMATCH, "EdDSA with an Ed448 key");
    expect(raw(k_rsa1024, "RS256", hdr_for("RS256"), std_claims()), k_rsa1024,
           NOTARY_TOKEN_ALG_KEY_MISMATCH, "RS256 signed and verified with RSA-1024");
    expect(raw(k_rsa1024, "PS256", hdr_for("PS256"), std_claims()), k_rsa1024,
           NOTARY_TOKEN_ALG_KEY_MISMATCH, "PS256 signed and verified with RSA-1024");
    expect(raw(k_k256, "ES256", hdr_for("ES256"), std_claims()), k_k256,
           NOTARY_TOKEN_ALG_KEY_MISMATCH, "ES256 on secp256k1 (that is ES256K)");
    expect(es256, NULL, NOTARY_TOKEN_ALG_KEY_MISMATCH, "no key at all");
}

static void test_header(void)
{
    static const char *good[] = { "notary+jwt", "NOTARY+JWT", "JWT", "jwt",
                                  "application/notary+jwt", "application/JWT" };
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        expect(raw(k_p256, "ES256", apr_psprintf(pool, "{\"alg\":\"ES256\",\"typ\":\"%s\"}", good[i]),
                   std_claims()),
               k_p256, NOTARY_TOKEN_OK, "typ %s accepted", good[i]);
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\"}", std_claims()), k_p256, NOTARY_TOKEN_OK,
           "typ absent accepted");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"typ\":\"JOSE\"}", std_claims()), k_p256,
           NOTARY_TOKEN_BAD_TYP, "typ JOSE");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", std_claims()), k_p256,
           NOTARY_TOKEN_BAD_TYP, "typ at+jwt (an access token)");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"typ\":1}", std_claims()), k_p256,
           NOTARY_TOKEN_MALFORMED, "typ a number");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"crit\":[\"exp\"],\"exp\":1}", std_claims()),
           k_p256, NOTARY_TOKEN_CRIT, "crit [exp]");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"b64\":false,\"crit\":[\"b64\"]}", std_claims()),
           k_p256, NOTARY_TOKEN_CRIT, "crit [b64] (unencoded payload)");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"crit\":[]}", std_claims()),
           k_p256, NOTARY_TOKEN_CRIT, "crit []");
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"alg\":\"ES256\"}", std_claims()),
           k_p256, NOTARY_TOKEN_MALFORMED, "duplicate alg in the header");

    /* Header keys are ignored: a token naming another key still needs the
     * presented key, and one signed by the named key fails. */
    expect(raw(k_p256, "ES256", "{\"alg\":\"ES256\",\"kid\":\"x\",\"x5u\":\"https://evil/\","
                                "\"jku\":\"https://evil/\",\"x5t\":\"AAAA\"}",
               std_claims()),
           k_p256, NOTARY_TOKEN_OK, "kid, x5u, jku, x5t ignored");
    expect(raw(k_p256_b, "ES256", "{\"alg\":\"ES256\",\"jwk\":{\"kty\":\"EC\"}}", std_claims()),
           k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "signed by the key in jwk, not the presented one");
}

static void test_claims(void)
{
    const char *t, *d;
    notary_token *tok = NULL;

#define EXPECT_CLAIMS(pl, want, ...) \
    expect(raw(k_p256, "ES256", hdr_for("ES256"), (pl)), k_p256, (want), __VA_ARGS__)

    EXPECT_CLAIMS(apr_psprintf(pool, "{\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MISSING_CLAIM, "aud missing");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", NOW, NOW + 60),
                  NOTARY_TOKEN_MISSING_CLAIM, "cnf missing");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 20), NOW, NOW + 60),
                  NOTARY_TOKEN_MISSING_CLAIM, "cnf without x5t#S256");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW),
                  NOTARY_TOKEN_MISSING_CLAIM, "exp missing");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW + 60),
                  NOTARY_TOKEN_MISSING_CLAIM, "iat missing");

    EXPECT_CLAIMS(claims("42", csha, NOW, NOW + 60, NULL), NOTARY_TOKEN_MALFORMED, "aud a number");
    EXPECT_CLAIMS(claims("[]", csha, NOW, NOW + 60, NULL), NOTARY_TOKEN_MALFORMED, "aud empty array");
    EXPECT_CLAIMS(claims("[\"" AUD "\",7]", csha, NOW, NOW + 60, NULL), NOTARY_TOKEN_MALFORMED,
                  "aud array with a number");
    EXPECT_CLAIMS(claims("\"no\\u0000tary.example\"", csha, NOW, NOW + 60, NULL),
                  NOTARY_TOKEN_MALFORMED, "aud with an escaped NUL");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":\"%s\",\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "cnf a string");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 31), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "x5t#S256 of 31 bytes");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s=\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "x5t#S256 with padding");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT "}", notary_hex(pool, csha, 32),
                               NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "x5t#S256 in hex");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":\"%" APR_INT64_T_FMT "\"}", b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "exp as a string");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":\"%" APR_INT64_T_FMT "\",\"exp\":%" APR_INT64_T_FMT "}", b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "iat as a string");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":true"
                                     ",\"exp\":%" APR_INT64_T_FMT "}",
                               b64(csha, 32), NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "iat true");
    EXPECT_CLAIMS(claims("\"" AUD "\"", csha, NOW, NOW + 60, ",\"jti\":5"), NOTARY_TOKEN_MALFORMED,
                  "jti a number");
    EXPECT_CLAIMS(claims("\"" AUD "\"", csha, NOW, NOW + 60, ",\"nbf\":\"x\""), NOTARY_TOKEN_MALFORMED,
                  "nbf a string");
    EXPECT_CLAIMS(claims("\"" AUD "\"", csha, -5, NOW + 60, NULL), NOTARY_TOKEN_MALFORMED,
                  "iat negative");
    EXPECT_CLAIMS(claims("\"" AUD "\"", csha, NOW, APR_INT64_C(9223372036854775807), NULL),
                  NOTARY_TOKEN_MALFORMED, "exp INT64_MAX");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":1e300}", b64(csha, 32), NOW),
                  NOTARY_TOKEN_MALFORMED, "exp 1e300");
    EXPECT_CLAIMS(apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ",\"exp\":%" APR_INT64_T_FMT ",\"aud\":\"evil\"}",
                               b64(csha, 32), NOW, NOW + 60),
                  NOTARY_TOKEN_MALFORMED, "duplicate aud claim");

    /* Reals are floored. */
    t = raw(k_p256, "ES256", hdr_for("ES256"),
            apr_psprintf(pool, "{\"aud\":\"" AUD "\",\"cnf\":{\"x5t#S256\":\"%s\"},\"iat\":%" APR_INT64_T_FMT ".5,\"exp\":%" APR_INT64_T_FMT ".999}",
                         b64(csha, 32), NOW, NOW + 60));
    ok(notary_token_parse(pool, t, strlen(t), &tok, &d) == NOTARY_TOKEN_OK
           && tok->iat == NOW && tok->exp == NOW + 60,
       "real iat/exp floored (%s)",
       tok ? apr_psprintf(pool, "%" APR_INT64_T_FMT "/%" APR_INT64_T_FMT, tok->iat, tok->exp) : d);
    /* Unknown claims are ignored. */
    EXPECT_CLAIMS(claims("\"" AUD "\"", csha, NOW, NOW + 60, ",\"iss\":\"shop\",\"x\":[1,{}]"),
                  NOTARY_TOKEN_OK, "unknown claims ignored");
#undef EXPECT_CLAIMS
}

static void test_times_audience_binding(void)
{
    const char *t = raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), std_claims()), *d;
    notary_token_status st;

#define AT(tk, aud, sha, now, maxage, want, ...) \
    do { \
        st = verdict_at((tk), k_ed25519, (aud), (sha), (now), (maxage), &d); \
        is_status(st, (want), d, __VA_ARGS__); \
    } while (0)
    AT(t, AUD, csha, NOW + 600 + 60, MAXAGE, NOTARY_TOKEN_OK, "accepted at exp + 60 s (skew)");
    AT(t, AUD, csha, NOW + 600 + 61, MAXAGE, NOTARY_TOKEN_EXPIRED, "expired at exp + 61 s");
    AT(t, AUD, csha, NOW - 60, MAXAGE, NOTARY_TOKEN_OK, "accepted at iat - 60 s (skew)");
    AT(t, AUD, csha, NOW - 61, MAXAGE, NOTARY_TOKEN_NOT_YET_VALID, "not yet valid at iat - 61 s");
    AT(t, AUD, csha, NOW, 600, NOTARY_TOKEN_OK, "lifetime == max_age accepted");
    AT(t, AUD, csha, NOW, 599, NOTARY_TOKEN_LIFETIME, "lifetime max_age + 1 refused");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), claims("\"" AUD "\"", csha, NOW, NOW + 901, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_LIFETIME, "lifetime 901 s with the default max 900");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), claims("\"" AUD "\"", csha, NOW, NOW, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_LIFETIME, "exp == iat");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), claims("\"" AUD "\"", csha, NOW, NOW - 10, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_LIFETIME, "exp < iat");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("\"" AUD "\"", csha, NOW, NOW + 600, ",\"nbf\":1700000100")),
       AUD, csha, NOW, 900, NOTARY_TOKEN_NOT_YET_VALID, "nbf 100 s ahead");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("\"" AUD "\"", csha, NOW, NOW + 600, ",\"nbf\":1700000060")),
       AUD, csha, NOW, 900, NOTARY_TOKEN_OK, "nbf 60 s ahead (skew)");

    AT(t, "other.example", csha, NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE, "wrong audience");
    AT(t, "NOTARY.Example", csha, NOW, MAXAGE, NOTARY_TOKEN_OK, "audience compare is case-blind");
    AT(t, AUD ".", csha, NOW, MAXAGE, NOTARY_TOKEN_OK, "trailing dot is the same host");
    AT(t, "notary.example.evil", csha, NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE, "audience prefix");
    AT(t, "notary.exampl", csha, NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE, "audience truncated");
    AT(t, NULL, csha, NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE, "no audience configured");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("[\"shop.example\",\"Notary.Example\"]", csha, NOW, NOW + 600, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_OK, "aud array containing the notary");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("[\"shop.example\",\"other.example\"]", csha, NOW, NOW + 600, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_AUDIENCE, "aud array without the notary");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("\"notary.example:8443\"", csha, NOW, NOW + 600, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_AUDIENCE, "aud with a port (host only)");
    AT(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
           claims("\"https://notary.example\"", csha, NOW, NOW + 600, NULL)),
       AUD, csha, NOW, 900, NOTARY_TOKEN_AUDIENCE, "aud as a URL (host only)");

    AT(t, AUD, other_sha, NOW, MAXAGE, NOTARY_TOKEN_BINDING, "bound to another consumer");
    AT(t, AUD, NULL, NOW, MAXAGE, NOTARY_TOKEN_BINDING, "no consumer certificate hash");
    /* Order: binding before audience before times. */
    AT(t, "other.example", other_sha, NOW + 10000, MAXAGE, NOTARY_TOKEN_BINDING,
       "binding is checked first");
    AT(t, "other.example", csha, NOW + 10000, MAXAGE, NOTARY_TOKEN_AUDIENCE,
       "audience before expiry");
#undef AT
}

/* A refusal names what was expected: the merchant fixes its issuer from the
 * 403 alone. */
static void test_claim_details(void)
{
    const char *t = raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), std_claims()), *d;
    notary_token_status st;

#define DETAIL(tk, aud, now, maxage, want, want_detail, ...) \
    do { \
        st = verdict_at((tk), k_ed25519, (aud), csha, (now), (maxage), &d); \
        is_status(st, (want), d, __VA_ARGS__); \
        is_str(d, (want_detail), "... and the detail says what was expected: " __VA_ARGS__); \
    } while (0)
    DETAIL(t, "other.example", NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE,
           "token aud does not name this notary: aud must be \"other.example\"",
           "wrong audience");
    DETAIL(t, NULL, NOW, MAXAGE, NOTARY_TOKEN_AUDIENCE,
           "token aud does not name this notary: no audience is configured",
           "no audience configured");
    DETAIL(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), claims("\"" AUD "\"", csha, NOW, NOW + 901, NULL)),
           AUD, NOW, 900, NOTARY_TOKEN_LIFETIME,
           "token lifetime (exp - iat) is 901 s: at most NotaryTokenMaxAge 900 s is accepted",
           "lifetime 901 s over 900");
    DETAIL(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), claims("\"" AUD "\"", csha, NOW, NOW - 10, NULL)),
           AUD, NOW, 900, NOTARY_TOKEN_LIFETIME,
           "token exp (1699999990) is not after iat (1700000000): exp must be later than iat",
           "exp before iat");
    DETAIL(t, AUD, NOW + 600 + 61, MAXAGE, NOTARY_TOKEN_EXPIRED,
           "token exp is 61 s in the past: at most 60 s of clock skew is allowed",
           "expired 61 s ago");
    DETAIL(t, AUD, NOW - 61, MAXAGE, NOTARY_TOKEN_NOT_YET_VALID,
           "token iat is 61 s in the future: at most 60 s of clock skew is allowed",
           "iat 61 s ahead");
    DETAIL(raw(k_ed25519, "EdDSA", hdr_for("EdDSA"),
               claims("\"" AUD "\"", csha, NOW, NOW + 600, ",\"nbf\":1700000100")),
           AUD, NOW, 900, NOTARY_TOKEN_NOT_YET_VALID,
           "token nbf is 100 s in the future: at most 60 s of clock skew is allowed",
           "nbf 100 s ahead");
#undef DETAIL
}

/* PS256 with a salt length other than 32 must not verify: RFC 7518 fixes it. */
static const char *ps256_salt(int salt)
{
    const char *input = apr_pstrcat(pool, b64s(hdr_for("PS256")), ".", b64s(std_claims()), NULL);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[512];
    size_t slen = sizeof(sig);
    const char *out = "";

    if (ctx && EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, k_rsa) == 1
        && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0
        && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt) > 0
        && EVP_DigestSign(ctx, sig, &slen, (const unsigned char *)input, strlen(input)) == 1)
        out = apr_pstrcat(pool, input, ".", b64(sig, slen), NULL);
    else
        diag("PS256 salt %d signing failed", salt);
    EVP_MD_CTX_free(ctx);
    return out;
}

/* Replace the signature part of t with the given bytes. */
static const char *with_sig(const char *t, const unsigned char *sig, size_t n)
{
    const char *dot = strrchr(t, '.');

    return apr_pstrcat(pool, apr_pstrmemdup(pool, t, (apr_size_t)(dot - t + 1)), b64(sig, n), NULL);
}

static void test_signatures(void)
{
    const char *rs = raw(k_rsa, "RS256", hdr_for("RS256"), std_claims());
    const char *es = raw(k_p256, "ES256", hdr_for("ES256"), std_claims());
    const char *es384 = raw(k_p384, "ES384", hdr_for("ES384"), std_claims());
    const char *ed = raw(k_ed25519, "EdDSA", hdr_for("EdDSA"), std_claims());
    const char *other = raw(k_rsa, "RS256", hdr_for("RS256"), claims("\"evil.example\"", csha, NOW, NOW + 600, NULL));
    unsigned char *sig, buf[600];
    apr_size_t n = 0;
    const char *d;
    notary_token *tok;
    ECDSA_SIG *esig;
    BIGNUM *r, *s;
    unsigned char *der = NULL;
    int dlen;

    expect(ps256_salt(32), k_rsa, NOTARY_TOKEN_OK, "PS256 with salt 32 (made by OpenSSL directly)");
    expect(ps256_salt(20), k_rsa, NOTARY_TOKEN_BAD_SIGNATURE, "PS256 with salt 20");
    expect(ps256_salt(222), k_rsa, NOTARY_TOKEN_BAD_SIGNATURE, "PS256 with maximal salt");
    /* Signature of one token on another's header and payload. */
    expect(apr_pstrcat(pool, apr_pstrmemdup(pool, other, (apr_size_t)(strrchr(other, '.') - other)),
                       strrchr(rs, '.'), NULL),
           k_rsa, NOTARY_TOKEN_BAD_SIGNATURE,
           "signature of another payload");
    expect(rs, k_rsa_b, NOTARY_TOKEN_BAD_SIGNATURE, "RS256 with another RSA key");
    expect(es, k_p256_b, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 with another P-256 key");
    expect(raw(k_rsa, "RS256", hdr_for("PS256"), std_claims()), k_rsa, NOTARY_TOKEN_BAD_SIGNATURE,
           "RS256 signature under a PS256 header");

    sig = notary_b64url_decode(pool, strrchr(rs, '.') + 1, strlen(strrchr(rs, '.') + 1), &n);
    expect(with_sig(rs, sig, n - 1), k_rsa, NOTARY_TOKEN_BAD_SIGNATURE, "RS256 truncated by one byte");
    memset(buf, 0, sizeof(buf));
    memcpy(buf + 1, sig, n);
    expect(with_sig(rs, buf, n + 1), k_rsa, NOTARY_TOKEN_BAD_SIGNATURE, "RS256 with a leading zero byte");

    sig = notary_b64url_decode(pool, strrchr(es, '.') + 1, strlen(strrchr(es, '.') + 1), &n);
    ok(n == 64, "ES256 signature is 64 bytes (%d)", (int)n);
    expect(with_sig(es, sig, 63), k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 R||S of 63 bytes");
    memcpy(buf, sig, 64);
    buf[64] = 0;
    expect(with_sig(es, buf, 65), k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 R||S of 65 bytes");
    expect(with_sig(es, sig, 32), k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 R only");
    memset(buf, 0, 64);
    expect(with_sig(es, buf, 64), k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 R = S = 0");
    /* The DER form OpenSSL makes is not JWS. */
    esig = ECDSA_SIG_new();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);
    if (esig && r && s && ECDSA_SIG_set0(esig, r, s) == 1)
        dlen = i2d_ECDSA_SIG(esig, &der);
    else {
        BN_free(r);
        BN_free(s);
        dlen = 0;
    }
    ok(dlen > 0, "ES256 signature as DER (%d bytes)", dlen);
    expect(with_sig(es, der, (size_t)dlen), k_p256, NOTARY_TOKEN_BAD_SIGNATURE, "ES256 DER signature");
    OPENSSL_free(der);
    ECDSA_SIG_free(esig);

    sig = notary_b64url_decode(pool, strrchr(es384, '.') + 1, strlen(strrchr(es384, '.') + 1), &n);
    ok(n == 96, "ES384 signature is 96 bytes (%d)", (int)n);
    expect(with_sig(es384, sig, 64), k_p384, NOTARY_TOKEN_BAD_SIGNATURE, "ES384 R||S of 64 bytes");
    sig = notary_b64url_decode(pool, strrchr(ed, '.') + 1, strlen(strrchr(ed, '.') + 1), &n);
    expect(with_sig(ed, sig, 63), k_ed25519, NOTARY_TOKEN_BAD_SIGNATURE, "EdDSA of 63 bytes");

    tok = NULL;
    ok(notary_token_parse(pool, es, strlen(es), &tok, &d) == NOTARY_TOKEN_OK
           && notary_token_verify_signature(tok, k_p256_b, &d) == NOTARY_TOKEN_BAD_SIGNATURE
           && ERR_peek_error() == 0,
       "a failed verify leaves no errors in the queue");
}

static void test_malformed(void)
{
    const char *t = raw(k_p256, "ES256", hdr_for("ES256"), std_claims());
    const char *h = b64s(hdr_for("ES256")), *pl = b64s(std_claims());
    const char *sg = strrchr(t, '.') + 1;
    char *big;
    notary_token *tok = (notary_token *)1;
    const char *d = NULL;

#define BAD(tk, ...) expect((tk), k_p256, NOTARY_TOKEN_MALFORMED, __VA_ARGS__)
    expect(t, k_p256, NOTARY_TOKEN_OK, "the unmodified token verifies");
    BAD("", "empty token");
    BAD(apr_pstrcat(pool, h, "=.", pl, ".", sg, NULL), "padding in the header");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", sg, "==", NULL), "padding after the signature");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", apr_pstrmemdup(pool, sg, 4), "+/", sg + 6, NULL),
        "+ and / in the signature");
    BAD(apr_pstrcat(pool, h, ".", pl, NULL), "two parts");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", sg, ".", sg, NULL), "four parts");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", sg, ".", NULL), "trailing dot");
    BAD(apr_pstrcat(pool, ".", pl, ".", sg, NULL), "empty header");
    BAD(apr_pstrcat(pool, h, "..", sg, NULL), "empty payload");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", NULL), "empty signature");
    BAD(apr_pstrcat(pool, "..", NULL), "only dots");
    BAD(apr_pstrcat(pool, h, ".", pl, " .", sg, NULL), "a space");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", sg, "\n", NULL), "a trailing LF");
    BAD(apr_pstrcat(pool, b64s("hello"), ".", pl, ".", sg, NULL), "header not JSON");
    BAD(apr_pstrcat(pool, h, ".", b64s("hello"), ".", sg, NULL), "payload not JSON");
    BAD(apr_pstrcat(pool, h, ".", b64s("[1,2]"), ".", sg, NULL), "payload a JSON array");
    BAD(apr_pstrcat(pool, h, ".", b64s("\"x\""), ".", sg, NULL), "payload a JSON string");
    BAD(apr_pstrcat(pool, b64s("[\"ES256\"]"), ".", pl, ".", sg, NULL), "header a JSON array");
    BAD(apr_pstrcat(pool, h, ".", b64s(apr_pstrcat(pool, std_claims(), "x", NULL)), ".", sg, NULL),
        "payload with trailing garbage");
    BAD(apr_pstrcat(pool, h, ".", b64s("{\"aud\":\"\xff\"}"), ".", sg, NULL), "payload not UTF-8");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", "A", NULL), "signature of 1 character");
    BAD(apr_pstrcat(pool, h, ".", pl, ".", "AB", NULL), "signature with non-zero trailing bits");

    big = apr_palloc(pool, NOTARY_TOKEN_MAX_LEN + 2);
    memset(big, 'A', NOTARY_TOKEN_MAX_LEN + 1);
    big[NOTARY_TOKEN_MAX_LEN + 1] = '\0';
    expect(big, k_p256, NOTARY_TOKEN_TOO_LARGE, "8193 bytes is too large");
    big[NOTARY_TOKEN_MAX_LEN] = '\0';
    BAD(big, "NOTARY_TOKEN_MAX_LEN bytes of garbage is malformed, not too large");
    ok(notary_token_parse(pool, big, NOTARY_TOKEN_MAX_LEN, &tok, &d) != NOTARY_TOKEN_OK && tok == NULL
           && d != NULL,
       "a refused parse sets *tok NULL and a detail");
    ok(notary_token_parse(pool, t, strlen(t), &tok, NULL) == NOTARY_TOKEN_OK, "detail may be NULL");
    /* A padded-out valid token just under the limit still parses. */
    {
        apr_size_t fill;
        char *f;
        const char *base = raw(k_p256, "ES256", hdr_for("ES256"),
                               claims("\"" AUD "\"", csha, NOW, NOW + 600, ",\"x\":\"\""));
        fill = (NOTARY_TOKEN_MAX_LEN - strlen(base)) * 3 / 4 - 4;
        f = apr_palloc(pool, fill + 1);
        memset(f, 'x', fill);
        f[fill] = '\0';
        base = raw(k_p256, "ES256", hdr_for("ES256"),
                   claims("\"" AUD "\"", csha, NOW, NOW + 600, apr_pstrcat(pool, ",\"x\":\"", f, "\"", NULL)));
        ok(strlen(base) <= NOTARY_TOKEN_MAX_LEN && strlen(base) > NOTARY_TOKEN_MAX_LEN - 8,
           "a token of %d bytes is built", (int)strlen(base));
        expect(base, k_p256, NOTARY_TOKEN_OK, "a valid token near the size limit verifies");
    }
#undef BAD
}

static void test_status_strings(void)
{
    int s, good = 1;

    for (s = NOTARY_TOKEN_OK; s <= NOTARY_TOKEN_BAD_SIGNATURE; s++) {
        const char *str = notary_token_status_str((notary_token_status)s), *c;
        for (c = str; *c; c++)
            if ((*c >= 'A' && *c <= 'Z') || *c == '\n')
                good = 0;
        if (!*str || strcmp(notary_token_status_name((notary_token_status)s), "UNKNOWN") == 0)
            good = 0;
        if (!good) {
            diag("bad string for status %d: '%s'", s, str);
            break;
        }
    }
    ok(good, "every status has a lower-case one-line string and a name");
    is_str(notary_token_status_str(NOTARY_TOKEN_EXPIRED), "token expired", "expired string");
    is_str(notary_token_status_name(NOTARY_TOKEN_ALG_KEY_MISMATCH), "ALG_KEY_MISMATCH", "name");
}

/* ---- docs/vectors --------------------------------------------------------- */

static EVP_PKEY *load_key(const char *file)
{
    BIO *bio = BIO_new_file(file, "r");
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    return k;
}

static int load_cert_sha(const char *file, unsigned char out[32])
{
    BIO *bio = BIO_new_file(file, "r");
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    apr_size_t len = 0;
    unsigned char *der = x ? notary_x509_der(pool, x, &len) : NULL;

    if (der)
        notary_sha256(der, len, out);
    X509_free(x);
    BIO_free(bio);
    return der != NULL;
}

static void test_vectors(void)
{
    const char *srcdir = getenv("NOTARY_SRCDIR");
    const char *dir = apr_pstrcat(pool, srcdir && *srcdir ? srcdir : ".", "/docs/vectors", NULL);
    const char *file = apr_pstrcat(pool, dir, "/vectors.json", NULL);
    json_error_t jerr;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr), *vs, *v;
    size_t i, n_ok = 0;

    ok(root != NULL, "read %s (%s)", file, root ? "ok" : jerr.text);
    vs = root ? json_object_get(root, "vectors") : NULL;
    ok(json_is_array(vs) && json_array_size(vs) >= 10, "vectors.json lists vectors (%d)",
       vs ? (int)json_array_size(vs) : -1);
    json_array_foreach(vs, i, v)
    {
        const char *name = NULL, *keyf = NULL, *certf = NULL, *token = NULL, *aud = NULL;
        const char *want = NULL, *d = NULL;
        json_int_t now = 0, max_age = 900;
        unsigned char sha[32];
        EVP_PKEY *key;
        notary_token_status st;

        if (json_unpack_ex(v, &jerr, 0, "{s:s, s:s, s:s, s:s, s:I, s:s, s?I, s:s}",
                           "name", &name, "key", &keyf, "consumer_cert", &certf,
                           "token", &token, "now", &now, "audience", &aud,
                           "max_age", &max_age, "expect", &want)
            != 0) {
            ok(0, "vector %d is well-formed (%s)", (int)i, jerr.text);
            continue;
        }
        key = load_key(apr_pstrcat(pool, dir, "/", keyf, NULL));
        if (!key || !load_cert_sha(apr_pstrcat(pool, dir, "/", certf, NULL), sha)) {
            ok(0, "vector %s: load %s and %s", name, keyf, certf);
            EVP_PKEY_free(key);
            continue;
        }
        st = verdict_at(token, key, aud, sha, (apr_int64_t)now, (apr_int64_t)max_age, &d);
        ok(strcmp(notary_token_status_name(st), want) == 0, "vector %s: %s", name, want);
        if (strcmp(notary_token_status_name(st), want) != 0)
            printf("#   got %s (%s)\n", notary_token_status_name(st), d ? d : "no detail");
        if (st == NOTARY_TOKEN_OK)
            n_ok++;
        EVP_PKEY_free(key);
    }
    ok(n_ok >= 5, "at least one vector per algorithm verifies (%d)", (int)n_ok);
    json_decref(root);
}

int main(int argc, const char *const *argv)
{
    X509 *consumer;
    unsigned char *der;
    apr_size_t len = 0;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS
        || apr_pool_create(&pool, NULL) != APR_SUCCESS) {
        printf("Bail out! APR\n");
        return 2;
    }
    k_rsa = keygen(EVP_PKEY_RSA, 2048);
    k_rsa_b = keygen(EVP_PKEY_RSA, 2048);
    k_rsa1024 = keygen(EVP_PKEY_RSA, 1024);
    k_p256 = keygen(EVP_PKEY_EC, NID_X9_62_prime256v1);
    k_p256_b = keygen(EVP_PKEY_EC, NID_X9_62_prime256v1);
    k_p384 = keygen(EVP_PKEY_EC, NID_secp384r1);
    k_k256 = keygen(EVP_PKEY_EC, NID_secp256k1);
    k_ed25519 = keygen(EVP_PKEY_ED25519, 0);
    k_ed448 = keygen(EVP_PKEY_ED448, 0);
    consumer = self_signed(k_p256_b, "consumer");
    der = notary_x509_der(pool, consumer, &len);
    if (!der) {
        printf("Bail out! consumer certificate DER\n");
        return 2;
    }
    notary_sha256(der, len, csha);
    memcpy(other_sha, csha, 32);
    other_sha[31] ^= 1;
    X509_free(consumer);

    test_b64url();
    test_util();
    test_each_alg();
    test_sign_defaults();
    test_rsa_pss_key();
    test_alg_refusals();
    test_key_mismatch();
    test_header();
    test_claims();
    test_times_audience_binding();
    test_claim_details();
    test_signatures();
    test_malformed();
    test_status_strings();
    test_vectors();

    EVP_PKEY_free(k_rsa);
    EVP_PKEY_free(k_rsa_b);
    EVP_PKEY_free(k_rsa1024);
    EVP_PKEY_free(k_p256);
    EVP_PKEY_free(k_p256_b);
    EVP_PKEY_free(k_p384);
    EVP_PKEY_free(k_k256);
    EVP_PKEY_free(k_ed25519);
    EVP_PKEY_free(k_ed448);
    apr_pool_destroy(pool);
    apr_terminate();
    return tap_done();
}
