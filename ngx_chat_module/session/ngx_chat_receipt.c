
/*
 * Receipts (PROTOCOL.md, section 4): "delivered" and "read" marks per
 * user and chat, high-water only.
 *
 * A delivered mark moves with the acks (ngx_chat_ack.c); a read mark
 * moves with "read" (chat_read), here.  Either way the receipt is
 * published to the user channel of each author of the newly covered
 * range, and a read receipt also to the reader's own channel, tagged
 * with the reading device, whose sessions skip it
 * (ngx_chat_fanout_receipt()).  A device that was away gets the marks
 * that moved meanwhile at the end of its sync (chat_marks_since), as many
 * at a time as it has room for, and they count as its own (marks_seen)
 * only once the transport has written them: a socket that closes first,
 * or a long-poll with no room for them, loses none.
 *
 * Those marks_seen writes are batched per worker (one statement for up to
 * NGX_CHAT_RECEIPT_SEEN_BATCH devices, one at a time): thousands of
 * sockets closing or syncing at once make a few statements, not a query
 * each that fills PostgreSQL's queue.  One that is not written costs
 * receipts sent again, which change nothing on a device.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_batch.h"


#define NGX_CHAT_RECEIPT_READS       16      /* reads in flight a socket */
#define NGX_CHAT_RECEIPT_SEEN_BATCH  1024    /* devices a statement */
#define NGX_CHAT_RECEIPT_SEEN_MAX    65536   /* waiting a worker */

/* chat_read()'s statuses: 1, nothing moved; 2, not a member */
#define NGX_CHAT_RECEIPT_MOVED       0


typedef struct {
    int64_t                    chat;
    int64_t                    user;
    int64_t                    seq;
    int64_t                    ts;       /* when it moved, in us */
    ngx_uint_t                 read;     /* else delivered */
} ngx_chat_receipt_mark_t;


/* a session's reads and the marks of its sync */
typedef struct {
    ngx_queue_t                reads;    /* ngx_chat_receipt_read_t */
    ngx_uint_t                 nreads;
    ngx_chat_pg_query_t       *query;    /* chat_marks */
    ngx_chat_receipt_mark_t   *marks;    /* what the sync has to send */
    ngx_uint_t                 nmarks;
    ngx_uint_t                 next;     /* the next to send */
    ngx_uint_t                 written;  /* those the transport wrote */
    int64_t                    at;       /* when PostgreSQL read them */
    ngx_chat_session_waiter_t  waiter;   /* for room for the rest */
    ngx_chat_session_waiter_t  done;     /* for the last to be written */
    unsigned                   seen:1;   /* all counted as the device's */
} ngx_chat_receipt_t;


/* a device's marks_seen to move: to at (us), or to its last write */
typedef struct {
    ngx_queue_t                queue;    /* in the batch */
    int64_t                    device;
    int64_t                    at;       /* 0: when drained_at was */
    ngx_msec_t                 drained_at;
} ngx_chat_receipt_seen_t;


