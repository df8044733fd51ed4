/* notary_decode: the content codings a browser reads (gzip, deflate, br,
 * zstd, stacked), decoded as a stream for matching only. No httpd.
 *
 * The chain is fed the body as transmitted and pushes the decoded bytes to
 * a sink; nothing is held beyond the decoders' own windows, and the total
 * that leaves any stage is bounded. */
#ifndef NOTARY_DECODE_H
#define NOTARY_DECODE_H

#include <apr_pools.h>
#include <apr_errno.h>

/* Where decoded bytes go; enough() says the consumer needs no more (every
 * rule matched), so decoding may stop early. */
typedef void (*notary_sink_fn)(void *ctx, const unsigned char *p, apr_size_t n);
typedef int (*notary_enough_fn)(void *ctx);

typedef struct notary_codings notary_codings;

/* Most codings stacked in one Content-Encoding that we decode. */
#define NOTARY_CODINGS_MAX 4

/* Result of notary_codings_create. */
#define NOTARY_CODINGS_NONE 0        /* no coding (or identity only): *c NULL */
#define NOTARY_CODINGS_OK 1          /* *c decodes them */
#define NOTARY_CODINGS_UNSUPPORTED 2 /* a coding we do not read: *c NULL */

/* Parse a Content-Encoding value (a list, applied in order; we undo them in
 * reverse) and set up its decoders in p. Known: gzip, x-gzip, deflate (zlib
 * or raw), br, zstd, identity. max_decoded: most bytes any stage may
 * produce (0: no bound). *kind gets one of NOTARY_CODINGS_*; APR errors
 * only for setup failures (memory, library init). */
apr_status_t notary_codings_create(notary_codings **c, int *kind, apr_pool_t *p,
                                   const char *content_encoding,
                                   apr_size_t max_decoded, notary_sink_fn out,
                                   notary_enough_fn enough, void *ctx);

/* The next bytes as transmitted, any split. Stops quietly once stopped. */
void notary_codings_feed(notary_codings *c, const unsigned char *p, apr_size_t n);

/* End of body: a stage that did not reach its end is truncated. */
void notary_codings_finish(notary_codings *c);

/* 0 while decoding; else NOTARY_DECODE_LIMIT or NOTARY_DECODE_ERROR. */
#define NOTARY_DECODE_LIMIT 1
#define NOTARY_DECODE_ERROR 2
int notary_codings_stopped(const notary_codings *c);
/* Why it stopped, for the log (static or in the pool); NULL if it did not. */
const char *notary_codings_error(const notary_codings *c);
/* Bytes the last stage produced: the decoded body's size so far. */
apr_size_t notary_codings_decoded(const notary_codings *c);

/* An Accept-Encoding value narrowed to the codings we decode (gzip,
 * x-gzip, deflate, br, zstd, identity, with their weights as written):
 * "*" and every other coding are dropped, so a merchant cannot answer in
 * a coding the matcher cannot read. "identity" if nothing is left. NULL
 * if ae is NULL or already has nothing to drop. */
const char *notary_codings_accept(apr_pool_t *p, const char *ae);

#endif /* NOTARY_DECODE_H */
