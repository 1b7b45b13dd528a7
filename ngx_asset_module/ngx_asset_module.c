
/*
 * ngx_asset_module: media through presigned URLs (PROTOCOL.md, section 3).
 *
 * The chat path never carries media bytes.  "asset_api" answers
 * POST /v1/media (a media id and a presigned PUT) and GET /v1/media/{id}
 * (a presigned GET, for the uploader and members of a chat it was sent
 * in); the blob store is an nginx location with "asset_blob", where this
 * module checks the presigned URL in the access phase (method, object,
 * expiry, and for a PUT the exact size and type, before a byte of the
 * body is read) and nginx's own modules do the rest: dav stores PUTs,
 * static serves GETs, with the type the URL was signed for.
 *
 * A URL carries X-Expires (Unix seconds), X-Type, X-Size (PUT) and
 * X-Signature: base64url of HMAC-SHA256 under asset_secret over
 *
 *     METHOD "\n" media id "\n" X-Expires "\n" X-Size "\n" X-Type
 *
 * (X-Size empty for GET).  Media ids are 128 random bits in base64url:
 * opaque keys, which are also the objects' names in the store.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ngx_asset_module.h"
#include "ngx_chat_api.h"
#include "ngx_chat_event.h"


#define NGX_ASSET_ID_LEN       22       /* base64url of 16 bytes */
#define NGX_ASSET_SIG_LEN      43       /* base64url of 32 bytes */
#define NGX_ASSET_TYPE_MAX     127
#define NGX_ASSET_SWEPT        "1000"   /* media a sweep deletes */


typedef struct {
    ngx_str_t                  secret;
    time_t                     url_ttl;
    off_t                      max_size;
    ngx_array_t               *types;       /* ngx_str_t; "image/ *" */
    ngx_str_t                  blob_url;    /* what URLs start with */
    ngx_str_t                  blob_path;   /* its path: the location */
    ngx_str_t                  cdn_url;     /* downloads, if set */
    time_t                     ttl;         /* asset_ttl */
    ngx_str_t                  blob_dir;    /* the objects, for the sweep */

    ngx_uint_t                 backend;     /* NGX_ASSET_LOCAL, _S3 */
    ngx_str_t                  s3_endpoint; /* "https://host[:port]" */
    ngx_str_t                  s3_scheme;   /* from the endpoint */
    ngx_str_t                  s3_trusted;  /* CA file for https */
    ngx_asset_s3_conf_t        s3;          /* the store, as signed */
} ngx_asset_main_conf_t;


#define NGX_ASSET_LOCAL  1
#define NGX_ASSET_S3     2


typedef struct {
    ngx_flag_t                 blob;
} ngx_asset_loc_conf_t;


/* a quarter of the TTL, between a second and a minute */
#define ngx_asset_sweep_interval(amcf)                                       \
    ((ngx_msec_t) ngx_max(1, ngx_min(60, (amcf)->ttl / 4)) * 1000)


enum {
    NGX_ASSET_START = 0,
    NGX_ASSET_ROWS
};


static ngx_int_t ngx_asset_media_create(ngx_chat_api_ctx_t *ctx);
static ngx_int_t ngx_asset_media_get(ngx_chat_api_ctx_t *ctx);
static json_t *ngx_asset_url(ngx_http_request_t *r, const char *method,
    ngx_str_t *id, off_t size, ngx_str_t *type);
static json_t *ngx_asset_s3_url(ngx_http_request_t *r,
    ngx_asset_main_conf_t *amcf, const char *method, ngx_str_t *id,
    off_t size, ngx_str_t *type);
static ngx_int_t ngx_asset_sign(ngx_asset_main_conf_t *amcf,
    const char *method, ngx_str_t *id, time_t expires, ngx_str_t *size,
    ngx_str_t *type, u_char *sig);
static ngx_uint_t ngx_asset_type_allowed(ngx_asset_main_conf_t *amcf,
    ngx_str_t *type);
static ngx_int_t ngx_asset_blob_access(ngx_http_request_t *r);
static ngx_int_t ngx_asset_blob_log(ngx_http_request_t *r);
static ngx_int_t ngx_asset_blob_id(ngx_http_request_t *r,
    ngx_asset_main_conf_t *amcf, ngx_str_t *id);
static void ngx_asset_uploaded(void *data, PGresult *res);

