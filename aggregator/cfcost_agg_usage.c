/*
 * GET /api/usage and GET /api/usage/timeseries: answered from the rollups
 * alone, in a number of Redis reads that does not grow with the records.
 *
 *   /api/usage without from/to    HGETALL cfcost:r:<scope>          1 read
 *   with from and/or to           ZRANGEBYSCORE cfcost:r:days:<scope>, then
 *                                 HGETALL of each day with data, pipelined
 *   /api/usage/timeseries         the same two round trips (HMGET per day)
 *
 * Sums are integers; a cost becomes a 6-decimal string once, at the end.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_out.h"
#include "cfcost_agg_rollup.h"
#include "cfcost_agg_routes.h"


#define CFCOST_TS_MAX_POINTS     10000

#define CFCOST_BUCKET_DAY        0
#define CFCOST_BUCKET_WEEK       1
#define CFCOST_BUCKET_MONTH      2


typedef struct {
    char             *scope;        /* "u:<user>" or "all" */
    int64_t           from;
    int64_t           to;
    int64_t          *days;         /* days with data in range */
    size_t            ndays;

    cfcost_rollup_t   ru;           /* /api/usage */

    int               bucket;       /* /api/usage/timeseries */
    cfcost_totals_t  *day_totals;   /* one per days[] */
} cfcost_usage_ctx_t;


static const char  *cfcost_bucket_names[] = { "day", "week", "month" };


static void
cfcost_usage_ctx_free(void *p)
{
    cfcost_usage_ctx_t  *u = p;

    cfcost_rollup_free(&u->ru);
    free(u->scope);
    free(u->days);
    free(u->day_totals);
    free(u);
}


/* Creates the route state: scope and date range.  NULL: answered. */
static cfcost_usage_ctx_t *
cfcost_usage_ctx(cfcost_req_t *rq)
{
    size_t               n;
    cfcost_usage_ctx_t  *u;

    u = calloc(1, sizeof(cfcost_usage_ctx_t));
    if (u == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return NULL;
    }

    rq->ctx = u;
    rq->ctx_free = cfcost_usage_ctx_free;

    if (cfcost_req_range(rq, &u->from, &u->to) != 0) {
        return NULL;
    }

    n = rq->subject ? strlen(rq->subject) + 3 : 4;
    u->scope = malloc(n);
    if (u->scope == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return NULL;
    }

    if (rq->subject) {
        snprintf(u->scope, n, CFCOST_SCOPE_USER "%s", rq->subject);
    } else {
        snprintf(u->scope, n, CFCOST_SCOPE_ALL);
    }

    return u;
}


static int
cfcost_usage_ranged(cfcost_req_t *rq)
{
    return cfcost_req_arg(rq, "from") != NULL
           || cfcost_req_arg(rq, "to") != NULL;
}


/* Writes "user","from","to" (no braces). */
static void
cfcost_usage_echo(cfcost_req_t *rq, cfcost_buf_t *b)
{
    cfcost_buf_str(b, "\"user\":");
    cfcost_json_strz(b, rq->subject);
    cfcost_buf_str(b, ",\"from\":");
    cfcost_json_strz(b, cfcost_req_arg(rq, "from"));
    cfcost_buf_str(b, ",\"to\":");
    cfcost_json_strz(b, cfcost_req_arg(rq, "to"));
}


/* ---- days in range (both routes) ---------------------------------------- */


static void
cfcost_usage_on_days(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    size_t               i;
    int64_t              d;
    cfcost_usage_ctx_t  *u = rq->ctx;

    (void) slot;

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "days")
        || r->type != REDIS_REPLY_ARRAY || r->elements == 0)
    {
        return;
    }

    u->days = malloc(r->elements * sizeof(int64_t));
    if (u->days == NULL) {
        rq->failed = 1;
        return;
    }

    for (i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && cfcost_date_parse(r->element[i]->str,
                                 (size_t) r->element[i]->len, &d) == 0)
        {
            u->days[u->ndays++] = d;
        }
    }
}


