/*
 * A batch summed in C for the summed apply script (cfcost_lua_sum in
 * cfcost_agg_lua.h): the records are grouped by (user, key, model, day),
 * each group adds to the fields of its rollups, and each (rollup, field)
 * gets one increment, whatever the number of records.  What the script
 * then does per entry is only its id (checked and acknowledged); the
 * log-index members come grouped by bucket, one append per bucket.
 *
 * The sums are those cfcost_lua_apply makes of the same entries: the
 * same keys, fields and values, so either script can apply a batch.
 */

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cfcost_schema.h"
#include "cfcost_price.h"
#include "cfcost_agg.h"
#include "cfcost_agg_util.h"
#include "cfcost_agg_lua.h"
#include "cfcost_agg_consumer_int.h"


/* a string in the batch's buffer (p NULL, at off) or elsewhere (p) */
typedef struct {
    const char                  *p;
    size_t                       off;
    size_t                       len;
} cfcost_sum_str_t;


/* the records of one (user, key, model, day) */
typedef struct {
    const cfcost_entry_t        *e;         /* the first: its strings */
    uint64_t                     s[6];      /* the script's field order */
    uint32_t                     hash;
} cfcost_sum_group_t;


/* one increment of a rollup field; of the days: field the day, v its
 * number */
typedef struct {
    cfcost_sum_str_t             key;
    cfcost_sum_str_t             field;
    uint64_t                     v;
} cfcost_sum_inc_t;


typedef struct {
    char                        *buf;
    size_t                       len;
    size_t                       cap;

    cfcost_sum_str_t            *words;
    size_t                       nwords;
    size_t                       wcap;

    cfcost_sum_inc_t            *incs;
    size_t                       ninc;
    size_t                       icap;

    int                          oom;
} cfcost_sum_t;


/* the rollup fields, in the order of cfcost_sum_group_t.s */
static const cfcost_span_t  cfcost_sum_fields[6] = {
#define F(s)  { s, sizeof(s) - 1 }
    F(CFCOST_ROLLUP_F_REQUESTS), F(CFCOST_ROLLUP_F_INPUT),
    F(CFCOST_ROLLUP_F_OUTPUT), F(CFCOST_ROLLUP_F_CACHED),
    F(CFCOST_ROLLUP_F_COST_USD), F(CFCOST_ROLLUP_F_COST)
#undef F
};


/* ---- the buffer and the word list --------------------------------------- */


/* Room for n more bytes; buf may move: strings in it are offsets. */
static char *
cfcost_sum_room(cfcost_sum_t *b, size_t n)
{
    char    *p;
    size_t   cap;

    if (b->len + n > b->cap) {
        cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }

        p = realloc(b->buf, cap);
        if (p == NULL) {
            b->oom = 1;
            return NULL;
        }

        b->buf = p;
        b->cap = cap;
    }

    return b->buf + b->len;
}


/* Appends s[0..n): a string is what is appended from its start (b->len
 * then) to cfcost_sum_end(). */
static void
cfcost_sum_cat(cfcost_sum_t *b, const char *s, size_t n)
{
    char  *p = cfcost_sum_room(b, n);

    if (p != NULL) {
        memcpy(p, s, n);
        b->len += n;
    }
}


static cfcost_sum_str_t
cfcost_sum_end(const cfcost_sum_t *b, size_t start)
{
    cfcost_sum_str_t  s = { NULL, start, b->len - start };

    return s;
}


static cfcost_sum_str_t
cfcost_sum_num(cfcost_sum_t *b, int64_t v)
{
    char    *p;
    size_t   start = b->len;

    p = cfcost_sum_room(b, 24);
    if (p != NULL) {
        if (v < 0) {
            *p++ = '-';
            v = -v;
        }
        b->len = (size_t) (cfcost_dec(p, (uint64_t) v) - b->buf);
    }

    return cfcost_sum_end(b, start);
}


static cfcost_sum_str_t
cfcost_sum_lit(const char *p, size_t len)
{
    cfcost_sum_str_t  s = { p, 0, len };

    return s;
}


