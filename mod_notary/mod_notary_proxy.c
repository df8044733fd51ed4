/* mod_notary glue to mod_proxy and mod_ssl: routing and admission.
 *
 * Routing: translate_name maps /NAME/rest on a notary vhost to the
 * registered merchant URL and hands the request to mod_proxy_http.
 *
 * Admission: the token is checked against the key the merchant's backend
 * presents on the proxied TLS connection itself. mod_proxy offers no hook
 * between acquiring a backend connection and writing to it, so the check
 * sits in a connection output filter on the backend connection (the
 * "gate"), above mod_ssl: before the first byte of a request passes, the
 * gate forces the TLS handshake (a lone FLUSH), takes the key captured by
 * mod_ssl's proxy_post_handshake hook and verifies. A pooled keep-alive
 * connection keeps the key of its own handshake, so a reused connection is
 * checked against the key it really presented. The gate learns which
 * request it serves from ap_ssl_bind_outgoing(), which mod_proxy calls with
 * r->per_dir_config for every request (new or reused connection); our
 * fixups give each notary request its own per-dir vector carrying it.
 * A refusal makes mod_proxy fail the request; its request_status hook then
 * turns that into our 403 with the reason.
 */
#include "mod_notary.h"
#include "notary_decode.h"

#include <errno.h>

#include <dlfcn.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_ssl.h>
#include <http_connection.h>
#include <util_mutex.h>
#include <ap_provider.h>
#include <ap_mpm.h>
#include <apr_strings.h>
#include <apr_base64.h>
#include <apr_optional_hooks.h>

#include <mod_proxy.h>
#include <mod_ssl_openssl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "notary_util.h"

APLOG_USE_MODULE(notary);

#define GATE_FILTER "NOTARY_GATE"
#define SESSION_MUTEX "notary-session"
#define SESSION_VERSION 1

/* ---------------------------------------------------------------------
 * Workers: one pooled mod_proxy worker per merchant URL, defined the way
 * ProxyPass does. The functions are looked up at run time so that
 * mod_notary may be loaded before mod_proxy (Debian loads *.load files in
 * alphabetical order).
 */
typedef proxy_worker *(*get_worker_fn)(apr_pool_t *, proxy_balancer *,
                                       proxy_server_conf *, const char *,
                                       unsigned int);
typedef char *(*define_worker_fn)(apr_pool_t *, proxy_worker **,
                                  proxy_balancer *, proxy_server_conf *,
                                  const char *, unsigned int);

const char *notary_proxy_define_worker(cmd_parms *cmd, notary_merchant *m)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    get_worker_fn get_worker;
    define_worker_fn define_worker;
    proxy_server_conf *pconf;
    proxy_worker *worker;
    char *err;

    if (!proxy || !ap_find_linked_module("mod_ssl.c")) {
        return "NotaryMerchant: mod_proxy, mod_proxy_http and mod_ssl must be "
               "loaded (LoadModule) before merchants are registered";
    }
    get_worker = (get_worker_fn)dlsym(RTLD_DEFAULT, "ap_proxy_get_worker_ex");
    define_worker = (define_worker_fn)dlsym(RTLD_DEFAULT,
                                            "ap_proxy_define_worker_ex");
    if (!get_worker || !define_worker) {
        return "NotaryMerchant: this mod_proxy lacks ap_proxy_define_worker_ex "
               "(httpd 2.4.56 or later is required)";
    }
    /* a vhost's configs are created lazily, per module, as its directives
     * appear: create mod_proxy's as a ProxyPass here would */
    ap_set_config_vectors(cmd->server, cmd->context, cmd->path, proxy, cmd->pool);
    pconf = ap_get_module_config(cmd->server->module_config, proxy);
    worker = get_worker(cmd->temp_pool, NULL, pconf, m->url,
                        AP_PROXY_WORKER_IS_PREFIX);
    if (worker) {
        return NULL;   /* same backend as another merchant: share its pool */
    }
    err = define_worker(cmd->pool, &worker, NULL, pconf, m->url,
                        AP_PROXY_WORKER_IS_PREFIX);
    if (err) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: %s", err);
    }
    PROXY_COPY_CONF_PARAMS(worker, pconf);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Contract sessions in mod_socache, shared by all children.
 */
static ap_socache_provider_t *session_provider;
static ap_socache_instance_t *session_cache;
static apr_global_mutex_t *session_mutex;

typedef struct {
    apr_int64_t exp;
    unsigned char backend_sha256[32];
    char jti[128];
} notary_session;

