
/*
 * What the WebSocket handshake reads of a client's request headers
 * (ngx_chat_ws.c): Sec-WebSocket-Key, the token lists of Connection and
 * Upgrade, Sec-WebSocket-Protocol against the configured subprotocols,
 * and the permessage-deflate negotiation of Sec-WebSocket-Extensions.
 *
 * Input: the header value.
 *
 * What must hold: an accepted key decodes to 16 bytes and its accept value
 * is 28 base64 characters; a token or protocol found is in the value; the
 * answer to an accepted deflate offer fits its bound and, read back as an
 * offer, is accepted with the same window sizes and takeover.
 */

#include "ngx_fuzz.h"

#include "ngx_chat_ws.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                  accept[NGX_CHAT_WS_ACCEPT_LEN];
    u_char                  resp[NGX_CHAT_WS_DEFLATE_RESPONSE_MAX + 1], *p;
    u_char                 *copy;
    ngx_str_t               value, *known, *found, back;
    ngx_uint_t              i;
    ngx_array_t             protocols;
    ngx_chat_ws_deflate_t   d, again;

    static ngx_str_t  tokens[] = {
        ngx_string("upgrade"), ngx_string("websocket"), ngx_string("")
    };
    static ngx_str_t  names[] = {
        ngx_string("chat.v1"), ngx_string("chat.v2"), ngx_string("x")
    };

    ngx_fuzz_init();

    /* a value of its own, so reads past it are caught */
    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    ngx_memcpy(copy, data, size);
    value.data = copy;
    value.len = size;

    if (ngx_chat_ws_key_valid(&value) == NGX_OK) {
        if (size != 24) {
            abort();
        }

        ngx_chat_ws_accept_key(&value, accept);

        for (i = 0; i < NGX_CHAT_WS_ACCEPT_LEN; i++) {
            if (!(isalnum(accept[i]) || accept[i] == '+'
                  || accept[i] == '/' || accept[i] == '='))
            {
                abort();
            }
        }
    }

    for (i = 0; i < sizeof(tokens) / sizeof(ngx_str_t); i++) {
        if (ngx_chat_ws_has_token(&value, &tokens[i])
            && size < tokens[i].len)
        {
            abort();
        }
    }

    protocols.elts = names;
    protocols.nelts = sizeof(names) / sizeof(ngx_str_t);
    protocols.size = sizeof(ngx_str_t);

    found = ngx_chat_ws_known_protocol(&value, &protocols);

    if (found) {
        known = names;

        if (found < known || found >= known + protocols.nelts
            || ngx_strlcasestrn(copy, copy + size, found->data,
                                found->len - 1) == NULL)
        {
            abort();
        }
    }

    if (ngx_chat_ws_deflate_offer(&value, &d) == NGX_OK) {
        if (!d.enabled) {
            abort();
        }

        p = ngx_chat_ws_deflate_response(resp, &d);

        if ((size_t) (p - resp) > NGX_CHAT_WS_DEFLATE_RESPONSE_MAX) {
            abort();
        }

        back.data = resp;
        back.len = p - resp;

        if (ngx_chat_ws_deflate_offer(&back, &again) != NGX_OK
            || again.client_no_context_takeover
               != d.client_no_context_takeover
            || again.server_max_window_bits != d.server_max_window_bits
            || again.client_max_window_bits != d.client_max_window_bits)
        {
            abort();
        }

    } else if (d.enabled) {
        abort();
    }

    free(copy);

    return 0;
}