static size_t
cfcost_sum_word(cfcost_sum_t *b, cfcost_sum_str_t s)
{
    cfcost_sum_str_t  *w;

    if (b->nwords == b->wcap) {
        b->wcap = b->wcap ? 2 * b->wcap : 256;
        w = realloc(b->words, b->wcap * sizeof(cfcost_sum_str_t));
        if (w == NULL) {
            b->oom = 1;
            b->wcap = b->nwords;
            return 0;
        }
        b->words = w;
    }

    b->words[b->nwords] = s;

    return b->nwords++;
}


static void
cfcost_sum_inc(cfcost_sum_t *b, cfcost_sum_str_t key, cfcost_sum_str_t field,
    uint64_t v)
{
    cfcost_sum_inc_t  *in;

    if (b->ninc == b->icap) {
        b->icap = b->icap ? 2 * b->icap : 256;
        in = realloc(b->incs, b->icap * sizeof(cfcost_sum_inc_t));
        if (in == NULL) {
            b->oom = 1;
            b->icap = b->ninc;
            return;
        }
        b->incs = in;
    }

    in = &b->incs[b->ninc++];
    in->key = key;
    in->field = field;
    in->v = v;
}


static const char *
cfcost_sum_ptr(const cfcost_sum_t *b, const cfcost_sum_str_t *s)
{
    return s->p ? s->p : b->buf + s->off;
}


/* ---- grouping ----------------------------------------------------------- */


static uint32_t
cfcost_sum_hash(uint32_t h, const char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char) p[i]) * 16777619u;
    }

    return (h ^ 0xff) * 16777619u;          /* a separator */
}


static int
cfcost_sum_span_eq(const cfcost_span_t *a, const cfcost_span_t *b)
{
    return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}


static int
cfcost_sum_same(const cfcost_entry_t *a, const cfcost_entry_t *b)
{
    return a->day == b->day
           && cfcost_sum_span_eq(&a->rec.f[CFCOST_REC_USER],
                                 &b->rec.f[CFCOST_REC_USER])
           && cfcost_sum_span_eq(&a->rec.f[CFCOST_REC_KEY_ID],
                                 &b->rec.f[CFCOST_REC_KEY_ID])
           && cfcost_sum_span_eq(&a->rec.f[CFCOST_REC_MODEL],
                                 &b->rec.f[CFCOST_REC_MODEL]);
}


/*
 * Groups the counted entries into groups[] (a table of size, a power of
 * two above their number; slots with e NULL are empty).
 */
static void
cfcost_sum_group(const cfcost_entry_t *ents, size_t n,
    cfcost_sum_group_t *groups, size_t size)
{
    int                        k;
    size_t                     i, j;
    uint32_t                   h;
    const cfcost_span_t       *f;
    const cfcost_entry_t      *e;
    cfcost_sum_group_t        *g;

    for (i = 0; i < n; i++) {
        e = &ents[i];
        if (!e->counted) {
            continue;
        }

        f = e->rec.f;
        h = cfcost_sum_hash(2166136261u, f[CFCOST_REC_USER].p,
                            f[CFCOST_REC_USER].len);
        h = cfcost_sum_hash(h, f[CFCOST_REC_KEY_ID].p,
                            f[CFCOST_REC_KEY_ID].len);
        h = cfcost_sum_hash(h, f[CFCOST_REC_MODEL].p, f[CFCOST_REC_MODEL].len);
        h = cfcost_sum_hash(h, e->dstr, e->dlen);

        for (j = h & (size_t) (size - 1); ; j = (j + 1) & (size - 1)) {
            g = &groups[j];
            if (g->e == NULL) {
                g->e = e;
                g->hash = h;
                break;
            }
            if (g->hash == h && cfcost_sum_same(g->e, e)) {
                break;
            }
        }

        g->s[0]++;
        for (k = 0; k < 5; k++) {
            g->s[k + 1] += e->v[k];
        }
    }
}


/*
 * The increments of one group: in each of its scopes (everyone, its user,
 * its key), the all-time and the day's rollup; in each, the model's
 * fields and the totals.  The scope's day in the days index goes to the
 * increments with the day as field (days is 1 for those).
 */
