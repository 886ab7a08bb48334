/*
 * Unit tests for the aggregator's consumer (aggregator/_consumer*.c),
 * the exactly-once state machine, against a scripted Redis
 * (t/unit/fake_redis.c): every command it sends is checked, argument by
 * argument, and answered with a reply, an error, nothing (the reply
 * deadline passes) or a lost connection.
 *
 * Linked with the consumer's files and what they call (_lua, _record,
 * _util, _log: the Makefile's CONSUMER_TEST_SRC), without cfcost_agg_main.c, cfcost_agg_redis.c (the fake stands
 * in) and cfcost_agg_clock.c (the clocks below are the test's).  The
 * consumer's pause timer is a real libevent timer: the test fires it.
 *
 * What the fake cannot do is run the Lua scripts: which entries they
 * count (the applied position, the holes) is checked against a real
 * Redis by t/100-aggregator.t and t/460-fault-aggregator.t.  Here the
 * scripts' replies are scripted, and what is checked is that the consumer
 * hands them the right entries, again after every failure, and reads
 * their answers right.
 *
 *   TEST_VERBOSE=1 build/unit/test_consumer.t    shows the consumer's log
 */

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_lua.h"
#include "cfcost_agg_consumer.h"
#include "fake_redis.h"
#include "tap.h"


#define SHA_APPLY   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_GROUP   "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_SUM     "dddddddddddddddddddddddddddddddddddddddd"
#define SHA_TRIM    "cccccccccccccccccccccccccccccccccccccccc"
#define SHA_LOGBT   "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
#define SHA_MOVE    "ffffffffffffffffffffffffffffffffffffffff"

#define W0          "w0000000000000000"
#define W1          "w0000000000000001"
#define W2          "w00000000000000a2"
#define K0          "cfcost:rec:{" W0 "}"
#define K1          "cfcost:rec:{" W1 "}"
#define K2          "cfcost:rec:{" W2 "}"

#define T0          1767225600000LL          /* 2026-01-01T00:00:00Z */
#define DAY0        "2026-01-01"
#define DNUM0       "20454"

#define BLOCK_MS    1000
#define TIMEOUT_MS  5000
#define PAUSE_MS    1000


/* ---- the clocks (cfcost_agg_clock.c is not linked) ---------------------- */


static uint64_t  mono = 1000000;


int64_t
cfcost_now_ms(void)
{
    return T0 + (int64_t) (mono - 1000000);
}


uint64_t
cfcost_mono_ms(void)
{
    return mono;
}


/* ---- the world: an agg, its two connections, the consumer --------------- */


static cfcost_agg_t     agg;
static cfcost_redis_t  *rd;             /* the consumer's */
static cfcost_redis_t  *hrd;            /* the HTTP one: CLIENT UNBLOCK */
static fake_resp_t      R;              /* the reply being written */
static int              stopped;        /* done() calls */
static int              quiet_level;


static void
world_start(void)
{
    memset(&agg, 0, sizeof(agg));

    agg.conf.group = "g";
    agg.conf.consumer = "c1";
    agg.conf.batch = 512;
    agg.conf.block_ms = BLOCK_MS;
    agg.conf.claim_idle_ms = 30000;
    agg.conf.retention_days = 0;
    agg.conf.retention_max = 0;
    agg.conf.trim_interval_s = 60;
    /* a dedup ttl: the exact script, whose arguments say what the
     * consumer read; test_sum() turns it off for the summed one */
    agg.conf.dedup_ttl_s = 1;
    agg.conf.redis_timeout_ms = TIMEOUT_MS;

    agg.base = event_base_new();

    rd = fake_redis_create("consumer", TIMEOUT_MS, cfcost_consumer_redis_up,
                           cfcost_consumer_redis_down, &agg);
    hrd = fake_redis_create("http", TIMEOUT_MS, NULL, NULL, &agg);
    agg.consumer_rd = rd;
    agg.http_rd = hrd;

    if (agg.base == NULL || cfcost_consumer_create(&agg) != 0) {
        fprintf(stderr, "cannot create the consumer\n");
        exit(1);
    }

    fake_redis_connect(hrd);
    fake_resp_reset(&R);
    stopped = 0;
}


/* As cfcost_agg_main.c stops: Redis first (callbacks with NULL). */
static void
world_end(void)
{
    fake_redis_free(rd);
    fake_redis_free(hrd);
    cfcost_consumer_free(agg.consumer);
    event_base_free(agg.base);
}


static void
on_stopped(void *data)
{
    (void) data;

    stopped++;
}


/* ---- strings ------------------------------------------------------------ */


/* A formatted string that lives until 16 more are made: use it at once. */
static const char *
strf(const char *fmt, ...)
{
    int             n;
    static char    *ring[16];
    static size_t   next;
    char          **s;
    va_list         ap;

    s = &ring[next++ % 16];
    free(*s);

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);

    *s = malloc((size_t) n + 1);
    if (n < 0 || *s == NULL) {
        abort();
    }

    va_start(ap, fmt);
    vsnprintf(*s, (size_t) n + 1, fmt, ap);
    va_end(ap);

    return *s;
}


/* ---- the log ------------------------------------------------------------ */


static int    cap_saved = -1;
static FILE  *cap_file;
static char   cap_text[1 << 20];


/* From here to cap_end() the consumer's log (every level) is kept. */
static void
cap_start(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    cap_saved = dup(2);
    dup2(fileno(cap_file), 2);
    cfcost_log_level = CFCOST_LOG_DEBUG;
}


/* The log since cap_start(). */
static const char *
cap_end(void)
{
    size_t  n;

    fflush(stderr);
    dup2(cap_saved, 2);
    close(cap_saved);
    cfcost_log_level = quiet_level;

    rewind(cap_file);
    n = fread(cap_text, 1, sizeof(cap_text) - 1, cap_file);
    cap_text[n] = '\0';
    fclose(cap_file);

    if (getenv("TEST_VERBOSE")) {
        fputs(cap_text, stderr);
    }

    return cap_text;
}


/* ---- the timer ---------------------------------------------------------- */


typedef struct {
    struct event    *ev[8];
    struct timeval   tv[8];
    int              n;
} timers_t;


static int
timer_collect(const struct event_base *base, const struct event *ev,
    void *arg)
{
    timers_t  *t = arg;

    (void) base;

    if (t->n < 8
        && (event_get_events(ev) & (EV_READ | EV_WRITE | EV_SIGNAL)) == 0
        && evtimer_pending((struct event *) ev, &t->tv[t->n]))
    {
        t->ev[t->n++] = (struct event *) ev;
    }

    return 0;
}


/* How long until the first pending timer of the loop, or -1 if none. */
static long
timer_ms(void)
{
    long            ms;
    timers_t        t;
    struct timeval  now;

    t.n = 0;
    event_base_foreach_event(agg.base, timer_collect, &t);

    if (t.n == 0) {
        return -1;
    }

    gettimeofday(&now, NULL);
    ms = (t.tv[0].tv_sec - now.tv_sec) * 1000
         + (t.tv[0].tv_usec - now.tv_usec + 999) / 1000;

    return ms < 0 ? 0 : ms;
}


/* Runs every pending timer now, as if its time had come. */
static int
fire(void)
{
    int       i;
    timers_t  t;

    t.n = 0;
    event_base_foreach_event(agg.base, timer_collect, &t);

    for (i = 0; i < t.n; i++) {
        event_active(t.ev[i], EV_TIMEOUT, 1);
    }

    event_base_loop(agg.base, EVLOOP_NONBLOCK);

    return t.n;
}


/* 1 when a pause of about PAUSE_MS is pending. */
static int
paused(void)
{
    long  ms;

    ms = timer_ms();

    /* libevent's timers and gettimeofday() agree within a few ms */
    if (ms < PAUSE_MS - 100 || ms > PAUSE_MS + 100) {
        diag("timer: %ld ms", ms);
        return 0;
    }

    return 1;
}


/* ---- commands and replies ----------------------------------------------- */


static const char *
sent_on(cfcost_redis_t *r)
{
    const fake_cmd_t  *c;

    c = fake_redis_peek(r);

    return c != NULL ? c->line : "(nothing)";
}


static const char *
sent(void)
{
    return sent_on(rd);
}


/*
 * When the oldest command in flight on r is want, answers it with R.
 * Returns 1 if so; else says what was sent.  R is emptied either way.
 */
static int
answer_on(cfcost_redis_t *r, const char *want)
{
    int          rc;
    const char  *got;

    got = sent_on(r);

    if (strcmp(got, want) != 0) {
        diag("sent:     %.400s", got);
        diag("expected: %.400s", want);
        fake_resp_reset(&R);
        return 0;
    }

    rc = fake_redis_reply(r, R.p, R.len);
    fake_resp_reset(&R);

    return rc == 0;
}


static int
answer(const char *want)
{
    return answer_on(rd, want);
}


/* answer(want), with the error reply e. */
static int
answer_error(const char *want, const char *e)
{
    fake_resp_error(&R, e);
    return answer(want);
}


/* ---- entries ------------------------------------------------------------ */


typedef struct {
    const char  *id;
    const char  *rid;
    const char  *user;
    const char  *key;
    const char  *model;
    const char  *in;
    const char  *out;
    const char  *cached;
    const char  *cost;
    int          gone;      /* deleted while pending: fields read as nil */
    const char  *packed;    /* schema 2: NULL, or "" to pack the above,
                               or this value as it is */
} ent_t;


