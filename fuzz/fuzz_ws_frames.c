
/*
 * The WebSocket connection as a client's bytes drive it
 * (ngx_chat_ws_conn.c, ngx_chat_ws.c, ngx_chat_ws_deflate.c): frame
 * headers, unmasking, fragment reassembly, control frames between
 * fragments, UTF-8 across fragments, permessage-deflate with the size
 * cap, the closing handshake, keepalive timers and a worker that exits.
 *
 * Input: 12 bytes of settings, then the byte stream of the client.
 *
 *   0     bit 0 permessage-deflate, bit 1 the client resets its context,
 *         bit 2 every message is echoed back (our deflate and queue),
 *         bit 3 the worker exits half way (reload), bit 4 the owner defers
 *         its answer to a close, bit 5 the socket takes 7 bytes a write,
 *         bits 6-7 window bits (9, 10, 12, 15)
 *   1     chat_ws_max_message_size: 16 << (b % 13)
 *   2     chat_ws_send_queue: 32 << (b % 16)
 *   3     unused
 *   4-11  the sizes the stream is read in, taken in turn: 0 lets 30 s
 *         pass (timers fire) instead of a read
 *
 * What must hold: every whole message handed to the owner fits the limit
 * and, when text, is valid UTF-8 by the reference decoder; a frame we send
 * is unmasked with a known opcode, a close frame is the last one; after the
 * client's end of stream the connection is freed within the timeouts.
 */

#include "ngx_fuzz.h"

#include <ngx_http.h>

#include "ngx_chat_ws_conn.h"


typedef struct {
    ngx_chat_ws_conn_t   *wc;
    ngx_fuzz_input_t      stream;
    u_char                sizes[8];
    ngx_uint_t            turn;
    ngx_uint_t            flags;
    ngx_uint_t            deferred;      /* a close code, owed an answer */
    ngx_uint_t            closed;
    ngx_uint_t            close_sent;    /* a close frame left */
    u_char                out[16];       /* a partial frame header sent */
    size_t                out_len;
    uint64_t              out_skip;      /* payload bytes of a frame */
} ngx_fuzz_ws_t;


static ngx_fuzz_ws_t  fw;


static void
ngx_fuzz_ws_message(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode, u_char *data,
    size_t len)
{
    ngx_uint_t  bad;

    if (len > wc->conf->max_message_size) {
        abort();
    }

    if (opcode == NGX_CHAT_WS_OP_TEXT
        && ngx_fuzz_utf8_prefix(data, len, &bad) != len)
    {
        abort();
    }

    if (fw.flags & 0x04) {
        (void) ngx_chat_ws_send(wc, opcode, data, len);
    }
}


static ngx_int_t
ngx_fuzz_ws_closing(ngx_chat_ws_conn_t *wc, ngx_uint_t code)
{
    if (fw.flags & 0x10) {
        fw.deferred = code;
        return NGX_AGAIN;
    }

    return NGX_OK;
}


static void
ngx_fuzz_ws_closed(ngx_chat_ws_conn_t *wc)
{
    fw.closed = 1;
}


static ngx_chat_ws_handler_t  ngx_fuzz_ws_handler = {
    NULL,
    ngx_fuzz_ws_message,
    ngx_fuzz_ws_closing,
    NULL,
    ngx_fuzz_ws_closed,
    0
};


static ssize_t
ngx_fuzz_ws_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t         n;
    const u_char  *p;

    if (ngx_fuzz_left(&fw.stream) == 0) {
        return 0;
    }

    n = fw.sizes[fw.turn++ % 8];

    if (n == 0) {
        c->read->ready = 0;
        return NGX_AGAIN;
    }

    n = ngx_fuzz_take(&fw.stream, ngx_min(n, size), &p);
    ngx_memcpy(buf, p, n);

    /* the next piece arrives with the next event */
    c->read->ready = (fw.turn % 3) != 0;

    return n;
}


/* checks the frames we write, a header at a time */

static ssize_t
ngx_fuzz_ws_send(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t               n, take, hlen;
    u_char              *p, *last;
    ngx_chat_ws_frame_t  f;

    if (fw.flags & 0x20) {
        size = ngx_min(size, 7);
    }

    p = buf;
    last = buf + size;

    while (p < last) {

        if (fw.out_skip) {
            n = (size_t) ngx_min(fw.out_skip, (uint64_t) (last - p));
            fw.out_skip -= n;
            p += n;
            continue;
        }

        if (fw.close_sent) {
            abort();                     /* a frame after our close */
        }

        take = ngx_min((size_t) (last - p), sizeof(fw.out) - fw.out_len);
        ngx_memcpy(fw.out + fw.out_len, p, take);

        hlen = ngx_chat_ws_parse_header(fw.out, fw.out_len + take, &f);

        if (hlen == 0) {
            fw.out_len += take;
            p += take;
            continue;
        }

        if ((ssize_t) hlen < 0 || f.masked || f.rsv2 || f.rsv3
            || (f.opcode > NGX_CHAT_WS_OP_BINARY
                && f.opcode != NGX_CHAT_WS_OP_CLOSE
                && f.opcode != NGX_CHAT_WS_OP_PING
                && f.opcode != NGX_CHAT_WS_OP_PONG)
            || (ngx_chat_ws_is_control(f.opcode)
                && (f.len > NGX_CHAT_WS_CONTROL_MAX || f.rsv1 || !f.fin)))
        {
            abort();
        }

        if (f.opcode == NGX_CHAT_WS_OP_CLOSE) {
            fw.close_sent = 1;
        }

        p += hlen - fw.out_len;
        fw.out_len = 0;
        fw.out_skip = f.len;
    }

    return size;
}


