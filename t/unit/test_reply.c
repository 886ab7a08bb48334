/*
 * common/cfcost_reply.c: hiredis replies built in an arena must be the
 * replies hiredis's own functions build, however the bytes arrive, and
 * the arena must survive partial replies and the reader's end.
 *
 * Each case is read twice: by a reader with hiredis's functions and by
 * one with the arena's, fed in one piece or in random slices; the two
 * trees must be equal, node for node.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cfcost_reply.h"
#include "tap.h"


static uint64_t  rng = 0x2545f4914f6cdd1dULL;


static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}


/* a growing text */
typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} text_t;


static void
put(text_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        if (t->p == NULL) {
            abort();
        }
    }

    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}


static void
putf(text_t *t, const char *s)
{
    put(t, s, strlen(s));
}


/*
 * A random RESP value, depth levels of arrays at most; once the text is
 * past 1 MB only scalars follow (a text stays a few MB).
 */
static void
gen(text_t *t, int depth)
{
    char    head[64];
    size_t  i, n;

    if (t->len > 1024 * 1024) {
        depth = 0;
    }

    switch (rnd() % (depth > 0 ? 8 : 6)) {

    case 0:
        putf(t, (rnd() & 1) ? "+OK\r\n" : "+QUEUED\r\n");
        break;

    case 1:
        putf(t, "-ERR something \"quoted\"\r\n");
        break;

    case 2:
        snprintf(head, sizeof(head), ":%lld\r\n",
                 (long long) (rnd() % 2000000) - 1000000);
        putf(t, head);
        break;

    case 3:
        putf(t, "$-1\r\n");
        break;

    case 4:
    case 5:
        /* bulk strings, now and then large, with any bytes */
        n = (rnd() % 16 == 0 && t->len < 1024 * 1024) ? rnd() % 70000
                                                       : rnd() % 40;
        snprintf(head, sizeof(head), "$%zu\r\n", n);
        putf(t, head);
        for (i = 0; i < n; i++) {
            head[0] = (char) (rnd() & 0xff);
            put(t, head, 1);
        }
        putf(t, "\r\n");
        break;

    case 6:
        putf(t, (rnd() & 1) ? "*-1\r\n" : "*0\r\n");
        break;

    default:
        n = (rnd() % 8 == 0 && t->len < 1024 * 1024) ? rnd() % 3000
                                                      : rnd() % 6;
        snprintf(head, sizeof(head), "*%zu\r\n", n);
        putf(t, head);
        for (i = 0; i < n; i++) {
            gen(t, depth - 1);
        }
        break;
    }
}


/* the two trees, node for node; the first difference is reported */
static int
same(const redisReply *a, const redisReply *b, const char **why)
{
    size_t  i;

    if (a == NULL || b == NULL) {
        *why = "a node is missing";
        return a == b;
    }

    if (a->type != b->type) {
        *why = "types differ";
        return 0;
    }

    switch (a->type) {

    case REDIS_REPLY_INTEGER:
        if (a->integer != b->integer) {
            *why = "integers differ";
            return 0;
        }
        return 1;

    case REDIS_REPLY_NIL:
        return 1;

    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements) {
            *why = "array sizes differ";
            return 0;
        }
        for (i = 0; i < a->elements; i++) {
            if (!same(a->element[i], b->element[i], why)) {
                return 0;
            }
        }
        return 1;

    default:
        if (a->len != b->len || memcmp(a->str, b->str, a->len) != 0
            || b->str[b->len] != '\0')
        {
            *why = "strings differ (or no NUL after one)";
            return 0;
        }
        return 1;
    }
}


/* reads every reply of t with r, fed in slices of up to slice bytes */
static int
read_all(redisReader *r, const text_t *t, size_t slice, void **replies,
    size_t max)
{
    size_t  fed, n, got;
    void   *reply;

    fed = 0;
    got = 0;

    while (fed < t->len || got < max) {
        if (fed < t->len) {
            n = slice ? 1 + rnd() % slice : t->len - fed;
            n = (n > t->len - fed) ? t->len - fed : n;
            if (redisReaderFeed(r, t->p + fed, n) != REDIS_OK) {
                return -1;
            }
            fed += n;
        }

        for ( ;; ) {
            if (redisReaderGetReply(r, &reply) != REDIS_OK) {
                return -1;
            }
            if (reply == NULL) {
                break;
            }
            if (got == max) {
                return -1;
            }
            replies[got++] = reply;
        }

        if (fed == t->len && got < max) {
            return -1;
        }
    }

    return (int) got;
}


/*
 * One text of k replies: hiredis's tree and the arena's must be equal.
 * The arena's replies are read and freed one at a time, as hiredis's
 * async layer does (a reply is freed before the next one is read).
 */
