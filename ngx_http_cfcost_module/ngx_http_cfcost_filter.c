/*
 * Response filters of a cfcost location.
 *
 * The chat route answers with its own body ({"response", tokens,
 * "cost_usd"}), and the cost headers can only be set once the usage is
 * read, so the header is held (as image_filter does) and the upstream body
 * collected; at its end the usage is read, priced, and the new header and
 * body are sent.  Errors nginx makes itself (502, 504, 413...) are turned
 * into JSON {"detail"} like every other error of the API.
 */

#include <jansson.h>

#include "ngx_http_cfcost_module.h"
#include "cfcost_json.h"


static ngx_int_t ngx_http_cfcost_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_cfcost_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_cfcost_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_cfcost_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_cfcost_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_cfcost_add_header(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


static void
ngx_http_cfcost_set_json(ngx_http_request_t *r, ngx_uint_t status,
    size_t len)
{
    r->headers_out.status = status;
    r->headers_out.status_line.len = 0;
    r->headers_out.content_length_n = len;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);
}


static ngx_int_t
ngx_http_cfcost_header_filter(ngx_http_request_t *r)
{
    ngx_http_upstream_t         *u;
    ngx_http_cfcost_ctx_t       *ctx;
    ngx_http_cfcost_loc_conf_t  *lcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
    if (lcf->route == NGX_HTTP_CFCOST_OFF) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    if (ctx != NULL && ngx_http_cfcost_rate_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx != NULL && ctx->own_response) {
        if (ctx->request_id[0]) {
            (void) ngx_http_cfcost_add_header(r, "X-Cfcost-Request-Id",
                                              ctx->request_id,
                                              NGX_HTTP_CFCOST_ID_LEN);
        }

        return ngx_http_next_header_filter(r);
    }

    if (ctx == NULL) {
        ctx = ngx_http_cfcost_get_ctx(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    u = r->upstream;

    /*
     * nginx's own page, not the upstream's answer: no upstream status, or
     * one whose headers nginx then refused (its 502 replaced the 200)
     */
    if (u == NULL || u->headers_in.status_n == 0 || !ctx->checked
        || u->headers_in.status_n != r->headers_out.status)
    {

        if (r->headers_out.status < NGX_HTTP_BAD_REQUEST) {
            return ngx_http_next_header_filter(r);
        }

        /* nginx's own error page: the API answers JSON */
        ctx->nginx_error = 1;

    } else if (lcf->route == NGX_HTTP_CFCOST_USAGE) {
        return ngx_http_next_header_filter(r);    /* the aggregator's own */

    } else if (ctx->stream && u->headers_in.status_n == NGX_HTTP_OK
               && r->headers_out.content_type.len >= 17
               && ngx_strncasecmp(r->headers_out.content_type.data,
                                  (u_char *) "text/event-stream", 17) == 0)
    {
        ctx->upstream_status = NGX_HTTP_OK;
        ctx->status = NGX_HTTP_OK;
        ngx_http_cfcost_wrap_input(r, ctx);
        ngx_http_cfcost_allow_headers(r);

        if (ngx_http_cfcost_stream_start(r, ctx) != NGX_OK
            || ngx_http_cfcost_add_header(r, "X-Cfcost-Request-Id",
                                          ctx->request_id,
                                          NGX_HTTP_CFCOST_ID_LEN)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_next_header_filter(r);

    } else {
        ctx->upstream_status = u->headers_in.status_n;
        ngx_http_cfcost_wrap_input(r, ctx);
        ngx_http_cfcost_allow_headers(r);

        if (r->headers_out.content_encoding
            && r->headers_out.content_encoding->value.len
            && ngx_strcasecmp(r->headers_out.content_encoding->value.data,
                              (u_char *) "identity") != 0)
        {
            ctx->encoded = 1;
            r->headers_out.content_encoding->hash = 0;
            r->headers_out.content_encoding = NULL;
        }
    }

    ctx->rewrite = 1;
    r->filter_need_in_memory = 1;
    r->allow_ranges = 0;

    return NGX_OK;                     /* sent with the rewritten body */
}


/*
 * Past response_max the answer is dropped, but Workers AI generated all
 * of it: its text is counted as it passes, for the estimate.
 */
static ngx_int_t
ngx_http_cfcost_count_text(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    u_char *p, size_t size)
{
    if (ctx->text == NULL) {
        ctx->text = ngx_palloc(r->pool, sizeof(cfcost_text_t));
        if (ctx->text == NULL) {
            return NGX_ERROR;
        }

        cfcost_text_init(ctx->text);
        cfcost_text_feed(ctx->text, (char *) ctx->resp, ctx->resp_len);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "cfcost: answer over cfcost_response_buffer after "
                       "%uz bytes: counting its text only", ctx->resp_len);
    }

    cfcost_text_feed(ctx->text, (char *) p, size);
    ctx->text_bytes = ctx->text->bytes;

    return NGX_OK;
}


/* collects the upstream body; past response_max it is only counted */
static ngx_int_t
ngx_http_cfcost_collect(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_chain_t *in, ngx_uint_t *last)
{
    u_char                      *p;
    size_t                       size, cap;
    ngx_buf_t                   *b;
    ngx_chain_t                 *cl;
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;
        size = b->last - b->pos;

        if (b->last_buf) {
            *last = 1;
        }

        if (size == 0 || ctx->nginx_error) {
            b->pos = b->last;
            continue;
        }

        if (ctx->too_large || ctx->resp_len + size > lcf->response_max) {
            if (ngx_http_cfcost_count_text(r, ctx, b->pos, size) != NGX_OK) {
                return NGX_ERROR;
            }

            ctx->too_large = 1;
            b->pos = b->last;
            continue;
        }

        if (ctx->resp_len + size > ctx->resp_cap) {
            cap = ngx_max(ctx->resp_cap * 2, ctx->resp_len + size);
            cap = ngx_max(cap, 4096);

            if (ctx->resp_cap == 0 && r->upstream != NULL
                && r->upstream->headers_in.content_length_n > (off_t) cap)
            {
                /* the length is known: one buffer, never grown */
                cap = (size_t) r->upstream->headers_in.content_length_n;
            }

            cap = ngx_min(cap, lcf->response_max);

            p = ngx_pnalloc(r->pool, cap);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (ctx->resp_len) {
                ngx_memcpy(p, ctx->resp, ctx->resp_len);
            }

            if (ctx->resp != NULL) {
                (void) ngx_pfree(r->pool, ctx->resp);   /* if large */
            }

            ctx->resp = p;
            ctx->resp_cap = cap;
        }

        ngx_memcpy(ctx->resp + ctx->resp_len, b->pos, size);
        ctx->resp_len += size;
        b->pos = b->last;
    }

    return NGX_OK;
}


/* the route's error body for ctx->status, in the request's pool */
static ngx_chain_t *
ngx_http_cfcost_detail_body(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    const char *fmt, ...)
{
    u_char       msg[CFCOST_DETAIL_MAX + 256], *last;
    va_list      args;
    ngx_buf_t   *b;
    ngx_chain_t  *cl;

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    b = ngx_http_cfcost_error_buf(r, ctx->status, msg, last - msg);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


static ngx_chain_t *
ngx_http_cfcost_success_body(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    cfcost_reply_t *rep)
{
    u_char       *p, usd[32];
    char         *dump;
    size_t        len, text_len, usd_len;
    json_t       *text;
    ngx_uint_t    told;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;
    const char   *raw;

    text = rep->text;
    dump = NULL;
    raw = "";
    text_len = 0;

    if (rep->text_raw != NULL) {
        raw = rep->text_raw;               /* a JSON string literal already */
        text_len = rep->text_raw_len;
        len = text_len;

    } else if (json_is_string(text)) {
        raw = json_string_value(text);
        text_len = json_string_length(text);
        len = ngx_http_cfcost_json_escape_len((u_char *) raw, text_len) + 2;

    } else if (text != NULL && !json_is_null(text)) {
        dump = json_dumps(text, JSON_COMPACT|JSON_ENCODE_ANY);
        if (dump == NULL) {
            return NULL;
        }

        raw = dump;
        text_len = ngx_strlen(dump);
        len = text_len;

    } else {
        len = 2;
    }

    told = ctx->usage_known || ctx->estimated;
    usd_len = told ? cfcost_usd6((char *) usd, ctx->cost) : 0;

    len += sizeof("{\"response\":,\"model\":\"\",\"input_tokens\":,"
                  "\"output_tokens\":,\"total_tokens\":,\"cost_usd\":,"
                  "\"estimated\":false,\"request_id\":\"\"}\n")
           + ngx_http_cfcost_json_escape_len(ctx->model.data, ctx->model.len)
           + 3 * NGX_INT64_LEN + 32 + NGX_HTTP_CFCOST_ID_LEN;

    b = ngx_create_temp_buf(r->pool, len);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        free(dump);
        return NULL;
    }

    p = ngx_cpymem(b->last, "{\"response\":", sizeof("{\"response\":") - 1);

    if (rep->text_raw != NULL) {
        p = ngx_cpymem(p, raw, text_len);

    } else if (json_is_string(text)) {
        *p++ = '"';
        p = ngx_http_cfcost_json_escape(p, (u_char *) raw, text_len);
        *p++ = '"';

    } else if (dump != NULL) {
        p = ngx_cpymem(p, dump, text_len);
        free(dump);

    } else {
        p = ngx_cpymem(p, "\"\"", 2);
    }

    p = ngx_cpymem(p, ",\"model\":\"", sizeof(",\"model\":\"") - 1);
    p = ngx_http_cfcost_json_escape(p, ctx->model.data, ctx->model.len);

    if (told) {
        p = ngx_cpymem(p, "\",\"input_tokens\":",
                       sizeof("\",\"input_tokens\":") - 1);
        p = (u_char *) cfcost_dec((char *) p, ctx->input);
        p = ngx_cpymem(p, ",\"output_tokens\":",
                       sizeof(",\"output_tokens\":") - 1);
        p = (u_char *) cfcost_dec((char *) p, ctx->output);
        p = ngx_cpymem(p, ",\"total_tokens\":",
                       sizeof(",\"total_tokens\":") - 1);
        p = (u_char *) cfcost_dec((char *) p, ctx->input + ctx->output);
        p = ngx_cpymem(p, ",\"cost_usd\":", sizeof(",\"cost_usd\":") - 1);
        p = ngx_cpymem(p, usd, usd_len);

        if (ctx->estimated) {
            p = ngx_cpymem(p, ",\"estimated\":true",
                           sizeof(",\"estimated\":true") - 1);
        } else {
            p = ngx_cpymem(p, ",\"estimated\":false",
                           sizeof(",\"estimated\":false") - 1);
        }
    } else {
        p = ngx_cpymem(p, "\",\"input_tokens\":null,\"output_tokens\":null,"
                          "\"total_tokens\":null,\"cost_usd\":null,"
                          "\"estimated\":false",
                       sizeof("\",\"input_tokens\":null,\"output_tokens\":"
                              "null,\"total_tokens\":null,\"cost_usd\":null,"
                              "\"estimated\":false") - 1);
    }

    p = ngx_cpymem(p, ",\"request_id\":\"", sizeof(",\"request_id\":\"") - 1);
    p = ngx_cpymem(p, ctx->request_id, NGX_HTTP_CFCOST_ID_LEN);
    p = ngx_cpymem(p, "\"}\n", 3);

    b->last = p;
    cl->buf = b;
    cl->next = NULL;

    return cl;
}


/*
 * The upstream answer as it came (valid JSON), with "cost_usd" added to
 * its usage object (result.usage in Cloudflare's envelope, usage in an
 * OpenAI object) when with_cost: one field inserted, nothing
 * re-serialized.  The object is the one a JSON parser keeps: with a key
 * given twice, the last.
 */
static ngx_chain_t *
ngx_http_cfcost_passthrough_body(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t with_cost)
{
    u_char       *p, usd[32];
    size_t        s, e, usd_len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    if (with_cost
        && cfcost_usage_locate((char *) ctx->resp, ctx->resp_len, &s, &e)
           == 0
        && ctx->resp[s] == '{')
    {
        usd_len = cfcost_usd6((char *) usd, ctx->cost);

        p = ngx_pnalloc(r->pool, ctx->resp_len + usd_len + 16);
        if (p == NULL) {
            return NULL;
        }

        b->start = p;
        b->pos = p;
        b->temporary = 1;
        b->last = ngx_http_cfcost_insert_cost(p, ctx->resp, ctx->resp_len,
                                              s, e, usd, usd_len);
        b->end = b->last;

        return cl;
    }

    b->pos = ctx->resp;
    b->last = ctx->resp + ctx->resp_len;
    b->memory = (ctx->resp_len > 0);
    b->sync = (ctx->resp_len == 0);

    return cl;
}


static ngx_int_t
ngx_http_cfcost_cost_headers(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx)
{
    u_char  *p;
    size_t   len;

    if (ctx->estimated) {
        if (ngx_http_cfcost_add_header(r, "X-Cfcost-Usage",
                                       (u_char *) "estimated",
                                       sizeof("estimated") - 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!ctx->usage_known) {
        return ngx_http_cfcost_add_header(r, "X-Cfcost-Usage",
                                          (u_char *) "unknown",
                                          sizeof("unknown") - 1);
    }

    p = ngx_pnalloc(r->pool, 32 + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    len = cfcost_usd6((char *) p, ctx->cost);
    if (ngx_http_cfcost_add_header(r, "X-Cfcost-Cost-USD", p, len) != NGX_OK) {
        return NGX_ERROR;
    }

    p += len;
    len = ngx_sprintf(p, "%uL", ctx->input) - p;
    if (ngx_http_cfcost_add_header(r, "X-Cfcost-Input-Tokens", p, len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p += len;
    len = ngx_sprintf(p, "%uL", ctx->output) - p;

    return ngx_http_cfcost_add_header(r, "X-Cfcost-Output-Tokens", p, len);
}


/*
 * Turns the collected upstream answer into the client's response: sets
 * ctx's record fields and r's status, returns the body (NULL: no memory).
 */
static ngx_chain_t *
ngx_http_cfcost_answer(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    json_t                      *root;
    ngx_uint_t                   us;
    ngx_chain_t                 *out;
    cfcost_reply_t               rep;
    ngx_http_cfcost_loc_conf_t  *lcf;

    if (ctx->nginx_error) {
        ctx->status = r->headers_out.status;
        ngx_http_cfcost_error_name(r, ctx, ctx->status);
        return ngx_http_cfcost_detail_body(r, ctx, "%s",
                   ngx_http_cfcost_status_detail(ctx->status));
    }

    us = ctx->upstream_status;
    ctx->status = NGX_HTTP_BAD_GATEWAY;

    if (ctx->too_large) {
        lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
        ngx_str_set(&ctx->error, "response_too_large");
        return ngx_http_cfcost_detail_body(r, ctx,
                   "the Workers AI response is larger than "
                   "cfcost_response_buffer (%uz bytes)", lcf->response_max);
    }

    if (ctx->truncated) {
        ngx_str_set(&ctx->error, "upstream_incomplete");
        return ngx_http_cfcost_detail_body(r, ctx,
                   ctx->bad_framing
                   ? "Workers AI broke the chunked framing of its response"
                   : "Workers AI closed the connection before its response "
                     "was complete");
    }

    if (ctx->encoded) {
        ngx_str_set(&ctx->error, "upstream_encoded");
        return ngx_http_cfcost_detail_body(r, ctx,
                   "Workers AI sent a compressed body the gateway cannot "
                   "read");
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
    root = NULL;

    /*
     * Only valid JSON goes on (README, "One reading"): an answer that is
     * not is never half-rewritten nor copied from, nor billed; the client
     * gets a 502 (or the error status Workers AI answered).
     */
    if (cfcost_json_valid((char *) ctx->resp, ctx->resp_len) != 0) {
        if (us >= NGX_HTTP_BAD_REQUEST) {
            ctx->status = us;
        }

        ngx_str_set(&ctx->error, "upstream_invalid");
        return ngx_http_cfcost_detail_body(r, ctx,
                   "Workers AI returned HTTP %ui with a body that is not "
                   "valid JSON", us);
    }

    /* the usual answer is read by a scan; anything else by a full parse */
    if (us == NGX_HTTP_OK
        && cfcost_reply_scan((char *) ctx->resp, ctx->resp_len,
                             lcf->route == NGX_HTTP_CFCOST_CHAT, &rep)
           == 0)
    {
        goto success;
    }

    root = cfcost_json_load((char *) ctx->resp, ctx->resp_len,
                            JSON_ALLOW_NUL);

    cfcost_reply_parse(root, &rep);

    if (root == NULL || !json_is_object(root)) {
        if (us >= NGX_HTTP_BAD_REQUEST) {
            ctx->status = us;
        }

        ngx_str_set(&ctx->error, "upstream_invalid");
        out = ngx_http_cfcost_detail_body(r, ctx,
                  "Workers AI returned HTTP %ui with a body that is not "
                  "JSON", us);
        goto done;
    }

    if (us >= NGX_HTTP_SPECIAL_RESPONSE || rep.success == 0
        || (rep.text == NULL && !rep.has_usage && !rep.usage_bad))
    {
        if (us >= NGX_HTTP_BAD_REQUEST) {
            ctx->status = us;
        }

        if (rep.error_code) {
            ctx->error.data = ngx_pnalloc(r->pool, NGX_INT64_LEN + 3);
            if (ctx->error.data) {
                ctx->error.len = ngx_sprintf(ctx->error.data, "cf:%L",
                                             (int64_t) rep.error_code)
                                 - ctx->error.data;
            }

        } else {
            ngx_str_set(&ctx->error, "upstream_error");
        }

        if (lcf->route != NGX_HTTP_CFCOST_CHAT) {
            /* SDK clients read Cloudflare's own error: pass it on */
            out = ngx_http_cfcost_passthrough_body(r, ctx, 0);
            goto done;
        }

        out = ngx_http_cfcost_detail_body(r, ctx,
                  "Workers AI error (HTTP %ui): %s", us,
                  rep.detail[0] ? rep.detail : "no error details given");
        goto done;
    }

success:

    ctx->status = NGX_HTTP_OK;

    if (rep.has_usage) {
        ctx->usage_known = 1;
        ctx->input = rep.input;
        ctx->output = rep.output;
        ctx->cached = rep.cached;
        ctx->cost = cfcost_cost_pusd(ctx->price, rep.input, rep.cached,
                                     rep.output);
    }

    if (rep.usage_bad) {
        /* not billed as reported: estimated in the log phase */
        ctx->usage_bad = 1;
        ngx_str_set(&ctx->error, "usage_out_of_range");
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cfcost: Workers AI reported a token count out of "
                      "range; the record carries an estimate");
    }

    if (rep.has_neurons) {
        ctx->has_neurons = 1;
        ctx->neurons = rep.neurons;
    }

    /* the cost is final before the body tells it */
    ngx_http_cfcost_bill(r, ctx, NGX_HTTP_OK);

    out = (lcf->route == NGX_HTTP_CFCOST_CHAT)
          ? ngx_http_cfcost_success_body(r, ctx, &rep)
          : ngx_http_cfcost_passthrough_body(r, ctx,
                                             ctx->usage_known
                                             && !ctx->estimated);

done:

    json_decref(root);

    return out;
}


static ngx_int_t
ngx_http_cfcost_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t               rc;
    ngx_uint_t              last;
    ngx_chain_t            *out, *cl;
    ngx_http_cfcost_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    if (ctx != NULL && ctx->sse != NULL) {
        /* in == NULL too: the stream recycles what the client took */
        return ngx_http_cfcost_stream_filter(r, ctx, in,
                                             ngx_http_next_body_filter);
    }

    if (in == NULL || ctx == NULL || !ctx->rewrite) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->done) {
        for (cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
        }

        return ngx_http_next_body_filter(r, NULL);
    }

    last = 0;

    if (ngx_http_cfcost_collect(r, ctx, in, &last) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!last) {
        if (!ngx_http_cfcost_upstream_broke(r, in)) {
            return NGX_OK;
        }

        ctx->truncated = 1;
        r->keepalive = 0;
    }

    ctx->done = 1;

    out = ngx_http_cfcost_answer(r, ctx);
    if (out == NULL) {
        return NGX_ERROR;
    }

    /* what the headers say is what the record bills */
    ngx_http_cfcost_bill(r, ctx, ctx->status);

    if (ctx->resp != NULL
        && (out->buf->pos < ctx->resp
            || out->buf->pos >= ctx->resp + ctx->resp_cap))
    {
        /* the answer is a new body: the collected one goes now */
        (void) ngx_pfree(r->pool, ctx->resp);
        ctx->resp = NULL;
        ctx->resp_cap = 0;
    }

    out->buf->last_buf = 1;
    out->buf->last_in_chain = 1;

    ngx_http_cfcost_set_json(r, ctx->status, out->buf->last - out->buf->pos);

    if (ctx->request_id[0]
        && ngx_http_cfcost_add_header(r, "X-Cfcost-Request-Id",
                                      ctx->request_id, NGX_HTTP_CFCOST_ID_LEN)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if ((ctx->status == NGX_HTTP_OK || ctx->estimated)
        && ngx_http_cfcost_cost_headers(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_next_header_filter(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_next_body_filter(r, out);
}


