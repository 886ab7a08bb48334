/*
 * The routes: what the HTTP core (cfcost_agg_http.c) calls, and the
 * identity headers nginx sets.  Each route runs on a request's state,
 * cfcost_agg_req.h.
 */

#ifndef CFCOST_AGG_ROUTES_H
#define CFCOST_AGG_ROUTES_H

#include "cfcost_agg_req.h"


#define CFCOST_HDR_USER      "X-Cfcost-User"
#define CFCOST_HDR_KEY_ID    "X-Cfcost-Key-Id"
#define CFCOST_HDR_ADMIN     "X-Cfcost-Admin"


/* routes */
void cfcost_route_usage(cfcost_req_t *rq);
void cfcost_route_timeseries(cfcost_req_t *rq);
void cfcost_route_logs(cfcost_req_t *rq);
void cfcost_route_metrics(cfcost_req_t *rq);
void cfcost_route_healthz(cfcost_req_t *rq);

#endif /* CFCOST_AGG_ROUTES_H */
