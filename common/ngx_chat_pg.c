
/*
 * The PostgreSQL pool of a worker: pool_size libpq connections in
 * non-blocking mode, their sockets wrapped in nginx connections.
 *
 * A connection is DOWN (waiting for its reconnect timer), CONNECTING
 * (PQconnectPoll until it is up), IDLE, or BUSY with one query.  Queries
 * wait in a bounded FIFO for an idle connection.  Every query has a timer
 * covering its wait and its run; a query that times out while running
 * takes its connection down with it, which is the only way to abandon a
 * libpq query without blocking (PQcancel() is synchronous).
 *
 * Sockets are edge-triggered: after reading, the socket is read again
 * while it still holds bytes, since PQconsumeInput() may stop early.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <sys/ioctl.h>

#include "ngx_chat_pg.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_PG_BACKOFF_MIN  100
#define NGX_CHAT_PG_BACKOFF_MAX  1000    /* back within 1 s of its return */

/* the first failed connect of a series is an error, the retries info */
#define ngx_chat_pg_connect_level(pc)                                         \
    ((pc)->backoff == NGX_CHAT_PG_BACKOFF_MIN ? NGX_LOG_ERR : NGX_LOG_INFO)


typedef enum {
    NGX_CHAT_PG_DOWN = 0,
    NGX_CHAT_PG_CONNECTING,
    NGX_CHAT_PG_IDLE,
    NGX_CHAT_PG_BUSY
} ngx_chat_pg_state_e;


struct ngx_chat_pg_conn_s {
    PGconn                 *pg;
    ngx_connection_t       *connection;    /* the socket, while there is one */
    ngx_chat_pg_query_t    *query;         /* BUSY: the one running */
    PGresult               *result;        /* its result so far */
    ngx_event_t             timer;         /* reconnect or connect timeout */
    ngx_msec_t              backoff;
    ngx_chat_pg_state_e     state;
};


struct ngx_chat_pg_query_s {
    ngx_queue_t             queue;         /* while waiting */
    ngx_event_t             timer;
    ngx_chat_pg_handler_pt  handler;
    void                   *data;
    ngx_log_t              *log;
    ngx_chat_pg_conn_t     *conn;          /* while running */
    const char             *sql;
    int                     nparams;
    char                  **values;
    int                    *lengths;
    unsigned                cancelled:1;
};


