
/*
 * Chats (PROTOCOL.md, section 2): direct chats, one per pair of users,
 * and groups, with admins, a title, an icon (a media) and up to
 * chat_max_group_size members.
 *
 * Each call that writes is one call of a function of
 * sql/004_chats_api.sql (or 011_profile.sql): one round trip, all or
 * nothing.  A change to a group is also a system message in the chat's
 * own seq, appended by that function; once it is committed it is
 * published on the user channel of every member, as the "msg" that
 * sessions forward to the member's devices.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_api.h"
#include "ngx_chat_fanout.h"


#define NGX_CHAT_TITLE_LEN  100                 /* characters */


typedef enum {
    NGX_CHAT_CHATS_START = 0,
    NGX_CHAT_CHATS_DIRECT,                      /* chat_create_direct() */
    NGX_CHAT_CHATS_ROWS                         /* PostgreSQL answered */
} ngx_chat_chats_step_e;


/*
 * The columns of the answer of every function that writes: one row, or
 * one per system message appended (chat_update()), each with the chat.
 */

enum {
    NGX_CHAT_CHATS_STATUS = 0,                  /* "ok", or why not */
    NGX_CHAT_CHATS_CHAT_ID,
    NGX_CHAT_CHATS_CHAT,                        /* the chat, as JSON */
    NGX_CHAT_CHATS_SEQ,                         /* the system message */
    NGX_CHAT_CHATS_MSG,                         /* ... as devices get it */
    NGX_CHAT_CHATS_USERS,                       /* "id,id,...": its users */
    NGX_CHAT_CHATS_COLUMNS
};


/* why a function did nothing, in the API's words */

typedef struct {
    ngx_str_t                 status;
    ngx_uint_t                http;
    const char               *code;
    const char               *message;
} ngx_chat_chats_refusal_t;


static ngx_int_t ngx_chat_chats_user(ngx_chat_api_ctx_t *ctx,
    ngx_str_t *user);
static ngx_int_t ngx_chat_chats_title(ngx_chat_api_ctx_t *ctx,
    ngx_str_t *title);
static ngx_int_t ngx_chat_chats_icon(ngx_chat_api_ctx_t *ctx,
    json_t *icon, ngx_str_t *media);
static ngx_int_t ngx_chat_chats_members(ngx_chat_api_ctx_t *ctx,
    ngx_str_t *array);
static void ngx_chat_chats_max(ngx_chat_api_ctx_t *ctx, u_char *buf,
    ngx_str_t *max);
static ngx_int_t ngx_chat_chats_changed(ngx_chat_api_ctx_t *ctx,
    ngx_uint_t status);
static ngx_int_t ngx_chat_chats_refused(ngx_chat_api_ctx_t *ctx,
    ngx_str_t *status);
static ngx_int_t ngx_chat_chats_reply(ngx_chat_api_ctx_t *ctx,
    ngx_uint_t status, int col);
static void ngx_chat_chats_publish(ngx_chat_api_ctx_t *ctx, int row);


static ngx_chat_chats_refusal_t  ngx_chat_chats_refusals[] = {

    { ngx_string("self"), NGX_HTTP_BAD_REQUEST, "bad_request",
      "user_id: a direct chat is with another user" },

    { ngx_string("direct"), NGX_HTTP_BAD_REQUEST, "bad_request",
      "a direct chat has no title, no icon and no member changes" },

    { ngx_string("no_user"), NGX_HTTP_NOT_FOUND, "not_found",
      "no such user" },

    { ngx_string("no_chat"), NGX_HTTP_NOT_FOUND, "not_found",
      "no such chat" },

    { ngx_string("no_member"), NGX_HTTP_NOT_FOUND, "not_found",
      "no such member" },

    { ngx_string("forbidden"), NGX_HTTP_FORBIDDEN, "forbidden",
      "only an admin of the group may do this" },

    { ngx_string("full"), NGX_HTTP_CONFLICT, "conflict",
      "a group holds at most chat_max_group_size members" },

    { ngx_string("no_media"), NGX_HTTP_BAD_REQUEST, "unknown_media",
      "icon: no uploaded media of that id that you may use" },

    { ngx_null_string, 0, NULL, NULL }
};


