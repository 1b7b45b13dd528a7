
/*
 * The s3 backend: presigned URLs of the bucket's objects (AWS Signature
 * Version 4, ngx_asset_sigv4.c), and the asset_ttl sweep's deletions.
 * Those go by presigned DELETE requests, one at a time, over a connection
 * of their own (HTTP, or HTTPS with the server's certificate and name
 * checked), each bounded by NGX_ASSET_S3_TIMEOUT.  A deletion that fails
 * is logged and left to the bucket's lifecycle rule.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include "ngx_asset_module.h"
#include "ngx_asset_sigv4.h"


#define NGX_ASSET_S3_TIMEOUT     10000  /* ms, for each request */
#define NGX_ASSET_S3_PATH_MAX    256
#define NGX_ASSET_S3_QUERY_MAX   2048


typedef struct ngx_asset_s3_delete_s  ngx_asset_s3_delete_t;

typedef void (*ngx_asset_s3_stage_pt)(ngx_asset_s3_delete_t *d);


struct ngx_asset_s3_delete_s {
    ngx_peer_connection_t      peer;
    ngx_asset_s3_conf_t       *conf;
    ngx_array_t               *ids;      /* ngx_str_t, left to delete */
    ngx_uint_t                 next;
    ngx_buf_t                 *out;
    u_char                     in[256];
    size_t                     nin;
    ngx_pool_t                *pool;
    void                     (*done)(void);

    ngx_asset_s3_stage_pt      stage;    /* what an event goes on with */
    const char                *timeout;  /* what one means in the stage */
};


/* the sweep's deletions: one run at a time, in worker 0 */
static ngx_asset_s3_delete_t  ngx_asset_s3_run;


static int ngx_asset_s3_presign(ngx_asset_s3_conf_t *s3, const char *method,
    ngx_str_t *id, time_t ttl, ngx_str_t *type, off_t size, char *path,
    char *query);
static void ngx_asset_s3_next(ngx_asset_s3_delete_t *d);
static ngx_int_t ngx_asset_s3_request(ngx_asset_s3_delete_t *d,
    ngx_str_t *id);
static void ngx_asset_s3_event(ngx_event_t *ev);
static void ngx_asset_s3_connected(ngx_asset_s3_delete_t *d);
#if (NGX_SSL)
static void ngx_asset_s3_handshaked(ngx_connection_t *c);
#endif
static void ngx_asset_s3_send(ngx_asset_s3_delete_t *d);
static void ngx_asset_s3_recv(ngx_asset_s3_delete_t *d);
static void ngx_asset_s3_stage(ngx_asset_s3_delete_t *d,
    ngx_asset_s3_stage_pt stage, const char *timeout);
static void ngx_asset_s3_end(ngx_asset_s3_delete_t *d, const char *error);
static void ngx_asset_s3_close(ngx_asset_s3_delete_t *d, const char *error);


/*
 * "scheme://host/path?query", signed now, for ttl seconds; type and size
 * (>= 0) are signed when given.
 */

ngx_int_t
ngx_asset_s3_url(ngx_pool_t *pool, ngx_asset_s3_conf_t *s3,
    const char *method, ngx_str_t *id, time_t ttl, ngx_str_t *type,
    off_t size, ngx_str_t *url)
{
    int   n;
    char  path[NGX_ASSET_S3_PATH_MAX], query[NGX_ASSET_S3_QUERY_MAX];

    n = ngx_asset_s3_presign(s3, method, id, ttl, type, size, path, query);
    if (n < 0) {
        return NGX_ERROR;
    }

    url->data = ngx_pnalloc(pool, s3->scheme.len + sizeof("://?") - 1
                                  + s3->host.len + ngx_strlen(path) + n);
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    url->len = ngx_sprintf(url->data, "%V://%V%s?%*s", &s3->scheme,
                           &s3->host, path, (size_t) n, query)
               - url->data;

    return NGX_OK;
}


/*
 * The object's path (path: NGX_ASSET_S3_PATH_MAX bytes) and the query of
 * its presigned URL (query: NGX_ASSET_S3_QUERY_MAX bytes), as C strings;
 * the query's length, or -1.  The lengths of the settings were checked
 * at start.  A PUT is signed with "If-None-Match: *", S3's conditional
 * write: it creates the object or fails (412), so an upload URL cannot
 * replace what was stored, however often it is replayed.
 */

