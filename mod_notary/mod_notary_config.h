/* mod_notary configuration: the per-server config, merchants and rules, and
 * the getters the other glue files read it through (mod_notary_config.c).
 * The core units (notary_token, notary_match, notary_store) know nothing of
 * httpd; only the glue files, which include this header, do. */
#ifndef MOD_NOTARY_CONFIG_H
#define MOD_NOTARY_CONFIG_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_hash.h>
#include <apr_uri.h>

#include "notary_token.h"
#include "notary_match.h"
#include "notary_store.h"
#include "notary_spool.h"

#define NOTARY_UNSET (-1)
#define NOTARY_DEFAULT_TOKEN_PARAM "notary_token"
#define NOTARY_DEFAULT_TOKEN_MAX_AGE 900
#define NOTARY_DEFAULT_MAX_RECORD_SIZE (64 * 1024 * 1024)
#define NOTARY_DEFAULT_DB_TIMEOUT 10  /* seconds */
#define NOTARY_DEFAULT_LOG_INTERVAL 1 /* seconds */
/* NotaryDatabaseCheck: what start-up does about a record store the
 * children could not use (mod_notary_check.c) */
#define NOTARY_DB_CHECK_OFF 0
#define NOTARY_DB_CHECK_WARN 1
#define NOTARY_DB_CHECK_STRICT 2
/* a record's body stays in memory up to this, then goes to a temp file */
#define NOTARY_SPOOL_MEMORY (256 * 1024)
/* a message's relay is held back until commit up to this many bytes (so a
 * failed commit can still become a clean 503); beyond it only the tail is */
#define NOTARY_HOLD_MAX (64 * 1024)
/* decoded (gzip/deflate) bytes examined for matching, per message */
#define NOTARY_MAX_DECODED (64 * 1024 * 1024)

#define NOTARY_DIR_REQUEST 0
#define NOTARY_DIR_RESPONSE 1

typedef enum { NOTARY_RULE_CONTAINS,
               NOTARY_RULE_TYPE } notary_rule_kind;

typedef struct notary_rule {
    int id;               /* order in httpd.conf, per vhost */
    const char *merchant; /* NULL: every merchant ("*") */
    notary_rule_kind kind;
    const char *text;          /* contains: UTF-8 text */
    notary_media_range *range; /* type */
    int dirs[2];               /* applies to request / response */
    const char *as_written;    /* the directive's arguments, verbatim */
} notary_rule;

/* The rules that apply to one merchant in one direction, compiled. */
typedef struct notary_ruleset {
    notary_matcher *matcher;   /* contains rules (pattern id = rule id); NULL if none */
    apr_array_header_t *types; /* const notary_rule *: type rules */
    const notary_rule **by_id; /* rule id -> rule */
} notary_ruleset;

extern module AP_MODULE_DECLARE_DATA notary_module;

typedef struct notary_merchant {
    const char *name; /* first path segment on the notary vhost */
    const char *url;  /* https://host[:port][/base], no trailing '/' */
    apr_uri_t uri;
    const char *defined_at;   /* "file:line" for messages */
    notary_ruleset *rules[2]; /* request, response; NULL: nothing recorded */
} notary_merchant;

/* One NotaryLogWitness VKEY URL. */
typedef struct notary_log_witness_conf {
    const struct notary_witness_key *key; /* parsed at configuration time */
    const char *url;                      /* the submission prefix, no trailing '/' */
} notary_log_witness_conf;

typedef struct notary_srv_conf {
    int engine;           /* NOTARY_UNSET, 0, 1 */
    const char *database; /* libpq conninfo */
    const char *token_param;
    apr_int64_t token_max_age;     /* seconds; NOTARY_UNSET */
    apr_off_t max_record_size;     /* bytes; NOTARY_UNSET */
    apr_int64_t db_timeout;        /* seconds; NOTARY_UNSET */
    int db_check;                  /* NOTARY_DB_CHECK_*; NOTARY_UNSET */
    apr_array_header_t *rules;     /* notary_rule *, vhost only */
    notary_store *store;           /* per child, set in child_init */
    apr_array_header_t *merchants; /* notary_merchant *, vhost only */
    apr_hash_t *merchant_by_name;
    /* the log (mod_notary_log.c) */
    const char *log_key_file;          /* NotaryLogKey: Ed25519 private key, PEM */
    const char *log_origin;            /* NotaryLogOrigin: the checkpoints' origin line */
    apr_int64_t log_interval;          /* NotaryLogInterval, seconds; NOTARY_UNSET */
    const char *log_database;          /* NotaryLogIntegratorDatabase; NULL: NotaryDatabase */
    const char *log_tsa_url;           /* NotaryLogTimestamp URL; NULL: no time-stamps */
    const char *log_tsa_cafile;        /* NotaryLogTimestamp CAFILE: the TSA's trust anchors */
    apr_int64_t log_tsa_every;         /* NotaryLogTimestamp SECONDS; NOTARY_UNSET: 60 */
    apr_array_header_t *log_witnesses; /* NotaryLogWitness: notary_log_witness_conf * */
    struct notary_note_key *log_key;   /* loaded at start-up (check_config) */
    server_rec *s;
} notary_srv_conf;

/* mod_notary_config.c */
extern const command_rec notary_cmds[];
void *notary_create_srv_conf(apr_pool_t *p, server_rec *s);
void *notary_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);
const char *notary_conf_token_param(const notary_srv_conf *sc);
apr_int64_t notary_conf_token_max_age(const notary_srv_conf *sc);
apr_off_t notary_conf_max_record_size(const notary_srv_conf *sc);
int notary_conf_engine(const notary_srv_conf *sc);

apr_int64_t notary_conf_db_timeout(const notary_srv_conf *sc);
/* NotaryDatabaseCheck: NOTARY_DB_CHECK_OFF, _WARN (default) or _STRICT */
int notary_conf_db_check(const notary_srv_conf *sc);
/* the conninfo of the vhost's record store: NotaryDatabase when the vhost
 * records (NotaryEngine On, NotaryRecord rules), else NULL -- the stores
 * the children open (mod_notary_record.c) */
const char *notary_conf_store_conninfo(const notary_srv_conf *sc);
apr_int64_t notary_conf_log_interval(const notary_srv_conf *sc);
/* NotaryLogTimestamp's SECONDS: the least time between two time-stamps */
apr_int64_t notary_conf_log_tsa_every(const notary_srv_conf *sc);
/* the integrator's conninfo: NotaryLogIntegratorDatabase, else NotaryDatabase */
const char *notary_conf_log_database(const notary_srv_conf *sc);
/* NotarySessionCache: "provider[:args]", NULL = shmcb */
const char *notary_conf_session_cache(void);

/* hooks (registered in mod_notary.c) */
int notary_config_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s);
int notary_config_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s);
int notary_config_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp);

#endif
