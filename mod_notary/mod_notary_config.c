/* mod_notary directives: parse, validate, create/merge; each merchant's
 * mod_proxy worker; the checks of the whole configuration at start-up.
 * Every directive is documented in conf/notary.conf and README.md with
 * syntax, default, context and an example; keep the help strings in step. */
#include "mod_notary_config.h"
#include "notary_witness.h"

#include <dlfcn.h>

#include <http_core.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include <ap_provider.h>
#include <ap_socache.h>
#include <libpq-fe.h>

#include <mod_proxy.h>

APLOG_USE_MODULE(notary);

static const char *session_cache_spec = NULL;

void *notary_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    notary_srv_conf *sc = apr_pcalloc(p, sizeof(*sc));

    sc->engine = NOTARY_UNSET;
    sc->token_max_age = NOTARY_UNSET;
    sc->max_record_size = NOTARY_UNSET;
    sc->db_timeout = NOTARY_UNSET;
    sc->db_check = NOTARY_UNSET;
    sc->log_interval = NOTARY_UNSET;
    sc->log_tsa_every = NOTARY_UNSET;
    sc->log_witnesses = apr_array_make(p, 2, sizeof(notary_log_witness_conf *));
    sc->rules = apr_array_make(p, 4, sizeof(notary_rule *));
    sc->merchants = apr_array_make(p, 4, sizeof(notary_merchant *));
    sc->merchant_by_name = apr_hash_make(p);
    sc->s = s;
    return sc;
}

#define MERGE_PTR(f) mc->f = add->f ? add->f : base->f
#define MERGE_VAL(f) mc->f = (add->f != NOTARY_UNSET) ? add->f : base->f

void *notary_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const notary_srv_conf *base = basev, *add = addv;
    notary_srv_conf *mc = apr_pcalloc(p, sizeof(*mc));

    MERGE_VAL(engine);
    MERGE_PTR(database);
    MERGE_PTR(token_param);
    MERGE_VAL(token_max_age);
    MERGE_VAL(max_record_size);
    MERGE_VAL(db_timeout);
    MERGE_VAL(db_check);
    MERGE_PTR(log_key_file);
    MERGE_PTR(log_origin);
    MERGE_VAL(log_interval);
    MERGE_PTR(log_database);
    /* URL, CA and interval are one setting: taken together or not at all */
    if (add->log_tsa_url) {
        mc->log_tsa_url = add->log_tsa_url;
        mc->log_tsa_cafile = add->log_tsa_cafile;
        mc->log_tsa_every = add->log_tsa_every;
    }
    else {
        mc->log_tsa_url = base->log_tsa_url;
        mc->log_tsa_cafile = base->log_tsa_cafile;
        mc->log_tsa_every = base->log_tsa_every;
    }
    /* the witnesses are one list: a vhost that names any names them all */
    mc->log_witnesses = add->log_witnesses->nelts ? add->log_witnesses : base->log_witnesses;
    /* Merchants belong to the vhost that registers them, never inherited:
     * a merchant must be reachable only through the vhost the operator chose. */
    mc->merchants = add->merchants;
    mc->merchant_by_name = add->merchant_by_name;
    mc->rules = add->rules;
    mc->s = add->s;
    return mc;
}

int notary_conf_engine(const notary_srv_conf *sc)
{
    return sc->engine == 1;
}

const char *notary_conf_token_param(const notary_srv_conf *sc)
{
    return sc->token_param ? sc->token_param : NOTARY_DEFAULT_TOKEN_PARAM;
}

apr_int64_t notary_conf_token_max_age(const notary_srv_conf *sc)
{
    return sc->token_max_age != NOTARY_UNSET ? sc->token_max_age
                                             : NOTARY_DEFAULT_TOKEN_MAX_AGE;
}

apr_off_t notary_conf_max_record_size(const notary_srv_conf *sc)
{
    return sc->max_record_size != NOTARY_UNSET ? sc->max_record_size
                                               : NOTARY_DEFAULT_MAX_RECORD_SIZE;
}

