/* notary-verify: check the notary's evidence offline -- a promise, a
 * receipt (c2sp.org/tlog-proof@v1), the consistency of two checkpoints --
 * with nothing but the log's public key. Exit 0 valid, 1 invalid, 2 usage
 * or I/O. Formats: docs/evidence.md; manual: docs/notary-verify.1.
 *
 * Every command is a row of `commands`: parse its own arguments, check,
 * report through the shared report (text or --json). `audit` reads the
 * record store with libpq (schema version 3). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_hash.h>
#include <apr_tables.h>
#include <apr_getopt.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#include "notary_leaf.h"
#include "notary_log.h"
#include "notary_merkle.h"
#include "notary_note.h"
#include "notary_witness.h"
#include "notary_tsa.h"
#include "notary_util.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define EXIT_VALID 0
#define EXIT_INVALID 1
#define EXIT_USAGE 2
#define MAX_KEYS 16

static const char usage_text[] =
    "usage: notary-verify [--json] (--key VKEY | --key-file FILE)... [--witness VKEY]... COMMAND ...\n"
    "\n"
    "  promise FILE [--body FILE] [--headers FILE]\n"
    "        a promise (the Notary-Receipt header's value, or the 202 answer of\n"
    "        /.notary/receipt/...): signed by the log, names this entry\n"
    "  receipt FILE [--body FILE] [--headers FILE] [--tsa-ca FILE]\n"
    "        a c2sp.org/tlog-proof@v1 receipt: the entry is in the tree of a\n"
    "        checkpoint the log signed (and, with --tsa-ca, that the checkpoint\n"
    "        was time-stamped by a TSA of that CA)\n"
    "  consistency OLD NEW (--proof FILE | --tiles DIR)\n"
    "        the log of checkpoint NEW extends that of OLD (each a checkpoint or a\n"
    "        receipt); the proof from a file of base64 hashes, or computed from\n"
    "        tiles fetched from /.notary/log/ into DIR\n"
    "  audit --db CONNINFO [--checkpoint FILE]... [--receipt FILE]... [--max-lag SECONDS]\n"
    "        [--tsa-ca FILE]\n"
    "        the record store against its log: every row's leaf recomputed, the\n"
    "        tree, the stored checkpoints, and the checkpoints and receipts given;\n"
    "        names every altered, dropped, reordered, unlogged or backdated row\n"
    "        and any fork (--max-lag: the integration lag allowed, default 60)\n"
    "\n"
    "  --key VKEY        the log's public key, a C2SP vkey (NAME+KEYID+BASE64)\n"
    "  --key-file FILE   vkeys, one a line ('#' starts a comment)\n"
    "  --body FILE       check that the entry commits to these body bytes\n"
    "  --headers FILE    check that the entry commits to these header bytes\n"
    "  --tsa-ca FILE     the RFC 3161 TSA's CA certificates (PEM): check the\n"
    "                    receipt's time-stamp token (a receipt without one fails);\n"
    "                    audit: every stored token, and each row's time against\n"
    "                    the TSA's (postdated, backdated)\n"
    "  --witness VKEY    a witness's cosignature key (C2SP tlog-cosignature, type\n"
    "                    0x04; repeatable): every checkpoint checked (receipt,\n"
    "                    consistency, audit's given files) must carry a valid\n"
    "                    cosignature of each\n"
    "  --db CONNINFO     libpq connection string (audit; a member of notary_reader)\n"
    "  --json            one JSON object on standard output\n"
    "  --version, --help\n"
    "\n"
    "A FILE of - is standard input. Exit status: 0 valid, 1 invalid, 2 usage or I/O.\n";

enum { O_KEY = 256,
       O_KEY_FILE,
       O_BODY,
       O_HEADERS,
       O_PROOF,
       O_TILES,
       O_JSON,
       O_VERSION,
       O_HELP,
       O_DB,
       O_CHECKPOINT,
       O_RECEIPT,
       O_MAX_LAG,
       O_TSA_CA,
       O_WITNESS };
#define MAX_FILES 64

static const apr_getopt_option_t options[] = {
    { "key", O_KEY, 1, "" },
    { "key-file", O_KEY_FILE, 1, "" },
    { "body", O_BODY, 1, "" },
    { "headers", O_HEADERS, 1, "" },
    { "proof", O_PROOF, 1, "" },
    { "tiles", O_TILES, 1, "" },
    { "json", O_JSON, 0, "" },
    { "version", O_VERSION, 0, "" },
    { "help", O_HELP, 0, "" },
    { "db", O_DB, 1, "" },
    { "checkpoint", O_CHECKPOINT, 1, "" },
    { "receipt", O_RECEIPT, 1, "" },
    { "max-lag", O_MAX_LAG, 1, "" },
    { "tsa-ca", O_TSA_CA, 1, "" },
    { "witness", O_WITNESS, 1, "" },
    { NULL, 0, 0, NULL },
};

typedef struct {
    apr_pool_t *p;
    int json;
    const notary_note_key *keys[MAX_KEYS];
    int nkeys;
    const notary_witness_key *wits[MAX_KEYS]; /* --witness */
    int nwits;
    const char *body, *headers, *proof, *tiles;
    const char *args[4];
    int nargs;
    const char *db;     /* audit */
    const char *tsa_ca; /* receipt: the TSA's CA file */
    struct {
        const char *path;
        int receipt;
    } files[MAX_FILES];
    int nfiles;
    apr_int64_t max_lag;
    json_t *out; /* the report, also for text output */
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
    json_object_set_new(j, "status", e->direction == NOTARY_LEAF_REQUEST ? json_null() : json_integer(e->status));
    json_object_set_new(j, "salt", json_string(notary_hex(p, e->salt, sizeof(e->salt))));
    json_object_set_new(j, "sender_key_sha256", json_string(notary_hex(p, e->sender_key_sha256, 32)));
    json_object_set_new(j, "receiver_key_sha256", json_string(notary_hex(p, e->receiver_key_sha256, 32)));
    json_object_set_new(j, "metadata_sha256", json_string(notary_hex(p, e->metadata_sha256, 32)));
    json_object_set_new(j, "headers_sha256", json_string(notary_hex(p, e->headers_sha256, 32)));
    json_object_set_new(j, "body_sha256", json_string(notary_hex(p, e->body_sha256, 32)));
    json_object_set_new(j, "token_sha256", notary_leaf_has_token(e) ? json_string(notary_hex(p, e->token_sha256, 32)) : json_null());
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
        json_object_set_new(files, "body", json_pack("{s:s,s:b}", "sha256", notary_hex(c->p, h, 32), "matches", memcmp(h, e->body_sha256, 32) == 0));
        if (memcmp(h, e->body_sha256, 32) != 0) {
            invalid(c, apr_psprintf(c->p, "the body in %s is not the body the entry commits to", c->body));
        }
    }
    if (c->headers) {
        if (hash_file(c->p, c->headers, h) != 0) {
            return -1;
        }
        json_object_set_new(files, "headers", json_pack("{s:s,s:b}", "sha256", notary_hex(c->p, h, 32), "matches", memcmp(h, e->headers_sha256, 32) == 0));
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
    if (len && buf[0] == ':') {
        /* the Notary-Receipt header's value: an RFC 8941 byte sequence */
        apr_size_t end = len;
        unsigned char *d;

        while (end > 1 && (buf[end - 1] == '\n' || buf[end - 1] == '\r')) {
            end--;
        }
        if (end < 2 || buf[end - 1] != ':'
            || !(d = notary_b64_decode(c->p, buf + 1, end - 2, &len))) {
            invalid(c, "a value that begins with ':' is not an RFC 8941 byte sequence (:BASE64:)");
            return EXIT_INVALID;
        }
        buf = (char *)d;
    }
    if (notary_promise_verify(c->p, buf, len, c->keys, c->nkeys, &pr, &n, &why) != 0) {
        invalid(c, why);
        return EXIT_INVALID;
    }
    notary_merkle_leaf_hash(pr.entry_bytes, NOTARY_LEAF_LEN, leaf);
    json_object_set_new(c->out, "log", json_pack("{s:s,s:s}", "origin", pr.origin, "key_id", apr_psprintf(c->p, "%08x", (unsigned)n->verified_by->id)));
    json_object_set_new(c->out, "mmd", json_integer((json_int_t)pr.mmd));
    json_object_set_new(c->out, "entry", entry_json(c->p, &pr.entry, leaf));
    if (check_files(c, &pr.entry) != 0) {
        return EXIT_USAGE;
    }
    return c->valid ? EXIT_VALID : EXIT_INVALID;
}

