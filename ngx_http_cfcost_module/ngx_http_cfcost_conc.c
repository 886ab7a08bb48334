/*
 * Requests in flight per API key (cfcost_key_concurrency), counted for all
 * workers in a shared-memory zone, as limit_conn counts connections: an
 * rbtree keyed by the key's SHA-256, one node per key that has requests
 * in flight (made at its first, freed with its last).  A metered request
 * is counted once its key is known, before its body is read, and
 * uncounted by a cleanup of the request's pool, whatever ends it: an
 * answer, an error, the client leaving, the upstream failing.
 *
 * Over the cap the request is refused before its body is read (nginx
 * discards it) and before anything goes upstream: 429 in the route's
 * shape, with Retry-After.  It is recorded like every authenticated
 * request, at no cost.  A full zone refuses too (503), logged: a request
 * that cannot be counted is not let through uncounted.
 *
 * The directives: cfcost_key_concurrency (http, server, location) and
 * cfcost_key_concurrency_zone (http; 1m when a cap is set and it is not).
 */

#include "ngx_http_cfcost_module.h"


typedef struct {
    ngx_http_cfcost_keytree_node_t  tn;       /* first: _keytree.c */
    ngx_uint_t                     count;
} ngx_http_cfcost_conc_node_t;


typedef struct {
    ngx_rbtree_t                   rbtree;
    ngx_rbtree_node_t              sentinel;
} ngx_http_cfcost_conc_sh_t;


typedef struct {
    ngx_http_cfcost_conc_sh_t     *sh;
    ngx_slab_pool_t               *shpool;
    ngx_str_t                      name;
} ngx_http_cfcost_conc_t;


/* what a request's pool cleanup uncounts */
typedef struct {
    ngx_http_cfcost_conc_t        *conc;
    ngx_http_cfcost_conc_node_t   *node;
} ngx_http_cfcost_conc_cleanup_t;


/*
 * A reload with the same size keeps the segment: the counts of requests
 * still in flight in the old workers stay, and those workers uncount
 * them there when they finish.
 */
static ngx_int_t
ngx_http_cfcost_conc_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cfcost_conc_t  *octx = data;

    size_t                   len;
    ngx_http_cfcost_conc_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_alloc(ctx->shpool, sizeof(ngx_http_cfcost_conc_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;

    ngx_rbtree_init(&ctx->sh->rbtree, &ctx->sh->sentinel,
                    ngx_http_cfcost_keytree_insert);

    len = sizeof(" in cfcost_key_concurrency zone \"\"")
          + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in cfcost_key_concurrency zone "
                "\"%V\"%Z", &shm_zone->shm.name);

    ctx->shpool->log_nomem = 0;            /* a full zone is logged here */

    return NGX_OK;
}


/* the zone, made once: by cfcost_key_concurrency_zone, or at its default */
ngx_int_t
ngx_http_cfcost_conc_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf, ssize_t size)
{
    ngx_str_t                name = ngx_string("cfcost_key_concurrency");
    ngx_http_cfcost_conc_t  *ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_cfcost_conc_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    mcf->conc_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_cfcost_module);
    if (mcf->conc_zone == NULL) {
        return NGX_ERROR;
    }

    if (mcf->conc_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_key_concurrency zone is already defined");
        return NGX_ERROR;
    }

    ctx->name = name;
    mcf->conc_zone->init = ngx_http_cfcost_conc_init_zone;
    mcf->conc_zone->data = ctx;

    return NGX_OK;
}


/* cfcost_key_concurrency number | off: requests in flight per key */
char *
ngx_http_cfcost_key_concurrency(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cfcost_loc_conf_t  *lcf = conf;

    ngx_int_t                     n;
    ngx_str_t                    *value;
    ngx_http_cfcost_main_conf_t  *mcf;

    if (lcf->key_concurrency != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        n = 0;

    } else {
        n = ngx_atoi(value[1].data, value[1].len);

        if (n == NGX_ERROR || n > 1000000) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in "
                               "\"cfcost_key_concurrency\" (expected off "
                               "or a number of requests, 0 to 1000000)",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    lcf->key_concurrency = n;

    if (n) {
        /* the zone is made with the main configuration, if not before */
        mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cfcost_module);
        mcf->conc_used = 1;
    }

    return NGX_CONF_OK;
}


