/*
 * Request rate limits: requests a minute per API key and per user, shared
 * by every worker and gateway on the Redis.
 *
 * The limits come with the key (fields rpm and user_rpm of its hash, read
 * by the key lookup and cached with it).  A request under a limit runs one
 * script on the key lookups' connection, right after its key is known and
 * before its body is read: the generic cell rate algorithm (GCRA) on a
 * "theoretical arrival time" per limit, in Redis's own clock.  A limit of
 * N a minute lets N requests through at once and then one every 60/N s;
 * the script checks every limit of the request before it counts any, so a
 * refused request uses none.
 *
 * Redis unreachable, slow (NGX_HTTP_CFCOST_RATE_PATIENCE ms) or refusing
 * the script: the request goes on unlimited (fail open; a warning in the
 * error log, at most every 10 s per worker).  Availability wins over a
 * limit here; spend is capped by budgets, which do not fail open.
 */

#include <openssl/sha.h>

#include "ngx_http_cfcost_module.h"
#include "ngx_http_cfcost_redis.h"


#define NGX_HTTP_CFCOST_RATE_PATIENCE  50
#define NGX_HTTP_CFCOST_RATE_WARN_MS   10000


struct ngx_http_cfcost_rate_s {
    ngx_http_request_t   *request;      /* NULL once it is gone */
    ngx_pool_cleanup_t   *cleanup;
    ngx_event_t           patience;
    ngx_uint_t            evaled;       /* sent as EVAL after NOSCRIPT */
    int                   argc;
    size_t                argvlen[6];
    const char           *argv[6];
    u_char                buf[2 * 256 + 64];
};


/*
 * KEYS: one or two limits' arrival times; ARGV[i]: KEYS[i]'s limit a
 * minute.  Returns {allowed, retry_after_ms, limit, remaining, reset_ms}
 * for the limit that refused, else the one with the fewest left.
 */
static const char  ngx_http_cfcost_rate_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local period = 60000000\n"
    "local tats, wait, lim, rem, reset = {}, 0, 0, nil, 0\n"
    "for i = 1, #KEYS do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  local step = math.floor(period / n)\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i])) or now\n"
    "  if tat < now then tat = now end\n"
    "  local new = tat + step\n"
    "  local w = new - period - now\n"
    "  tats[i] = new\n"
    "  if w > wait then\n"
    "    wait, lim, rem, reset = w, n, 0, tat - now\n"
    "  elseif wait == 0 then\n"
    "    local r = math.floor((now + period - new) / step)\n"
    "    if rem == nil or r < rem then\n"
    "      lim, rem, reset = n, r, new - now\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if wait > 0 then\n"
    "  return {0, math.ceil(wait / 1000), lim, 0, math.ceil(reset / 1000)}\n"
    "end\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX',\n"
    "             math.ceil((tats[i] - now) / 1000) + 1)\n"
    "end\n"
    "return {1, 0, lim, rem, math.ceil(reset / 1000)}\n";

static u_char      ngx_http_cfcost_rate_sha[SHA_DIGEST_LENGTH * 2];
static ngx_msec_t  ngx_http_cfcost_rate_warned;


static void ngx_http_cfcost_rate_done(redisAsyncContext *ac, void *rep,
    void *data);


static void
ngx_http_cfcost_rate_warn(ngx_log_t *log, const char *why)
{
    if (ngx_http_cfcost_rate_warned != 0
        && ngx_current_msec - ngx_http_cfcost_rate_warned
           < NGX_HTTP_CFCOST_RATE_WARN_MS)
    {
        return;
    }

    ngx_http_cfcost_rate_warned = ngx_current_msec;
    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "cfcost: rate limits not checked (%s): requests go on "
                  "unlimited", why);
}


static void
ngx_http_cfcost_rate_request_gone(void *data)
{
    ngx_http_cfcost_rate_t  *rt = data;

    rt->request = NULL;

    if (rt->patience.timer_set) {
        ngx_del_timer(&rt->patience);
    }
}


/* the request stops waiting for rt: returns it, or NULL when it went */
static ngx_http_request_t *
ngx_http_cfcost_rate_detach(ngx_http_cfcost_rate_t *rt)
{
    ngx_http_request_t     *r;
    ngx_http_cfcost_ctx_t  *ctx;

    if (rt->patience.timer_set) {
        ngx_del_timer(&rt->patience);
    }

    r = rt->request;
    if (r == NULL) {
        return NULL;
    }

    rt->request = NULL;
    rt->cleanup->handler = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    ctx->rate = NULL;
    ctx->rate_waiting = 0;
    ctx->rate_checked = 1;

    return r;
}


/* the limits are decided: the request carries on (or was answered) */
static void
ngx_http_cfcost_rate_resume(ngx_http_request_t *r, ngx_connection_t *c,
    ngx_int_t rc)
{
    if (rc == NGX_OK) {
        r->write_event_handler = ngx_http_core_run_phases;
        ngx_http_core_run_phases(r);
    }

    ngx_http_run_posted_requests(c);
}


