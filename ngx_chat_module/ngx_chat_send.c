
/*
 * "send" (PROTOCOL.md, section 4).
 *
 * A send is stored by chat_send() in PostgreSQL: membership, the
 * idempotency of (device, id), and the dense seq all in the statement
 * that stores the message.  "sent" goes out only when that statement has
 * committed; then the message is published to every member's channel.
 *
 * A socket's sends wait in a bounded FIFO and are stored one at a time,
 * so what a device writes in one order is stored in that order.  The
 * sends of all the sockets of a worker that are ready in one pass of the
 * event loop are stored together: one statement, one transaction, one
 * commit to wait for (chat_send_batch), which is where the throughput of
 * a durable store comes from.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_metrics.h"
#include "ngx_chat_event.h"
#include "ngx_chat_api.h"


#define NGX_CHAT_CLIENT_ID_MAX  64


#define NGX_CHAT_SEND_BATCH     256     /* sends in one statement */
#define NGX_CHAT_SEND_MEDIA     10      /* media ids in one send */
#define NGX_CHAT_SEND_BATCHES   1       /* statements in flight a worker */


typedef struct {
    ngx_chat_pg_query_t     *query;
    ngx_uint_t               n;
    ngx_chat_session_op_t   *ops[1];
} ngx_chat_send_batch_t;


static const char  ngx_chat_send_sql[] =
    "SELECT i, out_status, out_seq, out_ts, out_members, out_json "
    "FROM chat_send_batch($1::jsonb)";


static ngx_int_t ngx_chat_send_media_valid(json_t *media);
static ngx_uint_t ngx_chat_send_throttled(ngx_chat_session_t *s);
static void ngx_chat_send_next(ngx_chat_session_t *s);
static void ngx_chat_send_flush(ngx_event_t *ev);
static void ngx_chat_send_batched(void *data, PGresult *res);
static void ngx_chat_send_stored(ngx_chat_session_op_t *op, PGresult *res,
    int row);
static void ngx_chat_send_op_done(ngx_chat_session_op_t *op);
static void ngx_chat_send_publish(ngx_chat_session_t *s, ngx_str_t *members,
    ngx_str_t *json);
static void ngx_chat_send_published(void *data, redisReply *reply);


static ngx_queue_t       ngx_chat_send_ready;    /* ops for the next batch */
static ngx_uint_t        ngx_chat_send_nready;
static ngx_event_t       ngx_chat_send_ev;
static ngx_uint_t        ngx_chat_send_batches;  /* in flight */


ngx_int_t
ngx_chat_send_init_worker(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_chat_send_ready);

    ngx_chat_event_init(&ngx_chat_send_ev, ngx_chat_send_flush, cycle->log);

    return NGX_OK;
}


