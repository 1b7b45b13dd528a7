
/*
 * A WebSocket connection after the handshake: reading and reassembling
 * frames, the bounded output queue, keepalive, and the closing handshake
 * (RFC 6455, sections 5 and 7).
 *
 * Only the three event handlers at the top (read, write, and the timers
 * on the read event) ever free a connection, and only at their end; the
 * rest reports by changing wc->state, so an owner's callback can never be
 * left holding a freed connection.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_ws_conn.h"


#define NGX_CHAT_WS_READ_SIZE    16384
#define NGX_CHAT_WS_READ_ROUNDS  16       /* reads per event, then yield */
#define NGX_CHAT_WS_BLOCK_SIZE   4096

/*
 * A worker that exits (reload, shutdown) waits this long at most for a
 * peer's close frame: a peer in the middle of a frame cannot send one
 * before it finishes that frame, and may never.
 */
#define NGX_CHAT_WS_EXIT_CLOSE_WAIT  1000


struct ngx_chat_ws_block_s {
    ngx_chat_ws_block_t    *next;
    u_char                 *pos;
    u_char                 *last;
    u_char                 *end;
};


static void ngx_chat_ws_read_handler(ngx_event_t *rev);
static void ngx_chat_ws_write_handler(ngx_event_t *wev);
static void ngx_chat_ws_finalize(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_read(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_process(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_frame_start(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_payload(ngx_chat_ws_conn_t *wc, u_char *p,
    size_t n);
static ngx_int_t ngx_chat_ws_message_end(ngx_chat_ws_conn_t *wc);
static void ngx_chat_ws_message_reset(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_control(ngx_chat_ws_conn_t *wc, u_char *p,
    size_t n);
static ngx_int_t ngx_chat_ws_fail(ngx_chat_ws_conn_t *wc, ngx_uint_t code,
    const char *reason);
static void ngx_chat_ws_keepalive(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_ws_queue(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    ngx_uint_t rsv1, u_char *data, size_t len);
static ngx_int_t ngx_chat_ws_queue_bounded(ngx_chat_ws_conn_t *wc,
    ngx_uint_t opcode, ngx_uint_t rsv1, u_char *data, size_t len);
static ngx_int_t ngx_chat_ws_flush(ngx_chat_ws_conn_t *wc);


static ngx_queue_t  ngx_chat_ws_all;     /* this worker's connections */
static ngx_uint_t   ngx_chat_ws_count;


ngx_int_t
ngx_chat_ws_conn_start(ngx_chat_ws_conn_t *wc, u_char *pending, size_t n)
{
    ngx_connection_t  *c;

    c = wc->connection;

    if (n) {
        wc->in_size = ngx_max(n, NGX_CHAT_WS_READ_SIZE);

        wc->in = ngx_alloc(wc->in_size, c->log);
        if (wc->in == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(wc->in, pending, n);
        wc->in_len = n;
    }

    if (ngx_tcp_nodelay(c) != NGX_OK) {
        return NGX_ERROR;
    }

    c->read->handler = ngx_chat_ws_read_handler;
    c->write->handler = ngx_chat_ws_write_handler;
    c->log->action = "serving websocket";

    /* ngx_close_idle_connections() tells us of a reload or shutdown */
    c->idle = 1;

    wc->last_in = ngx_current_msec;

    ngx_queue_insert_tail(&ngx_chat_ws_all, &wc->queue);
    ngx_chat_ws_count++;

    ngx_add_timer(c->read, wc->conf->ping_interval
                           ? ngx_min(wc->conf->ping_interval,
                                     wc->conf->idle_timeout)
                           : wc->conf->idle_timeout);

    return NGX_OK;
}


void
ngx_chat_ws_conn_run(ngx_chat_ws_conn_t *wc)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, wc->connection->log, 0,
                   "websocket open, deflate:%ui, pending:%uz",
                   (ngx_uint_t) wc->deflate.enabled, wc->in_len);

    if (wc->handler->opened) {
        wc->handler->opened(wc);
    }

    ngx_chat_ws_read_handler(wc->connection->read);
}


ngx_int_t
ngx_chat_ws_send(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    ngx_str_t   z;
    ngx_uint_t  rsv1;

    if (wc->state != NGX_CHAT_WS_OPEN) {
        return NGX_DECLINED;
    }

    rsv1 = 0;

    if (wc->deflate.enabled && !ngx_chat_ws_is_control(opcode)
        && ngx_chat_ws_deflate_message(wc, data, len, &z) == NGX_OK
        && z.len < len)
    {
        data = z.data;
        len = z.len;
        rsv1 = 1;
    }

    return ngx_chat_ws_queue_bounded(wc, opcode, rsv1, data, len);
}


/*
 * Every frame but our close counts against chat_ws_send_queue (a pong
 * too): a client that does not read is cut, whatever it makes us send.
 */

static ngx_int_t
ngx_chat_ws_queue_bounded(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    ngx_uint_t rsv1, u_char *data, size_t len)
{
    size_t  size;

    size = ngx_chat_ws_header_size(len) + len;

    if (wc->queued && wc->queued + size > wc->conf->send_queue) {
        ngx_log_error(NGX_LOG_INFO, wc->connection->log, 0,
                      "websocket client too slow: %uz bytes queued",
                      wc->queued);

        wc->state = NGX_CHAT_WS_CLOSED;
        ngx_post_event(wc->connection->write, &ngx_posted_events);

        return NGX_ERROR;
    }

    return ngx_chat_ws_queue(wc, opcode, rsv1, data, len);
}


/* starts the closing handshake; the close frame skips the queue bound */

void
ngx_chat_ws_close(ngx_chat_ws_conn_t *wc, ngx_uint_t code, const char *reason)
{
    u_char             buf[NGX_CHAT_WS_CONTROL_MAX], *p;
    size_t             len;
    ngx_connection_t  *c;

    if (wc->state != NGX_CHAT_WS_OPEN) {
        return;
    }

    c = wc->connection;

    wc->state = NGX_CHAT_WS_CLOSING;
    wc->close_code = code;
    c->idle = 0;

    ngx_chat_ws_message_reset(wc);

    p = buf;
    *p++ = (u_char) (code >> 8);
    *p++ = (u_char) code;

    if (reason) {
        len = ngx_min(ngx_strlen(reason), NGX_CHAT_WS_CONTROL_MAX - 2);
        p = ngx_cpymem(p, reason, len);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket close %ui sent", code);

    if (ngx_chat_ws_queue(wc, NGX_CHAT_WS_OP_CLOSE, 0, buf, p - buf)
        != NGX_OK)
    {
        wc->state = NGX_CHAT_WS_CLOSED;
    }

    /* the peer gets close_timeout to answer, the flush included */

    ngx_add_timer(c->read, ngx_exiting
                           ? ngx_min(wc->conf->close_timeout,
                                     NGX_CHAT_WS_EXIT_CLOSE_WAIT)
                           : wc->conf->close_timeout);
}


static void
ngx_chat_ws_read_handler(ngx_event_t *rev)
{
    ngx_connection_t    *c;
    ngx_chat_ws_conn_t  *wc;

    c = rev->data;
    wc = c->data;

    if (rev->timedout) {
        rev->timedout = 0;

        if (wc->state == NGX_CHAT_WS_OPEN) {
            ngx_chat_ws_keepalive(wc);
            return;
        }

        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "websocket peer did not close in time");
        ngx_chat_ws_finalize(wc);
        return;
    }

    if (c->close && wc->state == NGX_CHAT_WS_OPEN && !wc->going_away) {
        wc->going_away = 1;

        /*
         * The worker exits: what the peer sent before is answered first
         * (a send stored gets its "sent"), then the close comes from the
         * handler, within its bound.
         */

        if (wc->handler->closing
            && wc->handler->closing(wc, NGX_CHAT_WS_CLOSE_GOING_AWAY)
               == NGX_AGAIN)
        {
            return;
        }

        ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_GOING_AWAY,
                          "server shutting down");

        /*
         * ngx_close_idle_connections() calls us outside of event
         * processing: a posted write would wait for the next event.
         */

        if (ngx_chat_ws_flush(wc) == NGX_ERROR) {
            ngx_chat_ws_finalize(wc);
            return;
        }
    }

    if (wc->state == NGX_CHAT_WS_CLOSED
        || ngx_chat_ws_read(wc) != NGX_OK
        || wc->state == NGX_CHAT_WS_CLOSED)
    {
        ngx_chat_ws_finalize(wc);
    }
}


static void
ngx_chat_ws_write_handler(ngx_event_t *wev)
{
    ngx_connection_t    *c;
    ngx_chat_ws_conn_t  *wc;

    c = wev->data;
    wc = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "websocket client timed out reading");
        c->timedout = 1;
        ngx_chat_ws_finalize(wc);
        return;
    }

    if (wc->state == NGX_CHAT_WS_CLOSED
        || ngx_chat_ws_flush(wc) == NGX_ERROR
        || wc->state == NGX_CHAT_WS_CLOSED)
    {
        ngx_chat_ws_finalize(wc);
    }
}


static void
ngx_chat_ws_finalize(ngx_chat_ws_conn_t *wc)
{
    ngx_connection_t     *c;
    ngx_chat_ws_block_t  *b, *next;

    c = wc->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "websocket finalize, close code:%ui", wc->close_code);

    if (wc->handler->closed) {
        wc->handler->closed(wc);
    }

    ngx_chat_ws_message_reset(wc);
    ngx_chat_ws_inflate_end(wc);

    if (wc->in) {
        ngx_free(wc->in);
        wc->in = NULL;
    }

    for (b = wc->out; b; b = next) {
        next = b->next;
        ngx_free(b);
    }

    wc->out = NULL;

    ngx_queue_remove(&wc->queue);
    ngx_chat_ws_count--;

    ngx_http_close_connection(c);
}


static ngx_int_t
ngx_chat_ws_read(ngx_chat_ws_conn_t *wc)
{
    ssize_t            n;
    ngx_uint_t         rounds;
    ngx_event_t       *rev;
    ngx_connection_t  *c;

    c = wc->connection;
    rev = c->read;

    if (wc->in_len && ngx_chat_ws_process(wc) != NGX_OK) {
        return NGX_ERROR;
    }

    for (rounds = 0; rev->ready; rounds++) {

        if (wc->state == NGX_CHAT_WS_CLOSED) {
            return NGX_OK;
        }

        if (rounds == NGX_CHAT_WS_READ_ROUNDS) {
            /* let the other connections of this worker have a turn */
            ngx_post_event(rev, &ngx_posted_events);
            return NGX_OK;
        }

        if (wc->in == NULL) {
            wc->in_size = NGX_CHAT_WS_READ_SIZE;

            wc->in = ngx_alloc(wc->in_size, c->log);
            if (wc->in == NULL) {
                return NGX_ERROR;
            }
        }

        n = c->recv(c, wc->in + wc->in_len, wc->in_size - wc->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            if (wc->state == NGX_CHAT_WS_OPEN) {
                ngx_log_error(NGX_LOG_INFO, c->log, 0,
                              "websocket peer closed the connection "
                              "without a close frame");
            }

            return NGX_ERROR;
        }

        wc->in_len += n;
        wc->last_in = ngx_current_msec;
        wc->pinged = 0;

        if (ngx_chat_ws_process(wc) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (wc->in && wc->in_len == 0) {
        ngx_free(wc->in);
        wc->in = NULL;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Consumes what the input buffer holds: whole headers, control frames once
 * complete, and data payload as it comes.  What is left (at most a partial
 * header or control frame) moves to the front of the buffer.
 */

static ngx_int_t
ngx_chat_ws_process(ngx_chat_ws_conn_t *wc)
{
    size_t                n;
    u_char               *p, *last;
    ssize_t               hlen;
    ngx_int_t             rc;
    ngx_chat_ws_frame_t  *f;

    f = &wc->frame;
    p = wc->in;
    last = p + wc->in_len;

    while (!wc->broken && wc->state != NGX_CHAT_WS_CLOSED) {

        if (wc->read_state == NGX_CHAT_WS_READ_HEADER) {

            hlen = ngx_chat_ws_parse_header(p, last - p, f);

            if (hlen == 0) {
                break;
            }

            if (hlen == NGX_ERROR) {
                (void) ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                        "invalid payload length");
                break;
            }

            rc = ngx_chat_ws_frame_start(wc);

            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (rc != NGX_OK) {
                break;
            }

            if (ngx_chat_ws_is_control(f->opcode)) {

                if ((uint64_t) (last - p - hlen) < f->len) {
                    break;      /* a control frame is handled whole */
                }

                p += hlen;
                ngx_chat_ws_unmask(p, f->len, f->mask, 0);

                if (ngx_chat_ws_control(wc, p, f->len) == NGX_ERROR) {
                    return NGX_ERROR;
                }

                p += f->len;
                continue;
            }

            p += hlen;
            wc->frame_off = 0;
            wc->read_state = NGX_CHAT_WS_READ_PAYLOAD;
        }

        n = (size_t) ngx_min(f->len - wc->frame_off, (uint64_t) (last - p));

        if (n) {
            ngx_chat_ws_unmask(p, n, f->mask, wc->frame_off);

            if (ngx_chat_ws_payload(wc, p, n) == NGX_ERROR) {
                return NGX_ERROR;
            }

            p += n;
            wc->frame_off += n;
        }

        if (wc->frame_off < f->len) {
            break;
        }

        wc->read_state = NGX_CHAT_WS_READ_HEADER;

        if (f->fin && ngx_chat_ws_message_end(wc) == NGX_ERROR) {
            return NGX_ERROR;
        }
    }

    if (wc->broken) {
        p = last;
    }

    wc->in_len = last - p;

    if (wc->in_len && p != wc->in) {
        ngx_memmove(wc->in, p, wc->in_len);
    }

    return NGX_OK;
}


/* checks a frame header against RFC 6455, section 5, and the limits */

static ngx_int_t
ngx_chat_ws_frame_start(ngx_chat_ws_conn_t *wc)
{
    size_t                max;
    ngx_chat_ws_frame_t  *f;

    f = &wc->frame;

    if (!f->masked) {
        return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                "unmasked client frame");
    }

    if (f->rsv2 || f->rsv3) {
        return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                "reserved bit set");
    }

    if (ngx_chat_ws_is_control(f->opcode)) {

        if (f->opcode > NGX_CHAT_WS_OP_PONG) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "reserved opcode");
        }

        if (!f->fin) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "fragmented control frame");
        }

        if (f->len > NGX_CHAT_WS_CONTROL_MAX) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "control frame too long");
        }

        if (f->rsv1) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "compressed control frame");
        }

        return NGX_OK;
    }

    if (f->opcode > NGX_CHAT_WS_OP_BINARY) {
        return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                "reserved opcode");
    }

    if (wc->state != NGX_CHAT_WS_OPEN) {
        /*
         * Closing: data frames are skipped whole, the rest of a message
         * our close cut included; only the peer's close frame matters.
         */
        return NGX_OK;
    }

    if (f->opcode == NGX_CHAT_WS_OP_CONT) {

        if (wc->msg_opcode == 0) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "continuation frame without a message");
        }

        if (f->rsv1) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "RSV1 set on a continuation frame");
        }

    } else {

        if (wc->msg_opcode) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "new message inside a fragmented one");
        }

        if (f->rsv1 && !wc->deflate.enabled) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "RSV1 set without permessage-deflate");
        }

        wc->msg_opcode = f->opcode;
        wc->msg_compressed = f->rsv1;
    }

    max = wc->conf->max_message_size;

    /*
     * Refused on the declared length, before a byte of it is read; the
     * framing is sound, so the frame is skipped and the peer's answer to
     * our close is still read.
     */

    if (f->len > (uint64_t) (max - wc->msg_wire)) {
        (void) ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_TOO_BIG,
                                "message too big");
        return NGX_OK;
    }

    wc->msg_wire += (size_t) f->len;

    /* the buffer grows with the payload that arrives, not as declared */

    return NGX_OK;
}


