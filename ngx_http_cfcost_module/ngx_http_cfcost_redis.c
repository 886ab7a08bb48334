/*
 * hiredis on nginx's event loop.
 *
 * Each worker keeps one async connection.  hiredis owns the socket; nginx
 * gets a connection structure around the same fd only to watch it, with
 * level-triggered events (hiredis reads at most 16K per call, so an
 * edge-triggered event could leave bytes waiting for an event that never
 * comes).  Debian's hiredis 0.14 has no timeouts: a watchdog timer drops a
 * connection whose replies stop coming, and a capped, jittered backoff
 * reconnects.
 *
 * Records are formatted XADD commands.  A record stays in this worker's
 * memory until Redis acknowledges it: requests never wait for Redis, and a
 * record whose connection died before the reply is sent again -- but only
 * if it is not in the stream already: Redis may have appended it and lost
 * only the reply.  A script looks for the request ids in the stretch of
 * stream those records could have reached (from their first sending to
 * the loss of the connection, with a margin for clock skew) and appends
 * the missing ones, so the stream holds each request once.
 */

#include "ngx_http_cfcost_redis.h"


#define NGX_HTTP_CFCOST_INFLIGHT_MAX   1024
#define NGX_HTTP_CFCOST_BACKOFF_MIN    100
#define NGX_HTTP_CFCOST_BACKOFF_MAX    5000


#define NGX_HTTP_CFCOST_SKEW_MS        5000    /* gateway vs Redis clocks */


typedef struct {
    ngx_queue_t                   queue;
    uint64_t                      sent_ms;     /* first sent; 0: never */
    u_char                        rid[NGX_HTTP_CFCOST_ID_LEN];
    size_t                        pairs;       /* field-value pairs */
    size_t                        pairs_off;   /* where they start in cmd */
    size_t                        len;
    u_char                        cmd[1];      /* XADD stream * pairs */
} ngx_http_cfcost_rec_t;


typedef struct {
    ngx_uint_t                    n;
    ngx_http_cfcost_rec_t        *recs[1];
} ngx_http_cfcost_resend_t;


/*
 * KEYS[1] the stream; ARGV: min id, max id, n, then per record its
 * request id, its number of field/value arguments, and those.  Appends
 * the records whose request id is not in the stream between min and max.
 */
static const char  ngx_http_cfcost_resend_lua[] =
    "local want, recs, i = {}, {}, 4\n"
    "for r = 1, tonumber(ARGV[3]) do\n"
    "  local nf = tonumber(ARGV[i + 1])\n"
    "  want[ARGV[i]] = true\n"
    "  recs[r] = { ARGV[i], i + 2, i + 1 + nf }\n"
    "  i = i + 2 + nf\n"
    "end\n"
    "for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])) do\n"
    "  local f = e[2]\n"
    "  if f[3] == '" CFCOST_R_REQUEST_ID "' and want[f[4]] then\n"
    "    want[f[4]] = false\n"
    "  end\n"
    "end\n"
    "local added = 0\n"
    "for _, rec in ipairs(recs) do\n"
    "  if want[rec[1]] then\n"
    "    redis.call('XADD', KEYS[1], '*', unpack(ARGV, rec[2], rec[3]))\n"
    "    added = added + 1\n"
    "  end\n"
    "end\n"
    "return added\n";


typedef struct {
    redisAsyncContext            *ac;
    ngx_connection_t             *conn;
    ngx_http_cfcost_main_conf_t  *mcf;
    ngx_log_t                    *log;

    ngx_event_t                   reconnect;
    ngx_event_t                   watchdog;
    ngx_msec_t                    backoff;
    ngx_msec_t                    progress;    /* last sign of life */

    ngx_queue_t                   retry;       /* sent, not acknowledged */
    ngx_queue_t                   pending;     /* never sent */
    ngx_uint_t                    queued;      /* all records held */
    ngx_uint_t                    inflight;
    ngx_uint_t                    dropped;     /* not yet counted in Redis */
    ngx_uint_t                    reporting;   /* drops being counted */
    uint64_t                      lost_ms;     /* the last connection lost */
    ngx_uint_t                    resending;   /* a re-send is in flight */

    unsigned                      initialized:1;
    unsigned                      connected:1;
    unsigned                      exiting:1;
    unsigned                      down_logged:1;
    unsigned                      full_logged:1;
} ngx_http_cfcost_redis_t;


