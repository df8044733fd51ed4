/* mod_notary glue: connection B, the merchant's.
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
 *
 * A handshake that mod_ssl's SSLProxy* settings fail (verification, peer
 * name, expiry) would otherwise end as mod_proxy's "500 Proxy Error":
 * mod_ssl frees the SSL and keeps its reason in info-level lines. So the
 * gate wraps mod_ssl's verify callback on its connections (pre_handshake)
 * to keep the first error mod_ssl refuses and the merchant's certificate,
 * and when the forced handshake fails refuses with 502, NOTARY02011 and
 * that reason.
 */
#include "notary_exchange.h"
#include "mod_notary_gate.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_connection.h>
#include <apr_strings.h>
#include <apr_network_io.h>

#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include <mod_proxy.h>

#include "notary_util.h"

APLOG_USE_MODULE(notary);

/* ---------------------------------------------------------------------
 * Backend connections (connection B).
 */
struct notary_backend {
    notary_exchange *ex; /* exchange being relayed now, NULL between;
                             * we exist only on connections that carried one */
    EVP_PKEY *key;       /* presented in this connection's handshake */
    const unsigned char *spki;
    apr_size_t spki_len;
    unsigned char spki_sha256[32];
    apr_bucket_brigade *bb;
    /* the handshake as mod_ssl's verify callback saw it (gate_verify) */
    SSL_verify_cb verify_orig; /* mod_ssl's, called first */
    X509 *peer;                /* the certificate at depth 0 */
    const char *verify_error;  /* the first error mod_ssl refused */
};

static notary_backend *backend_get(conn_rec *c, int create)
{
    notary_conn *nc = notary_conn_get(c, create);

    if (nc && !nc->backend && create) {
        nc->backend = apr_pcalloc(c->pool, sizeof(*nc->backend));
    }
    return nc ? nc->backend : NULL;
}

int notary_gate_bind_outgoing(conn_rec *c, ap_conf_vector_t *dir_conf,
                              int enable_ssl)
{
    /* our fixups put the exchange in the request's per-dir vector */
    notary_exchange *ex = dir_conf ? ap_get_module_config(dir_conf, &notary_module)
                                   : NULL;
    notary_backend *nb = backend_get(c, ex != NULL);

    ap_log_cerror(APLOG_MARK, APLOG_TRACE2, 0, c, "notary: bind_outgoing "
                                                  "request %pp (enable %d)",
                  ex ? (void *)ex->r : NULL, enable_ssl);
    if (nb) {
        nb->ex = ex;
    }
    return DECLINED; /* mod_ssl does the binding */
}

static apr_status_t backend_key_free(void *key)
{
    EVP_PKEY_free(key);
    return APR_SUCCESS;
}

static apr_status_t backend_cert_free(void *cert)
{
    X509_free(cert);
    return APR_SUCCESS;
}

/* mod_ssl's verify callback with a record of what it refused. Installed
 * only on our backend connections, so the conn_rec (mod_ssl's app data)
 * always has our context; without it, fail closed. */
static int gate_verify(int ok, X509_STORE_CTX *ctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    conn_rec *c = ssl ? SSL_get_app_data(ssl) : NULL;
    notary_backend *nb = c ? backend_get(c, 0) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    int err = X509_STORE_CTX_get_error(ctx), after, rc;

    if (!nb) {
        return 0;
    }
    rc = nb->verify_orig ? nb->verify_orig(ok, ctx) : ok;
    if (depth == 0 && cert && !nb->peer && X509_up_ref(cert)) {
        nb->peer = cert;
        apr_pool_cleanup_register(c->pool, cert, backend_cert_free,
                                  apr_pool_cleanup_null);
    }
    if (!rc && !nb->verify_error) {
        char subject[256];
        /* mod_ssl may set its own error (OCSP) or mask one (an expired
         * CRL becomes -1): the one that names the cause */
        after = X509_STORE_CTX_get_error(ctx);
        if (after > X509_V_OK) {
            err = after;
        }
        if (!cert || !X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject))) {
            apr_cpystrn(subject, "?", sizeof(subject));
        }
        nb->verify_error = apr_psprintf(c->pool, "%s (X509 error %d at depth %d, %s)",
                                        err != X509_V_OK
                                            ? X509_verify_cert_error_string(err)
                                            : "the chain is longer than "
                                              "SSLProxyVerifyDepth allows",
                                        err, depth, subject);
    }
    return rc;
}

/* mod_ssl hands us connection B's SSL before its handshake */
int notary_gate_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy)
{
    notary_backend *nb;

    if (!is_proxy || !(nb = backend_get(c, 0))) {
        return DECLINED;
    }
    nb->verify_orig = SSL_get_verify_callback(ssl);
    SSL_set_verify(ssl, SSL_get_verify_mode(ssl), gate_verify);
    return DECLINED;
}

/* a certificate time for a message, e.g. "Jan  2 00:00:00 2024 GMT" */
static const char *asn1_time_str(apr_pool_t *p, const ASN1_TIME *t)
{
    BIO *bio = BIO_new(BIO_s_mem());
    const char *out = "?";
    char *d;
    long len;

    if (bio && ASN1_TIME_print(bio, t) && (len = BIO_get_mem_data(bio, &d)) > 0) {
        out = apr_pstrmemdup(p, d, len);
    }
    BIO_free(bio);
    return out;
}