static void ngx_asset_sweep(ngx_event_t *ev);
static void ngx_asset_swept(void *data, PGresult *res);
static ngx_int_t ngx_asset_s3_objects(PGresult *res, int n);
static void ngx_asset_s3_deleted(void);
static ngx_int_t ngx_asset_init_process(ngx_cycle_t *cycle);
static void ngx_asset_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_asset_handler(ngx_http_request_t *r);
static char *ngx_asset_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_asset_types(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_asset_init(ngx_conf_t *cf);
static void *ngx_asset_create_main_conf(ngx_conf_t *cf);
static char *ngx_asset_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_asset_init_s3(ngx_conf_t *cf, ngx_asset_main_conf_t *amcf);
static char *ngx_asset_init_s3_peer(ngx_conf_t *cf,
    ngx_asset_main_conf_t *amcf);
static void *ngx_asset_create_loc_conf(ngx_conf_t *cf);
static char *ngx_asset_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);


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

static const char  ngx_asset_expire_sql[] =
    "SELECT out_id FROM asset_expire($1, " NGX_ASSET_SWEPT ")";

static const char  ngx_asset_uploaded_sql[] =
    "UPDATE media SET uploaded_at = now() WHERE id = $1";


/* images, video, voice notes and other audio, documents */
static char  *ngx_asset_default_types[] = {
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic",
    "video/mp4", "video/webm", "video/quicktime", "video/3gpp",
    "audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac", "audio/webm",
    "audio/amr", "application/pdf", "text/plain",
    "application/msword", "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml."
        "presentation",
    "application/zip",
    NULL
};


static ngx_chat_api_route_t  ngx_asset_routes[] = {

    { NGX_HTTP_POST, ngx_string("media"),
      ngx_asset_media_create, NGX_CHAT_API_AUTH|NGX_CHAT_API_BODY },

    { NGX_HTTP_GET, ngx_string("media/{key}"),
      ngx_asset_media_get, NGX_CHAT_API_AUTH },

    { 0, ngx_null_string, NULL, 0 }
};


