/* notary_tsa: RFC 3161 time-stamps of checkpoints. See notary_tsa.h. */
#include <string.h>
#include <time.h>

#include <apr_strings.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "notary_http.h"
#include "notary_tsa.h"

#define FAIL(msg) \
    do { \
        *err = (msg); \
        goto cleanup; \
    } while (0)

/* OpenSSL's reason for the last failure, for a log line */
static const char *ossl_reason(apr_pool_t *p, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];

    if (!e) {
        return what;
    }
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return apr_psprintf(p, "%s (%s)", what, buf);
}

int notary_tsa_query(apr_pool_t *p, const unsigned char digest[32], unsigned char **query,
                     apr_size_t *query_len, const char **err)
{
    TS_REQ *req = TS_REQ_new();
    TS_MSG_IMPRINT *mi = TS_MSG_IMPRINT_new();
    X509_ALGOR *alg = X509_ALGOR_new();
    BIGNUM *bn = BN_new();
    ASN1_INTEGER *nonce = NULL;
    unsigned char *out;
    int len, rv = -1;

    if (!req || !mi || !alg || !bn) {
        FAIL("out of memory building a time-stamp query");
    }
    /* the algorithm's parameters are an explicit NULL, as RFC 5754 and
     * OpenSSL's own `ts -query` write them */
    if (!X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL)
        || !TS_MSG_IMPRINT_set_algo(mi, alg) || !TS_MSG_IMPRINT_set_msg(mi, (unsigned char *)digest, 32)
        || !TS_REQ_set_version(req, 1) || !TS_REQ_set_msg_imprint(req, mi)) {
        FAIL(ossl_reason(p, "cannot build the time-stamp query"));
    }
    /* the nonce binds the reply to this query: no replayed old reply */
    if (!BN_rand(bn, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY)
        || !(nonce = BN_to_ASN1_INTEGER(bn, NULL)) || !TS_REQ_set_nonce(req, nonce)
        || !TS_REQ_set_cert_req(req, 1)) {
        FAIL(ossl_reason(p, "cannot set the time-stamp query's nonce"));
    }
    if ((len = i2d_TS_REQ(req, NULL)) <= 0) {
        FAIL(ossl_reason(p, "cannot encode the time-stamp query"));
    }
    *query = out = apr_palloc(p, (apr_size_t)len);
    if (i2d_TS_REQ(req, &out) != len) {
        FAIL(ossl_reason(p, "cannot encode the time-stamp query"));
    }
    *query_len = (apr_size_t)len;
    rv = 0;
cleanup:
    ASN1_INTEGER_free(nonce);
    BN_free(bn);
    X509_ALGOR_free(alg);
    TS_MSG_IMPRINT_free(mi);
    TS_REQ_free(req);
    return rv;
}

/* The trust anchors, and the same certificates as candidates for the
 * signer (a TSA that ignored certReq can be named in cafile). */
static int load_trust(apr_pool_t *p, const char *cafile, X509_STORE **store,
                      STACK_OF(X509) * *certs, const char **err)
{
    BIO *in = NULL;
    X509 *x;
    int rv = -1;

    *store = X509_STORE_new();
    *certs = sk_X509_new_null();
    if (!*store || !*certs) {
        FAIL("out of memory loading the time-stamp CA");
    }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    if (X509_STORE_load_file(*store, cafile) != 1) {
#else
    if (X509_STORE_load_locations(*store, cafile, NULL) != 1) {
#endif
        FAIL(ossl_reason(p, apr_psprintf(p, "cannot load the time-stamp CA file %s", cafile)));
    }
    if (!(in = BIO_new_file(cafile, "r"))) {
        FAIL(ossl_reason(p, apr_psprintf(p, "cannot read the time-stamp CA file %s", cafile)));
    }
    while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL))) {
        if (!sk_X509_push(*certs, x)) {
            X509_free(x);
            FAIL("out of memory loading the time-stamp CA");
        }
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    rv = 0;
cleanup:
    BIO_free(in);
    if (rv) {
        X509_STORE_free(*store);
        sk_X509_pop_free(*certs, X509_free);
        *store = NULL;
        *certs = NULL;
    }
    return rv;
}

int notary_tsa_check_cafile(apr_pool_t *p, const char *cafile, const char **err)
{
    X509_STORE *store;
    STACK_OF(X509) * certs;
    int n;

    if (load_trust(p, cafile, &store, &certs, err) != 0) {
        return -1;
    }
    n = sk_X509_num(certs);
    X509_STORE_free(store);
    sk_X509_pop_free(certs, X509_free);
    if (n < 1) {
        *err = apr_psprintf(p, "%s holds no PEM certificate", cafile);
        return -1;
    }
    return 0;
}

