/* notary_store: pool of libpq connections and the record writer.
 * See notary_store.h for the contract, sql/README.md and
 * sql/0002_writer_path.sql for the database side.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <apr_reslist.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <apr_thread_proc.h>

#include <libpq-fe.h>

#include "notary_store_int.h"

#if !APR_HAS_THREADS
#error "notary_store needs APR with threads (apr_reslist)"
#endif

#define STMT_ROW   "notary_row"
#define STMT_KEY   "notary_key"
#define STMT_CHECK "notary_committed"
#define STMT_GUARD "notary_guard"

static const char row_sql[] =
    "INSERT INTO notary.records " ROW_COLUMNS " VALUES ($1, $2, $3, $4, $5, "
    "$6, $7, $8, $9, $10, $11, $12, $13, $14)";
/* The last statement before a transaction's commit: it fails, and so the
 * transaction rolls back, once the transaction is older than $1 ms (90 %
 * of the time its records had left). statement_timeout bounds each
 * statement on its own; a transaction held up by several waits, each
 * shorter (a lock on the keys, then another transaction's row of the same
 * exchange in the unique index, say), would otherwise commit after we
 * gave up on it and its messages were refused. A cast of a text that is
 * not a number is PostgreSQL's built-in way to raise an error that names
 * its reason; the text holds clock_timestamp(), so the planner cannot fold
 * it into an error at PREPARE. */
static const char guard_sql[] =
    "SELECT CASE WHEN clock_timestamp() > transaction_timestamp() + $1 * interval "
    "'1 millisecond' THEN ('mod_notary: transaction past its bound of ' || $1 || "
    "' ms at ' || clock_timestamp() || ', rolled back')::int END";
static const char key_sql[] =
    "INSERT INTO notary.keys (sha256, der) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/* the row's fields without the body, in the same order */
static const char check_sql[] =
    "SELECT notary.record_committed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
    "$11, $12, $13)";

static const Oid guard_types[1] = { OID_INT4 };
static const int guard_formats[1] = { 1 };
static const Oid check_types[NPARAMS - 1] = {
    OID_TIMESTAMPTZ, OID_TEXT, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT, OID_TEXT,
    OID_TEXT, OID_INT4, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT
};
static const int check_formats[NPARAMS - 1] = {
    1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0
};
static const Oid key_types[2] = { OID_BYTEA, OID_BYTEA };
static const int key_formats[2] = { 1, 1 };

/* Group commit: concurrent inserts queue up; one thread (the leader)
 * takes what is queued (up to STORE_BATCH_MAX) and commits it in one
 * pipelined implicit transaction, one INSERT for all its rows. Up to
 * max_leaders write at once when the queue grows long or heavy. Before
 * taking the queue, a leader waits briefly for records announced as
 * underway (notary_store_expect). Every caller still returns only once
 * its own row is committed. */
#ifndef STORE_BATCH_MAX
#define STORE_BATCH_MAX 32
#endif
#if STORE_BATCH_MAX > 63
#error "STORE_BATCH_MAX: one bit per prepared batch size in a 64-bit mask"
#endif
#ifndef STORE_MAX_LEADERS
#define STORE_MAX_LEADERS 4
#endif
/* A second (third...) leader only when the queue is long or heavy: one
 * writer per child batches best, several use PostgreSQL's cores for big
 * rows */
#ifndef STORE_SPLIT_BYTES
#define STORE_SPLIT_BYTES (256 * 1024)
#endif
/* apr_reslist has no per-call timeout, and restarts its wait after every
 * wake-up that loses the race for a freed connection: wait in slices this
 * long, so no caller waits past its own record's deadline by more */
#ifndef STORE_ACQUIRE_SLICE
#define STORE_ACQUIRE_SLICE apr_time_from_msec(50)
#endif
/* the longest a leader waits for records announced as underway (usec) */
#ifndef STORE_GATHER_WAIT
#define STORE_GATHER_WAIT 1000
#endif

typedef struct store_item {
    store_params sp;
    const notary_record *rec;
    char errbuf[512];            /* the leader's message for this record */
    apr_thread_cond_t *cv;       /* its thread's own (waiter_cv): woken only
                                  * when its row is done or it may lead */
    apr_status_t rv;
    int taken, done;
    apr_time_t deadline;         /* entry + timeout: bounds all of its wait */
    struct store_item *next;
} store_item;

struct notary_store {
    apr_reslist_t *conns;
    const char *conninfo;
    apr_interval_time_t timeout;
    apr_thread_mutex_t *mu;
    store_item *head, *tail;
    int queued;
    apr_size_t queued_bytes;
    int leaders, max_leaders;
    /* gathering: announced records not yet here, how many have settled
     * (arrived or withdrawn), and the leader waiting for them */
    int expecting;
    apr_uint64_t settled;
    store_item *gatherer;
    apr_interval_time_t gather_wait;
    apr_threadkey_t *waiter_key;  /* each thread's condition variable, */
    apr_pool_t *waiter_pool;      /* ... allocated here under mu */
};

/* One pooled slot. Connected lazily after acquire, not in the reslist
 * constructor: that runs under the reslist's lock and would make every
 * thread wait for one slow connect. */
#define KNOWN_KEYS 64
typedef struct {
    unsigned char md[32];
    unsigned char *der;          /* malloc'd: slots outlive any pool */
    int len;
} known_key;

typedef struct {
    PGconn *conn;
    /* keys this connection has seen committed to notary.keys: rows that
     * name them need no key INSERT (keys are never deleted). Matched by
     * digest and DER, so a digest passed with the wrong key is never
     * taken on trust. Forgotten with the connection. */
    known_key known[KNOWN_KEYS];
    int nknown, next_known;
    /* bit n: "notary_rows_<n>", the n-row INSERT, is prepared here */
    apr_uint64_t rows_prepared;
    int timeout_unsure;           /* statement_timeout may not be st's */
    int in_doubt;                 /* a commit was sent, its answer not read:
                                   * if the connection breaks now, the rows
                                   * may or may not be there */
} store_conn;