static void ngx_chat_pg_connect(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_connect_poll(ngx_chat_pg_conn_t *pc);
static ngx_int_t ngx_chat_pg_wrap(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_unwrap(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_event_handler(ngx_event_t *ev);
static void ngx_chat_pg_timer_handler(ngx_event_t *ev);
static void ngx_chat_pg_query_timeout(ngx_event_t *ev);
static void ngx_chat_pg_run(ngx_chat_pg_conn_t *pc, ngx_chat_pg_query_t *q);
static void ngx_chat_pg_read(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_flush(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_complete(ngx_chat_pg_conn_t *pc);
static void ngx_chat_pg_fail(ngx_chat_pg_conn_t *pc, const char *what);
static void ngx_chat_pg_dispatch(void);
static void ngx_chat_pg_dispatch_handler(ngx_event_t *ev);
static ngx_chat_pg_query_t *ngx_chat_pg_next(void);
static void ngx_chat_pg_finish(ngx_chat_pg_query_t *q, PGresult *res);
static void ngx_chat_pg_fail_waiting(void);
static ngx_uint_t ngx_chat_pg_reachable(void);
static void ngx_chat_pg_kick(void);


static ngx_chat_pg_conf_t  *ngx_chat_pg_conf;
static ngx_chat_pg_conn_t  *ngx_chat_pg_conns;
static ngx_queue_t          ngx_chat_pg_waiting;
static ngx_uint_t           ngx_chat_pg_nwaiting;
static ngx_uint_t           ngx_chat_pg_nup;
static ngx_log_t           *ngx_chat_pg_log;
static ngx_msec_t           ngx_chat_pg_kicked;
static ngx_uint_t           ngx_chat_pg_exiting;
static ngx_event_t          ngx_chat_pg_dispatch_ev;


ngx_int_t
ngx_chat_pg_init_worker(ngx_chat_pg_conf_t *conf, ngx_cycle_t *cycle)
{
    ngx_uint_t           i;
    ngx_chat_pg_conn_t  *pc;

    ngx_queue_init(&ngx_chat_pg_waiting);

    if (conf->conninfo.len == 0) {
        return NGX_OK;
    }

    ngx_chat_pg_conf = conf;
    ngx_chat_pg_log = cycle->log;

    ngx_chat_event_init(&ngx_chat_pg_dispatch_ev,
                        ngx_chat_pg_dispatch_handler, cycle->log);

    ngx_chat_pg_conns = ngx_pcalloc(cycle->pool,
                                    conf->pool_size
                                    * sizeof(ngx_chat_pg_conn_t));
    if (ngx_chat_pg_conns == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < conf->pool_size; i++) {
        pc = &ngx_chat_pg_conns[i];

        pc->timer.handler = ngx_chat_pg_timer_handler;
        pc->timer.data = pc;
        pc->timer.log = cycle->log;
        pc->timer.cancelable = 1;
        pc->backoff = NGX_CHAT_PG_BACKOFF_MIN;

        ngx_chat_pg_connect(pc);
    }

    return NGX_OK;
}


void
ngx_chat_pg_exit_worker(void)
{
    ngx_uint_t            i;
    ngx_chat_pg_conn_t   *pc;
    ngx_chat_pg_query_t  *query;

    if (ngx_chat_pg_conf == NULL) {
        return;
    }

    ngx_chat_pg_exiting = 1;

    if (ngx_chat_pg_dispatch_ev.posted) {
        ngx_delete_posted_event(&ngx_chat_pg_dispatch_ev);
    }

    /* the owners are going away too: nobody is called back */

    while (!ngx_queue_empty(&ngx_chat_pg_waiting)) {
        query = ngx_chat_pg_next();
        query->cancelled = 1;
        ngx_chat_pg_finish(query, NULL);
    }

    for (i = 0; i < ngx_chat_pg_conf->pool_size; i++) {
        pc = &ngx_chat_pg_conns[i];

        if (pc->query) {
            pc->query->cancelled = 1;
        }

        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }

        if (pc->pg) {
            ngx_chat_pg_fail(pc, NULL);
        }

        if (pc->timer.timer_set) {
            ngx_del_timer(&pc->timer);
        }
    }

    ngx_chat_pg_conf = NULL;
}


ngx_chat_pg_query_t *
ngx_chat_pg_query(const char *sql, ngx_uint_t nparams, ngx_str_t *params,
    ngx_chat_pg_handler_pt handler, void *data, ngx_log_t *log)
{
    u_char               *p;
    size_t                size;
    ngx_uint_t            i;
    ngx_chat_pg_query_t  *q;

    if (ngx_chat_pg_conf == NULL) {
        return NULL;
    }

    /* down, and no connection on its way up: fail now, not after a wait */

    if (!ngx_chat_pg_reachable()) {
        ngx_chat_pg_kick();

        if (!ngx_chat_pg_reachable()) {
            return NULL;
        }
    }

    if (ngx_chat_pg_nwaiting >= ngx_chat_pg_conf->max_waiting) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "postgres: %ui queries waiting, refusing more",
                      ngx_chat_pg_nwaiting);
        return NULL;
    }

    size = sizeof(ngx_chat_pg_query_t)
           + nparams * (sizeof(char *) + sizeof(int));

    for (i = 0; i < nparams; i++) {
        size += params[i].len + 1;
    }

    q = ngx_calloc(size, log);
    if (q == NULL) {
        return NULL;
    }

    q->handler = handler;
    q->data = data;
    q->log = log;
    q->sql = sql;
    q->nparams = (int) nparams;
    q->values = (char **) (q + 1);
    q->lengths = (int *) (q->values + nparams);

    p = (u_char *) (q->lengths + nparams);

    for (i = 0; i < nparams; i++) {
        if (params[i].data == NULL) {
            q->values[i] = NULL;        /* SQL NULL */
            continue;
        }

        q->values[i] = (char *) p;
        q->lengths[i] = (int) params[i].len;
        p = ngx_cpymem(p, params[i].data, params[i].len);
        *p++ = '\0';
    }

    /* not cancelable: a graceful shutdown waits for queries in flight */

    q->timer.handler = ngx_chat_pg_query_timeout;
    q->timer.data = q;
    q->timer.log = log;
    ngx_add_timer(&q->timer, ngx_chat_pg_conf->query_timeout);

    /*
     * First come, first served, and from a posted event: the handler is
     * never called before this returns, and the queries of one pass of
     * the event loop go out together.
     */

    ngx_queue_insert_tail(&ngx_chat_pg_waiting, &q->queue);
    ngx_chat_pg_nwaiting++;

    ngx_post_event(&ngx_chat_pg_dispatch_ev, &ngx_posted_events);

    return q;
}


void
ngx_chat_pg_cancel(ngx_chat_pg_query_t *q)
{
    q->cancelled = 1;

    /* the owner's log may go with the owner */
    q->log = ngx_cycle->log;
    q->timer.log = ngx_cycle->log;

    if (q->conn == NULL) {
        ngx_queue_remove(&q->queue);
        ngx_chat_pg_nwaiting--;
        ngx_chat_pg_finish(q, NULL);
    }

    /* a running query ends with its connection's next result */
}


ngx_uint_t
ngx_chat_pg_up(void)
{
    return ngx_chat_pg_nup > 0;
}


/* half the waiting queue is taken: work that can wait should */

ngx_uint_t
ngx_chat_pg_busy(void)
{
    return ngx_chat_pg_nwaiting >= ngx_chat_pg_conf->max_waiting / 2;
}


/* how many queries may wait for a connection (chat_postgres_max_waiting) */

ngx_uint_t
ngx_chat_pg_max_waiting(void)
{
    return ngx_chat_pg_conf->max_waiting;
}


static void
ngx_chat_pg_connect(ngx_chat_pg_conn_t *pc)
{
    pc->pg = PQconnectStart((char *) ngx_chat_pg_conf->conninfo.data);

    if (pc->pg == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_chat_pg_log, 0,
                      "postgres: PQconnectStart() failed");
        goto retry;
    }

    if (PQstatus(pc->pg) == CONNECTION_BAD
        || PQsetnonblocking(pc->pg, 1) != 0
        || ngx_chat_pg_wrap(pc) != NGX_OK)
    {
        ngx_log_error(ngx_chat_pg_connect_level(pc), ngx_chat_pg_log, 0,
                      "postgres: connect failed: %s", PQerrorMessage(pc->pg));
        PQfinish(pc->pg);
        pc->pg = NULL;
        goto retry;
    }

    pc->state = NGX_CHAT_PG_CONNECTING;
    ngx_add_timer(&pc->timer, ngx_chat_pg_conf->connect_timeout);

    ngx_chat_pg_connect_poll(pc);

    return;

retry:

    pc->state = NGX_CHAT_PG_DOWN;
    ngx_add_timer(&pc->timer, pc->backoff);
    pc->backoff = ngx_min(pc->backoff * 2, NGX_CHAT_PG_BACKOFF_MAX);
}


static void
ngx_chat_pg_connect_poll(ngx_chat_pg_conn_t *pc)
{
    PostgresPollingStatusType  status;

    status = PQconnectPoll(pc->pg);

    /* libpq may move to another socket (the next host or address) */

    if (status != PGRES_POLLING_FAILED
        && PQsocket(pc->pg) != pc->connection->fd)
    {
        ngx_chat_pg_unwrap(pc);

        if (ngx_chat_pg_wrap(pc) != NGX_OK) {
            status = PGRES_POLLING_FAILED;
        }
    }

    switch (status) {

    case PGRES_POLLING_OK:
        ngx_del_timer(&pc->timer);
        ngx_log_error(NGX_LOG_INFO, ngx_chat_pg_log, 0,
                      "postgres: connected");

        pc->state = NGX_CHAT_PG_IDLE;
        pc->backoff = NGX_CHAT_PG_BACKOFF_MIN;
        ngx_chat_pg_nup++;

        ngx_chat_pg_dispatch();
        return;

    case PGRES_POLLING_FAILED:
        ngx_chat_pg_fail(pc, "connect");
        return;

    default:
        /* reading or writing: both events are armed, edge-triggered */
        return;
    }
}


/* puts libpq's socket into nginx's event loop */

static ngx_int_t
ngx_chat_pg_wrap(ngx_chat_pg_conn_t *pc)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pg);

    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ngx_chat_pg_log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->read->handler = ngx_chat_pg_event_handler;
    c->write->handler = ngx_chat_pg_event_handler;
    c->read->log = ngx_chat_pg_log;
    c->write->log = ngx_chat_pg_log;

    /* edge-triggered read and write: epoll (or kqueue) is required */

    if (ngx_add_conn == NULL || ngx_add_conn(c) != NGX_OK) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        return NGX_ERROR;
    }

    pc->connection = c;

    return NGX_OK;
}


