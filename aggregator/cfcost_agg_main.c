/*
 * cfcost-aggregator: turns the usage records the gateway writes to Redis
 * into rollups, and serves them: /api/usage, /api/usage/logs,
 * /api/usage/timeseries, /metrics, /healthz.  See cfcost_agg.h for the
 * parts.
 *
 * This file: command-line flags, signals, and the order things start and
 * stop in.
 */

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_consumer.h"
#include "cfcost_agg_http.h"


#define CFCOST_DEFAULT_VAR      "./var"
#define CFCOST_BATCH_MAX        4096

#define CFCOST_EXIT_OK          0
#define CFCOST_EXIT_FAILED      1
#define CFCOST_EXIT_USAGE       2


#define CFCOST_HELP                                                          \
"usage: cfcost-aggregator [OPTIONS]\n"                                       \
"\n"                                                                         \
"Reads the usage records the cfcost gateway writes, one Redis stream per\n" \
"writer (\"" CFCOST_RECORD_STREAM_PREFIX "<writer>"                        \
CFCOST_RECORD_STREAM_SUFFIX "\", the writers listed in \""                 \
CFCOST_WRITERS_SET "\";\n"                                                   \
"new ones are found within a second, idle or not), through a\n"             \
"consumer group, keeps rollups per user, API key, model and UTC day\n"      \
"(requests, input/output/cached tokens, exact cost in picodollars), and\n"  \
"serves them over HTTP.  Each record is counted exactly once: across\n"     \
"crashes (kill -9), Redis restarts, a lost consumer group, records the\n"   \
"gateway sent twice (same request_id) and several aggregators sharing\n"    \
"the work.\n"                                                                \
"\n"                                                                         \
"Options (also --opt=VALUE):\n"                                              \
"  --listen ADDR        where to serve HTTP: unix:/path or a loopback\n"     \
"                       127.0.0.1:PORT / [::1]:PORT / localhost:PORT; any\n" \
"                       other address is refused (the identity headers are\n"\
"                       trusted).  Default unix:$CFCOST_VAR/agg.sock\n"      \
"  --socket-mode OCTAL  permissions of the unix socket (default 0666)\n"     \
"  --redis ADDR         unix:/path or HOST:PORT (numeric host or\n"          \
"                       localhost).  Default $CFCOST_REDIS, else\n"          \
"                       unix:$CFCOST_VAR/redis.sock; CFCOST_VAR defaults\n"  \
"                       to ./var\n"                                          \
"  --redis-auth FILE    Redis credentials: one line, \"USER PASSWORD\" (an\n"\
"                       ACL user) or \"PASSWORD\"; closed to other users\n"  \
"                       (default: no AUTH)\n"                              \
"  --redis-timeout MS   connect and reply timeout (default 5000); a BLOCK\n"\
"                       read's reply may take --block more\n"              \
"  --group NAME         consumer group (default cfcost-aggregator)\n"        \
"  --consumer NAME      consumer name, unique per process (default\n"        \
"                       HOSTNAME-PID)\n"                                     \
"  --batch N            entries per read and per apply script, 1..4096\n"    \
"                       (default 512)\n"                                     \
"  --block MS           how long a read waits for new entries (default\n"    \
"                       2000; at most until the next look for new\n"     \
"                       writers, once a second)\n"                          \
"  --linger MS          after a read of less than --batch entries, wait\n"  \
"                       this long before the next (default 20; 0: never):\n"\
"                       fewer, larger batches under light load, for at\n"   \
"                       most that much more delay before a record counts\n" \
"  --linger-rate N      linger only while more than N records a second\n"   \
"                       arrive (default 1000; 0: always): below it a\n"     \
"                       script per record costs little, and a record\n"    \
"                       counts within a millisecond or so\n"               \
"  --claim-idle MS      take over entries pending that long with another\n"  \
"                       (dead) consumer, via XAUTOCLAIM (default 30000)\n"   \
"  --retention-days N   trim stream entries older than N days (XTRIM\n"      \
"                       MINID); 0: no age limit (default 30)\n"              \
"  --retention-max N    keep at most N entries in each writer's stream\n"   \
"                       (XTRIM MAXLEN); 0: no length limit (default 0)\n"   \
"  --trim-interval S    seconds between retention passes (default 60)\n"     \
"  --dedup-ttl S        also drop a record whose request_id was applied\n"   \
"                       within S seconds (a marker key per record); 0,\n"    \
"                       the default: the gateway never appends a request\n"  \
"                       twice, so only other writers of the stream need it\n" \
"  --metrics-open       serve /metrics without the admin identity\n"         \
"  --metrics-users      also per-user series in /metrics (user names as\n"  \
"                       labels; off by default)\n"                          \
"  --trust-user USER    on the unix socket, identity headers count from\n"   \
"                       this user too (nginx's workers), besides the\n"      \
"                       aggregator's own user and root\n"                    \
"  --log-level LEVEL    error, warn, info or debug (default info)\n"         \
"  --help               this text\n"                                         \
"  --version            the version\n"                                       \
"\n"                                                                         \
"Retention trims the streams only, never the rollups, never an entry a\n"  \
"consumer group has not acknowledged; a stream left empty and idle for\n"   \
"--retention-days and a day is retired (deleted, its writer out of the\n"  \
"set, its applied position kept; a live writer registers again with its\n" \
"next record); logs\n"                                                      \
"older than the streams are reported in truncated_before.\n"                \
"\n"                                                                         \
"Identity (set by nginx, which strips them from clients):\n"                 \
"  X-Cfcost-User: USER  and  X-Cfcost-Key-Id: KEY_ID   an API key's user\n"  \
"  X-Cfcost-Admin: 1                                    the admin token\n"   \
"  Neither: 401.  A user asking for ?user=OTHER: 403.  The admin sees\n"     \
"  everyone combined, or one user with ?user=.\n"                            \
"\n"                                                                         \
"Routes (GET; dates YYYY-MM-DD, UTC, inclusive; money has 6 decimals):\n"    \
"  /api/usage              totals and by_model [from, to, user]\n"           \
"  /api/usage/logs         newest first [limit (1..1000, default 50),\n"     \
"                          cursor, model, status (code or 2xx..5xx), from,\n"\
"                          to, user, format=csv (all matching rows unless\n" \
"                          limit)]; next_cursor, truncated_before\n"         \
"  /api/usage/timeseries   bucket=day|week|month (weeks start Monday)\n"     \
"                          [from, to, user]\n"                               \
"  /metrics                Prometheus text (admin or metrics token, or\n"   \
"                          --metrics-open)\n"                                 \
"  /healthz                200 when Redis answers and the consumer runs\n"   \
"\n"                                                                         \
"SIGTERM or SIGINT: stop reading, finish the batch in flight, exit 0.\n"


