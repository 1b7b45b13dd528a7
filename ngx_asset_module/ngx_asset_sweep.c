
/*
 * asset_ttl: worker 0 of each nginx deletes, in the background, media
 * past the TTL that no stored message refers to (asset_expire()), rows
 * first, then the objects: files of the local store, or the s3 backend's
 * objects by presigned DELETE requests (ngx_asset_s3.c).  A full batch
 * means more are waiting: the next one goes at once.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_asset_module.h"
#include "ngx_chat_api.h"
#include "ngx_chat_event.h"


#define NGX_ASSET_SWEEP_BATCH  1000     /* media a sweep deletes */


/* a quarter of the TTL, between a second and a minute */
#define ngx_asset_sweep_interval(amcf)                                       \
    ((ngx_msec_t) ngx_max(1, ngx_min(60, (amcf)->ttl / 4)) * 1000)


static void ngx_asset_sweep(ngx_event_t *ev);
static void ngx_asset_swept(void *data, PGresult *res);
static void ngx_asset_sweep_files(PGresult *res, int n);
static ngx_int_t ngx_asset_sweep_s3(PGresult *res, int n);
static void ngx_asset_sweep_s3_done(void);
static void ngx_asset_sweep_next(ngx_uint_t full);


static const char  ngx_asset_expire_sql[] =
    "SELECT out_id FROM asset_expire($1, "
    ngx_value(NGX_ASSET_SWEEP_BATCH) ")";


static ngx_event_t             ngx_asset_sweep_ev;
static ngx_asset_main_conf_t  *ngx_asset_sweep_conf;
static ngx_uint_t              ngx_asset_sweep_full;  /* the s3 batch */


ngx_int_t
ngx_asset_sweep_init_process(ngx_cycle_t *cycle)
{
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_asset_module);

    if (amcf == NULL || ngx_worker != 0) {
        return NGX_OK;
    }

    ngx_asset_sweep_conf = amcf;

    ngx_chat_event_init(&ngx_asset_sweep_ev, ngx_asset_sweep, cycle->log);
    ngx_asset_sweep_ev.cancelable = 1;
    ngx_add_timer(&ngx_asset_sweep_ev, ngx_asset_sweep_interval(amcf));

    return NGX_OK;
}


void
ngx_asset_sweep_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_asset_sweep_ev.timer_set) {
        ngx_del_timer(&ngx_asset_sweep_ev);
    }
}


static void
ngx_asset_sweep(ngx_event_t *ev)
{
    u_char     ttl[NGX_TIME_T_LEN];
    ngx_str_t  param;

    param.data = ttl;
    param.len = ngx_sprintf(ttl, "%T", ngx_asset_sweep_conf->ttl) - ttl;

    if (ngx_chat_pg_query(ngx_asset_expire_sql, 1, &param, ngx_asset_swept,
                          NULL, ev->log)
        == NULL)
    {
        ngx_asset_sweep_next(0);
    }
}


static void
ngx_asset_swept(void *data, PGresult *res)
{
    int  n;

    n = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    if (n > 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_asset_sweep_ev.log, 0,
                      "asset: %d media expired", n);
    }

    if (n > 0 && ngx_asset_sweep_conf->backend == NGX_ASSET_S3
        && ngx_asset_sweep_s3(res, n) == NGX_OK)
    {
        return;         /* the sweep goes on when the DELETEs are done */
    }

    ngx_asset_sweep_files(res, n);
    ngx_asset_sweep_next(n == NGX_ASSET_SWEEP_BATCH);
}


/* the local store: the objects of the expired rows, in blob_dir */

static void
ngx_asset_sweep_files(PGresult *res, int n)
{
    int                     i;
    u_char                 *p;
    ngx_str_t               id;
    ngx_asset_main_conf_t  *amcf = ngx_asset_sweep_conf;
    u_char                  path[NGX_MAX_PATH];

    for (i = 0; i < n && amcf->blob_dir.len; i++) {
        ngx_chat_pg_value(res, i, 0, &id);

        if (ngx_chat_api_key_valid(&id) != NGX_OK
            || amcf->blob_dir.len + id.len + 1 > sizeof(path))
        {
            continue;
        }

        p = ngx_cpymem(path, amcf->blob_dir.data, amcf->blob_dir.len);
        p = ngx_cpymem(p, id.data, id.len);
        *p = '\0';

        if (ngx_delete_file(path) == NGX_FILE_ERROR
            && ngx_errno != NGX_ENOENT)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_asset_sweep_ev.log, ngx_errno,
                          ngx_delete_file_n " \"%s\" failed", path);
        }
    }
}


/* the s3 backend: the objects of the expired rows, by DELETE requests */

static ngx_int_t
ngx_asset_sweep_s3(PGresult *res, int n)
{
    int           i;
    ngx_str_t     v, *id;
    ngx_pool_t   *pool;
    ngx_array_t  *ids;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ids = ngx_array_create(pool, n, sizeof(ngx_str_t));
    if (ids == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &v);

        if (ngx_chat_api_key_valid(&v) != NGX_OK) {
            continue;
        }

        id = ngx_array_push(ids);
        if (id == NULL) {
            goto failed;
        }

        id->len = v.len;
        id->data = ngx_pstrdup(pool, &v);

        if (id->data == NULL) {
            goto failed;
        }
    }

    ngx_asset_sweep_full = (n == NGX_ASSET_SWEEP_BATCH);

    ngx_asset_s3_delete(&ngx_asset_sweep_conf->s3, pool, ids,
                        ngx_asset_sweep_s3_done);

    return NGX_OK;

failed:

    ngx_destroy_pool(pool);

    return NGX_ERROR;
}


static void
ngx_asset_sweep_s3_done(void)
{
    ngx_asset_sweep_next(ngx_asset_sweep_full);
}


static void
ngx_asset_sweep_next(ngx_uint_t full)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&ngx_asset_sweep_ev,
                  full ? 1 : ngx_asset_sweep_interval(ngx_asset_sweep_conf));
}