apr_int64_t notary_conf_db_timeout(const notary_srv_conf *sc)
{
    return sc->db_timeout != NOTARY_UNSET ? sc->db_timeout
                                          : NOTARY_DEFAULT_DB_TIMEOUT;
}

int notary_conf_db_check(const notary_srv_conf *sc)
{
    return sc->db_check != NOTARY_UNSET ? sc->db_check : NOTARY_DB_CHECK_WARN;
}

const char *notary_conf_store_conninfo(const notary_srv_conf *sc)
{
    return notary_conf_engine(sc) && sc->rules->nelts ? sc->database : NULL;
}

apr_int64_t notary_conf_log_interval(const notary_srv_conf *sc)
{
    return sc->log_interval != NOTARY_UNSET ? sc->log_interval
                                            : NOTARY_DEFAULT_LOG_INTERVAL;
}

apr_int64_t notary_conf_log_tsa_every(const notary_srv_conf *sc)
{
    return sc->log_tsa_every != NOTARY_UNSET ? sc->log_tsa_every : 60;
}

const char *notary_conf_log_database(const notary_srv_conf *sc)
{
    return sc->log_database ? sc->log_database : sc->database;
}

/* ---------------------------------------------------------------------
 * Workers: one pooled mod_proxy worker per merchant URL, defined the way
 * ProxyPass does. The functions are looked up at run time so that
 * mod_notary may be loaded before mod_proxy (Debian loads *.load files in
 * alphabetical order).
 */
typedef proxy_worker *(*get_worker_fn)(apr_pool_t *, proxy_balancer *,
                                       proxy_server_conf *, const char *,
                                       unsigned int);
typedef char *(*define_worker_fn)(apr_pool_t *, proxy_worker **,
                                  proxy_balancer *, proxy_server_conf *,
                                  const char *, unsigned int);

static const char *define_worker(cmd_parms *cmd, notary_merchant *m)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    get_worker_fn get_worker;
    define_worker_fn define_worker;
    proxy_server_conf *pconf;
    proxy_worker *worker;
    char *err;

    if (!proxy || !ap_find_linked_module("mod_ssl.c")) {
        return "NotaryMerchant: mod_proxy, mod_proxy_http and mod_ssl must be "
               "loaded (LoadModule) before merchants are registered";
    }
    get_worker = (get_worker_fn)dlsym(RTLD_DEFAULT, "ap_proxy_get_worker_ex");
    define_worker = (define_worker_fn)dlsym(RTLD_DEFAULT,
                                            "ap_proxy_define_worker_ex");
    if (!get_worker || !define_worker) {
        return "NotaryMerchant: this mod_proxy lacks ap_proxy_define_worker_ex "
               "(httpd 2.4.56 or later is required)";
    }
    /* a vhost's configs are created lazily, per module, as its directives
     * appear: create mod_proxy's as a ProxyPass here would */
    ap_set_config_vectors(cmd->server, cmd->context, cmd->path, proxy, cmd->pool);
    pconf = ap_get_module_config(cmd->server->module_config, proxy);
    worker = get_worker(cmd->temp_pool, NULL, pconf, m->url,
                        AP_PROXY_WORKER_IS_PREFIX);
    if (worker) {
        return NULL; /* same backend as another merchant: share its pool */
    }
    err = define_worker(cmd->pool, &worker, NULL, pconf, m->url,
                        AP_PROXY_WORKER_IS_PREFIX);
    if (err) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: %s", err);
    }
    PROXY_COPY_CONF_PARAMS(worker, pconf);
    return NULL;
}

const char *notary_conf_session_cache(void)
{
    return session_cache_spec;
}

static notary_srv_conf *cmd_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &notary_module);
}

static const char *where(cmd_parms *cmd)
{
    return apr_psprintf(cmd->pool, "%s:%d",
                        cmd->directive->filename, cmd->directive->line_num);
}

/* At server level the setting would be inherited by every vhost, the
 * default site and /server-status included: refuse it, even Off. */
static const char *set_engine(cmd_parms *cmd, void *dc, int on)
{
    if (!cmd->server->is_virtual) {
        return "NotaryEngine: only allowed inside <VirtualHost>: at server "
               "level every virtual host (the default site, /server-status) "
               "would inherit it; set it in the notary's <VirtualHost>";
    }
    cmd_conf(cmd)->engine = on ? 1 : 0;
    return NULL;
}

