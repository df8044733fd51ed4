/* libFuzzer target: the notary token (notary_token.c, notary_util.c's
 * base64url). The first byte of the input picks what the rest is:
 *
 *   0 mod 3  a compact JWS as a consumer sends it: parsed, its claims
 *            checked, its signature verified with the fixed key of each
 *            algorithm (docs/vectors/: RSA-2048, P-256, P-384, Ed25519);
 *   1 mod 3  header JSON, NUL, payload JSON: signed with one of the five
 *            algorithms (byte 0 / 3 picks it), then parsed and verified, so
 *            that the code behind a good signature sees fuzzed claims;
 *   2 mod 3  base64url text: decode/encode round trips.
 *
 * Besides the sanitizers, it aborts when an invariant of the API breaks:
 * a verdict without a reason, a token verifying with two different keys,
 * our own signature not verifying, a base64url text that is not the one
 * spelling of its bytes. */
#include <string.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "notary_token.h"
#include "notary_util.h"
#include "fuzz.h"

#ifndef NOTARY_VECTORS_DIR
#define NOTARY_VECTORS_DIR "docs/vectors"
#endif

#define AUD "notary.example"
#define NOW APR_INT64_C(1700000000)
#define MAX_AGE 900

static const struct {
    const char *alg, *file;
} signers[] = {
    { "RS256", "rsa2048.pem" },
    { "PS256", "rsa2048.pem" },
    { "ES256", "p256.pem" },
    { "ES384", "p384.pem" },
    { "EdDSA", "ed25519.pem" },
};
#define NSIGNERS (sizeof(signers) / sizeof(signers[0]))
/* One key per file: RS256 and PS256 share the RSA key. */
static EVP_PKEY *keys[NSIGNERS];
static const int distinct[] = { 0, 2, 3, 4 };
static unsigned char consumer_sha[32];

static FILE *open_vector(const char *name)
{
    const char *dir = getenv("NOTARY_FUZZ_VECTORS");
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir ? dir : NOTARY_VECTORS_DIR, name);
    if (!(f = fopen(path, "r"))) {
        fprintf(stderr, "fuzz_token: cannot open %s (set NOTARY_FUZZ_VECTORS to docs/vectors)\n",
                path);
        exit(2);
    }
    return f;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    unsigned char *der = NULL;
    apr_size_t i;
    X509 *x;
    FILE *f;
    int n;

    (void)argc;
    (void)argv;
    fuzz_apr_init();
    for (i = 0; i < NSIGNERS; i++) {
        if (i > 0 && !strcmp(signers[i].file, signers[i - 1].file)) {
            keys[i] = keys[i - 1];
            continue;
        }
        f = open_vector(signers[i].file);
        keys[i] = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!keys[i]) {
            fprintf(stderr, "fuzz_token: %s is not a private key\n", signers[i].file);
            exit(2);
        }
    }
    f = open_vector("consumer.pem");
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x || (n = i2d_X509(x, &der)) <= 0) {
        fprintf(stderr, "fuzz_token: consumer.pem is not a certificate\n");
        exit(2);
    }
    notary_sha256(der, (apr_size_t)n, consumer_sha);
    OPENSSL_free(der);
    X509_free(x);
    return 0;
}

static void check_status(notary_token_status st, const char *detail, const char *what)
{
    FUZZ_CHECK(strcmp(notary_token_status_name(st), "UNKNOWN") != 0,
               "%s returned a status outside the enum: %d", what, (int)st);
    FUZZ_CHECK(st == NOTARY_TOKEN_OK || (detail && *detail),
               "%s refused (%s) without saying why", what, notary_token_status_name(st));
}

/* Verify with every distinct key; returns how many accepted it. */
static int verify_all(const notary_token *tok, int *which)
{
    const char *detail;
    notary_token_status st;
    apr_size_t i;
    int good = 0;

    for (i = 0; i < sizeof(distinct) / sizeof(distinct[0]); i++) {
        detail = NULL;
        st = notary_token_verify_signature(tok, keys[distinct[i]], &detail);
        check_status(st, detail, "verify_signature");
        if (st == NOTARY_TOKEN_OK) {
            good++;
            *which = distinct[i];
        }
    }
    FUZZ_CHECK(ERR_peek_error() == 0, "verification left errors in OpenSSL's queue");
    return good;
}

