
/*
 * The chat endpoint (chat_ws): one session per WebSocket; the HTTP
 * fallback (ngx_chat_events.c) makes sessions of its own, through
 * ngx_chat_session_init(), _identify(), _begin() and _end().
 *
 *   AUTH_WAIT  -- "auth" or a Bearer header --> AUTH_CHECK
 *   AUTH_CHECK -- token valid --> CURSORS ("ready" sent, user channel
 *                 subscribed); invalid --> close 4001
 *   CURSORS    -- the device's cursors loaded --> SYNCING
 *   SYNCING    -- everything owed sent --> READY ("synced")
 *   READY      -- live messages; send, ack, ping at any time after auth
 *
 * Sessions of a user on this worker hang off one node of an index keyed
 * by the user's Redis channel, so a message published to the user reaches
 * each of them once; revocations ("revoke" with a device id) close that
 * device's sessions with 4001 on whatever worker or host holds them.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws_conn.h"
#include "ngx_chat_session.h"
#include "ngx_chat_auth.h"
#include "ngx_chat_metrics.h"


struct ngx_chat_session_user_s {
    ngx_str_node_t             node;         /* key: the user's channel */
    ngx_queue_t                sessions;
};


static void ngx_chat_session_opened(ngx_chat_ws_conn_t *wc);
static void ngx_chat_session_message(ngx_chat_ws_conn_t *wc,
    ngx_uint_t opcode, u_char *data, size_t len);
static void ngx_chat_session_closed(ngx_chat_ws_conn_t *wc);
static void ngx_chat_session_auth(ngx_chat_session_t *s, ngx_str_t *token);
static void ngx_chat_session_authed(void *data, ngx_int_t rc,
    ngx_chat_auth_identity_t *id);
static void ngx_chat_session_auth_timeout(ngx_event_t *ev);
static ngx_int_t ngx_chat_session_join(ngx_chat_session_t *s);
static void ngx_chat_session_leave(ngx_chat_session_t *s);
static ngx_int_t ngx_chat_session_closing(ngx_chat_ws_conn_t *wc,
    ngx_uint_t code);
static void ngx_chat_session_drained(ngx_chat_ws_conn_t *wc);
static void ngx_chat_session_pubsub(ngx_str_t *channel, ngx_str_t *message);
static void ngx_chat_session_live(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text);
static void ngx_chat_session_revoke(ngx_chat_session_user_t *u, json_t *msg);
static void ngx_chat_session_receipt(ngx_chat_session_user_t *u, json_t *msg);
static void ngx_chat_session_link(void);
static void ngx_chat_session_link_walk(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static void ngx_chat_session_ws_send(ngx_chat_session_t *s, u_char *text,
    size_t len);
static void ngx_chat_session_ws_close(ngx_chat_session_t *s,
    ngx_uint_t code, const char *reason);
static ngx_uint_t ngx_chat_session_ws_busy(ngx_chat_session_t *s);


static ngx_chat_ws_handler_t  ngx_chat_session_handlers = {
    ngx_chat_session_opened,
    ngx_chat_session_message,
    ngx_chat_session_closing,
    ngx_chat_session_drained,
    ngx_chat_session_closed,
    sizeof(ngx_chat_session_t)
};


static ngx_chat_session_transport_t  ngx_chat_session_ws = {
    ngx_chat_session_ws_send,
    ngx_chat_session_ws_close,
    ngx_chat_session_ws_busy,
    NULL,
    NULL,
    NULL
};


static ngx_rbtree_t       ngx_chat_session_users;
static ngx_rbtree_node_t  ngx_chat_session_sentinel;
static ngx_uint_t         ngx_chat_session_n;


ngx_int_t
ngx_chat_session_init_worker(ngx_cycle_t *cycle)
{
    ngx_rbtree_init(&ngx_chat_session_users, &ngx_chat_session_sentinel,
                    ngx_str_rbtree_insert_value);

    ngx_chat_redis_on_message(ngx_chat_session_pubsub);
    ngx_chat_redis_on_link(ngx_chat_session_link);

    return NGX_OK;
}


ngx_uint_t
ngx_chat_session_count(void)
{
    return ngx_chat_session_n;
}


ngx_int_t
ngx_chat_session_handler(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_str_t             token;
    ngx_table_elt_t      *h;
    ngx_chat_ws_conn_t   *wc;
    ngx_chat_session_t   *s;
    ngx_chat_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_chat_module);

    rc = ngx_chat_ws_upgrade(r, &clcf->ws, &ngx_chat_session_handlers, &wc);

    if (rc != NGX_DONE) {
        return rc;
    }

    s = wc->data;
    s->data = wc;
    s->conf = clcf;

    /* the request is freed before opened(): keep the token on c->pool */

    switch (ngx_chat_auth_bearer(r, &token)) {

    case NGX_OK:
        s->token.data = ngx_pstrdup(r->connection->pool, &token);
        s->token.len = s->token.data ? token.len : 0;
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
            s->bad_header = 1;
        }

        break;

    default: /* NGX_DECLINED: no Authorization, an "auth" message follows */
        break;
    }

    return NGX_DONE;
}