static void
cfcost_sum_group_incs(cfcost_sum_t *b, const cfcost_sum_group_t *g,
    int days)
{
    int                   s, k, t;
    size_t                start, mf[6];
    cfcost_sum_str_t      key, field, day;
    const cfcost_span_t  *f = g->e->rec.f;

    static const cfcost_span_t  pre[3] = {
        { CFCOST_SCOPE_ALL, sizeof(CFCOST_SCOPE_ALL) - 1 },
        { CFCOST_SCOPE_USER, sizeof(CFCOST_SCOPE_USER) - 1 },
        { CFCOST_SCOPE_KEY, sizeof(CFCOST_SCOPE_KEY) - 1 }
    };
    const cfcost_span_t        *val[3] = {
        NULL, &f[CFCOST_REC_USER], &f[CFCOST_REC_KEY_ID]
    };

    if (!days) {
        /* m:<model>:<field>, once per group */
        for (k = 0; k < 6; k++) {
            mf[k] = b->len;
            cfcost_sum_cat(b, CFCOST_ROLLUP_F_MODEL,
                           sizeof(CFCOST_ROLLUP_F_MODEL) - 1);
            cfcost_sum_cat(b, f[CFCOST_REC_MODEL].p, f[CFCOST_REC_MODEL].len);
            cfcost_sum_cat(b, ":", 1);
            cfcost_sum_cat(b, cfcost_sum_fields[k].p, cfcost_sum_fields[k].len);
        }
    }

    day = cfcost_sum_lit(g->e->dstr, g->e->dlen);

    for (s = 0; s < 3; s++) {
        if (val[s] != NULL && val[s]->len == 0) {
            continue;
        }

        if (days) {
            start = b->len;
            cfcost_sum_cat(b, CFCOST_ROLLUP_DAYS_PREFIX,
                           sizeof(CFCOST_ROLLUP_DAYS_PREFIX) - 1);
            cfcost_sum_cat(b, pre[s].p, pre[s].len);
            if (val[s] != NULL) {
                cfcost_sum_cat(b, val[s]->p, val[s]->len);
            }
            cfcost_sum_inc(b, cfcost_sum_end(b, start), day,
                           (uint64_t) g->e->day);
            continue;
        }

        for (t = 0; t < 2; t++) {
            start = b->len;
            if (t == 0) {
                cfcost_sum_cat(b, CFCOST_ROLLUP_PREFIX,
                               sizeof(CFCOST_ROLLUP_PREFIX) - 1);
            } else {
                cfcost_sum_cat(b, CFCOST_ROLLUP_DAY_PREFIX,
                               sizeof(CFCOST_ROLLUP_DAY_PREFIX) - 1);
                cfcost_sum_cat(b, g->e->dstr, g->e->dlen);
                cfcost_sum_cat(b, ":", 1);
            }
            cfcost_sum_cat(b, pre[s].p, pre[s].len);
            if (val[s] != NULL) {
                cfcost_sum_cat(b, val[s]->p, val[s]->len);
            }
            key = cfcost_sum_end(b, start);

            for (k = 0; k < 6; k++) {
                if (g->s[k] == 0) {
                    continue;
                }

                field.p = NULL;
                field.off = mf[k];
                field.len = sizeof(CFCOST_ROLLUP_F_MODEL) - 1
                            + f[CFCOST_REC_MODEL].len + 1
                            + cfcost_sum_fields[k].len;
                cfcost_sum_inc(b, key, field, g->s[k]);
                cfcost_sum_inc(b, key, cfcost_sum_lit(cfcost_sum_fields[k].p,
                                                    cfcost_sum_fields[k].len),
                               g->s[k]);
            }
        }
    }
}


static int
cfcost_sum_bytes_cmp(const char *a, size_t alen, const char *c, size_t clen)
{
    int  rc;

    rc = memcmp(a, c, alen < clen ? alen : clen);

    return rc ? rc : (alen > clen) - (alen < clen);
}


static int
cfcost_sum_strcmp(const cfcost_sum_t *b, const cfcost_sum_str_t *x,
    const cfcost_sum_str_t *y)
{
    return cfcost_sum_bytes_cmp(cfcost_sum_ptr(b, x), x->len,
                                cfcost_sum_ptr(b, y), y->len);
}


/* the batch being sorted, for qsort()'s comparison (one thread) */
static const cfcost_sum_t  *cfcost_sum_sorting;


static int
cfcost_sum_inc_cmp(const void *x, const void *y)
{
    int                      rc;
    const cfcost_sum_inc_t  *a = x, *c = y;

    rc = cfcost_sum_strcmp(cfcost_sum_sorting, &a->key, &c->key);

    return rc ? rc : cfcost_sum_strcmp(cfcost_sum_sorting, &a->field,
                                       &c->field);
}


