/*
 * HTTP core of the aggregator: listening (loopback / unix socket only),
 * routing and identity.  See cfcost_agg_http.h; the state each request
 * runs on is cfcost_agg_req.c's.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                /* struct ucred */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/http.h>

#include "cfcost_agg.h"
#include "cfcost_agg_http.h"
#include "cfcost_agg_req.h"
#include "cfcost_agg_routes.h"


#define CFCOST_HTTP_TIMEOUT_S      60
#define CFCOST_HTTP_MAX_HEADERS    16384
#define CFCOST_HTTP_MAX_BODY       4096


struct cfcost_http_s {
    cfcost_agg_t                 *agg;
    struct evhttp                *http;
    int                           unix_fd;
    char                          unix_path[sizeof(((struct sockaddr_un *)
                                                    0)->sun_path)];
    cfcost_req_t                  live;         /* sentinel */
};


typedef struct {
    const char          *path;
    void               (*handler)(cfcost_req_t *rq);
    int                  identity;  /* 0: none, 1: user or admin, 2: admin,
                                       3: admin or the metrics token */
} cfcost_route_t;


static const cfcost_route_t  cfcost_routes[] = {
    { "/api/usage",            cfcost_route_usage,      1 },
    { "/api/usage/logs",       cfcost_route_logs,       1 },
    { "/api/usage/timeseries", cfcost_route_timeseries, 1 },
    { "/metrics",              cfcost_route_metrics,    3 },
    { "/healthz",              cfcost_route_healthz,    0 },
    { NULL, NULL, 0 }
};


/* ---- dispatch ----------------------------------------------------------- */


/*
 * Who is asking: nginx sets X-Cfcost-User (an API key's user), or
 * X-Cfcost-Admin: 1 (the admin token) or "metrics" (the metrics token,
 * which reads /metrics and nothing else) itself.  need is the route's
 * identity level.  Returns 0, or answers 401/403 and returns -1.
 */
static int
cfcost_req_identity(cfcost_req_t *rq, int need)
{
    int                        metrics;
    const char                *admin, *user, *want;
    struct evkeyvalq          *in;

    in = evhttp_request_get_input_headers(rq->req);
    admin = evhttp_find_header(in, CFCOST_HDR_ADMIN);
    user = evhttp_find_header(in, CFCOST_HDR_USER);

    rq->admin = (admin != NULL && strcmp(admin, "1") == 0);
    metrics = (admin != NULL && strcmp(admin, "metrics") == 0);

    if (need == 3 && (rq->admin || metrics)) {
        rq->user = NULL;
        rq->subject = NULL;
        return 0;
    }

    if (!rq->admin && (user == NULL || user[0] == '\0')) {
        cfcost_req_error(rq, 401, "missing identity: use an API key or the "
                         "admin token");
        return -1;
    }

    if (need >= 2 && !rq->admin) {
        cfcost_req_error(rq, 403, need == 3 ? "the admin or the metrics "
                         "token only" : "admin only");
        return -1;
    }

    want = cfcost_req_arg(rq, "user");
    if (want != NULL && want[0] == '\0') {
        want = NULL;
    }

    if (rq->admin) {
        rq->user = NULL;
        rq->subject = want;
        return 0;
    }

    if (want != NULL && strcmp(want, user) != 0) {
        cfcost_req_error(rq, 403, "an API key sees only its own user's "
                         "usage");
        return -1;
    }

    rq->user = user;
    rq->subject = user;

    return 0;
}


/*
 * On the unix socket, identity headers count only from the gateway's
 * user: the aggregator's own (make run and the systemd units run nginx's
 * workers as it), root, or --trust-user (an nginx whose workers run as
 * www-data).  Whoever else reaches the socket (a mode left wider than
 * 0600) is nobody, so X-Cfcost-Admin from a local user reads nothing.
 * Loopback TCP, for tests and development, trusts every local user:
 * README, "Who can do what".
 */
