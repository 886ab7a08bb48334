/*
 * Streamed responses (text/event-stream).
 *
 * Bytes pass through as they arrive: each upstream buffer goes to the
 * client in the same call, unchanged, while the SSE parser reads usage
 * from it on the side.  The one addition is a cfcost event carrying the
 * cost, placed just before "data: [DONE]" (or at the end of a stream that
 * has none).  So that it can go before [DONE], the few bytes at the end of
 * a buffer that could be the start of "data: [DONE]" wait for the next
 * buffer -- at most 16 bytes, never a whole event.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                    /* memmem() */
#endif

#include <jansson.h>

#include "ngx_http_cfcost_module.h"


static void
ngx_http_cfcost_stream_cleanup(void *data)
{
    cfcost_sse_free(data);
}


/* prepares a streamed response: called by the header filter */
ngx_int_t
ngx_http_cfcost_stream_start(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(cfcost_sse_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cfcost_sse_init(cln->data);
    cln->handler = ngx_http_cfcost_stream_cleanup;
    ctx->sse = cln->data;

    /* pass each chunk on as it comes, whatever proxy_buffering says */
    r->upstream->buffering = 0;
    r->filter_need_in_memory = 1;

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);

    return NGX_OK;
}


/* reads what an event says: usage, generated text, the end */
static ngx_uint_t
ngx_http_cfcost_stream_event(ngx_http_cfcost_ctx_t *ctx,
    cfcost_sse_event_t *ev)
{
    json_t          *root, *usage, *choices;
    json_error_t     err;
    cfcost_reply_t   rep;

    if (ev->len == 6 && ngx_memcmp(ev->data, "[DONE]", 6) == 0) {
        return 1;
    }

    ctx->text_bytes += cfcost_sse_text_bytes(ev->data, ev->len);

    if (memmem(ev->data, ev->len, "\"usage\"", 7) == NULL) {
        return 0;                      /* most events: no JSON parse */
    }

    root = json_loadb(ev->data, ev->len, 0, &err);
    usage = json_object_get(root, "usage");

    if (json_is_object(usage)) {
        /*
         * The cumulative usage is Workers AI's {"response":"","usage"} event
         * or, on the OpenAI-compatible route, the chunk with no choices;
         * chat.completion.chunk usages are increments, never summed.
         */
        choices = json_object_get(root, "choices");
        ngx_memzero(&rep, sizeof(cfcost_reply_t));

        if (json_object_get(root, "response") != NULL
            && cfcost_usage_read(usage, &rep) == 0)
        {
            ctx->native_usage = 1;

        } else if (!ctx->native_usage && json_is_array(choices)
                   && json_array_size(choices) == 0
                   && cfcost_usage_read(usage, &rep) == 0)
        {
            /* taken */

        } else {
            rep.has_usage = 0;
        }

        if (rep.has_usage) {
            ctx->usage_known = 1;
            ctx->input = rep.input;
            ctx->output = rep.output;
            ctx->cached = rep.cached;

            if (rep.has_neurons) {
                ctx->has_neurons = 1;
                ctx->neurons = rep.neurons;
            }
        }
    }

    json_decref(root);

    return 0;
}


/* data: {"response":"","cfcost":{...}}\n\n */
static ngx_buf_t *
ngx_http_cfcost_stream_cost_event(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx)
{
    u_char     usd[32];
    size_t     len, usd_len;
    ngx_buf_t  *b;

    ngx_http_cfcost_settle(ctx);
    usd_len = cfcost_usd6((char *) usd, ctx->cost);

    len = sizeof("data: {\"response\":\"\",\"cfcost\":{\"request_id\":\"\","
                 "\"model\":\"\",\"input_tokens\":,\"output_tokens\":,"
                 "\"cached_tokens\":,\"total_tokens\":,\"cost_usd\":,"
                 "\"estimated\":false}}\n\n")
          + NGX_HTTP_CFCOST_ID_LEN + 4 * NGX_INT64_LEN + usd_len
          + ngx_http_cfcost_json_escape_len(ctx->model.data, ctx->model.len);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_sprintf(b->last, "data: {\"response\":\"\",\"cfcost\":{"
                          "\"request_id\":\"%*s\",\"model\":\"",
                          (size_t) NGX_HTTP_CFCOST_ID_LEN, ctx->request_id);
    b->last = ngx_http_cfcost_json_escape(b->last, ctx->model.data,
                                          ctx->model.len);
    b->last = ngx_sprintf(b->last, "\",\"input_tokens\":%uL,"
                          "\"output_tokens\":%uL,\"cached_tokens\":%uL,"
                          "\"total_tokens\":%uL,\"cost_usd\":%*s,"
                          "\"estimated\":%s}}\n\n",
                          ctx->input, ctx->output, ctx->cached,
                          ctx->input + ctx->output, usd_len, usd,
                          ctx->estimated ? "true" : "false");

    ctx->cost_sent = 1;

    return b;
}


