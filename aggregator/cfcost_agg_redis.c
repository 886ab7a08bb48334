/*
 * Asynchronous Redis connection with timeouts and reconnection.  See
 * cfcost_agg_redis.h.
 *
 * hiredis 0.14 has no timeouts of its own: a watchdog timer checks the
 * oldest command in flight (replies come in order, so the oldest is the
 * one that must answer first) and the connect deadline, and drops the
 * connection when either passes; hiredis then runs every pending callback
 * with NULL.
 */

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_redis_ev.h"
#include "cfcost_reply.h"
#include "cfcost_redis_auth.h"


#define CFCOST_REDIS_WATCH_MS        100
#define CFCOST_REDIS_BACKOFF_MIN_MS  100
#define CFCOST_REDIS_BACKOFF_MAX_MS  5000

#define CFCOST_REDIS_DOWN            0
#define CFCOST_REDIS_CONNECTING      1
#define CFCOST_REDIS_AUTHING         2    /* connected, AUTH sent */
#define CFCOST_REDIS_UP              3


typedef struct cfcost_redis_op_s  cfcost_redis_op_t;

struct cfcost_redis_op_s {
    cfcost_redis_op_t      *prev;
    cfcost_redis_op_t      *next;
    cfcost_redis_t         *rd;
    cfcost_redis_reply_pt   cb;
    void                   *data;
    uint64_t                deadline;   /* monotonic ms */
};


struct cfcost_redis_s {
    struct event_base      *base;
    cfcost_addr_t           addr;
    const cfcost_redis_auth_t *auth;   /* NULL: no AUTH */
    char                    name[32];
    unsigned                timeout_ms;

    cfcost_redis_event_pt   on_up;
    cfcost_redis_event_pt   on_down;
    void                   *data;

    redisAsyncContext      *ac;         /* NULL while down */
    int                     state;
    unsigned                failures;   /* connects failed in a row */
    uint64_t                connect_deadline;

    struct event           *retry_ev;
    struct event           *watch_ev;

    cfcost_redis_op_t       ops;        /* sentinel; in flight, oldest first */

    cfcost_reply_arena_t   *arena;      /* this connection's replies */
    cfcost_reply_arena_t   *arena_old;  /* the one before */
};


static void cfcost_redis_connect(cfcost_redis_t *rd);
static void cfcost_redis_retry(cfcost_redis_t *rd);


static void
cfcost_redis_link(cfcost_redis_t *rd, cfcost_redis_op_t *op)
{
    op->prev = rd->ops.prev;
    op->next = &rd->ops;
    rd->ops.prev->next = op;
    rd->ops.prev = op;
}


static void
cfcost_redis_unlink(cfcost_redis_op_t *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    op->prev = op->next = op;
}


/* hiredis's callback for every command: hands the reply on, exactly once */
static void
cfcost_redis_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    void                   *data;
    cfcost_redis_t         *rd;
    cfcost_redis_op_t      *op;
    cfcost_redis_reply_pt   cb;

    (void) ac;

    op = privdata;
    rd = op->rd;
    cb = op->cb;
    data = op->data;

    cfcost_redis_unlink(op);
    free(op);

    cb(rd, reply, data);
}


/* Connected, and authenticated when configured: commands may go. */
static void
cfcost_redis_up_now(cfcost_redis_t *rd)
{
    cfcost_log_info("redis %s: connected", rd->name);

    rd->state = CFCOST_REDIS_UP;
    rd->failures = 0;

    if (rd->on_up) {
        rd->on_up(rd, rd->data);
    }
}


/*
 * AUTH's reply.  A refusal (WRONGPASS, an unknown or disabled user) is
 * logged as connect failures are (the first, then every 20th), and the
 * connection closed; the backoff retries, so fixing the ACL is enough.
 */
