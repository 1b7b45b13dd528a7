
/*
 * chat_api: the HTTP API front.  A request goes through three phases,
 * each of which may wait: the bearer token is checked (routes with
 * NGX_CHAT_API_AUTH), the JSON body is read and parsed (routes with
 * NGX_CHAT_API_BODY), then the endpoint runs, with as many round trips
 * to PostgreSQL or Redis as it needs.
 *
 * A request that waits is held by r->main->count (one reference, taken
 * in ngx_chat_api_handler) and ends in ngx_chat_api_finish().  A pool
 * cleanup cancels whatever is still in flight, so nothing calls back into
 * a request that was terminated.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_api.h"
#include "ngx_chat_auth.h"


typedef enum {
    NGX_CHAT_API_PHASE_AUTH = 0,
    NGX_CHAT_API_PHASE_BODY,
    NGX_CHAT_API_PHASE_RUN
} ngx_chat_api_phase_e;


typedef struct {
    ngx_uint_t                method;
    const char               *name;
} ngx_chat_api_method_t;


static ngx_chat_api_route_t *ngx_chat_api_route(ngx_http_request_t *r,
    ngx_chat_api_route_t *routes,
    ngx_str_t *ids, ngx_uint_t *allowed);
static ngx_uint_t ngx_chat_api_match(ngx_str_t *pattern, ngx_str_t *path,
    ngx_str_t *ids);
static ngx_int_t ngx_chat_api_not_allowed(ngx_http_request_t *r,
    ngx_uint_t allowed);
static ngx_int_t ngx_chat_api_unauthorized(ngx_http_request_t *r);
static ngx_uint_t ngx_chat_api_credentials(ngx_http_request_t *r);
static void ngx_chat_api_next(ngx_chat_api_ctx_t *ctx);
static void ngx_chat_api_run(ngx_chat_api_ctx_t *ctx);
static void ngx_chat_api_auth_handler(void *data, ngx_int_t rc,
    ngx_chat_auth_identity_t *identity);
static void ngx_chat_api_pg_handler(void *data, PGresult *res);
static void ngx_chat_api_read_body(ngx_chat_api_ctx_t *ctx);
static void ngx_chat_api_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_chat_api_body_collect(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_chat_api_body_parse(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_chat_api_body_error(ngx_chat_api_ctx_t *ctx,
    ngx_int_t rc);
static ngx_int_t ngx_chat_api_too_large(ngx_http_request_t *r);
static void ngx_chat_api_cleanup(void *data);


/* literal paths before patterns: the first route that matches wins */

