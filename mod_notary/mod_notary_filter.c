/* mod_notary glue: recording. Request bodies are matched in an input
 * filter, response bodies in an output filter; a message that matches a
 * NotaryRecord rule is committed to PostgreSQL before its receiver gets
 * the final byte.
 *
 * Request (consumer to merchant): the input filter matches and keeps a copy
 * of the body, and holds back the last byte it has seen until it has seen
 * EOS, so mod_proxy can only write the final byte after we know the body
 * is complete (nothing is held while the Content-Length says more is to
 * come: HTTP_IN sends EOS with the final byte). The commit itself happens in the gate on connection B (it
 * needs the key the merchant presented, and sees the header block exactly
 * as sent) before the brigade carrying the final byte passes.
 *
 * Response (merchant to consumer): the output filter sits between
 * HTTP_HEADER and CHUNK, so it sees the header block as relayed and the
 * body without transfer coding. It holds back everything up to
 * NOTARY_HOLD_MAX (then, once some is released, only the last byte, and
 * none while the Content-Length says more is to come), commits at EOS,
 * then releases the rest. If
 * the commit fails and nothing was released yet, the consumer gets a 503
 * instead; otherwise the connection is aborted before the final byte.
 */
#include "mod_notary.h"

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_connection.h>
#include <ap_mpm.h>
#include <apr_strings.h>
#include <apr_lib.h>

#include <openssl/rand.h>

#include "notary_util.h"

APLOG_USE_MODULE(notary);

#define RECORD_IN_FILTER "NOTARY_RECORD_IN"
#define RECORD_IN_LATE_FILTER "NOTARY_RECORD_IN_LATE"
/* The request filter sits among the protocol filters, above HTTP_IN:
 * added when the request is created (before HTTP_IN), given its work at
 * fixups. There mod_proxy_http still trusts the client's Content-Length
 * (no content filter could resize the body -- ours never does) and streams
 * the body to the merchant, instead of spooling all of it to a temporary
 * file first to count it. */
static ap_filter_rec_t *record_in_handle, *record_in_late_handle;
static int record_in_wanted;
#define RECORD_OUT_FILTER "NOTARY_RECORD_OUT"

typedef struct notary_msg {
    notary_req *nr;
    int dir;
    const notary_ruleset *rs;
    int started;
    notary_match_stream *ms;
    int type_rule;                  /* id of the first matching type rule, -1 */
    int sure;                       /* a rule matched already: the spool hashes
                                     * as bytes come, off the final wait */
    int announced;                  /* counted in notary_store_expect */
    int announce_later;             /* a response: once its request is done */
    notary_spool *spool;
    const char *content_type;
    int status;
    /* header block as relayed: lines without the request/status line */
    char *hbuf; apr_size_t hlen, hcap;
    int hdone;
    apr_off_t clen;                 /* announced length, -1: not known */
    int eos;
    int broken;                     /* the backend broke off (error bucket) */
    int committed;                  /* recorded, or known not to match */
    int failed;
    /* output only */
    apr_bucket_brigade *held_head;  /* the serialised header block */
    apr_bucket_brigade *held;
    apr_bucket_brigade *rest;       /* scratch: the held tail while releasing */
    apr_off_t held_bytes;
    int released;                   /* some bytes went downstream */
    int dropping;                   /* replaced by our error response */
} notary_msg;

/* The exchange's id, drawn when a message of it is first recorded or
 * logged: exchanges that match nothing cost no random bytes. OpenSSL's
 * DRBG; without random bytes there is no unique id, so nothing of this
 * exchange can be recorded ("" is refused by the store). */
static const char *exchange_id(notary_req *nr)
{
    unsigned char rnd[16];

    if (nr->exchange_id) {
        return nr->exchange_id;
    }
    if (RAND_bytes(rnd, sizeof(rnd)) != 1
        && apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, nr->r, NOTARYLOG(03016)
                      "no random bytes for an exchange id: matched messages of "
                      "this exchange will be refused");
        nr->exchange_id = "";
    }
    else {
        nr->exchange_id = notary_hex(nr->r->pool, rnd, sizeof(rnd));
    }
    return nr->exchange_id;
}

