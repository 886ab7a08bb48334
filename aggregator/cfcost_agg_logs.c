/*
 * GET /api/usage/logs: one user's records (or everyone's, for the admin),
 * newest first, read through the log index so that no other user's
 * records are scanned.
 *
 * The index (common/cfcost_schema.h) holds members "<ts_ms>:<writer>:
 * <entry id>" in buckets of 100 ms per scope.  A round: the scope's
 * buckets from the newest bound down (ZREVRANGEBYSCORE, a few, then more
 * while too few members came), each bucket's members (GET, pipelined;
 * a bucket is whole once read), sorted newest first, the page's share of
 * them; then XRANGE id id on the writer's stream for each, pipelined.  A
 * row's id is "<writer>:<entry id>", unique across streams.  Filters
 * (model, status) apply to the entries; a page that is not full after a
 * round goes on from the last member read, for a bounded number of
 * rounds.  The cursor is the last member consumed, so a page never
 * repeats or skips a record that was indexed when the page before it was
 * read, whatever arrives meanwhile.
 *
 * format=csv streams the same rows, a round per chunk, waiting for each
 * chunk to be written before reading more.
 *
 * An indexed entry the stream no longer holds was trimmed: it is left out
 * and the reply says so in truncated_before, as it does whenever the range
 * asked for begins before the stream does.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_out.h"
#include "cfcost_agg_record.h"
#include "cfcost_agg_routes.h"


#define CFCOST_LOGS_LIMIT_DEFAULT   50
#define CFCOST_LOGS_LIMIT_MAX       1000
#define CFCOST_LOGS_ROUNDS          8       /* per JSON page */
#define CFCOST_LOGS_CSV_FETCH       500
#define CFCOST_LOGS_BUCKETS_FIRST   2       /* buckets asked for first */
#define CFCOST_LOGS_BUCKETS_MAX     256     /* ... then twice, up to */
#define CFCOST_LOGS_BUCKET_ROUNDS   12      /* per round of members */

#define CFCOST_LOGS_CSV_HEADER                                               \
    "id,request_id,timestamp,model,input_tokens,output_tokens,"              \
    "cached_tokens,total_tokens,cost_usd,status,route,key_id,user,flags,"    \
    "error,latency_ms\r\n"


typedef struct {
    char             *scope;        /* u:<user> or all */
    char              max[CFCOST_MEMBER_MAX + 2];  /* "+" or "(<member>" */
    char              min[CFCOST_MEMBER_MAX + 2];  /* "-" or "[<ts15>" */
    int64_t           from_ms;      /* -1: no from */

    unsigned          limit;        /* 0: no limit (CSV only) */
    unsigned          fetch;        /* members per round */
    unsigned          rows;         /* rows written so far */
    unsigned          rounds;
    int               csv;

    const char       *model;        /* filters */
    unsigned          status_lo;
    unsigned          status_hi;

    int64_t           trimmed_ms;   /* cfcost:retention; 0: never */
    int64_t           missing_ms;   /* newest indexed entry found gone */

    /* this round's buckets: asked for from hi down, k at a time */
    char              hi[CFCOST_LOGB_DIGITS + 2];  /* "+inf" or "(<b>" */
    char              low[CFCOST_LOGB_DIGITS + 1]; /* the lowest read */
    unsigned          k;
    unsigned          bucket_rounds;
    int               exhausted;    /* no bucket below those read */
    char              buckets[CFCOST_LOGS_BUCKETS_MAX][CFCOST_LOGB_DIGITS + 1];
    size_t            nbuckets;     /* read, until their GETs */
    char            **bufs;         /* contents, members cut in place */
    size_t            nbufs;
    size_t            fcap;
    char            **cand;         /* members in the bounds */
    size_t            ncand;
    size_t            ccap;

    char            **members;      /* this round: into bufs */
    size_t            nmembers;
    int               full;         /* limit reached this round */
    char              last[CFCOST_MEMBER_MAX + 1];  /* last consumed */
    int               more;         /* the index may hold more */

    cfcost_buf_t      out;
} cfcost_logs_ctx_t;