/* The token's imprint must be SHA-256: a TSA answering with another
 * algorithm over the same 32 bytes would not be stamping our digest. */
static int imprint_is_sha256(TS_TST_INFO *tst)
{
    TS_MSG_IMPRINT *mi = tst ? TS_TST_INFO_get_msg_imprint(tst) : NULL;
    X509_ALGOR *alg = mi ? TS_MSG_IMPRINT_get_algo(mi) : NULL;
    const ASN1_OBJECT *obj = NULL;

    if (!alg) {
        return 0;
    }
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    return obj && OBJ_obj2nid(obj) == NID_sha256;
}

/* A signature algorithm that fits the signer's key and the SignerInfo's
 * digest: OpenSSL reads an EC or Ed25519 signature by the key's type and
 * would accept any OID there. */
static int sigalg_fits(const X509_ALGOR *alg, const X509_ALGOR *digest, EVP_PKEY *key)
{
    const ASN1_OBJECT *obj = NULL, *dobj = NULL;
    int nid, md_nid = NID_undef, pk_nid = NID_undef, key_id;

    if (!key) { /* a certificate whose key does not parse */
        return 0;
    }
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    X509_ALGOR_get0(&dobj, NULL, NULL, digest);
    nid = obj ? OBJ_obj2nid(obj) : NID_undef;
    key_id = EVP_PKEY_get_base_id(key);
    if (key_id == EVP_PKEY_RSA && nid == NID_rsaEncryption) {
        return 1; /* PKCS #1 v1.5 names the digest inside the signature */
    }
    if (key_id == EVP_PKEY_ED25519) {
        return nid == NID_ED25519;
    }
    if (!OBJ_find_sigid_algs(nid, &md_nid, &pk_nid)) {
        return 0;
    }
    return (key_id == EVP_PKEY_EC ? pk_nid == NID_X9_62_id_ecPublicKey : pk_nid == key_id)
        && dobj && md_nid == OBJ_obj2nid(dobj);
}

/* A digest AlgorithmIdentifier: parameters absent or NULL (RFC 5754) */
static int params_null(const X509_ALGOR *alg)
{
    int ptype = V_ASN1_UNDEF;

    X509_ALGOR_get0(NULL, &ptype, NULL, alg);
    return ptype == V_ASN1_UNDEF || ptype == V_ASN1_NULL;
}

static int same_der_name(const X509_NAME *a, const X509_NAME *b)
{
    const unsigned char *da = NULL, *db = NULL;
    size_t la = 0, lb = 0;

    return X509_NAME_get0_der(a, &da, &la) && X509_NAME_get0_der(b, &db, &lb) && la == lb
        && memcmp(da, db, la) == 0;
}

/* The parts of a token its signature does not cover, held to one form, so
 * that a kept token cannot be altered in any bit and still pass: DER as
 * read re-encodes to the same bytes (no lenient tags or lengths); CMS
 * versions as RFC 5652 gives them for a TSTInfo; no CRLs and no unsigned
 * attributes; digest parameters NULL or absent; a signature algorithm that
 * fits the signer's key; the signer named by exactly its certificate's
 * issuer bytes (names otherwise match case-insensitively); and every
 * certificate carried chains to the CA. */
