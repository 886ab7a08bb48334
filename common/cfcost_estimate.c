/*
 * What the token estimator reads (README, "The estimator"): the bytes of
 * generated text in an answer, fed in pieces cut anywhere, and the output
 * cap a request sets.  Pure C, no allocation.
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_usage.h"
#include "cfcost_estimate.h"


/* the text counter: see cfcost_estimate.h */

#define CFCOST_T_VALUE     0          /* between strings */
#define CFCOST_T_STR       1
#define CFCOST_T_ESC       2          /* after a backslash */
#define CFCOST_T_HEX       3          /* in the digits of \uXXXX */

#define CFCOST_S_SKIP      0          /* the open string is not counted */
#define CFCOST_S_KEY       1
#define CFCOST_S_TEXT      2

#define CFCOST_L_OBJ       0x01       /* an object, not an array */
#define CFCOST_L_KEY       0x02       /* the object waits for a key */
#define CFCOST_L_MSG       0x04       /* the value of "message"/"delta" */
#define CFCOST_L_TOP       0x08       /* the top object or its "result" */

#define CFCOST_K_OTHER     0          /* the member's key, in bits 4-6 */
#define CFCOST_K_RESPONSE  1
#define CFCOST_K_CONTENT   2
#define CFCOST_K_MESSAGE   3          /* "message" or "delta" */
#define CFCOST_K_RESULT    4

#define cfcost_text_kind(l)  (((l) >> 4) & 0x07)


void
cfcost_text_init(cfcost_text_t *t)
{
    memset(t, 0, sizeof(cfcost_text_t));
}


/* the innermost container, or NULL at the top or too deep to track */
static unsigned char *
cfcost_text_level(cfcost_text_t *t)
{
    if (t->depth == 0 || t->depth > CFCOST_TEXT_DEPTH) {
        return NULL;
    }

    return &t->level[t->depth - 1];
}


static unsigned
cfcost_text_key(cfcost_text_t *t)
{
    size_t  i;

    static const struct {
        const char  *name;
        size_t       len;
        unsigned     kind;
    } keys[] = {
        { "response", 8, CFCOST_K_RESPONSE },
        { "content", 7, CFCOST_K_CONTENT },
        { "message", 7, CFCOST_K_MESSAGE },
        { "delta", 5, CFCOST_K_MESSAGE },
        { "result", 6, CFCOST_K_RESULT },
    };

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (t->key_len == keys[i].len
            && memcmp(t->key, keys[i].name, keys[i].len) == 0)
        {
            return keys[i].kind;
        }
    }

    return CFCOST_K_OTHER;
}


static void
cfcost_text_key_add(cfcost_text_t *t, unsigned c)
{
    if (t->key_len < CFCOST_TEXT_KEY) {
        t->key[t->key_len++] = (char) c;

    } else {
        t->key_len = CFCOST_TEXT_KEY + 1;      /* longer than any we want */
    }
}


/* a decoded character of the open string: counted, or part of a key */
static void
cfcost_text_char(cfcost_text_t *t, unsigned c, unsigned bytes)
{
    if (t->str == CFCOST_S_TEXT) {
        t->bytes += bytes;

    } else if (t->str == CFCOST_S_KEY) {
        cfcost_text_key_add(t, bytes == 1 ? c : 0x80);
    }
}


static void
cfcost_text_open(cfcost_text_t *t, char c)
{
    unsigned char  *parent, flags;

    parent = cfcost_text_level(t);
    flags = 0;

    if (c == '{') {
        flags = CFCOST_L_OBJ | CFCOST_L_KEY;

        if (t->depth == 0) {
            flags |= CFCOST_L_TOP;

        } else if (parent != NULL && (*parent & CFCOST_L_OBJ)) {
            if (cfcost_text_kind(*parent) == CFCOST_K_MESSAGE) {
                flags |= CFCOST_L_MSG;
            }

            if (cfcost_text_kind(*parent) == CFCOST_K_RESULT
                && t->depth == 1)
            {
                flags |= CFCOST_L_TOP;
            }
        }
    }

    t->depth++;

    if (t->depth <= CFCOST_TEXT_DEPTH) {
        t->level[t->depth - 1] = flags;
    }
}


/* a string begins: a key, text to count, or anything else */
static void
cfcost_text_string(cfcost_text_t *t)
{
    unsigned char  *l;
    unsigned        kind;

    l = cfcost_text_level(t);
    t->str = CFCOST_S_SKIP;
    t->state = CFCOST_T_STR;

    if (l == NULL || !(*l & CFCOST_L_OBJ)) {
        return;
    }

    if (*l & CFCOST_L_KEY) {
        t->str = CFCOST_S_KEY;
        t->key_len = 0;
        return;
    }

    kind = cfcost_text_kind(*l);

    if ((kind == CFCOST_K_RESPONSE && (*l & CFCOST_L_TOP))
        || (kind == CFCOST_K_CONTENT && (*l & CFCOST_L_MSG)))
    {
        t->str = CFCOST_S_TEXT;
    }
}


