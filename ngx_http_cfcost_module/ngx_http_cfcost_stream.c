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
 *
 * Memory per stream is bounded: a copy is made into a buffer recycled
 * once the client has it (free/busy chains, as sub_filter does), and the
 * upstream buffer it copies stays busy until then (its shadow), so a
 * slow client holds the upstream back instead of growing the worker.  An
 * unfinished event is held up to CFCOST_SSE_MAX bytes (an event larger
 * than that goes on unread); buffers that grew for a large event are
 * freed once it is through.
 */

#include "ngx_http_cfcost_module.h"


/* buffers larger than this are freed when done with, not kept */
#define NGX_HTTP_CFCOST_KEEP_MAX  65536


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

    /* an upstream buffer and the event held before it, in the usual case */
    ctx->copy_size = ngx_max(2 * r->upstream->conf->buffer_size, 8192);

    /* pass each chunk on as it comes, whatever proxy_buffering says */
    r->upstream->buffering = 0;
    r->filter_need_in_memory = 1;

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);

    return NGX_OK;
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
 * A buffer of at least size bytes for a copy: a recycled one, or a new
 * one of ctx->copy_size (or size, when larger).  Its memory is a block of
 * its own in the pool, so that ngx_pfree() can give it back.
 */
static ngx_buf_t *
ngx_http_cfcost_stream_get_buf(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, size_t size)
{
    u_char       *p;
    size_t        cap;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ctx->free;

    if (cl != NULL) {
        ctx->free = cl->next;
        b = cl->buf;
        ngx_free_chain(r->pool, cl);

        if (b->start != NULL && (size_t) (b->end - b->start) >= size) {
            b->pos = b->start;
            b->last = b->start;
            b->flush = 0;
            return b;
        }

        if (b->start != NULL) {
            (void) ngx_pfree(r->pool, b->start);    /* too small for it */
        }

    } else {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NULL;
        }

        b->tag = (ngx_buf_tag_t) &ngx_http_cfcost_module;
        b->temporary = 1;
    }

    cap = ngx_max(size, ctx->copy_size);

    p = ngx_pnalloc(r->pool, cap);
    if (p == NULL) {
        return NULL;
    }

    b->start = p;
    b->pos = p;
    b->last = p;
    b->end = p + cap;
    b->flush = 0;

    return b;
}


/*
 * After out went to the next filter: the copies the client has whole go
 * back to ctx->free (a large one without its memory), and the upstream
 * buffers they copied are marked sent, so that the upstream reads on.
 */
static void
ngx_http_cfcost_stream_recycle(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_chain_t **out)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    for (ll = &ctx->busy; *ll; ll = &(*ll)->next) { /* void */ }

    *ll = *out;
    *out = NULL;

    while (ctx->busy) {
        cl = ctx->busy;
        b = cl->buf;

        if (ngx_buf_size(b) != 0) {
            break;
        }

        ctx->busy = cl->next;

        if (b->tag != (ngx_buf_tag_t) &ngx_http_cfcost_module) {
            ngx_free_chain(r->pool, cl);
            continue;
        }

        if (b->shadow) {
            b->shadow->pos = b->shadow->last;
            b->shadow = NULL;
        }

        if ((size_t) (b->end - b->start) > ctx->copy_size) {
            (void) ngx_pfree(r->pool, b->start);
            b->start = NULL;
            b->pos = NULL;
            b->last = NULL;
            b->end = NULL;
        }

        cl->next = ctx->free;
        ctx->free = cl;
    }
}


