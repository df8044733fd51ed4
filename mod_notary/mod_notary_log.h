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
/* each child's log readers (the public endpoints' connections) */
void notary_log_child_init(apr_pool_t *p, server_rec *s);
/* GET /.notary/log/checkpoint and /.notary/log/tile/...: translate (before
 * any merchant routing), map_to_storage (no file) and the handler */
int notary_log_translate(request_rec *r);
int notary_log_map_to_storage(request_rec *r);
int notary_log_handler(request_rec *r);

#endif
