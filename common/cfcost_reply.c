/*
 * hiredis reply objects from an arena: see cfcost_agg_reply.h.
 *
 * The objects are made as hiredis 0.14's own functions make them
 * (read.h, hiredis.c): each is linked into its parent array at the task's
 * index, strings end in a NUL.  The top object of a reply has a header
 * before it naming its arena: hiredis frees a reply through its top
 * object only (after the callback, or a partial one when the reader
 * goes), and that empties the arena.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfcost_reply.h"


#define CFCOST_ARENA_BLOCK   (64 * 1024)
#define CFCOST_ARENA_ALIGN   16
#define CFCOST_ARENA_MAGIC   0x63667265706c7931ULL      /* "cfreply1" */


typedef struct cfcost_arena_block_s  cfcost_arena_block_t;

struct cfcost_arena_block_s {
    cfcost_arena_block_t  *next;
    size_t                 size;
    size_t                 used;
    size_t                 pad;          /* data starts 16-aligned */
    unsigned char          data[];
};

struct cfcost_reply_arena_s {
    cfcost_arena_block_t  *first;        /* kept from reply to reply */
    cfcost_arena_block_t  *last;
};

/* what comes before a reply's top object */
typedef struct {
    cfcost_reply_arena_t  *arena;
    uint64_t               magic;
} cfcost_reply_head_t;


static void *cfcost_reply_string(const redisReadTask *task, char *str,
    size_t len);
static void *cfcost_reply_array(const redisReadTask *task, int elements);
static void *cfcost_reply_integer(const redisReadTask *task, long long v);
static void *cfcost_reply_nil(const redisReadTask *task);
static void cfcost_reply_free(void *obj);


static redisReplyObjectFunctions  cfcost_reply_fns = {
    cfcost_reply_string,
    cfcost_reply_array,
    cfcost_reply_integer,
    cfcost_reply_nil,
    cfcost_reply_free
};


cfcost_reply_arena_t *
cfcost_reply_arena_create(void)
{
    return calloc(1, sizeof(cfcost_reply_arena_t));
}


void
cfcost_reply_arena_attach(cfcost_reply_arena_t *a, redisReader *r)
{
    r->fn = &cfcost_reply_fns;
    r->privdata = a;
}


int
cfcost_reply_arena_renew(cfcost_reply_arena_t **cur,
    cfcost_reply_arena_t **old, redisReader *r)
{
    cfcost_reply_arena_destroy(*old);
    *old = *cur;
    *cur = cfcost_reply_arena_create();

    if (*cur == NULL) {
        return -1;
    }

    cfcost_reply_arena_attach(*cur, r);

    return 0;
}


/* empties a: the first block stays for the next reply, if a usual one */
static void
cfcost_reply_arena_reset(cfcost_reply_arena_t *a)
{
    cfcost_arena_block_t  *b, *next;

    b = a->first;

    if (b != NULL && b->size == CFCOST_ARENA_BLOCK) {
        b->used = 0;
        b = b->next;
        a->first->next = NULL;
        a->last = a->first;

    } else {
        a->first = NULL;
        a->last = NULL;
    }

    for ( /* void */ ; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
}


void
cfcost_reply_arena_destroy(cfcost_reply_arena_t *a)
{
    if (a == NULL) {
        return;
    }

    cfcost_reply_arena_reset(a);
    free(a->first);
    free(a);
}


static void *
cfcost_reply_alloc(cfcost_reply_arena_t *a, size_t n)
{
    size_t                 size;
    cfcost_arena_block_t  *b;

    if (n > SIZE_MAX - CFCOST_ARENA_BLOCK) {
        return NULL;
    }

    n = (n + CFCOST_ARENA_ALIGN - 1) & ~(size_t) (CFCOST_ARENA_ALIGN - 1);
    b = a->last;

    if (b == NULL || b->size - b->used < n) {
        /* a large string gets a block of its own */
        size = (n > CFCOST_ARENA_BLOCK / 4) ? n : CFCOST_ARENA_BLOCK;

        b = malloc(sizeof(cfcost_arena_block_t) + size);
        if (b == NULL) {
            return NULL;
        }

        b->next = NULL;
        b->size = size;
        b->used = 0;

        if (a->last != NULL) {
            a->last->next = b;
        } else {
            a->first = b;
        }

        a->last = b;
    }

    b->used += n;

    return b->data + b->used - n;
}


/* a new object of the task's type, linked into its parent */
static redisReply *
cfcost_reply_object(const redisReadTask *task, int type)
{
    redisReply            *r, *parent;
    cfcost_reply_head_t   *h;
    cfcost_reply_arena_t  *a;

    a = task->privdata;

    if (task->parent == NULL) {
        h = cfcost_reply_alloc(a, sizeof(cfcost_reply_head_t)
                                  + sizeof(redisReply));
        if (h == NULL) {
            return NULL;
        }

        h->arena = a;
        h->magic = CFCOST_ARENA_MAGIC;
        r = (redisReply *) (h + 1);

    } else {
        r = cfcost_reply_alloc(a, sizeof(redisReply));
        if (r == NULL) {
            return NULL;
        }
    }

    memset(r, 0, sizeof(redisReply));
    r->type = type;

    if (task->parent != NULL) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    return r;
}


static void *
cfcost_reply_string(const redisReadTask *task, char *str, size_t len)
{
    char        *buf;
    redisReply  *r;

    buf = cfcost_reply_alloc(task->privdata, len + 1);
    if (buf == NULL) {
        return NULL;
    }

    r = cfcost_reply_object(task, task->type);
    if (r == NULL) {
        return NULL;
    }

    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;

    return r;
}


static void *
cfcost_reply_array(const redisReadTask *task, int elements)
{
    redisReply   *r;
    redisReply  **el;

    el = NULL;

    if (elements > 0) {
        el = cfcost_reply_alloc(task->privdata,
                                (size_t) elements * sizeof(redisReply *));
        if (el == NULL) {
            return NULL;
        }

        memset(el, 0, (size_t) elements * sizeof(redisReply *));
    }

    r = cfcost_reply_object(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        return NULL;
    }

    r->element = el;
    r->elements = (size_t) elements;

    return r;
}


static void *
cfcost_reply_integer(const redisReadTask *task, long long v)
{
    redisReply  *r;

    r = cfcost_reply_object(task, REDIS_REPLY_INTEGER);
    if (r != NULL) {
        r->integer = v;
    }

    return r;
}


static void *
cfcost_reply_nil(const redisReadTask *task)
{
    return cfcost_reply_object(task, REDIS_REPLY_NIL);
}


static void
cfcost_reply_free(void *obj)
{
    cfcost_reply_head_t  *h;

    if (obj == NULL) {
        return;
    }

    /* only a top object is ever freed, and it has the header */
    h = (cfcost_reply_head_t *) obj - 1;

    if (h->magic == CFCOST_ARENA_MAGIC) {
        h->magic = 0;
        cfcost_reply_arena_reset(h->arena);
    }
}
