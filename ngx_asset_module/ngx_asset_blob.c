
/*
 * The local blob store ("asset_blob"): the access phase lets through only
 * what a presigned URL grants (ngx_asset_sign.c): the object, the method,
 * the expiry, and for a PUT the exact size and type, decided before a
 * byte of the body is read, and the hash, checked as it arrives.  A PUT
 * is then this module's (ngx_asset_store.c: written once); a GET is
 * nginx's static module's, with the type the URL was signed for.
 *
 * The store may share the web client's origin, where script could read
 * its tokens: media is served with "X-Content-Type-Options: nosniff", and
 * every type but those no browser runs script in (images, audio, video,
 * PDF, octet-stream) as an attachment in a CSP sandbox.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_asset_module.h"
#include "ngx_asset_sign.h"
#include "ngx_chat_api.h"


static ngx_int_t ngx_asset_blob_id(ngx_http_request_t *r,
    ngx_asset_main_conf_t *amcf, ngx_str_t *id);
static ngx_int_t ngx_asset_blob_grant(ngx_http_request_t *r,
    ngx_asset_grant_t *g, ngx_str_t *sig);
static ngx_int_t ngx_asset_blob_as_signed(ngx_http_request_t *r,
    ngx_asset_grant_t *g);
static ngx_int_t ngx_asset_blob_absent(ngx_http_request_t *r);
static ngx_int_t ngx_asset_blob_serve(ngx_http_request_t *r,
    ngx_asset_grant_t *g);


/* served inline: types no browser runs script in */
static ngx_str_t  ngx_asset_inline_types[] = {
    ngx_string("image/jpeg"),
    ngx_string("image/png"),
    ngx_string("image/gif"),
    ngx_string("image/webp"),
    ngx_string("image/heic"),
    ngx_string("image/heif"),
    ngx_string("image/avif"),
    ngx_string("image/bmp"),
    ngx_string("audio/*"),
    ngx_string("video/*"),
    ngx_string("application/pdf"),
    ngx_string("application/octet-stream")
};


ngx_int_t
ngx_asset_blob_access(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_str_t               sig;
    const char             *why;
    ngx_asset_grant_t       g;
    ngx_asset_loc_conf_t   *alcf;
    ngx_asset_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_asset_module);

    if (!alcf->blob) {
        return NGX_DECLINED;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_PUT))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_asset_module);

    if (r != r->main || ngx_asset_blob_id(r, amcf, &g.id) != NGX_OK) {
        return NGX_HTTP_NOT_FOUND;
    }

    rc = ngx_asset_blob_grant(r, &g, &sig);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    why = "unsigned or malformed URL";

    if (rc != NGX_OK) {
        goto refused;
    }

    why = ngx_asset_sign_verify(&amcf->secret, &g, &sig, ngx_time());

    if (why) {
        goto refused;
    }

    if (r->method != NGX_HTTP_PUT) {
        return ngx_asset_blob_serve(r, &g);
    }

    if (r->headers_in.content_length_n < 0) {
        return NGX_HTTP_LENGTH_REQUIRED;
    }

    why = "upload differs from what was signed";

    if (ngx_asset_blob_as_signed(r, &g) != NGX_OK) {
        goto refused;
    }

    /* an object is written once: a replay cannot replace it */

    rc = ngx_asset_blob_absent(r);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    why = "uploaded already";

    if (rc != NGX_OK) {
        goto refused;
    }

    if (ngx_asset_store_start(r, &g.sha256) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;

refused:

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "asset: %s, \"%V\" refused", why, &g.id);

    r->expect_tested = 1;       /* no "100 Continue": no body is wanted */

    return NGX_HTTP_FORBIDDEN;
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


/*
 * What the URL claims (g->id is set), and its signature: NGX_OK,
 * NGX_DECLINED when a part is missing or malformed, or NGX_ERROR.
 */

