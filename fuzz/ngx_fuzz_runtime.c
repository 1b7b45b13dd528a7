
/*
 * Stand-ins for the nginx runtime around our parsers: a cycle and a log,
 * the clock, the timer tree and the posted events, and the end of a
 * connection.  Everything else a target links is nginx's own code
 * (scripts/fuzz.sh) or ours.
 *
 * The log formats every line with nginx's ngx_vslprintf() and the log's
 * handler, as ngx_log_error_core() does, and throws it away: a format
 * whose arguments do not match is found by the sanitizers, a line is not
 * a cost.  NGX_FUZZ_LOG=1 in the environment prints the lines.
 */

#include "ngx_fuzz.h"

#include <ngx_http.h>


ngx_log_t              ngx_fuzz_log;
ngx_pool_t            *ngx_fuzz_pool;

static ngx_cycle_t     ngx_fuzz_cycle;
static ngx_time_t      ngx_fuzz_time;
static ngx_uint_t      ngx_fuzz_log_print;
static ngx_rbtree_node_t  ngx_fuzz_timer_sentinel;

volatile ngx_cycle_t  *ngx_cycle = &ngx_fuzz_cycle;
volatile ngx_msec_t    ngx_current_msec = 1000000;
volatile ngx_time_t   *ngx_cached_time = &ngx_fuzz_time;
ngx_uint_t             ngx_exiting;
ngx_uint_t             ngx_worker;
ngx_int_t              ngx_process_slot;
ngx_pid_t              ngx_pid = 1;
ngx_queue_t            ngx_posted_events;
ngx_rbtree_t           ngx_event_timer_rbtree;


void
ngx_fuzz_init(void)
{
    static ngx_uint_t  done;

    if (done) {
        return;
    }

    done = 1;

    ngx_pagesize = getpagesize();
    ngx_cacheline_size = NGX_CPU_CACHE_LINE;

    for (ngx_pagesize_shift = 0;
         (1u << ngx_pagesize_shift) < ngx_pagesize;
         ngx_pagesize_shift++)
    {
        /* void */
    }

    ngx_fuzz_log.log_level = NGX_LOG_DEBUG;
    ngx_fuzz_cycle.log = &ngx_fuzz_log;
    ngx_str_set(&ngx_fuzz_cycle.hostname, "fuzz");
    ngx_fuzz_time.sec = 1765000000;
    ngx_fuzz_log_print = getenv("NGX_FUZZ_LOG") != NULL;

    ngx_queue_init(&ngx_posted_events);
    ngx_rbtree_init(&ngx_event_timer_rbtree, &ngx_fuzz_timer_sentinel,
                    ngx_rbtree_insert_timer_value);
}


ngx_pool_t *
ngx_fuzz_new_pool(void)
{
    if (ngx_fuzz_pool) {
        ngx_destroy_pool(ngx_fuzz_pool);
    }

    ngx_fuzz_pool = ngx_create_pool(4096, &ngx_fuzz_log);
    if (ngx_fuzz_pool == NULL) {
        abort();
    }

    return ngx_fuzz_pool;
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;
    u_char    line[NGX_MAX_ERROR_STR];

    last = line + NGX_MAX_ERROR_STR;

    va_start(args, fmt);
    p = ngx_vslprintf(line, last, fmt, args);
    va_end(args);

    if (err) {
        p = ngx_slprintf(p, last, " (%d)", err);
    }

    if (level != NGX_LOG_DEBUG && log && log->handler) {
        p = log->handler(log, p, last - p);
    }

    if (ngx_fuzz_log_print) {
        fprintf(stderr, "log %lu: %.*s\n", (unsigned long) level,
                (int) (p - line), line);
    }
}


/* ------------------------------------------------------ the event loop */


void
ngx_fuzz_run_posted(ngx_uint_t max)
{
    ngx_queue_t  *q;
    ngx_event_t  *ev;

    while (max-- && !ngx_queue_empty(&ngx_posted_events)) {
        q = ngx_queue_head(&ngx_posted_events);
        ev = ngx_queue_data(q, ngx_event_t, queue);

        ngx_delete_posted_event(ev);

        ev->handler(ev);
    }
}