static void
cfcost_redis_on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply      *r;
    cfcost_redis_t  *rd;

    rd = privdata;
    r = reply;

    if (r == NULL || ac->data == NULL || rd->ac != ac) {
        return;                 /* going away; on_disconnect handles it */
    }

    if (r->type != REDIS_REPLY_ERROR) {
        cfcost_redis_up_now(rd);
        return;
    }

    if (rd->failures == 0 || rd->failures % 20 == 0) {
        cfcost_log_error("redis %s: AUTH%s%s refused: %.*s", rd->name,
                         rd->auth->user[0] ? " as " : "", rd->auth->user,
                         (int) r->len, r->str);
    }

    redisAsyncDisconnect(ac);   /* then on_disconnect: retry */
}


static void
cfcost_redis_on_connect(const redisAsyncContext *cac, int status)
{
    int                 argc;
    size_t              argvlen[3];
    const char         *argv[3];
    cfcost_redis_t     *rd;
    redisAsyncContext  *ac;

    ac = (redisAsyncContext *) cac;
    rd = ac->data;
    if (rd == NULL) {
        return;                 /* dropped by us meanwhile */
    }

    if (status != REDIS_OK) {
        if (rd->failures == 0 || rd->failures % 20 == 0) {
            cfcost_log_warn("redis %s: cannot connect: %s", rd->name,
                            ac->errstr);
        }
        rd->ac = NULL;          /* hiredis frees it */
        rd->state = CFCOST_REDIS_DOWN;
        cfcost_redis_retry(rd);
        return;
    }

    if (rd->auth == NULL) {
        cfcost_redis_up_now(rd);
        return;
    }

    /* the first command; the connect deadline also covers its reply */
    rd->state = CFCOST_REDIS_AUTHING;
    argc = cfcost_redis_auth_argv(rd->auth, argv, argvlen);

    /*
     * Out of memory: not disconnected here (hiredis 0.14 would free the
     * context under its own connect handler); the connect deadline drops
     * it (cfcost_redis_watch).
     */
    (void) redisAsyncCommandArgv(ac, cfcost_redis_on_auth, rd, argc, argv,
                                 argvlen);
}


static void
cfcost_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    int              was_up;
    cfcost_redis_t  *rd;

    rd = ac->data;
    if (rd == NULL) {
        return;
    }

    cfcost_log_warn("redis %s: connection lost%s%s", rd->name,
                    status == REDIS_OK ? "" : ": ",
                    status == REDIS_OK ? "" : ac->errstr);

    was_up = (rd->state == CFCOST_REDIS_UP);
    rd->ac = NULL;              /* hiredis frees it */
    rd->state = CFCOST_REDIS_DOWN;

    if (was_up && rd->on_down) {
        rd->on_down(rd, rd->data);
    }

    cfcost_redis_retry(rd);
}


/*
 * Drops the connection from outside any hiredis callback (the watchdog):
 * pending callbacks run with NULL now, then a reconnect is scheduled.
 */
static void
cfcost_redis_drop(cfcost_redis_t *rd, const char *why)
{
    int                 was_up;
    redisAsyncContext  *ac;

    ac = rd->ac;
    was_up = (rd->state == CFCOST_REDIS_UP);

    cfcost_log_warn("redis %s: %s, reconnecting", rd->name, why);

    rd->ac = NULL;
    rd->state = CFCOST_REDIS_DOWN;

    if (ac != NULL) {
        ac->data = NULL;        /* our connect/disconnect callbacks: ignore */
        redisAsyncFree(ac);
    }

    if (was_up && rd->on_down) {
        rd->on_down(rd, rd->data);
    }

    cfcost_redis_retry(rd);
}


static void
cfcost_redis_watch(evutil_socket_t fd, short what, void *arg)
{
    uint64_t         now;
    cfcost_redis_t  *rd;

    (void) fd;
    (void) what;

    rd = arg;
    now = cfcost_mono_ms();

    if ((rd->state == CFCOST_REDIS_CONNECTING
         || rd->state == CFCOST_REDIS_AUTHING)
        && now > rd->connect_deadline)
    {
        cfcost_redis_drop(rd, "connect timed out");
        return;
    }

    if (rd->state == CFCOST_REDIS_UP && rd->ops.next != &rd->ops
        && now > rd->ops.next->deadline)
    {
        cfcost_redis_drop(rd, "reply timed out");
    }
}