static void cfcost_logs_round(cfcost_req_t *rq);


static void
cfcost_logs_strs_free(char **v, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(v[i]);
    }

    free(v);
}


/* Forgets this round's buckets and members. */
static void
cfcost_logs_members_free(cfcost_logs_ctx_t *l)
{
    cfcost_logs_strs_free(l->bufs, l->nbufs);
    free(l->cand);
    l->bufs = l->cand = l->members = NULL;
    l->nbuckets = l->nbufs = l->fcap = l->ncand = l->ccap = 0;
    l->nmembers = 0;
}


static void
cfcost_logs_ctx_free(void *p)
{
    cfcost_logs_ctx_t  *l = p;

    cfcost_logs_members_free(l);
    cfcost_buf_free(&l->out);
    free(l->scope);
    free(l);
}


/* ---- parameters --------------------------------------------------------- */


static int
cfcost_logs_status(cfcost_logs_ctx_t *l, const char *s)
{
    uint64_t  v;
    size_t    n;

    n = strlen(s);

    if (n == 3 && s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x') {
        l->status_lo = (unsigned) (s[0] - '0') * 100;
        l->status_hi = l->status_lo + 99;
        return 0;
    }

    if (cfcost_u64_parse(s, n, 999, &v) != 0) {
        return -1;
    }

    l->status_lo = l->status_hi = (unsigned) v;
    return 0;
}


/* Reads limit, cursor, filters and range into l.  -1: answered 400. */
static int
cfcost_logs_params(cfcost_req_t *rq, cfcost_logs_ctx_t *l)
{
    size_t        idlen;
    int64_t       from, to;
    uint64_t      v;
    const char   *s, *id, *writer;
    char          ts[16];

    if (cfcost_req_range(rq, &from, &to) != 0) {
        return -1;
    }

    s = cfcost_req_arg(rq, "format");
    if (s != NULL && strcmp(s, "csv") != 0 && strcmp(s, "json") != 0) {
        cfcost_req_error(rq, 400, "format: want json or csv");
        return -1;
    }

    l->csv = (s != NULL && strcmp(s, "csv") == 0);
    l->limit = l->csv ? 0 : CFCOST_LOGS_LIMIT_DEFAULT;

    s = cfcost_req_arg(rq, "limit");
    if (s != NULL) {
        if (cfcost_u64_parse(s, strlen(s), CFCOST_LOGS_LIMIT_MAX, &v) != 0
            || v == 0)
        {
            cfcost_req_error(rq, 400, "limit: want 1 to 1000");
            return -1;
        }
        l->limit = (unsigned) v;
    }

    s = cfcost_req_arg(rq, "status");
    if (s != NULL && cfcost_logs_status(l, s) != 0) {
        cfcost_req_error(rq, 400, "status: want a status code or 2xx..5xx");
        return -1;
    }

    l->model = cfcost_req_arg(rq, "model");

    /* newest bound: the cursor, or the end of "to" */
    strcpy(l->max, "+");

    if (cfcost_req_arg(rq, "to") != NULL) {
        l->max[0] = '(';
        cfcost_member_ts(l->max + 1, (to + 1) * CFCOST_DAY_MS);
    }

    s = cfcost_req_arg(rq, "cursor");
    if (s != NULL && s[0] != '\0') {
        if (cfcost_member_parse(s, strlen(s), &writer, &id, &idlen, NULL)
            != 0)
        {
            cfcost_req_error(rq, 400, "cursor: not one this server gave");
            return -1;
        }
        if (l->max[0] == '+' || strcmp(s, l->max + 1) < 0) {
            l->max[0] = '(';
            strcpy(l->max + 1, s);
        }
    }

    strcpy(l->min, "-");
    l->from_ms = -1;

    if (cfcost_req_arg(rq, "from") != NULL) {
        l->from_ms = from * CFCOST_DAY_MS;
        cfcost_member_ts(ts, l->from_ms);
        snprintf(l->min, sizeof(l->min), "[%s", ts);
    }

    return 0;
}


