/*
 * Stream consumer: records -> rollups, exactly once.  See
 * cfcost_agg_consumer.h.
 *
 * Every writer (a gateway worker) has its own record stream; the set
 * cfcost:writers names them.  One command at a time on the consumer's
 * connection, each step choosing the next:
 *
 *   (connected)  CLIENT ID, SCRIPT LOAD x3
 *   discovery    SMEMBERS cfcost:writers     every second, and after a
 *                                            BLOCK read that found nothing
 *   new stream   EVALSHA group (XGROUP CREATE, from where the stream's
 *                applied position says)
 *   own pending  XREADGROUP ... STREAMS <stream> <id>   per stream, until
 *                empty
 *   reclaim      XAUTOCLAIM per stream                  every claim-idle/2
 *   retention    EVALSHA trim, XINFO CONSUMERS per stream, every trim
 *                interval
 *   new          XREADGROUP ... BLOCK ... STREAMS <s1> .. <sN> > .. >
 *   each batch   EVALSHA apply, one per stream of the reply, in turn: the
 *                rollups of the new entries, the log index, the stream's
 *                applied position, XACK
 *
 * Why it is exactly once: the apply script is atomic, so an entry is
 * either counted and acknowledged or neither, and it counts an entry only
 * when the stream's applied position and holes say it is new (see
 * cfcost_agg_lua.h): not when a slow consumer applies entries another one
 * claimed and applied, nor when a lost group delivers entries again.  One
 * not acknowledged stays pending and comes back (own pending on reconnect,
 * XAUTOCLAIM after a crash).
 *
 * A Redis error reply never drops an entry: the step pauses and runs
 * again.  Only an error the record itself causes (a rollup key of the
 * wrong type, a counter overflow), on that entry alone, acknowledges it
 * uncounted, and at most CFCOST_POISON_RUN in a row.
 *
 * This file is the state machine: which step comes next, and what each
 * reply leads to.  What the commands say and what their replies hold is
 * in the files below it (cfcost_agg_consumer_int.h).
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_lua.h"
#include "cfcost_agg_consumer.h"
#include "cfcost_agg_consumer_int.h"


#define CFCOST_DISCOVER_MS       1000
#define CFCOST_POISON_RUN        16


static void cfcost_consumer_next(cfcost_consumer_t *c);
static void cfcost_consumer_init(cfcost_consumer_t *c);
static void cfcost_consumer_on_apply(cfcost_redis_t *rd, redisReply *r,
    void *data);


int
cfcost_consumer_ready(const cfcost_consumer_t *c)
{
    return c != NULL && c->ready;
}


size_t
cfcost_consumer_streams(const cfcost_consumer_t *c)
{
    return c != NULL ? c->nstreams : 0;
}


static void
cfcost_consumer_pause_handler(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;

    cfcost_consumer_next(arg);
}


/* ---- set-up on every connection ----------------------------------------- */


static void
cfcost_consumer_on_load(cfcost_redis_t *rd, redisReply *r, void *data)
{
    char               *sha;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "SCRIPT LOAD")) {
        return;
    }

    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        cfcost_log_error("consumer: SCRIPT LOAD: unexpected reply");
        cfcost_consumer_pause(c);
        return;
    }

    sha = (c->apply_sha[0] == '\0') ? c->apply_sha
          : (c->sum_sha[0] == '\0') ? c->sum_sha
          : (c->group_sha[0] == '\0') ? c->group_sha
          : (c->trim_sha[0] == '\0') ? c->trim_sha
          : (c->logb_trim_sha[0] == '\0') ? c->logb_trim_sha
          : c->logb_move_sha;
    memcpy(sha, r->str, 40);
    sha[40] = '\0';

    c->busy = 0;
    cfcost_consumer_init(c);
}


static void
cfcost_consumer_on_client_id(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "CLIENT ID")) {
        return;
    }

    c->client_id = (r->type == REDIS_REPLY_INTEGER) ? r->integer : -1;
    c->busy = 0;

    cfcost_consumer_init(c);
}