static int notary_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp)
{
    notary_session_cache_spec = NULL;
    session_provider = NULL;
    session_cache = NULL;
    session_mutex = NULL;
    return ap_mutex_register(pconf, SESSION_MUTEX, NULL, APR_LOCK_DEFAULT, 0);
}

static apr_status_t session_cache_destroy(void *data)
{
    if (session_cache) {
        session_provider->destroy(session_cache, (server_rec *)data);
        session_cache = NULL;
    }
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

static int session_cache_init(apr_pool_t *pconf, apr_pool_t *ptemp,
                              server_rec *s)
{
    static struct ap_socache_hints hints = {32, sizeof(notary_session),
                                            900 * APR_USEC_PER_SEC};
    const char *spec = notary_session_cache_spec ? notary_session_cache_spec
                                                 : "shmcb";
    const char *name = spec, *args = NULL, *sep, *err;
    apr_status_t rv;

    if ((sep = ap_strchr_c(spec, ':')) != NULL) {
        name = apr_pstrmemdup(ptemp, spec, sep - spec);
        args = sep + 1;
    }
    session_provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                          AP_SOCACHE_PROVIDER_VERSION);
    if (!session_provider) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, NOTARYLOG(01101)
                     "NotarySessionCache: unknown socache provider '%s' "
                     "(load mod_socache_%s)", name, name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    err = session_provider->create(&session_cache, args, ptemp, pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, NOTARYLOG(01102)
                     "NotarySessionCache '%s': %s", spec, err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (session_provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) {
        rv = ap_global_mutex_create(&session_mutex, NULL, SESSION_MUTEX, NULL,
                                    s, pconf, 0);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, NOTARYLOG(01103)
                         "cannot create the contract session mutex");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    rv = session_provider->init(session_cache, "mod_notary-session", &hints,
                                s, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, NOTARYLOG(01104)
                     "cannot initialise the contract session cache '%s'", spec);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(pconf, s, session_cache_destroy,
                              apr_pool_cleanup_null);
    return OK;
}

static int notary_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    server_rec *vs;

    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    for (vs = s; vs; vs = vs->next) {
        notary_srv_conf *sc = ap_get_module_config(vs->module_config,
                                                   &notary_module);
        if (notary_conf_engine(sc) && sc->merchants->nelts == 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, vs, NOTARYLOG(01105)
                         "NotaryEngine On but no NotaryMerchant on %s:%d: "
                         "every request will be answered 404",
                         vs->server_hostname, vs->port);
        }
    }
    if (!any_notary_vhost(s)) {
        return OK;
    }
    return session_cache_init(pconf, ptemp, s);
}

/* After the vhosts are merged, also under apachectl -t: rules compiled,
 * cross-directive mistakes refused. */
static int notary_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s)
{
    const char *err = notary_conf_compile_rules(pconf, s);
    server_rec *vs;
    int i;

    if (err) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                     NOTARYLOG(01107) "%s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* The record filters read HTTP/1.1 messages, and the contract session
     * and consumer key are kept per connection: an h2 stream would slip
     * past both. Refuse rather than relay it unrecorded. */
    for (vs = s; vs; vs = vs->next) {
        core_server_config *core = ap_get_core_module_config(vs->module_config);
        if (!notary_conf_engine(ap_get_module_config(vs->module_config, &notary_module))
            || !core->protocols) {
            continue;
        }
        for (i = 0; i < core->protocols->nelts; i++) {
            const char *proto = APR_ARRAY_IDX(core->protocols, i, const char *);
            if (!ap_cstr_casecmp(proto, "h2") || !ap_cstr_casecmp(proto, "h2c")) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                             NOTARYLOG(01108) "Protocols lists %s for the notary "
                             "vhost %s:%d (%s:%d): mod_notary relays and records "
                             "HTTP/1.1 only; set 'Protocols http/1.1' there",
                             proto, vs->server_hostname ? vs->server_hostname : "*",
                             vs->port, vs->defn_name ? vs->defn_name : "?",
                             vs->defn_line_number);
                return HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }
    return OK;
}

static void notary_child_init(apr_pool_t *p, server_rec *s)
{
    apr_status_t rv;

    notary_store_child_init(p, s);
    if (!session_mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&session_mutex,
                                     apr_global_mutex_lockfile(session_mutex),
                                     p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, NOTARYLOG(01106)
                     "cannot attach the contract session mutex in a child");
    }
}

