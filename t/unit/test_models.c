/*
 * Unit tests for common/cfcost_models.c: the model list rendered from a
 * small price file must be, byte for byte, what the module's
 * GET /api/ai/models and GET /v1/models answered for that file before the
 * renderer moved to common/ (captured from a running gateway); the
 * length is exact; the shipped table renders valid JSON.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_json.h"
#include "cfcost_models.h"
#include "cfcost_price.h"
#include "tap.h"


/*
 * Two providers out of order, a cached rate, prices from 0 to 1000 and
 * down to 0.000001, and strings that need escaping.  Its exact bytes
 * matter: pricing_version ends with 8 hex of their SHA-256.
 */
static const char  small_json[] =
    "{\"version\": \"t-1\",\n"
    " \"models\": [\n"
    "  {\"id\": \"@cf/zeta/b-model\", \"name\": \"B \\\"quoted\\\" model\","
    " \"provider\": \"Zeta\",\n"
    "   \"description\": \"back\\\\slash, tab\\t, newline\\n, \xc3\xa9,"
    " \\u2028, /slash\",\n"
    "   \"pricing\": {\"input\": 0.282, \"output\": 10,"
    " \"cached_input\": 0.0001}, \"source\": \"seed\"},\n"
    "  {\"id\": \"@cf/alpha/a\", \"name\": \"A\", \"provider\": \"Alpha\",\n"
    "   \"pricing\": {\"input\": 0, \"output\": 1000},"
    " \"source\": \"cf-pricing\"},\n"
    "  {\"id\": \"@cf/zeta/a-model\", \"name\": \"A model\","
    " \"provider\": \"Zeta\", \"description\": \"\",\n"
    "   \"pricing\": {\"input\": 1.5, \"output\": 0.000001}}\n"
    " ]}\n";

/* GET /api/ai/models for small_json, as the module sent it */
static const char  small_models[] =
    "{\"models\":["
    "{\"id\":\"@cf/alpha/a\",\"name\":\"A\",\"provider\":\"Alpha\","
    "\"description\":\"\",\"pricing\":{\"input\":0,\"output\":1000}},"
    "{\"id\":\"@cf/zeta/a-model\",\"name\":\"A model\",\"provider\":\"Zeta\","
    "\"description\":\"\",\"pricing\":{\"input\":1.5,\"output\":0.000001}},"
    "{\"id\":\"@cf/zeta/b-model\",\"name\":\"B \\\"quoted\\\" model\","
    "\"provider\":\"Zeta\",\"description\":\"back\\\\slash, tab\\t, "
    "newline\\n, \xc3\xa9, \xe2\x80\xa8, /slash\","
    "\"pricing\":{\"input\":0.282,\"output\":10,\"cached_input\":0.0001}}"
    "],\"pricing_version\":\"t-1-0ea079b5\"}\n";

/* GET /v1/models for small_json, as the module sent it */
static const char  small_openai[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"@cf/alpha/a\",\"object\":\"model\",\"created\":0,"
    "\"owned_by\":\"Alpha\"},"
    "{\"id\":\"@cf/zeta/a-model\",\"object\":\"model\",\"created\":0,"
    "\"owned_by\":\"Zeta\"},"
    "{\"id\":\"@cf/zeta/b-model\",\"object\":\"model\",\"created\":0,"
    "\"owned_by\":\"Zeta\"}]}\n";


/* Renders t in shape three ways and checks each against want. */
static void
check_shape(const cfcost_price_table_t *t, int shape, const char *want,
    const char *what)
{
    char    *buf, *end, *a;
    size_t   len, alen;

    len = cfcost_models_len(t, shape);
    is_u64(len, strlen(want), "%s: the length is exact", what);

    buf = malloc(len + 16);
    if (buf == NULL) {
        ok(0, "%s: out of memory", what);
        return;
    }

    memset(buf, '#', len + 16);
    end = cfcost_models_write(buf, t, shape);
    is_u64(end - buf, len, "%s: write returns the end", what);
    ok(buf[len] == '#', "%s: nothing written past the length", what);
    buf[len] = '\0';
    is_str(buf, want, "%s: the module's bytes", what);

    a = cfcost_models_alloc(t, shape, &alen);
    ok(a != NULL && alen == len && a[alen] == '\0'
       && memcmp(a, want, len) == 0,
       "%s: alloc gives the same bytes, NUL-terminated", what);

    ok(cfcost_json_valid(buf, len) == 0, "%s: valid JSON", what);

    free(a);
    free(buf);
}


static void
test_small(void)
{
    char                  err[256];
    cfcost_price_table_t  t;

    memset(&t, 0, sizeof(t));

    if (!ok(cfcost_price_load(small_json, sizeof(small_json) - 1, &t, err,
                              sizeof(err)) == 0,
            "small price file loads"))
    {
        diag("%s", err);
        return;
    }

    check_shape(&t, CFCOST_MODELS_CFCOST, small_models, "cfcost shape");
    check_shape(&t, CFCOST_MODELS_OPENAI, small_openai, "openai shape");

    cfcost_price_free(&t);
}


static void
test_empty(void)
{
    char                  buf[256];
    cfcost_price_table_t  t;

    memset(&t, 0, sizeof(t));
    t.version = "v-00000000";

    *cfcost_models_write(buf, &t, CFCOST_MODELS_CFCOST) = '\0';
    is_str(buf, "{\"models\":[],\"pricing_version\":\"v-00000000\"}\n",
           "no models: an empty list");

    *cfcost_models_write(buf, &t, CFCOST_MODELS_OPENAI) = '\0';
    is_str(buf, "{\"object\":\"list\",\"data\":[]}\n",
           "no models, openai: an empty list");

    /* the module wrote the version raw; a quote now stays valid JSON */
    t.version = "a\"b-00000000";
    *cfcost_models_write(buf, &t, CFCOST_MODELS_CFCOST) = '\0';
    is_str(buf, "{\"models\":[],\"pricing_version\":\"a\\\"b-00000000\"}\n",
           "a version is escaped like every other string");
}


/* The shipped table (or the file named on the command line). */
static void
test_file(const char *path)
{
    char                 *data, *body, err[512];
    long                  size;
    FILE                 *f;
    size_t                len, n;
    cfcost_price_table_t  t;

    f = fopen(path, "rb");
    if (!ok(f != NULL, "open %s", path)) {
        return;
    }

    fseek(f, 0, SEEK_END);
    size = ftell(f);
    rewind(f);

    data = malloc(size + 1);
    n = data ? fread(data, 1, size, f) : 0;
    fclose(f);

    memset(&t, 0, sizeof(t));

    if (!ok(data != NULL && n == (size_t) size
            && cfcost_price_load(data, n, &t, err, sizeof(err)) == 0,
            "%s loads", path))
    {
        free(data);
        return;
    }

    body = cfcost_models_alloc(&t, CFCOST_MODELS_CFCOST, &len);
    ok(body != NULL && cfcost_json_valid(body, len) == 0
       && body[len - 1] == '\n',
       "%s: %zu models render as valid JSON with a final newline", path,
       t.n);
    ok(body != NULL && strstr(body, t.version) != NULL,
       "%s: the body names pricing_version %s", path, t.version);

    free(body);
    cfcost_price_free(&t);
    free(data);
}


int
main(int argc, char **argv)
{
    test_small();
    test_empty();
    test_file(argc > 1 ? argv[1] : "conf/pricing.json");

    return done_testing();
}
