/*
 * hiredis on the libevent loop, with fewer system calls than hiredis's own
 * adapter (adapters/libevent.h), which re-arms the read event after every
 * read (EPOLL_CTL_DEL, then ADD) and waits for EPOLLOUT before every write
 * (EPOLL_CTL_MOD twice and one more epoll_wait).  On the aggregator's
 * connections that was 18 epoll_ctl per 30-day /api/usage.
 *
 * Here the read event is persistent: armed once.  A write that hiredis
 * asks for on a connected socket is made active instead of armed: the
 * loop runs the handler in its next pass, which writes at once (as the
 * socket almost always has room).  Only a write that did not finish, or
 * one before the connection is up, waits for the socket to be writable.
 */

#include <stdlib.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "cfcost_agg_redis_ev.h"


typedef struct {
    redisAsyncContext  *ac;
    struct event       *rev;
    struct event       *wev;
} cfcost_redis_ev_t;


/* the connection whose write handler is running (its write may not
 * finish): compared, never dereferenced, as hiredis may free it inside */
static cfcost_redis_ev_t  *cfcost_redis_ev_writing;


static void
cfcost_redis_ev_read(evutil_socket_t fd, short what, void *arg)
{
    cfcost_redis_ev_t  *e = arg;

    (void) fd;
    (void) what;

    redisAsyncHandleRead(e->ac);
}


static void
cfcost_redis_ev_write(evutil_socket_t fd, short what, void *arg)
{
    cfcost_redis_ev_t  *e = arg;

    (void) fd;
    (void) what;

    cfcost_redis_ev_writing = e;
    redisAsyncHandleWrite(e->ac);
    cfcost_redis_ev_writing = NULL;
}


static void
cfcost_redis_ev_add_read(void *data)
{
    cfcost_redis_ev_t  *e = data;

    event_add(e->rev, NULL);          /* added already: nothing to do */
}


static void
cfcost_redis_ev_del_read(void *data)
{
    cfcost_redis_ev_t  *e = data;

    event_del(e->rev);
}


static void
cfcost_redis_ev_add_write(void *data)
{
    cfcost_redis_ev_t  *e = data;

    if (e == cfcost_redis_ev_writing
        || !(e->ac->c.flags & REDIS_CONNECTED))
    {
        /* a write that did not finish, or the connect: wait for room */
        event_add(e->wev, NULL);
        return;
    }

    event_active(e->wev, EV_WRITE, 0);
}


static void
cfcost_redis_ev_del_write(void *data)
{
    cfcost_redis_ev_t  *e = data;

    event_del(e->wev);
}


static void
cfcost_redis_ev_cleanup(void *data)
{
    cfcost_redis_ev_t  *e = data;

    if (cfcost_redis_ev_writing == e) {
        cfcost_redis_ev_writing = NULL;
    }

    event_free(e->rev);
    event_free(e->wev);
    free(e);
}


int
cfcost_redis_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    cfcost_redis_ev_t  *e;

    if (ac->ev.data != NULL) {
        return REDIS_ERR;
    }

    e = calloc(1, sizeof(cfcost_redis_ev_t));
    if (e == NULL) {
        return REDIS_ERR;
    }

    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST,
                       cfcost_redis_ev_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE, cfcost_redis_ev_write, e);

    if (e->rev == NULL || e->wev == NULL) {
        if (e->rev) {
            event_free(e->rev);
        }
        if (e->wev) {
            event_free(e->wev);
        }
        free(e);
        return REDIS_ERR;
    }

    ac->ev.addRead = cfcost_redis_ev_add_read;
    ac->ev.delRead = cfcost_redis_ev_del_read;
    ac->ev.addWrite = cfcost_redis_ev_add_write;
    ac->ev.delWrite = cfcost_redis_ev_del_write;
    ac->ev.cleanup = cfcost_redis_ev_cleanup;
    ac->ev.data = e;

    /* the connect completes when the socket is writable */
    event_add(e->rev, NULL);
    event_add(e->wev, NULL);

    return REDIS_OK;
}
