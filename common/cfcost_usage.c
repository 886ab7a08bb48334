/*
 * Reading usage and errors out of Workers AI responses.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_json.h"
#include "cfcost_usage.h"
#include "cfcost_price.h"


/*
 * A count of a usage object: 0 and *v set, 1 when absent, -1 when present
 * but not a billable count.  null is absent where null_ok, else not a
 * count: "prompt_tokens": null is usage unknown, never 0 tokens.
 */
static int
cfcost_count(json_t *obj, const char *name, const char *alt, uint64_t *v,
    int null_ok)
{
    json_t  *j;

    j = json_object_get(obj, name);
    if (j == NULL && alt != NULL) {
        j = json_object_get(obj, alt);
    }

    if (j == NULL) {
        return 1;                      /* absent */
    }

    if (json_is_null(j)) {
        return null_ok ? 1 : -1;
    }

    if (json_is_integer(j) && json_integer_value(j) >= 0
        && (uint64_t) json_integer_value(j) <= CFCOST_USAGE_MAX)
    {
        *v = (uint64_t) json_integer_value(j);
        return 0;
    }

    if (json_is_real(j) && json_real_value(j) >= 0
        && json_real_value(j) <= (double) CFCOST_USAGE_MAX
        && json_real_value(j) == (double) (uint64_t) json_real_value(j))
    {
        *v = (uint64_t) json_real_value(j);
        return 0;
    }

    return -1;                         /* present but not a billable count */
}


int
cfcost_usage_read(json_t *usage, cfcost_reply_t *out)
{
    int       rc_in, rc_out, rc;
    json_t   *details, *neurons;
    uint64_t  in = 0, outp = 0, cached = 0, reasoning = 0, total = 0;

    if (!json_is_object(usage)) {
        return -1;
    }

    rc_in = cfcost_count(usage, "prompt_tokens", "input_tokens", &in, 0);
    rc_out = cfcost_count(usage, "completion_tokens", "output_tokens", &outp,
                          0);

    if (rc_in < 0 || rc_out < 0) {
        goto bad;
    }

    if (rc_in && rc_out) {
        return -1;                     /* no counts at all */
    }

    if (rc_in) {
        goto bad;                      /* output but no input: not 0 */
    }

    if (rc_out) {
        /* embeddings report input and total only */
        rc = cfcost_count(usage, "total_tokens", NULL, &total, 0);
        if (rc != 0 || total < in) {
            goto bad;
        }

        outp = total - in;
    }

    details = json_object_get(usage, "prompt_tokens_details");
    if (details == NULL) {
        details = json_object_get(usage, "input_tokens_details");
    }

    if (json_is_object(details)
        && cfcost_count(details, "cached_tokens", NULL, &cached, 1) < 0)
    {
        goto bad;
    }

    details = json_object_get(usage, "completion_tokens_details");
    if (details == NULL) {
        details = json_object_get(usage, "output_tokens_details");
    }

    if (json_is_object(details)
        && cfcost_count(details, "reasoning_tokens", NULL, &reasoning, 1)
           < 0)
    {
        goto bad;
    }

    out->has_usage = 1;
    out->input = in;
    out->output = outp;
    out->cached = cached > in ? in : cached;
    out->reasoning = reasoning;

    neurons = json_object_get(usage, "neurons");
    if (json_is_number(neurons) && json_number_value(neurons) >= 0) {
        out->has_neurons = 1;
        out->neurons = json_number_value(neurons);
    }

    return 0;

bad:

    out->usage_bad = 1;

    return -1;
}


json_t *
cfcost_json_load(const char *buf, size_t len, size_t flags)
{
    json_t        *root;
    json_error_t   err;

    root = json_loadb(buf, len, flags, &err);

    if (root == NULL) {
        /* jansson refuses integers beyond 64 bits: read them as doubles */
        root = json_loadb(buf, len, flags | JSON_DECODE_INT_AS_REAL, &err);
    }

    return root;
}


/* the first choice's message content of a chat.completion object */
static json_t *
cfcost_choice_text(json_t *obj)
{
    json_t  *choices, *message;

    choices = json_object_get(obj, "choices");
    if (!json_is_array(choices) || json_array_size(choices) == 0) {
        return NULL;
    }

    message = json_object_get(json_array_get(choices, 0), "message");

    return json_object_get(message, "content");
}


/* an error code: an integer, or a whole double (cfcost_json_load) */
static long long
cfcost_code_value(json_t *code)
{
    double  d;

    if (json_is_integer(code)) {
        return json_integer_value(code);
    }

    d = json_real_value(code);          /* 0 when not a real */

    return (d > -1e18 && d < 1e18) ? (long long) d : 0;
}


/*
 * len, or less so that s[0..len) does not end inside a UTF-8 character:
 * for text cut at a byte count, whose start is valid UTF-8.
 */