typedef struct {
    ngx_queue_t                queue;    /* in ngx_chat_receipt_t */
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
    "SELECT out_chat, out_user, out_status, out_seq, out_ts, out_at "
    "FROM chat_marks_since($1)";

/* devices, times in us, or 0 and how many ms ago it last wrote */
static const char  ngx_chat_receipt_seen_sql[] =
    "SELECT chat_marks_seen_batch($1, $2, $3)";


static void ngx_chat_receipt_read(ngx_chat_session_t *s, json_t *msg);
static void ngx_chat_receipt_read_done(void *data, PGresult *res);
static void ngx_chat_receipt_notice(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text);
static ngx_int_t ngx_chat_receipt_synced(ngx_chat_session_t *s);
static void ngx_chat_receipt_marked(void *data, PGresult *res);
static void ngx_chat_receipt_marks(ngx_chat_session_t *s, void *data);
static void ngx_chat_receipt_done(ngx_chat_session_t *s, void *data);
static void ngx_chat_receipt_seen(ngx_chat_session_t *s, int64_t at);
static void ngx_chat_receipt_seen_run(ngx_chat_batch_t *b, ngx_uint_t n);
static void ngx_chat_receipt_seen_done(void *data, PGresult *res);
static ngx_int_t ngx_chat_receipt_init_worker(ngx_cycle_t *cycle);
static void ngx_chat_receipt_exit_worker(ngx_cycle_t *cycle);
static ngx_chat_receipt_t *ngx_chat_receipt_state(ngx_chat_session_t *s);
static void ngx_chat_receipt_partly(ngx_chat_session_t *s,
    ngx_chat_receipt_t *st);
static ngx_uint_t ngx_chat_receipt_pending(ngx_chat_session_t *s);
static void ngx_chat_receipt_end(ngx_chat_session_t *s);


static ngx_chat_command_t  ngx_chat_receipt_commands[] = {
    { ngx_string("read"), ngx_chat_receipt_read },
    { ngx_null_string, NULL }
};


static ngx_chat_notice_t  ngx_chat_receipt_notices[] = {
    { ngx_string("receipt"), ngx_chat_receipt_notice },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_receipt_feature = {
    .name = "receipt",
    .commands = ngx_chat_receipt_commands,
    .notices = ngx_chat_receipt_notices,
    .synced = ngx_chat_receipt_synced,
    .pending = ngx_chat_receipt_pending,
    .end = ngx_chat_receipt_end,
    .init_worker = ngx_chat_receipt_init_worker,
    .exit_worker = ngx_chat_receipt_exit_worker,
};


static ngx_chat_batch_t  ngx_chat_receipt_seen_batch;


static ngx_int_t
ngx_chat_receipt_init_worker(ngx_cycle_t *cycle)
{
    ngx_chat_batch_init(&ngx_chat_receipt_seen_batch,
                        ngx_chat_receipt_seen_run,
                        NGX_CHAT_RECEIPT_SEEN_BATCH, 1, cycle->log);
    return NGX_OK;
}


static void
ngx_chat_receipt_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t  *q;

    ngx_chat_batch_exit(&ngx_chat_receipt_seen_batch);

    while (ngx_chat_receipt_seen_batch.nready) {
        q = ngx_chat_batch_take(&ngx_chat_receipt_seen_batch);
        ngx_free(ngx_queue_data(q, ngx_chat_receipt_seen_t, queue));
    }
}


/* {"type":"read","chat_id","seq"} */

static void
ngx_chat_receipt_read(ngx_chat_session_t *s, json_t *msg)
{
    u_char                   *p, upto[NGX_INT64_LEN];
    json_t                   *id;
    int64_t                   chat, seq;
    ngx_str_t                 params[3];
    ngx_chat_receipt_t       *st;
    ngx_chat_receipt_read_t  *rd;

    id = json_object_get(msg, "id");

    if (ngx_chat_session_chat_seq(msg, &chat, &seq) != NGX_OK) {
        ngx_chat_session_error(s, id, "bad_request",
                               "read needs \"chat_id\" and a positive "
                               "\"seq\"");
        return;
    }

    st = ngx_chat_receipt_state(s);

    if (st == NULL || st->nreads >= NGX_CHAT_RECEIPT_READS
        || ngx_chat_session_op(s, 1) != NGX_OK)
    {
        ngx_chat_session_error(s, id, "rate_limited",
                               "too many reads waiting on this socket");
        return;
    }

    rd = ngx_calloc(sizeof(ngx_chat_receipt_read_t), s->log);
    if (rd == NULL) {
        ngx_chat_session_op_done(s);
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
    params[2].len = ngx_sprintf(upto, "%L", seq) - upto;

    rd->query = ngx_chat_pg_query(ngx_chat_receipt_read_sql, 3, params,
                                  ngx_chat_receipt_read_done, rd, s->log);

    if (rd->query == NULL) {
        ngx_free(rd);
        ngx_chat_session_op_done(s);
        ngx_chat_session_error(s, id, "unavailable",
                               "the message store is unavailable");
        return;
    }

    rd->session = s;
    rd->id = json_incref(id);
    ngx_queue_insert_tail(&st->reads, &rd->queue);
    st->nreads++;
}


static void
ngx_chat_receipt_read_done(void *data, PGresult *res)
{
    int64_t                   status;
    ngx_str_t                 authors;
    ngx_chat_session_t       *s;
    ngx_chat_receipt_t       *st;
    ngx_chat_receipt_read_t  *rd = data;

    s = rd->session;

    if (s) {
        st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);
        ngx_queue_remove(&rd->queue);
        st->nreads--;
        ngx_chat_session_op_done(s);
    }

    status = (ngx_chat_pg_ok(res) && PQntuples(res) == 1)
             ? ngx_chat_pg_int(res, 0, 0) : -1;

    if (status == -1 && s) {
        ngx_chat_session_error(s, rd->id, "unavailable",
                               "the message store is unavailable");
    }

    /*
     * Anything else changed nothing: the mark was there already, or the
     * chat is not the user's (PROTOCOL.md: not answered, no state).
     */

    if (status == NGX_CHAT_RECEIPT_MOVED) {
        ngx_chat_pg_value(res, 0, 2, &authors);

        (void) ngx_chat_fanout_receipt(&rd->chat, &rd->user, "read",
                                       ngx_chat_pg_int(res, 0, 1), &authors,
                                       &rd->device, ngx_cycle->log);

        if (!PQgetisnull(res, 0, 3)) {
            ngx_chat_pg_value(res, 0, 4, &authors);

            (void) ngx_chat_fanout_receipt(&rd->chat, &rd->user,
                                           "delivered",
                                           ngx_chat_pg_int(res, 0, 3),
                                           &authors, NULL, ngx_cycle->log);
        }
    }

    json_decref(rd->id);
    ngx_free(rd);

    if (s) {
        ngx_chat_session_settle(s);
    }
}


/*
 * A receipt on the user's channel goes to every session of the user
 * that is past "ready", but the one of the device it names (the
 * reader's, which knows what it read).
 */

static void
ngx_chat_receipt_notice(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text)
{
    char                *dump;
    u_char               tag[NGX_CHAT_ID_LEN];
    int64_t              chat;
    ngx_str_t            device;
    const char          *value;
    ngx_queue_t         *q, *next;
    ngx_chat_out_t       out;
    ngx_chat_session_t  *s;

    /* the tag is for the server: clients get the receipt as specified */

    value = json_string_value(json_object_get(msg, "device_id"));
    device.len = 0;
    device.data = NULL;
    dump = NULL;

    if (value) {
        device.len = ngx_min(ngx_strlen(value), sizeof(tag));
        device.data = ngx_cpymem(tag, value, device.len) - device.len;

        json_object_del(msg, "device_id");

        dump = json_dumps(msg, JSON_COMPACT);
        if (dump == NULL) {
            return;
        }
    }

    if (ngx_chat_session_parse_id(json_object_get(msg, "chat_id"), &chat)
        != NGX_OK)
    {
        chat = 0;
    }

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = NGX_CHAT_OUT_RECEIPT;
    out.chat = chat;
    out.text.data = dump ? (u_char *) dump : text->data;
    out.text.len = dump ? ngx_strlen(dump) : text->len;

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

        (void) ngx_chat_session_output(s, &out);
    }

    free(dump);
}


