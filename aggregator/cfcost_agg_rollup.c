/*
 * Rollup hashes back into integers.  See cfcost_agg_rollup.h.
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_rollup.h"


#define cfcost_is(name, len, lit)                                            \
    ((len) == sizeof(lit) - 1 && memcmp((name), (lit), (len)) == 0)


uint64_t
cfcost_sat_add(uint64_t a, uint64_t b)
{
    return (a > UINT64_MAX - b) ? UINT64_MAX : a + b;
}


/* Moves whole dollars out of t->pusd into t->usd. */
static void
cfcost_totals_norm(cfcost_totals_t *t)
{
    if (t->pusd >= CFCOST_PUSD_PER_USD) {
        t->usd = cfcost_sat_add(t->usd, t->pusd / CFCOST_PUSD_PER_USD);
        t->pusd %= CFCOST_PUSD_PER_USD;
    }
}


void
cfcost_totals_add(cfcost_totals_t *dst, const cfcost_totals_t *src)
{
    dst->requests = cfcost_sat_add(dst->requests, src->requests);
    dst->input = cfcost_sat_add(dst->input, src->input);
    dst->output = cfcost_sat_add(dst->output, src->output);
    dst->cached = cfcost_sat_add(dst->cached, src->cached);
    dst->usd = cfcost_sat_add(dst->usd, src->usd);
    dst->pusd = cfcost_sat_add(dst->pusd, src->pusd);
    cfcost_totals_norm(dst);
}


int
cfcost_totals_cost_cmp(const cfcost_totals_t *a, const cfcost_totals_t *b)
{
    if (a->usd != b->usd) {
        return a->usd < b->usd ? -1 : 1;
    }

    if (a->pusd != b->pusd) {
        return a->pusd < b->pusd ? -1 : 1;
    }

    return 0;
}


int
cfcost_totals_field(cfcost_totals_t *t, const char *name, size_t len,
    uint64_t v)
{
    uint64_t  *f;

    if (cfcost_is(name, len, CFCOST_ROLLUP_F_REQUESTS)) {
        f = &t->requests;

    } else if (cfcost_is(name, len, CFCOST_ROLLUP_F_INPUT)) {
        f = &t->input;

    } else if (cfcost_is(name, len, CFCOST_ROLLUP_F_OUTPUT)) {
        f = &t->output;

    } else if (cfcost_is(name, len, CFCOST_ROLLUP_F_CACHED)) {
        f = &t->cached;

    } else if (cfcost_is(name, len, CFCOST_ROLLUP_F_COST_USD)) {
        f = &t->usd;

    } else if (cfcost_is(name, len, CFCOST_ROLLUP_F_COST)) {
        f = &t->pusd;

    } else {
        return -1;
    }

    *f = cfcost_sat_add(*f, v);
    cfcost_totals_norm(t);

    return 0;
}


/* Returns the row of model m[0..len), adding it when new; NULL on OOM. */
static cfcost_model_row_t *
cfcost_rollup_model(cfcost_rollup_t *ru, const char *m, size_t len)
{
    size_t               i, cap;
    cfcost_model_row_t  *row, *rows;

    for (i = 0; i < ru->n; i++) {
        row = &ru->models[(ru->hint + i) % ru->n];

        if (row->len == len && memcmp(row->model, m, len) == 0) {
            ru->hint = (ru->hint + i) % ru->n;
            return row;
        }
    }

    if (ru->n == ru->cap) {
        cap = ru->cap ? ru->cap * 2 : 16;
        rows = realloc(ru->models, cap * sizeof(cfcost_model_row_t));
        if (rows == NULL) {
            goto failed;
        }
        ru->models = rows;
        ru->cap = cap;
    }

    row = &ru->models[ru->n];
    memset(row, 0, sizeof(cfcost_model_row_t));

    row->model = malloc(len + 1);
    if (row->model == NULL) {
        goto failed;
    }

    memcpy(row->model, m, len);
    row->model[len] = '\0';
    row->len = len;

    ru->hint = ru->n;
    ru->n++;

    return row;

failed:

    ru->oom = 1;
    return NULL;
}


