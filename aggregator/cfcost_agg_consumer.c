/*
 * Stream consumer: records -> rollups, exactly once.  See
 * cfcost_agg_consumer.h.
 *
 * One command at a time on the consumer's connection, each step choosing
 * the next:
 *
 *   (connected)  CLIENT ID, SCRIPT LOAD x2, XGROUP CREATE ... MKSTREAM
 *   own pending  XREADGROUP ... STREAMS <stream> <id>   until empty
 *   reclaim      XAUTOCLAIM ... <claim-idle>            every claim-idle/2
 *   retention    EVALSHA trim, XINFO CONSUMERS          every trim interval
 *   new          XREADGROUP ... BLOCK ... STREAMS <stream> >
 *   each batch   EVALSHA apply: SET NX marker per request id, HINCRBY the
 *                rollups of the new ones, index them, XACK all
 *
 * Why it is exactly once: the apply script is atomic, so an entry is
 * either counted and acknowledged or neither.  One not acknowledged stays
 * pending and comes back (own pending on reconnect, XAUTOCLAIM after a
 * crash); the marker of its request id makes a second application a
 * no-op, and the same marker drops a record the gateway sent twice.
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
#define CFCOST_TRIM_SKEW_MS      300000     /* gateway clock vs Redis's */
#define CFCOST_TRIM_SCAN_CAP     4096
#define CFCOST_TRIM_INDEX_CAP    20000
#define CFCOST_REAP_IDLE_MS      3600000        /* forget dead consumers */

#define CFCOST_FROM_PENDING      0
#define CFCOST_FROM_CLAIM        1
#define CFCOST_FROM_NEW          2


struct cfcost_consumer_s {
    cfcost_agg_t       *agg;
    cfcost_redis_t     *rd;

    int                 busy;           /* a command of ours in flight */
    int                 blocked;        /* ... and it is a BLOCK read */
    int                 ready;          /* scripts loaded, group exists */
    int                 stopping;
    int                 stopped;

    long long           client_id;
    char                apply_sha[41];
    char                trim_sha[41];

    int                 need_pending;
    int                 single;         /* isolating a failing entry */
    char                pending_from[CFCOST_STREAM_ID_MAX + 1];

    int                 claiming;
    char                claim_from[CFCOST_STREAM_ID_MAX + 1];
    uint64_t            next_claim;     /* monotonic ms */
    uint64_t            next_trim;

    char                one_id[CFCOST_STREAM_ID_MAX + 1];  /* batch of 1 */

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


/* Waits a moment before the next step (after an error reply). */
static void
cfcost_consumer_pause(cfcost_consumer_t *c)
{
    struct timeval  tv = { CFCOST_PAUSE_MS / 1000,
                           (CFCOST_PAUSE_MS % 1000) * 1000 };

    if (c->stopping) {
        cfcost_consumer_finish(c);
        return;
    }

    evtimer_add(c->pause_ev, &tv);
}


static int
cfcost_consumer_transient(const char *err)
{
    static const char  *codes[] = {
        "OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN",
        "NOREPLICAS", "MISCONF", "CLUSTERDOWN", NULL
    };

    size_t  i, n;

    for (i = 0; codes[i] != NULL; i++) {
        n = strlen(codes[i]);
        if (strncmp(err, codes[i], n) == 0 && (err[n] == ' '
                                               || err[n] == '\0'))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Common handling of a reply that is not what the step wanted.  NULL: the
 * connection is gone, the step resumes from on_up.  An error: logged, a
 * pause, then the next step.  Returns 1 when the caller should stop.
 */
static int
cfcost_consumer_failed(cfcost_consumer_t *c, redisReply *r, const char *what)
{
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

    if (strncmp(r->str, "NOSCRIPT", 8) == 0
        || strncmp(r->str, "NOGROUP", 7) == 0
        || strncmp(r->str, "UNBLOCKED", 9) == 0)
    {
        /* scripts flushed, or stream/group deleted: set everything up
         * again (the group from the stream's start; markers drop what
         * was counted already) */
        cfcost_log_warn("consumer: %s: %s; setting up again", what, r->str);
        c->ready = 0;

    } else if (cfcost_consumer_transient(r->str)) {
        cfcost_log_warn("consumer: %s: %s", what, r->str);

    } else {
        cfcost_log_error("consumer: %s: %s", what, r->str);
    }

    cfcost_consumer_pause(c);
    return 1;
}


/* Sends a step's command; on a dead connection waits for on_up. */
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
cfcost_consumer_on_group(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "BUSYGROUP", 9) == 0)
    {
        /* the group exists already: fine */

    } else if (cfcost_consumer_failed(c, r, "XGROUP")) {
        return;
    }

    c->busy = 0;
    c->ready = 1;
    c->need_pending = 1;
    c->single = 0;
    strcpy(c->pending_from, "0");
    c->claiming = 0;
    c->next_claim = cfcost_mono_ms();
    if (c->next_trim == 0) {
        c->next_trim = cfcost_mono_ms() + 1000;
    }

    cfcost_log_info("consumer: reading %s as %s/%s", CFCOST_RECORD_STREAM,
                    c->agg->conf.group, c->agg->conf.consumer);

    cfcost_consumer_next(c);
}


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

