/*
 * Usage records inside hiredis replies.  See cfcost_agg_record.h.
 */

#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_record.h"


/* the names, with their lengths: a batch compares some 25 x 14 per record */
#define cfcost_rec_name(n)  { n, sizeof(n) - 1 }

static const struct {
    const char  *name;
    size_t       len;
} cfcost_rec_names[CFCOST_REC_NFIELDS] = {
    cfcost_rec_name(CFCOST_R_REQUEST_ID),
    cfcost_rec_name(CFCOST_R_TS_MS),
    cfcost_rec_name(CFCOST_R_KEY_ID),
    cfcost_rec_name(CFCOST_R_USER),
    cfcost_rec_name(CFCOST_R_MODEL),
    cfcost_rec_name(CFCOST_R_ROUTE),
    cfcost_rec_name(CFCOST_R_STATUS),
    cfcost_rec_name(CFCOST_R_INPUT_TOKENS),
    cfcost_rec_name(CFCOST_R_OUTPUT_TOKENS),
    cfcost_rec_name(CFCOST_R_CACHED_TOKENS),
    cfcost_rec_name(CFCOST_R_COST),
    cfcost_rec_name(CFCOST_R_LATENCY_US),
    cfcost_rec_name(CFCOST_R_FLAGS),
    cfcost_rec_name(CFCOST_R_ERROR),
};


/* where each field of cfcost_rec_field_e is in a schema 2 record */
static const cfcost_packed_e  cfcost_rec_packed[CFCOST_REC_NFIELDS] = {
    CFCOST_P_REQUEST_ID, CFCOST_P_TS_MS, CFCOST_P_KEY_ID, CFCOST_P_USER,
    CFCOST_P_MODEL, CFCOST_P_ROUTE, CFCOST_P_STATUS, CFCOST_P_INPUT_TOKENS,
    CFCOST_P_OUTPUT_TOKENS, CFCOST_P_CACHED_TOKENS, CFCOST_P_COST,
    CFCOST_P_LATENCY_US, CFCOST_P_FLAGS, CFCOST_P_ERROR
};


/*
 * A schema 2 record: netstrings, the first the version.  Fields past the
 * last one known are ignored (a later version).  Returns 0, or 1 when
 * the value is not that (no gateway writes it so): the fields read up to
 * there are kept, the rest read as empty.
 */
static int
cfcost_record_unpack(const char *p, size_t len, cfcost_record_t *rec)
{
    int            rc;
    size_t         k, n;
    const char    *end = p + len;
    cfcost_span_t  f[CFCOST_P_NFIELDS];

    rc = 0;

    for (k = 0; k < CFCOST_P_NFIELDS; k++) {
        f[k].p = "";
        f[k].len = 0;
    }

    for (k = 0; k < CFCOST_P_NFIELDS && p < end; k++) {
        n = 0;
        while (p < end && *p >= '0' && *p <= '9' && n < 1000000) {
            n = n * 10 + (size_t) (*p++ - '0');
        }

        if (p == end || *p++ != ':' || (size_t) (end - p) < n + 1
            || p[n] != ',')
        {
            rc = 1;
            break;
        }

        f[k].p = p;
        f[k].len = n;
        p += n + 1;
    }

    if (k <= CFCOST_P_NEURONS) {
        rc = 1;                     /* short of schema 2's fields */
    }

    for (k = 0; k < CFCOST_REC_NFIELDS; k++) {
        rec->f[k] = f[cfcost_rec_packed[k]];
    }

    return rc;
}


/* fields is [name, value] with that name */
static int
cfcost_record_one(const redisReply *fields, const char *name, size_t len)
{
    return fields->elements == 2
           && fields->element[0]->type == REDIS_REPLY_STRING
           && fields->element[1]->type == REDIS_REPLY_STRING
           && (size_t) fields->element[0]->len == len
           && memcmp(fields->element[0]->str, name, len) == 0;
}


/*
 * The next netstring of a batch value at *p (before end): its bytes.
 * Returns 0 and moves *p past it, or -1 when there is none well framed.
 */
