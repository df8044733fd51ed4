/* mod_notary glue: the log integrator. Every NotaryLogInterval one httpd
 * child -- a mod_watchdog singleton, as mod_md's drive runs -- integrates
 * the records that have become final into the log (notary_log_integrate:
 * the tree, its tiles, a checkpoint signed with NotaryLogKey). One
 * integrator per log database, however many vhosts name it. Several
 * httpd servers on one database need no coordination here: the database
 * lets one integrate at a time (NOTARY_LOG_BUSY for the others).
 *
 * Glue: it reads the configuration and runs the core (notary_log.c). */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <apr_hash.h>
#include <apr_optional.h>
#include <apr_strings.h>

#include <mod_watchdog.h>

#include <libpq-fe.h>

#include "mod_notary_config.h"
#include "mod_notary_log.h"
#include "notary_log.h"
#include "notary_note.h"

APLOG_USE_MODULE(notary);

#define LOG_WATCHDOG_NAME "_notary_log_"
/* leaves per batch, and batches per round: a backlog (a restart, a burst)
 * is worked off in a few rounds, each transaction stays short */
#define LOG_BATCH_MAX 4096
#define LOG_BATCHES_PER_ROUND 16

/* One log database and who integrates into it. Allocated in pconf; each
 * child has its copy, only the watchdog's singleton child uses it. */
typedef struct {
    server_rec *s;                 /* the first vhost that names it (logs) */
    const char *conninfo;
    const notary_note_key *key;
    const char *origin;
    apr_interval_time_t interval, timeout;
    PGconn *conn;                  /* the singleton child's, kept */
    char last_err[256];            /* logged once until it changes */
} log_integrator;

static APR_OPTIONAL_FN_TYPE(ap_watchdog_get_instance) *wd_get_instance;
static APR_OPTIONAL_FN_TYPE(ap_watchdog_register_callback) *wd_register_callback;

int notary_log_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    const char *detail = NULL;

    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config, &notary_module);

        if (!notary_conf_engine(sc) || !sc->log_key_file) {
            continue;
        }
        if (!sc->log_origin) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL, "NOTARY04001: "
                         "NotaryLogKey on %s:%u needs NotaryLogOrigin (the name the "
                         "checkpoints are signed under)", s->server_hostname,
                         (unsigned)s->port);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (!notary_conf_log_database(sc)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL, "NOTARY04002: "
                         "NotaryLogKey on %s:%u needs NotaryDatabase or "
                         "NotaryLogIntegratorDatabase (where is the log?)",
                         s->server_hostname, (unsigned)s->port);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        /* read as root at start-up: the children need not read the file */
        sc->log_key = notary_note_key_from_pem_file(pconf, sc->log_origin, sc->log_key_file,
                                                    &detail);
        if (!sc->log_key) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL, "NOTARY04003: "
                         "NotaryLogKey %s: %s", sc->log_key_file,
                         detail ? detail : "not an Ed25519 private key in PEM");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

/* The integrator's connection, opened if needed; NULL when it cannot be
 * (logged once per different reason). */
static PGconn *integrator_conn(log_integrator *ig)
{
    /* before dbname: the operator's conninfo may override them */
    const char *const kw[] = { "fallback_application_name", "connect_timeout", "dbname",
                               NULL };
    const char *val[] = { "mod_notary log", NULL, ig->conninfo, NULL };
    char secs[16];

    if (ig->conn && PQstatus(ig->conn) == CONNECTION_OK) {
        return ig->conn;
    }
    if (ig->conn) {
        PQfinish(ig->conn);
    }
    apr_snprintf(secs, sizeof(secs), "%ld", (long)apr_time_sec(ig->timeout));
    val[1] = secs;
    ig->conn = PQconnectdbParams(kw, val, 1);
    if (!ig->conn || PQstatus(ig->conn) != CONNECTION_OK) {
        const char *msg = ig->conn ? PQerrorMessage(ig->conn) : "out of memory";
        if (strncmp(ig->last_err, msg, sizeof(ig->last_err) - 1)) {
            apr_cpystrn(ig->last_err, msg, sizeof(ig->last_err));
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, ig->s, "NOTARY04004: log %s: the "
                         "integrator cannot connect to its database: %s; records "
                         "wait to be integrated", ig->origin, msg);
        }
        if (ig->conn) {
            PQfinish(ig->conn);
            ig->conn = NULL;
        }
        return NULL;
    }
    return ig->conn;
}

