/*
 * Request rate limits: requests a minute per API key and per user, shared
 * by every worker and gateway on the Redis.
 *
 * The limits come with the key (fields rpm and user_rpm of its hash, read
 * by the key lookup and cached with it).  A request under a limit is
 * checked once its key is known and before its body is read, by one
 * script on the key lookups' connection: the generic cell rate algorithm
 * (GCRA) on a "theoretical arrival time" per limit, in Redis's own clock.
 * A limit of N a minute lets N requests through at once and then one
 * every 60/N s; a request's limits are all checked before any counts it,
 * so a refused request uses none.
 *
 * The checks of a worker go in batches: one script call at a time per
 * worker; requests that come while it runs wait for its reply, then go
 * together in the next (at most NGX_HTTP_CFCOST_RATE_BATCH).  An idle
 * worker's request goes at once; a busy one pays a script call, a round
 * trip and the reads of each limit's key once per batch, not per request.
 * The script takes the requests in order, as they came.
 *
 * Redis unreachable, slow (NGX_HTTP_CFCOST_RATE_PATIENCE ms) or refusing
 * the script: the request goes on unlimited (fail open; a warning in the
 * error log, at most every 10 s per worker).  Availability wins over a
 * limit here.
 */

#include <openssl/sha.h>

#include "ngx_http_cfcost_module.h"
#include "ngx_http_cfcost_redis.h"


#define NGX_HTTP_CFCOST_RATE_PATIENCE  50
#define NGX_HTTP_CFCOST_RATE_WARN_MS   10000
#define NGX_HTTP_CFCOST_RATE_BATCH     128
#define NGX_HTTP_CFCOST_RATE_NAME_MAX  (sizeof(CFCOST_RL_USER_PREFIX) - 1   \
                                        + NGX_HTTP_CFCOST_NAME_MAX)


/* one request's check, from its access phase until the reply is read */
typedef struct {
    ngx_http_request_t   *request;      /* NULL once it stopped waiting */
    ngx_pool_cleanup_t   *cleanup;
    ngx_event_t           patience;
    ngx_queue_t           queue;        /* waiting for the next batch */
    uint32_t              rpm;
    uint32_t              user_rpm;
    size_t                key_len;
    size_t                user_len;
    u_char                key[NGX_HTTP_CFCOST_RATE_NAME_MAX];
    u_char                user[NGX_HTTP_CFCOST_RATE_NAME_MAX];
} ngx_http_cfcost_rate_t;


/* one script call: its arguments, and its requests in order */
typedef struct {
    ngx_uint_t                n;
    ngx_uint_t                evaled;   /* sent again as EVAL */
    int                       argc;
    const char              **argv;
    size_t                   *argvlen;
    ngx_http_cfcost_rate_t  **rts;
} ngx_http_cfcost_rate_batch_t;


/*
 * KEYS: the batch's limit keys, each once.  ARGV[1]: the number of
 * requests; then per request: its number of limits, and per limit its
 * key's index in KEYS and its requests a minute.  Returns five integers
 * per request: allowed, retry_after_ms, limit, remaining, reset_ms (for
 * the limit that refused, else the one with the fewest left).
 */
