
/*
 * ngx_asset_module: media through presigned URLs (PROTOCOL.md, section 3):
 * the directives, their configuration, and the module.  The chat path
 * never carries media bytes: "asset_api" serves the media API
 * (ngx_asset_api.c), "asset_blob" makes a location the local blob store
 * the URLs point at (ngx_asset_blob.c), and worker 0 sweeps expired media
 * (ngx_asset_sweep.c).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/rand.h>

#include "ngx_asset_module.h"


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
    ngx_asset_sweep_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_asset_sweep_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static char *
ngx_asset_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    clcf->handler = ngx_asset_api_handler;

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

    /* after dav's: so before it, as a phase's handlers run last first */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_CONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_asset_store_handler;

    ngx_asset_store_init();

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
        ngx_str_set(&amcf->s3.scheme, "https");
        p += 8;

    } else if (last - p > 7 && ngx_strncmp(p, "http://", 7) == 0) {
        ngx_str_set(&amcf->s3.scheme, "http");
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

    https = (amcf->s3.scheme.len == 5);

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
