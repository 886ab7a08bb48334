/*
 * Reading usage and errors out of Workers AI responses.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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


static const char *
cfcost_json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }

    return p;
}


/* past the string whose opening quote is at p */
static const char *
cfcost_json_string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }

    return NULL;
}


/* past the value starting at p */
static const char *
cfcost_json_value_end(const char *p, const char *end)
{
    size_t  depth;

    if (p >= end) {
        return NULL;
    }

    if (*p == '"') {
        return cfcost_json_string_end(p, end);
    }

    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']'
               && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
        {
            p++;
        }

        return p;
    }

    for (depth = 0; p < end; p++) {
        if (*p == '"') {
            p = cfcost_json_string_end(p, end);
            if (p == NULL) {
                return NULL;
            }

            p--;

        } else if (*p == '{' || *p == '[') {
            depth++;

        } else if ((*p == '}' || *p == ']') && --depth == 0) {
            return p + 1;
        }
    }

    return NULL;
}


/*
 * A member of an object: p is at its key's opening quote.  Returns where
 * its value begins (past the colon and white space), and in *key_end the
 * byte after the key's closing quote; NULL when it is no member.
 */
static const char *
cfcost_json_member(const char *p, const char *last, const char **key_end)
{
    const char  *v;

    if (p >= last || *p != '"') {
        return NULL;
    }

    *key_end = cfcost_json_string_end(p, last);
    if (*key_end == NULL) {
        return NULL;
    }

    v = cfcost_json_ws(*key_end, last);
    if (v >= last || *v != ':') {
        return NULL;
    }

    return cfcost_json_ws(v + 1, last);
}


