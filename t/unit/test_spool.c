/* Unit tests of notary_spool: the body copy kept for a record. */
#include <stdio.h>
#include <string.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <openssl/evp.h>

#include "tap.h"
#include "notary_spool.h"

static void sha(const char *d, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_Digest(d, len, out, &n, EVP_sha256(), NULL);
}

/* expect: the announced length (0: none), taken at once (now) or once
 * the first piece is full; early: call notary_spool_hash_early once at
 * least that many bytes are written (-1: never) */
static void check_full(apr_pool_t *p, const char *name, apr_size_t mem_max,
                       apr_off_t limit, apr_size_t total, apr_size_t piece,
                       apr_off_t expect, int now, long early)
{
    notary_spool *s;
    char *src = apr_palloc(p, total + 1);
    const char *d = NULL;
    apr_size_t len = 0, i;
    unsigned char got[32], want[32];
    apr_file_t *f = NULL;
    apr_status_t rv;
    int round;

    for (i = 0; i < total; i++) {
        src[i] = (char)(i * 131 + (i >> 8)); /* NULs included */
    }
    ok(notary_spool_create(&s, p, mem_max, limit, NULL) == APR_SUCCESS, "%s: created", name);
    if (expect) {
        notary_spool_expect(s, expect, now); /* a hint, right or wrong */
    }
    if (early == 0) {
        notary_spool_hash_early(s);
    }
    for (i = 0; i < total; i += piece) {
        apr_size_t n = total - i < piece ? total - i : piece;
        if (notary_spool_write(s, src + i, n) != APR_SUCCESS) {
            break;
        }
        if (early > 0 && i < (apr_size_t)early && i + n >= (apr_size_t)early) {
            notary_spool_hash_early(s);
            notary_spool_hash_early(s); /* idempotent */
        }
    }
    is_int(notary_spool_length(s), total, "%s: length counts every byte", name);
    if ((apr_off_t)total > limit) {
        ok(notary_spool_over_limit(s), "%s: over the limit", name);
        ok(notary_spool_body(s, &d, &len, &f, got) == APR_ENOSPC,
           "%s: no body past the limit (never in part)", name);
        return;
    }
    ok(!notary_spool_over_limit(s), "%s: within the limit", name);
    sha(src, total, want);
    for (round = 0; round < 2; round++) {
        rv = notary_spool_body(s, &d, &len, &f, got);
        ok(rv == APR_SUCCESS, "%s: body (%s time)", name, round ? "second" : "first");
        is_int(len, total, "%s: body length", name);
        if (f) {
            /* in the temporary file: read it back as the store does */
            char *back = apr_palloc(p, total + 1);
            apr_off_t off = 0;
            apr_size_t n = 0;
            ok(total > mem_max, "%s: in a file only past mem_max", name);
            ok(d == NULL, "%s: no memory copy once in the file", name);
            ok(apr_file_seek(f, APR_SET, &off) == APR_SUCCESS
                   && (total == 0 || apr_file_read_full(f, back, total, &n) == APR_SUCCESS)
                   && n == total && memcmp(back, src, total) == 0,
               "%s: the file holds the body byte for byte", name);
        }
        else {
            ok(total <= mem_max, "%s: in memory up to mem_max", name);
            ok(len == total && memcmp(d, src, total) == 0, "%s: body byte for byte", name);
            ok(memcmp(got, want, 32) == 0, "%s: SHA-256", name);
        }
    }
}

static void check_expect(apr_pool_t *p, const char *name, apr_size_t mem_max,
                         apr_off_t limit, apr_size_t total, apr_size_t piece,
                         apr_off_t expect)
{
    check_full(p, name, mem_max, limit, total, piece, expect, 1, -1);
    check_full(p, apr_pstrcat(p, name, ", taken later", NULL), mem_max, limit,
               total, piece, expect, 0, -1);
}

static void check(apr_pool_t *p, const char *name, apr_size_t mem_max,
                  apr_off_t limit, apr_size_t total, apr_size_t piece)
{
    check_expect(p, name, mem_max, limit, total, piece, 0);
}

int main(void)
{
    apr_pool_t *p;

    apr_initialize();
    apr_pool_create(&p, NULL);
    check(p, "empty body", 1024, 1 << 20, 0, 1);
    check(p, "small body in memory", 4096, 1 << 20, 3000, 7);
    check(p, "growing buffer", 1 << 20, 1 << 20, 100000, 4096);
    check(p, "moves to a temp file past mem_max", 1024, 1 << 20, 200000, 999);
    check(p, "exactly at the limit", 1024, 5000, 5000, 100);
    check(p, "one byte over the limit (memory)", 1 << 20, 5000, 5001, 100);
    check(p, "over the limit after the file", 1024, 50000, 80000, 1000);
    /* Content-Length as a hint: exact, too small, too large, past memory */
    check_expect(p, "announced size, exact", 1 << 20, 1 << 20, 100000, 4096, 100000);
    check_expect(p, "announced too small: grows", 1 << 20, 1 << 20, 100000, 4096, 1000);
    check_expect(p, "announced too large", 1 << 20, 1 << 20, 3000, 7, 900000);
    check_expect(p, "announced past memory: ignored, temp file", 1024, 1 << 20, 200000, 999,
                 200000);
    /* hashing as the bytes come, from the start or from a match midway */
    check_full(p, "hashed early, from the start", 1 << 20, 1 << 20, 100000, 4096, 100000, 1, 0);
    check_full(p, "hashed early, announced for later", 1 << 20, 1 << 20, 100000, 4096, 100000, 0, 0);
    check_full(p, "hashed early, empty body", 1024, 1 << 20, 0, 1, 0, 1, 0);
    check_full(p, "hashed early, from a match midway", 1 << 20, 1 << 20, 100000, 777, 0, 1, 50000);
    check_full(p, "hashed early, then past mem_max: temp file", 4096, 1 << 20, 200000, 999, 0, 1, 1000);
    check_full(p, "hashed early, then over the limit", 1 << 20, 5000, 5001, 100, 0, 1, 0);
    check_expect(p, "announced past the limit", 1 << 20, 5000, 5001, 100, 5001);
    apr_pool_destroy(p);
    apr_terminate();
    return tap_done();
}
