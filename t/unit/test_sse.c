/*
 * Unit tests for common/cfcost_sse.c, the resumable Server-Sent Events
 * parser.  Every stream of a small corpus of real Workers AI shapes is
 * read whole and checked against a hand-written list of events (data,
 * start, end); then it is read again split at every point (2 pieces), at
 * every pair of points (3 pieces, for the short streams) and one byte at a
 * time, and must give the very same list each time.  Then the events
 * larger than CFCOST_SSE_MAX (as sent, comments and fields included), and
 * cfcost_sse_trim().
 *
 * Offsets follow the parser's convention: an event starts at the first
 * byte of its first line (a comment or an "event:" line included) and ends
 * just past the terminator of its blank line; when that terminator is a
 * CRLF, "just past" means past the CR (the LF cannot be waited for without
 * holding the event back), so the LF belongs to no event.  An event that
 * finish() returns ends at the stream's length.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_sse.h"
#include "tap.h"


/* ---- running a stream through the parser ---------------------------- */

typedef struct {
    char          *data;
    size_t         len;
    uint64_t       start;
    uint64_t       end;
} rec_t;


typedef struct {
    rec_t         *v;
    size_t         n;
    size_t         cap;
    uint64_t       events;        /* the parser's counters at the end */
    uint64_t       skipped;
    uint64_t       offset;
    int            misuse;        /* feed() broke its contract */
} run_t;


static void
run_free(run_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        free(r->v[i].data);
    }

    free(r->v);
    memset(r, 0, sizeof(run_t));
}


static void
run_add(run_t *r, const cfcost_sse_event_t *ev)
{
    rec_t  *nv;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        nv = realloc(r->v, r->cap * sizeof(rec_t));
        if (nv == NULL) {
            diag("out of memory");
            exit(2);
        }
        r->v = nv;
    }

    r->v[r->n].data = malloc(ev->len + 1);
    if (r->v[r->n].data == NULL) {
        diag("out of memory");
        exit(2);
    }

    memcpy(r->v[r->n].data, ev->data, ev->len);   /* valid until next feed */
    r->v[r->n].data[ev->len] = '\0';
    r->v[r->n].len = ev->len;
    r->v[r->n].start = ev->start;
    r->v[r->n].end = ev->end;
    r->n++;
}


/* when not 0: cfcost_sse_trim(p, trim_keep) after every feed */
static size_t  trim_keep;


/* feeds one piece until it is all consumed, collecting the events */
static void
feed_piece(cfcost_sse_t *p, run_t *r, const char *b, size_t n)
{
    int                  got;
    size_t               used;
    cfcost_sse_event_t   ev;

    if (n == 0) {                        /* an empty read changes nothing */
        got = -1;
        used = cfcost_sse_feed(p, b, 0, &ev, &got);
        if (used != 0 || got != 0) {
            r->misuse = 1;
        }
        return;
    }

    while (n > 0) {
        got = -1;
        used = cfcost_sse_feed(p, b, n, &ev, &got);

        if ((used == 0 && got != 1) || used > n || (got != 0 && got != 1)
            || (!got && used != n))
        {
            r->misuse = 1;
            return;
        }

        if (got) {
            run_add(r, &ev);
        }

        if (trim_keep) {
            cfcost_sse_trim(p, trim_keep);
        }

        b += used;
        n -= used;
    }
}


static void
run_end(cfcost_sse_t *p, run_t *r)
{
    cfcost_sse_event_t  ev;

    if (cfcost_sse_finish(p, &ev)) {
        run_add(r, &ev);
    }

    r->events = p->events;
    r->skipped = p->skipped;
    r->offset = p->offset;
    cfcost_sse_free(p);
}


/* s[0..len) in pieces cut at cuts[0..ncuts), ascending; equal cuts make
 * empty pieces, which are fed too */
static void
run_cuts(run_t *r, const char *s, size_t len, const size_t *cuts,
    size_t ncuts)
{
    size_t        i, from, to;
    cfcost_sse_t  p;

    memset(r, 0, sizeof(run_t));
    cfcost_sse_init(&p);

    from = 0;
    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;
        feed_piece(&p, r, s + from, to - from);
        from = to;
    }

    run_end(&p, r);
}


/* s[0..len) in pieces of step bytes */
static void
run_step(run_t *r, const char *s, size_t len, size_t step)
{
    size_t        i, n;
    cfcost_sse_t  p;

    memset(r, 0, sizeof(run_t));
    memset(&p, 0, sizeof(cfcost_sse_t));      /* all zero is valid too */

    for (i = 0; i < len; i += n) {
        n = (len - i < step) ? len - i : step;
        feed_piece(&p, r, s + i, n);
    }

    run_end(&p, r);
}


static void
show(const char *what, const rec_t *e)
{
    if (e == NULL) {
        diag("  %s: (none)", what);
        return;
    }

    diag("  %s: start %llu end %llu len %zu data '%.60s'", what,
         (unsigned long long) e->start, (unsigned long long) e->end, e->len,
         e->data);
}


