
/*
 * permessage-deflate (RFC 7692) with zlib.
 *
 * Outbound: the server always announces server_no_context_takeover, so
 * every message is compressed on its own and one deflate stream per window
 * size serves the whole worker: a connection holds no compressor state.
 *
 * Inbound: a connection holds an inflate stream only while it needs one:
 * for one message when the client resets its context per message, for the
 * connection's life when the client keeps its context (takeover).  The
 * inflated size is bounded by chat_ws_max_message_size as it grows.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <zlib.h>

#include "ngx_chat_ws_conn.h"


#define NGX_CHAT_WS_DEFLATE_MIN    64    /* smaller messages go as they are */
#define NGX_CHAT_WS_DEFLATE_LEVEL  1     /* chat payloads are short */


static z_stream  *ngx_chat_ws_deflaters[16];    /* by window bits */
static u_char    *ngx_chat_ws_deflate_buf;
static size_t     ngx_chat_ws_deflate_size;


/* the result stays valid until the next call */

ngx_int_t
ngx_chat_ws_deflate_message(ngx_chat_ws_conn_t *wc, u_char *data, size_t len,
    ngx_str_t *out)
{
    int          rc;
    size_t       size, n;
    u_char      *p;
    z_stream    *z;
    ngx_uint_t   bits;

    if (len < NGX_CHAT_WS_DEFLATE_MIN) {
        return NGX_DECLINED;
    }

    bits = wc->deflate.server_max_window_bits
           ? wc->deflate.server_max_window_bits : 15;

    z = ngx_chat_ws_deflaters[bits];

    if (z == NULL) {
        z = ngx_calloc(sizeof(z_stream), wc->connection->log);
        if (z == NULL) {
            return NGX_ERROR;
        }

        rc = deflateInit2(z, NGX_CHAT_WS_DEFLATE_LEVEL, Z_DEFLATED,
                          - (int) bits, 8, Z_DEFAULT_STRATEGY);

        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, wc->connection->log, 0,
                          "deflateInit2() failed: %d", rc);
            ngx_free(z);
            return NGX_ERROR;
        }

        ngx_chat_ws_deflaters[bits] = z;

    } else {
        deflateReset(z);
    }

    /* room for a flush marker and an empty block beyond the bound */

    size = deflateBound(z, len) + 16;

    if (size > ngx_chat_ws_deflate_size) {
        p = ngx_alloc(size, wc->connection->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_chat_ws_deflate_buf) {
            ngx_free(ngx_chat_ws_deflate_buf);
        }

        ngx_chat_ws_deflate_buf = p;
        ngx_chat_ws_deflate_size = size;
    }

    z->next_in = data;
    z->avail_in = len;
    z->next_out = ngx_chat_ws_deflate_buf;
    z->avail_out = ngx_chat_ws_deflate_size;

    rc = deflate(z, Z_SYNC_FLUSH);

    if (rc != Z_OK || z->avail_in != 0 || z->avail_out == 0) {
        ngx_log_error(NGX_LOG_ALERT, wc->connection->log, 0,
                      "deflate() failed: %d", rc);
        return NGX_ERROR;
    }

    n = ngx_chat_ws_deflate_size - z->avail_out;
    p = ngx_chat_ws_deflate_buf;

    /* the empty stored block of the flush is implied (RFC 7692, 7.2.1) */

    if (n >= 4 && p[n - 4] == 0 && p[n - 3] == 0
        && p[n - 2] == 0xff && p[n - 1] == 0xff)
    {
        n -= 4;
    }

    out->data = p;
    out->len = n;

    return NGX_OK;
}


/*
 * Inflates a chunk of a compressed message into wc->msg; with last set,
 * finishes the message with the tail the sender stripped.  A protocol
 * fault closes the connection and still returns NGX_OK.
 */

ngx_int_t
ngx_chat_ws_inflate(ngx_chat_ws_conn_t *wc, u_char *data, size_t len,
    ngx_uint_t last)
{
    int        rc;
    size_t     max, room, produced;
    z_stream  *z;

    static u_char  tail[] = { 0x00, 0x00, 0xff, 0xff };

    z = wc->inflate;

    if (z == NULL) {
        z = ngx_calloc(sizeof(z_stream), wc->connection->log);
        if (z == NULL) {
            return NGX_ERROR;
        }

        rc = inflateInit2(z, -15);

        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, wc->connection->log, 0,
                          "inflateInit2() failed: %d", rc);
            ngx_free(z);
            return NGX_ERROR;
        }

        wc->inflate = z;
    }

    if (last) {
        data = tail;
        len = sizeof(tail);
    }

    max = wc->conf->max_message_size;

    z->next_in = data;
    z->avail_in = len;

    for ( ;; ) {

        if (wc->msg_len == wc->msg_size) {
            if (wc->msg_size > max) {
                break;
            }

            if (ngx_chat_ws_msg_reserve(wc, ngx_min(max + 1,
                                        ngx_max(wc->msg_size * 2,
                                                ngx_max(len * 4, 1024))))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        room = wc->msg_size - wc->msg_len;
        z->next_out = wc->msg + wc->msg_len;
        z->avail_out = room;

        rc = inflate(z, Z_SYNC_FLUSH);

        produced = room - z->avail_out;

        if (wc->msg_opcode == NGX_CHAT_WS_OP_TEXT
            && ngx_chat_ws_utf8_feed(&wc->utf8, wc->msg + wc->msg_len,
                                     produced) != NGX_OK)
        {
            ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_BAD_DATA,
                              "invalid UTF-8 in a text message");
            return NGX_OK;
        }

        wc->msg_len += produced;

        if (rc == Z_STREAM_END) {
            /* a final block: what follows starts a new stream */
            inflateReset(z);

        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            ngx_log_error(NGX_LOG_INFO, wc->connection->log, 0,
                          "websocket client error: bad deflate data (%d)",
                          rc);
            ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_BAD_DATA,
                              "invalid compressed data");
            return NGX_OK;
        }

        if (z->avail_out != 0 && (z->avail_in == 0 || produced == 0)) {
            break;
        }
    }

    if (wc->msg_len > max) {
        ngx_log_error(NGX_LOG_INFO, wc->connection->log, 0,
                      "websocket client error: inflated message over %uz "
                      "bytes, closing with 1009", max);
        ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_TOO_BIG, "message too big");
    }

    return NGX_OK;
}


void
ngx_chat_ws_inflate_end(ngx_chat_ws_conn_t *wc)
{
    if (wc->inflate) {
        inflateEnd(wc->inflate);
        ngx_free(wc->inflate);
        wc->inflate = NULL;
    }
}


void
ngx_chat_ws_deflate_exit(void)
{
    ngx_uint_t  i;

    for (i = 0; i < 16; i++) {
        if (ngx_chat_ws_deflaters[i]) {
            deflateEnd(ngx_chat_ws_deflaters[i]);
            ngx_free(ngx_chat_ws_deflaters[i]);
            ngx_chat_ws_deflaters[i] = NULL;
        }
    }

    if (ngx_chat_ws_deflate_buf) {
        ngx_free(ngx_chat_ws_deflate_buf);
        ngx_chat_ws_deflate_buf = NULL;
        ngx_chat_ws_deflate_size = 0;
    }
}
