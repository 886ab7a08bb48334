/*
 * cfcost: the command-line tool.
 *
 *   cfcost [--redis ADDR] keys create --user NAME [--name LABEL]
 *   cfcost [--redis ADDR] keys list [--user NAME] [--json]
 *   cfcost [--redis ADDR] keys revoke KEY_ID
 *   cfcost models [--pricing FILE] [--json]
 *
 * Synchronous hiredis is fine here: one short-lived process, a handful of
 * commands.  Key names and fields come from cfcost_schema.h only.
 *
 * Exit status: 0 success, 1 runtime failure, 2 usage error.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "cfcost_price.h"
#include "cfcost_schema.h"


#define CFCOST_EXIT_OK             0
#define CFCOST_EXIT_FAILED         1
#define CFCOST_EXIT_USAGE          2

#define CFCOST_USER_MAX            64
#define CFCOST_LABEL_MAX           128
#define CFCOST_KEYID_HEX           12
#define CFCOST_KEYID_TRIES         5
#define CFCOST_SHA256_HEX          64
#define CFCOST_APIKEY_LEN          (sizeof(CFCOST_APIKEY_TAG) - 1           \
                                    + CFCOST_APIKEY_RANDOM_LEN)
#define CFCOST_KEYID_LEN           (sizeof(CFCOST_KEYID_TAG) - 1            \
                                    + CFCOST_KEYID_HEX)

#define CFCOST_REDIS_TIMEOUT_SEC   5
#define CFCOST_DEFAULT_VAR         "./var"
#define CFCOST_DEFAULT_PRICING     "conf/pricing.json"

/* 248 = 4 x 62: bytes at or above it are redrawn, so no character is
 * likelier than another */
#define CFCOST_BASE62_LIMIT        248

static const char  cfcost_base62_chars[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/*
 * Sets revoked to "1" only on a record that exists, so a dangling index
 * entry cannot create a half record.  Returns 0: no record, 1: revoked
 * now, 2: was already revoked.
 */
static const char  cfcost_revoke_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
    "if redis.call('HGET', KEYS[1], '" CFCOST_KEY_F_REVOKED "') == '1' "
    "then return 2 end "
    "redis.call('HSET', KEYS[1], '" CFCOST_KEY_F_REVOKED "', '1') "
    "return 1";


typedef struct {
    const char    *redis;       /* --redis ADDR, or NULL */
    redisContext  *rc;
} cfcost_ctx_t;


/* one key record; the strings point into reply, which owns them */
typedef struct {
    const char    *id;
    const char    *user;
    const char    *name;
    const char    *prefix;
    long long      created_ms;
    int            revoked;
    redisReply    *reply;
} cfcost_key_t;


typedef struct {
    const char  *name;
    int        (*handler)(cfcost_ctx_t *ctx, int argc, char **argv);
    const char  *usage;
} cfcost_cmd_t;


static int cfcost_keys(cfcost_ctx_t *ctx, int argc, char **argv);
static int cfcost_keys_create(cfcost_ctx_t *ctx, int argc, char **argv);
static int cfcost_keys_list(cfcost_ctx_t *ctx, int argc, char **argv);
static int cfcost_keys_revoke(cfcost_ctx_t *ctx, int argc, char **argv);
static int cfcost_models(cfcost_ctx_t *ctx, int argc, char **argv);
static int cfcost_help(cfcost_ctx_t *ctx, int argc, char **argv);

static void cfcost_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int cfcost_usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#define CFCOST_USAGE_CREATE                                                  \
    "cfcost keys create --user NAME [--name LABEL]\n"                        \
    "  Creates an API key for user NAME (1-64 of A-Z a-z 0-9 . _ @ -),\n"    \
    "  with an optional LABEL (at most 128 bytes, no control characters).\n" \
    "  The key is shown once, alone on the last line of the output.\n"

#define CFCOST_USAGE_LIST                                                    \
    "cfcost keys list [--user NAME] [--json]\n"                              \
    "  Lists keys, oldest first: id, user, label, prefix, creation time\n"   \
    "  (UTC) and status.  --json prints a JSON array instead.\n"

#define CFCOST_USAGE_REVOKE                                                  \
    "cfcost keys revoke KEY_ID\n"                                            \
    "  Revokes a key by its id (key_...); the record stays for audit.\n"

#define CFCOST_USAGE_KEYS                                                    \
    CFCOST_USAGE_CREATE CFCOST_USAGE_LIST CFCOST_USAGE_REVOKE

#define CFCOST_USAGE_MODELS                                                  \
    "cfcost models [--pricing FILE] [--json]\n"                              \
    "  Prints the price table (USD per 1M tokens), grouped by provider.\n"   \
    "  FILE defaults to $CFCOST_PRICING, else " CFCOST_DEFAULT_PRICING ".\n"

#define CFCOST_USAGE_HELP                                                    \
    "cfcost help [COMMAND]\n"                                                \
    "  Shows this help, or one command's.\n"

#define CFCOST_USAGE                                                         \
    "usage: cfcost [--redis ADDR] COMMAND [ARGS]\n"                          \
    "\n"                                                                     \
    CFCOST_USAGE_KEYS CFCOST_USAGE_MODELS CFCOST_USAGE_HELP                  \
    "\n"                                                                     \
    "Redis: --redis ADDR, else $CFCOST_REDIS, else\n"                        \
    "  unix:$CFCOST_VAR/redis.sock ($CFCOST_VAR defaults to ./var).\n"       \
    "  ADDR is unix:/path/to/socket or HOST:PORT.\n"                         \
    "Each command takes -h for its own help.\n"                              \
    "Exit status: 0 success, 1 failure, 2 usage error.\n"


static const cfcost_cmd_t  cfcost_cmds[] = {
    { "keys",   cfcost_keys,   CFCOST_USAGE_KEYS },
    { "models", cfcost_models, CFCOST_USAGE_MODELS },
    { "help",   cfcost_help,   CFCOST_USAGE_HELP },
};


static const cfcost_cmd_t  cfcost_keys_cmds[] = {
    { "create", cfcost_keys_create, CFCOST_USAGE_CREATE },
    { "list",   cfcost_keys_list,   CFCOST_USAGE_LIST },
    { "revoke", cfcost_keys_revoke, CFCOST_USAGE_REVOKE },
};


/* Prints "cfcost: <message>" on stderr. */
static void
cfcost_error(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "cfcost: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}


/*
 * Prints the message and the command's usage (or, when usage is NULL, a
 * pointer to --help) on stderr; returns 2.
 */
static int
cfcost_usage_error(const char *usage, const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "cfcost: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);

    if (usage != NULL) {
        fprintf(stderr, "\nusage: %s", usage);

    } else {
        fprintf(stderr, "\ntry 'cfcost --help'\n");
    }

    return CFCOST_EXIT_USAGE;
}


/* Returns the larger of a and b. */
static size_t
cfcost_max(size_t a, size_t b)
{
    return a > b ? a : b;
}


/* Reports an argument a command does not take; returns 2. */
static int
cfcost_unexpected(const char *usage, const char *arg)
{
    return cfcost_usage_error(usage, "unexpected argument \"%s\"%s", arg,
                              strncmp(arg, "--redis", 7) == 0
                              ? " (global options go before the command)"
                              : "");
}


/* Returns 1 when arg is -h or --help. */
static int
cfcost_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}


/*
 * Matches argv[*i] against option name, as "--name VALUE" or
 * "--name=VALUE".  Returns 1 and sets *value (advancing *i past a separate
 * value), 0 when argv[*i] is another argument, -1 when the value is
 * missing.
 */
static int
cfcost_opt(int argc, char **argv, int *i, const char *name,
    const char **value)
{
    size_t       n;
    const char  *arg;

    arg = argv[*i];
    n = strlen(name);

    if (strncmp(arg, name, n) != 0) {
        return 0;
    }

    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }

    if (arg[n] != '\0') {
        return 0;
    }

    if (*i + 1 >= argc) {
        return -1;
    }

    *i += 1;
    *value = argv[*i];
    return 1;
}