/* Sorts the increments and adds up those of one (key, field) (add 0:
 * keeps one of them, as for the days, whose v is the day's number). */
static void
cfcost_sum_merge(cfcost_sum_t *b, int add)
{
    size_t  i, j;

    if (b->ninc == 0) {
        return;                 /* no counted entry: incs may be NULL */
    }

    cfcost_sum_sorting = b;
    qsort(b->incs, b->ninc, sizeof(cfcost_sum_inc_t), cfcost_sum_inc_cmp);

    for (i = 0, j = 0; i < b->ninc; i++) {
        if (j > 0 && cfcost_sum_inc_cmp(&b->incs[j - 1], &b->incs[i]) == 0) {
            b->incs[j - 1].v += add ? b->incs[i].v : 0;
            continue;
        }
        b->incs[j++] = b->incs[i];
    }

    b->ninc = j;
}


/* ---- the index ---------------------------------------------------------- */


/* an entry's bucket: its member's first CFCOST_LOGB_DIGITS ("": none) */
static size_t
cfcost_sum_bucket(const cfcost_entry_t *e, const char **p)
{
    *p = e->member;

    return e->mlen > CFCOST_LOGB_DIGITS ? CFCOST_LOGB_DIGITS : 0;
}


/* entries by bucket, then in batch order */
static int
cfcost_sum_bucket_cmp(const void *x, const void *y)
{
    int                    rc;
    size_t                 alen, clen;
    const char            *a, *c;
    const cfcost_entry_t  *ea = *(const cfcost_entry_t * const *) x;
    const cfcost_entry_t  *ec = *(const cfcost_entry_t * const *) y;

    alen = cfcost_sum_bucket(ea, &a);
    clen = cfcost_sum_bucket(ec, &c);
    rc = cfcost_sum_bytes_cmp(a, alen, c, clen);

    return rc ? rc : (ea > ec) - (ea < ec);
}


static int
cfcost_sum_user_cmp(const void *x, const void *y)
{
    const cfcost_span_t   *a = &(*(const cfcost_entry_t * const *) x)
                                ->rec.f[CFCOST_REC_USER];
    const cfcost_span_t   *c = &(*(const cfcost_entry_t * const *) y)
                                ->rec.f[CFCOST_REC_USER];

    return cfcost_sum_bytes_cmp(a->p, a->len, c->p, c->len);
}


/* entries by user, then bucket, then in batch order */
static int
cfcost_sum_user_bucket_cmp(const void *x, const void *y)
{
    int  rc;

    rc = cfcost_sum_user_cmp(x, y);

    return rc ? rc : cfcost_sum_bucket_cmp(x, y);
}


/*
 * The index words of one scope (scope[0..slen) then sval[0..vlen)) for
 * the entries e[0..n), sorted by bucket: per bucket, its key, the
 * scope's set, the bucket and its members, each followed by "\n".
 */
static void
cfcost_sum_scope(cfcost_sum_t *b, const char *scope, size_t slen,
    const char *sval, size_t vlen, const cfcost_entry_t **e, size_t n)
{
    size_t             i, j, k, blen, clen, start;
    const char        *bp, *cp;
    cfcost_sum_str_t   set;

    set.len = 0;

    for (i = 0; i < n; i = j) {
        blen = cfcost_sum_bucket(e[i], &bp);

        for (j = i + 1; j < n; j++) {
            clen = cfcost_sum_bucket(e[j], &cp);
            if (cfcost_sum_bytes_cmp(bp, blen, cp, clen) != 0) {
                break;              /* the end of the bucket's run */
            }
        }

        if (blen == 0) {
            continue;               /* no member */
        }

        start = b->len;
        cfcost_sum_cat(b, CFCOST_LOGB_PREFIX, sizeof(CFCOST_LOGB_PREFIX) - 1);
        cfcost_sum_cat(b, bp, blen);
        cfcost_sum_cat(b, ":", 1);
        cfcost_sum_cat(b, scope, slen);
        cfcost_sum_cat(b, sval, vlen);
        cfcost_sum_word(b, cfcost_sum_end(b, start));

        if (set.len == 0) {
            start = b->len;
            cfcost_sum_cat(b, CFCOST_LOGB_SET_PREFIX,
                           sizeof(CFCOST_LOGB_SET_PREFIX) - 1);
            cfcost_sum_cat(b, scope, slen);
            cfcost_sum_cat(b, sval, vlen);
            set = cfcost_sum_end(b, start);
        }

        cfcost_sum_word(b, set);
        cfcost_sum_word(b, cfcost_sum_lit(bp, blen));

        start = b->len;
        for (k = i; k < j; k++) {
            cfcost_sum_cat(b, e[k]->member, e[k]->mlen);
            cfcost_sum_cat(b, "\n", 1);
        }
        cfcost_sum_word(b, cfcost_sum_end(b, start));
    }
}


