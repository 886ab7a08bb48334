/*
 * Stream entries -> apply script commands.  The fields of every record
 * become the script's arguments (the contract is cfcost_agg_lua.h's
 * CFCOST_LUA_APPLY_* and CFCOST_LUA_ENTRY_*), formatted once per batch
 * and stream, and queued until their turn.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_record.h"
#include "cfcost_agg_lua.h"
#include "cfcost_agg_consumer_int.h"


/* the word of ARGV[i] in the command: EVALSHA <sha> 0 come first */
#define CFCOST_APPLY_ARGV(i)     (2 + (i))

/* the words of the command for n entries */
#define CFCOST_APPLY_WORDS(n)    (CFCOST_APPLY_ARGV(CFCOST_LUA_APPLY_FIRST)   \
                                  + (n) * CFCOST_LUA_APPLY_ARGS)


/* what one entry needs for cfcost_lua_apply beyond cfcost_entry_t */
typedef struct {
    char                rid[8 + CFCOST_STREAM_ID_MAX + 5];
    char                dnum[24];
    char                num[5][24];
    char                padded[41];
} cfcost_entry_scratch_t;


/*
 * How many records entry e holds, for cfcost_consumer_entry_read: at
 * least 1 (an entry without a record still is acknowledged).
 */
static size_t
cfcost_consumer_records(const redisReply *e)
{
    int     rc;
    size_t  n;

    rc = cfcost_record_count(e->elements < 2 ? NULL : e->element[1], &n);

    if (rc > 0) {
        cfcost_log_warn("consumer: entry %.*s is a batch whose framing "
                        "breaks after %zu records: those counted, the rest "
                        "cannot be read", (int) e->element[0]->len,
                        e->element[0]->str, n);
    }

    return n ? n : 1;
}


/*
 * Reads record k of entry e of a batch once: its record, what it counts
 * and its log index member.  An entry whose fields are gone (trimmed
 * while pending) is not counted: acknowledged only.
 */
static void
cfcost_consumer_entry_read(const char *writer, const redisReply *e,
    unsigned rk, cfcost_entry_t *ent)
{
    int        bad, k;
    int64_t    ts;
    uint64_t  *v = ent->v;

    ent->id = e->element[0]->str;
    ent->idlen = (size_t) e->element[0]->len;
    ent->k = rk;
    ent->counted = 0;

    bad = (e->elements < 2) ? -1 : cfcost_record_parse(e->element[1], rk,
                                                       &ent->rec);
    if (bad < 0) {
        cfcost_log_warn("consumer: entry %.*s has no fields (trimmed?): "
                        "acknowledged", (int) ent->idlen, ent->id);
        return;
    }

    if (bad) {
        cfcost_log_warn("consumer: entry %.*s is not a record a gateway "
                        "writes (record %u of it): counted with what could "
                        "be read", (int) ent->idlen, ent->id, rk);
    }

    ent->counted = 1;
    ts = cfcost_record_ts(&ent->rec, ent->id, ent->idlen);
    ent->day = cfcost_day_of_ms(ts);
    ent->dlen = cfcost_date_str(ent->dstr, ent->day);

    /*
     * Counted as the record says: no gateway writes a count over 2^24
     * (cfcost_usage.h), so nothing is clamped here and the rollups are
     * the records' sums.  A number that is not one (malformed, or a count
     * no gateway writes, which could overflow the sums) counts as 0,
     * loudly.  A cost is split for the scripts.
     */
    bad = 0;
    v[0] = cfcost_record_u64(&ent->rec, CFCOST_REC_INPUT, &bad);
    v[1] = cfcost_record_u64(&ent->rec, CFCOST_REC_OUTPUT, &bad);
    v[2] = cfcost_record_u64(&ent->rec, CFCOST_REC_CACHED, &bad);
    v[3] = cfcost_record_u64(&ent->rec, CFCOST_REC_COST, &bad);
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
                        (int) ent->idlen, ent->id);
    }

    ent->mlen = cfcost_member_make(ent->member, ts, writer,
                                   CFCOST_WRITER_ID_LEN, ent->id, ent->idlen,
                                   rk);
}


