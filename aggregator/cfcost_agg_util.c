/*
 * Pure helpers of the aggregator: calendar, numbers, stream ids, log-index
 * members.  See cfcost_agg_util.h.
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_price.h"
#include "cfcost_agg_util.h"


#define CFCOST_MEMBER_TS_MAX     999999999999999LL     /* 15 digits */


/* Floor division, for days and weeks before the epoch. */
static int64_t
cfcost_floor_div(int64_t a, int64_t b)
{
    int64_t  q;

    q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        q--;
    }

    return q;
}


/* Howard Hinnant's days_from_civil: exact for every proleptic date. */
int64_t
cfcost_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = cfcost_floor_div(y, 400);
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


void
cfcost_civil_from_days(int64_t day, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t   z, era;
    unsigned  doe, yoe, doy, mp;

    z = day + 719468;
    era = cfcost_floor_div(z, 146097);
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t) yoe + era * 400 + (*m <= 2);
}


static int
cfcost_digits(const char *s, size_t n, unsigned *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        *v = *v * 10 + (unsigned) (s[i] - '0');
    }

    return 0;
}


int
cfcost_date_parse(const char *s, size_t len, int64_t *day)
{
    int64_t   dn, yy;
    unsigned  y, m, d, cm, cd;

    if (len != CFCOST_DATE_LEN || s[4] != '-' || s[7] != '-') {
        return -1;
    }

    if (cfcost_digits(s, 4, &y) != 0 || cfcost_digits(s + 5, 2, &m) != 0
        || cfcost_digits(s + 8, 2, &d) != 0)
    {
        return -1;
    }

    if (m < 1 || m > 12 || d < 1 || d > 31) {
        return -1;
    }

    /* a date that does not exist (02-30) comes back as another one */
    dn = cfcost_days_from_civil(y, m, d);
    cfcost_civil_from_days(dn, &yy, &cm, &cd);

    if (yy != (int64_t) y || cm != m || cd != d
        || dn < CFCOST_DAY_MIN || dn > CFCOST_DAY_MAX)
    {
        return -1;
    }

    *day = dn;
    return 0;
}


size_t
cfcost_date_str(char *buf, int64_t day)
{
    int64_t   y;
    unsigned  m, d;

    cfcost_civil_from_days(day, &y, &m, &d);

    if (y < 0 || y > 9999) {
        y = y < 0 ? 0 : 9999;
    }

    /* "%04u-%02u-%02u" by hand: once per record in a batch */
    cfcost_dec_fixed(buf, (uint64_t) y, 4);
    buf[4] = '-';
    cfcost_dec_fixed(buf + 5, m, 2);
    buf[7] = '-';
    cfcost_dec_fixed(buf + 8, d, 2);
    buf[CFCOST_DATE_LEN] = '\0';

    return CFCOST_DATE_LEN;
}


size_t
cfcost_iso_ms(char *buf, int64_t ms)
{
    int64_t  day, rem;

    day = cfcost_floor_div(ms, CFCOST_DAY_MS);
    rem = ms - day * CFCOST_DAY_MS;

    cfcost_date_str(buf, day);

    snprintf(buf + CFCOST_DATE_LEN, CFCOST_ISO_LEN - CFCOST_DATE_LEN + 1,
             "T%02u:%02u:%02u.%03uZ",
             (unsigned) (rem / 3600000), (unsigned) (rem / 60000 % 60),
             (unsigned) (rem / 1000 % 60), (unsigned) (rem % 1000));

    return CFCOST_ISO_LEN;
}


int64_t
cfcost_day_of_ms(int64_t ms)
{
    return cfcost_floor_div(ms, CFCOST_DAY_MS);
}


int64_t
cfcost_week_start(int64_t day)
{
    /* 1970-01-01 was a Thursday: Monday-based weekday is (day + 3) mod 7 */
    return day - (day + 3 - cfcost_floor_div(day + 3, 7) * 7);
}


int64_t
cfcost_month_start(int64_t day)
{
    int64_t   y;
    unsigned  m, d;

    cfcost_civil_from_days(day, &y, &m, &d);

    return cfcost_days_from_civil(y, m, 1);
}


int64_t
cfcost_next_month(int64_t day)
{
    int64_t   y;
    unsigned  m, d;

    cfcost_civil_from_days(day, &y, &m, &d);

    if (m == 12) {
        return cfcost_days_from_civil(y + 1, 1, 1);
    }

    return cfcost_days_from_civil(y, m + 1, 1);
}


int
cfcost_u64_parse(const char *s, size_t len, uint64_t max, uint64_t *v)
{
    size_t    i;
    uint64_t  n, c;

    if (len == 0 || len > 20) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        c = (uint64_t) (s[i] - '0');

        if (n > (max - c) / 10) {
            return -1;
        }

        n = n * 10 + c;
    }

    *v = n;
    return 0;
}


size_t
cfcost_u64_str(char *buf, uint64_t v)
{
    char  *p;

    p = cfcost_dec(buf, v);
    *p = '\0';

    return (size_t) (p - buf);
}


