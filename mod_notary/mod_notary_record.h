/* mod_notary glue: recording -- the input and output filters that match
 * and keep the bodies, and each child's record store (mod_notary_record.c). */
#ifndef MOD_NOTARY_RECORD_H
#define MOD_NOTARY_RECORD_H

#include <httpd.h>
#include <util_filter.h>

#include "notary_exchange.h"

#define NOTARY_RECORD_IN_FILTER "NOTARY_RECORD_IN"
#define NOTARY_RECORD_IN_LATE_FILTER "NOTARY_RECORD_IN_LATE"
#define NOTARY_RECORD_OUT_FILTER "NOTARY_RECORD_OUT"

/* hooks and filters (registered in mod_notary.c) */
int notary_record_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s);
void notary_record_child_init(apr_pool_t *p, server_rec *s);
int notary_record_create_request(request_rec *r);
int notary_record_fixups(request_rec *r);
apr_status_t notary_record_in(ap_filter_t *f, apr_bucket_brigade *bb,
                              ap_input_mode_t mode, apr_read_type_e block,
                              apr_off_t readbytes);
apr_status_t notary_record_out(ap_filter_t *f, apr_bucket_brigade *bb);

#endif
