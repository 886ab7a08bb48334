/*
 * Unit tests for common/cfcost_usage.c: reading success, errors, reply
 * text and token usage out of every response shape Workers AI sends.
 */

#include <stdio.h>
#include <string.h>

#include "cfcost_usage.h"
#include "tap.h"


static json_t *
parse(const char *text)
{
    json_error_t  err;
    json_t       *j;

    j = json_loads(text, 0, &err);
    if (j == NULL) {
        diag("bad test JSON: %s", err.text);
    }

    return j;
}


static void
test_native(void)
{
    json_t          *root;
    cfcost_reply_t   r;

    root = parse("{\"result\":{\"response\":\"Hello, World\",\"tool_calls\":[],"
                 "\"usage\":{\"prompt_tokens\":129,\"completion_tokens\":7,"
                 "\"total_tokens\":136}},\"success\":true,\"errors\":[],"
                 "\"messages\":[]}");
    cfcost_reply_parse(root, &r);

    ok(r.success == 1, "native: success");
    ok(r.has_usage, "native: usage found");
    is_u64(r.input, 129, "native: prompt tokens");
    is_u64(r.output, 7, "native: completion tokens");
    is_u64(r.cached, 0, "native: no cached tokens");
    ok(!r.has_neurons, "native: no neurons");
    is_str(json_string_value(r.text), "Hello, World", "native: text");
    is_u64((uint64_t) r.error_code, 0, "native: no error");
    json_decref(root);
}


static void
test_chat_completion(void)
{
    json_t          *root;
    cfcost_reply_t   r;

    root = parse("{\"result\":{\"id\":\"4bb245b6\",\"object\":"
                 "\"chat.completion\",\"created\":1791402397,\"model\":"
                 "\"@cf/google/gemma-4-26b-a4b-it\",\"choices\":[{\"index\":0,"
                 "\"finish_reason\":\"stop\",\"message\":{\"role\":"
                 "\"assistant\",\"content\":\"Hi there\"}}],\"usage\":"
                 "{\"prompt_tokens\":147,\"completion_tokens\":16,"
                 "\"total_tokens\":163,\"prompt_tokens_details\":"
                 "{\"cached_tokens\":40},\"completion_tokens_details\":"
                 "{\"reasoning_tokens\":5},\"neurons\":1.7727272510528564}},"
                 "\"success\":true,\"errors\":[],\"messages\":[]}");
    cfcost_reply_parse(root, &r);

    ok(r.has_usage, "chat.completion: usage found");
    is_u64(r.input, 147, "chat.completion: prompt tokens");
    is_u64(r.output, 16, "chat.completion: completion tokens");
    is_u64(r.cached, 40, "chat.completion: cached tokens");
    is_u64(r.reasoning, 5, "chat.completion: reasoning tokens");
    ok(r.has_neurons && r.neurons == 1.7727272510528564,
       "chat.completion: neurons kept exactly");
    is_str(json_string_value(r.text), "Hi there",
           "chat.completion: text from choices[0].message.content");
    json_decref(root);
}


static void
test_openai_bare(void)
{
    json_t          *root;
    cfcost_reply_t   r;

    root = parse("{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":"
                 "[{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"}}],"
                 "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
                 "\"total_tokens\":5}}");
    cfcost_reply_parse(root, &r);

    ok(r.success == -1, "bare OpenAI: no envelope");
    ok(r.has_usage, "bare OpenAI: usage found");
    is_u64(r.input, 3, "bare OpenAI: prompt tokens");
    is_str(json_string_value(r.text), "ok", "bare OpenAI: text");
    json_decref(root);

    /* the Responses API names them differently */
    root = parse("{\"result\":{\"output\":[],\"usage\":{\"input_tokens\":11,"
                 "\"output_tokens\":4,\"total_tokens\":15}},\"success\":true}");
    cfcost_reply_parse(root, &r);
    ok(r.has_usage, "responses API: usage found");
    is_u64(r.input, 11, "responses API: input tokens");
    is_u64(r.output, 4, "responses API: output tokens");
    json_decref(root);

    /* embeddings: input only */
    root = parse("{\"result\":{\"data\":[[0.1]],\"usage\":{\"prompt_tokens\":"
                 "9,\"total_tokens\":9}},\"success\":true}");
    cfcost_reply_parse(root, &r);
    ok(r.has_usage, "embeddings: usage found");
    is_u64(r.input, 9, "embeddings: input tokens");
    is_u64(r.output, 0, "embeddings: no output tokens");
    json_decref(root);
}


