/* Signed notes, checkpoints, promises and receipts (notary_note): known
 * answers from the C2SP signed-note spec and golang.org/x/mod's sumdb/note,
 * strict parsing, and every single-bit flip of a signature, a root, an entry
 * and a proof refused. TAP. */
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "notary_leaf.h"
#include "notary_merkle.h"
#include "notary_note.h"
#include "notary_util.h"
#include "tap.h"

/* c2sp.org/signed-note, "Verifier keys", Example */
#define C2SP_VKEY "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
#define C2SP_NOTE "This is an example message.\n\n" \
                  "\xe2\x80\x94 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
/* golang.org/x/mod/sumdb/note's example key, with its private half */
#define GO_SKEY "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
#define GO_VKEY "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
#define GO_TEXT "If you think cryptography is the answer to your problem,\n" \
                "then you don't know what your problem is.\n"
#define GO_SIG "\xe2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

#define ORIGIN "notary.example/log"

static int open_ok(apr_pool_t *p, const char *msg, apr_size_t len, const notary_note_key *k)
{
    notary_note *n;
    const notary_note_key *keys[1];

    keys[0] = k;
    return notary_note_open(p, msg, len, keys, 1, &n, NULL) == 0;
}

static void test_known_answers(apr_pool_t *p)
{
    const char *why = NULL;
    notary_note_key *v = notary_note_vkey_parse(p, C2SP_VKEY, &why), *s, *gv;
    char *out;
    apr_size_t outlen;
    const notary_note_key *keys[1];
    notary_note *n;

    ok(v != NULL, "the C2SP example vkey parses (%s)", why ? why : "ok");
    if (!v) return;
    is_str(v->name, "example.com/foo", "its key name");
    is_int(v->id, 0x530d903a, "its key ID is SHA-256(name || 0x0A || 0x01 || key)[:4]");
    is_str(notary_note_vkey(p, v), C2SP_VKEY, "vkey encodes back to the same text");
    keys[0] = v;
    ok(notary_note_open(p, C2SP_NOTE, strlen(C2SP_NOTE), keys, 1, &n, &why) == 0,
       "the C2SP example note verifies with the example vkey");
    is_str(n->text, "This is an example message.\n", "the note text ends at the last blank line");

    s = notary_note_skey_parse(p, GO_SKEY, &why);
    ok(s != NULL && s->has_private, "the sumdb/note example signer key parses (%s)", why ? why : "ok");
    if (!s) return;
    is_str(notary_note_vkey(p, s), GO_VKEY, "its public half is the example's vkey");
    is_str(notary_note_skey(p, s), GO_SKEY, "skey encodes back to the same text");
    keys[0] = s;
    ok(notary_note_sign(p, GO_TEXT, strlen(GO_TEXT), keys, 1, &out, &outlen, &why) == 0,
       "sign the example text");
    is_str(out, GO_TEXT "\n" GO_SIG, "Ed25519 is deterministic: the signature is the example's, byte for byte");
    gv = notary_note_vkey_parse(p, GO_VKEY, NULL);
    ok(gv && open_ok(p, GO_TEXT "\n" GO_SIG, strlen(GO_TEXT "\n" GO_SIG), gv), "and it verifies with the vkey");
    ok(!open_ok(p, GO_TEXT "\n" GO_SIG, strlen(GO_TEXT "\n" GO_SIG), v),
       "a note signed by another key does not verify with the C2SP key");
}

static void test_keys(apr_pool_t *p)
{
    static const char *const bad[] = {
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* wrong id */
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* upper hex */
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* type 0x02 */
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",  /* short */
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l", /* not canonical */
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  /* 7 digits */
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",                /* no name */
        "example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",     /* space */
        "example.com/foo", "", NULL
    };
    int i, refused = 0;
    const char *why;
    notary_note_key *k;

    for (i = 0; bad[i]; i++) {
        why = NULL;
        if (notary_note_vkey_parse(p, bad[i], &why))
            diag("accepted %s", bad[i]);
        else if (why)
            refused++;
    }
    is_int(refused, i, "malformed vkeys refused, each with a reason");
    ok(!notary_note_key_generate(p, "a+b", &why), "a key name with '+' is refused (%s)", why);
    ok(!notary_note_key_generate(p, "a\xe3\x80\x80"
                                    "b",
                                 &why),
       "a key name with U+3000 is refused");
    ok(!notary_note_key_generate(p, "a\xff"
                                    "b",
                                 &why),
       "a key name that is not UTF-8 is refused");
    k = notary_note_key_generate(p, "\xe6\x97\xa5\xe6\x9c\xac.example/log", &why);
    ok(k && notary_note_vkey_parse(p, notary_note_vkey(p, k), NULL), "a UTF-8 key name round-trips through its vkey");
    ok(!notary_note_skey_parse(p, C2SP_VKEY, &why), "a vkey is not a signer key (%s)", why);
}

