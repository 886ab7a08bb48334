/*
 * Unit tests for common/cfcost_addr.c: every class of Redis address the
 * one rule set accepts, and every class it refuses, with the reason.
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_addr.h"
#include "tap.h"


typedef struct {
    const char  *text;
    int          kind;          /* 0: refused */
    const char  *host;          /* host or path kept; or, when refused, a
                                   word the reason must contain */
    int          port;
} acase_t;


#define NCASES(a)  (sizeof(a) / sizeof((a)[0]))


static const acase_t  cases[] = {

    /* unix:/absolute/path */
    { "unix:/var/lib/cfcost/redis.sock", CFCOST_ADDR_UNIX,
      "/var/lib/cfcost/redis.sock", 0 },
    { "unix:/a b/redis.sock", CFCOST_ADDR_UNIX, "/a b/redis.sock", 0 },
    { "unix:/x", CFCOST_ADDR_UNIX, "/x", 0 },
    { "unix:", 0, "absolute", 0 },
    { "unix:/", 0, "absolute", 0 },
    { "unix:var/redis.sock", 0, "absolute", 0 },
    { "unix:./var/redis.sock", 0, "absolute", 0 },
    { "unix:/a\nb", 0, "control", 0 },
    { "unix:/a\x7f", 0, "control", 0 },
    { "UNIX:/x", 0, "port", 0 },

    /* IPv4:PORT */
    { "127.0.0.1:6379", CFCOST_ADDR_IPV4, "127.0.0.1", 6379 },
    { "0.0.0.0:1", CFCOST_ADDR_IPV4, "0.0.0.0", 1 },
    { "255.255.255.255:65535", CFCOST_ADDR_IPV4, "255.255.255.255", 65535 },
    { "10.20.30.40:80", CFCOST_ADDR_IPV4, "10.20.30.40", 80 },
    { "256.0.0.1:6379", 0, "IPv4", 0 },
    { "1.2.3:6379", 0, "IPv4", 0 },
    { "1.2.3.4.5:6379", 0, "IPv4", 0 },
    { "127.1:6379", 0, "IPv4", 0 },
    { "01.2.3.4:6379", 0, "IPv4", 0 },
    { "1.2.3.04:6379", 0, "IPv4", 0 },
    { "1.2.3.1234:6379", 0, "IPv4", 0 },
    { "1..3.4:6379", 0, "IPv4", 0 },
    { "0x7f.0.0.1:6379", 0, "IPv4", 0 },
    { "host.123:6379", 0, "IPv4", 0 },
    { "6379:6379", 0, "IPv4", 0 },

    /* [IPv6]:PORT */
    { "[::1]:6379", CFCOST_ADDR_IPV6, "::1", 6379 },
    { "[2001:db8::42]:7000", CFCOST_ADDR_IPV6, "2001:db8::42", 7000 },
    { "[::ffff:127.0.0.1]:6379", CFCOST_ADDR_IPV6, "::ffff:127.0.0.1",
      6379 },
    { "[fe80::1%eth0]:6379", 0, "IPv6", 0 },
    { "[1.2.3.4]:6379", 0, "IPv6", 0 },
    { "[]:6379", 0, "IPv6", 0 },
    { "[::1]", 0, "PORT", 0 },
    { "[::1]6379", 0, "PORT", 0 },
    { "[::1:6379", 0, "]", 0 },
    { "[::1]:", 0, "port", 0 },
    { "::1:6379", 0, "brackets", 0 },
    { "2001:db8::1:6379", 0, "brackets", 0 },

    /* HOST:PORT */
    { "localhost:6379", CFCOST_ADDR_NAME, "localhost", 6379 },
    { "redis.internal:6380", CFCOST_ADDR_NAME, "redis.internal", 6380 },
    { "a-b.c-d.example:1", CFCOST_ADDR_NAME, "a-b.c-d.example", 1 },
    { "1a.2b:6379", CFCOST_ADDR_NAME, "1a.2b", 6379 },
    { "x:6379", CFCOST_ADDR_NAME, "x", 6379 },
    { "Redis-01.EXAMPLE.com:6379", CFCOST_ADDR_NAME, "Redis-01.EXAMPLE.com",
      6379 },
    { "-a:6379", 0, "host name", 0 },
    { "a-:6379", 0, "host name", 0 },
    { "a.-b:6379", 0, "host name", 0 },
    { "a..b:6379", 0, "host name", 0 },
    { ".a:6379", 0, "host name", 0 },
    { "a.:6379", 0, "host name", 0 },
    { "a_b:6379", 0, "host name", 0 },
    { "a b:6379", 0, "host name", 0 },
    { " localhost:6379", 0, "host name", 0 },
    { "h\xc3\xa9:6379", 0, "host name", 0 },
    { "redis://h:6379", 0, "brackets", 0 },
    { "h/x:6379", 0, "host name", 0 },

    /* PORT */
    { "localhost:0", 0, "port", 0 },
    { "localhost:65536", 0, "port", 0 },
    { "localhost:99999", 0, "port", 0 },
    { "localhost:123456", 0, "port", 0 },
    { "localhost:06379", 0, "port", 0 },
    { "localhost:+6379", 0, "port", 0 },
    { "localhost:-1", 0, "port", 0 },
    { "localhost:6379 ", 0, "port", 0 },
    { "localhost:63a9", 0, "port", 0 },
    { "localhost:", 0, "port", 0 },
    { "localhost", 0, "PORT", 0 },
    { "127.0.0.1", 0, "PORT", 0 },
    { ":6379", 0, "no host", 0 },

    /* nothing */
    { "", 0, "empty", 0 },
};


