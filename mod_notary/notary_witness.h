/* notary_witness: C2SP tlog-witness cosigning of the log's checkpoints
 * (NotaryLogWitness). A witness keeps the latest checkpoint of the log it
 * verified; given a newer one and a consistency proof from its size, it
 * answers a cosignature (C2SP tlog-cosignature, Ed25519 "cosignature/v1",
 * signature type 0x04): a statement, at its time, that this tree head is
 * consistent with every one it saw. A checkpoint cosigned by witnesses
 * cannot be forked without them (docs/evidence.md).
 *
 * The add-checkpoint body, the cosignature's signed message and its
 * verification, the 409 body, and the HTTP POST (libcurl). No httpd: the
 * module's integrator and notary-verify share it. */
#ifndef NOTARY_WITNESS_H
#define NOTARY_WITNESS_H

#include <apr_pools.h>
#include <apr_time.h>

#include "notary_note.h"

#define NOTARY_WITNESS_SIG_TYPE 0x04          /* signed-note type: Ed25519 cosignature/v1 */
#define NOTARY_WITNESS_MAX_PROOF 63           /* lines the spec lets a client send */
#define NOTARY_WITNESS_REPLY_MAX 65536        /* a few signature lines; anything larger is not */
#define NOTARY_WITNESS_TIME_MAX APR_INT64_MAX /* 2^63 - 1 */

/* A witness's verifier key: name+hex(id)+base64(0x04 || Ed25519 public key). */
typedef struct notary_witness_key {
    const char *name;
    apr_uint32_t id; /* SHA-256(name || 0x0A || 0x04 || pub)[:4] */
    unsigned char pub[32];
    const char *vkey; /* as parsed (canonical: it is checked to be so) */
    int has_private;  /* tests only: a cosigner */
    unsigned char seed[32];
} notary_witness_key;

/* One verified cosignature line. */
typedef struct notary_cosig {
    apr_uint64_t time; /* POSIX seconds, 1 .. 2^63-1 */
    const char *line;  /* "— name base64\n", NUL-terminated */
    apr_size_t line_len;
} notary_cosig;

apr_uint32_t notary_witness_key_id(const char *name, const unsigned char pub[32]);

/* Parse a vkey of type 0x04 (the key ID must match). NULL with *detail. */
notary_witness_key *notary_witness_vkey_parse(apr_pool_t *p, const char *vkey,
                                              const char **detail);

/* A cosigner from a 32-byte seed (tests, and a test witness). */
notary_witness_key *notary_witness_key_from_seed(apr_pool_t *p, const char *name,
                                                 const unsigned char seed[32], const char **detail);

/* "cosignature/v1\ntime T\n" || text: what a cosignature signs. text is the
 * checkpoint's note text (ending in "\n", no signatures). */
char *notary_witness_message(apr_pool_t *p, apr_uint64_t time, const char *text,
                             apr_size_t text_len, apr_size_t *len);

/* A cosignature line over text at time by a key with has_private. 0/-1. */
int notary_witness_cosign(apr_pool_t *p, const notary_witness_key *k, apr_uint64_t time,
                          const char *text, apr_size_t text_len, char **line, apr_size_t *len,
                          const char **detail);

/* Check one signature (key ID and 72 bytes after it, as on a note's
 * signature line) by k over text: the ID is k's, the time 1..2^63-1, the
 * Ed25519 signature holds. 0 with *time, -1 with *detail. */
int notary_witness_sig_verify(apr_pool_t *p, const notary_witness_key *k, const char *text,
                              apr_size_t text_len, const unsigned char *raw, apr_size_t raw_len,
                              apr_uint64_t *time, const char **detail);

/* The add-checkpoint request body: "old N\n", the proof's hashes in base64
 * one a line (at most 63), "\n", then the signed checkpoint. 0/-1. */
int notary_witness_request(apr_pool_t *p, apr_uint64_t old_size, const unsigned char *proof,
                           apr_size_t count, const char *checkpoint, apr_size_t checkpoint_len,
                           char **out, apr_size_t *len, const char **detail);

/* A 200 response: note signature lines. Lines of other keys are ignored
 * (the spec says so); the one of k must be there and verify over the
 * checkpoint's text; a second line of k is refused. 0 with *cs, -1. */
int notary_witness_response(apr_pool_t *p, const notary_witness_key *k, const char *text,
                            apr_size_t text_len, const char *resp, apr_size_t resp_len,
                            notary_cosig *cs, const char **detail);

/* A 409 body: the witness's tree size in decimal without leading zeros and
 * a newline, nothing else. 0 with *size, -1. */
int notary_witness_conflict_parse(const char *body, apr_size_t len, apr_uint64_t *size,
                                  const char **detail);

/* A cosigned checkpoint (notary-verify --witness): the note verifies with
 * log_keys as a checkpoint, and carries a valid cosignature of each of
 * wks (a bad one of a named witness fails too). 0, -1 with *detail. */
int notary_witness_check_checkpoint(apr_pool_t *p, const char *msg, apr_size_t len,
                                    const notary_note_key *const *log_keys, int nlog,
                                    const notary_witness_key *const *wks, int nwk,
                                    const char **detail);

/* POST body to url + "/add-checkpoint" (http or https), bounded by
 * timeout and NOTARY_WITNESS_REPLY_MAX. 0 with *status and *resp (from p,
 * NUL-terminated), *ctype (the Content-Type, or ""); -1 with *err when no
 * answer came. */
int notary_witness_post(apr_pool_t *p, const char *url, const char *body, apr_size_t len,
                        apr_interval_time_t timeout, long *status, char **resp,
                        apr_size_t *resp_len, const char **ctype, const char **err);

#endif /* NOTARY_WITNESS_H */
