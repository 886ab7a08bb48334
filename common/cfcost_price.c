/*
 * Price table and cost arithmetic: see cfcost_price.h for the contract.
 *
 * Layout of a loaded table: t->models is one allocation holding the n
 * models, sorted by provider, then name, then id, followed by n pointers
 * to those models sorted by id.  cfcost_price_find() binary searches that
 * second part; the header's struct has no field for it, so it lives where
 * only this file looks.  A consequence: only tables made by
 * cfcost_price_load() may be searched.  Every string is its own
 * allocation.
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cfcost_price.h"


#define CFCOST_PRICE_VERSION_DEFAULT  "unversioned"
#define CFCOST_PRICE_HASH_HEX         8

/*
 * A price becomes micro-USD as llround(x * 1e6).  For x <= 1000 the double
 * error of x * 1e6 is below 2e-7, so anything further than 1e-6 from an
 * integer had a 7th decimal place in the file.
 */
#define CFCOST_PRICE_EPSILON          1e-6


typedef struct {
    const char  *key;           /* field name in "pricing" */
    int          optional;      /* absent means CFCOST_PRICE_NONE */
    size_t       offset;        /* of the int64_t in cfcost_model_t */
} cfcost_price_field_t;


static const cfcost_price_field_t  cfcost_price_fields[] = {
    { "input",        0, offsetof(cfcost_model_t, input) },
    { "output",       0, offsetof(cfcost_model_t, output) },
    { "cached_input", 1, offsetof(cfcost_model_t, cached) },
};

#define CFCOST_PRICE_NFIELDS                                                 \
    (sizeof(cfcost_price_fields) / sizeof(cfcost_price_fields[0]))


static void cfcost_price_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cfcost_price_model_err(char *err, size_t errlen, size_t i,
    const char *id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));


/* Writes a formatted reason into err, if there is room for one. */
static void
cfcost_price_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


/*
 * Writes 'models[i] ("id"): <reason>' (or 'models[i]: ' when the id is not
 * known yet) into err.  Always returns -1, so callers can return it.
 */
static int
cfcost_price_model_err(char *err, size_t errlen, size_t i, const char *id,
    const char *fmt, ...)
{
    char     reason[256];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);

    if (id != NULL) {
        cfcost_price_err(err, errlen, "models[%zu] (\"%s\"): %s", i, id,
                         reason);

    } else {
        cfcost_price_err(err, errlen, "models[%zu]: %s", i, reason);
    }

    return -1;
}


/*
 * Converts a JSON number of USD per 1M tokens to micro-USD in *micro.
 * Returns 0, or -1 with a reason in err (which names model i).
 */
static int
cfcost_price_parse(json_t *v, const char *key, size_t i, const char *id,
    int64_t *micro, char *err, size_t errlen)
{
    double     x;
    long long  r;

    if (!json_is_number(v)) {
        return cfcost_price_model_err(err, errlen, i, id,
                   "\"%s\" must be a number of USD per 1M tokens", key);
    }

    x = json_number_value(v);

    if (!(x >= 0)) {
        return cfcost_price_model_err(err, errlen, i, id,
                   "\"%s\" must not be negative", key);
    }

    /* checked before llround(), which is undefined far out of range */
    if (x > (double) CFCOST_PRICE_MAX / 1e6 + 1) {
        goto above_max;
    }

    r = llround(x * 1e6);

    if (fabs(x * 1e6 - (double) r) > CFCOST_PRICE_EPSILON) {
        return cfcost_price_model_err(err, errlen, i, id,
                   "\"%s\" has more than 6 decimal places", key);
    }

    if (r > CFCOST_PRICE_MAX) {
        goto above_max;
    }

    *micro = r;
    return 0;

above_max:

    return cfcost_price_model_err(err, errlen, i, id,
               "\"%s\" is above the maximum of %lld USD per 1M tokens", key,
               CFCOST_PRICE_MAX / 1000000);
}


/*
 * Copies the optional string member 'key' of object o into *dst, or def
 * when it is absent.  Returns 0, or -1 with a reason in err.
 */
static int
cfcost_price_strdup(json_t *o, const char *key, const char *def, char **dst,
    size_t i, const char *id, char *err, size_t errlen)
{
    json_t      *v;
    const char  *s;

    v = json_object_get(o, key);

    if (v == NULL) {
        s = def;

    } else if (json_is_string(v)) {
        s = json_string_value(v);

    } else {
        return cfcost_price_model_err(err, errlen, i, id,
                                      "\"%s\" must be a string", key);
    }

    *dst = strdup(s);
    if (*dst == NULL) {
        cfcost_price_err(err, errlen, "out of memory");
        return -1;
    }

    return 0;
}


