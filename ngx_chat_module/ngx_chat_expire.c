
/*
 * chat_message_ttl: a sweep in the background, off the hot path, deletes
 * messages older than the TTL in batches (chat_expire() in PostgreSQL).
 * Worker 0 of each nginx runs it; sweeps of several hosts at once only
 * skip each other's rows.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_EXPIRE_BATCH  "10000"


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
    u_char     ttl[NGX_TIME_T_LEN];
    ngx_str_t  params[2];

    params[0].data = ttl;
    params[0].len = ngx_sprintf(ttl, "%T", ngx_chat_expire_conf->message_ttl)
                    - ttl;
    ngx_str_set(&params[1], NGX_CHAT_EXPIRE_BATCH);

    ngx_chat_expire_query = ngx_chat_pg_query(
                                "SELECT chat_expire($1, $2)", 2, params,
                                ngx_chat_expire_swept, NULL, ev->log);

    if (ngx_chat_expire_query == NULL) {
        ngx_add_timer(ev, ngx_chat_expire_conf->expire_interval);
    }
}


static void
ngx_chat_expire_swept(void *data, PGresult *res)
{
    ngx_int_t  n;

    ngx_chat_expire_query = NULL;
    n = 0;

    if (ngx_chat_pg_ok(res) && PQntuples(res) == 1) {
        n = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                     PQgetlength(res, 0, 0));
    }

    if (n > 0) {
        ngx_log_error(NGX_LOG_INFO, ngx_chat_expire_ev.log, 0,
                      "chat: %i messages expired", n);
    }

    /* a full batch: more are waiting, go on at once */

    ngx_add_timer(&ngx_chat_expire_ev,
                  n == ngx_atoi((u_char *) NGX_CHAT_EXPIRE_BATCH,
                                sizeof(NGX_CHAT_EXPIRE_BATCH) - 1)
                  ? 1 : ngx_chat_expire_conf->expire_interval);
}
