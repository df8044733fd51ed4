/* The log's Merkle tree: RFC 9162 section 2.1 (SHA-256), and its storage as
 * C2SP tlog-tiles. No httpd; no state between calls; thread-safe.
 *
 * Every proof and root is computed over a "source": something that answers
 * MTH of a complete subtree (2^level leaves, aligned). One source reads an
 * array of leaf hashes in memory (tests, notary-verify audit), another reads
 * tiles (the log integrator, the receipt endpoint, notary-verify --tiles).
 * The proof algorithms are the recursive definitions of RFC 9162 2.1.3.1 and
 * 2.1.4.1 over that source; verification is RFC 9162 2.1.3.2 and 2.1.4.2. */
#ifndef NOTARY_MERKLE_H
#define NOTARY_MERKLE_H

#include <apr_pools.h>

#define NOTARY_HASH_LEN 32
#define NOTARY_TILE_WIDTH 256      /* hashes in a full tile */
#define NOTARY_TILE_HEIGHT 8       /* log2(NOTARY_TILE_WIDTH) */
#define NOTARY_MERKLE_MAX_PROOF 64 /* hashes; a tree has fewer than 2^63 leaves */
#define NOTARY_MERKLE_MAX_SIZE ((apr_uint64_t)1 << 62)
#define NOTARY_TILE_ENTRIES (-1) /* "level" of the entry bundles in a path */

/* Answers MTH(D[index * 2^level : (index + 1) * 2^level]) into out; returns
 * 0, or -1 if that subtree is not available (beyond the size, a tile that
 * cannot be read or is malformed). */
typedef int (*notary_merkle_get_fn)(void *baton, unsigned level, apr_uint64_t index,
                                    unsigned char out[NOTARY_HASH_LEN]);

typedef struct notary_merkle_source {
    apr_uint64_t size; /* leaves the source knows: proofs up to this size */
    notary_merkle_get_fn get;
    void *baton;
    const unsigned char *leaves; /* private, of notary_merkle_source_leaves */
} notary_merkle_source;

/* Reads one tile of the C2SP tlog-tiles layout: `width` hashes (1..256) of
 * tile `index` at tile level `level` into out (width * 32 bytes). A reader
 * may answer from the full tile when asked for a partial one (its prefix is
 * the partial tile). Returns 0, or -1 if the tile is not available. */
typedef int (*notary_tile_read_fn)(void *baton, unsigned level, apr_uint64_t index,
                                   unsigned width, unsigned char *out);

/* Receives one new or grown tile (width hashes, width * 32 bytes). Returns 0
 * to go on, anything else to stop with that value. */
typedef int (*notary_tile_emit_fn)(void *baton, unsigned level, apr_uint64_t index,
                                   unsigned width, const unsigned char *data);

/* RFC 9162 2.1.1: SHA-256(0x00 || d) and SHA-256(0x01 || l || r). */
void notary_merkle_leaf_hash(const void *d, apr_size_t len, unsigned char out[NOTARY_HASH_LEN]);
void notary_merkle_node_hash(const unsigned char l[NOTARY_HASH_LEN],
                             const unsigned char r[NOTARY_HASH_LEN],
                             unsigned char out[NOTARY_HASH_LEN]);
/* MTH({}) = SHA-256(""). */
void notary_merkle_empty_root(unsigned char out[NOTARY_HASH_LEN]);

/* A source over n leaf hashes in memory (the array must outlive it).
 * Costs O(2^level) per answer: fine for proofs and audits, which ask each
 * level once. */
void notary_merkle_source_leaves(notary_merkle_source *src, const unsigned char *leaves,
                                 apr_uint64_t n);

/* A source over the tiles of a tree of `size` leaves, read with `read`.
 * Keeps the last tile read in a buffer from p (one reader per thread). */
void notary_merkle_source_tiles(notary_merkle_source *src, apr_pool_t *p, apr_uint64_t size,
                                notary_tile_read_fn read, void *read_baton);