/* 1 when both runs saw the same events and counters; else says how */
static int
run_same(const run_t *a, const run_t *b, int verbose)
{
    size_t  i;

    if (a->misuse || b->misuse) {
        if (verbose) {
            diag("  feed() returned a bad count or got flag");
        }
        return 0;
    }

    for (i = 0; i < a->n || i < b->n; i++) {
        if (i >= a->n || i >= b->n
            || a->v[i].len != b->v[i].len
            || memcmp(a->v[i].data, b->v[i].data, a->v[i].len) != 0
            || a->v[i].start != b->v[i].start
            || a->v[i].end != b->v[i].end)
        {
            if (verbose) {
                diag("  event %zu differs", i);
                show("whole", i < a->n ? &a->v[i] : NULL);
                show("split", i < b->n ? &b->v[i] : NULL);
            }
            return 0;
        }
    }

    if (a->events != b->events || a->skipped != b->skipped
        || a->offset != b->offset)
    {
        if (verbose) {
            diag("  counters differ: events %llu/%llu skipped %llu/%llu "
                 "offset %llu/%llu",
                 (unsigned long long) a->events,
                 (unsigned long long) b->events,
                 (unsigned long long) a->skipped,
                 (unsigned long long) b->skipped,
                 (unsigned long long) a->offset,
                 (unsigned long long) b->offset);
        }
        return 0;
    }

    return 1;
}


/* ---- the corpus ------------------------------------------------------ */

typedef struct {
    const char    *data;
    uint64_t       start;
    uint64_t       end;
} want_t;


typedef struct {
    const char    *name;
    const char    *s;
    size_t         len;
    const want_t  *want;
    size_t         nwant;
} stream_t;


#define N1    "{\"response\":\"Hello\",\"p\":\"abcdefghijklmnopqrstuvw\"}"
#define N2    "{\"response\":\" How\",\"p\":\"abcdefgh\"}"
#define N3    "{\"response\":\"\"}"
#define N4    "{\"response\":\"\",\"usage\":{\"prompt_tokens\":755,"           \
              "\"completion_tokens\":10,\"total_tokens\":765}}"
#define DONE  "[DONE]"


/* native Workers AI, with the padding field "p" */
static const char native_lf[] =
    "data: " N1 "\n"
    "\n"
    "data: " N2 "\n"
    "\n"
    "data: " N3 "\n"
    "\n"
    "data: " N4 "\n"
    "\n"
    "data: " DONE "\n"
    "\n";

static const want_t native_lf_want[] = {
    { N1, 0, 58 }, { N2, 58, 100 }, { N3, 100, 123 }, { N4, 123, 218 },
    { DONE, 218, 232 },
};


static const char native_crlf[] =
    "data: " N1 "\r\n"
    "\r\n"
    "data: " N2 "\r\n"
    "\r\n"
    "data: " N3 "\r\n"
    "\r\n"
    "data: " N4 "\r\n"
    "\r\n"
    "data: " DONE "\r\n"
    "\r\n";

static const want_t native_crlf_want[] = {
    { N1, 0, 60 }, { N2, 60, 104 }, { N3, 104, 129 }, { N4, 129, 226 },
    { DONE, 226, 242 },
};


static const char native_cr[] =
    "data: " N1 "\r"
    "\r"
    "data: " N2 "\r"
    "\r"
    "data: " N3 "\r"
    "\r"
    "data: " N4 "\r"
    "\r"
    "data: " DONE "\r"
    "\r";

static const want_t native_cr_want[] = {
    { N1, 0, 58 }, { N2, 58, 100 }, { N3, 100, 123 }, { N4, 123, 218 },
    { DONE, 218, 232 },
};


/* chat.completion.chunk with incremental usage, then the cumulative
 * native usage event */
#define C1  "{\"id\":\"chatcmpl-7f3a\",\"object\":\"chat.completion.chunk\","  \
            "\"created\":1791402397,\"model\":"                              \
            "\"@cf/google/gemma-4-26b-a4b-it\",\"choices\":[{\"index\":0,"   \
            "\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},"         \
            "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":147,"     \
            "\"completion_tokens\":1,\"total_tokens\":148},\"p\":\"qwe\"}"
#define C2  "{\"id\":\"chatcmpl-7f3a\",\"object\":\"chat.completion.chunk\","  \
            "\"created\":1791402397,\"model\":"                              \
            "\"@cf/google/gemma-4-26b-a4b-it\",\"choices\":[{\"index\":0,"   \
            "\"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}]," \
            "\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":1,"        \
            "\"total_tokens\":1},\"p\":\"rtyuiop\"}"
#define C3  "{\"response\":\"\",\"usage\":{\"prompt_tokens\":147,"            \
            "\"completion_tokens\":2,\"total_tokens\":149,"                  \
            "\"prompt_tokens_details\":{\"cached_tokens\":0},"               \
            "\"neurons\":1.7727272510528564}}"

static const char chunk[] =
    "data: " C1 "\n"
    "\n"
    "data: " C2 "\n"
    "\n"
    "data: " C3 "\n"
    "\n"
    "data: " DONE "\n"
    "\n";

static const want_t chunk_want[] = {
    { C1, 0, 294 }, { C2, 294, 575 }, { C3, 575, 742 }, { DONE, 742, 756 },
};


