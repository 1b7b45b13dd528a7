
/*
 * The per-chat table of a session and the order of delivery
 * (PROTOCOL.md, section 5).
 *
 * Each chat the session knows has "delivered": the highest seq handled on
 * this connection, the device's own sends included (they are counted, not
 * sent).  A message is delivered only when it is the next seq; one that
 * comes early (messages of a chat stored by different workers or hosts
 * can be published out of order) is held, and if the gap is still open
 * after chat_gap_wait, the chat is filled from PostgreSQL, where every
 * message owed to the device is until it is acked.
 *
 * Flow control: a message the client has no room for is not queued.  The
 * chat falls behind, and once the client has drained, a fill brings it
 * up to date from PostgreSQL, as much as there is room for at a time.
 *
 * Before the sync has loaded the cursors the table is empty, and live
 * messages are dropped: the sync reads PostgreSQL after that, and brings
 * them.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_metrics.h"


#define NGX_CHAT_ORDER_HELD   256       /* live messages held in a chat */
#define NGX_CHAT_ORDER_RETRY  1000      /* ms: a fill PostgreSQL refused */


typedef struct {
    ngx_queue_t                queue;
    int64_t                    seq;
    ngx_uint_t                 own;
    size_t                     len;
    u_char                     data[1];
} ngx_chat_order_held_t;


/* a chat's gap, only while it has one */
typedef struct {
    ngx_queue_t                held;         /* past the gap, in seq order */
    ngx_uint_t                 nheld;
    ngx_event_t                wait;         /* gap wait, then the fill */
    ngx_chat_pg_query_t       *fill;         /* in flight */
    int64_t                    covers;       /* the last seq held when the
                                                fill went: stored before
                                                the fill read the chat */
    ngx_queue_t                queue;        /* in s->behind */
    unsigned                   behind:1;     /* dropped for want of room */
    unsigned                   waiting:1;    /* in s->behind */
    unsigned                   again:1;      /* offered while it filled */
} ngx_chat_order_gap_t;


static const char  ngx_chat_order_fill_sql[] =
    "SELECT chat_id, seq, own, json, expired_seq "
    "FROM chat_fill($1, $2, $3, $4)";


static ngx_int_t ngx_chat_order_deliver(ngx_chat_session_chat_t *ch,
    int64_t seq, ngx_uint_t own, ngx_str_t *json);
static void ngx_chat_order_expired(ngx_chat_session_chat_t *ch, int64_t upto);
static void ngx_chat_order_hold(ngx_chat_session_chat_t *ch, int64_t seq,
    ngx_uint_t own, ngx_str_t *json);
