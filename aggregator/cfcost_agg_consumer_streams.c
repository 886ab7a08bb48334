/*
 * The writers' record streams the consumer reads: one per writer named in
 * cfcost:writers, kept sorted by key, at most CFCOST_STREAMS_MAX of them.
 * Each remembers whether its group exists and whether our own pending
 * entries on it are still to be read.
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_consumer_int.h"


static int
cfcost_stream_cmp(const void *a, const void *b)
{
    return strcmp(((const cfcost_stream_t *) a)->key,
                  ((const cfcost_stream_t *) b)->key);
}


/* The index of the stream named key[0..len), or nstreams. */
size_t
cfcost_consumer_find(cfcost_consumer_t *c, const char *key, size_t len)
{
    cfcost_stream_t   k, *s;

    if (len != CFCOST_RECORD_STREAM_LEN) {
        return c->nstreams;
    }

    memcpy(k.key, key, len);
    k.key[len] = '\0';

    s = bsearch(&k, c->streams, c->nstreams, sizeof(cfcost_stream_t),
                cfcost_stream_cmp);

    return s != NULL ? (size_t) (s - c->streams) : c->nstreams;
}


/* Adds the streams of the writers in r (a SMEMBERS reply) not known yet. */
void
cfcost_consumer_add_writers(cfcost_consumer_t *c, const redisReply *r)
{
    int                claim_key, has_trim_key;
    char               key[CFCOST_RECORD_STREAM_LEN + 1];
    char               trim_key[CFCOST_RECORD_STREAM_LEN + 1];
    size_t             i, n, added;
    cfcost_stream_t   *s, *st;
    const redisReply  *w;

    n = c->nstreams + r->elements;
    if (n > CFCOST_STREAMS_MAX) {
        n = CFCOST_STREAMS_MAX;
    }

    s = realloc(c->streams, (n ? n : 1) * sizeof(cfcost_stream_t));
    if (s == NULL) {
        cfcost_log_error("consumer: out of memory for %zu streams", n);
        return;
    }

    c->streams = s;
    added = 0;
    claim_key = 0;
    has_trim_key = 0;

    for (i = 0; i < r->elements; i++) {
        w = r->element[i];

        if (w->type != REDIS_REPLY_STRING
            || !cfcost_writer_valid(w->str, (size_t) w->len))
        {
            continue;
        }

        /* built aside: when the array is full there is no slot for it */
        cfcost_stream_key(key, w->str);

        if (cfcost_consumer_find(c, key, CFCOST_RECORD_STREAM_LEN)
            < c->nstreams)
        {
            continue;
        }

        if (c->nstreams + added == n) {
            if (!c->full) {
                cfcost_log_error("consumer: more than %d writers; the "
                                 "streams of the others are not read",
                                 CFCOST_STREAMS_MAX);
                c->full = 1;
            }
            break;
        }

        st = &c->streams[c->nstreams + added];
        memcpy(st->key, key, sizeof(key));
        st->grouped = 0;
        st->need_pending = 1;
        strcpy(st->pending_from, "0");
        added++;

        cfcost_log_info("consumer: new writer stream %s", st->key);
    }

    if (added == 0) {
        return;
    }

    /* the passes under way keep their stream across the sort */
    if (c->claiming && c->claim_i < c->nstreams) {
        memcpy(key, c->streams[c->claim_i].key, sizeof(key));
        claim_key = 1;
    }

    if (c->trimming && c->trim_i < c->nstreams) {
        memcpy(trim_key, c->streams[c->trim_i].key, sizeof(trim_key));
        has_trim_key = 1;
    }

    c->nstreams += added;

    qsort(c->streams, c->nstreams, sizeof(cfcost_stream_t),
          cfcost_stream_cmp);

    if (claim_key) {
        c->claim_i = cfcost_consumer_find(c, key, CFCOST_RECORD_STREAM_LEN);
    }

    if (has_trim_key) {
        c->trim_i = cfcost_consumer_find(c, trim_key,
                                         CFCOST_RECORD_STREAM_LEN);
    }
}


void
cfcost_consumer_drop_stream(cfcost_consumer_t *c, size_t i)
{
    cfcost_log_info("consumer: %s retired (its writer is gone), no longer "
                    "read", c->streams[i].key);

    memmove(&c->streams[i], &c->streams[i + 1],
            (c->nstreams - i - 1) * sizeof(cfcost_stream_t));
    c->nstreams--;
    c->full = 0;

    if (c->claiming) {
        if (c->claim_i > i) {
            c->claim_i--;

        } else if (c->claim_i == i) {
            strcpy(c->claim_from, "0-0");   /* the next stream from 0-0 */
        }

        cfcost_consumer_claim_check(c);
    }

    if (c->trimming) {
        if (c->trim_i > i) {
            c->trim_i--;
        }

        cfcost_consumer_trim_check(c);
    }
}


/* The first stream without its group, or nstreams. */
size_t
cfcost_consumer_ungrouped(cfcost_consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->nstreams && c->streams[i].grouped; i++) {
        /* void */
    }

    return i;
}


/* The first stream still reading its own pending entries, or nstreams. */
size_t
cfcost_consumer_pending_stream(cfcost_consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->nstreams && !c->streams[i].need_pending; i++) {
        /* void */
    }

    return i;
}