static void
resp_field(const char *name, const char *value)
{
    fake_resp_bulk(&R, name);
    fake_resp_bulk(&R, value);
}


/* schema 2's one field: the netstrings of the fields, in order */
static const char *
packed_value(const ent_t *e, const char *ts)
{
    size_t       i;
    const char  *s, *f[CFCOST_P_NFIELDS];

    for (i = 0; i < CFCOST_P_NFIELDS; i++) {
        f[i] = "";
    }

    f[CFCOST_P_VERSION] = "2";
    f[CFCOST_P_REQUEST_ID] = e->rid;
    f[CFCOST_P_TS_MS] = ts;
    f[CFCOST_P_KEY_ID] = e->key;
    f[CFCOST_P_USER] = e->user;
    f[CFCOST_P_MODEL] = e->model;
    f[CFCOST_P_ROUTE] = "chat";
    f[CFCOST_P_STATUS] = "200";
    f[CFCOST_P_UPSTREAM_STATUS] = "200";
    f[CFCOST_P_INPUT_TOKENS] = e->in;
    f[CFCOST_P_OUTPUT_TOKENS] = e->out;
    f[CFCOST_P_CACHED_TOKENS] = e->cached;
    f[CFCOST_P_COST] = e->cost;
    f[CFCOST_P_FLAGS] = "streamed,estimated";

    for (i = 0, s = ""; i < CFCOST_P_NFIELDS; i++) {
        s = strf("%s%zu:%s,", s, strlen(f[i]), f[i]);
    }

    return s;
}


/* [[id, [field, value...]]...] */
static void
resp_entries(const ent_t *e, size_t n)
{
    size_t  i;
    char    ts[32];

    fake_resp_array(&R, n);

    for (i = 0; i < n; i++) {
        fake_resp_array(&R, 2);
        fake_resp_bulk(&R, e[i].id);

        if (e[i].gone) {
            fake_resp_nil_array(&R);
            continue;
        }

        snprintf(ts, sizeof(ts), "%.*s", (int) strcspn(e[i].id, "-"),
                 e[i].id);

        if (e[i].packed != NULL) {
            fake_resp_array(&R, 2);
            resp_field(CFCOST_R_PACKED, e[i].packed[0] ? e[i].packed
                                        : packed_value(&e[i], ts));
            continue;
        }

        fake_resp_array(&R, 2 * 11);
        resp_field(CFCOST_R_VERSION, "1");
        resp_field(CFCOST_R_REQUEST_ID, e[i].rid);
        resp_field(CFCOST_R_TS_MS, ts);
        resp_field(CFCOST_R_KEY_ID, e[i].key);
        resp_field(CFCOST_R_USER, e[i].user);
        resp_field(CFCOST_R_MODEL, e[i].model);
        resp_field(CFCOST_R_STATUS, "200");
        resp_field(CFCOST_R_INPUT_TOKENS, e[i].in);
        resp_field(CFCOST_R_OUTPUT_TOKENS, e[i].out);
        resp_field(CFCOST_R_CACHED_TOKENS, e[i].cached);
        resp_field(CFCOST_R_COST, e[i].cost);
    }
}


/* An XREADGROUP reply of one stream. */
static void
resp_read(const char *key, const ent_t *e, size_t n)
{
    fake_resp_array(&R, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, key);
    resp_entries(e, n);
}


/* An XAUTOCLAIM reply (Redis 7: next cursor, entries, deleted ids). */
static void
resp_claim(const char *cursor, const ent_t *e, size_t n)
{
    fake_resp_array(&R, 3);
    fake_resp_bulk(&R, cursor);
    resp_entries(e, n);
    fake_resp_array(&R, 0);
}


/* The apply script's reply: {applied, duplicates, stale}. */
static void
resp_applied(long long applied, long long dup, long long stale)
{
    fake_resp_array(&R, 3);
    fake_resp_int(&R, applied);
    fake_resp_int(&R, dup);
    fake_resp_int(&R, stale);
}


/*
 * The apply script the consumer must send for the entries of the stream
 * of writer w, computed here from the entries (every id is of 2026-01-01,
 * every number well-formed).
 */
static const char *
apply_line(const char *w, const ent_t *e, size_t n)
{
    char                *s, *dash;
    size_t               i, len;
    FILE                *f;
    const char          *line;
    unsigned long long   cost, ms, seq;

    f = open_memstream(&s, &len);

    fprintf(f, "EVALSHA " SHA_APPLY " 0 cfcost:rec:{%s} g %u %zu", w,
            agg.conf.dedup_ttl_s, n);

    for (i = 0; i < n; i++) {
        /* the padded id last: <ms><seq>, 20 digits each */
        ms = strtoull(e[i].id, &dash, 10);
        seq = strtoull(dash + 1, NULL, 10);

        if (e[i].gone) {
            fprintf(f, " %s             %020llu%020llu", e[i].id, ms, seq);
            continue;
        }

        cost = strtoull(e[i].cost, NULL, 10);
        fprintf(f, " %s %s " DAY0 " " DNUM0 " %s %s %s %s %s %s %llu %llu "
                "%015lld:%s:%s %020llu%020llu", e[i].id, e[i].rid,
                e[i].user, e[i].key, e[i].model, e[i].in, e[i].out,
                e[i].cached, cost / 1000000000000ULL,
                cost % 1000000000000ULL, strtoll(e[i].id, NULL, 10), w,
                e[i].id, ms, seq);
    }

    fclose(f);

    line = strf("%s", s);
    free(s);

    return line;
}


/* The BLOCK read of the streams keys[0..n). */
static const char *
block_line(const char **keys, size_t n)
{
    size_t       i;
    const char  *s;

    s = strf("XREADGROUP GROUP g c1 COUNT 512 BLOCK %d STREAMS", BLOCK_MS);
    for (i = 0; i < n; i++) {
        s = strf("%s %s", s, keys[i]);
    }
    for (i = 0; i < n; i++) {
        s = strf("%s >", s);
    }

    return s;
}


static const char *
pending_line(const char *key, const char *from)
{
    return strf("XREADGROUP GROUP g c1 COUNT 512 STREAMS %s %s", key, from);
}


static const char *
single_line(const char *key, const char *from)
{
    return strf("XREADGROUP GROUP g c1 COUNT 1 STREAMS %s %s", key, from);
}


static const char *
claim_line(const char *key, const char *from)
{
    return strf("XAUTOCLAIM %s g c1 30000 %s COUNT 512", key, from);
}


static const char *
group_line(const char *key)
{
    return strf("EVALSHA " SHA_GROUP " 0 %s g", key);
}


/* ---- steps every scenario goes through ---------------------------------- */


/* what the first chunk of moving an old index answers: none by default */
static const char  *first_move_next = "";
static long long    first_move_n = 0;
static const char  *first_move_status = "more";


/* The log index's scripts, then the first chunk of moving an old index. */
static int
load_index_scripts(void)
{
    fake_resp_bulk(&R, SHA_LOGBT);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_logb_trim))) {
        return 0;
    }

    fake_resp_bulk(&R, SHA_MOVE);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_logb_move))) {
        return 0;
    }

    fake_resp_array(&R, 3);
    fake_resp_bulk(&R, first_move_next);
    fake_resp_int(&R, first_move_n);
    fake_resp_bulk(&R, first_move_status);
    return answer("EVALSHA " SHA_MOVE " 0 all 2000");
}


static void
resp_moved(const char *next, long long n)
{
    fake_resp_array(&R, 3);
    fake_resp_bulk(&R, next);
    fake_resp_int(&R, n);
    fake_resp_bulk(&R, "more");
}


/* CLIENT ID, then the scripts, on a new connection. */
static int
set_up(void)
{
    fake_resp_int(&R, 7);
    if (!answer("CLIENT ID")) {
        return 0;
    }

    fake_resp_bulk(&R, SHA_APPLY);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_apply))) {
        return 0;
    }

    fake_resp_bulk(&R, SHA_SUM);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_sum))) {
        return 0;
    }

    fake_resp_bulk(&R, SHA_GROUP);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_group))) {
        return 0;
    }

    fake_resp_bulk(&R, SHA_TRIM);
    if (!answer(strf("SCRIPT LOAD %s", cfcost_lua_trim))) {
        return 0;
    }

    return load_index_scripts();
}


static int
discover(const char **writers, size_t n)
{
    size_t  i;

    fake_resp_array(&R, n);
    for (i = 0; i < n; i++) {
        fake_resp_bulk(&R, writers[i]);
    }

    return answer("SMEMBERS " CFCOST_WRITERS_SET);
}


/* The group script finds the group there already (or creates it at 0). */
static int
grouped(const char *key)
{
    fake_resp_array(&R, 2);
    fake_resp_int(&R, 0);
    fake_resp_bulk(&R, "0");

    return answer(group_line(key));
}


static int
no_pending(const char *key, const char *from)
{
    resp_read(key, NULL, 0);
    return answer(pending_line(key, from));
}


static int
no_claim(const char *key)
{
    resp_claim("0-0", NULL, 0);
    return answer(claim_line(key, "0-0"));
}


/*
 * From a new connection to the first BLOCK read of the streams of the
 * writers w[0..n) (sorted): set-up, discovery, groups, own pending, the
 * claim pass.  Returns 1 when the BLOCK read is in flight.
 */