static const char  ngx_http_cfcost_rate_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local period = 60000000\n"
    "local tat, dirty, out = {}, {}, {}\n"
    "local a = 2\n"
    "local floor, ceil = math.floor, math.ceil\n"
    "local o = 0\n"
    "for q = 1, tonumber(ARGV[1]) do\n"
    "  local nk = tonumber(ARGV[a]); a = a + 1\n"
    "  local wait, lim, rem, reset = 0, 0, nil, 0\n"
    "  local k1, n1, k2, n2\n"
    "  for j = 1, nk do\n"
    "    local ki, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2\n"
    "    local step = floor(period / n)\n"
    "    local cur = tat[ki]\n"
    "    if cur == nil then\n"
    "      cur = tonumber(redis.call('GET', KEYS[ki])) or now\n"
    "      tat[ki] = cur\n"
    "    end\n"
    "    if cur < now then cur = now end\n"
    "    local new = cur + step\n"
    "    local w = new - period - now\n"
    "    if j == 1 then k1, n1 = ki, new else k2, n2 = ki, new end\n"
    "    if w > wait then\n"
    "      wait, lim, rem, reset = w, n, 0, cur - now\n"
    "    elseif wait == 0 then\n"
    "      local r = floor((now + period - new) / step)\n"
    "      if rem == nil or r < rem then\n"
    "        lim, rem, reset = n, r, new - now\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if wait > 0 then\n"
    "    out[o + 1], out[o + 2], out[o + 3], out[o + 4] =\n"
    "      0, ceil(wait / 1000), lim, 0\n"
    "  else\n"
    "    tat[k1] = n1; dirty[k1] = true\n"
    "    if k2 then tat[k2] = n2; dirty[k2] = true end\n"
    "    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = 1, 0, lim, rem\n"
    "  end\n"
    "  out[o + 5] = ceil(reset / 1000)\n"
    "  o = o + 5\n"
    "end\n"
    "for ki in pairs(dirty) do\n"
    "  redis.call('SET', KEYS[ki], string.format('%.0f', tat[ki]), 'PX',\n"
    "             ceil((tat[ki] - now) / 1000) + 1)\n"
    "end\n"
    "return out\n";

static u_char       ngx_http_cfcost_rate_sha[SHA_DIGEST_LENGTH * 2];
static ngx_msec_t   ngx_http_cfcost_rate_warned;
static ngx_queue_t  ngx_http_cfcost_rate_waiting;
static ngx_uint_t   ngx_http_cfcost_rate_busy;    /* a batch in flight */
static ngx_http_request_t  *ngx_http_cfcost_rate_self; /* in its check */

static const char  *ngx_http_cfcost_rate_names[] = {
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
};


static void ngx_http_cfcost_rate_flush(ngx_log_t *log);
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
    ctx->rate_waiting = 0;

    return r;
}


/* the limits are decided: the request carries on (or was answered) */
static void
ngx_http_cfcost_rate_resume(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

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


/*
 * Acts on one request's five integers v (NULL: not checked); returns what
 * the access phase returns.
 */
static ngx_int_t
ngx_http_cfcost_rate_decide(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    long long *v)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    if (v == NULL) {
        return NGX_OK;
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


/* five non-negative integers per request, or a warning and NULL */
static redisReply *
ngx_http_cfcost_rate_reply(redisReply *reply, ngx_uint_t n, ngx_log_t *log)
{
    ngx_uint_t  i;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 5 * n)
    {
        ngx_http_cfcost_rate_warn(log,
            reply == NULL ? "Redis connection lost"
            : reply->type == REDIS_REPLY_ERROR ? "Redis refused the script"
            : "unexpected reply");
        return NULL;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER
            || reply->element[i]->integer < 0)
        {
            ngx_http_cfcost_rate_warn(log, "unexpected reply");
            return NULL;
        }
    }

    return reply;
}


