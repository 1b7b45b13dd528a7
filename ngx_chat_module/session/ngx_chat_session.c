
/*
 * The session core (ngx_chat_session.h): lifecycle, authentication, the
 * per-user index, client messages and notices to the features, and the
 * output with its flow control.
 *
 * Sessions of a user on this worker hang off one node of an index keyed
 * by the user's Redis channel, which the node owns: a message published
 * to the user reaches each of them once.  What comes on the channel is
 * typed: "msg" is a live message (the order, ngx_chat_order.c), and the
 * rest goes to the feature that takes that type.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_session.h"
#include "ngx_chat_auth.h"
#include "ngx_chat_event.h"
#include "ngx_chat_metrics.h"


#define NGX_CHAT_SESSION_HOLD  1000     /* ms a close or begin waits for
                                           requests in flight */


static void ngx_chat_session_authed(void *data, ngx_int_t rc,
    ngx_chat_auth_identity_t *id);
static void ngx_chat_session_auth_timeout(ngx_event_t *ev);
static void ngx_chat_session_start(ngx_chat_session_t *s);
static void ngx_chat_session_hold_timeout(ngx_event_t *ev);
static ngx_uint_t ngx_chat_session_holding(ngx_chat_session_t *s,
    ngx_uint_t flags);
static ngx_int_t ngx_chat_session_join(ngx_chat_session_t *s);
static void ngx_chat_session_leave(ngx_chat_session_t *s);
static ngx_chat_session_user_t *ngx_chat_session_next_user(
    ngx_chat_session_user_t *u);
static void ngx_chat_session_user_message(void *data, ngx_str_t *message);
static void ngx_chat_session_live(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text);
static void ngx_chat_session_check(ngx_chat_session_t *s, ngx_str_t *token);
static void ngx_chat_session_started(ngx_chat_session_t *s);
static void ngx_chat_session_admit_next(ngx_event_t *ev);
static ngx_uint_t ngx_chat_session_may_start(void);
static void ngx_chat_session_poll(ngx_event_t *ev);
static u_char *ngx_chat_session_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


/* the core's own types on a user's channel */
static ngx_chat_notice_t  ngx_chat_session_notices[] = {
    { ngx_string("msg"), ngx_chat_session_live },
    { ngx_null_string, NULL }
};


static ngx_chat_feature_t  **ngx_chat_session_features;
static ngx_uint_t            ngx_chat_session_nfeatures;
static ngx_rbtree_t          ngx_chat_session_users;
static ngx_rbtree_node_t     ngx_chat_session_sentinel;
static ngx_uint_t            ngx_chat_session_n;

/*
 * While Redis is down no live message comes, but PostgreSQL has them: the
 * sessions read what they are owed on a timer instead (the resync that
 * follows an outage, done early and again). A round reads every user of
 * the worker once, NGX_CHAT_SESSION_POLL_USERS users a tick, none while
 * PostgreSQL's queue is half full, and a round starts at most every
 * chat_redis_down_poll: a device gets a message within about that time
 * while Redis is away, and the worker adds at most ~1,000 reads a second
 * to PostgreSQL's load, however many sessions it holds.
 */

#define NGX_CHAT_SESSION_POLL_TICK   250
#define NGX_CHAT_SESSION_POLL_USERS  256

/*
 * A session starting (token check, cursors, the sync's first page, marks,
 * presence) asks PostgreSQL a handful of queries at once. When thousands
 * of devices come back together (a network blip, a host back), their
 * queries would fill the pool's queue and be refused. A session starting
 * has at most two queries in flight at a time (the token check, then the
 * cursors and the sync's pages, then the marks): a quarter of
 * chat_postgres_max_waiting sessions of a worker start at a time, none
 * while the queue is half full, and the others wait their turn in order,
 * holding only their socket. A session gives its turn up once ready, once
 * it ends, and as soon as it waits for its client to read (a slow client
 * does not hold others back).
 */

#define NGX_CHAT_SESSION_ADMIT_RETRY  50    /* ms, while PostgreSQL is busy */

static ngx_queue_t           ngx_chat_session_admit;
static ngx_uint_t            ngx_chat_session_starting;
static ngx_event_t           ngx_chat_session_admit_ev;

static ngx_event_t           ngx_chat_session_poll_ev;
static ngx_msec_t            ngx_chat_session_poll_every;
static ngx_msec_t            ngx_chat_session_poll_start;
static ngx_uint_t            ngx_chat_session_round;
static ngx_uint_t            ngx_chat_session_polling;


