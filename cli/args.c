/*
 * cfcost CLI: command-line parsing and usage errors (exit status 2).
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"


/*
 * Matches argv[*i] against option name, as "--name VALUE" or
 * "--name=VALUE".  Returns 1 and sets *value (advancing *i past a separate
 * value), 0 when argv[*i] is another argument, -1 when the value is
 * missing.
 */
int
cli_args_opt(int argc, char **argv, int *i, const char *name,
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


/* Returns 1 when arg is -h or --help. */
int
cli_args_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}


/* Finds a command by name in a table of n; NULL when there is none. */
const cli_cmd_t *
cli_args_find(const cli_cmd_t *cmds, size_t n, const char *name)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (strcmp(cmds[i].name, name) == 0) {
            return &cmds[i];
        }
    }

    return NULL;
}


/*
 * Prints "cfcost: <message>" and the command's usage (or, when usage is
 * NULL, a pointer to --help) on stderr; returns 2.
 */
int
cli_args_error(const char *usage, const char *fmt, ...)
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

    return CLI_EXIT_USAGE;
}


/* Reports an argument a command does not take; returns 2. */
int
cli_args_unexpected(const char *usage, const char *arg)
{
    return cli_args_error(usage, "unexpected argument \"%s\"%s", arg,
                          strncmp(arg, "--redis", 7) == 0
                          ? " (global options go before the command)"
                          : "");
}
