/*
 * A scripted Redis for unit tests of the aggregator: the functions of
 * aggregator/cfcost_agg_redis.h that send commands, with the same
 * contract, and no socket.  A test links it instead of cfcost_agg_redis.c.
 *
 * The contract kept (cfcost_agg_redis.h): every command's callback runs
 * exactly once, with its reply, or with NULL when the connection is lost
 * (or timed out); a command sent while the connection is down returns -1
 * and its callback never runs; on_down runs after the callbacks of a lost
 * connection, on_up after every connect.
 *
 * What the test does: reads the oldest command in flight (its arguments,
 * joined by spaces, in fake_cmd_t.line), answers it with a reply written
 * in the protocol (RESP) -- parsed by hiredis's own reader into the
 * redisReply hiredis would hand over, and freed after the callback as
 * hiredis frees it -- or drops the connection, or lets the watchdog drop
 * it when the oldest command's reply deadline (cfcost_mono_ms() at
 * sending + timeout + extra_ms, as cfcost_agg_redis.c computes it) is
 * past.
 */

#ifndef FAKE_REDIS_H
#define FAKE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"


typedef struct fake_cmd_s  fake_cmd_t;

struct fake_cmd_s {
    fake_cmd_t             *next;
    cfcost_redis_reply_pt   cb;
    void                   *data;
    unsigned                extra_ms;
    uint64_t                deadline;   /* monotonic ms */
    size_t                  argc;
    char                  **argv;       /* NUL-terminated copies */
    char                   *line;       /* argv joined by single spaces */
};


/* A connection, down; on_up/on_down/data as for cfcost_redis_create(). */
cfcost_redis_t *fake_redis_create(const char *name, unsigned timeout_ms,
    cfcost_redis_event_pt on_up, cfcost_redis_event_pt on_down, void *data);

/* Drops the connection if up (callbacks with NULL, no on_down); frees. */
void fake_redis_free(cfcost_redis_t *rd);

/* The connection comes up: on_up runs. */
void fake_redis_connect(cfcost_redis_t *rd);

/*
 * The connection is lost: each command in flight, oldest first, gets its
 * callback with NULL (while the connection already reads as down), then
 * on_down runs.
 */
void fake_redis_drop(cfcost_redis_t *rd);

/*
 * The watchdog of cfcost_agg_redis.c: drops the connection when the
 * oldest command's deadline is before cfcost_mono_ms().  Returns 1 if it
 * did.
 */
int fake_redis_watch(cfcost_redis_t *rd);

/* The oldest command in flight, or NULL. */
const fake_cmd_t *fake_redis_peek(const cfcost_redis_t *rd);

/* The number of commands in flight, and of all commands ever sent. */
size_t fake_redis_inflight(const cfcost_redis_t *rd);
size_t fake_redis_sent(const cfcost_redis_t *rd);

/*
 * Answers the oldest command in flight with the reply in resp[0..len)
 * (exactly one RESP value).  Returns 0, or -1 when nothing is in flight
 * or resp is not one whole reply.
 */
int fake_redis_reply(cfcost_redis_t *rd, const char *resp, size_t len);


/* ---- writing replies ---------------------------------------------------- */

typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} fake_resp_t;


void fake_resp_reset(fake_resp_t *b);
void fake_resp_free(fake_resp_t *b);

void fake_resp_array(fake_resp_t *b, size_t n);
void fake_resp_bulk(fake_resp_t *b, const char *s);
void fake_resp_int(fake_resp_t *b, long long v);
void fake_resp_status(fake_resp_t *b, const char *s);
void fake_resp_error(fake_resp_t *b, const char *s);
void fake_resp_nil(fake_resp_t *b);           /* $-1 */
void fake_resp_nil_array(fake_resp_t *b);     /* *-1 */

#endif /* FAKE_REDIS_H */
