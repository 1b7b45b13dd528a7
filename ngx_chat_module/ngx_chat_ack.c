
/*
 * "ack" (PROTOCOL.md, section 4): a device's cursor in a chat moves, and
 * what no device is owed any more is deleted.
 *
 * Acks are cumulative, so a chat needs at most one pending ack: what is
 * acked while it waits is folded into it, and what is acked while it is
 * being applied goes in the next one.  The pending acks of all the
 * sockets of a worker that are ready in one pass of the event loop are
 * applied together, by one statement in one transaction
 * (chat_ack_batch): a commit per pass, not per message, as for sends.
 *
 * An ack outlives its socket: one pending or being applied when the
 * socket goes is applied all the same, so a reconnect anywhere is not
 * sent what the device acked.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_ACK_BATCH    512       /* acks in one statement */
#define NGX_CHAT_ACK_BATCHES  1         /* statements in flight a worker */


struct ngx_chat_ack_s {
    ngx_queue_t                queue;    /* in the worker's next batch */
    ngx_chat_session_chat_t   *chat;     /* NULL: the socket is gone */
    int64_t                    device;
    int64_t                    chat_id;
    int64_t                    seq;
    unsigned                   applying:1;
};


typedef struct {
    ngx_uint_t                 n;
    ngx_chat_ack_t            *acks[1];
} ngx_chat_ack_batch_t;


static const char  ngx_chat_ack_sql[] =
    "SELECT out_chat, out_user, out_seq, out_authors "
    "FROM chat_ack_batch($1::bigint[], $2::bigint[], $3::bigint[])";


static ngx_int_t ngx_chat_ack_queue(ngx_chat_session_chat_t *ch,
    int64_t device, int64_t chat_id, int64_t seq, ngx_log_t *log);
static void ngx_chat_ack_flush(ngx_event_t *ev);
static void ngx_chat_ack_applied(void *data, PGresult *res);


static ngx_queue_t   ngx_chat_ack_ready;
static ngx_uint_t    ngx_chat_ack_nready;
static ngx_event_t   ngx_chat_ack_ev;
static ngx_uint_t    ngx_chat_ack_batches;      /* in flight */


ngx_int_t
ngx_chat_ack_init_worker(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_chat_ack_ready);

    ngx_chat_event_init(&ngx_chat_ack_ev, ngx_chat_ack_flush, cycle->log);

    return NGX_OK;
}


void
ngx_chat_ack_message(ngx_chat_session_t *s, json_t *msg)
{
    int64_t   chat_id;
    json_t   *value;

    value = json_object_get(msg, "seq");

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), &chat_id)
        != NGX_OK
        || !json_is_integer(value) || json_integer_value(value) <= 0)
    {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "bad_request",
                               "ack needs \"chat_id\" and a positive "
                               "\"seq\"");
        return;
    }

    ngx_chat_ack_add(s, chat_id, json_integer_value(value));
}


/* an ack of the device's, queued for the worker's next ack batch */

void
ngx_chat_ack_add(ngx_chat_session_t *s, int64_t chat_id, int64_t seq)
{
    ngx_chat_session_chat_t  *ch;

    ch = ngx_chat_sync_chat(s, chat_id);
    if (ch == NULL) {
        return;
    }

    if (seq <= ch->ack_want) {
        return;
    }

    ch->ack_want = seq;

    if (ch->ack == NULL) {
        if (ngx_chat_ack_queue(ch, s->device, chat_id, seq,
                               s->log)
            == NGX_OK)
        {
            s->acks++;
        }

    } else if (!ch->ack->applying) {
        ch->ack->seq = seq;             /* folded into the pending one */
    }
}


/* the chat's state goes with its socket: its ack does not */

void
ngx_chat_ack_close(ngx_chat_session_t *s, ngx_chat_session_chat_t *ch)
{
    ngx_chat_ack_t  *ack;

    ack = ch->ack;

    if (ack == NULL) {
        return;
    }

    ack->chat = NULL;
    ch->ack = NULL;
    s->acks--;

    if (ack->applying && ch->ack_want > ack->seq) {
        (void) ngx_chat_ack_queue(NULL, s->device, ack->chat_id,
                                  ch->ack_want, ngx_cycle->log);
    }
}


static ngx_int_t
ngx_chat_ack_queue(ngx_chat_session_chat_t *ch, int64_t device,
    int64_t chat_id, int64_t seq, ngx_log_t *log)
{
    ngx_chat_ack_t  *ack;

    ack = ngx_calloc(sizeof(ngx_chat_ack_t), log);
    if (ack == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "chat ack not applied: out of memory");
        return NGX_ERROR;
    }

    ack->chat = ch;
    ack->device = device;
    ack->chat_id = chat_id;
    ack->seq = seq;

    if (ch) {
        ch->ack = ack;
    }

    ngx_queue_insert_tail(&ngx_chat_ack_ready, &ack->queue);
    ngx_chat_ack_nready++;

    ngx_post_event(&ngx_chat_ack_ev, &ngx_posted_events);

    return NGX_OK;
}


