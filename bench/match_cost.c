/* What the matcher costs per byte of a body, without httpd: a stream per
 * body, fed in 8 KiB pieces (a brigade's buckets) with one rule that never
 * matches, N times. Run under callgrind twice, N and 0, and the difference
 * in instructions over N x the body's length is the instructions per byte
 * of that Content-Type's views (raw only for application/octet-stream;
 * raw plus decoded for forms and JSON). Not part of bench/run:
 *
 *   make bench/store_load   # builds libnotarycore.la
 *   gcc -O2 -g -o bench/match_cost bench/match_cost.c -Imod_notary \
 *       $(apr-1-config --cflags --cppflags --includes) .libs/libnotarycore.a \
 *       -laprutil-1 $(apr-1-config --link-ld) -lcrypto -ljansson -lz -lbrotlidec -lzstd
 *   valgrind --tool=callgrind bench/match_cost BODY_FILE CONTENT_TYPE N [RULE]
 *
 * RULE (default NEVER-MATCHES-7f3a9c, bench/run's) is the one rule's text:
 * the readers skip, at the automaton's root, what cannot start it, so a
 * rule whose first byte is common in the body costs more. An empty
 * BODY_FILE gives the per-message cost (stream start, sniffing, finish).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_pools.h>

#include "notary_match.h"

int main(int argc, char **argv)
{
    apr_pool_t *pool, *p;
    notary_matcher *m;
    static char body[1 << 20];
    size_t len;
    long n, i;
    FILE *f;
    const char *never = "NEVER-MATCHES-7f3a9c";

    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: match_cost BODY_FILE CONTENT_TYPE N [RULE]\n");
        return 2;
    }
    if (argc == 5 && *argv[4])
        never = argv[4];
    if (!(f = fopen(argv[1], "rb"))) {
        perror(argv[1]);
        return 2;
    }
    len = fread(body, 1, sizeof(body), f);
    fclose(f);
    n = atol(argv[3]);
    apr_initialize();
    apr_pool_create(&pool, NULL);
    apr_pool_create(&p, pool);
    if (notary_matcher_create(&m, pool) != APR_SUCCESS
        || notary_matcher_add(m, never, strlen(never), 0) != APR_SUCCESS
        || notary_matcher_compile(m) != APR_SUCCESS) {
        fprintf(stderr, "match_cost: cannot build the matcher\n");
        return 1;
    }
    for (i = 0; i < n; i++) {
        notary_match_stream *s;
        size_t off;
        unsigned flags = 0;

        apr_pool_clear(p);
        if (notary_match_stream_start(&s, p, m, argv[2], NULL, 64 << 20, &flags)
            != APR_SUCCESS) {
            fprintf(stderr, "match_cost: cannot start a stream\n");
            return 1;
        }
        for (off = 0; off < len; off += 8192) {
            notary_match_stream_feed(s, body + off, len - off < 8192 ? len - off : 8192);
        }
        notary_match_stream_finish(s);
        if (notary_match_stream_first(s) != -1) {
            fprintf(stderr, "match_cost: the rule matched\n");
            return 1;
        }
        flags |= notary_match_stream_flags(s);
        if (i == 0 && flags) {
            fprintf(stderr, "match_cost: flags 0x%x (a decoder gave up?)\n", flags);
        }
    }
    printf("bodies=%ld bytes=%lu content_type=%s\n", n, (unsigned long)len, argv[2]);
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}
