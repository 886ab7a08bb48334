/*
 * The record spool.  See ngx_http_cfcost_spool.h.
 *
 * Writes are whole records, one write() each on an O_APPEND file: a worker
 * killed with -9 loses nothing that was appended (it is in the page
 * cache); a host that loses power loses what was not yet synced, at most
 * one second of appends (cfcost_spool_sync runs every second).  A torn
 * record at the end of an adopted file is skipped and logged.
 */

#include <dirent.h>

#include "ngx_http_cfcost_spool.h"


#define NGX_HTTP_CFCOST_SPOOL_BUF    65536


struct ngx_http_cfcost_spool_file_s {
    ngx_fd_t                      fd;
    u_char                       *path;        /* NUL-terminated, malloc */
    off_t                         size;        /* bytes written */
    off_t                         read_off;    /* bytes read back */
    ngx_uint_t                    outstanding; /* read, not yet done */
    ngx_log_t                    *log;
    unsigned                      open:1;
    unsigned                      own:1;
    unsigned                      dirty:1;
    unsigned                      bad:1;       /* set aside, still read */
};


static ngx_http_cfcost_spool_file_t  ngx_http_cfcost_own;
static ngx_http_cfcost_spool_file_t  ngx_http_cfcost_adopted;
static ngx_msec_t                    ngx_http_cfcost_open_failed;
static ngx_uint_t                    ngx_http_cfcost_open_failing;
static ngx_uint_t                    ngx_http_cfcost_scanned;
static u_char                        ngx_http_cfcost_rbuf[
                                         NGX_HTTP_CFCOST_SPOOL_BUF];


/* write lock on the whole file, without waiting: NGX_OK or NGX_BUSY */
static ngx_int_t
ngx_http_cfcost_spool_lock(ngx_fd_t fd)
{
    struct flock  fl;

    ngx_memzero(&fl, sizeof(struct flock));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;

    return fcntl(fd, F_SETLK, &fl) == -1 ? NGX_BUSY : NGX_OK;
}


static u_char *
ngx_http_cfcost_spool_path(ngx_str_t *dir, u_char *name, size_t len,
    ngx_log_t *log)
{
    u_char  *path, *p;

    path = ngx_alloc(dir->len + 1 + len + 1, log);
    if (path == NULL) {
        return NULL;
    }

    p = ngx_cpymem(path, dir->data, dir->len);
    *p++ = '/';
    p = ngx_cpymem(p, name, len);
    *p = '\0';

    return path;
}


static void
ngx_http_cfcost_spool_forget(ngx_http_cfcost_spool_file_t *f)
{
    if (f->open) {
        (void) ngx_close_file(f->fd);  /* drops the lock */
    }

    if (f->path) {
        ngx_free(f->path);
    }

    ngx_memzero(f, sizeof(ngx_http_cfcost_spool_file_t));
}


static ngx_int_t
ngx_http_cfcost_spool_open_own(ngx_http_cfcost_main_conf_t *mcf,
    ngx_log_t *log, u_char *writer)
{
    u_char                        name[CFCOST_WRITER_ID_LEN
                                       + sizeof(NGX_HTTP_CFCOST_SPOOL_SUFFIX)
                                       + sizeof(".tmp") - 1], *tmp;
    size_t                        len;
    ngx_file_info_t               fi;
    ngx_http_cfcost_spool_file_t  *f = &ngx_http_cfcost_own;

    if (f->bad) {
        return NGX_ERROR;     /* a damaged file is still being read */
    }

    len = ngx_sprintf(name, "%*s%s.tmp", (size_t) CFCOST_WRITER_ID_LEN,
                      writer, NGX_HTTP_CFCOST_SPOOL_SUFFIX)
          - name;

    tmp = ngx_http_cfcost_spool_path(&mcf->spool_dir, name, len, log);
    f->path = ngx_http_cfcost_spool_path(&mcf->spool_dir, name,
                                         len - (sizeof(".tmp") - 1), log);

    if (tmp == NULL || f->path == NULL) {
        goto failed;
    }

    /*
     * Created under another name, locked, then renamed: a worker scanning
     * the directory never sees it unlocked (it would take it for the file
     * of a worker that is gone).
     */
    f->fd = ngx_open_file(tmp, O_RDWR|O_APPEND, O_CREAT|O_EXCL, 0600);
    if (f->fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "cfcost: cannot create the spool file \"%s\"", tmp);
        goto failed;
    }

    f->open = 1;
    f->own = 1;
    f->log = log;

    if (ngx_http_cfcost_spool_lock(f->fd) != NGX_OK
        || ngx_fd_info(f->fd, &fi) == NGX_FILE_ERROR
        || ngx_rename_file(tmp, f->path) == NGX_FILE_ERROR)
    {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "cfcost: cannot set up the spool file \"%s\"",
                      f->path);
        (void) ngx_delete_file(tmp);
        goto failed;
    }

    ngx_free(tmp);
    f->size = ngx_file_size(&fi);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "cfcost: spooling usage records to \"%s\"", f->path);

    return NGX_OK;

