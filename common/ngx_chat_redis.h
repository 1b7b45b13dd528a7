
/*
 * Redis for a worker: one async hiredis connection for commands and one
 * for SUBSCRIBE, both wired into nginx events, reconnecting with backoff.
 *
 *     cmd = ngx_chat_redis_command(handler, data, log, "SET %b %b", ...);
 *     if (cmd == NULL) -> Redis is down, or max_pending commands are in
 *                         flight: answer "unavailable" now
 *     ... handler(data, reply) runs later, once, unless
 *         ngx_chat_redis_cancel(cmd); reply is NULL when the link broke
 *         or the command timed out.
 *
 * Subscriptions are keyed: whoever subscribes a channel owns it and gets
 * what is published there, handler(data, message).  When the link came
 * back after a loss and the channel is subscribed again, the owner gets
 * handler(data, NULL): what was published meanwhile is lost, and it
 * reads PostgreSQL again.  A channel nobody owns any more is
 * unsubscribed by a periodic sweep, so a user whose phone flaps between
 * networks does not churn SUBSCRIBE/UNSUBSCRIBE.
 *
 * ngx_chat_redis_on_link(handler) is told each time the command link is
 * up (again): state kept in Redis with TTLs may have gone meanwhile.
 */

#ifndef _NGX_CHAT_REDIS_H_INCLUDED_
#define _NGX_CHAT_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <hiredis/hiredis.h>


typedef struct ngx_chat_redis_cmd_s  ngx_chat_redis_cmd_t;

typedef void (*ngx_chat_redis_handler_pt)(void *data, redisReply *reply);
typedef void (*ngx_chat_redis_message_pt)(void *data, ngx_str_t *message);
typedef void (*ngx_chat_redis_link_pt)(void);


typedef struct {
    ngx_str_t               host;            /* empty: no Redis */
    in_port_t               port;
    ngx_str_t               unix_path;
    ngx_str_t               prefix;          /* for every key and channel */
    ngx_msec_t              timeout;         /* commands and connects */
    ngx_uint_t              max_pending;     /* commands in flight */
} ngx_chat_redis_conf_t;


ngx_int_t ngx_chat_redis_init_worker(ngx_chat_redis_conf_t *conf,
    ngx_cycle_t *cycle);
void ngx_chat_redis_exit_worker(void);

ngx_chat_redis_cmd_t *ngx_chat_redis_command(ngx_chat_redis_handler_pt handler,
    void *data, ngx_log_t *log, const char *format, ...);
ngx_chat_redis_cmd_t *ngx_chat_redis_vcommand(
    ngx_chat_redis_handler_pt handler, void *data, ngx_log_t *log,
    const char *format, va_list args);
ngx_chat_redis_cmd_t *ngx_chat_redis_command_argv(
    ngx_chat_redis_handler_pt handler, void *data, ngx_log_t *log,
    int argc, const char **argv, const size_t *argvlen);
void ngx_chat_redis_cancel(ngx_chat_redis_cmd_t *cmd);
void ngx_chat_redis_ignore(void *data, redisReply *reply);

ngx_int_t ngx_chat_redis_subscribe(ngx_str_t *channel,
    ngx_chat_redis_message_pt handler, void *data);
void ngx_chat_redis_unsubscribe(ngx_str_t *channel);
ngx_int_t ngx_chat_redis_on_link(ngx_chat_redis_link_pt handler);

ngx_uint_t ngx_chat_redis_up(void);
ngx_str_t *ngx_chat_redis_prefix(void);
ngx_int_t ngx_chat_redis_key(ngx_pool_t *pool, const char *name,
    ngx_str_t *value, ngx_uint_t tag, ngx_str_t *key);
ngx_int_t ngx_chat_redis_key_buf(u_char *buf, size_t size, const char *name,
    ngx_str_t *value, ngx_uint_t tag, ngx_str_t *key);
ngx_int_t ngx_chat_redis_push(redisReply *r, ngx_str_t *kind,
    ngx_str_t *channel, ngx_str_t *message);

/* enough for a user channel with a prefix of up to 64 bytes */
#define NGX_CHAT_REDIS_CHANNEL_MAX  (64 + sizeof("u:") - 1 + NGX_INT64_LEN)

/* the channel of a user's live messages: "<prefix>u:<user_id>" */
#define ngx_chat_redis_user_channel(pool, user_id, channel)                  \
    ngx_chat_redis_key(pool, "u:", user_id, 0, channel)
#define ngx_chat_redis_user_channel_buf(buf, user_id, channel)               \
    ngx_chat_redis_key_buf(buf, sizeof(buf), "u:", user_id, 0, channel)


#endif /* _NGX_CHAT_REDIS_H_INCLUDED_ */