/* OpenAI-compatible, stream_options.include_usage: a choices-less chunk */
#define O1  "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","     \
            "\"created\":1,\"model\":\"@cf/meta/llama-3.1-8b-instruct\","    \
            "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","   \
            "\"content\":\"café\"},\"finish_reason\":null}]}"
#define O2  "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","     \
            "\"created\":1,\"model\":\"@cf/meta/llama-3.1-8b-instruct\","    \
            "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \\u2713\"}," \
            "\"finish_reason\":\"stop\"}]}"
#define O3  "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","     \
            "\"created\":1,\"model\":\"@cf/meta/llama-3.1-8b-instruct\","    \
            "\"choices\":[],\"usage\":{\"prompt_tokens\":12,"                \
            "\"completion_tokens\":2,\"total_tokens\":14}}"

static const char openai[] =
    "data: " O1 "\n"
    "\n"
    "data: " O2 "\n"
    "\n"
    "data: " O3 "\n"
    "\n"
    "data: " DONE "\n"
    "\n";

static const want_t openai_want[] = {
    { O1, 0, 205 }, { O2, 205, 395 }, { O3, 395, 590 }, { DONE, 590, 604 },
};


/* several "data" lines make one event, joined with "\n" */
static const char multiline[] =
    "data: first\n"
    "data: second\n"
    "data:\n"
    "data: third\n"
    "\n"
    "data: {\"a\":1,\r\n"
    "data:  \"b\":2}\r\n"
    "\r\n"
    "data\n"
    "\n";

static const want_t multiline_want[] = {
    { "first\nsecond\n\nthird", 0, 44 },
    { "{\"a\":1,\n \"b\":2}", 44, 76 },
    { "", 76, 82 },
};


/* comments and the fields that are not "data" */
static const char fields[] =
    ": keep-alive\n"
    "\n"
    "event: message\n"
    "id: 42\n"
    "retry: 3000\n"
    "data: {\"response\":\"x\"}\n"
    "\n"
    ":\n"
    ": keep-alive\n"
    "\n"
    "event: ping\n"
    "\n"
    "id: 7\n"
    "retry: 10\n"
    "data: {\"response\":\"y\"}\n"
    ": note inside an event\n"
    "event: done\n"
    "\n"
    ": keep-alive\r\n"
    "\r\n";

static const want_t fields_want[] = {
    { "{\"response\":\"x\"}", 14, 72 },
    { "{\"response\":\"y\"}", 101, 176 },
};


/* "data" without colon, "data:" without space, and near-misses.  The
 * first event's data is empty, before any data buffer exists: built with
 * -fsanitize=undefined this catches memcpy(NULL + 0, .., 0) */
static const char forms[] =
    "data\n"
    "\n"
    "data:x\n"
    "\n"
    "data:  two\n"
    "\n"
    "DATA: upper\n"
    "Data: mixed\n"
    "data : spaced\n"
    "dat: short\n"
    "datax: long\n"
    "foo: bar\n"
    "data: kept\n"
    "\n"
    "data:x:y: z\n"
    "\n"
    "data: \n"
    "\n";

static const want_t forms_want[] = {
    { "", 0, 6 }, { "x", 6, 14 }, { " two", 14, 26 }, { "kept", 26, 108 },
    { "x:y: z", 108, 121 }, { "", 121, 129 },
};


/* UTF-8 text, so that some splits fall inside a character */
#define U1  "{\"response\":\"café ✓ 日本\",\"p\":\"é✓\"}"
#define U2  "{\"response\":\"\",\"usage\":{\"prompt_tokens\":5,"              \
            "\"completion_tokens\":4,\"total_tokens\":9}}"

static const char utf8[] =
    "data: " U1 "\n"
    "\n"
    "data: " U2 "\n"
    "\n"
    "data: " DONE "\n"
    "\n";

static const want_t utf8_want[] = {
    { U1, 0, 51 }, { U2, 51, 141 }, { DONE, 141, 155 },
};


/* the stream ends before the last event's blank line: finish() has it */
#define T1  "{\"response\":\"a\"}"
#define T2  "{\"response\":\"\",\"usage\":{\"prompt_tokens\":1,"              \
            "\"completion_tokens\":1,\"total_tokens\":2}}"

static const char unterminated[] =
    "data: " T1 "\n"
    "\n"
    "data: " T2;

static const want_t unterminated_want[] = {
    { T1, 0, 24 }, { T2, 24, 112 },
};


static const char unterminated_lf[] =
    "data: " T1 "\n"
    "\n"
    "data: one\n"
    "data: two\n";

static const want_t unterminated_lf_want[] = {
    { T1, 0, 24 }, { "one\ntwo", 24, 44 },
};


static const char unterminated_cr[] =
    "data: " T1 "\r"
    "\r"
    "data: " DONE "\r";

static const want_t unterminated_cr_want[] = {
    { T1, 0, 24 }, { DONE, 24, 37 },
};


