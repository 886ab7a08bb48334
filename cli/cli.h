/*
 * cfcost, the command-line tool: what its files share.
 *
 *   main.c    global options, the command table, help
 *   args.c    command-line parsing and usage errors
 *   out.c     runtime errors and aligned, JSON and time output
 *   redis.c   the connection (address from cfcost_addr) and reply checks
 *   store.c   the key store in Redis (data model from cfcost_keys)
 *   keys.c    keys create | list | revoke
 *   models.c  models (the price table; JSON from cfcost_models)
 *
 * Files call downward only: main calls keys and models; keys calls store
 * and redis; store calls redis; everything may call args, out and
 * common/, which call nothing here.  Exit status: 0 success, 1 runtime
 * failure, 2 usage error.
 */

#ifndef CFCOST_CLI_H
#define CFCOST_CLI_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "cfcost_addr.h"
#include "cfcost_keys.h"
#include "cfcost_redis_auth.h"


#define CLI_EXIT_OK              0
#define CLI_EXIT_FAILED          1
#define CLI_EXIT_USAGE           2

#define CLI_DEFAULT_VAR          "./var"
#define CLI_DEFAULT_PRICING      "conf/pricing.json"


#define CLI_USAGE_CREATE                                                     \
    "cfcost keys create --user NAME [--name LABEL]\n"                        \
    "  Creates an API key for user NAME (1-64 of A-Z a-z 0-9 . _ @ -),\n"    \
    "  with an optional LABEL (at most 128 bytes, no control characters).\n" \
    "  The key is shown once, alone on the last line of the output.\n"

#define CLI_USAGE_LIST                                                       \
    "cfcost keys list [--user NAME] [--json]\n"                              \
    "  Lists keys, oldest first: id, user, label, prefix, creation time\n"   \
    "  (UTC) and status.  --json prints a JSON array instead.\n"

#define CLI_USAGE_REVOKE                                                     \
    "cfcost keys revoke KEY_ID\n"                                            \
    "  Revokes a key by its id (key_...); the record stays for audit.\n"

#define CLI_USAGE_KEYS                                                       \
    CLI_USAGE_CREATE CLI_USAGE_LIST CLI_USAGE_REVOKE

#define CLI_USAGE_LIMITS_SET                                                 \
    "cfcost limits set (--user NAME | --key KEY_ID) --rpm N\n"               \
    "  At most N requests a minute (1-1000000; 0 removes the limit) for a\n" \
    "  key, or for all of a user's keys together, shared by every gateway\n" \
    "  on the Redis; gateways see a change within their key cache's ttl.\n"

#define CLI_USAGE_LIMITS_LIST                                                \
    "cfcost limits list [--json]\n"                                          \
    "  Lists the keys and users that have a limit.\n"

#define CLI_USAGE_LIMITS                                                     \
    CLI_USAGE_LIMITS_SET CLI_USAGE_LIMITS_LIST

#define CLI_USAGE_USERS_LIST                                                 \
    "cfcost users list [--json]\n"                                           \
    "  Lists the users that own keys: keys, active keys, status, limit.\n"

#define CLI_USAGE_USERS_DISABLE                                              \
    "cfcost users disable NAME\n"                                            \
    "  Every key of user NAME is refused (403) within the gateways' key\n"   \
    "  cache ttl, and no key can be created for it, until it is enabled.\n"

#define CLI_USAGE_USERS_ENABLE                                               \
    "cfcost users enable NAME\n"                                             \
    "  Undoes users disable; revoked keys stay revoked.\n"

#define CLI_USAGE_USERS                                                      \
    CLI_USAGE_USERS_LIST CLI_USAGE_USERS_DISABLE CLI_USAGE_USERS_ENABLE