/* could these bytes, at the start of an event, begin "data: [DONE]"? */
static ngx_uint_t
ngx_http_cfcost_done_prefix(u_char *s, size_t n)
{
    size_t       i, k, m;
    ngx_uint_t   j;

    static const char  *pat[] = { "data: [DONE]", "data:[DONE]" };

    for (j = 0; j < 2; j++) {
        m = ngx_strlen(pat[j]);
        k = ngx_min(n, m);

        if (ngx_memcmp(s, pat[j], k) != 0) {
            continue;
        }

        for (i = m; i < n && (s[i] == '\r' || s[i] == '\n'); i++) {
            /* void */
        }

        if (i >= n) {
            return 1;
        }
    }

    return 0;
}


static ngx_chain_t **
ngx_http_cfcost_stream_append(ngx_http_request_t *r, ngx_chain_t **ll,
    ngx_buf_t *b)
{
    ngx_chain_t  *cl;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;
    *ll = cl;

    return &cl->next;
}


/* copies bytes [from, to) of the held bytes followed by b's */
static u_char *
ngx_http_cfcost_stream_copy(u_char *p, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, size_t from, size_t to)
{
    size_t  h;

    if (from >= to) {
        return p;
    }

    h = ctx->held_len;

    if (from < h) {
        p = ngx_cpymem(p, ctx->held + from, ngx_min(to, h) - from);
        from = h;
    }

    if (to > h) {
        p = ngx_cpymem(p, b->pos + (from - h), to - from);
    }

    return p;
}


/*
 * One upstream buffer: feeds the parser, and appends to *ll either the
 * buffer itself or, when the cost event goes in here, bytes were held, or
 * the stream ends in it, a copy: held bytes and the buffer, the event
 * inserted, the new held tail cut off.  A copied buffer is left empty.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_buf(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, ngx_chain_t **ll)
{
    int                  got;
    u_char              *p, tail[sizeof(ctx->held)];
    size_t               len, off, total, insert, keep, i;
    uint64_t             base;
    ngx_buf_t           *nb, *ev_buf;
    cfcost_sse_t        *sse = ctx->sse;
    cfcost_sse_event_t   ev;

    len = b->last - b->pos;
    base = sse->offset - ctx->held_len;    /* stream offset of held[0] */
    total = ctx->held_len + len;
    insert = (size_t) -1;

    for (off = 0; off < len; /* void */) {
        off += cfcost_sse_feed(sse, (char *) b->pos + off, len - off, &ev,
                               &got);

        if (got && ngx_http_cfcost_stream_event(ctx, &ev) && !ctx->cost_sent
            && insert == (size_t) -1)
        {
            /* before [DONE]; or, if it began before what we hold, after */
            insert = (ev.start >= base) ? (size_t) (ev.start - base)
                                        : ctx->held_len + off;
        }
    }

    /* an unfinished event that may yet be "data: [DONE]" waits */
    keep = 0;

    if (sse->in_event && sse->event_start >= base
        && sse->offset - sse->event_start <= sizeof(tail))
    {
        keep = (size_t) (sse->offset - sse->event_start);
        (void) ngx_http_cfcost_stream_copy(tail, ctx, b, total - keep, total);

        if (!ngx_http_cfcost_done_prefix(tail, keep)) {
            keep = 0;
        }
    }

    if (ctx->held_len == 0 && insert == (size_t) -1 && keep == 0
        && !b->last_buf)
    {
        return ngx_http_cfcost_stream_append(r, ll, b);
    }

    ev_buf = NULL;

    if (insert != (size_t) -1) {
        ev_buf = ngx_http_cfcost_stream_cost_event(r, ctx);
        if (ev_buf == NULL) {
            return NULL;
        }

        insert = ngx_min(insert, total - keep);
    }

    nb = ngx_create_temp_buf(r->pool, total + 1
                             + (ev_buf ? ngx_buf_size(ev_buf) : 0));
    if (nb == NULL) {
        return NULL;
    }

    p = nb->last;

    if (ev_buf) {
        p = ngx_http_cfcost_stream_copy(p, ctx, b, 0, insert);
        p = ngx_cpymem(p, ev_buf->pos, ngx_buf_size(ev_buf));
        p = ngx_http_cfcost_stream_copy(p, ctx, b, insert, total - keep);

    } else {
        p = ngx_http_cfcost_stream_copy(p, ctx, b, 0, total - keep);
    }

    nb->last = p;
    nb->flush = 1;

    for (i = 0; i < keep; i++) {
        ctx->held[i] = tail[i];
    }

    ctx->held_len = keep;
    b->pos = b->last;                      /* copied: upstream may reuse it */

    if (nb->last == nb->pos) {
        return ll;                         /* all of it held */
    }

    return ngx_http_cfcost_stream_append(r, ll, nb);
}


