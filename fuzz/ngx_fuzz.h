
/*
 * What the fuzz targets share: the few pieces of the nginx runtime that
 * our parsers touch, stood in for by the harness (fuzz/ngx_fuzz_runtime.c),
 * and helpers to cut an input into pieces.
 *
 * nginx's own core files (strings, pools, red-black trees, arrays, lists,
 * buffers, allocation) are compiled from the upstream sources of the
 * nginx-dev version (scripts/fuzz.sh fetches them); only the event loop,
 * the log, the cycle and the HTTP connection's end are stand-ins.
 */

#ifndef _NGX_FUZZ_H_INCLUDED_
#define _NGX_FUZZ_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>


/* an input read front to back; every take is bounded by what is left */
typedef struct {
    const u_char  *pos;
    const u_char  *last;
} ngx_fuzz_input_t;


extern ngx_log_t    ngx_fuzz_log;
extern ngx_pool_t  *ngx_fuzz_pool;


/* once per process: the log, the cycle, the event queues */
void ngx_fuzz_init(void);

/* runs the posted events until none is left, at most max rounds */
void ngx_fuzz_run_posted(ngx_uint_t max);

/* moves the clock on by ms and runs the timers that expire */
void ngx_fuzz_advance(ngx_msec_t ms);

/* removes every timer left (a harness's objects are about to go) */
void ngx_fuzz_drop_timers(void);

/* a fresh pool for one input, the previous one destroyed */
ngx_pool_t *ngx_fuzz_new_pool(void);

ngx_uint_t ngx_fuzz_byte(ngx_fuzz_input_t *in, ngx_uint_t dflt);
size_t ngx_fuzz_take(ngx_fuzz_input_t *in, size_t max, const u_char **p);

/*
 * The reference UTF-8 decoder: the length of the longest prefix of whole
 * valid characters; *bad: what follows cannot become valid.
 */
size_t ngx_fuzz_utf8_prefix(const u_char *p, size_t n, ngx_uint_t *bad);

#define ngx_fuzz_left(in)  ((size_t) ((in)->last - (in)->pos))


#endif /* _NGX_FUZZ_H_INCLUDED_ */