static size_t
cfcost_utf8_whole(const char *s, size_t len)
{
    size_t         i, need;
    unsigned char  c;

    for (i = len; i > 0 && len - i < 4; i--) {
        c = (unsigned char) s[i - 1];

        if ((c & 0xc0) == 0x80) {
            continue;                  /* a continuation byte */
        }

        need = (c >= 0xf0) ? 4 : (c >= 0xe0) ? 3 : (c >= 0xc0) ? 2 : 1;

        return (len - (i - 1) < need) ? i - 1 : len;
    }

    return len;
}


static void
cfcost_errors_read(json_t *errors, cfcost_reply_t *out)
{
    size_t       i, len;
    json_t      *e, *code, *msg;
    const char  *text;
    int          n;

    len = 0;
    out->detail[0] = '\0';

    for (i = 0; i < json_array_size(errors); i++) {
        e = json_array_get(errors, i);
        code = json_object_get(e, "code");
        msg = json_object_get(e, "message");
        text = json_is_string(msg) ? json_string_value(msg) : "";

        if (out->error_code == 0) {
            out->error_code = cfcost_code_value(code);
        }

        n = snprintf(out->detail + len, CFCOST_DETAIL_MAX - len, "%s%lld: %s",
                     len ? "; " : "", cfcost_code_value(code), text);

        if (n < 0 || (size_t) n >= CFCOST_DETAIL_MAX - len) {
            /*
             * Truncated; enough said, but no half character: the detail
             * goes to the client, and stays UTF-8.
             */
            len = strlen(out->detail);
            out->detail[cfcost_utf8_whole(out->detail, len)] = '\0';
            break;
        }

        len += n;
    }
}


void
cfcost_reply_parse(json_t *root, cfcost_reply_t *out)
{
    json_t  *result, *success, *errors, *text;

    memset(out, 0, sizeof(cfcost_reply_t));
    out->success = -1;

    if (!json_is_object(root)) {
        return;
    }

    success = json_object_get(root, "success");
    if (json_is_boolean(success)) {
        out->success = json_is_true(success);
    }

    errors = json_object_get(root, "errors");
    if (json_is_array(errors)) {
        cfcost_errors_read(errors, out);
    }

    /* the native envelope wraps the answer; OpenAI objects are bare */
    result = json_object_get(root, "result");
    if (!json_is_object(result)) {
        result = (out->success == -1) ? root : NULL;
    }

    if (result == NULL) {
        return;
    }

    text = json_object_get(result, "response");
    if (text == NULL || json_is_null(text)) {
        text = cfcost_choice_text(result);
    }

    out->text = text;

    (void) cfcost_usage_read(json_object_get(result, "usage"), out);
}


/*
 * One pass over the object at json[0..len): for each of names[0..n), the
 * span of its value [start[i], end[i]), the last one's when a key is given
 * twice, as jansson (and JSON.parse) take it; end[i] stays 0 when absent;
 * *after (when not NULL) is past the object.  Returns 0, -1 when json is
 * no object, or -2 when a key is written with an escape ("\u0075sage"):
 * it may be one of names, and only a parser knows.
 */
static int
cfcost_json_fields(const char *json, size_t len, const char *const *names,
    const size_t *lens, size_t n, size_t *start, size_t *end, size_t *after)
{
    size_t       i, klen;
    const char  *p, *last, *key, *v, *ve;

    last = json + len;
    p = cfcost_json_skip_ws(json, last);

    if (p >= last || *p != '{') {
        return -1;
    }

    memset(end, 0, n * sizeof(size_t));
    p = cfcost_json_skip_ws(p + 1, last);

    while (p < last && *p != '}') {
        key = p + 1;
        v = cfcost_json_member(p, last, &p);
        if (v == NULL) {
            return -1;
        }

        klen = p - 1 - key;

        if (memchr(key, '\\', klen) != NULL) {
            return -2;
        }

        ve = cfcost_json_skip(v, last);
        if (ve == NULL) {
            return -1;
        }

        for (i = 0; i < n; i++) {
            if (klen == lens[i] && memcmp(key, names[i], klen) == 0) {
                start[i] = v - json;
                end[i] = ve - json;
                break;
            }
        }

        p = cfcost_json_skip_ws(ve, last);

        if (p < last && *p == ',') {
            p = cfcost_json_skip_ws(p + 1, last);

            if (p < last && *p == '}') {
                return -1;                  /* {"a":1,} */
            }

        } else if (p >= last || *p != '}') {
            return -1;
        }
    }

    if (p >= last) {
        return -1;
    }

    if (after != NULL) {
        *after = p + 1 - json;
    }

    return 0;
}


