
/*
 * Presigned URLs (ngx_asset_module): the local store's check of a URL
 * (ngx_asset_blob_access: the id in the path, X-Expires, X-Size, X-SHA256,
 * X-Type unescaped, X-Signature, the PUT's length and type against what
 * was signed) and the SigV4 presigner's canonicalisation for S3
 * (ngx_asset_sigv4_presign).
 *
 * Input: a byte that picks what is fuzzed, then
 *
 *   0  a request to the blob location, as fuzz_api_request.c reads it
 *   1  the fields of a URL to sign, a byte's length each: type, size,
 *      sha256 (used when 64 bytes), then a byte of flags (PUT, expired);
 *      the URL we sign is then requested
 *   2  the fields of a SigV4 request, a byte's length each: path, host,
 *      content type, region, access key, secret key
 *
 * What must hold: a request is answered with a status the handler means
 * (never 500); a URL we signed is taken as signed (a PUT starts its upload
 * with the sha256 signed; an expired one is refused), for any size and
 * any type the API signs (printable, no space at either end); a
 * presigned S3 query ends with a 64-hex signature, fits its buffer, and is
 * the same when made twice.
 */

#include "ngx_fuzz_http.h"

#include "ngx_asset_module.h"
#include "ngx_asset_sign.h"
#include "ngx_asset_sigv4.h"


ngx_module_t  ngx_asset_module;

static ngx_asset_main_conf_t  ngx_fuzz_amcf;
static ngx_asset_loc_conf_t   ngx_fuzz_alcf;
static ngx_str_t              ngx_fuzz_started;    /* the sha256 signed */
static ngx_uint_t             ngx_fuzz_store_calls;


/* the store would take the body from here on */

ngx_int_t
ngx_asset_store_start(ngx_http_request_t *r, ngx_str_t *sha256)
{
    ngx_fuzz_store_calls++;
    ngx_fuzz_started = *sha256;

    return NGX_OK;
}


/* no object is in the store yet */

u_char *
ngx_http_map_uri_to_path(ngx_http_request_t *r, ngx_str_t *path,
    size_t *root_length, size_t reserved)
{
    path->len = sizeof("/nonexistent/fuzz/") + r->uri.len;
    path->data = ngx_pnalloc(r->pool, path->len + reserved);

    if (path->data == NULL) {
        return NULL;
    }

    *root_length = sizeof("/nonexistent/fuzz") - 1;

    return ngx_cpystrn(ngx_cpymem(path->data, "/nonexistent/fuzz/",
                                  sizeof("/nonexistent/fuzz/") - 1),
                       r->uri.data, r->uri.len + 1);
}


static ngx_int_t
ngx_fuzz_access(ngx_http_request_t *r)
{
    static void  *main_confs[2], *loc_confs[2];

    main_confs[0] = &ngx_fuzz_cmcf;
    main_confs[1] = &ngx_fuzz_amcf;
    loc_confs[0] = &ngx_fuzz_clcf;
    loc_confs[1] = &ngx_fuzz_alcf;

    r->main_conf = main_confs;
    r->loc_conf = loc_confs;

    ngx_fuzz_store_calls = 0;

    return ngx_asset_blob_access(r);
}


static void
ngx_fuzz_request(ngx_fuzz_input_t *in)
{
    ngx_int_t  rc;

    rc = ngx_fuzz_access(ngx_fuzz_http_request(ngx_fuzz_pool, in));

    if (rc != NGX_OK && rc != NGX_DECLINED && rc != NGX_HTTP_FORBIDDEN
        && rc != NGX_HTTP_NOT_FOUND && rc != NGX_HTTP_NOT_ALLOWED
        && rc != NGX_HTTP_LENGTH_REQUIRED)
    {
        abort();
    }
}


