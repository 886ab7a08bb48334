/*
 * Unit tests for common/cfcost_json.c: RFC 8259 accepted and refused
 * byte by byte (JSONTestSuite-style y_ and n_ cases), nesting at the
 * limit, real response bodies, and a differential run against jansson.
 *
 * CFCOST_JSON_BENCH=1 also times a 4 KB Workers AI body.
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <jansson.h>

#include "cfcost_json.h"
#include "tap.h"


typedef struct {
    const char  *text;
    size_t       len;
    int          valid;
} jcase_t;

#define Y(s)  { s, sizeof(s) - 1, 1 }
#define N(s)  { s, sizeof(s) - 1, 0 }
#define NCASES(a)  (sizeof(a) / sizeof((a)[0]))
#define differ_lit(s, d)  differ(s, sizeof(s) - 1, d)


/* what the differential run saw: agreements, and why the rest differ */
typedef struct {
    uint64_t  agree;
    uint64_t  big_number;      /* jansson: beyond int64 or double */
    uint64_t  depth;           /* between our limit and jansson's */
    uint64_t  nul_key;         /* jansson cannot store "\u0000" in a key */
    uint64_t  nul_dropped;     /* jansson drops a NUL after a number */
    uint64_t  differ;          /* none of the above: a bug somewhere */
} jdiff_t;


/* Workers AI, native route: a markdown answer of about 4 KB */
static const char  workers_body[] =
    "{\"result\":{\"response\":\"Here is a practical overview of how to "
    "keep the cost of a Workers AI application predictable.\\n\\n## 1. "
    "Know what you are billed for\\n\\nWorkers AI bills in **neurons**, "
    "a unit that folds input and output tokens into one number per model. "
    "A small model such as `@cf/meta/llama-3.2-1b-instruct` costs a "
    "fraction of what a 70B model costs for the same prompt, so the first "
    "lever is simply choosing the smallest model that answers well "
    "enough.\\n\\n| Model | Input | Output |\\n|---|---|---|\\n| "
    "llama-3.2-1b | $0.027 / M tokens | $0.201 / M tokens |\\n| "
    "llama-3.3-70b | $0.293 / M tokens | $2.253 / M tokens |\\n\\n## 2. "
    "Cap the output\\n\\nSet `max_tokens` on every request. Without it a "
    "model can ramble until its context is full \\u2014 and you pay for "
    "every token. A cap of 256 is plenty for classification or "
    "extraction; summaries rarely need more than 512.\\n\\n```js\\nconst "
    "answer = await env.AI.run(\\\"@cf/meta/llama-3.1-8b-instruct\\\", "
    "{\\n  messages: [{ role: \\\"user\\\", content: prompt }],\\n  "
    "max_tokens: 256,\\n});\\n```\\n\\n## 3. Trim the prompt\\n\\nLong "
    "system prompts are paid for on every call. Move examples that only "
    "matter for rare cases into a retrieval step, and strip whitespace "
    "and boilerplate from documents before you send them. Caching helps "
    "too: when the same prefix is sent again, cached input tokens are "
    "cheaper than fresh ones.\\n\\n## 4. Measure per key\\n\\nPut a "
    "gateway in front of the API that records, for every request, the "
    "key, the model, the tokens in and out, and the cost. With that you "
    "can answer the questions that matter:\\n\\n- Which team spent what "
    "this week?\\n- Which model is the most expensive per useful "
    "answer?\\n- Did yesterday\xe2\x80\x99s deploy double the average "
    "prompt length?\\n\\nA daily budget per key, enforced at the gateway, "
    "turns a runaway loop from an invoice surprise into a 429 that "
    "someone notices within minutes.\\n\\n## 5. Stream, but account for "
    "it\\n\\nStreaming (`\\\"stream\\\": true`) improves perceived "
    "latency, but the usage numbers arrive in the last event only. Make "
    "sure whatever records cost reads that final event, and that a "
    "client hanging up early is still billed for the tokens generated "
    "so far.\\n\\n## 6. Batch what can wait\\n\\nEmbeddings and "
    "offline classification do not need an answer within a second. "
    "Queue them, send them in batches of up to 100 inputs per call, and "
    "run them when traffic is low; the per-request overhead disappears "
    "and rate limits stop being a problem.\\n\\n## 7. Watch the "
    "errors\\n\\nA request that fails with `3040` (capacity) or `5007` "
    "(no such model) costs nothing, but a client that retries in a tight "
    "loop can still hurt you through the successful calls it eventually "
    "makes. Back off exponentially, and alert when the error rate of a "
    "key climbs above a few percent.\\n\\n## Summary\\n\\n1. Pick the "
    "smallest model that works.\\n2. Always set `max_tokens`.\\n3. Keep "
    "prompts short and reuse prefixes.\\n4. Record cost per key and per "
    "model, and set budgets.\\n5. Read usage from the last stream "
    "event.\\n6. Batch offline work.\\n7. Back off on errors.\\n\\nIf you "
    "follow these, your bill will track the value you get \xe2\x80\x94 "
    "not the bugs in your retry loop. Happy building! \\ud83d\\ude80\\n\\n"
    "_Note: prices change; check the pricing page before you plan a "
    "budget, and remember that the free allocation resets daily at "
    "00:00 UTC._\\n\\nCaf\xc3\xa9, na\xc3\xafve, \xe6\x97\xa5\xe6\x9c\xac"
    "\xe8\xaa\x9e and \xf0\x9f\x99\x82 are all fine inside the text: the "
    "model answers in UTF-8 throughout.\\n\\n### Appendix: a budget "
    "check in one query\\n\\n```sql\\nSELECT key, model, "
    "SUM(cost_usd) AS spent\\nFROM requests\\nWHERE ts >= "
    "date_trunc('day', now())\\nGROUP BY key, model\\nHAVING "
    "SUM(cost_usd) > 5.00\\nORDER BY spent DESC;\\n```\\n\\nRun it "
    "every few minutes and page whoever owns a key that shows up; at "
    "$0.011 per 1,000 neurons, five dollars a day is roughly 450,000 "
    "neurons, which a single misbehaving batch job can burn through "
    "before lunch.\",\"tool_calls\":[],\"usage\":"
    "{\"prompt_tokens\":412,\"completion_tokens\":803,\"total_tokens\":"
    "1215}},\"success\":true,\"errors\":[],\"messages\":[]}";


