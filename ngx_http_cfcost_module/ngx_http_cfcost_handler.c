/*
 * The access phase of a cfcost location, in order: a request id, the API
 * key, the request body, and the checks that keep anything malformed from
 * going upstream.  It ends by setting $cfcost_upstream_uri and
 * $cfcost_upstream_body for proxy_pass.  Also /api/ai/models.
 */

#include <openssl/rand.h>
#include <jansson.h>

#include "cfcost_json.h"
#include "cfcost_request.h"

#include "ngx_http_cfcost_module.h"
#include "ngx_http_cfcost_writer.h"


static void ngx_http_cfcost_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_cfcost_check_request(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx);


/*
 * A request id: 16 random bytes, in hex.  RAND_bytes() costs as much for
 * 16 bytes as for 4 KB (locks, a fork check, a reseed check), so a
 * process draws 256 ids' worth at once.  The pool is drawn again in a
 * new process (ngx_pid), so no two processes hand out the same bytes.
 */
static void
ngx_http_cfcost_request_id(ngx_http_cfcost_ctx_t *ctx)
{
    size_t      i;
    uint32_t    x;
    u_char     *raw;

    static u_char     pool[256 * (NGX_HTTP_CFCOST_ID_LEN / 2)];
    static size_t     used = sizeof(pool);
    static ngx_pid_t  pool_pid;

    if (used == sizeof(pool) || pool_pid != ngx_pid) {
        if (RAND_bytes(pool, sizeof(pool)) != 1) {
            for (i = 0; i < sizeof(pool); i += sizeof(x)) {
                x = (uint32_t) ngx_random();
                ngx_memcpy(pool + i, &x, sizeof(x));
            }
        }

        used = 0;
        pool_pid = ngx_pid;
    }

    raw = pool + used;
    used += NGX_HTTP_CFCOST_ID_LEN / 2;

    ngx_hex_dump(ctx->request_id, raw, NGX_HTTP_CFCOST_ID_LEN / 2);
    ngx_memzero(raw, NGX_HTTP_CFCOST_ID_LEN / 2);    /* used once only */
}


ngx_int_t
ngx_http_cfcost_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_http_cfcost_ctx_t        *ctx;
    ngx_http_cfcost_loc_conf_t   *lcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route == NGX_HTTP_CFCOST_OFF || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_cfcost_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->checked) {
        return NGX_OK;
    }

    if (ctx->request_id[0] == '\0') {
        ngx_http_cfcost_request_id(ctx);
        ctx->start_us = ngx_http_cfcost_now_us();
    }

    if (lcf->route == NGX_HTTP_CFCOST_USAGE) {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                              "use GET for this route");
        }

    } else if (r->method != NGX_HTTP_POST) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                          "use POST for this route");
    }

    if (!ctx->authenticated) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

        if (lcf->route != NGX_HTTP_CFCOST_USAGE
            && ngx_http_cfcost_writer_refusing(mcf))
        {
            /* cfcost_spool ... when_full=refuse: no record, no request */
            return ngx_http_cfcost_send_error(r, ctx,
                       NGX_HTTP_SERVICE_UNAVAILABLE,
                       "usage cannot be recorded right now; try again "
                       "shortly");
        }

        rc = ngx_http_cfcost_authenticate(r, ctx,
                                          lcf->route == NGX_HTTP_CFCOST_USAGE);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (lcf->route == NGX_HTTP_CFCOST_USAGE) {
        /* the identity goes to the aggregator in $cfcost_user & co. */
        ctx->checked = 1;
        return NGX_OK;
    }

    if (!ctx->rate_checked || ctx->rate_waiting) {
        /* requests a minute, before anything else is spent on it */
        rc = ngx_http_cfcost_rate_check(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (!ctx->counted) {
        /* before the body is read: a refused request's body is never held */
        ctx->counted = 1;

        rc = ngx_http_cfcost_conc_enter(r, ctx, lcf->key_concurrency);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (!ctx->body_read) {
        if (ctx->body_requested) {
            return NGX_AGAIN;
        }

        ctx->body_requested = 1;
        ctx->reading = 1;
        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r,
                                               ngx_http_cfcost_body_handler);
        ctx->reading = 0;

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        if (!ctx->body_read) {
            /* the body handler resumes the phases */
            ngx_http_finalize_request(r, NGX_DONE);
            return NGX_DONE;
        }

        /* read at once: drop the reference reading it took */
        r->main->count--;
    }

    return ngx_http_cfcost_check_request(r, ctx);
}


static void
ngx_http_cfcost_body_handler(ngx_http_request_t *r)
{
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    ctx->body_read = 1;

    if (ctx->reading) {
        return;                        /* read at once; the caller goes on */
    }

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_cfcost_check_messages(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_str_t *body, cfcost_request_t *req)
{
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (req->messages.end == 0 && lcf->route == NGX_HTTP_CFCOST_OPENAI) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "\"messages\" is required: a non-empty array of "
                   "{\"role\", \"content\"} objects");
    }

    if (req->messages.end == 0) {
        if (req->prompt.end && body->data[req->prompt.start] == '"') {
            return NGX_OK;
        }

        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "the body needs a \"messages\" array or a \"prompt\" "
                   "string");
    }

    if (body->data[req->messages.start] != '[' || req->messages_n == 0) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "\"messages\" must be a non-empty array of "
                   "{\"role\", \"content\"} objects");
    }

    if (req->message_bad < req->messages_n) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "messages[%uz] must be an object with a string "
                   "\"role\" and a \"content\"", req->message_bad);
    }

    return NGX_OK;
}