/* A message that may be recorded is under way: the store counts it, so
 * that a commit about to start can wait a moment for its record and take
 * it along -- one transaction for several rows when the notary is busy
 * (see notary_store_expect). Withdrawn as soon as the message is known not
 * to be recorded, or at the latest with the request. */
static apr_status_t unannounce(void *data)
{
    notary_msg *m = data;

    if (m->announced) {
        m->announced = 0;
        notary_store_expect(m->nr->sc->store, -1);
    }
    return APR_SUCCESS;
}

static void announce(notary_msg *m)
{
    if (m->nr->sc->store && !m->announced) {
        m->announced = 1;
        notary_store_expect(m->nr->sc->store, 1);
        apr_pool_cleanup_register(m->nr->r->pool, m, unannounce, apr_pool_cleanup_null);
    }
}

/* The message is done with (recorded, or known not to be): withdraw it;
 * a request's end lets its response be announced (see record_setup). */
static void msg_settled(notary_msg *m)
{
    notary_msg *resp = m->nr->msg[NOTARY_DIR_RESPONSE];

    unannounce(m);
    m->announce_later = 0;
    if (m->dir == NOTARY_DIR_REQUEST && resp && resp->announce_later) {
        resp->announce_later = 0;
        if (!resp->started) {
            announce(resp);
        }
    }
}

/* The exchange failed (refused, aborted): neither message will be
 * recorded, so neither may hold up anyone's commit. */
static void msg_failed(notary_msg *m)
{
    int d;

    m->failed = 1;
    for (d = 0; d < 2; d++) {
        notary_msg *o = m->nr->msg[d];
        if (o) {
            unannounce(o);
            o->announce_later = 0;
        }
    }
}

/* A rule has matched: hash the body from now on, off the final wait; and
 * a message not announced at the start (contains rules only) is announced
 * now (one left for its request's end is announced there). */
static void msg_sure(notary_msg *m)
{
    notary_msg *resp = m->nr->msg[NOTARY_DIR_RESPONSE];

    m->sure = 1;
    notary_spool_hash_early(m->spool);
    if (m->dir == NOTARY_DIR_REQUEST && resp && resp->announced && !resp->started) {
        /* its response comes after this record: not to be waited for */
        unannounce(resp);
        resp->announce_later = 1;
    }
    if (!m->announce_later) {
        announce(m);
    }
}

/* The body length a header block announces: Content-Length without
 * Transfer-Encoding, or -1 (chunked, or not valid: HTTP_IN refuses it). */
static apr_off_t body_length(apr_table_t *h)
{
    const char *cl = apr_table_get(h, "Content-Length");
    apr_off_t n;

    if (!cl || apr_table_get(h, "Transfer-Encoding")
        || !ap_parse_strict_length(&n, cl)) {
        return -1;
    }
    return n;
}

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

static const char *dir_name(int dir)
{
    return dir == NOTARY_DIR_REQUEST ? "request" : "response";
}

static int msg_start(notary_msg *m, const char *ctype, const char *cenc,
                     apr_off_t clen, int clen_now)
{
    request_rec *r = m->nr->r;
    int i;
    unsigned flags = 0;

    m->started = 1;
    m->type_rule = -1;
    m->content_type = ctype;
    for (i = 0; i < m->rs->types->nelts; i++) {
        const notary_rule *rule = APR_ARRAY_IDX(m->rs->types, i, const notary_rule *);
        if (notary_media_range_match(rule->range, ctype)) {
            m->type_rule = rule->id;
            break;
        }
    }
    if (m->rs->matcher) {
        if (notary_match_stream_start(&m->ms, r->pool, m->rs->matcher, ctype,
                                      cenc, NOTARY_MAX_DECODED, &flags)
            != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, NOTARYLOG(03001)
                          "cannot start matching the %s body", dir_name(m->dir));
            return 0;
        }
        if (flags & NOTARY_MATCH_F_CHARSET_UNKNOWN) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, NOTARYLOG(03002)
                          "%s body: unknown charset in '%s', matched as UTF-8",
                          dir_name(m->dir), ctype);
        }
        if (flags & NOTARY_MATCH_F_ENCODING_UNSUPPORTED) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, NOTARYLOG(03003)
                          "%s body: Content-Encoding '%s' cannot be decoded, "
                          "matched as transmitted", dir_name(m->dir), cenc);
        }
    }
    if (!m->ms && m->type_rule < 0) {
        m->committed = 1;   /* cannot match: relay untouched, keep nothing */
        msg_settled(m);
        return 1;
    }
    if (notary_spool_create(&m->spool, r->pool, NOTARY_SPOOL_MEMORY,
                            notary_conf_max_record_size(m->nr->sc), NULL)
        != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, NOTARYLOG(03004)
                      "cannot keep the %s body for its record", dir_name(m->dir));
        return 0;
    }
    if (clen > 0) {
        /* one buffer of the announced size, not a doubling series */
        notary_spool_expect(m->spool, clen, clen_now);
    }
    if (m->type_rule >= 0) {
        msg_sure(m);
    }
    return 1;
}

