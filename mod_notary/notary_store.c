/* notary_store: the record writer's queue and group commit, on top of
 * the store's other layers (notary_store_int.h). See notary_store.h for
 * the contract, sql/README.md and sql/0002_writer_path.sql for the
 * database side.
 */
#include <string.h>

#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <apr_thread_proc.h>

#include <libpq-fe.h>

#include "notary_store_int.h"

#if !APR_HAS_THREADS
#error "notary_store needs APR with threads (apr_reslist, the group commit)"
#endif

/* Group commit: concurrent inserts queue up; one thread (the leader)
 * takes what is queued (up to STORE_BATCH_MAX) and commits it in one
 * pipelined implicit transaction, one INSERT for all its rows. Up to
 * max_leaders write at once when the queue grows long or heavy. Before
 * taking the queue, a leader waits briefly for records announced as
 * underway (notary_store_expect). Every caller still returns only once
 * its own row is committed. */
#ifndef STORE_MAX_LEADERS
#define STORE_MAX_LEADERS 4
#endif
/* A second (third...) leader only when the queue is long or heavy: one
 * writer per child batches best, several use PostgreSQL's cores for big
 * rows */
#ifndef STORE_SPLIT_BYTES
#define STORE_SPLIT_BYTES (256 * 1024)
#endif
/* the longest a leader waits for records announced as underway (usec) */
#ifndef STORE_GATHER_WAIT
#define STORE_GATHER_WAIT 1000
#endif

typedef struct store_item {
    store_params sp;
    const notary_record *rec;
    char errbuf[512];      /* the leader's message for this record */
    apr_thread_cond_t *cv; /* its thread's own (waiter_cv): woken only
                                  * when its row is done or it may lead */
    apr_status_t rv;
    int taken, done;
    apr_time_t deadline; /* entry + timeout: bounds all of its wait */
    struct store_item *next;
} store_item;

struct notary_store {
    store_conns *conns;
    apr_interval_time_t timeout;
    apr_thread_mutex_t *mu;
    store_item *head, *tail;
    int queued;
    apr_size_t queued_bytes;
    int leaders, max_leaders;
    /* gathering: announced records not yet here, how many have settled
     * (arrived or withdrawn), and the leader waiting for them */
    int expecting;
    apr_uint64_t settled;
    store_item *gatherer;
    apr_interval_time_t gather_wait;
    apr_threadkey_t *waiter_key; /* each thread's condition variable, */
    apr_pool_t *waiter_pool;     /* ... allocated here under mu */
};

/* Each thread waits on a condition variable of its own, not one per
 * record: so a leader may wake its waiters after letting go of st->mu (a
 * waiter woken under the mutex only blocks again on it: two more context
 * switches per record) without a waiter that has already returned taking
 * its variable with it. The variables stay for the store's life -- one per
 * thread that ever recorded, and httpd's threads live as long as their
 * child -- so a late wake-up finds one still there; it reaches a later
 * wait of that thread, and every wait re-checks its condition. */
static apr_thread_cond_t *waiter_cv(notary_store *st)
{
    void *cv = NULL;
    apr_status_t rv;

    if (apr_threadkey_private_get(&cv, st->waiter_key) == APR_SUCCESS && cv) {
        return cv;
    }
    apr_thread_mutex_lock(st->mu);
    rv = apr_thread_cond_create((apr_thread_cond_t **)&cv, st->waiter_pool);
    apr_thread_mutex_unlock(st->mu);
    if (rv != APR_SUCCESS || apr_threadkey_private_set(cv, st->waiter_key) != APR_SUCCESS) {
        return NULL;
    }
    return cv;
}

static apr_status_t waiter_key_delete(void *key)
{
    return apr_threadkey_private_delete(key);
}

