
/*
 * Accounts and devices (PROTOCOL.md, section 1): a mobile number is
 * registered, then verified with the code sent to it, which makes its
 * user and a first device; more devices are linked with one-use codes;
 * devices are listed and unlinked; users are looked up by number, and
 * seen (their "about" and presence) by those who share a chat with them.
 *
 * Redis keeps what is short-lived (codes, the register rate limit), each
 * check-and-change in one EVAL; PostgreSQL keeps users and devices, each
 * change one statement (sql/002_accounts.sql).
 *
 * Against guessing and pumping: a number's wrong codes are counted
 * across its codes, and a number that spent chat_verify_budget of them
 * in a day is locked for chat_verify_lock (no code is sent to it, none
 * is checked); codes sent by everyone stay under chat_codes_per_minute.
 * Limits per client address are nginx's limit_req (conf/chat_limits.conf).
 * The keys of a number share its hash tag: each script stays in a slot.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/rand.h>

#include "ngx_chat_api.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_auth.h"


#define NGX_CHAT_CODE_LEN           6
#define NGX_CHAT_CODE_TTL           300         /* s */
#define NGX_CHAT_CODE_TRIES         5           /* wrong ones burn a code */
#define NGX_CHAT_REGISTER_LIMIT     3           /* registers of a number */
#define NGX_CHAT_REGISTER_WINDOW    600000      /* ms */
#define NGX_CHAT_VERIFY_WINDOW      86400000    /* ms: a number's budget */
#define NGX_CHAT_LINK_CODE_LEN      10
#define NGX_CHAT_LINK_CODE_MAX      64          /* what a client may send */
#define NGX_CHAT_LINK_TTL           120         /* s */
#define NGX_CHAT_DEVICE_NAME_LEN    64          /* characters */
#define NGX_CHAT_MOBILE_LEN         16          /* "+" and 15 digits */
#define NGX_CHAT_ABOUT_LEN          140         /* characters */

/* the body fields an endpoint takes */
#define NGX_CHAT_ACCOUNTS_MOBILE    1
#define NGX_CHAT_ACCOUNTS_DIGITS    2           /* code: 6 digits */
#define NGX_CHAT_ACCOUNTS_LINK      4           /* code: any short string */
#define NGX_CHAT_ACCOUNTS_NAME      8


typedef enum {
    NGX_CHAT_ACCOUNTS_START = 0,
    NGX_CHAT_ACCOUNTS_CEILING,                  /* codes sent, by everyone */
    NGX_CHAT_ACCOUNTS_CODE,                     /* Redis answered */
    NGX_CHAT_ACCOUNTS_ROWS,                     /* PostgreSQL answered */
    NGX_CHAT_ACCOUNTS_PRESENCE                  /* Redis, after PostgreSQL */
} ngx_chat_accounts_step_e;




static ngx_int_t ngx_chat_accounts_keys(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac, ngx_str_t *keys);
static ngx_int_t ngx_chat_accounts_wait(ngx_chat_api_ctx_t *ctx,
    const char *what);
