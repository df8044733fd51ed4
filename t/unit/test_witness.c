/* Witness cosignatures (notary_witness, C2SP tlog-witness and
 * tlog-cosignature, Ed25519 cosignature/v1): the spec's examples (signed
 * message, the cosignature's key ID and time), vkeys of type 0x04, the
 * add-checkpoint body, the 409 body, the response parser, and every single
 * bit flip of a cosignature refused; a wrong key ID and a message with a
 * time spelt otherwise than the spec's one way refused. TAP. */
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <openssl/evp.h>

#include "notary_note.h"
#include "notary_witness.h"
#include "tap.h"

#define EM "\xe2\x80\x94 "
/* c2sp.org/tlog-cosignature: the example checkpoint, its witness line, and
 * the signed message of the "Ed25519 signed message" section */
#define SPEC_TEXT "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
#define SPEC_COSIG "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
#define SPEC_MESSAGE "cosignature/v1\ntime 1679315147\n" SPEC_TEXT

static const unsigned char seed_a[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                          17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
static const unsigned char seed_b[32] = { 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                                          16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 };

/* Ed25519 over any message with seed: signatures the library would never
 * make (another spelling of the time line) */
static int raw_sign(const unsigned char seed[32], const char *msg, apr_size_t len, unsigned char sig[64])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    size_t n = 64;
    int ok_ = k && c && EVP_DigestSignInit(c, NULL, NULL, NULL, k) == 1
           && EVP_DigestSign(c, sig, &n, (const unsigned char *)msg, len) == 1 && n == 64;

    EVP_MD_CTX_free(c);
    EVP_PKEY_free(k);
    return ok_ ? 0 : -1;
}

static void put_head(unsigned char raw[76], apr_uint32_t id, apr_uint64_t t)
{
    int i;

    for (i = 0; i < 4; i++) raw[i] = (unsigned char)(id >> (24 - 8 * i));
    for (i = 0; i < 8; i++) raw[4 + i] = (unsigned char)(t >> (56 - 8 * i));
}

static void test_spec(apr_pool_t *p)
{
    apr_size_t len, rawlen;
    char *msg = notary_witness_message(p, 1679315147, SPEC_TEXT, strlen(SPEC_TEXT), &len);
    unsigned char *raw = notary_b64_decode(p, SPEC_COSIG, strlen(SPEC_COSIG), &rawlen);
    apr_uint64_t t = 0;
    int i;

    ok(len == strlen(SPEC_MESSAGE) && !memcmp(msg, SPEC_MESSAGE, len),
       "signed message is the spec's example byte for byte");
    ok(raw && rawlen == 76, "the spec's example cosignature is a key ID, 8-byte time, 64-byte signature (%d bytes)",
       raw ? (int)rawlen : -1);
    if (raw && rawlen == 76) {
        for (i = 0; i < 8; i++) t = (t << 8) | raw[4 + i];
        is_int(t, 1679315147, "the example cosignature's time is the example message's time line");
    }
}

