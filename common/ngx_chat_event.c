
/*
 * nginx's debug log of timers and posted events reads ev->data as a
 * connection (ngx_event_ident()): events of no connection point at one
 * that holds no socket.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_chat_event.h"


static ngx_connection_t  ngx_chat_event_none;


void
ngx_chat_event_init(ngx_event_t *ev, ngx_event_handler_pt handler,
    ngx_log_t *log)
{
    ngx_chat_event_none.fd = (ngx_socket_t) -1;

    ev->handler = handler;
    ev->data = &ngx_chat_event_none;
    ev->log = log;
}