static int
connect_and_read(const char **w, size_t n, int with_claim)
{
    size_t       i;
    char         buf[4][CFCOST_RECORD_STREAM_LEN + 1];
    const char  *keys[4];

    if (!cfcost_redis_up(rd)) {
        fake_redis_connect(rd);
    }

    if (!set_up() || !discover(w, n)) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        snprintf(buf[i], sizeof(buf[i]), "cfcost:rec:{%s}", w[i]);
        keys[i] = buf[i];
        if (!grouped(keys[i])) {
            return 0;
        }
    }

    for (i = 0; i < n; i++) {
        if (!no_pending(keys[i], "0")) {
            return 0;
        }
    }

    if (!with_claim) {
        return 1;               /* the claim pass is in flight */
    }

    for (i = 0; i < n; i++) {
        if (!no_claim(keys[i])) {
            return 0;
        }
    }

    if (strcmp(sent(), block_line(keys, n)) != 0) {
        diag("sent:     %.400s", sent());
        diag("expected: %.400s", block_line(keys, n));
        return 0;
    }

    return 1;
}


static const char  *one_writer[] = { W1 };
static const char  *two_writers[] = { W1, W2 };
static const char  *k1_only[] = { K1 };

static const ent_t  e12[] = {
    { "1767225600123-0", "r1", "alice", "k1", "@cf/m", "10", "20", "3",
      "1500000000000", 0, NULL },
    { "1767225600124-0", "r2", "bob", "k2", "@cf/m", "5", "0", "0", "7", 0, NULL },
};


/* ---- set-up, discovery, groups ------------------------------------------ */


static void
test_setup_and_discovery(void)
{
    const char  *log;
    const char  *k12[] = { K1, K2 };
    const char  *k012[] = { K0, K1, K2 };
    const char  *w[] = { W1, "bogus", "w000000000000000G", W2,
                         "w00000000000000011" };
    const char  *w3[] = { W2, W0, W1 };

    world_start();

    ok(!cfcost_consumer_ready(agg.consumer), "set-up: not ready before a "
       "connection");

    fake_redis_connect(rd);
    is_str(sent(), "CLIENT ID", "set-up: CLIENT ID first (for CLIENT "
           "UNBLOCK)");
    is_u64(fake_redis_inflight(rd), 1, "set-up: one command at a time");

    fake_resp_int(&R, 7);
    ok(answer("CLIENT ID"), "set-up: CLIENT ID answered");

    fake_resp_bulk(&R, SHA_APPLY);
    ok(answer(strf("SCRIPT LOAD %s", cfcost_lua_apply)),
       "set-up: SCRIPT LOAD of the apply script");
    fake_resp_bulk(&R, SHA_SUM);
    ok(answer(strf("SCRIPT LOAD %s", cfcost_lua_sum)),
       "set-up: SCRIPT LOAD of the summed apply script");
    fake_resp_bulk(&R, SHA_GROUP);
    ok(answer(strf("SCRIPT LOAD %s", cfcost_lua_group)),
       "set-up: SCRIPT LOAD of the group script");
    ok(!cfcost_consumer_ready(agg.consumer), "set-up: not ready with three "
       "scripts of six");
    fake_resp_bulk(&R, SHA_TRIM);
    ok(answer(strf("SCRIPT LOAD %s", cfcost_lua_trim)),
       "set-up: SCRIPT LOAD of the trim script");
    ok(!cfcost_consumer_ready(agg.consumer), "set-up: not ready with four "
       "scripts of six");
    ok(load_index_scripts(), "set-up: the log index's scripts, then the "
       "first chunk of an old index to move (none)");
    ok(cfcost_consumer_ready(agg.consumer), "set-up: ready");

    /* discovery: only writer ids name streams */
    cap_start();
    fake_resp_array(&R, 5);
    fake_resp_bulk(&R, w[0]);
    fake_resp_bulk(&R, w[1]);
    fake_resp_bulk(&R, w[2]);
    fake_resp_bulk(&R, w[3]);
    fake_resp_bulk(&R, w[4]);
    ok(answer("SMEMBERS " CFCOST_WRITERS_SET), "discovery: SMEMBERS "
       CFCOST_WRITERS_SET);
    log = cap_end();
    is_u64(cfcost_consumer_streams(agg.consumer), 2,
           "discovery: 2 streams of 5 members (3 are no writer ids)");
    ok(strstr(log, "new writer stream " K1) && strstr(log, "new writer "
              "stream " K2), "discovery: each new stream logged");

    /* groups: the script creates them from the applied position */
    cap_start();
    fake_resp_array(&R, 2);
    fake_resp_int(&R, 1);
    fake_resp_bulk(&R, "1767225600100-0");
    ok(answer(group_line(K1)), "group: the group script on " K1);
    log = cap_end();
    ok(strstr(log, "group g created on " K1 " after 1767225600100-0")
       != NULL, "group: its creation logged with the start id");
    ok(grouped(K2), "group: the group script on " K2 " (it existed)");

    ok(no_pending(K1, "0"), "own pending: " K1 " from 0");
    ok(no_pending(K2, "0"), "own pending: " K2 " from 0");
    ok(no_claim(K1), "claim pass: XAUTOCLAIM " K1);
    ok(no_claim(K2), "claim pass: XAUTOCLAIM " K2);

    is_str(sent(), block_line(k12, 2), "BLOCK read of both streams");
    is_u64(fake_redis_peek(rd)->extra_ms, BLOCK_MS,
           "BLOCK read: its reply deadline is --block later");

    /* a BLOCK read that found nothing looks for new writers at once */
    fake_resp_nil_array(&R);
    ok(answer(block_line(k12, 2)), "BLOCK read: nil (timed out)");
    ok(discover(w3, 3), "discovery again at once after a nil read");
    is_u64(cfcost_consumer_streams(agg.consumer), 3,
           "discovery: a third writer");
    ok(grouped(K0), "group: only for the new stream");
    ok(no_pending(K0, "0"), "own pending: only of the new stream");
    is_str(sent(), block_line(k012, 3),
           "BLOCK read of the three, in key order");

    /* the next discovery a second later, after the reply in flight */
    mono += 1000;
    fake_resp_array(&R, 0);
    ok(answer(block_line(k012, 3)), "BLOCK read: empty");
    ok(discover(w3, 3), "discovery again after an empty read");
    is_str(sent(), block_line(k012, 3), "nothing new: BLOCK read");

    world_end();
}


static void
test_no_writers(void)
{
    world_start();
    fake_redis_connect(rd);

    ok(set_up() && discover(NULL, 0), "no writers: discovery finds none");
    is_u64(fake_redis_inflight(rd), 0, "no writers: nothing sent");
    ok(timer_ms() > 900 && timer_ms() <= 1100,
       "no writers: looks again in a second");

    mono += 1000;
    fire();
    ok(discover(one_writer, 1), "no writers: SMEMBERS again");
    ok(grouped(K1), "no writers: then a stream, its group");

    world_end();
}


static void
test_writer_cap(void)
{
    size_t       i, n;
    const char  *log;
    char         w[CFCOST_WRITER_ID_LEN + 1];

    world_start();
    fake_redis_connect(rd);
    ok(set_up(), "4097 writers: set-up");

    cap_start();
    n = 4100;
    fake_resp_array(&R, n);
    for (i = 0; i < n; i++) {
        snprintf(w, sizeof(w), "w%016zx", i);
        fake_resp_bulk(&R, w);
    }
    ok(answer("SMEMBERS " CFCOST_WRITERS_SET), "4100 writers: discovery");
    log = cap_end();

    is_u64(cfcost_consumer_streams(agg.consumer), 4096,
           "4100 writers: 4096 streams read");
    ok(strstr(log, "more than 4096 writers") != NULL,
       "4100 writers: the others are logged as not read");

    /* full: every later discovery must leave the array alone */
    mono += 1000;
    fake_redis_drop(rd);
    fake_redis_connect(rd);
    ok(set_up(), "4100 writers: set-up again");

    cap_start();
    n = 4101;
    fake_resp_array(&R, n);
    for (i = 0; i < n; i++) {
        snprintf(w, sizeof(w), "w%016zx", n - 1 - i);
        fake_resp_bulk(&R, w);
    }
    ok(answer("SMEMBERS " CFCOST_WRITERS_SET), "4101 writers: discovery "
       "when full");
    log = cap_end();
    is_u64(cfcost_consumer_streams(agg.consumer), 4096,
           "4101 writers: still 4096 streams");
    ok(strstr(log, "more than 4096 writers") == NULL,
       "4101 writers: logged once only");
    is_str(sent(), group_line("cfcost:rec:{w0000000000000000}"),
           "4101 writers: the groups, from the first stream");

    world_end();
}


/* ---- batches ------------------------------------------------------------ */


