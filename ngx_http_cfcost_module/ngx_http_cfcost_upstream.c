/*
 * What of the upstream's answer nginx reads and passes on.
 *
 * Headers: only an allowlist of Workers AI's response headers reaches the
 * client (its request id, rate-limit and retry headers, and the framing
 * nginx needs); an upstream that echoes Authorization, sets a cookie or a
 * Location, or forges X-Cfcost-*, hands nothing of it to the client.
 *
 * The body.  Upstream framing that breaks (a
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


/*
 * True when nginx is flushing a response whose upstream failed half-way:
 * ngx_http_upstream_finalize_request() then sends a lone empty flush
 * buffer and closes the connection.  The body filter holds the header of
 * an answer it rewrites: a clean 502 can still go out first.
 */
ngx_uint_t
ngx_http_cfcost_upstream_broke(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_event_pipe_t  *p;

    if (in->next != NULL || !in->buf->flush || in->buf->last_buf
        || ngx_buf_size(in->buf) != 0 || r->upstream == NULL)
    {
        return 0;
    }

    p = r->upstream->pipe;

    return p != NULL && (p->upstream_error || p->upstream_eof);
}


/* names are matched in lower case; a trailing '*' is a prefix */
static ngx_str_t  ngx_http_cfcost_allowed[] = {
    ngx_string("cf-ray"),                 /* Cloudflare's request id */
    ngx_string("cf-request-id"),
    ngx_string("retry-after"),
    ngx_string("x-ratelimit-*"),
    ngx_string("ratelimit*"),             /* RateLimit, RateLimit-Policy */
    ngx_string("content-length"),         /* framing nginx still reads */
    ngx_string("content-encoding"),
    ngx_string("content-type"),
    ngx_null_string
};


static ngx_uint_t
ngx_http_cfcost_header_allowed(ngx_table_elt_t *h)
{
    size_t      n;
    ngx_str_t  *a;

    for (a = ngx_http_cfcost_allowed; a->len; a++) {
        n = a->len;

        if (a->data[n - 1] == '*') {
            if (h->key.len >= n - 1
                && ngx_strncasecmp(h->key.data, a->data, n - 1) == 0)
            {
                return 1;
            }

        } else if (h->key.len == n
                   && ngx_strncasecmp(h->key.data, a->data, n) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* called by the header filter on the upstream's answer */
void
ngx_http_cfcost_allow_headers(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && !ngx_http_cfcost_header_allowed(&h[i])) {
            h[i].hash = 0;                 /* not sent */
        }
    }

    /* the headers nginx writes from these pointers as well */
    r->headers_out.location = NULL;
    r->headers_out.refresh = NULL;
    r->headers_out.www_authenticate = NULL;
    r->headers_out.content_range = NULL;
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);
    ngx_http_clear_accept_ranges(r);

    if (r->headers_out.expires) {
        r->headers_out.expires->hash = 0;
        r->headers_out.expires = NULL;
    }
}
