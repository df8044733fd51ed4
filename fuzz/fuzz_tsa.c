/* libFuzzer target: RFC 3161 time-stamp replies and tokens (notary_tsa.c),
 * the bytes a TSA sends the integrator and a receipt carries to
 * notary-verify. The first byte picks what the rest is:
 *
 *   even  a TimeStampToken, checked over SHA-256 of docs/vectors/tsa's
 *         checkpoint-600 under its CA (notary_tsa_token_verify);
 *   odd   a TimeStampResp to the vector query (notary_tsa_reply_token).
 *
 * Besides the sanitizers, it aborts when anything is accepted that is not,
 * byte for byte, the one real token (or reply) of docs/vectors/tsa: the
 * CA's TSA signed nothing else, so any other accepted input would be a
 * forgery the checks let through. */
#include <string.h>

#include <apr_strings.h>

#include "notary_tsa.h"
#include "notary_util.h"
#include "fuzz.h"

#ifndef NOTARY_VECTORS_DIR
#define NOTARY_VECTORS_DIR "docs/vectors"
#endif

static unsigned char *query, *token, *reply, digest[32];
static apr_size_t query_len, token_len, reply_len;
static char ca[4096];

static unsigned char *slurp(const char *name, apr_size_t *len)
{
    const char *dir = getenv("NOTARY_FUZZ_VECTORS");
    char path[4096];
    unsigned char *d;
    long n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/tsa/%s", dir ? dir : NOTARY_VECTORS_DIR, name);
    if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0 || !(d = apr_palloc(fuzz_root, (apr_size_t)n + 1))
        || fread(d, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fuzz_tsa: cannot read %s (set NOTARY_FUZZ_VECTORS to docs/vectors)\n", path);
        exit(2);
    }
    fclose(f);
    *len = (apr_size_t)n;
    return d;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("NOTARY_FUZZ_VECTORS");
    unsigned char *cp;
    apr_size_t cp_len;

    fuzz_apr_init();
    snprintf(ca, sizeof(ca), "%s/tsa/ca.pem", dir ? dir : NOTARY_VECTORS_DIR);
    cp = slurp("checkpoint-600", &cp_len);
    notary_sha256(cp, cp_len, digest);
    query = slurp("query.der", &query_len);
    token = slurp("token.der", &token_len);
    reply = slurp("reply.der", &reply_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *err = NULL;
    unsigned char *tok = NULL;
    apr_size_t tlen = 0;
    int rv;

    if (size < 1) {
        return 0;
    }
    p = fuzz_pool();
    if (data[0] % 2 == 0) {
        rv = notary_tsa_token_verify(p, data + 1, size - 1, digest, ca, NULL, &err);
        FUZZ_CHECK(rv == 0 || err, "a refused token without a reason");
        FUZZ_CHECK(rv != 0 || (size - 1 == token_len && !memcmp(data + 1, token, token_len)),
                   "a token other than the vector's was accepted (%lu bytes)", (unsigned long)(size - 1));
    }
    else {
        rv = notary_tsa_reply_token(p, query, query_len, data + 1, size - 1, ca, &tok, &tlen, &err);
        FUZZ_CHECK(rv == 0 || err, "a refused reply without a reason");
        /* a reply's status text is not signed: only the token must be the one */
        FUZZ_CHECK(rv != 0 || (tlen == token_len && !memcmp(tok, token, token_len)),
                   "a reply was accepted whose token is not the vector's");
    }
    apr_pool_destroy(p);
    return 0;
}
