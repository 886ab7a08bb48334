/*
 * A strict JSON validator for upstream response bodies: pure C, no nginx,
 * no allocation, no recursion, one pass over the bytes.
 */

#ifndef CFCOST_JSON_H
#define CFCOST_JSON_H

#include <stddef.h>


#define CFCOST_JSON_DEPTH  512      /* deepest nesting accepted */


/*
 * Whether buf[0..len) is one JSON text as RFC 8259 defines it, in UTF-8:
 *
 *   - one value of any kind (object, array, string, number, true, false,
 *     null), with optional whitespace (space, \t, \n, \r only) around it
 *     and nothing else; empty input is not a JSON text;
 *   - numbers are -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, of any
 *     length and magnitude (1e400 is valid syntax); no "+", no leading
 *     zero, no ".5", no "1.", no NaN, Infinity or hex;
 *   - strings hold no raw control character (below 0x20); the escapes are
 *     \" \\ \/ \b \f \n \r \t and \uXXXX (hex of either case); a \u escape
 *     of a high surrogate (D800-DBFF) must be followed at once by a \u
 *     escape of a low surrogate (DC00-DFFF), a low one may not stand
 *     alone; \u0000 is allowed;
 *   - the bytes are well-formed UTF-8: no continuation byte as a lead, no
 *     C0, C1 or F5-FF, no truncated sequence, no overlong form, no encoded
 *     surrogate (ED A0-BF), nothing above U+10FFFF (F4 90 and up);
 *     outside strings only whitespace and ASCII tokens are legal, so a
 *     byte order mark is invalid, and a raw NUL is invalid anywhere;
 *   - arrays and objects nest at most CFCOST_JSON_DEPTH deep;
 *   - an object may repeat a key: which one counts is the reader's choice.
 *
 * Returns 0 when valid, -1 when not.  No allocation, no recursion, never
 * reads past len.
 */
int cfcost_json_valid(const char *buf, size_t len);

/*
 * src[0..len) written as the inside of a JSON string, always valid: '"',
 * '\\' and control characters escaped (\n \r \t \b \f by name, the others
 * as \u00XX), valid UTF-8 as it is, and each byte that begins no valid
 * UTF-8 sequence as U+FFFD.  cfcost_json_quote_len() is the exact length;
 * cfcost_json_quote() writes it to dst and returns its end.  Every JSON
 * string cfcost writes from bytes it did not make goes through here.
 */
size_t cfcost_json_quote_len(const char *src, size_t len);
char *cfcost_json_quote(char *dst, const char *src, size_t len);

/*
 * Walking a text already known valid (cfcost_json_valid()), without
 * building anything.  Each returns NULL rather than read past end.
 *
 *   cfcost_json_skip_ws(p, end)   past white space
 *   cfcost_json_skip(p, end)      past the value that starts at p
 *   cfcost_json_member(p, end, &key_end)
 *                                 p at a member's key (its opening quote):
 *                                 where its value starts (past the colon
 *                                 and white space); *key_end is past the
 *                                 key's closing quote
 */
const char *cfcost_json_skip_ws(const char *p, const char *end);
const char *cfcost_json_skip(const char *p, const char *end);
const char *cfcost_json_member(const char *p, const char *end,
    const char **key_end);

/*
 * The inside of a valid JSON string literal, src[0..len) (no quotes),
 * decoded to UTF-8 at dst; returns its length, never more than len.  With
 * dst NULL, only the length.
 */
size_t cfcost_json_unescape(char *dst, const char *src, size_t len);

#endif /* CFCOST_JSON_H */
