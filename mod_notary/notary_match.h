/* notary_match: the httpd-independent matching core of mod_notary.
 *
 * - A multi-pattern streaming matcher (Aho-Corasick compiled to a DFA over
 *   byte classes: one table lookup per body byte for all rules at once).
 *   Matching is on exact bytes: case-sensitive, no Unicode normalisation.
 * - Content-Encoding gzip / deflate / br / zstd (notary_decode) decoded
 *   for matching only, bounded by a limit on decoded bytes.
 * - Charsets: rule texts are UTF-8; a body in another charset is matched in
 *   that charset (see notary_match_stream_start).
 * - Form, multipart and JSON bodies matched as the text a person saw.
 * - Media ranges for `NotaryRecord ... type RANGE`.
 *
 * Nothing here alters a body: the caller relays its bytes itself, we only
 * read them. All memory comes from APR pools.
 */
#ifndef NOTARY_MATCH_H
#define NOTARY_MATCH_H

#include <apr_pools.h>
#include <apr_errno.h>

/* A compiled pattern set. Built single-threaded (config time); after
 * notary_matcher_compile() it is shared read-only by all threads, except
 * for its internal per-charset cache, which takes its own lock. */
typedef struct notary_matcher notary_matcher;

/* Per-message matching state; lives in (and is cleaned up with) the pool
 * given to notary_match_stream_start(). One thread at a time. */
typedef struct notary_match_stream notary_match_stream;

/* Stream flags (notary_match_stream_flags, and the start's *flags). */
/* The charset is not known to iconv: the body is matched as UTF-8. */
#define NOTARY_MATCH_F_CHARSET_UNKNOWN 0x0001u
/* The Content-Encoding is not one we decode (br, zstd, compress, a list of
 * several codings): the stream matches the bytes as transmitted. The caller
 * decides whether such a result means anything. */
#define NOTARY_MATCH_F_ENCODING_UNSUPPORTED 0x0002u
/* Decoding stopped at max_decoded bytes; later bytes are not examined. */
#define NOTARY_MATCH_F_DECODE_LIMIT 0x0004u
/* The content coding is malformed or truncated; decoding stopped there.
 * notary_match_stream_error() says why. */
#define NOTARY_MATCH_F_DECODE_ERROR 0x0008u
/* Bytes invalid in the declared charset were skipped (body-decoding mode
 * only, see below). Informational. */
#define NOTARY_MATCH_F_CHARSET_INVALID 0x0010u
/* The body is decoded to UTF-8 for matching (stateful or non-ASCII-
 * compatible charset: ISO-2022-*, UTF-16/32, UTF-7, EBCDIC...). Info. */
#define NOTARY_MATCH_F_CHARSET_DECODED 0x0020u
/* The charset cache was full: this stream compiled its own automaton in
 * its pool (correct, only slower). Informational. */
#define NOTARY_MATCH_F_CHARSET_UNCACHED 0x0040u

/* A JSON body (application/json, *+json) is not valid JSON: its strings
 * were unescaped as far as they could be; it is matched as transmitted
 * too. The caller logs a warning. */
#define NOTARY_MATCH_F_JSON_INVALID 0x0080u
/* A multipart body without a usable boundary, with a part's headers
 * beyond 8 KiB, or never closed: its parts are read as far as they could
 * be; it is matched as transmitted too. */
#define NOTARY_MATCH_F_MULTIPART_INVALID 0x0100u
/* The charset came from a byte order mark or an HTML <meta>. Info. */
#define NOTARY_MATCH_F_CHARSET_SNIFFED 0x0200u

/* Most charsets kept compiled per matcher; beyond that, per stream. */
#define NOTARY_MATCH_CHARSET_CACHE_MAX 32

/* ---- pattern set ---------------------------------------------------- */

apr_status_t notary_matcher_create(notary_matcher **m, apr_pool_t *p);

/* Add a pattern of len > 0 bytes (UTF-8 text as written in httpd.conf)
 * reported as id >= 0. Several patterns may share an id. The bytes are
 * copied. APR_EINVAL: len 0, id < 0, or already compiled. */
apr_status_t notary_matcher_add(notary_matcher *m, const char *pattern,
                                apr_size_t len, int id);

/* Build the UTF-8 automaton; call once, after all adds. APR_EINVAL if the
 * set is too large (over ~2^31 table cells). An empty set is valid. */
apr_status_t notary_matcher_compile(notary_matcher *m);

/* ---- streams -------------------------------------------------------- */