static void
test_missing_and_bad_usage(void)
{
    size_t           i;
    json_t          *root;
    cfcost_reply_t   r;

    static const char  *bad[] = {
        "{\"result\":{\"response\":\"x\"},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":null},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{}},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":-1,"
            "\"completion_tokens\":2}},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":1.5,"
            "\"completion_tokens\":2}},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":\"7\","
            "\"completion_tokens\":2}},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":[1,2]},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":null,"
            "\"completion_tokens\":2}},\"success\":true}",
        "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":3,"
            "\"completion_tokens\":null}},\"success\":true}",
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        root = parse(bad[i]);
        cfcost_reply_parse(root, &r);
        ok(!r.has_usage, "unusable usage #%zu is reported as unknown", i);
        is_u64(r.input + r.output, 0, "unusable usage #%zu counts nothing",
               i);
        ok(r.text != NULL, "unusable usage #%zu still has the text", i);
        json_decref(root);
    }

    /* whole-number reals are counts; cached never exceeds input */
    root = parse("{\"result\":{\"usage\":{\"prompt_tokens\":10.0,"
                 "\"completion_tokens\":2,\"prompt_tokens_details\":"
                 "{\"cached_tokens\":50}}},\"success\":true}");
    cfcost_reply_parse(root, &r);
    ok(r.has_usage, "10.0 is a count");
    is_u64(r.input, 10, "10.0 read as 10");
    is_u64(r.cached, 10, "cached clamped to input");
    json_decref(root);
}


static void
test_errors(void)
{
    json_t          *root;
    cfcost_reply_t   r;

    root = parse("{\"result\":null,\"success\":false,\"errors\":[{\"code\":"
                 "5007,\"message\":\"No such model @cf/x/y or task\"}],"
                 "\"messages\":[]}");
    cfcost_reply_parse(root, &r);
    ok(r.success == 0, "error: success false");
    is_u64((uint64_t) r.error_code, 5007, "error: code");
    is_str(r.detail, "5007: No such model @cf/x/y or task",
           "error: detail names code and message");
    ok(r.text == NULL && !r.has_usage, "error: no text, no usage");
    json_decref(root);

    root = parse("{\"result\":null,\"success\":false,\"errors\":[{\"code\":"
                 "3040,\"message\":\"Capacity\"},{\"code\":3036,\"message\":"
                 "\"Daily\"}]}");
    cfcost_reply_parse(root, &r);
    is_u64((uint64_t) r.error_code, 3040, "two errors: first code");
    is_str(r.detail, "3040: Capacity; 3036: Daily", "two errors: both named");
    json_decref(root);

    cfcost_reply_parse(NULL, &r);
    ok(r.success == -1 && !r.has_usage && r.text == NULL,
       "NULL root: nothing, no crash");

    root = parse("[1,2,3]");
    cfcost_reply_parse(root, &r);
    ok(r.success == -1 && !r.has_usage, "array root: nothing");
    json_decref(root);
}


