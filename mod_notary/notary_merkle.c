/* RFC 9162 Merkle tree and C2SP tlog-tiles; see notary_merkle.h. */
#include <string.h>

#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "notary_merkle.h"
#include "notary_util.h"

/* SHA-256 fetched once: the implicit fetch of EVP_sha256() on every
 * DigestInit costs two thirds of a node hash, and proofs over tiles hash a
 * lot. Never freed: it lives as long as the process, like EVP_sha256(). */
static CRYPTO_ONCE sha256_once = CRYPTO_ONCE_STATIC_INIT;
static EVP_MD *sha256_fetched;

static void sha256_fetch(void)
{
    sha256_fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* SHA-256(prefix byte || d). Like notary_sha256, all zero bytes if
 * libcrypto fails, which no proof can match by accident. */
static void sha256_prefixed(unsigned char prefix, const void *d, apr_size_t len,
                            unsigned char out[NOTARY_HASH_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const EVP_MD *md;
    unsigned int n = 0;

    md = CRYPTO_THREAD_run_once(&sha256_once, sha256_fetch) && sha256_fetched
           ? sha256_fetched
           : EVP_sha256();
    if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1
        || EVP_DigestUpdate(ctx, &prefix, 1) != 1
        || (len && EVP_DigestUpdate(ctx, d, len) != 1)
        || EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != NOTARY_HASH_LEN) {
        memset(out, 0, NOTARY_HASH_LEN);
    }
    EVP_MD_CTX_free(ctx);
}

void notary_merkle_leaf_hash(const void *d, apr_size_t len, unsigned char out[NOTARY_HASH_LEN])
{
    sha256_prefixed(0x00, d, len, out);
}

void notary_merkle_node_hash(const unsigned char l[NOTARY_HASH_LEN],
                             const unsigned char r[NOTARY_HASH_LEN],
                             unsigned char out[NOTARY_HASH_LEN])
{
    unsigned char buf[2 * NOTARY_HASH_LEN];

    memcpy(buf, l, NOTARY_HASH_LEN);
    memcpy(buf + NOTARY_HASH_LEN, r, NOTARY_HASH_LEN);
    sha256_prefixed(0x01, buf, sizeof(buf), out);
}

void notary_merkle_empty_root(unsigned char out[NOTARY_HASH_LEN])
{
    notary_sha256("", 0, out);
}

/* Fold 2^k equal-height hashes (k <= 8) into their subtree hash, in place
 * in h (which it overwrites). */
static void fold_pow2(unsigned char *h, apr_size_t n)
{
    apr_size_t i;

    for (; n > 1; n /= 2) {
        for (i = 0; i < n / 2; i++) {
            notary_merkle_node_hash(h + 2 * i * NOTARY_HASH_LEN,
                                    h + (2 * i + 1) * NOTARY_HASH_LEN, h + i * NOTARY_HASH_LEN);
        }
    }
}

/* The right edge of a tree being built leaf by leaf: stack[i] is a
 * complete subtree of 2^height[i] leaves, heights strictly decreasing. */
typedef struct {
    unsigned char h[NOTARY_MERKLE_MAX_PROOF + 1][NOTARY_HASH_LEN];
    unsigned height[NOTARY_MERKLE_MAX_PROOF + 1];
    int top;
} edge_stack;

static void edge_push(edge_stack *s, const unsigned char leaf[NOTARY_HASH_LEN])
{
    memcpy(s->h[s->top], leaf, NOTARY_HASH_LEN);
    s->height[s->top++] = 0;
    while (s->top >= 2 && s->height[s->top - 1] == s->height[s->top - 2]) {
        notary_merkle_node_hash(s->h[s->top - 2], s->h[s->top - 1], s->h[s->top - 2]);
        s->height[s->top - 2]++;
        s->top--;
    }
}

/* MTH of the whole stack: the smaller subtrees on the right are hashed in
 * first, which is exactly RFC 9162's split at the largest power of two. */
static void edge_root(const edge_stack *s, unsigned char out[NOTARY_HASH_LEN])
{
    int i;

    if (s->top == 0) {
        notary_merkle_empty_root(out);
        return;
    }
    memcpy(out, s->h[s->top - 1], NOTARY_HASH_LEN);
    for (i = s->top - 2; i >= 0; i--) {
        notary_merkle_node_hash(s->h[i], out, out);
    }
}

void notary_merkle_root_of_leaves(const unsigned char *leaves, apr_uint64_t n,
                                  unsigned char out[NOTARY_HASH_LEN])
{
    edge_stack s;
    apr_uint64_t i;

    s.top = 0;
    for (i = 0; i < n; i++) {
        edge_push(&s, leaves + i * NOTARY_HASH_LEN);
    }
    edge_root(&s, out);
}

static int leaves_get(void *baton, unsigned level, apr_uint64_t index,
                      unsigned char out[NOTARY_HASH_LEN])
{
    const notary_merkle_source *src = baton;
    apr_uint64_t width, first, i;
    edge_stack s;

    if (level > 62) {
        return -1;
    }
    width = (apr_uint64_t)1 << level;
    if (index >= (src->size >> level)) {
        return -1;
    }
    first = index << level;
    s.top = 0;
    for (i = 0; i < width; i++) {
        edge_push(&s, src->leaves + (first + i) * NOTARY_HASH_LEN);
    }
    memcpy(out, s.h[0], NOTARY_HASH_LEN);
    return 0;
}

void notary_merkle_source_leaves(notary_merkle_source *src, const unsigned char *leaves,
                                 apr_uint64_t n)
{
    src->size = n;
    src->get = leaves_get;
    src->baton = src;
    src->leaves = leaves;
}

typedef struct {
    apr_uint64_t size;
    notary_tile_read_fn read;
    void *read_baton;
    unsigned char *tile; /* NOTARY_TILE_WIDTH hashes */
    int have;
    unsigned level;
    apr_uint64_t index;
    unsigned width;
} tiles_state;

unsigned notary_tile_width(unsigned level, apr_uint64_t index, apr_uint64_t size)
{
    apr_uint64_t count, start;

    if (level > 7) {
        return 0; /* 256^8 leaves: beyond any tree */
    }
    count = size >> (NOTARY_TILE_HEIGHT * level);
    if (index >= (count + NOTARY_TILE_WIDTH - 1) / NOTARY_TILE_WIDTH) {
        return 0;
    }
    start = index * NOTARY_TILE_WIDTH;
    return count - start >= NOTARY_TILE_WIDTH ? NOTARY_TILE_WIDTH : (unsigned)(count - start);
}

static int tiles_get(void *baton, unsigned level, apr_uint64_t index,
                     unsigned char out[NOTARY_HASH_LEN])
{
    tiles_state *st = baton;
    unsigned tlevel = level / NOTARY_TILE_HEIGHT, sub = level % NOTARY_TILE_HEIGHT;
    apr_uint64_t first, tindex;
    unsigned width, pos, n = 1u << sub;
    unsigned char buf[(1u << (NOTARY_TILE_HEIGHT - 1)) * NOTARY_HASH_LEN];

    if (level > 62 || index >= (st->size >> level)) {
        return -1;
    }
    /* the 2^sub hashes at tile level tlevel under this node share a tile */
    first = index << sub;
    tindex = first / NOTARY_TILE_WIDTH;
    pos = (unsigned)(first % NOTARY_TILE_WIDTH);
    width = notary_tile_width(tlevel, tindex, st->size);
    if (width < pos + n) {
        return -1;
    }
    if (!st->have || st->level != tlevel || st->index != tindex || st->width != width) {
        st->have = 0;
        if (st->read(st->read_baton, tlevel, tindex, width, st->tile) != 0) {
            return -1;
        }
        st->have = 1;
        st->level = tlevel;
        st->index = tindex;
        st->width = width;
    }
    if (n == 1) {
        memcpy(out, st->tile + pos * NOTARY_HASH_LEN, NOTARY_HASH_LEN);
        return 0;
    }
    memcpy(buf, st->tile + pos * NOTARY_HASH_LEN, (apr_size_t)n * NOTARY_HASH_LEN);
    fold_pow2(buf, n);
    memcpy(out, buf, NOTARY_HASH_LEN);
    return 0;
}

void notary_merkle_source_tiles(notary_merkle_source *src, apr_pool_t *p, apr_uint64_t size,
                                notary_tile_read_fn read, void *read_baton)
{
    tiles_state *st = apr_pcalloc(p, sizeof(*st));

    st->size = size;
    st->read = read;
    st->read_baton = read_baton;
    st->tile = apr_palloc(p, NOTARY_TILE_WIDTH * NOTARY_HASH_LEN);
    src->size = size;
    src->get = tiles_get;
    src->baton = st;
    src->leaves = NULL;
}

/* Largest power of two strictly less than n (n >= 2). */
static apr_uint64_t split_point(apr_uint64_t n)
{
    apr_uint64_t k = 1;

    while (k * 2 < n) {
        k *= 2;
    }
    return k;
}

static unsigned log2_exact(apr_uint64_t n)
{
    unsigned l = 0;

    while (((apr_uint64_t)1 << l) < n) {
        l++;
    }
    return l;
}

/* MTH(D[lo:hi]); lo is aligned to the largest power of two <= hi - lo, as
 * in every call the RFC's recursion makes. */
static int mth(const notary_merkle_source *src, apr_uint64_t lo, apr_uint64_t hi,
               unsigned char out[NOTARY_HASH_LEN])
{
    apr_uint64_t n = hi - lo, k;
    unsigned char l[NOTARY_HASH_LEN], r[NOTARY_HASH_LEN];

    if (n == 0) {
        notary_merkle_empty_root(out);
        return 0;
    }
    if ((n & (n - 1)) == 0) {
        unsigned level = log2_exact(n);
        return src->get(src->baton, level, lo >> level, out);
    }
    k = split_point(n);
    if (mth(src, lo, lo + k, l) != 0 || mth(src, lo + k, hi, r) != 0) {
        return -1;
    }
    notary_merkle_node_hash(l, r, out);
    return 0;
}

int notary_merkle_root(const notary_merkle_source *src, apr_uint64_t size,
                       unsigned char out[NOTARY_HASH_LEN])
{
    if (size > src->size) {
        return -1;
    }
    return mth(src, 0, size, out);
}

/* PATH(m, D[lo:hi]) of RFC 9162 2.1.3.1, appending to proof. */
static int path(const notary_merkle_source *src, apr_uint64_t m, apr_uint64_t lo,
                apr_uint64_t hi, unsigned char *proof, apr_size_t *count)
{
    apr_uint64_t n = hi - lo, k;

    if (n <= 1) {
        return 0;
    }
    k = split_point(n);
    if (m < k) {
        if (path(src, m, lo, lo + k, proof, count) != 0) {
            return -1;
        }
        return mth(src, lo + k, hi, proof + (*count)++ * NOTARY_HASH_LEN);
    }
    if (path(src, m - k, lo + k, hi, proof, count) != 0) {
        return -1;
    }
    return mth(src, lo, lo + k, proof + (*count)++ * NOTARY_HASH_LEN);
}

int notary_merkle_prove_inclusion(apr_pool_t *p, const notary_merkle_source *src,
                                  apr_uint64_t index, apr_uint64_t size,
                                  unsigned char **proof, apr_size_t *count)
{
    *proof = apr_palloc(p, NOTARY_MERKLE_MAX_PROOF * NOTARY_HASH_LEN);
    *count = 0;
    if (index >= size || size > src->size || size > NOTARY_MERKLE_MAX_SIZE) {
        return -1;
    }
    return path(src, index, 0, size, *proof, count);
}

/* SUBPROOF(m, D[lo:hi], b) of RFC 9162 2.1.4.1, appending to proof. */
static int subproof(const notary_merkle_source *src, apr_uint64_t m, apr_uint64_t lo,
                    apr_uint64_t hi, int b, unsigned char *proof, apr_size_t *count)
{
    apr_uint64_t n = hi - lo, k;

    if (m == n) {
        if (b) {
            return 0;
        }
        return mth(src, lo, hi, proof + (*count)++ * NOTARY_HASH_LEN);
    }
    k = split_point(n);
    if (m <= k) {
        if (subproof(src, m, lo, lo + k, b, proof, count) != 0) {
            return -1;
        }
        return mth(src, lo + k, hi, proof + (*count)++ * NOTARY_HASH_LEN);
    }
    if (subproof(src, m - k, lo + k, hi, 0, proof, count) != 0) {
        return -1;
    }
    return mth(src, lo, lo + k, proof + (*count)++ * NOTARY_HASH_LEN);
}

int notary_merkle_prove_consistency(apr_pool_t *p, const notary_merkle_source *src,
                                    apr_uint64_t old_size, apr_uint64_t new_size,
                                    unsigned char **proof, apr_size_t *count)
{
    *proof = apr_palloc(p, NOTARY_MERKLE_MAX_PROOF * NOTARY_HASH_LEN);
    *count = 0;
    if (old_size > new_size || new_size > src->size || new_size > NOTARY_MERKLE_MAX_SIZE) {
        return -1;
    }
    if (old_size == 0 || old_size == new_size) {
        return 0;
    }
    return subproof(src, old_size, 0, new_size, 1, *proof, count);
}

int notary_merkle_verify_inclusion(const unsigned char leaf_hash[NOTARY_HASH_LEN],
                                   apr_uint64_t index, apr_uint64_t size,
                                   const unsigned char *proof, apr_size_t count,
                                   const unsigned char root[NOTARY_HASH_LEN])
{
    apr_uint64_t fn = index, sn;
    unsigned char r[NOTARY_HASH_LEN];
    apr_size_t i;

    if (index >= size || count > NOTARY_MERKLE_MAX_PROOF) {
        return 0;
    }
    sn = size - 1;
    memcpy(r, leaf_hash, NOTARY_HASH_LEN);
    for (i = 0; i < count; i++) {
        const unsigned char *pi = proof + i * NOTARY_HASH_LEN;

        if (sn == 0) {
            return 0;
        }
        if ((fn & 1) || fn == sn) {
            notary_merkle_node_hash(pi, r, r);
            if (!(fn & 1)) {
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        }
        else {
            notary_merkle_node_hash(r, pi, r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, NOTARY_HASH_LEN) == 0;
}

int notary_merkle_verify_consistency(apr_uint64_t old_size, const unsigned char old_root[NOTARY_HASH_LEN],
                                     apr_uint64_t new_size, const unsigned char new_root[NOTARY_HASH_LEN],
                                     const unsigned char *proof, apr_size_t count)
{
    unsigned char fr[NOTARY_HASH_LEN], sr[NOTARY_HASH_LEN], empty[NOTARY_HASH_LEN];
    apr_uint64_t fn, sn;
    apr_size_t i = 0;

    if (old_size > new_size || count > NOTARY_MERKLE_MAX_PROOF) {
        return 0;
    }
    if (old_size == new_size) {
        return count == 0 && memcmp(old_root, new_root, NOTARY_HASH_LEN) == 0;
    }
    if (old_size == 0) {
        notary_merkle_empty_root(empty);
        return count == 0 && memcmp(old_root, empty, NOTARY_HASH_LEN) == 0;
    }
    if (count == 0) {
        return 0;
    }
    fn = old_size - 1;
    sn = new_size - 1;
    /* a power-of-two old tree is itself the first node of the path */
    if ((old_size & (old_size - 1)) == 0) {
        memcpy(fr, old_root, NOTARY_HASH_LEN);
    }
    else {
        memcpy(fr, proof, NOTARY_HASH_LEN);
        i = 1;
    }
    memcpy(sr, fr, NOTARY_HASH_LEN);
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    for (; i < count; i++) {
        const unsigned char *c = proof + i * NOTARY_HASH_LEN;

        if (sn == 0) {
            return 0;
        }
        if ((fn & 1) || fn == sn) {
            notary_merkle_node_hash(c, fr, fr);
            notary_merkle_node_hash(c, sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        }
        else {
            notary_merkle_node_hash(sr, c, sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(fr, old_root, NOTARY_HASH_LEN) == 0
        && memcmp(sr, new_root, NOTARY_HASH_LEN) == 0;
}

/* The path into buf (at least 64 bytes); -1 for arguments out of range. */
static int format_tile_path(char *buf, apr_size_t size, int level, apr_uint64_t index, unsigned width)
{
    char digits[32], n[64], *o = n, lv[16];
    int len, groups, g;

    if (level < NOTARY_TILE_ENTRIES || level > 63 || width > NOTARY_TILE_WIDTH) {
        return -1;
    }
    len = apr_snprintf(digits, sizeof(digits), "%" APR_UINT64_T_FMT, index);
    groups = (len + 2) / 3;
    /* zero-padded to whole groups: "x001/x234/067" */
    for (g = 0; g < groups; g++) {
        int end = len - 3 * (groups - 1 - g), d;

        if (g > 0) {
            *o++ = '/';
        }
        if (g < groups - 1) {
            *o++ = 'x';
        }
        for (d = end - 3; d < end; d++) {
            *o++ = d < 0 ? '0' : digits[d];
        }
    }
    *o = '\0';
    if (level == NOTARY_TILE_ENTRIES) {
        apr_cpystrn(lv, "entries", sizeof(lv));
    }
    else {
        apr_snprintf(lv, sizeof(lv), "%d", level);
    }
    if (width == 0 || width == NOTARY_TILE_WIDTH) {
        apr_snprintf(buf, size, "tile/%s/%s", lv, n);
    }
    else {
        apr_snprintf(buf, size, "tile/%s/%s.p/%u", lv, n, width);
    }
    return 0;
}

const char *notary_tile_path(apr_pool_t *p, int level, apr_uint64_t index, unsigned width)
{
    char buf[128];

    return format_tile_path(buf, sizeof(buf), level, index, width) == 0 ? apr_pstrdup(p, buf) : NULL;
}

int notary_tile_path_parse(const char *path, int *level, apr_uint64_t *index, unsigned *width)
{
    const char *s = path, *p;
    char again[128];
    apr_uint64_t n = 0;
    unsigned w = NOTARY_TILE_WIDTH;
    int lv = 0, digits = 0;

    if (strncmp(s, "tile/", 5) != 0) {
        return -1;
    }
    s += 5;
    if (strncmp(s, "entries/", 8) == 0) {
        lv = NOTARY_TILE_ENTRIES;
        s += 8;
    }
    else {
        if (*s < '0' || *s > '9') {
            return -1;
        }
        while (*s >= '0' && *s <= '9') {
            lv = lv * 10 + (*s++ - '0');
            if (lv > 63) {
                return -1;
            }
        }
        if (*s++ != '/') {
            return -1;
        }
    }
    for (p = s; *p && *p != '.'; p++) {
        if (*p >= '0' && *p <= '9') {
            if (++digits > 19) {
                return -1;
            }
            n = n * 10 + (apr_uint64_t)(*p - '0');
        }
        else if (*p != 'x' && *p != '/') {
            return -1;
        }
    }
    if (*p == '.') {
        if (strncmp(p, ".p/", 3) != 0) {
            return -1;
        }
        p += 3;
        w = 0;
        if (*p < '1' || *p > '9') {
            return -1;
        }
        while (*p >= '0' && *p <= '9') {
            w = w * 10 + (unsigned)(*p++ - '0');
            if (w >= NOTARY_TILE_WIDTH) {
                return -1;
            }
        }
        if (*p) {
            return -1;
        }
    }
    if (digits == 0 || n > NOTARY_MERKLE_MAX_SIZE) {
        return -1;
    }
    /* one spelling per tile: what we would have written */
    if (format_tile_path(again, sizeof(again), lv, n, w) != 0 || strcmp(again, path) != 0) {
        return -1;
    }
    *level = lv;
    *index = n;
    *width = w;
    return 0;
}

int notary_merkle_tile(const notary_merkle_source *src, unsigned level, apr_uint64_t index,
                       unsigned width, unsigned char *out)
{
    unsigned i, h = level * NOTARY_TILE_HEIGHT;

    if (level > 7 || width == 0 || width > NOTARY_TILE_WIDTH) {
        return -1;
    }
    for (i = 0; i < width; i++) {
        if (src->get(src->baton, h, index * NOTARY_TILE_WIDTH + i, out + i * NOTARY_HASH_LEN) != 0) {
            return -1;
        }
    }
    return 0;
}

int notary_tiles_append(apr_pool_t *p, apr_uint64_t old_size,
                        notary_tile_read_fn read, void *read_baton,
                        const unsigned char *leaves, apr_size_t count,
                        notary_tile_emit_fn emit, void *emit_baton)
{
    const unsigned char *add = leaves;
    apr_size_t nadd = count;
    apr_uint64_t old_count = old_size; /* hashes at this tile level before */
    unsigned level;

    if (old_size > NOTARY_MERKLE_MAX_SIZE || count > NOTARY_MERKLE_MAX_SIZE - old_size) {
        return -1;
    }
    for (level = 0; nadd > 0; level++) {
        apr_uint64_t t0 = old_count / NOTARY_TILE_WIDTH;
        apr_size_t w0 = (apr_size_t)(old_count % NOTARY_TILE_WIDTH), total = w0 + nadd, off;
        unsigned char *buf = apr_palloc(p, total * NOTARY_HASH_LEN);
        unsigned char *next = apr_palloc(p, (total / NOTARY_TILE_WIDTH + 1) * NOTARY_HASH_LEN);
        apr_size_t nnext = 0;

        if (level > 7) {
            return -1;
        }
        if (w0 && read(read_baton, level, t0, (unsigned)w0, buf) != 0) {
            return -1;
        }
        memcpy(buf + w0 * NOTARY_HASH_LEN, add, nadd * NOTARY_HASH_LEN);
        for (off = 0; off < total; off += NOTARY_TILE_WIDTH) {
            unsigned w = total - off >= NOTARY_TILE_WIDTH ? NOTARY_TILE_WIDTH : (unsigned)(total - off);
            int rv = emit(emit_baton, level, t0 + off / NOTARY_TILE_WIDTH, w,
                          buf + off * NOTARY_HASH_LEN);

            if (rv != 0) {
                return rv;
            }
            /* a tile completed by this batch is one new hash a level up */
            if (w == NOTARY_TILE_WIDTH) {
                unsigned char tmp[NOTARY_TILE_WIDTH * NOTARY_HASH_LEN];

                memcpy(tmp, buf + off * NOTARY_HASH_LEN, sizeof(tmp));
                fold_pow2(tmp, NOTARY_TILE_WIDTH);
                memcpy(next + nnext++ * NOTARY_HASH_LEN, tmp, NOTARY_HASH_LEN);
            }
        }
        old_count /= NOTARY_TILE_WIDTH;
        add = next;
        nadd = nnext;
    }
    return 0;
}
