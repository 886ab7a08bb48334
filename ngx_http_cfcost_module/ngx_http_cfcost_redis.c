/*
 * hiredis on nginx's event loop.
 *
 * hiredis owns the socket; nginx gets a connection structure around the
 * same fd only to watch it, with level-triggered events (hiredis reads at
 * most 16K per call, so an edge-triggered event could leave bytes waiting
 * for an event that never comes).  Debian's hiredis 0.14 has no timeouts:
 * a watchdog timer drops a connection whose replies stop coming, and a
 * capped, jittered backoff reconnects.
 */

#include "ngx_http_cfcost_redis.h"


#define NGX_HTTP_CFCOST_BACKOFF_MIN    100
#define NGX_HTTP_CFCOST_BACKOFF_MAX    5000


static void ngx_http_cfcost_redis_connect(ngx_http_cfcost_redis_t *rd);
static void ngx_http_cfcost_redis_schedule(ngx_http_cfcost_redis_t *rd);


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
    ngx_connection_t         *c = data;
    ngx_http_cfcost_redis_t  *rd;

    ngx_http_cfcost_redis_del_read(c);
    ngx_http_cfcost_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    rd = c->data;
    rd->conn = NULL;

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}


static void
ngx_http_cfcost_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    ngx_http_cfcost_redis_t  *rd = c->data;

    if (rd->ac != NULL) {
        rd->progress = ngx_current_msec;
        redisAsyncHandleRead(rd->ac);
    }
}


static void
ngx_http_cfcost_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    ngx_http_cfcost_redis_t  *rd = c->data;

    if (rd->ac != NULL) {
        redisAsyncHandleWrite(rd->ac);
    }
}


/*
 * The connection is gone (hiredis is freeing it, or never had it): every
 * reply callback has run with NULL by now.
 */
static void
ngx_http_cfcost_redis_lost(ngx_http_cfcost_redis_t *rd, const char *why,
    const char *err)
{
    rd->ac = NULL;
    rd->connected = 0;

    if (rd->exiting) {
        return;
    }

    if (!rd->down_logged) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cfcost: %s Redis at %V (%s): %s", why,
                      &rd->mcf->redis_addr, rd->name, err);
        rd->down_logged = 1;
    }

    ngx_http_cfcost_redis_schedule(rd);
}


/* Connected, and authenticated when Redis asks for it: commands may go. */
static void
ngx_http_cfcost_redis_up(ngx_http_cfcost_redis_t *rd)
{
    if (rd->down_logged) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "cfcost: Redis at %V is reachable again (%s)",
                      &rd->mcf->redis_addr, rd->name);
    }

    rd->connected = 1;
    rd->down_logged = 0;
    rd->auth_logged = 0;
    rd->backoff = 0;
    rd->progress = ngx_current_msec;

    if (rd->on_up) {
        rd->on_up(rd);
    }
}


/*
 * AUTH's reply.  A refusal (WRONGPASS, an unknown or disabled user) is
 * logged once until a connection succeeds, and the connection is closed: the reconnect
 * backoff retries, so that fixing the ACL in Redis is enough.
 */
static void
ngx_http_cfcost_redis_on_auth(redisAsyncContext *ac, void *r, void *data)
{
    redisReply               *reply = r;
    ngx_http_cfcost_redis_t  *rd = data;

    if (reply == NULL || rd->ac != ac) {
        return;                     /* the connection is going away */
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_http_cfcost_redis_up(rd);
        return;
    }

    if (!rd->auth_logged) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cfcost: Redis at %V refused AUTH%s%s%s (%s): %*s",
                      &rd->mcf->redis_addr,
                      rd->mcf->redis_auth->user[0] ? " as \"" : "",
                      rd->mcf->redis_auth->user,
                      rd->mcf->redis_auth->user[0] ? "\"" : "",
                      rd->name, (size_t) reply->len, reply->str);
        rd->auth_logged = 1;
    }

    rd->down_logged = 1;

    redisAsyncDisconnect(ac);       /* then on_disconnect: lost() */
}