static void
test_locate(void)
{
    size_t       s, e;
    const char  *json;

    static const char  *ru[] = { "result", "usage" };
    static const char  *u[] = { "usage" };

    json = "{\"result\":{\"response\":\"a \\\"usage\\\" {x}\","
           "\"tool_calls\":[{\"usage\":1}],\"usage\":{\"prompt_tokens\":1}},"
           "\"success\":true}";
    ok(cfcost_json_locate(json, strlen(json), ru, 2, &s, &e) == 0,
       "locate: result.usage found past a decoy string and array");
    ok(e - s == 19 && memcmp(json + s, "{\"prompt_tokens\":1}", 19) == 0,
       "locate: exact span of result.usage");

    ok(cfcost_json_locate(json, strlen(json), u, 1, &s, &e) == -1,
       "locate: no top-level usage");

    json = " { \"usage\" : { } , \"x\":2 } ";
    ok(cfcost_json_locate(json, strlen(json), u, 1, &s, &e) == 0
       && json[s] == '{' && json[e - 1] == '}' && e - s == 3,
       "locate: white space everywhere, empty object");

    json = "{\"result\":null,\"success\":false}";
    ok(cfcost_json_locate(json, strlen(json), ru, 2, &s, &e) == -1,
       "locate: result null");

    json = "[{\"usage\":{}}]";
    ok(cfcost_json_locate(json, strlen(json), u, 1, &s, &e) == -1,
       "locate: top level not an object");
}


/*
 * A key twice in one object: the last one wins, as in jansson (and
 * JSON.parse), so the fast reader, the full parser and the client agree.
 */
static void
test_duplicate_keys(void)
{
    size_t           s, e;
    const char      *json;
    cfcost_reply_t   r, f;
    json_t          *root;

    static const char  *ru[] = { "result", "usage" };
    static const char  *u[] = { "usage" };

    json = "{\"usage\":{\"prompt_tokens\":1},\"x\":0,"
           "\"usage\":{\"prompt_tokens\":2}}";
    ok(cfcost_json_locate(json, strlen(json), u, 1, &s, &e) == 0
       && memcmp(json + s, "{\"prompt_tokens\":2}", e - s) == 0,
       "duplicate keys: locate takes the last usage");

    json = "{\"result\":{\"usage\":{\"prompt_tokens\":1}},"
           "\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":5}}}";
    ok(cfcost_json_locate(json, strlen(json), ru, 2, &s, &e) == 0
       && memcmp(json + s, "{\"prompt_tokens\":5}", e - s) == 0,
       "duplicate keys: the last result, then its usage");

    json = "{\"result\":{\"response\":\"hi\",\"usage\":{\"prompt_tokens\":7,"
           "\"completion_tokens\":1},\"usage\":{\"prompt_tokens\":70,"
           "\"completion_tokens\":10}},\"success\":true,\"errors\":[]}";
    ok(cfcost_reply_scan(json, strlen(json), 1, &r) == 0,
       "duplicate keys: the fast reader reads it");
    root = cfcost_json_load(json, strlen(json), 0);
    ok(root != NULL, "duplicate keys: the full parser reads it");
    cfcost_reply_parse(root, &f);
    ok(r.input == 70 && r.output == 10 && f.input == r.input
       && f.output == r.output,
       "duplicate keys: both bill the last usage (70/10), got %llu/%llu "
       "and %llu/%llu", (unsigned long long) r.input,
       (unsigned long long) r.output, (unsigned long long) f.input,
       (unsigned long long) f.output);
    json_decref(root);

    json = "{\"usage\":{\"prompt_tokens\":1},\"usage\":2,\"usage\":[";
    ok(cfcost_json_locate(json, strlen(json), u, 1, &s, &e) == -1,
       "duplicate keys: a broken object after the first match: absent");
}


static void
cut_is(const char *json, const char *key, const char *want)
{
    char    buf[256];
    size_t  s, e, n;

    if (cfcost_json_cut(json, strlen(json), key, &s, &e) != 0) {
        ok(want == NULL, "cut %s from %s: absent", key, json);
        return;
    }

    n = strlen(json);
    memcpy(buf, json, s);
    memcpy(buf + s, json + e, n - e);
    buf[s + n - e] = '\0';

    is_str(buf, want ? want : "(absent)", "cut %s from %s", key, json);
}