/* The body has ended: flush the matcher and say what it could not see. */
static void msg_finish(notary_msg *m)
{
    unsigned flags;

    if (!m->ms) {
        return;
    }
    notary_match_stream_finish(m->ms);
    flags = notary_match_stream_flags(m->ms);
    if (flags & (NOTARY_MATCH_F_DECODE_LIMIT | NOTARY_MATCH_F_DECODE_ERROR)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, m->nr->r, NOTARYLOG(03015)
                      "%s body: matched only the first %" APR_SIZE_T_FMT
                      " decoded bytes (%s); relayed unchanged",
                      dir_name(m->dir), notary_match_stream_decoded(m->ms),
                      (flags & NOTARY_MATCH_F_DECODE_LIMIT)
                          ? "decoding limit reached"
                          : notary_match_stream_error(m->ms)
                                ? notary_match_stream_error(m->ms) : "undecodable");
    }
    if (flags & NOTARY_MATCH_F_JSON_INVALID) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, m->nr->r, NOTARYLOG(03301)
                      "%s body: not valid JSON (Content-Type '%s'); matched as "
                      "transmitted and with its strings unescaped as far as they go",
                      dir_name(m->dir), m->content_type ? m->content_type : "");
    }
    if (flags & NOTARY_MATCH_F_MULTIPART_INVALID) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, m->nr->r, NOTARYLOG(03302)
                      "%s body: malformed multipart (Content-Type '%s': no boundary, "
                      "part headers over 8 KiB, or never closed); matched as transmitted "
                      "and its parts as far as they could be read",
                      dir_name(m->dir), m->content_type ? m->content_type : "");
    }
}

/* The rule that matched (first in httpd.conf order), or NULL. */
static const notary_rule *msg_rule(notary_msg *m)
{
    int id = m->type_rule;

    if (m->ms) {
        int c = notary_match_stream_first(m->ms);
        if (c >= 0 && (id < 0 || c < id)) {
            id = c;
        }
    }
    return id >= 0 ? m->rs->by_id[id] : NULL;
}

static apr_status_t msg_feed(notary_msg *m, const char *d, apr_size_t len)
{
    apr_status_t rv;

    if (m->committed || !len) {
        return APR_SUCCESS;
    }
    if (m->ms) {
        notary_match_stream_feed(m->ms, d, len);
        if (!m->sure && notary_match_stream_first(m->ms) >= 0) {
            /* from here on it will be recorded: hash what is kept so far,
             * then this piece with the rest as it comes */
            msg_sure(m);
        }
    }
    rv = notary_spool_write(m->spool, d, len);
    if (m->announced && notary_spool_over_limit(m->spool)) {
        unannounce(m);   /* too large: no record will come */
    }
    return rv;
}

/* Collect the header block; returns how many bytes of d belong to it.
 * The block ends with an empty line, "\r\n\r\n", which may straddle
 * the pieces it comes in. */
static apr_size_t msg_headers(notary_msg *m, const char *d, apr_size_t len)
{
    apr_size_t take = len, at;
    const char *nl, *p = d;

    while (!m->hdone && (nl = memchr(p, '\n', len - (apr_size_t)(p - d))) != NULL) {
        char before[3];
        apr_size_t k;
        int have = 1;

        at = (apr_size_t)(nl - d);
        for (k = 1; k <= 3 && have; k++) {
            if (at >= k) {
                before[3 - k] = d[at - k];
            }
            else if (m->hlen >= k - at) {
                before[3 - k] = m->hbuf[m->hlen - (k - at)];
            }
            else {
                have = 0;
            }
        }
        if (have && !memcmp(before, "\r\n\r", 3)) {
            take = at + 1;
            m->hdone = 1;
        }
        p = nl + 1;
    }
    /* no cap of our own: the block is what httpd already holds and relays,
     * and a cut would push header bytes into the body */
    notary_buf_append(m->nr->r->pool, &m->hbuf, &m->hlen, &m->hcap, 1024, 0, d, take);
    return take;
}

