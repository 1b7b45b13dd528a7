
/*
 * A WebSocket connection: takes over an HTTP/1.1 connection after the
 * handshake, reads and reassembles messages, queues outbound frames with
 * a bound, keeps the connection alive and closes it cleanly.  Its owner
 * (the echo endpoint, a chat session) sees whole messages only.
 */

#ifndef _NGX_CHAT_WS_CONN_H_INCLUDED_
#define _NGX_CHAT_WS_CONN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws.h"


typedef struct ngx_chat_ws_conn_s   ngx_chat_ws_conn_t;
typedef struct ngx_chat_ws_block_s  ngx_chat_ws_block_t;


/* what an owner plugs into a connection */
typedef struct {
    /* the connection is open; may send or close */
    void                  (*opened)(ngx_chat_ws_conn_t *wc);

    /* one whole text or binary message, valid until the call returns */
    void                  (*message)(ngx_chat_ws_conn_t *wc,
                                     ngx_uint_t opcode, u_char *data,
                                     size_t len);

    /*
     * The peer sent a close frame with this code: NGX_AGAIN defers the
     * answer, which the owner then gives with ngx_chat_ws_close().
     */
    ngx_int_t             (*closing)(ngx_chat_ws_conn_t *wc, ngx_uint_t code);

    /* everything queued was written: a paced producer may go on */
    void                  (*drained)(ngx_chat_ws_conn_t *wc);

    /* the connection is about to be freed; must not send */
    void                  (*closed)(ngx_chat_ws_conn_t *wc);

    size_t                  data_size;   /* owner state, in wc->data */
} ngx_chat_ws_handler_t;


typedef enum {
    NGX_CHAT_WS_OPEN = 0,
    NGX_CHAT_WS_CLOSING,                 /* our close frame is queued */
    NGX_CHAT_WS_CLOSED                   /* waiting to be freed */
} ngx_chat_ws_state_e;


typedef enum {
    NGX_CHAT_WS_READ_HEADER = 0,
    NGX_CHAT_WS_READ_PAYLOAD
} ngx_chat_ws_read_state_e;


struct ngx_chat_ws_conn_s {
    ngx_connection_t       *connection;
    ngx_chat_ws_conf_t     *conf;
    ngx_chat_ws_handler_t  *handler;
    void                   *data;        /* the owner's state */
    ngx_queue_t             queue;       /* in the worker's list */

    ngx_chat_ws_state_e     state;
    ngx_chat_ws_read_state_e  read_state;

    /* input: a buffer only while bytes of a frame are in flight */
    u_char                 *in;
    size_t                  in_len;
    size_t                  in_size;
    ngx_chat_ws_frame_t     frame;
    uint64_t                frame_off;   /* payload bytes already taken */

    /* the message being reassembled */
    u_char                 *msg;
    size_t                  msg_len;
    size_t                  msg_size;
    size_t                  msg_wire;    /* payload bytes as received */
    ngx_uint_t              msg_opcode;  /* 0: none in progress */
    ngx_chat_ws_utf8_t      utf8;
    void                   *inflate;     /* z_stream, while needed */

    /* output: a queue of blocks that never move once written to */
    ngx_chat_ws_block_t    *out;
    ngx_chat_ws_block_t    *out_last;
    size_t                  queued;

    ngx_msec_t              last_in;     /* when a frame last arrived */
    ngx_chat_ws_deflate_t   deflate;
    ngx_uint_t              close_code;  /* what we sent, for the log */

    unsigned                msg_compressed:1;
    unsigned                pinged:1;
    unsigned                close_received:1;
    unsigned                close_flushed:1;
    unsigned                broken:1;    /* input is garbage: discard */
    unsigned                going_away:1;  /* the worker exits */
};


ngx_int_t ngx_chat_ws_upgrade(ngx_http_request_t *r, ngx_chat_ws_conf_t *conf,
    ngx_chat_ws_handler_t *handler, ngx_chat_ws_conn_t **wcp);
ngx_int_t ngx_chat_ws_send(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len);
void ngx_chat_ws_close(ngx_chat_ws_conn_t *wc, ngx_uint_t code,
    const char *reason);

/* ngx_chat_ws_handshake.c hands the detached connection over with these */
ngx_int_t ngx_chat_ws_conn_start(ngx_chat_ws_conn_t *wc, u_char *pending,
    size_t n);
void ngx_chat_ws_conn_run(ngx_chat_ws_conn_t *wc);

/* ngx_chat_ws_deflate.c */
ngx_int_t ngx_chat_ws_msg_reserve(ngx_chat_ws_conn_t *wc, size_t size);
ngx_int_t ngx_chat_ws_inflate(ngx_chat_ws_conn_t *wc, u_char *data, size_t len,
    ngx_uint_t last);
void ngx_chat_ws_inflate_end(ngx_chat_ws_conn_t *wc);
ngx_int_t ngx_chat_ws_deflate_message(ngx_chat_ws_conn_t *wc, u_char *data,
    size_t len, ngx_str_t *out);
void ngx_chat_ws_deflate_exit(void);

ngx_int_t ngx_chat_ws_init_worker(ngx_cycle_t *cycle);
void ngx_chat_ws_exit_worker(ngx_cycle_t *cycle);
ngx_uint_t ngx_chat_ws_connections(void);


#endif /* _NGX_CHAT_WS_CONN_H_INCLUDED_ */
