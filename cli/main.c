/*
 * cfcost: the command-line tool.
 *
 *   cfcost [--redis ADDR] [--redis-auth FILE] keys create --user NAME [--name LABEL]
 *   cfcost [--redis ADDR] keys list [--user NAME] [--json]
 *   cfcost [--redis ADDR] keys revoke KEY_ID
 *   cfcost models [--pricing FILE] [--json]
 *
 * This file: the global options, the command table and help.  See cli.h
 * for the others.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"


static int cli_main_help(cli_ctx_t *ctx, int argc, char **argv);


static const cli_cmd_t  cli_main_cmds[] = {
    { "keys",   cli_keys,      CLI_USAGE_KEYS },
    { "limits", cli_limits,    CLI_USAGE_LIMITS },
    { "users",  cli_users,     CLI_USAGE_USERS },
    { "models", cli_models,    CLI_USAGE_MODELS },
    { "help",   cli_main_help, CLI_USAGE_HELP },
};

#define CLI_MAIN_NCMDS  (sizeof(cli_main_cmds) / sizeof(cli_cmd_t))


static int
cli_main_help(cli_ctx_t *ctx, int argc, char **argv)
{
    const cli_cmd_t  *cmd;

    (void) ctx;

    if (argc < 2) {
        fputs(CLI_USAGE, stdout);
        return CLI_EXIT_OK;
    }

    cmd = cli_args_find(cli_main_cmds, CLI_MAIN_NCMDS, argv[1]);
    if (cmd == NULL) {
        return cli_args_error(NULL, "unknown command \"%s\"", argv[1]);
    }

    fputs(cmd->usage, stdout);
    return CLI_EXIT_OK;
}


/*
 * Parses the global options before the command.  Returns the index of the
 * command in argv, 0 when help was printed, or -2 after a usage error.
 */
static int
cli_main_args(cli_ctx_t *ctx, int argc, char **argv)
{
    int  i, m;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (cli_args_is_help(argv[i])) {
            fputs(CLI_USAGE, stdout);
            return 0;
        }

        m = cli_args_opt(argc, argv, &i, "--redis", &ctx->redis);
        if (m == 0) {
            m = cli_args_opt(argc, argv, &i, "--redis-auth",
                             &ctx->redis_auth);
        }

        if (m <= 0) {
            cli_args_error(NULL, m < 0 ? "%s needs a value"
                                       : "unknown option \"%s\"", argv[i]);
            return -2;
        }
    }

    if (i == argc) {
        cli_args_error(NULL, "a command is required");
        return -2;
    }

    return i;
}


int
main(int argc, char **argv)
{
    int               i, rc;
    cli_ctx_t         ctx;
    const cli_cmd_t  *cmd;

    memset(&ctx, 0, sizeof(ctx));

    i = cli_main_args(&ctx, argc, argv);
    if (i <= 0) {
        return i == 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }

    cmd = cli_args_find(cli_main_cmds, CLI_MAIN_NCMDS, argv[i]);
    if (cmd == NULL) {
        return cli_args_error(NULL, "unknown command \"%s\"", argv[i]);
    }

    rc = cmd->handler(&ctx, argc - i, argv + i);

    if (ctx.rc != NULL) {
        redisFree(ctx.rc);
    }

    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
        cli_out_error("cannot write to stdout: %s", strerror(errno));
        rc = CLI_EXIT_FAILED;
    }

    return rc;
}
