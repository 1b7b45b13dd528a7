
/*
 * "send" (PROTOCOL.md, section 4).
 *
 * A send is stored by chat_send_batch() in PostgreSQL: membership, the
 * idempotency of (device, id), and the dense seq all in the statement
 * that stores the message.  "sent" goes out only when that statement has
 * committed; then the message is published to every member's channel.
 *
 * A socket's sends wait in a bounded FIFO and are stored one at a time,
 * so what a device writes in one order is stored in that order.  The
 * sends of all the sockets of a worker that are ready in one pass of the
 * event loop are stored together (ngx_chat_batch.h).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_metrics.h"
#include "ngx_chat_batch.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_api.h"


#define NGX_CHAT_SEND_CLIENT_ID  64     /* bytes of a client's "id" */
#define NGX_CHAT_SEND_MEDIA      10     /* media ids in one send */
#define NGX_CHAT_SEND_BATCH      256    /* sends in one statement */
#define NGX_CHAT_SEND_BATCHES    1      /* statements in flight a worker */


/* chat_send_batch()'s statuses */
#define NGX_CHAT_SEND_STORED     0
#define NGX_CHAT_SEND_RESENT     1      /* stored before: the same seq */
#define NGX_CHAT_SEND_NOT_MEMBER 2
#define NGX_CHAT_SEND_NO_MEDIA   3
#define NGX_CHAT_SEND_UNLINKED   4      /* the device is gone */


/* a session's sends */
typedef struct {
    ngx_queue_t                queue;        /* ngx_chat_send_op_t, FIFO */
    ngx_uint_t                 n;
} ngx_chat_send_t;


/* a send, waiting for its turn or being stored */
typedef struct {
    ngx_queue_t                queue;        /* in ngx_chat_send_t */
    ngx_queue_t                ready;        /* in the worker's batch */
    ngx_chat_session_t        *session;      /* NULL: the socket is gone */
    void                      *stmt;         /* the statement storing it */
    int64_t                    chat_id;
    json_t                    *id;           /* the client's "id" */
    json_t                    *body;         /* what is stored */
    unsigned                   batched:1;    /* in the worker's batch */
} ngx_chat_send_op_t;


/* one chat_send_batch() statement; n is 0 while the slot is free */
typedef struct {
    ngx_uint_t                 n;
    ngx_chat_send_op_t        *ops[NGX_CHAT_SEND_BATCH];
} ngx_chat_send_stmt_t;


static const char  ngx_chat_send_sql[] =
    "SELECT i, out_status, out_seq, out_ts, out_members, out_json, "
    "out_contact FROM chat_send_contacts($1::jsonb)";


static ngx_int_t ngx_chat_send_init_worker(ngx_cycle_t *cycle);
static void ngx_chat_send_exit_worker(ngx_cycle_t *cycle);
static void ngx_chat_send(ngx_chat_session_t *s, json_t *msg);
static const char *ngx_chat_send_invalid(ngx_chat_session_t *s, json_t *msg,
    int64_t *chat_id);
static ngx_int_t ngx_chat_send_media_valid(json_t *media);

static void ngx_chat_send_next(ngx_chat_session_t *s);
static void ngx_chat_send_run(ngx_chat_batch_t *b, ngx_uint_t n);
static void ngx_chat_send_stored(void *data, PGresult *res);
static void ngx_chat_send_answer(ngx_chat_send_op_t *op, PGresult *res,
    int row);
static void ngx_chat_send_done(ngx_chat_send_op_t *op);
static ngx_uint_t ngx_chat_send_pending(ngx_chat_session_t *s);
static void ngx_chat_send_end(ngx_chat_session_t *s);


