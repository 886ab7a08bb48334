/*
 * The Redis address parser: see cfcost_addr.h for the rules.
 *
 * The checks are written out here rather than left to getaddrinfo(),
 * which also takes "127.1", "0x7f.0.0.1" and "010.0.0.1" (octal): texts
 * that mean something other than what they look like, and that a host
 * name rule alone would let through.  Only the inside of "[...]" goes to
 * inet_pton(AF_INET6), whose syntax has no such surprises.
 */

#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cfcost_addr.h"


#define CFCOST_ADDR_LABEL_MAX  63
#define CFCOST_ADDR_NAME_MAX   253
#define CFCOST_ADDR_IPV6_MAX   45       /* INET6_ADDRSTRLEN - 1 */


static int cfcost_addr_fail(const char *s, size_t len, cfcost_addr_t *a,
    char *err, size_t errlen, const char *why);


/* Returns 1 when c is an ASCII digit. */
static int
cfcost_addr_digit(char c)
{
    return c >= '0' && c <= '9';
}


/* Returns 1 when c is an ASCII letter or digit. */
static int
cfcost_addr_alnum(char c)
{
    return cfcost_addr_digit(c) || (c >= 'a' && c <= 'z')
           || (c >= 'A' && c <= 'Z');
}


/*
 * Parses s[0..len) as a port: 1-5 digits, no leading zero, 1..65535.
 * Returns the port, or 0.
 */
static int
cfcost_addr_port(const char *s, size_t len)
{
    size_t  i;
    long    v;

    if (len == 0 || len > 5 || s[0] == '0') {
        return 0;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (!cfcost_addr_digit(s[i])) {
            return 0;
        }

        v = v * 10 + (s[i] - '0');
    }

    return v <= 65535 ? (int) v : 0;
}


/*
 * Returns 1 when s[0..len) is a dotted-quad IPv4 address: four octets of
 * 1-3 digits, 0-255, no leading zero (which libc would read as octal).
 */
static int
cfcost_addr_ipv4(const char *s, size_t len)
{
    size_t  i, digits, octets;
    int     v;

    digits = 0;
    octets = 0;
    v = 0;

    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (digits == 0 || v > 255 || (digits > 1 && s[i - digits] == '0'))
            {
                return 0;
            }

            octets++;
            digits = 0;
            v = 0;
            continue;
        }

        if (!cfcost_addr_digit(s[i]) || ++digits > 3) {
            return 0;
        }

        v = v * 10 + (s[i] - '0');
    }

    return octets == 4;
}


/*
 * Returns 1 when the last dot-separated label of s[0..len) is all digits:
 * such a text is meant as an IPv4 address, never a name (RFC 3696 2).
 */
static int
cfcost_addr_numeric(const char *s, size_t len)
{
    size_t  i;

    for (i = len; i > 0 && s[i - 1] != '.'; i--) {
        if (!cfcost_addr_digit(s[i - 1])) {
            return 0;
        }
    }

    return i < len;
}


/* Returns 1 when s[0..len) is a host name of RFC 1123 labels. */
static int
cfcost_addr_name(const char *s, size_t len)
{
    size_t  i, label;

    if (len == 0 || len > CFCOST_ADDR_NAME_MAX) {
        return 0;
    }

    label = 0;

    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return 0;
            }

            label = 0;
            continue;
        }

        if (s[i] == '-') {
            if (label == 0) {
                return 0;
            }

        } else if (!cfcost_addr_alnum(s[i])) {
            return 0;
        }

        if (++label > CFCOST_ADDR_LABEL_MAX) {
            return 0;
        }
    }

    return 1;
}


/* Parses "unix:" followed by p[0..len). */
static int
cfcost_addr_unix(const char *s, size_t slen, const char *p, size_t len,
    cfcost_addr_t *a, char *err, size_t errlen)
{
    size_t  i;

    if (len < 2 || p[0] != '/') {
        return cfcost_addr_fail(s, slen, a, err, errlen,
                                "the unix socket path must be absolute");
    }

    if (len >= CFCOST_ADDR_PATH_MAX) {
        return cfcost_addr_fail(s, slen, a, err, errlen,
                                "the unix socket path is longer than "
                                "107 bytes");
    }

    for (i = 0; i < len; i++) {
        if ((unsigned char) p[i] < 0x20 || p[i] == 0x7f) {
            return cfcost_addr_fail(s, slen, a, err, errlen,
                                    "the unix socket path holds a control "
                                    "character");
        }
    }

    a->kind = CFCOST_ADDR_UNIX;
    memcpy(a->path, p, len);
    a->path[len] = '\0';

    return 0;
}


/* Parses "[" h[0..len) "]": the inside of the brackets. */
static int
cfcost_addr_ipv6(const char *s, size_t slen, const char *h, size_t len,
    cfcost_addr_t *a, char *err, size_t errlen)
{
    char             text[CFCOST_ADDR_IPV6_MAX + 1];
    struct in6_addr  bin;

    if (len == 0 || len > CFCOST_ADDR_IPV6_MAX || memchr(h, '\0', len)) {
        goto failed;
    }

    memcpy(text, h, len);
    text[len] = '\0';

    if (inet_pton(AF_INET6, text, &bin) != 1) {
        goto failed;
    }

    a->kind = CFCOST_ADDR_IPV6;
    memcpy(a->host, text, len + 1);

    return 0;

failed:

    return cfcost_addr_fail(s, slen, a, err, errlen,
                            "not an IPv6 address inside the brackets");
}


