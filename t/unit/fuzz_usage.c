/*
 * A fuzz target for what reads Workers AI's answers, raw upstream bytes:
 * the usage scanner and parser (common/cfcost_usage.c), the validator
 * and the string quoting the module copies upstream text through
 * (common/cfcost_json.c), and the estimator's text counter
 * (common/cfcost_estimate.c).  Each input is checked for:
 *
 *   - determinism: every reader gives the same answer twice;
 *   - ranges: a usage is unknown (all counts 0) or every count is at most
 *     CFCOST_USAGE_MAX with cached <= input, never both usable and
 *     unusable; neurons are a finite number >= 0; a request's max_tokens
 *     is at most CFCOST_USAGE_MAX; the error detail is a C string inside
 *     its buffer;
 *   - one reading: on valid JSON, cfcost_reply_scan()'s fast reading, when
 *     it gives one, is cfcost_reply_parse()'s (success, counts, neurons,
 *     the text: the literal it points at decodes to the parser's string);
 *     cfcost_json_locate() finds the value jansson reads at that path
 *     (json_equal), or says it is absent when jansson has none, or that
 *     it cannot tell when a key is written with an escape;
 *     cfcost_usage_locate() gives the usage object the parser billed;
 *   - output: what the module copies from upstream into a response is
 *     valid JSON (cfcost_json_valid()) in valid UTF-8 (checked again by an
 *     independent decoder here): the response text (the scanned literal,
 *     the parsed string quoted, or a non-string dumped), the error detail
 *     quoted (and the detail itself valid UTF-8), any located object with
 *     "cost_usd" inserted the module's way, a request with "model" cut;
 *     cfcost_json_quote() of any bytes at all, which reads back as the
 *     same bytes when they were valid UTF-8;
 *   - the validator: what it accepts is valid UTF-8 (the decoder here);
 *   - the estimator: fed whole, in 2 or 3 pieces, in random small pieces
 *     and byte by byte, it counts the same; never more than the input's
 *     length; on valid JSON without a repeated key, what a walk of
 *     jansson's tree finds by the rules of cfcost_estimate.h.
 *
 * Any difference aborts (libFuzzer) or fails the test.
 *
 * With libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon \
 *       t/unit/fuzz_usage.c common/cfcost_usage.c common/cfcost_json.c \
 *       common/cfcost_estimate.c -ljansson -lm -o build/fuzz_usage
 *   build/fuzz_usage -max_total_time=180 t/unit/usage-corpus
 *
 * Without it (-DCFCOST_FUZZ_MAIN), main() checks each file of
 * t/unit/usage-corpus, then mutants of them made from a fixed seed
 * (values, keys and text swapped for odd ones, members added, bytes
 * flipped, cut or spliced, values nested), and prints TAP:
 *   CFCOST_FUZZ_USAGE_RUNS   mutants (default 20000, a second or two)
 *   CFCOST_FUZZ_USAGE_SEED   the seed (default 20260101)
 *   CFCOST_FUZZ_USAGE_CORPUS the corpus directory (default: found from
 *                            the pricing file given as the argument,
 *                            <repo>/conf/pricing.json)
 */

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_estimate.h"
#include "cfcost_json.h"
#include "cfcost_usage.h"


#define FZ_MAX  65536                /* the largest input checked */


/* what the inputs reached: a fuzzer that never gets there proves little */
typedef struct {
    unsigned long  inputs;
    unsigned long  valid;
    unsigned long  parsed;
    unsigned long  scanned;
    unsigned long  usage;
    unsigned long  usage_bad;
    unsigned long  detail;
    unsigned long  detail_full;
    unsigned long  text;
    unsigned long  text_ref;
    unsigned long  located;
} fz_stats_t;


static char        fz_why[1024];
static fz_stats_t  fz_stats;


#define fz_fail(...)                                                         \
    (snprintf(fz_why, sizeof(fz_why), __VA_ARGS__), fz_why)


/*
 * The UTF-8 check, written apart from cfcost_json.c's tables: decode each
 * sequence, then refuse overlong forms, surrogates and what lies above
 * U+10FFFF.  0 when s[0..n) is valid.
 */