/* the OpenAI API pretty-prints its chat.completion objects */
static const char  openai_body[] =
    "{\n"
    "  \"id\": \"chatcmpl-AZ5cQbMxVwO2Rj9uK3nTt8fYhLp1e\",\n"
    "  \"object\": \"chat.completion\",\n"
    "  \"created\": 1733011200,\n"
    "  \"model\": \"gpt-4o-mini-2024-07-18\",\n"
    "  \"choices\": [\n"
    "    {\n"
    "      \"index\": 0,\n"
    "      \"message\": {\n"
    "        \"role\": \"assistant\",\n"
    "        \"content\": \"Bonjour ! Voici la r\xc3\xa9ponse : 2 + 2 = 4."
    "\\n\\nAutre chose ?\",\n"
    "        \"refusal\": null\n"
    "      },\n"
    "      \"logprobs\": null,\n"
    "      \"finish_reason\": \"stop\"\n"
    "    }\n"
    "  ],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 25,\n"
    "    \"completion_tokens\": 41,\n"
    "    \"total_tokens\": 66,\n"
    "    \"prompt_tokens_details\": {\n"
    "      \"cached_tokens\": 0,\n"
    "      \"audio_tokens\": 0\n"
    "    },\n"
    "    \"completion_tokens_details\": {\n"
    "      \"reasoning_tokens\": 0,\n"
    "      \"audio_tokens\": 0,\n"
    "      \"accepted_prediction_tokens\": 0,\n"
    "      \"rejected_prediction_tokens\": 0\n"
    "    }\n"
    "  },\n"
    "  \"system_fingerprint\": \"fp_0ba0d124f1\"\n"
    "}\n";


/* text for a test name, bytes outside printable ASCII as \xNN */
static const char *
show(const char *s, size_t len)
{
    size_t         i, n;
    unsigned char  c;
    static char    buf[160];

    n = 0;

    for (i = 0; i < len && n < sizeof(buf) - 8; i++) {
        c = (unsigned char) s[i];

        if (c >= 0x20 && c < 0x7f) {
            buf[n++] = (char) c;

        } else {
            n += (size_t) snprintf(buf + n, 5, "\\x%02x", c);
        }
    }

    if (i < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }

    buf[n] = '\0';

    return buf;
}


/*
 * The validator's answer for a copy of s that ends where an inaccessible
 * page begins: reading one byte past len crashes the test.
 */
static int
valid_exact(const char *s, size_t len)
{
    char         *copy;
    static char  *area;
    static size_t size;

    if (area == NULL) {
        size = (size_t) sysconf(_SC_PAGESIZE) * 16;

        area = mmap(NULL, size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (area == MAP_FAILED
            || mprotect(area + size - size / 16, size / 16, PROT_NONE) != 0)
        {
            diag("no guard page: %s", strerror(errno));
            exit(1);
        }

        size -= size / 16;
    }

    if (len > size) {
        diag("a %zu-byte case does not fit before the guard page", len);
        return -2;
    }

    copy = area + size - len;
    memcpy(copy, s, len);

    return cfcost_json_valid(copy, len);
}


static void
run_cases(const char *group, const jcase_t *c, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        ok(valid_exact(c[i].text, c[i].len) == (c[i].valid ? 0 : -1),
           "%s: %s_ %s", group, c[i].valid ? "y" : "n",
           show(c[i].text, c[i].len));
    }
}


static void
test_structure(void)
{
    static const jcase_t  c[] = {
        /* any value at the top level */
        Y("[]"), Y("{}"), Y("\"\""), Y("\"a\""), Y("0"), Y("-1"),
        Y("true"), Y("false"), Y("null"),
        Y("[[]]"), Y("[{}]"), Y("{\"a\":{}}"), Y("{\"a\":[]}"),
        Y("[1,2,3]"), Y("[\"a\",true,false,null,{},[]]"),
        Y("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}"),

        /* whitespace: space, tab, LF and CR, anywhere between tokens */
        Y(" []"), Y("[] "), Y(" \t\n\r[ \t\n\r] \t\n\r"),
        Y("[ 1 , 2 ]"), Y("{ \"a\" : 1 , \"b\" : 2 }"), Y("\n1\n"),
        Y("\r\n{\r\n\"a\"\r\n:\r\n[\r\n]\r\n}\r\n"),
        N(""), N(" "), N("\n\t\r "),
        N("\x0b[]"), N("\x0c[]"), N("[\x0c]"), N("\xc2\xa0[]"),
        N("[]\x0b"), N("\xe3\x80\x80[]"),

        /* duplicate keys are the reader's business */
        Y("{\"a\":1,\"a\":2}"), Y("{\"a\":{},\"a\":[]}"),

        /* commas, colons and brackets */
        N("[1,]"), N("[,1]"), N("[,]"), N("[1,,2]"), N("[1 2]"),
        N("[1:2]"), N("{\"a\" 1}"), N("{\"a\":1,}"), N("{,}"),
        N("{\"a\"}"), N("{\"a\":}"), N("{\"a\"::1}"), N("{\"a\":1 \"b\":2}"),
        N("{\"a\":1;\"b\":2}"), N("{:1}"), N("{1:1}"), N("{a:1}"),
        N("{null:1}"), N("{[]:1}"), N("{'a':1}"), N("['a']"),
        N("["), N("]"), N("{"), N("}"), N("[}"), N("{]"), N("[[]"),
        N("[]]"), N("{\"a\":[}"), N("{\"a\":{]}"), N("[{]}"), N("[\"a\""),
        N("{\"a\":1"), N("{\"a\""), N("{\"a\":"), N(","), N(":"),
        N("[],"), N(",[]"), N("\"a\":1"),

        /* one value, nothing after it */
        N("[][]"), N("[] []"), N("{}{}"), N("1 2"), N("\"a\"\"b\""),
        N("[]x"), N("1,"), N("[]/**/"), N("/**/[]"), N("[1]//"),
        N("#[]"),

        /* literals, lower case and whole */
        N("tru"), N("truex"), N("[truex]"), N("True"), N("TRUE"),
        N("nul"), N("nulll"), N("[nil]"), N("fals"), N("[f]"),
        N("undefined"), N("[true false]"), N("[truefalse]"),
        N("t"), N("n"), N("f")
    };

    run_cases("structure", c, NCASES(c));
}


