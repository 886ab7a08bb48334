/*
 * The record writer.  See ngx_http_cfcost_writer.h.
 *
 * Each worker process is a writer with a random id and its own stream.
 * It gives every record an entry id "<ms>-<seq>" above the one before, and
 * sends "XADD <stream> <id> <pairs>", pipelined on its own connection.
 * Redis stores an id only above the stream's top, so whatever happened to
 * an earlier attempt, a record is stored at most once:
 *
 *   reply                       the record
 *   an entry id                 stored: freed
 *   none (connection lost)      may be stored: sent again, same id
 *   "equal or smaller" error    asked for with XRANGE id id (O(log n)):
 *                               there, it was stored before; not there,
 *                               it never can be under that id, so it gets
 *                               a new one and is sent again
 *   LOADING, BUSY, OOM, ...     not run: sent again after a backoff pause
 *   ERR / WRONGTYPE             refused for good: dead-letter file, counted
 *
 * Records wait in three queues, each in id order: retry (to send again)
 * goes before pending (never sent); back collects what the connection or
 * an error handed back while it lasts, and returns to the head of retry.
 *
 * With cfcost_spool, a record that finds the memory queue full goes to
 * this worker's spool file instead, and so do the records an exiting
 * worker could not store; spooled records come back, oldest first, once
 * the memory queue has drained (any writer's file: a record keeps the
 * stream and id it was given, so a replay is as idempotent as a re-send).
 */

#include <openssl/rand.h>

#include "ngx_http_cfcost_redis.h"
#include "ngx_http_cfcost_spool.h"
#include "ngx_http_cfcost_writer.h"


#define NGX_HTTP_CFCOST_INFLIGHT_MAX   1024
#define NGX_HTTP_CFCOST_REPLAY_BATCH   256
#define NGX_HTTP_CFCOST_SYNC_TICKS     10      /* x 100 ms: spool fsync */
#define NGX_HTTP_CFCOST_RECORD_MAX     4096    /* a record's bytes, at most */
#define NGX_HTTP_CFCOST_HEAD_MAX       160     /* "*N XADD <stream> <id>" */


typedef struct {
    ngx_queue_t                      queue;
    ngx_http_cfcost_spool_file_t    *from;        /* read back from a spool */
    u_char                           stream[CFCOST_RECORD_STREAM_LEN];
    uint64_t                         ms;          /* entry id */
    uint64_t                         seq;
    ngx_uint_t                       pairs;
    size_t                           len;         /* of the pairs */
    unsigned                         maybe:1;     /* may be stored */
    unsigned                         done:1;      /* stored, at exit */
    u_char                           buf[1];      /* HEAD_MAX, then pairs */
} ngx_http_cfcost_rec_t;


typedef struct {
    ngx_http_cfcost_redis_t          rd;
    ngx_http_cfcost_main_conf_t     *mcf;
    ngx_http_cfcost_writer_stats_t  *stats;
    ngx_log_t                       *log;

    u_char                           id[CFCOST_WRITER_ID_LEN];
    u_char                           stream[CFCOST_RECORD_STREAM_LEN];

    uint64_t                         last_ms;     /* the id generator */
    uint64_t                         last_seq;

    ngx_queue_t                      retry;
    ngx_queue_t                      pending;
    ngx_queue_t                      back;
    ngx_uint_t                       queued;
    ngx_uint_t                       inflight;
    ngx_uint_t                       unreported;  /* lost, not yet in Redis */
    ngx_uint_t                       reporting;

    ngx_event_t                      pause;
    ngx_msec_t                       backoff;

    ngx_event_t                      drain;       /* holds an exiting worker */
    ngx_msec_t                       exit_start;
    ngx_uint_t                       ticks;

    u_char                           foreign[CFCOST_RECORD_STREAM_LEN];

    unsigned                         initialized:1;
    unsigned                         registered:1;
    unsigned                         registering:1;
    unsigned                         paused:1;
    unsigned                         full_logged:1;
    unsigned                         pause_logged:1;
    unsigned                         exit_seen:1;
    unsigned                         spill_logged:1;
    unsigned                         foreign_ok:1;   /* its writer is known */
    unsigned                         foreign_sent:1;
} ngx_http_cfcost_writer_t;


