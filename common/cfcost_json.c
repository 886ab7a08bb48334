/*
 * A strict RFC 8259 validator: one pass, no allocation, no recursion.
 * Nesting is kept as one bit per level (object or array) on the stack.
 */

#include <string.h>

#include "cfcost_json.h"


/* what a byte means inside a string: cfcost_json_class[] */
#define CFCOST_JSON_PLAIN  0        /* ASCII taken as is */
#define CFCOST_JSON_QUOTE  1
#define CFCOST_JSON_ESC    2
#define CFCOST_JSON_BAD    3        /* control, stray or banned UTF-8 byte */
#define CFCOST_JSON_U2     4        /* C2-DF: one continuation byte */
#define CFCOST_JSON_E0     5        /* E0: A0-BF then one more */
#define CFCOST_JSON_U3     6        /* E1-EC, EE-EF: two */
#define CFCOST_JSON_ED     7        /* ED: 80-9F (no surrogates) then one */
#define CFCOST_JSON_F0     8        /* F0: 90-BF then two more */
#define CFCOST_JSON_U4     9        /* F1-F3: three */
#define CFCOST_JSON_F4     10       /* F4: 80-8F (up to U+10FFFF) then two */

#define cfcost_json_digit(c)  ((unsigned) ((c) - '0') < 10)


static const unsigned char *cfcost_json_ws(const unsigned char *p,
    const unsigned char *end);
