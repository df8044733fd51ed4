/* libFuzzer target: the streaming matcher (notary_match.c) fed a body cut
 * at arbitrary points must reach the verdict it reaches on the whole body
 * at once; a difference aborts.
 *
 * Input: header lines, an empty line, then the body (any bytes):
 *
 *   r<text>     a rule text (UTF-8, as in httpd.conf); ids 0, 1, ... in order
 *   s<text>     another text for the previous rule's id
 *   t<value>    Content-Type, e.g. "text/html; charset=Shift_JIS"
 *   e<value>    Content-Encoding, e.g. "gzip"
 *   c<n>        a cut point in the body (decimal, taken mod its length + 1)
 *   m<n>        max_decoded (decimal; default 0, no limit)
 *
 * Unknown lines are ignored. The body is matched three ways: whole, cut at
 * the c points, and one byte at a time; the matched ids must be the same,
 * and so must the flags unless every id matched early (then the stream
 * stops looking and later flags legitimately depend on where it stopped). */
#include <string.h>

#include <apr_strings.h>

#include "notary_match.h"
#include "fuzz.h"

#define MAX_RULES 8
#define MAX_CUTS 16
#define MAX_RULE_LEN 256
#define BYTEWISE_MAX 8192

typedef struct {
    const char *content_type, *content_encoding;
    apr_size_t max_decoded;
    apr_size_t cuts[MAX_CUTS];
    int ncuts;
    int nids;
    const char *body;
    apr_size_t body_len;
} fuzz_case;

typedef struct {
    int has[MAX_RULES];
    int first;
    unsigned start_flags; /* known before any body byte */
    unsigned flags;
    int done_early; /* done() before finish */
    apr_size_t decoded;
} verdict;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    return 0;
}

/* The only call that knows how a stream is started. The matcher with the
 * form, multipart and JSON decoders (issue 13; it defines
 * NOTARY_MATCH_F_JSON_INVALID) takes the whole Content-Type, the one before
 * it the charset; once that matcher is merged, only the first line stays. */
static apr_status_t stream_start(notary_match_stream **s, apr_pool_t *p, notary_matcher *m,
                                 const char *ct, const char *ce, apr_size_t max_decoded,
                                 unsigned *flags)
{
#ifdef NOTARY_MATCH_F_JSON_INVALID
    return notary_match_stream_start(s, p, m, ct, ce, max_decoded, flags);
#else
    return notary_match_stream_start(s, p, m, notary_media_charset(p, ct), ce, max_decoded,
                                     flags);
#endif
}

static apr_size_t parse_num(const char *s, apr_size_t n)
{
    apr_size_t v = 0, i;

    for (i = 0; i < n && i < 12 && s[i] >= '0' && s[i] <= '9'; i++)
        v = v * 10 + (apr_size_t)(s[i] - '0');
    return v;
}

/* Returns 0 if the input describes no usable case (no rule). */
static int parse_case(apr_pool_t *p, notary_matcher *m, const char *d, apr_size_t n,
                      fuzz_case *fc)
{
    const char *end = d + n, *line = d;
    int rules = 0;

    memset(fc, 0, sizeof(*fc));
    fc->body = end;
    while (line < end) {
        const char *nl = memchr(line, '\n', (apr_size_t)(end - line));
        apr_size_t len = nl ? (apr_size_t)(nl - line) : (apr_size_t)(end - line);
        const char *v = line + 1;
        apr_size_t vl = len ? len - 1 : 0;

        if (len == 0) {
            fc->body = line + 1; /* the empty line: the body follows */
            break;
        }
        switch (line[0]) {
        case 'r':
        case 's':
            if (vl == 0 || vl > MAX_RULE_LEN || (line[0] == 'r' && fc->nids == MAX_RULES)
                || (line[0] == 's' && fc->nids == 0) || rules >= 4 * MAX_RULES)
                break;
            if (line[0] == 'r')
                fc->nids++;
            FUZZ_CHECK(notary_matcher_add(m, v, vl, fc->nids - 1) == APR_SUCCESS,
                       "matcher_add refused a %zu-byte rule", (size_t)vl);
            rules++;
            break;
        case 't': fc->content_type = apr_pstrmemdup(p, v, vl); break;
        case 'e': fc->content_encoding = apr_pstrmemdup(p, v, vl); break;
        case 'm': fc->max_decoded = parse_num(v, vl); break;
        case 'c':
            if (fc->ncuts < MAX_CUTS)
                fc->cuts[fc->ncuts++] = parse_num(v, vl);
            break;
        }
        line = nl ? nl + 1 : end;
    }
    if (fc->body > end)
        fc->body = end;
    fc->body_len = (apr_size_t)(end - fc->body);
    return rules > 0;
}

static int cmp_size(const void *a, const void *b)
{
    apr_size_t x = *(const apr_size_t *)a, y = *(const apr_size_t *)b;
    return x < y ? -1 : x > y;
}