typedef struct {
    const char   *name;
    int           has_arg;
    int           id;
} cfcost_flag_t;


enum {
    F_LISTEN, F_SOCKET_MODE, F_REDIS, F_REDIS_AUTH, F_REDIS_TIMEOUT, F_GROUP, F_CONSUMER,
    F_BATCH, F_BLOCK, F_LINGER, F_LINGER_RATE, F_CLAIM_IDLE, F_RET_DAYS, F_RET_MAX, F_TRIM_INTERVAL,
    F_DEDUP_TTL, F_METRICS_OPEN, F_METRICS_USERS, F_TRUST_USER,
    F_LOG_LEVEL, F_HELP, F_VERSION
};


static const cfcost_flag_t  cfcost_flags[] = {
    { "listen",          1, F_LISTEN },
    { "socket-mode",     1, F_SOCKET_MODE },
    { "redis",           1, F_REDIS },
    { "redis-auth",      1, F_REDIS_AUTH },
    { "redis-timeout",   1, F_REDIS_TIMEOUT },
    { "group",           1, F_GROUP },
    { "consumer",        1, F_CONSUMER },
    { "batch",           1, F_BATCH },
    { "block",           1, F_BLOCK },
    { "linger",          1, F_LINGER },
    { "linger-rate",     1, F_LINGER_RATE },
    { "claim-idle",      1, F_CLAIM_IDLE },
    { "retention-days",  1, F_RET_DAYS },
    { "retention-max",   1, F_RET_MAX },
    { "trim-interval",   1, F_TRIM_INTERVAL },
    { "dedup-ttl",       1, F_DEDUP_TTL },
    { "metrics-open",    0, F_METRICS_OPEN },
    { "metrics-users",   0, F_METRICS_USERS },
    { "trust-user",      1, F_TRUST_USER },
    { "log-level",       1, F_LOG_LEVEL },
    { "help",            0, F_HELP },
    { "version",         0, F_VERSION },
    { NULL, 0, 0 }
};


/* ---- flags -------------------------------------------------------------- */


static int
cfcost_usage_error(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "cfcost-aggregator: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see cfcost-aggregator --help)\n");

    return CFCOST_EXIT_USAGE;
}


