/*
 * cfcost-aggregator: what every part of the daemon shares.  The
 * configuration (command-line flags), the process-wide context, the
 * process counters, logging and the clocks.
 *
 * Parts, one .c/.h pair each; a file calls only parts listed below it:
 *   cfcost_agg_main       flags, signals, start and orderly stop
 *   cfcost_agg_http       HTTP server: listening, routing, identity
 *   cfcost_agg_routes.h   the routes the HTTP core calls:
 *   cfcost_agg_usage.c      /api/usage and /api/usage/timeseries
 *   cfcost_agg_logs.c       /api/usage/logs (JSON and CSV)
 *   cfcost_agg_metrics.c    /metrics and /healthz
 *   cfcost_agg_req        a request's state, its Redis commands, replies
 *   cfcost_agg_consumer   consumer group -> rollups, exactly once: the
 *                         state machine; below it, sharing _consumer_int.h:
 *     cfcost_agg_consumer_read.c     the reads: own pending, new, claimed
 *     cfcost_agg_consumer_trim.c     retention: trim script, idle consumers
 *     cfcost_agg_consumer_fail.c     error replies, pauses, reconnect, stop
 *     cfcost_agg_consumer_batch.c    stream entries -> apply script commands
 *     cfcost_agg_consumer_sum.c      a batch summed for the summed script
 *     cfcost_agg_consumer_streams.c  the writers' streams being read
 *   cfcost_agg_lua        the three server-side scripts; the apply
 *                         script's ARGV by name
 *   cfcost_agg_redis      async Redis connections with timeouts/reconnect
 *   cfcost_agg_record     record fields inside a stream reply
 *   cfcost_agg_rollup     rollup hashes back into integers
 *   cfcost_agg_out        JSON / CSV / Prometheus writers, money
 *   cfcost_agg_log.c      logging (declared here)
 *   cfcost_agg_util       calendar, numbers, stream ids
 *   cfcost_agg_clock.c    wall and monotonic clocks (declared here)
 *   cfcost_schema.h         (common/) every Redis key and field
 */

#ifndef CFCOST_AGG_H
#define CFCOST_AGG_H

#include <stdint.h>

#include <event2/event.h>

#include "cfcost_redis_auth.h"


#define CFCOST_AGG_VERSION          "1.0"

#define CFCOST_LOG_ERROR            0
#define CFCOST_LOG_WARN             1
#define CFCOST_LOG_INFO             2
#define CFCOST_LOG_DEBUG            3


typedef struct cfcost_redis_s     cfcost_redis_t;
typedef struct cfcost_consumer_s  cfcost_consumer_t;
typedef struct cfcost_http_s      cfcost_http_t;


typedef struct {
    const char      *listen;            /* unix:/path or 127.0.0.1:PORT */
    const char      *redis;             /* unix:/path or HOST:PORT */
    const char      *redis_auth;        /* credentials file, or NULL */
    const char      *group;
    const char      *consumer;
    unsigned         batch;             /* XREADGROUP COUNT */
    unsigned         block_ms;          /* XREADGROUP BLOCK */
    unsigned         linger_ms;         /* after a short read, wait */
    unsigned         linger_rate;       /* ...while more records/s come */
    unsigned         claim_idle_ms;
    unsigned         retention_days;    /* 0: no age limit */
    unsigned         retention_max;     /* 0: no length limit */
    unsigned         trim_interval_s;
    unsigned         dedup_ttl_s;
    unsigned         redis_timeout_ms;
    unsigned         socket_mode;
    int              metrics_open;      /* /metrics without identity */
    int              metrics_users;     /* per-user series in /metrics */
    long             trust_uid;         /* --trust-user; -1: none */
    int              log_level;
} cfcost_agg_conf_t;


typedef struct {
    cfcost_agg_conf_t   conf;
    struct event_base  *base;

    cfcost_redis_t     *consumer_rd;    /* the consumer's own connection */
    cfcost_redis_t     *http_rd;        /* HTTP reads, CLIENT UNBLOCK */
    cfcost_redis_auth_t redis_auth;     /* --redis-auth, when given */

    cfcost_consumer_t  *consumer;
    cfcost_http_t      *http;

    /* this process, for /metrics */
    uint64_t            applied;        /* records counted */
    uint64_t            duplicates;     /* request_id seen before */
    uint64_t            stale;          /* applied before: acked only */
    uint64_t            invalid;        /* acked without counting */
    uint64_t            batches;
    uint64_t            batches_exact;  /* declined by the summed script */
    uint64_t            redis_errors;

    int                 stopping;
} cfcost_agg_t;


/* cfcost_agg_log.c: messages above cfcost_log_level are dropped */
extern int  cfcost_log_level;

void cfcost_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define cfcost_log_error(...)  cfcost_log(CFCOST_LOG_ERROR, __VA_ARGS__)
#define cfcost_log_warn(...)   cfcost_log(CFCOST_LOG_WARN, __VA_ARGS__)
#define cfcost_log_info(...)                                                 \
    do {                                                                     \
        if (cfcost_log_level >= CFCOST_LOG_INFO) {                           \
            cfcost_log(CFCOST_LOG_INFO, __VA_ARGS__);                        \
        }                                                                    \
    } while (0)
#define cfcost_log_debug(...)                                                \
    do {                                                                     \
        if (cfcost_log_level >= CFCOST_LOG_DEBUG) {                          \
            cfcost_log(CFCOST_LOG_DEBUG, __VA_ARGS__);                       \
        }                                                                    \
    } while (0)

/* The level named name ("error".."debug"), or -1. */
int cfcost_log_level_parse(const char *name);


/* Unix time in milliseconds (wall clock). */
int64_t cfcost_now_ms(void);

/* Monotonic milliseconds, for deadlines. */
uint64_t cfcost_mono_ms(void);

#endif /* CFCOST_AGG_H */
