
/*
 * A chat session: the state machine of one authenticated WebSocket
 * (PROTOCOL.md, section 4).
 */

#ifndef _NGX_CHAT_SESSION_H_INCLUDED_
#define _NGX_CHAT_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_CHAT_CLOSE_UNAUTHORIZED   4001
#define NGX_CHAT_CLOSE_AUTH_TIMEOUT   4002
#define NGX_CHAT_CLOSE_TRY_AGAIN      1013   /* PostgreSQL unavailable */

#define NGX_CHAT_ID_LEN               20     /* a bigint in decimal */


ngx_int_t ngx_chat_session_init_worker(ngx_cycle_t *cycle);
ngx_uint_t ngx_chat_session_count(void);


#endif /* _NGX_CHAT_SESSION_H_INCLUDED_ */