/* the model of a native request: the path after ".../ai/run/" */
static ngx_int_t
ngx_http_cfcost_path_model(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char  *p, *last;

    static const char  run[] = "/ai/run/";

    last = r->uri.data + r->uri.len;

    for (p = r->uri.data; last - p > (ssize_t) sizeof(run) - 1; p++) {
        if (ngx_strncmp(p, run, sizeof(run) - 1) == 0) {
            id->data = p + sizeof(run) - 1;
            id->len = last - id->data;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_cfcost_find_model(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_str_t *body, cfcost_request_t *req)
{
    size_t                        len;
    ngx_str_t                     id;
    const cfcost_model_t         *price;
    ngx_http_cfcost_loc_conf_t   *lcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route == NGX_HTTP_CFCOST_NATIVE) {
        if (ngx_http_cfcost_path_model(r, &id) != NGX_OK) {
            return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                       "the path must end in /ai/run/{model}");
        }

    } else {
        if (req->model.end == 0 || body->data[req->model.start] != '"') {
            return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                       req->model.end ? "\"model\" must be a string, such as "
                                        "\"@cf/meta/llama-3.1-8b-instruct\""
                                      : "\"model\" is required, such as "
                                        "\"@cf/meta/llama-3.1-8b-instruct\"");
        }

        /* the string's inside, decoded when it holds an escape */
        id.data = body->data + req->model.start + 1;
        id.len = req->model.end - req->model.start - 2;

        if (ngx_strlchr(id.data, id.data + id.len, '\\') != NULL) {
            len = id.len;
            id.data = ngx_pnalloc(r->pool, len);
            if (id.data == NULL) {
                return ngx_http_cfcost_send_error(r, ctx,
                           NGX_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
            }

            id.len = cfcost_json_unescape((char *) id.data,
                         (char *) body->data + req->model.start + 1, len);
        }
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);
    price = cfcost_price_find(mcf->prices, (char *) id.data, id.len);

    if (price == NULL) {
        len = ngx_min(id.len, NGX_HTTP_CFCOST_NAME_MAX);

        while (len < id.len && len > 0 && (id.data[len] & 0xc0) == 0x80) {
            len--;                         /* not inside a UTF-8 character */
        }

        /* counted under one name; the client's only in its record */
        ngx_str_set(&ctx->model, CFCOST_MODEL_UNPRICED);

        ctx->model_asked.data = ngx_pnalloc(r->pool, len);
        if (ctx->model_asked.data != NULL) {
            ngx_memcpy(ctx->model_asked.data, id.data, len);
            ctx->model_asked.len = len;
        }

        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "model \"%V\" is not priced by this gateway "
                   "(GET /api/ai/models lists the models)",
                   &ctx->model_asked);
    }

    ctx->price = price;
    ctx->model.data = (u_char *) price->id;
    ctx->model.len = price->id_len;

    return NGX_OK;
}


/* whether the value at span s of the body is the literal true */
static ngx_uint_t
ngx_http_cfcost_is_true(ngx_str_t *body, cfcost_span_t *s)
{
    return s->end - s->start == 4
           && ngx_strncmp(body->data + s->start, "true", 4) == 0;
}


