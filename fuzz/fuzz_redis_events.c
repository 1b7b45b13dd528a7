
/*
 * What reaches a worker from Redis: messages published on a user's
 * channel (new messages, receipts, presence, profile changes, revocations,
 * the notices of every feature) and the replies to the worker's commands
 * (presence leases and peers, rate limits), read into the session's
 * structures; the pushes go through the adapter's own reader
 * (ngx_chat_redis_push) and hiredis's.
 *
 * Input: actions (ngx_fuzz_chat.h) for an authenticated session: op 0 is
 * a message published on its user's channel, the bytes as they are; op 7
 * a second session of the same user opens or, if open, ends.
 *
 * What must hold: as in fuzz_client_json.c, for both sessions.
 */

#include "ngx_fuzz_chat.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char              *resp;
    ngx_pool_t          *pool;
    ngx_fuzz_input_t     in;
    ngx_fuzz_action_t    a, push;
    ngx_fuzz_session_t  *fs, *second;

    in.pos = data;
    in.last = data + size;

    ngx_fuzz_chat_start();
    pool = ngx_fuzz_new_pool();

    fs = ngx_fuzz_session_open(pool, 1);
    second = NULL;

    while (ngx_fuzz_chat_next(&in, &a)) {

        switch (a.op) {

        case 0:
            /* ["message", channel, text] on the first channel */

            resp = malloc(a.len + 64);
            if (resp == NULL) {
                abort();
            }

            resp[0] = 0;
            push.op = 3;
            push.data = resp;
            push.len = 1 + ngx_sprintf(resp + 1,
                                       "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n"
                                       "$%uz\r\n", a.len)
                       - (resp + 1);
            ngx_memcpy(resp + push.len, a.data, a.len);
            push.len += a.len;
            resp[push.len++] = '\r';
            resp[push.len++] = '\n';

            (void) ngx_fuzz_chat_play(&push);
            free(resp);
            break;

        case 7:
            if (second == NULL) {
                second = ngx_fuzz_session_open(pool, 1);

            } else if (!second->ended) {
                ngx_fuzz_session_end(second);
            }

            break;

        default:
            (void) ngx_fuzz_chat_play(&a);
        }

        if (fs->close_code && !fs->ended) {
            ngx_fuzz_session_end(fs);
        }

        if (second && second->close_code && !second->ended) {
            ngx_fuzz_session_end(second);
        }
    }

    if (second) {
        ngx_fuzz_session_end(second);
    }

    ngx_fuzz_session_end(fs);

    /* the connection's pool goes with the session, then the worker exits */

    ngx_destroy_pool(pool);
    ngx_fuzz_pool = NULL;

    ngx_fuzz_chat_stop();

    return 0;
}
