/*
 * The record writer's own declarations, shared by its files and nobody
 * else: what a record, a lane and a batch are, the worker's one writer
 * state, and the functions one of its files gives another.
 *
 *   _writer_rec.c    a record: its id, its command, what a reply to it
 *                    means, and what becomes of it when it is refused
 *   _writer.c        the engine: batches to Redis, their replies, the
 *                    connection, replaying spool files, the drain timer
 *   _writer_queue.c  the log phase's side: a record into the queue, or
 *                    the spool when the queue is full
 *   _writer_exit.c   an exiting worker's blocking last pass
 *
 * Each calls only the files above it in that list (the queue the engine,
 * to flush).
 */

#ifndef NGX_HTTP_CFCOST_WRITER_INT_H
#define NGX_HTTP_CFCOST_WRITER_INT_H

#include "ngx_http_cfcost_redis.h"
#include "ngx_http_cfcost_spool.h"
#include "ngx_http_cfcost_writer.h"


#define NGX_HTTP_CFCOST_BATCH_MAX      1024
#define NGX_HTTP_CFCOST_ENTRY_MAX      32      /* records in one entry */
#define NGX_HTTP_CFCOST_BATCH_STREAMS  4       /* streams in one batch */
#define NGX_HTTP_CFCOST_HEAD_MAX       160     /* "*N XADD <stream> <id>" */
#define NGX_HTTP_CFCOST_SYNC_TICKS     10      /* x 100 ms: spool fsync */
#define NGX_HTTP_CFCOST_RECORD_MAX     4096    /* a record's bytes, at most */

/* what became of a record in a batch */
#define NGX_HTTP_CFCOST_SENT           0       /* no reply yet */
#define NGX_HTTP_CFCOST_QUEUED         1       /* EXEC decides */
#define NGX_HTTP_CFCOST_STORED         2
#define NGX_HTTP_CFCOST_ALREADY        3       /* stored before */
#define NGX_HTTP_CFCOST_NOTRUN         4       /* Redis did not run it */
#define NGX_HTTP_CFCOST_DEAD           5       /* refused for good */
#define NGX_HTTP_CFCOST_UNKNOWN        6       /* the connection went */
#define NGX_HTTP_CFCOST_NOSTREAM       7       /* XADD NOMKSTREAM found no
                                                  stream: it was retired */


typedef struct ngx_http_cfcost_batch_s  ngx_http_cfcost_batch_t;


/* one XADD of a batch: records first .. first + n - 1 of it */
typedef struct {
    ngx_http_cfcost_batch_t         *batch;
    ngx_uint_t                       first;
    ngx_uint_t                       n;
} ngx_http_cfcost_entry_t;


typedef struct {
    ngx_queue_t                      queue;
    ngx_http_cfcost_batch_t         *batch;       /* in flight in it */
    ngx_http_cfcost_spool_file_t    *from;        /* read back from a spool */
    u_char                           stream[CFCOST_RECORD_STREAM_LEN];
    uint64_t                         ms;          /* entry id */
    uint64_t                         seq;
    ngx_uint_t                       pairs;
    size_t                           len;         /* of the pairs */
    ngx_uint_t                       state;       /* in a batch */
    unsigned                         done:1;      /* stored, at exit */
    unsigned                         last:1;      /* of its entry, as sent */
    unsigned                         fence:1;     /* the last of an entry
                                                     that may be stored: no
                                                     entry may reach past
                                                     it */
    u_char                           buf[1];      /* HEAD_MAX, then pairs */
} ngx_http_cfcost_rec_t;


typedef struct {
    ngx_queue_t                      queue;       /* waiting, in id order */
    ngx_http_cfcost_batch_t         *batch;       /* in flight, or NULL */
} ngx_http_cfcost_lane_t;


