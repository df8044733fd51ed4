/* notary-verify: check the notary's evidence offline -- a promise, a
 * receipt (c2sp.org/tlog-proof@v1), the consistency of two checkpoints --
 * with nothing but the log's public key. Exit 0 valid, 1 invalid, 2 usage
 * or I/O. Formats: docs/evidence.md; manual: docs/notary-verify.1.
 *
 * Every command is a row of `commands`: parse its own arguments, check,
 * report through the shared report (text or --json). `audit` (needs the
 * schema and libpq) will be one more row. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "notary_leaf.h"
#include "notary_merkle.h"
#include "notary_note.h"
#include "notary_util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define EXIT_VALID 0
#define EXIT_INVALID 1
#define EXIT_USAGE 2
#define MAX_KEYS 16

static const char usage_text[] =
"usage: notary-verify [--json] (--key VKEY | --key-file FILE)... COMMAND ...\n"
"\n"
"  promise FILE [--body FILE] [--headers FILE]\n"
"        a promise (the Notary-Receipt header's value, or the 202 answer of\n"
"        /.notary/receipt/...): signed by the log, names this entry\n"
"  receipt FILE [--body FILE] [--headers FILE]\n"
"        a c2sp.org/tlog-proof@v1 receipt: the entry is in the tree of a\n"
"        checkpoint the log signed\n"
"  consistency OLD NEW (--proof FILE | --tiles DIR)\n"
"        the log of checkpoint NEW extends that of OLD (each a checkpoint or a\n"
"        receipt); the proof from a file of base64 hashes, or computed from\n"
"        tiles fetched from /.notary/log/ into DIR\n"
"\n"
"  --key VKEY        the log's public key, a C2SP vkey (NAME+KEYID+BASE64)\n"
"  --key-file FILE   vkeys, one a line ('#' starts a comment)\n"
"  --body FILE       check that the entry commits to these body bytes\n"
"  --headers FILE    check that the entry commits to these header bytes\n"
"  --json            one JSON object on standard output\n"
"  --version, --help\n"
"\n"
"A FILE of - is standard input. Exit status: 0 valid, 1 invalid, 2 usage or I/O.\n";

enum { O_KEY = 256, O_KEY_FILE, O_BODY, O_HEADERS, O_PROOF, O_TILES, O_JSON, O_VERSION, O_HELP };

static const apr_getopt_option_t options[] = {
    { "key", O_KEY, 1, "" }, { "key-file", O_KEY_FILE, 1, "" },
    { "body", O_BODY, 1, "" }, { "headers", O_HEADERS, 1, "" },
    { "proof", O_PROOF, 1, "" }, { "tiles", O_TILES, 1, "" },
    { "json", O_JSON, 0, "" }, { "version", O_VERSION, 0, "" }, { "help", O_HELP, 0, "" },
    { NULL, 0, 0, NULL },
};

typedef struct {
    apr_pool_t *p;
    int json;
    const notary_note_key *keys[MAX_KEYS];
    int nkeys;
    const char *body, *headers, *proof, *tiles;
    const char *args[4];
    int nargs;
    json_t *out;          /* the report, also for text output */
    int valid;
    const char *reason;
} verify_ctx;

typedef int (*command_fn)(verify_ctx *c);

/* apr_getopt takes a lone "-" for a broken option: main hands it this
 * stand-in instead, told apart by its address. */
static const char stdin_arg[] = "<stdin>";

static int is_stdin(const char *path)
{
    return path == stdin_arg;
}

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "notary-verify: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n(notary-verify --help for usage)\n");
}

/* Whole file or stdin into memory, at most max bytes. NULL (and a message
 * on stderr) on error. */
