/* notary_tsa: RFC 3161 time-stamps of the log's checkpoints
 * (NotaryLogTimestamp). A checkpoint is stamped over SHA-256 of its signed
 * note, byte for byte as stored and served; the TimeStampToken (DER
 * ContentInfo) is kept in notary.log_timestamps and carried in the extra of
 * every receipt made against that checkpoint (docs/evidence.md).
 *
 * OpenSSL's TS API builds and checks the messages; libcurl carries them
 * (RFC 3161 section 3.4, application/timestamp-query over HTTP). No httpd:
 * the module's integrator and notary-verify share it. */
#ifndef NOTARY_TSA_H
#define NOTARY_TSA_H

#include <apr_pools.h>
#include <apr_time.h>

/* Largest reply read from a TSA: a token with a certificate chain is a few
 * KiB; anything far larger is not a time-stamp reply. */
#define NOTARY_TSA_REPLY_MAX (256 * 1024)

/* cafile holds at least one certificate OpenSSL can load (start-up). 0, or
 * -1 with *err. */
int notary_tsa_check_cafile(apr_pool_t *p, const char *cafile, const char **err);

/* A TimeStampReq (DER) for the SHA-256 `digest`: version 1, a random 64-bit
 * nonce, certReq true (the TSA's certificate goes into the token, so a
 * verifier needs only the CA). *query from p. 0, or -1 with *err. */
int notary_tsa_query(apr_pool_t *p, const unsigned char digest[32], unsigned char **query,
                     apr_size_t *query_len, const char **err);

/* The TSA's reply to `query`: status granted, a token over the query's
 * digest (SHA-256) with its nonce, signed by a time-stamping certificate
 * that chains to a certificate in `cafile`. On success *token (from p) is
 * the TimeStampToken, DER. 0, or -1 with *err. */
int notary_tsa_reply_token(apr_pool_t *p, const unsigned char *query, apr_size_t query_len,
                           const unsigned char *reply, apr_size_t reply_len, const char *cafile,
                           unsigned char **token, apr_size_t *token_len, const char **err);

/* A kept token: a TimeStampToken over SHA-256 `digest`, signed by a
 * time-stamping certificate that chains to `cafile` (checked at the current
 * time). *gen_time (may be NULL): the TSA's genTime. 0, or -1 with *err. */
int notary_tsa_token_verify(apr_pool_t *p, const unsigned char *token, apr_size_t token_len,
                            const unsigned char digest[32], const char *cafile,
                            apr_time_t *gen_time, const char **err);

/* POST `query` to `url` (http or https only) as application/timestamp-query
 * and read the reply body, bounded by `timeout` and NOTARY_TSA_REPLY_MAX.
 * A status other than 200 is an error. *reply from p. 0, or -1 with *err. */
int notary_tsa_fetch(apr_pool_t *p, const char *url, const unsigned char *query,
                     apr_size_t query_len, apr_interval_time_t timeout, unsigned char **reply,
                     apr_size_t *reply_len, const char **err);

#endif /* NOTARY_TSA_H */
