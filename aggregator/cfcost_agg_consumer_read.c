/*
 * The consumer's three reads of the streams, their commands and what
 * their replies hold: our own pending entries (XREADGROUP from an id, one
 * stream at a time), new entries (XREADGROUP BLOCK ... >, every stream at
 * once), and the entries other consumers left pending too long
 * (XAUTOCLAIM, one stream after the other).  The consumer's state machine
 * sends them and applies what they return.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_consumer_int.h"


/* Reads our own pending entries of stream si (one at a time: single). */
int
cfcost_consumer_read_pending(cfcost_consumer_t *c, size_t si,
    cfcost_redis_reply_pt handler)
{
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    return cfcost_redis_cmd(c->rd, handler, c,
                            "XREADGROUP GROUP %s %s COUNT %u STREAMS "
                            "%s %s", conf->group, conf->consumer,
                            c->single ? 1 : conf->batch,
                            c->streams[si].key,
                            c->streams[si].pending_from);
}


/*
 * The entries of r, a reply to cfcost_consumer_read_pending() for stream
 * si; the next read starts after the last of them.  NULL when there are
 * none: the stream's own pending entries are done.
 */
const redisReply *
cfcost_consumer_pending_read(cfcost_consumer_t *c, size_t si,
    const redisReply *r)
{
    cfcost_stream_t   *st;
    const redisReply  *e, *last;

    st = &c->streams[si];
    e = NULL;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1
        && r->element[0]->type == REDIS_REPLY_ARRAY
        && r->element[0]->elements == 2
        && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
    {
        e = r->element[0]->element[1];
    }

    if (e == NULL || e->elements == 0) {
        st->need_pending = 0;
        return NULL;
    }

    last = e->element[e->elements - 1];
    if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1
        && last->element[0]->type == REDIS_REPLY_STRING
        && last->element[0]->len < sizeof(st->pending_from))
    {
        memcpy(st->pending_from, last->element[0]->str,
               last->element[0]->len);
        st->pending_from[last->element[0]->len] = '\0';
    }

    return e;
}


/*
 * The BLOCK read of every stream: its reply may take block_ms more than
 * any other command, and the reply deadline says so.  It blocks no longer
 * than until the next look at cfcost:writers, so that a new writer's
 * records (a worker started by a reload, say) wait at most that, not
 * block_ms more.
 */
int
cfcost_consumer_read_new(cfcost_consumer_t *c, cfcost_redis_reply_pt handler)
{
    int                       rc, argc;
    char                      count[24], block[24];
    unsigned                  block_ms;
    uint64_t                  now;
    size_t                    i, *lens;
    const char              **argv;
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    argc = 9 + 2 * (int) c->nstreams;
    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));

    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        return -1;
    }

    snprintf(count, sizeof(count), "%u", conf->batch);
    block_ms = conf->block_ms;
    now = cfcost_mono_ms();

    if (c->next_discover > now && c->next_discover - now < block_ms) {
        block_ms = (unsigned) (c->next_discover - now);
    }

    if (block_ms < 10 || c->move_cursor[0] != '\0') {
        block_ms = 10;
    }

    snprintf(block, sizeof(block), "%u", block_ms);

    argv[0] = "XREADGROUP";
    argv[1] = "GROUP";
    argv[2] = conf->group;
    argv[3] = conf->consumer;
    argv[4] = "COUNT";
    argv[5] = count;
    argv[6] = "BLOCK";
    argv[7] = block;
    argv[8] = "STREAMS";

    for (i = 0; i < c->nstreams; i++) {
        argv[9 + i] = c->streams[i].key;
        argv[9 + c->nstreams + i] = ">";
    }

    for (i = 0; i < (size_t) argc; i++) {
        lens[i] = strlen(argv[i]);
    }

    c->blocked = 1;
    rc = cfcost_redis_argv(c->rd, handler, c, block_ms, argc, argv,
                           lens);

    free(argv);
    free(lens);

    return rc;
}


/* Reclaims what other consumers left pending on the pass's stream. */
int
cfcost_consumer_claim(cfcost_consumer_t *c, cfcost_redis_reply_pt handler)
{
    char                      count[24];
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    if (!c->claiming) {
        c->claiming = 1;
        c->claim_i = 0;
        strcpy(c->claim_from, "0-0");
    }

    snprintf(count, sizeof(count), "%u", conf->batch);

    return cfcost_redis_cmd(c->rd, handler, c,
                            "XAUTOCLAIM %s %s %s %u %s COUNT %s",
                            c->streams[c->claim_i].key, conf->group,
                            conf->consumer, conf->claim_idle_ms,
                            c->claim_from, count);
}


/*
 * Reads r, a reply to cfcost_consumer_claim(): where the stream's next
 * XAUTOCLAIM starts, and in *entries the entries reclaimed (NULL: none).
 * Returns 0, or -1 when the reply is not one (logged; the pass ends).
 */
int
cfcost_consumer_claimed(cfcost_consumer_t *c, const redisReply *r,
    const redisReply **entries)
{
    const redisReply  *next;

    *entries = NULL;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING
        || r->element[0]->len >= sizeof(c->claim_from)
        || c->claim_i >= c->nstreams)
    {
        cfcost_log_error("consumer: XAUTOCLAIM: unexpected reply");
        c->claiming = 0;
        return -1;
    }

    next = r->element[0];
    memcpy(c->claim_from, next->str, next->len);
    c->claim_from[next->len] = '\0';

    if (r->element[1]->type == REDIS_REPLY_ARRAY
        && r->element[1]->elements > 0)
    {
        cfcost_log_info("consumer: reclaimed %zu entries of %s pending with "
                        "other consumers", r->element[1]->elements,
                        c->streams[c->claim_i].key);

        *entries = r->element[1];
    }

    return 0;
}


/* When the stream is done, the claim pass moves on to the next, or ends. */
void
cfcost_consumer_claim_next(cfcost_consumer_t *c)
{
    if (strcmp(c->claim_from, "0-0") == 0) {
        c->claim_i++;
        cfcost_consumer_claim_check(c);
    }
}


/* Ends the claim pass when it is past the last stream. */
void
cfcost_consumer_claim_check(cfcost_consumer_t *c)
{
    unsigned  every;

    if (c->claim_i >= c->nstreams) {
        c->claiming = 0;
        every = c->agg->conf.claim_idle_ms / 2;
        c->next_claim = cfcost_mono_ms() + (every < 1000 ? 1000 : every);
    }
}