/* The receipt's RFC 3161 token: over SHA-256 of its checkpoint (the signed
 * note, byte for byte), signed by a TSA of --tsa-ca. Without --tsa-ca it is
 * shown, not judged: the TSA's trust is the verifier's to give. -1 when
 * --tsa-ca cannot be read. */
static int check_timestamp(verify_ctx *c, const notary_receipt *r)
{
    unsigned char digest[32];
    const char *why = NULL;
    apr_time_t when = 0;
    char date[APR_RFC822_DATE_LEN];

    if (!r->timestamp) {
        json_object_set_new(c->out, "timestamp", json_null());
        if (c->tsa_ca) {
            invalid(c, "the receipt carries no RFC 3161 time-stamp (--tsa-ca asks for one)");
        }
        return 0;
    }
    if (!c->tsa_ca) {
        json_object_set_new(c->out, "timestamp", json_pack("{s:i,s:b}", "bytes", (int)r->timestamp_len, "verified", 0));
        return 0;
    }
    if (notary_tsa_check_cafile(c->p, c->tsa_ca, &why) != 0) {
        usage_error("--tsa-ca: %s", why);
        return -1;
    }
    notary_sha256(r->tp.checkpoint, r->tp.checkpoint_len, digest);
    if (notary_tsa_token_verify(c->p, r->timestamp, r->timestamp_len, digest, c->tsa_ca, &when, &why) != 0) {
        json_object_set_new(c->out, "timestamp", json_pack("{s:i,s:b}", "bytes", (int)r->timestamp_len, "verified", 0));
        invalid(c, apr_psprintf(c->p, "the receipt's time-stamp: %s", why));
        return 0;
    }
    apr_rfc822_date(date, when);
    json_object_set_new(c->out, "timestamp", json_pack("{s:i,s:b,s:s,s:I}", "bytes", (int)r->timestamp_len, "verified", 1, "time", date, "unix", (json_int_t)apr_time_sec(when)));
    return 0;
}

static int add_witness(verify_ctx *c, const char *vkey)
{
    const char *why = NULL;
    notary_witness_key *k;

    if (c->nwits == MAX_KEYS) {
        usage_error("more than 16 witnesses", NULL);
        return -1;
    }
    if (!(k = notary_witness_vkey_parse(c->p, vkey, &why))) {
        fprintf(stderr, "notary-verify: --witness: not a witness vkey (%s): %s\n", why, vkey);
        return -1;
    }
    c->wits[c->nwits++] = k;
    return 0;
}

/* --witness: the signed checkpoint `note` carries a valid cosignature of
 * each witness named. 0, or -1 with *why. */
static int witnessed(verify_ctx *c, const char *note, apr_size_t len, const char **why)
{
    json_t *names;
    int i;

    if (!c->nwits) {
        return 0;
    }
    if (notary_witness_check_checkpoint(c->p, note, len, c->keys, c->nkeys, c->wits, c->nwits, why) != 0) {
        return -1;
    }
    if (!(names = json_object_get(c->out, "cosigned_by"))) {
        names = json_array();
        json_object_set_new(c->out, "cosigned_by", names);
        for (i = 0; i < c->nwits; i++) {
            json_array_append_new(names, json_string(c->wits[i]->name));
        }
    }
    return 0;
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
    if (witnessed(c, r.tp.checkpoint, r.tp.checkpoint_len, &why) != 0) {
        invalid(c, apr_psprintf(c->p, "the receipt's checkpoint: %s", why));
        return EXIT_INVALID;
    }
    if (check_timestamp(c, &r) != 0) {
        return EXIT_USAGE;
    }
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
    if (notary_checkpoint_open(c->p, buf, len, c->keys, c->nkeys, cp, n, &why) != 0
        || witnessed(c, buf, len, &why) != 0) {
        invalid(c, apr_psprintf(c->p, "%s: %s", path, why));
        return EXIT_INVALID;
    }
    return EXIT_VALID;
}

typedef struct {
    apr_pool_t *p;
    const char *dir;
    const char *failed; /* the first tile that could not be read */
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
                                          "or more than 64 lines",
                                    c->proof));
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

/* ---- audit ---------------------------------------------------------------------
 * The database against the log and against what parties hold: every row's
 * leaf recomputed from its fields, the tiles, the stored checkpoints, and
 * the checkpoints and receipts given. Reads one snapshot (REPEATABLE READ).
 * Each finding names the row (id, exchange, direction, index) and why. */