static int
check(const text_t *t, size_t k, size_t slice, const char *name)
{
    int                    good, got;
    size_t                 i, fed, n;
    void                  *ref[64], *reply;
    const char            *why;
    redisReader           *plain, *ar;
    cfcost_reply_arena_t  *arena;

    plain = redisReaderCreate();
    ar = redisReaderCreate();
    arena = cfcost_reply_arena_create();

    if (plain == NULL || ar == NULL || arena == NULL) {
        abort();
    }

    plain->maxbuf = 0;
    ar->maxbuf = 0;
    cfcost_reply_arena_attach(arena, ar);

    got = read_all(plain, t, 0, ref, k);
    good = (got == (int) k);

    if (!good) {
        diag("%s: hiredis read %d of %zu replies", name, got, k);
    }
    why = "hiredis's own reader failed";

    if (!good && plain->err) {
        diag("%s: hiredis: %s", name, plain->errstr);
    }

    /* the arena's, one reply at a time */
    fed = 0;
    i = 0;

    while (good && i < k) {
        if (redisReaderGetReply(ar, &reply) != REDIS_OK) {
            good = 0;
            why = "the arena's reader failed";
            break;
        }

        if (reply == NULL) {
            if (fed == t->len) {
                good = 0;
                why = "the arena's reader gave fewer replies";
                break;
            }
            n = slice ? 1 + rnd() % slice : t->len - fed;
            n = (n > t->len - fed) ? t->len - fed : n;
            (void) redisReaderFeed(ar, t->p + fed, n);
            fed += n;
            continue;
        }

        good = same(ref[i], reply, &why);
        ar->fn->freeObject(reply);
        i++;
    }

    for (i = 0; i < k; i++) {
        if (ref[i] != NULL && good) {
            freeReplyObject(ref[i]);
        }
    }

    redisReaderFree(plain);
    redisReaderFree(ar);
    cfcost_reply_arena_destroy(arena);

    if (!good) {
        diag("%s: %s", name, why);
    }

    return good;
}


int
main(void)
{
    int                    bad;
    size_t                 i, k, big;
    void                  *reply;
    text_t                 t;
    redisReader           *r;
    cfcost_reply_arena_t  *arena;

    static const struct {
        const char  *name;
        const char  *resp;
        size_t       replies;
    } cases[] = {
        { "status", "+OK\r\n", 1 },
        { "error", "-WRONGTYPE Operation against a key\r\n", 1 },
        { "integer", ":-42\r\n", 1 },
        { "bulk", "$5\r\nhello\r\n", 1 },
        { "empty bulk", "$0\r\n\r\n", 1 },
        { "nil bulk", "$-1\r\n", 1 },
        { "nil array", "*-1\r\n", 1 },
        { "empty array", "*0\r\n", 1 },
        { "nested", "*3\r\n*2\r\n$2\r\nid\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
                    ":7\r\n$-1\r\n", 1 },
        { "NUL in a bulk", "$3\r\na\0b\r\n", 1 },   /* 9 bytes */
        { "several in a row", "+QUEUED\r\n+QUEUED\r\n*2\r\n$3\r\n1-0\r\n"
                              "$3\r\n2-0\r\n", 3 },
    };

    memset(&t, 0, sizeof(t));

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t.len = 0;
        put(&t, cases[i].resp, strcmp(cases[i].name, "NUL in a bulk") == 0
                               ? 9 : strlen(cases[i].resp));
        ok(check(&t, cases[i].replies, 0, cases[i].name),
           "%s: as hiredis builds it", cases[i].name);
        ok(check(&t, cases[i].replies, 1, cases[i].name),
           "%s: fed a byte at a time", cases[i].name);
    }

    /* a batch read's shape, large: many blocks, and a string of its own */
    t.len = 0;
    putf(&t, "*1\r\n*2\r\n$22\r\ncfcost:rec:{w00000001}\r\n*4000\r\n");
    for (i = 0; i < 4000; i++) {
        putf(&t, "*2\r\n$15\r\n1767225600123-0\r\n*4\r\n$4\r\nuser\r\n"
                 "$5\r\nalice\r\n$5\r\nmodel\r\n"
                 "$21\r\n@cf/meta/llama-3.1-8b\r\n");
    }
    ok(check(&t, 1, 0, "batch"), "a batch of 4000 entries");
    ok(check(&t, 1, 4096, "batch"), "the same in slices");

    big = 200000;
    t.len = 0;
    putf(&t, "*2\r\n$200000\r\n");
    for (i = 0; i < big; i++) {
        put(&t, "x", 1);
    }
    putf(&t, "\r\n:1\r\n");
    ok(check(&t, 1, 0, "big"), "a 200 KB string in an array");

    /* random replies, whole and sliced */
    bad = 0;
    for (i = 0; i < 600; i++) {
        t.len = 0;
        k = 1 + rnd() % 4;
        for (size_t j = 0; j < k; j++) {
            gen(&t, 4);
        }
        if (!check(&t, k, (i & 1) ? 1 + rnd() % 64 : 0, "random")) {
            bad++;
        }
    }
    is_u64(bad, 0, "600 random texts of 1-4 replies: all as hiredis builds "
           "them");

    /* a reader that goes with half a reply in its arena */
    r = redisReaderCreate();
    arena = cfcost_reply_arena_create();
    cfcost_reply_arena_attach(arena, r);
    (void) redisReaderFeed(r, "*3\r\n$3\r\nabc\r\n:1\r\n", 17);
    ok(redisReaderGetReply(r, &reply) == REDIS_OK && reply == NULL,
       "half a reply: none yet");
    redisReaderFree(r);                     /* frees the half through us */
    cfcost_reply_arena_destroy(arena);
    ok(1, "half a reply: the reader and the arena go cleanly");

    /* a protocol error midway: hiredis drops the partial reply */
    r = redisReaderCreate();
    arena = cfcost_reply_arena_create();
    cfcost_reply_arena_attach(arena, r);
    (void) redisReaderFeed(r, "*2\r\n$1\r\na\r\n?bad\r\n", 17);
    ok(redisReaderGetReply(r, &reply) == REDIS_ERR,
       "a protocol error is one");
    redisReaderFree(r);
    cfcost_reply_arena_destroy(arena);

    cfcost_reply_arena_destroy(NULL);
    ok(1, "destroying NULL is nothing");

    free(t.p);

    return done_testing();
}
