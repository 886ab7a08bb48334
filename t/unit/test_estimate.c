/*
 * Unit tests for the token estimator's readers in common/cfcost_usage.c:
 * the generated text of an answer (cfcost_text_*), counted in the bytes it
 * decodes to, over JSON however it is written and cut anywhere; and the
 * output cap of a request (cfcost_request_max_tokens).
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_usage.h"
#include "cfcost_estimate.h"
#include "cfcost_price.h"
#include "tap.h"


/* the whole text at once, then split at every byte, then a byte a time */
static void
text_is(const char *json, uint64_t want, const char *what)
{
    size_t         len, i, j;
    uint64_t       whole;
    cfcost_text_t  t;
    int            same;

    len = strlen(json);
    whole = cfcost_text_bytes(json, len);
    is_u64(whole, want, "text: %s", what);

    same = 1;

    for (i = 0; i <= len; i++) {
        cfcost_text_init(&t);
        cfcost_text_feed(&t, json, i);
        cfcost_text_feed(&t, json + i, len - i);

        if (t.bytes != whole) {
            diag("split at %zu: %llu", i, (unsigned long long) t.bytes);
            same = 0;
        }
    }

    cfcost_text_init(&t);

    for (j = 0; j < len; j++) {
        cfcost_text_feed(&t, json + j, 1);
    }

    ok(same && t.bytes == whole, "text: %s: same in pieces", what);
}


static void
test_shapes(void)
{
    text_is("{\"result\":{\"response\":\"Hello\",\"tool_calls\":[],"
            "\"usage\":{\"prompt_tokens\":1}},\"success\":true}", 5,
            "Workers AI envelope, compact");
    text_is("{ \"result\" : { \"response\" : \"x\" } , \"success\" : true }",
            1, "Workers AI envelope, spaces around ':' and ','");
    text_is("{\n  \"result\": {\n    \"response\": \"two words\"\n  }\n}", 9,
            "Workers AI envelope, pretty-printed");
    text_is("{\"response\": \"x\"}", 1, "stream event, a space after ':'");
    text_is("{\"response\":\"Hi\",\"p\":\"abcdef\"}", 2,
            "stream event: padding not counted");
    text_is("{\"p\":\"abc\",\"response\":\"xy\"}", 2,
            "stream event: padding before the response");
    text_is("{\"response\":\"\",\"usage\":{\"prompt_tokens\":3}}", 0,
            "usage event: empty response");

    text_is("{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[{"
            "\"index\":0,\"message\":{\"role\":\"assistant\","
            "\"content\":\"Hi there\"},\"finish_reason\":\"stop\"}]}", 8,
            "chat.completion: message.content, role not counted");
    text_is("{\"result\":{\"choices\":[{\"message\":{\"content\" : "
            "\"abc\"}}],\"response\":null},\"success\":true}", 3,
            "chat.completion in the envelope, response null");
    text_is("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ab\"}},"
            "{\"index\":1,\"delta\":{\"role\":\"assistant\","
            "\"content\":\"cde\"}}]}", 5,
            "chunk with two choices: every delta.content");
    text_is("{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}", 0,
            "OpenAI usage chunk");
    text_is("{\"choices\":[{\"delta\":{\"content\":null}}]}", 0,
            "delta.content null");
}


static void
test_escapes(void)
{
    text_is("{\"response\":\"say \\\"hi\\\"\\n\"}", 9,
            "\\\" and \\n: one byte each");
    text_is("{\"response\":\"a\\\\b\\/c\\t\\r\\b\\f\"}", 9,
            "\\\\ \\/ \\t \\r \\b \\f: one byte each");
    text_is("{\"response\":\"caf\\u00e9\"}", 5, "\\u00e9: 2 bytes");
    text_is("{\"response\":\"\\u0041\\u007f\"}", 2, "\\u0041 \\u007f: 1 byte");
    text_is("{\"response\":\"\\u07FF\\u0800\"}", 5,
            "\\u07FF 2 bytes, \\u0800 3 bytes (upper-case hex)");
    text_is("{\"response\":\"\\u2713 \\u65e5\"}", 7,
            "\\u2713 \\u65e5: 3 each");
    text_is("{\"response\":\"\\ud83d\\ude80\"}", 4,
            "surrogate pair: the 4 bytes of U+1F680");
    text_is("{\"response\":\"caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9a\x80\"}",
            14, "raw UTF-8: its bytes");
    text_is("{\"content\":\"x\",\"message\":{\"content\":\"\\u00e9\\\"\"}}",
            3, "content outside a message not counted; escapes inside");
    text_is("{\"resp\\u006fnse\":\"ab\"}", 2,
            "an escaped key is the same key");
    text_is("{\"response\\u0000\":\"ab\"}", 0, "a key with more after it");
}