/* Reject a malformed conninfo at apachectl -t, not at the first use. */
static const char *check_conninfo(cmd_parms *cmd, const char *arg)
{
    char *errmsg = NULL;
    PQconninfoOption *opts;

    opts = PQconninfoParse(arg, &errmsg);
    if (!opts) {
        const char *msg = apr_psprintf(cmd->pool,
                                       "%s: not a valid libpq connection string: %s", cmd->cmd->name,
                                       errmsg ? errmsg : "out of memory");
        if (errmsg) {
            PQfreemem(errmsg);
        }
        return msg;
    }
    PQconninfoFree(opts);
    return NULL;
}

static const char *set_database(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = check_conninfo(cmd, arg);

    if (err) {
        return err;
    }
    cmd_conf(cmd)->database = arg;
    return NULL;
}

static const char *set_log_database(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = check_conninfo(cmd, arg);

    if (err) {
        return err;
    }
    cmd_conf(cmd)->log_database = arg;
    return NULL;
}

static const char *set_log_key(cmd_parms *cmd, void *dc, const char *arg)
{
    cmd_conf(cmd)->log_key_file = ap_server_root_relative(cmd->pool, arg);
    if (!cmd_conf(cmd)->log_key_file) {
        return apr_psprintf(cmd->pool, "NotaryLogKey: invalid path '%s'", arg);
    }
    return NULL;
}

static const char *set_log_origin(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *c;

    /* a C2SP checkpoint's first line and a signed-note key name: no
     * spaces, no '+', printable */
    for (c = arg; *c; c++) {
        if (*c <= ' ' || *c >= 0x7f || *c == '+') {
            break;
        }
    }
    if (!*arg || *c) {
        return apr_psprintf(cmd->pool, "NotaryLogOrigin: '%s' is not a log origin: "
                                       "printable ASCII without spaces or '+' (e.g. "
                                       "notary.example.com/log)",
                            arg);
    }
    cmd_conf(cmd)->log_origin = arg;
    return NULL;
}

static int valid_name(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, "..")) {
        return 0;
    }
    for (; *s; s++) {
        /* RFC 3986 unreserved: the name appears raw in the path */
        if (!apr_isalnum(*s) && !strchr("-._~", *s)) {
            return 0;
        }
    }
    return 1;
}

static const char *add_merchant(cmd_parms *cmd, void *dc,
                                const char *name, const char *url)
{
    notary_srv_conf *sc = cmd_conf(cmd);
    notary_merchant *m;
    apr_size_t len;
    const char *err;

    if (!cmd->server->is_virtual) {
        return "NotaryMerchant: only allowed inside <VirtualHost>: a merchant "
               "is registered on the notary vhost that relays to it";
    }
    if (!valid_name(name)) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: invalid merchant name "
                                       "'%s': use letters, digits, '-', '.', '_', '~'",
                            name);
    }
    if (!strcmp(name, ".notary")) {
        return "NotaryMerchant: '.notary' is not a merchant name: /.notary/ on the "
               "notary vhost is the notary's own (receipts, the log)";
    }
    if (apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING)) {
        const notary_merchant *prev =
            apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING);
        return apr_psprintf(cmd->pool, "NotaryMerchant: merchant '%s' is "
                                       "already registered on this virtual host (at %s)",
                            name, prev->defined_at);
    }

    m = apr_pcalloc(cmd->pool, sizeof(*m));
    m->name = apr_pstrdup(cmd->pool, name);
    m->defined_at = where(cmd);
    if (apr_uri_parse(cmd->pool, url, &m->uri) != APR_SUCCESS
        || !m->uri.scheme || !m->uri.hostname || !*m->uri.hostname) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: '%s' is not an "
                                       "absolute URL (expected https://host[:port][/path])",
                            url);
    }
    if (strcasecmp(m->uri.scheme, "https")) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: '%s' must be an "
                                       "https URL: the merchant is authenticated by the "
                                       "key its TLS server presents",
                            url);
    }
    if (m->uri.user || m->uri.password || m->uri.query || m->uri.fragment) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: '%s' must not carry "
                                       "user info, a query or a fragment",
                            url);
    }
    if (m->uri.port_str) {
        /* apr_uri_parse wraps ports above 65535 silently */
        char *end;
        apr_int64_t port = apr_strtoi64(m->uri.port_str, &end, 10);
        if (!*m->uri.port_str || *end || port < 1 || port > 65535) {
            return apr_psprintf(cmd->pool, "NotaryMerchant: '%s' has an "
                                           "invalid port",
                                url);
        }
    }
    /* Canonical form without trailing '/': the request's "/rest" is appended. */
    m->url = apr_pstrdup(cmd->pool, url);
    len = strlen(m->url);
    while (len > 0 && m->url[len - 1] == '/') {
        ((char *)m->url)[--len] = '\0';
    }
    if (strstr(m->url + strlen("https://"), "//")
        || ap_strchr_c(m->url, ' ')) {
        return apr_psprintf(cmd->pool, "NotaryMerchant: '%s' is malformed", url);
    }
    if ((err = define_worker(cmd, m)) != NULL) {
        return err;
    }
    APR_ARRAY_PUSH(sc->merchants, notary_merchant *) = m;
    apr_hash_set(sc->merchant_by_name, m->name, APR_HASH_KEY_STRING, m);
    return NULL;
}

