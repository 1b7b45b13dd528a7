
/*
 * ngx_chat_module: directives and worker start/stop.  The runtime lives
 * in the files named for their job (ngx_chat_ws_*.c, ngx_chat_echo.c).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws_conn.h"


static char *ngx_chat_ws_echo(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_chat_ws_protocols(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_chat_not_zero(ngx_conf_t *cf, void *post, void *data);
static void *ngx_chat_create_loc_conf(ngx_conf_t *cf);
static char *ngx_chat_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_chat_init_process(ngx_cycle_t *cycle);
static void ngx_chat_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_handler_pt  ngx_chat_not_zero_p = ngx_chat_not_zero;


static ngx_command_t  ngx_chat_commands[] = {

    { ngx_string("chat_ws_echo"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_chat_ws_echo,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

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


static ngx_http_module_t  ngx_chat_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

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
    return ngx_chat_ws_init_worker(cycle);
}


static void
ngx_chat_exit_process(ngx_cycle_t *cycle)
{
    ngx_chat_ws_exit_worker(cycle);
}


static char *
ngx_chat_ws_echo(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another content handler";
    }

    clcf->handler = ngx_chat_echo_handler;

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

    return NGX_CONF_OK;
}