static void
test_batch(void)
{
    const char  *want, *skip, *log;
    const char  *k12[] = { K1, K2 };
    const ent_t  e3[] = {
        { "1767225600200-0", "r3", "carol", "k3", "@cf/x", "1", "2", "0",
          "3", 0, NULL },
    };

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "batch: reading " K1);

    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "batch: 2 new entries");

    /* the arguments, spelled out once */
    want = "EVALSHA " SHA_APPLY " 0 " K1 " g 1 2 "
           "1767225600123-0 r1 " DAY0 " " DNUM0 " alice k1 @cf/m 10 20 3 "
           "1 500000000000 001767225600123:" W1 ":1767225600123-0 "
           "0000000176722560012300000000000000000000 "
           "1767225600124-0 r2 " DAY0 " " DNUM0 " bob k2 @cf/m 5 0 0 "
           "0 7 001767225600124:" W1 ":1767225600124-0 "
           "0000000176722560012400000000000000000000";
    is_str(sent(), want, "batch: one apply script, every argument");
    is_str(sent(), apply_line(W1, e12, 2), "batch: (apply_line agrees)");
    is_u64(fake_redis_peek(rd)->extra_ms, 0, "batch: the usual deadline");

    resp_applied(2, 0, 0);
    ok(answer(want), "batch: applied and acknowledged by the script");
    is_u64(agg.applied, 2, "batch: 2 counted");
    is_u64(agg.batches, 1, "batch: 1 batch");
    is_str(sent(), block_line(k1_only, 1), "batch: then the next read");

    /* duplicates and stale entries are the script's to say */
    resp_read(K1, e3, 1);
    ok(answer(block_line(k1_only, 1)), "batch: 1 more");
    resp_applied(0, 1, 0);
    ok(answer(apply_line(W1, e3, 1)), "batch: a duplicate request id");
    is_u64(agg.applied, 2, "batch: a duplicate is not counted");
    is_u64(agg.duplicates, 1, "batch: ... but is reported");
    world_end();

    /* two streams in one read: one script each, one at a time, in turn */
    world_start();
    ok(connect_and_read(two_writers, 2, 1), "batch: reading two streams");

    fake_resp_array(&R, 2);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K2);
    resp_entries(e3, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K1);
    resp_entries(e12, 2);
    ok(answer(block_line(k12, 2)), "batch: entries of both streams");

    is_str(sent(), apply_line(W2, e3, 1), "batch: " K2 "'s script first");
    is_u64(fake_redis_inflight(rd), 1, "batch: one script in flight");
    mono += 1000;
    resp_applied(1, 0, 0);
    ok(answer(apply_line(W2, e3, 1)), "batch: " K2 " applied");
    resp_applied(2, 0, 0);
    ok(answer(apply_line(W1, e12, 2)), "batch: then " K1 "'s");
    is_u64(agg.applied, 3, "batch: 3 counted");
    is_str(sent(), "SMEMBERS " CFCOST_WRITERS_SET,
           "batch: discovery once the read is applied");

    world_end();

    /* the first stream's one entry cannot be applied: set aside; the
     * other stream's script of the same read is dropped with the queue,
     * its entries read again from our pending list (not left until a
     * reclaim) */
    world_start();
    ok(connect_and_read(two_writers, 2, 1), "skip: reading two streams");

    fake_resp_array(&R, 2);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K2);
    resp_entries(e3, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K1);
    resp_entries(e12, 2);
    ok(answer(block_line(k12, 2)), "skip: entries of both streams");

    cap_start();
    ok(answer_error(apply_line(W2, e3, 1), "WRONGTYPE Operation against "
                    "a key holding the wrong kind of value"),
       "skip: " K2 "'s one entry fails");
    log = cap_end();
    ok(strstr(log, "cannot be applied") != NULL, "skip: logged");
    skip = strf("EVALSHA " SHA_APPLY " 0 " K2 " g %u 1 %s             ",
                agg.conf.dedup_ttl_s, e3[0].id);
    is_str(sent(), skip, "skip: acknowledged only");
    resp_applied(0, 0, 0);
    ok(answer(skip), "skip: acknowledged");
    is_str(sent(), pending_line(K1, "0"), "skip: then " K1 "'s entries, "
           "from our pending list");
    resp_read(K1, e12, 2);
    ok(answer(pending_line(K1, "0")), "skip: they come back");
    resp_applied(2, 0, 0);
    ok(answer(apply_line(W1, e12, 2)), "skip: and are applied");
    is_u64(agg.applied, 2, "skip: 2 counted, 1 set aside");
    world_end();
}


/* ---- the summed apply script -------------------------------------------- */


/* a rollup key of the summed script's arguments: <key> <fields> then
 * the "<field> <increment>" pairs, sorted */
static const char *
sum_key(const char *key, const char *pairs)
{
    size_t       i, words;

    for (i = 0, words = 1; pairs[i] != '\0'; i++) {
        words += (pairs[i] == ' ');
    }

    return strf(" %s %zu %s", key, words / 2, pairs);
}


#define BKT  "0017672256001"

static void
test_sum(void)
{
    const char  *want, *all, *a, *b, *m1, *m2, *m3, *log, *exact;
    const ent_t  e123[] = {
        { "1767225600123-0", "r1", "alice", "k1", "@cf/m", "10", "20", "3",
          "1500000000000", 0, NULL },
        { "1767225600124-0", "r2", "bob", "k2", "@cf/m", "5", "0", "0", "7",
          0, NULL },
        { "1767225600125-5", "r3", "alice", "k1", "@cf/m", "1", "1", "0",
          "1", 0, NULL },
    };
    const ent_t  e4[] = {
        { "1767225600200-0", "r4", "carol", "k3", "@cf/x", "1", "2", "0",
          "3", 0, NULL },
    };

    world_start();
    agg.conf.dedup_ttl_s = 0;
    ok(connect_and_read(one_writer, 1, 1), "sum: reading " K1);

    resp_read(K1, e123, 3);
    ok(answer(block_line(k1_only, 1)), "sum: 3 new entries");

    /* alice's two records are one group; each (key, field) once, sorted;
     * a field that adds 0 is left out */
    all = "cached_tokens 3 cost_pusd 500000000008 cost_usd 1 "
          "input_tokens 16 m:@cf/m:cached_tokens 3 "
          "m:@cf/m:cost_pusd 500000000008 m:@cf/m:cost_usd 1 "
          "m:@cf/m:input_tokens 16 m:@cf/m:output_tokens 21 "
          "m:@cf/m:requests 3 output_tokens 21 requests 3";
    a = "cached_tokens 3 cost_pusd 500000000001 cost_usd 1 "
        "input_tokens 11 m:@cf/m:cached_tokens 3 "
        "m:@cf/m:cost_pusd 500000000001 m:@cf/m:cost_usd 1 "
        "m:@cf/m:input_tokens 11 m:@cf/m:output_tokens 21 "
        "m:@cf/m:requests 2 output_tokens 21 requests 2";
    b = "cost_pusd 7 input_tokens 5 m:@cf/m:cost_pusd 7 "
        "m:@cf/m:input_tokens 5 m:@cf/m:requests 1 requests 1";
    m1 = "001767225600123:" W1 ":1767225600123-0";
    m2 = "001767225600124:" W1 ":1767225600124-0";
    m3 = "001767225600125:" W1 ":1767225600125-5";

    /* the index: per bucket (the members' first 13 digits) of each
     * scope, its key, the scope's set, the bucket, its members */
    want = strf("EVALSHA " SHA_SUM " 0 " K1 " g 3 3 12 212 5 2 "
                "1767225600123-0 1767225600124-0 1767225600125-5 "
                "cfcost:logb:" BKT ":all cfcost:logbs:all " BKT " "
                "%s\n%s\n%s\n "
                "cfcost:logb:" BKT ":u:alice cfcost:logbs:u:alice " BKT " "
                "%s\n%s\n "
                "cfcost:logb:" BKT ":u:bob cfcost:logbs:u:bob " BKT " "
                "%s\n"
                "%s%s%s%s%s%s%s%s%s%s "
                "cfcost:r:days:all 20454 " DAY0 " "
                "cfcost:r:days:k:k1 20454 " DAY0 " "
                "cfcost:r:days:k:k2 20454 " DAY0 " "
                "cfcost:r:days:u:alice 20454 " DAY0 " "
                "cfcost:r:days:u:bob 20454 " DAY0 " "
                "alice bob", m1, m2, m3, m1, m3, m2,
                sum_key("cfcost:r:all", all),
                sum_key("cfcost:r:d:" DAY0 ":all", all),
                sum_key("cfcost:r:d:" DAY0 ":k:k1", a),
                sum_key("cfcost:r:d:" DAY0 ":k:k2", b),
                sum_key("cfcost:r:d:" DAY0 ":u:alice", a),
                sum_key("cfcost:r:d:" DAY0 ":u:bob", b),
                sum_key("cfcost:r:k:k1", a),
                sum_key("cfcost:r:k:k2", b),
                sum_key("cfcost:r:u:alice", a),
                sum_key("cfcost:r:u:bob", b));
    is_str(sent(), want, "sum: the summed script, every argument");

    resp_applied(3, 0, 0);
    ok(answer(want), "sum: applied");
    is_u64(agg.applied, 3, "sum: 3 counted");
    is_u64(agg.batches_exact, 0, "sum: none declined");
    is_str(sent(), block_line(k1_only, 1), "sum: then the next read");

    /* declined (not all new): nothing was written; the same entries from
     * our pending list, by the exact script, then summed again */
    resp_read(K1, e4, 1);
    ok(answer(block_line(k1_only, 1)), "sum: 1 more");
    cap_start();
    fake_resp_array(&R, 3);
    fake_resp_int(&R, -1);
    fake_resp_int(&R, 0);
    fake_resp_int(&R, 0);
    ok(answer(sent()), "sum: the script declines");
    log = cap_end();
    ok(strstr(log, "not all new") != NULL, "sum: logged");
    is_u64(agg.applied, 3, "sum: nothing counted");
    is_u64(agg.batches_exact, 1, "sum: a declined batch, counted");
    resp_read(K1, e4, 1);
    ok(answer(pending_line(K1, "0")), "sum: our pending list again");
    exact = apply_line(W1, e4, 1);
    is_str(sent(), exact, "sum: by the exact script");
    resp_applied(1, 0, 0);
    ok(answer(exact), "sum: applied");
    is_u64(agg.applied, 4, "sum: counted once");
    ok(no_pending(K1, "1767225600200-0"), "sum: the rest of our pending "
       "list");
    is_str(sent(), block_line(k1_only, 1), "sum: reading on");

    resp_read(K1, e4 + 0, 1);
    ok(answer(block_line(k1_only, 1)), "sum: another");
    ok(strncmp(sent(), "EVALSHA " SHA_SUM " ", 49) == 0,
       "sum: summed again");

    world_end();

    /* ids out of order (as no group delivers them): the exact script */
    world_start();
    agg.conf.dedup_ttl_s = 0;
    ok(connect_and_read(one_writer, 1, 1), "sum: reading again");
    {
        const ent_t  back[] = { e123[1], e123[0] };

        resp_read(K1, back, 2);
        ok(answer(block_line(k1_only, 1)), "sum: 2 entries, out of order");
        is_str(sent(), apply_line(W1, back, 2), "sum: the exact script "
               "decides those");
    }
    world_end();
}


