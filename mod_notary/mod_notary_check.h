/* mod_notary glue: the start-up check of the record stores -- each
 * distinct NotaryDatabase tried as the children will use it, from a
 * process of their user (mod_notary_check.c). */
#ifndef MOD_NOTARY_CHECK_H
#define MOD_NOTARY_CHECK_H

#include <httpd.h>

/* hooks (registered in mod_notary.c) */
/* the real start and every graceful restart, not the dry-run pass */
int notary_check_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s);
/* apachectl -t: the same check, its lines on stderr */
int notary_check_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s);

#endif
