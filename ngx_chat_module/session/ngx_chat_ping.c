
/*
 * "ping" (PROTOCOL.md, section 4): {"type":"pong","t"} with the same "t",
 * for clients that cannot see WebSocket pings (browsers).
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"


static void ngx_chat_ping(ngx_chat_session_t *s, json_t *msg);


static ngx_chat_command_t  ngx_chat_ping_commands[] = {
    { ngx_string("ping"), ngx_chat_ping },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_ping_feature = {
    .name = "ping",
    .commands = ngx_chat_ping_commands,
};


static void
ngx_chat_ping(ngx_chat_session_t *s, json_t *msg)
{
    (void) ngx_chat_session_send(s, NGX_CHAT_OUT_PONG,
                                 json_pack("{s:s,s:O?}", "type", "pong",
                                           "t", json_object_get(msg, "t")));
}
