
/*
 * The sync (PROTOCOL.md, section 4): after "ready", everything owed to
 * the device, oldest first per chat, then "synced".
 *
 * It loads the device's cursors into the session's per-chat table, then
 * pages through what is owed in (chat, seq) order, as much as the client
 * has room for at a time: a page the client cannot take whole is read
 * again from where it stopped once the client has drained, so a device
 * with thousands pending is drained with bounded memory whatever the
 * size of the messages.  Live messages that come meanwhile go through the
 * same per-chat order (ngx_chat_order.c).
 *
 * When the user's channel was lost for a while, the sync runs again from
 * the start (what the device has is skipped): what was published
 * meanwhile is stored, not lost.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"


typedef struct {
    ngx_chat_pg_query_t       *query;        /* the cursors, or a page */
    int64_t                    chat;         /* the keyset: the last row */
    int64_t                    seq;          /* read */
    ngx_uint_t                 sent;         /* messages the sync sent */
    ngx_chat_session_waiter_t  waiter;       /* for room for a page */
    unsigned                   paging:1;
    unsigned                   again:1;      /* a resync came meanwhile */
} ngx_chat_sync_t;


static const char  ngx_chat_sync_cursors_sql[] =
    "SELECT chat_id, acked, expired_seq FROM chat_cursors($1)";

static const char  ngx_chat_sync_owed_sql[] =
    "SELECT chat_id, seq, own, json, expired_seq "
    "FROM chat_owed($1, $2, $3, $4)";


static void ngx_chat_sync_begin(ngx_chat_session_t *s);
static void ngx_chat_sync_cursors(void *data, PGresult *res);
static void ngx_chat_sync_start(ngx_chat_session_t *s, ngx_chat_sync_t *sy);
static void ngx_chat_sync_page(ngx_chat_session_t *s, void *data);
static void ngx_chat_sync_paged(void *data, PGresult *res);
static ngx_chat_sync_t *ngx_chat_sync_result(ngx_chat_session_t *s,
    PGresult *res);
static void ngx_chat_sync_resync(ngx_chat_session_t *s);
static void ngx_chat_sync_end(ngx_chat_session_t *s);


ngx_chat_feature_t  ngx_chat_sync_feature = {
    .name = "sync",
    .begin = ngx_chat_sync_begin,
    .resync = ngx_chat_sync_resync,
    .end = ngx_chat_sync_end,
};


static void
ngx_chat_sync_begin(ngx_chat_session_t *s)
{
    ngx_chat_sync_t  *sy;

    sy = ngx_pcalloc(s->pool, sizeof(ngx_chat_sync_t));
    if (sy == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_ERROR, "no memory");
        return;
    }

    sy->waiter.handler = ngx_chat_sync_page;
    sy->waiter.data = s;
    sy->paging = 1;

    ngx_chat_session_set_ctx(s, sy, ngx_chat_sync_feature);

    sy->query = ngx_chat_pg_query(ngx_chat_sync_cursors_sql, 1,
                                  &s->device_id, ngx_chat_sync_cursors, s,
                                  s->log);

    if (sy->query == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
    }
}


static void
ngx_chat_sync_cursors(void *data, PGresult *res)
{
    int                  i, n;
    ngx_chat_sync_t     *sy;
    ngx_chat_session_t  *s = data;

    sy = ngx_chat_sync_result(s, res);
    if (sy == NULL) {
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        ngx_chat_order_position(s, ngx_chat_pg_int(res, i, 0),
                                ngx_chat_pg_int(res, i, 1),
                                ngx_chat_pg_int(res, i, 2));
    }

    ngx_chat_order_loaded(s);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->log, 0,
                   "chat sync: %d chats", n);

    ngx_chat_sync_start(s, sy);
}


/* from the first chat; what it sent before counts still ("synced") */

static void
ngx_chat_sync_start(ngx_chat_session_t *s, ngx_chat_sync_t *sy)
{
    sy->paging = 1;
    sy->again = 0;
    sy->chat = 0;
    sy->seq = 0;

    ngx_chat_sync_page(s, s);
}


/* the next page, once the client has room for it */

static void
ngx_chat_sync_page(ngx_chat_session_t *s, void *data)
{
    u_char            buf[3][NGX_INT64_LEN];
    ngx_str_t         params[4];
    ngx_chat_sync_t  *sy;

    sy = ngx_chat_session_get_ctx(s, ngx_chat_sync_feature);

    if (!ngx_chat_session_room(s, 0)) {
        ngx_chat_session_wait(s, &sy->waiter);
        return;
    }

    params[0] = s->device_id;

    params[1].data = buf[0];
    params[1].len = ngx_sprintf(buf[0], "%L", sy->chat) - buf[0];

    params[2].data = buf[1];
    params[2].len = ngx_sprintf(buf[1], "%L", sy->seq) - buf[1];

    params[3].data = buf[2];
    params[3].len = ngx_sprintf(buf[2], "%ui", s->conf->sync_batch) - buf[2];

    sy->query = ngx_chat_pg_query(ngx_chat_sync_owed_sql, 4, params,
                                  ngx_chat_sync_paged, s, s->log);

    if (sy->query == NULL) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
    }
}


static void
ngx_chat_sync_paged(void *data, PGresult *res)
{
    int                  row;
    ngx_int_t            rc;
    ngx_chat_sync_t     *sy;
    ngx_chat_session_t  *s = data;

    sy = ngx_chat_sync_result(s, res);
    if (sy == NULL) {
        return;
    }

    row = 0;
    rc = ngx_chat_order_rows(s, res, 1, &row, &sy->sent);

    if (row > 0) {
        sy->chat = ngx_chat_pg_int(res, row - 1, 0);
        sy->seq = ngx_chat_pg_int(res, row - 1, 1);
    }

    if (rc == NGX_AGAIN) {
        /* the rest of the page is read again once the client drained */
        ngx_chat_session_wait(s, &sy->waiter);
        return;
    }

    if ((ngx_uint_t) PQntuples(res) == s->conf->sync_batch) {
        ngx_chat_sync_page(s, s);
        return;
    }

    if (sy->again) {
        /* the channel came back while paging: once more from the start */
        ngx_chat_sync_start(s, sy);
        return;
    }

    sy->paging = 0;

    ngx_chat_session_synced(s, sy->sent);
}


/* the sync's state once its query is back; NULL: it failed, closing */

static ngx_chat_sync_t *
ngx_chat_sync_result(ngx_chat_session_t *s, PGresult *res)
{
    ngx_chat_sync_t  *sy;

    sy = ngx_chat_session_get_ctx(s, ngx_chat_sync_feature);
    sy->query = NULL;

    if (!ngx_chat_pg_ok(res)) {
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_TRY_AGAIN, "unavailable");
        return NULL;
    }

    return sy;
}


static void
ngx_chat_sync_resync(ngx_chat_session_t *s)
{
    ngx_chat_sync_t  *sy;

    sy = ngx_chat_session_get_ctx(s, ngx_chat_sync_feature);

    if (sy == NULL || !s->loaded) {
        return;                 /* the cursors are not read yet */
    }

    if (sy->paging) {
        sy->again = 1;
        return;
    }

    ngx_chat_sync_start(s, sy);
}


static void
ngx_chat_sync_end(ngx_chat_session_t *s)
{
    ngx_chat_sync_t  *sy;

    sy = ngx_chat_session_get_ctx(s, ngx_chat_sync_feature);

    if (sy && sy->query) {
        ngx_chat_pg_cancel(sy->query);
        sy->query = NULL;
    }
}