/*
 * The index section: everyone's, then each user's; returns its words.
 * by[0..*m) are then the counted entries with a user, sorted by user.
 */
static size_t
cfcost_sum_index(cfcost_sum_t *b, const cfcost_entry_t *ents, size_t n,
    const cfcost_entry_t **by, size_t *m)
{
    size_t                 i, j, first;
    const cfcost_span_t   *u;

    first = b->nwords;

    for (i = 0, *m = 0; i < n; i++) {
        if (ents[i].counted) {
            by[(*m)++] = &ents[i];
        }
    }

    qsort(by, *m, sizeof(by[0]), cfcost_sum_bucket_cmp);
    cfcost_sum_scope(b, CFCOST_SCOPE_ALL, sizeof(CFCOST_SCOPE_ALL) - 1,
                     "", 0, by, *m);

    for (i = 0, *m = 0; i < n; i++) {
        if (ents[i].counted && ents[i].rec.f[CFCOST_REC_USER].len > 0) {
            by[(*m)++] = &ents[i];
        }
    }

    qsort(by, *m, sizeof(by[0]), cfcost_sum_user_bucket_cmp);

    for (i = 0; i < *m; i = j) {
        for (j = i + 1; j < *m && cfcost_sum_user_cmp(&by[i], &by[j]) == 0;
             j++)
        {
            /* the run of one user */
        }

        u = &by[i]->rec.f[CFCOST_REC_USER];
        cfcost_sum_scope(b, CFCOST_SCOPE_USER, sizeof(CFCOST_SCOPE_USER) - 1,
                         u->p, u->len, &by[i], j - i);
    }

    return b->nwords - first;
}


/* The rollup section from the merged increments; returns its words. */
static size_t
cfcost_sum_rollups(cfcost_sum_t *b)
{
    size_t  i, j, k, first;

    first = b->nwords;

    for (i = 0; i < b->ninc; i = j) {
        for (j = i + 1;
             j < b->ninc
             && cfcost_sum_strcmp(b, &b->incs[i].key, &b->incs[j].key) == 0;
             j++)
        {
            /* the fields of one key */
        }

        cfcost_sum_word(b, b->incs[i].key);
        cfcost_sum_word(b, cfcost_sum_num(b, (int64_t) (j - i)));

        for (k = i; k < j; k++) {
            cfcost_sum_word(b, b->incs[k].field);
            cfcost_sum_word(b, cfcost_sum_num(b, (int64_t) b->incs[k].v));
        }
    }

    return b->nwords - first;
}


/* ---- the command -------------------------------------------------------- */


