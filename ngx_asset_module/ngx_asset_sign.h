
/*
 * The local store's presigned URLs (ngx_asset_sign.c): pure functions,
 * no I/O.
 */

#ifndef _NGX_ASSET_SIGN_H_INCLUDED_
#define _NGX_ASSET_SIGN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_ASSET_SIG_LEN      43       /* base64url of 32 bytes */
#define NGX_ASSET_SHA256_LEN   64       /* hex */


/* what a URL grants: the fields of the canonical string */
typedef struct {
    ngx_str_t                  method;      /* "GET", "PUT" */
    ngx_str_t                  id;          /* the media id */
    time_t                     expires;     /* Unix seconds */
    ngx_str_t                  size;        /* decimal; empty for GET */
    ngx_str_t                  sha256;      /* hex, of a PUT; or empty */
    ngx_str_t                  type;        /* unescaped */
} ngx_asset_grant_t;


size_t ngx_asset_sign_query_len(ngx_asset_grant_t *g);
u_char *ngx_asset_sign_query(u_char *p, ngx_str_t *secret,
    ngx_asset_grant_t *g);
const char *ngx_asset_sign_verify(ngx_str_t *secret, ngx_asset_grant_t *g,
    ngx_str_t *sig, time_t now);


#endif /* _NGX_ASSET_SIGN_H_INCLUDED_ */
