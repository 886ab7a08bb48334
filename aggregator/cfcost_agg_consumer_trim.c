/*
 * Retention, one record stream after the other every trim interval: the
 * trim script (by age and/or length, never past an entry a group still
 * needs; see cfcost_agg_lua.h), then XINFO CONSUMERS to forget consumers
 * that hold nothing and were idle for an hour.  The consumer's state
 * machine sends these steps and takes their replies; what they mean is
 * here.
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_consumer_int.h"


#define CFCOST_TRIM_SKEW_MS      300000     /* gateway clock vs Redis's */
#define CFCOST_TRIM_SCAN_CAP     4096
#define CFCOST_TRIM_INDEX_CAP    4000       /* buckets per pass */
#define CFCOST_MOVE_CHUNK        2000       /* old index members per call */
#define CFCOST_REAP_IDLE_MS      3600000        /* forget dead consumers */


/* One stream's retention: the trim script, then XINFO CONSUMERS. */
int
cfcost_consumer_trim(cfcost_consumer_t *c, cfcost_redis_reply_pt handler)
{
    char                      args[4][24];
    const char               *key;
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    if (!c->trimming) {
        c->trimming = 1;
        c->trim_i = 0;
    }

    key = c->streams[c->trim_i].key;

    snprintf(args[0], sizeof(args[0]), "%lld", (long long) cfcost_now_ms());
    snprintf(args[1], sizeof(args[1]), "%lld",
             (long long) conf->retention_days * CFCOST_DAY_MS);
    snprintf(args[2], sizeof(args[2]), "%u", conf->retention_max);
    snprintf(args[3], sizeof(args[3]), "%d", CFCOST_TRIM_SCAN_CAP);

    return cfcost_redis_cmd(c->rd, handler, c,
                            "EVALSHA %s 0 %s %s %s %s %s %b",
                            c->trim_sha, key, args[0], args[1], args[2],
                            args[3], CFCOST_WRITER_OF(key),
                            (size_t) CFCOST_WRITER_ID_LEN);
}


/* The log index's retention, once after each trim pass. */
int
cfcost_consumer_trim_index(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler)
{
    return cfcost_redis_cmd(c->rd, handler, c, "EVALSHA %s 0 %d %d",
                            c->logb_trim_sha, CFCOST_TRIM_SKEW_MS,
                            CFCOST_TRIM_INDEX_CAP);
}


void
cfcost_consumer_trimmed_index(cfcost_consumer_t *c, const redisReply *r)
{
    c->trim_index = 0;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[1]->type == REDIS_REPLY_INTEGER
        && r->element[0]->integer > 0)
    {
        cfcost_log_info("retention: %lld log index buckets removed%s",
                        r->element[0]->integer,
                        r->element[1]->integer ? "; more next pass" : "");
    }
}


/* Moves a chunk of the old log index into buckets. */
int
cfcost_consumer_move_index(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler)
{
    return cfcost_redis_cmd(c->rd, handler, c, "EVALSHA %s 0 %s %d",
                            c->logb_move_sha, c->move_cursor,
                            CFCOST_MOVE_CHUNK);
}


void
cfcost_consumer_moved_index(cfcost_consumer_t *c, const redisReply *r)
{
    const redisReply  *cur, *n, *st;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || (cur = r->element[0])->type != REDIS_REPLY_STRING
        || (n = r->element[1])->type != REDIS_REPLY_INTEGER
        || (st = r->element[2])->type != REDIS_REPLY_STRING
        || (size_t) cur->len >= sizeof(c->move_cursor))
    {
        cfcost_log_error("log index: moving the old index: unexpected "
                         "reply; left as it is");
        c->move_cursor[0] = '\0';
        return;
    }

    c->moved += (uint64_t) n->integer;

    if (strcmp(st->str, "more") != 0) {
        cfcost_log_error("log index: moving the old index: %s; left as it "
                         "is (%llu members moved)", st->str,
                         (unsigned long long) c->moved);
        c->move_cursor[0] = '\0';
        return;
    }

    memcpy(c->move_cursor, cur->str, (size_t) cur->len + 1);

    if (c->move_cursor[0] == '\0' && c->moved > 0) {
        cfcost_log_info("log index: %llu members of the old index moved "
                        "into buckets", (unsigned long long) c->moved);
    }
}


