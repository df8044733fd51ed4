/* mod_notary glue: connection B -- the merchant's key checked before the
 * first byte of a request passes, the request record committed before its
 * final byte does (mod_notary_gate.c). */
#ifndef MOD_NOTARY_GATE_H
#define MOD_NOTARY_GATE_H

#include <httpd.h>
#include <util_filter.h>
#include <openssl/ssl.h>

#define NOTARY_GATE_FILTER "NOTARY_GATE"

/* hooks and filters (registered in mod_notary.c) */
int notary_gate_bind_outgoing(conn_rec *c, ap_conf_vector_t *dir_conf,
                              int enable_ssl);
int notary_gate_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy);
int notary_gate_post_handshake(conn_rec *c, SSL *ssl);
int notary_gate_pre_connection(conn_rec *c, void *csd);
int notary_gate_request_status(int *status, request_rec *r);
apr_status_t notary_gate_out(ap_filter_t *f, apr_bucket_brigade *bb);
apr_status_t notary_gate_in(ap_filter_t *f, apr_bucket_brigade *bb,
                            ap_input_mode_t mode, apr_read_type_e block,
                            apr_off_t readbytes);

#endif
