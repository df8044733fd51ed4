/* mod_notary: an electronic-notary reverse proxy for Apache httpd 2.4.
 * The module record and every hook and filter registration, nothing else.
 * The work is in the glue files by concern: mod_notary_config.c
 * (directives, start-up checks), mod_notary_check.c (the record
 * stores tried as the children will use them), mod_notary_route.c (translate, fixups,
 * the consumer), mod_notary_session.c (contract sessions),
 * mod_notary_gate.c (connection B), mod_notary_record.c (the record
 * filters), mod_notary_log.c (the log integrator) and
 * mod_notary_status.c (the mod_status section); they share one exchange
 * object (notary_exchange.c). */
#include <httpd.h>
#include <http_config.h>
#include <http_connection.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_ssl.h>
#include <apr_optional_hooks.h>

#include <mod_proxy.h>
#include <mod_ssl_openssl.h>
#include <mod_status.h>

#include "mod_notary_config.h"
#include "mod_notary_check.h"
#include "mod_notary_route.h"
#include "mod_notary_session.h"
#include "mod_notary_gate.h"
#include "mod_notary_record.h"
#include "mod_notary_log.h"
#include "mod_notary_status.h"

static void notary_register_hooks(apr_pool_t *p)
{
    static const char *const before_proxy[] = { "mod_proxy.c", "mod_rewrite.c",
                                                "mod_alias.c", NULL };

    /* start-up (hooks of one kind here do not depend on each other's order) */
    ap_hook_pre_config(notary_config_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_pre_config(notary_session_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(notary_config_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(notary_session_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(notary_record_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(notary_status_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(notary_config_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(notary_log_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* the record stores, as the children will use them: at the real start,
     * every graceful restart and apachectl -t */
    ap_hook_post_config(notary_check_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(notary_check_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* before mod_watchdog's (APR_HOOK_LAST), which starts what we register */
    ap_hook_post_config(notary_log_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(notary_record_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(notary_session_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(notary_log_child_init, NULL, NULL, APR_HOOK_MIDDLE);

    /* connection A and the request: routing, early admission */
    APR_OPTIONAL_HOOK(ssl, pre_handshake, notary_route_pre_handshake, NULL, NULL,
                      APR_HOOK_MIDDLE);
    ap_hook_create_request(notary_record_create_request, NULL, NULL,
                           APR_HOOK_MIDDLE);
    /* the log's public endpoints first: /.notary/ is never a merchant's */
    ap_hook_translate_name(notary_log_translate, NULL, before_proxy,
                           APR_HOOK_REALLY_FIRST);
    ap_hook_translate_name(notary_route_translate, NULL, before_proxy,
                           APR_HOOK_FIRST);
    ap_hook_map_to_storage(notary_log_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(notary_log_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* after every other fixup (mod_headers included); these two in
     * either order */
    ap_hook_fixups(notary_route_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_fixups(notary_record_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);

    /* connection B: the merchant's key, the request's commit */
    ap_hook_ssl_bind_outgoing(notary_gate_bind_outgoing, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    ap_hook_pre_connection(notary_gate_pre_connection, NULL, NULL,
                           APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, pre_handshake, notary_gate_pre_handshake, NULL, NULL,
                      APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ssl, proxy_post_handshake, notary_gate_post_handshake,
                      NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(proxy, request_status, notary_gate_request_status,
                      NULL, NULL, APR_HOOK_MIDDLE);
    /* above mod_ssl (AP_FTYPE_CONNECTION + 5): we see plaintext first */
    ap_register_output_filter(NOTARY_GATE_FILTER, notary_gate_out, NULL,
                              AP_FTYPE_CONNECTION);
    ap_register_input_filter(NOTARY_GATE_FILTER, notary_gate_in, NULL,
                             AP_FTYPE_CONNECTION);

    /* recording: the request filter among the protocol filters, above
     * HTTP_IN (see mod_notary_record.c), or late as a content filter; the
     * response filter after HTTP_HEADER (PROTOCOL), before CHUNK
     * (TRANSCODE) */
    ap_register_input_filter(NOTARY_RECORD_IN_FILTER, notary_record_in, NULL,
                             AP_FTYPE_PROTOCOL);
    ap_register_input_filter(NOTARY_RECORD_IN_LATE_FILTER, notary_record_in,
                             NULL, AP_FTYPE_CONTENT_SET);
    ap_register_output_filter(NOTARY_RECORD_OUT_FILTER, notary_record_out, NULL,
                              (ap_filter_type)(AP_FTYPE_PROTOCOL + 1));

    /* mod_status's /server-status, if it is loaded (in any order) */
    APR_OPTIONAL_HOOK(ap, status_hook, notary_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(notary) = {
    STANDARD20_MODULE_STUFF,
    NULL, /* per-directory config: none (see fixups) */
    NULL,
    notary_create_srv_conf,
    notary_merge_srv_conf,
    notary_cmds,
    notary_register_hooks
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    ,
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};