static ngx_int_t ngx_chat_accounts_body(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac, ngx_uint_t fields);
static ngx_int_t ngx_chat_accounts_fields(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac, ngx_uint_t fields, const char **message);
static ngx_uint_t ngx_chat_accounts_mobile_valid(ngx_str_t *mobile);
static ngx_uint_t ngx_chat_accounts_link_code_valid(ngx_str_t *code);
static ngx_int_t ngx_chat_accounts_link_refused(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_chat_accounts_random_code(ngx_pool_t *pool,
    ngx_str_t *code);
static ngx_int_t ngx_chat_accounts_random_link_code(ngx_pool_t *pool,
    ngx_str_t *code);
static ngx_int_t ngx_chat_accounts_sms(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac);
static ngx_int_t ngx_chat_accounts_add_device(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac);
static ngx_int_t ngx_chat_accounts_device_added(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac);
static ngx_int_t ngx_chat_accounts_gone(ngx_chat_api_ctx_t *ctx);
static json_t *ngx_chat_accounts_ms(PGresult *res, int row, int col);


/* unambiguous: no 0, 1, I or O; 32 symbols, 5 bits each */

static u_char  ngx_chat_accounts_alphabet[] =
    "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";


/*
 * KEYS[1]: the codes sent by everyone this minute.  ARGV: the ceiling.
 * Returns 0, or the milliseconds until a code may be sent again.
 */

static const char  ngx_chat_accounts_ceiling_lua[] =
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then "
    "  redis.call('PEXPIRE', KEYS[1], 60000) "
    "end "
    "if n > tonumber(ARGV[1]) then "
    "  return math.max(redis.call('PTTL', KEYS[1]), 1) "
    "end "
    "return 0";


/*
 * KEYS[1]: the number's register counter, KEYS[2]: its code, KEYS[3]:
 * its wrong codes.  ARGV: limit, window (ms), code, code TTL (s), the
 * number's budget of wrong codes.
 * Returns 0 when the new code is stored (with no wrong tries), else the
 * milliseconds until the number may register again (locked, or too many
 * registers).
 */

static const char  ngx_chat_accounts_register_lua[] =
    "if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[5]) "
    "then "
    "  return math.max(redis.call('PTTL', KEYS[3]), 1) "
    "end "
    "local n = redis.call('INCR', KEYS[1]) "
    "if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then "
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "end "
    "if n > tonumber(ARGV[1]) then "
    "  return math.max(redis.call('PTTL', KEYS[1]), 1) "
    "end "
    "redis.call('DEL', KEYS[2]) "
    "redis.call('HSET', KEYS[2], 'code', ARGV[3], 'tries', 0) "
    "redis.call('EXPIRE', KEYS[2], ARGV[4]) "
    "return 0";


/*
 * KEYS[1]: the number's code, KEYS[2]: its wrong codes.  ARGV: the code
 * tried, the tries a code allows, the number's budget, its window (ms),
 * the lock (ms).
 * Returns 1 for the right code, which is deleted (no replay); 0 for a
 * wrong one, which counts against the code (the last try deletes it) and
 * against the number (the last of its budget locks it); minus the
 * milliseconds left when the number is locked.
 */

static const char  ngx_chat_accounts_verify_lua[] =
    "local f = tonumber(redis.call('GET', KEYS[2]) or '0') "
    "if f >= tonumber(ARGV[3]) then "
    "  return -math.max(redis.call('PTTL', KEYS[2]), 1) "
    "end "
    "local c = redis.call('HGET', KEYS[1], 'code') "
    "if c and c == ARGV[1] then "
    "  redis.call('DEL', KEYS[1], KEYS[2]) "
    "  return 1 "
    "end "
    "if c and redis.call('HINCRBY', KEYS[1], 'tries', 1) "
    "         >= tonumber(ARGV[2]) then "
    "  redis.call('DEL', KEYS[1]) "
    "end "
    "f = redis.call('INCR', KEYS[2]) "
    "if f >= tonumber(ARGV[3]) then "
    "  redis.call('PEXPIRE', KEYS[2], ARGV[5]) "
    "elseif f == 1 then "
    "  redis.call('PEXPIRE', KEYS[2], ARGV[4]) "
    "end "
    "return 0";


static const char  ngx_chat_accounts_verify_sql[] =
    "SELECT out_user::text, out_device::text "
    "FROM chat_verify($1, $2, $3::bytea, $4::integer)";

static const char  ngx_chat_accounts_link_sql[] =
    "SELECT $1::bigint::text, "
    "chat_add_device($1::bigint, $2, $3::bytea, $4::integer)::text";

static const char  ngx_chat_accounts_devices_sql[] =
    "SELECT id::text, name, chat_ms(added_at), chat_ms(last_seen) "
    "FROM devices WHERE user_id = $1::bigint ORDER BY id";

static const char  ngx_chat_accounts_unlink_sql[] =
    "DELETE FROM devices WHERE id = $1::bigint AND user_id = $2::bigint "
    "RETURNING id";

static const char  ngx_chat_accounts_me_sql[] =
    "SELECT id::text, mobile, chat_ms(created_at), coalesce(about, ''), "
    "false FROM users WHERE id = $1::bigint";

/* the same columns, the last: whether "about" changed */
static const char  ngx_chat_accounts_about_sql[] =
    "WITH o AS (SELECT id, about FROM users WHERE id = $1::bigint "
    "           FOR UPDATE) "
    "UPDATE users u SET about = nullif($2, '') FROM o WHERE u.id = o.id "
    "RETURNING u.id::text, u.mobile, chat_ms(u.created_at), "
    "coalesce(u.about, ''), u.about IS DISTINCT FROM o.about";

/* a GET passes NULLs: nothing is written */
static const char  ngx_chat_accounts_privacy_sql[] =
    "WITH u AS (UPDATE users "
    "  SET read_receipts = coalesce($2::boolean, read_receipts), "
    "      last_seen_to = coalesce($3::text, last_seen_to) "
    "  WHERE id = $1::bigint "
    "    AND ($2::boolean IS NOT NULL OR $3::text IS NOT NULL) "
    "  RETURNING read_receipts, last_seen_to) "
    "SELECT * FROM u UNION ALL "
    "SELECT read_receipts, last_seen_to FROM users "
    "WHERE id = $1::bigint AND NOT EXISTS (SELECT 1 FROM u)";

static const char  ngx_chat_accounts_lookup_sql[] =
    "SELECT id::text FROM users WHERE mobile = $1";

/* out_shares false: no such user, as far as the caller may know */
static const char  ngx_chat_accounts_user_sql[] =
    "SELECT p.out_shares, p.out_last_seen, coalesce(u.about, '') "
    "FROM chat_presence_peers($1::bigint, ARRAY[$2::bigint]) p "
    "LEFT JOIN users u ON u.id = p.out_user";


/* POST /v1/register {"mobile"} */

ngx_int_t
ngx_chat_accounts_register(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_str_t                 key, k[3];
    ngx_str_t                 none = ngx_null_string;
    ngx_http_request_t       *r;
    ngx_chat_accounts_ctx_t  *ac;

    r = ctx->request;
    ac = ctx->data;

    switch (ctx->step) {

    case NGX_CHAT_ACCOUNTS_START:
        rc = ngx_chat_accounts_body(ctx, ac, NGX_CHAT_ACCOUNTS_MOBILE);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (ngx_chat_redis_key(r->pool, "codes", &none, 0, &key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_CEILING;

        return ngx_chat_api_redis(ctx, "EVAL %s 1 %b %lld",
                                  ngx_chat_accounts_ceiling_lua,
                                  key.data, key.len,
                                  (long long) ctx->conf->codes_per_minute);

    case NGX_CHAT_ACCOUNTS_CEILING:
        rc = ngx_chat_accounts_wait(ctx, "codes sent this minute");

        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (ngx_chat_accounts_random_code(r->pool, &ac->code) != NGX_OK
            || ngx_chat_accounts_keys(ctx, ac, k) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_CODE;

        return ngx_chat_api_redis(ctx, "EVAL %s 3 %b %b %b %d %d %b %d %lld",
                                  ngx_chat_accounts_register_lua,
                                  k[2].data, k[2].len, k[0].data, k[0].len,
                                  k[1].data, k[1].len,
                                  NGX_CHAT_REGISTER_LIMIT,
                                  NGX_CHAT_REGISTER_WINDOW,
                                  ac->code.data, ac->code.len,
                                  NGX_CHAT_CODE_TTL,
                                  (long long) ctx->conf->verify_budget);

    default: /* NGX_CHAT_ACCOUNTS_CODE */
        rc = ngx_chat_accounts_wait(ctx, "registers or wrong codes");

        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (ngx_chat_accounts_sms(ctx, ac) != NGX_OK) {
            return ngx_chat_api_unavailable(ctx);
        }

        if (ctx->conf->dev_codes) {
            return ngx_chat_json_reply(r, NGX_HTTP_ACCEPTED,
                                       json_pack("{s:i,s:s%}",
                                                 "expires_in",
                                                 NGX_CHAT_CODE_TTL,
                                                 "dev_code",
                                                 ac->code.data,
                                                 ac->code.len));
        }

        return ngx_chat_json_reply(r, NGX_HTTP_ACCEPTED,
                                   json_pack("{s:i}", "expires_in",
                                             NGX_CHAT_CODE_TTL));
    }
}


/* POST /v1/verify {"mobile","code","device_name"} */

ngx_int_t
ngx_chat_accounts_verify(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_str_t                 k[3], params[4];
    redisReply               *reply;
    ngx_http_request_t       *r;
    ngx_chat_accounts_ctx_t  *ac;
    u_char                    max[NGX_INT_T_LEN];

    r = ctx->request;
    ac = ctx->data;

    switch (ctx->step) {

    case NGX_CHAT_ACCOUNTS_START:
        rc = ngx_chat_accounts_body(ctx, ac, NGX_CHAT_ACCOUNTS_MOBILE
                                             |NGX_CHAT_ACCOUNTS_DIGITS
                                             |NGX_CHAT_ACCOUNTS_NAME);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (ngx_chat_accounts_keys(ctx, ac, k) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_CODE;

        return ngx_chat_api_redis(ctx, "EVAL %s 2 %b %b %b %d %lld %d %lld",
                                  ngx_chat_accounts_verify_lua,
                                  k[0].data, k[0].len, k[1].data, k[1].len,
                                  ac->code.data, ac->code.len,
                                  NGX_CHAT_CODE_TRIES,
                                  (long long) ctx->conf->verify_budget,
                                  NGX_CHAT_VERIFY_WINDOW,
                                  (long long) ctx->conf->verify_lock * 1000);

    case NGX_CHAT_ACCOUNTS_CODE:
        reply = ctx->reply;

        if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "chat verify: %V is locked: too many wrong codes",
                          &ac->mobile);

            return ngx_chat_api_rate_limited(ctx,
                                          (time_t) (-reply->integer + 999)
                                          / 1000);
        }

        if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "chat verify: wrong or expired code for %V",
                          &ac->mobile);

            return ngx_chat_json_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "unauthorized",
                                       "wrong or expired code");
        }

        if (ngx_chat_auth_token(r->pool, &ac->token, &ac->hash) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        params[0] = ac->mobile;
        params[1] = ac->name;
        params[2] = ac->hash;
        params[3].data = max;
        params[3].len = ngx_sprintf(max, "%ui", ctx->conf->max_devices)
                        - max;

        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        return ngx_chat_api_query(ctx, ngx_chat_accounts_verify_sql, 4,
                                  params);

    default: /* NGX_CHAT_ACCOUNTS_ROWS */
        return ngx_chat_accounts_device_added(ctx, ac);
    }
}


/* POST /v1/devices/link-code (auth) */

ngx_int_t
ngx_chat_accounts_link_code(ngx_chat_api_ctx_t *ctx)
{
    ngx_str_t                 key;
    redisReply               *reply;
    ngx_http_request_t       *r;
    ngx_chat_accounts_ctx_t  *ac;

    r = ctx->request;
    ac = ctx->data;

    switch (ctx->step) {

    case NGX_CHAT_ACCOUNTS_START:
        if (ngx_chat_accounts_random_link_code(r->pool, &ac->code) != NGX_OK
            || ngx_chat_redis_key(r->pool, "link:", &ac->code, 1, &key)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_CODE;

        /* NX: 50 random bits do not collide, but never take another's */

        return ngx_chat_api_redis(ctx, "SET %b %b EX %d NX",
                                  key.data, key.len,
                                  ctx->user_id.data, ctx->user_id.len,
                                  NGX_CHAT_LINK_TTL);

    default: /* NGX_CHAT_ACCOUNTS_CODE */
        reply = ctx->reply;

        if (reply->type != REDIS_REPLY_STATUS) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "chat link-code: code not stored, Redis reply %d",
                          reply->type);
            return ngx_chat_api_unavailable(ctx);
        }

        return ngx_chat_json_reply(r, NGX_HTTP_OK,
                                   json_pack("{s:s%,s:i}",
                                             "code", ac->code.data,
                                             ac->code.len,
                                             "expires_in",
                                             NGX_CHAT_LINK_TTL));
    }
}


