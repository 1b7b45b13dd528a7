
/*
 * The HTTP fallback transport (docs/protocol.md, "HTTP fallback
 * transport"), for networks that refuse WebSockets:
 *
 *   GET /v1/events     a long-poll (a JSON array of what the WebSocket
 *                      would have sent), or with "Accept:
 *                      text/event-stream" a stream of Server-Sent Events
 *   POST /v1/send, /v1/ack, /v1/read, /v1/presence
 *                      one client message, answered once it took effect
 *
 * Each request carries a chat session of its own (ngx_chat_session.c),
 * which starts from the device's acked cursors like a WebSocket does, so
 * a device can change transports at any moment.  The session hands it
 * typed events: a long-poll collects them in a JSON array, a stream
 * writes each as a Server-Sent Event (with the position a message brings
 * its chat to as the event id), a call keeps its answer.
 *
 * Session code calls a transport from inside its own loops (a revocation
 * walks the user's sessions, the sync walks rows): the transport only
 * takes note there and posts its event; the request is answered, and
 * the session ended, in that event's handler.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_api.h"
#include "ngx_chat_session.h"


#define NGX_CHAT_EVENTS_WAIT_MAX   60       /* seconds of a long-poll */
#define NGX_CHAT_EVENTS_ITEMS      256      /* in ?ack=, in ?presence= */


typedef enum {
    NGX_CHAT_EVENTS_POLL = 0,
    NGX_CHAT_EVENTS_SSE,
    NGX_CHAT_EVENTS_CALL
} ngx_chat_events_mode_e;


typedef struct {
    ngx_chat_session_t         session;     /* first: s->data is us */
    ngx_chat_api_ctx_t        *ctx;
    ngx_http_request_t        *request;
    ngx_chat_events_mode_e     mode;
    ngx_event_t                ev;          /* posted: write, answer, end */
    ngx_event_t                timer;       /* poll: the wait; SSE: ping */
    json_t                    *presence;    /* subscribed once begun */
    const char                *error;       /* the first "error": code */
    const char                *error_message;
    ngx_str_t                  sent;        /* a call's "sent" */
    ngx_uint_t                 close_code;  /* the session's, if it ended
                                               the request */

    u_char                    *out;         /* poll, call: "[a,b";
                                               SSE: events */
    size_t                     out_len;
    size_t                     out_size;
    u_char                    *sending;     /* SSE: what nginx writes */
    size_t                     sending_len;
    ngx_buf_t                  buf;
    ngx_uint_t                 events;      /* poll: objects collected */
    ngx_uint_t                 owed;        /* poll: ... by the sync */
    ngx_event_handler_pt       read;        /* the connection's, before */

    unsigned                   closing:1;   /* no more output; end it */
    unsigned                   ended:1;     /* the session has ended */
    unsigned                   answered:1;
    unsigned                   paused:1;    /* poll: a sync page is left */
    unsigned                   waited:1;    /* poll: the wait is over */
    unsigned                   synced:1;    /* poll: the sync is over */
} ngx_chat_events_t;


static ngx_chat_events_t *ngx_chat_events_create(ngx_chat_api_ctx_t *ctx,
    ngx_chat_events_mode_e mode);
static ngx_int_t ngx_chat_events_acks(ngx_chat_events_t *e, ngx_str_t *list,
    ngx_uint_t apply);
static ngx_int_t ngx_chat_events_presence(ngx_chat_events_t *e,
    ngx_str_t *list);
static ngx_int_t ngx_chat_events_pair(u_char **pos, ngx_str_t *list,
    ngx_str_t *key, ngx_str_t *value);
static off_t ngx_chat_events_number(ngx_str_t *value);
static ngx_int_t ngx_chat_events_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
static ngx_int_t ngx_chat_events_sse_wanted(ngx_http_request_t *r);
static ngx_int_t ngx_chat_events_sse_start(ngx_http_request_t *r);
static ngx_str_t *ngx_chat_events_last_id(ngx_http_request_t *r);
static void ngx_chat_events_start(ngx_chat_events_t *e);
static void ngx_chat_events_read(ngx_event_t *rev);
static void ngx_chat_events_cleanup(void *data);
static void ngx_chat_events_end(ngx_chat_events_t *e);
static void ngx_chat_events_post(ngx_chat_events_t *e);
static ngx_int_t ngx_chat_events_append(ngx_chat_events_t *e, u_char *data,
    size_t len);
static ngx_int_t ngx_chat_events_item(ngx_chat_events_t *e,
    ngx_chat_out_t *out);
static ngx_int_t ngx_chat_events_array(ngx_chat_events_t *e);
static ngx_int_t ngx_chat_events_error(ngx_chat_events_t *e,
    ngx_chat_out_t *out);
static ngx_int_t ngx_chat_events_error_status(const char *code);
static ngx_int_t ngx_chat_events_fail(ngx_chat_events_t *e);

