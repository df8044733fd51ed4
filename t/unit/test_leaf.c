/* Leaf entry v1 (notary_leaf): the test vectors of docs/evidence.md, which
 * t/unit/interop_tlog.go recomputes independently, and the strictness of
 * the parsers. TAP. */
#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "notary_leaf.h"
#include "notary_merkle.h"
#include "notary_util.h"
#include "tap.h"

/* RFC 8032 test 1 and test 2 public keys as DER SubjectPublicKeyInfo */
#define SPKI_PREFIX "302a300506032b6570032100"
static const char *const spki_a_hex = SPKI_PREFIX "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char *const spki_b_hex = SPKI_PREFIX "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

static const char *const meta1_hex =
    "0000000473686f700000001773686f7020636f6e7461696e732022492061677265652200000004504f5354"
    "000000142f636f6e74726163742f7369676e3f69643d3432000000216170706c69636174696f6e2f782d77"
    "77772d666f726d2d75726c656e636f646564000000203566316330613965336237643432653861366334"
    "663062326439653831373335";
static const char *const entry1_hex =
    "6e6f746172792d6c6561662f76310a0100064748462222400000000102030405060708090a0b0c0d0e0f"
    "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9deb2ded39dc26fce0e6085"
    "b6fc34bf6b5941913bbfe2ea614113cff9e004c170558fa75db30f93c214b9b528575a5fbad15fef8d610e"
    "e8c7e18e65354db46d923f0dc8a87bbaab29e810baf1e12dc0f65422f579670a8f847326ff0c9cb0c2146b"
    "0ab9747b2c196269ec952731f49754cf3ec92f9ee3e53241859b5fe19502d8bc97191ba691666e6c4814e1"
    "73d48ee72cc6d013dc74076149b25de4b732ce4f";
static const char *const leaf1_hex = "ef2872ecca67bc3427b7bc35290f84cb063f3bb11b4aff637bcc78fe4d4efcd5";
static const char *const entry2_hex =
    "6e6f746172792d6c6561662f76310a02000647484623d44700c8f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
    "deb2ded39dc26fce0e6085b6fc34bf6b5941913bbfe2ea614113cff9e004c17006e3fd8fda29bb60ab5955"
    "7de61edb0aecdb231134be30e75b455f8e1b792fa976c87530997f9f9070a851cf513086d0b4eabfce5e74"
    "f13e55d3abb6d76630c87350f08c376b672ce87da99c1fe774341468c0273f8dc3262d6878d057079258e3"
    "b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550000000000000000000000000"
    "000000000000000000000000000000000000000";
static const char *const leaf2_hex = "b8d1546f1ee4e0d1d9fd3ea5b2de169346101b4c48d75edc76fb47790f6a976e";

