
/*
 * Events that belong to no connection: timers and posted work of a
 * worker (sweeps, batches, dispatch).
 */

#ifndef _NGX_CHAT_EVENT_H_INCLUDED_
#define _NGX_CHAT_EVENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


void ngx_chat_event_init(ngx_event_t *ev, ngx_event_handler_pt handler,
    ngx_log_t *log);


#endif /* _NGX_CHAT_EVENT_H_INCLUDED_ */