int
cfcost_json_locate(const char *json, size_t len, const char **path,
    size_t n, size_t *start, size_t *end)
{
    int     rc;
    size_t  i, s, e, ks, ke, klen;

    /* [s, e): the value reached so far, the whole text first */
    s = 0;
    e = len;

    for (i = 0; i < n; i++) {
        klen = strlen(path[i]);
        rc = cfcost_json_fields(json + s, e - s, &path[i], &klen, 1, &ks,
                                &ke, NULL);
        if (rc != 0) {
            return rc;
        }

        if (ke == 0) {
            return -1;                      /* absent */
        }

        e = s + ke;
        s += ks;
    }

    *start = s;
    *end = e;

    return 0;
}


int
cfcost_usage_locate(const char *json, size_t len, size_t *start,
    size_t *end)
{
    int     rc;
    size_t  s, e;

    static const char  *result[] = { "result", "usage" };
    static const char  *top[] = { "usage" };

    rc = cfcost_json_locate(json, len, result, 1, &s, &e);

    if (rc == 0 && json[s] == '{') {
        rc = cfcost_json_locate(json, len, result, 2, start, end);

    } else if (rc != -2) {
        rc = cfcost_json_locate(json, len, top, 1, start, end);
    }

    return (rc == 0) ? 0 : -1;
}


/* a count written as plain digits, up to CFCOST_USAGE_MAX; else -1 */
static int
cfcost_scan_digits(const char *v, size_t n, uint64_t *out)
{
    size_t    i;
    uint64_t  x;

    if (n == 0 || n > 15) {
        return -1;
    }

    for (x = 0, i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return -1;
        }

        x = x * 10 + (v[i] - '0');
    }

    if (x > CFCOST_USAGE_MAX) {
        return -1;                     /* the slow path says why */
    }

    *out = x;

    return 0;
}


/* the usage members cfcost_reply_scan() reads, in this order */
enum {
    CFCOST_U_PROMPT = 0,
    CFCOST_U_INPUT,
    CFCOST_U_COMPLETION,
    CFCOST_U_OUTPUT,
    CFCOST_U_PROMPT_DETAILS,
    CFCOST_U_INPUT_DETAILS,
    CFCOST_U_COMPLETION_DETAILS,
    CFCOST_U_OUTPUT_DETAILS,
    CFCOST_U_NEURONS,
    CFCOST_U_N
};

#define CFCOST_LEN(s)      (sizeof(s) - 1)


/*
 * The first present of two counts (prompt_tokens, else input_tokens):
 * 0 and *v, 1 when neither is there, -1 when it is not plain digits.
 */
static int
cfcost_scan_count(const char *json, const size_t *s, const size_t *e,
    int a, int b, uint64_t *v)
{
    int  i;

    i = e[a] ? a : (e[b] ? b : -1);

    if (i < 0) {
        return 1;
    }

    return cfcost_scan_digits(json + s[i], e[i] - s[i], v);
}


/*
 * A count inside a nested object (prompt_tokens_details, else the
 * Responses API's input_tokens_details); absent is 0.
 */
static int
cfcost_scan_detail(const char *json, const size_t *s, const size_t *e,
    int a, int b, const char *key, size_t klen, uint64_t *v)
{
    int     i;
    size_t  ks, ke;

    *v = 0;
    i = e[a] ? a : (e[b] ? b : -1);

    if (i < 0) {
        return 0;
    }

    if (json[s[i]] != '{'
        || cfcost_json_fields(json + s[i], e[i] - s[i], &key, &klen, 1,
                              &ks, &ke, NULL) != 0)
    {
        return -1;
    }

    if (ke == 0) {
        return 0;
    }

    return cfcost_scan_digits(json + s[i] + ks, ke - ks, v);
}


