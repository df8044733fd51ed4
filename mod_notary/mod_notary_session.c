/* mod_notary glue: contract sessions. Once a token has verified, the pair
 * (consumer certificate, merchant) on this vhost is a contract session
 * until the token's exp, shared by all children through mod_socache. */
#include "notary_exchange.h"

#include <errno.h>
#include <unistd.h>

#include <http_core.h>
#include <util_mutex.h>
#include <ap_provider.h>
#include <ap_socache.h>
#include <apr_strings.h>

#include "notary_util.h"

APLOG_USE_MODULE(notary);

#define SESSION_MUTEX "notary-session"

/* The cache and its mutex outlive a configuration generation: a graceful
 * restart (logrotate's nightly reload) must not end contracts in progress,
 * and the old generation's children, still finishing their requests, must
 * share cache and lock with the new one. So both live in a pool of their
 * own that no generation clears, found again through httpd's retained data.
 * The provider is looked up anew each generation: its module is reloaded. */
typedef struct {
    apr_pool_t *pool; /* unmanaged: never cleared by httpd */
    const char *spec; /* "provider[:args]" the cache was made for */
    const char *provider_name;
    ap_socache_instance_t *cache;
    apr_global_mutex_t *mutex; /* NULL for a provider safe without one */
    pid_t parent;              /* the process that made them */
} session_retained;

#define SESSION_RETAINED_KEY "mod_notary-session-cache"

static ap_socache_provider_t *session_provider;
static ap_socache_instance_t *session_cache;
static apr_global_mutex_t *session_mutex;

int notary_session_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp)
{
    session_provider = NULL;
    session_cache = NULL;
    session_mutex = NULL;
    return ap_mutex_register(pconf, SESSION_MUTEX, NULL, APR_LOCK_DEFAULT, 0);
}

/* pconf cleanup: on a restart the cache stays; when httpd exits, the
 * parent gives back the mutex (a SysV semaphore would outlive it). The
 * cache itself is left to the provider's own fate at exit: shared memory
 * goes with the process, a dbm file, memcached and redis keep it. */
static apr_status_t session_generation_end(void *data)
{
    session_retained *rd = data;

    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING
        && rd->parent == getpid() && rd->mutex) {
        apr_global_mutex_destroy(rd->mutex);
        rd->mutex = NULL;
        rd->cache = NULL; /* unusable without its lock */
    }
    session_provider = NULL;
    session_cache = NULL;
    session_mutex = NULL;
    return APR_SUCCESS;
}

static int any_notary_vhost(server_rec *s)
{
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config,
                                                   &notary_module);
        if (notary_conf_engine(sc)) {
            return 1;
        }
    }
    return 0;
}

/* The configuration changed the cache: the old one is given up (its data
 * cannot move to another provider or size). */
static void session_retained_drop(session_retained *rd, server_rec *s)
{
    ap_socache_provider_t *old;

    if (rd->cache) {
        old = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, rd->provider_name,
                                 AP_SOCACHE_PROVIDER_VERSION);
        if (old) {
            old->destroy(rd->cache, s);
        }
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "NOTARY01109: "
                                                     "NotarySessionCache changed from '%s': contract sessions "
                                                     "of the previous configuration are dropped",
                     rd->spec);
    }
    if (rd->mutex) {
        apr_global_mutex_destroy(rd->mutex);
    }
    /* the pool is not destroyed: cleanups the old provider registered in
     * it may point into a module httpd has since unloaded */
    rd->pool = NULL;
    rd->cache = NULL;
    rd->mutex = NULL;
    rd->spec = NULL;
}