static const char *set_token_param(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *s;

    for (s = arg; *s; s++) {
        if (!apr_isalnum(*s) && !strchr("-._~", *s)) {
            break;
        }
    }
    if (!*arg || *s) {
        return apr_psprintf(cmd->pool, "NotaryTokenParam: '%s' is not a plain "
                                       "query parameter name (letters, digits, -._~)",
                            arg);
    }
    cmd_conf(cmd)->token_param = arg;
    return NULL;
}

/* A whole number of seconds in [1, max], or the directive's error. */
static const char *parse_seconds(cmd_parms *cmd, const char *arg,
                                 apr_int64_t max, apr_int64_t *out)
{
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);

    if (*end || end == arg || v < 1 || v > max) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of seconds "
                                       "between 1 and %" APR_INT64_T_FMT,
                            cmd->directive->directive, arg, max);
    }
    *out = v;
    return NULL;
}

static const char *set_token_max_age(cmd_parms *cmd, void *dc, const char *arg)
{
    return parse_seconds(cmd, arg, 366 * 86400, &cmd_conf(cmd)->token_max_age);
}

/* NotaryRecord NAME|* contains "TEXT" [request|response]
 * NotaryRecord NAME|* type MEDIA-RANGE [request|response] */
static const char *add_record_rule(cmd_parms *cmd, void *dc, const char *args)
{
    notary_srv_conf *sc = cmd_conf(cmd);
    const char *line = args;
    const char *name = ap_getword_conf(cmd->temp_pool, &line);
    const char *kind = ap_getword_conf(cmd->temp_pool, &line);
    const char *what = ap_getword_conf(cmd->pool, &line);
    const char *dir = ap_getword_conf(cmd->temp_pool, &line);
    const char *err = NULL;
    notary_rule *rule;

    if (!cmd->server->is_virtual) {
        return "NotaryRecord: only allowed inside <VirtualHost>, after the "
               "NotaryMerchant lines it refers to";
    }
    if (!*name || !*kind) {
        return "NotaryRecord: expected NAME|* contains \"TEXT\" [request|response] "
               "or NAME|* type MEDIA-RANGE [request|response]";
    }
    if (*line) {
        return apr_psprintf(cmd->pool, "NotaryRecord: unexpected '%s' after "
                                       "the direction",
                            line);
    }
    rule = apr_pcalloc(cmd->pool, sizeof(*rule));
    rule->id = sc->rules->nelts;
    rule->as_written = apr_pstrdup(cmd->pool, args);
    while (*rule->as_written == ' ' || *rule->as_written == '\t') {
        rule->as_written++;
    }
    if (strcmp(name, "*")) {
        if (!apr_hash_get(sc->merchant_by_name, name, APR_HASH_KEY_STRING)) {
            return apr_psprintf(cmd->pool, "NotaryRecord: unknown merchant "
                                           "'%s' (register it with NotaryMerchant on this "
                                           "virtual host before this line, or use *)",
                                name);
        }
        rule->merchant = apr_pstrdup(cmd->pool, name);
    }
    if (!strcasecmp(kind, "contains")) {
        if (!*what) {
            return "NotaryRecord: the text after 'contains' is empty";
        }
        rule->kind = NOTARY_RULE_CONTAINS;
        rule->text = what;
    }
    else if (!strcasecmp(kind, "type")) {
        rule->kind = NOTARY_RULE_TYPE;
        if (!notary_media_range_parse(cmd->pool, what, &rule->range, &err)) {
            return apr_psprintf(cmd->pool, "NotaryRecord: '%s' is not a media "
                                           "range: %s",
                                what, err ? err : "malformed");
        }
    }
    else {
        return apr_psprintf(cmd->pool, "NotaryRecord: unknown condition '%s' "
                                       "(use contains or type)",
                            kind);
    }
    if (!*dir) {
        rule->dirs[NOTARY_DIR_REQUEST] = rule->dirs[NOTARY_DIR_RESPONSE] = 1;
    }
    else if (!strcasecmp(dir, "request")) {
        rule->dirs[NOTARY_DIR_REQUEST] = 1;
    }
    else if (!strcasecmp(dir, "response")) {
        rule->dirs[NOTARY_DIR_RESPONSE] = 1;
    }
    else {
        return apr_psprintf(cmd->pool, "NotaryRecord: '%s' is not a direction "
                                       "(request or response)",
                            dir);
    }
    APR_ARRAY_PUSH(sc->rules, notary_rule *) = rule;
    return NULL;
}