static void session_id(const notary_req *nr, unsigned char id[32])
{
    /* vhost, merchant and consumer certificate; NUL-separated so that no
     * two different triples give the same input */
    const server_rec *s = nr->r->server;
    char *in = apr_psprintf(nr->r->pool, "notary-session:%s:%u",
                            s->server_hostname ? s->server_hostname : "",
                            (unsigned)s->port);
    apr_size_t inlen = strlen(in), nlen = strlen(nr->merchant->name);
    unsigned char *buf = apr_palloc(nr->r->pool, inlen + 1 + nlen + 1 + 32);

    memcpy(buf, in, inlen + 1);
    memcpy(buf + inlen + 1, nr->merchant->name, nlen + 1);
    memcpy(buf + inlen + 1 + nlen + 1, nr->cert_sha256, 32);
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

static int session_lookup(notary_req *nr, notary_session *out)
{
    unsigned char id[32];
    unsigned char buf[sizeof(notary_session) + 1];
    unsigned int len = sizeof(buf);
    apr_status_t rv;

    if (!session_cache) {
        return 0;
    }
    session_id(nr, id);
    if ((rv = session_lock()) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, nr->r, NOTARYLOG(02101)
                      "contract session cache: cannot lock");
        return 0;
    }
    rv = session_provider->retrieve(session_cache, nr->r->server, id,
                                    sizeof(id), buf, &len, nr->r->pool);
    session_unlock();
    if (rv != APR_SUCCESS || len != sizeof(notary_session)) {
        return 0;
    }
    memcpy(out, buf, sizeof(*out));
    out->jti[sizeof(out->jti) - 1] = '\0';
    return 1;
}

static void session_store(notary_req *nr)
{
    unsigned char id[32];
    notary_session sess;
    apr_status_t rv;

    if (!session_cache) {
        return;
    }
    memset(&sess, 0, sizeof(sess));
    sess.exp = nr->token->exp;
    memcpy(sess.backend_sha256, nr->merchant_spki_sha256, 32);
    if (nr->token->jti) {
        apr_cpystrn(sess.jti, nr->token->jti, sizeof(sess.jti));
    }
    session_id(nr, id);
    if ((rv = session_lock()) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, nr->r, NOTARYLOG(02102)
                      "contract session cache: cannot lock");
        return;
    }
    rv = session_provider->store(session_cache, nr->r->server, id, sizeof(id),
                                 apr_time_from_sec(sess.exp),
                                 (unsigned char *)&sess, sizeof(sess),
                                 nr->r->pool);
    session_unlock();
    if (rv != APR_SUCCESS) {
        /* the request itself is admitted; only later token-less ones suffer */
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, nr->r, NOTARYLOG(02103)
                      "contract session for merchant '%s' could not be "
                      "stored (cache full?)", nr->merchant->name);
    }
}

/* ---------------------------------------------------------------------
 * Refusals: one log line with our number, the reason in the body.
 */
static const char *consumer_fp(const notary_req *nr)
{
    return notary_hex(nr->r->pool, nr->consumer_spki_sha256, 32);
}

int notary_refuse(notary_req *nr, request_rec *r, int status,
                  const char *lognum, const char *reason)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                  "NOTARY%s: refused %s %s: %s (merchant %s, consumer key "
                  "sha256 %s)", lognum, r->method, r->uri, reason,
                  nr && nr->merchant ? nr->merchant->name : "-",
                  nr && nr->consumer_spki ? consumer_fp(nr) : "-");
    ap_custom_response(r, status,
                       /* must not parse as a URL, or httpd takes it for a redirect */
                       apr_pstrcat(r->pool, "notary refused the request: ",
                                   reason, "\n", NULL));
    if (nr) {
        nr->refusal_status = status;
        nr->refusal_reason = reason;
    }
    return status;
}

/* Our slot in a conn_rec: the consumer on connection A, the backend on B. */
typedef struct notary_consumer notary_consumer;
typedef struct notary_backend notary_backend;
typedef struct {
    notary_consumer *consumer;
    notary_backend *backend;
    SSL *ssl;               /* connection A's TLS, from mod_ssl's pre_handshake */
} notary_conn;

static notary_conn *conn_get(conn_rec *c, int create)
{
    notary_conn *nc = ap_get_module_config(c->conn_config, &notary_module);

    if (!nc && create) {
        nc = apr_pcalloc(c->pool, sizeof(*nc));
        ap_set_module_config(c->conn_config, &notary_module, nc);
    }
    return nc;
}

/* ---------------------------------------------------------------------
 * The consumer: identity from the client certificate of connection A.
 * Derived data is cached per connection, keyed by the certificate
 * itself, so a renegotiated one is picked up.
 */