void
ngx_chat_send_message(ngx_chat_session_t *s, json_t *msg)
{
    json_t                 *id, *text, *chat, *body, *media;
    int64_t                 chat_id;
    ngx_chat_session_op_t  *op;

    id = json_object_get(msg, "id");
    chat = json_object_get(msg, "chat_id");
    text = json_object_get(msg, "text");

    if (!json_is_string(id) || json_string_length(id) == 0
        || json_string_length(id) > NGX_CHAT_CLIENT_ID_MAX)
    {
        ngx_chat_session_error(s, id, "bad_request",
                               "\"id\" must be a string of 1 to 64 bytes");
        return;
    }

    if (ngx_chat_session_parse_id(chat, &chat_id) != NGX_OK) {
        ngx_chat_session_error(s, id, "bad_request",
                               "\"chat_id\" must be a chat id");
        return;
    }

    media = json_object_get(msg, "media");

    if (media && ngx_chat_send_media_valid(media) != NGX_OK) {
        ngx_chat_session_error(s, id, "bad_request",
                               "\"media\" must be an array of 1 to 10 "
                               "media ids");
        return;
    }

    if (text == NULL && media == NULL) {
        ngx_chat_session_error(s, id, "bad_request",
                               "a send needs \"text\" or \"media\"");
        return;
    }

    if (text && (!json_is_string(text) || json_string_length(text) == 0)) {
        ngx_chat_session_error(s, id, "bad_request",
                               "\"text\" must be a non-empty string");
        return;
    }

    if (text && json_string_length(text) > s->conf->max_text) {
        ngx_chat_session_error(s, id, "too_large", "text too long");
        return;
    }

    if (ngx_chat_send_throttled(s)) {
        ngx_chat_session_error(s, id, "rate_limited",
                               "sending too fast: slow down");
        return;
    }

    if (s->nsends >= NGX_CHAT_MAX_SENDS) {
        ngx_chat_session_error(s, id, "rate_limited",
                               "too many sends waiting on this socket");
        return;
    }

    /* what is stored: chat_send_batch() puts the media's details in */

    body = json_pack("{s:O*,s:O*}", "text", text, "media", media);
    op = ngx_calloc(sizeof(ngx_chat_session_op_t), s->log);

    if (body == NULL || op == NULL) {
        json_decref(body);
        ngx_free(op);
        ngx_chat_session_error(s, id, "unavailable", "out of memory");
        return;
    }

    op->session = s;
    op->chat_id = chat_id;
    op->id = json_incref(id);
    op->body = body;

    ngx_queue_insert_tail(&s->sends, &op->queue);

    if (s->nsends++ == 0) {
        ngx_chat_send_next(s);
    }
}


/* 1 to 10 media ids (ngx_asset_module's keys) */