/* every line ending mixed; "\n\r" is two line ends, "\r\n" one */
static const char mixed[] =
    "\r\n"
    "\n"
    "\r"
    "data: a\r\n"
    "data: b\n"
    "data: c\r"
    "\r"
    "data: d\n"
    "\r"
    "data: e\r\n"
    "\n"
    ": c\r"
    "data: f\r\n"
    "\r\n"
    "\n"
    "\n"
    "\n";

static const want_t mixed_want[] = {
    { "a\nb\nc", 4, 30 }, { "d", 30, 39 }, { "e", 39, 49 }, { "f", 49, 64 },
};


static const char empty[] = "";

static const char comments[] =
    ": keep-alive\n"
    "\n"
    ": keep-alive\r\n"
    "\r\n"
    ":\r"
    "\r";


#define STREAM(s, w)                                                         \
    { #s, s, sizeof(s) - 1, w, sizeof(w) / sizeof(w[0]) }
#define STREAM_NONE(s)                                                       \
    { #s, s, sizeof(s) - 1, NULL, 0 }

static const stream_t  corpus[] = {
    STREAM(native_lf, native_lf_want),
    STREAM(native_crlf, native_crlf_want),
    STREAM(native_cr, native_cr_want),
    STREAM(chunk, chunk_want),
    STREAM(openai, openai_want),
    STREAM(multiline, multiline_want),
    STREAM(fields, fields_want),
    STREAM(forms, forms_want),
    STREAM(utf8, utf8_want),
    STREAM(unterminated, unterminated_want),
    STREAM(unterminated_lf, unterminated_lf_want),
    STREAM(unterminated_cr, unterminated_cr_want),
    STREAM(mixed, mixed_want),
    STREAM_NONE(empty),
    STREAM_NONE(comments),
};


/* the first bytes of s for a test's name, "\n" and "\r" escaped */
static const char *
printable(const char *s)
{
    size_t       i;
    static char  out[48];

    /* 34 bytes, and the rest of a UTF-8 character begun there */
    for (i = 0; *s && (i < 34 || (*s & 0xc0) == 0x80); s++) {
        if (*s == '\n' || *s == '\r') {
            out[i++] = '\\';
            out[i++] = (*s == '\n') ? 'n' : 'r';

        } else {
            out[i++] = *s;
        }
    }

    strcpy(out + i, *s ? "..." : "");

    return out;
}


/* the whole-stream reading against the hand-written list */
static void
check_want(const stream_t *st, const run_t *r)
{
    size_t         i;
    const want_t  *w;

    ok(!r->misuse, "%s: feed() keeps its contract", st->name);
    is_u64(r->n, st->nwant, "%s: %zu events", st->name, st->nwant);

    for (i = 0; i < st->nwant && i < r->n; i++) {
        w = &st->want[i];

        if (!ok(r->v[i].len == strlen(w->data)
                && memcmp(r->v[i].data, w->data, r->v[i].len) == 0
                && r->v[i].start == w->start && r->v[i].end == w->end,
                "%s: event %zu is '%s' [%llu, %llu)", st->name, i,
                printable(w->data),
                (unsigned long long) w->start, (unsigned long long) w->end))
        {
            show("got", &r->v[i]);
            diag("  want: start %llu end %llu data '%s'",
                 (unsigned long long) w->start, (unsigned long long) w->end,
                 w->data);
        }
    }

    is_u64(r->events, st->nwant, "%s: events counter", st->name);
    is_u64(r->skipped, 0, "%s: nothing skipped", st->name);
    is_u64(r->offset, st->len, "%s: offset is the stream's length",
           st->name);
}


static void
test_corpus_stream(const stream_t *st)
{
    int     good;
    size_t  i, j, cuts[2], tries;
    run_t   whole, r;

    run_cuts(&whole, st->s, st->len, NULL, 0);
    check_want(st, &whole);

    /* 2 pieces: every split point, the empty ends included */
    good = 1;
    for (i = 0; i <= st->len && good; i++) {
        cuts[0] = i;
        run_cuts(&r, st->s, st->len, cuts, 1);
        if (!run_same(&whole, &r, 1)) {
            diag("  split at %zu", i);
            good = 0;
        }
        run_free(&r);
    }
    ok(good, "%s: same events split at each of %zu points", st->name,
       st->len + 1);

    /* 3 pieces: every pair of split points, for the short streams */
    if (st->len < 300) {
        good = 1;
        tries = 0;
        for (i = 0; i <= st->len && good; i++) {
            for (j = i; j <= st->len && good; j++) {
                cuts[0] = i;
                cuts[1] = j;
                run_cuts(&r, st->s, st->len, cuts, 2);
                tries++;
                if (!run_same(&whole, &r, 1)) {
                    diag("  split at %zu and %zu", i, j);
                    good = 0;
                }
                run_free(&r);
            }
        }
        ok(good, "%s: same events split at each of %zu pairs of points",
           st->name, tries);
    }

    /* one byte at a time, and a few other regular steps */
    for (i = 1; i <= 7; i += (i < 3) ? 1 : 4) {
        run_step(&r, st->s, st->len, i);
        good = run_same(&whole, &r, 1);
        ok(good, "%s: same events fed %zu byte%s at a time", st->name, i,
           i == 1 ? "" : "s");
        run_free(&r);
    }

    run_free(&whole);
}


/* where the parser stands, as a holder of unfinished events reads it */
static void
test_position(void)
{
    int                 got;
    size_t              used;
    cfcost_sse_t        p;
    cfcost_sse_pos_t    pos;
    cfcost_sse_event_t  ev;

    static const char  s[] = "data: a\n\ndata: b";

    cfcost_sse_init(&p);
    cfcost_sse_position(&p, &pos);
    ok(pos.offset == 0 && !pos.unfinished && !pos.open,
       "position: a new parser stands nowhere");

    used = cfcost_sse_feed(&p, s, sizeof(s) - 1, &ev, &got);
    ok(got && used == 9, "position: the first event, 9 bytes");
    cfcost_sse_position(&p, &pos);
    ok(pos.offset == 9 && !pos.unfinished && !pos.open,
       "position: after an event, nothing open");

    (void) cfcost_sse_feed(&p, s + used, sizeof(s) - 1 - used, &ev, &got);
    cfcost_sse_position(&p, &pos);
    ok(!got && pos.offset == 16 && pos.unfinished && pos.event_start == 9
       && pos.open, "position: the second event unfinished, from byte 9");

    (void) cfcost_sse_feed(&p, "\r", 1, &ev, &got);
    cfcost_sse_position(&p, &pos);
    ok(pos.unfinished && pos.open,
       "position: a line ended, the event still open");

    (void) cfcost_sse_feed(&p, "\r", 1, &ev, &got);
    cfcost_sse_position(&p, &pos);
    ok(!pos.open && pos.eol == CFCOST_SSE_CR, "position: CR CR ends it, "
       "nothing open (it waits to be handed back); line endings CR");
    ok(cfcost_sse_finish(&p, &ev) && ev.start == 9 && ev.end == 18,
       "position: finish() hands it back, bytes 9 to 18");

    cfcost_sse_free(&p);
}


/* a freed parser can be used again */
static void
test_reuse(void)
{
    size_t              i, n, used;
    int                 got;
    cfcost_sse_t        p;
    cfcost_sse_event_t  ev;

    cfcost_sse_init(&p);

    n = 0;
    for (i = 0; i < sizeof(native_lf) - 1; i += used) {
        used = cfcost_sse_feed(&p, native_lf + i, sizeof(native_lf) - 1 - i,
                               &ev, &got);
        n += got;
        if (got && n == 2) {
            ok(ev.len == sizeof(N2) - 1 && memcmp(ev.data, N2, ev.len) == 0,
               "reuse: the second event's data");
        }
    }
    ok(!cfcost_sse_finish(&p, &ev), "reuse: nothing left for finish()");
    is_u64(n, 5, "reuse: 5 events the first time");

    /* freed in the middle of an event, then used again */
    cfcost_sse_free(&p);
    (void) cfcost_sse_feed(&p, "data: half", 10, &ev, &got);
    cfcost_sse_free(&p);

    n = 0;
    for (i = 0; i < sizeof(native_lf) - 1; i += used) {
        used = cfcost_sse_feed(&p, native_lf + i, sizeof(native_lf) - 1 - i,
                               &ev, &got);
        if (got && n == 0) {
            is_u64(ev.start, 0, "reuse: offsets start again at 0");
        }
        n += got;
    }
    is_u64(n, 5, "reuse: 5 events after free()");
    cfcost_sse_free(&p);
}


/* ---- events larger than CFCOST_SSE_MAX -------------------------------- */

typedef struct {
    char     *s;
    size_t    len;
    size_t    cap;
} buf_t;


static void
put(buf_t *b, const char *s, size_t n)
{
    char  *nb;

    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        nb = realloc(b->s, b->cap);
        if (nb == NULL) {
            diag("out of memory");
            exit(2);
        }
        b->s = nb;
    }

    memcpy(b->s + b->len, s, n);
    b->len += n;
}


static void
puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}