static void
cfcost_text_string_end(cfcost_text_t *t)
{
    unsigned char  *l;

    t->state = CFCOST_T_VALUE;

    if (t->str != CFCOST_S_KEY) {
        return;
    }

    l = cfcost_text_level(t);
    if (l != NULL) {
        *l = (unsigned char) ((*l & 0x0f & ~CFCOST_L_KEY)
                              | (cfcost_text_key(t) << 4));
    }
}


static int
cfcost_text_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


void
cfcost_text_feed(cfcost_text_t *t, const char *buf, size_t len)
{
    int             d;
    char            c;
    size_t          i;
    unsigned char  *l;

    for (i = 0; i < len; i++) {
        c = buf[i];

        switch (t->state) {

        case CFCOST_T_VALUE:
            if (c == '"') {
                cfcost_text_string(t);

            } else if (c == '{' || c == '[') {
                cfcost_text_open(t, c);

            } else if (c == '}' || c == ']') {
                if (t->depth) {
                    t->depth--;
                }

            } else if (c == ',') {
                l = cfcost_text_level(t);
                if (l != NULL && (*l & CFCOST_L_OBJ)) {
                    *l = (unsigned char) ((*l & 0x0f) | CFCOST_L_KEY);
                }
            }

            break;

        case CFCOST_T_STR:
            if (c == '"') {
                cfcost_text_string_end(t);

            } else if (c == '\\') {
                t->state = CFCOST_T_ESC;

            } else {
                cfcost_text_char(t, (unsigned char) c, 1);
            }

            break;

        case CFCOST_T_ESC:
            if (c == 'u') {
                t->state = CFCOST_T_HEX;
                t->hex = 0;
                t->hex_left = 4;
                break;
            }

            /* \" \\ \/ stand for themselves; \b \f \n \r \t for controls */
            cfcost_text_char(t, (c == '"' || c == '\\' || c == '/')
                                ? (unsigned char) c : 0x01, 1);
            t->state = CFCOST_T_STR;
            break;

        default:                               /* CFCOST_T_HEX */
            d = cfcost_text_hex(c);

            if (d < 0) {                       /* not JSON: carry on */
                t->state = CFCOST_T_STR;
                i--;
                break;
            }

            t->hex = t->hex * 16 + d;

            if (--t->hex_left == 0) {
                /* UTF-8 length; each half of a surrogate pair 2 */
                cfcost_text_char(t, t->hex,
                                 t->hex < 0x80 ? 1
                                 : t->hex < 0x800 ? 2
                                 : (t->hex >= 0xd800 && t->hex <= 0xdfff)
                                   ? 2 : 3);
                t->state = CFCOST_T_STR;
            }
        }
    }
}


uint64_t
cfcost_text_bytes(const char *json, size_t len)
{
    cfcost_text_t  t;

    cfcost_text_init(&t);
    cfcost_text_feed(&t, json, len);

    return t.bytes;
}


/* a whole number >= 0 as JSON writes it ("256", "1e3", "100.0") */
static int
cfcost_whole_number(const char *p, size_t n, uint64_t *v)
{
    char      num[64], *end;
    double    d;
    size_t    i;
    uint64_t  x;

    for (x = 0, i = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        x = (x > CFCOST_USAGE_MAX) ? x : x * 10 + (p[i] - '0');
    }

    if (n > 0 && i == n) {
        *v = x > CFCOST_USAGE_MAX ? CFCOST_USAGE_MAX : x;
        return 0;
    }

    if (n == 0 || n >= sizeof(num) || p[0] == '-') {
        return -1;
    }

    memcpy(num, p, n);
    num[n] = '\0';
    d = strtod(num, &end);

    if (end != num + n || !(d >= 0)) {
        return -1;
    }

    if (d > (double) CFCOST_USAGE_MAX) {
        *v = CFCOST_USAGE_MAX;
        return 0;
    }

    if (d != (double) (uint64_t) d) {
        return -1;
    }

    *v = (uint64_t) d;

    return 0;
}


int
cfcost_request_max_tokens(const char *json, size_t len, uint64_t *cap)
{
    size_t       i, s, e;
    const char  *path[1];

    static const char  *names[] = { "max_tokens", "max_completion_tokens" };

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        path[0] = names[i];

        if (cfcost_json_locate(json, len, path, 1, &s, &e) == 0
            && cfcost_whole_number(json + s, e - s, cap) == 0)
        {
            return 0;
        }
    }

    return -1;
}
