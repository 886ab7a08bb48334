/*
 * GET /metrics (Prometheus text format 0.0.4) and GET /healthz.
 *
 * Two round trips whatever the number of records: the users set, the
 * "all" rollup, the stream length, the consumer groups and the gateway's
 * dropped counter; then one HGETALL per user, pipelined.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_out.h"
#include "cfcost_agg_rollup.h"
#include "cfcost_agg_consumer.h"
#include "cfcost_agg_routes.h"


#define CFCOST_FAMILIES  5


typedef struct {
    char             **users;
    size_t             nusers;

    cfcost_rollup_t    all;
    long long          stream_len;
    long long          dropped;

    cfcost_buf_t       pending;         /* per consumer group */
    cfcost_buf_t       lag;
    cfcost_buf_t       fam[CFCOST_FAMILIES];    /* per user and model */
} cfcost_metrics_ctx_t;


static const char  *cfcost_fam_names[CFCOST_FAMILIES] = {
    "requests", "input_tokens", "output_tokens", "cached_tokens", "cost_usd"
};

static const char  *cfcost_fam_help[CFCOST_FAMILIES] = {
    "Requests recorded",
    "Input tokens (cached included)",
    "Output tokens",
    "Cached input tokens",
    "Cost in USD (exact sum, shown to 6 decimals)"
};


static void
cfcost_metrics_ctx_free(void *p)
{
    size_t                 i;
    cfcost_metrics_ctx_t  *m = p;

    for (i = 0; i < m->nusers; i++) {
        free(m->users[i]);
    }

    for (i = 0; i < CFCOST_FAMILIES; i++) {
        cfcost_buf_free(&m->fam[i]);
    }

    free(m->users);
    cfcost_rollup_free(&m->all);
    cfcost_buf_free(&m->pending);
    cfcost_buf_free(&m->lag);
    free(m);
}


static void
cfcost_metrics_value(cfcost_buf_t *b, int fam, const cfcost_totals_t *t)
{
    uint64_t  v[4];

    v[0] = t->requests;
    v[1] = t->input;
    v[2] = t->output;
    v[3] = t->cached;

    cfcost_buf_add(b, " ", 1);

    if (fam < 4) {
        cfcost_buf_u64(b, v[fam]);
    } else {
        cfcost_json_money(b, t->usd, t->pusd);
    }

    cfcost_buf_add(b, "\n", 1);
}


/* Appends the lines of one rollup's models to the families. */
static void
cfcost_metrics_models(cfcost_buf_t *fam, const char *prefix,
    const char *user, cfcost_rollup_t *ru)
{
    int                        f;
    size_t                     i, *rank;
    const cfcost_model_row_t  *row;

    rank = cfcost_rollup_rank(ru);     /* sorts the rows by model name */
    free(rank);

    for (f = 0; f < CFCOST_FAMILIES; f++) {
        for (i = 0; i < ru->n; i++) {
            row = &ru->models[i];

            cfcost_buf_printf(&fam[f], "cfcost_%s%s_total{", prefix,
                              cfcost_fam_names[f]);
            if (user != NULL) {
                cfcost_buf_str(&fam[f], "user=");
                cfcost_prom_label(&fam[f], user, strlen(user));
                cfcost_buf_str(&fam[f], ",");
            }
            cfcost_buf_str(&fam[f], "model=");
            cfcost_prom_label(&fam[f], row->model, row->len);
            cfcost_buf_str(&fam[f], "}");
            cfcost_metrics_value(&fam[f], f, &row->t);
        }
    }
}


static void
cfcost_metrics_family(cfcost_buf_t *b, const char *name, const char *type,
    const char *help)
{
    cfcost_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                      type);
}