static int
ngx_asset_s3_presign(ngx_asset_s3_conf_t *s3, const char *method,
    ngx_str_t *id, time_t ttl, ngx_str_t *type, off_t size, char *path,
    char *query)
{
    char               date[17], ctype[128];
    char               host[512], akey[256], skey[256], region[64];
    ngx_tm_t           tm;
    ngx_asset_sigv4_t  req;

    if (type && type->len >= sizeof(ctype)) {
        return -1;
    }

    ngx_gmtime(ngx_time(), &tm);

    (void) ngx_sprintf((u_char *) date, "%4d%02d%02dT%02d%02d%02dZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    (void) ngx_cpystrn((u_char *) host, s3->host.data, s3->host.len + 1);
    (void) ngx_cpystrn((u_char *) akey, s3->access_key.data,
                       s3->access_key.len + 1);
    (void) ngx_cpystrn((u_char *) skey, s3->secret_key.data,
                       s3->secret_key.len + 1);
    (void) ngx_cpystrn((u_char *) region, s3->region.data,
                       s3->region.len + 1);

    if (s3->path_style) {
        (void) ngx_snprintf((u_char *) path, NGX_ASSET_S3_PATH_MAX,
                            "/%V/%V%Z", &s3->bucket, id);
    } else {
        (void) ngx_snprintf((u_char *) path, NGX_ASSET_S3_PATH_MAX,
                            "/%V%Z", id);
    }

    req.method = method;
    req.host = host;
    req.path = path;
    req.access_key = akey;
    req.secret_key = skey;
    req.region = region;
    req.amz_date = date;
    req.expires = (long) ttl;
    req.content_type = NULL;
    req.content_length = -1;
    req.if_none_match = (ngx_strcmp(method, "PUT") == 0) ? "*" : NULL;

    if (type) {
        (void) ngx_cpystrn((u_char *) ctype, type->data, type->len + 1);
        req.content_type = ctype;
    }

    if (size >= 0) {
        req.content_length = (long long) size;
    }

    return ngx_asset_sigv4_presign(&req, query, NGX_ASSET_S3_QUERY_MAX);
}


/*
 * Deletes the objects of ids (ngx_str_t, allocated from pool, which this
 * destroys at the end), then calls done, which may start the next run.
 */

void
ngx_asset_s3_delete(ngx_asset_s3_conf_t *conf, ngx_pool_t *pool,
    ngx_array_t *ids, void (*done)(void))
{
    ngx_asset_s3_delete_t  *d = &ngx_asset_s3_run;

    ngx_memzero(d, sizeof(ngx_asset_s3_delete_t));

    d->conf = conf;
    d->ids = ids;
    d->pool = pool;
    d->done = done;

    ngx_asset_s3_next(d);
}


static void
ngx_asset_s3_next(ngx_asset_s3_delete_t *d)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    for ( ;; ) {

        if (d->next == d->ids->nelts) {
            ngx_destroy_pool(d->pool);
            d->done();
            return;
        }

        if (ngx_asset_s3_request(d, (ngx_str_t *) d->ids->elts + d->next++)
            != NGX_OK)
        {
            ngx_asset_s3_close(d, "cannot make the request");
            continue;
        }

        ngx_memzero(&d->peer, sizeof(ngx_peer_connection_t));
        d->peer.sockaddr = d->conf->addr->sockaddr;
        d->peer.socklen = d->conf->addr->socklen;
        d->peer.name = &d->conf->addr->name;
        d->peer.get = ngx_event_get_peer;
        d->peer.log = ngx_cycle->log;
        d->peer.log_error = NGX_ERROR_ERR;

        rc = ngx_event_connect_peer(&d->peer);

        if (rc == NGX_ERROR || rc == NGX_DECLINED || rc == NGX_BUSY) {
            ngx_asset_s3_close(d, "cannot connect");
            continue;
        }

        c = d->peer.connection;
        c->data = d;
        c->pool = d->pool;                      /* TLS allocates from it */
        c->read->handler = ngx_asset_s3_event;
        c->write->handler = ngx_asset_s3_event;

        /* one timer bounds the whole request */

        ngx_add_timer(c->read, NGX_ASSET_S3_TIMEOUT);

        d->stage = ngx_asset_s3_connected;
        d->timeout = "timed out connecting";

        if (rc == NGX_OK) {
            ngx_asset_s3_connected(d);
        }

        return;
    }
}


/* the DELETE request of the object id, in d->out */

static ngx_int_t
ngx_asset_s3_request(ngx_asset_s3_delete_t *d, ngx_str_t *id)
{
    int   n;
    char  path[NGX_ASSET_S3_PATH_MAX], query[NGX_ASSET_S3_QUERY_MAX];

    n = ngx_asset_s3_presign(d->conf, "DELETE", id, 60, NULL, -1, path,
                             query);
    if (n < 0) {
        return NGX_ERROR;
    }

    d->out = ngx_create_temp_buf(d->pool, sizeof("DELETE ? HTTP/1.1" CRLF
                                                 "Host: " CRLF
                                                 "Connection: close"
                                                 CRLF CRLF)
                                          + ngx_strlen(path) + n
                                          + d->conf->host.len);
    if (d->out == NULL) {
        return NGX_ERROR;
    }

    d->out->last = ngx_sprintf(d->out->last,
                               "DELETE %s?%*s HTTP/1.1" CRLF
                               "Host: %V" CRLF
                               "Connection: close" CRLF CRLF,
                               path, (size_t) n, query, &d->conf->host);
    d->nin = 0;

    return NGX_OK;
}


/* every event of the connection: the stage goes on, or the time is up */