static void
ngx_http_cfcost_redis_on_connect(const redisAsyncContext *cac, int status)
{
    int                       argc;
    size_t                    argvlen[3];
    const char               *argv[3];
    redisAsyncContext        *ac = (redisAsyncContext *) cac;
    ngx_http_cfcost_redis_t  *rd = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        ngx_http_cfcost_redis_lost(rd, "cannot connect to", ac->errstr);
        return;
    }

    if (rd->mcf->redis_auth == NULL) {
        ngx_http_cfcost_redis_up(rd);
        return;
    }

    /* the first command on the connection; the watchdog times it */
    argc = cfcost_redis_auth_argv(rd->mcf->redis_auth, argv, argvlen);
    rd->progress = ngx_current_msec;

    /*
     * Out of memory: not disconnected here (hiredis 0.14 would free the
     * context under its own connect handler); never up, the watchdog
     * drops it after cfcost_redis_timeout.
     */
    (void) redisAsyncCommandArgv(ac, ngx_http_cfcost_redis_on_auth, rd, argc,
                                 argv, argvlen);
}


static void
ngx_http_cfcost_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_cfcost_redis_lost(ac->data, "lost the connection to",
                               status == REDIS_OK ? "closed" : ac->errstr);
}


static void
ngx_http_cfcost_redis_connect(ngx_http_cfcost_redis_t *rd)
{
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_cfcost_main_conf_t  *mcf = rd->mcf;

    if (mcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((char *) mcf->redis_unix.data);

    } else {
        ac = redisAsyncConnect((char *) mcf->redis_host.data,
                               (int) mcf->redis_port);
    }

    if (ac == NULL) {
        ngx_http_cfcost_redis_lost(rd, "cannot connect to", "out of memory");
        return;
    }

    if (ac->err) {
        ngx_http_cfcost_redis_lost(rd, "cannot connect to", ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    /*
     * Replies from an arena, not a malloc per element (cfcost_reply.h);
     * the process's exit frees the last two
     */
    if (cfcost_reply_arena_renew(&rd->arena, &rd->arena_old, ac->c.reader)
        != 0)
    {
        redisAsyncFree(ac);
        ngx_http_cfcost_redis_lost(rd, "cannot connect to", "out of memory");
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_cfcost_redis_lost(rd, "cannot connect to",
                                   "no free nginx connection");
        return;
    }

    c->data = rd;
    c->read->handler = ngx_http_cfcost_redis_read_handler;
    c->write->handler = ngx_http_cfcost_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->log = rd->log;

    ac->data = rd;
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
    ngx_http_cfcost_redis_t  *rd = ev->data;

    /* a gracefully exiting worker may still have records to store */
    if (rd->ac == NULL && !rd->exiting && !ngx_terminate) {
        ngx_http_cfcost_redis_connect(rd);
    }
}


ngx_msec_t
ngx_http_cfcost_backoff(ngx_msec_t *backoff)
{
    ngx_msec_t  b;

    b = *backoff ? *backoff * 2 : NGX_HTTP_CFCOST_BACKOFF_MIN;
    if (b > NGX_HTTP_CFCOST_BACKOFF_MAX) {
        b = NGX_HTTP_CFCOST_BACKOFF_MAX;
    }

    *backoff = b;

    /* jitter, so that workers do not retry in lockstep */
    return b - b / 4 + (ngx_msec_t) ngx_random() % (b / 2 + 1);
}


static void
ngx_http_cfcost_redis_schedule(ngx_http_cfcost_redis_t *rd)
{
    if (!rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, ngx_http_cfcost_backoff(&rd->backoff));
    }
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
    redisAsyncContext        *ac;
    ngx_http_cfcost_redis_t  *rd = ev->data;

    timeout = rd->mcf->redis_timeout;
    period = timeout / 4 > 10 ? timeout / 4 : 10;

    if (rd->ac != NULL) {
        waiting = !rd->connected || rd->ac->replies.head != NULL;

        if (waiting && ngx_current_msec - rd->progress >= timeout) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cfcost: Redis at %V did not answer within %M ms "
                          "(%s), reconnecting", &rd->mcf->redis_addr,
                          timeout, rd->name);

            rd->down_logged = 1;
            ac = rd->ac;

            if (!rd->connected) {
                /* no disconnect callback for a connect that never was */
                rd->ac = NULL;
                redisAsyncFree(ac);
                ngx_http_cfcost_redis_schedule(rd);

            } else {
                /* replies fail with NULL, then on_disconnect: lost() */
                redisAsyncFree(ac);
            }
        }
    }

    ev->cancelable = (rd->ac == NULL || rd->ac->replies.head == NULL);

    if (!rd->exiting) {
        ngx_add_timer(ev, period);
    }
}