static void
cfcost_usage_days(cfcost_req_t *rq, cfcost_req_step_pt next)
{
    cfcost_usage_ctx_t  *u = rq->ctx;

    cfcost_req_phase(rq, cfcost_usage_on_days, next);
    cfcost_req_cmd(rq, "ZRANGEBYSCORE " CFCOST_ROLLUP_DAYS_PREFIX "%s %lld "
                   "%lld", u->scope, (long long) u->from, (long long) u->to);
    cfcost_req_go(rq);
}


/* ---- /api/usage --------------------------------------------------------- */


static void
cfcost_usage_totals_json(cfcost_buf_t *b, const cfcost_totals_t *t)
{
    cfcost_buf_str(b, "\"requests\":");
    cfcost_buf_u64(b, t->requests);
    cfcost_buf_str(b, ",\"input_tokens\":");
    cfcost_buf_u64(b, t->input);
    cfcost_buf_str(b, ",\"output_tokens\":");
    cfcost_buf_u64(b, t->output);
    cfcost_buf_str(b, ",\"cached_tokens\":");
    cfcost_buf_u64(b, t->cached);
    cfcost_buf_str(b, ",\"tokens\":");
    cfcost_buf_u64(b, cfcost_sat_add(t->input, t->output));
    cfcost_buf_str(b, ",\"cost\":");
    cfcost_json_money(b, t->usd, t->pusd);
}


static void
cfcost_usage_answer(cfcost_req_t *rq)
{
    size_t                     i, *rank;
    cfcost_buf_t               b;
    cfcost_usage_ctx_t        *u = rq->ctx;
    const cfcost_totals_t     *t = &u->ru.total;
    const cfcost_model_row_t  *m;

    memset(&b, 0, sizeof(b));

    rank = cfcost_rollup_rank(&u->ru);
    if (u->ru.oom) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    cfcost_buf_str(&b, "{\"total_requests\":");
    cfcost_buf_u64(&b, t->requests);
    cfcost_buf_str(&b, ",\"total_input_tokens\":");
    cfcost_buf_u64(&b, t->input);
    cfcost_buf_str(&b, ",\"total_output_tokens\":");
    cfcost_buf_u64(&b, t->output);
    cfcost_buf_str(&b, ",\"total_cached_tokens\":");
    cfcost_buf_u64(&b, t->cached);
    cfcost_buf_str(&b, ",\"total_tokens\":");
    cfcost_buf_u64(&b, cfcost_sat_add(t->input, t->output));
    cfcost_buf_str(&b, ",\"total_cost_usd\":");
    cfcost_json_money(&b, t->usd, t->pusd);

    cfcost_buf_str(&b, ",\"by_model\":{");
    for (i = 0; i < u->ru.n; i++) {
        m = &u->ru.models[i];
        cfcost_buf_str(&b, i ? "," : "");
        cfcost_json_str(&b, m->model, m->len);
        cfcost_buf_str(&b, ":{");
        cfcost_usage_totals_json(&b, &m->t);
        cfcost_buf_str(&b, "}");
    }

    cfcost_buf_str(&b, "},\"by_model_ranked\":[");
    for (i = 0; i < u->ru.n; i++) {
        m = &u->ru.models[rank[i]];
        cfcost_buf_str(&b, i ? ",{\"model\":" : "{\"model\":");
        cfcost_json_str(&b, m->model, m->len);
        cfcost_buf_str(&b, ",");
        cfcost_usage_totals_json(&b, &m->t);
        cfcost_buf_str(&b, "}");
    }

    cfcost_buf_str(&b, "],");
    cfcost_usage_echo(rq, &b);
    cfcost_buf_str(&b, "}\n");

    free(rank);

    cfcost_req_send(rq, 200, NULL, &b);
}


static void
cfcost_usage_on_hash(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    cfcost_usage_ctx_t  *u = rq->ctx;

    (void) slot;

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "rollup")) {
        return;
    }

    if (cfcost_rollup_add_hash(&u->ru, r) != 0) {
        rq->failed = 1;
    }
}


/* Phase 2 of a ranged /api/usage: every day with data, pipelined. */
static void
cfcost_usage_read_days(cfcost_req_t *rq)
{
    size_t               i;
    char                 day[CFCOST_DATE_LEN + 1];
    cfcost_usage_ctx_t  *u = rq->ctx;

    cfcost_req_phase(rq, cfcost_usage_on_hash, cfcost_usage_answer);

    for (i = 0; i < u->ndays; i++) {
        cfcost_date_str(day, u->days[i]);
        cfcost_req_cmd(rq, "HGETALL " CFCOST_ROLLUP_DAY_PREFIX "%s:%s", day,
                       u->scope);
    }

    cfcost_req_go(rq);
}