static void
test_cut(void)
{
    cut_is("{\"model\":\"m\",\"prompt\":\"p\"}", "model", "{\"prompt\":\"p\"}");
    cut_is("{\"prompt\":\"p\",\"model\":\"m\"}", "model", "{\"prompt\":\"p\"}");
    cut_is("{\"a\":1,\"model\":\"m\",\"b\":[1,{\"model\":2}]}", "model",
           "{\"a\":1,\"b\":[1,{\"model\":2}]}");
    cut_is("{ \"model\" : \"m\" }", "model", "{  }");
    cut_is("{\"x\":{\"model\":1}}", "model", NULL);
    cut_is("{\"models\":1,\"mode\":2}", "model", NULL);
    cut_is("{\"a\":\"\\\"model\\\":1\",\"model\":\"m\"}", "model",
           "{\"a\":\"\\\"model\\\":1\"}");
}


static void
test_scan(void)
{
    cfcost_reply_t  r;
    const char     *j;

    j = "{\"result\":{\"response\":\"Hi \\\"there\\\"\",\"tool_calls\":[],"
        "\"usage\":{\"prompt_tokens\":129,\"completion_tokens\":7,"
        "\"total_tokens\":136,\"prompt_tokens_details\":{\"cached_tokens\":9},"
        "\"neurons\":1.7727272510528564}},\"success\":true,\"errors\":[]}";
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == 0, "scan: the usual answer");
    is_u64(r.input, 129, "scan: input");
    is_u64(r.output, 7, "scan: output");
    is_u64(r.cached, 9, "scan: cached");
    ok(r.has_neurons && r.neurons == 1.7727272510528564, "scan: neurons");
    ok(r.text_raw_len == 14 && memcmp(r.text_raw, "\"Hi \\\"there\\\"\"", 14) == 0,
       "scan: the text as its JSON literal");

    j = "{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
        "\"completion_tokens\":2}}";
    ok(cfcost_reply_scan(j, strlen(j), 0, &r) == 0 && r.input == 3,
       "scan: a bare OpenAI object");
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == -1,
       "scan: no response text when one is needed: slow path");

    j = "{\"result\":null,\"success\":false,\"errors\":[]}";
    ok(cfcost_reply_scan(j, strlen(j), 0, &r) == -1, "scan: an error: slow path");
    j = "{\"result\":{\"response\":\"x\"},\"success\":true}";
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == -1, "scan: no usage: slow path");
    j = "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":1.0,"
        "\"completion_tokens\":1}},\"success\":true}";
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == -1, "scan: 1.0: slow path");
    j = "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":1,"
        "\"completion_tokens\":1}},\"success\":true} x";
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == -1, "scan: trailing bytes");
    j = "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":1,"
        "\"completion_tokens\":1}},\"success\":true";
    ok(cfcost_reply_scan(j, strlen(j), 1, &r) == -1, "scan: unbalanced");
}


/*
 * A count that is missing is no count of 0: output without input, or
 * input with neither output nor a total it follows from, is unusable;
 * embeddings' input + total is usage with an output of 0.
 */
static void
test_missing_counts(void)
{
    size_t           i;
    json_t          *u;
    cfcost_reply_t   r;

    static const struct {
        const char  *usage;
        int          rc;
        int          bad;
        uint64_t     in, out;
    } c[] = {
        { "{\"completion_tokens\":5}", -1, 1, 0, 0 },
        { "{\"completion_tokens\":5,\"total_tokens\":9}", -1, 1, 0, 0 },
        { "{\"prompt_tokens\":5}", -1, 1, 0, 0 },
        { "{\"prompt_tokens\":5,\"total_tokens\":null}", -1, 1, 0, 0 },
        { "{\"prompt_tokens\":5,\"total_tokens\":3}", -1, 1, 0, 0 },
        { "{\"prompt_tokens\":5,\"total_tokens\":5}", 0, 0, 5, 0 },
        { "{\"prompt_tokens\":5,\"total_tokens\":12}", 0, 0, 5, 7 },
        { "{\"input_tokens\":5,\"output_tokens\":2}", 0, 0, 5, 2 },
        { "{\"total_tokens\":5}", -1, 0, 0, 0 },
        { "{\"neurons\":1.5}", -1, 0, 0, 0 },
    };

    for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        memset(&r, 0, sizeof(r));
        u = parse(c[i].usage);
        ok(cfcost_usage_read(u, &r) == c[i].rc, "missing #%zu %s: returns %d",
           i, c[i].usage, c[i].rc);
        is_u64(r.usage_bad, c[i].bad, "missing #%zu: usage_bad", i);

        if (c[i].rc == 0) {
            is_u64(r.input, c[i].in, "missing #%zu: input", i);
            is_u64(r.output, c[i].out, "missing #%zu: output", i);
        }

        json_decref(u);
    }
}


