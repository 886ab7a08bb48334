/*
 * An async hiredis connection on nginx's event loop, with what Debian's
 * hiredis 0.14 lacks: a reply watchdog and reconnection with capped,
 * jittered backoff.  Each worker keeps two: key lookups (_auth.c) and the
 * record writer (_writer.c), so that a lookup never waits behind records.
 */

#ifndef NGX_HTTP_CFCOST_REDIS_H
#define NGX_HTTP_CFCOST_REDIS_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "cfcost_reply.h"
#include "ngx_http_cfcost_module.h"


typedef struct ngx_http_cfcost_redis_s  ngx_http_cfcost_redis_t;

typedef void (*ngx_http_cfcost_redis_event_pt)(ngx_http_cfcost_redis_t *rd);


struct ngx_http_cfcost_redis_s {
    redisAsyncContext               *ac;
    ngx_connection_t                *conn;
    ngx_http_cfcost_main_conf_t     *mcf;
    ngx_log_t                       *log;
    const char                      *name;        /* for log lines */

    ngx_event_t                      reconnect;
    ngx_event_t                      watchdog;
    ngx_msec_t                       backoff;
    ngx_msec_t                       progress;    /* last sign of life */

    ngx_http_cfcost_redis_event_pt   on_up;       /* connected */

    cfcost_reply_arena_t            *arena;       /* this connection's
                                                     replies */
    cfcost_reply_arena_t            *arena_old;   /* the one before */

    unsigned                         connected:1;
    unsigned                         exiting:1;
    unsigned                         down_logged:1;
    unsigned                         auth_logged:1;
};


/* Starts connecting rd (zeroed by the caller, then the hooks set). */
void ngx_http_cfcost_redis_start(ngx_http_cfcost_redis_t *rd,
    ngx_http_cfcost_main_conf_t *mcf, ngx_log_t *log, const char *name);

/* Closes rd for good (worker exit): pending callbacks run with NULL. */
void ngx_http_cfcost_redis_close(ngx_http_cfcost_redis_t *rd);

/*
 * Sends a command; fn(ac, reply, data) runs once, with reply NULL when the
 * connection went away first (hiredis's contract).  Returns NGX_OK, or
 * NGX_DECLINED when not connected (fn will not run).  The arguments are
 * copied before this returns.
 */
ngx_int_t ngx_http_cfcost_redis_argv(ngx_http_cfcost_redis_t *rd,
    redisCallbackFn *fn, void *data, int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_cfcost_redis_formatted(ngx_http_cfcost_redis_t *rd,
    redisCallbackFn *fn, void *data, u_char *cmd, size_t len);

/* 1 when commands can be sent now (not while hiredis tears down) */
ngx_uint_t ngx_http_cfcost_redis_usable(ngx_http_cfcost_redis_t *rd);

/*
 * 1 when a command sent now would wait: not connected, or replies are
 * outstanding and none has come for `patience` ms.
 */
ngx_uint_t ngx_http_cfcost_redis_stalled(ngx_http_cfcost_redis_t *rd,
    ngx_msec_t patience);

/* The next delay of a capped exponential backoff, jittered (+/- 25%). */
ngx_msec_t ngx_http_cfcost_backoff(ngx_msec_t *backoff);

/*
 * Error replies: 1 when Redis did not run the command because of its own
 * state (LOADING, BUSY, OOM, MISCONF, READONLY, MASTERDOWN, TRYAGAIN,
 * NOAUTH...), so the same command can succeed later.
 */
ngx_uint_t ngx_http_cfcost_redis_transient(redisReply *reply);

/* RESP bulk strings: the most bytes one takes, and writing one */
size_t ngx_http_cfcost_bulk_len(size_t len);
u_char *ngx_http_cfcost_bulk(u_char *p, const void *data, size_t len);

#endif /* NGX_HTTP_CFCOST_REDIS_H */
