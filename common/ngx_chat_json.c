
/*
 * JSON replies for the HTTP API.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_json.h"


/*
 * Sends json and returns what a content handler returns, so a handler
 * can end with "return ngx_chat_json_reply(r, NGX_HTTP_OK, json_pack(...));".
 * It takes the reference: json is released here, and NULL (a failed
 * json_pack) is a 500.
 */

ngx_int_t
ngx_chat_json_reply(ngx_http_request_t *r, ngx_uint_t status, json_t *json)
{
    char       *body;
    ngx_int_t   rc;

    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body = json_dumps(json, JSON_COMPACT);
    json_decref(json);

    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_chat_json_send(r, status, (u_char *) body, ngx_strlen(body));

    free(body);

    return rc;
}


/* PROTOCOL.md's error body: {"error":{"code","message"}} */

ngx_int_t
ngx_chat_json_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    return ngx_chat_json_reply(r, status,
                               json_pack("{s:{s:s,s:s}}", "error",
                                         "code", code, "message", message));
}


/* body is copied: the caller keeps ownership */

ngx_int_t
ngx_chat_json_send(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len + 1;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, body, len);
    *b->last++ = '\n';
    b->last_buf = (r == r->main);
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/* adds a response header; name is a literal, value lives in r->pool */

ngx_int_t
ngx_chat_http_header(ngx_http_request_t *r, const char *name, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/* the first request header of that name (any case), or NULL */

ngx_table_elt_t *
ngx_chat_http_header_in(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_chat_http_headers_t  it;

    it.part = NULL;

    return ngx_chat_http_header_next(r, name, &it);
}


/*
 * The request headers of that name (any case), as they may repeat:
 *
 *     it.part = NULL;
 *     while ((h = ngx_chat_http_header_next(r, &name, &it))) { ... }
 */

ngx_table_elt_t *
ngx_chat_http_header_next(ngx_http_request_t *r, ngx_str_t *name,
    ngx_chat_http_headers_t *it)
{
    ngx_table_elt_t  *h;

    if (it->part == NULL) {
        it->part = &r->headers_in.headers.part;
        it->i = 0;
    }

    for ( ;; ) {

        if (it->i >= it->part->nelts) {
            if (it->part->next == NULL) {
                return NULL;
            }

            it->part = it->part->next;
            it->i = 0;
            continue;
        }

        h = (ngx_table_elt_t *) it->part->elts + it->i++;

        if (h->key.len == name->len
            && ngx_strncasecmp(h->key.data, name->data, name->len) == 0)
        {
            return h;
        }
    }
}