static void
ngx_http_cfcost_rate_done(redisAsyncContext *ac, void *rep, void *data)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i, j;
    redisReply                    *reply = rep;
    ngx_http_request_t            *r;
    ngx_http_cfcost_ctx_t         *ctx;
    ngx_http_cfcost_rate_t        *rt;
    ngx_http_cfcost_rate_batch_t  *b = data;
    long long                      v[5];

    (void) ac;

    /* the script is not in this Redis's cache (restarted, flushed) */
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !b->evaled
        && reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        b->evaled = 1;
        b->argv[0] = "EVAL";
        b->argvlen[0] = 4;
        b->argv[1] = ngx_http_cfcost_rate_lua;
        b->argvlen[1] = sizeof(ngx_http_cfcost_rate_lua) - 1;

        if (ngx_http_cfcost_redis_argv(ngx_http_cfcost_lookups_conn(),
                                       ngx_http_cfcost_rate_done, b,
                                       b->argc, b->argv, b->argvlen)
            == NGX_OK)
        {
            return;
        }

        reply = NULL;
    }

    ngx_http_cfcost_rate_busy = 0;

    reply = ngx_http_cfcost_rate_reply(reply, b->n, ngx_cycle->log);

    for (i = 0; i < b->n; i++) {
        rt = b->rts[i];
        r = ngx_http_cfcost_rate_detach(rt);
        ngx_free(rt);

        if (r == NULL) {
            continue;                  /* gone, or decided without it */
        }

        ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

        if (reply != NULL) {
            for (j = 0; j < 5; j++) {
                v[j] = reply->element[5 * i + j]->integer;
            }
        }

        rc = ngx_http_cfcost_rate_decide(r, ctx, reply ? v : NULL);
        ngx_http_cfcost_rate_resume(r, rc);
    }

    ngx_free(b);

    /* a request resumed above may have sent the next batch already */
    if (!ngx_http_cfcost_rate_busy
        && !ngx_queue_empty(&ngx_http_cfcost_rate_waiting))
    {
        ngx_http_cfcost_rate_flush(ngx_cycle->log);
    }
}


/*
 * Fails open every request of the queue (Redis cannot be asked); the one
 * whose check is running (ngx_http_cfcost_rate_self) goes on by itself.
 */
static void
ngx_http_cfcost_rate_release(ngx_queue_t *queue, const char *why)
{
    ngx_queue_t             *q;
    ngx_http_request_t      *r;
    ngx_http_cfcost_rate_t  *rt;

    while (!ngx_queue_empty(queue)) {
        q = ngx_queue_head(queue);
        ngx_queue_remove(q);
        rt = ngx_queue_data(q, ngx_http_cfcost_rate_t, queue);

        r = ngx_http_cfcost_rate_detach(rt);
        ngx_free(rt);

        if (r != NULL) {
            ngx_http_cfcost_rate_warn(r->connection->log, why);

            if (r != ngx_http_cfcost_rate_self) {
                ngx_http_cfcost_rate_resume(r, NGX_OK);
            }
        }
    }
}


/* index of name among the batch's keys (argv from 3, nkeys of them) */
static ngx_uint_t
ngx_http_cfcost_rate_key(ngx_http_cfcost_rate_batch_t *b, ngx_uint_t *nkeys,
    u_char *name, size_t len)
{
    ngx_uint_t  i;

    for (i = 0; i < *nkeys; i++) {
        if (b->argvlen[3 + i] == len
            && ngx_memcmp(b->argv[3 + i], name, len) == 0)
        {
            return i + 1;
        }
    }

    b->argv[3 + *nkeys] = (char *) name;
    b->argvlen[3 + *nkeys] = len;

    return ++*nkeys;
}


