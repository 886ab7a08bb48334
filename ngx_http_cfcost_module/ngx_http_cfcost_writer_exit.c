/*
 * An exiting worker's last pass (see ngx_http_cfcost_writer.c): the
 * records still held are sent over a blocking connection, bounded by
 * cfcost_redis_timeout a step; what Redis does not store goes to the
 * spool, or is counted and logged as lost.
 */

#include "ngx_http_cfcost_writer_int.h"


/*
 * Moves the live lane's records, in id order, into all[]; returns how
 * many.  The replay lane's are freed: they are still in their spool file,
 * which the next worker adopts.
 */
static ngx_uint_t
ngx_http_cfcost_writer_collect(ngx_http_cfcost_rec_t **all)
{
    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    while (!ngx_queue_empty(&wr->replay.queue)) {
        q = ngx_queue_head(&wr->replay.queue);
        ngx_queue_remove(q);
        ngx_http_cfcost_writer_free(ngx_queue_data(q, ngx_http_cfcost_rec_t,
                                                   queue));
    }

    n = 0;

    while (!ngx_queue_empty(&wr->live.queue)) {
        q = ngx_queue_head(&wr->live.queue);
        ngx_queue_remove(q);
        rec = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);
        rec->done = 0;
        all[n++] = rec;
    }

    return n;
}


/*
 * The live records over a blocking connection, in transactions as on the
 * event loop, one at a time; the first that does not go through whole
 * ends the pass.  Returns how many were stored.
 */
static ngx_uint_t
ngx_http_cfcost_writer_sync(redisContext *c, ngx_http_cfcost_rec_t **all,
    ngx_uint_t n)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_int_t                  last_ok;
    ngx_uint_t                 i, j, k, m, stored, ok, state;
    redisReply                *reply, *exec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    stored = 0;

    for (i = 0; i < n; i += m) {
        m = ngx_min(n - i, NGX_HTTP_CFCOST_BATCH_MAX);

        redisAppendCommand(c, "MULTI");
        redisAppendCommand(c, "SADD %s %b", CFCOST_WRITERS_SET,
                           wr->live_ids.id, sizeof(wr->live_ids.id));

        for (j = 0; j < m; j++) {
            cmd = ngx_http_cfcost_writer_command(all[i + j], 0, &len);
            redisAppendFormattedCommand(c, (char *) cmd, len);
        }

        redisAppendCommand(c, "EXEC");

        /* MULTI, SADD, the XADDs: QUEUED, or their own results */
        for (j = 0; j < m + 2; j++) {
            if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
                return stored;
            }

            if (j >= 2) {
                all[i + j - 2]->state =
                                    ngx_http_cfcost_writer_classify(reply);
            }

            freeReplyObject(reply);
        }

        if (redisGetReply(c, (void **) &exec) != REDIS_OK) {
            return stored;
        }

        ok = 1;
        last_ok = -1;

        /* EXEC's first result is the SADD's */
        for (j = 0, k = 1; j < m; j++) {
            state = all[i + j]->state;

            if (state == NGX_HTTP_CFCOST_QUEUED) {
                state = (exec->type == REDIS_REPLY_ARRAY && k < exec->elements)
                        ? ngx_http_cfcost_writer_classify(exec->element[k++])
                        : NGX_HTTP_CFCOST_NOTRUN;
            }

            all[i + j]->state = state;

            if (state == NGX_HTTP_CFCOST_STORED
                || state == NGX_HTTP_CFCOST_ALREADY)
            {
                all[i + j]->done = 1;
                stored++;
                last_ok = j;

            } else {
                ok = 0;
            }
        }

        freeReplyObject(exec);

        /* one refused, a later one stored: the first needs a new id */
        for (j = 0; (ngx_int_t) j < last_ok; j++) {
            if (!all[i + j]->done) {
                ngx_http_cfcost_writer_new_id(all[i + j], &wr->live_ids);
            }
        }

        if (!ok) {
            break;
        }
    }

    return stored;
}


/* what the exit pass could not store: to the spool, else lost */
static ngx_uint_t
ngx_http_cfcost_writer_spool_rest(ngx_http_cfcost_rec_t **all, ngx_uint_t n)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_uint_t                 i, spooled;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (wr->mcf->spool_dir.len == 0) {
        return 0;
    }

    for (i = 0, spooled = 0; i < n; i++) {
        if (all[i]->done) {
            continue;
        }

        cmd = ngx_http_cfcost_writer_command(all[i], 0, &len);

        if (ngx_http_cfcost_spool_append(wr->mcf, wr->log, wr->live_ids.id,
                                         cmd, len)
            == NGX_OK)
        {
            all[i]->done = 1;
            spooled++;
        }
    }

    ngx_http_cfcost_count(spooled, spooled);

    return spooled;
}


