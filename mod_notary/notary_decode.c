/* notary_decode: streaming content decoding (gzip, deflate, br, zstd) for
 * matching. No httpd in here. */
#include <string.h>

#include <apr_strings.h>
#include <zlib.h>
#include <brotli/decode.h>
#include <zstd.h>

#include "notary_decode.h"

#define OBUF_SIZE 16384
/* Each stage is given its input in blocks at fixed offsets of its stream:
 * how much brotli or zstd outputs before reporting an error depends on the
 * input one call sees, so the calls must not depend on how the body was
 * cut, or a text before the error matches cut one way and not another. */
#define DECODE_BLOCK 4096
/* deflate that starts like a zlib header: input held while we find out */
#define DEFLATE_PROBE_MAX 16384
/* RFC 8878 section 3.1.1.1.2: HTTP decoders need not go beyond 8 MiB */
#define ZSTD_WINDOW_LOG_MAX 23

enum { K_GZIP,
       K_DEFLATE,
       K_BR,
       K_ZSTD };

enum { DF_UNDECIDED,
       DF_ZLIB,
       DF_RAW };

typedef struct cstage cstage;
struct cstage {
    notary_codings *c;
    int kind;
    int idx;
    unsigned char *obuf;
    apr_size_t produced;
    int any_input;
    int ended;          /* a member/frame/stream ended and nothing followed yet */
    unsigned char *blk; /* DECODE_BLOCK: input up to the next block edge */
    apr_size_t blk_len;
    /* zlib */
    z_stream z;
    int z_inited;
    /* deflate: zlib or raw */
    int df_mode;
    unsigned char *probe; /* input held while undecided */
    apr_size_t probe_len;
    z_stream trial;
    int trial_inited;
    /* br, zstd */
    BrotliDecoderState *br;
    ZSTD_DStream *zd;
};

struct notary_codings {
    apr_pool_t *pool;
    cstage st[NOTARY_CODINGS_MAX];
    int n;
    apr_size_t max;
    int stopped;
    const char *error;
    notary_sink_fn out;
    notary_enough_fn enough;
    void *ctx;
};

static const char *kind_name(int k)
{
    static const char *const names[] = { "gzip", "deflate", "br", "zstd" };
    return names[k];
}

static void stop(notary_codings *c, int why, const char *msg)
{
    if (!c->stopped) {
        c->stopped = why;
        c->error = msg;
    }
}

static int halt(const notary_codings *c)
{
    return c->stopped || (c->enough && c->enough(c->ctx));
}

static void stage_feed(cstage *s, const unsigned char *p, apr_size_t n);

/* Pass a stage's output on, within the bound. */
static void stage_out(cstage *s, const unsigned char *p, apr_size_t n)
{
    notary_codings *c = s->c;

    if (!n || c->stopped)
        return;
    if (c->max && n > c->max - s->produced) {
        n = c->max - s->produced;
        stop(c, NOTARY_DECODE_LIMIT, "decoded size limit reached");
    }
    s->produced += n;
    if (s->idx + 1 < c->n)
        stage_feed(&c->st[s->idx + 1], p, n);
    else
        c->out(c->ctx, p, n);
}

static voidpf z_palloc(voidpf opaque, uInt items, uInt size)
{
    return apr_palloc((apr_pool_t *)opaque, (apr_size_t)items * size);
}

static void z_pfree(voidpf opaque, voidpf addr)
{
    (void)opaque;
    (void)addr; /* the pool frees it */
}

static apr_status_t z_cleanup(void *data)
{
    z_stream *z = data;
    inflateEnd(z);
    return APR_SUCCESS;
}

static int z_init(cstage *s, z_stream *z, int wbits)
{
    memset(z, 0, sizeof(*z));
    z->zalloc = z_palloc;
    z->zfree = z_pfree;
    z->opaque = s->c->pool;
    if (inflateInit2(z, wbits) != Z_OK)
        return 0;
    apr_pool_cleanup_register(s->c->pool, z, z_cleanup, apr_pool_cleanup_null);
    return 1;
}