static void ngx_http_cfcost_redis_connect(void);
static void ngx_http_cfcost_redis_schedule(void);
static void ngx_http_cfcost_redis_flush(void);


static ngx_http_cfcost_redis_t  ngx_http_cfcost_rd;


static uint64_t
ngx_http_cfcost_wall_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


/* hiredis event hooks: idempotent, as hiredis expects */

static void
ngx_http_cfcost_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_cfcost_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_cfcost_redis_add_write(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_cfcost_redis_del_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/*
 * Runs when hiredis frees its context, possibly from inside one of our own
 * handlers.  The fd belongs to hiredis, which closes it: forget it here
 * (c->fd = -1 also makes nginx ignore a stale event already returned by
 * epoll for this connection).
 */
static void
ngx_http_cfcost_redis_cleanup(void *data)
{
    ngx_connection_t  *c = data;

    ngx_http_cfcost_redis_del_read(c);
    ngx_http_cfcost_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    ngx_http_cfcost_rd.conn = NULL;
}


static void
ngx_http_cfcost_redis_read_handler(ngx_event_t *ev)
{
    if (ngx_http_cfcost_rd.ac != NULL) {
        ngx_http_cfcost_rd.progress = ngx_current_msec;
        redisAsyncHandleRead(ngx_http_cfcost_rd.ac);
    }
}


static void
ngx_http_cfcost_redis_write_handler(ngx_event_t *ev)
{
    if (ngx_http_cfcost_rd.ac != NULL) {
        redisAsyncHandleWrite(ngx_http_cfcost_rd.ac);
    }
}


static void
ngx_http_cfcost_redis_lost(const char *why, const char *err)
{
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    rd->ac = NULL;
    rd->connected = 0;
    rd->lost_ms = ngx_http_cfcost_wall_ms();

    if (rd->exiting) {
        return;
    }

    if (!rd->down_logged) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cfcost: %s Redis at %V: %s; records are kept in "
                      "memory until it is back", why,
                      &rd->mcf->redis_addr, err);
        rd->down_logged = 1;
    }

    ngx_http_cfcost_redis_schedule();
}


static void
ngx_http_cfcost_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        ngx_http_cfcost_redis_lost("cannot connect to", ac->errstr);
        return;
    }

    if (rd->down_logged) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "cfcost: Redis at %V is reachable again, %ui records "
                      "queued", &rd->mcf->redis_addr, rd->queued);
    }

    rd->connected = 1;
    rd->down_logged = 0;
    rd->full_logged = 0;
    rd->backoff = 0;
    rd->progress = ngx_current_msec;

    ngx_http_cfcost_redis_flush();
}


static void
ngx_http_cfcost_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_cfcost_redis_lost("lost the connection to",
                               status == REDIS_OK ? "closed" : ac->errstr);
}


static void
ngx_http_cfcost_redis_connect(void)
{
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_cfcost_redis_t      *rd = &ngx_http_cfcost_rd;
    ngx_http_cfcost_main_conf_t  *mcf = rd->mcf;

    if (mcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((char *) mcf->redis_unix.data);

    } else {
        ac = redisAsyncConnect((char *) mcf->redis_host.data,
                               (int) mcf->redis_port);
    }

    if (ac == NULL) {
        ngx_http_cfcost_redis_lost("cannot connect to", "out of memory");
        return;
    }

    if (ac->err) {
        ngx_http_cfcost_redis_lost("cannot connect to", ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_cfcost_redis_lost("cannot connect to",
                                   "no free nginx connection");
        return;
    }

    c->read->handler = ngx_http_cfcost_redis_read_handler;
    c->write->handler = ngx_http_cfcost_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->log = rd->log;

    rd->ac = ac;
    rd->conn = c;
    rd->progress = ngx_current_msec;

    /* hooks first: setting the connect callback already asks for a write */
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_cfcost_redis_add_read;
    ac->ev.delRead = ngx_http_cfcost_redis_del_read;
    ac->ev.addWrite = ngx_http_cfcost_redis_add_write;
    ac->ev.delWrite = ngx_http_cfcost_redis_del_write;
    ac->ev.cleanup = ngx_http_cfcost_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_cfcost_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_cfcost_redis_on_disconnect);
}


