/*
 * The client's request body as the access phase reads it: one piece of
 * memory, held once.  nginx 1.22 reads a body into one buffer but hands
 * it over in pieces (the bytes that came with the header apart, or a temp
 * file): they are joined once, and the joined copy becomes the request
 * body, the reading buffer given back.  The chat route cuts "model" out
 * in place; a route that sends a new body upstream gives the client's
 * back.  A large body is thus held once until the request ends (plus the
 * proxy's own copy of what it sends), not three or four times.
 */

#include "ngx_http_cfcost_module.h"


/*
 * The whole request body in one piece: without a copy when nginx handed
 * it over in one buffer; else joined into a new block of the request's
 * pool, which becomes the request body alone.
 */
ngx_int_t
ngx_http_cfcost_body_bytes(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char                   *p;
    size_t                    len, size;
    ssize_t                   n;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *rb;

    body->len = 0;
    body->data = (u_char *) "";

    rb = r->request_body;

    if (rb == NULL || rb->bufs == NULL) {
        return NGX_OK;
    }

    cl = rb->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;
    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = rb->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            if (b->last != b->pos) {    /* an empty buffer's pos may be NULL */
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }

            continue;
        }

        size = (size_t) (b->file_last - b->file_pos);
        n = ngx_read_file(b->file, p, size, b->file_pos);

        if (n != (ssize_t) size) {
            return NGX_ERROR;
        }

        p += size;
    }

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NGX_OK;                 /* the copy serves; nothing freed */
    }

    b->start = body->data;
    b->pos = body->data;
    b->last = body->data + len;
    b->end = b->last;
    b->temporary = 1;

    cl->buf = b;
    cl->next = NULL;
    rb->bufs = cl;

    /* the buffer nginx read into (a block of its own when large) */
    if (rb->buf != NULL && !rb->buf->in_file && rb->buf->start != NULL
        && ngx_pfree(r->pool, rb->buf->start) == NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "cfcost: request body joined, %uz bytes, its "
                       "reading buffer freed", len);
    }

    rb->buf = b;

    return NGX_OK;
}


/*
 * Cuts bytes [s, e) out of body (from ngx_http_cfcost_body_bytes), in
 * place: the request body is the shorter one from here on.
 */
void
ngx_http_cfcost_body_cut(ngx_http_request_t *r, ngx_str_t *body, size_t s,
    size_t e)
{
    ngx_chain_t  *cl;

    ngx_memmove(body->data + s, body->data + e, body->len - e);
    body->len -= e - s;

    cl = r->request_body ? r->request_body->bufs : NULL;

    if (cl != NULL && cl->next == NULL && cl->buf->pos == body->data) {
        cl->buf->last = body->data + body->len;
    }
}


/*
 * A new copy goes upstream (copy): the client's body, when it is one
 * block of the request's pool, is freed now rather than when the request
 * ends, and the request body is that copy from here on, so that nothing
 * is left pointing at freed memory.
 */
void
ngx_http_cfcost_body_release(ngx_http_request_t *r, ngx_str_t *body,
    ngx_str_t *copy)
{
    u_char                   *start;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_body_t  *rb;

    rb = r->request_body;

    if (rb == NULL || rb->bufs == NULL) {
        return;
    }

    cl = rb->bufs;
    b = cl->buf;

    if (cl->next != NULL || b->in_file || b->pos != body->data) {
        return;
    }

    start = b->start;

    if (start == NULL || ngx_pfree(r->pool, start) != NGX_OK) {
        return;                /* not a block of its own (preread bytes) */
    }

    b->start = copy->data;
    b->pos = copy->data;
    b->last = copy->data + copy->len;
    b->end = b->last;
    b->temporary = 0;
    b->memory = 1;

    if (rb->buf != NULL && rb->buf != b && rb->buf->start == start) {
        rb->buf = b;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "cfcost: the client's body (%uz bytes) freed",
                   body->len);
}
