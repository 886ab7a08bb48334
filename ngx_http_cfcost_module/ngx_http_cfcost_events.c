/*
 * The events of a stream: what an upstream event says (the end, generated
 * text, usage: the last usage event counts), and the events cfcost writes
 * where the stream ends (the cost event, the OpenAI usage chunk), after
 * which the cost is final.  _stream.c decides where they go.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                    /* memmem() */
#endif

#include <jansson.h>

#include "ngx_http_cfcost_module.h"
#include "cfcost_json.h"


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
ngx_uint_t
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

            if (ctx->usage_ev != NULL) {
                (void) ngx_pfree(r->pool, ctx->usage_ev);  /* if large */
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
ngx_int_t
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
