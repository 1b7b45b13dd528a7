
/*
 * Revocation (PROTOCOL.md, section 1): an unlinked device's sockets close
 * with 4001 on whatever worker or host holds them.
 *
 * Fast: DELETE /v1/devices/{id} publishes {"type":"revoke","device_id"}
 * on the user's channel, and the sessions of that device here close.
 *
 * Bounded when that publish is lost (Redis down, the command link down,
 * a SUBSCRIBE that reached Redis after the PUBLISH): every
 * chat_device_check, and soon after the user channels come back from a
 * Redis outage, each worker asks PostgreSQL which of its sessions'
 * devices are gone, a statement for up to NGX_CHAT_REVOKE_BATCH of them,
 * and closes those sessions.  Meanwhile such a device stores nothing:
 * chat_send_batch() refuses a device that is gone, and its session closes.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_REVOKE_BATCH   1024    /* devices in one statement */
#define NGX_CHAT_REVOKE_SOON    1000    /* ms after a Redis outage */


typedef struct {
    int64_t                   *devices;  /* of this worker's sessions */
    ngx_uint_t                 n;
    ngx_uint_t                 next;     /* the next batch starts here */
    ngx_uint_t                 size;
} ngx_chat_revoke_devices_t;


static const char  ngx_chat_revoke_sql[] =
    "SELECT d FROM unnest($1::bigint[]) AS d "
    "WHERE NOT EXISTS (SELECT 1 FROM devices WHERE id = d)";


static ngx_int_t ngx_chat_revoke_init_worker(ngx_cycle_t *cycle);
static void ngx_chat_revoke_exit_worker(ngx_cycle_t *cycle);
static void ngx_chat_revoke_notice(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text);
static void ngx_chat_revoke_resync(ngx_chat_session_t *s);
static void ngx_chat_revoke_timer(ngx_event_t *ev);
static void ngx_chat_revoke_collect(ngx_chat_session_t *s, void *data);
static void ngx_chat_revoke_batch(void);
static void ngx_chat_revoke_checked(void *data, PGresult *res);
static void ngx_chat_revoke_close(ngx_chat_session_t *s, void *data);


static ngx_chat_notice_t  ngx_chat_revoke_notices[] = {
    { ngx_string("revoke"), ngx_chat_revoke_notice },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_revoke_feature = {
    .name = "revoke",
    .notices = ngx_chat_revoke_notices,
    .init_worker = ngx_chat_revoke_init_worker,
    .exit_worker = ngx_chat_revoke_exit_worker,
    .resync = ngx_chat_revoke_resync,
};


static ngx_msec_t                 ngx_chat_revoke_interval;
static ngx_event_t                ngx_chat_revoke_ev;
static ngx_chat_pg_query_t       *ngx_chat_revoke_query;
static ngx_chat_revoke_devices_t  ngx_chat_revoke_devices;


static ngx_int_t
ngx_chat_revoke_init_worker(ngx_cycle_t *cycle)
{
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_chat_module);

    ngx_chat_revoke_interval = cmcf->device_check;

    if (ngx_chat_revoke_interval == 0 || cmcf->pg.conninfo.len == 0) {
        return NGX_OK;
    }

    ngx_chat_event_init(&ngx_chat_revoke_ev, ngx_chat_revoke_timer,
                        cycle->log);
    ngx_chat_revoke_ev.cancelable = 1;

    ngx_add_timer(&ngx_chat_revoke_ev, ngx_chat_revoke_interval);

    return NGX_OK;
}


static void
ngx_chat_revoke_exit_worker(ngx_cycle_t *cycle)
{
    if (ngx_chat_revoke_ev.timer_set) {
        ngx_del_timer(&ngx_chat_revoke_ev);
    }

    if (ngx_chat_revoke_query) {
        ngx_chat_pg_cancel(ngx_chat_revoke_query);
        ngx_chat_revoke_query = NULL;
    }

    ngx_free(ngx_chat_revoke_devices.devices);
    ngx_memzero(&ngx_chat_revoke_devices, sizeof(ngx_chat_revoke_devices_t));
}


/* {"type":"revoke","device_id"}: that device's sessions here close */

