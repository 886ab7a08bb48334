/*
 * Server-Sent Events, resumable across any split of the byte stream.
 */

#include <stdlib.h>
#include <string.h>

#include "cfcost_sse.h"


void
cfcost_sse_init(cfcost_sse_t *p)
{
    memset(p, 0, sizeof(cfcost_sse_t));
}


void
cfcost_sse_free(cfcost_sse_t *p)
{
    free(p->line);
    free(p->data);
    cfcost_sse_init(p);
}


/* appends to a growable buffer; 0, or -1 past CFCOST_SSE_MAX or memory */
static int
cfcost_sse_append(char **buf, size_t *len, size_t *cap, const char *s,
    size_t n, int *nomem)
{
    char    *nb;
    size_t   ncap;

    if (*len + n > CFCOST_SSE_MAX) {
        return -1;
    }

    if (n == 0) {
        return 0;                             /* *buf may still be NULL */
    }

    if (*len + n > *cap) {
        ncap = *cap ? *cap * 2 : 256;
        while (ncap < *len + n) {
            ncap *= 2;
        }

        nb = realloc(*buf, ncap);
        if (nb == NULL) {
            *nomem = 1;
            return -1;
        }

        *buf = nb;
        *cap = ncap;
    }

    memcpy(*buf + *len, s, n);
    *len += n;

    return 0;
}


/*
 * An event larger than CFCOST_SSE_MAX as sent -- from its first byte to
 * its blank line, comments and other fields included -- is skipped: its
 * bytes stop being kept as soon as it is over.  Called whenever offset
 * grows; offset never passes the event's end, so the same event is
 * skipped however the stream is split.
 */
static void
cfcost_sse_bound(cfcost_sse_t *p, size_t more)
{
    if (p->in_event && p->offset + more - p->event_start > CFCOST_SSE_MAX) {
        p->overflow = 1;
    }
}


static void
cfcost_sse_reset_event(cfcost_sse_t *p)
{
    p->data_len = 0;
    p->has_data = 0;
    p->in_event = 0;
    p->overflow = 0;
}


static int
cfcost_sse_dispatch(cfcost_sse_t *p, cfcost_sse_event_t *ev)
{
    ev->data = p->data;
    ev->len = p->data_len - 1;                /* the last "\n" is not data */
    ev->start = p->event_start;
    ev->end = p->offset;
    ev->eol = p->eol;
    p->events++;
    p->pending = 0;
    cfcost_sse_reset_event(p);

    return 1;
}


/* one complete line, without its terminator; 1 when it ends an event */
static int
cfcost_sse_line(cfcost_sse_t *p, const char *line, size_t len,
    cfcost_sse_event_t *ev)
{
    int          nomem = 0;
    size_t       nlen, vlen;
    const char  *colon, *value;

    if (len == 0) {
        if (!p->in_event) {
            return 0;
        }

        if (!p->has_data || p->overflow) {
            p->skipped += p->overflow;
            cfcost_sse_reset_event(p);
            return 0;
        }

        if (p->cr) {
            p->pending = 1;           /* its end may yet take an LF */
            return 0;
        }

        return cfcost_sse_dispatch(p, ev);
    }

    if (len > CFCOST_SSE_MAX) {
        p->overflow = 1;          /* as when a split line could not be kept */
        return 0;
    }

    if (line[0] == ':' || p->overflow) {
        return 0;                             /* a comment */
    }

    colon = memchr(line, ':', len);
    nlen = colon ? (size_t) (colon - line) : len;

    if (nlen != 4 || memcmp(line, "data", 4) != 0) {
        return 0;                             /* event, id, retry, other */
    }

    value = colon ? colon + 1 : line + len;
    vlen = line + len - value;

    if (vlen && value[0] == ' ') {
        value++;
        vlen--;
    }

    if (cfcost_sse_append(&p->data, &p->data_len, &p->data_cap, value, vlen,
                          &nomem) != 0
        || cfcost_sse_append(&p->data, &p->data_len, &p->data_cap, "\n", 1,
                             &nomem) != 0)
    {
        p->overflow = 1;
        p->nomem |= nomem;
        return 0;
    }

    p->has_data = 1;

    return 0;
}


