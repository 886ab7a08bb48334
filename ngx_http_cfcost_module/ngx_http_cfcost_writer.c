/*
 * The record writer.  See ngx_http_cfcost_writer.h.
 *
 * Each worker process is a writer with a random id and its own stream.
 * It gives every record an id "<ms>-<seq>" above the one before, and
 * sends its records in batches, each one transaction:
 *
 *   MULTI, XADD <stream> NOMKSTREAM <id> <pairs>..., EXEC
 *                                                  (one XADD: just that)
 *
 * A batch of the live lane puts up to NGX_HTTP_CFCOST_ENTRY_MAX records
 * into one entry (a batch entry, cfcost_schema.h: "b" and the records'
 * packed values), under the id of its last record: one XADD, one entry
 * for the aggregator to read, track and acknowledge, instead of one per
 * record.  An entry is stored whole or not at all, so its records share
 * what its reply says.  Were it stored, any of its records sent again
 * alone is refused as stored (its id is not above the stream's top); an
 * entry whose fate is unknown (the connection went) marks its last
 * record as a fence: no later entry takes its records past it, so no
 * record ever goes into two stored entries.
 *
 * The first batch on a connection also creates the stream and lists it,
 * in the same transaction (MULTI, SADD cfcost:writers <id>, XADD <stream>
 * <id> ..., EXEC): the aggregator retires an empty stream idle longer
 * than its retention (deleted, and out of the set, in one script), so a
 * stream must never come back without its listing.  NOMKSTREAM makes an
 * XADD after a retirement add nothing (nil): the writer sends it again,
 * registering first.
 *
 * with at most one batch of a stream in flight.  A transaction runs
 * whole or not at all (a refusal while it is queued -- OOM, LOADING,
 * MISCONF, READONLY... -- aborts all of it), so records reach a stream
 * in id order and no record is stored past one that is not.  Hence, when
 * Redis refuses an XADD because its id is "equal or smaller than the
 * target stream top item", the record is there already (or was, and was
 * trimmed since): it is never stored twice, whatever happened to an
 * earlier attempt, and finding that out costs nothing.  (Once the stream
 * was retired, a record sent again goes into a new one, at or below the
 * retired stream's applied position: the aggregator counts it as stale.)
 *
 *   reply to a record             the record
 *   an entry id                   stored: freed
 *   nil (no stream: retired)      sent again, same id, registering first
 *   "equal or smaller"            stored before: freed
 *   none (connection lost)        sent again, same id
 *   LOADING, BUSY, OOM, ...       not run: sent again after a backoff pause
 *   ERR / WRONGTYPE               refused for good: dead-letter file
 *
 * A batch of spooled records (whose streams may be new to Redis) also
 * has SADD cfcost:writers <their writers> in its transaction.
 *
 * Records wait in two lanes, each in id order: the live lane (records of
 * this worker's requests) and the replay lane (records read back from a
 * spool file).  With cfcost_spool, a record that finds the live lane full
 * goes to this worker's spool file, under a second stream of its own (the
 * spool stream), so that spooled records are never overtaken by live
 * ones; an exiting worker spools what it could not store.  Spooled
 * records come back, in file order, one batch at a time, once the live
 * lane has room; a file keeps its records' streams and ids, so any number
 * of replays, by any worker, stores each record once.
 */

#include <openssl/rand.h>

#include "ngx_http_cfcost_writer_int.h"


ngx_http_cfcost_writer_t  ngx_http_cfcost_wr;

static ngx_http_cfcost_writer_stats_t  ngx_http_cfcost_no_stats;


/* ---- counters ------------------------------------------------------- */
static ngx_int_t
ngx_http_cfcost_stats_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {                        /* reload: keep the counts */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    shm_zone->data = ngx_slab_calloc(shpool,
                                     sizeof(ngx_http_cfcost_writer_stats_t));
    if (shm_zone->data == NULL) {
        return NGX_ERROR;
    }

    shpool->data = shm_zone->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_cfcost_writer_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_str_t  name = ngx_string("cfcost_records");

    mcf->stats_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                            &ngx_http_cfcost_module);
    if (mcf->stats_zone == NULL) {
        return NGX_ERROR;
    }

    mcf->stats_zone->init = ngx_http_cfcost_stats_init_zone;

    return NGX_OK;
}


