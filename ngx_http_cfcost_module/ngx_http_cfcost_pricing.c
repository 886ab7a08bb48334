/*
 * The price table: the cfcost_pricing directive loads it (common/
 * cfcost_price.c reads the file) and renders, once, the model lists
 * /api/ai/models and /v1/models serve (common/cfcost_models.c: the bytes
 * `cfcost models --json` prints).
 */

#include "ngx_http_cfcost_module.h"
#include "cfcost_models.h"


static void
ngx_http_cfcost_free_prices(void *data)
{
    cfcost_price_table_t  *t = data;

    cfcost_price_free(t);
}


/* renders the /api/ai/models body once, at configuration time */
static ngx_int_t
ngx_http_cfcost_render_models(ngx_conf_t *cf, ngx_http_cfcost_main_conf_t *mcf)
{
    size_t       i, len;
    ngx_str_t   *out[2];

    /* the same bytes as `cfcost models --json`: common/cfcost_models.h */
    out[CFCOST_MODELS_CFCOST] = &mcf->models_json;
    out[CFCOST_MODELS_OPENAI] = &mcf->models_openai;

    for (i = 0; i < 2; i++) {
        len = cfcost_models_len(mcf->prices, (int) i);

        out[i]->data = ngx_pnalloc(cf->pool, len);
        if (out[i]->data == NULL) {
            return NGX_ERROR;
        }

        out[i]->len = (u_char *) cfcost_models_write((char *) out[i]->data,
                                                     mcf->prices, (int) i)
                      - out[i]->data;
    }

    return NGX_OK;
}


char *
ngx_http_cfcost_pricing(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    char                   err[256];
    u_char                *data;
    ssize_t                n;
    ngx_str_t             *value;
    ngx_file_t             file;
    ngx_file_info_t        fi;
    ngx_pool_cleanup_t    *cln;
    cfcost_price_table_t  *t;

    if (mcf->prices != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mcf->pricing_path = value[1];

    if (ngx_conf_full_name(cf->cycle, &mcf->pricing_path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = mcf->pricing_path;
    file.log = cf->log;

    file.fd = ngx_open_file(file.name.data, NGX_FILE_RDONLY,
                            NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cfcost_pricing: cannot open \"%V\"", &file.name);
        return NGX_CONF_ERROR;
    }

    data = NULL;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cfcost_pricing: cannot stat \"%V\"", &file.name);
        goto failed;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_pricing: \"%V\" is not a regular file",
                           &file.name);
        goto failed;
    }

    if (ngx_file_size(&fi) > 16 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_pricing: \"%V\" is larger than 16M",
                           &file.name);
        goto failed;
    }

    data = ngx_pnalloc(cf->temp_pool, (size_t) ngx_file_size(&fi) + 1);
    if (data == NULL) {
        goto failed;
    }

    n = ngx_read_file(&file, data, (size_t) ngx_file_size(&fi), 0);
    if (n != (ssize_t) ngx_file_size(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_pricing: cannot read \"%V\"", &file.name);
        goto failed;
    }

    ngx_close_file(file.fd);
    file.fd = NGX_INVALID_FILE;

    t = ngx_pcalloc(cf->pool, sizeof(cfcost_price_table_t));
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    if (cfcost_price_load((char *) data, (size_t) n, t, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cfcost_pricing: invalid price file \"%V\": %s",
                           &file.name, err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        cfcost_price_free(t);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_cfcost_free_prices;
    cln->data = t;
    mcf->prices = t;

    if (ngx_http_cfcost_render_models(cf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

failed:

    if (file.fd != NGX_INVALID_FILE) {
        ngx_close_file(file.fd);
    }

    return NGX_CONF_ERROR;
}
