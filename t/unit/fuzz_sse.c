/*
 * A fuzz target for common/cfcost_sse.c.  Each input is read as a stream:
 * once whole, then split at points taken from its first bytes (2 pieces,
 * 3 pieces, many small pieces, a fixed step) and one byte at a time.  All
 * readings must give the same events (data, start, end) and counters, the
 * events must be sane (inside the stream, in order, no CR or LF where
 * there can be none), and they must equal a plain whole-buffer reading of
 * the SSE specification written here independently.  Any difference
 * aborts.
 *
 * With libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon \
 *       t/unit/fuzz_sse.c common/cfcost_sse.c -o build/fuzz_sse
 *   build/fuzz_sse -max_total_time=180 t/unit/sse-corpus
 *
 * Without it (-DCFCOST_FUZZ_MAIN), main() runs 20000 pseudo-random streams
 * from a fixed seed through the same check and prints TAP:
 *   gcc -std=c99 -O2 -Wall -Wextra -Werror -D_DEFAULT_SOURCE \
 *       -DCFCOST_FUZZ_MAIN -Icommon t/unit/fuzz_sse.c common/cfcost_sse.c \
 *       -o build/unit/fuzz_sse.t
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_sse.h"


typedef struct {
    size_t         off;          /* the data, in the list's arena */
    size_t         len;
    uint64_t       start;
    uint64_t       end;
} fev_t;


typedef struct {
    fev_t         *v;
    size_t         n;
    size_t         max;
    char          *arena;
    size_t         used;
    size_t         arena_cap;
    uint64_t       events;
    uint64_t       skipped;
    uint64_t       offset;
    const char    *bad;          /* a broken contract, or NULL */
} flist_t;


static char  fz_why[512];


static int
fz_list_init(flist_t *l, size_t n)
{
    memset(l, 0, sizeof(flist_t));

    /* an event takes at least one byte of the stream, and its data at
     * most the bytes of its lines: n bounds both */
    l->max = n + 1;
    l->arena_cap = n + 1;
    l->v = malloc(l->max * sizeof(fev_t));
    l->arena = malloc(l->arena_cap);

    return (l->v != NULL && l->arena != NULL) ? 0 : -1;
}


static void
fz_list_free(flist_t *l)
{
    free(l->v);
    free(l->arena);
    memset(l, 0, sizeof(flist_t));
}


static void
fz_add(flist_t *l, const char *data, size_t len, uint64_t start,
    uint64_t end)
{
    if (l->n == l->max || len > l->arena_cap - l->used) {
        l->bad = "more events or data than the stream could hold";
        return;
    }

    if (len) {
        memcpy(l->arena + l->used, data, len);
    }

    l->v[l->n].off = l->used;
    l->v[l->n].len = len;
    l->v[l->n].start = start;
    l->v[l->n].end = end;
    l->used += len;
    l->n++;
}


static void
fz_feed(cfcost_sse_t *p, flist_t *l, const char *b, size_t n)
{
    int                  got;
    size_t               used;
    cfcost_sse_event_t   ev;

    if (n == 0) {
        got = -1;
        used = cfcost_sse_feed(p, b, 0, &ev, &got);
        if (used != 0 || got != 0) {
            l->bad = "an empty feed consumed something or got an event";
        }
        return;
    }

    while (n > 0 && l->bad == NULL) {
        got = -1;
        used = cfcost_sse_feed(p, b, n, &ev, &got);

        /* 0 bytes is right only for an event ended by the previous feed's
         * CR, handed back once this feed's first byte shows it is no LF */
        if ((used == 0 && got != 1) || used > n || (got != 0 && got != 1)) {
            l->bad = "feed() returned a bad count or got flag";
            return;
        }

        if (!got && used != n) {
            l->bad = "feed() stopped short without an event";
            return;
        }

        if (got) {
            fz_add(l, ev.data, ev.len, ev.start, ev.end);
        }

        b += used;
        n -= used;
    }
}


static void
fz_end(cfcost_sse_t *p, flist_t *l)
{
    cfcost_sse_event_t  ev;

    if (cfcost_sse_finish(p, &ev)) {
        fz_add(l, ev.data, ev.len, ev.start, ev.end);
    }

    l->events = p->events;
    l->skipped = p->skipped;
    l->offset = p->offset;
    cfcost_sse_free(p);
}