ngx_int_t
ngx_chat_session_init_worker(ngx_chat_feature_t **features,
    ngx_msec_t redis_down_poll, ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    ngx_rbtree_init(&ngx_chat_session_users, &ngx_chat_session_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&ngx_chat_session_admit);
    ngx_chat_event_init(&ngx_chat_session_admit_ev,
                        ngx_chat_session_admit_next, cycle->log);
    ngx_chat_session_admit_ev.cancelable = 1;

    if (redis_down_poll) {
        ngx_chat_session_poll_every = redis_down_poll;
        ngx_chat_event_init(&ngx_chat_session_poll_ev, ngx_chat_session_poll,
                            cycle->log);
        ngx_chat_session_poll_ev.cancelable = 1;
        ngx_add_timer(&ngx_chat_session_poll_ev, redis_down_poll);
    }

    ngx_chat_session_features = features;

    for (i = 0; features[i]; i++) {
        if (i == NGX_CHAT_FEATURES_MAX) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "chat: more than %d session features",
                          NGX_CHAT_FEATURES_MAX);
            return NGX_ERROR;
        }

        features[i]->index = i;

        if (features[i]->init_worker
            && features[i]->init_worker(cycle) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_chat_session_nfeatures = i;

    return NGX_OK;
}


void
ngx_chat_session_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    if (ngx_chat_session_poll_ev.timer_set) {
        ngx_del_timer(&ngx_chat_session_poll_ev);
    }

    if (ngx_chat_session_admit_ev.posted) {
        ngx_delete_posted_event(&ngx_chat_session_admit_ev);
    }

    if (ngx_chat_session_admit_ev.timer_set) {
        ngx_del_timer(&ngx_chat_session_admit_ev);
    }

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        if (ngx_chat_session_features[i]->exit_worker) {
            ngx_chat_session_features[i]->exit_worker(cycle);
        }
    }
}


ngx_uint_t
ngx_chat_session_count(void)
{
    return ngx_chat_session_n;
}


/*
 * A session made by its transport; log is the transport's, which the
 * session makes name its user and device once they are known.
 */

void
ngx_chat_session_init(ngx_chat_session_t *s, ngx_chat_transport_t *transport,
    void *data, ngx_chat_loc_conf_t *conf, ngx_log_t *log, ngx_pool_t *pool)
{
    s->transport = transport;
    s->data = data;
    s->conf = conf;
    s->log = log;
    s->pool = pool;

    ngx_queue_init(&s->queue);
    ngx_queue_init(&s->admit);
    ngx_queue_init(&s->waiters);
    ngx_queue_init(&s->behind);
    ngx_rbtree_init(&s->chats, &s->sentinel, ngx_rbtree_insert_value);

    s->auth_timer.handler = ngx_chat_session_auth_timeout;
    s->auth_timer.data = s;
    s->auth_timer.log = log;
    s->auth_timer.cancelable = 1;

    s->hold_timer.handler = ngx_chat_session_hold_timeout;
    s->hold_timer.data = s;
    s->hold_timer.log = log;
    s->hold_timer.cancelable = 1;

    s->behind_waiter.handler = ngx_chat_order_drained;
    s->behind_waiter.data = s;

    ngx_chat_session_n++;
    ngx_chat_metrics_sessions(ngx_chat_session_n);
}


/*
 * "auth", or a Bearer header: the token is checked.  NULL: the session
 * waits chat_ws_auth_timeout for an "auth" message.
 */

void
ngx_chat_session_auth(ngx_chat_session_t *s, ngx_str_t *token)
{
    if (token == NULL) {
        ngx_add_timer(&s->auth_timer, s->conf->auth_timeout);
        return;
    }

    s->state = NGX_CHAT_SESSION_AUTH_CHECK;

    if (s->auth_timer.timer_set) {
        ngx_del_timer(&s->auth_timer);
    }

    if (!ngx_chat_auth_token_valid(token)) {
        ngx_chat_session_authed(s, NGX_DECLINED, NULL);
        return;
    }

    if (ngx_queue_empty(&ngx_chat_session_admit)
        && ngx_chat_session_may_start())
    {
        ngx_chat_session_check(s, token);
        return;
    }

    /* its turn comes when a session before it has started */

    s->token.data = ngx_pnalloc(s->pool, token->len);
    if (s->token.data == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_ERROR, "no memory");
        return;
    }

    s->token.len = ngx_cpymem(s->token.data, token->data, token->len)
                   - s->token.data;
    s->admitting = 1;
    ngx_queue_insert_tail(&ngx_chat_session_admit, &s->admit);

    if (ngx_chat_session_starting == 0 && !ngx_chat_session_admit_ev.timer_set
        && !ngx_chat_session_admit_ev.posted)
    {
        /* none starting: nobody gives a turn up, PostgreSQL is busy */
        ngx_add_timer(&ngx_chat_session_admit_ev,
                      NGX_CHAT_SESSION_ADMIT_RETRY);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session: waits its turn to start, %ui starting",
                   ngx_chat_session_starting);
}


