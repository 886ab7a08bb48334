/*
 * The consumer's state and the functions its files give each other, for
 * them alone: the rest of the aggregator sees cfcost_agg_consumer.h.
 * The files (cfcost_agg.h lists them in call order) call downward only:
 * the state machine (cfcost_agg_consumer.c) sends each step's command
 * with its reply handler; the files below speak the commands and read
 * the replies, and never go on to a next step themselves.
 */

#ifndef CFCOST_AGG_CONSUMER_INT_H
#define CFCOST_AGG_CONSUMER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_consumer.h"
#include "cfcost_agg_record.h"


#define CFCOST_STREAMS_MAX       4096       /* writers read; more: ignored */

#define CFCOST_WRITER_OF(key)    ((key) + sizeof(CFCOST_RECORD_STREAM_PREFIX) \
                                  - 1)


typedef struct {
    char                key[CFCOST_RECORD_STREAM_LEN + 1];
    int                 grouped;        /* the group exists, we believe */
    int                 need_pending;   /* our own pending: read them */
    char                pending_from[CFCOST_STREAM_ID_MAX + 1];
} cfcost_stream_t;


/* one apply script, formatted, waiting for its turn */
typedef struct {
    char               *cmd;
    size_t              len;
    size_t              stream;         /* index in streams */
    unsigned            n;              /* entries */
    unsigned            records;        /* their records */
    unsigned            invalid;        /* records not read (entries
                                           without fields...) */
    char                one_id[CFCOST_STREAM_ID_MAX + 1];  /* n == 1 */
    int                 sum;            /* the summed script */
} cfcost_apply_t;


struct cfcost_consumer_s {
    cfcost_agg_t       *agg;
    cfcost_redis_t     *rd;

    int                 busy;           /* a command of ours in flight */
    int                 blocked;        /* ... and it is a BLOCK read */
    int                 ready;          /* scripts loaded */
    int                 stopping;
    int                 stopped;

    long long           client_id;
    char                apply_sha[41];
    char                sum_sha[41];
    char                group_sha[41];
    char                trim_sha[41];
    char                logb_trim_sha[41];
    char                logb_move_sha[41];

    cfcost_stream_t    *streams;        /* sorted by key */
    size_t              nstreams;
    int                 full;           /* CFCOST_STREAMS_MAX reached */

    uint64_t            next_discover;  /* monotonic ms; 0: now */
    uint64_t            linger_until;   /* no new read before (--linger) */
    uint64_t            rate_at;        /* this rate window's start, ms */
    uint64_t            rate_n;         /* entries read in it */
    uint64_t            rate_prev;      /* ... and in the window before */

    int                 single;         /* isolating a failing entry */
    int                 exact;          /* the summed script declined: our
                                           pending by cfcost_lua_apply */
    unsigned            poison_run;     /* entries skipped in a row */

    int                 claiming;
    size_t              claim_i;
    char                claim_from[CFCOST_STREAM_ID_MAX + 1];
    uint64_t            next_claim;

    int                 trimming;
    size_t              trim_i;
    uint64_t            next_trim;
    int                 trim_index;     /* the log index's turn, after a
                                           trim pass */

    char                move_cursor[32];  /* moving the old log index:
                                           cfcost_lua_logb_move's cursor;
                                           "": done */
    uint64_t            moved;
    int                 move_turn;      /* a chunk was the last step */
    int                 move_first;     /* the first chunk: in the set-up */

    cfcost_apply_t     *queue;          /* the scripts of one read */
    size_t              qlen;
    size_t              qnext;

    struct event       *pause_ev;

    void              (*done)(void *data);
    void               *done_data;
};


/* ---- cfcost_agg_consumer_read.c ----------------------------------------- */

/*
 * The reads send their command with the reply to handler and return 0,
 * or -1 when it was not sent (the connection is down, or out of memory).
 */

/* Our own pending entries of stream si, from its pending_from. */
int cfcost_consumer_read_pending(cfcost_consumer_t *c, size_t si,
    cfcost_redis_reply_pt handler);

/* The entries of a reply to it (advancing pending_from), or NULL when
 * there are none: the stream's own pending entries are done. */
const redisReply *cfcost_consumer_pending_read(cfcost_consumer_t *c,
    size_t si, const redisReply *r);

/* New entries of every stream: a BLOCK read (c->blocked). */
int cfcost_consumer_read_new(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler);

/* XAUTOCLAIM on the claim pass's stream (starting a pass when none runs). */
int cfcost_consumer_claim(cfcost_consumer_t *c, cfcost_redis_reply_pt handler);

/* Reads a reply to it: 0 and the entries reclaimed (NULL: none), or -1
 * when it is not one (logged, the pass ends). */
int cfcost_consumer_claimed(cfcost_consumer_t *c, const redisReply *r,
    const redisReply **entries);

/* When the stream is done, the claim pass moves on to the next, or ends. */
void cfcost_consumer_claim_next(cfcost_consumer_t *c);

/* Ends the claim pass when claim_i is past the last stream. */
void cfcost_consumer_claim_check(cfcost_consumer_t *c);


/* ---- cfcost_agg_consumer_trim.c ----------------------------------------- */

/*
 * Sends the trim script of the pass's current stream (starting a pass
 * when none runs); its reply goes to handler.  Returns 0 when sent, -1
 * when the connection is down.
 */
int cfcost_consumer_trim(cfcost_consumer_t *c, cfcost_redis_reply_pt handler);

/* Logs what the trim script (reply r) did to the pass's current stream;
 * 1 when it is retired, 2 when it is not there, else 0. */
int cfcost_consumer_trimmed(cfcost_consumer_t *c, const redisReply *r);

