/* mod_notary glue: recording. Request bodies are matched in an input
 * filter, response bodies in an output filter; a message that matches a
 * NotaryRecord rule is committed to PostgreSQL before its receiver gets
 * the final byte. The messages and their states are the exchange's
 * (notary_exchange.c); here are the brigades.
 *
 * Request (consumer to merchant): the input filter matches and keeps a copy
 * of the body, and holds back the last byte it has seen until it has seen
 * EOS, so mod_proxy can only write the final byte after we know the body
 * is complete (nothing is held while the Content-Length says more is to
 * come: HTTP_IN sends EOS with the final byte). The commit itself happens
 * in the gate on connection B (mod_notary_gate.c: it needs the key the
 * merchant presented, and sees the header block exactly as sent) before
 * the brigade carrying the final byte passes.
 *
 * Response (merchant to consumer): the output filter sits between
 * HTTP_HEADER and CHUNK, so it sees the header block as relayed and the
 * body without transfer coding. It holds back everything up to
 * NOTARY_HOLD_MAX (then, once some is released, only the last byte, and
 * none while the Content-Length says more is to come), commits at EOS,
 * then releases the rest. If the commit fails and nothing was released
 * yet, the consumer gets a 503 instead; otherwise the connection is
 * aborted before the final byte.
 */
#include "notary_exchange.h"
#include "mod_notary_record.h"
#include "mod_notary_status.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_connection.h>
#include <ap_mpm.h>
#include <apr_strings.h>
#include <apr_lib.h>

#include "notary_util.h"

APLOG_USE_MODULE(notary);

/* The request filter sits among the protocol filters, above HTTP_IN:
 * added when the request is created (before HTTP_IN), given its work at
 * fixups. There mod_proxy_http still trusts the client's Content-Length
 * (no content filter could resize the body -- ours never does) and streams
 * the body to the merchant, instead of spooling all of it to a temporary
 * file first to count it. */
static ap_filter_rec_t *record_in_handle, *record_in_late_handle;
static int record_in_wanted;

/* Split the last data byte of bb off into a bucket of its own: *tail, or
 * NULL when bb holds no data. */
static apr_status_t split_last_byte(apr_bucket_brigade *bb, apr_bucket **tail)
{
    apr_bucket *e;
    const char *d;
    apr_size_t len;
    apr_status_t rv;

    *tail = NULL;
    for (e = APR_BRIGADE_LAST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_PREV(e)) {
        if (APR_BUCKET_IS_METADATA(e) || !e->length) {
            continue;
        }
        if (e->length == (apr_size_t)-1) {
            /* reading may add buckets after it: look again from the end */
            if ((rv = apr_bucket_read(e, &d, &len, APR_BLOCK_READ)) != APR_SUCCESS) {
                return rv;
            }
            return split_last_byte(bb, tail);
        }
        if (e->length > 1) {
            apr_bucket_split(e, e->length - 1);
            e = APR_BUCKET_NEXT(e);
        }
        *tail = e;
        return APR_SUCCESS;
    }
    return APR_SUCCESS;
}

/* What a failed message becomes, for its one log line: a request is
 * refused; a response is answered with status instead, or cut off once
 * part of it went out (fail_response decides the same way). */
static const char *outcome(notary_msg *m, int status)
{
    if (m->dir == NOTARY_DIR_REQUEST) {
        return apr_psprintf(m->ex->r->pool, "refused with %d", status);
    }
    return m->released ? "part of the response was already sent: connection "
                         "aborted before its final byte"
                       : apr_psprintf(m->ex->r->pool, "answered %d instead", status);
}

/* A matched message is too large to record: refused (its one log line
 * here), never recorded in part. Returns the status. */
