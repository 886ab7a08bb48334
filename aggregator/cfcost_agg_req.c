/*
 * The state of one HTTP request and what the routes do with it: Redis
 * commands in phases, replies, chunked streams.  See cfcost_agg_req.h.
 *
 * libevent keeps an evhttp_request alive until we answer it, even when
 * the client has gone (it is detached from its connection, and answering
 * then frees it), so the request pointer stays valid for as long as our
 * state lives.  The connection's close callback only tells us to stop
 * early.
 */

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_out.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_req.h"


static void
cfcost_req_free(cfcost_req_t *rq)
{
    rq->prev->next = rq->next;
    rq->next->prev = rq->prev;

    if (rq->ctx_free != NULL && rq->ctx != NULL) {
        rq->ctx_free(rq->ctx);
    }

    evhttp_clear_headers(&rq->query);
    free(rq);
}


/* Stops telling us about the connection: we are about to answer. */
static void
cfcost_req_detach(cfcost_req_t *rq)
{
    struct evhttp_connection  *evcon;

    evcon = evhttp_request_get_connection(rq->req);
    if (evcon != NULL) {
        evhttp_connection_set_closecb(evcon, NULL, NULL);
    }
}


/* Ends a request whose client is gone (or at shutdown); frees rq. */
void
cfcost_req_release(cfcost_req_t *rq)
{
    cfcost_req_detach(rq);

    if (rq->streaming) {
        evhttp_send_reply_end(rq->req);
    } else {
        evhttp_send_reply(rq->req, 503, NULL, NULL);
    }

    cfcost_req_free(rq);
}


static void
cfcost_req_closed(struct evhttp_connection *evcon, void *arg)
{
    cfcost_req_t  *rq = arg;

    (void) evcon;

    rq->gone = 1;

    /* replies in flight release it when they arrive */
    if (rq->pending == 0) {
        cfcost_req_release(rq);
    }
}


cfcost_req_t *
cfcost_req_create(cfcost_agg_t *agg, struct evhttp_request *req,
    cfcost_req_t *live)
{
    cfcost_req_t  *rq;

    rq = calloc(1, sizeof(cfcost_req_t));
    if (rq == NULL) {
        return NULL;
    }

    rq->agg = agg;
    rq->req = req;
    TAILQ_INIT(&rq->query);

    rq->next = live->next;
    rq->prev = live;
    live->next->prev = rq;
    live->next = rq;

    evhttp_connection_set_closecb(evhttp_request_get_connection(req),
                                  cfcost_req_closed, rq);

    return rq;
}


const char *
cfcost_req_arg(cfcost_req_t *rq, const char *name)
{
    return evhttp_find_header(&rq->query, name);
}


int
cfcost_req_range(cfcost_req_t *rq, int64_t *from, int64_t *to)
{
    const char  *f, *t;

    *from = CFCOST_DAY_MIN;
    *to = CFCOST_DAY_MAX;

    f = cfcost_req_arg(rq, "from");
    t = cfcost_req_arg(rq, "to");

    if (f != NULL && cfcost_date_parse(f, strlen(f), from) != 0) {
        cfcost_req_error(rq, 400, "from: want a date YYYY-MM-DD");
        return -1;
    }

    if (t != NULL && cfcost_date_parse(t, strlen(t), to) != 0) {
        cfcost_req_error(rq, 400, "to: want a date YYYY-MM-DD");
        return -1;
    }

    if (*from > *to) {
        cfcost_req_error(rq, 400, "from is after to");
        return -1;
    }

    return 0;
}


void
cfcost_req_phase(cfcost_req_t *rq, cfcost_req_reply_pt on_reply,
    cfcost_req_step_pt on_done)
{
    rq->on_reply = on_reply;
    rq->on_done = on_done;
    rq->slot = 0;
}


static void
cfcost_req_on_reply(cfcost_redis_t *rd, redisReply *r, void *data)
{
    unsigned       slot;
    cfcost_req_t  *rq = data;

    (void) rd;

    rq->pending--;
    slot = rq->slot++;

    if (r == NULL) {
        rq->failed = 1;

    } else if (!rq->failed && !rq->gone) {
        rq->on_reply(rq, r, slot);
    }

    if (rq->pending > 0) {
        return;
    }

    if (rq->gone) {
        cfcost_req_release(rq);

    } else if (rq->failed) {
        cfcost_req_error(rq, 503, "usage store unavailable");

    } else {
        rq->on_done(rq);
    }
}


void
cfcost_req_cmd(cfcost_req_t *rq, const char *fmt, ...)
{
    int      rc;
    va_list  ap;
    char    *cmd;

    if (rq->failed) {
        return;
    }

    va_start(ap, fmt);
    rc = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);

    if (rc < 0) {
        rq->failed = 1;
        return;
    }

    if (cfcost_redis_formatted(rq->agg->http_rd, cfcost_req_on_reply, rq, 0,
                               cmd, (size_t) rc) == 0)
    {
        rq->pending++;
    } else {
        rq->failed = 1;
    }

    redisFreeCommand(cmd);
}