/*
 * The body that goes upstream, per route: the chat route drops "model";
 * the OpenAI route asks for the usage chunk of a stream when the client
 * did not; the native route sends the client's bytes untouched.  Edits
 * are made in the client's bytes: nothing is re-serialized.
 */
static ngx_int_t
ngx_http_cfcost_upstream_body(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_str_t *body, cfcost_request_t *req)
{
    u_char                      *p;
    size_t                       at, to, len;
    ngx_str_t                    ins;
    cfcost_span_t               *opts;
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route == NGX_HTTP_CFCOST_CHAT) {
        /* in place: no second copy of a large body */
        ngx_http_cfcost_body_cut(r, body, req->model_cut.start,
                                 req->model_cut.end);
        ctx->upstream_body = *body;
        return NGX_OK;
    }

    if (lcf->route != NGX_HTTP_CFCOST_OPENAI || !ctx->stream
        || ngx_http_cfcost_is_true(body, &req->include_usage))
    {
        ctx->upstream_body = *body;
        return NGX_OK;
    }

    /* bytes [at, to) of the client's become ins */
    opts = &req->stream_options;

    if (opts->end == 0) {
        /* the top object has a member ("model") for the comma */
        at = cfcost_json_skip_ws((char *) body->data,
                                 (char *) body->data + body->len)
             - (char *) body->data + 1;
        to = at;
        ngx_str_set(&ins, "\"stream_options\":{\"include_usage\":true},");

    } else if (body->data[opts->start] != '{') {
        at = opts->start;
        to = opts->end;
        ngx_str_set(&ins, "{\"include_usage\":true}");

    } else if (req->include_usage.end != 0) {
        at = req->include_usage.start;
        to = req->include_usage.end;
        ngx_str_set(&ins, "true");

    } else {
        at = opts->start + 1;
        to = at;

        if (*cfcost_json_skip_ws((char *) body->data + at,
                                 (char *) body->data + opts->end)
            == '}')
        {
            ngx_str_set(&ins, "\"include_usage\":true");    /* {} */
        } else {
            ngx_str_set(&ins, "\"include_usage\":true,");
        }
    }

    len = body->len - (to - at) + ins.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->upstream_body.data = p;
    ctx->upstream_body.len = len;

    p = ngx_cpymem(p, body->data, at);
    p = ngx_cpymem(p, ins.data, ins.len);
    ngx_memcpy(p, body->data + to, body->len - to);

    ctx->usage_added = 1;              /* the client will not see it */

    /* a new copy goes upstream: the client's body is not needed */
    ngx_http_cfcost_body_release(r, body, &ctx->upstream_body);

    return NGX_OK;
}


static ngx_int_t
ngx_http_cfcost_upstream_uri(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx)
{
    u_char                       *p;
    size_t                        len;
    ngx_http_cfcost_loc_conf_t   *lcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    static const char  prefix[] = "/client/v4/accounts/";
    static const char  run[] = "/ai/run/";
    static const char  openai[] = "/ai/v1/chat/completions";

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

    len = sizeof(prefix) - 1 + mcf->account_id.len + sizeof(openai) - 1
          + sizeof(run) - 1 + ctx->model.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->upstream_uri.data = p;
    p = ngx_cpymem(p, prefix, sizeof(prefix) - 1);
    p = ngx_cpymem(p, mcf->account_id.data, mcf->account_id.len);

    if (lcf->route == NGX_HTTP_CFCOST_OPENAI) {
        p = ngx_cpymem(p, openai, sizeof(openai) - 1);

    } else {
        p = ngx_cpymem(p, run, sizeof(run) - 1);
        p = ngx_cpymem(p, ctx->model.data, ctx->model.len);
    }

    ctx->upstream_uri.len = p - ctx->upstream_uri.data;

    return NGX_OK;
}


/*
 * Why a body that cfcost_json_valid() refused is not JSON: jansson's
 * message, with its line and column, when jansson refuses it too (only on
 * this error path: a valid request is read in one pass, without a tree).
 */
static ngx_int_t
ngx_http_cfcost_invalid_json(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_str_t *body)
{
    json_t        *root;
    json_error_t   err;

    root = json_loadb((char *) body->data, body->len, 0, &err);

    if (root != NULL) {
        json_decref(root);
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "the request body is not valid JSON (RFC 8259, in "
                   "UTF-8)");
    }

    return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
               "the request body is not valid JSON: %s (line %d, "
               "column %d)", err.text, err.line, err.column);
}


