/*
 * A client's request body, read in one pass: cfcost_json_valid() first,
 * then a walk over the top object, the messages and stream_options.
 */

#include <string.h>

#include "cfcost_json.h"
#include "cfcost_request.h"


#define CFCOST_KEY_MAX  96      /* a key escaped longer decodes to more
                                   than 16 bytes: none of ours */


/* which of names[0..n) the key k[0..len) is, decoded; -1 for none */
static int
cfcost_request_key(const char *k, size_t len, const char *const *names,
    const size_t *lens, int n)
{
    int   i;
    char  buf[CFCOST_KEY_MAX];

    if (memchr(k, '\\', len) != NULL) {
        if (len > sizeof(buf)) {
            return -1;
        }

        len = cfcost_json_unescape(buf, k, len);
        k = buf;
    }

    for (i = 0; i < n; i++) {
        if (len == lens[i] && memcmp(k, names[i], len) == 0) {
            return i;
        }
    }

    return -1;
}


/*
 * The object whose '{' is at p: the spans of the members names[0..n), and
 * in *cut the first name's member with one comma beside it (when cut is
 * not NULL).  Returns past the object, or NULL when a name is given twice
 * (*twice is set) or the text is broken.
 */
static const char *
cfcost_request_object(const char *body, const char *p, const char *last,
    const char *const *names, const size_t *lens, int n, cfcost_span_t *spans,
    cfcost_span_t *cut, const char **twice)
{
    int          i;
    const char  *k, *ke, *v, *ve, *prev_comma;

    memset(spans, 0, n * sizeof(cfcost_span_t));
    prev_comma = NULL;
    p = cfcost_json_skip_ws(p + 1, last);

    while (p < last && *p != '}') {
        k = p;
        v = cfcost_json_member(k, last, &ke);
        if (v == NULL) {
            return NULL;
        }

        ve = cfcost_json_skip(v, last);
        if (ve == NULL) {
            return NULL;
        }

        p = cfcost_json_skip_ws(ve, last);

        i = cfcost_request_key(k + 1, ke - 1 - (k + 1), names, lens, n);

        if (i >= 0) {
            if (spans[i].end != 0) {
                *twice = names[i];
                return NULL;
            }

            spans[i].start = v - body;
            spans[i].end = ve - body;

            if (i == 0 && cut != NULL) {
                if (p < last && *p == ',') {          /* "key": v,  */
                    cut->start = k - body;
                    cut->end = p + 1 - body;

                } else {                              /* , "key": v */
                    cut->start = (prev_comma ? prev_comma : k) - body;
                    cut->end = ve - body;
                }
            }
        }

        if (p < last && *p == ',') {
            prev_comma = p;
            p = cfcost_json_skip_ws(p + 1, last);
        }
    }

    return (p < last) ? p + 1 : NULL;
}


/* the decoded length of the string literal s (quotes included) */
static size_t
cfcost_request_string_bytes(const char *body, cfcost_span_t *s)
{
    return cfcost_json_unescape(NULL, body + s->start + 1,
                                s->end - s->start - 2);
}


/* the messages array at p: counts, the first bad one, content bytes */
static int
cfcost_request_messages(const char *body, const char *p, const char *last,
    cfcost_request_t *req)
{
    const char    *ve;
    cfcost_span_t  m[2];

    static const char *const  names[] = { "role", "content" };
    static const size_t       lens[] = { 4, 7 };

    req->messages_n = 0;
    req->message_bad = (size_t) -1;
    p = cfcost_json_skip_ws(p + 1, last);

    while (p < last && *p != ']') {
        if (*p == '{') {
            ve = cfcost_request_object(body, p, last, names, lens, 2, m, NULL,
                                       &req->twice);
            if (ve == NULL) {
                return -1;
            }

            if (m[0].end == 0 || body[m[0].start] != '"' || m[1].end == 0) {
                if (req->message_bad == (size_t) -1) {
                    req->message_bad = req->messages_n;
                }

            } else if (body[m[1].start] == '"') {
                req->prompt_bytes += cfcost_request_string_bytes(body, &m[1]);
            }

        } else {
            ve = cfcost_json_skip(p, last);
            if (ve == NULL) {
                return -1;
            }

            if (req->message_bad == (size_t) -1) {
                req->message_bad = req->messages_n;
            }
        }

        req->messages_n++;
        p = cfcost_json_skip_ws(ve, last);

        if (p < last && *p == ',') {
            p = cfcost_json_skip_ws(p + 1, last);
        }
    }

    if (req->message_bad == (size_t) -1) {
        req->message_bad = req->messages_n;
    }

    return 0;
}


int
cfcost_request_read(const char *body, size_t len, cfcost_request_t *req)
{
    const char     *p, *last;
    cfcost_span_t   top[5], opts[1];

    enum { MODEL = 0, MESSAGES, PROMPT, STREAM, STREAM_OPTIONS };

    static const char *const  names[] = {
        "model", "messages", "prompt", "stream", "stream_options"
    };
    static const size_t       lens[] = { 5, 8, 6, 6, 14 };
    static const char *const  opt_names[] = { "include_usage" };
    static const size_t       opt_lens[] = { 13 };

    memset(req, 0, sizeof(cfcost_request_t));

    if (cfcost_json_valid(body, len) != 0) {
        return CFCOST_REQUEST_INVALID;
    }

    last = body + len;
    p = cfcost_json_skip_ws(body, last);

    if (*p != '{') {
        return CFCOST_REQUEST_NOT_OBJECT;
    }

    if (cfcost_request_object(body, p, last, names, lens, 5, top,
                              &req->model_cut, &req->twice)
        == NULL)
    {
        return req->twice ? CFCOST_REQUEST_TWICE : CFCOST_REQUEST_INVALID;
    }

    req->model = top[MODEL];
    req->messages = top[MESSAGES];
    req->prompt = top[PROMPT];
    req->stream = top[STREAM];
    req->stream_options = top[STREAM_OPTIONS];

    if (req->prompt.end && body[req->prompt.start] == '"') {
        req->prompt_bytes = cfcost_request_string_bytes(body, &req->prompt);
    }

    if (req->messages.end && body[req->messages.start] == '[') {
        if (cfcost_request_messages(body, body + req->messages.start, last,
                                    req)
            != 0)
        {
            return req->twice ? CFCOST_REQUEST_TWICE
                              : CFCOST_REQUEST_INVALID;
        }
    }

    if (req->stream_options.end && body[req->stream_options.start] == '{') {
        if (cfcost_request_object(body, body + req->stream_options.start,
                                  last, opt_names, opt_lens, 1, opts, NULL,
                                  &req->twice)
            == NULL)
        {
            return req->twice ? CFCOST_REQUEST_TWICE
                              : CFCOST_REQUEST_INVALID;
        }

        req->include_usage = opts[0];
    }

    return CFCOST_REQUEST_OK;
}