static void
cfcost_redis_retry_handler(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;

    cfcost_redis_connect(arg);
}


/* Schedules the next connect after a capped, jittered backoff. */
static void
cfcost_redis_retry(cfcost_redis_t *rd)
{
    unsigned        ms;
    struct timeval  tv;

    ms = cfcost_backoff_ms(rd->failures, CFCOST_REDIS_BACKOFF_MIN_MS,
                           CFCOST_REDIS_BACKOFF_MAX_MS, random());
    rd->failures++;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    evtimer_add(rd->retry_ev, &tv);
}


static void
cfcost_redis_connect(cfcost_redis_t *rd)
{
    redisAsyncContext  *ac;

    if (rd->addr.kind == CFCOST_ADDR_UNIX) {
        ac = redisAsyncConnectUnix(rd->addr.path);
    } else {
        ac = redisAsyncConnect(rd->addr.host, rd->addr.port);
    }

    if (ac == NULL || ac->err) {
        if (rd->failures == 0 || rd->failures % 20 == 0) {
            cfcost_log_warn("redis %s: cannot connect: %s", rd->name,
                            ac ? ac->errstr : "out of memory");
        }
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        cfcost_redis_retry(rd);
        return;
    }

    /* replies from an arena (cfcost_reply.h) */
    if (cfcost_reply_arena_renew(&rd->arena, &rd->arena_old, ac->c.reader)
        != 0)
    {
        cfcost_log_warn("redis %s: cannot connect: out of memory", rd->name);
        redisAsyncFree(ac);
        cfcost_redis_retry(rd);
        return;
    }

    ac->data = rd;

    if (cfcost_redis_ev_attach(ac, rd->base) != REDIS_OK) {
        redisAsyncFree(ac);
        cfcost_redis_retry(rd);
        return;
    }

    redisAsyncSetConnectCallback(ac, cfcost_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, cfcost_redis_on_disconnect);

    rd->ac = ac;
    rd->state = CFCOST_REDIS_CONNECTING;
    rd->connect_deadline = cfcost_mono_ms() + rd->timeout_ms;
}


cfcost_redis_t *
cfcost_redis_create(struct event_base *base, const cfcost_addr_t *addr,
    const char *name, unsigned timeout_ms, cfcost_redis_event_pt on_up,
    cfcost_redis_event_pt on_down, void *data)
{
    cfcost_redis_t  *rd;

    rd = calloc(1, sizeof(cfcost_redis_t));
    if (rd == NULL) {
        return NULL;
    }

    rd->base = base;
    rd->addr = *addr;
    snprintf(rd->name, sizeof(rd->name), "%s", name);
    rd->timeout_ms = timeout_ms;
    rd->on_up = on_up;
    rd->on_down = on_down;
    rd->data = data;
    rd->ops.prev = rd->ops.next = &rd->ops;

    rd->retry_ev = evtimer_new(base, cfcost_redis_retry_handler, rd);
    rd->watch_ev = event_new(base, -1, EV_PERSIST, cfcost_redis_watch, rd);

    if (rd->retry_ev == NULL || rd->watch_ev == NULL) {
        goto failed;
    }

    return rd;

failed:

    if (rd->retry_ev) {
        event_free(rd->retry_ev);
    }
    if (rd->watch_ev) {
        event_free(rd->watch_ev);
    }
    free(rd);

    return NULL;
}


void
cfcost_redis_set_auth(cfcost_redis_t *rd, const cfcost_redis_auth_t *auth)
{
    rd->auth = auth;
}