static void keys_forget(store_conn *sc)
{
    int i;

    sc->rows_prepared = 0;   /* statements go with the connection too */
    for (i = 0; i < sc->nknown; i++) {
        free(sc->known[i].der);
        sc->known[i].der = NULL;
    }
    sc->nknown = sc->next_known = 0;
}

static apr_status_t slot_construct(void **res, void *params, apr_pool_t *p)
{
    /* calloc, not the pool: slots come and go (ttl, invalidation) for the
     * life of the child, a pool would only grow */
    store_conn *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        return APR_ENOMEM;
    }
    *res = sc;
    return APR_SUCCESS;
}

static apr_status_t slot_destruct(void *res, void *params, apr_pool_t *p)
{
    store_conn *sc = res;
    if (sc->conn) {
        PQfinish(sc->conn);
    }
    keys_forget(sc);
    free(sc);
    return APR_SUCCESS;
}

/* Each thread waits on a condition variable of its own, not one per
 * record: so a leader may wake its waiters after letting go of st->mu (a
 * waiter woken under the mutex only blocks again on it: two more context
 * switches per record) without a waiter that has already returned taking
 * its variable with it. The variables stay for the store's life -- one per
 * thread that ever recorded, and httpd's threads live as long as their
 * child -- so a late wake-up finds one still there; it reaches a later
 * wait of that thread, and every wait re-checks its condition. */
static apr_thread_cond_t *waiter_cv(notary_store *st)
{
    void *cv = NULL;
    apr_status_t rv;

    if (apr_threadkey_private_get(&cv, st->waiter_key) == APR_SUCCESS && cv) {
        return cv;
    }
    apr_thread_mutex_lock(st->mu);
    rv = apr_thread_cond_create((apr_thread_cond_t **)&cv, st->waiter_pool);
    apr_thread_mutex_unlock(st->mu);
    if (rv != APR_SUCCESS || apr_threadkey_private_set(cv, st->waiter_key) != APR_SUCCESS) {
        return NULL;
    }
    return cv;
}

static apr_status_t waiter_key_delete(void *key)
{
    return apr_threadkey_private_delete(key);
}

