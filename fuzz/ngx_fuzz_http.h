
/*
 * A request for the fuzz targets and what was answered to it
 * (fuzz/ngx_fuzz_http.c).
 */

#ifndef _NGX_FUZZ_HTTP_H_INCLUDED_
#define _NGX_FUZZ_HTTP_H_INCLUDED_


#include "ngx_fuzz_chat.h"


typedef struct {
    ngx_uint_t             finalized;     /* final finalize calls */
    ngx_int_t              rc;            /* the last one's */
    ngx_uint_t             status;        /* sent, or nginx's error page */
    ngx_uint_t             sum;           /* of bytes read, a sink */
    unsigned               header_sent:1;
} ngx_fuzz_response_t;


extern ngx_fuzz_response_t  ngx_fuzz_response;


ngx_http_request_t *ngx_fuzz_http_request(ngx_pool_t *pool,
    ngx_fuzz_input_t *in);


#endif /* _NGX_FUZZ_HTTP_H_INCLUDED_ */