static void ngx_http_cfcost_writer_flush(void);
static void ngx_http_cfcost_writer_register(void);


static ngx_http_cfcost_writer_t  ngx_http_cfcost_wr;

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


#define ngx_http_cfcost_count(field, n)                                      \
    (void) ngx_atomic_fetch_add(&ngx_http_cfcost_wr.stats->field,            \
                                (ngx_atomic_int_t) (n))


/* ---- records -------------------------------------------------------- */


/* gives rec the next entry id: above every id this writer gave before */
static void
ngx_http_cfcost_writer_new_id(ngx_http_cfcost_rec_t *rec)
{
    uint64_t                   now;
    ngx_time_t                *tp;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;

    if (now > wr->last_ms) {
        wr->last_ms = now;
        wr->last_seq = 0;

    } else {
        wr->last_seq++;
    }

    rec->ms = wr->last_ms;
    rec->seq = wr->last_seq;
    ngx_memcpy(rec->stream, wr->stream, sizeof(wr->stream));
}


static size_t
ngx_http_cfcost_writer_id_str(ngx_http_cfcost_rec_t *rec, u_char *buf)
{
    return ngx_sprintf(buf, "%uL-%uL", rec->ms, rec->seq) - buf;
}


static void
ngx_http_cfcost_writer_free(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_wr.queued--;
    ngx_http_cfcost_count(queued, -1);
    ngx_free(rec);
}


/* rec is stored, or set aside for good: its spool file may let it go */
static void
ngx_http_cfcost_writer_settled(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_spool_done(rec->from);
    ngx_http_cfcost_writer_free(rec);
}


/*
 * The whole XADD command of rec: the head is written just before the
 * pairs.  Returns where it starts; *len is its length.
 */
static u_char *
ngx_http_cfcost_writer_command(ngx_http_cfcost_rec_t *rec, size_t *len)
{
    u_char   head[NGX_HTTP_CFCOST_HEAD_MAX], *p, id[NGX_INT64_LEN * 2 + 2];
    size_t   hlen;

    p = ngx_sprintf(head, "*%ui\r\n", 3 + 2 * rec->pairs);
    p = ngx_http_cfcost_bulk(p, "XADD", sizeof("XADD") - 1);
    p = ngx_http_cfcost_bulk(p, rec->stream, sizeof(rec->stream));
    p = ngx_http_cfcost_bulk(p, id, ngx_http_cfcost_writer_id_str(rec, id));

    hlen = p - head;
    p = rec->buf + NGX_HTTP_CFCOST_HEAD_MAX - hlen;
    ngx_memcpy(p, head, hlen);

    *len = hlen + rec->len;

    return p;
}


/* a record Redis will never take: kept in the dead-letter file */
static void
ngx_http_cfcost_writer_dead(ngx_http_cfcost_rec_t *rec, redisReply *reply)
{
    u_char                       *cmd;
    size_t                        len;
    ngx_fd_t                      fd;
    ngx_http_cfcost_writer_t     *wr = &ngx_http_cfcost_wr;
    ngx_http_cfcost_main_conf_t  *mcf = wr->mcf;

    cmd = ngx_http_cfcost_writer_command(rec, &len);

    fd = ngx_open_file(mcf->dead_letter.data, NGX_FILE_APPEND,
                       NGX_FILE_CREATE_OR_OPEN, NGX_FILE_DEFAULT_ACCESS);

    if (fd == NGX_INVALID_FILE
        || ngx_write_fd(fd, cmd, len) != (ssize_t) len)
    {
        ngx_log_error(NGX_LOG_ALERT, wr->log, ngx_errno,
                      "cfcost: Redis refused a usage record for good (%*s) "
                      "and it cannot be written to \"%V\": lost",
                      (size_t) reply->len, reply->str, &mcf->dead_letter);

    } else {
        ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                      "cfcost: Redis refused a usage record for good (%*s); "
                      "it is kept in \"%V\" (replay: redis-cli --pipe)",
                      (size_t) reply->len, reply->str, &mcf->dead_letter);
    }

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(fd);
    }

    ngx_http_cfcost_count(dead, 1);
    wr->unreported++;
    ngx_http_cfcost_writer_settled(rec);
}