static const char *set_max_record_size(cmd_parms *cmd, void *dc, const char *arg)
{
    char *end;
    apr_int64_t v = apr_strtoi64(arg, &end, 10);
    apr_int64_t mult = 1;

    if (*end && !end[1]) {
        switch (apr_toupper(*end)) {
        case 'K':
            mult = 1024;
            end++;
            break;
        case 'M':
            mult = 1024 * 1024;
            end++;
            break;
        case 'G':
            mult = 1024 * 1024 * 1024;
            end++;
            break;
        }
    }
    /* PostgreSQL's bytea holds at most 1 GB */
    if (*end || end == arg || v <= 0 || v > (APR_INT64_C(1) << 30) / mult) {
        return apr_psprintf(cmd->pool, "NotaryMaxRecordSize: '%s' is not a "
                                       "size between 1 and 1G (bytes, or with K, M, G)",
                            arg);
    }
    cmd_conf(cmd)->max_record_size = (apr_off_t)(v * mult);
    return NULL;
}

static const char *set_db_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    return parse_seconds(cmd, arg, 3600, &cmd_conf(cmd)->db_timeout);
}

/* NotaryLogTimestamp URL CAFILE [SECONDS] */
static const char *set_log_timestamp(cmd_parms *cmd, void *dc, const char *url,
                                     const char *cafile, const char *secs)
{
    notary_srv_conf *sc = cmd_conf(cmd);
    apr_uri_t u;
    const char *err;

    if (apr_uri_parse(cmd->pool, url, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (strcasecmp(u.scheme, "http") && strcasecmp(u.scheme, "https"))) {
        return apr_psprintf(cmd->pool, "NotaryLogTimestamp: '%s' is not an http or https "
                                       "URL of an RFC 3161 time-stamp authority",
                            url);
    }
    if (!(sc->log_tsa_cafile = ap_server_root_relative(cmd->pool, cafile))) {
        return apr_psprintf(cmd->pool, "NotaryLogTimestamp: invalid path '%s'", cafile);
    }
    sc->log_tsa_url = url;
    sc->log_tsa_every = NOTARY_UNSET;
    if (secs && (err = parse_seconds(cmd, secs, 86400, &sc->log_tsa_every))) {
        return err;
    }
    return NULL;
}

static const char *set_db_check(cmd_parms *cmd, void *dc, const char *arg)
{
    if (!strcasecmp(arg, "off")) {
        cmd_conf(cmd)->db_check = NOTARY_DB_CHECK_OFF;
    }
    else if (!strcasecmp(arg, "warn")) {
        cmd_conf(cmd)->db_check = NOTARY_DB_CHECK_WARN;
    }
    else if (!strcasecmp(arg, "strict")) {
        cmd_conf(cmd)->db_check = NOTARY_DB_CHECK_STRICT;
    }
    else {
        return apr_psprintf(cmd->pool, "NotaryDatabaseCheck: '%s' is not one of "
                                       "off, warn, strict",
                            arg);
    }
    return NULL;
}

/* NotaryLogWitness VKEY URL (repeatable) */
static const char *set_log_witness(cmd_parms *cmd, void *dc, const char *vkey, const char *url)
{
    notary_srv_conf *sc = cmd_conf(cmd);
    notary_log_witness_conf *w;
    const char *detail = NULL;
    apr_size_t ul = strlen(url);
    apr_uri_t u;
    int i;

    w = apr_pcalloc(cmd->pool, sizeof(*w));
    if (!(w->key = notary_witness_vkey_parse(cmd->pool, vkey, &detail))) {
        return apr_psprintf(cmd->pool, "NotaryLogWitness: '%s' is not a witness verifier key "
                                       "(name+keyid+base64 of 0x04 and an Ed25519 key, "
                                       "c2sp.org/tlog-cosignature): %s",
                            vkey, detail ? detail : "invalid");
    }
    if (apr_uri_parse(cmd->pool, url, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (strcasecmp(u.scheme, "http") && strcasecmp(u.scheme, "https")) || u.query
        || u.fragment) {
        return apr_psprintf(cmd->pool, "NotaryLogWitness: '%s' is not an http or https URL "
                                       "prefix of a witness (add-checkpoint is posted to "
                                       "URL/add-checkpoint)",
                            url);
    }
    while (ul > 0 && url[ul - 1] == '/') {
        ul--;
    }
    w->url = apr_pstrmemdup(cmd->pool, url, ul);
    for (i = 0; i < sc->log_witnesses->nelts; i++) {
        const notary_log_witness_conf *o = APR_ARRAY_IDX(sc->log_witnesses, i,
                                                         notary_log_witness_conf *);
        if (!strcmp(o->key->name, w->key->name) || o->key->id == w->key->id) {
            return apr_psprintf(cmd->pool, "NotaryLogWitness: witness %s is named twice", w->key->name);
        }
    }
    APR_ARRAY_PUSH(sc->log_witnesses, notary_log_witness_conf *) = w;
    return NULL;
}

static const char *set_log_interval(cmd_parms *cmd, void *dc, const char *arg)
{
    return parse_seconds(cmd, arg, 3600, &cmd_conf(cmd)->log_interval);
}

/* post_config: one matcher per merchant and direction, rules in conf order */
static const char *compile_rules(apr_pool_t *p, server_rec *s)
{
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config,
                                                   &notary_module);
        int i, j, d;

        if (!notary_conf_engine(sc) || !sc->rules->nelts) {
            continue;
        }
        if (!sc->database) {
            return apr_psprintf(p, "NotaryRecord on %s:%u needs NotaryDatabase "
                                   "(where would the records go?)",
                                s->server_hostname, (unsigned)s->port);
        }
        for (i = 0; i < sc->merchants->nelts; i++) {
            notary_merchant *m = APR_ARRAY_IDX(sc->merchants, i, notary_merchant *);
            for (d = 0; d < 2; d++) {
                notary_ruleset *rs = NULL;
                for (j = 0; j < sc->rules->nelts; j++) {
                    notary_rule *rule = APR_ARRAY_IDX(sc->rules, j, notary_rule *);
                    if (!rule->dirs[d]
                        || (rule->merchant && strcmp(rule->merchant, m->name))) {
                        continue;
                    }
                    if (!rs) {
                        rs = apr_pcalloc(p, sizeof(*rs));
                        rs->types = apr_array_make(p, 2, sizeof(notary_rule *));
                        rs->by_id = apr_pcalloc(p, sizeof(notary_rule *)
                                                       * sc->rules->nelts);
                    }
                    rs->by_id[rule->id] = rule;
                    if (rule->kind == NOTARY_RULE_TYPE) {
                        APR_ARRAY_PUSH(rs->types, const notary_rule *) = rule;
                        continue;
                    }
                    if (!rs->matcher
                        && notary_matcher_create(&rs->matcher, p) != APR_SUCCESS) {
                        return "NotaryRecord: cannot create a matcher";
                    }
                    if (notary_matcher_add(rs->matcher, rule->text,
                                           strlen(rule->text), rule->id)
                        != APR_SUCCESS) {
                        return apr_psprintf(p, "NotaryRecord %s: cannot add the "
                                               "text",
                                            rule->as_written);
                    }
                }
                if (rs && rs->matcher
                    && notary_matcher_compile(rs->matcher) != APR_SUCCESS) {
                    return apr_psprintf(p, "NotaryRecord: the rules of merchant "
                                           "'%s' are too large to compile",
                                        m->name);
                }
                m->rules[d] = rs;
            }
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------
 * Start-up: the configuration as a whole.
 */
int notary_config_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp)
{
    session_cache_spec = NULL;
    return OK;
}

int notary_config_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    for (; s; s = s->next) {
        notary_srv_conf *sc = ap_get_module_config(s->module_config,
                                                   &notary_module);
        if (notary_conf_engine(sc) && sc->merchants->nelts == 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "NOTARY01105: "
                                                          "NotaryEngine On but no NotaryMerchant on %s:%d: "
                                                          "every request will be answered 404",
                         s->server_hostname, s->port);
        }
    }
    return OK;
}

