/*
 * API keys.
 *
 * A key arrives as "X-API-Key: KEY" or "Authorization: Bearer KEY".  Only
 * its SHA-256 is ever looked at.  Answers from Redis are cached for all
 * workers in a shared-memory zone (rbtree + LRU, evicting when the slab is
 * full): an entry is trusted for `ttl` (so a revocation reaches every
 * worker within ttl), and an expired valid entry still serves for `stale`
 * while Redis cannot be reached.  A key in use is looked up again in the
 * background once its entry is half its ttl old (one worker does it, for
 * all): its requests are decided from the cache and never wait for Redis,
 * and a revocation still reaches them within ttl.
 *
 * A lookup never blocks the worker: the request waits on an async hiredis
 * reply, on a connection of its own (records never delay it).  The reply
 * callback gets a lookup structure, never the request: a request that
 * goes away first just unhooks itself from it.  While that connection is
 * down or stalled, a known key is decided from the cache at once (within
 * ttl + stale) instead of waiting for the watchdog.
 */

#include <openssl/crypto.h>

#include "ngx_http_cfcost_redis.h"
#include "cfcost_keys.h"


#define NGX_HTTP_CFCOST_KEY_VALID     1
#define NGX_HTTP_CFCOST_KEY_UNKNOWN   2
#define NGX_HTTP_CFCOST_KEY_REVOKED   3
#define NGX_HTTP_CFCOST_KEY_DISABLED  4      /* its user is disabled */

#define NGX_HTTP_CFCOST_KEY_MAX       256

/* replies outstanding this long, with none back: Redis is stalled */
#define NGX_HTTP_CFCOST_LOOKUP_PATIENCE  50


typedef struct {
    ngx_http_cfcost_keytree_node_t  tn;       /* first: _keytree.c */
    ngx_queue_t                   queue;      /* LRU, most recent first */
    ngx_msec_t                    fetched;
    ngx_msec_t                    refreshing; /* since; 0: not */
    uint32_t                      rpm;        /* the key's; 0: none */
    uint32_t                      user_rpm;   /* its user's */
    u_char                        state;
    u_char                        id_len;
    u_char                        user_len;
    u_char                        data[1];    /* id, then user */
} ngx_http_cfcost_key_node_t;


typedef struct {
    ngx_rbtree_t                  rbtree;
    ngx_rbtree_node_t             sentinel;
    ngx_queue_t                   queue;
} ngx_http_cfcost_cache_sh_t;


typedef struct {
    ngx_http_cfcost_cache_sh_t   *sh;
    ngx_slab_pool_t              *shpool;
} ngx_http_cfcost_cache_t;


typedef struct {
    u_char                        state;
    u_char                        refresh;    /* look it up, for all */
    ngx_msec_t                    age;
    ngx_str_t                     id;
    ngx_str_t                     user;
    uint32_t                      rpm;
    uint32_t                      user_rpm;
} ngx_http_cfcost_identity_t;


struct ngx_http_cfcost_lookup_s {
    ngx_http_request_t           *request;    /* NULL once it is gone */
    ngx_pool_cleanup_t           *cleanup;
    ngx_http_cfcost_cache_t      *cache;
    ngx_event_t                   patience;   /* known key: stop waiting */
    u_char                        hash[NGX_HTTP_CFCOST_HASH_LEN];
};


static ngx_http_cfcost_redis_t  ngx_http_cfcost_lookups;


static ngx_int_t ngx_http_cfcost_auth_decide(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_http_cfcost_identity_t *id,
    ngx_uint_t redis_down);


/* shared-memory zone */

static ngx_int_t
ngx_http_cfcost_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cfcost_cache_t  *octx = data;

    size_t                    len;
    ngx_http_cfcost_cache_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {                        /* reload: keep the old cache */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {        /* Windows-style reattach */
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_http_cfcost_cache_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_http_cfcost_keytree_insert);
    ngx_queue_init(&ctx->sh->queue);

    len = sizeof(" in cfcost key cache \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in cfcost key cache \"%V\"%Z",
                &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;        /* eviction handles a full zone */

    return NGX_OK;
}


ngx_int_t
ngx_http_cfcost_cache_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf, ssize_t size)
{
    ngx_str_t                 name = ngx_string("cfcost_keys");
    ngx_http_cfcost_cache_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_cfcost_cache_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    mcf->cache_zone = ngx_shared_memory_add(cf, &name, size,
                                            &ngx_http_cfcost_module);
    if (mcf->cache_zone == NULL) {
        return NGX_ERROR;
    }

    if (mcf->cache_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost key cache zone is already defined");
        return NGX_ERROR;
    }

    mcf->cache_zone->init = ngx_http_cfcost_cache_init_zone;
    mcf->cache_zone->data = ctx;

    return NGX_OK;
}


