/*
 * cfcost CLI: the key store in Redis.  What a key, its id, its hash and
 * its record's name are comes from cfcost_keys (the module checks keys by
 * the same rules); key names and fields from cfcost_schema.h only.  This
 * file adds what needs Redis and randomness.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"


#define CLI_STORE_ID_TRIES  5


/* Fills buf with n bytes from /dev/urandom.  Returns 0, or -1 (reported). */
static int
cli_store_random(unsigned char *buf, size_t n)
{
    int      fd;
    ssize_t  r;
    size_t   got;

    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        cli_out_error("cannot open /dev/urandom: %s", strerror(errno));
        return -1;
    }

    for (got = 0; got < n; got += (size_t) r) {
        r = read(fd, buf + got, n - got);

        if (r == -1 && errno == EINTR) {
            r = 0;
            continue;
        }

        if (r <= 0) {
            cli_out_error("cannot read /dev/urandom: %s",
                          r == 0 ? "end of file" : strerror(errno));
            close(fd);
            return -1;
        }
    }

    close(fd);
    return 0;
}


/* Makes a new key into key.  Returns 0, or -1 (reported). */
static int
cli_store_key(char *key)
{
    unsigned char  rnd[CFCOST_KEYS_KEY_RANDOM];

    do {
        if (cli_store_random(rnd, sizeof(rnd)) != 0) {
            return -1;
        }

    } while (cfcost_keys_generate(key, rnd, sizeof(rnd)) != 0);

    return 0;
}


/*
 * Makes a key id not yet in the index.  Returns 0, or -1 (reported).
 * 48 random bits make a clash unlikely; checking makes it harmless.
 */
static int
cli_store_id(cli_ctx_t *ctx, char *id)
{
    int            tries;
    long long      taken;
    redisReply    *r;
    unsigned char  rnd[CFCOST_KEYS_ID_RANDOM];

    for (tries = 0; tries < CLI_STORE_ID_TRIES; tries++) {
        if (cli_store_random(rnd, sizeof(rnd)) != 0) {
            return -1;
        }

        cfcost_keys_id(id, rnd);

        r = redisCommand(ctx->rc, "HEXISTS %s %s", CFCOST_KEYS_INDEX, id);
        if (cli_redis_check(ctx, r, "HEXISTS") != 0) {
            return -1;
        }

        taken = (r->type == REDIS_REPLY_INTEGER) ? r->integer : 1;
        freeReplyObject(r);

        if (!taken) {
            return 0;
        }
    }

    cli_out_error("could not find a free key id");
    return -1;
}


/* Returns the current time in unix milliseconds. */
long long
cli_store_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Best effort: removes what a half-applied cli_store_put() wrote. */
static void
cli_store_unput(cli_ctx_t *ctx, const char *record, const char *id)
{
    redisReply  *r;

    r = redisCommand(ctx->rc, "DEL %s", record);
    freeReplyObject(r);

    r = redisCommand(ctx->rc, "HDEL %s %s", CFCOST_KEYS_INDEX, id);
    freeReplyObject(r);
}


/*
 * Stores a key in one MULTI/EXEC: its record under its hash, the id index
 * entry and the user.  Returns 0, or -1 (reported) with nothing stored.
 */
static int
cli_store_put(cli_ctx_t *ctx, const char *key, const char *hash,
    const char *id, const char *user, const char *label)
{
    int          i, rc;
    char         prefix[CFCOST_APIKEY_SHOWN_PREFIX + 1], created[32];
    char         record[CFCOST_KEYS_RECORD_LEN + 1], user_rpm[16];
    redisReply  *r;

    static const char  *what[] = { "MULTI", "HSET", "HSET", "SADD", "EXEC" };

    cfcost_keys_prefix(prefix, key);
    cfcost_keys_record(record, hash);
    snprintf(created, sizeof(created), "%lld", cli_store_now_ms());

    /*
     * the user's request limit, copied into the key (cli/limits.c), and
     * whether the user is disabled (cli/users.c); if either changes
     * before EXEC, the transaction stores nothing and says so
     */
    r = redisCommand(ctx->rc, "WATCH " CFCOST_LIMITS_USER_PREFIX "%s "
                     CFCOST_USER_PREFIX "%s", user, user);
    if (cli_redis_check(ctx, r, "WATCH") != 0) {
        return -1;
    }

    freeReplyObject(r);

    r = redisCommand(ctx->rc, "HGET " CFCOST_USER_PREFIX "%s %s", user,
                     CFCOST_USER_F_DISABLED);
    if (cli_redis_check(ctx, r, "HGET") != 0) {
        return -1;
    }

    if (r->type == REDIS_REPLY_STRING && r->len != 0) {
        cli_out_error("user %s is disabled: 'cfcost users enable %s' first",
                      user, user);
        freeReplyObject(r);
        freeReplyObject(redisCommand(ctx->rc, "UNWATCH"));
        return -1;
    }

    freeReplyObject(r);

    r = redisCommand(ctx->rc, "HGET " CFCOST_LIMITS_USER_PREFIX "%s %s",
                     user, CFCOST_KEY_F_RPM);
    if (cli_redis_check(ctx, r, "HGET") != 0) {
        return -1;
    }

    snprintf(user_rpm, sizeof(user_rpm), "%s",
             r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);

    redisAppendCommand(ctx->rc, "MULTI");
    redisAppendCommand(ctx->rc,
        "HSET %s"
        " " CFCOST_KEY_F_ID " %s"
        " " CFCOST_KEY_F_USER " %s"
        " " CFCOST_KEY_F_NAME " %s"
        " " CFCOST_KEY_F_PREFIX " %s"
        " " CFCOST_KEY_F_CREATED " %s"
        " " CFCOST_KEY_F_REVOKED " 0"
        " " CFCOST_KEY_F_USER_RPM " %s",
        record, id, user, label, prefix, created, user_rpm);
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

        if (cli_redis_check(ctx, r, what[i]) != 0) {
            rc = -1;

            if (r == NULL) {
                return -1;
            }

            continue;
        }

        if (i == 4 && cli_redis_exec_check(r) != 0) {
            cli_store_unput(ctx, record, id);
            rc = -1;
        }

        freeReplyObject(r);
    }

    return rc;
}