void
cfcost_req_argv(cfcost_req_t *rq, int argc, const char **argv,
    const size_t *argvlen)
{
    if (rq->failed) {
        return;
    }

    if (cfcost_redis_argv(rq->agg->http_rd, cfcost_req_on_reply, rq, 0, argc,
                          argv, argvlen) == 0)
    {
        rq->pending++;
    } else {
        rq->failed = 1;
    }
}


void
cfcost_req_go(cfcost_req_t *rq)
{
    if (rq->pending > 0) {
        return;
    }

    if (rq->failed) {
        cfcost_req_error(rq, 503, "usage store unavailable");
        return;
    }

    rq->on_done(rq);
}


int
cfcost_req_bad(cfcost_req_t *rq, redisReply *r, int want, const char *what)
{
    if (r->type == want) {
        return 0;
    }

    if (want == REDIS_REPLY_ARRAY && r->type == REDIS_REPLY_NIL) {
        return 0;
    }

    rq->agg->redis_errors++;

    if (r->type == REDIS_REPLY_ERROR) {
        cfcost_log_error("http: %s: %s", what, r->str);
    } else {
        cfcost_log_error("http: %s: unexpected reply type %d", what, r->type);
    }

    rq->failed = 1;
    return 1;
}


void
cfcost_req_header(cfcost_req_t *rq, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(rq->req), name,
                      value);
}


void
cfcost_req_send(cfcost_req_t *rq, int code, const char *ctype,
    cfcost_buf_t *body)
{
    struct evbuffer  *out;

    if (body->oom) {
        cfcost_buf_free(body);
        cfcost_req_error(rq, 500, "out of memory");
        return;
    }

    cfcost_req_detach(rq);

    cfcost_req_header(rq, "Content-Type",
                      ctype ? ctype : "application/json");
    cfcost_req_header(rq, "Cache-Control", "no-store");

    out = evhttp_request_get_output_buffer(rq->req);
    evbuffer_add(out, body->data, body->len);
    cfcost_buf_free(body);

    evhttp_send_reply(rq->req, code, NULL, NULL);
    cfcost_req_free(rq);
}


void
cfcost_req_error(cfcost_req_t *rq, int code, const char *detail)
{
    cfcost_buf_t  b;

    if (rq->streaming) {
        /* the status line is out: all we can do is stop short */
        cfcost_log_error("http: reply cut short: %s", detail);
        cfcost_req_stream_end(rq);
        return;
    }

    memset(&b, 0, sizeof(b));

    cfcost_buf_str(&b, "{\"detail\":");
    cfcost_json_strz(&b, detail);
    cfcost_buf_str(&b, "}\n");

    if (b.oom) {
        cfcost_buf_free(&b);
        cfcost_req_detach(rq);
        evhttp_send_reply(rq->req, code, NULL, NULL);
        cfcost_req_free(rq);
        return;
    }

    cfcost_req_send(rq, code, NULL, &b);
}


void
cfcost_req_stream_start(cfcost_req_t *rq, const char *ctype)
{
    cfcost_req_header(rq, "Content-Type", ctype);
    cfcost_req_header(rq, "Cache-Control", "no-store");

    rq->streaming = 1;
    evhttp_send_reply_start(rq->req, 200, NULL);
}


static void
cfcost_req_drained(struct evhttp_connection *evcon, void *arg)
{
    cfcost_req_t  *rq = arg;

    (void) evcon;

    rq->draining = 0;

    if (rq->gone) {
        cfcost_req_release(rq);
        return;
    }

    rq->on_drained(rq);
}


void
cfcost_req_stream_chunk(cfcost_req_t *rq, cfcost_buf_t *b,
    cfcost_req_step_pt on_drained)
{
    struct evbuffer  *eb;

    if (rq->gone || evhttp_request_get_connection(rq->req) == NULL) {
        cfcost_buf_reset(b);
        cfcost_req_release(rq);
        return;
    }

    /* HEAD: evhttp drops bodies without calling back; nothing to send */
    if (evhttp_request_get_command(rq->req) == EVHTTP_REQ_HEAD) {
        cfcost_buf_reset(b);
        cfcost_req_stream_end(rq);
        return;
    }

    rq->on_drained = on_drained;

    if (b->len == 0) {
        on_drained(rq);
        return;
    }

    eb = evbuffer_new();
    if (eb == NULL || evbuffer_add(eb, b->data, b->len) != 0) {
        if (eb != NULL) {
            evbuffer_free(eb);
        }
        cfcost_buf_reset(b);
        cfcost_req_release(rq);
        return;
    }

    cfcost_buf_reset(b);
    rq->draining = 1;

    evhttp_send_reply_chunk_with_cb(rq->req, eb, cfcost_req_drained, rq);
    evbuffer_free(eb);
}


void
cfcost_req_stream_end(cfcost_req_t *rq)
{
    cfcost_req_detach(rq);
    evhttp_send_reply_end(rq->req);
    cfcost_req_free(rq);
}
