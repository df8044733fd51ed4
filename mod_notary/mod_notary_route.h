/* mod_notary glue: routing, the consumer's identity, early admission
 * (mod_notary_route.c). */
#ifndef MOD_NOTARY_ROUTE_H
#define MOD_NOTARY_ROUTE_H

#include <httpd.h>
#include <openssl/ssl.h>

/* hooks (registered in mod_notary.c) */
int notary_route_pre_handshake(conn_rec *c, SSL *ssl, int is_proxy);
int notary_route_translate(request_rec *r);
int notary_route_fixups(request_rec *r);

#endif
