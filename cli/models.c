/*
 * cfcost CLI: models, the price table.  The file is read by
 * cfcost_price_load(), as the module reads it; --json prints the body of
 * the module's GET /api/ai/models, byte for byte (cfcost_models).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_models.h"
#include "cfcost_price.h"
#include "cli.h"


/*
 * Reads the whole file at path into a malloc'ed, NUL-terminated buffer.
 * Returns it with *len set, or NULL after reporting.
 */
static char *
cli_models_read(const char *path, size_t *len)
{
    char    *buf, *p;
    size_t   n, cap;
    FILE    *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        cli_out_error("%s: %s", path, strerror(errno));
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
                cli_out_error("%s: out of memory", path);
                goto failed;
            }

            buf = p;
        }

        n += fread(buf + n, 1, cap - n, f);

    } while (!feof(f) && !ferror(f));

    if (ferror(f)) {
        cli_out_error("%s: read error", path);
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
cli_models_load(const char *path, cfcost_price_table_t *t)
{
    int      rc;
    char    *data, err[512];
    size_t   len;

    len = 0;

    data = cli_models_read(path, &len);
    if (data == NULL) {
        return -1;
    }

    rc = cfcost_price_load(data, len, t, err, sizeof(err));
    free(data);

    if (rc != 0) {
        cli_out_error("%s: %s", path, err);
        return -1;
    }

    return 0;
}


/* Returns the larger of a and b. */
static size_t
cli_models_max(size_t a, size_t b)
{
    return a > b ? a : b;
}


/* Prints the price table, one provider after another, aligned. */
static void
cli_models_table(const cfcost_price_table_t *t, const char *path)
{
    size_t                 i, wid, wname;
    char                   in[32], out[32], cached[32];
    const char            *provider;
    const cfcost_model_t  *m;

    wid = 5;
    wname = 4;

    for (i = 0; i < t->n; i++) {
        m = &t->models[i];
        wid = cli_models_max(wid, cli_out_width(m->id));
        wname = cli_models_max(wname, cli_out_width(m->name));
    }

    printf("pricing %s from %s, USD per 1M tokens, %zu models\n",
           t->version, path, t->n);

    provider = NULL;

    for (i = 0; i < t->n; i++) {
        m = &t->models[i];

        if (provider == NULL || strcmp(provider, m->provider) != 0) {
            provider = m->provider;
            printf("\n%s\n  ", provider[0] ? provider : "(no provider)");
            cli_out_cell("MODEL", wid);
            cli_out_cell("NAME", wname);
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
        cli_out_cell(m->id, wid);
        cli_out_cell(m->name, wname);
        printf("%9s  %9s  %9s  %s\n", in, out, cached, m->source);
    }
}


/* Prints GET /api/ai/models's body, "\n" included.  Returns 0 or -1. */
static int
cli_models_json(const cfcost_price_table_t *t)
{
    char    *body;
    size_t   len;

    body = cfcost_models_alloc(t, CFCOST_MODELS_CFCOST, &len);
    if (body == NULL) {
        cli_out_error("out of memory");
        return -1;
    }

    fwrite(body, 1, len, stdout);
    free(body);

    return 0;
}


int
cli_models(cli_ctx_t *ctx, int argc, char **argv)
{
    int                    i, m, json, rc;
    const char            *path;
    cfcost_price_table_t   t;

    (void) ctx;

    json = 0;
    path = getenv("CFCOST_PRICING");
    path = (path != NULL && path[0] != '\0') ? path : CLI_DEFAULT_PRICING;

    for (i = 1; i < argc; i++) {
        if (cli_args_is_help(argv[i])) {
            fputs(CLI_USAGE_MODELS, stdout);
            return CLI_EXIT_OK;
        }

        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }

        m = cli_args_opt(argc, argv, &i, "--pricing", &path);

        if (m == 0) {
            return cli_args_unexpected(CLI_USAGE_MODELS, argv[i]);
        }

        if (m < 0) {
            return cli_args_error(CLI_USAGE_MODELS, "%s needs a value",
                                  argv[i]);
        }
    }

    if (cli_models_load(path, &t) != 0) {
        return CLI_EXIT_FAILED;
    }

    rc = CLI_EXIT_OK;

    if (json) {
        rc = (cli_models_json(&t) == 0) ? CLI_EXIT_OK : CLI_EXIT_FAILED;

    } else {
        cli_models_table(&t, path);
    }

    cfcost_price_free(&t);
    return rc;
}
