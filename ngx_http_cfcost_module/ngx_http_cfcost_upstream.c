/*
 * The upstream's body as nginx reads it.  Upstream framing that breaks (a
 * chunk size "zz", or 18 digits long) makes the proxy's input filter fail,
 * and nginx would then close the client's connection without a word.
 * Wrapped, the failure becomes what a reset is: the upstream broke off,
 * nginx flushes, and the body filters end the answer cleanly (a 502 in
 * the route's shape, or a stream's cost event).  Whatever came after the
 * break is not read.
 */

#include "ngx_http_cfcost_module.h"


/* the buffered proxy's filter (a whole answer, collected) */
static ngx_int_t
ngx_http_cfcost_pipe_input(ngx_event_pipe_t *p, ngx_buf_t *buf)
{
    ngx_http_request_t     *r = p->input_ctx;
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    if (!ctx->bad_framing && ctx->pipe_input(p, buf) != NGX_ERROR) {
        return NGX_OK;
    }

    if (!ctx->bad_framing) {
        ctx->bad_framing = 1;
        p->upstream_error = 1;
        r->upstream->keepalive = 0;
    }

    buf->pos = buf->last;

    return NGX_OK;
}


/* the unbuffered proxy's filter (a stream) */
static ngx_int_t
ngx_http_cfcost_input_filter(void *data, ssize_t bytes)
{
    ngx_http_request_t     *r = data;
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    if (!ctx->bad_framing && ctx->input_filter(data, bytes) != NGX_ERROR) {
        return NGX_OK;
    }

    if (!ctx->bad_framing) {
        ctx->bad_framing = 1;
        r->upstream->error = 1;
        r->upstream->keepalive = 0;
    }

    return NGX_OK;
}


/* the proxy picks its body filters here: they are wrapped once picked */
static ngx_int_t
ngx_http_cfcost_input_init(void *data)
{
    ngx_int_t               rc;
    ngx_http_request_t     *r = data;
    ngx_http_upstream_t    *u;
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    u = r->upstream;

    rc = ctx->input_init(data);
    if (rc != NGX_OK) {
        return rc;
    }

    if (u->buffering) {
        if (u->pipe != NULL && u->pipe->input_filter != NULL
            && u->pipe->input_ctx == r)
        {
            ctx->pipe_input = u->pipe->input_filter;
            u->pipe->input_filter = ngx_http_cfcost_pipe_input;
        }

    } else if (u->input_filter != NULL && u->input_filter_ctx == r) {
        ctx->input_filter = u->input_filter;
        u->input_filter = ngx_http_cfcost_input_filter;
    }

    return NGX_OK;
}


/* called by the header filter, before nginx picks the proxy's filters */
void
ngx_http_cfcost_wrap_input(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    ngx_http_upstream_t  *u = r->upstream;

    if (u->input_filter_init != NULL && ctx->input_init == NULL
        && u->input_filter_ctx == r)
    {
        ctx->input_init = u->input_filter_init;
        u->input_filter_init = ngx_http_cfcost_input_init;
    }
}