/* "Name: value" lines joined by CRLF, without the first line and the
 * terminating empty line. */
static void header_block(notary_msg *m, const char **h, apr_size_t *len)
{
    const char *start = m->hbuf, *end = m->hbuf + m->hlen;
    const char *nl;

    *h = "";
    *len = 0;
    if (!m->hbuf) {
        return;
    }
    nl = memchr(start, '\n', m->hlen);
    if (!nl) {
        return;
    }
    start = nl + 1;
    if (end - start >= 2 && end[-1] == '\n' && end[-2] == '\r') {
        end -= 2;
    }
    if (end - start >= 2 && end[-1] == '\n' && end[-2] == '\r') {
        end -= 2;
    }
    if (end > start) {
        *h = start;
        *len = end - start;
    }
}

static int commit(notary_msg *m, const notary_rule *rule)
{
    notary_req *nr = m->nr;
    request_rec *r = nr->r;
    notary_record rec;
    unsigned char sha[32];
    const char *body, *err = NULL;
    apr_size_t blen;
    apr_status_t rv;

    memset(&rec, 0, sizeof(rec));
    /* a body in the temporary file is streamed and hashed by the store */
    if ((rv = notary_spool_body(m->spool, &body, &blen, &rec.body_file, sha)) != APR_SUCCESS) {
        unannounce(m);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, NOTARYLOG(03005)
                      "cannot read back the %s body kept for its record",
                      dir_name(m->dir));
        return 0;
    }
    rec.recorded_at = apr_time_now();
    rec.direction = dir_name(m->dir);
    rec.merchant = nr->merchant->name;
    {
        /* the consumer sends the request, the merchant the response */
        const unsigned char *key[2] = { nr->consumer_spki, nr->merchant_spki };
        const unsigned char *md[2] = { nr->consumer_spki_sha256, nr->merchant_spki_sha256 };
        apr_size_t len[2] = { nr->consumer_spki_len, nr->merchant_spki_len };
        int from = m->dir == NOTARY_DIR_REQUEST ? 0 : 1;

        rec.sender_key = key[from];
        rec.sender_key_len = len[from];
        rec.sender_key_sha256 = md[from];
        rec.receiver_key = key[!from];
        rec.receiver_key_len = len[!from];
        rec.receiver_key_sha256 = md[!from];
    }
    if (m->dir == NOTARY_DIR_RESPONSE) {
        rec.status = m->status;
    }
    rec.rule = rule->as_written;
    rec.method = r->method;
    rec.uri = nr->backend_uri;
    rec.content_type = m->content_type;
    header_block(m, &rec.headers, &rec.headers_len);
    rec.body = body;
    rec.body_len = blen;
    rec.body_sha256 = rec.body_file ? NULL : sha;
    rec.exchange_id = exchange_id(nr);
    if (!nr->sc->store) {
        err = "no record store in this process";
        rv = APR_EGENERAL;
    }
    else {
        /* the store takes it off the count as it queues it */
        rec.announced = m->announced;
        m->announced = 0;
        rv = notary_store_insert(nr->sc->store, &rec, r->pool, &err);
    }
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, NOTARYLOG(03006)
                      "%s of exchange %s matched rule '%s' but its record was "
                      "not committed: %s; the exchange fails (merchant %s)",
                      rec.direction, exchange_id(nr), rule->as_written,
                      err ? err : "unknown error", nr->merchant->name);
        return 0;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, NOTARYLOG(03007)
                  "recorded %s of exchange %s: rule '%s', %" APR_SIZE_T_FMT
                  " bytes, merchant %s", rec.direction, exchange_id(nr),
                  rule->as_written, blen, nr->merchant->name);
    m->committed = 1;
    return 1;
}

static void close_backend(notary_req *nr)
{
    /* the merchant got part of a message that will not complete: the
     * connection must not carry anything else */
    if (nr->backend_c) {
        nr->backend_c->keepalive = AP_CONN_CLOSE;
        nr->backend_c->aborted = 1;
    }
}

