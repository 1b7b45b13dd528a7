
/*
 * Fan-out (ngx_chat_fanout.h): a message for one user is one PUBLISH;
 * for several, one EVAL publishes it to up to NGX_CHAT_FANOUT_MAX
 * channels, so a message to a group of 1024 costs four commands.
 *
 * A fan-out is kept until Redis has taken all of it.  One that Redis did
 * not take (the command link down, a timeout, the link lost with it in
 * flight, chat_redis_max_pending commands in flight already) waits in a
 * bounded queue and goes again, whole, as soon as the command link is
 * back, or after NGX_CHAT_FANOUT_AGAIN while it is up: receivers drop
 * what they have already (a message by its seq; receipts and notices are
 * idempotent).  One warning when fan-outs start to wait, a notice when
 * none waits any more; each one at info.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_fanout.h"
#include "ngx_chat_redis.h"
#include "ngx_chat_metrics.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_FANOUT_MAX          256   /* channels in one command */
#define NGX_CHAT_FANOUT_CHANNEL_MAX  (64 + 8 + NGX_INT64_LEN)
#define NGX_CHAT_FANOUT_RETRY        4096  /* fan-outs waiting for Redis */
#define NGX_CHAT_FANOUT_RETRY_SIZE   (8 * 1024 * 1024)    /* their bytes */
#define NGX_CHAT_FANOUT_AGAIN        250   /* ms, the link up all along */


typedef struct {
    ngx_queue_t                queue;    /* while waiting for Redis */
    ngx_uint_t                 refs;     /* its commands in flight */
    const char                *name;
    const char                *what;
    ngx_str_t                  users;
    ngx_str_t                  message;
    size_t                     size;
    unsigned                   failed:1; /* a command of it did not go */
} ngx_chat_fanout_t;


static void ngx_chat_fanout_run(ngx_chat_fanout_t *f, ngx_log_t *log);
static ngx_int_t ngx_chat_fanout_send(ngx_chat_fanout_t *f, ngx_uint_t n,
    const char **argv, size_t *argvlen, ngx_log_t *log);
static void ngx_chat_fanout_published(void *data, redisReply *reply);
static void ngx_chat_fanout_done(ngx_chat_fanout_t *f);
static void ngx_chat_fanout_link(void);
static void ngx_chat_fanout_again(ngx_event_t *ev);


static char  ngx_chat_fanout_lua[] =
    "for i = 1, #KEYS do redis.call('PUBLISH', KEYS[i], ARGV[1]) end "
    "return #KEYS";


static ngx_queue_t  ngx_chat_fanout_retry;
static ngx_uint_t   ngx_chat_fanout_nretry;
static size_t       ngx_chat_fanout_retry_size;
static ngx_event_t  ngx_chat_fanout_again_ev;


ngx_int_t
ngx_chat_fanout_init_worker(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_chat_fanout_retry);

    ngx_chat_event_init(&ngx_chat_fanout_again_ev, ngx_chat_fanout_again,
                        cycle->log);
    ngx_chat_fanout_again_ev.cancelable = 1;

    return ngx_chat_redis_on_link(ngx_chat_fanout_link);
}


void
ngx_chat_fanout_exit_worker(void)
{
    ngx_queue_t  *q;

    if (ngx_chat_fanout_retry.next == NULL) {
        return;
    }

    if (ngx_chat_fanout_again_ev.timer_set) {
        ngx_del_timer(&ngx_chat_fanout_again_ev);
    }

    while (!ngx_queue_empty(&ngx_chat_fanout_retry)) {
        q = ngx_queue_head(&ngx_chat_fanout_retry);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_chat_fanout_t, queue));
    }
}


