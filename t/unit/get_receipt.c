/* get_receipt CONNINFO EXCHANGE_ID DIRECTION [stamped]: the receipt of one
 * record as the log core makes it (notary_log_record_get, then
 * notary_log_receipt or, with "stamped", notary_log_receipt_stamped), on
 * standard output. Exit 0 receipt written, 3 not integrated yet, 1 error.
 * For the tests of the log (t/64-log-timestamp.t). */
#include <stdio.h>
#include <string.h>

#include <apr_general.h>

#include <libpq-fe.h>

#include "notary_log.h"

int main(int argc, char **argv)
{
    apr_pool_t *p;
    PGconn *conn;
    notary_log_record rec;
    const char *err = NULL;
    char *out = NULL;
    apr_size_t len = 0;
    int rv;

    if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "stamped"))) {
        fprintf(stderr, "usage: get_receipt CONNINFO EXCHANGE_ID request|response [stamped]\n");
        return 2;
    }
    apr_initialize();
    apr_pool_create(&p, NULL);
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "get_receipt: %s", PQerrorMessage(conn));
        return 1;
    }
    rv = notary_log_record_get(conn, p, argv[2], argv[3], &rec, &err);
    if (rv != 1) {
        fprintf(stderr, "get_receipt: %s\n", rv == 0 ? "no such record" : err);
        return 1;
    }
    rv = argc == 5 ? notary_log_receipt_stamped(conn, p, &rec, &out, &len, &err)
                   : notary_log_receipt(conn, p, &rec, &out, &len, &err);
    if (rv < 0) {
        fprintf(stderr, "get_receipt: %s\n", err);
        return 1;
    }
    if (rv == 0) {
        return 3;
    }
    if (fwrite(out, 1, len, stdout) != len || fflush(stdout) != 0) {
        return 1;
    }
    PQfinish(conn);
    return 0;
}