static ngx_int_t
ngx_chat_send_media_valid(json_t *media)
{
    size_t     i, n;
    json_t    *v;
    ngx_str_t  key;

    n = json_is_array(media) ? json_array_size(media) : 0;

    if (n == 0 || n > NGX_CHAT_SEND_MEDIA) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        v = json_array_get(media, i);

        if (!json_is_string(v)) {
            return NGX_ERROR;
        }

        key.data = (u_char *) json_string_value(v);
        key.len = json_string_length(v);

        if (ngx_chat_api_key_valid(&key) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * chat_send_rate: a token bucket per socket, in thousandths of a send,
 * full (burst) when the socket opens.
 */

static ngx_uint_t
ngx_chat_send_throttled(ngx_chat_session_t *s)
{
    ngx_uint_t   full;
    ngx_msec_t   elapsed;

    if (s->conf->send_rate == 0) {
        return 0;
    }

    full = s->conf->send_burst * 1000;

    if (s->refilled == 0) {
        s->tokens = full;

    } else {
        elapsed = ngx_current_msec - s->refilled;
        s->tokens = ngx_min(full, s->tokens + elapsed * s->conf->send_rate);
    }

    s->refilled = ngx_current_msec;

    if (s->tokens < 1000) {
        return 1;
    }

    s->tokens -= 1000;

    return 0;
}


/* the send at the head of the socket's queue joins the next batch */

static void
ngx_chat_send_next(ngx_chat_session_t *s)
{
    ngx_chat_session_op_t  *op;

    if (ngx_queue_empty(&s->sends)) {
        ngx_chat_session_settle(s);
        return;
    }

    op = ngx_queue_data(ngx_queue_head(&s->sends), ngx_chat_session_op_t,
                        queue);

    if (op->batched || op->batch) {
        return;
    }

    op->batched = 1;
    ngx_queue_insert_tail(&ngx_chat_send_ready, &op->ready);
    ngx_chat_send_nready++;

    ngx_post_event(&ngx_chat_send_ev, &ngx_posted_events);
}


/* a posted event: the sends ready in this pass, a batch at a time */

static void
ngx_chat_send_flush(ngx_event_t *ev)
{
    char                   *text;
    json_t                 *all, *one;
    ngx_str_t               param;
    ngx_uint_t              i, n;
    ngx_queue_t            *q;
    ngx_chat_session_t     *s;
    ngx_chat_send_batch_t  *batch;
    ngx_chat_session_op_t  *op;

    while (ngx_chat_send_nready
           && ngx_chat_send_batches < NGX_CHAT_SEND_BATCHES)
    {
        n = ngx_min(ngx_chat_send_nready, NGX_CHAT_SEND_BATCH);

        batch = ngx_alloc(sizeof(ngx_chat_send_batch_t)
                          + (n - 1) * sizeof(ngx_chat_session_op_t *),
                          ev->log);

        all = json_array();

        for (i = 0; i < n; i++) {
            q = ngx_queue_head(&ngx_chat_send_ready);
            ngx_queue_remove(q);
            ngx_chat_send_nready--;

            op = ngx_queue_data(q, ngx_chat_session_op_t, ready);
            op->batched = 0;

            if (batch == NULL) {
                s = op->session;
                ngx_chat_session_error(s, op->id, "unavailable",
                                       "out of memory");
                ngx_chat_send_op_done(op);
                ngx_chat_send_next(s);
                continue;
            }

            op->batch = batch;
            batch->ops[i] = op;

            /* [chat, user, device, client id, body]: as chat_send() */

            s = op->session;
            one = json_pack("[I,s%,s%,O,O]", (json_int_t) op->chat_id,
                            s->user_id.data, s->user_id.len,
                            s->device_id.data, s->device_id.len,
                            op->id, op->body);

            if (all && (one == NULL || json_array_append_new(all, one))) {
                json_decref(all);
                all = NULL;
            }
        }

        if (batch == NULL) {
            json_decref(all);
            continue;
        }

        batch->n = n;
        batch->query = NULL;
        ngx_chat_send_batches++;

        text = all ? json_dumps(all, JSON_COMPACT) : NULL;
        json_decref(all);

        if (text) {
            param.data = (u_char *) text;
            param.len = ngx_strlen(text);

            batch->query = ngx_chat_pg_query(ngx_chat_send_sql, 1, &param,
                                             ngx_chat_send_batched, batch,
                                             ev->log);
            free(text);
        }

        if (batch->query == NULL) {
            ngx_chat_send_batched(batch, NULL);
        }
    }
}


/* rows come as chat_send_batch() stored them: "i" says whose each is */

static void
ngx_chat_send_batched(void *data, PGresult *res)
{
    int                     row, rows;
    ngx_int_t               i;
    ngx_uint_t              k;
    ngx_chat_session_t     *s;
    ngx_chat_send_batch_t  *batch = data;
    ngx_chat_session_op_t  *op;

    rows = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    for (row = 0; row < rows; row++) {
        i = ngx_atoi((u_char *) PQgetvalue(res, row, 0),
                     PQgetlength(res, row, 0));

        if (i >= 1 && (ngx_uint_t) i <= batch->n && batch->ops[i - 1]) {
            op = batch->ops[i - 1];
            batch->ops[i - 1] = NULL;
            op->batch = NULL;
            ngx_chat_send_stored(op, res, row);
        }
    }

    /* what has no row was not stored: the statement failed */

    for (k = 0; k < batch->n; k++) {
        op = batch->ops[k];

        if (op == NULL) {
            continue;
        }

        op->batch = NULL;

        if (op->session) {
            ngx_chat_session_error(op->session, op->id, "unavailable",
                                   "the message store is unavailable");
        }

        s = op->session;
        ngx_chat_send_op_done(op);

        if (s) {
            ngx_chat_send_next(s);
        }
    }

    ngx_free(batch);

    ngx_chat_send_batches--;

    if (ngx_chat_send_nready) {
        ngx_post_event(&ngx_chat_send_ev, &ngx_posted_events);
    }
}


/* "sent" once stored, and the message out to the members */

static void
ngx_chat_send_stored(ngx_chat_session_op_t *op, PGresult *res, int row)
{
    u_char               chat[NGX_INT64_LEN + 1];
    int64_t              seq;
    json_t              *sent;
    ngx_str_t            v, members, json;
    ngx_chat_session_t  *s;

    s = op->session;

    if (s == NULL) {
        ngx_chat_send_op_done(op);      /* its socket is gone */
        return;
    }

    ngx_chat_pg_value(res, row, 1, &v);

    if (v.len == 1 && (v.data[0] == '2' || v.data[0] == '3')) {
        if (v.data[0] == '2') {
            ngx_chat_session_error(s, op->id, "forbidden",
                                   "not a member of this chat");

        } else {
            ngx_chat_session_error(s, op->id, "unknown_media",
                                   "no such media of the sender");
        }

        ngx_chat_send_op_done(op);
        ngx_chat_send_next(s);
        return;
    }

    ngx_chat_pg_value(res, row, 2, &v);
    seq = ngx_atoof(v.data, v.len);
    ngx_chat_pg_value(res, row, 3, &v);

    *ngx_sprintf(chat, "%L", op->chat_id) = '\0';

    sent = json_pack("{s:s,s:O,s:s,s:I,s:I}", "type", "sent",
                     "id", op->id, "chat_id", (char *) chat,
                     "seq", (json_int_t) seq,
                     "ts", (json_int_t) ngx_atoof(v.data, v.len));
    ngx_chat_session_send(s, sent);
    json_decref(sent);

    /* a resend (status 1) was published the first time */

    ngx_chat_pg_value(res, row, 1, &v);

    if (v.data[0] == '0') {
        ngx_chat_metrics_add(sent, 1);

        ngx_chat_pg_value(res, row, 4, &members);
        ngx_chat_pg_value(res, row, 5, &json);

        /* this device's own order moves on even if Redis is away */

        if (!s->call) {
            ngx_chat_sync_offer(s, op->chat_id, seq, 1, json.data, json.len);
        }

        ngx_chat_send_publish(s, &members, &json);
    }

    ngx_chat_send_op_done(op);
    ngx_chat_send_next(s);
}


/* members: user ids separated by commas */

static void
ngx_chat_send_publish(ngx_chat_session_t *s, ngx_str_t *members,
    ngx_str_t *json)
{
    u_char     *p, *last, *comma;
    u_char      buf[NGX_CHAT_REDIS_CHANNEL_MAX];
    ngx_str_t   user, channel;

    p = members->data;
    last = p + members->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');

        user.data = p;
        user.len = (comma ? comma : last) - p;
        p = comma ? comma + 1 : last;

        if (ngx_chat_redis_user_channel_buf(buf, &user, &channel)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, s->log, 0,
                          "chat_redis_prefix too long for a channel");
            return;
        }

        /*
         * Nobody waits: with Redis away the message is stored all the
         * same, and sessions read it back when the link returns.
         */

        (void) ngx_chat_redis_command(ngx_chat_send_published, NULL,
                                      ngx_cycle->log, "PUBLISH %b %b",
                                      channel.data, channel.len,
                                      json->data, json->len);
    }
}


