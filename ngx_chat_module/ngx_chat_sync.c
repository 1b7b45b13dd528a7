
/*
 * Per-chat order for one device (PROTOCOL.md, section 5).
 *
 * Each chat the session knows has "delivered": the highest seq handled on
 * this connection, the device's own sends included (they are counted, not
 * sent).  A message is delivered only when it is the next seq; one that
 * comes early (messages of a chat stored by different workers or hosts
 * can be published out of order) is held, and if the gap is still open
 * after chat_gap_wait, the chat is filled from PostgreSQL, where every
 * message owed to the device is until it is acked.
 *
 * The sync after "ready" starts each chat at the device's cursor and
 * pages through what is owed, a page at a time once the socket has taken
 * the previous one, so a device with thousands pending is drained with
 * bounded memory.  Live messages that come meanwhile go through the same
 * per-chat order, and before the cursors are known they wait in a short,
 * bounded queue (past it they are dropped and the sync pages once more).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_metrics.h"


typedef struct {
    ngx_queue_t                queue;
    int64_t                    chat;         /* for the early queue */
    int64_t                    seq;
    ngx_uint_t                 own;
    size_t                     len;
    u_char                     data[1];
} ngx_chat_sync_held_t;


static const char  ngx_chat_sync_cursors_sql[] =
    "SELECT chat_id, acked, expired_seq FROM chat_cursors($1)";

static const char  ngx_chat_sync_owed_sql[] =
    "SELECT chat_id, seq, own, json, expired_seq "
    "FROM chat_owed($1, $2, $3, $4)";

static const char  ngx_chat_sync_fill_sql[] =
    "SELECT chat_id, seq, own, json, expired_seq "
    "FROM chat_fill($1, $2, $3, $4)";


static void ngx_chat_sync_cursors(void *data, PGresult *res);
static void ngx_chat_sync_page(ngx_chat_session_t *s);
static void ngx_chat_sync_paged(void *data, PGresult *res);
static void ngx_chat_sync_done(ngx_chat_session_t *s);
static void ngx_chat_sync_finish(ngx_chat_session_t *s);
static void ngx_chat_sync_ready(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static void ngx_chat_sync_expired(ngx_chat_session_chat_t *ch, int64_t upto);
static void ngx_chat_sync_deliver(ngx_chat_session_chat_t *ch, int64_t seq,
    ngx_uint_t own, u_char *json, size_t len);
static void ngx_chat_sync_hold(ngx_chat_session_chat_t *ch, int64_t seq,
    ngx_uint_t own, u_char *json, size_t len);
static void ngx_chat_sync_drain(ngx_chat_session_chat_t *ch);
static void ngx_chat_sync_gap(ngx_event_t *ev);
static void ngx_chat_sync_filled(void *data, PGresult *res);
static ngx_uint_t ngx_chat_sync_rows(ngx_chat_session_t *s, PGresult *res,
    ngx_uint_t count);
static ngx_chat_pg_query_t *ngx_chat_sync_query(ngx_chat_session_t *s,
    const char *sql, int64_t chat, int64_t seq, ngx_chat_pg_handler_pt handler,
    void *data);
static void ngx_chat_sync_free(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);


void
ngx_chat_sync_start(ngx_chat_session_t *s)
{
    ngx_str_t  param;

    param = s->device_id;

    s->query = ngx_chat_pg_query(ngx_chat_sync_cursors_sql, 1, &param,
                                 ngx_chat_sync_cursors, s,
                                 s->log);

    if (s->query == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
    }
}


static void
ngx_chat_sync_cursors(void *data, PGresult *res)
{
    int                       i, n;
    ngx_str_t                 v;
    ngx_queue_t              *q;
    ngx_chat_session_t       *s = data;
    ngx_chat_sync_held_t     *h;
    ngx_chat_session_chat_t  *ch;

    s->query = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &v);
        ch = ngx_chat_sync_chat(s, ngx_atoof(v.data, v.len));

        if (ch == NULL) {
            ngx_chat_session_close(s, NGX_CHAT_WS_CLOSE_ERROR, "no memory");
            return;
        }

        ngx_chat_pg_value(res, i, 1, &v);
        ch->delivered = ngx_atoof(v.data, v.len);
        ngx_chat_pg_value(res, i, 2, &v);
        ch->expired = ngx_atoof(v.data, v.len);
    }

    s->state = NGX_CHAT_SESSION_SYNCING;
    s->sync_chat = 0;
    s->sync_seq = 0;
    s->synced = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session state: syncing, %d chats", n);

    while (!ngx_queue_empty(&s->early)) {
        q = ngx_queue_head(&s->early);
        ngx_queue_remove(q);
        s->nearly--;

        h = ngx_queue_data(q, ngx_chat_sync_held_t, queue);
        ngx_chat_sync_offer(s, h->chat, h->seq, h->own, h->data, h->len);
        ngx_free(h);
    }

    ngx_chat_sync_page(s);
}