/* Logs what the trim script (reply r) did to the pass's stream; returns
 * 1 when the stream is retired (by this pass or another aggregator), 2
 * when it is not there, else 0. */
int
cfcost_consumer_trimmed(cfcost_consumer_t *c, const redisReply *r)
{
    char         iso[CFCOST_ISO_LEN + 1];
    const char  *key;

    key = c->streams[c->trim_i].key;

    if (r->type == REDIS_REPLY_ARRAY && (r->elements == 3 || r->elements == 4)
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[1]->type == REDIS_REPLY_INTEGER)
    {
        if (r->element[0]->integer > 0) {
            cfcost_iso_ms(iso, r->element[1]->integer);
            cfcost_log_info("retention: trimmed %lld entries of %s; it now "
                            "starts at %s", r->element[0]->integer, key, iso);
        }

        if (r->element[2]->type == REDIS_REPLY_INTEGER
            && r->element[2]->integer)
        {
            cfcost_log_info("retention: length trim of %s deferred: entries "
                            "beyond --retention-max are not acknowledged "
                            "yet", key);
        }

        if (r->elements == 4 && r->element[3]->type == REDIS_REPLY_INTEGER
            && (r->element[3]->integer == 1 || r->element[3]->integer == 2))
        {
            return (int) r->element[3]->integer;
        }
    }

    return 0;
}


/* The second step of a stream's retention: who reads it, to reap. */
int
cfcost_consumer_trim_consumers(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler)
{
    return cfcost_redis_cmd(c->rd, handler, c, "XINFO CONSUMERS %s %s",
                            c->streams[c->trim_i].key, c->agg->conf.group);
}


static void
cfcost_consumer_on_reaped(cfcost_redis_t *rd, redisReply *r, void *data)
{
    (void) rd;
    (void) r;
    (void) data;
}


/* Forgets consumers that hold nothing and were idle for an hour. */
void
cfcost_consumer_reap(cfcost_consumer_t *c, const redisReply *r)
{
    size_t             i, k;
    long long          pending, idle;
    const char        *name;
    const redisReply  *e, *f, *v;

    for (i = 0; i < r->elements; i++) {
        e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY) {
            continue;
        }

        name = NULL;
        pending = idle = -1;

        for (k = 0; k + 1 < e->elements; k += 2) {
            f = e->element[k];
            v = e->element[k + 1];
            if (f->type != REDIS_REPLY_STRING) {
                continue;
            }
            if (strcmp(f->str, "name") == 0
                && v->type == REDIS_REPLY_STRING)
            {
                name = v->str;
            } else if (strcmp(f->str, "pending") == 0) {
                pending = v->integer;
            } else if (strcmp(f->str, "idle") == 0) {
                idle = v->integer;
            }
        }

        if (name == NULL || pending != 0 || idle < CFCOST_REAP_IDLE_MS
            || strcmp(name, c->agg->conf.consumer) == 0)
        {
            continue;
        }

        cfcost_log_info("consumer: forgetting idle consumer %s on %s", name,
                        c->streams[c->trim_i].key);
        cfcost_redis_cmd(c->rd, cfcost_consumer_on_reaped, NULL,
                         "XGROUP DELCONSUMER %s %s %s",
                         c->streams[c->trim_i].key, c->agg->conf.group,
                         name);
    }
}


/* The trim pass moves on to the next stream, or ends. */
void
cfcost_consumer_trim_next(cfcost_consumer_t *c)
{
    c->trim_i++;
    cfcost_consumer_trim_check(c);
}


/* Ends the trim pass when it is past the last stream. */
void
cfcost_consumer_trim_check(cfcost_consumer_t *c)
{
    if (c->trim_i >= c->nstreams) {
        c->trimming = 0;
        c->trim_index = 1;
        c->next_trim = cfcost_mono_ms()
                       + (uint64_t) c->agg->conf.trim_interval_s * 1000;
    }
}
