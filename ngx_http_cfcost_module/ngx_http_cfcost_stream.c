/*
 * Streamed responses (text/event-stream).
 *
 * Bytes pass through as they arrive: each upstream buffer goes to the
 * client in the same call, while the SSE parser reads usage from it on
 * the side.  Only an event that a buffer ends in the middle of waits for
 * its end (complete events never wait), so that cfcost can always edit at
 * an event's boundary.  One reading of the stream serves the client and
 * the record alike (README, "One reading"):
 *
 *   the last usage event is the usage; once cfcost tells the client the
 *   cost -- just before "data: [DONE]", or at the end of a stream that has
 *   none -- the cost is final and nothing after [DONE] is read or sent.
 *
 *   chat and native routes: one cfcost event carrying the cost goes just
 *   before [DONE].  OpenAI route: every usage chunk of the upstream is
 *   withheld; a client that asked for usage gets one, the last, with
 *   "cost_usd" in it (an estimate, flagged, when no usable one came).
 *
 * Edits are rare (once a stream), so a buffer with one is copied; every
 * other buffer goes on untouched.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                    /* memmem() */
#endif

#include <jansson.h>

#include "ngx_http_cfcost_module.h"
#include "cfcost_json.h"


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
#define NGX_HTTP_CFCOST_EV_USAGE    2     /* usage only: withheld on the
                                             OpenAI route */


/* the usage an event reports, read: the last one counts */
static void
ngx_http_cfcost_stream_usage(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    json_t *usage)
{
    cfcost_reply_t  rep;

    ngx_memzero(&rep, sizeof(cfcost_reply_t));

    if (json_is_object(usage) && cfcost_usage_read(usage, &rep) == 0) {
        ctx->usage_known = 1;
        ctx->input = rep.input;
        ctx->output = rep.output;
        ctx->cached = rep.cached;
        ctx->has_neurons = rep.has_neurons;
        ctx->neurons = rep.neurons;

        if (ctx->usage_bad) {
            ctx->usage_bad = 0;
            ngx_str_null(&ctx->error);
        }

        return;
    }

    /* a later usage that cannot be billed undoes an earlier one */
    ctx->usage_known = 0;
    ctx->has_neurons = 0;

    if (rep.usage_bad && !ctx->usage_bad && ctx->error.len == 0) {
        ctx->usage_bad = 1;
        ngx_str_set(&ctx->error, "usage_out_of_range");

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cfcost: Workers AI reported a token count out of "
                      "range; the stream's cost is estimated");
    }
}


/*
 * Reads what an event says: the end, generated text, usage.  A usage
 * event is an object with a "usage" member and no choices (Workers AI's
 * {"response":"","usage"}, OpenAI's final chunk); the usage of a
 * chat.completion.chunk with choices is an increment, never read.
 */
