/* notary_store_conn: the child's connections -- the pool of slots
 * (apr_reslist), each opened lazily with its statements prepared, the
 * keys each has seen committed -- and the transactions sent on one: the
 * pipeline of keys, rows and guard, and the retry's check. Uses the I/O
 * layer and the row's encoding. Layers: notary_store_int.h.
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_reslist.h>
#include <apr_strings.h>

#include "notary_store_int.h"

#define STMT_ROW "notary_row"
#define STMT_KEY "notary_key"
#define STMT_CHECK "notary_committed"
#define STMT_GUARD "notary_guard"
#define STMT_ADM "notary_admission"

static const char row_sql[] =
    "INSERT INTO notary.records " ROW_COLUMNS " VALUES ($1, $2, $3, $4, $5, "
    "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
/* The time guard, the last statement before a transaction's commit: it
 * fails, and so the transaction rolls back, once the transaction is older
 * than $1 ms (the 90 % rule, notary_store_int.h). A cast of a text that is
 * not a number is PostgreSQL's built-in way to raise an error that names
 * its reason; the text holds clock_timestamp(), so the planner cannot fold
 * it into an error at PREPARE. */
static const char guard_sql[] =
    "SELECT CASE WHEN clock_timestamp() > transaction_timestamp() + $1 * interval "
    "'1 millisecond' THEN ('mod_notary: transaction past its bound of ' || $1 || "
    "' ms at ' || clock_timestamp() || ', rolled back')::int END";
static const char key_sql[] =
    "INSERT INTO notary.keys (sha256, der) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/* each verified admission token once (sql/0003_evidence.sql); its CHECK
 * ties the digest to the bytes */
static const char adm_sql[] =
    "INSERT INTO notary.admissions (token_sha256, token, jti, exp) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING";
/* the row's fields of version 2 without the body, in the same order (the
 * salt, on a retry the same, is not needed to tell this message apart) */
static const char check_sql[] =
    "SELECT notary.record_committed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
    "$11, $12, $13)";

static const Oid guard_types[1] = { OID_INT4 };
static const int guard_formats[1] = { 1 };
static const Oid adm_types[4] = { OID_BYTEA, OID_BYTEA, OID_TEXT, OID_TIMESTAMPTZ };
static const int adm_formats[4] = { 1, 1, 0, 1 };
static const Oid check_types[NPARAMS_CHECK - 1] = {
    OID_TIMESTAMPTZ, OID_TEXT, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT, OID_TEXT,
    OID_TEXT, OID_INT4, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT
};
static const int check_formats[NPARAMS_CHECK - 1] = {
    1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0
};
static const Oid key_types[2] = { OID_BYTEA, OID_BYTEA };
static const int key_formats[2] = { 1, 1 };

/* apr_reslist has no per-call timeout, and restarts its wait after every
 * wake-up that loses the race for a freed connection: wait in slices this
 * long, so no caller waits past its own record's deadline by more */
#ifndef STORE_ACQUIRE_SLICE
#define STORE_ACQUIRE_SLICE apr_time_from_msec(50)
#endif

/* Several hosts in the conninfo (host=a,b ...): libpq's connect_timeout
 * does not apply to PQconnectPoll, so a host that accepts TCP and never
 * answers (frozen, or its packets dropped) would hold every new
 * connection until the record's deadline and the next host would never
 * be tried. So the store tries them one at a time (store_connect), each
 * bound by connect_timeout when the conninfo gives one, else by its share
 * of the time left (left / attempts to go), never less than this: */
#ifndef STORE_HOST_FLOOR
#define STORE_HOST_FLOOR apr_time_from_msec(250)
#endif
/* A host that did not answer in its time is tried after the others, by
 * this child's new connections, for this long: a frozen primary would
 * otherwise cost each new connection its share again */
#ifndef STORE_HOST_SILENT_FOR
#define STORE_HOST_SILENT_FOR apr_time_from_sec(30)
#endif
/* NOTARY03303 at most this often per host and child; the lines between
 * are counted in the next one */
#ifndef STORE_HOST_LOG_EVERY
#define STORE_HOST_LOG_EVERY apr_time_from_sec(60)
#endif

