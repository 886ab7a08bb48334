/*
 * Unit tests for common/cfcost_request.c, the one-pass reading of a
 * client's request body, and for cfcost_json_unescape(), which decodes its
 * keys and counts its text:
 *
 *   - directed cases: each return code; each span, by its bytes; the model
 *     cut first, in the middle, last, alone and among white space; keys
 *     written with escapes; each name read given twice at its level, and
 *     names not read given twice; the messages' count and first bad one;
 *     the prompt's decoded bytes; include_usage; deep nesting;
 *   - cfcost_json_unescape(): every escape, surrogate pairs, the length
 *     alone, and random literals against jansson;
 *   - a differential run against jansson: random request-like bodies
 *     (members in any order, extra members, keys and text escaped, white
 *     space, non-ASCII, wrong types, members given twice) and byte-level
 *     mutants of them, from a fixed seed.  Each reading is checked against
 *     jansson's tree, and against a walk of the text written here (apart
 *     from cfcost_json.c, keys decoded by jansson) for the exact spans and
 *     the names given twice.
 *
 *   CFCOST_REQUEST_RUNS   bodies (default 20000, about a second)
 *   CFCOST_REQUEST_SEED   the seed (default 20260101)
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "cfcost_json.h"
#include "cfcost_request.h"
#include "tap.h"


#define RQ_MAX     65536            /* the largest body generated */
#define RQ_SLACK   256              /* room for mutations past RQ_MAX */
#define RQ_NAMES   8
#define RQ_TOP     5                /* rq_names[0..5) are top-level */

#define nelts(a)   (sizeof(a) / sizeof((a)[0]))


/* a directed case for a return code: the body may hold a NUL */
typedef struct {
    const char  *body;
    size_t       len;
    int          rc;
    const char  *twice;             /* the name, with CFCOST_REQUEST_TWICE */
} rq_rc_case_t;

#define RC(s, rc, twice)  { s, sizeof(s) - 1, rc, twice }


/* a directed case read OK: each span's bytes, NULL when absent */
typedef struct {
    const char  *body;
    const char  *model;
    const char  *messages;
    const char  *prompt;
    const char  *stream;
    const char  *stream_options;
    const char  *include_usage;
    size_t       messages_n;
    size_t       message_bad;
    size_t       prompt_bytes;
} rq_span_case_t;


/* a directed case for the model cut: the body, and what is left of it
   with white space outside strings taken out */
typedef struct {
    const char  *body;
    const char  *left;
} rq_cut_case_t;


typedef struct {
    const char  *src;
    size_t       len;
    const char  *want;
    size_t       want_len;
} rq_unescape_case_t;

#define UN(s, w)  { s, sizeof(s) - 1, w, sizeof(w) - 1 }


/* the generator's state: the body, and the random state */
typedef struct {
    char      buf[RQ_MAX + RQ_SLACK];
    size_t    len;
    int       full;                 /* a write did not fit */
    int       deep;                 /* nested near CFCOST_JSON_DEPTH */
    uint64_t  x;
} rq_gen_t;


/* a member to generate: its key (NULL for random text), its value's kind */
typedef struct {
    const char  *key;
    int          kind;
} rq_member_t;

enum {
    RQ_V_ANY = 0,
    RQ_V_MODEL,
    RQ_V_MESSAGES,
    RQ_V_PROMPT,
    RQ_V_STREAM,
    RQ_V_OPTIONS,
    RQ_V_ROLE,
    RQ_V_CONTENT,
    RQ_V_USAGE
};


/* the names read, at their levels: top, a message, stream_options */
enum {
    RQ_MODEL = 0,
    RQ_MESSAGES,
    RQ_PROMPT,
    RQ_STREAM,
    RQ_STREAM_OPTIONS,
    RQ_ROLE,
    RQ_CONTENT,
    RQ_INCLUDE_USAGE
};

static const char *const  rq_names[RQ_NAMES] = {
    "model", "messages", "prompt", "stream", "stream_options",
    "role", "content", "include_usage"
};


/* the reference walk's reading of a text jansson and we call valid */
typedef struct {
    cfcost_span_t  span[RQ_NAMES];  /* the first of each name; for
                                       include_usage, in the first
                                       stream_options that is an object */
    unsigned       count[RQ_TOP];
    unsigned       twice;           /* a bit per name given twice at its
                                       level, in any object read there */
} rq_ref_t;


/* what the differential run saw: a check that never gets there proves
   little */
typedef struct {
    unsigned long  bodies;
    unsigned long  mutants;
    unsigned long  bytes;
    unsigned long  deep;            /* bodies nested near the limit */
    unsigned long  rc_ok;
    unsigned long  rc_invalid;
    unsigned long  rc_not_object;
    unsigned long  rc_twice;
    unsigned long  twice_nested;    /* role, content or include_usage */
    unsigned long  twice_other;     /* read OK with another name twice */
    unsigned long  big_number;      /* skipped: beyond jansson's numbers */
    unsigned long  nul_key;         /* skipped: jansson refuses "\u0000"
                                       in a key */
    unsigned long  full;            /* skipped: past the buffer */
    unsigned long  model_string;
    unsigned long  messages_array;
    unsigned long  message_bad;     /* arrays with a bad message */
    unsigned long  prompt_bytes;    /* readings with bytes to count */
    unsigned long  include_usage;
    unsigned long  cut;
} rq_stats_t;


static char        rq_why[1024];
static rq_stats_t  rq_stats;

#define rq_fail(...)                                                         \
    (snprintf(rq_why, sizeof(rq_why), __VA_ARGS__), rq_why)


static const char *
rq_rc_name(int rc)
{
    switch (rc) {
    case CFCOST_REQUEST_OK:         return "OK";
    case CFCOST_REQUEST_INVALID:    return "INVALID";
    case CFCOST_REQUEST_NOT_OBJECT: return "NOT_OBJECT";
    case CFCOST_REQUEST_TWICE:      return "TWICE";
    default:                        return "?";
    }
}


/* s[0..n) for a test's name: printable, cut at 70 bytes */
static const char *
rq_show(const char *s, size_t n)
{
    size_t       i, o;
    static char  out[4 * 70 + 8];

    for (i = 0, o = 0; i < n && i < 70; i++) {
        if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] >= 0x7f) {
            o += snprintf(out + o, sizeof(out) - o, "\\x%02x",
                          (unsigned char) s[i]);

        } else {
            out[o++] = s[i];
        }
    }

    snprintf(out + o, sizeof(out) - o, "%s", i < n ? "..." : "");

    return out;
}


/* s[0..n) as a C string literal, to paste into a directed case */
static void
rq_dump(const char *s, size_t n)
{
    size_t  i;

    fprintf(stderr, "#   input (%zu bytes): \"", n);

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            fprintf(stderr, "\\%c", s[i]);

        } else if ((unsigned char) s[i] < 0x20
                   || (unsigned char) s[i] >= 0x7f)
        {
            /* octal: always 3 digits, so no digit after it joins in */
            fprintf(stderr, "\\%03o", (unsigned char) s[i]);

        } else {
            fputc(s[i], stderr);
        }

        if (i % 4000 == 3999) {
            fprintf(stderr, "\"\n#   \"");
        }
    }

    fprintf(stderr, "\"\n");
}


/* s[0..n) without the bytes of cut: a new buffer of *len bytes */
static char *
rq_cut(const char *s, size_t n, cfcost_span_t cut, size_t *len)
{
    char  *t;

    *len = n - (cut.end - cut.start);

    t = malloc(n + 1);
    if (t == NULL) {
        return NULL;
    }

    memcpy(t, s, cut.start);
    memcpy(t + cut.start, s + cut.end, n - cut.end);

    return t;
}


/* ---------------------------------------------------------------------
 * Directed cases
 */


