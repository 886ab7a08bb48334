/*
 * ngx_http_cfcost_module: what the module's files share.
 *
 *   _module.c     directives, configuration, process init/exit
 *   _auth.c       API keys: extraction, SHA-256, shared cache, Redis lookup
 *   _conc.c       requests in flight per key (cfcost_key_concurrency)
 *   _redis.c      hiredis on nginx's event loop, one connection each
 *   _writer.c     the record queue and this worker's record stream
 *   _handler.c    access phase: auth, body, request checks; /api/ai/models
 *   _body.c       the request body in one piece, held once
 *   _filter.c     header/body filters: usage, cost, response rewriting
 *   _record.c     log phase: one usage record per request
 *   _variables.c  $cfcost_* variables
 */

#ifndef NGX_HTTP_CFCOST_MODULE_H
#define NGX_HTTP_CFCOST_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_usage.h"
#include "cfcost_estimate.h"
#include "cfcost_sse.h"
#include "cfcost_redis_auth.h"


#define NGX_HTTP_CFCOST_OFF         0
#define NGX_HTTP_CFCOST_CHAT        1
#define NGX_HTTP_CFCOST_USAGE       2       /* identity for the aggregator */
#define NGX_HTTP_CFCOST_NATIVE      3       /* Cloudflare's own API */
#define NGX_HTTP_CFCOST_OPENAI      4       /* OpenAI-compatible */
#define NGX_HTTP_CFCOST_STATUS      5       /* the writer's counters */

#define NGX_HTTP_CFCOST_HASH_LEN    32       /* SHA-256 */
#define NGX_HTTP_CFCOST_ID_LEN      32       /* request id, hex */
#define NGX_HTTP_CFCOST_NAME_MAX    128      /* key id, user name */

/* records Redis refuses for good, relative to nginx's prefix */
#define NGX_HTTP_CFCOST_DEAD_LETTER "logs/cfcost_dead_letter.resp"


typedef struct {
    ngx_str_t                   pricing_path;
    cfcost_price_table_t       *prices;
    ngx_str_t                   models_json;    /* /api/ai/models body */
    ngx_str_t                   models_openai;  /* /v1/models body */

    ngx_str_t                   redis_addr;     /* as configured */
    ngx_str_t                   redis_unix;     /* NUL-terminated, or "" */
    ngx_str_t                   redis_host;     /* NUL-terminated IP */
    ngx_int_t                   redis_port;
    ngx_msec_t                  redis_timeout;
    cfcost_redis_auth_t        *redis_auth;     /* NULL: no AUTH */

    ngx_shm_zone_t             *cache_zone;
    ngx_msec_t                  cache_ttl;
    ngx_msec_t                  cache_stale;

    ngx_shm_zone_t             *conc_zone;      /* requests in flight per
                                                   key */
    ngx_uint_t                  conc_used;      /* a cap is set somewhere */

    ngx_str_t                   account_id;
    u_char                      admin_hash[NGX_HTTP_CFCOST_HASH_LEN];
    ngx_uint_t                  has_admin;
    u_char                      metrics_hash[NGX_HTTP_CFCOST_HASH_LEN];
    ngx_uint_t                  has_metrics;
    ngx_uint_t                  queue_max;
    ngx_msec_t                  record_drain;   /* exiting with records */
    ngx_msec_t                  record_linger;  /* fewer, fuller entries */
    ngx_shm_zone_t             *stats_zone;     /* writer counters */
    ngx_str_t                   dead_letter;    /* NUL-terminated path */
    ngx_str_t                   spool_dir;      /* "": no spool */
    off_t                       spool_max;      /* per worker file */
    ngx_uint_t                  spool_refuse;   /* when_full=refuse */
    ngx_uint_t                  used;           /* a location enables us */
} ngx_http_cfcost_main_conf_t;


typedef struct {
    ngx_uint_t                  route;
    size_t                      response_max;
    ngx_uint_t                  key_concurrency; /* 0: no cap */
    ngx_uint_t                  models_openai;  /* cfcost_models openai */
} ngx_http_cfcost_loc_conf_t;


typedef struct ngx_http_cfcost_lookup_s  ngx_http_cfcost_lookup_t;