static void keys_forget(store_conn *sc)
{
    int i;

    sc->rows_prepared = 0; /* statements go with the connection too */
    for (i = 0; i < sc->nknown; i++) {
        free(sc->known[i].der);
        sc->known[i].der = NULL;
    }
    sc->nknown = sc->next_known = 0;
    sc->nknown_adm = sc->next_known_adm = 0;
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

/* The elements of a comma-separated list, split as libpq splits it
 * (fe-connect.c, parse_comma_separated_list: at every comma, no
 * escapes); -1 when one is empty (libpq's default host or port then,
 * which cannot be passed on its own). */
static int split_list(apr_pool_t *p, const char *v, const char ***out)
{
    apr_array_header_t *a = apr_array_make(p, 4, sizeof(const char *));
    const char *s = v, *e;

    for (;;) {
        e = strchr(s, ',');
        if (!e) {
            e = s + strlen(s);
        }
        if (e == s) {
            return -1;
        }
        APR_ARRAY_PUSH(a, const char *) = apr_pstrmemdup(p, s, e - s);
        if (!*e) {
            break;
        }
        s = e + 1;
    }
    *out = (const char **)a->elts;
    return a->nelts;
}

/* The hosts of the operator's conninfo, when it names several (in
 * host=, hostaddr= or a URI; port= one for all or one each), paired as
 * libpq pairs them. Anything else -- one host, lists libpq would refuse,
 * an empty element, a conninfo libpq cannot parse, hosts that come only
 * from a service file or PGHOST -- leaves nhosts 0: libpq walks the
 * conninfo as given, and says what is wrong with it when it connects. */
static void hosts_parse(store_conns *cs, apr_pool_t *p)
{
    PQconninfoOption *opts, *o;
    char *errmsg = NULL;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *ct = NULL;
    const char **hl = NULL, **al = NULL, **pl = NULL;
    int nh = 0, na = 0, np = 0, n, i;

    opts = PQconninfoParse(cs->conninfo, &errmsg);
    if (!opts) {
        if (errmsg) {
            PQfreemem(errmsg);
        }
        return;
    }
    for (o = opts; o->keyword; o++) {
        const char *v;
        if (!o->val || !*o->val) {
            continue;
        }
        v = apr_pstrdup(p, o->val);
        if (!strcmp(o->keyword, "host")) {
            host = v;
        }
        else if (!strcmp(o->keyword, "hostaddr")) {
            hostaddr = v;
        }
        else if (!strcmp(o->keyword, "port")) {
            port = v;
        }
        else if (!strcmp(o->keyword, "connect_timeout")) {
            ct = v;
        }
        else if (!strcmp(o->keyword, "target_session_attrs")) {
            cs->prefer_standby = !strcmp(v, "prefer-standby");
        }
        else if (!strcmp(o->keyword, "load_balance_hosts")) {
            cs->load_balance = !strcmp(v, "random"); /* libpq 16 and later */
        }
    }
    PQconninfoFree(opts);
    if ((host && (nh = split_list(p, host, &hl)) < 0)
        || (hostaddr && (na = split_list(p, hostaddr, &al)) < 0)
        || (port && (np = split_list(p, port, &pl)) < 0)) {
        return;
    }
    n = na ? na : nh; /* libpq counts hostaddr's first */
    if (n < 2 || (nh && nh != n) || (np > 1 && np != n)) {
        return;
    }
    cs->hosts = apr_pcalloc(p, n * sizeof(*cs->hosts));
    for (i = 0; i < n; i++) {
        store_host *h = &cs->hosts[i];
        h->host = nh ? hl[i] : NULL;
        h->hostaddr = na ? al[i] : NULL;
        h->port = np > 1 ? pl[i] : NULL; /* a single port stays as given */
        h->label = apr_pstrcat(p, nh ? hl[i] : al[i], np ? " port " : "",
                               np ? pl[np > 1 ? i : 0] : "", NULL);
    }
    if (ct) {
        /* as libpq reads it: whole seconds, 0 or less none, at least 2;
         * a value it refuses it reports when connecting */
        char *end;
        long sec = strtol(ct, &end, 10);
        while (*end == ' ' || *end == '\t') {
            end++;
        }
        if (!*end && sec > 0 && sec <= 86400) {
            cs->host_timeout = apr_time_from_sec(sec < 2 ? 2 : sec);
        }
    }
    cs->nhosts = n;
}

/* What a pool of connections and a single connection (start-up check)
 * share: the conninfo, its bound, its hosts, the lock on their state. */
static apr_status_t conns_init(store_conns **pcs, apr_pool_t *p, const char *conninfo,
                               apr_interval_time_t timeout)
{
    store_conns *cs = *pcs = apr_pcalloc(p, sizeof(*cs));

    cs->conninfo = apr_pstrdup(p, conninfo);
    cs->timeout = timeout;
    hosts_parse(cs, p);
    return apr_thread_mutex_create(&cs->mu, APR_THREAD_MUTEX_DEFAULT, p);
}

apr_status_t notary_store_conns_create(store_conns **pcs, apr_pool_t *p, const char *conninfo,
                                       int min, int smax, int hmax, apr_interval_time_t ttl,
                                       apr_interval_time_t timeout)
{
    store_conns *cs;
    apr_status_t rv;

    if ((rv = conns_init(&cs, p, conninfo, timeout)) != APR_SUCCESS) {
        return rv;
    }
    /* the reslist registers its own cleanup on p: idle slots are closed */
    rv = apr_reslist_create(&cs->slots, min, smax, hmax, ttl,
                            slot_construct, slot_destruct, cs, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_reslist_timeout_set(cs->slots, timeout < STORE_ACQUIRE_SLICE ? timeout
                                                                     : STORE_ACQUIRE_SLICE);
    *pcs = cs;
    return APR_SUCCESS;
}

apr_status_t notary_store_slot_release(store_conns *cs, store_conn *sc)
{
    return apr_reslist_release(cs->slots, sc);
}

apr_status_t notary_store_slot_invalidate(store_conns *cs, store_conn *sc)
{
    return apr_reslist_invalidate(cs->slots, sc);
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
static apr_status_t setup_step(const store_conns *cs, store_conn *sc, int ok,
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
                                ? " (is sql/ applied to this database, version 3 or later?)"
                                : "",
                            step == STEP_SERVER_ERROR ? notary_store_result_msg(errpool, res)
                            : step == STEP_TIMEOUT
                                ? apr_psprintf(errpool, "no answer within %" APR_TIME_T_FMT " ms", apr_time_as_msec(cs->timeout))
                                : notary_store_pq_msg(errpool, PQerrorMessage(sc->conn)));
    }
    if (res) {
        PQclear(res);
    }
    return step == STEP_OK           ? APR_SUCCESS
         : step == STEP_TIMEOUT      ? APR_TIMEUP
         : step == STEP_SERVER_ERROR ? APR_EGENERAL
                                     : APR_ECONNREFUSED;
}

/* Start one connection: the operator's conninfo, then one host's values
 * in place of its lists (later keywords override what the expanded dbname
 * set: libpq's rule), and target_session_attrs when a pass of
 * prefer-standby needs its own. fallback_application_name and
 * client_encoding come first: the operator's conninfo may override them. */
static PGconn *conn_start(const store_conns *cs, const store_host *h, const char *tsa)
{
    const char *kw[8], *val[8];
    int n = 0;

    kw[n] = "fallback_application_name";
    val[n++] = "mod_notary";
    kw[n] = "client_encoding";
    val[n++] = "UTF8";
    kw[n] = "dbname";
    val[n++] = cs->conninfo;
    if (h && h->host) {
        kw[n] = "host";
        val[n++] = h->host;
    }
    if (h && h->hostaddr) {
        kw[n] = "hostaddr";
        val[n++] = h->hostaddr;
    }
    if (h && h->port) {
        kw[n] = "port";
        val[n++] = h->port;
    }
    if (tsa) {
        kw[n] = "target_session_attrs";
        val[n++] = tsa;
    }
    kw[n] = val[n] = NULL;
    return PQconnectStartParams(kw, val, 1);
}

/* Poll a connection being made until it is made (APR_SUCCESS), fails
 * (APR_ECONNREFUSED, libpq's message in c) or `until` passes
 * (APR_TIMEUP). PQconnectPoll, not PQconnectdbParams, whose
 * connect_timeout counts whole seconds (at least 2) per host and would let
 * one insert wait about twice NotaryDatabaseTimeout. */
static apr_status_t conn_poll(PGconn *c, apr_time_t until)
{
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    int w, readable;

    if (PQstatus(c) == CONNECTION_BAD) {
        ps = PGRES_POLLING_FAILED;
    }
    while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        w = notary_store_wait_socket(c, ps == PGRES_POLLING_WRITING, until, &readable);
        if (w == 0) {
            return APR_TIMEUP;
        }
        if (w < 0) {
            break;
        }
        ps = PQconnectPoll(c);
    }
    return ps == PGRES_POLLING_OK && PQstatus(c) == CONNECTION_OK ? APR_SUCCESS
                                                                  : APR_ECONNREFUSED;
}