/*
 * Copies the cached identity, if any, into the request's pool.  With a ttl
 * (0: none), id->refresh is set for the one caller that should look the
 * key up in the background: the entry is between half its ttl and its ttl
 * old, and no refresh began within ttl.
 */
static void
ngx_http_cfcost_cache_get(ngx_http_request_t *r,
    ngx_http_cfcost_cache_t *cache, u_char *hash,
    ngx_http_cfcost_identity_t *id, ngx_msec_t ttl)
{
    u_char                      *p;
    ngx_http_cfcost_key_node_t  *kn;

    ngx_memzero(id, sizeof(ngx_http_cfcost_identity_t));

    ngx_shmtx_lock(&cache->shpool->mutex);

    kn = ngx_http_cfcost_keytree_find(&cache->sh->rbtree, hash);

    if (kn != NULL) {
        p = ngx_pnalloc(r->pool, kn->id_len + kn->user_len);

        if (p != NULL) {
            id->state = kn->state;
            /* another worker's clock may be a little ahead of ours */
            id->age = (ngx_msec_int_t) (ngx_current_msec - kn->fetched) > 0
                      ? ngx_current_msec - kn->fetched : 0;
            id->id.data = p;
            id->id.len = kn->id_len;
            id->user.data = p + kn->id_len;
            id->user.len = kn->user_len;
            id->rpm = kn->rpm;
            id->user_rpm = kn->user_rpm;
            ngx_memcpy(p, kn->data, kn->id_len + kn->user_len);

            if (ttl / 2 && id->age >= ttl / 2 && id->age < ttl
                && (kn->refreshing == 0
                    || ngx_current_msec - kn->refreshing >= ttl))
            {
                kn->refreshing = ngx_current_msec;
                id->refresh = 1;
            }

            ngx_queue_remove(&kn->queue);
            ngx_queue_insert_head(&cache->sh->queue, &kn->queue);
        }
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static void
ngx_http_cfcost_cache_expire_one(ngx_http_cfcost_cache_t *cache)
{
    ngx_queue_t                 *q;
    ngx_http_cfcost_key_node_t  *kn;

    if (ngx_queue_empty(&cache->sh->queue)) {
        return;
    }

    q = ngx_queue_last(&cache->sh->queue);
    kn = ngx_queue_data(q, ngx_http_cfcost_key_node_t, queue);

    ngx_queue_remove(q);
    ngx_rbtree_delete(&cache->sh->rbtree, &kn->tn.node);
    ngx_slab_free_locked(cache->shpool, kn);
}


static void
ngx_http_cfcost_cache_put(ngx_http_cfcost_cache_t *cache, u_char *hash,
    ngx_http_cfcost_identity_t *id)
{
    size_t                       size;
    ngx_uint_t                   tries;
    ngx_http_cfcost_key_node_t  *kn;

    size = offsetof(ngx_http_cfcost_key_node_t, data)
           + id->id.len + id->user.len;

    ngx_shmtx_lock(&cache->shpool->mutex);

    kn = ngx_http_cfcost_keytree_find(&cache->sh->rbtree, hash);
    if (kn != NULL) {
        ngx_queue_remove(&kn->queue);
        ngx_rbtree_delete(&cache->sh->rbtree, &kn->tn.node);
        ngx_slab_free_locked(cache->shpool, kn);
    }

    kn = ngx_slab_alloc_locked(cache->shpool, size);

    for (tries = 0; kn == NULL && tries < 8; tries++) {
        ngx_http_cfcost_cache_expire_one(cache);
        kn = ngx_slab_alloc_locked(cache->shpool, size);
    }

    if (kn == NULL) {
        ngx_shmtx_unlock(&cache->shpool->mutex);
        return;                        /* not cached: next request asks */
    }

    kn->fetched = ngx_current_msec;
    kn->refreshing = 0;
    kn->state = id->state;
    kn->rpm = id->rpm;
    kn->user_rpm = id->user_rpm;
    kn->id_len = (u_char) id->id.len;
    kn->user_len = (u_char) id->user.len;
    /* an unknown key has neither: NULL, 0 */
    if (id->id.len) {
        ngx_memcpy(kn->data, id->id.data, id->id.len);
    }

    if (id->user.len) {
        ngx_memcpy(kn->data + id->id.len, id->user.data, id->user.len);
    }

    ngx_http_cfcost_keytree_add(&cache->sh->rbtree, &kn->tn, hash);
    ngx_queue_insert_head(&cache->sh->queue, &kn->queue);

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


/* strips the optional white space (SP, HTAB) of RFC 9110 around s */
static void
ngx_http_cfcost_trim_ows(ngx_str_t *s)
{
    while (s->len && (s->data[0] == ' ' || s->data[0] == '\t')) {
        s->data++;
        s->len--;
    }

    while (s->len && (s->data[s->len - 1] == ' '
                      || s->data[s->len - 1] == '\t'))
    {
        s->len--;
    }
}


/* the request */

static ngx_int_t
ngx_http_cfcost_extract_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char           *p, *last;
    ngx_str_t         value;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-API-Key") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-API-Key",
                               sizeof("X-API-Key") - 1) == 0)
        {
            /* RFC 9110: optional white space around; empty is absent */
            *key = h[i].value;
            ngx_http_cfcost_trim_ows(key);

            if (key->len) {
                return NGX_OK;
            }
        }
    }

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    value = r->headers_in.authorization->value;
    ngx_http_cfcost_trim_ows(&value);

    p = value.data;
    last = p + value.len;

    if (last - p < 7 || ngx_strncasecmp(p, (u_char *) "Bearer", 6) != 0
        || (p[6] != ' ' && p[6] != '\t'))
    {
        return NGX_DECLINED;
    }

    key->data = p + 7;
    key->len = last - key->data;
    ngx_http_cfcost_trim_ows(key);

    return key->len ? NGX_OK : NGX_DECLINED;
}