static void
ngx_chat_session_check(ngx_chat_session_t *s, ngx_str_t *token)
{
    s->starting = 1;
    ngx_chat_session_starting++;

    s->auth = ngx_chat_auth_check(token, ngx_chat_session_authed, s,
                                  s->pool, s->log);

    if (s->auth == NULL) {
        ngx_chat_session_authed(s, NGX_ERROR, NULL);
    }
}


/* the session has started, or ended: the next ones waiting may start */

static void
ngx_chat_session_started(ngx_chat_session_t *s)
{
    if (s->admitting) {
        s->admitting = 0;
        ngx_queue_remove(&s->admit);
    }

    if (!s->starting) {
        return;
    }

    s->starting = 0;
    ngx_chat_session_starting--;

    /* posted: a session that fails at once ends here, in a loop, not deeper */

    if (!ngx_queue_empty(&ngx_chat_session_admit)
        && !ngx_chat_session_admit_ev.posted)
    {
        ngx_post_event(&ngx_chat_session_admit_ev, &ngx_posted_events);
    }
}


static void
ngx_chat_session_admit_next(ngx_event_t *ev)
{
    ngx_queue_t         *q;
    ngx_chat_session_t  *s;

    while (!ngx_queue_empty(&ngx_chat_session_admit)
           && ngx_chat_session_may_start())
    {
        q = ngx_queue_head(&ngx_chat_session_admit);
        ngx_queue_remove(q);

        s = ngx_queue_data(q, ngx_chat_session_t, admit);
        s->admitting = 0;

        ngx_chat_session_check(s, &s->token);
    }

    if (!ngx_queue_empty(&ngx_chat_session_admit)
        && ngx_chat_session_starting == 0 && !ev->timer_set)
    {
        ngx_add_timer(ev, NGX_CHAT_SESSION_ADMIT_RETRY);
    }
}


static ngx_uint_t
ngx_chat_session_may_start(void)
{
    return ngx_chat_session_starting
           < ngx_max(1, ngx_chat_pg_max_waiting() / 4)
           && !ngx_chat_pg_busy();
}


static void
ngx_chat_session_authed(void *data, ngx_int_t rc, ngx_chat_auth_identity_t *id)
{
    ngx_chat_session_t  *s = data;

    s->auth = NULL;

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


static void
ngx_chat_session_auth_timeout(ngx_event_t *ev)
{
    ngx_chat_session_t  *s = ev->data;

    ngx_log_error(NGX_LOG_INFO, ev->log, 0, "chat session: no auth in time");

    ngx_chat_session_close(s, NGX_CHAT_CLOSE_AUTH_TIMEOUT, "auth timeout");
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

    /* from now on every line the session logs says whose it is */

    s->log_handler = s->log->handler;
    s->log_data = s->log->data;
    s->log->handler = ngx_chat_session_log_error;
    s->log->data = s;

    return NGX_OK;
}


static u_char *
ngx_chat_session_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char              *p;
    ngx_chat_session_t  *s;

    s = log->data;
    p = buf;

    if (s->log_handler) {
        log->data = s->log_data;
        p = s->log_handler(log, buf, len);
        log->data = s;
        len -= p - buf;
    }

    return ngx_snprintf(p, len, ", user: %V, device: %V", &s->user_id,
                        &s->device_id);
}


/*
 * An identified session starts, once the requests it brought are
 * applied (a long-poll's acks): live messages, "ready", the sync.  A
 * call (one HTTP request of the fallback) takes none of it.
 */