/* AUTH on the blocking connection, when configured: 1 when it may be used */
static ngx_uint_t
ngx_http_cfcost_writer_auth(redisContext *c, ngx_http_cfcost_writer_t *wr)
{
    int          argc;
    size_t       argvlen[3];
    ngx_uint_t   ok;
    const char  *argv[3];
    redisReply  *r;

    if (wr->mcf->redis_auth == NULL) {
        return 1;
    }

    argc = cfcost_redis_auth_argv(wr->mcf->redis_auth, argv, argvlen);

    r = redisCommandArgv(c, argc, argv, argvlen);
    ok = (r != NULL && r->type != REDIS_REPLY_ERROR);

    if (r != NULL && !ok) {
        ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                      "cfcost: Redis at %V refused AUTH (exiting worker): "
                      "%*s", &wr->mcf->redis_addr, (size_t) r->len, r->str);
    }

    if (r != NULL) {
        freeReplyObject(r);
    }

    return ok;
}


void
ngx_http_cfcost_writer_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i, n, stored, spooled, lost, up;
    redisContext              *c;
    struct timeval             tv;
    ngx_http_cfcost_rec_t    **all;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (!wr->initialized) {
        return;
    }

    up = wr->rd.connected;
    wr->giving_up = 1;                      /* no more sending from here */
    ngx_http_cfcost_redis_close(&wr->rd);   /* batches in flight: back */

    if (wr->linger.timer_set) {
        ngx_del_timer(&wr->linger);
    }

    if (wr->pause.timer_set) {
        ngx_del_timer(&wr->pause);
    }

    if (wr->drain.timer_set) {
        ngx_del_timer(&wr->drain);
    }

    all = NULL;
    n = 0;
    c = NULL;
    stored = 0;

    if (wr->queued) {
        all = ngx_alloc(wr->queued * sizeof(ngx_http_cfcost_rec_t *),
                        cycle->log);
        n = all ? ngx_http_cfcost_writer_collect(all) : 0;
    }

    /* Redis down and a spool to go to: no blocking pass to wait for */
    if ((n || wr->unreported) && (up || wr->mcf->spool_dir.len == 0)) {
        tv.tv_sec = wr->mcf->redis_timeout / 1000;
        tv.tv_usec = (wr->mcf->redis_timeout % 1000) * 1000;

        c = wr->mcf->redis_unix.len
            ? redisConnectUnixWithTimeout((char *) wr->mcf->redis_unix.data,
                                          tv)
            : redisConnectWithTimeout((char *) wr->mcf->redis_host.data,
                                      (int) wr->mcf->redis_port, tv);

        if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK
            && ngx_http_cfcost_writer_auth(c, wr))
        {
            stored = ngx_http_cfcost_writer_sync(c, all, n);
            ngx_http_cfcost_count(stored, stored);
        }
    }

    spooled = ngx_http_cfcost_writer_spool_rest(all, n);
    lost = n - stored - spooled;

    if (c != NULL && c->err == 0 && lost + wr->unreported) {
        freeReplyObject(redisCommand(c, "HINCRBY %s %s %lu",
                                     CFCOST_GATEWAY_HASH,
                                     CFCOST_GATEWAY_F_DROPPED,
                                     (unsigned long) (lost
                                                      + wr->unreported)));
    }

    if (spooled) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "cfcost: %ui usage records spooled at worker exit, "
                      "for the next worker to store", spooled);
    }

    if (lost) {
        ngx_http_cfcost_count(lost_exit, lost);
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "cfcost: %ui usage records lost at worker exit: "
                      "Redis at %V unreachable (%s)", lost,
                      &wr->mcf->redis_addr,
                      c ? c->errstr : "not tried");
    }

    for (i = 0; i < n; i++) {
        ngx_free(all[i]);
    }

    if (all) {
        ngx_free(all);
    }

    if (c != NULL) {
        redisFree(c);
    }

    ngx_http_cfcost_spool_close();

    ngx_http_cfcost_count(queued, -(ngx_atomic_int_t) wr->queued);
    wr->queued = 0;
}
