/*
 * $cfcost_* variables: the request's identity, usage and cost for
 * log_format, and the upstream path and body for proxy_pass.
 */

#include "ngx_http_cfcost_module.h"


enum {
    NGX_HTTP_CFCOST_VAR_REQUEST_ID = 0,
    NGX_HTTP_CFCOST_VAR_KEY_ID,
    NGX_HTTP_CFCOST_VAR_USER,
    NGX_HTTP_CFCOST_VAR_MODEL,
    NGX_HTTP_CFCOST_VAR_INPUT,
    NGX_HTTP_CFCOST_VAR_OUTPUT,
    NGX_HTTP_CFCOST_VAR_COST,
    NGX_HTTP_CFCOST_VAR_UPSTREAM_URI,
    NGX_HTTP_CFCOST_VAR_UPSTREAM_BODY,
    NGX_HTTP_CFCOST_VAR_ADMIN
};


static ngx_int_t ngx_http_cfcost_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_cfcost_vars[] = {

    { ngx_string("cfcost_request_id"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_REQUEST_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_key_id"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_KEY_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_user"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_USER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_model"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_input_tokens"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_INPUT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_output_tokens"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_OUTPUT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_cost_usd"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_COST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_upstream_uri"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_UPSTREAM_URI, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_upstream_body"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_UPSTREAM_BODY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cfcost_admin"), NULL, ngx_http_cfcost_variable,
      NGX_HTTP_CFCOST_VAR_ADMIN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_cfcost_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_cfcost_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cfcost_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                 *p;
    ngx_str_t               s;
    ngx_http_cfcost_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_cfcost_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_str_null(&s);

    switch (data) {

    case NGX_HTTP_CFCOST_VAR_REQUEST_ID:
        if (ctx->request_id[0]) {
            s.data = ctx->request_id;
            s.len = NGX_HTTP_CFCOST_ID_LEN;
        }
        break;

    case NGX_HTTP_CFCOST_VAR_KEY_ID:
        s = ctx->key_id;
        break;

    case NGX_HTTP_CFCOST_VAR_USER:
        s = ctx->user;
        break;

    case NGX_HTTP_CFCOST_VAR_MODEL:
        s = ctx->model;
        break;

    case NGX_HTTP_CFCOST_VAR_UPSTREAM_URI:
        s = ctx->upstream_uri;
        break;

    case NGX_HTTP_CFCOST_VAR_UPSTREAM_BODY:
        s = ctx->upstream_body;
        break;

    case NGX_HTTP_CFCOST_VAR_ADMIN:
        if (ctx->admin) {
            ngx_str_set(&s, "1");

        } else if (ctx->metrics) {
            ngx_str_set(&s, "metrics");
        }
        break;

    default:                           /* usage: known once the body is */
        if (!ctx->usage_known) {
            break;
        }

        p = ngx_pnalloc(r->pool, 32);
        if (p == NULL) {
            return NGX_ERROR;
        }

        s.data = p;

        if (data == NGX_HTTP_CFCOST_VAR_COST) {
            s.len = cfcost_usd6((char *) p, ctx->cost);

        } else {
            s.len = ngx_sprintf(p, "%uL",
                                data == NGX_HTTP_CFCOST_VAR_INPUT
                                ? ctx->input : ctx->output) - p;
        }
    }

    if (s.data == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s.data;
    v->len = s.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