unsigned
cfcost_backoff_ms(unsigned failures, unsigned min_ms, unsigned max_ms,
    long rnd)
{
    unsigned  ms, shift;

    shift = failures < 6 ? failures : 6;
    ms = min_ms << shift;
    if (ms > max_ms) {
        ms = max_ms;
    }

    return ms * 3 / 4 + (unsigned) (rnd % (ms / 2 + 1));
}


int
cfcost_stream_id_parse(const char *s, size_t len, uint64_t *ms,
    uint64_t *seq)
{
    const char  *dash;

    dash = memchr(s, '-', len);
    if (dash == NULL) {
        return -1;
    }

    if (cfcost_u64_parse(s, (size_t) (dash - s), UINT64_MAX, ms) != 0) {
        return -1;
    }

    return cfcost_u64_parse(dash + 1, len - (size_t) (dash - s) - 1,
                            UINT64_MAX, seq);
}


size_t
cfcost_member_ts(char *buf, int64_t ts_ms)
{
    /* "%015lld" of 0 <= ts_ms <= CFCOST_MEMBER_TS_MAX (15 digits) */
    cfcost_dec_fixed(buf, (uint64_t) (ts_ms < 0 ? 0 : ts_ms), 15);
    buf[15] = '\0';

    return 15;
}


int
cfcost_writer_valid(const char *s, size_t len)
{
    size_t  i;

    if (len != CFCOST_WRITER_ID_LEN || s[0] != CFCOST_WRITER_TAG[0]) {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


size_t
cfcost_stream_id_pad(char *buf, const char *s, size_t len)
{
    uint64_t  ms, seq;

    if (cfcost_stream_id_parse(s, len, &ms, &seq) != 0) {
        buf[0] = '\0';
        return 0;
    }

    cfcost_dec_fixed(cfcost_dec_fixed(buf, ms, 20), seq, 20)[0] = '\0';

    return 40;
}


size_t
cfcost_stream_key(char *buf, const char *writer)
{
    return (size_t) snprintf(buf, CFCOST_RECORD_STREAM_LEN + 1, "%s%.*s%s",
                             CFCOST_RECORD_STREAM_PREFIX,
                             (int) CFCOST_WRITER_ID_LEN, writer,
                             CFCOST_RECORD_STREAM_SUFFIX);
}


size_t
cfcost_member_make(char *buf, int64_t ts_ms, const char *writer, size_t wlen,
    const char *id, size_t idlen, unsigned k)
{
    char      *p;
    uint64_t   ms, seq;

    if (ts_ms < 0 || ts_ms > CFCOST_MEMBER_TS_MAX
        || !cfcost_writer_valid(writer, wlen)
        || idlen > CFCOST_STREAM_ID_MAX
        || cfcost_stream_id_parse(id, idlen, &ms, &seq) != 0
        || k >= CFCOST_R_BATCH_MAX)
    {
        return 0;
    }

    p = buf + cfcost_member_ts(buf, ts_ms);
    *p++ = ':';
    memcpy(p, writer, wlen);
    p += wlen;
    *p++ = ':';
    memcpy(p, id, idlen);
    p += idlen;

    if (k > 0) {
        p += snprintf(p, 6, ".%u", k);
    }

    *p = '\0';

    return (size_t) (p - buf);
}


int
cfcost_member_parse(const char *m, size_t len, const char **writer,
    const char **id, size_t *idlen, unsigned *k)
{
    size_t    i, head, end;
    unsigned  rk;
    uint64_t  ms, seq;

    head = 15 + 1 + CFCOST_WRITER_ID_LEN + 1;

    if (len < head + 3 || len > CFCOST_MEMBER_MAX || m[15] != ':'
        || m[head - 1] != ':'
        || !cfcost_writer_valid(m + 16, CFCOST_WRITER_ID_LEN))
    {
        return -1;
    }

    for (i = 0; i < 15; i++) {
        if (m[i] < '0' || m[i] > '9') {
            return -1;
        }
    }

    /* ".<k>": 1 .. CFCOST_R_BATCH_MAX - 1, no leading zero */
    rk = 0;
    end = len;

    for (i = len; i > head && m[i - 1] >= '0' && m[i - 1] <= '9'; i--) {
        /* void */
    }

    if (i > head && m[i - 1] == '.') {
        if (i == len || m[i] == '0' || len - i > 4) {
            return -1;
        }

        end = i - 1;                    /* the id ends at the dot */

        for ( /* void */ ; i < len; i++) {
            rk = rk * 10 + (unsigned) (m[i] - '0');
        }

        if (rk >= CFCOST_R_BATCH_MAX) {
            return -1;
        }
    }

    if (cfcost_stream_id_parse(m + head, end - head, &ms, &seq) != 0) {
        return -1;
    }

    *writer = m + 16;
    *id = m + head;
    *idlen = end - head;

    if (k != NULL) {
        *k = rk;
    }

    return 0;
}
