/*
 * Error answers and JSON strings: every error envelope the gateway sends
 * ({"detail"} on its own routes, Cloudflare's on the native route, OpenAI's
 * on the OpenAI route), the names errors get in records, and the escaping
 * of every string written into JSON.  Calls nothing else of the module.
 */

#include "ngx_http_cfcost_module.h"
#include "cfcost_json.h"


static ngx_buf_t *ngx_http_cfcost_error_shape(ngx_http_request_t *r,
    ngx_uint_t route, ngx_uint_t status, u_char *msg, size_t len);


/* bytes the gateway did not make, as the inside of a JSON string */
size_t
ngx_http_cfcost_json_escape_len(u_char *src, size_t len)
{
    return cfcost_json_quote_len((char *) src, len);
}


u_char *
ngx_http_cfcost_json_escape(u_char *dst, u_char *src, size_t len)
{
    return (u_char *) cfcost_json_quote((char *) dst, (char *) src, len);
}


/* names an error for the record: the same names the filter uses */
void
ngx_http_cfcost_error_name(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        ngx_str_set(&ctx->error, "invalid_request");
        return;
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ngx_str_set(&ctx->error, "body_too_large");
        return;
    case NGX_HTTP_BAD_GATEWAY:
        ngx_str_set(&ctx->error, "upstream_unreachable");
        return;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        ngx_str_set(&ctx->error, "upstream_timeout");
        return;
    default:
        ctx->error.data = ngx_pnalloc(r->pool, sizeof("http_000") - 1);
        if (ctx->error.data) {
            ctx->error.len = ngx_sprintf(ctx->error.data, "http_%03ui",
                                         status % 1000)
                             - ctx->error.data;
        }
    }
}


static ngx_uint_t
ngx_http_cfcost_cf_code(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_BAD_REQUEST:               return 5006;
    case NGX_HTTP_UNAUTHORIZED:              return 10000;
    case NGX_HTTP_NOT_ALLOWED:               return 7001;
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:  return 3006;
    case NGX_HTTP_TOO_MANY_REQUESTS:         return 3036;
    case NGX_HTTP_GATEWAY_TIME_OUT:          return 3007;
    default:                                 return 3040;
    }
}


static const char *
ngx_http_cfcost_openai_type(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_UNAUTHORIZED:              return "authentication_error";
    case NGX_HTTP_FORBIDDEN:                 return "permission_error";
    case NGX_HTTP_NOT_FOUND:                 return "not_found_error";
    case NGX_HTTP_TOO_MANY_REQUESTS:         return "rate_limit_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}


/*
 * An error body in the shape the route's clients read: {"detail"} on
 * cfcost's own routes; Cloudflare's envelope on the native route and
 * OpenAI's error object on the OpenAI route, each with "detail" too.
 */
ngx_buf_t *
ngx_http_cfcost_error_buf(ngx_http_request_t *r, ngx_uint_t status,
    u_char *msg, size_t len)
{
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    return ngx_http_cfcost_error_shape(r, lcf->route, status, msg, len);
}


/* the same, in the shape of route (NGX_HTTP_CFCOST_*) */
static ngx_buf_t *
ngx_http_cfcost_error_shape(ngx_http_request_t *r, ngx_uint_t route,
    ngx_uint_t status, u_char *msg, size_t len)
{
    size_t      elen;
    ngx_buf_t  *b;

    elen = ngx_http_cfcost_json_escape_len(msg, len);

    b = ngx_create_temp_buf(r->pool, 2 * elen + 160);
    if (b == NULL) {
        return NULL;
    }

    switch (route) {

    case NGX_HTTP_CFCOST_NATIVE:
        b->last = ngx_sprintf(b->last, "{\"result\":null,\"success\":false,"
                              "\"errors\":[{\"code\":%ui,\"message\":\"",
                              ngx_http_cfcost_cf_code(status));
        b->last = ngx_http_cfcost_json_escape(b->last, msg, len);
        b->last = ngx_cpymem(b->last, "\"}],\"messages\":[],",
                             sizeof("\"}],\"messages\":[],") - 1);
        break;

    case NGX_HTTP_CFCOST_OPENAI:
        b->last = ngx_cpymem(b->last, "{\"error\":{\"message\":\"",
                             sizeof("{\"error\":{\"message\":\"") - 1);
        b->last = ngx_http_cfcost_json_escape(b->last, msg, len);
        b->last = ngx_sprintf(b->last, "\",\"type\":\"%s\",\"param\":null,"
                              "\"code\":null},",
                              ngx_http_cfcost_openai_type(status));
        break;

    default:
        *b->last++ = '{';
    }

    b->last = ngx_cpymem(b->last, "\"detail\":\"", sizeof("\"detail\":\"") - 1);
    b->last = ngx_http_cfcost_json_escape(b->last, msg, len);
    b->last = ngx_cpymem(b->last, "\"}\n", 3);

    return b;
}


/*
 * Sends b, a whole JSON body, with status (the request body discarded);
 * returns what a content handler returns, or what to finalize with.
 */
static ngx_int_t
ngx_http_cfcost_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    (void) ngx_http_discard_request_body(r);

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * Sends {"detail": "<message>"} with the given status, finalizes the
 * request, and returns NGX_DONE for a phase handler to return.  The message
 * is formatted with ngx_vslprintf and JSON-escaped.
 */
ngx_int_t
ngx_http_cfcost_send_error(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t status, const char *fmt, ...)
{
    u_char       msg[1024], *last;
    va_list      args;
    ngx_buf_t   *b;

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    b = ngx_http_cfcost_error_buf(r, status, msg, last - msg);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return NGX_DONE;
    }

    if (ctx != NULL) {
        ctx->own_response = 1;
        ctx->status = status;

        if (ctx->error.len == 0) {
            ngx_http_cfcost_error_name(r, ctx, status);
        }
    }

    ngx_http_finalize_request(r, ngx_http_cfcost_send_json(r, status, b));

    return NGX_DONE;
}


