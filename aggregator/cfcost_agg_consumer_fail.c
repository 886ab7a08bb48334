/*
 * How a step of the consumer ends when it cannot go on: an error reply
 * (a pause, then the step again; never an entry dropped), a lost
 * connection (everything again from on_up), and the end of a stop.
 */

#include <string.h>

#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_consumer_int.h"


#define CFCOST_PAUSE_MS          1000


static void
cfcost_consumer_done_handler(evutil_socket_t fd, short what, void *arg)
{
    cfcost_consumer_t  *c;

    (void) fd;
    (void) what;

    c = arg;

    if (c->done) {
        c->done(c->done_data);
    }
}


/* Reports the stop from a fresh event: callers may free Redis then. */
void
cfcost_consumer_finish(cfcost_consumer_t *c)
{
    struct timeval  tv = { 0, 0 };

    if (c->stopped) {
        return;
    }

    c->stopped = 1;
    evtimer_del(c->pause_ev);

    cfcost_log_info("consumer: stopped (%llu records applied, %llu "
                    "duplicates)", (unsigned long long) c->agg->applied,
                    (unsigned long long) c->agg->duplicates);

    if (event_base_once(c->agg->base, -1, EV_TIMEOUT,
                        cfcost_consumer_done_handler, c, &tv) != 0)
    {
        cfcost_consumer_done_handler(-1, 0, c);
    }
}


/* Waits ms before the next step. */
void
cfcost_consumer_wait(cfcost_consumer_t *c, unsigned ms)
{
    struct timeval  tv;

    if (c->stopping) {
        cfcost_consumer_finish(c);
        return;
    }

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    evtimer_add(c->pause_ev, &tv);
}


/* Waits a moment before the next step (after an error reply). */
void
cfcost_consumer_pause(cfcost_consumer_t *c)
{
    cfcost_consumer_wait(c, CFCOST_PAUSE_MS);
}


/* 1 when err starts with one of the codes (a word of its own). */
static int
cfcost_consumer_err_is(const char *err, const char **codes)
{
    size_t  i, n;

    for (i = 0; codes[i] != NULL; i++) {
        n = strlen(codes[i]);
        if (strncmp(err, codes[i], n) == 0
            && (err[n] == ' ' || err[n] == '\0'))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * 1 when an apply script's error can come from the entries themselves:
 * a rollup or index key of the wrong type, a counter that would overflow
 * or does not hold a number.  Anything else is Redis's state (LOADING,
 * BUSY, OOM, MISCONF, READONLY, NOSCRIPT, NOGROUP...), or unknown, and is
 * retried, never skipped.
 */
int
cfcost_consumer_record_error(const char *err)
{
    static const char  *codes[] = {
        "WRONGTYPE", "ERR increment or decrement would overflow",
        "ERR hash value is not an integer",
        "ERR value is not an integer or out of range", NULL
    };

    return cfcost_consumer_err_is(err, codes);
}


/* Reads our own pending entries again, on every stream. */
void
cfcost_consumer_repend(cfcost_consumer_t *c)
{
    size_t  i;

    cfcost_consumer_queue_free(c);

    for (i = 0; i < c->nstreams; i++) {
        c->streams[i].need_pending = 1;
        strcpy(c->streams[i].pending_from, "0");
    }
}


/* Everything again on a new connection (groups may be gone, too). */
void
cfcost_consumer_reset(cfcost_consumer_t *c)
{
    size_t  i;

    cfcost_consumer_repend(c);

    for (i = 0; i < c->nstreams; i++) {
        c->streams[i].grouped = 0;
    }

    c->ready = 0;
    c->busy = 0;
    c->blocked = 0;
    c->client_id = 0;
    c->claiming = 0;
    c->trimming = 0;
    c->trim_index = 0;
    c->single = 0;
    c->exact = 0;
    c->next_discover = 0;
    evtimer_del(c->pause_ev);
}


/*
 * Common handling of a reply that is not what the step wanted.  NULL: the
 * connection is gone, the step resumes from on_up.  An error: logged, a
 * pause, then the next step.  Returns 1 when the caller should stop.
 */
int
cfcost_consumer_failed(cfcost_consumer_t *c, redisReply *r, const char *what)
{
    size_t  i;

    c->busy = 0;
    c->blocked = 0;

    if (r == NULL) {
        c->ready = 0;
        if (c->stopping) {
            cfcost_consumer_finish(c);
        }
        return 1;
    }

    if (r->type != REDIS_REPLY_ERROR) {
        return 0;
    }

    c->agg->redis_errors++;

    if (strncmp(r->str, "NOSCRIPT", 8) == 0) {
        cfcost_log_warn("consumer: %s: %s; loading the scripts again", what,
                        r->str);
        c->ready = 0;

    } else if (strncmp(r->str, "NOGROUP", 7) == 0) {
        /* a group is gone: create them again, from where each stream's
         * applied position says (the script skips existing ones) */
        cfcost_log_warn("consumer: %s: %s; creating the groups again", what,
                        r->str);
        for (i = 0; i < c->nstreams; i++) {
            c->streams[i].grouped = 0;
        }

    } else {
        cfcost_log_warn("consumer: %s: %s; again in %d ms", what, r->str,
                        CFCOST_PAUSE_MS);
    }

    cfcost_consumer_pause(c);
    return 1;
}


/* After a step's command was sent (rc 0) or not (the connection is down:
 * on_up resumes). */
void
cfcost_consumer_sent(cfcost_consumer_t *c, int rc)
{
    if (rc == 0) {
        c->busy = 1;
        return;
    }

    c->busy = 0;
    c->blocked = 0;
    c->ready = 0;

    if (c->stopping) {
        cfcost_consumer_finish(c);
    }
}