/*
 * The stream ends (last_buf) or breaks off (broken): what was held and,
 * if it has not gone yet, the cost event, go out now.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_end(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_chain_t **ll)
{
    ngx_buf_t           *b;
    cfcost_sse_event_t   ev;

    if (cfcost_sse_finish(ctx->sse, &ev)) {
        (void) ngx_http_cfcost_stream_event(ctx, &ev);
    }

    if (!ctx->cost_sent) {
        b = ngx_http_cfcost_stream_cost_event(r, ctx);
        if (b == NULL) {
            return NULL;
        }

        b->flush = 1;

        ll = ngx_http_cfcost_stream_append(r, ll, b);
        if (ll == NULL) {
            return NULL;
        }
    }

    if (ctx->held_len) {
        b = ngx_create_temp_buf(r->pool, ctx->held_len);
        if (b == NULL) {
            return NULL;
        }

        b->last = ngx_cpymem(b->last, ctx->held, ctx->held_len);
        b->flush = 1;
        ctx->held_len = 0;

        ll = ngx_http_cfcost_stream_append(r, ll, b);
    }

    return ll;
}


ngx_int_t
ngx_http_cfcost_stream_filter(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_chain_t *in,
    ngx_http_output_body_filter_pt next)
{
    ngx_buf_t     *b, *last;
    ngx_chain_t   *out, **ll, *cl;

    out = NULL;
    ll = &out;

    /*
     * A lone empty flush once the upstream connection is gone: the upstream
     * broke off (reset, timeout), and nginx closes the connection after
     * this.  The client still learns what the stream cost so far.
     */
    if (in->next == NULL && in->buf->flush && !in->buf->last_buf
        && ngx_buf_size(in->buf) == 0 && r->upstream != NULL
        && r->upstream->peer.connection == NULL && !ctx->sse_end)
    {
        ctx->sse_end = 1;
        ctx->truncated = 1;
        ngx_str_set(&ctx->error, "upstream_incomplete");

        ll = ngx_http_cfcost_stream_end(r, ctx, ll);
        if (ll == NULL) {
            return NGX_ERROR;
        }

        *ll = in;

        return next(r, out);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_size(b) && !ctx->sse_end) {
            ll = ngx_http_cfcost_stream_buf(r, ctx, b, ll);
            if (ll == NULL) {
                return NGX_ERROR;
            }

            if (b->pos != b->last) {
                continue;                  /* it went out itself */
            }
        }

        if (b->last_buf && !ctx->sse_end) {
            ctx->sse_end = 1;

            ll = ngx_http_cfcost_stream_end(r, ctx, ll);
            if (ll == NULL) {
                return NGX_ERROR;
            }
        }

        if (ngx_buf_size(b) == 0 && ngx_buf_special(b)) {
            ll = ngx_http_cfcost_stream_append(r, ll, b);

        } else if (b->last_buf) {
            /* its bytes went out in a copy: a clean end of its own */
            last = ngx_calloc_buf(r->pool);
            if (last == NULL) {
                return NGX_ERROR;
            }

            last->last_buf = 1;
            last->last_in_chain = 1;
            ll = ngx_http_cfcost_stream_append(r, ll, last);
        }

        if (ll == NULL) {
            return NGX_ERROR;
        }
    }

    return next(r, out);                   /* NULL when all was held */
}