static int
fz_utf8(const char *str, size_t n)
{
    size_t                i, k, need;
    uint32_t              cp, min;
    const unsigned char  *s = (const unsigned char *) str;

    for (i = 0; i < n; i += need + 1) {
        if (s[i] < 0x80) {
            need = 0;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            need = 1;
            cp = s[i] & 0x1f;
            min = 0x80;

        } else if ((s[i] & 0xf0) == 0xe0) {
            need = 2;
            cp = s[i] & 0x0f;
            min = 0x800;

        } else if ((s[i] & 0xf8) == 0xf0) {
            need = 3;
            cp = s[i] & 0x07;
            min = 0x10000;

        } else {
            return -1;                 /* a continuation, or F8-FF */
        }

        if (n - i - 1 < need) {
            return -1;
        }

        for (k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return -1;
            }

            cp = cp << 6 | (s[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return -1;
        }
    }

    return 0;
}


/* a string as the module may send it: valid JSON, valid UTF-8 */
static const char *
fz_out(const char *b, size_t n, const char *what)
{
    if (cfcost_json_valid(b, n) != 0) {
        return fz_fail("%s: not valid JSON: '%.*s'", what,
                       (int) (n < 200 ? n : 200), b);
    }

    if (fz_utf8(b, n) != 0) {
        return fz_fail("%s: valid JSON in invalid UTF-8", what);
    }

    return NULL;
}


/*
 * src quoted by cfcost_json_quote() and put between quotes: valid, of
 * the length cfcost_json_quote_len() says, and when src was valid UTF-8
 * a literal that reads back as src.
 */
static const char *
fz_quoted(const char *src, size_t len, const char *what)
{
    char          *q, *end;
    size_t         qlen;
    json_t        *j;
    const char    *why;
    json_error_t   err;

    qlen = cfcost_json_quote_len(src, len);

    q = malloc(qlen + 2);
    if (q == NULL) {
        return "out of memory";
    }

    q[0] = '"';
    end = cfcost_json_quote(q + 1, src, len);

    if ((size_t) (end - q - 1) != qlen) {
        free(q);
        return fz_fail("%s: quote wrote %zu bytes, quote_len said %zu", what,
                       (size_t) (end - q - 1), qlen);
    }

    *end = '"';

    why = fz_out(q, qlen + 2, what);

    if (why == NULL && fz_utf8(src, len) == 0) {
        j = json_loadb(q, qlen + 2, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

        if (!json_is_string(j) || json_string_length(j) != len
            || memcmp(json_string_value(j), src, len) != 0)
        {
            why = fz_fail("%s: the quoted text does not read back as itself",
                          what);
        }

        json_decref(j);
    }

    free(q);

    return why;
}


/* the counts a reading may give */
static const char *
fz_range(const cfcost_reply_t *r, const char *what)
{
    if (r->has_usage && r->usage_bad) {
        return fz_fail("%s: usage both usable and unusable", what);
    }

    if (r->has_usage
        && (r->input > CFCOST_USAGE_MAX || r->output > CFCOST_USAGE_MAX
            || r->cached > CFCOST_USAGE_MAX
            || r->reasoning > CFCOST_USAGE_MAX || r->cached > r->input))
    {
        return fz_fail("%s: counts out of range: in %llu out %llu cached "
                       "%llu reasoning %llu", what,
                       (unsigned long long) r->input,
                       (unsigned long long) r->output,
                       (unsigned long long) r->cached,
                       (unsigned long long) r->reasoning);
    }

    if (!r->has_usage
        && (r->input || r->output || r->cached || r->reasoning))
    {
        return fz_fail("%s: counts without a usage", what);
    }

    if (r->has_neurons && !(isfinite(r->neurons) && r->neurons >= 0)) {
        return fz_fail("%s: neurons %g", what, r->neurons);
    }

    if (memchr(r->detail, '\0', CFCOST_DETAIL_MAX) == NULL) {
        return fz_fail("%s: detail not terminated", what);
    }

    return NULL;
}


/* a and b: the same reading (the text compared by pointer) */
static int
fz_same(const cfcost_reply_t *a, const cfcost_reply_t *b)
{
    return a->success == b->success && a->has_usage == b->has_usage
           && a->usage_bad == b->usage_bad && a->input == b->input
           && a->output == b->output && a->cached == b->cached
           && a->reasoning == b->reasoning
           && a->has_neurons == b->has_neurons
           && (!a->has_neurons || a->neurons == b->neurons)
           && a->error_code == b->error_code
           && strcmp(a->detail, b->detail) == 0
           && a->text_raw == b->text_raw
           && a->text_raw_len == b->text_raw_len;
}


/*
 * a, the scan, and b, the parse: the same usage and success.  The error
 * code and detail are read only on the error path, never after a scan.
 */
static int
fz_same_usage(const cfcost_reply_t *a, const cfcost_reply_t *b)
{
    return a->success == b->success && a->has_usage == b->has_usage
           && a->usage_bad == b->usage_bad && a->input == b->input
           && a->output == b->output && a->cached == b->cached
           && a->reasoning == b->reasoning
           && a->has_neurons == b->has_neurons
           && (!a->has_neurons || a->neurons == b->neurons);
}


/* whether some key in the text is written with an escape */
static int
fz_escaped_key(const char *s, size_t n)
{
    size_t  i, j, k;
    int     esc;

    for (i = 0; i < n; i++) {
        if (s[i] != '"') {
            continue;
        }

        esc = 0;

        for (j = i + 1; j < n && s[j] != '"'; j++) {
            if (s[j] == '\\') {
                esc = 1;
                j++;
            }
        }

        for (k = j + 1; k < n && strchr(" \t\r\n", s[k]) && s[k]; k++) {
            /* void */
        }

        if (esc && k < n && s[k] == ':') {
            return 1;
        }

        i = j;
    }

    return 0;
}


/* the value at path in jansson's reading, or NULL */
static json_t *
fz_follow(json_t *v, const char **path, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!json_is_object(v)) {
            return NULL;
        }

        v = json_object_get(v, path[i]);
    }

    return v;
}


/*
 * What ngx_http_cfcost_insert_cost() writes: "cost_usd" as the last
 * member of the object json[s..e).
 */
static size_t
fz_insert_cost(char *dst, const char *json, size_t len, size_t s, size_t e)
{
    char    *p;
    size_t   i;

    p = dst;
    memcpy(p, json, e - 1);
    p += e - 1;

    for (i = s + 1; i < e - 1 && strchr(" \t\r\n", json[i]) && json[i]; i++) {
        /* void */
    }

    if (i < e - 1) {
        *p++ = ',';
    }

    memcpy(p, "\"cost_usd\":0.001936", 19);
    p += 19;
    memcpy(p, json + e - 1, len - (e - 1));
    p += len - (e - 1);

    return p - dst;
}


/*
 * cfcost_json_locate() against jansson on a valid text, and what the
 * module writes into the objects it finds.
 */