/* back, in order, to the head of retry */
static void
ngx_http_cfcost_writer_requeue(void)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (ngx_queue_empty(&wr->back)) {
        return;
    }

    ngx_queue_add(&wr->back, &wr->retry);
    ngx_queue_init(&wr->retry);
    ngx_queue_add(&wr->retry, &wr->back);
    ngx_queue_init(&wr->back);
}


/* Redis said "later": stop sending for a backoff delay */
static void
ngx_http_cfcost_writer_hold(redisReply *reply)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (wr->paused) {
        return;
    }

    if (!wr->pause_logged) {
        ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                      "cfcost: Redis at %V cannot store records now (%*s); "
                      "%ui held, retrying", &wr->mcf->redis_addr,
                      (size_t) reply->len, reply->str, wr->queued);
        wr->pause_logged = 1;
    }

    wr->paused = 1;
    ngx_add_timer(&wr->pause, ngx_http_cfcost_backoff(&wr->backoff));
}


static void
ngx_http_cfcost_writer_pause_handler(ngx_event_t *ev)
{
    ngx_http_cfcost_wr.paused = 0;

    ngx_http_cfcost_writer_requeue();

    if (ngx_http_cfcost_wr.registered) {
        ngx_http_cfcost_writer_flush();

    } else {
        ngx_http_cfcost_writer_register();
    }
}


static void
ngx_http_cfcost_writer_check_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                *reply = r;
    ngx_http_cfcost_rec_t     *rec = data;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    wr->inflight--;

    if (reply == NULL) {
        ngx_queue_insert_tail(&wr->back, &rec->queue);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_cfcost_count(redis_errors, 1);
        ngx_queue_insert_tail(&wr->back, &rec->queue);
        ngx_http_cfcost_writer_hold(reply);
        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        /* stored by an earlier attempt */
        ngx_http_cfcost_count(already, 1);
        ngx_http_cfcost_count(stored, 1);
        ngx_http_cfcost_writer_settled(rec);

    } else {
        /*
         * never stored, and never can be under that id: a new id in this
         * writer's stream; no longer the spooled record it was read as
         */
        ngx_http_cfcost_spool_done(rec->from);
        rec->from = NULL;
        ngx_http_cfcost_writer_new_id(rec);
        rec->maybe = 0;
        ngx_queue_insert_tail(&wr->pending, &rec->queue);
    }

    ngx_http_cfcost_writer_flush();
}


/* is rec in the stream?  XRANGE <stream> <id> <id> */
static void
ngx_http_cfcost_writer_check(ngx_http_cfcost_rec_t *rec)
{
    u_char                     id[NGX_INT64_LEN * 2 + 2];
    size_t                     argvlen[4];
    const char                *argv[4];
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    argv[0] = "XRANGE";
    argv[1] = (char *) rec->stream;
    argv[2] = (char *) id;
    argv[3] = (char *) id;
    argvlen[0] = sizeof("XRANGE") - 1;
    argvlen[1] = sizeof(rec->stream);
    argvlen[2] = ngx_http_cfcost_writer_id_str(rec, id);
    argvlen[3] = argvlen[2];

    if (ngx_http_cfcost_redis_argv(&wr->rd,
                                   ngx_http_cfcost_writer_check_reply, rec,
                                   4, argv, argvlen)
        != NGX_OK)
    {
        rec->maybe = 1;               /* sent again, and checked again */
        ngx_queue_insert_tail(&wr->retry, &rec->queue);
        return;
    }

    wr->inflight++;
}


