/* The log's leaf entry, version 1 (DESIGN.md "Evidence", docs/evidence.md):
 * a fixed 234-byte, big-endian commitment to one record, hashed as an
 * RFC 9162 leaf. Built by the module from the row it stores and by
 * notary-verify from a row or a receipt; no httpd, no state, thread-safe.
 *
 *   off len
 *     0  15  "notary-leaf/v1\n"
 *    15   1  direction: 0x01 request, 0x02 response
 *    16   8  recorded_at, int64 microseconds since the Unix epoch
 *    24   2  status, uint16 (0 for a request)
 *    26  16  salt, random per record
 *    42  32  SHA-256 of the sender's DER SubjectPublicKeyInfo
 *    74  32  SHA-256 of the receiver's DER SubjectPublicKeyInfo
 *   106  32  SHA-256 of the metadata (below)
 *   138  32  SHA-256 of the header bytes as stored
 *   170  32  SHA-256 of the body as stored
 *   202  32  SHA-256 of the admission token's bytes, 32 zero bytes if none
 *   234
 *
 * Metadata: merchant, rule, method, uri, content_type, exchange_id, each as
 * uint32 length then the bytes, 0xFFFFFFFF (and no bytes) for NULL. */
#ifndef NOTARY_LEAF_H
#define NOTARY_LEAF_H

#include <apr_pools.h>

#define NOTARY_LEAF_DOMAIN "notary-leaf/v1\n"
#define NOTARY_LEAF_DOMAIN_LEN 15
#define NOTARY_LEAF_LEN 234
#define NOTARY_LEAF_SALT_LEN 16
#define NOTARY_LEAF_NULL_LEN 0xFFFFFFFFu
#define NOTARY_LEAF_META_FIELDS 6

enum { NOTARY_LEAF_REQUEST = 1,
       NOTARY_LEAF_RESPONSE = 2 };

/* The six metadata fields, NULL where the row has NULL. Strings are bytes:
 * a length is kept so that a uri with a NUL byte cannot be cut short. */
typedef struct notary_leaf_meta {
    const char *merchant, *rule, *method, *uri, *content_type, *exchange_id;
    apr_size_t merchant_len, rule_len, method_len, uri_len, content_type_len, exchange_id_len;
} notary_leaf_meta;

/* An entry, decoded. */
typedef struct notary_leaf_entry {
    int direction; /* NOTARY_LEAF_REQUEST or NOTARY_LEAF_RESPONSE */
    apr_int64_t recorded_at_us;
    unsigned status; /* 0..65535, 0 for a request */
    unsigned char salt[NOTARY_LEAF_SALT_LEN];
    unsigned char sender_key_sha256[32];
    unsigned char receiver_key_sha256[32];
    unsigned char metadata_sha256[32];
    unsigned char headers_sha256[32];
    unsigned char body_sha256[32];
    unsigned char token_sha256[32]; /* all zero: no token */
} notary_leaf_entry;

/* Everything a record holds that the entry commits to, as stored. The
 * module streams bodies, so it may give body_sha256 instead of the body
 * (body NULL, body_sha256 set); likewise the token and the keys. */
typedef struct notary_leaf_record {
    int direction;
    apr_int64_t recorded_at_us;
    int status;                /* -1 for a request's NULL */
    const unsigned char *salt; /* 16 bytes */
    const unsigned char *sender_spki;
    apr_size_t sender_spki_len;
    const unsigned char *receiver_spki;
    apr_size_t receiver_spki_len;
    notary_leaf_meta meta;
    const unsigned char *headers;
    apr_size_t headers_len;
    const unsigned char *body;
    apr_size_t body_len;
    const unsigned char *body_sha256; /* used when not NULL, body ignored */
    const unsigned char *token;
    apr_size_t token_len;              /* NULL: no token */
    const unsigned char *token_sha256; /* used when not NULL, token ignored */
    /* the keys' digests as stored (the record store keeps keys by digest):
     * used when not NULL, the SPKI ignored */
    const unsigned char *sender_key_sha256, *receiver_key_sha256;
} notary_leaf_record;

/* Set one metadata field from a NUL-terminated string or NULL. */
void notary_leaf_meta_set(const char **field, apr_size_t *len, const char *value);

/* The metadata bytes (from p). */
unsigned char *notary_leaf_meta_encode(apr_pool_t *p, const notary_leaf_meta *m, apr_size_t *len);

/* Parse metadata bytes from the start of d: *used gets the bytes consumed.
 * Fields are NUL-terminated copies from p (the length says where they end).
 * 0, or -1 if d is cut short or a length runs past its end. */
int notary_leaf_meta_parse(apr_pool_t *p, const unsigned char *d, apr_size_t len,
                           notary_leaf_meta *m, apr_size_t *used);

/* Entry of a record: hashes the keys, metadata, headers, body and token.
 * 0, or -1 for a direction other than 1/2, a status outside 0..65535 on a
 * response, a request with a status, or a salt missing. */
int notary_leaf_from_record(apr_pool_t *p, const notary_leaf_record *r, notary_leaf_entry *e);

/* The 234 bytes of an entry. */
void notary_leaf_encode(const notary_leaf_entry *e, unsigned char out[NOTARY_LEAF_LEN]);

/* Decode 234 bytes strictly: the domain string, a known direction, status
 * 0 for a request. 0, or -1 with *detail (if not NULL) saying why. */
int notary_leaf_parse(const unsigned char *d, apr_size_t len, notary_leaf_entry *e,
                      const char **detail);

/* RFC 9162 leaf hash of the encoded entry: SHA-256(0x00 || entry). */
void notary_leaf_hash(const notary_leaf_entry *e, unsigned char out[32]);

/* 1 if the entry names an admission token (its hash is not all zero). */
int notary_leaf_has_token(const notary_leaf_entry *e);

/* "request" / "response" / NULL. */
const char *notary_leaf_direction_name(int direction);

#endif /* NOTARY_LEAF_H */