static long cfcost_json_hex4(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *cfcost_json_escape(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *cfcost_json_utf8(const unsigned char *p,
    const unsigned char *end, unsigned cls);
static const unsigned char *cfcost_json_string(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *cfcost_json_key(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *cfcost_json_digits(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *cfcost_json_number(const unsigned char *p,
    const unsigned char *end);


/*
 * One lookup per string byte: PLAIN (0) lets the common case through
 * with a single test, everything else goes to a switch.
 */
static const unsigned char  cfcost_json_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* 00-0F */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* 10-1F */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /*  !"#... */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* 0-9:;<=>? */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* @A-O */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,       /* P-Z[\]^_ */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* `a-o */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,       /* p-z{|}~ DEL */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* 80-8F */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* 90-9F */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* A0-AF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,       /* B0-BF */
    3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,       /* C0-CF */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,       /* D0-DF */
    5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 6, 6,       /* E0-EF */
    8, 9, 9, 9, 10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3       /* F0-FF */
};


int
cfcost_json_valid(const char *buf, size_t len)
{
    size_t                depth, top;
    unsigned char         close;
    unsigned char         obj[(CFCOST_JSON_DEPTH + 7) / 8];
    const unsigned char  *p, *end;

    if (len == 0) {
        return -1;
    }

    p = (const unsigned char *) buf;
    end = p + len;
    depth = 0;
    close = 0;

    for ( ;; ) {

        /* p is where a value must start */

        p = cfcost_json_ws(p, end);
        if (p == end) {
            return -1;
        }

        switch (*p) {

        case '{':
        case '[':
            if (depth == CFCOST_JSON_DEPTH) {
                return -1;
            }

            if (*p == '{') {
                obj[depth >> 3] |= (unsigned char) (1u << (depth & 7));
                close = '}';

            } else {
                obj[depth >> 3] &= (unsigned char) ~(1u << (depth & 7));
                close = ']';
            }

            depth++;

            p = cfcost_json_ws(p + 1, end);
            if (p < end && *p == close) {
                p++;
                depth--;
                break;                        /* empty: a value complete */
            }

            if (close == '}') {
                p = cfcost_json_key(p, end);
                if (p == NULL) {
                    return -1;
                }
            }

            continue;                         /* the first member's value */

        case '"':
            p = cfcost_json_string(p + 1, end);
            break;

        case 't':
            p = (end - p >= 4 && memcmp(p, "true", 4) == 0) ? p + 4 : NULL;
            break;

        case 'f':
            p = (end - p >= 5 && memcmp(p, "false", 5) == 0) ? p + 5 : NULL;
            break;

        case 'n':
            p = (end - p >= 4 && memcmp(p, "null", 4) == 0) ? p + 4 : NULL;
            break;

        default:
            p = cfcost_json_number(p, end);
            break;
        }

        if (p == NULL) {
            return -1;
        }

        /*
         * A value is complete: close the containers that end here, then
         * a comma leads to the next value, or the text must end.  What
         * follows a number or a literal is checked here too, so "01",
         * "1x" and "truex" fail on their second token.
         */

        for ( ;; ) {
            p = cfcost_json_ws(p, end);

            if (depth == 0) {
                return (p == end) ? 0 : -1;
            }

            if (p == end) {
                return -1;
            }

            top = depth - 1;
            close = (obj[top >> 3] >> (top & 7)) & 1 ? '}' : ']';

            if (*p == ',') {
                break;
            }

            if (*p != close) {
                return -1;
            }

            p++;
            depth--;
        }

        p++;

        if (close == '}') {
            p = cfcost_json_key(p, end);
            if (p == NULL) {
                return -1;
            }
        }
    }
}


static const unsigned char *
cfcost_json_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }

    return p;
}


/* the value of four hex digits at p, or -1 */
static long
cfcost_json_hex4(const unsigned char *p, const unsigned char *end)
{
    long           v;
    size_t         i;
    unsigned char  c;

    if (end - p < 4) {
        return -1;
    }

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (cfcost_json_digit(c)) {
            v = v * 16 + (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = v * 16 + ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return v;
}


/*
 * Past the escape whose backslash precedes p, or NULL.  A \u escape
 * stands for a UTF-16 code unit: a surrogate is only a character as a
 * high-low pair of escapes, so either half alone is invalid.
 */
static const unsigned char *
cfcost_json_escape(const unsigned char *p, const unsigned char *end)
{
    long  u;

    if (p == end) {
        return NULL;
    }

    switch (*p) {

    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return p + 1;

    case 'u':
        break;

    default:
        return NULL;
    }

    u = cfcost_json_hex4(p + 1, end);

    if (u < 0xd800 || u > 0xdfff) {
        return (u < 0) ? NULL : p + 5;
    }

    if (u >= 0xdc00) {
        return NULL;
    }

    p += 5;

    if (end - p < 2 || p[0] != '\\' || p[1] != 'u') {
        return NULL;
    }

    u = cfcost_json_hex4(p + 2, end);

    if (u < 0xdc00 || u > 0xdfff) {
        return NULL;
    }

    return p + 6;
}


/*
 * Past the multi-byte UTF-8 character whose lead byte, of class cls, is
 * at p, or NULL.  The second byte's range is what rules out overlong
 * forms, encoded surrogates and code points above U+10FFFF (RFC 3629).
 */
static const unsigned char *
cfcost_json_utf8(const unsigned char *p, const unsigned char *end,
    unsigned cls)
{
    size_t         n, i;
    unsigned char  lo, hi;

    lo = 0x80;
    hi = 0xbf;

    switch (cls) {

    case CFCOST_JSON_U2:
        n = 1;
        break;

    case CFCOST_JSON_E0:
        n = 2;
        lo = 0xa0;
        break;

    case CFCOST_JSON_U3:
        n = 2;
        break;

    case CFCOST_JSON_ED:
        n = 2;
        hi = 0x9f;
        break;

    case CFCOST_JSON_F0:
        n = 3;
        lo = 0x90;
        break;

    case CFCOST_JSON_U4:
        n = 3;
        break;

    case CFCOST_JSON_F4:
        n = 3;
        hi = 0x8f;
        break;

    default:
        return NULL;
    }

    p++;

    if ((size_t) (end - p) < n || p[0] < lo || p[0] > hi) {
        return NULL;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return NULL;
        }
    }

    return p + n;
}


/* past the closing quote of the string whose opening quote precedes p */
static const unsigned char *
cfcost_json_string(const unsigned char *p, const unsigned char *end)
{
    unsigned  cls;

    for ( ;; ) {

        /* a body is mostly plain ASCII text: four bytes a test */

        while (end - p >= 4
               && (cfcost_json_class[p[0]] | cfcost_json_class[p[1]]
                   | cfcost_json_class[p[2]] | cfcost_json_class[p[3]])
                  == CFCOST_JSON_PLAIN)
        {
            p += 4;
        }

        while (p < end && cfcost_json_class[*p] == CFCOST_JSON_PLAIN) {
            p++;
        }

        if (p == end) {
            return NULL;
        }

        cls = cfcost_json_class[*p];

        switch (cls) {

        case CFCOST_JSON_QUOTE:
            return p + 1;

        case CFCOST_JSON_ESC:
            p = cfcost_json_escape(p + 1, end);
            break;

        case CFCOST_JSON_BAD:
            return NULL;

        default:
            p = cfcost_json_utf8(p, end, cls);
            break;
        }

        if (p == NULL) {
            return NULL;
        }
    }
}


/* past the ':' after an object member's key, whitespace included */
static const unsigned char *
cfcost_json_key(const unsigned char *p, const unsigned char *end)
{
    p = cfcost_json_ws(p, end);
    if (p == end || *p != '"') {
        return NULL;
    }

    p = cfcost_json_string(p + 1, end);
    if (p == NULL) {
        return NULL;
    }

    p = cfcost_json_ws(p, end);
    if (p == end || *p != ':') {
        return NULL;
    }

    return p + 1;
}


static const unsigned char *
cfcost_json_digits(const unsigned char *p, const unsigned char *end)
{
    while (p < end && cfcost_json_digit(*p)) {
        p++;
    }

    return p;
}


/*
 * Past the number at p, or NULL: -?(0|[1-9][0-9]*)(\.[0-9]+)?
 * ([eE][+-]?[0-9]+)?, of any length.  What may follow it is the caller's
 * concern.
 */
static const unsigned char *
cfcost_json_number(const unsigned char *p, const unsigned char *end)
{
    if (*p == '-') {
        p++;
    }

    if (p == end || !cfcost_json_digit(*p)) {
        return NULL;
    }

    p = (*p == '0') ? p + 1 : cfcost_json_digits(p + 1, end);

    if (p < end && *p == '.') {
        p++;

        if (p == end || !cfcost_json_digit(*p)) {
            return NULL;
        }

        p = cfcost_json_digits(p + 1, end);
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == end || !cfcost_json_digit(*p)) {
            return NULL;
        }

        p = cfcost_json_digits(p + 1, end);
    }

    return p;
}


/*
 * One writer for both: with dst NULL it only counts.  What is escaped is
 * what ngx_escape_json() escapes, so valid text reads the same as before;
 * a byte that begins no valid UTF-8 sequence becomes U+FFFD.
 */
static size_t
cfcost_json_quote_to(char *dst, const char *src, size_t len)
{
    size_t                n, k;
    unsigned              cls;
    const unsigned char  *p, *end, *next;

    static const char  hex[] = "0123456789abcdef";
    static const char  cfcost_json_short[0x20] = {
        ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r'
    };

    n = 0;
    p = (const unsigned char *) src;
    end = p + len;

    while (p < end) {
        cls = cfcost_json_class[*p];

        if (cls == CFCOST_JSON_PLAIN) {
            if (dst) {
                dst[n] = (char) *p;
            }

            n++;
            p++;
            continue;
        }

        if (cls == CFCOST_JSON_QUOTE || cls == CFCOST_JSON_ESC) {
            if (dst) {
                dst[n] = '\\';
                dst[n + 1] = (char) *p;
            }

            n += 2;
            p++;
            continue;
        }

        if (*p < 0x20) {
            k = cfcost_json_short[*p] ? 2 : 6;

            if (dst && k == 2) {
                dst[n] = '\\';
                dst[n + 1] = cfcost_json_short[*p];

            } else if (dst) {
                memcpy(dst + n, "\\u00", 4);
                dst[n + 4] = hex[*p >> 4];
                dst[n + 5] = hex[*p & 0xf];
            }

            n += k;
            p++;
            continue;
        }

        next = cfcost_json_utf8(p, end, cls);

        if (next == NULL) {
            if (dst) {
                memcpy(dst + n, "\xef\xbf\xbd", 3);      /* U+FFFD */
            }

            n += 3;
            p++;
            continue;
        }

        if (dst) {
            memcpy(dst + n, p, next - p);
        }

        n += next - p;
        p = next;
    }

    return n;
}


size_t
cfcost_json_quote_len(const char *src, size_t len)
{
    return cfcost_json_quote_to(NULL, src, len);
}


char *
cfcost_json_quote(char *dst, const char *src, size_t len)
{
    return dst + cfcost_json_quote_to(dst, src, len);
}


const char *
cfcost_json_skip_ws(const char *p, const char *end)
{
    return (const char *) cfcost_json_ws((const unsigned char *) p,
                                         (const unsigned char *) end);
}


/* past the string whose opening quote is at p: its first unescaped '"' */
static const char *
cfcost_json_skip_string(const char *p, const char *end)
{
    size_t       n;
    const char  *q, *b;

    for (q = p + 1; q < end; q++) {
        q = memchr(q, '"', end - q);
        if (q == NULL) {
            return NULL;
        }

        for (b = q, n = 0; b > p + 1 && b[-1] == '\\'; b--) {
            n++;
        }

        if ((n & 1) == 0) {
            return q + 1;
        }
    }

    return NULL;
}


const char *
cfcost_json_skip(const char *p, const char *end)
{
    size_t  depth;

    if (p >= end) {
        return NULL;
    }

    if (*p == '"') {
        return cfcost_json_skip_string(p, end);
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
            p = cfcost_json_skip_string(p, end);
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


const char *
cfcost_json_member(const char *p, const char *end, const char **key_end)
{
    const char  *v;

    if (p >= end || *p != '"') {
        return NULL;
    }

    *key_end = cfcost_json_skip_string(p, end);
    if (*key_end == NULL) {
        return NULL;
    }

    v = cfcost_json_skip_ws(*key_end, end);
    if (v >= end || *v != ':') {
        return NULL;
    }

    return cfcost_json_skip_ws(v + 1, end);
}


size_t
cfcost_json_unescape(char *dst, const char *src, size_t len)
{
    size_t          n, d;
    const char     *p, *end, *q;
    unsigned long   cp;

    d = 0;
    p = src;
    end = src + len;

    while (p < end) {
        q = memchr(p, '\\', end - p);
        n = (q ? q : end) - p;

        if (dst != NULL) {
            memcpy(dst + d, p, n);
        }

        d += n;
        p += n;

        if (q == NULL || end - p < 2) {
            break;
        }

        if (p[1] != 'u') {
            if (dst != NULL) {
                switch (p[1]) {
                case 'b': dst[d] = '\b'; break;
                case 'f': dst[d] = '\f'; break;
                case 'n': dst[d] = '\n'; break;
                case 'r': dst[d] = '\r'; break;
                case 't': dst[d] = '\t'; break;
                default:  dst[d] = p[1]; break;       /* " \ / */
                }
            }

            d++;
            p += 2;
            continue;
        }

        if (end - p < 6) {
            break;
        }

        /* valid text: never -1 */
        cp = (unsigned long) cfcost_json_hex4((const unsigned char *) p + 2,
                                              (const unsigned char *) end);
        p += 6;

        if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 && p[0] == '\\'
            && p[1] == 'u')
        {
            cp = 0x10000 + ((cp - 0xd800) << 10)
                 + ((unsigned long) cfcost_json_hex4(
                        (const unsigned char *) p + 2,
                        (const unsigned char *) end) - 0xdc00);
            p += 6;
        }

        if (cp < 0x80) {
            n = 1;
        } else if (cp < 0x800) {
            n = 2;
        } else if (cp < 0x10000) {
            n = 3;
        } else {
            n = 4;
        }

        if (dst != NULL) {
            switch (n) {
            case 1:
                dst[d] = (char) cp;
                break;
            case 2:
                dst[d] = (char) (0xc0 | (cp >> 6));
                dst[d + 1] = (char) (0x80 | (cp & 0x3f));
                break;
            case 3:
                dst[d] = (char) (0xe0 | (cp >> 12));
                dst[d + 1] = (char) (0x80 | ((cp >> 6) & 0x3f));
                dst[d + 2] = (char) (0x80 | (cp & 0x3f));
                break;
            default:
                dst[d] = (char) (0xf0 | (cp >> 18));
                dst[d + 1] = (char) (0x80 | ((cp >> 12) & 0x3f));
                dst[d + 2] = (char) (0x80 | ((cp >> 6) & 0x3f));
                dst[d + 3] = (char) (0x80 | (cp & 0x3f));
                break;
            }
        }

        d += n;
    }

    return d;
}