int
cfcost_reply_scan(const char *json, size_t len, int need_text,
    cfcost_reply_t *out)
{
    int          rc_in, rc_out;
    char         num[32];
    size_t       bs, be, us, ue, ns, ne, ts[2], te[2], os[2], oe[2];
    size_t       s[CFCOST_U_N], e[CFCOST_U_N];
    const char  *p, *end, *u;
    uint64_t     in, outp, cached, reasoning;

    static const char *const  top_names[] = { "success", "result" };
    static const size_t       top_lens[] = { 7, 6 };
    static const char *const  obj_names[] = { "usage", "response" };
    static const size_t       obj_lens[] = { 5, 8 };
    static const char *const  usage_names[CFCOST_U_N] = {
        "prompt_tokens", "input_tokens", "completion_tokens",
        "output_tokens", "prompt_tokens_details", "input_tokens_details",
        "completion_tokens_details", "output_tokens_details", "neurons"
    };
    static const size_t       usage_lens[CFCOST_U_N] = {
        13, 12, 17, 13, 21, 20, 25, 21, 7
    };

    memset(out, 0, sizeof(cfcost_reply_t));

    /* one object, strings and brackets balanced, nothing after it */
    if (cfcost_json_fields(json, len, top_names, top_lens, 2, ts, te, &bs)
        != 0
        || cfcost_json_skip_ws(json + bs, json + len) != json + len)
    {
        return -1;
    }

    p = cfcost_json_skip_ws(json, json + len);
    end = json + bs;

    if (te[0]) {
        if (te[0] - ts[0] != 4 || memcmp(json + ts[0], "true", 4) != 0) {
            return -1;                  /* an error: the slow path says */
        }

        out->success = 1;

        if (te[1] == 0 || json[ts[1]] != '{') {
            return -1;
        }

        bs = ts[1];
        be = te[1];

    } else if (te[1] && json[ts[1]] == '{') {
        /* as cfcost_reply_parse(): a "result" object, else the whole */
        out->success = -1;
        bs = ts[1];
        be = te[1];

    } else {
        out->success = -1;
        bs = p - json;
        be = end - json;
    }

    if (cfcost_json_fields(json + bs, be - bs, obj_names, obj_lens, 2, os, oe,
                           NULL) != 0
        || oe[0] == 0 || json[bs + os[0]] != '{')
    {
        return -1;
    }

    us = bs + os[0];
    ue = bs + oe[0];
    u = json + us;

    if (cfcost_json_fields(u, ue - us, usage_names, usage_lens, CFCOST_U_N,
                           s, e, NULL)
        != 0)
    {
        return -1;
    }

    rc_in = cfcost_scan_count(u, s, e, CFCOST_U_PROMPT, CFCOST_U_INPUT, &in);
    rc_out = cfcost_scan_count(u, s, e, CFCOST_U_COMPLETION, CFCOST_U_OUTPUT,
                               &outp);

    if (rc_in != 0 || rc_out != 0
        || cfcost_scan_detail(u, s, e, CFCOST_U_PROMPT_DETAILS,
                              CFCOST_U_INPUT_DETAILS, "cached_tokens",
                              CFCOST_LEN("cached_tokens"), &cached) != 0
        || cfcost_scan_detail(u, s, e, CFCOST_U_COMPLETION_DETAILS,
                              CFCOST_U_OUTPUT_DETAILS, "reasoning_tokens",
                              CFCOST_LEN("reasoning_tokens"), &reasoning)
           != 0)
    {
        return -1;
    }

    if (e[CFCOST_U_NEURONS]) {
        ns = s[CFCOST_U_NEURONS];
        ne = e[CFCOST_U_NEURONS];

        if (ne - ns == 0 || ne - ns >= sizeof(num)) {
            return -1;
        }

        /* a number >= 0 is read; the parser says what else means */
        if (u[ns] < '0' || u[ns] > '9') {
            return -1;
        }

        memcpy(num, u + ns, ne - ns);
        num[ne - ns] = '\0';
        out->neurons = strtod(num, NULL);

        /*
         * 1e400 is valid JSON but no number of neurons (jansson cannot
         * read it at all): not reported.
         */
        out->has_neurons = isfinite(out->neurons);
        out->neurons = out->has_neurons ? out->neurons : 0;
    }

    if (need_text) {
        if (oe[1] == 0 || json[bs + os[1]] != '"') {
            return -1;
        }

        out->text_raw = json + bs + os[1];
        out->text_raw_len = oe[1] - os[1];
    }

    out->has_usage = 1;
    out->input = in;
    out->output = outp;
    out->cached = cached > in ? in : cached;
    out->reasoning = reasoning;

    return 0;
}


int
cfcost_json_cut(const char *json, size_t len, const char *key, size_t *start,
    size_t *end)
{
    size_t       klen;
    const char  *p, *last, *k, *ke, *v, *ve, *prev_comma;

    last = json + len;
    p = cfcost_json_skip_ws(json, last);
    klen = strlen(key);

    if (p >= last || *p != '{') {
        return -1;
    }

    prev_comma = NULL;

    for (p++; /* void */; p++) {             /* p: past "{" or "," */
        k = cfcost_json_skip_ws(p, last);
        v = cfcost_json_member(k, last, &ke);
        if (v == NULL) {
            return -1;
        }

        ve = cfcost_json_skip(v, last);
        if (ve == NULL) {
            return -1;
        }

        p = cfcost_json_skip_ws(ve, last);

        if ((size_t) (ke - k) == klen + 2 && memcmp(k + 1, key, klen) == 0) {
            if (p < last && *p == ',') {     /* "key": v,  -> cut the comma */
                *start = k - json;
                *end = p + 1 - json;

            } else {                          /* , "key": v  (the last one) */
                *start = (prev_comma ? prev_comma : k) - json;
                *end = ve - json;
            }

            return 0;
        }

        if (p >= last || *p != ',') {
            return -1;
        }

        prev_comma = p;
    }
}