static int token_strict(apr_pool_t *p, PKCS7 *p7, const unsigned char *der, apr_size_t len,
                        X509_STORE *store, STACK_OF(X509) * extra, const char **err)
{
    PKCS7_SIGNED *sd;
    PKCS7_SIGNER_INFO *si;
    STACK_OF(X509) *signers = NULL, *untrusted = NULL;
    X509_STORE_CTX *vctx = NULL;
    unsigned char *re = NULL;
    int n, i, rv = -1;

    n = i2d_PKCS7(p7, &re);
    if (n <= 0 || (apr_size_t)n != len || memcmp(re, der, len) != 0) {
        FAIL("the time-stamp token is not in canonical DER");
    }
    if (!PKCS7_type_is_signed(p7) || !(sd = p7->d.sign) || ASN1_INTEGER_get(sd->version) != 3) {
        FAIL("the time-stamp token is not CMS SignedData version 3");
    }
    if (sd->crl && sk_X509_CRL_num(sd->crl) > 0) {
        FAIL("the time-stamp token carries CRLs");
    }
    if (sk_PKCS7_SIGNER_INFO_num(sd->signer_info) != 1) {
        FAIL("the time-stamp token does not have exactly one signer");
    }
    si = sk_PKCS7_SIGNER_INFO_value(sd->signer_info, 0);
    if (ASN1_INTEGER_get(si->version) != 1 || !si->issuer_and_serial) {
        FAIL("the time-stamp token's signer is not named by issuer and serial (version 1)");
    }
    if (si->unauth_attr && sk_X509_ATTRIBUTE_num(si->unauth_attr) > 0) {
        FAIL("the time-stamp token carries unsigned attributes");
    }
    if (!params_null(si->digest_alg) || !params_null(si->digest_enc_alg)) {
        FAIL("the time-stamp token's digest or signature algorithm has parameters");
    }
    for (i = 0; i < sk_X509_ALGOR_num(sd->md_algs); i++) {
        if (!params_null(sk_X509_ALGOR_value(sd->md_algs, i))) {
            FAIL("the time-stamp token's digest algorithms have parameters");
        }
    }
    if (!(signers = PKCS7_get0_signers(p7, extra, 0)) || sk_X509_num(signers) != 1) {
        ERR_clear_error();
        FAIL("the time-stamp token's signer certificate is not found");
    }
    if (!same_der_name(si->issuer_and_serial->issuer, X509_get_issuer_name(sk_X509_value(signers, 0)))) {
        FAIL("the time-stamp token names its signer's issuer in other bytes than the certificate");
    }
    if (!sigalg_fits(si->digest_enc_alg, si->digest_alg, X509_get0_pubkey(sk_X509_value(signers, 0)))) {
        FAIL("the time-stamp token's signature algorithm does not fit the signer's key");
    }
    /* every certificate it carries, not only the signer's */
    if (!(untrusted = sk_X509_new_null()) || !(vctx = X509_STORE_CTX_new())) {
        FAIL("out of memory checking a time-stamp token");
    }
    for (i = 0; sd->cert && i < sk_X509_num(sd->cert); i++) {
        if (!sk_X509_push(untrusted, sk_X509_value(sd->cert, i))) {
            FAIL("out of memory checking a time-stamp token");
        }
    }
    for (i = 0; sd->cert && i < sk_X509_num(sd->cert); i++) {
        X509_STORE_CTX_cleanup(vctx);
        if (!X509_STORE_CTX_init(vctx, store, sk_X509_value(sd->cert, i), untrusted)
            || X509_verify_cert(vctx) != 1) {
            *err = apr_psprintf(p, "certificate %d in the time-stamp token does not chain to the CA (%s)",
                                i + 1, X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
            goto cleanup;
        }
    }
    rv = 0;
cleanup:
    X509_STORE_CTX_free(vctx);
    sk_X509_free(untrusted);
    sk_X509_free(signers);
    OPENSSL_free(re);
    ERR_clear_error();
    return rv;
}

static int der_out(apr_pool_t *p, PKCS7 *token, unsigned char **out, apr_size_t *len)
{
    int n = i2d_PKCS7(token, NULL);
    unsigned char *o;

    if (n <= 0) {
        return -1;
    }
    *out = o = apr_palloc(p, (apr_size_t)n);
    if (i2d_PKCS7(token, &o) != n) {
        return -1;
    }
    *len = (apr_size_t)n;
    return 0;
}

int notary_tsa_reply_token(apr_pool_t *p, const unsigned char *query, apr_size_t query_len,
                           const unsigned char *reply, apr_size_t reply_len, const char *cafile,
                           unsigned char **token, apr_size_t *token_len, const char **err)
{
    const unsigned char *q = query, *r = reply;
    TS_REQ *req = NULL;
    TS_RESP *resp = NULL;
    TS_VERIFY_CTX *ctx = NULL;
    X509_STORE *store = NULL;
    STACK_OF(X509) *certs = NULL;
    long status;
    int rv = -1;

    if (query_len > NOTARY_TSA_REPLY_MAX || reply_len > NOTARY_TSA_REPLY_MAX) {
        FAIL("time-stamp query or reply too large");
    }
    if (!(req = d2i_TS_REQ(NULL, &q, (long)query_len)) || q != query + query_len) {
        FAIL("not a time-stamp query");
    }
    if (!(resp = d2i_TS_RESP(NULL, &r, (long)reply_len)) || r != reply + reply_len) {
        ERR_clear_error();
        FAIL("the TSA's reply is not a DER TimeStampResp");
    }
    status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(TS_RESP_get_status_info(resp)));
    if (status != 0 && status != 1) { /* granted, grantedWithMods */
        *err = apr_psprintf(p, "the TSA refused the time-stamp (status %ld)", status);
        goto cleanup;
    }
    if (!imprint_is_sha256(TS_RESP_get_tst_info(resp))) {
        FAIL("the TSA's token is not over a SHA-256 digest");
    }
    if (load_trust(p, cafile, &store, &certs, err) != 0) {
        goto cleanup;
    }
    if (der_out(p, TS_RESP_get_token(resp), token, token_len) != 0) {
        FAIL(ossl_reason(p, "cannot encode the time-stamp token"));
    }
    if (token_strict(p, TS_RESP_get_token(resp), *token, *token_len, store, certs, err) != 0) {
        goto cleanup;
    }
    /* version, imprint (algorithm and bytes), nonce, and the signature
     * chained to cafile; the policy only if the query named one (it does
     * not) */
    if (!(ctx = TS_REQ_to_TS_VERIFY_CTX(req, NULL))) {
        FAIL(ossl_reason(p, "cannot set up the time-stamp check"));
    }
    TS_VERIFY_CTX_add_flags(ctx, TS_VFY_SIGNATURE);
    TS_VERIFY_CTX_set_store(ctx, store); /* ctx owns them now */
    TS_VERIFY_CTX_set_certs(ctx, certs);
    store = NULL;
    certs = NULL;
    if (TS_RESP_verify_response(ctx, resp) != 1) {
        FAIL(ossl_reason(p, "the TSA's reply does not verify"));
    }
    rv = 0;
cleanup:
    TS_VERIFY_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(certs, X509_free);
    TS_RESP_free(resp);
    TS_REQ_free(req);
    ERR_clear_error();
    return rv;
}

