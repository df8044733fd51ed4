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
 */
#include "notary_exchange.h"
#include "mod_notary_gate.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_connection.h>
#include <apr_strings.h>

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
        return notary_refuse(ex, HTTP_BAD_GATEWAY, "NOTARY02011",
                             "the merchant's backend presented no usable certificate");
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