typedef struct {
    u_char                      request_id[NGX_HTTP_CFCOST_ID_LEN];
    u_char                      key_hash[NGX_HTTP_CFCOST_HASH_LEN];

    ngx_str_t                   key_id;
    ngx_str_t                   user;
    ngx_str_t                   model;
    ngx_str_t                   model_asked;    /* an unpriced model's name */
    ngx_str_t                   error;          /* for the record */
    const cfcost_model_t       *price;

    ngx_str_t                   upstream_uri;
    ngx_str_t                   upstream_body;

    ngx_http_cfcost_lookup_t   *lookup;         /* Redis lookup in flight */

    uint32_t                    rpm;            /* the key's limit, 0: none */
    uint32_t                    user_rpm;       /* its user's */
    uint32_t                    rl_limit;       /* the tightest, as checked;
                                                   0: not checked */
    uint32_t                    rl_remaining;
    ngx_msec_t                  rl_reset;       /* ms until full again */

    u_char                     *resp;           /* upstream body so far */
    size_t                      resp_len;
    size_t                      resp_cap;

    cfcost_sse_t               *sse;            /* a streamed response */
    u_char                     *held;           /* bytes not yet sent */
    size_t                      held_len;
    size_t                      held_cap;
    ngx_chain_t                *free;           /* the stream's copies, */
    ngx_chain_t                *busy;           /* recycled once sent */
    size_t                      copy_size;      /* a recycled copy's size */
    void                       *edits;          /* a buffer's edits, when
                                                   more than a few */
    ngx_uint_t                  edits_cap;
    size_t                      prompt_bytes;   /* for the estimator */
    uint64_t                    text_bytes;     /* generated text seen */
    cfcost_text_t              *text;           /* counting it past
                                                   response_max */
    u_char                     *usage_ev;       /* the last OpenAI usage
                                                   chunk, withheld */
    size_t                      usage_ev_len;
    size_t                      usage_ev_cap;

    ngx_int_t                 (*input_init)(void *data); /* proxy's */
    ngx_event_pipe_input_filter_pt  pipe_input;
    ngx_int_t                 (*input_filter)(void *data, ssize_t bytes);

    uint64_t                    input;
    uint64_t                    output;
    uint64_t                    cached;
    uint64_t                    cost;           /* picodollars */
    double                      neurons;

    ngx_uint_t                  upstream_status;
    ngx_uint_t                  status;         /* sent to the client */
    uint64_t                    start_us;       /* access phase entered */

    unsigned                    authenticated:1;
    unsigned                    counted:1;      /* key concurrency done */
    unsigned                    admin:1;        /* the admin token */
    unsigned                    metrics:1;      /* the metrics token */
    unsigned                    waiting:1;      /* key lookup pending */
    unsigned                    rate_checked:1; /* rate limits decided */
    unsigned                    rate_waiting:1; /* their script pending */
    unsigned                    rl_headers:1;   /* x-ratelimit-* added */
    unsigned                    body_requested:1;
    unsigned                    body_read:1;
    unsigned                    reading:1;      /* inside read_body call */
    unsigned                    checked:1;      /* request passed checks */
    unsigned                    own_response:1; /* our JSON, pass as is */
    unsigned                    rewrite:1;      /* body filter rewrites */
    unsigned                    nginx_error:1;  /* nginx's own error page */
    unsigned                    encoded:1;      /* upstream compressed */
    unsigned                    too_large:1;    /* over response_max */
    unsigned                    truncated:1;    /* upstream broke off */
    unsigned                    stream:1;       /* client asked to stream */
    unsigned                    usage_added:1;  /* we asked for usage */
    unsigned                    sse_end:1;      /* the stream completed */
    unsigned                    estimated:1;
    unsigned                    usage_known:1;
    unsigned                    has_neurons:1;
    unsigned                    usage_bad:1;    /* counts out of range */
    unsigned                    done:1;         /* response body complete */
    unsigned                    bad_framing:1;  /* upstream's chunked
                                                   framing broke */
    unsigned                    billed:1;       /* cost final: settled or
                                                   found not billable */
    unsigned                    sse_done:1;     /* [DONE] went out */
    unsigned                    usage_ev_eol:2;
} ngx_http_cfcost_ctx_t;


extern ngx_module_t  ngx_http_cfcost_module;


