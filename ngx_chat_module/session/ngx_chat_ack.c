
/*
 * "ack" (PROTOCOL.md, section 4): a device's cursor in a chat moves, and
 * what no device is owed any more is deleted.
 *
 * Acks are cumulative, so a chat needs at most one pending ack: what is
 * acked while it waits is folded into it, and what is acked while it is
 * being applied goes in the next one.  The pending acks of all the
 * sockets of a worker that are ready in one pass of the event loop are
 * applied together, by one statement in one transaction
 * (chat_ack_batch, ngx_chat_batch.h): a commit per pass, not per
 * message, as for sends.  Once applied, the "delivered" marks the acks
 * moved are told to the authors.
 *
 * An ack outlives its socket: one pending or being applied when the
 * socket goes is applied all the same, so a reconnect anywhere is not
 * sent what the device acked.  A closing socket's close is answered
 * once its acks are applied (NGX_CHAT_FEATURE_HOLDS_CLOSE).
 *
 * What an ack may cost is bounded by what the device may touch: once the
 * session knows the device's chats (the sync read its cursors), an ack
 * for a chat it does not know is ignored and leaves nothing behind.
 * Before that (a long-poll's acks come with its request) an ack is
 * applied as it is, with no per-chat state: PostgreSQL moves only the
 * device's own cursors, and such acks count against the socket's
 * requests in flight (NGX_CHAT_SESSION_OPS).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_batch.h"
#include "ngx_chat_event.h"
#include "ngx_chat_fanout.h"


#define NGX_CHAT_ACK_BATCH    512       /* acks in one statement */
#define NGX_CHAT_ACK_BATCHES  1         /* statements in flight a worker */
#define NGX_CHAT_ACK_KEEP     65536     /* acks kept for PostgreSQL */
#define NGX_CHAT_ACK_AGAIN    1000      /* ms between their tries */


typedef struct ngx_chat_ack_op_s  ngx_chat_ack_op_t;


/* a session's acks pending or being applied */
typedef struct {
    ngx_queue_t                ops;      /* ngx_chat_ack_op_t */
    ngx_uint_t                 n;
} ngx_chat_ack_t;


/* a chat's ack */
typedef struct {
    ngx_chat_ack_op_t         *op;       /* pending or being applied */
    int64_t                    want;     /* the highest acked */
} ngx_chat_ack_chat_t;


struct ngx_chat_ack_op_s {
    ngx_queue_t                queue;    /* in the worker's batch */
    ngx_queue_t                by_session;
    ngx_chat_session_t        *session;  /* NULL: the socket is gone */
    ngx_chat_session_chat_t   *chat;     /* NULL: no chat state */
    int64_t                    device;
    int64_t                    chat_id;
    int64_t                    seq;
    unsigned                   applying:1;
};


/* one chat_ack_batch() statement; n is 0 while the slot is free */
typedef struct {
    ngx_uint_t                 n;
    ngx_chat_ack_op_t         *ops[NGX_CHAT_ACK_BATCH];
} ngx_chat_ack_stmt_t;


/* an ack PostgreSQL did not take, the highest of its device and chat */

typedef struct {
    ngx_rbtree_node_t          node;     /* key: the chat */
    int64_t                    device;
    int64_t                    seq;
} ngx_chat_ack_kept_t;


static const char  ngx_chat_ack_sql[] =
    "SELECT out_chat, out_user, out_seq, out_authors "
    "FROM chat_ack_batch($1::bigint[], $2::bigint[], $3::bigint[])";


static ngx_int_t ngx_chat_ack_init_worker(ngx_cycle_t *cycle);
static void ngx_chat_ack_exit_worker(ngx_cycle_t *cycle);
static void ngx_chat_ack(ngx_chat_session_t *s, json_t *msg);
static ngx_int_t ngx_chat_ack_queue(ngx_chat_session_t *s,
    ngx_chat_session_chat_t *ch, int64_t chat_id, int64_t seq);
static void ngx_chat_ack_orphan(int64_t device, int64_t chat_id,
    int64_t seq);
static void ngx_chat_ack_run(ngx_chat_batch_t *b, ngx_uint_t n);
static void ngx_chat_ack_applied(void *data, PGresult *res);
static void ngx_chat_ack_done(ngx_chat_ack_op_t *op);
static ngx_uint_t ngx_chat_ack_pending(ngx_chat_session_t *s);
static void ngx_chat_ack_chat_end(ngx_chat_session_t *s,
    ngx_chat_session_chat_t *ch);