/* s[0..n) cut at cuts[0..ncuts), ascending */
static void
fz_run_cuts(flist_t *l, const char *s, size_t n, const size_t *cuts,
    size_t ncuts)
{
    size_t        i, from, to;
    cfcost_sse_t  p;

    cfcost_sse_init(&p);

    from = 0;
    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : n;
        fz_feed(&p, l, s + from, to - from);
        from = to;
    }

    fz_end(&p, l);
}


static void
fz_run_step(flist_t *l, const char *s, size_t n, size_t step)
{
    size_t        i, k;
    cfcost_sse_t  p;

    cfcost_sse_init(&p);

    for (i = 0; i < n; i += k) {
        k = (n - i < step) ? n - i : step;
        fz_feed(&p, l, s + i, k);
    }

    fz_end(&p, l);
}


/*
 * The reference: the SSE specification's reading of a whole buffer, with
 * the parser's offsets (an event starts at the first byte of its first
 * line and ends just past its blank line's CR, LF or CRLF; at the
 * stream's end for the one finish() returns).  No size limit:
 * only used on inputs far below CFCOST_SSE_MAX.
 */
static void
fz_reference(flist_t *l, const char *s, size_t n)
{
    int          in_event, has_data;
    char        *data;
    size_t       i, j, k, dlen, vlen;
    uint64_t     start;
    const char  *value;

    data = malloc(n + 1);
    if (data == NULL) {
        l->bad = "out of memory";
        return;
    }

    dlen = 0;
    in_event = 0;
    has_data = 0;
    start = 0;

    for (i = 0; i < n; /* void */) {

        for (j = i; j < n && s[j] != '\r' && s[j] != '\n'; j++) {
            /* void */
        }

        /* the line is s[i..j); j == n: no terminator, the stream ended */

        if (j == i && j < n) {                       /* a blank line */
            if (in_event && has_data) {
                fz_add(l, data, dlen - 1, start,
                       (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n')
                       ? j + 2 : j + 1);
                l->events++;
            }
            in_event = 0;
            has_data = 0;
            dlen = 0;

        } else if (j > i) {
            if (!in_event) {
                in_event = 1;
                start = i;
            }

            if (s[i] != ':') {
                for (k = i; k < j && s[k] != ':'; k++) {
                    /* void */
                }

                if (k - i == 4 && memcmp(s + i, "data", 4) == 0) {
                    value = (k < j) ? s + k + 1 : s + j;
                    vlen = s + j - value;
                    if (vlen && value[0] == ' ') {
                        value++;
                        vlen--;
                    }
                    memcpy(data + dlen, value, vlen);
                    dlen += vlen;
                    data[dlen++] = '\n';
                    has_data = 1;
                }
            }
        }

        if (j == n) {
            break;
        }

        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n') {
            i++;
        }
    }

    if (in_event && has_data) {                      /* what finish() does */
        fz_add(l, data, dlen - 1, start, n);
        l->events++;
    }

    l->offset = n;
    free(data);
}


/* NULL when a and b hold the same events and counters */
static const char *
fz_same(const flist_t *a, const flist_t *b, const char *what)
{
    size_t  i;

    if (b->bad) {
        snprintf(fz_why, sizeof(fz_why), "%s: %s", what, b->bad);
        return fz_why;
    }

    for (i = 0; i < a->n || i < b->n; i++) {
        if (i >= a->n || i >= b->n) {
            snprintf(fz_why, sizeof(fz_why),
                     "%s: %zu events, whole reading %zu", what, b->n, a->n);
            return fz_why;
        }

        if (a->v[i].len != b->v[i].len
            || memcmp(a->arena + a->v[i].off, b->arena + b->v[i].off,
                      a->v[i].len) != 0
            || a->v[i].start != b->v[i].start || a->v[i].end != b->v[i].end)
        {
            snprintf(fz_why, sizeof(fz_why),
                     "%s: event %zu is [%llu,%llu) len %zu '%.*s', whole "
                     "reading [%llu,%llu) len %zu '%.*s'", what, i,
                     (unsigned long long) b->v[i].start,
                     (unsigned long long) b->v[i].end, b->v[i].len,
                     (int) (b->v[i].len < 60 ? b->v[i].len : 60),
                     b->arena + b->v[i].off,
                     (unsigned long long) a->v[i].start,
                     (unsigned long long) a->v[i].end, a->v[i].len,
                     (int) (a->v[i].len < 60 ? a->v[i].len : 60),
                     a->arena + a->v[i].off);
            return fz_why;
        }
    }

    if (a->events != b->events || a->skipped != b->skipped
        || a->offset != b->offset)
    {
        snprintf(fz_why, sizeof(fz_why),
                 "%s: counters events %llu skipped %llu offset %llu, whole "
                 "reading %llu %llu %llu", what,
                 (unsigned long long) b->events,
                 (unsigned long long) b->skipped,
                 (unsigned long long) b->offset,
                 (unsigned long long) a->events,
                 (unsigned long long) a->skipped,
                 (unsigned long long) a->offset);
        return fz_why;
    }

    return NULL;
}