static void
ngx_fuzz_round_trip(ngx_fuzz_input_t *in)
{
    u_char              *url, *p, hex[NGX_ASSET_SHA256_LEN];
    size_t               len, i;
    ngx_int_t            rc;
    ngx_uint_t           flags;
    const u_char        *f;
    ngx_fuzz_input_t     req;
    ngx_asset_grant_t    g;
    ngx_http_request_t  *r;

    ngx_memzero(&g, sizeof(ngx_asset_grant_t));

    /* a type a header can carry: printable ASCII */

    len = ngx_fuzz_byte(in, 0);
    len = ngx_fuzz_take(in, ngx_min(len, NGX_ASSET_TYPE_MAX), &f);
    for (i = 0; i < len; i++) {
        if (f[i] < 0x20 || f[i] > 0x7e) {
            return;
        }
    }

    if (len && (f[0] == ' ' || f[len - 1] == ' ')) {
        return;                         /* the API refuses it */
    }

    g.type.data = (u_char *) f;
    g.type.len = len;

    /* a size of decimal digits */

    len = ngx_fuzz_take(in, ngx_fuzz_byte(in, 0) % 19, &f);
    for (i = 0; i < len; i++) {
        if (f[i] < '0' || f[i] > '9') {
            return;
        }
    }

    g.size.data = (u_char *) f;
    g.size.len = len;

    len = ngx_fuzz_take(in, ngx_fuzz_byte(in, 0), &f);
    if (len == NGX_ASSET_SHA256_LEN) {
        ngx_hex_dump(hex, (u_char *) f, NGX_ASSET_SHA256_LEN / 2);
        g.sha256.data = hex;
        g.sha256.len = NGX_ASSET_SHA256_LEN;
    }

    flags = ngx_fuzz_byte(in, 0);

    if (flags & 1) {
        ngx_str_set(&g.method, "PUT");

        if (g.size.len == 0) {
            return;                     /* a PUT's size is signed */
        }

    } else {
        ngx_str_set(&g.method, "GET");
        ngx_str_null(&g.size);
        ngx_str_null(&g.sha256);
    }

    ngx_str_set(&g.id, "AAAAAAAAAAAAAAAAAAAAAA");
    g.expires = ngx_time() + ((flags & 2) ? -1 : 3600);

    /* the request a client makes of the URL */

    len = sizeof("PUT /media/?\nContent-Type: \n") + g.id.len
          + ngx_asset_sign_query_len(&g) + g.type.len;

    url = ngx_pnalloc(ngx_fuzz_pool, len);
    if (url == NULL) {
        abort();
    }

    p = ngx_sprintf(url, "%V /media/%V", &g.method, &g.id);
    p = ngx_asset_sign_query(p, &ngx_fuzz_amcf.secret, &g);

    if (p == NULL) {
        abort();
    }

    p = ngx_sprintf(p, "\nContent-Type: %V\n", &g.type);

    req.pos = url;
    req.last = p;

    r = ngx_fuzz_http_request(ngx_fuzz_pool, &req);

    if (flags & 1) {
        r->headers_in.content_length_n = ngx_atoof(g.size.data, g.size.len);

        if (r->headers_in.content_length_n < 0) {
            return;                     /* past off_t */
        }
    }

    rc = ngx_fuzz_access(r);

    if (flags & 2) {
        if (rc != NGX_HTTP_FORBIDDEN) {
            abort();                    /* an expired URL taken */
        }

        return;
    }

    if (rc != NGX_OK) {
        abort();                        /* our own URL refused */
    }

    if ((flags & 1)
        && (ngx_fuzz_store_calls != 1
            || ngx_fuzz_started.len != g.sha256.len
            || (g.sha256.len
                && ngx_memcmp(ngx_fuzz_started.data, g.sha256.data,
                              g.sha256.len) != 0)))
    {
        abort();
    }
}


static char *
ngx_fuzz_cstr(ngx_fuzz_input_t *in)
{
    char          *s;
    size_t         len;
    const u_char  *f;

    len = ngx_fuzz_take(in, ngx_fuzz_byte(in, 0), &f);

    s = ngx_pnalloc(ngx_fuzz_pool, len + 1);
    if (s == NULL) {
        abort();
    }

    /* C strings: a NUL ends them early */
    ngx_memcpy(s, f, len);
    s[len] = '\0';

    return s;
}


static void
ngx_fuzz_sigv4(ngx_fuzz_input_t *in)
{
    int                 n, again;
    char                out[4096], out2[4096];
    size_t              i;
    ngx_asset_sigv4_t   req;

    ngx_memzero(&req, sizeof(ngx_asset_sigv4_t));

    req.method = "PUT";
    req.path = ngx_fuzz_cstr(in);
    req.host = ngx_fuzz_cstr(in);
    req.content_type = ngx_fuzz_cstr(in);
    req.region = ngx_fuzz_cstr(in);
    req.access_key = ngx_fuzz_cstr(in);
    req.secret_key = ngx_fuzz_cstr(in);
    req.amz_date = "20261208T000000Z";
    req.expires = 900;
    req.content_length = (long long) ngx_fuzz_byte(in, 0) << 20;
    req.if_none_match = (req.content_length & (1 << 20)) ? "*" : NULL;

    n = ngx_asset_sigv4_presign(&req, out, sizeof(out));

    if (n < 0) {
        return;
    }

    if ((size_t) n >= sizeof(out) || out[n] != '\0' || n < 64 + 17
        || ngx_strncmp(out + n - 64 - 17, "&X-Amz-Signature=", 17) != 0)
    {
        abort();
    }

    for (i = n - 64; i < (size_t) n; i++) {
        if (!((out[i] >= '0' && out[i] <= '9')
              || (out[i] >= 'a' && out[i] <= 'f')))
        {
            abort();
        }
    }

    again = ngx_asset_sigv4_presign(&req, out2, sizeof(out2));

    if (again != n || ngx_memcmp(out, out2, n) != 0) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_fuzz_input_t  in;

    static ngx_uint_t  init;

    if (!init) {
        init = 1;
        ngx_fuzz_init();
        ngx_fuzz_chat_start();      /* the confs the request finds */

        ngx_str_set(&ngx_fuzz_amcf.secret, "fuzz-secret");
        ngx_str_set(&ngx_fuzz_amcf.blob_path, "/media/");
        ngx_fuzz_alcf.blob = 1;
        ngx_asset_module.ctx_index = 1;
    }

    if (size < 1) {
        return 0;
    }

    in.pos = data + 1;
    in.last = data + size;

    ngx_fuzz_new_pool();

    switch (data[0] % 3) {

    case 0:
        ngx_fuzz_request(&in);
        break;

    case 1:
        ngx_fuzz_round_trip(&in);
        break;

    default:
        ngx_fuzz_sigv4(&in);
    }

    return 0;
}
