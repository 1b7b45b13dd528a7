
/*
 * AWS Signature Version 4 presigned URLs (ngx_asset_sigv4.c): plain C on
 * OpenSSL, so that tests can build it alone.
 */

#ifndef _NGX_ASSET_SIGV4_H_INCLUDED_
#define _NGX_ASSET_SIGV4_H_INCLUDED_


#include <stddef.h>


typedef struct {
    const char   *method;           /* "GET", "PUT" */
    const char   *host;             /* as the Host header: name[:port] */
    const char   *path;             /* "/bucket/key" or "/key", unencoded */
    const char   *access_key;
    const char   *secret_key;
    const char   *region;
    const char   *amz_date;         /* "20130524T000000Z" (UTC) */
    long          expires;          /* seconds, 1 to 604800 */
    const char   *content_type;     /* signed if not NULL */
    long long     content_length;   /* signed if >= 0 */
    const char   *if_none_match;    /* signed if not NULL: "*" */
} ngx_asset_sigv4_t;


/*
 * The query string of the presigned URL (no "?"), X-Amz-Signature last,
 * into out; its length, or -1 when it does not fit or OpenSSL fails.
 */
int ngx_asset_sigv4_presign(ngx_asset_sigv4_t *req, char *out, size_t size);


#endif /* _NGX_ASSET_SIGV4_H_INCLUDED_ */