static char *read_file(apr_pool_t *p, const char *path, apr_size_t max, apr_size_t *len)
{
    apr_file_t *f;
    apr_status_t rv;
    char *buf, err[256];
    apr_size_t cap = 65536, n = 0;

    rv = is_stdin(path) ? apr_file_open_stdin(&f, p)
                                : apr_file_open(&f, path, APR_READ | APR_BINARY, 0, p);
    if (rv != APR_SUCCESS) {
        fprintf(stderr, "notary-verify: cannot open %s: %s\n", path, apr_strerror(rv, err, sizeof(err)));
        return NULL;
    }
    buf = apr_palloc(p, cap + 1);
    for (;;) {
        apr_size_t want = cap - n;

        rv = apr_file_read(f, buf + n, &want);
        n += want;
        if (rv == APR_EOF || (rv == APR_SUCCESS && want == 0)) {
            break;
        }
        if (rv != APR_SUCCESS) {
            fprintf(stderr, "notary-verify: cannot read %s: %s\n", path, apr_strerror(rv, err, sizeof(err)));
            return NULL;
        }
        if (n == cap) {
            char *bigger;
            if (cap >= max) {
                fprintf(stderr, "notary-verify: %s is larger than %lu bytes\n", path, (unsigned long)max);
                return NULL;
            }
            cap *= 2;
            bigger = apr_palloc(p, cap + 1);
            memcpy(bigger, buf, n);
            buf = bigger;
        }
    }
    apr_file_close(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* SHA-256 of a file of any size, streamed. 0, or -1 (message on stderr). */
static int hash_file(apr_pool_t *p, const char *path, unsigned char out[32])
{
    apr_file_t *f;
    apr_status_t rv;
    EVP_MD_CTX *ctx = NULL;
    char buf[65536], err[256];
    unsigned int n = 0;
    int res = -1;

    rv = is_stdin(path) ? apr_file_open_stdin(&f, p)
                                : apr_file_open(&f, path, APR_READ | APR_BINARY, 0, p);
    if (rv != APR_SUCCESS) {
        fprintf(stderr, "notary-verify: cannot open %s: %s\n", path, apr_strerror(rv, err, sizeof(err)));
        return -1;
    }
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "notary-verify: libcrypto cannot hash\n");
        goto cleanup;
    }
    for (;;) {
        apr_size_t len = sizeof(buf);

        rv = apr_file_read(f, buf, &len);
        if (len && EVP_DigestUpdate(ctx, buf, len) != 1) {
            fprintf(stderr, "notary-verify: libcrypto cannot hash\n");
            goto cleanup;
        }
        if (rv == APR_EOF) {
            break;
        }
        if (rv != APR_SUCCESS) {
            fprintf(stderr, "notary-verify: cannot read %s: %s\n", path, apr_strerror(rv, err, sizeof(err)));
            goto cleanup;
        }
    }
    if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32) {
        fprintf(stderr, "notary-verify: libcrypto cannot hash\n");
        goto cleanup;
    }
    res = 0;
cleanup:
    EVP_MD_CTX_free(ctx);
    apr_file_close(f);
    return res;
}

static int add_key(verify_ctx *c, const char *vkey)
{
    const char *why = NULL;
    notary_note_key *k;

    if (c->nkeys == MAX_KEYS) {
        usage_error("more than 16 keys", NULL);
        return -1;
    }
    if (!(k = notary_note_vkey_parse(c->p, vkey, &why))) {
        fprintf(stderr, "notary-verify: not a vkey (%s): %s\n", why, vkey);
        return -1;
    }
    c->keys[c->nkeys++] = k;
    return 0;
}

static int add_key_file(verify_ctx *c, const char *path)
{
    apr_size_t len;
    char *buf = read_file(c->p, path, 65536, &len), *line, *last;
    int added = 0;

    if (!buf) {
        return -1;
    }
    for (line = apr_strtok(buf, "\r\n", &last); line; line = apr_strtok(NULL, "\r\n", &last)) {
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') {
            continue;
        }
        if (add_key(c, line) != 0) {
            return -1;
        }
        added++;
    }
    if (!added) {
        fprintf(stderr, "notary-verify: no vkey in %s\n", path);
        return -1;
    }
    return 0;
}