static void
ngx_chat_sync_page(ngx_chat_session_t *s)
{
    s->query = ngx_chat_sync_query(s, ngx_chat_sync_owed_sql, s->sync_chat,
                                   s->sync_seq, ngx_chat_sync_paged, s);

    if (s->query == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
    }
}


static void
ngx_chat_sync_paged(void *data, PGresult *res)
{
    ngx_uint_t           n;
    ngx_chat_session_t  *s = data;

    s->query = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
        return;
    }

    n = ngx_chat_sync_rows(s, res, 1);

    if (n < s->conf->sync_batch) {
        ngx_chat_sync_done(s);
        return;
    }

    /* paced by the socket: the next page once this one is written */

    if (ngx_chat_session_busy(s)) {
        s->sync_page_wanted = 1;
        return;
    }

    ngx_chat_sync_page(s);
}


void
ngx_chat_sync_drained(ngx_chat_session_t *s)
{
    if (s->sync_page_wanted && s->query == NULL) {
        s->sync_page_wanted = 0;
        ngx_chat_sync_page(s);
    }
}


static void
ngx_chat_sync_done(ngx_chat_session_t *s)
{
    if (s->sync_again) {
        /* live messages were dropped while the cursors loaded: read again */
        s->sync_again = 0;
        s->sync_chat = 0;
        s->sync_seq = 0;
        ngx_chat_sync_page(s);
        return;
    }

    /* the receipts that moved while the device was away, then "synced" */

    ngx_chat_receipt_sync(s, ngx_chat_sync_finish);
}


static void
ngx_chat_sync_finish(ngx_chat_session_t *s)
{
    json_t  *synced;

    s->state = NGX_CHAT_SESSION_READY;

    /*
     * Expired ranges with nothing stored after them are announced before
     * "synced"; held messages may wait for a gap that only a fill can
     * close now.
     */

    ngx_chat_sync_ready(s->chats.root, s->chats.sentinel);

    if (!s->resync) {
        synced = json_pack("{s:s,s:I}", "type", "synced",
                           "count", (json_int_t) s->synced);
        ngx_chat_session_send(s, synced);
        json_decref(synced);
    }

    s->resync = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat session state: ready, %ui synced", s->synced);

    if (s->transport->synced) {
        s->transport->synced(s);
    }
}


static void
ngx_chat_sync_ready(ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_chat_session_chat_t  *ch;

    if (node == sentinel) {
        return;
    }

    ngx_chat_sync_ready(node->left, sentinel);

    ch = (ngx_chat_session_chat_t *) node;

    /* expired with nothing stored after it: the rows never showed it */

    if (ch->delivered >= 0 && ch->delivered < ch->expired) {
        ngx_chat_sync_expired(ch, ch->expired);
    }

    ngx_chat_sync_drain(ch);

    if (ch->nheld && !ch->gap.timer_set && ch->fill == NULL) {
        ngx_add_timer(&ch->gap, ch->session->conf->gap_wait);
    }

    ngx_chat_sync_ready(node->right, sentinel);
}


/* a Redis outage is over: read back what was published meanwhile */