/* Why mod_ssl failed the handshake on connection B, as far as we can
 * tell: the verify error it refused, else the check after the handshake
 * that the certificate fails (in mod_ssl's order: expiry, then name). */
static const char *tls_failure(apr_pool_t *p, conn_rec *c, notary_backend *nb)
{
    const char *host = apr_table_get(c->notes, "proxy-request-hostname");
    char subject[256];
    apr_ipsubnet_t *ip;

    if (nb->verify_error) {
        return apr_psprintf(p, "the notary's SSLProxyVerify refuses the merchant's "
                               "certificate: %s",
                            nb->verify_error);
    }
    if (!nb->peer) {
        return "the TLS handshake with the merchant's backend failed before it "
               "presented a certificate (mod_ssl: \"SSL Proxy connect failed\": "
               "protocol, cipher, or the backend refused the notary's client "
               "certificate)";
    }
    if (!X509_NAME_oneline(X509_get_subject_name(nb->peer), subject, sizeof(subject))) {
        apr_cpystrn(subject, "?", sizeof(subject));
    }
    if (X509_cmp_current_time(X509_get0_notAfter(nb->peer)) <= 0) {
        return apr_psprintf(p, "the merchant's certificate (%s) expired on %s "
                               "(SSLProxyCheckPeerExpire)",
                            subject, asn1_time_str(p, X509_get0_notAfter(nb->peer)));
    }
    if (X509_cmp_current_time(X509_get0_notBefore(nb->peer)) >= 0) {
        return apr_psprintf(p, "the merchant's certificate (%s) is not valid before "
                               "%s (SSLProxyCheckPeerExpire)",
                            subject, asn1_time_str(p, X509_get0_notBefore(nb->peer)));
    }
    if (host && apr_ipsubnet_create(&ip, host, NULL, p) == APR_SUCCESS) {
        return apr_psprintf(p, "the merchant is registered by IP address (%s) and "
                               "SSLProxyCheckPeerName matches only the DNS names and "
                               "the CN of its certificate (%s), never an address: "
                               "register it by a DNS name the certificate carries",
                            host, subject);
    }
    if (host && X509_check_host(nb->peer, host, 0, 0, NULL) != 1) {
        return apr_psprintf(p, "the merchant's certificate (%s) does not match the "
                               "host name %s (SSLProxyCheckPeerName)",
                            subject, host);
    }
    return apr_psprintf(p, "mod_ssl refused the merchant's certificate (%s) after "
                           "the handshake (an SSLProxyCheckPeer* check, or ALPN; see "
                           "mod_ssl's info-level lines)",
                        subject);
}

/* The merchant's TLS is not what the notary requires: 502, one line. */
static int refuse_tls(notary_exchange *ex, const char *reason)
{
    return notary_refuse(ex, HTTP_BAD_GATEWAY, "NOTARY02011", reason);
}

int notary_gate_post_handshake(conn_rec *c, SSL *ssl)
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

int notary_gate_pre_connection(conn_rec *c, void *csd)
{
    notary_backend *nb;

    if (!c->outgoing || !(nb = backend_get(c, 0))) {
        return DECLINED;
    }
    nb->bb = apr_brigade_create(c->pool, c->bucket_alloc);
    ap_add_output_filter(NOTARY_GATE_FILTER, nb, NULL, c);
    ap_add_input_filter(NOTARY_GATE_FILTER, nb, NULL, c);
    return OK;
}

/* The request record, on connection B: for every brigade of an admitted
 * request, before it passes, capture the header block as sent and, once
 * the body is complete (the record filter holds back its final byte until
 * then), commit. 0, or the HTTP status the exchange fails with. */
