/*
 * GET /metrics (Prometheus text format 0.0.4) and GET /healthz.
 *
 * Two round trips whatever the number of records: the users set, the
 * "all" rollup, the writers set and the gateway's dropped counter; then
 * one HGETALL per user, and XLEN and XINFO GROUPS per writer's stream,
 * pipelined.  The stream gauges are sums over the writers' streams, of at
 * most CFCOST_METRICS_STREAMS of them per scrape (the first in the set's
 * order; cfcost_record_streams says how many there are), so that a scrape
 * costs a bounded number of commands.
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


#define CFCOST_FAMILIES          5
#define CFCOST_METRICS_STREAMS   256
#define CFCOST_METRICS_GROUPS    8


typedef struct {
    char              *name;
    long long          pending;
    long long          lag;
    int                lag_unknown;
} cfcost_metrics_group_t;


typedef struct {
    char             **users;
    size_t             nusers;

    char             **writers;
    size_t             nwriters;        /* read, up to the cap */
    size_t             writers_total;   /* in the set */

    cfcost_rollup_t    all;
    long long          stream_len;
    long long          dropped;

    cfcost_metrics_group_t  groups[CFCOST_METRICS_GROUPS];
    size_t                  ngroups;

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

    for (i = 0; i < m->nwriters; i++) {
        free(m->writers[i]);
    }

    for (i = 0; i < m->ngroups; i++) {
        free(m->groups[i].name);
    }

    for (i = 0; i < CFCOST_FAMILIES; i++) {
        cfcost_buf_free(&m->fam[i]);
    }

    free(m->users);
    free(m->writers);
    cfcost_rollup_free(&m->all);
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


/* The stream gauges: sums over the streams read. */
static void
cfcost_metrics_streams(cfcost_buf_t *b, const cfcost_metrics_ctx_t *m)
{
    size_t                         i;
    const cfcost_metrics_group_t  *g;

    cfcost_metrics_family(b, "cfcost_record_streams", "gauge",
                          "Writers (gateway workers) with a record stream");
    cfcost_buf_printf(b, "cfcost_record_streams %zu\n", m->writers_total);

    cfcost_metrics_family(b, "cfcost_stream_length", "gauge",
                          "Entries held in the writers' streams (a "
                          "batch entry holds several records)");
    cfcost_buf_printf(b, "cfcost_stream_length %lld\n", m->stream_len);

    cfcost_metrics_family(b, "cfcost_consumer_group_pending", "gauge",
                          "Entries delivered to a consumer, not yet "
                          "acknowledged");
    for (i = 0; i < m->ngroups; i++) {
        g = &m->groups[i];
        cfcost_buf_str(b, "cfcost_consumer_group_pending{group=");
        cfcost_prom_label(b, g->name, strlen(g->name));
        cfcost_buf_printf(b, "} %lld\n", g->pending);
    }

    cfcost_metrics_family(b, "cfcost_consumer_group_lag", "gauge",
                          "Entries not yet delivered to the group (absent "
                          "when Redis cannot tell for some stream)");
    for (i = 0; i < m->ngroups; i++) {
        g = &m->groups[i];
        if (g->lag_unknown) {
            continue;
        }
        cfcost_buf_str(b, "cfcost_consumer_group_lag{group=");
        cfcost_prom_label(b, g->name, strlen(g->name));
        cfcost_buf_printf(b, "} %lld\n", g->lag);
    }
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

    cfcost_metrics_streams(&b, m);

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

    cfcost_metrics_family(&b, "cfcost_aggregator_records_stale_total",
                          "counter", "Entries delivered again after they "
                          "were counted (acknowledged, not counted)");
    cfcost_buf_printf(&b, "cfcost_aggregator_records_stale_total %llu\n",
                      (unsigned long long) agg->stale);

    cfcost_metrics_family(&b, "cfcost_aggregator_batches_total", "counter",
                          "Batches this process applied");
    cfcost_buf_printf(&b, "cfcost_aggregator_batches_total %llu\n",
                      (unsigned long long) agg->batches);

    cfcost_metrics_family(&b, "cfcost_aggregator_batches_exact_total",
                          "counter", "Batches the summed apply script "
                          "declined (not all new): applied again entry "
                          "by entry");
    cfcost_buf_printf(&b, "cfcost_aggregator_batches_exact_total %llu\n",
                      (unsigned long long) agg->batches_exact);

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


/* The sums of group name[0..len), a new one if room is left, or NULL. */
static cfcost_metrics_group_t *
cfcost_metrics_group(cfcost_metrics_ctx_t *m, const char *name, size_t len)
{
    size_t                   i;
    cfcost_metrics_group_t  *g;

    for (i = 0; i < m->ngroups; i++) {
        g = &m->groups[i];
        if (strlen(g->name) == len && memcmp(g->name, name, len) == 0) {
            return g;
        }
    }

    if (m->ngroups == CFCOST_METRICS_GROUPS) {
        return NULL;
    }

    g = &m->groups[m->ngroups];
    memset(g, 0, sizeof(cfcost_metrics_group_t));

    g->name = strndup(name, len);
    if (g->name == NULL) {
        return NULL;
    }

    m->ngroups++;
    return g;
}


/* XINFO GROUPS of one stream: adds pending and lag to each group's sums
 * (lag may be unknown). */
static void
cfcost_metrics_groups(cfcost_metrics_ctx_t *m, const redisReply *r)
{
    size_t                   i, k;
    const redisReply        *e, *f, *v, *name, *pending, *lag;
    cfcost_metrics_group_t  *g;

    if (r->type != REDIS_REPLY_ARRAY) {
        return;                 /* no stream yet */
    }

    for (i = 0; i < r->elements; i++) {
        e = r->element[i];
        name = pending = lag = NULL;

        for (k = 0; e->type == REDIS_REPLY_ARRAY && k + 1 < e->elements;
             k += 2)
        {
            f = e->element[k];
            v = e->element[k + 1];
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

        g = cfcost_metrics_group(m, name->str, (size_t) name->len);
        if (g == NULL) {
            continue;
        }

        if (pending != NULL && pending->type == REDIS_REPLY_INTEGER) {
            g->pending += pending->integer;
        }

        if (lag != NULL && lag->type == REDIS_REPLY_INTEGER) {
            g->lag += lag->integer;
        } else {
            g->lag_unknown = 1;
        }
    }
}


/* SMEMBERS writers: the valid ones, up to the cap. */
static void
cfcost_metrics_writers(cfcost_req_t *rq, redisReply *r)
{
    size_t                 i;
    const redisReply      *w;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "writers")
        || r->type != REDIS_REPLY_ARRAY || r->elements == 0)
    {
        return;
    }

    m->writers = calloc(r->elements < CFCOST_METRICS_STREAMS
                        ? r->elements : CFCOST_METRICS_STREAMS,
                        sizeof(char *));
    if (m->writers == NULL) {
        rq->failed = 1;
        return;
    }

    for (i = 0; i < r->elements; i++) {
        w = r->element[i];
        if (w->type != REDIS_REPLY_STRING
            || !cfcost_writer_valid(w->str, (size_t) w->len))
        {
            continue;
        }

        m->writers_total++;

        if (m->nwriters == CFCOST_METRICS_STREAMS) {
            continue;
        }

        m->writers[m->nwriters] = strdup(w->str);
        if (m->writers[m->nwriters] == NULL) {
            rq->failed = 1;
            return;
        }
        m->nwriters++;
    }
}


