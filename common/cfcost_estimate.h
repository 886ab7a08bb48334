/*
 * What the token estimator reads: the generated text of an answer, and the
 * output cap of a request.  Pure C over the bytes, no allocation.
 */

#ifndef CFCOST_ESTIMATE_H
#define CFCOST_ESTIMATE_H

#include <stddef.h>
#include <stdint.h>


/*
 * The token estimator's reading of an answer: how many bytes of generated
 * text it carries, in any valid JSON however written (white space, key
 * order, escapes), fed in pieces cut anywhere.  Counted: the string value
 * of "response" in the top-level object or in its "result" object
 * (Workers AI, and its stream events), and the string value of "content"
 * in any object that is the value of a "message" or "delta" member
 * (OpenAI's choices, whole or streamed).  A string counts the UTF-8 bytes
 * it decodes to: an escape one byte, \uXXXX the length of its code point
 * in UTF-8 (each half of a surrogate pair 2, so a pair 4).  Text cut off
 * counts up to the cut.  Containers nested deeper than CFCOST_TEXT_DEPTH
 * are skipped.  No allocation, never fails.
 */

#define CFCOST_TEXT_DEPTH  32
#define CFCOST_TEXT_KEY    16         /* longest key compared, bytes */

typedef struct {
    uint64_t       bytes;           /* text counted so far */
    uint32_t       depth;           /* containers open, however deep */
    uint32_t       hex;             /* a \u escape's value so far */
    unsigned char  state;
    unsigned char  str;             /* what the open string is */
    unsigned char  hex_left;        /* \u digits still to come */
    unsigned char  key_len;         /* > CFCOST_TEXT_KEY: too long */
    char           key[CFCOST_TEXT_KEY];
    unsigned char  level[CFCOST_TEXT_DEPTH];
} cfcost_text_t;


void cfcost_text_init(cfcost_text_t *t);
void cfcost_text_feed(cfcost_text_t *t, const char *buf, size_t len);

/* the same over one whole (or cut) text */
uint64_t cfcost_text_bytes(const char *json, size_t len);

/*
 * The output cap a request sets: "max_tokens", else OpenAI's
 * "max_completion_tokens", in the top-level object of a valid JSON body,
 * a whole number >= 0 (a larger one than CFCOST_USAGE_MAX reads as
 * CFCOST_USAGE_MAX).  Returns 0 and *cap, or -1 when there is none.
 */
int cfcost_request_max_tokens(const char *json, size_t len, uint64_t *cap);

#endif /* CFCOST_ESTIMATE_H */
