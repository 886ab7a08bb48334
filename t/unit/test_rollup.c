/*
 * Unit tests for the aggregator's pure parts: UTC calendar arithmetic and
 * buckets, strict number parsing, stream ids and log-index members, the
 * JSON / CSV / Prometheus writers, money beyond 2^64 picodollars, reading
 * rollup hashes back (totals, per-model rows, carries, ranking) and
 * locating record fields.
 *
 * The aggregator's sources are included directly, so this builds with the
 * same line as every unit test (no libevent needed):
 *
 *   cc -Icommon t/unit/test_rollup.c common/cfcost_price.c ... -lhiredis
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../aggregator/cfcost_agg_util.c"
#include "../../aggregator/cfcost_agg_out.c"
#include "../../aggregator/cfcost_agg_rollup.c"
#include "../../aggregator/cfcost_agg_record.c"

#include "tap.h"


/* ---- fake hiredis replies ----------------------------------------------- */


static redisReply  pool[256];
static redisReply *ptrs[256];
static size_t      npool;


static redisReply *
str_reply(const char *s)
{
    redisReply  *r = &pool[npool++];

    memset(r, 0, sizeof(*r));
    r->type = REDIS_REPLY_STRING;
    r->str = (char *) s;
    r->len = strlen(s);

    return r;
}


/* An array reply of n NUL-terminated strings. */
static redisReply *
array_reply(const char **s, size_t n)
{
    size_t       i, base;
    redisReply  *a;

    base = npool;
    for (i = 0; i < n; i++) {
        ptrs[base + i] = str_reply(s[i]);
    }

    a = &pool[npool++];
    memset(a, 0, sizeof(*a));
    a->type = REDIS_REPLY_ARRAY;
    a->elements = n;
    a->element = &ptrs[base];

    return a;
}


/* ---- calendar ----------------------------------------------------------- */


static int64_t
day(const char *s)
{
    int64_t  d;

    if (cfcost_date_parse(s, strlen(s), &d) != 0) {
        return -999999;
    }

    return d;
}


static const char *
date(int64_t d)
{
    static char  buf[4][16];
    static int   k;

    k = (k + 1) % 4;
    cfcost_date_str(buf[k], d);

    return buf[k];
}


static void
test_calendar(void)
{
    int64_t      d, y;
    unsigned     m, dd;
    char         iso[32];
    int          bad;
    size_t       i;

    static const char  *invalid[] = {
        "2024-1-01", "2024-01-1", "2024-01-01 ", "abcd-ef-gh", "2024-00-10",
        "2024-13-01", "2024-04-31", "2023-02-29", "1969-12-31", "2024/01/01",
        "+024-01-01", "", NULL
    };

    is_u64(day("1970-01-01"), 0, "1970-01-01 is day 0");
    is_u64(day("2000-03-01"), 11017, "2000-03-01 is day 11017");
    is_u64(day("2024-02-29"), 19782, "a leap day parses");
    is_u64(day("9999-12-31"), CFCOST_DAY_MAX, "9999-12-31 is the last day");

    for (i = 0; invalid[i] != NULL; i++) {
        ok(day(invalid[i]) == -999999, "\"%s\" is not a date", invalid[i]);
    }

    bad = 0;
    for (d = -800000; d < 3000000; d += 7) {
        cfcost_civil_from_days(d, &y, &m, &dd);
        if (cfcost_days_from_civil(y, m, dd) != d) {
            bad++;
        }
    }
    is_u64(bad, 0, "days <-> civil dates round-trip");

    cfcost_iso_ms(iso, 0);
    is_str(iso, "1970-01-01T00:00:00.000Z", "ISO of 0");
    cfcost_iso_ms(iso, 1700000000123LL);
    is_str(iso, "2023-11-14T22:13:20.123Z", "ISO with milliseconds");
    cfcost_iso_ms(iso, 86399999);
    is_str(iso, "1970-01-01T23:59:59.999Z", "ISO of the day's last ms");

    is_u64(cfcost_day_of_ms(86399999), 0, "a day ends at ms 86399999");
    is_u64(cfcost_day_of_ms(86400000), 1, "the next begins at 86400000");
    ok(cfcost_day_of_ms(-1) == -1, "before 1970 floors to day -1");

    is_str(date(cfcost_week_start(day("2024-05-01"))), "2024-04-29",
           "the week of a Wednesday starts on Monday");
    is_str(date(cfcost_week_start(day("2024-04-29"))), "2024-04-29",
           "a Monday starts its own week");
    is_str(date(cfcost_week_start(day("2024-05-05"))), "2024-04-29",
           "a Sunday ends the week");
    ok(cfcost_week_start(0) == -3, "1970-01-01 (Thursday): week from "
       "1969-12-29");

    is_str(date(cfcost_month_start(day("2024-02-29"))), "2024-02-01",
           "month start");
    is_str(date(cfcost_next_month(day("2024-12-15"))), "2025-01-01",
           "next month across a year");
    is_str(date(cfcost_next_month(day("2024-01-31"))), "2024-02-01",
           "next month from a 31st");
}