/* A matched message is too large to record: refuse it. */
static int too_large(notary_msg *m, const notary_rule *rule)
{
    notary_req *nr = m->nr;

    m->failed = 1;
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, nr->r, NOTARYLOG(03008)
                  "%s of exchange %s matched rule '%s' but is larger than "
                  "NotaryMaxRecordSize (%" APR_OFF_T_FMT " bytes): refused, "
                  "never recorded in part", dir_name(m->dir), exchange_id(nr),
                  rule->as_written, notary_conf_max_record_size(nr->sc));
    return m->dir == NOTARY_DIR_REQUEST ? HTTP_REQUEST_ENTITY_TOO_LARGE
                                        : HTTP_BAD_GATEWAY;
}

/* ---------------------------------------------------------------------
 * Request bodies: input filter.
 */
static apr_status_t refuse_request(notary_msg *m, int status, const char *reason)
{
    msg_failed(m);
    notary_refuse(m->nr, m->nr->r, status, "03009", reason);
    close_backend(m->nr);
    return APR_EGENERAL;
}

static apr_status_t record_in(ap_filter_t *f, apr_bucket_brigade *bb,
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
    if (m->failed) {
        return APR_EGENERAL;
    }
    if (!m->started) {
        m->held = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->clen = body_length(r->headers_in);
        if (!msg_start(m, apr_table_get(r->headers_in, "Content-Type"),
                       apr_table_get(r->headers_in, "Content-Encoding"),
                       /* taken once 8 KiB came: a client announcing a large
                        * body and stalling must not pin a buffer that size */
                       m->clen, 0)) {
            return refuse_request(m, HTTP_INTERNAL_SERVER_ERROR,
                                  "the request could not be examined for recording");
        }
        if (m->committed) {
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
            if ((rv = msg_feed(m, d, len)) != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, NOTARYLOG(03010)
                              "cannot keep the request body for its record");
                return refuse_request(m, HTTP_INTERNAL_SERVER_ERROR,
                                      "the request could not be kept for its record");
            }
        }
        if (m->eos) {
            msg_finish(m);
        }
        rule = msg_rule(m);
        if (rule && notary_spool_over_limit(m->spool)) {
            int st = too_large(m, rule);
            return refuse_request(m, st, "the request matched a recording "
                                  "rule but is larger than the notary may "
                                  "record (NotaryMaxRecordSize)");
        }
        /* previously held bytes go first */
        APR_BRIGADE_PREPEND(bb, m->held);
        if (m->eos) {
            if (!rule) {
                m->committed = 1;       /* nothing to record */
                msg_settled(m);
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
        }
        if (!APR_BRIGADE_EMPTY(bb)) {
            return APR_SUCCESS;
        }
        if (block == APR_NONBLOCK_READ) {
            return APR_EAGAIN;
        }
    }
}

/* Called by the gate on connection B for every brigade of an admitted
 * request, before it passes. */
int notary_record_gate(notary_req *nr, apr_bucket_brigade *bb)
{
    notary_msg *m = nr->msg[NOTARY_DIR_REQUEST];
    apr_bucket *e;
    const notary_rule *rule;

    if (!m || m->committed) {
        return 0;
    }
    if (m->failed) {
        return nr->refusal_status ? nr->refusal_status : HTTP_SERVICE_UNAVAILABLE;
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
        msg_headers(m, d, len);
    }
    if (!m->eos || !m->hdone) {
        return 0;
    }
    rule = msg_rule(m);
    if (!rule) {
        m->committed = 1;
        msg_settled(m);
        return 0;
    }
    if (!commit(m, rule)) {
        msg_failed(m);
        notary_refuse(nr, nr->r, HTTP_SERVICE_UNAVAILABLE, "03011",
                      "the request matched a recording rule and its record "
                      "could not be committed");
        close_backend(nr);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    msg_settled(m);
    return 0;
}

/* ---------------------------------------------------------------------
 * Response bodies: output filter between HTTP_HEADER and CHUNK.
 */
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
    m->dropping = 1;
    r->status = status;
    c->keepalive = AP_CONN_CLOSE;
    body = apr_pstrcat(r->pool, "notary refused the response: ", reason, "\n",
                       NULL);
    head = apr_psprintf(r->pool, "HTTP/1.1 %s\r\nContent-Type: text/plain; "
                        "charset=utf-8\r\nContent-Length: %" APR_SIZE_T_FMT
                        "\r\nConnection: close\r\n\r\n",
                        ap_get_status_line(status), strlen(body));
    bb = apr_brigade_create(r->pool, c->bucket_alloc);
    apr_brigade_puts(bb, NULL, NULL, head);
    apr_brigade_puts(bb, NULL, NULL, body);
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    return ap_pass_brigade(c->output_filters, bb);
}