/* the end of a sync: the marks that moved while the device was away */

static ngx_int_t
ngx_chat_receipt_synced(ngx_chat_session_t *s)
{
    ngx_chat_receipt_t  *st;

    st = ngx_chat_receipt_state(s);

    if (st) {
        st->query = ngx_chat_pg_query(ngx_chat_receipt_marks_sql, 1,
                                      &s->device_id, ngx_chat_receipt_marked,
                                      s, s->log);
    }

    if (st == NULL || st->query == NULL) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "chat session: no receipts in the sync: PostgreSQL "
                      "unavailable");
        return NGX_OK;
    }

    return NGX_AGAIN;
}


static void
ngx_chat_receipt_marked(void *data, PGresult *res)
{
    int                       i, n;
    ngx_str_t                 status;
    ngx_chat_session_t       *s = data;
    ngx_chat_receipt_t       *st;
    ngx_chat_receipt_mark_t  *m;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);
    st->query = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_log_error(NGX_LOG_WARN, s->log, 0,
                      "chat session: no receipts in the sync: PostgreSQL "
                      "failed");
        ngx_chat_session_resume(s);
        return;
    }

    /*
     * A resync came before the last sync's marks were all written: what
     * the device wrote of those counts, the rest come in these.
     */

    if (st->marks) {
        ngx_chat_session_unwait(&st->waiter);
        ngx_chat_session_unwait(&st->done);
        ngx_chat_receipt_partly(s, st);
        ngx_free(st->marks);
        st->marks = NULL;
    }

    /* kept, small, to go out as the client has room for them */

    n = PQntuples(res);

    if (n) {
        st->marks = ngx_alloc(n * sizeof(ngx_chat_receipt_mark_t), s->log);
        if (st->marks == NULL) {
            ngx_chat_session_resume(s);
            return;
        }
    }

    for (i = 0; i < n; i++) {
        m = &st->marks[i];

        m->chat = ngx_chat_pg_int(res, i, 0);
        m->user = ngx_chat_pg_int(res, i, 1);
        m->seq = ngx_chat_pg_int(res, i, 3);
        m->ts = ngx_chat_pg_int(res, i, 4);

        ngx_chat_pg_value(res, i, 2, &status);
        m->read = (status.len == 4);
    }

    st->at = n ? ngx_chat_pg_int(res, 0, 5) : 0;
    st->nmarks = n;
    st->next = 0;
    st->written = 0;

    ngx_chat_receipt_marks(s, NULL);
}


