/*
 * Pure helpers of the aggregator: UTC calendar arithmetic, strict number
 * parsing, stream ids and log-index members.  No libevent, no Redis: the
 * unit tests include the .c directly.
 *
 * A "day" is a count of days since 1970-01-01 (UTC), negative before it.
 */

#ifndef CFCOST_AGG_UTIL_H
#define CFCOST_AGG_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "cfcost_schema.h"


#define CFCOST_DAY_MS            86400000LL
#define CFCOST_DAY_MIN           0          /* 1970-01-01 */
#define CFCOST_DAY_MAX           2932896    /* 9999-12-31 */
#define CFCOST_DATE_LEN          10         /* "YYYY-MM-DD" */
#define CFCOST_ISO_LEN           24         /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
#define CFCOST_STREAM_ID_MAX     41         /* "<u64>-<u64>" */
#define CFCOST_MEMBER_MAX        (15 + 1 + CFCOST_WRITER_ID_LEN + 1         \
                                  + CFCOST_STREAM_ID_MAX + 5)   /* ".<k>" */


/* Days since 1970-01-01 of a proleptic Gregorian date (m 1..12, d 1..31). */
int64_t cfcost_days_from_civil(int64_t y, unsigned m, unsigned d);

/* The inverse of cfcost_days_from_civil(). */
void cfcost_civil_from_days(int64_t day, int64_t *y, unsigned *m,
    unsigned *d);

/*
 * Parses exactly "YYYY-MM-DD" (s[0..len)), a real calendar date between
 * 1970-01-01 and 9999-12-31.  Returns 0 and sets *day, or -1.
 */
int cfcost_date_parse(const char *s, size_t len, int64_t *day);

/* Writes day as "YYYY-MM-DD" into buf (>= 11 bytes).  Returns 10. */
size_t cfcost_date_str(char *buf, int64_t day);

/* Writes ms (unix, UTC) as "YYYY-MM-DDTHH:MM:SS.mmmZ" (buf >= 25 bytes).
 * Returns the length. */
size_t cfcost_iso_ms(char *buf, int64_t ms);

/* The day holding unix time ms (floor division). */
int64_t cfcost_day_of_ms(int64_t ms);

/* The Monday on or before day. */
int64_t cfcost_week_start(int64_t day);

/* The first of day's month. */
int64_t cfcost_month_start(int64_t day);

/* The first of the month after the month of day. */
int64_t cfcost_next_month(int64_t day);

/*
 * Parses s[0..len) as a plain decimal integer (digits only, no sign, no
 * spaces, at least one digit) not above max.  Returns 0 and sets *v, or -1.
 */
int cfcost_u64_parse(const char *s, size_t len, uint64_t max, uint64_t *v);

/* Writes v in decimal into buf (>= 21 bytes).  Returns the length. */
size_t cfcost_u64_str(char *buf, uint64_t v);

/*
 * The wait before the next reconnect when failures attempts failed in a
 * row (0: the first retry): min_ms doubled per failure, at most max_ms,
 * then jittered to 75%..125% by rnd (any number >= 0, e.g. random()).
 */
unsigned cfcost_backoff_ms(unsigned failures, unsigned min_ms,
    unsigned max_ms, long rnd);

/*
 * Parses a complete stream id "<ms>-<seq>" from s[0..len).  Returns 0 and
 * sets *ms and *seq, or -1.
 */
int cfcost_stream_id_parse(const char *s, size_t len, uint64_t *ms,
    uint64_t *seq);

/*
 * The stream id s[0..len) as the scripts' pad() writes it, <ms><seq> in
 * 20 digits each, so that ids compare as strings; and a NUL.  buf holds
 * 41 bytes.  Returns 40, or 0 (buf "") when s is no stream id.
 */
size_t cfcost_stream_id_pad(char *buf, const char *s, size_t len);

/*
 * 1 when s[0..len) is a writer id: "w" and 16 lowercase hex digits.
 */
int cfcost_writer_valid(const char *s, size_t len);

/*
 * Writes the record stream key of a writer, "cfcost:rec:{<writer>}", into
 * buf (>= CFCOST_RECORD_STREAM_LEN + 1 bytes).  Returns the length.  The
 * writer must be valid.
 */
size_t cfcost_stream_key(char *buf, const char *writer);

/*
 * Writes the log-index member of record k of an entry, "<ts_ms, 15
 * digits>:<writer>:<id>", followed by ".<k>" when k > 0, into buf (>=
 * CFCOST_MEMBER_MAX + 1 bytes).  Returns the length, or 0 when ts_ms is
 * negative or too large, the writer is not a writer id, id is not a
 * stream id or k is not below CFCOST_R_BATCH_MAX.  Members sort by time,
 * then writer, then id.
 */
size_t cfcost_member_make(char *buf, int64_t ts_ms, const char *writer,
    size_t wlen, const char *id, size_t idlen, unsigned k);

/*
 * Checks that m[0..len) is a well-formed log-index member (as a cursor
 * from a client must be).  Returns 0 and points writer and id (lengths
 * CFCOST_WRITER_ID_LEN and *idlen, without ".<k>") into m, and sets *k
 * (0 without ".<k>"; k may be NULL), or -1.
 */
int cfcost_member_parse(const char *m, size_t len, const char **writer,
    const char **id, size_t *idlen, unsigned *k);

/* Writes the 15-digit, zero-padded form of ts_ms (>= 0) into buf (16). */
size_t cfcost_member_ts(char *buf, int64_t ts_ms);

#endif /* CFCOST_AGG_UTIL_H */