/* ---- rows --------------------------------------------------------------- */


static int
cfcost_logs_match(const cfcost_logs_ctx_t *l, const cfcost_record_t *rec)
{
    uint64_t  status;

    if (l->model != NULL
        && (rec->f[CFCOST_REC_MODEL].len != strlen(l->model)
            || memcmp(rec->f[CFCOST_REC_MODEL].p, l->model,
                      rec->f[CFCOST_REC_MODEL].len) != 0))
    {
        return 0;
    }

    if (l->status_hi != 0) {
        status = cfcost_record_u64(rec, CFCOST_REC_STATUS, NULL);
        if (status < l->status_lo || status > l->status_hi) {
            return 0;
        }
    }

    return 1;
}


/* a string field of a row: JSON string or CSV field */
static void
cfcost_logs_str(cfcost_logs_ctx_t *l, const char *name, const char *p,
    size_t n)
{
    if (l->csv) {
        cfcost_csv_field(&l->out, p, n);
        cfcost_buf_add(&l->out, ",", 1);
        return;
    }

    cfcost_buf_printf(&l->out, ",\"%s\":", name);
    cfcost_json_str(&l->out, p, n);
}


static void
cfcost_logs_num(cfcost_logs_ctx_t *l, const char *name, uint64_t v)
{
    if (l->csv) {
        cfcost_buf_u64(&l->out, v);
        cfcost_buf_add(&l->out, ",", 1);
        return;
    }

    cfcost_buf_printf(&l->out, ",\"%s\":", name);
    cfcost_buf_u64(&l->out, v);
}


static void
cfcost_logs_span(cfcost_logs_ctx_t *l, const char *name,
    const cfcost_record_t *rec, cfcost_rec_field_e f)
{
    cfcost_logs_str(l, name, rec->f[f].p, rec->f[f].len);
}


/* Writes one row (the same columns in JSON and CSV). */
static void
cfcost_logs_row(cfcost_logs_ctx_t *l, const char *writer, const redisReply *id,
    unsigned k, const cfcost_record_t *rec)
{
    char      iso[CFCOST_ISO_LEN + 1], cost[32], lat[32];
    char      rid[CFCOST_WRITER_ID_LEN + 1 + CFCOST_STREAM_ID_MAX + 6];
    size_t    ridlen;
    int64_t   ts;
    uint64_t  in, out, us;

    /* the row's id: "<writer>:<entry id>", ".<k>" after for a batch's
     * records past the first (as its log index member ends) */
    ts = cfcost_record_ts(rec, id->str, (size_t) id->len);
    ridlen = (size_t) snprintf(rid, sizeof(rid), "%.*s:%.*s",
                               (int) CFCOST_WRITER_ID_LEN, writer,
                               (int) id->len, id->str);
    if (k > 0) {
        ridlen += (size_t) snprintf(rid + ridlen, sizeof(rid) - ridlen,
                                    ".%u", k);
    }
    cfcost_iso_ms(iso, ts);

    in = cfcost_record_u64(rec, CFCOST_REC_INPUT, NULL);
    out = cfcost_record_u64(rec, CFCOST_REC_OUTPUT, NULL);
    us = cfcost_record_u64(rec, CFCOST_REC_LATENCY, NULL);
    snprintf(lat, sizeof(lat), "%llu.%03llu", (unsigned long long) us / 1000,
             (unsigned long long) us % 1000);

    if (l->csv) {
        cfcost_csv_field(&l->out, rid, ridlen);
        cfcost_buf_add(&l->out, ",", 1);
    } else {
        cfcost_buf_str(&l->out, l->rows ? ",{\"id\":" : "{\"id\":");
        cfcost_json_str(&l->out, rid, ridlen);
    }

    cfcost_logs_span(l, "request_id", rec, CFCOST_REC_REQUEST_ID);
    cfcost_logs_str(l, "timestamp", iso, CFCOST_ISO_LEN);
    cfcost_logs_span(l, "model", rec, CFCOST_REC_MODEL);
    cfcost_logs_num(l, "input_tokens", in);
    cfcost_logs_num(l, "output_tokens", out);
    cfcost_logs_num(l, "cached_tokens",
                    cfcost_record_u64(rec, CFCOST_REC_CACHED, NULL));
    cfcost_logs_num(l, "total_tokens", in + out);

    cfcost_usd6(cost, cfcost_record_u64(rec, CFCOST_REC_COST, NULL));
    if (l->csv) {
        cfcost_buf_printf(&l->out, "%s,", cost);
    } else {
        cfcost_buf_printf(&l->out, ",\"cost_usd\":%s", cost);
    }

    cfcost_logs_num(l, "status",
                    cfcost_record_u64(rec, CFCOST_REC_STATUS, NULL));
    cfcost_logs_span(l, "route", rec, CFCOST_REC_ROUTE);
    cfcost_logs_span(l, "key_id", rec, CFCOST_REC_KEY_ID);
    cfcost_logs_span(l, "user", rec, CFCOST_REC_USER);
    cfcost_logs_span(l, "flags", rec, CFCOST_REC_FLAGS);
    cfcost_logs_span(l, "error", rec, CFCOST_REC_ERROR);

    if (l->csv) {
        cfcost_buf_printf(&l->out, "%s\r\n", lat);
    } else {
        cfcost_buf_printf(&l->out, ",\"latency_ms\":%s}", lat);
    }

    l->rows++;
}