static void
ngx_http_cfcost_redis_reconnect_handler(ngx_event_t *ev)
{
    if (ngx_http_cfcost_rd.ac == NULL && !ngx_exiting && !ngx_terminate) {
        ngx_http_cfcost_redis_connect();
    }
}


/* capped exponential backoff with jitter, so workers do not reconnect in
 * lockstep */
static void
ngx_http_cfcost_redis_schedule(void)
{
    ngx_msec_t                delay;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (rd->reconnect.timer_set) {
        return;
    }

    rd->backoff = rd->backoff ? rd->backoff * 2 : NGX_HTTP_CFCOST_BACKOFF_MIN;
    if (rd->backoff > NGX_HTTP_CFCOST_BACKOFF_MAX) {
        rd->backoff = NGX_HTTP_CFCOST_BACKOFF_MAX;
    }

    delay = rd->backoff / 2 + (ngx_msec_t) ngx_random() % (rd->backoff / 2);

    ngx_add_timer(&rd->reconnect, delay);
}


/*
 * Drops a connection whose replies are overdue, or whose connect hangs.
 * While replies are outstanding the timer is not cancelable, so a
 * gracefully exiting worker waits for them (at most one timeout).
 */
static void
ngx_http_cfcost_redis_watchdog_handler(ngx_event_t *ev)
{
    ngx_uint_t                waiting;
    ngx_msec_t                timeout, period;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    timeout = rd->mcf->redis_timeout;
    period = timeout / 4 > 10 ? timeout / 4 : 10;

    if (rd->ac != NULL) {
        waiting = !rd->connected || rd->ac->replies.head != NULL;

        if (waiting && ngx_current_msec - rd->progress >= timeout) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cfcost: Redis at %V did not answer within %M ms, "
                          "reconnecting", &rd->mcf->redis_addr, timeout);

            rd->down_logged = 1;
            redisAsyncFree(rd->ac);   /* replies fail, records requeue */
            rd->ac = NULL;
            rd->connected = 0;
            rd->lost_ms = ngx_http_cfcost_wall_ms();
            ngx_http_cfcost_redis_schedule();
        }
    }

    ev->cancelable = (rd->ac == NULL || rd->ac->replies.head == NULL);

    ngx_add_timer(ev, period);
}


ngx_int_t
ngx_http_cfcost_redis_command(redisCallbackFn *fn, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_uint_t                idle;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (rd->ac == NULL) {
        return NGX_DECLINED;
    }

    idle = (rd->ac->replies.head == NULL);

    if (redisAsyncCommandArgv(rd->ac, fn, data, argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    if (idle) {
        rd->progress = ngx_current_msec;
    }

    rd->watchdog.cancelable = 0;

    return NGX_OK;
}


static void
ngx_http_cfcost_redis_free_record(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_rd.queued--;
    ngx_free(rec);
}


static void
ngx_http_cfcost_redis_record_reply(redisAsyncContext *ac, void *r, void *data)
{
    redisReply             *reply = r;
    ngx_http_cfcost_rec_t  *rec = data;

    ngx_http_cfcost_rd.inflight--;

    if (reply == NULL) {
        /* the connection went away first: send it again later */
        ngx_queue_insert_tail(&ngx_http_cfcost_rd.retry, &rec->queue);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_cfcost_rd.log, 0,
                      "cfcost: Redis refused a usage record: %*s",
                      (size_t) reply->len, reply->str);
        ngx_http_cfcost_rd.dropped++;
    }

    ngx_http_cfcost_redis_free_record(rec);
    ngx_http_cfcost_redis_flush();
}


static void
ngx_http_cfcost_redis_dropped_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply               *reply = r;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        rd->dropped += rd->reporting;     /* count them next time */
    }

    rd->reporting = 0;
}


