/* mod_notary glue: routing and early admission. translate_name maps
 * /NAME/rest on a notary vhost to the registered merchant URL and hands the
 * request to mod_proxy_http, after everything that needs no backend key:
 * the consumer's certificate, the merchant, the token's syntax and claims,
 * the contract session. Fixups give the gate (mod_notary_gate.c) a way to
 * find the request on connection B. */
#include "notary_exchange.h"
#include "mod_notary_route.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_ssl.h>
#include <apr_strings.h>
#include <apr_base64.h>

#include <mod_proxy.h>

#include "notary_util.h"
#include "notary_target.h"
#include "notary_decode.h"

APLOG_USE_MODULE(notary);

/* ---------------------------------------------------------------------
 * The consumer: identity from the client certificate of connection A.
 * Derived data is cached per connection, keyed by the certificate
 * itself, so a renegotiated one is picked up.
 */

static apr_status_t consumer_x509_free(void *x)
{
    X509_free(x);
    return APR_SUCCESS;
}

/* The client certificate of connection A, straight from its TLS session
 * (HTTP/1.x only, see notary_route_translate). A new reference, or NULL. */
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

static int consumer_identify(request_rec *r, notary_exchange *ex)
{
    conn_rec *c = r->connection;
    notary_conn *nc = notary_conn_get(c, 1);
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
    ex->consumer = cc;
    ok = 1;
cleanup:
    X509_free(x);
    return ok;
}

/* mod_ssl hands us connection A's SSL before its handshake. */
int notary_route_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy)
{
    if (!is_proxy) {
        notary_conn_get(c, 1)->ssl = ssl;
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
                return HTTP_BAD_REQUEST; /* two tokens: which one counts? */
            }
            *token = len > plen ? apr_pstrmemdup(r->pool, p + plen + 1,
                                                 len - plen - 1)
                                : "";
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

int notary_route_translate(request_rec *r)
{
    notary_srv_conf *sc = ap_get_module_config(r->server->module_config,
                                               &notary_module);
    notary_exchange *ex;
    const char *name = NULL, *rest = NULL, *target_err = NULL, *args = NULL, *token = NULL;
    const char *detail = NULL;
    notary_token_status ts;
    int st;

    if (!notary_conf_engine(sc)) {
        return DECLINED;
    }
    /* Route on the raw request-target, not r->parsed_uri.path: httpd has
     * decoded that in place, and forwarding it would decode it again at the
     * merchant (notary_target.h says why). */
    if (notary_target_split(r->pool, r->unparsed_uri, &name, &rest,
                            &target_err)
        != APR_SUCCESS) {
        name = NULL;
    }
    /* A request the server's own configuration made -- an internal
     * redirect to an ErrorDocument, a subrequest -- is served locally, as
     * on any vhost, unless it names a merchant. Only initial requests come
     * from the consumer: the merchants' space stays all they can reach. */
    if (!ap_is_initial_req(r)
        && (!name || !apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING))) {
        return DECLINED;
    }
    ex = notary_exchange_create(r, sc);

    /* HTTP/1.x only (NOTARY01108 keeps h2 off notary vhosts): a stream of
     * an h2 connection made for another vhost with a compatible TLS set-up
     * could still name this one in :authority. The consumer's identity and
     * the record filters are per connection A, which an h2 stream is not. */
    if (r->connection->master || r->proto_num >= HTTP_VERSION(2, 0)) {
        return notary_refuse(ex, HTTP_MISDIRECTED_REQUEST, "NOTARY02016",
                             "HTTP/2 is not relayed: the notary speaks HTTP/1.1 "
                             "with the consumer; connect to this host itself");
    }
    /* The backend comes from NotaryMerchant alone: no forward proxying. */
    if (r->method_number == M_CONNECT) {
        return notary_refuse(ex, HTTP_METHOD_NOT_ALLOWED, "NOTARY02001",
                             "CONNECT is not relayed: the notary is not a forward proxy");
    }
    if (r->proxyreq == PROXYREQ_PROXY || r->parsed_uri.scheme
        || r->parsed_uri.hostname) {
        r->proxyreq = PROXYREQ_NONE;
        return notary_refuse(ex, HTTP_BAD_REQUEST, "NOTARY02002",
                             "absolute request URI refused: the notary is not a "
                             "forward proxy");
    }
    if (!name) {
        return notary_refuse(ex, HTTP_BAD_REQUEST, "NOTARY02003",
                             apr_pstrcat(r->pool, "malformed request path: ",
                                         target_err, NULL));
    }
    if (!ap_ssl_conn_is_ssl(r->connection) || !consumer_identify(r, ex)) {
        return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02005",
                             "a TLS client certificate is required: the consumer is "
                             "identified by its key");
    }

    notary_exchange_route(ex, apr_hash_get(sc->merchant_by_name, name,
                                           APR_HASH_KEY_STRING));
    if (!ex->merchant) {
        return notary_refuse(ex, HTTP_NOT_FOUND, "NOTARY02004",
                             apr_psprintf(r->pool, "no merchant '%s' is registered on "
                                                   "this notary",
                                          ap_escape_html(r->pool, name)));
    }

    if (r->args && *r->args) {
        if ((st = split_token(r, notary_conf_token_param(sc), r->args,
                              &token, &args))
            != 0) {
            return notary_refuse(ex, st, "NOTARY02006",
                                 "more than one contract token in the request");
        }
    }
    if (token) {
        if (ap_strchr_c(token, '%')) {
            char *dec = apr_pstrdup(r->pool, token);
            if (ap_unescape_urlencoded(dec) != OK) {
                return notary_refuse(ex, HTTP_BAD_REQUEST, "NOTARY02007",
                                     "contract token is not properly URL-encoded");
            }
            token = dec;
        }
        ts = notary_token_parse(r->pool, token, strlen(token), &ex->token,
                                &detail);
        if (ts == NOTARY_TOKEN_OK) {
            ts = notary_token_check_claims(r->pool, ex->token,
                                           r->server->server_hostname,
                                           ex->consumer->cert_sha256,
                                           apr_time_sec(apr_time_now()),
                                           notary_conf_token_max_age(sc),
                                           &detail);
            if (ts == NOTARY_TOKEN_AUDIENCE && detail) {
                /* where the expected value comes from, for the merchant */
                detail = apr_pstrcat(r->pool, detail,
                                     ", this virtual host's ServerName", NULL);
            }
        }
        if (ts != NOTARY_TOKEN_OK) {
            return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02008",
                                 detail ? apr_psprintf(r->pool, "%s (%s)",
                                                       notary_token_status_str(ts), detail)
                                        : notary_token_status_str(ts));
        }
        /* its records name it (the gate verifies it before any is made) */
        ex->adm_token = token;
        ex->adm_token_len = strlen(token);
        ex->adm_jti = ex->token->jti;
        ex->adm_exp = ex->token->exp;
    }
    else {
        switch (notary_session_find(ex)) {
        case NOTARY_SESSION_NONE:
            return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02009",
                                 "no contract token and no contract session with "
                                 "this merchant: follow the merchant's contract link");
        case NOTARY_SESSION_EXPIRED:
            return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02010",
                                 "contract session expired: follow a new contract link");
        case NOTARY_SESSION_FOUND:
            break;
        }
    }

    r->filename = apr_pstrcat(r->pool, "proxy:", ex->merchant->url, rest,
                              args && *args ? "?" : "", args, NULL);
    ex->backend_uri = apr_pstrcat(r->pool,
                                  ex->merchant->uri.path ? ex->merchant->uri.path : "",
                                  rest, args && *args ? "?" : "", args, NULL);
    if (ex->merchant->uri.path && *ex->merchant->uri.path
        && ex->merchant->uri.path[strlen(ex->merchant->uri.path) - 1] == '/') {
        /* the URL's trailing '/' was dropped from the worker URL too */
        ex->backend_uri = apr_pstrcat(r->pool,
                                      apr_pstrmemdup(r->pool, ex->merchant->uri.path,
                                                     strlen(ex->merchant->uri.path) - 1),
                                      rest, args && *args ? "?" : "", args, NULL);
    }
    /* rest has no dot segments left, so base + rest stays in the base;
     * checked all the same, since leaving it is another merchant's space */
    if (!notary_target_within(ex->merchant->uri.path, ex->backend_uri)) {
        return notary_refuse(ex, HTTP_BAD_REQUEST, "NOTARY02017",
                             "the path would leave the merchant's base path");
    }
    r->handler = "proxy-server";
    r->proxyreq = PROXYREQ_REVERSE;
    /* forwarded as the consumer wrote it (RFC 3986 equivalences aside),
     * never re-encoded nor decoded a second time */
    apr_table_setn(r->notes, "proxy-nocanon", "1");
    return OK;
}