/* Finds a command by name in a table of n; NULL when there is none. */
static const cfcost_cmd_t *
cfcost_cmd_find(const cfcost_cmd_t *cmds, size_t n, const char *name)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (strcmp(cmds[i].name, name) == 0) {
            return &cmds[i];
        }
    }

    return NULL;
}


/* ---- validation ------------------------------------------------------- */


/* Returns 1 when s is a valid user name: 1-64 of [A-Za-z0-9._@-]. */
static int
cfcost_user_valid(const char *s)
{
    size_t  n;

    n = strlen(s);

    return n >= 1 && n <= CFCOST_USER_MAX
           && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789._@-") == n;
}


/*
 * Returns NULL when s is an acceptable key label, else why it is not:
 * at most 128 bytes of UTF-8 without C0 or C1 control characters or DEL.
 */
static const char *
cfcost_label_invalid(const char *s)
{
    size_t          i;
    json_t         *utf8;
    unsigned char   c;

    if (strlen(s) > CFCOST_LABEL_MAX) {
        return "is longer than 128 bytes";
    }

    for (i = 0; s[i] != '\0'; i++) {
        c = (unsigned char) s[i];

        /* U+0080..U+009F are encoded as C2 80..C2 9F */
        if (c < 0x20 || c == 0x7f
            || (c == 0xc2 && (unsigned char) s[i + 1] >= 0x80
                && (unsigned char) s[i + 1] <= 0x9f))
        {
            return "contains a control character";
        }
    }

    /* jansson refuses invalid UTF-8: the label must survive --json */
    utf8 = json_string(s);
    if (utf8 == NULL) {
        return "is not valid UTF-8";
    }

    json_decref(utf8);
    return NULL;
}


/* ---- randomness and hashing -------------------------------------------- */


/* Fills buf with n bytes from /dev/urandom.  Returns 0, or -1 (reported). */
static int
cfcost_random(unsigned char *buf, size_t n)
{
    int      fd;
    ssize_t  r;
    size_t   got;

    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        cfcost_error("cannot open /dev/urandom: %s", strerror(errno));
        return -1;
    }

    for (got = 0; got < n; got += (size_t) r) {
        r = read(fd, buf + got, n - got);

        if (r == -1 && errno == EINTR) {
            r = 0;
            continue;
        }

        if (r <= 0) {
            cfcost_error("cannot read /dev/urandom: %s",
                         r == 0 ? "end of file" : strerror(errno));
            close(fd);
            return -1;
        }
    }

    close(fd);
    return 0;
}


/*
 * Writes n uniformly random base62 characters into out (no NUL).
 * Returns 0, or -1 (reported).
 */
static int
cfcost_base62(char *out, size_t n)
{
    size_t         i, k;
    unsigned char  buf[64];

    k = sizeof(buf);

    for (i = 0; i < n; /* void */) {
        if (k == sizeof(buf)) {
            if (cfcost_random(buf, sizeof(buf)) != 0) {
                return -1;
            }

            k = 0;
        }

        if (buf[k] < CFCOST_BASE62_LIMIT) {
            out[i++] = cfcost_base62_chars[buf[k] % 62];
        }

        k++;
    }

    return 0;
}


/* Writes the lowercase hex of n bytes, and a NUL, into out. */
static void
cfcost_hex(char *out, const unsigned char *in, size_t n)
{
    size_t  i;

    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


/* Writes the SHA-256 of s as 64 hex characters and a NUL into out. */
static int
cfcost_sha256_hex(char *out, const char *s)
{
    unsigned int   n;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) != 1
        || n * 2 != CFCOST_SHA256_HEX)
    {
        cfcost_error("SHA-256 failed");
        return -1;
    }

    cfcost_hex(out, md, n);
    return 0;
}