static int
cfcost_http_peer_trusted(cfcost_http_t *h, struct evhttp_request *req)
{
    int                        fd;
    socklen_t                  len;
    struct ucred               uc;
    struct bufferevent        *bev;
    struct evhttp_connection  *evcon;

    if (h->unix_fd < 0) {
        return 1;
    }

    evcon = evhttp_request_get_connection(req);
    bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    fd = bev ? bufferevent_getfd(bev) : -1;
    len = sizeof(uc);

    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) {
        return 0;
    }

    return uc.uid == geteuid() || uc.uid == 0
           || (h->agg->conf.trust_uid >= 0
               && uc.uid == (uid_t) h->agg->conf.trust_uid);
}


static void
cfcost_http_handle(struct evhttp_request *req, void *arg)
{
    int                        need;
    const char                *path, *query;
    cfcost_req_t              *rq;
    cfcost_http_t             *h = arg;
    const cfcost_route_t      *route;
    const struct evhttp_uri   *uri;

    rq = cfcost_req_create(h->agg, req, &h->live);
    if (rq == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }

    uri = evhttp_request_get_evhttp_uri(req);
    path = uri ? evhttp_uri_get_path(uri) : NULL;
    query = uri ? evhttp_uri_get_query(uri) : NULL;

    if (path == NULL
        || (query != NULL && evhttp_parse_query_str(query, &rq->query) != 0))
    {
        cfcost_req_error(rq, 400, "malformed request line");
        return;
    }

    for (route = cfcost_routes; route->path != NULL; route++) {
        if (strcmp(route->path, path) == 0) {
            break;
        }
    }

    if (route->path == NULL) {
        cfcost_req_error(rq, 404, "not found");
        return;
    }

    need = route->identity;
    if (need == 3 && h->agg->conf.metrics_open) {
        need = 0;
    }

    if (need && !cfcost_http_peer_trusted(h, req)) {
        cfcost_req_error(rq, 403, "identity is taken from the gateway's "
                         "own user only");
        return;
    }

    if (need && cfcost_req_identity(rq, need) != 0) {
        return;
    }

    route->handler(rq);
}


/* ---- listening ---------------------------------------------------------- */


/*
 * A socket file at the path: a dead aggregator's leftover (connecting is
 * refused) is removed; one something answers on, or that cannot be
 * probed, stays and we refuse to start.  The probe does not block: a live
 * server with a full backlog answers EAGAIN.  Returns 0 when the path is
 * free now, or -1 with a reason in err.
 */
static int
cfcost_http_stale(const struct sockaddr_un *sun, char *err, size_t errlen)
{
    int  fd, rc, e;

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd == -1 || evutil_make_socket_nonblocking(fd) != 0) {
        snprintf(err, errlen, "socket(): %s", strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        return -1;
    }

    rc = connect(fd, (const struct sockaddr *) sun, sizeof(*sun));
    e = errno;
    close(fd);

    if (rc == 0 || e == EAGAIN || e == EINPROGRESS) {
        snprintf(err, errlen, "%s: another process is listening there",
                 sun->sun_path);
        return -1;
    }

    if (e != ECONNREFUSED) {
        snprintf(err, errlen, "%s exists and cannot be probed: %s",
                 sun->sun_path, strerror(e));
        return -1;
    }

    if (unlink(sun->sun_path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove the stale socket %s: %s",
                 sun->sun_path, strerror(errno));
        return -1;
    }

    cfcost_log_warn("removed the stale socket %s (nothing answered on it)",
                    sun->sun_path);
    return 0;
}


