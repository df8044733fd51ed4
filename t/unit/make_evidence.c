/* make_evidence DIR: a small log made with the evidence core, as files, for
 * the tests of notary-verify (t/00-unit-verify.t) and for the independent
 * checks of t/unit/interop_tlog.go. Deterministic: the log key comes from a
 * fixed seed, records from their number.
 *
 *   log.vkey log.skey other.vkey   the log key (name notary.example/log); a
 *                                  second key of the same name
 *   body-I headers-I promise-I receipt-I   records 0..6 (receipts against
 *                                  checkpoint-600)
 *   leaves                         the 600 leaf hashes, 32 bytes each
 *   entry-I                        the 234-byte entries of records 0..6
 *   checkpoint-S                   signed checkpoints, S = 3 7 300 600
 *   proof-A-B                      consistency proofs, base64 lines
 *   checkpoint-600-fork            a checkpoint of 600 whose leaf 5 differs,
 *                                  signed with the real key
 *   tiles/tile/...                 the tiles written batch by batch up to 600
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "notary_leaf.h"
#include "notary_merkle.h"
#include "notary_note.h"
#include "notary_util.h"

#define ORIGIN "notary.example/log"
#define NLEAVES 600
#define NRECORDS 7

static const char *dir;
static apr_pool_t *pool;

static void die(const char *what)
{
    fprintf(stderr, "make_evidence: %s\n", what);
    exit(2);
}

static void write_file(const char *name, const void *d, apr_size_t len)
{
    const char *path = apr_pstrcat(pool, dir, "/", name, NULL);
    char *slash = strrchr(apr_pstrdup(pool, path), '/');
    apr_file_t *f;
    apr_size_t n;

    if (slash) {
        char *parent = apr_pstrmemdup(pool, path, (apr_size_t)(strrchr(path, '/') - path));
        if (apr_dir_make_recursive(parent, APR_OS_DEFAULT, pool) != APR_SUCCESS) die(parent);
    }
    if (apr_file_open(&f, path, APR_WRITE | APR_CREATE | APR_TRUNCATE | APR_BINARY, APR_OS_DEFAULT, pool)
            != APR_SUCCESS
        || apr_file_write_full(f, d, len, &n) != APR_SUCCESS || apr_file_close(f) != APR_SUCCESS) {
        die(path);
    }
}

static void write_str(const char *name, const char *s)
{
    write_file(name, s, strlen(s));
}

static int read_tile(void *baton, unsigned level, apr_uint64_t index, unsigned width, unsigned char *out)
{
    const char *path = apr_pstrcat(pool, dir, "/tiles/", notary_tile_path(pool, (int)level, index, width), NULL);
    apr_file_t *f;
    apr_size_t n;

    (void)baton;
    if (apr_file_open(&f, path, APR_READ | APR_BINARY, 0, pool) != APR_SUCCESS) return -1;
    if (apr_file_read_full(f, out, (apr_size_t)width * 32, &n) != APR_SUCCESS) {
        apr_file_close(f);
        return -1;
    }
    apr_file_close(f);
    return 0;
}

static int emit_tile(void *baton, unsigned level, apr_uint64_t index, unsigned width, const unsigned char *d)
{
    (void)baton;
    write_file(apr_pstrcat(pool, "tiles/", notary_tile_path(pool, (int)level, index, width), NULL),
               d, (apr_size_t)width * 32);
    return 0;
}

static const char *signed_checkpoint(const notary_note_key *k, apr_uint64_t size, const unsigned char *leaves)
{
    unsigned char root[32];
    const char *text;
    char *out;
    apr_size_t len;
    const notary_note_key *keys[1];

    keys[0] = k;
    notary_merkle_root_of_leaves(leaves, size, root);
    text = notary_checkpoint_text(pool, ORIGIN, size, root);
    if (notary_note_sign(pool, text, strlen(text), keys, 1, &out, &len, NULL) != 0) die("sign checkpoint");
    return out;
}

static void write_consistency(const unsigned char *leaves, apr_uint64_t a, apr_uint64_t b)
{
    notary_merkle_source src;
    unsigned char *proof;
    apr_size_t count, i;
    const char *text = "";

    notary_merkle_source_leaves(&src, leaves, b);
    if (notary_merkle_prove_consistency(pool, &src, a, b, &proof, &count) != 0) die("consistency");
    for (i = 0; i < count; i++) {
        text = apr_pstrcat(pool, text, notary_b64_encode(pool, proof + i * 32, 32), "\n", NULL);
    }
    write_str(apr_psprintf(pool, "proof-%lu-%lu", (unsigned long)a, (unsigned long)b), text);
}

int main(int argc, const char *const *argv)
{
    unsigned char seed[32], salt[16], *leaves, *fork;
    notary_note_key *k, *other;
    const notary_note_key *keys[1];
    const char *why = NULL, *checkpoint600;
    static const apr_uint64_t sizes[] = { 3, 7, 300, 600 };
    apr_uint64_t done = 0;
    int i;

    if (argc != 2) {
        fprintf(stderr, "usage: make_evidence DIR\n");
        return 2;
    }
    dir = argv[1];
    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&pool, NULL) != APR_SUCCESS) die("apr");
    notary_sha256("notary-verify test log key", 26, seed);
    if (!(k = notary_note_key_from_seed(pool, ORIGIN, seed, &why))) die(why);
    notary_sha256("another key of the same name", 28, seed);
    if (!(other = notary_note_key_from_seed(pool, ORIGIN, seed, &why))) die(why);
    keys[0] = k;
    write_str("log.vkey", apr_pstrcat(pool, notary_note_vkey(pool, k), "\n", NULL));
    write_str("log.skey", apr_pstrcat(pool, notary_note_skey(pool, k), "\n", NULL));
    write_str("other.vkey", apr_pstrcat(pool, notary_note_vkey(pool, other), "\n", NULL));

    leaves = apr_palloc(pool, NLEAVES * 32);
    for (i = 0; i < NLEAVES; i++) {
        notary_leaf_record r;
        notary_leaf_entry e;
        unsigned char enc[NOTARY_LEAF_LEN];
        const char *body = apr_psprintf(pool, "<contract id=\"%d\">I agree</contract>\n", i);
        const char *headers = apr_psprintf(pool, "Content-Type: application/xml\r\nContent-Length: %lu"
                                                 "\r\nX-Contract: %d",
                                           (unsigned long)strlen(body), i / 2);
        const char *exchange = apr_psprintf(pool, "%032x", i / 2);
        apr_size_t mlen;
        unsigned char *meta;

        memset(&r, 0, sizeof(r));
        memset(salt, 0, sizeof(salt));
        salt[0] = (unsigned char)(i >> 8);
        salt[1] = (unsigned char)i;
        r.direction = i % 2 ? NOTARY_LEAF_RESPONSE : NOTARY_LEAF_REQUEST;
        r.status = i % 2 ? 200 : -1;
        r.recorded_at_us = APR_INT64_C(1767225600000000) + (apr_int64_t)i * 1000;
        r.salt = salt;
        r.sender_spki = (const unsigned char *)(i % 2 ? "merchant spki" : "consumer spki");
        r.sender_spki_len = 13;
        r.receiver_spki = (const unsigned char *)(i % 2 ? "consumer spki" : "merchant spki");
        r.receiver_spki_len = 13;
        notary_leaf_meta_set(&r.meta.merchant, &r.meta.merchant_len, "shop");
        notary_leaf_meta_set(&r.meta.rule, &r.meta.rule_len, "shop type application/xml");
        notary_leaf_meta_set(&r.meta.method, &r.meta.method_len, "POST");
        notary_leaf_meta_set(&r.meta.uri, &r.meta.uri_len, apr_psprintf(pool, "/contract/%d", i / 2));
        notary_leaf_meta_set(&r.meta.content_type, &r.meta.content_type_len, "application/xml");
        notary_leaf_meta_set(&r.meta.exchange_id, &r.meta.exchange_id_len, exchange);
        r.headers = (const unsigned char *)headers;
        r.headers_len = strlen(headers);
        r.body = (const unsigned char *)body;
        r.body_len = strlen(body);
        if (i % 2 == 0) {
            r.token = (const unsigned char *)"header.payload.signature";
            r.token_len = 24;
        }
        if (notary_leaf_from_record(pool, &r, &e) != 0) die("entry");
        notary_leaf_encode(&e, enc);
        notary_merkle_leaf_hash(enc, sizeof(enc), leaves + i * 32);
        if (i < NRECORDS) {
            const char *text = notary_promise_text(pool, ORIGIN, enc, 10);
            char *msg;
            apr_size_t len;

            write_str(apr_psprintf(pool, "body-%d", i), body);
            write_str(apr_psprintf(pool, "headers-%d", i), headers);
            write_file(apr_psprintf(pool, "entry-%d", i), enc, sizeof(enc));
            meta = notary_leaf_meta_encode(pool, &r.meta, &mlen);
            write_file(apr_psprintf(pool, "meta-%d", i), meta, mlen);
            if (notary_note_sign(pool, text, strlen(text), keys, 1, &msg, &len, NULL) != 0) die("promise");
            write_file(apr_psprintf(pool, "promise-%d", i), msg, len);
        }
    }
    write_file("leaves", leaves, NLEAVES * 32);

    /* the log as an integrator grows it: batches ending at each checkpoint */
    for (i = 0; i < 4; i++) {
        if (notary_tiles_append(pool, done, read_tile, NULL, leaves + done * 32, sizes[i] - done,
                                emit_tile, NULL)
            != 0) die("tiles");
        done = sizes[i];
        write_str(apr_psprintf(pool, "checkpoint-%lu", (unsigned long)sizes[i]),
                  signed_checkpoint(k, sizes[i], leaves));
    }
    checkpoint600 = signed_checkpoint(k, 600, leaves);
    write_consistency(leaves, 3, 7);
    write_consistency(leaves, 7, 600);
    write_consistency(leaves, 300, 600);

    for (i = 0; i < NRECORDS; i++) {
        notary_merkle_source src;
        notary_tlog_proof tp;
        unsigned char *proof, *entry, *meta;
        apr_size_t count, elen, mlen, len;
        apr_file_t *f;
        char *out;

        notary_merkle_source_leaves(&src, leaves, NLEAVES);
        if (notary_merkle_prove_inclusion(pool, &src, (apr_uint64_t)i, NLEAVES, &proof, &count) != 0) die("proof");
        entry = apr_palloc(pool, NOTARY_LEAF_LEN);
        meta = apr_palloc(pool, 4096);
        if (apr_file_open(&f, apr_psprintf(pool, "%s/entry-%d", dir, i), APR_READ | APR_BINARY, 0, pool) != APR_SUCCESS
            || apr_file_read_full(f, entry, NOTARY_LEAF_LEN, &elen) != APR_SUCCESS) die("entry file");
        apr_file_close(f);
        if (apr_file_open(&f, apr_psprintf(pool, "%s/meta-%d", dir, i), APR_READ | APR_BINARY, 0, pool) != APR_SUCCESS) die("meta");
        mlen = 4096;
        if (apr_file_read(f, meta, &mlen) != APR_SUCCESS) die("meta read");
        apr_file_close(f);
        memset(&tp, 0, sizeof(tp));
        tp.extra = notary_receipt_extra(pool, entry, meta, mlen, NULL, 0, &tp.extra_len);
        tp.index = (apr_uint64_t)i;
        tp.proof = proof;
        tp.count = count;
        tp.checkpoint = checkpoint600;
        tp.checkpoint_len = strlen(checkpoint600);
        out = notary_tlog_proof_format(pool, &tp, &len);
        write_file(apr_psprintf(pool, "receipt-%d", i), out, len);
    }

    /* a fork: the same key signs a tree of 600 where leaf 5 differs */
    fork = apr_pmemdup(pool, leaves, NLEAVES * 32);
    fork[5 * 32] ^= 1;
    write_str("checkpoint-600-fork", signed_checkpoint(k, 600, fork));

    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}
