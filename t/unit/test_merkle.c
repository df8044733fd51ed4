/* RFC 9162 tree, proofs and C2SP tiles (notary_merkle) against a plain
 * recursive reference, exhaustively for small trees. TAP. */
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "notary_merkle.h"
#include "tap.h"

#define MAXN 300
#define MAXC 130
#define H NOTARY_HASH_LEN

static unsigned char leaves[70000 * H]; /* leaf hashes of D[i] = "leaf i" */

static void make_leaves(apr_size_t n)
{
    apr_size_t i;
    char d[32];

    for (i = 0; i < n; i++) {
        int len = snprintf(d, sizeof(d), "leaf %lu", (unsigned long)i);
        notary_merkle_leaf_hash(d, (apr_size_t)len, leaves + i * H);
    }
}

/* RFC 9162 2.1.1, word for word: MTH of D[lo:hi]. */
static void ref_mth(apr_size_t lo, apr_size_t hi, unsigned char out[H])
{
    apr_size_t n = hi - lo, k = 1;
    unsigned char l[H], r[H];

    if (n == 0) {
        notary_merkle_empty_root(out);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves + lo * H, H);
        return;
    }
    while (k * 2 < n) k *= 2;
    ref_mth(lo, lo + k, l);
    ref_mth(lo + k, hi, r);
    notary_merkle_node_hash(l, r, out);
}

/* An in-memory tile store; it checks that a tile only ever grows by a
 * prefix, which is what the log's tables enforce too. */
typedef struct {
    unsigned width;
    unsigned char *data;
} tile_slot;

typedef struct {
    apr_pool_t *p;
    tile_slot slots[4][400];
    int prefix_violations;
    int emitted;
} tile_store;

static int store_read(void *baton, unsigned level, apr_uint64_t index, unsigned width,
                      unsigned char *out)
{
    tile_store *ts = baton;

    if (level >= 4 || index >= 400 || ts->slots[level][index].width < width) {
        return -1;
    }
    memcpy(out, ts->slots[level][index].data, (apr_size_t)width * H);
    return 0;
}

static int store_emit(void *baton, unsigned level, apr_uint64_t index, unsigned width,
                      const unsigned char *data)
{
    tile_store *ts = baton;
    tile_slot *s;

    if (level >= 4 || index >= 400) {
        return 7;
    }
    s = &ts->slots[level][index];
    if (!s->data) {
        s->data = apr_palloc(ts->p, NOTARY_TILE_WIDTH * H);
    }
    if (width < s->width || memcmp(s->data, data, (apr_size_t)s->width * H) != 0) {
        ts->prefix_violations++;
    }
    memcpy(s->data, data, (apr_size_t)width * H);
    s->width = width;
    ts->emitted++;
    return 0;
}

static void flip(unsigned char *d, unsigned bit)
{
    d[bit / 8] ^= (unsigned char)(1u << (bit % 8));
}