ngx_http_cfcost_writer_stats_t *
ngx_http_cfcost_writer_stats(ngx_http_cfcost_main_conf_t *mcf)
{
    if (mcf == NULL || mcf->stats_zone == NULL) {
        return NULL;
    }

    return mcf->stats_zone->data;
}


/* ---- batches -------------------------------------------------------- */
static void
ngx_http_cfcost_writer_pause_handler(ngx_event_t *ev)
{
    ngx_http_cfcost_wr.paused = 0;
    ngx_http_cfcost_writer_flush();
}


static void
ngx_http_cfcost_writer_error(ngx_http_cfcost_batch_t *b, redisReply *reply)
{
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR
        && b->err_len == 0)
    {
        b->err_len = ngx_min((size_t) reply->len, sizeof(b->err));
        ngx_memcpy(b->err, reply->str, b->err_len);
    }
}


/* every reply of a batch has come (or the connection went): settle it */
static void
ngx_http_cfcost_writer_finish(ngx_http_cfcost_batch_t *b)
{
    ngx_int_t                  i, last_ok;
    ngx_uint_t                 notrun, unknown, nostream;
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_lane_t    *lane;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    lane = b->lane;
    lane->batch = NULL;

    for (last_ok = -1, i = 0; i < (ngx_int_t) b->n; i++) {
        if (b->recs[i]->state == NGX_HTTP_CFCOST_STORED
            || b->recs[i]->state == NGX_HTTP_CFCOST_ALREADY)
        {
            last_ok = i;
        }
    }

    notrun = 0;
    unknown = 0;
    nostream = 0;

    /* from the last, so that the ones to send again keep their order */
    for (i = (ngx_int_t) b->n - 1; i >= 0; i--) {
        rec = b->recs[i];
        rec->batch = NULL;

        switch (rec->state) {

        case NGX_HTTP_CFCOST_ALREADY:
            ngx_http_cfcost_count(already, 1);
            /* fall through */

        case NGX_HTTP_CFCOST_STORED:
            ngx_http_cfcost_count(stored, 1);
            ngx_http_cfcost_writer_settled(rec);
            break;

        case NGX_HTTP_CFCOST_DEAD:
            ngx_http_cfcost_writer_dead(rec, b->err, b->err_len);
            break;

        case NGX_HTTP_CFCOST_NOSTREAM:
            nostream++;
            ngx_http_cfcost_count(retried, 1);
            ngx_queue_insert_head(&lane->queue, &rec->queue);
            break;

        case NGX_HTTP_CFCOST_NOTRUN:
            notrun++;

            if (i < last_ok) {
                ngx_http_cfcost_writer_overtaken(rec);
                break;
            }

            ngx_http_cfcost_count(retried, 1);
            ngx_queue_insert_head(&lane->queue, &rec->queue);
            break;

        default:                      /* SENT, QUEUED, UNKNOWN */
            /* its entry may be stored: the next may not reach past it */
            rec->fence |= rec->last;
            unknown++;
            ngx_http_cfcost_count(retried, 1);
            ngx_queue_insert_head(&lane->queue, &rec->queue);
        }
    }

    if (nostream) {
        /* the next batch registers the stream again, with its records */
        wr->registered = 0;

        if (!wr->retired_logged) {
            ngx_log_error(NGX_LOG_NOTICE, wr->log, 0,
                          "cfcost: the aggregator retired this worker's "
                          "idle record stream; it is registered again "
                          "with the next records");
            wr->retired_logged = 1;
        }
    }

    if (notrun) {
        ngx_http_cfcost_writer_hold(b->err, b->err_len);

    } else if (unknown == 0) {
        wr->backoff = 0;
        wr->pause_logged = 0;
    }

    ngx_free(b);

    if (unknown == 0) {
        ngx_http_cfcost_writer_flush();    /* the connection still works */
    }
}


static void
ngx_http_cfcost_writer_callback_done(ngx_http_cfcost_batch_t *b)
{
    if (--b->callbacks == 0) {
        ngx_http_cfcost_writer_finish(b);
    }
}


static void
ngx_http_cfcost_writer_multi_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    ngx_http_cfcost_batch_t  *b = data;

    /* refused, the XADDs run one by one: their own replies tell */
    ngx_http_cfcost_writer_error(b, r);
    ngx_http_cfcost_writer_callback_done(b);
}