/* ---- numbers, ids, members ---------------------------------------------- */


static void
test_numbers(void)
{
    char         buf[CFCOST_MEMBER_MAX + 1], buf2[CFCOST_MEMBER_MAX + 1];
    uint64_t     v, ms, seq;
    size_t       n, idlen;
    unsigned     k;
    const char  *id, *wr;

#define W  "w0123456789abcdef"

    ok(cfcost_u64_parse("0", 1, INT64_MAX, &v) == 0 && v == 0, "0 parses");
    ok(cfcost_u64_parse("18446744073709551615", 20, UINT64_MAX, &v) == 0
       && v == UINT64_MAX, "2^64-1 parses under UINT64_MAX");
    ok(cfcost_u64_parse("18446744073709551616", 20, UINT64_MAX, &v) != 0,
       "2^64 overflows");
    ok(cfcost_u64_parse("9223372036854775808", 19, INT64_MAX, &v) != 0,
       "the max is honoured");
    ok(cfcost_u64_parse("", 0, INT64_MAX, &v) != 0, "empty is no number");
    ok(cfcost_u64_parse("-1", 2, INT64_MAX, &v) != 0, "no sign");
    ok(cfcost_u64_parse(" 1", 2, INT64_MAX, &v) != 0, "no space");
    ok(cfcost_u64_parse("1a", 2, INT64_MAX, &v) != 0, "no trailing junk");

    ok(cfcost_stream_id_parse("1700000000000-42", 16, &ms, &seq) == 0
       && ms == 1700000000000ULL && seq == 42, "a stream id parses");
    ok(cfcost_stream_id_parse("1700000000000", 13, &ms, &seq) != 0,
       "an id needs its sequence");

    n = cfcost_member_make(buf, 1700000000000LL, W, 17, "1795821966396-10",
                           16, 0);
    is_str(buf, "001700000000000:w0123456789abcdef:1795821966396-10",
           "member layout");
    ok(n == strlen(buf), "member length");
    ok(cfcost_member_parse(buf, n, &wr, &id, &idlen, &k) == 0 && idlen == 16
       && memcmp(id, "1795821966396-10", 16) == 0
       && memcmp(wr, W, 17) == 0 && k == 0, "member parses back");

    /* record k of a batch entry */
    n = cfcost_member_make(buf, 1700000000000LL, W, 17, "1795821966396-10",
                           16, 37);
    is_str(buf, "001700000000000:w0123456789abcdef:1795821966396-10.37",
           "a batch record's member");
    ok(cfcost_member_parse(buf, n, &wr, &id, &idlen, &k) == 0 && idlen == 16
       && memcmp(id, "1795821966396-10", 16) == 0 && k == 37,
       "... parses back with its index");
    ok(cfcost_member_make(buf, 5, W, 17, "1-1", 3, CFCOST_R_BATCH_MAX) == 0,
       "an index past a batch's records refused");
    n = cfcost_member_make(buf, 5, W, 17, "1-1", 3, CFCOST_R_BATCH_MAX - 1);
    ok(n > 0 && cfcost_member_parse(buf, n, &wr, &id, &idlen, &k) == 0
       && k == CFCOST_R_BATCH_MAX - 1 && idlen == 3, "the last index");
    ok(cfcost_member_parse("001700000000000:w0123456789abcdef:1-1.0", 39,
                           &wr, &id, &idlen, &k) != 0,
       "record 0 has no index in its member");
    ok(cfcost_member_parse("001700000000000:w0123456789abcdef:1-1.01", 40,
                           &wr, &id, &idlen, &k) != 0, "no leading zero");
    ok(cfcost_member_parse("001700000000000:w0123456789abcdef:1-1.", 38,
                           &wr, &id, &idlen, &k) != 0, "an empty index");
    ok(cfcost_member_parse("001700000000000:w0123456789abcdef:1-1.99999", 43,
                           &wr, &id, &idlen, &k) != 0, "an index too large");
    ok(cfcost_member_parse("001700000000000:w0123456789abcdef:1.2", 37,
                           &wr, &id, &idlen, &k) != 0,
       "an index after no stream id");
    ok(cfcost_member_make(buf, -1, W, 17, "1-1", 3, 0) == 0,
       "negative ts refused");
    ok(cfcost_member_make(buf, 5, W, 17, "x-1", 3, 0) == 0, "bad id refused");
    ok(cfcost_member_make(buf, 5, "w0123456789ABCDEF", 17, "1-1", 3, 0) == 0,
       "bad writer refused");
    ok(cfcost_member_parse("garbage", 7, &wr, &id, &idlen, &k) != 0,
       "garbage is no cursor");
    ok(cfcost_member_parse("00170000000000x:w0123456789abcdef:1-1", 37, &wr,
                           &id, &idlen, &k) != 0, "a cursor's time is digits");
    ok(cfcost_member_parse("001700000000000:1-1", 19, &wr, &id, &idlen, &k)
       != 0,
       "a member of the one-stream format is no cursor");
    ok(cfcost_writer_valid(W, 17) && !cfcost_writer_valid(W, 16)
       && !cfcost_writer_valid("x0123456789abcdef", 17), "writer ids");
    n = cfcost_stream_key(buf, W);
    is_str(buf, "cfcost:rec:{w0123456789abcdef}", "stream key");
    ok(n == CFCOST_RECORD_STREAM_LEN, "stream key length");

    cfcost_member_make(buf, 999, W, 17, "5-0", 3, 0);
    cfcost_member_make(buf2, 1000, "w0000000000000000", 17, "4-0", 3, 0);
    ok(strcmp(buf, buf2) < 0, "members sort by time first");
}