static ngx_chat_api_route_t  ngx_chat_api_routes[] = {

    { NGX_HTTP_POST, ngx_string("register"),
      ngx_chat_accounts_register, NGX_CHAT_API_BODY,
      NGX_CHAT_ACCOUNTS_DATA },

    { NGX_HTTP_POST, ngx_string("verify"),
      ngx_chat_accounts_verify, NGX_CHAT_API_BODY,
      NGX_CHAT_ACCOUNTS_DATA },

    { NGX_HTTP_POST, ngx_string("devices/link-code"),
      ngx_chat_accounts_link_code, NGX_CHAT_API_AUTH,
      NGX_CHAT_ACCOUNTS_DATA },

    { NGX_HTTP_POST, ngx_string("devices/link"),
      ngx_chat_accounts_link, NGX_CHAT_API_BODY,
      NGX_CHAT_ACCOUNTS_DATA },

    { NGX_HTTP_GET, ngx_string("devices"),
      ngx_chat_accounts_devices, NGX_CHAT_API_AUTH },

    { NGX_HTTP_DELETE, ngx_string("devices/{id}"),
      ngx_chat_accounts_unlink, NGX_CHAT_API_AUTH },

    { NGX_HTTP_GET, ngx_string("me"),
      ngx_chat_accounts_me, NGX_CHAT_API_AUTH },

    { NGX_HTTP_PATCH, ngx_string("me"),
      ngx_chat_accounts_me, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_GET, ngx_string("me/privacy"),
      ngx_chat_accounts_privacy, NGX_CHAT_API_AUTH },

    { NGX_HTTP_PATCH, ngx_string("me/privacy"),
      ngx_chat_accounts_privacy, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_GET, ngx_string("users/lookup"),
      ngx_chat_accounts_lookup, NGX_CHAT_API_AUTH },

    { NGX_HTTP_GET, ngx_string("users/{id}"),
      ngx_chat_accounts_user, NGX_CHAT_API_AUTH,
      NGX_CHAT_ACCOUNTS_DATA },

    { NGX_HTTP_POST, ngx_string("chats"),
      ngx_chat_chats_create, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_GET, ngx_string("chats"),
      ngx_chat_chats_list, NGX_CHAT_API_AUTH },

    { NGX_HTTP_GET, ngx_string("chats/{id}"),
      ngx_chat_chats_get, NGX_CHAT_API_AUTH },

    { NGX_HTTP_PATCH, ngx_string("chats/{id}"),
      ngx_chat_chats_update, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_POST, ngx_string("chats/{id}/members"),
      ngx_chat_chats_add_member, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_DELETE, ngx_string("chats/{id}/members/{user_id}"),
      ngx_chat_chats_remove_member, NGX_CHAT_API_AUTH },

    /* the fallback for networks without WebSockets */

    { NGX_HTTP_GET, ngx_string("events"),
      ngx_chat_events_get, NGX_CHAT_API_AUTH|NGX_CHAT_API_TOKEN },

    { NGX_HTTP_POST, ngx_string("send"),
      ngx_chat_events_call, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_POST, ngx_string("ack"),
      ngx_chat_events_call, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_POST, ngx_string("read"),
      ngx_chat_events_call, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_POST, ngx_string("presence"),
      ngx_chat_events_call, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { 0, ngx_null_string, NULL, 0 }
};


static ngx_chat_api_method_t  ngx_chat_api_methods[] = {
    { NGX_HTTP_GET, "GET" },
    { NGX_HTTP_POST, "POST" },
    { NGX_HTTP_PUT, "PUT" },
    { NGX_HTTP_PATCH, "PATCH" },
    { NGX_HTTP_DELETE, "DELETE" },
    { 0, NULL }
};


ngx_int_t
ngx_chat_api_handler(ngx_http_request_t *r)
{
    return ngx_chat_api_serve(r, ngx_chat_api_routes);
}


/* an API of routes: chat_api's, and other modules' (asset_api) */

ngx_int_t
ngx_chat_api_serve(ngx_http_request_t *r, ngx_chat_api_route_t *routes)
{
    ngx_int_t              rc;
    ngx_str_t              ids[NGX_CHAT_API_IDS], token;
    ngx_uint_t             allowed;
    ngx_pool_cleanup_t    *cln;
    ngx_chat_api_ctx_t    *ctx;
    ngx_chat_api_route_t  *route;
    ngx_chat_main_conf_t  *cmcf;

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;      /* no API calls in subrequests */
    }

    route = ngx_chat_api_route(r, routes, ids, &allowed);

    /*
     * IDs are opaque (PROTOCOL.md): a caller with no credentials learns
     * nothing of them, nor of the paths behind the public ones (401
     * before 404 and 405).
     */

    if ((route == NULL || (route->flags & NGX_CHAT_API_AUTH))
        && !ngx_chat_api_credentials(r))
    {
        return ngx_chat_api_unauthorized(r);
    }

    if (route == NULL) {
        if (allowed) {
            return ngx_chat_api_not_allowed(r, allowed);
        }

        return ngx_chat_json_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such endpoint");
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_chat_module);

    if (route->flags & NGX_CHAT_API_BODY) {

        /* decided before a byte is read: no "100 Continue" either */

        if (r->headers_in.content_length_n > (off_t) cmcf->api_max_body) {
            r->expect_tested = 1;
            return ngx_chat_api_too_large(r);
        }

    } else {
        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    ngx_str_null(&token);

    if (route->flags & NGX_CHAT_API_AUTH) {

        /* a token of the wrong shape cannot be anyone's: no lookup */

        rc = ngx_chat_auth_bearer(r, &token);

        if (rc == NGX_DECLINED && (route->flags & NGX_CHAT_API_TOKEN)
            && ngx_http_arg(r, (u_char *) "token", 5, &token) == NGX_OK)
        {
            rc = NGX_OK;
        }

        if (rc != NGX_OK || !ngx_chat_auth_token_valid(&token)) {
            return ngx_chat_api_unauthorized(r);
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_chat_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_chat_api_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->route = route;
    ctx->conf = cmcf;
    ctx->id = ids[0];
    ctx->id2 = ids[1];
    ctx->token = token;

    if (route->data_size) {
        ctx->data = ngx_pcalloc(r->pool, route->data_size);
        if (ctx->data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_http_set_ctx(r, ctx, ngx_chat_module);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "chat api: %V \"%V\"", &r->method_name, &route->path);

    r->main->count++;

    ngx_chat_api_next(ctx);

    return NGX_DONE;
}


/*
 * $chat_device_key: the device the request's token names, whatever form
 * of the Authorization header carries it, for limit_req and logs (it is
 * no secret: a hash of the token); empty without a token.
 */

ngx_int_t
ngx_chat_api_device_key(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t  key;

    switch (ngx_chat_auth_key(r, &key)) {

    case NGX_OK:
        v->len = key.len;
        v->data = key.data;
        break;

    case NGX_DECLINED:
        v->len = 0;
        v->data = (u_char *) "";
        break;

    default:
        return NGX_ERROR;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* an Authorization header, or a ?token= (EventSource cannot send one) */

static ngx_uint_t
ngx_chat_api_credentials(ngx_http_request_t *r)
{
    ngx_str_t  token;

    return r->headers_in.authorization != NULL
           || (ngx_http_arg(r, (u_char *) "token", 5, &token) == NGX_OK
               && token.len);
}


/*
 * The route of the request, or NULL with the methods that the path
 * allows (0: no such path).  Paths are relative to "/v1/"; the IDs in
 * them go to ids[], NGX_CHAT_API_IDS of them, empty when absent.
 */

static ngx_chat_api_route_t *
ngx_chat_api_route(ngx_http_request_t *r, ngx_chat_api_route_t *routes,
    ngx_str_t *ids, ngx_uint_t *allowed)
{
    ngx_str_t              path;
    ngx_uint_t             i;
    ngx_chat_api_route_t  *route;

    *allowed = 0;

    if (r->uri.len < 4 || ngx_strncmp(r->uri.data, "/v1/", 4) != 0) {
        return NULL;
    }

    path.data = r->uri.data + 4;
    path.len = r->uri.len - 4;

    for (route = routes; route->handler; route++) {

        for (i = 0; i < NGX_CHAT_API_IDS; i++) {
            ngx_str_null(&ids[i]);
        }

        if (!ngx_chat_api_match(&route->path, &path, ids)) {
            continue;
        }

        if (route->method & r->method) {
            return route;
        }

        *allowed |= route->method;
    }

    for (i = 0; i < NGX_CHAT_API_IDS; i++) {
        ngx_str_null(&ids[i]);
    }

    return NULL;
}


/*
 * Literal bytes, and "{...}" for one path segment that is an ID ("{key}":
 * an opaque key, ngx_chat_api_key_valid()): a path that cannot name a
 * resource is no path at all (404, not 405).  The IDs go to ids[] in
 * order (patterns have NGX_CHAT_API_IDS at most).
 */

static ngx_uint_t
ngx_chat_api_match(ngx_str_t *pattern, ngx_str_t *path, ngx_str_t *ids)
{
    u_char      *s, *end, *p, *last;
    ngx_str_t   *id;
    ngx_uint_t   key;

    id = ids;
    s = pattern->data;
    end = s + pattern->len;
    p = path->data;
    last = p + path->len;

    while (s < end) {

        if (*s == '{') {
            key = (end - s >= 5 && ngx_strncmp(s, "{key}", 5) == 0);

            while (s < end && *s++ != '}') { /* void */ }

            id->data = p;

            while (p < last && *p != '/') {
                p++;
            }

            id->len = p - id->data;

            if ((key ? ngx_chat_api_key_valid(id) : ngx_chat_api_id_valid(id))
                != NGX_OK)
            {
                return 0;
            }

            id++;
            continue;
        }

        if (p == last || *p != *s) {
            return 0;
        }

        p++;
        s++;
    }

    return p == last;
}


/* PROTOCOL.md has no code for it: 405, "bad_request", and Allow */

static ngx_int_t
ngx_chat_api_not_allowed(ngx_http_request_t *r, ngx_uint_t allowed)
{
    u_char                 *p, *value;
    ngx_chat_api_method_t  *m;

    value = ngx_pnalloc(r->pool, sizeof("GET, POST, PUT, PATCH, DELETE"));
    if (value == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = value;

    for (m = ngx_chat_api_methods; m->name; m++) {
        if (allowed & m->method) {
            p = ngx_sprintf(p, "%s%s", p == value ? "" : ", ", m->name);
        }
    }

    if (ngx_chat_http_header(r, "Allow", value, p - value) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_chat_json_error(r, NGX_HTTP_NOT_ALLOWED, "bad_request",
                               "method not allowed");
}


/* a missing, malformed, unknown or revoked token (RFC 6750, 3) */

static ngx_int_t
ngx_chat_api_unauthorized(ngx_http_request_t *r)
{
    if (ngx_chat_http_header(r, "WWW-Authenticate", (u_char *) "Bearer", 6)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_chat_json_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                               "missing, invalid or revoked token");
}


/* runs the phases in order until one has to wait */

static void
ngx_chat_api_next(ngx_chat_api_ctx_t *ctx)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    switch (ctx->phase) {

    case NGX_CHAT_API_PHASE_AUTH:
        ctx->phase = NGX_CHAT_API_PHASE_BODY;

        if (ctx->route->flags & NGX_CHAT_API_AUTH) {
            ctx->query = ngx_chat_auth_check(&ctx->token,
                                             ngx_chat_api_auth_handler, ctx,
                                             r->pool, r->connection->log);
            if (ctx->query == NULL) {
                ngx_chat_api_finish(ctx, ngx_chat_api_unavailable(ctx));
            }

            return;
        }

        /* fall through */

    case NGX_CHAT_API_PHASE_BODY:
        ctx->phase = NGX_CHAT_API_PHASE_RUN;

        if (ctx->route->flags & NGX_CHAT_API_BODY) {
            ngx_chat_api_read_body(ctx);
            return;
        }

        /* fall through */

    default: /* NGX_CHAT_API_PHASE_RUN */
        ngx_chat_api_run(ctx);
    }
}


static void
ngx_chat_api_run(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ctx->route->handler(ctx);

    ctx->res = NULL;
    ctx->reply = NULL;

    if (rc == NGX_DONE) {

        /* a round trip is on its way, unless the endpoint is confused */

        if (ctx->request->header_sent && !ctx->taken) {
            ngx_log_error(NGX_LOG_ALERT, ctx->request->connection->log, 0,
                          "chat api: \"%V\" waits after its answer",
                          &ctx->route->path);
        }

        return;
    }

    ngx_chat_api_finish(ctx, rc);
}


/*
 * The one way out of a request that waited; it may be called from a
 * PostgreSQL or Redis event, hence the posted requests (the SMS relay).
 */

void
ngx_chat_api_finish(ngx_chat_api_ctx_t *ctx, ngx_int_t rc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    if (ctx->done) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "chat api: request finalized twice");
        return;
    }

    ctx->done = 1;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_chat_api_auth_handler(void *data, ngx_int_t rc,
    ngx_chat_auth_identity_t *identity)
{
    ngx_chat_api_ctx_t  *ctx = data;

    ngx_http_request_t  *r;

    ctx->query = NULL;
    r = ctx->request;

    switch (rc) {

    case NGX_OK:
        ctx->user_id.data = ngx_pstrdup(r->pool, &identity->user_id);
        ctx->user_id.len = identity->user_id.len;
        ctx->device_id.data = ngx_pstrdup(r->pool, &identity->device_id);
        ctx->device_id.len = identity->device_id.len;

        if (ctx->user_id.data == NULL || ctx->device_id.data == NULL) {
            ngx_chat_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "chat api: user %V device %V",
                       &ctx->user_id, &ctx->device_id);

        ngx_chat_api_next(ctx);
        return;

    case NGX_DECLINED:
        ngx_chat_api_finish(ctx, ngx_chat_api_unauthorized(r));
        return;

    default:
        ngx_chat_api_finish(ctx, ngx_chat_api_unavailable(ctx));
        return;
    }
}


/*
 * Starts a PostgreSQL round trip: the endpoint runs again with ctx->res,
 * a successful result.  Returns what the endpoint returns.
 */

ngx_int_t
ngx_chat_api_query(ngx_chat_api_ctx_t *ctx, const char *sql,
    ngx_uint_t nparams, ngx_str_t *params)
{
    ctx->query = ngx_chat_pg_query(sql, nparams, params,
                                   ngx_chat_api_pg_handler, ctx,
                                   ctx->request->connection->log);

    if (ctx->query == NULL) {
        return ngx_chat_api_unavailable(ctx);
    }

    return NGX_DONE;
}


static void
ngx_chat_api_pg_handler(void *data, PGresult *res)
{
    ngx_chat_api_ctx_t  *ctx = data;

    ctx->query = NULL;

    /* the pool has logged what went wrong */

    if (!ngx_chat_pg_ok(res)) {
        ngx_chat_api_finish(ctx, ngx_chat_api_unavailable(ctx));
        return;
    }

    ctx->res = res;

    ngx_chat_api_run(ctx);
}


/*
 * Waits for a Redis command started with ngx_chat_api_redis_handler and
 * ctx as its handler and data:
 *
 *     return ngx_chat_api_command(ctx,
 *                ngx_chat_redis_command(ngx_chat_api_redis_handler, ctx,
 *                                       log, "GET %b", ...));
 *
 * The endpoint runs again with ctx->reply, which is not an error reply.
 */

ngx_int_t
ngx_chat_api_command(ngx_chat_api_ctx_t *ctx, ngx_chat_redis_cmd_t *cmd)
{
    ctx->cmd = cmd;

    if (cmd == NULL) {
        return ngx_chat_api_unavailable(ctx);
    }

    return NGX_DONE;
}


/* a Redis command of the endpoint's, waited for as above */

ngx_int_t
ngx_chat_api_redis(ngx_chat_api_ctx_t *ctx, const char *format, ...)
{
    va_list                args;
    ngx_chat_redis_cmd_t  *cmd;

    va_start(args, format);
    cmd = ngx_chat_redis_vcommand(ngx_chat_api_redis_handler, ctx,
                                  ctx->request->connection->log, format,
                                  args);
    va_end(args);

    return ngx_chat_api_command(ctx, cmd);
}


void
ngx_chat_api_redis_handler(void *data, redisReply *reply)
{
    ngx_chat_api_ctx_t  *ctx = data;

    ctx->cmd = NULL;

    if (reply == NULL) {
        ngx_chat_api_finish(ctx, ngx_chat_api_unavailable(ctx));
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                      "chat api: redis: %*s", (size_t) reply->len,
                      reply->str);
        ngx_chat_api_finish(ctx, ngx_chat_api_unavailable(ctx));
        return;
    }

    ctx->reply = reply;

    ngx_chat_api_run(ctx);
}


/*
 * The body is read without nginx's buffering, so that its size is
 * checked as it arrives, chunked bodies included, and nothing goes to a
 * temporary file.
 */

static void
ngx_chat_api_read_body(ngx_chat_api_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->request;
    r->request_body_no_buffering = 1;

    rc = ngx_http_read_client_request_body(r, ngx_chat_api_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ngx_chat_api_finish(ctx, ngx_chat_api_body_error(ctx, rc));
        return;
    }

    /* the reader took a reference of its own: ctx holds one already */

    ngx_http_finalize_request(r, NGX_DONE);
}


/* the post handler of the body, then its read event handler */

static void
ngx_chat_api_body_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_chat_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_chat_module);

    for ( ;; ) {
        rc = ngx_chat_api_body_collect(ctx);

        if (rc == NGX_DECLINED) {
            ngx_chat_api_finish(ctx, ngx_chat_api_too_large(r));
            return;
        }

        if (rc != NGX_OK) {
            ngx_chat_api_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        if (!r->reading_body) {
            break;
        }

        rc = ngx_http_read_unbuffered_request_body(r);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            ngx_chat_api_finish(ctx, ngx_chat_api_body_error(ctx, rc));
            return;
        }

        if (rc == NGX_AGAIN && r->request_body->bufs == NULL) {
            r->read_event_handler = ngx_chat_api_body_handler;
            return;
        }
    }

    r->read_event_handler = ngx_http_block_reading;

    if (ngx_chat_api_body_parse(ctx) != NGX_OK) {
        ngx_chat_api_finish(ctx,
                            ngx_chat_api_bad_request(ctx,
                                                "a JSON object is required"));
        return;
    }

    ngx_chat_api_next(ctx);
}


/*
 * Moves what the reader has into ctx->buf: NGX_OK, NGX_DECLINED when the
 * body grows past chat_api_max_body_size, NGX_ERROR.
 */

static ngx_int_t
ngx_chat_api_body_collect(ngx_chat_api_ctx_t *ctx)
{
    size_t                    n;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_http_request_t       *r;
    ngx_http_request_body_t  *rb;

    r = ctx->request;
    rb = r->request_body;

    if (rb == NULL) {
        return NGX_OK;
    }

    for (cl = rb->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            return NGX_ERROR;   /* never without buffering */
        }

        n = b->last - b->pos;

        if (n == 0) {
            continue;
        }

        if (n > ctx->conf->api_max_body - ctx->len) {
            return NGX_DECLINED;
        }

        if (ctx->buf == NULL) {

            /* chunked: nginx counts content_length_n up as chunks come */

            ctx->size = ctx->conf->api_max_body;

            if (!r->headers_in.chunked && r->headers_in.content_length_n > 0)
            {
                ctx->size = (size_t) r->headers_in.content_length_n;
            }

            ctx->buf = ngx_pnalloc(r->pool, ctx->size);
            if (ctx->buf == NULL) {
                return NGX_ERROR;
            }
        }

        if (n > ctx->size - ctx->len) {
            return NGX_ERROR;   /* more than Content-Length: not possible */
        }

        ngx_memcpy(ctx->buf + ctx->len, b->pos, n);
        ctx->len += n;
        b->pos = b->last;
    }

    rb->bufs = NULL;

    return NGX_OK;
}


/* UTF-8, one object, no repeated names; jansson refuses "\u0000" */

static ngx_int_t
ngx_chat_api_body_parse(ngx_chat_api_ctx_t *ctx)
{
    json_error_t  error;

    if (ctx->len == 0) {
        return NGX_DECLINED;
    }

    ctx->body = json_loadb((char *) ctx->buf, ctx->len,
                           JSON_REJECT_DUPLICATES, &error);

    if (ctx->body == NULL) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                       "chat api: invalid JSON: %s", error.text);
        return NGX_DECLINED;
    }

    if (!json_is_object(ctx->body)) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* nginx's reader failed: its statuses, in the API's words when it can */

static ngx_int_t
ngx_chat_api_body_error(ngx_chat_api_ctx_t *ctx, ngx_int_t rc)
{
    if (ctx->request->connection->error) {
        return rc;              /* the client is gone */
    }

    switch (rc) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return ngx_chat_api_too_large(ctx->request);

    case NGX_HTTP_BAD_REQUEST:
        return ngx_chat_api_bad_request(ctx, "malformed request body");

    default:
        return rc;
    }
}


