/* libFuzzer target: the media-range and charset parsers (notary_match.c):
 * notary_media_range_parse (a NotaryRecord ... type RANGE argument, from
 * httpd.conf), notary_media_range_match and notary_media_charset (a
 * Content-Type header, from the merchant or the consumer), and the charset
 * name as notary_match_stream_start takes it (a header value reaching
 * iconv_open).
 *
 * Input: the media range, a newline, the Content-Type value (the rest).
 * Aborts when: a parse both fails and succeeds, or neither; a range
 * type/subtype does not match its own text as a Content-Type, in any case
 * and with parameters after it; a charset comes back empty. */
#include <string.h>

#include <apr_strings.h>

#include "notary_match.h"
#include "fuzz.h"

static notary_matcher *matcher;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    /* one compiled set for the whole run: its charset cache fills up and
     * later charsets take the uncached path, as in a long-lived child */
    if (notary_matcher_create(&matcher, fuzz_root) != APR_SUCCESS
        || notary_matcher_add(matcher, "\xe5\xa5\x91\xe7\xb4\x84", 6, 0) != APR_SUCCESS
        || notary_matcher_add(matcher, "terms", 5, 1) != APR_SUCCESS
        || notary_matcher_compile(matcher) != APR_SUCCESS) {
        fprintf(stderr, "fuzz_media: cannot compile the matcher\n");
        exit(2);
    }
    return 0;
}

static char *upper(apr_pool_t *p, const char *s)
{
    char *u = apr_pstrdup(p, s), *c;

    for (c = u; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    return u;
}

static void range(apr_pool_t *p, const char *text, const char *ct)
{
    notary_media_range *r = NULL;
    const char *err = NULL;
    int ok = notary_media_range_parse(p, text, &r, &err);

    FUZZ_CHECK(ok ? (r && !err) : (!r && err && *err), "parse('%s') = %d, range %p, err %s",
               text, ok, (void *)r, err ? err : "(null)");
    (void)notary_media_range_match(r, ct);
    (void)notary_media_range_match(r, text);
    FUZZ_CHECK(!notary_media_range_match(r, NULL) && !notary_media_range_match(r, ""),
               "an absent or empty Content-Type matched '%s'", text);
    if (!ok || strchr(text, '*'))
        return;
    /* a plain type/subtype range is a Content-Type that it matches */
    FUZZ_CHECK(notary_media_range_match(r, text), "'%s' does not match itself", text);
    FUZZ_CHECK(notary_media_range_match(r, upper(p, text)), "'%s' does not match its upper case",
               text);
    FUZZ_CHECK(notary_media_range_match(r, apr_pstrcat(p, text, "; charset=utf-8", NULL)),
               "'%s' does not match itself with a parameter", text);
}

static void charset(apr_pool_t *p, const char *ct)
{
    const char *cs = notary_media_charset(p, ct);
    notary_match_stream *s = NULL;
    unsigned flags = 0;

    FUZZ_CHECK(!cs || *cs, "charset of '%s' is empty rather than absent", ct);
    FUZZ_CHECK(notary_match_stream_start(&s, p, matcher, cs, NULL, 0, &flags) == APR_SUCCESS,
               "stream_start failed for charset '%s'", cs ? cs : "(none)");
    notary_match_stream_feed(s, ct, strlen(ct));
    notary_match_stream_finish(s);
    /* and the raw value as a charset name, quotes, slashes and all */
    FUZZ_CHECK(notary_match_stream_start(&s, p, matcher, ct, ct, 0, &flags) == APR_SUCCESS,
               "stream_start failed for charset '%s'", ct);
    notary_match_stream_feed(s, ct, strlen(ct));
    notary_match_stream_finish(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool();
    const char *d = (const char *)data, *nl = memchr(d, '\n', size);
    const char *text, *ct;

    text = apr_pstrmemdup(p, d, nl ? (apr_size_t)(nl - d) : size);
    ct = nl ? apr_pstrmemdup(p, nl + 1, size - (apr_size_t)(nl + 1 - d)) : text;
    range(p, text, ct);
    charset(p, ct);
    apr_pool_destroy(p);
    return 0;
}
