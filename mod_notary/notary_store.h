/* notary_store: the record writer (libpq), one store per httpd child.
 *
 * No httpd here: APR, libpq and OpenSSL's SHA-256 only. The store keeps a
 * pool of connections (apr_reslist) shared by the child's threads; each
 * connection is opened lazily on first use and has its statements prepared
 * once (the n-row INSERT when a batch of n first needs it). Credentials come from libpq itself: a password in the
 * conninfo, ~/.pgpass or PGPASSFILE (passfile=...), a service file entry
 * (service=... / PGSERVICE), client certificates (sslcert/sslkey) -- the
 * store passes the conninfo through unchanged.
 *
 * Each row also names its admission token (notary_record.token) by
 * SHA-256; the token goes into notary.admissions once, in the pipeline
 * of the row's keys (sql/0003_evidence.sql), so no extra round trip.
 *
 * Each row gets a random salt and its leaf hash (notary_leaf.h, computed
 * from the row exactly as stored) for the log of sql/0003_evidence.sql.
 *
 * Rows go straight into the tables of sql/0002_writer_path.sql: each
 * connection registers a key in notary.keys once (in the transaction of
 * the first row naming it; before a COPY, in its own), rows go into notary.records by key digest,
 * concurrent ones several per transaction (see notary_store_insert), and a
 * body kept in a file with COPY notary.records FROM STDIN (FORMAT binary),
 * streamed in 64 KiB pieces. The database role needs only column INSERT on
 * those tables and EXECUTE on notary.record_committed() (sql/).
 */
#ifndef NOTARY_STORE_H
#define NOTARY_STORE_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_file_io.h>

typedef struct notary_store notary_store;

typedef struct notary_record {
    apr_time_t recorded_at; /* when relayed */
    const char *direction;  /* "request" | "response" */
    const char *merchant;
    const unsigned char *sender_key;
    apr_size_t sender_key_len; /* DER SPKI */
    const unsigned char *receiver_key;
    apr_size_t receiver_key_len;
    /* their SHA-256 (32 bytes each) when the caller has them already;
     * NULL: the store computes them */
    const unsigned char *sender_key_sha256, *receiver_key_sha256;
    const char *rule, *method, *uri;
    int status;               /* 0 = NULL (requests) */
    const char *content_type; /* may be NULL */
    const char *headers;
    apr_size_t headers_len; /* exact bytes */
    const char *body;
    apr_size_t body_len;              /* whole body in memory, */
    apr_file_t *body_file;            /* or body_len bytes of this file, from
                                        * its start (body NULL): streamed with
                                        * COPY, never held whole in memory */
    const unsigned char *body_sha256; /* 32 bytes from the caller; for a
                                        * body_file it may be NULL: the store
                                        * hashes the bytes as it sends them */
    const char *exchange_id;          /* (exchange_id, direction) is unique */
    /* the admission token that let the consumer in, its bytes as received
     * (NULL: none): the row names it by SHA-256 and its leaf commits to it;
     * the token itself is kept once in notary.admissions, sent in the same
     * transaction as the row (or, for a COPY, with its keys) */
    const char *token;
    apr_size_t token_len;
    const char *token_jti; /* may be NULL */
    apr_int64_t token_exp; /* NumericDate, seconds */
    int announced;         /* counted by notary_store_expect(+1):
                                        * the insert takes it off the count */
    /* out: when not NULL, NOTARY_LEAF_LEN (234) bytes (notary_leaf.h) that
     * get the leaf entry of the committed row -- the one its leaf_hash is
     * of, the salt included -- when the insert returns APR_SUCCESS (what a
     * promise signs); untouched otherwise */
    unsigned char *leaf_entry;
} notary_record;

/* Create the store: a pool of min..smax (soft) ..hmax (hard) connections,
 * idle ones closed after ttl (0: never), connected lazily. `timeout` bounds
 * each insert from its call on: the time queued behind other commits, the
 * wait for a free pooled connection, connecting (polled against the
 * deadline) and the wait for the result, a retry included. The server
 * gives up first, at 90 % of the time left, on each statement and on the
 * whole transaction, so a refused record is known not to be written
 * (how: the 90 % rule in notary_store_int.h). Only a commit under way
 * whose answer is lost or late leaves the outcome open (and a retry's
 * failure after a connection broke mid-commit: said so in *err).
 * Registers its cleanup (closing every connection) on p. Nothing is
 * connected here, so a database that is down does not fail the start. */
apr_status_t notary_store_create(notary_store **st, apr_pool_t *p, const char *conninfo,
                                 int min, int smax, int hmax, apr_interval_time_t ttl,
                                 apr_interval_time_t timeout);

/* Where the store's own log lines go (hosts of NotaryDatabase skipped for
 * not answering, the server's notices): a level (NOTARY_STORE_APLOG_*, httpd's APLOG_* values)
 * and the line, its NOTARYnnnnn number first. Called from any thread. */
typedef void notary_store_log_fn(void *ctx, int level, const char *msg);
#define NOTARY_STORE_APLOG_WARNING 4 /* APLOG_WARNING, without httpd's headers */
#define NOTARY_STORE_APLOG_INFO 6    /* APLOG_INFO */
void notary_store_set_log(notary_store *st, notary_store_log_fn *fn, void *ctx);

/* Records on their way: +1 when a message has matched and its record
 * will follow (notary_record.announced set then); -1 when it will not
 * after all (too large, aborted). While records are on their way, the
 * thread about to commit waits for those already underway -- at most
 * STORE_GATHER_WAIT, never when none is -- so that they commit together:
 * one transaction and one statement for many rows, which is what
 * PostgreSQL's CPU per row depends on. A lone record never waits. */
void notary_store_expect(notary_store *st, int delta);
/* That wait's bound (default STORE_GATHER_WAIT, 1 ms; 0: never wait). */
void notary_store_gather_wait(notary_store *st, apr_interval_time_t wait);

/* Insert one record and commit it. Returns APR_SUCCESS only when the row is
 * committed (or an identical row for the same exchange and direction
 * already was, see below); otherwise an error and *err (from errpool) with
 * the reason, including libpq's message and the SQLSTATE:
 *   APR_EINVAL      the record is incomplete (nothing sent)
 *   APR_EGENERAL    the database refused the row (constraint, permission)
 *   APR_ECONNREFUSED could not connect
 *   APR_ECONNABORTED the connection broke and the retry did not help
 *   APR_TIMEUP      no commit within the timeout: never sent (still
 *                   queued; *err says "not sent"), cancelled by the server
 *                   (statement_timeout), rolled back for want of time
 *                   ("known not written"), or sent without an answer in
 *                   time (written only if its commit was under way)
 *   other           from apr_reslist (no free connection within the timeout)
 *
 * Retry: a pooled connection whose server went away (restart, idle
 * timeout) is noticed before use -- the socket is readable while idle --
 * and replaced without sending anything. If a connection breaks while the
 * INSERT is being sent or awaited, it is discarded and the INSERT is sent
 * once more on a fresh connection. That is safe even when the first one
 * did commit (its answer lost): (exchange_id, direction) is unique, and
 * when the table refuses the second row the store asks the database
 * (notary.record_committed) whether the committed row is this very
 * message -- then it reports success, otherwise the refusal. So a retry
 * never makes two rows. No retry after a timeout or an error answered by
 * the server. A failed batch of concurrent rows is retried one by one the
 * same way.
 *
 * Thread-safe; the store must not be used across fork(). */
apr_status_t notary_store_insert(notary_store *st, const notary_record *rec,
                                 apr_pool_t *errpool, const char **err);

#endif /* NOTARY_STORE_H */