failed:

    if (tmp) {
        ngx_free(tmp);
    }

    ngx_http_cfcost_spool_forget(f);

    return NGX_ERROR;
}


ngx_uint_t
ngx_http_cfcost_spool_full(ngx_http_cfcost_main_conf_t *mcf, size_t len)
{
    return mcf->spool_dir.len == 0
           || ngx_http_cfcost_own.size + (off_t) len > mcf->spool_max;
}


ngx_int_t
ngx_http_cfcost_spool_append(ngx_http_cfcost_main_conf_t *mcf,
    ngx_log_t *log, u_char *writer, u_char *cmd, size_t len)
{
    ssize_t                        n;
    ngx_http_cfcost_spool_file_t  *f = &ngx_http_cfcost_own;

    if (ngx_http_cfcost_spool_full(mcf, len)) {
        return NGX_DECLINED;
    }

    if (f->bad) {
        return NGX_ERROR;     /* a damaged file is still being read */
    }

    if (!f->open) {
        /* after a failure, one try a second: not one alert a record */
        if (ngx_http_cfcost_open_failing
            && ngx_current_msec - ngx_http_cfcost_open_failed < 1000)
        {
            return NGX_ERROR;
        }

        if (ngx_http_cfcost_spool_open_own(mcf, log, writer) != NGX_OK) {
            ngx_http_cfcost_open_failing = 1;
            ngx_http_cfcost_open_failed = ngx_current_msec;
            return NGX_ERROR;
        }

        ngx_http_cfcost_open_failing = 0;
    }

    n = ngx_write_fd(f->fd, cmd, len);

    if (n != (ssize_t) len) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "cfcost: cannot append to the spool file \"%s\"",
                      f->path);

        if (n > 0 && ftruncate(f->fd, f->size) == -1) {
            /* a torn record stays at the end: replay stops there */
            f->size += n;
        }

        return NGX_ERROR;
    }

    f->size += len;
    f->dirty = 1;

    return NGX_OK;
}


void
ngx_http_cfcost_spool_adopt(ngx_http_cfcost_main_conf_t *mcf, ngx_log_t *log,
    u_char *writer)
{
    DIR                           *d;
    size_t                         len, sfx;
    ngx_fd_t                       fd;
    struct dirent                 *de;
    ngx_file_info_t                fi;
    ngx_http_cfcost_spool_file_t  *f = &ngx_http_cfcost_adopted;

    if (mcf->spool_dir.len == 0 || f->open) {
        return;
    }

    d = opendir((char *) mcf->spool_dir.data);
    if (d == NULL) {
        if (!ngx_http_cfcost_scanned) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "cfcost: cannot read the spool directory \"%V\"",
                          &mcf->spool_dir);
        }

        ngx_http_cfcost_scanned = 1;
        return;
    }

    ngx_http_cfcost_scanned = 1;
    sfx = sizeof(NGX_HTTP_CFCOST_SPOOL_SUFFIX) - 1;

    while ((de = readdir(d)) != NULL) {
        len = ngx_strlen(de->d_name);

        if (len <= sfx
            || ngx_strcmp(de->d_name + len - sfx,
                          NGX_HTTP_CFCOST_SPOOL_SUFFIX) != 0
            || (len == CFCOST_WRITER_ID_LEN + sfx
                && ngx_strncmp(de->d_name, writer, CFCOST_WRITER_ID_LEN)
                   == 0))
        {
            continue;                    /* not a spool file, or ours */
        }

        f->path = ngx_http_cfcost_spool_path(&mcf->spool_dir,
                                             (u_char *) de->d_name, len, log);
        if (f->path == NULL) {
            break;
        }

        fd = ngx_open_file(f->path, NGX_FILE_RDWR, NGX_FILE_OPEN, 0);

        if (fd == NGX_INVALID_FILE) {
            ngx_http_cfcost_spool_forget(f);
            continue;
        }

        /* locked by its live worker; or replayed and removed just now */
        if (ngx_http_cfcost_spool_lock(fd) != NGX_OK
            || ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
            || fi.st_nlink == 0)
        {
            (void) ngx_close_file(fd);
            ngx_http_cfcost_spool_forget(f);
            continue;
        }

        f->fd = fd;
        f->open = 1;
        f->log = log;
        f->size = ngx_file_size(&fi);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "cfcost: replaying the spool file \"%s\" (%O bytes) "
                      "of a worker that is gone", f->path, f->size);
        break;
    }

    (void) closedir(d);
}