/* POST /v1/devices/link {"code","device_name"} */

ngx_int_t
ngx_chat_accounts_link(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_str_t                 key;
    redisReply               *reply;
    ngx_http_request_t       *r;
    ngx_chat_accounts_ctx_t  *ac;

    r = ctx->request;
    ac = ctx->data;

    switch (ctx->step) {

    case NGX_CHAT_ACCOUNTS_START:
        rc = ngx_chat_accounts_body(ctx, ac, NGX_CHAT_ACCOUNTS_LINK
                                             |NGX_CHAT_ACCOUNTS_NAME);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* a code is opaque to clients: one we could not have made is unknown */

        if (!ngx_chat_accounts_link_code_valid(&ac->code)) {
            return ngx_chat_accounts_link_refused(ctx);
        }

        if (ngx_chat_redis_key(r->pool, "link:", &ac->code, 1, &key)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_CODE;

        /* one use: whoever comes first takes the code */

        return ngx_chat_api_redis(ctx, "GETDEL %b", key.data, key.len);

    case NGX_CHAT_ACCOUNTS_CODE:
        reply = ctx->reply;

        if (reply->type != REDIS_REPLY_STRING) {
            return ngx_chat_accounts_link_refused(ctx);
        }

        ac->user_id.len = reply->len;
        ac->user_id.data = ngx_pnalloc(r->pool, reply->len);

        if (ac->user_id.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ac->user_id.data, reply->str, reply->len);

        if (ngx_chat_api_id_valid(&ac->user_id) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "chat link: invalid user id in Redis");
            return ngx_chat_api_unavailable(ctx);
        }

        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        return ngx_chat_accounts_add_device(ctx, ac);

    default: /* NGX_CHAT_ACCOUNTS_ROWS */
        return ngx_chat_accounts_device_added(ctx, ac);
    }
}


