/*
 * hiredis reply objects from an arena, one arena per connection (the
 * aggregator's, and the gateway's in each nginx worker).
 *
 * With hiredis's own functions a reply costs a malloc() and a free() per
 * element, and a batch read (XREADGROUP) has some fifty elements per
 * record: allocation was 40% of the aggregator's CPU (perf, saturated
 * gateway).  Here the objects of a reply are carved from the
 * connection's arena and all go at once when hiredis frees the reply
 * (its top object, after the callback).  They are hiredis's redisReply,
 * so nothing that reads a reply changes; like hiredis's, they live until
 * the callback returns.
 *
 * hiredis reads one reply to its end before it hands it to the callback
 * and frees it, so an arena holds one reply at a time.
 */

#ifndef CFCOST_REPLY_H
#define CFCOST_REPLY_H

#include <hiredis/hiredis.h>


typedef struct cfcost_reply_arena_s  cfcost_reply_arena_t;


/* NULL when out of memory */
cfcost_reply_arena_t *cfcost_reply_arena_create(void);

/* Makes reader r build its replies in a (before r reads anything). */
void cfcost_reply_arena_attach(cfcost_reply_arena_t *a, redisReader *r);

/*
 * For a new connection's reader r: a new arena in *cur, attached.  The
 * one before moves to *old and the one before that goes: a connection is
 * gone before the next one is made (reconnects wait for a timer), and its
 * arena is kept one connection longer all the same.  Returns 0, or -1
 * when out of memory.
 */
int cfcost_reply_arena_renew(cfcost_reply_arena_t **cur,
    cfcost_reply_arena_t **old, redisReader *r);

/* Once no reader that used a can free a reply any more (NULL: nothing). */
void cfcost_reply_arena_destroy(cfcost_reply_arena_t *a);

#endif /* CFCOST_REPLY_H */
