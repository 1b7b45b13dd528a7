
/*
 * ngx_chat_module: directives and worker start/stop.  The runtime lives
 * in the files named for their job: ws/ (the WebSocket protocol),
 * transport/ (a chat session over a WebSocket or the HTTP fallback),
 * session/ (the session core and its features), api/ (the HTTP API);
 * docs/architecture.md walks through them.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws_conn.h"
#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_metrics.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_rate.h"
#include "ngx_chat_api.h"


static char *ngx_chat_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_send_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_ws_protocols(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_not_zero(ngx_conf_t *cf, void *post, void *data);
static void *ngx_chat_create_main_conf(ngx_conf_t *cf);
static char *ngx_chat_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_chat_create_loc_conf(ngx_conf_t *cf);
static char *ngx_chat_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_chat_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_chat_init_process(ngx_cycle_t *cycle);
static void ngx_chat_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_handler_pt  ngx_chat_not_zero_p = ngx_chat_not_zero;


/* what a chat session can do, in the order the session core asks */

static ngx_chat_feature_t  *ngx_chat_features[] = {
    &ngx_chat_sync_feature,
    &ngx_chat_send_feature,
    &ngx_chat_ack_feature,
    &ngx_chat_receipt_feature,
    &ngx_chat_presence_feature,
    &ngx_chat_revoke_feature,
    &ngx_chat_ping_feature,
    NULL
};