/* sends the waiting requests' checks, as one script call */
static void
ngx_http_cfcost_rate_flush(ngx_log_t *log)
{
    u_char                        *p, *nums;
    size_t                         size;
    ngx_uint_t                     n, i, nkeys, nargs, ki;
    ngx_queue_t                   *q, taken;
    ngx_http_cfcost_rate_t        *rt;
    ngx_http_cfcost_rate_batch_t  *b;

    ngx_queue_init(&taken);

    /* the requests still waiting, up to a batch; gone ones are dropped */
    for (n = 0; n < NGX_HTTP_CFCOST_RATE_BATCH
                && !ngx_queue_empty(&ngx_http_cfcost_rate_waiting); )
    {
        q = ngx_queue_head(&ngx_http_cfcost_rate_waiting);
        ngx_queue_remove(q);
        rt = ngx_queue_data(q, ngx_http_cfcost_rate_t, queue);

        if (rt->request == NULL) {
            ngx_free(rt);
            continue;
        }

        ngx_queue_insert_tail(&taken, q);
        n++;
    }

    if (n == 0) {
        return;
    }

    /* EVALSHA sha nkeys key... n (nk (index limit)...)... */
    nargs = 3 + 2 * n + 1 + n + 4 * n;
    size = sizeof(ngx_http_cfcost_rate_batch_t)
           + n * sizeof(ngx_http_cfcost_rate_t *)
           + nargs * (sizeof(char *) + sizeof(size_t))
           + (2 + 5 * n) * NGX_INT_T_LEN;

    b = ngx_alloc(size, log);
    if (b == NULL) {
        ngx_http_cfcost_rate_release(&taken, "out of memory");
        return;
    }

    b->n = n;
    b->evaled = 0;
    b->rts = (ngx_http_cfcost_rate_t **) (b + 1);
    b->argv = (const char **) (b->rts + n);
    b->argvlen = (size_t *) (b->argv + nargs);
    nums = (u_char *) (b->argvlen + nargs);

    b->argv[0] = "EVALSHA";
    b->argvlen[0] = 7;
    b->argv[1] = (char *) ngx_http_cfcost_rate_sha;
    b->argvlen[1] = sizeof(ngx_http_cfcost_rate_sha);

    /* the keys, each once */
    nkeys = 0;

    for (q = ngx_queue_head(&taken); q != ngx_queue_sentinel(&taken);
         q = ngx_queue_next(q))
    {
        rt = ngx_queue_data(q, ngx_http_cfcost_rate_t, queue);

        if (rt->rpm) {
            (void) ngx_http_cfcost_rate_key(b, &nkeys, rt->key,
                                            rt->key_len);
        }

        if (rt->user_rpm) {
            (void) ngx_http_cfcost_rate_key(b, &nkeys, rt->user,
                                            rt->user_len);
        }
    }

    p = nums;
    b->argv[2] = (char *) p;
    p = ngx_sprintf(p, "%ui", nkeys);
    b->argvlen[2] = p - (u_char *) b->argv[2];

    i = 3 + nkeys;

#define ngx_http_cfcost_rate_num(fmt, v)                                      \
    b->argv[i] = (char *) p;                                                 \
    p = ngx_sprintf(p, fmt, v);                                              \
    b->argvlen[i] = p - (u_char *) b->argv[i];                               \
    i++

    ngx_http_cfcost_rate_num("%ui", n);

    n = 0;

    while (!ngx_queue_empty(&taken)) {
        q = ngx_queue_head(&taken);
        ngx_queue_remove(q);
        rt = ngx_queue_data(q, ngx_http_cfcost_rate_t, queue);
        b->rts[n++] = rt;

        ngx_http_cfcost_rate_num("%d", (rt->rpm != 0) + (rt->user_rpm != 0));

        if (rt->rpm) {
            ki = ngx_http_cfcost_rate_key(b, &nkeys, rt->key, rt->key_len);
            ngx_http_cfcost_rate_num("%ui", ki);
            ngx_http_cfcost_rate_num("%uD", rt->rpm);
        }

        if (rt->user_rpm) {
            ki = ngx_http_cfcost_rate_key(b, &nkeys, rt->user,
                                          rt->user_len);
            ngx_http_cfcost_rate_num("%ui", ki);
            ngx_http_cfcost_rate_num("%uD", rt->user_rpm);
        }
    }

#undef ngx_http_cfcost_rate_num

    b->argc = (int) i;

    if (ngx_http_cfcost_redis_argv(ngx_http_cfcost_lookups_conn(),
                                   ngx_http_cfcost_rate_done, b, b->argc,
                                   b->argv, b->argvlen)
        != NGX_OK)
    {
        for (i = 0; i < b->n; i++) {
            ngx_queue_insert_tail(&taken, &b->rts[i]->queue);
        }

        ngx_free(b);
        ngx_http_cfcost_rate_release(&taken, "Redis is unreachable");
        return;
    }

    ngx_http_cfcost_rate_busy = 1;
}


