
/*
 * Redis for a worker: two hiredis async contexts (commands, and the
 * SUBSCRIBE link), their sockets wrapped in nginx connections.
 *
 * hiredis' event hooks only say whether it wants to write; both events
 * are armed edge-triggered, so a read drains the socket in a loop and a
 * wish to write is served by a posted write event.  hiredis 0.14 has no
 * timers: connects and commands are timed with nginx timers.  Commands
 * are answered in the order they were sent, so they wait in a FIFO with
 * their deadlines and one timer watches the oldest; a command that times
 * out drops the link (its reply can no longer be matched), which fails
 * every command pending on it.
 *
 * Each channel has one owner, the handler it subscribed with; a channel
 * whose owner let go stays subscribed until the sweep.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <sys/ioctl.h>
#include <hiredis/async.h>

#include "ngx_chat_redis.h"
#include "ngx_chat_event.h"


#define NGX_CHAT_REDIS_BACKOFF_MIN  100
#define NGX_CHAT_REDIS_BACKOFF_MAX  1000

/* the first failed connect of a series is an error, the retries info */
#define ngx_chat_redis_level(link)                                            \
    ((link)->backoff == NGX_CHAT_REDIS_BACKOFF_MIN                            \
     ? NGX_LOG_ERR : NGX_LOG_INFO)
#define NGX_CHAT_REDIS_SWEEP        10000


#define NGX_CHAT_REDIS_LINK_HANDLERS  4


typedef struct {
    redisAsyncContext      *ac;
    ngx_connection_t       *connection;
    ngx_event_t             timer;           /* reconnect, connect timeout */
    ngx_msec_t              backoff;
    const char             *name;
    ngx_queue_t             pending;         /* commands, oldest first */
    ngx_uint_t              npending;
    ngx_event_t             expire;          /* the oldest command's time */
    unsigned                up:1;
    unsigned                subscriber:1;
    unsigned                want_write:1;
    unsigned                writing:1;
} ngx_chat_redis_link_t;


struct ngx_chat_redis_cmd_s {
    ngx_queue_t                 queue;       /* in link->pending */
    ngx_msec_t                  deadline;
    ngx_chat_redis_handler_pt   handler;
    void                       *data;
    unsigned                    cancelled:1;
};


typedef struct {
    ngx_str_node_t              node;
    ngx_chat_redis_message_pt   handler;     /* the owner; NULL: none */
    void                       *data;
    unsigned                    quiet:1;     /* first SUBSCRIBE in flight:
                                                its owner is not told */
} ngx_chat_redis_channel_t;


static void ngx_chat_redis_connect(ngx_chat_redis_link_t *link);
static void ngx_chat_redis_retry(ngx_chat_redis_link_t *link);
static void ngx_chat_redis_timer_handler(ngx_event_t *ev);
static void ngx_chat_redis_event_handler(ngx_event_t *ev);
static void ngx_chat_redis_add_write(void *privdata);
static void ngx_chat_redis_del_write(void *privdata);
static void ngx_chat_redis_noop(void *privdata);
static void ngx_chat_redis_cleanup(void *privdata);
static void ngx_chat_redis_connected(const redisAsyncContext *ac, int status);
static void ngx_chat_redis_disconnected(const redisAsyncContext *ac,
    int status);
static ngx_chat_redis_cmd_t *ngx_chat_redis_cmd_alloc(
    ngx_chat_redis_handler_pt handler, void *data, ngx_log_t *log);