/* Parses an unsigned number within [min, max] in base (10 or 8). */
/* a user name, or a number: the uid whose identity headers count */
static int
cfcost_flag_user(const char *name, const char *v, long *out)
{
    char           *end;
    unsigned long   n;
    struct passwd  *pw;

    pw = getpwnam(v);
    if (pw != NULL) {
        *out = (long) pw->pw_uid;
        return 0;
    }

    errno = 0;
    n = strtoul(v, &end, 10);

    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0
        || n > 0x7fffffffUL)
    {
        return cfcost_usage_error("--%s: no user \"%s\"", name, v);
    }

    *out = (long) n;
    return 0;
}


static int
cfcost_flag_num(const char *name, const char *v, unsigned min, unsigned max,
    int base, unsigned *out)
{
    char           *end;
    unsigned long   n;

    errno = 0;
    n = strtoul(v, &end, base);

    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0 || n < min
        || n > max)
    {
        return cfcost_usage_error("--%s: want a number from %u to %u, got "
                                  "\"%s\"", name, min, max, v);
    }

    *out = (unsigned) n;
    return 0;
}


static int
cfcost_flag_level(const char *v)
{
    int  level;

    level = cfcost_log_level_parse(v);
    if (level < 0) {
        return cfcost_usage_error("--log-level: want error, warn, info or "
                                  "debug");
    }

    cfcost_log_level = level;
    return 0;
}


static int
cfcost_flag_set(cfcost_agg_conf_t *c, const cfcost_flag_t *f, const char *v)
{
    switch (f->id) {
    case F_LISTEN:       c->listen = v; return 0;
    case F_REDIS:        c->redis = v; return 0;
    case F_REDIS_AUTH:   c->redis_auth = v; return 0;
    case F_GROUP:        c->group = v; break;
    case F_CONSUMER:     c->consumer = v; break;
    case F_METRICS_OPEN: c->metrics_open = 1; return 0;
    case F_METRICS_USERS: c->metrics_users = 1; return 0;
    case F_TRUST_USER: return cfcost_flag_user(f->name, v, &c->trust_uid);
    case F_LOG_LEVEL:    return cfcost_flag_level(v);

    case F_SOCKET_MODE:
        return cfcost_flag_num(f->name, v, 0, 0777, 8, &c->socket_mode);
    case F_REDIS_TIMEOUT:
        return cfcost_flag_num(f->name, v, 100, 600000, 10,
                               &c->redis_timeout_ms);
    case F_BATCH:
        return cfcost_flag_num(f->name, v, 1, CFCOST_BATCH_MAX, 10,
                               &c->batch);
    case F_BLOCK:
        return cfcost_flag_num(f->name, v, 10, 60000, 10, &c->block_ms);
    case F_LINGER:
        return cfcost_flag_num(f->name, v, 0, 1000, 10, &c->linger_ms);
    case F_LINGER_RATE:
        return cfcost_flag_num(f->name, v, 0, 100000000, 10,
                               &c->linger_rate);
    case F_CLAIM_IDLE:
        return cfcost_flag_num(f->name, v, 100, 86400000, 10,
                               &c->claim_idle_ms);
    case F_RET_DAYS:
        return cfcost_flag_num(f->name, v, 0, 36500, 10,
                               &c->retention_days);
    case F_RET_MAX:
        return cfcost_flag_num(f->name, v, 0, 2000000000, 10,
                               &c->retention_max);
    case F_TRIM_INTERVAL:
        return cfcost_flag_num(f->name, v, 1, 86400, 10,
                               &c->trim_interval_s);
    case F_DEDUP_TTL:
        return cfcost_flag_num(f->name, v, 60, 315360000, 10,
                               &c->dedup_ttl_s);
    }

    /* names go into Redis commands: no spaces, not empty */
    if (v[0] == '\0' || strpbrk(v, " \t\r\n") != NULL || strlen(v) > 200) {
        return cfcost_usage_error("--%s: want a name without spaces",
                                  f->name);
    }

    return 0;
}