apr_status_t notary_store_create(notary_store **pst, apr_pool_t *p, const char *conninfo,
                                 int min, int smax, int hmax, apr_interval_time_t ttl,
                                 apr_interval_time_t timeout)
{
    notary_store *st;
    apr_status_t rv;

    *pst = NULL;
    if (!conninfo || hmax < 1 || min < 0 || min > smax || smax > hmax || timeout <= 0) {
        return APR_EINVAL;
    }
    st = apr_pcalloc(p, sizeof(*st));
    st->conninfo = apr_pstrdup(p, conninfo);
    st->timeout = timeout;

    /* the reslist registers its own cleanup on p: idle slots are closed */
    rv = apr_reslist_create(&st->conns, min, smax, hmax, ttl,
                            slot_construct, slot_destruct, st, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_reslist_timeout_set(st->conns, timeout < STORE_ACQUIRE_SLICE ? timeout
                                                                     : STORE_ACQUIRE_SLICE);
    if ((rv = apr_thread_mutex_create(&st->mu, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_threadkey_private_create(&st->waiter_key, NULL, p)) != APR_SUCCESS
        || (rv = apr_pool_create(&st->waiter_pool, p)) != APR_SUCCESS) {
        return rv;
    }
    /* a process may create stores again and again (the tests do): give
     * each one's key back with it, there are only so many */
    apr_pool_cleanup_register(p, st->waiter_key, waiter_key_delete, apr_pool_cleanup_null);
    st->max_leaders = hmax < STORE_MAX_LEADERS ? hmax : STORE_MAX_LEADERS;
    st->gather_wait = timeout / 4 < STORE_GATHER_WAIT ? timeout / 4 : STORE_GATHER_WAIT;
    *pst = st;
    return APR_SUCCESS;
}

/* An idle pooled connection should have nothing to say. If its socket is
 * readable, the server went away (restart, termination) or sent something
 * unexpected: either way, replace it before sending anything. */
static int slot_usable(store_conn *sc)
{
    struct pollfd pfd;

    if (!sc->conn || PQstatus(sc->conn) != CONNECTION_OK
        || PQtransactionStatus(sc->conn) != PQTRANS_IDLE) {
        return 0;
    }
    pfd.fd = PQsocket(sc->conn);
    if (pfd.fd < 0) {
        return 0;
    }
    pfd.events = POLLIN;
    pfd.revents = 0;
    return poll(&pfd, 1, 0) == 0;
}

/* Run one set-up command on a new connection; 0 or an APR error. */
static apr_status_t setup_step(const notary_store *st, store_conn *sc, int ok,
                               apr_time_t deadline, const char *what,
                               apr_pool_t *errpool, const char **err)
{
    PGresult *res = NULL;
    const char *state;
    step_t step;

    if (!ok) {
        *err = apr_psprintf(errpool, "record store: %s failed: %s", what,
                            notary_store_pq_msg(errpool, PQerrorMessage(sc->conn)));
        return APR_ECONNREFUSED;
    }
    step = notary_store_finish_command(sc->conn, deadline, &res);
    if (step != STEP_OK) {
        /* class 42: no such table or function, or no privilege on it */
        state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        *err = apr_psprintf(errpool, "record store: %s failed%s: %s", what,
                            step == STEP_SERVER_ERROR && state && !strncmp(state, "42", 2)
                                ? " (is sql/ applied to this database, version 2 or later?)" : "",
                            step == STEP_SERVER_ERROR ? notary_store_result_msg(errpool, res)
                            : step == STEP_TIMEOUT
                                ? apr_psprintf(errpool, "no answer within %" APR_TIME_T_FMT
                                               " ms", apr_time_as_msec(st->timeout))
                            : notary_store_pq_msg(errpool, PQerrorMessage(sc->conn)));
    }
    if (res) {
        PQclear(res);
    }
    return step == STEP_OK ? APR_SUCCESS
         : step == STEP_TIMEOUT ? APR_TIMEUP
         : step == STEP_SERVER_ERROR ? APR_EGENERAL : APR_ECONNREFUSED;
}

/* Connect within the deadline: PQconnectPoll, not PQconnectdbParams,
 * whose connect_timeout counts whole seconds (at least 2) per host and
 * would let one insert wait about twice NotaryDatabaseTimeout. */
static apr_status_t slot_connect(notary_store *st, PGconn *c, apr_time_t deadline,
                                 apr_pool_t *errpool, const char **err)
{
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    int w, readable;

    if (PQstatus(c) == CONNECTION_BAD) {
        ps = PGRES_POLLING_FAILED;
    }
    while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        w = notary_store_wait_socket(c, ps == PGRES_POLLING_WRITING, deadline, &readable);
        if (w == 0) {
            *err = apr_psprintf(errpool, "cannot connect to the record store: no answer "
                                "within %" APR_TIME_T_FMT " ms",
                                apr_time_as_msec(st->timeout));
            return APR_TIMEUP;
        }
        if (w < 0) {
            break;
        }
        ps = PQconnectPoll(c);
    }
    if (ps != PGRES_POLLING_OK || PQstatus(c) != CONNECTION_OK) {
        *err = apr_psprintf(errpool, "cannot connect to the record store: %s",
                            notary_store_pq_msg(errpool, PQerrorMessage(c)));
        return APR_ECONNREFUSED;
    }
    return APR_SUCCESS;
}

static apr_status_t slot_open(notary_store *st, store_conn *sc, apr_time_t deadline,
                              apr_pool_t *errpool, const char **err)
{
    /* before dbname: the operator's conninfo may override them */
    const char *const kw[] = { "fallback_application_name", "client_encoding",
                               "dbname", NULL };
    const char *const val[] = { "mod_notary", "UTF8", st->conninfo, NULL };
    char sql[64];
    PGconn *c;
    apr_status_t rv;

    keys_forget(sc);
    sc->conn = c = PQconnectStartParams(kw, val, 1);
    if (!c) {
        *err = "cannot connect to the record store: out of memory";
        return APR_ENOMEM;
    }
    if ((rv = slot_connect(st, c, deadline, errpool, err)) != APR_SUCCESS) {
        goto fail;
    }
    if (PQsetnonblocking(c, 1) != 0) {
        *err = apr_psprintf(errpool, "cannot set the record store connection non-blocking: %s",
                            notary_store_pq_msg(errpool, PQerrorMessage(c)));
        rv = APR_ECONNREFUSED;
        goto fail;
    }
    /* statement_timeout first: preparing an INSERT waits for a lock on its
     * table, and this connection is dropped when the deadline passes.
     * The first transaction sets it for good (send_pipeline). */
    apr_snprintf(sql, sizeof(sql), "SET statement_timeout = %ld",
                 notary_store_server_ms(deadline - apr_time_now()));
    sc->timeout_unsure = 1;
    sc->in_doubt = 0;
    if ((rv = setup_step(st, sc, PQsendQuery(c, sql), deadline,
                         "setting statement_timeout", errpool, err)) != APR_SUCCESS
        || (rv = setup_step(st, sc, PQsendPrepare(c, STMT_ROW, row_sql, NPARAMS,
                                                  notary_store_row_types),
                            deadline, "preparing the record INSERT", errpool, err))
           != APR_SUCCESS
        || (rv = setup_step(st, sc, PQsendPrepare(c, STMT_KEY, key_sql, 2, key_types),
                            deadline, "preparing the key INSERT", errpool, err))
           != APR_SUCCESS
        || (rv = setup_step(st, sc, PQsendPrepare(c, STMT_CHECK, check_sql, NPARAMS - 1,
                                              check_types),
                            deadline, "preparing the retry check", errpool, err))
           != APR_SUCCESS
        || (rv = setup_step(st, sc, PQsendPrepare(c, STMT_GUARD, guard_sql, 1, guard_types),
                            deadline, "preparing the time guard", errpool, err))
           != APR_SUCCESS) {
        goto fail;
    }
    return APR_SUCCESS;

fail:
    PQfinish(c);
    sc->conn = NULL;
    return rv;
}

static int key_known(const store_conn *sc, const unsigned char md[32],
                     const unsigned char *der, int len)
{
    int i;

    for (i = 0; i < sc->nknown; i++) {
        const known_key *k = &sc->known[i];
        if (k->len == len && !memcmp(k->md, md, 32) && !memcmp(k->der, der, len)) {
            return 1;
        }
    }
    return 0;
}

static void key_learn(store_conn *sc, const unsigned char md[32],
                      const unsigned char *der, int len)
{
    known_key *k;
    unsigned char *copy;

    if (key_known(sc, md, der, len) || !(copy = malloc(len))) {
        return;
    }
    memcpy(copy, der, len);
    k = &sc->known[sc->next_known];
    free(k->der);
    memcpy(k->md, md, 32);
    k->der = copy;
    k->len = len;
    sc->next_known = (sc->next_known + 1) % KNOWN_KEYS;
    if (sc->nknown < KNOWN_KEYS) {
        sc->nknown++;
    }
}

/* A pooled connection, opened if needed. */
static apr_status_t slot_get(notary_store *st, store_conn **psc, apr_time_t deadline,
                             apr_pool_t *errpool, const char **err)
{
    void *res_slot;
    store_conn *sc;
    apr_status_t rv;

    do {
        rv = apr_reslist_acquire(st->conns, &res_slot);
        if (rv == APR_SUCCESS && apr_time_now() >= deadline) {
            apr_reslist_release(st->conns, res_slot);
            rv = APR_TIMEUP;
        }
    } while (APR_STATUS_IS_TIMEUP(rv) && apr_time_now() < deadline);
    if (rv != APR_SUCCESS) {
        *err = apr_psprintf(errpool, "record store: no connection free within "
                            "NotaryDatabaseTimeout (%" APR_TIME_T_FMT " ms); not sent",
                            apr_time_as_msec(st->timeout));
        return rv;
    }
    sc = res_slot;
    if (sc->conn && !slot_usable(sc)) {
        PQfinish(sc->conn);
        sc->conn = NULL;
    }
    if (!sc->conn && (rv = slot_open(st, sc, deadline, errpool, err)) != APR_SUCCESS) {
        apr_reslist_invalidate(st->conns, sc);
        return rv;
    }
    *psc = sc;
    return APR_SUCCESS;
}

/* A key a transaction registers: digest, DER. */
typedef struct {
    const unsigned char *md, *der;
    int len;
} fresh_key;

static int fresh_key_eq(const fresh_key *a, const fresh_key *b)
{
    return a->len == b->len && !memcmp(a->md, b->md, 32) && !memcmp(a->der, b->der, a->len);
}

static int fresh_key_cmp(const void *a, const void *b)
{
    return memcmp(((const fresh_key *)a)->md, ((const fresh_key *)b)->md, 32);
}

/* The n-row INSERT (n >= 2): one statement per batch, so PostgreSQL sets
 * up one executor and reads the table's CHECK expressions once, not per
 * row (about half its CPU per row at 1 KiB). Named "notary_rows_<n>". */
#define ROWS_SQL_MAX (sizeof(row_sql) + 8 + STORE_BATCH_MAX * NPARAMS * 7)
static void rows_sql(char *buf, apr_size_t size, int n)
{
    apr_size_t off;
    int i, k;

    off = apr_snprintf(buf, size, "INSERT INTO notary.records " ROW_COLUMNS " VALUES ");
    for (i = 0; i < n && off < size; i++) {
        for (k = 0; k < NPARAMS && off < size; k++) {
            off += apr_snprintf(buf + off, size - off, "%s$%d%s",
                                k ? ", " : (i ? ", (" : "("), i * NPARAMS + k + 1,
                                k == NPARAMS - 1 ? ")" : "");
        }
    }
}

/* One pipelined implicit transaction, one round trip: the keys this
 * connection has not registered yet, then the rows (with_rows), as one
 * statement when there are several, and the time guard. STEP_OK when all
 * of it committed; STEP_SERVER_ERROR with the first error in *res (caller
 * clears; the connection stays usable); STEP_LATE when the guard rolled it
 * back. */
static step_t send_pipeline(const notary_store *st, store_conn *sc, store_item **items,
                            int n, int with_rows, apr_time_t deadline, PGresult **res)
{
    PGconn *conn = sc->conn;
    fresh_key fresh[2 * STORE_BATCH_MAX];
    int nfresh = 0, i, j, k, synced = 0, multi = with_rows && n > 1;
    int nresults = 0, prepare_at = -1, guard_at = -1, late = 0, restoring = 0, nsent = 0;
    unsigned char bound[4];
    long ms = 0, bound_ms;
    const char *state;
    char name[32];
    step_t step;

    *res = NULL;
    if (PQenterPipelineMode(conn) != 1) {
        return STEP_CONN_LOST;
    }
    /* The server must give up before we do, so that a record the notary
     * refuses is known not to be written (a statement we stop waiting for
     * may still commit once a lock goes): statement_timeout is 90 % of the
     * timeout, set by a connection's first transaction. Time spent queued
     * shortens what is left: it then goes below that for this
     * transaction's statements, and back to the full value with the next
     * batch that has its full time. Rare: a batch normally starts within a
     * millisecond. First in the pipeline: every later message, a Parse
     * included, may wait for a lock. statement_timeout bounds each
     * statement; the guard (guard_sql), last, the whole transaction. */
    {
        apr_interval_time_t left = deadline - apr_time_now();
        bound_ms = notary_store_server_ms(left);
        if (left < st->timeout - st->timeout / 20) {
            ms = bound_ms;
        }
        else if (sc->timeout_unsure) {
            ms = notary_store_server_ms(st->timeout);
            restoring = 1;
        }
        if (ms) {
            char sql[64];
            apr_snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", ms);
            if (!PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0)) {
                return STEP_CONN_LOST;
            }
            nsent++;
            /* a failed transaction rolls the SET back: either value may
             * hold then, so the next batch sets it again */
            sc->timeout_unsure = 1;
        }
    }
    put_be32(bound, (apr_uint32_t)bound_ms);
    if (multi) {
        apr_snprintf(name, sizeof(name), "notary_rows_%d", n);
        if (!(sc->rows_prepared & (APR_UINT64_C(1) << n))) {
            char sql[ROWS_SQL_MAX];
            Oid types[STORE_BATCH_MAX * NPARAMS];
            for (i = 0; i < n * NPARAMS; i++) {
                types[i] = notary_store_row_types[i % NPARAMS];
            }
            rows_sql(sql, sizeof(sql), n);
            if (!PQsendPrepare(conn, name, sql, n * NPARAMS, types)) {
                return STEP_CONN_LOST;
            }
            prepare_at = nsent++;
        }
    }
    /* the keys not registered on this connection yet, each once, sent in
     * digest order: concurrent transactions inserting the same new keys
     * then wait for each other in one order, never in a cycle (deadlock) */
    for (i = 0; i < n; i++) {
        const store_params *sp = &items[i]->sp;
        for (k = 0; k < 2; k++) {
            fresh_key fk;
            fk.md = sp->key_md[k];
            fk.der = sp->key_der[k];
            fk.len = sp->key_len[k];
            if (key_known(sc, fk.md, fk.der, fk.len)) {
                continue;
            }
            for (j = 0; j < nfresh && !fresh_key_eq(&fresh[j], &fk); j++) {
            }
            if (j == nfresh) {
                fresh[nfresh++] = fk;
            }
        }
    }
    qsort(fresh, nfresh, sizeof(fresh[0]), fresh_key_cmp);
    for (j = 0; j < nfresh; j++) {
        const char *kv[2] = { (const char *)fresh[j].md, (const char *)fresh[j].der };
        int kl[2] = { 32, fresh[j].len };
        if (!PQsendQueryPrepared(conn, STMT_KEY, 2, kv, kl, key_formats, 0)) {
            return STEP_CONN_LOST;
        }
        nsent++;
    }
    if (with_rows && !multi) {
        const store_params *sp = &items[0]->sp;   /* n == 1 */
        if (!PQsendQueryPrepared(conn, STMT_ROW, NPARAMS, sp->values, sp->lengths,
                                 notary_store_row_formats, 0)) {
            return STEP_CONN_LOST;
        }
        nsent++;
    }
    if (multi) {
        const char *v[STORE_BATCH_MAX * NPARAMS];
        int l[STORE_BATCH_MAX * NPARAMS], f[STORE_BATCH_MAX * NPARAMS];
        for (i = 0; i < n; i++) {
            memcpy(v + i * NPARAMS, items[i]->sp.values, sizeof(items[i]->sp.values));
            memcpy(l + i * NPARAMS, items[i]->sp.lengths, sizeof(items[i]->sp.lengths));
            memcpy(f + i * NPARAMS, notary_store_row_formats, sizeof(notary_store_row_formats));
        }
        if (!PQsendQueryPrepared(conn, name, n * NPARAMS, v, l, f, 0)) {
            return STEP_CONN_LOST;
        }
        nsent++;
    }
    if (with_rows) {
        const char *gv[1] = { (const char *)bound };
        int gl[1] = { 4 };
        if (!PQsendQueryPrepared(conn, STMT_GUARD, 1, gv, gl, guard_formats, 0)) {
            return STEP_CONN_LOST;
        }
        guard_at = nsent++;
    }
    if (PQpipelineSync(conn) != 1) {
        return STEP_CONN_LOST;
    }
    sc->in_doubt = with_rows;
    if ((step = notary_store_flush_out(conn, deadline)) != STEP_OK) {
        return step;
    }
    /* each statement's result then NULL; after an error the rest come as
     * PIPELINE_ABORTED; the sync last */
    while (!synced) {
        PGresult *r;
        if ((step = notary_store_await_input(conn, deadline)) != STEP_OK) {
            return step;
        }
        r = PQgetResult(conn);
        if (!r) {
            if (PQstatus(conn) == CONNECTION_BAD) {
                return STEP_CONN_LOST;
            }
            continue;
        }
        if (nresults == prepare_at && PQresultStatus(r) == PGRES_COMMAND_OK) {
            /* a named statement outlives a failed transaction */
            sc->rows_prepared |= APR_UINT64_C(1) << n;
        }
        if (nresults == guard_at && PQresultStatus(r) == PGRES_FATAL_ERROR && !*res
            && (state = PQresultErrorField(r, PG_DIAG_SQLSTATE)) && !strcmp(state, "22P02")) {
            /* everything else went in: the guard's cast failed */
            late = 1;
            PQclear(r);
            nresults++;
            continue;
        }
        if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            nresults++;
        }
        switch (PQresultStatus(r)) {
        case PGRES_PIPELINE_SYNC:
            synced = 1;
            PQclear(r);
            break;
        case PGRES_FATAL_ERROR:
            if (!*res) {
                *res = r;
                break;
            }
            /* fall through */
        default:
            PQclear(r);
            break;
        }
    }
    sc->in_doubt = 0;
    if (PQexitPipelineMode(conn) != 1 || PQstatus(conn) == CONNECTION_BAD) {
        return STEP_CONN_LOST;
    }
    if (*res) {
        return STEP_SERVER_ERROR;
    }
    if (late) {
        /* rolled back, the SET and the keys with it */
        return STEP_LATE;
    }
    if (restoring) {
        sc->timeout_unsure = 0;
    }
    for (j = 0; j < nfresh; j++) {
        key_learn(sc, fresh[j].md, fresh[j].der, fresh[j].len);
    }
    return STEP_OK;
}