static void
ngx_http_cfcost_lookup_request_gone(void *data)
{
    ngx_http_cfcost_lookup_t  *lk = data;

    lk->request = NULL;

    if (lk->patience.timer_set) {
        ngx_del_timer(&lk->patience);
    }
}


/* a limit field: absent, empty or not a number in range is no limit */
static uint32_t
ngx_http_cfcost_parse_rpm(redisReply *v)
{
    ngx_int_t  n;

    if (v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 10) {
        return 0;
    }

    n = ngx_atoi((u_char *) v->str, v->len);

    return (n > 0 && n <= CFCOST_RPM_MAX) ? (uint32_t) n : 0;
}


/*
 * reads an HMGET id user revoked rpm user_rpm user_disabled reply;
 * NGX_ERROR means "ask again"
 */
static ngx_int_t
ngx_http_cfcost_parse_key_reply(redisReply *reply,
    ngx_http_cfcost_identity_t *id)
{
    redisReply  *kid, *user, *revoked;

    ngx_memzero(id, sizeof(ngx_http_cfcost_identity_t));

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 6)
    {
        return NGX_ERROR;
    }

    kid = reply->element[0];
    user = reply->element[1];
    revoked = reply->element[2];

    if (kid->type != REDIS_REPLY_STRING || user->type != REDIS_REPLY_STRING
        || kid->len == 0 || kid->len > NGX_HTTP_CFCOST_NAME_MAX
        || user->len > NGX_HTTP_CFCOST_NAME_MAX)
    {
        id->state = NGX_HTTP_CFCOST_KEY_UNKNOWN;
        return NGX_OK;
    }

    id->id.data = (u_char *) kid->str;
    id->id.len = kid->len;
    id->user.data = (u_char *) user->str;
    id->user.len = user->len;
    id->rpm = ngx_http_cfcost_parse_rpm(reply->element[3]);
    id->user_rpm = ngx_http_cfcost_parse_rpm(reply->element[4]);

    /* only an explicit "0" is an active key, as the CLI shows it */
    id->state = (revoked->type == REDIS_REPLY_STRING
                 && cfcost_keys_active(revoked->str, revoked->len))
                ? NGX_HTTP_CFCOST_KEY_VALID : NGX_HTTP_CFCOST_KEY_REVOKED;

    /* any value but absent or empty: the CLI writes "1" */
    if (id->state == NGX_HTTP_CFCOST_KEY_VALID
        && reply->element[5]->type == REDIS_REPLY_STRING
        && reply->element[5]->len != 0)
    {
        id->state = NGX_HTTP_CFCOST_KEY_DISABLED;
    }

    return NGX_OK;
}