int
cfcost_consumer_sum(cfcost_consumer_t *c, size_t si,
    const cfcost_entry_t *ents, size_t n, char **cmd, size_t *len)
{
    int                     rc;
    size_t                  i, size, counted, nids, ngroups, nidx, nroll,
                            ndays, nusers, nby, head, *lens;
    const char            **argv;
    cfcost_sum_t            b;
    cfcost_sum_group_t     *groups;
    const cfcost_entry_t  **by;

    memset(&b, 0, sizeof(b));
    rc = -1;
    argv = NULL;
    lens = NULL;

    /* n records; the ids are their entries' (a batch entry's once) */
    counted = 0;
    nids = 0;
    for (i = 0; i < n; i++) {
        counted += ents[i].counted ? 1 : 0;
        nids += ents[i].k ? 0 : 1;
    }

    for (size = 16; size < 2 * n; size *= 2) {
        /* a table at most half full */
    }

    groups = calloc(size, sizeof(cfcost_sum_group_t));
    by = malloc(n * sizeof(cfcost_entry_t *));

    if (groups == NULL || by == NULL) {
        goto done;
    }

    cfcost_sum_group(ents, n, groups, size);

    /* the head: its counts are filled in below */
    cfcost_sum_word(&b, cfcost_sum_lit("EVALSHA", 7));
    cfcost_sum_word(&b, cfcost_sum_lit(c->sum_sha, 40));
    cfcost_sum_word(&b, cfcost_sum_lit("0", 1));
    cfcost_sum_word(&b, cfcost_sum_lit(c->streams[si].key,
                                       strlen(c->streams[si].key)));
    cfcost_sum_word(&b, cfcost_sum_lit(c->agg->conf.group,
                                       strlen(c->agg->conf.group)));
    cfcost_sum_word(&b, cfcost_sum_num(&b, (int64_t) nids));
    cfcost_sum_word(&b, cfcost_sum_num(&b, (int64_t) counted));
    head = b.nwords;
    for (i = 0; i < 4; i++) {
        cfcost_sum_word(&b, cfcost_sum_lit("", 0));
    }

    for (i = 0; i < n; i++) {
        if (ents[i].k == 0) {
            cfcost_sum_word(&b, cfcost_sum_lit(ents[i].id, ents[i].idlen));
        }
    }

    nidx = cfcost_sum_index(&b, ents, n, by, &nby);

    /* the rollups, then the days: each sorted, each (key, field) once */
    for (i = 0; i < size; i++) {
        if (groups[i].e != NULL) {
            cfcost_sum_group_incs(&b, &groups[i], 0);
        }
    }

    if (b.oom) {
        goto done;
    }

    cfcost_sum_merge(&b, 1);
    nroll = cfcost_sum_rollups(&b);

    b.ninc = 0;
    for (i = 0, ngroups = 0; i < size; i++) {
        if (groups[i].e != NULL) {
            cfcost_sum_group_incs(&b, &groups[i], 1);
            ngroups++;
        }
    }

    if (b.oom) {
        goto done;
    }

    cfcost_sum_merge(&b, 0);
    ndays = b.ninc;

    for (i = 0; i < ndays; i++) {
        cfcost_sum_word(&b, b.incs[i].key);
        cfcost_sum_word(&b, cfcost_sum_num(&b, (int64_t) b.incs[i].v));
        cfcost_sum_word(&b, b.incs[i].field);
    }

    /* the users, each once: the runs of the index's sort */
    nusers = 0;
    for (i = 0; i < nby; i++) {
        if (i == 0 || cfcost_sum_user_cmp(&by[i - 1], &by[i]) != 0) {
            cfcost_sum_word(&b, cfcost_sum_lit(
                                    by[i]->rec.f[CFCOST_REC_USER].p,
                                    by[i]->rec.f[CFCOST_REC_USER].len));
            nusers++;
        }
    }

    if (b.oom) {
        goto done;
    }

    b.words[head] = cfcost_sum_num(&b, (int64_t) nidx);
    b.words[head + 1] = cfcost_sum_num(&b, (int64_t) nroll);
    b.words[head + 2] = cfcost_sum_num(&b, (int64_t) ndays);
    b.words[head + 3] = cfcost_sum_num(&b, (int64_t) nusers);

    argv = malloc(b.nwords * sizeof(char *));
    lens = malloc(b.nwords * sizeof(size_t));

    if (b.oom || argv == NULL || lens == NULL) {
        goto done;
    }

    for (i = 0; i < b.nwords; i++) {
        argv[i] = cfcost_sum_ptr(&b, &b.words[i]);
        lens[i] = b.words[i].len;
    }

    *cmd = NULL;
    rc = redisFormatCommandArgv(cmd, (int) b.nwords, argv, lens);
    if (rc < 0 || *cmd == NULL) {
        rc = -1;
        goto done;
    }

    *len = (size_t) rc;
    rc = 0;

    cfcost_log_debug("consumer: %zu entries of %s summed: %zu groups, "
                     "%zu increments", n, c->streams[si].key, ngroups,
                     nroll / 2);

done:

    free(lens);
    free(argv);
    free(by);
    free(groups);
    free(b.incs);
    free(b.words);
    free(b.buf);

    return rc;
}