/* Start matching one message body.
 *
 * content_type: the Content-Type header value (NULL: none). From it:
 * - the charset parameter, read as browsers read labels (WHATWG Encoding:
 *   us-ascii and iso-8859-1 are windows-1252, shift_jis is CP932, gb2312
 *   is GBK/GB18030, euc-kr is UHC, utf-16 is little-endian ...; NULL,
 *   "" or utf-8: the UTF-8 automaton). Case-insensitive. A byte order
 *   mark overrides it; for text/html without one, a <meta charset> in the
 *   first 1024 bytes is looked for (the WHATWG prescan; those bytes are
 *   held until then). For an ASCII-compatible charset whose bytes above
 *   0x7f never combine with ASCII (ISO-8859-x, windows-125x, EUC-JP ...)
 *   the rule texts are transcoded once and the automaton is cached in the
 *   matcher (thread-safe, at most NOTARY_MATCH_CHARSET_CACHE_MAX). Other
 *   charsets (Shift_JIS, Big5, GBK, UHC: trail bytes that can be ASCII;
 *   ISO-2022-*, UTF-16/32, EBCDIC ...) are decoded to UTF-8 as the body
 *   streams, so matches fall on character boundaries. Unknown to iconv:
 *   the UTF-8 automaton, F_CHARSET_UNKNOWN.
 * - the structure: application/x-www-form-urlencoded (each name and value
 *   matched on its own after '+' and %XX, in the form's charset: the
 *   charset parameter, else a leading "_charset_" field, else UTF-8),
 *   multipart/STAR with a boundary (each part after its own
 *   Content-Transfer-Encoding and charset, its headers never matched as
 *   content, a nested multipart one level deep), application/json and
 *   STAR+json (strings unescaped). This decoded view is matched besides
 *   the raw one (the text in its charset): a match in either counts.
 * content_encoding: the Content-Encoding header value: identity, gzip,
 *   x-gzip, deflate (zlib or raw), br, zstd, stacked up to four; the
 *   bytes as transmitted are matched as well (as UTF-8), so a body that is
 *   mislabelled or breaks off still matches as far as it goes. Anything
 *   else: F_ENCODING_UNSUPPORTED and the bytes as transmitted are matched.
 * max_decoded: at most this many bytes leave any content decoder, the
 *   last one's being the decoded body (0: no limit).
 * flags: if not NULL, receives the flags known at start (CHARSET_UNKNOWN,
 *   CHARSET_DECODED, ENCODING_UNSUPPORTED, MULTIPART_INVALID).
 *
 * Returns APR_SUCCESS (also with the flags above), or APR_EINVAL if m is
 * not compiled, or an APR error from the pool / iconv / decoder setup. */
apr_status_t notary_match_stream_start(notary_match_stream **s, apr_pool_t *p,
                                       notary_matcher *m, const char *content_type,
                                       const char *content_encoding,
                                       apr_size_t max_decoded, unsigned *flags);

/* Feed the next piece of the body as transmitted (transfer coding already
 * removed), any size, any split. Always APR_SUCCESS: decoding problems are
 * flags, never errors, since the caller relays the bytes regardless. Cheap
 * no-op once notary_match_stream_done() is true or after finish. */
apr_status_t notary_match_stream_feed(notary_match_stream *s, const char *buf,
                                      apr_size_t len);

/* End of body: flags a truncated content coding (F_DECODE_ERROR) or a
 * charset sequence cut off at the end (F_CHARSET_INVALID). Idempotent. */
apr_status_t notary_match_stream_finish(notary_match_stream *s);

/* Lowest id matched so far, -1 if none. */
int notary_match_stream_first(const notary_match_stream *s);
/* 1 if id has matched so far. */
int notary_match_stream_has(const notary_match_stream *s, int id);
/* 1 if feeding more cannot change the result: every id that can match in
 * the views in use has matched, or the stream is finished. (A content
 * coding that stopped, F_DECODE_LIMIT or F_DECODE_ERROR, still leaves the
 * bytes as transmitted to match.) */
int notary_match_stream_done(const notary_match_stream *s);
unsigned notary_match_stream_flags(const notary_match_stream *s);
/* Why decoding stopped (F_DECODE_ERROR / F_DECODE_LIMIT), for the log;
 * NULL if it did not. */
const char *notary_match_stream_error(const notary_match_stream *s);
/* Content-decoded bytes examined so far (0 without a content coding). */
apr_size_t notary_match_stream_decoded(const notary_match_stream *s);

/* ---- media ranges --------------------------------------------------- */

typedef struct notary_media_range notary_media_range;

/* Parse a rule's media range: type/subtype, type/STAR, STAR/STAR, and the
 * suffix form type/STAR+suffix, which matches any subtype ending in
 * "+suffix" (application/STAR+xml matches application/atom+xml, not
 * application/xml). STAR is the asterisk; a comment cannot spell it here.
 * Tokens per RFC 9110; surrounding whitespace ignored. Parameters are
 * refused (an operator writing ";charset=..." would expect it enforced).
 * Returns 1 and *out on success; 0 and *err (a sentence for the
 * configuration error, allocated in p) if invalid. */
int notary_media_range_parse(apr_pool_t *p, const char *range,
                             notary_media_range **out, const char **err);

/* 1 if the Content-Type header value's type/subtype falls in r:
 * case-insensitive, parameters ignored, whitespace around it tolerated.
 * NULL, empty or malformed content types never match. */
int notary_media_range_match(const notary_media_range *r,
                             const char *content_type);

/* The charset parameter of a Content-Type header value, unquoted, in p;
 * NULL if there is none. For notary_match_stream_start(). */
const char *notary_media_charset(apr_pool_t *p, const char *content_type);

#endif /* NOTARY_MATCH_H */
