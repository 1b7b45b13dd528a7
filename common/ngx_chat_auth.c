
/*
 * Device tokens: made here, checked here, for every caller.  PostgreSQL
 * finds a token by its SHA-256 (devices.token_hash is unique, hence
 * indexed); the hash it returns is compared once more in constant time.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ngx_chat_auth.h"


#define NGX_CHAT_AUTH_TOKEN_BYTES  32


typedef struct {
    ngx_chat_auth_handler_pt   handler;
    void                      *data;
    ngx_log_t                 *log;
    u_char                     hash[NGX_CHAT_AUTH_HASH_LEN];
} ngx_chat_auth_ctx_t;


static ngx_int_t ngx_chat_auth_hash(ngx_str_t *token, u_char *hash);
static void ngx_chat_auth_done(void *data, PGresult *res);
static ngx_int_t ngx_chat_auth_identity(ngx_chat_auth_ctx_t *ctx,
    PGresult *res, ngx_chat_auth_identity_t *identity);


/*
 * A check is also a sign of life: last_seen moves in the same statement,
 * but at most once a minute, so a busy device does not turn every call
 * into a row write.
 */

static const char  ngx_chat_auth_sql[] =
    "WITH d AS (SELECT id, user_id, token_hash, last_seen FROM devices "
    "           WHERE token_hash = $1::bytea), "
    "u AS (UPDATE devices SET last_seen = now() FROM d "
    "      WHERE devices.id = d.id AND (d.last_seen IS NULL "
    "            OR d.last_seen < now() - interval '1 minute')) "
    "SELECT user_id::text, id::text, encode(token_hash, 'hex') FROM d";


/*
 * A new token and its hash, both from the pool; the hash is in bytea's
 * text form ("\x" and hex), ready to be a query parameter.
 */

ngx_int_t
ngx_chat_auth_token(ngx_pool_t *pool, ngx_str_t *token, ngx_str_t *hash)
{
    u_char     raw[NGX_CHAT_AUTH_TOKEN_BYTES];
    ngx_str_t  src;

    if (RAND_bytes(raw, NGX_CHAT_AUTH_TOKEN_BYTES) != 1) {
        return NGX_ERROR;
    }

    token->data = ngx_pnalloc(pool,
                              ngx_base64_encoded_length(sizeof(raw)));
    hash->data = ngx_pnalloc(pool, NGX_CHAT_AUTH_HASH_LEN);

    if (token->data == NULL || hash->data == NULL) {
        ngx_explicit_memzero(raw, sizeof(raw));
        return NGX_ERROR;
    }

    src.data = raw;
    src.len = sizeof(raw);

    ngx_encode_base64url(token, &src);
    ngx_explicit_memzero(raw, sizeof(raw));

    hash->len = NGX_CHAT_AUTH_HASH_LEN;

    return ngx_chat_auth_hash(token, hash->data);
}


/* what ngx_chat_auth_token() makes: 43 characters of base64url */

ngx_uint_t
ngx_chat_auth_token_valid(ngx_str_t *token)
{
    u_char  *p, *last;

    if (token->len != NGX_CHAT_AUTH_TOKEN_LEN) {
        return 0;
    }

    last = token->data + token->len;

    for (p = token->data; p < last; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')
            || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/*
 * "Authorization: Bearer <token>" (RFC 6750; the scheme in any case):
 * NGX_OK with the token, NGX_DECLINED when there is no such header,
 * NGX_ERROR when there is one but it holds no bearer token.
 */

ngx_int_t
ngx_chat_auth_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char           *p, *last;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL) {
        return NGX_DECLINED;
    }

    p = h->value.data;
    last = p + h->value.len;

    if (last - p < 7 || ngx_strncasecmp(p, (u_char *) "Bearer ", 7) != 0) {
        return NGX_ERROR;
    }

    for (p += 7; p < last && *p == ' '; p++) { /* void */ }
    while (last > p && last[-1] == ' ') { last--; }

    if (p == last) {
        return NGX_ERROR;
    }

    token->data = p;
    token->len = last - p;

    return NGX_OK;
}


/*
 * The request's token as the module reads it (an Authorization header in
 * any of the forms it takes, else ?token=), as a key that names its
 * device and nothing else: the first 16 bytes of its SHA-256, in hex.
 * NGX_DECLINED: no token.
 */