/* ---- rounds ------------------------------------------------------------- */


static void
cfcost_logs_on_entry(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    const char          *m, *id, *writer;
    size_t               idlen;
    unsigned             k;
    int64_t              ts;
    uint64_t             v;
    cfcost_record_t      rec;
    const redisReply    *e;
    cfcost_logs_ctx_t   *l = rq->ctx;

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "XRANGE") || l->full
        || slot >= l->nmembers)
    {
        return;
    }

    m = l->members[slot];
    strcpy(l->last, m);

    if (cfcost_member_parse(m, strlen(m), &writer, &id, &idlen, &k) != 0) {
        return;                 /* not ours: never indexed by this version */
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        /* indexed, but trimmed from the stream */
        if (cfcost_u64_parse(m, 15, INT64_MAX, &v) == 0)
        {
            ts = (int64_t) v + 1;
            if (ts > l->missing_ms) {
                l->missing_ms = ts;
            }
        }
        return;
    }

    e = r->element[0];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2
        || e->element[0]->type != REDIS_REPLY_STRING
        || cfcost_record_parse(e->element[1], k, &rec) < 0
        || !cfcost_logs_match(l, &rec))
    {
        return;
    }

    cfcost_logs_row(l, writer, e->element[0], k, &rec);

    if (l->limit && l->rows == l->limit) {
        l->full = 1;
        /* more remain when members follow this one, or the round was full */
        l->more = (slot + 1 < l->nmembers) || l->more;
    }
}


/* ---- the index: buckets, then their members ---------------------------- */


static int
cfcost_logs_push(cfcost_req_t *rq, char ***v, size_t *n, size_t *cap,
    char *p)
{
    char  **nv;

    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        nv = realloc(*v, *cap * sizeof(char *));
        if (nv == NULL) {
            rq->failed = 1;
            return -1;
        }
        *v = nv;
    }

    (*v)[(*n)++] = p;
    return 0;
}


/* a member within the page's bounds */
static int
cfcost_logs_within(const cfcost_logs_ctx_t *l, const char *m)
{
    return (l->max[0] != '(' || strcmp(m, l->max + 1) < 0)
           && (l->min[0] != '[' || strcmp(m, l->min + 1) >= 0);
}


/* ZREVRANGEBYSCORE of the buckets (slot 0), HGET of the retention
 * (slot 1, the first round) */