/* Inflate into the sink. */
static void zlib_run(cstage *s, const unsigned char *in, apr_size_t len)
{
    notary_codings *c = s->c;

    s->z.next_in = (Bytef *)in;
    s->z.avail_in = (uInt)len;
    while (!halt(c)) {
        apr_size_t got;
        int zr;

        if (s->ended) {
            if (!s->z.avail_in)
                break;
            if (s->kind != K_GZIP) {
                stop(c, NOTARY_DECODE_ERROR, "data after the end of the deflate stream");
                break;
            }
            if (inflateReset(&s->z) != Z_OK) {
                stop(c, NOTARY_DECODE_ERROR, "cannot reset zlib");
                break;
            }
            s->ended = 0; /* the next gzip member */
        }
        s->z.next_out = s->obuf;
        s->z.avail_out = OBUF_SIZE;
        zr = inflate(&s->z, Z_NO_FLUSH);
        got = OBUF_SIZE - s->z.avail_out;
        stage_out(s, s->obuf, got);
        if (zr == Z_STREAM_END) {
            s->ended = 1;
            continue;
        }
        if (zr == Z_OK || zr == Z_BUF_ERROR) {
            if (got == OBUF_SIZE)
                continue; /* more may be pending without input */
            if (!s->z.avail_in)
                break;
            if (zr == Z_OK)
                continue;
        }
        stop(c, NOTARY_DECODE_ERROR,
             apr_pstrcat(c->pool, "malformed ", kind_name(s->kind), " data: ",
                         s->z.msg ? s->z.msg : "inflate failed", NULL));
        break;
    }
    s->z.next_in = NULL;
    s->z.avail_in = 0;
}

/* A deflate stream is zlib-wrapped (RFC 9110) or raw (what many servers
 * send). Two bytes can look like a zlib header by chance (78 01 is also a
 * raw stream's start), so while undecided a trial zlib inflate runs over
 * the input held: an error means raw, the stream's end (checksum good) or
 * DEFLATE_PROBE_MAX bytes without error mean zlib. The decision depends on
 * the bytes only, never on how they were cut. */
static void deflate_decide(cstage *s, int mode)
{
    s->df_mode = mode;
    if (!z_init(s, &s->z, mode == DF_ZLIB ? MAX_WBITS : -MAX_WBITS)) {
        stop(s->c, NOTARY_DECODE_ERROR, "cannot initialise zlib");
        return;
    }
    s->z_inited = 1;
    if (s->probe_len)
        zlib_run(s, s->probe, s->probe_len);
}

static void deflate_feed(cstage *s, const unsigned char *p, apr_size_t n)
{
    unsigned char sink[4096];

    if (s->df_mode == DF_UNDECIDED && !s->trial_inited) {
        /* zlib: CM 8, window <= 32 KiB, header a multiple of 31 */
        while (s->probe_len < 2 && n) {
            s->probe[s->probe_len++] = *p++;
            n--;
        }
        if (s->probe_len < 2)
            return;
        if ((s->probe[0] & 0x0f) != 8 || (s->probe[0] >> 4) > 7
            || ((s->probe[0] << 8) | s->probe[1]) % 31 != 0) {
            deflate_decide(s, DF_RAW);
        }
        else if (!z_init(s, &s->trial, MAX_WBITS)) {
            stop(s->c, NOTARY_DECODE_ERROR, "cannot initialise zlib");
            return;
        }
        else {
            int zr;
            s->trial_inited = 1;
            s->trial.next_in = s->probe;
            s->trial.avail_in = 2;
            s->trial.next_out = sink;
            s->trial.avail_out = sizeof(sink);
            zr = inflate(&s->trial, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_BUF_ERROR)
                deflate_decide(s, DF_RAW);
        }
    }
    while (s->df_mode == DF_UNDECIDED && n && !s->c->stopped) {
        apr_size_t take = DEFLATE_PROBE_MAX - s->probe_len;
        unsigned char *in = s->probe + s->probe_len;
        int zr = Z_OK;
        if (take > n)
            take = n;
        memcpy(in, p, take);
        s->probe_len += take;
        p += take;
        n -= take;
        s->trial.next_in = in;
        s->trial.avail_in = (uInt)take;
        while (s->trial.avail_in) {
            s->trial.next_out = sink;
            s->trial.avail_out = sizeof(sink);
            zr = inflate(&s->trial, Z_NO_FLUSH);
            if (zr != Z_OK)
                break;
        }
        if (zr == Z_STREAM_END)
            deflate_decide(s, DF_ZLIB);
        else if (zr != Z_OK && !(zr == Z_BUF_ERROR && !s->trial.avail_in))
            deflate_decide(s, DF_RAW);
        else if (s->probe_len == DEFLATE_PROBE_MAX)
            deflate_decide(s, DF_ZLIB);
    }
    if (s->df_mode != DF_UNDECIDED && n && !s->c->stopped)
        zlib_run(s, p, n);
}

static void br_run(cstage *s, const unsigned char *p, apr_size_t n)
{
    notary_codings *c = s->c;
    size_t avail_in = n;
    const uint8_t *next_in = p;

    while (!halt(c)) {
        size_t avail_out = OBUF_SIZE;
        uint8_t *next_out = s->obuf;
        BrotliDecoderResult r;

        if (s->ended) {
            if (avail_in)
                stop(c, NOTARY_DECODE_ERROR, "data after the end of the br stream");
            break;
        }
        r = BrotliDecoderDecompressStream(s->br, &avail_in, &next_in, &avail_out,
                                          &next_out, NULL);
        stage_out(s, s->obuf, OBUF_SIZE - avail_out);
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            s->ended = 1;
            continue;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT)
            continue;
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
            if (!avail_in)
                break;
            continue;
        }
        stop(c, NOTARY_DECODE_ERROR,
             apr_pstrcat(c->pool, "malformed br data: ",
                         BrotliDecoderErrorString(BrotliDecoderGetErrorCode(s->br)), NULL));
        break;
    }
}

