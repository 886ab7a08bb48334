/*
 * The operators' secrets, each read from a file at configuration time: the
 * admin token (sees every user's usage) and the metrics token (reads
 * /metrics, nothing else), kept as their SHA-256 only (_auth.c compares),
 * and the credentials the workers give Redis (_redis.c sends AUTH).
 */

#include <ctype.h>

#include "ngx_http_cfcost_module.h"
#include "cfcost_keys.h"


/*
 * Reads a token file for a directive: one token of 16 to 1000 characters,
 * surrounding white space ignored; only its SHA-256 is kept, as API keys'
 * are (compared with their hash in _auth.c).
 */
static char *
ngx_http_cfcost_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, u_char *hash)
{
    u_char      buf[1024], *p, *last;
    ssize_t     n;
    ngx_str_t   name;
    ngx_file_t  file;

    name = *value;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = name;
    file.log = cf->log;

    file.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%V: cannot open \"%V\"", &cmd->name, &name);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(file.fd, buf, sizeof(buf));
    ngx_close_file(file.fd);

    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%V: cannot read \"%V\"", &cmd->name, &name);
        return NGX_CONF_ERROR;
    }

    p = buf;
    last = buf + n;

    while (p < last && isspace(*p)) { p++; }
    while (last > p && isspace(last[-1])) { last--; }

    if (last - p < 16 || (size_t) n == sizeof(buf)) {
        ngx_explicit_memzero(buf, sizeof(buf));
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"%V\" must hold one token of 16 to 1000 "
                           "characters", &cmd->name, &name);
        return NGX_CONF_ERROR;
    }

    if (cfcost_keys_sha256((char *) p, last - p, hash) != 0) {
        ngx_explicit_memzero(buf, sizeof(buf));
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_CONF_OK;
}


/* cfcost_admin_token_file path: the token that sees every user's usage */
char *
ngx_http_cfcost_admin_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    ngx_str_t  *value;

    if (mcf->has_admin) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_cfcost_token_file(cf, cmd, &value[1], mcf->admin_hash)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mcf->has_admin = 1;

    return NGX_CONF_OK;
}


/*
 * cfcost_metrics_token_file path: a token that reads /metrics and nothing
 * else (Prometheus's authorization), so that scraping needs no admin.
 */
char *
ngx_http_cfcost_metrics_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    ngx_str_t  *value;

    if (mcf->has_metrics) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_cfcost_token_file(cf, cmd, &value[1], mcf->metrics_hash)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    mcf->has_metrics = 1;

    return NGX_CONF_OK;
}


static void
ngx_http_cfcost_redis_auth_cleanup(void *data)
{
    cfcost_redis_auth_wipe(data);
}


/*
 * cfcost_redis_auth_file path: "USER PASSWORD" (an ACL user) or "PASSWORD"
 * (requirepass), sent with AUTH on every connection to Redis.  The rules
 * (the file closed to "other" among them) are the aggregator's and the
 * CLI's: cfcost_redis_auth.h.
 */
char *
ngx_http_cfcost_redis_auth_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cfcost_main_conf_t  *mcf = conf;

    char                 err[NGX_MAX_PATH + 256];
    ngx_str_t           *value, name;
    ngx_pool_cleanup_t  *cln;

    if (mcf->redis_auth) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, sizeof(cfcost_redis_auth_t));
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->redis_auth = cln->data;
    cln->handler = ngx_http_cfcost_redis_auth_cleanup;

    if (cfcost_redis_auth_load((char *) name.data, mcf->redis_auth, err,
                               sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V: %s", &cmd->name, err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