static void ngx_chat_redis_cmd_sent(ngx_chat_redis_cmd_t *cmd);
static void ngx_chat_redis_reply(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_chat_redis_expire(ngx_event_t *ev);
static void ngx_chat_redis_pubsub(redisAsyncContext *ac, void *reply,
    void *privdata);
static void ngx_chat_redis_resubscribe(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static void ngx_chat_redis_sweep(ngx_event_t *ev);
static ngx_chat_redis_channel_t *ngx_chat_redis_channel(ngx_str_t *name,
    uint32_t hash);


static ngx_chat_redis_conf_t      *ngx_chat_redis_conf;
static ngx_log_t                  *ngx_chat_redis_log;
static ngx_chat_redis_link_t       ngx_chat_redis_cmd_link;
static ngx_chat_redis_link_t       ngx_chat_redis_sub_link;
static ngx_rbtree_t                ngx_chat_redis_channels;
static ngx_rbtree_node_t           ngx_chat_redis_sentinel;
static ngx_event_t                 ngx_chat_redis_sweep_ev;
static ngx_chat_redis_link_pt      ngx_chat_redis_link_handlers[
                                       NGX_CHAT_REDIS_LINK_HANDLERS];
static ngx_uint_t                  ngx_chat_redis_exiting;


ngx_int_t
ngx_chat_redis_init_worker(ngx_chat_redis_conf_t *conf, ngx_cycle_t *cycle)
{
    ngx_chat_redis_link_t  *links[2];
    ngx_uint_t              i;

    ngx_rbtree_init(&ngx_chat_redis_channels, &ngx_chat_redis_sentinel,
                    ngx_str_rbtree_insert_value);

    ngx_chat_redis_conf = conf;
    ngx_chat_redis_log = cycle->log;

    if (conf->host.len == 0 && conf->unix_path.len == 0) {
        return NGX_OK;
    }

    ngx_chat_redis_cmd_link.name = "commands";
    ngx_chat_redis_sub_link.name = "subscriptions";
    ngx_chat_redis_sub_link.subscriber = 1;

    links[0] = &ngx_chat_redis_cmd_link;
    links[1] = &ngx_chat_redis_sub_link;

    for (i = 0; i < 2; i++) {
        links[i]->timer.handler = ngx_chat_redis_timer_handler;
        links[i]->timer.data = links[i];
        links[i]->timer.log = cycle->log;
        links[i]->timer.cancelable = 1;
        links[i]->backoff = NGX_CHAT_REDIS_BACKOFF_MIN;
        ngx_queue_init(&links[i]->pending);

        /* not cancelable: a graceful shutdown waits for commands */
        links[i]->expire.handler = ngx_chat_redis_expire;
        links[i]->expire.data = links[i];
        links[i]->expire.log = cycle->log;

        ngx_chat_redis_connect(links[i]);
    }

    ngx_chat_event_init(&ngx_chat_redis_sweep_ev, ngx_chat_redis_sweep,
                        cycle->log);
    ngx_chat_redis_sweep_ev.cancelable = 1;
    ngx_add_timer(&ngx_chat_redis_sweep_ev, NGX_CHAT_REDIS_SWEEP);

    return NGX_OK;
}


void
ngx_chat_redis_exit_worker(void)
{
    ngx_chat_redis_link_t  *links[2];
    ngx_uint_t              i;

    /* replies still owed are not delivered: their owners are gone too */

    ngx_chat_redis_exiting = 1;

    links[0] = &ngx_chat_redis_cmd_link;
    links[1] = &ngx_chat_redis_sub_link;

    for (i = 0; i < 2; i++) {
        if (links[i]->timer.timer_set) {
            ngx_del_timer(&links[i]->timer);
        }

        if (links[i]->ac) {
            redisAsyncFree(links[i]->ac);
        }

        if (links[i]->expire.timer_set) {
            ngx_del_timer(&links[i]->expire);
        }
    }

    if (ngx_chat_redis_sweep_ev.timer_set) {
        ngx_del_timer(&ngx_chat_redis_sweep_ev);
    }
}


ngx_chat_redis_cmd_t *
ngx_chat_redis_vcommand(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log, const char *format, va_list args)
{
    ngx_chat_redis_cmd_t  *cmd;

    cmd = ngx_chat_redis_cmd_alloc(handler, data, log);
    if (cmd == NULL) {
        return NULL;
    }

    if (redisvAsyncCommand(ngx_chat_redis_cmd_link.ac, ngx_chat_redis_reply,
                           cmd, format, args)
        != REDIS_OK)
    {
        ngx_free(cmd);
        return NULL;
    }

    ngx_chat_redis_cmd_sent(cmd);

    return cmd;
}


ngx_chat_redis_cmd_t *
ngx_chat_redis_command_argv(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log, int argc, const char **argv, const size_t *argvlen)
{
    ngx_chat_redis_cmd_t  *cmd;

    cmd = ngx_chat_redis_cmd_alloc(handler, data, log);
    if (cmd == NULL) {
        return NULL;
    }

    if (redisAsyncCommandArgv(ngx_chat_redis_cmd_link.ac,
                              ngx_chat_redis_reply, cmd, argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_free(cmd);
        return NULL;
    }

    ngx_chat_redis_cmd_sent(cmd);

    return cmd;
}


static ngx_chat_redis_cmd_t *
ngx_chat_redis_cmd_alloc(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log)
{
    ngx_chat_redis_cmd_t   *cmd;
    ngx_chat_redis_link_t  *link;

    link = &ngx_chat_redis_cmd_link;

    if (!link->up) {
        return NULL;
    }

    if (link->npending >= ngx_chat_redis_conf->max_pending) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "redis: %ui commands in flight, refusing more",
                      link->npending);
        return NULL;
    }

    cmd = ngx_alloc(sizeof(ngx_chat_redis_cmd_t), log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->cancelled = 0;

    return cmd;
}


static void
ngx_chat_redis_cmd_sent(ngx_chat_redis_cmd_t *cmd)
{
    ngx_chat_redis_link_t  *link;

    link = &ngx_chat_redis_cmd_link;

    cmd->deadline = ngx_current_msec + ngx_chat_redis_conf->timeout;

    ngx_queue_insert_tail(&link->pending, &cmd->queue);
    link->npending++;

    if (!link->expire.timer_set) {
        ngx_add_timer(&link->expire, ngx_chat_redis_conf->timeout);
    }
}


void
ngx_chat_redis_cancel(ngx_chat_redis_cmd_t *cmd)
{
    /* hiredis still owes the reply: the command is freed when it comes */
    cmd->cancelled = 1;
}


/* for commands whose outcome nobody waits for */

void
ngx_chat_redis_ignore(void *data, redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, ngx_chat_redis_log, 0,
                      "redis: %*s", (size_t) reply->len, reply->str);
    }
}


