/* notary_store_copy: a record as the database takes it -- checked, its
 * fields encoded as statement parameters, or as one row of a binary COPY
 * whose body streams from a file. Uses the I/O layer only.
 * Layers: notary_store_int.h.
 */
#include <string.h>

#include <apr_strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "notary_leaf.h"
#include "notary_store_int.h"

/* PostgreSQL's epoch (2000-01-01 UTC) in apr_time_t (usec since 1970) */
#define PG_EPOCH_USEC APR_INT64_C(946684800000000)

/* A body kept in a file streams in through COPY: libpq would otherwise
 * hold all of it in the child as one parameter. */
static const char copy_sql[] =
    "BEGIN; COPY notary.records " ROW_COLUMNS " FROM STDIN (FORMAT binary)";

const Oid notary_store_row_types[NPARAMS] = {
    OID_TIMESTAMPTZ, OID_TEXT, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT, OID_TEXT,
    OID_TEXT, OID_INT4, OID_TEXT, OID_BYTEA, OID_BYTEA, OID_BYTEA, OID_TEXT,
    OID_BYTEA, OID_BYTEA, OID_BYTEA
};
/* bytea, int4 and timestamptz go binary; text as text */
const int notary_store_row_formats[NPARAMS] = {
    1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 1
};

static void put_be64(unsigned char *b, apr_uint64_t v)
{
    put_be32(b, (apr_uint32_t)(v >> 32));
    put_be32(b + 4, (apr_uint32_t)v);
}

const char *notary_store_record_incomplete(const notary_record *rec)
{
    if (!rec->direction || (strcmp(rec->direction, "request") && strcmp(rec->direction, "response")))
        return "direction is not 'request' or 'response'";
    if (rec->recorded_at <= 0) return "recorded_at is not set";
    if (!rec->merchant) return "merchant is missing";
    if (!rec->sender_key || !rec->sender_key_len) return "sender_key is missing";
    if (!rec->receiver_key || !rec->receiver_key_len) return "receiver_key is missing";
    if (!rec->rule) return "rule is missing";
    if (!rec->method) return "method is missing";
    if (!rec->uri) return "uri is missing";
    if (!rec->exchange_id || !*rec->exchange_id) return "exchange_id is missing";
    if (!rec->body_sha256 && !rec->body_file) return "body_sha256 is missing";
    if (!rec->body && !rec->body_file && rec->body_len) return "body is missing";
    if (!rec->headers && rec->headers_len) return "headers are missing";
    if (!rec->token && rec->token_len) return "token is missing";
    if (rec->body_len > 0x7fffffff || rec->headers_len > 0x7fffffff
        || rec->sender_key_len > 0x7fffffff || rec->receiver_key_len > 0x7fffffff
        || rec->token_len > 0x7fffffff)
        return "a field is larger than libpq can send (2 GB)";
    return NULL;
}