static void ngx_chat_ack_detach(ngx_chat_ack_op_t *op);
static void ngx_chat_ack_end(ngx_chat_session_t *s);
static void ngx_chat_ack_keep(ngx_chat_ack_op_t *op);
static void ngx_chat_ack_kept_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_chat_ack_kept_t *ngx_chat_ack_kept_find(int64_t device,
    int64_t chat_id);
static void ngx_chat_ack_again(ngx_event_t *ev);


static ngx_chat_command_t  ngx_chat_ack_commands[] = {
    { ngx_string("ack"), ngx_chat_ack },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_ack_feature = {
    .name = "ack",
    .commands = ngx_chat_ack_commands,
    .init_worker = ngx_chat_ack_init_worker,
    .exit_worker = ngx_chat_ack_exit_worker,
    .pending = ngx_chat_ack_pending,
    .end = ngx_chat_ack_end,
    .chat_end = ngx_chat_ack_chat_end,
    .flags = NGX_CHAT_FEATURE_HOLDS_CLOSE,
};


static ngx_chat_batch_t     ngx_chat_ack_batch;
static ngx_chat_ack_stmt_t  ngx_chat_ack_stmts[NGX_CHAT_ACK_BATCHES];

/*
 * Acks PostgreSQL did not take (down, or the statement failed) are kept,
 * one per device and chat, and go again every NGX_CHAT_ACK_AGAIN until
 * it takes them: PROTOCOL.md applies an ack within a second of its
 * coming, and one thrown away would bring its messages again.  Past
 * NGX_CHAT_ACK_KEEP, or when the worker exits, they are dropped, and the
 * messages come again (the client drops repeats by chat and seq).
 */

static ngx_rbtree_t         ngx_chat_ack_kept;
static ngx_rbtree_node_t    ngx_chat_ack_kept_sentinel;
static ngx_uint_t           ngx_chat_ack_nkept;
static ngx_uint_t           ngx_chat_ack_dropped;
static ngx_uint_t           ngx_chat_ack_keeping;    /* said in the log */
static ngx_event_t          ngx_chat_ack_again_ev;


static ngx_int_t
ngx_chat_ack_init_worker(ngx_cycle_t *cycle)
{
    ngx_chat_batch_init(&ngx_chat_ack_batch, ngx_chat_ack_run,
                        NGX_CHAT_ACK_BATCH, NGX_CHAT_ACK_BATCHES, cycle->log);

    ngx_rbtree_init(&ngx_chat_ack_kept, &ngx_chat_ack_kept_sentinel,
                    ngx_chat_ack_kept_insert);

    ngx_chat_event_init(&ngx_chat_ack_again_ev, ngx_chat_ack_again,
                        cycle->log);
    ngx_chat_ack_again_ev.cancelable = 1;

    return NGX_OK;
}


static void
ngx_chat_ack_exit_worker(ngx_cycle_t *cycle)
{
    ngx_rbtree_node_t  *node;

    ngx_chat_batch_exit(&ngx_chat_ack_batch);

    if (ngx_chat_ack_nkept) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "chat: %ui acks kept for PostgreSQL not applied: the "
                      "worker exits (their messages come again)",
                      ngx_chat_ack_nkept);
    }

    while (ngx_chat_ack_kept.root != &ngx_chat_ack_kept_sentinel) {
        node = ngx_chat_ack_kept.root;
        ngx_rbtree_delete(&ngx_chat_ack_kept, node);
        ngx_free(node);
    }

    ngx_chat_ack_nkept = 0;

    if (ngx_chat_ack_again_ev.timer_set) {
        ngx_del_timer(&ngx_chat_ack_again_ev);
    }
}


/* {"type":"ack","chat_id","seq"}: queued for the worker's next batch */

