
/*
 * ngx_asset_module: media through presigned URLs (PROTOCOL.md, section 3).
 * It runs on the PostgreSQL pool and auth of ngx_chat_module.so, which
 * must be loaded first.
 */

#ifndef _NGX_ASSET_MODULE_H_INCLUDED_
#define _NGX_ASSET_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* what the s3 backend's DELETE requests need (ngx_asset_s3.c) */
typedef struct {
    ngx_str_t                  host;         /* as signed, and Host */
    ngx_str_t                  bucket;
    ngx_str_t                  access_key;
    ngx_str_t                  secret_key;
    ngx_str_t                  region;
    ngx_flag_t                 path_style;
    ngx_addr_t                *addr;         /* the endpoint, resolved */
    u_char                    *tls_name;     /* SNI, certificate name */
#if (NGX_SSL)
    ngx_ssl_t                 *ssl;          /* https endpoints */
#endif
} ngx_asset_s3_conf_t;


extern ngx_module_t  ngx_asset_module;


#define NGX_ASSET_S3_PATH_MAX   256
#define NGX_ASSET_S3_QUERY_MAX  2048

int ngx_asset_s3_presign(ngx_asset_s3_conf_t *s3, const char *method,
    ngx_str_t *id, time_t expires, ngx_str_t *type, off_t size, char *path,
    char *query);
ngx_int_t ngx_asset_s3_delete(ngx_asset_s3_conf_t *conf, ngx_pool_t *pool,
    ngx_array_t *ids, void (*done)(void));


#endif /* _NGX_ASSET_MODULE_H_INCLUDED_ */