static void
ngx_http_cfcost_writer_sadd_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    ngx_http_cfcost_batch_t  *b = data;

    b->sadd_queued = (ngx_http_cfcost_writer_classify(r)
                      == NGX_HTTP_CFCOST_QUEUED);
    ngx_http_cfcost_writer_callback_done(b);
}


/* what became of an entry's XADD becomes of each of its records */
static void
ngx_http_cfcost_writer_entry_state(ngx_http_cfcost_entry_t *e,
    ngx_uint_t state)
{
    ngx_uint_t  i;

    for (i = 0; i < e->n; i++) {
        e->batch->recs[e->first + i]->state = state;
    }
}


static void
ngx_http_cfcost_writer_xadd_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    ngx_uint_t                state;
    ngx_http_cfcost_entry_t  *e = data;
    ngx_http_cfcost_batch_t  *b = e->batch;

    state = ngx_http_cfcost_writer_classify(r);
    ngx_http_cfcost_writer_entry_state(e, state);

    if (state != NGX_HTTP_CFCOST_QUEUED) {
        ngx_http_cfcost_writer_error(b, r);

        if (r != NULL && ((redisReply *) r)->type == REDIS_REPLY_ERROR) {
            ngx_http_cfcost_count(redis_errors, 1);
        }
    }

    ngx_http_cfcost_writer_callback_done(b);
}


static void
ngx_http_cfcost_writer_exec_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply               *reply = r;
    ngx_uint_t                i, k, state;
    ngx_http_cfcost_batch_t  *b = data;

    k = b->sadd_queued;      /* the SADD's result comes first */

    /* it ran: the live stream is there and listed (NOMKSTREAM from now) */
    if (k && b->lane == &ngx_http_cfcost_wr.live && reply != NULL
        && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
        && reply->element[0]->type == REDIS_REPLY_INTEGER)
    {
        ngx_http_cfcost_wr.registered = 1;
    }

    for (i = 0; i < b->nent; i++) {
        if (b->recs[b->ents[i].first]->state != NGX_HTTP_CFCOST_QUEUED) {
            continue;
        }

        if (reply == NULL) {
            state = NGX_HTTP_CFCOST_UNKNOWN;

        } else if (reply->type == REDIS_REPLY_ARRAY) {
            state = (k < reply->elements)
                    ? ngx_http_cfcost_writer_classify(reply->element[k++])
                    : NGX_HTTP_CFCOST_UNKNOWN;

            if (state == NGX_HTTP_CFCOST_DEAD
                || state == NGX_HTTP_CFCOST_NOTRUN)
            {
                ngx_http_cfcost_writer_error(b, reply->element[k - 1]);
                ngx_http_cfcost_count(redis_errors, 1);
            }

        } else {
            /* EXECABORT: nothing of the transaction ran */
            state = NGX_HTTP_CFCOST_NOTRUN;
            ngx_http_cfcost_writer_error(b, reply);
            ngx_http_cfcost_count(redis_errors, 1);
        }

        ngx_http_cfcost_writer_entry_state(&b->ents[i], state);
    }

    ngx_http_cfcost_writer_callback_done(b);
}


/*
 * The writer ids of the streams of a batch's records (in the SADD); the
 * batch ends before a record of a stream beyond BATCH_STREAMS.  Returns
 * how many records the batch takes.
 */
static ngx_uint_t
ngx_http_cfcost_writer_streams(ngx_http_cfcost_lane_t *lane,
    u_char **ids, ngx_uint_t *nids)
{
    ngx_uint_t              n, k;
    ngx_queue_t            *q;
    ngx_http_cfcost_rec_t  *rec;

    n = 0;
    *nids = 0;

    for (q = ngx_queue_head(&lane->queue);
         q != ngx_queue_sentinel(&lane->queue) && n < NGX_HTTP_CFCOST_BATCH_MAX;
         q = ngx_queue_next(q), n++)
    {
        rec = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);

        for (k = 0; k < *nids; k++) {
            if (ngx_memcmp(ids[k], rec->stream
                                   + sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1,
                           CFCOST_WRITER_ID_LEN) == 0)
            {
                break;
            }
        }

        if (k == *nids) {
            if (k == NGX_HTTP_CFCOST_BATCH_STREAMS) {
                break;
            }

            ids[(*nids)++] = rec->stream
                             + sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1;
        }
    }

    return n;
}


