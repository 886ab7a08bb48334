/*
 * reqtimes: the time of every request on one keep-alive connection.
 *
 *   reqtimes -p PORT -n N -b BODY [-H "Name: value"]... [-u PATH]
 *
 * Sends N POST requests with BODY to 127.0.0.1:PORT, one after the other
 * on one connection, and prints a line per request: its start and its
 * duration, in nanoseconds of CLOCK_MONOTONIC (the clock `perf record -k
 * CLOCK_MONOTONIC` stamps its events with, so that a request can be laid
 * over a scheduler trace: bench/sched-tail.py).  The clock starts just
 * before the request is written and stops when the last byte of the
 * response (Content-Length) has arrived.
 *
 * Exit status 0 when every response was a 200, 1 otherwise, 2 on a usage
 * error.
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define RT_MAX_HEADERS  16
#define RT_BUF          65536


static long long
rt_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}


/* The value of Content-Length in the header h (len bytes), or -1. */
static long
rt_content_length(const char *h, size_t len)
{
    size_t       i;
    const char  *name = "\ncontent-length:";
    size_t       nlen = strlen(name);

    for (i = 0; i + nlen <= len; i++) {
        if (strncasecmp(h + i, name, nlen) == 0) {
            return strtol(h + i + nlen, NULL, 10);
        }
    }

    return -1;
}


/* Reads one response; 0 and *status, or -1. */
static int
rt_read_response(int fd, char *buf, int *status)
{
    long     clen;
    size_t   got, need;
    ssize_t  n;
    char    *end;

    got = 0;
    need = 0;

    for ( ;; ) {
        if (got == RT_BUF) {
            fprintf(stderr, "reqtimes: response larger than %d bytes\n",
                    RT_BUF);
            return -1;
        }

        n = read(fd, buf + got, RT_BUF - got);
        if (n <= 0) {
            fprintf(stderr, "reqtimes: connection closed or failed\n");
            return -1;
        }

        got += (size_t) n;

        if (need == 0) {
            end = memmem(buf, got, "\r\n\r\n", 4);
            if (end == NULL) {
                continue;
            }

            clen = rt_content_length(buf, (size_t) (end - buf));
            if (clen < 0) {
                fprintf(stderr, "reqtimes: no Content-Length\n");
                return -1;
            }

            need = (size_t) (end + 4 - buf) + (size_t) clen;
            *status = (got > 12) ? atoi(buf + 9) : 0;
        }

        if (got >= need) {
            return 0;
        }
    }
}


int
main(int argc, char **argv)
{
    int                  fd, one, opt, port, status, failed;
    long                 i, n;
    size_t               len, nh;
    ssize_t              w;
    char                *req, *buf, *p;
    long long           *t;
    const char          *body, *path, *headers[RT_MAX_HEADERS];
    struct sockaddr_in   sa;

    port = 0;
    n = 0;
    body = NULL;
    path = "/api/ai/chat";
    nh = 0;

    while ((opt = getopt(argc, argv, "p:n:b:H:u:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 'b': body = optarg; break;
        case 'u': path = optarg; break;
        case 'H':
            if (nh == RT_MAX_HEADERS) {
                fprintf(stderr, "reqtimes: too many headers\n");
                return 2;
            }
            headers[nh++] = optarg;
            break;
        default:
            return 2;
        }
    }

    if (port <= 0 || port > 65535 || n <= 0 || body == NULL) {
        fprintf(stderr, "usage: reqtimes -p PORT -n N -b BODY "
                        "[-H 'Name: value']... [-u PATH]\n");
        return 2;
    }

    len = strlen(path) + strlen(body) + 256;
    for (i = 0; i < (long) nh; i++) {
        len += strlen(headers[i]) + 2;
    }

    req = malloc(len);
    buf = malloc(RT_BUF);
    t = malloc(sizeof(long long) * 2 * (size_t) n);
    if (req == NULL || buf == NULL || t == NULL) {
        fprintf(stderr, "reqtimes: out of memory\n");
        return 1;
    }

    p = req + sprintf(req, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/json\r\n", path);
    for (i = 0; i < (long) nh; i++) {
        p += sprintf(p, "%s\r\n", headers[i]);
    }
    p += sprintf(p, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    len = (size_t) (p - req);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short) port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (fd == -1 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        perror("reqtimes: connect");
        return 1;
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    failed = 0;

    for (i = 0; i < n; i++) {
        t[2 * i] = rt_now_ns();

        w = write(fd, req, len);
        if (w != (ssize_t) len) {
            perror("reqtimes: write");
            return 1;
        }

        if (rt_read_response(fd, buf, &status) != 0) {
            return 1;
        }

        t[2 * i + 1] = rt_now_ns() - t[2 * i];
        failed += (status != 200);
    }

    for (i = 0; i < n; i++) {
        printf("%lld %lld\n", t[2 * i], t[2 * i + 1]);
    }

    if (failed) {
        fprintf(stderr, "reqtimes: %d responses were not 200\n", failed);
    }

    return failed ? 1 : 0;
}