/* The server gave up waiting: statement_timeout (57014) or a lock it
 * could not get (55P03). */
static int server_timeout(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    return state && (!strcmp(state, "57014") || !strcmp(state, "55P03"));
}

/* The unique (exchange_id, direction) refused the row. */
static int duplicate_exchange(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

    return state && !strcmp(state, "23505") && cons
           && !strcmp(cons, "records_exchange_direction");
}

/* Is the committed row of this exchange and direction this very message
 * (our earlier attempt, whose answer was lost)? */
static step_t committed_before(store_conn *sc, const store_params *sp, apr_time_t deadline,
                               int *same, PGresult **res)
{
    const char *v[NPARAMS - 1];
    int l[NPARAMS - 1], i, j;
    step_t step;

    for (i = 0, j = 0; i < NPARAMS; i++) {
        if (i != P_BODY) {
            v[j] = sp->values[i];
            l[j++] = sp->lengths[i];
        }
    }
    *same = 0;
    if (!PQsendQueryPrepared(sc->conn, STMT_CHECK, NPARAMS - 1, v, l, check_formats, 0)) {
        return STEP_CONN_LOST;
    }
    step = notary_store_finish_command(sc->conn, deadline, res);
    if (step == STEP_OK) {
        *same = PQntuples(*res) == 1 && !strcmp(PQgetvalue(*res, 0, 0), "t");
    }
    return step;
}

