
/*
 * AWS Signature Version 4, query-string form (presigned URLs), for any
 * S3-compatible store.  Plain C on OpenSSL, no nginx: t/asset_sigv4.t
 * builds it into a small program and checks it against the AWS
 * documentation's example and botocore.
 *
 *   canonical request:  METHOD \n URI \n sorted query \n
 *                       "name:value\n" per signed header \n
 *                       signed header names \n UNSIGNED-PAYLOAD
 *   string to sign:     AWS4-HMAC-SHA256 \n date-time \n scope \n
 *                       hex(SHA-256(canonical request))
 *   key:                HMAC chain "AWS4" secret -> date -> region ->
 *                       "s3" -> "aws4_request"
 */

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_asset_sigv4.h"


#define SIGV4_ALGORITHM  "AWS4-HMAC-SHA256"


typedef struct {
    char    *p;
    char    *end;
    int      overflow;
} sigv4_buf_t;


/* a signed header; they are kept in order of their names */
typedef struct {
    const char  *name;
    const char  *value;
} sigv4_header_t;

#define SIGV4_HEADERS  4


static void
sigv4_init(sigv4_buf_t *b, char *buf, size_t size)
{
    b->p = buf;
    b->end = buf + size;
    b->overflow = 0;
    *buf = '\0';
}


static void
sigv4_put(sigv4_buf_t *b, const char *s, size_t n)
{
    if ((size_t) (b->end - b->p) <= n) {
        b->overflow = 1;
        return;
    }

    memcpy(b->p, s, n);
    b->p += n;
    *b->p = '\0';
}


static void
sigv4_puts(sigv4_buf_t *b, const char *s)
{
    sigv4_put(b, s, strlen(s));
}


/* RFC 3986 encoding as SigV4 wants it: all but A-Z a-z 0-9 - _ . ~ */

static void
sigv4_encode(sigv4_buf_t *b, const char *s, int keep_slash)
{
    char                  hex[4];
    static const char     digits[] = "0123456789ABCDEF";
    const unsigned char  *u;

    for (u = (const unsigned char *) s; *u; u++) {
        if ((*u >= 'A' && *u <= 'Z') || (*u >= 'a' && *u <= 'z')
            || (*u >= '0' && *u <= '9') || *u == '-' || *u == '_'
            || *u == '.' || *u == '~' || (keep_slash && *u == '/'))
        {
            sigv4_put(b, (const char *) u, 1);
            continue;
        }

        hex[0] = '%';
        hex[1] = digits[*u >> 4];
        hex[2] = digits[*u & 0xf];
        sigv4_put(b, hex, 3);
    }
}


static void
sigv4_hex(const unsigned char *md, size_t n, char *out)
{
    size_t             i;
    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 0xf];
    }

    out[2 * n] = '\0';
}


/* the names of the signed headers, joined by sep */

static void
sigv4_names(sigv4_buf_t *b, sigv4_header_t *h, int n, const char *sep)
{
    int  i;

    for (i = 0; i < n; i++) {
        if (i) {
            sigv4_puts(b, sep);
        }

        sigv4_puts(b, h[i].name);
    }
}


static int
sigv4_hmac(const unsigned char *key, size_t klen, const char *data,
    size_t dlen, unsigned char *out)
{
    unsigned int  len;

    return HMAC(EVP_sha256(), key, (int) klen, (const unsigned char *) data,
                dlen, out, &len) != NULL && len == 32 ? 0 : -1;
}


