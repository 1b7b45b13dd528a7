
/*
 * chat_ws_echo: a WebSocket endpoint that sends every message back as it
 * came.  It runs on the same connection code, limits, deflate and
 * keepalive as the chat endpoint, which makes it the target for
 * conformance suites such as Autobahn's.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_ws_conn.h"


static void ngx_chat_echo_message(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len);


static ngx_chat_ws_handler_t  ngx_chat_echo = {
    NULL,                                  /* opened */
    ngx_chat_echo_message,                 /* message */
    NULL,                                  /* closing */
    NULL,                                  /* drained */
    NULL,                                  /* closed */
    0                                      /* data_size */
};


ngx_int_t
ngx_chat_echo_handler(ngx_http_request_t *r)
{
    ngx_chat_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);

    return ngx_chat_ws_upgrade(r, &clcf->ws, &ngx_chat_echo, NULL);
}


static void
ngx_chat_echo_message(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    /* a client too slow to take its echo is closed by the queue bound */
    (void) ngx_chat_ws_send(wc, opcode, data, len);
}
