/*
 * ttfb: time to the first body byte of an HTTP response, over loopback.
 *
 *   ttfb -n N -b BODY [-H "Name: value"]... [-t SECONDS] NAME=PORT/PATH...
 *
 * Sends N POST requests with BODY to each target, alternating between the
 * targets request by request so that both see the same machine.  Each
 * request has its own connection (Connection: close): the clock starts
 * once the connection is up, just before the request is written, and
 * stops when the first byte after the response header arrives.  The rest
 * of the response is read to the end.
 *
 * Prints one JSON object: {"NAME": {"n", "ok" (status 200 and a body
 * ending in "data: [DONE]" when it is a stream), "non200", "failed",
 * "p50_us", "p90_us", "p99_us", "mean_us", "min_us"}, ...}.  Exit status 0
 * when every request was answered, 1 otherwise, 2 on a usage error.
 */

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define TTFB_MAX_TARGETS  8
#define TTFB_MAX_HEADERS  16
#define TTFB_BUF          65536


typedef struct {
    const char  *name;
    int          port;
    const char  *path;
    double      *samples;
    long         n;
    long         ok;
    long         non200;
    long         failed;
} ttfb_target_t;


static double
ttfb_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


/* Waits for fd to be readable until deadline (µs); 0 ready, -1 timeout. */
static int
ttfb_wait(int fd, double deadline)
{
    int            ms, rc;
    struct pollfd  p;

    for ( ;; ) {
        ms = (int) ((deadline - ttfb_now_us()) / 1000);
        if (ms < 0) {
            return -1;
        }
        p.fd = fd;
        p.events = POLLIN;
        rc = poll(&p, 1, ms + 1);
        if (rc > 0) {
            return 0;
        }
        if (rc == 0 || errno != EINTR) {
            return -1;
        }
    }
}


/*
 * One request.  Returns 0 when a response header and at least one body
 * byte arrived (*us is the time to that byte, *status the status code,
 * *stream_ok whether the whole body ended with a [DONE] event), -1 when
 * not.
 */
static int
ttfb_one(ttfb_target_t *t, const char *req, size_t reqlen, double timeout_us,
    double *us, int *status, int *done_seen)
{
    int                 fd, one, got_first;
    char               *buf, *hend;
    size_t              len, off;
    ssize_t             n;
    double              t0, deadline;
    struct sockaddr_in  sa;

    buf = malloc(TTFB_BUF + 1);
    if (buf == NULL) {
        return -1;
    }

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        goto failed;
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short) t->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        goto failed;
    }

    t0 = ttfb_now_us();
    deadline = t0 + timeout_us;

    for (off = 0; off < reqlen; off += (size_t) n) {
        n = write(fd, req + off, reqlen - off);
        if (n <= 0) {
            goto failed;
        }
    }

    len = 0;
    got_first = 0;
    hend = NULL;
    *status = 0;

    for ( ;; ) {
        if (ttfb_wait(fd, deadline) != 0) {
            goto failed;
        }

        if (len == TTFB_BUF) {              /* keep the tail only */
            memmove(buf, buf + TTFB_BUF / 2, TTFB_BUF / 2);
            len = TTFB_BUF / 2;
            if (hend != NULL) {
                hend = buf;
            }
        }

        n = read(fd, buf + len, TTFB_BUF - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t) n;
        buf[len] = '\0';

        if (hend == NULL) {
            hend = strstr(buf, "\r\n\r\n");
            if (hend == NULL) {
                continue;
            }
            hend += 4;
            if (sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
                goto failed;
            }
        }

        if (!got_first && buf + len > hend) {
            *us = ttfb_now_us() - t0;
            got_first = 1;
        }
    }

    close(fd);
    fd = -1;

    if (!got_first) {
        goto failed;
    }

    buf[len] = '\0';
    *done_seen = strstr(hend, "data: [DONE]") != NULL;

    free(buf);
    return 0;

failed:

    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return -1;
}


