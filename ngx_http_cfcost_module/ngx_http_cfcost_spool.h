/*
 * The record spool: append-only files, one per worker process, that keep
 * usage records while Redis cannot take them for longer than the memory
 * queue lasts, and across a worker's exit.  Each record is written as the
 * very XADD command the writer sends (RESP, stream key and entry id
 * inside), so replaying a file is idempotent and a file can be replayed by
 * any later worker, or by hand with redis-cli --pipe.
 *
 * A live worker holds a write lock (fcntl) on its own file; a file whose
 * lock can be taken belongs to a worker that is gone, and is adopted: read
 * back, sent, and removed once every record in it is stored.
 */

#ifndef NGX_HTTP_CFCOST_SPOOL_H
#define NGX_HTTP_CFCOST_SPOOL_H

#include "ngx_http_cfcost_module.h"


#define NGX_HTTP_CFCOST_SPOOL_SUFFIX   ".spool"


typedef struct ngx_http_cfcost_spool_file_s  ngx_http_cfcost_spool_file_t;


/* one record read back from a file: pointers into the read buffer */
typedef struct {
    u_char                        *stream;
    size_t                         stream_len;
    uint64_t                       ms;
    uint64_t                       seq;
    u_char                        *pairs;
    size_t                         pairs_len;
    ngx_uint_t                     npairs;
} ngx_http_cfcost_spooled_t;


/*
 * Appends one command to this worker's own file (created and locked on
 * first use).  Returns NGX_OK, NGX_DECLINED when the file would pass
 * max_size, or NGX_ERROR (logged).
 */
ngx_int_t ngx_http_cfcost_spool_append(ngx_http_cfcost_main_conf_t *mcf,
    ngx_log_t *log, u_char *writer, u_char *cmd, size_t len);

/* 1 when an append of len bytes would be refused for size */
ngx_uint_t ngx_http_cfcost_spool_full(ngx_http_cfcost_main_conf_t *mcf,
    size_t len);

/*
 * Takes over one file whose worker is gone, when none is adopted yet: a
 * directory scan, so the writer runs it from a timer, never while serving
 * a request.
 */
void ngx_http_cfcost_spool_adopt(ngx_http_cfcost_main_conf_t *mcf,
    ngx_log_t *log, u_char *writer);

/*
 * The file to replay next: this worker's own when it has unread records,
 * else the adopted one, or NULL.
 */
ngx_http_cfcost_spool_file_t *ngx_http_cfcost_spool_next(
    ngx_http_cfcost_main_conf_t *mcf, ngx_log_t *log, u_char *writer);

/*
 * Reads up to max records of f, calling got(rec, data) for each.  Returns
 * how many, 0 at the end of what is written, or NGX_ERROR for a damaged
 * file (logged; the file is set aside as <name>.bad).
 */
ngx_int_t ngx_http_cfcost_spool_read(ngx_http_cfcost_spool_file_t *f,
    ngx_uint_t max, void (*got)(ngx_http_cfcost_spooled_t *rec, void *data),
    void *data);

/*
 * A record read from f is stored (or set aside for good).  Once every
 * record read from f is, and f has nothing unread, f is emptied (own) or
 * removed (adopted).
 */
void ngx_http_cfcost_spool_done(ngx_http_cfcost_spool_file_t *f);

/* Writes what was appended to disk (fdatasync), if anything was. */
void ngx_http_cfcost_spool_sync(void);

/* Closes the files (worker exit): the locks go, the files stay. */
void ngx_http_cfcost_spool_close(void);

#endif /* NGX_HTTP_CFCOST_SPOOL_H */