void
ngx_chat_session_begin(ngx_chat_session_t *s)
{
    if (s->transport->flags & NGX_CHAT_TRANSPORT_CALL) {
        s->state = NGX_CHAT_SESSION_READY;
        ngx_chat_session_started(s);
        return;
    }

    if (ngx_chat_session_holding(s, NGX_CHAT_FEATURE_HOLDS_CLOSE)) {
        s->begin_held = 1;
        ngx_add_timer(&s->hold_timer, NGX_CHAT_SESSION_HOLD);
        return;
    }

    ngx_chat_session_start(s);
}


static void
ngx_chat_session_start(ngx_chat_session_t *s)
{
    json_t              *ready;
    ngx_uint_t           i;
    ngx_chat_feature_t  *f;

    s->begin_held = 0;

    if (ngx_chat_session_join(s) != NGX_OK) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_ERROR, "internal error");
        return;
    }

    s->state = NGX_CHAT_SESSION_SYNCING;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session state: syncing");

    ready = json_pack("{s:s,s:s%,s:s%,s:I}", "type", "ready",
                      "user_id", s->user_id.data, s->user_id.len,
                      "device_id", s->device_id.data, s->device_id.len,
                      "server_time", (json_int_t) ngx_time() * 1000
                                     + (json_int_t) ngx_timeofday()->msec);

    (void) ngx_chat_session_send(s, NGX_CHAT_OUT_READY, ready);

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        f = ngx_chat_session_features[i];

        if (f->begin) {
            f->begin(s);
        }
    }

    if (s->transport->begun) {
        s->transport->begun(s);
    }
}


/* a message of the client's transport; data NULL: not a text one */