static int
cfcost_record_next(const char **p, const char *end, cfcost_span_t *s)
{
    size_t       n, digits;
    const char  *q = *p;

    n = 0;
    digits = 0;

    while (q < end && *q >= '0' && *q <= '9' && digits < 10) {
        n = n * 10 + (size_t) (*q++ - '0');
        digits++;
    }

    if (digits == 0 || q == end || *q++ != ':' || (size_t) (end - q) < n + 1
        || q[n] != ',')
    {
        return -1;
    }

    s->p = q;
    s->len = n;
    *p = q + n + 1;

    return 0;
}


int
cfcost_record_count(const redisReply *fields, size_t *n)
{
    const char     *p, *end;
    cfcost_span_t   s;

    *n = 0;

    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    if (!cfcost_record_one(fields, CFCOST_R_BATCH,
                           sizeof(CFCOST_R_BATCH) - 1))
    {
        *n = 1;
        return 0;
    }

    p = fields->element[1]->str;
    end = p + fields->element[1]->len;

    while (p < end && *n < CFCOST_R_BATCH_MAX) {
        if (cfcost_record_next(&p, end, &s) != 0) {
            return 1;
        }
        (*n)++;
    }

    return (p == end && *n > 0) ? 0 : 1;
}


int
cfcost_record_parse(const redisReply *fields, size_t k, cfcost_record_t *rec)
{
    size_t             i;
    const char        *p, *end;
    cfcost_span_t      s;
    const redisReply  *name, *value;

    for (i = 0; i < CFCOST_REC_NFIELDS; i++) {
        rec->f[i].p = "";
        rec->f[i].len = 0;
    }

    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    if (cfcost_record_one(fields, CFCOST_R_BATCH, sizeof(CFCOST_R_BATCH) - 1))
    {
        p = fields->element[1]->str;
        end = p + fields->element[1]->len;

        for (i = 0; i <= k; i++) {
            if (i == CFCOST_R_BATCH_MAX
                || cfcost_record_next(&p, end, &s) != 0)
            {
                return -1;
            }
        }

        return cfcost_record_unpack(s.p, s.len, rec);
    }

    if (k != 0) {
        return -1;
    }

    if (cfcost_record_one(fields, CFCOST_R_PACKED,
                          sizeof(CFCOST_R_PACKED) - 1))
    {
        return cfcost_record_unpack(fields->element[1]->str,
                                    (size_t) fields->element[1]->len, rec);
    }

    for (i = 0; i + 1 < fields->elements; i += 2) {
        name = fields->element[i];
        value = fields->element[i + 1];

        if (name->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        for (k = 0; k < CFCOST_REC_NFIELDS; k++) {
            if ((size_t) name->len == cfcost_rec_names[k].len
                && memcmp(name->str, cfcost_rec_names[k].name, name->len)
                   == 0)
            {
                rec->f[k].p = value->str;
                rec->f[k].len = (size_t) value->len;
                break;
            }
        }
    }

    return 0;
}


uint64_t
cfcost_record_u64(const cfcost_record_t *rec, cfcost_rec_field_e f, int *bad)
{
    uint64_t  v;

    if (rec->f[f].len == 0) {
        return 0;
    }

    if (cfcost_u64_parse(rec->f[f].p, rec->f[f].len, INT64_MAX, &v) != 0) {
        if (bad != NULL) {
            *bad = 1;
        }
        return 0;
    }

    return v;
}


int64_t
cfcost_record_ts(const cfcost_record_t *rec, const char *id, size_t idlen)
{
    int       bad;
    uint64_t  ts, ms, seq;

    bad = 0;
    ts = cfcost_record_u64(rec, CFCOST_REC_TS_MS, &bad);

    if (!bad && rec->f[CFCOST_REC_TS_MS].len > 0) {
        return (int64_t) ts;
    }

    if (cfcost_stream_id_parse(id, idlen, &ms, &seq) == 0
        && ms <= INT64_MAX)
    {
        return (int64_t) ms;
    }

    return 0;
}