/*
 * A batch entry (cfcost_schema.h): several records in one entry.  Its
 * records are each an argument group of the exact script, the first with
 * the entry id, the others with "" (they go as it goes); the summed
 * script lists the id once and counts the records; each record has its
 * own log index member, ".<k>" after the id past the first.
 */
static void
test_batch_entry(void)
{
    char         ts[3][16], v[4096], mem[3][80], rec[1024], tail[512];
    const char  *want, *id = "1767225600130-2";
    size_t       i, len;
    const ent_t  rs[] = {
        { "1767225600127-0", "r1", "alice", "k1", "@cf/m", "10", "20", "3",
          "1500000000000", 0, NULL },
        { "1767225600128-0", "r2", "bob", "k2", "@cf/m", "5", "0", "0", "7",
          0, NULL },
        { "1767225600130-2", "r3", "alice", "k1", "@cf/m", "1", "1", "0",
          "1", 0, NULL },
    };
    const ent_t  one[] = {
        { "1767225600200-0", "r4", "carol", "k3", "@cf/x", "1", "2", "0",
          "3", 0, NULL },
    };

    /* strf()'s strings do not last (packed_value makes many): copies */
    for (i = 0, len = 0; i < 3; i++) {
        snprintf(ts[i], sizeof(ts[i]), "%.*s", 13, rs[i].id);
        snprintf(rec, sizeof(rec), "%s", packed_value(&rs[i], ts[i]));
        len += (size_t) snprintf(v + len, sizeof(v) - len, "%zu:%s,",
                                 strlen(rec), rec);
        snprintf(mem[i], sizeof(mem[i]), "00%s:" W1 ":%s", ts[i], id);
        if (i > 0) {
            snprintf(mem[i] + strlen(mem[i]), 8, ".%zu", i);
        }
    }

    snprintf(tail, sizeof(tail), "%s", apply_line(W1, one, 1));
    snprintf(rec, sizeof(rec), "%s",
             packed_value(&one[0], "1767225600200"));

    /* the exact script (a dedup ttl): a batch entry, then a plain one */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "batch entry: reading");
    fake_resp_array(&R, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K1);
    fake_resp_array(&R, 2);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, id);
    fake_resp_array(&R, 2);
    resp_field(CFCOST_R_BATCH, v);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, one[0].id);
    fake_resp_array(&R, 2);
    resp_field(CFCOST_R_PACKED, rec);
    ok(answer(block_line(k1_only, 1)), "batch entry: 2 entries, 4 records");

    want = strf("EVALSHA " SHA_APPLY " 0 " K1 " g %u 4 "
                "%s r1 " DAY0 " " DNUM0 " alice k1 @cf/m 10 20 3 1 "
                "500000000000 %s 0000000176722560013000000000000000000002 "
                " r2 " DAY0 " " DNUM0 " bob k2 @cf/m 5 0 0 0 7 %s  "
                " r3 " DAY0 " " DNUM0 " alice k1 @cf/m 1 1 0 0 1 %s  "
                "%s", agg.conf.dedup_ttl_s, id, mem[0], mem[1], mem[2],
                tail + strlen("EVALSHA " SHA_APPLY " 0 " K1 " g ")
                + (size_t) snprintf(NULL, 0, "%u 1 ",
                                    agg.conf.dedup_ttl_s));
    is_str(sent(), want, "batch entry: a group per record, the entry's id "
           "with the first");
    resp_applied(4, 0, 0);
    ok(answer(want), "batch entry: applied");
    is_u64(agg.applied, 4, "batch entry: 4 records counted");
    world_end();

    /* the summed script: the id once, 3 records counted */
    world_start();
    agg.conf.dedup_ttl_s = 0;
    ok(connect_and_read(one_writer, 1, 1), "batch entry: reading, summed");
    fake_resp_array(&R, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, K1);
    fake_resp_array(&R, 1);
    fake_resp_array(&R, 2);
    fake_resp_bulk(&R, id);
    fake_resp_array(&R, 2);
    resp_field(CFCOST_R_BATCH, v);
    ok(answer(block_line(k1_only, 1)), "batch entry: 1 entry, 3 records");
    want = strf("EVALSHA " SHA_SUM " 0 " K1 " g 1 3 12 212 5 2 %s "
                "cfcost:logb:" BKT ":all cfcost:logbs:all " BKT " "
                "%s\n%s\n%s\n ", id, mem[0], mem[1], mem[2]);
    ok(strncmp(sent(), want, strlen(want)) == 0,
       "batch entry: the summed script names the entry once and indexes "
       "each record");
    resp_applied(3, 0, 0);
    ok(answer(sent()), "batch entry: applied");
    is_u64(agg.applied, 3, "batch entry: 3 counted");
    is_str(sent(), block_line(k1_only, 1), "batch entry: then the next read");
    world_end();
}


/* ---- errors ------------------------------------------------------------- */


static const char  *retryable[] = {
    "LOADING Redis is loading the dataset in memory",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL "
        "or SHUTDOWN NOSAVE.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "MISCONF Redis is configured to save RDB snapshots, but it's "
        "currently unable to persist to disk.",
    "READONLY You can't write against a read only replica.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is "
        "set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "ERR Error running script (call to f_0): @user_script:1: something",
    NULL
};


static void
test_apply_retry(void)
{
    int          i;
    char         first[4096], code[16];

    for (i = 0; retryable[i] != NULL; i++) {
        snprintf(code, sizeof(code), "%.*s",
                 (int) strcspn(retryable[i], " "), retryable[i]);

        world_start();
        ok(connect_and_read(one_writer, 1, 1), "%s: reading", code);

        resp_read(K1, e12, 2);
        ok(answer(block_line(k1_only, 1)), "%s: 2 entries", code);
        snprintf(first, sizeof(first), "%s", sent());

        ok(answer_error(first, retryable[i]), "%s: the apply script fails",
           code);
        ok(agg.applied == 0 && agg.redis_errors == 1, "%s: nothing "
           "counted, the error is", code);
        ok(fake_redis_inflight(rd) == 0 && paused(),
           "%s: a pause, nothing sent meanwhile", code);

        fire();
        resp_read(K1, e12, 2);
        ok(answer(pending_line(K1, "0")), "%s: the entries read again "
           "from our pending list", code);
        is_str(sent(), first, "%s: the same batch again, byte for byte",
               code);

        resp_applied(2, 0, 0);
        ok(answer(first), "%s: applied", code);
        is_u64(agg.applied, 2, "%s: counted once", code);
        ok(no_pending(K1, "1767225600124-0"), "%s: the rest of our "
           "pending list", code);
        is_str(sent(), block_line(k1_only, 1), "%s: reading on", code);

        world_end();
    }
}