/* A record whose body is in a file: its keys, then COPY of one row in a
 * transaction of its own (notary_store_copy). */
static step_t send_copy(const notary_store *st, store_conn *sc, store_item *it, char *buf,
                        apr_time_t deadline, PGresult **res, const char **why,
                        apr_pool_t *errpool)
{
    step_t step;

    *why = NULL;
    /* keys this connection has not registered yet go first, committed on
     * their own (harmless: keys are never deleted), and statement_timeout
     * is fitted to the time left (see send_pipeline); one round trip, next
     * to a body of more than 256 KiB */
    if ((step = send_pipeline(st, sc, &it, 1, 0, deadline, res)) != STEP_OK) {
        return step;
    }
    return notary_store_copy(sc->conn, &it->sp, it->rec->body_file,
                             (apr_off_t)it->rec->body_len, buf, deadline, &sc->in_doubt, res,
                             why, errpool);
}

/* Rolled back for want of time (STEP_LATE), n rows. */
static const char *late_msg(apr_pool_t *p, int n, const char *prior)
{
    return apr_psprintf(p, "record store: the transaction of %s was held up (a lock, a slow "
                        "server) past 90 %% of the time it had and was rolled back; %s",
                        n > 1 ? apr_psprintf(p, "%d records", n) : "the record",
                        prior ? "not written by this attempt" : "known not written");
}