/*
 * The entries of batch b: a record each, but the live lane's records go
 * NGX_HTTP_CFCOST_ENTRY_MAX to a batch entry (cfcost_schema.h), never
 * one past a fence (the last record of an entry that may be stored:
 * a larger entry under a later id would store its records twice).
 */
static void
ngx_http_cfcost_writer_entries(ngx_http_cfcost_batch_t *b, ngx_uint_t live)
{
    size_t                    len;
    ngx_uint_t                i, packed, joins;
    ngx_http_cfcost_rec_t    *rec;
    ngx_http_cfcost_entry_t  *e;

    b->nent = 0;
    e = NULL;
    joins = 0;                        /* the record before may take more */

    for (i = 0; i < b->n; i++) {
        rec = b->recs[i];
        rec->last = 0;
        packed = live && ngx_http_cfcost_writer_packed(rec, &len) != NULL;

        if (joins && packed && e->n < NGX_HTTP_CFCOST_ENTRY_MAX) {
            e->n++;
            joins = !rec->fence;
            continue;
        }

        joins = packed && !rec->fence;

        if (e != NULL) {
            b->recs[e->first + e->n - 1]->last = 1;
        }

        e = &b->ents[b->nent++];
        e->batch = b;
        e->first = i;
        e->n = 1;
    }

    if (e != NULL) {
        b->recs[e->first + e->n - 1]->last = 1;
    }
}


/* queues the XADD of entry e; NGX_OK, or NGX_ERROR when it did not go */
static ngx_int_t
ngx_http_cfcost_writer_xadd(ngx_http_cfcost_entry_t *e, ngx_uint_t nomk)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_int_t                  rc;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (e->n == 1) {
        cmd = ngx_http_cfcost_writer_command(e->batch->recs[e->first], nomk,
                                             &len);
        return ngx_http_cfcost_redis_formatted(&wr->rd,
                                            ngx_http_cfcost_writer_xadd_reply,
                                            e, cmd, len);
    }

    cmd = ngx_http_cfcost_writer_entry_command(e, nomk, &len);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    /* hiredis copies the command */
    rc = ngx_http_cfcost_redis_formatted(&wr->rd,
                                         ngx_http_cfcost_writer_xadd_reply,
                                         e, cmd, len);
    ngx_free(cmd);

    return rc;
}


/* sends the next batch of a lane: one transaction */
static void
ngx_http_cfcost_writer_send(ngx_http_cfcost_lane_t *lane)
{
    u_char                    *ids[NGX_HTTP_CFCOST_BATCH_STREAMS];
    size_t                     argvlen[2 + NGX_HTTP_CFCOST_BATCH_STREAMS];
    ngx_uint_t                 i, n, nids, txn, live;
    ngx_queue_t               *q;
    const char                *argv[2 + NGX_HTTP_CFCOST_BATCH_STREAMS];
    ngx_http_cfcost_batch_t   *b;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    n = ngx_http_cfcost_writer_streams(lane, ids, &nids);
    if (n == 0) {
        return;
    }

    b = ngx_alloc(offsetof(ngx_http_cfcost_batch_t, recs)
                  + n * sizeof(ngx_http_cfcost_rec_t *)
                  + n * sizeof(ngx_http_cfcost_entry_t), wr->log);
    if (b == NULL) {
        return;
    }

    b->lane = lane;
    b->n = n;
    b->ents = (ngx_http_cfcost_entry_t *) &b->recs[n];
    b->callbacks = 0;
    b->sadd_queued = 0;
    b->err_len = 0;

    for (i = 0; i < n; i++) {
        q = ngx_queue_head(&lane->queue);
        ngx_queue_remove(q);
        b->recs[i] = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);
        b->recs[i]->batch = b;
        b->recs[i]->state = NGX_HTTP_CFCOST_SENT;
    }

    lane->batch = b;

    ngx_http_cfcost_writer_entries(b, lane == &wr->live);

    /*
     * One XADD of the live stream needs no transaction (it is atomic by
     * itself, and the stream is registered: NOMKSTREAM keeps it so); the
     * first batch on a connection, and a batch of spooled records, name
     * their streams in the same transaction.
     */
    live = (lane == &wr->live && wr->registered);
    txn = (b->nent > 1 || !live);

    if (!txn) {
        b->callbacks = 1;

        if (ngx_http_cfcost_writer_xadd(&b->ents[0], 1) != NGX_OK) {
            /* it did not go: sent again later */
            ngx_http_cfcost_writer_callback_done(b);
        }

        return;
    }

    argv[0] = "MULTI";
    argvlen[0] = sizeof("MULTI") - 1;

    if (ngx_http_cfcost_redis_argv(&wr->rd,
                                   ngx_http_cfcost_writer_multi_reply, b,
                                   1, argv, argvlen)
        != NGX_OK)
    {
        /* nothing went: the connection is going; on_up sends again */
        b->callbacks = 1;
        ngx_http_cfcost_writer_callback_done(b);
        return;
    }

    b->callbacks++;

    if (live) {
        goto records;
    }

    argv[0] = "SADD";
    argv[1] = CFCOST_WRITERS_SET;
    argvlen[0] = sizeof("SADD") - 1;
    argvlen[1] = sizeof(CFCOST_WRITERS_SET) - 1;

    for (i = 0; i < nids; i++) {
        argv[2 + i] = (char *) ids[i];
        argvlen[2 + i] = CFCOST_WRITER_ID_LEN;
    }

    if (ngx_http_cfcost_redis_argv(&wr->rd, ngx_http_cfcost_writer_sadd_reply,
                                   b, 2 + nids, argv, argvlen)
        != NGX_OK)
    {
        goto broken;
    }

    b->callbacks++;

