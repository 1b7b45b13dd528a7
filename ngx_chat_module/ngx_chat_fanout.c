
/*
 * Fan-out (ngx_chat_fanout.h): a message for one user is one PUBLISH;
 * for several, one EVAL publishes it to up to NGX_CHAT_FANOUT_MAX
 * channels, so a message to a group of 1024 costs four commands.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_fanout.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_metrics.h"


#define NGX_CHAT_FANOUT_MAX          256   /* channels in one command */
#define NGX_CHAT_FANOUT_CHANNEL_MAX  (64 + 8 + NGX_INT64_LEN)


static ngx_int_t ngx_chat_fanout_send(ngx_uint_t n, const char **argv,
    size_t *argvlen, ngx_str_t *message, const char *what, ngx_log_t *log);
static void ngx_chat_fanout_published(void *data, redisReply *reply);


static char  ngx_chat_fanout_lua[] =
    "for i = 1, #KEYS do redis.call('PUBLISH', KEYS[i], ARGV[1]) end "
    "return #KEYS";


ngx_int_t
ngx_chat_fanout(const char *name, ngx_str_t *users, ngx_str_t *message,
    const char *what, ngx_log_t *log)
{
    u_char      *p, *last, *comma, *buf, *b;
    size_t       argvlen[3 + NGX_CHAT_FANOUT_MAX + 1];
    ngx_int_t    rc;
    ngx_str_t    user, channel;
    ngx_uint_t   n;
    const char  *argv[3 + NGX_CHAT_FANOUT_MAX + 1];

    buf = ngx_alloc(NGX_CHAT_FANOUT_MAX * NGX_CHAT_FANOUT_CHANNEL_MAX, log);
    if (buf == NULL) {
        ngx_chat_metrics_add(publish_failures, 1);
        return NGX_ERROR;
    }

    rc = NGX_OK;
    n = 0;
    b = buf;

    p = users->data;
    last = p + users->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');

        user.data = p;
        user.len = (comma ? comma : last) - p;
        p = comma ? comma + 1 : last;

        /* not an id: nothing to publish to */

        if (ngx_chat_redis_key_buf(b, NGX_CHAT_FANOUT_CHANNEL_MAX, name,
                                   &user, 0, &channel)
            == NGX_OK)
        {
            argv[3 + n] = (char *) channel.data;
            argvlen[3 + n] = channel.len;
            b += channel.len;
            n++;
        }

        if (n == NGX_CHAT_FANOUT_MAX || (n && p == last)) {
            if (ngx_chat_fanout_send(n, argv, argvlen, message, what, log)
                != NGX_OK)
            {
                rc = NGX_ERROR;
            }

            n = 0;
            b = buf;
        }
    }

    ngx_free(buf);

    return rc;
}


/*
 * A mark that moved: {"type":"receipt","chat_id","user_id","status",
 * "seq"} to each of the authors ("id,id"), and, with device set, to the
 * user's own channel, tagged with that device ("device_id"), whose
 * sessions skip it: the reader's own other devices learn of their read.
 * The ids are PostgreSQL's, digits only.
 */

ngx_int_t
ngx_chat_fanout_receipt(ngx_str_t *chat, ngx_str_t *user, const char *status,
    int64_t seq, ngx_str_t *authors, ngx_str_t *device, ngx_log_t *log)
{
    u_char     buf[sizeof("{\"type\":\"receipt\",\"chat_id\":\"\","
                          "\"user_id\":\"\",\"status\":\"delivered\","
                          "\"seq\":,\"device_id\":\"\"}")
                   + 4 * NGX_INT64_LEN];
    ngx_str_t  receipt;
    ngx_int_t  rc;

    if (chat->len > NGX_INT64_LEN || user->len > NGX_INT64_LEN
        || (device && device->len > NGX_INT64_LEN))
    {
        return NGX_ERROR;
    }

    receipt.data = buf;
    receipt.len = ngx_sprintf(buf, "{\"type\":\"receipt\",\"chat_id\":\"%V\","
                              "\"user_id\":\"%V\",\"status\":\"%s\","
                              "\"seq\":%L}", chat, user, status, seq)
                  - buf;

    rc = NGX_OK;

    if (authors && authors->len
        && ngx_chat_fanout("u:", authors, &receipt, "chat: receipt", log)
           != NGX_OK)
    {
        rc = NGX_ERROR;
    }

    if (device == NULL) {
        return rc;
    }

    receipt.len--;
    receipt.len = ngx_sprintf(buf + receipt.len, ",\"device_id\":\"%V\"}",
                              device)
                  - buf;

    if (ngx_chat_fanout("u:", user, &receipt, "chat: receipt", log)
        != NGX_OK)
    {
        rc = NGX_ERROR;
    }

    return rc;
}


/* argv[3 ...] holds the n channels; the message goes after them */

static ngx_int_t
ngx_chat_fanout_send(ngx_uint_t n, const char **argv, size_t *argvlen,
    ngx_str_t *message, const char *what, ngx_log_t *log)
{
    u_char                 count[NGX_INT_T_LEN];
    ngx_chat_redis_cmd_t  *cmd;

    argv[3 + n] = (char *) message->data;
    argvlen[3 + n] = message->len;

    if (n == 1) {
        argv[2] = "PUBLISH";
        argvlen[2] = sizeof("PUBLISH") - 1;

        cmd = ngx_chat_redis_command_argv(ngx_chat_fanout_published,
                                          (void *) what, log, 3, argv + 2,
                                          argvlen + 2);

    } else {
        argv[0] = "EVAL";
        argvlen[0] = sizeof("EVAL") - 1;
        argv[1] = ngx_chat_fanout_lua;
        argvlen[1] = sizeof(ngx_chat_fanout_lua) - 1;
        argv[2] = (char *) count;
        argvlen[2] = ngx_sprintf(count, "%ui", n) - count;

        cmd = ngx_chat_redis_command_argv(ngx_chat_fanout_published,
                                          (void *) what, log, 4 + n, argv,
                                          argvlen);
    }

    if (cmd == NULL) {
        ngx_chat_metrics_add(publish_failures, 1);
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "%s not published: Redis is down", what);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_chat_fanout_published(void *data, redisReply *reply)
{
    const char  *what = data;

    if (reply && reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_chat_metrics_add(publish_failures, 1);

    /* the caller may be gone: a request's log with it */

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "%s not published%s%*s", what,
                  reply ? ": " : "", reply ? (size_t) reply->len : 0,
                  reply ? reply->str : "");
}