static void zstd_run(cstage *s, const unsigned char *p, apr_size_t n)
{
    notary_codings *c = s->c;
    ZSTD_inBuffer in = { p, n, 0 };

    while (!halt(c)) {
        ZSTD_outBuffer out = { s->obuf, OBUF_SIZE, 0 };
        size_t r;

        if (in.pos == in.size && !s->any_input)
            break;
        r = ZSTD_decompressStream(s->zd, &out, &in);
        if (ZSTD_isError(r)) {
            stop(c, NOTARY_DECODE_ERROR,
                 apr_pstrcat(c->pool, "malformed zstd data: ", ZSTD_getErrorName(r), NULL));
            break;
        }
        stage_out(s, s->obuf, out.pos);
        /* 0: a frame ended exactly here (another may follow) */
        s->ended = (r == 0);
        if (out.pos == out.size)
            continue; /* output full: more may be pending */
        if (in.pos == in.size)
            break;
    }
}

/* One block (at most DECODE_BLOCK bytes) into the decoder. */
static void stage_run(cstage *s, const unsigned char *p, apr_size_t n)
{
    if (halt(s->c))
        return;
    switch (s->kind) {
    case K_GZIP:
        zlib_run(s, p, n);
        break;
    case K_DEFLATE:
        deflate_feed(s, p, n);
        break;
    case K_BR:
        br_run(s, p, n);
        break;
    case K_ZSTD:
        zstd_run(s, p, n);
        break;
    }
}

static void stage_feed(cstage *s, const unsigned char *p, apr_size_t n)
{
    if (!n || halt(s->c))
        return;
    s->any_input = 1;
    while (n && !halt(s->c)) {
        apr_size_t take = DECODE_BLOCK - s->blk_len;
        if (!s->blk_len && n >= DECODE_BLOCK) {
            stage_run(s, p, DECODE_BLOCK); /* a whole block in place: no copy */
            p += DECODE_BLOCK;
            n -= DECODE_BLOCK;
            continue;
        }
        if (take > n)
            take = n;
        memcpy(s->blk + s->blk_len, p, take);
        s->blk_len += take;
        p += take;
        n -= take;
        if (s->blk_len == DECODE_BLOCK) {
            s->blk_len = 0;
            stage_run(s, s->blk, DECODE_BLOCK);
        }
    }
}

/* End of input: the last, short block. */
static void stage_flush(cstage *s)
{
    apr_size_t n = s->blk_len;
    s->blk_len = 0;
    if (n)
        stage_run(s, s->blk, n);
}

static apr_status_t br_cleanup(void *data)
{
    BrotliDecoderDestroyInstance(data);
    return APR_SUCCESS;
}

static apr_status_t zstd_cleanup(void *data)
{
    ZSTD_freeDStream(data);
    return APR_SUCCESS;
}

