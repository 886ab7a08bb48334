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
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_record.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_lua.h"
#include "cfcost_agg_consumer.h"


#define CFCOST_PAUSE_MS          1000
#define CFCOST_DISCOVER_MS       1000
#define CFCOST_STREAMS_MAX       4096       /* writers read; more: ignored */
#define CFCOST_POISON_RUN        16
#define CFCOST_TRIM_SKEW_MS      300000     /* gateway clock vs Redis's */
#define CFCOST_TRIM_SCAN_CAP     4096
#define CFCOST_TRIM_INDEX_CAP    20000
#define CFCOST_REAP_IDLE_MS      3600000        /* forget dead consumers */

#define CFCOST_FROM_PENDING      0
#define CFCOST_FROM_CLAIM        1
#define CFCOST_FROM_NEW          2

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
    unsigned            n;
    char                one_id[CFCOST_STREAM_ID_MAX + 1];  /* n == 1 */
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
    char                group_sha[41];
    char                trim_sha[41];

    cfcost_stream_t    *streams;        /* sorted by key */
    size_t              nstreams;
    int                 full;           /* CFCOST_STREAMS_MAX reached */

    uint64_t            next_discover;  /* monotonic ms; 0: now */

    int                 single;         /* isolating a failing entry */
    unsigned            poison_run;     /* entries skipped in a row */

    int                 claiming;
    size_t              claim_i;
    char                claim_from[CFCOST_STREAM_ID_MAX + 1];
    uint64_t            next_claim;

    int                 trimming;
    size_t              trim_i;
    uint64_t            next_trim;

    cfcost_apply_t     *queue;          /* the scripts of one read */
    size_t              qlen;
    size_t              qnext;

    struct event       *pause_ev;

    void              (*done)(void *data);
    void               *done_data;
};


/* what one entry needs beyond the strings already in the reply */
typedef struct {
    char                rid[8 + CFCOST_STREAM_ID_MAX];
    char                day[CFCOST_DATE_LEN + 1];
    char                dnum[24];
    char                num[5][24];
    char                member[CFCOST_MEMBER_MAX + 1];
} cfcost_entry_scratch_t;


static void cfcost_consumer_next(cfcost_consumer_t *c);
static void cfcost_consumer_init(cfcost_consumer_t *c);


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
static void
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


static void
cfcost_consumer_pause_handler(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;

    cfcost_consumer_next(arg);
}


/* Waits ms before the next step. */
static void
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
static void
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
static int
cfcost_consumer_record_error(const char *err)
{
    static const char  *codes[] = {
        "WRONGTYPE", "ERR increment or decrement would overflow",
        "ERR hash value is not an integer",
        "ERR value is not an integer or out of range", NULL
    };

    return cfcost_consumer_err_is(err, codes);
}


static void
cfcost_consumer_queue_free(cfcost_consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->qlen; i++) {
        redisFreeCommand(c->queue[i].cmd);
    }

    free(c->queue);
    c->queue = NULL;
    c->qlen = 0;
    c->qnext = 0;
}


/* Reads our own pending entries again, on every stream. */
static void
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
static void
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
    c->single = 0;
    c->next_discover = 0;
    evtimer_del(c->pause_ev);
}


/*
 * Common handling of a reply that is not what the step wanted.  NULL: the
 * connection is gone, the step resumes from on_up.  An error: logged, a
 * pause, then the next step.  Returns 1 when the caller should stop.
 */
static int
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
static void
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
          : (c->group_sha[0] == '\0') ? c->group_sha : c->trim_sha;
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

    } else if (c->group_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_group);

    } else if (c->trim_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_trim);

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
    c->group_sha[0] = '\0';
    c->trim_sha[0] = '\0';

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


static int
cfcost_stream_cmp(const void *a, const void *b)
{
    return strcmp(((const cfcost_stream_t *) a)->key,
                  ((const cfcost_stream_t *) b)->key);
}


