/*
 * Streamed responses (text/event-stream).
 *
 * Bytes pass through as they arrive: each upstream buffer goes to the
 * client in the same call, while the SSE parser reads usage from it on
 * the side.  What cfcost changes:
 *
 *   chat and native routes: one cfcost event carrying the cost goes just
 *   before "data: [DONE]" (or at the end of a stream that has none).  So
 *   that it can go before [DONE], the few bytes at the end of a buffer
 *   that could begin "data: [DONE]" wait for the next buffer -- at most
 *   16 bytes, never a whole event.
 *
 *   OpenAI route: the usage chunk gains "cost_usd", or is dropped when
 *   only cfcost asked for it.  To rewrite it, an event that a buffer ends
 *   in the middle of waits for its end (complete events never wait).
 *
 * Edits are rare (once a stream), so a buffer with one is copied; every
 * other buffer goes on untouched.
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


#define NGX_HTTP_CFCOST_EV_OTHER    0
#define NGX_HTTP_CFCOST_EV_DONE     1     /* data: [DONE] */
#define NGX_HTTP_CFCOST_EV_USAGE    2     /* OpenAI's usage chunk */


/* reads what an event says: usage, generated text, the end */
static ngx_uint_t
ngx_http_cfcost_stream_event(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    cfcost_sse_event_t *ev)
{
    json_t          *root, *usage, *choices;
    ngx_uint_t       kind;
    cfcost_reply_t   rep;

    if (ev->len == 6 && ngx_memcmp(ev->data, "[DONE]", 6) == 0) {
        return NGX_HTTP_CFCOST_EV_DONE;
    }

    ctx->text_bytes += cfcost_text_bytes(ev->data, ev->len);

    if (memmem(ev->data, ev->len, "\"usage\"", 7) == NULL) {
        return NGX_HTTP_CFCOST_EV_OTHER;    /* most events: no JSON parse */
    }

    kind = NGX_HTTP_CFCOST_EV_OTHER;
    ngx_memzero(&rep, sizeof(cfcost_reply_t));
    root = cfcost_json_load(ev->data, ev->len, 0);
    usage = json_object_get(root, "usage");
    choices = json_object_get(root, "choices");

    if (!json_is_object(usage)) {
        goto done;
    }

    /*
     * The cumulative usage is Workers AI's {"response":"","usage"} event
     * or, on the OpenAI-compatible route, the chunk with no choices;
     * chat.completion.chunk usages are increments, never summed.
     */
    if (json_object_get(root, "response") != NULL) {
        if (cfcost_usage_read(usage, &rep) == 0) {
            ctx->native_usage = 1;
        }

    } else if (json_is_array(choices) && json_array_size(choices) == 0) {
        kind = NGX_HTTP_CFCOST_EV_USAGE;

        if (ctx->native_usage || cfcost_usage_read(usage, &rep) != 0) {
            goto done;
        }
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

done:

    if (rep.usage_bad && !ctx->usage_known && !ctx->usage_bad) {
        /* not billed as reported: the stream's cost is estimated */
        ctx->usage_bad = 1;

        if (ctx->error.len == 0) {
            ngx_str_set(&ctx->error, "usage_out_of_range");
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cfcost: Workers AI reported a token count out of "
                      "range; the record carries an estimate");
    }

    json_decref(root);

    return kind;
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
          + ngx_http_cfcost_json_escape_len(ctx->model.data, ctx->model.len)
          + 2;                             /* a line break before it */

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


/*
 * OpenAI's usage chunk as the client gets it: with "cost_usd" in its
 * usage.  NULL when the event cannot be read (it then passes unchanged).
 */
static ngx_buf_t *
ngx_http_cfcost_stream_usage_event(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, cfcost_sse_event_t *ev)
{
    u_char      usd[32];
    size_t      s, e, usd_len;
    ngx_buf_t  *b;

    static const char  *path[] = { "usage" };
    static ngx_str_t    eol[] = {
        ngx_string("\n"),                 /* CFCOST_SSE_LF */
        ngx_string("\r\n"),               /* CFCOST_SSE_CRLF */
        ngx_string("\r")                  /* CFCOST_SSE_CR */
    };

    if (cfcost_json_locate(ev->data, ev->len, path, 1, &s, &e) != 0
        || ev->data[s] != '{')
    {
        return NULL;
    }

    ngx_http_cfcost_settle(ctx);
    usd_len = cfcost_usd6((char *) usd, ctx->cost);

    b = ngx_create_temp_buf(r->pool, ev->len + usd_len + 32);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_cpymem(b->last, "data: ", 6);
    b->last = ngx_cpymem(b->last, ev->data, e - 1);

    if (e - s > 2) {
        *b->last++ = ',';
    }

    b->last = ngx_sprintf(b->last, "\"cost_usd\":%*s", usd_len, usd);
    b->last = ngx_cpymem(b->last, ev->data + e - 1, ev->len - (e - 1));

    /* the stream's own line ending, twice */
    b->last = ngx_cpymem(b->last, eol[ev->eol].data, eol[ev->eol].len);
    b->last = ngx_cpymem(b->last, eol[ev->eol].data, eol[ev->eol].len);

    ctx->cost_sent = 1;

    return b;
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


#define NGX_HTTP_CFCOST_EDITS  4


typedef struct {
    size_t       start;       /* in held + buffer */
    size_t       end;
    ngx_buf_t   *with;        /* NULL: the bytes are dropped */
} ngx_http_cfcost_edit_t;


/*
 * What changes in the stream at a completed event: on cfcost's and the
 * native route the cost event goes before [DONE]; on the OpenAI route
 * the usage chunk gains cost_usd, or is dropped when only cfcost asked
 * for it.  Returns the number of edits now in e[].
 */
static ngx_int_t
ngx_http_cfcost_stream_edit(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    cfcost_sse_event_t *ev, uint64_t base, size_t here,
    ngx_http_cfcost_edit_t *e, ngx_uint_t n)
{
    ngx_uint_t                   kind;
    ngx_buf_t                   *with;
    ngx_http_cfcost_loc_conf_t  *lcf;

    kind = ngx_http_cfcost_stream_event(r, ctx, ev);

    if (kind == NGX_HTTP_CFCOST_EV_OTHER || ctx->cost_sent
        || n == NGX_HTTP_CFCOST_EDITS)
    {
        return n;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route == NGX_HTTP_CFCOST_OPENAI) {
        if (kind != NGX_HTTP_CFCOST_EV_USAGE || ev->start < base) {
            return n;
        }

        with = NULL;

        if (!ctx->usage_added) {
            with = ngx_http_cfcost_stream_usage_event(r, ctx, ev);
            if (with == NULL) {
                return n;
            }
        }

        ctx->cost_sent = 1;
        e[n].start = (size_t) (ev->start - base);
        e[n].end = (size_t) (ev->end - base);
        e[n].with = with;

        return n + 1;
    }

    if (kind != NGX_HTTP_CFCOST_EV_DONE) {
        return n;
    }

    with = ngx_http_cfcost_stream_cost_event(r, ctx);
    if (with == NULL) {
        return NGX_ERROR;
    }

    /* before [DONE]; or, if it began before what we hold, after it */
    e[n].start = (ev->start >= base) ? (size_t) (ev->start - base) : here;
    e[n].end = e[n].start;
    e[n].with = with;

    return n + 1;
}


/*
 * How many bytes at the end of held + buffer wait for the next buffer:
 * on the OpenAI route an unfinished event (it may be the usage chunk);
 * elsewhere only bytes that may yet be "data: [DONE]", at most 16.
 */
static size_t
ngx_http_cfcost_stream_keep(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, uint64_t base, size_t total)
{
    u_char                       tail[16];
    size_t                       keep;
    cfcost_sse_t                *sse = ctx->sse;
    ngx_http_cfcost_loc_conf_t  *lcf;

    if (!sse->in_event || sse->event_start < base || ctx->cost_sent
        || sse->overflow || sse->long_line)
    {
        return 0;                          /* an event too big to read */
    }

    keep = (size_t) (sse->offset - sse->event_start);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route == NGX_HTTP_CFCOST_OPENAI) {
        return keep;
    }

    if (keep > sizeof(tail)) {
        return 0;
    }

    (void) ngx_http_cfcost_stream_copy(tail, ctx, b, total - keep, total);

    return ngx_http_cfcost_done_prefix(tail, keep) ? keep : 0;
}


/*
 * Keeps the last keep bytes of held + b for the next buffer.  The held
 * bytes grow in place, the buffer doubling as needed, so an event that
 * arrives in many pieces costs linear time and memory.
 */
static ngx_int_t
ngx_http_cfcost_stream_hold(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, size_t keep)
{
    u_char  *p;
    size_t   len, old, cap;

    len = b->last - b->pos;
    old = keep > len ? keep - len : 0;     /* bytes kept of the old held */

    if (keep > ctx->held_cap) {
        cap = ngx_max(keep, 2 * ctx->held_cap);

        p = ngx_pnalloc(r->pool, cap);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (old) {
            ngx_memcpy(p, ctx->held + ctx->held_len - old, old);
        }

        ctx->held = p;
        ctx->held_cap = cap;

    } else if (old && old != ctx->held_len) {
        ngx_memmove(ctx->held, ctx->held + ctx->held_len - old, old);
    }

    ngx_memcpy(ctx->held + old, b->last - (keep - old), keep - old);
    ctx->held_len = keep;

    return NGX_OK;
}


/*
 * One upstream buffer: feeds the parser, and appends to *ll either the
 * buffer itself or, when something changes in it, bytes were held, or
 * the stream ends in it, a copy: held bytes and the buffer with the edits
 * made and the new held tail cut off.  A copied buffer is left empty.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_buf(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, ngx_chain_t **ll)
{
    int                      got;
    u_char                  *p;
    size_t                   len, off, total, keep, size, at;
    uint64_t                 base;
    ngx_int_t                n, i;
    ngx_buf_t               *nb;
    cfcost_sse_t            *sse = ctx->sse;
    cfcost_sse_event_t       ev;
    ngx_http_cfcost_edit_t   e[NGX_HTTP_CFCOST_EDITS];

    len = b->last - b->pos;
    base = sse->offset - ctx->held_len;    /* stream offset of held[0] */
    total = ctx->held_len + len;
    n = 0;

    for (off = 0; off < len; /* void */) {
        off += cfcost_sse_feed(sse, (char *) b->pos + off, len - off, &ev,
                               &got);
        if (got) {
            n = ngx_http_cfcost_stream_edit(r, ctx, &ev, base,
                                            ctx->held_len + off, e, n);
            if (n == NGX_ERROR) {
                return NULL;
            }
        }
    }

    keep = ngx_http_cfcost_stream_keep(r, ctx, b, base, total);

    if (ctx->held_len == 0 && n == 0 && keep == 0 && !b->last_buf) {
        return ngx_http_cfcost_stream_append(r, ll, b);
    }

    size = total + 1;
    for (i = 0; i < n; i++) {
        size += e[i].with ? ngx_buf_size(e[i].with) : 0;
    }

    nb = NULL;

    if (size - 1 > keep) {                 /* something goes out now */
        nb = ngx_create_temp_buf(r->pool, size - keep);
        if (nb == NULL) {
            return NULL;
        }

        p = nb->last;
        at = 0;

        for (i = 0; i < n; i++) {
            p = ngx_http_cfcost_stream_copy(p, ctx, b, at, e[i].start);

            if (e[i].with) {
                p = ngx_cpymem(p, e[i].with->pos, ngx_buf_size(e[i].with));
            }

            at = e[i].end;
        }

        p = ngx_http_cfcost_stream_copy(p, ctx, b, at, total - keep);
        nb->last = p;
        nb->flush = 1;
    }

    if (ngx_http_cfcost_stream_hold(r, ctx, b, keep) != NGX_OK) {
        return NULL;
    }

    b->pos = b->last;                      /* copied: upstream may reuse it */

    if (nb == NULL || nb->last == nb->pos) {
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
    ngx_uint_t                   open;
    ngx_buf_t                   *b;
    cfcost_sse_t                *sse = ctx->sse;
    cfcost_sse_event_t           ev;
    ngx_http_cfcost_loc_conf_t  *lcf;

    /* the client holds part of a line or event: end it before ours */
    open = ctx->held_len == 0 && !sse->pending
           && (sse->in_event || sse->line_len || sse->long_line);

    if (cfcost_sse_finish(ctx->sse, &ev)) {
        (void) ngx_http_cfcost_stream_event(r, ctx, &ev);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (!ctx->cost_sent && lcf->route != NGX_HTTP_CFCOST_OPENAI) {
        b = ngx_http_cfcost_stream_cost_event(r, ctx);
        if (b == NULL) {
            return NULL;
        }

        if (open) {
            /* the event's buffer has room for these two bytes */
            ngx_memmove(b->pos + 2, b->pos, b->last - b->pos);
            b->pos[0] = '\n';
            b->pos[1] = '\n';
            b->last += 2;
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