static ngx_int_t
ngx_http_cfcost_redis_send_record(ngx_http_cfcost_rec_t *rec)
{
    ngx_uint_t                idle;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    idle = (rd->ac->replies.head == NULL);

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_cfcost_redis_record_reply,
                                   rec, (char *) rec->cmd, rec->len)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    if (idle) {
        rd->progress = ngx_current_msec;
    }

    if (rec->sent_ms == 0) {
        rec->sent_ms = ngx_http_cfcost_wall_ms();
    }

    rd->inflight++;

    return NGX_OK;
}


size_t
ngx_http_cfcost_bulk_len(size_t len)
{
    return 1 + NGX_SIZE_T_LEN + 2 + len + 2;     /* $<len>\r\n<data>\r\n */
}


u_char *
ngx_http_cfcost_bulk(u_char *p, const void *data, size_t len)
{
    p = ngx_sprintf(p, "$%uz\r\n", len);
    p = ngx_cpymem(p, data, len);
    *p++ = '\r';
    *p++ = '\n';

    return p;
}


/*
 * The EVAL of ngx_http_cfcost_resend_lua for n records, formatted, in
 * memory the caller frees.  The stretch searched runs from the earliest
 * first sending to the last connection loss, each widened by the skew.
 */
static u_char *
ngx_http_cfcost_resend_cmd(ngx_http_cfcost_rec_t **recs, ngx_uint_t n,
    size_t *len)
{
    u_char      *cmd, *p, lo[NGX_INT64_LEN], hi[NGX_INT64_LEN],
                 num[NGX_INT64_LEN];
    size_t       size, lo_len, hi_len, num_len;
    uint64_t     first;
    ngx_uint_t   i, elts;

    first = ngx_http_cfcost_rd.lost_ms;

    for (i = 0; i < n; i++) {
        if (recs[i]->sent_ms && recs[i]->sent_ms < first) {
            first = recs[i]->sent_ms;
        }
    }

    first = first > NGX_HTTP_CFCOST_SKEW_MS
            ? first - NGX_HTTP_CFCOST_SKEW_MS : 0;

    lo_len = ngx_sprintf(lo, "%uL", first) - lo;
    hi_len = ngx_sprintf(hi, "%uL",
                         ngx_http_cfcost_rd.lost_ms + NGX_HTTP_CFCOST_SKEW_MS)
             - hi;
    num_len = ngx_sprintf(num, "%ui", n) - num;

    elts = 7;
    size = 16 + ngx_http_cfcost_bulk_len(4)
           + ngx_http_cfcost_bulk_len(sizeof(ngx_http_cfcost_resend_lua) - 1)
           + ngx_http_cfcost_bulk_len(1)
           + ngx_http_cfcost_bulk_len(sizeof(CFCOST_RECORD_STREAM) - 1)
           + ngx_http_cfcost_bulk_len(lo_len)
           + ngx_http_cfcost_bulk_len(hi_len)
           + ngx_http_cfcost_bulk_len(num_len);

    for (i = 0; i < n; i++) {
        elts += 2 + 2 * recs[i]->pairs;
        size += ngx_http_cfcost_bulk_len(NGX_HTTP_CFCOST_ID_LEN)
                + ngx_http_cfcost_bulk_len(NGX_INT64_LEN)
                + recs[i]->len - recs[i]->pairs_off;
    }

    cmd = ngx_alloc(size, ngx_http_cfcost_rd.log);
    if (cmd == NULL) {
        return NULL;
    }

    p = ngx_sprintf(cmd, "*%ui\r\n", elts);
    p = ngx_http_cfcost_bulk(p, "EVAL", 4);
    p = ngx_http_cfcost_bulk(p, ngx_http_cfcost_resend_lua,
                             sizeof(ngx_http_cfcost_resend_lua) - 1);
    p = ngx_http_cfcost_bulk(p, "1", 1);
    p = ngx_http_cfcost_bulk(p, CFCOST_RECORD_STREAM,
                             sizeof(CFCOST_RECORD_STREAM) - 1);
    p = ngx_http_cfcost_bulk(p, lo, lo_len);
    p = ngx_http_cfcost_bulk(p, hi, hi_len);
    p = ngx_http_cfcost_bulk(p, num, num_len);

    for (i = 0; i < n; i++) {
        p = ngx_http_cfcost_bulk(p, recs[i]->rid, NGX_HTTP_CFCOST_ID_LEN);
        num_len = ngx_sprintf(num, "%uz", 2 * recs[i]->pairs) - num;
        p = ngx_http_cfcost_bulk(p, num, num_len);
        p = ngx_cpymem(p, recs[i]->cmd + recs[i]->pairs_off,
                       recs[i]->len - recs[i]->pairs_off);
    }

    *len = p - cmd;

    return cmd;
}