ngx_int_t
ngx_chat_fanout(const char *name, ngx_str_t *users, ngx_str_t *message,
    const char *what, ngx_log_t *log)
{
    ngx_uint_t          failed;
    ngx_chat_fanout_t  *f;

    f = ngx_alloc(sizeof(ngx_chat_fanout_t) + users->len + message->len,
                  log);
    if (f == NULL) {
        ngx_chat_metrics_add(publish_failures, 1);
        return NGX_ERROR;
    }

    f->refs = 0;
    f->name = name;
    f->what = what;
    f->size = sizeof(ngx_chat_fanout_t) + users->len + message->len;
    f->failed = 0;

    f->users.data = (u_char *) (f + 1);
    f->users.len = users->len;
    ngx_memcpy(f->users.data, users->data, users->len);

    f->message.data = f->users.data + users->len;
    f->message.len = message->len;
    ngx_memcpy(f->message.data, message->data, message->len);

    ngx_chat_fanout_run(f, log);

    if (f->failed) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "%s not published: Redis did not take it (kept to go "
                      "again)", what);
    }

    failed = f->failed;

    /* nothing in flight: to no channel at all, or waiting for Redis */

    if (f->refs == 0) {
        ngx_chat_fanout_done(f);
    }

    return failed ? NGX_ERROR : NGX_OK;
}


/* the commands of a fan-out: one a NGX_CHAT_FANOUT_MAX channels */

static void
ngx_chat_fanout_run(ngx_chat_fanout_t *f, ngx_log_t *log)
{
    u_char      *p, *last, *comma, *buf, *b;
    size_t       argvlen[3 + NGX_CHAT_FANOUT_MAX + 1];
    ngx_str_t    user, channel;
    ngx_uint_t   n;
    const char  *argv[3 + NGX_CHAT_FANOUT_MAX + 1];

    buf = ngx_alloc(NGX_CHAT_FANOUT_MAX * NGX_CHAT_FANOUT_CHANNEL_MAX, log);
    if (buf == NULL) {
        f->failed = 1;
        return;
    }

    n = 0;
    b = buf;

    p = f->users.data;
    last = p + f->users.len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');

        user.data = p;
        user.len = (comma ? comma : last) - p;
        p = comma ? comma + 1 : last;

        /* not an id: nothing to publish to */

        if (ngx_chat_redis_key_buf(b, NGX_CHAT_FANOUT_CHANNEL_MAX, f->name,
                                   &user, 0, &channel)
            == NGX_OK)
        {
            argv[3 + n] = (char *) channel.data;
            argvlen[3 + n] = channel.len;
            b += channel.len;
            n++;
        }

        if (n == NGX_CHAT_FANOUT_MAX || (n && p == last)) {
            if (ngx_chat_fanout_send(f, n, argv, argvlen, log) != NGX_OK) {
                f->failed = 1;
            }

            n = 0;
            b = buf;
        }
    }

    ngx_free(buf);
}


/* argv[3 ...] holds the n channels; the message goes after them */

static ngx_int_t
ngx_chat_fanout_send(ngx_chat_fanout_t *f, ngx_uint_t n, const char **argv,
    size_t *argvlen, ngx_log_t *log)
{
    u_char                 count[NGX_INT_T_LEN];
    ngx_chat_redis_cmd_t  *cmd;

    argv[3 + n] = (char *) f->message.data;
    argvlen[3 + n] = f->message.len;

    if (n == 1) {
        argv[2] = "PUBLISH";
        argvlen[2] = sizeof("PUBLISH") - 1;

        cmd = ngx_chat_redis_command_argv(ngx_chat_fanout_published, f, log,
                                          3, argv + 2, argvlen + 2);

    } else {
        argv[0] = "EVAL";
        argvlen[0] = sizeof("EVAL") - 1;
        argv[1] = ngx_chat_fanout_lua;
        argvlen[1] = sizeof(ngx_chat_fanout_lua) - 1;
        argv[2] = (char *) count;
        argvlen[2] = ngx_sprintf(count, "%ui", n) - count;

        cmd = ngx_chat_redis_command_argv(ngx_chat_fanout_published, f, log,
                                          4 + n, argv, argvlen);
    }

    if (cmd == NULL) {
        ngx_chat_metrics_add(publish_failures, 1);
        return NGX_ERROR;
    }

    f->refs++;

    return NGX_OK;
}