/* The index of the stream named key[0..len), or nstreams. */
static size_t
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
static void
cfcost_consumer_add_writers(cfcost_consumer_t *c, const redisReply *r)
{
    char               key[CFCOST_RECORD_STREAM_LEN + 1];
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

    c->nstreams += added;

    if (added) {
        qsort(c->streams, c->nstreams, sizeof(cfcost_stream_t),
              cfcost_stream_cmp);
    }
}


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
    for (i = 0; i < c->nstreams && c->streams[i].grouped; i++) {
        /* void */
    }

    if (i < c->nstreams) {
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


/*
 * Fills the script arguments of one entry (13, from argv) and its scratch.
 * An entry whose fields are gone (trimmed while pending) gets an empty
 * request id: acknowledged only.
 */
static void
cfcost_consumer_entry(cfcost_consumer_t *c, const char *writer,
    const redisReply *e, cfcost_entry_scratch_t *s, const char **argv,
    size_t *lens)
{
    int              bad, k;
    size_t           i, idlen;
    int64_t          ts, day;
    uint64_t         v[5];
    const char      *id;
    cfcost_record_t  rec;

    id = e->element[0]->str;
    idlen = (size_t) e->element[0]->len;

    for (i = 0; i < CFCOST_LUA_APPLY_ARGS; i++) {
        argv[i] = "";
        lens[i] = 0;
    }

    argv[0] = id;
    lens[0] = idlen;

    if (e->elements < 2 || cfcost_record_parse(e->element[1], &rec) != 0) {
        cfcost_log_warn("consumer: entry %.*s has no fields (trimmed?): "
                        "acknowledged", (int) idlen, id);
        c->agg->invalid++;
        return;
    }

    ts = cfcost_record_ts(&rec, id, idlen);
    day = cfcost_day_of_ms(ts);

    if (rec.f[CFCOST_REC_REQUEST_ID].len > 0) {
        argv[1] = rec.f[CFCOST_REC_REQUEST_ID].p;
        lens[1] = rec.f[CFCOST_REC_REQUEST_ID].len;

    } else {
        /* no request id: the entry itself is the unit of "once" */
        lens[1] = (size_t) snprintf(s->rid, sizeof(s->rid), "entry:%.*s",
                                    (int) idlen, id);
        argv[1] = s->rid;
    }

    argv[2] = s->day;
    lens[2] = cfcost_date_str(s->day, day);
    argv[3] = s->dnum;
    lens[3] = (size_t) snprintf(s->dnum, sizeof(s->dnum), "%lld",
                                (long long) day);

    argv[4] = rec.f[CFCOST_REC_USER].p;
    lens[4] = rec.f[CFCOST_REC_USER].len;
    argv[5] = rec.f[CFCOST_REC_KEY_ID].p;
    lens[5] = rec.f[CFCOST_REC_KEY_ID].len;
    argv[6] = rec.f[CFCOST_REC_MODEL].p;
    lens[6] = rec.f[CFCOST_REC_MODEL].len;

    /*
     * Counted as the record says: no gateway writes a count over 2^24
     * (cfcost_usage.h), so nothing is clamped here and the rollups are
     * the records' sums.  A number that is not one (malformed, or a count
     * no gateway writes, which could overflow the sums) counts as 0,
     * loudly.  A cost is split for the script.
     */
    bad = 0;
    v[0] = cfcost_record_u64(&rec, CFCOST_REC_INPUT, &bad);
    v[1] = cfcost_record_u64(&rec, CFCOST_REC_OUTPUT, &bad);
    v[2] = cfcost_record_u64(&rec, CFCOST_REC_CACHED, &bad);
    v[3] = cfcost_record_u64(&rec, CFCOST_REC_COST, &bad);
    v[4] = v[3] % CFCOST_PUSD_PER_USD;
    v[3] /= CFCOST_PUSD_PER_USD;

    for (k = 0; k < 3; k++) {
        if (v[k] > CFCOST_TOKENS_MAX) {
            v[k] = 0;
            bad = 1;
        }
    }

    if (bad) {
        cfcost_log_warn("consumer: entry %.*s has a malformed or "
                        "out-of-range number; counted as 0",
                        (int) idlen, id);
    }

    for (k = 0; k < 5; k++) {
        argv[7 + k] = s->num[k];
        lens[7 + k] = cfcost_u64_str(s->num[k], v[k]);
    }

    argv[12] = s->member;
    lens[12] = cfcost_member_make(s->member, ts, writer, CFCOST_WRITER_ID_LEN,
                                  id, idlen);
}


/*
 * Formats one apply script for the entries (an array of [id, fields]) of
 * stream si and queues it.  Returns 0, 1 when there is nothing to apply,
 * or -1 when out of memory.
 */
static int
cfcost_consumer_batch(cfcost_consumer_t *c, size_t si,
    const redisReply *entries)
{
    int                      rc, argc;
    char                    *cmd, head[2][24];
    size_t                   i, k, n, a, *lens;
    const char             **argv, *writer;
    const redisReply        *e;
    cfcost_apply_t          *q;
    cfcost_entry_scratch_t  *scratch;

    n = 0;
    for (i = 0; i < entries->elements; i++) {
        e = entries->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1
            && e->element[0]->type == REDIS_REPLY_STRING)
        {
            n++;
        }
    }

    if (n == 0) {
        return 1;
    }

    rc = -1;
    cmd = NULL;
    argc = 3 + CFCOST_LUA_APPLY_HEAD + (int) n * CFCOST_LUA_APPLY_ARGS;
    writer = CFCOST_WRITER_OF(c->streams[si].key);

    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));
    scratch = malloc(n * sizeof(cfcost_entry_scratch_t));
    q = realloc(c->queue, (c->qlen + 1) * sizeof(cfcost_apply_t));

    if (argv == NULL || lens == NULL || scratch == NULL || q == NULL) {
        cfcost_log_error("consumer: out of memory for a batch of %zu", n);
        goto failed;
    }

    c->queue = q;
    q = &c->queue[c->qlen];
    memset(q, 0, sizeof(cfcost_apply_t));

    snprintf(head[0], sizeof(head[0]), "%u", c->agg->conf.dedup_ttl_s);
    snprintf(head[1], sizeof(head[1]), "%zu", n);

    argv[0] = "EVALSHA";
    argv[1] = c->apply_sha;
    argv[2] = "0";
    argv[3] = c->streams[si].key;
    argv[4] = c->agg->conf.group;
    argv[5] = head[0];
    argv[6] = head[1];

    for (a = 0; a < 7; a++) {
        lens[a] = strlen(argv[a]);
    }

    for (i = 0, k = 0; i < entries->elements; i++) {
        e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1
            || e->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        cfcost_consumer_entry(c, writer, e, &scratch[k++], argv + a,
                              lens + a);

        if (n == 1 && lens[a] < sizeof(q->one_id)) {
            memcpy(q->one_id, argv[a], lens[a]);
            q->one_id[lens[a]] = '\0';
        }

        a += CFCOST_LUA_APPLY_ARGS;
    }

    rc = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (rc < 0 || cmd == NULL) {
        rc = -1;
        goto failed;
    }

    q->cmd = cmd;
    q->len = (size_t) rc;
    q->stream = si;
    q->n = (unsigned) n;
    c->qlen++;
    rc = 0;