ngx_int_t
ngx_chat_redis_subscribe(ngx_str_t *channel,
    ngx_chat_redis_message_pt handler, void *data)
{
    uint32_t                   hash;
    ngx_chat_redis_channel_t  *ch;

    hash = ngx_crc32_long(channel->data, channel->len);
    ch = ngx_chat_redis_channel(channel, hash);

    if (ch) {
        if (ch->handler) {
            ngx_log_error(NGX_LOG_ALERT, ngx_chat_redis_log, 0,
                          "redis: channel \"%V\" has an owner already",
                          channel);
            return NGX_ERROR;
        }

        /* its owner let go, but the sweep has not run: still subscribed */

        ch->handler = handler;
        ch->data = data;

        return NGX_OK;
    }

    ch = ngx_alloc(sizeof(ngx_chat_redis_channel_t) + channel->len,
                   ngx_chat_redis_log);
    if (ch == NULL) {
        return NGX_ERROR;
    }

    ch->node.node.key = hash;
    ch->node.str.len = channel->len;
    ch->node.str.data = (u_char *) (ch + 1);
    ngx_memcpy(ch->node.str.data, channel->data, channel->len);
    ch->handler = handler;
    ch->data = data;
    ch->quiet = 0;

    ngx_rbtree_insert(&ngx_chat_redis_channels, &ch->node.node);

    /*
     * Subscribed with the link up, its owner reads PostgreSQL after this:
     * the confirmation is not news.  Subscribed with the link down, its
     * owner is told once the link is back and the channel subscribed.
     */

    if (ngx_chat_redis_sub_link.up
        && redisAsyncCommand(ngx_chat_redis_sub_link.ac,
                             ngx_chat_redis_pubsub, NULL, "SUBSCRIBE %b",
                             channel->data, channel->len)
           == REDIS_OK)
    {
        ch->quiet = 1;
    }

    return NGX_OK;
}