int
ngx_asset_sigv4_presign(ngx_asset_sigv4_t *req, char *out, size_t size)
{
    int             i, n;
    char            date[9], expires[24], length[24], hash[65], sig[65];
    char            query[2048], canonical[4096], sts[512], key[256];
    unsigned char   md[32], k1[32], k2[32];
    unsigned int    mdlen;
    sigv4_buf_t     q, c, s, o;
    sigv4_header_t  h[SIGV4_HEADERS];

    if (strlen(req->amz_date) != 16 || strlen(req->secret_key) > 200) {
        return -1;
    }

    memcpy(date, req->amz_date, 8);
    date[8] = '\0';

    snprintf(expires, sizeof(expires), "%ld", req->expires);
    snprintf(length, sizeof(length), "%lld", req->content_length);

    /* the signed headers, in order */

    n = 0;

    if (req->content_length >= 0) {
        h[n].name = "content-length";
        h[n++].value = length;
    }

    if (req->content_type) {
        h[n].name = "content-type";
        h[n++].value = req->content_type;
    }

    h[n].name = "host";
    h[n++].value = req->host;

    if (req->if_none_match) {
        h[n].name = "if-none-match";
        h[n++].value = req->if_none_match;
    }

    /* the query string, its names in order */

    sigv4_init(&q, query, sizeof(query));

    sigv4_puts(&q, "X-Amz-Algorithm=" SIGV4_ALGORITHM "&X-Amz-Credential=");
    sigv4_encode(&q, req->access_key, 0);
    sigv4_puts(&q, "%2F");
    sigv4_puts(&q, date);
    sigv4_puts(&q, "%2F");
    sigv4_encode(&q, req->region, 0);
    sigv4_puts(&q, "%2Fs3%2Faws4_request&X-Amz-Date=");
    sigv4_puts(&q, req->amz_date);
    sigv4_puts(&q, "&X-Amz-Expires=");
    sigv4_puts(&q, expires);
    sigv4_puts(&q, "&X-Amz-SignedHeaders=");
    sigv4_names(&q, h, n, "%3B");

    /* the canonical request */

    sigv4_init(&c, canonical, sizeof(canonical));

    sigv4_puts(&c, req->method);
    sigv4_puts(&c, "\n");
    sigv4_encode(&c, req->path, 1);
    sigv4_puts(&c, "\n");
    sigv4_puts(&c, query);
    sigv4_puts(&c, "\n");

    for (i = 0; i < n; i++) {
        sigv4_puts(&c, h[i].name);
        sigv4_puts(&c, ":");
        sigv4_puts(&c, h[i].value);
        sigv4_puts(&c, "\n");
    }

    sigv4_puts(&c, "\n");
    sigv4_names(&c, h, n, ";");
    sigv4_puts(&c, "\nUNSIGNED-PAYLOAD");

    if (q.overflow || c.overflow) {
        return -1;
    }

    if (EVP_Digest(canonical, c.p - canonical, md, &mdlen, EVP_sha256(),
                   NULL) != 1)
    {
        return -1;
    }

    sigv4_hex(md, 32, hash);

    /* the string to sign */

    sigv4_init(&s, sts, sizeof(sts));

    sigv4_puts(&s, SIGV4_ALGORITHM "\n");
    sigv4_puts(&s, req->amz_date);
    sigv4_puts(&s, "\n");
    sigv4_puts(&s, date);
    sigv4_puts(&s, "/");
    sigv4_puts(&s, req->region);
    sigv4_puts(&s, "/s3/aws4_request\n");
    sigv4_puts(&s, hash);

    if (s.overflow) {
        return -1;
    }

    /* the key, and the signature */

    snprintf(key, sizeof(key), "AWS4%s", req->secret_key);

    if (sigv4_hmac((unsigned char *) key, strlen(key), date, 8, k1) != 0
        || sigv4_hmac(k1, 32, req->region, strlen(req->region), k2) != 0
        || sigv4_hmac(k2, 32, "s3", 2, k1) != 0
        || sigv4_hmac(k1, 32, "aws4_request", 12, k2) != 0
        || sigv4_hmac(k2, 32, sts, s.p - sts, md) != 0)
    {
        return -1;
    }

    sigv4_hex(md, 32, sig);

    sigv4_init(&o, out, size);

    sigv4_puts(&o, query);
    sigv4_puts(&o, "&X-Amz-Signature=");
    sigv4_puts(&o, sig);

    return o.overflow ? -1 : (int) (o.p - out);
}