static ngx_uint_t
ngx_http_cfcost_stream_event(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    cfcost_sse_event_t *ev)
{
    u_char                      *p;
    json_t                      *root, *usage, *choices, *text;
    uint64_t                     in, out, cached;
    ngx_uint_t                   kind, openai, was;
    ngx_http_cfcost_loc_conf_t  *lcf;

    if (ev->len == 6 && ngx_memcmp(ev->data, "[DONE]", 6) == 0) {
        return NGX_HTTP_CFCOST_EV_DONE;
    }

    if (ctx->billed) {
        return NGX_HTTP_CFCOST_EV_OTHER;   /* the cost was told: final */
    }

    ctx->text_bytes += cfcost_text_bytes(ev->data, ev->len);

    if (memmem(ev->data, ev->len, "\"usage\"", 7) == NULL) {
        return NGX_HTTP_CFCOST_EV_OTHER;    /* most events: no JSON parse */
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
    openai = (lcf->route == NGX_HTTP_CFCOST_OPENAI);

    root = NULL;

    if (cfcost_json_valid(ev->data, ev->len) == 0) {
        root = cfcost_json_load(ev->data, ev->len, 0);
    }

    if (!json_is_object(root)) {
        json_decref(root);

        /*
         * not valid JSON: not billed from, and on the OpenAI route not
         * passed on either, as it may be a usage chunk
         */
        return openai ? NGX_HTTP_CFCOST_EV_USAGE : NGX_HTTP_CFCOST_EV_OTHER;
    }

    kind = NGX_HTTP_CFCOST_EV_OTHER;
    usage = json_object_get(root, "usage");
    choices = json_object_get(root, "choices");
    text = json_object_get(root, "response");

    if (usage == NULL || json_is_null(usage)
        || (choices != NULL
            && !(json_is_array(choices) && json_array_size(choices) == 0)))
    {
        goto done;
    }

    was = ctx->usage_known;
    in = ctx->input;
    out = ctx->output;
    cached = ctx->cached;

    ngx_http_cfcost_stream_usage(r, ctx, usage);

    /* withheld unless it carries text too */
    if (!json_is_string(text) || json_string_length(text) == 0) {
        kind = NGX_HTTP_CFCOST_EV_USAGE;
    }

    if (openai && ctx->usage_known && json_is_array(choices)) {
        /* OpenAI's own chunk: the client's copy is made from it */
        if (ev->len > ctx->usage_ev_cap) {
            p = ngx_pnalloc(r->pool, ev->len);
            if (p == NULL) {
                goto done;
            }

            ctx->usage_ev = p;
            ctx->usage_ev_cap = ev->len;
        }

        ngx_memcpy(ctx->usage_ev, ev->data, ev->len);
        ctx->usage_ev_len = ev->len;

    } else if (openai
               && !(was && ctx->usage_known && in == ctx->input
                    && out == ctx->output && cached == ctx->cached))
    {
        ctx->usage_ev_len = 0;             /* the copy no longer tells it */
    }

done:

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

    ngx_http_cfcost_bill(r, ctx, NGX_HTTP_OK);
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

    return b;
}


static ngx_str_t  ngx_http_cfcost_eol[] = {
    ngx_string("\n"),                     /* CFCOST_SSE_LF */
    ngx_string("\r\n"),                   /* CFCOST_SSE_CRLF */
    ngx_string("\r")                      /* CFCOST_SSE_CR */
};


/*
 * OpenAI's usage chunk as the client gets it: the last one Workers AI
 * sent, with "cost_usd" added to its usage; or, when no usable one came,
 * one made here with the estimate, flagged "estimated".
 */
static ngx_buf_t *
ngx_http_cfcost_stream_usage_chunk(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t eol)
{
    u_char      usd[32];
    size_t      s, e, len, usd_len;
    ngx_str_t  *nl;
    ngx_buf_t  *b;

    static const char  *path[] = { "usage" };

    ngx_http_cfcost_bill(r, ctx, NGX_HTTP_OK);
    usd_len = cfcost_usd6((char *) usd, ctx->cost);
    nl = &ngx_http_cfcost_eol[eol];

    if (ctx->usage_known && ctx->usage_ev_len
        && cfcost_json_locate((char *) ctx->usage_ev, ctx->usage_ev_len,
                              path, 1, &s, &e) == 0
        && ctx->usage_ev[s] == '{')
    {
        b = ngx_create_temp_buf(r->pool, ctx->usage_ev_len + usd_len + 32);
        if (b == NULL) {
            return NULL;
        }

        b->last = ngx_cpymem(b->last, "data: ", 6);
        b->last = ngx_http_cfcost_insert_cost(b->last, ctx->usage_ev,
                                              ctx->usage_ev_len, s, e,
                                              usd, usd_len);
        b->last = ngx_cpymem(b->last, nl->data, nl->len);
        b->last = ngx_cpymem(b->last, nl->data, nl->len);

        return b;
    }

    len = sizeof("data: {\"id\":\"cfcost-\",\"object\":\"chat.completion.chunk\","
                 "\"created\":,\"model\":\"\",\"choices\":[],\"usage\":{"
                 "\"prompt_tokens\":,\"completion_tokens\":,"
                 "\"total_tokens\":,\"cost_usd\":,\"estimated\":false}}")
          + NGX_HTTP_CFCOST_ID_LEN + 4 * NGX_INT64_LEN + usd_len
          + ngx_http_cfcost_json_escape_len(ctx->model.data, ctx->model.len)
          + 4;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_sprintf(b->last, "data: {\"id\":\"cfcost-%*s\","
                          "\"object\":\"chat.completion.chunk\","
                          "\"created\":%T,\"model\":\"",
                          (size_t) NGX_HTTP_CFCOST_ID_LEN, ctx->request_id,
                          ngx_time());
    b->last = ngx_http_cfcost_json_escape(b->last, ctx->model.data,
                                          ctx->model.len);
    b->last = ngx_sprintf(b->last, "\",\"choices\":[],\"usage\":{"
                          "\"prompt_tokens\":%uL,\"completion_tokens\":%uL,"
                          "\"total_tokens\":%uL,\"cost_usd\":%*s,"
                          "\"estimated\":%s}}",
                          ctx->input, ctx->output, ctx->input + ctx->output,
                          usd_len, usd, ctx->estimated ? "true" : "false");
    b->last = ngx_cpymem(b->last, nl->data, nl->len);
    b->last = ngx_cpymem(b->last, nl->data, nl->len);

    return b;
}


/*
 * What cfcost tells the client where the stream ends: the cost event, or
 * on the OpenAI route the usage chunk when the client asked for usage.
 * Either way the cost is final from here.  Sets *b to NULL when nothing
 * is to be added; returns NGX_ERROR when out of memory.
 */
static ngx_int_t
ngx_http_cfcost_stream_ours(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t eol, ngx_buf_t **b)
{
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route != NGX_HTTP_CFCOST_OPENAI) {
        *b = ngx_http_cfcost_stream_cost_event(r, ctx);

    } else if (!ctx->usage_added) {
        *b = ngx_http_cfcost_stream_usage_chunk(r, ctx, eol);

    } else {
        ngx_http_cfcost_bill(r, ctx, NGX_HTTP_OK);
        *b = NULL;
        return NGX_OK;
    }

    return *b ? NGX_OK : NGX_ERROR;
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


typedef struct {
    size_t       start;       /* in held + buffer */
    size_t       end;
    ngx_buf_t   *with;        /* NULL: the bytes are dropped */
} ngx_http_cfcost_edit_t;


typedef struct {
    ngx_http_cfcost_edit_t  *elts;
    ngx_uint_t               n;
    ngx_uint_t               cap;
} ngx_http_cfcost_edits_t;


static ngx_int_t
ngx_http_cfcost_edit_add(ngx_http_request_t *r, ngx_http_cfcost_edits_t *ed,
    size_t start, size_t end, ngx_buf_t *with)
{
    ngx_http_cfcost_edit_t  *e;

    if (ed->n == ed->cap) {
        /* many usage events in one buffer: rare, from the pool */
        e = ngx_palloc(r->pool, 2 * ed->cap * sizeof(ngx_http_cfcost_edit_t));
        if (e == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(e, ed->elts, ed->n * sizeof(ngx_http_cfcost_edit_t));
        ed->elts = e;
        ed->cap *= 2;
    }

    e = &ed->elts[ed->n++];
    e->start = start;
    e->end = end;
    e->with = with;

    return NGX_OK;
}


/*
 * What changes in the stream at a completed event: cfcost's own event
 * goes before [DONE], after which the stream is over (sse_done); on the
 * OpenAI route usage chunks are withheld.
 */
static ngx_int_t
ngx_http_cfcost_stream_edit(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    cfcost_sse_event_t *ev, uint64_t base, size_t here,
    ngx_http_cfcost_edits_t *ed)
{
    size_t                       at;
    ngx_uint_t                   kind;
    ngx_buf_t                   *with;
    ngx_http_cfcost_loc_conf_t  *lcf;

    kind = ngx_http_cfcost_stream_event(r, ctx, ev);

    if (kind == NGX_HTTP_CFCOST_EV_OTHER) {
        return NGX_OK;
    }

    if (kind == NGX_HTTP_CFCOST_EV_USAGE) {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

        if (lcf->route != NGX_HTTP_CFCOST_OPENAI || ev->start < base) {
            return NGX_OK;
        }

        return ngx_http_cfcost_edit_add(r, ed, (size_t) (ev->start - base),
                                        (size_t) (ev->end - base), NULL);
    }

    ctx->sse_done = 1;

    if (ngx_http_cfcost_stream_ours(r, ctx, ev->eol, &with) != NGX_OK) {
        return NGX_ERROR;
    }

    if (with == NULL) {
        return NGX_OK;
    }

    /* before [DONE]; or, if it began in bytes already sent, after it */
    at = (ev->start >= base) ? (size_t) (ev->start - base) : here;

    return ngx_http_cfcost_edit_add(r, ed, at, at, with);
}


/*
 * How many bytes at the end of held + buffer wait for the next buffer:
 * an unfinished event, from its first byte, unless it began in bytes
 * already sent or is too big to read.
 */
static size_t
ngx_http_cfcost_stream_keep(ngx_http_cfcost_ctx_t *ctx, uint64_t base)
{
    cfcost_sse_pos_t  pos;

    cfcost_sse_position(ctx->sse, &pos);

    if (!pos.unfinished || pos.event_start < base) {
        return 0;
    }

    return (size_t) (pos.offset - pos.event_start);
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
 * made, the new held tail cut off, and nothing past [DONE].  A copied
 * buffer is left empty.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_buf(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, ngx_chain_t **ll)
{
    int                      got;
    u_char                  *p;
    size_t                   len, off, total, keep, size, at, stop;
    uint64_t                 base;
    ngx_uint_t               i;
    ngx_buf_t               *nb;
    cfcost_sse_t            *sse = ctx->sse;
    cfcost_sse_pos_t         pos;
    cfcost_sse_event_t       ev;
    ngx_http_cfcost_edit_t   e[4];
    ngx_http_cfcost_edits_t  ed;

    len = b->last - b->pos;
    cfcost_sse_position(sse, &pos);
    base = pos.offset - ctx->held_len;     /* stream offset of held[0] */
    total = ctx->held_len + len;
    stop = total;

    ed.elts = e;
    ed.n = 0;
    ed.cap = 4;

    for (off = 0; off < len; /* void */) {
        off += cfcost_sse_feed(sse, (char *) b->pos + off, len - off, &ev,
                               &got);
        if (!got) {
            continue;
        }

        if (ngx_http_cfcost_stream_edit(r, ctx, &ev, base,
                                        ctx->held_len + off, &ed)
            != NGX_OK)
        {
            return NULL;
        }

        if (ctx->sse_done) {
            /* [DONE] ends the stream: what follows is not read or sent */
            stop = (size_t) (ev.end - base);

            if (ed.n && ed.elts[ed.n - 1].end > stop) {
                stop = ed.elts[ed.n - 1].end;   /* [DONE] began earlier */
            }

            break;
        }
    }

    keep = ctx->sse_done ? 0 : ngx_http_cfcost_stream_keep(ctx, base);

    if (ctx->held_len == 0 && ed.n == 0 && keep == 0 && stop == total
        && !b->last_buf)
    {
        return ngx_http_cfcost_stream_append(r, ll, b);
    }

    stop = ngx_min(stop, total - keep);

    size = stop + 1;
    for (i = 0; i < ed.n; i++) {
        size += ed.elts[i].with ? ngx_buf_size(ed.elts[i].with) : 0;
    }

    nb = NULL;

    if (size > 1) {                        /* something goes out now */
        nb = ngx_create_temp_buf(r->pool, size);
        if (nb == NULL) {
            return NULL;
        }

        p = nb->last;
        at = 0;

        for (i = 0; i < ed.n; i++) {
            p = ngx_http_cfcost_stream_copy(p, ctx, b, at, ed.elts[i].start);

            if (ed.elts[i].with) {
                p = ngx_cpymem(p, ed.elts[i].with->pos,
                               ngx_buf_size(ed.elts[i].with));
            }

            at = ed.elts[i].end;
        }

        p = ngx_http_cfcost_stream_copy(p, ctx, b, at, stop);
        nb->last = p;
        nb->flush = 1;
    }

    if (ngx_http_cfcost_stream_hold(r, ctx, b, keep) != NGX_OK) {
        return NULL;
    }

    b->pos = b->last;                      /* copied: upstream may reuse it */

    if (nb == NULL || nb->last == nb->pos) {
        return ll;                         /* all of it held or dropped */
    }

    return ngx_http_cfcost_stream_append(r, ll, nb);
}


/*
 * The blank line an event left unfinished at the end of the stream
 * needs, in the line ending it used: the client then reads it whole.
 */
static size_t
ngx_http_cfcost_stream_close_event(u_char *p, size_t n, u_char *out)
{
    if (n >= 2 && ((p[n - 1] == '\n' && (p[n - 2] == '\n'
                                         || (n >= 4 && p[n - 2] == '\r'
                                             && p[n - 3] == '\n'
                                             && p[n - 4] == '\r')))
                   || (p[n - 1] == '\r' && p[n - 2] == '\r')))
    {
        return 0;
    }

    if (n && p[n - 1] == '\n') {
        out[0] = '\n';
        return 1;
    }

    if (n && p[n - 1] == '\r') {
        out[0] = '\r';
        return 1;
    }

    out[0] = '\n';
    out[1] = '\n';
    return 2;
}


/*
 * The stream ends (last_buf) or breaks off: an event it left unfinished
 * is read and goes out whole (or is withheld, a usage chunk on the OpenAI
 * route), and cfcost's own event goes out if it has not: before a
 * [DONE] left unfinished, else last.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_end(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_chain_t **ll)
{
    u_char                       tail[2];
    size_t                       n;
    ngx_uint_t                   open, kind, eol;
    ngx_buf_t                   *ours, *held;
    cfcost_sse_t                *sse = ctx->sse;
    cfcost_sse_pos_t             pos;
    cfcost_sse_event_t           ev;
    ngx_http_cfcost_loc_conf_t  *lcf;

    ctx->sse_end = 1;

    if (ctx->sse_done) {
        return ll;                         /* [DONE] went out: all said */
    }

    /* the client holds part of an event too big to hold: end it first */
    cfcost_sse_position(sse, &pos);
    open = ctx->held_len == 0 && pos.open;

    kind = NGX_HTTP_CFCOST_EV_OTHER;
    eol = pos.eol;

    if (cfcost_sse_finish(sse, &ev)) {
        kind = ngx_http_cfcost_stream_event(r, ctx, &ev);
        eol = ev.eol;
    }

    held = NULL;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (ctx->held_len && !(kind == NGX_HTTP_CFCOST_EV_USAGE
                           && lcf->route == NGX_HTTP_CFCOST_OPENAI))
    {
        held = ngx_create_temp_buf(r->pool, ctx->held_len + 2);
        if (held == NULL) {
            return NULL;
        }

        held->last = ngx_cpymem(held->last, ctx->held, ctx->held_len);
        n = ngx_http_cfcost_stream_close_event(ctx->held, ctx->held_len, tail);
        held->last = ngx_cpymem(held->last, tail, n);
        held->flush = 1;
    }

    ctx->held_len = 0;
    ctx->sse_done = 1;

    if (ngx_http_cfcost_stream_ours(r, ctx, eol, &ours) != NGX_OK) {
        return NULL;
    }

    if (ours && open) {
        /* its buffer was made with room for these two bytes */
        ngx_memmove(ours->pos + 2, ours->pos, ours->last - ours->pos);
        ours->pos[0] = '\n';
        ours->pos[1] = '\n';
        ours->last += 2;
    }

    if (held && kind != NGX_HTTP_CFCOST_EV_DONE) {
        ll = ngx_http_cfcost_stream_append(r, ll, held);
        held = NULL;
    }

    if (ours && ll) {
        ours->flush = 1;
        ll = ngx_http_cfcost_stream_append(r, ll, ours);
    }

    if (held && ll) {
        ll = ngx_http_cfcost_stream_append(r, ll, held);
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
     * broke off (reset, timeout, broken framing), and nginx closes the
     * connection after this, without the last chunk: the client sees the
     * break, but still learns what the stream cost so far.  (Past [DONE]
     * nothing was missing: the stream ends cleanly.)
     */
    if (in->next == NULL && in->buf->flush && !in->buf->last_buf
        && ngx_buf_size(in->buf) == 0 && r->upstream != NULL
        && r->upstream->peer.connection == NULL && !ctx->sse_end)
    {
        if (!ctx->sse_done) {
            ctx->truncated = 1;
            ngx_str_set(&ctx->error, "upstream_incomplete");
        }

        ll = ngx_http_cfcost_stream_end(r, ctx, ll);
        if (ll == NULL) {
            return NGX_ERROR;
        }

        if (ctx->truncated) {
            *ll = in;
            return next(r, out);
        }

        /* past [DONE] the answer was whole: it ends cleanly */
        last = ngx_calloc_buf(r->pool);
        if (last == NULL
            || ngx_http_cfcost_stream_append(r, ll, last) == NULL)
        {
            return NGX_ERROR;
        }

        last->last_buf = 1;
        last->last_in_chain = 1;

        return next(r, out);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_size(b)) {
            if (ctx->sse_done) {
                b->pos = b->last;          /* past [DONE]: not sent */

            } else {
                ll = ngx_http_cfcost_stream_buf(r, ctx, b, ll);
                if (ll == NULL) {
                    return NGX_ERROR;
                }

                if (b->pos != b->last) {
                    continue;              /* it went out itself */
                }
            }
        }

        if (b->last_buf && !ctx->sse_end) {
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