/* Replace the base64 of signature line `which` in note by one with a bit flipped. */
static char *flip_sig(apr_pool_t *p, const char *note, int which, unsigned bit, int *ok_flip)
{
    const char *s = note, *line = NULL, *sp, *eol;
    int i = -1;
    unsigned char *raw;
    apr_size_t rawlen;

    *ok_flip = 0;
    for (sp = note; (sp = strstr(sp, "\n\n")); sp++) {
        s = sp + 2; /* the signatures start after the last blank line */
    }
    while (*s) {
        if (++i == which) {
            line = s;
            break;
        }
        s = strchr(s, '\n') + 1;
    }
    if (!line) return NULL;
    sp = strchr(line + 4, ' ');
    eol = strchr(line, '\n');
    raw = notary_b64_decode(p, sp + 1, (apr_size_t)(eol - sp - 1), &rawlen);
    if (!raw || bit >= rawlen * 8) return NULL;
    raw[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    *ok_flip = 1;
    return apr_pstrcat(p, apr_pstrmemdup(p, note, (apr_size_t)(sp + 1 - note)),
                       notary_b64_encode(p, raw, rawlen), eol, NULL);
}

static void test_sign_open(apr_pool_t *p)
{
    const char *why = NULL;
    notary_note_key *k1 = notary_note_key_generate(p, ORIGIN, &why);
    notary_note_key *k2 = notary_note_key_generate(p, "witness.example/w1", &why);
    notary_note_key *k3 = notary_note_key_generate(p, ORIGIN, &why); /* same name, other key */
    const notary_note_key *both[2], *one[1];
    const char *text = "line one\n\nline three after an empty line\n";
    char *msg, *bad;
    apr_size_t len;
    notary_note *n;
    unsigned bit;
    int accepted = 0, flips = 0, f;

    both[0] = k1;
    both[1] = k2;
    ok(notary_note_sign(p, text, strlen(text), both, 2, &msg, &len, &why) == 0, "sign with two keys");
    one[0] = k2;
    ok(notary_note_open(p, msg, len, one, 1, &n, &why) == 0 && n->nsigs == 2 && n->verified_by == k2
           && strcmp(n->text, text) == 0,
       "open with the second key only: two signatures seen, one verified, "
       "the text keeps its own empty line");
    one[0] = k3;
    ok(notary_note_open(p, msg, len, one, 1, &n, &why) != 0, "a key of the same name but another ID is unknown: "
                                                             "no known signature (%s)",
       why);
    ok(notary_note_open(p, msg, len, both, 2, &n, &why) == 0 && n->sigs[0].key == k1 && n->sigs[1].key == k2,
       "open with both keys: both verified");
    ok(notary_note_sign(p, "no newline", 10, both, 1, &msg, &len, &why) != 0, "text without final newline is not signed");
    ok(notary_note_sign(p, "tab\there\n", 9, both, 1, &msg, &len, &why) != 0, "text with a tab is not signed");
    one[0] = notary_note_vkey_parse(p, notary_note_vkey(p, k1), NULL);
    ok(notary_note_sign(p, text, strlen(text), one, 1, &msg, &len, &why) != 0, "a verifier key cannot sign (%s)", why);

    /* every single-bit flip of either signature (key ID included) is refused */
    notary_note_sign(p, text, strlen(text), both, 2, &msg, &len, &why);
    for (f = 0; f < 2; f++) {
        for (bit = 0; bit < 68 * 8; bit++) {
            int flipped;
            bad = flip_sig(p, msg, f, bit, &flipped);
            if (!flipped) continue;
            flips++;
            one[0] = both[f];
            if (notary_note_open(p, bad, strlen(bad), one, 1, &n, NULL) == 0) accepted++;
        }
    }
    ok(flips == 2 * 68 * 8 && accepted == 0, "all %d single-bit flips of two signatures (key ID and "
                                             "signature bytes) refused by the key that signed (%d accepted)",
       flips, accepted);
    accepted = 0;
    for (bit = 0; bit < strlen(text) * 8; bit++) {
        bad = apr_pstrdup(p, msg);
        bad[bit / 8] ^= (char)(1u << (bit % 8));
        if (notary_note_open(p, bad, len, both, 2, &n, NULL) == 0) accepted++;
    }
    is_int(accepted, 0, "every single-bit flip of the note text refused");
    /* a bad signature by a known key spoils the note even if another verifies */
    bad = flip_sig(p, msg, 0, 100, &f);
    ok(notary_note_open(p, bad, strlen(bad), both, 2, &n, &why) != 0, "one known key's bad signature "
                                                                      "rejects the note although the other verifies (%s)",
       why);
}

static void test_malformed(apr_pool_t *p)
{
    const char *why;
    notary_note_key *k = notary_note_key_generate(p, ORIGIN, &why);
    const notary_note_key *keys[1];
    char *msg, *many;
    apr_size_t len;
    notary_note *n;
    int i, refused = 0, count = 0;
    const char *cases[12];

    keys[0] = k;
    notary_note_sign(p, "hello\n", 6, keys, 1, &msg, &len, &why);
    cases[count++] = apr_pstrmemdup(p, msg, len - 1);                          /* no final newline */
    cases[count++] = apr_pstrcat(p, "hello\n", msg + 6 + 1, NULL);             /* no blank line */
    cases[count++] = apr_pstrcat(p, msg, "\n", NULL);                          /* empty sig line */
    cases[count++] = apr_pstrcat(p, msg, "- x AAAAAAA=\n", NULL);              /* not an em dash */
    cases[count++] = apr_pstrcat(p, "he\rllo\n\n", msg + 7, NULL);             /* control char */
    cases[count++] = apr_pstrcat(p, msg, "\xe2\x80\x94 a+b AAAAAAA=\n", NULL); /* '+' in name */
    cases[count++] = apr_pstrcat(p, msg, "\xe2\x80\x94 x AAAA\n", NULL);       /* 3 bytes */
    cases[count++] = apr_pstrcat(p, msg, "\xe2\x80\x94 x AAAAAAB=\n", NULL);   /* not canonical */
    cases[count++] = apr_pstrcat(p, msg, "\xe2\x80\x94 x\n", NULL);            /* no signature */
    cases[count++] = apr_pstrcat(p, "h\xc3\x28llo\n\n", msg + 7, NULL);        /* bad UTF-8 */
    many = apr_pstrdup(p, msg);
    for (i = 0; i < 100; i++) many = apr_pstrcat(p, many, "\xe2\x80\x94 other.example AAAAAAA=\n", NULL);
    cases[count++] = many; /* 101 signatures */
    for (i = 0; i < count; i++) {
        why = NULL;
        if (notary_note_open(p, cases[i], strlen(cases[i]), keys, 1, &n, &why) == 0)
            diag("case %d accepted", i);
        else if (why)
            refused++;
    }
    is_int(refused, count, "malformed notes refused, each with a reason");
    ok(notary_note_open(p, msg, len, keys, 1, &n, &why) == 0, "the untouched note still opens");
    many = apr_pstrdup(p, msg);
    for (i = 0; i < 15; i++) many = apr_pstrcat(p, many, "\xe2\x80\x94 other.example AAAAAAA=\n", NULL);
    ok(notary_note_open(p, many, strlen(many), keys, 1, &n, &why) == 0 && n->nsigs == 16,
       "16 signatures, 15 of them unknown: accepted");
}

static void test_checkpoint(apr_pool_t *p)
{
    notary_checkpoint cp;
    const char *why;
    unsigned char root[32];
    static const char *const bad[] = {
        "o\n010\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",
        "o\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",
        "\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n10\n",
        "o\n10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n\n",
        "o\n 10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n99999999999999999999\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        NULL
    };
    int i, refused = 0;
    const char *t;
    notary_note_key *k = notary_note_key_generate(p, ORIGIN, &why), *other;
    const notary_note_key *keys[1];
    char *msg;
    apr_size_t len;
    notary_note *n;

    memset(root, 0x11, sizeof(root));
    t = notary_checkpoint_text(p, ORIGIN, 20852163, root);
    is_str(t, ORIGIN "\n20852163\nERERERERERERERERERERERERERERERERERERERERERE=\n", "checkpoint text: origin, size, base64 root");
    ok(notary_checkpoint_parse(p, t, strlen(t), &cp, &why) == 0 && cp.size == 20852163 && !cp.extensions
           && strcmp(cp.origin, ORIGIN) == 0 && memcmp(cp.root, root, 32) == 0,
       "checkpoint parses back");
    /* the C2SP tlog-checkpoint example's body */
    t = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    ok(notary_checkpoint_parse(p, t, strlen(t), &cp, &why) == 0 && cp.size == 20852163
           && strcmp(cp.origin, "example.com/behind-the-sofa") == 0,
       "the tlog-checkpoint example body parses");
    t = "o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nx\ny z\n";
    ok(notary_checkpoint_parse(p, t, strlen(t), &cp, &why) == 0 && cp.size == 0
           && strcmp(cp.extensions, "x\ny z\n") == 0,
       "size 0 and extension lines");
    for (i = 0; bad[i]; i++) {
        if (notary_checkpoint_parse(p, bad[i], strlen(bad[i]), &cp, &why) == 0)
            diag("accepted %s", bad[i]);
        else
            refused++;
    }
    is_int(refused, i, "malformed checkpoint bodies refused");

    keys[0] = k;
    t = notary_checkpoint_text(p, ORIGIN, 7, root);
    notary_note_sign(p, t, strlen(t), keys, 1, &msg, &len, &why);
    ok(notary_checkpoint_open(p, msg, len, keys, 1, &cp, &n, &why) == 0 && cp.size == 7, "signed checkpoint opens");
    other = notary_note_key_generate(p, "other.example/log", &why);
    keys[0] = other;
    notary_note_sign(p, t, strlen(t), keys, 1, &msg, &len, &why);
    ok(notary_checkpoint_open(p, msg, len, keys, 1, &cp, &n, &why) != 0,
       "a checkpoint of origin A signed by key B is refused (%s)", why);
    {
        /* a witness's cosignature first, the log's second, both keys known */
        const notary_note_key *two[2];
        two[0] = other;
        two[1] = k;
        notary_note_sign(p, t, strlen(t), two, 2, &msg, &len, &why);
        ok(notary_checkpoint_open(p, msg, len, two, 2, &cp, &n, &why) == 0,
           "a checkpoint cosigned by another known key before the log's signature opens (%s)", why ? why : "ok");
    }
}

/* A small log: n records, their entries, tree; receipt of record i. */
typedef struct {
    unsigned char entries[16][NOTARY_LEAF_LEN];
    unsigned char *metas[16];
    apr_size_t meta_lens[16];
    unsigned char leaves[16 * 32];
    int n;
} small_log;

static void make_log(apr_pool_t *p, small_log *lg, int n)
{
    int i;

    lg->n = n;
    for (i = 0; i < n; i++) {
        notary_leaf_record r;
        notary_leaf_entry e;
        unsigned char salt[16];
        char *body = apr_psprintf(p, "body %d", i);

        memset(&r, 0, sizeof(r));
        memset(salt, i, sizeof(salt));
        r.direction = i % 2 ? NOTARY_LEAF_RESPONSE : NOTARY_LEAF_REQUEST;
        r.status = i % 2 ? 200 : -1;
        r.recorded_at_us = APR_INT64_C(1767225600000000) + i;
        r.salt = salt;
        r.sender_spki = (const unsigned char *)"consumer key";
        r.sender_spki_len = 12;
        r.receiver_spki = (const unsigned char *)"merchant key";
        r.receiver_spki_len = 12;
        notary_leaf_meta_set(&r.meta.merchant, &r.meta.merchant_len, "shop");
        notary_leaf_meta_set(&r.meta.uri, &r.meta.uri_len, apr_psprintf(p, "/doc/%d", i));
        notary_leaf_meta_set(&r.meta.exchange_id, &r.meta.exchange_id_len, apr_psprintf(p, "x%d", i / 2));
        r.body = (const unsigned char *)body;
        r.body_len = strlen(body);
        notary_leaf_from_record(p, &r, &e);
        notary_leaf_encode(&e, lg->entries[i]);
        lg->metas[i] = notary_leaf_meta_encode(p, &r.meta, &lg->meta_lens[i]);
        notary_merkle_leaf_hash(lg->entries[i], NOTARY_LEAF_LEN, lg->leaves + i * 32);
    }
}

static char *make_receipt(apr_pool_t *p, small_log *lg, int i, const notary_note_key *k, apr_size_t *len)
{
    notary_merkle_source src;
    notary_tlog_proof tp;
    unsigned char root[32], *proof;
    const char *text;
    char *cp;
    apr_size_t count, cplen;
    const notary_note_key *keys[1];

    keys[0] = k;
    notary_merkle_source_leaves(&src, lg->leaves, (apr_uint64_t)lg->n);
    notary_merkle_root(&src, (apr_uint64_t)lg->n, root);
    notary_merkle_prove_inclusion(p, &src, (apr_uint64_t)i, (apr_uint64_t)lg->n, &proof, &count);
    text = notary_checkpoint_text(p, k->name, (apr_uint64_t)lg->n, root);
    notary_note_sign(p, text, strlen(text), keys, 1, &cp, &cplen, NULL);
    memset(&tp, 0, sizeof(tp));
    tp.extra = notary_receipt_extra(p, lg->entries[i], lg->metas[i], lg->meta_lens[i], NULL, 0, &tp.extra_len);
    tp.index = (apr_uint64_t)i;
    tp.proof = proof;
    tp.count = count;
    tp.checkpoint = cp;
    tp.checkpoint_len = cplen;
    return notary_tlog_proof_format(p, &tp, len);
}

static void test_receipt(apr_pool_t *p)
{
    const char *why = NULL;
    notary_note_key *k = notary_note_key_generate(p, ORIGIN, &why);
    const notary_note_key *keys[1];
    small_log lg;
    notary_receipt r;
    notary_tlog_proof tp;
    char *rc, *bad;
    apr_size_t len, blen, bit;
    int i, all_ok = 1, accepted = 0, tried = 0;

    keys[0] = k;
    make_log(p, &lg, 11);
    for (i = 0; i < lg.n; i++) {
        rc = make_receipt(p, &lg, i, k, &len);
        if (notary_receipt_verify(p, rc, len, keys, 1, &r, &why) != 0 || r.tp.index != (apr_uint64_t)i
            || strcmp(r.meta.uri, apr_psprintf(p, "/doc/%d", i)) != 0) {
            all_ok = 0;
            diag("receipt %d: %s", i, why);
        }
    }
    ok(all_ok, "receipts of all 11 records of an 11-leaf log verify, metadata read back");

    rc = make_receipt(p, &lg, 6, k, &len);
    ok(strncmp(rc, "c2sp.org/tlog-proof@v1\nextra ", 29) == 0, "a receipt starts as a tlog-proof with extra");
    ok(notary_tlog_proof_parse(p, rc, len, &tp, &why) == 0 && tp.count == 4 && tp.index == 6,
       "index 6 of 11 has an inclusion proof of 4 hashes");

    /* every bit of the decoded extra (entry and metadata) */
    for (bit = 0; bit < tp.extra_len * 8; bit++) {
        notary_tlog_proof t2 = tp;
        unsigned char *x = apr_pmemdup(p, tp.extra, tp.extra_len);
        x[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        t2.extra = x;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        tried++;
        if (notary_receipt_verify(p, bad, blen, keys, 1, &r, NULL) == 0) accepted++;
    }
    /* every bit of every proof hash */
    for (bit = 0; bit < tp.count * 32 * 8; bit++) {
        notary_tlog_proof t2 = tp;
        unsigned char *x = apr_pmemdup(p, tp.proof, tp.count * 32);
        x[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        t2.proof = x;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        tried++;
        if (notary_receipt_verify(p, bad, blen, keys, 1, &r, NULL) == 0) accepted++;
    }
    /* every bit of the root, re-signed with the real key: a lying log */
    for (bit = 0; bit < 256; bit++) {
        notary_tlog_proof t2 = tp;
        notary_checkpoint cp;
        notary_note *n;
        char *cpm;
        apr_size_t cplen;
        const char *text;

        notary_checkpoint_open(p, tp.checkpoint, tp.checkpoint_len, keys, 1, &cp, &n, NULL);
        cp.root[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        text = notary_checkpoint_text(p, cp.origin, cp.size, cp.root);
        notary_note_sign(p, text, strlen(text), keys, 1, &cpm, &cplen, NULL);
        t2.checkpoint = cpm;
        t2.checkpoint_len = cplen;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        tried++;
        if (notary_receipt_verify(p, bad, blen, keys, 1, &r, NULL) == 0) accepted++;
    }
    /* every bit of the checkpoint's signature */
    {
        for (bit = 0; bit < 68 * 8; bit++) {
            notary_tlog_proof t2 = tp;
            int flipped;
            char *c2 = flip_sig(p, tp.checkpoint, 0, (unsigned)bit, &flipped);
            t2.checkpoint = c2;
            t2.checkpoint_len = strlen(c2);
            bad = notary_tlog_proof_format(p, &t2, &blen);
            tried++;
            if (notary_receipt_verify(p, bad, blen, keys, 1, &r, NULL) == 0) accepted++;
        }
    }
    /* other indexes */
    for (i = 0; i < 12; i++) {
        notary_tlog_proof t2 = tp;
        if (i == 6) continue;
        t2.index = (apr_uint64_t)i;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        tried++;
        if (notary_receipt_verify(p, bad, blen, keys, 1, &r, NULL) == 0) accepted++;
    }
    ok(accepted == 0, "all %d tamperings refused: every bit of entry and metadata, of each proof hash, "
                      "of the root (checkpoint re-signed), of the signature; every other index (%d accepted)",
       tried, accepted);

    {
        notary_tlog_proof t2 = tp;
        t2.extra = NULL;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        ok(notary_receipt_verify(p, bad, blen, keys, 1, &r, &why) != 0, "a receipt without extra is refused (%s)", why);
        t2 = tp;
        t2.extra = notary_receipt_extra(p, lg.entries[6], lg.metas[6], lg.meta_lens[6],
                                        (const unsigned char *)"TST", 3, &t2.extra_len);
        bad = notary_tlog_proof_format(p, &t2, &blen);
        ok(notary_receipt_verify(p, bad, blen, keys, 1, &r, &why) == 0 && r.timestamp_len == 3
               && memcmp(r.timestamp, "TST", 3) == 0,
           "a time-stamp token after the metadata is read");
        t2.extra_len--;
        bad = notary_tlog_proof_format(p, &t2, &blen);
        ok(notary_receipt_verify(p, bad, blen, keys, 1, &r, &why) != 0, "a cut time-stamp token is refused (%s)", why);
    }
    {
        notary_note_key *other = notary_note_key_generate(p, ORIGIN, NULL);
        keys[0] = other;
        ok(notary_receipt_verify(p, rc, len, keys, 1, &r, &why) != 0,
           "a receipt does not verify with another key of the same name (%s)", why);
    }
}

static void test_tlog_proof_format(apr_pool_t *p)
{
    /* the structure of the tlog-proof spec's example, with a full note */
    const char *why;
    notary_note_key *k = notary_note_key_generate(p, "example.com/fancylog", &why);
    const notary_note_key *keys[1];
    char *cp, *file, *again;
    apr_size_t cplen, len;
    notary_tlog_proof tp;
    const char *text = "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n";

    keys[0] = k;
    notary_note_sign(p, text, strlen(text), keys, 1, &cp, &cplen, &why);
    file = apr_pstrcat(p, "c2sp.org/tlog-proof@v1\nindex 73894\n"
                          "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
                          "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n\n",
                       cp, NULL);
    ok(notary_tlog_proof_parse(p, file, strlen(file), &tp, &why) == 0 && !tp.extra && tp.index == 73894
           && tp.count == 2 && tp.checkpoint_len == cplen,
       "a tlog-proof without extra parses");
    again = notary_tlog_proof_format(p, &tp, &len);
    is_str(again, file, "and formats back to the same bytes");
    ok(notary_tlog_proof_parse(p, "c2sp.org/tlog-proof@v1\nindex 01\n\n", 33, &tp, &why) != 0,
       "index with a leading zero refused");
    ok(notary_tlog_proof_parse(p, "c2sp.org/tlog-proof@v2\nindex 1\n\n", 32, &tp, &why) != 0,
       "another version refused");
    ok(notary_tlog_proof_parse(p, "c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\n", 37, &tp, &why) != 0,
       "a proof line that is not a 32-byte hash refused (%s)", why);
}

static void test_promise(apr_pool_t *p)
{
    const char *why = NULL;
    notary_note_key *k = notary_note_key_generate(p, ORIGIN, &why);
    const notary_note_key *keys[1];
    small_log lg;
    notary_promise pr;
    notary_note *n;
    const char *text;
    char *msg, *bad;
    apr_size_t len, bit;
    int accepted = 0, tried = 0;

    keys[0] = k;
    make_log(p, &lg, 2);
    text = notary_promise_text(p, ORIGIN, lg.entries[1], 60);
    ok(strncmp(text, "notary-promise/v1\norigin " ORIGIN "\nentry bm90YXJ5LWxlYWYvdjEK", 60) == 0,
       "promise text: header, origin, base64 entry");
    notary_note_sign(p, text, strlen(text), keys, 1, &msg, &len, &why);
    ok(notary_promise_verify(p, msg, len, keys, 1, &pr, &n, &why) == 0 && pr.mmd == 60
           && pr.entry.direction == NOTARY_LEAF_RESPONSE && memcmp(pr.entry_bytes, lg.entries[1], NOTARY_LEAF_LEN) == 0,
       "signed promise verifies and gives back the entry");
    for (bit = 0; bit < NOTARY_LEAF_LEN * 8; bit++) {
        unsigned char e[NOTARY_LEAF_LEN];
        const char *t2;
        memcpy(e, lg.entries[1], sizeof(e));
        e[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        t2 = notary_promise_text(p, ORIGIN, e, 60);
        /* the signature of the true promise under a changed text */
        bad = apr_pstrcat(p, t2, strstr(msg, "\n\n") + 1, NULL);
        tried++;
        if (notary_promise_verify(p, bad, strlen(bad), keys, 1, &pr, &n, NULL) == 0) accepted++;
    }
    ok(accepted == 0, "all %d single-bit flips of the promised entry refused", tried);
    text = notary_promise_text(p, "other.example/log", lg.entries[1], 60);
    notary_note_sign(p, text, strlen(text), keys, 1, &msg, &len, &why);
    ok(notary_promise_verify(p, msg, len, keys, 1, &pr, &n, &why) != 0, "a promise naming another origin is refused (%s)", why);
    text = apr_pstrcat(p, notary_promise_text(p, ORIGIN, lg.entries[1], 60), "extra line\n", NULL);
    ok(notary_promise_parse(p, text, strlen(text), &pr, &why) != 0, "a promise with a fifth line is refused");
    text = "notary-promise/v1\norigin " ORIGIN "\nentry AAAA\nmmd 60\n";
    ok(notary_promise_parse(p, text, strlen(text), &pr, &why) != 0, "a promise with a short entry is refused (%s)", why);
}

static void test_b64(apr_pool_t *p)
{
    apr_size_t n;
    unsigned char *d;

    is_str(notary_b64_encode(p, (const unsigned char *)"foob", 4), "Zm9vYg==", "base64 with padding");
    d = notary_b64_decode(p, "Zm9vYg==", 8, &n);
    ok(d && n == 4 && memcmp(d, "foob", 4) == 0, "decodes back");
    ok(!notary_b64_decode(p, "Zm9vYh==", 8, &n), "non-zero unused bits refused");
    ok(!notary_b64_decode(p, "Zm9vYg", 6, &n), "missing padding refused");
    ok(!notary_b64_decode(p, "Zm9v\nYg==", 9, &n), "a newline inside refused");
    ok(!notary_b64_decode(p, "Zm9vY=g=", 8, &n), "padding in the middle refused");
    ok(!notary_b64_decode(p, "Zm9-Yg==", 8, &n), "base64url characters refused");
    d = notary_b64_decode(p, "", 0, &n);
    ok(d && n == 0, "the empty string decodes to nothing");
}

int main(void)
{
    apr_pool_t *p;

    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        printf("Bail out! apr\n");
        return 1;
    }
    test_b64(p);
    test_known_answers(p);
    test_keys(p);
    test_sign_open(p);
    test_malformed(p);
    test_checkpoint(p);
    test_tlog_proof_format(p);
    test_promise(p);
    test_receipt(p);
    apr_pool_destroy(p);
    apr_terminate();
    return tap_done();
}
