/*
 * Log phase: one usage record per request that passed authentication,
 * formatted once, as the one field/value pair of an XADD command (schema
 * 2: the fields packed as netstrings, cfcost_schema.h), straight into the
 * writer's queue.
 */

#include "ngx_http_cfcost_redis.h"
#include "ngx_http_cfcost_writer.h"


#define NGX_HTTP_CFCOST_FIELDS   CFCOST_P_NFIELDS


typedef struct {
    const char   *name;
    size_t        name_len;
    u_char       *value;
    size_t        len;
} ngx_http_cfcost_field_t;


#define ngx_http_cfcost_field(f, n, v, l)                                    \
    (f)->name = n; (f)->name_len = sizeof(n) - 1;                            \
    (f)->value = (u_char *) (v); (f)->len = (l); (f)++


static u_char *
ngx_http_cfcost_flag(u_char *p, u_char *start, const char *flag, size_t len)
{
    if (p != start) {
        *p++ = ',';
    }

    return ngx_cpymem(p, flag, len);
}


static size_t
ngx_http_cfcost_flags(ngx_http_cfcost_ctx_t *ctx, u_char *buf)
{
    u_char  *p = buf;

    if (!ctx->usage_known) {
        p = ngx_http_cfcost_flag(p, buf, CFCOST_FLAG_USAGE_UNKNOWN,
                                 sizeof(CFCOST_FLAG_USAGE_UNKNOWN) - 1);
    }

    if (ctx->sse) {
        p = ngx_http_cfcost_flag(p, buf, CFCOST_FLAG_STREAMED,
                                 sizeof(CFCOST_FLAG_STREAMED) - 1);
    }

    if (ctx->estimated) {
        p = ngx_http_cfcost_flag(p, buf, CFCOST_FLAG_ESTIMATED,
                                 sizeof(CFCOST_FLAG_ESTIMATED) - 1);
    }

    if (ctx->sse && (!ctx->sse_end || ctx->truncated)) {
        p = ngx_http_cfcost_flag(p, buf, CFCOST_FLAG_ABORTED,
                                 sizeof(CFCOST_FLAG_ABORTED) - 1);
    }

    return p - buf;
}


/* a number and a NUL at p: an unsigned one, and a signed one */
static void
ngx_http_cfcost_num(u_char *p, uint64_t v)
{
    /* cfcost_dec(): ngx_sprintf("%uL%Z") costs more than the record */
    *cfcost_dec((char *) p, v) = '\0';
}


static void
ngx_http_cfcost_snum(u_char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        ngx_http_cfcost_num(p, (uint64_t) 0 - (uint64_t) v);
        return;
    }

    ngx_http_cfcost_num(p, (uint64_t) v);
}