/* _token.c */
char *ngx_http_cfcost_admin_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_cfcost_redis_auth_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_cfcost_metrics_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* _pricing.c */
char *ngx_http_cfcost_pricing(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* _error.c */
ngx_int_t ngx_http_cfcost_send_error(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t status, const char *fmt, ...);
ngx_buf_t *ngx_http_cfcost_error_buf(ngx_http_request_t *r,
    ngx_uint_t status, u_char *msg, size_t len);
void ngx_http_cfcost_error_name(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t status);
u_char *ngx_http_cfcost_json_escape(u_char *dst, u_char *src, size_t len);
size_t ngx_http_cfcost_json_escape_len(u_char *src, size_t len);
const char *ngx_http_cfcost_status_detail(ngx_uint_t status);
ngx_int_t ngx_http_cfcost_error_page_handler(ngx_http_request_t *r);

/* _keytree.c: shared-memory rbtrees keyed by an API key's SHA-256 */
typedef struct {
    ngx_rbtree_node_t           node;           /* key: the hash's first
                                                   bytes */
    u_char                      hash[NGX_HTTP_CFCOST_HASH_LEN];
} ngx_http_cfcost_keytree_node_t;

void ngx_http_cfcost_keytree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
void *ngx_http_cfcost_keytree_find(ngx_rbtree_t *tree, u_char *hash);
void ngx_http_cfcost_keytree_add(ngx_rbtree_t *tree,
    ngx_http_cfcost_keytree_node_t *kn, u_char *hash);

/* _auth.c */
ngx_int_t ngx_http_cfcost_cache_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf, ssize_t size);
ngx_int_t ngx_http_cfcost_authenticate(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t admin_ok);

ngx_int_t ngx_http_cfcost_auth_init_process(ngx_cycle_t *cycle,
    ngx_http_cfcost_main_conf_t *mcf);
struct ngx_http_cfcost_redis_s *ngx_http_cfcost_lookups_conn(void);

/* _rate.c */
ngx_int_t ngx_http_cfcost_rate_check(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx);
ngx_int_t ngx_http_cfcost_rate_headers(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx);
void ngx_http_cfcost_auth_exit_process(ngx_cycle_t *cycle);

/* _conc.c */
char *ngx_http_cfcost_key_concurrency(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_cfcost_key_concurrency_zone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_cfcost_conc_init_conf(ngx_conf_t *cf,
    ngx_http_cfcost_main_conf_t *mcf, ssize_t size);
ngx_int_t ngx_http_cfcost_conc_enter(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t max);

static ngx_inline uint64_t
ngx_http_cfcost_now_us(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (uint64_t) tv.tv_sec * 1000000 + tv.tv_usec;
}

/* _body.c */
ngx_int_t ngx_http_cfcost_body_bytes(ngx_http_request_t *r, ngx_str_t *body);
void ngx_http_cfcost_body_cut(ngx_http_request_t *r, ngx_str_t *body,
    size_t s, size_t e);
void ngx_http_cfcost_body_release(ngx_http_request_t *r, ngx_str_t *body,
    ngx_str_t *copy);

/* _handler.c */
ngx_http_cfcost_ctx_t *ngx_http_cfcost_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_cfcost_access_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_cfcost_models_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_cfcost_status_handler(ngx_http_request_t *r);

/* _filter.c */
ngx_int_t ngx_http_cfcost_filter_init(ngx_conf_t *cf);

/* _upstream.c */
void ngx_http_cfcost_wrap_input(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx);
void ngx_http_cfcost_allow_headers(ngx_http_request_t *r);
ngx_uint_t ngx_http_cfcost_upstream_broke(ngx_http_request_t *r,
    ngx_chain_t *in);

/* _cost.c */
void ngx_http_cfcost_bill(ngx_http_request_t *r, ngx_http_cfcost_ctx_t *ctx,
    ngx_uint_t status);
u_char *ngx_http_cfcost_insert_cost(u_char *dst, u_char *json, size_t len,
    size_t s, size_t e, u_char *usd, size_t usd_len);

/* _events.c */
#define NGX_HTTP_CFCOST_EV_OTHER    0
#define NGX_HTTP_CFCOST_EV_DONE     1     /* data: [DONE] */
#define NGX_HTTP_CFCOST_EV_USAGE    2     /* usage only: withheld on the
                                             OpenAI route */

ngx_uint_t ngx_http_cfcost_stream_event(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, cfcost_sse_event_t *ev);
ngx_int_t ngx_http_cfcost_stream_ours(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_uint_t eol, ngx_buf_t **b);

/* _stream.c */
ngx_int_t ngx_http_cfcost_stream_start(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx);
ngx_int_t ngx_http_cfcost_stream_filter(ngx_http_request_t *r,
    ngx_http_cfcost_ctx_t *ctx, ngx_chain_t *in,
    ngx_http_output_body_filter_pt next);

/* _record.c */
ngx_int_t ngx_http_cfcost_log_handler(ngx_http_request_t *r);

/* _variables.c */
ngx_int_t ngx_http_cfcost_add_variables(ngx_conf_t *cf);

#endif /* NGX_HTTP_CFCOST_MODULE_H */
