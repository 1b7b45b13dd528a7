
/*
 * JSON answers of the HTTP API: one way to reply, one way to fail
 * (PROTOCOL.md: {"error":{"code","message"}}).
 */

#ifndef _NGX_CHAT_JSON_H_INCLUDED_
#define _NGX_CHAT_JSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


ngx_int_t ngx_chat_json_reply(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json);
ngx_int_t ngx_chat_json_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);
ngx_int_t ngx_chat_http_header(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len);
typedef struct {
    ngx_list_part_t        *part;
    ngx_uint_t              i;
} ngx_chat_http_headers_t;

ngx_table_elt_t *ngx_chat_http_header_in(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_table_elt_t *ngx_chat_http_header_next(ngx_http_request_t *r,
    ngx_str_t *name, ngx_chat_http_headers_t *it);
ngx_int_t ngx_chat_json_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);


#endif /* _NGX_CHAT_JSON_H_INCLUDED_ */
