/* notary_store_int.h: what the store's layers share; not for callers
 * (they use notary_store.h).
 *
 * The store in layers, each calling only the ones below it:
 *   notary_store.c       the queue and group commit (notary_store.h's API)
 *   notary_store_conn.c  the connections: pool slots, key cache, transactions on one
 *   notary_store_copy.c  the record checked and encoded: parameters, binary COPY
 *   notary_store_io.c    libpq I/O bound by a deadline: send, wait, read
 */
#ifndef NOTARY_STORE_INT_H
#define NOTARY_STORE_INT_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_file_io.h>
#include <apr_reslist.h>
#include <apr_thread_mutex.h>

#include <libpq-fe.h>

#include "notary_leaf.h"
#include "notary_store.h"

/* built-in type OIDs (catalog/pg_type.dat), fixed since forever */
#define OID_BYTEA 17
#define OID_INT4 23
#define OID_TEXT 25
#define OID_TIMESTAMPTZ 1184

/* The row as the writer inserts it (schema version 3): keys by digest,
 * the leaf columns last (a COPY sends them after the body, whose digest
 * the leaf needs). The retry check (record_committed) takes the first
 * NPARAMS_CHECK without the body. */
#define NPARAMS 17
#define NPARAMS_CHECK 14
#define P_BODY 11
#define P_SHA 12
#define P_XID 13
#define P_SALT 14
#define P_LEAF 15
#define P_TOKEN 16
#define ROW_COLUMNS "(recorded_at, direction, merchant, sender_key_sha256, " \
                    "receiver_key_sha256, rule, method, uri, status, content_type, headers, " \
                    "body, body_sha256, exchange_id, salt, leaf_hash, token_sha256)"

/* The most records one transaction commits (group commit); a connection
 * prepares one INSERT per batch size (notary_store_conn.c). */
#ifndef STORE_BATCH_MAX
#define STORE_BATCH_MAX 32
#endif
#if STORE_BATCH_MAX > 63
#error "STORE_BATCH_MAX: one bit per prepared batch size in a 64-bit mask"
#endif

/* a COPY sends its body in pieces of this size */
#define COPY_CHUNK (64 * 1024)

/* One record's statement parameters (notary_store_build_params). */
typedef struct store_params {
    const char *values[NPARAMS];
    int lengths[NPARAMS];
    unsigned char ts[8], status[4];
    unsigned char key_md[2][32]; /* sender, receiver */
    const unsigned char *key_der[2];
    int key_len[2];
    unsigned char body_md[32]; /* when the store hashes the body */
    /* the leaf (notary_store_leaf) and the admission */
    const notary_record *rec;
    unsigned char salt[16], leaf[32];
    unsigned char entry[NOTARY_LEAF_LEN]; /* the leaf's entry, for the caller */
    unsigned char token_md[32], token_exp[8];
    const char *token_jti;
    int has_token, token_len;
    const char *token;
} store_params;