static void
test_noscript_nogroup(void)
{
    char         first[4096];

    /* NOSCRIPT: the scripts are gone (SCRIPT FLUSH, a new Redis) */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "NOSCRIPT: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "NOSCRIPT: 2 entries");
    snprintf(first, sizeof(first), "%s", sent());
    ok(answer_error(first, "NOSCRIPT No matching script. Please use EVAL."),
       "NOSCRIPT: the apply script is unknown");
    ok(!cfcost_consumer_ready(agg.consumer) && paused(),
       "NOSCRIPT: not ready, a pause");

    fire();
    ok(set_up(), "NOSCRIPT: CLIENT ID and the scripts loaded again");
    ok(discover(one_writer, 1) && grouped(K1),
       "NOSCRIPT: streams and groups again");
    resp_read(K1, e12, 2);
    ok(answer(pending_line(K1, "0")), "NOSCRIPT: our pending entries");
    resp_applied(2, 0, 0);
    ok(answer(first), "NOSCRIPT: the same batch, applied");
    is_u64(agg.applied, 2, "NOSCRIPT: counted once");
    world_end();

    /* NOGROUP on the read: the group is created again */
    world_start();
    ok(connect_and_read(two_writers, 2, 1), "NOGROUP: reading");
    ok(answer_error(block_line((const char *[]) { K1, K2 }, 2),
                    "NOGROUP No such key '" K1 "' or consumer group 'g' "
                    "in XREADGROUP with GROUP option"),
       "NOGROUP: on the BLOCK read");
    ok(paused(), "NOGROUP: a pause");
    fire();

    cap_start();
    fake_resp_array(&R, 2);
    fake_resp_int(&R, 1);
    fake_resp_bulk(&R, "1767225600099-18446744073709551615");
    ok(answer(group_line(K1)), "NOGROUP: the group script on " K1);
    fake_resp_array(&R, 2);
    fake_resp_int(&R, 0);
    fake_resp_bulk(&R, "0");
    ok(answer(group_line(K2)), "NOGROUP: ... and on " K2);
    ok(strstr(cap_end(), "created on " K1
              " after 1767225600099-18446744073709551615") != NULL,
       "NOGROUP: recreated below its oldest hole (the script's answer)");
    is_str(sent(), block_line((const char *[]) { K1, K2 }, 2),
           "NOGROUP: reading on");
    world_end();

    /* NOGROUP on the apply script: groups again, then our pending */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "NOGROUP apply: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "NOGROUP apply: 2 entries");
    snprintf(first, sizeof(first), "%s", sent());
    ok(answer_error(first, "NOGROUP No such key '" K1 "' or consumer "
                    "group 'g'"), "NOGROUP apply: the script fails");
    ok(paused(), "NOGROUP apply: a pause");
    fire();
    ok(grouped(K1), "NOGROUP apply: the group created again");
    ok(no_pending(K1, "0"), "NOGROUP apply: the new group has nothing "
       "pending with us");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "NOGROUP apply: it delivers the "
       "entries again");
    is_str(sent(), first, "NOGROUP apply: the same batch");
    resp_applied(0, 0, 2);
    ok(answer(first), "NOGROUP apply: ... (stale, says the script)");
    ok(agg.applied == 0 && agg.stale == 2, "NOGROUP apply: stale, not "
       "counted");
    world_end();
}


/* A reply lost: the connection drops, or the reply deadline passes. */
static void
test_reply_lost(void)
{
    char         first[4096];
    size_t       n;

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "lost reply: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "lost reply: 2 entries");
    snprintf(first, sizeof(first), "%s", sent());

    fake_redis_drop(rd);
    ok(!cfcost_consumer_ready(agg.consumer), "lost reply: the connection "
       "drops with the apply script in flight");
    ok(timer_ms() == -1, "lost reply: no timer: the reconnect resumes");

    n = fake_redis_sent(rd);
    fire();
    is_u64(fake_redis_sent(rd), n, "lost reply: nothing sent while down");

    fake_redis_connect(rd);
    ok(set_up(), "lost reply: set-up on the new connection");
    ok(discover(one_writer, 1) && grouped(K1), "lost reply: streams, "
       "groups");
    resp_read(K1, e12, 2);
    ok(answer(pending_line(K1, "0")), "lost reply: the entries are still "
       "pending with us");
    is_str(sent(), first, "lost reply: the same batch again");
    resp_applied(0, 0, 2);
    ok(answer(first), "lost reply: the script had run: all stale");
    ok(agg.applied == 0 && agg.stale == 2, "lost reply: nothing counted "
       "twice");
    ok(no_pending(K1, "1767225600124-0") && no_claim(K1),
       "lost reply: the rest of the pending list, the claim pass");
    is_str(sent(), block_line(k1_only, 1), "lost reply: reading on");
    world_end();

    /* no answer at all: the reply deadline */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "no reply: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "no reply: 2 entries");
    snprintf(first, sizeof(first), "%s", sent());

    mono += TIMEOUT_MS;
    ok(!fake_redis_watch(rd), "no reply: still waiting at the timeout");
    mono += 1;
    ok(fake_redis_watch(rd), "no reply: dropped after it");
    ok(!cfcost_consumer_ready(agg.consumer), "no reply: not ready");

    fake_redis_connect(rd);
    ok(set_up() && discover(one_writer, 1) && grouped(K1),
       "no reply: set-up, streams, groups");
    resp_read(K1, e12, 2);
    ok(answer(pending_line(K1, "0")), "no reply: our pending entries");
    resp_applied(2, 0, 0);
    ok(answer(first), "no reply: the same batch, applied this time");
    is_u64(agg.applied, 2, "no reply: counted once");
    world_end();
}


static void
test_block_deadline(void)
{
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "BLOCK: reading");

    mono += TIMEOUT_MS + BLOCK_MS;
    ok(!fake_redis_watch(rd), "BLOCK: not dropped at timeout + block");
    mono += 1;
    ok(fake_redis_watch(rd), "BLOCK: dropped after timeout + block");
    ok(!cfcost_consumer_ready(agg.consumer), "BLOCK: not ready");

    fake_redis_connect(rd);
    ok(connect_and_read(one_writer, 1, 1), "BLOCK: reading again after "
       "the reconnect");

    /* any other command has the plain deadline */
    fake_resp_nil_array(&R);
    ok(answer(block_line(k1_only, 1)), "BLOCK: nil");
    is_str(sent(), "SMEMBERS " CFCOST_WRITERS_SET, "BLOCK: discovery");
    is_u64(fake_redis_peek(rd)->extra_ms, 0, "BLOCK: SMEMBERS has no "
           "extra time");
    mono += TIMEOUT_MS + 1;
    ok(fake_redis_watch(rd), "BLOCK: SMEMBERS dropped after the timeout");
    world_end();
}


/*
 * A read blocks no longer than until the next look for new writers (once a
 * second), whatever --block says: a new writer's records would wait for it.
 */
static void
test_block_bound(void)
{
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "block bound: reading");

    mono += 400;
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "block bound: 2 new entries, "
       "400 ms after the discovery");
    resp_applied(2, 0, 0);
    ok(answer(apply_line(W1, e12, 2)), "block bound: applied");
    is_str(sent(), "XREADGROUP GROUP g c1 COUNT 512 BLOCK 600 STREAMS " K1
           " >", "block bound: the next read blocks 600 ms, until the next "
           "discovery");
    is_u64(fake_redis_peek(rd)->extra_ms, 600,
           "block bound: its reply deadline says so");

    mono += 600;
    fake_resp_array(&R, 0);
    ok(answer("XREADGROUP GROUP g c1 COUNT 512 BLOCK 600 STREAMS " K1 " >"),
       "block bound: nothing came");
    ok(discover(one_writer, 1), "block bound: discovery");
    is_str(sent(), block_line(k1_only, 1), "block bound: a full --block "
           "after it");
    world_end();
}


static void
test_reconnect(void)
{
    unsigned     i, lo, hi, got;
    char         first[4096];

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "reconnect: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "reconnect: 2 entries");
    snprintf(first, sizeof(first), "%s", sent());
    ok(answer_error(first, "LOADING Redis is loading"), "reconnect: "
       "LOADING");
    ok(paused(), "reconnect: a pause");

    fake_redis_drop(rd);
    ok(timer_ms() == -1, "reconnect: the pause ends with the connection");

    /* the connection fails again half-way through the set-up */
    fake_redis_connect(rd);
    fake_resp_int(&R, 8);
    ok(answer("CLIENT ID"), "reconnect: CLIENT ID");
    fake_redis_drop(rd);
    fake_redis_connect(rd);
    ok(set_up(), "reconnect: the whole set-up again");
    ok(discover(one_writer, 1) && grouped(K1), "reconnect: groups again");
    resp_read(K1, e12, 2);
    ok(answer(pending_line(K1, "0")), "reconnect: our pending entries");
    resp_applied(2, 0, 0);
    ok(answer(first), "reconnect: the same batch, applied");
    is_u64(agg.applied, 2, "reconnect: counted once");
    world_end();

    /* the backoff of cfcost_agg_redis.c between connect attempts */
    for (i = 0; i < 9; i++) {
        hi = 100u << (i < 6 ? i : 6);
        hi = hi > 5000 ? 5000 : hi;
        lo = hi * 3 / 4;
        hi = lo + hi / 2;
        got = cfcost_backoff_ms(i, 100, 5000, 0);
        is_u64(got, lo, "backoff after %u failures: at least %u ms", i, lo);
        got = cfcost_backoff_ms(i, 100, 5000, 2147483647L);
        ok(got >= lo && got <= hi, "backoff after %u failures: %u ms, "
           "at most %u", i, got, hi);
    }
    is_u64(cfcost_backoff_ms(1000000, 100, 5000, 2500), 3750 + 2500,
           "backoff: capped at 5 s (+25%%) however many failures");
}


/* ---- records that cannot be counted as they are ------------------------- */


static void
test_malformed(void)
{
    const char  *log, *want;
    const ent_t  bad[] = {
        { "1767225600300-0", "r9", "alice", "k1", "@cf/m", "12x",
          "99999999999", "", "-5", 0, NULL },
    };

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "malformed: reading");

    cap_start();
    resp_read(K1, bad, 1);
    ok(answer(block_line(k1_only, 1)), "malformed: an entry with bad "
       "numbers");
    log = cap_end();

    want = "EVALSHA " SHA_APPLY " 0 " K1 " g 1 1 1767225600300-0 r9 " DAY0
           " " DNUM0 " alice k1 @cf/m 0 0 0 0 0 001767225600300:" W1
           ":1767225600300-0 0000000176722560030000000000000000000000";
    is_str(sent(), want, "malformed: counted with 0 for each bad number");
    ok(strstr(log, "entry 1767225600300-0 has a malformed or out-of-range "
              "number; counted as 0") != NULL, "malformed: logged");

    resp_applied(1, 0, 0);
    ok(answer(want), "malformed: applied");
    ok(agg.applied == 1 && agg.invalid == 0, "malformed: the request "
       "counted");
    is_str(sent(), block_line(k1_only, 1), "malformed: the stream goes on");
    world_end();
}


