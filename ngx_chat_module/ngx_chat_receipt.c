
/*
 * Receipts (PROTOCOL.md, section 4): "delivered" and "read" marks per
 * user and chat, high-water only.
 *
 * A delivered mark moves with the acks (chat_ack_batch returns the marks
 * it moved, with the authors to tell); a read mark moves with "read"
 * (chat_read).  Either way the receipt is published to the user channel
 * of each author of the newly covered range, and a read receipt also to
 * the reader's own channel, tagged with the reading device, which its
 * sessions skip.  A device that was away gets the marks that moved
 * meanwhile at the end of its sync (chat_marks).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"


#define NGX_CHAT_RECEIPT_READS  16      /* reads in flight a socket */


typedef struct {
    ngx_queue_t                queue;    /* in session->reads */
    ngx_chat_session_t        *session;  /* NULL: the socket is gone */
    ngx_chat_pg_query_t       *query;
    json_t                    *id;
    ngx_str_t                  chat;
    ngx_str_t                  user;
    ngx_str_t                  device;
    u_char                     data[3 * NGX_INT64_LEN];
} ngx_chat_receipt_read_t;


static const char  ngx_chat_receipt_read_sql[] =
    "SELECT out_status, out_read, out_read_authors, out_delivered, "
    "out_delivered_authors FROM chat_read($1, $2, $3)";

static const char  ngx_chat_receipt_marks_sql[] =
    "SELECT out_chat, out_user, out_status, out_seq FROM chat_marks($1)";

static const char  ngx_chat_receipt_left_sql[] =
    "UPDATE devices SET marks_seen = now() WHERE id = $1";


static void ngx_chat_receipt_read_done(void *data, PGresult *res);
static void ngx_chat_receipt_marked(void *data, PGresult *res);
static void ngx_chat_receipt_ignore(void *data, PGresult *res);
static void ngx_chat_receipt_published(void *data, redisReply *reply);


/*
 * Publishes {"type":"receipt",...} to each user of "authors" ("id,id"),
 * and, with "device" set, to "user" itself, tagged with that device.
 */

void
ngx_chat_receipt_publish(ngx_str_t *chat, ngx_str_t *user,
    const char *status, int64_t seq, ngx_str_t *authors, ngx_str_t *device)
{
    char       *text;
    u_char     *p, *last, *comma;
    u_char      buf[NGX_CHAT_REDIS_CHANNEL_MAX];
    json_t     *receipt;
    ngx_str_t   author, channel;

    receipt = json_pack("{s:s,s:s%,s:s%,s:s,s:I}", "type", "receipt",
                        "chat_id", chat->data, chat->len,
                        "user_id", user->data, user->len,
                        "status", status, "seq", (json_int_t) seq);
    if (receipt == NULL) {
        return;
    }

    text = json_dumps(receipt, JSON_COMPACT);

    p = authors ? authors->data : NULL;
    last = authors ? authors->data + authors->len : NULL;

    while (text && p < last) {
        comma = ngx_strlchr(p, last, ',');

        author.data = p;
        author.len = (comma ? comma : last) - p;
        p = comma ? comma + 1 : last;

        if (ngx_chat_redis_user_channel_buf(buf, &author, &channel)
            == NGX_OK)
        {
            (void) ngx_chat_redis_command(ngx_chat_receipt_published, NULL,
                                          ngx_cycle->log, "PUBLISH %b %s",
                                          channel.data, channel.len, text);
        }
    }

    free(text);

    if (device == NULL
        || json_object_set_new(receipt, "device_id",
                               json_stringn((char *) device->data,
                                            device->len))
           != 0)
    {
        json_decref(receipt);
        return;
    }

    text = json_dumps(receipt, JSON_COMPACT);
    json_decref(receipt);

    if (text
        && ngx_chat_redis_user_channel_buf(buf, user, &channel) == NGX_OK)
    {
        (void) ngx_chat_redis_command(ngx_chat_receipt_published, NULL,
                                      ngx_cycle->log, "PUBLISH %b %s",
                                      channel.data, channel.len, text);
    }

    free(text);
}


static void
ngx_chat_receipt_published(void *data, redisReply *reply)
{
}


/* {"type":"read","chat_id","seq"} */

void
ngx_chat_receipt_read(ngx_chat_session_t *s, json_t *msg)
{
    u_char                   *p, upto[NGX_INT64_LEN];
    int64_t                   chat;
    json_t                   *seq, *id;
    ngx_str_t                 params[3];
    ngx_chat_receipt_read_t  *rd;

    id = json_object_get(msg, "id");
    seq = json_object_get(msg, "seq");

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), &chat)
        != NGX_OK
        || !json_is_integer(seq) || json_integer_value(seq) <= 0)
    {
        ngx_chat_session_error(s, id, "bad_request",
                               "read needs \"chat_id\" and a positive "
                               "\"seq\"");
        return;
    }

    if (s->nreads >= NGX_CHAT_RECEIPT_READS) {
        ngx_chat_session_error(s, id, "rate_limited",
                               "too many reads waiting on this socket");
        return;
    }

    rd = ngx_calloc(sizeof(ngx_chat_receipt_read_t), s->log);
    if (rd == NULL) {
        ngx_chat_session_error(s, id, "unavailable", "out of memory");
        return;
    }

    p = rd->data;

    rd->chat.data = p;
    p = ngx_sprintf(p, "%L", chat);
    rd->chat.len = p - rd->chat.data;

    rd->user.data = p;
    p = ngx_cpymem(p, s->user_id.data, s->user_id.len);
    rd->user.len = s->user_id.len;

    rd->device.data = p;
    p = ngx_cpymem(p, s->device_id.data, s->device_id.len);
    rd->device.len = s->device_id.len;

    params[0] = rd->user;
    params[1] = rd->chat;
    params[2].data = upto;
    params[2].len = ngx_sprintf(upto, "%L", (int64_t) json_integer_value(seq))
                    - upto;

    rd->query = ngx_chat_pg_query(ngx_chat_receipt_read_sql, 3, params,
                                  ngx_chat_receipt_read_done, rd,
                                  s->log);

    if (rd->query == NULL) {
        ngx_free(rd);
        ngx_chat_session_error(s, id, "unavailable",
                               "the message store is unavailable");
        return;
    }

    rd->session = s;
    rd->id = json_incref(id);
    ngx_queue_insert_tail(&s->reads, &rd->queue);
    s->nreads++;
}