static void
ngx_chat_receipt_marks(ngx_chat_session_t *s, void *data)
{
    u_char                    buf[sizeof("{\"type\":\"receipt\",\"chat_id\":"
                                         "\"\",\"user_id\":\"\",\"status\":"
                                         "\"delivered\",\"seq\":}")
                                  + 3 * NGX_INT64_LEN];
    ngx_chat_out_t            out;
    ngx_chat_receipt_t       *st;
    ngx_chat_receipt_mark_t  *m;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);

    /* resumed by a drain: what went out before is written */

    st->written = st->next;

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = NGX_CHAT_OUT_RECEIPT;
    out.text.data = buf;

    while (st->next < st->nmarks) {
        m = &st->marks[st->next];

        out.chat = m->chat;
        out.text.len = ngx_sprintf(buf, "{\"type\":\"receipt\","
                                   "\"chat_id\":\"%L\",\"user_id\":\"%L\","
                                   "\"status\":\"%s\",\"seq\":%L}",
                                   m->chat, m->user,
                                   m->read ? "read" : "delivered", m->seq)
                       - buf;

        if (!ngx_chat_session_room(s, out.text.len)) {
            ngx_chat_session_wait(s, &st->waiter);
            return;
        }

        (void) ngx_chat_session_output(s, &out);
        st->next++;
    }

    /* they are the device's once the transport has written them */

    if (st->nmarks) {
        ngx_chat_session_wait(s, &st->done);

    } else {
        st->seen = 1;           /* there were none */
    }

    ngx_chat_session_resume(s);
}


/* every mark of the sync is written */

static void
ngx_chat_receipt_done(ngx_chat_session_t *s, void *data)
{
    ngx_chat_receipt_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);

    ngx_chat_receipt_seen(s, st->at);

    ngx_free(st->marks);
    st->marks = NULL;
    st->nmarks = 0;
    st->seen = 1;
}


/* the device's marks up to at (0: up to its last write) are its own */

static void
ngx_chat_receipt_seen(ngx_chat_session_t *s, int64_t at)
{
    ngx_chat_receipt_seen_t  *seen;

    if (ngx_chat_receipt_seen_batch.nready >= NGX_CHAT_RECEIPT_SEEN_MAX) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, s->log, 0,
                       "chat receipt: marks seen not written, too many "
                       "waiting");
        return;
    }

    seen = ngx_alloc(sizeof(ngx_chat_receipt_seen_t), s->log);
    if (seen == NULL) {
        return;
    }

    seen->device = s->device;
    seen->at = at;
    seen->drained_at = s->drained_at;

    ngx_chat_batch_add(&ngx_chat_receipt_seen_batch, &seen->queue);
}


