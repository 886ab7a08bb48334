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


int
cfcost_record_parse(const redisReply *fields, cfcost_record_t *rec)
{
    size_t             i, k;
    const redisReply  *name, *value;

    for (k = 0; k < CFCOST_REC_NFIELDS; k++) {
        rec->f[k].p = "";
        rec->f[k].len = 0;
    }

    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY) {
        return -1;
    }

    if (fields->elements == 2
        && fields->element[0]->type == REDIS_REPLY_STRING
        && fields->element[1]->type == REDIS_REPLY_STRING
        && fields->element[0]->len == sizeof(CFCOST_R_PACKED) - 1
        && memcmp(fields->element[0]->str, CFCOST_R_PACKED,
                  sizeof(CFCOST_R_PACKED) - 1) == 0)
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