static ngx_int_t
ngx_chat_ws_payload(ngx_chat_ws_conn_t *wc, u_char *p, size_t n)
{
    if (wc->state != NGX_CHAT_WS_OPEN) {
        return NGX_OK;
    }

    if (wc->msg_compressed) {
        return ngx_chat_ws_inflate(wc, p, n, 0);
    }

    if (ngx_chat_ws_msg_reserve(wc, wc->msg_len + n) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(wc->msg + wc->msg_len, p, n);

    if (wc->msg_opcode == NGX_CHAT_WS_OP_TEXT
        && ngx_chat_ws_utf8_feed(&wc->utf8, p, n) != NGX_OK)
    {
        (void) ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_BAD_DATA,
                                "invalid UTF-8 in a text message");
        return NGX_OK;
    }

    wc->msg_len += n;

    return NGX_OK;
}


static ngx_int_t
ngx_chat_ws_message_end(ngx_chat_ws_conn_t *wc)
{
    if (wc->state == NGX_CHAT_WS_OPEN && wc->msg_compressed
        && ngx_chat_ws_inflate(wc, NULL, 0, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (wc->state != NGX_CHAT_WS_OPEN) {
        ngx_chat_ws_message_reset(wc);
        return NGX_OK;
    }

    if (wc->msg_opcode == NGX_CHAT_WS_OP_TEXT
        && !ngx_chat_ws_utf8_complete(&wc->utf8))
    {
        return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_BAD_DATA,
                                "text message ends inside a UTF-8 sequence");
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, wc->connection->log, 0,
                   "websocket message op:%ui len:%uz",
                   wc->msg_opcode, wc->msg_len);

    wc->handler->message(wc, wc->msg_opcode, wc->msg, wc->msg_len);

    ngx_chat_ws_message_reset(wc);

    return NGX_OK;
}


static void
ngx_chat_ws_message_reset(ngx_chat_ws_conn_t *wc)
{
    if (wc->msg) {
        ngx_free(wc->msg);
        wc->msg = NULL;
    }

    wc->msg_len = 0;
    wc->msg_size = 0;
    wc->msg_wire = 0;
    wc->msg_opcode = 0;
    wc->msg_compressed = 0;
    ngx_memzero(&wc->utf8, sizeof(ngx_chat_ws_utf8_t));

    if (wc->inflate && wc->deflate.client_no_context_takeover) {
        ngx_chat_ws_inflate_end(wc);
    }
}


/* grows the message buffer to hold at least size bytes */

ngx_int_t
ngx_chat_ws_msg_reserve(ngx_chat_ws_conn_t *wc, size_t size)
{
    u_char  *p;

    if (size <= wc->msg_size) {
        return NGX_OK;
    }

    /* double while reassembling many fragments, but never past the limit */

    if (wc->msg_size && size < 2 * wc->msg_size) {
        size = ngx_min(2 * wc->msg_size, wc->conf->max_message_size + 1);
    }

    p = ngx_alloc(size, wc->connection->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (wc->msg) {
        ngx_memcpy(p, wc->msg, wc->msg_len);
        ngx_free(wc->msg);
    }

    wc->msg = p;
    wc->msg_size = size;

    return NGX_OK;
}


static ngx_int_t
ngx_chat_ws_control(ngx_chat_ws_conn_t *wc, u_char *p, size_t n)
{
    ngx_uint_t          code;
    ngx_chat_ws_utf8_t  utf8;

    switch (wc->frame.opcode) {

    case NGX_CHAT_WS_OP_PING:
        if (wc->state == NGX_CHAT_WS_OPEN
            && ngx_chat_ws_queue_bounded(wc, NGX_CHAT_WS_OP_PONG, 0, p, n)
               == NGX_ERROR
            && wc->state != NGX_CHAT_WS_CLOSED)
        {
            return NGX_ERROR;
        }

        return NGX_OK;

    case NGX_CHAT_WS_OP_PONG:
        return NGX_OK;

    default: /* NGX_CHAT_WS_OP_CLOSE */
        break;
    }

    if (wc->close_received) {
        return NGX_OK;
    }

    wc->close_received = 1;

    if (wc->state != NGX_CHAT_WS_OPEN) {

        /* the answer to our close: done once ours is out */

        if (wc->close_flushed) {
            wc->state = NGX_CHAT_WS_CLOSED;
        }

        return NGX_OK;
    }

    if (n == 0) {
        code = NGX_CHAT_WS_CLOSE_NORMAL;

    } else if (n == 1) {
        return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                "close frame with a 1-byte payload");

    } else {
        code = (p[0] << 8) | p[1];

        if (!ngx_chat_ws_close_code_valid(code)) {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "invalid close code");
        }

        ngx_memzero(&utf8, sizeof(ngx_chat_ws_utf8_t));

        if (ngx_chat_ws_utf8_feed(&utf8, p + 2, n - 2) != NGX_OK
            || !ngx_chat_ws_utf8_complete(&utf8))
        {
            return ngx_chat_ws_fail(wc, NGX_CHAT_WS_CLOSE_PROTOCOL,
                                    "invalid UTF-8 in the close reason");
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, wc->connection->log, 0,
                   "websocket close %ui received", code);

    if (wc->handler->closing && wc->handler->closing(wc, code) == NGX_AGAIN) {
        return NGX_OK;
    }

    ngx_chat_ws_close(wc, code, NULL);

    return NGX_OK;
}


/*
 * Fails the connection (RFC 6455, section 7.1.7): a close frame with the
 * code.  After a protocol error the framing cannot be trusted: whatever
 * the peer sends is discarded and its close is not waited for.  After a
 * message that is too big or not UTF-8 the frames still parse, so the
 * peer's answer to our close is read.  Returns NGX_DECLINED so callers
 * can stop with one statement.
 */

static ngx_int_t
ngx_chat_ws_fail(ngx_chat_ws_conn_t *wc, ngx_uint_t code, const char *reason)
{
    ngx_log_error(NGX_LOG_INFO, wc->connection->log, 0,
                  "websocket client error: %s, closing with %ui",
                  reason, code);

    ngx_chat_ws_close(wc, code, reason);

    if (code == NGX_CHAT_WS_CLOSE_PROTOCOL) {
        wc->broken = 1;
    }

    return NGX_DECLINED;
}


/* the keepalive timer: a ping after ping_interval, a close after idle */

static void
ngx_chat_ws_keepalive(ngx_chat_ws_conn_t *wc)
{
    ngx_msec_t           idle, next;
    ngx_connection_t    *c;
    ngx_chat_ws_conf_t  *conf;

    c = wc->connection;
    conf = wc->conf;
    idle = ngx_current_msec - wc->last_in;

    if (idle >= conf->idle_timeout) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "websocket client idle for %M ms, closing", idle);
        ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_GOING_AWAY, "idle timeout");
        return;
    }

    if (conf->ping_interval && !wc->pinged && idle >= conf->ping_interval) {
        if (ngx_chat_ws_queue(wc, NGX_CHAT_WS_OP_PING, 0, NULL, 0)
            != NGX_OK)
        {
            ngx_chat_ws_finalize(wc);
            return;
        }

        wc->pinged = 1;
    }

    next = conf->idle_timeout - idle;

    if (conf->ping_interval && !wc->pinged) {
        next = ngx_min(next, conf->ping_interval - idle);
    }

    ngx_add_timer(c->read, next);
}