void
ngx_http_cfcost_redis_start(ngx_http_cfcost_redis_t *rd,
    ngx_http_cfcost_main_conf_t *mcf, ngx_log_t *log, const char *name)
{
    rd->mcf = mcf;
    rd->log = log;
    rd->name = name;

    rd->reconnect.handler = ngx_http_cfcost_redis_reconnect_handler;
    rd->reconnect.log = log;
    rd->reconnect.data = rd;
    rd->reconnect.cancelable = 1;

    rd->watchdog.handler = ngx_http_cfcost_redis_watchdog_handler;
    rd->watchdog.log = log;
    rd->watchdog.data = rd;
    rd->watchdog.cancelable = 1;

    ngx_http_cfcost_redis_connect(rd);
    ngx_add_timer(&rd->watchdog, 10);
}


void
ngx_http_cfcost_redis_close(ngx_http_cfcost_redis_t *rd)
{
    redisAsyncContext  *ac;

    rd->exiting = 1;

    if (rd->watchdog.timer_set) {
        ngx_del_timer(&rd->watchdog);
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ac = rd->ac;

    if (ac != NULL) {
        rd->ac = NULL;
        redisAsyncFree(ac);
    }

    rd->connected = 0;
}


static void
ngx_http_cfcost_redis_sent(ngx_http_cfcost_redis_t *rd, ngx_uint_t idle)
{
    if (idle) {
        rd->progress = ngx_current_msec;
    }

    rd->watchdog.cancelable = 0;
}


ngx_int_t
ngx_http_cfcost_redis_argv(ngx_http_cfcost_redis_t *rd, redisCallbackFn *fn,
    void *data, int argc, const char **argv, const size_t *argvlen)
{
    ngx_uint_t  idle;

    if (rd->ac == NULL || !rd->connected) {
        return NGX_DECLINED;
    }

    idle = (rd->ac->replies.head == NULL);

    if (redisAsyncCommandArgv(rd->ac, fn, data, argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    ngx_http_cfcost_redis_sent(rd, idle);

    return NGX_OK;
}


ngx_int_t
ngx_http_cfcost_redis_formatted(ngx_http_cfcost_redis_t *rd,
    redisCallbackFn *fn, void *data, u_char *cmd, size_t len)
{
    ngx_uint_t  idle;

    if (rd->ac == NULL || !rd->connected) {
        return NGX_DECLINED;
    }

    idle = (rd->ac->replies.head == NULL);

    if (redisAsyncFormattedCommand(rd->ac, fn, data, (char *) cmd, len)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    ngx_http_cfcost_redis_sent(rd, idle);

    return NGX_OK;
}


ngx_uint_t
ngx_http_cfcost_redis_usable(ngx_http_cfcost_redis_t *rd)
{
    return rd->ac != NULL && rd->connected
           && !(rd->ac->c.flags & (REDIS_DISCONNECTING|REDIS_FREEING));
}


ngx_uint_t
ngx_http_cfcost_redis_stalled(ngx_http_cfcost_redis_t *rd,
    ngx_msec_t patience)
{
    if (rd->ac == NULL || !rd->connected) {
        return 1;
    }

    return rd->ac->replies.head != NULL
           && ngx_current_msec - rd->progress >= patience;
}


ngx_uint_t
ngx_http_cfcost_redis_transient(redisReply *reply)
{
    if (reply->len >= 4 && ngx_strncmp(reply->str, "ERR ", 4) == 0) {
        return ngx_strstr(reply->str, "max number of clients") != NULL;
    }

    return !(reply->len >= 9 && ngx_strncmp(reply->str, "WRONGTYPE", 9) == 0);
}


size_t
ngx_http_cfcost_bulk_len(size_t len)
{
    return 1 + NGX_SIZE_T_LEN + 2 + len + 2;     /* $<len>\r\n<data>\r\n */
}


u_char *
ngx_http_cfcost_bulk(u_char *p, const void *data, size_t len)
{
    *p++ = '$';
    p = (u_char *) cfcost_dec((char *) p, len);
    *p++ = '\r';
    *p++ = '\n';

    if (len) {                          /* an empty value may be NULL */
        p = ngx_cpymem(p, data, len);
    }

    *p++ = '\r';
    *p++ = '\n';

    return p;
}
