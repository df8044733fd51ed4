/* mod_notary glue: the status section (mod_notary_status.c). Counters per
 * merchant, the record store's state and the log's, kept in one shared
 * memory segment every child writes with atomics and mod_status's
 * /server-status (and ?auto) reads. The segment outlives a graceful
 * restart (httpd's retained data), keyed by virtual host and merchant
 * name, so the counters of merchants that stay are kept.
 *
 * The glue files above it count; it reads only the configuration. Every
 * counting call is cheap (an atomic add, a hash lookup by pointer) and
 * does nothing for a merchant without a slot (no segment: mod_status need
 * not be loaded, the counters are kept all the same). */
#ifndef MOD_NOTARY_STATUS_H
#define MOD_NOTARY_STATUS_H

#include <httpd.h>

#include "mod_notary_config.h"

/* what is counted per merchant */
typedef enum {
    NOTARY_STAT_ADMITTED_TOKEN,   /* an exchange admitted by its token */
    NOTARY_STAT_ADMITTED_SESSION, /* ... by a contract session */
    NOTARY_STAT_RECORDED,         /* a message's record committed */
    NOTARY_STAT_RECORD_FAILED,    /* a matched message's record not committed */
    NOTARY_STAT_COUNTERS
} notary_stat;

/* hooks (registered in mod_notary.c) */
int notary_status_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s);
/* mod_status's status_hook: the HTML section, or ?auto's lines */
int notary_status_hook(request_rec *r, int flags);

/* one more of `which` for merchant m */
void notary_status_count(const notary_merchant *m, notary_stat which);
/* an exchange refused (or a response replaced or cut off): m NULL when the
 * merchant was not known yet; reason is a log number ("NOTARY02008") or a
 * short name ("record-failed"), at most NOTARY_STATUS_REASON_MAX bytes
 * (longer ones are cut) */
#define NOTARY_STATUS_REASON_MAX 23
void notary_status_refused(const notary_merchant *m, const char *reason);
/* bytes of m's messages held back until their commit: + as they are held,
 * - as they go (or are dropped) */
void notary_status_held(const notary_merchant *m, apr_off_t delta);
/* A commit's outcome at the record store: rv from notary_store_insert.
 * Reaching the server (a row committed or refused) is "up"; not reaching
 * it (connect, broken connection, timeout, no free connection) "down". */
void notary_status_store(apr_status_t rv);

/* What the log integrator saw in its last round (mod_notary_log.c). */
typedef enum {
    NOTARY_STATUS_LOG_UNKNOWN, /* no round yet */
    NOTARY_STATUS_LOG_UP,      /* integrated, or nothing to integrate */
    NOTARY_STATUS_LOG_BUSY,    /* another node integrates this log */
    NOTARY_STATUS_LOG_DOWN     /* cannot connect, or the round failed */
} notary_status_log_state;

typedef struct {
    notary_status_log_state state;
    int have_tree;            /* the three below were read */
    apr_uint64_t tree_size;   /* leaves in the log */
    apr_uint64_t lag;         /* records committed, not yet in the log */
    apr_time_t checkpoint_at; /* when the latest checkpoint was signed; 0: none */
} notary_status_log_report;

/* The integrator of log `origin` reports a round (from the watchdog child). */
void notary_status_log(const char *origin, const notary_status_log_report *rep);

#endif