static ngx_int_t ngx_chat_events_poll_send(ngx_chat_session_t *s,
    ngx_chat_out_t *out);
static ngx_uint_t ngx_chat_events_poll_room(ngx_chat_session_t *s,
    size_t len);
static void ngx_chat_events_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason);
static void ngx_chat_events_begun(ngx_chat_session_t *s);
static void ngx_chat_events_poll_synced(ngx_chat_session_t *s);
static void ngx_chat_events_poll_wait(ngx_event_t *ev);
static void ngx_chat_events_poll_answer(ngx_event_t *ev);

static ngx_int_t ngx_chat_events_sse_send(ngx_chat_session_t *s,
    ngx_chat_out_t *out);
static ngx_uint_t ngx_chat_events_sse_room(ngx_chat_session_t *s,
    size_t len);
static void ngx_chat_events_sse_close(ngx_chat_session_t *s,
    ngx_uint_t code, const char *reason);
static void ngx_chat_events_sse_ping(ngx_event_t *ev);
static void ngx_chat_events_sse_write(ngx_event_t *ev);
static void ngx_chat_events_sse_writer(ngx_http_request_t *r);

static ngx_int_t ngx_chat_events_call_send(ngx_chat_session_t *s,
    ngx_chat_out_t *out);
static ngx_uint_t ngx_chat_events_call_room(ngx_chat_session_t *s,
    size_t len);
static void ngx_chat_events_call_settled(ngx_chat_session_t *s);
static void ngx_chat_events_call_answer(ngx_event_t *ev);


static ngx_chat_transport_t  ngx_chat_events_poll = {
    ngx_chat_events_poll_send,
    ngx_chat_events_poll_room,
    ngx_chat_events_close,
    NULL,                                  /* settled */
    ngx_chat_events_begun,
    ngx_chat_events_poll_synced,
    NGX_CHAT_TRANSPORT_POLL
};


static ngx_chat_transport_t  ngx_chat_events_sse = {
    ngx_chat_events_sse_send,
    ngx_chat_events_sse_room,
    ngx_chat_events_sse_close,
    NULL,                                  /* settled */
    ngx_chat_events_begun,
    NULL,                                  /* synced */
    0
};


static ngx_chat_transport_t  ngx_chat_events_call_transport = {
    ngx_chat_events_call_send,
    ngx_chat_events_call_room,
    ngx_chat_events_close,
    ngx_chat_events_call_settled,
    NULL,                                  /* begun */
    NULL,                                  /* synced */
    NGX_CHAT_TRANSPORT_CALL
};


static ngx_str_t  ngx_chat_events_type = ngx_string("text/event-stream");


/* GET /v1/events: a long-poll, or a stream of Server-Sent Events */

ngx_int_t
ngx_chat_events_get(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t            rc, wait, sse;
    ngx_str_t            v, acks, presence, *last;
    ngx_chat_events_t   *e;
    ngx_http_request_t  *r;

    r = ctx->request;
    wait = 25;

    if (ngx_chat_events_arg(r, "wait", &v) == NGX_OK) {
        wait = ngx_atoi(v.data, v.len);

        if (wait == NGX_ERROR || wait > NGX_CHAT_EVENTS_WAIT_MAX) {
            return ngx_chat_api_bad_request(ctx,
                                      "\"wait\" is seconds, from 0 to 60");
        }
    }

    if (ngx_chat_events_arg(r, "ack", &acks) != NGX_OK) {
        ngx_str_null(&acks);
    }

    if (ngx_chat_events_arg(r, "presence", &presence) != NGX_OK) {
        ngx_str_null(&presence);
    }

    sse = ngx_chat_events_sse_wanted(r);
    last = sse ? ngx_chat_events_last_id(r) : NULL;

    /* checked before any of them is applied */

    if (ngx_chat_events_acks(NULL, &acks, 0) != NGX_OK) {
        return ngx_chat_api_bad_request(ctx, "\"ack\" takes up to 256 "
                                        "<chat_id>:<seq> pairs, "
                                        "comma-separated");
    }

    if (last && ngx_chat_events_acks(NULL, last, 0) != NGX_OK) {
        return ngx_chat_api_bad_request(ctx, "a last event id is "
                                        "<chat_id>:<seq>");
    }

    e = ngx_chat_events_create(ctx, sse ? NGX_CHAT_EVENTS_SSE
                                        : NGX_CHAT_EVENTS_POLL);
    if (e == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (presence.len && ngx_chat_events_presence(e, &presence) != NGX_OK) {
        return ngx_chat_api_bad_request(ctx, "\"presence\" takes up to 256 "
                                        "<user_id>[:on|off|<last_seen>], "
                                        "comma-separated");
    }

    if (e->mode == NGX_CHAT_EVENTS_SSE) {
        rc = ngx_chat_events_sse_start(r);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            return rc;
        }

        e->timer.handler = ngx_chat_events_sse_ping;
        e->ev.handler = ngx_chat_events_sse_write;

        if (e->session.conf->ws.ping_interval) {
            ngx_add_timer(&e->timer, e->session.conf->ws.ping_interval);
        }

    } else {
        e->timer.handler = ngx_chat_events_poll_wait;
        e->ev.handler = ngx_chat_events_poll_answer;

        if (wait) {
            ngx_add_timer(&e->timer, (ngx_msec_t) wait * 1000);

        } else {
            e->waited = 1;
        }
    }

    (void) ngx_chat_events_acks(e, &acks, 1);

    if (last) {
        (void) ngx_chat_events_acks(e, last, 1);
    }

    /*
     * A client that goes away ends it (ngx_http_test_reading).  A reload
     * or a shutdown ends it too: ngx_close_idle_connections() calls the
     * connection's read handler with c->close set, which we see first.
     */

    r->read_event_handler = ngx_http_test_reading;

    e->read = r->connection->read->handler;
    r->connection->read->handler = ngx_chat_events_read;
    r->connection->idle = 1;

    ngx_chat_events_start(e);

    return NGX_DONE;
}


