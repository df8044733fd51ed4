/* Unit test of notary_store against a real PostgreSQL (t/01-store.t starts it).
 *
 *   NOTARY_TEST_PGCONN=<writer conninfo> NOTARY_TEST_PGCONN_READER=<auditor conninfo> \
 *     test_store basic|restart
 *
 * basic:   both directions, binary bodies with NUL bytes read back byte for
 *          byte, refused records leave no row, idempotent re-insert,
 *          8 threads inserting concurrently; records announced as
 *          underway commit together; each record's time bound runs from
 *          its own call, queued time included; records given up on
 *          (locks, a slow server) are never written afterwards.
 * restart: talks to the wrapper on stdout/stdin ("# CONTROL stop" -> waits
 *          for a line): insert, server down (insert fails within the
 *          timeout), server up (insert succeeds on the same store), server
 *          restarted behind an idle pooled connection (insert succeeds),
 *          and no double rows.
 * hosts:   several hosts in the conninfo: a first host that accepts TCP
 *          and never answers costs its share of the bound and the record
 *          commits on the second; the next connection tries it last; a
 *          first host that accepts and closes costs nothing; connect_timeout
 *          bounds each host; all silent, or one alone, as before.
 * NOTARY_TEST_RUN prefixes the exchange ids (default: pid and time), so the
 * wrapper can count this run's rows too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "notary_leaf.h"
#include "notary_store.h"
#include "tap.h"

static const char *run_id;
static const char *reader_conninfo;
static PGconn *reader;

/* stand-ins for DER SPKI: the store does not parse them; NULs on purpose */
static const unsigned char consumer_key[] = {
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    0x04, 0x00, 0x11, 0x22, 0x33, 0x00, 0x00, 0xff, 0xee, 0xdd, 0x01, 0x02, 0x03
};
static const unsigned char merchant_key[] = {
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3,
    0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
    0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a
};

static void sha256(const void *d, size_t n, unsigned char out[32])
{
    unsigned int len = 0;
    if (!EVP_Digest(d, n, out, &len, EVP_sha256(), NULL) || len != 32) {
        fprintf(stderr, "EVP_Digest failed\n");
        exit(2);
    }
}

typedef struct {
    notary_record rec;
    unsigned char md[32];
} rec_buf;

static void make_record(rec_buf *b, apr_pool_t *p, const char *direction, const char *xid,
                        const char *body, apr_size_t body_len)
{
    memset(b, 0, sizeof(*b));
    b->rec.recorded_at = apr_time_from_sec(1700000000) + 123456;
    b->rec.direction = direction;
    b->rec.merchant = "shop";
    if (!strcmp(direction, "request")) {
        b->rec.sender_key = consumer_key;
        b->rec.sender_key_len = sizeof(consumer_key);
        b->rec.receiver_key = merchant_key;
        b->rec.receiver_key_len = sizeof(merchant_key);
        b->rec.status = 0;
        b->rec.content_type = NULL;
        b->rec.headers = "Host: shop.example\r\nX-Bin: \xff\xfe";
    }
    else {
        b->rec.sender_key = merchant_key;
        b->rec.sender_key_len = sizeof(merchant_key);
        b->rec.receiver_key = consumer_key;
        b->rec.receiver_key_len = sizeof(consumer_key);
        b->rec.status = 200;
        b->rec.content_type = "application/xml";
        b->rec.headers = "Content-Type: application/xml\r\nContent-Length: 17";
    }
    b->rec.headers_len = strlen(b->rec.headers);
    b->rec.rule = "* contains \"contract\"";
    b->rec.method = "POST";
    b->rec.uri = "/apply?x=1";
    b->rec.body = body;
    b->rec.body_len = body_len;
    sha256(body, body_len, b->md);
    b->rec.body_sha256 = b->md;
    b->rec.exchange_id = apr_pstrcat(p, run_id, "-", xid, NULL);
}