/* GET /v1/devices (auth) */

ngx_int_t
ngx_chat_accounts_devices(ngx_chat_api_ctx_t *ctx)
{
    int        i, n;
    json_t    *devices, *device;
    ngx_str_t  id, name;
    PGresult  *res;

    if (ctx->step == NGX_CHAT_ACCOUNTS_START) {
        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;
        return ngx_chat_api_query(ctx, ngx_chat_accounts_devices_sql, 1,
                                  &ctx->user_id);
    }

    res = ctx->res;
    n = PQntuples(res);

    devices = json_array();
    if (devices == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &id);
        ngx_chat_pg_value(res, i, 1, &name);

        device = json_pack("{s:s%,s:s%,s:o,s:o}",
                           "device_id", id.data, id.len,
                           "name", name.data, name.len,
                           "added_at", ngx_chat_accounts_ms(res, i, 2),
                           "last_seen", ngx_chat_accounts_ms(res, i, 3));

        if (json_array_append_new(devices, device) != 0) {
            json_decref(devices);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_OK,
                               json_pack("{s:o}", "devices", devices));
}


/*
 * DELETE /v1/devices/{device_id} (auth): the row goes, so the token stops
 * working at once; the sockets of that device, on any worker or host,
 * hear of it through the user's channel.
 */

ngx_int_t
ngx_chat_accounts_unlink(ngx_chat_api_ctx_t *ctx)
{
    u_char              *p;
    ngx_str_t            params[2], message;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ctx->step == NGX_CHAT_ACCOUNTS_START) {
        params[0] = ctx->id;
        params[1] = ctx->user_id;

        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        return ngx_chat_api_query(ctx, ngx_chat_accounts_unlink_sql, 2,
                                  params);
    }

    /* someone else's device is none of the caller's business: 404 too */

    if (PQntuples(ctx->res) == 0) {
        return ngx_chat_json_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such device");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "chat unlink: user %V device %V",
                  &ctx->user_id, &ctx->id);

    message.data = ngx_pnalloc(r->pool, sizeof("{\"type\":\"revoke\","
                                               "\"device_id\":\"\"}") - 1
                                        + ctx->id.len);
    if (message.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the id is digits only (ngx_chat_api_id_valid): nothing to escape */

    p = ngx_sprintf(message.data, "{\"type\":\"revoke\",\"device_id\":\"%V\"}",
                    &ctx->id);
    message.len = p - message.data;

    /*
     * Nobody waits for it (ngx_chat_fanout.h); the token stopped working
     * with the statement above.
     */

    (void) ngx_chat_fanout("u:", &ctx->user_id, &message,
                          "chat unlink: revocation", r->connection->log);

    return NGX_HTTP_NO_CONTENT;
}


/*
 * GET /v1/me (auth), PATCH /v1/me {"about"} (auth): {"user_id","mobile",
 * "created_at","about"}.  A change of "about" is told to the user's
 * watchers once it is committed.
 */