static ngx_int_t
ngx_asset_blob_grant(ngx_http_request_t *r, ngx_asset_grant_t *g,
    ngx_str_t *sig)
{
    u_char     *dst, *src;
    ngx_str_t   arg;

    if (r->method == NGX_HTTP_PUT) {
        ngx_str_set(&g->method, "PUT");

    } else {
        ngx_str_set(&g->method, "GET");
    }

    ngx_str_null(&g->size);
    ngx_str_null(&g->sha256);

    if (r->method == NGX_HTTP_PUT
        && ngx_http_arg(r, (u_char *) "X-SHA256", 8, &g->sha256) == NGX_OK
        && g->sha256.len != NGX_ASSET_SHA256_LEN)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_arg(r, (u_char *) "X-Expires", 9, &arg) != NGX_OK
        || (g->expires = ngx_atotm(arg.data, arg.len)) == NGX_ERROR
        || (r->method == NGX_HTTP_PUT
            && ngx_http_arg(r, (u_char *) "X-Size", 6, &g->size) != NGX_OK)
        || ngx_http_arg(r, (u_char *) "X-Signature", 11, sig) != NGX_OK
        || ngx_http_arg(r, (u_char *) "X-Type", 6, &arg) != NGX_OK
        || arg.len > 3 * NGX_ASSET_TYPE_MAX)
    {
        return NGX_DECLINED;
    }

    g->type.data = ngx_pnalloc(r->pool, arg.len);
    if (g->type.data == NULL) {
        return NGX_ERROR;
    }

    dst = g->type.data;
    src = arg.data;
    ngx_unescape_uri(&dst, &src, arg.len, 0);   /* an argument: a "?" too */
    g->type.len = dst - g->type.data;

    return NGX_OK;
}


/* the length and type of a PUT, exactly as signed */

static ngx_int_t
ngx_asset_blob_as_signed(ngx_http_request_t *r, ngx_asset_grant_t *g)
{
    ngx_table_elt_t  *type;

    type = r->headers_in.content_type;

    if (r->headers_in.content_length_n != ngx_atoof(g->size.data, g->size.len)
        || type == NULL
        || type->value.len != g->type.len
        || ngx_strncasecmp(type->value.data, g->type.data, g->type.len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* NGX_OK when the object is not in the store, NGX_DECLINED when it is */

static ngx_int_t
ngx_asset_blob_absent(ngx_http_request_t *r)
{
    size_t           root;
    ngx_str_t        path;
    ngx_file_info_t  fi;

    if (ngx_http_map_uri_to_path(r, &path, &root, 0) == NULL) {
        return NGX_ERROR;
    }

    return ngx_file_info(path.data, &fi) == NGX_FILE_ERROR
           ? NGX_OK : NGX_DECLINED;
}


/* a GET: the type it was signed for (the uploaded one), never sniffed */

static ngx_int_t
ngx_asset_blob_serve(ngx_http_request_t *r, ngx_asset_grant_t *g)
{
    r->headers_out.content_type = g->type;
    r->headers_out.content_type_len = g->type.len;

    if (ngx_chat_http_header(r, "X-Content-Type-Options",
                             (u_char *) "nosniff", 7)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_asset_type_in(ngx_asset_inline_types,
                          sizeof(ngx_asset_inline_types) / sizeof(ngx_str_t),
                          &g->type))
    {
        return NGX_OK;
    }

    /*
     * HTML, SVG, XML, script, text...: saved, not shown; and if a browser
     * shows it anyway, in a sandbox: a unique origin, no script.
     */

    if (ngx_chat_http_header(r, "Content-Disposition",
                             (u_char *) "attachment", 10)
        != NGX_OK
        || ngx_chat_http_header(r, "Content-Security-Policy",
                                (u_char *) "default-src 'none'; sandbox", 27)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/* whether type is one of list (n types; "image/ *" is a family) */

ngx_uint_t
ngx_asset_type_in(ngx_str_t *list, ngx_uint_t n, ngx_str_t *type)
{
    ngx_str_t   *t;
    ngx_uint_t   i;

    for (i = 0; i < n; i++) {
        t = &list[i];

        if (t->len > 2 && t->data[t->len - 1] == '*') {
            if (type->len > t->len - 1
                && ngx_strncasecmp(type->data, t->data, t->len - 1) == 0)
            {
                return 1;
            }

            continue;
        }

        if (t->len == type->len
            && ngx_strncasecmp(t->data, type->data, type->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