static ngx_int_t
ngx_chat_api_too_large(ngx_http_request_t *r)
{
    return ngx_chat_json_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "too_large", "request body too large");
}


ngx_int_t
ngx_chat_api_unavailable(ngx_chat_api_ctx_t *ctx)
{
    return ngx_chat_json_error(ctx->request, NGX_HTTP_SERVICE_UNAVAILABLE,
                               "unavailable", "try again later");
}


ngx_int_t
ngx_chat_api_bad_request(ngx_chat_api_ctx_t *ctx, const char *message)
{
    return ngx_chat_json_error(ctx->request, NGX_HTTP_BAD_REQUEST,
                               "bad_request", message);
}


ngx_int_t
ngx_chat_api_rate_limited(ngx_chat_api_ctx_t *ctx, time_t retry_after)
{
    u_char  *p, *value;

    value = ngx_pnalloc(ctx->request->pool, NGX_TIME_T_LEN);
    if (value == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(value, "%T", retry_after);

    if (ngx_chat_http_header(ctx->request, "Retry-After", value, p - value)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_chat_json_error(ctx->request, NGX_HTTP_TOO_MANY_REQUESTS,
                               "rate_limited", "too many requests");
}



/*
 * The string member "name" of the body: NGX_OK, NGX_DECLINED when it is
 * absent or null, NGX_ERROR when it is something else.  The value points
 * into the body, which lives as long as the request.
 */

ngx_int_t
ngx_chat_api_string(ngx_chat_api_ctx_t *ctx, const char *name,
    ngx_str_t *value)
{
    json_t  *member;

    member = json_object_get(ctx->body, name);

    if (member == NULL || json_is_null(member)) {
        return NGX_DECLINED;
    }

    if (!json_is_string(member)) {
        return NGX_ERROR;
    }

    value->data = (u_char *) json_string_value(member);
    value->len = json_string_length(member);

    return NGX_OK;
}


/* an ID as the API shows it: the decimal of a positive bigint */

ngx_int_t
ngx_chat_api_id_valid(ngx_str_t *id)
{
    if (id->len == 0 || id->len > NGX_CHAT_API_ID_LEN
        || id->data[0] < '1' || id->data[0] > '9'
        || ngx_atoof(id->data, id->len) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* an opaque key: 1 to 64 of A-Z a-z 0-9 "-" "_" (base64url) */

ngx_int_t
ngx_chat_api_key_valid(ngx_str_t *key)
{
    u_char  *p, *last;

    if (key->len == 0 || key->len > 64) {
        return NGX_ERROR;
    }

    for (p = key->data, last = p + key->len; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * 1 to max characters (code points) of text: jansson has checked the
 * UTF-8 and refused NUL; the rest is the user's business, and JSON
 * escapes it.
 */

ngx_uint_t
ngx_chat_api_text_valid(ngx_str_t *text, size_t max)
{
    u_char  *p, *last;
    size_t   n;

    if (text->len > 4 * max) {
        return 0;
    }

    n = 0;
    last = text->data + text->len;

    for (p = text->data; p < last; p++) {
        if ((*p & 0xc0) != 0x80) {
            n++;                        /* not a continuation byte */
        }
    }

    return n >= 1 && n <= max;
}


static void
ngx_chat_api_cleanup(void *data)
{
    ngx_chat_api_ctx_t  *ctx = data;

    if (ctx->query) {
        ngx_chat_pg_cancel(ctx->query);
        ctx->query = NULL;
    }

    if (ctx->cmd) {
        ngx_chat_redis_cancel(ctx->cmd);
        ctx->cmd = NULL;
    }

    if (ctx->body) {
        json_decref(ctx->body);
        ctx->body = NULL;
    }
}
