/*
 * A resumable Server-Sent Events parser: pure C, no nginx, no allocation
 * per event.  Feed it the stream's bytes in whatever pieces they arrive --
 * split inside "data:", inside a UTF-8 character, between "\r" and "\n" --
 * and it hands back each complete event's data, exactly as the SSE
 * specification assembles it (lines end with CRLF, LF or CR; "data" lines
 * are joined with "\n"; comments and other fields are skipped).
 */

#ifndef CFCOST_SSE_H
#define CFCOST_SSE_H

#include <stddef.h>
#include <stdint.h>


/*
 * An event is read when it is at most CFCOST_SSE_MAX bytes as sent, from
 * its first byte to its blank line; a larger one is skipped (and counted),
 * and none of its bytes are kept past that size.
 */
#define CFCOST_SSE_MAX  (1024 * 1024)

#define CFCOST_SSE_LF    0
#define CFCOST_SSE_CRLF  1
#define CFCOST_SSE_CR    2


typedef struct {
    char       *line;          /* the line being assembled */
    size_t      line_len;
    size_t      line_cap;
    char       *data;          /* the event's data so far */
    size_t      data_len;
    size_t      data_cap;
    uint64_t    offset;        /* stream bytes consumed */
    uint64_t    event_start;   /* offset of the current event's first byte */
    uint64_t    events;        /* events dispatched */
    uint64_t    skipped;       /* events over CFCOST_SSE_MAX, dropped */
    unsigned    has_data:1;    /* the event had a "data" line */
    unsigned    in_event:1;    /* bytes of an event have been seen */
    unsigned    cr:1;          /* the last byte was CR: skip one LF */
    unsigned    overflow:1;    /* this event grew too large */
    unsigned    long_line:1;   /* inside a line too long to keep */
    unsigned    pending:1;     /* an event ended by CR, waiting: an LF
                                  may still belong to its end */
    unsigned    eol:2;         /* the last line ending seen */
    unsigned    nomem:1;
} cfcost_sse_t;


typedef struct {
    const char  *data;         /* valid until the next feed call */
    size_t       len;
    uint64_t     start;        /* stream offset of the event's first byte */
    uint64_t     end;          /* stream offset just past its blank line
                                  (with the LF of a CRLF: an event ended
                                  by CR is handed back once the next byte,
                                  or the end of the stream, shows which) */
    unsigned     eol;          /* its blank line's ending: CFCOST_SSE_* */
} cfcost_sse_event_t;


/*
 * Where the parser stands between two feeds: what a caller that holds
 * back an unfinished event (to edit at event boundaries) needs to know,
 * without reading the parser's fields.
 */
typedef struct {
    uint64_t     offset;       /* stream bytes consumed */
    uint64_t     event_start;  /* the unfinished event's first byte */
    unsigned     unfinished;   /* an event has begun and can still be
                                  read whole (not over CFCOST_SSE_MAX):
                                  offset - event_start <= CFCOST_SSE_MAX */
    unsigned     open;         /* the bytes consumed end inside a line or
                                  an event, readable or not: what follows
                                  must begin with a blank line to stand
                                  alone */
    unsigned     eol;          /* the last line ending seen: CFCOST_SSE_* */
} cfcost_sse_pos_t;


/* Initializes a parser (all zero is also a valid initial state). */
void cfcost_sse_init(cfcost_sse_t *p);

/* Releases what the parser allocated; it may be initialized again. */
void cfcost_sse_free(cfcost_sse_t *p);

/*
 * Consumes buf[0..len) until its end or until an event completes,
 * whichever comes first, and returns how many bytes it consumed.  When an
 * event completed, *ev is filled and 1 is stored in *got; else 0.  Call it
 * again with the rest of the buffer.  Never fails: an event that outgrows
 * CFCOST_SSE_MAX (or memory) is skipped and counted.
 */
size_t cfcost_sse_feed(cfcost_sse_t *p, const char *buf, size_t len,
    cfcost_sse_event_t *ev, int *got);

/*
 * At the end of the stream: dispatches an event left without its final
 * blank line (the specification would drop it; a usage event cut there
 * is still worth reading).  Returns 1 and fills *ev if there was one.
 */
int cfcost_sse_finish(cfcost_sse_t *p, cfcost_sse_event_t *ev);

/*
 * Gives back the line and data buffers when they are larger than keep
 * bytes and hold nothing (an event or a line that made them grow has
 * been read).  Call it between two feeds: the data of an event already
 * handed back goes with it.  Memory then follows the events being read,
 * not the largest one so far.
 */
void cfcost_sse_trim(cfcost_sse_t *p, size_t keep);

/* Fills *pos with where the parser stands. */
void cfcost_sse_position(const cfcost_sse_t *p, cfcost_sse_pos_t *pos);

#endif /* CFCOST_SSE_H */