records:

    for (i = 0; i < b->nent; i++) {
        if (ngx_http_cfcost_writer_xadd(&b->ents[i], live) != NGX_OK) {
            goto broken;
        }

        b->callbacks++;
    }

    argv[0] = "EXEC";
    argvlen[0] = sizeof("EXEC") - 1;

    if (ngx_http_cfcost_redis_argv(&wr->rd, ngx_http_cfcost_writer_exec_reply,
                                   b, 1, argv, argvlen)
        != NGX_OK)
    {
        goto broken;
    }

    b->callbacks++;

    return;

broken:

    /*
     * A transaction left open: this connection cannot be used again.  The
     * callbacks of what went run with NULL; the rest stays SENT, sent
     * again too.
     */
    ngx_log_error(NGX_LOG_ALERT, wr->log, 0,
                  "cfcost: cannot queue a batch of usage records for "
                  "Redis at %V, reconnecting", &wr->mcf->redis_addr);

    redisAsyncDisconnect(wr->rd.ac);
}


/* ---- spool replay --------------------------------------------------- */
/* a record read back from a spool file joins the replay lane */
static void
ngx_http_cfcost_writer_unspool(ngx_http_cfcost_spooled_t *sp, void *data)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    rec = ngx_alloc(offsetof(ngx_http_cfcost_rec_t, buf)
                    + NGX_HTTP_CFCOST_HEAD_MAX + sp->pairs_len, wr->log);
    if (rec == NULL) {
        /* it stays in its file, which stays: a later worker sends it */
        return;
    }

    rec->batch = NULL;
    rec->last = 0;
    rec->fence = 0;
    rec->from = data;
    ngx_memcpy(rec->stream, sp->stream, sizeof(rec->stream));
    rec->ms = sp->ms;
    rec->seq = sp->seq;
    rec->pairs = sp->npairs;
    rec->len = sp->pairs_len;
    ngx_memcpy(rec->buf + NGX_HTTP_CFCOST_HEAD_MAX, sp->pairs, sp->pairs_len);

    wr->queued++;
    ngx_http_cfcost_count(queued, 1);
    ngx_http_cfcost_count(replayed, 1);
    wr->drain.cancelable = 0;

    ngx_queue_insert_tail(&wr->replay.queue, &rec->queue);
}


/*
 * The next spooled records join the replay lane, when it is empty and the
 * live lane has room; not while the worker exits (the files stay for the
 * next worker).
 */