static const char *
fz_check_locate(const char *s, size_t n, json_t *root, size_t flags)
{
    int            rc;
    char          *b;
    size_t         i, st, en, len;
    json_t        *want, *got;
    const char    *why;
    json_error_t   err;

    static struct {
        const char  *path[3];
        size_t       n;
    } paths[] = {
        { { "usage" }, 1 },
        { { "result", "usage" }, 2 },
        { { "result", "response" }, 2 },
        { { "result" }, 1 },
        { { "success" }, 1 },
        { { "response" }, 1 },
        { { "usage", "prompt_tokens_details" }, 2 },
        { { "result", "usage", "prompt_tokens" }, 3 },
        { { "max_tokens" }, 1 },
    };

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        want = fz_follow(root, paths[i].path, paths[i].n);
        rc = cfcost_json_locate(s, n, paths[i].path, paths[i].n, &st, &en);

        /* absent: jansson has nothing there; unsure: an escaped key */
        if ((rc == -1 && want != NULL)
            || (rc == -2 && !fz_escaped_key(s, n))
            || rc < -2 || rc > 0)
        {
            return fz_fail("locate %s%s%s: %d, jansson has %s",
                           paths[i].path[0], paths[i].n > 1 ? "." : "",
                           paths[i].n > 1 ? paths[i].path[1] : "", rc,
                           want ? "it" : "nothing");
        }

        if (rc != 0) {
            continue;
        }

        fz_stats.located++;

        if (st >= en || en > n) {
            return fz_fail("locate %s: span [%zu,%zu) of %zu bytes",
                           paths[i].path[0], st, en, n);
        }

        got = json_loadb(s + st, en - st, flags, &err);

        if (want == NULL || got == NULL || !json_equal(want, got)) {
            json_decref(got);
            return fz_fail("locate %s%s%s: '%.*s' is not jansson's value",
                           paths[i].path[0], paths[i].n > 1 ? "." : "",
                           paths[i].n > 1 ? paths[i].path[1] : "",
                           (int) (en - st < 100 ? en - st : 100), s + st);
        }

        json_decref(got);

        if (s[st] != '{') {
            continue;
        }

        b = malloc(n + 32);
        if (b == NULL) {
            return "out of memory";
        }

        len = fz_insert_cost(b, s, n, st, en);
        why = fz_out(b, len, "cost_usd inserted");
        free(b);

        if (why) {
            return why;
        }
    }

    return NULL;
}


/*
 * Where the module puts "cost_usd" in an answer it bills (the OpenAI and
 * native routes): into the usage object the parser read, or nowhere.
 */
static const char *
fz_check_usage_locate(const char *s, size_t n, json_t *root, size_t flags)
{
    char            *b;
    size_t           st, en, len;
    json_t          *result, *want, *got;
    const char      *why;
    json_error_t     err;
    cfcost_reply_t   p;

    cfcost_reply_parse(root, &p);

    if (!p.has_usage) {
        return NULL;
    }

    result = json_object_get(root, "result");
    want = json_is_object(result) ? json_object_get(result, "usage")
                                  : json_object_get(root, "usage");

    if (cfcost_usage_locate(s, n, &st, &en) != 0) {
        return fz_escaped_key(s, n) ? NULL
                                    : "usage_locate: no usage, yet billed";
    }

    got = json_loadb(s + st, en - st, flags, &err);

    if (want == NULL || got == NULL || !json_equal(want, got)
        || s[st] != '{')
    {
        json_decref(got);
        return fz_fail("usage_locate: '%.*s' is not the usage billed",
                       (int) (en - st < 100 ? en - st : 100), s + st);
    }

    json_decref(got);

    b = malloc(n + 32);
    if (b == NULL) {
        return "out of memory";
    }

    len = fz_insert_cost(b, s, n, st, en);
    why = fz_out(b, len, "cost_usd inserted into the usage");
    free(b);

    return why;
}


/* the request side: "model" cut, max_tokens read */
static const char *
fz_check_request(const char *s, size_t n)
{
    char          *b;
    size_t         st, en;
    uint64_t       cap;
    const char    *why;

    if (cfcost_request_max_tokens(s, n, &cap) == 0 && cap > CFCOST_USAGE_MAX)
    {
        return fz_fail("max_tokens %llu", (unsigned long long) cap);
    }

    if (cfcost_json_cut(s, n, "model", &st, &en) != 0) {
        return NULL;
    }

    if (st > en || en > n) {
        return fz_fail("cut model: span [%zu,%zu) of %zu bytes", st, en, n);
    }

    b = malloc(n + 1);
    if (b == NULL) {
        return "out of memory";
    }

    memcpy(b, s, st);
    memcpy(b + st, s + en, n - en);
    why = fz_out(b, n - (en - st), "model cut");
    free(b);

    return why;
}