int notary_tsa_token_verify(apr_pool_t *p, const unsigned char *token, apr_size_t token_len,
                            const unsigned char digest[32], const char *cafile,
                            apr_time_t *gen_time, const char **err)
{
    const unsigned char *t = token;
    PKCS7 *p7 = NULL;
    TS_TST_INFO *tst = NULL;
    TS_VERIFY_CTX *ctx = NULL;
    X509_STORE *store = NULL;
    STACK_OF(X509) *certs = NULL;
    unsigned char *imprint = NULL;
    struct tm tm;
    int rv = -1;

    if (token_len > NOTARY_TSA_REPLY_MAX) {
        FAIL("time-stamp token too large");
    }
    if (!(p7 = d2i_PKCS7(NULL, &t, (long)token_len)) || t != token + token_len) {
        FAIL("the time-stamp token is not DER CMS SignedData");
    }
    if (!(tst = PKCS7_to_TS_TST_INFO(p7))) {
        FAIL("the time-stamp token holds no TSTInfo");
    }
    if (!imprint_is_sha256(tst)) {
        FAIL("the time-stamp token is not over a SHA-256 digest");
    }
    if (load_trust(p, cafile, &store, &certs, err) != 0
        || token_strict(p, p7, token, token_len, store, certs, err) != 0) {
        goto cleanup;
    }
    if (!(ctx = TS_VERIFY_CTX_new()) || !(imprint = OPENSSL_malloc(32))) {
        FAIL("out of memory checking a time-stamp token");
    }
    memcpy(imprint, digest, 32);
    TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE | TS_VFY_IMPRINT);
    TS_VERIFY_CTX_set_imprint(ctx, imprint, 32); /* ctx owns these now */
    TS_VERIFY_CTX_set_store(ctx, store);
    TS_VERIFY_CTX_set_certs(ctx, certs);
    imprint = NULL;
    store = NULL;
    certs = NULL;
    if (TS_RESP_verify_token(ctx, p7) != 1) {
        FAIL(ossl_reason(p, "the time-stamp token does not verify"));
    }
    if (gen_time) {
        if (!ASN1_TIME_to_tm(TS_TST_INFO_get_time(tst), &tm)) {
            FAIL("the time-stamp token's time cannot be read");
        }
        *gen_time = apr_time_from_sec(timegm(&tm));
    }
    rv = 0;
cleanup:
    OPENSSL_free(imprint);
    TS_VERIFY_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(certs, X509_free);
    TS_TST_INFO_free(tst);
    PKCS7_free(p7);
    ERR_clear_error();
    return rv;
}

int notary_tsa_fetch(apr_pool_t *p, const char *url, const unsigned char *query,
                     apr_size_t query_len, apr_interval_time_t timeout, unsigned char **reply,
                     apr_size_t *reply_len, const char **err)
{
    static const char *const headers[] = { "Content-Type: application/timestamp-query",
                                           "Accept: application/timestamp-reply", NULL };
    notary_http_reply r;

    if (notary_http_post(p, "the TSA", url, headers, query, query_len, NOTARY_TSA_REPLY_MAX,
                         timeout, &r, err)
        != 0) {
        return -1;
    }
    if (r.status != 200) {
        *err = apr_psprintf(p, "the TSA at %s answered HTTP %ld", url, r.status);
        return -1;
    }
    *reply = (unsigned char *)r.body;
    *reply_len = r.len;
    return 0;
}