static void claims(apr_pool_t *p, const notary_token *tok)
{
    const char *detail = NULL;
    notary_token_status st;

    st = notary_token_check_claims(p, tok, AUD, consumer_sha, NOW, MAX_AGE, &detail);
    check_status(st, detail, "check_claims");
    /* at its own iat, and with the audience it names first */
    st = notary_token_check_claims(p, tok, tok->aud_first, tok->cnf_x5t_s256, tok->iat,
                                   MAX_AGE, &detail);
    check_status(st, detail, "check_claims");
    FUZZ_CHECK(st != NOTARY_TOKEN_BINDING, "a token refused for its own binding: %s", detail);
    /* "" and "." name no host */
    if (strcmp(tok->aud_first, "") && strcmp(tok->aud_first, "."))
        FUZZ_CHECK(st != NOTARY_TOKEN_AUDIENCE, "a token refused for its own audience '%s'",
                   tok->aud_first);
    st = notary_token_check_claims(p, tok, "", NULL, 0, 0, &detail);
    FUZZ_CHECK(st == NOTARY_TOKEN_BINDING, "no consumer certificate, yet %s",
               notary_token_status_name(st));
}

static void compact(apr_pool_t *p, const char *d, apr_size_t n)
{
    const char *detail = NULL;
    notary_token *tok = NULL;
    notary_token_status st;
    int which = -1;

    st = notary_token_parse(p, d, n, &tok, &detail);
    check_status(st, detail, "parse");
    FUZZ_CHECK((st == NOTARY_TOKEN_OK) == (tok != NULL), "parse: status %s but token %p",
               notary_token_status_name(st), (void *)tok);
    FUZZ_CHECK(n <= NOTARY_TOKEN_MAX_LEN || st == NOTARY_TOKEN_TOO_LARGE,
               "a %zu-byte token was not refused as too large", (size_t)n);
    FUZZ_CHECK(ERR_peek_error() == 0, "parse left errors in OpenSSL's queue");
    if (!tok)
        return;
    FUZZ_CHECK(tok->signing_input_len < n && !memcmp(tok->signing_input, d, tok->signing_input_len),
               "signing input is not a prefix of the token");
    claims(p, tok);
    FUZZ_CHECK(verify_all(tok, &which) <= 1, "one token verified with two different keys");
}

static void signed_pair(apr_pool_t *p, unsigned sel, const char *d, apr_size_t n)
{
    const char *hdr = apr_pstrmemdup(p, d, n), *payload, *err = NULL, *t, *detail = NULL;
    apr_size_t hl = strlen(hdr), k = sel % NSIGNERS;
    notary_token *tok = NULL;
    notary_token_status st;
    int which = -1, good;

    payload = hl < n ? hdr + hl + 1 : "";
    t = notary_token_sign_raw(p, keys[k], signers[k].alg, hdr, payload, &err);
    FUZZ_CHECK(t != NULL, "cannot sign with %s: %s", signers[k].alg, err ? err : "?");
    st = notary_token_parse(p, t, strlen(t), &tok, &detail);
    check_status(st, detail, "parse");
    if (!tok)
        return;
    claims(p, tok);
    good = verify_all(tok, &which);
    /* the key it was signed with, and no other, under the alg it was signed with */
    if (!strcmp(tok->alg, signers[k].alg))
        FUZZ_CHECK(good == 1 && keys[which] == keys[k],
                   "signed with %s, header alg %s: verified by %d keys", signers[k].alg,
                   tok->alg, good);
    else
        FUZZ_CHECK(good == 0, "signed with %s, header says %s, yet it verified",
                   signers[k].alg, tok->alg);
}

static void b64url(apr_pool_t *p, const char *d, apr_size_t n)
{
    apr_size_t len = 0, len2 = 0;
    unsigned char *raw = notary_b64url_decode(p, d, n, &len), *back;
    char *text;

    if (raw) {
        /* strict: exactly one text per byte string */
        text = notary_b64url_encode(p, raw, len);
        FUZZ_CHECK(strlen(text) == n && !memcmp(text, d, n),
                   "'%.*s' decodes, but encodes back as '%s'", (int)n, d, text);
        FUZZ_CHECK(raw[len] == '\0', "decoded buffer is not NUL-terminated");
    }
    text = notary_b64url_encode(p, (const unsigned char *)d, n);
    back = notary_b64url_decode(p, text, strlen(text), &len2);
    FUZZ_CHECK(back && len2 == n && !memcmp(back, d, n), "encode/decode of %zu bytes lost data",
               (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    unsigned sel;

    if (size < 1)
        return 0;
    sel = data[0];
    p = fuzz_pool();
    switch (sel % 3) {
    case 0: compact(p, (const char *)data + 1, size - 1); break;
    case 1: signed_pair(p, sel / 3, (const char *)data + 1, size - 1); break;
    case 2: b64url(p, (const char *)data + 1, size - 1); break;
    }
    apr_pool_destroy(p);
    return 0;
}