void
ngx_chat_sync_resync(ngx_chat_session_t *s)
{
    switch (s->state) {

    case NGX_CHAT_SESSION_READY:
        s->state = NGX_CHAT_SESSION_SYNCING;
        s->resync = 1;
        s->sync_chat = 0;
        s->sync_seq = 0;
        ngx_chat_sync_page(s);
        return;

    case NGX_CHAT_SESSION_SYNCING:
        s->sync_again = 1;
        return;

    default:
        return;                 /* the cursors are not read yet */
    }
}


/* a message of a chat, from Redis, a send of this device, or a fill */

void
ngx_chat_sync_offer(ngx_chat_session_t *s, int64_t chat, int64_t seq,
    ngx_uint_t own, u_char *json, size_t len)
{
    ngx_chat_sync_held_t     *h;
    ngx_chat_session_chat_t  *ch;

    if (s->state < NGX_CHAT_SESSION_CURSORS) {
        return;
    }

    if (s->state == NGX_CHAT_SESSION_CURSORS) {

        if (s->nearly >= NGX_CHAT_MAX_HELD) {
            s->sync_again = 1;
            return;
        }

        h = ngx_alloc(sizeof(ngx_chat_sync_held_t) + len, ngx_cycle->log);
        if (h == NULL) {
            s->sync_again = 1;
            return;
        }

        h->chat = chat;
        h->seq = seq;
        h->own = own;
        h->len = len;
        ngx_memcpy(h->data, json, len);

        ngx_queue_insert_tail(&s->early, &h->queue);
        s->nearly++;
        return;
    }

    ch = ngx_chat_sync_chat(s, chat);
    if (ch == NULL) {
        return;                 /* a fill brings it later */
    }

    if (ch->delivered >= 0 && seq <= ch->delivered) {
        return;                 /* had it already */
    }

    if (ch->delivered >= 0 && seq == ch->delivered + 1) {
        ngx_chat_sync_deliver(ch, seq, own, json, len);
        ngx_chat_sync_drain(ch);
        return;
    }

    /*
     * Early, or a chat this session does not know yet (joined since the
     * cursors were read): hold it, and fill after the gap wait.
     */

    ngx_chat_sync_hold(ch, seq, own, json, len);

    if (s->state == NGX_CHAT_SESSION_READY && !ch->gap.timer_set
        && ch->fill == NULL)
    {
        ngx_add_timer(&ch->gap, ch->delivered < 0 ? 1 : s->conf->gap_wait);
    }
}


/* the chat's state on this session, created on first use */

ngx_chat_session_chat_t *
ngx_chat_sync_chat(ngx_chat_session_t *s, int64_t id)
{
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_chat_session_chat_t  *ch;

    node = s->chats.root;
    sentinel = s->chats.sentinel;

    while (node != sentinel) {
        if ((ngx_rbtree_key_t) id < node->key) {
            node = node->left;

        } else if ((ngx_rbtree_key_t) id > node->key) {
            node = node->right;

        } else {
            return (ngx_chat_session_chat_t *) node;
        }
    }

    ch = ngx_calloc(sizeof(ngx_chat_session_chat_t),
                    s->log);
    if (ch == NULL) {
        return NULL;
    }

    ch->node.key = (ngx_rbtree_key_t) id;
    ch->session = s;
    ch->delivered = -1;
    ngx_queue_init(&ch->held);

    ch->gap.handler = ngx_chat_sync_gap;
    ch->gap.data = ch;
    ch->gap.log = s->log;
    ch->gap.cancelable = 1;

    ngx_rbtree_insert(&s->chats, &ch->node);

    return ch;
}


static void
ngx_chat_sync_deliver(ngx_chat_session_chat_t *ch, int64_t seq,
    ngx_uint_t own, u_char *json, size_t len)
{
    if (!own) {
        ngx_chat_session_send_text(ch->session, json, len);
        ngx_chat_metrics_add(delivered, 1);
    }

    ch->delivered = seq;
}


/* keeps held messages in seq order, each once */