/* A failure after an attempt whose outcome is unknown (its connection
 * broke once the commit may have been sent): say so, the row may exist. */
static const char *and_prior(apr_pool_t *p, const char *msg, const char *prior)
{
    return prior ? apr_psprintf(p, "%s; an earlier attempt may have committed it (%s): "
                                "outcome unknown", msg, prior)
                 : msg;
}

/* One record on its own: a one-row pipeline, or COPY for a file body.
 * Retried once on a lost connection; a retry that finds its own row
 * already committed succeeds (see notary_store.h). */
static apr_status_t insert_one(notary_store *st, store_item *it, apr_pool_t *errpool,
                               const char **err, const char *prior)
{
    const notary_record *rec = it->rec;
    const char *why, *first_err = NULL;
    char *buf = rec->body_file ? apr_palloc(errpool, COPY_CHUNK) : NULL;
    apr_time_t deadline = it->deadline;
    int attempt;

    if (apr_time_now() >= deadline) {
        /* its time went on the batch it was part of */
        *err = apr_psprintf(errpool, "record store: no commit within %" APR_TIME_T_FMT
                            " ms; not sent again", apr_time_as_msec(st->timeout));
        *err = and_prior(errpool, *err, prior);
        return APR_TIMEUP;
    }

    for (attempt = 0; attempt < 2; attempt++) {
        store_conn *sc;
        PGresult *res = NULL;
        apr_status_t rv;
        step_t step;
        int doubt;

        why = NULL;
        if ((rv = slot_get(st, &sc, deadline, errpool, err)) != APR_SUCCESS) {
            *err = and_prior(errpool, *err, prior);
            return rv;
        }
        step = rec->body_file ? send_copy(st, sc, it, buf, deadline, &res, &why, errpool)
                              : send_pipeline(st, sc, &it, 1, 1, deadline, &res);
        if (step == STEP_SERVER_ERROR && res && duplicate_exchange(res)) {
            int same;
            PQclear(res);
            res = NULL;
            step = committed_before(sc, &it->sp, deadline, &same, &res);
            if (step == STEP_OK) {
                PQclear(res);
                apr_reslist_release(st->conns, sc);
                if (same) {
                    return APR_SUCCESS;
                }
                *err = apr_psprintf(errpool, "record store refused the record: exchange %s "
                                    "already has a different %s record (SQLSTATE 23505)",
                                    rec->exchange_id, rec->direction);
                return APR_EGENERAL;
            }
        }

        switch (step) {
        case STEP_OK:
            if (res) {
                PQclear(res);
            }
            apr_reslist_release(st->conns, sc);
            return APR_SUCCESS;
        case STEP_SERVER_ERROR:
            /* idle again (a COPY's transaction was rolled back) */
            *err = why ? apr_psprintf(errpool, "record store: %s", why)
                       : apr_psprintf(errpool, "record store refused the record: %s",
                                      res ? notary_store_result_msg(errpool, res)
                                          : "unknown error");
            apr_reslist_release(st->conns, sc);
            if (res) {
                PQclear(res);
            }
            *err = and_prior(errpool, *err, prior);
            return APR_EGENERAL;
        case STEP_LATE:
            *err = and_prior(errpool, late_msg(errpool, 1, prior), prior);
            apr_reslist_release(st->conns, sc);
            return APR_TIMEUP;
        case STEP_TIMEOUT:
            /* the server may still commit it (its answer late, the guard
             * passed); no retry that could race it */
            *err = apr_psprintf(errpool, "record store: no answer within %" APR_TIME_T_FMT
                                " ms (%" APR_SIZE_T_FMT "-byte body); the connection was "
                                "dropped (written only if its commit was under way and "
                                "its answer late)",
                                apr_time_as_msec(st->timeout), rec->body_len);
            *err = and_prior(errpool, *err, prior);
            if (res) {
                PQclear(res);
            }
            apr_reslist_invalidate(st->conns, sc);
            return APR_TIMEUP;
        case STEP_CONN_LOST:
        default:
            why = apr_psprintf(errpool, "connection lost: %s",
                               res ? notary_store_result_msg(errpool, res)
                                   : notary_store_pq_msg(errpool, PQerrorMessage(sc->conn)));
            if (res) {
                PQclear(res);
            }
            doubt = sc->in_doubt;
            apr_reslist_invalidate(st->conns, sc);
            if (first_err || apr_time_now() >= deadline) {
                *err = apr_psprintf(errpool, "record store: %s%s%s", why,
                                    first_err ? "; first attempt: " : "",
                                    first_err ? first_err : "");
                *err = and_prior(errpool, *err, prior);
                return APR_ECONNABORTED;
            }
            first_err = why;   /* retry once, see notary_store.h */
            if (!prior && doubt) {
                prior = why;
            }
            break;
        }
    }
    /* not reached: the second attempt returns from the switch */
    *err = "record store: insert failed";
    return APR_ECONNABORTED;
}