static void test_roots(apr_pool_t *p)
{
    apr_size_t n, bad_stack = 0, bad_src = 0, bad_tiles = 0, bad_prefix = 0;
    unsigned char want[H], got[H];
    notary_merkle_source src, tsrc;
    tile_store *ts = apr_pcalloc(p, sizeof(*ts));
    apr_uint64_t size = 0;
    unsigned batch = 1;

    ts->p = p;
    for (n = 0; n <= MAXN; n++) {
        ref_mth(0, n, want);
        notary_merkle_root_of_leaves(leaves, n, got);
        if (memcmp(got, want, H) && !bad_stack++) diag("one-pass root differs at size %lu", (unsigned long)n);
        notary_merkle_source_leaves(&src, leaves, n);
        if ((notary_merkle_root(&src, n, got) || memcmp(got, want, H)) && !bad_src++)
            diag("root from the leaves source differs at size %lu", (unsigned long)n);
    }
    /* the same sizes reached through tiles, grown in uneven batches */
    while (size < MAXN) {
        apr_size_t add = batch % 7 == 0 ? 97 : batch;
        if (size + add > MAXN) add = MAXN - size;
        if (notary_tiles_append(p, size, store_read, ts, leaves + size * H, add, store_emit, ts) != 0) {
            bad_tiles++;
            diag("tiles_append failed at size %lu + %lu", (unsigned long)size, (unsigned long)add);
            break;
        }
        size += add;
        batch++;
        ref_mth(0, size, want);
        notary_merkle_source_tiles(&tsrc, p, size, store_read, ts);
        if ((notary_merkle_root(&tsrc, size, got) || memcmp(got, want, H)) && !bad_tiles++)
            diag("root from tiles differs at size %lu", (unsigned long)size);
        for (n = 0; n * NOTARY_TILE_WIDTH < size; n++) {
            unsigned w = notary_tile_width(0, n, size);
            unsigned char t[NOTARY_TILE_WIDTH * H];
            notary_merkle_source_leaves(&src, leaves, size);
            if ((notary_merkle_tile(&src, 0, n, w, t) || ts->slots[0][n].width != w
                 || memcmp(t, ts->slots[0][n].data, (apr_size_t)w * H))
                && !bad_prefix++)
                diag("level-0 tile %lu at size %lu is not the definition's", (unsigned long)n,
                     (unsigned long)size);
        }
    }
    is_int(bad_stack, 0, "one-pass root equals the recursive RFC 9162 MTH for every size 0..%d", MAXN);
    is_int(bad_src, 0, "root over the in-memory source equals MTH for every size 0..%d", MAXN);
    is_int(bad_tiles, 0, "root over tiles grown in uneven batches equals MTH at every batch up to %d", MAXN);
    is_int(bad_prefix, 0, "every level-0 tile after every batch is the tlog-tiles definition");
    is_int(ts->prefix_violations, 0, "tiles only ever grew by appending (%d tiles written)", ts->emitted);
    is_int(ts->slots[1][0].width, 1, "a tree of 300 has a level-1 tile of width 1");
}

/* verification with one thing wrong must fail; bits: every bit or one */
static int inclusion_flips(const unsigned char *leaf, apr_uint64_t idx, apr_uint64_t n,
                           unsigned char *proof, apr_size_t count, const unsigned char *root, int all)
{
    unsigned char l[H], r[H];
    apr_size_t i;
    unsigned b, accepted = 0;

    for (i = 0; i < count; i++) {
        for (b = all ? 0 : (unsigned)((idx * 37 + i * 11) % 256); b < 256; b += all ? 1 : 256) {
            flip(proof + i * H, b);
            accepted += notary_merkle_verify_inclusion(leaf, idx, n, proof, count, root);
            flip(proof + i * H, b);
        }
    }
    for (b = all ? 0 : (unsigned)(idx * 13 % 256); b < 256; b += all ? 1 : 256) {
        memcpy(l, leaf, H);
        flip(l, b);
        accepted += notary_merkle_verify_inclusion(l, idx, n, proof, count, root);
        memcpy(r, root, H);
        flip(r, b);
        accepted += notary_merkle_verify_inclusion(leaf, idx, n, proof, count, r);
    }
    if (count > 0) {
        accepted += notary_merkle_verify_inclusion(leaf, idx, n, proof, count - 1, root);
    }
    accepted += notary_merkle_verify_inclusion(leaf, idx, n, proof, count + 1, root);
    if ((idx ^ 1) < n) {
        accepted += notary_merkle_verify_inclusion(leaf, idx ^ 1, n, proof, count, root);
    }
    accepted += notary_merkle_verify_inclusion(leaf, n, n, proof, count, root);
    return (int)accepted;
}