void
ngx_chat_session_message(ngx_chat_session_t *s, u_char *data, size_t len)
{
    json_t        *msg, *token;
    ngx_str_t      t;
    const char    *type;
    json_error_t   err;

    msg = data ? json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, &err)
               : NULL;

    type = json_is_object(msg)
           ? json_string_value(json_object_get(msg, "type")) : NULL;

    switch (s->state) {

    case NGX_CHAT_SESSION_AUTH_WAIT:
        token = json_object_get(msg, "token");

        if (type == NULL || ngx_strcmp(type, "auth") != 0
            || !json_is_string(token))
        {
            ngx_log_error(NGX_LOG_INFO, s->log, 0,
                          "chat session: first message is not \"auth\"");
            ngx_chat_session_close(s, NGX_CHAT_CLOSE_UNAUTHORIZED,
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


/* a client message to the feature that takes its type */

void
ngx_chat_session_dispatch(ngx_chat_session_t *s, json_t *msg)
{
    size_t               len;
    ngx_uint_t           i;
    const char          *type;
    ngx_chat_command_t  *cmd;

    type = json_string_value(json_object_get(msg, "type"));
    len = json_string_length(json_object_get(msg, "type"));

    for (i = 0; type && i < ngx_chat_session_nfeatures; i++) {

        for (cmd = ngx_chat_session_features[i]->commands;
             cmd && cmd->type.len;
             cmd++)
        {
            if (cmd->type.len == len
                && ngx_strncmp(cmd->type.data, type, len) == 0)
            {
                cmd->handler(s, msg);
                return;
            }
        }
    }

    ngx_chat_session_error(s, json_object_get(msg, "id"), "bad_request",
                           "unknown message type");
}


/*
 * The device closes, or the worker exits (1001): the acks the device sent
 * are applied before the close is answered (PROTOCOL.md 5.3), so a
 * reconnect anywhere is not sent them again, and the sends it made are
 * answered, so a send stored is not sent again as new.  NGX_AGAIN: the
 * close waits, at most NGX_CHAT_SESSION_HOLD.
 */

ngx_int_t
ngx_chat_session_closing(ngx_chat_session_t *s, ngx_uint_t code)
{
    if (s->state < NGX_CHAT_SESSION_SYNCING
        || !ngx_chat_session_holding(s, NGX_CHAT_FEATURE_HOLDS_CLOSE))
    {
        return NGX_OK;
    }

    s->close_code = code;

    if (!s->hold_timer.timer_set) {
        ngx_add_timer(&s->hold_timer, NGX_CHAT_SESSION_HOLD);
    }

    return NGX_AGAIN;
}


static void
ngx_chat_session_hold_timeout(ngx_event_t *ev)
{
    ngx_chat_session_t  *s = ev->data;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "chat session: requests not answered within %d ms%s",
                  NGX_CHAT_SESSION_HOLD, s->close_code ? " of close" : "");

    if (s->close_code) {
        ngx_chat_session_close(s, s->close_code, NULL);
        return;
    }

    ngx_chat_session_start(s);
}


/* features with these flags have requests in flight */

static ngx_uint_t
ngx_chat_session_holding(ngx_chat_session_t *s, ngx_uint_t flags)
{
    ngx_uint_t           i;
    ngx_chat_feature_t  *f;

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        f = ngx_chat_session_features[i];

        if (f->pending && (f->flags & flags) == flags && f->pending(s)) {
            return 1;
        }
    }

    return 0;
}


/*
 * A feature's request is over: a closing device gets the answer to its
 * close, a long-poll waiting for the acks of its request begins, and a
 * call whose requests are all over is answered.
 */

void
ngx_chat_session_settle(ngx_chat_session_t *s)
{
    if ((s->close_code || s->begin_held)
        && !ngx_chat_session_holding(s, NGX_CHAT_FEATURE_HOLDS_CLOSE))
    {
        if (s->hold_timer.timer_set) {
            ngx_del_timer(&s->hold_timer);
        }

        if (s->close_code) {
            ngx_chat_session_close(s, s->close_code, NULL);
            return;
        }

        ngx_chat_session_start(s);
        return;
    }

    if (s->transport->settled && !ngx_chat_session_holding(s, 0)) {
        s->transport->settled(s);
    }
}


/*
 * A client request starts (a send, an ack, a read, a presence check):
 * a socket has at most NGX_CHAT_SESSION_OPS of them in flight.
 * NGX_DECLINED: a bounded one is refused.  One that is not bounded (an
 * ack folded into its chat's, whose number the chats bound) is counted.
 */

ngx_int_t
ngx_chat_session_op(ngx_chat_session_t *s, ngx_uint_t bounded)
{
    if (bounded && s->ops >= NGX_CHAT_SESSION_OPS) {
        return NGX_DECLINED;
    }

    s->ops++;

    return NGX_OK;
}


void
ngx_chat_session_op_done(ngx_chat_session_t *s)
{
    s->ops--;
}


/* the transport has gone: nothing calls back into the session after this */

void
ngx_chat_session_end(ngx_chat_session_t *s)
{
    ngx_uint_t           i;
    ngx_chat_feature_t  *f;

    if (s->auth_timer.timer_set) {
        ngx_del_timer(&s->auth_timer);
    }

    if (s->hold_timer.timer_set) {
        ngx_del_timer(&s->hold_timer);
    }

    if (s->auth) {
        ngx_chat_pg_cancel(s->auth);
        s->auth = NULL;
    }

    ngx_chat_session_started(s);

    if (s->user) {
        ngx_chat_session_leave(s);
    }

    ngx_queue_init(&s->waiters);

    ngx_chat_order_cleanup(s);

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        f = ngx_chat_session_features[i];

        if (f->end) {
            f->end(s);
        }
    }

    if (s->log->handler == ngx_chat_session_log_error) {
        s->log->handler = s->log_handler;
        s->log->data = s->log_data;
    }

    ngx_chat_session_n--;
    ngx_chat_metrics_sessions(ngx_chat_session_n);
}


/* a chat of the table goes, with the session */

void
ngx_chat_session_chat_end(ngx_chat_session_chat_t *ch)
{
    ngx_uint_t           i;
    ngx_chat_feature_t  *f;

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        f = ngx_chat_session_features[i];

        if (f->chat_end) {
            f->chat_end(ch->session, ch);
        }
    }
}


/* ------------------------------------------------------------ the sync */


/*
 * What was owed is out (count messages): each feature adds what goes
 * before "synced", in the order of the table.
 */

void
ngx_chat_session_synced(ngx_chat_session_t *s, ngx_uint_t count)
{
    s->synced_count = count;
    s->synced_feature = 0;
    s->finishing = 1;

    ngx_chat_session_resume(s);
}


