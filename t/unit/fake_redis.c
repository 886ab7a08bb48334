/*
 * A scripted Redis for unit tests.  See fake_redis.h.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "fake_redis.h"


struct cfcost_redis_s {
    char                    name[32];
    unsigned                timeout_ms;
    int                     up;

    cfcost_redis_event_pt   on_up;
    cfcost_redis_event_pt   on_down;
    void                   *data;

    fake_cmd_t             *head;       /* in flight, oldest first */
    fake_cmd_t             *tail;
    size_t                  inflight;
    size_t                  sent;
};


static void *
fake_alloc(size_t n)
{
    void  *p;

    p = calloc(1, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "fake_redis: out of memory\n");
        abort();
    }

    return p;
}


static void
fake_cmd_free(fake_cmd_t *cmd)
{
    size_t  i;

    for (i = 0; i < cmd->argc; i++) {
        free(cmd->argv[i]);
    }

    free(cmd->argv);
    free(cmd->line);
    free(cmd);
}


/* Reads one whole RESP value from buf[0..len).  NULL if it is not one. */
static redisReply *
fake_parse(const char *buf, size_t len)
{
    void         *reply;
    redisReader  *rr;

    rr = redisReaderCreate();
    if (rr == NULL) {
        return NULL;
    }

    reply = NULL;

    if (redisReaderFeed(rr, buf, len) != REDIS_OK
        || redisReaderGetReply(rr, &reply) != REDIS_OK)
    {
        reply = NULL;
    }

    redisReaderFree(rr);

    return reply;
}


/*
 * Queues a command given in the protocol: it is read back into its
 * arguments, as Redis would.  Returns 0, or -1 when the connection is down
 * (the callback will not run).
 */
static int
fake_send(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    unsigned extra_ms, const char *proto, size_t len)
{
    char         *p;
    size_t        i, n;
    fake_cmd_t   *cmd;
    redisReply   *r;

    if (!rd->up) {
        return -1;
    }

    r = fake_parse(proto, len);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        fprintf(stderr, "fake_redis: %s: not a command\n", rd->name);
        abort();
    }

    cmd = fake_alloc(sizeof(fake_cmd_t));
    cmd->cb = cb;
    cmd->data = data;
    cmd->extra_ms = extra_ms;
    cmd->deadline = cfcost_mono_ms() + rd->timeout_ms + extra_ms;
    cmd->argc = r->elements;
    cmd->argv = fake_alloc(r->elements * sizeof(char *));

    n = 0;
    for (i = 0; i < r->elements; i++) {
        cmd->argv[i] = fake_alloc(r->element[i]->len + 1);
        memcpy(cmd->argv[i], r->element[i]->str, r->element[i]->len);
        n += r->element[i]->len + 1;
    }

    cmd->line = fake_alloc(n);
    p = cmd->line;
    for (i = 0; i < r->elements; i++) {
        if (i > 0) {
            *p++ = ' ';
        }
        memcpy(p, r->element[i]->str, r->element[i]->len);
        p += r->element[i]->len;
    }
    *p = '\0';

    freeReplyObject(r);

    if (rd->tail != NULL) {
        rd->tail->next = cmd;
    } else {
        rd->head = cmd;
    }
    rd->tail = cmd;
    rd->inflight++;
    rd->sent++;

    return 0;
}


/* Takes the oldest command off the list. */
static fake_cmd_t *
fake_pop(cfcost_redis_t *rd)
{
    fake_cmd_t  *cmd;

    cmd = rd->head;
    if (cmd == NULL) {
        return NULL;
    }

    rd->head = cmd->next;
    if (rd->head == NULL) {
        rd->tail = NULL;
    }
    rd->inflight--;

    return cmd;
}


/* ---- cfcost_agg_redis.h ------------------------------------------------- */


int
cfcost_redis_up(const cfcost_redis_t *rd)
{
    return rd->up;
}


int
cfcost_redis_argv(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    unsigned extra_ms, int argc, const char **argv, const size_t *argvlen)
{
    int    rc, len;
    char  *proto;

    if (!rd->up) {
        return -1;
    }

    len = redisFormatCommandArgv(&proto, argc, argv, argvlen);
    if (len < 0) {
        return -1;
    }

    rc = fake_send(rd, cb, data, extra_ms, proto, (size_t) len);
    redisFreeCommand(proto);

    return rc;
}


int
cfcost_redis_cmd(cfcost_redis_t *rd, cfcost_redis_reply_pt cb, void *data,
    const char *fmt, ...)
{
    int      rc, len;
    char    *proto;
    va_list  ap;

    if (!rd->up) {
        return -1;
    }

    va_start(ap, fmt);
    len = redisvFormatCommand(&proto, fmt, ap);
    va_end(ap);

    if (len < 0) {
        return -1;
    }

    rc = fake_send(rd, cb, data, 0, proto, (size_t) len);
    redisFreeCommand(proto);

    return rc;
}