static void
ngx_chat_send_published(void *data, redisReply *reply)
{
}


/*
 * An op leaves its socket's queue; one in a batch in flight is freed by
 * the batch, which is told that the socket has gone (op->session NULL).
 */

static void
ngx_chat_send_op_done(ngx_chat_session_op_t *op)
{
    if (op->session) {
        ngx_queue_remove(&op->queue);
        op->session->nsends--;
        op->session = NULL;
    }

    if (op->batch) {
        op->batch = NULL;       /* the batch's answer frees it */
        return;
    }

    if (op->batched) {
        ngx_queue_remove(&op->ready);    /* waiting for the next batch */
        ngx_chat_send_nready--;
    }

    json_decref(op->id);
    json_decref(op->body);
    ngx_free(op);
}


void
ngx_chat_send_cleanup(ngx_chat_session_t *s)
{
    ngx_queue_t            *q;
    ngx_chat_session_op_t  *op;

    if (s->sends.next == NULL) {
        return;                 /* never opened */
    }

    while (!ngx_queue_empty(&s->sends)) {
        q = ngx_queue_head(&s->sends);
        op = ngx_queue_data(q, ngx_chat_session_op_t, queue);

        if (op->batch) {
            /* keep it for the batch, which will free it */
            ngx_queue_remove(&op->queue);
            s->nsends--;
            op->session = NULL;
            continue;
        }

        ngx_chat_send_op_done(op);
    }
}