static void
ngx_chat_sync_hold(ngx_chat_session_chat_t *ch, int64_t seq, ngx_uint_t own,
    u_char *json, size_t len)
{
    ngx_queue_t           *q;
    ngx_chat_sync_held_t  *h, *prev;

    if (ch->nheld >= NGX_CHAT_MAX_HELD) {
        return;                 /* the fill will bring it */
    }

    for (q = ngx_queue_last(&ch->held);
         q != ngx_queue_sentinel(&ch->held);
         q = ngx_queue_prev(q))
    {
        prev = ngx_queue_data(q, ngx_chat_sync_held_t, queue);

        if (prev->seq == seq) {
            return;
        }

        if (prev->seq < seq) {
            break;
        }
    }

    h = ngx_alloc(sizeof(ngx_chat_sync_held_t) + len, ngx_cycle->log);
    if (h == NULL) {
        return;
    }

    h->seq = seq;
    h->own = own;
    h->len = len;
    ngx_memcpy(h->data, json, len);

    ngx_queue_insert_after(q, &h->queue);
    ch->nheld++;
}


static void
ngx_chat_sync_drain(ngx_chat_session_chat_t *ch)
{
    ngx_queue_t           *q;
    ngx_chat_sync_held_t  *h;

    while (!ngx_queue_empty(&ch->held) && ch->delivered >= 0) {
        q = ngx_queue_head(&ch->held);
        h = ngx_queue_data(q, ngx_chat_sync_held_t, queue);

        if (h->seq > ch->delivered + 1) {
            return;
        }

        if (h->seq == ch->delivered + 1) {
            ngx_chat_sync_deliver(ch, h->seq, h->own, h->data, h->len);
        }

        ngx_queue_remove(q);
        ch->nheld--;
        ngx_free(h);
    }

    if (ngx_queue_empty(&ch->held) && ch->gap.timer_set) {
        ngx_del_timer(&ch->gap);
    }
}


static void
ngx_chat_sync_gap(ngx_event_t *ev)
{
    ngx_chat_session_chat_t  *ch = ev->data;

    if (ch->fill || ngx_queue_empty(&ch->held)) {
        return;
    }

    ch->fill = ngx_chat_sync_query(ch->session, ngx_chat_sync_fill_sql,
                                   (int64_t) ch->node.key,
                                   ngx_max(ch->delivered, 0),
                                   ngx_chat_sync_filled, ch);

    if (ch->fill == NULL) {
        ngx_add_timer(&ch->gap, 1000);          /* PostgreSQL is down */
        return;
    }

    ngx_chat_metrics_add(gap_fills, 1);
}


static void
ngx_chat_sync_filled(void *data, PGresult *res)
{
    ngx_uint_t                n;
    ngx_queue_t              *q;
    ngx_chat_sync_held_t     *h;
    ngx_chat_session_chat_t  *ch = data;

    ch->fill = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_add_timer(&ch->gap, 1000);
        return;
    }

    n = ngx_chat_sync_rows(ch->session, res, 0);

    if (n == ch->session->conf->sync_batch) {
        ngx_chat_sync_gap(&ch->gap);
        return;
    }

    if (ngx_queue_empty(&ch->held)) {
        return;
    }

    /*
     * PostgreSQL has every message owed to the device, so what is still
     * missing before the held ones was acked on another connection.
     */

    q = ngx_queue_head(&ch->held);
    h = ngx_queue_data(q, ngx_chat_sync_held_t, queue);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ch->gap.log, 0,
                   "chat sync: chat %L skips %L..%L",
                   (int64_t) ch->node.key, ch->delivered + 1, h->seq - 1);

    ch->delivered = h->seq - 1;
    ngx_chat_sync_drain(ch);
}


/*
 * Offers the rows of a sync page or a fill; a page also moves the sync's
 * keyset and counts what it sent.  Returns the number of rows.
 */