void
cfcost_route_usage(cfcost_req_t *rq)
{
    cfcost_usage_ctx_t  *u;

    u = cfcost_usage_ctx(rq);
    if (u == NULL) {
        return;
    }

    if (cfcost_usage_ranged(rq)) {
        cfcost_usage_days(rq, cfcost_usage_read_days);
        return;
    }

    cfcost_req_phase(rq, cfcost_usage_on_hash, cfcost_usage_answer);
    cfcost_req_cmd(rq, "HGETALL " CFCOST_ROLLUP_PREFIX "%s", u->scope);
    cfcost_req_go(rq);
}


/* ---- /api/usage/timeseries ---------------------------------------------- */


/* A bucket's ordinal: consecutive buckets have consecutive ordinals. */
static int64_t
cfcost_bucket_ord(int bucket, int64_t day)
{
    int64_t   y;
    unsigned  m, d;

    switch (bucket) {
    case CFCOST_BUCKET_WEEK:
        return (cfcost_week_start(day) + 3) / 7;

    case CFCOST_BUCKET_MONTH:
        cfcost_civil_from_days(day, &y, &m, &d);
        return y * 12 + (int64_t) m - 1;

    default:
        return day;
    }
}


/* The first day of the bucket with ordinal ord. */
static int64_t
cfcost_bucket_start(int bucket, int64_t ord)
{
    switch (bucket) {
    case CFCOST_BUCKET_WEEK:
        return ord * 7 - 3;

    case CFCOST_BUCKET_MONTH:
        return cfcost_days_from_civil(ord / 12, (unsigned) (ord % 12) + 1, 1);

    default:
        return ord;
    }
}


static void
cfcost_ts_answer(cfcost_req_t *rq)
{
    size_t                i;
    int64_t               lo, hi, ord, n;
    char                  day[CFCOST_DATE_LEN + 1];
    cfcost_buf_t          b;
    cfcost_totals_t      *pts;
    cfcost_usage_ctx_t   *u = rq->ctx;

    memset(&b, 0, sizeof(b));

    /* dense over the range asked; an open end stops at the data */
    n = 0;
    lo = 0;

    if (u->ndays > 0
        || (cfcost_req_arg(rq, "from") && cfcost_req_arg(rq, "to")))
    {
        lo = cfcost_req_arg(rq, "from") ? u->from : u->days[0];
        hi = cfcost_req_arg(rq, "to") ? u->to : u->days[u->ndays - 1];

        lo = cfcost_bucket_ord(u->bucket, lo);
        hi = cfcost_bucket_ord(u->bucket, hi);
        n = (hi >= lo) ? hi - lo + 1 : 0;
    }

    if (n > CFCOST_TS_MAX_POINTS) {
        cfcost_req_error(rq, 400, "range too long for this bucket: narrow "
                         "from/to or use a larger bucket");
        return;
    }

    pts = calloc(n > 0 ? (size_t) n : 1, sizeof(cfcost_totals_t));
    if (pts == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    for (i = 0; i < u->ndays; i++) {
        ord = cfcost_bucket_ord(u->bucket, u->days[i]) - lo;
        if (ord >= 0 && ord < n) {
            cfcost_totals_add(&pts[ord], &u->day_totals[i]);
        }
    }

    cfcost_buf_printf(&b, "{\"bucket\":\"%s\",\"points\":[",
                      cfcost_bucket_names[u->bucket]);

    for (ord = 0; ord < n; ord++) {
        cfcost_date_str(day, cfcost_bucket_start(u->bucket, lo + ord));
        cfcost_buf_printf(&b, "%s{\"start\":\"%s\",\"requests\":",
                          ord ? "," : "", day);
        cfcost_buf_u64(&b, pts[ord].requests);
        cfcost_buf_str(&b, ",\"input_tokens\":");
        cfcost_buf_u64(&b, pts[ord].input);
        cfcost_buf_str(&b, ",\"output_tokens\":");
        cfcost_buf_u64(&b, pts[ord].output);
        cfcost_buf_str(&b, ",\"cached_tokens\":");
        cfcost_buf_u64(&b, pts[ord].cached);
        cfcost_buf_str(&b, ",\"tokens\":");
        cfcost_buf_u64(&b, cfcost_sat_add(pts[ord].input, pts[ord].output));
        cfcost_buf_str(&b, ",\"cost_usd\":");
        cfcost_json_money(&b, pts[ord].usd, pts[ord].pusd);
        cfcost_buf_str(&b, "}");
    }

    free(pts);

    cfcost_buf_str(&b, "],");
    cfcost_usage_echo(rq, &b);
    cfcost_buf_str(&b, "}\n");

    cfcost_req_send(rq, 200, NULL, &b);
}


static void
cfcost_ts_on_day(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    size_t               k;
    uint64_t             v;
    cfcost_usage_ctx_t  *u = rq->ctx;

    static const char  *fields[] = {
        CFCOST_ROLLUP_F_REQUESTS, CFCOST_ROLLUP_F_INPUT,
        CFCOST_ROLLUP_F_OUTPUT, CFCOST_ROLLUP_F_CACHED,
        CFCOST_ROLLUP_F_COST_USD, CFCOST_ROLLUP_F_COST
    };

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "day rollup")
        || r->type != REDIS_REPLY_ARRAY || slot >= u->ndays)
    {
        return;
    }

    for (k = 0; k < r->elements && k < 6; k++) {
        if (r->element[k]->type == REDIS_REPLY_STRING
            && cfcost_u64_parse(r->element[k]->str,
                                (size_t) r->element[k]->len, INT64_MAX,
                                &v) == 0)
        {
            cfcost_totals_field(&u->day_totals[slot], fields[k],
                                strlen(fields[k]), v);
        }
    }
}


