
/*
 * The local store's writes: a PUT that ngx_asset_blob.c let through is
 * read into a temporary file (client_body_temp_path), its SHA-256 checked
 * as the bytes arrive when one was declared, and only then linked to the
 * object's name.  link() fails when the name exists, so an object is
 * written once: of two PUTs of the same object, however close, one
 * stores and the other is refused, and nothing is ever replaced.  (The
 * dav module renames over the target: a replay would swap media already
 * sent.)  A body that does not hash to the declared value is refused
 * before it is linked, and its temporary file is deleted with the
 * request.  The PUT is answered 201 once PostgreSQL has marked the media
 * uploaded, so the media can be used as soon as the client hears of it;
 * an object that could not be marked is unlinked and the PUT answered
 * 503, so the same URL can be tried again.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_asset_module.h"
#include "ngx_asset_sign.h"
#include "ngx_chat_api.h"


typedef struct {
    EVP_MD_CTX                *sha;         /* NULL: none was declared */
    u_char                     want[NGX_ASSET_SHA256_LEN];
} ngx_asset_store_ctx_t;


/* an object stored, while its mark is in flight: outlives its request */

typedef struct {
    ngx_http_request_t        *request;     /* NULL: it went away */
    ngx_pool_cleanup_t        *cleanup;
    u_char                    *path;        /* the object, 0-terminated */
} ngx_asset_store_mark_t;


static void ngx_asset_store_body(ngx_http_request_t *r);
static ngx_int_t ngx_asset_store_link(ngx_http_request_t *r,
    u_char *temp, u_char *path);
static ngx_int_t ngx_asset_store_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_asset_store_hashed(ngx_http_request_t *r,
    ngx_asset_store_ctx_t *ctx);
static void ngx_asset_store_cleanup(void *data);
static void ngx_asset_store_mark(ngx_http_request_t *r, ngx_str_t *path);
static void ngx_asset_store_marked(void *data, PGresult *res);
static void ngx_asset_store_gone(void *data);
static void ngx_asset_store_undo(ngx_asset_store_mark_t *mark,
    ngx_log_t *log);


static const char  ngx_asset_uploaded_sql[] =
    "UPDATE media SET uploaded_at = now() WHERE id = $1";


static ngx_http_request_body_filter_pt  ngx_asset_store_next_body_filter;


/* postconfiguration */

void
ngx_asset_store_init(void)
{
    ngx_asset_store_next_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_asset_store_body_filter;
}


/*
 * Called by the access check for a PUT it let through: the upload is
 * this module's, with the hash it must have (sha256 empty: none).
 */

ngx_int_t
ngx_asset_store_start(ngx_http_request_t *r, ngx_str_t *sha256)
{
    ngx_pool_cleanup_t     *cln;
    ngx_asset_store_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_asset_store_ctx_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_asset_store_ctx_t));

    cln->handler = ngx_asset_store_cleanup;
    ngx_http_set_ctx(r, ctx, ngx_asset_module);

    if (sha256->len == 0) {
        return NGX_OK;
    }

    ngx_memcpy(ctx->want, sha256->data, NGX_ASSET_SHA256_LEN);

    ctx->sha = EVP_MD_CTX_new();

    return ctx->sha != NULL
           && EVP_DigestInit_ex(ctx->sha, EVP_sha256(), NULL) == 1
           ? NGX_OK : NGX_ERROR;
}


/*
 * The content phase of a PUT the access check let through; it runs
 * before dav's, which would rename over an object.
 */

ngx_int_t
ngx_asset_store_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_PUT
        || ngx_http_get_module_ctx(r, ngx_asset_module) == NULL)
    {
        return NGX_DECLINED;
    }

    r->request_body_in_file_only = 1;
    r->request_body_in_persistent_file = 1;
    r->request_body_in_clean_file = 1;
    r->request_body_file_log_level = 0;

    rc = ngx_http_read_client_request_body(r, ngx_asset_store_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the whole body is in its temporary file, and hashed as declared */

static void
ngx_asset_store_body(ngx_http_request_t *r)
{
    size_t     root;
    ngx_int_t  rc;
    ngx_str_t  path;

    if (r->request_body == NULL || r->request_body->temp_file == NULL
        || ngx_http_map_uri_to_path(r, &path, &root, 0) == NULL)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_asset_store_link(r, r->request_body->temp_file->file.name.data,
                              path.data);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: \"%V\" was stored by another upload first, "
                      "refused", &r->uri);
        ngx_http_finalize_request(r, NGX_HTTP_FORBIDDEN);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_asset_store_mark(r, &path);
}


/*
 * The media can be sent once it is marked uploaded (the URI is the blob
 * location's and an id): the PUT waits for that.
 */