/* One round: batches until nothing final is left (or the round's bound). */
static void integrate_round(log_integrator *ig, apr_pool_t *p)
{
    notary_log_batch b;
    const char *err = NULL;
    PGconn *conn;
    int i, rv = NOTARY_LOG_IDLE;

    if (!(conn = integrator_conn(ig))) {
        return;
    }
    for (i = 0; i < LOG_BATCHES_PER_ROUND; i++) {
        err = NULL;
        rv = notary_log_integrate(conn, p, ig->key, LOG_BATCH_MAX, ig->timeout, &b, &err);
        if (rv != NOTARY_LOG_ADDED) {
            break;
        }
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, ig->s, "NOTARY04005: log %s: integrated "
                     "%" APR_UINT64_T_FMT " records, tree size %" APR_UINT64_T_FMT,
                     ig->origin, b.new_size - b.old_size, b.new_size);
    }
    if (rv == NOTARY_LOG_ERROR) {
        if (!err) {
            err = "unknown error";
        }
        if (strncmp(ig->last_err, err, sizeof(ig->last_err) - 1)) {
            apr_cpystrn(ig->last_err, err, sizeof(ig->last_err));
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, ig->s, "NOTARY04006: log %s: "
                         "integration failed: %s; tried again every %" APR_TIME_T_FMT
                         " s", ig->origin, err, apr_time_sec(ig->interval));
        }
        return;
    }
    if (ig->last_err[0]) {
        ig->last_err[0] = '\0';
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ig->s, "NOTARY04007: log %s: "
                     "integrating again", ig->origin);
    }
}

static apr_status_t log_watchdog(int state, void *data, apr_pool_t *pool)
{
    log_integrator *ig = data;

    switch (state) {
    case AP_WATCHDOG_STATE_STARTING:
        ig->conn = NULL;
        ig->last_err[0] = '\0';
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ig->s, "NOTARY04008: log %s: this "
                     "child integrates, every %" APR_TIME_T_FMT " s", ig->origin,
                     apr_time_sec(ig->interval));
        break;
    case AP_WATCHDOG_STATE_RUNNING:
        /* pool is the call's own, destroyed after it */
        integrate_round(ig, pool);
        break;
    case AP_WATCHDOG_STATE_STOPPING:
        if (ig->conn) {
            PQfinish(ig->conn);
            ig->conn = NULL;
        }
        break;
    }
    /* never an error: mod_watchdog would not call us again */
    return APR_SUCCESS;
}

int notary_log_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *by_db = apr_hash_make(ptemp);
    server_rec *main_s = s;
    ap_watchdog_t *wd = NULL;
    apr_hash_index_t *hi;
    apr_status_t rv;

    /* the first of httpd's two config passes starts nothing */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config, &notary_module);
        const char *db;
        log_integrator *ig;

        if (!notary_conf_engine(sc) || !sc->log_key) {
            continue;
        }
        db = notary_conf_log_database(sc);
        if ((ig = apr_hash_get(by_db, db, APR_HASH_KEY_STRING))) {
            /* one database, one log: the same key and origin */
            if (strcmp(ig->origin, sc->log_origin)
                || strcmp(notary_note_vkey(ptemp, ig->key), notary_note_vkey(ptemp, sc->log_key))) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "NOTARY04009: %s:%u and %s:%u "
                             "integrate into the same log database with different "
                             "NotaryLogOrigin or NotaryLogKey: one database holds one log",
                             ig->s->server_hostname, (unsigned)ig->s->port,
                             s->server_hostname, (unsigned)s->port);
                return HTTP_INTERNAL_SERVER_ERROR;
            }
            if (apr_time_from_sec(notary_conf_log_interval(sc)) < ig->interval) {
                ig->interval = apr_time_from_sec(notary_conf_log_interval(sc));
            }
            continue;
        }
        ig = apr_pcalloc(pconf, sizeof(*ig));
        ig->s = s;
        ig->conninfo = db;
        ig->key = sc->log_key;
        ig->origin = sc->log_origin;
        ig->interval = apr_time_from_sec(notary_conf_log_interval(sc));
        ig->timeout = apr_time_from_sec(notary_conf_db_timeout(sc));
        apr_hash_set(by_db, db, APR_HASH_KEY_STRING, ig);
    }
    if (!apr_hash_count(by_db)) {
        return OK;
    }
    wd_get_instance = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_get_instance);
    wd_register_callback = APR_RETRIEVE_OPTIONAL_FN(ap_watchdog_register_callback);
    if (!wd_get_instance || !wd_register_callback) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, main_s, "NOTARY04010: NotaryLogKey needs "
                     "mod_watchdog (LoadModule watchdog_module, unless built in)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* a singleton: one child of this server runs it at a time */
    if ((rv = wd_get_instance(&wd, LOG_WATCHDOG_NAME, 0, 1, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, main_s, "NOTARY04011: cannot create the "
                     "log integrator's watchdog");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    for (hi = apr_hash_first(ptemp, by_db); hi; hi = apr_hash_next(hi)) {
        log_integrator *ig = apr_hash_this_val(hi);
        if ((rv = wd_register_callback(wd, ig->interval, ig, log_watchdog)) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, ig->s, "NOTARY04012: cannot register "
                         "the integrator of log %s with mod_watchdog", ig->origin);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}