static void
test_numbers(void)
{
    static const jcase_t  c[] = {
        Y("0"), Y("-0"), Y("1"), Y("-1"), Y("9"), Y("10"), Y("1234567890"),
        Y("0.0"), Y("-0.0"), Y("1.5"), Y("0.000001"), Y("3.14159"),
        Y("1e5"), Y("1E5"), Y("1e+5"), Y("1e-5"), Y("1E+05"), Y("0e0"),
        Y("0E-0"), Y("-1.5e10"), Y("123.456e-789"), Y("[-0.0e+0]"),
        Y("[1,-2,3.5,4e1]"), Y("{\"a\":-1.5}"),

        /* size and magnitude are not this function's business */
        Y("1e400"), Y("-1e400"), Y("1e-400"),
        Y("99999999999999999999999"), Y("-99999999999999999999999"),
        Y("[18446744073709551616]"),
        Y("0.00000000000000000000000000000000000000000000000000001"),

        N("-"), N("[-]"), N("--1"), N("+1"), N("[+1]"), N("01"),
        N("[01]"), N("00"), N("-01"), N("[-01]"), N("012.5"),
        N(".5"), N("[.5]"), N("-.5"), N("1."), N("[1.]"), N("1.e5"),
        N("1.5."), N("1..5"), N("1e"), N("[1e]"), N("1e+"), N("[1e+]"),
        N("1e-"), N("1E"), N("1e5.5"), N("1e5e5"), N("1ee5"),
        N("1e++5"), N("e5"), N("[e5]"), N("0x1"), N("0x1F"), N("[0xA]"),
        N("NaN"), N("[NaN]"), N("-NaN"), N("Infinity"), N("[Infinity]"),
        N("-Infinity"), N("[-Infinity]"), N("1_000"), N("1,5"),
        N("- 1"), N("1 .5"), N("1e 5"), N("0.5f"), N("1L"), N("0b1"),
        N("\xd9\xa1"), N("[\xef\xbc\x91]"), N("[1a]"), N("[2x]")
    };

    run_cases("number", c, NCASES(c));
}


static void
test_strings(void)
{
    static const jcase_t  c[] = {
        Y("\"\""), Y("\"abc\""), Y("[\"\"]"), Y("{\"\":\"\"}"),
        Y("\"\\\"\""), Y("\"\\\\\""), Y("\"\\/\""), Y("\"\\b\""),
        Y("\"\\f\""), Y("\"\\n\""), Y("\"\\r\""), Y("\"\\t\""),
        Y("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"),
        Y("\"\\u0041\""), Y("\"\\u00e9\""), Y("\"\\u00E9\""),
        Y("\"\\uABCD\""), Y("\"\\uabcd\""), Y("\"\\uAbCd\""),
        Y("\"\\uFFFF\""), Y("\"\\u0000\""), Y("[\"a\\u0000b\"]"),
        Y("{\"\\u0000\":1}"), Y("\"\\u0020\\u001f\""),
        Y("\"a/b\""), Y("\"'\""), Y("\"\x7f\""), Y("\" ~\""),
        Y("\"\\\\u0041\""), Y("\"\\\\\\\"\""), Y("\"{[,:]}\""),

        /* the escapes RFC 8259 lists and no others */
        N("[\"\\x\"]"), N("\"\\a\""), N("\"\\'\""), N("\"\\0\""),
        N("\"\\v\""), N("\"\\e\""), N("\"\\U0041\""), N("\"\\x41\""),
        N("\"\\ \""), N("\"\\\n\""), N("\"\\\xc3\xa9\""),
        N("\"\\u\""), N("\"\\u1\""), N("\"\\u12\""), N("\"\\u123\""),
        N("\"\\u12g4\""), N("\"\\uGGGG\""), N("\"\\u-123\""),
        N("\"\\u 123\""), N("\"\\u+123\""),

        /* unterminated */
        N("\""), N("\"abc"), N("[\"abc]"), N("\"\\\""), N("\"\\"),
        N("\"\\u00"), N("\"\\u004"), N("\"\\u0041"), N("{\"a"),
        N("{\"a\":\"b}"), N("\"\\ud800\\udc0"), N("\"\\ud800\\udc00"),

        /* raw control characters */
        N("\"\t\""), N("[\"a\tb\"]"), N("\"\n\""), N("\"\r\""),
        N("\"\x01\""), N("\"\x08\""), N("\"\x1f\""), N("{\"a\x1f\":1}")
    };

    run_cases("string", c, NCASES(c));
}