struct notary_consumer {
    X509 *x509;             /* the certificate all this was derived from */
    unsigned char cert_sha256[32];
    const unsigned char *spki; apr_size_t spki_len;
    unsigned char spki_sha256[32];
    const char *client_cert_header;
    /* the last contract session seen on this connection: keep-alive
     * requests to the same merchant skip the shared cache */
    const notary_merchant *sess_merchant;
    server_rec *sess_server;
    notary_session sess;
};

static apr_status_t consumer_x509_free(void *x)
{
    X509_free(x);
    return APR_SUCCESS;
}

/* The client certificate of connection A, straight from its TLS session
 * (HTTP/1.x only, see notary_translate). A new reference, or NULL. */
static X509 *consumer_cert(notary_conn *nc)
{
    if (!nc->ssl) {
        return NULL;
    }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    return SSL_get1_peer_certificate(nc->ssl);
#else
    return SSL_get_peer_certificate(nc->ssl);
#endif
}

static int consumer_identify(request_rec *r, notary_req *nr)
{
    conn_rec *c = r->connection;
    notary_conn *nc = conn_get(c, 1);
    notary_consumer *cc = nc->consumer;
    X509 *x;
    unsigned char *der;
    apr_size_t der_len;
    int ok = 0;

    if (!(x = consumer_cert(nc))) {
        return 0;
    }
    /* the same certificate as before on this connection (a renegotiation
     * or post-handshake authentication could change it) */
    if (cc && (cc->x509 == x || !X509_cmp(cc->x509, x))) {
        goto done;
    }
    cc = apr_pcalloc(c->pool, sizeof(*cc));
    if (!(der = notary_x509_der(c->pool, x, &der_len))
        || !(cc->spki = notary_x509_spki_der(c->pool, x, &cc->spki_len))) {
        goto cleanup;
    }
    X509_up_ref(x);
    cc->x509 = x;
    apr_pool_cleanup_register(c->pool, x, consumer_x509_free, apr_pool_cleanup_null);
    notary_sha256(der, der_len, cc->cert_sha256);
    notary_sha256(cc->spki, cc->spki_len, cc->spki_sha256);
    /* RFC 9440: Client-Cert is a structured-field byte sequence */
    {
        char *b64 = apr_palloc(c->pool, apr_base64_encode_len((int)der_len));
        apr_base64_encode(b64, (const char *)der, (int)der_len);
        cc->client_cert_header = apr_pstrcat(c->pool, ":", b64, ":", NULL);
    }
    nc->consumer = cc;
done:
    memcpy(nr->cert_sha256, cc->cert_sha256, 32);
    nr->consumer_spki = cc->spki;
    nr->consumer_spki_len = cc->spki_len;
    memcpy(nr->consumer_spki_sha256, cc->spki_sha256, 32);
    ok = 1;
cleanup:
    X509_free(x);
    return ok;
}

/* mod_ssl hands us connection A's SSL before its handshake. */
static int notary_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy)
{
    if (!is_proxy) {
        conn_get(c, 1)->ssl = ssl;
    }
    return DECLINED;
}

/* ---------------------------------------------------------------------
 * Routing and early admission: everything that needs no backend key.
 */

/* Split the token parameter out of the query; the rest keeps its order.
 * Returns 0, or an HTTP status for a malformed query. */
static int split_token(request_rec *r, const char *param, const char *args,
                       const char **token, const char **rest)
{
    apr_size_t plen = strlen(param);
    char *out = apr_palloc(r->pool, strlen(args) + 1), *o = out;
    const char *p = args;

    *token = NULL;
    while (*p) {
        const char *end = ap_strchr_c(p, '&');
        apr_size_t len = end ? (apr_size_t)(end - p) : strlen(p);

        if ((len == plen || (len > plen && p[plen] == '='))
            && !strncmp(p, param, plen)) {
            if (*token) {
                return HTTP_BAD_REQUEST;   /* two tokens: which one counts? */
            }
            *token = len > plen ? apr_pstrmemdup(r->pool, p + plen + 1,
                                                 len - plen - 1) : "";
        }
        else if (len) {
            if (o != out) {
                *o++ = '&';
            }
            memcpy(o, p, len);
            o += len;
        }
        p += len;
        if (*p == '&') {
            p++;
        }
    }
    *o = '\0';
    *rest = out;
    return 0;
}