static void
cfcost_ts_read_days(cfcost_req_t *rq)
{
    size_t               i;
    char                 day[CFCOST_DATE_LEN + 1];
    cfcost_usage_ctx_t  *u = rq->ctx;

    u->day_totals = calloc(u->ndays ? u->ndays : 1, sizeof(cfcost_totals_t));
    if (u->day_totals == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    cfcost_req_phase(rq, cfcost_ts_on_day, cfcost_ts_answer);

    for (i = 0; i < u->ndays; i++) {
        cfcost_date_str(day, u->days[i]);
        cfcost_req_cmd(rq, "HMGET " CFCOST_ROLLUP_DAY_PREFIX "%s:%s "
                       CFCOST_ROLLUP_F_REQUESTS " " CFCOST_ROLLUP_F_INPUT " "
                       CFCOST_ROLLUP_F_OUTPUT " " CFCOST_ROLLUP_F_CACHED " "
                       CFCOST_ROLLUP_F_COST_USD " " CFCOST_ROLLUP_F_COST, day,
                       u->scope);
    }

    cfcost_req_go(rq);
}


void
cfcost_route_timeseries(cfcost_req_t *rq)
{
    int                  i;
    const char          *bucket;
    cfcost_usage_ctx_t  *u;

    u = cfcost_usage_ctx(rq);
    if (u == NULL) {
        return;
    }

    bucket = cfcost_req_arg(rq, "bucket");
    u->bucket = -1;

    for (i = 0; i < 3; i++) {
        if (bucket == NULL || strcmp(bucket, cfcost_bucket_names[i]) == 0) {
            u->bucket = bucket ? i : CFCOST_BUCKET_DAY;
            break;
        }
    }

    if (u->bucket < 0) {
        cfcost_req_error(rq, 400, "bucket: want day, week or month");
        return;
    }

    /* a range given in full is checked before any read */
    if (cfcost_bucket_ord(u->bucket, u->to)
        - cfcost_bucket_ord(u->bucket, u->from) >= CFCOST_TS_MAX_POINTS
        && cfcost_req_arg(rq, "from") && cfcost_req_arg(rq, "to"))
    {
        cfcost_req_error(rq, 400, "range too long for this bucket: narrow "
                         "from/to or use a larger bucket");
        return;
    }

    cfcost_usage_days(rq, cfcost_ts_read_days);
}