/* cfcost_key_concurrency_zone size */
char *
ngx_http_cfcost_key_concurrency_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (mcf->conc_zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    size = ngx_parse_size(&value[1]);

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_key_concurrency_zone: invalid or too "
                           "small size \"%V\" (at least %uz)", &value[1],
                           8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cfcost_conc_init_conf(cf, mcf, size) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the request is over: one fewer in flight for its key */
static void
ngx_http_cfcost_conc_cleanup(void *data)
{
    ngx_http_cfcost_conc_cleanup_t  *cln = data;

    ngx_http_cfcost_conc_t       *conc;
    ngx_http_cfcost_conc_node_t  *cn;

    conc = cln->conc;
    cn = cln->node;

    ngx_shmtx_lock(&conc->shpool->mutex);

    if (--cn->count == 0) {
        ngx_rbtree_delete(&conc->sh->rbtree, &cn->tn.node);
        ngx_slab_free_locked(conc->shpool, cn);
    }

    ngx_shmtx_unlock(&conc->shpool->mutex);
}


/* sends the refusal: returns NGX_DONE, as send_error does */
static ngx_int_t
ngx_http_cfcost_conc_refuse(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t status, ngx_uint_t max)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h != NULL) {
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    ngx_str_set(&ctx->error, "concurrency_limit");

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        return ngx_http_cfcost_send_error(r, ctx, status,
                   "this API key already has %ui requests in flight, the "
                   "most it may have; retry when one has finished", max);
    }

    return ngx_http_cfcost_send_error(r, ctx, status,
               "the gateway cannot count more API keys with requests in "
               "flight right now; try again shortly");
}


/*
 * Counts the request against its key's cap (max; 0: no cap).  Returns
 * NGX_OK when it may go on (counted until its pool goes), or NGX_DONE
 * when it was refused (the answer sent).
 */
ngx_int_t
ngx_http_cfcost_conc_enter(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t max)
{
    size_t                           n;
    ngx_pool_cleanup_t              *cln;
    ngx_http_cfcost_conc_t          *conc;
    ngx_http_cfcost_conc_node_t     *cn;
    ngx_http_cfcost_main_conf_t     *mcf;
    ngx_http_cfcost_conc_cleanup_t  *cc;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cfcost_module);

    if (max == 0 || mcf->conc_zone == NULL) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_cfcost_conc_cleanup_t));
    if (cln == NULL) {
        return ngx_http_cfcost_send_error(r, ctx,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "out of memory");
    }

    conc = mcf->conc_zone->data;

    ngx_shmtx_lock(&conc->shpool->mutex);

    cn = ngx_http_cfcost_keytree_find(&conc->sh->rbtree, ctx->key_hash);

    if (cn == NULL) {
        cn = ngx_slab_alloc_locked(conc->shpool,
                                   sizeof(ngx_http_cfcost_conc_node_t));
        if (cn == NULL) {
            ngx_shmtx_unlock(&conc->shpool->mutex);

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "cfcost: the \"%V\" zone is full: request of key "
                          "\"%V\" refused (make cfcost_key_concurrency_zone "
                          "larger)", &conc->name, &ctx->key_id);

            return ngx_http_cfcost_conc_refuse(r, ctx,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               max);
        }

        cn->count = 0;
        ngx_http_cfcost_keytree_add(&conc->sh->rbtree, &cn->tn,
                                    ctx->key_hash);
    }

    n = cn->count;

    if (n >= max) {
        ngx_shmtx_unlock(&conc->shpool->mutex);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cfcost: key \"%V\" has %uz requests in flight, "
                      "cfcost_key_concurrency %ui: 429", &ctx->key_id, n,
                      max);

        return ngx_http_cfcost_conc_refuse(r, ctx,
                                           NGX_HTTP_TOO_MANY_REQUESTS, max);
    }

    cn->count++;

    ngx_shmtx_unlock(&conc->shpool->mutex);

    cc = cln->data;
    cc->conc = conc;
    cc->node = cn;
    cln->handler = ngx_http_cfcost_conc_cleanup;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "cfcost: key \"%V\": %uz of %ui in flight",
                   &ctx->key_id, n + 1, max);

    return NGX_OK;
}