/* Fills m->input, m->output and m->cached from o's "pricing" object. */
static int
cfcost_price_rates(json_t *o, cfcost_model_t *m, size_t i, char *err,
    size_t errlen)
{
    size_t                       k;
    json_t                      *pricing, *v;
    int64_t                     *dst;
    const cfcost_price_field_t  *f;

    pricing = json_object_get(o, "pricing");

    if (!json_is_object(pricing)) {
        return cfcost_price_model_err(err, errlen, i, m->id,
                   "\"pricing\" must be an object");
    }

    for (k = 0; k < CFCOST_PRICE_NFIELDS; k++) {
        f = &cfcost_price_fields[k];
        dst = (int64_t *) ((char *) m + f->offset);
        v = json_object_get(pricing, f->key);

        if (v == NULL && f->optional) {
            *dst = CFCOST_PRICE_NONE;
            continue;
        }

        if (cfcost_price_parse(v, f->key, i, m->id, dst, err, errlen) != 0) {
            return -1;
        }
    }

    return 0;
}


/* Fills m from models[i], the JSON object o.  Returns 0 or -1 with err. */
static int
cfcost_price_model(json_t *o, cfcost_model_t *m, size_t i, char *err,
    size_t errlen)
{
    json_t      *id;
    const char  *s;
    size_t       len;

    if (!json_is_object(o)) {
        return cfcost_price_model_err(err, errlen, i, NULL,
                                      "must be an object");
    }

    id = json_object_get(o, "id");
    s = json_string_value(id);
    len = json_string_length(id);

    if (s == NULL || len == 0 || strlen(s) != len) {
        return cfcost_price_model_err(err, errlen, i, NULL,
                   "\"id\" must be a non-empty string");
    }

    m->id = strdup(s);
    if (m->id == NULL) {
        cfcost_price_err(err, errlen, "out of memory");
        return -1;
    }

    m->id_len = len;

    if (cfcost_price_strdup(o, "name", s, &m->name, i, s, err, errlen) != 0
        || cfcost_price_strdup(o, "provider", "", &m->provider, i, s, err,
                               errlen) != 0
        || cfcost_price_strdup(o, "description", "", &m->description, i, s,
                               err, errlen) != 0
        || cfcost_price_strdup(o, "source", "", &m->source, i, s, err,
                               errlen) != 0)
    {
        return -1;
    }

    return cfcost_price_rates(o, m, i, err, errlen);
}


/* Byte order on (id, len): the order cfcost_price_find() searches. */
static int
cfcost_price_idcmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int  rc;

    rc = memcmp(a, b, alen < blen ? alen : blen);
    if (rc != 0) {
        return rc;
    }

    return (alen > blen) - (alen < blen);
}


/* qsort comparator for the id index: id, then position in the array. */
static int
cfcost_price_idxcmp(const void *pa, const void *pb)
{
    int                    rc;
    const cfcost_model_t  *a, *b;

    a = *(const cfcost_model_t * const *) pa;
    b = *(const cfcost_model_t * const *) pb;

    rc = cfcost_price_idcmp(a->id, a->id_len, b->id, b->id_len);
    if (rc != 0) {
        return rc;
    }

    return (a > b) - (a < b);
}


/*
 * Fills by_id[] with pointers to models[], sorted by id, ties by position:
 * a total order, so the result does not depend on qsort's (in)stability.
 */
static void
cfcost_price_index(cfcost_model_t *models, cfcost_model_t **by_id, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        by_id[i] = &models[i];
    }

    qsort(by_id, n, sizeof(*by_id), cfcost_price_idxcmp);
}


/*
 * Reports the first duplicate id in file order; by_id[] is sorted by id,
 * ties by position, so the first entry of a run of equal ids is the
 * original.  Returns 0 if all ids are unique, else -1 with err.
 */
static int
cfcost_price_dups(cfcost_model_t *models, cfcost_model_t **by_id, size_t n,
    char *err, size_t errlen)
{
    size_t           k, run;
    cfcost_model_t  *a, *b, *dup, *first;

    dup = NULL;
    first = NULL;
    run = 0;

    for (k = 1; k < n; k++) {
        a = by_id[run];
        b = by_id[k];

        if (cfcost_price_idcmp(a->id, a->id_len, b->id, b->id_len) != 0) {
            run = k;
            continue;
        }

        if (dup == NULL || b < dup) {
            dup = b;
            first = a;
        }
    }

    if (dup == NULL) {
        return 0;
    }

    return cfcost_price_model_err(err, errlen, (size_t) (dup - models),
                                  dup->id,
                                  "duplicate id (first at models[%zu])",
                                  (size_t) (first - models));
}


