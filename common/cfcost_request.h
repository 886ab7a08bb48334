/*
 * Reading a client's request body: the few members the gateway acts on,
 * in one pass over the bytes, without building a tree.  Pure C, no nginx.
 */

#ifndef CFCOST_REQUEST_H
#define CFCOST_REQUEST_H

#include <stddef.h>


/* a value's bytes in the body, [start, end); end == 0 when absent */
typedef struct {
    size_t  start;
    size_t  end;
} cfcost_span_t;


typedef struct {
    cfcost_span_t   model;          /* top-level members, as written */
    cfcost_span_t   messages;
    cfcost_span_t   prompt;
    cfcost_span_t   stream;
    cfcost_span_t   stream_options;
    cfcost_span_t   model_cut;      /* the "model" member and one comma
                                       beside it: what leaves it out */
    cfcost_span_t   include_usage;  /* in stream_options, an object */
    size_t          messages_n;     /* elements, when messages is an array */
    size_t          message_bad;    /* the first that is no object with a
                                       string "role" and a "content";
                                       messages_n when none */
    size_t          prompt_bytes;   /* decoded bytes of a string prompt and
                                       of the string content of every
                                       message not counted bad */
    const char     *twice;          /* a member above given twice */
} cfcost_request_t;


#define CFCOST_REQUEST_OK          0
#define CFCOST_REQUEST_INVALID    -1    /* not JSON (cfcost_json_valid) */
#define CFCOST_REQUEST_NOT_OBJECT -2
#define CFCOST_REQUEST_TWICE      -3    /* req->twice names the member */

/*
 * Reads body[0..len).  Keys are compared as a parser decodes them, so
 * "\u006dodel" is "model".  A member read here ("model", "messages",
 * "prompt", "stream", "stream_options"; a message's "role" and
 * "content"; "include_usage") may be given once only: with two, the
 * gateway and the upstream could read different ones.  Other members,
 * repeated or not, are the upstream's to read.
 */
int cfcost_request_read(const char *body, size_t len, cfcost_request_t *req);

#endif /* CFCOST_REQUEST_H */
