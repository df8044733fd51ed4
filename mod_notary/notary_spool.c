/* notary_spool: body copy for a record, memory then temporary file. */
#include "notary_spool.h"
#include "notary_util.h"

#include <string.h>
#include <apr_strings.h>
#include <openssl/evp.h>

struct notary_spool {
    apr_pool_t *p;
    apr_size_t mem_max;
    apr_off_t limit;
    const char *tmpdir;
    char *mem;
    apr_size_t mem_len, mem_cap;
    apr_size_t later; /* announced length, for the first growth */
    apr_file_t *file;
    apr_off_t total;
    int over;
    EVP_MD_CTX *md; /* hashing as bytes come (notary_spool_hash_early) */
};

static apr_status_t md_free(void *md)
{
    EVP_MD_CTX_free(md);
    return APR_SUCCESS;
}

static void hash_stop(notary_spool *s)
{
    if (s->md) {
        apr_pool_cleanup_run(s->p, s->md, md_free);
        s->md = NULL;
    }
}

void notary_spool_hash_early(notary_spool *s)
{
    if (s->md || s->over || s->file) {
        return;
    }
    if (!(s->md = EVP_MD_CTX_new())) {
        return;
    }
    apr_pool_cleanup_register(s->p, s->md, md_free, apr_pool_cleanup_null);
    if (EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1
        || (s->mem_len && EVP_DigestUpdate(s->md, s->mem, s->mem_len) != 1)) {
        hash_stop(s); /* notary_spool_body hashes at the end instead */
    }
}

apr_status_t notary_spool_create(notary_spool **out, apr_pool_t *p,
                                 apr_size_t mem_max, apr_off_t limit,
                                 const char *tmpdir)
{
    notary_spool *s = apr_pcalloc(p, sizeof(*s));

    s->p = p;
    s->mem_max = mem_max;
    s->limit = limit;
    s->tmpdir = tmpdir;
    *out = s;
    return APR_SUCCESS;
}

static apr_status_t to_file(notary_spool *s)
{
    const char *dir = s->tmpdir;
    char *tmpl;
    apr_status_t rv;
    apr_size_t n;

    if (!dir && (rv = apr_temp_dir_get(&dir, s->p)) != APR_SUCCESS) {
        return rv;
    }
    tmpl = apr_pstrcat(s->p, dir, "/notary-record-XXXXXX", NULL);
    /* APR_FOPEN_DELONCLOSE: the file goes with the pool, whatever happens */
    rv = apr_file_mktemp(&s->file, tmpl, APR_FOPEN_CREATE | APR_FOPEN_READ | APR_FOPEN_WRITE | APR_FOPEN_EXCL | APR_FOPEN_DELONCLOSE | APR_FOPEN_BUFFERED, s->p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (s->mem_len) {
        n = s->mem_len;
        if ((rv = apr_file_write_full(s->file, s->mem, n, NULL)) != APR_SUCCESS) {
            return rv;
        }
    }
    s->mem = NULL;
    s->mem_len = s->mem_cap = 0;
    return APR_SUCCESS;
}

void notary_spool_expect(notary_spool *s, apr_off_t len, int now)
{
    if (s->mem || s->file || s->over || len <= 0 || len > (apr_off_t)s->mem_max
        || len > s->limit) {
        return;
    }
    if (!now) {
        s->later = (apr_size_t)len;
        return;
    }
    s->mem = apr_palloc(s->p, (apr_size_t)len);
    s->mem_cap = (apr_size_t)len;
}

apr_status_t notary_spool_write(notary_spool *s, const char *d, apr_size_t len)
{
    apr_status_t rv;

    if (!len) {
        return APR_SUCCESS;
    }
    s->total += len;
    if (s->over) {
        return APR_SUCCESS;
    }
    if (s->total > s->limit) {
        /* never recorded in part: drop what we have, remember why */
        s->over = 1;
        hash_stop(s);
        s->mem = NULL;
        s->mem_len = s->mem_cap = 0;
        if (s->file) {
            apr_file_close(s->file);
            s->file = NULL;
        }
        return APR_SUCCESS;
    }
    if (!s->file && s->mem_len + len > s->mem_max) {
        hash_stop(s); /* the store hashes a file body as it sends it */
        if ((rv = to_file(s)) != APR_SUCCESS) {
            return rv;
        }
    }
    if (s->file) {
        return apr_file_write_full(s->file, d, len, NULL);
    }
    if (s->later && s->mem_len && s->mem_len + len > s->mem_cap) {
        if (s->mem_len + len <= s->later) {
            /* the first piece is full and more came: trust the announced
             * length now, one copy instead of a doubling series */
            char *nb = apr_palloc(s->p, s->later);
            memcpy(nb, s->mem, s->mem_len);
            s->mem = nb;
            s->mem_cap = s->later;
        }
        s->later = 0;
    }
    notary_buf_append(s->p, &s->mem, &s->mem_len, &s->mem_cap, 8192, s->mem_max, d, len);
    if (s->md && EVP_DigestUpdate(s->md, d, len) != 1) {
        hash_stop(s);
    }
    return APR_SUCCESS;
}

apr_off_t notary_spool_length(const notary_spool *s)
{
    return s->total;
}

int notary_spool_over_limit(const notary_spool *s)
{
    return s->over;
}

apr_status_t notary_spool_body(notary_spool *s, const char **d, apr_size_t *len,
                               apr_file_t **file, unsigned char sha256[32])
{
    unsigned int n = 0;
    apr_status_t rv;

    *d = NULL;
    *file = NULL;
    if (s->over) {
        return APR_ENOSPC;
    }
    if (s->file) {
        if ((rv = apr_file_flush(s->file)) != APR_SUCCESS) {
            return rv;
        }
        *file = s->file;
        *len = (apr_size_t)s->total;
        return APR_SUCCESS;
    }
    *d = s->mem ? s->mem : "";
    *len = s->mem_len;
    if (s->md) {
        /* hashed as the bytes came: nothing left to do on the way out */
        rv = EVP_DigestFinal_ex(s->md, sha256, &n) == 1 && n == 32 ? APR_SUCCESS
                                                                   : APR_EGENERAL;
        hash_stop(s);
        return rv;
    }
    /* hashed here, at commit: unmatched messages never pay for it */
    if (EVP_Digest(*d, *len, sha256, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}
