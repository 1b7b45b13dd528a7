
/*
 * Counters shared by the workers of one nginx, and the Prometheus
 * endpoint (chat_metrics) that reports them (PROTOCOL.md, section 6).
 */

#ifndef _NGX_CHAT_METRICS_H_INCLUDED_
#define _NGX_CHAT_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * The sessions open are a gauge: each worker writes its own count in the
 * slot of its process (ngx_process_slot) and a scrape adds those of the
 * workers alive, so the sessions of a worker that died are not counted
 * on.  The rest are counters, which a dead worker's share stays part of.
 */

typedef struct {
    ngx_atomic_t            pid;             /* 0: never used */
    ngx_atomic_t            connections;     /* its chat sessions open */
} ngx_chat_metrics_worker_t;


typedef struct {
    ngx_atomic_t            sent;            /* messages stored by send */
    ngx_atomic_t            delivered;       /* msg frames to devices */
    ngx_atomic_t            gap_fills;       /* reads of what a gap lacks */
    ngx_atomic_t            publish_failures;  /* fan-outs not published */
    ngx_chat_metrics_worker_t  workers[NGX_MAX_PROCESSES];
} ngx_chat_metrics_t;


extern ngx_chat_metrics_t  *ngx_chat_metrics;

#define ngx_chat_metrics_add(field, n)                                       \
    if (ngx_chat_metrics) {                                                  \
        (void) ngx_atomic_fetch_add(&ngx_chat_metrics->field, n);            \
    }


ngx_int_t ngx_chat_metrics_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone);
void ngx_chat_metrics_init_worker(ngx_shm_zone_t *zone);
void ngx_chat_metrics_sessions(ngx_uint_t n);
ngx_int_t ngx_chat_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_CHAT_METRICS_H_INCLUDED_ */