static void test_vkeys(apr_pool_t *p)
{
    const char *detail = NULL;
    notary_witness_key *a = notary_witness_key_from_seed(p, "witness.example/w1", seed_a, &detail);
    notary_note_key *nk = notary_note_key_from_seed(p, "witness.example/w1", seed_a, &detail);
    notary_witness_key *back;
    unsigned char h[32], buf[64];
    unsigned int hl = 0;
    apr_uint32_t id;
    size_t nl = strlen("witness.example/w1");

    ok(a != NULL, "cosigner from a seed");
    if (!a) return;
    /* the key ID, recomputed here: SHA-256(name || 0x0A || 0x04 || pub)[:4] */
    memcpy(buf, "witness.example/w1", nl);
    buf[nl] = '\n';
    buf[nl + 1] = 0x04;
    memcpy(buf + nl + 2, a->pub, 32);
    EVP_Digest(buf, nl + 34, h, &hl, EVP_sha256(), NULL);
    id = ((apr_uint32_t)h[0] << 24) | ((apr_uint32_t)h[1] << 16) | ((apr_uint32_t)h[2] << 8) | h[3];
    is_int(a->id, id, "key ID is SHA-256(name || \\n || 0x04 || pub)[:4]");
    ok(nk && nk->id != a->id, "a type 0x01 key ID differs from the 0x04 one of the same key");
    back = notary_witness_vkey_parse(p, a->vkey, &detail);
    ok(back && back->id == a->id && !memcmp(back->pub, a->pub, 32) && !strcmp(back->name, a->name),
       "vkey %s parses back", a->vkey);
    detail = NULL;
    ok(!notary_witness_vkey_parse(p, notary_note_vkey(p, nk), &detail) && detail && strstr(detail, "0x04"),
       "a signed-note Ed25519 vkey (type 0x01) is refused: %s", detail ? detail : "");
    {
        char *bad = apr_pstrdup(p, a->vkey);
        char *plus = strchr(bad, '+');
        plus[1] = plus[1] == '0' ? '1' : '0';
        detail = NULL;
        ok(!notary_witness_vkey_parse(p, bad, &detail), "a vkey whose key ID does not match is refused: %s",
           detail ? detail : "");
    }
    ok(!notary_witness_vkey_parse(p, "witness.example/w1+00000000", &detail), "a vkey without key material is refused");
    ok(!notary_witness_vkey_parse(p, "w+0000000+BA==", &detail), "a 7-digit key ID is refused");
}

static void test_request(apr_pool_t *p)
{
    unsigned char proof[64 * 32];
    const char *cp = "o\n5\nAAAA\n\n" EM "o AAAAAAAA\n";
    const char *detail = NULL;
    char *out = NULL, *want;
    apr_size_t len = 0;

    memset(proof, 0, 32);
    memset(proof + 32, 0xff, 32);
    ok(notary_witness_request(p, 0, NULL, 0, cp, strlen(cp), &out, &len, &detail) == 0
           && !strcmp(out, apr_pstrcat(p, "old 0\n\n", cp, NULL)) && len == strlen(out),
       "old size 0, no proof: \"old 0\\n\\n\" then the checkpoint");
    want = apr_pstrcat(p, "old 20852014\n", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                       "//////////////////////////////////////////8=\n\n", cp, NULL);
    ok(notary_witness_request(p, 20852014, proof, 2, cp, strlen(cp), &out, &len, &detail) == 0
           && !strcmp(out, want),
       "old size and two proof lines in base64, a blank line, the checkpoint");
    ok(notary_witness_request(p, 1, proof, 64, cp, strlen(cp), &out, &len, &detail) != 0,
       "a proof of 64 hashes is never sent (the spec allows 63)");
}

static void test_conflict(apr_pool_t *p)
{
    static const char *bad[] = { "", "\n", "12", "012\n", "12a\n", " 12\n", "12 \n", "12\n\n",
                                 "-1\n", "+1\n", "18446744073709551616\n", "99999999999999999999\n", NULL };
    apr_uint64_t v = 7;
    const char *detail;
    int i;

    ok(notary_witness_conflict_parse("20852014\n", 9, &v, &detail) == 0 && v == 20852014, "409 body 20852014");
    ok(notary_witness_conflict_parse("0\n", 2, &v, &detail) == 0 && v == 0, "409 body 0");
    for (i = 0; bad[i]; i++) {
        ok(notary_witness_conflict_parse(bad[i], strlen(bad[i]), &v, &detail) != 0,
           "409 body #%d refused", i);
    }
}