static void
ngx_asset_s3_event(ngx_event_t *ev)
{
    ngx_connection_t       *c = ev->data;
    ngx_asset_s3_delete_t  *d = c->data;

    if (ev->timedout) {
        ngx_asset_s3_end(d, d->timeout);
        return;
    }

    d->stage(d);
}


static void
ngx_asset_s3_connected(ngx_asset_s3_delete_t *d)
{
#if (NGX_SSL)

    ngx_connection_t  *c = d->peer.connection;

    if (d->conf->ssl) {
        if (ngx_ssl_create_connection(d->conf->ssl, c, NGX_SSL_CLIENT)
            != NGX_OK)
        {
            ngx_asset_s3_end(d, "no TLS");
            return;
        }

        c->sendfile = 0;

        (void) SSL_set_tlsext_host_name(c->ssl->connection,
                                        (char *) d->conf->tls_name);

        if (ngx_ssl_handshake(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_asset_s3_handshaked;
            return;
        }

        ngx_asset_s3_handshaked(c);
        return;
    }

#endif

    ngx_asset_s3_stage(d, ngx_asset_s3_send, "timed out sending");
}


#if (NGX_SSL)

static void
ngx_asset_s3_handshaked(ngx_connection_t *c)
{
    long                    rc;
    ngx_str_t               name;
    ngx_asset_s3_delete_t  *d = c->data;

    if (!c->ssl->handshaked) {
        ngx_asset_s3_end(d, "TLS handshake failed");
        return;
    }

    rc = SSL_get_verify_result(c->ssl->connection);

    name.data = d->conf->tls_name;
    name.len = ngx_strlen(d->conf->tls_name);

    if (rc != X509_V_OK || ngx_ssl_check_host(c, &name) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "asset: the S3 endpoint's certificate does not verify "
                      "(%l: %s)", rc, X509_verify_cert_error_string(rc));
        ngx_asset_s3_end(d, "untrusted certificate");
        return;
    }

    c->read->handler = ngx_asset_s3_event;
    c->write->handler = ngx_asset_s3_event;

    ngx_asset_s3_stage(d, ngx_asset_s3_send, "timed out sending");
}

#endif


static void
ngx_asset_s3_send(ngx_asset_s3_delete_t *d)
{
    ssize_t            n;
    ngx_connection_t  *c = d->peer.connection;

    while (d->out->pos < d->out->last) {
        n = c->send(c, d->out->pos, d->out->last - d->out->pos);

        if (n == NGX_AGAIN) {
            (void) ngx_handle_write_event(c->write, 0);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_asset_s3_end(d, "cannot send");
            return;
        }

        d->out->pos += n;
    }

    ngx_asset_s3_stage(d, ngx_asset_s3_recv, "timed out waiting");
}


/* "HTTP/1.1 204": the status line is all that is read */

static void
ngx_asset_s3_recv(ngx_asset_s3_delete_t *d)
{
    u_char            *eol;
    ssize_t            n;
    ngx_int_t          status;
    ngx_connection_t  *c = d->peer.connection;

    for ( ;; ) {
        n = c->recv(c, d->in + d->nin, sizeof(d->in) - d->nin);

        if (n == NGX_AGAIN) {
            (void) ngx_handle_read_event(c->read, 0);
            return;
        }

        if (n == NGX_ERROR || n == 0) {
            break;
        }

        d->nin += n;

        if (ngx_strlchr(d->in, d->in + d->nin, LF)
            || d->nin == sizeof(d->in))
        {
            break;
        }
    }

    eol = ngx_strlchr(d->in, d->in + d->nin, LF);

    if (eol == NULL || eol - d->in < 12
        || ngx_strncmp(d->in, "HTTP/1.", 7) != 0)
    {
        ngx_asset_s3_end(d, "no answer");
        return;
    }

    status = ngx_atoi(d->in + 9, 3);

    /* 204, 200, or 404: the object is gone either way */

    ngx_asset_s3_end(d, (status >= 200 && status < 300) || status == 404
                         ? NULL : "refused");
}


/* the next stage, run at once (njs's ngx_js_http model) */

static void
ngx_asset_s3_stage(ngx_asset_s3_delete_t *d, ngx_asset_s3_stage_pt stage,
    const char *timeout)
{
    d->stage = stage;
    d->timeout = timeout;

    stage(d);
}


/* the request is over (error NULL: done); on with the next object */

static void
ngx_asset_s3_end(ngx_asset_s3_delete_t *d, const char *error)
{
    ngx_asset_s3_close(d, error);
    ngx_asset_s3_next(d);
}


static void
ngx_asset_s3_close(ngx_asset_s3_delete_t *d, const char *error)
{
    ngx_str_t         *id;
    ngx_connection_t  *c;

    id = (ngx_str_t *) d->ids->elts + d->next - 1;

    if (error) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "asset: S3 DELETE of \"%V\": %s", id, error);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "asset: S3 object \"%V\" deleted", id);
    }

    c = d->peer.connection;
    d->peer.connection = NULL;

    if (c == NULL) {
        return;
    }

#if (NGX_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    ngx_close_connection(c);
}