static ngx_chat_command_t  ngx_chat_send_commands[] = {
    { ngx_string("send"), ngx_chat_send },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_send_feature = {
    .name = "send",
    .commands = ngx_chat_send_commands,
    .init_worker = ngx_chat_send_init_worker,
    .exit_worker = ngx_chat_send_exit_worker,
    .pending = ngx_chat_send_pending,
    .end = ngx_chat_send_end,
    .flags = NGX_CHAT_FEATURE_HOLDS_CLOSE,
};


static ngx_chat_batch_t      ngx_chat_send_batch;
static ngx_chat_send_stmt_t  ngx_chat_send_stmts[NGX_CHAT_SEND_BATCHES];


static ngx_int_t
ngx_chat_send_init_worker(ngx_cycle_t *cycle)
{
    ngx_chat_batch_init(&ngx_chat_send_batch, ngx_chat_send_run,
                        NGX_CHAT_SEND_BATCH, NGX_CHAT_SEND_BATCHES,
                        cycle->log);

    return NGX_OK;
}


static void
ngx_chat_send_exit_worker(ngx_cycle_t *cycle)
{
    ngx_chat_batch_exit(&ngx_chat_send_batch);
}


static void
ngx_chat_send(ngx_chat_session_t *s, json_t *msg)
{
    json_t              *id, *body;
    int64_t              chat_id;
    const char          *error;
    ngx_chat_send_t     *st;
    ngx_chat_send_op_t  *op;

    id = json_object_get(msg, "id");

    error = ngx_chat_send_invalid(s, msg, &chat_id);

    if (error) {
        ngx_chat_session_error(s, id, error[0] == 't' ? "too_large"
                                                      : "bad_request",
                               error + 1);
        return;
    }

    st = ngx_chat_session_get_ctx(s, ngx_chat_send_feature);

    if (st == NULL) {
        st = ngx_pcalloc(s->pool, sizeof(ngx_chat_send_t));
        if (st == NULL) {
            ngx_chat_session_error(s, id, "unavailable", "out of memory");
            return;
        }

        ngx_queue_init(&st->queue);
        ngx_chat_session_set_ctx(s, st, ngx_chat_send_feature);
    }

    /* chat_send_rate: a bucket per device, whatever its sockets */

    if (s->conf->send_rate
        && !ngx_chat_rate_take((uint64_t) s->device, s->conf->send_rate,
                               s->conf->send_burst))
    {
        ngx_chat_session_error(s, id, "rate_limited",
                               "sending too fast: slow down");
        return;
    }

    if (ngx_chat_session_op(s, 1) != NGX_OK) {
        ngx_chat_session_error(s, id, "rate_limited",
                               "too many requests in flight on this socket");
        return;
    }

    /* what is stored: chat_send_batch() puts the media's details in */

    body = json_pack("{s:O*,s:O*}", "text", json_object_get(msg, "text"),
                     "media", json_object_get(msg, "media"));
    op = ngx_calloc(sizeof(ngx_chat_send_op_t), s->log);

    if (body == NULL || op == NULL) {
        json_decref(body);
        ngx_free(op);
        ngx_chat_session_op_done(s);
        ngx_chat_session_error(s, id, "unavailable", "out of memory");
        return;
    }

    op->session = s;
    op->chat_id = chat_id;
    op->id = json_incref(id);
    op->body = body;

    ngx_queue_insert_tail(&st->queue, &op->queue);

    if (st->n++ == 0) {
        ngx_chat_send_next(s);
    }
}


/*
 * What is wrong with a send, if anything: the message, after a first
 * character that says the code ('t' too_large, else bad_request).
 */

static const char *
ngx_chat_send_invalid(ngx_chat_session_t *s, json_t *msg, int64_t *chat_id)
{
    json_t  *id, *text, *media;

    id = json_object_get(msg, "id");
    text = json_object_get(msg, "text");
    media = json_object_get(msg, "media");

    if (!json_is_string(id) || json_string_length(id) == 0
        || json_string_length(id) > NGX_CHAT_SEND_CLIENT_ID)
    {
        return "b\"id\" must be a string of 1 to 64 bytes";
    }

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), chat_id)
        != NGX_OK)
    {
        return "b\"chat_id\" must be a chat id";
    }

    if (media && ngx_chat_send_media_valid(media) != NGX_OK) {
        return "b\"media\" must be an array of 1 to 10 media ids";
    }

    if (text == NULL && media == NULL) {
        return "ba send needs \"text\" or \"media\"";
    }

    if (text && (!json_is_string(text) || json_string_length(text) == 0)) {
        return "b\"text\" must be a non-empty string";
    }

    if (text && json_string_length(text) > s->conf->max_text) {
        return "ttext too long";
    }

    return NULL;
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