static void test_cosign(apr_pool_t *p)
{
    const char *detail = NULL, *text = SPEC_TEXT;
    apr_size_t tlen = strlen(text), llen = 0, rawlen, mlen;
    notary_witness_key *a = notary_witness_key_from_seed(p, "witness.example/w1", seed_a, &detail);
    notary_witness_key *b = notary_witness_key_from_seed(p, "witness.example/w2", seed_b, &detail);
    notary_witness_key *b_as_a = notary_witness_key_from_seed(p, "witness.example/w1", seed_b, &detail);
    char *line = NULL, *lb = NULL, *resp;
    unsigned char *raw, forged[76];
    notary_cosig cs;
    apr_uint64_t t;
    int i, bit, refused = 0, tries = 0;
    const char *b64;

    if (!a || !b || !b_as_a) {
        ok(0, "keys: %s", detail ? detail : "");
        return;
    }
    ok(notary_witness_cosign(p, a, 1679315147, text, tlen, &line, &llen, &detail) == 0, "cosign");
    memset(&cs, 0, sizeof(cs));
    ok(notary_witness_response(p, a, text, tlen, line, llen, &cs, &detail) == 0 && cs.time == 1679315147
           && !strcmp(cs.line, line),
       "the witness's own line verifies, time 1679315147 (%s)", detail ? detail : "");
    ok(notary_witness_cosign(p, a, 0, text, tlen, &line, &llen, &detail) != 0, "no cosignature at time 0");
    ok(notary_witness_cosign(p, a, 1679315147, text, tlen, &line, &llen, &detail) == 0, "cosign again");
    b64 = strchr(line + 4, ' ') + 1;
    raw = notary_b64_decode(p, b64, strlen(b64) - 1, &rawlen);
    ok(raw && rawlen == 76, "the line carries 76 bytes");
    if (!raw || rawlen != 76) return;
    ok(notary_witness_sig_verify(p, a, text, tlen, raw, rawlen, &t, &detail) == 0, "raw cosignature verifies");

    /* every single-bit flip of the cosignature (ID, time, signature) */
    for (i = 0; i < 76; i++) {
        for (bit = 0; bit < 8; bit++) {
            unsigned char *f = apr_pmemdup(p, raw, 76);
            char *fl;
            const char *d2 = NULL;

            f[i] ^= (unsigned char)(1 << bit);
            fl = apr_pstrcat(p, EM, "witness.example/w1 ", notary_b64_encode(p, f, 76), "\n", NULL);
            tries++;
            /* a flipped ID is another key's line: "no cosignature of its key" */
            if (notary_witness_sig_verify(p, a, text, tlen, f, 76, &t, &d2) != 0
                && notary_witness_response(p, a, text, tlen, fl, strlen(fl), &cs, &d2) != 0) {
                refused++;
            }
            else {
                diag("flip of byte %d bit %d accepted", i, bit);
            }
        }
    }
    is_int(refused, tries, "every one of the %d single-bit flips of a cosignature is refused", tries);

    /* every single-bit flip of the cosigned text */
    refused = tries = 0;
    for (i = 0; i < (int)tlen; i++) {
        for (bit = 0; bit < 8; bit++) {
            char *ft = apr_pstrdup(p, text);

            ft[i] ^= (char)(1 << bit);
            tries++;
            if (notary_witness_sig_verify(p, a, ft, tlen, raw, 76, &t, &detail) != 0) refused++;
        }
    }
    is_int(refused, tries, "every one of the %d single-bit flips of the checkpoint text is refused", tries);

    /* wrong key ID: b's signature under a's name and ID, a's under b's */
    ok(notary_witness_sig_verify(p, b, text, tlen, raw, 76, &t, &detail) != 0 && strstr(detail, "key ID"),
       "a's cosignature checked as b's: wrong key ID (%s)", detail);
    ok(notary_witness_cosign(p, b_as_a, 1679315147, text, tlen, &lb, &llen, &detail) == 0, "cosign by another key named w1");
    detail = NULL;
    ok(notary_witness_response(p, a, text, tlen, lb, llen, &cs, &detail) != 0,
       "another key under the witness's name (other key ID) is not the witness's: %s", detail ? detail : "");
    {
        unsigned char *rb;
        apr_size_t rbl;
        const char *bb = strchr(lb + 4, ' ') + 1;

        rb = notary_b64_decode(p, bb, strlen(bb) - 1, &rbl);
        put_head(rb, a->id, 1679315147); /* a's ID on b's signature */
        detail = NULL;
        ok(notary_witness_sig_verify(p, a, text, tlen, rb, rbl, &t, &detail) != 0,
           "another key's signature carrying the witness's key ID is refused: %s", detail ? detail : "");
    }

    /* the time line has one spelling: a signature over any other is refused */
    {
        static const char *heads[] = { "cosignature/v1\ntime 01679315147\n", "cosignature/v1\ntime  1679315147\n",
                                       "cosignature/v1\ntime +1679315147\n", "cosignature/v1\ntime 1679315147 \n",
                                       "cosignature/v1\nTime 1679315147\n", "cosignature/v1\r\ntime 1679315147\n",
                                       "cosignature/v2\ntime 1679315147\n", "time 1679315147\n", NULL };
        for (i = 0; heads[i]; i++) {
            const char *m = apr_pstrcat(p, heads[i], text, NULL);

            put_head(forged, a->id, 1679315147);
            if (raw_sign(seed_a, m, strlen(m), forged + 12) != 0) {
                ok(0, "raw sign");
                continue;
            }
            ok(notary_witness_sig_verify(p, a, text, tlen, forged, 76, &t, &detail) != 0,
               "signed message with header %d (another spelling of the time or header) is refused", i);
        }
        /* the right message: the forging helper itself is sound */
        mlen = 0;
        {
            char *m = notary_witness_message(p, 1679315147, text, tlen, &mlen);
            ok(raw_sign(seed_a, m, mlen, forged + 12) == 0
                   && notary_witness_sig_verify(p, a, text, tlen, forged, 76, &t, &detail) == 0,
               "the same helper over the spec's spelling verifies");
        }
        /* time 0 and time 2^63: signed, still refused */
        {
            apr_uint64_t ts[2] = { 0, (apr_uint64_t)1 << 63 };
            for (i = 0; i < 2; i++) {
                char *m = notary_witness_message(p, ts[i], text, tlen, &mlen);
                put_head(forged, a->id, ts[i]);
                raw_sign(seed_a, m, mlen, forged + 12);
                ok(notary_witness_sig_verify(p, a, text, tlen, forged, 76, &t, &detail) != 0,
                   "a cosignature with time %" APR_UINT64_T_FMT " is refused", ts[i]);
            }
        }
    }

    /* the response: other keys' lines ignored, two of ours or junk refused */
    ok(notary_witness_cosign(p, b, 1679315148, text, tlen, &lb, &llen, &detail) == 0, "cosign by w2");
    resp = apr_pstrcat(p, lb, line, EM, "other.example/x AAAAAQAB\n", NULL);
    ok(notary_witness_response(p, a, text, tlen, resp, strlen(resp), &cs, &detail) == 0 && !strcmp(cs.line, line),
       "w1's line found among other keys' lines");
    ok(notary_witness_response(p, b, text, tlen, resp, strlen(resp), &cs, &detail) == 0 && cs.time == 1679315148,
       "w2's line found in the same answer");
    resp = apr_pstrcat(p, line, line, NULL);
    ok(notary_witness_response(p, a, text, tlen, resp, strlen(resp), &cs, &detail) != 0, "two lines of one key refused");
    resp = apr_pstrcat(p, line, "hello\n", NULL);
    ok(notary_witness_response(p, a, text, tlen, resp, strlen(resp), &cs, &detail) != 0, "a line that is no signature refused");
    ok(notary_witness_response(p, a, text, tlen, line, llen - 1, &cs, &detail) != 0, "a last line without newline refused");
    ok(notary_witness_response(p, a, text, tlen, lb, strlen(lb), &cs, &detail) != 0, "an answer without the witness's line refused");
    ok(notary_witness_response(p, a, text, tlen, "", 0, &cs, &detail) != 0, "an empty answer refused");
}

