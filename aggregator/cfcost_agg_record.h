/*
 * A usage record as the stream holds it (common/cfcost_schema.h): the
 * fields the aggregator reads, located inside a hiredis reply without
 * copying.  Valid as long as the reply is.
 */

#ifndef CFCOST_AGG_RECORD_H
#define CFCOST_AGG_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


typedef enum {
    CFCOST_REC_REQUEST_ID = 0,
    CFCOST_REC_TS_MS,
    CFCOST_REC_KEY_ID,
    CFCOST_REC_USER,
    CFCOST_REC_MODEL,
    CFCOST_REC_ROUTE,
    CFCOST_REC_STATUS,
    CFCOST_REC_INPUT,
    CFCOST_REC_OUTPUT,
    CFCOST_REC_CACHED,
    CFCOST_REC_COST,
    CFCOST_REC_LATENCY,
    CFCOST_REC_FLAGS,
    CFCOST_REC_ERROR,
    CFCOST_REC_NFIELDS
} cfcost_rec_field_e;


typedef struct {
    const char  *p;             /* "" when the record lacks the field */
    size_t       len;
} cfcost_span_t;


typedef struct {
    cfcost_span_t  f[CFCOST_REC_NFIELDS];
} cfcost_record_t;


/*
 * How many records one entry's field/value array holds: 1 for a record
 * (schema 1 or 2), the records of a batch entry (CFCOST_R_BATCH, at most
 * CFCOST_R_BATCH_MAX).  Returns 0 and sets *n; 1 when a batch's framing is
 * broken (*n counts the records before the break; 0 when the entry holds
 * nothing else); -1 when fields is not an array (a deleted entry reads as
 * nil: *n is 0).
 */
int cfcost_record_count(const redisReply *fields, size_t *n);

/*
 * Locates the fields of record k (from 0; of those cfcost_record_count
 * counts) of one entry's field/value array: schema 2 (one packed field,
 * cfcost_schema.h), a batch of them, or 1 (named pairs).  Returns 0; 1
 * when the packed record is malformed (what could be read is, the rest
 * reads as empty); -1 when fields is not an array or has no record k.
 */
int cfcost_record_parse(const redisReply *fields, size_t k,
    cfcost_record_t *rec);

/*
 * The field as an integer (<= INT64_MAX).  Missing or empty is 0; anything
 * else that is not a plain decimal is 0 and sets *bad (when bad != NULL).
 */
uint64_t cfcost_record_u64(const cfcost_record_t *rec, cfcost_rec_field_e f,
    int *bad);

/*
 * The record's time: ts_ms when it is a valid integer, else the time part
 * of the stream id id[0..idlen), else 0.
 */
int64_t cfcost_record_ts(const cfcost_record_t *rec, const char *id,
    size_t idlen);

#endif /* CFCOST_AGG_RECORD_H */