static int notary_translate(request_rec *r)
{
    notary_srv_conf *sc = ap_get_module_config(r->server->module_config,
                                               &notary_module);
    notary_req *nr;
    const char *path, *slash = NULL, *name = NULL, *rest, *args = NULL, *token = NULL;
    const char *detail = NULL;
    notary_token_status ts;
    int st;

    if (!notary_conf_engine(sc)) {
        return DECLINED;
    }
    path = r->parsed_uri.path;
    if (path && path[0] == '/') {
        slash = ap_strchr_c(path + 1, '/');
        name = slash ? apr_pstrmemdup(r->pool, path + 1, slash - path - 1) : path + 1;
    }
    /* A request the server's own configuration made -- an internal
     * redirect to an ErrorDocument, a subrequest -- is served locally, as
     * on any vhost, unless it names a merchant. Only initial requests come
     * from the consumer: the merchants' space stays all they can reach. */
    if (!ap_is_initial_req(r)
        && (!name || !apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING))) {
        return DECLINED;
    }
    nr = apr_pcalloc(r->pool, sizeof(*nr));
    nr->r = r;
    nr->sc = sc;
    ap_set_module_config(r->request_config, &notary_module, nr);

    /* HTTP/1.x only (NOTARY01108 keeps h2 off notary vhosts): a stream of
     * an h2 connection made for another vhost with a compatible TLS set-up
     * could still name this one in :authority. The consumer's identity and
     * the record filters are per connection A, which an h2 stream is not. */
    if (r->connection->master || r->proto_num >= HTTP_VERSION(2, 0)) {
        return notary_refuse(nr, r, HTTP_MISDIRECTED_REQUEST, "02016",
                             "HTTP/2 is not relayed: the notary speaks HTTP/1.1 "
                             "with the consumer; connect to this host itself");
    }
    /* The backend comes from NotaryMerchant alone: no forward proxying. */
    if (r->method_number == M_CONNECT) {
        return notary_refuse(nr, r, HTTP_METHOD_NOT_ALLOWED, "02001",
                             "CONNECT is not relayed: the notary is not a forward proxy");
    }
    if (r->proxyreq == PROXYREQ_PROXY || r->parsed_uri.scheme
        || r->parsed_uri.hostname) {
        r->proxyreq = PROXYREQ_NONE;
        return notary_refuse(nr, r, HTTP_BAD_REQUEST, "02002",
                             "absolute request URI refused: the notary is not a "
                             "forward proxy");
    }
    /* parsed_uri.path is normalised (dot segments removed) but still
     * percent-encoded: route on it (name, above) and forward it unchanged */
    if (!name) {
        return notary_refuse(nr, r, HTTP_BAD_REQUEST, "02003", "malformed request path");
    }
    rest = slash ? slash : "/";
    if (!ap_ssl_conn_is_ssl(r->connection) || !consumer_identify(r, nr)) {
        return notary_refuse(nr, r, HTTP_FORBIDDEN, "02005",
                             "a TLS client certificate is required: the consumer is "
                             "identified by its key");
    }

    nr->merchant = apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING);
    if (!nr->merchant) {
        return notary_refuse(nr, r, HTTP_NOT_FOUND, "02004",
                             apr_psprintf(r->pool, "no merchant '%s' is registered on "
                                          "this notary", ap_escape_html(r->pool, name)));
    }

    if (r->args && *r->args) {
        if ((st = split_token(r, notary_conf_token_param(sc), r->args,
                              &token, &args)) != 0) {
            return notary_refuse(nr, r, st, "02006",
                                 "more than one contract token in the request");
        }
    }
    if (token) {
        if (ap_strchr_c(token, '%')) {
            char *dec = apr_pstrdup(r->pool, token);
            if (ap_unescape_urlencoded(dec) != OK) {
                return notary_refuse(nr, r, HTTP_BAD_REQUEST, "02007",
                                     "contract token is not properly URL-encoded");
            }
            token = dec;
        }
        ts = notary_token_parse(r->pool, token, strlen(token), &nr->token,
                                &detail);
        if (ts == NOTARY_TOKEN_OK) {
            ts = notary_token_check_claims(nr->token, r->server->server_hostname,
                                           nr->cert_sha256,
                                           apr_time_sec(apr_time_now()),
                                           notary_conf_token_max_age(sc),
                                           &detail);
        }
        if (ts != NOTARY_TOKEN_OK) {
            return notary_refuse(nr, r, HTTP_FORBIDDEN, "02008",
                                 detail ? apr_psprintf(r->pool, "%s (%s)",
                                                       notary_token_status_str(ts), detail)
                                        : notary_token_status_str(ts));
        }
    }
    else {
        notary_session sess;
        notary_consumer *cc = conn_get(r->connection, 1)->consumer;
        if (cc->sess_merchant == nr->merchant && cc->sess_server == r->server
            && cc->sess.exp >= apr_time_sec(apr_time_now())) {
            sess = cc->sess;
        }
        else if (!session_lookup(nr, &sess)) {
            return notary_refuse(nr, r, HTTP_FORBIDDEN, "02009",
                                 "no contract token and no contract session with "
                                 "this merchant: follow the merchant's contract link");
        }
        if (sess.exp < apr_time_sec(apr_time_now())) {
            return notary_refuse(nr, r, HTTP_FORBIDDEN, "02010",
                                 "contract session expired: follow a new contract link");
        }
        nr->have_session = 1;
        memcpy(nr->session_backend_sha256, sess.backend_sha256, 32);
        cc->sess_merchant = nr->merchant;
        cc->sess_server = r->server;
        cc->sess = sess;
    }

    r->filename = apr_pstrcat(r->pool, "proxy:", nr->merchant->url, rest,
                              args && *args ? "?" : "", args, NULL);
    nr->backend_uri = apr_pstrcat(r->pool,
                                  nr->merchant->uri.path ? nr->merchant->uri.path : "",
                                  rest, args && *args ? "?" : "", args, NULL);
    if (nr->merchant->uri.path && *nr->merchant->uri.path
        && nr->merchant->uri.path[strlen(nr->merchant->uri.path) - 1] == '/') {
        /* the URL's trailing '/' was dropped from the worker URL too */
        nr->backend_uri = apr_pstrcat(r->pool,
            apr_pstrmemdup(r->pool, nr->merchant->uri.path,
                           strlen(nr->merchant->uri.path) - 1),
            rest, args && *args ? "?" : "", args, NULL);
    }
    r->handler = "proxy-server";
    r->proxyreq = PROXYREQ_REVERSE;
    /* the path is forwarded as received (already normalised), not re-encoded */
    apr_table_setn(r->notes, "proxy-nocanon", "1");
    return OK;
}