static void
ngx_chat_session_opened(ngx_chat_ws_conn_t *wc)
{
    ngx_chat_session_t  *s = wc->data;

    ngx_chat_session_init(s, &ngx_chat_session_ws, wc, s->conf,
                          wc->connection->log, wc->connection->pool);

    if (s->bad_header) {
        ngx_chat_session_authed(s, NGX_DECLINED, NULL);
        return;
    }

    if (s->token.len) {
        ngx_chat_session_auth(s, &s->token);
        return;
    }

    ngx_add_timer(&s->auth_timer, s->conf->auth_timeout);
}


/* a session made by its transport, which keeps s->conf in it */

void
ngx_chat_session_init(ngx_chat_session_t *s,
    ngx_chat_session_transport_t *transport, void *data,
    ngx_chat_loc_conf_t *conf, ngx_log_t *log, ngx_pool_t *pool)
{
    s->transport = transport;
    s->data = data;
    s->conf = conf;
    s->log = log;
    s->pool = pool;

    ngx_queue_init(&s->queue);
    ngx_queue_init(&s->early);
    ngx_queue_init(&s->sends);
    ngx_queue_init(&s->reads);
    ngx_queue_init(&s->watches);
    ngx_queue_init(&s->presence_asks);
    ngx_rbtree_init(&s->chats, &s->sentinel, ngx_rbtree_insert_value);

    s->auth_timer.handler = ngx_chat_session_auth_timeout;
    s->auth_timer.data = s;
    s->auth_timer.log = log;
    s->auth_timer.cancelable = 1;

    ngx_chat_session_n++;
    ngx_chat_metrics_add(connections, 1);
}


static void
ngx_chat_session_closed(ngx_chat_ws_conn_t *wc)
{
    ngx_chat_session_end(wc->data);
}


/* the transport has gone: nothing calls back into the session after this */

void
ngx_chat_session_end(ngx_chat_session_t *s)
{
    if (s->auth_timer.timer_set) {
        ngx_del_timer(&s->auth_timer);
    }

    if (s->query) {
        ngx_chat_pg_cancel(s->query);
        s->query = NULL;
    }

    if (s->user) {
        ngx_chat_session_leave(s);
    }

    ngx_chat_sync_cleanup(s);
    ngx_chat_send_cleanup(s);
    ngx_chat_receipt_cleanup(s);
    ngx_chat_presence_cleanup(s);

    ngx_chat_session_n--;
    ngx_chat_metrics_add(connections, -1);
}


static void
ngx_chat_session_message(ngx_chat_ws_conn_t *wc, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    json_t              *msg, *token;
    ngx_str_t            t;
    const char          *type;
    json_error_t         err;
    ngx_chat_session_t  *s = wc->data;

    msg = (opcode == NGX_CHAT_WS_OP_TEXT)
          ? json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &err)
          : NULL;

    type = json_is_object(msg)
           ? json_string_value(json_object_get(msg, "type")) : NULL;

    switch (s->state) {

    case NGX_CHAT_SESSION_AUTH_WAIT:
        token = json_object_get(msg, "token");

        if (type == NULL || ngx_strcmp(type, "auth") != 0
            || !json_is_string(token))
        {
            ngx_log_error(NGX_LOG_INFO, wc->connection->log, 0,
                          "chat session: first message is not \"auth\"");
            ngx_chat_ws_close(wc, NGX_CHAT_CLOSE_UNAUTHORIZED,
                              "auth required");
            break;
        }

        t.data = (u_char *) json_string_value(token);
        t.len = json_string_length(token);

        ngx_chat_session_auth(s, &t);
        break;

    case NGX_CHAT_SESSION_AUTH_CHECK:
        ngx_chat_session_error(s, json_object_get(msg, "id"), "unauthorized",
                               "not authenticated yet");
        break;

    default: /* authenticated */

        if (type == NULL) {
            ngx_chat_session_error(s, json_object_get(msg, "id"),
                                   "bad_request",
                                   "a JSON object with a \"type\" expected");
            break;
        }

        ngx_chat_session_dispatch(s, msg);
        break;
    }

    json_decref(msg);
}