typedef struct {
    apr_int64_t id;
    apr_int64_t index; /* -1: not integrated */
    apr_uint64_t txid;
    apr_int64_t recorded_at_us, stored_at_us;
    int has_entry;          /* the row makes an entry (has a salt) */
    int has_leaf;           /* leaf_hash stored */
    unsigned char leaf[32]; /* recomputed */
    unsigned char stored_leaf[32];
    unsigned char entry[NOTARY_LEAF_LEN];
    const char *exchange_id, *direction;
} audit_row;

typedef struct {
    apr_uint64_t size;
    unsigned char root[32];
    apr_int64_t created_at_us;
    const char *note;
    apr_size_t note_len;
} audit_cp;

typedef struct {
    verify_ctx *c;
    PGconn *conn;
    json_t *findings;
    apr_array_header_t *rows;   /* audit_row, ordered by index then id */
    apr_array_header_t *cps;    /* audit_cp, by size */
    unsigned char *tile_leaves; /* level-0 hashes, log_size of them */
    apr_uint64_t log_size, tile_leaf_count;
    unsigned char log_root[32];
    apr_hash_t *by_leaf; /* recomputed leaf -> audit_row* */
    PGresult *upper;     /* the tiles above level 0 */
    apr_int64_t max_lag_us, now_us, pre_log_max_id;
} audit_ctx;

static void finding(audit_ctx *a, const char *kind, const audit_row *r, const char *fmt, ...)
{
    va_list ap;
    char *why;
    json_t *f = json_object();

    va_start(ap, fmt);
    why = apr_pvsprintf(a->c->p, fmt, ap);
    va_end(ap);
    json_object_set_new(f, "kind", json_string(kind));
    if (r) {
        json_object_set_new(f, "row", json_integer((json_int_t)r->id));
        json_object_set_new(f, "exchange_id", jstr(r->exchange_id));
        json_object_set_new(f, "direction", jstr(r->direction));
        json_object_set_new(f, "leaf_index", r->index >= 0 ? json_integer((json_int_t)r->index) : json_null());
    }
    json_object_set_new(f, "reason", json_string(why));
    json_array_append_new(a->findings, f);
    invalid(a->c, "the database does not match its log (see the findings)");
}

static const char *row_name(apr_pool_t *p, const audit_row *r)
{
    return apr_psprintf(p, "row %" APR_INT64_T_FMT " (%s %s)", r->id, r->exchange_id ? r->exchange_id : "?",
                        r->direction ? r->direction : "?");
}

static int pq_fail(audit_ctx *a, PGresult *r, const char *what)
{
    fprintf(stderr, "notary-verify: %s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(a->conn));
    PQclear(r);
    return EXIT_USAGE;
}

static apr_uint64_t be64_of(const char *d)
{
    const unsigned char *u = (const unsigned char *)d;
    apr_uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++) v = (v << 8) | u[i];
    return v;
}

static const char *fcol(const PGresult *r, int row, const char *name, int *len)
{
    int c = PQfnumber(r, name);

    if (c < 0 || PQgetisnull(r, row, c)) {
        *len = 0;
        return NULL;
    }
    *len = PQgetlength(r, row, c);
    return PQgetvalue(r, row, c);
}

/* One fetched row: recompute, check its own columns. */
static void audit_one_row(audit_ctx *a, const PGresult *r, int i)
{
    apr_pool_t *p = a->c->p;
    audit_row *row = apr_array_push(a->rows);
    notary_leaf_entry e;
    unsigned char *meta, h[32];
    apr_size_t meta_len;
    const char *v, *why = NULL;
    int len;

    memset(row, 0, sizeof(*row));
    row->id = (apr_int64_t)be64_of(fcol(r, i, "id", &len));
    row->index = (v = fcol(r, i, "leaf_index", &len)) ? (apr_int64_t)be64_of(v) : -1;
    row->txid = (v = fcol(r, i, "txid", &len)) ? (apr_uint64_t)apr_atoi64(apr_pstrmemdup(p, v, (apr_size_t)len)) : 0;
    row->recorded_at_us = (apr_int64_t)be64_of(fcol(r, i, "recorded_at_us", &len));
    row->stored_at_us = (apr_int64_t)be64_of(fcol(r, i, "stored_at_us", &len));
    v = fcol(r, i, "exchange_id", &len);
    row->exchange_id = v ? apr_pstrmemdup(p, v, (apr_size_t)len) : NULL;
    v = fcol(r, i, "direction", &len);
    row->direction = v ? apr_pstrmemdup(p, v, (apr_size_t)len) : NULL;
    if ((v = fcol(r, i, "leaf_hash", &len)) && len == 32) {
        row->has_leaf = 1;
        memcpy(row->stored_leaf, v, 32);
    }
    if (!fcol(r, i, "salt", &len)) {
        return; /* no entry: judged with the unlogged rows */
    }
    /* the digests the row stores must be those of the bytes it stores */
    if ((v = fcol(r, i, "body", &len))) {
        int dl;
        const char *d = fcol(r, i, "body_sha256", &dl);
        notary_sha256(v, (apr_size_t)len, h);
        if (!d || dl != 32 || memcmp(d, h, 32) != 0) {
            finding(a, "altered", row, "%s: body_sha256 is not the SHA-256 of the body", row_name(p, row));
        }
    }
    if (!fcol(r, i, "sender_key", &len) || !fcol(r, i, "receiver_key", &len)) {
        finding(a, "altered", row, "%s: a key's DER is missing from notary.keys", row_name(p, row));
    }
    if (fcol(r, i, "token_sha256", &len) && !fcol(r, i, "token", &len)) {
        finding(a, "altered", row, "%s: its admission token is missing from notary.admissions", row_name(p, row));
    }
    if (notary_log_row_entry(r, i, p, &e, &meta, &meta_len, &why) != 0) {
        finding(a, "altered", row, "%s: %s", row_name(p, row), why);
        return;
    }
    row->has_entry = 1;
    notary_leaf_encode(&e, row->entry);
    notary_leaf_hash(&e, row->leaf);
    apr_hash_set(a->by_leaf, row->leaf, 32, row);
    /* an integrated row is judged against the log's leaf, more to the point */
    if (row->index < 0 && row->has_leaf && memcmp(row->leaf, row->stored_leaf, 32) != 0) {
        finding(a, "altered", row, "%s: its fields no longer hash to the leaf_hash stored with it", row_name(p, row));
    }
}