static void
ngx_chat_ack(ngx_chat_session_t *s, json_t *msg)
{
    int64_t                   chat_id, seq;
    ngx_chat_ack_t           *st;
    ngx_chat_ack_chat_t      *ac;
    ngx_chat_session_chat_t  *ch;

    if (ngx_chat_session_chat_seq(msg, &chat_id, &seq) != NGX_OK) {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "bad_request",
                               "ack needs \"chat_id\" and a positive "
                               "\"seq\"");
        return;
    }

    st = ngx_chat_session_get_ctx(s, ngx_chat_ack_feature);

    if (st == NULL) {
        st = ngx_pcalloc(s->pool, sizeof(ngx_chat_ack_t));
        if (st == NULL) {
            return;
        }

        ngx_queue_init(&st->ops);
        ngx_chat_session_set_ctx(s, st, ngx_chat_ack_feature);
    }

    ch = ngx_chat_order_chat(s, chat_id, 0);

    if (ch == NULL) {
        if (!s->loaded) {
            (void) ngx_chat_ack_queue(s, NULL, chat_id, seq);
        }

        return;                 /* not a chat of the device's */
    }

    ac = ngx_chat_chat_get_ctx(ch, ngx_chat_ack_feature);

    if (ac == NULL) {
        ac = ngx_calloc(sizeof(ngx_chat_ack_chat_t), s->log);
        if (ac == NULL) {
            return;
        }

        ngx_chat_chat_set_ctx(ch, ac, ngx_chat_ack_feature);
    }

    if (seq <= ac->want) {
        return;
    }

    ac->want = seq;

    if (ac->op == NULL) {
        (void) ngx_chat_ack_queue(s, ch, chat_id, seq);

    } else if (!ac->op->applying) {
        ac->op->seq = seq;              /* folded into the pending one */
    }
}


/*
 * An ack for the next batch, counted against the session's requests in
 * flight: one with chat state (ch) always (the device's chats bound
 * them), one without only while there is room.
 */

static ngx_int_t
ngx_chat_ack_queue(ngx_chat_session_t *s, ngx_chat_session_chat_t *ch,
    int64_t chat_id, int64_t seq)
{
    ngx_chat_ack_t       *st;
    ngx_chat_ack_op_t    *op;
    ngx_chat_ack_chat_t  *ac;

    if (ngx_chat_session_op(s, ch == NULL) != NGX_OK) {
        return NGX_DECLINED;
    }

    op = ngx_calloc(sizeof(ngx_chat_ack_op_t), s->log);
    if (op == NULL) {
        ngx_chat_session_op_done(s);
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "chat ack of chat %L not applied: out of memory",
                      chat_id);
        return NGX_ERROR;
    }

    op->session = s;
    op->chat = ch;
    op->device = s->device;
    op->chat_id = chat_id;
    op->seq = seq;

    if (ch) {
        ac = ngx_chat_chat_get_ctx(ch, ngx_chat_ack_feature);
        ac->op = op;
    }

    st = ngx_chat_session_get_ctx(s, ngx_chat_ack_feature);
    ngx_queue_insert_tail(&st->ops, &op->by_session);
    st->n++;

    ngx_chat_batch_add(&ngx_chat_ack_batch, &op->queue);

    return NGX_OK;
}


/* an ack of a socket that has gone, past the one being applied */

static void
ngx_chat_ack_orphan(int64_t device, int64_t chat_id, int64_t seq)
{
    ngx_chat_ack_op_t  *op;

    op = ngx_calloc(sizeof(ngx_chat_ack_op_t), ngx_cycle->log);
    if (op == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat ack of chat %L by device %L not applied: out of "
                      "memory", chat_id, device);
        return;
    }

    op->device = device;
    op->chat_id = chat_id;
    op->seq = seq;

    ngx_chat_batch_add(&ngx_chat_ack_batch, &op->queue);
}


/* one statement for n acks: three bigint arrays */