static ngx_str_t  ngx_chat_chats_full = ngx_string("full");


#define NGX_CHAT_CHATS_OUT                                                   \
    "SELECT out_status, out_chat_id, out_chat, out_seq, out_msg, out_users " \
    "FROM "

static const char  ngx_chat_chats_direct_sql[] =
    "SELECT out_status, out_chat_id, out_chat, NULL, NULL, NULL "
    "FROM chat_create_direct($1::bigint, $2::bigint)";

static const char  ngx_chat_chats_group_sql[] =
    NGX_CHAT_CHATS_OUT
    "chat_create_group($1::bigint, $2::bigint, $3, $4::bigint[], "
    "$5::bigint)";

static const char  ngx_chat_chats_update_sql[] =
    NGX_CHAT_CHATS_OUT
    "chat_update($1::bigint, $2::bigint, $3::bigint, $4, $5::boolean, $6)";

static const char  ngx_chat_chats_add_sql[] =
    NGX_CHAT_CHATS_OUT
    "chat_add_member($1::bigint, $2::bigint, $3::bigint, $4::bigint, "
    "$5::bigint)";

static const char  ngx_chat_chats_remove_sql[] =
    NGX_CHAT_CHATS_OUT
    "chat_remove_member($1::bigint, $2::bigint, $3::bigint, $4::bigint)";

static const char  ngx_chat_chats_list_sql[] =
    "SELECT json_build_object('chats', coalesce(json_agg(chat_json(chat_id) "
    "ORDER BY chat_id), '[]'::json)) "
    "FROM members WHERE user_id = $1::bigint";

static const char  ngx_chat_chats_get_sql[] =
    "SELECT chat_json(chat_id) FROM members "
    "WHERE chat_id = $1::bigint AND user_id = $2::bigint";


/*
 * POST /v1/chats (auth), {"type":"direct","user_id"}: 200 and the chat
 * of the pair, made on first use; {"type":"group","title","members"}:
 * 201 and the new group.
 */

ngx_int_t
ngx_chat_chats_create(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  type, params[5];
    u_char     max[NGX_INT_T_LEN];

    switch (ctx->step) {

    case NGX_CHAT_CHATS_START:
        if (ngx_chat_api_string(ctx, "type", &type) != NGX_OK) {
            break;
        }

        params[0] = ctx->user_id;

        if (type.len == sizeof("direct") - 1
            && ngx_strncmp(type.data, "direct", type.len) == 0)
        {
            rc = ngx_chat_chats_user(ctx, &params[1]);

            if (rc != NGX_DECLINED) {
                return rc;
            }

            ctx->step = NGX_CHAT_CHATS_DIRECT;

            return ngx_chat_api_query(ctx, ngx_chat_chats_direct_sql, 2,
                                      params);
        }

        if (type.len == sizeof("group") - 1
            && ngx_strncmp(type.data, "group", type.len) == 0)
        {
            rc = ngx_chat_chats_title(ctx, &params[2]);

            if (rc == NGX_DECLINED) {
                rc = ngx_chat_chats_members(ctx, &params[3]);
            }

            if (rc != NGX_DECLINED) {
                return rc;
            }

            params[1] = ctx->device_id;
            ngx_chat_chats_max(ctx, max, &params[4]);

            ctx->step = NGX_CHAT_CHATS_ROWS;

            return ngx_chat_api_query(ctx, ngx_chat_chats_group_sql, 5,
                                      params);
        }

        break;

    case NGX_CHAT_CHATS_DIRECT:
        return ngx_chat_chats_changed(ctx, NGX_HTTP_OK);

    default: /* NGX_CHAT_CHATS_ROWS */
        return ngx_chat_chats_changed(ctx, NGX_HTTP_CREATED);
    }

    return ngx_chat_api_bad_request(ctx,
                                    "type: \"direct\" or \"group\" is "
                                    "required");
}


