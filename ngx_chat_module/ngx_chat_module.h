
/*
 * ngx_chat_module: shared types.
 */

#ifndef _NGX_CHAT_MODULE_H_INCLUDED_
#define _NGX_CHAT_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_pg.h"
#include "ngx_chat_redis.h"


/* WebSocket settings, shared by chat_ws_echo and the chat endpoint */
typedef struct {
    size_t                  max_message_size;  /* inbound, after inflate */
    size_t                  send_queue;        /* outbound bytes not sent */
    ngx_msec_t              ping_interval;     /* 0: no keepalive pings */
    ngx_msec_t              idle_timeout;      /* nothing received: close */
    ngx_msec_t              close_timeout;     /* wait for the peer's close */
    ngx_flag_t              deflate;           /* permessage-deflate */
    ngx_flag_t              deflate_client_takeover;
    ngx_array_t            *protocols;         /* of ngx_str_t, or NULL */
} ngx_chat_ws_conf_t;


typedef struct {
    ngx_chat_pg_conf_t      pg;
    ngx_chat_redis_conf_t   redis;
    ngx_shm_zone_t         *metrics_zone;      /* this configuration's */
    ngx_shm_zone_t         *rate_zone;         /* chat_send_rate's, if any */
    ngx_msec_t              redis_down_poll;   /* chat_redis_down_poll */
    ngx_flag_t              dev_codes;         /* codes in API answers */
    ngx_uint_t              max_devices;       /* per user */
    ngx_uint_t              max_group_size;    /* members of a group */
    ngx_str_t               sms_relay;         /* location URI, or empty */
    size_t                  api_max_body;      /* request body bound */
    time_t                  message_ttl;       /* chat_message_ttl */
    time_t                  resend_window;     /* chat_resend_window */
    ngx_msec_t              expire_interval;   /* sweeps, from both */
    ngx_msec_t              presence_lease;    /* a worker's hold on a user */
    ngx_msec_t              presence_debounce; /* away that long: offline */
    ngx_msec_t              device_check;      /* unlinked devices' sockets */
    ngx_uint_t              verify_budget;     /* wrong codes a number */
    time_t                  verify_lock;       /* ... then locked that long */
    ngx_uint_t              codes_per_minute;  /* sent, by everyone */
} ngx_chat_main_conf_t;


typedef struct {
    ngx_chat_ws_conf_t      ws;
    ngx_msec_t              auth_timeout;      /* chat_ws: until "auth" */
    size_t                  max_text;          /* chat_max_message_size */
    ngx_uint_t              sync_batch;        /* messages per sync query */
    ngx_msec_t              gap_wait;          /* for a missing seq */
    ngx_uint_t              send_rate;         /* sends a second, 0: off */
    ngx_uint_t              send_burst;
} ngx_chat_loc_conf_t;


extern ngx_module_t  ngx_chat_module;


ngx_int_t ngx_chat_expire_init_worker(ngx_chat_main_conf_t *cmcf,
    ngx_cycle_t *cycle);
void ngx_chat_expire_exit_worker(void);

ngx_int_t ngx_chat_echo_handler(ngx_http_request_t *r);
ngx_int_t ngx_chat_api_handler(ngx_http_request_t *r);       /* chat_api */
ngx_int_t ngx_chat_session_handler(ngx_http_request_t *r);   /* chat_ws */


#endif /* _NGX_CHAT_MODULE_H_INCLUDED_ */