/* Adds one field/value pair of a rollup hash.  Returns -1 on OOM only. */
static int
cfcost_rollup_pair(cfcost_rollup_t *ru, const redisReply *f,
    const redisReply *v)
{
    size_t               plen;
    uint64_t             n;
    const char          *colon;
    cfcost_model_row_t  *row;

    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
        || cfcost_u64_parse(v->str, (size_t) v->len, INT64_MAX, &n) != 0)
    {
        return 0;
    }

    plen = sizeof(CFCOST_ROLLUP_F_MODEL) - 1;

    if ((size_t) f->len <= plen
        || memcmp(f->str, CFCOST_ROLLUP_F_MODEL, plen) != 0)
    {
        cfcost_totals_field(&ru->total, f->str, (size_t) f->len, n);
        return 0;
    }

    /* "m:<model>:<field>": the model may hold colons, the field never */
    colon = f->str + f->len - 1;
    while (colon > f->str + plen && *colon != ':') {
        colon--;
    }

    if (colon < f->str + plen || *colon != ':') {
        return 0;
    }

    row = cfcost_rollup_model(ru, f->str + plen,
                              (size_t) (colon - f->str) - plen);
    if (row == NULL) {
        return -1;
    }

    cfcost_totals_field(&row->t, colon + 1,
                        (size_t) (f->str + f->len - colon - 1), n);

    return 0;
}


int
cfcost_rollup_add_hash(cfcost_rollup_t *ru, const redisReply *r)
{
    size_t  i;

    if (r->type == REDIS_REPLY_NIL) {
        return 0;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (cfcost_rollup_pair(ru, r->element[i], r->element[i + 1]) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
cfcost_model_name_cmp(const void *a, const void *b)
{
    int                        c;
    size_t                     n;
    const cfcost_model_row_t  *x = a, *y = b;

    n = x->len < y->len ? x->len : y->len;
    c = memcmp(x->model, y->model, n);

    if (c != 0) {
        return c;
    }

    return (x->len > y->len) - (x->len < y->len);
}


/* qsort has no context argument: the rows being ranked, for the compare */
static const cfcost_model_row_t  *cfcost_rank_rows;


static int
cfcost_model_rank_cmp(const void *a, const void *b)
{
    const cfcost_model_row_t  *x, *y;

    x = &cfcost_rank_rows[*(const size_t *) a];
    y = &cfcost_rank_rows[*(const size_t *) b];

    if (cfcost_totals_cost_cmp(&x->t, &y->t) != 0) {
        return -cfcost_totals_cost_cmp(&x->t, &y->t);
    }

    if (x->t.requests != y->t.requests) {
        return x->t.requests > y->t.requests ? -1 : 1;
    }

    return cfcost_model_name_cmp(x, y);
}


size_t *
cfcost_rollup_rank(cfcost_rollup_t *ru)
{
    size_t   i, *idx;

    if (ru->n == 0) {
        return NULL;
    }

    qsort(ru->models, ru->n, sizeof(cfcost_model_row_t),
          cfcost_model_name_cmp);
    ru->hint = 0;

    idx = malloc(ru->n * sizeof(size_t));
    if (idx == NULL) {
        ru->oom = 1;
        return NULL;
    }

    for (i = 0; i < ru->n; i++) {
        idx[i] = i;
    }

    cfcost_rank_rows = ru->models;
    qsort(idx, ru->n, sizeof(size_t), cfcost_model_rank_cmp);
    cfcost_rank_rows = NULL;

    return idx;
}


void
cfcost_rollup_free(cfcost_rollup_t *ru)
{
    size_t  i;

    for (i = 0; i < ru->n; i++) {
        free(ru->models[i].model);
    }

    free(ru->models);
    memset(ru, 0, sizeof(cfcost_rollup_t));
}