/* the request stops waiting for lk: returns it, or NULL when it went */
static ngx_http_request_t *
ngx_http_cfcost_lookup_detach(ngx_http_cfcost_lookup_t *lk)
{
    ngx_http_request_t     *r;
    ngx_http_cfcost_ctx_t  *ctx;

    r = lk->request;
    if (r == NULL) {
        return NULL;
    }

    lk->request = NULL;
    lk->cleanup->handler = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    ctx->lookup = NULL;
    ctx->waiting = 0;

    return r;
}


/*
 * The key is decided (rc from auth_decide): the request carries on.  c is
 * r->connection as read before deciding: an error sent while deciding
 * finalizes the request, which may free r (and its pool) at once.
 */
static void
ngx_http_cfcost_lookup_resume(ngx_http_request_t *r, ngx_connection_t *c,
    ngx_int_t rc)
{
    if (rc == NGX_OK) {
        r->write_event_handler = ngx_http_core_run_phases;
        ngx_http_core_run_phases(r);
    }

    ngx_http_run_posted_requests(c);
}


/* decides the request's key from the cache alone (Redis did not tell) */
static ngx_int_t
ngx_http_cfcost_lookup_stale(ngx_http_request_t *r,
    ngx_http_cfcost_cache_t *cache)
{
    ngx_http_cfcost_ctx_t       *ctx;
    ngx_http_cfcost_identity_t   cached;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);
    ngx_http_cfcost_cache_get(r, cache, ctx->key_hash, &cached, 0);

    return ngx_http_cfcost_auth_decide(r, ctx, &cached, 1);
}


static void
ngx_http_cfcost_lookup_done(redisAsyncContext *ac, void *rep, void *data)
{
    u_char                      *p;
    ngx_int_t                    rc;
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_cfcost_ctx_t       *ctx;
    ngx_http_cfcost_cache_t     *cache;
    ngx_http_cfcost_lookup_t    *lk = data;
    ngx_http_cfcost_identity_t   id;

    rc = ngx_http_cfcost_parse_key_reply(rep, &id);
    cache = lk->cache;

    if (lk->patience.timer_set) {
        ngx_del_timer(&lk->patience);
    }

    if (rc == NGX_OK) {
        ngx_http_cfcost_cache_put(cache, lk->hash, &id);
    }

    r = ngx_http_cfcost_lookup_detach(lk);
    ngx_free(lk);

    if (r == NULL) {
        return;
    }

    c = r->connection;

    if (rc != NGX_OK) {
        rc = ngx_http_cfcost_lookup_stale(r, cache);
        ngx_http_cfcost_lookup_resume(r, c, rc);
        return;
    }

    /* the reply is freed when this returns: keep the identity */
    p = ngx_pnalloc(r->pool, id.id.len + id.user.len);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    /* an unknown key has neither: NULL, 0 */
    if (id.id.len) {
        ngx_memcpy(p, id.id.data, id.id.len);
    }

    if (id.user.len) {
        ngx_memcpy(p + id.id.len, id.user.data, id.user.len);
    }

    id.id.data = p;
    id.user.data = p + id.id.len;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cfcost_module);

    rc = ngx_http_cfcost_auth_decide(r, ctx, &id, 0);
    ngx_http_cfcost_lookup_resume(r, c, rc);
}


/*
 * A key the cache knows waited PATIENCE ms for Redis: decide from the
 * cache (stale-if-error) and let the reply, when it comes, only refresh
 * the cache.
 */
static void
ngx_http_cfcost_lookup_patience_handler(ngx_event_t *ev)
{
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_cfcost_lookup_t  *lk = ev->data;

    r = ngx_http_cfcost_lookup_detach(lk);
    if (r == NULL) {
        return;
    }

    c = r->connection;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "cfcost: key lookup slow, deciding from the cache");

    rc = ngx_http_cfcost_lookup_stale(r, lk->cache);
    ngx_http_cfcost_lookup_resume(r, c, rc);
}