/* Sends XINFO CONSUMERS for the pass's current stream, reply to handler. */
int cfcost_consumer_trim_consumers(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler);

/* Forgets the idle consumers of r (an XINFO CONSUMERS reply) that hold
 * nothing, on the pass's current stream: fire and forget. */
void cfcost_consumer_reap(cfcost_consumer_t *c, const redisReply *r);

/* The trim pass moves on to the next stream, or ends. */
void cfcost_consumer_trim_next(cfcost_consumer_t *c);

/* Ends the trim pass when trim_i is past the last stream; the log
 * index's turn comes then. */
void cfcost_consumer_trim_check(cfcost_consumer_t *c);

/* The log index's retention (cfcost_lua_logb_trim), and its reply. */
int cfcost_consumer_trim_index(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler);
void cfcost_consumer_trimmed_index(cfcost_consumer_t *c, const redisReply *r);

/* A chunk of the old log index into buckets (cfcost_lua_logb_move), and
 * its reply: move_cursor is then the next chunk's, "" when done. */
int cfcost_consumer_move_index(cfcost_consumer_t *c,
    cfcost_redis_reply_pt handler);
void cfcost_consumer_moved_index(cfcost_consumer_t *c, const redisReply *r);


/* ---- cfcost_agg_consumer_fail.c ----------------------------------------- */

/* Ends a stop: done() runs from a fresh event, never from a callback. */
void cfcost_consumer_finish(cfcost_consumer_t *c);

/* Waits ms before the next step (the pause timer resumes), or finishes
 * the stop. */
void cfcost_consumer_wait(cfcost_consumer_t *c, unsigned ms);

/* Waits a moment before the next step (after an error reply). */
void cfcost_consumer_pause(cfcost_consumer_t *c);

/*
 * Common handling of a reply that is not what the step wanted.  NULL: the
 * connection is gone, the step resumes from on_up.  An error: logged, a
 * pause, then the next step.  Returns 1 when the caller should stop.
 */
int cfcost_consumer_failed(cfcost_consumer_t *c, redisReply *r,
    const char *what);

/* 1 when an apply script's error can come from the entries themselves. */
int cfcost_consumer_record_error(const char *err);

/* After a step's command was sent (rc 0) or not (the connection is down:
 * on_up resumes). */
void cfcost_consumer_sent(cfcost_consumer_t *c, int rc);

/* Reads our own pending entries again, on every stream. */
void cfcost_consumer_repend(cfcost_consumer_t *c);

/* Everything again on a new connection (groups may be gone, too). */
void cfcost_consumer_reset(cfcost_consumer_t *c);


/* ---- cfcost_agg_consumer_batch.c ---------------------------------------- */

/*
 * One record of a batch, read once for either apply script: an entry's
 * record k (a batch entry has several, each its own cfcost_entry_t, in
 * order; the entry's id is with each).
 */
typedef struct {
    const char         *id;
    size_t              idlen;
    unsigned            k;              /* record k of the entry */
    int                 counted;        /* 0: no fields: acknowledged only */
    cfcost_record_t     rec;            /* in the reply */
    int64_t             day;
    uint64_t            v[5];           /* input, output, cached, cost:
                                           whole USD, picodollars below */
    size_t              dlen;
    size_t              mlen;
    char                dstr[CFCOST_DATE_LEN + 1];
    char                member[CFCOST_MEMBER_MAX + 1];
} cfcost_entry_t;

/*
 * Formats one apply script for the entries (an array of [id, fields]) of
 * stream si and queues it.  Returns 0, 1 when there is nothing to apply,
 * or -1 when out of memory.
 */
int cfcost_consumer_batch(cfcost_consumer_t *c, size_t si,
    const redisReply *entries);

/* Queues the apply scripts of a XREADGROUP reply: [[stream, entries]..].
 * Returns 0, or -1 when out of memory. */
int cfcost_consumer_queue_read(cfcost_consumer_t *c, const redisReply *r);

/*
 * Queues (alone) the apply script that only acknowledges entry id of
 * stream si.  Returns 0, or -1.
 */
int cfcost_consumer_skip(cfcost_consumer_t *c, size_t si, const char *id);

void cfcost_consumer_queue_free(cfcost_consumer_t *c);


/* ---- cfcost_agg_consumer_sum.c ------------------------------------------ */

/*
 * Formats the summed apply script (cfcost_lua_sum) for the n records of
 * stream si, entry ids in ascending order, into *cmd (*len bytes; free with
 * redisFreeCommand).  Returns 0, or -1 when out of memory.
 */
int cfcost_consumer_sum(cfcost_consumer_t *c, size_t si,
    const cfcost_entry_t *ents, size_t n, char **cmd, size_t *len);


/* ---- cfcost_agg_consumer_streams.c -------------------------------------- */

/* The index of the stream named key[0..len), or nstreams. */
size_t cfcost_consumer_find(cfcost_consumer_t *c, const char *key,
    size_t len);

/* Adds the streams of the writers in r (a SMEMBERS reply) not known yet. */
void cfcost_consumer_add_writers(cfcost_consumer_t *c, const redisReply *r);

/* Forgets stream i, retired (no apply script may be queued): the claim
 * and trim passes keep their place. */
void cfcost_consumer_drop_stream(cfcost_consumer_t *c, size_t i);

/* The first stream without its group, or nstreams. */
size_t cfcost_consumer_ungrouped(cfcost_consumer_t *c);

/* The first stream still reading its own pending entries, or nstreams. */
size_t cfcost_consumer_pending_stream(cfcost_consumer_t *c);

#endif /* CFCOST_AGG_CONSUMER_INT_H */
