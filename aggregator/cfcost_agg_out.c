/*
 * Output buffer and JSON / CSV / Prometheus writers.  See cfcost_agg_out.h.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_json.h"
#include "cfcost_agg_out.h"


static int
cfcost_buf_grow(cfcost_buf_t *b, size_t n)
{
    size_t   cap;
    char    *p;

    if (b->oom) {
        return -1;
    }

    if (b->cap - b->len >= n) {
        return 0;
    }

    cap = b->cap ? b->cap : 256;

    while (cap - b->len < n) {
        if (cap > ((size_t) -1) / 2) {
            goto failed;
        }
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        goto failed;
    }

    b->data = p;
    b->cap = cap;

    return 0;

failed:

    b->oom = 1;
    return -1;
}


int
cfcost_buf_add(cfcost_buf_t *b, const void *p, size_t n)
{
    if (n == 0) {
        return b->oom ? -1 : 0;
    }

    if (cfcost_buf_grow(b, n) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;

    return 0;
}


int
cfcost_buf_str(cfcost_buf_t *b, const char *s)
{
    return cfcost_buf_add(b, s, strlen(s));
}


int
cfcost_buf_u64(cfcost_buf_t *b, uint64_t v)
{
    char  tmp[24];
    int   n;

    n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long) v);

    return cfcost_buf_add(b, tmp, (size_t) n);
}


int
cfcost_buf_printf(cfcost_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);

    if (n < 0 || cfcost_buf_grow(b, (size_t) n + 1) != 0) {
        b->oom = 1;
        return -1;
    }

    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);

    b->len += (size_t) n;

    return 0;
}


void
cfcost_buf_reset(cfcost_buf_t *b)
{
    b->len = 0;
}


void
cfcost_buf_free(cfcost_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->oom = 0;
}


/*
 * Returns the length of the valid UTF-8 sequence at p[0..n), or 0 when
 * none starts there (overlong forms and surrogates are invalid).
 */
static size_t
cfcost_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char  c, lo, hi;
    size_t         len, i;

    c = p[0];
    lo = 0x80;
    hi = 0xbf;

    if (c < 0x80) {
        return 1;

    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = (c == 0xe0) ? 0xa0 : 0x80;
        hi = (c == 0xed) ? 0x9f : 0xbf;

    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = (c == 0xf0) ? 0x90 : 0x80;
        hi = (c == 0xf4) ? 0x8f : 0xbf;

    } else {
        return 0;
    }

    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return len;
}


int
cfcost_json_str(cfcost_buf_t *b, const char *p, size_t n)
{
    size_t  len;

    /* the one JSON string writer of every part: common/cfcost_json.h */
    len = cfcost_json_quote_len(p, n);

    if (cfcost_buf_grow(b, len + 2) != 0) {
        return -1;
    }

    b->data[b->len++] = '"';
    b->len = cfcost_json_quote(b->data + b->len, p, n) - b->data;
    b->data[b->len++] = '"';

    return 0;
}


int
cfcost_json_strz(cfcost_buf_t *b, const char *s)
{
    if (s == NULL) {
        return cfcost_buf_add(b, "null", 4);
    }

    return cfcost_json_str(b, s, strlen(s));
}


int
cfcost_json_usd(cfcost_buf_t *b, uint64_t pusd)
{
    char    tmp[32];
    size_t  n;

    n = cfcost_usd6(tmp, pusd);

    return cfcost_buf_add(b, tmp, n);
}


size_t
cfcost_money_usd6(char *buf, uint64_t usd, uint64_t pusd)
{
    uint64_t  micro;

    usd += pusd / CFCOST_PUSD_PER_USD;      /* < 2^64 for any real money */
    pusd %= CFCOST_PUSD_PER_USD;

    if (usd < UINT64_MAX / CFCOST_PUSD_PER_USD) {
        return cfcost_usd6(buf, usd * CFCOST_PUSD_PER_USD + pusd);
    }

    /* beyond 2^64 picodollars: the same rounding, by hand */
    micro = (pusd + 500000) / 1000000;
    if (micro == 1000000) {
        usd++;
        micro = 0;
    }

    return (size_t) snprintf(buf, 32, "%llu.%06llu", (unsigned long long) usd,
                             (unsigned long long) micro);
}


int
cfcost_json_money(cfcost_buf_t *b, uint64_t usd, uint64_t pusd)
{
    char    tmp[32];
    size_t  n;

    n = cfcost_money_usd6(tmp, usd, pusd);

    return cfcost_buf_add(b, tmp, n);
}


int
cfcost_csv_field(cfcost_buf_t *b, const char *p, size_t n)
{
    int     formula;
    size_t  i, start;

    /* a spreadsheet would run it (OWASP, CSV injection): kept as text */
    formula = (n > 0 && strchr("=+-@\t\r", p[0]) != NULL);

    if (n == 0
        || (!formula
            && memchr(p, ',', n) == NULL && memchr(p, '"', n) == NULL
            && memchr(p, '\n', n) == NULL && memchr(p, '\r', n) == NULL
            && p[0] != ' ' && p[n - 1] != ' '))
    {
        return cfcost_buf_add(b, p, n);
    }

    cfcost_buf_add(b, formula ? "\"'" : "\"", formula ? 2 : 1);

    start = 0;
    for (i = 0; i < n; i++) {
        if (p[i] == '"') {
            cfcost_buf_add(b, p + start, i + 1 - start);
            cfcost_buf_add(b, "\"", 1);
            start = i + 1;
        }
    }

    cfcost_buf_add(b, p + start, n - start);

    return cfcost_buf_add(b, "\"", 1);
}


int
cfcost_prom_label(cfcost_buf_t *b, const char *p, size_t n)
{
    size_t                i, run, k;
    const unsigned char  *s;

    s = (const unsigned char *) p;

    cfcost_buf_add(b, "\"", 1);

    i = 0;
    while (i < n) {
        run = i;
        while (run < n && s[run] < 0x80 && s[run] != '\\' && s[run] != '"'
               && s[run] != '\n')
        {
            run++;
        }

        cfcost_buf_add(b, s + i, run - i);
        i = run;

        if (i == n) {
            break;
        }

        if (s[i] >= 0x80) {
            /* the text format is UTF-8: replace what is not */
            k = cfcost_utf8_len(s + i, n - i);
            if (k == 0) {
                cfcost_buf_add(b, "\xef\xbf\xbd", 3);
                k = 1;
            } else {
                cfcost_buf_add(b, s + i, k);
            }
            i += k;
            continue;
        }

        cfcost_buf_add(b, s[i] == '\n' ? "\\n"
                          : (s[i] == '"' ? "\\\"" : "\\\\"), 2);
        i++;
    }

    return cfcost_buf_add(b, "\"", 1);
}
