/*
 * One asynchronous Redis connection on the libevent loop (hiredis 0.14 on
 * an event adapter of our own, cfcost_agg_redis_ev.h), with what hiredis
 * 0.14 lacks: a connect timeout, a reply timeout per command, and
 * reconnection with capped, jittered backoff.
 *
 * Every command's callback runs exactly once: with the reply, or with NULL
 * when the connection failed, timed out or is being destroyed.  The reply
 * belongs to hiredis and is freed when the callback returns.  Callbacks
 * may send new commands; while the connection is down those fail at once.
 */

#ifndef CFCOST_AGG_REDIS_H
#define CFCOST_AGG_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "cfcost_agg.h"
#include "cfcost_addr.h"
#include "cfcost_redis_auth.h"


typedef void (*cfcost_redis_reply_pt)(cfcost_redis_t *rd, redisReply *r,
    void *data);
typedef void (*cfcost_redis_event_pt)(cfcost_redis_t *rd, void *data);


/*
 * Creates a connection, not yet connecting.  on_up runs after every
 * successful (re)connect, on_down after every loss of an established
 * connection; either may be NULL.  Returns NULL when out of memory.
 */
cfcost_redis_t *cfcost_redis_create(struct event_base *base,
    const cfcost_addr_t *addr, const char *name, unsigned timeout_ms,
    cfcost_redis_event_pt on_up, cfcost_redis_event_pt on_down, void *data);

/*
 * Sends AUTH with these credentials first on every connection (auth must
 * outlive rd); the connection is up only once Redis accepted them.
 */
void cfcost_redis_set_auth(cfcost_redis_t *rd,
    const cfcost_redis_auth_t *auth);

/* Starts connecting (and reconnecting whenever the connection is lost). */
void cfcost_redis_start(cfcost_redis_t *rd);

/* 1 when connected and able to take commands. */
int cfcost_redis_up(const cfcost_redis_t *rd);

/*
 * Sends a command.  extra_ms is added to the reply timeout (for BLOCK).
 * Returns 0 when sent (cb will run), -1 when the connection is down (cb
 * will not run).
 */
int cfcost_redis_argv(cfcost_redis_t *rd, cfcost_redis_reply_pt cb,
    void *data, unsigned extra_ms, int argc, const char **argv,
    const size_t *argvlen);

int cfcost_redis_cmd(cfcost_redis_t *rd, cfcost_redis_reply_pt cb,
    void *data, const char *fmt, ...);

/* Sends a command already in the protocol (redisFormatCommandArgv). */
int cfcost_redis_formatted(cfcost_redis_t *rd, cfcost_redis_reply_pt cb,
    void *data, unsigned extra_ms, const char *cmd, size_t len);

/*
 * Closes the connection for good: pending callbacks run with NULL, no
 * reconnect, on_down does not run.  Frees rd.
 */
void cfcost_redis_destroy(cfcost_redis_t *rd);

#endif /* CFCOST_AGG_REDIS_H */