/*
 * Validates the body and prepares what goes upstream.  Returns NGX_OK, or
 * NGX_DONE after sending the error.
 */
static ngx_int_t
ngx_http_cfcost_check_request(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_str_t                    body;
    cfcost_request_t             req;
    ngx_http_cfcost_loc_conf_t  *lcf;

    if (ngx_http_cfcost_body_bytes(r, &body) != NGX_OK) {
        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "cannot read the request body");
    }

    if (body.len == 0) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "the request body is empty: send a JSON object");
    }

    switch (cfcost_request_read((char *) body.data, body.len, &req)) {

    case CFCOST_REQUEST_OK:
        break;

    case CFCOST_REQUEST_NOT_OBJECT:
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "the request body must be a JSON object");

    case CFCOST_REQUEST_TWICE:
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "\"%s\" is given twice in an object of the request body",
                   req.twice);

    default:
        return ngx_http_cfcost_invalid_json(r, ctx, &body);
    }

    rc = ngx_http_cfcost_find_model(r, ctx, &body, &req);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);

    if (lcf->route != NGX_HTTP_CFCOST_NATIVE
        || req.messages.end != 0 || req.prompt.end != 0)
    {
        rc = ngx_http_cfcost_check_messages(r, ctx, &body, &req);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx->stream = ngx_http_cfcost_is_true(&body, &req.stream);
    ctx->prompt_bytes = req.prompt_bytes;

    if (ngx_http_cfcost_upstream_body(r, ctx, &body, &req) != NGX_OK
        || ngx_http_cfcost_upstream_uri(r, ctx) != NGX_OK)
    {
        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "out of memory");
    }

    ctx->checked = 1;

    return NGX_OK;
}


/* a GET-only route: NGX_OK, or the status to end the request with */
static ngx_int_t
ngx_http_cfcost_get_only(ngx_http_request_t *r)
{
    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    return ngx_http_discard_request_body(r);
}


/* sends b, the whole JSON body of a 200 */
static ngx_int_t
ngx_http_cfcost_send_json(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_cfcost_models_handler(ngx_http_request_t *r)
{
    ngx_str_t                    *body;
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_http_cfcost_loc_conf_t   *lcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    rc = ngx_http_cfcost_get_only(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cfcost_module);
    body = lcf->models_openai ? &mcf->models_openai : &mcf->models_json;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;

    return ngx_http_cfcost_send_json(r, b);
}


/*
 * cfcost_status: what became of the records made since the gateway
 * started, from shared memory, so that it answers whatever Redis does.
 */
ngx_int_t
ngx_http_cfcost_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_buf_t                       *b;
    ngx_http_cfcost_main_conf_t     *mcf;
    ngx_http_cfcost_writer_stats_t  *st;

    rc = ngx_http_cfcost_get_only(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);
    st = ngx_http_cfcost_writer_stats(mcf);

    if (st == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    b = ngx_create_temp_buf(r->pool, 512 + 6 * mcf->dead_letter.len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_sprintf(b->last,
                  "{\"records\":{\"made\":%uA,\"stored\":%uA,"
                  "\"queued\":%A,\"retried\":%uA,"
                  "\"already_stored\":%uA,\"dropped_queue_full\":%uA,"
                  "\"dead_lettered\":%uA,\"lost_at_exit\":%uA,"
                  "\"redis_errors\":%uA,\"spooled\":%uA,"
                  "\"replayed\":%uA},\"dead_letter_file\":\"",
                  st->made, st->stored, (ngx_atomic_int_t) st->queued,
                  st->retried, st->already, st->dropped, st->dead,
                  st->lost_exit, st->redis_errors, st->spooled,
                  st->replayed);

    b->last = (u_char *) ngx_escape_json(b->last, mcf->dead_letter.data,
                                         mcf->dead_letter.len);

    b->last = ngx_cpymem(b->last, "\"}\n", 3);

    return ngx_http_cfcost_send_json(r, b);
}


/* the request's cfcost state, made on first use */
ngx_http_cfcost_ctx_t *
ngx_http_cfcost_get_ctx(ngx_http_request_t *r)
{
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    if (ctx != NULL) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cfcost_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_cfcost_module);

    return ctx;
}