static int audit_read(audit_ctx *a)
{
    PGresult *r;
    int i;

    r = PQexec(a->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return pq_fail(a, r, "BEGIN");
    PQclear(r);
    r = PQexecParams(a->conn, "SELECT size, root, checkpoint, pre_log_max_id, "
                              "(extract(epoch FROM now()) * 1000000)::bigint FROM notary.log_state",
                     0, NULL, NULL, NULL, NULL, 1);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        return pq_fail(a, r, "reading notary.log_state (schema version 3?)");
    }
    a->log_size = be64_of(PQgetvalue(r, 0, 0));
    memcpy(a->log_root, PQgetvalue(r, 0, 1), 32);
    a->pre_log_max_id = (apr_int64_t)be64_of(PQgetvalue(r, 0, 3));
    a->now_us = (apr_int64_t)be64_of(PQgetvalue(r, 0, 4));
    PQclear(r);

    r = PQexecParams(a->conn, "SELECT size, root, checkpoint, (extract(epoch FROM created_at) * 1000000)::bigint "
                              "FROM notary.log_checkpoints ORDER BY size",
                     0, NULL, NULL, NULL, NULL, 1);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return pq_fail(a, r, "reading notary.log_checkpoints");
    for (i = 0; i < PQntuples(r); i++) {
        audit_cp *cp = apr_array_push(a->cps);
        cp->size = be64_of(PQgetvalue(r, i, 0));
        memcpy(cp->root, PQgetvalue(r, i, 1), 32);
        cp->note_len = (apr_size_t)PQgetlength(r, i, 2);
        cp->note = apr_pstrmemdup(a->c->p, PQgetvalue(r, i, 2), cp->note_len);
        cp->created_at_us = (apr_int64_t)be64_of(PQgetvalue(r, i, 3));
    }
    PQclear(r);

    /* the level-0 tiles in order: what the log holds */
    r = PQexecParams(a->conn, "SELECT idx, width, hashes FROM notary.log_tiles WHERE level = 0 ORDER BY idx",
                     0, NULL, NULL, NULL, NULL, 1);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return pq_fail(a, r, "reading notary.log_tiles");
    a->tile_leaves = apr_palloc(a->c->p, (apr_size_t)PQntuples(r) * NOTARY_TILE_WIDTH * 32 + 32);
    a->tile_leaf_count = 0;
    for (i = 0; i < PQntuples(r); i++) {
        apr_uint64_t idx = be64_of(PQgetvalue(r, i, 0));
        int w = PQgetlength(r, i, 2) / 32;
        if (idx != (apr_uint64_t)i || (i + 1 < PQntuples(r) && w != NOTARY_TILE_WIDTH)) {
            break; /* a missing or short tile ends what the log can show */
        }
        memcpy(a->tile_leaves + a->tile_leaf_count * 32, PQgetvalue(r, i, 2), (apr_size_t)w * 32);
        a->tile_leaf_count += (apr_uint64_t)w;
    }
    PQclear(r);

    a->upper = PQexecParams(a->conn, "SELECT level, idx, width, hashes FROM notary.log_tiles WHERE level > 0 "
                                     "ORDER BY level, idx",
                            0, NULL, NULL, NULL, NULL, 1);
    if (!a->upper || PQresultStatus(a->upper) != PGRES_TUPLES_OK) {
        PGresult *u = a->upper;
        a->upper = NULL;
        return pq_fail(a, u, "reading notary.log_tiles");
    }

    r = PQexec(a->conn, "DECLARE audit NO SCROLL CURSOR FOR SELECT * FROM notary.audit_rows "
                        "ORDER BY leaf_index NULLS LAST, id");
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return pq_fail(a, r, "reading notary.audit_rows");
    PQclear(r);
    for (;;) {
        int n;
        r = PQexecParams(a->conn, "FETCH 500 FROM audit", 0, NULL, NULL, NULL, NULL, 1);
        if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return pq_fail(a, r, "reading notary.audit_rows");
        n = PQntuples(r);
        for (i = 0; i < n; i++) {
            audit_one_row(a, r, i);
        }
        PQclear(r);
        if (n == 0) break;
    }
    r = PQexec(a->conn, "COMMIT");
    PQclear(r);
    return EXIT_VALID;
}

/* The checkpoint before a leaf went in: the last one whose tree lacks it. */
static const audit_cp *cp_before(audit_ctx *a, apr_int64_t index)
{
    const audit_cp *best = NULL;
    int i;

    for (i = 0; i < a->cps->nelts; i++) {
        const audit_cp *cp = &APR_ARRAY_IDX(a->cps, i, audit_cp);
        if ((apr_int64_t)cp->size <= index) best = cp;
    }
    return best;
}