/* asks Redis about lk->hash; ngx_http_cfcost_lookup_done gets the reply */
static ngx_int_t
ngx_http_cfcost_lookup_send(ngx_http_cfcost_lookup_t *lk)
{
    u_char       hex[NGX_HTTP_CFCOST_HASH_LEN * 2], *p;
    u_char       name[CFCOST_KEYS_RECORD_LEN + 1];
    size_t       argvlen[8];
    const char  *argv[8];

    ngx_hex_dump(hex, lk->hash, NGX_HTTP_CFCOST_HASH_LEN);
    p = name + cfcost_keys_record((char *) name, (char *) hex);

    argv[0] = "HMGET";
    argv[1] = (char *) name;
    argv[2] = CFCOST_KEY_F_ID;
    argv[3] = CFCOST_KEY_F_USER;
    argv[4] = CFCOST_KEY_F_REVOKED;
    argv[5] = CFCOST_KEY_F_RPM;
    argv[6] = CFCOST_KEY_F_USER_RPM;
    argv[7] = CFCOST_KEY_F_USER_DISABLED;
    argvlen[0] = sizeof("HMGET") - 1;
    argvlen[1] = p - name;
    argvlen[2] = sizeof(CFCOST_KEY_F_ID) - 1;
    argvlen[3] = sizeof(CFCOST_KEY_F_USER) - 1;
    argvlen[4] = sizeof(CFCOST_KEY_F_REVOKED) - 1;
    argvlen[5] = sizeof(CFCOST_KEY_F_RPM) - 1;
    argvlen[6] = sizeof(CFCOST_KEY_F_USER_RPM) - 1;
    argvlen[7] = sizeof(CFCOST_KEY_F_USER_DISABLED) - 1;

    return ngx_http_cfcost_redis_argv(&ngx_http_cfcost_lookups,
                                      ngx_http_cfcost_lookup_done, lk, 8,
                                      argv, argvlen);
}


/*
 * A background lookup of a cached key in use, so that its entry is fresh
 * before it expires: no request waits for it (lk->request stays NULL), and
 * the reply only refreshes the cache.  Skipped while Redis is stalled: the
 * requests are decided from the cache anyway.
 */
static void
ngx_http_cfcost_lookup_refresh(ngx_http_request_t *r,
    ngx_http_cfcost_cache_t *cache, u_char *hash)
{
    ngx_http_cfcost_lookup_t  *lk;

    if (ngx_http_cfcost_redis_stalled(&ngx_http_cfcost_lookups,
                                      NGX_HTTP_CFCOST_LOOKUP_PATIENCE))
    {
        return;
    }

    lk = ngx_calloc(sizeof(ngx_http_cfcost_lookup_t), r->connection->log);
    if (lk == NULL) {
        return;
    }

    lk->cache = cache;
    ngx_memcpy(lk->hash, hash, NGX_HTTP_CFCOST_HASH_LEN);

    if (ngx_http_cfcost_lookup_send(lk) != NGX_OK) {
        ngx_free(lk);
    }
}


/*
 * Acts on what is known of a key: returns NGX_OK with ctx's identity set
 * when the request may go on; otherwise sends the error and returns
 * NGX_DONE (the request is finalized).  redis_down: id is only what the
 * cache remembers, because Redis could not be asked.
 */
static ngx_int_t
ngx_http_cfcost_auth_decide(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_http_cfcost_identity_t *id, ngx_uint_t redis_down)
{
    ngx_http_cfcost_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

    if (redis_down
        && (id->state == 0 || id->age >= mcf->cache_ttl + mcf->cache_stale))
    {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                   "the API key store is unreachable; try again shortly");
    }

    switch (id->state) {

    case NGX_HTTP_CFCOST_KEY_VALID:
        ctx->key_id = id->id;
        ctx->user = id->user;
        ctx->rpm = id->rpm;
        ctx->user_rpm = id->user_rpm;
        ctx->authenticated = 1;
        return NGX_OK;

    case NGX_HTTP_CFCOST_KEY_REVOKED:
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                          "API key revoked");

    case NGX_HTTP_CFCOST_KEY_DISABLED:
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_FORBIDDEN,
                                          "this API key's user is disabled");

    default:
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                          "invalid API key");
    }
}


/*
 * Authenticates the request's key (or, where admin_ok, the admin token:
 * ctx->admin is set, with no key id or user).  Returns NGX_OK (ctx->key_id and
 * ctx->user set), NGX_AGAIN (a Redis lookup is pending; the request
 * resumes by itself), or NGX_DONE (an error was sent).
 */
