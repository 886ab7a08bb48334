/*
 * The model list as JSON, rendered from a loaded price table: the body of
 * GET /api/ai/models (cfcost_models;), of GET /v1/models (cfcost_models
 * openai;) and of `cfcost models --json`, one writer for all three.  Pure
 * C, no nginx, no jansson.
 *
 * CFCOST_MODELS_CFCOST, in the table's order (provider, then name, then
 * id), one line and a final "\n":
 *
 *   {"models":[{"id":"...","name":"...","provider":"...",
 *   "description":"...","pricing":{"input":0.282,"output":0.827
 *   [,"cached_input":0.1]}},...],"pricing_version":"..."}
 *
 * Prices are USD per 1M tokens as their exact shortest decimal
 * (cfcost_price_str(): 1, 0.282, 0.0001), never a float.
 *
 * CFCOST_MODELS_OPENAI, OpenAI's list, the same order:
 *
 *   {"object":"list","data":[{"id":"...","object":"model","created":0,
 *   "owned_by":"<provider>"},...]}
 *
 * Every string goes through cfcost_json_quote().
 */

#ifndef CFCOST_MODELS_H
#define CFCOST_MODELS_H

#include <stddef.h>

#include "cfcost_price.h"


#define CFCOST_MODELS_CFCOST   0
#define CFCOST_MODELS_OPENAI   1


/* The exact length in bytes of the body of that shape (no NUL counted). */
size_t cfcost_models_len(const cfcost_price_table_t *t, int shape);

/*
 * Writes the body into dst, which holds cfcost_models_len() bytes; no NUL.
 * Returns the end of what was written.
 */
char *cfcost_models_write(char *dst, const cfcost_price_table_t *t,
    int shape);

/*
 * The body in a malloc'ed buffer, NUL-terminated (the caller frees it),
 * its length in *len.  Returns NULL when out of memory.
 */
char *cfcost_models_alloc(const cfcost_price_table_t *t, int shape,
    size_t *len);

#endif /* CFCOST_MODELS_H */