/*
 * Redis took too long: the request goes on unlimited; its check stays in
 * its batch (or the queue) and is freed with it.
 */
static void
ngx_http_cfcost_rate_patience_handler(ngx_event_t *ev)
{
    ngx_http_request_t      *r;
    ngx_http_cfcost_rate_t  *rt = ev->data;

    r = ngx_http_cfcost_rate_detach(rt);
    if (r == NULL) {
        return;
    }

    ngx_http_cfcost_rate_warn(r->connection->log, "Redis is slow");
    ngx_http_cfcost_rate_resume(r, NGX_OK);
}


/*
 * Checks the request's rate limits, if its key has any.  Returns NGX_OK
 * (go on), NGX_AGAIN (the check is pending; the request resumes by
 * itself), or NGX_DONE (refused: the 429 was sent).
 */
ngx_int_t
ngx_http_cfcost_rate_check(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx)
{
    u_char                   md[SHA_DIGEST_LENGTH];
    ngx_pool_cleanup_t       *cln;
    ngx_http_cfcost_rate_t   *rt;

    if (ctx->rate_waiting) {
        return NGX_AGAIN;
    }

    if (ctx->rate_checked || (ctx->rpm == 0 && ctx->user_rpm == 0)) {
        ctx->rate_checked = 1;
        return NGX_OK;
    }

    ctx->rate_checked = 1;             /* once, whatever happens */

    if (ctx->key_id.len > NGX_HTTP_CFCOST_NAME_MAX
        || ctx->user.len > NGX_HTTP_CFCOST_NAME_MAX)
    {
        return NGX_OK;                 /* the key lookup caps both */
    }

    if (ngx_http_cfcost_redis_stalled(ngx_http_cfcost_lookups_conn(),
                                      NGX_HTTP_CFCOST_RATE_PATIENCE))
    {
        ngx_http_cfcost_rate_warn(r->connection->log,
                                  "Redis is unreachable or slow");
        return NGX_OK;
    }

    if (ngx_http_cfcost_rate_sha[0] == '\0') {
        SHA1((u_char *) ngx_http_cfcost_rate_lua,
             sizeof(ngx_http_cfcost_rate_lua) - 1, md);
        ngx_hex_dump(ngx_http_cfcost_rate_sha, md, SHA_DIGEST_LENGTH);
        ngx_queue_init(&ngx_http_cfcost_rate_waiting);
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

    rt->rpm = ctx->rpm;
    rt->user_rpm = ctx->user_rpm;
    rt->key_len = ngx_sprintf(rt->key, CFCOST_RL_KEY_PREFIX "%V",
                              &ctx->key_id) - rt->key;
    rt->user_len = ngx_sprintf(rt->user, CFCOST_RL_USER_PREFIX "%V",
                               &ctx->user) - rt->user;

    rt->request = r;
    rt->cleanup = cln;
    cln->handler = ngx_http_cfcost_rate_request_gone;
    cln->data = rt;

    rt->patience.handler = ngx_http_cfcost_rate_patience_handler;
    rt->patience.data = rt;
    rt->patience.log = r->connection->log;
    rt->patience.cancelable = 1;
    ngx_add_timer(&rt->patience, NGX_HTTP_CFCOST_RATE_PATIENCE);

    ctx->rate_waiting = 1;

    ngx_queue_insert_tail(&ngx_http_cfcost_rate_waiting, &rt->queue);

    if (!ngx_http_cfcost_rate_busy) {
        ngx_http_cfcost_rate_self = r;
        ngx_http_cfcost_rate_flush(r->connection->log);
        ngx_http_cfcost_rate_self = NULL;
    }

    /* sent and decided at once (Redis unreachable): the request goes on */
    return ctx->rate_waiting ? NGX_AGAIN : NGX_OK;
}