/* the reply readings of a valid text, and what the module sends of them */
static const char *
fz_check_reply(const char *s, size_t n)
{
    int             rc, rc0;
    char            msg[CFCOST_DETAIL_MAX + 64], *dump;
    json_t         *root, *root2, *lit;
    const char     *why;
    json_error_t    err;
    cfcost_reply_t  p, p2, sc, sc0;

    /* as the module reads it: a full parse */
    root = cfcost_json_load(s, n, JSON_ALLOW_NUL);
    cfcost_reply_parse(root, &p);

    why = fz_range(&p, "parse");
    if (why) {
        goto done;
    }

    root2 = cfcost_json_load(s, n, JSON_ALLOW_NUL);
    cfcost_reply_parse(root2, &p2);

    if (!fz_same(&p, &p2) || (root != NULL) != (root2 != NULL)
        || (p.text != NULL) != (p2.text != NULL)
        || (p.text != NULL && !json_equal(p.text, p2.text)))
    {
        json_decref(root2);
        why = "parse: two readings differ";
        goto done;
    }

    json_decref(root2);

    if (root != NULL) {
        fz_stats.parsed++;
    }

    fz_stats.usage += p.has_usage;
    fz_stats.usage_bad += p.usage_bad;

    if (p.detail[0]) {
        fz_stats.detail++;
        fz_stats.detail_full += strlen(p.detail) >= CFCOST_DETAIL_MAX - 8;

        if (fz_utf8(p.detail, strlen(p.detail)) != 0) {
            why = fz_fail("parse: the error detail is not valid UTF-8: "
                          "'%s'", p.detail);
            goto done;
        }
    }

    /* what the chat route sends: the error, or the text */
    snprintf(msg, sizeof(msg), "Workers AI error (HTTP 200): %s", p.detail);
    why = fz_quoted(msg, strlen(msg), "the error detail quoted");
    if (why) {
        goto done;
    }

    if (json_is_string(p.text)) {
        fz_stats.text++;
        why = fz_quoted(json_string_value(p.text),
                        json_string_length(p.text), "the text quoted");

    } else if (p.text != NULL && !json_is_null(p.text)) {
        dump = json_dumps(p.text, JSON_COMPACT | JSON_ENCODE_ANY);
        why = (dump == NULL) ? "the text: json_dumps failed"
                             : fz_out(dump, strlen(dump), "the text dumped");
        free(dump);
    }

    if (why) {
        goto done;
    }

    /* the fast reading, for either route */
    rc = cfcost_reply_scan(s, n, 1, &sc);
    rc0 = cfcost_reply_scan(s, n, 0, &sc0);

    if (rc == 0 && rc0 != 0) {
        why = "scan: reads it with the text, not without";
        goto done;
    }

    if (cfcost_reply_scan(s, n, 0, &p2) != rc0 || !fz_same(&sc0, &p2)) {
        why = "scan: two readings differ";
        goto done;
    }

    if (rc0 != 0) {
        goto done;
    }

    fz_stats.scanned++;

    why = fz_range(&sc0, "scan");
    if (why) {
        goto done;
    }

    if (root == NULL) {
        goto done;                     /* jansson cannot read it */
    }

    if ((rc == 0 && !fz_same_usage(&sc, &sc0)) || !fz_same_usage(&sc0, &p)) {
        why = fz_fail("scan and parse differ: success %d/%d usage %d/%d in "
                      "%llu/%llu out %llu/%llu cached %llu/%llu reasoning "
                      "%llu/%llu neurons %d:%g/%d:%g",
                      sc0.success, p.success, sc0.has_usage, p.has_usage,
                      (unsigned long long) sc0.input,
                      (unsigned long long) p.input,
                      (unsigned long long) sc0.output,
                      (unsigned long long) p.output,
                      (unsigned long long) sc0.cached,
                      (unsigned long long) p.cached,
                      (unsigned long long) sc0.reasoning,
                      (unsigned long long) p.reasoning,
                      sc0.has_neurons, sc0.neurons,
                      p.has_neurons, p.neurons);
        goto done;
    }

    if (rc != 0) {
        goto done;
    }

    /* the literal the chat route copies as it is */
    why = fz_out(sc.text_raw, sc.text_raw_len, "the scanned text");
    if (why == NULL && sc.text_raw[0] != '"') {
        why = "the scanned text is no string";
    }

    if (why) {
        goto done;
    }

    lit = json_loadb(sc.text_raw, sc.text_raw_len,
                     JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    if (!json_is_string(lit) || !json_is_string(p.text)
        || json_string_length(lit) != json_string_length(p.text)
        || memcmp(json_string_value(lit), json_string_value(p.text),
                  json_string_length(lit)) != 0)
    {
        why = "the scanned text is not the parsed text";
    }

    json_decref(lit);

done:

    json_decref(root);

    return why;
}


/*
 * The estimator's count by cfcost_estimate.h's rules, over jansson's
 * tree: v is inside d containers; top and msg are the flags of v when it
 * is an object.
 */
static uint64_t
fz_text_ref(json_t *v, unsigned d, int top, int msg)
{
    void        *it;
    size_t       i, klen;
    json_t      *c;
    uint64_t     sum;
    const char  *key;
    int          kind;              /* 1 response, 2 content, 3 message,
                                       4 result */
    sum = 0;

    if (d + 1 > CFCOST_TEXT_DEPTH) {
        return 0;                      /* too deep to be tracked */
    }

    if (json_is_array(v)) {
        for (i = 0; i < json_array_size(v); i++) {
            sum += fz_text_ref(json_array_get(v, i), d + 1, 0, 0);
        }

        return sum;
    }

    if (!json_is_object(v)) {
        return 0;
    }

    for (it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
        key = json_object_iter_key(it);
        klen = json_object_iter_key_len(it);
        c = json_object_iter_value(it);

#define fz_is(name)  (klen == sizeof(name) - 1 && memcmp(key, name, klen) == 0)
        kind = fz_is("response") ? 1 : fz_is("content") ? 2
               : (fz_is("message") || fz_is("delta")) ? 3
               : fz_is("result") ? 4 : 0;
#undef fz_is

        if (json_is_string(c)) {
            if ((kind == 1 && top) || (kind == 2 && msg)) {
                sum += json_string_length(c);
            }

        } else {
            sum += fz_text_ref(c, d + 1, kind == 4 && d == 0, kind == 3);
        }
    }

    return sum;
}


static uint64_t
fz_text_cuts(const char *s, size_t n, const size_t *cuts, size_t ncuts)
{
    size_t         i, from, to;
    cfcost_text_t  t;

    cfcost_text_init(&t);

    for (from = 0, i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : n;
        cfcost_text_feed(&t, s + from, to - from);
        from = to;
    }

    return t.bytes;
}


static int
fz_cmp(const void *a, const void *b)
{
    size_t  x = *(const size_t *) a, y = *(const size_t *) b;

    return (x > y) - (x < y);
}


static uint64_t
fz_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;

    return *x;
}