static void
put_fill(buf_t *b, int c, size_t n)
{
    size_t  i;
    char    chunk_[4096];

    memset(chunk_, c, sizeof(chunk_));
    for (i = 0; i < n; i += sizeof(chunk_)) {
        put(b, chunk_, (n - i < sizeof(chunk_)) ? n - i : sizeof(chunk_));
    }
}


/*
 * Reads b whole, then split at each of cuts (one at a time, 2 pieces),
 * then in steps of 1, 4096 and 65543 bytes: each must equal the whole
 * reading.  Returns the whole reading for the caller's own checks.
 */
static void
check_splits(const char *name, const buf_t *b, const size_t *cuts,
    size_t ncuts, run_t *whole)
{
    int     good;
    size_t  i;
    run_t   r;

    static const size_t  steps[] = { 1, 4096, 65543 };

    run_cuts(whole, b->s, b->len, NULL, 0);

    good = 1;
    for (i = 0; i < ncuts && good; i++) {
        run_cuts(&r, b->s, b->len, &cuts[i], 1);
        if (!run_same(whole, &r, 1)) {
            diag("  split at %zu", cuts[i]);
            good = 0;
        }
        run_free(&r);
    }
    ok(good, "%s: same events split at each of %zu chosen points", name,
       ncuts);

    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        run_step(&r, b->s, b->len, steps[i]);
        ok(run_same(whole, &r, 1), "%s: same events fed %zu byte%s at a time",
           name, steps[i], steps[i] == 1 ? "" : "s");
        run_free(&r);
    }
}


