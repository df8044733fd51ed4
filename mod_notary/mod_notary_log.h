/* mod_notary glue: the log integrator (mod_notary_log.c). */
#ifndef MOD_NOTARY_LOG_H
#define MOD_NOTARY_LOG_H

#include <httpd.h>

/* start-up: NotaryLogKey loaded and checked (also under apachectl -t) */
int notary_log_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s);
/* start-up: one integrator per log database, a mod_watchdog singleton */
int notary_log_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s);

#endif
