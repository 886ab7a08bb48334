/*
 * One async hiredis connection per worker, on nginx's event loop: key
 * lookups and the pipelined record queue share it.
 */

#ifndef NGX_HTTP_CFCOST_REDIS_H
#define NGX_HTTP_CFCOST_REDIS_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_cfcost_module.h"


/*
 * Sends a command; fn(ac, reply, data) runs once, with reply NULL when the
 * connection went away first (hiredis's contract).  Returns NGX_OK, or
 * NGX_DECLINED when there is no connection (fn will not run).  The
 * arguments are copied before this returns.
 */
ngx_int_t ngx_http_cfcost_redis_command(redisCallbackFn *fn, void *data,
    int argc, const char **argv, const size_t *argvlen);

/*
 * A record is written straight into the queue's memory: record_alloc()
 * returns room for len bytes, or NULL when the queue is full (the record
 * is counted as dropped) or memory is short; push_record() then queues
 * what was written there -- "XADD <stream> * <pairs>" in RESP, len bytes
 * at most, the field/value pairs starting at pairs_off; rid is its
 * request id.  The queue keeps it until Redis acknowledges it.
 */
u_char *ngx_http_cfcost_redis_record_alloc(size_t len);
void ngx_http_cfcost_redis_push_record(u_char *cmd, size_t len, u_char *rid,
    size_t pairs, size_t pairs_off);

/* RESP bulk strings: the most bytes one takes, and writing one */
size_t ngx_http_cfcost_bulk_len(size_t len);
u_char *ngx_http_cfcost_bulk(u_char *p, const void *data, size_t len);

#endif /* NGX_HTTP_CFCOST_REDIS_H */