static int session_cache_init(apr_pool_t *pconf, apr_pool_t *ptemp,
                              server_rec *s)
{
    static struct ap_socache_hints hints = { 32, offsetof(notary_session, token) + 512,
                                             900 * APR_USEC_PER_SEC };
    const char *spec = notary_conf_session_cache() ? notary_conf_session_cache()
                                                   : "shmcb";
    const char *name = spec, *args = NULL, *sep, *err;
    session_retained *rd;
    apr_status_t rv;

    if ((sep = ap_strchr_c(spec, ':')) != NULL) {
        name = apr_pstrmemdup(ptemp, spec, sep - spec);
        args = sep + 1;
    }
    session_provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                          AP_SOCACHE_PROVIDER_VERSION);
    if (!session_provider) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "NOTARY01101: "
                                                   "NotarySessionCache: unknown socache provider '%s' "
                                                   "(load mod_socache_%s)",
                     name, name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rd = ap_retained_data_get(SESSION_RETAINED_KEY);
    if (!rd) {
        rd = ap_retained_data_create(SESSION_RETAINED_KEY, sizeof(*rd));
    }
    if (rd->cache && !strcmp(rd->spec, spec)) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "NOTARY01110: "
                                                    "contract sessions kept across the restart ('%s')",
                     spec);
        goto done;
    }
    session_retained_drop(rd, s);
    rv = apr_pool_create_unmanaged_ex(&rd->pool, NULL, NULL);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "NOTARY01111: "
                                                    "cannot create the contract session cache's pool");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_tag(rd->pool, "mod_notary_sessions");
    err = session_provider->create(&rd->cache, args, ptemp, rd->pool);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "NOTARY01102: "
                                                   "NotarySessionCache '%s': %s",
                     spec, err);
        rd->cache = NULL;
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (session_provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) {
        rv = ap_global_mutex_create(&rd->mutex, NULL, SESSION_MUTEX, NULL,
                                    s, rd->pool, 0);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "NOTARY01103: "
                                                        "cannot create the contract session mutex");
            rd->cache = NULL;
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    rv = session_provider->init(rd->cache, "mod_notary-session", &hints,
                                s, rd->pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "NOTARY01104: "
                                                    "cannot initialise the contract session cache '%s'",
                     spec);
        rd->cache = NULL;
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rd->spec = apr_pstrdup(rd->pool, spec);
    rd->provider_name = apr_pstrdup(rd->pool, name);
    rd->parent = getpid();

done:
    session_cache = rd->cache;
    session_mutex = rd->mutex;
    apr_pool_cleanup_register(pconf, rd, session_generation_end,
                              apr_pool_cleanup_null);
    return OK;
}

int notary_session_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s)
{
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG
        || !any_notary_vhost(s)) {
        return OK;
    }
    return session_cache_init(pconf, ptemp, s);
}

void notary_session_child_init(apr_pool_t *p, server_rec *s)
{
    apr_status_t rv;

    if (!session_mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&session_mutex,
                                     apr_global_mutex_lockfile(session_mutex),
                                     p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "NOTARY01106: "
                                                    "cannot attach the contract session mutex in a child");
    }
}

static void session_id(const notary_exchange *ex, unsigned char id[32])
{
    /* vhost, merchant and consumer certificate; NUL-separated so that no
     * two different triples give the same input */
    const server_rec *s = ex->r->server;
    char *in = apr_psprintf(ex->r->pool, "notary-session:%s:%u",
                            s->server_hostname ? s->server_hostname : "",
                            (unsigned)s->port);
    apr_size_t inlen = strlen(in), nlen = strlen(ex->merchant->name);
    unsigned char *buf = apr_palloc(ex->r->pool, inlen + 1 + nlen + 1 + 32);

    memcpy(buf, in, inlen + 1);
    memcpy(buf + inlen + 1, ex->merchant->name, nlen + 1);
    memcpy(buf + inlen + 1 + nlen + 1, ex->consumer->cert_sha256, 32);
    notary_sha256(buf, inlen + 1 + nlen + 1 + 32, id);
}

static apr_status_t session_lock(void)
{
    apr_status_t rv;
    int tries = 0;

    if (!session_mutex) {
        return APR_SUCCESS;
    }
    /* fcntl locks (Debian's "Mutex file:" default) see whole processes, not
     * threads: two children, each with one thread in mod_ssl's session
     * cache lock and another waiting for ours, look like a deadlock to the
     * kernel. It is not one; wait a moment and try again. */
    while ((rv = apr_global_mutex_lock(session_mutex)) == APR_FROM_OS_ERROR(EDEADLK)
           && ++tries < 100) {
        apr_sleep(apr_time_from_msec(1));
    }
    return rv;
}

static void session_unlock(void)
{
    if (session_mutex) {
        apr_global_mutex_unlock(session_mutex);
    }
}

static int session_lookup(notary_exchange *ex, notary_session *out)
{
    unsigned char id[32];
    unsigned char buf[sizeof(notary_session) + 1];
    unsigned int len = sizeof(buf);
    apr_status_t rv;

    if (!session_cache) {
        return 0;
    }
    session_id(ex, id);
    if ((rv = session_lock()) != APR_SUCCESS) {
        NOTARY_XLOG(APLOG_ERR, rv, ex, NULL, "NOTARY02101: contract session "
                                             "cache: cannot lock to look up a session");
        return 0;
    }
    rv = session_provider->retrieve(session_cache, ex->r->server, id,
                                    sizeof(id), buf, &len, ex->r->pool);
    session_unlock();
    if (rv != APR_SUCCESS || len < offsetof(notary_session, token) || len > sizeof(*out)) {
        return 0;
    }
    memcpy(out, buf, len);
    if (len != NOTARY_SESSION_SIZE(out)) {
        return 0; /* an entry of another version of this struct */
    }
    out->jti[sizeof(out->jti) - 1] = '\0';
    return 1;
}