/* Runs after every other fixup (mod_headers included): the backend sees our
 * Client-Cert, never the consumer's, and the gate can find this request. */
static int notary_fixups(request_rec *r)
{
    notary_req *nr = ap_get_module_config(r->request_config, &notary_module);
    notary_consumer *cc;
    ap_conf_vector_t *dc;
    module *m;

    if (!nr || !nr->merchant || r->proxyreq != PROXYREQ_REVERSE) {
        return DECLINED;
    }
    apr_table_unset(r->headers_in, "Client-Cert");
    apr_table_unset(r->headers_in, "Client-Cert-Chain");
    cc = conn_get(r->connection, 1)->consumer;
    apr_table_setn(r->headers_in, "Client-Cert", cc->client_cert_header);
    if (nr->merchant->rules[1] && nr->merchant->rules[1]->matcher) {
        /* response rules read the body: ask only for codings they can read */
        const char *ae = notary_codings_accept(r->pool, apr_table_getm(r->pool, r->headers_in,
                                                                       "Accept-Encoding"));
        if (ae) {
            apr_table_setn(r->headers_in, "Accept-Encoding", ae);
        }
    }

    /* a private copy of the per-dir vector whose notary slot (we have no
     * per-dir config of our own) points at this request; the others are
     * the very configs the request runs with (a shallow copy, no merge) */
    dc = ap_create_per_dir_config(r->pool);
    for (m = ap_top_module; m; m = m->next) {
        ap_set_module_config(dc, m, ap_get_module_config(r->per_dir_config, m));
    }
    ap_set_module_config(dc, &notary_module, nr);
    r->per_dir_config = dc;
    notary_record_setup(nr);
    return OK;
}

/* ---------------------------------------------------------------------
 * Backend connections (connection B).
 */
struct notary_backend {
    notary_req *req;        /* request being relayed now, NULL between;
                             * we exist only on connections that carried one */
    EVP_PKEY *key;          /* presented in this connection's handshake */
    const unsigned char *spki; apr_size_t spki_len;
    unsigned char spki_sha256[32];
    apr_bucket_brigade *bb;
};

static notary_backend *backend_get(conn_rec *c, int create)
{
    notary_conn *nc = conn_get(c, create);

    if (nc && !nc->backend && create) {
        nc->backend = apr_pcalloc(c->pool, sizeof(*nc->backend));
    }
    return nc ? nc->backend : NULL;
}