void
ngx_chat_redis_unsubscribe(ngx_str_t *channel)
{
    ngx_chat_redis_channel_t  *ch;

    ch = ngx_chat_redis_channel(channel,
                                ngx_crc32_long(channel->data, channel->len));

    if (ch) {
        ch->handler = NULL;
        ch->data = NULL;
    }
}


ngx_int_t
ngx_chat_redis_on_link(ngx_chat_redis_link_pt handler)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_CHAT_REDIS_LINK_HANDLERS; i++) {
        if (ngx_chat_redis_link_handlers[i] == NULL) {
            ngx_chat_redis_link_handlers[i] = handler;
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


ngx_uint_t
ngx_chat_redis_up(void)
{
    return ngx_chat_redis_cmd_link.up && ngx_chat_redis_sub_link.up;
}


ngx_str_t *
ngx_chat_redis_prefix(void)
{
    return &ngx_chat_redis_conf->prefix;
}


static void
ngx_chat_redis_connect(ngx_chat_redis_link_t *link)
{
    ngx_connection_t       *c;
    redisAsyncContext      *ac;
    ngx_chat_redis_conf_t  *conf;

    conf = ngx_chat_redis_conf;

    if (conf->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) conf->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) conf->host.data, conf->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_chat_redis_log, 0,
                      "redis: %s: out of memory", link->name);
        ngx_chat_redis_retry(link);
        return;
    }

    if (ac->err) {
        ngx_log_error(ngx_chat_redis_level(link), ngx_chat_redis_log, 0,
                      "redis: %s: connect failed: %s", link->name,
                      ac->errstr);
        redisAsyncFree(ac);
        ngx_chat_redis_retry(link);
        return;
    }

    c = ngx_get_connection(ac->c.fd, ngx_chat_redis_log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_chat_redis_retry(link);
        return;
    }

    c->data = link;
    c->read->handler = ngx_chat_redis_event_handler;
    c->write->handler = ngx_chat_redis_event_handler;
    c->read->log = ngx_chat_redis_log;
    c->write->log = ngx_chat_redis_log;

    if (ngx_add_conn == NULL || ngx_add_conn(c) != NGX_OK) {
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
        redisAsyncFree(ac);
        ngx_chat_redis_retry(link);
        return;
    }

    link->ac = ac;
    link->connection = c;

    ac->ev.data = link;
    ac->ev.addRead = ngx_chat_redis_noop;
    ac->ev.delRead = ngx_chat_redis_noop;
    ac->ev.addWrite = ngx_chat_redis_add_write;
    ac->ev.delWrite = ngx_chat_redis_del_write;
    ac->ev.cleanup = ngx_chat_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_chat_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_chat_redis_disconnected);

    /* hiredis learns of the connect from the first write event */
    link->want_write = 1;

    ngx_add_timer(&link->timer, conf->timeout);
}


static void
ngx_chat_redis_retry(ngx_chat_redis_link_t *link)
{
    if (ngx_chat_redis_exiting) {
        return;
    }

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    ngx_add_timer(&link->timer, link->backoff);
    link->backoff = ngx_min(link->backoff * 2, NGX_CHAT_REDIS_BACKOFF_MAX);
}


static void
ngx_chat_redis_timer_handler(ngx_event_t *ev)
{
    ngx_chat_redis_link_t  *link;

    link = ev->data;

    if (link->ac == NULL) {
        ngx_chat_redis_connect(link);
        return;
    }

    if (!link->up) {
        ngx_log_error(ngx_chat_redis_level(link), ngx_chat_redis_log, 0,
                      "redis: %s: connect timed out", link->name);
        redisAsyncFree(link->ac);
    }
}