static void
ngx_chat_session_auth(ngx_chat_session_t *s, ngx_str_t *token)
{
    s->state = NGX_CHAT_SESSION_AUTH_CHECK;

    if (!ngx_chat_auth_token_valid(token)) {
        ngx_chat_session_authed(s, NGX_DECLINED, NULL);
        return;
    }

    s->query = ngx_chat_auth_check(token, ngx_chat_session_authed, s,
                                   s->pool, s->log);

    if (s->query == NULL) {
        ngx_chat_session_authed(s, NGX_ERROR, NULL);
    }
}


static void
ngx_chat_session_authed(void *data, ngx_int_t rc, ngx_chat_auth_identity_t *id)
{
    ngx_chat_session_t  *s = data;

    s->query = NULL;

    if (s->auth_timer.timer_set) {
        ngx_del_timer(&s->auth_timer);
    }

    if (rc == NGX_ERROR) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
        return;
    }

    if (rc != NGX_OK
        || ngx_chat_session_identify(s, &id->user_id, &id->device_id)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "chat session: invalid token");
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_UNAUTHORIZED,
                               "invalid token");
        return;
    }

    ngx_chat_session_begin(s);
}


/* the device the session is for, once its token is checked */

ngx_int_t
ngx_chat_session_identify(ngx_chat_session_t *s, ngx_str_t *user,
    ngx_str_t *device)
{
    if (user->len > NGX_CHAT_ID_LEN || device->len > NGX_CHAT_ID_LEN) {
        return NGX_ERROR;
    }

    s->user_id.data = s->ids;
    s->user_id.len = user->len;
    ngx_memcpy(s->user_id.data, user->data, user->len);

    s->device_id.data = s->ids + NGX_CHAT_ID_LEN;
    s->device_id.len = device->len;
    ngx_memcpy(s->device_id.data, device->data, device->len);

    s->device = ngx_atoof(s->device_id.data, s->device_id.len);

    return NGX_OK;
}


/*
 * An identified session starts: live messages, "ready", the sync.  A
 * call (one HTTP request of the fallback) takes none of it.
 */

void
ngx_chat_session_begin(ngx_chat_session_t *s)
{
    json_t  *ready;

    s->begin_wait = 0;

    if (s->call) {
        s->state = NGX_CHAT_SESSION_READY;
        return;
    }

    if (ngx_chat_session_join(s) != NGX_OK) {
        ngx_chat_session_close(s, NGX_CHAT_WS_CLOSE_ERROR, "internal error");
        return;
    }

    s->state = NGX_CHAT_SESSION_CURSORS;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session state: cursors, user %V device %V",
                   &s->user_id, &s->device_id);

    if (!s->poll) {
        ready = json_pack("{s:s,s:s%,s:s%,s:I}", "type", "ready",
                          "user_id", s->user_id.data, s->user_id.len,
                          "device_id", s->device_id.data, s->device_id.len,
                          "server_time", (json_int_t) ngx_time() * 1000
                                       + (json_int_t) ngx_timeofday()->msec);

        ngx_chat_session_send(s, ready);
        json_decref(ready);
    }

    ngx_chat_sync_start(s);

    if (s->transport->begun) {
        s->transport->begun(s);
    }
}


static void
ngx_chat_session_auth_timeout(ngx_event_t *ev)
{
    ngx_chat_session_t  *s = ev->data;

    if (s->close_code) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "chat session: acks not applied within 1s of close");
        ngx_chat_session_close(s, s->close_code, NULL);
        return;
    }

    if (s->begin_wait) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "chat session: acks not applied within 1s");
        ngx_chat_session_begin(s);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0, "chat session: no auth in time");

    ngx_chat_session_close(s, NGX_CHAT_CLOSE_AUTH_TIMEOUT, "auth timeout");
}