/*
 * Counts no gateway can bill: beyond CFCOST_USAGE_MAX (2^24: 999999999999999,
 * 2^32, 2^63 - 1 and the like are faults, not usage), beyond jansson's
 * 64-bit integers, negative, fractional.  The answer still reads (text,
 * success); the usage is reported unusable.
 */
static void
test_out_of_range(void)
{
    size_t           i;
    json_t          *root;
    cfcost_reply_t   r;
    const char      *j;

    static const struct {
        const char  *usage;
        int          bad;
    } c[] = {
        { "{\"prompt_tokens\":16777216,\"completion_tokens\":1}", 0 },
        { "{\"prompt_tokens\":16777217,\"completion_tokens\":1}", 1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":16777217}", 1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":999999999999999}", 1 },
        { "{\"prompt_tokens\":4294967295,\"completion_tokens\":1}", 1 },
        { "{\"prompt_tokens\":4294967296,\"completion_tokens\":1}", 1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":16777217.0}", 1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":4294967296.0}", 1 },
        { "{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":1}",
          1 },
        { "{\"prompt_tokens\":9223372036854775808,\"completion_tokens\":1}",
          1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":"
          "99999999999999999999999999}", 1 },
        { "{\"prompt_tokens\":1,\"total_tokens\":4294967297}", 1 },
        { "{\"prompt_tokens\":-1,\"completion_tokens\":1}", 1 },
        { "{\"prompt_tokens\":1.5,\"completion_tokens\":1}", 1 },
        { "{\"prompt_tokens\":1,\"completion_tokens\":1,"
          "\"prompt_tokens_details\":{\"cached_tokens\":-2}}", 1 },
        { "{}", 0 },
    };
    char  buf[512];

    for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        snprintf(buf, sizeof(buf), "{\"result\":{\"response\":\"x\","
                 "\"usage\":%s},\"success\":true}", c[i].usage);

        root = cfcost_json_load(buf, strlen(buf), 0);
        ok(root != NULL, "range #%zu: the answer parses", i);
        cfcost_reply_parse(root, &r);
        is_u64(r.usage_bad, c[i].bad, "range #%zu: usage_bad", i);
        ok(r.has_usage == (!c[i].bad && i == 0),
           "range #%zu: has_usage", i);
        ok(r.success == 1 && json_is_string(r.text),
           "range #%zu: still a success with its text", i);
        json_decref(root);

        ok(cfcost_reply_scan(buf, strlen(buf), 1, &r) == (i == 0 ? 0 : -1),
           "range #%zu: the scan %s", i, i == 0 ? "reads it" : "leaves it");
    }

    j = "{\"result\":{\"response\":\"x\",\"usage\":{\"prompt_tokens\":"
        "18446744073709551616}},\"success\":false,\"errors\":[{\"code\":"
        "3040,\"message\":\"busy\"}]}";
    root = cfcost_json_load(j, strlen(j), 0);
    cfcost_reply_parse(root, &r);
    ok(r.success == 0 && r.error_code == 3040,
       "range: an error envelope read again keeps its code");
    json_decref(root);

    j = "{\"result\":";
    ok(cfcost_json_load(j, strlen(j), 0) == NULL, "range: invalid JSON: NULL");
}