static ngx_uint_t
ngx_chat_sync_rows(ngx_chat_session_t *s, PGresult *res, ngx_uint_t count)
{
    int                       i, n;
    int64_t                   chat, seq;
    ngx_str_t                 v, json;
    ngx_uint_t                own;
    ngx_chat_session_chat_t  *ch;

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &v);
        chat = ngx_atoof(v.data, v.len);
        ngx_chat_pg_value(res, i, 1, &v);
        seq = ngx_atoof(v.data, v.len);
        own = (PQgetvalue(res, i, 2)[0] == 't');
        ngx_chat_pg_value(res, i, 3, &json);

        if (count) {
            s->sync_chat = chat;
            s->sync_seq = seq;
        }

        ch = ngx_chat_sync_chat(s, chat);
        if (ch == NULL) {
            continue;
        }

        ngx_chat_pg_value(res, i, 4, &v);
        ch->expired = ngx_max(ch->expired, ngx_atoof(v.data, v.len));

        /* rows start after the cursor, or after a seq this chat passed */

        if (ch->delivered < 0) {
            ch->delivered = seq - 1;
        }

        if (seq <= ch->delivered) {
            continue;
        }

        /*
         * A hole in what is stored: expired messages (announced), or the
         * device's own messages, deleted once everyone else had them.
         */

        if (seq != ch->delivered + 1) {
            ngx_chat_sync_expired(ch, ngx_min(seq - 1, ch->expired));
        }

        if (count && !own) {
            s->synced++;
        }

        ngx_chat_sync_deliver(ch, seq, own, json.data, json.len);
        ngx_chat_sync_drain(ch);
    }

    return n;
}


/* {"type":"expired"} for what expired after delivered, up to upto */

static void
ngx_chat_sync_expired(ngx_chat_session_chat_t *ch, int64_t upto)
{
    u_char   id[NGX_INT64_LEN + 1];
    json_t  *notice;

    if (upto <= ch->delivered) {
        return;
    }

    *ngx_sprintf(id, "%L", (int64_t) ch->node.key) = '\0';

    notice = json_pack("{s:s,s:s,s:I,s:I}", "type", "expired",
                       "chat_id", (char *) id,
                       "from_seq", (json_int_t) ch->delivered + 1,
                       "to_seq", (json_int_t) upto);

    ngx_chat_session_send(ch->session, notice);
    json_decref(notice);

    ch->delivered = upto;
}


static ngx_chat_pg_query_t *
ngx_chat_sync_query(ngx_chat_session_t *s, const char *sql, int64_t chat,
    int64_t seq, ngx_chat_pg_handler_pt handler, void *data)
{
    u_char     buf[3][NGX_INT64_LEN];
    ngx_str_t  params[4];

    params[0] = s->device_id;

    params[1].data = buf[0];
    params[1].len = ngx_sprintf(buf[0], "%L", chat) - buf[0];

    params[2].data = buf[1];
    params[2].len = ngx_sprintf(buf[1], "%L", seq) - buf[1];

    params[3].data = buf[2];
    params[3].len = ngx_sprintf(buf[2], "%ui", s->conf->sync_batch) - buf[2];

    return ngx_chat_pg_query(sql, 4, params, handler, data,
                             s->log);
}


void
ngx_chat_sync_cleanup(ngx_chat_session_t *s)
{
    ngx_queue_t           *q;
    ngx_chat_sync_held_t  *h;

    while (!ngx_queue_empty(&s->early)) {
        q = ngx_queue_head(&s->early);
        ngx_queue_remove(q);
        h = ngx_queue_data(q, ngx_chat_sync_held_t, queue);
        ngx_free(h);
    }

    if (s->chats.root) {
        ngx_chat_sync_free(s->chats.root, s->chats.sentinel);
    }
}


static void
ngx_chat_sync_free(ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_queue_t              *q;
    ngx_chat_session_chat_t  *ch;

    if (node == sentinel) {
        return;
    }

    ngx_chat_sync_free(node->left, sentinel);
    ngx_chat_sync_free(node->right, sentinel);

    ch = (ngx_chat_session_chat_t *) node;

    if (ch->gap.timer_set) {
        ngx_del_timer(&ch->gap);
    }

    if (ch->fill) {
        ngx_chat_pg_cancel(ch->fill);
    }

    ngx_chat_ack_close(ch->session, ch);

    while (!ngx_queue_empty(&ch->held)) {
        q = ngx_queue_head(&ch->held);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_chat_sync_held_t, queue));
    }

    ngx_free(ch);
}