/* Parses argv into c.  Returns -1 to go on, or the exit status. */
static int
cfcost_flags_parse(int argc, char **argv, cfcost_agg_conf_t *c)
{
    int                   i, rc;
    size_t                n;
    const char           *a, *v, *eq;
    const cfcost_flag_t  *f;

    for (i = 1; i < argc; i++) {
        a = argv[i];

        if (strncmp(a, "--", 2) != 0) {
            return cfcost_usage_error("unexpected argument \"%s\"", a);
        }

        a += 2;
        eq = strchr(a, '=');
        n = eq ? (size_t) (eq - a) : strlen(a);

        for (f = cfcost_flags; f->name != NULL; f++) {
            if (strlen(f->name) == n && strncmp(f->name, a, n) == 0) {
                break;
            }
        }

        if (f->name == NULL) {
            return cfcost_usage_error("unknown option \"%s\"", argv[i]);
        }

        if (f->id == F_HELP) {
            fputs(CFCOST_HELP, stdout);
            return CFCOST_EXIT_OK;
        }

        if (f->id == F_VERSION) {
            printf("cfcost-aggregator %s (schema %s)\n", CFCOST_AGG_VERSION,
                   CFCOST_SCHEMA_VERSION);
            return CFCOST_EXIT_OK;
        }

        v = NULL;
        if (f->has_arg) {
            if (eq != NULL) {
                v = eq + 1;
            } else if (i + 1 < argc) {
                v = argv[++i];
            } else {
                return cfcost_usage_error("--%s needs a value", f->name);
            }
        } else if (eq != NULL) {
            return cfcost_usage_error("--%s takes no value", f->name);
        }

        rc = cfcost_flag_set(c, f, v);
        if (rc != 0) {
            return rc;
        }
    }

    return -1;
}


static void
cfcost_conf_defaults(cfcost_agg_conf_t *c)
{
    memset(c, 0, sizeof(cfcost_agg_conf_t));

    c->group = "cfcost-aggregator";
    c->batch = 512;
    c->block_ms = 2000;
    c->linger_ms = 20;
    c->linger_rate = 1000;
    c->claim_idle_ms = 30000;
    c->retention_days = 30;
    c->retention_max = 0;
    c->trim_interval_s = 60;
    c->dedup_ttl_s = 0;
    c->trust_uid = -1;
    c->redis_timeout_ms = 5000;
    c->socket_mode = 0666;
}


/* Fills what depends on the environment: paths and the consumer name. */
static void
cfcost_conf_env(cfcost_agg_conf_t *c, char *listen, char *redis,
    char *consumer, size_t len)
{
    const char  *var, *env;
    char         host[256];

    var = getenv("CFCOST_VAR");
    if (var == NULL || var[0] == '\0') {
        var = CFCOST_DEFAULT_VAR;
    }

    if (c->listen == NULL) {
        snprintf(listen, len, "unix:%s/agg.sock", var);
        c->listen = listen;
    }

    if (c->redis == NULL) {
        env = getenv("CFCOST_REDIS");
        if (env != NULL && env[0] != '\0') {
            c->redis = env;
        } else {
            snprintf(redis, len, "unix:%s/redis.sock", var);
            c->redis = redis;
        }
    }

    if (c->consumer == NULL) {
        if (gethostname(host, sizeof(host)) != 0) {
            strcpy(host, "localhost");
        }
        host[sizeof(host) - 1] = '\0';
        host[strcspn(host, " \t\r\n")] = '\0';
        snprintf(consumer, len, "%s-%d", host, (int) getpid());
        c->consumer = consumer;
    }
}


/*
 * Refuses flags that parse one by one but not together.  Returns -1 to go
 * on, or the exit status.
 */
static int
cfcost_conf_check(const cfcost_agg_conf_t *c)
{
    if (strncmp(c->listen, "unix:", 5) == 0
        && strcmp(c->listen, c->redis) == 0)
    {
        return cfcost_usage_error("--listen and --redis name the same unix "
                                  "socket, %s", c->listen + 5);
    }

    if ((uint64_t) c->block_ms + c->redis_timeout_ms > 600000) {
        return cfcost_usage_error("--block %u with --redis-timeout %u: a "
                                  "read could wait more than 10 minutes "
                                  "for its reply", c->block_ms,
                                  c->redis_timeout_ms);
    }

    return -1;
}


/* ---- start and stop ----------------------------------------------------- */


static void
cfcost_agg_stopped(void *data)
{
    cfcost_agg_t  *agg = data;

    event_base_loopbreak(agg->base);
}


static void
cfcost_agg_signal(evutil_socket_t sig, short what, void *arg)
{
    cfcost_agg_t  *agg = arg;

    (void) what;

    if (agg->stopping) {
        cfcost_log_warn("signal %d again: exiting now", (int) sig);
        event_base_loopbreak(agg->base);
        return;
    }

    cfcost_log_info("signal %d: finishing the batch in flight, then exiting",
                    (int) sig);

    agg->stopping = 1;
    cfcost_consumer_stop(agg->consumer, cfcost_agg_stopped, agg);
}