static void
cfcost_logs_on_buckets(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    size_t              i;
    uint64_t            v;
    cfcost_logs_ctx_t  *l = rq->ctx;

    if (slot == 1) {
        if (r->type == REDIS_REPLY_STRING
            && cfcost_u64_parse(r->str, (size_t) r->len, INT64_MAX, &v) == 0)
        {
            l->trimmed_ms = (int64_t) v;
        }
        return;
    }

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "log index")
        || r->type != REDIS_REPLY_ARRAY)
    {
        return;
    }

    l->exhausted = (r->elements < l->k);

    for (i = 0; i < r->elements && l->nbuckets < l->k; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING
            || r->element[i]->len != CFCOST_LOGB_DIGITS)
        {
            continue;               /* not a bucket of ours */
        }

        memcpy(l->buckets[l->nbuckets++], r->element[i]->str,
               CFCOST_LOGB_DIGITS + 1);
        memcpy(l->low, r->element[i]->str, CFCOST_LOGB_DIGITS + 1);
    }
}


/* GET of a bucket: its members within the bounds become candidates */
static void
cfcost_logs_on_bucket(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    char               *buf, *p, *nl;
    cfcost_logs_ctx_t  *l = rq->ctx;

    (void) slot;

    if (r->type == REDIS_REPLY_NIL) {
        return;                     /* removed since: trimmed */
    }

    if (cfcost_req_bad(rq, r, REDIS_REPLY_STRING, "log bucket")
        || r->type != REDIS_REPLY_STRING || r->len == 0)
    {
        return;
    }

    buf = malloc((size_t) r->len + 1);
    if (buf == NULL) {
        rq->failed = 1;
        return;
    }

    memcpy(buf, r->str, (size_t) r->len + 1);

    if (cfcost_logs_push(rq, &l->bufs, &l->nbufs, &l->fcap, buf) != 0) {
        free(buf);
        return;
    }

    for (p = buf; *p != '\0'; p = nl + 1) {
        nl = strchr(p, '\n');
        if (nl == NULL) {
            break;                  /* not one of ours: no end */
        }

        *nl = '\0';

        if ((size_t) (nl - p) <= CFCOST_MEMBER_MAX && cfcost_logs_within(l, p)
            && cfcost_logs_push(rq, &l->cand, &l->ncand, &l->ccap, p) != 0)
        {
            return;
        }
    }
}


static int
cfcost_logs_desc(const void *x, const void *y)
{
    return strcmp(*(char * const *) y, *(char * const *) x);
}


/*
 * The round's members: the candidates newest first (each once: a record
 * indexed twice by an interrupted move of an old index is one row), the
 * round's share of them.
 */
static void
cfcost_logs_take(cfcost_logs_ctx_t *l)
{
    size_t  i, n;

    if (l->ncand > 1) {
        qsort(l->cand, l->ncand, sizeof(char *), cfcost_logs_desc);
    }

    for (i = 0, n = 0; i < l->ncand; i++) {
        if (n == 0 || strcmp(l->cand[n - 1], l->cand[i]) != 0) {
            l->cand[n++] = l->cand[i];
        }
    }

    l->members = l->cand;
    l->nmembers = n < l->fetch ? n : l->fetch;
    l->more = (n > l->fetch) || !l->exhausted;

    if (l->nmembers == 0 && l->more) {
        /*
         * Only when the buckets read held nothing within the bounds (and
         * more remain): go on below the lowest one.  No member is below
         * this one in its bucket (no writer id is lower, no stream id).
         */
        snprintf(l->last, sizeof(l->last), "%s00:%s:0-0", l->low,
                 CFCOST_WRITER_TAG "0000000000000000");
    }
}


static void cfcost_logs_fetch(cfcost_req_t *rq);
static void cfcost_logs_buckets(cfcost_req_t *rq);