/* subscribes the user's channel and files the session under it */

static ngx_int_t
ngx_chat_session_join(ngx_chat_session_t *s)
{
    uint32_t                 hash;
    ngx_str_t                channel;
    ngx_str_node_t          *sn;
    ngx_chat_session_user_t *u;

    if (ngx_chat_redis_user_channel(s->pool, &s->user_id,
                                    &channel)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    hash = ngx_crc32_long(channel.data, channel.len);
    sn = ngx_str_rbtree_lookup(&ngx_chat_session_users, &channel, hash);

    if (sn == NULL) {
        u = ngx_alloc(sizeof(ngx_chat_session_user_t) + channel.len, s->log);
        if (u == NULL) {
            return NGX_ERROR;
        }

        u->node.node.key = hash;
        u->node.str.len = channel.len;
        u->node.str.data = (u_char *) (u + 1);
        ngx_memcpy(u->node.str.data, channel.data, channel.len);
        ngx_queue_init(&u->sessions);

        if (ngx_chat_redis_subscribe(&u->node.str) != NGX_OK) {
            ngx_free(u);
            return NGX_ERROR;
        }

        ngx_rbtree_insert(&ngx_chat_session_users, &u->node.node);

        ngx_chat_presence_up(&s->user_id);

    } else {
        u = (ngx_chat_session_user_t *) sn;
    }

    ngx_queue_insert_tail(&u->sessions, &s->queue);
    s->user = u;

    return NGX_OK;
}


static void
ngx_chat_session_leave(ngx_chat_session_t *s)
{
    ngx_chat_session_user_t  *u = s->user;

    ngx_queue_remove(&s->queue);
    s->user = NULL;

    if (!ngx_queue_empty(&u->sessions)) {
        return;
    }

    ngx_chat_redis_unsubscribe(&u->node.str);
    ngx_rbtree_delete(&ngx_chat_session_users, &u->node.node);
    ngx_free(u);

    ngx_chat_presence_down(&s->user_id);
}


void
ngx_chat_session_dispatch(ngx_chat_session_t *s, json_t *msg)
{
    json_t      *pong;
    const char  *type;

    type = json_string_value(json_object_get(msg, "type"));

    if (ngx_strcmp(type, "send") == 0) {
        ngx_chat_send_message(s, msg);

    } else if (ngx_strcmp(type, "ack") == 0) {
        ngx_chat_ack_message(s, msg);

    } else if (ngx_strcmp(type, "read") == 0) {
        ngx_chat_receipt_read(s, msg);

    } else if (ngx_strcmp(type, "presence") == 0) {
        ngx_chat_presence_message(s, msg);

    } else if (ngx_strcmp(type, "ping") == 0) {
        pong = json_pack("{s:s,s:O?}", "type", "pong",
                         "t", json_object_get(msg, "t"));
        ngx_chat_session_send(s, pong);
        json_decref(pong);

    } else {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "bad_request",
                               "unknown message type");
    }
}


/*
 * The device closes: its acks are applied before the close is answered
 * (PROTOCOL.md 5.3), so a reconnect anywhere is not sent them again.
 * The auth timer, idle since "ready", bounds the wait.
 */

static ngx_int_t
ngx_chat_session_closing(ngx_chat_ws_conn_t *wc, ngx_uint_t code)
{
    ngx_chat_session_t  *s = wc->data;

    if (s->state < NGX_CHAT_SESSION_CURSORS) {
        return NGX_OK;
    }

    if (s->acks == 0) {
        return NGX_OK;
    }

    s->close_code = code;

    if (s->auth_timer.timer_set) {
        ngx_del_timer(&s->auth_timer);
    }

    ngx_add_timer(&s->auth_timer, 1000);

    return NGX_AGAIN;
}


static void
ngx_chat_session_ws_send(ngx_chat_session_t *s, u_char *text, size_t len)
{
    /* a client too slow for its queue is closed by ngx_chat_ws_send() */
    (void) ngx_chat_ws_send(s->data, NGX_CHAT_WS_OP_TEXT, text, len);
}


static void
ngx_chat_session_ws_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason)
{
    ngx_chat_ws_close(s->data, code, reason);
}