static int gate_commit_request(notary_exchange *ex, apr_bucket_brigade *bb)
{
    notary_msg *m = ex->msg[NOTARY_DIR_REQUEST];
    apr_bucket *e;
    const notary_rule *rule;

    if (!m || m->state == NOTARY_MSG_PASSED || m->state == NOTARY_MSG_COMMITTED) {
        return 0;
    }
    if (m->state == NOTARY_MSG_FAILED) {
        return ex->refusal_status ? ex->refusal_status : HTTP_SERVICE_UNAVAILABLE;
    }
    for (e = APR_BRIGADE_FIRST(bb); !m->hdone && e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        const char *d;
        apr_size_t len;
        if (APR_BUCKET_IS_METADATA(e)) {
            continue;
        }
        if (apr_bucket_read(e, &d, &len, APR_BLOCK_READ) != APR_SUCCESS) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        notary_msg_headers(m, d, len);
    }
    if (!m->eos || !m->hdone) {
        return 0;
    }
    rule = notary_msg_rule(m);
    if (!rule) {
        notary_msg_transit(m, NOTARY_MSG_PASSED);
        return 0;
    }
    if (!notary_msg_commit(m, rule, "refused with 503, the merchant's "
                                    "connection closed")) {
        notary_msg_transit(m, NOTARY_MSG_FAILED);
        notary_exchange_refuse_as(ex, HTTP_SERVICE_UNAVAILABLE, "record-failed",
                                  "the request matched a recording rule and its "
                                  "record could not be committed");
        notary_exchange_close_backend(ex);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    return 0;
}

/* An admitted request's bytes: the request record is committed before
 * the final byte passes. */
static apr_status_t gate_pass(ap_filter_t *f, notary_exchange *ex,
                              apr_bucket_brigade *bb)
{
    if (ex->msg[NOTARY_DIR_REQUEST] && gate_commit_request(ex, bb) != 0) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    return ap_pass_brigade(f->next, bb);
}

/* Verify with the key of this connection; 0 admits, else the refusal. */
static int gate_admit(notary_exchange *ex, notary_backend *nb)
{
    request_rec *r = ex->r;
    const char *detail = NULL;
    notary_token_status ts;

    if (!nb->key) {
        return refuse_tls(ex, "the merchant's backend presented no usable certificate");
    }
    if (ex->token) {
        ts = notary_token_verify_signature(ex->token, nb->key, &detail);
        if (ts != NOTARY_TOKEN_OK) {
            return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02012",
                                 detail ? apr_psprintf(r->pool, "%s (%s)",
                                                       notary_token_status_str(ts), detail)
                                        : notary_token_status_str(ts));
        }
        notary_session_open(ex, nb->spki_sha256);
    }
    else if (!ex->have_session
             || (memcmp(ex->session_backend_sha256, nb->spki_sha256, 32)
                 && !notary_session_refresh(ex, nb->spki_sha256))) {
        return notary_refuse(ex, HTTP_FORBIDDEN, "NOTARY02014",
                             "the merchant's backend presents another key than the "
                             "one the contract session was verified with");
    }
    notary_exchange_admit(ex, nb->spki, nb->spki_len, nb->spki_sha256);
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

apr_status_t notary_gate_out(ap_filter_t *f, apr_bucket_brigade *bb)
{
    notary_backend *nb = f->ctx;
    notary_exchange *ex = nb->ex;
    apr_status_t rv;

    if (!ex) {
        if (!brigade_is_metadata(bb)) {
            /* fail closed: bytes on a notary connection with no request
             * bound to them are never relayed */
            ap_log_cerror(APLOG_MARK, APLOG_ERR, 0, f->c, "NOTARY02015: "
                                                          "data on a merchant connection without an admitted "
                                                          "request: dropped");
            apr_brigade_cleanup(bb);
            return APR_EACCES;
        }
        return ap_pass_brigade(f->next, bb);
    }
    if (ex->admitted && ex->backend_c == f->c) {
        return gate_pass(f, ex, bb);
    }
    /* not yet admitted, or mod_proxy moved the request to another backend
     * connection (a retry): admitted there only after its own key check */
    if (ex->refusal_status) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    if (!nb->key) {
        /* a lone FLUSH makes mod_ssl complete the handshake; no data goes */
        APR_BRIGADE_INSERT_TAIL(nb->bb, apr_bucket_flush_create(f->c->bucket_alloc));
        rv = ap_pass_brigade(f->next, nb->bb);
        apr_brigade_cleanup(nb->bb);
        if (rv != APR_SUCCESS) {
            /* mod_ssl marks its failed handshakes (mod_proxy reads the
             * same note); anything else is mod_proxy's to answer */
            const char *ssl_rv = apr_table_get(f->c->notes, "SSL_connect_rv");
            if (ssl_rv && !strcmp(ssl_rv, "err")) {
                refuse_tls(ex, tls_failure(ex->r->pool, f->c, nb));
            }
            apr_brigade_cleanup(bb);
            return rv;
        }
    }
    if (gate_admit(ex, nb) != 0) {
        apr_brigade_cleanup(bb);
        return APR_EACCES;
    }
    ex->backend_c = f->c;
    return gate_pass(f, ex, bb);
}

/* Response bytes from the backend: what the record filter may record. */
apr_status_t notary_gate_in(ap_filter_t *f, apr_bucket_brigade *bb,
                            ap_input_mode_t mode, apr_read_type_e block,
                            apr_off_t readbytes)
{
    notary_backend *nb = f->ctx;
    apr_status_t rv = ap_get_brigade(f->next, bb, mode, block, readbytes);

    if (rv == APR_SUCCESS && nb->ex && nb->ex->admitted
        && !APR_BRIGADE_EMPTY(bb)) {
        nb->ex->from_backend = 1;
    }
    return rv;
}

/* mod_proxy's last word on a request: turn a gate refusal into its status. */
int notary_gate_request_status(int *status, request_rec *r)
{
    notary_exchange *ex = notary_exchange_get(r);

    if (ex && ex->refusal_status) {
        notary_exchange_abandon(ex);
        *status = ex->refusal_status;
        return OK;
    }
    if (ex && *status != OK && *status != DONE) {
        /* mod_proxy ends with an error of its own (ProxyErrorOverride
         * among them): httpd answers next, not the merchant, whatever
         * bytes came from the backend */
        ex->from_backend = 0;
    }
    return DECLINED;
}