static ngx_uint_t
ngx_http_cfcost_writer_too_small(redisReply *reply)
{
    return reply->len >= 4 && ngx_strncmp(reply->str, "ERR ", 4) == 0
           && ngx_strstr(reply->str, "equal or smaller") != NULL;
}


static void
ngx_http_cfcost_writer_reply(redisAsyncContext *ac, void *r, void *data)
{
    redisReply                *reply = r;
    ngx_http_cfcost_rec_t     *rec = data;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    wr->inflight--;

    if (reply == NULL) {
        /* the connection went first: Redis may have stored it */
        rec->maybe = 1;
        ngx_queue_insert_tail(&wr->back, &rec->queue);
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_http_cfcost_count(stored, 1);
        ngx_http_cfcost_writer_settled(rec);

        wr->backoff = 0;
        wr->pause_logged = 0;

        ngx_http_cfcost_writer_flush();
        return;
    }

    ngx_http_cfcost_count(redis_errors, 1);

    if (ngx_http_cfcost_writer_too_small(reply)) {
        ngx_http_cfcost_writer_check(rec);
        return;
    }

    if (!ngx_http_cfcost_redis_transient(reply)) {
        ngx_http_cfcost_writer_dead(rec, reply);
        ngx_http_cfcost_writer_flush();
        return;
    }

    /* not run: the same again later (maybe stays what it was) */
    ngx_queue_insert_tail(&wr->back, &rec->queue);
    ngx_http_cfcost_writer_hold(reply);
}


static ngx_int_t
ngx_http_cfcost_writer_send(ngx_http_cfcost_rec_t *rec)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    cmd = ngx_http_cfcost_writer_command(rec, &len);

    if (ngx_http_cfcost_redis_formatted(&wr->rd, ngx_http_cfcost_writer_reply,
                                        rec, cmd, len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    wr->inflight++;

    return NGX_OK;
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


static void
ngx_http_cfcost_writer_foreign_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                *reply = r;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    wr->foreign_sent = 0;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_cfcost_writer_hold(reply);
        return;
    }

    wr->foreign_ok = 1;
    ngx_http_cfcost_writer_flush();
}


/*
 * rec belongs to another writer's stream (read back from its spool): that
 * writer may never have reached Redis, so readers learn of its stream
 * first.  Returns NGX_OK when rec may be sent now.
 */
static ngx_int_t
ngx_http_cfcost_writer_foreign(ngx_http_cfcost_rec_t *rec)
{
    size_t                     argvlen[3];
    const char                *argv[3];
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (ngx_memcmp(rec->stream, wr->stream, sizeof(wr->stream)) == 0) {
        return NGX_OK;
    }

    if (ngx_memcmp(rec->stream, wr->foreign, sizeof(wr->foreign)) == 0
        && wr->foreign_ok)
    {
        return NGX_OK;
    }

    if (wr->foreign_sent) {
        return NGX_AGAIN;
    }

    ngx_memcpy(wr->foreign, rec->stream, sizeof(wr->foreign));
    wr->foreign_ok = 0;

    argv[0] = "SADD";
    argv[1] = CFCOST_WRITERS_SET;
    argv[2] = (char *) rec->stream + sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1;
    argvlen[0] = sizeof("SADD") - 1;
    argvlen[1] = sizeof(CFCOST_WRITERS_SET) - 1;
    argvlen[2] = CFCOST_WRITER_ID_LEN;

    if (ngx_http_cfcost_redis_argv(&wr->rd,
                                   ngx_http_cfcost_writer_foreign_reply, NULL,
                                   3, argv, argvlen)
        == NGX_OK)
    {
        wr->foreign_sent = 1;
    }

    return NGX_AGAIN;
}