static int
ttfb_cmp(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static double
ttfb_pct(const double *s, long n, double p)
{
    long  k;

    if (n == 0) {
        return 0;
    }
    k = (long) (p / 100 * n + 0.999999);
    if (k < 1) {
        k = 1;
    }
    if (k > n) {
        k = n;
    }
    return s[k - 1];
}


static void
ttfb_usage(void)
{
    fprintf(stderr, "usage: ttfb -n N -b BODY [-H 'Name: value']... "
            "[-t SECONDS] NAME=PORT/PATH...\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int             c, i, nt, nh, status, done_seen, bad;
    long            n, k;
    char           *req, *slash, *eq;
    size_t          reqlen, cap;
    double          us, timeout_us, sum;
    const char     *body, *headers[TTFB_MAX_HEADERS];
    ttfb_target_t   t[TTFB_MAX_TARGETS], *tp;

    n = 0;
    nh = 0;
    body = NULL;
    timeout_us = 10e6;

    while ((c = getopt(argc, argv, "n:b:H:t:")) != -1) {
        switch (c) {
        case 'n':
            n = atol(optarg);
            break;
        case 'b':
            body = optarg;
            break;
        case 'H':
            if (nh == TTFB_MAX_HEADERS) {
                ttfb_usage();
            }
            headers[nh++] = optarg;
            break;
        case 't':
            timeout_us = atof(optarg) * 1e6;
            break;
        default:
            ttfb_usage();
        }
    }

    if (n <= 0 || body == NULL || optind == argc
        || argc - optind > TTFB_MAX_TARGETS)
    {
        ttfb_usage();
    }

    nt = 0;
    for (i = optind; i < argc; i++) {
        eq = strchr(argv[i], '=');
        slash = eq ? strchr(eq, '/') : NULL;
        if (eq == NULL || slash == NULL) {
            ttfb_usage();
        }
        *eq = '\0';
        tp = &t[nt++];
        memset(tp, 0, sizeof(*tp));
        tp->name = argv[i];
        tp->port = atoi(eq + 1);
        tp->path = slash;
        tp->samples = calloc((size_t) n, sizeof(double));
        if (tp->samples == NULL || tp->port <= 0) {
            ttfb_usage();
        }
    }

    cap = strlen(body) + 4096;
    for (i = 0; i < nh; i++) {
        cap += strlen(headers[i]) + 2;
    }
    req = malloc(cap);
    if (req == NULL) {
        return 1;
    }

    bad = 0;

    for (k = 0; k < n; k++) {
        for (i = 0; i < nt; i++) {
            tp = &t[i];
            reqlen = (size_t) snprintf(req, cap,
                "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n", tp->path, strlen(body));
            for (c = 0; c < nh; c++) {
                reqlen += (size_t) snprintf(req + reqlen, cap - reqlen,
                                            "%s\r\n", headers[c]);
            }
            reqlen += (size_t) snprintf(req + reqlen, cap - reqlen,
                                        "\r\n%s", body);

            done_seen = 0;
            if (ttfb_one(tp, req, reqlen, timeout_us, &us, &status,
                         &done_seen) != 0)
            {
                tp->failed++;
                bad = 1;
                continue;
            }

            tp->samples[tp->n++] = us;
            if (status == 200 && done_seen) {
                tp->ok++;
            } else {
                tp->non200 += (status != 200);
                bad = 1;
            }
        }
    }

    printf("{");
    for (i = 0; i < nt; i++) {
        tp = &t[i];
        qsort(tp->samples, (size_t) tp->n, sizeof(double), ttfb_cmp);
        sum = 0;
        for (k = 0; k < tp->n; k++) {
            sum += tp->samples[k];
        }
        printf("%s\"%s\":{\"n\":%ld,\"ok\":%ld,\"non200\":%ld,\"failed\":%ld,"
               "\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
               "\"p99_us\":%.1f,\"mean_us\":%.1f}",
               i ? "," : "", tp->name, tp->n, tp->ok, tp->non200,
               tp->failed, tp->n ? tp->samples[0] : 0.0,
               ttfb_pct(tp->samples, tp->n, 50),
               ttfb_pct(tp->samples, tp->n, 90),
               ttfb_pct(tp->samples, tp->n, 99),
               tp->n ? sum / tp->n : 0.0);
    }
    printf("}\n");

    return bad;
}
