/*
 * Reading rollup hashes (common/cfcost_schema.h) back into numbers: the
 * totals and the per-model rows of one or many HGETALL replies, summed in
 * integers.  Used by /api/usage, /api/usage/timeseries and /metrics.
 */

#ifndef CFCOST_AGG_ROLLUP_H
#define CFCOST_AGG_ROLLUP_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


/* a cost is usd whole dollars plus pusd picodollars (< 10^12 normalized) */
typedef struct {
    uint64_t  requests;
    uint64_t  input;
    uint64_t  output;
    uint64_t  cached;
    uint64_t  usd;
    uint64_t  pusd;
} cfcost_totals_t;


typedef struct {
    char             *model;    /* NUL-terminated copy, may hold any byte */
    size_t            len;
    cfcost_totals_t   t;
} cfcost_model_row_t;


typedef struct {
    cfcost_totals_t      total;
    cfcost_model_row_t  *models;
    size_t               n;
    size_t               cap;
    size_t               hint;  /* last model found, usually the next one */
    int                  oom;
} cfcost_rollup_t;


/* a + b, or UINT64_MAX when that overflows */
uint64_t cfcost_sat_add(uint64_t a, uint64_t b);

/* Adds src into dst, field by field, saturating; the cost normalized. */
void cfcost_totals_add(cfcost_totals_t *dst, const cfcost_totals_t *src);

/* -1, 0 or 1 as a's cost is below, equal to or above b's. */
int cfcost_totals_cost_cmp(const cfcost_totals_t *a, const cfcost_totals_t *b);

/*
 * Adds v to the field of t named name[0..len) ("requests", "cost_usd",
 * "cost_pusd"...), normalizing the cost.
 * Returns 0, or -1 when the name is not a rollup field.
 */
int cfcost_totals_field(cfcost_totals_t *t, const char *name, size_t len,
    uint64_t v);

/*
 * Adds one HGETALL reply of a rollup hash (a flat field/value array, or
 * nil, or an empty array) into ru: totals and per-model rows.  Fields that
 * are not rollup fields, and values that are not non-negative integers,
 * are ignored.  Returns 0, or -1 when the reply is not an array or memory
 * ran out (ru->oom).
 */
int cfcost_rollup_add_hash(cfcost_rollup_t *ru, const redisReply *r);

/*
 * Sorts ru->models by model name (bytewise).  Then returns a new array of
 * n indexes into ru->models ordered by cost descending, requests
 * descending, name ascending; the caller frees it.  NULL when n is 0 or
 * memory ran out.
 */
size_t *cfcost_rollup_rank(cfcost_rollup_t *ru);

/* Frees the model rows; ru is empty afterwards. */
void cfcost_rollup_free(cfcost_rollup_t *ru);

#endif /* CFCOST_AGG_ROLLUP_H */
