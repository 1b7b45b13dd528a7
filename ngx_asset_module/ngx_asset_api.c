
/*
 * The media API ("asset_api", PROTOCOL.md section 3): POST /v1/media
 * announces an upload and answers a media id and a presigned PUT;
 * GET /v1/media/{id} answers a presigned GET to the uploader and to
 * members of a chat the media was sent in.  The URLs point at the local
 * store (ngx_asset_sign.c) or at the s3 backend (ngx_asset_s3.c).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_asset_module.h"
#include "ngx_asset_sign.h"
#include "ngx_chat_api.h"


enum {
    NGX_ASSET_START = 0,
    NGX_ASSET_ROWS
};


static ngx_int_t ngx_asset_media_create(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_asset_media_get(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_asset_media_sha256(ngx_chat_api_ctx_t *ctx,
    ngx_str_t *sha);
static const char *ngx_asset_media_type(ngx_chat_api_ctx_t *ctx,
    ngx_asset_main_conf_t *amcf, ngx_str_t *type);
static ngx_int_t ngx_asset_media_reply(ngx_chat_api_ctx_t *ctx,
    ngx_asset_grant_t *g, off_t size);
static json_t *ngx_asset_url(ngx_http_request_t *r, ngx_asset_grant_t *g,
    off_t size);
static ngx_int_t ngx_asset_local_url(ngx_http_request_t *r,
    ngx_asset_main_conf_t *amcf, ngx_asset_grant_t *g, ngx_str_t *url);


/*
 * $6: the s3 backend does not see uploads: its media can be sent once
 * announced (a recipient may find the object missing until it is done).
 */
static const char  ngx_asset_create_sql[] =
    "INSERT INTO media (id, owner, content_type, size, sha256, uploaded_at) "
    "VALUES ($1, $2::bigint, $3, $4::bigint, $5, "
    "        CASE WHEN $6::boolean THEN now() END)";

static const char  ngx_asset_get_sql[] =
    "SELECT out_type, out_size FROM media_get($1::bigint, $2)";


static ngx_chat_api_route_t  ngx_asset_routes[] = {

    { NGX_HTTP_POST, ngx_string("media"),
      ngx_asset_media_create, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_GET, ngx_string("media/{key}"),
      ngx_asset_media_get, NGX_CHAT_API_AUTH },

    { 0, ngx_null_string, NULL, 0 }
};


ngx_int_t
ngx_asset_api_handler(ngx_http_request_t *r)
{
    return ngx_chat_api_serve(r, ngx_asset_routes);
}


/* POST /v1/media {"content_type","size","sha256"?} (auth) */