/* The order this connection tries the hosts in: the conninfo's (shuffled
 * with load_balance_hosts=random, as libpq 16 does), hosts that did not
 * answer lately moved after the others, in the same order among
 * themselves. */
static void hosts_order(store_conns *cs, int *order)
{
    int i, j, k = 0, n = cs->nhosts;
    int *late = order + n; /* order holds 2n */
    apr_time_t now = apr_time_now();
    int nlate = 0, locked;

    for (i = 0; i < n; i++) {
        order[i] = i;
    }
    if (cs->load_balance) {
        for (i = n - 1; i > 0; i--) {
            unsigned int r;
            int t;
            if (apr_generate_random_bytes((unsigned char *)&r, sizeof(r)) != APR_SUCCESS) {
                break; /* the list's order then: still every host */
            }
            j = (int)(r % (unsigned int)(i + 1));
            t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    locked = apr_thread_mutex_lock(cs->mu) == APR_SUCCESS;
    for (i = 0; i < n; i++) {
        if (locked && cs->hosts[order[i]].silent_until > now) {
            late[nlate++] = order[i];
        }
        else {
            order[k++] = order[i];
        }
    }
    if (locked) {
        apr_thread_mutex_unlock(cs->mu);
    }
    memcpy(order + k, late, nlate * sizeof(*order));
}

/* Host i answered: first in its place again. */
static void host_answered(store_conns *cs, int i)
{
    if (apr_thread_mutex_lock(cs->mu) == APR_SUCCESS) {
        cs->hosts[i].silent_until = 0;
        apr_thread_mutex_unlock(cs->mu);
    }
}

/* Host i did not answer within `waited` and the next is tried: tried last
 * for a while, and said so (once a minute per host at most). */
static void host_skipped(store_conns *cs, int i, apr_interval_time_t waited, apr_pool_t *p)
{
    store_host *h = &cs->hosts[i];
    apr_time_t now = apr_time_now();
    int unlogged = -1;

    if (apr_thread_mutex_lock(cs->mu) != APR_SUCCESS) {
        return;
    }
    h->silent_until = now + STORE_HOST_SILENT_FOR;
    if (!h->logged_at || now - h->logged_at >= STORE_HOST_LOG_EVERY) {
        unlogged = h->unlogged;
        h->unlogged = 0;
        h->logged_at = now;
    }
    else {
        h->unlogged++;
    }
    apr_thread_mutex_unlock(cs->mu);
    if (unlogged >= 0 && cs->log) {
        cs->log(cs->log_ctx, NOTARY_STORE_APLOG_WARNING,
                apr_psprintf(p, "NOTARY03303: record store: host %s of NotaryDatabase did "
                                "not answer within %" APR_TIME_T_FMT " ms; trying the next "
                                "host, and this one last for %d s%s",
                             h->label, apr_time_as_msec(waited),
                             (int)apr_time_sec(STORE_HOST_SILENT_FOR),
                             unlogged ? apr_psprintf(p, " (skipped %d more times since this "
                                                        "line last came)",
                                                     unlogged)
                                      : ""));
    }
}

/* The server's notices and warnings on a store connection ("terminating
 * connection due to immediate shutdown command" as PostgreSQL stops):
 * libpq's default prints them to stderr, the error log, without a number
 * or level. What they announce the store reports itself when the
 * connection fails, so they go to the log at info. */
static void store_notice(void *arg, const char *message)
{
    const store_conns *cs = arg;
    apr_pool_t *p;
    size_t n = strlen(message);

    if (!cs->log || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        return;
    }
    while (n && (message[n - 1] == '\n' || message[n - 1] == '\r')) {
        n--;
    }
    cs->log(cs->log_ctx, NOTARY_STORE_APLOG_INFO,
            apr_psprintf(p, "NOTARY03304: record store: PostgreSQL says: %s",
                         notary_store_pq_msg(p, apr_pstrmemdup(p, message, n))));
    apr_pool_destroy(p);
}

/* Connect within the deadline. One host (or a conninfo the store does not
 * split): libpq walks it, bound by the deadline as a whole. Several: one
 * at a time, each bound by connect_timeout or its share of the time left
 * (STORE_HOST_FLOOR at least, the last one the deadline), libpq judging
 * each one's target_session_attrs -- a standby refused for read-write
 * fails at once and the next is tried, as libpq does;
 * prefer-standby is two passes, standby first, then any host that
 * answered. */
static apr_status_t store_connect(store_conns *cs, apr_time_t deadline, PGconn **pc,
                                  PGconn **failed, apr_pool_t *errpool, const char **err)
{
    int n = cs->nhosts, passes = cs->prefer_standby ? 2 : 1;
    int *order, *silent, pass, k, left;
    const char *why = NULL;
    apr_status_t rv = APR_ECONNREFUSED;
    PGconn *c;

    *pc = NULL;
    if (failed) {
        *failed = NULL;
    }
    if (n < 2) {
        if (!(c = conn_start(cs, NULL, NULL))) {
            *err = "cannot connect to the record store: out of memory";
            return APR_ENOMEM;
        }
        if ((rv = conn_poll(c, deadline)) == APR_SUCCESS) {
            PQsetNoticeProcessor(c, store_notice, (void *)cs);
            *pc = c;
            return APR_SUCCESS;
        }
        *err = rv == APR_TIMEUP
                 ? apr_psprintf(errpool, "cannot connect to the record store: no answer "
                                         "within %" APR_TIME_T_FMT " ms",
                                apr_time_as_msec(cs->timeout))
                 : apr_psprintf(errpool, "cannot connect to the record store: %s",
                                notary_store_pq_msg(errpool, PQerrorMessage(c)));
        if (failed && rv != APR_TIMEUP) {
            *failed = c;
        }
        else {
            PQfinish(c);
        }
        return rv;
    }
    order = apr_palloc(errpool, 2 * n * sizeof(*order));
    silent = apr_pcalloc(errpool, n * sizeof(*silent));
    hosts_order(cs, order);
    left = n * passes;
    for (pass = 0; pass < passes; pass++) {
        const char *tsa = NULL; /* the conninfo's */
        if (cs->prefer_standby) {
            tsa = pass == 0 ? "standby" : "any";
        }
        for (k = 0; k < n; k++, left--) {
            int i = order[k];
            apr_time_t now = apr_time_now(), until;
            const char *one;

            if (silent[i]) {
                continue; /* not again in the second pass */
            }
            if (now >= deadline) {
                rv = APR_TIMEUP;
                why = apr_psprintf(errpool, "%s%s%s: not tried, no time left", why ? why : "",
                                   why ? "; " : "", cs->hosts[i].label);
                continue;
            }
            until = deadline;
            if (left > 1) {
                apr_interval_time_t share = cs->host_timeout ? cs->host_timeout
                                                             : (deadline - now) / left;
                if (share < STORE_HOST_FLOOR) {
                    share = STORE_HOST_FLOOR;
                }
                if (now + share < deadline) {
                    until = now + share;
                }
            }
            if (!(c = conn_start(cs, &cs->hosts[i], tsa))) {
                *err = "cannot connect to the record store: out of memory";
                return APR_ENOMEM;
            }
            if ((rv = conn_poll(c, until)) == APR_SUCCESS) {
                if (failed && *failed) {
                    PQfinish(*failed);
                    *failed = NULL;
                }
                host_answered(cs, i);
                PQsetNoticeProcessor(c, store_notice, (void *)cs);
                *pc = c;
                return APR_SUCCESS;
            }
            if (rv == APR_TIMEUP) {
                silent[i] = 1;
                one = apr_psprintf(errpool, "%s: no answer within %" APR_TIME_T_FMT " ms",
                                   cs->hosts[i].label, apr_time_as_msec(until - now));
                if (until < deadline) {
                    host_skipped(cs, i, until - now, errpool);
                }
            }
            else {
                /* libpq's message names the host and port already */
                one = notary_store_pq_msg(errpool, PQerrorMessage(c));
            }
            why = why ? apr_pstrcat(errpool, why, "; ", one, NULL) : one;
            if (failed && rv != APR_TIMEUP) {
                if (*failed) {
                    PQfinish(*failed);
                }
                *failed = c; /* the last refusal: the caller reads it */
            }
            else {
                PQfinish(c);
            }
        }
    }
    *err = apr_psprintf(errpool, "cannot connect to the record store (%d hosts, %" APR_TIME_T_FMT " ms): %s",
                        n, apr_time_as_msec(cs->timeout), why ? why : "no host tried");
    return rv == APR_TIMEUP ? APR_TIMEUP : APR_ECONNREFUSED;
}

apr_status_t notary_store_connect_once(const char *conninfo, apr_interval_time_t timeout,
                                       apr_time_t deadline, PGconn **pc, PGconn **failed,
                                       apr_pool_t *p, const char **err)
{
    store_conns *cs;
    apr_status_t rv;

    *pc = *failed = NULL;
    if ((rv = conns_init(&cs, p, conninfo, timeout)) != APR_SUCCESS) {
        *err = "cannot connect to the record store: no mutex";
        return rv;
    }
    return store_connect(cs, deadline, pc, failed, p, err);
}

static apr_status_t slot_open(store_conns *cs, store_conn *sc, apr_time_t deadline,
                              apr_pool_t *errpool, const char **err)
{
    char sql[64];
    PGconn *c;
    apr_status_t rv;

    keys_forget(sc);
    sc->conn = NULL;
    if ((rv = store_connect(cs, deadline, &c, NULL, errpool, err)) != APR_SUCCESS) {
        return rv;
    }
    sc->conn = c;
    if (PQsetnonblocking(c, 1) != 0) {
        *err = apr_psprintf(errpool, "cannot set the record store connection non-blocking: %s",
                            notary_store_pq_msg(errpool, PQerrorMessage(c)));
        rv = APR_ECONNREFUSED;
        goto fail;
    }
    /* statement_timeout (the 90 % rule, notary_store_int.h) first:
     * preparing an INSERT waits for a lock on its table, and this
     * connection is dropped when the deadline passes. The first
     * transaction sets it for good (pipeline_send). */
    apr_snprintf(sql, sizeof(sql), "SET statement_timeout = %ld",
                 notary_store_server_ms(deadline - apr_time_now()));
    sc->timeout_unsure = 1;
    sc->in_doubt = 0;
    if ((rv = setup_step(cs, sc, PQsendQuery(c, sql), deadline,
                         "setting statement_timeout", errpool, err))
            != APR_SUCCESS
        || (rv = setup_step(cs, sc, PQsendPrepare(c, STMT_ROW, row_sql, NPARAMS, notary_store_row_types),
                            deadline, "preparing the record INSERT", errpool, err))
               != APR_SUCCESS
        || (rv = setup_step(cs, sc, PQsendPrepare(c, STMT_KEY, key_sql, 2, key_types),
                            deadline, "preparing the key INSERT", errpool, err))
               != APR_SUCCESS
        || (rv = setup_step(cs, sc, PQsendPrepare(c, STMT_ADM, adm_sql, 4, adm_types),
                            deadline, "preparing the admission INSERT", errpool, err))
               != APR_SUCCESS
        || (rv = setup_step(cs, sc, PQsendPrepare(c, STMT_CHECK, check_sql, NPARAMS_CHECK - 1, check_types),
                            deadline, "preparing the retry check", errpool, err))
               != APR_SUCCESS
        || (rv = setup_step(cs, sc, PQsendPrepare(c, STMT_GUARD, guard_sql, 1, guard_types),
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

static int adm_known(const store_conn *sc, const unsigned char md[32])
{
    int i;

    for (i = 0; i < sc->nknown_adm; i++) {
        if (!memcmp(sc->known_adm[i], md, 32)) {
            return 1;
        }
    }
    return 0;
}

static void adm_learn(store_conn *sc, const unsigned char md[32])
{
    if (adm_known(sc, md)) {
        return;
    }
    memcpy(sc->known_adm[sc->next_known_adm], md, 32);
    sc->next_known_adm = (sc->next_known_adm + 1) % KNOWN_KEYS;
    if (sc->nknown_adm < KNOWN_KEYS) {
        sc->nknown_adm++;
    }
}

apr_status_t notary_store_slot_get(store_conns *cs, store_conn **psc, apr_time_t deadline,
                                   apr_pool_t *errpool, const char **err)
{
    void *res_slot;
    store_conn *sc;
    apr_status_t rv;

    do {
        rv = apr_reslist_acquire(cs->slots, &res_slot);
        if (rv == APR_SUCCESS && apr_time_now() >= deadline) {
            apr_reslist_release(cs->slots, res_slot);
            rv = APR_TIMEUP;
        }
    } while (APR_STATUS_IS_TIMEUP(rv) && apr_time_now() < deadline);
    if (rv != APR_SUCCESS) {
        *err = apr_psprintf(errpool, "record store: no connection free within "
                                     "NotaryDatabaseTimeout (%" APR_TIME_T_FMT " ms); not sent",
                            apr_time_as_msec(cs->timeout));
        return rv;
    }
    sc = res_slot;
    if (sc->conn && !slot_usable(sc)) {
        PQfinish(sc->conn);
        sc->conn = NULL;
    }
    if (!sc->conn && (rv = slot_open(cs, sc, deadline, errpool, err)) != APR_SUCCESS) {
        apr_reslist_invalidate(cs->slots, sc);
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

static int adm_cmp(const void *a, const void *b)
{
    return memcmp((*(const store_params *const *)a)->token_md,
                  (*(const store_params *const *)b)->token_md, 32);
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

/* A pipeline sent on a slot: the plan its read follows, and what its
 * commit teaches the slot. */
typedef struct {
    store_plan plan;
    fresh_key fresh[2 * STORE_BATCH_MAX]; /* keys it registers, each once */
    int nfresh;
    const store_params *adm[STORE_BATCH_MAX]; /* admissions it sends, each once */
    int nadm;
    int restoring; /* its SET brings back the full statement_timeout */
} pipeline;

static void plan_add(store_plan *plan, plan_query q)
{
    plan->query[plan->n++] = q;
}

/* Send the transaction of notary_store_pipeline, its sync included; *pl
 * says which result will answer which query. */
static step_t pipeline_send(const store_conns *cs, store_conn *sc,
                            const store_params *const *sps, int n, int with_rows,
                            apr_time_t deadline, pipeline *pl)
{
    PGconn *conn = sc->conn;
    fresh_key *fresh = pl->fresh;
    int i, j, k, multi = with_rows && n > 1;
    unsigned char bound[4];
    long ms = 0, bound_ms;
    char name[32];

    pl->plan.n = 0;
    pl->nfresh = 0;
    pl->nadm = 0;
    pl->restoring = 0;
    if (PQenterPipelineMode(conn) != 1) {
        return STEP_CONN_LOST;
    }
    /* statement_timeout as the 90 % rule wants it (notary_store_int.h):
     * below the full value for records that waited in the queue, the full
     * value again when the last transaction may have left another. First
     * in the pipeline: every later message, a Parse included, may wait for
     * a lock. The guard, last, bounds the whole transaction. */
    {
        apr_interval_time_t left = deadline - apr_time_now();
        bound_ms = notary_store_server_ms(left);
        if (left < cs->timeout - cs->timeout / 20) {
            ms = bound_ms;
        }
        else if (sc->timeout_unsure) {
            ms = notary_store_server_ms(cs->timeout);
            pl->restoring = 1;
        }
        if (ms) {
            char sql[64];
            apr_snprintf(sql, sizeof(sql), "SET statement_timeout = %ld", ms);
            if (!PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 0)) {
                return STEP_CONN_LOST;
            }
            plan_add(&pl->plan, PLAN_SET);
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
            plan_add(&pl->plan, PLAN_PREPARE);
        }
    }
    /* the keys not registered on this connection yet, each once, sent in
     * digest order: concurrent transactions inserting the same new keys
     * then wait for each other in one order, never in a cycle (deadlock) */
    for (i = 0; i < n; i++) {
        const store_params *sp = sps[i];
        for (k = 0; k < 2; k++) {
            fresh_key fk;
            fk.md = sp->key_md[k];
            fk.der = sp->key_der[k];
            fk.len = sp->key_len[k];
            if (key_known(sc, fk.md, fk.der, fk.len)) {
                continue;
            }
            for (j = 0; j < pl->nfresh && !fresh_key_eq(&fresh[j], &fk); j++) {
            }
            if (j == pl->nfresh) {
                fresh[pl->nfresh++] = fk;
            }
        }
    }
    qsort(fresh, pl->nfresh, sizeof(fresh[0]), fresh_key_cmp);
    for (j = 0; j < pl->nfresh; j++) {
        const char *kv[2] = { (const char *)fresh[j].md, (const char *)fresh[j].der };
        int kl[2] = { 32, fresh[j].len };
        if (!PQsendQueryPrepared(conn, STMT_KEY, 2, kv, kl, key_formats, 0)) {
            return STEP_CONN_LOST;
        }
        plan_add(&pl->plan, PLAN_KEY);
    }
    /* the admission tokens not sent on this connection yet, each once and
     * in digest order (as the keys, for the same reason); with the rows,
     * so no round trip of their own */
    for (i = 0; i < n; i++) {
        const store_params *sp = sps[i];
        if (!sp->has_token || adm_known(sc, sp->token_md)) {
            continue;
        }
        for (j = 0; j < pl->nadm && memcmp(pl->adm[j]->token_md, sp->token_md, 32); j++) {
        }
        if (j == pl->nadm) {
            pl->adm[pl->nadm++] = sp;
        }
    }
    qsort(pl->adm, pl->nadm, sizeof(pl->adm[0]), adm_cmp);
    for (j = 0; j < pl->nadm; j++) {
        const store_params *sp = pl->adm[j];
        const char *av[4] = { (const char *)sp->token_md, sp->token, sp->token_jti,
                              (const char *)sp->token_exp };
        int al[4] = { 32, sp->token_len, 0, 8 };
        if (!PQsendQueryPrepared(conn, STMT_ADM, 4, av, al, adm_formats, 0)) {
            return STEP_CONN_LOST;
        }
        plan_add(&pl->plan, PLAN_ADMISSION);
    }
    if (with_rows && !multi) {
        const store_params *sp = sps[0]; /* n == 1 */
        if (!PQsendQueryPrepared(conn, STMT_ROW, NPARAMS, sp->values, sp->lengths,
                                 notary_store_row_formats, 0)) {
            return STEP_CONN_LOST;
        }
        plan_add(&pl->plan, PLAN_ROWS);
    }
    if (multi) {
        const char *v[STORE_BATCH_MAX * NPARAMS];
        int l[STORE_BATCH_MAX * NPARAMS], f[STORE_BATCH_MAX * NPARAMS];
        for (i = 0; i < n; i++) {
            memcpy(v + i * NPARAMS, sps[i]->values, sizeof(sps[i]->values));
            memcpy(l + i * NPARAMS, sps[i]->lengths, sizeof(sps[i]->lengths));
            memcpy(f + i * NPARAMS, notary_store_row_formats, sizeof(notary_store_row_formats));
        }
        if (!PQsendQueryPrepared(conn, name, n * NPARAMS, v, l, f, 0)) {
            return STEP_CONN_LOST;
        }
        plan_add(&pl->plan, PLAN_ROWS);
    }
    if (with_rows) {
        const char *gv[1] = { (const char *)bound };
        int gl[1] = { 4 };
        if (!PQsendQueryPrepared(conn, STMT_GUARD, 1, gv, gl, guard_formats, 0)) {
            return STEP_CONN_LOST;
        }
        plan_add(&pl->plan, PLAN_GUARD);
    }
    if (PQpipelineSync(conn) != 1) {
        return STEP_CONN_LOST;
    }
    return STEP_OK;
}

step_t notary_store_pipeline(const store_conns *cs, store_conn *sc,
                             const store_params *const *sps, int n, int with_rows,
                             apr_time_t deadline, PGresult **res)
{
    pipeline pl;
    step_t step;
    int j;

    *res = NULL;
    if ((step = pipeline_send(cs, sc, sps, n, with_rows, deadline, &pl)) != STEP_OK) {
        return step;
    }
    sc->in_doubt = with_rows;
    step = notary_store_read_plan(sc->conn, &pl.plan, deadline, res);
    if (pl.plan.prepared) {
        /* a named statement outlives a failed transaction */
        sc->rows_prepared |= APR_UINT64_C(1) << n;
    }
    if (pl.plan.synced) {
        sc->in_doubt = 0;
    }
    if (step != STEP_OK) {
        /* STEP_LATE: rolled back, the SET and the keys with it */
        return step;
    }
    if (pl.restoring) {
        sc->timeout_unsure = 0;
    }
    for (j = 0; j < pl.nfresh; j++) {
        key_learn(sc, pl.fresh[j].md, pl.fresh[j].der, pl.fresh[j].len);
    }
    for (j = 0; j < pl.nadm; j++) {
        adm_learn(sc, pl.adm[j]->token_md);
    }
    return STEP_OK;
}

step_t notary_store_committed_before(store_conn *sc, const store_params *sp,
                                     apr_time_t deadline, int *same, PGresult **res)
{
    const char *v[NPARAMS_CHECK - 1];
    int l[NPARAMS_CHECK - 1], i, j;
    step_t step;

    for (i = 0, j = 0; i < NPARAMS_CHECK; i++) {
        if (i != P_BODY) {
            v[j] = sp->values[i];
            l[j++] = sp->lengths[i];
        }
    }
    *same = 0;
    if (!PQsendQueryPrepared(sc->conn, STMT_CHECK, NPARAMS_CHECK - 1, v, l, check_formats, 0)) {
        return STEP_CONN_LOST;
    }
    step = notary_store_finish_command(sc->conn, deadline, res);
    if (step == STEP_OK) {
        *same = PQntuples(*res) == 1 && !strcmp(PQgetvalue(*res, 0, 0), "t");
    }
    return step;
}