/* ---- Redis ------------------------------------------------------------- */


/*
 * Returns the Redis address to use: --redis, else $CFCOST_REDIS, else
 * unix:$CFCOST_VAR/redis.sock.  The result is static or from the
 * environment; buf holds the default.
 */
static const char *
cfcost_redis_addr(const cfcost_ctx_t *ctx, char *buf, size_t len)
{
    const char  *env, *var;

    if (ctx->redis != NULL) {
        return ctx->redis;
    }

    env = getenv("CFCOST_REDIS");
    if (env != NULL && env[0] != '\0') {
        return env;
    }

    var = getenv("CFCOST_VAR");
    if (var == NULL || var[0] == '\0') {
        var = CFCOST_DEFAULT_VAR;
    }

    snprintf(buf, len, "unix:%s/redis.sock", var);
    return buf;
}


/*
 * Connects to addr ("unix:/path" or "HOST:PORT", HOST possibly in
 * brackets).  Returns the context, or NULL after printing why; an
 * unparsable address is a usage error (*status 2), anything else 1.
 */
static redisContext *
cfcost_redis_open(const char *addr, int *status)
{
    long             port;
    char            *end, host[256];
    const char      *colon, *h;
    size_t           hlen;
    redisContext    *rc;
    struct timeval   tv = { CFCOST_REDIS_TIMEOUT_SEC, 0 };

    *status = CFCOST_EXIT_FAILED;

    if (strncmp(addr, "unix:", 5) == 0 && addr[5] != '\0') {
        rc = redisConnectUnixWithTimeout(addr + 5, tv);
        goto connected;
    }

    end = NULL;
    port = 0;
    h = addr;
    colon = strrchr(addr, ':');
    hlen = colon ? (size_t) (colon - addr) : 0;

    if (colon != NULL && colon[1] != '\0') {
        errno = 0;
        port = strtol(colon + 1, &end, 10);
    }

    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }

    if (end == NULL || *end != '\0' || errno != 0 || port < 1
        || port > 65535 || hlen == 0 || hlen >= sizeof(host))
    {
        *status = cfcost_usage_error(NULL,
                      "bad Redis address \"%s\": want unix:/path or "
                      "HOST:PORT", addr);
        return NULL;
    }

    memcpy(host, h, hlen);
    host[hlen] = '\0';
    rc = redisConnectWithTimeout(host, (int) port, tv);

connected:

    if (rc == NULL || rc->err) {
        cfcost_error("cannot reach Redis at %s: %s", addr,
                     rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return NULL;
    }

    if (redisSetTimeout(rc, tv) != REDIS_OK) {
        cfcost_error("cannot reach Redis at %s: %s", addr, rc->errstr);
        redisFree(rc);
        return NULL;
    }

    return rc;
}


/* Connects ctx->rc.  Returns 0, or the exit status after reporting. */
static int
cfcost_connect(cfcost_ctx_t *ctx)
{
    int          status;
    char         buf[4096];
    const char  *addr;

    addr = cfcost_redis_addr(ctx, buf, sizeof(buf));

    ctx->rc = cfcost_redis_open(addr, &status);

    return ctx->rc ? CFCOST_EXIT_OK : status;
}


/*
 * Checks a reply: NULL (connection failure) and error replies are
 * reported and make it return -1; the reply is freed then.  Returns 0 when
 * the reply is usable; the caller frees it.
 */
static int
cfcost_reply_check(cfcost_ctx_t *ctx, redisReply *r, const char *what)
{
    if (r == NULL) {
        cfcost_error("redis: %s: %s", what,
                     ctx->rc->err ? ctx->rc->errstr : "no reply");
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        cfcost_error("redis: %s: %s", what, r->str);
        freeReplyObject(r);
        return -1;
    }

    return 0;
}


/* Returns the value of field name in an HGETALL reply, or NULL. */
static const char *
cfcost_reply_field(const redisReply *r, const char *name)
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


/* ---- keys create ------------------------------------------------------- */


/*
 * Makes a key id not yet in the index.  Returns 0, or -1 (reported).
 * 48 random bits make a clash unlikely; checking makes it harmless.
 */
static int
cfcost_key_id(cfcost_ctx_t *ctx, char *id)
{
    int            tries;
    long long      taken;
    redisReply    *r;
    unsigned char  raw[CFCOST_KEYID_HEX / 2];

    for (tries = 0; tries < CFCOST_KEYID_TRIES; tries++) {
        if (cfcost_random(raw, sizeof(raw)) != 0) {
            return -1;
        }

        strcpy(id, CFCOST_KEYID_TAG);
        cfcost_hex(id + sizeof(CFCOST_KEYID_TAG) - 1, raw, sizeof(raw));

        r = redisCommand(ctx->rc, "HEXISTS %s %s", CFCOST_KEYS_INDEX, id);
        if (cfcost_reply_check(ctx, r, "HEXISTS") != 0) {
            return -1;
        }

        taken = (r->type == REDIS_REPLY_INTEGER) ? r->integer : 1;
        freeReplyObject(r);

        if (!taken) {
            return 0;
        }
    }

    cfcost_error("could not find a free key id");
    return -1;
}


/* Returns the current time in unix milliseconds. */
static long long
cfcost_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/*
 * Checks an EXEC reply.  Returns 0 when every queued command succeeded,
 * else -1 after reporting: a discarded transaction, or a command that
 * failed inside it (Redis does not roll the others back).
 */
static int
cfcost_exec_check(const redisReply *r)
{
    size_t  i;

    if (r->type != REDIS_REPLY_ARRAY) {
        cfcost_error("redis: EXEC: transaction discarded");
        return -1;
    }

    for (i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ERROR) {
            cfcost_error("redis: EXEC: %s", r->element[i]->str);
            return -1;
        }
    }

    return 0;
}