/*
 * Fills the arguments of cfcost_lua_apply for one record read
 * (CFCOST_LUA_APPLY_ARGS, from argv, at the offsets CFCOST_LUA_ENTRY_*)
 * and its scratch.  A record not counted gets an empty request id; a
 * batch entry's records after its first, an empty entry id.
 */
static void
cfcost_consumer_entry(const cfcost_entry_t *ent, cfcost_entry_scratch_t *s,
    const char **argv, size_t *lens)
{
    int                   k;
    size_t                i, rlen;
    const cfcost_span_t  *f = ent->rec.f;

    /* where v[] goes */
    static const int  num[5] = {
        CFCOST_LUA_ENTRY_INPUT, CFCOST_LUA_ENTRY_OUTPUT,
        CFCOST_LUA_ENTRY_CACHED, CFCOST_LUA_ENTRY_COST_USD,
        CFCOST_LUA_ENTRY_COST
    };

    for (i = 0; i < CFCOST_LUA_APPLY_ARGS; i++) {
        argv[i] = "";
        lens[i] = 0;
    }

    if (ent->k == 0) {
        argv[CFCOST_LUA_ENTRY_ID] = ent->id;
        lens[CFCOST_LUA_ENTRY_ID] = ent->idlen;
        argv[CFCOST_LUA_ENTRY_PADDED] = s->padded;
        lens[CFCOST_LUA_ENTRY_PADDED] = cfcost_stream_id_pad(s->padded,
                                                             ent->id,
                                                             ent->idlen);
    }

    if (!ent->counted) {
        return;
    }

    if (f[CFCOST_REC_REQUEST_ID].len > 0) {
        argv[CFCOST_LUA_ENTRY_REQUEST_ID] = f[CFCOST_REC_REQUEST_ID].p;
        lens[CFCOST_LUA_ENTRY_REQUEST_ID] = f[CFCOST_REC_REQUEST_ID].len;

    } else {
        /* no request id: the record itself is the unit of "once" */
        rlen = (size_t) snprintf(s->rid, sizeof(s->rid), "entry:%.*s",
                                 (int) ent->idlen, ent->id);
        if (ent->k > 0) {
            rlen += (size_t) snprintf(s->rid + rlen, sizeof(s->rid) - rlen,
                                      ".%u", ent->k);
        }
        argv[CFCOST_LUA_ENTRY_REQUEST_ID] = s->rid;
        lens[CFCOST_LUA_ENTRY_REQUEST_ID] = rlen;
    }

    argv[CFCOST_LUA_ENTRY_DAY] = ent->dstr;
    lens[CFCOST_LUA_ENTRY_DAY] = ent->dlen;
    argv[CFCOST_LUA_ENTRY_DAY_NUM] = s->dnum;
    lens[CFCOST_LUA_ENTRY_DAY_NUM] =
        (size_t) snprintf(s->dnum, sizeof(s->dnum), "%lld",
                          (long long) ent->day);

    argv[CFCOST_LUA_ENTRY_USER] = f[CFCOST_REC_USER].p;
    lens[CFCOST_LUA_ENTRY_USER] = f[CFCOST_REC_USER].len;
    argv[CFCOST_LUA_ENTRY_KEY_ID] = f[CFCOST_REC_KEY_ID].p;
    lens[CFCOST_LUA_ENTRY_KEY_ID] = f[CFCOST_REC_KEY_ID].len;
    argv[CFCOST_LUA_ENTRY_MODEL] = f[CFCOST_REC_MODEL].p;
    lens[CFCOST_LUA_ENTRY_MODEL] = f[CFCOST_REC_MODEL].len;

    for (k = 0; k < 5; k++) {
        argv[num[k]] = s->num[k];
        lens[num[k]] = cfcost_u64_str(s->num[k], ent->v[k]);
    }

    argv[CFCOST_LUA_ENTRY_MEMBER] = ent->member;
    lens[CFCOST_LUA_ENTRY_MEMBER] = ent->mlen;
}


