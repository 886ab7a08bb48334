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