static int too_large(notary_msg *m, const notary_rule *rule)
{
    notary_exchange *ex = m->ex;
    int request = m->dir == NOTARY_DIR_REQUEST;
    int status = request ? HTTP_REQUEST_ENTITY_TOO_LARGE : HTTP_BAD_GATEWAY;

    /* a number per direction: what becomes of the message differs */
    NOTARY_XLOG(APLOG_ERR, 0, ex, m, "%s: %s of exchange %s matched rule '%s' "
                                     "but is larger than NotaryMaxRecordSize (%" APR_OFF_T_FMT " bytes): %s, never recorded in part",
                request ? "NOTARY03009" : "NOTARY03008", notary_dir_name(m->dir),
                notary_exchange_id(ex), rule->as_written,
                notary_conf_max_record_size(ex->sc), outcome(m, status));
    return status;
}

/* ---------------------------------------------------------------------
 * Request bodies: input filter.
 */
/* The request is refused; its one log line, saying why, is written
 * where the cause was found. name: the status page's reason name. */
static apr_status_t refuse_request(notary_msg *m, int status, const char *name,
                                   const char *reason)
{
    notary_msg_transit(m, NOTARY_MSG_FAILED);
    notary_exchange_refuse_as(m->ex, status, name, reason);
    notary_exchange_close_backend(m->ex);
    return APR_EGENERAL;
}

apr_status_t notary_record_in(ap_filter_t *f, apr_bucket_brigade *bb,
                              ap_input_mode_t mode, apr_read_type_e block,
                              apr_off_t readbytes)
{
    notary_msg *m = f->ctx;
    request_rec *r = f->r;
    apr_bucket *e, *last;
    const notary_rule *rule;
    apr_status_t rv;

    if (!m || mode != AP_MODE_READBYTES || m->eos) {
        /* not (or not yet) a message to record: the request line and
         * headers pass here too */
        return ap_get_brigade(f->next, bb, mode, block, readbytes);
    }
    if (m->state == NOTARY_MSG_FAILED) {
        return APR_EGENERAL;
    }
    if (m->state == NOTARY_MSG_IDLE) {
        m->held = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->clen = notary_body_length(r->headers_in);
        if (!notary_msg_start(m, apr_table_get(r->headers_in, "Content-Type"),
                              apr_table_get(r->headers_in, "Content-Encoding"),
                              /* taken once 8 KiB came: a client announcing a large
                        * body and stalling must not pin a buffer that size */
                              m->clen, 0)) {
            return refuse_request(m, HTTP_INTERNAL_SERVER_ERROR, "not-examined",
                                  "the request could not be examined for recording");
        }
        if (m->state == NOTARY_MSG_PASSED) {
            /* cannot match: the tail needs no holding either */
            ap_remove_input_filter(f);
            m->eos = 1;
            return ap_get_brigade(f->next, bb, mode, block, readbytes);
        }
    }
    for (;;) {
        rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
             e = APR_BUCKET_NEXT(e)) {
            const char *d;
            apr_size_t len;
            if (APR_BUCKET_IS_EOS(e)) {
                m->eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(e)) {
                continue;
            }
            if ((rv = apr_bucket_read(e, &d, &len, APR_BLOCK_READ)) != APR_SUCCESS) {
                return rv;
            }
            if ((rv = notary_msg_feed(m, d, len)) != APR_SUCCESS) {
                NOTARY_XLOG(APLOG_ERR, rv, m->ex, m, "NOTARY03010: cannot keep "
                                                     "the request body for its record; %s",
                            outcome(m, HTTP_INTERNAL_SERVER_ERROR));
                return refuse_request(m, HTTP_INTERNAL_SERVER_ERROR, "not-kept",
                                      "the request could not be kept for its record");
            }
        }
        if (m->eos) {
            notary_msg_end(m);
        }
        rule = notary_msg_rule(m);
        if (rule && notary_spool_over_limit(m->spool)) {
            int st = too_large(m, rule);
            return refuse_request(m, st, "too-large",
                                  "the request matched a recording "
                                  "rule but is larger than the notary may "
                                  "record (NotaryMaxRecordSize)");
        }
        /* previously held bytes go first */
        APR_BRIGADE_PREPEND(bb, m->held);
        notary_msg_hold(m, 0);
        if (m->eos) {
            if (!rule) {
                notary_msg_transit(m, NOTARY_MSG_PASSED); /* nothing to record */
            }
            return APR_SUCCESS;
        }
        if (m->clen >= 0 && notary_spool_length(m->spool) < m->clen) {
            /* short of the Content-Length: not the final byte yet (HTTP_IN
             * sends EOS with it), nothing to hold; splitting every read
             * would cut mod_proxy's writes into small TLS records */
            return APR_SUCCESS;
        }
        /* hold back the last byte until EOS is known (see top of file) */
        if ((rv = split_last_byte(bb, &last)) != APR_SUCCESS) {
            return rv;
        }
        if (last) {
            APR_BUCKET_REMOVE(last);
            if ((rv = apr_bucket_setaside(last, r->pool)) != APR_SUCCESS) {
                return rv;
            }
            APR_BRIGADE_INSERT_TAIL(m->held, last);
            notary_msg_hold(m, 1);
        }
        if (!APR_BRIGADE_EMPTY(bb)) {
            return APR_SUCCESS;
        }
        if (block == APR_NONBLOCK_READ) {
            return APR_EAGAIN;
        }
    }
}