static long long count_rows(apr_pool_t *p, const char *like_suffix)
{
    PGresult *r;
    long long n = -1;
    const char *pat = apr_pstrcat(p, run_id, "-", like_suffix, NULL);
    r = PQexecParams(reader, "SELECT count(*)::text FROM notary_records WHERE exchange_id LIKE $1",
                     1, NULL, &pat, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        n = atoll(PQgetvalue(r, 0, 0));
    }
    else {
        diag("count query failed: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
    return n;
}

static int bytes_eq(const PGresult *r, int row, int col, const void *want, size_t n)
{
    return !PQgetisnull(r, row, col) && (size_t)PQgetlength(r, row, col) == n
        && memcmp(PQgetvalue(r, row, col), want, n) == 0;
}

static apr_uint64_t be64(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    apr_uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
    return v;
}

/* The row's leaf columns: a 16-byte salt, the token's digest (NULL without
 * one), its admission kept with the token's bytes, and a leaf_hash equal to
 * the leaf recomputed here from the record as given (its DER keys and body
 * bytes, not the stored digests) with the stored salt. */
static void check_leaf(apr_pool_t *p, const rec_buf *b, const char *what)
{
    const char *vals[2] = { b->rec.exchange_id, b->rec.direction };
    notary_leaf_record lr;
    notary_leaf_entry e;
    unsigned char leaf[32], tmd[32];
    PGresult *r;

    r = PQexecParams(reader,
                     "SELECT salt, leaf_hash, token_sha256, token, leaf_index FROM notary.audit_rows "
                     "WHERE exchange_id = $1 AND direction = $2",
                     2, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        ok(0, "%s: its audit row read back (%s)", what, PQresultErrorMessage(r));
        PQclear(r);
        return;
    }
    ok(!PQgetisnull(r, 0, 0) && PQgetlength(r, 0, 0) == NOTARY_LEAF_SALT_LEN,
       "%s: a 16-byte salt stored (got %d bytes)", what, PQgetlength(r, 0, 0));
    ok(PQgetisnull(r, 0, 4), "%s: leaf_index NULL until integrated", what);
    if (b->rec.token) {
        sha256(b->rec.token, b->rec.token_len, tmd);
        ok(bytes_eq(r, 0, 2, tmd, 32), "%s: token_sha256 is SHA-256 of the token", what);
        ok(bytes_eq(r, 0, 3, b->rec.token, b->rec.token_len),
           "%s: the admission keeps the token's bytes", what);
    }
    else {
        ok(PQgetisnull(r, 0, 2), "%s: token_sha256 NULL without a token", what);
    }
    memset(&lr, 0, sizeof(lr));
    lr.direction = !strcmp(b->rec.direction, "request") ? NOTARY_LEAF_REQUEST
                                                        : NOTARY_LEAF_RESPONSE;
    lr.recorded_at_us = b->rec.recorded_at;
    lr.status = b->rec.status;
    lr.salt = (const unsigned char *)PQgetvalue(r, 0, 0);
    lr.sender_spki = b->rec.sender_key;
    lr.sender_spki_len = b->rec.sender_key_len;
    lr.receiver_spki = b->rec.receiver_key;
    lr.receiver_spki_len = b->rec.receiver_key_len;
    notary_leaf_meta_set(&lr.meta.merchant, &lr.meta.merchant_len, b->rec.merchant);
    notary_leaf_meta_set(&lr.meta.rule, &lr.meta.rule_len, b->rec.rule);
    notary_leaf_meta_set(&lr.meta.method, &lr.meta.method_len, b->rec.method);
    notary_leaf_meta_set(&lr.meta.uri, &lr.meta.uri_len, b->rec.uri);
    notary_leaf_meta_set(&lr.meta.content_type, &lr.meta.content_type_len,
                         b->rec.content_type);
    notary_leaf_meta_set(&lr.meta.exchange_id, &lr.meta.exchange_id_len, b->rec.exchange_id);
    lr.headers = (const unsigned char *)(b->rec.headers ? b->rec.headers : "");
    lr.headers_len = b->rec.headers_len;
    lr.body = (const unsigned char *)b->rec.body;
    lr.body_len = b->rec.body_len;
    lr.token = (const unsigned char *)b->rec.token;
    lr.token_len = b->rec.token_len;
    if (PQgetlength(r, 0, 0) != NOTARY_LEAF_SALT_LEN || notary_leaf_from_record(p, &lr, &e)) {
        ok(0, "%s: its leaf entry can be rebuilt", what);
        PQclear(r);
        return;
    }
    notary_leaf_hash(&e, leaf);
    ok(bytes_eq(r, 0, 1, leaf, 32), "%s: leaf_hash is the leaf of the row as given", what);
    PQclear(r);
}

static void check_row(apr_pool_t *p, const rec_buf *b, const char *what)
{
    PGresult *r;
    unsigned char kmd[32];
    if (!reader) return;
    {
        const char *vals[2] = { b->rec.exchange_id, b->rec.direction };
        r = PQexecParams(reader,
                         "SELECT body, body_sha256, sender_key, receiver_key, sender_key_sha256, "
                         "status, headers, content_type, "
                         "(extract(epoch FROM recorded_at) * 1000000)::bigint, merchant, rule, uri "
                         "FROM notary_records WHERE exchange_id = $1 AND direction = $2",
                         2, NULL, vals, NULL, NULL, 1);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        ok(0, "%s: read back one row (got %d rows: %s)", what,
           PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : -1, PQresultErrorMessage(r));
        PQclear(r);
        return;
    }
    ok(bytes_eq(r, 0, 0, b->rec.body, b->rec.body_len),
       "%s: body read back byte for byte (%zu bytes, got %d)", what, (size_t)b->rec.body_len,
       PQgetlength(r, 0, 0));
    ok(bytes_eq(r, 0, 1, b->md, 32), "%s: body_sha256 read back", what);
    ok(bytes_eq(r, 0, 2, b->rec.sender_key, b->rec.sender_key_len), "%s: sender_key DER", what);
    ok(bytes_eq(r, 0, 3, b->rec.receiver_key, b->rec.receiver_key_len), "%s: receiver_key DER", what);
    sha256(b->rec.sender_key, b->rec.sender_key_len, kmd);
    ok(bytes_eq(r, 0, 4, kmd, 32), "%s: sender_key_sha256 is SHA-256 of the DER", what);
    if (b->rec.status) {
        unsigned char st[4] = { 0, 0, (unsigned char)(b->rec.status >> 8),
                                (unsigned char)b->rec.status };
        ok(bytes_eq(r, 0, 5, st, 4), "%s: status %d", what, b->rec.status);
    }
    else {
        ok(PQgetisnull(r, 0, 5), "%s: status is NULL for a request", what);
    }
    ok(bytes_eq(r, 0, 6, b->rec.headers, b->rec.headers_len), "%s: headers exact bytes", what);
    if (b->rec.content_type) {
        ok(bytes_eq(r, 0, 7, b->rec.content_type, strlen(b->rec.content_type)),
           "%s: content_type", what);
    }
    else {
        ok(PQgetisnull(r, 0, 7), "%s: content_type NULL", what);
    }
    is_int((long long)be64(PQgetvalue(r, 0, 8)), (long long)b->rec.recorded_at,
           "%s: recorded_at to the microsecond", what);
    ok(bytes_eq(r, 0, 11, b->rec.uri, strlen(b->rec.uri)), "%s: uri", what);
    PQclear(r);
    check_leaf(p, b, what);
}

/* ---- concurrency --------------------------------------------------------- */

#define N_THREADS 8
#define N_PER_THREAD 25

typedef struct {
    notary_store *st;
    int idx;
    int bad; /* every record with a wrong body digest */
    int failures, refused_right;
    char first_err[256];
} thr_arg;

static void *APR_THREAD_FUNC thr_main(apr_thread_t *t, void *data)
{
    thr_arg *a = data;
    apr_pool_t *p;
    apr_pool_create(&p, NULL);
    for (int i = 0; i < N_PER_THREAD; i++) {
        rec_buf b;
        const char *err = NULL;
        char body[64];
        int n = snprintf(body, sizeof(body), "contract %d/%d", a->idx, i);
        body[n] = '\0';
        body[8] = '\0'; /* a NUL in every body */
        make_record(&b, p, i % 2 ? "response" : "request",
                    apr_psprintf(p, "conc-%d-%d", a->idx, i), body, (apr_size_t)n);
        if (a->bad) {
            b.md[0] ^= 1;
        }
        if (notary_store_insert(a->st, &b.rec, p, &err) != APR_SUCCESS) {
            if (a->bad && err && strstr(err, "records_body_sha256")) {
                a->refused_right++;
            }
            if (!a->failures++) {
                snprintf(a->first_err, sizeof(a->first_err), "%s", err ? err : "?");
            }
        }
    }
    apr_pool_destroy(p);
    /* plain return, not apr_thread_exit(): pthread_exit's unwinding trips
     * a false stack-use-after-scope in ASan at thread teardown */
    return NULL;
}

/* ---- gathering: records announced as underway commit together */
typedef struct {
    notary_store *st;
    rec_buf b;
    apr_status_t rv;
    char err[256];
    apr_time_t done; /* when the insert returned */
} one_arg;

static void *APR_THREAD_FUNC one_insert(apr_thread_t *t, void *data)
{
    one_arg *a = data;
    apr_pool_t *p;
    const char *err = NULL;

    apr_pool_create(&p, NULL);
    a->rv = notary_store_insert(a->st, &a->b.rec, p, &err);
    a->done = apr_time_now();
    snprintf(a->err, sizeof(a->err), "%s", err ? err : "");
    apr_pool_destroy(p);
    return NULL;
}

/* The superuser's conninfo, for phases that lock tables or end sessions;
 * NULL (and a failed test) without it. */
static const char *admin_conninfo(const char *phase)
{
    const char *admin = getenv("NOTARY_TEST_PGCONN_ADMIN");

    if (!admin || !*admin) {
        ok(0, "%s: NOTARY_TEST_PGCONN_ADMIN not set", phase);
        return NULL;
    }
    return admin;
}

/* A response record for exchange xid, ready for one_insert. */
static void one_record(apr_pool_t *p, notary_store *st, one_arg *a, const char *xid,
                       const char *body)
{
    memset(a, 0, sizeof(*a));
    a->st = st;
    make_record(&a->b, p, "response", xid, body, strlen(body));
}

/* A request record for exchange xid whose sender key the database has
 * never seen: its transaction inserts the key first. */
static void new_key_record(apr_pool_t *p, notary_store *st, one_arg *a, const char *xid)
{
    unsigned char *key = apr_pmemdup(p, consumer_key, sizeof(consumer_key));

    apr_generate_random_bytes(key + sizeof(consumer_key) - 8, 8);
    memset(a, 0, sizeof(*a));
    a->st = st;
    make_record(&a->b, p, "request", xid, "contract", 8);
    a->b.rec.sender_key = key;
}

/* Insert a small record that must commit: `what` names it in the test. */
static void commits(apr_pool_t *p, notary_store *st, const char *xid, const char *what)
{
    one_arg a;

    one_record(p, st, &a, xid, "contract");
    one_insert(NULL, &a);
    ok(a.rv == APR_SUCCESS, "%s (%s)", what, a.err);
}

/* A store of up to hmax connections and a bound of secs, one connection
 * set up (statements prepared) by a first record, xid, that commits. */
static notary_store *ready_store(apr_pool_t *p, const char *conninfo, int hmax, int secs,
                                 const char *xid, const char *phase)
{
    notary_store *st = NULL;

    ok(notary_store_create(&st, p, conninfo, 0, hmax, hmax, 0, apr_time_from_sec(secs))
           == APR_SUCCESS,
       "%s: a store of %d connection(s), %d s bound, created", phase, hmax, secs);
    commits(p, st, xid, apr_psprintf(p, "%s: its first record commits", phase));
    return st;
}

/* In how many transactions were the rows of this run whose exchange id
 * (after the run prefix) matches the regex inserted (xmin)? -1 unless
 * there are exactly `rows` of them. */
static long long transactions_matching(apr_pool_t *p, const char *regex, long long rows)
{
    const char *admin = getenv("NOTARY_TEST_PGCONN_ADMIN");
    const char *v;
    PGconn *c;
    PGresult *r;
    long long n = -1;

    if (!admin || !*admin) {
        diag("NOTARY_TEST_PGCONN_ADMIN not set");
        return -1;
    }
    c = PQconnectdb(admin);
    v = apr_pstrcat(p, "^", run_id, "-(", regex, ")$", NULL);
    r = PQexecParams(c, "SELECT count(*)::text, count(DISTINCT xmin::text)::text "
                        "FROM notary.records WHERE exchange_id ~ $1",
                     1, NULL, &v, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && atoll(PQgetvalue(r, 0, 0)) == rows) {
        n = atoll(PQgetvalue(r, 0, 1));
    }
    else {
        diag("xmin query: %s (rows %s)", PQresultErrorMessage(r),
             PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?");
    }
    PQclear(r);
    PQfinish(c);
    return n;
}

/* Announce two records and start inserting the first in a thread of its
 * own: it leads and waits for the other (arrived or withdrawn). */
static apr_thread_t *announced_waiter(apr_pool_t *p, notary_store *st, one_arg *a,
                                      const char *xid)
{
    apr_thread_t *t;

    notary_store_expect(st, 2);
    memset(a, 0, sizeof(*a));
    a->st = st;
    make_record(&a->b, p, "response", xid, "contract", 8);
    a->b.rec.announced = 1;
    apr_thread_create(&t, NULL, one_insert, a, p);
    apr_sleep(apr_time_from_msec(300));
    return t;
}

static void phase_gather(apr_pool_t *p, const char *conninfo)
{
    notary_store *st;
    apr_thread_t *t;
    apr_status_t trv;
    one_arg a;
    rec_buf b;
    const char *err = NULL;
    apr_time_t t0;

    ok(notary_store_create(&st, p, conninfo, 0, 4, 4, 0, apr_time_from_sec(20))
           == APR_SUCCESS,
       "gather: store created");
    /* long enough that only an arrival or a withdrawal can end it */
    notary_store_gather_wait(st, apr_time_from_sec(8));

    /* two records announced; the first waits for the second */
    t = announced_waiter(p, st, &a, "gather-1");
    make_record(&b, p, "response", "gather-2", "contract two", 12);
    b.rec.announced = 1;
    t0 = apr_time_now();
    ok(notary_store_insert(st, &b.rec, p, &err) == APR_SUCCESS,
       "gather: the second announced record commits (%s)", err ? err : "ok");
    apr_thread_join(&trv, t);
    ok(a.rv == APR_SUCCESS, "gather: the first one, which waited for it, too (%s)", a.err);
    ok(apr_time_now() - t0 < apr_time_from_sec(4),
       "gather: the wait ended when the announced record arrived, not at its bound");
    is_int(transactions_matching(p, "gather-1|gather-2", 2), 1,
           "gather: both rows committed in one transaction");

    /* an announced record withdrawn: the waiting one goes at once */
    t = announced_waiter(p, st, &a, "gather-3");
    t0 = apr_time_now();
    notary_store_expect(st, -1);
    apr_thread_join(&trv, t);
    ok(a.rv == APR_SUCCESS, "gather: withdrawn: the waiting record commits (%s)", a.err);
    ok(apr_time_now() - t0 < apr_time_from_sec(4),
       "gather: ... as soon as the other was withdrawn");

    /* nothing announced: a lone record never waits */
    make_record(&b, p, "response", "gather-4", "contract four", 13);
    t0 = apr_time_now();
    ok(notary_store_insert(st, &b.rec, p, &err) == APR_SUCCESS
           && apr_time_now() - t0 < apr_time_from_sec(4),
       "gather: a lone unannounced record commits without waiting");
}

/* ---- batches: five rows, one transaction; a duplicate inside a batch */
static void start_announced(apr_pool_t *p, notary_store *st, one_arg *a, apr_thread_t **t,
                            const char *xid, const char *body)
{
    memset(a, 0, sizeof(*a));
    a->st = st;
    make_record(&a->b, p, "response", xid, body, strlen(body));
    a->b.rec.announced = 1;
    apr_thread_create(t, NULL, one_insert, a, p);
}

static void phase_batch(apr_pool_t *p, const char *conninfo)
{
    notary_store *st;
    one_arg a[5];
    apr_thread_t *t[5];
    apr_status_t trv;
    int i, good;

    ok(notary_store_create(&st, p, conninfo, 0, 4, 4, 0, apr_time_from_sec(20))
           == APR_SUCCESS,
       "batch: store created");
    notary_store_gather_wait(st, apr_time_from_sec(8));

    /* five announced: the first leads and waits for the other four */
    notary_store_expect(st, 5);
    for (i = 0; i < 5; i++) {
        start_announced(p, st, &a[i], &t[i], apr_psprintf(p, "batch5-%d", i), "contract");
    }
    for (i = 0, good = 0; i < 5; i++) {
        apr_thread_join(&trv, t[i]);
        good += a[i].rv == APR_SUCCESS;
    }
    is_int(good, 5, "batch: five announced records commit");
    is_int(transactions_matching(p, "batch5-[0-4]", 5), 1,
           "batch: ... all five in one transaction (one multi-row INSERT)");

    /* four announced, two of them the same exchange and direction with
     * different bodies, one a byte-identical repeat of another: the batch
     * is refused whole, then each row goes alone -- the repeat finds its
     * twin committed and succeeds, the conflicting one is refused */
    notary_store_expect(st, 4);
    start_announced(p, st, &a[0], &t[0], "dup-a", "contract a");
    start_announced(p, st, &a[1], &t[1], "dup-b", "contract b");
    start_announced(p, st, &a[2], &t[2], "dup-b", "contract b, altered");
    start_announced(p, st, &a[3], &t[3], "dup-a", "contract a");
    for (i = 0; i < 4; i++) {
        apr_thread_join(&trv, t[i]);
    }
    ok(a[0].rv == APR_SUCCESS && a[3].rv == APR_SUCCESS,
       "batch: a record and its identical repeat both succeed (%s / %s)", a[0].err, a[3].err);
    ok((a[1].rv == APR_SUCCESS) != (a[2].rv == APR_SUCCESS),
       "batch: of two different records for one exchange and direction, one commits");
    ok(strstr(a[1].rv == APR_SUCCESS ? a[2].err : a[1].err, "already has a different") != NULL,
       "batch: ... the other is refused, saying why (%s)",
       a[1].rv == APR_SUCCESS ? a[2].err : a[1].err);
    is_int(count_rows(p, "dup-%"), 2, "batch: two rows, one per exchange");
}

/* ---- one bound per record: time queued behind a stalled commit counts */
/* Another session holds notary.<table> in the given lock mode until
 * unlock(): in ACCESS EXCLUSIVE mode, every statement on it waits. */
static PGconn *lock_table(const char *admin, const char *table, const char *mode,
                          const char *phase)
{
    PGconn *lock = PQconnectdb(admin);
    char sql[128];
    PGresult *r;

    snprintf(sql, sizeof(sql), "BEGIN; LOCK TABLE notary.%s IN %s MODE", table, mode);
    r = PQexec(lock, sql);
    ok(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: notary.%s locked in %s mode (%s)", phase,
       table, mode, PQresultErrorMessage(r));
    PQclear(r);
    return lock;
}

static PGconn *lock_records(const char *admin, const char *phase)
{
    return lock_table(admin, "records", "ACCESS EXCLUSIVE", phase);
}

static void unlock(PGconn *lock)
{
    PQclear(PQexec(lock, "COMMIT"));
    PQfinish(lock);
}

static void phase_deadline(apr_pool_t *p, const char *conninfo)
{
    const char *admin = admin_conninfo("deadline");
    notary_store *st;
    apr_thread_t *ta, *tb;
    apr_status_t trv;
    one_arg a, b;
    PGconn *lock;
    apr_time_t t0, tb0;

    if (!admin) {
        return;
    }
    /* 1 s: statement_timeout 900 ms on the server */
    /* a pooled connection, set up before the table is locked */
    st = ready_store(p, conninfo, 4, 1, "deadline-w", "deadline");
    lock = lock_records(admin, "deadline");

    /* A leads and stalls on the lock until the server cancels it (900 ms);
     * B arrives 100 ms later and queues behind it. Each record's bound
     * runs from its own insert call: B may not wait out A's stall and
     * then a whole bound of its own (that was 1.7 s) */
    one_record(p, st, &a, "deadline-a", "contract a");
    one_record(p, st, &b, "deadline-b", "contract b");
    t0 = apr_time_now();
    apr_thread_create(&ta, NULL, one_insert, &a, p);
    apr_sleep(apr_time_from_msec(100));
    tb0 = apr_time_now();
    apr_thread_create(&tb, NULL, one_insert, &b, p);
    apr_thread_join(&trv, tb);
    ok(b.rv != APR_SUCCESS && apr_time_now() - tb0 < apr_time_from_msec(1500),
       "deadline: the queued record fails within its own bound (%" APR_TIME_T_FMT
       " ms: %s)",
       apr_time_as_msec(apr_time_now() - tb0), b.err);
    /* sent with what was left of its time, and the server told to give up
     * before then: its outcome is known, nothing committed later */
    ok(strstr(b.err, "57014") != NULL, "deadline: ... cancelled by the server "
                                       "(statement_timeout fitted to its time left), so known not written");
    apr_thread_join(&trv, ta);
    ok(a.rv != APR_SUCCESS && apr_time_now() - t0 < apr_time_from_msec(2500),
       "deadline: the stalled one fails too (%s)", a.err);
    unlock(lock);
    apr_sleep(apr_time_from_msec(200));
    is_int(count_rows(p, "deadline-a") + count_rows(p, "deadline-b"), 0,
           "deadline: neither refused record was written after the lock went");

    /* the store goes on once the table is free */
    commits(p, st, "deadline-c", "deadline: the next record commits");
}

/* ---- abandoned, never written later: a record the store gave up on
 * (its caller refuses the message) must not commit once a stall ends,
 * whatever part of the transaction the stall held up */
/* The record's body moved to a temporary file: stored with COPY on a
 * connection of its own, never batched */
static int file_body(apr_pool_t *p, rec_buf *b)
{
    apr_file_t *f = NULL;
    char *tmpl = apr_pstrdup(p, "/tmp/notary-store-test-XXXXXX");

    if (apr_file_mktemp(&f, tmpl, APR_FOPEN_CREATE | APR_FOPEN_READ | APR_FOPEN_WRITE | APR_FOPEN_EXCL | APR_FOPEN_DELONCLOSE, p) != APR_SUCCESS
        || apr_file_write_full(f, b->rec.body, b->rec.body_len, NULL) != APR_SUCCESS) {
        ok(0, "a temporary body file can be written");
        return 0;
    }
    b->rec.body = NULL;
    b->rec.body_file = f;
    return 1;
}

/* Another session inserts a request row for this exchange and keeps its
 * transaction open: a row for the same exchange and direction waits for
 * it in the unique index, after the row went in. */
static PGconn *hold_exchange(apr_pool_t *p, const char *admin, const char *xid)
{
    PGconn *lock = PQconnectdb(admin);
    const char *v[1] = { apr_pstrcat(p, run_id, "-", xid, NULL) };
    PGresult *r;

    PQclear(PQexec(lock, "BEGIN"));
    r = PQexecParams(lock, "INSERT INTO notary.records (recorded_at, direction, merchant, "
                           "sender_key_sha256, receiver_key_sha256, rule, method, uri, headers, "
                           "body, body_sha256, exchange_id) VALUES (now(), 'request', 'shop', "
                           "sha256('a'), sha256('b'), 'r', 'POST', '/', '', 'x', sha256('x'), $1)",
                     1, NULL, v, NULL, NULL, 0);
    ok(PQresultStatus(r) == PGRES_COMMAND_OK,
       "late: another session holds an uncommitted row for %s (%s)", xid,
       PQresultErrorMessage(r));
    PQclear(r);
    return lock;
}

/* A record with a key new to the database, held up twice: its keys wait
 * for a SHARE lock on notary.keys until keys_ms, then its row waits in
 * the unique index for another session's row of the same exchange until
 * row_ms, when that session rolls back. Each wait alone is shorter than
 * statement_timeout. Returns the record's outcome in *a; `file` sends its
 * body through COPY. */
static void held_up_twice(apr_pool_t *p, notary_store *st, const char *admin, one_arg *a,
                          const char *xid, int file, long keys_ms, long row_ms)
{
    PGconn *klock = lock_table(admin, "keys", "SHARE", "late");
    PGconn *rlock = hold_exchange(p, admin, xid);
    apr_thread_t *t;
    apr_status_t trv;
    apr_time_t t0;

    new_key_record(p, st, a, xid);
    if (file && !file_body(p, &a->b)) {
        return;
    }
    t0 = apr_time_now();
    apr_thread_create(&t, NULL, one_insert, a, p);
    apr_sleep(t0 + apr_time_from_msec(keys_ms) - apr_time_now());
    unlock(klock);
    apr_sleep(t0 + apr_time_from_msec(row_ms) - apr_time_now());
    PQclear(PQexec(rlock, "ROLLBACK"));
    PQfinish(rlock);
    apr_thread_join(&trv, t);
    diag("late: %s returned after %" APR_TIME_T_FMT " ms", xid, apr_time_as_msec(a->done - t0));
}

static void phase_late(apr_pool_t *p, const char *conninfo)
{
    const char *admin = admin_conninfo("late");
    notary_store *st;
    apr_thread_t *ta, *tb, *tc;
    apr_status_t trv;
    one_arg a, b, c;
    PGconn *lock, *klock;
    apr_time_t t0;

    if (!admin) {
        return;
    }
    /* 1 s: statement_timeout 900 ms; one connection, so the batch below
     * runs on the one the first record set up */
    st = ready_store(p, conninfo, 1, 1, "late-first", "late");

    /* A stalls on the locked table until the server cancels it (900 ms).
     * B and C queue behind it and go together when it fails, with 400 ms
     * left: a batch of two, whose statement this connection has not
     * prepared yet. Preparing it waits for the lock too. */
    lock = lock_records(admin, "late");
    one_record(p, st, &a, "late-a", "contract a");
    one_record(p, st, &b, "late-b", "contract b");
    one_record(p, st, &c, "late-c", "contract c");
    t0 = apr_time_now();
    apr_thread_create(&ta, NULL, one_insert, &a, p);
    apr_sleep(apr_time_from_msec(300));
    apr_thread_create(&tb, NULL, one_insert, &b, p);
    apr_thread_create(&tc, NULL, one_insert, &c, p);
    apr_thread_join(&trv, ta);
    apr_thread_join(&trv, tb);
    apr_thread_join(&trv, tc);
    ok(a.rv != APR_SUCCESS && b.rv != APR_SUCCESS && c.rv != APR_SUCCESS,
       "late: the stalled record and the two queued behind it fail (%" APR_TIME_T_FMT
       " ms: %s / %s)",
       apr_time_as_msec(apr_time_now() - t0), b.err, c.err);
    /* the lock goes after all three were refused, but before a wait the
     * server would have cut off at 900 ms could have ended */
    apr_sleep(apr_time_from_msec(200));
    unlock(lock);
    apr_sleep(apr_time_from_msec(1500));
    is_int(count_rows(p, "late-_"), 0,
           "late: none of them was written once the lock went");

    /* D brings a key the database does not have yet. Its transaction
     * first waits 600 ms for notary.keys (held by one session), then for
     * notary.records (held by another). Each wait is shorter than
     * statement_timeout, together they are longer than D's bound: D is
     * refused at 1 s, and the rows table is free at 1.2 s. */
    commits(p, st, "late-ready", "late: a record commits, on a connection set up before the "
                                 "next locks");
    lock = lock_records(admin, "late");
    klock = lock_table(admin, "keys", "ACCESS EXCLUSIVE", "late");
    new_key_record(p, st, &a, "late-d");
    t0 = apr_time_now();
    apr_thread_create(&ta, NULL, one_insert, &a, p);
    apr_sleep(apr_time_from_msec(600));
    unlock(klock);
    apr_thread_join(&trv, ta);
    ok(a.rv != APR_SUCCESS, "late: the record held up twice fails (%" APR_TIME_T_FMT " ms: %s)", apr_time_as_msec(apr_time_now() - t0), a.err);
    apr_sleep(apr_time_from_msec(200));
    unlock(lock);
    apr_sleep(apr_time_from_msec(1500));
    is_int(count_rows(p, "late-d"), 0, "late: ... and it was not written once the locks went");

    /* The same with time to spare: a 10 s bound, statement_timeout 9 s.
     * F waits 5 s for the keys, then for the rows until 9.5 s: its
     * transaction is past its bound (9 s from its start) when it ends, the
     * guard rolls it back, and the database says so before F's deadline:
     * F is refused knowing the row is not written. */
    st = ready_store(p, conninfo, 1, 10, "late-ready5", "late");
    lock = lock_records(admin, "late");
    klock = lock_table(admin, "keys", "ACCESS EXCLUSIVE", "late");
    new_key_record(p, st, &a, "late-f");
    t0 = apr_time_now();
    apr_thread_create(&ta, NULL, one_insert, &a, p);
    apr_sleep(apr_time_from_sec(5));
    unlock(klock);
    apr_sleep(t0 + apr_time_from_msec(9500) - apr_time_now());
    unlock(lock);
    apr_thread_join(&trv, ta);
    ok(a.rv == APR_TIMEUP && apr_time_now() - t0 < apr_time_from_sec(10),
       "late: the record reached past its bound is refused before its deadline (%" APR_TIME_T_FMT " ms)", apr_time_as_msec(apr_time_now() - t0));
    ok(strstr(a.err, "known not written") != NULL,
       "late: ... saying the database kept nothing (%s)", a.err);
    apr_sleep(apr_time_from_msec(200));
    is_int(count_rows(p, "late-f"), 0, "late: ... and it is not there");

    /* Held up before its row went in (600 ms for the keys) and after (the
     * unique index waits for another transaction until 1.2 s): refused at
     * 1 s, and its transaction does not commit when the other one is gone.
     * Through the pipeline (the guard) and through COPY (no COMMIT sent). */
    st = ready_store(p, conninfo, 1, 1, "late-ready1", "late");
    held_up_twice(p, st, admin, &a, "late-g", 0, 600, 1200);
    ok(a.rv != APR_SUCCESS, "late: a record held up after its row went in fails (%s)", a.err);
    apr_sleep(apr_time_from_msec(300));
    is_int(count_rows(p, "late-g"), 0, "late: ... and is not written once the other transaction is gone");
    commits(p, st, "late-ready2", "late: a record commits on a fresh connection");
    held_up_twice(p, st, admin, &a, "late-h", 1, 600, 1200);
    ok(a.rv != APR_SUCCESS, "late: a file body (COPY) held up the same way fails (%s)", a.err);
    apr_sleep(apr_time_from_msec(300));
    is_int(count_rows(p, "late-h"), 0, "late: ... and is not written either");

    /* COPY with time to spare (10 s): keys until 5 s, the row until 9.7 s.
     * Less than a tenth of the COPY's time is left when it is done: no
     * COMMIT, the store says so before the deadline. */
    st = ready_store(p, conninfo, 1, 10, "late-ready3", "late");
    held_up_twice(p, st, admin, &a, "late-i", 1, 5000, 9700);
    ok(a.rv == APR_TIMEUP && strstr(a.err, "known not written") != NULL,
       "late: a COPY done with too little time left is rolled back, known not written (%s)",
       a.err);
    is_int(count_rows(p, "late-i"), 0, "late: ... and it is not there");

    /* the store goes on */
    commits(p, st, "late-e", "late: the next record commits");
}

/* ---- one pooled connection, several large records (COPY, each on a
 * connection of its own) contending for it while the table is locked:
 * each fails within its own bound, whether it got the connection in time
 * or not, and none is written once the lock goes */
#define POOL_N 4
typedef struct {
    one_arg a;
    apr_time_t started, took;
} pool_arg;

static void *APR_THREAD_FUNC pool_insert(apr_thread_t *t, void *data)
{
    pool_arg *pa = data;

    pa->started = apr_time_now();
    one_insert(t, &pa->a);
    pa->took = apr_time_now() - pa->started;
    return NULL;
}

/* the records of pa[0 .. POOL_N-2], one after the other */
static void *APR_THREAD_FUNC pool_hog(apr_thread_t *t, void *data)
{
    pool_arg *pa = data;

    for (int i = 0; i < POOL_N - 1; i++) {
        pool_insert(t, &pa[i]);
    }
    return NULL;
}

static void phase_pool(apr_pool_t *p, const char *conninfo)
{
    const char *admin = admin_conninfo("pool");
    notary_store *st;
    apr_thread_t *t[POOL_N];
    pool_arg pa[POOL_N];
    apr_status_t trv;
    PGconn *lock;
    int i, late = 0, failed = 0;
    long long rows = 0;

    if (!admin) {
        return;
    }
    ok(notary_store_create(&st, p, conninfo, 0, 1, 1, 0, apr_time_from_sec(1))
           == APR_SUCCESS,
       "pool: store with one connection created");
    /* the connection set up (statements prepared) before the lock: the
     * records then wait for it, not for a fresh connection's set-up */
    memset(&pa[0], 0, sizeof(pa[0]));
    pa[0].a.st = st;
    make_record(&pa[0].a.b, p, "response", "pool-before", "contract before", 15);
    one_insert(NULL, &pa[0].a);
    ok(pa[0].a.rv == APR_SUCCESS, "pool: a first record commits (%s)", pa[0].a.err);
    lock = lock_records(admin, "pool");
    for (i = 0; i < POOL_N; i++) {
        memset(&pa[i], 0, sizeof(pa[i]));
        pa[i].a.st = st;
        make_record(&pa[i].a.b, p, "response", apr_psprintf(p, "pool-%d", i), "contract pool", 13);
        if (!file_body(p, &pa[i].a.b)) {
            return;
        }
        apr_thread_create(&t[i], NULL, pool_insert, &pa[i], p);
        apr_sleep(apr_time_from_msec(60));
    }
    for (i = 0; i < POOL_N; i++) {
        apr_thread_join(&trv, t[i]);
        failed += pa[i].a.rv != APR_SUCCESS;
        if (pa[i].took > apr_time_from_msec(1250)) {
            diag("pool: record %d took %" APR_TIME_T_FMT " ms: %s", i,
                 apr_time_as_msec(pa[i].took), pa[i].a.err);
            late++;
        }
        else {
            diag("pool: record %d failed in %" APR_TIME_T_FMT " ms: %s", i,
                 apr_time_as_msec(pa[i].took), pa[i].a.err);
        }
    }
    is_int(failed, POOL_N, "pool: every record against the locked table fails");
    is_int(late, 0, "pool: ... each within its own bound (1 s, a slice over at most), "
                    "waiting for the connection included");

    /* A thread that takes the connection back as soon as it has let it go
     * (records of its own, one after the other) usually wins it over a
     * waiter just woken: the waiter must still give up at its own bound,
     * not wait on until that thread is done */
    for (i = 0; i < POOL_N; i++) {
        memset(&pa[i], 0, sizeof(pa[i]));
        pa[i].a.st = st;
        make_record(&pa[i].a.b, p, "response", apr_psprintf(p, "pool-hog-%d", i),
                    "contract pool", 13);
        if (!file_body(p, &pa[i].a.b)) {
            return;
        }
    }
    apr_thread_create(&t[0], NULL, pool_hog, pa, p);
    apr_sleep(apr_time_from_msec(100));
    apr_thread_create(&t[1], NULL, pool_insert, &pa[POOL_N - 1], p);
    apr_thread_join(&trv, t[1]);
    ok(pa[POOL_N - 1].a.rv != APR_SUCCESS && pa[POOL_N - 1].took < apr_time_from_msec(1250),
       "pool: a waiter such a thread may overtake gives up within its own bound (%" APR_TIME_T_FMT " ms: %s)",
       apr_time_as_msec(pa[POOL_N - 1].took), pa[POOL_N - 1].a.err);
    apr_thread_join(&trv, t[0]);
    unlock(lock);
    apr_sleep(apr_time_from_msec(200));
    for (i = 0; i < POOL_N; i++) {
        rows += count_rows(p, apr_psprintf(p, "pool-%d", i))
              + count_rows(p, apr_psprintf(p, "pool-hog-%d", i));
    }
    is_int(rows, 0, "pool: none of them was written after the lock went");

    /* the one connection serves the next record */
    memset(&pa[0], 0, sizeof(pa[0]));
    pa[0].a.st = st;
    make_record(&pa[0].a.b, p, "response", "pool-after", "contract after", 14);
    one_insert(NULL, &pa[0].a);
    ok(pa[0].a.rv == APR_SUCCESS, "pool: the next record commits (%s)", pa[0].a.err);
}

/* ---- a kept body that cannot be read back whole (a temporary file
 * shorter than the length recorded for it): the record fails, no row is
 * left half-written, and the connection that was in the middle of its
 * COPY serves the next record */
static void phase_short_file(apr_pool_t *p, const char *conninfo)
{
    notary_store *st;
    one_arg a;

    ok(notary_store_create(&st, p, conninfo, 0, 1, 1, 0, apr_time_from_sec(5))
           == APR_SUCCESS,
       "short file: store with one connection created");
    one_record(p, st, &a, "short-file", "contract, the first half");
    if (!file_body(p, &a.b)) {
        return;
    }
    a.b.rec.body_len = 48;      /* the file holds 24 */
    a.b.rec.body_sha256 = NULL; /* the store hashes what it reads */
    one_insert(NULL, &a);
    ok(a.rv != APR_SUCCESS && strstr(a.err, "it ends after 24 of its 48 bytes"),
       "short file: the record fails (%s)", a.err);
    is_int(count_rows(p, "short-file"), 0, "short file: no row, not even in part");

    one_record(p, st, &a, "short-file-next", "contract next");
    if (!file_body(p, &a.b)) {
        return;
    }
    one_insert(NULL, &a);
    ok(a.rv == APR_SUCCESS, "short file: the next record (COPY too) commits (%s)", a.err);
    is_int(count_rows(p, "short-file-next"), 1, "short file: ... one row");
}

/* ---- the server's process for a connection killed in the middle of a
 * COPY (pg_terminate_backend, as a DBA or a crash would). Nothing of an
 * interrupted COPY is committed, so the store tries once more on a fresh
 * connection: killed once, the record is stored whole, once; killed on
 * both attempts, it fails with both reasons and leaves no row. */
static int kill_copies(PGconn *c, int want)
{
    char pids[4][16];
    int killed = 0;

    /* 64 MiB take a while to stream: catch each COPY under way (a process
     * told to go may still show as active for a moment: count it once) */
    for (int i = 0; i < 10000 && killed < want; i++) {
        PGresult *r = PQexec(c, "SELECT pid::text, pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE query LIKE '%COPY notary.records%' AND state = 'active' "
                                "AND pid <> pg_backend_pid()");
        for (int row = 0; PQresultStatus(r) == PGRES_TUPLES_OK && row < PQntuples(r); row++) {
            int seen = 0;
            for (int k = 0; k < killed; k++) {
                seen |= !strcmp(pids[k], PQgetvalue(r, row, 0));
            }
            if (!seen && killed < 4) {
                apr_cpystrn(pids[killed++], PQgetvalue(r, row, 0), sizeof(pids[0]));
            }
        }
        PQclear(r);
        apr_sleep(apr_time_from_msec(1));
    }
    return killed;
}

static void phase_killed_copy(apr_pool_t *p, const char *conninfo)
{
    const char *admin = admin_conninfo("killed COPY");
    notary_store *st;
    one_arg a;
    apr_thread_t *t;
    apr_status_t trv;
    apr_size_t big_len = 64 * 1024 * 1024;
    char *big;
    PGconn *c;
    PGresult *r;
    const char *xid;
    int round;

    if (!admin) {
        return;
    }
    ok(notary_store_create(&st, p, conninfo, 0, 1, 1, 0, apr_time_from_sec(60))
           == APR_SUCCESS,
       "killed COPY: store with one connection created");
    big = apr_palloc(p, big_len);
    for (apr_size_t k = 0; k < big_len; k++) {
        big[k] = (char)(k * 131 + (k >> 12)); /* hardly compressible */
    }
    c = PQconnectdb(admin);
    for (round = 1; round <= 2; round++) {
        int killed;

        memset(&a, 0, sizeof(a));
        a.st = st;
        make_record(&a.b, p, "response", apr_psprintf(p, "killed-copy-%d", round), big, big_len);
        if (!file_body(p, &a.b)) {
            return;
        }
        a.b.rec.body_sha256 = NULL;
        apr_thread_create(&t, NULL, one_insert, &a, p);
        killed = kill_copies(c, round);
        apr_thread_join(&trv, t);
        is_int(killed, round, "killed COPY: the server process killed during %s",
               round == 1 ? "the first attempt" : "both attempts");
        if (round == 1) {
            ok(a.rv == APR_SUCCESS, "killed COPY: ... the record is stored on a fresh "
                                    "connection (%s)",
               a.err);
            xid = a.b.rec.exchange_id;
            r = PQexecParams(reader, "SELECT count(*)::text, min(octet_length(body))::text "
                                     "FROM notary_records WHERE exchange_id = $1",
                             1, NULL, &xid, NULL, NULL, 0);
            ok(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "1")
                   && !strcmp(PQgetvalue(r, 0, 1), "67108864"),
               "killed COPY: ... once, with all of its 64 MiB (%s rows, %s bytes)",
               PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?",
               PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 1) : "?");
            PQclear(r);
        }
        else {
            ok(a.rv != APR_SUCCESS && strstr(a.err, "connection lost")
                   && strstr(a.err, "first attempt"),
               "killed COPY: ... the record fails with both reasons (%s)", a.err);
            is_int(count_rows(p, "killed-copy-2"), 0, "killed COPY: ... and leaves no row");
        }
    }
    PQfinish(c);

    commits(p, st, "killed-copy-next", "killed COPY: the next record commits");
}

static void phase_basic(apr_pool_t *p, const char *conninfo)
{
    notary_store *st = NULL;
    apr_status_t rv;
    const char *err = NULL;
    rec_buf req, resp, b;
    static const char req_body[] = "<contract>\0\x01\x02\xff\xfe binary\0tail</contract>";
    static const char resp_body[] = "\0\0\0leading NULs, then <contract accepted/>\x80\x81";

    rv = notary_store_create(&st, p, conninfo, 0, 2, 1, 0, apr_time_from_sec(3));
    ok(rv == APR_EINVAL && st == NULL, "create refuses smax > hmax (rv %d)", rv);

    rv = notary_store_create(&st, p, conninfo, 0, 4, 4, apr_time_from_sec(60),
                             apr_time_from_sec(5));
    ok(rv == APR_SUCCESS && st, "store created (lazily, rv %d)", rv);
    if (!st) return;

    make_record(&req, p, "request", "x1", req_body, sizeof(req_body) - 1);
    rv = notary_store_insert(st, &req.rec, p, &err);
    ok(rv == APR_SUCCESS, "request with NUL bytes inserted (rv %d, err %s)", rv, err ? err : "-");
    check_row(p, &req, "request");

    make_record(&resp, p, "response", "x1", resp_body, sizeof(resp_body) - 1);
    rv = notary_store_insert(st, &resp.rec, p, &err);
    ok(rv == APR_SUCCESS, "response inserted (rv %d, err %s)", rv, err ? err : "-");
    check_row(p, &resp, "response");

    make_record(&b, p, "request", "empty", "", 0);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "empty body inserted (rv %d, err %s)", rv, err ? err : "-");
    check_row(p, &b, "empty body");

    {
        /* an admission token: named by the rows of its exchange, kept once */
        static const char tok[] = "eyJhbGciOiJFZERTQSJ9.eyJhdWQiOiJub3RhcnkuZXhhbXBsZSJ9.c2ln";
        rec_buf t2;
        PGresult *r;
        make_record(&b, p, "request", "tok", "<contract/>", 11);
        b.rec.token = tok;
        b.rec.token_len = sizeof(tok) - 1;
        b.rec.token_jti = "jti-1";
        b.rec.token_exp = 1700000900;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_SUCCESS, "request with an admission token (rv %d, err %s)", rv,
           err ? err : "-");
        check_row(p, &b, "with a token");
        make_record(&t2, p, "response", "tok", "<ok/>", 5);
        t2.rec.token = tok;
        t2.rec.token_len = sizeof(tok) - 1;
        t2.rec.token_jti = "jti-1";
        t2.rec.token_exp = 1700000900;
        rv = notary_store_insert(st, &t2.rec, p, &err);
        ok(rv == APR_SUCCESS, "its response, the same token (rv %d, err %s)", rv,
           err ? err : "-");
        check_row(p, &t2, "the same token");
        if (reader) {
            r = PQexecParams(reader,
                             "SELECT count(*), min(token_jti), min((extract(epoch FROM r.token_exp))::bigint) "
                             "FROM notary.report_rows r WHERE r.exchange_id LIKE $1",
                             1, NULL, (const char *[]){ apr_pstrcat(p, run_id, "-tok", NULL) }, NULL, NULL, 0);
            ok(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "2")
                   && !strcmp(PQgetvalue(r, 0, 1), "jti-1")
                   && !strcmp(PQgetvalue(r, 0, 2), "1700000900"),
               "both rows show the admission's jti and exp (got %s, %s, %s: %s)",
               PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "-",
               PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 1) : "-",
               PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 2) : "-",
               PQresultErrorMessage(r));
            PQclear(r);
        }
    }

    /* identical again (what a retry after a lost answer sends): no 2nd row */
    rv = notary_store_insert(st, &req.rec, p, &err);
    ok(rv == APR_SUCCESS, "identical re-insert accepted (rv %d, err %s)", rv, err ? err : "-");
    if (reader) is_int(count_rows(p, "x1"), 2, "still one request and one response for x1");

    make_record(&b, p, "request", "x1", "another body", 12);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_EGENERAL && err && strstr(err, "already has a different"),
       "different request under the same exchange refused (rv %d, err %s)", rv, err ? err : "-");

    make_record(&b, p, "request", "badsha", "abc", 3);
    b.md[0] ^= 1;
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_EGENERAL && err && strstr(err, "records_body_sha256") && strstr(err, "23514"),
       "wrong body_sha256 refused by the database (rv %d, err %s)", rv, err ? err : "-");
    if (reader) is_int(count_rows(p, "badsha"), 0, "no row for the refused record");

    {
        /* key digests the caller passes are used as given, and a wrong one
         * never gets past the key table's CHECK */
        unsigned char good[32], bad[32];
        make_record(&b, p, "request", "keymd", "abc", 3);
        sha256(b.rec.sender_key, b.rec.sender_key_len, good);
        b.rec.sender_key_sha256 = good;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_SUCCESS, "record with the caller's key digest (rv %d, err %s)", rv,
           err ? err : "-");
        check_row(p, &b, "caller's key digest");
        make_record(&b, p, "request", "badkeymd", "abc", 3);
        b.rec.sender_key = (const unsigned char *)"\x30\x03\x02\x01\x07";
        b.rec.sender_key_len = 5;
        memcpy(bad, good, 32);
        b.rec.sender_key_sha256 = bad;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_EGENERAL && err && strstr(err, "keys_sha256_of_der"),
           "a key digest that is not the key's refused (rv %d, err %s)", rv, err ? err : "-");
        if (reader) is_int(count_rows(p, "badkeymd"), 0, "no row for it");
    }

    make_record(&b, p, "request", "nostatus", "abc", 3);
    b.rec.status = 200;
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_EGENERAL && err && strstr(err, "records_status"),
       "request with a status refused (rv %d, err %s)", rv, err ? err : "-");

    make_record(&b, p, "request", "nomerchant", "abc", 3);
    b.rec.merchant = NULL;
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_EINVAL && err && strstr(err, "merchant"),
       "incomplete record refused before sending (rv %d, err %s)", rv, err ? err : "-");

    make_record(&b, p, "sideways", "dir", "abc", 3);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_EINVAL, "bad direction refused (rv %d, err %s)", rv, err ? err : "-");

    /* a body kept in a file streams in with COPY (3 MiB: many chunks) */
    {
        apr_size_t big_len = 3 * 1024 * 1024 + 17;
        char *big = apr_palloc(p, big_len), *hdr;
        apr_file_t *f;
        for (apr_size_t i = 0; i < big_len; i++) {
            big[i] = (char)((i * 7) % 251); /* NULs and high bytes */
        }
        make_record(&b, p, "response", "file", big, big_len);
        if (!file_body(p, &b)) {
            return;
        }
        f = b.rec.body_file;
        b.rec.body_sha256 = NULL;         /* the store hashes it */
        b.rec.token = "file.token.bytes"; /* its admission rides with the keys */
        b.rec.token_len = 16;
        b.rec.token_exp = 1700000900;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_SUCCESS, "file body inserted by COPY (rv %d, err %s)", rv, err ? err : "-");
        b.rec.body = big;
        check_row(p, &b, "file body");
        b.rec.body = NULL;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_SUCCESS, "identical file body again accepted (rv %d, err %s)", rv,
           err ? err : "-");
        if (reader) is_int(count_rows(p, "file"), 1, "still one row for the file body");

        make_record(&b, p, "request", "filebadsha", big, big_len);
        b.rec.body = NULL;
        b.rec.body_file = f;
        b.md[5] ^= 0x40; /* given, and wrong */
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_EGENERAL && err && strstr(err, "records_body_sha256"),
           "file body with a wrong digest refused (rv %d, err %s)", rv, err ? err : "-");
        if (reader) is_int(count_rows(p, "filebadsha"), 0, "no row for it");

        /* a header block longer than one COPY chunk */
        make_record(&b, p, "request", "filehdr", big, 100);
        hdr = apr_palloc(p, 70000);
        memset(hdr, 'h', 70000);
        b.rec.headers = hdr;
        b.rec.headers_len = 70000;
        apr_file_trunc(f, 100);
        b.rec.body = NULL;
        b.rec.body_file = f;
        rv = notary_store_insert(st, &b.rec, p, &err);
        ok(rv == APR_SUCCESS, "file body with a 70000-byte header block (rv %d, err %s)", rv,
           err ? err : "-");
        b.rec.body = big;
        check_row(p, &b, "file body, long headers");
        apr_file_close(f);
    }

    /* the connection survives a refused record: next insert works */
    make_record(&b, p, "response", "after-errors", "ok", 2);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "insert after refused records (rv %d, err %s)", rv, err ? err : "-");

    {
        apr_thread_t *t[N_THREADS];
        thr_arg a[N_THREADS];
        int fails = 0;
        for (int i = 0; i < N_THREADS; i++) {
            memset(&a[i], 0, sizeof(a[i]));
            a[i].st = st;
            a[i].idx = i;
            /* the last thread's rows are refused: batches that hold one of
             * them fall back to one by one, and the good rows still commit */
            a[i].bad = i == N_THREADS - 1;
            if (apr_thread_create(&t[i], NULL, thr_main, &a[i], p) != APR_SUCCESS) {
                ok(0, "thread %d created", i);
                return;
            }
        }
        for (int i = 0; i < N_THREADS; i++) {
            apr_status_t trv;
            apr_thread_join(&trv, t[i]);
            if (a[i].bad) {
                is_int(a[i].refused_right, N_PER_THREAD,
                       "thread %d: every record with a wrong digest refused, saying why", i);
                continue;
            }
            fails += a[i].failures;
            if (a[i].failures) diag("thread %d: %d failures, first: %s", i, a[i].failures, a[i].first_err);
        }
        is_int(fails, 0, "%d threads x %d inserts through a pool of 4: no failures",
               N_THREADS - 1, N_PER_THREAD);
        if (reader) is_int(count_rows(p, "conc-%"), (N_THREADS - 1) * N_PER_THREAD,
                           "exactly %d concurrent rows, none of the refused ones",
                           (N_THREADS - 1) * N_PER_THREAD);
    }

    {
        notary_store *bad;
        apr_time_t t0;
        rv = notary_store_create(&bad, p, "host=/nonexistent/notary-sock port=1 dbname=x user=x",
                                 0, 1, 1, 0, apr_time_from_sec(2));
        ok(rv == APR_SUCCESS, "store on an unreachable database is created (lazy)");
        make_record(&b, p, "request", "unreachable", "abc", 3);
        t0 = apr_time_now();
        rv = notary_store_insert(bad, &b.rec, p, &err);
        ok(rv == APR_ECONNREFUSED && err && strstr(err, "cannot connect"),
           "insert to an unreachable database fails clearly (rv %d, err %s)", rv, err ? err : "-");
        ok(apr_time_now() - t0 < apr_time_from_sec(3), "... within the timeout");
    }
}