static void
ngx_http_cfcost_writer_replay(void)
{
    ngx_http_cfcost_spool_file_t  *f;
    ngx_http_cfcost_writer_t      *wr = &ngx_http_cfcost_wr;

    if (wr->mcf->spool_dir.len == 0 || ngx_exiting || ngx_terminate
        || wr->replay.batch || !ngx_queue_empty(&wr->replay.queue)
        || wr->live_n >= wr->mcf->queue_max / 2)
    {
        return;
    }

    f = ngx_http_cfcost_spool_next(wr->mcf, wr->log, wr->live_ids.id);

    if (f != NULL) {
        (void) ngx_http_cfcost_spool_read(f, NGX_HTTP_CFCOST_BATCH_MAX,
                                          ngx_http_cfcost_writer_unspool, f);
    }
}


/* ---- the connection ------------------------------------------------- */
static void
ngx_http_cfcost_writer_reported(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                *reply = r;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        wr->unreported += wr->reporting;     /* count them next time */
    }

    wr->reporting = 0;
}


/* adds the records this worker lost to cfcost:gateway, when it can */
static void
ngx_http_cfcost_writer_report(void)
{
    u_char                     num[NGX_INT_T_LEN];
    size_t                     argvlen[4];
    const char                *argv[4];
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (wr->unreported == 0 || wr->reporting) {
        return;
    }

    argv[0] = "HINCRBY";
    argv[1] = CFCOST_GATEWAY_HASH;
    argv[2] = CFCOST_GATEWAY_F_DROPPED;
    argv[3] = (char *) num;
    argvlen[0] = sizeof("HINCRBY") - 1;
    argvlen[1] = sizeof(CFCOST_GATEWAY_HASH) - 1;
    argvlen[2] = sizeof(CFCOST_GATEWAY_F_DROPPED) - 1;
    argvlen[3] = ngx_sprintf(num, "%ui", wr->unreported) - num;

    if (ngx_http_cfcost_redis_argv(&wr->rd, ngx_http_cfcost_writer_reported,
                                   NULL, 4, argv, argvlen)
        == NGX_OK)
    {
        wr->reporting = wr->unreported;
        wr->unreported = 0;
    }
}


/*
 * Whether the live lane waits cfcost_record_linger before it sends:
 * fewer records than fill an entry wait once that long for more, so that
 * entries are fuller and fewer (one connection's records would otherwise
 * go one by one).  Never while exiting.
 */
static ngx_uint_t
ngx_http_cfcost_writer_lingers(ngx_http_cfcost_writer_t *wr)
{
    if (wr->lingered || wr->mcf->record_linger == 0 || ngx_exiting
        || ngx_terminate || wr->live_n >= NGX_HTTP_CFCOST_ENTRY_MAX)
    {
        wr->lingered = 0;

        if (wr->linger.timer_set) {
            ngx_del_timer(&wr->linger);
        }

        return 0;
    }

    if (!wr->linger.timer_set) {
        ngx_add_timer(&wr->linger, wr->mcf->record_linger);
    }

    return 1;
}


static void
ngx_http_cfcost_writer_linger_handler(ngx_event_t *ev)
{
    ngx_http_cfcost_wr.lingered = 1;
    ngx_http_cfcost_writer_flush();
}


/* sends the next batch of each lane that has none in flight */
void
ngx_http_cfcost_writer_flush(void)
{
    static ngx_uint_t          flushing;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (flushing || wr->paused || wr->giving_up
        || !ngx_http_cfcost_redis_usable(&wr->rd))
    {
        return;
    }

    flushing = 1;

    if (wr->live.batch == NULL && !ngx_queue_empty(&wr->live.queue)
        && !ngx_http_cfcost_writer_lingers(wr))
    {
        ngx_http_cfcost_writer_send(&wr->live);
    }

    ngx_http_cfcost_writer_replay();

    if (wr->replay.batch == NULL && !ngx_queue_empty(&wr->replay.queue)
        && ngx_http_cfcost_redis_usable(&wr->rd))
    {
        ngx_http_cfcost_writer_send(&wr->replay);
    }

    ngx_http_cfcost_writer_report();

    flushing = 0;
}


static void
ngx_http_cfcost_writer_up(ngx_http_cfcost_redis_t *rd)
{
    ngx_http_cfcost_wr.registered = 0;
    ngx_http_cfcost_writer_flush();
}


