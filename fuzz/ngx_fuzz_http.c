
/*
 * The HTTP side of the fuzz targets: a request made from the input's text
 * as nginx's parser would leave it (method, URI and arguments, headers,
 * the body in pieces), and stand-ins for the calls our handlers make into
 * nginx's HTTP core, which record the answer: the status sent, the body's
 * bytes, whether the request was finalized.
 */

#include "ngx_fuzz_http.h"


ngx_fuzz_response_t  ngx_fuzz_response;

static void         *ngx_fuzz_loc_confs[1];
static void         *ngx_fuzz_http_main_confs[1];
static ngx_chain_t  *ngx_fuzz_body_rest;     /* pieces not yet read */


static ngx_int_t ngx_fuzz_http_header(ngx_http_request_t *r, u_char *line,
    size_t len);


/*
 * "METHOD /uri?args\nName: value\n...\n\nbody": the text up to the end of
 * the input or a NUL byte, whichever comes first.
 */

ngx_http_request_t *
ngx_fuzz_http_request(ngx_pool_t *pool, ngx_fuzz_input_t *in)
{
    u_char              *p, *last, *eol, *sp, *q;
    size_t               n, piece;
    ngx_buf_t           *b;
    ngx_uint_t           i;
    ngx_chain_t         *cl, **ll;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    static struct {
        ngx_str_t        name;
        ngx_uint_t       method;
    } methods[] = {
        { ngx_string("GET"), NGX_HTTP_GET },
        { ngx_string("HEAD"), NGX_HTTP_HEAD },
        { ngx_string("POST"), NGX_HTTP_POST },
        { ngx_string("PUT"), NGX_HTTP_PUT },
        { ngx_string("PATCH"), NGX_HTTP_PATCH },
        { ngx_string("DELETE"), NGX_HTTP_DELETE },
        { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS },
    };

    ngx_memzero(&ngx_fuzz_response, sizeof(ngx_fuzz_response_t));
    ngx_fuzz_body_rest = NULL;

    /* the text, copied so that the request owns it as nginx's buffer */

    for (n = 0; n < ngx_fuzz_left(in) && in->pos[n] != '\0'; n++) {
        /* void */
    }

    p = ngx_pnalloc(pool, n + 1);
    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    c = ngx_pcalloc(pool, sizeof(ngx_connection_t));

    if (p == NULL || r == NULL || c == NULL) {
        abort();
    }

    ngx_memcpy(p, in->pos, n);
    in->pos += ngx_min(n + 1, ngx_fuzz_left(in));
    last = p + n;

    c->fd = -1;
    c->log = &ngx_fuzz_log;
    c->pool = pool;
    c->read = ngx_pcalloc(pool, sizeof(ngx_event_t));
    c->write = ngx_pcalloc(pool, sizeof(ngx_event_t));
    c->data = r;

    if (c->read == NULL || c->write == NULL) {
        abort();
    }

    c->read->data = c;
    c->write->data = c;
    c->read->log = c->log;
    c->write->log = c->log;
    c->write->ready = 1;

    r->connection = c;
    r->pool = pool;
    r->main = r;
    r->count = 1;
    r->http_version = NGX_HTTP_VERSION_11;
    r->headers_in.content_length_n = -1;
    r->headers_out.content_length_n = -1;
    r->start_sec = ngx_time();
    r->read_event_handler = ngx_http_block_reading;

    r->ctx = ngx_pcalloc(pool, sizeof(void *) * 2);
    if (r->ctx == NULL) {
        abort();
    }

    ngx_fuzz_http_main_confs[0] = &ngx_fuzz_cmcf;
    ngx_fuzz_loc_confs[0] = &ngx_fuzz_clcf;
    r->main_conf = ngx_fuzz_http_main_confs;
    r->loc_conf = ngx_fuzz_loc_confs;

    if (ngx_list_init(&r->headers_in.headers, pool, 8,
                      sizeof(ngx_table_elt_t)) != NGX_OK
        || ngx_list_init(&r->headers_out.headers, pool, 8,
                         sizeof(ngx_table_elt_t)) != NGX_OK)
    {
        abort();
    }

    /* the request line */

    eol = ngx_strlchr(p, last, '\n');
    eol = eol ? eol : last;
    sp = ngx_strlchr(p, eol, ' ');
    sp = sp ? sp : eol;

    r->method_name.data = p;
    r->method_name.len = sp - p;
    r->method = NGX_HTTP_UNKNOWN;

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (r->method_name.len == methods[i].name.len
            && ngx_strncmp(p, methods[i].name.data, r->method_name.len) == 0)
        {
            r->method = methods[i].method;
        }
    }

    r->unparsed_uri.data = sp < eol ? sp + 1 : eol;
    r->unparsed_uri.len = eol - r->unparsed_uri.data;

    q = ngx_strlchr(r->unparsed_uri.data, eol, '?');

    r->uri.data = r->unparsed_uri.data;
    r->uri.len = (q ? q : eol) - r->uri.data;

    if (q) {
        r->args.data = q + 1;
        r->args.len = eol - r->args.data;
    }

    /* the headers, up to an empty line */

    p = eol < last ? eol + 1 : last;

    while (p < last) {
        eol = ngx_strlchr(p, last, '\n');
        eol = eol ? eol : last;

        if (eol == p) {
            p++;
            break;
        }

        if (ngx_fuzz_http_header(r, p, eol - p) != NGX_OK) {
            abort();
        }

        p = eol < last ? eol + 1 : last;
    }

    /* the body, in pieces of up to 7 bytes and the rest (as read) */

    n = last - p;

    if (n == 0) {
        return r;
    }

    if (!r->headers_in.chunked) {
        r->headers_in.content_length_n = n;
    }

    ll = &ngx_fuzz_body_rest;

    while (n) {
        piece = ngx_min(n, (size_t) (p[0] % 8 + 1));
        piece = (ll == &ngx_fuzz_body_rest) ? piece : n;

        b = ngx_calloc_buf(pool);
        cl = ngx_alloc_chain_link(pool);

        if (b == NULL || cl == NULL) {
            abort();
        }

        b->memory = 1;
        b->pos = p;
        b->last = p + piece;
        b->start = b->pos;
        b->end = b->last;

        cl->buf = b;
        cl->next = NULL;
        *ll = cl;
        ll = &cl->next;

        p += piece;
        n -= piece;
    }

    return r;
}


