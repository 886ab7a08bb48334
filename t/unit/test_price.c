/*
 * Unit tests for common/cfcost_price.c: the price file loader, lookup,
 * cost arithmetic and decimal formatting.
 *
 *   test_price.t [path/to/pricing.json]     (default conf/pricing.json)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_price.h"
#include "tap.h"


#define PUSD_PER_USD  1000000000000ULL


static const char  *seed_ids[] = {
    "@cf/meta/llama-3.1-8b-instruct",
    "@cf/meta/llama-3-8b-instruct",
    "@cf/meta/llama-2-7b-chat-int8",
    "@cf/mistral/mistral-7b-instruct-v0.1",
    "@hf/mistral/mistral-7b-instruct-v0.2",
    "@cf/qwen/qwen1.5-7b-chat-awq",
    "@cf/qwen/qwen1.5-14b-chat-awq",
    "@cf/microsoft/phi-2",
    "@cf/google/gemma-7b-it",
    "@cf/google/gemma-2b-it-lora",
    "@cf/deepseek-ai/deepseek-math-7b-instruct",
    "@cf/openchat/openchat-3.5-0106",
    "@cf/tinyllama/tinyllama-1.1b-chat-v1.0",
    "@cf/tiiuae/falcon-7b-instruct",
    "@cf/intel/neural-chat-7b-v3-1",
};


/* the beta models Cloudflare never priced: the seed's figure, in micro-USD */
static const struct {
    const char  *id;
    int64_t      price;
} seed_prices[] = {
    { "@hf/mistral/mistral-7b-instruct-v0.2",      60000 },
    { "@cf/qwen/qwen1.5-7b-chat-awq",              50000 },
    { "@cf/qwen/qwen1.5-14b-chat-awq",             80000 },
    { "@cf/microsoft/phi-2",                       30000 },
    { "@cf/google/gemma-7b-it",                    50000 },
    { "@cf/google/gemma-2b-it-lora",               20000 },
    { "@cf/deepseek-ai/deepseek-math-7b-instruct", 70000 },
    { "@cf/openchat/openchat-3.5-0106",            50000 },
    { "@cf/tinyllama/tinyllama-1.1b-chat-v1.0",    10000 },
    { "@cf/tiiuae/falcon-7b-instruct",             50000 },
    { "@cf/intel/neural-chat-7b-v3-1",             50000 },
};


/* Reads a whole file into a malloc'ed buffer; NULL on failure. */
static char *
read_file(const char *path, size_t *len)
{
    long   size;
    char  *buf;
    FILE  *f;

    buf = NULL;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        goto failed;
    }

    buf = malloc((size_t) size + 1);
    if (buf == NULL) {
        goto failed;
    }

    if (fread(buf, 1, (size_t) size, f) != (size_t) size) {
        goto failed;
    }

    buf[size] = '\0';
    *len = (size_t) size;
    fclose(f);
    return buf;

failed:

    free(buf);
    fclose(f);
    return NULL;
}


static const cfcost_model_t *
find(const cfcost_price_table_t *t, const char *id)
{
    return cfcost_price_find(t, id, strlen(id));
}


static int
model_cmp(const cfcost_model_t *a, const cfcost_model_t *b)
{
    int  rc;

    rc = strcmp(a->provider, b->provider);
    if (rc == 0) {
        rc = strcmp(a->name, b->name);
    }

    if (rc == 0) {
        rc = strcmp(a->id, b->id);
    }

    return rc;
}


/* Loads an inline document; returns the loader's result. */
static int
load_str(const char *json, cfcost_price_table_t *t, char *err, size_t errlen)
{
    return cfcost_price_load(json, strlen(json), t, err, errlen);
}