ngx_http_cfcost_spool_file_t *
ngx_http_cfcost_spool_next(ngx_http_cfcost_main_conf_t *mcf, ngx_log_t *log,
    u_char *writer)
{
    ngx_http_cfcost_spool_file_t  *own = &ngx_http_cfcost_own;
    ngx_http_cfcost_spool_file_t  *f = &ngx_http_cfcost_adopted;

    if (mcf->spool_dir.len == 0) {
        return NULL;
    }

    if (own->open && own->read_off < own->size) {
        return own;
    }

    if (f->open && f->read_off >= f->size && f->outstanding == 0) {
        /* empty, or emptied before a crash: nothing to wait for */
        f->outstanding = 1;
        ngx_http_cfcost_spool_done(f);
        return NULL;
    }

    return (f->open && f->read_off < f->size) ? f : NULL;
}


/*
 * One "XADD <stream> <id> <pairs>" command at p: returns the bytes it
 * takes, 0 when it is not all there, or -1 when it is not one.
 */
static ssize_t
ngx_http_cfcost_spool_parse(u_char *p, u_char *last,
    ngx_http_cfcost_spooled_t *rec)
{
    u_char     *start, *dash;
    size_t      len;
    ngx_int_t   n, i, v;

    start = p;

    if (p == last) {
        return 0;
    }

    if (*p++ != '*') {
        return -1;
    }

    for (n = 0; p < last && *p >= '0' && *p <= '9' && n < 10000; p++) {
        n = n * 10 + (*p - '0');
    }

    if (last - p < 2) {
        return 0;
    }

    if (p[0] != '\r' || p[1] != '\n' || n < 5 || (n - 3) % 2) {
        return -1;
    }

    p += 2;

    for (i = 0; i < n; i++) {
        if (i == 3) {
            rec->pairs = p;
        }

        if (p == last) {
            return 0;
        }

        if (*p++ != '$') {
            return -1;
        }

        for (v = 0; p < last && *p >= '0' && *p <= '9' && v < 100000000;
             p++)
        {
            v = v * 10 + (*p - '0');
        }

        len = v;

        if ((size_t) (last - p) < 2 + len + 2) {
            return 0;
        }

        if (p[0] != '\r' || p[1] != '\n'
            || p[2 + len] != '\r' || p[3 + len] != '\n')
        {
            return -1;
        }

        p += 2;

        if (i == 0 && (len != 4 || ngx_strncmp(p, "XADD", 4) != 0)) {
            return -1;
        }

        if (i == 1) {
            if (len != CFCOST_RECORD_STREAM_LEN
                || ngx_strncmp(p, CFCOST_RECORD_STREAM_PREFIX,
                               sizeof(CFCOST_RECORD_STREAM_PREFIX) - 1) != 0)
            {
                return -1;
            }

            rec->stream = p;
            rec->stream_len = len;
        }

        if (i == 2) {
            dash = ngx_strlchr(p, p + len, '-');
            if (dash == NULL
                || ngx_atoof(p, dash - p) < 0
                || ngx_atoof(dash + 1, p + len - dash - 1) < 0)
            {
                return -1;
            }

            rec->ms = ngx_atoof(p, dash - p);
            rec->seq = ngx_atoof(dash + 1, p + len - dash - 1);
        }

        p += len + 2;
    }

    rec->pairs_len = p - rec->pairs;
    rec->npairs = (n - 3) / 2;

    return p - start;
}


