/*
 * cfcost CLI: runtime errors on stderr, and the pieces of its output:
 * aligned columns, UTC times, JSON strings.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfcost_json.h"
#include "cli.h"


/* Prints "cfcost: <message>" on stderr. */
void
cli_out_error(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "cfcost: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}


/* Returns how many characters (not bytes) of UTF-8 s occupies. */
size_t
cli_out_width(const char *s)
{
    size_t  n;

    for (n = 0; *s != '\0'; s++) {
        n += ((*s & 0xc0) != 0x80);
    }

    return n;
}


/* Prints s left-aligned in a column of width characters, then a gap. */
void
cli_out_cell(const char *s, size_t width)
{
    size_t  w;

    fputs(s, stdout);

    for (w = cli_out_width(s); w < width + 2; w++) {
        putchar(' ');
    }
}


/* Writes ms as UTC ISO-8601 ("2026-11-27T23:05:12Z") into buf[32]. */
void
cli_out_iso8601(char *buf, long long ms)
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


/*
 * Prints s as a JSON string, quotes included, through cfcost_json_quote()
 * (invalid UTF-8 becomes U+FFFD).  Returns 0, or -1 when out of memory.
 */
int
cli_out_json_str(const char *s)
{
    char    *q, *end;
    size_t   len;

    len = strlen(s);

    q = malloc(cfcost_json_quote_len(s, len) + 1);
    if (q == NULL) {
        return -1;
    }

    end = cfcost_json_quote(q, s, len);
    *end = '\0';

    printf("\"%s\"", q);
    free(q);

    return 0;
}
