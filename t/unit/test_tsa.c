/* Unit tests of notary_tsa (RFC 3161) against OpenSSL's own `openssl ts`
 * as the independent TSA: our query must be one it answers, its reply and
 * token must pass our checks, and anything altered must not. Needs the
 * openssl command; no root, no servers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "notary_http.h"
#include "notary_tsa.h"
#include "notary_util.h"
#include "tap.h"

static apr_pool_t *pool;
static char dir[256];
static const char *keyopt; /* openssl req's key: the TSA's key type */

static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    apr_vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    rc = system(cmd);
    if (rc != 0) {
        diag("command failed (%d): %s", rc, cmd);
    }
    return rc;
}

static int write_file(const char *name, const unsigned char *d, apr_size_t len)
{
    FILE *f = fopen(apr_pstrcat(pool, dir, "/", name, NULL), "wb");
    int ok_ = f && fwrite(d, 1, len, f) == len;

    if (f) {
        ok_ = fclose(f) == 0 && ok_;
    }
    return ok_ ? 0 : -1;
}

static unsigned char *read_file(const char *name, apr_size_t *len)
{
    char *data;
    apr_file_t *f;
    apr_finfo_t fi;

    if (apr_file_open(&f, apr_pstrcat(pool, dir, "/", name, NULL), APR_FOPEN_READ, 0, pool)
            != APR_SUCCESS
        || apr_file_info_get(&fi, APR_FINFO_SIZE, f) != APR_SUCCESS) {
        return NULL;
    }
    data = apr_palloc(pool, (apr_size_t)fi.size + 1);
    *len = (apr_size_t)fi.size;
    if (apr_file_read_full(f, data, *len, NULL) != APR_SUCCESS) {
        return NULL;
    }
    apr_file_close(f);
    return (unsigned char *)data;
}

/* A CA and a TSA certificate (extendedKeyUsage critical timeStamping, as
 * RFC 3161 2.3 requires), a second CA that trusts nothing of ours, and the
 * `openssl ts` configuration. */
static int make_pki(void)
{
    FILE *f = fopen(apr_pstrcat(pool, dir, "/tsa.cnf", NULL), "w");

    if (!f) {
        return -1;
    }
    fprintf(f, "[ tsa ]\ndefault_tsa = tsa_config\n\n[ tsa_config ]\n"
               "dir = %s\nserial = $dir/serial\nsigner_cert = $dir/tsa.pem\n"
               "certs = $dir/tsa.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n"
               "default_policy = 1.2.3.4.1\ndigests = sha256, sha384\naccuracy = secs:1\n"
               "ordering = no\ntsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"
               "\n[ tsa_ext ]\nbasicConstraints = critical,CA:false\n"
               "keyUsage = critical,digitalSignature\nextendedKeyUsage = critical,timeStamping\n",
            dir);
    if (fclose(f) != 0) {
        return -1;
    }
    return sh("cd %s && echo 01 > serial"
              " && openssl req -x509 %s -nodes -days 30"
              "    -subj /CN=test-tsa-ca -keyout ca.key -out ca.pem 2>/dev/null"
              " && openssl req -x509 %s -nodes -days 30"
              "    -subj /CN=other-ca -keyout other.key -out other.pem 2>/dev/null"
              " && openssl req %s -nodes"
              "    -subj /CN=test-tsa -keyout tsa.key -out tsa.csr 2>/dev/null"
              " && openssl x509 -req -in tsa.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 30"
              "    -extfile tsa.cnf -extensions tsa_ext -out tsa.pem 2>/dev/null"
              " && openssl req %s -nodes"
              "    -subj /CN=not-a-tsa -keyout plain.key -out plain.csr 2>/dev/null"
              " && openssl x509 -req -in plain.csr -CA ca.pem -CAkey ca.key -set_serial 3 -days 30"
              "    -out plain.pem 2>/dev/null",
              dir, keyopt, keyopt, keyopt, keyopt);
}

/* `openssl ts -reply` for the query in q.der, signed by tsa.pem (or by
 * the given certificate and key), into the named file */
static int ts_reply(const char *out, const char *cert, const char *key)
{
    return sh("cd %s && openssl ts -reply -config tsa.cnf -queryfile q.der -signer %s -inkey %s"
              " -out %s 2>/dev/null",
              dir, cert, key, out);
}

static void run(const char *kind);

static unsigned char *read_vector(const char *name, apr_size_t *len)
{
    const char *src = getenv("NOTARY_SRCDIR") ? getenv("NOTARY_SRCDIR") : ".";
    char save[256];
    unsigned char *d;

    apr_cpystrn(save, dir, sizeof(save));
    apr_cpystrn(dir, apr_pstrcat(pool, src, "/docs/vectors/tsa", NULL), sizeof(dir));
    d = read_file(name, len);
    apr_cpystrn(dir, save, sizeof(dir));
    return d;
}