/* the estimator: the same count however the text is cut */
static const char *
fz_check_text(const char *s, size_t n, uint64_t seed, int valid)
{
    size_t        i, nc, *cuts;
    json_t       *root;
    uint64_t      whole, got, ref, x;
    json_error_t  err;

    whole = cfcost_text_bytes(s, n);

    if (whole > n) {
        return fz_fail("text: %llu bytes counted in %zu",
                       (unsigned long long) whole, n);
    }

    cuts = malloc((n + 2) * sizeof(size_t));
    if (cuts == NULL) {
        return "out of memory";
    }

    x = seed | 1;

    for (i = 0; i < 5; i++) {
        switch (i) {

        case 0:                                  /* twice, whole */
            nc = 0;
            break;

        case 1:                                  /* 2 pieces */
            cuts[0] = (size_t) (seed % (n + 1));
            nc = 1;
            break;

        case 2:                                  /* 3 pieces */
            cuts[0] = (size_t) ((seed >> 16) % (n + 1));
            cuts[1] = (size_t) ((seed >> 32) % (n + 1));
            qsort(cuts, 2, sizeof(size_t), fz_cmp);
            nc = 2;
            break;

        case 3:                                  /* pieces of 0 to 8 */
            for (nc = 0; nc < n + 2; nc++) {
                cuts[nc] = (nc ? cuts[nc - 1] : 0)
                           + (size_t) (fz_next(&x) % 9);
                if (cuts[nc] > n) {
                    break;
                }
            }
            break;

        default:                                 /* byte by byte */
            for (nc = 0; nc + 1 < n; nc++) {
                cuts[nc] = nc + 1;
            }
            break;
        }

        got = fz_text_cuts(s, n, cuts, nc);

        if (got != whole) {
            free(cuts);
            return fz_fail("text: %llu bytes whole, %llu in %zu cuts "
                           "(reading %zu)", (unsigned long long) whole,
                           (unsigned long long) got, nc, i);
        }
    }

    free(cuts);

    if (!valid) {
        return NULL;
    }

    /* a key given twice counts twice here, once in jansson's tree */
    root = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL
                            | JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        return NULL;
    }

    fz_stats.text_ref++;
    ref = fz_text_ref(root, 0, 1, 0);
    json_decref(root);

    if (ref != whole) {
        return fz_fail("text: %llu bytes counted, %llu in jansson's tree",
                       (unsigned long long) whole, (unsigned long long) ref);
    }

    return NULL;
}


/*
 * Checks input s[0..n); the seed chooses where the estimator's feeds are
 * cut.  NULL when all is well, else what went wrong (a static buffer).
 */
static const char *
fz_check(const char *s, size_t n, uint64_t seed)
{
    int             valid;
    size_t          flags;
    json_t         *root;
    const char     *why;
    json_error_t    err;
    cfcost_reply_t  a, b;

    fz_stats.inputs++;

    valid = (cfcost_json_valid(s, n) == 0);

    if (valid != (cfcost_json_valid(s, n) == 0)) {
        return "valid: two readings differ";
    }

    if (valid && fz_utf8(s, n) != 0) {
        return "valid: accepted invalid UTF-8";
    }

    why = fz_quoted(s, n, "the input quoted");
    if (why) {
        return why;
    }

    why = fz_check_text(s, n, seed, valid);
    if (why) {
        return why;
    }

    /* only valid JSON reaches the readers, yet they must never crash */
    if (!valid) {
        if (cfcost_reply_scan(s, n, (int) (seed & 1), &a)
            != cfcost_reply_scan(s, n, (int) (seed & 1), &b)
            || !fz_same(&a, &b))
        {
            return "scan of invalid JSON: two readings differ";
        }

        return fz_range(&a, "scan of invalid JSON");
    }

    fz_stats.valid++;

    why = fz_check_reply(s, n);
    if (why) {
        return why;
    }

    why = fz_check_request(s, n);
    if (why) {
        return why;
    }

    flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    root = json_loadb(s, n, flags, &err);

    if (root == NULL) {
        flags |= JSON_DECODE_INT_AS_REAL;
        root = json_loadb(s, n, flags, &err);
    }

    if (root == NULL) {
        return NULL;                   /* 1e400: valid, unreadable */
    }

    why = fz_check_locate(s, n, root, flags);

    if (why == NULL) {
        why = fz_check_usage_locate(s, n, root, flags);
    }

    json_decref(root);

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

    if (n > FZ_MAX) {
        return 0;
    }

    seed = 0x9e3779b97f4a7c15ULL;
    for (i = 0; i < n && i < 8; i++) {
        seed = (seed << 8 | seed >> 56) ^ d[i];
    }

    why = fz_check((const char *) d, n, seed);
    if (why != NULL) {
        fprintf(stderr, "fuzz_usage: %s\n", why);
        abort();
    }

    return 0;
}

#else

#include "tap.h"


#define FZ_FILES  256


typedef struct {
    char    *name;
    char    *data;
    size_t   len;
} fz_file_t;


typedef struct {
    char     buf[FZ_MAX];
    size_t   len;
    uint64_t x;
} fz_mut_t;