int
cfcost_json_locate(const char *json, size_t len, const char **path,
    size_t n, size_t *start, size_t *end)
{
    size_t       i, klen;
    const char  *p, *last, *key, *v, *ve, *found;

    p = cfcost_json_ws(json, json + len);
    last = json + len;

    for (i = 0; i < n; i++) {
        if (p >= last || *p != '{') {
            return -1;
        }

        klen = strlen(path[i]);
        found = NULL;
        p = cfcost_json_ws(p + 1, last);

        /*
         * The whole object is read: a key given twice is the last one's,
         * as jansson (and JSON.parse) take it.
         */
        while (p < last && *p != '}') {
            key = p + 1;
            v = cfcost_json_member(p, last, &p);
            if (v == NULL) {
                return -1;
            }

            /*
             * A key written with an escape ("\u0075sage") may be the
             * key sought, and then the last one: only a parser knows.
             */
            if (memchr(key, '\\', p - 1 - key) != NULL) {
                return -2;
            }

            if ((size_t) (p - 1 - key) == klen
                && memcmp(key, path[i], klen) == 0)
            {
                found = v;
            }

            ve = cfcost_json_value_end(v, last);
            if (ve == NULL) {
                return -1;
            }

            p = cfcost_json_ws(ve, last);

            if (p < last && *p == ',') {
                p = cfcost_json_ws(p + 1, last);

                if (p < last && *p == '}') {
                    return -1;              /* {"a":1,} */
                }

            } else if (p >= last || *p != '}') {
                return -1;
            }
        }

        if (p >= last || found == NULL) {
            return -1;                      /* unclosed, or absent */
        }

        p = found;
    }

    ve = cfcost_json_value_end(p, last);
    if (ve == NULL) {
        return -1;
    }

    *start = p - json;
    *end = ve - json;

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


/* a count written as plain digits; -1 for anything else */
static int
cfcost_scan_count(const char *json, size_t len, const char *key,
    uint64_t *v)
{
    int          rc;
    size_t       s, e, i;
    uint64_t     n;
    const char  *path[1];

    path[0] = key;

    rc = cfcost_json_locate(json, len, path, 1, &s, &e);
    if (rc != 0) {
        return (rc == -1) ? 1 : -1;                 /* absent, or unsure */
    }

    if (e - s == 0 || e - s > 15) {
        return -1;
    }

    for (n = 0, i = s; i < e; i++) {
        if (json[i] < '0' || json[i] > '9') {
            return -1;
        }

        n = n * 10 + (json[i] - '0');
    }

    if (n > CFCOST_USAGE_MAX) {
        return -1;                     /* the slow path says why */
    }

    *v = n;

    return 0;
}


/*
 * A count inside a nested object ("prompt_tokens_details", else the
 * Responses API's "input_tokens_details"); absent is 0.
 */
static int
cfcost_scan_detail(const char *json, size_t len, const char *obj,
    const char *alt, const char *key, uint64_t *v)
{
    int          rc;
    size_t       s, e;
    const char  *path[1];

    path[0] = obj;
    *v = 0;

    rc = cfcost_json_locate(json, len, path, 1, &s, &e);

    if (rc == -1) {
        path[0] = alt;
        rc = cfcost_json_locate(json, len, path, 1, &s, &e);

        if (rc == -1) {
            return 0;
        }
    }

    if (rc != 0) {
        return -1;
    }

    if (json[s] != '{') {
        return -1;
    }

    return cfcost_scan_count(json + s, e - s, key, v) < 0 ? -1 : 0;
}


int
cfcost_reply_scan(const char *json, size_t len, int need_text,
    cfcost_reply_t *out)
{
    int          rc, rc_in, rc_out;
    char         num[32];
    size_t       s, e, bs, be, us, ue;
    const char  *p, *end, *path[2];
    uint64_t     in, outp, cached, reasoning;

    memset(out, 0, sizeof(cfcost_reply_t));

    /* one object, strings and brackets balanced, nothing after it */
    p = cfcost_json_ws(json, json + len);
    end = cfcost_json_value_end(p, json + len);

    if (end == NULL || *p != '{' || cfcost_json_ws(end, json + len)
                                    != json + len)
    {
        return -1;
    }

    path[0] = "success";
    rc = cfcost_json_locate(json, len, path, 1, &s, &e);

    if (rc == -2) {
        return -1;
    }

    if (rc == 0) {
        if (e - s != 4 || memcmp(json + s, "true", 4) != 0) {
            return -1;                  /* an error: the slow path says */
        }

        out->success = 1;
        path[0] = "result";

        if (cfcost_json_locate(json, len, path, 1, &bs, &be) != 0
            || json[bs] != '{')
        {
            return -1;
        }

    } else {
        /* as cfcost_reply_parse(): a "result" object, else the whole */
        out->success = -1;
        path[0] = "result";
        rc = cfcost_json_locate(json, len, path, 1, &bs, &be);

        if (rc == -2) {
            return -1;
        }

        if (rc != 0 || json[bs] != '{') {
            bs = p - json;
            be = end - json;
        }
    }

    path[0] = "usage";

    if (cfcost_json_locate(json + bs, be - bs, path, 1, &us, &ue) != 0
        || json[bs + us] != '{')
    {
        return -1;
    }

    us += bs;
    ue += bs;

    rc_in = cfcost_scan_count(json + us, ue - us, "prompt_tokens", &in);
    if (rc_in == 1) {
        rc_in = cfcost_scan_count(json + us, ue - us, "input_tokens", &in);
    }

    rc_out = cfcost_scan_count(json + us, ue - us, "completion_tokens", &outp);
    if (rc_out == 1) {
        rc_out = cfcost_scan_count(json + us, ue - us, "output_tokens",
                                   &outp);
    }

    if (rc_in != 0 || rc_out != 0
        || cfcost_scan_detail(json + us, ue - us, "prompt_tokens_details",
                              "input_tokens_details", "cached_tokens",
                              &cached) != 0
        || cfcost_scan_detail(json + us, ue - us,
                              "completion_tokens_details",
                              "output_tokens_details", "reasoning_tokens",
                              &reasoning) != 0)
    {
        return -1;
    }

    path[0] = "neurons";
    rc = cfcost_json_locate(json + us, ue - us, path, 1, &s, &e);

    if (rc == -2) {
        return -1;
    }

    if (rc == 0) {
        if (e - s == 0 || e - s >= sizeof(num)) {
            return -1;
        }

        /* a number >= 0 is read; the parser says what else means */
        if (json[us + s] < '0' || json[us + s] > '9') {
            return -1;
        }

        memcpy(num, json + us + s, e - s);
        num[e - s] = '\0';
        out->neurons = strtod(num, NULL);

        /*
         * 1e400 is valid JSON but no number of neurons (jansson cannot
         * read it at all): not reported.
         */
        out->has_neurons = isfinite(out->neurons);
        out->neurons = out->has_neurons ? out->neurons : 0;
    }

    if (need_text) {
        path[0] = "response";

        if (cfcost_json_locate(json + bs, be - bs, path, 1, &s, &e) != 0
            || json[bs + s] != '"')
        {
            return -1;
        }

        out->text_raw = json + bs + s;
        out->text_raw_len = e - s;
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
    p = cfcost_json_ws(json, last);
    klen = strlen(key);

    if (p >= last || *p != '{') {
        return -1;
    }

    prev_comma = NULL;

    for (p++; /* void */; p++) {             /* p: past "{" or "," */
        k = cfcost_json_ws(p, last);
        v = cfcost_json_member(k, last, &ke);
        if (v == NULL) {
            return -1;
        }

        ve = cfcost_json_value_end(v, last);
        if (ve == NULL) {
            return -1;
        }

        p = cfcost_json_ws(ve, last);

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