void
ngx_chat_session_resume(ngx_chat_session_t *s)
{
    json_t              *synced;
    ngx_chat_feature_t  *f;

    while (s->synced_feature < ngx_chat_session_nfeatures) {
        f = ngx_chat_session_features[s->synced_feature++];

        if (f->synced && f->synced(s) == NGX_AGAIN) {
            return;
        }
    }

    s->state = NGX_CHAT_SESSION_READY;
    s->finishing = 0;

    ngx_chat_order_ready(s);

    if (!s->resyncing) {
        synced = json_pack("{s:s,s:I}", "type", "synced",
                           "count", (json_int_t) s->synced_count);
        (void) ngx_chat_session_send(s, NGX_CHAT_OUT_SYNCED, synced);
    }

    s->resyncing = 0;

    ngx_chat_session_started(s);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session state: ready, %ui synced",
                   s->synced_count);

    if (s->transport->synced) {
        s->transport->synced(s);
    }

    if (s->resync_again) {
        s->resync_again = 0;
        ngx_chat_session_resync(s);
    }
}


/* the user's channel was lost for a while: read what was published */

void
ngx_chat_session_resync(ngx_chat_session_t *s)
{
    ngx_uint_t           i;
    ngx_chat_feature_t  *f;

    if (s->state < NGX_CHAT_SESSION_SYNCING) {
        return;
    }

    if (s->finishing) {
        s->resync_again = 1;    /* once "synced" is out */
        return;
    }

    if (s->state == NGX_CHAT_SESSION_READY) {
        s->state = NGX_CHAT_SESSION_SYNCING;
        s->resyncing = 1;
    }

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        f = ngx_chat_session_features[i];

        if (f->resync) {
            f->resync(s);
        }
    }
}


/* Redis is down: read PostgreSQL for the users not read this round */

static void
ngx_chat_session_poll(ngx_event_t *ev)
{
    ngx_msec_t                elapsed, delay;
    ngx_uint_t                n;
    ngx_queue_t              *q, *next;
    ngx_chat_session_t       *s;
    ngx_chat_session_user_t  *u;

    if (ngx_chat_redis_up()) {
        if (ngx_chat_session_polling) {
            ngx_chat_session_polling = 0;
            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "chat: Redis is back, sessions stop polling "
                          "PostgreSQL");
        }

        ngx_add_timer(ev, ngx_chat_session_poll_every);
        return;
    }

    if (!ngx_chat_session_polling) {
        ngx_chat_session_polling = 1;
        ngx_chat_session_poll_start = ngx_current_msec;
        ngx_chat_session_round++;
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "chat: Redis is down, sessions poll PostgreSQL every "
                      "%M ms", ngx_chat_session_poll_every);
    }

    if (ngx_chat_pg_busy()) {
        ngx_add_timer(ev, NGX_CHAT_SESSION_POLL_TICK);
        return;
    }

    n = 0;

    for (u = ngx_chat_session_next_user(NULL);
         u && n < NGX_CHAT_SESSION_POLL_USERS;
         u = ngx_chat_session_next_user(u))
    {
        if (u->round == ngx_chat_session_round) {
            continue;
        }

        u->round = ngx_chat_session_round;
        n++;

        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = next)
        {
            next = ngx_queue_next(q);
            s = ngx_queue_data(q, ngx_chat_session_t, queue);

            if (s->state == NGX_CHAT_SESSION_READY) {
                ngx_chat_session_resync(s);
            }
        }
    }

    if (n < NGX_CHAT_SESSION_POLL_USERS) {

        /* the round is over: the next one a poll interval after it began */

        elapsed = ngx_current_msec - ngx_chat_session_poll_start;
        delay = (elapsed + NGX_CHAT_SESSION_POLL_TICK
                 >= ngx_chat_session_poll_every)
                ? NGX_CHAT_SESSION_POLL_TICK
                : ngx_chat_session_poll_every - elapsed;

        ngx_chat_session_poll_start = ngx_current_msec + delay;
        ngx_chat_session_round++;

        ngx_add_timer(ev, delay);
        return;
    }

    ngx_add_timer(ev, NGX_CHAT_SESSION_POLL_TICK);
}


/* ------------------------------------------------------ per-user index */


/* subscribes the user's channel and files the session under it */