static int
rec_is(const run_t *r, size_t i, const char *data, uint64_t start,
    uint64_t end)
{
    return i < r->n && r->v[i].len == strlen(data)
           && memcmp(r->v[i].data, data, r->v[i].len) == 0
           && r->v[i].start == start && r->v[i].end == end;
}


/* one line of MAX + 10 bytes of data, with lines after it */
static void
test_huge_line(const char *eol)
{
    char      name[64];
    size_t    e, h, nl, cuts[16], n;
    run_t     whole;
    buf_t     b = { NULL, 0, 0 };

    e = strlen(eol);
    snprintf(name, sizeof(name), "huge line (%s)",
             e == 2 ? "CRLF" : (eol[0] == '\r' ? "CR" : "LF"));

    puts_(&b, "data: a"); puts_(&b, eol); puts_(&b, eol);
    h = b.len;
    puts_(&b, "data: ");
    put_fill(&b, 'x', CFCOST_SSE_MAX + 10);
    nl = b.len;                                  /* its line end */
    puts_(&b, eol);
    puts_(&b, "data: tail"); puts_(&b, eol);
    puts_(&b, ": after"); puts_(&b, eol);
    puts_(&b, eol);
    n = b.len;
    puts_(&b, "data: b"); puts_(&b, eol); puts_(&b, eol);

    cuts[0] = nl;                  /* the line end starts a new buffer */
    cuts[1] = nl + 1;              /* (between CR and LF for CRLF) */
    cuts[2] = nl - 1;
    cuts[3] = nl + e;
    cuts[4] = h;
    cuts[5] = h + 3;               /* inside "data" */
    cuts[6] = h + 6;
    cuts[7] = h + 6 + CFCOST_SSE_MAX / 2;
    cuts[8] = h + CFCOST_SSE_MAX;
    cuts[9] = h + CFCOST_SSE_MAX + 1;
    cuts[10] = h + 6 + CFCOST_SSE_MAX;
    cuts[11] = h + 6 + CFCOST_SSE_MAX + 1;
    cuts[12] = n - e;
    cuts[13] = n;
    cuts[14] = n + 1;
    cuts[15] = 1;

    check_splits(name, &b, cuts, 16, &whole);

    is_u64(whole.n, 2, "%s: the events around it survive", name);
    ok(rec_is(&whole, 0, "a", 0, 7 + 2 * e),
       "%s: the event before", name);
    if (!ok(rec_is(&whole, 1, "b", n, b.len),
            "%s: the event after, offsets counted across the skip", name)
        && whole.n > 1)
    {
        show("got", &whole.v[1]);
    }
    is_u64(whole.skipped, 1, "%s: skipped counts it", name);
    is_u64(whole.events, 2, "%s: events counts the others", name);
    is_u64(whole.offset, b.len, "%s: offset is the stream's length", name);

    /* the same line with its terminator at the very end of a buffer
     * holding it all, then the rest */
    {
        run_t   r;
        size_t  c = nl + e;

        run_cuts(&r, b.s, b.len, &c, 1);
        ok(run_same(&whole, &r, 1), "%s: split just after its line end",
           name);
        run_free(&r);
    }

    run_free(&whole);
    free(b.s);
}


/* many data lines adding up to more than MAX */
static void
test_many_lines(void)
{
    size_t   i, h, n, cuts[8], line;
    run_t    whole;
    buf_t    b = { NULL, 0, 0 };

    puts_(&b, ": keep-alive\n\ndata: a\n\n");
    h = b.len;
    puts_(&b, "event: big\nid: 1\n");
    line = 6 + 1000;                            /* before its CR or LF */
    for (i = 0; i < 1100; i++) {                /* 1100 * 1001 > MAX */
        puts_(&b, "data: ");
        put_fill(&b, 'y', 1000);
        puts_(&b, (i % 3 == 0) ? "\r\n" : "\n");
        if (i == 700) {
            puts_(&b, ": comment in the middle\n");
        }
    }
    puts_(&b, "\r\n");
    n = b.len;
    puts_(&b, "data: b\ndata: c\n\n");

    cuts[0] = h + 17 + 1047 * (line + 1);  /* about where MAX is crossed */
    cuts[1] = cuts[0] + 1;
    cuts[2] = n - 2;
    cuts[3] = n - 1;
    cuts[4] = n;
    cuts[5] = h;
    cuts[6] = h + 17 + line;          /* the first line's CR starts one */
    cuts[7] = h + 17 + line + 1;      /* between that CR and its LF */

    check_splits("many lines", &b, cuts, 8, &whole);

    is_u64(whole.n, 2, "many lines: the events around it survive");
    ok(rec_is(&whole, 0, "a", 14, 23), "many lines: the event before");
    ok(rec_is(&whole, 1, "b\nc", n, b.len),
       "many lines: the event after, offsets counted across the skip");
    is_u64(whole.skipped, 1, "many lines: skipped counts it");
    is_u64(whole.offset, b.len, "many lines: offset is the length");

    run_free(&whole);
    free(b.s);
}