static void
test_surrogates(void)
{
    static const jcase_t  c[] = {
        Y("\"\\ud83d\\ude80\""), Y("\"\\uD83D\\uDE80\""),
        Y("\"\\ud800\\udc00\""), Y("\"\\udbff\\udfff\""),
        Y("\"\\uDBFF\\uDC00\""), Y("\"x\\ud83d\\ude80y\""),
        Y("\"\\ud83d\\ude80\\ud83d\\ude80\""), Y("\"\\ud7ff\""),
        Y("\"\\ue000\""), Y("[\"\\ud834\\udd1e\"]"),

        /* a high half alone, or followed by anything but a low half */
        N("\"\\ud800\""), N("[\"\\ud800\"]"), N("\"\\ud800x\""),
        N("\"\\ud800\\u0041\""), N("\"\\ud800\\ud800\""),
        N("\"\\ud800\\ue000\""), N("\"\\ud800\\n\""),
        N("\"\\ud800\\\\udc00\""), N("\"\\ud800\\u\""),
        N("\"\\ud800\\udc0\""), N("\"\\ud800\\udcxx\""), N("\"\\udbff"),
        N("\"\\ud800\\"), N("\"\\ud800\\u"), N("\"\\ud800 \\udc00\""),
        N("\"\\ud800\xed\xb0\x80\""),

        /* a low half alone, or in the wrong order */
        N("\"\\udc00\""), N("\"\\udfff\""), N("[\"\\uDC00\"]"),
        N("\"\\udc00\\ud800\""), N("\"\\ude80\\ud83d\"")
    };

    run_cases("surrogate", c, NCASES(c));
}


/* every UTF-8 class boundary of RFC 3629, inside a string */
static void
test_utf8(void)
{
    static const jcase_t  c[] = {
        /* one byte */
        Y("\"\x20\""), Y("\"\x7f\""),
        N("\"\x80\""), N("\"\xbf\""), N("\"\x80\x80\""),

        /* two bytes: C2-DF, one continuation */
        Y("\"\xc2\x80\""), Y("\"\xc2\xbf\""), Y("\"\xdf\x80\""),
        Y("\"\xdf\xbf\""), Y("\"\xc3\xa9\""),
        N("\"\xc0\x80\""), N("\"\xc0\xaf\""), N("\"\xc1\xbf\""),
        N("\"\xc2\x7f\""), N("\"\xc2\xc0\""), N("\"\xdf\xc0\""),
        N("\"\xc2\""), N("\"\xc2"), N("\"\xc2\x80\x80\""),

        /* three bytes: E0 A0-BF, E1-EC 80-BF, ED 80-9F, EE-EF 80-BF */
        Y("\"\xe0\xa0\x80\""), Y("\"\xe0\xbf\xbf\""),
        N("\"\xe0\x80\x80\""), N("\"\xe0\x9f\xbf\""),
        Y("\"\xe1\x80\x80\""), Y("\"\xe1\xbf\xbf\""),
        Y("\"\xec\x80\x80\""), Y("\"\xec\xbf\xbf\""),
        N("\"\xe1\x7f\x80\""), N("\"\xe1\xc0\x80\""),
        N("\"\xe1\x80\x7f\""), N("\"\xe1\x80\xc0\""),
        Y("\"\xed\x80\x80\""), Y("\"\xed\x9f\xbf\""),
        N("\"\xed\xa0\x80\""), N("\"\xed\xaf\xbf\""),
        N("\"\xed\xb0\x80\""), N("\"\xed\xbf\xbf\""),
        N("\"\xed\xa0\xbd\xed\xb8\x80\""),
        Y("\"\xee\x80\x80\""), Y("\"\xef\xbf\xbf\""),
        Y("\"\xef\xbb\xbf\""), Y("\"\xef\xbf\xbe\""),
        N("\"\xef\xbf\""), N("\"\xe1\x80\""), N("\"\xe1\""),
        N("\"\xe1\x80"), N("\"\xef\xbf"),

        /* four bytes: F0 90-BF, F1-F3 80-BF, F4 80-8F */
        Y("\"\xf0\x90\x80\x80\""), Y("\"\xf0\xbf\xbf\xbf\""),
        Y("\"\xf0\x9f\x9a\x80\""),
        N("\"\xf0\x80\x80\x80\""), N("\"\xf0\x8f\xbf\xbf\""),
        Y("\"\xf1\x80\x80\x80\""), Y("\"\xf3\xbf\xbf\xbf\""),
        N("\"\xf1\x7f\x80\x80\""), N("\"\xf1\x80\x7f\x80\""),
        N("\"\xf1\x80\x80\x7f\""), N("\"\xf1\x80\x80\xc0\""),
        N("\"\xf1\x80\xc0\x80\""),
        Y("\"\xf4\x80\x80\x80\""), Y("\"\xf4\x8f\xbf\xbf\""),
        N("\"\xf4\x90\x80\x80\""), N("\"\xf4\xbf\xbf\xbf\""),
        N("\"\xf0\x90\x80\""), N("\"\xf0\x90\""), N("\"\xf0\""),
        N("\"\xf0\x90\x80"), N("\"\xf4\x8f\xbf"),

        /* lead bytes that never start a character */
        N("\"\xf5\x80\x80\x80\""), N("\"\xf7\xbf\xbf\xbf\""),
        N("\"\xf8\x88\x80\x80\x80\""), N("\"\xfc\x84\x80\x80\x80\x80\""),
        N("\"\xfe\""), N("\"\xff\""),

        /* a continuation byte lost among ASCII */
        N("\"abc\x80\""), N("\"\xc3\xa9\xa9\""),

        /* outside strings, only ASCII is legal */
        N("[\xc3\xa9]"), N("{\"a\":\xc3\xa9}"), N("[1]\xc3\xa9"),
        N("\xf0\x9f\x9a\x80"), N("[\x80]"), N("[]\xff")
    };

    run_cases("utf8", c, NCASES(c));
}