/* the scan's reading, or -1 when it leaves the answer to the parser */
static int
scan_is_parse(const char *json, const char *name)
{
    int              rc;
    json_t          *root;
    cfcost_reply_t   sc, p;

    root = cfcost_json_load(json, strlen(json), JSON_ALLOW_NUL);
    cfcost_reply_parse(root, &p);
    json_decref(root);

    rc = cfcost_reply_scan(json, strlen(json), 0, &sc);
    if (rc != 0) {
        ok(1, "%s: the scan leaves it to the parser", name);
        return rc;
    }

    ok(sc.success == p.success && sc.has_usage == p.has_usage
       && sc.input == p.input && sc.output == p.output
       && sc.cached == p.cached && sc.reasoning == p.reasoning
       && sc.has_neurons == p.has_neurons
       && (!sc.has_neurons || sc.neurons == p.neurons),
       "%s: the scan reads what the parser reads (input %llu/%llu, "
       "cached %llu/%llu, reasoning %llu/%llu, neurons %d:%g/%d:%g)", name,
       (unsigned long long) sc.input, (unsigned long long) p.input,
       (unsigned long long) sc.cached, (unsigned long long) p.cached,
       (unsigned long long) sc.reasoning, (unsigned long long) p.reasoning,
       sc.has_neurons, sc.neurons, p.has_neurons, p.neurons);

    return rc;
}


/*
 * One reading (README): the fast reader reads an answer as the parser
 * does, or leaves it to the parser.  Cases t/unit/fuzz_usage.c found.
 */
static void
test_scan_one_reading(void)
{
    size_t           s, e;
    cfcost_reply_t   r;
    const char      *j;

    static const char  *u[] = { "usage" };

    /* the Responses API's details: cached input is billed at its price */
    j = "{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":40,\"output_tokens\":"
        "12,\"total_tokens\":52,\"input_tokens_details\":{\"cached_tokens\":"
        "32},\"output_tokens_details\":{\"reasoning_tokens\":8}}}";
    ok(scan_is_parse(j, "input_tokens_details") == 0,
       "input_tokens_details: the scan reads it");

    /* neurons: a number >= 0, else not reported */
    scan_is_parse("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
                  "\"neurons\":null}}", "neurons null");
    scan_is_parse("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
                  "\"neurons\":-1}}", "neurons -1");
    scan_is_parse("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
                  "\"neurons\":\"7\"}}", "neurons a string");
    scan_is_parse("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
                  "\"neurons\":{\"n\":1}}}", "neurons an object");

    /* 1e400 is valid JSON jansson cannot read: no infinite neurons */
    j = "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,"
        "\"neurons\":1e400}}";
    ok(cfcost_reply_scan(j, strlen(j), 0, &r) == 0 && r.input == 3
       && !r.has_neurons, "neurons 1e400: tokens read, no neurons");

    /* no "success": a "result" object is the answer, as for the parser */
    scan_is_parse("{\"result\":{\"response\":\"a\",\"usage\":{"
                  "\"prompt_tokens\":1,\"completion_tokens\":2}},"
                  "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
                  "result and usage, no success");

    /* a key written with an escape is the same key to jansson */
    scan_is_parse("{\"result\":{\"response\":\"hi\",\"usage\":{"
                  "\"prompt_tokens\":1,\"completion_tokens\":2,"
                  "\"prompt\\u005ftokens\":9}},\"success\":true}",
                  "prompt_tokens escaped, given twice");
    scan_is_parse("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1},"
                  "\"\\u0075sage\":{\"prompt_tokens\":8,"
                  "\"completion_tokens\":3}}", "usage escaped, given twice");

    scan_is_parse("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":4,"
                  "\"x\\u0020\":1}}}", "an escaped key beside cached_tokens");
    scan_is_parse("{\"\\u0073uccess\":false,\"usage\":{\"prompt_tokens\":5,"
                  "\"completion_tokens\":1}}", "success escaped");

    j = "{\"usage\":{\"prompt_tokens\":1},\"\\u0075sage\":{}}";
    ok(cfcost_json_locate(j, strlen(j), u, 1, &s, &e) == -2,
       "locate: an escaped key in the way: cannot tell");
    j = "{\"x\":{\"prompt_tokens\":1},\"\\u0075sage\":{}}";
    ok(cfcost_json_locate(j, strlen(j), u, 1, &s, &e) == -2,
       "locate: an escaped key, no plain one: cannot tell either");
    j = "{\"usage\":{\"prompt_tokens\":1},\"x\":{\"\\u0075\":1}}";
    ok(cfcost_json_locate(j, strlen(j), u, 1, &s, &e) == 0,
       "locate: an escaped key inside a value does not matter");
}