/* The session of the exchange's verified token. */
static void session_fill(notary_exchange *ex, const unsigned char backend_sha256[32],
                         notary_session *sess)
{
    memset(sess, 0, offsetof(notary_session, token));
    sess->exp = ex->token->exp;
    memcpy(sess->backend_sha256, backend_sha256, 32);
    if (ex->token->jti) {
        apr_cpystrn(sess->jti, ex->token->jti, sizeof(sess->jti));
    }
    /* notary_token_parse refused a longer one */
    sess->token_len = ex->adm_token_len <= sizeof(sess->token)
                        ? (apr_uint32_t)ex->adm_token_len
                        : 0;
    memcpy(sess->token, ex->adm_token, sess->token_len);
}

/* The exchange is admitted by the session's token: its records name it. */
static void session_admission(notary_exchange *ex, const notary_session *sess)
{
    ex->adm_token = sess->token_len ? apr_pmemdup(ex->r->pool, sess->token, sess->token_len)
                                    : NULL;
    ex->adm_token_len = sess->token_len;
    ex->adm_jti = sess->jti[0] ? apr_pstrdup(ex->r->pool, sess->jti) : NULL;
    ex->adm_exp = sess->exp;
}

static void session_store(notary_exchange *ex, const notary_session *sess)
{
    unsigned char id[32];
    apr_status_t rv;

    if (!session_cache) {
        return;
    }
    session_id(ex, id);
    if ((rv = session_lock()) != APR_SUCCESS) {
        NOTARY_XLOG(APLOG_ERR, rv, ex, NULL, "NOTARY02102: contract session "
                                             "cache: cannot lock to store a session");
        return;
    }
    rv = session_provider->store(session_cache, ex->r->server, id, sizeof(id),
                                 apr_time_from_sec(sess->exp),
                                 (unsigned char *)sess, NOTARY_SESSION_SIZE(sess),
                                 ex->r->pool);
    session_unlock();
    if (rv != APR_SUCCESS) {
        /* the request itself is admitted; only later token-less ones suffer */
        NOTARY_XLOG(APLOG_WARNING, rv, ex, NULL, "NOTARY02103: contract "
                                                 "session for merchant '%s' could not be stored (cache "
                                                 "full?)",
                    ex->merchant->name);
    }
}

/* The per-connection memo: the last contract session seen on connection
 * A, for keep-alive requests to the same merchant. It belongs to the
 * consumer's certificate (a new one starts without). */
static notary_consumer *memo_of(notary_exchange *ex)
{
    return notary_conn_get(ex->r->connection, 1)->consumer;
}

static void memo_set(notary_exchange *ex, const notary_session *sess)
{
    notary_consumer *cc = memo_of(ex);

    cc->sess_merchant = ex->merchant;
    cc->sess_server = ex->r->server;
    memcpy(&cc->sess, sess, NOTARY_SESSION_SIZE(sess));
}

notary_session_found notary_session_find(notary_exchange *ex)
{
    notary_consumer *cc = memo_of(ex);
    notary_session sess;

    if (cc->sess_merchant == ex->merchant && cc->sess_server == ex->r->server
        && cc->sess.exp >= apr_time_sec(apr_time_now())) {
        sess = cc->sess;
    }
    else if (!session_lookup(ex, &sess)) {
        return NOTARY_SESSION_NONE;
    }
    if (sess.exp < apr_time_sec(apr_time_now())) {
        return NOTARY_SESSION_EXPIRED;
    }
    ex->have_session = 1;
    memcpy(ex->session_backend_sha256, sess.backend_sha256, 32);
    session_admission(ex, &sess);
    memo_set(ex, &sess);
    return NOTARY_SESSION_FOUND;
}

void notary_session_open(notary_exchange *ex, const unsigned char backend_sha256[32])
{
    notary_session sess;

    session_fill(ex, backend_sha256, &sess);
    session_store(ex, &sess);
    memo_set(ex, &sess);
    /* the consumer's key is in the line's context */
    NOTARY_XLOG(APLOG_INFO, 0, ex, NULL, "NOTARY02013: contract session "
                                         "opened: merchant %s, until %" APR_INT64_T_FMT "%s%s",
                ex->merchant->name, ex->token->exp,
                ex->token->jti ? ", jti " : "",
                ex->token->jti ? ex->token->jti : "");
}

int notary_session_refresh(notary_exchange *ex, const unsigned char backend_sha256[32])
{
    notary_session fresh;

    if (!session_lookup(ex, &fresh) || fresh.exp < apr_time_sec(apr_time_now())
        || memcmp(fresh.backend_sha256, backend_sha256, 32)) {
        return 0;
    }
    memo_set(ex, &fresh);
    session_admission(ex, &fresh);
    return 1;
}
