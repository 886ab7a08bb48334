/*
 * Price table and cost arithmetic.  Pure C over jansson: no nginx, so the
 * module, the aggregator, the CLI and the unit tests share one copy.
 *
 * Prices are integers in micro-USD per 1M tokens; a cost is an integer
 * number of picodollars (see cfcost_schema.h).  No floating point touches
 * money after the price file is parsed.
 */

#ifndef CFCOST_PRICE_H
#define CFCOST_PRICE_H

#include <stddef.h>
#include <stdint.h>


#define CFCOST_PRICE_NONE        (-1)      /* model has no such rate */
#define CFCOST_PRICE_MAX         1000000000LL  /* 1000 USD per 1M tokens */
#define CFCOST_TOKENS_MAX        0xffffffffULL /* clamp, keeps x price < 2^63 */


typedef struct {
    char        *id;            /* "@cf/meta/llama-3.1-8b-instruct" */
    size_t       id_len;
    char        *name;          /* "Llama 3.1 8B Instruct" */
    char        *provider;      /* "Meta" */
    char        *description;   /* may be "" */
    char        *source;        /* where the price comes from */
    int64_t      input;         /* micro-USD per 1M input tokens */
    int64_t      output;        /* micro-USD per 1M output tokens */
    int64_t      cached;        /* micro-USD per 1M cached input tokens,
                                   or CFCOST_PRICE_NONE */
} cfcost_model_t;


typedef struct {
    cfcost_model_t  *models;    /* sorted by provider, then name, then id */
    size_t           n;
    char            *version;   /* "<file version>-<8 hex of sha256(file)>" */
} cfcost_price_table_t;


/*
 * Parses a pricing file (the format of conf/pricing.json) held in
 * data[0..len).  On success returns 0 and fills *t, which the caller
 * releases with cfcost_price_free().  On failure returns -1, leaves *t
 * empty, and writes a one-line reason into err (at most errlen bytes,
 * NUL-terminated), naming the model index or line where it applies.
 * Rejects: malformed JSON, a missing "models" array, a model without a
 * string "id", duplicate ids, a price that is negative, above
 * CFCOST_PRICE_MAX, or finer than 6 decimal places.
 */
int cfcost_price_load(const char *data, size_t len, cfcost_price_table_t *t,
    char *err, size_t errlen);

/* Frees everything cfcost_price_load() allocated; safe on a zeroed table. */
void cfcost_price_free(cfcost_price_table_t *t);

/* Returns the model with exactly this id, or NULL.  O(log n). */
const cfcost_model_t *cfcost_price_find(const cfcost_price_table_t *t,
    const char *id, size_t len);

/*
 * Cost in picodollars of one request.  input counts every prompt token,
 * cached ones included; cached (<= input) are billed at the cached rate
 * when the model has one, else at the input rate.  Token counts are
 * clamped to CFCOST_TOKENS_MAX, so the result never overflows.
 */
uint64_t cfcost_cost_pusd(const cfcost_model_t *m, uint64_t input,
    uint64_t cached, uint64_t output);

/*
 * Numbers as text without printf, whose format parser costs more than a
 * gateway's record: cfcost_dec() writes v in decimal ("%llu"),
 * cfcost_dec_fixed() its last n digits, zero-padded ("%0*llu" of a v that
 * fits).  Both return the end of what they wrote; neither writes a NUL.
 */
char *cfcost_dec(char *dst, uint64_t v);
char *cfcost_dec_fixed(char *dst, uint64_t v, size_t n);

/*
 * Writes pusd as a decimal USD amount rounded half-up to 6 places
 * ("0.000123", "12.500000") into buf, which must hold 32 bytes.  Returns
 * the length written (no NUL is counted; one is written).
 */
size_t cfcost_usd6(char *buf, uint64_t pusd);

/*
 * Writes a price (micro-USD per 1M) as the shortest exact decimal USD
 * string ("0.282", "1", "0.0001") into buf (32 bytes).  Returns length.
 */
size_t cfcost_price_str(char *buf, int64_t micro);

#endif /* CFCOST_PRICE_H */