ngx_int_t
ngx_chat_accounts_me(ngx_chat_api_ctx_t *ctx)
{
    ngx_str_t  id, mobile, about, changed, params[2];

    if (ctx->step == NGX_CHAT_ACCOUNTS_START) {
        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        if (ctx->body == NULL) {
            return ngx_chat_api_query(ctx, ngx_chat_accounts_me_sql, 1,
                                      &ctx->user_id);
        }

        /* "" clears it */

        if (ngx_chat_api_string(ctx, "about", &about) != NGX_OK
            || (about.len
                && !ngx_chat_api_text_valid(&about, NGX_CHAT_ABOUT_LEN)))
        {
            return ngx_chat_api_bad_request(ctx,
                              "about: a string of at most 140 characters "
                              "is required");
        }

        params[0] = ctx->user_id;
        params[1] = about;

        return ngx_chat_api_query(ctx, ngx_chat_accounts_about_sql, 2,
                                  params);
    }

    /* the user went away with the device since the token was checked */

    if (PQntuples(ctx->res) != 1) {
        return ngx_chat_accounts_gone(ctx);
    }

    ngx_chat_pg_value(ctx->res, 0, 0, &id);
    ngx_chat_pg_value(ctx->res, 0, 1, &mobile);
    ngx_chat_pg_value(ctx->res, 0, 3, &about);
    ngx_chat_pg_value(ctx->res, 0, 4, &changed);

    if (changed.len && changed.data[0] == 't') {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "chat: user %V changed their about", &id);

        ngx_chat_presence_profile(&id, &about,
                                  ctx->request->connection->log);
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_OK,
                               json_pack("{s:s%,s:s%,s:o,s:s%}",
                                         "user_id", id.data, id.len,
                                         "mobile", mobile.data, mobile.len,
                                         "created_at",
                                         ngx_chat_accounts_ms(ctx->res,
                                                              0, 2),
                                         "about", about.data, about.len));
}


/*
 * GET /v1/me/privacy, PATCH /v1/me/privacy (auth):
 * {"read_receipts":true|false,"last_seen":"everyone"|"contacts"|"nobody"}
 */

ngx_int_t
ngx_chat_accounts_privacy(ngx_chat_api_ctx_t *ctx)
{
    json_t      *receipts, *last_seen;
    ngx_str_t    params[3], v, to;
    const char  *s;

    if (ctx->step == NGX_CHAT_ACCOUNTS_START) {
        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        params[0] = ctx->user_id;
        ngx_str_null(&params[1]);
        ngx_str_null(&params[2]);

        if (ctx->body) {
            receipts = json_object_get(ctx->body, "read_receipts");
            last_seen = json_object_get(ctx->body, "last_seen");
            s = json_string_value(last_seen);

            if (!json_is_object(ctx->body)
                || json_object_size(ctx->body)
                   != (size_t) (receipts != NULL) + (last_seen != NULL)
                || json_object_size(ctx->body) == 0
                || (receipts && !json_is_boolean(receipts))
                || (last_seen
                    && (s == NULL
                        || (ngx_strcmp(s, "everyone") != 0
                            && ngx_strcmp(s, "contacts") != 0
                            && ngx_strcmp(s, "nobody") != 0))))
            {
                return ngx_chat_api_bad_request(ctx,
                           "\"read_receipts\" (true or false) and/or "
                           "\"last_seen\" (\"everyone\", \"contacts\" or "
                           "\"nobody\") are expected");
            }

            if (receipts) {
                ngx_str_set(&params[1], "f");

                if (json_is_true(receipts)) {
                    ngx_str_set(&params[1], "t");
                }
            }

            if (s) {
                params[2].data = (u_char *) s;
                params[2].len = ngx_strlen(s);
            }
        }

        return ngx_chat_api_query(ctx, ngx_chat_accounts_privacy_sql, 3,
                                  params);
    }

    if (PQntuples(ctx->res) != 1) {
        return ngx_chat_accounts_gone(ctx);
    }

    ngx_chat_pg_value(ctx->res, 0, 0, &v);
    ngx_chat_pg_value(ctx->res, 0, 1, &to);

    /* who may see whose last_seen may have changed */

    if (json_object_get(ctx->body, "last_seen")) {
        ngx_chat_fanout_recheck(&ctx->user_id,
                                ctx->request->connection->log);
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_OK,
                               json_pack("{s:b,s:s%}", "read_receipts",
                                         v.len && v.data[0] == 't',
                                         "last_seen", to.data, to.len));
}


/* GET /v1/users/lookup?mobile=... (auth) */