/* POST /v1/send, /v1/ack, /v1/read, /v1/presence: one client message */

ngx_int_t
ngx_chat_events_call(ngx_chat_api_ctx_t *ctx)
{
    json_t             *type;
    ngx_str_t          *path;
    ngx_chat_events_t  *e;

    path = &ctx->route->path;

    type = json_object_get(ctx->body, "type");

    if (type != NULL
        && (!json_is_string(type)
            || json_string_length(type) != path->len
            || ngx_strncmp(json_string_value(type), path->data, path->len)
               != 0))
    {
        return ngx_chat_api_bad_request(ctx, "\"type\" does not match the "
                                        "path");
    }

    if (json_object_set_new(ctx->body, "type",
                            json_stringn((char *) path->data, path->len))
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    e = ngx_chat_events_create(ctx, NGX_CHAT_EVENTS_CALL);
    if (e == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    e->ev.handler = ngx_chat_events_call_answer;

    ngx_chat_session_begin(&e->session);
    ngx_chat_session_dispatch(&e->session, ctx->body);
    ngx_chat_session_settle(&e->session);

    return NGX_DONE;
}


static ngx_chat_events_t *
ngx_chat_events_create(ngx_chat_api_ctx_t *ctx, ngx_chat_events_mode_e mode)
{
    ngx_chat_session_t    *s;
    ngx_chat_events_t     *e;
    ngx_pool_cleanup_t    *cln;
    ngx_http_request_t    *r;
    ngx_chat_transport_t  *transport;

    r = ctx->request;

    e = ngx_pcalloc(r->pool, sizeof(ngx_chat_events_t));
    if (e == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    e->ctx = ctx;
    e->request = r;
    e->mode = mode;
    ctx->data = e;

    switch (mode) {
    case NGX_CHAT_EVENTS_POLL:
        transport = &ngx_chat_events_poll;
        break;
    case NGX_CHAT_EVENTS_SSE:
        transport = &ngx_chat_events_sse;
        break;
    default: /* NGX_CHAT_EVENTS_CALL */
        transport = &ngx_chat_events_call_transport;
        break;
    }

    s = &e->session;

    ngx_chat_session_init(s, transport, e,
                          ngx_http_get_module_loc_conf(r, ngx_chat_module),
                          r->connection->log, r->pool);

    /* from here on the session is ended with the request, if not before */

    cln->handler = ngx_chat_events_cleanup;
    cln->data = e;

    if (ngx_chat_session_identify(s, &ctx->user_id, &ctx->device_id)
        != NGX_OK)
    {
        return NULL;
    }

    e->ev.data = e;
    e->ev.log = r->connection->log;
    e->timer.data = e;
    e->timer.log = r->connection->log;
    e->timer.cancelable = 1;

    ctx->taken = 1;

    return e;
}


/* "<chat_id>:<seq>,...": checked, or applied before the sync */

static ngx_int_t
ngx_chat_events_acks(ngx_chat_events_t *e, ngx_str_t *list, ngx_uint_t apply)
{
    u_char      *p;
    off_t        seq;
    json_t      *ack;
    ngx_str_t    chat, value;
    ngx_uint_t   n;

    p = list->data;

    for (n = 0; ngx_chat_events_pair(&p, list, &chat, &value) == NGX_OK; n++) {

        seq = ngx_chat_events_number(&value);

        if (n == NGX_CHAT_EVENTS_ITEMS || ngx_chat_events_number(&chat) <= 0
            || seq <= 0)
        {
            return NGX_ERROR;
        }

        if (!apply) {
            continue;
        }

        ack = json_pack("{s:s,s:s%,s:I}", "type", "ack",
                        "chat_id", chat.data, chat.len,
                        "seq", (json_int_t) seq);
        if (ack) {
            ngx_chat_session_dispatch(&e->session, ack);
            json_decref(ack);
        }
    }

    return NGX_OK;
}


/*
 * "<user_id>[:on|off|<last_seen>],...": a presence subscription, with
 * what the client knows of each (only a difference is sent at first).
 */

static ngx_int_t
ngx_chat_events_presence(ngx_chat_events_t *e, ngx_str_t *list)
{
    u_char      *p;
    off_t        seen;
    json_t      *msg, *users, *known, *v;
    ngx_str_t    user, state;
    ngx_uint_t   n;

    msg = json_pack("{s:s,s:[],s:{}}", "type", "presence",
                    "subscribe", "known");
    if (msg == NULL) {
        return NGX_ERROR;
    }

    users = json_object_get(msg, "subscribe");
    known = json_object_get(msg, "known");

    p = list->data;

    for (n = 0; ngx_chat_events_pair(&p, list, &user, &state) == NGX_OK; n++) {

        if (n == NGX_CHAT_EVENTS_ITEMS || ngx_chat_events_number(&user) <= 0
            || json_array_append_new(users, json_stringn((char *) user.data,
                                                         user.len))
               != 0)
        {
            goto bad;
        }

        v = NULL;

        if (state.len == 2 && ngx_strncmp(state.data, "on", 2) == 0) {
            v = json_string("on");

        } else if (state.len == 3 && ngx_strncmp(state.data, "off", 3) == 0) {
            v = json_string("off");

        } else if (state.len) {
            seen = ngx_chat_events_number(&state);

            if (seen <= 0) {
                goto bad;
            }

            v = json_integer(seen);
        }

        if (v && json_object_setn_new(known, (char *) user.data, user.len, v)
                 != 0)
        {
            goto bad;
        }
    }

    e->presence = msg;

    return NGX_OK;

bad:

    json_decref(msg);

    return NGX_ERROR;
}


/*
 * The next "<key>[:<value>]" of a comma-separated list (value empty
 * without a colon); NGX_DONE at its end.
 */

static ngx_int_t
ngx_chat_events_pair(u_char **pos, ngx_str_t *list, ngx_str_t *key,
    ngx_str_t *value)
{
    u_char  *p, *last, *colon, *comma;

    if (list->len == 0) {
        return NGX_DONE;            /* no list: data may be NULL */
    }

    p = *pos;
    last = list->data + list->len;

    if (p >= last) {
        return NGX_DONE;
    }

    comma = ngx_strlchr(p, last, ',');
    if (comma == NULL) {
        comma = last;
    }

    colon = ngx_strlchr(p, comma, ':');

    key->data = p;
    key->len = (colon ? colon : comma) - p;

    value->data = colon ? colon + 1 : comma;
    value->len = comma - value->data;

    *pos = comma + 1;

    return NGX_OK;
}


/* a positive number of at most 19 digits, else NGX_ERROR */

static off_t
ngx_chat_events_number(ngx_str_t *value)
{
    if (value->len == 0 || value->len > NGX_CHAT_ID_LEN - 1) {
        return NGX_ERROR;
    }

    return ngx_atoof(value->data, value->len);
}


/* an argument of the query string, percent-decoded into r->pool */

static ngx_int_t
ngx_chat_events_arg(ngx_http_request_t *r, char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    dst = ngx_pnalloc(r->pool, raw.len);
    if (dst == NULL && raw.len) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    value->len = dst - value->data;

    return NGX_OK;
}


static ngx_int_t
ngx_chat_events_sse_wanted(ngx_http_request_t *r)
{
    ngx_str_t         v;
    ngx_table_elt_t  *h;

    static ngx_str_t  accept = ngx_string("Accept");

    if (ngx_http_arg(r, (u_char *) "sse", 3, &v) == NGX_OK) {
        return v.len == 1 && v.data[0] == '1';
    }

    h = ngx_chat_http_header_in(r, &accept);

    return h != NULL
           && ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                               ngx_chat_events_type.data,
                               ngx_chat_events_type.len - 1)
              != NULL;
}


/* Last-Event-ID, or ?last_event_id= */

static ngx_str_t *
ngx_chat_events_last_id(ngx_http_request_t *r)
{
    ngx_str_t        *id;
    ngx_table_elt_t  *h;

    static ngx_str_t  name = ngx_string("Last-Event-ID");

    id = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (id == NULL) {
        return NULL;
    }

    if (ngx_chat_events_arg(r, "last_event_id", id) == NGX_OK) {
        return id->len ? id : NULL;
    }

    h = ngx_chat_http_header_in(r, &name);

    if (h == NULL || h->value.len == 0) {
        return NULL;
    }

    *id = h->value;

    return id;
}


static ngx_int_t
ngx_chat_events_sse_start(ngx_http_request_t *r)
{
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    r->headers_out.content_type = ngx_chat_events_type;
    r->headers_out.content_type_len = ngx_chat_events_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_chat_http_header(r, "Cache-Control", (u_char *) "no-store", 8)
        != NGX_OK
        || ngx_chat_http_header(r, "X-Accel-Buffering", (u_char *) "no", 2)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    r->write_event_handler = ngx_chat_events_sse_writer;

    return ngx_http_send_header(r);
}


/* begins once the acks of the request are applied (the session waits) */

static void
ngx_chat_events_start(ngx_chat_events_t *e)
{
    ngx_chat_session_begin(&e->session);
}


static void
ngx_chat_events_begun(ngx_chat_session_t *s)
{
    ngx_chat_events_t  *e = s->data;

    if (e->presence) {
        ngx_chat_session_dispatch(s, e->presence);
        json_decref(e->presence);
        e->presence = NULL;
    }
}


/*
 * The worker is told to exit (reload, shutdown): a stream ends with its
 * last chunk, a long-poll answers what it has, instead of being cut.
 */

static void
ngx_chat_events_read(ngx_event_t *rev)
{
    ngx_connection_t    *c;
    ngx_chat_events_t   *e;
    ngx_http_request_t  *r;
    ngx_chat_api_ctx_t  *ctx;

    c = rev->data;
    r = c->data;

    ctx = ngx_http_get_module_ctx(r, ngx_chat_module);
    e = ctx->data;

    if (!c->close || e->answered) {
        e->read(rev);
        return;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "chat events: the worker exits");

    c->close = 0;
    c->idle = 0;
    r->keepalive = 0;

    e->closing = 1;
    e->waited = 1;
    e->synced = 1;

    e->ev.handler(&e->ev);
}


/* the request goes: the session with it, if still there */

static void
ngx_chat_events_cleanup(void *data)
{
    ngx_chat_events_t  *e = data;

    if (e->read && e->request->connection->read->handler
                   == ngx_chat_events_read)
    {
        e->request->connection->read->handler = e->read;
    }

    ngx_chat_events_end(e);

    if (e->ev.posted) {
        ngx_delete_posted_event(&e->ev);
    }

    if (e->timer.timer_set) {
        ngx_del_timer(&e->timer);
    }

    ngx_free(e->out);
    ngx_free(e->sending);
    e->out = NULL;
    e->sending = NULL;

    json_decref(e->presence);
    e->presence = NULL;
}


static void
ngx_chat_events_end(ngx_chat_events_t *e)
{
    if (e->ended) {
        return;
    }

    e->ended = 1;
    e->closing = 1;

    ngx_chat_session_end(&e->session);
}


static void
ngx_chat_events_post(ngx_chat_events_t *e)
{
    if (!e->ev.posted && !e->answered) {
        ngx_post_event(&e->ev, &ngx_posted_events);
    }
}


/*
 * out grows by doubling, up to chat_ws_send_queue bytes, and keeps a
 * byte to spare (a long-poll's closing "]")
 */

static ngx_int_t
ngx_chat_events_append(ngx_chat_events_t *e, u_char *data, size_t len)
{
    u_char  *p;
    size_t   size;

    if (e->out_len + len + 1 > e->out_size) {
        size = ngx_max(e->out_size * 2, ngx_max(len + 1, 4096));

        while (size < e->out_len + len + 1) {
            size *= 2;
        }

        if (e->out_len + len > e->session.conf->ws.send_queue) {
            return NGX_DECLINED;
        }

        p = ngx_alloc(size, e->session.log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (e->out_len) {
            ngx_memcpy(p, e->out, e->out_len);
        }

        ngx_free(e->out);
        e->out = p;
        e->out_size = size;
    }

    if (len) {
        ngx_memcpy(e->out + e->out_len, data, len);
        e->out_len += len;
    }

    return NGX_OK;
}


/* one object more in the JSON array that answers a poll or a call */

static ngx_int_t
ngx_chat_events_item(ngx_chat_events_t *e, ngx_chat_out_t *out)
{
    char       *dump;
    ngx_int_t   rc;
    ngx_str_t   text;

    dump = out->json ? json_dumps(out->json, JSON_COMPACT) : NULL;

    text.data = dump ? (u_char *) dump : out->text.data;
    text.len = dump ? ngx_strlen(dump) : out->text.len;

    rc = ngx_chat_events_append(e, (u_char *) (e->events ? "," : "["), 1);

    if (rc == NGX_OK) {
        rc = ngx_chat_events_append(e, text.data, text.len);

        if (rc != NGX_OK) {
            e->out_len -= 1;
        }
    }

    free(dump);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    e->events++;

    return NGX_OK;
}


/* the array, closed, as the answer */

static ngx_int_t
ngx_chat_events_array(ngx_chat_events_t *e)
{
    if (e->events == 0) {
        e->out_len = 0;

        if (ngx_chat_events_append(e, (u_char *) "[", 1) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    e->out[e->out_len++] = ']';     /* the byte append() keeps spare */

    return ngx_chat_json_send(e->request, NGX_HTTP_OK, e->out, e->out_len);
}


/* the first "error" of a poll or a call is its answer */

static ngx_int_t
ngx_chat_events_error(ngx_chat_events_t *e, ngx_chat_out_t *out)
{
    if (e->error == NULL) {
        e->error = out->code;
        e->error_message = out->message;
        ngx_chat_events_post(e);
    }

    return NGX_OK;
}


/* the session closes (revoked, PostgreSQL down): the request ends */

static void
ngx_chat_events_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason)
{
    ngx_chat_events_t  *e = s->data;

    if (e->closing) {
        return;
    }

    e->closing = 1;
    e->close_code = code;

    ngx_chat_events_post(e);
}


/* an HTTP error for a close code or an "error" object; the answer sent */

static ngx_int_t
ngx_chat_events_fail(ngx_chat_events_t *e)
{
    const char          *code, *message;
    ngx_http_request_t  *r;

    r = e->request;

    switch (e->close_code) {

    case 0:
        break;

    case NGX_CHAT_CLOSE_UNAUTHORIZED:
        return ngx_chat_json_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                                   "this device is unlinked");

    case NGX_CHAT_CLOSE_TRY_AGAIN:
        return ngx_chat_api_unavailable(e->ctx);

    default:
        return ngx_chat_json_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "unavailable", "internal error");
    }

    code = e->error;
    message = e->error_message;

    if (code == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_strcmp(code, "rate_limited") == 0) {
        return ngx_chat_api_rate_limited(e->ctx, 1);
    }

    if (ngx_strcmp(code, "unavailable") == 0) {
        return ngx_chat_api_unavailable(e->ctx);
    }

    return ngx_chat_json_error(r, ngx_chat_events_error_status(code),
                               code, message ? message : code);
}


static ngx_int_t
ngx_chat_events_error_status(const char *code)
{
    if (ngx_strcmp(code, "forbidden") == 0) {
        return NGX_HTTP_FORBIDDEN;
    }

    if (ngx_strcmp(code, "too_large") == 0) {
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    if (ngx_strcmp(code, "unauthorized") == 0) {
        return NGX_HTTP_UNAUTHORIZED;
    }

    return NGX_HTTP_BAD_REQUEST;        /* bad_request, unknown_media */
}


/* ---------------------------------------------------------- long-poll */


/*
 * Collected for the answer.  What finds no room is left for the next
 * poll, which loses nothing: a message is not acked, so the next poll's
 * sync brings it; a receipt is a mark, which the next sync brings; a
 * presence state is compared with what the next poll says it knows.
 */

static ngx_int_t
ngx_chat_events_poll_send(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    ngx_chat_events_t  *e = s->data;

    if (e->closing || e->paused) {
        return NGX_ERROR;
    }

    switch (out->kind) {

    case NGX_CHAT_OUT_READY:
        return NGX_OK;          /* a poll has no "ready" */

    case NGX_CHAT_OUT_SYNCED:

        /* a sync that found nothing owed: the poll waits for live ones */

        if (e->owed == 0) {
            return NGX_OK;
        }

        break;

    case NGX_CHAT_OUT_ERROR:
        return ngx_chat_events_error(e, out);

    default:
        break;
    }

    if (ngx_chat_events_item(e, out) != NGX_OK) {
        e->paused = 1;              /* full: answer what there is */
        ngx_chat_events_post(e);
        return NGX_ERROR;
    }

    /* the sync's: msg, expired, receipt */

    if (s->state != NGX_CHAT_SESSION_READY
        && out->kind != NGX_CHAT_OUT_PRESENCE
        && out->kind != NGX_CHAT_OUT_PROFILE)
    {
        e->owed++;
    }

    if (s->state == NGX_CHAT_SESSION_READY) {
        ngx_chat_events_post(e);    /* live: those of this pass together */
    }

    return NGX_OK;
}


/*
 * A poll answers what it has once it cannot take more, or before the
 * sync reads another page: the rest comes with the next poll.
 */

static ngx_uint_t
ngx_chat_events_poll_room(ngx_chat_session_t *s, size_t len)
{
    ngx_chat_events_t  *e = s->data;

    if (e->closing || e->paused) {
        return 0;
    }

    if (len == 0 ? e->events == 0
                 : e->out_len + len + 2 <= s->conf->ws.send_queue)
    {
        return 1;
    }

    e->paused = 1;
    ngx_chat_events_post(e);

    return 0;
}


static void
ngx_chat_events_poll_synced(ngx_chat_session_t *s)
{
    ngx_chat_events_t  *e = s->data;

    e->synced = 1;

    if (e->events || e->waited) {
        ngx_chat_events_post(e);
    }
}


static void
ngx_chat_events_poll_wait(ngx_event_t *ev)
{
    ngx_chat_events_t  *e = ev->data;

    e->waited = 1;

    if (e->synced) {
        ngx_chat_events_post(e);
    }
}


static void
ngx_chat_events_poll_answer(ngx_event_t *ev)
{
    ngx_chat_events_t   *e = ev->data;
    ngx_http_request_t  *r;

    if (e->answered) {
        return;
    }

    if (!e->closing && e->error == NULL && !e->paused
        && !(e->synced && (e->events || e->waited)))
    {
        return;
    }

    e->answered = 1;
    r = e->request;

    /* what it collected goes with the answer: written, for the session */

    if (!e->close_code && e->error == NULL) {
        e->paused = 1;
        ngx_chat_session_drained(&e->session);
    }

    ngx_chat_events_end(e);

    if (e->close_code || e->error) {
        ngx_chat_api_finish(e->ctx, ngx_chat_events_fail(e));
        return;
    }

    if (ngx_chat_http_header(r, "Cache-Control", (u_char *) "no-store", 8)
        != NGX_OK)
    {
        ngx_chat_api_finish(e->ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_chat_api_finish(e->ctx, ngx_chat_events_array(e));
}


/* ---------------------------------------------------------------- SSE */


/*
 * One event per object; "msg" and "expired" carry the position they
 * bring the chat to as the event id, so Last-Event-ID is an ack.
 */

static ngx_int_t
ngx_chat_events_sse_send(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    u_char             *p;
    u_char              head[sizeof("id: :\ndata: ") + 2 * NGX_INT64_LEN];
    char               *dump;
    ngx_int_t           rc;
    ngx_str_t           text;
    ngx_chat_events_t  *e = s->data;

    if (e->closing) {
        return NGX_ERROR;
    }

    p = head;

    if (out->kind == NGX_CHAT_OUT_MSG || out->kind == NGX_CHAT_OUT_EXPIRED) {
        p = ngx_sprintf(p, "id: %L:%L\n", out->chat, out->seq);
    }

    p = ngx_cpymem(p, "data: ", 6);

    dump = out->json ? json_dumps(out->json, JSON_COMPACT) : NULL;

    text.data = dump ? (u_char *) dump : out->text.data;
    text.len = dump ? ngx_strlen(dump) : out->text.len;

    rc = ngx_chat_events_append(e, head, p - head);

    if (rc == NGX_OK) {
        rc = ngx_chat_events_append(e, text.data, text.len);
    }

    if (rc == NGX_OK) {
        rc = ngx_chat_events_append(e, (u_char *) "\n\n", 2);
    }

    free(dump);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "chat events: client too slow for its %uz bytes, "
                      "closing", s->conf->ws.send_queue);
        e->closing = 1;
    }

    ngx_chat_events_post(e);

    return rc == NGX_OK ? NGX_OK : NGX_ERROR;
}


/* as a WebSocket: paced producers fill half of chat_ws_send_queue */

static ngx_uint_t
ngx_chat_events_sse_room(ngx_chat_session_t *s, size_t len)
{
    size_t              queued;
    ngx_chat_events_t  *e = s->data;

    if (e->closing) {
        return 0;
    }

    queued = e->out_len + e->sending_len;

    return queued == 0
           || queued + len + sizeof("id: :\ndata: \n\n") + 2 * NGX_INT64_LEN
              <= s->conf->ws.send_queue / 2;
}


static void
ngx_chat_events_sse_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason)
{
    u_char             *p;
    u_char              line[128];
    const char         *error;
    ngx_chat_events_t  *e = s->data;

    if (e->closing) {
        return;
    }

    switch (code) {
    case NGX_CHAT_CLOSE_UNAUTHORIZED:
        error = "unauthorized";
        break;
    case NGX_CHAT_CLOSE_TRY_AGAIN:
        error = "unavailable";
        break;
    default:
        error = NULL;
        break;
    }

    if (error) {
        p = ngx_snprintf(line, sizeof(line),
                         "data: {\"type\":\"error\",\"code\":\"%s\","
                         "\"message\":\"%s\"}\n\n",
                         error, reason ? reason : error);

        (void) ngx_chat_events_append(e, line, p - line);
    }

    e->closing = 1;
    ngx_chat_events_post(e);
}


static void
ngx_chat_events_sse_ping(ngx_event_t *ev)
{
    ngx_chat_events_t  *e = ev->data;

    if (e->closing) {
        return;
    }

    if (e->out_len == 0 && e->sending == NULL) {
        (void) ngx_chat_events_append(e, (u_char *) ": ping\n\n", 8);
        ngx_chat_events_post(e);
    }

    ngx_add_timer(&e->timer, e->session.conf->ws.ping_interval);
}


static void
ngx_chat_events_sse_writer(ngx_http_request_t *r)
{
    ngx_chat_api_ctx_t  *ctx;
    ngx_chat_events_t   *e;

    ctx = ngx_http_get_module_ctx(r, ngx_chat_module);
    e = ctx->data;

    if (r->connection->write->timedout) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                      "chat events: client timed out");
        r->connection->timedout = 1;
        e->answered = 1;
        ngx_chat_events_end(e);
        ngx_chat_api_finish(ctx, NGX_ERROR);
        return;
    }

    ngx_chat_events_sse_write(&e->ev);
}


