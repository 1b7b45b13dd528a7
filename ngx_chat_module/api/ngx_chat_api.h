
/*
 * The HTTP API front (chat_api): routing, body, auth, and the async
 * round trips of its endpoints.
 *
 * An endpoint is one function, called first when the request is routed,
 * authenticated (ctx->user_id, ctx->device_id) and its JSON body parsed
 * (ctx->body), then again with each result it waited for (ctx->res or
 * ctx->reply), its progress in ctx->step.  It returns NGX_DONE after
 * starting a round trip with ngx_chat_api_query() or
 * ngx_chat_api_command(), or else what ended the request: the return
 * value of ngx_chat_json_reply(), ngx_chat_json_error(), or an HTTP
 * status such as NGX_HTTP_NO_CONTENT.
 *
 * PostgreSQL errors and broken Redis links never reach an endpoint: the
 * front answers 503 unavailable for them.
 */

#ifndef _NGX_CHAT_API_H_INCLUDED_
#define _NGX_CHAT_API_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_module.h"
#include "ngx_chat_json.h"


#define NGX_CHAT_API_AUTH   1               /* Authorization: Bearer */
#define NGX_CHAT_API_BODY   2               /* a JSON object */
#define NGX_CHAT_API_TOKEN  4               /* or ?token= (EventSource) */

#define NGX_CHAT_API_ID_LEN  19             /* a positive bigint */
#define NGX_CHAT_API_IDS     2              /* {...} in a path, at most */


typedef struct ngx_chat_api_ctx_s  ngx_chat_api_ctx_t;

typedef ngx_int_t (*ngx_chat_api_handler_pt)(ngx_chat_api_ctx_t *ctx);


typedef struct {
    ngx_uint_t                method;       /* NGX_HTTP_GET, ... */
    ngx_str_t                 path;         /* after /v1/; {id}s */
    ngx_chat_api_handler_pt   handler;
    ngx_uint_t                flags;        /* NGX_CHAT_API_AUTH, _BODY */
    size_t                    data_size;    /* ctx->data, zeroed */
} ngx_chat_api_route_t;


struct ngx_chat_api_ctx_s {
    ngx_http_request_t       *request;
    ngx_chat_api_route_t     *route;
    ngx_chat_main_conf_t     *conf;

    ngx_str_t                 id;           /* {id} of the path: an ID */
    ngx_str_t                 id2;          /* a second one, or empty */
    ngx_str_t                 token;        /* the bearer token */
    ngx_str_t                 user_id;      /* the caller, once checked */
    ngx_str_t                 device_id;
    json_t                   *body;         /* NGX_CHAT_API_BODY routes */

    ngx_uint_t                phase;        /* of the front, see .c */
    ngx_uint_t                step;         /* of the endpoint, 0 first */
    void                     *data;         /* of the endpoint */

    PGresult                 *res;          /* while the endpoint runs */
    redisReply               *reply;

    ngx_chat_pg_query_t      *query;        /* in flight */
    ngx_chat_redis_cmd_t     *cmd;

    u_char                   *buf;          /* the body as read */
    size_t                    len;
    size_t                    size;

    unsigned                  done:1;       /* finalized */
    unsigned                  taken:1;      /* the endpoint holds the
                                               request and ends it with
                                               ngx_chat_api_finish() */
};


ngx_int_t ngx_chat_api_query(ngx_chat_api_ctx_t *ctx, const char *sql,
    ngx_uint_t nparams, ngx_str_t *params);
ngx_int_t ngx_chat_api_command(ngx_chat_api_ctx_t *ctx,
    ngx_chat_redis_cmd_t *cmd);
ngx_int_t ngx_chat_api_redis(ngx_chat_api_ctx_t *ctx, const char *format,
    ...);
void ngx_chat_api_redis_handler(void *data, redisReply *reply);

void ngx_chat_api_finish(ngx_chat_api_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_chat_api_unavailable(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_api_bad_request(ngx_chat_api_ctx_t *ctx,
    const char *message);
ngx_int_t ngx_chat_api_rate_limited(ngx_chat_api_ctx_t *ctx,
    time_t retry_after);

ngx_int_t ngx_chat_api_string(ngx_chat_api_ctx_t *ctx, const char *name,
    ngx_str_t *value);
ngx_int_t ngx_chat_api_id_valid(ngx_str_t *id);
ngx_int_t ngx_chat_api_key_valid(ngx_str_t *key);
ngx_int_t ngx_chat_api_serve(ngx_http_request_t *r,
    ngx_chat_api_route_t *routes);
ngx_int_t ngx_chat_api_device_key(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_uint_t ngx_chat_api_text_valid(ngx_str_t *text, size_t max);


/* ngx_chat_accounts.c */

/* what an accounts endpoint keeps between its steps (ctx->data) */
typedef struct {
    ngx_str_t                 mobile;
    ngx_str_t                 code;
    ngx_str_t                 name;             /* of the new device */
    ngx_str_t                 token;
    ngx_str_t                 hash;
    ngx_str_t                 user_id;
    ngx_str_t                 about;            /* of a user looked at */
    ngx_uint_t                last_seen;        /* ... may be shown */
} ngx_chat_accounts_ctx_t;

#define NGX_CHAT_ACCOUNTS_DATA  sizeof(ngx_chat_accounts_ctx_t)

ngx_int_t ngx_chat_accounts_register(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_verify(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_link_code(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_link(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_devices(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_unlink(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_me(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_privacy(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_lookup(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_accounts_user(ngx_chat_api_ctx_t *ctx);


/* ngx_chat_chats.c */

ngx_int_t ngx_chat_chats_create(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_chats_list(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_chats_get(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_chats_update(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_chats_add_member(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_chats_remove_member(ngx_chat_api_ctx_t *ctx);


/* ngx_chat_events.c: the HTTP fallback transport */

ngx_int_t ngx_chat_events_get(ngx_chat_api_ctx_t *ctx);
ngx_int_t ngx_chat_events_call(ngx_chat_api_ctx_t *ctx);


/* ngx_chat_presence.c: what the API reads and tells of a user */

ngx_chat_redis_cmd_t *ngx_chat_presence_fetch(ngx_str_t *user,
    ngx_chat_redis_handler_pt handler, void *data, ngx_log_t *log);
ngx_int_t ngx_chat_presence_parse(redisReply *reply, ngx_uint_t *online,
    int64_t *last_seen);
void ngx_chat_presence_profile(ngx_str_t *user, ngx_str_t *about,
    ngx_log_t *log);


#endif /* _NGX_CHAT_API_H_INCLUDED_ */
