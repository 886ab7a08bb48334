/*
 * Reading what Workers AI answered: success, errors, the reply text and the
 * token usage, from a parsed response body.  Pure C over jansson, no nginx.
 */

#ifndef CFCOST_USAGE_H
#define CFCOST_USAGE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>


#define CFCOST_DETAIL_MAX  512

/*
 * The most tokens a usage count may report and be billed: 2^24, over 60
 * times the longest context window Workers AI serves (256k tokens).  A
 * larger count is no usage but a fault, and is estimated instead (README,
 * "The estimator"); so is one that is negative, fractional, null or not a
 * number.
 */
#define CFCOST_USAGE_MAX   16777216ULL


typedef struct {
    int          success;       /* envelope "success": 1, 0, or -1 absent */
    int          has_usage;     /* a well-formed usage object was found */
    int          usage_bad;     /* a usage object whose counts cannot be
                                   billed: see cfcost_usage_read() */
    uint64_t     input;         /* prompt tokens, cached ones included */
    uint64_t     output;        /* completion tokens, reasoning included */
    uint64_t     cached;        /* cached prompt tokens (<= input) */
    uint64_t     reasoning;     /* reasoning tokens (part of output) */
    int          has_neurons;
    double       neurons;
    long long    error_code;    /* first error's code; 0 when none */
    char         detail[CFCOST_DETAIL_MAX]; /* "5007: No such model ..." */
    json_t      *text;          /* borrowed from root: the reply, or NULL */
    const char  *text_raw;      /* or, from cfcost_reply_scan(): the reply
                                   as the JSON string literal it was sent
                                   as, quotes included */
    size_t       text_raw_len;
} cfcost_reply_t;


/*
 * Fills *out from a parsed Workers AI body: the native envelope
 * {"result":{...},"success":..,"errors":[..]} whose result is either the
 * classic {"response","usage"} or a chat.completion object, or a bare
 * OpenAI object.  Never fails: what is absent stays zero / NULL.
 * out->text borrows from root and lives as long as root does.
 */
void cfcost_reply_parse(json_t *root, cfcost_reply_t *out);

/*
 * Reads a usage object ({prompt_tokens, completion_tokens, ...} or the
 * Responses API's {input_tokens, output_tokens, ...}) into out.  Returns 0
 * and sets out->has_usage, or -1 when the object is not a usable usage;
 * then only out->usage_bad may change: set when a count is there but is
 * not a whole number from 0 to CFCOST_USAGE_MAX (negative, fractional,
 * null, not a number, or absurd: beyond CFCOST_USAGE_MAX, up to beyond
 * 64 bits as cfcost_json_load() reads them), and when one is missing: an
 * output count without the input count, or an input count with neither
 * the output count nor a total_tokens from which it follows (embeddings
 * report input and total only).  An object without counts leaves it 0.
 */
int cfcost_usage_read(json_t *usage, cfcost_reply_t *out);

/*
 * json_loadb() for upstream bytes: when the text does not parse, it is
 * read once more with every integer as a double, so that a count too big
 * for 64 bits makes the usage unusable (cfcost_usage_read) rather than
 * the whole answer unreadable.  NULL when it is not JSON either way.
 */
json_t *cfcost_json_load(const char *buf, size_t len, size_t flags);

/*
 * Finds, in a JSON text already known to be valid, the value reached by
 * following the object keys path[0..n), n >= 1, from the top ("result",
 * "usage").
 * Returns 0 and the value's span [*start, *end), or -1 if a key is absent
 * or something on the way is not an object.  Keys are matched as they are
 * written (no unescaping): -2 when an object on the way has a key written
 * with an escape ("\u0075sage"), which may be the key sought, and the
 * last one, as a parser reads it.  With a key given twice, the last.  No
 * allocation: used to add one field to an answer without re-serializing
 * it.
 */
int cfcost_json_locate(const char *json, size_t len, const char **path,
    size_t n, size_t *start, size_t *end);

/*
 * The usage object cfcost_reply_parse() reads, in a valid JSON text: the
 * "usage" of a "result" object (Cloudflare's envelope), else the top
 * object's (OpenAI's).  Returns 0 and its span [*start, *end), or -1
 * when there is none, or when a key written with an escape on the way
 * may name it (cfcost_json_locate()).  Where "cost_usd" goes.
 */
int cfcost_usage_locate(const char *json, size_t len, size_t *start,
    size_t *end);

/*
 * The bytes to cut from a valid JSON object to remove its top-level member
 * key: the member and one comma beside it.  Returns 0 and the span
 * [*start, *end), or -1 when the object has no such member.
 */
int cfcost_json_cut(const char *json, size_t len, const char *key,
    size_t *start, size_t *end);

/*
 * The fast path of cfcost_reply_parse(), without building a JSON tree: for
 * the common answer only -- an object with "success": true (or an OpenAI
 * object without an envelope), a usage object of plain integer counts,
 * and, when need_text, "response" as a string.  Returns 0 with *out filled
 * (text_raw set, text NULL), or -1 when the answer is anything else; the
 * caller then parses it whole.  What it reads is what cfcost_reply_parse()
 * reads (t/unit/fuzz_usage.c checks it).  The text must be valid JSON:
 * this checks only that strings and brackets balance.
 */
int cfcost_reply_scan(const char *json, size_t len, int need_text,
    cfcost_reply_t *out);

#endif /* CFCOST_USAGE_H */