apr_status_t notary_store_create(notary_store **pst, apr_pool_t *p, const char *conninfo,
                                 int min, int smax, int hmax, apr_interval_time_t ttl,
                                 apr_interval_time_t timeout)
{
    notary_store *st;
    apr_status_t rv;

    *pst = NULL;
    if (!conninfo || hmax < 1 || min < 0 || min > smax || smax > hmax || timeout <= 0) {
        return APR_EINVAL;
    }
    st = apr_pcalloc(p, sizeof(*st));
    st->timeout = timeout;

    if ((rv = notary_store_conns_create(&st->conns, p, conninfo, min, smax, hmax, ttl,
                                        timeout))
        != APR_SUCCESS) {
        return rv;
    }
    if ((rv = apr_thread_mutex_create(&st->mu, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_threadkey_private_create(&st->waiter_key, NULL, p)) != APR_SUCCESS
        || (rv = apr_pool_create(&st->waiter_pool, p)) != APR_SUCCESS) {
        return rv;
    }
    /* a process may create stores again and again (the tests do): give
     * each one's key back with it, there are only so many */
    apr_pool_cleanup_register(p, st->waiter_key, waiter_key_delete, apr_pool_cleanup_null);
    st->max_leaders = hmax < STORE_MAX_LEADERS ? hmax : STORE_MAX_LEADERS;
    st->gather_wait = timeout / 4 < STORE_GATHER_WAIT ? timeout / 4 : STORE_GATHER_WAIT;
    *pst = st;
    return APR_SUCCESS;
}

void notary_store_set_log(notary_store *st, notary_store_log_fn *fn, void *ctx)
{
    /* set once, before the store is used (the glue's child_init) */
    st->conns->log = fn;
    st->conns->log_ctx = ctx;
}

/* The server gave up waiting: statement_timeout (57014) or a lock it
 * could not get (55P03). */
static int server_timeout(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    return state && (!strcmp(state, "57014") || !strcmp(state, "55P03"));
}

/* The unique (exchange_id, direction) refused the row. */
static int duplicate_exchange(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

    return state && !strcmp(state, "23505") && cons
        && !strcmp(cons, "records_exchange_direction");
}

/* A record whose body is in a file: its keys, then COPY of one row in a
 * transaction of its own (notary_store_copy). */
static step_t send_copy(const notary_store *st, store_conn *sc, store_item *it, char *buf,
                        apr_time_t deadline, PGresult **res, const char **why,
                        apr_pool_t *errpool)
{
    const store_params *sp = &it->sp;
    step_t step;

    *why = NULL;
    /* keys and the admission this connection has not registered yet go
     * first, committed on their own (harmless: neither is ever deleted, and
     * a token kept is one the gate verified), and statement_timeout
     * is fitted to the time left (the 90 % rule, notary_store_int.h); one
     * round trip, next to a body of more than 256 KiB */
    if ((step = notary_store_pipeline(st->conns, sc, &sp, 1, 0, deadline, res)) != STEP_OK) {
        return step;
    }
    return notary_store_copy(sc->conn, &it->sp, it->rec->body_file,
                             (apr_off_t)it->rec->body_len, buf, deadline, &sc->in_doubt, res,
                             why, errpool);
}

/* Rolled back for want of time (STEP_LATE), n rows. */
static const char *late_msg(apr_pool_t *p, int n, const char *prior)
{
    return apr_psprintf(p, "record store: the transaction of %s was held up (a lock, a slow "
                           "server) past 90 %% of the time it had and was rolled back; %s",
                        n > 1 ? apr_psprintf(p, "%d records", n) : "the record",
                        prior ? "not written by this attempt" : "known not written");
}

/* A failure after an attempt whose outcome is unknown (its connection
 * broke once the commit may have been sent): say so, the row may exist. */
static const char *and_prior(apr_pool_t *p, const char *msg, const char *prior)
{
    return prior ? apr_psprintf(p, "%s; an earlier attempt may have committed it (%s): "
                                   "outcome unknown",
                                msg, prior)
                 : msg;
}

/* One record on its own: a one-row pipeline, or COPY for a file body.
 * Retried once on a lost connection; a retry that finds its own row
 * already committed succeeds (see notary_store.h). */
static apr_status_t insert_one(notary_store *st, store_item *it, apr_pool_t *errpool,
                               const char **err, const char *prior)
{
    const notary_record *rec = it->rec;
    const store_params *sp = &it->sp;
    const char *why, *first_err = NULL;
    char *buf = rec->body_file ? apr_palloc(errpool, COPY_CHUNK) : NULL;
    apr_time_t deadline = it->deadline;
    int attempt;

    if (apr_time_now() >= deadline) {
        /* its time went on the batch it was part of */
        *err = apr_psprintf(errpool, "record store: no commit within %" APR_TIME_T_FMT " ms; not sent again", apr_time_as_msec(st->timeout));
        *err = and_prior(errpool, *err, prior);
        return APR_TIMEUP;
    }

    for (attempt = 0; attempt < 2; attempt++) {
        store_conn *sc;
        PGresult *res = NULL;
        apr_status_t rv;
        step_t step;
        int doubt;

        why = NULL;
        rv = notary_store_slot_get(st->conns, &sc, deadline, errpool, err);
        if (rv != APR_SUCCESS) {
            *err = and_prior(errpool, *err, prior);
            return rv;
        }
        step = rec->body_file ? send_copy(st, sc, it, buf, deadline, &res, &why, errpool)
                              : notary_store_pipeline(st->conns, sc, &sp, 1, 1, deadline,
                                                      &res);
        if (step == STEP_SERVER_ERROR && res && duplicate_exchange(res)) {
            int same;
            PQclear(res);
            res = NULL;
            step = notary_store_committed_before(sc, &it->sp, deadline, &same, &res);
            if (step == STEP_OK) {
                PQclear(res);
                notary_store_slot_release(st->conns, sc);
                if (same) {
                    return APR_SUCCESS;
                }
                *err = apr_psprintf(errpool, "record store refused the record: exchange %s "
                                             "already has a different %s record (SQLSTATE 23505)",
                                    rec->exchange_id, rec->direction);
                return APR_EGENERAL;
            }
        }

        switch (step) {
        case STEP_OK:
            if (res) {
                PQclear(res);
            }
            notary_store_slot_release(st->conns, sc);
            return APR_SUCCESS;
        case STEP_SERVER_ERROR:
            /* idle again (a COPY's transaction was rolled back) */
            *err = why ? apr_psprintf(errpool, "record store: %s", why)
                       : apr_psprintf(errpool, "record store refused the record: %s",
                                      res ? notary_store_result_msg(errpool, res)
                                          : "unknown error");
            notary_store_slot_release(st->conns, sc);
            if (res) {
                PQclear(res);
            }
            *err = and_prior(errpool, *err, prior);
            return APR_EGENERAL;
        case STEP_LATE:
            *err = and_prior(errpool, late_msg(errpool, 1, prior), prior);
            notary_store_slot_release(st->conns, sc);
            return APR_TIMEUP;
        case STEP_TIMEOUT:
            /* the server may still commit it (its answer late, the guard
             * passed); no retry that could race it */
            *err = apr_psprintf(errpool, "record store: no answer within %" APR_TIME_T_FMT " ms (%" APR_SIZE_T_FMT "-byte body); the connection was "
                                         "dropped (written only if its commit was under way and "
                                         "its answer late)",
                                apr_time_as_msec(st->timeout), rec->body_len);
            *err = and_prior(errpool, *err, prior);
            if (res) {
                PQclear(res);
            }
            notary_store_slot_invalidate(st->conns, sc);
            return APR_TIMEUP;
        case STEP_CONN_LOST:
        default:
            why = apr_psprintf(errpool, "connection lost: %s",
                               res ? notary_store_result_msg(errpool, res)
                                   : notary_store_pq_msg(errpool, PQerrorMessage(sc->conn)));
            if (res) {
                PQclear(res);
            }
            doubt = sc->in_doubt;
            notary_store_slot_invalidate(st->conns, sc);
            if (first_err || apr_time_now() >= deadline) {
                *err = apr_psprintf(errpool, "record store: %s%s%s", why,
                                    first_err ? "; first attempt: " : "",
                                    first_err ? first_err : "");
                *err = and_prior(errpool, *err, prior);
                return APR_ECONNABORTED;
            }
            first_err = why; /* retry once, see notary_store.h */
            if (!prior && doubt) {
                prior = why;
            }
            break;
        }
    }
    /* not reached: the second attempt returns from the switch */
    *err = "record store: insert failed";
    return APR_ECONNABORTED;
}

/* Several records, one transaction: APR_SUCCESS only if every row
 * committed. *one_by_one says whether the caller should now try them
 * singly: yes after a refused row (the others are fine) or a broken
 * connection (each retry is safe, see notary_store.h); no when no
 * connection could be had or the database did not answer in time --
 * then every record shares that outcome (*err) instead of each waiting
 * the timeout again. */
static apr_status_t insert_batch(notary_store *st, store_item **items, int n,
                                 apr_pool_t *tmp, const char **err, int *one_by_one)
{
    apr_time_t deadline = items[0]->deadline;
    const store_params *sps[STORE_BATCH_MAX];
    PGresult *res = NULL;
    store_conn *sc;
    apr_status_t rv;
    step_t step;
    int i, doubt;

    for (i = 0; i < n; i++) {
        sps[i] = &items[i]->sp;
        if (items[i]->deadline < deadline) {
            deadline = items[i]->deadline;
        }
    }
    *one_by_one = 0;
    if ((rv = notary_store_slot_get(st->conns, &sc, deadline, tmp, err)) != APR_SUCCESS) {
        return rv;
    }
    step = notary_store_pipeline(st->conns, sc, sps, n, 1, deadline, &res);
    if (step == STEP_SERVER_ERROR && res && server_timeout(res)) {
        /* the server's statement_timeout: one by one, each would wait it again */
        *err = apr_psprintf(tmp, "record store refused a transaction of %d records: %s",
                            n, notary_store_result_msg(tmp, res));
        PQclear(res);
        notary_store_slot_release(st->conns, sc);
        return APR_TIMEUP;
    }
    if (res) {
        PQclear(res);
    }
    doubt = sc->in_doubt;
    if (step == STEP_OK || step == STEP_SERVER_ERROR || step == STEP_LATE) {
        notary_store_slot_release(st->conns, sc);
    }
    else {
        /* state unknown: this connection goes */
        notary_store_slot_invalidate(st->conns, sc);
    }
    if (step == STEP_LATE) {
        /* one by one would be later still */
        *err = late_msg(tmp, n, NULL);
        return APR_TIMEUP;
    }
    if (step == STEP_TIMEOUT) {
        *err = apr_psprintf(tmp, "record store: no answer within %" APR_TIME_T_FMT " ms (a transaction of %d records); the connection was "
                                 "dropped (written only if its commit was under way and "
                                 "its answer late)",
                            apr_time_as_msec(st->timeout), n);
        return APR_TIMEUP;
    }
    if (step == STEP_CONN_LOST && doubt) {
        /* retried one by one; this transaction may have committed */
        *err = apr_psprintf(tmp, "a transaction of %d records lost its connection after "
                                 "its commit was sent",
                            n);
    }
    *one_by_one = step != STEP_OK;
    return step == STEP_OK ? APR_SUCCESS : APR_EGENERAL;
}

/* The leader writes a batch. Its messages go into each item's own buffer:
 * the waiters' pools are theirs (a pool is not thread-safe). */
static void write_items(notary_store *st, store_item **batch, int n)
{
    apr_pool_t *tmp;
    const char *err = NULL;
    apr_status_t rv = APR_EGENERAL;
    const char *prior = NULL;
    int i, one_by_one = 1;

    if (apr_pool_create(&tmp, NULL) != APR_SUCCESS) {
        for (i = 0; i < n; i++) {
            batch[i]->rv = APR_ENOMEM;
            apr_cpystrn(batch[i]->errbuf, "record store: out of memory",
                        sizeof(batch[i]->errbuf));
        }
        return;
    }
    if (n > 1) {
        rv = insert_batch(st, batch, n, tmp, &err, &one_by_one);
        prior = one_by_one ? err : NULL;
    }
    for (i = 0; i < n; i++) {
        if (one_by_one) {
            err = NULL;
            rv = insert_one(st, batch[i], tmp, &err, prior);
        }
        batch[i]->rv = rv;
        if (rv != APR_SUCCESS) {
            apr_cpystrn(batch[i]->errbuf, err ? err : "record store: insert failed",
                        sizeof(batch[i]->errbuf));
        }
    }
    apr_pool_destroy(tmp);
}

/* Under st->mu: an announced record arrived or was withdrawn. Returns
 * the gathering leader's condition variable for the caller to signal, once
 * st->mu is let go where it can be (NULL: none gathers). */
static apr_thread_cond_t *settle(notary_store *st)
{
    if (st->expecting > 0) {
        st->expecting--;
    }
    st->settled++;
    return st->gatherer ? st->gatherer->cv : NULL;
}

void notary_store_expect(notary_store *st, int delta)
{
    apr_thread_cond_t *wake = NULL;

    apr_thread_mutex_lock(st->mu);
    if (delta > 0) {
        st->expecting += delta;
    }
    else {
        for (; delta < 0; delta++) {
            wake = settle(st);
        }
    }
    apr_thread_mutex_unlock(st->mu);
    if (wake) {
        apr_thread_cond_signal(wake);
    }
}

/* Under st->mu: take a record that no leader has taken off the queue. */
static void dequeue(notary_store *st, store_item *it)
{
    store_item **pp, *prev = NULL;

    for (pp = &st->head; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp == it) {
            *pp = it->next;
            if (st->tail == it) {
                st->tail = prev;
            }
            it->next = NULL;
            st->queued--;
            st->queued_bytes -= it->rec->body_len;
            return;
        }
    }
}