static void
cfcost_metrics_answer(cfcost_req_t *rq)
{
    int                    f;
    char                   name[64];
    cfcost_buf_t           b, model[CFCOST_FAMILIES];
    cfcost_agg_t          *agg = rq->agg;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    memset(&b, 0, sizeof(b));
    memset(model, 0, sizeof(model));

    cfcost_metrics_models(model, "model_", NULL, &m->all);

    for (f = 0; f < CFCOST_FAMILIES; f++) {
        snprintf(name, sizeof(name), "cfcost_%s_total", cfcost_fam_names[f]);
        cfcost_metrics_family(&b, name, "counter", cfcost_fam_help[f]);
        cfcost_buf_add(&b, m->fam[f].data, m->fam[f].len);
        b.oom |= m->fam[f].oom;
    }

    for (f = 0; f < CFCOST_FAMILIES; f++) {
        snprintf(name, sizeof(name), "cfcost_model_%s_total",
                 cfcost_fam_names[f]);
        cfcost_metrics_family(&b, name, "counter", cfcost_fam_help[f]);
        cfcost_buf_add(&b, model[f].data, model[f].len);
        b.oom |= model[f].oom;
        cfcost_buf_free(&model[f]);
    }

    cfcost_metrics_family(&b, "cfcost_stream_length", "gauge",
                          "Records held in the stream");
    cfcost_buf_printf(&b, "cfcost_stream_length %lld\n", m->stream_len);

    cfcost_metrics_family(&b, "cfcost_consumer_group_pending", "gauge",
                          "Entries delivered to a consumer, not yet "
                          "acknowledged");
    cfcost_buf_add(&b, m->pending.data, m->pending.len);
    cfcost_metrics_family(&b, "cfcost_consumer_group_lag", "gauge",
                          "Entries not yet delivered to the group");
    cfcost_buf_add(&b, m->lag.data, m->lag.len);
    b.oom |= m->pending.oom | m->lag.oom;

    cfcost_metrics_family(&b, "cfcost_gateway_records_dropped_total",
                          "counter", "Records the gateway could not keep "
                          "while Redis was unreachable");
    cfcost_buf_printf(&b, "cfcost_gateway_records_dropped_total %lld\n",
                      m->dropped);

    cfcost_metrics_family(&b, "cfcost_aggregator_records_applied_total",
                          "counter", "Records this process counted");
    cfcost_buf_printf(&b, "cfcost_aggregator_records_applied_total %llu\n",
                      (unsigned long long) agg->applied);

    cfcost_metrics_family(&b, "cfcost_aggregator_records_duplicate_total",
                          "counter", "Records this process found counted "
                          "already (same request id)");
    cfcost_buf_printf(&b, "cfcost_aggregator_records_duplicate_total %llu\n",
                      (unsigned long long) agg->duplicates);

    cfcost_metrics_family(&b, "cfcost_aggregator_records_invalid_total",
                          "counter", "Entries acknowledged without counting "
                          "(no fields, or failing to apply)");
    cfcost_buf_printf(&b, "cfcost_aggregator_records_invalid_total %llu\n",
                      (unsigned long long) agg->invalid);

    cfcost_metrics_family(&b, "cfcost_aggregator_batches_total", "counter",
                          "Batches this process applied");
    cfcost_buf_printf(&b, "cfcost_aggregator_batches_total %llu\n",
                      (unsigned long long) agg->batches);

    cfcost_metrics_family(&b, "cfcost_aggregator_redis_errors_total",
                          "counter", "Error replies from Redis");
    cfcost_buf_printf(&b, "cfcost_aggregator_redis_errors_total %llu\n",
                      (unsigned long long) agg->redis_errors);

    cfcost_metrics_family(&b, "cfcost_aggregator_consumer_up", "gauge",
                          "1 while the consumer reads the stream");
    cfcost_buf_printf(&b, "cfcost_aggregator_consumer_up %d\n",
                      cfcost_consumer_ready(agg->consumer));

    cfcost_req_send(rq, 200, "text/plain; version=0.0.4; charset=utf-8",
                    &b);
}


static void
cfcost_metrics_on_user(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    cfcost_rollup_t        ru;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "user rollup")
        || slot >= m->nusers)
    {
        return;
    }

    memset(&ru, 0, sizeof(ru));

    if (cfcost_rollup_add_hash(&ru, r) != 0) {
        rq->failed = 1;
    } else {
        cfcost_metrics_models(m->fam, "", m->users[slot], &ru);
    }

    cfcost_rollup_free(&ru);
}


static void
cfcost_metrics_read_users(cfcost_req_t *rq)
{
    size_t                 i;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    cfcost_req_phase(rq, cfcost_metrics_on_user, cfcost_metrics_answer);

    for (i = 0; i < m->nusers; i++) {
        cfcost_req_cmd(rq, "HGETALL " CFCOST_ROLLUP_PREFIX CFCOST_SCOPE_USER
                       "%s", m->users[i]);
    }

    cfcost_req_go(rq);
}