/* Known answer: docs/vectors/tsa/ holds a query made by `openssl ts
 * -query` over checkpoint-600 (the test log's checkpoint of docs/evidence.md),
 * OpenSSL's TSA's reply and token, and the CA (valid for 100 years). */
static void kat(void)
{
    unsigned char digest[32], *cp, *q, *reply, *token, *tok2 = NULL;
    apr_size_t cplen = 0, qlen = 0, rlen = 0, tlen = 0, t2len = 0;
    const char *err = NULL, *ca;
    apr_time_t gen = 0;

    diag("known-answer vectors, docs/vectors/tsa/");
    cp = read_vector("checkpoint-600", &cplen);
    q = read_vector("query.der", &qlen);
    reply = read_vector("reply.der", &rlen);
    token = read_vector("token.der", &tlen);
    ok(cp && q && reply && token, "vectors read");
    if (!(cp && q && reply && token)) {
        return;
    }
    ca = apr_pstrcat(pool, getenv("NOTARY_SRCDIR") ? getenv("NOTARY_SRCDIR") : ".",
                     "/docs/vectors/tsa/ca.pem", NULL);
    notary_sha256(cp, cplen, digest);
    ok(notary_tsa_token_verify(pool, token, tlen, digest, ca, &gen, &err) == 0,
       "the vector token verifies over SHA-256 of checkpoint-600%s%s", err ? ": " : "", err ? err : "");
    is_int(apr_time_sec(gen), 1796624267, "its genTime is 2026-12-07T06:17:47Z");
    err = NULL;
    ok(notary_tsa_reply_token(pool, q, qlen, reply, rlen, ca, &tok2, &t2len, &err) == 0,
       "the vector reply answers the vector query (openssl's own, nonce and all)%s%s", err ? ": " : "",
       err ? err : "");
    ok(tok2 && t2len == tlen && memcmp(tok2, token, tlen) == 0,
       "the token taken from the reply is the vector token, byte for byte");
    cp[0] ^= 1;
    notary_sha256(cp, cplen, digest);
    ok(notary_tsa_token_verify(pool, token, tlen, digest, ca, NULL, &err) != 0,
       "the vector token does not verify over a checkpoint with one bit changed");
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    if (notary_http_global_init() != 0) {
        printf("Bail out! libcurl's global init failed\n");
        return 1;
    }
    kat();
    /* the two kinds of TSA keys found in practice */
    keyopt = "-newkey ec -pkeyopt ec_paramgen_curve:P-256";
    run("EC P-256");
    keyopt = "-newkey rsa:2048";
    run("RSA 2048");
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

static void run(const char *kind)
{
    static const char checkpoint[] = "notary.example/log\n3\nAAAA\n\n\xe2\x80\x94 x y\n";
    unsigned char digest[32], other[32], *query = NULL, *query2 = NULL, *reply, *token = NULL,
                                         *bad;
    apr_size_t qlen = 0, q2len = 0, rlen = 0, tlen = 0, i;
    const char *err = NULL, *ca, *other_ca;
    apr_time_t gen = 0;
    unsigned long flips = 0, taken = 0;
    char tmpl[] = "/tmp/notary-tsa-XXXXXX";

    diag("a TSA with an %s key", kind);
    if (!mkdtemp(tmpl)) {
        printf("Bail out! mkdtemp failed\n");
        exit(1);
    }
    apr_cpystrn(dir, tmpl, sizeof(dir));
    if (make_pki() != 0) {
        printf("Bail out! cannot make the test PKI with openssl\n");
        exit(1);
    }
    ca = apr_pstrcat(pool, dir, "/ca.pem", NULL);
    other_ca = apr_pstrcat(pool, dir, "/other.pem", NULL);
    notary_sha256(checkpoint, sizeof(checkpoint) - 1, digest);
    memcpy(other, digest, 32);
    other[31] ^= 1;

    ok(notary_tsa_check_cafile(pool, ca, &err) == 0, "the CA file loads");
    ok(notary_tsa_check_cafile(pool, apr_pstrcat(pool, dir, "/tsa.cnf", NULL), &err) != 0,
       "a file without certificates is refused: %s", err ? err : "?");

    /* our query, answered by OpenSSL's TSA */
    ok(notary_tsa_query(pool, digest, &query, &qlen, &err) == 0, "query built");
    ok(notary_tsa_query(pool, digest, &query2, &q2len, &err) == 0, "a second query built");
    ok(qlen != q2len || memcmp(query, query2, qlen) != 0, "two queries differ (random nonces)");
    ok(write_file("q.der", query, qlen) == 0, "query written");
    ok(sh("cd %s && openssl ts -query -in q.der -text 2>/dev/null | grep -q 'Hash Algorithm: sha256'"
          " && openssl ts -query -in q.der -text | grep -q 'Certificate required: yes'"
          " && openssl ts -query -in q.der -text | grep -q 'Nonce: 0x'",
          dir)
           == 0,
       "openssl reads our query: SHA-256, a nonce, certReq");
    ok(ts_reply("r.der", "tsa.pem", "tsa.key") == 0, "openssl ts -reply answers it");
    reply = read_file("r.der", &rlen);
    ok(reply != NULL, "reply read (%lu bytes)", (unsigned long)rlen);
    err = NULL;
    ok(reply && notary_tsa_reply_token(pool, query, qlen, reply, rlen, ca, &token, &tlen, &err) == 0,
       "the reply is granted, over our digest and nonce, signed under the CA%s%s",
       err ? ": " : "", err ? err : "");

    /* the kept token, as receipts carry it */
    err = NULL;
    ok(token && notary_tsa_token_verify(pool, token, tlen, digest, ca, &gen, &err) == 0,
       "the token verifies against the digest%s%s", err ? ": " : "", err ? err : "");
    ok(gen > apr_time_now() - apr_time_from_sec(3600) && gen < apr_time_now() + apr_time_from_sec(3600),
       "genTime is now (%" APR_TIME_T_FMT " s from now)", apr_time_sec(gen - apr_time_now()));
    ok(token && write_file("token.der", token, tlen) == 0
           && write_file("data", (const unsigned char *)checkpoint, sizeof(checkpoint) - 1) == 0
           && sh("cd %s && openssl ts -verify -token_in -in token.der -data data -CAfile ca.pem"
                 " >/dev/null 2>&1",
                 dir)
                  == 0,
       "openssl ts -verify accepts the token we keep, over the checkpoint's bytes");

    err = NULL;
    ok(token && notary_tsa_token_verify(pool, token, tlen, other, ca, NULL, &err) != 0,
       "the token does not verify for another digest: %s", err ? err : "?");
    err = NULL;
    ok(token && notary_tsa_token_verify(pool, token, tlen, digest, other_ca, NULL, &err) != 0,
       "nor under another CA: %s", err ? err : "?");
    err = NULL;
    ok(notary_tsa_reply_token(pool, query2, q2len, reply, rlen, ca, &token, &tlen, &err) != 0,
       "a reply to another query (its nonce) is refused: %s", err ? err : "?");
    err = NULL;
    ok(notary_tsa_reply_token(pool, query, qlen, reply, rlen, other_ca, &bad, &i, &err) != 0,
       "a reply under another CA is refused: %s", err ? err : "?");

    /* a certificate of the right CA without the timeStamping purpose */
    err = NULL;
    bad = NULL;
    ok(ts_reply("plain.der", "plain.pem", "plain.key") != 0
           || ((bad = read_file("plain.der", &i))
               && notary_tsa_reply_token(pool, query, qlen, bad, i, ca, &token, &tlen, &err) != 0),
       "a reply signed by a certificate that is not a TSA's is refused%s%s", err ? ": " : "",
       err ? err : " (openssl would not even sign)");

    /* every single-bit flip of the reply and of the token is refused */
    err = NULL;
    ok(notary_tsa_reply_token(pool, query, qlen, reply, rlen, ca, &token, &tlen, &err) == 0,
       "the reply still verifies before the flips");
    bad = apr_pmemdup(pool, token, tlen);
    for (i = 0; i < tlen * 8; i++) {
        apr_pool_t *sub;

        apr_pool_create(&sub, pool);
        bad[i / 8] ^= (unsigned char)(1u << (i % 8));
        flips++;
        if (notary_tsa_token_verify(sub, bad, tlen, digest, ca, NULL, &err) == 0) {
            taken++;
            if (taken <= 5 || getenv("TSA_DEBUG")) {
                diag("token bit %lu (byte %lu) flipped still verifies", (unsigned long)i,
                     (unsigned long)(i / 8));
            }
        }
        bad[i / 8] ^= (unsigned char)(1u << (i % 8));
        apr_pool_destroy(sub);
    }
    is_int(taken, 0, "every one of the token's %lu single-bit flips is refused", flips);
    /* truncated and trailing bytes */
    ok(notary_tsa_token_verify(pool, token, tlen - 1, digest, ca, NULL, &err) != 0,
       "a token cut by one byte is refused");
    bad = apr_palloc(pool, tlen + 1);
    memcpy(bad, token, tlen);
    bad[tlen] = 0;
    ok(notary_tsa_token_verify(pool, bad, tlen + 1, digest, ca, NULL, &err) != 0,
       "a token with a trailing byte is refused");

    /* the HTTP side: no TSA listening, and what is not http(s) */
    err = NULL;
    ok(notary_tsa_fetch(pool, "http://127.0.0.1:1/tsa", query, qlen, apr_time_from_sec(2), &reply,
                        &rlen, &err)
           != 0,
       "no TSA listening: an error, not a hang: %s", err ? err : "?");
    err = NULL;
    ok(notary_tsa_fetch(pool, "file:///etc/passwd", query, qlen, apr_time_from_sec(2), &reply, &rlen,
                        &err)
           != 0,
       "a file: URL is refused: %s", err ? err : "?");

    if (!getenv("TSA_DEBUG")) {
        sh("rm -rf %s", dir);
    }
}