/* a record read back from a spool file joins the memory queue */
static void
ngx_http_cfcost_writer_unspool(ngx_http_cfcost_spooled_t *sp, void *data)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    rec = ngx_alloc(offsetof(ngx_http_cfcost_rec_t, buf)
                    + NGX_HTTP_CFCOST_HEAD_MAX + sp->pairs_len, wr->log);
    if (rec == NULL) {
        /* it stays in its file: the next worker to adopt it sends it */
        return;
    }

    rec->from = data;
    ngx_memcpy(rec->stream, sp->stream, sizeof(rec->stream));
    rec->ms = sp->ms;
    rec->seq = sp->seq;
    rec->pairs = sp->npairs;
    rec->len = sp->pairs_len;
    rec->maybe = 1;                  /* it may have been sent before */
    ngx_memcpy(rec->buf + NGX_HTTP_CFCOST_HEAD_MAX, sp->pairs, sp->pairs_len);

    wr->queued++;
    ngx_http_cfcost_count(queued, 1);
    ngx_http_cfcost_count(replayed, 1);
    wr->drain.cancelable = 0;

    ngx_queue_insert_tail(&wr->pending, &rec->queue);
}


/*
 * Once the memory queue has drained, the next spooled records join it.
 * Returns 1 when some did.
 */
static ngx_uint_t
ngx_http_cfcost_writer_replay(void)
{
    ngx_http_cfcost_spool_file_t  *f;
    ngx_http_cfcost_writer_t      *wr = &ngx_http_cfcost_wr;

    if (wr->mcf->spool_dir.len == 0
        || !ngx_queue_empty(&wr->pending) || !ngx_queue_empty(&wr->retry)
        || wr->inflight >= NGX_HTTP_CFCOST_INFLIGHT_MAX / 2
        || wr->queued >= wr->mcf->queue_max / 2)
    {
        return 0;
    }

    f = ngx_http_cfcost_spool_next(wr->mcf, wr->log, wr->id);
    if (f == NULL) {
        return 0;
    }

    return ngx_http_cfcost_spool_read(f, NGX_HTTP_CFCOST_REPLAY_BATCH,
                                      ngx_http_cfcost_writer_unspool, f)
           > 0;
}


/* sends held records in id order, keeping at most INFLIGHT_MAX unacked */
static void
ngx_http_cfcost_writer_flush(void)
{
    ngx_uint_t                 again;
    ngx_queue_t               *q;
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (!wr->registered || wr->paused || !wr->rd.connected) {
        return;
    }

    do {
        while (wr->inflight < NGX_HTTP_CFCOST_INFLIGHT_MAX) {

            again = !ngx_queue_empty(&wr->retry);

            if (again) {
                q = ngx_queue_head(&wr->retry);

            } else if (!ngx_queue_empty(&wr->pending)) {
                q = ngx_queue_head(&wr->pending);

            } else {
                break;
            }

            rec = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);

            if (ngx_http_cfcost_writer_foreign(rec) != NGX_OK
                || ngx_http_cfcost_writer_send(rec) != NGX_OK)
            {
                goto done;
            }

            if (again || rec->maybe) {
                ngx_http_cfcost_count(retried, 1);
            }

            ngx_queue_remove(q);
        }

    } while (ngx_http_cfcost_writer_replay());

done:

    ngx_http_cfcost_writer_report();
}


static void
ngx_http_cfcost_writer_registered(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                *reply = r;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    wr->registering = 0;

    if (reply == NULL) {
        return;                            /* on_up registers again */
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_cfcost_writer_hold(reply);
        return;
    }

    wr->registered = 1;
    ngx_http_cfcost_writer_flush();
}


/* SADD cfcost:writers <id>: readers find this writer's stream there */
static void
ngx_http_cfcost_writer_register(void)
{
    size_t                     argvlen[3];
    const char                *argv[3];
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (wr->registered || wr->registering) {
        return;
    }

    argv[0] = "SADD";
    argv[1] = CFCOST_WRITERS_SET;
    argv[2] = (char *) wr->id;
    argvlen[0] = sizeof("SADD") - 1;
    argvlen[1] = sizeof(CFCOST_WRITERS_SET) - 1;
    argvlen[2] = sizeof(wr->id);

    if (ngx_http_cfcost_redis_argv(&wr->rd, ngx_http_cfcost_writer_registered,
                                   NULL, 3, argv, argvlen)
        == NGX_OK)
    {
        wr->registering = 1;
    }
}