static ngx_conf_enum_t  ngx_asset_backends[] = {
    { ngx_string("local"), NGX_ASSET_LOCAL },
    { ngx_string("s3"), NGX_ASSET_S3 },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_asset_ttl_bounds = {
    ngx_conf_check_num_bounds, 1, 7 * 86400
};


static ngx_command_t  ngx_asset_commands[] = {

    { ngx_string("asset_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_asset_api,
      0,
      0,
      NULL },

    { ngx_string("asset_blob"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_asset_loc_conf_t, blob),
      NULL },

    { ngx_string("asset_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, secret),
      NULL },

    { ngx_string("asset_url_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, url_ttl),
      &ngx_asset_ttl_bounds },

    { ngx_string("asset_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, max_size),
      NULL },

    { ngx_string("asset_types"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_asset_types,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("asset_cdn_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, cdn_url),
      NULL },

    { ngx_string("asset_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, ttl),
      NULL },

    { ngx_string("asset_backend"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, backend),
      &ngx_asset_backends },

    { ngx_string("asset_s3_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3_endpoint),
      NULL },

    { ngx_string("asset_s3_region"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3.region),
      NULL },

    { ngx_string("asset_s3_bucket"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3.bucket),
      NULL },

    { ngx_string("asset_s3_access_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3.access_key),
      NULL },

    { ngx_string("asset_s3_secret_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3.secret_key),
      NULL },

    { ngx_string("asset_s3_path_style"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3.path_style),
      NULL },

    { ngx_string("asset_s3_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, s3_trusted),
      NULL },

    { ngx_string("asset_blob_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_asset_main_conf_t, blob_url),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_asset_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_asset_init,                        /* postconfiguration */

    ngx_asset_create_main_conf,            /* create main configuration */
    ngx_asset_init_main_conf,              /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_asset_create_loc_conf,             /* create location configuration */
    ngx_asset_merge_loc_conf               /* merge location configuration */
};


ngx_module_t  ngx_asset_module = {
    NGX_MODULE_V1,
    &ngx_asset_module_ctx,                 /* module context */
    ngx_asset_commands,                    /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_asset_init_process,                /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_asset_exit_process,                /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* --------------------------------------------------------------- the API */


static ngx_int_t
ngx_asset_handler(ngx_http_request_t *r)
{
    return ngx_chat_api_serve(r, ngx_asset_routes);
}


/* POST /v1/media {"content_type","size","sha256"?} (auth) */

static ngx_int_t
ngx_asset_media_create(ngx_chat_api_ctx_t *ctx)
{
    u_char                 *p, raw[16], size[NGX_OFF_T_LEN];
    off_t                   n;
    json_t                 *jsize, *jsha, *upload;
    ngx_str_t               params[6], type, src;
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(ctx->request, ngx_asset_module);

    if (ctx->step == NGX_ASSET_START) {

        if (ngx_chat_api_string(ctx, "content_type", &type) != NGX_OK
            || type.len == 0 || type.len > NGX_ASSET_TYPE_MAX)
        {
            return ngx_chat_api_bad_request(ctx,
                       "\"content_type\" must be a media type");
        }

        if (!ngx_asset_type_allowed(amcf, &type)) {
            return ngx_chat_api_bad_request(ctx,
                       "this content_type is not accepted");
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
                                       "too_large",
                                       "larger than asset_max_size");
        }

        jsha = json_object_get(ctx->body, "sha256");
        ngx_str_null(&params[4]);

        if (jsha) {
            params[4].data = (u_char *) json_string_value(jsha);
            params[4].len = json_string_length(jsha);

            for (p = params[4].data; p && p < params[4].data + params[4].len;
                 p++)
            {
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
                    break;
                }
            }

            if (params[4].data == NULL || params[4].len != 64
                || p != params[4].data + 64)
            {
                return ngx_chat_api_bad_request(ctx,
                           "\"sha256\" must be 64 lowercase hex digits");
            }
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
        params[2] = type;
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

    (void) ngx_chat_api_string(ctx, "content_type", &type);
    n = (off_t) json_integer_value(json_object_get(ctx->body, "size"));

    upload = ngx_asset_url(ctx->request, "PUT", &ctx->id, n, &type);
    if (upload == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_CREATED,
                               json_pack("{s:s%,s:o}", "media_id",
                                         ctx->id.data, ctx->id.len,
                                         "upload", upload));
}


/* GET /v1/media/{id} (auth): the uploader, and members of its chats */

static ngx_int_t
ngx_asset_media_get(ngx_chat_api_ctx_t *ctx)
{
    off_t       size;
    json_t     *download;
    ngx_str_t   params[2], type, v;

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

    type.data = ngx_pstrdup(ctx->request->pool, &v);
    type.len = v.len;

    ngx_chat_pg_value(ctx->res, 0, 1, &v);
    size = ngx_atoof(v.data, v.len);

    if (type.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    download = ngx_asset_url(ctx->request, "GET", &ctx->id, size, &type);
    if (download == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_chat_json_reply(ctx->request, NGX_HTTP_OK,
                               json_pack("{s:s%,s:s%,s:I,s:o}", "media_id",
                                         ctx->id.data, ctx->id.len,
                                         "content_type", type.data, type.len,
                                         "size", (json_int_t) size,
                                         "download", download));
}


/*
 * {"method","url","headers","expires_at"} for an upload, {"url",
 * "expires_at"} for a download.
 */

static json_t *
ngx_asset_url(ngx_http_request_t *r, const char *method, ngx_str_t *id,
    off_t size, ngx_str_t *type)
{
    u_char                 *url, *p, sig[NGX_ASSET_SIG_LEN];
    u_char                  sbuf[NGX_OFF_T_LEN];
    time_t                  expires;
    size_t                  len;
    ngx_str_t               ssize, *base;
    ngx_uint_t              put;
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_asset_module);

    if (amcf->backend == NGX_ASSET_S3) {
        return ngx_asset_s3_url(r, amcf, method, id, size, type);
    }

    put = (method[0] == 'P');
    expires = ngx_time() + amcf->url_ttl;

    ssize.data = sbuf;
    ssize.len = put ? (size_t) (ngx_sprintf(sbuf, "%O", size) - sbuf) : 0;

    if (ngx_asset_sign(amcf, method, id, expires, &ssize, type, sig)
        != NGX_OK)
    {
        return NULL;
    }

    base = (!put && amcf->cdn_url.len) ? &amcf->cdn_url : &amcf->blob_url;

    len = base->len + id->len
          + sizeof("?X-Expires=&X-Size=&X-Type=&X-Signature=") - 1
          + NGX_TIME_T_LEN + NGX_OFF_T_LEN
          + type->len + 2 * ngx_escape_uri(NULL, type->data, type->len,
                                           NGX_ESCAPE_ARGS)
          + NGX_ASSET_SIG_LEN;

    url = ngx_pnalloc(r->pool, len);
    if (url == NULL) {
        return NULL;
    }

    p = ngx_cpymem(url, base->data, base->len);
    p = ngx_cpymem(p, id->data, id->len);
    p = ngx_sprintf(p, "?X-Expires=%T", expires);

    if (put) {
        p = ngx_sprintf(p, "&X-Size=%V", &ssize);
    }

    p = ngx_cpymem(p, "&X-Type=", sizeof("&X-Type=") - 1);
    p = (u_char *) ngx_escape_uri(p, type->data, type->len, NGX_ESCAPE_ARGS);
    p = ngx_cpymem(p, "&X-Signature=", sizeof("&X-Signature=") - 1);
    p = ngx_cpymem(p, sig, NGX_ASSET_SIG_LEN);

    if (!put) {
        return json_pack("{s:s%,s:I}", "url", url, (size_t) (p - url),
                         "expires_at", (json_int_t) expires * 1000);
    }

    return json_pack("{s:s,s:s%,s:{s:s%},s:I}", "method", "PUT",
                     "url", url, (size_t) (p - url),
                     "headers", "Content-Type", type->data, type->len,
                     "expires_at", (json_int_t) expires * 1000);
}


/* the s3 backend: an AWS SigV4 presigned URL of the bucket's object */

static json_t *
ngx_asset_s3_url(ngx_http_request_t *r, ngx_asset_main_conf_t *amcf,
    const char *method, ngx_str_t *id, off_t size, ngx_str_t *type)
{
    int          n;
    u_char      *url, *p;
    char         path[NGX_ASSET_S3_PATH_MAX], query[NGX_ASSET_S3_QUERY_MAX];
    time_t       now;
    ngx_uint_t   put;

    put = (method[0] == 'P');
    now = ngx_time();

    n = ngx_asset_s3_presign(&amcf->s3, method, id, amcf->url_ttl,
                             put ? type : NULL, put ? size : -1,
                             path, query);
    if (n < 0) {
        return NULL;
    }

    url = ngx_pnalloc(r->pool, amcf->s3_scheme.len + sizeof("://") - 1
                               + amcf->s3.host.len + ngx_strlen(path) + 1
                               + n);
    if (url == NULL) {
        return NULL;
    }

    p = ngx_sprintf(url, "%V://%V%s?", &amcf->s3_scheme, &amcf->s3.host,
                    path);
    p = ngx_cpymem(p, query, n);

    if (!put) {
        return json_pack("{s:s%,s:I}", "url", url, (size_t) (p - url),
                         "expires_at",
                         (json_int_t) (now + amcf->url_ttl) * 1000);
    }

    /* the length is signed too: clients send exactly size bytes */

    return json_pack("{s:s,s:s%,s:{s:s%},s:I}", "method", "PUT",
                     "url", url, (size_t) (p - url),
                     "headers", "Content-Type", type->data, type->len,
                     "expires_at",
                     (json_int_t) (now + amcf->url_ttl) * 1000);
}


static ngx_int_t
ngx_asset_sign(ngx_asset_main_conf_t *amcf, const char *method,
    ngx_str_t *id, time_t expires, ngx_str_t *size, ngx_str_t *type,
    u_char *sig)
{
    u_char        buf[16 + NGX_ASSET_ID_LEN + NGX_TIME_T_LEN + NGX_OFF_T_LEN
                      + NGX_ASSET_TYPE_MAX + 8];
    u_char       *p, md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;
    ngx_str_t     src, dst;

    if (id->len != NGX_ASSET_ID_LEN || size->len > NGX_OFF_T_LEN
        || type->len > NGX_ASSET_TYPE_MAX)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "%s\n%V\n%T\n%V\n%V", method, id, expires, size,
                    type);

    if (HMAC(EVP_sha256(), amcf->secret.data, (int) amcf->secret.len,
             buf, p - buf, md, &mdlen)
        == NULL)
    {
        return NGX_ERROR;
    }

    src.data = md;
    src.len = mdlen;
    dst.data = sig;
    ngx_encode_base64url(&dst, &src);

    return dst.len == NGX_ASSET_SIG_LEN ? NGX_OK : NGX_ERROR;
}


static ngx_uint_t
ngx_asset_type_allowed(ngx_asset_main_conf_t *amcf, ngx_str_t *type)
{
    ngx_str_t   *t;
    ngx_uint_t   i;

    t = amcf->types->elts;

    for (i = 0; i < amcf->types->nelts; i++) {

        /* "image/ *": the family */

        if (t[i].len > 2 && t[i].data[t[i].len - 1] == '*') {
            if (type->len > t[i].len - 1
                && ngx_strncasecmp(type->data, t[i].data, t[i].len - 1) == 0)
            {
                return 1;
            }

            continue;
        }

        if (t[i].len == type->len
            && ngx_strncasecmp(t[i].data, type->data, type->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* ---------------------------------------------------------- the blob store */


static ngx_int_t
ngx_asset_blob_access(ngx_http_request_t *r)
{
    u_char                 *dst, *src, sig[NGX_ASSET_SIG_LEN];
    off_t                   size;
    time_t                  expires;
    size_t                  root;
    ngx_str_t               id, arg, type, ssize, given, path;
    const char             *method;
    ngx_file_info_t         fi;
    ngx_asset_loc_conf_t   *alcf;
    ngx_asset_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_asset_module);

    if (!alcf->blob) {
        return NGX_DECLINED;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_asset_module);

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        method = "GET";

    } else if (r->method == NGX_HTTP_PUT) {
        method = "PUT";

    } else {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r != r->main || ngx_asset_blob_id(r, amcf, &id) != NGX_OK) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (ngx_http_arg(r, (u_char *) "X-Expires", 9, &arg) != NGX_OK
        || (expires = ngx_atotm(arg.data, arg.len)) == NGX_ERROR
        || ngx_http_arg(r, (u_char *) "X-Type", 6, &arg) != NGX_OK
        || arg.len > 3 * NGX_ASSET_TYPE_MAX
        || ngx_http_arg(r, (u_char *) "X-Signature", 11, &given) != NGX_OK
        || given.len != NGX_ASSET_SIG_LEN)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: unsigned or malformed URL");
        return NGX_HTTP_FORBIDDEN;
    }

    type.data = ngx_pnalloc(r->pool, arg.len);
    if (type.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dst = type.data;
    src = arg.data;
    ngx_unescape_uri(&dst, &src, arg.len, NGX_UNESCAPE_URI);
    type.len = dst - type.data;

    ngx_str_null(&ssize);
    size = -1;

    if (method[0] == 'P') {
        if (ngx_http_arg(r, (u_char *) "X-Size", 6, &ssize) != NGX_OK
            || (size = ngx_atoof(ssize.data, ssize.len)) == NGX_ERROR)
        {
            return NGX_HTTP_FORBIDDEN;
        }
    }

    if (ngx_asset_sign(amcf, method, &id, expires, &ssize, &type, sig)
        != NGX_OK
        || CRYPTO_memcmp(sig, given.data, NGX_ASSET_SIG_LEN) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: bad signature for \"%V\"", &id);
        return NGX_HTTP_FORBIDDEN;
    }

    if (expires < ngx_time()) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: expired URL for \"%V\"", &id);
        return NGX_HTTP_FORBIDDEN;
    }

    if (method[0] == 'G') {
        /* served with the type it was signed for (the uploaded one) */
        r->headers_out.content_type = type;
        r->headers_out.content_type_len = type.len;
        return NGX_OK;
    }

    /* a PUT: exactly what was signed, decided before the body is read */

    if (r->headers_in.content_length_n < 0) {
        return NGX_HTTP_LENGTH_REQUIRED;
    }

    if (r->headers_in.content_length_n != size
        || r->headers_in.content_type == NULL
        || r->headers_in.content_type->value.len != type.len
        || ngx_strncasecmp(r->headers_in.content_type->value.data, type.data,
                           type.len) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: upload of \"%V\" differs from what was signed",
                      &id);
        r->expect_tested = 1;
        return NGX_HTTP_FORBIDDEN;
    }

    /* an object is written once: a replay cannot replace it */

    if (ngx_http_map_uri_to_path(r, &path, &root, 0) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_file_info(path.data, &fi) != NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: \"%V\" is uploaded already", &id);
        r->expect_tested = 1;
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_OK;
}


/* the URI must be the blob location's path and an id, nothing else */

static ngx_int_t
ngx_asset_blob_id(ngx_http_request_t *r, ngx_asset_main_conf_t *amcf,
    ngx_str_t *id)
{
    ngx_str_t  *base;

    base = &amcf->blob_path;

    if (r->uri.len != base->len + NGX_ASSET_ID_LEN
        || ngx_strncmp(r->uri.data, base->data, base->len) != 0)
    {
        return NGX_ERROR;
    }

    id->data = r->uri.data + base->len;
    id->len = NGX_ASSET_ID_LEN;

    return ngx_chat_api_key_valid(id);
}


/* an upload the store took: the media can be sent */

static ngx_int_t
ngx_asset_blob_log(ngx_http_request_t *r)
{
    ngx_str_t               id;
    ngx_asset_loc_conf_t   *alcf;
    ngx_asset_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_asset_module);

    if (!alcf->blob || r->method != NGX_HTTP_PUT
        || (r->headers_out.status != NGX_HTTP_CREATED
            && r->headers_out.status != NGX_HTTP_NO_CONTENT))
    {
        return NGX_OK;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_asset_module);

    if (ngx_asset_blob_id(r, amcf, &id) == NGX_OK) {
        (void) ngx_chat_pg_query(ngx_asset_uploaded_sql, 1, &id,
                                 ngx_asset_uploaded, NULL, ngx_cycle->log);
    }

    return NGX_OK;
}


static void
ngx_asset_uploaded(void *data, PGresult *res)
{
}


/* -------------------------------------------------------------- lifecycle */


/*
 * asset_ttl: worker 0 of each nginx deletes, in the background, media
 * past the TTL that no stored message refers to (asset_expire()), rows
 * first, then the objects of the local store.
 */

static ngx_event_t             ngx_asset_sweep_ev;
static ngx_asset_main_conf_t  *ngx_asset_sweep_conf;
static ngx_uint_t              ngx_asset_s3_batch;   /* it was full */


static ngx_int_t
ngx_asset_init_process(ngx_cycle_t *cycle)
{
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_asset_module);

    if (amcf == NULL || ngx_worker != 0) {
        return NGX_OK;
    }

    ngx_asset_sweep_conf = amcf;

    ngx_chat_event_init(&ngx_asset_sweep_ev, ngx_asset_sweep, cycle->log);
    ngx_asset_sweep_ev.cancelable = 1;
    ngx_add_timer(&ngx_asset_sweep_ev, ngx_asset_sweep_interval(amcf));

    return NGX_OK;
}


static void
ngx_asset_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_asset_sweep_ev.timer_set) {
        ngx_del_timer(&ngx_asset_sweep_ev);
    }
}


static void
ngx_asset_sweep(ngx_event_t *ev)
{
    u_char     ttl[NGX_TIME_T_LEN];
    ngx_str_t  param;

    param.data = ttl;
    param.len = ngx_sprintf(ttl, "%T", ngx_asset_sweep_conf->ttl) - ttl;

    if (ngx_chat_pg_query(ngx_asset_expire_sql, 1, &param, ngx_asset_swept,
                          NULL, ev->log)
        == NULL)
    {
        ngx_add_timer(ev, ngx_asset_sweep_interval(ngx_asset_sweep_conf));
    }
}


/* the s3 backend: the objects of the expired rows, by DELETE requests */

static ngx_int_t
ngx_asset_s3_objects(PGresult *res, int n)
{
    int          i;
    ngx_str_t    v, *id;
    ngx_pool_t  *pool;
    ngx_array_t *ids;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ids = ngx_array_create(pool, n, sizeof(ngx_str_t));
    if (ids == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &v);

        if (ngx_chat_api_key_valid(&v) != NGX_OK) {
            continue;
        }

        id = ngx_array_push(ids);
        if (id == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }

        id->len = v.len;
        id->data = ngx_pstrdup(pool, &v);

        if (id->data == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }
    }

    ngx_asset_s3_batch = (n == ngx_atoi((u_char *) NGX_ASSET_SWEPT,
                                        sizeof(NGX_ASSET_SWEPT) - 1));

    if (ngx_asset_s3_delete(&ngx_asset_sweep_conf->s3, pool, ids,
                            ngx_asset_s3_deleted)
        != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_asset_s3_deleted(void)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&ngx_asset_sweep_ev, ngx_asset_s3_batch
                  ? 1 : ngx_asset_sweep_interval(ngx_asset_sweep_conf));
}


static void
ngx_asset_swept(void *data, PGresult *res)
{
    int                     i, n;
    u_char                 *p;
    ngx_str_t               id;
    ngx_asset_main_conf_t  *amcf = ngx_asset_sweep_conf;
    u_char                  path[NGX_MAX_PATH];

    n = ngx_chat_pg_ok(res) ? PQntuples(res) : 0;

    if (n > 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_asset_sweep_ev.log, 0,
                      "asset: %d media expired", n);
    }

    if (n > 0 && amcf->backend == NGX_ASSET_S3
        && ngx_asset_s3_objects(res, n) == NGX_OK)
    {
        return;         /* the sweep goes on when the DELETEs are done */
    }

    for (i = 0; i < n && amcf->blob_dir.len; i++) {
        ngx_chat_pg_value(res, i, 0, &id);

        if (ngx_chat_api_key_valid(&id) != NGX_OK
            || amcf->blob_dir.len + id.len + 1 > sizeof(path))
        {
            continue;
        }

        p = ngx_cpymem(path, amcf->blob_dir.data, amcf->blob_dir.len);
        p = ngx_cpymem(p, id.data, id.len);
        *p = '\0';

        if (ngx_delete_file(path) == NGX_FILE_ERROR
            && ngx_errno != NGX_ENOENT)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_asset_sweep_ev.log, ngx_errno,
                          ngx_delete_file_n " \"%s\" failed", path);
        }
    }

    /* a full batch: more are waiting, go on at once */

    ngx_add_timer(&ngx_asset_sweep_ev,
                  n == ngx_atoi((u_char *) NGX_ASSET_SWEPT,
                                sizeof(NGX_ASSET_SWEPT) - 1)
                  ? 1 : ngx_asset_sweep_interval(amcf));
}


/* ------------------------------------------------------- configuration */


static char *
ngx_asset_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    clcf->handler = ngx_asset_handler;

    return NGX_CONF_OK;
}


static char *
ngx_asset_types(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_asset_main_conf_t  *amcf = conf;

    ngx_str_t   *value, *t;
    ngx_uint_t   i;

    if (amcf->types != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    amcf->types = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                   sizeof(ngx_str_t));
    if (amcf->types == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 0 || value[i].len > NGX_ASSET_TYPE_MAX
            || ngx_strlchr(value[i].data, value[i].data + value[i].len, '/')
               == NULL)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not a media type", &value[i]);
            return NGX_CONF_ERROR;
        }

        t = ngx_array_push(amcf->types);
        if (t == NULL) {
            return NGX_CONF_ERROR;
        }

        *t = value[i];
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_asset_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_asset_blob_access;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_asset_blob_log;

    return NGX_OK;
}


static void *
ngx_asset_create_main_conf(ngx_conf_t *cf)
{
    ngx_asset_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_asset_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    amcf->url_ttl = NGX_CONF_UNSET;
    amcf->max_size = NGX_CONF_UNSET;
    amcf->types = NGX_CONF_UNSET_PTR;
    amcf->ttl = NGX_CONF_UNSET;
    amcf->backend = NGX_CONF_UNSET_UINT;
    amcf->s3.path_style = NGX_CONF_UNSET;

    return amcf;
}


static char *
ngx_asset_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_asset_main_conf_t  *amcf = conf;

    u_char     *p;
    char      **d;
    ngx_str_t  *t;

    ngx_conf_init_value(amcf->url_ttl, 900);
    ngx_conf_init_value(amcf->ttl, 30 * 86400);
    if (amcf->max_size == NGX_CONF_UNSET) {
        amcf->max_size = 64 * 1024 * 1024;
    }

    if (amcf->types == NGX_CONF_UNSET_PTR) {
        amcf->types = ngx_array_create(cf->pool, 32, sizeof(ngx_str_t));
        if (amcf->types == NULL) {
            return NGX_CONF_ERROR;
        }

        for (d = ngx_asset_default_types; *d; d++) {
            t = ngx_array_push(amcf->types);
            if (t == NULL) {
                return NGX_CONF_ERROR;
            }

            t->data = (u_char *) *d;
            t->len = ngx_strlen(*d);
        }
    }

    /*
     * Without asset_secret, one made now: enough for one nginx, but the
     * URLs given out die with a reload, and other hosts cannot check them.
     */

    if (amcf->secret.data == NULL) {
        amcf->secret.data = ngx_pnalloc(cf->pool, 32);
        if (amcf->secret.data == NULL) {
            return NGX_CONF_ERROR;
        }

        if (RAND_bytes(amcf->secret.data, 32) != 1) {
            return NGX_CONF_ERROR;
        }

        amcf->secret.len = 32;

    } else if (amcf->secret.len < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_secret\" must be at least 32 bytes");
        return NGX_CONF_ERROR;
    }

    if (amcf->blob_url.data == NULL) {
        ngx_str_set(&amcf->blob_url, "/blob/");
    }

    /* "https://media.example.com/blob/" or "/blob/": the path part */

    p = amcf->blob_url.data;

    if (amcf->blob_url.len > 8 && (ngx_strncmp(p, "http://", 7) == 0
                                   || ngx_strncmp(p, "https://", 8) == 0))
    {
        p = ngx_strlchr(p + 8, amcf->blob_url.data + amcf->blob_url.len,
                        '/');
    }

    if (p == NULL || *p != '/'
        || amcf->blob_url.data[amcf->blob_url.len - 1] != '/')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_blob_url\" must be a path or an http(s) "
                           "URL ending with \"/\", not \"%V\"",
                           &amcf->blob_url);
        return NGX_CONF_ERROR;
    }

    amcf->blob_path.data = p;
    amcf->blob_path.len = amcf->blob_url.data + amcf->blob_url.len - p;

    if (ngx_asset_init_s3(cf, amcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (amcf->cdn_url.len
        && amcf->cdn_url.data[amcf->cdn_url.len - 1] != '/')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_cdn_url\" must end with \"/\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_asset_init_s3(ngx_conf_t *cf, ngx_asset_main_conf_t *amcf)
{
    u_char  *p, *last;

    ngx_conf_init_uint_value(amcf->backend, NGX_ASSET_LOCAL);
    ngx_conf_init_value(amcf->s3.path_style, 0);

    if (amcf->backend != NGX_ASSET_S3) {
        return NGX_CONF_OK;
    }

    if (amcf->s3_endpoint.len == 0 || amcf->s3.bucket.len == 0
        || amcf->s3.access_key.len == 0 || amcf->s3.secret_key.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_backend s3\" needs asset_s3_endpoint, "
                           "asset_s3_bucket, asset_s3_access_key and "
                           "asset_s3_secret_key");
        return NGX_CONF_ERROR;
    }

    if (amcf->s3.region.len == 0) {
        ngx_str_set(&amcf->s3.region, "us-east-1");
    }

    p = amcf->s3_endpoint.data;
    last = p + amcf->s3_endpoint.len;

    if (last - p > 8 && ngx_strncmp(p, "https://", 8) == 0) {
        ngx_str_set(&amcf->s3_scheme, "https");
        p += 8;

    } else if (last - p > 7 && ngx_strncmp(p, "http://", 7) == 0) {
        ngx_str_set(&amcf->s3_scheme, "http");
        p += 7;

    } else {
        p = NULL;
    }

    if (p == NULL || ngx_strlchr(p, last, '/') != NULL
        || amcf->s3.bucket.len > 63 || amcf->s3.access_key.len > 128
        || amcf->s3.secret_key.len > 128 || amcf->s3.region.len > 32
        || last - p > 255 - 64)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_s3_endpoint\" must be http(s)://host"
                           "[:port] without a path, and the bucket, keys "
                           "and region of sane lengths");
        return NGX_CONF_ERROR;
    }

    /* virtual-host style: the bucket is a part of the host name */

    amcf->s3.host.len = (amcf->s3.path_style ? 0 : amcf->s3.bucket.len + 1)
                        + (last - p);
    amcf->s3.host.data = ngx_pnalloc(cf->pool, amcf->s3.host.len);
    if (amcf->s3.host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (amcf->s3.path_style) {
        ngx_memcpy(amcf->s3.host.data, p, last - p);

    } else {
        ngx_sprintf(amcf->s3.host.data, "%V.%*s", &amcf->s3.bucket,
                    (size_t) (last - p), p);
    }

    return ngx_asset_init_s3_peer(cf, amcf);
}