int notary_store_leaf(store_params *sp, apr_pool_t *p)
{
    const notary_record *rec = sp->rec;
    notary_leaf_record lr;
    notary_leaf_entry e;
    int req = !strcmp(rec->direction, "request");

    /* the row exactly as stored: the time in µs (timestamptz keeps µs),
     * NULL headers stored as empty, the keys and the body by digest */
    memset(&lr, 0, sizeof(lr));
    lr.direction = req ? NOTARY_LEAF_REQUEST : NOTARY_LEAF_RESPONSE;
    lr.recorded_at_us = (apr_int64_t)rec->recorded_at;
    lr.status = req ? 0 : rec->status;
    lr.salt = sp->salt;
    lr.sender_key_sha256 = sp->key_md[0];
    lr.receiver_key_sha256 = sp->key_md[1];
    notary_leaf_meta_set(&lr.meta.merchant, &lr.meta.merchant_len, rec->merchant);
    notary_leaf_meta_set(&lr.meta.rule, &lr.meta.rule_len, rec->rule);
    notary_leaf_meta_set(&lr.meta.method, &lr.meta.method_len, rec->method);
    notary_leaf_meta_set(&lr.meta.uri, &lr.meta.uri_len, rec->uri);
    notary_leaf_meta_set(&lr.meta.content_type, &lr.meta.content_type_len, rec->content_type);
    notary_leaf_meta_set(&lr.meta.exchange_id, &lr.meta.exchange_id_len, rec->exchange_id);
    lr.headers = (const unsigned char *)sp->values[10];
    lr.headers_len = (apr_size_t)sp->lengths[10];
    lr.body_sha256 = (const unsigned char *)sp->values[P_SHA];
    lr.token_sha256 = sp->has_token ? sp->token_md : NULL; /* NULL: 32 zero bytes */
    if (!lr.body_sha256 || notary_leaf_from_record(p, &lr, &e) != 0) {
        return -1;
    }
    notary_leaf_encode(&e, sp->entry);
    notary_leaf_hash(&e, sp->leaf);
    sp->values[P_LEAF] = (const char *)sp->leaf;
    sp->lengths[P_LEAF] = 32;
    return 0;
}