/* Several records, one transaction: APR_SUCCESS only if every row
 * committed. *one_by_one says whether the caller should now try them
 * singly: yes after a refused row (the others are fine) or a broken
 * connection (each retry is safe, see notary_store.h); no when no
 * connection could be had or the database did not answer in time --
 * then every record shares that outcome (*err) instead of each waiting
 * the timeout again. */
static apr_status_t insert_batch(notary_store *st, store_item **items, int n,
                                 apr_pool_t *tmp, const char **err, int *one_by_one)
{
    apr_time_t deadline = items[0]->deadline;
    PGresult *res = NULL;
    store_conn *sc;
    apr_status_t rv;
    step_t step;
    int i, doubt;

    for (i = 1; i < n; i++) {
        if (items[i]->deadline < deadline) {
            deadline = items[i]->deadline;
        }
    }
    *one_by_one = 0;
    if ((rv = slot_get(st, &sc, deadline, tmp, err)) != APR_SUCCESS) {
        return rv;
    }
    step = send_pipeline(st, sc, items, n, 1, deadline, &res);
    if (step == STEP_SERVER_ERROR && res && server_timeout(res)) {
        /* the server's statement_timeout: one by one, each would wait it again */
        *err = apr_psprintf(tmp, "record store refused a transaction of %d records: %s",
                            n, notary_store_result_msg(tmp, res));
        PQclear(res);
        apr_reslist_release(st->conns, sc);
        return APR_TIMEUP;
    }
    if (res) {
        PQclear(res);
    }
    doubt = sc->in_doubt;
    if (step == STEP_OK || step == STEP_SERVER_ERROR || step == STEP_LATE) {
        apr_reslist_release(st->conns, sc);
    }
    else {
        /* state unknown: this connection goes */
        apr_reslist_invalidate(st->conns, sc);
    }
    if (step == STEP_LATE) {
        /* one by one would be later still */
        *err = late_msg(tmp, n, NULL);
        return APR_TIMEUP;
    }
    if (step == STEP_TIMEOUT) {
        *err = apr_psprintf(tmp, "record store: no answer within %" APR_TIME_T_FMT
                            " ms (a transaction of %d records); the connection was "
                            "dropped (written only if its commit was under way and "
                            "its answer late)",
                            apr_time_as_msec(st->timeout), n);
        return APR_TIMEUP;
    }
    if (step == STEP_CONN_LOST && doubt) {
        /* retried one by one; this transaction may have committed */
        *err = apr_psprintf(tmp, "a transaction of %d records lost its connection after "
                            "its commit was sent", n);
    }
    *one_by_one = step != STEP_OK;
    return step == STEP_OK ? APR_SUCCESS : APR_EGENERAL;
}

/* The leader writes a batch. Its messages go into each item's own buffer:
 * the waiters' pools are theirs (a pool is not thread-safe). */
static void write_items(notary_store *st, store_item **batch, int n)
{
    apr_pool_t *tmp;
    const char *err = NULL;
    apr_status_t rv = APR_EGENERAL;
    const char *prior = NULL;
    int i, one_by_one = 1;

    if (apr_pool_create(&tmp, NULL) != APR_SUCCESS) {
        for (i = 0; i < n; i++) {
            batch[i]->rv = APR_ENOMEM;
            apr_cpystrn(batch[i]->errbuf, "record store: out of memory",
                        sizeof(batch[i]->errbuf));
        }
        return;
    }
    if (n > 1) {
        rv = insert_batch(st, batch, n, tmp, &err, &one_by_one);
        prior = one_by_one ? err : NULL;
    }
    for (i = 0; i < n; i++) {
        if (one_by_one) {
            err = NULL;
            rv = insert_one(st, batch[i], tmp, &err, prior);
        }
        batch[i]->rv = rv;
        if (rv != APR_SUCCESS) {
            apr_cpystrn(batch[i]->errbuf, err ? err : "record store: insert failed",
                        sizeof(batch[i]->errbuf));
        }
    }
    apr_pool_destroy(tmp);
}

/* Under st->mu: an announced record arrived or was withdrawn. Returns
 * the gathering leader's condition variable for the caller to signal, once
 * st->mu is let go where it can be (NULL: none gathers). */
static apr_thread_cond_t *settle(notary_store *st)
{
    if (st->expecting > 0) {
        st->expecting--;
    }
    st->settled++;
    return st->gatherer ? st->gatherer->cv : NULL;
}

void notary_store_expect(notary_store *st, int delta)
{
    apr_thread_cond_t *wake = NULL;

    apr_thread_mutex_lock(st->mu);
    if (delta > 0) {
        st->expecting += delta;
    }
    else {
        for (; delta < 0; delta++) {
            wake = settle(st);
        }
    }
    apr_thread_mutex_unlock(st->mu);
    if (wake) {
        apr_thread_cond_signal(wake);
    }
}

/* Under st->mu: take a record that no leader has taken off the queue. */
static void dequeue(notary_store *st, store_item *it)
{
    store_item **pp, *prev = NULL;

    for (pp = &st->head; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp == it) {
            *pp = it->next;
            if (st->tail == it) {
                st->tail = prev;
            }
            it->next = NULL;
            st->queued--;
            st->queued_bytes -= it->rec->body_len;
            return;
        }
    }
}