/* ---- writers ------------------------------------------------------------ */


static void
test_writers(void)
{
    char          tmp[32], want[32];
    size_t        i;
    uint64_t      v;
    cfcost_buf_t  b;

    static const uint64_t  samples[] = {
        0, 1, 499999, 500000, 999999, 1000000, 1936000000,
        12345678901234567ULL, 18446743999999999999ULL, UINT64_MAX / 2
    };

    memset(&b, 0, sizeof(b));

#define written(expr, want, ...)                                             \
    do {                                                                     \
        cfcost_buf_reset(&b);                                                \
        expr;                                                                \
        cfcost_buf_add(&b, "", 1);                                           \
        is_str(b.data, want, __VA_ARGS__);                                   \
    } while (0)

    written(cfcost_json_str(&b, "a\"b\\c\n\t\x01", 8),
            "\"a\\\"b\\\\c\\n\\t\\u0001\"", "JSON escapes");
    written(cfcost_json_str(&b, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                            14),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
            "JSON keeps valid UTF-8");
    written(cfcost_json_str(&b, "a\xff" "b", 3), "\"a\xef\xbf\xbd" "b\"",
            "JSON replaces a stray byte");
    written(cfcost_json_str(&b, "\xc0\xaf", 2),
            "\"\xef\xbf\xbd\xef\xbf\xbd\"", "JSON refuses an overlong form");
    written(cfcost_json_str(&b, "\xed\xa0\x80", 3),
            "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"",
            "JSON refuses a surrogate");
    written(cfcost_json_str(&b, "\xe2\x82", 2),
            "\"\xef\xbf\xbd\xef\xbf\xbd\"", "JSON refuses a cut sequence");
    written(cfcost_json_strz(&b, NULL), "null", "NULL is null");

    written(cfcost_csv_field(&b, "plain", 5), "plain", "CSV plain");
    written(cfcost_csv_field(&b, "=1+2", 4), "\"'=1+2\"",
            "CSV: a formula is kept as text");
    written(cfcost_csv_field(&b, "+x", 2), "\"'+x\"", "CSV: + too");
    written(cfcost_csv_field(&b, "-x", 2), "\"'-x\"", "CSV: - too");
    written(cfcost_csv_field(&b, "@SUM(A1)", 8), "\"'@SUM(A1)\"",
            "CSV: @ too");
    written(cfcost_csv_field(&b, "\tx", 2), "\"'\tx\"", "CSV: a tab too");
    written(cfcost_csv_field(&b, "=\"a\"", 4), "\"'=\"\"a\"\"\"",
            "CSV: a formula with quotes, quotes doubled");
    written(cfcost_csv_field(&b, "a=b", 3), "a=b",
            "CSV: = inside a cell is harmless");
    written(cfcost_csv_field(&b, "a,b", 3), "\"a,b\"", "CSV comma quoted");
    written(cfcost_csv_field(&b, "say \"hi\"", 8), "\"say \"\"hi\"\"\"",
            "CSV quotes doubled");
    written(cfcost_csv_field(&b, "l1\nl2", 5), "\"l1\nl2\"",
            "CSV newline quoted");
    written(cfcost_csv_field(&b, " pad", 4), "\" pad\"",
            "CSV leading space quoted");

    written(cfcost_prom_label(&b, "we\"ird\\m\nx", 10),
            "\"we\\\"ird\\\\m\\nx\"", "Prometheus label escapes");
    written(cfcost_prom_label(&b, "\xff", 1), "\"\xef\xbf\xbd\"",
            "Prometheus label replaces a stray byte");

    written(cfcost_json_usd(&b, 1936000000), "0.001936",
            "6 decimals from picodollars");
    written(cfcost_json_usd(&b, 500000), "0.000001", "half rounds up");
    written(cfcost_json_usd(&b, 499999), "0.000000", "below half rounds down");

    /* money as dollars + picodollars: the same text as cfcost_usd6 */
    for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        v = samples[i];
        cfcost_usd6(want, v);
        cfcost_money_usd6(tmp, v / CFCOST_PUSD_PER_USD,
                          v % CFCOST_PUSD_PER_USD);
        is_str(tmp, want, "split money %llu pusd", (unsigned long long) v);
        cfcost_money_usd6(tmp, 0, v);
        is_str(tmp, want, "unnormalized money %llu pusd",
               (unsigned long long) v);
    }

    cfcost_money_usd6(tmp, 20000000, 999999500000ULL);
    is_str(tmp, "20000001.000000", "beyond 2^64 pusd: rounding carries");
    cfcost_money_usd6(tmp, 30000000, 123456499999ULL);
    is_str(tmp, "30000000.123456", "beyond 2^64 pusd: rounds down");
    cfcost_money_usd6(tmp, 18446743, 999999499999ULL);
    is_str(tmp, "18446743.999999", "just below the switch (cfcost_usd6)");
    cfcost_money_usd6(tmp, 18446743, 999999500000ULL);
    is_str(tmp, "18446744.000000", "rounding up across the switch");
    cfcost_money_usd6(tmp, 18446744, 0);
    is_str(tmp, "18446744.000000", "at the switch to the manual path");

    b.oom = 1;
    ok(cfcost_buf_str(&b, "x") == -1, "writers stop after OOM");

    cfcost_buf_free(&b);
}