failed:

    free(scratch);
    free(lens);
    free(argv);

    return rc;
}


static void cfcost_consumer_on_apply(cfcost_redis_t *rd, redisReply *r,
    void *data);


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
 * Queues the apply script that only acknowledges entry id of stream si
 * (no request id): its position and hole stay exact.  Returns 0, or -1.
 */
static int
cfcost_consumer_skip(cfcost_consumer_t *c, size_t si, const char *id)
{
    int              i, rc;
    char            *cmd, ttl[24];
    size_t           lens[3 + CFCOST_LUA_APPLY_HEAD + CFCOST_LUA_APPLY_ARGS];
    const char      *argv[3 + CFCOST_LUA_APPLY_HEAD + CFCOST_LUA_APPLY_ARGS];
    cfcost_apply_t  *q;

    snprintf(ttl, sizeof(ttl), "%u", c->agg->conf.dedup_ttl_s);

    argv[0] = "EVALSHA";
    argv[1] = c->apply_sha;
    argv[2] = "0";
    argv[3] = c->streams[si].key;
    argv[4] = c->agg->conf.group;
    argv[5] = ttl;
    argv[6] = "1";
    argv[7] = id;

    for (i = 8; i < 3 + CFCOST_LUA_APPLY_HEAD + CFCOST_LUA_APPLY_ARGS; i++) {
        argv[i] = "";
    }

    for (i = 0; i < 3 + CFCOST_LUA_APPLY_HEAD + CFCOST_LUA_APPLY_ARGS; i++) {
        lens[i] = strlen(argv[i]);
    }

    q = malloc(sizeof(cfcost_apply_t));
    cmd = NULL;
    rc = redisFormatCommandArgv(&cmd, i, argv, lens);

    if (q == NULL || rc < 0 || cmd == NULL) {
        free(q);
        redisFreeCommand(cmd);
        return -1;
    }

    memset(q, 0, sizeof(cfcost_apply_t));
    q->cmd = cmd;
    q->len = (size_t) rc;
    q->stream = si;
    q->n = 1;

    c->queue = q;
    c->qlen = 1;
    c->qnext = 0;

    return 0;
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
    size_t           si;
    char             id[CFCOST_STREAM_ID_MAX + 1];
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
                     "acknowledged without counting it", id,
                     c->streams[si].key, r->str);

    if (cfcost_consumer_skip(c, si, id) != 0) {
        cfcost_log_error("consumer: out of memory");
        cfcost_consumer_repend(c);
        cfcost_consumer_pause(c);
        return;
    }

    c->poison_run++;
    c->agg->invalid++;
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
        && r->element[1]->type == REDIS_REPLY_INTEGER
        && r->element[2]->type == REDIS_REPLY_INTEGER)
    {
        c->agg->applied += (uint64_t) r->element[0]->integer;
        c->agg->duplicates += (uint64_t) r->element[1]->integer;
        c->agg->stale += (uint64_t) r->element[2]->integer;
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


/* Queues the apply scripts of a XREADGROUP reply: [[stream, entries]..]. */
static int
cfcost_consumer_queue_read(cfcost_consumer_t *c, const redisReply *r)
{
    size_t             i, si;
    const redisReply  *s;

    for (i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        s = r->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements < 2
            || s->element[0]->type != REDIS_REPLY_STRING
            || s->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        si = cfcost_consumer_find(c, s->element[0]->str,
                                  (size_t) s->element[0]->len);

        if (si < c->nstreams
            && cfcost_consumer_batch(c, si, s->element[1]) < 0)
        {
            return -1;
        }
    }

    return 0;
}


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


static void
cfcost_consumer_on_new(cfcost_redis_t *rd, redisReply *r, void *data)
{
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

    cfcost_consumer_apply_queued(c);
}


/* The first stream still reading its own pending entries, or nstreams. */
static size_t
cfcost_consumer_pending_stream(cfcost_consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->nstreams && !c->streams[i].need_pending; i++) {
        /* void */
    }

    return i;
}