void
cfcost_redis_start(cfcost_redis_t *rd)
{
    struct timeval  tv = { 0, CFCOST_REDIS_WATCH_MS * 1000 };

    evtimer_add(rd->watch_ev, &tv);
    cfcost_redis_connect(rd);
}


int
cfcost_redis_up(const cfcost_redis_t *rd)
{
    return rd->state == CFCOST_REDIS_UP;
}


static cfcost_redis_op_t *
cfcost_redis_op(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    unsigned extra_ms)
{
    cfcost_redis_op_t  *op;

    if (rd->state != CFCOST_REDIS_UP) {
        return NULL;
    }

    op = malloc(sizeof(cfcost_redis_op_t));
    if (op == NULL) {
        return NULL;
    }

    op->rd = rd;
    op->cb = cb;
    op->data = data;
    op->deadline = cfcost_mono_ms() + rd->timeout_ms + extra_ms;
    op->prev = op->next = op;

    return op;
}


/* Links op after hiredis accepted it (status), or frees it.  0 / -1. */
static int
cfcost_redis_sent(cfcost_redis_t *rd, cfcost_redis_op_t *op, int status)
{
    if (status != REDIS_OK) {
        free(op);               /* disconnecting: the callback never runs */
        return -1;
    }

    cfcost_redis_link(rd, op);
    return 0;
}


int
cfcost_redis_argv(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    unsigned extra_ms, int argc, const char **argv, const size_t *argvlen)
{
    cfcost_redis_op_t  *op;

    op = cfcost_redis_op(rd, cb, data, extra_ms);
    if (op == NULL) {
        return -1;
    }

    return cfcost_redis_sent(rd, op,
               redisAsyncCommandArgv(rd->ac, cfcost_redis_on_reply, op, argc,
                                     argv, argvlen));
}


int
cfcost_redis_cmd(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    const char *fmt, ...)
{
    int                 rc;
    va_list             ap;
    cfcost_redis_op_t  *op;

    op = cfcost_redis_op(rd, cb, data, 0);
    if (op == NULL) {
        return -1;
    }

    va_start(ap, fmt);
    rc = redisvAsyncCommand(rd->ac, cfcost_redis_on_reply, op, fmt, ap);
    va_end(ap);

    return cfcost_redis_sent(rd, op, rc);
}


int
cfcost_redis_formatted(cfcost_redis_t *rd, cfcost_redis_reply_pt cb,
    void *data, unsigned extra_ms, const char *cmd, size_t len)
{
    cfcost_redis_op_t  *op;

    op = cfcost_redis_op(rd, cb, data, extra_ms);
    if (op == NULL) {
        return -1;
    }

    return cfcost_redis_sent(rd, op,
               redisAsyncFormattedCommand(rd->ac, cfcost_redis_on_reply, op,
                                          cmd, len));
}


void
cfcost_redis_destroy(cfcost_redis_t *rd)
{
    redisAsyncContext  *ac;
    cfcost_redis_op_t  *op;

    if (rd == NULL) {
        return;
    }

    evtimer_del(rd->retry_ev);
    evtimer_del(rd->watch_ev);

    ac = rd->ac;
    rd->ac = NULL;
    rd->state = CFCOST_REDIS_DOWN;

    if (ac != NULL) {
        ac->data = NULL;

        if (ac->c.flags & REDIS_IN_CALLBACK) {
            /* hiredis frees it later, its reply then: keep the arenas */
            rd->arena = NULL;
            rd->arena_old = NULL;
        }

        redisAsyncFree(ac);     /* pending callbacks run with NULL */
    }

    cfcost_reply_arena_destroy(rd->arena);
    cfcost_reply_arena_destroy(rd->arena_old);

    /* nothing should be left; never leak if something is */
    while (rd->ops.next != &rd->ops) {
        op = rd->ops.next;
        cfcost_redis_unlink(op);
        free(op);
    }

    event_free(rd->retry_ev);
    event_free(rd->watch_ev);
    free(rd);
}
