/* Leaf entry v1; see notary_leaf.h and docs/evidence.md. */
#include <string.h>

#include <apr_strings.h>

#include "notary_leaf.h"
#include "notary_merkle.h"
#include "notary_util.h"

static void put32(unsigned char *o, apr_uint32_t v)
{
    o[0] = (unsigned char)(v >> 24);
    o[1] = (unsigned char)(v >> 16);
    o[2] = (unsigned char)(v >> 8);
    o[3] = (unsigned char)v;
}

static apr_uint32_t get32(const unsigned char *d)
{
    return ((apr_uint32_t)d[0] << 24) | ((apr_uint32_t)d[1] << 16) | ((apr_uint32_t)d[2] << 8) | d[3];
}

void notary_leaf_meta_set(const char **field, apr_size_t *len, const char *value)
{
    *field = value;
    *len = value ? strlen(value) : 0;
}

/* The fields in their contract order, as pointers into m. */
static void meta_fields(notary_leaf_meta *m, const char **f[], apr_size_t *l[])
{
    f[0] = &m->merchant;
    l[0] = &m->merchant_len;
    f[1] = &m->rule;
    l[1] = &m->rule_len;
    f[2] = &m->method;
    l[2] = &m->method_len;
    f[3] = &m->uri;
    l[3] = &m->uri_len;
    f[4] = &m->content_type;
    l[4] = &m->content_type_len;
    f[5] = &m->exchange_id;
    l[5] = &m->exchange_id_len;
}

unsigned char *notary_leaf_meta_encode(apr_pool_t *p, const notary_leaf_meta *m, apr_size_t *len)
{
    const char **f[NOTARY_LEAF_META_FIELDS];
    apr_size_t *l[NOTARY_LEAF_META_FIELDS];
    apr_size_t total = 0, off = 0;
    unsigned char *out;
    int i;

    meta_fields((notary_leaf_meta *)m, f, l); /* read only */
    for (i = 0; i < NOTARY_LEAF_META_FIELDS; i++) {
        total += 4 + (*f[i] ? *l[i] : 0);
    }
    out = apr_palloc(p, total ? total : 1);
    for (i = 0; i < NOTARY_LEAF_META_FIELDS; i++) {
        if (!*f[i]) {
            put32(out + off, NOTARY_LEAF_NULL_LEN);
            off += 4;
            continue;
        }
        put32(out + off, (apr_uint32_t)*l[i]);
        memcpy(out + off + 4, *f[i], *l[i]);
        off += 4 + *l[i];
    }
    *len = total;
    return out;
}

int notary_leaf_meta_parse(apr_pool_t *p, const unsigned char *d, apr_size_t len,
                           notary_leaf_meta *m, apr_size_t *used)
{
    const char **f[NOTARY_LEAF_META_FIELDS];
    apr_size_t *l[NOTARY_LEAF_META_FIELDS];
    apr_size_t off = 0;
    int i;

    meta_fields(m, f, l);
    for (i = 0; i < NOTARY_LEAF_META_FIELDS; i++) {
        apr_uint32_t n;

        if (len - off < 4) {
            return -1;
        }
        n = get32(d + off);
        off += 4;
        if (n == NOTARY_LEAF_NULL_LEN) {
            *f[i] = NULL;
            *l[i] = 0;
            continue;
        }
        if (n > len - off) {
            return -1;
        }
        *f[i] = apr_pstrmemdup(p, (const char *)d + off, n);
        *l[i] = n;
        off += n;
    }
    *used = off;
    return 0;
}

