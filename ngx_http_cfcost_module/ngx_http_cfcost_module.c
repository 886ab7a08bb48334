/*
 * ngx_http_cfcost_module: the module's definition, its directives and
 * configuration, and the process hooks.  The files it starts are listed in
 * CONTRIBUTING.md, in the order a request meets them.
 */

#include "ngx_http_cfcost_module.h"
#include "cfcost_addr.h"
#include "ngx_http_cfcost_writer.h"


static ngx_int_t ngx_http_cfcost_init(ngx_conf_t *cf);
static void *ngx_http_cfcost_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_cfcost_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_cfcost_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cfcost_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_cfcost_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_key_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_account_id(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_models(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_error_page(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cfcost_spool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_cfcost_init_process(ngx_cycle_t *cycle);
static void ngx_http_cfcost_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_cfcost_queue_bounds = {
    ngx_conf_check_num_bounds, 1, 10000000
};


static ngx_command_t  ngx_http_cfcost_commands[] = {

    { ngx_string("cfcost_pricing"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_pricing,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cfcost_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("cfcost_redis_auth_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_redis_auth_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_cfcost_key_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_key_concurrency"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_key_concurrency,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_key_concurrency_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_key_concurrency_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_account_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_account_id,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_admin_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_admin_token_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_metrics_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_metrics_token_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_record_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cfcost_main_conf_t, queue_max),
      &ngx_http_cfcost_queue_bounds },

    { ngx_string("cfcost_record_drain"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cfcost_main_conf_t, record_drain),
      NULL },

    { ngx_string("cfcost_record_linger"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cfcost_main_conf_t, record_linger),
      NULL },

    { ngx_string("cfcost_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_cfcost_spool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_dead_letter"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cfcost_main_conf_t, dead_letter),
      NULL },

    { ngx_string("cfcost_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_cfcost_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_error_page"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_cfcost_error_page,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cfcost_route,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_models"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_cfcost_models,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cfcost_response_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cfcost_loc_conf_t, response_max),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cfcost_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_cfcost_init,                  /* postconfiguration */

    ngx_http_cfcost_create_main_conf,      /* create main configuration */
    ngx_http_cfcost_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_cfcost_create_loc_conf,       /* create location configuration */
    ngx_http_cfcost_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_cfcost_module = {
    NGX_MODULE_V1,
    &ngx_http_cfcost_module_ctx,           /* module context */
    ngx_http_cfcost_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_cfcost_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cfcost_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_cfcost_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt          *h;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    if (ngx_http_cfcost_add_variables(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cfcost_module);

    if (!mcf->used) {
        return NGX_OK;              /* nothing to pay for where unused */
    }

    if (mcf->prices == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cfcost\" is used but \"cfcost_pricing\" "
                           "is not set");
        return NGX_ERROR;
    }

    if (mcf->account_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cfcost\" is used but \"cfcost_account_id\" "
                           "is not set");
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_cfcost_access_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_cfcost_log_handler;

    return ngx_http_cfcost_filter_init(cf);
}


static void *
ngx_http_cfcost_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_cfcost_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cfcost_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->pricing_path = { 0, NULL };
     *     mcf->prices = NULL;
     *     mcf->redis_addr = { 0, NULL };
     *     mcf->cache_zone = NULL;
     *     mcf->account_id = { 0, NULL };
     *     mcf->used = 0;
     */

    mcf->redis_port = NGX_CONF_UNSET;
    mcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    mcf->cache_ttl = NGX_CONF_UNSET_MSEC;
    mcf->cache_stale = NGX_CONF_UNSET_MSEC;
    mcf->queue_max = NGX_CONF_UNSET_UINT;
    mcf->record_drain = NGX_CONF_UNSET_MSEC;
    mcf->record_linger = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_cfcost_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    ngx_str_t  dflt = ngx_string("127.0.0.1:6379");
    ngx_str_t  dead = ngx_string(NGX_HTTP_CFCOST_DEAD_LETTER);

    if (mcf->redis_addr.len == 0) {
        mcf->redis_addr = dflt;
        ngx_str_set(&mcf->redis_host, "127.0.0.1");
        mcf->redis_port = 6379;
    }

    ngx_conf_init_msec_value(mcf->redis_timeout, 1000);
    ngx_conf_init_msec_value(mcf->cache_ttl, 1000);
    ngx_conf_init_msec_value(mcf->cache_stale, 300000);
    ngx_conf_init_uint_value(mcf->queue_max, 100000);
    ngx_conf_init_msec_value(mcf->record_drain, 30000);
    ngx_conf_init_msec_value(mcf->record_linger, 1);

    if (mcf->dead_letter.len == 0) {
        mcf->dead_letter = dead;
    }

    /* a NUL-terminated full path, for open() in a worker */
    if (ngx_conf_full_name(cf->cycle, &mcf->dead_letter, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (mcf->stats_zone == NULL
        && ngx_http_cfcost_writer_init_conf(cf, mcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (mcf->cache_zone == NULL
        && ngx_http_cfcost_cache_init_conf(cf, mcf, 10 * 1024 * 1024)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* 1m counts about 8,000 keys with requests in flight at once */
    if (mcf->conc_zone == NULL && mcf->conc_used
        && ngx_http_cfcost_conc_init_conf(cf, mcf, 1024 * 1024) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_cfcost_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_cfcost_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cfcost_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    lcf->route = NGX_CONF_UNSET_UINT;
    lcf->response_max = NGX_CONF_UNSET_SIZE;
    lcf->key_concurrency = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_cfcost_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_cfcost_loc_conf_t  *prev = parent;
    ngx_http_cfcost_loc_conf_t  *conf = child;

    ngx_conf_merge_uint_value(conf->route, prev->route, NGX_HTTP_CFCOST_OFF);
    ngx_conf_merge_size_value(conf->response_max, prev->response_max,
                              4 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->key_concurrency, prev->key_concurrency,
                              0);

    return NGX_CONF_OK;
}


/*
 * cfcost_redis unix:/path | IP:PORT | HOST:PORT.  Host names are resolved
 * here, once: hiredis would resolve them with a blocking getaddrinfo().
 */
static char *
ngx_http_cfcost_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    char           err[512];
    ngx_str_t     *value;
    cfcost_addr_t  a;

    if (mcf->redis_addr.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mcf->redis_addr = value[1];

    /* one rule set with the aggregator and the CLI (cfcost_addr.h); a
     * host name is resolved now, never in a worker */
    if (cfcost_addr_parse((char *) value[1].data, value[1].len, &a,
                          err, sizeof(err)) != 0
        || cfcost_addr_resolve(&a, err, sizeof(err)) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "cfcost_redis: %s", err);
        return NGX_CONF_ERROR;
    }

    if (a.kind == CFCOST_ADDR_UNIX) {
        mcf->redis_unix.len = ngx_strlen(a.path);
        mcf->redis_unix.data = ngx_pnalloc(cf->pool,
                                           mcf->redis_unix.len + 1);
        if (mcf->redis_unix.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(mcf->redis_unix.data, a.path, mcf->redis_unix.len + 1);

        return NGX_CONF_OK;
    }

    mcf->redis_host.len = ngx_strlen(a.host);
    mcf->redis_host.data = ngx_pnalloc(cf->pool, mcf->redis_host.len + 1);
    if (mcf->redis_host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(mcf->redis_host.data, a.host, mcf->redis_host.len + 1);
    mcf->redis_port = a.port;

    return NGX_CONF_OK;
}


/* cfcost_key_cache size=10m [ttl=1s] [stale=5m] */
static char *
ngx_http_cfcost_key_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    ssize_t     size;
    ngx_str_t  *value, s;
    ngx_int_t   ms;
    ngx_uint_t  i;

    if (mcf->cache_zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    size = 10 * 1024 * 1024;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            s.len = value[i].len - 5;
            s.data = value[i].data + 5;
            size = ngx_parse_size(&s);

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "cfcost_key_cache: invalid or too small "
                                   "size \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0
            || ngx_strncmp(value[i].data, "stale=", 6) == 0)
        {
            s.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            s.len = value[i].data + value[i].len - s.data;
            ms = ngx_parse_time(&s, 0);

            if (ms == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "cfcost_key_cache: invalid time \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            if (value[i].data[0] == 't') {
                mcf->cache_ttl = (ngx_msec_t) ms;
            } else {
                mcf->cache_stale = (ngx_msec_t) ms;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_key_cache: invalid parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_cfcost_cache_init_conf(cf, mcf, size) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_cfcost_account_id(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (mcf->account_id.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!(isalnum(*p) || *p == '-' || *p == '_')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cfcost_account_id: \"%V\" is not an account "
                               "id (letters, digits, \"-\" and \"_\")",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0) {
        return "must not be empty";
    }

    mcf->account_id = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_cfcost_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_loc_conf_t  *lcf = conf;

    ngx_str_t                    *value;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    if (lcf->route != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "chat") == 0) {
        lcf->route = NGX_HTTP_CFCOST_CHAT;

    } else if (ngx_strcmp(value[1].data, "usage") == 0) {
        lcf->route = NGX_HTTP_CFCOST_USAGE;

    } else if (ngx_strcmp(value[1].data, "native") == 0) {
        lcf->route = NGX_HTTP_CFCOST_NATIVE;

    } else if (ngx_strcmp(value[1].data, "openai") == 0) {
        lcf->route = NGX_HTTP_CFCOST_OPENAI;

    } else if (ngx_strcmp(value[1].data, "off") == 0) {
        lcf->route = NGX_HTTP_CFCOST_OFF;
        return NGX_CONF_OK;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"cfcost\" "
                           "(expected chat, openai, native, usage or off)", &value[1]);
        return NGX_CONF_ERROR;
    }

    /*
     * No error_page of an outer level applies here: its redirect would
     * drop the request's context and so its record.  This location's
     * filters answer nginx's own errors in the route's JSON themselves.
     */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->error_pages == NULL) {
        clcf->error_pages = ngx_array_create(cf->pool, 1,
                                             sizeof(ngx_http_err_page_t));
        if (clcf->error_pages == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cfcost_module);
    mcf->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_cfcost_models(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_loc_conf_t  *lcf = conf;

    ngx_str_t                    *value;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_cfcost_main_conf_t  *mcf;

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "openai") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"cfcost_models\" "
                               "(expected nothing or openai)", &value[1]);
            return NGX_CONF_ERROR;
        }

        lcf->models_openai = 1;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cfcost_models_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cfcost_module);
    if (mcf->prices == NULL) {
        return "needs \"cfcost_pricing\" set before it";
    }

    return NGX_CONF_OK;
}


/*
 * cfcost_spool DIR [max_size=SIZE] [when_full=serve|refuse]: nginx creates
 * DIR at start, owned by the workers' user (ngx_add_path).
 */
static char *
ngx_http_cfcost_spool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    off_t        max;
    ngx_str_t   *value, s;
    ngx_uint_t   i;
    ngx_path_t  *path;

    if (mcf->spool_dir.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    path = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
    if (path == NULL) {
        return NGX_CONF_ERROR;
    }

    path->name = value[1];

    while (path->name.len > 1
           && path->name.data[path->name.len - 1] == '/')
    {
        path->name.len--;
    }

    if (ngx_conf_full_name(cf->cycle, &path->name, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a NUL-terminated copy: opendir() and open() take it */
    mcf->spool_dir.data = ngx_pnalloc(cf->pool, path->name.len + 1);
    if (mcf->spool_dir.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(mcf->spool_dir.data, path->name.data, path->name.len);
    mcf->spool_dir.data[path->name.len] = '\0';
    mcf->spool_dir.len = path->name.len;

    path->conf_file = cf->conf_file->file.name.data;
    path->line = cf->conf_file->line;

    if (ngx_add_path(cf, &path) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mcf->spool_max = 64 * 1024 * 1024;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            max = ngx_parse_offset(&s);
            if (max <= 0) {
                goto invalid;
            }

            mcf->spool_max = max;
            continue;
        }

        if (ngx_strcmp(value[i].data, "when_full=serve") == 0) {
            mcf->spool_refuse = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "when_full=refuse") == 0) {
            mcf->spool_refuse = 1;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"cfcost_spool\" "
                       "(expected max_size=SIZE or when_full=serve|refuse)",
                       &value[i]);

    return NGX_CONF_ERROR;
}


/* cfcost_status: the record writer's counters, gateway-wide, as JSON */
static char *
ngx_http_cfcost_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cfcost_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_cfcost_error_page(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cfcost_error_page_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_cfcost_init_process(ngx_cycle_t *cycle)
{
    ngx_http_cfcost_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cfcost_module);
    if (mcf == NULL || !mcf->used) {
        return NGX_OK;
    }

    if (ngx_http_cfcost_auth_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_cfcost_writer_init_process(cycle, mcf);
}


static void
ngx_http_cfcost_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_cfcost_auth_exit_process(cycle);
    ngx_http_cfcost_writer_exit_process(cycle);
}