/* qsort comparator for the display order: provider, name, id. */
static int
cfcost_price_cmp(const void *pa, const void *pb)
{
    int                    rc;
    const cfcost_model_t  *a, *b;

    a = pa;
    b = pb;

    rc = strcmp(a->provider, b->provider);
    if (rc != 0) {
        return rc;
    }

    rc = strcmp(a->name, b->name);
    if (rc != 0) {
        return rc;
    }

    return cfcost_price_idcmp(a->id, a->id_len, b->id, b->id_len);
}


/*
 * Returns a malloc'ed "<version>-<8 hex of sha256(data)>", or NULL with a
 * reason in err.
 */
static char *
cfcost_price_version(json_t *root, const char *data, size_t len, char *err,
    size_t errlen)
{
    char           *v;
    size_t          n;
    json_t         *jv;
    const char     *name;
    unsigned int    i, mdlen;
    unsigned char   md[EVP_MAX_MD_SIZE];

    jv = json_object_get(root, "version");

    if (jv == NULL) {
        name = CFCOST_PRICE_VERSION_DEFAULT;

    } else if (json_is_string(jv)) {
        name = json_string_value(jv);

    } else {
        cfcost_price_err(err, errlen, "\"version\" must be a string");
        return NULL;
    }

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        cfcost_price_err(err, errlen, "SHA-256 failed");
        return NULL;
    }

    n = strlen(name) + 1 + CFCOST_PRICE_HASH_HEX + 1;

    v = malloc(n);
    if (v == NULL) {
        cfcost_price_err(err, errlen, "out of memory");
        return NULL;
    }

    n = (size_t) snprintf(v, n, "%s-", name);

    for (i = 0; i < CFCOST_PRICE_HASH_HEX / 2; i++) {
        snprintf(v + n + 2 * i, 3, "%02x", md[i]);
    }

    return v;
}


/* Checks the top-level object and returns its "models" array, or NULL. */
static json_t *
cfcost_price_root(json_t *root, char *err, size_t errlen)
{
    json_t  *models, *cur;

    if (!json_is_object(root)) {
        cfcost_price_err(err, errlen, "top level must be a JSON object");
        return NULL;
    }

    cur = json_object_get(root, "currency");

    if (cur != NULL && !(json_is_string(cur)
                         && strcmp(json_string_value(cur), "USD") == 0))
    {
        cfcost_price_err(err, errlen, "\"currency\" must be \"USD\"");
        return NULL;
    }

    models = json_object_get(root, "models");

    if (!json_is_array(models)) {
        cfcost_price_err(err, errlen, "\"models\" must be an array");
        return NULL;
    }

    if (json_array_size(models) == 0) {
        cfcost_price_err(err, errlen, "\"models\" is empty: no models");
        return NULL;
    }

    return models;
}


/*
 * Allocates and fills t->models (with its trailing id index) from the
 * JSON array.  On failure returns -1; t->models and t->n are set so that
 * cfcost_price_free() releases what was allocated.
 */
static int
cfcost_price_models(json_t *models, cfcost_price_table_t *t, char *err,
    size_t errlen)
{
    size_t            i, n;
    cfcost_model_t  **by_id;

    n = json_array_size(models);

    if (n > (SIZE_MAX / 2) / (sizeof(cfcost_model_t) + sizeof(*by_id))) {
        cfcost_price_err(err, errlen, "too many models");
        return -1;
    }

    t->models = calloc(1, n * (sizeof(cfcost_model_t) + sizeof(*by_id)));
    if (t->models == NULL) {
        cfcost_price_err(err, errlen, "out of memory");
        return -1;
    }

    t->n = n;
    by_id = (cfcost_model_t **) (t->models + n);

    for (i = 0; i < n; i++) {
        if (cfcost_price_model(json_array_get(models, i), &t->models[i], i,
                               err, errlen) != 0)
        {
            return -1;
        }
    }

    cfcost_price_index(t->models, by_id, n);

    if (cfcost_price_dups(t->models, by_id, n, err, errlen) != 0) {
        return -1;
    }

    qsort(t->models, n, sizeof(cfcost_model_t), cfcost_price_cmp);
    cfcost_price_index(t->models, by_id, n);

    return 0;
}


