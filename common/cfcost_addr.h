/*
 * The Redis address: one rule set for the module (cfcost_redis), the
 * aggregator (--redis) and the CLI (--redis, CFCOST_REDIS).  Pure C, no
 * nginx, no libevent.
 *
 * An address is exactly one of:
 *
 *   unix:/absolute/path   a unix socket; the path starts with "/", is at
 *                         most 107 bytes (sun_path holds 108 with the
 *                         NUL) and has no control character;
 *   IPv4:PORT             four decimal octets 0-255, no leading zeros
 *                         ("127.0.0.1:6379");
 *   [IPv6]:PORT           an IPv6 address in brackets ("[::1]:6379"), no
 *                         zone ("%eth0");
 *   HOST:PORT             a host name of RFC 1123 labels: 1-63 letters,
 *                         digits and "-" each, not beginning or ending with
 *                         "-", dot-separated, 253 bytes in all, no trailing
 *                         dot; the last label is not all digits (RFC 3696:
 *                         "10.1" or "0x7f.0.0.1" are not names, and not
 *                         IPv4 addresses either).
 *
 * PORT is 1-65535 in decimal, without sign or leading zero, and is always
 * given.  Nothing else is accepted: no white space, no default port, no
 * relative unix path, no bare IPv6, no URL scheme.
 */

#ifndef CFCOST_ADDR_H
#define CFCOST_ADDR_H

#include <stddef.h>


#define CFCOST_ADDR_UNIX       1
#define CFCOST_ADDR_IPV4       2
#define CFCOST_ADDR_IPV6       3
#define CFCOST_ADDR_NAME       4

#define CFCOST_ADDR_PATH_MAX   108      /* sun_path, the NUL included */
#define CFCOST_ADDR_HOST_MAX   254      /* a 253-byte name and the NUL */

/* the forms, for help texts and error messages */
#define CFCOST_ADDR_FORMS                                                    \
    "unix:/absolute/path, IPv4:PORT, [IPv6]:PORT or HOST:PORT"


typedef struct {
    int     kind;                       /* CFCOST_ADDR_UNIX ... _NAME */
    int     port;                       /* 1-65535; 0 for a unix socket */
    char    path[CFCOST_ADDR_PATH_MAX]; /* unix: the path */
    char    host[CFCOST_ADDR_HOST_MAX]; /* the IPv4 or IPv6 address (no
                                           brackets) or the host name */
} cfcost_addr_t;


/*
 * Parses s[0..len) (no NUL needed) by the rules above.  Returns 0 with *a
 * filled, or -1 with *a zeroed and, in err (errlen bytes, NUL-terminated),
 * one line naming the address, what is wrong and the accepted forms:
 *
 *   bad Redis address "x:0": the port must be 1-65535 (want unix:/...)
 *
 * No allocation, no resolving, no system call.
 */
int cfcost_addr_parse(const char *s, size_t len, cfcost_addr_t *a,
    char *err, size_t errlen);

/*
 * Turns a CFCOST_ADDR_NAME into the first IPv4 address it resolves to, or
 * the first IPv6 one when it has none (nginx's order), kind set to match;
 * other kinds are left alone.  Blocking (getaddrinfo): call it at start or
 * configuration time only, never from an event loop.  Returns 0, or -1
 * with a reason in err.
 */
int cfcost_addr_resolve(cfcost_addr_t *a, char *err, size_t errlen);

/*
 * Writes a in the form it was parsed from ("unix:/p", "127.0.0.1:6379",
 * "[::1]:6379", "redis.internal:6379") into buf (len bytes, always
 * NUL-terminated).  Returns the length the whole text needs, as snprintf.
 */
size_t cfcost_addr_str(const cfcost_addr_t *a, char *buf, size_t len);

#endif /* CFCOST_ADDR_H */