/* the whole reading's events are sane */
static const char *
fz_sane(const flist_t *l, const char *s, size_t n)
{
    size_t       i, k;
    uint64_t     prev;
    const fev_t  *e;

    if (l->bad) {
        snprintf(fz_why, sizeof(fz_why), "whole: %s", l->bad);
        return fz_why;
    }

    if (l->offset != n || l->events != l->n) {
        snprintf(fz_why, sizeof(fz_why), "whole: offset %llu of %zu bytes, "
                 "events counter %llu for %zu events",
                 (unsigned long long) l->offset, n,
                 (unsigned long long) l->events, l->n);
        return fz_why;
    }

    prev = 0;
    for (i = 0; i < l->n; i++) {
        e = &l->v[i];

        if (e->start < prev || e->start >= e->end || e->end > n
            || e->len > CFCOST_SSE_MAX
            || s[e->start] == '\r' || s[e->start] == '\n'
            || (e->end < n && s[e->end - 1] != '\r' && s[e->end - 1] != '\n'))
        {
            snprintf(fz_why, sizeof(fz_why), "whole: event %zu [%llu,%llu) "
                     "len %zu out of place (previous end %llu)", i,
                     (unsigned long long) e->start,
                     (unsigned long long) e->end, e->len,
                     (unsigned long long) prev);
            return fz_why;
        }

        for (k = 0; k < e->len; k++) {
            if (l->arena[e->off + k] == '\r') {
                snprintf(fz_why, sizeof(fz_why), "whole: event %zu has a CR "
                         "in its data", i);
                return fz_why;
            }
        }

        prev = e->end;
    }

    return NULL;
}


static uint64_t
fz_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;

    return *x;
}


static int
fz_cmp(const void *a, const void *b)
{
    size_t  x = *(const size_t *) a, y = *(const size_t *) b;

    return (x > y) - (x < y);
}


/*
 * Checks stream s[0..n) read whole against its readings split as the seed
 * says; NULL when all agree, else what differed (in a static buffer).
 */
