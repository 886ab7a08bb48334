/*
 * cfcost CLI: limits set | list -- requests a minute per API key and per
 * user (see cfcost_schema.h).  The gateway reads them with the key, so a
 * change reaches every gateway within its key cache's ttl.
 *
 * A key's limit is field rpm of its record.  A user's is kept in
 * cfcost:limits:user:<user> and copied into each of the user's keys
 * (user_rpm), in one script, so that no key of the user is left with the
 * old one; keys create copies it into a new key.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static int cli_limits_set(cli_ctx_t *ctx, int argc, char **argv);
static int cli_limits_list(cli_ctx_t *ctx, int argc, char **argv);


static const cli_cmd_t  cli_limits_cmds[] = {
    { "set",  cli_limits_set,  CLI_USAGE_LIMITS_SET },
    { "list", cli_limits_list, CLI_USAGE_LIMITS_LIST },
};


/* KEYS[1] cfcost:keys; ARGV: key id, limit ("0": none).  1, or 0: no key */
static const char  cli_limits_key_lua[] =
    "local h = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not h then return 0 end\n"
    "local rec = '" CFCOST_KEY_PREFIX "' .. h\n"
    "if redis.call('EXISTS', rec) == 0 then return 0 end\n"
    "if ARGV[2] == '0' then\n"
    "  redis.call('HDEL', rec, '" CFCOST_KEY_F_RPM "')\n"
    "else\n"
    "  redis.call('HSET', rec, '" CFCOST_KEY_F_RPM "', ARGV[2])\n"
    "end\n"
    "return 1\n";

/*
 * KEYS[1] cfcost:keys, KEYS[2] cfcost:limits:user:<user>; ARGV: user,
 * limit ("0": none).  Returns how many of the user's keys now carry it.
 */
static const char  cli_limits_user_lua[] =
    "if ARGV[2] == '0' then\n"
    "  redis.call('DEL', KEYS[2])\n"
    "else\n"
    "  redis.call('HSET', KEYS[2], '" CFCOST_KEY_F_RPM "', ARGV[2])\n"
    "end\n"
    "local ix = redis.call('HGETALL', KEYS[1])\n"
    "local n = 0\n"
    "for i = 2, #ix, 2 do\n"
    "  local rec = '" CFCOST_KEY_PREFIX "' .. ix[i]\n"
    "  if redis.call('HGET', rec, '" CFCOST_KEY_F_USER "') == ARGV[1] then\n"
    "    if ARGV[2] == '0' then\n"
    "      redis.call('HDEL', rec, '" CFCOST_KEY_F_USER_RPM "')\n"
    "    else\n"
    "      redis.call('HSET', rec, '" CFCOST_KEY_F_USER_RPM "', ARGV[2])\n"
    "    end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";


int
cli_limits(cli_ctx_t *ctx, int argc, char **argv)
{
    const cli_cmd_t  *cmd;

    if (argc < 2) {
        return cli_args_error(CLI_USAGE_LIMITS, "limits needs set or list");
    }

    if (cli_args_is_help(argv[1])) {
        fputs(CLI_USAGE_LIMITS, stdout);
        return CLI_EXIT_OK;
    }

    cmd = cli_args_find(cli_limits_cmds,
                        sizeof(cli_limits_cmds) / sizeof(cli_cmd_t), argv[1]);
    if (cmd == NULL) {
        return cli_args_error(CLI_USAGE_LIMITS,
                              "unknown limits command \"%s\"", argv[1]);
    }

    return cmd->handler(ctx, argc - 1, argv + 1);
}


/* "0".."CFCOST_RPM_MAX" in decimal, no sign, no spaces: 0, else -1 */
static int
cli_limits_rpm(const char *s, long *rpm)
{
    char  *end;

    if (s[0] < '0' || s[0] > '9' || strlen(s) > 7) {
        return -1;
    }

    *rpm = strtol(s, &end, 10);

    return (*end == '\0' && *rpm <= CFCOST_RPM_MAX) ? 0 : -1;
}


/* ---- limits set -------------------------------------------------------- */