/*
 * Whether the summed script may try the batch: no dedup ttl (it marks
 * request ids one by one), not isolating a failing entry, not after it
 * declined, and the ids in ascending order (as the group's pending list
 * is).
 */
static int
cfcost_consumer_summable(const cfcost_consumer_t *c,
    const cfcost_entry_t *ents, size_t n)
{
    size_t    i;
    uint64_t  ms, seq, pms, pseq;

    if (c->agg->conf.dedup_ttl_s != 0 || c->single || c->exact
        || c->sum_sha[0] == '\0')
    {
        return 0;
    }

    pms = 0;
    pseq = 0;

    for (i = 0; i < n; i++) {
        if (ents[i].k > 0) {
            continue;               /* another record of the same entry */
        }

        if (cfcost_stream_id_parse(ents[i].id, ents[i].idlen, &ms, &seq) != 0
            || (i > 0 && (ms < pms || (ms == pms && seq <= pseq))))
        {
            return 0;
        }
        pms = ms;
        pseq = seq;
    }

    return 1;
}


/* Fills the words before the entries: EVALSHA <sha> 0, then the head. */
static void
cfcost_consumer_apply_head(cfcost_consumer_t *c, size_t si,
    const char **argv, const char *ttl, const char *n)
{
    argv[0] = "EVALSHA";
    argv[1] = c->apply_sha;
    argv[2] = "0";
    argv[CFCOST_APPLY_ARGV(CFCOST_LUA_APPLY_STREAM)] = c->streams[si].key;
    argv[CFCOST_APPLY_ARGV(CFCOST_LUA_APPLY_GROUP)] = c->agg->conf.group;
    argv[CFCOST_APPLY_ARGV(CFCOST_LUA_APPLY_TTL)] = ttl;
    argv[CFCOST_APPLY_ARGV(CFCOST_LUA_APPLY_N)] = n;
}


/* Formats cfcost_lua_apply for the n records read of stream si. */
static int
cfcost_consumer_exact(cfcost_consumer_t *c, size_t si,
    const cfcost_entry_t *ents, size_t n, char **cmd, size_t *len)
{
    int                      rc, argc;
    char                     head[2][24];
    size_t                   i, a, *lens;
    const char             **argv;
    cfcost_entry_scratch_t  *scratch;

    rc = -1;
    argc = CFCOST_APPLY_WORDS((int) n);

    argv = malloc(argc * sizeof(char *));
    lens = malloc(argc * sizeof(size_t));
    scratch = malloc(n * sizeof(cfcost_entry_scratch_t));

    if (argv == NULL || lens == NULL || scratch == NULL) {
        goto failed;
    }

    snprintf(head[0], sizeof(head[0]), "%u", c->agg->conf.dedup_ttl_s);
    snprintf(head[1], sizeof(head[1]), "%zu", n);

    cfcost_consumer_apply_head(c, si, argv, head[0], head[1]);

    for (a = 0; a < CFCOST_APPLY_WORDS(0); a++) {
        lens[a] = strlen(argv[a]);
    }

    for (i = 0; i < n; i++) {
        cfcost_consumer_entry(&ents[i], &scratch[i], argv + a, lens + a);
        a += CFCOST_LUA_APPLY_ARGS;
    }

    *cmd = NULL;
    rc = redisFormatCommandArgv(cmd, argc, argv, lens);
    if (rc < 0 || *cmd == NULL) {
        rc = -1;
        goto failed;
    }

    *len = (size_t) rc;
    rc = 0;

failed:

    free(scratch);
    free(lens);
    free(argv);

    return rc;
}


/*
 * Formats one apply script for the entries (an array of [id, fields]) of
 * stream si and queues it: the summed one when it may try them, else
 * cfcost_lua_apply.  Returns 0, 1 when there is nothing to apply, or -1
 * when out of memory.
 */
