/*
 * The aggregator's HTTP server (libevent evhttp), reachable on loopback or
 * a unix socket only: nginx in front of it authenticates the caller and
 * passes the identity in headers clients cannot send through.
 */

#ifndef CFCOST_AGG_HTTP_H
#define CFCOST_AGG_HTTP_H

#include <stddef.h>

#include "cfcost_agg.h"


/*
 * Starts serving on agg->conf.listen ("unix:/path", or a loopback
 * "127.0.0.1:PORT" / "[::1]:PORT" / "localhost:PORT"; anything else is
 * refused).  Sets agg->http.  Returns 0, or -1 with a reason in err.
 */
int cfcost_http_create(cfcost_agg_t *agg, char *err, size_t errlen);

/*
 * Answers every request still waiting (503, or the end of a stream),
 * closes the listener (removing the unix socket) and frees the server.
 * Call after agg->http_rd is destroyed, outside any callback.
 */
void cfcost_http_free(cfcost_http_t *h);

#endif /* CFCOST_AGG_HTTP_H */