/* appends one frame to the output queue and schedules a flush */

static ngx_int_t
ngx_chat_ws_queue(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode, ngx_uint_t rsv1,
    u_char *data, size_t len)
{
    u_char               *p;
    size_t                size;
    ngx_chat_ws_block_t  *b;

    size = ngx_chat_ws_header_size(len) + len;
    b = wc->out_last;

    if (b == NULL || (size_t) (b->end - b->last) < size) {
        b = ngx_alloc(sizeof(ngx_chat_ws_block_t)
                      + ngx_max(size, NGX_CHAT_WS_BLOCK_SIZE
                                      - sizeof(ngx_chat_ws_block_t)),
                      wc->connection->log);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->next = NULL;
        b->pos = (u_char *) (b + 1);
        b->last = b->pos;
        b->end = b->pos + ngx_max(size, NGX_CHAT_WS_BLOCK_SIZE
                                        - sizeof(ngx_chat_ws_block_t));

        if (wc->out_last) {
            wc->out_last->next = b;

        } else {
            wc->out = b;
        }

        wc->out_last = b;
    }

    p = ngx_chat_ws_write_header(b->last, opcode, rsv1, len);

    if (len) {
        p = ngx_cpymem(p, data, len);
    }

    b->last = p;
    wc->queued += size;

    /* frames queued in one pass of the event loop leave in one write */

    ngx_post_event(wc->connection->write, &ngx_posted_events);

    return NGX_OK;
}