static void
ngx_http_cfcost_redis_resend_reply(redisAsyncContext *ac, void *r,
    void *data)
{
    redisReply                *reply = r;
    ngx_uint_t                 i;
    ngx_http_cfcost_resend_t  *rs = data;
    ngx_http_cfcost_redis_t   *rd = &ngx_http_cfcost_rd;

    rd->inflight -= rs->n;
    rd->resending = 0;

    if (reply == NULL) {
        for (i = 0; i < rs->n; i++) {     /* lost again: same again later */
            ngx_queue_insert_tail(&rd->retry, &rs->recs[i]->queue);
        }

        ngx_free(rs);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cfcost: Redis refused to re-send %ui usage records: "
                      "%*s", rs->n, (size_t) reply->len, reply->str);
        rd->dropped += rs->n;
    }

    for (i = 0; i < rs->n; i++) {
        ngx_http_cfcost_redis_free_record(rs->recs[i]);
    }

    ngx_free(rs);
    ngx_http_cfcost_redis_flush();
}


/* sends the records whose fate is unknown, all in one conditional EVAL */
static ngx_int_t
ngx_http_cfcost_redis_resend(void)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_http_cfcost_resend_t  *rs;
    ngx_http_cfcost_redis_t   *rd = &ngx_http_cfcost_rd;

    for (n = 0, q = ngx_queue_head(&rd->retry);
         q != ngx_queue_sentinel(&rd->retry) && n < NGX_HTTP_CFCOST_INFLIGHT_MAX;
         q = ngx_queue_next(q))
    {
        n++;
    }

    rs = ngx_alloc(offsetof(ngx_http_cfcost_resend_t, recs)
                   + n * sizeof(ngx_http_cfcost_rec_t *), rd->log);
    if (rs == NULL) {
        return NGX_ERROR;
    }

    for (rs->n = 0; rs->n < n; rs->n++) {
        q = ngx_queue_head(&rd->retry);
        rs->recs[rs->n] = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);
        ngx_queue_remove(q);
    }

    cmd = ngx_http_cfcost_resend_cmd(rs->recs, n, &len);

    if (cmd == NULL
        || redisAsyncFormattedCommand(rd->ac,
                                      ngx_http_cfcost_redis_resend_reply, rs,
                                      (char *) cmd, len)
           != REDIS_OK)
    {
        while (n--) {                      /* back where they were */
            ngx_queue_insert_head(&rd->retry, &rs->recs[n]->queue);
        }

        if (cmd) {
            ngx_free(cmd);
        }

        ngx_free(rs);
        return NGX_ERROR;
    }

    ngx_free(cmd);                         /* hiredis copied it */

    rd->inflight += rs->n;
    rd->resending = 1;
    rd->progress = ngx_current_msec;

    return NGX_OK;
}


static void
ngx_http_cfcost_redis_report_drops(void)
{
    u_char                    num[NGX_INT_T_LEN];
    const char               *argv[4];
    size_t                    argvlen[4];
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (rd->dropped == 0 || rd->reporting) {
        return;
    }

    argv[0] = "HINCRBY";
    argv[1] = CFCOST_GATEWAY_HASH;
    argv[2] = CFCOST_GATEWAY_F_DROPPED;
    argv[3] = (char *) num;
    argvlen[0] = sizeof("HINCRBY") - 1;
    argvlen[1] = sizeof(CFCOST_GATEWAY_HASH) - 1;
    argvlen[2] = sizeof(CFCOST_GATEWAY_F_DROPPED) - 1;
    argvlen[3] = ngx_sprintf(num, "%ui", rd->dropped) - num;

    if (ngx_http_cfcost_redis_command(ngx_http_cfcost_redis_dropped_reply,
                                      NULL, 4, argv, argvlen)
        == NGX_OK)
    {
        rd->reporting = rd->dropped;
        rd->dropped = 0;
    }
}