/*
 * What was appended goes to nginx once what nginx had is written; the
 * sync reads its next page then.  A closing stream ends with the last
 * chunk.
 */

static void
ngx_chat_events_sse_write(ngx_event_t *ev)
{
    ngx_int_t                  rc;
    ngx_chain_t                cl;
    ngx_event_t               *wev;
    ngx_chat_events_t         *e = ev->data;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    if (e->answered) {
        return;
    }

    r = e->request;
    wev = r->connection->write;

    if (e->closing) {
        ngx_chat_events_end(e);
    }

    for ( ;; ) {

        if (e->sending) {
            rc = ngx_http_output_filter(r, NULL);

            if (rc == NGX_ERROR) {
                goto failed;
            }

            if (rc == NGX_AGAIN) {
                goto again;
            }

            ngx_free(e->sending);
            e->sending = NULL;
            e->sending_len = 0;
        }

        if (e->out_len == 0) {
            break;
        }

        e->sending = e->out;
        e->sending_len = e->out_len;
        e->out = NULL;

        ngx_memzero(&e->buf, sizeof(ngx_buf_t));
        e->buf.start = e->sending;
        e->buf.pos = e->sending;
        e->buf.last = e->sending + e->out_len;
        e->buf.end = e->buf.last;
        e->buf.memory = 1;
        e->buf.flush = 1;

        e->out_len = 0;
        e->out_size = 0;

        cl.buf = &e->buf;
        cl.next = NULL;

        rc = ngx_http_output_filter(r, &cl);

        if (rc == NGX_ERROR) {
            goto failed;
        }

        if (rc == NGX_AGAIN) {
            goto again;
        }
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (e->closing) {
        e->answered = 1;
        ngx_chat_api_finish(e->ctx, ngx_http_send_special(r, NGX_HTTP_LAST));
        return;
    }

    ngx_chat_session_drained(&e->session);

    return;

again:

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }

    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        goto failed;
    }

    return;