    sha = (c->apply_sha[0] == '\0') ? c->apply_sha : c->trim_sha;
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

    } else if (c->trim_sha[0] == '\0') {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_load, c,
                              "SCRIPT LOAD %s", cfcost_lua_trim);

    } else {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_group, c,
                              "XGROUP CREATE %s %s 0 MKSTREAM",
                              CFCOST_RECORD_STREAM, c->agg->conf.group);
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
    c->ready = 0;
    c->busy = 0;
    c->client_id = 0;
    c->apply_sha[0] = '\0';
    c->trim_sha[0] = '\0';
    evtimer_del(c->pause_ev);

    cfcost_consumer_init(c);
}


void
cfcost_consumer_redis_down(cfcost_redis_t *rd, void *data)
{
    cfcost_agg_t       *agg = data;
    cfcost_consumer_t  *c = agg->consumer;

    (void) rd;

    c->ready = 0;
    c->busy = 0;
    c->blocked = 0;
    c->client_id = 0;
    evtimer_del(c->pause_ev);

    if (c->stopping) {
        cfcost_consumer_finish(c);
    }
}


/* ---- applying a batch --------------------------------------------------- */


static void
cfcost_consumer_on_ack(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XACK")) {
        return;
    }

    c->busy = 0;
    c->agg->invalid++;
    cfcost_consumer_next(c);
}


/*
 * The script failed for a reason that is not Redis's state: some entry
 * makes it fail.  Retry one entry at a time from our pending list; a
 * single entry that still fails is acknowledged uncounted and logged, so
 * one bad record cannot stop the stream.
 */
static void
cfcost_consumer_poison(cfcost_consumer_t *c, redisReply *r, unsigned n)
{
    int  rc;

    if (n > 1) {
        cfcost_log_warn("consumer: batch failed (%s); retrying its entries "
                        "one by one", r->str);
        c->single = 1;
        c->need_pending = 1;
        strcpy(c->pending_from, "0");
        cfcost_consumer_next(c);
        return;
    }

    cfcost_log_error("consumer: entry %s cannot be applied (%s): "
                     "acknowledged without counting it", c->one_id, r->str);

    rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_ack, c, "XACK %s %s %s",
                          CFCOST_RECORD_STREAM, c->agg->conf.group,
                          c->one_id);
    cfcost_consumer_sent(c, rc);
}


static void
cfcost_consumer_on_apply(cfcost_redis_t *rd, redisReply *r, void *data)
{
    unsigned            n;
    cfcost_consumer_t  *c = data;

    (void) rd;

    n = c->one_id[0] ? 1 : 2;

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) != 0
        && !cfcost_consumer_transient(r->str))
    {
        c->busy = 0;
        c->agg->redis_errors++;
        cfcost_consumer_poison(c, r, n);
        return;
    }

    if (cfcost_consumer_failed(c, r, "apply")) {
        /* the entries stay pending with us: read them again */
        c->need_pending = 1;
        strcpy(c->pending_from, "0");
        return;
    }

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[1]->type == REDIS_REPLY_INTEGER)
    {
        c->agg->applied += (uint64_t) r->element[0]->integer;
        c->agg->duplicates += (uint64_t) r->element[1]->integer;
    }

    c->agg->batches++;
    c->busy = 0;

    cfcost_consumer_next(c);
}


