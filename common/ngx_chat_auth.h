
/*
 * Device tokens, shared by the HTTP API and the WebSocket session.
 *
 * A token is 32 random bytes, shown once to its device as base64url
 * without padding (43 characters) and stored only as its SHA-256:
 *
 *     ngx_chat_auth_token(pool, &token, &hash);   -> hash: bytea parameter
 *
 *     if (!ngx_chat_auth_token_valid(&token)) -> unauthorized now
 *     q = ngx_chat_auth_check(&token, handler, data, pool, log);
 *     if (q == NULL) -> PostgreSQL unavailable now
 *     ... handler(data, rc, identity) runs later, once, unless
 *         ngx_chat_pg_cancel(q)
 *
 * rc is NGX_OK (identity holds the caller's ids, valid until the handler
 * returns: copy what you keep), NGX_DECLINED (unknown or revoked token),
 * or NGX_ERROR (PostgreSQL unavailable); identity is NULL unless NGX_OK.
 * The handler is never called before ngx_chat_auth_check() returns.
 */

#ifndef _NGX_CHAT_AUTH_H_INCLUDED_
#define _NGX_CHAT_AUTH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_pg.h"


#define NGX_CHAT_AUTH_TOKEN_LEN  43     /* base64url of 32 bytes */
#define NGX_CHAT_AUTH_HASH_LEN   66     /* "\x" and 64 hex digits */


typedef struct {
    ngx_str_t               user_id;
    ngx_str_t               device_id;
    u_char                  data[2 * NGX_INT64_LEN];
} ngx_chat_auth_identity_t;


typedef void (*ngx_chat_auth_handler_pt)(void *data, ngx_int_t rc,
    ngx_chat_auth_identity_t *identity);


ngx_int_t ngx_chat_auth_token(ngx_pool_t *pool, ngx_str_t *token,
    ngx_str_t *hash);
ngx_uint_t ngx_chat_auth_token_valid(ngx_str_t *token);
ngx_int_t ngx_chat_auth_bearer(ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_chat_auth_key(ngx_http_request_t *r, ngx_str_t *key);

ngx_chat_pg_query_t *ngx_chat_auth_check(ngx_str_t *token,
    ngx_chat_auth_handler_pt handler, void *data, ngx_pool_t *pool,
    ngx_log_t *log);


#endif /* _NGX_CHAT_AUTH_H_INCLUDED_ */