/* "450ms", "12s", "2m5s": how OpenAI writes x-ratelimit-reset-* */
static u_char *
ngx_http_cfcost_rate_duration(u_char *p, ngx_msec_t ms)
{
    ngx_msec_t  s;

    if (ms < 1000) {
        return ngx_sprintf(p, "%Mms", ms);
    }

    s = (ms + 999) / 1000;

    if (s < 60) {
        return ngx_sprintf(p, "%Ms", s);
    }

    return ngx_sprintf(p, "%Mm%Ms", s / 60, s % 60);
}


static const char  *ngx_http_cfcost_rate_names[] = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
};


/* hides headers already out (the upstream's) named as ours: ours replace */
static void
ngx_http_cfcost_rate_hide(ngx_http_request_t *r)
{
    ngx_uint_t        i, j;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        for (j = 0; h[i].hash != 0 && j < 3; j++) {
            if (h[i].key.len == ngx_strlen(ngx_http_cfcost_rate_names[j])
                && ngx_strncasecmp(h[i].key.data,
                       (u_char *) ngx_http_cfcost_rate_names[j],
                       h[i].key.len) == 0)
            {
                h[i].hash = 0;
            }
        }
    }
}


/*
 * Adds x-ratelimit-*-requests, once, when the request's limits were
 * checked (the upstream's own, about the operator's account, give way).
 */
ngx_int_t
ngx_http_cfcost_rate_headers(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (ctx->rl_limit == 0 || ctx->rl_headers) {
        return NGX_OK;
    }

    ctx->rl_headers = 1;

    ngx_http_cfcost_rate_hide(r);

    p = ngx_pnalloc(r->pool, 3 * NGX_INT_T_LEN + 16);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < 3; i++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        h->key.data = (u_char *) ngx_http_cfcost_rate_names[i];
        h->key.len = ngx_strlen(ngx_http_cfcost_rate_names[i]);
        h->value.data = p;

        switch (i) {
        case 0:
            p = ngx_sprintf(p, "%uD", ctx->rl_limit);
            break;
        case 1:
            p = ngx_sprintf(p, "%uD", ctx->rl_remaining);
            break;
        default:
            p = ngx_http_cfcost_rate_duration(p, ctx->rl_reset);
        }

        h->value.len = p - h->value.data;
    }

    return NGX_OK;
}


/* acts on the script's reply; returns what the access phase returns */
static ngx_int_t
ngx_http_cfcost_rate_decide(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    redisReply *reply)
{
    u_char           *p;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;
    long long         v[5];

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 5)
    {
        ngx_http_cfcost_rate_warn(r->connection->log,
            reply == NULL ? "Redis connection lost"
            : reply->type == REDIS_REPLY_ERROR ? "Redis refused the script"
            : "unexpected reply");
        return NGX_OK;
    }

    for (i = 0; i < 5; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER
            || reply->element[i]->integer < 0)
        {
            ngx_http_cfcost_rate_warn(r->connection->log, "unexpected reply");
            return NGX_OK;
        }

        v[i] = reply->element[i]->integer;
    }

    ctx->rl_limit = (uint32_t) ngx_min(v[2], CFCOST_RPM_MAX);
    ctx->rl_remaining = (uint32_t) ngx_min(v[3], CFCOST_RPM_MAX);
    ctx->rl_reset = (ngx_msec_t) ngx_min(v[4], 3600000);

    if (v[0] == 1) {
        return NGX_OK;
    }

    /* Retry-After in whole seconds, rounded up: never early */
    h = ngx_list_push(&r->headers_out.headers);
    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (h != NULL && p != NULL) {
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%L", (v[1] + 999) / 1000) - p;
    }

    ngx_str_set(&ctx->error, "rate_limited");

    return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
               "rate limit reached: %L requests a minute for this %s; "
               "retry in %L ms",
               v[2], (v[2] == ctx->rpm) ? "API key" : "user", v[1]);
}


static void
ngx_http_cfcost_rate_done(redisAsyncContext *ac, void *rep, void *data)
{
    ngx_int_t                rc;
    redisReply              *reply = rep;
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_cfcost_ctx_t   *ctx;
    ngx_http_cfcost_rate_t  *rt = data;

    (void) ac;

    /* the script is not in this Redis's cache (restarted, flushed) */
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !rt->evaled
        && reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && rt->request != NULL)
    {
        rt->evaled = 1;
        rt->argv[0] = "EVAL";
        rt->argvlen[0] = 4;
        rt->argv[1] = ngx_http_cfcost_rate_lua;
        rt->argvlen[1] = sizeof(ngx_http_cfcost_rate_lua) - 1;

        if (ngx_http_cfcost_redis_argv(ngx_http_cfcost_lookups_conn(),
                                       ngx_http_cfcost_rate_done, rt,
                                       rt->argc, rt->argv, rt->argvlen)
            == NGX_OK)
        {
            return;
        }

        reply = NULL;
    }

    r = ngx_http_cfcost_rate_detach(rt);
    ngx_free(rt);

    if (r == NULL) {
        return;                        /* gone, or decided without it */
    }

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    rc = ngx_http_cfcost_rate_decide(r, ctx, reply);
    ngx_http_cfcost_rate_resume(r, c, rc);
}