ngx_int_t
ngx_chat_auth_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char     hash[NGX_CHAT_AUTH_HASH_LEN];
    ngx_str_t  token;

    if (ngx_chat_auth_bearer(r, &token) != NGX_OK
        && (ngx_http_arg(r, (u_char *) "token", 5, &token) != NGX_OK
            || token.len == 0))
    {
        return NGX_DECLINED;
    }

    if (ngx_chat_auth_hash(&token, hash) != NGX_OK) {
        return NGX_ERROR;
    }

    key->len = 32;
    key->data = ngx_pnalloc(r->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(key->data, hash + 2, key->len);    /* past "\x" */

    return NGX_OK;
}


/*
 * The state of a check lives in the caller's pool, so that a check the
 * caller cancels (ngx_chat_pg_cancel) leaves nothing behind.  A token of
 * the wrong shape is looked up like any other and simply not found:
 * callers that want to spare PostgreSQL test ngx_chat_auth_token_valid()
 * first.
 */

ngx_chat_pg_query_t *
ngx_chat_auth_check(ngx_str_t *token, ngx_chat_auth_handler_pt handler,
    void *data, ngx_pool_t *pool, ngx_log_t *log)
{
    ngx_str_t             param;
    ngx_chat_auth_ctx_t  *ctx;

    ctx = ngx_palloc(pool, sizeof(ngx_chat_auth_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    if (ngx_chat_auth_hash(token, ctx->hash) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "chat auth: SHA-256 failed");
        return NULL;
    }

    ctx->handler = handler;
    ctx->data = data;
    ctx->log = log;

    param.data = ctx->hash;
    param.len = NGX_CHAT_AUTH_HASH_LEN;

    return ngx_chat_pg_query(ngx_chat_auth_sql, 1, &param,
                             ngx_chat_auth_done, ctx, log);
}


/* hash: NGX_CHAT_AUTH_HASH_LEN bytes, "\x" and the hex of the SHA-256 */

static ngx_int_t
ngx_chat_auth_hash(ngx_str_t *token, u_char *hash)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;

    if (EVP_Digest(token->data, token->len, md, &n, EVP_sha256(), NULL)
        != 1 || n != 32)
    {
        return NGX_ERROR;
    }

    hash[0] = '\\';
    hash[1] = 'x';
    ngx_hex_dump(hash + 2, md, 32);

    return NGX_OK;
}


static void
ngx_chat_auth_done(void *data, PGresult *res)
{
    ngx_chat_auth_ctx_t  *ctx = data;

    ngx_int_t                 rc;
    ngx_chat_auth_identity_t  identity;

    if (!ngx_chat_pg_ok(res)) {
        ctx->handler(ctx->data, NGX_ERROR, NULL);
        return;
    }

    rc = ngx_chat_auth_identity(ctx, res, &identity);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, ctx->log, 0,
                      "chat auth: unexpected answer from PostgreSQL");
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ctx->log, 0,
                   "chat auth: token check: %i", rc);

    ctx->handler(ctx->data, rc, rc == NGX_OK ? &identity : NULL);
}


static ngx_int_t
ngx_chat_auth_identity(ngx_chat_auth_ctx_t *ctx, PGresult *res,
    ngx_chat_auth_identity_t *identity)
{
    u_char     *p;
    ngx_str_t   user, device, hash;

    if (PQntuples(res) == 0) {
        return NGX_DECLINED;
    }

    if (PQntuples(res) != 1 || PQnfields(res) != 3) {
        return NGX_ERROR;
    }

    ngx_chat_pg_value(res, 0, 2, &hash);

    /* the index found it; the bytes decide, in constant time */

    if (hash.len != NGX_CHAT_AUTH_HASH_LEN - 2) {
        return NGX_ERROR;
    }

    if (CRYPTO_memcmp(hash.data, ctx->hash + 2, hash.len) != 0) {
        return NGX_DECLINED;
    }

    ngx_chat_pg_value(res, 0, 0, &user);
    ngx_chat_pg_value(res, 0, 1, &device);

    if (user.len == 0 || user.len > NGX_INT64_LEN
        || device.len == 0 || device.len > NGX_INT64_LEN)
    {
        return NGX_ERROR;
    }

    p = identity->data;

    identity->user_id.data = p;
    identity->user_id.len = user.len;
    p = ngx_cpymem(p, user.data, user.len);

    identity->device_id.data = p;
    identity->device_id.len = device.len;
    ngx_memcpy(p, device.data, device.len);

    return NGX_OK;
}