/* Root of the first `size` leaves (size <= src->size). 0 or -1. */
int notary_merkle_root(const notary_merkle_source *src, apr_uint64_t size,
                       unsigned char out[NOTARY_HASH_LEN]);

/* Root of n leaf hashes in memory, in one pass with a stack of log2(n)
 * hashes (what an integrator keeps of the tree's right edge). */
void notary_merkle_root_of_leaves(const unsigned char *leaves, apr_uint64_t n,
                                  unsigned char out[NOTARY_HASH_LEN]);

/* Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162
 * 2.1.3.1), from the leaf's sibling up: *count hashes of 32 bytes in
 * *proof (from p). 0, or -1 (index >= size, size > src->size, a source
 * error). */
int notary_merkle_prove_inclusion(apr_pool_t *p, const notary_merkle_source *src,
                                  apr_uint64_t index, apr_uint64_t size,
                                  unsigned char **proof, apr_size_t *count);

/* Consistency proof from the tree of `old_size` to the tree of `new_size`
 * (RFC 9162 2.1.4.1); empty when old_size is 0 or equal to new_size. */
int notary_merkle_prove_consistency(apr_pool_t *p, const notary_merkle_source *src,
                                    apr_uint64_t old_size, apr_uint64_t new_size,
                                    unsigned char **proof, apr_size_t *count);

/* RFC 9162 2.1.3.2. 1 if the proof shows leaf_hash at index in the tree of
 * size with that root, else 0. */
int notary_merkle_verify_inclusion(const unsigned char leaf_hash[NOTARY_HASH_LEN],
                                   apr_uint64_t index, apr_uint64_t size,
                                   const unsigned char *proof, apr_size_t count,
                                   const unsigned char root[NOTARY_HASH_LEN]);

/* RFC 9162 2.1.4.2, extended to the cases it leaves out: old_size ==
 * new_size (proof empty, roots equal) and old_size == 0 (proof empty, old
 * root the empty root). 1 if consistent, else 0. */
int notary_merkle_verify_consistency(apr_uint64_t old_size, const unsigned char old_root[NOTARY_HASH_LEN],
                                     apr_uint64_t new_size, const unsigned char new_root[NOTARY_HASH_LEN],
                                     const unsigned char *proof, apr_size_t count);

/* C2SP tlog-tiles path of a tile, without the prefix: "tile/L/N[.p/W]", or
 * "tile/entries/N[.p/W]" for level NOTARY_TILE_ENTRIES; width 256 (or 0)
 * means a full tile. NULL for a level outside -1..63 or a width > 256. */
const char *notary_tile_path(apr_pool_t *p, int level, apr_uint64_t index, unsigned width);

/* Parse such a path (prefix already removed), strictly: only the one
 * canonical spelling of each tile is accepted. *width is 256 for a full
 * tile. 0, or -1. */
int notary_tile_path_parse(const char *path, int *level, apr_uint64_t *index, unsigned *width);

/* Width of tile `index` at `level` in a tree of `size` leaves: 256 for a
 * full tile, 1..255 for the partial one, 0 if the tree has no such tile. */
unsigned notary_tile_width(unsigned level, apr_uint64_t index, apr_uint64_t size);

/* The contents of tile (level, index) of width `width`, from a source
 * (width * 32 bytes into out). 0 or -1. */
int notary_merkle_tile(const notary_merkle_source *src, unsigned level, apr_uint64_t index,
                       unsigned width, unsigned char *out);

/* Append `count` leaf hashes to a tree of `old_size` leaves whose tiles
 * `read` answers: calls `emit` for every tile that is new or grew, level
 * by level from 0, each with its full contents for the new size. Reads only
 * the old tree's partial tiles. Returns 0, -1 (a read failed or sizes out of
 * range), or what emit returned when it stopped. */
int notary_tiles_append(apr_pool_t *p, apr_uint64_t old_size,
                        notary_tile_read_fn read, void *read_baton,
                        const unsigned char *leaves, apr_size_t count,
                        notary_tile_emit_fn emit, void *emit_baton);

#endif /* NOTARY_MERKLE_H */