static ngx_int_t
ngx_chat_session_join(ngx_chat_session_t *s)
{
    uint32_t                  hash;
    ngx_str_t                 channel;
    ngx_uint_t                i;
    ngx_str_node_t           *sn;
    ngx_chat_session_user_t  *u;

    if (ngx_chat_redis_user_channel(s->pool, &s->user_id, &channel)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    hash = ngx_crc32_long(channel.data, channel.len);
    sn = ngx_str_rbtree_lookup(&ngx_chat_session_users, &channel, hash);

    if (sn) {
        u = (ngx_chat_session_user_t *) sn;
        goto join;
    }

    u = ngx_alloc(sizeof(ngx_chat_session_user_t) + channel.len, s->log);
    if (u == NULL) {
        return NGX_ERROR;
    }

    u->node.node.key = hash;
    u->node.str.len = channel.len;
    u->node.str.data = (u_char *) (u + 1);
    ngx_memcpy(u->node.str.data, channel.data, channel.len);
    ngx_queue_init(&u->sessions);
    u->round = ngx_chat_session_round;      /* its sync reads PostgreSQL */

    if (ngx_chat_redis_subscribe(&u->node.str, ngx_chat_session_user_message,
                                 u)
        != NGX_OK)
    {
        ngx_free(u);
        return NGX_ERROR;
    }

    ngx_rbtree_insert(&ngx_chat_session_users, &u->node.node);

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        if (ngx_chat_session_features[i]->user_up) {
            ngx_chat_session_features[i]->user_up(&s->user_id);
        }
    }

join:

    ngx_queue_insert_tail(&u->sessions, &s->queue);
    s->user = u;

    return NGX_OK;
}


static void
ngx_chat_session_leave(ngx_chat_session_t *s)
{
    ngx_uint_t                i;
    ngx_chat_session_user_t  *u = s->user;

    ngx_queue_remove(&s->queue);
    s->user = NULL;

    if (!ngx_queue_empty(&u->sessions)) {
        return;
    }

    ngx_chat_redis_unsubscribe(&u->node.str);
    ngx_rbtree_delete(&ngx_chat_session_users, &u->node.node);
    ngx_free(u);

    for (i = 0; i < ngx_chat_session_nfeatures; i++) {
        if (ngx_chat_session_features[i]->user_down) {
            ngx_chat_session_features[i]->user_down(&s->user_id);
        }
    }
}


/* each session of this worker that has joined its user's index */

void
ngx_chat_session_each(void (*handler)(ngx_chat_session_t *s, void *data),
    void *data)
{
    ngx_queue_t              *q, *next;
    ngx_chat_session_user_t  *u;

    for (u = ngx_chat_session_next_user(NULL);
         u;
         u = ngx_chat_session_next_user(u))
    {
        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = next)
        {
            next = ngx_queue_next(q);
            handler(ngx_queue_data(q, ngx_chat_session_t, queue), data);
        }
    }
}


/* each user with a session here, once */

void
ngx_chat_session_each_user(void (*handler)(ngx_str_t *user_id))
{
    ngx_chat_session_t       *s;
    ngx_chat_session_user_t  *u;

    for (u = ngx_chat_session_next_user(NULL);
         u;
         u = ngx_chat_session_next_user(u))
    {
        s = ngx_queue_data(ngx_queue_head(&u->sessions), ngx_chat_session_t,
                           queue);
        handler(&s->user_id);
    }
}


/* the user index in order: the first with NULL, then the one after u */

static ngx_chat_session_user_t *
ngx_chat_session_next_user(ngx_chat_session_user_t *u)
{
    ngx_rbtree_node_t  *root, *sentinel;

    if (u) {
        return (ngx_chat_session_user_t *)
                   ngx_rbtree_next(&ngx_chat_session_users, &u->node.node);
    }

    root = ngx_chat_session_users.root;
    sentinel = ngx_chat_session_users.sentinel;

    return (root == sentinel) ? NULL
                              : (ngx_chat_session_user_t *)
                                    ngx_rbtree_min(root, sentinel);
}


/*
 * What Redis brings on a user's channel, parsed once for all of the
 * user's sessions here, to whoever takes its type.  NULL: the channel was
 * lost for a while, and every session reads back what it missed.
 */