/* the send at the head of the socket's queue joins the next batch */

static void
ngx_chat_send_next(ngx_chat_session_t *s)
{
    ngx_chat_send_t     *st;
    ngx_chat_send_op_t  *op;

    st = ngx_chat_session_get_ctx(s, ngx_chat_send_feature);

    if (ngx_queue_empty(&st->queue)) {
        ngx_chat_session_settle(s);
        return;
    }

    op = ngx_queue_data(ngx_queue_head(&st->queue), ngx_chat_send_op_t,
                        queue);

    if (op->batched || op->stmt) {
        return;
    }

    op->batched = 1;
    ngx_chat_batch_add(&ngx_chat_send_batch, &op->ready);
}


/* one statement for n sends: [chat, user, device, client id, body] each */

static void
ngx_chat_send_run(ngx_chat_batch_t *b, ngx_uint_t n)
{
    char                  *text;
    json_t                *all, *one;
    ngx_str_t              param;
    ngx_uint_t             i;
    ngx_chat_session_t    *s;
    ngx_chat_send_op_t    *op;
    ngx_chat_pg_query_t   *query;
    ngx_chat_send_stmt_t  *stmt;

    /* the batch runs at most NGX_CHAT_SEND_BATCHES at once: one is free */

    for (stmt = ngx_chat_send_stmts; stmt->n; stmt++) { /* void */ }

    stmt->n = n;
    all = json_array();

    for (i = 0; i < n; i++) {
        op = ngx_queue_data(ngx_chat_batch_take(b), ngx_chat_send_op_t,
                            ready);
        op->batched = 0;
        op->stmt = stmt;
        stmt->ops[i] = op;

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

    text = all ? json_dumps(all, JSON_COMPACT) : NULL;
    json_decref(all);

    query = NULL;

    if (text) {
        param.data = (u_char *) text;
        param.len = ngx_strlen(text);

        query = ngx_chat_pg_query(ngx_chat_send_sql, 1, &param,
                                  ngx_chat_send_stored, stmt, b->ev.log);
        free(text);
    }

    if (query == NULL) {
        ngx_chat_send_stored(stmt, NULL);
    }
}


/* rows come as chat_send_batch() stored them: "i" says whose each is */

static void
ngx_chat_send_stored(void *data, PGresult *res)
{
    int                    row, rows;
    int64_t                i;
    ngx_uint_t             k;
    ngx_chat_send_op_t    *op;
    ngx_chat_send_stmt_t  *stmt = data;

    rows = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    for (row = 0; row < rows; row++) {
        i = ngx_chat_pg_int(res, row, 0);

        if (i >= 1 && (ngx_uint_t) i <= stmt->n && stmt->ops[i - 1]) {
            op = stmt->ops[i - 1];
            stmt->ops[i - 1] = NULL;
            ngx_chat_send_answer(op, res, row);
        }
    }

    /* what has no row was not stored: the statement failed */

    for (k = 0; k < stmt->n; k++) {
        op = stmt->ops[k];

        if (op) {
            ngx_chat_send_answer(op, NULL, 0);
        }
    }

    stmt->n = 0;

    ngx_chat_batch_done(&ngx_chat_send_batch);
}


/* "sent" once stored, and the message out to the members */

static void
ngx_chat_send_answer(ngx_chat_send_op_t *op, PGresult *res, int row)
{
    u_char               chat[NGX_INT64_LEN + 1];
    json_t              *sent;
    int64_t              status, seq;
    ngx_str_t            members, json, contact;
    ngx_chat_out_t       out;
    ngx_chat_session_t  *s;

    s = op->session;
    op->stmt = NULL;

    status = res ? ngx_chat_pg_int(res, row, 1) : -1;

    if (status == NGX_CHAT_SEND_STORED) {

        /* the sender's first message in a direct chat made a contact */

        ngx_chat_pg_value(res, row, 6, &contact);

        if (contact.len) {
            ngx_chat_fanout_recheck(&contact,
                                    s ? s->log : ngx_cycle->log);
        }
    }

    if (s == NULL) {
        ngx_chat_send_done(op);         /* its socket is gone */
        return;
    }

    switch (status) {

    case NGX_CHAT_SEND_STORED:
    case NGX_CHAT_SEND_RESENT:
        break;

    case NGX_CHAT_SEND_NOT_MEMBER:
        ngx_chat_session_error(s, op->id, "forbidden",
                               "not a member of this chat");
        goto done;

    case NGX_CHAT_SEND_NO_MEDIA:
        ngx_chat_session_error(s, op->id, "unknown_media",
                               "no such media of the sender");
        goto done;

    case NGX_CHAT_SEND_UNLINKED:
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "chat send: the device is unlinked");
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_UNAUTHORIZED,
                               "device unlinked");
        goto done;

    default:
        ngx_chat_session_error(s, op->id, "unavailable",
                               "the message store is unavailable");
        goto done;
    }

    seq = ngx_chat_pg_int(res, row, 2);

    *ngx_sprintf(chat, "%L", op->chat_id) = '\0';

    sent = json_pack("{s:s,s:O,s:s,s:I,s:I}", "type", "sent",
                     "id", op->id, "chat_id", (char *) chat,
                     "seq", (json_int_t) seq,
                     "ts", (json_int_t) ngx_chat_pg_int(res, row, 3));

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = NGX_CHAT_OUT_SENT;
    out.chat = op->chat_id;
    out.seq = seq;
    out.json = sent;

    if (sent) {
        (void) ngx_chat_session_output(s, &out);
        json_decref(sent);
    }

    /*
     * A resend of a message still stored comes with it: its first answer
     * may have been lost before it was published (016_resend_window.sql),
     * so it is published again; devices that have it drop it by its seq.
     */

    if (status == NGX_CHAT_SEND_STORED) {
        ngx_chat_metrics_add(sent, 1);
    }

    ngx_chat_pg_value(res, row, 5, &json);

    if (json.len) {
        ngx_chat_pg_value(res, row, 4, &members);

        /* this device's own order moves on even if Redis is away */

        ngx_chat_order_offer(s, op->chat_id, seq, 1, &json);

        (void) ngx_chat_fanout("u:", &members, &json, "chat: message",
                               s->log);
    }