static void
test_file_seed(const cfcost_price_table_t *t)
{
    size_t                 i;
    const cfcost_model_t  *m;

    for (i = 0; i < sizeof(seed_ids) / sizeof(seed_ids[0]); i++) {
        ok(find(t, seed_ids[i]) != NULL, "seed model %s present", seed_ids[i]);
    }

    for (i = 0; i < sizeof(seed_prices) / sizeof(seed_prices[0]); i++) {
        m = find(t, seed_prices[i].id);

        ok(m != NULL && m->input == seed_prices[i].price
           && m->output == seed_prices[i].price
           && m->cached == CFCOST_PRICE_NONE
           && strcmp(m->source, "seed") == 0,
           "%s: seed price, same for input and output", seed_prices[i].id);
    }

    m = find(t, "@cf/meta/llama-2-7b-chat-int8");
    ok(m != NULL && m->input == 160000 && m->output == 240000
       && strcmp(m->source, "cf-pricing-2024") == 0,
       "llama-2-7b-chat-int8 at the 2024 table's price");

    m = find(t, "@cf/mistral/mistral-7b-instruct-v0.1");
    ok(m != NULL && m->input == 110000 && m->output == 190000
       && strcmp(m->source, "cf-pricing") == 0,
       "mistral v0.1 at Cloudflare's published price");
}


static void
test_file_prices(const cfcost_price_table_t *t)
{
    const cfcost_model_t  *m;

    m = find(t, "@cf/meta/llama-3.1-8b-instruct");
    ok(m != NULL, "llama-3.1-8b-instruct found");

    if (m != NULL) {
        is_u64(m->input, 282000, "llama-3.1-8b input 0.282 USD/M");
        is_u64(m->output, 827000, "llama-3.1-8b output 0.827 USD/M");
        ok(m->cached == CFCOST_PRICE_NONE, "llama-3.1-8b has no cached rate");
        is_str(m->name, "Llama 3.1 8B Instruct", "llama-3.1-8b name");
        is_str(m->provider, "Meta", "llama-3.1-8b provider");
        is_u64(m->id_len, strlen(m->id), "id_len is the id's length");
    }

    m = find(t, "@cf/moonshotai/kimi-k2.5");
    ok(m != NULL && m->input == 600000 && m->output == 3000000
       && m->cached == 100000, "kimi-k2.5: 0.6 / 3.0, cached 0.1");

    m = find(t, "@cf/moonshotai/kimi-k2.6");
    ok(m != NULL && m->input == 950000 && m->output == 4000000
       && m->cached == 160000, "kimi-k2.6: 0.95 / 4.0, cached 0.16");

    m = find(t, "@cf/baai/bge-large-en-v1.5");
    ok(m != NULL && m->input == 204000 && m->output == 0,
       "bge-large: embeddings, output 0");

    m = find(t, "@cf/meta/llama-2-7b-chat-fp16");
    ok(m != NULL && m->input == 556000 && m->output == 6667000,
       "llama-2-7b-chat-fp16: 0.556 / 6.667");
}


static void
test_file_order(const cfcost_price_table_t *t)
{
    size_t  i, sorted, found, described;

    sorted = 1;
    found = 1;
    described = 1;

    for (i = 0; i < t->n; i++) {
        if (i > 0 && model_cmp(&t->models[i - 1], &t->models[i]) >= 0) {
            diag("out of order: %s before %s", t->models[i - 1].id,
                 t->models[i].id);
            sorted = 0;
        }

        if (find(t, t->models[i].id) != &t->models[i]) {
            diag("find(%s) did not return its own entry", t->models[i].id);
            found = 0;
        }

        if (t->models[i].description[0] == '\0'
            || t->models[i].provider[0] == '\0'
            || t->models[i].source[0] == '\0')
        {
            diag("%s lacks a description, provider or source",
                 t->models[i].id);
            described = 0;
        }
    }

    ok(sorted, "models sorted by provider, then name, then id");
    ok(found, "find() returns every model's own entry");
    ok(described, "every model has a description, provider and source");
    is_str(t->models[0].provider, "Alibaba (Qwen)", "first provider");
    is_str(t->models[t->n - 1].provider, "Zhipu AI (zai-org)",
           "last provider");
}