static apr_status_t abort_response(ap_filter_t *f, notary_msg *m)
{
    msg_failed(m);
    apr_brigade_cleanup(m->held_head);
    apr_brigade_cleanup(m->held);
    m->dropping = 1;
    f->c->keepalive = AP_CONN_CLOSE;
    f->c->aborted = 1;
    return APR_ECONNABORTED;
}

static apr_status_t fail_response(ap_filter_t *f, notary_msg *m, int status,
                                  const char *reason)
{
    msg_failed(m);
    /* connection A speaks HTTP/1.x (notary_translate): our own raw answer
     * fits as long as nothing of the response went out */
    if (!m->released) {
        return replace_response(f, m, status, reason);
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, f->r, NOTARYLOG(03012)
                  "response of exchange %s already partly sent: connection "
                  "aborted before its final byte", exchange_id(m->nr));
    return abort_response(f, m);
}

/* Pass what we hold. HTTP_HEADER added CHUNK after handing us the header
 * block, so held header bytes must go below CHUNK, the body through it. */
static apr_status_t release(ap_filter_t *f, notary_msg *m, apr_bucket_brigade *body)
{
    apr_status_t rv;

    if (!APR_BRIGADE_EMPTY(m->held_head)) {
        ap_filter_t *next = f->next;
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

static apr_status_t record_out(ap_filter_t *f, apr_bucket_brigade *bb)
{
    notary_msg *m = f->ctx;
    request_rec *r = f->r;
    apr_bucket *e, *next;
    apr_status_t rv;
    const notary_rule *rule;

    if (m->dropping) {
        apr_brigade_cleanup(bb);
        return APR_SUCCESS;
    }
    if (!m->started) {
        if (!m->nr->admitted || !m->nr->from_backend || r->header_only) {
            /* not a message from the merchant (e.g. our own refusal), or
             * no message body at all (HEAD) */
            msg_settled(m);
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
        m->status = r->status;
        m->held = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->held_head = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->rest = apr_brigade_create(r->pool, f->c->bucket_alloc);
        m->clen = body_length(r->headers_out);
        if (!msg_start(m, r->content_type ? r->content_type
                                          : apr_table_get(r->headers_out, "Content-Type"),
                       apr_table_get(r->headers_out, "Content-Encoding"),
                       m->clen, 1)) {
            return fail_response(f, m, HTTP_INTERNAL_SERVER_ERROR,
                                 "the response could not be examined for recording");
        }
        if (m->committed) {
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
                hl = msg_headers(m, d, len);
                in_head = 1;
                if (hl < len) {
                    /* header and body in one bucket: the body part waits */
                    apr_bucket_split(e, hl);
                    next = APR_BUCKET_NEXT(e);
                }
            }
            else if ((rv = msg_feed(m, d, len)) != APR_SUCCESS) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, NOTARYLOG(03013)
                              "cannot keep the response body for its record");
                return fail_response(f, m, HTTP_SERVICE_UNAVAILABLE,
                                     "the response could not be kept for its record");
            }
            m->held_bytes += in_head ? 0 : len;
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
        msg_finish(m);
    }
    rule = msg_rule(m);
    if (rule && m->broken) {
        /* never recorded as if whole, never delivered as if whole */
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, NOTARYLOG(03017)
                      "response of exchange %s matched rule '%s' but the merchant's "
                      "backend broke off before its end: not recorded, connection "
                      "aborted", exchange_id(m->nr), rule->as_written);
        return abort_response(f, m);
    }
    if (rule && notary_spool_over_limit(m->spool)) {
        return fail_response(f, m, too_large(m, rule),
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
            m->held_bytes = 0;
            return rv;
        }
        /* release all but the last data byte */
        if ((rv = split_last_byte(m->held, &tail)) != APR_SUCCESS || !tail) {
            return rv;
        }
        apr_brigade_split_ex(m->held, tail, m->rest);
        rv = release(f, m, m->held);
        APR_BRIGADE_CONCAT(m->held, m->rest);
        m->held_bytes = 1;
        return rv;
    }

    if (rule && !commit(m, rule)) {
        return fail_response(f, m, HTTP_SERVICE_UNAVAILABLE,
                             "the response matched a recording rule and its "
                             "record could not be committed");
    }
    m->committed = 1;
    msg_settled(m);     /* no rule matched (a record took it off already) */
    rv = release(f, m, m->held);
    ap_remove_output_filter(f);
    return rv;
}