static void test_inclusion(apr_pool_t *p)
{
    apr_uint64_t n, i;
    unsigned long proofs = 0, bad = 0, forged = 0, tile_diff = 0, full = 0;
    notary_merkle_source src, tsrc;
    tile_store *ts = apr_pcalloc(p, sizeof(*ts));
    unsigned char root[H];

    ts->p = p;
    if (notary_tiles_append(p, 0, store_read, ts, leaves, MAXN, store_emit, ts) != 0) {
        ok(0, "tiles for %d leaves", MAXN);
        return;
    }
    for (n = 1; n <= MAXN; n++) {
        apr_pool_t *sub;
        apr_pool_create(&sub, p);
        notary_merkle_source_leaves(&src, leaves, n);
        notary_merkle_source_tiles(&tsrc, sub, MAXN, store_read, ts);
        ref_mth(0, n, root);
        for (i = 0; i < n; i++) {
            unsigned char *proof, *tproof, spare[(NOTARY_MERKLE_MAX_PROOF + 1) * H];
            apr_size_t count, tcount;
            int all = n <= 16 || ((n == 127 || n == 128 || n == 129 || n == 255 || n == 256 || n == 257 || n == 300) && (i < 2 || i + 2 >= n || i == n / 2));

            proofs++;
            if (notary_merkle_prove_inclusion(sub, &src, i, n, &proof, &count) != 0
                || !notary_merkle_verify_inclusion(leaves + i * H, i, n, proof, count, root)) {
                if (!bad++) diag("inclusion of %lu in %lu does not verify", (unsigned long)i, (unsigned long)n);
                continue;
            }
            if (notary_merkle_prove_inclusion(sub, &tsrc, i, n, &tproof, &tcount) != 0
                || tcount != count || memcmp(tproof, proof, count * H)) {
                if (!tile_diff++) diag("proof from tiles differs for %lu in %lu", (unsigned long)i, (unsigned long)n);
            }
            memcpy(spare, proof, count * H);
            memset(spare + count * H, 0x5a, H); /* the extra hash of the too-long proof */
            if (all) full++;
            if (inclusion_flips(leaves + i * H, i, n, spare, count, root, all)) {
                if (!forged++) diag("a tampered inclusion proof of %lu in %lu verified", (unsigned long)i, (unsigned long)n);
            }
        }
        apr_pool_destroy(sub);
    }
    is_int(bad, 0, "all %lu inclusion proofs (every leaf of every tree of 1..%d) verify", proofs, MAXN);
    is_int(tile_diff, 0, "inclusion proofs computed from tiles equal those from the leaves");
    is_int(forged, 0, "no proof verifies with a bit flipped in a proof hash, the leaf or the root, "
                      "a hash dropped or added, another index (%lu proofs with every single bit, the rest one bit per hash)",
           full);
}

static int consistency_flips(apr_uint64_t m, const unsigned char *r1, apr_uint64_t n,
                             const unsigned char *r2, unsigned char *proof, apr_size_t count, int all)
{
    unsigned char a[H], b2[H];
    apr_size_t i;
    unsigned b, accepted = 0;

    for (i = 0; i < count; i++) {
        for (b = all ? 0 : (unsigned)((m * 31 + n + i * 7) % 256); b < 256; b += all ? 1 : 256) {
            flip(proof + i * H, b);
            accepted += notary_merkle_verify_consistency(m, r1, n, r2, proof, count);
            flip(proof + i * H, b);
        }
    }
    for (b = all ? 0 : (unsigned)((m + n) % 256); b < 256; b += all ? 1 : 256) {
        memcpy(a, r1, H);
        flip(a, b);
        accepted += notary_merkle_verify_consistency(m, a, n, r2, proof, count);
        /* the empty tree is a prefix of every tree: its proof binds no new root */
        if (m > 0) {
            memcpy(b2, r2, H);
            flip(b2, b);
            accepted += notary_merkle_verify_consistency(m, r1, n, b2, proof, count);
        }
    }
    if (count > 0) {
        accepted += notary_merkle_verify_consistency(m, r1, n, r2, proof, count - 1);
    }
    accepted += notary_merkle_verify_consistency(m, r1, n, r2, proof, count + 1);
    return (int)accepted;
}