/* values put where a value was */
static const char  *fz_values[] = {
    "0", "1", "7", "129", "16777216", "16777217", "4294967296",
    "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "99999999999999999999999999", "1e400", "-1e400", "1e-400", "-1", "-0",
    "0.0", "1.0", "1.5", "16777216.0", "1E3", "2e1", "1.7727272510528564",
    "null", "true", "false", "\"\"", "\"7\"", "\"x\\u0000y\"", "{}", "[]",
    "[0]", "{\"cached_tokens\":3}", "{\"reasoning_tokens\":9}",
    "{\"prompt_tokens\":5,\"completion_tokens\":2}",
    "{\"prompt_tokens\":5,\"total_tokens\":9}",
    ("{\"input_tokens\":4,\"output_tokens\":1,\"input_tokens_details\":"
     "{\"cached_tokens\":2}}"),
    "[{\"code\":5007,\"message\":\"No such model\"}]",
    "{\"message\":{\"content\":\"hi\"}}", "{\"response\":\"x\"}",
};

/* keys, and a key's or a string's new content */
static const char  *fz_keys[] = {
    "usage", "result", "response", "success", "errors", "code", "message",
    "content", "delta", "choices", "prompt_tokens", "completion_tokens",
    "total_tokens", "input_tokens", "output_tokens", "cached_tokens",
    "reasoning_tokens", "prompt_tokens_details", "completion_tokens_details",
    "input_tokens_details", "output_tokens_details", "neurons", "model",
    "max_tokens", "max_completion_tokens", "respon\\u0073e", "\\u0075sage",
    "prompt\\u005ftokens", "usage\\u0000", "", "\xc3\xa9",
};

/* members added at the start of an object */
static const char  *fz_members[] = {
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4},",
    "\"usage\":null,", "\"success\":true,", "\"success\":false,",
    ("\"result\":{\"response\":\"r\",\"usage\":{\"prompt_tokens\":1,"
     "\"completion_tokens\":1}},"),
    "\"response\":\"again\",", "\"neurons\":-1,", "\"neurons\":2.5,",
    "\"prompt_tokens\":12,", "\"completion_tokens\":null,",
    "\"prompt_tokens_details\":{\"cached_tokens\":1},",
    "\"input_tokens_details\":{\"cached_tokens\":2},",
    "\"errors\":[{\"code\":3040,\"message\":\"busy \\u00e9\"}],",
    "\"message\":{\"content\":\"more\"},", "\"model\":\"m\",",
    "\"\\u0075sage\":{\"prompt_tokens\":9,\"completion_tokens\":9},",
};

/* the pieces of text written into strings */
static const char  *fz_text[] = {
    "a", "Z", " ", "\xc3\xa9", "\xe2\x82\xac", "\xe6\x97\xa5",
    "\xf0\x9f\x98\x80", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9",
    "\\ud83d\\ude00", "\\u0000", "\\u001f", "\\u2028",
    /* invalid ones, rarer */
    "\t", "\\ud800", "\\udc00", "\\x", "\xff", "\xc0\xaf", "\xed\xa0\x80",
    "\xf4\x90\x80\x80", "\xe6\x97", "\x80",
};

#define FZ_TEXT_VALID  16

static const unsigned char  fz_bytes[] = {
    0x00, 0x80, 0xc0, 0xc3, 0xe6, 0xed, 0xf0, 0xf4, 0xff, '"', '\\', '{',
    '}', '[', ']', ',', ':', ' ', '0', '-', 'e', 'u',
};


#define fz_nelts(a)  (sizeof(a) / sizeof((a)[0]))
#define fz_pick(m, a)  ((a)[fz_next(&(m)->x) % fz_nelts(a)])


static int
fz_replace(fz_mut_t *m, size_t at, size_t cut, const char *with,
    size_t wlen)
{
    if (at > m->len || cut > m->len - at
        || m->len - cut + wlen > sizeof(m->buf))
    {
        return -1;
    }

    memmove(m->buf + at + wlen, m->buf + at + cut, m->len - at - cut);
    memcpy(m->buf + at, with, wlen);
    m->len = m->len - cut + wlen;

    return 0;
}


/*
 * The k-th token of the text (k taken modulo their number): a string
 * (*str set, inside its quotes) or a scalar, by a plain left-to-right
 * reading that needs no valid JSON.  -1 when there is none.
 */
static int
fz_token(fz_mut_t *m, uint64_t k, int want_str, size_t *at, size_t *len,
    int *key)
{
    int     pass;
    size_t  i, j, e, count;

    for (pass = 0, count = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (count == 0) {
                return -1;
            }

            k %= count;
            count = 0;
        }

        for (i = 0; i < m->len; i = j) {
            j = i + 1;

            if (m->buf[i] == '"') {
                for (j = i + 1; j < m->len && m->buf[j] != '"'; j++) {
                    j += (m->buf[j] == '\\');
                }

                if (j >= m->len) {
                    break;
                }

                j++;

                if (!want_str) {
                    continue;
                }

                if (pass == 1 && count == k) {
                    *at = i + 1;
                    *len = j - i - 2;
                    for (e = j; e < m->len && m->buf[e] == ' '; e++) {
                        /* void */
                    }
                    *key = (e < m->len && m->buf[e] == ':');
                    return 0;
                }

                count++;

            } else if (!want_str && strchr("-0123456789tfn", m->buf[i])
                       && m->buf[i])
            {
                while (j < m->len && strchr("+-.0123456789eEtruflsan",
                                            m->buf[j]) && m->buf[j])
                {
                    j++;
                }

                if (pass == 1 && count == k) {
                    *at = i;
                    *len = j - i;
                    *key = 0;
                    return 0;
                }

                count++;
            }
        }
    }

    return -1;
}


/* the k-th "{" outside strings, modulo their number; -1 if none */
static int
fz_open(fz_mut_t *m, uint64_t k, size_t *at)
{
    int     pass;
    size_t  i, count;

    for (pass = 0, count = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (count == 0) {
                return -1;
            }

            k %= count;
            count = 0;
        }

        for (i = 0; i < m->len; i++) {
            if (m->buf[i] == '"') {
                for (i++; i < m->len && m->buf[i] != '"'; i++) {
                    i += (m->buf[i] == '\\');
                }

            } else if (m->buf[i] == '{') {
                if (pass == 1 && count == k) {
                    *at = i;
                    return 0;
                }

                count++;
            }
        }
    }

    return -1;
}