ngx_int_t
ngx_http_cfcost_authenticate(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t admin_ok)
{
    ngx_str_t                     key;
    ngx_pool_cleanup_t           *cln;
    ngx_http_cfcost_cache_t      *cache;
    ngx_http_cfcost_lookup_t     *lk;
    ngx_http_cfcost_identity_t    id;
    ngx_http_cfcost_main_conf_t  *mcf;

    if (ngx_http_cfcost_extract_key(r, &key) != NGX_OK) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                   "missing API key: send it as \"X-API-Key: KEY\" or "
                   "\"Authorization: Bearer KEY\"");
    }

    if (key.len > NGX_HTTP_CFCOST_KEY_MAX) {
        return ngx_http_cfcost_send_error(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                          "invalid API key");
    }

    if (cfcost_keys_sha256((char *) key.data, key.len, ctx->key_hash) != 0) {
        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "cannot hash the API key");
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

    if (admin_ok && mcf->has_admin
        && CRYPTO_memcmp(ctx->key_hash, mcf->admin_hash,
                         NGX_HTTP_CFCOST_HASH_LEN) == 0)
    {
        ctx->admin = 1;
        ctx->authenticated = 1;
        return NGX_OK;
    }

    /* reads /metrics only: the aggregator gives it nothing else */
    if (admin_ok && mcf->has_metrics
        && CRYPTO_memcmp(ctx->key_hash, mcf->metrics_hash,
                         NGX_HTTP_CFCOST_HASH_LEN) == 0)
    {
        ctx->metrics = 1;
        ctx->authenticated = 1;
        return NGX_OK;
    }

    cache = mcf->cache_zone->data;

    ngx_http_cfcost_cache_get(r, cache, ctx->key_hash, &id, mcf->cache_ttl);

    if (id.state && id.age < mcf->cache_ttl) {
        if (id.refresh) {
            ngx_http_cfcost_lookup_refresh(r, cache, ctx->key_hash);
        }

        return ngx_http_cfcost_auth_decide(r, ctx, &id, 0);
    }

    if (id.state
        && ngx_http_cfcost_redis_stalled(&ngx_http_cfcost_lookups,
                                         NGX_HTTP_CFCOST_LOOKUP_PATIENCE))
    {
        /* stale-if-error: asking now would wait for the watchdog */
        return ngx_http_cfcost_auth_decide(r, ctx, &id, 1);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    lk = ngx_calloc(sizeof(ngx_http_cfcost_lookup_t), r->connection->log);

    if (cln == NULL || lk == NULL) {
        if (lk) {
            ngx_free(lk);
        }

        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "out of memory");
    }

    lk->request = r;
    lk->cleanup = cln;
    lk->cache = cache;
    ngx_memcpy(lk->hash, ctx->key_hash, NGX_HTTP_CFCOST_HASH_LEN);

    if (ngx_http_cfcost_lookup_send(lk) != NGX_OK) {
        ngx_free(lk);
        return ngx_http_cfcost_auth_decide(r, ctx, &id, 1);
    }

    cln->handler = ngx_http_cfcost_lookup_request_gone;
    cln->data = lk;

    if (id.state) {
        lk->patience.handler = ngx_http_cfcost_lookup_patience_handler;
        lk->patience.data = lk;
        lk->patience.log = r->connection->log;
        lk->patience.cancelable = 1;
        ngx_add_timer(&lk->patience, NGX_HTTP_CFCOST_LOOKUP_PATIENCE);
    }

    ctx->lookup = lk;
    ctx->waiting = 1;

    return NGX_AGAIN;
}


/* the key lookups' connection: also the rate limits' (_rate.c) */
ngx_http_cfcost_redis_t *
ngx_http_cfcost_lookups_conn(void)
{
    return &ngx_http_cfcost_lookups;
}


ngx_int_t
ngx_http_cfcost_auth_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_memzero(&ngx_http_cfcost_lookups, sizeof(ngx_http_cfcost_redis_t));
    ngx_http_cfcost_redis_start(&ngx_http_cfcost_lookups, mcf, cycle->log,
                                "key lookups");

    return NGX_OK;
}


void
ngx_http_cfcost_auth_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_cfcost_lookups.mcf != NULL) {
        ngx_http_cfcost_redis_close(&ngx_http_cfcost_lookups);
    }
}