static int ieq(const char *a, apr_size_t an, const char *b)
{
    apr_size_t i;
    if (strlen(b) != an)
        return 0;
    for (i = 0; i < an; i++) {
        char x = a[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (x != b[i])
            return 0;
    }
    return 1;
}

apr_status_t notary_codings_create(notary_codings **out, int *kind, apr_pool_t *p,
                                   const char *ce, apr_size_t max_decoded,
                                   notary_sink_fn sink, notary_enough_fn enough,
                                   void *ctx)
{
    int kinds[NOTARY_CODINGS_MAX], n = 0, i;
    notary_codings *c;
    const char *q = ce;

    *out = NULL;
    *kind = NOTARY_CODINGS_NONE;
    while (q && *q) {
        const char *b;
        apr_size_t len;
        int k;
        while (*q == ' ' || *q == '\t' || *q == ',')
            q++;
        if (!*q)
            break;
        b = q;
        while (*q && *q != ' ' && *q != '\t' && *q != ',')
            q++;
        len = (apr_size_t)(q - b);
        if (ieq(b, len, "identity"))
            continue;
        if (ieq(b, len, "gzip") || ieq(b, len, "x-gzip"))
            k = K_GZIP;
        else if (ieq(b, len, "deflate"))
            k = K_DEFLATE;
        else if (ieq(b, len, "br"))
            k = K_BR;
        else if (ieq(b, len, "zstd"))
            k = K_ZSTD;
        else {
            *kind = NOTARY_CODINGS_UNSUPPORTED;
            return APR_SUCCESS;
        }
        if (n == NOTARY_CODINGS_MAX) {
            *kind = NOTARY_CODINGS_UNSUPPORTED;
            return APR_SUCCESS;
        }
        kinds[n++] = k;
    }
    if (!n)
        return APR_SUCCESS;

    c = apr_pcalloc(p, sizeof(*c));
    c->pool = p;
    c->n = n;
    c->max = max_decoded;
    c->out = sink;
    c->enough = enough;
    c->ctx = ctx;
    for (i = 0; i < n; i++) {
        cstage *s = &c->st[i];
        s->c = c;
        s->idx = i;
        s->kind = kinds[n - 1 - i]; /* the last coding applied comes off first */
        s->obuf = apr_palloc(p, OBUF_SIZE);
        s->blk = apr_palloc(p, DECODE_BLOCK);
        switch (s->kind) {
        case K_GZIP:
            if (!z_init(s, &s->z, 16 + MAX_WBITS))
                return APR_ENOMEM;
            s->z_inited = 1;
            break;
        case K_DEFLATE:
            s->probe = apr_palloc(p, DEFLATE_PROBE_MAX);
            break;
        case K_BR:
            if (!(s->br = BrotliDecoderCreateInstance(NULL, NULL, NULL)))
                return APR_ENOMEM;
            apr_pool_cleanup_register(p, s->br, br_cleanup, apr_pool_cleanup_null);
            break;
        case K_ZSTD:
            if (!(s->zd = ZSTD_createDStream()))
                return APR_ENOMEM;
            apr_pool_cleanup_register(p, s->zd, zstd_cleanup, apr_pool_cleanup_null);
            if (ZSTD_isError(ZSTD_initDStream(s->zd))
                || ZSTD_isError(ZSTD_DCtx_setParameter(s->zd, ZSTD_d_windowLogMax,
                                                       ZSTD_WINDOW_LOG_MAX)))
                return APR_EGENERAL;
            break;
        }
    }
    *out = c;
    *kind = NOTARY_CODINGS_OK;
    return APR_SUCCESS;
}

void notary_codings_feed(notary_codings *c, const unsigned char *p, apr_size_t n)
{
    if (c)
        stage_feed(&c->st[0], p, n);
}

void notary_codings_finish(notary_codings *c)
{
    int i;

    if (!c)
        return;
    for (i = 0; i < c->n && !halt(c); i++) {
        cstage *s = &c->st[i];
        stage_flush(s); /* into the next stage, flushed in turn */
        if (halt(c))
            break;
        if (s->kind == K_DEFLATE && s->df_mode == DF_UNDECIDED && s->probe_len >= 2)
            deflate_decide(s, DF_ZLIB); /* no error seen: zlib, truncated */
        if (halt(c))
            break;
        if (s->any_input && !s->ended)
            stop(c, NOTARY_DECODE_ERROR,
                 apr_pstrcat(c->pool, "truncated ", kind_name(s->kind), " data", NULL));
        else if (!s->any_input && i > 0)
            stop(c, NOTARY_DECODE_ERROR,
                 apr_pstrcat(c->pool, "empty ", kind_name(s->kind), " data", NULL));
    }
}

int notary_codings_stopped(const notary_codings *c)
{
    return c ? c->stopped : 0;
}

const char *notary_codings_error(const notary_codings *c)
{
    return c ? c->error : NULL;
}

apr_size_t notary_codings_decoded(const notary_codings *c)
{
    return c ? c->st[c->n - 1].produced : 0;
}

const char *notary_codings_accept(apr_pool_t *p, const char *ae)
{
    static const char *const known[] = { "gzip", "x-gzip", "deflate", "br", "zstd",
                                         "identity", NULL };
    char *out, *o;
    const char *q = ae;
    int dropped = 0, kept = 0;

    if (!ae)
        return NULL;
    out = o = apr_palloc(p, strlen(ae) + sizeof("identity"));
    while (*q) {
        const char *b, *e, *t;
        int i, ok = 0;
        while (*q == ' ' || *q == '\t' || *q == ',')
            q++;
        if (!*q)
            break;
        b = q;
        while (*q && *q != ',')
            q++;
        e = q;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        for (t = b; t < e && *t != ';' && *t != ' ' && *t != '\t'; t++)
            ;
        for (i = 0; known[i]; i++)
            if (ieq(b, (apr_size_t)(t - b), known[i]))
                ok = 1;
        if (!ok) {
            dropped = 1;
            continue;
        }
        if (kept++) {
            *o++ = ',';
            *o++ = ' ';
        }
        memcpy(o, b, (apr_size_t)(e - b));
        o += e - b;
    }
    if (!dropped)
        return NULL;
    if (!kept) {
        memcpy(o, "identity", 8);
        o += 8;
    }
    *o = '\0';
    return out;
}