ngx_int_t
ngx_chat_accounts_lookup(ngx_chat_api_ctx_t *ctx)
{
    u_char              *dst, *src;
    ngx_str_t            arg, mobile, id;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ctx->step == NGX_CHAT_ACCOUNTS_START) {

        /* "+" may come as it is or as "%2B" */

        if (ngx_http_arg(r, (u_char *) "mobile", 6, &arg) != NGX_OK
            || arg.len > 3 * NGX_CHAT_MOBILE_LEN)
        {
            return ngx_chat_api_bad_request(ctx,
                              "mobile: an E.164 number is required");
        }

        mobile.data = ngx_pnalloc(r->pool, arg.len);
        if (mobile.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        dst = mobile.data;
        src = arg.data;
        ngx_unescape_uri(&dst, &src, arg.len, 0);
        mobile.len = dst - mobile.data;

        if (!ngx_chat_accounts_mobile_valid(&mobile)) {
            return ngx_chat_api_bad_request(ctx,
                              "mobile: an E.164 number is required");
        }

        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        return ngx_chat_api_query(ctx, ngx_chat_accounts_lookup_sql, 1,
                                  &mobile);
    }

    if (PQntuples(ctx->res) != 1) {
        return ngx_chat_json_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such user");
    }

    ngx_chat_pg_value(ctx->res, 0, 0, &id);

    return ngx_chat_json_reply(r, NGX_HTTP_OK,
                               json_pack("{s:s%}", "user_id",
                                         id.data, id.len));
}


/*
 * GET /v1/users/{user_id} (auth): {"user_id","about","online",
 * "last_seen"} of a user who shares a chat with the caller (or is the
 * caller), last_seen shown as to a watcher (chat_presence_peers()); 404
 * for anyone else, as for no such user.  The state is the presence hash
 * in Redis.
 */

ngx_int_t
ngx_chat_accounts_user(ngx_chat_api_ctx_t *ctx)
{
    int64_t                   last_seen;
    ngx_str_t                 v, params[2];
    ngx_uint_t                online;
    ngx_http_request_t       *r;
    ngx_chat_accounts_ctx_t  *ac;

    r = ctx->request;
    ac = ctx->data;

    switch (ctx->step) {

    case NGX_CHAT_ACCOUNTS_START:
        params[0] = ctx->user_id;
        params[1] = ctx->id;

        ctx->step = NGX_CHAT_ACCOUNTS_ROWS;

        return ngx_chat_api_query(ctx, ngx_chat_accounts_user_sql, 2,
                                  params);

    case NGX_CHAT_ACCOUNTS_ROWS:
        if (PQntuples(ctx->res) != 1) {
            return ngx_chat_json_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       "no such user");
        }

        ngx_chat_pg_value(ctx->res, 0, 0, &v);

        if (v.len == 0 || v.data[0] != 't') {
            return ngx_chat_json_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                       "no such user");
        }

        ngx_chat_pg_value(ctx->res, 0, 1, &v);
        ac->last_seen = v.len && v.data[0] == 't';

        ngx_chat_pg_value(ctx->res, 0, 2, &v);
        ac->about.len = v.len;
        ac->about.data = ngx_pstrdup(r->pool, &v);

        if (ac->about.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->step = NGX_CHAT_ACCOUNTS_PRESENCE;

        return ngx_chat_api_command(ctx,
                   ngx_chat_presence_fetch(&ctx->id,
                                           ngx_chat_api_redis_handler, ctx,
                                           r->connection->log));

    default: /* NGX_CHAT_ACCOUNTS_PRESENCE */
        if (ngx_chat_presence_parse(ctx->reply, &online, &last_seen)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "chat user %V: unexpected Redis reply %d",
                          &ctx->id, ctx->reply->type);
            return ngx_chat_api_unavailable(ctx);
        }

        if (!ac->last_seen) {
            last_seen = -1;
        }

        return ngx_chat_json_reply(r, NGX_HTTP_OK,
                                   json_pack("{s:s%,s:s%,s:b,s:o}",
                                             "user_id", ctx->id.data,
                                             ctx->id.len,
                                             "about", ac->about.data,
                                             ac->about.len,
                                             "online", (int) online,
                                             "last_seen",
                                             last_seen >= 0
                                             ? json_integer(last_seen)
                                             : json_null()));
    }
}


/*
 * The Redis keys of the request's number, with its hash tag: its code,
 * its wrong codes, its registers.
 */