/* Feed the body in pieces ending at cuts[0..ncuts) (sorted), then the rest. */
static void run(apr_pool_t *p, notary_matcher *m, const fuzz_case *fc,
                const apr_size_t *cuts, int ncuts, verdict *v)
{
    notary_match_stream *s = NULL;
    apr_size_t off = 0;
    int i;

    FUZZ_CHECK(stream_start(&s, p, m, fc->content_type, fc->content_encoding,
                            fc->max_decoded, &v->start_flags)
                   == APR_SUCCESS,
               "stream_start failed for Content-Type '%s', Content-Encoding '%s'",
               fc->content_type ? fc->content_type : "(none)",
               fc->content_encoding ? fc->content_encoding : "(none)");
    for (i = 0; i <= ncuts; i++) {
        apr_size_t to = i < ncuts ? cuts[i] : fc->body_len;
        FUZZ_CHECK(notary_match_stream_feed(s, fc->body + off, to - off) == APR_SUCCESS,
                   "feed returned an error");
        off = to;
    }
    v->done_early = notary_match_stream_done(s);
    notary_match_stream_finish(s);
    FUZZ_CHECK(notary_match_stream_done(s), "not done after finish");
    v->flags = notary_match_stream_flags(s);
    FUZZ_CHECK((v->flags & v->start_flags) == v->start_flags, "flags %#x at start, %#x at the end",
               v->start_flags, v->flags);
    v->first = notary_match_stream_first(s);
    for (i = 0; i < fc->nids; i++)
        v->has[i] = notary_match_stream_has(s, i);
    v->decoded = notary_match_stream_decoded(s);
    if (v->flags & (NOTARY_MATCH_F_DECODE_ERROR | NOTARY_MATCH_F_DECODE_LIMIT))
        FUZZ_CHECK(notary_match_stream_error(s) != NULL, "decoding stopped without a reason");
    if (fc->max_decoded)
        FUZZ_CHECK(v->decoded <= fc->max_decoded, "decoded %zu bytes past the limit %zu",
                   (size_t)v->decoded, (size_t)fc->max_decoded);
    /* a finished stream ignores more input */
    notary_match_stream_feed(s, fc->body, fc->body_len);
    FUZZ_CHECK(notary_match_stream_first(s) == v->first, "feed after finish changed the verdict");
}

/* Every id matched before the end: later flags depend on where it stopped. */
static int stopped_on_match(const verdict *v)
{
    return v->done_early
        && !(v->flags & (NOTARY_MATCH_F_DECODE_ERROR | NOTARY_MATCH_F_DECODE_LIMIT));
}

static void same(const fuzz_case *fc, const verdict *a, const verdict *b, const char *how)
{
    int i;

    for (i = 0; i < fc->nids; i++)
        FUZZ_CHECK(a->has[i] == b->has[i], "rule %d %s whole, %s %s", i,
                   a->has[i] ? "matched" : "did not match", b->has[i] ? "matched" : "did not match",
                   how);
    FUZZ_CHECK(a->first == b->first, "first rule %d whole, %d %s", a->first, b->first, how);
    FUZZ_CHECK(a->start_flags == b->start_flags, "flags at start %#x whole, %#x %s",
               a->start_flags, b->start_flags, how);
    if (stopped_on_match(a) || stopped_on_match(b))
        return;
    FUZZ_CHECK(a->flags == b->flags, "flags %#x whole, %#x %s", a->flags, b->flags, how);
    FUZZ_CHECK(a->decoded == b->decoded, "%zu bytes decoded whole, %zu %s", (size_t)a->decoded,
               (size_t)b->decoded, how);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    notary_matcher *m = NULL;
    fuzz_case fc;
    verdict whole, cut, bytewise;
    apr_size_t *each;
    apr_size_t i;
    int k;

    FUZZ_CHECK(notary_matcher_create(&m, p) == APR_SUCCESS, "matcher_create failed");
    if (!parse_case(p, m, (const char *)data, size, &fc))
        goto cleanup;
    FUZZ_CHECK(notary_matcher_compile(m) == APR_SUCCESS, "compile failed");

    run(p, m, &fc, NULL, 0, &whole);

    for (k = 0; k < fc.ncuts; k++)
        fc.cuts[k] %= fc.body_len + 1;
    qsort(fc.cuts, (size_t)fc.ncuts, sizeof(fc.cuts[0]), cmp_size);
    run(p, m, &fc, fc.cuts, fc.ncuts, &cut);
    same(&fc, &whole, &cut, "cut at the given points");

    if (fc.body_len > 1 && fc.body_len <= BYTEWISE_MAX) {
        each = apr_palloc(p, fc.body_len * sizeof(*each));
        for (i = 0; i + 1 < fc.body_len; i++)
            each[i] = i + 1;
        run(p, m, &fc, each, (int)(fc.body_len - 1), &bytewise);
        same(&fc, &whole, &bytewise, "fed one byte at a time");
    }

cleanup:
    apr_pool_destroy(p);
    return 0;
}