static ngx_int_t
ngx_chat_ws_flush(ngx_chat_ws_conn_t *wc)
{
    ssize_t               n;
    ngx_uint_t            sent;
    ngx_event_t          *wev;
    ngx_connection_t     *c;
    ngx_chat_ws_block_t  *b;

    c = wc->connection;
    wev = c->write;

    sent = 0;

    while (wc->out) {
        b = wc->out;

        if (b->pos == b->last) {
            wc->out = b->next;

            if (wc->out == NULL) {
                wc->out_last = NULL;
            }

            ngx_free(b);
            continue;
        }

        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN || n == 0) {
            break;
        }

        b->pos += n;
        wc->queued -= n;
        sent = 1;
    }

    /* the write timer measures progress: idle_timeout without a byte out */

    if (wc->out) {
        if (sent || !wev->timer_set) {
            ngx_add_timer(wev, wc->conf->idle_timeout);
        }

        return ngx_handle_write_event(wev, 0);
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (wc->state == NGX_CHAT_WS_OPEN && wc->handler->drained) {
        wc->handler->drained(wc);
    }

    if (wc->state == NGX_CHAT_WS_CLOSING && !wc->close_flushed) {
        wc->close_flushed = 1;

        if (wc->close_received) {
            wc->state = NGX_CHAT_WS_CLOSED;
            return NGX_OK;
        }

        /* a FIN after our close frame: the peer answers, then closes */

        if (c->ssl == NULL && shutdown(c->fd, SHUT_WR) == -1) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, ngx_socket_errno,
                           "websocket shutdown() failed");
        }
    }

    return ngx_handle_write_event(wev, 0);
}


ngx_int_t
ngx_chat_ws_init_worker(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_chat_ws_all);
    ngx_chat_ws_count = 0;

    return NGX_OK;
}


/*
 * A fast shutdown (TERM) does not wait for closing handshakes: each peer
 * still gets a 1001 close frame if its socket takes it at once.
 */

void
ngx_chat_ws_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t         *q;
    ngx_chat_ws_conn_t  *wc;

    if (ngx_chat_ws_all.next == NULL) {
        return;                 /* init_process never ran */
    }

    while (!ngx_queue_empty(&ngx_chat_ws_all)) {
        q = ngx_queue_head(&ngx_chat_ws_all);
        wc = ngx_queue_data(q, ngx_chat_ws_conn_t, queue);

        ngx_chat_ws_close(wc, NGX_CHAT_WS_CLOSE_GOING_AWAY,
                          "server shutting down");
        (void) ngx_chat_ws_flush(wc);

        ngx_chat_ws_finalize(wc);
    }

    ngx_chat_ws_deflate_exit();
}


ngx_uint_t
ngx_chat_ws_connections(void)
{
    return ngx_chat_ws_count;
}