failed:

    e->answered = 1;
    ngx_chat_events_end(e);
    ngx_chat_api_finish(e->ctx, NGX_ERROR);
}


/* --------------------------------------------------------------- calls */


/* a call keeps its "sent", its presence states, and its first error */

static ngx_int_t
ngx_chat_events_call_send(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    char               *dump;
    ngx_str_t           text;
    ngx_chat_events_t  *e = s->data;

    if (e->closing) {
        return NGX_ERROR;
    }

    switch (out->kind) {

    case NGX_CHAT_OUT_ERROR:
        return ngx_chat_events_error(e, out);

    case NGX_CHAT_OUT_SENT:

        if (e->sent.data || out->json == NULL) {
            return NGX_OK;
        }

        dump = json_dumps(out->json, JSON_COMPACT);
        if (dump == NULL) {
            return NGX_ERROR;
        }

        text.data = (u_char *) dump;
        text.len = ngx_strlen(dump);

        e->sent.data = ngx_pstrdup(e->request->pool, &text);
        e->sent.len = e->sent.data ? text.len : 0;
        free(dump);

        return e->sent.data ? NGX_OK : NGX_ERROR;

    case NGX_CHAT_OUT_PRESENCE:
        return ngx_chat_events_item(e, out);

    default:
        return NGX_OK;
    }
}