static void
test_file(const char *path)
{
    int                    rc;
    char                  *data, err[256];
    size_t                 len = 0;
    cfcost_price_table_t   t;

    data = read_file(path, &len);
    if (!ok(data != NULL, "read %s", path)) {
        return;
    }

    rc = cfcost_price_load(data, len, &t, err, sizeof(err));
    if (!ok(rc == 0, "load %s", path)) {
        diag("%s", err);
        free(data);
        return;
    }

    ok(t.n >= 40, "at least 40 models (%zu)", t.n);
    ok(strncmp(t.version, "2026-11-27-", 11) == 0 && strlen(t.version) == 19
       && strspn(t.version + 11, "0123456789abcdef") == 8,
       "version is <file version>-<8 hex> (%s)", t.version);

    test_file_seed(&t);
    test_file_prices(&t);
    test_file_order(&t);

    ok(find(&t, "@cf/meta/no-such-model") == NULL, "absent id: NULL");
    ok(find(&t, "@cf/meta/llama-3.1-8b") == NULL,
       "a prefix of an id does not match");
    ok(find(&t, "@cf/meta/llama-3.1-8b-instruct-") == NULL,
       "an id plus a character does not match");
    ok(find(&t, "") == NULL, "empty id: NULL");
    ok(cfcost_price_find(&t, "@cf/meta/llama-3.1-8b-instructXYZ", 30)
       == find(&t, "@cf/meta/llama-3.1-8b-instruct"),
       "find honours len: the id need not be NUL-terminated");
    ok(cfcost_price_find(&t, "@cf/meta/llama-3.1-8b-instruct", 21) == NULL,
       "find honours len: a shorter len is a prefix, no match");

    cfcost_price_free(&t);
    ok(t.models == NULL && t.n == 0 && t.version == NULL,
       "free leaves a zeroed table");
    cfcost_price_free(&t);
    ok(1, "free on a zeroed table is safe");

    free(data);
}


static void
test_cost(void)
{
    char            buf[32];
    cfcost_model_t  llama, seed, big, kimi;

    memset(&llama, 0, sizeof(llama));
    llama.input = 282000;
    llama.output = 827000;
    llama.cached = CFCOST_PRICE_NONE;

    seed = llama;
    seed.input = 50000;
    seed.output = 50000;

    big = llama;
    big.input = CFCOST_PRICE_MAX;
    big.output = CFCOST_PRICE_MAX;
    big.cached = CFCOST_PRICE_MAX;

    kimi = llama;
    kimi.input = 600000;
    kimi.output = 3000000;
    kimi.cached = 100000;

    is_u64(cfcost_cost_pusd(&llama, 1000000, 0, 1000000),
           1109000000000ULL, "llama-3.1-8b: 1M in + 1M out = 1.109 USD");
    cfcost_usd6(buf, cfcost_cost_pusd(&llama, 1000000, 0, 1000000));
    is_str(buf, "1.109000", "... printed as 1.109000");

    is_u64(cfcost_cost_pusd(&seed, 6, 0, 7), 650000,
           "13 tokens at 0.05 USD/M = 650000 pusd");
    cfcost_usd6(buf, 650000);
    is_str(buf, "0.000001", "... printed as 0.000001, as the seed did");

    is_u64(cfcost_cost_pusd(&llama, 0, 0, 0), 0, "no tokens, no cost");
    is_u64(cfcost_cost_pusd(&llama, 1, 0, 0), 282000,
           "one input token = the price in pusd");

    is_u64(cfcost_cost_pusd(&big, 1ULL << 32, 0, 1ULL << 32),
           2 * CFCOST_TOKENS_MAX * (uint64_t) CFCOST_PRICE_MAX,
           "2^32 tokens each way at 1000 USD/M: clamped, no overflow");
    is_u64(cfcost_cost_pusd(&big, UINT64_MAX, UINT64_MAX, UINT64_MAX),
           2 * CFCOST_TOKENS_MAX * (uint64_t) CFCOST_PRICE_MAX,
           "UINT64_MAX tokens: clamped, no overflow");
    is_u64(cfcost_cost_pusd(&big, CFCOST_TOKENS_MAX, 0, 0),
           CFCOST_TOKENS_MAX * (uint64_t) CFCOST_PRICE_MAX,
           "CFCOST_TOKENS_MAX input tokens at the maximum price");

    is_u64(cfcost_cost_pusd(&kimi, 1000, 400, 100),
           600ULL * 600000 + 400ULL * 100000 + 100ULL * 3000000,
           "kimi: cached tokens at the cached rate");
    is_u64(cfcost_cost_pusd(&llama, 1000, 400, 100),
           1000ULL * 282000 + 100ULL * 827000,
           "no cached rate: cached tokens at the input rate");
    is_u64(cfcost_cost_pusd(&kimi, 100, 500, 0), 100ULL * 100000,
           "cached > input clamps to input");
    is_u64(cfcost_cost_pusd(&kimi, 100, 100, 0), 100ULL * 100000,
           "cached == input: all at the cached rate");
}