/*
 * Fills the script arguments of one entry (12, from argv) and its scratch.
 * An entry whose fields are gone (trimmed while pending) gets an empty
 * request id: acknowledged only.
 */
static void
cfcost_consumer_entry(cfcost_consumer_t *c, const redisReply *e,
    cfcost_entry_scratch_t *s, const char **argv, size_t *lens)
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

    /* the gateway clamps tokens so; a cost is split for the script */
    bad = 0;
    v[0] = cfcost_record_u64(&rec, CFCOST_REC_INPUT, &bad);
    v[1] = cfcost_record_u64(&rec, CFCOST_REC_OUTPUT, &bad);
    v[2] = cfcost_record_u64(&rec, CFCOST_REC_CACHED, &bad);
    v[3] = cfcost_record_u64(&rec, CFCOST_REC_COST, &bad);
    v[4] = v[3] % CFCOST_PUSD_PER_USD;
    v[3] /= CFCOST_PUSD_PER_USD;

    for (k = 0; k < 3; k++) {
        if (v[k] > CFCOST_TOKENS_MAX) {
            v[k] = CFCOST_TOKENS_MAX;
            bad = 1;
        }
    }

    if (bad) {
        cfcost_log_warn("consumer: entry %.*s has a malformed or "
                        "out-of-range number; counted as 0 or clamped",
                        (int) idlen, id);
    }

    for (k = 0; k < 5; k++) {
        argv[7 + k] = s->num[k];
        lens[7 + k] = cfcost_u64_str(s->num[k], v[k]);
    }

    argv[12] = s->member;
    lens[12] = cfcost_member_make(s->member, ts, id, idlen);
}


/*
 * Sends one EVALSHA for the entries (an array of [id, fields]).  Returns 0
 * when sent, -1 when it could not be built or sent.
 */
static int
cfcost_consumer_apply(cfcost_consumer_t *c, const redisReply *entries)
{
    int                      rc, argc;
    char                    *cmd, head[3][24];
    size_t                   i, n, a, *lens;
    const char             **argv;
    const redisReply        *e;
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

    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));
    scratch = malloc(n * sizeof(cfcost_entry_scratch_t));

    if (argv == NULL || lens == NULL || scratch == NULL) {
        cfcost_log_error("consumer: out of memory for a batch of %zu", n);
        goto failed;
    }

    snprintf(head[0], sizeof(head[0]), "%u", c->agg->conf.dedup_ttl_s);
    snprintf(head[1], sizeof(head[1]), "%zu", n);

    argv[0] = "EVALSHA";
    argv[1] = c->apply_sha;
    argv[2] = "0";
    argv[3] = CFCOST_RECORD_STREAM;
    argv[4] = c->agg->conf.group;
    argv[5] = head[0];
    argv[6] = head[1];

    for (a = 0; a < 7; a++) {
        lens[a] = strlen(argv[a]);
    }

    c->one_id[0] = '\0';

    for (i = 0, n = 0; i < entries->elements; i++) {
        e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1
            || e->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        cfcost_consumer_entry(c, e, &scratch[n], argv + a, lens + a);

        if (entries->elements == 1 && lens[a] < sizeof(c->one_id)) {
            memcpy(c->one_id, argv[a], lens[a]);
            c->one_id[lens[a]] = '\0';
        }

        a += CFCOST_LUA_APPLY_ARGS;
        n++;
    }

    rc = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (rc < 0 || cmd == NULL) {
        rc = -1;
        goto failed;
    }

    cfcost_log_debug("consumer: applying %zu entries", n);

    /* hiredis copies the command: it can be freed at once */
    rc = cfcost_redis_formatted(c->rd, cfcost_consumer_on_apply, c, 0, cmd,
                                (size_t) rc);
    cfcost_consumer_sent(c, rc);

