/* notary_store_io: libpq I/O bound by a deadline -- flushing what is sent,
 * waiting on the socket, reading results -- and libpq's messages made fit
 * for one log line. Knows a connection only as a PGconn: no pool, no
 * queue; of our statements only what a pipeline's plan says each of its
 * results answers. Layers: notary_store_int.h.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include <apr_strings.h>

#include "notary_store_int.h"

const char *notary_store_pq_msg(apr_pool_t *p, const char *m)
{
    char *s = apr_pstrdup(p, (m && *m) ? m : "unknown libpq error");
    apr_size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) {
        s[--n] = '\0';
    }
    /* libpq messages may span lines; one log line reads better */
    for (char *c = s; *c; c++) {
        if (*c == '\n') {
            *c = ' ';
        }
    }
    return s;
}

const char *notary_store_result_msg(apr_pool_t *p, const PGresult *res)
{
    const char *prim = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

    if (!prim) {
        return notary_store_pq_msg(p, PQresultErrorMessage(res));
    }
    return apr_psprintf(p, "%s (SQLSTATE %s%s%s)", notary_store_pq_msg(p, prim),
                        state ? state : "?", cons ? ", constraint " : "", cons ? cons : "");
}

int notary_store_wait_socket(PGconn *conn, int want_write, apr_time_t deadline,
                             int *readable)
{
    struct pollfd pfd;
    int n;

    *readable = 0;
    pfd.fd = PQsocket(conn);
    if (pfd.fd < 0) {
        return -1;
    }
    for (;;) {
        apr_interval_time_t left = deadline - apr_time_now();
        int ms;
        if (left <= 0) {
            return 0;
        }
        ms = (int)((left + 999) / 1000);
        pfd.events = POLLIN | (want_write ? POLLOUT : 0);
        pfd.revents = 0;
        n = poll(&pfd, 1, ms);
        if (n > 0) {
            *readable = (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
            return 1;
        }
        if (n == 0) {
            continue; /* loop re-checks the deadline */
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

step_t notary_store_flush_out(PGconn *conn, apr_time_t deadline)
{
    int f, w, readable;

    while ((f = PQflush(conn)) == 1) {
        w = notary_store_wait_socket(conn, 1, deadline, &readable);
        if (w == 0) {
            return STEP_TIMEOUT;
        }
        if (w < 0 || (readable && !PQconsumeInput(conn))) {
            return STEP_CONN_LOST;
        }
    }
    return f < 0 ? STEP_CONN_LOST : STEP_OK;
}

step_t notary_store_await_input(PGconn *conn, apr_time_t deadline)
{
    int w, readable;

    while (PQisBusy(conn)) {
        w = notary_store_wait_socket(conn, 0, deadline, &readable);
        if (w == 0) {
            return STEP_TIMEOUT;
        }
        if (w < 0 || !PQconsumeInput(conn)) {
            return STEP_CONN_LOST;
        }
    }
    return STEP_OK;
}

step_t notary_store_finish_command(PGconn *conn, apr_time_t deadline, PGresult **res)
{
    PGresult *r;
    step_t step;

    *res = NULL;
    if ((step = notary_store_flush_out(conn, deadline)) != STEP_OK) {
        return step;
    }
    for (;;) {
        if ((step = notary_store_await_input(conn, deadline)) != STEP_OK) {
            return step;
        }
        r = PQgetResult(conn);
        if (!r) {
            break;
        }
        if (!*res) {
            *res = r;
        }
        else {
            PQclear(r);
        }
    }
    if (!*res || PQstatus(conn) == CONNECTION_BAD) {
        return STEP_CONN_LOST;
    }
    switch (PQresultStatus(*res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
        return STEP_OK;
    default:
        return STEP_SERVER_ERROR;
    }
}

long notary_store_server_ms(apr_interval_time_t left)
{
    long ms = (long)apr_time_as_msec(left) * 9 / 10;
    return ms > 0 ? ms : 1;
}

step_t notary_store_read_plan(PGconn *conn, store_plan *plan, apr_time_t deadline,
                              PGresult **res)
{
    const char *state;
    step_t step;
    int i = 0;

    *res = NULL;
    plan->prepared = plan->late = plan->synced = 0;
    if ((step = notary_store_flush_out(conn, deadline)) != STEP_OK) {
        return step;
    }
    /* each statement's result then NULL; after an error the rest come as
     * PIPELINE_ABORTED; the sync last */
    while (!plan->synced) {
        PGresult *r;
        int planned;

        if ((step = notary_store_await_input(conn, deadline)) != STEP_OK) {
            return step;
        }
        r = PQgetResult(conn);
        if (!r) {
            if (PQstatus(conn) == CONNECTION_BAD) {
                return STEP_CONN_LOST;
            }
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            plan->synced = 1;
            PQclear(r);
            continue;
        }
        planned = i < plan->n; /* libpq gives one result per query sent */
        if (planned && plan->query[i] == PLAN_PREPARE
            && PQresultStatus(r) == PGRES_COMMAND_OK) {
            plan->prepared = 1;
        }
        else if (planned && plan->query[i] == PLAN_GUARD
                 && PQresultStatus(r) == PGRES_FATAL_ERROR && !*res
                 && (state = PQresultErrorField(r, PG_DIAG_SQLSTATE))
                 && !strcmp(state, "22P02")) {
            /* everything else went in: the guard's cast failed */
            plan->late = 1;
            PQclear(r);
            i++;
            continue;
        }
        i++;
        if (PQresultStatus(r) == PGRES_FATAL_ERROR && !*res) {
            *res = r;
        }
        else {
            PQclear(r);
        }
    }
    if (PQexitPipelineMode(conn) != 1 || PQstatus(conn) == CONNECTION_BAD) {
        return STEP_CONN_LOST;
    }
    if (*res) {
        return STEP_SERVER_ERROR;
    }
    return plan->late ? STEP_LATE : STEP_OK;
}
