
/*
 * The features of a chat session (ngx_chat_session.h), each in its own
 * file; ngx_chat_module.c lists them for the session core.
 */

#ifndef _NGX_CHAT_FEATURES_H_INCLUDED_
#define _NGX_CHAT_FEATURES_H_INCLUDED_


#include "ngx_chat_session.h"


extern ngx_chat_feature_t  ngx_chat_sync_feature;      /* the sync */
extern ngx_chat_feature_t  ngx_chat_send_feature;      /* "send" */
extern ngx_chat_feature_t  ngx_chat_ack_feature;       /* "ack" */
extern ngx_chat_feature_t  ngx_chat_receipt_feature;   /* "read", receipts */
extern ngx_chat_feature_t  ngx_chat_presence_feature;  /* "presence" */
extern ngx_chat_feature_t  ngx_chat_revoke_feature;    /* unlinked devices */
extern ngx_chat_feature_t  ngx_chat_ping_feature;      /* "ping" */


#endif /* _NGX_CHAT_FEATURES_H_INCLUDED_ */
