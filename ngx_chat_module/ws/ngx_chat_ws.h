
/*
 * RFC 6455 / RFC 7692 codec: frame headers, masking, UTF-8 validation,
 * close codes and handshake values.  Pure functions over buffers: nothing
 * here does I/O or allocates.
 */

#ifndef _NGX_CHAT_WS_H_INCLUDED_
#define _NGX_CHAT_WS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_CHAT_WS_OP_CONT          0x0
#define NGX_CHAT_WS_OP_TEXT          0x1
#define NGX_CHAT_WS_OP_BINARY        0x2
#define NGX_CHAT_WS_OP_CLOSE         0x8
#define NGX_CHAT_WS_OP_PING          0x9
#define NGX_CHAT_WS_OP_PONG          0xa

#define ngx_chat_ws_is_control(op)   ((op) & 0x8)

#define NGX_CHAT_WS_CONTROL_MAX      125
#define NGX_CHAT_WS_HEADER_MAX       14      /* 2 + 8 length + 4 mask */

#define NGX_CHAT_WS_CLOSE_NORMAL     1000
#define NGX_CHAT_WS_CLOSE_GOING_AWAY 1001
#define NGX_CHAT_WS_CLOSE_PROTOCOL   1002
#define NGX_CHAT_WS_CLOSE_BAD_DATA   1007
#define NGX_CHAT_WS_CLOSE_POLICY     1008
#define NGX_CHAT_WS_CLOSE_TOO_BIG    1009
#define NGX_CHAT_WS_CLOSE_ERROR      1011

#define NGX_CHAT_WS_ACCEPT_LEN       28      /* base64 of a SHA-1 digest */


typedef struct {
    uint64_t                len;
    u_char                  mask[4];
    ngx_uint_t              opcode;
    unsigned                fin:1;
    unsigned                rsv1:1;
    unsigned                rsv2:1;
    unsigned                rsv3:1;
    unsigned                masked:1;
} ngx_chat_ws_frame_t;


/* an incremental UTF-8 validator: zero-initialise, feed, check complete */
typedef struct {
    u_char                  need;    /* continuation bytes still expected */
    u_char                  lo;      /* range of the next continuation */
    u_char                  hi;
} ngx_chat_ws_utf8_t;


/* permessage-deflate parameters agreed in the handshake */
typedef struct {
    unsigned                enabled:1;
    unsigned                client_no_context_takeover:1;
    unsigned                client_max_window_bits_offered:1;
    ngx_uint_t              client_max_window_bits;  /* 0: none echoed */
    ngx_uint_t              server_max_window_bits;  /* 0: none echoed */
} ngx_chat_ws_deflate_t;


ssize_t ngx_chat_ws_parse_header(u_char *p, size_t n, ngx_chat_ws_frame_t *f);
void ngx_chat_ws_unmask(u_char *p, size_t n, u_char mask[4], uint64_t offset);
size_t ngx_chat_ws_header_size(uint64_t len);
u_char *ngx_chat_ws_write_header(u_char *p, ngx_uint_t opcode, ngx_uint_t rsv1,
    uint64_t len);

ngx_int_t ngx_chat_ws_utf8_feed(ngx_chat_ws_utf8_t *u, u_char *p, size_t n);
#define ngx_chat_ws_utf8_complete(u)  ((u)->need == 0)

ngx_uint_t ngx_chat_ws_close_code_valid(ngx_uint_t code);

ngx_int_t ngx_chat_ws_key_valid(ngx_str_t *key);
void ngx_chat_ws_accept_key(ngx_str_t *key, u_char *out);
ngx_uint_t ngx_chat_ws_has_token(ngx_str_t *value, ngx_str_t *token);
ngx_str_t *ngx_chat_ws_known_protocol(ngx_str_t *value, ngx_array_t *known);
ngx_int_t ngx_chat_ws_deflate_offer(ngx_str_t *offer, ngx_chat_ws_deflate_t *d);
u_char *ngx_chat_ws_deflate_response(u_char *p, ngx_chat_ws_deflate_t *d);
#define NGX_CHAT_WS_DEFLATE_RESPONSE_MAX                                      \
    (sizeof("permessage-deflate; server_no_context_takeover; "                \
            "client_no_context_takeover; server_max_window_bits=15; "         \
            "client_max_window_bits=15") - 1)


#endif /* _NGX_CHAT_WS_H_INCLUDED_ */