failed:

    redisFreeCommand(cmd);
    free(scratch);
    free(lens);
    free(argv);

    return rc;
}


/* ---- reading ------------------------------------------------------------ */


/* The entries of a XREADGROUP reply on our one stream, or NULL. */
static const redisReply *
cfcost_consumer_entries(const redisReply *r)
{
    const redisReply  *s;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        return NULL;
    }

    s = r->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements < 2
        || s->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return NULL;
    }

    return s->element[1];
}


static void
cfcost_consumer_got(cfcost_consumer_t *c, const redisReply *entries,
    int from)
{
    const redisReply  *last;

    if (entries == NULL || entries->elements == 0) {
        if (from == CFCOST_FROM_PENDING) {
            c->need_pending = 0;
            if (c->single) {
                cfcost_log_info("consumer: pending entries done, back to "
                                "batches");
                c->single = 0;
            }
        }
        cfcost_consumer_next(c);
        return;
    }

    if (from == CFCOST_FROM_PENDING) {
        last = entries->element[entries->elements - 1];
        if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1
            && last->element[0]->type == REDIS_REPLY_STRING
            && last->element[0]->len < sizeof(c->pending_from))
        {
            memcpy(c->pending_from, last->element[0]->str,
                   last->element[0]->len);
            c->pending_from[last->element[0]->len] = '\0';
        }
    }

    switch (cfcost_consumer_apply(c, entries)) {
    case 0:
        return;
    case 1:
        cfcost_consumer_next(c);
        return;
    default:
        c->need_pending = 1;
        strcpy(c->pending_from, "0");
        if (!c->busy) {
            cfcost_consumer_pause(c);
        }
    }
}


static void
cfcost_consumer_on_read(cfcost_redis_t *rd, redisReply *r, void *data,
    int from)
{
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "XREADGROUP")) {
        return;
    }

    c->busy = 0;
    c->blocked = 0;

    /* nil: BLOCK timed out, or CLIENT UNBLOCK */
    cfcost_consumer_got(c, r->type == REDIS_REPLY_NIL
                           ? NULL : cfcost_consumer_entries(r), from);
}


static void
cfcost_consumer_on_pending(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_on_read(rd, r, data, CFCOST_FROM_PENDING);
}


static void
cfcost_consumer_on_new(cfcost_redis_t *rd, redisReply *r, void *data)
{
    cfcost_consumer_on_read(rd, r, data, CFCOST_FROM_NEW);
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
        || r->element[0]->len >= sizeof(c->claim_from))
    {
        cfcost_log_error("consumer: XAUTOCLAIM: unexpected reply");
        c->claiming = 0;
        cfcost_consumer_pause(c);
        return;
    }

    next = r->element[0];
    memcpy(c->claim_from, next->str, next->len);
    c->claim_from[next->len] = '\0';

    c->claiming = strcmp(c->claim_from, "0-0") != 0;

    if (!c->claiming) {
        every = c->agg->conf.claim_idle_ms / 2;
        c->next_claim = cfcost_mono_ms() + (every < 1000 ? 1000 : every);
    }

    if (r->element[1]->type == REDIS_REPLY_ARRAY
        && r->element[1]->elements > 0)
    {
        cfcost_log_info("consumer: reclaimed %zu entries pending with "
                        "other consumers", r->element[1]->elements);
    }

    cfcost_consumer_got(c, r->element[1], CFCOST_FROM_CLAIM);
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

        cfcost_log_info("consumer: forgetting idle consumer %s", name);
        cfcost_redis_cmd(c->rd, cfcost_consumer_on_reaped, NULL,
                         "XGROUP DELCONSUMER %s %s %s", CFCOST_RECORD_STREAM,
                         c->agg->conf.group, name);
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

    if (r->type == REDIS_REPLY_ARRAY) {
        cfcost_consumer_reap(c, r);
    }

    cfcost_consumer_next(c);
}


