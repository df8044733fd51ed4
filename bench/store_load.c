/* The store path alone: N threads inserting records through notary_store
 * (the module's own insert code) for a fixed time; prints records/s.
 * Compared with pgbench doing the same INSERT at the same concurrency.
 *
 *   store_load CONNINFO THREADS SECONDS BODY_BYTES [BODY_FILE]
 *
 * The body is BODY_BYTES of 'b' (it compresses), or the first BODY_BYTES of
 * BODY_FILE: the very bytes pgbench inserts beside it (e.g. base64 of random
 * bytes, which do not compress).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_thread_proc.h>
#include <apr_atomic.h>
#include <apr_time.h>
#include <apr_strings.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "notary_store.h"
#include "notary_util.h"

static notary_store *store;
static apr_time_t deadline;
static volatile apr_uint32_t done, failed;
static char *body;
static apr_size_t body_len;
static unsigned char body_sha[32];
static unsigned char key1[91], key2[91];

static void *APR_THREAD_FUNC worker(apr_thread_t *t, void *arg)
{
    apr_pool_t *p;
    long id = (long)arg;
    unsigned long n = 0;

    apr_pool_create(&p, NULL);
    while (apr_time_now() < deadline) {
        notary_record rec;
        const char *err = NULL;
        apr_pool_clear(p);
        memset(&rec, 0, sizeof(rec));
        rec.recorded_at = apr_time_now();
        rec.direction = "response";
        rec.merchant = "bench";
        rec.sender_key = key1;
        rec.sender_key_len = sizeof(key1);
        rec.receiver_key = key2;
        rec.receiver_key_len = sizeof(key2);
        rec.rule = "* type */*";
        rec.method = "GET";
        rec.uri = "/bench";
        rec.status = 200;
        rec.content_type = "application/octet-stream";
        rec.headers = "Content-Type: application/octet-stream";
        rec.headers_len = strlen(rec.headers);
        rec.body = body;
        rec.body_len = body_len;
        rec.body_sha256 = body_sha;
        rec.exchange_id = apr_psprintf(p, "sl-%d-%ld-%lu-%" APR_TIME_T_FMT,
                                       (int)getpid(), id, n++, apr_time_now());
        if (notary_store_insert(store, &rec, p, &err) == APR_SUCCESS) {
            apr_atomic_inc32(&done);
        }
        else {
            apr_atomic_inc32(&failed);
            if (failed < 5) {
                fprintf(stderr, "store_load: %s\n", err ? err : "?");
            }
        }
    }
    apr_pool_destroy(p);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

int main(int argc, char **argv)
{
    apr_pool_t *pool;
    apr_thread_t **th;
    int threads, secs, i;
    apr_time_t start;
    double elapsed;

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: store_load CONNINFO THREADS SECONDS BODY_BYTES [BODY_FILE]\n");
        return 2;
    }
    threads = atoi(argv[2]);
    secs = atoi(argv[3]);
    body_len = (apr_size_t)atol(argv[4]);
    apr_initialize();
    apr_pool_create(&pool, NULL);
    body = apr_palloc(pool, body_len + 1);
    if (argc == 6) {
        FILE *f = fopen(argv[5], "rb");
        if (!f || fread(body, 1, body_len, f) != body_len) {
            fprintf(stderr, "store_load: cannot read %lu bytes from %s\n",
                    (unsigned long)body_len, argv[5]);
            return 2;
        }
        fclose(f);
    }
    else {
        memset(body, 'b', body_len);
    }
    notary_sha256(body, body_len, body_sha);
    /* two fixed "keys": the store keeps them once, as it would real ones */
    memset(key1, 1, sizeof(key1));
    memset(key2, 2, sizeof(key2));
    if (notary_store_create(&store, pool, argv[1], 0, threads, threads,
                            apr_time_from_sec(60), apr_time_from_sec(10))
        != APR_SUCCESS) {
        fprintf(stderr, "store_load: cannot create the store\n");
        return 1;
    }
    th = apr_pcalloc(pool, sizeof(*th) * threads);
    start = apr_time_now();
    deadline = start + apr_time_from_sec(secs);
    for (i = 0; i < threads; i++) {
        apr_thread_create(&th[i], NULL, worker, (void *)(long)i, pool);
    }
    for (i = 0; i < threads; i++) {
        apr_status_t rv;
        apr_thread_join(&rv, th[i]);
    }
    elapsed = (double)(apr_time_now() - start) / APR_USEC_PER_SEC;
    printf("records=%u failed=%u seconds=%.3f records_per_sec=%.1f\n",
           done, failed, elapsed, done / elapsed);
    apr_pool_destroy(pool);
    apr_terminate();
    return failed ? 1 : 0;
}