size_t
cfcost_sse_feed(cfcost_sse_t *p, const char *buf, size_t len,
    cfcost_sse_event_t *ev, int *got)
{
    int          nomem = 0;
    size_t       i, j, n;
    const char  *line;

    *got = 0;

    for (i = 0; i < len; /* void */) {

        if (p->cr) {
            p->cr = 0;
            p->eol = CFCOST_SSE_CR;

            if (buf[i] == '\n') {               /* the LF of a CRLF */
                i++;
                p->offset++;
                p->eol = CFCOST_SSE_CRLF;
            }

            if (p->pending) {
                *got = cfcost_sse_dispatch(p, ev);
                return i;
            }

            continue;
        }

        if (!p->in_event && p->line_len == 0 && !p->long_line
            && buf[i] != '\r' && buf[i] != '\n')
        {
            p->in_event = 1;
            p->event_start = p->offset;
        }

        for (j = i; j < len && buf[j] != '\r' && buf[j] != '\n'; j++) {
            /* void */
        }

        n = j - i;

        if (j == len) {                         /* the line goes on */
            cfcost_sse_bound(p, n);

            if (p->overflow
                || cfcost_sse_append(&p->line, &p->line_len, &p->line_cap,
                                     buf + i, n, &nomem) != 0)
            {
                p->overflow = 1;
                p->nomem |= nomem;
                p->line_len = 0;
                p->long_line = 1;
            }

            p->offset += n;
            return len;
        }

        if (p->line_len && !p->long_line) {
            if (cfcost_sse_append(&p->line, &p->line_len, &p->line_cap,
                                  buf + i, n, &nomem) != 0)
            {
                p->overflow = 1;
                p->nomem |= nomem;
            }

            line = p->line;
            n = p->line_len;

        } else {
            line = buf + i;                     /* no copy for whole lines */
        }

        p->cr = (buf[j] == '\r');

        if (!p->cr) {
            p->eol = CFCOST_SSE_LF;
        }

        p->offset += j + 1 - i;
        i = j + 1;

        cfcost_sse_bound(p, 0);

        if (p->long_line) {
            p->long_line = 0;
            n = 1;                              /* not empty, not data */
            line = ":";
        }

        p->line_len = 0;

        if (cfcost_sse_line(p, line, n, ev)) {
            *got = 1;
            return i;
        }
    }

    return len;
}


int
cfcost_sse_finish(cfcost_sse_t *p, cfcost_sse_event_t *ev)
{
    if (p->line_len) {
        (void) cfcost_sse_line(p, p->line, p->line_len, ev);
        p->line_len = 0;
    }

    if (p->pending) {
        p->cr = 0;
        return cfcost_sse_dispatch(p, ev);
    }

    p->cr = 0;

    return cfcost_sse_line(p, "", 0, ev);
}


void
cfcost_sse_trim(cfcost_sse_t *p, size_t keep)
{
    if (p->line_len == 0 && p->line_cap > keep) {
        free(p->line);
        p->line = NULL;
        p->line_cap = 0;
    }

    if (p->data_len == 0 && p->data_cap > keep) {
        free(p->data);
        p->data = NULL;
        p->data_cap = 0;
    }
}


void
cfcost_sse_position(const cfcost_sse_t *p, cfcost_sse_pos_t *pos)
{
    pos->offset = p->offset;
    pos->event_start = p->event_start;
    pos->unfinished = p->in_event && !p->overflow && !p->long_line;
    pos->open = !p->pending && (p->in_event || p->line_len || p->long_line);
    pos->eol = p->eol;
}
