
/*
 * The opening handshake (RFC 6455, section 4.2): checks the upgrade
 * request, answers 101 through nginx's header filters, then frees the
 * HTTP request and hands the bare connection to ngx_chat_ws_conn.c.
 * The model is ngx_http_upstream_upgrade().
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_ws_conn.h"
#include "ngx_chat_json.h"


#define NGX_HTTP_UPGRADE_REQUIRED  426


static ngx_uint_t ngx_chat_ws_check_request(ngx_http_request_t *r,
    const char **message);
static ngx_int_t ngx_chat_ws_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *message);
static ngx_uint_t ngx_chat_ws_header_token(ngx_http_request_t *r,
    ngx_str_t *name, ngx_str_t *token);
static ngx_int_t ngx_chat_ws_negotiate(ngx_http_request_t *r,
    ngx_chat_ws_conn_t *wc);
static void ngx_chat_ws_upgrade_handler(ngx_event_t *wev);
static void ngx_chat_ws_detach(ngx_http_request_t *r, ngx_chat_ws_conn_t *wc);


static ngx_str_t  ngx_chat_ws_connection = ngx_string("Connection");
static ngx_str_t  ngx_chat_ws_upgrade_name = ngx_string("Upgrade");
static ngx_str_t  ngx_chat_ws_upgrade_token = ngx_string("upgrade");
static ngx_str_t  ngx_chat_ws_websocket = ngx_string("websocket");
static ngx_str_t  ngx_chat_ws_version = ngx_string("Sec-WebSocket-Version");
static ngx_str_t  ngx_chat_ws_key = ngx_string("Sec-WebSocket-Key");
static ngx_str_t  ngx_chat_ws_extensions =
    ngx_string("Sec-WebSocket-Extensions");
static ngx_str_t  ngx_chat_ws_protocol = ngx_string("Sec-WebSocket-Protocol");


/*
 * A content handler's tail: returns NGX_DONE once the 101 is on its way,
 * or the status of a refusal already sent.  With NGX_DONE, *wcp (when
 * wanted) is the new connection, whose owner state (wc->data) the caller
 * may fill before handler->opened() runs from a posted event.
 */

ngx_int_t
ngx_chat_ws_upgrade(ngx_http_request_t *r, ngx_chat_ws_conf_t *conf,
    ngx_chat_ws_handler_t *handler, ngx_chat_ws_conn_t **wcp)
{
    u_char               accept[NGX_CHAT_WS_ACCEPT_LEN];
    ngx_int_t            rc;
    ngx_uint_t           status;
    const char          *message;
    ngx_table_elt_t     *key;
    ngx_connection_t    *c;
    ngx_chat_ws_conn_t  *wc;

    c = r->connection;

    if (r != r->main) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "websocket endpoint cannot serve a subrequest");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    status = ngx_chat_ws_check_request(r, &message);

    if (status != NGX_OK) {
        return ngx_chat_ws_refuse(r, status, message);
    }

    wc = ngx_pcalloc(c->pool, sizeof(ngx_chat_ws_conn_t) + handler->data_size);
    if (wc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    wc->connection = c;
    wc->conf = conf;
    wc->handler = handler;
    wc->data = handler->data_size ? (u_char *) (wc + 1) : NULL;

    key = ngx_chat_http_header_in(r, &ngx_chat_ws_key);
    ngx_chat_ws_accept_key(&key->value, accept);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;
    r->keepalive = 0;

    if (ngx_chat_http_header(r, "Upgrade", (u_char *) "websocket", 9)
        != NGX_OK
        || ngx_chat_http_header(r, "Sec-WebSocket-Accept", accept,
                                  NGX_CHAT_WS_ACCEPT_LEN) != NGX_OK
        || ngx_chat_ws_negotiate(r, wc) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
        return NGX_ERROR;
    }

    /*
     * The request is freed from a posted event, once the content phase
     * has let go of it; the 101 may still be in flight until then.
     */

    r->main->count++;
    r->read_event_handler = ngx_http_block_reading;
    c->write->handler = ngx_chat_ws_upgrade_handler;
    c->log->action = "sending websocket handshake";

    ngx_http_set_ctx(r, wc, ngx_chat_module);

    ngx_post_event(c->write, &ngx_posted_events);

    if (wcp) {
        *wcp = wc;
    }

    return NGX_DONE;
}


/* NGX_OK, or the status to refuse with and why */