/* the endpoint resolved now, and TLS to it, for the sweep's DELETEs */

static char *
ngx_asset_init_s3_peer(ngx_conf_t *cf, ngx_asset_main_conf_t *amcf)
{
    u_char               *colon;
    ngx_url_t             u;
    ngx_uint_t            https;
    ngx_asset_s3_conf_t  *s3 = &amcf->s3;

    https = (amcf->s3_scheme.len == 5);

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = amcf->s3.host;
    u.default_port = https ? 443 : 80;
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"asset_s3_endpoint\": %s \"%V\"",
                           u.err ? u.err : "cannot resolve",
                           &amcf->s3.host);
        return NGX_CONF_ERROR;
    }

    s3->addr = &u.addrs[0];

    /* the name without the port */

    colon = ngx_strlchr(amcf->s3.host.data,
                        amcf->s3.host.data + amcf->s3.host.len, ':');

    s3->tls_name = ngx_pnalloc(cf->pool, amcf->s3.host.len + 1);
    if (s3->tls_name == NULL) {
        return NGX_CONF_ERROR;
    }

    (void) ngx_cpystrn(s3->tls_name, amcf->s3.host.data,
                       (colon ? (size_t) (colon - amcf->s3.host.data)
                              : amcf->s3.host.len) + 1);

    if (!https) {
        return NGX_CONF_OK;
    }