static void test_consistency(apr_pool_t *p)
{
    apr_uint64_t n, m;
    unsigned long proofs = 0, bad = 0, forged = 0, tile_diff = 0, full = 0, swapped = 0;
    notary_merkle_source src, tsrc;
    tile_store *ts = apr_pcalloc(p, sizeof(*ts));
    unsigned char r1[H], r2[H];

    ts->p = p;
    if (notary_tiles_append(p, 0, store_read, ts, leaves, MAXC, store_emit, ts) != 0) {
        ok(0, "tiles for %d leaves", MAXC);
        return;
    }
    for (n = 1; n <= MAXC; n++) {
        apr_pool_t *sub;
        apr_pool_create(&sub, p);
        notary_merkle_source_leaves(&src, leaves, n);
        notary_merkle_source_tiles(&tsrc, sub, MAXC, store_read, ts);
        ref_mth(0, n, r2);
        for (m = 0; m <= n; m++) {
            unsigned char *proof, *tproof, spare[(NOTARY_MERKLE_MAX_PROOF + 1) * H];
            apr_size_t count, tcount;
            int all = n <= 20;

            proofs++;
            ref_mth(0, m, r1);
            if (notary_merkle_prove_consistency(sub, &src, m, n, &proof, &count) != 0
                || !notary_merkle_verify_consistency(m, r1, n, r2, proof, count)) {
                if (!bad++) diag("consistency %lu -> %lu does not verify", (unsigned long)m, (unsigned long)n);
                continue;
            }
            if (notary_merkle_prove_consistency(sub, &tsrc, m, n, &tproof, &tcount) != 0
                || tcount != count || memcmp(tproof, proof, count * H)) {
                if (!tile_diff++) diag("consistency from tiles differs for %lu -> %lu", (unsigned long)m, (unsigned long)n);
            }
            if (m > 0 && m < n && notary_merkle_verify_consistency(m, r2, n, r1, proof, count)) {
                if (!swapped++) diag("consistency %lu -> %lu verified with the roots swapped", (unsigned long)m, (unsigned long)n);
            }
            memcpy(spare, proof, count * H);
            memset(spare + count * H, 0xa5, H);
            if (all) full++;
            if (consistency_flips(m, r1, n, r2, spare, count, all)) {
                if (!forged++) diag("a tampered consistency proof %lu -> %lu verified", (unsigned long)m, (unsigned long)n);
            }
        }
        apr_pool_destroy(sub);
    }
    is_int(bad, 0, "all %lu consistency proofs (every 0 <= m <= n <= %d) verify", proofs, MAXC);
    is_int(tile_diff, 0, "consistency proofs from tiles equal those from the leaves");
    is_int(swapped, 0, "no consistency proof verifies with old and new roots swapped");
    is_int(forged, 0, "no consistency proof verifies with a bit flipped in a proof hash or either root, "
                      "a hash dropped or added (%lu proofs with every single bit, the rest one bit per hash; "
                      "a new root is not bound from an empty old tree)",
           full);
}

static void test_paths(apr_pool_t *p)
{
    int level;
    apr_uint64_t index;
    unsigned width;
    static const char *const bad[] = {
        "tile/0/x000/005", "tile/0/5", "tile/0/0005", "tile/00/005", "tile/64/000",
        "tile/0/005.p/0", "tile/0/005.p/256", "tile/0/005.p/05", "tile/0/x1/005",
        "tile/0/001/234", "tile/0/x001/x234/067.p/", "tile/data/000", "tiles/0/000",
        "tile/0/000.p/5/", "tile/-1/000", "tile/0/x001/x234/06a", "tile/0/", NULL
    };
    int i, rejected = 0;

    is_str(notary_tile_path(p, 0, 1234067, 256), "tile/0/x001/x234/067", "index 1234067 as in tlog-tiles");
    is_str(notary_tile_path(p, 1, 5, 17), "tile/1/005.p/17", "a partial level-1 tile");
    is_str(notary_tile_path(p, NOTARY_TILE_ENTRIES, 1000, 3), "tile/entries/x001/000.p/3", "an entry bundle");
    is_str(notary_tile_path(p, 2, 0, 0), "tile/2/000", "width 0 is a full tile");
    ok(notary_tile_path_parse("tile/0/x001/x234/067.p/5", &level, &index, &width) == 0
           && level == 0 && index == 1234067 && width == 5,
       "parse a partial tile path");
    ok(notary_tile_path_parse("tile/entries/999", &level, &index, &width) == 0
           && level == NOTARY_TILE_ENTRIES && index == 999 && width == 256,
       "parse an entry bundle path");
    for (i = 0; bad[i]; i++) {
        if (notary_tile_path_parse(bad[i], &level, &index, &width) == 0)
            diag("accepted %s", bad[i]);
        else
            rejected++;
    }
    is_int(rejected, i, "every non-canonical or malformed tile path is refused");
    /* the example of tlog-tiles: a tree of 70,000 */
    is_int(notary_tile_width(0, 272, 70000), 256, "70000: level-0 tile 272 is full");
    is_int(notary_tile_width(0, 273, 70000), 112, "70000: level-0 tile 273 has width 112");
    is_int(notary_tile_width(0, 274, 70000), 0, "70000: no level-0 tile 274");
    is_int(notary_tile_width(1, 0, 70000), 256, "70000: level-1 tile 0 is full");
    is_int(notary_tile_width(1, 1, 70000), 17, "70000: level-1 tile 1 has width 17");
    is_int(notary_tile_width(2, 0, 70000), 1, "70000: level-2 tile 0 has width 1");
    is_int(notary_tile_width(1, 0, 256), 1, "256: a partial level-1 tile of width 1");
    is_int(notary_tile_width(0, 0, 0), 0, "an empty tree has no tiles");
}