/*
 * While records wait, this timer is not cancelable: a gracefully exiting
 * worker (reload, quit) stays, and keeps sending, until they are stored
 * or cfcost_record_drain has passed; then it stops sending, and the exit
 * pass takes what is left.  Once a second it also syncs the spool and
 * looks for spool files of workers that are gone.
 */
static void
ngx_http_cfcost_writer_drain_handler(ngx_event_t *ev)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (ngx_exiting && wr->queued) {
        if (!wr->exit_seen) {
            wr->exit_seen = 1;
            wr->exit_start = ngx_current_msec;
            ngx_log_error(NGX_LOG_NOTICE, wr->log, 0,
                          "cfcost: exiting with %ui usage records held; "
                          "storing them first (at most %M ms)",
                          wr->queued, wr->mcf->record_drain);
        }

        if (ngx_current_msec - wr->exit_start >= wr->mcf->record_drain) {
            wr->giving_up = 1;
            ev->cancelable = 1;
            return;
        }
    }

    if (++wr->ticks % NGX_HTTP_CFCOST_SYNC_TICKS == 0) {
        ngx_http_cfcost_spool_sync();

        if (!ngx_exiting) {
            ngx_http_cfcost_spool_adopt(wr->mcf, wr->log, wr->live_ids.id);
            ngx_http_cfcost_writer_flush();
        }
    }

    ev->cancelable = (wr->queued == 0);
    ngx_add_timer(ev, 100);
}


/* ---- process -------------------------------------------------------- */
/* a random writer id, and its stream's name */
static ngx_int_t
ngx_http_cfcost_writer_ids(ngx_http_cfcost_ids_t *ids, ngx_log_t *log)
{
    u_char  rnd[(CFCOST_WRITER_ID_LEN - 1) / 2], *p;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "cfcost: no random bytes for a writer id");
        return NGX_ERROR;
    }

    p = ngx_cpymem(ids->id, CFCOST_WRITER_TAG, sizeof(CFCOST_WRITER_TAG) - 1);
    ngx_hex_dump(p, rnd, sizeof(rnd));

    p = ngx_cpymem(ids->stream, CFCOST_RECORD_STREAM_PREFIX,
                   sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1);
    p = ngx_cpymem(p, ids->id, sizeof(ids->id));
    ngx_memcpy(p, CFCOST_RECORD_STREAM_SUFFIX,
               sizeof(CFCOST_RECORD_STREAM_SUFFIX) - 1);

    return NGX_OK;
}


ngx_int_t
ngx_http_cfcost_writer_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    ngx_memzero(wr, sizeof(ngx_http_cfcost_writer_t));

    if (ngx_http_cfcost_writer_ids(&wr->live_ids, cycle->log) != NGX_OK
        || ngx_http_cfcost_writer_ids(&wr->spool_ids, cycle->log) != NGX_OK)
    {
        return NGX_ERROR;
    }

    wr->mcf = mcf;
    wr->log = cycle->log;
    wr->stats = ngx_http_cfcost_writer_stats(mcf);

    if (wr->stats == NULL) {
        wr->stats = &ngx_http_cfcost_no_stats;
    }

    ngx_queue_init(&wr->live.queue);
    ngx_queue_init(&wr->replay.queue);

    wr->pause.handler = ngx_http_cfcost_writer_pause_handler;
    wr->pause.log = cycle->log;
    wr->pause.data = wr;
    wr->pause.cancelable = 1;

    wr->linger.handler = ngx_http_cfcost_writer_linger_handler;
    wr->linger.log = cycle->log;
    wr->linger.data = wr;
    wr->linger.cancelable = 1;

    wr->drain.handler = ngx_http_cfcost_writer_drain_handler;
    wr->drain.log = cycle->log;
    wr->drain.data = wr;
    wr->drain.cancelable = 1;
    ngx_add_timer(&wr->drain, 100);

    wr->initialized = 1;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "cfcost: writer %*s, spool stream writer %*s",
                   sizeof(wr->live_ids.id), wr->live_ids.id,
                   sizeof(wr->spool_ids.id), wr->spool_ids.id);

    wr->rd.on_up = ngx_http_cfcost_writer_up;
    ngx_http_cfcost_redis_start(&wr->rd, mcf, cycle->log, "records");

    return NGX_OK;
}
