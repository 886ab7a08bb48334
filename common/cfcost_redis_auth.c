/*
 * Redis credentials files: see cfcost_redis_auth.h for the rules.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include "cfcost_redis_auth.h"


static void
cfcost_redis_auth_zero(volatile char *p, size_t n)
{
    while (n--) {
        *p++ = 0;
    }
}


void
cfcost_redis_auth_wipe(cfcost_redis_auth_t *a)
{
    cfcost_redis_auth_zero((volatile char *) a, sizeof(*a));
}


static int
cfcost_redis_auth_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


static int
cfcost_redis_auth_user_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}


int
cfcost_redis_auth_parse(const char *s, size_t len, cfcost_redis_auth_t *a,
    const char **why)
{
    size_t       i, n;
    const char  *p, *last, *w[3];
    size_t       wl[3];

    cfcost_redis_auth_wipe(a);

    p = s;
    last = s + len;

    while (p < last && cfcost_redis_auth_space(*p)) { p++; }
    while (last > p && cfcost_redis_auth_space(last[-1])) { last--; }

    /* at most two words, separated by spaces or tabs; no second line */
    n = 0;
    while (p < last) {
        if (n == 2) {
            *why = "must hold one line: \"USER PASSWORD\" or \"PASSWORD\"";
            return -1;
        }
        w[n] = p;
        while (p < last && *p > ' ' && *p < 0x7f) { p++; }
        wl[n] = p - w[n];
        if (p < last && *p != ' ' && *p != '\t') {
            *why = "must hold printable ASCII, one line: "
                   "\"USER PASSWORD\" or \"PASSWORD\"";
            return -1;
        }
        while (p < last && (*p == ' ' || *p == '\t')) { p++; }
        n++;
    }

    if (n == 0) {
        *why = "is empty: want \"USER PASSWORD\" or \"PASSWORD\"";
        return -1;
    }

    if (n == 2) {
        if (wl[0] > CFCOST_REDIS_USER_MAX) {
            *why = "names a user longer than 64 characters";
            return -1;
        }
        for (i = 0; i < wl[0]; i++) {
            if (!cfcost_redis_auth_user_char(w[0][i])) {
                *why = "names a user with characters other than "
                       "A-Z a-z 0-9 . _ -";
                return -1;
            }
        }
        memcpy(a->user, w[0], wl[0]);
    }

    if (wl[n - 1] > CFCOST_REDIS_PASS_MAX) {
        cfcost_redis_auth_wipe(a);
        *why = "holds a password longer than 256 characters";
        return -1;
    }

    memcpy(a->pass, w[n - 1], wl[n - 1]);

    return 0;
}


int
cfcost_redis_auth_load(const char *path, cfcost_redis_auth_t *a,
    char *err, size_t errlen)
{
    int          fd, rc;
    char         buf[CFCOST_REDIS_AUTH_FILE_MAX + 1];
    ssize_t      n;
    size_t       got;
    struct stat  st;
    const char  *why;

    cfcost_redis_auth_wipe(a);

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        snprintf(err, errlen, "cannot open Redis credentials \"%s\": %s",
                 path, strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "Redis credentials \"%s\" are not a regular "
                 "file", path);
        close(fd);
        return -1;
    }

    if (st.st_mode & S_IRWXO) {
        snprintf(err, errlen, "Redis credentials \"%s\" are open to every "
                 "local user (mode %03o); they must be closed to other "
                 "users: chmod o-rwx it", path,
                 (unsigned) (st.st_mode & 0777));
        close(fd);
        return -1;
    }

    got = 0;
    do {
        n = read(fd, buf + got, sizeof(buf) - got);
        if (n > 0) {
            got += n;
        }
    } while ((n > 0 || (n == -1 && errno == EINTR)) && got < sizeof(buf));

    close(fd);

    if (n == -1) {
        snprintf(err, errlen, "cannot read Redis credentials \"%s\": %s",
                 path, strerror(errno));
        cfcost_redis_auth_zero(buf, sizeof(buf));
        return -1;
    }

    if (got > CFCOST_REDIS_AUTH_FILE_MAX) {
        rc = -1;
        why = "is longer than 1024 bytes";

    } else {
        rc = cfcost_redis_auth_parse(buf, got, a, &why);
    }

    cfcost_redis_auth_zero(buf, sizeof(buf));

    if (rc != 0) {
        snprintf(err, errlen, "Redis credentials \"%s\" %s", path, why);
    }

    return rc;
}


int
cfcost_redis_auth_argv(const cfcost_redis_auth_t *a, const char **argv,
    size_t *argvlen)
{
    int  n;

    n = 0;
    argv[n] = "AUTH";
    argvlen[n++] = 4;

    if (a->user[0] != '\0') {
        argv[n] = a->user;
        argvlen[n++] = strlen(a->user);
    }

    argv[n] = a->pass;
    argvlen[n++] = strlen(a->pass);

    return n;
}
