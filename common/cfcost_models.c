/*
 * The model list as JSON: see cfcost_models.h for the two shapes.
 *
 * One writer for the length and the bytes: with dst NULL it only counts,
 * so the length the caller allocates can never disagree with what is
 * written.
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_json.h"
#include "cfcost_models.h"


#define cfcost_models_lit(dst, n, s)                                         \
    cfcost_models_put(dst, n, s, sizeof(s) - 1)


/* Appends s[0..len) at dst + n when dst is not NULL; returns n + len. */
static size_t
cfcost_models_put(char *dst, size_t n, const char *s, size_t len)
{
    if (dst != NULL) {
        memcpy(dst + n, s, len);
    }

    return n + len;
}


/* Appends s quoted as the inside of a JSON string; returns the new n. */
static size_t
cfcost_models_str(char *dst, size_t n, const char *s, size_t len)
{
    if (dst == NULL) {
        return n + cfcost_json_quote_len(s, len);
    }

    return cfcost_json_quote(dst + n, s, len) - dst;
}


/* Appends a price (micro-USD per 1M) as its exact USD decimal. */
static size_t
cfcost_models_price(char *dst, size_t n, int64_t micro)
{
    char  num[32];

    return cfcost_models_put(dst, n, num, cfcost_price_str(num, micro));
}


/* Appends one model of the cfcost shape. */
static size_t
cfcost_models_one(char *dst, size_t n, const cfcost_model_t *m)
{
    n = cfcost_models_lit(dst, n, "{\"id\":\"");
    n = cfcost_models_str(dst, n, m->id, m->id_len);
    n = cfcost_models_lit(dst, n, "\",\"name\":\"");
    n = cfcost_models_str(dst, n, m->name, strlen(m->name));
    n = cfcost_models_lit(dst, n, "\",\"provider\":\"");
    n = cfcost_models_str(dst, n, m->provider, strlen(m->provider));
    n = cfcost_models_lit(dst, n, "\",\"description\":\"");
    n = cfcost_models_str(dst, n, m->description, strlen(m->description));
    n = cfcost_models_lit(dst, n, "\",\"pricing\":{\"input\":");
    n = cfcost_models_price(dst, n, m->input);
    n = cfcost_models_lit(dst, n, ",\"output\":");
    n = cfcost_models_price(dst, n, m->output);

    if (m->cached != CFCOST_PRICE_NONE) {
        n = cfcost_models_lit(dst, n, ",\"cached_input\":");
        n = cfcost_models_price(dst, n, m->cached);
    }

    return cfcost_models_lit(dst, n, "}}");
}


/* Appends one model of OpenAI's shape. */
static size_t
cfcost_models_openai_one(char *dst, size_t n, const cfcost_model_t *m)
{
    n = cfcost_models_lit(dst, n, "{\"id\":\"");
    n = cfcost_models_str(dst, n, m->id, m->id_len);
    n = cfcost_models_lit(dst, n, "\",\"object\":\"model\",\"created\":0,"
                                  "\"owned_by\":\"");
    n = cfcost_models_str(dst, n, m->provider, strlen(m->provider));

    return cfcost_models_lit(dst, n, "\"}");
}


/* Writes (or, with dst NULL, measures) the whole body; returns its length. */
static size_t
cfcost_models_to(char *dst, const cfcost_price_table_t *t, int shape)
{
    size_t  i, n;

    n = (shape == CFCOST_MODELS_OPENAI)
        ? cfcost_models_lit(dst, 0, "{\"object\":\"list\",\"data\":[")
        : cfcost_models_lit(dst, 0, "{\"models\":[");

    for (i = 0; i < t->n; i++) {
        if (i > 0) {
            n = cfcost_models_lit(dst, n, ",");
        }

        n = (shape == CFCOST_MODELS_OPENAI)
            ? cfcost_models_openai_one(dst, n, &t->models[i])
            : cfcost_models_one(dst, n, &t->models[i]);
    }

    if (shape == CFCOST_MODELS_OPENAI) {
        return cfcost_models_lit(dst, n, "]}\n");
    }

    n = cfcost_models_lit(dst, n, "],\"pricing_version\":\"");
    n = cfcost_models_str(dst, n, t->version, strlen(t->version));

    return cfcost_models_lit(dst, n, "\"}\n");
}


size_t
cfcost_models_len(const cfcost_price_table_t *t, int shape)
{
    return cfcost_models_to(NULL, t, shape);
}


char *
cfcost_models_write(char *dst, const cfcost_price_table_t *t, int shape)
{
    return dst + cfcost_models_to(dst, t, shape);
}


char *
cfcost_models_alloc(const cfcost_price_table_t *t, int shape, size_t *len)
{
    char  *buf;

    *len = cfcost_models_len(t, shape);

    buf = malloc(*len + 1);
    if (buf == NULL) {
        return NULL;
    }

    cfcost_models_write(buf, t, shape);
    buf[*len] = '\0';

    return buf;
}