static ngx_uint_t
ngx_chat_session_ws_busy(ngx_chat_session_t *s)
{
    ngx_chat_ws_conn_t  *wc = s->data;

    return wc->queued != 0;
}


/*
 * The session's last pending ack is applied: a closing device gets the
 * answer to its close, a long-poll or stream waiting for the acks of its
 * request begins.
 */

void
ngx_chat_session_acks_applied(ngx_chat_session_t *s)
{
    if (s->close_code || s->begin_wait) {
        if (s->auth_timer.timer_set) {
            ngx_del_timer(&s->auth_timer);
        }

        if (s->close_code) {
            ngx_chat_session_close(s, s->close_code, NULL);
            return;
        }

        ngx_chat_session_begin(s);
        return;
    }

    ngx_chat_session_settle(s);
}


/* tells a transport that wants it that nothing asked is in flight */

void
ngx_chat_session_settle(ngx_chat_session_t *s)
{
    if (s->transport->settled == NULL
        || s->nsends || s->acks || s->nreads
        || !ngx_queue_empty(&s->presence_asks)
        || ngx_chat_presence_pending(s))
    {
        return;
    }

    s->transport->settled(s);
}


static void
ngx_chat_session_drained(ngx_chat_ws_conn_t *wc)
{
    ngx_chat_session_t  *s = wc->data;

    if (s->state == NGX_CHAT_SESSION_SYNCING) {
        ngx_chat_sync_drained(s);
    }
}


/* msg is consumed */

void
ngx_chat_session_send(ngx_chat_session_t *s, json_t *msg)
{
    char  *text;

    if (msg == NULL) {
        return;
    }

    text = json_dumps(msg, JSON_COMPACT);
    if (text == NULL) {
        return;
    }

    ngx_chat_session_send_text(s, (u_char *) text, ngx_strlen(text));
    free(text);
}


void
ngx_chat_session_send_text(ngx_chat_session_t *s, u_char *text, size_t len)
{
    s->transport->send(s, text, len);
}


/* {"type":"error","id"?,"code","message"}: "id" echoes the request's */

void
ngx_chat_session_error(ngx_chat_session_t *s, json_t *id, const char *code,
    const char *message)
{
    json_t  *err;

    err = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code,
                    "message", message);

    if (err && json_is_string(id)) {
        json_object_set(err, "id", id);
    }

    ngx_chat_session_send(s, err);
    json_decref(err);
}


/* chat and user ids travel as strings of a positive bigint */

ngx_int_t
ngx_chat_session_parse_id(json_t *value, int64_t *id)
{
    off_t        n;
    const char  *p;

    p = json_string_value(value);

    if (p == NULL || json_string_length(value) == 0
        || json_string_length(value) > NGX_CHAT_ID_LEN - 1)
    {
        return NGX_ERROR;
    }

    n = ngx_atoof((u_char *) p, json_string_length(value));

    if (n <= 0) {
        return NGX_ERROR;
    }

    *id = n;

    return NGX_OK;
}


/*
 * What Redis brings for a user goes to each of the user's sessions here:
 * live messages (parsed once for all of them) and revocations.
 */

static void
ngx_chat_session_pubsub(ngx_str_t *channel, ngx_str_t *message)
{
    json_t          *msg;
    uint32_t         hash;
    const char      *type;
    ngx_str_node_t  *sn;

    hash = ngx_crc32_long(channel->data, channel->len);
    sn = ngx_str_rbtree_lookup(&ngx_chat_session_users, channel, hash);

    if (sn == NULL) {
        (void) ngx_chat_presence_pubsub(channel, message);
        return;
    }

    msg = json_loadb((char *) message->data, message->len, 0, NULL);
    type = json_string_value(json_object_get(msg, "type"));

    if (type == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: unreadable message on \"%V\"", channel);

    } else if (ngx_strcmp(type, "msg") == 0) {
        ngx_chat_session_live((ngx_chat_session_user_t *) sn, msg, message);

    } else if (ngx_strcmp(type, "revoke") == 0) {
        ngx_chat_session_revoke((ngx_chat_session_user_t *) sn, msg);

    } else if (ngx_strcmp(type, "receipt") == 0) {
        ngx_chat_session_receipt((ngx_chat_session_user_t *) sn, msg);
    }

    json_decref(msg);
}