/* sends held records, oldest first, keeping at most INFLIGHT_MAX unacked */
static void
ngx_http_cfcost_redis_flush(void)
{
    ngx_queue_t              *q, *head;
    ngx_http_cfcost_rec_t    *rec;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (rd->ac == NULL || !rd->connected) {
        return;
    }

    if (!ngx_queue_empty(&rd->retry)) {
        /* records of unknown fate go first, and alone, in stream order */
        if (!rd->resending) {
            (void) ngx_http_cfcost_redis_resend();
        }

        goto done;
    }

    head = &rd->pending;

    while (rd->inflight < NGX_HTTP_CFCOST_INFLIGHT_MAX
           && !ngx_queue_empty(head))
    {
        q = ngx_queue_head(head);
        rec = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);

        if (ngx_http_cfcost_redis_send_record(rec) != NGX_OK) {
            break;
        }

        ngx_queue_remove(q);
    }

done:

    if (rd->inflight) {
        rd->watchdog.cancelable = 0;
    }

    ngx_http_cfcost_redis_report_drops();
}


u_char *
ngx_http_cfcost_redis_record_alloc(size_t len)
{
    ngx_http_cfcost_rec_t    *rec;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (!rd->initialized) {
        return NULL;
    }

    if (rd->queued >= rd->mcf->queue_max) {
        rd->dropped++;

        if (!rd->full_logged) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cfcost: record queue is full (%ui records), "
                          "dropping records until Redis at %V catches up",
                          rd->queued, &rd->mcf->redis_addr);
            rd->full_logged = 1;
        }

        return NULL;
    }

    rec = ngx_alloc(offsetof(ngx_http_cfcost_rec_t, cmd) + len, rd->log);
    if (rec == NULL) {
        rd->dropped++;
        return NULL;
    }

    return rec->cmd;
}


void
ngx_http_cfcost_redis_push_record(u_char *cmd, size_t len, u_char *rid,
    size_t pairs, size_t pairs_off)
{
    ngx_http_cfcost_rec_t    *rec;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    rec = (ngx_http_cfcost_rec_t *)
              (cmd - offsetof(ngx_http_cfcost_rec_t, cmd));

    rec->sent_ms = 0;
    ngx_memcpy(rec->rid, rid, NGX_HTTP_CFCOST_ID_LEN);
    rec->pairs = pairs;
    rec->pairs_off = pairs_off;
    rec->len = len;

    rd->queued++;

    if (rd->connected && rd->inflight < NGX_HTTP_CFCOST_INFLIGHT_MAX
        && ngx_queue_empty(&rd->retry) && ngx_queue_empty(&rd->pending)
        && ngx_http_cfcost_redis_send_record(rec) == NGX_OK)
    {
        rd->watchdog.cancelable = 0;
        return;
    }

    ngx_queue_insert_tail(&rd->pending, &rec->queue);

    ngx_http_cfcost_redis_flush();
}


ngx_int_t
ngx_http_cfcost_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    ngx_memzero(rd, sizeof(ngx_http_cfcost_redis_t));

    rd->mcf = mcf;
    rd->log = cycle->log;

    ngx_queue_init(&rd->retry);
    ngx_queue_init(&rd->pending);

    rd->reconnect.handler = ngx_http_cfcost_redis_reconnect_handler;
    rd->reconnect.log = cycle->log;
    rd->reconnect.data = rd;
    rd->reconnect.cancelable = 1;

    rd->watchdog.handler = ngx_http_cfcost_redis_watchdog_handler;
    rd->watchdog.log = cycle->log;
    rd->watchdog.data = rd;
    rd->watchdog.cancelable = 1;

    rd->initialized = 1;

    ngx_http_cfcost_redis_connect();
    ngx_add_timer(&rd->watchdog, 10);

    return NGX_OK;
}