/* takes the socket out of the event loop; libpq owns and closes it */

static void
ngx_chat_pg_unwrap(ngx_chat_pg_conn_t *pc)
{
    ngx_connection_t  *c;

    c = pc->connection;

    if (c == NULL) {
        return;
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /*
     * libpq closes its socket itself when it sees the connection drop, or
     * moves to another: epoll has then forgotten the descriptor already.
     */

    (void) ngx_del_conn(c, (pc->pg && PQsocket(pc->pg) == c->fd)
                           ? 0 : NGX_CLOSE_EVENT);

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    pc->connection = NULL;
}


static void
ngx_chat_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_chat_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    switch (pc->state) {

    case NGX_CHAT_PG_CONNECTING:
        ngx_chat_pg_connect_poll(pc);
        return;

    case NGX_CHAT_PG_BUSY:
        if (ev->write) {
            ngx_chat_pg_flush(pc);

        } else {
            ngx_chat_pg_read(pc);
        }

        return;

    case NGX_CHAT_PG_IDLE:
        /* notices, or the server going away */
        if (!ev->write) {
            ngx_chat_pg_read(pc);
        }

        return;

    default:
        return;
    }
}


/* the reconnect timer, or the connect timeout */

static void
ngx_chat_pg_timer_handler(ngx_event_t *ev)
{
    ngx_chat_pg_conn_t  *pc;

    pc = ev->data;

    if (pc->state == NGX_CHAT_PG_CONNECTING) {
        ngx_log_error(ngx_chat_pg_connect_level(pc), ngx_chat_pg_log, 0,
                      "postgres: connect timed out");
        ngx_chat_pg_fail(pc, NULL);
        return;
    }

    ngx_chat_pg_connect(pc);
}