static void
ngx_http_cfcost_writer_up(ngx_http_cfcost_redis_t *rd)
{
    ngx_http_cfcost_wr.foreign_ok = 0;
    ngx_http_cfcost_wr.foreign_sent = 0;
    ngx_http_cfcost_wr.registered = 0;
    ngx_http_cfcost_writer_register();
}


static void
ngx_http_cfcost_writer_down(ngx_http_cfcost_redis_t *rd)
{
    ngx_http_cfcost_wr.registered = 0;
    ngx_http_cfcost_wr.registering = 0;
    ngx_http_cfcost_wr.foreign_ok = 0;
    ngx_http_cfcost_wr.foreign_sent = 0;

    ngx_http_cfcost_writer_requeue();
}


/*
 * While records wait, this timer is not cancelable: a gracefully exiting
 * worker (reload, quit) stays, and keeps sending, until they are stored
 * or cfcost_record_drain has passed; the exit pass then takes what is
 * left.
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
            ev->cancelable = 1;
            return;
        }
    }

    if (++wr->ticks % NGX_HTTP_CFCOST_SYNC_TICKS == 0) {
        ngx_http_cfcost_spool_sync();
    }

    ev->cancelable = (wr->queued == 0);
    ngx_add_timer(ev, 100);
}


/* ---- the log phase's side ------------------------------------------ */


u_char *
ngx_http_cfcost_writer_alloc(size_t len)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (!wr->initialized) {
        return NULL;
    }

    ngx_http_cfcost_count(made, 1);

    if (wr->queued >= wr->mcf->queue_max
        && ngx_http_cfcost_spool_full(wr->mcf, len))
    {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;

        if (!wr->full_logged) {
            ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                          "cfcost: record queue is full (%ui records)%s, "
                          "dropping records until Redis at %V catches up",
                          wr->queued, wr->mcf->spool_dir.len
                                      ? " and so is the spool" : "",
                          &wr->mcf->redis_addr);
            wr->full_logged = 1;
        }

        return NULL;
    }

    rec = ngx_alloc(offsetof(ngx_http_cfcost_rec_t, buf)
                    + NGX_HTTP_CFCOST_HEAD_MAX + len, wr->log);
    if (rec == NULL) {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;
        return NULL;
    }

    return rec->buf + NGX_HTTP_CFCOST_HEAD_MAX;
}


/*
 * The memory queue is full: rec goes to the spool (it comes back when the
 * queue has drained), or, when the spool cannot take it, it is lost and
 * counted.  rec is freed either way.
 */
static ngx_int_t
ngx_http_cfcost_writer_spill(ngx_http_cfcost_rec_t *rec)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_int_t                  rc;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    cmd = ngx_http_cfcost_writer_command(rec, &len);
    rc = ngx_http_cfcost_spool_append(wr->mcf, wr->log, wr->id, cmd, len);

    if (rc == NGX_OK) {
        ngx_http_cfcost_count(spooled, 1);

        if (!wr->spill_logged) {
            ngx_log_error(NGX_LOG_WARN, wr->log, 0,
                          "cfcost: record queue is full (%ui records): "
                          "records go to the spool until Redis at %V "
                          "catches up", wr->queued, &wr->mcf->redis_addr);
            wr->spill_logged = 1;
        }

    } else {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;

        if (!wr->full_logged) {
            ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                          "cfcost: record queue and spool are full, "
                          "dropping records until Redis at %V catches up",
                          &wr->mcf->redis_addr);
            wr->full_logged = 1;
        }
    }

    ngx_free(rec);

    return rc;
}