struct ngx_http_cfcost_batch_s {
    ngx_http_cfcost_lane_t          *lane;
    ngx_uint_t                       n;
    ngx_uint_t                       nent;
    ngx_http_cfcost_entry_t         *ents;        /* after recs[n] */
    ngx_uint_t                       callbacks;   /* still to run */
    unsigned                         sadd_queued:1;
    u_char                           err[80];     /* a refusal, for logs */
    size_t                           err_len;
    ngx_http_cfcost_rec_t           *recs[1];
};


typedef struct {
    uint64_t                         ms;
    uint64_t                         seq;
    u_char                           id[CFCOST_WRITER_ID_LEN];
    u_char                           stream[CFCOST_RECORD_STREAM_LEN];
} ngx_http_cfcost_ids_t;


typedef struct {
    ngx_http_cfcost_redis_t          rd;
    ngx_http_cfcost_main_conf_t     *mcf;
    ngx_http_cfcost_writer_stats_t  *stats;
    ngx_log_t                       *log;

    ngx_http_cfcost_ids_t            live_ids;    /* this worker's stream */
    ngx_http_cfcost_ids_t            spool_ids;   /* and its spool stream */

    ngx_http_cfcost_lane_t           live;
    ngx_http_cfcost_lane_t           replay;
    ngx_uint_t                       queued;      /* records in memory */
    ngx_uint_t                       live_n;      /* ... of the live lane */
    ngx_uint_t                       unreported;  /* lost, not yet in Redis */
    ngx_uint_t                       reporting;

    ngx_event_t                      pause;
    ngx_msec_t                       backoff;

    ngx_event_t                      linger;      /* cfcost_record_linger */
    unsigned                         lingered:1;  /* it passed: send */

    ngx_event_t                      drain;       /* holds an exiting worker */
    ngx_msec_t                       exit_start;
    ngx_uint_t                       ticks;

    unsigned                         initialized:1;
    unsigned                         registered:1; /* the live stream is
                                                      there and listed, as
                                                      this connection saw */
    unsigned                         retired_logged:1;
    unsigned                         paused:1;
    unsigned                         giving_up:1; /* exiting, drain over */
    unsigned                         full_logged:1;
    unsigned                         spill_logged:1;
    unsigned                         pause_logged:1;
    unsigned                         exit_seen:1;
} ngx_http_cfcost_writer_t;


extern ngx_http_cfcost_writer_t  ngx_http_cfcost_wr;


#define ngx_http_cfcost_count(field, n)                                      \
    (void) ngx_atomic_fetch_add(&ngx_http_cfcost_wr.stats->field,            \
                                (ngx_atomic_int_t) (n))


/* _writer_rec.c */
void ngx_http_cfcost_writer_new_id(ngx_http_cfcost_rec_t *rec,
    ngx_http_cfcost_ids_t *ids);
void ngx_http_cfcost_writer_free(ngx_http_cfcost_rec_t *rec);
void ngx_http_cfcost_writer_settled(ngx_http_cfcost_rec_t *rec);
u_char *ngx_http_cfcost_writer_command(ngx_http_cfcost_rec_t *rec,
    ngx_uint_t nomkstream, size_t *len);
u_char *ngx_http_cfcost_writer_packed(ngx_http_cfcost_rec_t *rec,
    size_t *len);
u_char *ngx_http_cfcost_writer_entry_command(ngx_http_cfcost_entry_t *e,
    ngx_uint_t nomkstream, size_t *len);
void ngx_http_cfcost_writer_dead(ngx_http_cfcost_rec_t *rec, u_char *err,
    size_t err_len);
void ngx_http_cfcost_writer_hold(u_char *err, size_t len);
ngx_uint_t ngx_http_cfcost_writer_classify(redisReply *reply);
void ngx_http_cfcost_writer_overtaken(ngx_http_cfcost_rec_t *rec);

/* _writer.c */
void ngx_http_cfcost_writer_flush(void);

#endif /* NGX_HTTP_CFCOST_WRITER_INT_H */