static ngx_uint_t
ngx_chat_ws_check_request(ngx_http_request_t *r, const char **message)
{
    ngx_table_elt_t  *h;

    if (r->method != NGX_HTTP_GET) {
        *message = "websocket handshake must use GET";
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->http_version != NGX_HTTP_VERSION_11) {
        *message = "websocket handshake needs HTTP/1.1";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (!ngx_chat_ws_header_token(r, &ngx_chat_ws_upgrade_name,
                                  &ngx_chat_ws_websocket)
        || !ngx_chat_ws_header_token(r, &ngx_chat_ws_connection,
                                     &ngx_chat_ws_upgrade_token))
    {
        *message = "websocket upgrade expected";
        return NGX_HTTP_UPGRADE_REQUIRED;
    }

    h = ngx_chat_http_header_in(r, &ngx_chat_ws_version);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        *message = "websocket version 13 is supported";
        return NGX_HTTP_UPGRADE_REQUIRED;
    }

    h = ngx_chat_http_header_in(r, &ngx_chat_ws_key);

    if (h == NULL || ngx_chat_ws_key_valid(&h->value) != NGX_OK) {
        *message = "invalid Sec-WebSocket-Key";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        *message = "websocket handshake has a body";
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_chat_ws_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *message)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "websocket handshake refused: %s", message);

    if (status == NGX_HTTP_UPGRADE_REQUIRED) {
        ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");

        if (ngx_chat_http_header(r, "Upgrade", (u_char *) "websocket", 9)
            != NGX_OK
            || ngx_chat_http_header(r, "Sec-WebSocket-Version",
                                      (u_char *) "13", 2) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_chat_json_error(r, status, "bad_request", message);
}


/* negotiates permessage-deflate and a subprotocol, adding their headers */

static ngx_int_t
ngx_chat_ws_negotiate(ngx_http_request_t *r, ngx_chat_ws_conn_t *wc)
{
    u_char                   *p;
    ngx_str_t                *name, value;
    ngx_table_elt_t          *h;
    ngx_chat_http_headers_t   it;

    it.part = NULL;

    while (wc->conf->deflate && !wc->deflate.enabled
           && (h = ngx_chat_http_header_next(r, &ngx_chat_ws_extensions, &it)))
    {
        (void) ngx_chat_ws_deflate_offer(&h->value, &wc->deflate);
    }

    if (wc->deflate.enabled) {
        if (!wc->conf->deflate_client_takeover) {
            wc->deflate.client_no_context_takeover = 1;
        }

        p = ngx_pnalloc(r->pool, NGX_CHAT_WS_DEFLATE_RESPONSE_MAX);
        if (p == NULL) {
            return NGX_ERROR;
        }

        value.data = p;
        value.len = ngx_chat_ws_deflate_response(p, &wc->deflate) - p;

        if (ngx_chat_http_header(r, "Sec-WebSocket-Extensions", value.data,
                                   value.len) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (wc->conf->protocols == NULL) {
        return NGX_OK;
    }

    /* the client lists its preference first: the first one we know wins */

    it.part = NULL;

    while ((h = ngx_chat_http_header_next(r, &ngx_chat_ws_protocol, &it))) {

        name = ngx_chat_ws_known_protocol(&h->value, wc->conf->protocols);

        if (name) {
            return ngx_chat_http_header(r, "Sec-WebSocket-Protocol",
                                        name->data, name->len);
        }
    }

    return NGX_OK;
}


/* a token in any of the headers of that name (they may repeat) */

static ngx_uint_t
ngx_chat_ws_header_token(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *token)
{
    ngx_table_elt_t          *h;
    ngx_chat_http_headers_t   it;

    it.part = NULL;

    while ((h = ngx_chat_http_header_next(r, name, &it))) {
        if (ngx_chat_ws_has_token(&h->value, token)) {
            return 1;
        }
    }

    return 0;
}


/* a posted write event: finish sending the 101, then detach */

static void
ngx_chat_ws_upgrade_handler(ngx_event_t *wev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    ngx_chat_ws_conn_t  *wc;

    c = wev->data;
    r = c->data;
    wc = ngx_http_get_module_ctx(r, ngx_chat_module);

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "client timed out sending websocket handshake");
        c->timedout = 1;
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
        return;
    }

    if (r->out || c->buffered) {
        if (ngx_http_output_filter(r, NULL) == NGX_ERROR) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        if (r->out || c->buffered) {
            ngx_add_timer(wev, wc->conf->idle_timeout);

            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_finalize_request(r, NGX_ERROR);
            }

            return;
        }
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    ngx_chat_ws_detach(r, wc);
}


/*
 * Frees everything the HTTP request held (its pool, the header buffers)
 * so an idle WebSocket costs little more than its ngx_chat_ws_conn_t.
 * Bytes the client sent right after the handshake are kept.
 */

static void
ngx_chat_ws_detach(ngx_http_request_t *r, ngx_chat_ws_conn_t *wc)
{
    size_t                  n;
    ngx_buf_t              *b;
    ngx_chain_t            *cl, *ln;
    ngx_connection_t       *c;
    ngx_http_connection_t  *hc;

    c = r->connection;
    hc = r->http_connection;
    b = r->header_in;

    n = b->last - b->pos;

    if (ngx_chat_ws_conn_start(wc, b->pos, n) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_http_free_request(r, 0);

    c->destroyed = 0;
    c->data = wc;
    c->log->action = "serving websocket";

    if (c->buffer && ngx_pfree(c->pool, c->buffer->start) == NGX_OK) {
        c->buffer = NULL;
    }

    for (cl = hc->busy; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    for (cl = hc->free; cl; /* void */) {
        ln = cl;
        cl = cl->next;
        ngx_pfree(c->pool, ln->buf->start);
        ngx_free_chain(c->pool, ln);
    }

    hc->busy = NULL;
    hc->free = NULL;
    hc->nbusy = 0;

    ngx_chat_ws_conn_run(wc);
}