void
ngx_fuzz_advance(ngx_msec_t ms)
{
    ngx_event_t        *ev;
    ngx_rbtree_node_t  *node, *root, *sentinel;

    ngx_current_msec += ms;
    ngx_fuzz_time.sec = 1765000000 + ngx_current_msec / 1000;
    ngx_fuzz_time.msec = ngx_current_msec % 1000;

    sentinel = ngx_event_timer_rbtree.sentinel;

    for ( ;; ) {
        root = ngx_event_timer_rbtree.root;

        if (root == sentinel) {
            return;
        }

        node = ngx_rbtree_min(root, sentinel);

        if ((ngx_msec_int_t) (node->key - ngx_current_msec) > 0) {
            return;
        }

        ev = ngx_rbtree_data(node, ngx_event_t, timer);

        ngx_rbtree_delete(&ngx_event_timer_rbtree, &ev->timer);

        ev->timer_set = 0;
        ev->timedout = 1;

        ev->handler(ev);
    }
}


void
ngx_fuzz_drop_timers(void)
{
    ngx_event_t        *ev;
    ngx_rbtree_node_t  *root, *sentinel;

    sentinel = ngx_event_timer_rbtree.sentinel;

    while ((root = ngx_event_timer_rbtree.root) != sentinel) {
        ev = ngx_rbtree_data(ngx_rbtree_min(root, sentinel), ngx_event_t,
                             timer);
        ngx_rbtree_delete(&ngx_event_timer_rbtree, &ev->timer);
        ev->timer_set = 0;
    }

    while (!ngx_queue_empty(&ngx_posted_events)) {
        ev = ngx_queue_data(ngx_queue_head(&ngx_posted_events), ngx_event_t,
                            queue);
        ngx_delete_posted_event(ev);
    }
}


/*
 * The harness is the event loop: it calls the handlers itself when it has
 * bytes for them, so asking for an event changes nothing.
 */

ngx_int_t
ngx_handle_read_event(ngx_event_t *rev, ngx_uint_t flags)
{
    return NGX_OK;
}


ngx_int_t
ngx_handle_write_event(ngx_event_t *wev, size_t lowat)
{
    return NGX_OK;
}


ngx_int_t
ngx_tcp_nodelay(ngx_connection_t *c)
{
    return NGX_OK;
}


/* the connection is the harness's: it learns of the end by c->destroyed */

void
ngx_http_close_connection(ngx_connection_t *c)
{
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->destroyed = 1;
}


/* ------------------------------------------------------------- inputs */


ngx_uint_t
ngx_fuzz_byte(ngx_fuzz_input_t *in, ngx_uint_t dflt)
{
    if (in->pos == in->last) {
        return dflt;
    }

    return *in->pos++;
}


size_t
ngx_fuzz_take(ngx_fuzz_input_t *in, size_t max, const u_char **p)
{
    size_t  n;

    n = ngx_min(max, ngx_fuzz_left(in));
    *p = in->pos;
    in->pos += n;

    return n;
}


/*
 * The reference for the differential checks: decodes code points the long
 * way (RFC 3629, section 3) and refuses overlong forms, surrogates and
 * values past U+10FFFF.  Returns the length of the longest prefix that is
 * whole, valid characters, and sets *bad when the bytes after it cannot
 * begin a valid character whatever follows.
 */

size_t
ngx_fuzz_utf8_prefix(const u_char *p, size_t n, ngx_uint_t *bad)
{
    size_t    i, k, len;
    uint32_t  cp, min, lo, hi;

    *bad = 0;

    for (i = 0; i < n; i += len) {

        if (p[i] < 0x80) {
            len = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            len = 2; cp = p[i] & 0x1f; min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            len = 3; cp = p[i] & 0x0f; min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            len = 4; cp = p[i] & 0x07; min = 0x10000;

        } else {
            *bad = 1;
            return i;
        }

        for (k = 1; k < len; k++) {

            if (i + k == n) {
                /*
                 * Cut short: bad if no continuation bytes can make it a
                 * character, that is if the code points it can still
                 * become, lo..hi, miss the valid ones.
                 */

                lo = cp << 6 * (len - k);
                hi = lo | ((1u << 6 * (len - k)) - 1);

                if (hi < min || lo > 0x10ffff
                    || (lo >= 0xd800 && hi <= 0xdfff))
                {
                    *bad = 1;
                }

                return i;
            }

            if ((p[i + k] & 0xc0) != 0x80) {
                *bad = 1;
                return i;
            }

            cp = (cp << 6) | (p[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            *bad = 1;
            return i;
        }
    }

    return n;
}
