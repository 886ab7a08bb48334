/*
 * HTTP core of the aggregator: listening (loopback / unix socket only),
 * routing, identity, and the per-request state the routes run on.  See
 * cfcost_agg_http.h and cfcost_agg_routes.h.
 *
 * libevent keeps an evhttp_request alive until we answer it, even when
 * the client has gone (it is detached from its connection, and answering
 * then frees it), so the request pointer stays valid for as long as our
 * state lives.  The connection's close callback only tells us to stop
 * early.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_out.h"
#include "cfcost_agg_redis.h"
#include "cfcost_agg_http.h"
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
    int                  identity;  /* 0: none, 1: user or admin, 2: admin */
} cfcost_route_t;


static const cfcost_route_t  cfcost_routes[] = {
    { "/api/usage",            cfcost_route_usage,      1 },
    { "/api/usage/logs",       cfcost_route_logs,       1 },
    { "/api/usage/timeseries", cfcost_route_timeseries, 1 },
    { "/metrics",              cfcost_route_metrics,    2 },
    { "/healthz",              cfcost_route_healthz,    0 },
    { NULL, NULL, 0 }
};


/* ---- request state ------------------------------------------------------ */


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
static void
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


/* ---- dispatch ----------------------------------------------------------- */


/*
 * Who is asking: nginx sets X-Cfcost-User (an API key's user) or
 * X-Cfcost-Admin: 1 (the admin token) itself.  Returns 0, or answers
 * 401/403 and returns -1.
 */
static int
cfcost_req_identity(cfcost_req_t *rq, int admin_only)
{
    const char                *admin, *user, *want;
    struct evkeyvalq          *in;

    in = evhttp_request_get_input_headers(rq->req);
    admin = evhttp_find_header(in, CFCOST_HDR_ADMIN);
    user = evhttp_find_header(in, CFCOST_HDR_USER);

    rq->admin = (admin != NULL && strcmp(admin, "1") == 0);

    if (!rq->admin && (user == NULL || user[0] == '\0')) {
        cfcost_req_error(rq, 401, "missing identity: use an API key or the "
                         "admin token");
        return -1;
    }

    if (admin_only && !rq->admin) {
        cfcost_req_error(rq, 403, "admin only");
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


static void
cfcost_http_handle(struct evhttp_request *req, void *arg)
{
    int                        need;
    const char                *path, *query;
    cfcost_req_t              *rq;
    cfcost_http_t             *h = arg;
    const cfcost_route_t      *route;
    const struct evhttp_uri   *uri;

    rq = calloc(1, sizeof(cfcost_req_t));
    if (rq == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }

    rq->agg = h->agg;
    rq->req = req;
    TAILQ_INIT(&rq->query);

    rq->next = h->live.next;
    rq->prev = &h->live;
    h->live.next->prev = rq;
    h->live.next = rq;

    evhttp_connection_set_closecb(evhttp_request_get_connection(req),
                                  cfcost_req_closed, rq);

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
    if (need == 2 && h->agg->conf.metrics_open) {
        need = 0;
    }

    if (need && cfcost_req_identity(rq, need == 2) != 0) {
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
