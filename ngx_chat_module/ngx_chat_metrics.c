
/*
 * chat_metrics: Prometheus text for the whole nginx.  The counters live
 * in a small shared zone, so every worker adds to the same numbers and a
 * scrape that lands on any worker sees them all (the sessions open, a
 * slot a worker: ngx_chat_metrics.h).  The number of stored
 * messages comes from PostgreSQL at scrape time; the link states are
 * those of the worker that answers.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_metrics.h"


typedef struct {
    ngx_http_request_t     *request;
    ngx_chat_pg_query_t    *query;
} ngx_chat_metrics_ctx_t;


static ngx_int_t ngx_chat_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_atomic_uint_t ngx_chat_metrics_connections(void);
static void ngx_chat_metrics_counted(void *data, PGresult *res);
static void ngx_chat_metrics_cleanup(void *data);
static ngx_int_t ngx_chat_metrics_send(ngx_http_request_t *r,
    PGresult *res);


ngx_chat_metrics_t  *ngx_chat_metrics;

static ngx_str_t  ngx_chat_metrics_zone_name = ngx_string("chat_metrics");


/* one zone per configuration: the counters, a slot a process, the slab's
 * own pages */

ngx_int_t
ngx_chat_metrics_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone)
{
    *zone = ngx_shared_memory_add(cf, &ngx_chat_metrics_zone_name,
                                  sizeof(ngx_chat_metrics_t)
                                  + 8 * ngx_pagesize,
                                  &ngx_chat_module);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_chat_metrics_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_chat_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    /* a reload keeps the counters of the old configuration */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    shm_zone->data = ngx_slab_calloc(shpool, sizeof(ngx_chat_metrics_t));
    if (shm_zone->data == NULL) {
        return NGX_ERROR;
    }

    shpool->data = shm_zone->data;

    return NGX_OK;
}


/*
 * A worker starts with no session, in the slot a dead one may have left.
 * It takes the counters of its own configuration here, not while one is
 * read: a reload that fails must not leave it with a zone that is gone.
 */

void
ngx_chat_metrics_init_worker(ngx_shm_zone_t *zone)
{
    ngx_chat_metrics_worker_t  *w;

    ngx_chat_metrics = zone ? zone->data : NULL;

    if (ngx_chat_metrics == NULL) {
        return;
    }

    w = &ngx_chat_metrics->workers[ngx_process_slot];

    w->connections = 0;
    w->pid = (ngx_atomic_uint_t) ngx_pid;
}


/* this worker's sessions open now */

void
ngx_chat_metrics_sessions(ngx_uint_t n)
{
    if (ngx_chat_metrics) {
        ngx_chat_metrics->workers[ngx_process_slot].connections = n;
    }
}


/*
 * The sessions of the workers alive: a worker killed had no time to take
 * its own away, and one that exits takes its sessions with it.
 */

static ngx_atomic_uint_t
ngx_chat_metrics_connections(void)
{
    ngx_pid_t                   pid;
    ngx_uint_t                  i;
    ngx_atomic_uint_t           n;
    ngx_chat_metrics_worker_t  *w;

    if (ngx_chat_metrics == NULL) {
        return 0;
    }

    n = 0;

    for (i = 0; i < NGX_MAX_PROCESSES; i++) {
        w = &ngx_chat_metrics->workers[i];
        pid = (ngx_pid_t) w->pid;

        if (pid == 0) {
            continue;
        }

        if (pid != ngx_pid && kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            (void) ngx_atomic_cmp_set(&w->pid, (ngx_atomic_uint_t) pid, 0);
            continue;
        }

        n += w->connections;
    }

    return n;
}


ngx_int_t
ngx_chat_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_pool_cleanup_t      *cln;
    ngx_chat_metrics_ctx_t  *ctx;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_chat_metrics_ctx_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (ctx == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    cln->handler = ngx_chat_metrics_cleanup;
    cln->data = ctx;

    ctx->query = ngx_chat_pg_query("SELECT count(*) FROM messages", 0, NULL,
                                   ngx_chat_metrics_counted, ctx,
                                   r->connection->log);

    if (ctx->query == NULL) {
        return ngx_chat_metrics_send(r, NULL);
    }

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_chat_metrics_counted(void *data, PGresult *res)
{
    ngx_http_request_t      *r;
    ngx_chat_metrics_ctx_t  *ctx = data;

    ctx->query = NULL;
    r = ctx->request;

    ngx_http_finalize_request(r, ngx_chat_metrics_send(r, res));
    ngx_http_run_posted_requests(r->connection);
}


static void
ngx_chat_metrics_cleanup(void *data)
{
    ngx_chat_metrics_ctx_t  *ctx = data;

    if (ctx->query) {
        ngx_chat_pg_cancel(ctx->query);
    }
}


static ngx_int_t
ngx_chat_metrics_send(ngx_http_request_t *r, PGresult *res)
{
    u_char       *p;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_create_temp_buf(r->pool, 2048);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    p = ngx_sprintf(p,
            "# HELP chat_connections Chat sessions open (WebSockets, "
            "fallback requests).\n"
            "# TYPE chat_connections gauge\n"
            "chat_connections %uA\n"
            "# HELP chat_messages_sent_total Messages stored by send.\n"
            "# TYPE chat_messages_sent_total counter\n"
            "chat_messages_sent_total %uA\n"
            "# HELP chat_messages_delivered_total Messages sent to devices."
            "\n"
            "# TYPE chat_messages_delivered_total counter\n"
            "chat_messages_delivered_total %uA\n"
            "# HELP chat_gap_fills_total Live messages that came past a gap "
            "and waited for PostgreSQL to fill it.\n"
            "# TYPE chat_gap_fills_total counter\n"
            "chat_gap_fills_total %uA\n"
            "# HELP chat_publish_failures_total Redis publishes of stored "
            "messages, receipts and notices that did not happen (devices "
            "read them from PostgreSQL later).\n"
            "# TYPE chat_publish_failures_total counter\n"
            "chat_publish_failures_total %uA\n",
            ngx_chat_metrics_connections(),
            ngx_chat_metrics ? ngx_chat_metrics->sent : 0,
            ngx_chat_metrics ? ngx_chat_metrics->delivered : 0,
            ngx_chat_metrics ? ngx_chat_metrics->gap_fills : 0,
            ngx_chat_metrics ? ngx_chat_metrics->publish_failures : 0);

    if (ngx_chat_pg_ok(res) && PQntuples(res) == 1
        && ngx_chat_pg_int(res, 0, 0) >= 0)
    {
        p = ngx_sprintf(p,
                "# HELP chat_messages_stored Messages not yet delivered "
                "everywhere.\n"
                "# TYPE chat_messages_stored gauge\n"
                "chat_messages_stored %L\n", ngx_chat_pg_int(res, 0, 0));
    }

    p = ngx_sprintf(p,
            "# HELP chat_redis_up Redis reachable from this worker.\n"
            "# TYPE chat_redis_up gauge\n"
            "chat_redis_up %ui\n"
            "# HELP chat_pg_up PostgreSQL reachable from this worker.\n"
            "# TYPE chat_pg_up gauge\n"
            "chat_pg_up %ui\n",
            ngx_chat_redis_up(), ngx_chat_pg_up());

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
