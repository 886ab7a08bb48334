/*
 * cfcost CLI: users list | disable | enable.
 *
 * A user is a name that owns keys (cfcost:users).  Disabling one sets
 * disabled in cfcost:user:<user> and user_disabled in each of its keys, in
 * one script: the gateway reads it with the key, so every key of the user
 * is refused (403) within the key cache's ttl, and keys create refuses the
 * user until it is enabled again.  Enabling clears both; the keys work
 * again as they were (revoked ones stay revoked).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static int cli_users_list(cli_ctx_t *ctx, int argc, char **argv);
static int cli_users_disable(cli_ctx_t *ctx, int argc, char **argv);
static int cli_users_enable(cli_ctx_t *ctx, int argc, char **argv);


static const cli_cmd_t  cli_users_cmds[] = {
    { "list",    cli_users_list,    CLI_USAGE_USERS_LIST },
    { "disable", cli_users_disable, CLI_USAGE_USERS_DISABLE },
    { "enable",  cli_users_enable,  CLI_USAGE_USERS_ENABLE },
};


/*
 * KEYS[1] cfcost:keys, KEYS[2] cfcost:users, KEYS[3] cfcost:user:<user>;
 * ARGV: user, "1" (disable) or "0" (enable), now (ms).  Returns the number
 * of the user's keys, or -1 when no such user.
 */
static const char  cli_users_set_lua[] =
    "if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then return -1 end\n"
    "redis.call('HSETNX', KEYS[3], '" CFCOST_USER_F_CREATED "', ARGV[3])\n"
    "if ARGV[2] == '1' then\n"
    "  redis.call('HSET', KEYS[3], '" CFCOST_USER_F_DISABLED "', '1')\n"
    "else\n"
    "  redis.call('HDEL', KEYS[3], '" CFCOST_USER_F_DISABLED "')\n"
    "end\n"
    "local ix = redis.call('HGETALL', KEYS[1])\n"
    "local n = 0\n"
    "for i = 2, #ix, 2 do\n"
    "  local rec = '" CFCOST_KEY_PREFIX "' .. ix[i]\n"
    "  if redis.call('HGET', rec, '" CFCOST_KEY_F_USER "') == ARGV[1] then\n"
    "    if ARGV[2] == '1' then\n"
    "      redis.call('HSET', rec, '" CFCOST_KEY_F_USER_DISABLED "', '1')\n"
    "    else\n"
    "      redis.call('HDEL', rec, '" CFCOST_KEY_F_USER_DISABLED "')\n"
    "    end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";


int
cli_users(cli_ctx_t *ctx, int argc, char **argv)
{
    const cli_cmd_t  *cmd;

    if (argc < 2) {
        return cli_args_error(CLI_USAGE_USERS,
                              "users needs list, disable or enable");
    }

    if (cli_args_is_help(argv[1])) {
        fputs(CLI_USAGE_USERS, stdout);
        return CLI_EXIT_OK;
    }

    cmd = cli_args_find(cli_users_cmds,
                        sizeof(cli_users_cmds) / sizeof(cli_cmd_t), argv[1]);
    if (cmd == NULL) {
        return cli_args_error(CLI_USAGE_USERS, "unknown users command \"%s\"",
                              argv[1]);
    }

    return cmd->handler(ctx, argc - 1, argv + 1);
}


/* ---- users disable / enable -------------------------------------------- */