static void
ngx_fuzz_ws_one(const u_char *data, size_t size)
{
    ngx_uint_t           i, exiting_at, flags, rounds;
    ngx_event_t          rev, wev;
    ngx_connection_t     c;
    ngx_fuzz_input_t     in;
    ngx_chat_ws_conf_t   conf;
    ngx_chat_ws_conn_t  *wc;
    static ngx_uint_t    bits[] = { 9, 10, 12, 15 };

    in.pos = data;
    in.last = data + size;

    ngx_memzero(&fw, sizeof(ngx_fuzz_ws_t));
    ngx_memzero(&conf, sizeof(ngx_chat_ws_conf_t));
    ngx_memzero(&c, sizeof(ngx_connection_t));
    ngx_memzero(&rev, sizeof(ngx_event_t));
    ngx_memzero(&wev, sizeof(ngx_event_t));

    flags = ngx_fuzz_byte(&in, 0);
    conf.max_message_size = (size_t) 16 << (ngx_fuzz_byte(&in, 8) % 13);
    conf.send_queue = (size_t) 32 << (ngx_fuzz_byte(&in, 10) % 16);
    (void) ngx_fuzz_byte(&in, 0);
    conf.ping_interval = 20000;
    conf.idle_timeout = 60000;
    conf.close_timeout = 5000;

    for (i = 0; i < 8; i++) {
        fw.sizes[i] = (u_char) ngx_fuzz_byte(&in, 64);
    }

    fw.flags = flags;
    fw.stream = in;

    c.fd = -1;
    c.read = &rev;
    c.write = &wev;
    c.log = &ngx_fuzz_log;
    c.recv = ngx_fuzz_ws_recv;
    c.send = ngx_fuzz_ws_send;
    c.pool = ngx_fuzz_new_pool();
    rev.data = &c;
    wev.data = &c;
    rev.log = &ngx_fuzz_log;
    wev.log = &ngx_fuzz_log;
    rev.ready = 1;
    wev.ready = 1;

    wc = ngx_pcalloc(c.pool, sizeof(ngx_chat_ws_conn_t));
    if (wc == NULL) {
        abort();
    }

    c.data = wc;
    wc->connection = &c;
    wc->conf = &conf;
    wc->handler = &ngx_fuzz_ws_handler;
    fw.wc = wc;

    if (flags & 0x01) {
        wc->deflate.enabled = 1;
        wc->deflate.client_no_context_takeover = (flags >> 1) & 1;
        wc->deflate.client_max_window_bits = bits[(flags >> 6) & 3];
        wc->deflate.server_max_window_bits = bits[(flags >> 6) & 3];
    }

    if (ngx_chat_ws_conn_start(wc, NULL, 0) != NGX_OK) {
        abort();
    }

    ngx_chat_ws_conn_run(wc);

    exiting_at = (flags & 0x08) ? ngx_fuzz_left(&fw.stream) / 2 : 0;

    for (rounds = 0; !c.destroyed && rounds < 100000; rounds++) {

        ngx_fuzz_run_posted(64);

        if (c.destroyed) {
            break;
        }

        if (fw.deferred && (rounds & 1)) {
            ngx_chat_ws_close(wc, fw.deferred, NULL);
            fw.deferred = 0;
            continue;
        }

        if (exiting_at && ngx_fuzz_left(&fw.stream) <= exiting_at) {
            /* ngx_close_idle_connections() at a reload */
            exiting_at = 0;
            ngx_exiting = 1;
            c.close = 1;
            rev.handler(&rev);
            continue;
        }

        if (!rev.ready) {
            if (fw.sizes[fw.turn % 8] == 0 && ngx_fuzz_left(&fw.stream)) {
                fw.turn++;
                ngx_fuzz_advance(30000);
            }

            rev.ready = 1;
        }

        if (ngx_fuzz_left(&fw.stream) == 0 && rounds > 64) {
            /* the peer has nothing more to say: only time can end it */
            ngx_fuzz_advance(30000);
        }

        if (!c.destroyed) {
            rev.handler(&rev);
        }
    }

    if (!c.destroyed || !fw.closed) {
        abort();                         /* a connection that never ends */
    }

    ngx_fuzz_drop_timers();
    ngx_exiting = 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ngx_uint_t  init;

    if (!init) {
        init = 1;
        ngx_fuzz_init();
        (void) ngx_chat_ws_init_worker(NULL);
    }

    if (size > 1 << 20) {
        return 0;
    }

    ngx_fuzz_ws_one(data, size);

    return 0;
}