static int
cli_limits_set(cli_ctx_t *ctx, int argc, char **argv)
{
    int          i, m, rc;
    long         rpm;
    char         name[sizeof(CFCOST_LIMITS_USER_PREFIX) + CFCOST_KEYS_USER_MAX];
    redisReply  *r;
    const char  *user, *key, *v;

    user = NULL;
    key = NULL;
    v = NULL;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            fputs(CLI_USAGE_LIMITS_SET, stdout);
            return CLI_EXIT_OK;
        }

        if ((m = cli_args_opt(argc, argv, &i, "--user", &user)) == 0
            && (m = cli_args_opt(argc, argv, &i, "--key", &key)) == 0)
        {
            m = cli_args_opt(argc, argv, &i, "--rpm", &v);
        }

        if (m == 0) {
            return cli_args_unexpected(CLI_USAGE_LIMITS_SET, argv[i]);
        }

        if (m < 0) {
            return cli_args_error(CLI_USAGE_LIMITS_SET, "%s needs a value",
                                  argv[i]);
        }
    }

    if ((user == NULL) == (key == NULL)) {
        return cli_args_error(CLI_USAGE_LIMITS_SET,
                              "give one of --user NAME and --key KEY_ID");
    }

    if (v == NULL) {
        return cli_args_error(CLI_USAGE_LIMITS_SET, "--rpm is required");
    }

    if (cli_limits_rpm(v, &rpm) != 0) {
        return cli_args_error(CLI_USAGE_LIMITS_SET,
                              "bad --rpm \"%s\": want a whole number from 0 "
                              "(no limit) to %d", v, CFCOST_RPM_MAX);
    }

    if (user != NULL && !cfcost_keys_user_valid(user, strlen(user))) {
        return cli_args_error(CLI_USAGE_LIMITS_SET,
                   "bad user name \"%s\": want 1-64 of A-Z a-z 0-9 . _ @ -",
                   user);
    }

    if (key != NULL
        && (strncmp(key, CFCOST_KEYID_TAG, sizeof(CFCOST_KEYID_TAG) - 1) != 0
            || strlen(key) != CFCOST_KEYS_ID_LEN))
    {
        return cli_args_error(CLI_USAGE_LIMITS_SET,
                              "bad key id \"%s\": want the id key_... that "
                              "'cfcost keys list' shows", key);
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    if (key != NULL) {
        r = redisCommand(ctx->rc, "EVAL %s 1 %s %s %ld", cli_limits_key_lua,
                         CFCOST_KEYS_INDEX, key, rpm);
    } else {
        snprintf(name, sizeof(name), CFCOST_LIMITS_USER_PREFIX "%s", user);
        r = redisCommand(ctx->rc, "EVAL %s 2 %s %s %s %ld",
                         cli_limits_user_lua, CFCOST_KEYS_INDEX, name, user,
                         rpm);
    }

    if (cli_redis_check(ctx, r, "EVAL") != 0) {
        return CLI_EXIT_FAILED;
    }

    if (r->type != REDIS_REPLY_INTEGER) {
        cli_out_error("unexpected reply from Redis");
        freeReplyObject(r);
        return CLI_EXIT_FAILED;
    }

    if (key != NULL && r->integer == 0) {
        cli_out_error("no such key id: %s", key);
        freeReplyObject(r);
        return CLI_EXIT_FAILED;
    }

    if (key != NULL && rpm) {
        printf("key %s: at most %ld requests a minute\n", key, rpm);

    } else if (key != NULL) {
        printf("key %s: no request limit\n", key);

    } else if (rpm) {
        printf("user %s: at most %ld requests a minute (%lld key%s)\n",
               user, rpm, r->integer, r->integer == 1 ? "" : "s");

    } else {
        printf("user %s: no request limit (%lld key%s)\n",
               user, r->integer, r->integer == 1 ? "" : "s");
    }

    freeReplyObject(r);
    return CLI_EXIT_OK;
}


/* ---- limits list ------------------------------------------------------- */


static int
cli_limits_list(cli_ctx_t *ctx, int argc, char **argv)
{
    int          i, rc, json, first;
    long         n;
    size_t       j;
    cli_key_t   *keys;
    redisReply  *index, *users, *r;
    const char  *v;

    json = 0;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            fputs(CLI_USAGE_LIMITS_LIST, stdout);
            return CLI_EXIT_OK;
        }

        if (strcmp(argv[i], "--json") != 0) {
            return cli_args_unexpected(CLI_USAGE_LIMITS_LIST, argv[i]);
        }

        json = 1;
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    index = NULL;
    users = NULL;
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

    printf(json ? "{\"keys\":[" : "%-20s %-24s %s\n", "SCOPE", "NAME", "RPM");

    for (i = 0, first = 1; i < n; i++) {
        v = cli_redis_field(keys[i].reply, CFCOST_KEY_F_RPM);
        if (v == NULL || v[0] == '\0') {
            continue;
        }

        if (json) {
            printf("%s{\"id\":", first ? "" : ",");
            cli_out_json_str(keys[i].id);
            printf(",\"user\":");
            cli_out_json_str(keys[i].user);
            printf(",\"rpm\":%ld}", strtol(v, NULL, 10));
        } else {
            printf("%-20s %-24s %ld\n", "key", keys[i].id,
                   strtol(v, NULL, 10));
        }

        first = 0;
    }

    if (json) {
        printf("],\"users\":[");
    }

    for (j = 0, first = 1;
         users->type == REDIS_REPLY_ARRAY && j < users->elements; j++)
    {
        r = redisCommand(ctx->rc, "HGET " CFCOST_LIMITS_USER_PREFIX "%s %s",
                         users->element[j]->str, CFCOST_KEY_F_RPM);
        if (cli_redis_check(ctx, r, "HGET") != 0) {
            goto done;
        }

        if (r->type == REDIS_REPLY_STRING) {
            if (json) {
                printf("%s{\"user\":", first ? "" : ",");
                cli_out_json_str(users->element[j]->str);
                printf(",\"rpm\":%ld}", strtol(r->str, NULL, 10));
            } else {
                printf("%-20s %-24s %ld\n", "user", users->element[j]->str,
                       strtol(r->str, NULL, 10));
            }

            first = 0;
        }

        freeReplyObject(r);
    }

    if (json) {
        printf("]}\n");
    }

    rc = CLI_EXIT_OK;

done:

    if (users != NULL) {
        freeReplyObject(users);
    }

    cli_store_list_free(index, keys);
    return rc;
}