#define CLI_USAGE_MODELS                                                     \
    "cfcost models [--pricing FILE] [--json]\n"                              \
    "  Prints the price table (USD per 1M tokens), grouped by provider.\n"   \
    "  FILE defaults to $CFCOST_PRICING, else " CLI_DEFAULT_PRICING ".\n"    \
    "  --json prints GET /api/ai/models's body.\n"

#define CLI_USAGE_HELP                                                       \
    "cfcost help [COMMAND]\n"                                                \
    "  Shows this help, or one command's.\n"

#define CLI_USAGE                                                            \
    "usage: cfcost [--redis ADDR] [--redis-auth FILE] COMMAND [ARGS]\n"      \
    "\n"                                                                     \
    CLI_USAGE_KEYS CLI_USAGE_LIMITS CLI_USAGE_USERS CLI_USAGE_MODELS         \
    CLI_USAGE_HELP                                                           \
    "\n"                                                                     \
    "Redis: --redis ADDR, else $CFCOST_REDIS, else\n"                        \
    "  unix:$CFCOST_VAR/redis.sock ($CFCOST_VAR defaults to ./var).\n"       \
    "  ADDR is unix:/absolute/path, IPv4:PORT, [IPv6]:PORT or HOST:PORT.\n"  \
    "Redis credentials: --redis-auth FILE, else $CFCOST_REDIS_AUTH, else\n"  \
    "  $CFCOST_VAR/redis-cli.auth when it exists, else none.  FILE holds\n"  \
    "  \"USER PASSWORD\" (an ACL user) or \"PASSWORD\", closed to others.\n"  \
    "Each command takes -h for its own help.\n"                              \
    "Exit status: 0 success, 1 failure, 2 usage error.\n"


typedef struct {
    const char    *redis;       /* --redis ADDR, or NULL */
    const char    *redis_auth;  /* --redis-auth FILE, or NULL */
    redisContext  *rc;          /* connected by cli_redis_connect() */
} cli_ctx_t;


typedef struct {
    const char  *name;
    int        (*handler)(cli_ctx_t *ctx, int argc, char **argv);
    const char  *usage;
} cli_cmd_t;


/* one key record; the strings point into reply, which owns them */
typedef struct {
    const char    *id;
    const char    *user;
    const char    *name;
    const char    *prefix;
    long long      created_ms;
    int            revoked;
    redisReply    *reply;
} cli_key_t;


/* args.c */
int cli_args_opt(int argc, char **argv, int *i, const char *name,
    const char **value);
int cli_args_is_help(const char *arg);
const cli_cmd_t *cli_args_find(const cli_cmd_t *cmds, size_t n,
    const char *name);
int cli_args_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int cli_args_unexpected(const char *usage, const char *arg);

/* out.c */
void cli_out_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
size_t cli_out_width(const char *s);
void cli_out_cell(const char *s, size_t width);
void cli_out_iso8601(char *buf, long long ms);
int cli_out_json_str(const char *s);

/* redis.c */
int cli_redis_connect(cli_ctx_t *ctx);
int cli_redis_check(cli_ctx_t *ctx, redisReply *r, const char *what);
int cli_redis_exec_check(const redisReply *r);
const char *cli_redis_field(const redisReply *r, const char *name);

/* store.c */
int cli_store_create(cli_ctx_t *ctx, const char *user, const char *label,
    char *key, char *id);
long cli_store_list(cli_ctx_t *ctx, const char *user, redisReply **index,
    cli_key_t **keys);
void cli_store_list_free(redisReply *index, cli_key_t *keys);
int cli_store_revoke(cli_ctx_t *ctx, const char *id);
long long cli_store_now_ms(void);

/* keys.c, limits.c, users.c, models.c */
int cli_keys(cli_ctx_t *ctx, int argc, char **argv);
int cli_limits(cli_ctx_t *ctx, int argc, char **argv);
int cli_users(cli_ctx_t *ctx, int argc, char **argv);
int cli_models(cli_ctx_t *ctx, int argc, char **argv);

#endif /* CFCOST_CLI_H */