static void
ngx_chat_ack_run(ngx_chat_batch_t *b, ngx_uint_t n)
{
    ngx_str_t             params[3];
    ngx_uint_t            i, k;
    ngx_chat_ack_op_t    *op;
    ngx_chat_pg_array_t   a[3];
    ngx_chat_ack_stmt_t  *stmt;
    ngx_chat_pg_query_t  *query;

    /* the batch runs at most NGX_CHAT_ACK_BATCHES at once: one is free */

    for (stmt = ngx_chat_ack_stmts; stmt->n; stmt++) { /* void */ }

    stmt->n = n;

    for (k = 0; k < 3; k++) {
        if (ngx_chat_pg_array_init(&a[k], n, b->ev.log) != NGX_OK) {
            a[k].value.data = NULL;
        }
    }

    for (i = 0; i < n; i++) {
        op = ngx_queue_data(ngx_chat_batch_take(b), ngx_chat_ack_op_t, queue);
        op->applying = 1;
        stmt->ops[i] = op;

        if (a[0].value.data && a[1].value.data && a[2].value.data) {
            ngx_chat_pg_array_add(&a[0], op->device);
            ngx_chat_pg_array_add(&a[1], op->chat_id);
            ngx_chat_pg_array_add(&a[2], op->seq);
        }
    }

    query = NULL;

    if (a[0].value.data && a[1].value.data && a[2].value.data) {
        for (k = 0; k < 3; k++) {
            params[k] = *ngx_chat_pg_array_value(&a[k]);
        }

        query = ngx_chat_pg_query(ngx_chat_ack_sql, 3, params,
                                  ngx_chat_ack_applied, stmt, b->ev.log);
    }

    for (k = 0; k < 3; k++) {
        ngx_chat_pg_array_free(&a[k]);
    }

    if (query == NULL) {
        ngx_chat_ack_applied(stmt, NULL);
    }
}


static void
ngx_chat_ack_applied(void *data, PGresult *res)
{
    int                   row, rows;
    ngx_str_t             chat, user, authors;
    ngx_uint_t            i;
    ngx_chat_ack_stmt_t  *stmt = data;

    if (!ngx_chat_pg_ok(res)) {
        if (!ngx_chat_ack_keeping) {
            ngx_chat_ack_keeping = 1;
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "chat: acks not applied, kept until PostgreSQL "
                          "takes them: %s",
                          res ? PQresultErrorMessage(res)
                              : "PostgreSQL unavailable");
        }

        for (i = 0; i < stmt->n; i++) {
            ngx_chat_ack_keep(stmt->ops[i]);
        }

    } else if (ngx_chat_ack_keeping) {
        ngx_chat_ack_keeping = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: PostgreSQL takes acks again");
    }

    /* the delivered marks the acks moved, for their authors */

    rows = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    for (row = 0; row < rows; row++) {
        ngx_chat_pg_value(res, row, 0, &chat);
        ngx_chat_pg_value(res, row, 1, &user);
        ngx_chat_pg_value(res, row, 3, &authors);

        if (authors.len) {
            (void) ngx_chat_fanout_receipt(&chat, &user, "delivered",
                                           ngx_chat_pg_int(res, row, 2),
                                           &authors, NULL, ngx_cycle->log);
        }
    }

    for (i = 0; i < stmt->n; i++) {
        ngx_chat_ack_done(stmt->ops[i]);
    }

    stmt->n = 0;

    ngx_chat_batch_done(&ngx_chat_ack_batch);
}


/* an ack is through: the next one of its chat may go */

static void
ngx_chat_ack_done(ngx_chat_ack_op_t *op)
{
    ngx_chat_ack_t           *st;
    ngx_chat_session_t       *s;
    ngx_chat_ack_chat_t      *ac;
    ngx_chat_session_chat_t  *ch;

    s = op->session;
    ch = op->chat;

    if (s == NULL) {
        ngx_free(op);
        return;
    }

    ngx_chat_ack_detach(op);

    if (ch) {
        ac = ngx_chat_chat_get_ctx(ch, ngx_chat_ack_feature);
        ac->op = NULL;

        if (ac->want > op->seq) {
            (void) ngx_chat_ack_queue(s, ch, op->chat_id, ac->want);
        }
    }

    ngx_free(op);

    st = ngx_chat_session_get_ctx(s, ngx_chat_ack_feature);

    if (st->n == 0) {
        ngx_chat_session_settle(s);
    }
}


/* an op leaves its session; the batch frees it once it is applied */

static void
ngx_chat_ack_detach(ngx_chat_ack_op_t *op)
{
    ngx_chat_ack_t  *st;

    st = ngx_chat_session_get_ctx(op->session, ngx_chat_ack_feature);

    ngx_queue_remove(&op->by_session);
    st->n--;
    ngx_chat_session_op_done(op->session);

    op->session = NULL;
}


static ngx_uint_t
ngx_chat_ack_pending(ngx_chat_session_t *s)
{
    ngx_chat_ack_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_ack_feature);

    return st ? st->n : 0;
}