static void
test_nul_bom(void)
{
    static const jcase_t  c[] = {
        /* a byte order mark is not whitespace (RFC 8259 section 8.1) */
        N("\xef\xbb\xbf{}"), N("\xef\xbb\xbf[]"), N("\xef\xbb\xbf\"\""),
        N("\xef\xbb\xbf"), N("\xef\xbb"), N("[]\xef\xbb\xbf"),
        N("\xfe\xff[]"), N("\xff\xfe[]"),
        Y("[\"\xef\xbb\xbf\"]"), Y("\"\\ufeff\""),

        /* a raw NUL byte, anywhere */
        N("\0"), N("\0[]"), N("[]\0"), N("[\0]"), N("[1\0]"), N("1\0"),
        N("-1\0"), N("1.5\0"), N("1e5\0"), N("true\0"), N("[null\0]"),
        N("[false\0,1]"), N("\"\0\""), N("\"a\0b\""), N("{\"\0\":1}"),
        N("{\"a\"\0:1}"), N("{\"a\":\0 1}"), N("[1,\0 2]"),
        Y("\"\\u0000\""), Y("[\"\\u0000\",\"x\\u0000y\"]")
    };

    run_cases("nul-bom", c, NCASES(c));
}


/*
 * n levels of nesting: arrays and objects alternating when mixed, all
 * arrays or all objects otherwise, with a scalar at the bottom.  Returns
 * its length.
 */
static size_t
nest(char *buf, size_t n, int kind)
{
    size_t  i, len;
    int     object;

    len = 0;

    for (i = 0; i < n; i++) {
        object = (kind == 2) ? (int) (i & 1) : kind;

        if (object) {
            memcpy(buf + len, "{\"k\":", 5);
            len += 5;

        } else {
            buf[len++] = '[';
        }
    }

    buf[len++] = '0';

    for (i = n; i-- > 0; ) {
        object = (kind == 2) ? (int) (i & 1) : kind;
        buf[len++] = object ? '}' : ']';
    }

    return len;
}


static void
test_depth(void)
{
    size_t       len, i;
    static char  buf[(CFCOST_JSON_DEPTH + 2) * 6];

    static const char  *kinds[] = { "arrays", "objects", "mixed" };

    for (i = 0; i < 3; i++) {
        len = nest(buf, CFCOST_JSON_DEPTH, (int) i);
        ok(valid_exact(buf, len) == 0, "depth: %d %s is the limit",
           CFCOST_JSON_DEPTH, kinds[i]);

        len = nest(buf, CFCOST_JSON_DEPTH + 1, (int) i);
        ok(valid_exact(buf, len) == -1, "depth: %d %s is past it",
           CFCOST_JSON_DEPTH + 1, kinds[i]);
    }

    /* 512 levels closed, then a sibling: the depth went back down */
    len = nest(buf, CFCOST_JSON_DEPTH - 1, 0);
    memmove(buf + 1, buf, len);
    buf[0] = '[';
    len++;
    memcpy(buf + len, ",[[]]]", 6);
    len += 6;
    ok(valid_exact(buf, len) == 0, "depth: 512, closed, then a sibling");

    /* the kind of each level is remembered: a wrong closer deep down */
    len = nest(buf, CFCOST_JSON_DEPTH, 2);
    ok(buf[len - 300] == '}' || buf[len - 300] == ']',
       "depth: mixed closer found");
    buf[len - 300] = (buf[len - 300] == '}') ? ']' : '}';
    ok(valid_exact(buf, len) == -1, "depth: a wrong closer at level 300");

    /* unclosed at every depth */
    len = nest(buf, CFCOST_JSON_DEPTH, 2);
    ok(valid_exact(buf, len - 1) == -1, "depth: the last closer missing");

    memset(buf, '[', CFCOST_JSON_DEPTH * 3);
    ok(valid_exact(buf, CFCOST_JSON_DEPTH * 3) == -1,
       "depth: %d unclosed brackets", CFCOST_JSON_DEPTH * 3);
}