/* moves the records of a queue, oldest first, into all[] */
static ngx_uint_t
ngx_http_cfcost_redis_collect(ngx_queue_t *head, ngx_http_cfcost_rec_t **all)
{
    ngx_uint_t    n;
    ngx_queue_t  *q;

    for (n = 0; !ngx_queue_empty(head); n++) {
        q = ngx_queue_head(head);
        ngx_queue_remove(q);
        all[n] = ngx_queue_data(q, ngx_http_cfcost_rec_t, queue);
    }

    return n;
}


/*
 * The worker is leaving: send what is held over a blocking connection
 * (nothing else runs in this process any more), bounded by
 * cfcost_redis_timeout per step -- first, conditionally, the records whose
 * fate is unknown, then the others.  What cannot be sent is logged as lost.
 */
void
ngx_http_cfcost_redis_exit_process(ngx_cycle_t *cycle)
{
    u_char                   *cmd;
    size_t                    len;
    ngx_uint_t                i, nr, n, cmds, sent, ok;
    redisReply               *reply;
    redisContext             *c;
    struct timeval            tv;
    ngx_http_cfcost_rec_t   **all;
    ngx_http_cfcost_redis_t  *rd = &ngx_http_cfcost_rd;

    if (!rd->initialized) {
        return;
    }

    rd->exiting = 1;

    if (rd->ac != NULL) {
        redisAsyncFree(rd->ac);      /* unacked records return to retry */
        rd->ac = NULL;
    }

    if (rd->queued == 0 && rd->dropped == 0) {
        return;
    }

    tv.tv_sec = rd->mcf->redis_timeout / 1000;
    tv.tv_usec = (rd->mcf->redis_timeout % 1000) * 1000;

    c = rd->mcf->redis_unix.len
        ? redisConnectUnixWithTimeout((char *) rd->mcf->redis_unix.data, tv)
        : redisConnectWithTimeout((char *) rd->mcf->redis_host.data,
                                  (int) rd->mcf->redis_port, tv);

    all = ngx_alloc(rd->queued * sizeof(ngx_http_cfcost_rec_t *) + 1,
                    cycle->log);

    nr = all ? ngx_http_cfcost_redis_collect(&rd->retry, all) : 0;
    n = all ? nr + ngx_http_cfcost_redis_collect(&rd->pending, all + nr) : 0;
    cmd = NULL;
    sent = 0;

    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {

        cmds = 0;

        if (nr) {
            cmd = ngx_http_cfcost_resend_cmd(all, nr, &len);
            if (cmd != NULL) {
                redisAppendFormattedCommand(c, (char *) cmd, len);
                cmds++;
            }
        }

        for (i = nr; i < n; i++) {
            redisAppendFormattedCommand(c, (char *) all[i]->cmd, all[i]->len);
            cmds++;
        }

        for (i = 0; i < cmds; i++) {
            if (redisGetReply(c, (void **) &reply) != REDIS_OK) {
                break;
            }

            ok = (reply->type != REDIS_REPLY_ERROR);
            freeReplyObject(reply);

            if (ok) {
                sent += (i == 0 && cmd != NULL) ? nr : 1;
            }
        }

        if (rd->dropped + (n - sent)) {
            reply = redisCommand(c, "HINCRBY %s %s %lu", CFCOST_GATEWAY_HASH,
                                 CFCOST_GATEWAY_F_DROPPED,
                                 (unsigned long) (rd->dropped + n - sent));
            if (reply) {
                freeReplyObject(reply);
            }
        }
    }

    if (sent < rd->queued) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "cfcost: %ui usage records lost at worker exit: "
                      "Redis at %V unreachable (%s)", rd->queued - sent,
                      &rd->mcf->redis_addr,
                      c ? c->errstr : "out of memory");
    }

    for (i = 0; i < n; i++) {
        ngx_free(all[i]);
    }

    if (all) {
        ngx_free(all);
    }

    if (cmd) {
        ngx_free(cmd);
    }

    if (c != NULL) {
        redisFree(c);
    }

    rd->queued = 0;
}