static void audit_rows_against_log(audit_ctx *a)
{
    apr_pool_t *p = a->c->p;
    apr_uint64_t want = 0;
    const audit_row *prev = NULL;
    int i;

    for (i = 0; i < a->rows->nelts; i++) {
        const audit_row *r = &APR_ARRAY_IDX(a->rows, i, audit_row);

        if (r->index < 0) {
            /* not in the log */
            if (!r->has_leaf) {
                if (r->id > a->pre_log_max_id) {
                    finding(a, "unlogged", r, "%s has no leaf: it was not written by the notary's record path, "
                                              "and the log will never hold it",
                            row_name(p, r));
                }
            }
            else if (r->stored_at_us < a->now_us - a->max_lag_us) {
                finding(a, "unlogged", r, "%s was stored at %s and is still not in the log %" APR_INT64_T_FMT " s later (allowed lag %" APR_INT64_T_FMT " s)", row_name(p, r), iso_time(p, r->stored_at_us),
                        (a->now_us - r->stored_at_us) / 1000000, a->max_lag_us / 1000000);
            }
            if (r->recorded_at_us < r->stored_at_us - a->max_lag_us) {
                finding(a, "backdated", r, "%s: recorded_at %s is %" APR_INT64_T_FMT " s before the database "
                                           "stored it",
                        row_name(p, r), iso_time(p, r->recorded_at_us),
                        (r->stored_at_us - r->recorded_at_us) / 1000000);
            }
            continue;
        }
        /* the indexes are 0, 1, 2, ... with one row each */
        while (want < (apr_uint64_t)r->index) {
            const unsigned char *lh = want < a->tile_leaf_count ? a->tile_leaves + want * 32 : NULL;
            finding(a, "dropped", NULL, "index %" APR_UINT64_T_FMT ": the log holds leaf %s but no row has this "
                                        "index: the record was deleted or moved",
                    want, lh ? notary_hex(p, lh, 32) : "(none)");
            want++;
        }
        want = (apr_uint64_t)r->index + 1;
        if ((apr_uint64_t)r->index >= a->log_size) {
            finding(a, "truncated", r, "%s has index %" APR_INT64_T_FMT " but the log has only %" APR_UINT64_T_FMT " leaves: the log was cut short", row_name(p, r), r->index, a->log_size);
        }
        else if ((apr_uint64_t)r->index >= a->tile_leaf_count) {
            finding(a, "truncated", r, "%s has index %" APR_INT64_T_FMT " but the stored tiles end at %" APR_UINT64_T_FMT, row_name(p, r), r->index, a->tile_leaf_count);
        }
        else if (r->has_entry && memcmp(r->leaf, a->tile_leaves + r->index * 32, 32) != 0) {
            const unsigned char *lh = a->tile_leaves + r->index * 32;
            const audit_row *other = apr_hash_get(a->by_leaf, lh, 32);
            apr_uint64_t j;

            /* where does the log hold this row's leaf? */
            for (j = 0; j < a->tile_leaf_count && memcmp(a->tile_leaves + j * 32, r->leaf, 32) != 0; j++)
                ;
            if (j < a->tile_leaf_count) {
                finding(a, "reordered", r, "%s sits at index %" APR_INT64_T_FMT " but the log holds it at index %" APR_UINT64_T_FMT "%s%s", row_name(p, r), r->index, j,
                        other ? "; the log's leaf here is " : "", other ? row_name(p, other) : "");
            }
            else if (r->has_leaf && memcmp(r->stored_leaf, lh, 32) == 0) {
                finding(a, "altered", r, "%s at index %" APR_INT64_T_FMT " does not hash to the log's leaf, which "
                                         "is its stored leaf_hash: changed after it went into the log (or written with a leaf "
                                         "not its own)",
                        row_name(p, r), r->index);
            }
            else {
                finding(a, "altered", r, "%s at index %" APR_INT64_T_FMT " is not the record the log holds there "
                                         "(neither its fields nor its stored leaf_hash hash to the log's leaf)",
                        row_name(p, r), r->index);
            }
        }
        else if (!r->has_entry) {
            finding(a, "altered", r, "%s at index %" APR_INT64_T_FMT " cannot make an entry", row_name(p, r), r->index);
        }
        /* integration order is (txid, id): anything else was moved */
        if (prev && (r->txid < prev->txid || (r->txid == prev->txid && r->id < prev->id))) {
            finding(a, "reordered", r, "%s at index %" APR_INT64_T_FMT " was written before %s at index %" APR_INT64_T_FMT " (transaction %" APR_UINT64_T_FMT " < %" APR_UINT64_T_FMT "): the integrator never puts them in that order", row_name(p, r), r->index,
                    row_name(p, prev), prev->index, r->txid, prev->txid);
        }
        prev = r;
        /* backdated: older than the tree it was added to, or than its storing */
        {
            const audit_cp *cp = cp_before(a, r->index);
            if (cp && r->recorded_at_us < cp->created_at_us - a->max_lag_us) {
                finding(a, "backdated", r, "%s: recorded_at %s is %" APR_INT64_T_FMT " s before checkpoint %" APR_UINT64_T_FMT " (signed %s), the last one without it", row_name(p, r),
                        iso_time(p, r->recorded_at_us), (cp->created_at_us - r->recorded_at_us) / 1000000,
                        cp->size, iso_time(p, cp->created_at_us));
            }
            else if (r->recorded_at_us < r->stored_at_us - a->max_lag_us) {
                finding(a, "backdated", r, "%s: recorded_at %s is %" APR_INT64_T_FMT " s before the database "
                                           "stored it",
                        row_name(p, r), iso_time(p, r->recorded_at_us),
                        (r->stored_at_us - r->recorded_at_us) / 1000000);
            }
        }
    }
    while (want < a->log_size) {
        const unsigned char *lh = want < a->tile_leaf_count ? a->tile_leaves + want * 32 : NULL;
        finding(a, "dropped", NULL, "index %" APR_UINT64_T_FMT ": the log holds leaf %s but no row has this index: "
                                    "the record was deleted",
                want, lh ? notary_hex(p, lh, 32) : "(none)");
        want++;
    }
}

/* Root of the first `size` leaves the log holds; -1 if the tiles do not reach. */
static int log_root_at(audit_ctx *a, apr_uint64_t size, unsigned char out[32])
{
    if (size > a->tile_leaf_count) return -1;
    notary_merkle_root_of_leaves(a->tile_leaves, size, out);
    return 0;
}

/* A checkpoint someone holds, or the log keeps, against the log. */
static void audit_checkpoint(audit_ctx *a, const char *what, const notary_checkpoint *cp)
{
    apr_pool_t *p = a->c->p;
    unsigned char root[32];

    if (cp->size > a->log_size) {
        finding(a, "truncated", NULL, "%s signs a tree of %" APR_UINT64_T_FMT " leaves; the log now has %" APR_UINT64_T_FMT ": it was cut short", what, cp->size, a->log_size);
    }
    else if (log_root_at(a, cp->size, root) != 0) {
        finding(a, "truncated", NULL, "%s signs a tree of %" APR_UINT64_T_FMT " leaves; the stored tiles hold only %" APR_UINT64_T_FMT, what, cp->size, a->tile_leaf_count);
    }
    else if (memcmp(root, cp->root, 32) != 0) {
        finding(a, "fork", NULL, "%s signs root %s for %" APR_UINT64_T_FMT " leaves; the log's first %" APR_UINT64_T_FMT " leaves hash to %s: the log was rewritten or forked since",
                what, notary_b64_encode(p, cp->root, 32), cp->size, cp->size, notary_b64_encode(p, root, 32));
    }
}

static const char *entry_diff(apr_pool_t *p, const unsigned char *a, const unsigned char *b)
{
    static const struct {
        int off, len;
        const char *name;
    } parts[] = {
        { 15, 1, "direction" }, { 16, 8, "recorded_at" }, { 24, 2, "status" }, { 26, 16, "salt" }, { 42, 32, "sender key" }, { 74, 32, "receiver key" }, { 106, 32, "metadata (merchant, rule, method, uri, content type, exchange id)" }, { 138, 32, "headers" }, { 170, 32, "body" }, { 202, 32, "admission token" }, { 0, 0, NULL }
    };
    const char *s = NULL;
    int i;

    for (i = 0; parts[i].name; i++) {
        if (memcmp(a + parts[i].off, b + parts[i].off, (apr_size_t)parts[i].len) != 0) {
            s = s ? apr_pstrcat(p, s, ", ", parts[i].name, NULL) : parts[i].name;
        }
    }
    return s ? s : "nothing";
}