static void ngx_chat_order_drain(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_behind(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_arm(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_gap_wait(ngx_event_t *ev);
static void ngx_chat_order_fill(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_filled(void *data, PGresult *res);
static ngx_chat_order_gap_t *ngx_chat_order_gap(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_unhold(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_tidy(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_walk(ngx_chat_session_t *s,
    void (*handler)(ngx_chat_session_chat_t *ch));
static void ngx_chat_order_ready_chat(ngx_chat_session_chat_t *ch);
static void ngx_chat_order_free(ngx_chat_session_chat_t *ch);


/* the chat's state on this session; with create, made on first use */

ngx_chat_session_chat_t *
ngx_chat_order_chat(ngx_chat_session_t *s, int64_t id, ngx_uint_t create)
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

    if (!create) {
        return NULL;
    }

    ch = ngx_calloc(sizeof(ngx_chat_session_chat_t), s->log);
    if (ch == NULL) {
        return NULL;
    }

    ch->node.key = (ngx_rbtree_key_t) id;
    ch->session = s;
    ch->delivered = -1;

    ngx_rbtree_insert(&s->chats, &ch->node);

    return ch;
}


/* where a chat stands for the device, from its cursor */

void
ngx_chat_order_position(ngx_chat_session_t *s, int64_t chat, int64_t acked,
    int64_t expired)
{
    ngx_chat_session_chat_t  *ch;

    ch = ngx_chat_order_chat(s, chat, 1);

    if (ch) {
        ch->delivered = acked;
        ch->expired = expired;
    }
}


void
ngx_chat_order_loaded(ngx_chat_session_t *s)
{
    s->loaded = 1;
}


/* a message of a chat, from Redis or a send of this device */

void
ngx_chat_order_offer(ngx_chat_session_t *s, int64_t chat, int64_t seq,
    ngx_uint_t own, ngx_str_t *json)
{
    ngx_chat_order_gap_t     *gap;
    ngx_chat_session_chat_t  *ch;

    if (!s->loaded) {
        return;                 /* the sync brings it */
    }

    ch = ngx_chat_order_chat(s, chat, 1);
    if (ch == NULL) {
        return;                 /* a fill brings it later */
    }

    if (ch->delivered >= 0 && seq <= ch->delivered) {
        return;                 /* had it already */
    }

    gap = ch->order;

    if (gap && gap->behind) {
        if (gap->fill) {
            gap->again = 1;     /* stored after the fill read the chat */
        }

        return;                 /* its fill brings it */
    }

    if (ch->delivered >= 0 && seq == ch->delivered + 1) {

        if (ngx_chat_order_deliver(ch, seq, own, json) != NGX_OK) {
            ngx_chat_order_behind(ch);
            return;
        }

        ngx_chat_order_drain(ch);
        return;
    }

    /*
     * Early, or a chat this session does not know yet (joined since the
     * cursors were read): held, and filled after the gap wait.
     */

    ngx_chat_order_hold(ch, seq, own, json);

    if (s->state == NGX_CHAT_SESSION_READY) {
        ngx_chat_order_arm(ch);
    }
}


/*
 * Delivers the rows of a sync page or a fill (chat_id, seq, own, json,
 * expired_seq), from *row on, while the client has room.  *row ends at
 * the first row not delivered; sent counts the messages sent (own ones
 * are counted in the order, not sent).  NGX_AGAIN: the client has no
 * room, the caller waits for it and reads the rest again.
 */

ngx_int_t
ngx_chat_order_rows(ngx_chat_session_t *s, PGresult *res, ngx_uint_t owed,
    int *row, ngx_uint_t *sent)
{
    int                       i, n;
    int64_t                   seq;
    ngx_str_t                 json, flag;
    ngx_uint_t                own;
    ngx_chat_session_chat_t  *ch;

    n = PQntuples(res);

    for (i = *row; i < n; i++) {
        ch = ngx_chat_order_chat(s, ngx_chat_pg_int(res, i, 0), 1);
        if (ch == NULL) {
            continue;
        }

        seq = ngx_chat_pg_int(res, i, 1);
        ngx_chat_pg_value(res, i, 2, &flag);
        own = (flag.len == 1 && flag.data[0] == 't');
        ngx_chat_pg_value(res, i, 3, &json);
        ch->expired = ngx_max(ch->expired, ngx_chat_pg_int(res, i, 4));

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
            ngx_chat_order_expired(ch, ngx_min(seq - 1, ch->expired));
        }

        if (ngx_chat_order_deliver(ch, seq, own, &json) != NGX_OK) {
            *row = i;
            return NGX_AGAIN;
        }

        if (owed && !own) {
            (*sent)++;
        }

        ngx_chat_order_drain(ch);
    }

    *row = n;

    return NGX_OK;
}


/*
 * The sync is over: expired ranges with nothing stored after them are
 * announced, and held messages may wait for a gap that only a fill can
 * close now.
 */

void
ngx_chat_order_ready(ngx_chat_session_t *s)
{
    ngx_chat_order_walk(s, ngx_chat_order_ready_chat);
}


static void
ngx_chat_order_ready_chat(ngx_chat_session_chat_t *ch)
{
    /* expired with nothing stored after it: the rows never showed it */

    if (ch->delivered >= 0 && ch->delivered < ch->expired) {
        ngx_chat_order_expired(ch, ch->expired);
    }

    ngx_chat_order_drain(ch);
    ngx_chat_order_arm(ch);
}


static ngx_int_t
ngx_chat_order_deliver(ngx_chat_session_chat_t *ch, int64_t seq,
    ngx_uint_t own, ngx_str_t *json)
{
    ngx_chat_out_t       out;
    ngx_chat_session_t  *s;

    s = ch->session;

    if (!own) {
        if (!ngx_chat_session_room(s, json->len)) {
            return NGX_AGAIN;
        }

        ngx_memzero(&out, sizeof(ngx_chat_out_t));
        out.kind = NGX_CHAT_OUT_MSG;
        out.chat = (int64_t) ch->node.key;
        out.seq = seq;
        out.text = *json;

        (void) ngx_chat_session_output(s, &out);
        ngx_chat_metrics_add(delivered, 1);
    }

    ch->delivered = seq;

    return NGX_OK;
}


/* {"type":"expired"} for what expired after delivered, up to upto */

static void
ngx_chat_order_expired(ngx_chat_session_chat_t *ch, int64_t upto)
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

    (void) ngx_chat_session_send(ch->session, NGX_CHAT_OUT_EXPIRED, notice);

    ch->delivered = upto;
}


/*
 * Keeps held messages in seq order, each once, within bounds: a chat
 * holds at most NGX_CHAT_ORDER_HELD, a session at most chat_ws_send_queue
 * bytes; past them a message is left to the fill.
 */

static void
ngx_chat_order_hold(ngx_chat_session_chat_t *ch, int64_t seq, ngx_uint_t own,
    ngx_str_t *json)
{
    ngx_queue_t            *q;
    ngx_chat_session_t     *s;
    ngx_chat_order_gap_t   *gap;
    ngx_chat_order_held_t  *h, *prev;

    s = ch->session;

    gap = ngx_chat_order_gap(ch);
    if (gap == NULL) {
        return;
    }

    if (gap->nheld >= NGX_CHAT_ORDER_HELD
        || s->held + json->len > s->conf->ws.send_queue)
    {
        return;
    }

    for (q = ngx_queue_last(&gap->held);
         q != ngx_queue_sentinel(&gap->held);
         q = ngx_queue_prev(q))
    {
        prev = ngx_queue_data(q, ngx_chat_order_held_t, queue);

        if (prev->seq == seq) {
            return;
        }

        if (prev->seq < seq) {
            break;
        }
    }

    h = ngx_alloc(sizeof(ngx_chat_order_held_t) + json->len, s->log);
    if (h == NULL) {
        return;
    }

    h->seq = seq;
    h->own = own;
    h->len = json->len;
    ngx_memcpy(h->data, json->data, json->len);

    ngx_queue_insert_after(q, &h->queue);
    gap->nheld++;
    s->held += h->len;
}


/* the held messages that are next now */

static void
ngx_chat_order_drain(ngx_chat_session_chat_t *ch)
{
    ngx_str_t               json;
    ngx_queue_t            *q;
    ngx_chat_order_gap_t   *gap;
    ngx_chat_order_held_t  *h;

    gap = ch->order;

    if (gap == NULL) {
        return;
    }

    while (!ngx_queue_empty(&gap->held) && ch->delivered >= 0) {
        q = ngx_queue_head(&gap->held);
        h = ngx_queue_data(q, ngx_chat_order_held_t, queue);

        if (h->seq > ch->delivered + 1) {
            break;
        }

        if (h->seq == ch->delivered + 1) {
            json.data = h->data;
            json.len = h->len;

            if (ngx_chat_order_deliver(ch, h->seq, h->own, &json)
                != NGX_OK)
            {
                ngx_chat_order_behind(ch);
                return;
            }
        }

        ngx_queue_remove(q);
        gap->nheld--;
        ch->session->held -= h->len;
        ngx_free(h);
    }

    if (ngx_queue_empty(&gap->held) && gap->wait.timer_set) {
        ngx_del_timer(&gap->wait);
    }

    ngx_chat_order_tidy(ch);
}


/*
 * The client had no room for a message of the chat: what it holds goes,
 * and once the client has drained, a fill reads the chat from where it
 * stands.
 */

static void
ngx_chat_order_behind(ngx_chat_session_chat_t *ch)
{
    ngx_chat_session_t    *s;
    ngx_chat_order_gap_t  *gap;

    s = ch->session;

    gap = ngx_chat_order_gap(ch);
    if (gap == NULL) {
        return;
    }

    ngx_chat_order_unhold(ch);

    if (gap->wait.timer_set) {
        ngx_del_timer(&gap->wait);
    }

    gap->behind = 1;

    if (!gap->waiting) {
        gap->waiting = 1;
        ngx_queue_insert_tail(&s->behind, &gap->queue);
    }

    ngx_chat_session_wait(s, &s->behind_waiter);
}


/* the client has drained: the chats that fell behind are filled */

void
ngx_chat_order_drained(ngx_chat_session_t *s, void *data)
{
    ngx_queue_t            *q;
    ngx_chat_order_gap_t   *gap;

    while (!ngx_queue_empty(&s->behind)) {
        q = ngx_queue_head(&s->behind);
        ngx_queue_remove(q);

        gap = ngx_queue_data(q, ngx_chat_order_gap_t, queue);
        gap->waiting = 0;

        ngx_chat_order_fill(gap->wait.data);
    }
}


/* the gap wait starts, unless it runs or a fill does */

static void
ngx_chat_order_arm(ngx_chat_session_chat_t *ch)
{
    ngx_chat_order_gap_t  *gap;

    gap = ch->order;

    if (gap && gap->nheld && !gap->wait.timer_set && gap->fill == NULL
        && !gap->behind)
    {
        ngx_add_timer(&gap->wait, ch->delivered < 0
                                  ? 1 : ch->session->conf->gap_wait);
    }
}


static void
ngx_chat_order_gap_wait(ngx_event_t *ev)
{
    ngx_chat_session_chat_t  *ch = ev->data;

    ngx_chat_order_fill(ch);
    ngx_chat_order_tidy(ch);
}


static void
ngx_chat_order_fill(ngx_chat_session_chat_t *ch)
{
    u_char                  buf[3][NGX_INT64_LEN];
    ngx_str_t               params[4];
    ngx_chat_session_t     *s;
    ngx_chat_order_gap_t   *gap;
    ngx_chat_order_held_t  *h;

    s = ch->session;
    gap = ch->order;

    if (gap->fill || (gap->nheld == 0 && !gap->behind)) {
        return;
    }

    params[0] = s->device_id;

    params[1].data = buf[0];
    params[1].len = ngx_sprintf(buf[0], "%L", (int64_t) ch->node.key)
                    - buf[0];

    params[2].data = buf[1];
    params[2].len = ngx_sprintf(buf[1], "%L", ngx_max(ch->delivered, 0))
                    - buf[1];

    params[3].data = buf[2];
    params[3].len = ngx_sprintf(buf[2], "%ui", s->conf->sync_batch) - buf[2];

    gap->again = 0;
    gap->covers = 0;

    if (!ngx_queue_empty(&gap->held)) {
        h = ngx_queue_data(ngx_queue_last(&gap->held), ngx_chat_order_held_t,
                           queue);
        gap->covers = h->seq;
    }

    gap->fill = ngx_chat_pg_query(ngx_chat_order_fill_sql, 4, params,
                                  ngx_chat_order_filled, ch, s->log);

    if (gap->fill == NULL) {
        ngx_add_timer(&gap->wait, NGX_CHAT_ORDER_RETRY);  /* PG is down */
        return;
    }

    ngx_chat_metrics_add(gap_fills, 1);
}


static void
ngx_chat_order_filled(void *data, PGresult *res)
{
    int                       row;
    ngx_uint_t                sent;
    ngx_queue_t              *q;
    ngx_chat_session_t       *s;
    ngx_chat_order_gap_t     *gap;
    ngx_chat_order_held_t    *h;
    ngx_chat_session_chat_t  *ch = data;

    s = ch->session;
    gap = ch->order;
    gap->fill = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_add_timer(&gap->wait, NGX_CHAT_ORDER_RETRY);
        return;
    }

    row = 0;
    sent = 0;

    if (ngx_chat_order_rows(s, res, 0, &row, &sent) == NGX_AGAIN) {
        ngx_chat_order_behind(ch);
        return;
    }

    if ((ngx_uint_t) PQntuples(res) == s->conf->sync_batch || gap->again) {
        ngx_chat_order_fill(ch);
        return;
    }

    gap->behind = 0;

    if (gap->nheld == 0) {
        ngx_chat_order_tidy(ch);
        return;
    }

    q = ngx_queue_head(&gap->held);
    h = ngx_queue_data(q, ngx_chat_order_held_t, queue);

    /*
     * Held since the fill went, it may have been stored after the fill
     * read the chat, and what comes before it too (a publish lost while
     * Redis was away): read the chat again, it was not missed.
     */

    if (h->seq > gap->covers) {
        ngx_chat_order_fill(ch);
        return;
    }

    /*
     * Held before the fill went, it was stored before the fill read the
     * chat (the last one held then was, and all before it): what is still
     * missing was acked on another connection.
     */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat order: chat %L skips %L..%L",
                   (int64_t) ch->node.key, ch->delivered + 1, h->seq - 1);

    ch->delivered = h->seq - 1;
    ngx_chat_order_drain(ch);
}


static ngx_chat_order_gap_t *
ngx_chat_order_gap(ngx_chat_session_chat_t *ch)
{
    ngx_chat_order_gap_t  *gap;

    if (ch->order) {
        return ch->order;
    }

    gap = ngx_calloc(sizeof(ngx_chat_order_gap_t), ch->session->log);
    if (gap == NULL) {
        return NULL;
    }

    ngx_queue_init(&gap->held);

    gap->wait.handler = ngx_chat_order_gap_wait;
    gap->wait.data = ch;
    gap->wait.log = ch->session->log;
    gap->wait.cancelable = 1;

    ch->order = gap;

    return gap;
}


static void
ngx_chat_order_unhold(ngx_chat_session_chat_t *ch)
{
    ngx_queue_t            *q;
    ngx_chat_order_gap_t   *gap;
    ngx_chat_order_held_t  *h;

    gap = ch->order;

    while (!ngx_queue_empty(&gap->held)) {
        q = ngx_queue_head(&gap->held);
        ngx_queue_remove(q);

        h = ngx_queue_data(q, ngx_chat_order_held_t, queue);
        ch->session->held -= h->len;
        ngx_free(h);
    }

    gap->nheld = 0;
}


/* a gap that is closed goes */

static void
ngx_chat_order_tidy(ngx_chat_session_chat_t *ch)
{
    ngx_chat_order_gap_t  *gap;

    gap = ch->order;

    if (gap == NULL || gap->nheld || gap->fill || gap->behind
        || gap->wait.timer_set)
    {
        return;
    }

    ngx_free(gap);
    ch->order = NULL;
}


static void
ngx_chat_order_walk(ngx_chat_session_t *s,
    void (*handler)(ngx_chat_session_chat_t *ch))
{
    ngx_rbtree_node_t  *node, *next, *root, *sentinel;

    root = s->chats.root;
    sentinel = s->chats.sentinel;

    if (root == NULL || root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(root, sentinel); node; node = next) {
        next = ngx_rbtree_next(&s->chats, node);
        handler((ngx_chat_session_chat_t *) node);
    }
}


void
ngx_chat_order_cleanup(ngx_chat_session_t *s)
{
    ngx_chat_order_walk(s, ngx_chat_order_free);
}


static void
ngx_chat_order_free(ngx_chat_session_chat_t *ch)
{
    ngx_chat_order_gap_t  *gap;

    ngx_chat_session_chat_end(ch);

    gap = ch->order;

    if (gap) {
        if (gap->wait.timer_set) {
            ngx_del_timer(&gap->wait);
        }

        if (gap->fill) {
            ngx_chat_pg_cancel(gap->fill);
        }

        ngx_chat_order_unhold(ch);
        ngx_free(gap);
    }

    ngx_rbtree_delete(&ch->session->chats, &ch->node);
    ngx_free(ch);
}