static ngx_command_t  ngx_chat_commands[] = {

    { ngx_string("chat_ws_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_chat_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_chat_echo_handler },

    { ngx_string("chat_ws"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_chat_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_chat_session_handler },

    { ngx_string("chat_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_chat_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_chat_metrics_handler },

    { ngx_string("chat_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_chat_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_chat_api_handler },

    { ngx_string("chat_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, pg.conninfo),
      NULL },

    { ngx_string("chat_postgres_pool_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, pg.pool_size),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_postgres_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, pg.query_timeout),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_postgres_max_waiting"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, pg.max_waiting),
      NULL },

    { ngx_string("chat_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_chat_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis),
      NULL },

    { ngx_string("chat_redis_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis.prefix),
      NULL },

    { ngx_string("chat_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis.timeout),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_redis_down_poll"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis_down_poll),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_redis_max_pending"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, redis.max_pending),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_dev_codes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, dev_codes),
      NULL },

    { ngx_string("chat_max_devices"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, max_devices),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_max_group_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, max_group_size),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_sms_relay"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, sms_relay),
      NULL },

    { ngx_string("chat_presence_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, presence_lease),
      NULL },

    { ngx_string("chat_presence_debounce"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, presence_debounce),
      NULL },

    { ngx_string("chat_device_check"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, device_check),
      NULL },

    { ngx_string("chat_verify_budget"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, verify_budget),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_verify_lock"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, verify_lock),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_codes_per_minute"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, codes_per_minute),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_message_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, message_ttl),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_resend_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, resend_window),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_api_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_chat_main_conf_t, api_max_body),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.max_message_size),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_send_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.send_queue),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.ping_interval),
      NULL },

    { ngx_string("chat_ws_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.idle_timeout),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_close_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.close_timeout),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_auth_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, auth_timeout),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, max_text),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_sync_batch"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, sync_batch),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_send_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_chat_send_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chat_gap_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, gap_wait),
      &ngx_chat_not_zero_p },

    { ngx_string("chat_ws_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.deflate),
      NULL },

    { ngx_string("chat_ws_deflate_client_takeover"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.deflate_client_takeover),
      NULL },

    { ngx_string("chat_ws_protocols"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_chat_ws_protocols,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_chat_loc_conf_t, ws.protocols),
      NULL },

      ngx_null_command
};


static ngx_http_variable_t  ngx_chat_variables[] = {

    { ngx_string("chat_device_key"), NULL, ngx_chat_api_device_key, 0, 0, 0 },

      ngx_http_null_variable
};


static ngx_http_module_t  ngx_chat_module_ctx = {
    ngx_chat_add_variables,                /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_chat_create_main_conf,             /* create main configuration */
    ngx_chat_init_main_conf,               /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_chat_create_loc_conf,              /* create location configuration */
    ngx_chat_merge_loc_conf                /* merge location configuration */
};


ngx_module_t  ngx_chat_module = {
    NGX_MODULE_V1,
    &ngx_chat_module_ctx,                  /* module context */
    ngx_chat_commands,                     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_chat_init_process,                 /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_chat_exit_process,                 /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_chat_init_process(ngx_cycle_t *cycle)
{
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_chat_module);

    if (cmcf == NULL) {
        return NGX_OK;          /* no http block */
    }

    ngx_chat_metrics_init_worker(cmcf->metrics_zone);
    ngx_chat_rate_init_worker(cmcf->rate_zone);

    if (ngx_chat_ws_init_worker(cycle) != NGX_OK
        || ngx_chat_pg_init_worker(&cmcf->pg, cycle) != NGX_OK
        || ngx_chat_redis_init_worker(&cmcf->redis, cycle) != NGX_OK
        || ngx_chat_fanout_init_worker(cycle) != NGX_OK
        || ngx_chat_session_init_worker(ngx_chat_features,
                                        cmcf->redis.host.len
                                        || cmcf->redis.unix_path.len
                                        ? cmcf->redis_down_poll : 0,
                                        cycle)
           != NGX_OK
        || ngx_chat_expire_init_worker(cmcf, cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_chat_exit_process(ngx_cycle_t *cycle)
{
    ngx_chat_ws_exit_worker(cycle);
    ngx_chat_expire_exit_worker();
    ngx_chat_session_exit_worker(cycle);
    ngx_chat_redis_exit_worker();
    ngx_chat_fanout_exit_worker();
    ngx_chat_pg_exit_worker();
}


static ngx_int_t
ngx_chat_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_chat_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* chat_ws_echo, chat_ws, chat_api: cmd->post is the content handler */

static char *
ngx_chat_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    return NGX_CONF_OK;
}


/* chat_send_rate 20r/s [burst=40] | off */

static char *
ngx_chat_send_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_loc_conf_t  *clcf = conf;

    ngx_int_t              n;
    ngx_str_t             *value;
    ngx_chat_main_conf_t  *cmcf;

    if (clcf->send_rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0 && cf->args->nelts == 2) {
        clcf->send_rate = 0;
        clcf->send_burst = 0;
        return NGX_CONF_OK;
    }

    if (value[1].len <= 3
        || ngx_strcmp(value[1].data + value[1].len - 3, "r/s") != 0
        || (n = ngx_atoi(value[1].data, value[1].len - 3)) <= 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\" in \"chat_send_rate\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf->send_rate = n;
    clcf->send_burst = n;

    if (cf->args->nelts == 3) {
        n = (value[2].len > 6 && ngx_strncmp(value[2].data, "burst=", 6) == 0)
            ? ngx_atoi(value[2].data + 6, value[2].len - 6) : NGX_ERROR;

        if (n <= 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid burst \"%V\" in \"chat_send_rate\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        clcf->send_burst = n;
    }

    /* a device's sockets, on every worker, draw from one bucket */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_chat_module);

    if (ngx_chat_rate_init(cf, &cmcf->rate_zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* chat_redis 127.0.0.1:6379 | unix:/path/to/redis.sock */

static char *
ngx_chat_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_chat_main_conf_t  *cmcf = conf;

    ngx_url_t   u;
    ngx_str_t  *value;

    if (cmcf->redis.host.data || cmcf->redis.unix_path.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len > 5 && ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        cmcf->redis.unix_path.len = value[1].len - 5;
        cmcf->redis.unix_path.data = ngx_pnalloc(cf->pool, value[1].len - 4);
        if (cmcf->redis.unix_path.data == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_cpystrn(cmcf->redis.unix_path.data, value[1].data + 5,
                           value[1].len - 4);
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 6379;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid Redis address "
                           "\"%V\"%s%s", &value[1], u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    /* hiredis wants a C string */

    cmcf->redis.host.len = u.host.len;
    cmcf->redis.host.data = ngx_pnalloc(cf->pool, u.host.len + 1);
    if (cmcf->redis.host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    (void) ngx_cpystrn(cmcf->redis.host.data, u.host.data, u.host.len + 1);
    cmcf->redis.port = u.port;

    return NGX_CONF_OK;
}


static char *
ngx_chat_ws_protocols(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char       *p;
    ngx_str_t    *value, *name;
    ngx_uint_t    i;
    ngx_array_t **protocols;

    protocols = (ngx_array_t **) ((char *) conf + cmd->offset);

    if (*protocols != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    *protocols = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                  sizeof(ngx_str_t));
    if (*protocols == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        /* an RFC 7230 token: what may appear in Sec-WebSocket-Protocol */

        for (p = value[i].data; p < value[i].data + value[i].len; p++) {
            if (*p <= ' ' || *p >= 0x7f || ngx_strchr("()<>@,;:\\\"/[]?={}",
                                                      *p))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid subprotocol name \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        name = ngx_array_push(*protocols);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_chat_not_zero(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *sp = data;

    /* size_t and ngx_msec_t slots alike: both are unsigned words */

    if (*sp == 0) {
        return "must not be zero";
    }

    return NGX_CONF_OK;
}


static void *
ngx_chat_create_main_conf(ngx_conf_t *cf)
{
    ngx_chat_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->pg.conninfo = { 0, NULL };
     *     cmcf->redis.host = { 0, NULL };
     *     cmcf->redis.unix_path = { 0, NULL };
     *     cmcf->redis.prefix = { 0, NULL };
     *     cmcf->sms_relay = { 0, NULL };
     */

    cmcf->pg.pool_size = NGX_CONF_UNSET_UINT;
    cmcf->pg.query_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->pg.max_waiting = NGX_CONF_UNSET_UINT;
    cmcf->redis.timeout = NGX_CONF_UNSET_MSEC;
    cmcf->redis_down_poll = NGX_CONF_UNSET_MSEC;
    cmcf->redis.max_pending = NGX_CONF_UNSET_UINT;
    cmcf->dev_codes = NGX_CONF_UNSET;
    cmcf->max_devices = NGX_CONF_UNSET_UINT;
    cmcf->max_group_size = NGX_CONF_UNSET_UINT;
    cmcf->api_max_body = NGX_CONF_UNSET_SIZE;
    cmcf->message_ttl = NGX_CONF_UNSET;
    cmcf->resend_window = NGX_CONF_UNSET;
    cmcf->presence_lease = NGX_CONF_UNSET_MSEC;
    cmcf->presence_debounce = NGX_CONF_UNSET_MSEC;
    cmcf->device_check = NGX_CONF_UNSET_MSEC;
    cmcf->verify_budget = NGX_CONF_UNSET_UINT;
    cmcf->verify_lock = NGX_CONF_UNSET;
    cmcf->codes_per_minute = NGX_CONF_UNSET_UINT;

    return cmcf;
}


static char *
ngx_chat_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_chat_main_conf_t  *cmcf = conf;

    if (ngx_chat_metrics_zone(cf, &cmcf->metrics_zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_uint_value(cmcf->pg.pool_size, 4);
    ngx_conf_init_msec_value(cmcf->pg.query_timeout, 5000);
    ngx_conf_init_uint_value(cmcf->pg.max_waiting, 1024);
    cmcf->pg.connect_timeout = cmcf->pg.query_timeout;

    ngx_conf_init_msec_value(cmcf->redis.timeout, 3000);
    ngx_conf_init_msec_value(cmcf->redis_down_poll, 2000);
    ngx_conf_init_uint_value(cmcf->redis.max_pending, 4096);

    if (cmcf->redis.prefix.data == NULL) {
        ngx_str_set(&cmcf->redis.prefix, "chat:");
    }

    if (cmcf->redis.prefix.len > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chat_redis_prefix\" is longer than 64 bytes");
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(cmcf->dev_codes, 0);
    ngx_conf_init_uint_value(cmcf->max_devices, 5);
    ngx_conf_init_uint_value(cmcf->max_group_size, 1024);
    ngx_conf_init_size_value(cmcf->api_max_body, 16 * 1024);
    ngx_conf_init_value(cmcf->message_ttl, 30 * 86400);
    ngx_conf_init_value(cmcf->resend_window, 600);

    /* a quarter of the shorter of the two, between a second and a minute */
    cmcf->expire_interval = (ngx_msec_t) ngx_max(1, ngx_min(60,
                                 ngx_min(cmcf->message_ttl,
                                         cmcf->resend_window) / 4)) * 1000;

    ngx_conf_init_msec_value(cmcf->presence_lease, 30000);
    ngx_conf_init_msec_value(cmcf->presence_debounce, 3000);
    ngx_conf_init_msec_value(cmcf->device_check, 30000);
    ngx_conf_init_uint_value(cmcf->verify_budget, 10);
    ngx_conf_init_value(cmcf->verify_lock, 6 * 3600);
    ngx_conf_init_uint_value(cmcf->codes_per_minute, 600);

    if (cmcf->presence_lease < 3000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chat_presence_lease\" must be at least 3s");
        return NGX_CONF_ERROR;
    }

    if (cmcf->sms_relay.len && cmcf->sms_relay.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chat_sms_relay\" must be a location URI "
                           "starting with \"/\", not \"%V\"",
                           &cmcf->sms_relay);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_chat_create_loc_conf(ngx_conf_t *cf)
{
    ngx_chat_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_chat_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->ws.max_message_size = NGX_CONF_UNSET_SIZE;
    conf->ws.send_queue = NGX_CONF_UNSET_SIZE;
    conf->ws.ping_interval = NGX_CONF_UNSET_MSEC;
    conf->ws.idle_timeout = NGX_CONF_UNSET_MSEC;
    conf->ws.close_timeout = NGX_CONF_UNSET_MSEC;
    conf->ws.deflate = NGX_CONF_UNSET;
    conf->ws.deflate_client_takeover = NGX_CONF_UNSET;
    conf->ws.protocols = NGX_CONF_UNSET_PTR;
    conf->auth_timeout = NGX_CONF_UNSET_MSEC;
    conf->max_text = NGX_CONF_UNSET_SIZE;
    conf->sync_batch = NGX_CONF_UNSET_UINT;
    conf->gap_wait = NGX_CONF_UNSET_MSEC;
    conf->send_rate = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_chat_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_chat_loc_conf_t  *prev = parent;
    ngx_chat_loc_conf_t  *conf = child;

    ngx_conf_merge_size_value(conf->ws.max_message_size,
                              prev->ws.max_message_size, 128 * 1024);
    ngx_conf_merge_size_value(conf->ws.send_queue, prev->ws.send_queue,
                              256 * 1024);
    ngx_conf_merge_msec_value(conf->ws.ping_interval,
                              prev->ws.ping_interval, 30000);
    ngx_conf_merge_msec_value(conf->ws.idle_timeout, prev->ws.idle_timeout,
                              75000);
    ngx_conf_merge_msec_value(conf->ws.close_timeout,
                              prev->ws.close_timeout, 5000);
    ngx_conf_merge_value(conf->ws.deflate, prev->ws.deflate, 1);
    ngx_conf_merge_value(conf->ws.deflate_client_takeover,
                         prev->ws.deflate_client_takeover, 0);
    ngx_conf_merge_ptr_value(conf->ws.protocols, prev->ws.protocols, NULL);
    ngx_conf_merge_msec_value(conf->auth_timeout, prev->auth_timeout, 10000);
    ngx_conf_merge_size_value(conf->max_text, prev->max_text, 65536);
    ngx_conf_merge_uint_value(conf->sync_batch, prev->sync_batch, 200);
    ngx_conf_merge_msec_value(conf->gap_wait, prev->gap_wait, 200);

    if (conf->send_rate == NGX_CONF_UNSET_UINT) {
        conf->send_rate = (prev->send_rate == NGX_CONF_UNSET_UINT)
                          ? 0 : prev->send_rate;
        conf->send_burst = prev->send_burst;
    }

    return NGX_CONF_OK;
}