static const char *iso_time(apr_pool_t *p, apr_int64_t us)
{
    apr_int64_t secs = us / 1000000, frac = us % 1000000;
    time_t t;
    struct tm tm;
    char buf[64];

    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    t = (time_t)secs;
    if (!gmtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        return apr_psprintf(p, "%" APR_INT64_T_FMT " us", us);
    }
    return apr_psprintf(p, "%s.%06dZ", buf, (int)frac);
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* JSON strings must be UTF-8: a field that is not is shown in hex. */
static json_t *jbytes(apr_pool_t *p, const char *s, apr_size_t len)
{
    json_t *j;

    if (!s) {
        return json_null();
    }
    if ((j = json_stringn(s, len))) {
        return j;
    }
    return json_pack("{s:s}", "hex", notary_hex(p, (const unsigned char *)s, len));
}

static json_t *entry_json(apr_pool_t *p, const notary_leaf_entry *e, const unsigned char *leaf_hash)
{
    json_t *j = json_object();

    json_object_set_new(j, "direction", jstr(notary_leaf_direction_name(e->direction)));
    json_object_set_new(j, "recorded_at", json_string(iso_time(p, e->recorded_at_us)));
    json_object_set_new(j, "recorded_at_us", json_integer((json_int_t)e->recorded_at_us));
    json_object_set_new(j, "status", e->direction == NOTARY_LEAF_REQUEST ? json_null()
                                                                         : json_integer(e->status));
    json_object_set_new(j, "salt", json_string(notary_hex(p, e->salt, sizeof(e->salt))));
    json_object_set_new(j, "sender_key_sha256", json_string(notary_hex(p, e->sender_key_sha256, 32)));
    json_object_set_new(j, "receiver_key_sha256", json_string(notary_hex(p, e->receiver_key_sha256, 32)));
    json_object_set_new(j, "metadata_sha256", json_string(notary_hex(p, e->metadata_sha256, 32)));
    json_object_set_new(j, "headers_sha256", json_string(notary_hex(p, e->headers_sha256, 32)));
    json_object_set_new(j, "body_sha256", json_string(notary_hex(p, e->body_sha256, 32)));
    json_object_set_new(j, "token_sha256", notary_leaf_has_token(e)
                        ? json_string(notary_hex(p, e->token_sha256, 32)) : json_null());
    if (leaf_hash) {
        json_object_set_new(j, "leaf_hash", json_string(notary_hex(p, leaf_hash, 32)));
    }
    return j;
}

static json_t *meta_json(apr_pool_t *p, const notary_leaf_meta *m)
{
    json_t *j = json_object();

    json_object_set_new(j, "merchant", jbytes(p, m->merchant, m->merchant_len));
    json_object_set_new(j, "rule", jbytes(p, m->rule, m->rule_len));
    json_object_set_new(j, "method", jbytes(p, m->method, m->method_len));
    json_object_set_new(j, "uri", jbytes(p, m->uri, m->uri_len));
    json_object_set_new(j, "content_type", jbytes(p, m->content_type, m->content_type_len));
    json_object_set_new(j, "exchange_id", jbytes(p, m->exchange_id, m->exchange_id_len));
    return j;
}

static json_t *checkpoint_json(apr_pool_t *p, const notary_checkpoint *cp, const notary_note *n)
{
    json_t *j = json_object();

    json_object_set_new(j, "origin", json_string(cp->origin));
    json_object_set_new(j, "tree_size", json_integer((json_int_t)cp->size));
    json_object_set_new(j, "root", json_string(notary_b64_encode(p, cp->root, 32)));
    if (n && n->verified_by) {
        json_object_set_new(j, "key_id", json_string(apr_psprintf(p, "%08x", (unsigned)n->verified_by->id)));
        json_object_set_new(j, "signatures", json_integer(n->nsigs));
    }
    return j;
}

static void invalid(verify_ctx *c, const char *reason)
{
    if (c->valid) {
        c->valid = 0;
        c->reason = reason;
    }
}

/* --body / --headers against the entry's hashes; -1 on I/O error. */
static int check_files(verify_ctx *c, const notary_leaf_entry *e)
{
    unsigned char h[32];
    json_t *files = json_object();

    json_object_set_new(c->out, "files", files);
    if (c->body) {
        if (hash_file(c->p, c->body, h) != 0) {
            return -1;
        }
        json_object_set_new(files, "body", json_pack("{s:s,s:b}", "sha256", notary_hex(c->p, h, 32),
                                                      "matches", memcmp(h, e->body_sha256, 32) == 0));
        if (memcmp(h, e->body_sha256, 32) != 0) {
            invalid(c, apr_psprintf(c->p, "the body in %s is not the body the entry commits to", c->body));
        }
    }
    if (c->headers) {
        if (hash_file(c->p, c->headers, h) != 0) {
            return -1;
        }
        json_object_set_new(files, "headers", json_pack("{s:s,s:b}", "sha256", notary_hex(c->p, h, 32),
                                                         "matches", memcmp(h, e->headers_sha256, 32) == 0));
        if (memcmp(h, e->headers_sha256, 32) != 0) {
            invalid(c, apr_psprintf(c->p, "the headers in %s are not the headers the entry commits to",
                                    c->headers));
        }
    }
    return 0;
}

static int cmd_promise(verify_ctx *c)
{
    apr_size_t len;
    char *buf;
    notary_promise pr;
    notary_note *n = NULL;
    const char *why = NULL;
    unsigned char leaf[32];

    if (c->nargs != 1 || c->proof || c->tiles) {
        usage_error("usage: promise FILE [--body FILE] [--headers FILE]", NULL);
        return EXIT_USAGE;
    }
    if (!(buf = read_file(c->p, c->args[0], NOTARY_NOTE_MAX_LEN, &len))) {
        return EXIT_USAGE;
    }
    json_object_set_new(c->out, "file", json_string(c->args[0]));
    if (notary_promise_verify(c->p, buf, len, c->keys, c->nkeys, &pr, &n, &why) != 0) {
        invalid(c, why);
        return EXIT_INVALID;
    }
    notary_merkle_leaf_hash(pr.entry_bytes, NOTARY_LEAF_LEN, leaf);
    json_object_set_new(c->out, "log", json_pack("{s:s,s:s}", "origin", pr.origin, "key_id",
                                                 apr_psprintf(c->p, "%08x", (unsigned)n->verified_by->id)));
    json_object_set_new(c->out, "mmd", json_integer((json_int_t)pr.mmd));
    json_object_set_new(c->out, "entry", entry_json(c->p, &pr.entry, leaf));
    if (check_files(c, &pr.entry) != 0) {
        return EXIT_USAGE;
    }
    return c->valid ? EXIT_VALID : EXIT_INVALID;
}

static int cmd_receipt(verify_ctx *c)
{
    apr_size_t len;
    char *buf;
    notary_receipt r;
    const char *why = NULL;
    int rv;

    if (c->nargs != 1 || c->proof || c->tiles) {
        usage_error("usage: receipt FILE [--body FILE] [--headers FILE]", NULL);
        return EXIT_USAGE;
    }
    if (!(buf = read_file(c->p, c->args[0], NOTARY_NOTE_MAX_LEN, &len))) {
        return EXIT_USAGE;
    }
    json_object_set_new(c->out, "file", json_string(c->args[0]));
    rv = notary_receipt_verify(c->p, buf, len, c->keys, c->nkeys, &r, &why);
    if (rv != 0) {
        /* what was read before the failure helps to see which record it claims */
        if (r.entry.direction) {
            json_object_set_new(c->out, "index", json_integer((json_int_t)r.tp.index));
            json_object_set_new(c->out, "entry", entry_json(c->p, &r.entry, r.leaf_hash));
        }
        invalid(c, why);
        return EXIT_INVALID;
    }
    json_object_set_new(c->out, "log", checkpoint_json(c->p, &r.cp, r.note));
    json_object_set_new(c->out, "index", json_integer((json_int_t)r.tp.index));
    json_object_set_new(c->out, "entry", entry_json(c->p, &r.entry, r.leaf_hash));
    json_object_set_new(c->out, "metadata", meta_json(c->p, &r.meta));
    /* an RFC 3161 token is carried, not judged: no TSA trust here (yet) */
    json_object_set_new(c->out, "timestamp", r.timestamp
                        ? json_pack("{s:i,s:b}", "bytes", (int)r.timestamp_len, "verified", 0) : json_null());
    if (check_files(c, &r.entry) != 0) {
        return EXIT_USAGE;
    }
    return c->valid ? EXIT_VALID : EXIT_INVALID;
}

/* A checkpoint from a file holding a signed checkpoint or a receipt. */
static int open_checkpoint(verify_ctx *c, const char *path, notary_checkpoint *cp, notary_note **n)
{
    apr_size_t len;
    char *buf = read_file(c->p, path, NOTARY_NOTE_MAX_LEN, &len);
    const char *why = NULL;

    if (!buf) {
        return EXIT_USAGE;
    }
    if (strncmp(buf, NOTARY_TLOG_PROOF_HEADER "\n", sizeof(NOTARY_TLOG_PROOF_HEADER)) == 0) {
        notary_tlog_proof tp;

        if (notary_tlog_proof_parse(c->p, buf, len, &tp, &why) != 0) {
            invalid(c, apr_psprintf(c->p, "%s: %s", path, why));
            return EXIT_INVALID;
        }
        buf = (char *)tp.checkpoint;
        len = tp.checkpoint_len;
    }
    if (notary_checkpoint_open(c->p, buf, len, c->keys, c->nkeys, cp, n, &why) != 0) {
        invalid(c, apr_psprintf(c->p, "%s: %s", path, why));
        return EXIT_INVALID;
    }
    return EXIT_VALID;
}

typedef struct {
    apr_pool_t *p;
    const char *dir;
    const char *failed;   /* the first tile that could not be read */
} tile_dir;

/* DIR/tile/L/N[.p/W]; the full tile serves for a partial one. */
static int read_tile_dir(void *baton, unsigned level, apr_uint64_t index, unsigned width,
                         unsigned char *out)
{
    tile_dir *td = baton;
    unsigned tries[2], t;
    int k, n = 0;

    tries[n++] = width;
    if (width != NOTARY_TILE_WIDTH) {
        tries[n++] = NOTARY_TILE_WIDTH;
    }
    for (k = 0; k < n; k++) {
        const char *rel = notary_tile_path(td->p, (int)level, index, tries[k]);
        const char *path = apr_pstrcat(td->p, td->dir, "/", rel, NULL);
        apr_file_t *f;
        apr_finfo_t fi;
        apr_size_t got;

        t = tries[k];
        if (apr_file_open(&f, path, APR_READ | APR_BINARY, 0, td->p) != APR_SUCCESS) {
            if (!td->failed) td->failed = path;
            continue;
        }
        if (apr_file_info_get(&fi, APR_FINFO_SIZE, f) != APR_SUCCESS
            || fi.size != (apr_off_t)t * NOTARY_HASH_LEN
            || apr_file_read_full(f, out, (apr_size_t)width * NOTARY_HASH_LEN, &got) != APR_SUCCESS) {
            apr_file_close(f);
            td->failed = apr_pstrcat(td->p, path, " (wrong size or unreadable)", NULL);
            return -1;
        }
        apr_file_close(f);
        return 0;
    }
    return -1;
}

static int read_proof_file(verify_ctx *c, unsigned char **proof, apr_size_t *count)
{
    apr_size_t len;
    char *buf = read_file(c->p, c->proof, 65536, &len), *line, *last;

    if (!buf) {
        return EXIT_USAGE;
    }
    *proof = apr_palloc(c->p, NOTARY_MERKLE_MAX_PROOF * NOTARY_HASH_LEN);
    *count = 0;
    for (line = apr_strtok(buf, "\n", &last); line; line = apr_strtok(NULL, "\n", &last)) {
        unsigned char *h;
        apr_size_t hlen;

        if (*count == NOTARY_MERKLE_MAX_PROOF
            || !(h = notary_b64_decode(c->p, line, strlen(line), &hlen)) || hlen != NOTARY_HASH_LEN) {
            invalid(c, apr_psprintf(c->p, "%s: a line is not the base64 of a 32-byte hash, "
                                    "or more than 64 lines", c->proof));
            return EXIT_INVALID;
        }
        memcpy(*proof + (*count)++ * NOTARY_HASH_LEN, h, NOTARY_HASH_LEN);
    }
    return EXIT_VALID;
}

static int cmd_consistency(verify_ctx *c)
{
    notary_checkpoint a, b;
    notary_note *na = NULL, *nb = NULL;
    unsigned char *proof = NULL;
    apr_size_t count = 0;
    int rv;

    if (c->nargs != 2 || c->body || c->headers || (c->proof && c->tiles)) {
        usage_error("usage: consistency OLD NEW (--proof FILE | --tiles DIR)", NULL);
        return EXIT_USAGE;
    }
    if ((rv = open_checkpoint(c, c->args[0], &a, &na)) != EXIT_VALID
        || (rv = open_checkpoint(c, c->args[1], &b, &nb)) != EXIT_VALID) {
        return rv;
    }
    json_object_set_new(c->out, "old", checkpoint_json(c->p, &a, na));
    json_object_set_new(c->out, "new", checkpoint_json(c->p, &b, nb));
    if (strcmp(a.origin, b.origin) != 0) {
        invalid(c, "the two checkpoints are of different logs");
        return EXIT_INVALID;
    }
    if (a.size > b.size) {
        usage_error("OLD's tree is larger than NEW's: give the older checkpoint first", NULL);
        return EXIT_USAGE;
    }
    if (a.size != b.size && a.size != 0 && !c->proof && !c->tiles) {
        usage_error("consistency needs --proof FILE or --tiles DIR", NULL);
        return EXIT_USAGE;
    }
    if (c->proof && (rv = read_proof_file(c, &proof, &count)) != EXIT_VALID) {
        return rv;
    }
    if (c->tiles && a.size != b.size && a.size != 0) {
        tile_dir td = { c->p, c->tiles, NULL };
        notary_merkle_source src;
        unsigned char root[NOTARY_HASH_LEN];

        notary_merkle_source_tiles(&src, c->p, b.size, read_tile_dir, &td);
        if (notary_merkle_root(&src, b.size, root) != 0) {
            fprintf(stderr, "notary-verify: cannot read tile %s\n", td.failed ? td.failed : "?");
            return EXIT_USAGE;
        }
        if (memcmp(root, b.root, NOTARY_HASH_LEN) != 0) {
            invalid(c, "the tiles do not hash to NEW's root: they are not the tree NEW signed");
            return EXIT_INVALID;
        }
        if (notary_merkle_prove_consistency(c->p, &src, a.size, b.size, &proof, &count) != 0) {
            fprintf(stderr, "notary-verify: cannot read tile %s\n", td.failed ? td.failed : "?");
            return EXIT_USAGE;
        }
    }
    json_object_set_new(c->out, "proof_hashes", json_integer((json_int_t)count));
    if (!notary_merkle_verify_consistency(a.size, a.root, b.size, b.root, proof, count)) {
        invalid(c, a.size == b.size ? "two different roots for one tree size: the log forked"
                                    : "NEW's tree does not extend OLD's: the log rewrote its history or forked");
        return EXIT_INVALID;
    }
    return EXIT_VALID;
}

static const struct {
    const char *name;
    command_fn run;
} commands[] = {
    { "promise", cmd_promise },
    { "receipt", cmd_receipt },
    { "consistency", cmd_consistency },
    { NULL, NULL }
};

static void print_text(verify_ctx *c, const char *cmd)
{
    json_t *entry = json_object_get(c->out, "entry"), *meta = json_object_get(c->out, "metadata");
    json_t *log = json_object_get(c->out, "log"), *files = json_object_get(c->out, "files");
    const char *k;
    json_t *v;

    printf("%s: %s%s%s\n", cmd, c->valid ? "VALID" : "INVALID", c->valid ? "" : ": ",
           c->valid ? "" : (c->reason ? c->reason : "?"));
    if (log) {
        printf("  log                   %s (key %s)", json_string_value(json_object_get(log, "origin")),
               json_string_value(json_object_get(log, "key_id")));
        if (json_object_get(log, "tree_size")) {
            printf(", tree size %" JSON_INTEGER_FORMAT ", root %s",
                   json_integer_value(json_object_get(log, "tree_size")),
                   json_string_value(json_object_get(log, "root")));
        }
        printf("\n");
    }
    if (json_object_get(c->out, "index")) {
        printf("  index                 %" JSON_INTEGER_FORMAT "\n", json_integer_value(json_object_get(c->out, "index")));
    }
    if (json_object_get(c->out, "mmd")) {
        printf("  mmd                   %" JSON_INTEGER_FORMAT " s (a promise is not inclusion: ask for the "
               "receipt after that)\n", json_integer_value(json_object_get(c->out, "mmd")));
    }
    json_object_foreach(entry, k, v) {
        if (json_is_string(v)) printf("  %-21s %s\n", k, json_string_value(v));
        else if (json_is_integer(v)) printf("  %-21s %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(v));
        else if (json_is_null(v)) printf("  %-21s -\n", k);
    }
    json_object_foreach(meta, k, v) {
        if (json_is_string(v)) printf("  %-21s %s\n", k, json_string_value(v));
        else if (json_is_null(v)) printf("  %-21s (null)\n", k);
        else printf("  %-21s hex %s\n", k, json_string_value(json_object_get(v, "hex")));
    }
    json_object_foreach(files, k, v) {
        printf("  %-21s %s %s\n", k, json_string_value(json_object_get(v, "sha256")),
               json_is_true(json_object_get(v, "matches")) ? "matches the entry" : "DOES NOT match the entry");
    }
    if (json_object_get(c->out, "timestamp") && !json_is_null(json_object_get(c->out, "timestamp"))) {
        printf("  timestamp             RFC 3161 token present, not verified by this version\n");
    }
    if (json_object_get(c->out, "old")) {
        json_t *o = json_object_get(c->out, "old"), *n = json_object_get(c->out, "new");
        printf("  old                   %s size %" JSON_INTEGER_FORMAT " root %s\n",
               json_string_value(json_object_get(o, "origin")),
               json_integer_value(json_object_get(o, "tree_size")), json_string_value(json_object_get(o, "root")));
        if (n) {
            printf("  new                   %s size %" JSON_INTEGER_FORMAT " root %s\n",
                   json_string_value(json_object_get(n, "origin")),
                   json_integer_value(json_object_get(n, "tree_size")), json_string_value(json_object_get(n, "root")));
        }
    }
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    apr_getopt_t *opt;
    apr_status_t rv;
    const char *arg, *cmd;
    verify_ctx c;
    int optch, i, code = EXIT_USAGE;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        fprintf(stderr, "notary-verify: cannot initialize APR\n");
        return EXIT_USAGE;
    }
    memset(&c, 0, sizeof(c));
    c.p = p;
    c.valid = 1;
    {
        const char **args = apr_pmemdup(p, argv, sizeof(*argv) * (apr_size_t)(argc + 1));
        for (i = 1; i < argc; i++) {
            if (strcmp(args[i], "-") == 0) {
                args[i] = stdin_arg;
            }
        }
        if (apr_getopt_init(&opt, p, argc, args) != APR_SUCCESS) {
            goto done;
        }
    }
    opt->interleave = 1;   /* options may follow the command and its files */
    while ((rv = apr_getopt_long(opt, options, &optch, &arg)) == APR_SUCCESS) {
        switch (optch) {
        case O_KEY:      if (add_key(&c, arg) != 0) goto done; break;
        case O_KEY_FILE: if (add_key_file(&c, arg) != 0) goto done; break;
        case O_BODY:     c.body = arg; break;
        case O_HEADERS:  c.headers = arg; break;
        case O_PROOF:    c.proof = arg; break;
        case O_TILES:    c.tiles = arg; break;
        case O_JSON:     c.json = 1; break;
        case O_VERSION:  printf("notary-verify %s\n", PACKAGE_VERSION); code = EXIT_VALID; goto done;
        case O_HELP:     fputs(usage_text, stdout); code = EXIT_VALID; goto done;
        }
    }
    if (rv != APR_EOF) {
        usage_error("bad option (see --help)", NULL);
        goto done;
    }
    if (opt->ind >= argc) {
        usage_error("no command: promise, receipt or consistency", NULL);
        goto done;
    }
    /* interleave permutes opt->argv, not argv */
    cmd = opt->argv[opt->ind];
    for (i = opt->ind + 1; i < argc; i++) {
        if (c.nargs == 4) {
            usage_error("too many arguments", NULL);
            goto done;
        }
        c.args[c.nargs++] = opt->argv[i];
    }
    for (i = 0; commands[i].name && strcmp(commands[i].name, cmd) != 0; i++)
        ;
    if (!commands[i].name) {
        usage_error("unknown command %s: promise, receipt or consistency", cmd);
        goto done;
    }
    if (c.nkeys == 0) {
        usage_error("the log's public key is needed: --key VKEY or --key-file FILE", NULL);
        goto done;
    }
    c.out = json_object();
    code = commands[i].run(&c);
    if (code != EXIT_USAGE) {
        json_object_set_new(c.out, "command", json_string(cmd));
        json_object_set_new(c.out, "valid", json_boolean(code == EXIT_VALID));
        json_object_set_new(c.out, "reason", c.valid ? json_null() : json_string(c.reason ? c.reason : "?"));
        if (c.json) {
            char *s = json_dumps(c.out, JSON_INDENT(2));
            if (!s) {
                fprintf(stderr, "notary-verify: cannot write JSON\n");
                code = EXIT_USAGE;
            }
            else {
                printf("%s\n", s);
                free(s);
            }
        }
        else {
            print_text(&c, cmd);
        }
    }
    json_decref(c.out);
done:
    if (fflush(stdout) != 0 && code != EXIT_USAGE) {
        code = EXIT_USAGE;
    }
    apr_pool_destroy(p);
    apr_terminate();
    return code;
}