static void
test_codes(void)
{
    int                  rc;
    size_t               i;
    cfcost_request_t     r;
    const rq_rc_case_t  *c;

    static const rq_rc_case_t  cases[] = {
        RC("{}", CFCOST_REQUEST_OK, NULL),
        RC(" \t\r\n{ } \n", CFCOST_REQUEST_OK, NULL),
        RC("{\"model\":\"m\"}", CFCOST_REQUEST_OK, NULL),

        RC("", CFCOST_REQUEST_INVALID, NULL),
        RC("  ", CFCOST_REQUEST_INVALID, NULL),
        RC("{", CFCOST_REQUEST_INVALID, NULL),
        RC("}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"m\",}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\" \"m\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"m\"} {}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"m\"}x", CFCOST_REQUEST_INVALID, NULL),
        RC("{'model':1}", CFCOST_REQUEST_INVALID, NULL),
        RC("{model:1}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":01}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"\x01\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"\xc3\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"\\ud800\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"\\x41\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("{}\0", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"m\0\"}", CFCOST_REQUEST_INVALID, NULL),
        RC("\xef\xbb\xbf{}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"model\":\"m\",\"model\":}", CFCOST_REQUEST_INVALID, NULL),
        RC("{\"messages\":[{\"role\":\"u\",\"role\":}]}",
           CFCOST_REQUEST_INVALID, NULL),

        RC("[]", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC(" [ ] ", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("[{\"model\":\"m\"}]", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("\"model\"", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("\"{}\"", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("1", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("-0.5e3 ", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("null", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("true", CFCOST_REQUEST_NOT_OBJECT, NULL),
        RC("\nfalse", CFCOST_REQUEST_NOT_OBJECT, NULL),

        RC("{\"model\":\"a\",\"model\":\"b\"}", CFCOST_REQUEST_TWICE,
           "model"),
    };

    for (i = 0; i < nelts(cases); i++) {
        c = &cases[i];
        rc = cfcost_request_read(c->body, c->len, &r);

        if (!ok(rc == c->rc
                && (c->twice == NULL ? r.twice == NULL
                    : r.twice != NULL && strcmp(r.twice, c->twice) == 0),
                "%s: %s", rq_rc_name(c->rc), rq_show(c->body, c->len)))
        {
            diag("got %s (twice %s)", rq_rc_name(rc),
                 r.twice ? r.twice : "NULL");
        }
    }
}


/* the bytes of span s of body, NULL when absent, compared with want */
static int
rq_span_is(const char *body, cfcost_span_t s, const char *want,
    const char *name)
{
    size_t  n;

    n = strlen(body);

    if (s.end == 0) {
        if (want == NULL) {
            return 1;
        }

        diag("%s: absent, expected '%s'", name, want);
        return 0;
    }

    if (s.start >= s.end || s.end > n) {
        diag("%s: span [%zu,%zu) in %zu bytes", name, s.start, s.end, n);
        return 0;
    }

    if (want != NULL && strlen(want) == s.end - s.start
        && memcmp(body + s.start, want, s.end - s.start) == 0)
    {
        return 1;
    }

    diag("%s: '%.*s', expected %s%s%s", name, (int) (s.end - s.start),
         body + s.start, want ? "'" : "", want ? want : "absent",
         want ? "'" : "");

    return 0;
}


static int
rq_size_is(size_t got, size_t want, const char *name)
{
    if (got == want) {
        return 1;
    }

    diag("%s: %zu, expected %zu", name, got, want);

    return 0;
}


static void
rq_span_cases(const char *group, const rq_span_case_t *c, size_t n)
{
    int               rc, pass;
    size_t            i;
    cfcost_request_t  r;

    for (i = 0; i < n; i++, c++) {
        rc = cfcost_request_read(c->body, strlen(c->body), &r);

        pass = (rc == CFCOST_REQUEST_OK && r.twice == NULL);
        if (!pass) {
            diag("%s (twice %s)", rq_rc_name(rc), r.twice ? r.twice : "-");
        }

        /* each one, so that every difference is told */
        pass &= rq_span_is(c->body, r.model, c->model, "model");
        pass &= rq_span_is(c->body, r.messages, c->messages, "messages");
        pass &= rq_span_is(c->body, r.prompt, c->prompt, "prompt");
        pass &= rq_span_is(c->body, r.stream, c->stream, "stream");
        pass &= rq_span_is(c->body, r.stream_options, c->stream_options,
                           "stream_options");
        pass &= rq_span_is(c->body, r.include_usage, c->include_usage,
                           "include_usage");
        pass &= rq_size_is(r.messages_n, c->messages_n, "messages_n");
        pass &= rq_size_is(r.message_bad, c->message_bad, "message_bad");
        pass &= rq_size_is(r.prompt_bytes, c->prompt_bytes, "prompt_bytes");

        if (c->model == NULL) {
            pass &= rq_size_is(r.model_cut.end, 0, "model_cut.end");
        }

        ok(pass, "%s: %s", group, rq_show(c->body, strlen(c->body)));
    }
}


static void
test_spans(void)
{
    static const rq_span_case_t  cases[] = {

        /* every member, among white space and others */
        { "{ \"model\" : \"@cf/meta/llama-3.1-8b-instruct\" ,\n"
          "  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\n"
          "  \"prompt\" :\"abc\",\n"
          "  \"stream\":\ttrue,\n"
          "  \"stream_options\": {\"x\": [1, {\"include_usage\": 0}], "
          "\"include_usage\" : false },\n"
          "  \"temperature\": 0.5 }",
          "\"@cf/meta/llama-3.1-8b-instruct\"",
          "[{\"role\":\"user\",\"content\":\"hi\"}]",
          "\"abc\"", "true",
          "{\"x\": [1, {\"include_usage\": 0}], \"include_usage\" : false }",
          "false", 1, 1, 5 },

        /* none of them */
        { "{\"temperature\":1,\"max_tokens\":[]}",
          NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        /* each of another type, as written */
        { "{\"model\":12,\"messages\":{\"a\":1},\"prompt\":[\"a\",\"b\"],"
          "\"stream\":\"true\",\"stream_options\":null}",
          "12", "{\"a\":1}", "[\"a\",\"b\"]", "\"true\"", "null", NULL,
          0, 0, 0 },

        { "{\"model\":-1.5e+3,\"stream\":1e5}",
          "-1.5e+3", NULL, NULL, "1e5", NULL, NULL, 0, 0, 0 },

        { "{\"stream\":false\n,\"model\":null\r\n}",
          "null", NULL, NULL, "false", NULL, NULL, 0, 0, 0 },

        { "{\"model\":{\"a\":[1,{\"b\":\"}\"}]},\"stream\":[]}",
          "{\"a\":[1,{\"b\":\"}\"}]}", NULL, NULL, "[]", NULL, NULL,
          0, 0, 0 },

        /* the text of strings is no JSON */
        { "{\"x\":\"}\\\"model\\\":1,{\",\"model\":\"a\\\"b\\\\\","
          "\"y\":\"\\\\\"}",
          "\"a\\\"b\\\\\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        { "{\"x\":\"\\\\\",\"model\":\"\\\\\\\\\"}",
          "\"\\\\\\\\\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        /* the names count at the top only */
        { "{\"x\":{\"model\":\"inner\",\"messages\":[1],\"stream\":true},"
          "\"y\":[{\"prompt\":\"p\"}],\"model\":\"outer\"}",
          "\"outer\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        /* non-ASCII, as written */
        { "{\"model\":\"caf\xc3\xa9 \\u2713\",\"prompt\":\"\xf0\x9f\x98\x80\"}",
          "\"caf\xc3\xa9 \\u2713\"", NULL, "\"\xf0\x9f\x98\x80\"", NULL,
          NULL, NULL, 0, 0, 4 },

        { "{\"model\":\"\"}",
          "\"\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
    };

    rq_span_cases("spans", cases, nelts(cases));
}


static void
test_keys(void)
{
    int               rc;
    char              body[512];
    size_t            i, n;
    cfcost_request_t  r;

    static const rq_span_case_t  cases[] = {
        { "{\"\\u006dodel\":\"x\"}",
          "\"x\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        { "{\"\\u006D\\u006F\\u0064\\u0065\\u006C\":\"x\"}",
          "\"x\"", NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        { "{\"m\\u006fdel\":\"x\",\"messages\":[{\"r\\u006fle\":\"user\","
          "\"c\\u006Fntent\":\"abc\"}]}",
          "\"x\"", "[{\"r\\u006fle\":\"user\",\"c\\u006Fntent\":\"abc\"}]",
          NULL, NULL, NULL, NULL, 1, 1, 3 },

        { "{\"stream\\u005foptions\":{\"include\\u005fusage\":true},"
          "\"\\u0073tream\":true,\"promp\\u0074\":\"\"}",
          NULL, NULL, "\"\"", "true", "{\"include\\u005fusage\":true}",
          "true", 0, 0, 0 },

        /* names that are not ours */
        { "{\"model\\u0000\":\"a\",\"\\u0000model\":\"b\",\"mode\":\"c\","
          "\"models\":\"d\",\"Model\":\"e\",\"model \":\"f\","
          "\"\\/model\":\"g\",\"mod\\u00e9l\":1,\"MODEL\":2,\"\":3,"
          "\"stream_option\":{},\"stream_optionss\":{},\"streams\":true,"
          "\"message\":[],\"prompts\":\"x\"}",
          NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },

        { "{\"stream_options\":{\"include_usag\\u0065\":1,"
          "\"include_usage\\u0000\":2,\"Include_usage\":3}}",
          NULL, NULL, NULL, NULL,
          "{\"include_usag\\u0065\":1,\"include_usage\\u0000\":2,"
          "\"Include_usage\":3}", "1", 0, 0, 0 },

        { "{\"messages\":[{\"rol\\u0065\":\"u\",\"contents\":\"a\"},"
          "{\"Role\":\"u\",\"content\":\"b\"}]}",
          NULL, "[{\"rol\\u0065\":\"u\",\"contents\":\"a\"},"
          "{\"Role\":\"u\",\"content\":\"b\"}]", NULL, NULL, NULL, NULL,
          2, 0, 0 },
    };

    rq_span_cases("keys", cases, nelts(cases));

    /* a key escaped longer than any of ours decodes to: not ours */
    n = snprintf(body, sizeof(body), "{\"");
    for (i = 0; i < 40; i++) {
        n += snprintf(body + n, sizeof(body) - n, "\\u%04x", "model"[i % 5]);
    }

    n += snprintf(body + n, sizeof(body) - n, "\":1,\"model\":\"m\"}");

    rc = cfcost_request_read(body, n, &r);
    ok(rc == CFCOST_REQUEST_OK && r.twice == NULL
       && rq_span_is(body, r.model, "\"m\"", "model"),
       "keys: a key of 40 escapes (240 bytes) is not model");

    /* the longest way to write our longest name is one of ours */
    n = snprintf(body, sizeof(body), "{\"");
    for (i = 0; i < strlen("stream_options"); i++) {
        n += snprintf(body + n, sizeof(body) - n, "\\u%04X",
                      "stream_options"[i]);
    }

    n += snprintf(body + n, sizeof(body) - n,
                  "\":{\"\\u0069\\u006e\\u0063\\u006c\\u0075\\u0064\\u0065"
                  "\\u005f\\u0075\\u0073\\u0061\\u0067\\u0065\":true}}");

    rc = cfcost_request_read(body, n, &r);
    ok(rc == CFCOST_REQUEST_OK
       && rq_span_is(body, r.include_usage, "true", "include_usage"),
       "keys: stream_options and include_usage, every letter escaped");
}


static void
test_cut(void)
{
    int                   rc, rc2, pass;
    char                 *t, *w;
    size_t                i, j, n, tn, wn;
    cfcost_request_t      r, r2;
    const rq_cut_case_t  *c;

    static const rq_cut_case_t  cases[] = {
        { "{\"model\":\"m\"}", "{}" },
        { " {  \"model\" : \"m\"  } ", "{}" },
        { "{\n\t\"model\"\n:\n\"m\"\n}\n", "{}" },
        { "{\"model\":\"m\",\"a\":1}", "{\"a\":1}" },
        { "{ \"model\" : \"m\" , \"a\" : 1 }", "{\"a\":1}" },
        { "{\"model\":\"m\"\n,\n\"a\":1}", "{\"a\":1}" },
        { "{\"a\":1,\"model\":\"m\",\"b\":2}", "{\"a\":1,\"b\":2}" },
        { "{\"a\":1 ,\n \"model\":\"m\" ,\t\"b\":2}", "{\"a\":1,\"b\":2}" },
        { "{\"a\":1,\"model\":\"m\"}", "{\"a\":1}" },
        { "{\"a\":1 , \"model\" : \"m\" }", "{\"a\":1}" },
        { "{\"a\":[1,2],\"b\":{},\"model\":\"m\"}",
          "{\"a\":[1,2],\"b\":{}}" },
        { "{\"a\":1,\"model\":{\"b\":[1,\",\"],\"c\":\"}\"},\"d\":2}",
          "{\"a\":1,\"d\":2}" },
        { "{\"a\":\"x,\",\"model\":\"m,\"}", "{\"a\":\"x,\"}" },
        { "{\"\\u006dodel\":\"m\",\"a\":1}", "{\"a\":1}" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
          "\"model\":\"@cf/meta/llama-3.1-8b-instruct\",\"stream\":true}",
          "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
          "\"stream\":true}" },
    };

    for (i = 0; i < nelts(cases); i++) {
        c = &cases[i];
        n = strlen(c->body);
        rc = cfcost_request_read(c->body, n, &r);

        if (rc != CFCOST_REQUEST_OK || r.model.end == 0
            || r.model_cut.start > r.model.start
            || r.model_cut.end < r.model.end || r.model_cut.end > n)
        {
            ok(0, "cut: %s", rq_show(c->body, n));
            diag("%s, model [%zu,%zu), cut [%zu,%zu)", rq_rc_name(rc),
                 r.model.start, r.model.end, r.model_cut.start,
                 r.model_cut.end);
            continue;
        }

        t = rq_cut(c->body, n, r.model_cut, &tn);
        w = malloc(tn + 1);
        if (t == NULL || w == NULL) {
            ok(0, "cut: memory");
            free(t);
            free(w);
            return;
        }

        /* white space out of strings taken out, to compare */
        for (wn = 0, j = 0; j < tn; j++) {
            if (t[j] == '"') {
                for (w[wn++] = t[j++]; j < tn && t[j] != '"'; j++) {
                    if (t[j] == '\\') {
                        w[wn++] = t[j++];
                    }

                    w[wn++] = t[j];
                }

                w[wn++] = '"';

            } else if (strchr(" \t\r\n", t[j]) == NULL) {
                w[wn++] = t[j];
            }
        }

        rc2 = cfcost_request_read(t, tn, &r2);

        pass = (cfcost_json_valid(t, tn) == 0 && rc2 == CFCOST_REQUEST_OK
                && r2.model.end == 0 && r2.model_cut.end == 0
                && wn == strlen(c->left) && memcmp(w, c->left, wn) == 0);

        if (!ok(pass, "cut: %s", rq_show(c->body, n))) {
            diag("left '%.*s' (%s, model end %zu), expected '%s'", (int) tn,
                 t, rq_rc_name(rc2), r2.model.end, c->left);
        }

        free(t);
        free(w);
    }

    rc = cfcost_request_read("{\"a\":1}", 7, &r);
    ok(rc == CFCOST_REQUEST_OK && r.model_cut.start == 0
       && r.model_cut.end == 0, "cut: none without a model");

    rc = cfcost_request_read("{\"x\":{\"model\":1}}", 17, &r);
    ok(rc == CFCOST_REQUEST_OK && r.model_cut.end == 0,
       "cut: none for a model inside another member");
}


static void
test_twice(void)
{
    int               rc;
    char              body[256];
    size_t            i, k, n;
    cfcost_request_t  r;

    /* each top-level name twice: apart, side by side, among white space,
       and (the last form) the second escaped */
    static const char *const  forms[] = {
        "{\"%s\":1,\"x\":2,\"%s\":3}",
        "{\"%s\":1,\"%s\":1}",
        "{ \"%s\" : {\"a\":[1]} ,\n\"%s\" : null }",
        "{\"a\":0,\"%s\":\"s\",\"b\":{\"c\":1},\"%s\":[]}",
    };

    static const rq_rc_case_t  cases[] = {
        RC("{\"model\":\"a\",\"\\u006dodel\":\"b\"}", CFCOST_REQUEST_TWICE,
           "model"),
        RC("{\"\\u006D\\u006f\\u0064\\u0065\\u006c\":\"a\",\"mod\\u0065l\":1}",
           CFCOST_REQUEST_TWICE, "model"),
        RC("{\"stream\":true,\"temperature\":1,\"str\\u0065am\":false}",
           CFCOST_REQUEST_TWICE, "stream"),
        RC("{\"stream_options\":{},\"stream_options\":{}}",
           CFCOST_REQUEST_TWICE, "stream_options"),

        /* in a message */
        RC("{\"messages\":[{\"role\":\"user\",\"content\":\"a\","
           "\"role\":\"system\"}]}", CFCOST_REQUEST_TWICE, "role"),
        RC("{\"messages\":[{\"role\":\"user\",\"content\":\"a\","
           "\"content\":\"b\"}]}", CFCOST_REQUEST_TWICE, "content"),
        RC("{\"messages\":[{\"role\":\"u\",\"content\":\"a\"},{},"
           "{ \"content\" : 1 , \"role\":\"u\",\"con\\u0074ent\":2}]}",
           CFCOST_REQUEST_TWICE, "content"),
        RC("{\"messages\":[1,\"x\",{\"role\":1,\"r\\u006fle\":2}]}",
           CFCOST_REQUEST_TWICE, "role"),
        RC("{\"model\":\"m\",\"messages\":[{\"content\":\"a\","
           "\"content\":\"a\"}],\"stream\":true}",
           CFCOST_REQUEST_TWICE, "content"),

        /* in stream_options */
        RC("{\"stream_options\":{\"include_usage\":true,"
           "\"include_usage\":false}}", CFCOST_REQUEST_TWICE,
           "include_usage"),
        RC("{\"stream\":true,\"stream_options\":{\"x\":1,"
           "\"include_usage\":true,\"y\":[],\"include\\u005Fusage\":true}}",
           CFCOST_REQUEST_TWICE, "include_usage"),

        /* other names, or names at a level where they are not read */
        RC("{\"temperature\":1,\"temperature\":2,\"model\":\"m\"}",
           CFCOST_REQUEST_OK, NULL),
        RC("{\"messages\":[{\"role\":\"u\",\"content\":\"c\",\"x\":1,"
           "\"x\":2}]}", CFCOST_REQUEST_OK, NULL),
        RC("{\"stream_options\":{\"x\":1,\"x\":2,\"include_usage\":true}}",
           CFCOST_REQUEST_OK, NULL),
        RC("{\"role\":1,\"role\":2,\"content\":1,\"content\":2,"
           "\"include_usage\":1,\"include_usage\":2}",
           CFCOST_REQUEST_OK, NULL),
        RC("{\"messages\":[{\"role\":\"u\",\"content\":\"c\",\"model\":1,"
           "\"model\":2,\"include_usage\":1,\"include_usage\":1}]}",
           CFCOST_REQUEST_OK, NULL),
        RC("{\"stream_options\":{\"model\":1,\"model\":2,\"role\":1,"
           "\"role\":1}}", CFCOST_REQUEST_OK, NULL),
        RC("{\"messages\":{\"role\":1,\"role\":2}}", CFCOST_REQUEST_OK,
           NULL),
        RC("{\"messages\":[[{\"role\":\"a\",\"role\":\"b\"}]]}",
           CFCOST_REQUEST_OK, NULL),
        RC("{\"messages\":[{\"role\":\"u\",\"content\":{\"role\":1,"
           "\"role\":2}}]}", CFCOST_REQUEST_OK, NULL),
        RC("{\"stream_options\":[{\"include_usage\":true,"
           "\"include_usage\":false}]}", CFCOST_REQUEST_OK, NULL),
        RC("{\"stream_options\":{\"x\":{\"include_usage\":1,"
           "\"include_usage\":2}}}", CFCOST_REQUEST_OK, NULL),
        RC("{\"x\":{\"model\":1,\"model\":2},\"model\":{\"model\":1,"
           "\"model\":2}}", CFCOST_REQUEST_OK, NULL),
        RC("{\"x\":[{\"messages\":1,\"messages\":2}]}", CFCOST_REQUEST_OK,
           NULL),
        RC("{\"model\":\"a\",\"model\\u0000\":\"b\",\"Model\":\"c\"}",
           CFCOST_REQUEST_OK, NULL),
    };

    for (i = 0; i < RQ_TOP; i++) {
        for (k = 0; k <= nelts(forms); k++) {
            if (k < nelts(forms)) {
                n = snprintf(body, sizeof(body), forms[k], rq_names[i],
                             rq_names[i]);

            } else {
                n = snprintf(body, sizeof(body), "{\"%s\":1,\"\\u%04x%s\":2}",
                             rq_names[i], rq_names[i][0], rq_names[i] + 1);
            }

            rc = cfcost_request_read(body, n, &r);

            if (!ok(rc == CFCOST_REQUEST_TWICE && r.twice != NULL
                    && strcmp(r.twice, rq_names[i]) == 0,
                    "twice: %s", rq_show(body, n)))
            {
                diag("got %s (twice %s)", rq_rc_name(rc),
                     r.twice ? r.twice : "NULL");
            }
        }
    }

    for (i = 0; i < nelts(cases); i++) {
        rc = cfcost_request_read(cases[i].body, cases[i].len, &r);

        if (!ok(rc == cases[i].rc
                && (cases[i].twice == NULL ? r.twice == NULL
                    : r.twice != NULL && strcmp(r.twice, cases[i].twice) == 0),
                "twice: %s %s", rq_rc_name(cases[i].rc),
                rq_show(cases[i].body, cases[i].len)))
        {
            diag("got %s (twice %s)", rq_rc_name(rc),
                 r.twice ? r.twice : "NULL");
        }
    }
}


static void
test_messages(void)
{
    int               rc;
    char             *body;
    size_t            i, n;
    cfcost_request_t  r;

#define M(s)  "{\"messages\":" s "}", NULL, s, NULL, NULL, NULL, NULL

    static const rq_span_case_t  cases[] = {
        { M("[]"), 0, 0, 0 },
        { M("[ \n ]"), 0, 0, 0 },
        { M("[{\"role\":\"u\",\"content\":\"a\"}]"), 1, 1, 1 },
        { M("[{\"content\":\"ab\",\"role\":\"\"}]"), 1, 1, 2 },

        /* elements that are no object */
        { M("[1]"), 1, 0, 0 },
        { M("[null]"), 1, 0, 0 },
        { M("[[]]"), 1, 0, 0 },
        { M("[[{\"role\":\"u\",\"content\":\"a\"}]]"), 1, 0, 0 },
        { M("[\"s\"]"), 1, 0, 0 },
        { M("[true]"), 1, 0, 0 },
        { M("[-1.5e3]"), 1, 0, 0 },
        { M("[{\"role\":\"u\",\"content\":\"a\"},\"x\","
            "{\"role\":\"u\",\"content\":\"b\"}]"), 3, 1, 2 },

        /* no role, or one that is no string */
        { M("[{}]"), 1, 0, 0 },
        { M("[{\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"role\":1,\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"role\":null,\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"role\":true,\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"role\":[\"u\"],\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"role\":{\"a\":\"u\"},\"content\":\"a\"}]"), 1, 0, 0 },
        { M("[{\"x\":{\"role\":\"u\"},\"content\":\"a\"}]"), 1, 0, 0 },

        /* no content: any content, even null, will do */
        { M("[{\"role\":\"u\"}]"), 1, 0, 0 },
        { M("[{\"role\":\"u\",\"x\":{\"content\":\"a\"}}]"), 1, 0, 0 },
        { M("[{\"role\":\"u\",\"content\":null}]"), 1, 1, 0 },
        { M("[{\"role\":\"u\",\"content\":[{\"type\":\"text\","
            "\"text\":\"abc\"}]}]"), 1, 1, 0 },
        { M("[{\"role\":\"u\",\"content\":7}]"), 1, 1, 0 },

        /* the first bad one */
        { M("[{\"role\":\"u\",\"content\":\"a\"},{\"role\":\"u\","
            "\"content\":\"b\"},{\"role\":1,\"content\":\"c\"},{}]"),
          4, 2, 2 },
        { M("[{\"role\":\"u\",\"content\":\"a\"},{\"role\":\"u\"},"
            "7,{\"role\":\"u\",\"content\":\"bc\"}]"), 4, 1, 3 },

        /* messages that is no array */
        { M("\"x\""), 0, 0, 0 },
        { M("{}"), 0, 0, 0 },
        { M("{\"role\":\"u\",\"content\":\"abc\"}"), 0, 0, 0 },
        { M("null"), 0, 0, 0 },
    };

#undef M

    rq_span_cases("messages", cases, nelts(cases));

    /* many */
    body = malloc(64 + 1000 * 40);
    if (body == NULL) {
        ok(0, "messages: memory");
        return;
    }

    n = sprintf(body, "{\"messages\":[");
    for (i = 0; i < 1000; i++) {
        n += sprintf(body + n, "%s{\"role\":\"user\",\"content\":\"%s\"}",
                     i ? "," : "", (i == 700) ? "" : "ab");
    }

    n += sprintf(body + n, ",{\"role\":\"x\"}]}");

    rc = cfcost_request_read(body, n, &r);
    ok(rc == CFCOST_REQUEST_OK && r.messages_n == 1001
       && r.message_bad == 1000 && r.prompt_bytes == 999 * 2,
       "messages: 1001, the last one bad (%zu, %zu, %zu bytes)",
       r.messages_n, r.message_bad, r.prompt_bytes);

    free(body);
}


static void
test_prompt_bytes(void)
{
#define P(s, n)  { "{\"prompt\":" s "}", NULL, NULL, s, NULL, NULL, NULL, \
                   0, 0, n }

    static const rq_span_case_t  cases[] = {
        P("\"\"", 0),
        P("\"abc\"", 3),
        P("\"h\\u00e9llo\\n\"", 7),
        P("\"\\u2713\"", 3),
        P("\"\\ud83d\\ude00\"", 4),
        P("\"\\uD83D\\uDE00!\"", 5),
        P("\"caf\xc3\xa9\"", 5),
        P("\"\xe2\x9c\x93\xf0\x9f\x98\x80\"", 7),
        P("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 8),
        P("\"\\u0000\"", 1),
        P("\"\\u0041\\u007f\\u0080\\u07ff\\u0800\\uffff\"", 1 + 1 + 2 + 2
          + 3 + 3),
        P("\"\\\\u00e9\"", 6),
        P("[\"abc\"]", 0),
        P("123", 0),
        P("null", 0),

        /* and the content of the good messages */
        { "{\"prompt\":\"ab\",\"messages\":[{\"role\":\"u\","
          "\"content\":\"\\u00e9\"},{\"role\":\"u\",\"content\":[\"abc\"]},"
          "{\"role\":1,\"content\":\"zzzz\"},{\"role\":\"u\","
          "\"content\":\"\\ud83d\\ude00x\"}]}",
          NULL, "[{\"role\":\"u\",\"content\":\"\\u00e9\"},{\"role\":\"u\","
          "\"content\":[\"abc\"]},{\"role\":1,\"content\":\"zzzz\"},"
          "{\"role\":\"u\",\"content\":\"\\ud83d\\ude00x\"}]",
          "\"ab\"", NULL, NULL, NULL, 4, 2, 2 + 2 + 5 },

        { "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
          "{\"role\":\"user\",\"content\":\"caf\xc3\xa9 \\\"\\u2713\\\"\"}]}",
          NULL, "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
          "{\"role\":\"user\",\"content\":\"caf\xc3\xa9 \\\"\\u2713\\\"\"}]",
          NULL, NULL, NULL, NULL, 2, 2, 9 + 5 + 1 + 2 + 3 },
    };

#undef P

    rq_span_cases("prompt_bytes", cases, nelts(cases));
}


static void
test_include_usage(void)
{
#define O(s, u)  { "{\"stream\":true,\"stream_options\":" s "}", NULL, NULL, \
                   NULL, "true", s, u, 0, 0, 0 }

    static const rq_span_case_t  cases[] = {
        O("{\"include_usage\":true}", "true"),
        O("{ \"include_usage\" : false , \"x\":1}", "false"),
        O("{\"x\":1,\"include_usage\":\"yes\"}", "\"yes\""),
        O("{\"include_usage\":{\"a\":[true]}}", "{\"a\":[true]}"),
        O("{}", NULL),
        O("{\"x\":{\"include_usage\":true}}", NULL),
        O("[{\"include_usage\":true}]", NULL),
        O("\"include_usage\"", NULL),
        O("null", NULL),

        { "{\"include_usage\":true}",
          NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
        { "{\"stream_options\":1,\"include_usage\":true}",
          NULL, NULL, NULL, NULL, "1", NULL, 0, 0, 0 },
        { "{\"x\":{\"stream_options\":{\"include_usage\":true}}}",
          NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0 },
    };

#undef O

    rq_span_cases("include_usage", cases, nelts(cases));
}


/* opens levels of open, puts inner, closes them, past "head" and before
   "tail"; the length */
static size_t
rq_nest(char *buf, const char *head, size_t levels, const char *open,
    const char *inner, char close, const char *tail)
{
    size_t  i, n;

    n = sprintf(buf, "%s", head);

    for (i = 0; i < levels; i++) {
        n += sprintf(buf + n, "%s", open);
    }

    n += sprintf(buf + n, "%s", inner);
    memset(buf + n, close, levels);
    n += levels;

    return n + sprintf(buf + n, "%s", tail);
}


static void
test_deep(void)
{
    int               rc;
    char             *buf;
    size_t            n;
    cfcost_request_t  r;

    buf = malloc(32 * CFCOST_JSON_DEPTH + 512);
    if (buf == NULL) {
        ok(0, "deep: memory");
        return;
    }

    /* 1 + 511: the limit, then one more */
    n = rq_nest(buf, "{\"x\":", CFCOST_JSON_DEPTH - 1, "[", "1", ']',
                ",\"model\":\"m\",\"stream\":true}");
    rc = cfcost_request_read(buf, n, &r);
    ok(rc == CFCOST_REQUEST_OK && rq_span_is(buf, r.model, "\"m\"", "model")
       && rq_span_is(buf, r.stream, "true", "stream"),
       "deep: %d levels before the members", CFCOST_JSON_DEPTH);

    n = rq_nest(buf, "{\"x\":", CFCOST_JSON_DEPTH, "[", "1", ']',
                ",\"model\":\"m\"}");
    rc = cfcost_request_read(buf, n, &r);
    is_str(rq_rc_name(rc), "INVALID", "deep: %d levels",
           CFCOST_JSON_DEPTH + 1);

    /* a message's content 3 + 509 deep */
    n = rq_nest(buf, "{\"model\":\"m\",\"messages\":[{\"role\":\"u\","
                "\"content\":", CFCOST_JSON_DEPTH - 3, "[", "\"abc\"", ']',
                "},{\"role\":\"u\",\"content\":\"de\"}]}");
    rc = cfcost_request_read(buf, n, &r);
    ok(rc == CFCOST_REQUEST_OK && r.messages_n == 2 && r.message_bad == 2
       && r.prompt_bytes == 2,
       "deep: a content %d levels deep (%s, %zu, %zu, %zu)",
       CFCOST_JSON_DEPTH, rq_rc_name(rc), r.messages_n, r.message_bad,
       r.prompt_bytes);

    /* objects named like ours, inside each other, inside ours */
    n = rq_nest(buf, "{\"messages\":[{\"role\":\"u\",\"content\":\"a\","
                "\"x\":", 300, "{\"role\":1,\"content\":",
                "{\"role\":1,\"role\":2}", '}',
                "}],\"model\":\"top\"}");
    rc = cfcost_request_read(buf, n, &r);
    ok(rc == CFCOST_REQUEST_OK && r.messages_n == 1 && r.message_bad == 1
       && r.prompt_bytes == 1
       && rq_span_is(buf, r.model, "\"top\"", "model"),
       "deep: 300 levels of messages inside a message");

    n = rq_nest(buf, "{\"stream_options\":", 400, "{\"model\":",
                "{\"model\":1,\"model\":2}", '}', ",\"model\":\"top\"}");
    rc = cfcost_request_read(buf, n, &r);
    ok(rc == CFCOST_REQUEST_OK && r.include_usage.end == 0
       && rq_span_is(buf, r.model, "\"top\"", "model"),
       "deep: 400 levels of model inside stream_options");

    n = rq_nest(buf, "{\"model\":", 500, "{\"model\":", "\"in\"", '}',
                ",\"model\":\"top\"}");
    rc = cfcost_request_read(buf, n, &r);
    ok(rc == CFCOST_REQUEST_TWICE && r.twice != NULL
       && strcmp(r.twice, "model") == 0,
       "deep: 500 levels of model, then model again: twice");

    free(buf);
}


static void
test_unescape(void)
{
    char                      *dst;
    size_t                     i, n, n0;
    const rq_unescape_case_t  *c;

    static const rq_unescape_case_t  cases[] = {
        UN("", ""),
        UN("abc", "abc"),
        UN("\\n", "\n"),
        UN("\\t", "\t"),
        UN("\\\"", "\""),
        UN("\\\\", "\\"),
        UN("\\/", "/"),
        UN("\\b", "\b"),
        UN("\\f", "\f"),
        UN("\\r", "\r"),
        UN("a\\nb\\tc\\\"d\\\\e\\/f\\bg\\fh\\ri", "a\nb\tc\"d\\e/f\bg\fh\ri"),
        UN("\\\\n", "\\n"),
        UN("\\\\\\\"", "\\\""),
        UN("x\\u00e9\\\\u00e9", "x\xc3\xa9\\u00e9"),
        UN("\\u00e9", "\xc3\xa9"),
        UN("\\u00E9", "\xc3\xa9"),
        UN("\\u2713", "\xe2\x9c\x93"),
        UN("\\ud83d\\ude00", "\xf0\x9f\x98\x80"),
        UN("\\uD83D\\uDE00", "\xf0\x9f\x98\x80"),
        UN("\\ud800\\udc00", "\xf0\x90\x80\x80"),
        UN("\\udbff\\udfff", "\xf4\x8f\xbf\xbf"),
        UN("a\\ud83d\\ude00b\\ud83d\\ude00", "a\xf0\x9f\x98\x80"
           "b\xf0\x9f\x98\x80"),
        UN("\\u0000", "\0"),
        UN("a\\u0000b", "a\0b"),
        UN("\\u0041", "A"),
        UN("\\u007f", "\x7f"),
        UN("\\u0080", "\xc2\x80"),
        UN("\\u07ff", "\xdf\xbf"),
        UN("\\u0800", "\xe0\xa0\x80"),
        UN("\\ud7ff", "\xed\x9f\xbf"),
        UN("\\ue000", "\xee\x80\x80"),
        UN("\\uffff", "\xef\xbf\xbf"),
        UN("\\uFfFf", "\xef\xbf\xbf"),
        UN("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80",
           "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80"),
        UN("\\u00e9\xc3\xa9\\n", "\xc3\xa9\xc3\xa9\n"),
    };

    for (i = 0; i < nelts(cases); i++) {
        c = &cases[i];

        /* exactly as long as the input: never longer, says the header */
        dst = malloc(c->len ? c->len : 1);
        if (dst == NULL) {
            ok(0, "unescape: memory");
            return;
        }

        n = cfcost_json_unescape(dst, c->src, c->len);
        n0 = cfcost_json_unescape(NULL, c->src, c->len);

        if (!ok(n == c->want_len && n0 == n && n <= c->len
                && memcmp(dst, c->want, n) == 0,
                "unescape: %s", rq_show(c->src, c->len)))
        {
            diag("%zu bytes '%s', %zu counted alone, expected %zu", n,
                 rq_show(dst, n < c->want_len ? n : c->want_len), n0,
                 c->want_len);
        }

        free(dst);
    }
}


/* ---------------------------------------------------------------------
 * The generator of request-like bodies
 */


static uint64_t
rq_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;

    return *x;
}


/* a state from the seed: neighbouring seeds far apart, never 0 */
static uint64_t
rq_seed(uint64_t seed)
{
    uint64_t  x;

    x = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;

    return x ? x : 1;
}


/* 0 to n - 1 */
static size_t
rq_rand(rq_gen_t *g, size_t n)
{
    return (size_t) (rq_next(&g->x) % n);
}

#define rq_one_in(g, n)  (rq_rand(g, n) == 0)
#define rq_pick(g, a)    ((a)[rq_rand(g, nelts(a))])


static void
rq_put(rq_gen_t *g, const char *s, size_t n)
{
    if (g->len + n > RQ_MAX) {
        g->full = 1;
        return;
    }

    memcpy(g->buf + g->len, s, n);
    g->len += n;
}


static void
rq_puts(rq_gen_t *g, const char *s)
{
    rq_put(g, s, strlen(s));
}


/* white space, none most of the time */
static void
rq_ws(rq_gen_t *g)
{
    static const char *const  ws[] = {
        " ", " ", "\n", "  ", "\t", "\r\n", "\n    ", " \t \r\n "
    };

    if (rq_one_in(g, 3)) {
        rq_puts(g, rq_pick(g, ws));
    }
}


/* code unit cp as an escape: backslash, u, 4 hex digits of either case */
static void
rq_u(rq_gen_t *g, unsigned cp)
{
    int          i;
    char         t[6];
    const char  *hex;

    hex = rq_one_in(g, 2) ? "0123456789abcdef" : "0123456789ABCDEF";
    t[0] = '\\';
    t[1] = 'u';

    for (i = 0; i < 4; i++) {
        t[2 + i] = hex[(cp >> (12 - 4 * i)) & 0xf];
    }

    rq_put(g, t, 6);
}


/* the inside of a string: text, escapes of every kind, non-ASCII */
static void
rq_text(rq_gen_t *g)
{
    size_t    i, n;
    unsigned  cp;

    static const char *const  pieces[] = {
        "a", "hello", " ", "model", "role", "\\n", "\\t", "\\\"", "\\\\",
        "\\/", "\\b", "\\f", "\\r", "\\u00e9", "\\u00E9", "\\u2713",
        "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\u0000", "\\u0041", "\\u007f",
        "\\u0080", "\\u07ff", "\\u0800", "\\uffff", "\\udbff\\udfff",
        "\xc3\xa9", "\xe2\x9c\x93", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
        "\xdf\xbf", "\xef\xbf\xbf", "{", "}", "[", "]", ",", ":", "'",
        "\\\"model\\\":", "\\\\\\\"", "\\\\u00e9"
    };

    n = rq_one_in(g, 20) ? rq_rand(g, 120) : rq_rand(g, 8);

    for (i = 0; i < n; i++) {
        switch (rq_rand(g, 10)) {

        case 0:                                /* any BMP code point */
            do {
                cp = (unsigned) rq_rand(g, 0x10000);
            } while (cp >= 0xd800 && cp <= 0xdfff);

            rq_u(g, cp);
            break;

        case 1:                                /* any pair */
            rq_u(g, 0xd800 + (unsigned) rq_rand(g, 0x400));
            rq_u(g, 0xdc00 + (unsigned) rq_rand(g, 0x400));
            break;

        default:
            rq_puts(g, rq_pick(g, pieces));
            break;
        }
    }
}


static void
rq_string(rq_gen_t *g)
{
    rq_puts(g, "\"");
    rq_text(g);
    rq_puts(g, "\"");
}


/* s as a string literal, its letters escaped now and then */
static void
rq_escaped(rq_gen_t *g, const char *s)
{
    int  esc;

    esc = rq_one_in(g, 4);
    rq_puts(g, "\"");

    for ( /* void */ ; *s; s++) {
        if (esc && rq_one_in(g, 2)) {
            if (*s == '/' && rq_one_in(g, 2)) {
                rq_puts(g, "\\/");

            } else {
                rq_u(g, (unsigned char) *s);
            }

        } else {
            rq_put(g, s, 1);
        }
    }

    rq_puts(g, "\"");
}


static void rq_value(rq_gen_t *g, unsigned depth);
static void rq_kind(rq_gen_t *g, int kind, unsigned depth);


/* an object of the members m[0..n), in a random order */
static void
rq_object(rq_gen_t *g, rq_member_t *m, size_t n, unsigned depth)
{
    size_t       i, k;
    rq_member_t  t;

    for (i = n; i > 1; i--) {
        k = rq_rand(g, i);
        t = m[i - 1];
        m[i - 1] = m[k];
        m[k] = t;
    }

    rq_puts(g, "{");
    rq_ws(g);

    for (i = 0; i < n; i++) {
        if (i > 0) {
            rq_puts(g, ",");
            rq_ws(g);
        }

        if (m[i].key != NULL) {
            rq_escaped(g, m[i].key);

        } else {
            rq_string(g);
        }

        rq_ws(g);
        rq_puts(g, ":");
        rq_ws(g);
        rq_kind(g, m[i].kind, depth + 1);
        rq_ws(g);
    }

    rq_puts(g, "}");
}


/* a value levels deep in brackets or in objects named like ours */
static void
rq_deep(rq_gen_t *g, unsigned depth)
{
    size_t       i, levels;
    const char  *open;

    static const char *const  opens[] = {
        "[", "{\"model\":", "{\"messages\":", "{\"role\":\"u\",\"content\":"
    };

    /* around the limit a quarter of the time: 511, 512 or 513 deep */
    levels = rq_one_in(g, 4) ? CFCOST_JSON_DEPTH - depth - 1 + rq_rand(g, 3)
                             : 1 + rq_rand(g, 60);
    open = rq_pick(g, opens);
    g->deep |= (levels > 400);

    for (i = 0; i < levels; i++) {
        rq_puts(g, open);
    }

    rq_puts(g, "1");

    for (i = 0; i < levels; i++) {
        rq_puts(g, open[0] == '[' ? "]" : "}");
    }
}


static void
rq_number(rq_gen_t *g)
{
    static const char *const  numbers[] = {
        "0", "-0", "1", "-1", "42", "3.25", "-0.5", "1e3", "1E+2", "2.5e-3",
        "0.1", "1e-300", "9007199254740993", "9223372036854775807",
        "-9223372036854775808"
    };

    static const char *const  big[] = {
        "9223372036854775808", "-9223372036854775809",
        "123456789012345678901234567890", "1e400", "-1.5E+999"
    };

    rq_puts(g, rq_one_in(g, 40) ? rq_pick(g, big) : rq_pick(g, numbers));
}


static void
rq_message(rq_gen_t *g, unsigned depth)
{
    size_t       n, k;
    rq_member_t  m[16];

    static const char *const  extras[] = {
        "name", "x", "tool_call_id", "model", "Role", "contents", "role ",
        "include_usage", "messages"
    };

    if (rq_one_in(g, 12)) {
        rq_value(g, depth);
        return;
    }

    n = 0;

    if (!rq_one_in(g, 15)) {
        m[n].key = "role";
        m[n++].kind = RQ_V_ROLE;
    }

    if (!rq_one_in(g, 15)) {
        m[n].key = "content";
        m[n++].kind = RQ_V_CONTENT;
    }

    if (rq_one_in(g, 50)) {
        m[n].key = "role";
        m[n++].kind = RQ_V_ROLE;
    }

    if (rq_one_in(g, 50)) {
        m[n].key = "content";
        m[n++].kind = RQ_V_CONTENT;
    }

    for (k = rq_one_in(g, 3) ? rq_rand(g, 4) : 0; k > 0; k--) {
        m[n].key = rq_pick(g, extras);
        m[n++].kind = RQ_V_ANY;
    }

    if (rq_one_in(g, 10)) {                    /* not ours, given twice */
        m[n].key = "x";
        m[n++].kind = RQ_V_ANY;
        m[n].key = "x";
        m[n++].kind = RQ_V_ANY;
    }

    rq_object(g, m, n, depth);
}


static void
rq_messages(rq_gen_t *g, unsigned depth)
{
    size_t  i, n;

    n = rq_one_in(g, 30) ? rq_rand(g, 40) : rq_rand(g, 5);

    rq_puts(g, "[");
    rq_ws(g);

    for (i = 0; i < n; i++) {
        if (i > 0) {
            rq_puts(g, ",");
            rq_ws(g);
        }

        rq_message(g, depth + 1);
        rq_ws(g);
    }

    rq_puts(g, "]");
}


static void
rq_options(rq_gen_t *g, unsigned depth)
{
    size_t       n, k;
    rq_member_t  m[8];

    static const char *const  extras[] = {
        "x", "continuous_usage_stats", "model", "role", "include_usage_"
    };

    n = 0;

    if (!rq_one_in(g, 5)) {
        m[n].key = "include_usage";
        m[n++].kind = RQ_V_USAGE;
    }

    if (rq_one_in(g, 30)) {
        m[n].key = "include_usage";
        m[n++].kind = RQ_V_USAGE;
    }

    for (k = rq_rand(g, 3); k > 0; k--) {
        m[n].key = rq_pick(g, extras);
        m[n++].kind = RQ_V_ANY;
    }

    rq_object(g, m, n, depth);
}


/* any value; what is deep enough gets no more containers */
static void
rq_value(rq_gen_t *g, unsigned depth)
{
    size_t       i, n;
    rq_member_t  m[4];

    static const char *const  literals[] = { "true", "false", "null" };
    static const char *const  keys[] = {
        "a", "x", "", "role", "content", "model", "messages", "prompt",
        "stream", "stream_options", "include_usage"
    };

    switch (rq_rand(g, depth > 5 ? 4 : 9)) {

    case 0:
    case 1:
        rq_string(g);
        break;

    case 2:
        rq_number(g);
        break;

    case 3:
        rq_puts(g, rq_pick(g, literals));
        break;

    case 4:
    case 5:
        n = rq_rand(g, 4);
        rq_puts(g, "[");

        for (i = 0; i < n; i++) {
            if (i > 0) {
                rq_puts(g, ",");
            }

            rq_ws(g);
            rq_value(g, depth + 1);
        }

        rq_puts(g, "]");
        break;

    case 6:
        n = rq_rand(g, 4);

        for (i = 0; i < n; i++) {
            m[i].key = rq_one_in(g, 20) ? NULL : rq_pick(g, keys);
            m[i].kind = RQ_V_ANY;
        }

        rq_object(g, m, n, depth);
        break;

    case 7:
        rq_message(g, depth);
        break;

    default:
        if (rq_one_in(g, 10)) {
            rq_deep(g, depth);

        } else {
            rq_options(g, depth);
        }

        break;
    }
}


/* a value of its kind mostly, any value now and then */
static void
rq_kind(rq_gen_t *g, int kind, unsigned depth)
{
    static const char *const  models[] = {
        "@cf/meta/llama-3.1-8b-instruct", "@cf/qwen/qwen1.5-0.5b-chat",
        "gpt-4o", "m", ""
    };
    static const char *const  roles[] = {
        "user", "system", "assistant", "tool"
    };
    static const char *const  bools[] = { "true", "false" };

    switch (kind) {

    case RQ_V_MODEL:
        if (rq_one_in(g, 10)) {
            rq_value(g, depth);

        } else if (rq_one_in(g, 4)) {
            rq_string(g);

        } else {
            rq_escaped(g, rq_pick(g, models));
        }

        break;

    case RQ_V_MESSAGES:
        if (rq_one_in(g, 10)) {
            rq_value(g, depth);

        } else {
            rq_messages(g, depth);
        }

        break;

    case RQ_V_PROMPT:
    case RQ_V_CONTENT:
        if (rq_one_in(g, 6)) {
            rq_value(g, depth);

        } else {
            rq_string(g);
        }

        break;

    case RQ_V_ROLE:
        if (rq_one_in(g, 10)) {
            rq_value(g, depth);

        } else {
            rq_escaped(g, rq_pick(g, roles));
        }

        break;

    case RQ_V_STREAM:
    case RQ_V_USAGE:
        if (rq_one_in(g, 6)) {
            rq_value(g, depth);

        } else {
            rq_puts(g, rq_pick(g, bools));
        }

        break;

    case RQ_V_OPTIONS:
        if (rq_one_in(g, 6)) {
            rq_value(g, depth);

        } else {
            rq_options(g, depth);
        }

        break;

    default:
        rq_value(g, depth);
        break;
    }
}


/* a request body, an object most of the time */
static void
rq_request(rq_gen_t *g)
{
    size_t       i, n, k;
    rq_member_t  m[24];

    static const int  kinds[RQ_TOP] = {
        RQ_V_MODEL, RQ_V_MESSAGES, RQ_V_PROMPT, RQ_V_STREAM, RQ_V_OPTIONS
    };
    static const size_t  odds[RQ_TOP] = { 8, 4, 2, 2, 3 };  /* absent: 1
                                                              in odds */
    static const char *const  extras[] = {
        "temperature", "max_tokens", "top_p", "n", "x", "metadata", "tools",
        "user", "role", "content", "include_usage", "modelx", "mode",
        "Model", "stream_options_", "message"
    };

    g->len = 0;
    g->full = 0;
    g->deep = 0;
    rq_ws(g);

    if (rq_one_in(g, 25)) {
        rq_value(g, 0);
        rq_ws(g);
        return;
    }

    n = 0;

    for (i = 0; i < RQ_TOP; i++) {
        if (!rq_one_in(g, odds[i])) {
            m[n].key = rq_names[i];
            m[n++].kind = kinds[i];
        }

        if (rq_one_in(g, 60)) {
            m[n].key = rq_names[i];
            m[n++].kind = kinds[i];
        }
    }

    for (k = rq_rand(g, 5); k > 0; k--) {
        m[n].key = rq_pick(g, extras);
        m[n++].kind = RQ_V_ANY;
    }

    if (rq_one_in(g, 8)) {
        m[n].key = "temperature";
        m[n++].kind = RQ_V_ANY;
        m[n].key = "temperature";
        m[n++].kind = RQ_V_ANY;
    }

    if (rq_one_in(g, 30)) {
        m[n].key = NULL;
        m[n++].kind = RQ_V_ANY;
    }

    rq_object(g, m, n, 0);
    rq_ws(g);
}


/* a byte-level change, or a member of ours put in an object */
static void
rq_mutate(rq_gen_t *g)
{
    size_t       at, k, i;
    const char  *w;

    static const unsigned char  bytes[] = {
        '"', '\\', '{', '}', '[', ']', ',', ':', ' ', '\n', '0', '1', 'e',
        '-', 'u', 't', 'n', 0x00, 0x1f, 0x7f, 0x80, 0xbf, 0xc3, 0xa9, 0xed,
        0xf0, 0xff
    };
    static const char *const  members[] = {
        "\"model\":1,", "\"model\":\"m\",", "\"\\u006dodel\":\"m\",",
        "\"role\":\"u\",", "\"content\":\"c\",", "\"include_usage\":true,",
        "\"messages\":[],", "\"stream\":true,", "\"prompt\":\"p\",",
        "\"stream_options\":{},", "\"x\":1,"
    };

    if (g->len + 32 > sizeof(g->buf)) {
        return;
    }

    at = rq_rand(g, g->len + 1);

    switch (rq_rand(g, 8)) {

    case 0:                                    /* a byte set */
        if (at < g->len) {
            g->buf[at] = (char) rq_pick(g, bytes);
        }
        break;

    case 1:                                    /* a bit flipped */
        if (at < g->len) {
            g->buf[at] ^= (char) (1 << rq_rand(g, 8));
        }
        break;

    case 2:                                    /* a byte put in */
        memmove(g->buf + at + 1, g->buf + at, g->len - at);
        g->buf[at] = (char) rq_pick(g, bytes);
        g->len++;
        break;

    case 3:                                    /* a few bytes taken out */
        k = 1 + rq_rand(g, 4);
        k = (k < g->len - at) ? k : g->len - at;
        memmove(g->buf + at, g->buf + at + k, g->len - at - k);
        g->len -= k;
        break;

    case 4:                                    /* cut short */
        g->len = at;
        break;

    case 5:                                    /* a few bytes repeated */
        k = 1 + rq_rand(g, 8);
        k = (k < g->len - at) ? k : g->len - at;
        memmove(g->buf + at + k, g->buf + at, g->len - at);
        g->len += k;
        break;

    default:                                   /* a member after a '{' */
        for (i = 0; i < g->len && g->buf[(at + i) % g->len] != '{'; i++) {
            /* void */
        }

        if (i == g->len) {
            break;
        }

        at = (at + i) % g->len + 1;
        w = rq_pick(g, members);
        k = strlen(w);

        /* no comma before the end of an empty object */
        for (i = at; i < g->len && strchr(" \t\r\n", g->buf[i])
                     && g->buf[i]; i++)
        {
            /* void */
        }

        if (i < g->len && g->buf[i] == '}') {
            k--;
        }

        memmove(g->buf + at + k, g->buf + at, g->len - at);
        memcpy(g->buf + at, w, k);
        g->len += k;
        break;
    }
}


/* ---------------------------------------------------------------------
 * The reference walk: apart from cfcost_json.c, over a text both jansson
 * and cfcost_json_valid() accept, keys decoded by jansson
 */


static size_t
rq_ref_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n'
                     || s[i] == '\r'))
    {
        i++;
    }

    return i;
}


/* past the value at s[i]; n rather than past the end */
static size_t
rq_ref_end(const char *s, size_t n, size_t i)
{
    char    close;
    size_t  j;

    if (i >= n) {
        return n;
    }

    if (s[i] == '"') {
        for (i++; i < n && s[i] != '"'; i++) {
            if (s[i] == '\\') {
                i++;
            }
        }

        return (i < n) ? i + 1 : n;
    }

    if (s[i] != '{' && s[i] != '[') {
        for (j = i; j < n && s[j] != '\0'
                    && strchr("+-.0123456789Eaeflnrstu", s[j]) != NULL; j++)
        {
            /* void */
        }

        return (j > i) ? j : n;                /* no progress: give up */
    }

    close = (s[i] == '{') ? '}' : ']';
    i = rq_ref_ws(s, n, i + 1);

    while (i < n && s[i] != close) {
        if (close == '}') {
            i = rq_ref_ws(s, n, rq_ref_end(s, n, i)) + 1;     /* ':' */
            i = rq_ref_ws(s, n, i);
        }

        i = rq_ref_ws(s, n, rq_ref_end(s, n, i));

        if (i < n && s[i] == ',') {
            i = rq_ref_ws(s, n, i + 1);
        }
    }

    return (i < n) ? i + 1 : n;
}


/*
 * The next member of the object at *i (its first member or '}'): which of
 * rq_names[from..to) its key is as jansson decodes it (-1 for none), and
 * its value's span; *i goes past it and its comma.  0 at the end.
 */
static int
rq_ref_member(const char *s, size_t n, size_t *i, int from, int to,
    int *name, cfcost_span_t *v)
{
    int           k;
    size_t        ks, ke;
    json_t       *key;
    json_error_t  err;

    if (*i >= n || s[*i] != '"') {
        return 0;
    }

    ks = *i;
    ke = rq_ref_end(s, n, ks);
    v->start = rq_ref_ws(s, n, rq_ref_ws(s, n, ke) + 1);
    v->end = rq_ref_end(s, n, v->start);

    *i = rq_ref_ws(s, n, v->end);
    if (*i < n && s[*i] == ',') {
        *i = rq_ref_ws(s, n, *i + 1);
    }

    key = json_loadb(s + ks, ke - ks, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                     &err);
    *name = -1;

    for (k = from; json_is_string(key) && k < to; k++) {
        if (json_string_length(key) == strlen(rq_names[k])
            && memcmp(json_string_value(key), rq_names[k],
                      json_string_length(key)) == 0)
        {
            *name = k;
        }
    }

    json_decref(key);

    return 1;
}


/* the names of rq_names[from..to) given twice in the object at s[at] */
static unsigned
rq_ref_twice(const char *s, size_t n, size_t at, int from, int to,
    cfcost_span_t *first)
{
    int            k;
    size_t         i;
    unsigned       twice, seen;
    cfcost_span_t  v;

    twice = 0;
    seen = 0;
    i = rq_ref_ws(s, n, at + 1);

    while (rq_ref_member(s, n, &i, from, to, &k, &v)) {
        if (k < 0) {
            continue;
        }

        if (seen & (1u << k)) {
            twice |= 1u << k;

        } else if (first != NULL) {
            first[k] = v;
        }

        seen |= 1u << k;
    }

    return twice;
}


/* the spans of the top object at s[at], and every name given twice */
static void
rq_ref_read(const char *s, size_t n, size_t at, rq_ref_t *ref)
{
    int            k, options;
    size_t         i, e, j;
    cfcost_span_t  v, iu[RQ_NAMES];

    memset(ref, 0, sizeof(rq_ref_t));
    options = 0;
    i = rq_ref_ws(s, n, at + 1);

    while (rq_ref_member(s, n, &i, RQ_MODEL, RQ_TOP, &k, &v)) {
        if (k < 0) {
            continue;
        }

        if (ref->count[k]++ == 0) {
            ref->span[k] = v;

        } else {
            ref->twice |= 1u << k;
        }

        /* every messages and stream_options is read for names twice */
        if (k == RQ_MESSAGES && s[v.start] == '[') {
            j = rq_ref_ws(s, n, v.start + 1);

            while (j < n && s[j] != ']') {
                e = rq_ref_end(s, n, j);

                if (s[j] == '{') {
                    ref->twice |= rq_ref_twice(s, n, j, RQ_ROLE,
                                               RQ_CONTENT + 1, NULL);
                }

                j = rq_ref_ws(s, n, e);
                if (j < n && s[j] == ',') {
                    j = rq_ref_ws(s, n, j + 1);
                }
            }
        }

        if (k == RQ_STREAM_OPTIONS && s[v.start] == '{') {
            memset(iu, 0, sizeof(iu));
            ref->twice |= rq_ref_twice(s, n, v.start, RQ_INCLUDE_USAGE,
                                       RQ_INCLUDE_USAGE + 1, iu);

            if (options++ == 0) {
                ref->span[RQ_INCLUDE_USAGE] = iu[RQ_INCLUDE_USAGE];
            }
        }
    }
}


/* ---------------------------------------------------------------------
 * The differential check
 */


/* span s of the text is jansson's value want: the same span as the
   reference walk found, and the same value */
static const char *
rq_same(const char *s, size_t n, cfcost_span_t got, cfcost_span_t ref,
    json_t *want, size_t flags, const char *name)
{
    int           eq;
    json_t       *j;
    json_error_t  err;

    if ((want != NULL) != (got.end != 0)) {
        return rq_fail("%s: %s in jansson's tree, span [%zu,%zu)", name,
                       want ? "present" : "absent", got.start, got.end);
    }

    if (want == NULL) {
        return NULL;
    }

    if (got.start >= got.end || got.end > n) {
        return rq_fail("%s: span [%zu,%zu) of %zu bytes", name, got.start,
                       got.end, n);
    }

    if (got.start != ref.start || got.end != ref.end) {
        return rq_fail("%s: span [%zu,%zu), the value is at [%zu,%zu)",
                       name, got.start, got.end, ref.start, ref.end);
    }

    j = json_loadb(s + got.start, got.end - got.start,
                   flags | JSON_DECODE_ANY, &err);
    eq = json_equal(j, want);
    json_decref(j);

    if (!eq) {
        return rq_fail("%s: '%.*s' is not jansson's value", name,
                       (int) (got.end - got.start), s + got.start);
    }

    return NULL;
}


/* a string's span decodes to jansson's string */
static const char *
rq_same_string(const char *s, cfcost_span_t sp, json_t *want,
    const char *name)
{
    char        *d;
    size_t       len, n, n0;
    const char  *why;

    len = sp.end - sp.start - 2;
    d = malloc(len ? len : 1);
    if (d == NULL) {
        return "out of memory";
    }

    n = cfcost_json_unescape(d, s + sp.start + 1, len);
    n0 = cfcost_json_unescape(NULL, s + sp.start + 1, len);

    why = NULL;

    if (n != json_string_length(want) || n0 != n || n > len
        || memcmp(d, json_string_value(want), n) != 0)
    {
        why = rq_fail("%s: unescaped to %zu bytes ('%s'; %zu alone), "
                      "jansson reads %zu", name, n, rq_show(d, n), n0,
                      json_string_length(want));
    }

    free(d);

    return why;
}


/* what jansson's tree says of the messages, and of the prompt's bytes */
static const char *
rq_check_messages(json_t *root, const cfcost_request_t *r)
{
    size_t   i, n, bad, bytes;
    json_t  *msgs, *m, *c, *p;

    msgs = json_object_get(root, "messages");
    n = 0;
    bad = 0;
    bytes = 0;

    if (json_is_array(msgs)) {
        n = json_array_size(msgs);
        bad = n;
        rq_stats.messages_array++;

        for (i = 0; i < n; i++) {
            m = json_array_get(msgs, i);
            c = json_object_get(m, "content");

            if (json_is_object(m) && json_is_string(json_object_get(m, "role"))
                && c != NULL)
            {
                bytes += json_is_string(c) ? json_string_length(c) : 0;

            } else if (bad == n) {
                bad = i;
            }
        }

        rq_stats.message_bad += (bad < n);
    }

    p = json_object_get(root, "prompt");
    bytes += json_is_string(p) ? json_string_length(p) : 0;
    rq_stats.prompt_bytes += (bytes > 0);

    if (r->messages_n != n || r->message_bad != bad) {
        return rq_fail("messages: %zu, the first bad %zu; jansson: %zu, %zu",
                       r->messages_n, r->message_bad, n, bad);
    }

    if (r->prompt_bytes != bytes) {
        return rq_fail("prompt_bytes %zu, jansson: %zu", r->prompt_bytes,
                       bytes);
    }

    return NULL;
}


/* the body without the model member: the rest, and the same reading */
static const char *
rq_check_cut(const char *s, size_t n, json_t *root, size_t flags,
    const cfcost_request_t *r)
{
    int               rc, eq;
    char             *t;
    size_t            tn;
    json_t           *j;
    const char       *why;
    json_error_t      err;
    cfcost_request_t  r2;

    if (r->model.end == 0) {
        return (r->model_cut.end == 0) ? NULL
               : rq_fail("model_cut [%zu,%zu) without a model",
                         r->model_cut.start, r->model_cut.end);
    }

    if (r->model_cut.start >= r->model.start
        || r->model_cut.end < r->model.end || r->model_cut.end > n)
    {
        return rq_fail("model_cut [%zu,%zu) for a model at [%zu,%zu)",
                       r->model_cut.start, r->model_cut.end, r->model.start,
                       r->model.end);
    }

    rq_stats.cut++;

    t = rq_cut(s, n, r->model_cut, &tn);
    if (t == NULL) {
        return "out of memory";
    }

    why = NULL;
    j = NULL;

    if (cfcost_json_valid(t, tn) != 0) {
        why = "model cut: not valid JSON";
        goto done;
    }

    /* root is read no more: its model goes */
    j = json_loadb(t, tn, flags, &err);
    json_object_del(root, "model");
    eq = json_equal(j, root);

    if (!eq) {
        why = rq_fail("model cut: jansson reads another object (%s)",
                      j ? "" : err.text);
        goto done;
    }

    rc = cfcost_request_read(t, tn, &r2);

    if (rc != CFCOST_REQUEST_OK || r2.model.end != 0
        || r2.model_cut.end != 0 || r2.messages_n != r->messages_n
        || r2.message_bad != r->message_bad
        || r2.prompt_bytes != r->prompt_bytes
        || (r2.stream.end - r2.stream.start) != (r->stream.end
                                                 - r->stream.start)
        || (r2.include_usage.end - r2.include_usage.start)
           != (r->include_usage.end - r->include_usage.start))
    {
        why = rq_fail("model cut: read again, %s, model end %zu, messages "
                      "%zu/%zu bad %zu/%zu bytes %zu/%zu", rq_rc_name(rc),
                      r2.model.end, r2.messages_n, r->messages_n,
                      r2.message_bad, r->message_bad, r2.prompt_bytes,
                      r->prompt_bytes);
    }

done:

    json_decref(j);
    free(t);

    return why;
}


/* a reading of OK against jansson's tree and the reference walk */
static const char *
rq_check_ok(const char *s, size_t n, json_t *root, size_t flags,
    const rq_ref_t *ref, const cfcost_request_t *r)
{
    int                   k, is_true;
    json_t               *v, *so;
    const char           *why;
    const cfcost_span_t  *sp[RQ_TOP];

    sp[RQ_MODEL] = &r->model;
    sp[RQ_MESSAGES] = &r->messages;
    sp[RQ_PROMPT] = &r->prompt;
    sp[RQ_STREAM] = &r->stream;
    sp[RQ_STREAM_OPTIONS] = &r->stream_options;

    if (r->twice != NULL) {
        return rq_fail("OK, yet twice is \"%s\"", r->twice);
    }

    for (k = 0; k < RQ_TOP; k++) {
        why = rq_same(s, n, *sp[k], ref->span[k],
                      json_object_get(root, rq_names[k]), flags,
                      rq_names[k]);
        if (why) {
            return why;
        }
    }

    v = json_object_get(root, "model");
    if (json_is_string(v)) {
        rq_stats.model_string++;
        why = rq_same_string(s, r->model, v, "model");
        if (why) {
            return why;
        }
    }

    why = rq_check_messages(root, r);
    if (why) {
        return why;
    }

    v = json_object_get(root, "stream");
    is_true = (r->stream.end - r->stream.start == 4
               && memcmp(s + r->stream.start, "true", 4) == 0);

    if (is_true != json_is_true(v)) {
        return rq_fail("stream: 'true' %d, jansson true %d", is_true,
                       json_is_true(v));
    }

    so = json_object_get(root, "stream_options");

    if (json_is_object(so)) {
        v = json_object_get(so, "include_usage");
        rq_stats.include_usage += (v != NULL);

        why = rq_same(s, n, r->include_usage, ref->span[RQ_INCLUDE_USAGE], v,
                      flags, "include_usage");
        if (why) {
            return why;
        }

        is_true = (r->include_usage.end - r->include_usage.start == 4
                   && memcmp(s + r->include_usage.start, "true", 4) == 0);

        if (is_true != json_is_true(v)) {
            return rq_fail("include_usage: 'true' %d, jansson true %d",
                           is_true, json_is_true(v));
        }

    } else if (r->include_usage.end != 0) {
        return rq_fail("include_usage [%zu,%zu) without stream_options "
                       "an object", r->include_usage.start,
                       r->include_usage.end);
    }

    return rq_check_cut(s, n, root, flags, r);
}


/* the names in bits, for a message */
static const char *
rq_bits(unsigned bits)
{
    int          k;
    size_t       o;
    static char  out[128];

    out[0] = '\0';

    for (o = 0, k = 0; k < RQ_NAMES; k++) {
        if (bits & (1u << k)) {
            o += snprintf(out + o, sizeof(out) - o, "%s%s", o ? "," : "",
                          rq_names[k]);
        }
    }

    return o ? out : "none";
}


/*
 * Checks the body s[0..n) (a buffer of exactly n bytes, so that a read
 * past it is the sanitizer's to see).  NULL when all is well, else what
 * went wrong (a static buffer).
 */
static const char *
rq_check(const char *s, size_t n)
{
    int               rc, valid, k;
    size_t            flags;
    json_t           *root, *dup;
    rq_ref_t          ref;
    const char       *why;
    json_error_t      err;
    cfcost_request_t  r, r2;

    valid = (cfcost_json_valid(s, n) == 0);
    rc = cfcost_request_read(s, n, &r);

    if (cfcost_request_read(s, n, &r2) != rc
        || memcmp(&r, &r2, sizeof(cfcost_request_t)) != 0)
    {
        return "two readings differ";
    }

    if (!valid || rc == CFCOST_REQUEST_INVALID) {
        if (valid || rc != CFCOST_REQUEST_INVALID) {
            return rq_fail("%s for a text cfcost_json_valid() calls %s",
                           rq_rc_name(rc), valid ? "valid" : "invalid");
        }

        rq_stats.rc_invalid++;
        return NULL;
    }

    flags = JSON_ALLOW_NUL;
    root = json_loadb(s, n, flags | JSON_DECODE_ANY, &err);

    if (root == NULL && json_error_code(&err) == json_error_numeric_overflow) {
        flags |= JSON_DECODE_INT_AS_REAL;
        root = json_loadb(s, n, flags | JSON_DECODE_ANY, &err);
    }

    if (root == NULL) {
        switch (json_error_code(&err)) {

        case json_error_numeric_overflow:
            rq_stats.big_number++;
            return NULL;

        case json_error_null_byte_in_key:
            rq_stats.nul_key++;
            return NULL;

        default:
            return rq_fail("valid, read %s, jansson refuses it: %s",
                           rq_rc_name(rc), err.text);
        }
    }

    why = NULL;

    if (rc == CFCOST_REQUEST_NOT_OBJECT || !json_is_object(root)) {
        if (rc != CFCOST_REQUEST_NOT_OBJECT || json_is_object(root)) {
            why = rq_fail("%s, jansson reads %s an object", rq_rc_name(rc),
                          json_is_object(root) ? "" : "no");
        }

        rq_stats.rc_not_object++;
        goto done;
    }

    rq_ref_read(s, n, rq_ref_ws(s, n, 0), &ref);

    if (rc == CFCOST_REQUEST_TWICE) {
        rq_stats.rc_twice++;

        for (k = 0; k < RQ_NAMES; k++) {
            if (r.twice != NULL && strcmp(r.twice, rq_names[k]) == 0) {
                break;
            }
        }

        if (k == RQ_NAMES || !(ref.twice & (1u << k))) {
            why = rq_fail("TWICE, \"%s\"; given twice: %s",
                          r.twice ? r.twice : "NULL", rq_bits(ref.twice));
            goto done;
        }

        rq_stats.twice_nested += (k >= RQ_TOP);

        /* and jansson finds a key twice too */
        dup = json_loadb(s, n, flags | JSON_REJECT_DUPLICATES, &err);
        if (dup != NULL
            || json_error_code(&err) != json_error_duplicate_key)
        {
            why = rq_fail("TWICE, \"%s\"; jansson finds no key twice (%s)",
                          r.twice, dup ? "" : err.text);
        }

        json_decref(dup);
        goto done;
    }

    rq_stats.rc_ok++;

    if (ref.twice != 0) {
        why = rq_fail("OK, yet given twice: %s", rq_bits(ref.twice));
        goto done;
    }

    dup = json_loadb(s, n, flags | JSON_REJECT_DUPLICATES, &err);
    rq_stats.twice_other += (dup == NULL);
    json_decref(dup);

    why = rq_check_ok(s, n, root, flags, &ref, &r);

done:

    json_decref(root);

    return why;
}


/* random string literals decoded, against jansson */
static void
test_unescape_random(uint64_t seed, unsigned long runs)
{
    char           *d;
    size_t          len, n, n0;
    json_t         *j;
    rq_gen_t       *g;
    unsigned long   run, bad;
    json_error_t    err;

    g = malloc(sizeof(rq_gen_t));
    if (g == NULL) {
        ok(0, "unescape: memory");
        return;
    }

    g->x = rq_seed(seed);

    for (bad = 0, run = 0; run < runs; run++) {
        g->len = 0;
        g->full = 0;
        rq_string(g);

        len = g->len - 2;
        d = malloc(len ? len : 1);
        if (d == NULL) {
            break;
        }

        n = cfcost_json_unescape(d, g->buf + 1, len);
        n0 = cfcost_json_unescape(NULL, g->buf + 1, len);
        j = json_loadb(g->buf, g->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       &err);

        if (!json_is_string(j) || n != json_string_length(j) || n0 != n
            || n > len || memcmp(d, json_string_value(j), n) != 0)
        {
            if (bad++ == 0) {
                diag("unescape: %zu bytes (%zu alone), jansson %zu",
                     n, n0, j ? json_string_length(j) : 0);
                rq_dump(g->buf, g->len);
            }
        }

        json_decref(j);
        free(d);
    }

    ok(bad == 0 && run == runs, "unescape: %lu random literals decode as "
       "jansson decodes them", run);

    free(g);
}


static unsigned long
rq_env(const char *name, unsigned long dflt)
{
    char           *end;
    const char     *v;
    unsigned long   n;

    v = getenv(name);
    if (v == NULL || *v == '\0') {
        return dflt;
    }

    n = strtoul(v, &end, 10);

    return (*end == '\0') ? n : dflt;
}


static void
test_differential(uint64_t seed, unsigned long runs)
{
    char           *body;
    size_t          k;
    rq_gen_t       *g;
    const char     *why;
    unsigned long   run;

    g = malloc(sizeof(rq_gen_t));
    if (g == NULL) {
        ok(0, "differential: memory");
        return;
    }

    memset(&rq_stats, 0, sizeof(rq_stats_t));
    g->x = rq_seed(seed);
    why = NULL;
    body = NULL;

    for (run = 0; run < runs; run++) {
        rq_request(g);

        if (g->full) {
            rq_stats.full++;
            continue;
        }

        /* a third are mutants: 1 to 3 changes */
        if (rq_one_in(g, 3)) {
            rq_stats.mutants++;

            for (k = 1 + rq_rand(g, 3); k > 0; k--) {
                rq_mutate(g);
            }
        }

        rq_stats.bodies++;
        rq_stats.bytes += g->len;
        rq_stats.deep += g->deep;

        /* exactly as long as the body */
        body = malloc(g->len ? g->len : 1);
        if (body == NULL) {
            why = "out of memory";
            break;
        }

        memcpy(body, g->buf, g->len);

        why = rq_check(body, g->len);
        if (why != NULL) {
            break;
        }

        free(body);
        body = NULL;
    }

    if (!ok(why == NULL, "differential: %lu bodies (seed %llu) read as "
            "jansson reads them", run, (unsigned long long) seed))
    {
        diag("body %lu: %s", run, why);
        rq_dump(g->buf, g->len);
    }

    free(body);

    diag("%lu bodies (%lu mutants, %lu bytes on average, %lu nested "
         "near the limit): %lu OK, %lu INVALID, %lu NOT_OBJECT, "
         "%lu TWICE (%lu in a message or stream_options); %lu OK with "
         "another key twice; skipped %lu big numbers, %lu NUL in a key, "
         "%lu too long; %lu models strings, %lu messages arrays (%lu with "
         "a bad one), %lu with prompt bytes, %lu include_usage, %lu cuts",
         rq_stats.bodies, rq_stats.mutants,
         rq_stats.bytes / (rq_stats.bodies ? rq_stats.bodies : 1),
         rq_stats.deep, rq_stats.rc_ok,
         rq_stats.rc_invalid, rq_stats.rc_not_object, rq_stats.rc_twice,
         rq_stats.twice_nested, rq_stats.twice_other, rq_stats.big_number,
         rq_stats.nul_key, rq_stats.full, rq_stats.model_string,
         rq_stats.messages_array, rq_stats.message_bad,
         rq_stats.prompt_bytes, rq_stats.include_usage, rq_stats.cut);

    if (why == NULL && runs >= 5000) {
        ok(rq_stats.rc_ok > runs / 3 && rq_stats.rc_invalid > runs / 10
           && rq_stats.rc_not_object > runs / 100
           && rq_stats.rc_twice > runs / 50
           && rq_stats.twice_nested > runs / 500
           && rq_stats.twice_other > runs / 20
           && rq_stats.message_bad > runs / 50
           && rq_stats.prompt_bytes > runs / 5
           && rq_stats.include_usage > runs / 20
           && rq_stats.cut > runs / 4
           && rq_stats.big_number + rq_stats.nul_key < runs / 20
           && rq_stats.full < runs / 100,
           "differential: the bodies reach every reading");
    }

    free(g);
}


int
main(void)
{
    uint64_t       seed;
    unsigned long  runs;

    test_codes();
    test_spans();
    test_keys();
    test_cut();
    test_twice();
    test_messages();
    test_prompt_bytes();
    test_include_usage();
    test_deep();
    test_unescape();

    runs = rq_env("CFCOST_REQUEST_RUNS", 20000);
    seed = rq_env("CFCOST_REQUEST_SEED", 20260101);

    test_unescape_random(seed, runs);
    test_differential(seed, runs);

    return done_testing();
}