static void
ngx_chat_pg_query_timeout(ngx_event_t *ev)
{
    ngx_chat_pg_query_t  *q;

    q = ev->data;

    ngx_log_error(NGX_LOG_ERR, q->log, 0, "postgres: query timed out");

    if (q->conn) {
        /* abandoning a running query means dropping its connection */
        ngx_chat_pg_fail(q->conn, NULL);
        return;
    }

    ngx_queue_remove(&q->queue);
    ngx_chat_pg_nwaiting--;

    ngx_chat_pg_finish(q, NULL);
}


static void
ngx_chat_pg_run(ngx_chat_pg_conn_t *pc, ngx_chat_pg_query_t *q)
{
    /*
     * A server restart closes idle connections; the close may not have
     * been read yet.  Such a connection is dropped before the query is
     * sent, and the query goes to the next one, not back to its caller.
     */

    if (!PQconsumeInput(pc->pg) || PQstatus(pc->pg) != CONNECTION_OK) {
        ngx_queue_insert_head(&ngx_chat_pg_waiting, &q->queue);
        ngx_chat_pg_nwaiting++;

        ngx_chat_pg_fail(pc, "idle connection check");
        return;                 /* dispatch goes on with the next one */
    }

    pc->state = NGX_CHAT_PG_BUSY;
    pc->query = q;
    q->conn = pc;

    if (!PQsendQueryParams(pc->pg, q->sql, q->nparams, NULL,
                           (const char * const *) q->values, q->lengths,
                           NULL, 0))
    {
        ngx_chat_pg_fail(pc, "send");
        return;
    }

    ngx_chat_pg_flush(pc);
}


static void
ngx_chat_pg_flush(ngx_chat_pg_conn_t *pc)
{
    /* 1: the rest goes when the socket is writable again (edge) */

    if (PQflush(pc->pg) == -1) {
        ngx_chat_pg_fail(pc, "send");
    }
}


static void
ngx_chat_pg_read(ngx_chat_pg_conn_t *pc)
{
    int        n;
    PGresult  *res;

    for ( ;; ) {

        if (!PQconsumeInput(pc->pg)) {
            ngx_chat_pg_fail(pc, "read");
            return;
        }

        while (pc->state == NGX_CHAT_PG_BUSY && !PQisBusy(pc->pg)) {
            res = PQgetResult(pc->pg);

            if (res == NULL) {
                ngx_chat_pg_complete(pc);
                return;
            }

            /* one statement, one result: keep the last (an error) */

            if (pc->result) {
                PQclear(pc->result);
            }

            pc->result = res;
        }

        if (ioctl(pc->connection->fd, FIONREAD, &n) == -1 || n <= 0) {
            return;
        }
    }
}


static void
ngx_chat_pg_complete(ngx_chat_pg_conn_t *pc)
{
    PGresult             *res;
    ngx_chat_pg_query_t  *q;

    q = pc->query;
    res = pc->result;

    pc->query = NULL;
    pc->result = NULL;
    pc->state = NGX_CHAT_PG_IDLE;

    if (res && PQresultStatus(res) == PGRES_FATAL_ERROR) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0, "postgres: %s",
                      PQresultErrorMessage(res));
    }

    ngx_chat_pg_finish(q, res);

    if (res) {
        PQclear(res);
    }

    ngx_chat_pg_dispatch();
}


