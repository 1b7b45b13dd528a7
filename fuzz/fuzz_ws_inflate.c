
/*
 * permessage-deflate (ngx_chat_ws_deflate.c): a client's compressed
 * message inflated piece by piece with the size cap, and our own deflate
 * read back by our inflate.
 *
 * Input: 2 bytes of settings, then the compressed payload.
 *
 *   0     bit 0 a text message (UTF-8 checked as it inflates), bit 1 the
 *         client resets its context (a new stream per message), bits 2-4
 *         the size of the pieces (1 << n), bits 5-7 the second message:
 *         the payload again (takeover) or none
 *   1     chat_ws_max_message_size: 16 << (b % 13)
 *
 * What must hold: while the connection is open, what was inflated fits the
 * cap, and a text message is a valid UTF-8 prefix; the payload (as plain
 * bytes) deflated by us, with each window size, inflates to itself.
 */

#include "ngx_fuzz.h"

#include <ngx_http.h>

#include "ngx_chat_ws_conn.h"


typedef struct {
    ngx_connection_t     c;
    ngx_event_t          rev;
    ngx_event_t          wev;
    ngx_chat_ws_conf_t   conf;
    ngx_chat_ws_conn_t  *wc;
} ngx_fuzz_conn_t;


static ngx_chat_ws_handler_t  ngx_fuzz_inflate_handler;


static ngx_chat_ws_conn_t *
ngx_fuzz_conn(ngx_fuzz_conn_t *fc, size_t max)
{
    ngx_memzero(fc, sizeof(ngx_fuzz_conn_t));

    fc->c.fd = -1;
    fc->c.read = &fc->rev;
    fc->c.write = &fc->wev;
    fc->c.log = &ngx_fuzz_log;
    fc->rev.data = &fc->c;
    fc->wev.data = &fc->c;
    fc->rev.log = &ngx_fuzz_log;
    fc->wev.log = &ngx_fuzz_log;

    fc->conf.max_message_size = max;
    fc->conf.send_queue = 65536;
    fc->conf.idle_timeout = 60000;
    fc->conf.close_timeout = 5000;

    fc->wc = ngx_pcalloc(ngx_fuzz_pool, sizeof(ngx_chat_ws_conn_t));
    if (fc->wc == NULL) {
        abort();
    }

    fc->c.data = fc->wc;
    fc->wc->connection = &fc->c;
    fc->wc->conf = &fc->conf;
    fc->wc->handler = &ngx_fuzz_inflate_handler;
    fc->wc->deflate.enabled = 1;

    if (ngx_chat_ws_conn_start(fc->wc, NULL, 0) != NGX_OK) {
        abort();
    }

    return fc->wc;
}


static ssize_t
ngx_fuzz_eof(ngx_connection_t *c, u_char *buf, size_t size)
{
    return 0;
}


/* the peer goes: the connection frees what it holds */

static void
ngx_fuzz_conn_free(ngx_chat_ws_conn_t *wc)
{
    ngx_connection_t  *c;

    c = wc->connection;
    c->recv = ngx_fuzz_eof;
    c->read->ready = 1;
    c->read->handler(c->read);

    if (!c->destroyed) {
        abort();
    }

    ngx_fuzz_drop_timers();
}


static void
ngx_fuzz_inflate_message(ngx_chat_ws_conn_t *wc, const u_char *data,
    size_t size, ngx_uint_t step)
{
    size_t      off, n;
    ngx_uint_t  bad;

    wc->msg_compressed = 1;

    for (off = 0; off < size && wc->state == NGX_CHAT_WS_OPEN; off += n) {
        n = ngx_min(step, size - off);

        if (ngx_chat_ws_inflate(wc, (u_char *) data + off, n, 0) != NGX_OK) {
            abort();
        }
    }

    if (wc->state == NGX_CHAT_WS_OPEN
        && ngx_chat_ws_inflate(wc, NULL, 0, 1) != NGX_OK)
    {
        abort();
    }

    if (wc->state != NGX_CHAT_WS_OPEN) {
        return;
    }

    if (wc->msg_len > wc->conf->max_message_size) {
        abort();
    }

    if (wc->msg_opcode == NGX_CHAT_WS_OP_TEXT) {
        (void) ngx_fuzz_utf8_prefix(wc->msg, wc->msg_len, &bad);

        if (bad) {
            abort();
        }
    }

    /* the message is handed on; the next one starts empty */

    if (wc->msg) {
        ngx_free(wc->msg);
        wc->msg = NULL;
    }

    wc->msg_len = 0;
    wc->msg_size = 0;
    ngx_memzero(&wc->utf8, sizeof(ngx_chat_ws_utf8_t));

    if (wc->deflate.client_no_context_takeover) {
        ngx_chat_ws_inflate_end(wc);
    }
}


static void
ngx_fuzz_round_trip(const u_char *data, size_t size, ngx_uint_t bits)
{
    ngx_str_t            z;
    ngx_fuzz_conn_t      fc;
    ngx_chat_ws_conn_t  *wc;

    wc = ngx_fuzz_conn(&fc, size + 1);
    wc->deflate.server_max_window_bits = bits;

    if (ngx_chat_ws_deflate_message(wc, (u_char *) data, size, &z)
        != NGX_OK)
    {
        ngx_fuzz_conn_free(wc);
        return;                          /* too short to be compressed */
    }

    wc->msg_opcode = NGX_CHAT_WS_OP_BINARY;
    wc->msg_compressed = 1;

    if (ngx_chat_ws_inflate(wc, z.data, z.len, 0) != NGX_OK
        || ngx_chat_ws_inflate(wc, NULL, 0, 1) != NGX_OK
        || wc->state != NGX_CHAT_WS_OPEN
        || wc->msg_len != size
        || ngx_memcmp(wc->msg, data, size) != 0)
    {
        abort();
    }

    ngx_fuzz_conn_free(wc);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               max;
    ngx_uint_t           flags, step, i;
    ngx_fuzz_conn_t      fc;
    ngx_chat_ws_conn_t  *wc;
    static ngx_uint_t    bits[] = { 9, 10, 12, 15 };

    if (size < 2) {
        return 0;
    }

    static ngx_uint_t  init;

    if (!init) {
        init = 1;
        ngx_fuzz_init();
        (void) ngx_chat_ws_init_worker(NULL);
    }

    ngx_fuzz_new_pool();

    flags = data[0];
    max = (size_t) 16 << (data[1] % 13);
    step = (size_t) 1 << ((flags >> 2) & 7);
    data += 2;
    size -= 2;

    wc = ngx_fuzz_conn(&fc, max);
    wc->deflate.client_no_context_takeover = (flags >> 1) & 1;
    wc->msg_opcode = (flags & 1) ? NGX_CHAT_WS_OP_TEXT
                                 : NGX_CHAT_WS_OP_BINARY;

    ngx_fuzz_inflate_message(wc, data, size, step);

    if ((flags >> 5) && wc->state == NGX_CHAT_WS_OPEN) {
        wc->msg_opcode = NGX_CHAT_WS_OP_BINARY;
        ngx_fuzz_inflate_message(wc, data, size, step);
    }

    ngx_fuzz_conn_free(wc);

    if (size <= 16384) {
        for (i = 0; i < 4; i++) {
            if ((flags >> 5) == i + 1 || (flags >> 5) == 0) {
                ngx_fuzz_round_trip(data, size, bits[i]);
            }
        }
    }

    return 0;
}