static int
cli_users_set(cli_ctx_t *ctx, int argc, char **argv, int disable,
    const char *usage)
{
    int          rc;
    char         name[sizeof(CFCOST_USER_PREFIX) + CFCOST_KEYS_USER_MAX];
    redisReply  *r;
    const char  *user;

    if (argc == 2 && cli_args_is_help(argv[1])) {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }

    if (argc != 2) {
        return cli_args_error(usage, argc < 2 ? "a user name is required"
                                              : "one user name only");
    }

    user = argv[1];

    if (!cfcost_keys_user_valid(user, strlen(user))) {
        return cli_args_error(usage,
                   "bad user name \"%s\": want 1-64 of A-Z a-z 0-9 . _ @ -",
                   user);
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    snprintf(name, sizeof(name), CFCOST_USER_PREFIX "%s", user);

    r = redisCommand(ctx->rc, "EVAL %s 3 %s %s %s %s %s %lld",
                     cli_users_set_lua, CFCOST_KEYS_INDEX, CFCOST_USERS_SET,
                     name, user, disable ? "1" : "0", cli_store_now_ms());
    if (cli_redis_check(ctx, r, "EVAL") != 0) {
        return CLI_EXIT_FAILED;
    }

    if (r->type != REDIS_REPLY_INTEGER) {
        cli_out_error("unexpected reply from Redis");
        freeReplyObject(r);
        return CLI_EXIT_FAILED;
    }

    if (r->integer < 0) {
        cli_out_error("no such user: %s", user);
        freeReplyObject(r);
        return CLI_EXIT_FAILED;
    }

    printf("user %s %s (%lld key%s)\n", user,
           disable ? "disabled: its keys are refused" : "enabled",
           r->integer, r->integer == 1 ? "" : "s");

    freeReplyObject(r);
    return CLI_EXIT_OK;
}


static int
cli_users_disable(cli_ctx_t *ctx, int argc, char **argv)
{
    return cli_users_set(ctx, argc, argv, 1, CLI_USAGE_USERS_DISABLE);
}


static int
cli_users_enable(cli_ctx_t *ctx, int argc, char **argv)
{
    return cli_users_set(ctx, argc, argv, 0, CLI_USAGE_USERS_ENABLE);
}


/* ---- users list -------------------------------------------------------- */


/* qsort order of user names */
static int
cli_users_cmp(const void *a, const void *b)
{
    return strcmp((*(redisReply * const *) a)->str,
                  (*(redisReply * const *) b)->str);
}


static int
cli_users_list(cli_ctx_t *ctx, int argc, char **argv)
{
    int           i, rc, json, disabled;
    long          n, j, nkeys, active;
    size_t        u;
    cli_key_t    *keys;
    redisReply   *index, *users, *r, **names;
    const char   *v;

    json = 0;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            fputs(CLI_USAGE_USERS_LIST, stdout);
            return CLI_EXIT_OK;
        }

        if (strcmp(argv[i], "--json") != 0) {
            return cli_args_unexpected(CLI_USAGE_USERS_LIST, argv[i]);
        }

        json = 1;
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    index = NULL;
    users = NULL;
    names = NULL;
    rc = CLI_EXIT_FAILED;

    n = cli_store_list(ctx, NULL, &index, &keys);
    if (n < 0) {
        goto done;
    }

    users = redisCommand(ctx->rc, "SMEMBERS %s", CFCOST_USERS_SET);
    if (cli_redis_check(ctx, users, "SMEMBERS") != 0) {
        users = NULL;
        goto done;
    }

    if (users->type != REDIS_REPLY_ARRAY) {
        cli_out_error("unexpected reply from Redis");
        goto done;
    }

    names = calloc(users->elements + 1, sizeof(redisReply *));
    if (names == NULL) {
        cli_out_error("out of memory");
        goto done;
    }

    for (u = 0; u < users->elements; u++) {
        names[u] = users->element[u];
    }

    qsort(names, users->elements, sizeof(redisReply *), cli_users_cmp);

    if (json) {
        printf("[");
    } else {
        printf("%-24s %-6s %-6s %-8s %s\n", "USER", "KEYS", "ACTIVE",
               "STATUS", "RPM");
    }

    for (u = 0; u < users->elements; u++) {
        r = redisCommand(ctx->rc, "HGET " CFCOST_USER_PREFIX "%s %s",
                         names[u]->str, CFCOST_USER_F_DISABLED);
        if (cli_redis_check(ctx, r, "HGET") != 0) {
            goto done;
        }

        disabled = (r->type == REDIS_REPLY_STRING && r->len != 0);
        freeReplyObject(r);

        r = redisCommand(ctx->rc, "HGET " CFCOST_LIMITS_USER_PREFIX "%s %s",
                         names[u]->str, CFCOST_KEY_F_RPM);
        if (cli_redis_check(ctx, r, "HGET") != 0) {
            goto done;
        }

        for (j = 0, nkeys = 0, active = 0; j < n; j++) {
            if (strcmp(keys[j].user, names[u]->str) == 0) {
                nkeys++;
                active += !keys[j].revoked;
            }
        }

        v = (r->type == REDIS_REPLY_STRING) ? r->str : NULL;

        if (json) {
            printf("%s{\"user\":", u ? "," : "");
            cli_out_json_str(names[u]->str);
            printf(",\"keys\":%ld,\"active_keys\":%ld,\"disabled\":%s,"
                   "\"rpm\":", nkeys, active, disabled ? "true" : "false");
            if (v != NULL) {
                printf("%ld}", strtol(v, NULL, 10));
            } else {
                printf("null}");
            }

        } else {
            printf("%-24s %-6ld %-6ld %-8s %s\n", names[u]->str, nkeys,
                   active, disabled ? "disabled" : "enabled",
                   v != NULL ? v : "-");
        }

        freeReplyObject(r);
    }

    if (json) {
        printf("]\n");
    }

    rc = CLI_EXIT_OK;

done:

    free(names);

    if (users != NULL) {
        freeReplyObject(users);
    }

    cli_store_list_free(index, keys);
    return rc;
}