int
cfcost_consumer_batch(cfcost_consumer_t *c, size_t si,
    const redisReply *entries)
{
    int                 rc, sum;
    char               *cmd;
    size_t              i, k, n, nent, len, *nrec;
    const char         *writer;
    cfcost_entry_t     *ents;
    const redisReply   *e;
    cfcost_apply_t     *q;

    if (entries->elements == 0) {
        return 1;
    }

    /* the records of each entry: a batch entry's are several */
    nrec = malloc(entries->elements * sizeof(size_t));
    if (nrec == NULL) {
        cfcost_log_error("consumer: out of memory for a batch of %zu",
                         entries->elements);
        return -1;
    }

    nent = 0;
    n = 0;
    for (i = 0; i < entries->elements; i++) {
        e = entries->element[i];
        nrec[i] = 0;
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1
            && e->element[0]->type == REDIS_REPLY_STRING)
        {
            nrec[i] = cfcost_consumer_records(e);
            n += nrec[i];
            nent++;
        }
    }

    if (nent == 0) {
        free(nrec);
        return 1;
    }

    rc = -1;
    cmd = NULL;
    writer = CFCOST_WRITER_OF(c->streams[si].key);

    ents = malloc(n * sizeof(cfcost_entry_t));
    q = realloc(c->queue, (c->qlen + 1) * sizeof(cfcost_apply_t));

    if (ents == NULL || q == NULL) {
        cfcost_log_error("consumer: out of memory for a batch of %zu", n);
        goto failed;
    }

    c->queue = q;
    q = &c->queue[c->qlen];
    memset(q, 0, sizeof(cfcost_apply_t));

    for (i = 0, n = 0; i < entries->elements; i++) {
        for (k = 0; k < nrec[i]; k++) {
            cfcost_consumer_entry_read(writer, entries->element[i],
                                       (unsigned) k, &ents[n++]);
        }
    }

    if (nent == 1 && ents[0].idlen < sizeof(q->one_id)) {
        memcpy(q->one_id, ents[0].id, ents[0].idlen);
        q->one_id[ents[0].idlen] = '\0';
    }

    sum = cfcost_consumer_summable(c, ents, n);

    rc = sum ? cfcost_consumer_sum(c, si, ents, n, &cmd, &len)
             : cfcost_consumer_exact(c, si, ents, n, &cmd, &len);
    if (rc != 0) {
        cfcost_log_error("consumer: out of memory for a batch of %zu", n);
        goto failed;
    }

    q->cmd = cmd;
    q->len = len;
    q->stream = si;
    q->n = (unsigned) nent;
    q->records = (unsigned) n;
    q->sum = sum;

    /* counted once the script applied them: a batch read again (the
     * summed script declined it) would count them twice */
    for (i = 0; i < n; i++) {
        q->invalid += ents[i].counted ? 0 : 1;
    }

    c->qlen++;

failed:

    free(ents);
    free(nrec);

    return rc;
}


/* Queues the apply scripts of a XREADGROUP reply: [[stream, entries]..]. */
int
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


/*
 * Queues the apply script that only acknowledges entry id of stream si
 * (no request id): its position and hole stay exact.  It takes the place
 * of a queue already freed.  Returns 0, or -1.
 */
int
cfcost_consumer_skip(cfcost_consumer_t *c, size_t si, const char *id)
{
    int              i, rc;
    char            *cmd, ttl[24];
    size_t           lens[CFCOST_APPLY_WORDS(1)];
    const char      *argv[CFCOST_APPLY_WORDS(1)];
    cfcost_apply_t  *q;

    snprintf(ttl, sizeof(ttl), "%u", c->agg->conf.dedup_ttl_s);

    for (i = 0; i < CFCOST_APPLY_WORDS(1); i++) {
        argv[i] = "";
    }

    cfcost_consumer_apply_head(c, si, argv, ttl, "1");
    argv[CFCOST_APPLY_WORDS(0) + CFCOST_LUA_ENTRY_ID] = id;

    for (i = 0; i < CFCOST_APPLY_WORDS(1); i++) {
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


void
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