static void
ngx_chat_redis_event_handler(ngx_event_t *ev)
{
    int                     n;
    ngx_connection_t       *c;
    ngx_chat_redis_link_t  *link;

    c = ev->data;
    link = c->data;

    if (ev->write) {
        if (link->want_write) {
            link->writing = 1;
            redisAsyncHandleWrite(link->ac);

            if (link->connection == c) {
                link->writing = 0;
            }
        }

        return;
    }

    /* edge-triggered: hiredis reads 16 KB a call, so read until drained */

    do {
        redisAsyncHandleRead(link->ac);

        if (link->connection != c) {
            return;             /* the context was freed in a callback */
        }

    } while (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0);
}


static void
ngx_chat_redis_add_write(void *privdata)
{
    ngx_chat_redis_link_t  *link = privdata;

    link->want_write = 1;

    /*
     * Outside our write handler the socket may be writable already and
     * no edge will come: write from a posted event, which also lets the
     * commands of one event loop pass leave in one write.  Inside it,
     * hiredis met a full socket, and the next edge will come.
     */

    if (!link->writing && link->connection) {
        ngx_post_event(link->connection->write, &ngx_posted_events);
    }
}


static void
ngx_chat_redis_del_write(void *privdata)
{
    ngx_chat_redis_link_t  *link = privdata;

    link->want_write = 0;
}


static void
ngx_chat_redis_noop(void *privdata)
{
}


/* hiredis frees the context (and will close the socket): let it go */

static void
ngx_chat_redis_cleanup(void *privdata)
{
    ngx_connection_t       *c;
    ngx_chat_redis_link_t  *link = privdata;

    c = link->connection;

    if (c) {
        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        (void) ngx_del_conn(c, 0);
        c->fd = (ngx_socket_t) -1;
        ngx_free_connection(c);
    }

    link->connection = NULL;
    link->ac = NULL;
    link->up = 0;
    link->want_write = 0;
    link->writing = 0;

    ngx_chat_redis_retry(link);
}


static void
ngx_chat_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_uint_t              i;
    ngx_chat_redis_link_t  *link = ac->ev.data;

    if (status != REDIS_OK) {
        ngx_log_error(ngx_chat_redis_level(link), ngx_chat_redis_log, 0,
                      "redis: %s: connect failed: %s", link->name,
                      ac->errstr);
        return;                 /* hiredis frees the context next */
    }

    if (link->timer.timer_set) {
        ngx_del_timer(&link->timer);
    }

    link->up = 1;
    link->backoff = NGX_CHAT_REDIS_BACKOFF_MIN;

    ngx_log_error(NGX_LOG_INFO, ngx_chat_redis_log, 0,
                  "redis: %s: connected", link->name);

    if (link->subscriber) {
        ngx_chat_redis_resubscribe(ngx_chat_redis_channels.root,
                                   ngx_chat_redis_channels.sentinel);
        return;
    }

    for (i = 0; i < NGX_CHAT_REDIS_LINK_HANDLERS; i++) {
        if (ngx_chat_redis_link_handlers[i]) {
            ngx_chat_redis_link_handlers[i]();
        }
    }
}


static void
ngx_chat_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_chat_redis_link_t  *link = ac->ev.data;

    if (status != REDIS_OK && !ngx_chat_redis_exiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_chat_redis_log, 0,
                      "redis: %s: connection lost: %s", link->name,
                      ac->errstr);
    }

    link->up = 0;
}


/* replies come in the order commands went: cmd is the oldest pending */

static void
ngx_chat_redis_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ngx_chat_redis_cmd_t   *cmd = privdata;
    ngx_chat_redis_link_t  *link;

    link = &ngx_chat_redis_cmd_link;

    ngx_queue_remove(&cmd->queue);
    link->npending--;

    if (link->npending == 0 && link->expire.timer_set) {
        ngx_del_timer(&link->expire);
    }

    if (!cmd->cancelled && !ngx_chat_redis_exiting) {
        cmd->handler(cmd->data, reply);
    }

    ngx_free(cmd);
}


/* the oldest command is late: the link is stuck, and is dropped */