ngx_uint_t
ngx_http_cfcost_writer_refusing(ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    return mcf->spool_refuse && wr->initialized
           && wr->queued >= mcf->queue_max
           && ngx_http_cfcost_spool_full(mcf, NGX_HTTP_CFCOST_RECORD_MAX);
}


void
ngx_http_cfcost_writer_push(u_char *pairs, size_t len, ngx_uint_t npairs)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    rec = (ngx_http_cfcost_rec_t *)
              (pairs - NGX_HTTP_CFCOST_HEAD_MAX
               - offsetof(ngx_http_cfcost_rec_t, buf));

    rec->from = NULL;
    rec->pairs = npairs;
    rec->len = len;
    rec->maybe = 0;
    ngx_http_cfcost_writer_new_id(rec);

    if (wr->queued >= wr->mcf->queue_max) {
        ngx_http_cfcost_writer_spill(rec);
        return;
    }

    wr->queued++;
    ngx_http_cfcost_count(queued, 1);
    wr->drain.cancelable = 0;            /* a graceful exit waits for it */

    if (wr->queued < wr->mcf->queue_max / 2) {
        wr->full_logged = 0;
        wr->spill_logged = 0;
    }

    ngx_queue_insert_tail(&wr->pending, &rec->queue);
    ngx_http_cfcost_writer_flush();
}


/* ---- process -------------------------------------------------------- */


ngx_int_t
ngx_http_cfcost_writer_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf)
{
    u_char                     rnd[(CFCOST_WRITER_ID_LEN - 1) / 2], *p;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    ngx_memzero(wr, sizeof(ngx_http_cfcost_writer_t));

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "cfcost: no random bytes for the writer id");
        return NGX_ERROR;
    }

    p = ngx_cpymem(wr->id, CFCOST_WRITER_TAG, sizeof(CFCOST_WRITER_TAG) - 1);
    ngx_hex_dump(p, rnd, sizeof(rnd));

    p = ngx_cpymem(wr->stream, CFCOST_RECORD_STREAM_PREFIX,
                   sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1);
    p = ngx_cpymem(p, wr->id, sizeof(wr->id));
    ngx_memcpy(p, CFCOST_RECORD_STREAM_SUFFIX,
               sizeof(CFCOST_RECORD_STREAM_SUFFIX) - 1);

    wr->mcf = mcf;
    wr->log = cycle->log;
    wr->stats = ngx_http_cfcost_writer_stats(mcf);

    if (wr->stats == NULL) {
        wr->stats = &ngx_http_cfcost_no_stats;
    }

    ngx_queue_init(&wr->retry);
    ngx_queue_init(&wr->pending);
    ngx_queue_init(&wr->back);

    wr->pause.handler = ngx_http_cfcost_writer_pause_handler;
    wr->pause.log = cycle->log;
    wr->pause.data = wr;
    wr->pause.cancelable = 1;

    wr->drain.handler = ngx_http_cfcost_writer_drain_handler;
    wr->drain.log = cycle->log;
    wr->drain.data = wr;
    wr->drain.cancelable = 1;
    ngx_add_timer(&wr->drain, 100);

    wr->initialized = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "cfcost: writer %*s", sizeof(wr->id), wr->id);

    wr->rd.on_up = ngx_http_cfcost_writer_up;
    wr->rd.on_down = ngx_http_cfcost_writer_down;
    ngx_http_cfcost_redis_start(&wr->rd, mcf, cycle->log, "records");

    return NGX_OK;
}


/* ---- exit: a blocking last pass ------------------------------------ */


/*
 * Moves every held record of this worker, in id order, into all[];
 * returns how many.  Records read back from a spool file are freed: they
 * are still in that file, which the next worker adopts.
 */