/* GET /v1/chats (auth): {"chats":[...]}, the caller's, oldest first */

ngx_int_t
ngx_chat_chats_list(ngx_chat_api_ctx_t *ctx)
{
    if (ctx->step == NGX_CHAT_CHATS_START) {
        ctx->step = NGX_CHAT_CHATS_ROWS;
        return ngx_chat_api_query(ctx, ngx_chat_chats_list_sql, 1,
                                  &ctx->user_id);
    }

    return ngx_chat_chats_reply(ctx, NGX_HTTP_OK, 0);
}


/* GET /v1/chats/{id} (auth): a chat of which the caller is a member */

ngx_int_t
ngx_chat_chats_get(ngx_chat_api_ctx_t *ctx)
{
    ngx_str_t  params[2];

    if (ctx->step == NGX_CHAT_CHATS_START) {
        params[0] = ctx->id;
        params[1] = ctx->user_id;

        ctx->step = NGX_CHAT_CHATS_ROWS;

        return ngx_chat_api_query(ctx, ngx_chat_chats_get_sql, 2, params);
    }

    /* a chat of others is none of the caller's business: 404 too */

    if (PQntuples(ctx->res) != 1) {
        return ngx_chat_json_error(ctx->request, NGX_HTTP_NOT_FOUND,
                                   "not_found", "no such chat");
    }

    return ngx_chat_chats_reply(ctx, NGX_HTTP_OK, 0);
}


/*
 * PATCH /v1/chats/{id} {"title"?,"icon"?} (auth, admin): the group, with
 * the title and the icon (a media id, or null for none) that are given.
 */

