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
 * Queues one record: cmd[0..len) is "XADD <stream> * <pairs>" in RESP,
 * its field/value pairs starting at pairs_off; rid is its request id.
 * The queue copies it and keeps it until Redis acknowledges it; when the
 * queue is full the record is dropped and counted.
 */
void ngx_http_cfcost_redis_push_record(u_char *cmd, size_t len, u_char *rid,
    size_t pairs, size_t pairs_off);

#endif /* NGX_HTTP_CFCOST_REDIS_H */