static void
test_bodies(void)
{
    size_t       len, i, bad;
    const char  *s;

    len = sizeof(workers_body) - 1;
    ok(len > 3800 && len < 4400, "bodies: the Workers AI body is ~4 KB (%zu)",
       len);
    ok(valid_exact(workers_body, len) == 0, "bodies: Workers AI native");
    ok(valid_exact(openai_body, sizeof(openai_body) - 1) == 0,
       "bodies: OpenAI chat.completion, pretty-printed");

    /* the other shapes the module reads (test_usage.c) */
    s = "{\"result\":{\"id\":\"4bb245b6\",\"object\":\"chat.completion\","
        "\"created\":1791402397,\"model\":\"@cf/google/gemma-4-26b-a4b-it\","
        "\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"message\":"
        "{\"role\":\"assistant\",\"content\":\"Hi there\"}}],\"usage\":"
        "{\"prompt_tokens\":147,\"completion_tokens\":16,\"total_tokens\":"
        "163,\"prompt_tokens_details\":{\"cached_tokens\":40},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":5},"
        "\"neurons\":1.7727272510528564}},\"success\":true,\"errors\":[],"
        "\"messages\":[]}";
    ok(valid_exact(s, strlen(s)) == 0, "bodies: Workers AI chat.completion");

    s = "{\"result\":null,\"success\":false,\"errors\":[{\"code\":5007,"
        "\"message\":\"No such model @cf/x/y or task\"}],\"messages\":[]}";
    ok(valid_exact(s, strlen(s)) == 0, "bodies: Workers AI error envelope");

    s = "{\"result\":{\"shape\":[1,768],\"data\":[[0.0123,-0.0456,1.2e-3,"
        "-7.5E+1]],\"pooling\":\"mean\"},\"success\":true}";
    ok(valid_exact(s, strlen(s)) == 0, "bodies: embeddings");

    /* every proper prefix of an object is unfinished */
    bad = 0;
    for (i = 0; i < len; i++) {
        if (valid_exact(workers_body, i) != -1) {
            bad++;
        }
    }
    is_u64(bad, 0, "bodies: none of the %zu prefixes is valid", len);

    bad = 0;
    for (i = 0; i < sizeof(openai_body) - 2; i++) {
        if (valid_exact(openai_body, i) != -1) {
            bad++;
        }
    }
    is_u64(bad, 0, "bodies: nor an OpenAI body's");
}


/* deterministic: xorshift64* */
static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;

    return *s * 0x2545F4914F6CDD1DULL;
}


/* the deepest nesting of a text jansson accepted, strings skipped */
static size_t
nesting(const char *buf, size_t len)
{
    int     in_str;
    size_t  i, depth, max;

    in_str = 0;
    depth = 0;
    max = 0;

    for (i = 0; i < len; i++) {
        if (in_str) {
            if (buf[i] == '\\') {
                i++;

            } else if (buf[i] == '"') {
                in_str = 0;
            }

        } else if (buf[i] == '"') {
            in_str = 1;

        } else if (buf[i] == '[' || buf[i] == '{') {
            if (++depth > max) {
                max = depth;
            }

        } else if (buf[i] == ']' || buf[i] == '}') {
            depth--;
        }
    }

    return max;
}


/*
 * jansson 2.14 loses a NUL byte it reads right after a number or a
 * literal ("1\0" loads; JSONTestSuite n_multidigit_number_then_00,
 * akheron/jansson#331): whether the text without its NULs is valid.
 */
static int
valid_without_nul(const char *buf, size_t len)
{
    int     rc;
    char   *copy;
    size_t  i, n;

    copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return 0;
    }

    for (i = 0, n = 0; i < len; i++) {
        if (buf[i] != '\0') {
            copy[n++] = buf[i];
        }
    }

    rc = (cfcost_json_valid(copy, n) == 0);
    free(copy);

    return rc;
}


/* compares one text with jansson's verdict and counts the outcome */
static void
differ(const char *buf, size_t len, jdiff_t *d)
{
    int           ours, theirs;
    json_t       *j;
    json_error_t  err;

    ours = (cfcost_json_valid(buf, len) == 0);

    j = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    theirs = (j != NULL);
    json_decref(j);

    if (ours == theirs) {
        d->agree++;
        return;
    }

    if (!theirs) {
        if (strncmp(err.text, "too big integer", 15) == 0
            || strncmp(err.text, "too big negative integer", 24) == 0
            || strncmp(err.text, "real number overflow", 20) == 0)
        {
            d->big_number++;
            return;
        }

        if (strncmp(err.text, "maximum parsing depth", 21) == 0) {
            d->depth++;
            return;
        }

        if (strncmp(err.text, "NUL byte in object key", 22) == 0) {
            d->nul_key++;
            return;
        }

    } else {
        if (nesting(buf, len) > CFCOST_JSON_DEPTH) {
            d->depth++;
            return;
        }

        if (memchr(buf, '\0', len) != NULL && valid_without_nul(buf, len)) {
            d->nul_dropped++;
            return;
        }
    }

    if (++d->differ <= 5) {
        diag("differ: ours %s, jansson %s (%s): %s", ours ? "valid" : "invalid",
             theirs ? "valid" : "invalid", theirs ? "" : err.text,
             show(buf, len));
    }
}


static void
report(const char *name, const jdiff_t *d)
{
    diag("%s: %llu agree; skipped %llu big numbers, %llu deeper than %d, "
         "%llu NUL in key, %llu NUL after a number; %llu differ", name,
         (unsigned long long) d->agree, (unsigned long long) d->big_number,
         (unsigned long long) d->depth, CFCOST_JSON_DEPTH,
         (unsigned long long) d->nul_key, (unsigned long long) d->nul_dropped,
         (unsigned long long) d->differ);
    is_u64(d->differ, 0, "differential: %s: %llu agree with jansson", name,
           (unsigned long long) d->agree);
}


