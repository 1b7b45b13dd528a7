
/*
 * Statement batching (ngx_chat_batch.h): a queue, a posted event, and a
 * bound on the statements in flight.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_chat_batch.h"
#include "ngx_chat_event.h"


static void ngx_chat_batch_pass(ngx_event_t *ev);


void
ngx_chat_batch_init(ngx_chat_batch_t *b, ngx_chat_batch_run_pt run,
    ngx_uint_t max, ngx_uint_t in_flight, ngx_log_t *log)
{
    ngx_queue_init(&b->ready);

    b->nready = 0;
    b->max = max;
    b->running = 0;
    b->in_flight = in_flight;
    b->run = run;

    ngx_chat_event_init(&b->ev, ngx_chat_batch_pass, log);
}


void
ngx_chat_batch_add(ngx_chat_batch_t *b, ngx_queue_t *item)
{
    ngx_queue_insert_tail(&b->ready, item);
    b->nready++;

    ngx_post_event(&b->ev, &ngx_posted_events);
}


void
ngx_chat_batch_remove(ngx_chat_batch_t *b, ngx_queue_t *item)
{
    ngx_queue_remove(item);
    b->nready--;
}


ngx_queue_t *
ngx_chat_batch_take(ngx_chat_batch_t *b)
{
    ngx_queue_t  *q;

    q = ngx_queue_head(&b->ready);
    ngx_queue_remove(q);
    b->nready--;

    return q;
}


void
ngx_chat_batch_done(ngx_chat_batch_t *b)
{
    b->running--;

    if (b->nready) {
        ngx_post_event(&b->ev, &ngx_posted_events);
    }
}


void
ngx_chat_batch_exit(ngx_chat_batch_t *b)
{
    if (b->ev.posted) {
        ngx_delete_posted_event(&b->ev);
    }
}


/* the end of a pass: what is ready goes, a statement at a time */

static void
ngx_chat_batch_pass(ngx_event_t *ev)
{
    ngx_chat_batch_t  *b;

    /* ev->data is taken: the debug log reads it as a connection */
    b = (ngx_chat_batch_t *) ((u_char *) ev - offsetof(ngx_chat_batch_t, ev));

    while (b->nready && b->running < b->in_flight) {
        b->running++;
        b->run(b, ngx_min(b->nready, b->max));
    }
}
