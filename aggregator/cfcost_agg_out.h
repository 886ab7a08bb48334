/*
 * Output of the aggregator: a growable byte buffer and the writers for
 * JSON, CSV and the Prometheus text format.  No libevent: the HTTP side
 * hands the finished bytes to evbuffer, the unit tests check them alone.
 *
 * Every writer is a no-op once the buffer ran out of memory; the caller
 * checks buf->oom once, at the end.
 */

#ifndef CFCOST_AGG_OUT_H
#define CFCOST_AGG_OUT_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      oom;
} cfcost_buf_t;


/* Appends p[0..n).  Returns 0, or -1 (and sets oom) when out of memory. */
int cfcost_buf_add(cfcost_buf_t *b, const void *p, size_t n);

/* Appends a NUL-terminated string. */
int cfcost_buf_str(cfcost_buf_t *b, const char *s);

/* Appends v in decimal. */
int cfcost_buf_u64(cfcost_buf_t *b, uint64_t v);

/* Appends printf output. */
int cfcost_buf_printf(cfcost_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Empties the buffer, keeping its memory. */
void cfcost_buf_reset(cfcost_buf_t *b);

/* Frees the memory; the buffer is empty and usable again. */
void cfcost_buf_free(cfcost_buf_t *b);

/*
 * Appends p[0..n) as a JSON string, quotes included.  Control characters,
 * quote and backslash are escaped; a byte sequence that is not valid UTF-8
 * becomes U+FFFD, so the output is always valid JSON.
 */
int cfcost_json_str(cfcost_buf_t *b, const char *p, size_t n);

/* Appends a JSON string, or null when s is NULL. */
int cfcost_json_strz(cfcost_buf_t *b, const char *s);

/* Appends a cost in picodollars as a JSON number with exactly 6 decimals
 * (cfcost_usd6: rounded half up, once). */
int cfcost_json_usd(cfcost_buf_t *b, uint64_t pusd);

/*
 * Writes usd dollars + pusd picodollars (any pusd) rounded half up to 6
 * decimals into buf (32 bytes), exactly as cfcost_usd6 would write the
 * sum, also beyond 2^64 picodollars.  Returns the length.
 */
size_t cfcost_money_usd6(char *buf, uint64_t usd, uint64_t pusd);

/* Appends cfcost_money_usd6() as a JSON number. */
int cfcost_json_money(cfcost_buf_t *b, uint64_t usd, uint64_t pusd);

/*
 * Appends p[0..n) as one CSV field (RFC 4180): quoted when it holds a
 * comma, quote, CR or LF, or starts or ends with a space; quotes doubled.
 */
int cfcost_csv_field(cfcost_buf_t *b, const char *p, size_t n);

/* Appends p[0..n) as a quoted Prometheus label value: backslash, quote
 * and newline escaped, bytes that are not UTF-8 replaced by U+FFFD. */
int cfcost_prom_label(cfcost_buf_t *b, const char *p, size_t n);

#endif /* CFCOST_AGG_OUT_H */