/* After the vhosts are merged, also under apachectl -t: rules compiled,
 * cross-directive mistakes refused. */
int notary_config_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s)
{
    const char *err = compile_rules(pconf, s);
    server_rec *vs;
    int i;

    if (err) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                     "NOTARY01107: "
                     "%s",
                     err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* The record filters read HTTP/1.1 messages, and the contract session
     * and consumer key are kept per connection: an h2 stream would slip
     * past both. Refuse rather than relay it unrecorded. */
    for (vs = s; vs; vs = vs->next) {
        core_server_config *core = ap_get_core_module_config(vs->module_config);
        if (!notary_conf_engine(ap_get_module_config(vs->module_config, &notary_module))
            || !core->protocols) {
            continue;
        }
        for (i = 0; i < core->protocols->nelts; i++) {
            const char *proto = APR_ARRAY_IDX(core->protocols, i, const char *);
            if (!ap_cstr_casecmp(proto, "h2") || !ap_cstr_casecmp(proto, "h2c")) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                             "NOTARY01108: "
                             "Protocols lists %s for the notary "
                             "vhost %s:%d (%s:%d): mod_notary relays and records "
                             "HTTP/1.1 only; set 'Protocols http/1.1' there",
                             proto, vs->server_hostname ? vs->server_hostname : "*",
                             vs->port, vs->defn_name ? vs->defn_name : "?",
                             vs->defn_line_number);
                return HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }
    return OK;
}

