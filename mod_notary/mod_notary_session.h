/* mod_notary glue: contract sessions (mod_notary_session.c). */
#ifndef MOD_NOTARY_SESSION_H
#define MOD_NOTARY_SESSION_H

#include <stddef.h>
#include <httpd.h>

#include "notary_token.h"

/* What the cache keeps per consumer and merchant. The admission token's
 * bytes go with it, so that every record of the session names the token
 * and can carry its admission row (a session's first record may come
 * long after the request that brought the token); cached as long as the
 * token is (NOTARY_SESSION_SIZE), not the whole buffer. */
typedef struct {
    apr_int64_t exp;
    unsigned char backend_sha256[32];
    char jti[128];
    apr_uint32_t token_len;
    char token[NOTARY_TOKEN_MAX_LEN];
} notary_session;
#define NOTARY_SESSION_SIZE(s) (offsetof(notary_session, token) + (s)->token_len)

struct notary_exchange;

typedef enum {
    NOTARY_SESSION_NONE, /* no session for this consumer and merchant */
    NOTARY_SESSION_EXPIRED,
    NOTARY_SESSION_FOUND /* the exchange has it (have_session) */
} notary_session_found;

/* hooks (registered in mod_notary.c) */
int notary_session_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp);
int notary_session_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s);
void notary_session_child_init(apr_pool_t *p, server_rec *s);

/* translate: the contract session of this consumer and merchant */
notary_session_found notary_session_find(struct notary_exchange *ex);
/* a token verified with the key backend_sha256: a session until its exp,
 * for every child (a failure to store it is logged; the request goes on) */
void notary_session_open(struct notary_exchange *ex,
                         const unsigned char backend_sha256[32]);
/* The session found names another backend key: a newer token (another
 * connection) may have renewed it for this one. 1 if so. */
int notary_session_refresh(struct notary_exchange *ex,
                           const unsigned char backend_sha256[32]);

#endif