/* the usage object "cost_usd" goes into is the one the parser bills */
static void
usage_at(const char *json, const char *want, const char *name)
{
    size_t  s, e;

    if (cfcost_usage_locate(json, strlen(json), &s, &e) != 0) {
        ok(want == NULL, "usage_locate %s: none", name);
        return;
    }

    ok(want != NULL && e - s == strlen(want)
       && memcmp(json + s, want, e - s) == 0,
       "usage_locate %s: '%.*s'", name, (int) (e - s), json + s);
}


static void
test_usage_locate(void)
{
    usage_at("{\"result\":{\"usage\":{\"prompt_tokens\":1}},\"success\":true}",
             "{\"prompt_tokens\":1}", "the envelope");
    usage_at("{\"id\":\"x\",\"usage\":{\"prompt_tokens\":2}}",
             "{\"prompt_tokens\":2}", "a bare object");
    usage_at("{\"result\":null,\"usage\":{\"prompt_tokens\":3}}",
             "{\"prompt_tokens\":3}", "result null");
    usage_at("{\"result\":{\"response\":\"x\"},\"usage\":{}}", NULL,
             "a result without usage");

    /* jansson bills result's "\u0075sage": never the top one instead */
    usage_at("{\"result\":{\"response\":\"x\",\"\\u0075sage\":{"
             "\"prompt_tokens\":8,\"completion_tokens\":3}},\"usage\":{"
             "\"prompt_tokens\":1,\"completion_tokens\":1}}", NULL,
             "an escaped key in result");
}


/*
 * The error detail is cut at CFCOST_DETAIL_MAX: at a character's
 * boundary, so that it stays UTF-8 (the client gets it).
 */
static void
test_detail_cut(void)
{
    char             buf[1024], want[600];
    size_t           i, n;
    json_t          *root;
    cfcost_reply_t   r;

    n = (size_t) snprintf(buf, sizeof(buf), "{\"success\":false,\"errors\":"
                          "[{\"code\":5007,\"message\":\"");
    for (i = 0; i < 180; i++) {
        memcpy(buf + n, "\xe6\x97\xa5", 3);      /* U+65E5 */
        n += 3;
    }
    snprintf(buf + n, sizeof(buf) - n, "\"}]}");

    /* "5007: " and 168 whole characters: 510 bytes */
    n = (size_t) snprintf(want, sizeof(want), "5007: ");
    for (i = 0; i < 168; i++) {
        memcpy(want + n, "\xe6\x97\xa5", 3);
        n += 3;
    }
    want[n] = '\0';

    root = parse(buf);
    cfcost_reply_parse(root, &r);
    is_str(r.detail, want, "a long detail is cut between characters");
    json_decref(root);
}


int
main(void)
{
    test_native();
    test_chat_completion();
    test_openai_bare();
    test_missing_and_bad_usage();
    test_errors();
    test_locate();
    test_duplicate_keys();
    test_cut();
    test_scan();
    test_out_of_range();
    test_missing_counts();
    test_scan_one_reading();
    test_usage_locate();
    test_detail_cut();

    return done_testing();
}