static void test_big(apr_pool_t *p)
{
    tile_store *ts = apr_pcalloc(p, sizeof(*ts));
    apr_uint64_t size = 0, n;
    notary_merkle_source src, tsrc;
    unsigned char want[H], got[H], t[NOTARY_TILE_WIDTH * H];
    int bad = 0, k;
    static const apr_uint64_t at[] = { 0, 255, 256, 65535, 65536, 69999 };

    ts->p = p;
    make_leaves(70000);
    while (size < 70000) {
        apr_size_t add = size < 60000 ? 4999 : 1001;
        if (size + add > 70000) add = 70000 - size;
        if (notary_tiles_append(p, size, store_read, ts, leaves + size * H, add, store_emit, ts) != 0) {
            ok(0, "tiles_append at %lu", (unsigned long)size);
            return;
        }
        size += add;
    }
    is_int(ts->slots[0][273].width, 112, "70000 appended: level-0 tile 273 has width 112");
    is_int(ts->slots[1][1].width, 17, "70000 appended: level-1 tile 1 has width 17");
    is_int(ts->slots[2][0].width, 1, "70000 appended: level-2 tile 0 has width 1");
    is_int(ts->prefix_violations, 0, "70000 appended: tiles only grew by appending");
    notary_merkle_source_leaves(&src, leaves, 70000);
    notary_merkle_source_tiles(&tsrc, p, 70000, store_read, ts);
    ok(notary_merkle_tile(&src, 1, 1, 17, t) == 0 && memcmp(t, ts->slots[1][1].data, 17 * H) == 0,
       "level-1 tile 1 holds the MTH of each full level-0 tile");
    ok(notary_merkle_tile(&src, 2, 0, 1, t) == 0 && memcmp(t, ts->slots[2][0].data, H) == 0,
       "level-2 tile 0 holds MTH(D[0:65536])");
    notary_merkle_root_of_leaves(leaves, 70000, want);
    ok(notary_merkle_root(&tsrc, 70000, got) == 0 && memcmp(got, want, H) == 0, "root of 70000 from tiles");
    for (k = 0; k < 6; k++) {
        unsigned char *a, *b;
        apr_size_t ca, cb;
        n = at[k];
        if (notary_merkle_prove_inclusion(p, &tsrc, n, 70000, &a, &ca) != 0
            || notary_merkle_prove_inclusion(p, &src, n, 70000, &b, &cb) != 0 || ca != cb
            || memcmp(a, b, ca * H) || !notary_merkle_verify_inclusion(leaves + n * H, n, 70000, a, ca, want))
            bad++;
        if (n > 0) {
            unsigned char old[H];
            notary_merkle_root_of_leaves(leaves, n, old);
            if (notary_merkle_prove_consistency(p, &tsrc, n, 70000, &a, &ca) != 0
                || !notary_merkle_verify_consistency(n, old, 70000, want, a, ca))
                bad++;
        }
    }
    is_int(bad, 0, "proofs at tile edges of a 70000 tree (levels 0-2) from tiles verify and equal the direct ones");
    {
        unsigned char *x;
        apr_size_t c;
        ok(notary_merkle_prove_inclusion(p, &tsrc, 70000, 70000, &x, &c) != 0,
           "no inclusion proof for an index beyond the tree");
    }
}

int main(void)
{
    apr_pool_t *p;

    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        printf("Bail out! apr\n");
        return 1;
    }
    make_leaves(MAXN);
    test_roots(p);
    test_inclusion(p);
    test_consistency(p);
    test_paths(p);
    test_big(p);
    apr_pool_destroy(p);
    apr_terminate();
    return tap_done();
}
