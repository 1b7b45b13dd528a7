
/*
 * What a device sends on its socket, through the session core to every
 * feature (auth, send, ack, read, presence, ping and the rest), with
 * PostgreSQL's results, Redis's replies and pushes, time and the client's
 * reading as the input has them (ngx_fuzz_chat.h).
 *
 * Input: 1 byte (bit 0: the session is authenticated already; else it
 * waits for "auth"), then actions: op 0 is a text message from the client,
 * op 7 the client's close frame (1000).
 *
 * What must hold: every event sent is a JSON object with a "type" (an
 * error with a "code"); a text that is not a JSON object with a string
 * "type" gets an "error" or closes the session; close codes are
 * WebSocket's; nothing leaks and nothing is used once freed, whatever is
 * in flight when the session ends and the worker exits.
 */

#include "ngx_fuzz_chat.h"


static ngx_uint_t
ngx_fuzz_typed(u_char *data, size_t len)
{
    json_t      *msg;
    ngx_uint_t   typed;

    msg = json_loadb((char *) data, len, JSON_REJECT_DUPLICATES, NULL);
    typed = json_is_object(msg)
            && json_is_string(json_object_get(msg, "type"));
    json_decref(msg);

    return typed;
}


static void
ngx_fuzz_client_text(ngx_fuzz_session_t *fs, ngx_fuzz_action_t *a)
{
    u_char      *text;
    ngx_uint_t   errors, typed;

    /* a buffer of its own: a read past the message is caught */

    text = malloc(a->len ? a->len : 1);
    if (text == NULL) {
        abort();
    }

    ngx_memcpy(text, a->data, a->len);

    typed = ngx_fuzz_typed(text, a->len);
    errors = fs->errors;

    ngx_chat_session_message(&fs->session, text, a->len);
    ngx_fuzz_chat_settle();

    if (!typed && fs->errors == errors && !fs->close_code) {
        abort();                        /* no answer to nonsense */
    }

    free(text);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_pool_t          *pool;
    ngx_fuzz_input_t     in;
    ngx_fuzz_action_t    a;
    ngx_fuzz_session_t  *fs;

    if (size < 1) {
        return 0;
    }

    in.pos = data + 1;
    in.last = data + size;

    ngx_fuzz_chat_start();
    pool = ngx_fuzz_new_pool();

    fs = ngx_fuzz_session_open(pool, data[0] & 1);

    while (ngx_fuzz_chat_next(&in, &a)) {

        if (fs->close_code) {
            ngx_fuzz_session_end(fs);   /* as the socket ends it */
            break;
        }

        switch (a.op) {

        case 0:
            ngx_fuzz_client_text(fs, &a);
            break;

        case 7:
            if (ngx_chat_session_closing(&fs->session, 1000) != NGX_AGAIN) {
                ngx_fuzz_session_end(fs);
            }

            break;

        default:
            (void) ngx_fuzz_chat_play(&a);
        }
    }

    ngx_fuzz_session_end(fs);

    /* the connection's pool goes with the session, then the worker exits */

    ngx_destroy_pool(pool);
    ngx_fuzz_pool = NULL;

    ngx_fuzz_chat_stop();

    return 0;
}