static ngx_int_t
ngx_chat_accounts_keys(ngx_chat_api_ctx_t *ctx, ngx_chat_accounts_ctx_t *ac,
    ngx_str_t *keys)
{
    ngx_uint_t  i;

    static const char  *names[] = { "code:", "fails:", "register:" };

    for (i = 0; i < 3; i++) {
        if (ngx_chat_redis_key(ctx->request->pool, names[i], &ac->mobile, 1,
                               &keys[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A Redis answer that says how long to wait (ms, 0: go on): NGX_DECLINED
 * to go on, else what ends the request (429 with Retry-After, or 503).
 */

static ngx_int_t
ngx_chat_accounts_wait(ngx_chat_api_ctx_t *ctx, const char *what)
{
    redisReply               *reply;
    ngx_chat_accounts_ctx_t  *ac;

    reply = ctx->reply;
    ac = ctx->data;

    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "chat register: unexpected Redis reply %d",
                      reply->type);
        return ngx_chat_api_unavailable(ctx);
    }

    if (reply->integer <= 0) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                  "chat register: %V is rate limited (%s)",
                  &ac->mobile, what);

    return ngx_chat_api_rate_limited(ctx,
                                     (time_t) (reply->integer + 999) / 1000);
}


/*
 * Takes the fields of the body that the endpoint wants: NGX_DECLINED
 * when they are all there and right, so that the endpoint goes on, else
 * what ended the request (a 400 answer).
 */

static ngx_int_t
ngx_chat_accounts_body(ngx_chat_api_ctx_t *ctx, ngx_chat_accounts_ctx_t *ac,
    ngx_uint_t fields)
{
    ngx_int_t    rc;
    const char  *message;

    rc = ngx_chat_accounts_fields(ctx, ac, fields, &message);

    if (rc == NGX_OK) {
        return NGX_DECLINED;
    }

    if (rc == NGX_DECLINED) {
        return ngx_chat_api_bad_request(ctx, message);
    }

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* NGX_OK, NGX_DECLINED with the message of a 400, NGX_ERROR */

static ngx_int_t
ngx_chat_accounts_fields(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac, ngx_uint_t fields, const char **message)
{
    u_char      *p;
    ngx_int_t    rc;
    ngx_str_t    code;
    ngx_uint_t   i;

    if (fields & NGX_CHAT_ACCOUNTS_MOBILE) {
        if (ngx_chat_api_string(ctx, "mobile", &ac->mobile) != NGX_OK
            || !ngx_chat_accounts_mobile_valid(&ac->mobile))
        {
            *message = "mobile: an E.164 number (+ and 8 to 15 digits) "
                       "is required";
            return NGX_DECLINED;
        }
    }

    if (fields & NGX_CHAT_ACCOUNTS_DIGITS) {
        if (ngx_chat_api_string(ctx, "code", &ac->code) != NGX_OK
            || ac->code.len != NGX_CHAT_CODE_LEN)
        {
            goto bad_code;
        }

        for (p = ac->code.data; p < ac->code.data + ac->code.len; p++) {
            if (*p < '0' || *p > '9') {
                goto bad_code;
            }
        }
    }

    if (fields & NGX_CHAT_ACCOUNTS_LINK) {

        /* typed by a person: any case will do */

        if (ngx_chat_api_string(ctx, "code", &code) != NGX_OK
            || code.len == 0 || code.len > NGX_CHAT_LINK_CODE_MAX)
        {
            *message = "code: a string of 1 to 64 characters is required";
            return NGX_DECLINED;
        }

        ac->code.len = code.len;
        ac->code.data = ngx_pnalloc(ctx->request->pool, code.len);
        if (ac->code.data == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < code.len; i++) {
            ac->code.data[i] = ngx_toupper(code.data[i]);
        }
    }

    if (fields & NGX_CHAT_ACCOUNTS_NAME) {
        rc = ngx_chat_api_string(ctx, "device_name", &ac->name);

        if (rc == NGX_DECLINED) {
            ngx_str_set(&ac->name, "device");

        } else if (rc != NGX_OK
                   || !ngx_chat_api_text_valid(&ac->name,
                                               NGX_CHAT_DEVICE_NAME_LEN))
        {
            *message = "device_name: 1 to 64 characters are required";
            return NGX_DECLINED;
        }
    }

    return NGX_OK;

bad_code:

    *message = "code: 6 digits are required";
    return NGX_DECLINED;
}


/* "+", then 8 to 15 digits, the first not 0 (E.164) */

static ngx_uint_t
ngx_chat_accounts_mobile_valid(ngx_str_t *mobile)
{
    u_char  *p, *last;

    if (mobile->len < 1 + 8 || mobile->len > NGX_CHAT_MOBILE_LEN
        || mobile->data[0] != '+' || mobile->data[1] == '0')
    {
        return 0;
    }

    last = mobile->data + mobile->len;

    for (p = mobile->data + 1; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }

    return 1;
}


/* what ngx_chat_accounts_random_link_code() makes, in capitals */

static ngx_uint_t
ngx_chat_accounts_link_code_valid(ngx_str_t *code)
{
    ngx_uint_t  i;

    if (code->len != NGX_CHAT_LINK_CODE_LEN) {
        return 0;
    }

    for (i = 0; i < code->len; i++) {
        if (ngx_strlchr(ngx_chat_accounts_alphabet,
                        ngx_chat_accounts_alphabet
                        + sizeof(ngx_chat_accounts_alphabet) - 1,
                        code->data[i])
            == NULL)
        {
            return 0;
        }
    }

    return 1;
}


/* like a wrong verify code: 401 (a 404 would suit a resource, not a key) */

static ngx_int_t
ngx_chat_accounts_link_refused(ngx_chat_api_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                  "chat link: unknown, used or expired code");

    return ngx_chat_json_error(ctx->request, NGX_HTTP_UNAUTHORIZED,
                               "unauthorized",
                               "unknown, used or expired code");
}


/* 6 uniform digits: 32-bit draws past the last whole million are redrawn */

static ngx_int_t
ngx_chat_accounts_random_code(ngx_pool_t *pool, ngx_str_t *code)
{
    uint32_t  n;

    do {
        if (RAND_bytes((u_char *) &n, sizeof(n)) != 1) {
            return NGX_ERROR;
        }

    } while (n >= 4294000000U);

    code->data = ngx_pnalloc(pool, NGX_CHAT_CODE_LEN);
    if (code->data == NULL) {
        return NGX_ERROR;
    }

    code->len = ngx_sprintf(code->data, "%06uD", n % 1000000) - code->data;

    return NGX_OK;
}


/* 10 symbols of the 32-symbol alphabet: 50 bits */

static ngx_int_t
ngx_chat_accounts_random_link_code(ngx_pool_t *pool, ngx_str_t *code)
{
    u_char      raw[NGX_CHAT_LINK_CODE_LEN];
    ngx_uint_t  i;

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_ERROR;
    }

    code->data = ngx_pnalloc(pool, NGX_CHAT_LINK_CODE_LEN);
    if (code->data == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_CHAT_LINK_CODE_LEN; i++) {
        code->data[i] = ngx_chat_accounts_alphabet[raw[i] & 0x1f];
    }

    code->len = NGX_CHAT_LINK_CODE_LEN;

    return NGX_OK;
}


/*
 * The code goes to the SMS relay (chat_sms_relay), a location the
 * operator points at the provider, as a background GET subrequest with
 * "mobile" and "code" arguments; without a relay, to the error log.
 */

static ngx_int_t
ngx_chat_accounts_sms(ngx_chat_api_ctx_t *ctx, ngx_chat_accounts_ctx_t *ac)
{
    u_char              *p;
    ngx_str_t            args;
    ngx_http_request_t  *r, *sr;

    r = ctx->request;

    if (ctx->conf->sms_relay.len == 0) {
        ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                      "sms to %V: code %V", &ac->mobile, &ac->code);
        return NGX_OK;
    }

    args.len = sizeof("mobile=&code=") - 1 + ac->mobile.len
               + 2 * ngx_escape_uri(NULL, ac->mobile.data, ac->mobile.len,
                                    NGX_ESCAPE_ARGS)
               + ac->code.len;

    args.data = ngx_pnalloc(r->pool, args.len);
    if (args.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(args.data, "mobile=", sizeof("mobile=") - 1);
    p = (u_char *) ngx_escape_uri(p, ac->mobile.data, ac->mobile.len,
                                  NGX_ESCAPE_ARGS);
    p = ngx_sprintf(p, "&code=%V", &ac->code);
    args.len = p - args.data;

    if (ngx_http_subrequest(r, &ctx->conf->sms_relay, &args, &sr, NULL,
                            NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "sms to %V: relay subrequest failed", &ac->mobile);
        return NGX_ERROR;
    }

    /*
     * A GET without the client's body (it was read, and consumed): a
     * Content-Length left over would make a proxy wait for it.
     */

    sr->header_only = 1;
    sr->method = NGX_HTTP_GET;
    ngx_str_set(&sr->method_name, "GET");
    sr->request_body = NULL;
    sr->headers_in.content_length = NULL;
    sr->headers_in.content_length_n = -1;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.chunked = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sms to %V: relayed", &ac->mobile);

    return NGX_OK;
}


/* a new device, with a new token, for ac->user_id */

static ngx_int_t
ngx_chat_accounts_add_device(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac)
{
    ngx_str_t  params[4];
    u_char     max[NGX_INT_T_LEN];

    if (ngx_chat_auth_token(ctx->request->pool, &ac->token, &ac->hash)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    params[0] = ac->user_id;
    params[1] = ac->name;
    params[2] = ac->hash;
    params[3].data = max;
    params[3].len = ngx_sprintf(max, "%ui", ctx->conf->max_devices) - max;

    return ngx_chat_api_query(ctx, ngx_chat_accounts_link_sql, 4, params);
}


/*
 * The answer of chat_verify() or chat_add_device(): user id, device id
 * (0: no room; NULL: no such user).
 */

static ngx_int_t
ngx_chat_accounts_device_added(ngx_chat_api_ctx_t *ctx,
    ngx_chat_accounts_ctx_t *ac)
{
    ngx_str_t            user, device;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (PQntuples(ctx->res) != 1 || PQgetisnull(ctx->res, 0, 1)) {
        return ngx_chat_accounts_gone(ctx);
    }

    ngx_chat_pg_value(ctx->res, 0, 0, &user);
    ngx_chat_pg_value(ctx->res, 0, 1, &device);

    if (device.len == 1 && device.data[0] == '0') {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "chat: user %V has %ui devices already",
                      &user, ctx->conf->max_devices);

        return ngx_chat_json_error(r, NGX_HTTP_CONFLICT, "conflict",
                                   "too many devices: unlink one first");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "chat: user %V has a new device %V", &user, &device);

    return ngx_chat_json_reply(r, NGX_HTTP_OK,
                               json_pack("{s:s%,s:s%,s:s%}",
                                         "user_id", user.data, user.len,
                                         "device_id", device.data,
                                         device.len,
                                         "token", ac->token.data,
                                         ac->token.len));
}


/* epoch milliseconds, or null */

/* the user went away with the device since its token was checked */

static ngx_int_t
ngx_chat_accounts_gone(ngx_chat_api_ctx_t *ctx)
{
    return ngx_chat_json_error(ctx->request, NGX_HTTP_UNAUTHORIZED,
                               "unauthorized", "no such user");
}


static json_t *
ngx_chat_accounts_ms(PGresult *res, int row, int col)
{
    off_t      ms;
    ngx_str_t  value;

    if (PQgetisnull(res, row, col)) {
        return json_null();
    }

    ngx_chat_pg_value(res, row, col, &value);

    ms = ngx_atoof(value.data, value.len);

    if (ms == NGX_ERROR) {
        return NULL;            /* json_pack() fails on it: a 500 */
    }

    return json_integer((json_int_t) ms);
}