apr_status_t notary_store_build_params(const notary_record *rec, store_params *sp,
                                       apr_pool_t *p, const char **err)
{
    unsigned int md_len;

    /* digests the caller passes are checked again by the database */
    if (rec->sender_key_sha256) {
        memcpy(sp->key_md[0], rec->sender_key_sha256, 32);
    }
    else if (!EVP_Digest(rec->sender_key, rec->sender_key_len, sp->key_md[0], &md_len,
                         EVP_sha256(), NULL)) {
        *err = "record not stored: SHA-256 of a key failed (OpenSSL)";
        return APR_EGENERAL;
    }
    if (rec->receiver_key_sha256) {
        memcpy(sp->key_md[1], rec->receiver_key_sha256, 32);
    }
    else if (!EVP_Digest(rec->receiver_key, rec->receiver_key_len, sp->key_md[1], &md_len,
                         EVP_sha256(), NULL)) {
        *err = "record not stored: SHA-256 of a key failed (OpenSSL)";
        return APR_EGENERAL;
    }
    sp->key_der[0] = rec->sender_key;
    sp->key_len[0] = (int)rec->sender_key_len;
    sp->key_der[1] = rec->receiver_key;
    sp->key_len[1] = (int)rec->receiver_key_len;
    put_be64(sp->ts, (apr_uint64_t)(rec->recorded_at - PG_EPOCH_USEC));
    put_be32(sp->status, (apr_uint32_t)rec->status);

    memset(sp->lengths, 0, sizeof(sp->lengths));
    sp->values[P_LEAF] = sp->values[P_TOKEN] = NULL;
    sp->values[0] = (const char *)sp->ts;
    sp->lengths[0] = 8;
    sp->values[1] = rec->direction;
    sp->values[2] = rec->merchant;
    sp->values[3] = (const char *)sp->key_md[0];
    sp->lengths[3] = 32;
    sp->values[4] = (const char *)sp->key_md[1];
    sp->lengths[4] = 32;
    sp->values[5] = rec->rule;
    sp->values[6] = rec->method;
    sp->values[7] = rec->uri;
    sp->values[8] = rec->status ? (const char *)sp->status : NULL;
    sp->lengths[8] = 4;
    sp->values[9] = rec->content_type;
    sp->values[10] = rec->headers ? rec->headers : "";
    sp->lengths[10] = (int)rec->headers_len;
    sp->values[P_BODY] = rec->body ? rec->body : "";
    sp->lengths[P_BODY] = (int)rec->body_len;
    sp->values[P_SHA] = (const char *)rec->body_sha256;
    sp->lengths[P_SHA] = 32;
    sp->values[P_XID] = rec->exchange_id;

    /* the leaf: a fresh salt, so that a leaf of a short, guessable
     * message reveals nothing (docs/evidence.md) */
    sp->rec = rec;
    if (RAND_bytes(sp->salt, (int)sizeof(sp->salt)) != 1) {
        *err = "record not stored: no random salt (OpenSSL RAND_bytes)";
        return APR_EGENERAL;
    }
    sp->values[P_SALT] = (const char *)sp->salt;
    sp->lengths[P_SALT] = 16;
    sp->has_token = rec->token != NULL;
    if (sp->has_token) {
        if (!EVP_Digest(rec->token, rec->token_len, sp->token_md, &md_len, EVP_sha256(), NULL)) {
            *err = "record not stored: SHA-256 of the admission token failed (OpenSSL)";
            return APR_EGENERAL;
        }
        sp->token = rec->token;
        sp->token_len = (int)rec->token_len;
        sp->token_jti = rec->token_jti;
        put_be64(sp->token_exp, (apr_uint64_t)(rec->token_exp * APR_INT64_C(1000000)
                                               - PG_EPOCH_USEC));
        sp->values[P_TOKEN] = (const char *)sp->token_md;
        sp->lengths[P_TOKEN] = 32;
    }
    /* a body in a file without its digest: the COPY hashes it, then the leaf */
    if (sp->values[P_SHA] && notary_store_leaf(sp, p) != 0) {
        *err = "record not stored: its leaf entry cannot be built";
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

/* Send bytes of a COPY; libpq's buffer is flushed each time, so it never
 * holds more than about one chunk. */
static step_t copy_put(PGconn *conn, const char *d, apr_size_t len, apr_time_t deadline)
{
    int rc, w, readable;

    while ((rc = PQputCopyData(conn, d, (int)len)) == 0) {
        /* non-blocking and full: wait until the socket takes more */
        w = notary_store_wait_socket(conn, 1, deadline, &readable);
        if (w == 0) {
            return STEP_TIMEOUT;
        }
        if (w < 0 || (readable && !PQconsumeInput(conn)) || PQflush(conn) < 0) {
            return STEP_CONN_LOST;
        }
    }
    if (rc < 0) {
        return STEP_CONN_LOST;
    }
    return notary_store_flush_out(conn, deadline);
}

/* Start COPY ... FROM STDIN: STEP_OK once the server waits for data. On a
 * server error *res holds it (caller clears), the connection is idle. */
static step_t copy_begin(PGconn *conn, apr_time_t deadline, PGresult **res)
{
    PGresult *r;
    step_t step;

    *res = NULL;
    if (!PQsendQuery(conn, copy_sql)) {
        return STEP_CONN_LOST;
    }
    if ((step = notary_store_flush_out(conn, deadline)) != STEP_OK) {
        return step;
    }
    for (;;) {
        if ((step = notary_store_await_input(conn, deadline)) != STEP_OK) {
            return step;
        }
        r = PQgetResult(conn);
        if (!r) {
            return *res ? STEP_SERVER_ERROR : STEP_CONN_LOST;
        }
        if (!*res && PQresultStatus(r) == PGRES_COPY_IN) {
            PQclear(r);
            return STEP_OK;
        }
        if (!*res && PQresultStatus(r) == PGRES_COMMAND_OK) {
            PQclear(r); /* BEGIN */
            continue;
        }
        if (!*res) {
            *res = r; /* the error; read on to the end of it */
        }
        else {
            PQclear(r);
        }
    }
}

static char *put_field_len(char *b, apr_int32_t len)
{
    put_be32((unsigned char *)b, (apr_uint32_t)len);
    return b + 4;
}

/* One row in COPY's binary format: the fields before the body in one
 * piece, the body from the file in chunks (hashed on the way if the
 * caller did not), then the digest, the exchange id and the trailer. */
static step_t copy_row(PGconn *conn, store_params *sp, apr_file_t *file, apr_off_t len,
                       char *buf, apr_time_t deadline, const char **why, apr_pool_t *errpool)
{
    static const char sig[] = "PGCOPY\n\377\r\n"; /* 11 bytes with the NUL */
    apr_size_t flen[P_BODY], need = 11 + 4 + 4 + 2 + 4, n, idlen;
    apr_off_t off = 0, left = len;
    unsigned int md_len;
    EVP_MD_CTX *md = NULL;
    apr_status_t rv;
    step_t step;
    char *head, *b;
    int i;

    for (i = 0; i < P_BODY; i++) {
        flen[i] = !sp->values[i] ? 0 : notary_store_row_formats[i] ? (apr_size_t)sp->lengths[i]
                                                                   : strlen(sp->values[i]);
        need += 4 + flen[i];
    }
    /* the header block may be long; the rest is short */
    head = need <= COPY_CHUNK ? buf : apr_palloc(errpool, need);
    /* signature, flags, no header extension; then the field count */
    memcpy(head, sig, 11);
    b = put_field_len(head + 11, 0);
    b = put_field_len(b, 0);
    b[0] = 0;
    b[1] = NPARAMS;
    b += 2;
    for (i = 0; i < P_BODY; i++) {
        if (!sp->values[i]) {
            b = put_field_len(b, -1);
            continue;
        }
        b = put_field_len(b, (apr_int32_t)flen[i]);
        memcpy(b, sp->values[i], flen[i]);
        b += flen[i];
    }
    b = put_field_len(b, (apr_int32_t)len);
    if ((step = copy_put(conn, head, b - head, deadline)) != STEP_OK) {
        return step;
    }

    if ((rv = apr_file_seek(file, APR_SET, &off)) != APR_SUCCESS) {
        *why = apr_psprintf(errpool, "cannot rewind the kept body: %pm", &rv);
        return STEP_SERVER_ERROR;
    }
    if (!sp->values[P_SHA] && (!(md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)) {
        EVP_MD_CTX_free(md);
        *why = "SHA-256 of the body failed (OpenSSL)";
        return STEP_SERVER_ERROR;
    }
    step = STEP_OK;
    while (left > 0 && step == STEP_OK) {
        n = left > COPY_CHUNK ? COPY_CHUNK : (apr_size_t)left;
        if ((rv = apr_file_read_full(file, buf, n, &n)) != APR_SUCCESS) {
            *why = APR_STATUS_IS_EOF(rv)
                     ? apr_psprintf(errpool, "cannot read the kept body back: it ends after %" APR_OFF_T_FMT " of its %" APR_OFF_T_FMT " bytes",
                                    len - left + (apr_off_t)n, len)
                     : apr_psprintf(errpool, "cannot read the kept body back: %pm", &rv);
            step = STEP_SERVER_ERROR;
            break;
        }
        if (md && EVP_DigestUpdate(md, buf, n) != 1) {
            *why = "SHA-256 of the body failed (OpenSSL)";
            step = STEP_SERVER_ERROR;
            break;
        }
        left -= n;
        step = copy_put(conn, buf, n, deadline);
    }
    if (md) {
        if (step == STEP_OK) {
            if (EVP_DigestFinal_ex(md, sp->body_md, &md_len) != 1 || md_len != 32) {
                *why = "SHA-256 of the body failed (OpenSSL)";
                step = STEP_SERVER_ERROR;
            }
            else {
                /* also what a retry check compares */
                sp->values[P_SHA] = (const char *)sp->body_md;
                if (notary_store_leaf(sp, errpool) != 0) {
                    *why = "its leaf entry cannot be built";
                    step = STEP_SERVER_ERROR;
                }
            }
        }
        EVP_MD_CTX_free(md);
    }
    if (step != STEP_OK) {
        return step;
    }

    idlen = strlen(sp->values[P_XID]);
    b = head = idlen + 200 <= COPY_CHUNK ? buf : apr_palloc(errpool, idlen + 200);
    b = put_field_len(b, 32);
    memcpy(b, sp->values[P_SHA], 32);
    b += 32;
    b = put_field_len(b, (apr_int32_t)idlen);
    memcpy(b, sp->values[P_XID], idlen);
    b += idlen;
    /* the leaf columns: salt, leaf_hash, token_sha256 (or NULL) */
    for (i = P_SALT; i < NPARAMS; i++) {
        if (!sp->values[i]) {
            b = put_field_len(b, -1);
            continue;
        }
        b = put_field_len(b, (apr_int32_t)sp->lengths[i]);
        memcpy(b, sp->values[i], sp->lengths[i]);
        b += sp->lengths[i];
    }
    b[0] = (char)0xff;
    b[1] = (char)0xff; /* file trailer: -1 */
    b += 2;
    return copy_put(conn, head, b - head, deadline);
}

/* Leave the COPY's transaction block after it went wrong: `step` once the
 * connection is idle again, else how that failed (the caller drops it). */
static step_t copy_rollback(PGconn *conn, apr_time_t deadline, step_t step)
{
    PGresult *r = NULL;
    step_t s;

    if (!PQsendQuery(conn, "ROLLBACK")) {
        return STEP_CONN_LOST;
    }
    s = notary_store_finish_command(conn, deadline, &r);
    if (r) {
        PQclear(r);
    }
    return s == STEP_OK ? step : s == STEP_TIMEOUT ? STEP_TIMEOUT
                                                   : STEP_CONN_LOST;
}

/* COPY of one row in a transaction of its own. We send its COMMIT only
 * with a tenth of the time still to go (the 90 % rule's counterpart for
 * COPY, notary_store_int.h): until then nothing can commit, and
 * a connection we drop rolls it back. So a COPY held up after its row went
 * in (the unique index waiting for another transaction, a large row's
 * TOAST) is not committed once its message was refused. On every failure
 * the server answered, the transaction is rolled back here: the
 * connection is idle again. */
step_t notary_store_copy(PGconn *conn, store_params *sp, apr_file_t *file, apr_off_t len,
                         char *buf, apr_time_t deadline, int *in_doubt, PGresult **res,
                         const char **why, apr_pool_t *errpool)
{
    apr_time_t began = apr_time_now();
    step_t step;

    if ((step = copy_begin(conn, deadline, res)) != STEP_OK) {
        return step == STEP_SERVER_ERROR ? copy_rollback(conn, deadline, step) : step;
    }
    step = copy_row(conn, sp, file, len, buf, deadline, why, errpool);
    if (step == STEP_SERVER_ERROR) {
        /* our side failed: abandon the COPY, the server rolls it back */
        if (PQputCopyEnd(conn, *why) != 1) {
            return STEP_CONN_LOST;
        }
        notary_store_finish_command(conn, deadline, res);
        if (*res) {
            PQclear(*res);
            *res = NULL;
        }
        return copy_rollback(conn, deadline, STEP_SERVER_ERROR);
    }
    if (step != STEP_OK) {
        return step;
    }
    if (PQputCopyEnd(conn, NULL) != 1) {
        return STEP_CONN_LOST;
    }
    step = notary_store_finish_command(conn, deadline, res);
    if (step == STEP_SERVER_ERROR) {
        return copy_rollback(conn, deadline, step);
    }
    if (step != STEP_OK) {
        return step;
    }
    PQclear(*res);
    *res = NULL;
    if (deadline - apr_time_now() < (deadline - began) / 10) {
        return copy_rollback(conn, deadline, STEP_LATE);
    }
    if (!PQsendQuery(conn, "COMMIT")) {
        return STEP_CONN_LOST;
    }
    *in_doubt = 1;
    step = notary_store_finish_command(conn, deadline, res);
    *in_doubt = step == STEP_CONN_LOST;
    if (step == STEP_OK && strcmp(PQcmdStatus(*res), "COMMIT") != 0) {
        /* the server had rolled it back after all */
        *why = apr_psprintf(errpool, "the database ended the COPY with %s",
                            PQcmdStatus(*res));
        step = STEP_SERVER_ERROR;
    }
    return step;
}
