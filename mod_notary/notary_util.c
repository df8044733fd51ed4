/* Small helpers of the core; see notary_util.h. */
#include <limits.h>
#include <string.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "notary_util.h"

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *notary_b64url_encode(apr_pool_t *p, const unsigned char *d, apr_size_t len)
{
    apr_size_t full = len / 3, rest = len % 3, i;
    char *out = apr_palloc(p, full * 4 + (rest ? rest + 1 : 0) + 1);
    char *o = out;

    for (i = 0; i < full * 3; i += 3) {
        unsigned long v = ((unsigned long)d[i] << 16) | ((unsigned long)d[i + 1] << 8) | d[i + 2];
        *o++ = b64url_alphabet[(v >> 18) & 0x3f];
        *o++ = b64url_alphabet[(v >> 12) & 0x3f];
        *o++ = b64url_alphabet[(v >> 6) & 0x3f];
        *o++ = b64url_alphabet[v & 0x3f];
    }
    if (rest == 1) {
        unsigned long v = (unsigned long)d[i] << 16;
        *o++ = b64url_alphabet[(v >> 18) & 0x3f];
        *o++ = b64url_alphabet[(v >> 12) & 0x3f];
    }
    else if (rest == 2) {
        unsigned long v = ((unsigned long)d[i] << 16) | ((unsigned long)d[i + 1] << 8);
        *o++ = b64url_alphabet[(v >> 18) & 0x3f];
        *o++ = b64url_alphabet[(v >> 12) & 0x3f];
        *o++ = b64url_alphabet[(v >> 6) & 0x3f];
    }
    *o = '\0';
    return out;
}

/* Value of one base64url character, or -1. A switch, not a table, so there
 * is no static state and no locale dependence. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

unsigned char *notary_b64url_decode(apr_pool_t *p, const char *s, apr_size_t slen,
                                    apr_size_t *outlen)
{
    apr_size_t rest = slen % 4, i, n = 0;
    unsigned long acc = 0;
    unsigned char *out;
    int bits = 0;

    if (rest == 1)
        return NULL; /* 6 bits cannot encode a byte */
    out = apr_palloc(p, slen / 4 * 3 + (rest ? rest - 1 : 0) + 1);
    for (i = 0; i < slen; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return NULL;
        acc = ((acc << 6) | (unsigned long)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits must be zero, or two texts would decode to one value. */
    if (bits && (acc & ((1UL << bits) - 1)))
        return NULL;
    out[n] = '\0';
    *outlen = n;
    return out;
}

void notary_sha256(const void *d, apr_size_t len, unsigned char out[32])
{
    unsigned int olen = 0;

    if (EVP_Digest(d, len, out, &olen, EVP_sha256(), NULL) != 1 || olen != 32)
        memset(out, 0, 32);
}

char *notary_hex(apr_pool_t *p, const unsigned char *d, apr_size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *out = apr_palloc(p, len * 2 + 1);
    apr_size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 0x0f];
    }
    out[2 * len] = '\0';
    return out;
}

/* Encoded from the certificate's own SubjectPublicKeyInfo (algorithm and
 * key bits as parsed), not re-encoded from the key: with OpenSSL 3,
 * i2d_PUBKEY looks up an encoder by name for every call, 80-150 us, paid
 * twice by every new client connection (bench: the resumed handshake at
 * 0.82 x the plain proxy). The bytes are the same. */
unsigned char *notary_x509_spki_der(apr_pool_t *p, X509 *x, apr_size_t *len)
{
    X509_PUBKEY *xpk = x ? X509_get_X509_PUBKEY(x) : NULL;
    unsigned char *der, *q;
    int n;

    if (!xpk)
        return NULL;
    n = i2d_X509_PUBKEY(xpk, NULL);
    if (n <= 0)
        return NULL;
    der = q = apr_palloc(p, (apr_size_t)n);
    if (i2d_X509_PUBKEY(xpk, &q) != n)
        return NULL;
    *len = (apr_size_t)n;
    return der;
}

X509 *notary_x509_from_pem(const char *pem, apr_size_t len)
{
    BIO *bio = NULL;
    X509 *x = NULL;

    if (!pem || len == 0 || len > INT_MAX)
        return NULL;
    /* Failures here are the peer's fault; keep them out of the error queue
     * that mod_ssl reads on this thread later. */
    ERR_set_mark();
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        goto cleanup;
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);

cleanup:
    BIO_free(bio);
    ERR_pop_to_mark();
    return x;
}

unsigned char *notary_x509_der(apr_pool_t *p, X509 *x, apr_size_t *len)
{
    unsigned char *der, *q;
    int n;

    if (!x)
        return NULL;
    n = i2d_X509(x, NULL);
    if (n <= 0)
        return NULL;
    der = q = apr_palloc(p, (apr_size_t)n);
    if (i2d_X509(x, &q) != n)
        return NULL;
    *len = (apr_size_t)n;
    return der;
}

void notary_buf_append(apr_pool_t *p, char **buf, apr_size_t *len, apr_size_t *cap,
                       apr_size_t first, apr_size_t max, const char *d, apr_size_t n)
{
    if (!n) {
        return; /* *buf may still be NULL: NULL + 0 is undefined in C */
    }
    if (*len + n > *cap) {
        apr_size_t c = *cap ? *cap * 2 : (first ? first : 64);
        char *nb;
        while (c < *len + n) {
            c *= 2;
        }
        if (max && c > max && *len + n <= max) {
            c = max;
        }
        nb = apr_palloc(p, c);
        if (*len) {
            memcpy(nb, *buf, *len);
        }
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, d, n);
    *len += n;
}
