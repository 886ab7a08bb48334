/*
 * hiredis's async context on a libevent base: a persistent read event, and
 * writes made at the loop's next pass without waiting for EPOLLOUT unless
 * the socket was full (cfcost_agg_redis_ev.c).  In place of
 * redisLibeventAttach; returns REDIS_OK or REDIS_ERR.
 */

#ifndef CFCOST_AGG_REDIS_EV_H
#define CFCOST_AGG_REDIS_EV_H

#include <event2/event.h>
#include <hiredis/async.h>


int cfcost_redis_ev_attach(redisAsyncContext *ac, struct event_base *base);


#endif /* CFCOST_AGG_REDIS_EV_H */
