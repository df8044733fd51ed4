/* notary_store_int.h: what the store's layers share; not for callers
 * (they use notary_store.h).
 *
 * The store in layers, each calling only the ones below it:
 *   notary_store.c       the queue and group commit (notary_store.h's API)
 *   notary_store_io.c    libpq I/O bound by a deadline: send, wait, read
 */
#ifndef NOTARY_STORE_INT_H
#define NOTARY_STORE_INT_H

#include <apr_pools.h>
#include <apr_time.h>

#include <libpq-fe.h>

#include "notary_store.h"

/* How one exchange with the server ended. */
typedef enum {
    STEP_OK,
    STEP_SERVER_ERROR,     /* the server answered with an error; conn usable */
    STEP_CONN_LOST,        /* the connection broke */
    STEP_TIMEOUT,          /* no answer in time; conn state unknown */
    STEP_LATE              /* rolled back for want of time (the guard, or
                            * a COPY not committed); conn usable */
} step_t;

/* ---- notary_store_io.c ---- */

/* libpq's message on one line, from p. */
const char *notary_store_pq_msg(apr_pool_t *p, const char *m);
/* An error result's primary message and SQLSTATE only: DETAIL would echo
 * the failing row, i.e. parts of the body and keys, into the error log. */
const char *notary_store_result_msg(apr_pool_t *p, const PGresult *res);
/* Wait until the socket is ready: 1 ready (*readable set), 0 deadline
 * passed, -1 error. */
int notary_store_wait_socket(PGconn *conn, int want_write, apr_time_t deadline,
                             int *readable);
/* Flush what libpq holds for the server. */
step_t notary_store_flush_out(PGconn *conn, apr_time_t deadline);
/* Read until libpq has a whole result to give. */
step_t notary_store_await_input(PGconn *conn, apr_time_t deadline);
/* After PQsend*: flush, then collect the result. *res gets the first
 * result (caller clears it). */
step_t notary_store_finish_command(PGconn *conn, apr_time_t deadline, PGresult **res);
/* statement_timeout, and the guard's bound, for a transaction with `left`
 * to go: the server gives up a little before we do, so a statement it
 * cancels has a known outcome (rolled back); one we abandon does not */
long notary_store_server_ms(apr_interval_time_t left);

#endif /* NOTARY_STORE_INT_H */