static void
cfcost_agg_cleanup(cfcost_agg_t *agg)
{
    /* Redis first: requests waiting on it answer 503 and free themselves */
    cfcost_redis_destroy(agg->consumer_rd);
    cfcost_redis_destroy(agg->http_rd);
    cfcost_http_free(agg->http);
    cfcost_consumer_free(agg->consumer);
}


static int
cfcost_agg_start(cfcost_agg_t *agg)
{
    char           err[512];
    cfcost_addr_t  addr;

    /* the rules of every part (cfcost_addr.h); a name resolved now, once */
    if (cfcost_addr_parse(agg->conf.redis, strlen(agg->conf.redis), &addr,
                          err, sizeof(err)) != 0
        || cfcost_addr_resolve(&addr, err, sizeof(err)) != 0)
    {
        return cfcost_usage_error("--redis: %s", err);
    }

    if (agg->conf.redis_auth != NULL
        && cfcost_redis_auth_load(agg->conf.redis_auth, &agg->redis_auth,
                                  err, sizeof(err)) != 0)
    {
        return cfcost_usage_error("--redis-auth: %s", err);
    }

    agg->consumer_rd = cfcost_redis_create(agg->base, &addr, "consumer",
                                           agg->conf.redis_timeout_ms,
                                           cfcost_consumer_redis_up,
                                           cfcost_consumer_redis_down, agg);
    agg->http_rd = cfcost_redis_create(agg->base, &addr, "http",
                                       agg->conf.redis_timeout_ms,
                                       NULL, NULL, agg);

    if (agg->consumer_rd == NULL || agg->http_rd == NULL
        || cfcost_consumer_create(agg) != 0)
    {
        cfcost_log_error("out of memory");
        return CFCOST_EXIT_FAILED;
    }

    if (agg->conf.redis_auth != NULL) {
        cfcost_redis_set_auth(agg->consumer_rd, &agg->redis_auth);
        cfcost_redis_set_auth(agg->http_rd, &agg->redis_auth);
    }

    if (cfcost_http_create(agg, err, sizeof(err)) != 0) {
        cfcost_log_error("%s", err);
        return strncmp(err, "bad", 3) == 0 || strstr(err, "refusing")
               ? CFCOST_EXIT_USAGE : CFCOST_EXIT_FAILED;
    }

    cfcost_log_info("listening on %s; Redis %s; group %s, consumer %s; "
                    "retention %u days, %u entries max",
                    agg->conf.listen, agg->conf.redis, agg->conf.group,
                    agg->conf.consumer, agg->conf.retention_days,
                    agg->conf.retention_max);

    cfcost_redis_start(agg->consumer_rd);
    cfcost_redis_start(agg->http_rd);

    return -1;
}


int
main(int argc, char **argv)
{
    int            rc;
    char           listen[4096], redis[4096], consumer[512];
    cfcost_agg_t   agg;
    struct event  *sigterm, *sigint;

    memset(&agg, 0, sizeof(agg));
    cfcost_conf_defaults(&agg.conf);

    rc = cfcost_flags_parse(argc, argv, &agg.conf);
    if (rc >= 0) {
        return rc;
    }

    cfcost_conf_env(&agg.conf, listen, redis, consumer, sizeof(listen));

    rc = cfcost_conf_check(&agg.conf);
    if (rc >= 0) {
        return rc;
    }

    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned) (getpid() ^ cfcost_now_ms()));

    agg.base = event_base_new();
    if (agg.base == NULL) {
        cfcost_log_error("event_base_new() failed");
        return CFCOST_EXIT_FAILED;
    }

    sigterm = evsignal_new(agg.base, SIGTERM, cfcost_agg_signal, &agg);
    sigint = evsignal_new(agg.base, SIGINT, cfcost_agg_signal, &agg);

    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0
        || evsignal_add(sigint, NULL) != 0)
    {
        cfcost_log_error("cannot install signal handlers");
        rc = CFCOST_EXIT_FAILED;
        goto done;
    }

    rc = cfcost_agg_start(&agg);
    if (rc >= 0) {
        goto done;
    }

    event_base_dispatch(agg.base);

    cfcost_log_info("exiting: %llu records applied, %llu duplicates",
                    (unsigned long long) agg.applied,
                    (unsigned long long) agg.duplicates);
    rc = CFCOST_EXIT_OK;

done:

    cfcost_agg_cleanup(&agg);

    if (sigterm) {
        event_free(sigterm);
    }
    if (sigint) {
        event_free(sigint);
    }

    event_base_free(agg.base);
    libevent_global_shutdown();

    return rc;
}