/* a message for an error response nginx made itself */
const char *
ngx_http_cfcost_status_detail(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        return "bad request";
    case NGX_HTTP_REQUEST_HEADER_TOO_LARGE:
        return "a request header is too large";
    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        return "the request URI is too long";
    case NGX_HTTP_FORBIDDEN:
        return "forbidden";
    case NGX_HTTP_LENGTH_REQUIRED:
        return "the request needs a Content-Length";
    case NGX_HTTP_NOT_IMPLEMENTED:
        return "not implemented";
    case NGX_HTTP_NOT_FOUND:
        return "not found";
    case NGX_HTTP_NOT_ALLOWED:
        return "method not allowed";
    case NGX_HTTP_REQUEST_TIME_OUT:
        return "the request body did not arrive in time";
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return "the request body is too large";
    case NGX_HTTP_BAD_GATEWAY:
        return "Workers AI could not be reached or sent an invalid response";
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return "service unavailable";
    case NGX_HTTP_GATEWAY_TIME_OUT:
        return "Workers AI did not answer in time";
    default:
        return status >= 500 ? "internal error" : "request refused";
    }
}


/*
 * cfcost_error_page: the content of the location error_page sends nginx's
 * own errors to (unknown paths, methods, headers or URIs too large...),
 * in the shape of the route family the request was for: OpenAI's error
 * object under /v1/, Cloudflare's envelope under /client/v4/, {"detail"}
 * elsewhere.  cfcost's own locations never come here (their filters
 * answer JSON, and keep the request's record).
 */
ngx_int_t
ngx_http_cfcost_error_page_handler(ngx_http_request_t *r)
{
    ngx_buf_t    *b;
    ngx_uint_t    status, route;
    const char   *msg;

    status = r->err_status;

    if (status >= NGX_HTTP_REQUEST_HEADER_TOO_LARGE
        && status < NGX_HTTP_CLIENT_CLOSED_REQUEST)
    {
        msg = ngx_http_cfcost_status_detail(status);
        status = NGX_HTTP_BAD_REQUEST;      /* 494-498 go out as 400 */

    } else {
        if (status < NGX_HTTP_BAD_REQUEST) {
            status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        msg = ngx_http_cfcost_status_detail(status);
    }

    route = NGX_HTTP_CFCOST_CHAT;

    if (r->uri.len >= 4 && ngx_strncmp(r->uri.data, "/v1/", 4) == 0) {
        route = NGX_HTTP_CFCOST_OPENAI;

    } else if (r->uri.len >= 11
               && ngx_strncmp(r->uri.data, "/client/v4/", 11) == 0)
    {
        route = NGX_HTTP_CFCOST_NATIVE;
    }

    b = ngx_http_cfcost_error_shape(r, route, status, (u_char *) msg,
                                    ngx_strlen(msg));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_cfcost_send_json(r, status, b);
}