/* a damaged file: out of the way, for the operator to look at */
static void
ngx_http_cfcost_spool_bad(ngx_http_cfcost_spool_file_t *f)
{
    u_char  *bad;
    size_t   len;

    len = ngx_strlen(f->path);
    bad = ngx_alloc(len + sizeof(".bad"), f->log);

    if (bad != NULL) {
        ngx_memcpy(bad, f->path, len);
        ngx_memcpy(bad + len, ".bad", sizeof(".bad"));
        (void) ngx_rename_file(f->path, bad);
    }

    ngx_log_error(NGX_LOG_ALERT, f->log, 0,
                  "cfcost: the spool file \"%s\" is damaged at byte %O: "
                  "set aside as \"%s.bad\"", f->path, f->read_off, f->path);

    if (bad != NULL) {
        ngx_free(bad);
    }

    /* nothing more is read from it; what was read settles first */
    f->read_off = f->size;
    f->bad = 1;

    if (f->outstanding == 0) {
        ngx_http_cfcost_spool_forget(f);
    }
}


ngx_int_t
ngx_http_cfcost_spool_read(ngx_http_cfcost_spool_file_t *f, ngx_uint_t max,
    void (*got)(ngx_http_cfcost_spooled_t *rec, void *data), void *data)
{
    u_char                     *p, *last;
    ssize_t                     n, used;
    ngx_uint_t                  count;
    ngx_http_cfcost_spooled_t   rec;

    count = 0;
    used = 0;

    while (count < max && f->read_off < f->size) {
        n = pread(f->fd, ngx_http_cfcost_rbuf,
                  ngx_min((off_t) NGX_HTTP_CFCOST_SPOOL_BUF,
                          f->size - f->read_off),
                  f->read_off);

        if (n <= 0) {
            ngx_log_error(NGX_LOG_ALERT, f->log, ngx_errno,
                          "cfcost: cannot read the spool file \"%s\"",
                          f->path);
            return NGX_ERROR;
        }

        p = ngx_http_cfcost_rbuf;
        last = p + n;

        while (count < max) {
            used = ngx_http_cfcost_spool_parse(p, last, &rec);

            if (used <= 0) {
                break;
            }

            f->read_off += used;
            f->outstanding++;
            count++;
            p += used;

            got(&rec, data);
        }

        if (used == 0 && p == ngx_http_cfcost_rbuf) {
            if (n == NGX_HTTP_CFCOST_SPOOL_BUF) {
                used = -1;             /* no record is that long */

            } else {
                ngx_log_error(NGX_LOG_WARN, f->log, 0,
                              "cfcost: the spool file \"%s\" ends in a "
                              "partly written record (%O bytes): skipped",
                              f->path, f->size - f->read_off);
                f->read_off = f->size;
                break;
            }
        }

        if (used < 0) {
            ngx_http_cfcost_spool_bad(f);
            return count ? (ngx_int_t) count : NGX_ERROR;
        }
    }

    return count;
}


void
ngx_http_cfcost_spool_done(ngx_http_cfcost_spool_file_t *f)
{
    if (f == NULL || !f->open || f->outstanding == 0) {
        return;
    }

    if (--f->outstanding || f->read_off < f->size) {
        return;
    }

    if (f->bad) {
        ngx_http_cfcost_spool_forget(f);    /* renamed .bad already */
        return;
    }

    if (f->own) {
        /* everything spooled is stored: start the file again */
        if (ftruncate(f->fd, 0) == -1) {
            ngx_log_error(NGX_LOG_ALERT, f->log, ngx_errno,
                          "cfcost: cannot empty the spool file \"%s\"",
                          f->path);
            return;
        }

        ngx_log_error(NGX_LOG_NOTICE, f->log, 0,
                      "cfcost: the spool file \"%s\" is replayed",
                      f->path);

        f->size = 0;
        f->read_off = 0;
        f->dirty = 0;
        return;
    }

    if (ngx_delete_file(f->path) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, f->log, ngx_errno,
                      "cfcost: cannot remove the replayed spool file \"%s\"",
                      f->path);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, f->log, 0,
                      "cfcost: the spool file \"%s\" is replayed and "
                      "removed", f->path);
    }

    ngx_http_cfcost_spool_forget(f);
}


void
ngx_http_cfcost_spool_sync(void)
{
    ngx_http_cfcost_spool_file_t  *f = &ngx_http_cfcost_own;

    if (f->open && f->dirty) {
        if (fdatasync(f->fd) == -1) {
            ngx_log_error(NGX_LOG_ALERT, f->log, ngx_errno,
                          "cfcost: fdatasync(\"%s\") failed", f->path);
        }

        f->dirty = 0;
    }
}


void
ngx_http_cfcost_spool_close(void)
{
    ngx_http_cfcost_spool_sync();
    ngx_http_cfcost_spool_forget(&ngx_http_cfcost_own);
    ngx_http_cfcost_spool_forget(&ngx_http_cfcost_adopted);
}