static unsigned char *unhex(apr_pool_t *p, const char *h, apr_size_t *len)
{
    apr_size_t n = strlen(h) / 2, i;
    unsigned char *out = apr_palloc(p, n + 1);

    for (i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    *len = n;
    return out;
}

static void vector_meta(notary_leaf_meta *m, int with_type)
{
    memset(m, 0, sizeof(*m));
    notary_leaf_meta_set(&m->merchant, &m->merchant_len, "shop");
    notary_leaf_meta_set(&m->rule, &m->rule_len, "shop contains \"I agree\"");
    notary_leaf_meta_set(&m->method, &m->method_len, "POST");
    notary_leaf_meta_set(&m->uri, &m->uri_len, "/contract/sign?id=42");
    notary_leaf_meta_set(&m->content_type, &m->content_type_len,
                         with_type ? "application/x-www-form-urlencoded" : NULL);
    notary_leaf_meta_set(&m->exchange_id, &m->exchange_id_len, "5f1c0a9e3b7d42e8a6c4f0b2d9e81735");
}

static void test_vectors(apr_pool_t *p)
{
    static const char headers1[] = "Host: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                                   "Content-Length: 13";
    static const char token1[] = "eyJhbGciOiJFZERTQSJ9.eyJhdWQiOiJub3RhcnkuZXhhbXBsZSJ9.c2ln";
    unsigned char salt1[16], salt2[16], enc[NOTARY_LEAF_LEN], leaf[32], body_hash[32];
    notary_leaf_record r;
    notary_leaf_entry e, e2;
    apr_size_t alen, blen, mlen;
    unsigned char *a = unhex(p, spki_a_hex, &alen), *b = unhex(p, spki_b_hex, &blen), *meta;
    int i;

    for (i = 0; i < 16; i++) {
        salt1[i] = (unsigned char)i;
        salt2[i] = (unsigned char)(0xf0 + i);
    }
    memset(&r, 0, sizeof(r));
    r.direction = NOTARY_LEAF_REQUEST;
    r.recorded_at_us = APR_INT64_C(1767225600123456); /* 2026-01-01T00:00:00.123456Z */
    r.status = -1;
    r.salt = salt1;
    r.sender_spki = a;
    r.sender_spki_len = alen;
    r.receiver_spki = b;
    r.receiver_spki_len = blen;
    vector_meta(&r.meta, 1);
    r.headers = (const unsigned char *)headers1;
    r.headers_len = strlen(headers1);
    r.body = (const unsigned char *)"agree=I+agree";
    r.body_len = 13;
    r.token = (const unsigned char *)token1;
    r.token_len = strlen(token1);

    meta = notary_leaf_meta_encode(p, &r.meta, &mlen);
    is_str(notary_hex(p, meta, mlen), meta1_hex, "vector 1: metadata bytes");
    ok(notary_leaf_from_record(p, &r, &e) == 0, "vector 1: entry built from the request record");
    notary_leaf_encode(&e, enc);
    is_str(notary_hex(p, enc, sizeof(enc)), entry1_hex, "vector 1: the 234 entry bytes");
    notary_leaf_hash(&e, leaf);
    is_str(notary_hex(p, leaf, 32), leaf1_hex, "vector 1: leaf hash SHA-256(0x00 || entry)");
    ok(notary_leaf_has_token(&e), "vector 1: names its admission token");

    /* the module streams bodies: giving the body's hash must be the same */
    notary_sha256("agree=I+agree", 13, body_hash);
    r.body = NULL;
    r.body_len = 0;
    r.body_sha256 = body_hash;
    ok(notary_leaf_from_record(p, &r, &e2) == 0 && memcmp(&e, &e2, sizeof(e)) == 0,
       "vector 1: body_sha256 instead of the body gives the same entry");

    memset(&r, 0, sizeof(r));
    r.direction = NOTARY_LEAF_RESPONSE;
    r.recorded_at_us = APR_INT64_C(1767225600234567);
    r.status = 200;
    r.salt = salt2;
    r.sender_spki = b;
    r.sender_spki_len = blen;
    r.receiver_spki = a;
    r.receiver_spki_len = alen;
    vector_meta(&r.meta, 0);
    r.headers = (const unsigned char *)"Content-Length: 0";
    r.headers_len = 17;
    r.body = NULL;
    r.body_len = 0;
    ok(notary_leaf_from_record(p, &r, &e) == 0, "vector 2: entry built from the response record");
    notary_leaf_encode(&e, enc);
    is_str(notary_hex(p, enc, sizeof(enc)), entry2_hex, "vector 2: entry bytes (NULL content type, no token, empty body)");
    notary_leaf_hash(&e, leaf);
    is_str(notary_hex(p, leaf, 32), leaf2_hex, "vector 2: leaf hash");
    ok(!notary_leaf_has_token(&e), "vector 2: names no token (32 zero bytes)");

    /* parse gives back what was encoded */
    ok(notary_leaf_parse(enc, sizeof(enc), &e2, NULL) == 0 && memcmp(&e, &e2, sizeof(e)) == 0,
       "vector 2: parse(encode(entry)) is the entry");
}

static void test_docs(apr_pool_t *p)
{
    const char *srcdir = getenv("NOTARY_SRCDIR");
    const char *path = apr_pstrcat(p, srcdir ? srcdir : ".", "/docs/evidence.md", NULL);
    apr_file_t *f;
    apr_finfo_t fi;
    char *doc, *flat;
    apr_size_t n, i, j;

    if (apr_file_open(&f, path, APR_READ, 0, p) != APR_SUCCESS
        || apr_file_info_get(&fi, APR_FINFO_SIZE, f) != APR_SUCCESS) {
        ok(0, "docs/evidence.md readable at %s", path);
        return;
    }
    n = (apr_size_t)fi.size;
    doc = apr_palloc(p, n + 1);
    if (apr_file_read_full(f, doc, n, &n) != APR_SUCCESS) {
        ok(0, "docs/evidence.md read");
        return;
    }
    doc[n] = '\0';
    apr_file_close(f);
    /* the document wraps long hex: compare without white space */
    flat = apr_palloc(p, n + 1);
    for (i = j = 0; i < n; i++) {
        if (doc[i] != ' ' && doc[i] != '\n' && doc[i] != '\t') flat[j++] = doc[i];
    }
    flat[j] = '\0';
    ok(strstr(flat, entry1_hex) != NULL, "docs/evidence.md shows vector 1's entry bytes");
    ok(strstr(flat, leaf1_hex) != NULL, "docs/evidence.md shows vector 1's leaf hash");
    ok(strstr(flat, meta1_hex) != NULL, "docs/evidence.md shows vector 1's metadata bytes");
    ok(strstr(flat, leaf2_hex) != NULL, "docs/evidence.md shows vector 2's leaf hash");
}

static void test_strict(apr_pool_t *p)
{
    apr_size_t len, used, mlen;
    unsigned char *enc = unhex(p, entry1_hex, &len), *meta;
    notary_leaf_entry e;
    notary_leaf_meta m, m2;
    notary_leaf_record r;
    const char *why = NULL;
    unsigned char salt[16] = { 0 };
    int i, bad = 0;

    ok(notary_leaf_parse(enc, len - 1, &e, &why) != 0 && why, "a 233-byte entry is refused (%s)", why);
    enc[13] = '2';
    ok(notary_leaf_parse(enc, len, &e, &why) != 0, "an entry of another version is refused (%s)", why);
    enc[13] = '1';
    enc[15] = 3;
    ok(notary_leaf_parse(enc, len, &e, &why) != 0, "direction 3 is refused (%s)", why);
    enc[15] = 1;
    enc[25] = 1;
    ok(notary_leaf_parse(enc, len, &e, &why) != 0, "a request with a status is refused (%s)", why);
    enc[25] = 0;
    ok(notary_leaf_parse(enc, len, &e, NULL) == 0, "the vector parses again once restored");

    /* metadata: NULL and "" differ, and parse inverts encode */
    vector_meta(&m, 0);
    meta = notary_leaf_meta_encode(p, &m, &mlen);
    ok(notary_leaf_meta_parse(p, meta, mlen, &m2, &used) == 0 && used == mlen && m2.content_type == NULL
           && strcmp(m2.uri, "/contract/sign?id=42") == 0 && m2.exchange_id_len == 32,
       "metadata parse inverts encode, NULL kept as NULL");
    for (i = 0; i < (int)mlen; i++) {
        if (notary_leaf_meta_parse(p, meta, (apr_size_t)i, &m2, &used) == 0) bad++;
    }
    is_int(bad, 0, "metadata cut short at any byte is refused");
    notary_leaf_meta_set(&m.content_type, &m.content_type_len, "");
    {
        apr_size_t l2;
        unsigned char *meta2 = notary_leaf_meta_encode(p, &m, &l2);
        ok(l2 != mlen || memcmp(meta2, meta, mlen) != 0, "an empty content type is not a NULL one");
    }
    /* a uri with a NUL byte is kept whole */
    m.uri = "/a\0b";
    m.uri_len = 4;
    meta = notary_leaf_meta_encode(p, &m, &mlen);
    ok(notary_leaf_meta_parse(p, meta, mlen, &m2, &used) == 0 && m2.uri_len == 4 && memcmp(m2.uri, "/a\0b", 4) == 0,
       "a field with a NUL byte keeps its length");

    memset(&r, 0, sizeof(r));
    r.salt = salt;
    r.direction = 3;
    ok(notary_leaf_from_record(p, &r, &e) != 0, "a record of direction 3 makes no entry");
    r.direction = NOTARY_LEAF_REQUEST;
    r.status = 200;
    ok(notary_leaf_from_record(p, &r, &e) != 0, "a request with a status makes no entry");
    r.direction = NOTARY_LEAF_RESPONSE;
    r.status = 70000;
    ok(notary_leaf_from_record(p, &r, &e) != 0, "a status over 65535 makes no entry");
    r.status = 200;
    r.salt = NULL;
    ok(notary_leaf_from_record(p, &r, &e) != 0, "a record without salt makes no entry");
    r.salt = salt;
    r.recorded_at_us = -1; /* before 1970: kept exactly, two's complement */
    ok(notary_leaf_from_record(p, &r, &e) == 0 && e.recorded_at_us == -1, "a time before the epoch is kept");
    {
        unsigned char b[NOTARY_LEAF_LEN];
        notary_leaf_entry back;
        notary_leaf_encode(&e, b);
        ok(notary_leaf_parse(b, sizeof(b), &back, NULL) == 0 && back.recorded_at_us == -1,
           "and read back as -1");
    }
}

static void test_flips(apr_pool_t *p)
{
    apr_size_t len;
    unsigned char *enc = unhex(p, entry1_hex, &len), want[32], got[32];
    unsigned bit, same = 0;

    notary_merkle_leaf_hash(enc, len, want);
    for (bit = 0; bit < len * 8; bit++) {
        enc[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        notary_merkle_leaf_hash(enc, len, got);
        if (memcmp(got, want, 32) == 0) same++;
        enc[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    is_int(same, 0, "each of the entry's 1872 single-bit flips changes its leaf hash");
}

int main(void)
{
    apr_pool_t *p;

    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        printf("Bail out! apr\n");
        return 1;
    }
    test_vectors(p);
    test_strict(p);
    test_flips(p);
    test_docs(p);
    apr_pool_destroy(p);
    apr_terminate();
    return tap_done();
}