static void
cfcost_consumer_on_pending(cfcost_redis_t *rd, redisReply *r, void *data)
{
    size_t              si;
    cfcost_stream_t    *st;
    const redisReply   *e, *last;
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
        cfcost_consumer_next(c);
        return;
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

    if (cfcost_consumer_batch(c, si, e) < 0) {
        cfcost_consumer_queue_failed(c);
        return;
    }

    cfcost_consumer_apply_queued(c);
}


static void
cfcost_consumer_on_claim(cfcost_redis_t *rd, redisReply *r, void *data)
{
    unsigned            every;
    const redisReply   *next;
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XAUTOCLAIM")) {
        return;
    }

    c->busy = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING
        || r->element[0]->len >= sizeof(c->claim_from)
        || c->claim_i >= c->nstreams)
    {
        cfcost_log_error("consumer: XAUTOCLAIM: unexpected reply");
        c->claiming = 0;
        cfcost_consumer_pause(c);
        return;
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

        if (cfcost_consumer_batch(c, c->claim_i, r->element[1]) < 0) {
            cfcost_consumer_queue_failed(c);
            return;
        }
    }

    /* this stream done: the next one, or the pass is over */
    if (strcmp(c->claim_from, "0-0") == 0) {
        if (++c->claim_i >= c->nstreams) {
            c->claiming = 0;
            every = c->agg->conf.claim_idle_ms / 2;
            c->next_claim = cfcost_mono_ms() + (every < 1000 ? 1000 : every);
        }
    }

    cfcost_consumer_apply_queued(c);
}