int
cfcost_addr_parse(const char *s, size_t len, cfcost_addr_t *a, char *err,
    size_t errlen)
{
    size_t       hlen;
    const char  *colon, *close, *end;

    memset(a, 0, sizeof(cfcost_addr_t));

    if (len == 0) {
        return cfcost_addr_fail(s, len, a, err, errlen, "it is empty");
    }

    if (len >= 5 && memcmp(s, "unix:", 5) == 0) {
        return cfcost_addr_unix(s, len, s + 5, len - 5, a, err, errlen);
    }

    end = s + len;

    if (s[0] == '[') {
        close = memchr(s, ']', len);

        if (close == NULL) {
            return cfcost_addr_fail(s, len, a, err, errlen,
                                    "no ']' after the IPv6 address");
        }

        colon = close + 1;

        if (colon == end || *colon != ':') {
            return cfcost_addr_fail(s, len, a, err, errlen,
                                    "no :PORT just after ']'");
        }

    } else {
        close = NULL;

        for (colon = end - 1; colon > s && *colon != ':'; colon--) {
            /* void */
        }

        if (*colon != ':') {
            return cfcost_addr_fail(s, len, a, err, errlen,
                                    "no :PORT (or unix: before a socket "
                                    "path)");
        }
    }

    a->port = cfcost_addr_port(colon + 1, end - colon - 1);
    if (a->port == 0) {
        return cfcost_addr_fail(s, len, a, err, errlen,
                                "the port must be 1-65535, in decimal");
    }

    if (close != NULL) {
        return cfcost_addr_ipv6(s, len, s + 1, close - s - 1, a, err, errlen);
    }

    hlen = colon - s;

    if (hlen == 0) {
        return cfcost_addr_fail(s, len, a, err, errlen, "no host");
    }

    if (memchr(s, ':', hlen) != NULL) {
        return cfcost_addr_fail(s, len, a, err, errlen,
                                "an IPv6 address goes in brackets, as in "
                                "[::1]:6379");
    }

    if (cfcost_addr_numeric(s, hlen)) {
        if (!cfcost_addr_ipv4(s, hlen)) {
            return cfcost_addr_fail(s, len, a, err, errlen,
                                    "not an IPv4 address (four octets "
                                    "0-255, no leading zeros)");
        }

        a->kind = CFCOST_ADDR_IPV4;

    } else if (cfcost_addr_name(s, hlen)) {
        a->kind = CFCOST_ADDR_NAME;

    } else {
        return cfcost_addr_fail(s, len, a, err, errlen,
                                "not a host name (RFC 1123: labels of "
                                "letters, digits and '-', at most 63 "
                                "bytes each and 253 in all)");
    }

    memcpy(a->host, s, hlen);
    a->host[hlen] = '\0';

    return 0;
}


/* Zeroes *a, writes the error line into err; returns -1. */
static int
cfcost_addr_fail(const char *s, size_t len, cfcost_addr_t *a, char *err,
    size_t errlen, const char *why)
{
    size_t  i, n;

    memset(a, 0, sizeof(cfcost_addr_t));

    if (err == NULL || errlen == 0) {
        return -1;
    }

    n = (size_t) snprintf(err, errlen, "bad Redis address \"");

    /* the address as given, control characters shown as '?' */
    for (i = 0; i < len && n + 1 < errlen && i < 256; i++, n++) {
        err[n] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    }

    if (n < errlen) {
        snprintf(err + n, errlen - n, "\": %s; want " CFCOST_ADDR_FORMS, why);

    } else {
        err[errlen - 1] = '\0';
    }

    return -1;
}


int
cfcost_addr_resolve(cfcost_addr_t *a, char *err, size_t errlen)
{
    int               rc;
    const void       *bin;
    struct addrinfo   hints, *res, *ai, *pick;

    if (a->kind != CFCOST_ADDR_NAME) {
        return 0;
    }

    memset(&hints, 0, sizeof(struct addrinfo));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(a->host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve Redis host \"%s\": %s",
                 a->host, gai_strerror(rc));
        return -1;
    }

    pick = NULL;

    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }

        if (ai->ai_family == AF_INET6 && pick == NULL) {
            pick = ai;
        }
    }

    if (pick == NULL) {
        freeaddrinfo(res);
        snprintf(err, errlen, "Redis host \"%s\" has no IPv4 or IPv6 "
                 "address", a->host);
        return -1;
    }

    if (pick->ai_family == AF_INET) {
        bin = &((struct sockaddr_in *) (void *) pick->ai_addr)->sin_addr;
        a->kind = CFCOST_ADDR_IPV4;

    } else {
        bin = &((struct sockaddr_in6 *) (void *) pick->ai_addr)->sin6_addr;
        a->kind = CFCOST_ADDR_IPV6;
    }

    /* a numeric address is never longer than a host name buffer */
    inet_ntop(pick->ai_family, bin, a->host, sizeof(a->host));
    freeaddrinfo(res);

    return 0;
}


size_t
cfcost_addr_str(const cfcost_addr_t *a, char *buf, size_t len)
{
    int  n;

    switch (a->kind) {

    case CFCOST_ADDR_UNIX:
        n = snprintf(buf, len, "unix:%s", a->path);
        break;

    case CFCOST_ADDR_IPV6:
        n = snprintf(buf, len, "[%s]:%d", a->host, a->port);
        break;

    default:
        n = snprintf(buf, len, "%s:%d", a->host, a->port);
    }

    return n < 0 ? 0 : (size_t) n;
}