static int audit_given(audit_ctx *a)
{
    verify_ctx *c = a->c;
    apr_pool_t *p = c->p;
    int i, k;

    for (i = 0; i < c->nfiles; i++) {
        apr_size_t len;
        const char *path = c->files[i].path, *why = NULL;
        char *buf = read_file(p, path, NOTARY_NOTE_MAX_LEN, &len);
        json_t *j = json_pack("{s:s,s:s}", "file", path, "type", c->files[i].receipt ? "receipt" : "checkpoint");

        json_array_append_new(json_object_get(c->out, "given"), j);
        if (!buf) return EXIT_USAGE;
        if (c->files[i].receipt) {
            notary_receipt rc;
            const audit_row *row = NULL;

            if (notary_receipt_verify(p, buf, len, c->keys, c->nkeys, &rc, &why) != 0) {
                finding(a, "invalid-input", NULL, "receipt %s does not verify: %s", path, why);
                continue;
            }
            json_object_set_new(j, "index", json_integer((json_int_t)rc.tp.index));
            json_object_set_new(j, "tree_size", json_integer((json_int_t)rc.cp.size));
            if (witnessed(c, rc.tp.checkpoint, rc.tp.checkpoint_len, &why) != 0) {
                finding(a, "uncosigned", NULL, "receipt %s: %s", path, why);
            }
            audit_checkpoint(a, apr_psprintf(p, "receipt %s", path), &rc.cp);
            for (k = 0; k < a->rows->nelts; k++) {
                const audit_row *r = &APR_ARRAY_IDX(a->rows, k, audit_row);
                if (r->index == (apr_int64_t)rc.tp.index) {
                    row = r;
                    break;
                }
            }
            if (row && row->has_entry && memcmp(row->entry, rc.entry_bytes, NOTARY_LEAF_LEN) == 0) {
                continue;
            }
            /* the receipt's record: by its exchange and direction */
            {
                const audit_row *same = NULL;
                for (k = 0; k < a->rows->nelts; k++) {
                    const audit_row *r = &APR_ARRAY_IDX(a->rows, k, audit_row);
                    if (r->exchange_id && rc.meta.exchange_id && strcmp(r->exchange_id, rc.meta.exchange_id) == 0
                        && r->direction && strcmp(r->direction, notary_leaf_direction_name(rc.entry.direction)) == 0) {
                        same = r;
                        break;
                    }
                }
                if (!same) {
                    finding(a, "dropped", row, "receipt %s shows exchange %s %s at index %" APR_UINT64_T_FMT "; no row of the database is that record", path, rc.meta.exchange_id ? rc.meta.exchange_id : "?",
                            notary_leaf_direction_name(rc.entry.direction), rc.tp.index);
                }
                else if (same->index != (apr_int64_t)rc.tp.index) {
                    finding(a, "reordered", same, "receipt %s shows %s at index %" APR_UINT64_T_FMT ", the database has it at %" APR_INT64_T_FMT "%s%s", path, row_name(p, same), rc.tp.index,
                            same->index, same->has_entry && memcmp(same->entry, rc.entry_bytes, NOTARY_LEAF_LEN) ? "; changed: " : "", same->has_entry && memcmp(same->entry, rc.entry_bytes, NOTARY_LEAF_LEN) ? entry_diff(p, same->entry, rc.entry_bytes) : "");
                }
                else {
                    finding(a, "altered", same, "%s differs from receipt %s in: %s", row_name(p, same), path,
                            same->has_entry ? entry_diff(p, same->entry, rc.entry_bytes) : "everything (no entry)");
                }
            }
        }
        else {
            notary_checkpoint cp;
            notary_note *n;

            if (notary_checkpoint_open(p, buf, len, c->keys, c->nkeys, &cp, &n, &why) != 0) {
                finding(a, "invalid-input", NULL, "checkpoint %s does not verify: %s", path, why);
                continue;
            }
            json_object_set_new(j, "tree_size", json_integer((json_int_t)cp.size));
            if (witnessed(c, buf, len, &why) != 0) {
                finding(a, "uncosigned", NULL, "checkpoint %s: %s", path, why);
            }
            audit_checkpoint(a, apr_psprintf(p, "checkpoint %s", path), &cp);
        }
    }
    return EXIT_VALID;
}

/* --tsa-ca: the RFC 3161 tokens of the stored checkpoints, checked over
 * their checkpoints, then every row's time against the TSA's: a row in a
 * stamped tree cannot be recorded after the stamp's genTime (postdated), and
 * a row the stamped tree does not hold yet cannot be recorded long before
 * it (backdated, beyond --max-lag). Unlike the checkpoints' created_at,
 * these times are not the database's to change. */
typedef struct {
    apr_uint64_t size;
    apr_int64_t gen_us;
} audit_stamp;

static int audit_stamps(audit_ctx *a, PGconn *conn)
{
    apr_pool_t *p = a->c->p;
    apr_array_header_t *st = apr_array_make(p, 16, sizeof(audit_stamp));
    const char *why = NULL;
    PGresult *r;
    int i, n, ok = 0, bad = 0;

    r = PQexecParams(conn, "SELECT to_regclass('notary.log_timestamps') IS NOT NULL", 0, NULL, NULL, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return pq_fail(a, r, "looking for notary.log_timestamps");
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        PQclear(r);
        finding(a, "timestamp", NULL, "--tsa-ca: the database has no notary.log_timestamps (schema version 4)");
        return EXIT_VALID;
    }
    PQclear(r);
    r = PQexecParams(conn, "SELECT size, token FROM notary.log_timestamps ORDER BY size", 0, NULL, NULL, NULL, NULL, 1);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) return pq_fail(a, r, "reading notary.log_timestamps");
    for (n = 0; n < PQntuples(r); n++) {
        apr_uint64_t size = be64_of(PQgetvalue(r, n, 0));
        const audit_cp *cp = NULL;
        unsigned char digest[32];
        apr_time_t gen;

        for (i = 0; i < a->cps->nelts; i++) {
            if (APR_ARRAY_IDX(a->cps, i, audit_cp).size == size) cp = &APR_ARRAY_IDX(a->cps, i, audit_cp);
        }
        if (!cp) {
            finding(a, "timestamp", NULL, "the time-stamp of size %" APR_UINT64_T_FMT " has no stored checkpoint", size);
            bad++;
            continue;
        }
        notary_sha256(cp->note, cp->note_len, digest);
        if (notary_tsa_token_verify(p, (const unsigned char *)PQgetvalue(r, n, 1), (apr_size_t)PQgetlength(r, n, 1),
                                    digest, a->c->tsa_ca, &gen, &why)
            != 0) {
            finding(a, "timestamp", NULL, "the time-stamp of the checkpoint of size %" APR_UINT64_T_FMT ": %s", size, why);
            bad++;
            continue;
        }
        ((audit_stamp *)apr_array_push(st))->size = size;
        APR_ARRAY_IDX(st, st->nelts - 1, audit_stamp).gen_us = (apr_int64_t)gen;
        ok++;
    }
    PQclear(r);
    for (i = 0; i < a->rows->nelts; i++) {
        const audit_row *row = &APR_ARRAY_IDX(a->rows, i, audit_row);
        const audit_stamp *holds = NULL, *before = NULL;
        int lo = 0, hi = st->nelts;

        if (row->index < 0) continue;
        /* the first stamped tree that holds the row: size > index */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if ((apr_int64_t)APR_ARRAY_IDX(st, mid, audit_stamp).size > row->index)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (lo < st->nelts) holds = &APR_ARRAY_IDX(st, lo, audit_stamp);
        if (lo > 0) before = &APR_ARRAY_IDX(st, lo - 1, audit_stamp);
        /* genTime is to the second at best (the TSA's accuracy): a second's grace */
        if (holds && row->recorded_at_us > holds->gen_us + APR_INT64_C(1000000)) {
            finding(a, "postdated", row, "%s: recorded_at %s is after %s, when a TSA stamped the tree of %" APR_UINT64_T_FMT " that already holds it", row_name(p, row),
                    iso_time(p, row->recorded_at_us), iso_time(p, holds->gen_us), holds->size);
        }
        if (before && row->recorded_at_us < before->gen_us - a->max_lag_us) {
            finding(a, "backdated", row, "%s: recorded_at %s is %" APR_INT64_T_FMT " s before %s, when a TSA stamped the tree of %" APR_UINT64_T_FMT " that did not hold it yet", row_name(p, row),
                    iso_time(p, row->recorded_at_us), (before->gen_us - row->recorded_at_us) / 1000000,
                    iso_time(p, before->gen_us), before->size);
        }
    }
    json_object_set_new(a->c->out, "timestamps", json_pack("{s:i,s:i}", "verified", ok, "failed", bad));
    return EXIT_VALID;
}