static void
ngx_chat_redis_expire(ngx_event_t *ev)
{
    ngx_msec_int_t          left;
    ngx_chat_redis_cmd_t   *cmd;
    ngx_chat_redis_link_t  *link = ev->data;

    if (ngx_queue_empty(&link->pending)) {
        return;
    }

    cmd = ngx_queue_data(ngx_queue_head(&link->pending),
                         ngx_chat_redis_cmd_t, queue);

    left = (ngx_msec_int_t) (cmd->deadline - ngx_current_msec);

    if (left > 0) {
        ngx_add_timer(ev, (ngx_msec_t) left);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_chat_redis_log, 0,
                  "redis: %s: a command timed out", link->name);

    /* hiredis answers every pending command with NULL, and frees them */

    if (link->ac) {
        redisAsyncFree(link->ac);
    }
}


/*
 * The SUBSCRIBE link: messages go to their channel's owner; a
 * confirmation after the link came back tells the owner what it missed.
 */

static void
ngx_chat_redis_pubsub(redisAsyncContext *ac, void *reply, void *privdata)
{
    ngx_str_t                  kind, channel, message;
    ngx_chat_redis_channel_t  *ch;

    if (ngx_chat_redis_push(reply, &kind, &channel, &message) != NGX_OK) {
        return;
    }

    ch = ngx_chat_redis_channel(&channel,
                                ngx_crc32_long(channel.data, channel.len));
    if (ch == NULL) {
        return;
    }

    if (kind.len == 9 && ngx_strncmp(kind.data, "subscribe", 9) == 0) {
        if (ch->quiet) {
            ch->quiet = 0;

        } else if (ch->handler) {
            ch->handler(ch->data, NULL);
        }

        return;
    }

    if (kind.len != 7 || ngx_strncmp(kind.data, "message", 7) != 0
        || message.data == NULL || ch->handler == NULL)
    {
        return;
    }

    ch->handler(ch->data, &message);
}


static void
ngx_chat_redis_resubscribe(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_chat_redis_channel_t  *ch;

    if (node == sentinel) {
        return;
    }

    ngx_chat_redis_resubscribe(node->left, sentinel);

    ch = (ngx_chat_redis_channel_t *) node;
    ch->quiet = 0;

    (void) redisAsyncCommand(ngx_chat_redis_sub_link.ac,
                             ngx_chat_redis_pubsub, NULL, "SUBSCRIBE %b",
                             ch->node.str.data, ch->node.str.len);

    ngx_chat_redis_resubscribe(node->right, sentinel);
}


static ngx_chat_redis_channel_t *
ngx_chat_redis_channel(ngx_str_t *name, uint32_t hash)
{
    return (ngx_chat_redis_channel_t *)
               ngx_str_rbtree_lookup(&ngx_chat_redis_channels, name, hash);
}


/* unsubscribes the channels nobody has wanted since the last sweep */

static void
ngx_chat_redis_sweep(ngx_event_t *ev)
{
    ngx_rbtree_node_t         *node, *next, *root, *sentinel;
    ngx_chat_redis_channel_t  *ch;

    root = ngx_chat_redis_channels.root;
    sentinel = ngx_chat_redis_channels.sentinel;

    if (root != sentinel) {
        for (node = ngx_rbtree_min(root, sentinel); node; node = next) {
            next = ngx_rbtree_next(&ngx_chat_redis_channels, node);
            ch = (ngx_chat_redis_channel_t *) node;

            if (ch->handler) {
                continue;
            }

            if (ngx_chat_redis_sub_link.up) {
                (void) redisAsyncCommand(ngx_chat_redis_sub_link.ac,
                                         ngx_chat_redis_pubsub, NULL,
                                         "UNSUBSCRIBE %b", ch->node.str.data,
                                         ch->node.str.len);
            }

            ngx_rbtree_delete(&ngx_chat_redis_channels, node);
            ngx_free(ch);
        }
    }

    ngx_add_timer(ev, NGX_CHAT_REDIS_SWEEP);
}
