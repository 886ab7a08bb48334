/*
 * cfcost CLI: keys create | list | revoke.  Argument checks and output;
 * the store itself is store.c.
 */

#include <stdio.h>
#include <string.h>

#include "cli.h"


static int cli_keys_create(cli_ctx_t *ctx, int argc, char **argv);
static int cli_keys_list(cli_ctx_t *ctx, int argc, char **argv);
static int cli_keys_revoke(cli_ctx_t *ctx, int argc, char **argv);


static const cli_cmd_t  cli_keys_cmds[] = {
    { "create", cli_keys_create, CLI_USAGE_CREATE },
    { "list",   cli_keys_list,   CLI_USAGE_LIST },
    { "revoke", cli_keys_revoke, CLI_USAGE_REVOKE },
};


int
cli_keys(cli_ctx_t *ctx, int argc, char **argv)
{
    const cli_cmd_t  *cmd;

    if (argc < 2) {
        return cli_args_error(CLI_USAGE_KEYS,
                              "keys needs create, list or revoke");
    }

    if (cli_args_is_help(argv[1])) {
        fputs(CLI_USAGE_KEYS, stdout);
        return CLI_EXIT_OK;
    }

    cmd = cli_args_find(cli_keys_cmds,
                        sizeof(cli_keys_cmds) / sizeof(cli_cmd_t), argv[1]);
    if (cmd == NULL) {
        return cli_args_error(CLI_USAGE_KEYS, "unknown keys command \"%s\"",
                              argv[1]);
    }

    return cmd->handler(ctx, argc - 1, argv + 1);
}


/* ---- keys create ------------------------------------------------------- */


/* Parses keys create's arguments.  Returns 0, -1 for -h, or 2. */
static int
cli_keys_create_args(int argc, char **argv, const char **user,
    const char **label)
{
    int          i, m;
    const char  *why;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            return -1;
        }

        if ((m = cli_args_opt(argc, argv, &i, "--user", user)) == 0) {
            m = cli_args_opt(argc, argv, &i, "--name", label);
        }

        if (m == 0) {
            return cli_args_unexpected(CLI_USAGE_CREATE, argv[i]);
        }

        if (m < 0) {
            return cli_args_error(CLI_USAGE_CREATE, "%s needs a value",
                                  argv[i]);
        }
    }

    if (*user == NULL) {
        return cli_args_error(CLI_USAGE_CREATE, "--user is required");
    }

    if (!cfcost_keys_user_valid(*user, strlen(*user))) {
        return cli_args_error(CLI_USAGE_CREATE,
                   "bad user name \"%s\": want 1-64 of A-Z a-z 0-9 . _ @ -",
                   *user);
    }

    why = cfcost_keys_label_invalid(*label, strlen(*label));
    if (why != NULL) {
        return cli_args_error(CLI_USAGE_CREATE, "the label %s", why);
    }

    return 0;
}


static int
cli_keys_create(cli_ctx_t *ctx, int argc, char **argv)
{
    int          rc;
    char         key[CFCOST_KEYS_KEY_LEN + 1], id[CFCOST_KEYS_ID_LEN + 1];
    const char  *user, *label;

    user = NULL;
    label = "";

    rc = cli_keys_create_args(argc, argv, &user, &label);
    if (rc != 0) {
        if (rc < 0) {
            fputs(CLI_USAGE_CREATE, stdout);
            return CLI_EXIT_OK;
        }

        return rc;
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    if (cli_store_create(ctx, user, label, key, id) != 0) {
        return CLI_EXIT_FAILED;
    }

    printf("created %s for user %s%s%s%s; store it now: it is shown once\n",
           id, user, label[0] ? " (\"" : "", label, label[0] ? "\")" : "");
    printf("%s\n", key);

    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_out_error("could not print the new key: revoke %s and create "
                      "another", id);
        return CLI_EXIT_FAILED;
    }

    return CLI_EXIT_OK;
}


/* ---- keys list --------------------------------------------------------- */


/* Returns the larger of a and b. */
static size_t
cli_keys_max(size_t a, size_t b)
{
    return a > b ? a : b;
}


/* Prints the rows of keys list as an aligned table. */
static void
cli_keys_table(const cli_key_t *keys, size_t n)
{
    size_t       i, c;
    char         created[32];
    const char  *row[6];
    size_t       w[6] = { 2, 4, 4, 6, 20, 6 };   /* 2026-11-27T23:05:12Z */

    static const char  *head[6] = {
        "ID", "USER", "NAME", "PREFIX", "CREATED", "STATUS"
    };

    for (i = 0; i < n; i++) {
        w[0] = cli_keys_max(w[0], cli_out_width(keys[i].id));
        w[1] = cli_keys_max(w[1], cli_out_width(keys[i].user));
        w[2] = cli_keys_max(w[2], cli_out_width(keys[i].name));
        w[3] = cli_keys_max(w[3], cli_out_width(keys[i].prefix));
    }

    for (c = 0; c < 5; c++) {
        cli_out_cell(head[c], w[c]);
    }

    printf("%s\n", head[5]);

    for (i = 0; i < n; i++) {
        cli_out_iso8601(created, keys[i].created_ms);

        row[0] = keys[i].id;
        row[1] = keys[i].user;
        row[2] = keys[i].name[0] ? keys[i].name : "-";
        row[3] = keys[i].prefix;
        row[4] = created;

        for (c = 0; c < 5; c++) {
            cli_out_cell(row[c], w[c]);
        }

        printf("%s\n", keys[i].revoked ? "revoked" : "active");
    }
}