/*
 * Creates a key for user with label: writes the key (CFCOST_KEYS_KEY_LEN
 * + 1 bytes) and its id (CFCOST_KEYS_ID_LEN + 1).  Returns 0, or -1 after
 * reporting, with nothing stored.
 */
int
cli_store_create(cli_ctx_t *ctx, const char *user, const char *label,
    char *key, char *id)
{
    char  hash[CFCOST_KEYS_HASH_HEX + 1];

    if (cli_store_key(key) != 0) {
        return -1;
    }

    if (cfcost_keys_sha256_hex(key, CFCOST_KEYS_KEY_LEN, hash) != 0) {
        cli_out_error("SHA-256 failed");
        return -1;
    }

    if (cli_store_id(ctx, id) != 0
        || cli_store_put(ctx, key, hash, id, user, label) != 0)
    {
        return -1;
    }

    return 0;
}


/* Sort order of keys list: creation time, then id. */
static int
cli_store_cmp(const void *pa, const void *pb)
{
    const cli_key_t  *a, *b;

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
cli_store_fill(cli_key_t *k, const char *id, redisReply *r)
{
    const char  *v;

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        return -1;
    }

    k->reply = r;
    k->id = id;
    k->user = cli_redis_field(r, CFCOST_KEY_F_USER);
    k->name = cli_redis_field(r, CFCOST_KEY_F_NAME);
    k->prefix = cli_redis_field(r, CFCOST_KEY_F_PREFIX);

    v = cli_redis_field(r, CFCOST_KEY_F_CREATED);
    k->created_ms = v ? strtoll(v, NULL, 10) : 0;

    v = cli_redis_field(r, CFCOST_KEY_F_REVOKED);
    k->revoked = !cfcost_keys_active(v, v ? strlen(v) : 0);

    k->user = k->user ? k->user : "";
    k->name = k->name ? k->name : "";
    k->prefix = k->prefix ? k->prefix : "";

    return 0;
}


/*
 * Reads every key record listed in the index (pipelined HGETALLs), keeps
 * those of user (all when NULL) in keys[], sorted.  *index owns the ids.
 * Returns the count, or -1 (reported).  The caller frees with
 * cli_store_list_free().
 */
long
cli_store_list(cli_ctx_t *ctx, const char *user, redisReply **index,
    cli_key_t **keys)
{
    size_t        i, n, pairs;
    redisReply   *ix, *r;
    cli_key_t    *k;

    *keys = NULL;

    ix = redisCommand(ctx->rc, "HGETALL %s", CFCOST_KEYS_INDEX);
    if (cli_redis_check(ctx, ix, "HGETALL") != 0) {
        return -1;
    }

    *index = ix;
    pairs = (ix->type == REDIS_REPLY_ARRAY) ? ix->elements / 2 : 0;

    *keys = calloc(pairs + 1, sizeof(cli_key_t));
    if (*keys == NULL) {
        cli_out_error("out of memory");
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

        if (cli_redis_check(ctx, r, "HGETALL") != 0) {
            return -1;
        }

        k = &(*keys)[n];

        if (cli_store_fill(k, ix->element[2 * i]->str, r) != 0) {
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

    qsort(*keys, n, sizeof(cli_key_t), cli_store_cmp);
    return (long) n;
}


/* Frees what cli_store_list() returned; keys ends at a NULL reply. */
void
cli_store_list_free(redisReply *index, cli_key_t *keys)
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


/*
 * Looks up the record name of key id into record.  Returns 0, or -1 after
 * reporting (an unknown id included).
 */
static int
cli_store_record(cli_ctx_t *ctx, const char *id, char *record)
{
    redisReply  *r;

    r = redisCommand(ctx->rc, "HGET %s %s", CFCOST_KEYS_INDEX, id);
    if (cli_redis_check(ctx, r, "HGET") != 0) {
        return -1;
    }

    if (r->type != REDIS_REPLY_STRING || r->len != CFCOST_KEYS_HASH_HEX) {
        cli_out_error("no such key id: %s%s", id,
                      strncmp(id, CFCOST_APIKEY_TAG,
                              sizeof(CFCOST_APIKEY_TAG) - 1) == 0
                      ? " (that looks like a key; revoke takes its id, "
                        "see 'cfcost keys list')" : "");
        freeReplyObject(r);
        return -1;
    }

    cfcost_keys_record(record, r->str);
    freeReplyObject(r);
    return 0;
}


/*
 * Revokes key id; its record stays.  Returns 1 when revoked now, 2 when it
 * was already, or -1 after reporting.
 */
int
cli_store_revoke(cli_ctx_t *ctx, const char *id)
{
    long long    done;
    char         record[CFCOST_KEYS_RECORD_LEN + 1];
    redisReply  *r;

    if (cli_store_record(ctx, id, record) != 0) {
        return -1;
    }

    r = redisCommand(ctx->rc, "EVAL %s 1 %s", cfcost_keys_revoke_lua, record);
    if (cli_redis_check(ctx, r, "EVAL") != 0) {
        return -1;
    }

    done = (r->type == REDIS_REPLY_INTEGER) ? r->integer : 0;
    freeReplyObject(r);

    if (done == 0) {
        cli_out_error("key id %s has no record", id);
        return -1;
    }

    return (int) done;
}
