
/*
 * Statement batching: what the sockets of a worker ask for in one pass
 * of the event loop goes to PostgreSQL as one statement, one
 * transaction, one commit to wait for.  That is where the throughput of
 * a durable store comes from (sends, acks).
 *
 *     ngx_chat_batch_init(&b, run, max, in_flight, log);   at worker start
 *     ngx_chat_batch_add(&b, &item->ready);     an item for the next pass
 *     ngx_chat_batch_remove(&b, &item->ready);  it leaves before its pass
 *
 * At the end of the pass, b.run(&b, n) is called with n (at most max)
 * items waiting: it takes them with ngx_chat_batch_take(), starts one
 * statement, and calls ngx_chat_batch_done() once that statement is over
 * (or could not start), after which the next pass may run.  At most
 * in_flight statements run at once.
 */

#ifndef _NGX_CHAT_BATCH_H_INCLUDED_
#define _NGX_CHAT_BATCH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct ngx_chat_batch_s  ngx_chat_batch_t;

typedef void (*ngx_chat_batch_run_pt)(ngx_chat_batch_t *b, ngx_uint_t n);


struct ngx_chat_batch_s {
    ngx_queue_t             ready;
    ngx_uint_t              nready;
    ngx_uint_t              max;         /* items in one statement */
    ngx_uint_t              running;
    ngx_uint_t              in_flight;   /* statements at once */
    ngx_event_t             ev;          /* posted: the end of the pass */
    ngx_chat_batch_run_pt   run;
};


void ngx_chat_batch_init(ngx_chat_batch_t *b, ngx_chat_batch_run_pt run,
    ngx_uint_t max, ngx_uint_t in_flight, ngx_log_t *log);
void ngx_chat_batch_add(ngx_chat_batch_t *b, ngx_queue_t *item);
void ngx_chat_batch_remove(ngx_chat_batch_t *b, ngx_queue_t *item);
ngx_queue_t *ngx_chat_batch_take(ngx_chat_batch_t *b);
void ngx_chat_batch_done(ngx_chat_batch_t *b);
void ngx_chat_batch_exit(ngx_chat_batch_t *b);


#endif /* _NGX_CHAT_BATCH_H_INCLUDED_ */