static int cmd_audit(verify_ctx *c)
{
    audit_ctx a;
    unsigned char root[32];
    const char *why = NULL;
    int rv, i;

    if (c->nargs != 0 || !c->db || c->body || c->headers || c->proof || c->tiles) {
        usage_error("usage: audit --db CONNINFO [--checkpoint FILE]... [--receipt FILE]... [--max-lag SECONDS] [--tsa-ca FILE]",
                    NULL);
        return EXIT_USAGE;
    }
    memset(&a, 0, sizeof(a));
    a.c = c;
    a.findings = json_array();
    json_object_set_new(c->out, "findings", a.findings);
    json_object_set_new(c->out, "given", json_array());
    a.rows = apr_array_make(c->p, 1024, sizeof(audit_row));
    a.cps = apr_array_make(c->p, 64, sizeof(audit_cp));
    a.by_leaf = apr_hash_make(c->p);
    a.max_lag_us = c->max_lag * APR_INT64_C(1000000);
    a.conn = PQconnectdb(c->db);
    if (PQstatus(a.conn) != CONNECTION_OK) {
        fprintf(stderr, "notary-verify: cannot connect: %s", PQerrorMessage(a.conn));
        PQfinish(a.conn);
        return EXIT_USAGE;
    }
    rv = audit_read(&a);
    if (rv == EXIT_VALID && c->tsa_ca) {
        if (notary_tsa_check_cafile(c->p, c->tsa_ca, &why) != 0) {
            usage_error("--tsa-ca: %s", why);
            rv = EXIT_USAGE;
        }
        else {
            rv = audit_stamps(&a, a.conn);
        }
    }
    PQfinish(a.conn);
    if (rv != EXIT_VALID) {
        PQclear(a.upper);
        return rv;
    }
    audit_rows_against_log(&a);
    /* the log: tiles, state and every stored checkpoint agree, signed by the key */
    if (a.tile_leaf_count < a.log_size) {
        finding(&a, "truncated", NULL, "the log's state has %" APR_UINT64_T_FMT " leaves, its tiles only %" APR_UINT64_T_FMT, a.log_size, a.tile_leaf_count);
    }
    else if (log_root_at(&a, a.log_size, root) == 0 && memcmp(root, a.log_root, 32) != 0) {
        finding(&a, "fork", NULL, "the log's state root is not the root of its tiles");
    }
    /* the tiles above level 0 (what receipts' proofs are made from) hash from it */
    {
        notary_merkle_source src;
        unsigned char *buf = apr_palloc(c->p, NOTARY_TILE_WIDTH * 32);

        notary_merkle_source_leaves(&src, a.tile_leaves, a.tile_leaf_count);
        for (i = 0; a.upper && i < PQntuples(a.upper); i++) {
            unsigned level = (unsigned)(((unsigned char)PQgetvalue(a.upper, i, 0)[0] << 8)
                                        | (unsigned char)PQgetvalue(a.upper, i, 0)[1]);
            apr_uint64_t idx = be64_of(PQgetvalue(a.upper, i, 1));
            unsigned width = (unsigned)PQgetlength(a.upper, i, 3) / 32;

            if (width > notary_tile_width(level, idx, a.tile_leaf_count)
                || notary_merkle_tile(&src, level, idx, width, buf) != 0) {
                finding(&a, "fork", NULL, "tile %u/%" APR_UINT64_T_FMT " holds %u hashes, more than the leaves "
                                          "of the log make",
                        level, idx, width);
            }
            else if (memcmp(buf, PQgetvalue(a.upper, i, 3), (apr_size_t)width * 32) != 0) {
                finding(&a, "fork", NULL, "tile %u/%" APR_UINT64_T_FMT " does not hash from the log's leaves: "
                                          "proofs made from it would not verify",
                        level, idx);
            }
        }
        PQclear(a.upper);
    }
    for (i = 0; i < a.cps->nelts; i++) {
        audit_cp *cp = &APR_ARRAY_IDX(a.cps, i, audit_cp);
        notary_checkpoint ck;
        notary_note *n;

        if (notary_checkpoint_open(c->p, cp->note, cp->note_len, c->keys, c->nkeys, &ck, &n, &why) != 0) {
            finding(&a, "fork", NULL, "stored checkpoint of size %" APR_UINT64_T_FMT " is not signed by the key: %s",
                    cp->size, why);
            continue;
        }
        if (ck.size != cp->size || memcmp(ck.root, cp->root, 32) != 0) {
            finding(&a, "fork", NULL, "stored checkpoint of size %" APR_UINT64_T_FMT " signs another size or root "
                                      "than its row says",
                    cp->size);
        }
        audit_checkpoint(&a, apr_psprintf(c->p, "stored checkpoint of size %" APR_UINT64_T_FMT " (signed %s)", ck.size, iso_time(c->p, cp->created_at_us)), &ck);
    }
    if (a.cps->nelts == 0 || APR_ARRAY_IDX(a.cps, a.cps->nelts - 1, audit_cp).size != a.log_size) {
        finding(&a, "truncated", NULL, "no stored checkpoint signs the log's current size %" APR_UINT64_T_FMT,
                a.log_size);
    }
    if ((rv = audit_given(&a)) != EXIT_VALID) {
        return rv;
    }
    {
        int unintegrated = 0, pre_log = 0;
        for (i = 0; i < a.rows->nelts; i++) {
            const audit_row *r = &APR_ARRAY_IDX(a.rows, i, audit_row);
            if (r->index < 0 && r->has_leaf) unintegrated++;
            if (r->index < 0 && !r->has_leaf && r->id <= a.pre_log_max_id) pre_log++;
        }
        json_object_set_new(c->out, "rows", json_integer(a.rows->nelts));
        json_object_set_new(c->out, "pending", json_integer(unintegrated));
        json_object_set_new(c->out, "before_log", json_integer(pre_log));
        json_object_set_new(c->out, "tree", json_pack("{s:I,s:s}", "tree_size", (json_int_t)a.log_size, "root", notary_b64_encode(c->p, a.log_root, 32)));
        json_object_set_new(c->out, "max_lag", json_integer((json_int_t)c->max_lag));
    }
    return c->valid ? EXIT_VALID : EXIT_INVALID;
}