static void test_checkpoint(apr_pool_t *p)
{
    const char *detail = NULL;
    notary_note_key *log = notary_note_key_from_seed(p, "notary.example/log", seed_b, &detail);
    notary_witness_key *a = notary_witness_key_from_seed(p, "witness.example/w1", seed_a, &detail);
    notary_witness_key *b = notary_witness_key_from_seed(p, "witness.example/w2", seed_b, &detail);
    unsigned char root[32];
    const char *text, *with;
    char *note, *line, *lb;
    apr_size_t nlen, llen;
    const notary_note_key *lk[1];
    const notary_witness_key *wa[1], *wab[2];
    size_t pos;

    memset(root, 0x5a, sizeof(root));
    text = notary_checkpoint_text(p, "notary.example/log", 7, root);
    lk[0] = log;
    wa[0] = a;
    wab[0] = a;
    wab[1] = b;
    if (!log || !a || !b || notary_note_sign(p, text, strlen(text), lk, 1, &note, &nlen, &detail) != 0
        || notary_witness_cosign(p, a, 1700000000, text, strlen(text), &line, &llen, &detail) != 0
        || notary_witness_cosign(p, b, 1700000001, text, strlen(text), &lb, &llen, &detail) != 0) {
        ok(0, "setup: %s", detail ? detail : "");
        return;
    }
    with = apr_pstrcat(p, note, line, NULL);
    ok(notary_witness_check_checkpoint(p, with, strlen(with), lk, 1, wa, 1, &detail) == 0,
       "log-signed checkpoint with w1's cosignature passes --witness w1 (%s)", detail);
    ok(notary_witness_check_checkpoint(p, note, nlen, lk, 1, wa, 1, &detail) != 0 && strstr(detail, "no cosignature"),
       "without it: %s", detail);
    ok(notary_witness_check_checkpoint(p, with, strlen(with), lk, 1, wab, 2, &detail) != 0,
       "w1's cosignature does not satisfy --witness w2: %s", detail);
    with = apr_pstrcat(p, note, lb, line, NULL);
    ok(notary_witness_check_checkpoint(p, with, strlen(with), lk, 1, wab, 2, &detail) == 0,
       "both cosignatures, either order: passes --witness w1 --witness w2");
    /* a flipped cosignature character: refused */
    with = apr_pstrcat(p, note, line, NULL);
    pos = strlen(note) + llen - 10;
    {
        char *f = apr_pstrdup(p, with);
        f[pos] = f[pos] == 'A' ? 'B' : 'A';
        ok(notary_witness_check_checkpoint(p, f, strlen(f), lk, 1, wa, 1, &detail) != 0,
           "a cosignature with one character changed: %s", detail);
    }
    /* a cosignature of another checkpoint moved onto this one */
    {
        const char *t2 = notary_checkpoint_text(p, "notary.example/log", 8, root);
        char *l2;
        if (notary_witness_cosign(p, a, 1700000000, t2, strlen(t2), &l2, &llen, &detail) == 0) {
            with = apr_pstrcat(p, note, l2, NULL);
            ok(notary_witness_check_checkpoint(p, with, strlen(with), lk, 1, wa, 1, &detail) != 0,
               "a cosignature of size 8 on the checkpoint of size 7 is refused: %s", detail);
        }
    }
}

int main(void)
{
    apr_pool_t *p;

    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        printf("Bail out! APR\n");
        return 2;
    }
    test_spec(p);
    test_vkeys(p);
    test_request(p);
    test_conflict(p);
    test_cosign(p);
    test_checkpoint(p);
    apr_pool_destroy(p);
    apr_terminate();
    return tap_done();
}
