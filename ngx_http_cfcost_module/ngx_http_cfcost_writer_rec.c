/*
 * A record of the writer (see ngx_http_cfcost_writer.c): its entry id, the
 * command that stores it, what Redis's reply to it means, and what becomes
 * of one Redis refuses for good (the dead-letter file).
 */

#include "ngx_http_cfcost_writer_int.h"


/* gives rec the next entry id of ids' stream: above every one before */
void
ngx_http_cfcost_writer_new_id(ngx_http_cfcost_rec_t *rec,
    ngx_http_cfcost_ids_t *ids)
{
    uint64_t     now;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;

    if (now > ids->ms) {
        ids->ms = now;
        ids->seq = 0;

    } else {
        ids->seq++;
    }

    rec->ms = ids->ms;
    rec->seq = ids->seq;
    ngx_memcpy(rec->stream, ids->stream, sizeof(rec->stream));
}


static size_t
ngx_http_cfcost_writer_id_str(ngx_http_cfcost_rec_t *rec, u_char *buf)
{
    return ngx_sprintf(buf, "%uL-%uL", rec->ms, rec->seq) - buf;
}


void
ngx_http_cfcost_writer_free(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    wr->queued--;

    if (rec->from == NULL) {
        wr->live_n--;
    }

    ngx_http_cfcost_count(queued, -1);
    ngx_free(rec);
}


/* rec is stored, or set aside for good: its spool file may let it go */
void
ngx_http_cfcost_writer_settled(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_spool_done(rec->from);
    ngx_http_cfcost_writer_free(rec);
}


/*
 * The whole XADD command of rec, NOMKSTREAM when asked: the head is
 * written just before the pairs.  Returns where it starts; *len is its
 * length.
 */
u_char *
ngx_http_cfcost_writer_command(ngx_http_cfcost_rec_t *rec,
    ngx_uint_t nomkstream, size_t *len)
{
    u_char  head[NGX_HTTP_CFCOST_HEAD_MAX], *p, id[NGX_INT64_LEN * 2 + 2];
    size_t  hlen;

    p = ngx_sprintf(head, "*%ui\r\n", 3 + (nomkstream ? 1 : 0)
                                        + 2 * rec->pairs);
    p = ngx_http_cfcost_bulk(p, "XADD", sizeof("XADD") - 1);
    p = ngx_http_cfcost_bulk(p, rec->stream, sizeof(rec->stream));

    if (nomkstream) {
        p = ngx_http_cfcost_bulk(p, "NOMKSTREAM", sizeof("NOMKSTREAM") - 1);
    }

    p = ngx_http_cfcost_bulk(p, id, ngx_http_cfcost_writer_id_str(rec, id));

    hlen = p - head;
    p = rec->buf + NGX_HTTP_CFCOST_HEAD_MAX - hlen;
    ngx_memcpy(p, head, hlen);

    *len = hlen + rec->len;

    return p;
}


/*
 * The packed value of a record of one packed field (schema 2: what this
 * worker writes), inside its pairs; NULL for any other (a spooled record
 * of schema 1).
 */
u_char *
ngx_http_cfcost_writer_packed(ngx_http_cfcost_rec_t *rec, size_t *len)
{
    u_char  *p, *end;
    size_t   n;

    static const u_char  name[] = "$1\r\n" CFCOST_R_PACKED "\r\n$";

    p = rec->buf + NGX_HTTP_CFCOST_HEAD_MAX;
    end = p + rec->len;

    if (rec->pairs != 1 || rec->len < sizeof(name) - 1
        || ngx_memcmp(p, name, sizeof(name) - 1) != 0)
    {
        return NULL;
    }

    p += sizeof(name) - 1;

    for (n = 0; p < end && *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > NGX_HTTP_CFCOST_RECORD_MAX) {
            return NULL;
        }
    }

    if (end - p < 2 || p[0] != '\r' || p[1] != '\n'
        || (size_t) (end - p) != 2 + n + 2)
    {
        return NULL;
    }

    *len = n;

    return p + 2;
}


/*
 * The XADD of a batch entry (cfcost_schema.h): the records of e, each
 * packed value a netstring, in one field, under the id of the last (a
 * record of it sent again alone is then refused as stored, were the
 * entry stored).  Allocated: the caller frees it.  Returns NULL when out
 * of memory.
 */