/*
 * An error moving the old index (but a script to load again) leaves it
 * where it is until the next connection, loudly: it must not hold up the
 * accounting.  Returns 1 when the caller should stop.
 */
static int
cfcost_consumer_move_failed(cfcost_consumer_t *c, redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) != 0)
    {
        cfcost_log_error("log index: moving the old index: %s; left as it "
                         "is until the next connection", r->str);
        c->agg->redis_errors++;
        c->busy = 0;
        c->move_cursor[0] = '\0';
        return 0;
    }

    return cfcost_consumer_failed(c, r, "moving the old log index");
}


/* A chunk of the old index moved: the set-up's first goes on with the
 * set-up, the others with the next step. */
static void
cfcost_consumer_on_move(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_move_failed(c, r)) {
        return;
    }

    if (r->type != REDIS_REPLY_ERROR) {
        cfcost_consumer_moved_index(c, r);
    }

    if (c->move_first) {
        c->move_first = 0;
        cfcost_consumer_init(c);
        return;
    }

    cfcost_consumer_next(c);
}


/* The next set-up step not done yet on this connection. */
static void
cfcost_consumer_init(cfcost_consumer_t *c)
{
    int  rc;

    if (c->stopping) {
        cfcost_consumer_finish(c);
        return;
    }

    if (c->client_id == 0) {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_client_id, c,
                              "CLIENT ID");

    } else if (c->apply_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_apply);

    } else if (c->sum_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_sum);

    } else if (c->group_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_group);

    } else if (c->trim_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_trim);

    } else if (c->logb_trim_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_logb_trim);

    } else if (c->logb_move_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_logb_move);

    } else if (c->move_first) {
        /* the old index's first chunk: the rest between reads */
        rc = cfcost_consumer_move_index(c, cfcost_consumer_on_move);

    } else {
        c->ready = 1;
        c->next_claim = cfcost_mono_ms();
        if (c->next_trim == 0) {
            c->next_trim = cfcost_mono_ms() + 1000;
        }
        cfcost_log_info("consumer: reading the streams of %s as %s/%s",
                        CFCOST_WRITERS_SET, c->agg->conf.group,
                        c->agg->conf.consumer);
        cfcost_consumer_next(c);
        return;
    }

    cfcost_consumer_sent(c, rc);
}


void
cfcost_consumer_redis_up(cfcost_redis_t *rd, void *data)
{
    cfcost_agg_t       *agg = data;
    cfcost_consumer_t  *c = agg->consumer;

    (void) rd;

    /* a new connection: maybe a new Redis, without our scripts */
    cfcost_consumer_reset(c);
    c->apply_sha[0] = '\0';
    c->sum_sha[0] = '\0';
    c->group_sha[0] = '\0';
    c->trim_sha[0] = '\0';
    c->logb_trim_sha[0] = '\0';
    c->logb_move_sha[0] = '\0';

    /* an index an earlier version left: moved on each new connection */
    strcpy(c->move_cursor, CFCOST_SCOPE_ALL);
    c->moved = 0;
    c->move_first = 1;

    cfcost_consumer_init(c);
}


void
cfcost_consumer_redis_down(cfcost_redis_t *rd, void *data)
{
    cfcost_agg_t       *agg = data;
    cfcost_consumer_t  *c = agg->consumer;

    (void) rd;

    cfcost_consumer_reset(c);

    if (c->stopping) {
        cfcost_consumer_finish(c);
    }
}


/* ---- discovery ---------------------------------------------------------- */


static void
cfcost_consumer_on_writers(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "SMEMBERS " CFCOST_WRITERS_SET)) {
        return;
    }

    c->busy = 0;
    c->next_discover = cfcost_mono_ms() + CFCOST_DISCOVER_MS;

    if (r->type == REDIS_REPLY_ARRAY) {
        cfcost_consumer_add_writers(c, r);
    }

    cfcost_consumer_next(c);
}


