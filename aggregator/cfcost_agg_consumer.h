/*
 * The stream consumer: finds the writers' record streams (cfcost:writers),
 * reads them through a consumer group and applies every entry to the
 * rollups exactly once (one atomic script per batch and stream that
 * counts, records the stream's applied position and acknowledges),
 * reclaims entries a dead consumer left pending, and trims the streams to
 * the retention.
 *
 * It owns no connection: it drives agg->consumer_rd, which nothing else
 * uses (its reads block), and sends CLIENT UNBLOCK over agg->http_rd to
 * stop promptly.
 */

#ifndef CFCOST_AGG_CONSUMER_H
#define CFCOST_AGG_CONSUMER_H

#include "cfcost_agg.h"
#include "cfcost_agg_redis.h"


/* Creates the consumer of agg (agg->consumer).  Returns 0, or -1. */
int cfcost_consumer_create(cfcost_agg_t *agg);

/* The on_up / on_down callbacks to give agg->consumer_rd (data: agg). */
void cfcost_consumer_redis_up(cfcost_redis_t *rd, void *data);
void cfcost_consumer_redis_down(cfcost_redis_t *rd, void *data);

/*
 * Stops reading: the batch in flight is finished (applied and
 * acknowledged), then done(data) runs from the event loop, never from
 * inside a Redis callback.
 */
void cfcost_consumer_stop(cfcost_consumer_t *c, void (*done)(void *data),
    void *data);

/* 1 once the scripts are loaded on this connection. */
int cfcost_consumer_ready(const cfcost_consumer_t *c);

/* The number of record streams (writers) being read. */
size_t cfcost_consumer_streams(const cfcost_consumer_t *c);

void cfcost_consumer_free(cfcost_consumer_t *c);

#endif /* CFCOST_AGG_CONSUMER_H */