/* the chat's state goes with its socket: its ack does not */

static void
ngx_chat_ack_chat_end(ngx_chat_session_t *s, ngx_chat_session_chat_t *ch)
{
    ngx_chat_ack_op_t    *op;
    ngx_chat_ack_chat_t  *ac;

    ac = ngx_chat_chat_get_ctx(ch, ngx_chat_ack_feature);

    if (ac == NULL) {
        return;
    }

    op = ac->op;

    if (op) {
        ngx_chat_ack_detach(op);
        op->chat = NULL;

        if (op->applying && ac->want > op->seq) {
            ngx_chat_ack_orphan(s->device, op->chat_id, ac->want);
        }
    }

    ngx_free(ac);
    ngx_chat_chat_set_ctx(ch, NULL, ngx_chat_ack_feature);
}


/* acks with no chat state go on without their socket */

static void
ngx_chat_ack_end(ngx_chat_session_t *s)
{
    ngx_chat_ack_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_ack_feature);

    while (st && !ngx_queue_empty(&st->ops)) {
        ngx_chat_ack_detach(ngx_queue_data(ngx_queue_head(&st->ops),
                                           ngx_chat_ack_op_t, by_session));
    }
}


static void
ngx_chat_ack_keep(ngx_chat_ack_op_t *op)
{
    ngx_chat_ack_kept_t  *k;

    k = ngx_chat_ack_kept_find(op->device, op->chat_id);

    if (k) {
        k->seq = ngx_max(k->seq, op->seq);
        return;
    }

    k = NULL;

    if (ngx_chat_ack_nkept < NGX_CHAT_ACK_KEEP) {
        k = ngx_alloc(sizeof(ngx_chat_ack_kept_t), ngx_cycle->log);
    }

    if (k == NULL) {
        ngx_chat_ack_dropped++;
        return;
    }

    k->node.key = (ngx_rbtree_key_t) op->chat_id;
    k->device = op->device;
    k->seq = op->seq;

    ngx_rbtree_insert(&ngx_chat_ack_kept, &k->node);
    ngx_chat_ack_nkept++;

    if (!ngx_chat_ack_again_ev.timer_set) {
        ngx_add_timer(&ngx_chat_ack_again_ev, NGX_CHAT_ACK_AGAIN);
    }
}


/* ordered by chat, then device */

static void
ngx_chat_ack_kept_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t  **p;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (((ngx_chat_ack_kept_t *) node)->device
                 < ((ngx_chat_ack_kept_t *) temp)->device)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_chat_ack_kept_t *
ngx_chat_ack_kept_find(int64_t device, int64_t chat_id)
{
    ngx_rbtree_key_t      key;
    ngx_rbtree_node_t    *node, *sentinel;
    ngx_chat_ack_kept_t  *k;

    key = (ngx_rbtree_key_t) chat_id;
    node = ngx_chat_ack_kept.root;
    sentinel = ngx_chat_ack_kept.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        k = (ngx_chat_ack_kept_t *) node;

        if (device == k->device) {
            return k;
        }

        node = (device < k->device) ? node->left : node->right;
    }

    return NULL;
}


/* the kept acks go to the next batch; those it cannot apply come back */

static void
ngx_chat_ack_again(ngx_event_t *ev)
{
    int64_t               chat_id;
    ngx_rbtree_node_t    *node;
    ngx_chat_ack_kept_t  *k;

    if (ngx_chat_ack_dropped) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "chat: %ui acks not kept for PostgreSQL, past %d "
                      "(their messages come again)", ngx_chat_ack_dropped,
                      NGX_CHAT_ACK_KEEP);
        ngx_chat_ack_dropped = 0;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "chat: %ui kept acks go again", ngx_chat_ack_nkept);

    while (ngx_chat_ack_kept.root != &ngx_chat_ack_kept_sentinel) {
        node = ngx_rbtree_min(ngx_chat_ack_kept.root,
                              &ngx_chat_ack_kept_sentinel);
        k = (ngx_chat_ack_kept_t *) node;
        chat_id = (int64_t) node->key;      /* the delete zeroes it */

        ngx_rbtree_delete(&ngx_chat_ack_kept, node);
        ngx_chat_ack_nkept--;

        ngx_chat_ack_orphan(k->device, chat_id, k->seq);
        ngx_free(k);
    }
}