static int notary_bind_outgoing(conn_rec *c, ap_conf_vector_t *dir_conf,
                                int enable_ssl)
{
    notary_req *nr = dir_conf ? ap_get_module_config(dir_conf, &notary_module)
                              : NULL;
    notary_backend *nb = backend_get(c, nr != NULL);

    ap_log_cerror(APLOG_MARK, APLOG_TRACE2, 0, c, "notary: bind_outgoing "
                  "request %pp (enable %d)", nr ? (void *)nr->r : NULL, enable_ssl);
    if (nb) {
        nb->req = nr;
    }
    return DECLINED;   /* mod_ssl does the binding */
}

static apr_status_t backend_key_free(void *key)
{
    EVP_PKEY_free(key);
    return APR_SUCCESS;
}

static int notary_proxy_post_handshake(conn_rec *c, SSL *ssl)
{
    notary_backend *nb = backend_get(c, 0);
    X509 *cert;

    if (!nb) {
        return DECLINED;
    }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    cert = SSL_get1_peer_certificate(ssl);
#else
    cert = SSL_get_peer_certificate(ssl);
#endif
    if (cert) {
        EVP_PKEY *key = X509_get_pubkey(cert);
        if (key) {
            nb->spki = notary_x509_spki_der(c->pool, cert, &nb->spki_len);
            if (nb->spki) {
                nb->key = key;
                notary_sha256(nb->spki, nb->spki_len, nb->spki_sha256);
                apr_pool_cleanup_register(c->pool, key, backend_key_free,
                                          apr_pool_cleanup_null);
            }
            else {
                EVP_PKEY_free(key);
            }
        }
        X509_free(cert);
    }
    return OK;
}

static int notary_pre_connection(conn_rec *c, void *csd)
{
    notary_backend *nb;

    if (!c->outgoing || !(nb = backend_get(c, 0))) {
        return DECLINED;
    }
    nb->bb = apr_brigade_create(c->pool, c->bucket_alloc);
    ap_add_output_filter(GATE_FILTER, nb, NULL, c);
    ap_add_input_filter(GATE_FILTER, nb, NULL, c);
    return OK;
}

/* The connection's cached session names another backend key: a newer
 * token (another connection) may have renewed it for the key presented. */
static int session_refresh(notary_req *nr, notary_backend *nb)
{
    notary_consumer *cc = conn_get(nr->r->connection, 1)->consumer;
    notary_session fresh;

    if (!session_lookup(nr, &fresh) || fresh.exp < apr_time_sec(apr_time_now())
        || memcmp(fresh.backend_sha256, nb->spki_sha256, 32)) {
        return 0;
    }
    cc->sess = fresh;
    return 1;
}

/* An admitted request's bytes: the request record is committed before
 * the final byte passes (mod_notary_filter.c). */
static apr_status_t gate_pass(ap_filter_t *f, notary_req *nr,
                              apr_bucket_brigade *bb)
{
    if (nr->msg[NOTARY_DIR_REQUEST] && notary_record_gate(nr, bb) != 0) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    return ap_pass_brigade(f->next, bb);
}

/* Verify with the key of this connection; 0 admits, else the refusal. */
static int gate_admit(notary_req *nr, notary_backend *nb)
{
    request_rec *r = nr->r;
    const char *detail = NULL;
    notary_token_status ts;

    if (!nb->key) {
        return notary_refuse(nr, r, HTTP_BAD_GATEWAY, "02011",
                             "the merchant's backend presented no usable certificate");
    }
    nr->merchant_spki = apr_pmemdup(r->pool, nb->spki, nb->spki_len);
    nr->merchant_spki_len = nb->spki_len;
    memcpy(nr->merchant_spki_sha256, nb->spki_sha256, 32);
    if (nr->token) {
        ts = notary_token_verify_signature(nr->token, nb->key, &detail);
        if (ts != NOTARY_TOKEN_OK) {
            return notary_refuse(nr, r, HTTP_FORBIDDEN, "02012",
                                 detail ? apr_psprintf(r->pool, "%s (%s)",
                                                       notary_token_status_str(ts), detail)
                                        : notary_token_status_str(ts));
        }
        session_store(nr);
        {
            notary_consumer *cc = conn_get(r->connection, 1)->consumer;
            memset(&cc->sess, 0, sizeof(cc->sess));
            cc->sess.exp = nr->token->exp;
            memcpy(cc->sess.backend_sha256, nb->spki_sha256, 32);
            cc->sess_merchant = nr->merchant;
            cc->sess_server = r->server;
        }
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, NOTARYLOG(02013)
                      "contract session opened: merchant %s, consumer key "
                      "sha256 %s, until %" APR_INT64_T_FMT "%s%s",
                      nr->merchant->name, consumer_fp(nr), nr->token->exp,
                      nr->token->jti ? ", jti " : "",
                      nr->token->jti ? nr->token->jti : "");
    }
    else if (!nr->have_session
             || (memcmp(nr->session_backend_sha256, nb->spki_sha256, 32)
                 && !session_refresh(nr, nb))) {
        return notary_refuse(nr, r, HTTP_FORBIDDEN, "02014",
                             "the merchant's backend presents another key than the "
                             "one the contract session was verified with");
    }
    nr->admitted = 1;
    return 0;
}