/* a posted event: the acks pending in this pass, a batch at a time */

static void
ngx_chat_ack_flush(ngx_event_t *ev)
{
    u_char                *p[3];
    ngx_str_t              params[3];
    ngx_uint_t             i, k, n;
    ngx_queue_t           *q;
    ngx_chat_ack_t        *ack;
    ngx_chat_ack_batch_t  *batch;
    ngx_chat_pg_query_t   *query;

    while (ngx_chat_ack_nready
           && ngx_chat_ack_batches < NGX_CHAT_ACK_BATCHES)
    {
        n = ngx_min(ngx_chat_ack_nready, NGX_CHAT_ACK_BATCH);

        batch = ngx_alloc(sizeof(ngx_chat_ack_batch_t)
                          + (n - 1) * sizeof(ngx_chat_ack_t *), ev->log);
        if (batch == NULL) {
            /* they wait for the next ack to post the event again */
            return;
        }

        batch->n = n;
        ngx_chat_ack_batches++;

        /* three bigint arrays: "{1,2,...}" */

        for (k = 0; k < 3; k++) {
            params[k].data = ngx_alloc(n * (NGX_INT64_LEN + 1) + 2, ev->log);
            p[k] = params[k].data;

            if (p[k]) {
                *p[k]++ = '{';
            }
        }

        for (i = 0; i < n; i++) {
            q = ngx_queue_head(&ngx_chat_ack_ready);
            ngx_queue_remove(q);
            ngx_chat_ack_nready--;

            ack = ngx_queue_data(q, ngx_chat_ack_t, queue);
            ack->applying = 1;
            batch->acks[i] = ack;

            if (p[0] && p[1] && p[2]) {
                p[0] = ngx_sprintf(p[0], "%s%L", i ? "," : "", ack->device);
                p[1] = ngx_sprintf(p[1], "%s%L", i ? "," : "", ack->chat_id);
                p[2] = ngx_sprintf(p[2], "%s%L", i ? "," : "", ack->seq);
            }
        }

        query = NULL;

        if (p[0] && p[1] && p[2]) {
            for (k = 0; k < 3; k++) {
                *p[k]++ = '}';
                params[k].len = p[k] - params[k].data;
            }

            query = ngx_chat_pg_query(ngx_chat_ack_sql, 3, params,
                                      ngx_chat_ack_applied, batch, ev->log);
        }

        for (k = 0; k < 3; k++) {
            ngx_free(params[k].data);
        }

        if (query == NULL) {
            ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                          "chat acks not applied: PostgreSQL unavailable");
            ngx_chat_ack_applied(batch, NULL);
        }
    }
}


static void
ngx_chat_ack_applied(void *data, PGresult *res)
{
    int                       row, rows;
    ngx_str_t                 chat, user, seq, authors;
    ngx_uint_t                i;
    ngx_chat_ack_t           *ack;
    ngx_chat_session_t       *s;
    ngx_chat_ack_batch_t     *batch = data;
    ngx_chat_session_chat_t  *ch;

    if (res && !ngx_chat_pg_ok(res)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat acks not applied: %s", PQresultErrorMessage(res));
    }

    /* the delivered marks the acks moved, for their authors */

    rows = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    for (row = 0; row < rows; row++) {
        ngx_chat_pg_value(res, row, 0, &chat);
        ngx_chat_pg_value(res, row, 1, &user);
        ngx_chat_pg_value(res, row, 2, &seq);
        ngx_chat_pg_value(res, row, 3, &authors);

        if (authors.len) {
            ngx_chat_receipt_publish(&chat, &user, "delivered",
                                     ngx_atoof(seq.data, seq.len), &authors,
                                     NULL);
        }
    }

    for (i = 0; i < batch->n; i++) {
        ack = batch->acks[i];
        ch = ack->chat;

        if (ch) {
            s = ch->session;
            ch->ack = NULL;
            s->acks--;

            if (ch->ack_want > ack->seq
                && ngx_chat_ack_queue(ch, s->device, ack->chat_id,
                                      ch->ack_want, ch->gap.log)
                   == NGX_OK)
            {
                s->acks++;
            }

            if (s->acks == 0) {
                ngx_chat_session_acks_applied(s);
            }
        }

        ngx_free(ack);
    }

    ngx_free(batch);

    ngx_chat_ack_batches--;

    if (ngx_chat_ack_nready) {
        ngx_post_event(&ngx_chat_ack_ev, &ngx_posted_events);
    }
}