/* Schema 2: one packed field, read as schema 1's pairs are; a later
 * version's extra fields ignored; a value that is not netstrings still a
 * request, with what could be read. */
static void
test_packed(void)
{
    char         later[1024];
    const char  *log, *want;
    ent_t        p12[2], bad[3];

    /* strf()'s strings do not last: this one must */
    snprintf(later, sizeof(later), "%s7:a later,",
             packed_value(&e12[1], "1767225600124"));

    p12[0] = e12[0];
    p12[1] = e12[1];
    p12[0].packed = "";
    p12[1].packed = later;

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "packed: reading");
    resp_read(K1, p12, 2);
    ok(answer(block_line(k1_only, 1)), "packed: 2 packed entries");
    is_str(sent(), apply_line(W1, e12, 2), "packed: the arguments of the "
           "same records in pairs");
    resp_applied(2, 0, 0);
    ok(answer(apply_line(W1, e12, 2)), "packed: applied");
    world_end();

    bad[0] = e12[0];
    bad[0].id = "1767225600300-0";
    bad[0].packed = "1:2,2:r9,13:1767225600300,2:k1,5:alice,5:@cf/m,0:,"
                    "4:chat,3:200,3:200,2:12,1:3,0:,9:";
    bad[1] = bad[0];
    bad[1].id = "1767225600301-0";
    bad[1].packed = "1:2,2:r8,";
    bad[2] = bad[0];
    bad[2].id = "1767225600302-0";
    bad[2].packed = "junk";

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "packed: reading again");
    cap_start();
    resp_read(K1, bad, 3);
    ok(answer(block_line(k1_only, 1)), "packed: 3 broken ones");
    log = cap_end();

    want = "EVALSHA " SHA_APPLY " 0 " K1 " g 1 3 "
           "1767225600300-0 r9 " DAY0 " " DNUM0 " alice k1 @cf/m 12 3 0 0 0 "
           "001767225600300:" W1 ":1767225600300-0 "
           "0000000176722560030000000000000000000000 "
           "1767225600301-0 r8 " DAY0 " " DNUM0 "    0 0 0 0 0 "
           "001767225600301:" W1 ":1767225600301-0 "
           "0000000176722560030100000000000000000000 "
           "1767225600302-0 entry:1767225600302-0 " DAY0 " " DNUM0
           "    0 0 0 0 0 001767225600302:" W1 ":1767225600302-0 "
           "0000000176722560030200000000000000000000";
    is_str(sent(), want, "packed: each counted with what could be read");
    ok(strstr(log, "entry 1767225600300-0 is not a record a gateway "
              "writes") != NULL
       && strstr(log, "entry 1767225600302-0 is not a record") != NULL,
       "packed: logged");
    world_end();
}


/* Entries a dead consumer left pending: below the applied position, the
 * script counts them as the holes they are. */
static void
test_claim(void)
{
    const char  *log, *want;
    const ent_t  claimed[] = {
        { "1767225600050-0", "", "", "", "", "", "", "", "", 1, NULL },
        { "1767225600051-0", "r5", "dave", "k5", "@cf/m", "4", "4", "0",
          "8", 0, NULL },
    };
    const ent_t  more[] = {
        { "1767225600052-0", "r6", "dave", "k5", "@cf/m", "1", "1", "0",
          "2", 0, NULL },
    };

    world_start();
    ok(connect_and_read(one_writer, 1, 0), "claim: up to the claim pass");

    cap_start();
    resp_claim("1767225600052-0", claimed, 2);
    ok(answer(claim_line(K1, "0-0")), "claim: XAUTOCLAIM takes 2 entries "
       "of a dead consumer");
    log = cap_end();
    ok(strstr(log, "reclaimed 2 entries of " K1) != NULL,
       "claim: logged");
    ok(strstr(log, "entry 1767225600050-0 has no fields") != NULL,
       "claim: one was deleted while pending: logged");

    want = apply_line(W1, claimed, 2);
    is_str(sent(), want, "claim: its id alone, the other in full");
    resp_applied(1, 0, 0);
    ok(answer(want), "claim: applied (the holes filled)");
    ok(agg.applied == 1 && agg.invalid == 1, "claim: 1 counted, 1 only "
       "acknowledged");

    resp_claim("0-0", more, 1);
    ok(answer(claim_line(K1, "1767225600052-0")), "claim: on from the "
       "cursor");
    resp_applied(1, 0, 0);
    ok(answer(apply_line(W1, more, 1)), "claim: applied");
    is_str(sent(), block_line(k1_only, 1), "claim: pass over, reading");

    /* the next pass after claim-idle / 2 */
    fake_resp_nil_array(&R);
    ok(answer(block_line(k1_only, 1)), "claim: nil read");
    ok(discover(one_writer, 1), "claim: discovery");
    is_str(sent(), block_line(k1_only, 1), "claim: no pass before 15 s");
    mono += 15000;
    fake_resp_nil_array(&R);
    ok(answer(block_line(k1_only, 1)), "claim: nil read 15 s later");
    ok(discover(one_writer, 1), "claim: discovery");
    is_str(sent(), claim_line(K1, "0-0"), "claim: the next pass");
    world_end();
}


/*
 * A script error that comes from the entries themselves (a key of the
 * wrong type): the batch is retried entry by entry, and only the entry
 * that fails alone is acknowledged uncounted.
 */
static void
test_poison(void)
{
    size_t       i;
    const char  *log, *skip;
    ent_t        e[17];
    char         ids[17][32], rids[17][8];
    const ent_t  three[] = {
        { "1767225600400-0", "p1", "u", "k", "@cf/m", "1", "1", "0", "1", 0, NULL },
        { "1767225600401-0", "p2", "u", "k", "@cf/m", "1", "1", "0", "1", 0, NULL },
        { "1767225600402-0", "p3", "u", "k", "@cf/m", "1", "1", "0", "1", 0, NULL },
    };

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "poison: reading");

    resp_read(K1, three, 3);
    ok(answer(block_line(k1_only, 1)), "poison: 3 entries");

    cap_start();
    ok(answer_error(apply_line(W1, three, 3), "WRONGTYPE Operation against "
                    "a key holding the wrong kind of value"),
       "poison: WRONGTYPE from the batch");
    log = cap_end();
    ok(strstr(log, "retrying its entries one by one") != NULL,
       "poison: logged");
    ok(timer_ms() == -1, "poison: no pause");

    resp_read(K1, three, 1);
    ok(answer(single_line(K1, "0")), "poison: the first entry alone");
    resp_applied(1, 0, 0);
    ok(answer(apply_line(W1, three, 1)), "poison: it applies");

    resp_read(K1, three + 1, 1);
    ok(answer(single_line(K1, "1767225600400-0")), "poison: the second");
    cap_start();
    ok(answer_error(apply_line(W1, three + 1, 1), "WRONGTYPE Operation "
                    "against a key holding the wrong kind of value"),
       "poison: it fails alone");
    log = cap_end();
    ok(strstr(log, "entry 1767225600401-0 of " K1 " cannot be applied "
              "(WRONGTYPE") != NULL, "poison: logged as an error");

    /* no padded id either: the script pads this one itself */
    skip = "EVALSHA " SHA_APPLY " 0 " K1 " g 1 1 1767225600401-0"
           "             ";
    is_str(sent(), skip, "poison: acknowledged only (no request id)");
    resp_applied(0, 0, 0);
    ok(answer(skip), "poison: acknowledged");
    is_u64(agg.invalid, 1, "poison: counted as invalid");

    resp_read(K1, three + 2, 1);
    ok(answer(single_line(K1, "1767225600401-0")), "poison: the third");
    resp_applied(1, 0, 0);
    ok(answer(apply_line(W1, three + 2, 1)), "poison: it applies");
    resp_read(K1, NULL, 0);
    ok(answer(single_line(K1, "1767225600402-0")), "poison: no more");
    is_str(sent(), block_line(k1_only, 1), "poison: back to batches");
    is_u64(agg.applied, 2, "poison: 2 of 3 counted");
    world_end();

    /* 16 in a row are skipped, not a 17th: something shared is broken */
    for (i = 0; i < 17; i++) {
        snprintf(ids[i], sizeof(ids[i]), "17672256005%02zu-0", i);
        snprintf(rids[i], sizeof(rids[i]), "q%zu", i);
        e[i] = three[0];
        e[i].id = ids[i];
        e[i].rid = rids[i];
    }

    world_start();
    ok(connect_and_read(one_writer, 1, 1), "poison run: reading");
    resp_read(K1, e, 17);
    ok(answer(block_line(k1_only, 1)), "poison run: 17 entries");
    ok(answer_error(apply_line(W1, e, 17), "WRONGTYPE x"),
       "poison run: the batch fails");

    for (i = 0; i < 16; i++) {
        resp_read(K1, &e[i], 1);
        if (!answer(single_line(K1, i ? ids[i - 1] : "0"))
            || !answer_error(apply_line(W1, &e[i], 1), "WRONGTYPE x"))
        {
            break;
        }
        resp_applied(0, 0, 0);
        if (!answer(strf("EVALSHA " SHA_APPLY " 0 " K1 " g 1 1 %s"
                         "             ", ids[i])))
        {
            break;
        }
    }
    is_u64(i, 16, "poison run: 16 skipped one by one");
    is_u64(agg.invalid, 16, "poison run: 16 invalid");

    resp_read(K1, &e[16], 1);
    ok(answer(single_line(K1, ids[15])), "poison run: the 17th");
    cap_start();
    ok(answer_error(apply_line(W1, &e[16], 1), "WRONGTYPE x"),
       "poison run: it fails too");
    log = cap_end();
    ok(strstr(log, "skipping no more, retrying") != NULL,
       "poison run: not skipped: logged");
    ok(paused() && fake_redis_inflight(rd) == 0, "poison run: a pause");
    is_u64(agg.invalid, 16, "poison run: still 16 invalid");

    fire();
    resp_read(K1, &e[16], 1);
    ok(answer(single_line(K1, "0")), "poison run: our pending again");
    resp_applied(1, 0, 0);
    ok(answer(apply_line(W1, &e[16], 1)), "poison run: the 17th applies "
       "once the shared key is repaired");
    is_u64(agg.applied, 1, "poison run: counted");
    world_end();
}