static void
ngx_chat_revoke_notice(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text)
{
    int64_t              device;
    ngx_queue_t         *q, *next;
    ngx_chat_session_t  *s;

    if (ngx_chat_session_parse_id(json_object_get(msg, "device_id"), &device)
        != NGX_OK)
    {
        return;
    }

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_chat_session_t, queue);

        ngx_chat_revoke_close(s, &device);
    }
}


/* the user's channel was lost for a while: a revoke may have been too */

static void
ngx_chat_revoke_resync(ngx_chat_session_t *s)
{
    if (ngx_chat_revoke_interval == 0
        || ngx_chat_revoke_query
        || (ngx_chat_revoke_ev.timer_set
            && ngx_chat_revoke_ev.timer.key
               <= ngx_current_msec + NGX_CHAT_REVOKE_SOON))
    {
        return;
    }

    if (ngx_chat_revoke_ev.timer_set) {
        ngx_del_timer(&ngx_chat_revoke_ev);
    }

    ngx_add_timer(&ngx_chat_revoke_ev, NGX_CHAT_REVOKE_SOON);
}


/* the periodic check: the devices of this worker's sessions, in batches */

static void
ngx_chat_revoke_timer(ngx_event_t *ev)
{
    ngx_chat_revoke_devices_t  *d;

    ngx_add_timer(ev, ngx_chat_revoke_interval);

    if (ngx_chat_revoke_query) {
        return;                 /* the last one has not come back */
    }

    d = &ngx_chat_revoke_devices;
    d->n = 0;
    d->next = 0;

    ngx_chat_session_each(ngx_chat_revoke_collect, d);

    ngx_chat_revoke_batch();
}


static void
ngx_chat_revoke_collect(ngx_chat_session_t *s, void *data)
{
    int64_t                    *p;
    ngx_uint_t                  size;
    ngx_chat_revoke_devices_t  *d = data;

    if (d->n == d->size) {
        size = ngx_max(2 * d->size, NGX_CHAT_REVOKE_BATCH);

        p = ngx_alloc(size * sizeof(int64_t), ngx_cycle->log);
        if (p == NULL) {
            return;             /* checked the next time */
        }

        if (d->n) {
            ngx_memcpy(p, d->devices, d->n * sizeof(int64_t));
        }

        ngx_free(d->devices);
        d->devices = p;
        d->size = size;
    }

    d->devices[d->n++] = s->device;
}


static void
ngx_chat_revoke_batch(void)
{
    ngx_uint_t                  i, n;
    ngx_chat_pg_array_t         a;
    ngx_chat_revoke_devices_t  *d;

    d = &ngx_chat_revoke_devices;

    if (d->next == d->n) {
        return;
    }

    n = ngx_min(d->n - d->next, NGX_CHAT_REVOKE_BATCH);

    if (ngx_chat_pg_array_init(&a, n, ngx_cycle->log) != NGX_OK) {
        return;
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_array_add(&a, d->devices[d->next + i]);
    }

    d->next += n;

    ngx_chat_revoke_query = ngx_chat_pg_query(ngx_chat_revoke_sql, 1,
                                              ngx_chat_pg_array_value(&a),
                                              ngx_chat_revoke_checked, NULL,
                                              ngx_cycle->log);
    ngx_chat_pg_array_free(&a);
}


static void
ngx_chat_revoke_checked(void *data, PGresult *res)
{
    int      i, n;
    int64_t  device;

    ngx_chat_revoke_query = NULL;

    if (!ngx_chat_pg_ok(res)) {
        return;                 /* PostgreSQL is away: the next time */
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        device = ngx_chat_pg_int(res, i, 0);
        ngx_chat_session_each(ngx_chat_revoke_close, &device);
    }

    ngx_chat_revoke_batch();
}


static void
ngx_chat_revoke_close(ngx_chat_session_t *s, void *data)
{
    int64_t  *device = data;

    if (s->device == *device) {
        ngx_log_error(NGX_LOG_INFO, s->log, 0,
                      "chat session: device unlinked");
        ngx_chat_session_close(s, NGX_CHAT_CLOSE_UNAUTHORIZED,
                               "device unlinked");
    }
}