ngx_int_t
ngx_http_cfcost_log_handler(ngx_http_request_t *r)
{
    u_char                        nums[12][32], flags[64];
    u_char                       *pairs, *p, *q, *v;
    size_t                        len;
    uint64_t                      ts, us;
    ngx_str_t                     route;
    ngx_uint_t                    i, n, status;
    const cfcost_model_t         *m;
    ngx_http_cfcost_ctx_t        *ctx;
    ngx_http_cfcost_field_t       fields[NGX_HTTP_CFCOST_FIELDS], *f;
    ngx_http_cfcost_loc_conf_t   *lcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    if (r != r->main) {
        return NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    switch (lcf->route) {
    case NGX_HTTP_CFCOST_CHAT:
        ngx_str_set(&route, "chat");
        break;
    case NGX_HTTP_CFCOST_OPENAI:
        ngx_str_set(&route, "openai");
        break;
    case NGX_HTTP_CFCOST_NATIVE:
        ngx_str_set(&route, "native");
        break;
    default:
        return NGX_OK;                 /* usage queries cost nothing */
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    if (ctx == NULL || !ctx->authenticated) {
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

    status = ctx->status ? ctx->status : r->headers_out.status;

    if (ctx->sse) {
        /* a stream: a client that left is told apart from an upstream
         * that did */
        if (!ctx->sse_end && ctx->error.len == 0) {
            ngx_str_set(&ctx->error, "client_closed");
        }

    } else if (ctx->rewrite && !ctx->done && ctx->error.len == 0) {
        /* the answer never completed: the upstream or the client left */
        status = r->connection->error ? NGX_HTTP_CLIENT_CLOSED_REQUEST
                                      : NGX_HTTP_BAD_GATEWAY;

        if (status == NGX_HTTP_BAD_GATEWAY) {
            ctx->truncated = 1;
            ngx_str_set(&ctx->error, "upstream_incomplete");
        }
    }

    if (ctx->error.len == 0
        && (status == NGX_HTTP_CLIENT_CLOSED_REQUEST || r->connection->error))
    {
        status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
        ngx_str_set(&ctx->error, "client_closed");
    }

    /* never a silent $0 for work Workers AI did */
    if (!ctx->billed) {
        ngx_http_cfcost_bill(r, ctx, status);

        if (ctx->estimated) {
            ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "cfcost: status %ui, \"%V\": estimated %uL in, "
                           "%uL out, %uL pusd", status, &ctx->error,
                           ctx->input, ctx->output, ctx->cost);
        }
    }

    ts = (uint64_t) r->start_sec * 1000 + r->start_msec;
    us = ngx_http_cfcost_now_us();
    us = us > ctx->start_us ? us - ctx->start_us : 0;
    m = ctx->price;

    n = 0;
    ngx_http_cfcost_num(nums[n++], ts);
    ngx_http_cfcost_num(nums[n++], status);
    ngx_http_cfcost_num(nums[n++], ctx->upstream_status);
    ngx_http_cfcost_num(nums[n++], ctx->input);
    ngx_http_cfcost_num(nums[n++], ctx->output);
    ngx_http_cfcost_num(nums[n++], ctx->cached);
    ngx_http_cfcost_num(nums[n++], ctx->cost);
    nums[7][0] = '\0';
    nums[8][0] = '\0';

    if (m) {
        ngx_http_cfcost_snum(nums[7], m->input);
        ngx_http_cfcost_snum(nums[8], m->output);
    }

    n = 9;

    if (m && m->cached != CFCOST_PRICE_NONE) {
        ngx_http_cfcost_snum(nums[n++], m->cached);
    } else {
        nums[n++][0] = '\0';
    }

    ngx_http_cfcost_num(nums[n++], us);

    if (ctx->has_neurons) {
        /* as reported: %.17g gives the same double back */
        (void) snprintf((char *) nums[n++], sizeof(nums[0]), "%.17g",
                        ctx->neurons);
    } else {
        nums[n++][0] = '\0';
    }

    f = fields;
    ngx_http_cfcost_field(f, CFCOST_R_VERSION, CFCOST_SCHEMA_VERSION,
                          sizeof(CFCOST_SCHEMA_VERSION) - 1);
    ngx_http_cfcost_field(f, CFCOST_R_REQUEST_ID, ctx->request_id,
                          NGX_HTTP_CFCOST_ID_LEN);
    ngx_http_cfcost_field(f, CFCOST_R_TS_MS, nums[0],
                          ngx_strlen(nums[0]));
    ngx_http_cfcost_field(f, CFCOST_R_KEY_ID, ctx->key_id.data,
                          ctx->key_id.len);
    ngx_http_cfcost_field(f, CFCOST_R_USER, ctx->user.data, ctx->user.len);
    ngx_http_cfcost_field(f, CFCOST_R_MODEL, ctx->model.data,
                          ctx->model.len);

    ngx_http_cfcost_field(f, CFCOST_R_MODEL_ASKED, ctx->model_asked.data,
                          ctx->model_asked.len);

    ngx_http_cfcost_field(f, CFCOST_R_ROUTE, route.data, route.len);
    ngx_http_cfcost_field(f, CFCOST_R_STATUS, nums[1], ngx_strlen(nums[1]));
    ngx_http_cfcost_field(f, CFCOST_R_UPSTREAM_STATUS, nums[2],
                          ngx_strlen(nums[2]));
    ngx_http_cfcost_field(f, CFCOST_R_INPUT_TOKENS, nums[3],
                          ngx_strlen(nums[3]));
    ngx_http_cfcost_field(f, CFCOST_R_OUTPUT_TOKENS, nums[4],
                          ngx_strlen(nums[4]));
    ngx_http_cfcost_field(f, CFCOST_R_CACHED_TOKENS, nums[5],
                          ngx_strlen(nums[5]));
    ngx_http_cfcost_field(f, CFCOST_R_COST, nums[6], ngx_strlen(nums[6]));
    ngx_http_cfcost_field(f, CFCOST_R_PRICE_INPUT, nums[7],
                          ngx_strlen(nums[7]));
    ngx_http_cfcost_field(f, CFCOST_R_PRICE_OUTPUT, nums[8],
                          ngx_strlen(nums[8]));
    ngx_http_cfcost_field(f, CFCOST_R_PRICE_CACHED, nums[9],
                          ngx_strlen(nums[9]));
    ngx_http_cfcost_field(f, CFCOST_R_PRICING_VERSION,
                          mcf->prices->version,
                          ngx_strlen(mcf->prices->version));
    ngx_http_cfcost_field(f, CFCOST_R_LATENCY_US, nums[10],
                          ngx_strlen(nums[10]));
    ngx_http_cfcost_field(f, CFCOST_R_FLAGS, flags,
                          ngx_http_cfcost_flags(ctx, flags));
    ngx_http_cfcost_field(f, CFCOST_R_ERROR, ctx->error.data,
                          ctx->error.len);
    ngx_http_cfcost_field(f, CFCOST_R_NEURONS, nums[11],
                          ngx_strlen(nums[11]));

    n = f - fields;

    /* in the order of cfcost_packed_e, every field, as a netstring */
    len = 0;

    for (i = 0; i < n; i++) {
        len += NGX_SIZE_T_LEN + 2 + fields[i].len;
    }

    pairs = ngx_http_cfcost_writer_alloc(
                ngx_http_cfcost_bulk_len(sizeof(CFCOST_R_PACKED) - 1)
                + ngx_http_cfcost_bulk_len(len));
    if (pairs == NULL) {
        return NGX_OK;                     /* queue full: counted there */
    }

    p = ngx_http_cfcost_bulk(pairs, CFCOST_R_PACKED,
                             sizeof(CFCOST_R_PACKED) - 1);

    /* the value's length is known once it is written: room for the
     * longest header, then the header moved up to the value */
    v = p + 1 + NGX_SIZE_T_LEN + 2;
    q = v;

    for (i = 0; i < n; i++) {
        q = (u_char *) cfcost_dec((char *) q, fields[i].len);
        *q++ = ':';
        if (fields[i].len) {
            q = ngx_cpymem(q, fields[i].value, fields[i].len);
        }
        *q++ = ',';
    }

    *p++ = '$';
    p = (u_char *) cfcost_dec((char *) p, q - v);
    *p++ = '\r';
    *p++ = '\n';
    p = ngx_movemem(p, v, q - v);
    *p++ = '\r';
    *p++ = '\n';

    ngx_http_cfcost_writer_push(pairs, p - pairs, 1);

    return NGX_OK;
}