static void
cfcost_consumer_on_group(cfcost_redis_t *rd, redisReply *r, void *data)
{
    size_t              i;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XGROUP CREATE")) {
        return;
    }

    c->busy = 0;

    /* the first stream without a group is the one we sent */
    i = cfcost_consumer_ungrouped(c);

    if (i < c->nstreams && r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[0]->integer == 2)
    {
        cfcost_consumer_drop_stream(c, i);

    } else if (i < c->nstreams) {
        c->streams[i].grouped = 1;

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
            && r->element[0]->type == REDIS_REPLY_INTEGER
            && r->element[0]->integer == 1
            && r->element[1]->type == REDIS_REPLY_STRING)
        {
            cfcost_log_info("consumer: group %s created on %s after %s",
                            c->agg->conf.group, c->streams[i].key,
                            r->element[1]->str);
        }
    }

    cfcost_consumer_next(c);
}


/* ---- applying a batch --------------------------------------------------- */


/* Sends the next queued apply script. */
static int
cfcost_consumer_send_apply(cfcost_consumer_t *c)
{
    cfcost_apply_t  *q = &c->queue[c->qnext];

    cfcost_log_debug("consumer: applying %u entries of %s", q->n,
                     c->streams[q->stream].key);

    return cfcost_redis_formatted(c->rd, cfcost_consumer_on_apply, c, 0,
                                  q->cmd, q->len);
}


/*
 * The script failed because of some entry: retry them one at a time from
 * our pending lists; a single entry that still fails so is acknowledged
 * uncounted, so one bad record cannot stop the stream.  Not more than
 * CFCOST_POISON_RUN in a row, though: that many bad records in a row
 * rather mean that something shared is broken (a rollup of everyone of
 * the wrong type): then retry, and lose nothing.
 */
static void
cfcost_consumer_poison(cfcost_consumer_t *c, redisReply *r)
{
    size_t           si, k;
    char             id[CFCOST_STREAM_ID_MAX + 1];
    unsigned         records;
    cfcost_apply_t  *q = &c->queue[c->qnext];

    if (q->n > 1 || q->one_id[0] == '\0') {
        cfcost_log_warn("consumer: batch failed (%s); retrying its entries "
                        "one by one", r->str);
        c->single = 1;
        cfcost_consumer_repend(c);
        cfcost_consumer_next(c);
        return;
    }

    si = q->stream;
    strcpy(id, q->one_id);
    records = q->records;

    /* the scripts of this read not sent yet (other streams') go with the
     * queue: their entries are ours, pending, read again after the skip */
    for (k = c->qnext + 1; k < c->qlen; k++) {
        c->streams[c->queue[k].stream].need_pending = 1;
        strcpy(c->streams[c->queue[k].stream].pending_from, "0");
    }

    cfcost_consumer_queue_free(c);

    if (c->poison_run >= CFCOST_POISON_RUN) {
        cfcost_log_error("consumer: entry %s of %s cannot be applied (%s), "
                         "nor could the %d before it: skipping no more, "
                         "retrying", id, c->streams[si].key, r->str,
                         CFCOST_POISON_RUN);
        cfcost_consumer_repend(c);
        cfcost_consumer_pause(c);
        return;
    }

    cfcost_log_error("consumer: entry %s of %s cannot be applied (%s): "
                     "acknowledged without counting its %u record%s", id,
                     c->streams[si].key, r->str, records,
                     records == 1 ? "" : "s");

    if (cfcost_consumer_skip(c, si, id) != 0) {
        cfcost_log_error("consumer: out of memory");
        cfcost_consumer_repend(c);
        cfcost_consumer_pause(c);
        return;
    }

    c->poison_run++;
    c->agg->invalid += records;
    cfcost_consumer_sent(c, cfcost_consumer_send_apply(c));
}