/* Under st->mu: a queued record's time ran out before it was sent. */
static void expired(notary_store *st, store_item *it)
{
    it->done = 1;
    it->rv = APR_TIMEUP;
    apr_snprintf(it->errbuf, sizeof(it->errbuf), "record store: no commit within %" APR_TIME_T_FMT " ms: still queued behind another transaction; "
                                                 "not sent",
                 apr_time_as_msec(st->timeout));
}

/* Under st->mu: may a queued record start a commit now? */
static int may_lead(const notary_store *st)
{
    return st->leaders == 0
        || (st->leaders < st->max_leaders
            && (st->queued >= STORE_BATCH_MAX / 2 || st->queued_bytes >= STORE_SPLIT_BYTES));
}

void notary_store_gather_wait(notary_store *st, apr_interval_time_t wait)
{
    apr_thread_mutex_lock(st->mu);
    st->gather_wait = wait > 0 ? wait : 0;
    apr_thread_mutex_unlock(st->mu);
}

/* The leader, before taking the queue: while records announced as
 * underway have not all settled, wait for them (bounded). Under st->mu. */
static void gather(notary_store *st, store_item *me)
{
    apr_uint64_t want;
    apr_time_t until;

    if (st->expecting <= 0 || st->gather_wait <= 0 || st->gatherer) {
        return;
    }
    want = st->settled + (apr_uint64_t)st->expecting;
    until = apr_time_now() + st->gather_wait;
    st->gatherer = me;
    while (st->settled < want && st->queued < STORE_BATCH_MAX) {
        apr_interval_time_t left = until - apr_time_now();
        if (left <= 0) {
            break;
        }
        apr_thread_cond_timedwait(me->cv, st->mu, left);
    }
    st->gatherer = NULL;
}