/* XINFO GROUPS: pending and lag of every group (lag may be unknown). */
static void
cfcost_metrics_groups(cfcost_metrics_ctx_t *m, const redisReply *r)
{
    size_t             i, k;
    const redisReply  *g, *f, *v, *name, *pending, *lag;

    if (r->type != REDIS_REPLY_ARRAY) {
        return;                 /* no stream yet */
    }

    for (i = 0; i < r->elements; i++) {
        g = r->element[i];
        name = pending = lag = NULL;

        for (k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements;
             k += 2)
        {
            f = g->element[k];
            v = g->element[k + 1];
            if (f->type != REDIS_REPLY_STRING) {
                continue;
            }
            if (strcmp(f->str, "name") == 0) {
                name = v;
            } else if (strcmp(f->str, "pending") == 0) {
                pending = v;
            } else if (strcmp(f->str, "lag") == 0) {
                lag = v;
            }
        }

        if (name == NULL || name->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (pending != NULL && pending->type == REDIS_REPLY_INTEGER) {
            cfcost_buf_str(&m->pending,
                           "cfcost_consumer_group_pending{group=");
            cfcost_prom_label(&m->pending, name->str, (size_t) name->len);
            cfcost_buf_printf(&m->pending, "} %lld\n", pending->integer);
        }

        if (lag != NULL && lag->type == REDIS_REPLY_INTEGER) {
            cfcost_buf_str(&m->lag, "cfcost_consumer_group_lag{group=");
            cfcost_prom_label(&m->lag, name->str, (size_t) name->len);
            cfcost_buf_printf(&m->lag, "} %lld\n", lag->integer);
        }
    }
}


static void
cfcost_metrics_on_first(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    size_t                 i;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    switch (slot) {

    case 0:                     /* SMEMBERS users */
        if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "users")
            || r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        {
            return;
        }
        m->users = calloc(r->elements, sizeof(char *));
        if (m->users == NULL) {
            rq->failed = 1;
            return;
        }
        for (i = 0; i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING
                && strlen(r->element[i]->str) == (size_t) r->element[i]->len)
            {
                m->users[m->nusers] = strdup(r->element[i]->str);
                if (m->users[m->nusers] == NULL) {
                    rq->failed = 1;
                    return;
                }
                m->nusers++;
            }
        }
        return;

    case 1:                     /* HGETALL all */
        if (!cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "all rollup")
            && cfcost_rollup_add_hash(&m->all, r) != 0)
        {
            rq->failed = 1;
        }
        return;

    case 2:                     /* XLEN */
        if (!cfcost_req_bad(rq, r, REDIS_REPLY_INTEGER, "XLEN")) {
            m->stream_len = r->integer;
        }
        return;

    case 3:                     /* XINFO GROUPS: an error when no stream */
        cfcost_metrics_groups(m, r);
        return;

    default:                    /* HGET gateway records_dropped */
        if (r->type == REDIS_REPLY_STRING) {
            m->dropped = strtoll(r->str, NULL, 10);
        }
    }
}


void
cfcost_route_metrics(cfcost_req_t *rq)
{
    cfcost_metrics_ctx_t  *m;

    m = calloc(1, sizeof(cfcost_metrics_ctx_t));
    if (m == NULL) {
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    rq->ctx = m;
    rq->ctx_free = cfcost_metrics_ctx_free;

    cfcost_req_phase(rq, cfcost_metrics_on_first, cfcost_metrics_read_users);
    cfcost_req_cmd(rq, "SMEMBERS " CFCOST_ROLLUP_USERS);
    cfcost_req_cmd(rq, "HGETALL " CFCOST_ROLLUP_PREFIX CFCOST_SCOPE_ALL);
    cfcost_req_cmd(rq, "XLEN " CFCOST_RECORD_STREAM);
    cfcost_req_cmd(rq, "XINFO GROUPS " CFCOST_RECORD_STREAM);
    cfcost_req_cmd(rq, "HGET " CFCOST_GATEWAY_HASH " "
                   CFCOST_GATEWAY_F_DROPPED);
    cfcost_req_go(rq);
}


/* ---- /healthz ----------------------------------------------------------- */


static void
cfcost_health_on_ping(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    (void) slot;

    cfcost_req_bad(rq, r, REDIS_REPLY_STATUS, "PING");
}


static void
cfcost_health_answer(cfcost_req_t *rq)
{
    int           ready;
    cfcost_buf_t  b;

    memset(&b, 0, sizeof(b));

    ready = cfcost_consumer_ready(rq->agg->consumer);

    cfcost_buf_printf(&b, "{\"status\":\"%s\",\"redis\":true,"
                      "\"consumer\":%s,\"records_applied\":%llu}\n",
                      ready ? "ok" : "starting", ready ? "true" : "false",
                      (unsigned long long) rq->agg->applied);

    cfcost_req_send(rq, ready ? 200 : 503, NULL, &b);
}


void
cfcost_route_healthz(cfcost_req_t *rq)
{
    cfcost_req_phase(rq, cfcost_health_on_ping, cfcost_health_answer);
    cfcost_req_cmd(rq, "PING");
    cfcost_req_go(rq);
}