/* one mutation of m; the corpus is there to splice from */
static void
fz_mutate(fz_mut_t *m, const fz_file_t *files, size_t nfiles)
{
    int               key, dirty;
    char              t[8192];
    size_t            at, len, i, k, tl;
    uint64_t          r;
    const char       *w;
    const fz_file_t  *f;

    r = fz_next(&m->x);

    switch (r % 20) {

    case 0:
    case 1:
    case 2:
    case 3:                              /* a scalar swapped */
        if (fz_token(m, fz_next(&m->x), 0, &at, &len, &key) == 0) {
            w = fz_pick(m, fz_values);
            (void) fz_replace(m, at, len, w, strlen(w));
        }
        break;

    case 4:
    case 5:
    case 6:                              /* a key or a string swapped */
        if (fz_token(m, fz_next(&m->x), 1, &at, &len, &key) == 0) {
            w = fz_pick(m, fz_keys);
            (void) fz_replace(m, at, len, w, strlen(w));
        }
        break;

    case 7:
    case 8:
    case 9:                              /* a string's text rewritten */
        /* keys rarely: jansson refuses a key with \u0000 */
        if (fz_token(m, fz_next(&m->x), 1, &at, &len, &key) != 0
            || (key && fz_next(&m->x) % 8 != 0))
        {
            break;
        }

        /* valid text mostly, at lengths around the detail's cut too */
        k = (fz_next(&m->x) % 4 == 0) ? fz_next(&m->x) % 700
                                        : fz_next(&m->x) % 40;
        dirty = (fz_next(&m->x) % 8 == 0);

        for (tl = 0, i = 0; i < k; i++) {
            w = fz_text[(dirty && fz_next(&m->x) % 20 == 0)
                        ? fz_next(&m->x) % fz_nelts(fz_text)
                        : fz_next(&m->x) % FZ_TEXT_VALID];
            if (tl + strlen(w) > sizeof(t)) {
                break;
            }
            memcpy(t + tl, w, strlen(w));
            tl += strlen(w);
        }

        (void) fz_replace(m, at, len, t, tl);
        break;

    case 10:
    case 11:
    case 12:                             /* a member added (maybe again) */
        if (fz_open(m, fz_next(&m->x), &at) == 0) {
            w = fz_pick(m, fz_members);

            /* no comma before the end of an empty object */
            for (i = at + 1; i < m->len && strchr(" \t\r\n", m->buf[i])
                             && m->buf[i]; i++)
            {
                /* void */
            }

            (void) fz_replace(m, at + 1, 0, w,
                              strlen(w) - (i < m->len && m->buf[i] == '}'));
        }
        break;

    case 13:                             /* a piece of text put in */
        if (fz_token(m, fz_next(&m->x), 1, &at, &len, &key) == 0) {
            w = fz_pick(m, fz_text);
            (void) fz_replace(m, at + fz_next(&m->x) % (len + 1), 0, w,
                              strlen(w));
        }
        break;

    case 14:                             /* a value nested deep */
        if (fz_token(m, fz_next(&m->x), 0, &at, &len, &key) != 0) {
            break;
        }

        k = (fz_next(&m->x) % 4 == 0) ? 500 + fz_next(&m->x) % 20
                                      : fz_next(&m->x) % 40;
        w = (fz_next(&m->x) & 1) ? "[" : "{\"message\":";

        memset(t, w[0] == '[' ? ']' : '}', k);
        if (fz_replace(m, at + len, 0, t, k) != 0) {
            break;
        }

        for (tl = 0, i = 0; i < k; i++) {
            memcpy(t + tl, w, strlen(w));
            tl += strlen(w);
        }

        if (fz_replace(m, at, 0, t, tl) != 0) {
            m->len -= k;               /* no room: the closers go too */
            memmove(m->buf + at + len, m->buf + at + len + k,
                    m->len - at - len);
        }
        break;

    case 15:                             /* a byte flipped or set */
        if (m->len) {
            at = fz_next(&m->x) % m->len;
            m->buf[at] = (fz_next(&m->x) & 1)
                         ? (char) (m->buf[at] ^ (1 << fz_next(&m->x) % 8))
                         : (char) fz_pick(m, fz_bytes);
        }
        break;

    case 16:                             /* a byte put in */
        at = fz_next(&m->x) % (m->len + 1);
        t[0] = (char) fz_pick(m, fz_bytes);
        (void) fz_replace(m, at, 0, t, 1);
        break;

    case 17:                             /* a few bytes taken out */
        if (m->len) {
            at = fz_next(&m->x) % m->len;
            k = 1 + fz_next(&m->x) % 8;
            (void) fz_replace(m, at, k < m->len - at ? k : m->len - at, "",
                              0);
        }
        break;

    case 18:                             /* spliced with another file */
        f = &files[fz_next(&m->x) % nfiles];
        at = fz_next(&m->x) % (m->len + 1);
        k = fz_next(&m->x) % (f->len + 1);
        m->len = at;
        if (m->len + f->len - k <= sizeof(m->buf)) {
            memcpy(m->buf + m->len, f->data + k, f->len - k);
            m->len += f->len - k;
        }
        break;

    default:                             /* cut short */
        m->len = m->len ? fz_next(&m->x) % m->len : 0;
        break;
    }
}


static int
fz_name_cmp(const void *a, const void *b)
{
    return strcmp(((const fz_file_t *) a)->name,
                  ((const fz_file_t *) b)->name);
}