static void
cfcost_consumer_on_apply(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && cfcost_consumer_record_error(r->str))
    {
        c->busy = 0;
        c->agg->redis_errors++;
        cfcost_consumer_poison(c, r);
        return;
    }

    if (cfcost_consumer_failed(c, r, "apply")) {
        /* the entries stay pending with us: read them again */
        cfcost_consumer_repend(c);
        return;
    }

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[0]->integer < 0 && c->queue[c->qnext].sum)
    {
        /*
         * The summed script found something for cfcost_lua_apply to
         * decide (a hole, a stale entry, another consumer's pending) and
         * wrote nothing: our pending entries again, by that one.
         */
        cfcost_log_info("consumer: %u entries of %s are not all new: "
                        "applying them by the exact script",
                        c->queue[c->qnext].n,
                        c->streams[c->queue[c->qnext].stream].key);
        c->busy = 0;
        c->exact = 1;
        c->agg->batches_exact++;
        cfcost_consumer_repend(c);
        cfcost_consumer_next(c);
        return;
    }

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[1]->type == REDIS_REPLY_INTEGER
        && r->element[2]->type == REDIS_REPLY_INTEGER)
    {
        c->agg->applied += (uint64_t) r->element[0]->integer;
        c->agg->duplicates += (uint64_t) r->element[1]->integer;
        c->agg->stale += (uint64_t) r->element[2]->integer;
        c->agg->invalid += c->queue[c->qnext].invalid;
        if (r->element[0]->integer > 0) {
            c->poison_run = 0;
        }
    }

    c->agg->batches++;
    c->busy = 0;

    if (++c->qnext == c->qlen) {
        cfcost_consumer_queue_free(c);
    }

    cfcost_consumer_next(c);
}


/* ---- reading ------------------------------------------------------------ */


/* Sends the first queued script, if any; else the next step. */
static void
cfcost_consumer_apply_queued(cfcost_consumer_t *c)
{
    if (c->qlen == 0) {
        cfcost_consumer_next(c);
        return;
    }

    cfcost_consumer_sent(c, cfcost_consumer_send_apply(c));
}


/* After a failure to queue (out of memory): read our pending later. */
static void
cfcost_consumer_queue_failed(cfcost_consumer_t *c)
{
    cfcost_consumer_repend(c);
    cfcost_consumer_pause(c);
}


/*
 * Whether to wait --linger after a read of n entries (nr records) at now
 * (ms): when the read was less than a batch and records come faster than
 * --linger-rate a second.  The rate is the records read in this window
 * of CFCOST_RATE_WINDOW ms and the one before, over the time they span;
 * an idle gap empties both.
 */
#define CFCOST_RATE_WINDOW  100

static int
cfcost_consumer_linger(cfcost_consumer_t *c, uint64_t now, size_t n,
    size_t nr)
{
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    if (now - c->rate_at >= CFCOST_RATE_WINDOW) {
        c->rate_prev = (now - c->rate_at < 2 * CFCOST_RATE_WINDOW)
                       ? c->rate_n : 0;
        c->rate_n = 0;
        c->rate_at = now;
    }

    c->rate_n += nr;

    if (conf->linger_ms == 0 || n >= conf->batch) {
        return 0;
    }

    /* records a second > linger_rate, over CFCOST_RATE_WINDOW + (now -
     * rate_at) ms */
    return (c->rate_prev + c->rate_n) * 1000
           > (uint64_t) conf->linger_rate
             * (CFCOST_RATE_WINDOW + (now - c->rate_at));
}


/* The entries of an XREADGROUP reply, over its streams. */
static size_t
cfcost_consumer_read_count(const redisReply *r)
{
    size_t             i, n;
    const redisReply  *s;

    n = 0;

    for (i = 0; i < r->elements; i++) {
        s = r->element[i];

        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2
            && s->element[1]->type == REDIS_REPLY_ARRAY)
        {
            n += s->element[1]->elements;
        }
    }

    return n;
}


static void
cfcost_consumer_on_new(cfcost_redis_t *rd, redisReply *r, void *data)
{
    size_t              i, n, nr;
    uint64_t            now;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XREADGROUP")) {
        return;
    }

    c->busy = 0;
    c->blocked = 0;

    /* nil: BLOCK timed out, or CLIENT UNBLOCK: look for new writers */
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        c->next_discover = 0;
        cfcost_consumer_next(c);
        return;
    }

    if (cfcost_consumer_queue_read(c, r) != 0) {
        cfcost_consumer_queue_failed(c);
        return;
    }

    /*
     * Less than a batch: the traffic is light, and the next read would
     * return as soon as one record came, one script run per record or
     * so.  Waiting --linger first makes the batches, and so the scripts,
     * fewer and larger, for at most that much more delay -- when records
     * come often enough for the scripts' fixed cost to matter.
     */
    n = cfcost_consumer_read_count(r);
    now = cfcost_mono_ms();

    for (i = 0, nr = 0; i < c->qlen; i++) {
        nr += c->queue[i].records;          /* a batch entry holds many */
    }

    if (cfcost_consumer_linger(c, now, n, nr)) {
        c->linger_until = now + c->agg->conf.linger_ms;
    }

    cfcost_consumer_apply_queued(c);
}