static void
ngx_chat_session_user_message(void *data, ngx_str_t *message)
{
    json_t                   *msg;
    size_t                    len;
    ngx_uint_t                i;
    const char               *type;
    ngx_queue_t              *q, *next;
    ngx_chat_notice_t        *n;
    ngx_chat_session_user_t  *u = data;

    if (message == NULL) {
        for (q = ngx_queue_head(&u->sessions);
             q != ngx_queue_sentinel(&u->sessions);
             q = next)
        {
            next = ngx_queue_next(q);
            ngx_chat_session_resync(ngx_queue_data(q, ngx_chat_session_t,
                                                   queue));
        }

        return;
    }

    msg = json_loadb((char *) message->data, message->len, 0, NULL);
    type = json_string_value(json_object_get(msg, "type"));
    len = json_string_length(json_object_get(msg, "type"));

    if (type == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: unreadable message on \"%V\"", &u->node.str);
        json_decref(msg);
        return;
    }

    for (i = 0; i <= ngx_chat_session_nfeatures; i++) {

        n = (i == ngx_chat_session_nfeatures)
            ? ngx_chat_session_notices
            : ngx_chat_session_features[i]->notices;

        for ( /* void */ ; n && n->type.len; n++) {
            if (n->type.len == len
                && ngx_strncmp(n->type.data, type, len) == 0)
            {
                n->handler(u, msg, message);
                json_decref(msg);
                return;
            }
        }
    }

    json_decref(msg);
}


/* a live message, offered to each session's order */

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

        ngx_chat_order_offer(s, chat, seq, device == s->device, text);
    }
}


/* -------------------------------------------------------------- output */


ngx_int_t
ngx_chat_session_output(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    return s->transport->send(s, out);
}


/* an event made of a JSON object, which is consumed */

ngx_int_t
ngx_chat_session_send(ngx_chat_session_t *s, ngx_chat_out_kind_e kind,
    json_t *json)
{
    ngx_int_t       rc;
    ngx_chat_out_t  out;

    if (json == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = kind;
    out.json = json;

    rc = s->transport->send(s, &out);

    json_decref(json);

    return rc;
}


/* {"type":"error","id"?,"code","message"}: "id" echoes the request's */

void
ngx_chat_session_error(ngx_chat_session_t *s, json_t *id, const char *code,
    const char *message)
{
    json_t          *err;
    ngx_chat_out_t   out;

    err = json_pack("{s:s,s:s,s:s}", "type", "error", "code", code,
                    "message", message);
    if (err == NULL) {
        return;
    }

    if (json_is_string(id)) {
        json_object_set(err, "id", id);
    }

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = NGX_CHAT_OUT_ERROR;
    out.json = err;
    out.code = code;
    out.message = message;

    (void) s->transport->send(s, &out);

    json_decref(err);
}


/*
 * Flow control: may a paced producer (a sync page, a fill, a burst of
 * live messages) queue len more bytes now?  With len 0: may it start a
 * batch.  If not, it waits with ngx_chat_session_wait().
 */

ngx_uint_t
ngx_chat_session_room(ngx_chat_session_t *s, size_t len)
{
    return s->transport->room(s, len);
}


void
ngx_chat_session_wait(ngx_chat_session_t *s, ngx_chat_session_waiter_t *w)
{
    if (!w->waiting) {
        w->waiting = 1;
        ngx_queue_insert_tail(&s->waiters, &w->queue);
    }

    ngx_chat_session_started(s);
}


/* a producer that no longer waits */

void
ngx_chat_session_unwait(ngx_chat_session_waiter_t *w)
{
    if (w->waiting) {
        ngx_queue_remove(&w->queue);
        w->waiting = 0;
    }
}


/* the transport has room again: the producers that wait go on */

void
ngx_chat_session_drained(ngx_chat_session_t *s)
{
    ngx_queue_t                 *q, waiters;
    ngx_chat_session_waiter_t   *w;

    s->drained_at = ngx_current_msec;

    if (ngx_queue_empty(&s->waiters)) {
        return;
    }

    /* a producer may wait again at once: that is for the next time */

    ngx_queue_init(&waiters);
    ngx_queue_add(&waiters, &s->waiters);
    ngx_queue_init(&s->waiters);

    while (!ngx_queue_empty(&waiters)) {
        q = ngx_queue_head(&waiters);
        ngx_queue_remove(q);

        w = ngx_queue_data(q, ngx_chat_session_waiter_t, queue);
        w->waiting = 0;
        w->handler(s, w->data);
    }
}


/* --------------------------------------------------------------- input */


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


/* {"chat_id":"<id>","seq":<positive>}, as "ack" and "read" take them */

ngx_int_t
ngx_chat_session_chat_seq(json_t *msg, int64_t *chat, int64_t *seq)
{
    json_t  *value;

    value = json_object_get(msg, "seq");

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), chat)
        != NGX_OK
        || !json_is_integer(value) || json_integer_value(value) <= 0)
    {
        return NGX_ERROR;
    }

    *seq = json_integer_value(value);

    return NGX_OK;
}