int
cfcost_redis_formatted(cfcost_redis_t *rd, cfcost_redis_reply_pt cb,
    void *data, unsigned extra_ms, const char *cmd, size_t len)
{
    return fake_send(rd, cb, data, extra_ms, cmd, len);
}


/* ---- the test's side ---------------------------------------------------- */


cfcost_redis_t *
fake_redis_create(const char *name, unsigned timeout_ms,
    cfcost_redis_event_pt on_up, cfcost_redis_event_pt on_down, void *data)
{
    cfcost_redis_t  *rd;

    rd = fake_alloc(sizeof(cfcost_redis_t));

    snprintf(rd->name, sizeof(rd->name), "%s", name);
    rd->timeout_ms = timeout_ms;
    rd->on_up = on_up;
    rd->on_down = on_down;
    rd->data = data;

    return rd;
}


/* The callbacks of everything in flight run with NULL, oldest first. */
static void
fake_fail_all(cfcost_redis_t *rd)
{
    fake_cmd_t  *cmd;

    rd->up = 0;

    while ((cmd = fake_pop(rd)) != NULL) {
        cmd->cb(rd, NULL, cmd->data);
        fake_cmd_free(cmd);
    }
}


void
fake_redis_free(cfcost_redis_t *rd)
{
    if (rd == NULL) {
        return;
    }

    fake_fail_all(rd);
    free(rd);
}


void
fake_redis_connect(cfcost_redis_t *rd)
{
    rd->up = 1;

    if (rd->on_up) {
        rd->on_up(rd, rd->data);
    }
}


void
fake_redis_drop(cfcost_redis_t *rd)
{
    int  was_up;

    was_up = rd->up;
    fake_fail_all(rd);

    if (was_up && rd->on_down) {
        rd->on_down(rd, rd->data);
    }
}


int
fake_redis_watch(cfcost_redis_t *rd)
{
    if (rd->up && rd->head != NULL && cfcost_mono_ms() > rd->head->deadline) {
        fake_redis_drop(rd);
        return 1;
    }

    return 0;
}


const fake_cmd_t *
fake_redis_peek(const cfcost_redis_t *rd)
{
    return rd->head;
}


size_t
fake_redis_inflight(const cfcost_redis_t *rd)
{
    return rd->inflight;
}


size_t
fake_redis_sent(const cfcost_redis_t *rd)
{
    return rd->sent;
}


int
fake_redis_reply(cfcost_redis_t *rd, const char *resp, size_t len)
{
    fake_cmd_t  *cmd;
    redisReply  *r;

    if (rd->head == NULL) {
        return -1;
    }

    r = fake_parse(resp, len);
    if (r == NULL) {
        return -1;
    }

    cmd = fake_pop(rd);
    cmd->cb(rd, r, cmd->data);

    /* hiredis frees the reply once the callback returned */
    freeReplyObject(r);
    fake_cmd_free(cmd);

    return 0;
}


/* ---- writing replies ---------------------------------------------------- */


static void
fake_resp_printf(fake_resp_t *b, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    if (b->p == NULL) {
        b->cap = 4096;
        b->p = malloc(b->cap);
        b->len = 0;
    }

    for ( ;; ) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);

        if (n >= 0 && (size_t) n < b->cap - b->len) {
            b->len += (size_t) n;
            return;
        }

        b->cap *= 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            fprintf(stderr, "fake_redis: out of memory\n");
            abort();
        }
    }
}


void
fake_resp_reset(fake_resp_t *b)
{
    b->len = 0;
}


void
fake_resp_free(fake_resp_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}


void
fake_resp_array(fake_resp_t *b, size_t n)
{
    fake_resp_printf(b, "*%zu\r\n", n);
}


void
fake_resp_bulk(fake_resp_t *b, const char *s)
{
    fake_resp_printf(b, "$%zu\r\n%s\r\n", strlen(s), s);
}


void
fake_resp_int(fake_resp_t *b, long long v)
{
    fake_resp_printf(b, ":%lld\r\n", v);
}


void
fake_resp_status(fake_resp_t *b, const char *s)
{
    fake_resp_printf(b, "+%s\r\n", s);
}


void
fake_resp_error(fake_resp_t *b, const char *s)
{
    fake_resp_printf(b, "-%s\r\n", s);
}


void
fake_resp_nil(fake_resp_t *b)
{
    fake_resp_printf(b, "$-1\r\n");
}


void
fake_resp_nil_array(fake_resp_t *b)
{
    fake_resp_printf(b, "*-1\r\n");
}