/* network byte order, as PostgreSQL's binary formats want it */
static inline void put_be32(unsigned char *b, apr_uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* How one exchange with the server ended. */
typedef enum {
    STEP_OK,
    STEP_SERVER_ERROR, /* the server answered with an error; conn usable */
    STEP_CONN_LOST,    /* the connection broke */
    STEP_TIMEOUT,      /* no answer in time; conn state unknown */
    STEP_LATE          /* rolled back for want of time (the guard, or
                            * a COPY not committed); conn usable */
} step_t;

/* ---- notary_store_conn.c ---- */

/* The child's pool of connections. */
/* One host of a conninfo that names several (host=a,b, hostaddr=...,
 * port=..., or a URI's): the values that replace the lists when it is
 * tried alone; NULL where the conninfo has no such list. */
typedef struct store_host {
    const char *host, *hostaddr, *port;
    const char *label;       /* for messages: host or hostaddr, and port */
    apr_time_t silent_until; /* did not answer lately: tried last till then */
    apr_time_t logged_at;    /* its last NOTARY03303 (rate limit) */
    int unlogged;            /* skips since then not logged */
} store_host;

typedef struct store_conns {
    apr_reslist_t *slots;
    const char *conninfo;
    apr_interval_time_t timeout; /* NotaryDatabaseTimeout */
    /* several hosts: tried one at a time, each bound to its share of the
     * deadline (store_connect, notary_store_conn.c); nhosts < 2: libpq
     * walks the conninfo as given, bound by the deadline as a whole */
    store_host *hosts;
    int nhosts;
    apr_interval_time_t host_timeout; /* connect_timeout given, else 0 */
    int prefer_standby;               /* target_session_attrs=prefer-standby */
    int load_balance;                 /* load_balance_hosts=random */
    apr_thread_mutex_t *mu;           /* the hosts' silent_until and log state */
    notary_store_log_fn *log;
    void *log_ctx;
} store_conns;

/* One pooled slot. Connected lazily after acquire, not in the reslist
 * constructor: that runs under the reslist's lock and would make every
 * thread wait for one slow connect. */
#define KNOWN_KEYS 64
typedef struct {
    unsigned char md[32];
    unsigned char *der; /* malloc'd: slots outlive any pool */
    int len;
} known_key;

typedef struct store_conn {
    PGconn *conn;
    /* keys this connection has seen committed to notary.keys: rows that
     * name them need no key INSERT (keys are never deleted). Matched by
     * digest and DER, so a digest passed with the wrong key is never
     * taken on trust. Forgotten with the connection. */
    known_key known[KNOWN_KEYS];
    int nknown, next_known;
    /* admission tokens (by SHA-256) this connection has seen committed:
     * their rows need no INSERT (admissions are never deleted) */
    unsigned char known_adm[KNOWN_KEYS][32];
    int nknown_adm, next_known_adm;
    /* bit n: "notary_rows_<n>", the n-row INSERT, is prepared here */
    apr_uint64_t rows_prepared;
    int timeout_unsure; /* statement_timeout may not be the store's */
    int in_doubt;       /* a commit was sent, its answer not read:
                                   * if the connection breaks now, the rows
                                   * may or may not be there */
} store_conn;

/* The pool: min..smax..hmax slots, idle ones closed after ttl, each
 * connected on first use (see notary_store_create). */
apr_status_t notary_store_conns_create(store_conns **pcs, apr_pool_t *p, const char *conninfo,
                                       int min, int smax, int hmax, apr_interval_time_t ttl,
                                       apr_interval_time_t timeout);
/* A pooled connection, opened if needed. */
apr_status_t notary_store_slot_get(store_conns *cs, store_conn **psc, apr_time_t deadline,
                                   apr_pool_t *errpool, const char **err);
/* Connect to conninfo as a pooled slot does (several hosts one at a
 * time, each within its share of the deadline) but outside any pool, and
 * logging nothing: for the start-up check (mod_notary_check.c), so it
 * judges the store as the children will. APR_SUCCESS and *pc; otherwise
 * *err, and *failed the last attempt libpq refused (its message, whether
 * a password was used), NULL when none was refused, only timed out. The
 * caller PQfinish'es what it gets. */
apr_status_t notary_store_connect_once(const char *conninfo, apr_interval_time_t timeout,
                                       apr_time_t deadline, PGconn **pc, PGconn **failed,
                                       apr_pool_t *p, const char **err);
/* Back to the pool, idle; or closed, when its state is not known. */
apr_status_t notary_store_slot_release(store_conns *cs, store_conn *sc);
apr_status_t notary_store_slot_invalidate(store_conns *cs, store_conn *sc);
/* One pipelined implicit transaction, one round trip: the keys this
 * connection has not registered yet, then the rows (with_rows), as one
 * statement when there are several, and the time guard. STEP_OK when all
 * of it committed; STEP_SERVER_ERROR with the first error in *res (caller
 * clears; the connection stays usable); STEP_LATE when the guard rolled it
 * back. */
step_t notary_store_pipeline(const store_conns *cs, store_conn *sc,
                             const store_params *const *sps, int n, int with_rows,
                             apr_time_t deadline, PGresult **res);
/* Is the committed row of this exchange and direction this very message
 * (our earlier attempt, whose answer was lost)? */
step_t notary_store_committed_before(store_conn *sc, const store_params *sp,
                                     apr_time_t deadline, int *same, PGresult **res);

/* ---- notary_store_copy.c ---- */

/* How the row's parameters go: their types, and binary (1) or text (0). */
extern const Oid notary_store_row_types[NPARAMS];
extern const int notary_store_row_formats[NPARAMS];
/* NULL, or why the record cannot be stored (nothing is sent then). */
const char *notary_store_record_incomplete(const notary_record *rec);
/* The statement's parameters; the record must be complete. The salt is
 * drawn here; the leaf is computed here when the body's digest is known,
 * else by the COPY once it has hashed the body (notary_store_leaf). */
apr_status_t notary_store_build_params(const notary_record *rec, store_params *sp,
                                       apr_pool_t *p, const char **err);
/* The row's leaf entry and hash from its parameters as stored (the body's
 * digest in values[P_SHA]); 0, or -1 if the entry cannot be built. */
int notary_store_leaf(store_params *sp, apr_pool_t *p);
/* The row of a record whose body is in `file` (len bytes) by COPY, its
 * keys registered already; buf holds COPY_CHUNK bytes. STEP_OK once
 * committed; *in_doubt while its COMMIT is unanswered; *why says what
 * failed on our side (STEP_SERVER_ERROR without *res). */
step_t notary_store_copy(PGconn *conn, store_params *sp, apr_file_t *file, apr_off_t len,
                         char *buf, apr_time_t deadline, int *in_doubt, PGresult **res,
                         const char **why, apr_pool_t *errpool);

/* ---- notary_store_io.c ---- */

/* libpq's message on one line, from p. */
const char *notary_store_pq_msg(apr_pool_t *p, const char *m);
/* An error result's primary message and SQLSTATE only: DETAIL would echo
 * the failing row, i.e. parts of the body and keys, into the error log. */
const char *notary_store_result_msg(apr_pool_t *p, const PGresult *res);
/* Wait until the socket is ready: 1 ready (*readable set), 0 deadline
 * passed, -1 error. */
int notary_store_wait_socket(PGconn *conn, int want_write, apr_time_t deadline,
                             int *readable);
/* Flush what libpq holds for the server. */
step_t notary_store_flush_out(PGconn *conn, apr_time_t deadline);
/* Read until libpq has a whole result to give. */
step_t notary_store_await_input(PGconn *conn, apr_time_t deadline);
/* After PQsend*: flush, then collect the result. *res gets the first
 * result (caller clears it). */
step_t notary_store_finish_command(PGconn *conn, apr_time_t deadline, PGresult **res);
/* The 90 % rule (other comments refer to it by this name). A record the
 * store refuses must be known not to be written, yet a statement we stop
 * waiting for may still commit once a lock goes. So the server gives up
 * first: at 90 % of the time a transaction's records have left (this
 * function), and a statement it cancels is rolled back, a known outcome.
 *  - statement_timeout is set so when a connection opens, and again first
 *    in a transaction whose records waited in the queue (below 95 % of
 *    their time left: rare, a batch normally starts within a millisecond);
 *    the next batch with its full time sets it back (notary_store_conn.c).
 *  - statement_timeout bounds each statement, not the transaction: one
 *    held up by several waits, each shorter (a lock on the keys, then
 *    another transaction's row of the same exchange in the unique index,
 *    say), would commit after we gave up on it. The time guard, the last
 *    statement before an INSERT's commit, fails once the transaction is
 *    older than the same 90 % (guard_sql, notary_store_conn.c).
 *  - A COPY's COMMIT is sent only with a tenth of its time to go
 *    (notary_store_copy).
 * Returns statement_timeout, and the guard's bound, in ms for a
 * transaction with `left` to go. */
long notary_store_server_ms(apr_interval_time_t left);

/* What a pipeline's result answers, in the order the queries were sent. */
typedef enum {
    PLAN_SET,       /* SET statement_timeout */
    PLAN_PREPARE,   /* PREPARE of the n-row INSERT */
    PLAN_KEY,       /* one key's INSERT */
    PLAN_ADMISSION, /* one admission token's INSERT */
    PLAN_ROWS,      /* the INSERT of the row or rows */
    PLAN_GUARD      /* the time guard, last before the commit */
} plan_query;

/* a SET, a PREPARE, two keys and an admission per row, the rows'
 * INSERT, the guard */
#define PLAN_MAX (4 + 3 * STORE_BATCH_MAX)

/* One pipelined transaction as sent (notary_store_conn.c), and what
 * reading its results found. */
typedef struct {
    plan_query query[PLAN_MAX]; /* query[i]: what the i-th result answers */
    int n;
    int prepared; /* the PREPARE succeeded (it outlives a
                                   * failed transaction) */
    int late;     /* the guard failed: rolled back */
    int synced;   /* the sync came: every result was read,
                                   * the commit's outcome is known */
} store_plan;

/* Flush a pipeline sent up to its sync, read its results as the plan
 * says (filling in prepared, late, synced) and leave pipeline mode.
 * Returns what notary_store_pipeline returns. */
step_t notary_store_read_plan(PGconn *conn, store_plan *plan, apr_time_t deadline,
                              PGresult **res);

#endif /* NOTARY_STORE_INT_H */
