
/*
 * A chat worker for the fuzz targets (fuzz/ngx_fuzz_chat.c): the module's
 * own code, all of it but the PostgreSQL pool's and the Redis adapter's
 * connections, which the harness plays.  Queries and commands wait in the
 * harness until the input answers them: a PostgreSQL result built from
 * bytes (libpq's own result constructors), a Redis reply parsed from RESP
 * bytes (hiredis's own reader), a pub/sub push on a subscribed channel, or
 * a failure; time passes when the input says so.
 *
 * An action of the input is [op][length, 2 bytes][length bytes]:
 *
 *   op % 8   0  a client's text (the target says what it is for)
 *            1  the oldest query answered: empty, a failure; else a
 *               status byte (0 rows, 1 command ok, 2 an error), a column
 *               count, then cells, each a length byte and its bytes, 0xff
 *               for NULL, row after row
 *            2  the oldest Redis command answered: RESP bytes (a failure
 *               when they are not one whole reply)
 *            3  a push: a byte that picks a subscribed channel, then RESP
 *               bytes read as a pub/sub push
 *            4  time passes: 100 ms times the first byte
 *            5  the Redis link goes down or comes back
 *            6  the client's queue fills or drains (first byte odd: full)
 *            7  the target's own
 */

#ifndef _NGX_FUZZ_CHAT_H_INCLUDED_
#define _NGX_FUZZ_CHAT_H_INCLUDED_


#include "ngx_fuzz.h"

#include <ngx_http.h>
#include <jansson.h>

#include "ngx_chat_module.h"
#include "ngx_chat_session.h"


typedef struct {
    ngx_uint_t             op;
    const u_char          *data;
    size_t                 len;
} ngx_fuzz_action_t;


extern ngx_chat_main_conf_t  ngx_fuzz_cmcf;
extern ngx_chat_loc_conf_t   ngx_fuzz_clcf;
extern ngx_uint_t            ngx_fuzz_room;      /* the client reads */


/* a worker as init_process() makes it, with the harness's stores */
void ngx_fuzz_chat_start(void);

/* every query and command in flight fails, and what those ask for */
void ngx_fuzz_chat_drain(void);

/* drained, then the worker exits */
void ngx_fuzz_chat_stop(void);

/* the next action, or 0 at the end of the input */
ngx_uint_t ngx_fuzz_chat_next(ngx_fuzz_input_t *in, ngx_fuzz_action_t *a);

/* plays an action of ops 1-6; NGX_DECLINED for 0 and 7 */
ngx_int_t ngx_fuzz_chat_play(ngx_fuzz_action_t *a);

/* nothing waits: the worker's posted events run */
void ngx_fuzz_chat_settle(void);

/* a session of a transport that checks what it is sent */
typedef struct {
    ngx_chat_session_t     session;
    ngx_uint_t             errors;        /* "error" events */
    ngx_uint_t             close_code;    /* 0: open */
    unsigned               ended:1;
} ngx_fuzz_session_t;

ngx_fuzz_session_t *ngx_fuzz_session_open(ngx_pool_t *pool,
    ngx_uint_t identified);
void ngx_fuzz_session_end(ngx_fuzz_session_t *fs);


#endif /* _NGX_FUZZ_CHAT_H_INCLUDED_ */