static void
test_usd6(void)
{
    size_t  i, n;
    char    buf[32];

    static const struct {
        uint64_t     pusd;
        const char  *want;
    } cases[] = {
        { 0,                   "0.000000" },
        { 1,                   "0.000000" },
        { 499999,              "0.000000" },
        { 500000,              "0.000001" },
        { 999999,              "0.000001" },
        { 1000000,             "0.000001" },
        { 1499999,             "0.000001" },
        { 1500000,             "0.000002" },
        { 2499999,             "0.000002" },
        { 999999499999ULL,     "0.999999" },
        { 999999500000ULL,     "1.000000" },
        { 12500000000000ULL,   "12.500000" },
        { 123000000ULL,        "0.000123" },
        { UINT64_MAX,          "18446744.073710" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = cfcost_usd6(buf, cases[i].pusd);
        is_str(buf, cases[i].want, "usd6(%llu)",
               (unsigned long long) cases[i].pusd);
        is_u64(n, strlen(cases[i].want), "usd6(%llu) length",
               (unsigned long long) cases[i].pusd);
    }
}


static void
test_price_str(void)
{
    size_t  i, n;
    char    buf[32];

    static const struct {
        int64_t      micro;
        const char  *want;
    } cases[] = {
        { 282000,              "0.282" },
        { 1000000,             "1" },
        { 100,                 "0.0001" },
        { 0,                   "0" },
        { 1,                   "0.000001" },
        { 1500000,             "1.5" },
        { 6667000,             "6.667" },
        { 100000,              "0.1" },
        { CFCOST_PRICE_MAX,    "1000" },
        { 1000000001,          "1000.000001" },
        { -1,                  "-0.000001" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = cfcost_price_str(buf, cases[i].micro);
        is_str(buf, cases[i].want, "price_str(%lld)",
               (long long) cases[i].micro);
        is_u64(n, strlen(cases[i].want), "price_str(%lld) length",
               (long long) cases[i].micro);
    }
}


#define M1(pricing)                                                         \
    "{\"models\":[{\"id\":\"@cf/x/y\",\"pricing\":" pricing "}]}"


static void
test_rejections(void)
{
    size_t                 i;
    char                   err[256];
    cfcost_price_table_t   t;

    static const struct {
        const char  *what;
        const char  *json;
        const char  *want;      /* exact message, or a prefix ending "*" */
    } cases[] = {
        { "malformed JSON", "{\"models\": [",
          "malformed JSON at line 1, column 12: *" },
        { "trailing garbage", "{\"models\": []} x",
          "malformed JSON at line 1*" },
        { "duplicate object key", M1("{\"input\":1,\"input\":2,\"output\":1}"),
          "malformed JSON at line 1*" },
        { "empty input", "", "malformed JSON*" },
        { "top level not an object", "[]",
          "top level must be a JSON object" },
        { "no models array", "{\"version\": \"x\"}",
          "\"models\" must be an array" },
        { "models not an array", "{\"models\": {}}",
          "\"models\" must be an array" },
        { "no models", "{\"models\": []}", "\"models\" is empty: no models" },
        { "model not an object", "{\"models\": [1]}",
          "models[0]: must be an object" },
        { "missing id",
          "{\"models\":[{\"name\":\"x\",\"pricing\":{\"input\":1,"
          "\"output\":1}}]}",
          "models[0]: \"id\" must be a non-empty string" },
        { "id not a string",
          "{\"models\":[{\"id\":5,\"pricing\":{\"input\":1,\"output\":1}}]}",
          "models[0]: \"id\" must be a non-empty string" },
        { "empty id",
          "{\"models\":[{\"id\":\"\",\"pricing\":{\"input\":1,\"output\":1}}]}",
          "models[0]: \"id\" must be a non-empty string" },
        { "a string with NUL (jansson refuses it)",
          "{\"models\":[{\"id\":\"a\\u0000b\",\"pricing\":{\"input\":1,"
          "\"output\":1}}]}",
          "malformed JSON at line 1, column 27: \\u0000 is not allowed*" },
        { "duplicate id",
          "{\"models\":["
          "{\"id\":\"a\",\"pricing\":{\"input\":1,\"output\":1}},"
          "{\"id\":\"b\",\"pricing\":{\"input\":1,\"output\":1}},"
          "{\"id\":\"c\",\"pricing\":{\"input\":1,\"output\":1}},"
          "{\"id\":\"b\",\"pricing\":{\"input\":1,\"output\":1}},"
          "{\"id\":\"a\",\"pricing\":{\"input\":1,\"output\":1}}]}",
          "models[3] (\"b\"): duplicate id (first at models[1])" },
        { "name not a string",
          "{\"models\":[{\"id\":\"@cf/x/y\",\"name\":1,\"pricing\":"
          "{\"input\":1,\"output\":1}}]}",
          "models[0] (\"@cf/x/y\"): \"name\" must be a string" },
        { "no pricing", "{\"models\":[{\"id\":\"@cf/x/y\"}]}",
          "models[0] (\"@cf/x/y\"): \"pricing\" must be an object" },
        { "negative input", M1("{\"input\":-0.1,\"output\":1}"),
          "models[0] (\"@cf/x/y\"): \"input\" must not be negative" },
        { "negative cached",
          M1("{\"input\":1,\"output\":1,\"cached_input\":-1}"),
          "models[0] (\"@cf/x/y\"): \"cached_input\" must not be negative" },
        { "7 decimal places", M1("{\"input\":1,\"output\":0.0000001}"),
          "models[0] (\"@cf/x/y\"): \"output\" has more than 6 decimal "
          "places" },
        { "7 decimal places, nonzero", M1("{\"input\":0.2820001,\"output\":1}"),
          "models[0] (\"@cf/x/y\"): \"input\" has more than 6 decimal "
          "places" },
        { "above max", M1("{\"input\":1000.000001,\"output\":1}"),
          "models[0] (\"@cf/x/y\"): \"input\" is above the maximum of 1000 "
          "USD per 1M tokens" },
        { "far above max", M1("{\"input\":1,\"output\":1e300}"),
          "models[0] (\"@cf/x/y\"): \"output\" is above the maximum of 1000 "
          "USD per 1M tokens" },
        { "string price", M1("{\"input\":\"0.1\",\"output\":1}"),
          "models[0] (\"@cf/x/y\"): \"input\" must be a number of USD per 1M "
          "tokens" },
        { "null price", M1("{\"input\":1,\"output\":null}"),
          "models[0] (\"@cf/x/y\"): \"output\" must be a number of USD per "
          "1M tokens" },
        { "missing output", M1("{\"input\":1}"),
          "models[0] (\"@cf/x/y\"): \"output\" must be a number of USD per "
          "1M tokens" },
        { "version not a string",
          "{\"version\":1,\"models\":[{\"id\":\"a\",\"pricing\":{\"input\":1,"
          "\"output\":1}}]}",
          "\"version\" must be a string" },
        { "currency not USD",
          "{\"currency\":\"EUR\",\"models\":[{\"id\":\"a\",\"pricing\":"
          "{\"input\":1,\"output\":1}}]}",
          "\"currency\" must be \"USD\"" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t  wl = strlen(cases[i].want);
        int     rc, match;

        memset(&t, 0xa5, sizeof(t));
        strcpy(err, "untouched");

        rc = load_str(cases[i].json, &t, err, sizeof(err));

        if (cases[i].want[wl - 1] == '*') {
            match = (strncmp(err, cases[i].want, wl - 1) == 0);

        } else {
            match = (strcmp(err, cases[i].want) == 0);
        }

        ok(rc == -1 && match && t.models == NULL && t.n == 0
           && t.version == NULL, "rejects %s", cases[i].what);

        if (!match) {
            diag("got '%s', expected '%s'", err, cases[i].want);
        }
    }

    /* a short err buffer still gets a NUL-terminated prefix */
    ok(load_str("[]", &t, err, 4) == -1 && strcmp(err, "top") == 0,
       "err truncated to errlen, NUL-terminated");
    ok(load_str("[]", &t, NULL, 0) == -1, "err may be NULL");
}


static void
test_accepts(void)
{
    char                   err[256];
    cfcost_price_table_t   t;
    const cfcost_model_t  *m;

    ok(load_str("{\"models\":[{\"id\":\"a\",\"pricing\":{\"input\":1,"
                "\"output\":0}}]}", &t, err, sizeof(err)) == 0,
       "minimal file loads");
    is_str(t.version,
           "unversioned-73050beb", "no version: unversioned-<sha256 prefix>");

    m = find(&t, "a");
    ok(m != NULL && m->input == 1000000 && m->output == 0
       && m->cached == CFCOST_PRICE_NONE, "integer prices; no cached rate");
    ok(m != NULL && strcmp(m->name, "a") == 0 && m->provider[0] == '\0'
       && m->description[0] == '\0' && m->source[0] == '\0',
       "name defaults to the id; other strings to \"\"");
    cfcost_price_free(&t);

    ok(load_str(M1("{\"input\":0.000001,\"output\":1000,"
                   "\"cached_input\":123.456789}"), &t, err, sizeof(err)) == 0,
       "6 decimal places, the maximum, a cached rate load");
    m = find(&t, "@cf/x/y");
    ok(m != NULL && m->input == 1 && m->output == CFCOST_PRICE_MAX
       && m->cached == 123456789, "... as exact micro-USD");
    cfcost_price_free(&t);

    ok(load_str("{\"version\":\"v7\",\"models\":["
                "{\"id\":\"c\",\"provider\":\"P\",\"name\":\"N\","
                "\"pricing\":{\"input\":1,\"output\":1}},"
                "{\"id\":\"b\",\"provider\":\"P\",\"name\":\"N\","
                "\"pricing\":{\"input\":1,\"output\":1}},"
                "{\"id\":\"z\",\"provider\":\"A\",\"name\":\"Z\","
                "\"pricing\":{\"input\":1,\"output\":1}},"
                "{\"id\":\"a\",\"provider\":\"P\",\"name\":\"M\","
                "\"pricing\":{\"input\":1,\"output\":1}}]}",
                &t, err, sizeof(err)) == 0, "four models load");
    ok(t.n == 4 && strcmp(t.models[0].id, "z") == 0
       && strcmp(t.models[1].id, "a") == 0
       && strcmp(t.models[2].id, "b") == 0
       && strcmp(t.models[3].id, "c") == 0,
       "sorted by provider, then name, then id");
    ok(strncmp(t.version, "v7-", 3) == 0 && strlen(t.version) == 11,
       "version from the file (%s)", t.version);
    ok(find(&t, "a") == &t.models[1] && find(&t, "z") == &t.models[0]
       && find(&t, "b") == &t.models[2] && find(&t, "c") == &t.models[3]
       && find(&t, "d") == NULL && find(&t, "0") == NULL,
       "find on each id and on ids sorting before and after all");
    cfcost_price_free(&t);
}


int
main(int argc, char **argv)
{
    test_file(argc > 1 ? argv[1] : "conf/pricing.json");
    test_cost();
    test_usd6();
    test_price_str();
    test_rejections();
    test_accepts();

    return done_testing();
}
