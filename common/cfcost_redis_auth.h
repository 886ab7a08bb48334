/*
 * Redis credentials: one rule set for the module (cfcost_redis_auth_file),
 * the aggregator (--redis-auth) and the CLI (--redis-auth,
 * CFCOST_REDIS_AUTH).  Pure C, no nginx, no libevent.
 *
 * A credentials file holds one line, "USER PASSWORD" (an ACL user, Redis
 * 6 and later) or "PASSWORD" alone (requirepass, the default user), with
 * surrounding white space ignored:
 *
 *   USER      1-64 of A-Z a-z 0-9 . _ - ;
 *   PASSWORD  1-256 printable ASCII characters, no space.
 *
 * The file must not be readable, writable or executable by "other": it
 * is a secret (scripts/redis-acl writes them 0600).
 */

#ifndef CFCOST_REDIS_AUTH_H
#define CFCOST_REDIS_AUTH_H

#include <stddef.h>


#define CFCOST_REDIS_USER_MAX   64
#define CFCOST_REDIS_PASS_MAX   256
#define CFCOST_REDIS_AUTH_FILE_MAX  1024    /* bytes read from a file */


typedef struct {
    char    user[CFCOST_REDIS_USER_MAX + 1];   /* "" for the default user */
    char    pass[CFCOST_REDIS_PASS_MAX + 1];
} cfcost_redis_auth_t;


/*
 * Parses s[0..len) by the rules above.  Returns 0 with *a filled, or -1
 * with *a zeroed and *why set to a static phrase ("must hold ...").
 */
int cfcost_redis_auth_parse(const char *s, size_t len, cfcost_redis_auth_t *a,
    const char **why);

/*
 * Reads and parses the file at path (mode checked as above).  Returns 0,
 * or -1 with *a zeroed and one line in err (errlen bytes) naming the file
 * and what is wrong.  The buffer that held the secret is wiped.
 */
int cfcost_redis_auth_load(const char *path, cfcost_redis_auth_t *a,
    char *err, size_t errlen);

/* The AUTH command's arguments: 2 ("AUTH" PASS) or 3 ("AUTH" USER PASS). */
int cfcost_redis_auth_argv(const cfcost_redis_auth_t *a, const char **argv,
    size_t *argvlen);

/* Wipes *a. */
void cfcost_redis_auth_wipe(cfcost_redis_auth_t *a);

#endif /* CFCOST_REDIS_AUTH_H */