/* where jansson and RFC 8259 part ways, each difference is recognized */
static void
test_differential_known(void)
{
    size_t   len;
    jdiff_t  d;

    static char  buf[(CFCOST_JSON_DEPTH + 2) * 6];

    memset(&d, 0, sizeof(jdiff_t));
    differ_lit("99999999999999999999999", &d);
    differ_lit("[-9223372036854775809]", &d);
    differ_lit("{\"a\":1e400}", &d);
    is_u64(d.big_number, 3, "differential: jansson's number limits skipped");

    memset(&d, 0, sizeof(jdiff_t));
    len = nest(buf, CFCOST_JSON_DEPTH + 1, 2);
    differ(buf, len, &d);
    is_u64(d.depth, 1, "differential: %d levels, jansson's limit is higher",
           CFCOST_JSON_DEPTH + 1);

    memset(&d, 0, sizeof(jdiff_t));
    differ_lit("{\"\\u0000\":1}", &d);
    is_u64(d.nul_key, 1, "differential: \\u0000 in a key, jansson refuses");

    memset(&d, 0, sizeof(jdiff_t));
    differ_lit("1\0", &d);
    differ_lit("[true\0,-0.5e1\0]", &d);
    differ_lit("[1\0 ]", &d);
    is_u64(d.nul_dropped, 3, "differential: jansson drops a NUL after 1");

    memset(&d, 0, sizeof(jdiff_t));
    differ_lit("[\"\\u0000\"]", &d);
    differ_lit("[\"\\ud800\"]", &d);
    differ_lit("\xef\xbb\xbf{}", &d);
    differ_lit("[1 \0]", &d);
    is_u64(d.agree, 4, "differential: no other difference in these");
}


/* random byte flips, truncations and insertions of valid documents */
static void
test_differential_mutations(void)
{
    char          *buf;
    size_t         len, cap, i, k, m, pos, n, s, deep_len;
    uint64_t       seed;
    jdiff_t        d;
    const char    *doc;
    static char    deep[(CFCOST_JSON_DEPTH + 2) * 6];

    static const unsigned char  special[] = {
        '"', '\\', '{', '}', '[', ']', ',', ':', '0', '1', '9', '-', '+',
        '.', 'e', 'E', 'u', 'd', 'D', 'c', 'f', 'n', 't', 'x', ' ', '\t',
        '\n', '\r', 0x00, 0x01, 0x1f, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
        0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5,
        0xff
    };

    static const char  *seeds[] = {
        NULL,                                 /* workers_body */
        NULL,                                 /* openai_body */
        NULL,                                 /* deep */
        "{\"a\":[1,-2.5e+3,0,0.5,1E-2,true,false,null],\"b\":{\"c\":"
        "\"\\u00e9\\ud83d\\ude80\\n\\\"\\\\\\/\\b\\f\\r\\t\",\"d\":[],"
        "\"e\":{}},\"f\":\"\",\"g\":\"\\u0000\"}",
        "[\"caf\xc3\xa9\",\"\xe2\x82\xac\",\"\xf0\x9f\x98\x80\","
        "\"\xed\x9f\xbf\",\"\xee\x80\x80\",\"\xf4\x8f\xbf\xbf\","
        "\"\xe0\xa0\x80\",\"\xf0\x90\x80\x80\",\"\\udbff\\udfff\"]",
        " -12.5e-7 ",
        "\"\\ud83d\\ude80 \\u00e9 \\uFFFF \\/\"",
        "[[],{},[[{}]],{\"\":{\"\":[]}},[0,[1,[2]]]]",
        "[9223372036854775807,-9223372036854775808,1.7976931348623157e308]"
    };

    seeds[0] = workers_body;
    seeds[1] = openai_body;

    /* deep enough that one more bracket crosses the limit */
    deep_len = nest(deep, CFCOST_JSON_DEPTH - 1, 2);
    seeds[2] = deep;

    cap = sizeof(workers_body) + sizeof(deep) + 64;
    buf = malloc(cap);
    if (buf == NULL) {
        ok(0, "differential: memory");
        return;
    }

    memset(&d, 0, sizeof(jdiff_t));
    seed = 0x9e3779b97f4a7c15ULL;

    for (s = 0; s < NCASES(seeds); s++) {
        doc = seeds[s];
        len = (s == 0) ? sizeof(workers_body) - 1
              : (s == 1) ? sizeof(openai_body) - 1
              : (s == 2) ? deep_len
              : strlen(doc);

        differ(doc, len, &d);                 /* the seed itself */

        for (i = 0; i < 1000; i++) {
            memcpy(buf, doc, len);
            n = len;

            for (m = 1 + rnd(&seed) % 3; m > 0 && n > 0; m--) {
                pos = rnd(&seed) % n;

                switch (rnd(&seed) % 9) {

                case 0:                       /* any byte */
                    buf[pos] = (char) rnd(&seed);
                    break;

                case 1:                       /* a telling byte */
                    buf[pos] = (char) special[rnd(&seed) % sizeof(special)];
                    break;

                case 2:                       /* one bit */
                    buf[pos] ^= (char) (1 << (rnd(&seed) % 8));
                    break;

                case 3:                       /* truncation */
                    n = pos;
                    break;

                case 4:                       /* a telling byte inserted */
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = (char) special[rnd(&seed) % sizeof(special)];
                    n++;
                    break;

                case 5:                       /* any byte inserted */
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = (char) rnd(&seed);
                    n++;
                    break;

                case 6:                       /* a byte deleted */
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                    break;

                case 7:                       /* all of it wrapped in [] */
                    memmove(buf + 1, buf, n);
                    buf[0] = '[';
                    buf[n + 1] = ']';
                    n += 2;
                    break;

                default:                      /* a few bytes repeated */
                    k = 1 + rnd(&seed) % 8;
                    if (k > n - pos) {
                        k = n - pos;
                    }

                    memmove(buf + pos + k, buf + pos, n - pos);
                    n += k;
                    break;
                }

                if (n + 16 > cap) {
                    break;
                }
            }

            differ(buf, n, &d);
        }
    }

    free(buf);

    report("mutations of 9 seeds", &d);
}