/* Runs after every other fixup (mod_headers included): the backend sees our
 * Client-Cert and Notary-Exchange, never the consumer's, and the gate can
 * find this request. */
int notary_route_fixups(request_rec *r)
{
    notary_exchange *ex = notary_exchange_get(r);
    notary_consumer *cc;
    ap_conf_vector_t *dc;
    module *m;

    if (!ex || !ex->merchant || r->proxyreq != PROXYREQ_REVERSE) {
        return DECLINED;
    }
    apr_table_unset(r->headers_in, "Client-Cert");
    apr_table_unset(r->headers_in, "Client-Cert-Chain");
    cc = notary_conn_get(r->connection, 1)->consumer;
    apr_table_setn(r->headers_in, "Client-Cert", cc->client_cert_header);
    /* the merchant learns the exchange its records (and the parties'
     * receipts) are filed under; the consumer cannot name one */
    apr_table_unset(r->headers_in, "Notary-Exchange");
    if (*notary_exchange_id(ex)) { /* "": no id (logged; nothing recorded) */
        apr_table_setn(r->headers_in, "Notary-Exchange", notary_exchange_id(ex));
    }
    if (ex->merchant->rules[NOTARY_DIR_RESPONSE]
        && ex->merchant->rules[NOTARY_DIR_RESPONSE]->matcher) {
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
    ap_set_module_config(dc, &notary_module, ex);
    r->per_dir_config = dc;
    return OK;
}