static ngx_int_t
ngx_asset_media_create(ngx_chat_api_ctx_t *ctx)
{
    u_char                 raw[16], size[NGX_OFF_T_LEN];
    off_t                  n;
    json_t                *jsize;
    ngx_str_t              params[6], src;
    const char            *why;
    ngx_asset_grant_t      g;
    ngx_asset_main_conf_t *amcf;

    amcf = ngx_http_get_module_main_conf(ctx->request, ngx_asset_module);

    if (ctx->step == NGX_ASSET_ROWS) {
        ngx_str_set(&g.method, "PUT");
        (void) ngx_chat_api_string(ctx, "content_type", &g.type);
        (void) ngx_asset_media_sha256(ctx, &g.sha256);
        n = (off_t) json_integer_value(json_object_get(ctx->body, "size"));

        return ngx_asset_media_reply(ctx, &g, n);
    }

    why = ngx_asset_media_type(ctx, amcf, &params[2]);

    if (why) {
        return ngx_chat_api_bad_request(ctx, why);
    }

    jsize = json_object_get(ctx->body, "size");

    if (!json_is_integer(jsize) || json_integer_value(jsize) <= 0) {
        return ngx_chat_api_bad_request(ctx,
                   "\"size\" must be a positive integer");
    }

    n = (off_t) json_integer_value(jsize);

    if (n > amcf->max_size) {
        return ngx_chat_json_error(ctx->request,
                                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "too_large", "larger than asset_max_size");
    }

    if (ngx_asset_media_sha256(ctx, &params[4]) != NGX_OK) {
        return ngx_chat_api_bad_request(ctx,
                   "\"sha256\" must be 64 lowercase hex digits");
    }

    /* the id: 128 random bits, which name the object too */

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->id.data = ngx_pnalloc(ctx->request->pool, NGX_ASSET_ID_LEN + 2);
    if (ctx->id.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    src.data = raw;
    src.len = sizeof(raw);
    ngx_encode_base64url(&ctx->id, &src);

    params[0] = ctx->id;
    params[1] = ctx->user_id;
    params[3].data = size;
    params[3].len = ngx_sprintf(size, "%O", n) - size;

    if (amcf->backend == NGX_ASSET_S3) {
        ngx_str_set(&params[5], "t");

    } else {
        ngx_str_set(&params[5], "f");
    }

    ctx->step = NGX_ASSET_ROWS;

    return ngx_chat_api_query(ctx, ngx_asset_create_sql, 6, params);
}


/* NULL when "content_type" may be uploaded, else why not */

static const char *
ngx_asset_media_type(ngx_chat_api_ctx_t *ctx, ngx_asset_main_conf_t *amcf,
    ngx_str_t *type)
{
    size_t  i;

    if (ngx_chat_api_string(ctx, "content_type", type) != NGX_OK
        || type->len == 0 || type->len > NGX_ASSET_TYPE_MAX)
    {
        return "\"content_type\" must be a media type";
    }

    /*
     * Printable, and no space at either end: it is the Content-Type of
     * the upload, which nginx trims, and of the downloads.
     */

    for (i = 0; i < type->len; i++) {
        if (type->data[i] < 0x20 || type->data[i] > 0x7e) {
            return "\"content_type\" must be a media type";
        }
    }

    if (type->data[0] == ' ' || type->data[type->len - 1] == ' ') {
        return "\"content_type\" must be a media type";
    }

    if (!ngx_asset_type_in(amcf->types->elts, amcf->types->nelts, type)) {
        return "this content_type is not accepted";
    }

    return NULL;
}


/* "sha256": absent (sha empty), or 64 lowercase hex digits */

static ngx_int_t
ngx_asset_media_sha256(ngx_chat_api_ctx_t *ctx, ngx_str_t *sha)
{
    size_t   i;
    json_t  *jsha;

    ngx_str_null(sha);

    jsha = json_object_get(ctx->body, "sha256");

    if (jsha == NULL) {
        return NGX_OK;
    }

    if (!json_is_string(jsha) || json_string_length(jsha) != 64) {
        return NGX_DECLINED;
    }

    sha->data = (u_char *) json_string_value(jsha);
    sha->len = 64;

    for (i = 0; i < sha->len; i++) {
        if (!((sha->data[i] >= '0' && sha->data[i] <= '9')
              || (sha->data[i] >= 'a' && sha->data[i] <= 'f')))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* GET /v1/media/{id} (auth): the uploader, and members of its chats */

static ngx_int_t
ngx_asset_media_get(ngx_chat_api_ctx_t *ctx)
{
    off_t              size;
    ngx_str_t          params[2], v;
    ngx_asset_grant_t  g;

    if (ctx->step == NGX_ASSET_START) {
        ctx->step = NGX_ASSET_ROWS;

        params[0] = ctx->user_id;
        params[1] = ctx->id;

        return ngx_chat_api_query(ctx, ngx_asset_get_sql, 2, params);
    }

    /* no such media, or not this user's to see: the same answer */

    if (PQntuples(ctx->res) != 1) {
        return ngx_chat_json_error(ctx->request, NGX_HTTP_NOT_FOUND,
                                   "not_found", "no such media");
    }

    ngx_chat_pg_value(ctx->res, 0, 0, &v);

    g.type.data = ngx_pstrdup(ctx->request->pool, &v);
    g.type.len = v.len;

    ngx_chat_pg_value(ctx->res, 0, 1, &v);
    size = ngx_atoof(v.data, v.len);

    if (g.type.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&g.method, "GET");
    ngx_str_null(&g.sha256);

    return ngx_asset_media_reply(ctx, &g, size);
}


/*
 * 201 {"media_id","upload"} to a PUT, 200 {"media_id","content_type",
 * "size","download"} to a GET; g: the method, type and sha256
 */

static ngx_int_t
ngx_asset_media_reply(ngx_chat_api_ctx_t *ctx, ngx_asset_grant_t *g,
    off_t size)
{
    json_t  *url;

    g->id = ctx->id;

    url = ngx_asset_url(ctx->request, g, size);
    if (url == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (g->method.data[0] == 'P') {
        return ngx_chat_json_reply(ctx->request, NGX_HTTP_CREATED,
                                   json_pack("{s:s%,s:o}", "media_id",
                                             ctx->id.data, ctx->id.len,
                                             "upload", url));
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_OK,
                               json_pack("{s:s%,s:s%,s:I,s:o}", "media_id",
                                         ctx->id.data, ctx->id.len,
                                         "content_type", g->type.data,
                                         g->type.len,
                                         "size", (json_int_t) size,
                                         "download", url));
}


/*
 * {"method","url","headers","expires_at"} for an upload, {"url",
 * "expires_at"} for a download.  An s3 upload must send
 * "If-None-Match: *" too: it is signed (ngx_asset_s3.c).
 */

static json_t *
ngx_asset_url(ngx_http_request_t *r, ngx_asset_grant_t *g, off_t size)
{
    u_char                  sbuf[NGX_OFF_T_LEN];
    json_t                 *headers;
    ngx_int_t               rc;
    ngx_str_t               url;
    ngx_uint_t              put;
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_asset_module);

    put = (g->method.data[0] == 'P');

    g->expires = ngx_time() + amcf->url_ttl;
    g->size.data = sbuf;
    g->size.len = put ? (size_t) (ngx_sprintf(sbuf, "%O", size) - sbuf) : 0;

    if (amcf->backend == NGX_ASSET_S3) {
        /* the length is signed too: clients send exactly size bytes */
        rc = ngx_asset_s3_url(r->pool, &amcf->s3, (char *) g->method.data,
                              &g->id, amcf->url_ttl, put ? &g->type : NULL,
                              put ? size : -1, &url);

    } else {
        rc = ngx_asset_local_url(r, amcf, g, &url);
    }

    if (rc != NGX_OK) {
        return NULL;
    }

    if (!put) {
        return json_pack("{s:s%,s:I}", "url", url.data, url.len,
                         "expires_at", (json_int_t) g->expires * 1000);
    }

    if (amcf->backend == NGX_ASSET_S3) {
        headers = json_pack("{s:s%,s:s}", "Content-Type", g->type.data,
                            g->type.len, "If-None-Match", "*");

    } else {
        headers = json_pack("{s:s%}", "Content-Type", g->type.data,
                            g->type.len);
    }

    return json_pack("{s:s,s:s%,s:o,s:I}", "method", "PUT",
                     "url", url.data, url.len, "headers", headers,
                     "expires_at", (json_int_t) g->expires * 1000);
}


/* asset_blob_url (asset_cdn_url for downloads), the id, the signature */

static ngx_int_t
ngx_asset_local_url(ngx_http_request_t *r, ngx_asset_main_conf_t *amcf,
    ngx_asset_grant_t *g, ngx_str_t *url)
{
    u_char     *p;
    ngx_str_t  *base;

    base = (g->size.len == 0 && amcf->cdn_url.len) ? &amcf->cdn_url
                                                   : &amcf->blob_url;

    url->data = ngx_pnalloc(r->pool, base->len + g->id.len
                                     + ngx_asset_sign_query_len(g));
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(url->data, base->data, base->len);
    p = ngx_cpymem(p, g->id.data, g->id.len);
    p = ngx_asset_sign_query(p, &amcf->secret, g);

    if (p == NULL) {
        return NGX_ERROR;
    }

    url->len = p - url->data;

    return NGX_OK;
}