/* ---- rollups ------------------------------------------------------------ */


static void
test_rollup(void)
{
    size_t                     *rank;
    cfcost_rollup_t             ru;
    const cfcost_model_row_t   *a, *e;

    static const char  *h1[] = {
        "requests", "3",
        "input_tokens", "30",
        "output_tokens", "7",
        "cached_tokens", "4",
        "cost_usd", "1",
        "cost_pusd", "999999999999",
        "m:a:b:requests", "2",
        "m:a:b:cost_pusd", "500",
        "m::requests", "1",
        "m::cost_usd", "2",
        "m:x", "9",
        "junk", "5",
        "requests", "-1",
        "m:z:requests", "x"
    };

    static const char  *h2[] = {
        "requests", "1",
        "cost_pusd", "2",
        "m:a:b:requests", "5",
        "m:a:b:cost_usd", "3",
    };

    memset(&ru, 0, sizeof(ru));
    npool = 0;

    ok(cfcost_rollup_add_hash(&ru, array_reply(h1, 28)) == 0,
       "a rollup hash reads");
    is_u64(ru.total.requests, 3, "requests (a bad value is skipped)");
    is_u64(ru.total.input, 30, "input tokens");
    is_u64(ru.total.cached, 4, "cached tokens");
    is_u64(ru.total.usd, 1, "whole dollars");
    is_u64(ru.total.pusd, 999999999999ULL, "picodollars below them");
    is_u64(ru.n, 2, "two models (malformed fields skipped)");

    ok(cfcost_rollup_add_hash(&ru, array_reply(h2, 8)) == 0,
       "a second hash adds");
    is_u64(ru.total.requests, 4, "requests summed");
    is_u64(ru.total.usd, 2, "picodollars carried into dollars");
    is_u64(ru.total.pusd, 1, "... leaving the remainder");

    rank = cfcost_rollup_rank(&ru);
    ok(rank != NULL, "ranking");
    a = &ru.models[0];
    e = &ru.models[1];
    is_str(a->model, "", "models sorted by name: \"\" first");
    is_str(e->model, "a:b", "a model name may hold colons");
    is_u64(e->t.requests, 7, "a:b requests over both hashes");
    is_u64(e->t.usd, 3, "a:b dollars");
    is_u64(e->t.pusd, 500, "a:b picodollars");
    is_str(ru.models[rank[0]].model, "a:b", "ranked by cost: $3 first");
    is_str(ru.models[rank[1]].model, "", "... then $2");
    free(rank);

    cfcost_rollup_free(&ru);
    ok(ru.n == 0 && ru.models == NULL, "freed");

    {
        redisReply  nil;

        memset(&nil, 0, sizeof(nil));
        nil.type = REDIS_REPLY_NIL;
        ok(cfcost_rollup_add_hash(&ru, &nil) == 0, "nil is an empty hash");
        nil.type = REDIS_REPLY_INTEGER;
        ok(cfcost_rollup_add_hash(&ru, &nil) != 0, "an integer is refused");
    }

    {
        cfcost_totals_t  t;

        memset(&t, 0, sizeof(t));
        cfcost_totals_field(&t, "cost_pusd", 9, UINT64_MAX);
        is_u64(t.usd, UINT64_MAX / CFCOST_PUSD_PER_USD, "a huge remainder "
               "normalizes");
        is_u64(cfcost_sat_add(UINT64_MAX, 1), UINT64_MAX, "sums saturate");
    }
}