/* ---------------------------------------------------------------------
 * Response bodies: output filter between HTTP_HEADER and CHUNK.
 */
/* The request's evidence (notary_msg_commit put it in err_headers_out)
 * as header lines: our own answer owes it to the consumer too. */
static const char *evidence_lines(request_rec *r)
{
    const apr_array_header_t *arr = apr_table_elts(r->err_headers_out);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    const char *out = "";
    int i;

    for (i = 0; i < arr->nelts; i++) {
        if (e[i].key && e[i].val
            && (!strcasecmp(e[i].key, "Link") || !strcasecmp(e[i].key, "Notary-Receipt"))) {
            out = apr_pstrcat(r->pool, out, e[i].key, ": ", e[i].val, "\r\n", NULL);
        }
    }
    return out;
}

static apr_status_t replace_response(ap_filter_t *f, notary_msg *m, int status,
                                     const char *reason)
{
    request_rec *r = f->r;
    conn_rec *c = r->connection;
    apr_bucket_brigade *bb;
    const char *body, *head;

    /* the header block httpd serialised is still with us: drop it and
     * answer below the CHUNK filter, straight to the connection */
    apr_brigade_cleanup(m->held_head);
    apr_brigade_cleanup(m->held);
    r->status = status;
    c->keepalive = AP_CONN_CLOSE;
    body = apr_pstrcat(r->pool, "notary refused the response: ", reason, "\n",
                       NULL);
    head = apr_psprintf(r->pool, "HTTP/1.1 %s\r\nContent-Type: text/plain; "
                                 "charset=utf-8\r\nContent-Length: %" APR_SIZE_T_FMT "\r\n%sConnection: close\r\n\r\n",
                        ap_get_status_line(status), strlen(body), evidence_lines(r));
    bb = apr_brigade_create(r->pool, c->bucket_alloc);
    apr_brigade_puts(bb, NULL, NULL, head);
    apr_brigade_puts(bb, NULL, NULL, body);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    return ap_pass_brigade(c->output_filters, bb);
}

/* name: the status page's reason name (the response is refused too) */
static apr_status_t abort_response(ap_filter_t *f, notary_msg *m, const char *name)
{
    notary_msg_transit(m, NOTARY_MSG_DROPPED);
    notary_status_refused(m->ex->merchant, name);
    apr_brigade_cleanup(m->held_head);
    apr_brigade_cleanup(m->held);
    notary_msg_hold(m, 0);
    f->c->keepalive = AP_CONN_CLOSE;
    f->c->aborted = 1;
    return APR_ECONNABORTED;
}

static apr_status_t fail_response(ap_filter_t *f, notary_msg *m, int status,
                                  const char *name, const char *reason)
{
    /* connection A speaks HTTP/1.x (notary_route_translate): our own raw
     * answer fits as long as nothing of the response went out */
    if (!m->released) {
        notary_msg_transit(m, NOTARY_MSG_DROPPED);
        notary_status_refused(m->ex->merchant, name);
        notary_msg_hold(m, 0);
        return replace_response(f, m, status, reason);
    }
    return abort_response(f, m, name);
}

