/*
 * The state of one HTTP request, and what the routes do with it.
 *
 * A request runs in phases.  A phase sends commands (cfcost_req_cmd...),
 * then cfcost_req_go(); each reply goes to on_reply with its slot (the
 * order it was sent in within the phase); when the last one arrived,
 * on_done runs and either starts another phase or answers.  When a
 * command cannot be sent or its connection fails, the request answers 503
 * by itself and on_done does not run.  When the client went away, replies
 * are dropped and the state freed once the last one arrived.
 *
 * Every reply function frees the request: touch nothing afterwards.
 */

#ifndef CFCOST_AGG_REQ_H
#define CFCOST_AGG_REQ_H

#include <stdint.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/hiredis.h>

#include "cfcost_agg.h"
#include "cfcost_agg_out.h"


typedef struct cfcost_req_s  cfcost_req_t;

typedef void (*cfcost_req_reply_pt)(cfcost_req_t *rq, redisReply *r,
    unsigned slot);
typedef void (*cfcost_req_step_pt)(cfcost_req_t *rq);


struct cfcost_req_s {
    cfcost_agg_t            *agg;
    struct evhttp_request   *req;
    struct evkeyvalq         query;

    int                      admin;
    const char              *user;      /* caller's user; NULL: admin */
    const char              *subject;   /* whose usage; NULL: everyone */

    unsigned                 pending;   /* commands in flight */
    unsigned                 slot;      /* replies so far in this phase */
    int                      failed;    /* a command failed: 503 */
    int                      gone;      /* the client disconnected */
    int                      streaming; /* a chunked reply has begun */
    int                      draining;  /* waiting for a chunk to be sent */

    cfcost_req_reply_pt      on_reply;
    cfcost_req_step_pt       on_done;
    cfcost_req_step_pt       on_drained;

    void                    *ctx;       /* the route's own state */
    void                   (*ctx_free)(void *ctx);

    cfcost_req_t            *prev;      /* live requests, for shutdown */
    cfcost_req_t            *next;
};


/*
 * For the HTTP core: the state of a new request, linked into the list of
 * live ones (live: its sentinel) and told when the client goes away.
 * Returns NULL when out of memory.
 */
cfcost_req_t *cfcost_req_create(cfcost_agg_t *agg,
    struct evhttp_request *req, cfcost_req_t *live);

/*
 * For the HTTP core: ends a request whose client is gone, or at shutdown
 * (503, or the end of a stream already begun); frees rq.
 */
void cfcost_req_release(cfcost_req_t *rq);


/* A query argument, or NULL. */
const char *cfcost_req_arg(cfcost_req_t *rq, const char *name);

/*
 * Reads from/to (YYYY-MM-DD, inclusive).  Missing ones are
 * CFCOST_DAY_MIN / CFCOST_DAY_MAX.  Returns 0, or answers 400 and returns
 * -1.
 */
int cfcost_req_range(cfcost_req_t *rq, int64_t *from, int64_t *to);

/* Starts a phase: replies go to on_reply, then on_done. */
void cfcost_req_phase(cfcost_req_t *rq, cfcost_req_reply_pt on_reply,
    cfcost_req_step_pt on_done);

/* Sends a command in the current phase (hiredis format). */
void cfcost_req_cmd(cfcost_req_t *rq, const char *fmt, ...);

void cfcost_req_argv(cfcost_req_t *rq, int argc, const char **argv,
    const size_t *argvlen);

/* Ends the sending of a phase (runs on_done now if nothing was sent). */
void cfcost_req_go(cfcost_req_t *rq);

/*
 * For on_reply: an error reply, or one not of type want, is logged and
 * fails the request (503).  Returns 1 when r is bad.
 */
int cfcost_req_bad(cfcost_req_t *rq, redisReply *r, int want,
    const char *what);

/* Answers with body (JSON unless ctype says otherwise); frees rq. */
void cfcost_req_send(cfcost_req_t *rq, int code, const char *ctype,
    cfcost_buf_t *body);

/* Answers {"detail": detail}; frees rq. */
void cfcost_req_error(cfcost_req_t *rq, int code, const char *detail);

/* Begins a chunked 200 reply of content type ctype. */
void cfcost_req_stream_start(cfcost_req_t *rq, const char *ctype);

/*
 * Sends b's bytes (b is emptied) and runs on_drained once they are out.
 * When the client is gone (or asked HEAD) the reply ends here instead and
 * rq is freed.
 */
void cfcost_req_stream_chunk(cfcost_req_t *rq, cfcost_buf_t *b,
    cfcost_req_step_pt on_drained);

/* Ends the chunked reply; frees rq. */
void cfcost_req_stream_end(cfcost_req_t *rq);

/* Adds a response header (before the reply starts). */
void cfcost_req_header(cfcost_req_t *rq, const char *name, const char *value);

#endif /* CFCOST_AGG_REQ_H */