/* every regular file of dir, sorted by name; -1 on an error */
static int
fz_corpus(const char *dir, fz_file_t *files, size_t *n)
{
    FILE           *fp;
    DIR            *d;
    char            path[4096 + 256];
    size_t          got;
    struct dirent  *de;

    *n = 0;

    d = opendir(dir);
    if (d == NULL) {
        diag("cannot open %s", dir);
        return -1;
    }

    while ((de = readdir(d)) != NULL && *n < FZ_FILES) {
        if (de->d_name[0] == '.') {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);

        fp = fopen(path, "rb");
        if (fp == NULL) {
            continue;
        }

        files[*n].data = malloc(FZ_MAX);
        files[*n].name = strdup(de->d_name);
        if (files[*n].data == NULL || files[*n].name == NULL) {
            fclose(fp);
            closedir(d);
            return -1;
        }

        got = fread(files[*n].data, 1, FZ_MAX, fp);
        fclose(fp);

        files[*n].len = got;
        (*n)++;
    }

    closedir(d);
    qsort(files, *n, sizeof(fz_file_t), fz_name_cmp);

    return 0;
}


static void
fz_dump(const char *s, size_t n)
{
    size_t  i;

    fprintf(stderr, "#   input (%zu bytes): \"", n);
    for (i = 0; i < n && i < 4096; i++) {
        if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] >= 0x7f
            || s[i] == '\\')
        {
            fprintf(stderr, "\\x%02x", (unsigned char) s[i]);
        } else {
            fputc(s[i], stderr);
        }
    }
    fprintf(stderr, "%s\"\n", i < n ? "..." : "");
}


static unsigned long
fz_env(const char *name, unsigned long dflt)
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


int
main(int argc, char **argv)
{
    char           dir[4096];
    int            rc;
    size_t         i, k, bad, nfiles;
    uint64_t       seed;
    fz_mut_t      *m;
    fz_file_t     *files;
    const char    *why, *env, *slash;
    unsigned long  run, runs, valid;

    runs = fz_env("CFCOST_FUZZ_USAGE_RUNS", 20000);
    seed = fz_env("CFCOST_FUZZ_USAGE_SEED", 20260101);

    /* the corpus, next to this file: <repo>/t/unit/usage-corpus */
    env = getenv("CFCOST_FUZZ_USAGE_CORPUS");
    if (env != NULL && *env) {
        snprintf(dir, sizeof(dir), "%s", env);

    } else if (argc > 1 && (slash = strrchr(argv[1], '/')) != NULL) {
        snprintf(dir, sizeof(dir), "%.*s/../t/unit/usage-corpus",
                 (int) (slash - argv[1]), argv[1]);

    } else {
        snprintf(dir, sizeof(dir), "t/unit/usage-corpus");
    }

    files = calloc(FZ_FILES, sizeof(fz_file_t));
    m = malloc(sizeof(fz_mut_t));
    if (files == NULL || m == NULL) {
        return 1;
    }

    rc = fz_corpus(dir, files, &nfiles);

    if (!ok(rc == 0 && nfiles >= 20, "the corpus: %zu files in %s", nfiles,
            dir))
    {
        return done_testing();
    }

    /* each file as it is */
    for (bad = 0, i = 0; i < nfiles; i++) {
        why = fz_check(files[i].data, files[i].len, i + 1);
        if (why != NULL) {
            diag("%s: %s", files[i].name, why);
            bad++;
        }
    }

    ok(bad == 0, "each of the %zu corpus files passes every check", nfiles);

    /* mutants: 1 to 4 mutations of a file, or of the last mutant */
    memset(&fz_stats, 0, sizeof(fz_stats));
    m->x = seed | 1;
    m->len = 0;
    why = NULL;

    for (valid = 0, run = 0; run < runs; run++) {

        /* a valid mutant is mutated further, 4 times at most */
        if (run % 4 == 0 || m->len == 0 || fz_stats.valid == valid) {
            i = fz_next(&m->x) % nfiles;
            memcpy(m->buf, files[i].data, files[i].len);
            m->len = files[i].len;
        }

        for (k = 1 + fz_next(&m->x) % 4; k > 0; k--) {
            fz_mutate(m, files, nfiles);
        }

        valid = fz_stats.valid;

        why = fz_check(m->buf, m->len, fz_next(&m->x));
        if (why != NULL) {
            break;
        }
    }

    if (!ok(why == NULL, "%lu mutants (seed %llu) pass every check", run,
            (unsigned long long) seed))
    {
        diag("mutant %lu: %s", run, why);
        fz_dump(m->buf, m->len);
        return done_testing();
    }

    diag("%lu mutants: %lu valid JSON, %lu read by jansson, %lu by the "
         "scan; %lu usable usages, %lu unusable; %lu error details (%lu "
         "cut at the end of the buffer); %lu texts; %lu estimator walks; "
         "%lu values located", fz_stats.inputs, fz_stats.valid,
         fz_stats.parsed, fz_stats.scanned, fz_stats.usage,
         fz_stats.usage_bad, fz_stats.detail, fz_stats.detail_full,
         fz_stats.text, fz_stats.text_ref, fz_stats.located);

    if (runs >= 5000) {
        ok(fz_stats.valid > runs / 5 && fz_stats.scanned > runs / 50
           && fz_stats.usage > runs / 50 && fz_stats.usage_bad > runs / 500
           && fz_stats.detail > runs / 500 && fz_stats.detail_full > 0
           && fz_stats.text_ref > runs / 50,
           "the mutants reach every reading");
    }

    for (i = 0; i < nfiles; i++) {
        free(files[i].data);
        free(files[i].name);
    }

    free(files);
    free(m);

    return done_testing();
}

#endif