done:

    ngx_chat_send_done(op);
    ngx_chat_send_next(s);
}


/*
 * An op leaves its socket's queue; one in a statement in flight is freed
 * by the statement's answer, which is told that the socket has gone
 * (op->session NULL).
 */

static void
ngx_chat_send_done(ngx_chat_send_op_t *op)
{
    ngx_chat_send_t  *st;

    if (op->session) {
        st = ngx_chat_session_get_ctx(op->session, ngx_chat_send_feature);
        ngx_queue_remove(&op->queue);
        st->n--;
        ngx_chat_session_op_done(op->session);
        op->session = NULL;
    }

    if (op->stmt) {
        return;                 /* the statement's answer frees it */
    }

    if (op->batched) {
        ngx_chat_batch_remove(&ngx_chat_send_batch, &op->ready);
    }

    json_decref(op->id);
    json_decref(op->body);
    ngx_free(op);
}


static ngx_uint_t
ngx_chat_send_pending(ngx_chat_session_t *s)
{
    ngx_chat_send_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_send_feature);

    return st ? st->n : 0;
}


static void
ngx_chat_send_end(ngx_chat_session_t *s)
{
    ngx_chat_send_t     *st;
    ngx_chat_send_op_t  *op;

    st = ngx_chat_session_get_ctx(s, ngx_chat_send_feature);

    if (st == NULL) {
        return;
    }

    while (!ngx_queue_empty(&st->queue)) {
        op = ngx_queue_data(ngx_queue_head(&st->queue), ngx_chat_send_op_t,
                            queue);
        ngx_chat_send_done(op);
    }
}