static void
test_decoys(void)
{
    text_is("{\"p\":\"\\\"response\\\":\\\"xxxx\\\"\",\"response\":\"ab\"}", 2,
            "\"response\": inside a string is not a key");
    text_is("{\"response\":\"ab\",\"x\":\"\\\"response\\\":\\\"zz\"}", 2,
            "nor after the response");
    text_is("{\"result\":{\"tool_calls\":[{\"arguments\":{\"response\":"
            "\"q\"}}],\"response\":\"ok\"}}", 2,
            "a response member deeper than result.response");
    text_is("{\"response\":{\"response\":\"q\"}}", 0,
            "a response that is an object");
    text_is("{\"response\":[\"q\"]}", 0, "a response that is an array");
    text_is("{\"response\":null,\"x\":\"content\"}", 0, "response null");
    text_is("{\"message\":\"content\",\"delta\":[{\"content\":\"q\"}]}", 0,
            "message a string, delta an array");
    text_is("{\"responseresponseresponse\":\"q\",\"response\":\"a\"}", 1,
            "a long key that begins like one");
    text_is("[\"response\",\"q\"]", 0, "an array at the top");
    text_is("\"response\"", 0, "a string at the top");
}


static void
test_cut_and_deep(void)
{
    char      buf[512];
    size_t    n, i;

    text_is("{\"response\":\"abc", 3, "cut inside the text");
    text_is("{\"response\":\"ab\\", 2, "cut after a backslash");
    text_is("{\"response\":\"ab\\u00", 2, "cut inside \\u");
    text_is("{\"response\":\"ab\\ud83d", 4, "cut after half a pair");
    text_is("{\"resp", 0, "cut inside a key");
    text_is("", 0, "nothing");

    /* past the tracked depth: counted nothing there, nothing lost after */
    n = 0;
    n += snprintf(buf + n, sizeof(buf) - n, "{\"a\":");
    for (i = 0; i < 60; i++) {
        buf[n++] = '[';
    }
    n += snprintf(buf + n, sizeof(buf) - n,
                  "{\"message\":{\"content\":\"q\"}}");
    for (i = 0; i < 60; i++) {
        buf[n++] = ']';
    }
    n += snprintf(buf + n, sizeof(buf) - n, ",\"response\":\"done\"}");
    buf[n] = '\0';
    text_is(buf, 4, "60 levels deep, then the response");

    is_u64(cfcost_text_bytes("{\"response\":\"Hello\"}xxxxx", 20), 5,
           "text: only len bytes are read");
}


static void
cap_is(const char *json, int rc, uint64_t want, const char *what)
{
    int       got;
    uint64_t  cap;

    cap = 12345;
    got = cfcost_request_max_tokens(json, strlen(json), &cap);
    ok(got == rc, "max_tokens: %s: returns %d", what, rc);

    if (rc == 0) {
        is_u64(cap, want, "max_tokens: %s", what);
    }
}


static void
test_max_tokens(void)
{
    cap_is("{\"messages\":[],\"max_tokens\":256}", 0, 256, "compact");
    cap_is("{ \"messages\" : [ ] , \"max_tokens\" : 64 }", 0, 64, "spaced");
    cap_is("{\"max_completion_tokens\":7,\"messages\":[]}", 0, 7,
           "OpenAI's max_completion_tokens");
    cap_is("{\"max_completion_tokens\":7,\"max_tokens\":9}", 0, 9,
           "max_tokens first");
    cap_is("{\"max_tokens\":1e3}", 0, 1000, "1e3");
    cap_is("{\"max_tokens\":100.0}", 0, 100, "100.0");
    cap_is("{\"max_tokens\":0}", 0, 0, "0");
    cap_is("{\"max_tokens\":99999999999999999999999}", 0, CFCOST_USAGE_MAX,
           "huge: clamped at the usage ceiling");
    cap_is("{\"max_tokens\":16777217}", 0, CFCOST_USAGE_MAX,
           "2^24 + 1: clamped at the usage ceiling");
    cap_is("{\"max_tokens\":16777216}", 0, 16777216, "2^24");
    cap_is("{\"messages\":[{\"content\":\"max_tokens\"}]}", -1, 0,
           "none (a decoy string)");
    cap_is("{\"options\":{\"max_tokens\":5}}", -1, 0, "nested: not the cap");
    cap_is("{\"max_tokens\":\"5\"}", -1, 0, "a string");
    cap_is("{\"max_tokens\":-3}", -1, 0, "negative");
    cap_is("{\"max_tokens\":1.5}", -1, 0, "fractional");
    cap_is("{\"max_tokens\":null}", -1, 0, "null");
    cap_is("", -1, 0, "empty body");
}


int
main(void)
{
    test_shapes();
    test_escapes();
    test_decoys();
    test_cut_and_deep();
    test_max_tokens();

    return done_testing();
}