static void
ngx_chat_receipt_seen_run(ngx_chat_batch_t *b, ngx_uint_t n)
{
    ngx_str_t                 params[3];
    ngx_uint_t                i, k, ok;
    ngx_chat_pg_array_t       a[3];
    ngx_chat_pg_query_t      *query;
    ngx_chat_receipt_seen_t  *seen;

    ok = 1;

    for (k = 0; k < 3; k++) {
        if (ngx_chat_pg_array_init(&a[k], n, b->ev.log) != NGX_OK) {
            a[k].value.data = NULL;
            ok = 0;
        }
    }

    for (i = 0; i < n; i++) {
        seen = ngx_queue_data(ngx_chat_batch_take(b),
                              ngx_chat_receipt_seen_t, queue);

        if (ok) {
            ngx_chat_pg_array_add(&a[0], seen->device);
            ngx_chat_pg_array_add(&a[1], seen->at);
            ngx_chat_pg_array_add(&a[2], (int64_t) (ngx_current_msec
                                                    - seen->drained_at));
        }

        ngx_free(seen);
    }

    query = NULL;

    if (ok) {
        for (k = 0; k < 3; k++) {
            params[k] = *ngx_chat_pg_array_value(&a[k]);
        }

        query = ngx_chat_pg_query(ngx_chat_receipt_seen_sql, 3, params,
                                  ngx_chat_receipt_seen_done, NULL,
                                  b->ev.log);
    }

    for (k = 0; k < 3; k++) {
        ngx_chat_pg_array_free(&a[k]);
    }

    if (query == NULL) {
        ngx_chat_receipt_seen_done(NULL, NULL);
    }
}


static void
ngx_chat_receipt_seen_done(void *data, PGresult *res)
{
    ngx_chat_batch_done(&ngx_chat_receipt_seen_batch);
}


static ngx_chat_receipt_t *
ngx_chat_receipt_state(ngx_chat_session_t *s)
{
    ngx_chat_receipt_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);

    if (st) {
        return st;
    }

    st = ngx_pcalloc(s->pool, sizeof(ngx_chat_receipt_t));
    if (st == NULL) {
        return NULL;
    }

    ngx_queue_init(&st->reads);
    st->waiter.handler = ngx_chat_receipt_marks;
    st->done.handler = ngx_chat_receipt_done;

    ngx_chat_session_set_ctx(s, st, ngx_chat_receipt_feature);

    return st;
}


static ngx_uint_t
ngx_chat_receipt_pending(ngx_chat_session_t *s)
{
    ngx_chat_receipt_t  *st;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);

    return st ? st->nreads : 0;
}


/*
 * The socket goes with some of its sync's marks written: the device has
 * those that moved before the first one it did not get (marks come
 * oldest first; of marks that moved at the same moment, all or none).
 */

static void
ngx_chat_receipt_partly(ngx_chat_session_t *s, ngx_chat_receipt_t *st)
{
    int64_t     next;
    ngx_uint_t  i;

    if (st->written == 0) {
        return;
    }

    if (st->written == st->nmarks) {
        ngx_chat_receipt_seen(s, st->at);
        return;
    }

    next = st->marks[st->written].ts;

    for (i = st->written; i > 0; i--) {
        if (st->marks[i - 1].ts < next) {
            ngx_chat_receipt_seen(s, st->marks[i - 1].ts);
            return;
        }
    }
}


/* the socket goes: its reads are applied all the same */

static void
ngx_chat_receipt_end(ngx_chat_session_t *s)
{
    ngx_queue_t              *q;
    ngx_chat_receipt_t       *st;
    ngx_chat_receipt_read_t  *rd;

    st = ngx_chat_session_get_ctx(s, ngx_chat_receipt_feature);

    if (st == NULL) {
        return;
    }

    while (!ngx_queue_empty(&st->reads)) {
        q = ngx_queue_head(&st->reads);
        ngx_queue_remove(q);

        rd = ngx_queue_data(q, ngx_chat_receipt_read_t, queue);
        rd->session = NULL;
        ngx_chat_session_op_done(s);
    }

    st->nreads = 0;

    if (st->query) {
        ngx_chat_pg_cancel(st->query);
        st->query = NULL;
    }

    if (st->marks) {
        ngx_chat_receipt_partly(s, st);
        ngx_free(st->marks);
        st->marks = NULL;
    }

    /*
     * A socket that had its sync's marks had the receipts that came live
     * as well, those it wrote: the marks that moved until its last write
     * are the device's.  A long-poll leaves marks_seen where its sync put
     * it: the next poll gets what moved since (a repeat changes nothing).
     */

    if (st->seen && !(s->transport->flags & NGX_CHAT_TRANSPORT_POLL)) {
        ngx_chat_receipt_seen(s, 0);
    }
}