ngx_int_t
ngx_chat_chats_update(ngx_chat_api_ctx_t *ctx)
{
    json_t     *icon;
    ngx_int_t   rc;
    ngx_str_t   params[6];

    if (ctx->step != NGX_CHAT_CHATS_START) {
        return ngx_chat_chats_changed(ctx, NGX_HTTP_OK);
    }

    ngx_str_null(&params[3]);
    ngx_str_set(&params[4], "f");
    ngx_str_null(&params[5]);

    icon = json_object_get(ctx->body, "icon");

    if (icon == NULL || json_object_get(ctx->body, "title") != NULL) {
        rc = ngx_chat_chats_title(ctx, &params[3]);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    if (icon) {
        rc = ngx_chat_chats_icon(ctx, icon, &params[5]);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        ngx_str_set(&params[4], "t");
    }

    params[0] = ctx->id;
    params[1] = ctx->user_id;
    params[2] = ctx->device_id;

    ctx->step = NGX_CHAT_CHATS_ROWS;

    return ngx_chat_api_query(ctx, ngx_chat_chats_update_sql, 6, params);
}


/* POST /v1/chats/{id}/members {"user_id"} (auth, admin): the group */

ngx_int_t
ngx_chat_chats_add_member(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  params[5];
    u_char     max[NGX_INT_T_LEN];

    if (ctx->step != NGX_CHAT_CHATS_START) {
        return ngx_chat_chats_changed(ctx, NGX_HTTP_OK);
    }

    rc = ngx_chat_chats_user(ctx, &params[3]);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    params[0] = ctx->id;
    params[1] = ctx->user_id;
    params[2] = ctx->device_id;
    ngx_chat_chats_max(ctx, max, &params[4]);

    ctx->step = NGX_CHAT_CHATS_ROWS;

    return ngx_chat_api_query(ctx, ngx_chat_chats_add_sql, 5, params);
}


/*
 * DELETE /v1/chats/{id}/members/{user_id} (auth; an admin, or the member
 * leaving): 204.
 */

ngx_int_t
ngx_chat_chats_remove_member(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  params[4];

    if (ctx->step != NGX_CHAT_CHATS_START) {
        rc = ngx_chat_chats_changed(ctx, NGX_HTTP_NO_CONTENT);

        /* who watches whom may have changed: watches are checked again */

        if (rc == NGX_HTTP_NO_CONTENT) {
            ngx_chat_fanout_recheck(&ctx->id2, ctx->request->connection->log);
        }

        return rc;
    }

    params[0] = ctx->id;
    params[1] = ctx->user_id;
    params[2] = ctx->device_id;
    params[3] = ctx->id2;

    ctx->step = NGX_CHAT_CHATS_ROWS;

    return ngx_chat_api_query(ctx, ngx_chat_chats_remove_sql, 4, params);
}


/*
 * The body fields: NGX_DECLINED when the field is there and right, so
 * that the endpoint goes on, else what ended the request.
 */

static ngx_int_t
ngx_chat_chats_user(ngx_chat_api_ctx_t *ctx, ngx_str_t *user)
{
    if (ngx_chat_api_string(ctx, "user_id", user) != NGX_OK
        || ngx_chat_api_id_valid(user) != NGX_OK)
    {
        return ngx_chat_api_bad_request(ctx, "user_id: a user ID is "
                                             "required");
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_chat_chats_title(ngx_chat_api_ctx_t *ctx, ngx_str_t *title)
{
    if (ngx_chat_api_string(ctx, "title", title) != NGX_OK
        || !ngx_chat_api_text_valid(title, NGX_CHAT_TITLE_LEN))
    {
        return ngx_chat_api_bad_request(ctx, "title: 1 to 100 characters "
                                             "are required");
    }

    return NGX_DECLINED;
}


/* "icon": a media id (an opaque key), or null for none (media NULL) */

static ngx_int_t
ngx_chat_chats_icon(ngx_chat_api_ctx_t *ctx, json_t *icon, ngx_str_t *media)
{
    if (json_is_null(icon)) {
        return NGX_DECLINED;
    }

    if (json_is_string(icon)) {
        media->data = (u_char *) json_string_value(icon);
        media->len = json_string_length(icon);

        if (ngx_chat_api_key_valid(media) == NGX_OK) {
            return NGX_DECLINED;
        }
    }

    return ngx_chat_api_bad_request(ctx, "icon: a media id or null is "
                                         "required");
}


/*
 * "members": user IDs (absent or null: none), as a PostgreSQL array.
 * More of them than a group may hold is refused before they are looked
 * at, as PostgreSQL refuses a group that would grow too large: 409.
 */

static ngx_int_t
ngx_chat_chats_members(ngx_chat_api_ctx_t *ctx, ngx_str_t *array)
{
    u_char     *p;
    size_t      i, n;
    json_t     *members, *member;
    ngx_str_t   id;

    members = json_object_get(ctx->body, "members");
    n = 0;

    if (members != NULL && !json_is_null(members)) {

        if (!json_is_array(members)) {
            goto invalid;
        }

        n = json_array_size(members);
    }

    if (n > ctx->conf->max_group_size) {
        return ngx_chat_chats_refused(ctx, &ngx_chat_chats_full);
    }

    array->data = ngx_pnalloc(ctx->request->pool,
                              2 + n * (NGX_CHAT_API_ID_LEN + 1));
    if (array->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = array->data;
    *p++ = '{';

    for (i = 0; i < n; i++) {
        member = json_array_get(members, i);

        if (!json_is_string(member)) {
            goto invalid;
        }

        id.data = (u_char *) json_string_value(member);
        id.len = json_string_length(member);

        if (ngx_chat_api_id_valid(&id) != NGX_OK) {
            goto invalid;
        }

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, id.data, id.len);
    }

    *p++ = '}';
    array->len = p - array->data;

    return NGX_DECLINED;

invalid:

    return ngx_chat_api_bad_request(ctx, "members: an array of user IDs is "
                                         "required");
}


static void
ngx_chat_chats_max(ngx_chat_api_ctx_t *ctx, u_char *buf, ngx_str_t *max)
{
    max->data = buf;
    max->len = ngx_sprintf(buf, "%ui", ctx->conf->max_group_size) - buf;
}


/*
 * The answer of a function that writes: its refusal, or the chat (with
 * status), once the system message it appended, if any, is published.
 */

static ngx_int_t
ngx_chat_chats_changed(ngx_chat_api_ctx_t *ctx, ngx_uint_t status)
{
    int        row, rows;
    ngx_str_t  outcome;
    PGresult  *res;

    res = ctx->res;
    rows = PQntuples(res);

    if (rows < 1 || PQnfields(res) != NGX_CHAT_CHATS_COLUMNS) {
        ngx_log_error(NGX_LOG_ALERT, ctx->request->connection->log, 0,
                      "chat api: \"%V\": unexpected answer from PostgreSQL",
                      &ctx->route->path);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_chat_pg_value(res, 0, NGX_CHAT_CHATS_STATUS, &outcome);

    if (outcome.len != 2 || ngx_strncmp(outcome.data, "ok", 2) != 0) {
        return ngx_chat_chats_refused(ctx, &outcome);
    }

    /* in seq order: each member's devices get them in order */

    for (row = 0; row < rows; row++) {
        if (!PQgetisnull(res, row, NGX_CHAT_CHATS_SEQ)) {
            ngx_chat_chats_publish(ctx, row);
        }
    }

    if (status == NGX_HTTP_NO_CONTENT) {
        return status;
    }

    return ngx_chat_chats_reply(ctx, status, NGX_CHAT_CHATS_CHAT);
}


static ngx_int_t
ngx_chat_chats_refused(ngx_chat_api_ctx_t *ctx, ngx_str_t *status)
{
    ngx_chat_chats_refusal_t  *refusal;

    for (refusal = ngx_chat_chats_refusals; refusal->code; refusal++) {

        if (refusal->status.len == status->len
            && ngx_strncmp(refusal->status.data, status->data, status->len)
               == 0)
        {
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP,
                           ctx->request->connection->log, 0,
                           "chat api: \"%V\" refused: %V, user %V",
                           &ctx->route->path, status, &ctx->user_id);

            return ngx_chat_json_error(ctx->request, refusal->http,
                                       refusal->code, refusal->message);
        }
    }

    ngx_log_error(NGX_LOG_ALERT, ctx->request->connection->log, 0,
                  "chat api: \"%V\": unknown status \"%V\" from PostgreSQL",
                  &ctx->route->path, status);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* JSON that PostgreSQL made, sent as every answer is (compact) */

static ngx_int_t
ngx_chat_chats_reply(ngx_chat_api_ctx_t *ctx, ngx_uint_t status, int col)
{
    ngx_str_t     value;
    json_error_t  error;

    ngx_chat_pg_value(ctx->res, 0, col, &value);

    return ngx_chat_json_reply(ctx->request, status,
                               json_loadb((char *) value.data, value.len, 0,
                                          &error));
}


/*
 * The system message goes to the user channel of each member, as the
 * "msg" that a device's sync would send (ngx_chat_fanout.h: nobody
 * waits; a device that misses it live gets it with its next read of
 * PostgreSQL).
 */

static void
ngx_chat_chats_publish(ngx_chat_api_ctx_t *ctx, int row)
{
    PGresult            *res;
    ngx_str_t            chat, seq, msg, users;
    ngx_http_request_t  *r;

    r = ctx->request;
    res = ctx->res;

    ngx_chat_pg_value(res, row, NGX_CHAT_CHATS_CHAT_ID, &chat);
    ngx_chat_pg_value(res, row, NGX_CHAT_CHATS_SEQ, &seq);
    ngx_chat_pg_value(res, row, NGX_CHAT_CHATS_MSG, &msg);
    ngx_chat_pg_value(res, row, NGX_CHAT_CHATS_USERS, &users);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "chat %V: system message %V by user %V device %V",
                  &chat, &seq, &ctx->user_id, &ctx->device_id);

    (void) ngx_chat_fanout("u:", &users, &msg, "chat: system message",
                          r->connection->log);
}