static ngx_int_t
ngx_fuzz_http_header(ngx_http_request_t *r, u_char *line, size_t len)
{
    u_char           *colon, *v, *last;
    ngx_table_elt_t  *h;

    last = line + len;
    colon = ngx_strlchr(line, last, ':');

    if (colon == NULL) {
        return NGX_OK;                  /* nginx refuses it: 400 */
    }

    v = colon + 1;

    while (v < last && *v == ' ') {
        v++;
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = line;
    h->key.len = colon - line;
    h->value.data = v;
    h->value.len = last - v;
    h->lowcase_key = ngx_pnalloc(r->pool, h->key.len);

    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    ngx_strlow(h->lowcase_key, h->key.data, h->key.len);

#define ngx_fuzz_header_is(name)                                              \
    (h->key.len == sizeof(name) - 1                                          \
     && ngx_strncmp(h->lowcase_key, name, sizeof(name) - 1) == 0)

    if (ngx_fuzz_header_is("authorization")) {
        r->headers_in.authorization = h;

    } else if (ngx_fuzz_header_is("content-type")) {
        r->headers_in.content_type = h;

    } else if (ngx_fuzz_header_is("transfer-encoding")) {
        r->headers_in.chunked = 1;
    }

    return NGX_OK;
}


/* ----------------------------------------------------- nginx's HTTP core */


void
ngx_http_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    if (rc == NGX_DONE) {
        r->main->count--;
        return;
    }

    ngx_fuzz_response.finalized++;
    ngx_fuzz_response.rc = rc;

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE && !ngx_fuzz_response.status) {
        ngx_fuzz_response.status = rc;  /* nginx's own error page */
    }
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    if (ngx_fuzz_response.header_sent) {
        abort();                        /* two heads for one request */
    }

    if (r->headers_out.status < 100 || r->headers_out.status > 599) {
        abort();
    }

    ngx_fuzz_response.header_sent = 1;
    ngx_fuzz_response.status = r->headers_out.status;

    return NGX_OK;
}


ngx_int_t
ngx_http_output_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    u_char       *p;
    ngx_chain_t  *cl;

    if (!ngx_fuzz_response.header_sent) {
        abort();                        /* a body before its head */
    }

    for (cl = in; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            abort();
        }

        /* every byte is read, as the socket would */

        for (p = cl->buf->pos; p < cl->buf->last; p++) {
            ngx_fuzz_response.sum += *p;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_send_special(ngx_http_request_t *r, ngx_uint_t flags)
{
    return NGX_OK;
}


ngx_int_t
ngx_http_discard_request_body(ngx_http_request_t *r)
{
    ngx_fuzz_body_rest = NULL;

    return NGX_OK;
}


/* the first piece now, the others as ngx_http_read_unbuffered_...() */

ngx_int_t
ngx_http_read_client_request_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler)
{
    ngx_http_request_body_t  *rb;

    r->main->count++;

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->request_body = rb;

    if (ngx_fuzz_body_rest) {
        rb->bufs = ngx_fuzz_body_rest;
        ngx_fuzz_body_rest = ngx_fuzz_body_rest->next;
        rb->bufs->next = NULL;
    }

    r->reading_body = (ngx_fuzz_body_rest != NULL);

    post_handler(r);

    return NGX_OK;
}


ngx_int_t
ngx_http_read_unbuffered_request_body(ngx_http_request_t *r)
{
    if (ngx_fuzz_body_rest == NULL) {
        r->reading_body = 0;
        return NGX_OK;
    }

    r->request_body->bufs = ngx_fuzz_body_rest;
    ngx_fuzz_body_rest = ngx_fuzz_body_rest->next;
    r->request_body->bufs->next = NULL;
    r->reading_body = (ngx_fuzz_body_rest != NULL);

    return NGX_OK;
}


void
ngx_http_block_reading(ngx_http_request_t *r)
{
}


void
ngx_http_test_reading(ngx_http_request_t *r)
{
}


void
ngx_http_run_posted_requests(ngx_connection_t *c)
{
}


void
ngx_http_free_request(ngx_http_request_t *r, ngx_int_t rc)
{
}


/* chat_sms_relay is not configured: no subrequest is made */

ngx_int_t
ngx_http_subrequest(ngx_http_request_t *r, ngx_str_t *uri, ngx_str_t *args,
    ngx_http_request_t **psr, ngx_http_post_subrequest_t *ps,
    ngx_uint_t flags)
{
    abort();
}