static int
cfcost_consumer_claim(cfcost_consumer_t *c)
{
    char                      count[24];
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    if (!c->claiming) {
        c->claiming = 1;
        c->claim_i = 0;
        strcpy(c->claim_from, "0-0");
    }

    snprintf(count, sizeof(count), "%u", conf->batch);

    return cfcost_redis_cmd(c->rd, cfcost_consumer_on_claim, c,
                            "XAUTOCLAIM %s %s %s %u %s COUNT %s",
                            c->streams[c->claim_i].key, conf->group,
                            conf->consumer, conf->claim_idle_ms,
                            c->claim_from, count);
}


/*
 * The BLOCK read of every stream: its reply may take block_ms more than
 * any other command, and the reply deadline says so.
 */
static int
cfcost_consumer_read_new(cfcost_consumer_t *c)
{
    int                       rc, argc;
    char                      count[24], block[24];
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
    snprintf(block, sizeof(block), "%u", conf->block_ms);

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
    rc = cfcost_redis_argv(c->rd, cfcost_consumer_on_new, c, conf->block_ms,
                           argc, argv, lens);

    free(argv);
    free(lens);

    return rc;
}


/* ---- retention ---------------------------------------------------------- */


static void
cfcost_consumer_on_reaped(cfcost_redis_t *rd, redisReply *r, void *data)
{
    (void) rd;
    (void) r;
    (void) data;
}


/* Forgets consumers that hold nothing and were idle for an hour. */
static void
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
static void
cfcost_consumer_trim_next(cfcost_consumer_t *c)
{
    if (++c->trim_i >= c->nstreams) {
        c->trimming = 0;
        c->next_trim = cfcost_mono_ms()
                       + (uint64_t) c->agg->conf.trim_interval_s * 1000;
    }
}


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
    char                iso[CFCOST_ISO_LEN + 1];
    const char         *key;
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

    key = c->streams[c->trim_i].key;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
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
    }

    rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_consumers, c,
                          "XINFO CONSUMERS %s %s", key, c->agg->conf.group);
    cfcost_consumer_sent(c, rc);
}


/* One stream's retention: the trim script, then XINFO CONSUMERS. */
static int
cfcost_consumer_trim(cfcost_consumer_t *c)
{
    char                      args[6][24];
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
    snprintf(args[3], sizeof(args[3]), "%d", CFCOST_TRIM_SKEW_MS);
    snprintf(args[4], sizeof(args[4]), "%d", CFCOST_TRIM_SCAN_CAP);
    snprintf(args[5], sizeof(args[5]), "%d", CFCOST_TRIM_INDEX_CAP);

    return cfcost_redis_cmd(c->rd, cfcost_consumer_on_trim, c,
                            "EVALSHA %s 0 %s %s %s %s %s %s %s %b",
                            c->trim_sha, key, args[0], args[1], args[2],
                            args[3], args[4], args[5], CFCOST_WRITER_OF(key),
                            (size_t) CFCOST_WRITER_ID_LEN);
}


/* ---- the loop ----------------------------------------------------------- */


/* The first stream without its group, or nstreams. */
static size_t
cfcost_consumer_ungrouped(cfcost_consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->nstreams && c->streams[i].grouped; i++) {
        /* void */
    }

    return i;
}


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
        return cfcost_redis_cmd(c->rd, cfcost_consumer_on_pending, c,
                                "XREADGROUP GROUP %s %s COUNT %u STREAMS "
                                "%s %s", conf->group, conf->consumer,
                                c->single ? 1 : conf->batch,
                                c->streams[i].key,
                                c->streams[i].pending_from);
    }

    if (c->single) {
        cfcost_log_info("consumer: pending entries done, back to batches");
        c->single = 0;
    }

    if (c->nstreams == 0) {
        c->busy = 0;
        cfcost_consumer_wait(c, (unsigned) (c->next_discover - now));
        return 1;
    }

    if (c->claiming || now >= c->next_claim) {
        return cfcost_consumer_claim(c);
    }

    if (c->trimming || (now >= c->next_trim
                        && (conf->retention_days || conf->retention_max)))
    {
        return cfcost_consumer_trim(c);
    }

    return cfcost_consumer_read_new(c);
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