static int brigade_is_metadata(apr_bucket_brigade *bb)
{
    apr_bucket *e;

    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (!APR_BUCKET_IS_METADATA(e)) {
            return 0;
        }
    }
    return 1;
}

static apr_status_t notary_gate_out(ap_filter_t *f, apr_bucket_brigade *bb)
{
    notary_backend *nb = f->ctx;
    notary_req *nr = nb->req;
    apr_status_t rv;

    if (!nr) {
        if (!brigade_is_metadata(bb)) {
            /* fail closed: bytes on a notary connection with no request
             * bound to them are never relayed */
            ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, f->c, NOTARYLOG(02015)
                          "data on a merchant connection without an admitted "
                          "request: dropped");
            apr_brigade_cleanup(bb);
            return APR_EACCES;
        }
        return ap_pass_brigade(f->next, bb);
    }
    if (nr->admitted && nr->backend_c == f->c) {
        return gate_pass(f, nr, bb);
    }
    /* not yet admitted, or mod_proxy moved the request to another backend
     * connection (a retry): admitted there only after its own key check */
    if (nr->refusal_status) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    if (!nb->key) {
        /* a lone FLUSH makes mod_ssl complete the handshake; no data goes */
        APR_BRIGADE_INSERT_TAIL(nb->bb, apr_bucket_flush_create(f->c->bucket_alloc));
        rv = ap_pass_brigade(f->next, nb->bb);
        apr_brigade_cleanup(nb->bb);
        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(bb);
            return rv;
        }
    }
    if (gate_admit(nr, nb) != 0) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    nr->backend_c = f->c;
    return gate_pass(f, nr, bb);
}

/* Response bytes from the backend: what the record filter may record. */
static apr_status_t notary_gate_in(ap_filter_t *f, apr_bucket_brigade *bb,
                                   ap_input_mode_t mode, apr_read_type_e block,
                                   apr_off_t readbytes)
{
    notary_backend *nb = f->ctx;
    apr_status_t rv = ap_get_brigade(f->next, bb, mode, block, readbytes);

    if (rv == APR_SUCCESS && nb->req && nb->req->admitted
        && !APR_BRIGADE_EMPTY(bb)) {
        nb->req->from_backend = 1;
    }
    return rv;
}

/* mod_proxy's last word on a request: turn a gate refusal into its status. */
static int notary_request_status(int *status, request_rec *r)
{
    notary_req *nr = ap_get_module_config(r->request_config, &notary_module);

    if (nr && nr->refusal_status) {
        notary_record_abandon(nr);
        *status = nr->refusal_status;
        return OK;
    }
    if (nr && *status != OK && *status != DONE) {
        /* mod_proxy ends with an error of its own (ProxyErrorOverride
         * among them): httpd answers next, not the merchant, whatever
         * bytes came from the backend */
        nr->from_backend = 0;
    }
    return DECLINED;
}

void notary_proxy_register_hooks(apr_pool_t *p)
{
    static const char *const before_proxy[] = {"mod_proxy.c", "mod_rewrite.c",
                                               "mod_alias.c", NULL};

    ap_hook_pre_config(notary_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(notary_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(notary_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(notary_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(notary_translate, NULL, before_proxy, APR_HOOK_FIRST);
    ap_hook_fixups(notary_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_ssl_bind_outgoing(notary_bind_outgoing, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    ap_hook_pre_connection(notary_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, proxy_post_handshake, notary_proxy_post_handshake,
                      NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, pre_handshake, notary_pre_handshake, NULL, NULL,
                      APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(proxy, request_status, notary_request_status,
                      NULL, NULL, APR_HOOK_MIDDLE);
    /* above mod_ssl (AP_FTYPE_CONNECTION + 5): we see plaintext first */
    ap_register_output_filter(GATE_FILTER, notary_gate_out, NULL,
                              AP_FTYPE_CONNECTION);
    ap_register_input_filter(GATE_FILTER, notary_gate_in, NULL,
                             AP_FTYPE_CONNECTION);
}