/* every text of one and two bytes, and every short UTF-8 sequence */
static void
test_differential_exhaustive(void)
{
    size_t         a, b, i, j;
    jdiff_t        d;
    unsigned char  t[8];

    static const unsigned char  tail[] = { 0x80, 0xbf, 0x41 };

    memset(&d, 0, sizeof(jdiff_t));

    for (a = 0; a < 256; a++) {
        t[0] = (unsigned char) a;
        differ((char *) t, 1, &d);

        for (b = 0; b < 256; b++) {
            t[1] = (unsigned char) b;
            differ((char *) t, 2, &d);
        }
    }

    /* "ab": every pair inside a string */
    t[0] = '"';
    for (a = 0; a < 256; a++) {
        for (b = 0; b < 256; b++) {
            t[1] = (unsigned char) a;
            t[2] = (unsigned char) b;
            t[3] = '"';
            differ((char *) t, 4, &d);
        }
    }

    /* "abcd": every non-ASCII lead, every second byte, telling tails */
    for (a = 0x80; a < 256; a++) {
        for (b = 0; b < 256; b++) {
            for (i = 0; i < sizeof(tail); i++) {
                for (j = 0; j < sizeof(tail); j++) {
                    t[1] = (unsigned char) a;
                    t[2] = (unsigned char) b;
                    t[3] = tail[i];
                    t[4] = tail[j];
                    t[5] = '"';
                    differ((char *) t, 6, &d);
                }
            }
        }
    }

    report("exhaustive short texts", &d);
}


static double
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}


/* timings are for a person to read, never asserted */
static void
bench(void)
{
    size_t           len, i, n;
    double           t0, t1;
    json_t          *j;
    volatile int     sink;

    len = sizeof(workers_body) - 1;
    n = 100000;
    sink = 0;

    t0 = now_ns();
    for (i = 0; i < n; i++) {
        sink += cfcost_json_valid(workers_body, len);
    }
    t1 = now_ns();

    diag("bench: cfcost_json_valid: %.3f ns/byte, %.0f MB/s "
         "(%zu-byte Workers AI body, %zu runs)", (t1 - t0) / ((double) n * len),
         (double) n * len * 1e3 / (t1 - t0), len, n);

    n = 10000;
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        j = json_loadb(workers_body, len, 0, NULL);
        sink += (j != NULL);
        json_decref(j);
    }
    t1 = now_ns();

    diag("bench: jansson json_loadb for scale: %.3f ns/byte (%zu runs)",
         (t1 - t0) / ((double) n * len), n);

    (void) sink;
}



/* cfcost_json_quote(): the string as JSON would write it, never invalid */
static int
quote_is(const char *src, size_t len, const char *want, const char *what)
{
    char    out[256];
    size_t  n;

    n = cfcost_json_quote_len(src, len);
    if (n >= sizeof(out)) {
        return ok(0, "quote: %s: length %zu fits", what, n);
    }

    ok(cfcost_json_quote(out, src, len) == out + n,
       "quote: %s: writes the length it counts", what);
    out[n] = '\0';

    return ok(n == strlen(want) && memcmp(out, want, n) == 0,
              "quote: %s: \"%s\"", what, want);
}


static void
test_quote(void)
{
    int       i, j, valid;
    char      src[64], out[64 * 6 + 3];
    size_t    n, len;
    uint64_t  seed;

    quote_is("plain text", 10, "plain text", "ASCII as is");
    quote_is("say \"hi\" \\ /", 12, "say \\\"hi\\\" \\\\ /",
             "quote and backslash escaped, slash not");
    quote_is("a\nb\rc\td\be\ff", 11, "a\\nb\\rc\\td\\be\\ff",
             "the five short escapes");
    quote_is("\x01\x1f\x7f", 3, "\\u0001\\u001f\x7f",
             "other controls as \\u00XX, DEL as is");
    quote_is("\0", 1, "\\u0000", "NUL as \\u0000");
    quote_is("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9a\x80", 14,
             "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9a\x80", "valid UTF-8 as is");
    quote_is("a\xff" "b", 3, "a\xef\xbf\xbd" "b", "a stray byte: U+FFFD");
    quote_is("\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd",
             "an overlong form: U+FFFD a byte");
    quote_is("\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
             "an encoded surrogate: U+FFFD a byte");
    quote_is("x\xe2\x9c", 3, "x\xef\xbf\xbd\xef\xbf\xbd",
             "a truncated sequence at the end");
    quote_is("\xf4\x90\x80\x80", 4,
             "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
             "beyond U+10FFFF");
    quote_is("", 0, "", "empty");

    /* any bytes at all: the quoted string is valid JSON */
    seed = 0x9e3779b97f4a7c15ULL;
    valid = 0;

    for (i = 0; i < 20000; i++) {
        len = (size_t) (i % 48);

        for (j = 0; j < (int) len; j++) {
            src[j] = (char) (rnd(&seed) >> 56);
        }

        n = cfcost_json_quote_len(src, len);
        out[0] = '"';
        cfcost_json_quote(out + 1, src, len);
        out[n + 1] = '"';

        valid += (cfcost_json_valid(out, n + 2) == 0);
    }

    ok(valid == 20000, "quote: 20000 random byte strings, %d quote to valid "
       "JSON strings", valid);
}

int
main(void)
{
    const char  *b;

    test_structure();
    test_numbers();
    test_strings();
    test_surrogates();
    test_utf8();
    test_nul_bom();
    test_depth();
    test_bodies();
    test_differential_known();
    test_differential_mutations();
    test_differential_exhaustive();
    test_quote();

    b = getenv("CFCOST_JSON_BENCH");
    if (b != NULL && strcmp(b, "1") == 0) {
        bench();
    }

    return done_testing();
}