/* The response will be recorded and its header block is still ours: it
 * gets the Link of its own receipt, so that the record keeps the header
 * block exactly as the consumer gets it, Link included. HTTP_HEADER has
 * serialised the block already (r->headers_out is past): the line goes
 * into those bytes, before the empty line that ends them. A response
 * whose block went out before a rule matched (past NOTARY_HOLD_MAX) has
 * no Link of its own: README "Receipts". */
static void link_response(ap_filter_t *f, notary_msg *m)
{
    request_rec *r = f->r;
    const char *link;
    char *block;
    apr_size_t llen;

    if (m->linked || m->released || !m->hdone || m->hlen < 4
        || !notary_receipt_enabled(m->ex->sc) || !*notary_exchange_id(m->ex)
        || memcmp(m->hbuf + m->hlen - 4, "\r\n\r\n", 4) != 0) {
        return;
    }
    link = apr_pstrcat(r->pool, "Link: ",
                       notary_receipt_link(r->pool, m->ex->id, NOTARY_DIR_RESPONSE), "\r\n",
                       NULL);
    llen = strlen(link);
    block = apr_palloc(r->pool, m->hlen + llen);
    memcpy(block, m->hbuf, m->hlen - 2);
    memcpy(block + m->hlen - 2, link, llen);
    memcpy(block + m->hlen - 2 + llen, "\r\n", 2);
    m->hbuf = block;
    m->hlen += llen;
    m->hcap = m->hlen;
    apr_brigade_cleanup(m->held_head);
    APR_BRIGADE_INSERT_TAIL(m->held_head, apr_bucket_pool_create(block, m->hlen, r->pool,
                                                                 f->c->bucket_alloc));
    m->linked = 1;
}

/* Pass what we hold. HTTP_HEADER added CHUNK after handing us the header
 * block, so held header bytes must go below CHUNK, the body through it. */
static apr_status_t release(ap_filter_t *f, notary_msg *m, apr_bucket_brigade *body)
{
    apr_status_t rv;

    if (!APR_BRIGADE_EMPTY(m->held_head)) {
        ap_filter_t *next = f->next;
        if (m->state == NOTARY_MSG_MATCHED) {
            /* recorded, or cut off before its end: the Link holds */
            link_response(f, m);
        }
        if (next && !strcasecmp(next->frec->name, "CHUNK")) {
            next = next->next;
        }
        rv = ap_pass_brigade(next, m->held_head);
        apr_brigade_cleanup(m->held_head);
        if (rv != APR_SUCCESS) {
            return rv;
        }
    }
    m->released = 1;
    rv = ap_pass_brigade(f->next, body);
    apr_brigade_cleanup(body);
    return rv;
}

