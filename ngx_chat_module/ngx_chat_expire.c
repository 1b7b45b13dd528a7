
/*
 * chat_message_ttl and chat_resend_window: a sweep in the background, off
 * the hot path, deletes messages older than the TTL and forgets the ids of
 * messages deleted longer than the window ago, in batches (chat_expire()
 * and chat_forget_sent() in PostgreSQL). Worker 0 of each nginx runs it;
 * sweeps of several hosts at once only skip each other's rows.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_EXPIRE_BATCH  10000


static void ngx_chat_expire_sweep(ngx_event_t *ev);
static void ngx_chat_expire_swept(void *data, PGresult *res);


static ngx_event_t           ngx_chat_expire_ev;
static ngx_chat_main_conf_t *ngx_chat_expire_conf;
static ngx_chat_pg_query_t  *ngx_chat_expire_query;


ngx_int_t
ngx_chat_expire_init_worker(ngx_chat_main_conf_t *cmcf, ngx_cycle_t *cycle)
{
    if (ngx_worker != 0 || cmcf->pg.conninfo.len == 0) {
        return NGX_OK;
    }

    ngx_chat_expire_conf = cmcf;

    ngx_chat_event_init(&ngx_chat_expire_ev, ngx_chat_expire_sweep,
                        cycle->log);
    ngx_chat_expire_ev.cancelable = 1;

    ngx_add_timer(&ngx_chat_expire_ev, cmcf->expire_interval);

    return NGX_OK;
}


void
ngx_chat_expire_exit_worker(void)
{
    if (ngx_chat_expire_ev.timer_set) {
        ngx_del_timer(&ngx_chat_expire_ev);
    }

    if (ngx_chat_expire_query) {
        ngx_chat_pg_cancel(ngx_chat_expire_query);
        ngx_chat_expire_query = NULL;
    }
}


static void
ngx_chat_expire_sweep(ngx_event_t *ev)
{
    u_char     ttl[NGX_TIME_T_LEN], window[NGX_TIME_T_LEN];
    u_char     batch[NGX_INT_T_LEN];
    ngx_str_t  params[3];

    params[0].data = ttl;
    params[0].len = ngx_sprintf(ttl, "%T", ngx_chat_expire_conf->message_ttl)
                    - ttl;
    params[1].data = window;
    params[1].len = ngx_sprintf(window, "%T",
                                ngx_chat_expire_conf->resend_window)
                    - window;
    params[2].data = batch;
    params[2].len = ngx_sprintf(batch, "%d", NGX_CHAT_EXPIRE_BATCH) - batch;

    ngx_chat_expire_query = ngx_chat_pg_query(
                                "SELECT chat_expire($1, $3),"
                                " chat_forget_sent($2, $3)", 3, params,
                                ngx_chat_expire_swept, NULL, ev->log);

    if (ngx_chat_expire_query == NULL) {
        ngx_add_timer(ev, ngx_chat_expire_conf->expire_interval);
    }
}


static void
ngx_chat_expire_swept(void *data, PGresult *res)
{
    ngx_int_t  expired, forgotten;

    ngx_chat_expire_query = NULL;
    expired = 0;
    forgotten = 0;

    if (ngx_chat_pg_ok(res) && PQntuples(res) == 1) {
        expired = ngx_chat_pg_int(res, 0, 0);
        forgotten = ngx_chat_pg_int(res, 0, 1);
    }

    if (expired > 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_chat_expire_ev.log, 0,
                      "chat: %i messages expired", expired);
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_chat_expire_ev.log, 0,
                   "chat: %i ids of deleted messages forgotten", forgotten);

    /* a full batch: more are waiting, go on at once */

    ngx_add_timer(&ngx_chat_expire_ev,
                  (expired == NGX_CHAT_EXPIRE_BATCH
                   || forgotten == NGX_CHAT_EXPIRE_BATCH)
                  ? 1 : ngx_chat_expire_conf->expire_interval);
}