/* Redis took too long: go on unlimited; the reply, if any, is dropped */
static void
ngx_http_cfcost_rate_patience_handler(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_cfcost_rate_t  *rt = ev->data;

    r = ngx_http_cfcost_rate_detach(rt);
    if (r == NULL) {
        return;
    }

    c = r->connection;
    ngx_http_cfcost_rate_warn(c->log, "Redis is slow");
    ngx_http_cfcost_rate_resume(r, c, NGX_OK);
}


/*
 * Checks the request's rate limits, if its key has any.  Returns NGX_OK
 * (go on), NGX_AGAIN (the script is pending; the request resumes by
 * itself), or NGX_DONE (refused: the 429 was sent).
 */
ngx_int_t
ngx_http_cfcost_rate_check(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    u_char                   *p;
    ngx_uint_t                i;
    ngx_pool_cleanup_t       *cln;
    ngx_http_cfcost_rate_t   *rt;
    ngx_http_cfcost_redis_t  *rd;
    u_char                    md[SHA_DIGEST_LENGTH];

    if (ctx->rate_waiting) {
        return NGX_AGAIN;
    }

    if (ctx->rate_checked || (ctx->rpm == 0 && ctx->user_rpm == 0)) {
        ctx->rate_checked = 1;
        return NGX_OK;
    }

    ctx->rate_checked = 1;             /* once, whatever happens */

    rd = ngx_http_cfcost_lookups_conn();

    if (ngx_http_cfcost_redis_stalled(rd, NGX_HTTP_CFCOST_RATE_PATIENCE)) {
        ngx_http_cfcost_rate_warn(r->connection->log,
                                  "Redis is unreachable or slow");
        return NGX_OK;
    }

    if (ngx_http_cfcost_rate_sha[0] == '\0') {
        SHA1((u_char *) ngx_http_cfcost_rate_lua,
             sizeof(ngx_http_cfcost_rate_lua) - 1, md);
        ngx_hex_dump(ngx_http_cfcost_rate_sha, md, SHA_DIGEST_LENGTH);
    }

    if (ctx->key_id.len > 256 || ctx->user.len > 256) {
        return NGX_OK;                 /* the key lookup caps both */
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    rt = ngx_calloc(sizeof(ngx_http_cfcost_rate_t), r->connection->log);

    if (cln == NULL || rt == NULL) {
        if (rt) {
            ngx_free(rt);
        }

        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "out of memory");
    }

    /* EVALSHA sha nkeys key... limit... */
    rt->argv[0] = "EVALSHA";
    rt->argvlen[0] = 7;
    rt->argv[1] = (char *) ngx_http_cfcost_rate_sha;
    rt->argvlen[1] = sizeof(ngx_http_cfcost_rate_sha);
    rt->argv[2] = (ctx->rpm && ctx->user_rpm) ? "2" : "1";
    rt->argvlen[2] = 1;

    p = rt->buf;
    i = 3;

    if (ctx->rpm) {
        rt->argv[i] = (char *) p;
        p = ngx_sprintf(p, CFCOST_RL_KEY_PREFIX "%V", &ctx->key_id);
        rt->argvlen[i] = p - (u_char *) rt->argv[i];
        i++;
    }

    if (ctx->user_rpm) {
        rt->argv[i] = (char *) p;
        p = ngx_sprintf(p, CFCOST_RL_USER_PREFIX "%V", &ctx->user);
        rt->argvlen[i] = p - (u_char *) rt->argv[i];
        i++;
    }

    if (ctx->rpm) {
        rt->argv[i] = (char *) p;
        p = ngx_sprintf(p, "%uD", ctx->rpm);
        rt->argvlen[i] = p - (u_char *) rt->argv[i];
        i++;
    }

    if (ctx->user_rpm) {
        rt->argv[i] = (char *) p;
        p = ngx_sprintf(p, "%uD", ctx->user_rpm);
        rt->argvlen[i] = p - (u_char *) rt->argv[i];
        i++;
    }

    rt->argc = (int) i;

    if (ngx_http_cfcost_redis_argv(rd, ngx_http_cfcost_rate_done, rt,
                                   rt->argc, rt->argv, rt->argvlen)
        != NGX_OK)
    {
        ngx_free(rt);
        ngx_http_cfcost_rate_warn(r->connection->log, "Redis is unreachable");
        return NGX_OK;
    }

    rt->request = r;
    rt->cleanup = cln;
    cln->handler = ngx_http_cfcost_rate_request_gone;
    cln->data = rt;

    rt->patience.handler = ngx_http_cfcost_rate_patience_handler;
    rt->patience.data = rt;
    rt->patience.log = r->connection->log;
    rt->patience.cancelable = 1;
    ngx_add_timer(&rt->patience, NGX_HTTP_CFCOST_RATE_PATIENCE);

    ctx->rate = rt;
    ctx->rate_waiting = 1;

    return NGX_AGAIN;
}