/* an oversize event the stream ends in: finish() skips and counts it */
static void
test_huge_unterminated(void)
{
    size_t   cuts[3];
    run_t    whole;
    buf_t    b = { NULL, 0, 0 };

    puts_(&b, "data: a\n\ndata: ");
    put_fill(&b, 'x', CFCOST_SSE_MAX + 1);

    cuts[0] = 9;
    cuts[1] = 20;
    cuts[2] = b.len - 1;
    check_splits("huge unterminated", &b, cuts, 3, &whole);

    is_u64(whole.n, 1, "huge unterminated: the event before survives");
    is_u64(whole.skipped, 1, "huge unterminated: skipped counts it");

    run_free(&whole);
    free(b.s);
}


/*
 * An event of exactly MAX bytes as sent (its blank line included) is
 * read; one byte more and it is skipped, whatever its lines are: data,
 * comments or other fields.
 */
static void
test_limit(void)
{
    size_t   a, cuts[2];
    run_t    whole;
    buf_t    b = { NULL, 0, 0 };

    a = 1000;
    puts_(&b, "data: ");
    put_fill(&b, 'p', a);
    puts_(&b, "\ndata: ");
    put_fill(&b, 'q', CFCOST_SSE_MAX - a - 15);   /* MAX bytes in all */
    puts_(&b, "\n\n");

    cuts[0] = 500;
    cuts[1] = b.len - 3;
    check_splits("event of MAX bytes", &b, cuts, 2, &whole);
    ok(whole.n == 1 && whole.v[0].len == CFCOST_SSE_MAX - 14,
       "event of MAX bytes: dispatched, %d bytes of data",
       CFCOST_SSE_MAX - 14);
    is_u64(whole.skipped, 0, "event of MAX bytes: nothing skipped");
    run_free(&whole);

    b.len = 0;
    puts_(&b, "data: ");
    put_fill(&b, 'p', a);
    puts_(&b, "\ndata: ");
    put_fill(&b, 'q', CFCOST_SSE_MAX - a - 14);   /* one more */
    puts_(&b, "\n\n");

    cuts[1] = b.len - 3;
    check_splits("event of MAX+1 bytes", &b, cuts, 2, &whole);
    is_u64(whole.n, 0, "event of MAX+1 bytes: skipped");
    is_u64(whole.skipped, 1, "event of MAX+1 bytes: counted");
    run_free(&whole);

    /* one line of exactly MAX - 2 bytes, "data: " included: MAX in all */
    b.len = 0;
    puts_(&b, "data: ");
    put_fill(&b, 'r', CFCOST_SSE_MAX - 8);
    puts_(&b, "\n\n");

    cuts[0] = 3;
    cuts[1] = b.len - 2;
    check_splits("line of MAX - 2 bytes", &b, cuts, 2, &whole);
    ok(whole.n == 1 && whole.v[0].len == CFCOST_SSE_MAX - 8,
       "line of MAX - 2 bytes: dispatched");
    run_free(&whole);

    free(b.s);
}


/*
 * Comments and other fields count too: an event that grows past MAX with
 * short comment lines (its data small) is skipped, and the parser says
 * it cannot be held from the byte it passes MAX.
 */
static void
test_limit_comments(void)
{
    int                 got;
    size_t              i, used, off, cuts[3];
    run_t               whole;
    buf_t               b = { NULL, 0, 0 };
    cfcost_sse_t        p;
    cfcost_sse_pos_t    pos;
    cfcost_sse_event_t  ev;

    puts_(&b, "data: a\n\ndata: small\n");
    for (i = 0; b.len < 9 + CFCOST_SSE_MAX + 100; i++) {
        puts_(&b, ": ");
        put_fill(&b, 'c', 98);
        puts_(&b, (i % 2) ? "\n" : "\r\n");
    }
    puts_(&b, "\n");
    off = b.len;
    puts_(&b, "data: b\n\n");

    cuts[0] = 9 + CFCOST_SSE_MAX;
    cuts[1] = 9 + CFCOST_SSE_MAX + 1;
    cuts[2] = off;
    check_splits("comments past MAX", &b, cuts, 3, &whole);
    ok(whole.n == 2 && rec_is(&whole, 0, "a", 0, 9)
       && rec_is(&whole, 1, "b", off, b.len),
       "comments past MAX: the events around it survive");
    is_u64(whole.skipped, 1, "comments past MAX: skipped and counted");
    run_free(&whole);

    /* fed in 4 KB pieces: holdable up to MAX bytes, then no more */
    cfcost_sse_init(&p);
    (void) cfcost_sse_feed(&p, b.s, 9, &ev, &got);

    for (off = 9; off < b.len - 10; off += used) {
        used = cfcost_sse_feed(&p, b.s + off,
                               (b.len - 10 - off < 4096) ? b.len - 10 - off
                                                         : 4096,
                               &ev, &got);
        cfcost_sse_position(&p, &pos);

        if (pos.unfinished != (pos.offset - pos.event_start
                               <= CFCOST_SSE_MAX))
        {
            break;
        }
    }
    ok(off >= b.len - 10, "comments past MAX: unfinished (holdable) exactly "
       "while at most MAX bytes long");
    ok(!pos.unfinished && pos.open, "comments past MAX: over it, open but "
       "not holdable");
    ok(p.line_cap <= CFCOST_SSE_MAX && p.data_cap <= 256,
       "comments past MAX: the parser kept only a line and the small data");
    cfcost_sse_free(&p);

    free(b.s);
}