u_char *
ngx_http_cfcost_writer_entry_command(ngx_http_cfcost_entry_t *e,
    ngx_uint_t nomkstream, size_t *len)
{
    u_char                 *cmd, *p, *q, *s, *v;
    u_char                  id[NGX_INT64_LEN * 2 + 2];
    size_t                  vlen, plen, idlen;
    ngx_uint_t              i;
    ngx_http_cfcost_rec_t  *rec, *last;

    last = e->batch->recs[e->first + e->n - 1];
    idlen = ngx_http_cfcost_writer_id_str(last, id);

    /* room: a packed value is shorter than its record's pairs */
    vlen = 0;
    for (i = 0; i < e->n; i++) {
        vlen += NGX_SIZE_T_LEN + 2 + e->batch->recs[e->first + i]->len;
    }

    cmd = ngx_alloc(NGX_HTTP_CFCOST_HEAD_MAX
                    + ngx_http_cfcost_bulk_len(sizeof(CFCOST_R_BATCH) - 1)
                    + ngx_http_cfcost_bulk_len(vlen), ngx_cycle->log);
    if (cmd == NULL) {
        return NULL;
    }

    p = ngx_sprintf(cmd, "*%ui\r\n", 5 + (nomkstream ? 1 : 0));
    p = ngx_http_cfcost_bulk(p, "XADD", sizeof("XADD") - 1);
    p = ngx_http_cfcost_bulk(p, last->stream, sizeof(last->stream));

    if (nomkstream) {
        p = ngx_http_cfcost_bulk(p, "NOMKSTREAM", sizeof("NOMKSTREAM") - 1);
    }

    p = ngx_http_cfcost_bulk(p, id, idlen);
    p = ngx_http_cfcost_bulk(p, CFCOST_R_BATCH, sizeof(CFCOST_R_BATCH) - 1);

    /* the value: written after room for its longest header, then the
     * header moved up to it (as a record's own) */
    v = p + 1 + NGX_SIZE_T_LEN + 2;
    q = v;

    for (i = 0; i < e->n; i++) {
        rec = e->batch->recs[e->first + i];
        s = ngx_http_cfcost_writer_packed(rec, &plen);
        q = ngx_sprintf(q, "%uz:", plen);
        q = ngx_cpymem(q, s, plen);
        *q++ = ',';
    }

    vlen = q - v;
    *p++ = '$';
    p = ngx_sprintf(p, "%uz\r\n", vlen);
    p = ngx_movemem(p, v, vlen);
    *p++ = '\r';
    *p++ = '\n';

    *len = p - cmd;

    return cmd;
}


/* a record Redis will never take: kept in the dead-letter file */
void
ngx_http_cfcost_writer_dead(ngx_http_cfcost_rec_t *rec, u_char *err,
    size_t err_len)
{
    u_char                       *cmd;
    size_t                        len;
    ngx_fd_t                      fd;
    ngx_http_cfcost_writer_t     *wr = &ngx_http_cfcost_wr;
    ngx_http_cfcost_main_conf_t  *mcf = wr->mcf;

    cmd = ngx_http_cfcost_writer_command(rec, 0, &len);

    fd = ngx_open_file(mcf->dead_letter.data, NGX_FILE_APPEND,
                       NGX_FILE_CREATE_OR_OPEN, NGX_FILE_DEFAULT_ACCESS);

    if (fd == NGX_INVALID_FILE
        || ngx_write_fd(fd, cmd, len) != (ssize_t) len)
    {
        ngx_log_error(NGX_LOG_ALERT, wr->log, ngx_errno,
                      "cfcost: Redis refused a usage record for good (%*s) "
                      "and it cannot be written to \"%V\": lost",
                      err_len, err, &mcf->dead_letter);

    } else {
        ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                      "cfcost: Redis refused a usage record for good (%*s); "
                      "it is kept in \"%V\"", err_len, err,
                      &mcf->dead_letter);
    }

    if (fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(fd);
    }

    ngx_http_cfcost_count(dead, 1);
    wr->unreported++;
    ngx_http_cfcost_writer_settled(rec);
}


/* Redis said "later": stop sending for a backoff delay */
void
ngx_http_cfcost_writer_hold(u_char *err, size_t len)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (wr->paused) {
        return;
    }

    if (!wr->pause_logged) {
        ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                      "cfcost: Redis at %V cannot store records now (%*s); "
                      "%ui held, retrying", &wr->mcf->redis_addr, len, err,
                      wr->queued);
        wr->pause_logged = 1;
    }

    wr->paused = 1;
    ngx_add_timer(&wr->pause, ngx_http_cfcost_backoff(&wr->backoff));
}


static ngx_uint_t
ngx_http_cfcost_writer_too_small(redisReply *reply)
{
    return reply->len >= 4 && ngx_strncmp(reply->str, "ERR ", 4) == 0
           && ngx_strstr(reply->str, "equal or smaller") != NULL;
}


/* what a reply says of the command it answers */
ngx_uint_t
ngx_http_cfcost_writer_classify(redisReply *reply)
{
    if (reply == NULL) {
        return NGX_HTTP_CFCOST_UNKNOWN;
    }

    if (reply->type == REDIS_REPLY_STATUS && reply->len == 6
        && ngx_strncmp(reply->str, "QUEUED", 6) == 0)
    {
        return NGX_HTTP_CFCOST_QUEUED;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        return NGX_HTTP_CFCOST_NOSTREAM;   /* only XADD NOMKSTREAM says nil */
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        return NGX_HTTP_CFCOST_STORED;
    }

    if (ngx_http_cfcost_writer_too_small(reply)) {
        return NGX_HTTP_CFCOST_ALREADY;
    }

    return ngx_http_cfcost_redis_transient(reply)
           ? NGX_HTTP_CFCOST_NOTRUN : NGX_HTTP_CFCOST_DEAD;
}


/*
 * A record whose id Redis cannot take any more although it was never
 * stored: a later one of its stream was, past it (only when Redis refused
 * MULTI itself, and changed its mind within one batch).  It goes to the
 * end of the live lane under a new id.  Read back from a spool file, it
 * leaves the file's count first.
 */
void
ngx_http_cfcost_writer_overtaken(ngx_http_cfcost_rec_t *rec)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    ngx_log_error(NGX_LOG_WARN, wr->log, 0,
                  "cfcost: Redis stored a usage record past one it "
                  "refused; that one is sent again under a new id");

    if (rec->from) {
        ngx_http_cfcost_spool_done(rec->from);
        rec->from = NULL;
        wr->live_n++;
    }

    ngx_http_cfcost_writer_new_id(rec, &wr->live_ids);
    ngx_queue_insert_tail(&wr->live.queue, &rec->queue);
}
