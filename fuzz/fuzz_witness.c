/* libFuzzer target: what a witness sends the integrator and what an
 * operator writes in NotaryLogWitness (notary_witness.c). The first byte
 * picks what the rest is:
 *
 *   0  a 200 answer to add-checkpoint: cosignature lines over a fixed
 *      checkpoint, checked against the test witness's key;
 *   1  a 409 body (the witness's tree size);
 *   2  a NotaryLogWitness VKEY.
 *
 * Besides the sanitizers, it aborts when something is accepted that is not
 * what it must be: a cosignature other than the one the test witness made
 * (the key's private half is not in the input: any other accepted line
 * would be a forgery), a size that does not print back as the body, a vkey
 * that is not canonical. */
#include <string.h>

#include <apr_strings.h>

#include "notary_witness.h"
#include "fuzz.h"

#define COSIG_TIME 1700000000

static const char text[] = "notary.test/log\n6\nQa0x2kUk1Iu4PlrG4lO4nXq3v0a8m0UtSLpKSOJx2dw=\n";
static notary_witness_key *wk;
static char *line;
static apr_size_t line_len;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const unsigned char seed[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
    const char *detail = NULL;

    fuzz_apr_init();
    wk = notary_witness_key_from_seed(fuzz_root, "witness.test", seed, &detail);
    if (!wk || notary_witness_cosign(fuzz_root, wk, COSIG_TIME, text, sizeof(text) - 1, &line, &line_len, &detail) != 0) {
        fprintf(stderr, "fuzz_witness: cannot make the test witness: %s\n", detail ? detail : "?");
        exit(2);
    }
    /* the seeds: fuzz/corpus/witness holds this line behind a 0 byte */
    if (getenv("NOTARY_FUZZ_PRINT_SEED")) {
        printf("vkey %s\n%s", wk->vkey, line);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *detail = NULL;
    const char *in = (const char *)data + 1;
    apr_size_t len = size ? size - 1 : 0;
    int rv;

    if (size < 1) {
        return 0;
    }
    p = fuzz_pool();
    switch (data[0] % 3) {
    case 0: {
        notary_cosig cs;

        memset(&cs, 0, sizeof(cs));
        rv = notary_witness_response(p, wk, text, sizeof(text) - 1, in, len, &cs, &detail);
        FUZZ_CHECK(rv == 0 || detail, "a refused answer without a reason");
        FUZZ_CHECK(rv != 0
                       || (cs.time == COSIG_TIME && cs.line_len == line_len
                           && !memcmp(cs.line, line, line_len)),
                   "accepted a cosignature the test witness did not make (time %llu)",
                   (unsigned long long)cs.time);
        break;
    }
    case 1: {
        apr_uint64_t n = 0;

        rv = notary_witness_conflict_parse(in, len, &n, &detail);
        FUZZ_CHECK(rv == 0 || detail, "a refused 409 body without a reason");
        if (rv == 0) {
            char *back = apr_psprintf(p, "%" APR_UINT64_T_FMT "\n", n);
            FUZZ_CHECK(strlen(back) == len && !memcmp(back, in, len),
                       "the 409 body does not print back as its size %" APR_UINT64_T_FMT, n);
        }
        break;
    }
    default: {
        /* a configuration line never holds a NUL */
        char *s = memchr(in, 0, len) ? NULL : apr_pstrmemdup(p, in, len);
        notary_witness_key *k = s ? notary_witness_vkey_parse(p, s, &detail) : NULL;

        FUZZ_CHECK(!s || k || detail, "a refused vkey without a reason");
        FUZZ_CHECK(!k || !strcmp(k->vkey, s),
                   "accepted a vkey that is not canonical");
        FUZZ_CHECK(!k || k->id == notary_witness_key_id(k->name, k->pub),
                   "accepted a vkey whose key ID is not its own");
        break;
    }
    }
    apr_pool_destroy(p);
    return 0;
}