static void
cfcost_metrics_on_user(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    cfcost_rollup_t        ru;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    if (slot >= m->nusers) {
        /* per stream: XLEN, then XINFO GROUPS */
        if ((slot - m->nusers) % 2 == 0) {
            if (!cfcost_req_bad(rq, r, REDIS_REPLY_INTEGER, "XLEN")) {
                m->stream_len += r->integer;
            }
        } else {
            cfcost_metrics_groups(m, r);
        }
        return;
    }

    if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "user rollup")) {
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

    for (i = 0; i < m->nwriters; i++) {
        cfcost_req_cmd(rq, "XLEN " CFCOST_RECORD_STREAM_PREFIX "%s"
                       CFCOST_RECORD_STREAM_SUFFIX, m->writers[i]);
        cfcost_req_cmd(rq, "XINFO GROUPS " CFCOST_RECORD_STREAM_PREFIX "%s"
                       CFCOST_RECORD_STREAM_SUFFIX, m->writers[i]);
    }

    cfcost_req_go(rq);
}


static void
cfcost_metrics_on_first(cfcost_req_t *rq, redisReply *r, unsigned slot)
{
    size_t                 i;
    cfcost_metrics_ctx_t  *m = rq->ctx;

    switch (slot) {

    case 0:                     /* SMEMBERS users */
        if (cfcost_req_bad(rq, r, REDIS_REPLY_ARRAY, "users")
            || r->type != REDIS_REPLY_ARRAY || r->elements == 0
            || !rq->agg->conf.metrics_users)
        {
            return;                 /* per-user series: --metrics-users */
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

    case 2:                     /* SMEMBERS writers */
        cfcost_metrics_writers(rq, r);
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
    cfcost_req_cmd(rq, "SMEMBERS " CFCOST_WRITERS_SET);
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
