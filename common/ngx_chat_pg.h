
/*
 * A per-worker pool of non-blocking libpq connections wired into nginx
 * events.  Callers from HTTP requests and WebSocket sessions alike:
 *
 *     q = ngx_chat_pg_query(&ngx_chat_pg_main, sql, n, values, handler,
 *                           data, log);
 *     if (q == NULL) -> answer "unavailable" now
 *     ... handler(data, res) runs later, once, unless ngx_chat_pg_cancel(q)
 *
 * res is NULL when the query did not run to completion (PostgreSQL down,
 * connection lost, query_timeout); otherwise check PQresultStatus().  The
 * pool clears res after the handler returns.  Parameters are copied; all
 * SQL takes parameters ($1, $2 ...) and is never built from strings.
 */

#ifndef _NGX_CHAT_PG_H_INCLUDED_
#define _NGX_CHAT_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <libpq-fe.h>


typedef struct ngx_chat_pg_query_s  ngx_chat_pg_query_t;
typedef struct ngx_chat_pg_conn_s   ngx_chat_pg_conn_t;

typedef void (*ngx_chat_pg_handler_pt)(void *data, PGresult *res);


typedef struct {
    ngx_str_t               conninfo;        /* empty: no PostgreSQL */
    ngx_uint_t              pool_size;
    ngx_msec_t              query_timeout;   /* also bounds the wait */
    ngx_msec_t              connect_timeout;
    ngx_uint_t              max_waiting;     /* queries queued for a slot */
} ngx_chat_pg_conf_t;


ngx_int_t ngx_chat_pg_init_worker(ngx_chat_pg_conf_t *conf, ngx_cycle_t *cycle);
void ngx_chat_pg_exit_worker(void);

ngx_chat_pg_query_t *ngx_chat_pg_query(const char *sql, ngx_uint_t nparams,
    ngx_str_t *params, ngx_chat_pg_handler_pt handler, void *data,
    ngx_log_t *log);
void ngx_chat_pg_cancel(ngx_chat_pg_query_t *q);

ngx_uint_t ngx_chat_pg_up(void);
ngx_uint_t ngx_chat_pg_busy(void);
ngx_uint_t ngx_chat_pg_max_waiting(void);

/* a text column of a row, as ngx_str_t (NULL columns are empty) */
void ngx_chat_pg_value(PGresult *res, int row, int col, ngx_str_t *value);
int64_t ngx_chat_pg_int(PGresult *res, int row, int col);
ngx_uint_t ngx_chat_pg_ok(PGresult *res);
void ngx_chat_pg_ignore(void *data, PGresult *res);


/*
 * A bigint[] parameter ("{1,2,3}"):
 *
 *     if (ngx_chat_pg_array_init(&a, n, log) != NGX_OK) -> no memory
 *     ngx_chat_pg_array_add(&a, v);             at most n times
 *     q = ngx_chat_pg_query(sql, 1, ngx_chat_pg_array_value(&a), ...);
 *     ngx_chat_pg_array_free(&a);
 */

typedef struct {
    ngx_str_t               value;
} ngx_chat_pg_array_t;

ngx_int_t ngx_chat_pg_array_init(ngx_chat_pg_array_t *a, ngx_uint_t n,
    ngx_log_t *log);
void ngx_chat_pg_array_add(ngx_chat_pg_array_t *a, int64_t value);
ngx_str_t *ngx_chat_pg_array_value(ngx_chat_pg_array_t *a);
void ngx_chat_pg_array_free(ngx_chat_pg_array_t *a);


#endif /* _NGX_CHAT_PG_H_INCLUDED_ */
