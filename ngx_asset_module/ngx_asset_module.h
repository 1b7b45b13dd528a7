
/*
 * ngx_asset_module: media through presigned URLs (PROTOCOL.md, section 3).
 * It runs on the PostgreSQL pool and auth of ngx_chat_module.so, which
 * must be loaded first.
 *
 *   ngx_asset_module.c   directives, configuration, the module
 *   ngx_asset_api.c      POST /v1/media, GET /v1/media/{id} (asset_api)
 *   ngx_asset_sign.c     the local store's presigned URLs (pure)
 *   ngx_asset_blob.c     the local store's check of them (asset_blob),
 *                        and how it serves media
 *   ngx_asset_store.c    the local store's writes: once, as declared
 *   ngx_asset_sweep.c    asset_ttl: expired media, rows then objects
 *   ngx_asset_s3.c       the s3 backend: presigned URLs, DELETEs
 *   ngx_asset_sigv4.c    AWS Signature Version 4 (plain C)
 */

#ifndef _NGX_ASSET_MODULE_H_INCLUDED_
#define _NGX_ASSET_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_ASSET_ID_LEN       22       /* base64url of 16 bytes */
#define NGX_ASSET_TYPE_MAX     127

#define NGX_ASSET_LOCAL        1        /* asset_backend */
#define NGX_ASSET_S3           2


/* what the s3 backend signs and its DELETE requests need */
typedef struct {
    ngx_str_t                  host;         /* as signed, and Host */
    ngx_str_t                  bucket;
    ngx_str_t                  access_key;
    ngx_str_t                  secret_key;
    ngx_str_t                  region;
    ngx_flag_t                 path_style;
    ngx_str_t                  scheme;       /* "http", "https" */
    ngx_addr_t                *addr;         /* the endpoint, resolved */
    u_char                    *tls_name;     /* SNI, certificate name */
#if (NGX_SSL)
    ngx_ssl_t                 *ssl;          /* https endpoints */
#endif
} ngx_asset_s3_conf_t;


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
    ngx_str_t                  s3_trusted;  /* CA file for https */
    ngx_asset_s3_conf_t        s3;          /* the store, as signed */
} ngx_asset_main_conf_t;


typedef struct {
    ngx_flag_t                 blob;
} ngx_asset_loc_conf_t;


extern ngx_module_t  ngx_asset_module;


/* ngx_asset_module.c */
ngx_uint_t ngx_asset_type_in(ngx_str_t *list, ngx_uint_t n, ngx_str_t *type);

/* ngx_asset_api.c */
ngx_int_t ngx_asset_api_handler(ngx_http_request_t *r);

/* ngx_asset_blob.c */
ngx_int_t ngx_asset_blob_access(ngx_http_request_t *r);

/* ngx_asset_store.c */
void ngx_asset_store_init(void);
ngx_int_t ngx_asset_store_handler(ngx_http_request_t *r);
ngx_int_t ngx_asset_store_start(ngx_http_request_t *r, ngx_str_t *sha256);

/* ngx_asset_sweep.c */
ngx_int_t ngx_asset_sweep_init_process(ngx_cycle_t *cycle);
void ngx_asset_sweep_exit_process(ngx_cycle_t *cycle);

/* ngx_asset_s3.c */
ngx_int_t ngx_asset_s3_url(ngx_pool_t *pool, ngx_asset_s3_conf_t *s3,
    const char *method, ngx_str_t *id, time_t ttl, ngx_str_t *type,
    off_t size, ngx_str_t *url);
void ngx_asset_s3_delete(ngx_asset_s3_conf_t *conf, ngx_pool_t *pool,
    ngx_array_t *ids, void (*done)(void));


#endif /* _NGX_ASSET_MODULE_H_INCLUDED_ */