int
cfcost_price_load(const char *data, size_t len, cfcost_price_table_t *t,
    char *err, size_t errlen)
{
    json_t        *root, *models;
    json_error_t   jerr;

    memset(t, 0, sizeof(*t));

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }

    root = json_loadb(data, len, JSON_DECODE_INT_AS_REAL
                                 | JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        cfcost_price_err(err, errlen, "malformed JSON at line %d, column %d: "
                         "%s", jerr.line, jerr.column, jerr.text);
        return -1;
    }

    models = cfcost_price_root(root, err, errlen);
    if (models == NULL) {
        goto failed;
    }

    if (cfcost_price_models(models, t, err, errlen) != 0) {
        goto failed;
    }

    t->version = cfcost_price_version(root, data, len, err, errlen);
    if (t->version == NULL) {
        goto failed;
    }

    json_decref(root);
    return 0;

failed:

    json_decref(root);
    cfcost_price_free(t);
    return -1;
}


void
cfcost_price_free(cfcost_price_table_t *t)
{
    size_t           i;
    cfcost_model_t  *m;

    for (i = 0; t->models != NULL && i < t->n; i++) {
        m = &t->models[i];
        free(m->id);
        free(m->name);
        free(m->provider);
        free(m->description);
        free(m->source);
    }

    free(t->models);
    free(t->version);

    memset(t, 0, sizeof(*t));
}


const cfcost_model_t *
cfcost_price_find(const cfcost_price_table_t *t, const char *id, size_t len)
{
    int                     rc;
    size_t                  lo, hi, mid;
    const cfcost_model_t   *m;
    cfcost_model_t * const *by_id;

    if (t->models == NULL || id == NULL) {
        return NULL;
    }

    by_id = (cfcost_model_t * const *) (t->models + t->n);
    lo = 0;
    hi = t->n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        m = by_id[mid];

        rc = cfcost_price_idcmp(m->id, m->id_len, id, len);

        if (rc == 0) {
            return m;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


uint64_t
cfcost_cost_pusd(const cfcost_model_t *m, uint64_t input, uint64_t cached,
    uint64_t output)
{
    uint64_t  cached_rate;

    if (input > CFCOST_TOKENS_MAX) {
        input = CFCOST_TOKENS_MAX;
    }

    if (output > CFCOST_TOKENS_MAX) {
        output = CFCOST_TOKENS_MAX;
    }

    if (cached > input) {
        cached = input;
    }

    cached_rate = (uint64_t) (m->cached >= 0 ? m->cached : m->input);

    /* each term <= 2^32 x 10^9 < 2^62: the sum fits in 64 bits */
    return (input - cached) * (uint64_t) m->input
           + cached * cached_rate
           + output * (uint64_t) m->output;
}


char *
cfcost_dec(char *dst, uint64_t v)
{
    char  tmp[20], *p, *end;

    /* most are lengths and counts of a digit or two: a record has 40 */
    if (v < 10) {
        *dst = (char) ('0' + v);
        return dst + 1;
    }

    end = tmp + sizeof(tmp);
    p = end;

    do {
        *--p = (char) ('0' + v % 10);
        v /= 10;
    } while (v);

    while (p < end) {
        *dst++ = *p++;
    }

    return dst;
}


char *
cfcost_dec_fixed(char *dst, uint64_t v, size_t n)
{
    size_t  i;

    for (i = n; i > 0; i--) {
        dst[i - 1] = (char) ('0' + v % 10);
        v /= 10;
    }

    return dst + n;
}


size_t
cfcost_usd6(char *buf, uint64_t pusd)
{
    char      *p;
    uint64_t   micro;

    /* half-up without pusd + 500000, which could wrap near UINT64_MAX */
    micro = pusd / 1000000 + (pusd % 1000000 >= 500000);

    p = cfcost_dec(buf, micro / 1000000);
    *p++ = '.';
    p = cfcost_dec_fixed(p, micro % 1000000, 6);
    *p = '\0';

    return (size_t) (p - buf);
}


size_t
cfcost_price_str(char *buf, int64_t micro)
{
    int       n;
    uint64_t  u;
    char     *p;

    p = buf;

    if (micro < 0) {
        *p++ = '-';
        u = (uint64_t) 0 - (uint64_t) micro;

    } else {
        u = (uint64_t) micro;
    }

    if (u % 1000000 == 0) {
        n = snprintf(p, 31, "%llu", (unsigned long long) (u / 1000000));
        return (size_t) (p - buf) + (size_t) n;
    }

    n = snprintf(p, 31, "%llu.%06llu", (unsigned long long) (u / 1000000),
                 (unsigned long long) (u % 1000000));

    while (p[n - 1] == '0') {
        p[--n] = '\0';
    }

    return (size_t) (p - buf) + (size_t) n;
}