static const char *
fz_check(const char *s, size_t n, uint64_t seed)
{
    size_t       i, ncuts, *cuts;
    flist_t      whole, other;
    uint64_t     x;
    const char  *why;
    char         what[64];

    if (fz_list_init(&whole, n) != 0) {
        return "out of memory";
    }

    cuts = malloc((2 * n + 8) * sizeof(size_t));
    if (cuts == NULL) {
        fz_list_free(&whole);
        return "out of memory";
    }

    fz_run_cuts(&whole, s, n, NULL, 0);

    why = fz_sane(&whole, s, n);

    x = seed | 1;

    for (i = 0; why == NULL && i < 6; i++) {
        if (fz_list_init(&other, n) != 0) {
            why = "out of memory";
            break;
        }

        switch (i) {

        case 0:                                  /* 2 pieces */
            cuts[0] = (size_t) (seed % (n + 1));
            fz_run_cuts(&other, s, n, cuts, 1);
            snprintf(what, sizeof(what), "split at %zu", cuts[0]);
            break;

        case 1:                                  /* 3 pieces */
            cuts[0] = (size_t) ((seed >> 16) % (n + 1));
            cuts[1] = (size_t) ((seed >> 32) % (n + 1));
            qsort(cuts, 2, sizeof(size_t), fz_cmp);
            fz_run_cuts(&other, s, n, cuts, 2);
            snprintf(what, sizeof(what), "split at %zu and %zu", cuts[0],
                     cuts[1]);
            break;

        case 2:                                  /* many small pieces */
            ncuts = 0;
            cuts[0] = 0;
            while (ncuts < 2 * n + 8) {
                size_t  c = (ncuts ? cuts[ncuts - 1] : 0)
                            + (size_t) (fz_next(&x) % 9);   /* 0 to 8 */
                if (c > n) {
                    break;
                }
                cuts[ncuts++] = c;
            }
            fz_run_cuts(&other, s, n, cuts, ncuts);
            snprintf(what, sizeof(what), "%zu random cuts (seed %llu)", ncuts,
                     (unsigned long long) seed);
            break;

        case 3:                                  /* a step of 1 to 16 */
            fz_run_step(&other, s, n, (size_t) ((seed >> 48) % 16) + 1);
            snprintf(what, sizeof(what), "fed %zu bytes at a time",
                     (size_t) ((seed >> 48) % 16) + 1);
            break;

        case 4:                                  /* one byte at a time */
            fz_run_step(&other, s, n, 1);
            snprintf(what, sizeof(what), "fed 1 byte at a time");
            break;

        default:                                 /* the specification */
            if (n > CFCOST_SSE_MAX / 2) {
                fz_list_free(&other);
                continue;
            }
            fz_reference(&other, s, n);
            other.skipped = 0;
            snprintf(what, sizeof(what), "reference reading");
            break;
        }

        why = fz_same(&whole, &other, what);
        fz_list_free(&other);
    }

    free(cuts);
    fz_list_free(&whole);

    return why;
}


#ifndef CFCOST_FUZZ_MAIN

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);


int
LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    size_t       i;
    uint64_t     seed;
    const char  *why;

    /* the split points come from the first bytes, which stay part of the
     * stream too */
    seed = 0x9e3779b97f4a7c15ULL;
    for (i = 0; i < n && i < 8; i++) {
        seed = (seed << 8 | seed >> 56) ^ d[i];
    }

    why = fz_check((const char *) d, n, seed);
    if (why != NULL) {
        fprintf(stderr, "fuzz_sse: %s\n", why);
        abort();
    }

    return 0;
}

#else

static void
fz_dump(const char *s, size_t n)
{
    size_t  i;

    fprintf(stderr, "#   stream (%zu bytes): \"", n);
    for (i = 0; i < n; i++) {
        if (s[i] == '\r') {
            fprintf(stderr, "\\r");
        } else if (s[i] == '\n') {
            fprintf(stderr, "\\n");
        } else if ((unsigned char) s[i] < 0x20 || s[i] == '"'
                   || s[i] == '\\')
        {
            fprintf(stderr, "\\%03o", (unsigned char) s[i]);
        } else {
            fputc(s[i], stderr);
        }
    }
    fprintf(stderr, "\"\n");
}


int
main(void)
{
    char         s[1024];
    size_t       n, k, t, ntok;
    unsigned     round;
    uint64_t     x;
    const char  *why;

    static const char  *alphabet[] = {
        "data:", "data", " ", "\r", "\n", ":", "x", "\xc3\xa9", "\r\n",
        "\n\n", "event:", "data: x\n\n",
    };

    x = 20260101;
    why = NULL;

    for (round = 0; round < 20000 && why == NULL; round++) {
        ntok = (size_t) (fz_next(&x) % 80);
        n = 0;

        for (t = 0; t < ntok; t++) {
            /* the short tokens more often than the long ones */
            k = (size_t) (fz_next(&x) % 32);
            k = (k < 24) ? k % 8 : k % (sizeof(alphabet) / sizeof(char *));
            if (n + strlen(alphabet[k]) >= sizeof(s)) {
                break;
            }
            memcpy(s + n, alphabet[k], strlen(alphabet[k]));
            n += strlen(alphabet[k]);
        }

        why = fz_check(s, n, fz_next(&x));
        if (why != NULL) {
            printf("1..1\nnot ok 1 - 20000 random streams read whole and "
                   "split give the same events\n");
            fprintf(stderr, "#   round %u: %s\n", round, why);
            fz_dump(s, n);
            return 1;
        }
    }

    printf("1..1\nok 1 - 20000 random streams read whole and split give "
           "the same events\n");

    return 0;
}

#endif