static void
cfcost_consumer_on_trim(cfcost_redis_t *rd, redisReply *r, void *data)
{
    int                 rc;
    char                iso[CFCOST_ISO_LEN + 1];
    cfcost_consumer_t  *c = data;

    (void) rd;

    if (cfcost_consumer_failed(c, r, "retention")) {
        return;
    }

    c->busy = 0;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
        && r->element[0]->type == REDIS_REPLY_INTEGER
        && r->element[1]->type == REDIS_REPLY_INTEGER)
    {
        if (r->element[0]->integer > 0) {
            cfcost_iso_ms(iso, r->element[1]->integer);
            cfcost_log_info("retention: trimmed %lld entries; the stream "
                            "now starts at %s", r->element[0]->integer, iso);
        }

        if (r->element[2]->type == REDIS_REPLY_INTEGER
            && r->element[2]->integer)
        {
            cfcost_log_info("retention: length trim deferred: entries "
                            "beyond --retention-max are not acknowledged "
                            "yet");
        }
    }

    rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_consumers, c,
                          "XINFO CONSUMERS %s %s", CFCOST_RECORD_STREAM,
                          c->agg->conf.group);
    cfcost_consumer_sent(c, rc);
}


static int
cfcost_consumer_trim(cfcost_consumer_t *c)
{
    char                      args[6][24];
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

    c->next_trim = cfcost_mono_ms() + (uint64_t) conf->trim_interval_s * 1000;

    snprintf(args[0], sizeof(args[0]), "%lld", (long long) cfcost_now_ms());
    snprintf(args[1], sizeof(args[1]), "%lld",
             (long long) conf->retention_days * CFCOST_DAY_MS);
    snprintf(args[2], sizeof(args[2]), "%u", conf->retention_max);
    snprintf(args[3], sizeof(args[3]), "%d", CFCOST_TRIM_SKEW_MS);
    snprintf(args[4], sizeof(args[4]), "%d", CFCOST_TRIM_SCAN_CAP);
    snprintf(args[5], sizeof(args[5]), "%d", CFCOST_TRIM_INDEX_CAP);

    return cfcost_redis_cmd(c->rd, cfcost_consumer_on_trim, c,
                            "EVALSHA %s 0 %s %s %s %s %s %s %s", c->trim_sha,
                            CFCOST_RECORD_STREAM, args[0], args[1], args[2],
                            args[3], args[4], args[5]);
}


/* ---- the loop ----------------------------------------------------------- */


static void
cfcost_consumer_next(cfcost_consumer_t *c)
{
    int                       rc;
    uint64_t                  now;
    const cfcost_agg_conf_t  *conf = &c->agg->conf;

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

    now = cfcost_mono_ms();

    if (c->need_pending) {
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_pending, c,
                              "XREADGROUP GROUP %s %s COUNT %u STREAMS %s %s",
                              conf->group, conf->consumer,
                              c->single ? 1 : conf->batch,
                              CFCOST_RECORD_STREAM, c->pending_from);

    } else if (c->claiming || now >= c->next_claim) {
        if (!c->claiming) {
            strcpy(c->claim_from, "0-0");
        }
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_claim, c,
                              "XAUTOCLAIM %s %s %s %u %s COUNT %u",
                              CFCOST_RECORD_STREAM, conf->group,
                              conf->consumer, conf->claim_idle_ms,
                              c->claim_from, conf->batch);

    } else if (now >= c->next_trim
               && (conf->retention_days || conf->retention_max))
    {
        rc = cfcost_consumer_trim(c);

    } else {
        c->blocked = 1;
        rc = cfcost_redis_cmd(c->rd, cfcost_consumer_on_new, c,
                              "XREADGROUP GROUP %s %s COUNT %u BLOCK %u "
                              "STREAMS %s >", conf->group, conf->consumer,
                              conf->batch, conf->block_ms,
                              CFCOST_RECORD_STREAM);
    }

    cfcost_consumer_sent(c, rc);
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

    event_free(c->pause_ev);
    free(c);
}
