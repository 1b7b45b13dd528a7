
/*
 * The chat endpoint (chat_ws): a chat session over a WebSocket.
 *
 * The session's events go out as text frames; paced producers may fill
 * half of chat_ws_send_queue, so what is not paced (answers, receipts,
 * presence) always finds room with a client that reads, and only a
 * client that does not read is cut ("websocket client too slow").
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws_conn.h"
#include "ngx_chat_session.h"
#include "ngx_chat_auth.h"


typedef struct {
    ngx_chat_session_t         session;      /* first: wc->data is one */
    ngx_str_t                  token;        /* from a Bearer header */
    unsigned                   bad_header:1; /* unusable Authorization */
} ngx_chat_socket_t;


static void ngx_chat_socket_opened(ngx_chat_ws_conn_t *wc);
static void ngx_chat_socket_message(ngx_chat_ws_conn_t *wc,
    ngx_uint_t opcode, u_char *data, size_t len);
static ngx_int_t ngx_chat_socket_closing(ngx_chat_ws_conn_t *wc,
    ngx_uint_t code);
static void ngx_chat_socket_drained(ngx_chat_ws_conn_t *wc);
static void ngx_chat_socket_closed(ngx_chat_ws_conn_t *wc);
static ngx_int_t ngx_chat_socket_send(ngx_chat_session_t *s,
    ngx_chat_out_t *out);
static ngx_uint_t ngx_chat_socket_room(ngx_chat_session_t *s, size_t len);
static void ngx_chat_socket_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason);


static ngx_chat_ws_handler_t  ngx_chat_socket_handlers = {
    ngx_chat_socket_opened,
    ngx_chat_socket_message,
    ngx_chat_socket_closing,
    ngx_chat_socket_drained,
    ngx_chat_socket_closed,
    sizeof(ngx_chat_socket_t)
};


static ngx_chat_transport_t  ngx_chat_socket_transport = {
    ngx_chat_socket_send,
    ngx_chat_socket_room,
    ngx_chat_socket_close,
    NULL,                                  /* settled */
    NULL,                                  /* begun */
    NULL,                                  /* synced */
    0                                      /* flags */
};


ngx_int_t
ngx_chat_session_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_str_t             token;
    ngx_table_elt_t      *h;
    ngx_chat_socket_t    *sock;
    ngx_chat_ws_conn_t   *wc;
    ngx_chat_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);

    rc = ngx_chat_ws_upgrade(r, &clcf->ws, &ngx_chat_socket_handlers, &wc);

    if (rc != NGX_DONE) {
        return rc;
    }

    sock = wc->data;
    sock->session.conf = clcf;

    /* the request is freed before opened(): keep the token on c->pool */

    switch (ngx_chat_auth_bearer(r, &token)) {

    case NGX_OK:
        sock->token.data = ngx_pstrdup(r->connection->pool, &token);
        sock->token.len = sock->token.data ? token.len : 0;
        break;

    case NGX_ERROR:

        /*
         * "Bearer" without a token is a bad token (4001); another scheme
         * is not ours (a browser sends a site's Basic credentials on its
         * own): the "auth" message still decides.
         */

        h = r->headers_in.authorization;

        if (h->value.len >= 6
            && ngx_strncasecmp(h->value.data, (u_char *) "bearer", 6) == 0)
        {
            sock->bad_header = 1;
        }

        break;

    default: /* NGX_DECLINED: no Authorization, an "auth" message follows */
        break;
    }

    return NGX_DONE;
}


static void
ngx_chat_socket_opened(ngx_chat_ws_conn_t *wc)
{
    ngx_str_t           none = ngx_null_string;
    ngx_chat_socket_t  *sock = wc->data;

    ngx_chat_session_init(&sock->session, &ngx_chat_socket_transport, wc,
                          sock->session.conf, wc->connection->log,
                          wc->connection->pool);

    if (sock->bad_header) {
        ngx_chat_session_auth(&sock->session, &none);
        return;
    }

    ngx_chat_session_auth(&sock->session,
                          sock->token.len ? &sock->token : NULL);
}


static void
ngx_chat_socket_message(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    ngx_chat_session_message(wc->data,
                             opcode == NGX_CHAT_WS_OP_TEXT ? data : NULL,
                             len);
}


static ngx_int_t
ngx_chat_socket_closing(ngx_chat_ws_conn_t *wc, ngx_uint_t code)
{
    return ngx_chat_session_closing(wc->data, code);
}


static void
ngx_chat_socket_drained(ngx_chat_ws_conn_t *wc)
{
    ngx_chat_session_drained(wc->data);
}


static void
ngx_chat_socket_closed(ngx_chat_ws_conn_t *wc)
{
    ngx_chat_session_end(wc->data);
}


/* one text frame; a client too slow for its queue is closed by the send */

static ngx_int_t
ngx_chat_socket_send(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    char       *text;
    ngx_int_t   rc;

    if (out->json == NULL) {
        return ngx_chat_ws_send(s->data, NGX_CHAT_WS_OP_TEXT, out->text.data,
                                out->text.len);
    }

    text = json_dumps(out->json, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_chat_ws_send(s->data, NGX_CHAT_WS_OP_TEXT, (u_char *) text,
                          ngx_strlen(text));
    free(text);

    return rc;
}


/*
 * Paced producers fill half of the queue: a frame fits when nothing is
 * queued, or when it keeps the queue under half of chat_ws_send_queue.
 */

static ngx_uint_t
ngx_chat_socket_room(ngx_chat_session_t *s, size_t len)
{
    size_t               half;
    ngx_chat_ws_conn_t  *wc = s->data;

    if (wc->state != NGX_CHAT_WS_OPEN) {
        return 0;
    }

    half = wc->conf->send_queue / 2;

    if (len == 0) {
        return wc->queued < half;
    }

    return wc->queued == 0
           || wc->queued + ngx_chat_ws_header_size(len) + len <= half;
}


static void
ngx_chat_socket_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason)
{
    ngx_chat_ws_close(s->data, code, reason);
}