/* ---- records ------------------------------------------------------------ */


static void
test_record(void)
{
    int              bad;
    size_t           n;
    cfcost_record_t  rec;

    static const char  *f[] = {
        "v", "1", "request_id", "abc", "ts_ms", "1700000000123",
        "user", "alice", "model", "@cf/x", "input_tokens", "12",
        "output_tokens", "oops", "cost_pusd", "99"
    };

    static const char  *g[] = { "user", "bob", "ts_ms", "" };

    npool = 0;

    ok(cfcost_record_parse(array_reply(f, 16), 0, &rec) == 0,
       "record parses");
    ok(rec.f[CFCOST_REC_USER].len == 5
       && memcmp(rec.f[CFCOST_REC_USER].p, "alice", 5) == 0, "user found");
    is_u64(cfcost_record_u64(&rec, CFCOST_REC_INPUT, NULL), 12, "input");
    bad = 0;
    is_u64(cfcost_record_u64(&rec, CFCOST_REC_OUTPUT, &bad), 0,
           "a malformed number reads 0");
    ok(bad, "... and says so");
    bad = 0;
    is_u64(cfcost_record_u64(&rec, CFCOST_REC_CACHED, &bad), 0,
           "a missing number reads 0");
    ok(!bad, "... quietly");
    ok(cfcost_record_ts(&rec, "5-0", 3) == 1700000000123LL, "ts_ms used");

    ok(cfcost_record_parse(array_reply(g, 4), 0, &rec) == 0,
       "record parses");
    ok(cfcost_record_ts(&rec, "1700000000999-3", 15) == 1700000000999LL,
       "no ts_ms: the stream id's time");

    ok(cfcost_record_parse(NULL, 0, &rec) != 0, "a deleted entry (nil) is "
       "refused");
    ok(cfcost_record_count(NULL, &n) < 0 && n == 0, "... and holds none");
    ok(cfcost_record_count(array_reply(f, 16), &n) == 0 && n == 1,
       "a record of named fields is one");
    ok(cfcost_record_parse(array_reply(f, 16), 1, &rec) < 0,
       "... and has no second");

    /* a batch entry: records packed (schema 2), each a netstring */
    {
        static const char  *b[] = {
            "b", "57:1:2,32:0123456789abcdef0123456789abcdef,13:1700000000123,,"
                 "31:1:2,3:bcd,4:1234,5:alice,0:,0:,,"
                 "0:,"
        };
        static const char  *r[] = {
            "r", "1:2,3:abc,13:1700000000123,0:,5:alice,"
        };
        static const char  *broken[] = {
            "b", "4:1:2,,9:1:2,"
        };
        static const char  *empty[] = { "b", "" };

        ok(cfcost_record_count(array_reply(b, 2), &n) == 0 && n == 3,
           "a batch of three records");
        ok(cfcost_record_parse(array_reply(b, 2), 0, &rec) == 1
           && rec.f[CFCOST_REC_REQUEST_ID].len == 32
           && cfcost_record_ts(&rec, "1-1", 3) == 1700000000123LL,
           "record 0 (short of schema 2's fields: read as far as it goes)");
        ok(cfcost_record_parse(array_reply(b, 2), 1, &rec) == 1
           && rec.f[CFCOST_REC_REQUEST_ID].len == 3
           && memcmp(rec.f[CFCOST_REC_REQUEST_ID].p, "bcd", 3) == 0
           && rec.f[CFCOST_REC_KEY_ID].len == 5, "record 1");
        ok(cfcost_record_parse(array_reply(b, 2), 2, &rec) == 1
           && rec.f[CFCOST_REC_REQUEST_ID].len == 0, "record 2: empty");
        ok(cfcost_record_parse(array_reply(b, 2), 3, &rec) < 0,
           "no record 3");
        ok(cfcost_record_count(array_reply(r, 2), &n) == 0 && n == 1,
           "one packed record is one");
        ok(cfcost_record_parse(array_reply(r, 2), 0, &rec) == 1
           && rec.f[CFCOST_REC_USER].len == 5, "... read");
        ok(cfcost_record_count(array_reply(broken, 2), &n) == 1 && n == 1,
           "a batch whose framing breaks: the records before the break");
        ok(cfcost_record_count(array_reply(empty, 2), &n) == 1 && n == 0,
           "an empty batch holds nothing");
    }
}


int
main(int argc, char **argv)
{
    (void) argc;
    (void) argv;

    test_calendar();
    test_numbers();
    test_writers();
    test_rollup();
    test_record();

    return done_testing();
}
