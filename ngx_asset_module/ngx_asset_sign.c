
/*
 * The local store's presigned URLs, as pure functions: no request, no
 * I/O.  A URL carries X-Expires (Unix seconds), X-Size (PUT), X-SHA256
 * (a PUT whose hash was declared), X-Type and X-Signature: base64url of
 * HMAC-SHA256 under asset_secret over
 *
 *     METHOD "\n" media id "\n" X-Expires "\n" X-Size "\n" X-SHA256 "\n"
 *     X-Type
 *
 * (X-Size and X-SHA256 empty when absent).  The type comes last, so no
 * field can pass for another.  Media ids are 128 random bits in
 * base64url: opaque keys, which are also the objects' names in the store.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_asset_module.h"
#include "ngx_asset_sign.h"


static ngx_int_t ngx_asset_sign(ngx_str_t *secret, ngx_asset_grant_t *g,
    u_char *sig);


/* the longest query ngx_asset_sign_query() writes for g */

size_t
ngx_asset_sign_query_len(ngx_asset_grant_t *g)
{
    return sizeof("?X-Expires=&X-Size=&X-SHA256=&X-Type=&X-Signature=") - 1
           + NGX_TIME_T_LEN + g->size.len + g->sha256.len
           + g->type.len + 2 * ngx_escape_uri(NULL, g->type.data, g->type.len,
                                              NGX_ESCAPE_ARGS)
           + NGX_ASSET_SIG_LEN;
}


/* "?X-Expires=...&X-Signature=..." at p; the end, or NULL */

u_char *
ngx_asset_sign_query(u_char *p, ngx_str_t *secret, ngx_asset_grant_t *g)
{
    u_char  sig[NGX_ASSET_SIG_LEN];

    if (ngx_asset_sign(secret, g, sig) != NGX_OK) {
        return NULL;
    }

    p = ngx_sprintf(p, "?X-Expires=%T", g->expires);

    if (g->size.len) {
        p = ngx_sprintf(p, "&X-Size=%V", &g->size);
    }

    if (g->sha256.len) {
        p = ngx_sprintf(p, "&X-SHA256=%V", &g->sha256);
    }

    p = ngx_cpymem(p, "&X-Type=", sizeof("&X-Type=") - 1);
    p = (u_char *) ngx_escape_uri(p, g->type.data, g->type.len,
                                  NGX_ESCAPE_ARGS);
    p = ngx_cpymem(p, "&X-Signature=", sizeof("&X-Signature=") - 1);

    return ngx_cpymem(p, sig, NGX_ASSET_SIG_LEN);
}


/*
 * NULL when sig is the signature of g and g has not expired; else why
 * the URL is refused.  The signatures are compared in constant time: how
 * long it takes tells nothing of where they differ.
 */

const char *
ngx_asset_sign_verify(ngx_str_t *secret, ngx_asset_grant_t *g,
    ngx_str_t *sig, time_t now)
{
    u_char  good[NGX_ASSET_SIG_LEN];

    if (sig->len != NGX_ASSET_SIG_LEN
        || ngx_asset_sign(secret, g, good) != NGX_OK
        || CRYPTO_memcmp(good, sig->data, NGX_ASSET_SIG_LEN) != 0)
    {
        return "bad signature";
    }

    if (g->expires < now) {
        return "expired URL";
    }

    return NULL;
}


/* sig: NGX_ASSET_SIG_LEN bytes of base64url */

static ngx_int_t
ngx_asset_sign(ngx_str_t *secret, ngx_asset_grant_t *g, u_char *sig)
{
    u_char        buf[16 + NGX_ASSET_ID_LEN + NGX_TIME_T_LEN + NGX_OFF_T_LEN
                      + NGX_ASSET_SHA256_LEN + NGX_ASSET_TYPE_MAX];
    u_char       *p, md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;
    ngx_str_t     src, dst;

    if (g->method.len > 6 || g->id.len != NGX_ASSET_ID_LEN
        || g->size.len > NGX_OFF_T_LEN
        || (g->sha256.len && g->sha256.len != NGX_ASSET_SHA256_LEN)
        || g->type.len > NGX_ASSET_TYPE_MAX)
    {
        return NGX_ERROR;
    }

    p = ngx_sprintf(buf, "%V\n%V\n%T\n%V\n%V\n%V", &g->method, &g->id,
                    g->expires, &g->size, &g->sha256, &g->type);

    if (HMAC(EVP_sha256(), secret->data, (int) secret->len, buf, p - buf,
             md, &mdlen)
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