static const char *set_session_cache(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    const char *sep = ap_strchr_c(arg, ':');
    const char *name = sep ? apr_pstrmemdup(cmd->temp_pool, arg, sep - arg) : arg;

    if (err) {
        return err;
    }
    if (!ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                            AP_SOCACHE_PROVIDER_VERSION)) {
        return apr_psprintf(cmd->pool, "NotarySessionCache: unknown socache "
                                       "provider '%s' (load mod_socache_%s before this "
                                       "line)",
                            name, name);
    }
    session_cache_spec = arg;
    return NULL;
}

const command_rec notary_cmds[] = {
    AP_INIT_FLAG("NotaryEngine", set_engine, NULL, RSRC_CONF,
                 "NotaryEngine On|Off - relay registered merchants on this virtual "
                 "host as a notary (default Off, virtual host only)"),
    AP_INIT_TAKE1("NotaryDatabase", set_database, NULL, RSRC_CONF,
                  "NotaryDatabase \"CONNINFO\" - libpq connection string of the record "
                  "store (no default)"),
    AP_INIT_TAKE2("NotaryMerchant", add_merchant, NULL, RSRC_CONF,
                  "NotaryMerchant NAME https://host[:port][/path] - relay /NAME/... on "
                  "this virtual host to the merchant's backend (virtual host only)"),
    AP_INIT_TAKE1("NotaryTokenParam", set_token_param, NULL, RSRC_CONF,
                  "NotaryTokenParam NAME - query parameter carrying the contract token "
                  "(default notary_token)"),
    AP_INIT_TAKE1("NotaryTokenMaxAge", set_token_max_age, NULL, RSRC_CONF,
                  "NotaryTokenMaxAge SECONDS - longest token lifetime (exp - iat) "
                  "accepted (default 900)"),
    AP_INIT_RAW_ARGS("NotaryRecord", add_record_rule, NULL, RSRC_CONF,
                     "NotaryRecord NAME|* contains \"TEXT\" [request|response] or "
                     "NotaryRecord NAME|* type MEDIA-RANGE [request|response] - record the "
                     "messages that match (virtual host only)"),
    AP_INIT_TAKE1("NotaryMaxRecordSize", set_max_record_size, NULL, RSRC_CONF,
                  "NotaryMaxRecordSize BYTES - largest body recorded; a larger matched "
                  "message is refused (default 64M)"),
    AP_INIT_TAKE1("NotaryDatabaseTimeout", set_db_timeout, NULL, RSRC_CONF,
                  "NotaryDatabaseTimeout SECONDS - longest a record may take to commit, "
                  "queued time and connecting included (default 10)"),
    AP_INIT_TAKE1("NotaryDatabaseCheck", set_db_check, NULL, RSRC_CONF,
                  "NotaryDatabaseCheck off|warn|strict - at start-up and every graceful "
                  "restart, connect to the record store as the children will; strict "
                  "refuses to start on a problem (default warn)"),
    AP_INIT_TAKE1("NotarySessionCache", set_session_cache, NULL, RSRC_CONF,
                  "NotarySessionCache PROVIDER[:ARGS] - mod_socache provider for "
                  "contract sessions shared by all children (default shmcb, global only)"),
    AP_INIT_TAKE1("NotaryLogKey", set_log_key, NULL, RSRC_CONF,
                  "NotaryLogKey FILE - Ed25519 private key (PEM) that signs the log's "
                  "checkpoints and promises; turns the log integrator on (no default)"),
    AP_INIT_TAKE1("NotaryLogOrigin", set_log_origin, NULL, RSRC_CONF,
                  "NotaryLogOrigin NAME - the log's origin, its checkpoints' first line "
                  "and key name (no default; required with NotaryLogKey)"),
    AP_INIT_TAKE1("NotaryLogInterval", set_log_interval, NULL, RSRC_CONF,
                  "NotaryLogInterval SECONDS - how often new records are integrated into "
                  "the log (default 1)"),
    AP_INIT_TAKE23("NotaryLogTimestamp", set_log_timestamp, NULL, RSRC_CONF,
                   "NotaryLogTimestamp URL CAFILE [SECONDS] - RFC 3161 time-stamp authority "
                   "that stamps the log's checkpoints, its CA certificates (PEM), and the "
                   "least time between two stamps (default 60)"),
    AP_INIT_TAKE2("NotaryLogWitness", set_log_witness, NULL, RSRC_CONF,
                  "NotaryLogWitness VKEY URL - a C2SP tlog-witness that cosigns the log's "
                  "checkpoints: its verifier key (type 0x04) and URL prefix (repeatable)"),
    AP_INIT_TAKE1("NotaryLogIntegratorDatabase", set_log_database, NULL, RSRC_CONF,
                  "NotaryLogIntegratorDatabase \"CONNINFO\" - libpq connection string of "
                  "the log integrator, a notary_integrator role (default: NotaryDatabase)"),
    { NULL }
};
