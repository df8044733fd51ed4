/* notary_http: one bounded HTTP POST. See notary_http.h. */
#include <string.h>

#include <apr_strings.h>
#include <curl/curl.h>

#include "notary_http.h"

typedef struct {
    apr_pool_t *p;
    char *buf;
    apr_size_t len, cap, max;
    int too_large;
} reply_buf;

static size_t reply_write(char *data, size_t size, size_t n, void *baton)
{
    reply_buf *rb = baton;
    apr_size_t add = size * n;

    if (add > rb->max - rb->len) {
        rb->too_large = 1;
        return 0; /* libcurl stops: CURLE_WRITE_ERROR */
    }
    if (rb->len + add + 1 > rb->cap) { /* + 1: the NUL */
        apr_size_t cap = rb->cap ? rb->cap : 1024;
        char *nb;

        while (cap < rb->len + add + 1) {
            cap *= 2;
        }
        nb = apr_palloc(rb->p, cap);
        if (rb->len) {
            memcpy(nb, rb->buf, rb->len);
        }
        rb->buf = nb;
        rb->cap = cap;
    }
    memcpy(rb->buf + rb->len, data, add);
    rb->len += add;
    return add;
}

int notary_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

int notary_http_post(apr_pool_t *p, const char *what, const char *url,
                     const char *const *headers, const void *body, apr_size_t len,
                     apr_size_t max, apr_interval_time_t timeout, notary_http_reply *out,
                     const char **err)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL, *h2;
    reply_buf rb = { p, NULL, 0, 0, max, 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    long ms = (long)apr_time_as_msec(timeout), code = 0;
    char *ct = NULL;
    CURLcode cc;
    int rv = -1;

    if (!c) {
        *err = apr_psprintf(p, "out of memory setting up the request to %s", what);
        goto cleanup;
    }
    for (; headers && *headers; headers++) {
        if (!(h2 = curl_slist_append(h, *headers))) {
            *err = apr_psprintf(p, "out of memory setting up the request to %s", what);
            goto cleanup;
        }
        h = h2;
    }
    if (ms <= 0) {
        ms = 1;
    }
    if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK
#if LIBCURL_VERSION_NUM >= 0x075500
        || curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK
#else
        || curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS))
               != CURLE_OK
#endif
        || curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK /* threads */
        || curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)body) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_HTTPHEADER, h) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_USERAGENT, "mod_notary") != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, reply_write) != CURLE_OK
        || curl_easy_setopt(c, CURLOPT_WRITEDATA, &rb) != CURLE_OK) {
        *err = apr_psprintf(p, "cannot use %s URL %s: %s", what, url,
                            *errbuf ? errbuf : "libcurl refused an option");
        goto cleanup;
    }
    if ((cc = curl_easy_perform(c)) != CURLE_OK) {
        *err = rb.too_large ? apr_psprintf(p, "%s at %s sent more than %" APR_SIZE_T_FMT " bytes",
                                           what, url, max)
                            : apr_psprintf(p, "%s at %s: %s", what, url,
                                           *errbuf ? errbuf : curl_easy_strerror(cc));
        goto cleanup;
    }
    if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK
        || curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK) {
        *err = apr_psprintf(p, "%s at %s: no status", what, url);
        goto cleanup;
    }
    out->status = code;
    out->ctype = ct ? apr_pstrdup(p, ct) : "";
    if (!rb.buf) {
        rb.buf = apr_palloc(p, 1);
    }
    rb.buf[rb.len] = '\0';
    out->body = rb.buf;
    out->len = rb.len;
    rv = 0;
cleanup:
    curl_slist_free_all(h);
    if (c) {
        curl_easy_cleanup(c);
    }
    return rv;
}