/* After the GETs of some buckets: more buckets, or the entries. */
static void
cfcost_logs_on_bucketed(cfcost_req_t *rq)
{
    cfcost_logs_ctx_t  *l = rq->ctx;

    if (l->ncand < l->fetch && !l->exhausted
        && l->bucket_rounds < CFCOST_LOGS_BUCKET_ROUNDS)
    {
        snprintf(l->hi, sizeof(l->hi), "(%s", l->low);
        l->k = l->k * 2 < CFCOST_LOGS_BUCKETS_MAX ? l->k * 2
                                                  : CFCOST_LOGS_BUCKETS_MAX;
        cfcost_logs_buckets(rq);
        return;
    }

    cfcost_logs_take(l);
    cfcost_logs_fetch(rq);
}


/* After the bucket names: their contents. */
static void
cfcost_logs_get_buckets(cfcost_req_t *rq)
{
    size_t              i;
    cfcost_logs_ctx_t  *l = rq->ctx;

    cfcost_req_phase(rq, cfcost_logs_on_bucket, cfcost_logs_on_bucketed);

    for (i = 0; i < l->nbuckets; i++) {
        cfcost_req_cmd(rq, "GET " CFCOST_LOGB_PREFIX "%s:%s", l->buckets[i],
                       l->scope);
    }

    l->nbuckets = 0;
    cfcost_req_go(rq);
}


/* The next k buckets from hi down (to the lowest the range allows). */
static void
cfcost_logs_buckets(cfcost_req_t *rq)
{
    char                lo[CFCOST_LOGB_DIGITS + 1];
    cfcost_logs_ctx_t  *l = rq->ctx;

    l->bucket_rounds++;

    if (l->min[0] == '[') {
        snprintf(lo, sizeof(lo), "%.*s", CFCOST_LOGB_DIGITS, l->min + 1);
    } else {
        strcpy(lo, "-inf");
    }

    cfcost_req_phase(rq, cfcost_logs_on_buckets, cfcost_logs_get_buckets);
    cfcost_req_cmd(rq, "ZREVRANGEBYSCORE " CFCOST_LOGB_SET_PREFIX "%s %s %s "
                   "LIMIT 0 %u", l->scope, l->hi, lo, l->k);

    if (l->rounds == 1 && l->bucket_rounds == 1) {
        cfcost_req_cmd(rq, "HGET " CFCOST_RETENTION_HASH " "
                       CFCOST_RETENTION_F_BEFORE);
    }

    cfcost_req_go(rq);
}


/* The ISO time before which records are gone, or NULL when none are. */
static const char *
cfcost_logs_truncated(cfcost_logs_ctx_t *l, char *buf)
{
    int64_t  t;

    t = l->trimmed_ms;

    if (t > 0 && l->from_ms >= 0 && l->from_ms >= t) {
        t = 0;                  /* the range begins inside the stream */
    }

    if (l->missing_ms > t) {
        t = l->missing_ms;
    }

    if (t <= 0) {
        return NULL;
    }

    cfcost_iso_ms(buf, t);
    return buf;
}


static void
cfcost_logs_answer_json(cfcost_req_t *rq)
{
    char                iso[CFCOST_ISO_LEN + 1];
    cfcost_buf_t        b;
    cfcost_logs_ctx_t  *l = rq->ctx;

    memset(&b, 0, sizeof(b));

    cfcost_buf_str(&b, "{\"logs\":[");
    cfcost_buf_add(&b, l->out.data, l->out.len);
    cfcost_buf_str(&b, "],\"next_cursor\":");
    cfcost_json_strz(&b, l->more ? l->last : NULL);
    cfcost_buf_str(&b, ",\"truncated_before\":");
    cfcost_json_strz(&b, cfcost_logs_truncated(l, iso));
    cfcost_buf_str(&b, "}\n");

    if (l->out.oom) {
        b.oom = 1;
    }

    cfcost_req_send(rq, 200, NULL, &b);
}


