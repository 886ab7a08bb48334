/*
 * The log phase's side of the writer (see ngx_http_cfcost_writer.c): a
 * record is written straight into the queue's memory, or, when the live
 * lane is full and cfcost_spool is set, into this worker's spool file.
 */

#include "ngx_http_cfcost_writer_int.h"


u_char *
ngx_http_cfcost_writer_alloc(size_t len)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    if (!wr->initialized) {
        return NULL;
    }

    ngx_http_cfcost_count(made, 1);

    if (wr->live_n >= wr->mcf->queue_max
        && ngx_http_cfcost_spool_full(wr->mcf, len))
    {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;

        if (!wr->full_logged) {
            ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                          "cfcost: record queue is full (%ui records)%s, "
                          "dropping records until Redis at %V catches up",
                          wr->live_n, wr->mcf->spool_dir.len
                                      ? " and so is the spool" : "",
                          &wr->mcf->redis_addr);
            wr->full_logged = 1;
        }

        return NULL;
    }

    rec = ngx_alloc(offsetof(ngx_http_cfcost_rec_t, buf)
                    + NGX_HTTP_CFCOST_HEAD_MAX + len, wr->log);
    if (rec == NULL) {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;
        return NULL;
    }

    return rec->buf + NGX_HTTP_CFCOST_HEAD_MAX;
}


/*
 * The live lane is full: rec goes to the spool under the spool stream (it
 * comes back when the lane has room), or, when the spool cannot take it,
 * it is lost and counted.  rec is freed either way.
 */
static void
ngx_http_cfcost_writer_spill(ngx_http_cfcost_rec_t *rec)
{
    u_char                    *cmd;
    size_t                     len;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    ngx_http_cfcost_writer_new_id(rec, &wr->spool_ids);
    cmd = ngx_http_cfcost_writer_command(rec, 0, &len);

    if (ngx_http_cfcost_spool_append(wr->mcf, wr->log, wr->live_ids.id, cmd,
                                     len)
        == NGX_OK)
    {
        ngx_http_cfcost_count(spooled, 1);

        if (!wr->spill_logged) {
            ngx_log_error(NGX_LOG_WARN, wr->log, 0,
                          "cfcost: record queue is full (%ui records): "
                          "records go to the spool until Redis at %V "
                          "catches up", wr->live_n, &wr->mcf->redis_addr);
            wr->spill_logged = 1;
        }

    } else {
        ngx_http_cfcost_count(dropped, 1);
        wr->unreported++;

        if (!wr->full_logged) {
            ngx_log_error(NGX_LOG_ERR, wr->log, 0,
                          "cfcost: record queue and spool are full, "
                          "dropping records until Redis at %V catches up",
                          &wr->mcf->redis_addr);
            wr->full_logged = 1;
        }
    }

    ngx_free(rec);
}


ngx_uint_t
ngx_http_cfcost_writer_refusing(ngx_http_cfcost_main_conf_t *mcf)
{
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    return mcf->spool_refuse && wr->initialized
           && wr->live_n >= mcf->queue_max
           && ngx_http_cfcost_spool_full(mcf, NGX_HTTP_CFCOST_RECORD_MAX);
}


void
ngx_http_cfcost_writer_push(u_char *pairs, size_t len, ngx_uint_t npairs)
{
    ngx_http_cfcost_rec_t     *rec;
    ngx_http_cfcost_writer_t  *wr = &ngx_http_cfcost_wr;

    rec = (ngx_http_cfcost_rec_t *)
              (pairs - NGX_HTTP_CFCOST_HEAD_MAX
               - offsetof(ngx_http_cfcost_rec_t, buf));

    rec->batch = NULL;
    rec->last = 0;
    rec->fence = 0;
    rec->from = NULL;
    rec->pairs = npairs;
    rec->len = len;

    if (wr->live_n >= wr->mcf->queue_max) {
        ngx_http_cfcost_writer_spill(rec);
        return;
    }

    ngx_http_cfcost_writer_new_id(rec, &wr->live_ids);

    wr->queued++;
    wr->live_n++;
    ngx_http_cfcost_count(queued, 1);
    wr->drain.cancelable = 0;            /* a graceful exit waits for it */

    if (wr->live_n < wr->mcf->queue_max / 2) {
        wr->full_logged = 0;
        wr->spill_logged = 0;
    }

    ngx_queue_insert_tail(&wr->live.queue, &rec->queue);
    ngx_http_cfcost_writer_flush();
}
