
/*
 * The HTTP API (chat_api) as a client's request reaches it: the routes
 * and the IDs in paths, query arguments, the Bearer parser and ?token=,
 * Content-Length bounds, JSON bodies read in pieces, every endpoint's
 * checks of its fields, and the HTTP fallback's calls and polls
 * (send/ack/read/presence, events with Last-Event-ID), with PostgreSQL
 * and Redis answering as the input says (ngx_fuzz_chat.h).
 *
 * Input: the request as text, "METHOD /uri?args\nName: value\n\nbody",
 * up to a NUL byte; then actions: op 0 and 7 let 30 s pass.
 *
 * What must hold: the request is answered once, with a status nginx can
 * send, a head before any body, once PostgreSQL and Redis have answered
 * or failed and the timeouts have passed (an event stream: once the
 * worker exits); nothing leaks and nothing is
 * used once freed when the request's pool goes.
 */

#include "ngx_fuzz_http.h"

#include "ngx_chat_api.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_pool_t          *pool;
    ngx_fuzz_input_t     in;
    ngx_fuzz_action_t    a;
    ngx_http_request_t  *r;

    in.pos = data;
    in.last = data + size;

    ngx_fuzz_chat_start();
    pool = ngx_fuzz_new_pool();

    r = ngx_fuzz_http_request(pool, &in);

    rc = ngx_chat_api_handler(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);

    } else {
        while (ngx_fuzz_response.finalized == 0
               && ngx_fuzz_chat_next(&in, &a))
        {
            if (ngx_fuzz_chat_play(&a) == NGX_DECLINED) {
                ngx_fuzz_advance(30000);
                ngx_fuzz_chat_settle();
            }
        }

        /* PostgreSQL and Redis fail what is left; the poll times out */

        for (i = 0; ngx_fuzz_response.finalized == 0 && i < 8; i++) {
            ngx_fuzz_chat_drain();
            ngx_fuzz_advance(60000);
            ngx_fuzz_chat_settle();
        }

        /*
         * An event stream lasts: it ends when the worker exits, as
         * ngx_close_idle_connections() tells it.
         */

        if (ngx_fuzz_response.finalized == 0 && r->connection->read->handler) {
            r->connection->close = 1;
            r->connection->read->handler(r->connection->read);

            for (i = 0; ngx_fuzz_response.finalized == 0 && i < 8; i++) {
                ngx_fuzz_chat_drain();
                ngx_fuzz_advance(1000);
                ngx_fuzz_chat_settle();
            }
        }
    }

    if (ngx_fuzz_response.finalized == 0
        || (ngx_fuzz_response.rc != NGX_OK
            && ngx_fuzz_response.rc != NGX_ERROR
            && ngx_fuzz_response.rc < NGX_HTTP_OK))
    {
        abort();                        /* no answer, or not one */
    }

    /* the request goes, its cleanups run; then the worker exits */

    ngx_destroy_pool(pool);
    ngx_fuzz_pool = NULL;

    ngx_fuzz_chat_stop();

    return 0;
}