static void
ngx_chat_session_live(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text)
{
    int64_t              chat, device;
    json_int_t           seq;
    ngx_queue_t         *q, *next;
    ngx_chat_session_t  *s;

    seq = json_integer_value(json_object_get(msg, "seq"));

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), &chat)
        != NGX_OK || seq <= 0)
    {
        return;
    }

    if (ngx_chat_session_parse_id(json_object_get(msg, "from_device"),
                                  &device)
        != NGX_OK)
    {
        device = 0;
    }

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_chat_session_t, queue);

        ngx_chat_sync_offer(s, chat, seq, device == s->device, text->data,
                            text->len);
    }
}


static void
ngx_chat_session_revoke(ngx_chat_session_user_t *u, json_t *msg)
{
    ngx_str_t            device;
    ngx_queue_t         *q, *next;
    ngx_chat_session_t  *s;

    device.data = (u_char *) json_string_value(
                                 json_object_get(msg, "device_id"));
    device.len = device.data ? ngx_strlen(device.data) : 0;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_chat_session_t, queue);

        if (s->device_id.len == device.len
            && ngx_strncmp(s->device_id.data, device.data, device.len) == 0)
        {
            ngx_log_error(NGX_LOG_INFO, s->log, 0,
                          "chat session: device %V unlinked",
                          &s->device_id);
            ngx_chat_session_close(s, NGX_CHAT_CLOSE_UNAUTHORIZED,
                                   "device unlinked");
        }
    }
}


/*
 * A receipt goes to every session of the user, but the one of the device
 * it names (the reader's, which knows what it read).
 */

static void
ngx_chat_session_receipt(ngx_chat_session_user_t *u, json_t *msg)
{
    char                *text;
    u_char               tag[NGX_CHAT_ID_LEN];
    size_t               len;
    ngx_str_t            device;
    const char          *value;
    ngx_queue_t         *q, *next;
    ngx_chat_session_t  *s;

    /* the tag is for the server: clients get the receipt as specified */

    value = json_string_value(json_object_get(msg, "device_id"));

    device.data = NULL;
    device.len = 0;

    if (value) {
        device.len = ngx_min(ngx_strlen(value), sizeof(tag));
        device.data = ngx_cpymem(tag, value, device.len) - device.len;
        json_object_del(msg, "device_id");
    }

    text = json_dumps(msg, JSON_COMPACT);
    if (text == NULL) {
        return;
    }

    len = ngx_strlen(text);

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_chat_session_t, queue);

        if (s->state < NGX_CHAT_SESSION_SYNCING
            || (device.data && s->device_id.len == device.len
                && ngx_strncmp(s->device_id.data, device.data, device.len)
                   == 0))
        {
            continue;
        }

        ngx_chat_session_send_text(s, (u_char *) text, len);
    }

    free(text);
}


/*
 * The subscription link came back: what was published while it was away
 * is lost, but stored; every session reads it back from PostgreSQL.
 */

static void
ngx_chat_session_link(void)
{
    ngx_chat_session_link_walk(ngx_chat_session_users.root,
                               ngx_chat_session_users.sentinel);

    ngx_chat_presence_link();
}


/* each user with a session here, once */

void
ngx_chat_session_each_user(void (*handler)(ngx_str_t *user_id))
{
    ngx_rbtree_node_t        *node, *root, *sentinel;
    ngx_chat_session_t       *s;
    ngx_chat_session_user_t  *u;

    root = ngx_chat_session_users.root;
    sentinel = ngx_chat_session_users.sentinel;

    if (root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_chat_session_users, node))
    {
        u = (ngx_chat_session_user_t *) node;
        s = ngx_queue_data(ngx_queue_head(&u->sessions), ngx_chat_session_t,
                           queue);
        handler(&s->user_id);
    }
}


static void
ngx_chat_session_link_walk(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_queue_t              *q;
    ngx_chat_session_user_t  *u;

    if (node == sentinel) {
        return;
    }

    ngx_chat_session_link_walk(node->left, sentinel);

    u = (ngx_chat_session_user_t *) node;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        ngx_chat_sync_resync(ngx_queue_data(q, ngx_chat_session_t, queue));
    }

    ngx_chat_session_link_walk(node->right, sentinel);
}