#if (NGX_SSL)
    {
    ngx_pool_cleanup_t  *cln;

    s3->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (s3->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    s3->ssl->log = cf->log;

    if (ngx_ssl_create(s3->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(s3->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = s3->ssl;

    if (amcf->s3_trusted.len == 0) {
        ngx_str_set(&amcf->s3_trusted, "/etc/ssl/certs/ca-certificates.crt");
    }

    if (ngx_ssl_trusted_certificate(cf, s3->ssl, &amcf->s3_trusted, 5)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }
    }
#else
    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "nginx without TLS: the asset_ttl sweep cannot "
                       "delete objects of an https S3 endpoint");
#endif

    return NGX_CONF_OK;
}


static void *
ngx_asset_create_loc_conf(ngx_conf_t *cf)
{
    ngx_asset_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_asset_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    alcf->blob = NGX_CONF_UNSET;

    return alcf;
}


static char *
ngx_asset_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_asset_loc_conf_t  *prev = parent;
    ngx_asset_loc_conf_t  *conf = child;

    u_char                    *p;
    ngx_asset_main_conf_t     *amcf;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_value(conf->blob, prev->blob, 0);

    if (!conf->blob) {
        return NGX_CONF_OK;
    }

    /*
     * The directory of the objects, for the sweep: the blob location's
     * root (with its path) or alias; only a static one can be known.
     */

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_asset_module);
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (amcf->blob_dir.len || clcf->root.len == 0) {
        return NGX_CONF_OK;
    }

    if (clcf->root_lengths) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "asset_blob with variables in its root: "
                           "the asset_ttl sweep deletes rows, not objects");
        return NGX_CONF_OK;
    }

    amcf->blob_dir.len = clcf->root.len + 1
                         + (clcf->alias ? 0 : clcf->name.len);
    amcf->blob_dir.data = ngx_pnalloc(cf->pool, amcf->blob_dir.len);
    if (amcf->blob_dir.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(amcf->blob_dir.data, clcf->root.data, clcf->root.len);

    if (!clcf->alias) {
        p = ngx_cpymem(p, clcf->name.data, clcf->name.len);
    }

    if (p[-1] != '/') {
        *p++ = '/';
    }

    amcf->blob_dir.len = p - amcf->blob_dir.data;

    return NGX_CONF_OK;
}