/* Best effort: removes what a half-applied cfcost_key_store() wrote. */
static void
cfcost_key_unstore(cfcost_ctx_t *ctx, const char *hash, const char *id)
{
    redisReply  *r;

    r = redisCommand(ctx->rc, "DEL " CFCOST_KEY_PREFIX "%s", hash);
    freeReplyObject(r);

    r = redisCommand(ctx->rc, "HDEL %s %s", CFCOST_KEYS_INDEX, id);
    freeReplyObject(r);
}


/*
 * Stores a key in one MULTI/EXEC: its record under its hash, the id index
 * entry and the user.  Returns 0, or -1 (reported) with nothing stored.
 */
static int
cfcost_key_store(cfcost_ctx_t *ctx, const char *key, const char *hash,
    const char *id, const char *user, const char *label)
{
    int          i, rc;
    char         prefix[CFCOST_APIKEY_SHOWN_PREFIX + 1];
    char         created[32];
    redisReply  *r;

    static const char  *what[] = { "MULTI", "HSET", "HSET", "SADD", "EXEC" };

    memcpy(prefix, key, CFCOST_APIKEY_SHOWN_PREFIX);
    prefix[CFCOST_APIKEY_SHOWN_PREFIX] = '\0';
    snprintf(created, sizeof(created), "%lld", cfcost_now_ms());

    redisAppendCommand(ctx->rc, "MULTI");
    redisAppendCommand(ctx->rc,
        "HSET " CFCOST_KEY_PREFIX "%s"
        " " CFCOST_KEY_F_ID " %s"
        " " CFCOST_KEY_F_USER " %s"
        " " CFCOST_KEY_F_NAME " %s"
        " " CFCOST_KEY_F_PREFIX " %s"
        " " CFCOST_KEY_F_CREATED " %s"
        " " CFCOST_KEY_F_REVOKED " 0",
        hash, id, user, label, prefix, created);
    redisAppendCommand(ctx->rc, "HSET %s %s %s", CFCOST_KEYS_INDEX, id, hash);
    redisAppendCommand(ctx->rc, "SADD %s %s", CFCOST_USERS_SET, user);
    redisAppendCommand(ctx->rc, "EXEC");

    rc = 0;

    /* read every reply, even after a failure, so none is left behind */
    for (i = 0; i < 5; i++) {
        r = NULL;

        if (redisGetReply(ctx->rc, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (cfcost_reply_check(ctx, r, what[i]) != 0) {
            rc = -1;

            if (r == NULL) {
                return -1;
            }

            continue;
        }

        if (i == 4 && cfcost_exec_check(r) != 0) {
            cfcost_key_unstore(ctx, hash, id);
            rc = -1;
        }

        freeReplyObject(r);
    }

    return rc;
}


/* Parses keys create's arguments.  Returns 0, -1 for -h, or 2. */
static int
cfcost_create_args(int argc, char **argv, const char **user,
    const char **label)
{
    int          i, m;
    const char  *why;

    for (i = 1; i < argc; i++) {
        if (cfcost_is_help(argv[i])) {
            return -1;
        }

        if ((m = cfcost_opt(argc, argv, &i, "--user", user)) == 0) {
            m = cfcost_opt(argc, argv, &i, "--name", label);
        }

        if (m == 0) {
            return cfcost_unexpected(CFCOST_USAGE_CREATE, argv[i]);
        }

        if (m < 0) {
            return cfcost_usage_error(CFCOST_USAGE_CREATE,
                                      "%s needs a value", argv[i]);
        }
    }

    if (*user == NULL) {
        return cfcost_usage_error(CFCOST_USAGE_CREATE, "--user is required");
    }

    if (!cfcost_user_valid(*user)) {
        return cfcost_usage_error(CFCOST_USAGE_CREATE,
                   "bad user name \"%s\": want 1-64 of A-Z a-z 0-9 . _ @ -",
                   *user);
    }

    why = cfcost_label_invalid(*label);
    if (why != NULL) {
        return cfcost_usage_error(CFCOST_USAGE_CREATE, "the label %s", why);
    }

    return 0;
}


static int
cfcost_keys_create(cfcost_ctx_t *ctx, int argc, char **argv)
{
    int          rc;
    char         key[CFCOST_APIKEY_LEN + 1], id[CFCOST_KEYID_LEN + 1];
    char         hash[CFCOST_SHA256_HEX + 1];
    const char  *user, *label;

    user = NULL;
    label = "";

    rc = cfcost_create_args(argc, argv, &user, &label);
    if (rc != 0) {
        if (rc < 0) {
            fputs(CFCOST_USAGE_CREATE, stdout);
            return CFCOST_EXIT_OK;
        }

        return rc;
    }

    rc = cfcost_connect(ctx);
    if (rc != CFCOST_EXIT_OK) {
        return rc;
    }

    strcpy(key, CFCOST_APIKEY_TAG);
    key[CFCOST_APIKEY_LEN] = '\0';

    if (cfcost_base62(key + sizeof(CFCOST_APIKEY_TAG) - 1,
                      CFCOST_APIKEY_RANDOM_LEN) != 0
        || cfcost_sha256_hex(hash, key) != 0
        || cfcost_key_id(ctx, id) != 0
        || cfcost_key_store(ctx, key, hash, id, user, label) != 0)
    {
        return CFCOST_EXIT_FAILED;
    }

    printf("created %s for user %s%s%s%s; store it now: it is shown once\n",
           id, user, label[0] ? " (\"" : "", label, label[0] ? "\")" : "");
    printf("%s\n", key);

    if (fflush(stdout) != 0 || ferror(stdout)) {
        cfcost_error("could not print the new key: revoke %s and create "
                     "another", id);
        return CFCOST_EXIT_FAILED;
    }

    return CFCOST_EXIT_OK;
}


/* ---- keys list --------------------------------------------------------- */


/* Sort order of keys list: creation time, then id. */
static int
cfcost_key_cmp(const void *pa, const void *pb)
{
    const cfcost_key_t  *a, *b;

    a = pa;
    b = pb;

    if (a->created_ms != b->created_ms) {
        return a->created_ms < b->created_ms ? -1 : 1;
    }

    return strcmp(a->id, b->id);
}


/*
 * Fills k from an HGETALL reply of the record that index entry id points
 * to.  Returns 0, or -1 when there is no such record.
 */
static int
cfcost_key_fill(cfcost_key_t *k, const char *id, redisReply *r)
{
    const char  *v;

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        return -1;
    }

    k->reply = r;
    k->id = id;
    k->user = cfcost_reply_field(r, CFCOST_KEY_F_USER);
    k->name = cfcost_reply_field(r, CFCOST_KEY_F_NAME);
    k->prefix = cfcost_reply_field(r, CFCOST_KEY_F_PREFIX);

    v = cfcost_reply_field(r, CFCOST_KEY_F_CREATED);
    k->created_ms = v ? strtoll(v, NULL, 10) : 0;

    v = cfcost_reply_field(r, CFCOST_KEY_F_REVOKED);
    k->revoked = (v == NULL || strcmp(v, "0") != 0);

    k->user = k->user ? k->user : "";
    k->name = k->name ? k->name : "";
    k->prefix = k->prefix ? k->prefix : "";

    return 0;
}


/*
 * Reads every key record listed in the index (pipelined HGETALLs), keeps
 * those of user (all when NULL) in keys[], sorted.  *index owns the ids.
 * Returns the count, or -1 (reported).  The caller frees with
 * cfcost_keys_free().
 */
static long
cfcost_keys_read(cfcost_ctx_t *ctx, const char *user, redisReply **index,
    cfcost_key_t **keys)
{
    size_t         i, n, pairs;
    redisReply    *ix, *r;
    cfcost_key_t  *k;

    *keys = NULL;

    ix = redisCommand(ctx->rc, "HGETALL %s", CFCOST_KEYS_INDEX);
    if (cfcost_reply_check(ctx, ix, "HGETALL") != 0) {
        return -1;
    }

    *index = ix;
    pairs = (ix->type == REDIS_REPLY_ARRAY) ? ix->elements / 2 : 0;

    *keys = calloc(pairs + 1, sizeof(cfcost_key_t));
    if (*keys == NULL) {
        cfcost_error("out of memory");
        return -1;
    }

    for (i = 0; i < pairs; i++) {
        redisAppendCommand(ctx->rc, "HGETALL " CFCOST_KEY_PREFIX "%s",
                           ix->element[2 * i + 1]->str);
    }

    for (i = 0, n = 0; i < pairs; i++) {
        r = NULL;

        if (redisGetReply(ctx->rc, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (cfcost_reply_check(ctx, r, "HGETALL") != 0) {
            return -1;
        }

        k = &(*keys)[n];

        if (cfcost_key_fill(k, ix->element[2 * i]->str, r) != 0) {
            fprintf(stderr, "cfcost: warning: %s has no record; skipped\n",
                    ix->element[2 * i]->str);
            freeReplyObject(r);
            continue;
        }

        if (user != NULL && strcmp(k->user, user) != 0) {
            freeReplyObject(r);
            memset(k, 0, sizeof(*k));
            continue;
        }

        n++;
    }

    qsort(*keys, n, sizeof(cfcost_key_t), cfcost_key_cmp);
    return (long) n;
}


/* Frees what cfcost_keys_read() returned; keys ends at a NULL reply. */
static void
cfcost_keys_free(redisReply *index, cfcost_key_t *keys)
{
    size_t  i;

    for (i = 0; keys != NULL && keys[i].reply != NULL; i++) {
        freeReplyObject(keys[i].reply);
    }

    free(keys);

    if (index != NULL) {
        freeReplyObject(index);
    }
}


/* Writes ms as UTC ISO-8601 ("2026-11-27T23:05:12Z") into buf[32]. */
static void
cfcost_iso8601(char *buf, long long ms)
{
    time_t     sec;
    struct tm  tm;

    sec = (time_t) (ms / 1000);

    if (gmtime_r(&sec, &tm) == NULL
        || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        snprintf(buf, 32, "?");
    }
}


/* Returns how many characters (not bytes) of UTF-8 s occupies. */
static size_t
cfcost_width(const char *s)
{
    size_t  n;

    for (n = 0; *s != '\0'; s++) {
        n += ((*s & 0xc0) != 0x80);
    }

    return n;
}


/* Prints s left-aligned in a column of width characters, then a gap. */
static void
cfcost_cell(const char *s, size_t width)
{
    size_t  w;

    fputs(s, stdout);

    for (w = cfcost_width(s); w < width + 2; w++) {
        putchar(' ');
    }
}


/* Prints the rows of keys list as an aligned table. */
static void
cfcost_keys_table(const cfcost_key_t *keys, size_t n)
{
    size_t       i, c;
    char         created[32];
    const char  *row[6];
    size_t       w[6] = { 2, 4, 4, 6, 20, 6 };   /* 2026-11-27T23:05:12Z */

    static const char  *head[6] = {
        "ID", "USER", "NAME", "PREFIX", "CREATED", "STATUS"
    };

    for (i = 0; i < n; i++) {
        w[0] = cfcost_max(w[0], cfcost_width(keys[i].id));
        w[1] = cfcost_max(w[1], cfcost_width(keys[i].user));
        w[2] = cfcost_max(w[2], cfcost_width(keys[i].name));
        w[3] = cfcost_max(w[3], cfcost_width(keys[i].prefix));
    }

    for (c = 0; c < 5; c++) {
        cfcost_cell(head[c], w[c]);
    }

    printf("%s\n", head[5]);

    for (i = 0; i < n; i++) {
        cfcost_iso8601(created, keys[i].created_ms);

        row[0] = keys[i].id;
        row[1] = keys[i].user;
        row[2] = keys[i].name[0] ? keys[i].name : "-";
        row[3] = keys[i].prefix;
        row[4] = created;

        for (c = 0; c < 5; c++) {
            cfcost_cell(row[c], w[c]);
        }

        printf("%s\n", keys[i].revoked ? "revoked" : "active");
    }
}


/* Returns a JSON string of s; bytes that are not UTF-8 become '?'. */
static json_t *
cfcost_json_str(const char *s)
{
    char    *copy, *p;
    json_t  *v;

    v = json_string(s);
    if (v != NULL) {
        return v;
    }

    copy = strdup(s);
    if (copy == NULL) {
        return NULL;
    }

    for (p = copy; *p != '\0'; p++) {
        if ((unsigned char) *p >= 0x80) {
            *p = '?';
        }
    }

    v = json_string(copy);
    free(copy);
    return v;
}


/* Returns the JSON object describing one key, or NULL. */
static json_t *
cfcost_key_json(const cfcost_key_t *k)
{
    char     created[32];
    json_t  *o;

    cfcost_iso8601(created, k->created_ms);

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    if (json_object_set_new(o, "id", cfcost_json_str(k->id)) != 0
        || json_object_set_new(o, "user", cfcost_json_str(k->user)) != 0
        || json_object_set_new(o, "name", cfcost_json_str(k->name)) != 0
        || json_object_set_new(o, "prefix", cfcost_json_str(k->prefix)) != 0
        || json_object_set_new(o, "created_ms",
                               json_integer(k->created_ms)) != 0
        || json_object_set_new(o, "created", json_string(created)) != 0
        || json_object_set_new(o, "revoked", json_boolean(k->revoked)) != 0
        || json_object_set_new(o, "status",
                               json_string(k->revoked ? "revoked"
                                                      : "active")) != 0)
    {
        json_decref(o);
        return NULL;
    }

    return o;
}


/* Prints the rows of keys list as a JSON array.  Returns 0 or -1. */
static int
cfcost_keys_json(const cfcost_key_t *keys, size_t n)
{
    size_t   i;
    json_t  *a;

    a = json_array();
    if (a == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        if (json_array_append_new(a, cfcost_key_json(&keys[i])) != 0) {
            goto failed;
        }
    }

    if (json_dumpf(a, stdout, JSON_INDENT(2)) != 0) {
        goto failed;
    }

    putchar('\n');
    json_decref(a);
    return 0;

failed:

    cfcost_error("cannot build the JSON output");
    json_decref(a);
    return -1;
}


/* Parses keys list's arguments.  Returns 0, -1 for -h, or 2. */
static int
cfcost_list_args(int argc, char **argv, const char **user, int *json)
{
    int  i, m;

    for (i = 1; i < argc; i++) {
        if (cfcost_is_help(argv[i])) {
            return -1;
        }

        if (strcmp(argv[i], "--json") == 0) {
            *json = 1;
            continue;
        }

        m = cfcost_opt(argc, argv, &i, "--user", user);

        if (m == 0) {
            return cfcost_unexpected(CFCOST_USAGE_LIST, argv[i]);
        }

        if (m < 0) {
            return cfcost_usage_error(CFCOST_USAGE_LIST, "%s needs a value",
                                      argv[i]);
        }

        if (!cfcost_user_valid(*user)) {
            return cfcost_usage_error(CFCOST_USAGE_LIST,
                                      "bad user name \"%s\"", *user);
        }
    }

    return 0;
}


static int
cfcost_keys_list(cfcost_ctx_t *ctx, int argc, char **argv)
{
    int            rc, json;
    long           n;
    redisReply    *index;
    const char    *user;
    cfcost_key_t  *keys;

    user = NULL;
    json = 0;
    index = NULL;

    rc = cfcost_list_args(argc, argv, &user, &json);
    if (rc != 0) {
        if (rc < 0) {
            fputs(CFCOST_USAGE_LIST, stdout);
            return CFCOST_EXIT_OK;
        }

        return rc;
    }

    rc = cfcost_connect(ctx);
    if (rc != CFCOST_EXIT_OK) {
        return rc;
    }

    rc = CFCOST_EXIT_FAILED;

    n = cfcost_keys_read(ctx, user, &index, &keys);
    if (n < 0) {
        goto done;
    }

    if (json) {
        if (cfcost_keys_json(keys, (size_t) n) != 0) {
            goto done;
        }

    } else {
        cfcost_keys_table(keys, (size_t) n);
    }

    rc = CFCOST_EXIT_OK;

done:

    cfcost_keys_free(index, keys);
    return rc;
}


/* ---- keys revoke ------------------------------------------------------- */


/*
 * Looks up the record hash of key id.  Returns 0 with hash filled, or the
 * exit status after reporting (an unknown id is a runtime failure).
 */
static int
cfcost_key_hash(cfcost_ctx_t *ctx, const char *id, char *hash, size_t len)
{
    redisReply  *r;

    r = redisCommand(ctx->rc, "HGET %s %s", CFCOST_KEYS_INDEX, id);
    if (cfcost_reply_check(ctx, r, "HGET") != 0) {
        return CFCOST_EXIT_FAILED;
    }

    if (r->type != REDIS_REPLY_STRING || r->len >= len) {
        cfcost_error("no such key id: %s%s", id,
                     strncmp(id, CFCOST_APIKEY_TAG,
                             sizeof(CFCOST_APIKEY_TAG) - 1) == 0
                     ? " (that looks like a key; revoke takes its id, "
                       "see 'cfcost keys list')" : "");
        freeReplyObject(r);
        return CFCOST_EXIT_FAILED;
    }

    memcpy(hash, r->str, r->len + 1);
    freeReplyObject(r);
    return 0;
}


static int
cfcost_keys_revoke(cfcost_ctx_t *ctx, int argc, char **argv)
{
    int          rc;
    long long    done;
    char         hash[CFCOST_SHA256_HEX + 1];
    redisReply  *r;
    const char  *id;

    if (argc == 2 && cfcost_is_help(argv[1])) {
        fputs(CFCOST_USAGE_REVOKE, stdout);
        return CFCOST_EXIT_OK;
    }

    if (argc != 2 || argv[1][0] == '-') {
        return cfcost_usage_error(CFCOST_USAGE_REVOKE,
                                  argc < 2 ? "KEY_ID is required"
                                           : "expected exactly one KEY_ID");
    }

    id = argv[1];

    rc = cfcost_connect(ctx);
    if (rc != CFCOST_EXIT_OK) {
        return rc;
    }

    rc = cfcost_key_hash(ctx, id, hash, sizeof(hash));
    if (rc != 0) {
        return rc;
    }

    r = redisCommand(ctx->rc, "EVAL %s 1 " CFCOST_KEY_PREFIX "%s",
                     cfcost_revoke_lua, hash);
    if (cfcost_reply_check(ctx, r, "EVAL") != 0) {
        return CFCOST_EXIT_FAILED;
    }

    done = (r->type == REDIS_REPLY_INTEGER) ? r->integer : 0;
    freeReplyObject(r);

    if (done == 0) {
        cfcost_error("key id %s has no record", id);
        return CFCOST_EXIT_FAILED;
    }

    if (done == 2) {
        fprintf(stderr, "cfcost: %s was already revoked\n", id);
    }

    printf("revoked %s\n", id);
    return CFCOST_EXIT_OK;
}


static int
cfcost_keys(cfcost_ctx_t *ctx, int argc, char **argv)
{
    const cfcost_cmd_t  *cmd;

    if (argc < 2) {
        return cfcost_usage_error(CFCOST_USAGE_KEYS,
                                  "keys needs create, list or revoke");
    }

    if (cfcost_is_help(argv[1])) {
        fputs(CFCOST_USAGE_KEYS, stdout);
        return CFCOST_EXIT_OK;
    }

    cmd = cfcost_cmd_find(cfcost_keys_cmds,
                          sizeof(cfcost_keys_cmds) / sizeof(cfcost_cmd_t),
                          argv[1]);
    if (cmd == NULL) {
        return cfcost_usage_error(CFCOST_USAGE_KEYS,
                                  "unknown keys command \"%s\"", argv[1]);
    }

    return cmd->handler(ctx, argc - 1, argv + 1);
}


/* ---- models ------------------------------------------------------------ */


/*
 * Reads the whole file at path into a malloc'ed, NUL-terminated buffer.
 * Returns it with *len set, or NULL after reporting.
 */
static char *
cfcost_read_file(const char *path, size_t *len)
{
    char    *buf, *p;
    size_t   n, cap;
    FILE    *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        cfcost_error("%s: %s", path, strerror(errno));
        return NULL;
    }

    buf = NULL;
    cap = 0;
    n = 0;

    do {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            p = realloc(buf, cap + 1);
            if (p == NULL) {
                cfcost_error("%s: out of memory", path);
                goto failed;
            }

            buf = p;
        }

        n += fread(buf + n, 1, cap - n, f);

    } while (!feof(f) && !ferror(f));

    if (ferror(f)) {
        cfcost_error("%s: read error", path);
        goto failed;
    }

    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;

failed:

    fclose(f);
    free(buf);
    return NULL;
}


/* Loads the price table from path.  Returns 0, or -1 after reporting. */
static int
cfcost_pricing_load(const char *path, cfcost_price_table_t *t)
{
    int      rc;
    char    *data, err[512];
    size_t   len;

    len = 0;

    data = cfcost_read_file(path, &len);
    if (data == NULL) {
        return -1;
    }

    rc = cfcost_price_load(data, len, t, err, sizeof(err));
    free(data);

    if (rc != 0) {
        cfcost_error("%s: %s", path, err);
        return -1;
    }

    return 0;
}


/* Prints the price table, one provider after another, aligned. */
static void
cfcost_models_table(const cfcost_price_table_t *t, const char *path)
{
    size_t                 i, wid, wname;
    char                   in[32], out[32], cached[32];
    const char            *provider;
    const cfcost_model_t  *m;

    wid = 5;
    wname = 4;

    for (i = 0; i < t->n; i++) {
        m = &t->models[i];
        wid = cfcost_max(wid, cfcost_width(m->id));
        wname = cfcost_max(wname, cfcost_width(m->name));
    }

    printf("pricing %s from %s, USD per 1M tokens, %zu models\n",
           t->version, path, t->n);

    provider = NULL;

    for (i = 0; i < t->n; i++) {
        m = &t->models[i];

        if (provider == NULL || strcmp(provider, m->provider) != 0) {
            provider = m->provider;
            printf("\n%s\n  ", provider[0] ? provider : "(no provider)");
            cfcost_cell("MODEL", wid);
            cfcost_cell("NAME", wname);
            printf("%9s  %9s  %9s  SOURCE\n", "INPUT", "OUTPUT", "CACHED");
        }

        cfcost_price_str(in, m->input);
        cfcost_price_str(out, m->output);

        if (m->cached == CFCOST_PRICE_NONE) {
            strcpy(cached, "-");

        } else {
            cfcost_price_str(cached, m->cached);
        }

        printf("  ");
        cfcost_cell(m->id, wid);
        cfcost_cell(m->name, wname);
        printf("%9s  %9s  %9s  %s\n", in, out, cached, m->source);
    }
}


/* Returns a JSON number for a micro-USD price (dumped exactly, see below). */
static json_t *
cfcost_price_json(int64_t micro)
{
    return json_real((double) micro / 1e6);
}


/* Returns the JSON object describing one model, or NULL. */
static json_t *
cfcost_model_json(const cfcost_model_t *m)
{
    json_t  *o, *p;

    p = json_object();
    o = json_object();

    if (p == NULL || o == NULL
        || json_object_set_new(p, "input", cfcost_price_json(m->input)) != 0
        || json_object_set_new(p, "output", cfcost_price_json(m->output)) != 0
        || (m->cached != CFCOST_PRICE_NONE
            && json_object_set_new(p, "cached_input",
                                   cfcost_price_json(m->cached)) != 0)
        || json_object_set_new(o, "id", cfcost_json_str(m->id)) != 0
        || json_object_set_new(o, "name", cfcost_json_str(m->name)) != 0
        || json_object_set_new(o, "provider",
                               cfcost_json_str(m->provider)) != 0
        || json_object_set_new(o, "description",
                               cfcost_json_str(m->description)) != 0
        || json_object_set_new(o, "pricing", json_incref(p)) != 0
        || json_object_set_new(o, "source", cfcost_json_str(m->source)) != 0)
    {
        json_decref(p);
        json_decref(o);
        return NULL;
    }

    json_decref(p);
    return o;
}


/*
 * Prints {"version", "currency", "unit", "models": [...]} in the shape of
 * GET /api/ai/models.  Prices have at most 10 significant digits, so 15
 * digits print each one as its exact decimal.  Returns 0 or -1.
 */
static int
cfcost_models_json(const cfcost_price_table_t *t)
{
    size_t   i;
    json_t  *root, *a;

    a = json_array();
    root = json_pack("{s:s, s:s, s:s, s:o}", "version", t->version,
                     "currency", "USD", "unit", "per 1M tokens", "models", a);
    if (root == NULL) {
        goto failed;
    }

    for (i = 0; i < t->n; i++) {
        if (json_array_append_new(a, cfcost_model_json(&t->models[i])) != 0) {
            goto failed;
        }
    }

    if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15))
        != 0)
    {
        goto failed;
    }

    putchar('\n');
    json_decref(root);
    return 0;

