/* libFuzzer target: notary_target (the consumer's request-target split for
 * routing, RFC 3986 normalisation, the merchant's base path check).
 *
 * Input: TARGET, optionally a newline and a merchant's BASE path.
 * Invariants: a successful split's rest starts with '/' and holds no dot
 * segment, its name no '/' and is not "." or ".."; normalising is
 * idempotent; "/" + name + rest splits into the same name and rest; for a
 * normalised base, base + rest is within base, and stays within it after
 * the merchant's own normalisation (no way out of a merchant's path). */
#include <string.h>

#include <apr_strings.h>

#include "fuzz.h"
#include "notary_target.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    return 0;
}

/* A dot segment: "/./", "/../", or the path ending "/." or "/..". */
static int has_dot_segment(const char *s)
{
    const char *q;
    for (q = s; (q = strchr(q, '/')) != NULL; q++) {
        if (q[1] == '.' && (q[2] == '/' || q[2] == '\0'))
            return 1;
        if (q[1] == '.' && q[2] == '.' && (q[3] == '/' || q[3] == '\0'))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *nl = memchr(data, '\n', size);
    apr_size_t tlen = nl ? (apr_size_t)(nl - (const char *)data) : size;
    /* C strings: the glue never sees a NUL in a request line */
    char *target = apr_pstrmemdup(p, (const char *)data, tlen);
    char *base_raw = nl ? apr_pstrmemdup(p, nl + 1, size - tlen - 1) : NULL;
    const char *name = NULL, *rest = NULL, *err = NULL, *norm, *again;
    apr_status_t rv;

    rv = notary_target_split(p, target, &name, &rest, &err);
    if (rv != APR_SUCCESS) {
        FUZZ_CHECK(rv == APR_EINVAL && err && *err, "refused without a reason: %d", rv);
        goto cleanup;
    }
    FUZZ_CHECK(name && rest, "split succeeded without name or rest");
    FUZZ_CHECK(rest[0] == '/', "rest '%s' of '%s' does not start with '/'", rest, target);
    FUZZ_CHECK(!has_dot_segment(rest), "rest '%s' of '%s' has a dot segment", rest, target);
    FUZZ_CHECK(!strchr(name, '/') && strcmp(name, ".") && strcmp(name, ".."),
               "name '%s' of '%s' is a dot segment or holds '/'", name, target);

    /* idempotent on the path (the query is no part of it) */
    {
        apr_size_t plen = strcspn(target, "?#");
        err = NULL;
        norm = notary_target_normalize(p, target, plen, &err);
        FUZZ_CHECK(norm, "'%s' splits but does not normalise: %s", target, err ? err : "");
        FUZZ_CHECK(norm[0] == '/' && !has_dot_segment(norm),
                   "normalised '%s' is '%s'", target, norm);
        again = notary_target_normalize(p, norm, strlen(norm), &err);
        FUZZ_CHECK(again && !strcmp(again, norm), "normalise not idempotent: '%s' -> '%s' -> '%s'",
                   target, norm, again ? again : "(null)");
    }

    /* what the notary forwards routes back to itself */
    {
        const char *n2 = NULL, *r2 = NULL;
        const char *re = apr_pstrcat(p, "/", name, rest, NULL);
        rv = notary_target_split(p, re, &n2, &r2, &err);
        FUZZ_CHECK(rv == APR_SUCCESS && !strcmp(n2, name) && !strcmp(r2, rest),
                   "'%s' split into '%s' '%s'; '%s' splits into '%s' '%s'", target, name,
                   rest, re, rv == APR_SUCCESS ? n2 : "(refused)", rv == APR_SUCCESS ? r2 : "");
    }

    /* a merchant's base path: the forwarded path never leaves it */
    if (base_raw) {
        const char *base = notary_target_normalize(p, base_raw, strlen(base_raw), &err);
        if (base) {
            const char *full = apr_pstrcat(p, base, rest, NULL);
            const char *merchant = notary_target_normalize(p, full, strlen(full), &err);
            FUZZ_CHECK(notary_target_within(base, base), "'%s' is not within itself", base);
            FUZZ_CHECK(notary_target_within(base, full), "'%s' + '%s' is not within '%s'",
                       base, rest, base);
            FUZZ_CHECK(merchant && notary_target_within(base, merchant),
                       "the merchant normalises '%s' to '%s', outside '%s'", full,
                       merchant ? merchant : "(refused)", base);
        }
    }
cleanup:
    apr_pool_destroy(p);
    return 0;
}