/* Under st->mu: a queued record's time ran out before it was sent. */
static void expired(notary_store *st, store_item *it)
{
    it->done = 1;
    it->rv = APR_TIMEUP;
    apr_snprintf(it->errbuf, sizeof(it->errbuf), "record store: no commit within %"
                 APR_TIME_T_FMT " ms: still queued behind another transaction; "
                 "not sent", apr_time_as_msec(st->timeout));
}

/* Under st->mu: may a queued record start a commit now? */
static int may_lead(const notary_store *st)
{
    return st->leaders == 0
        || (st->leaders < st->max_leaders
            && (st->queued >= STORE_BATCH_MAX / 2 || st->queued_bytes >= STORE_SPLIT_BYTES));
}

void notary_store_gather_wait(notary_store *st, apr_interval_time_t wait)
{
    apr_thread_mutex_lock(st->mu);
    st->gather_wait = wait > 0 ? wait : 0;
    apr_thread_mutex_unlock(st->mu);
}

/* The leader, before taking the queue: while records announced as
 * underway have not all settled, wait for them (bounded). Under st->mu. */
static void gather(notary_store *st, store_item *me)
{
    apr_uint64_t want;
    apr_time_t until;

    if (st->expecting <= 0 || st->gather_wait <= 0 || st->gatherer) {
        return;
    }
    want = st->settled + (apr_uint64_t)st->expecting;
    until = apr_time_now() + st->gather_wait;
    st->gatherer = me;
    while (st->settled < want && st->queued < STORE_BATCH_MAX) {
        apr_interval_time_t left = until - apr_time_now();
        if (left <= 0) {
            break;
        }
        apr_thread_cond_timedwait(me->cv, st->mu, left);
    }
    st->gatherer = NULL;
}

apr_status_t notary_store_insert(notary_store *st, const notary_record *rec,
                                 apr_pool_t *errpool, const char **err)
{
    store_item me;
    const char *why;
    apr_status_t rv;

    *err = NULL;
    if ((why = notary_store_record_incomplete(rec)) != NULL) {
        *err = apr_psprintf(errpool, "record not stored: %s", why);
        rv = APR_EINVAL;
        goto not_queued;
    }
    memset(&me, 0, sizeof(me));
    me.deadline = apr_time_now() + st->timeout;
    if ((rv = notary_store_build_params(rec, &me.sp, err)) != APR_SUCCESS) {
        goto not_queued;
    }
    me.rec = rec;
    if (rec->body_file) {
        /* large: streamed on its own connection, never batched */
        if (rec->announced) {
            notary_store_expect(st, -1);
        }
        return insert_one(st, &me, errpool, err, NULL);
    }

    if (!(me.cv = waiter_cv(st))) {
        *err = "record store: cannot create a condition variable";
        rv = APR_ENOMEM;
        goto not_queued;
    }

    apr_thread_mutex_lock(st->mu);
    if (st->tail) {
        st->tail->next = &me;
    }
    else {
        st->head = &me;
    }
    st->tail = &me;
    st->queued++;
    st->queued_bytes += rec->body_len;
    if (rec->announced) {
        apr_thread_cond_t *wake = settle(st);
        if (wake) {
            apr_thread_cond_signal(wake);
        }
    }
    else if (st->gatherer && st->queued >= STORE_BATCH_MAX) {
        apr_thread_cond_signal(st->gatherer->cv);   /* a full batch: go */
    }
    while (!me.done) {
        if (!me.taken && apr_time_now() >= me.deadline) {
            /* still queued behind a commit that takes too long: give up
             * before anything of it was sent (known not written) */
            dequeue(st, &me);
            expired(st, &me);
        }
        /* a gathering leader takes this one along: no second leader */
        else if (!me.taken && !st->gatherer && may_lead(st)) {
            store_item *batch[STORE_BATCH_MAX];
            apr_thread_cond_t *wake[STORE_BATCH_MAX + 1];
            int n = 0, i;
            /* lead: wait for records underway, then take what is queued,
             * oldest first (up to a batch) */
            st->leaders++;
            gather(st, &me);
            while (st->head && n < STORE_BATCH_MAX) {
                store_item *it = st->head;
                dequeue(st, it);
                if (it->deadline <= apr_time_now() && it != &me) {
                    expired(st, it);
                    apr_thread_cond_signal(it->cv);
                    continue;
                }
                it->taken = 1;
                batch[n++] = it;
            }
            if (st->head && may_lead(st)) {
                apr_thread_cond_signal(st->head->cv);   /* more to lead */
            }
            apr_thread_mutex_unlock(st->mu);
            write_items(st, batch, n);
            apr_thread_mutex_lock(st->mu);
            /* done under the mutex, woken after it: an item lives on its
             * waiter's stack and may be gone once st->mu is let go, its
             * thread's condition variable not */
            for (i = 0; i < n; i++) {
                batch[i]->done = 1;
                wake[i] = batch[i] != &me ? batch[i]->cv : NULL;
            }
            st->leaders--;
            wake[n] = st->head ? st->head->cv : NULL;   /* the next leader */
            apr_thread_mutex_unlock(st->mu);
            for (i = 0; i <= n; i++) {
                if (wake[i]) {
                    apr_thread_cond_signal(wake[i]);
                }
            }
            goto leave;
        }
        else if (me.taken) {
            /* a leader has it: its wait is bounded by our deadline */
            apr_thread_cond_wait(me.cv, st->mu);
        }
        else {
            apr_thread_cond_timedwait(me.cv, st->mu, me.deadline - apr_time_now());
        }
    }
    apr_thread_mutex_unlock(st->mu);
leave:
    *err = me.rv == APR_SUCCESS ? NULL : apr_pstrdup(errpool, me.errbuf);
    return me.rv;

not_queued:
    if (rec->announced) {
        notary_store_expect(st, -1);
    }
    return rv;
}