static ngx_uint_t
ngx_http_cfcost_writer_collect(ngx_http_cfcost_rec_t **all)
{
    ngx_uint_t                 i, n;
    ngx_queue_t               *q, *heads[2];
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    ngx_http_cfcost_writer_requeue();

    heads[0] = &wr->retry;
    heads[1] = &wr->pending;
    n = 0;

    for (i = 0; i < 2; i++) {
        while (!ngx_queue_empty(heads[i])) {
            q = ngx_queue_head(heads[i]);
            ngx_queue_remove(q);
            rec = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);

            if (rec->from) {
                ngx_http_cfcost_writer_free(rec);
                continue;
            }

            rec->done = 0;
            all[n++] = rec;
        }
    }

    return n;
}


/*
 * One record over the blocking connection: returns 1 when stored (now or
 * before), 0 when not.  A refused id is looked up and, when absent, the
 * record is sent once more under a new one.
 */
static ngx_uint_t
ngx_http_cfcost_writer_sync_one(redisContext *c, ngx_http_cfcost_rec_t *rec)
{
    u_char      *cmd, id[NGX_INT64_LEN * 2 + 2];
    size_t       len, idlen;
    ngx_uint_t   round, ok, small, found;
    redisReply  *reply;

    for (round = 0; round < 2; round++) {
        cmd = ngx_http_cfcost_writer_command(rec, &len);
        redisAppendFormattedCommand(c, (char *) cmd, len);

        if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
            return 0;
        }

        ok = (reply->type != REDIS_REPLY_ERROR);
        small = !ok && ngx_http_cfcost_writer_too_small(reply);
        freeReplyObject(reply);

        if (ok || !small) {
            return ok;
        }

        idlen = ngx_http_cfcost_writer_id_str(rec, id);
        reply = redisCommand(c, "XRANGE %b %b %b", rec->stream,
                             sizeof(rec->stream), id, idlen, id, idlen);
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(reply);
            return 0;
        }

        found = (reply->elements > 0);
        freeReplyObject(reply);

        if (found) {
            ngx_http_cfcost_count(already, 1);
            return 1;
        }

        ngx_http_cfcost_writer_new_id(rec);
    }

    return 0;
}


/* pipelined XADDs, replies in order; returns how many were stored */
static ngx_uint_t
ngx_http_cfcost_writer_sync(redisContext *c, ngx_http_cfcost_rec_t **all,
    ngx_uint_t n)
{
    u_char      *cmd;
    size_t       len;
    ngx_uint_t   i, stored;
    redisReply  *reply;

    reply = redisCommand(c, "SADD %s %b", CFCOST_WRITERS_SET,
                         ngx_http_cfcost_wr.id,
                         sizeof(ngx_http_cfcost_wr.id));
    if (reply == NULL) {
        return 0;
    }

    freeReplyObject(reply);

    for (i = 0; i < n; i++) {
        cmd = ngx_http_cfcost_writer_command(all[i], &len);
        redisAppendFormattedCommand(c, (char *) cmd, len);
    }

    for (i = 0, stored = 0; i < n; i++) {
        if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
            return stored;
        }

        all[i]->done = (reply->type != REDIS_REPLY_ERROR);
        stored += all[i]->done;

        freeReplyObject(reply);
    }

    /* the refused ones, one by one: stored before, or a new id */
    for (i = 0; i < n; i++) {
        if (!all[i]->done && ngx_http_cfcost_writer_sync_one(c, all[i])) {
            all[i]->done = 1;
            stored++;
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

        cmd = ngx_http_cfcost_writer_command(all[i], &len);

        if (ngx_http_cfcost_spool_append(wr->mcf, wr->log, wr->id, cmd, len)
            == NGX_OK)
        {
            all[i]->done = 1;
            spooled++;
        }
    }

    ngx_http_cfcost_count(spooled, spooled);

    return spooled;
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
    ngx_http_cfcost_redis_close(&wr->rd);   /* unacked records: back */

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

        if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
            stored = ngx_http_cfcost_writer_sync(c, all, n);
            ngx_http_cfcost_count(stored, stored);
        }
    }

    spooled = ngx_http_cfcost_writer_spool_rest(all, n);
    lost = wr->queued - stored - spooled;

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
