
/*
 * Counters shared by the workers of one nginx, and the Prometheus
 * endpoint (chat_metrics) that reports them (PROTOCOL.md, section 6).
 */

#ifndef _NGX_CHAT_METRICS_H_INCLUDED_
#define _NGX_CHAT_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct {
    ngx_atomic_t            connections;     /* chat WebSockets open */
    ngx_atomic_t            sent;            /* messages stored by send */
    ngx_atomic_t            delivered;       /* msg frames to devices */
    ngx_atomic_t            gap_fills;       /* reads of what a gap lacks */
    ngx_atomic_t            publish_failures;  /* fan-outs not published */
} ngx_chat_metrics_t;


extern ngx_chat_metrics_t  *ngx_chat_metrics;

#define ngx_chat_metrics_add(field, n)                                       \
    if (ngx_chat_metrics) {                                                  \
        (void) ngx_atomic_fetch_add(&ngx_chat_metrics->field, n);            \
    }


ngx_int_t ngx_chat_metrics_zone(ngx_conf_t *cf);
ngx_int_t ngx_chat_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_CHAT_METRICS_H_INCLUDED_ */
