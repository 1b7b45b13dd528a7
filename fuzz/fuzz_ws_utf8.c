
/*
 * The incremental UTF-8 validator of text messages and close reasons
 * (ngx_chat_ws_utf8_feed), against the reference decoder of the harness.
 *
 * Input: 1 byte that cuts the rest into pieces (the validator is fed a
 * message as its frames and reads bring it), then the bytes.
 *
 * What must hold, after every piece: the validator refuses exactly when
 * no bytes that follow could make the text valid, and at the end it
 * accepts the whole exactly when the reference does.
 */

#include "ngx_fuzz.h"

#include "ngx_chat_ws.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t              off, n, step, prefix;
    ngx_int_t           rc;
    ngx_uint_t          bad;
    ngx_chat_ws_utf8_t  u;

    if (size == 0) {
        return 0;
    }

    step = data[0] % 7 + 1;
    data++;
    size--;

    ngx_memzero(&u, sizeof(ngx_chat_ws_utf8_t));

    for (off = 0; off < size; off += n) {
        n = ngx_min(step + off % 3, size - off);

        rc = ngx_chat_ws_utf8_feed(&u, (u_char *) data + off, n);

        prefix = ngx_fuzz_utf8_prefix(data, off + n, &bad);

        if ((rc == NGX_OK) == (bad != 0)) {
            abort();                /* refused text that could go on */
        }

        if (rc != NGX_OK) {
            return 0;
        }

        if (ngx_chat_ws_utf8_complete(&u) != (prefix == off + n)) {
            abort();                /* "complete" in the middle of one */
        }
    }

    return 0;
}