static const struct {
    const char *name;
    command_fn run;
} commands[] = {
    { "promise", cmd_promise },
    { "receipt", cmd_receipt },
    { "consistency", cmd_consistency },
    { "audit", cmd_audit },
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
               "receipt after that)\n",
               json_integer_value(json_object_get(c->out, "mmd")));
    }
    json_object_foreach(entry, k, v)
    {
        if (json_is_string(v))
            printf("  %-21s %s\n", k, json_string_value(v));
        else if (json_is_integer(v))
            printf("  %-21s %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(v));
        else if (json_is_null(v))
            printf("  %-21s -\n", k);
    }
    json_object_foreach(meta, k, v)
    {
        if (json_is_string(v))
            printf("  %-21s %s\n", k, json_string_value(v));
        else if (json_is_null(v))
            printf("  %-21s (null)\n", k);
        else
            printf("  %-21s hex %s\n", k, json_string_value(json_object_get(v, "hex")));
    }
    json_object_foreach(files, k, v)
    {
        printf("  %-21s %s %s\n", k, json_string_value(json_object_get(v, "sha256")),
               json_is_true(json_object_get(v, "matches")) ? "matches the entry" : "DOES NOT match the entry");
    }
    if (json_object_get(c->out, "timestamp") && !json_is_null(json_object_get(c->out, "timestamp"))) {
        json_t *ts = json_object_get(c->out, "timestamp");
        if (json_is_true(json_object_get(ts, "verified")))
            printf("  timestamp             RFC 3161, the checkpoint existed by %s (TSA of --tsa-ca)\n",
                   json_string_value(json_object_get(ts, "time")));
        else if (c->tsa_ca)
            printf("  timestamp             RFC 3161 token present, DOES NOT verify\n");
        else
            printf("  timestamp             RFC 3161 token present, not checked (give --tsa-ca)\n");
    }
    if (json_object_get(c->out, "tree")) {
        json_t *t = json_object_get(c->out, "tree");
        printf("  log                   tree size %" JSON_INTEGER_FORMAT ", root %s\n",
               json_integer_value(json_object_get(t, "tree_size")), json_string_value(json_object_get(t, "root")));
        printf("  rows                  %" JSON_INTEGER_FORMAT " (%" JSON_INTEGER_FORMAT " waiting for the integrator, %" JSON_INTEGER_FORMAT " from before the log)\n", json_integer_value(json_object_get(c->out, "rows")),
               json_integer_value(json_object_get(c->out, "pending")),
               json_integer_value(json_object_get(c->out, "before_log")));
    }
    if (json_object_get(c->out, "timestamps")) {
        json_t *ts = json_object_get(c->out, "timestamps");
        printf("  timestamps            %" JSON_INTEGER_FORMAT " checkpoint time-stamps verified with --tsa-ca, %" JSON_INTEGER_FORMAT " failed\n",
               json_integer_value(json_object_get(ts, "verified")), json_integer_value(json_object_get(ts, "failed")));
    }
    {
        json_t *fs = json_object_get(c->out, "findings"), *f;
        size_t fi;

        json_array_foreach(fs, fi, f)
        {
            printf("  %-21s %s\n", json_string_value(json_object_get(f, "kind")),
                   json_string_value(json_object_get(f, "reason")));
        }
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
    c.max_lag = 60;
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
    opt->interleave = 1; /* options may follow the command and its files */
    while ((rv = apr_getopt_long(opt, options, &optch, &arg)) == APR_SUCCESS) {
        switch (optch) {
        case O_KEY:
            if (add_key(&c, arg) != 0) goto done;
            break;
        case O_KEY_FILE:
            if (add_key_file(&c, arg) != 0) goto done;
            break;
        case O_BODY: c.body = arg; break;
        case O_HEADERS: c.headers = arg; break;
        case O_PROOF: c.proof = arg; break;
        case O_TILES: c.tiles = arg; break;
        case O_JSON: c.json = 1; break;
        case O_DB: c.db = arg; break;
        case O_TSA_CA: c.tsa_ca = arg; break;
        case O_WITNESS:
            if (add_witness(&c, arg) != 0) goto done;
            break;
        case O_CHECKPOINT:
        case O_RECEIPT:
            if (c.nfiles == MAX_FILES) {
                usage_error("more than 64 --checkpoint and --receipt files", NULL);
                goto done;
            }
            c.files[c.nfiles].path = arg;
            c.files[c.nfiles++].receipt = optch == O_RECEIPT;
            break;
        case O_MAX_LAG: {
            char *end;
            c.max_lag = apr_strtoi64(arg, &end, 10);
            if (*end || end == arg || c.max_lag < 0 || c.max_lag > APR_INT64_C(315360000)) {
                usage_error("--max-lag takes seconds (0..315360000): %s", arg);
                goto done;
            }
            break;
        }
        case O_VERSION:
            printf("notary-verify %s\n", PACKAGE_VERSION);
            code = EXIT_VALID;
            goto done;
        case O_HELP:
            fputs(usage_text, stdout);
            code = EXIT_VALID;
            goto done;
        }
    }
    if (rv != APR_EOF) {
        usage_error("bad option (see --help)", NULL);
        goto done;
    }
    if (opt->ind >= argc) {
        usage_error("no command: promise, receipt, consistency or audit", NULL);
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
        usage_error("unknown command %s: promise, receipt, consistency or audit", cmd);
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