static void
cfcost_consumer_on_pending(cfcost_redis_t *rd, redisReply *r, void *data)
{
    size_t              si;
    const redisReply   *e;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XREADGROUP (pending)")) {
        return;
    }

    c->busy = 0;

    si = cfcost_consumer_pending_stream(c);
    if (si == c->nstreams) {
        cfcost_consumer_next(c);
        return;
    }

    e = cfcost_consumer_pending_read(c, si, r);
    if (e == NULL) {
        cfcost_consumer_next(c);
        return;
    }

    if (cfcost_consumer_batch(c, si, e) < 0) {
        cfcost_consumer_queue_failed(c);
        return;
    }

    cfcost_consumer_apply_queued(c);
}


static void
cfcost_consumer_on_claim(cfcost_redis_t *rd, redisReply *r, void *data)
{
    const redisReply   *e;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XAUTOCLAIM")) {
        return;
    }

    c->busy = 0;

    if (cfcost_consumer_claimed(c, r, &e) != 0) {
        cfcost_consumer_pause(c);
        return;
    }

    if (e != NULL && cfcost_consumer_batch(c, c->claim_i, e) < 0) {
        cfcost_consumer_queue_failed(c);
        return;
    }

    cfcost_consumer_claim_next(c);
    cfcost_consumer_apply_queued(c);
}


/* ---- retention ---------------------------------------------------------- */


static void
cfcost_consumer_on_consumers(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XINFO CONSUMERS")) {
        return;
    }

    c->busy = 0;

    if (r->type == REDIS_REPLY_ARRAY && c->trim_i < c->nstreams) {
        cfcost_consumer_reap(c, r);
    }

    cfcost_consumer_trim_next(c);
    cfcost_consumer_next(c);
}


static void
cfcost_consumer_on_trim(cfcost_redis_t *rd, redisReply *r, void *data)
{
    int                 rc;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "retention")) {
        return;
    }

    c->busy = 0;

    if (c->trim_i >= c->nstreams) {
        cfcost_consumer_trim_next(c);
        cfcost_consumer_next(c);
        return;
    }

    switch (cfcost_consumer_trimmed(c, r)) {

    case 1:
        /* retired: the pass goes on with the stream now at trim_i */
        cfcost_consumer_drop_stream(c, c->trim_i);
        cfcost_consumer_next(c);
        return;

    case 2:
        /* no stream (yet): nobody to reap */
        cfcost_consumer_trim_next(c);
        cfcost_consumer_next(c);
        return;
    }

    rc = cfcost_consumer_trim_consumers(c, cfcost_consumer_on_consumers);
    cfcost_consumer_sent(c, rc);
}


static void
cfcost_consumer_on_trim_index(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "log index retention")) {
        return;
    }

    cfcost_consumer_trimmed_index(c, r);
    cfcost_consumer_next(c);
}


/* ---- the loop ----------------------------------------------------------- */


