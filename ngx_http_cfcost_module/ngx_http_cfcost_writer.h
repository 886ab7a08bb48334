/*
 * The record writer: each worker process appends its usage records to its
 * own stream (cfcost_schema.h), with entry ids it chooses, so that a
 * record sent again after a lost reply is stored at most once.  Records
 * wait in memory until Redis has stored them; gateway-wide counters live
 * in shared memory, readable without Redis (cfcost status).
 */

#ifndef NGX_HTTP_CFCOST_WRITER_H
#define NGX_HTTP_CFCOST_WRITER_H

#include "ngx_http_cfcost_module.h"


typedef struct {
    ngx_atomic_t    made;           /* records made by the log phase */
    ngx_atomic_t    stored;         /* acknowledged by Redis */
    ngx_atomic_t    queued;         /* held in workers' memory now */
    ngx_atomic_t    retried;        /* sends after an error or a loss */
    ngx_atomic_t    already;        /* re-sends Redis had stored before */
    ngx_atomic_t    dropped;        /* queue full: never stored */
    ngx_atomic_t    dead;           /* refused for good: dead-letter file */
    ngx_atomic_t    lost_exit;      /* a worker left with them unsent */
    ngx_atomic_t    redis_errors;   /* error replies to records */
    ngx_atomic_t    spooled;        /* written to a spool file */
    ngx_atomic_t    replayed;       /* read back from a spool file */
} ngx_http_cfcost_writer_stats_t;


/* Adds the counters' shared zone (configuration time). */
ngx_int_t ngx_http_cfcost_writer_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf);

ngx_int_t ngx_http_cfcost_writer_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf);

/*
 * The worker is leaving: the records held are sent over a blocking
 * connection, bounded by cfcost_redis_timeout per step; what cannot be
 * stored is counted and logged as lost.
 */
void ngx_http_cfcost_writer_exit_process(ngx_cycle_t *cycle);

/*
 * A record is written straight into the queue's memory: alloc() returns
 * room for len bytes of RESP field/value pairs, or NULL when the queue is
 * full (the record is counted as dropped) or memory is short; push() then
 * queues the npairs pairs written there (len bytes at most).
 */
u_char *ngx_http_cfcost_writer_alloc(size_t len);
void ngx_http_cfcost_writer_push(u_char *pairs, size_t len,
    ngx_uint_t npairs);

/*
 * 1 when cfcost_spool ... when_full=refuse is set and this worker can keep
 * no more records: the access phase refuses metered requests (503).
 */
ngx_uint_t ngx_http_cfcost_writer_refusing(ngx_http_cfcost_main_conf_t *mcf);

/* The gateway-wide counters, or NULL before the zone exists. */
ngx_http_cfcost_writer_stats_t *ngx_http_cfcost_writer_stats(
    ngx_http_cfcost_main_conf_t *mcf);

#endif /* NGX_HTTP_CFCOST_WRITER_H */