static int
cfcost_http_unix(cfcost_http_t *h, const char *path, char *err,
    size_t errlen)
{
    int                 fd;
    struct stat         st;
    struct sockaddr_un  sun;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;

    if (path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "bad unix socket path \"%s\"", path);
        return -1;
    }

    strcpy(sun.sun_path, path);

    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)
        && cfcost_http_stale(&sun, err, errlen) != 0)
    {
        return -1;
    }

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd == -1) {
        snprintf(err, errlen, "socket(): %s", strerror(errno));
        return -1;
    }

    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0) {
        snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
        goto failed;
    }

    strcpy(h->unix_path, path);

    if (chmod(path, h->agg->conf.socket_mode) != 0
        || listen(fd, 511) != 0
        || evutil_make_socket_nonblocking(fd) != 0
        || evutil_make_socket_closeonexec(fd) != 0
        || evhttp_accept_socket(h->http, fd) != 0)
    {
        snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
        goto failed;
    }

    h->unix_fd = fd;
    return 0;

failed:

    close(fd);
    return -1;
}


/* Loopback only: the identity headers are trusted, so nothing else may
 * reach us. */
static int
cfcost_http_tcp(cfcost_http_t *h, const char *spec, char *err,
    size_t errlen)
{
    long             port;
    char            *end, host[64];
    size_t           hlen;
    const char      *colon, *p;
    struct in_addr   a4;
    struct in6_addr  a6;

    colon = strrchr(spec, ':');
    if (colon == NULL) {
        goto bad;
    }

    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        goto bad;
    }

    p = spec;
    hlen = (size_t) (colon - spec);
    if (hlen >= 2 && p[0] == '[' && p[hlen - 1] == ']') {
        p++;
        hlen -= 2;
    }

    if (hlen == 0 || hlen >= sizeof(host)) {
        goto bad;
    }

    memcpy(host, p, hlen);
    host[hlen] = '\0';

    if (strcmp(host, "localhost") == 0) {
        strcpy(host, "127.0.0.1");
    }

    if (inet_pton(AF_INET, host, &a4) == 1) {
        if ((ntohl(a4.s_addr) >> 24) != 127) {
            goto remote;
        }

    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6)) {
            goto remote;
        }

    } else {
        goto bad;
    }

    if (evhttp_bind_socket(h->http, host, (uint16_t) port) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec,
                 strerror(errno));
        return -1;
    }

    return 0;

remote:

    snprintf(err, errlen, "refusing to listen on %s: not a loopback "
             "address (the identity headers would be forgeable)", spec);
    return -1;

bad:

    snprintf(err, errlen, "bad --listen \"%s\": want unix:/path or "
             "127.0.0.1:PORT", spec);
    return -1;
}


int
cfcost_http_create(cfcost_agg_t *agg, char *err, size_t errlen)
{
    int             rc;
    const char     *spec;
    cfcost_http_t  *h;

    h = calloc(1, sizeof(cfcost_http_t));
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    h->agg = agg;
    h->unix_fd = -1;
    h->live.next = h->live.prev = &h->live;

    h->http = evhttp_new(agg->base);
    if (h->http == NULL) {
        snprintf(err, errlen, "evhttp_new() failed");
        free(h);
        return -1;
    }

    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(h->http, CFCOST_HTTP_TIMEOUT_S);
    evhttp_set_max_headers_size(h->http, CFCOST_HTTP_MAX_HEADERS);
    evhttp_set_max_body_size(h->http, CFCOST_HTTP_MAX_BODY);
    evhttp_set_gencb(h->http, cfcost_http_handle, h);

    spec = agg->conf.listen;

    if (strncmp(spec, "unix:", 5) == 0) {
        rc = cfcost_http_unix(h, spec + 5, err, errlen);
    } else {
        rc = cfcost_http_tcp(h, spec, err, errlen);
    }

    if (rc != 0) {
        evhttp_free(h->http);
        free(h);
        return -1;
    }

    agg->http = h;

    return 0;
}


void
cfcost_http_free(cfcost_http_t *h)
{
    if (h == NULL) {
        return;
    }

    /* Redis is gone by now: nothing waits for a reply, only for writes */
    while (h->live.next != &h->live) {
        cfcost_req_release(h->live.next);
    }

    evhttp_free(h->http);          /* closes the listening sockets too */

    if (h->unix_path[0] != '\0') {
        unlink(h->unix_path);
    }

    free(h);
}