static ngx_uint_t
ngx_chat_events_call_room(ngx_chat_session_t *s, size_t len)
{
    return 1;
}


static void
ngx_chat_events_call_settled(ngx_chat_session_t *s)
{
    ngx_chat_events_post(s->data);
}


static void
ngx_chat_events_call_answer(ngx_event_t *ev)
{
    ngx_str_t          *path;
    ngx_chat_events_t  *e = ev->data;

    if (e->answered) {
        return;
    }

    e->answered = 1;

    ngx_chat_events_end(e);

    if (e->close_code || e->error) {
        ngx_chat_api_finish(e->ctx, ngx_chat_events_fail(e));
        return;
    }

    path = &e->ctx->route->path;

    if (path->len == 8 && ngx_strncmp(path->data, "presence", 8) == 0) {
        ngx_chat_api_finish(e->ctx, ngx_chat_events_array(e));
        return;
    }

    if (path->len == 4 && ngx_strncmp(path->data, "send", 4) == 0) {
        ngx_chat_api_finish(e->ctx,
                            e->sent.data
                            ? ngx_chat_json_send(e->request, NGX_HTTP_OK,
                                                 e->sent.data, e->sent.len)
                            : ngx_chat_api_unavailable(e->ctx));
        return;
    }

    ngx_chat_api_finish(e->ctx, NGX_HTTP_NO_CONTENT);
}