/* Chooses and sends the step for which the time has come, or waits. */
static int
cfcost_consumer_step(cfcost_consumer_t *c, uint64_t now)
{
    size_t                    i;
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    if (c->qnext < c->qlen) {
        return cfcost_consumer_send_apply(c);
    }

    if (now >= c->next_discover) {
        return cfcost_redis_cmd(c->rd, cfcost_consumer_on_writers, c,
                                "SMEMBERS " CFCOST_WRITERS_SET);
    }

    i = cfcost_consumer_ungrouped(c);
    if (i < c->nstreams) {
        return cfcost_redis_cmd(c->rd, cfcost_consumer_on_group, c,
                                "EVALSHA %s 0 %s %s", c->group_sha,
                                c->streams[i].key, conf->group);
    }

    i = cfcost_consumer_pending_stream(c);
    if (i < c->nstreams) {
        return cfcost_consumer_read_pending(c, i, cfcost_consumer_on_pending);
    }

    if (c->single) {
        cfcost_log_info("consumer: pending entries done, back to batches");
        c->single = 0;
    }

    c->exact = 0;

    /* a chunk of the old index, then a step of the rest (reads block
     * briefly meanwhile), until it is all moved */
    if (c->move_cursor[0] != '\0' && !c->move_turn) {
        c->move_turn = 1;
        return cfcost_consumer_move_index(c, cfcost_consumer_on_move);
    }

    c->move_turn = 0;

    if (c->nstreams == 0) {
        c->busy = 0;
        cfcost_consumer_wait(c, (unsigned) (c->next_discover - now));
        return 1;
    }

    if (c->claiming || now >= c->next_claim) {
        return cfcost_consumer_claim(c, cfcost_consumer_on_claim);
    }

    if (c->trimming || (now >= c->next_trim
                        && (conf->retention_days || conf->retention_max)))
    {
        return cfcost_consumer_trim(c, cfcost_consumer_on_trim);
    }

    if (c->trim_index) {
        return cfcost_consumer_trim_index(c, cfcost_consumer_on_trim_index);
    }

    if (now < c->linger_until) {
        c->busy = 0;
        cfcost_consumer_wait(c, (unsigned) (c->linger_until - now));
        return 1;
    }

    return cfcost_consumer_read_new(c, cfcost_consumer_on_new);
}


static void
cfcost_consumer_next(cfcost_consumer_t *c)
{
    int  rc;

    if (c->busy || c->stopped) {
        return;
    }

    if (c->stopping) {
        cfcost_consumer_finish(c);
        return;
    }

    if (!cfcost_redis_up(c->rd)) {
        return;                 /* on_up resumes */
    }

    if (!c->ready) {
        cfcost_consumer_redis_up(c->rd, c->agg);
        return;
    }

    if (evtimer_pending(c->pause_ev, NULL)) {
        return;                 /* the timer resumes */
    }

    rc = cfcost_consumer_step(c, cfcost_mono_ms());
    if (rc != 1) {
        cfcost_consumer_sent(c, rc);
    }
}


int
cfcost_consumer_create(cfcost_agg_t *agg)
{
    cfcost_consumer_t  *c;

    c = calloc(1, sizeof(cfcost_consumer_t));
    if (c == NULL) {
        return -1;
    }

    c->agg = agg;
    c->rd = agg->consumer_rd;
    c->pause_ev = evtimer_new(agg->base, cfcost_consumer_pause_handler, c);

    if (c->pause_ev == NULL) {
        free(c);
        return -1;
    }

    agg->consumer = c;

    return 0;
}


static void
cfcost_consumer_on_unblock(cfcost_redis_t *rd, redisReply *r, void *data)
{
    (void) rd;
    (void) r;
    (void) data;
}


void
cfcost_consumer_stop(cfcost_consumer_t *c, void (*done)(void *data),
    void *data)
{
    c->done = done;
    c->done_data = data;

    if (c->stopping) {
        return;
    }

    c->stopping = 1;
    evtimer_del(c->pause_ev);

    if (!c->busy) {
        cfcost_consumer_finish(c);
        return;
    }

    /* a BLOCK read returns nil at once; a batch in flight is finished */
    if (c->blocked && c->client_id > 0) {
        cfcost_redis_cmd(c->agg->http_rd, cfcost_consumer_on_unblock, NULL,
                         "CLIENT UNBLOCK %lld", c->client_id);
    }
}


void
cfcost_consumer_free(cfcost_consumer_t *c)
{
    if (c == NULL) {
        return;
    }

    cfcost_consumer_queue_free(c);
    event_free(c->pause_ev);
    free(c->streams);
    free(c);
}