static void
ngx_chat_fanout_published(void *data, redisReply *reply)
{
    ngx_chat_fanout_t  *f = data;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_chat_metrics_add(publish_failures, 1);

        /* the caller may be gone: a request's log with it */

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "%s not published%s%*s", f->what,
                      reply ? ": " : " (kept to go again)",
                      reply ? (size_t) reply->len : 0,
                      reply ? reply->str : "");

        f->failed = 1;
    }

    if (--f->refs == 0) {
        ngx_chat_fanout_done(f);
    }
}


/*
 * Redis took all of it, or the fan-out waits to go again, whole; past the
 * bounds of the queue the oldest waiting fan-out goes for good (online
 * devices then read it from PostgreSQL: a gap fill, their next sync).
 */

static void
ngx_chat_fanout_done(ngx_chat_fanout_t *f)
{
    ngx_queue_t        *q;
    ngx_chat_fanout_t  *old;

    if (!f->failed) {
        ngx_free(f);
        return;
    }

    if (ngx_queue_empty(&ngx_chat_fanout_retry)) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "chat: fan-outs wait for Redis to take them");
    }

    ngx_queue_insert_tail(&ngx_chat_fanout_retry, &f->queue);
    ngx_chat_fanout_nretry++;
    ngx_chat_fanout_retry_size += f->size;

    if (!ngx_chat_fanout_again_ev.timer_set) {
        ngx_add_timer(&ngx_chat_fanout_again_ev, NGX_CHAT_FANOUT_AGAIN);
    }

    while (ngx_chat_fanout_nretry > NGX_CHAT_FANOUT_RETRY
           || ngx_chat_fanout_retry_size > NGX_CHAT_FANOUT_RETRY_SIZE)
    {
        q = ngx_queue_head(&ngx_chat_fanout_retry);
        ngx_queue_remove(q);

        old = ngx_queue_data(q, ngx_chat_fanout_t, queue);
        ngx_chat_fanout_nretry--;
        ngx_chat_fanout_retry_size -= old->size;

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "%s dropped: too many waiting for Redis", old->what);
        ngx_free(old);
    }
}


/* the link did not go down (Redis was busy, a command failed): again */

static void
ngx_chat_fanout_again(ngx_event_t *ev)
{
    if (ngx_chat_redis_up()) {
        ngx_chat_fanout_link();
    }

    /* else the link handler sends them once it is back */
}


/* the command link is back: what waited goes, in order */

static void
ngx_chat_fanout_link(void)
{
    ngx_queue_t         *q, waiting;
    ngx_chat_fanout_t   *f;

    if (ngx_queue_empty(&ngx_chat_fanout_retry)) {
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "chat: %ui fan-outs go again", ngx_chat_fanout_nretry);

    if (ngx_chat_fanout_again_ev.timer_set) {
        ngx_del_timer(&ngx_chat_fanout_again_ev);
    }

    ngx_queue_init(&waiting);
    ngx_queue_add(&waiting, &ngx_chat_fanout_retry);
    ngx_queue_init(&ngx_chat_fanout_retry);
    ngx_chat_fanout_nretry = 0;
    ngx_chat_fanout_retry_size = 0;

    while (!ngx_queue_empty(&waiting)) {
        q = ngx_queue_head(&waiting);
        ngx_queue_remove(q);

        f = ngx_queue_data(q, ngx_chat_fanout_t, queue);
        f->failed = 0;

        ngx_chat_fanout_run(f, ngx_cycle->log);

        if (f->refs == 0) {
            ngx_chat_fanout_done(f);
        }
    }

    if (ngx_queue_empty(&ngx_chat_fanout_retry)) {
        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "chat: no fan-out waits for Redis any more");
    }
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


/*
 * Who may watch the user, or see their last seen, changed (privacy, a
 * chat left, a first message in a direct chat): {"type":"recheck"} to
 * the user's watchers and to the user, wherever they are; the presence
 * feature checks those watches again.
 */

void
ngx_chat_fanout_recheck(ngx_str_t *user, ngx_log_t *log)
{
    ngx_str_t  message = ngx_string("{\"type\":\"recheck\"}");

    (void) ngx_chat_fanout("pc:", user, &message, "chat presence: recheck",
                           log);
    (void) ngx_chat_fanout("u:", user, &message, "chat presence: recheck",
                           log);
}