apr_status_t notary_record_out(ap_filter_t *f, apr_bucket_brigade *bb)
{
    notary_msg *m = f->ctx;
    request_rec *r = f->r;
    apr_bucket *e, *next;
    apr_status_t rv;
    const notary_rule *rule;

    if (m->state == NOTARY_MSG_DROPPED) {
        apr_brigade_cleanup(bb);
        return APR_SUCCESS;
    }
    if (m->state == NOTARY_MSG_FAILED) {
        /* the exchange was abandoned: what comes is httpd's own answer */
        ap_remove_output_filter(f);
        return ap_pass_brigade(f->next, bb);
    }
    if (m->state == NOTARY_MSG_IDLE) {
        if (!m->ex->admitted || !m->ex->from_backend || r->header_only) {
            /* not a message from the merchant (e.g. our own refusal), or
             * no message body at all (HEAD) */
            notary_msg_transit(m, NOTARY_MSG_PASSED);
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
        m->status = r->status;
        m->held = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->held_head = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->rest = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->clen = notary_body_length(r->headers_out);
        if (!notary_msg_start(m, r->content_type ? r->content_type : apr_table_get(r->headers_out, "Content-Type"),
                              apr_table_get(r->headers_out, "Content-Encoding"),
                              m->clen, 1)) {
            return fail_response(f, m, HTTP_INTERNAL_SERVER_ERROR, "not-examined",
                                 "the response could not be examined for recording");
        }
        if (m->state == NOTARY_MSG_PASSED) {
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = next) {
        const char *d;
        apr_size_t len, hl = 0;
        int in_head = 0;

        next = APR_BUCKET_NEXT(e);
        if (APR_BUCKET_IS_EOS(e)) {
            m->eos = 1;
        }
        else if (AP_BUCKET_IS_ERROR(e)) {
            /* mod_proxy: the backend broke off; the EOS that follows
             * does not end a whole message */
            m->broken = 1;
        }
        else if (!APR_BUCKET_IS_METADATA(e)) {
            if ((rv = apr_bucket_read(e, &d, &len, APR_BLOCK_READ)) != APR_SUCCESS) {
                return rv;
            }
            if (!m->hdone) {
                hl = notary_msg_headers(m, d, len);
                in_head = 1;
                if (hl < len) {
                    /* header and body in one bucket: the body part waits */
                    apr_bucket_split(e, hl);
                    next = APR_BUCKET_NEXT(e);
                }
            }
            else if ((rv = notary_msg_feed(m, d, len)) != APR_SUCCESS) {
                NOTARY_XLOG(APLOG_ERR, rv, m->ex, m, "NOTARY03013: cannot keep "
                                                     "the response body for its record; %s",
                            outcome(m, HTTP_SERVICE_UNAVAILABLE));
                return fail_response(f, m, HTTP_SERVICE_UNAVAILABLE, "not-kept",
                                     "the response could not be kept for its record");
            }
            if (!in_head) {
                notary_msg_hold(m, m->held_bytes + (apr_off_t)len);
            }
        }
        APR_BUCKET_REMOVE(e);
        /* metadata without setaside (ENOTIMPL: mod_proxy's error bucket)
         * refers to no transient bytes: held as it is */
        if ((rv = apr_bucket_setaside(e, r->pool)) != APR_SUCCESS
            && !(rv == APR_ENOTIMPL && APR_BUCKET_IS_METADATA(e))) {
            apr_bucket_destroy(e);
            return rv;
        }
        APR_BRIGADE_INSERT_TAIL(in_head ? m->held_head : m->held, e);
    }

    if (m->eos) {
        notary_msg_end(m);
    }
    rule = notary_msg_rule(m);
    if (rule && m->broken) {
        /* never recorded as if whole, never delivered as if whole */
        NOTARY_XLOG(APLOG_ERR, 0, m->ex, m, "NOTARY03017: response of exchange "
                                            "%s matched rule '%s' but the merchant's backend broke off "
                                            "before its end: not recorded, connection aborted",
                    notary_exchange_id(m->ex), rule->as_written);
        return abort_response(f, m, "broken-off");
    }
    if (rule && notary_spool_over_limit(m->spool)) {
        return fail_response(f, m, too_large(m, rule), "too-large",
                             "the response matched a recording rule but is "
                             "larger than the notary may record");
    }
    if (!m->eos) {
        apr_bucket *tail = NULL;
        /* hold up to NOTARY_HOLD_MAX while a 503 could still replace the
         * response; once some of it is out, only the last byte */
        if (!m->released && m->held_bytes <= NOTARY_HOLD_MAX) {
            return APR_SUCCESS;
        }
        if (m->clen >= 0 && notary_spool_length(m->spool) < m->clen) {
            /* short of the Content-Length: not the final byte yet */
            rv = release(f, m, m->held);
            notary_msg_hold(m, 0);
            return rv;
        }
        /* release all but the last data byte */
        if ((rv = split_last_byte(m->held, &tail)) != APR_SUCCESS || !tail) {
            return rv;
        }
        apr_brigade_split_ex(m->held, tail, m->rest);
        rv = release(f, m, m->held);
        APR_BRIGADE_CONCAT(m->held, m->rest);
        notary_msg_hold(m, 1);
        return rv;
    }

    if (rule) {
        /* before the commit: the record keeps the block as it goes out */
        link_response(f, m);
    }
    if (rule && !notary_msg_commit(m, rule, outcome(m, HTTP_SERVICE_UNAVAILABLE))) {
        return fail_response(f, m, HTTP_SERVICE_UNAVAILABLE, "record-failed",
                             "the response matched a recording rule and its "
                             "record could not be committed");
    }
    if (!rule) {
        notary_msg_transit(m, NOTARY_MSG_PASSED);
    }
    rv = release(f, m, m->held);
    notary_msg_hold(m, 0);
    ap_remove_output_filter(f);
    return rv;
}

/* ---------------------------------------------------------------------
 * Set-up per request and per child.
 */
/* Runs after mod_notary_route.c's fixups: the messages that may be
 * recorded get their filters. */
int notary_record_fixups(request_rec *r)
{
    notary_exchange *ex = notary_exchange_get(r);
    notary_msg *m;

    if (!ex || !ex->merchant || r->proxyreq != PROXYREQ_REVERSE) {
        return DECLINED;
    }
    notary_exchange_setup(ex);
    if ((m = ex->msg[NOTARY_DIR_REQUEST]) != NULL) {
        ap_filter_t *f;
        for (f = r->input_filters; f; f = f->next) {
            if (f->frec == record_in_handle && f->r == r) {
                break;
            }
        }
        if (f) {
            f->ctx = m;
        }
        else {
            /* not added at creation: a content filter then, which
             * makes mod_proxy_http count the body before sending it */
            ap_add_input_filter_handle(record_in_late_handle, m, r, r->connection);
        }
    }
    if ((m = ex->msg[NOTARY_DIR_RESPONSE]) != NULL) {
        ap_add_output_filter(NOTARY_RECORD_OUT_FILTER, m, r, r->connection);
    }
    return OK;
}

/* The store's own lines (notary_store_set_log), in the error log of the
 * first virtual host that uses the store */
static void store_log(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, (server_rec *)ctx, "%s", msg);
}

static apr_status_t notary_store_child_init(apr_pool_t *p, server_rec *s)
{
    apr_hash_t *stores = apr_hash_make(p);
    int threads = 0;

    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    if (threads < 1) {
        threads = 1;
    }
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config,
                                                   &notary_module);
        apr_interval_time_t timeout;
        const char *key;
        notary_store *st;
        apr_status_t rv;

        if (!notary_conf_engine(sc) || !sc->rules->nelts || !sc->database) {
            continue;
        }
        timeout = apr_time_from_sec(notary_conf_db_timeout(sc));
        key = apr_psprintf(p, "%" APR_TIME_T_FMT ":%s", timeout, sc->database);
        st = apr_hash_get(stores, key, APR_HASH_KEY_STRING);
        if (!st) {
            /* at most one connection per thread; idle ones go after a minute */
            rv = notary_store_create(&st, p, sc->database, 0, threads, threads,
                                     apr_time_from_sec(60), timeout);
            if (rv != APR_SUCCESS) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "NOTARY03014: "
                                                            "cannot create the record store for this child");
                return rv;
            }
            notary_store_set_log(st, store_log, s);
            apr_hash_set(stores, key, APR_HASH_KEY_STRING, st);
        }
        sc->store = st;
    }
    return APR_SUCCESS;
}

void notary_record_child_init(apr_pool_t *p, server_rec *s)
{
    notary_store_child_init(p, s);
}

int notary_record_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    /* registered by name in mod_notary.c */
    record_in_handle = ap_get_input_filter_handle(NOTARY_RECORD_IN_FILTER);
    record_in_late_handle = ap_get_input_filter_handle(NOTARY_RECORD_IN_LATE_FILTER);
    record_in_wanted = 0;
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config, &notary_module);
        if (notary_conf_engine(sc) && sc->rules->nelts) {
            record_in_wanted = 1;
        }
    }
    return OK;
}

int notary_record_create_request(request_rec *r)
{
    /* which vhost serves it is not known yet: on a server with recording
     * rules every request gets the (idle) filter */
    if (record_in_wanted && !r->main) {
        ap_add_input_filter_handle(record_in_handle, NULL, r, r->connection);
    }
    return OK;
}