/* ---------------------------------------------------------------------
 * Set-up per request and per child.
 */
void notary_record_abandon(notary_req *nr)
{
    int d;

    for (d = 0; d < 2; d++) {
        if (nr->msg[d]) {
            msg_failed(nr->msg[d]);
            return;   /* msg_failed covers both directions */
        }
    }
}

void notary_record_setup(notary_req *nr)
{
    request_rec *r = nr->r;
    int d;

    /* a subrequest relays nothing: nothing of it to record */
    if (r->main || (!nr->merchant->rules[0] && !nr->merchant->rules[1])) {
        return;
    }
    for (d = 0; d < 2; d++) {
        notary_msg *m;
        if (!nr->merchant->rules[d]) {
            continue;
        }
        m = apr_pcalloc(r->pool, sizeof(*m));
        m->nr = nr;
        m->dir = d;
        m->rs = nr->merchant->rules[d];
        nr->msg[d] = m;
        /* Announced now only where a type rule may match: with contains
         * rules alone, at the match (msg_sure), so that exchanges that
         * match nothing never hold up a commit. A request without a body
         * has nothing to record; a response whose request may be recorded
         * comes only after that record, so it is announced then (a commit
         * must not wait for its own exchange's response). */
        if (m->rs->types->nelts) {
            if (d == NOTARY_DIR_REQUEST) {
                if (body_length(r->headers_in) != 0) {
                    announce(m);
                }
            }
            else if (nr->msg[NOTARY_DIR_REQUEST] && nr->msg[NOTARY_DIR_REQUEST]->announced) {
                m->announce_later = 1;
            }
            else {
                announce(m);
            }
        }
        if (d == NOTARY_DIR_REQUEST) {
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
        else {
            ap_add_output_filter(RECORD_OUT_FILTER, m, r, r->connection);
        }
    }
}

apr_status_t notary_store_child_init(apr_pool_t *p, server_rec *s)
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
                ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, NOTARYLOG(03014)
                             "cannot create the record store for this child");
                return rv;
            }
            apr_hash_set(stores, key, APR_HASH_KEY_STRING, st);
        }
        sc->store = st;
    }
    return APR_SUCCESS;
}

static int record_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    record_in_wanted = 0;
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config, &notary_module);
        if (notary_conf_engine(sc) && sc->rules->nelts) {
            record_in_wanted = 1;
        }
    }
    return OK;
}

static int record_create_request(request_rec *r)
{
    /* which vhost serves it is not known yet: on a server with recording
     * rules every request gets the (idle) filter */
    if (record_in_wanted && !r->main) {
        ap_add_input_filter_handle(record_in_handle, NULL, r, r->connection);
    }
    return OK;
}

void notary_filter_register_hooks(apr_pool_t *p)
{
    record_in_handle = ap_register_input_filter(RECORD_IN_FILTER, record_in, NULL,
                                                AP_FTYPE_PROTOCOL);
    record_in_late_handle = ap_register_input_filter(RECORD_IN_LATE_FILTER, record_in,
                                                     NULL, AP_FTYPE_CONTENT_SET);
    ap_hook_post_config(record_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_create_request(record_create_request, NULL, NULL, APR_HOOK_MIDDLE);
    /* after HTTP_HEADER (PROTOCOL), before CHUNK (TRANSCODE) */
    ap_register_output_filter(RECORD_OUT_FILTER, record_out, NULL,
                              (ap_filter_type)(AP_FTYPE_PROTOCOL + 1));
}