apr_status_t notary_store_insert(notary_store *st, const notary_record *rec,
                                 apr_pool_t *errpool, const char **err)
{
    store_item me;
    const char *why;
    apr_status_t rv;

    *err = NULL;
    if ((why = notary_store_record_incomplete(rec)) != NULL) {
        *err = apr_psprintf(errpool, "record not stored: %s", why);
        rv = APR_EINVAL;
        goto not_queued;
    }
    memset(&me, 0, sizeof(me));
    me.deadline = apr_time_now() + st->timeout;
    if ((rv = notary_store_build_params(rec, &me.sp, errpool, err)) != APR_SUCCESS) {
        goto not_queued;
    }
    me.rec = rec;
    if (rec->body_file) {
        /* large: streamed on its own connection, never batched */
        if (rec->announced) {
            notary_store_expect(st, -1);
        }
        /* the COPY computes the leaf once it has hashed the body */
        if ((rv = insert_one(st, &me, errpool, err, NULL)) == APR_SUCCESS && rec->leaf_entry) {
            memcpy(rec->leaf_entry, me.sp.entry, sizeof(me.sp.entry));
        }
        return rv;
    }

    if (!(me.cv = waiter_cv(st))) {
        *err = "record store: cannot create a condition variable";
        rv = APR_ENOMEM;
        goto not_queued;
    }

    apr_thread_mutex_lock(st->mu);
    if (st->tail) {
        st->tail->next = &me;
    }
    else {
        st->head = &me;
    }
    st->tail = &me;
    st->queued++;
    st->queued_bytes += rec->body_len;
    if (rec->announced) {
        apr_thread_cond_t *wake = settle(st);
        if (wake) {
            apr_thread_cond_signal(wake);
        }
    }
    else if (st->gatherer && st->queued >= STORE_BATCH_MAX) {
        apr_thread_cond_signal(st->gatherer->cv); /* a full batch: go */
    }
    while (!me.done) {
        if (!me.taken && apr_time_now() >= me.deadline) {
            /* still queued behind a commit that takes too long: give up
             * before anything of it was sent (known not written) */
            dequeue(st, &me);
            expired(st, &me);
        }
        /* a gathering leader takes this one along: no second leader */
        else if (!me.taken && !st->gatherer && may_lead(st)) {
            store_item *batch[STORE_BATCH_MAX];
            apr_thread_cond_t *wake[STORE_BATCH_MAX + 1];
            int n = 0, i;
            /* lead: wait for records underway, then take what is queued,
             * oldest first (up to a batch) */
            st->leaders++;
            gather(st, &me);
            while (st->head && n < STORE_BATCH_MAX) {
                store_item *it = st->head;
                dequeue(st, it);
                if (it->deadline <= apr_time_now() && it != &me) {
                    expired(st, it);
                    apr_thread_cond_signal(it->cv);
                    continue;
                }
                it->taken = 1;
                batch[n++] = it;
            }
            if (st->head && may_lead(st)) {
                apr_thread_cond_signal(st->head->cv); /* more to lead */
            }
            apr_thread_mutex_unlock(st->mu);
            write_items(st, batch, n);
            apr_thread_mutex_lock(st->mu);
            /* done under the mutex, woken after it: an item lives on its
             * waiter's stack and may be gone once st->mu is let go, its
             * thread's condition variable not */
            for (i = 0; i < n; i++) {
                batch[i]->done = 1;
                wake[i] = batch[i] != &me ? batch[i]->cv : NULL;
            }
            st->leaders--;
            wake[n] = st->head ? st->head->cv : NULL; /* the next leader */
            apr_thread_mutex_unlock(st->mu);
            for (i = 0; i <= n; i++) {
                if (wake[i]) {
                    apr_thread_cond_signal(wake[i]);
                }
            }
            goto leave;
        }
        else if (me.taken) {
            /* a leader has it: its wait is bounded by our deadline */
            apr_thread_cond_wait(me.cv, st->mu);
        }
        else {
            apr_thread_cond_timedwait(me.cv, st->mu, me.deadline - apr_time_now());
        }
    }
    apr_thread_mutex_unlock(st->mu);
leave:
    *err = me.rv == APR_SUCCESS ? NULL : apr_pstrdup(errpool, me.errbuf);
    /* a retry sends the same parameters, salt included: this is the
     * committed row's entry whichever attempt committed it */
    if (me.rv == APR_SUCCESS && rec->leaf_entry) {
        memcpy(rec->leaf_entry, me.sp.entry, sizeof(me.sp.entry));
    }
    return me.rv;

not_queued:
    if (rec->announced) {
        notary_store_expect(st, -1);
    }
    return rv;
}