/*
 * The connection is lost or abandoned: its query fails, and it comes back
 * after a backoff.  what names the step for the log (NULL: logged).
 */

static void
ngx_chat_pg_fail(ngx_chat_pg_conn_t *pc, const char *what)
{
    ngx_uint_t            level;
    ngx_chat_pg_query_t  *q;

    if (what) {
        level = (pc->state == NGX_CHAT_PG_CONNECTING)
                ? ngx_chat_pg_connect_level(pc) : NGX_LOG_ERR;
        ngx_log_error(level, ngx_chat_pg_log, 0, "postgres: %s failed: %s",
                      what, PQerrorMessage(pc->pg));
    }

    if (pc->state == NGX_CHAT_PG_IDLE || pc->state == NGX_CHAT_PG_BUSY) {
        ngx_chat_pg_nup--;
    }

    q = pc->query;

    pc->query = NULL;

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    ngx_chat_pg_unwrap(pc);
    PQfinish(pc->pg);
    pc->pg = NULL;
    pc->state = NGX_CHAT_PG_DOWN;

    if (pc->timer.timer_set) {
        ngx_del_timer(&pc->timer);
    }

    if (!ngx_chat_pg_exiting) {
        ngx_add_timer(&pc->timer, pc->backoff);
        pc->backoff = ngx_min(pc->backoff * 2, NGX_CHAT_PG_BACKOFF_MAX);
    }

    if (q) {
        ngx_chat_pg_finish(q, NULL);
    }

    if (!ngx_chat_pg_reachable()) {
        ngx_chat_pg_kick();

        if (!ngx_chat_pg_reachable()) {
            ngx_chat_pg_fail_waiting();
        }
    }
}


/*
 * Demand while every connection is down waits for no backoff: one
 * connection tries at once, at most every 100 ms, so the pool is back
 * with the first request after PostgreSQL is.
 */

static void
ngx_chat_pg_kick(void)
{
    ngx_uint_t           i;
    ngx_chat_pg_conn_t  *pc;

    if (ngx_chat_pg_exiting
        || ngx_current_msec - ngx_chat_pg_kicked < 100)
    {
        return;
    }

    ngx_chat_pg_kicked = ngx_current_msec;

    for (i = 0; i < ngx_chat_pg_conf->pool_size; i++) {
        pc = &ngx_chat_pg_conns[i];

        if (pc->state == NGX_CHAT_PG_DOWN) {
            if (pc->timer.timer_set) {
                ngx_del_timer(&pc->timer);
            }

            ngx_chat_pg_connect(pc);
            return;
        }
    }
}


static ngx_uint_t
ngx_chat_pg_reachable(void)
{
    ngx_uint_t  i;

    if (ngx_chat_pg_nup) {
        return 1;
    }

    for (i = 0; i < ngx_chat_pg_conf->pool_size; i++) {
        if (ngx_chat_pg_conns[i].state == NGX_CHAT_PG_CONNECTING) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_chat_pg_dispatch(void)
{
    ngx_uint_t           i;
    ngx_chat_pg_conn_t  *pc;

    for (i = 0;
         i < ngx_chat_pg_conf->pool_size
         && !ngx_queue_empty(&ngx_chat_pg_waiting);
         i++)
    {
        pc = &ngx_chat_pg_conns[i];

        if (pc->state == NGX_CHAT_PG_IDLE) {
            ngx_chat_pg_run(pc, ngx_chat_pg_next());
        }
    }
}


/* the oldest query waiting for a connection, taken off the queue */

static ngx_chat_pg_query_t *
ngx_chat_pg_next(void)
{
    ngx_queue_t  *q;

    q = ngx_queue_head(&ngx_chat_pg_waiting);
    ngx_queue_remove(q);
    ngx_chat_pg_nwaiting--;

    return ngx_queue_data(q, ngx_chat_pg_query_t, queue);
}


static void
ngx_chat_pg_dispatch_handler(ngx_event_t *ev)
{
    if (ngx_chat_pg_conf) {
        ngx_chat_pg_dispatch();
    }
}


/* no connection is up: waiting would only end in a timeout */

static void
ngx_chat_pg_fail_waiting(void)
{
    while (!ngx_queue_empty(&ngx_chat_pg_waiting)) {
        ngx_chat_pg_finish(ngx_chat_pg_next(), NULL);
    }
}


static void
ngx_chat_pg_finish(ngx_chat_pg_query_t *q, PGresult *res)
{
    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    q->conn = NULL;

    if (!q->cancelled) {
        q->handler(q->data, res);
    }

    ngx_free(q);
}