static void
ngx_chat_receipt_read_done(void *data, PGresult *res)
{
    ngx_str_t                 v, authors;
    ngx_chat_session_t       *s;
    ngx_chat_receipt_read_t  *rd = data;

    s = rd->session;

    if (s) {
        ngx_queue_remove(&rd->queue);
        s->nreads--;
    }

    if (!ngx_chat_pg_ok(res) || PQntuples(res) != 1) {
        if (s) {
            ngx_chat_session_error(s, rd->id, "unavailable",
                                   "the message store is unavailable");
        }

        goto done;
    }

    ngx_chat_pg_value(res, 0, 0, &v);

    if (v.len == 1 && v.data[0] == '2') {
        if (s) {
            ngx_chat_session_error(s, rd->id, "forbidden",
                                   "not a member of this chat");
        }

        goto done;
    }

    if (v.len != 1 || v.data[0] != '0') {
        goto done;                      /* the mark was there already */
    }

    ngx_chat_pg_value(res, 0, 1, &v);
    ngx_chat_pg_value(res, 0, 2, &authors);

    ngx_chat_receipt_publish(&rd->chat, &rd->user, "read",
                             ngx_atoof(v.data, v.len), &authors,
                             &rd->device);

    if (!PQgetisnull(res, 0, 3)) {
        ngx_chat_pg_value(res, 0, 3, &v);
        ngx_chat_pg_value(res, 0, 4, &authors);

        ngx_chat_receipt_publish(&rd->chat, &rd->user, "delivered",
                                 ngx_atoof(v.data, v.len), &authors, NULL);
    }

done:

    json_decref(rd->id);
    ngx_free(rd);

    if (s) {
        ngx_chat_session_settle(s);
    }
}


/* the socket goes: its reads are applied all the same */

void
ngx_chat_receipt_cleanup(ngx_chat_session_t *s)
{
    ngx_queue_t              *q;
    ngx_chat_receipt_read_t  *rd;

    if (s->reads.next == NULL) {
        return;                         /* never ready */
    }

    while (!ngx_queue_empty(&s->reads)) {
        q = ngx_queue_head(&s->reads);
        ngx_queue_remove(q);

        rd = ngx_queue_data(q, ngx_chat_receipt_read_t, queue);
        rd->session = NULL;
    }

    s->nreads = 0;

    /*
     * A long-poll leaves marks_seen where its sync put it: the next poll
     * gets again what moved since, the receipts this one may have had no
     * room for included (receipts are marks: a repeat changes nothing).
     */

    if (s->marks_had && !s->poll) {
        /* the marks it will have missed are those from now on */
        (void) ngx_chat_pg_query(ngx_chat_receipt_left_sql, 1, &s->device_id,
                                 ngx_chat_receipt_ignore, NULL,
                                 ngx_cycle->log);
    }
}


static void
ngx_chat_receipt_ignore(void *data, PGresult *res)
{
}


/*
 * The end of a sync: the marks that moved while the device was away,
 * then "done" goes on with the sync.
 */

void
ngx_chat_receipt_sync(ngx_chat_session_t *s, void (*done)(ngx_chat_session_t *))
{
    s->sync_done = done;

    s->query = ngx_chat_pg_query(ngx_chat_receipt_marks_sql, 1,
                                 &s->device_id, ngx_chat_receipt_marked, s,
                                 s->log);

    if (s->query == NULL) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "chat session: no receipts in the sync: PostgreSQL "
                      "unavailable");
        done(s);
    }
}


static void
ngx_chat_receipt_marked(void *data, PGresult *res)
{
    int                  i, n;
    json_t              *receipt;
    ngx_str_t            chat, user, status, seq;
    ngx_chat_session_t  *s = data;

    s->query = NULL;

    n = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    if (!ngx_chat_pg_ok(res)) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "chat session: no receipts in the sync: PostgreSQL "
                      "failed");
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &chat);
        ngx_chat_pg_value(res, i, 1, &user);
        ngx_chat_pg_value(res, i, 2, &status);
        ngx_chat_pg_value(res, i, 3, &seq);

        receipt = json_pack("{s:s,s:s%,s:s%,s:s%,s:I}", "type", "receipt",
                            "chat_id", chat.data, chat.len,
                            "user_id", user.data, user.len,
                            "status", status.data, status.len,
                            "seq", (json_int_t) ngx_atoof(seq.data, seq.len));
        if (receipt) {
            ngx_chat_session_send(s, receipt);
            json_decref(receipt);
        }
    }

    s->marks_had = 1;
    s->sync_done(s);
}