int notary_leaf_from_record(apr_pool_t *p, const notary_leaf_record *r, notary_leaf_entry *e)
{
    unsigned char *meta;
    apr_size_t meta_len;

    if (r->direction != NOTARY_LEAF_REQUEST && r->direction != NOTARY_LEAF_RESPONSE) {
        return -1;
    }
    if (r->direction == NOTARY_LEAF_REQUEST ? r->status > 0
                                            : (r->status < 0 || r->status > 65535)) {
        return -1;
    }
    if (!r->salt) {
        return -1;
    }
    memset(e, 0, sizeof(*e));
    e->direction = r->direction;
    e->recorded_at_us = r->recorded_at_us;
    e->status = r->status > 0 ? (unsigned)r->status : 0;
    memcpy(e->salt, r->salt, NOTARY_LEAF_SALT_LEN);
    if (r->sender_key_sha256) {
        memcpy(e->sender_key_sha256, r->sender_key_sha256, 32);
    }
    else {
        notary_sha256(r->sender_spki, r->sender_spki_len, e->sender_key_sha256);
    }
    if (r->receiver_key_sha256) {
        memcpy(e->receiver_key_sha256, r->receiver_key_sha256, 32);
    }
    else {
        notary_sha256(r->receiver_spki, r->receiver_spki_len, e->receiver_key_sha256);
    }
    meta = notary_leaf_meta_encode(p, &r->meta, &meta_len);
    notary_sha256(meta, meta_len, e->metadata_sha256);
    notary_sha256(r->headers ? (const void *)r->headers : "", r->headers_len, e->headers_sha256);
    if (r->body_sha256) {
        memcpy(e->body_sha256, r->body_sha256, 32);
    }
    else {
        notary_sha256(r->body ? (const void *)r->body : "", r->body_len, e->body_sha256);
    }
    if (r->token_sha256) {
        memcpy(e->token_sha256, r->token_sha256, 32);
    }
    else if (r->token) {
        notary_sha256(r->token, r->token_len, e->token_sha256);
    }
    return 0;
}

void notary_leaf_encode(const notary_leaf_entry *e, unsigned char out[NOTARY_LEAF_LEN])
{
    apr_uint64_t t = (apr_uint64_t)e->recorded_at_us;
    int i;

    memcpy(out, NOTARY_LEAF_DOMAIN, NOTARY_LEAF_DOMAIN_LEN);
    out[15] = (unsigned char)e->direction;
    for (i = 0; i < 8; i++) {
        out[16 + i] = (unsigned char)(t >> (56 - 8 * i));
    }
    out[24] = (unsigned char)(e->status >> 8);
    out[25] = (unsigned char)e->status;
    memcpy(out + 26, e->salt, NOTARY_LEAF_SALT_LEN);
    memcpy(out + 42, e->sender_key_sha256, 32);
    memcpy(out + 74, e->receiver_key_sha256, 32);
    memcpy(out + 106, e->metadata_sha256, 32);
    memcpy(out + 138, e->headers_sha256, 32);
    memcpy(out + 170, e->body_sha256, 32);
    memcpy(out + 202, e->token_sha256, 32);
}

int notary_leaf_parse(const unsigned char *d, apr_size_t len, notary_leaf_entry *e,
                      const char **detail)
{
    apr_uint64_t t = 0;
    int i;

    if (len != NOTARY_LEAF_LEN) {
        if (detail) *detail = "entry is not 234 bytes long";
        return -1;
    }
    if (memcmp(d, NOTARY_LEAF_DOMAIN, NOTARY_LEAF_DOMAIN_LEN) != 0) {
        if (detail) *detail = "entry does not start with \"notary-leaf/v1\\n\"";
        return -1;
    }
    memset(e, 0, sizeof(*e));
    e->direction = d[15];
    if (e->direction != NOTARY_LEAF_REQUEST && e->direction != NOTARY_LEAF_RESPONSE) {
        if (detail) *detail = "entry has an unknown direction";
        return -1;
    }
    for (i = 0; i < 8; i++) {
        t = (t << 8) | d[16 + i];
    }
    e->recorded_at_us = (apr_int64_t)t;
    e->status = ((unsigned)d[24] << 8) | d[25];
    if (e->direction == NOTARY_LEAF_REQUEST && e->status != 0) {
        if (detail) *detail = "entry of a request has a status";
        return -1;
    }
    memcpy(e->salt, d + 26, NOTARY_LEAF_SALT_LEN);
    memcpy(e->sender_key_sha256, d + 42, 32);
    memcpy(e->receiver_key_sha256, d + 74, 32);
    memcpy(e->metadata_sha256, d + 106, 32);
    memcpy(e->headers_sha256, d + 138, 32);
    memcpy(e->body_sha256, d + 170, 32);
    memcpy(e->token_sha256, d + 202, 32);
    return 0;
}

void notary_leaf_hash(const notary_leaf_entry *e, unsigned char out[32])
{
    unsigned char buf[NOTARY_LEAF_LEN];

    notary_leaf_encode(e, buf);
    notary_merkle_leaf_hash(buf, sizeof(buf), out);
}

int notary_leaf_has_token(const notary_leaf_entry *e)
{
    static const unsigned char zero[32];

    return memcmp(e->token_sha256, zero, 32) != 0;
}

const char *notary_leaf_direction_name(int direction)
{
    return direction == NOTARY_LEAF_REQUEST  ? "request"
         : direction == NOTARY_LEAF_RESPONSE ? "response"
                                             : NULL;
}