static int wait_for(const char *what)
{
    char line[128];
    printf("# CONTROL %s\n", what);
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin)) {
        diag("no answer from the wrapper to '%s'", what);
        return 0;
    }
    return 1;
}

static void phase_restart(apr_pool_t *p, const char *conninfo)
{
    notary_store *st = NULL;
    apr_status_t rv;
    const char *err = NULL;
    rec_buf b;
    apr_time_t t0, took;
    const apr_interval_time_t timeout = apr_time_from_sec(3);

    rv = notary_store_create(&st, p, conninfo, 1, 2, 2, 0, timeout);
    ok(rv == APR_SUCCESS, "store created (rv %d)", rv);
    if (!st) return;

    make_record(&b, p, "request", "r-before", "contract before", 15);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "insert before the restart (rv %d, err %s)", rv, err ? err : "-");

    if (!wait_for("stop")) return;
    make_record(&b, p, "request", "r-down", "contract while down", 19);
    t0 = apr_time_now();
    rv = notary_store_insert(st, &b.rec, p, &err);
    took = apr_time_now() - t0;
    ok(rv != APR_SUCCESS && err && *err, "insert while the database is down fails (rv %d, err %s)",
       rv, err ? err : "-");
    ok(took <= timeout + apr_time_from_sec(1), "... within the timeout (%" APR_TIME_T_FMT " ms)",
       apr_time_as_msec(took));

    if (!wait_for("start")) return;
    make_record(&b, p, "response", "r-after", "contract after", 14);
    b.rec.status = 201;
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "insert after the restart succeeds on the same store (rv %d, err %s)",
       rv, err ? err : "-");

    /* now a pooled connection is idle and the server restarts behind it */
    if (!wait_for("restart")) return;
    make_record(&b, p, "request", "r-stale", "contract stale", 14);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "insert over a connection the restart killed succeeds (rv %d, err %s)",
       rv, err ? err : "-");

    /* the connection breaks while the INSERT waits in the server (a lock
     * held by the wrapper; then pg_terminate_backend): the store retries on
     * a fresh connection, which must not make a second row */
    if (!wait_for("kill-inflight")) return;
    make_record(&b, p, "request", "r-inflight", "contract in flight", 18);
    rv = notary_store_insert(st, &b.rec, p, &err);
    ok(rv == APR_SUCCESS, "insert whose connection was killed mid-statement succeeds by retry "
                          "(rv %d, err %s)",
       rv, err ? err : "-");

    /* read back only now: an idle reader would be killed by the restarts */
    if (reader_conninfo && *reader_conninfo) {
        reader = PQconnectdb(reader_conninfo);
        if (PQstatus(reader) == CONNECTION_OK) {
            is_int(count_rows(p, "r-%"), 4,
                   "exactly four rows: before, after, stale, inflight; none twice");
        }
        else {
            ok(0, "reader connects after the restarts: %s", PQerrorMessage(reader));
        }
    }
}

