/*
 * cfcost CLI: the Redis connection.  Synchronous hiredis is fine here:
 * one short-lived process, a handful of commands.  The address follows
 * the rules every part of cfcost shares (cfcost_addr.h).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"


#define CLI_REDIS_TIMEOUT_SEC  5


/*
 * Writes the Redis address to use into buf: --redis, else $CFCOST_REDIS,
 * else unix:$CFCOST_VAR/redis.sock, made absolute (the default ./var is
 * relative to the current directory; a unix address must not be).
 * Returns 0, or -1 after reporting.
 */
static int
cli_redis_addr(const cli_ctx_t *ctx, char *buf, size_t len)
{
    int          n;
    char         cwd[4096];
    const char  *env, *var;

    if (ctx->redis != NULL || ((env = getenv("CFCOST_REDIS")) != NULL
                               && env[0] != '\0'))
    {
        n = snprintf(buf, len, "%s", ctx->redis ? ctx->redis : env);
        goto done;
    }

    var = getenv("CFCOST_VAR");
    if (var == NULL || var[0] == '\0') {
        var = CLI_DEFAULT_VAR;
    }

    if (var[0] == '/') {
        n = snprintf(buf, len, "unix:%s/redis.sock", var);
        goto done;
    }

    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        cli_out_error("cannot find the current directory for "
                      "$CFCOST_VAR \"%s\": %s", var, strerror(errno));
        return -1;
    }

    n = snprintf(buf, len, "unix:%s/%s/redis.sock", cwd,
                 strncmp(var, "./", 2) == 0 ? var + 2 : var);

done:

    if (n < 0 || (size_t) n >= len) {
        cli_out_error("the Redis address is too long");
        return -1;
    }

    return 0;
}


/*
 * Finds the credentials file: --redis-auth, else $CFCOST_REDIS_AUTH, else
 * $CFCOST_VAR/redis-cli.auth when it exists (what make run writes).
 * Returns 1 with the path in buf, 0 for none, -1 after reporting.
 */
static int
cli_redis_auth_path(const cli_ctx_t *ctx, char *buf, size_t len)
{
    int          n;
    const char  *env, *var;

    if (ctx->redis_auth != NULL || ((env = getenv("CFCOST_REDIS_AUTH"))
                                    != NULL && env[0] != '\0'))
    {
        n = snprintf(buf, len, "%s",
                     ctx->redis_auth ? ctx->redis_auth : env);

    } else {
        var = getenv("CFCOST_VAR");
        if (var == NULL || var[0] == '\0') {
            var = CLI_DEFAULT_VAR;
        }

        n = snprintf(buf, len, "%s/redis-cli.auth", var);
        if (n >= 0 && (size_t) n < len && access(buf, F_OK) != 0) {
            return 0;
        }
    }

    if (n < 0 || (size_t) n >= len) {
        cli_out_error("the Redis credentials path is too long");
        return -1;
    }

    return 1;
}


/* Sends AUTH when credentials are configured.  Returns 0, or -1. */
static int
cli_redis_auth(cli_ctx_t *ctx, const char *addr)
{
    int                   argc, rc;
    char                  path[4096], err[4352];
    size_t                argvlen[3];
    const char           *argv[3];
    redisReply           *r;
    cfcost_redis_auth_t   auth;

    rc = cli_redis_auth_path(ctx, path, sizeof(path));
    if (rc <= 0) {
        return rc;
    }

    if (cfcost_redis_auth_load(path, &auth, err, sizeof(err)) != 0) {
        cli_out_error("%s", err);
        return -1;
    }

    argc = cfcost_redis_auth_argv(&auth, argv, argvlen);
    r = redisCommandArgv(ctx->rc, argc, argv, argvlen);
    cfcost_redis_auth_wipe(&auth);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        cli_out_error("Redis at %s refused the credentials in %s: %s", addr,
                      path, r ? r->str : ctx->rc->errstr);
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    freeReplyObject(r);
    return 0;
}


/*
 * Connects ctx->rc to the address.  Returns 0, or the exit status after
 * reporting: an address that breaks the rules is a usage error (2),
 * anything else 1.
 */
int
cli_redis_connect(cli_ctx_t *ctx)
{
    char             buf[4096], err[512];
    redisContext    *rc;
    cfcost_addr_t    a;
    struct timeval   tv = { CLI_REDIS_TIMEOUT_SEC, 0 };

    if (cli_redis_addr(ctx, buf, sizeof(buf)) != 0) {
        return CLI_EXIT_FAILED;
    }

    if (cfcost_addr_parse(buf, strlen(buf), &a, err, sizeof(err)) != 0) {
        return cli_args_error(NULL, "%s", err);
    }

    /* hiredis resolves a host name itself: fine for a one-shot command */
    rc = (a.kind == CFCOST_ADDR_UNIX)
         ? redisConnectUnixWithTimeout(a.path, tv)
         : redisConnectWithTimeout(a.host, a.port, tv);

    if (rc == NULL || rc->err) {
        cli_out_error("cannot reach Redis at %s: %s", buf,
                      rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return CLI_EXIT_FAILED;
    }

    if (redisSetTimeout(rc, tv) != REDIS_OK) {
        cli_out_error("cannot reach Redis at %s: %s", buf, rc->errstr);
        redisFree(rc);
        return CLI_EXIT_FAILED;
    }

    ctx->rc = rc;

    if (cli_redis_auth(ctx, buf) != 0) {
        return CLI_EXIT_FAILED;
    }

    return CLI_EXIT_OK;
}


/*
 * Checks a reply: NULL (connection failure) and error replies are
 * reported and make it return -1; the reply is freed then.  Returns 0 when
 * the reply is usable; the caller frees it.
 */
int
cli_redis_check(cli_ctx_t *ctx, redisReply *r, const char *what)
{
    if (r == NULL) {
        cli_out_error("redis: %s: %s", what,
                      ctx->rc->err ? ctx->rc->errstr : "no reply");
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        cli_out_error("redis: %s: %s", what, r->str);
        freeReplyObject(r);
        return -1;
    }

    return 0;
}


/*
 * Checks an EXEC reply.  Returns 0 when every queued command succeeded,
 * else -1 after reporting: a discarded transaction, or a command that
 * failed inside it (Redis does not roll the others back).
 */
int
cli_redis_exec_check(const redisReply *r)
{
    size_t  i;

    if (r->type != REDIS_REPLY_ARRAY) {
        cli_out_error("redis: EXEC: transaction discarded");
        return -1;
    }

    for (i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            cli_out_error("redis: EXEC: %s", r->element[i]->str);
            return -1;
        }
    }

    return 0;
}


/* Returns the value of field name in an HGETALL reply, or NULL. */
const char *
cli_redis_field(const redisReply *r, const char *name)
{
    size_t  i;

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && r->element[i + 1]->type == REDIS_REPLY_STRING
            && strcmp(r->element[i]->str, name) == 0)
        {
            return r->element[i + 1]->str;
        }
    }

    return NULL;
}
