/* notary_http: one bounded HTTP POST (libcurl), for the outside services
 * the log integrator calls after a checkpoint -- a time-stamping authority
 * (notary_tsa) and witnesses (notary_witness). No httpd. */
#ifndef NOTARY_HTTP_H
#define NOTARY_HTTP_H

#include <apr_pools.h>
#include <apr_time.h>

/* Once per process, before any thread (libcurl's global state). 0 / -1. */
int notary_http_global_init(void);

typedef struct notary_http_reply {
    long status;       /* the HTTP status */
    const char *ctype; /* Content-Type, "" if none */
    char *body;        /* from the pool, NUL-terminated after len bytes */
    apr_size_t len;
} notary_http_reply;

/* POST len bytes of body to url (http or https only, no redirects) with
 * the given header lines (NULL-terminated), within timeout (connecting
 * included), taking at most max bytes of answer. `what` names the service
 * in messages ("the TSA"). 0 with *out for any HTTP status; -1 with *err
 * when nothing usable came back. */
int notary_http_post(apr_pool_t *p, const char *what, const char *url,
                     const char *const *headers, const void *body, apr_size_t len,
                     apr_size_t max, apr_interval_time_t timeout, notary_http_reply *out,
                     const char **err);

#endif