/*
 * cfcost_sse_trim() between feeds changes nothing that is read, and gives
 * back what a large event made grow.
 */
static void
test_trim(void)
{
    int                 got;
    size_t              i, used, cuts[2];
    run_t               whole, r;
    buf_t               b = { NULL, 0, 0 };
    cfcost_sse_t        p;
    cfcost_sse_event_t  ev;

    puts_(&b, "data: a\n\ndata: ");
    put_fill(&b, 'x', 200000);
    puts_(&b, "\ndata: ");
    put_fill(&b, 'y', 100000);
    puts_(&b, "\r\n\r\ndata: b\n\n");

    cuts[0] = 50000;
    cuts[1] = b.len - 12;
    check_splits("large event", &b, cuts, 2, &whole);

    trim_keep = 1;                       /* trim after every feed */
    for (i = 0; i < 3; i++) {
        static const size_t  steps[] = { 1, 4096, 65543 };

        run_step(&r, b.s, b.len, steps[i]);
        ok(run_same(&whole, &r, 1), "trim after every feed, %zu bytes at a "
           "time: same events", steps[i]);
        run_free(&r);
    }
    trim_keep = 0;

    cfcost_sse_init(&p);
    for (i = 0; i < b.len; i += used) {
        used = cfcost_sse_feed(&p, b.s + i, (b.len - i < 4096) ? b.len - i
                                                               : 4096,
                               &ev, &got);
        if (got && ev.len > 1000) {
            break;
        }
    }
    ok(p.data_cap >= 300000, "large event: the data buffer grew");
    cfcost_sse_trim(&p, 65536);
    ok(p.data == NULL && p.data_cap == 0 && p.line == NULL
       && p.line_cap == 0, "trim: both buffers given back once read");

    (void) cfcost_sse_feed(&p, "data: hal", 9, &ev, &got);
    cfcost_sse_trim(&p, 0);
    ok(p.line_cap > 0, "trim: a line in progress is kept");
    used = cfcost_sse_feed(&p, "f\n\n", 3, &ev, &got);
    ok(got && ev.len == 4 && memcmp(ev.data, "half", 4) == 0,
       "trim: the line in progress is read whole");
    cfcost_sse_free(&p);

    run_free(&whole);
    free(b.s);
}


/*
 * Whole and split must agree however the limit is drawn.  These fail
 * while the limit on a line split across feeds (the raw line, "data: "
 * included, and whatever the field) differs from the limit on a line
 * that arrives whole (the data only, and only for "data" lines).
 */
static void
test_limit_agrees(void)
{
    size_t   cuts[3];
    run_t    whole;
    buf_t    b = { NULL, 0, 0 };

    /* data of MAX - 3 bytes on one line: the line is MAX + 3 */
    puts_(&b, "data: a\n\ndata: ");
    put_fill(&b, 'z', CFCOST_SSE_MAX - 3);
    puts_(&b, "\n\ndata: b\n\n");

    cuts[0] = 20;
    cuts[1] = b.len / 2;
    cuts[2] = b.len - 11;          /* the long line's end starts a buffer */
    check_splits("near-MAX data line", &b, cuts, 3, &whole);
    run_free(&whole);

    /* a comment longer than MAX before the data of an event */
    b.len = 0;
    puts_(&b, "data: a\n\n: ");
    put_fill(&b, 'c', CFCOST_SSE_MAX + 10);
    puts_(&b, "\ndata: kept\n\n");

    cuts[0] = 12;
    cuts[1] = b.len / 2;
    cuts[2] = b.len - 13;
    check_splits("huge comment", &b, cuts, 3, &whole);
    run_free(&whole);

    /* an "event:" field longer than MAX */
    b.len = 0;
    puts_(&b, "data: a\n\nevent: ");
    put_fill(&b, 'e', CFCOST_SSE_MAX + 10);
    puts_(&b, "\ndata: kept\n\n");

    cuts[0] = 12;
    cuts[1] = b.len / 2;
    cuts[2] = b.len - 13;
    check_splits("huge event field", &b, cuts, 3, &whole);
    run_free(&whole);

    free(b.s);
}


int
main(void)
{
    size_t  i;

    for (i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
        test_corpus_stream(&corpus[i]);
    }

    test_reuse();
    test_position();
    test_huge_line("\n");
    test_huge_line("\r\n");
    test_huge_line("\r");
    test_many_lines();
    test_huge_unterminated();
    test_limit();
    test_limit_comments();
    test_limit_agrees();
    test_trim();

    return done_testing();
}