/* Copies s into buf (256 bytes) with control characters as '?'. */
static const char *
printable(const char *s)
{
    size_t       i;
    static char  buf[256];

    for (i = 0; s[i] != '\0' && i < sizeof(buf) - 1; i++) {
        buf[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    }

    buf[i] = '\0';
    return buf;
}


static void
test_cases(void)
{
    int                   rc;
    size_t                i;
    char                  err[512];
    const char           *got;
    const acase_t        *c;
    cfcost_addr_t         a;

    for (i = 0; i < NCASES(cases); i++) {
        c = &cases[i];
        err[0] = '\0';

        rc = cfcost_addr_parse(c->text, strlen(c->text), &a, err,
                               sizeof(err));

        if (c->kind) {
            got = (a.kind == CFCOST_ADDR_UNIX) ? a.path : a.host;

            if (!ok(rc == 0 && a.kind == c->kind && a.port == c->port
                    && strcmp(got, c->host) == 0,
                    "accepts \"%s\"", printable(c->text)))
            {
                diag("rc %d kind %d port %d host \"%s\" err \"%s\"", rc,
                     a.kind, a.port, got, err);
            }

            continue;
        }

        if (!ok(rc == -1 && a.kind == 0
                && strstr(err, "bad Redis address \"") == err
                && strstr(err, c->host) != NULL
                && strstr(err, "; want " CFCOST_ADDR_FORMS) != NULL,
                "refuses \"%s\" (%s)", printable(c->text), c->host))
        {
            diag("rc %d err \"%s\"", rc, err);
        }
    }
}


static void
test_lengths(void)
{
    char           s[400], err[512];
    size_t         n;
    cfcost_addr_t  a;

    /* a 107-byte path fills sun_path with its NUL; 108 does not fit */
    memcpy(s, "unix:/", 6);
    memset(s + 6, 'p', 106);
    ok(cfcost_addr_parse(s, 5 + 107, &a, err, sizeof(err)) == 0
       && strlen(a.path) == 107, "a 107-byte unix path is accepted");

    s[5 + 107] = 'p';
    ok(cfcost_addr_parse(s, 5 + 108, &a, err, sizeof(err)) == -1
       && strstr(err, "107") != NULL, "a 108-byte unix path is refused");

    /* a label of 63 bytes, not 64 */
    memset(s, 'a', 63);
    memcpy(s + 63, ":1", 2);
    ok(cfcost_addr_parse(s, 65, &a, err, sizeof(err)) == 0,
       "a 63-byte label is accepted");

    memset(s, 'a', 64);
    memcpy(s + 64, ":1", 2);
    ok(cfcost_addr_parse(s, 66, &a, err, sizeof(err)) == -1,
       "a 64-byte label is refused");

    /* a name of 253 bytes, not 254: labels of 62 and a dot */
    for (n = 0; n < 253; n++) {
        s[n] = (n % 63 == 62) ? '.' : 'b';
    }

    memcpy(s + 253, ":1", 2);
    ok(cfcost_addr_parse(s, 255, &a, err, sizeof(err)) == 0
       && strlen(a.host) == 253, "a 253-byte name is accepted");

    s[253] = 'b';
    memcpy(s + 254, ":1", 2);
    ok(cfcost_addr_parse(s, 256, &a, err, sizeof(err)) == -1,
       "a 254-byte name is refused");

    /* a NUL inside is not the end of the text */
    ok(cfcost_addr_parse("a\0b:6379", 8, &a, err, sizeof(err)) == -1,
       "a NUL inside a host name is refused");
    ok(cfcost_addr_parse("unix:/a\0b", 9, &a, err, sizeof(err)) == -1,
       "a NUL inside a unix path is refused");
    ok(cfcost_addr_parse("[::1\0]:6379", 11, &a, err, sizeof(err)) == -1,
       "a NUL inside brackets is refused");

    /* the text need not be NUL-terminated */
    ok(cfcost_addr_parse("localhost:6379XYZ", 14, &a, err, sizeof(err)) == 0
       && a.port == 6379, "only len bytes are read");
}


static void
test_err(void)
{
    char           err[16], big[512];
    cfcost_addr_t  a;

    memset(err, 'x', sizeof(err));
    ok(cfcost_addr_parse("nope", 4, &a, err, sizeof(err)) == -1
       && memchr(err, '\0', sizeof(err)) != NULL,
       "a short error buffer is still NUL-terminated");

    ok(cfcost_addr_parse("nope", 4, &a, NULL, 0) == -1,
       "no error buffer is fine");

    cfcost_addr_parse("a\tb:1", 5, &a, big, sizeof(big));
    ok(strchr(big, '\t') == NULL && strstr(big, "\"a?b:1\"") != NULL,
       "control characters are not echoed: %s", big);
}


static void
test_str(void)
{
    size_t         i;
    char           buf[300], err[512];
    cfcost_addr_t  a;

    static const char  *round[] = {
        "unix:/run/redis.sock", "127.0.0.1:6379", "[::1]:6379",
        "redis.internal:6380"
    };

    for (i = 0; i < NCASES(round); i++) {
        cfcost_addr_parse(round[i], strlen(round[i]), &a, err, sizeof(err));
        is_u64(cfcost_addr_str(&a, buf, sizeof(buf)), strlen(round[i]),
               "str length of %s", round[i]);
        is_str(buf, round[i], "str gives back %s", round[i]);
    }

    cfcost_addr_parse("127.0.0.1:6379", 14, &a, err, sizeof(err));
    is_u64(cfcost_addr_str(&a, buf, 4), 14, "str reports the full length");
    is_str(buf, "127", "str truncates with a NUL");
}


static void
test_resolve(void)
{
    char           err[512];
    cfcost_addr_t  a;

    cfcost_addr_parse("10.0.0.1:6379", 13, &a, err, sizeof(err));
    ok(cfcost_addr_resolve(&a, err, sizeof(err)) == 0
       && a.kind == CFCOST_ADDR_IPV4 && strcmp(a.host, "10.0.0.1") == 0,
       "resolve leaves an IPv4 address alone");

    cfcost_addr_parse("unix:/x", 7, &a, err, sizeof(err));
    ok(cfcost_addr_resolve(&a, err, sizeof(err)) == 0
       && a.kind == CFCOST_ADDR_UNIX && strcmp(a.path, "/x") == 0,
       "resolve leaves a unix socket alone");

    /* /etc/hosts has both; the IPv4 address comes first, as in nginx */
    cfcost_addr_parse("localhost:6379", 14, &a, err, sizeof(err));
    if (!ok(cfcost_addr_resolve(&a, err, sizeof(err)) == 0
            && a.kind == CFCOST_ADDR_IPV4
            && strcmp(a.host, "127.0.0.1") == 0 && a.port == 6379,
            "localhost resolves to 127.0.0.1"))
    {
        diag("kind %d host %s err %s", a.kind, a.host, err);
    }
}


int
main(void)
{
    test_cases();
    test_lengths();
    test_err();
    test_str();
    test_resolve();

    return done_testing();
}