failed:

    cfcost_error("cannot build the JSON output");
    json_decref(root);
    return -1;
}


static int
cfcost_models(cfcost_ctx_t *ctx, int argc, char **argv)
{
    int                    i, m, json, rc;
    const char            *path;
    cfcost_price_table_t   t;

    (void) ctx;

    json = 0;
    path = getenv("CFCOST_PRICING");
    path = (path != NULL && path[0] != '\0') ? path : CFCOST_DEFAULT_PRICING;

    for (i = 1; i < argc; i++) {
        if (cfcost_is_help(argv[i])) {
            fputs(CFCOST_USAGE_MODELS, stdout);
            return CFCOST_EXIT_OK;
        }

        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }

        m = cfcost_opt(argc, argv, &i, "--pricing", &path);

        if (m == 0) {
            return cfcost_unexpected(CFCOST_USAGE_MODELS, argv[i]);
        }

        if (m < 0) {
            return cfcost_usage_error(CFCOST_USAGE_MODELS, "%s needs a value",
                                      argv[i]);
        }
    }

    if (cfcost_pricing_load(path, &t) != 0) {
        return CFCOST_EXIT_FAILED;
    }

    rc = CFCOST_EXIT_OK;

    if (json) {
        rc = cfcost_models_json(&t) == 0 ? CFCOST_EXIT_OK : CFCOST_EXIT_FAILED;

    } else {
        cfcost_models_table(&t, path);
    }

    cfcost_price_free(&t);
    return rc;
}