/* ---- hosts: several hosts in the conninfo, the first one silent ---- */

/* A listener on 127.0.0.1 that never accepts: the kernel completes the
 * TCP handshake and takes the startup packet, nobody ever answers (a
 * frozen host). Its port in *port; the socket, or -1. */
static int silent_listener(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0
        || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* A listener that accepts each connection and closes it at once (a host
 * whose PostgreSQL is gone but whose port is held), till *stop. */
typedef struct {
    int fd;
    volatile int stop;
    int accepted;
} closer_arg;

static void *APR_THREAD_FUNC closer_main(apr_thread_t *t, void *data)
{
    closer_arg *c = data;
    int i;

    for (i = 0; i < 600 && !c->stop; i++) { /* at most a minute */
        struct pollfd pfd = { c->fd, POLLIN, 0 };
        if (poll(&pfd, 1, 100) == 1) {
            int fd = accept(c->fd, NULL, NULL);
            if (fd >= 0) {
                c->accepted++;
                close(fd);
            }
        }
    }
    return NULL;
}

/* the store's log lines (notary_store_set_log) */
static char host_log[4096];
static int host_log_lines;

static void host_logger(void *ctx, int level, const char *msg)
{
    size_t n = strlen(host_log);

    host_log_lines++;
    /* one line of TAP: lines apart by " | " */
    snprintf(host_log + n, sizeof(host_log) - n, "%s[%d] %s", n ? " | " : "", level, msg);
}

static void host_log_reset(void)
{
    host_log[0] = '\0';
    host_log_lines = 0;
}

/* A store on conninfo, bound to secs, logging to host_logger. */
static notary_store *hosts_store(apr_pool_t *p, const char *conninfo, int secs)
{
    notary_store *st = NULL;

    if (notary_store_create(&st, p, conninfo, 0, 1, 1, 0, apr_time_from_sec(secs))
        != APR_SUCCESS) {
        return NULL;
    }
    notary_store_set_log(st, host_logger, NULL);
    host_log_reset();
    return st;
}

/* Insert one record on st; its outcome in *a, the time it took returned. */
static apr_interval_time_t timed_insert(apr_pool_t *p, notary_store *st, one_arg *a,
                                        const char *xid)
{
    apr_time_t t0 = apr_time_now();

    one_record(p, st, a, xid, "contract over several hosts");
    one_insert(NULL, a);
    return a->done - t0;
}

static void phase_hosts(apr_pool_t *p, const char *conninfo)
{
    PQconninfoOption *opts, *o;
    char *perr = NULL, needle[64];
    const char *host = NULL, *port = NULL, *dbname = NULL, *user = NULL, *admin;
    const char *rest, *ci;
    int silent_fd, silent_port, silent2_fd, silent2_port, closer_port = 0;
    closer_arg closer;
    apr_thread_t *closer_thr = NULL;
    apr_status_t trv;
    notary_store *st;
    one_arg a;
    apr_interval_time_t took;
    PGconn *adm;
    PGresult *r;

    opts = PQconninfoParse(conninfo, &perr);
    ok(opts != NULL, "the harness's conninfo parses (%s)", perr ? perr : "ok");
    if (!opts) {
        return;
    }
    for (o = opts; o->keyword; o++) {
        if (!o->val) continue;
        if (!strcmp(o->keyword, "host")) host = apr_pstrdup(p, o->val);
        if (!strcmp(o->keyword, "port")) port = apr_pstrdup(p, o->val);
        if (!strcmp(o->keyword, "dbname")) dbname = apr_pstrdup(p, o->val);
        if (!strcmp(o->keyword, "user")) user = apr_pstrdup(p, o->val);
    }
    PQconninfoFree(opts);
    ok(host && port && dbname && user, "the harness names host, port, dbname, user");
    if (!host || !port || !dbname || !user || !(admin = admin_conninfo("hosts"))) {
        return;
    }
    rest = apr_psprintf(p, "dbname=%s user=%s target_session_attrs=read-write", dbname, user);
    silent_fd = silent_listener(&silent_port);
    silent2_fd = silent_listener(&silent2_port);
    ok(silent_fd >= 0 && silent2_fd >= 0, "two silent listeners on 127.0.0.1 (ports %d, %d)",
       silent_port, silent2_port);
    memset(&closer, 0, sizeof(closer));
    closer.fd = silent_listener(&closer_port);
    ok(closer.fd >= 0
           && (trv = apr_thread_create(&closer_thr, NULL, closer_main, &closer, p)) == APR_SUCCESS,
       "a listener that accepts and closes (port %d)", closer_port);
    if (silent_fd < 0 || silent2_fd < 0 || !closer_thr) {
        return;
    }

    /* 1. the first host silent, the second the real one: recorded, after
     * the silent host's share (3 s / 2 hosts), not the whole bound */
    ci = apr_psprintf(p, "host=127.0.0.1,%s port=%d,%s %s", host, silent_port, port, rest);
    st = hosts_store(p, ci, 3);
    ok(st != NULL, "a store on '%s', 3 s bound", ci);
    if (!st) return;
    took = timed_insert(p, st, &a, "h-silent-first");
    ok(a.rv == APR_SUCCESS, "silent first host: the record commits on the second host "
                            "(rv %d, err %s)",
       a.rv, a.err);
    ok(took >= apr_time_from_msec(1400) && took < apr_time_from_msec(2700),
       "... after the silent host's share of 1.5 s, well within the 3 s bound (took %" APR_TIME_T_FMT " ms)", apr_time_as_msec(took));
    is_int(count_rows(p, "h-silent-first"), 1, "... its row is there");
    snprintf(needle, sizeof(needle), "host 127.0.0.1 port %d of NotaryDatabase", silent_port);
    {
        const char *w = strstr(host_log, "did not answer within ");
        long ms = w ? atol(w + strlen("did not answer within ")) : 0;
        ok(host_log_lines == 1 && strstr(host_log, "NOTARY03303: record store: ")
               && strstr(host_log, needle) && ms >= 1400 && ms <= 1500
               && !strncmp(host_log, "[4] ", 4),
           "... one NOTARY03303 warning naming the silent host and its 1.5 s "
           "(log: %s)",
           host_log);
    }

    /* 2. the pooled connection ends; the next one tries the host that did
     * not answer last, so no new wait and no new line */
    adm = PQconnectdb(admin);
    r = PQexec(adm, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'mod_notary' AND pid <> pg_backend_pid()");
    ok(PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) >= 1,
       "the store's connection terminated (%s)", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(adm);
    apr_sleep(apr_time_from_msec(200));
    host_log_reset();
    took = timed_insert(p, st, &a, "h-silent-again");
    ok(a.rv == APR_SUCCESS && took < apr_time_from_msec(1000),
       "a new connection tries the silent host last: commits at once (rv %d, %" APR_TIME_T_FMT " ms, err %s)", a.rv, apr_time_as_msec(took), a.err);
    is_int(host_log_lines, 0, "... and logs nothing");

    /* 3. the first host accepts and closes: the next is tried at once */
    ci = apr_psprintf(p, "host=127.0.0.1,%s port=%d,%s %s", host, closer_port, port, rest);
    st = hosts_store(p, ci, 3);
    took = st ? timed_insert(p, st, &a, "h-closing-first") : 0;
    ok(st && a.rv == APR_SUCCESS && took < apr_time_from_msec(1000),
       "first host accepts and closes: commits on the second at once (rv %d, %" APR_TIME_T_FMT " ms, err %s)", a.rv, apr_time_as_msec(took), a.err);
    ok(closer.accepted >= 1, "... the closing host was tried first (%d accepted)",
       closer.accepted);
    is_int(host_log_lines, 0, "... no NOTARY03303 for a host that refuses");

    /* 4. connect_timeout in the conninfo bounds each host instead of the
     * share: 2 s of a 6 s bound, not 3 s */
    ci = apr_psprintf(p, "host=127.0.0.1,%s port=%d,%s %s connect_timeout=2", host,
                      silent_port, port, rest);
    st = hosts_store(p, ci, 6);
    took = st ? timed_insert(p, st, &a, "h-connect-timeout") : 0;
    ok(st && a.rv == APR_SUCCESS && took >= apr_time_from_msec(1900)
           && took < apr_time_from_msec(2800),
       "connect_timeout=2 bounds the silent host to 2 s (rv %d, %" APR_TIME_T_FMT
       " ms, err %s)",
       a.rv, apr_time_as_msec(took), a.err);

    /* 5. every host silent: refused within the bound, each one named */
    ci = apr_psprintf(p, "host=127.0.0.1,127.0.0.1 port=%d,%d %s", silent_port, silent2_port,
                      rest);
    st = hosts_store(p, ci, 2);
    took = st ? timed_insert(p, st, &a, "h-all-silent") : 0;
    ok(st && a.rv == APR_TIMEUP && took >= apr_time_from_msec(1900)
           && took < apr_time_from_msec(2600),
       "all hosts silent: refused (TIMEUP) within the 2 s bound (rv %d, %" APR_TIME_T_FMT " ms)", a.rv, apr_time_as_msec(took));
    snprintf(needle, sizeof(needle), "127.0.0.1 port %d: no answer within", silent2_port);
    ok(strstr(a.err, needle) != NULL && strstr(a.err, "(2 hosts, 2000 ms)") != NULL,
       "... the error names each host (%s)", a.err);
    is_int(count_rows(p, "h-all-silent"), 0, "... and nothing is written");

    /* 6. one silent host: as before, the whole bound and the same message */
    ci = apr_psprintf(p, "host=127.0.0.1 port=%d %s", silent_port, rest);
    st = hosts_store(p, ci, 2);
    took = st ? timed_insert(p, st, &a, "h-one-silent") : 0;
    ok(st && a.rv == APR_TIMEUP && took >= apr_time_from_msec(1900)
           && took < apr_time_from_msec(2600),
       "one silent host: refused after the whole 2 s bound (rv %d, %" APR_TIME_T_FMT
       " ms)",
       a.rv, apr_time_as_msec(took));
    ok(strstr(a.err, "cannot connect to the record store: no answer within 2000 ms") != NULL,
       "... with the message of old (%s)", a.err);
    is_int(host_log_lines, 0, "... and no NOTARY03303: there was no next host");

    closer.stop = 1;
    apr_thread_join(&trv, closer_thr);
    close(closer.fd);
    close(silent_fd);
    close(silent2_fd);

    /* 7. the server's notices go to the store's log at info with their
     * number, not to stderr (libpq's default): a trigger that warns on
     * every insert stands in for "terminating connection due to immediate
     * shutdown command" */
    adm = PQconnectdb(admin);
    r = PQexec(adm, "CREATE FUNCTION notary.test_warn() RETURNS trigger LANGUAGE plpgsql "
                    "AS $$BEGIN RAISE WARNING 'notary-test warning %', NEW.exchange_id; "
                    "RETURN NEW; END$$; "
                    "CREATE TRIGGER test_warn BEFORE INSERT ON notary.records "
                    "FOR EACH ROW EXECUTE FUNCTION notary.test_warn()");
    ok(PQresultStatus(r) == PGRES_COMMAND_OK, "a trigger that warns on insert created (%s)",
       PQresultErrorMessage(r));
    PQclear(r);
    st = hosts_store(p, apr_psprintf(p, "host=%s port=%s %s", host, port, rest), 5);
    if (st) {
        timed_insert(p, st, &a, "h-notice");
    }
    ok(st && a.rv == APR_SUCCESS, "a record whose insert draws a warning commits (%s)",
       st ? a.err : "no store");
    snprintf(needle, sizeof(needle), "[%d] NOTARY03304: record store: PostgreSQL says: ",
             NOTARY_STORE_APLOG_INFO);
    ok(strstr(host_log, needle) && strstr(host_log, "WARNING:  notary-test warning ")
           && strstr(host_log, "h-notice"),
       "... and the warning is in the store's log at info with its number: %s", host_log);
    r = PQexec(adm, "DROP TRIGGER test_warn ON notary.records; DROP FUNCTION notary.test_warn()");
    ok(PQresultStatus(r) == PGRES_COMMAND_OK, "the trigger dropped (%s)",
       PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(adm);
}

int main(int argc, char **argv)
{
    apr_pool_t *p;
    const char *conninfo = getenv("NOTARY_TEST_PGCONN");
    const char *phase = argc > 1 ? argv[1] : "basic";

    setvbuf(stdout, NULL, _IOLBF, 0); /* the wrapper reads us through a pipe */
    if (!conninfo || !*conninfo) {
        /* needs a real PostgreSQL: never pass without one */
        printf("1..1\nnot ok 1 - NOTARY_TEST_PGCONN not set (run through t/01-store.t)\n");
        return 1;
    }
    apr_initialize();
    atexit(apr_terminate);
    apr_pool_create(&p, NULL);
    run_id = getenv("NOTARY_TEST_RUN");
    if (!run_id || !*run_id) {
        run_id = apr_psprintf(p, "t%ld-%" APR_TIME_T_FMT, (long)getpid(), apr_time_now());
    }
    reader_conninfo = getenv("NOTARY_TEST_PGCONN_READER");
    if (reader_conninfo && *reader_conninfo && strcmp(phase, "restart")) {
        reader = PQconnectdb(reader_conninfo);
        if (PQstatus(reader) != CONNECTION_OK) {
            diag("reader connection failed: %s", PQerrorMessage(reader));
            PQfinish(reader);
            reader = NULL;
        }
    }
    else if (!reader_conninfo || !*reader_conninfo) {
        diag("NOTARY_TEST_PGCONN_READER not set: rows are not read back");
    }

    if (!strcmp(phase, "basic")) {
        phase_basic(p, conninfo);
        phase_gather(p, conninfo);
        phase_batch(p, conninfo);
        phase_deadline(p, conninfo);
        phase_late(p, conninfo);
        phase_pool(p, conninfo);
        phase_short_file(p, conninfo);
        phase_killed_copy(p, conninfo);
    }
    else if (!strcmp(phase, "restart")) {
        phase_restart(p, conninfo);
    }
    else if (!strcmp(phase, "hosts")) {
        phase_hosts(p, conninfo);
    }
    else {
        ok(0, "unknown phase '%s' (basic|restart|hosts)", phase);
    }
    if (reader) PQfinish(reader);
    apr_pool_destroy(p);
    return tap_done();
}