/* After a round's entries: answer, stream, or read on. */
static void
cfcost_logs_on_round(cfcost_req_t *rq)
{
    cfcost_logs_ctx_t  *l = rq->ctx;

    cfcost_logs_members_free(l);

    if (l->csv) {
        if (l->full || !l->more) {
            cfcost_req_stream_chunk(rq, &l->out, cfcost_req_stream_end);
        } else {
            snprintf(l->max, sizeof(l->max), "(%s", l->last);
            cfcost_req_stream_chunk(rq, &l->out, cfcost_logs_round);
        }
        return;
    }

    if (l->full || !l->more || l->rounds >= CFCOST_LOGS_ROUNDS) {
        cfcost_logs_answer_json(rq);
        return;
    }

    snprintf(l->max, sizeof(l->max), "(%s", l->last);
    cfcost_logs_round(rq);
}


static void
cfcost_logs_fetch(cfcost_req_t *rq)
{
    char                key[CFCOST_RECORD_STREAM_LEN + 1];
    size_t              i, idlen, lens[4];
    const char         *id, *writer, *argv[4];
    cfcost_logs_ctx_t  *l = rq->ctx;

    if (l->nmembers == 0) {
        cfcost_logs_on_round(rq);
        return;
    }

    cfcost_req_phase(rq, cfcost_logs_on_entry, cfcost_logs_on_round);

    argv[0] = "XRANGE";
    lens[0] = 6;
    argv[1] = key;

    for (i = 0; i < l->nmembers; i++) {
        if (cfcost_member_parse(l->members[i], strlen(l->members[i]),
                                &writer, &id, &idlen, NULL) != 0)
        {
            /* never indexed by us: reads as nothing */
            writer = "w0000000000000000";
            id = "0-0";
            idlen = 3;
        }
        lens[1] = cfcost_stream_key(key, writer);
        argv[2] = argv[3] = id;
        lens[2] = lens[3] = idlen;
        cfcost_req_argv(rq, 4, argv, lens);
    }

    cfcost_req_go(rq);
}


static void
cfcost_logs_round(cfcost_req_t *rq)
{
    unsigned            want;
    cfcost_logs_ctx_t  *l = rq->ctx;

    l->rounds++;

    if (l->csv) {
        want = l->limit ? l->limit - l->rows : CFCOST_LOGS_CSV_FETCH;
        l->fetch = want < CFCOST_LOGS_CSV_FETCH ? want + 1
                                                : CFCOST_LOGS_CSV_FETCH;
    } else if (l->rounds == 1) {
        l->fetch = l->limit + 1;
    } else {
        l->fetch = l->limit * 4 < 1000 ? l->limit * 4 + 1 : 1000;
    }

    /* the newest bucket a member below max can be in */
    if (l->max[0] == '(') {
        snprintf(l->hi, sizeof(l->hi), "%.*s", CFCOST_LOGB_DIGITS,
                 l->max + 1);
    } else {
        strcpy(l->hi, "+inf");
    }

    l->k = CFCOST_LOGS_BUCKETS_FIRST;
    l->bucket_rounds = 0;
    l->exhausted = 0;

    cfcost_logs_buckets(rq);
}


void
cfcost_route_logs(cfcost_req_t *rq)
{
    size_t              n;
    cfcost_logs_ctx_t  *l;

    l = calloc(1, sizeof(cfcost_logs_ctx_t));
    if (l == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    rq->ctx = l;
    rq->ctx_free = cfcost_logs_ctx_free;

    if (cfcost_logs_params(rq, l) != 0) {
        return;
    }

    n = sizeof(CFCOST_SCOPE_USER)
        + (rq->subject ? strlen(rq->subject) : sizeof(CFCOST_SCOPE_ALL));

    l->scope = malloc(n);
    if (l->scope == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    if (rq->subject) {
        snprintf(l->scope, n, CFCOST_SCOPE_USER "%s", rq->subject);
    } else {
        snprintf(l->scope, n, CFCOST_SCOPE_ALL);
    }

    if (l->csv) {
        cfcost_req_stream_start(rq, "text/csv; charset=utf-8");
        cfcost_buf_str(&l->out, CFCOST_LOGS_CSV_HEADER);
    }

    cfcost_logs_round(rq);
}
