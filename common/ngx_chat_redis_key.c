
/*
 * Redis keys and channels, the shape of a pub/sub push, and commands in
 * printf form: what the adapter (ngx_chat_redis.c) and its callers share,
 * with no connection state, so that the fuzz targets (fuzz/) link them
 * alone.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_redis.h"


ngx_chat_redis_cmd_t *
ngx_chat_redis_command(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log, const char *format, ...)
{
    va_list                args;
    ngx_chat_redis_cmd_t  *cmd;

    va_start(args, format);
    cmd = ngx_chat_redis_vcommand(handler, data, log, format, args);
    va_end(args);

    return cmd;
}


/*
 * "<prefix><name><value>"; with tag, the value in braces: a Redis Cluster
 * hash tag, so that keys that one EVAL touches together share a slot.
 */

ngx_int_t
ngx_chat_redis_key(ngx_pool_t *pool, const char *name, ngx_str_t *value,
    ngx_uint_t tag, ngx_str_t *key)
{
    size_t   size;
    u_char  *buf;

    size = ngx_chat_redis_prefix()->len + ngx_strlen(name) + value->len
           + 2 * tag;

    buf = ngx_pnalloc(pool, size);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    return ngx_chat_redis_key_buf(buf, size, name, value, tag, key);
}


/* the same into the caller's buffer: NGX_ERROR when it is too small */

ngx_int_t
ngx_chat_redis_key_buf(u_char *buf, size_t size, const char *name,
    ngx_str_t *value, ngx_uint_t tag, ngx_str_t *key)
{
    u_char     *p;
    size_t      len;
    ngx_str_t  *prefix;

    prefix = ngx_chat_redis_prefix();
    len = ngx_strlen(name);

    if (prefix->len + len + value->len + 2 * tag > size) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, prefix->data, prefix->len);
    p = ngx_cpymem(p, name, len);

    if (tag) {
        *p++ = '{';
    }

    p = ngx_cpymem(p, value->data, value->len);

    if (tag) {
        *p++ = '}';
    }

    key->data = buf;
    key->len = p - buf;

    return NGX_OK;
}


/*
 * A push of the subscriber connection, ["message", channel, message] or
 * ["subscribe", channel, count] and the like: its kind and channel, and
 * the message when the third element is a string (else message->data is
 * NULL); NGX_DECLINED for anything of another shape.
 */

ngx_int_t
ngx_chat_redis_push(redisReply *r, ngx_str_t *kind, ngx_str_t *channel,
    ngx_str_t *message)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || r->element[0]->type != REDIS_REPLY_STRING
        || r->element[1]->type != REDIS_REPLY_STRING)
    {
        return NGX_DECLINED;
    }

    kind->data = (u_char *) r->element[0]->str;
    kind->len = r->element[0]->len;
    channel->data = (u_char *) r->element[1]->str;
    channel->len = r->element[1]->len;

    if (r->element[2]->type == REDIS_REPLY_STRING) {
        message->data = (u_char *) r->element[2]->str;
        message->len = r->element[2]->len;

    } else {
        ngx_str_null(message);
    }

    return NGX_OK;
}
