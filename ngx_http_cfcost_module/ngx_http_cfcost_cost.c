/*
 * What a request costs, decided once: the reported usage priced, or the
 * estimate for work Workers AI did that reported none (README, "The
 * estimator"), or nothing; and "cost_usd" written into an answer's usage
 * object.  The response filters and the log phase call it; it calls
 * nothing else of the module.
 */

#include "ngx_http_cfcost_module.h"


static void ngx_http_cfcost_settle(ngx_http_cfcost_ctx_t *ctx);


/*
 * Whether Workers AI did work this request pays for though no usable
 * usage came back: it had the whole request, and then answered 2xx (an
 * answer without usage or with absurd counts, one cut short, one over
 * cfcost_response_buffer, one the client left half-way), or had not
 * answered yet when the gateway stopped waiting (504) or the client left
 * (499).  Refused before proxying, an error answer, or a connection closed
 * without a byte of answer: not billed.
 */
static ngx_uint_t
ngx_http_cfcost_billable(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t status)
{
    ngx_uint_t            us;
    ngx_http_upstream_t  *u;

    u = r->upstream;
    us = ctx->upstream_status;

    if (ctx->usage_known || ctx->price == NULL || u == NULL
        || (!u->request_body_sent && us == 0))
    {
        return 0;
    }

    if (us == 0) {
        return status == NGX_HTTP_CLIENT_CLOSED_REQUEST
               || status == NGX_HTTP_GATEWAY_TIME_OUT;
    }

    return us >= NGX_HTTP_OK && us < NGX_HTTP_SPECIAL_RESPONSE
           && (ctx->status == NGX_HTTP_OK || ctx->too_large || ctx->truncated
               || status == NGX_HTTP_CLIENT_CLOSED_REQUEST);
}


/*
 * Makes the request's cost final, once: the reported usage priced, an
 * estimate for work Workers AI did that reported none, or nothing.  The
 * response filters call it before they tell the client the cost, the log
 * phase for what they never answered; either way the record bills what
 * the client was told.  A stream's cost always stands.
 */
void
ngx_http_cfcost_bill(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t status)
{
    if (ctx->billed) {
        return;
    }

    if (ctx->usage_known || ctx->sse
        || ngx_http_cfcost_billable(r, ctx, status))
    {
        ngx_http_cfcost_settle(ctx);
    }

    ctx->billed = 1;
}


/*
 * Fixes the usage of a response that reported none (README, "The
 * estimator"): input at four bytes a token of the prompt's text; output at
 * four bytes a token of the generated text seen when some of the answer
 * came, else the request's max_tokens, else 0.  Flagged, then priced.
 * Idempotent.
 */
static void
ngx_http_cfcost_settle(ngx_http_cfcost_ctx_t *ctx)
{
    uint64_t          cap;
    ngx_uint_t        seen;
    cfcost_sse_pos_t  pos;

    if (ctx->price == NULL) {
        return;
    }

    ctx->billed = 1;

    if (!ctx->usage_known && !ctx->estimated) {
        if (ctx->sse != NULL) {
            cfcost_sse_position(ctx->sse, &pos);
            seen = pos.offset > 0;           /* text counted per event */

        } else {
            seen = ctx->resp_len > 0 || ctx->too_large;

            if (ctx->text == NULL) {
                ctx->text_bytes = cfcost_text_bytes((char *) ctx->resp,
                                                    ctx->resp_len);
            }
        }

        ctx->estimated = 1;
        ctx->input = ngx_min((uint64_t) (ctx->prompt_bytes + 3) / 4,
                             CFCOST_USAGE_MAX);
        ctx->cached = 0;

        if (seen) {
            ctx->output = ngx_min((ctx->text_bytes + 3) / 4,
                                  CFCOST_USAGE_MAX);

        } else if (cfcost_request_max_tokens((char *) ctx->upstream_body.data,
                                             ctx->upstream_body.len, &cap)
                   == 0)
        {
            ctx->output = cap;

        } else {
            ctx->output = 0;
        }
    }

    ctx->cost = cfcost_cost_pusd(ctx->price, ctx->input, ctx->cached,
                                 ctx->output);
}


/*
 * Copies json[0..len) to dst with "cost_usd":<usd> added at the end of the
 * object that spans [s, e) (a comma before it unless the object is empty,
 * however it is spaced).  dst has room for len + usd_len + 12 bytes.
 */
u_char *
ngx_http_cfcost_insert_cost(u_char *dst, u_char *json, size_t len, size_t s,
    size_t e, u_char *usd, size_t usd_len)
{
    size_t  i;

    dst = ngx_cpymem(dst, json, e - 1);

    for (i = s + 1; i < e - 1 && ngx_strchr(" \t\r\n", json[i]); i++) {
        /* void */
    }

    if (i < e - 1) {
        *dst++ = ',';
    }

    dst = ngx_cpymem(dst, "\"cost_usd\":", sizeof("\"cost_usd\":") - 1);
    dst = ngx_cpymem(dst, usd, usd_len);

    return ngx_cpymem(dst, json + e - 1, len - (e - 1));
}