/* Prints one string member of a key's JSON object.  Returns 0 or -1. */
static int
cli_keys_json_member(const char *name, const char *value)
{
    printf("    \"%s\": ", name);

    if (cli_out_json_str(value) != 0) {
        return -1;
    }

    printf(",\n");
    return 0;
}


/* Prints one key as a JSON object, indented as in an array.  0 or -1. */
static int
cli_keys_json_one(const cli_key_t *k)
{
    char  created[32];

    cli_out_iso8601(created, k->created_ms);

    printf("  {\n");

    if (cli_keys_json_member("id", k->id) != 0
        || cli_keys_json_member("user", k->user) != 0
        || cli_keys_json_member("name", k->name) != 0
        || cli_keys_json_member("prefix", k->prefix) != 0)
    {
        return -1;
    }

    printf("    \"created_ms\": %lld,\n", k->created_ms);

    if (cli_keys_json_member("created", created) != 0) {
        return -1;
    }

    printf("    \"revoked\": %s,\n    \"status\": \"%s\"\n  }",
           k->revoked ? "true" : "false", k->revoked ? "revoked" : "active");

    return 0;
}


/*
 * Prints the rows of keys list as a JSON array, two spaces an indent
 * level, "key": value: the layout of earlier versions (jansson's).
 * Returns 0 or -1.
 */
static int
cli_keys_json(const cli_key_t *keys, size_t n)
{
    size_t  i;

    if (n == 0) {
        printf("[]\n");
        return 0;
    }

    printf("[\n");

    for (i = 0; i < n; i++) {
        if (cli_keys_json_one(&keys[i]) != 0) {
            cli_out_error("out of memory");
            return -1;
        }

        printf(i + 1 < n ? ",\n" : "\n");
    }

    printf("]\n");
    return 0;
}


/* Parses keys list's arguments.  Returns 0, -1 for -h, or 2. */
static int
cli_keys_list_args(int argc, char **argv, const char **user, int *json)
{
    int  i, m;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            return -1;
        }

        if (strcmp(argv[i], "--json") == 0) {
            *json = 1;
            continue;
        }

        m = cli_args_opt(argc, argv, &i, "--user", user);

        if (m == 0) {
            return cli_args_unexpected(CLI_USAGE_LIST, argv[i]);
        }

        if (m < 0) {
            return cli_args_error(CLI_USAGE_LIST, "%s needs a value",
                                  argv[i]);
        }

        if (!cfcost_keys_user_valid(*user, strlen(*user))) {
            return cli_args_error(CLI_USAGE_LIST, "bad user name \"%s\"",
                                  *user);
        }
    }

    return 0;
}


static int
cli_keys_list(cli_ctx_t *ctx, int argc, char **argv)
{
    int          rc, json;
    long         n;
    cli_key_t   *keys;
    redisReply  *index;
    const char  *user;

    user = NULL;
    json = 0;
    index = NULL;

    rc = cli_keys_list_args(argc, argv, &user, &json);
    if (rc != 0) {
        if (rc < 0) {
            fputs(CLI_USAGE_LIST, stdout);
            return CLI_EXIT_OK;
        }

        return rc;
    }

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    rc = CLI_EXIT_FAILED;

    n = cli_store_list(ctx, user, &index, &keys);
    if (n < 0) {
        goto done;
    }

    if (json) {
        if (cli_keys_json(keys, (size_t) n) != 0) {
            goto done;
        }

    } else {
        cli_keys_table(keys, (size_t) n);
    }

    rc = CLI_EXIT_OK;

done:

    cli_store_list_free(index, keys);
    return rc;
}


/* ---- keys revoke ------------------------------------------------------- */


static int
cli_keys_revoke(cli_ctx_t *ctx, int argc, char **argv)
{
    int          rc;
    const char  *id;

    if (argc == 2 && cli_args_is_help(argv[1])) {
        fputs(CLI_USAGE_REVOKE, stdout);
        return CLI_EXIT_OK;
    }

    if (argc != 2 || argv[1][0] == '-') {
        return cli_args_error(CLI_USAGE_REVOKE,
                              argc < 2 ? "KEY_ID is required"
                                       : "expected exactly one KEY_ID");
    }

    id = argv[1];

    rc = cli_redis_connect(ctx);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }

    rc = cli_store_revoke(ctx, id);
    if (rc < 0) {
        return CLI_EXIT_FAILED;
    }

    if (rc == 2) {
        fprintf(stderr, "cfcost: %s was already revoked\n", id);
    }

    printf("revoked %s\n", id);
    return CLI_EXIT_OK;
}