/* ---- moving an old log index -------------------------------------------- */


static void
test_move_index(void)
{
    const char  *log;

    /* more than a chunk: the rest between reads, which block briefly */
    world_start();
    first_move_next = "0";
    first_move_n = 2000;
    ok(connect_and_read(one_writer, 1, 0), "move: the first chunk in the "
       "set-up, more to come");

    cap_start();
    resp_moved("0", 1000);
    ok(answer("EVALSHA " SHA_MOVE " 0 0 2000"), "move: the next chunk "
       "before the first read, from the cursor");
    ok(no_claim(K1), "move: then the claim pass (another step)");
    resp_moved("0", 0);
    ok(answer("EVALSHA " SHA_MOVE " 0 0 2000"), "move: a chunk after each "
       "other step");
    is_str(sent(), "XREADGROUP GROUP g c1 COUNT 512 BLOCK 10 STREAMS " K1
           " >", "move: a read between chunks blocks 10 ms at most");

    fake_resp_nil_array(&R);
    ok(answer("XREADGROUP GROUP g c1 COUNT 512 BLOCK 10 STREAMS " K1 " >"),
       "move: nothing read");
    ok(discover(one_writer, 1), "move: discovery, as after any empty read");
    resp_moved("", 100);
    ok(answer("EVALSHA " SHA_MOVE " 0 0 2000"), "move: the last chunk");
    log = cap_end();
    ok(strstr(log, "3100 members of the old index moved into buckets")
       != NULL, "move: its end logged with the count");
    is_str(sent(), block_line(k1_only, 1), "move: done, reads block as "
           "long as before");
    world_end();

    /* what is wrong stops the move, loudly, not the accounting */
    world_start();
    first_move_next = "all";
    first_move_n = 0;
    first_move_status = "cfcost:logbs:all is a string, not a zset";
    cap_start();
    ok(connect_and_read(one_writer, 1, 1), "move: a key of the wrong type: "
       "reading as usual, no more chunks");
    log = cap_end();
    ok(strstr(log, "error: log index: moving the old index: cfcost:logbs:all"
              " is a string, not a zset; left as it is") != NULL,
       "move: what is wrong logged as an error");
    world_end();

    first_move_next = "";
    first_move_status = "more";
}


/* ---- retention ---------------------------------------------------------- */


static void
test_retention(void)
{
    const char  *log, *want;

    world_start();
    agg.conf.retention_days = 30;
    ok(connect_and_read(one_writer, 1, 1), "retention: reading (not in "
       "the first second)");

    mono += 1000;
    fake_resp_nil_array(&R);
    ok(answer(block_line(k1_only, 1)), "retention: nil read");
    ok(discover(one_writer, 1), "retention: discovery");

    want = strf("EVALSHA " SHA_TRIM " 0 " K1 " %lld 2592000000 0 "
                "4096 " W1, (long long) cfcost_now_ms());
    cap_start();
    fake_resp_array(&R, 3);
    fake_resp_int(&R, 3);
    fake_resp_int(&R, T0);
    fake_resp_int(&R, 0);
    ok(answer(want), "retention: the trim script");
    log = cap_end();
    ok(strstr(log, "trimmed 3 entries of " K1 "; it now starts at "
              "2026-01-01T00:00:00.000Z") != NULL, "retention: logged");

    cap_start();
    fake_resp_array(&R, 3);
    fake_resp_array(&R, 6);
    resp_field("name", "old");
    fake_resp_bulk(&R, "pending");
    fake_resp_int(&R, 0);
    fake_resp_bulk(&R, "idle");
    fake_resp_int(&R, 3600001);
    fake_resp_array(&R, 6);
    resp_field("name", "c1");
    fake_resp_bulk(&R, "pending");
    fake_resp_int(&R, 0);
    fake_resp_bulk(&R, "idle");
    fake_resp_int(&R, 99999999);
    fake_resp_array(&R, 6);
    resp_field("name", "busy");
    fake_resp_bulk(&R, "pending");
    fake_resp_int(&R, 2);
    fake_resp_bulk(&R, "idle");
    fake_resp_int(&R, 99999999);
    ok(answer("XINFO CONSUMERS " K1 " g"), "retention: XINFO CONSUMERS");
    log = cap_end();
    ok(strstr(log, "forgetting idle consumer old") != NULL,
       "retention: an idle consumer holding nothing is forgotten");

    fake_resp_int(&R, 1);
    ok(answer("XGROUP DELCONSUMER " K1 " g old"), "retention: only it "
       "(not us, not one with entries pending)");

    cap_start();
    fake_resp_array(&R, 2);
    fake_resp_int(&R, 12);
    fake_resp_int(&R, 0);
    ok(answer("EVALSHA " SHA_LOGBT " 0 300000 4000"), "retention: then the "
       "log index's, once per pass");
    log = cap_end();
    ok(strstr(log, "12 log index buckets removed") != NULL,
       "retention: logged");
    is_str(sent(), block_line(k1_only, 1), "retention: reading on");
    world_end();
}


/* ---- stopping ----------------------------------------------------------- */


static void
test_stop(void)
{
    size_t  n;

    /* during a BLOCK read: CLIENT UNBLOCK on the other connection */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "stop: reading");
    cfcost_consumer_stop(agg.consumer, on_stopped, NULL);
    is_str(sent_on(hrd), "CLIENT UNBLOCK 7", "stop: CLIENT UNBLOCK of our "
           "CLIENT ID, on the HTTP connection");
    fake_resp_int(&R, 1);
    ok(answer_on(hrd, "CLIENT UNBLOCK 7"), "stop: unblocked");

    n = fake_redis_sent(rd);
    fake_resp_nil_array(&R);
    ok(answer(block_line(k1_only, 1)), "stop: the read returns nil");
    is_u64(stopped, 0, "stop: done() not from inside the reply callback");
    event_base_loop(agg.base, EVLOOP_NONBLOCK);
    is_u64(stopped, 1, "stop: done() from the loop");
    is_u64(fake_redis_sent(rd), n, "stop: nothing sent after");
    world_end();

    /* during an apply script: it finishes, nothing after */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "stop: reading");
    resp_read(K1, e12, 2);
    ok(answer(block_line(k1_only, 1)), "stop: 2 entries");
    cfcost_consumer_stop(agg.consumer, on_stopped, NULL);
    is_u64(fake_redis_inflight(hrd), 0, "stop: no CLIENT UNBLOCK for a "
           "script");
    n = fake_redis_sent(rd);
    resp_applied(2, 0, 0);
    ok(answer(apply_line(W1, e12, 2)), "stop: the batch in flight "
       "finishes");
    event_base_loop(agg.base, EVLOOP_NONBLOCK);
    ok(stopped == 1 && agg.applied == 2, "stop: applied, then done()");
    is_u64(fake_redis_sent(rd), n, "stop: nothing sent after");
    world_end();

    /* during a pause */
    world_start();
    ok(connect_and_read(one_writer, 1, 1), "stop: reading");
    ok(answer_error(block_line(k1_only, 1), "LOADING x"), "stop: LOADING");
    cfcost_consumer_stop(agg.consumer, on_stopped, NULL);
    event_base_loop(agg.base, EVLOOP_NONBLOCK);
    ok(stopped == 1 && timer_ms() == -1, "stop: done() at once, the pause "
       "cancelled");
    world_end();
}


int
main(int argc, char **argv)
{
    (void) argc;
    (void) argv;

    quiet_level = getenv("TEST_VERBOSE") ? CFCOST_LOG_DEBUG : -1;
    cfcost_log_level = quiet_level;

    test_setup_and_discovery();
    test_no_writers();
    test_writer_cap();
    test_batch();
    test_packed();
    test_sum();
    test_batch_entry();
    test_apply_retry();
    test_noscript_nogroup();
    test_reply_lost();
    test_block_deadline();
    test_block_bound();
    test_reconnect();
    test_malformed();
    test_claim();
    test_poison();
    test_retention();
    test_move_index();
    test_stop();

    fake_resp_free(&R);

    return done_testing();
}