static void
ngx_asset_store_mark(ngx_http_request_t *r, ngx_str_t *path)
{
    ngx_str_t                id;
    ngx_asset_store_mark_t  *mark;

    id.data = r->uri.data + r->uri.len - NGX_ASSET_ID_LEN;
    id.len = NGX_ASSET_ID_LEN;

    mark = ngx_alloc(sizeof(ngx_asset_store_mark_t) + path->len + 1,
                     r->connection->log);
    if (mark == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    mark->path = (u_char *) &mark[1];
    (void) ngx_cpystrn(mark->path, path->data, path->len + 1);
    mark->request = r;

    mark->cleanup = ngx_pool_cleanup_add(r->pool, 0);

    if (mark->cleanup != NULL) {
        mark->cleanup->handler = ngx_asset_store_gone;
        mark->cleanup->data = mark;

        if (ngx_chat_pg_query(ngx_asset_uploaded_sql, 1, &id,
                              ngx_asset_store_marked, mark, ngx_cycle->log)
            != NULL)
        {
            return;
        }

        mark->cleanup->handler = NULL;
    }

    ngx_asset_store_undo(mark, r->connection->log);
    ngx_http_finalize_request(r, NGX_HTTP_SERVICE_UNAVAILABLE);
}


static void
ngx_asset_store_marked(void *data, PGresult *res)
{
    ngx_int_t                rc;
    ngx_http_request_t      *r;
    ngx_asset_store_mark_t  *mark = data;

    r = mark->request;

    if (r) {
        mark->cleanup->handler = NULL;
    }

    if (res && ngx_chat_pg_ok(res) && ngx_strcmp(PQcmdTuples(res), "1") == 0) {
        rc = NGX_HTTP_CREATED;
        ngx_free(mark);

    } else {
        /* not usable: the object goes, the URL may be used again */

        rc = res && ngx_chat_pg_ok(res) ? NGX_HTTP_NOT_FOUND
                                        : NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_asset_store_undo(mark, r ? r->connection->log : ngx_cycle->log);
    }

    if (r == NULL) {
        return;
    }

    if (rc != NGX_HTTP_CREATED) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    r->headers_out.status = NGX_HTTP_CREATED;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    ngx_http_finalize_request(r, ngx_http_send_header(r));
}


/* the client went away before the mark's answer: the mark goes on */

static void
ngx_asset_store_gone(void *data)
{
    ngx_asset_store_mark_t  *mark = data;

    mark->request = NULL;
}


static void
ngx_asset_store_undo(ngx_asset_store_mark_t *mark, ngx_log_t *log)
{
    if (ngx_delete_file(mark->path) == NGX_FILE_ERROR
        && ngx_errno != NGX_ENOENT)
    {
        ngx_log_error(NGX_LOG_CRIT, log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", mark->path);

    } else {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "asset: \"%s\" could not be marked uploaded, "
                      "removed", mark->path);
    }

    ngx_free(mark);
}


/*
 * The temporary file under the object's name, if that name is free:
 * NGX_OK, NGX_DECLINED when it is taken, or NGX_ERROR.  A
 * client_body_temp_path on another file system costs a copy beside the
 * object first.
 */

static ngx_int_t
ngx_asset_store_link(ngx_http_request_t *r, u_char *temp, u_char *path)
{
    u_char           *copy;
    ngx_err_t         err;
    ngx_int_t         rc;
    ngx_copy_file_t   cf;

    if (link((char *) temp, (char *) path) == 0) {
        return NGX_OK;
    }

    err = ngx_errno;

    if (err == NGX_EEXIST) {
        return NGX_DECLINED;
    }

    if (err != NGX_EXDEV) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, err,
                      "link() \"%s\" to \"%s\" failed", temp, path);
        return NGX_ERROR;
    }

    copy = ngx_pnalloc(r->pool, ngx_strlen(path) + sizeof(".") - 1
                                + NGX_INT64_LEN + sizeof(".tmp"));
    if (copy == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf(copy, "%s.%uA.tmp%Z", path, r->connection->number);

    cf.size = r->request_body->temp_file->file.offset;
    cf.buf_size = 0;
    cf.access = NGX_FILE_OWNER_ACCESS;
    cf.time = -1;
    cf.log = r->connection->log;

    if (ngx_copy_file(temp, copy, &cf) != NGX_OK) {
        (void) ngx_delete_file(copy);
        return NGX_ERROR;
    }

    rc = ngx_asset_store_link(r, copy, path);

    if (ngx_delete_file(copy) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_CRIT, r->connection->log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", copy);
    }

    return rc;
}


/* the body's SHA-256, as it arrives; checked before the last byte is kept */

static ngx_int_t
ngx_asset_store_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    ngx_asset_store_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_asset_module);

    if (ctx == NULL || ctx->sha == NULL) {
        return ngx_asset_store_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_size(b) && !ngx_buf_in_memory(b)) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (EVP_DigestUpdate(ctx->sha, b->pos, b->last - b->pos) != 1) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (b->last_buf && ngx_asset_store_hashed(r, ctx) != NGX_OK) {
            return NGX_HTTP_FORBIDDEN;
        }
    }

    return ngx_asset_store_next_body_filter(r, in);
}


static ngx_int_t
ngx_asset_store_hashed(ngx_http_request_t *r, ngx_asset_store_ctx_t *ctx)
{
    u_char        md[EVP_MAX_MD_SIZE], hex[2 * EVP_MAX_MD_SIZE];
    unsigned int  len;

    if (EVP_DigestFinal_ex(ctx->sha, md, &len) != 1
        || len * 2 != NGX_ASSET_SHA256_LEN)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, md, len);

    if (ngx_memcmp(hex, ctx->want, NGX_ASSET_SHA256_LEN) != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "asset: the body of \"%V\" is not the declared "
                      "sha256, refused", &r->uri);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_asset_store_cleanup(void *data)
{
    ngx_asset_store_ctx_t  *ctx = data;

    EVP_MD_CTX_free(ctx->sha);      /* NULL: nothing */
}