/* ---- help and main ----------------------------------------------------- */


static int
cfcost_help(cfcost_ctx_t *ctx, int argc, char **argv)
{
    const cfcost_cmd_t  *cmd;

    (void) ctx;

    if (argc < 2) {
        fputs(CFCOST_USAGE, stdout);
        return CFCOST_EXIT_OK;
    }

    cmd = cfcost_cmd_find(cfcost_cmds,
                          sizeof(cfcost_cmds) / sizeof(cfcost_cmd_t), argv[1]);
    if (cmd == NULL) {
        return cfcost_usage_error(NULL, "unknown command \"%s\"",
                                  argv[1]);
    }

    fputs(cmd->usage, stdout);
    return CFCOST_EXIT_OK;
}


/*
 * Parses the global options before the command.  Returns the index of the
 * command in argv, 0 when help was printed, or -2 after a usage error.
 */
static int
cfcost_global_args(cfcost_ctx_t *ctx, int argc, char **argv)
{
    int  i, m;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (cfcost_is_help(argv[i])) {
            fputs(CFCOST_USAGE, stdout);
            return 0;
        }

        m = cfcost_opt(argc, argv, &i, "--redis", &ctx->redis);

        if (m <= 0) {
            cfcost_usage_error(NULL, m < 0 ? "%s needs a value"
                                                   : "unknown option \"%s\"",
                               argv[i]);
            return -2;
        }
    }

    if (i == argc) {
        cfcost_usage_error(NULL, "a command is required");
        return -2;
    }

    return i;
}


int
main(int argc, char **argv)
{
    int                  i, rc;
    cfcost_ctx_t         ctx;
    const cfcost_cmd_t  *cmd;

    memset(&ctx, 0, sizeof(ctx));

    i = cfcost_global_args(&ctx, argc, argv);
    if (i <= 0) {
        return i == 0 ? CFCOST_EXIT_OK : CFCOST_EXIT_USAGE;
    }

    cmd = cfcost_cmd_find(cfcost_cmds,
                          sizeof(cfcost_cmds) / sizeof(cfcost_cmd_t), argv[i]);
    if (cmd == NULL) {
        return cfcost_usage_error(NULL, "unknown command \"%s\"",
                                  argv[i]);
    }

    rc = cmd->handler(&ctx, argc - i, argv + i);

    if (ctx.rc != NULL) {
        redisFree(ctx.rc);
    }

    if (fflush(stdout) != 0 && rc == CFCOST_EXIT_OK) {
        cfcost_error("cannot write to stdout: %s", strerror(errno));
        rc = CFCOST_EXIT_FAILED;
    }

    return rc;
}