/* passes out on, then recycles what the client has */
static ngx_int_t
ngx_http_cfcost_stream_send(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_chain_t *out, ngx_http_output_body_filter_pt next)
{
    ngx_int_t  rc;

    rc = next(r, out);

    ngx_http_cfcost_stream_recycle(r, ctx, &out);

    return rc;
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
ngx_http_cfcost_edit_add(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_http_cfcost_edits_t *ed, size_t start, size_t end, ngx_buf_t *with)
{
    ngx_http_cfcost_edit_t  *e;

    if (ed->n == ed->cap) {
        /*
         * many usage events in one buffer: rare; one array for the
         * stream (ctx->edits), grown as needed, whatever the buffers
         */
        e = ngx_palloc(r->pool, 2 * ed->cap * sizeof(ngx_http_cfcost_edit_t));
        if (e == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(e, ed->elts, ed->n * sizeof(ngx_http_cfcost_edit_t));

        if (ed->elts == ctx->edits) {
            (void) ngx_pfree(r->pool, ctx->edits);
        }

        ed->elts = e;
        ed->cap *= 2;
        ctx->edits = e;
        ctx->edits_cap = ed->cap;
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

        return ngx_http_cfcost_edit_add(r, ctx, ed,
                                        (size_t) (ev->start - base),
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

    return ngx_http_cfcost_edit_add(r, ctx, ed, at, at, with);
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

        if (ctx->held != NULL) {
            (void) ngx_pfree(r->pool, ctx->held);   /* a large block goes */
        }

        ctx->held = p;
        ctx->held_cap = cap;

    } else if (keep == 0 && ctx->held_cap > NGX_HTTP_CFCOST_KEEP_MAX) {
        /* the large event it grew for went out: give it back */
        (void) ngx_pfree(r->pool, ctx->held);
        ctx->held = NULL;
        ctx->held_cap = 0;

    } else if (old && old != ctx->held_len) {
        ngx_memmove(ctx->held, ctx->held + ctx->held_len - old, old);
    }

    if (keep > old) {                   /* nothing held yet: held is NULL */
        ngx_memcpy(ctx->held + old, b->last - (keep - old), keep - old);
    }

    ctx->held_len = keep;

    return NGX_OK;
}


/*
 * One upstream buffer: feeds the parser, and appends to *ll either the
 * buffer itself (*passed set) or, when something changes in it, bytes
 * were held, or the stream ends in it, a copy: held bytes and the buffer
 * with the edits made, the new held tail cut off, and nothing past
 * [DONE].  A copied buffer is left as it is until the copy is sent (the
 * copy's shadow), or emptied when nothing of it goes out now.
 */
static ngx_chain_t **
ngx_http_cfcost_stream_buf(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_buf_t *b, ngx_chain_t **ll, ngx_uint_t *passed)
{
    int                      got;
    u_char                  *p;
    size_t                   len, off, total, keep, size, at, stop;
    uint64_t                 base;
    ngx_uint_t               i;
    ngx_buf_t               *nb;
    ngx_chain_t             *cl;
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

    ed.n = 0;

    if (ctx->edits != NULL) {
        ed.elts = ctx->edits;
        ed.cap = ctx->edits_cap;

    } else {
        ed.elts = e;
        ed.cap = 4;
    }

    *passed = 0;

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

    /* the events read: what a large one made the parser grow goes */
    cfcost_sse_trim(sse, NGX_HTTP_CFCOST_KEEP_MAX);

    if (ctx->held_len == 0 && ed.n == 0 && keep == 0 && stop == total
        && !b->last_buf)
    {
        *passed = 1;
        return ngx_http_cfcost_stream_append(r, ll, b);
    }

    stop = ngx_min(stop, total - keep);

    size = stop + 1;
    for (i = 0; i < ed.n; i++) {
        size += ed.elts[i].with ? ngx_buf_size(ed.elts[i].with) : 0;
    }

    nb = NULL;

    if (size > 1) {                        /* something goes out now */
        nb = ngx_http_cfcost_stream_get_buf(r, ctx, size);
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

    if (nb == NULL || nb->last == nb->pos) {
        b->pos = b->last;                  /* all of it held or dropped */

        if (nb != NULL) {
            /* unused (an empty buffer must not go on): back to free */
            cl = ngx_alloc_chain_link(r->pool);
            if (cl == NULL) {
                return NULL;
            }

            cl->buf = nb;
            cl->next = ctx->free;
            ctx->free = cl;
        }

        return ll;
    }

    /* the upstream reuses b once the client has the copy */
    nb->shadow = b;

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
    ngx_uint_t     passed;
    ngx_chain_t   *out, **ll, *cl;

    out = NULL;
    ll = &out;

    if (in == NULL) {
        /* the client took more: what it has whole is recycled */
        return ngx_http_cfcost_stream_send(r, ctx, NULL, next);
    }

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
            /* the caller's flush, in a link of ours (ours are recycled) */
            if (ngx_http_cfcost_stream_append(r, ll, in->buf) == NULL) {
                return NGX_ERROR;
            }

            return ngx_http_cfcost_stream_send(r, ctx, out, next);
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

        return ngx_http_cfcost_stream_send(r, ctx, out, next);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_size(b)) {
            if (ctx->sse_done) {
                b->pos = b->last;          /* past [DONE]: not sent */

            } else {
                ll = ngx_http_cfcost_stream_buf(r, ctx, b, ll, &passed);
                if (ll == NULL) {
                    return NGX_ERROR;
                }

                if (passed) {
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

    /* out is NULL when all was held */
    return ngx_http_cfcost_stream_send(r, ctx, out, next);
}
