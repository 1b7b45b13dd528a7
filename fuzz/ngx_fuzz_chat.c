
/*
 * The chat worker of the fuzz targets: the module's code as init_process()
 * starts it, with the harness in the place of PostgreSQL and Redis (see
 * ngx_fuzz_chat.h), and stand-ins for what only nginx's configuration
 * parser calls (they abort: no target parses a configuration).
 */

#include "ngx_fuzz_chat.h"

#include <hiredis/read.h>


#define NGX_FUZZ_CHANNELS  64
#define NGX_FUZZ_ROWS      64


struct ngx_chat_pg_query_s {
    ngx_queue_t                 queue;
    ngx_chat_pg_handler_pt      handler;
    void                       *data;
    const char                 *sql;
};


struct ngx_chat_redis_cmd_s {
    ngx_queue_t                 queue;
    ngx_chat_redis_handler_pt   handler;
    void                       *data;
    unsigned                    cancelled:1;
};


typedef struct {
    u_char                      name[NGX_CHAT_REDIS_CHANNEL_MAX];
    size_t                      len;
    ngx_chat_redis_message_pt   handler;
    void                       *data;
} ngx_fuzz_channel_t;


ngx_module_t                 ngx_http_module;
ngx_module_t                 ngx_http_core_module;

ngx_chat_main_conf_t         ngx_fuzz_cmcf;
ngx_chat_loc_conf_t          ngx_fuzz_clcf;
ngx_uint_t                   ngx_fuzz_room;

static void                 *ngx_fuzz_main_confs[1];
static ngx_http_conf_ctx_t   ngx_fuzz_http_ctx;
static void                 *ngx_fuzz_conf_ctx[1];

static ngx_queue_t           ngx_fuzz_queries;
static ngx_uint_t            ngx_fuzz_nqueries;
static ngx_queue_t           ngx_fuzz_commands;
static ngx_uint_t            ngx_fuzz_ncommands;
static ngx_uint_t            ngx_fuzz_redis_is_up;
static ngx_uint_t            ngx_fuzz_stopping;
static ngx_fuzz_channel_t    ngx_fuzz_channels[NGX_FUZZ_CHANNELS];
static ngx_chat_redis_link_pt  ngx_fuzz_link_handlers[8];


static void ngx_fuzz_pg_answer(const u_char *data, size_t len);
static void ngx_fuzz_redis_answer(const u_char *data, size_t len);
static void ngx_fuzz_redis_push(const u_char *data, size_t len);
static void ngx_fuzz_redis_link(void);
static redisReply *ngx_fuzz_redis_read(const u_char *data, size_t len);


void
ngx_fuzz_chat_start(void)
{
    ngx_cycle_t  *cycle;

    ngx_fuzz_init();

    ngx_memzero(&ngx_fuzz_cmcf, sizeof(ngx_chat_main_conf_t));
    ngx_memzero(&ngx_fuzz_clcf, sizeof(ngx_chat_loc_conf_t));

    /* the defaults of ngx_chat_init_main_conf(), with both stores set */

    ngx_str_set(&ngx_fuzz_cmcf.pg.conninfo, "host=fuzz");
    ngx_fuzz_cmcf.pg.pool_size = 4;
    ngx_fuzz_cmcf.pg.query_timeout = 5000;
    ngx_fuzz_cmcf.pg.connect_timeout = 5000;
    ngx_fuzz_cmcf.pg.max_waiting = 64;
    ngx_str_set(&ngx_fuzz_cmcf.redis.host, "fuzz");
    ngx_str_set(&ngx_fuzz_cmcf.redis.prefix, "chat:");
    ngx_fuzz_cmcf.redis.timeout = 3000;
    ngx_fuzz_cmcf.redis.max_pending = 64;
    ngx_fuzz_cmcf.redis_down_poll = 2000;
    ngx_fuzz_cmcf.max_devices = 5;
    ngx_fuzz_cmcf.max_group_size = 1024;
    ngx_fuzz_cmcf.api_max_body = 16 * 1024;
    ngx_fuzz_cmcf.message_ttl = 30 * 86400;
    ngx_fuzz_cmcf.resend_window = 600;
    ngx_fuzz_cmcf.expire_interval = 60000;
    ngx_fuzz_cmcf.presence_lease = 30000;
    ngx_fuzz_cmcf.presence_debounce = 3000;
    ngx_fuzz_cmcf.device_check = 30000;
    ngx_fuzz_cmcf.verify_budget = 10;
    ngx_fuzz_cmcf.verify_lock = 6 * 3600;
    ngx_fuzz_cmcf.codes_per_minute = 600;

    /* and of ngx_chat_merge_loc_conf() */

    ngx_fuzz_clcf.ws.max_message_size = 65536 + 4096;
    ngx_fuzz_clcf.ws.send_queue = 256 * 1024;
    ngx_fuzz_clcf.ws.ping_interval = 30000;
    ngx_fuzz_clcf.ws.idle_timeout = 120000;
    ngx_fuzz_clcf.ws.close_timeout = 5000;
    ngx_fuzz_clcf.auth_timeout = 10000;
    ngx_fuzz_clcf.max_text = 65536;
    ngx_fuzz_clcf.sync_batch = 8;
    ngx_fuzz_clcf.gap_wait = 200;
    ngx_fuzz_clcf.send_rate = 0;

    /* what ngx_http_cycle_get_module_main_conf() finds */

    ngx_chat_module.ctx_index = 0;
    ngx_http_module.index = 0;
    ngx_fuzz_main_confs[0] = &ngx_fuzz_cmcf;
    ngx_fuzz_http_ctx.main_conf = ngx_fuzz_main_confs;
    ngx_fuzz_conf_ctx[0] = &ngx_fuzz_http_ctx;

    cycle = (ngx_cycle_t *) ngx_cycle;
    cycle->conf_ctx = (void ****) ngx_fuzz_conf_ctx;

    ngx_fuzz_room = 1;
    ngx_fuzz_stopping = 0;
    ngx_fuzz_redis_is_up = 1;
    ngx_memzero(ngx_fuzz_channels, sizeof(ngx_fuzz_channels));
    ngx_memzero(ngx_fuzz_link_handlers, sizeof(ngx_fuzz_link_handlers));

    if (ngx_chat_module.init_process(cycle) != NGX_OK) {
        abort();
    }
}


/* what is in flight fails, then what the failures asked for */

void
ngx_fuzz_chat_drain(void)
{
    ngx_uint_t  rounds;

    for (rounds = 0; rounds < 32; rounds++) {
        ngx_fuzz_chat_settle();

        if (ngx_fuzz_nqueries == 0 && ngx_fuzz_ncommands == 0) {
            return;
        }

        while (ngx_fuzz_nqueries) {
            ngx_fuzz_pg_answer(NULL, 0);
        }

        while (ngx_fuzz_ncommands) {
            ngx_fuzz_redis_answer(NULL, 0);
        }
    }
}


void
ngx_fuzz_chat_stop(void)
{
    ngx_fuzz_chat_drain();

    /* the stores are gone: what is asked from now on fails at once */

    ngx_fuzz_stopping = 1;
    ngx_fuzz_chat_drain();

    ngx_chat_module.exit_process((ngx_cycle_t *) ngx_cycle);

    ngx_fuzz_drop_timers();
}


ngx_uint_t
ngx_fuzz_chat_next(ngx_fuzz_input_t *in, ngx_fuzz_action_t *a)
{
    size_t  len;

    if (ngx_fuzz_left(in) < 3) {
        return 0;
    }

    a->op = in->pos[0] % 8;
    len = (in->pos[1] << 8) | in->pos[2];
    in->pos += 3;

    a->len = ngx_fuzz_take(in, len, &a->data);

    return 1;
}


ngx_int_t
ngx_fuzz_chat_play(ngx_fuzz_action_t *a)
{
    switch (a->op) {

    case 1:
        if (ngx_fuzz_nqueries) {
            ngx_fuzz_pg_answer(a->data, a->len);
        }
        break;

    case 2:
        if (ngx_fuzz_ncommands) {
            ngx_fuzz_redis_answer(a->data, a->len);
        }
        break;

    case 3:
        ngx_fuzz_redis_push(a->data, a->len);
        break;

    case 4:
        ngx_fuzz_advance(100 * (a->len ? a->data[0] : 1));
        break;

    case 5:
        ngx_fuzz_redis_link();
        break;

    case 6:
        ngx_fuzz_room = !(a->len && (a->data[0] & 1));
        break;

    default:
        return NGX_DECLINED;
    }

    ngx_fuzz_chat_settle();

    return NGX_OK;
}


void
ngx_fuzz_chat_settle(void)
{
    ngx_fuzz_run_posted(1024);
}


/* ------------------------------------------------------------ PostgreSQL */


ngx_int_t
ngx_chat_pg_init_worker(ngx_chat_pg_conf_t *conf, ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_fuzz_queries);
    ngx_fuzz_nqueries = 0;

    return NGX_OK;
}


void
ngx_chat_pg_exit_worker(void)
{
    while (ngx_fuzz_nqueries) {
        ngx_fuzz_pg_answer(NULL, 0);
    }
}


/* the parameters are read whole, as libpq would copy them */

ngx_chat_pg_query_t *
ngx_chat_pg_query(const char *sql, ngx_uint_t nparams, ngx_str_t *params,
    ngx_chat_pg_handler_pt handler, void *data, ngx_log_t *log)
{
    u_char               *copy;
    ngx_uint_t            i;
    ngx_chat_pg_query_t  *q;

    if (ngx_fuzz_stopping
        || ngx_fuzz_nqueries >= ngx_fuzz_cmcf.pg.max_waiting)
    {
        return NULL;
    }

    for (i = 0; i < nparams; i++) {
        if (params[i].data && params[i].len) {
            copy = ngx_alloc(params[i].len, log);
            if (copy == NULL) {
                return NULL;
            }

            ngx_memcpy(copy, params[i].data, params[i].len);
            ngx_free(copy);
        }
    }

    if (ngx_strlen(sql) == 0) {
        abort();
    }

    q = ngx_calloc(sizeof(ngx_chat_pg_query_t), log);
    if (q == NULL) {
        return NULL;
    }

    q->handler = handler;
    q->data = data;
    q->sql = sql;

    ngx_queue_insert_tail(&ngx_fuzz_queries, &q->queue);
    ngx_fuzz_nqueries++;

    return q;
}


void
ngx_chat_pg_cancel(ngx_chat_pg_query_t *q)
{
    ngx_queue_remove(&q->queue);
    ngx_fuzz_nqueries--;
    ngx_free(q);
}


ngx_uint_t
ngx_chat_pg_up(void)
{
    return !ngx_fuzz_stopping;
}


ngx_uint_t
ngx_chat_pg_busy(void)
{
    return ngx_fuzz_nqueries >= ngx_fuzz_cmcf.pg.max_waiting / 2;
}


ngx_uint_t
ngx_chat_pg_max_waiting(void)
{
    return ngx_fuzz_cmcf.pg.max_waiting;
}


/* the oldest query gets a result made of the bytes, or fails (NULL) */

static void
ngx_fuzz_pg_answer(const u_char *data, size_t len)
{
    int                   ncols, row, col, n;
    PGresult             *res;
    ngx_queue_t          *q;
    ExecStatusType        status;
    PGresAttDesc          attrs[8];
    ngx_fuzz_input_t      in;
    ngx_chat_pg_query_t  *query;
    static ExecStatusType  statuses[] = {
        PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_FATAL_ERROR
    };

    q = ngx_queue_head(&ngx_fuzz_queries);
    query = ngx_queue_data(q, ngx_chat_pg_query_t, queue);

    ngx_queue_remove(q);
    ngx_fuzz_nqueries--;

    res = NULL;

    if (len) {
        in.pos = data;
        in.last = data + len;

        status = statuses[ngx_fuzz_byte(&in, 0) % 3];
        ncols = (int) (ngx_fuzz_byte(&in, 1) % 9);

        res = PQmakeEmptyPGresult(NULL, status);
        if (res == NULL) {
            abort();
        }

        if (status == PGRES_TUPLES_OK && ncols) {
            ngx_memzero(attrs, sizeof(attrs));

            for (col = 0; col < ncols; col++) {
                attrs[col].name = (char *) "c";
                attrs[col].typid = 25;          /* text */
                attrs[col].typlen = -1;
                attrs[col].atttypmod = -1;
            }

            if (!PQsetResultAttrs(res, ncols, attrs)) {
                abort();
            }

            for (row = 0; row < NGX_FUZZ_ROWS && ngx_fuzz_left(&in); row++) {
                for (col = 0; col < ncols; col++) {
                    n = (int) ngx_fuzz_byte(&in, 0xff);

                    if (n == 0xff) {
                        PQsetvalue(res, row, col, NULL, -1);
                        continue;
                    }

                    n = (int) ngx_min((size_t) n, ngx_fuzz_left(&in));

                    if (!PQsetvalue(res, row, col, (char *) in.pos, n)) {
                        abort();
                    }

                    in.pos += n;
                }
            }
        }
    }

    query->handler(query->data, res);

    ngx_free(query);

    if (res) {
        PQclear(res);
    }
}


/* ----------------------------------------------------------------- Redis */


ngx_int_t
ngx_chat_redis_init_worker(ngx_chat_redis_conf_t *conf, ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_fuzz_commands);
    ngx_fuzz_ncommands = 0;

    return NGX_OK;
}


void
ngx_chat_redis_exit_worker(void)
{
    while (ngx_fuzz_ncommands) {
        ngx_fuzz_redis_answer(NULL, 0);
    }
}


static ngx_chat_redis_cmd_t *
ngx_fuzz_redis_queue(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log)
{
    ngx_chat_redis_cmd_t  *cmd;

    cmd = ngx_calloc(sizeof(ngx_chat_redis_cmd_t), log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;

    ngx_queue_insert_tail(&ngx_fuzz_commands, &cmd->queue);
    ngx_fuzz_ncommands++;

    return cmd;
}


/* formatted as hiredis would send it: the arguments are read whole */

ngx_chat_redis_cmd_t *
ngx_chat_redis_vcommand(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log, const char *format, va_list args)
{
    int    n;
    char  *wire;

    if (!ngx_fuzz_redis_is_up || ngx_fuzz_stopping
        || ngx_fuzz_ncommands >= ngx_fuzz_cmcf.redis.max_pending)
    {
        return NULL;
    }

    n = redisvFormatCommand(&wire, format, args);

    if (n < 0) {
        abort();                        /* a format hiredis refuses */
    }

    free(wire);

    return ngx_fuzz_redis_queue(handler, data, log);
}


ngx_chat_redis_cmd_t *
ngx_chat_redis_command_argv(ngx_chat_redis_handler_pt handler, void *data,
    ngx_log_t *log, int argc, const char **argv, const size_t *argvlen)
{
    int    n;
    char  *wire;

    if (!ngx_fuzz_redis_is_up || ngx_fuzz_stopping
        || ngx_fuzz_ncommands >= ngx_fuzz_cmcf.redis.max_pending)
    {
        return NULL;
    }

    n = redisFormatCommandArgv(&wire, argc, argv, argvlen);

    if (n < 0) {
        abort();
    }

    free(wire);

    return ngx_fuzz_redis_queue(handler, data, log);
}


/* as the adapter: the reply still comes, to nobody */

void
ngx_chat_redis_cancel(ngx_chat_redis_cmd_t *cmd)
{
    cmd->cancelled = 1;
}


void
ngx_chat_redis_ignore(void *data, redisReply *reply)
{
}


ngx_int_t
ngx_chat_redis_subscribe(ngx_str_t *channel,
    ngx_chat_redis_message_pt handler, void *data)
{
    ngx_uint_t           i;
    ngx_fuzz_channel_t  *ch, *free_ch;

    if (channel->len > NGX_CHAT_REDIS_CHANNEL_MAX) {
        abort();
    }

    free_ch = NULL;

    for (i = 0; i < NGX_FUZZ_CHANNELS; i++) {
        ch = &ngx_fuzz_channels[i];

        if (ch->len == channel->len
            && ngx_memcmp(ch->name, channel->data, channel->len) == 0)
        {
            if (ch->handler) {
                return NGX_ERROR;       /* has an owner already */
            }

            free_ch = ch;
            break;
        }

        if (free_ch == NULL && ch->handler == NULL) {
            free_ch = ch;
        }
    }

    if (free_ch == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(free_ch->name, channel->data, channel->len);
    free_ch->len = channel->len;
    free_ch->handler = handler;
    free_ch->data = data;

    return NGX_OK;
}


void
ngx_chat_redis_unsubscribe(ngx_str_t *channel)
{
    ngx_uint_t           i;
    ngx_fuzz_channel_t  *ch;

    for (i = 0; i < NGX_FUZZ_CHANNELS; i++) {
        ch = &ngx_fuzz_channels[i];

        if (ch->len == channel->len
            && ngx_memcmp(ch->name, channel->data, channel->len) == 0)
        {
            ch->handler = NULL;
            ch->data = NULL;
        }
    }
}


ngx_int_t
ngx_chat_redis_on_link(ngx_chat_redis_link_pt handler)
{
    ngx_uint_t  i;

    for (i = 0; i < 8; i++) {
        if (ngx_fuzz_link_handlers[i] == NULL) {
            ngx_fuzz_link_handlers[i] = handler;
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


ngx_uint_t
ngx_chat_redis_up(void)
{
    return ngx_fuzz_redis_is_up;
}


ngx_str_t *
ngx_chat_redis_prefix(void)
{
    return &ngx_fuzz_cmcf.redis.prefix;
}


static redisReply *
ngx_fuzz_redis_read(const u_char *data, size_t len)
{
    void         *reply;
    redisReader  *r;

    r = redisReaderCreate();
    if (r == NULL) {
        abort();
    }

    reply = NULL;

    if (redisReaderFeed(r, (const char *) data, len) != REDIS_OK
        || redisReaderGetReply(r, &reply) != REDIS_OK)
    {
        reply = NULL;
    }

    redisReaderFree(r);

    return reply;
}


static void
ngx_fuzz_redis_answer(const u_char *data, size_t len)
{
    redisReply            *reply;
    ngx_queue_t           *q;
    ngx_chat_redis_cmd_t  *cmd;

    q = ngx_queue_head(&ngx_fuzz_commands);
    cmd = ngx_queue_data(q, ngx_chat_redis_cmd_t, queue);

    ngx_queue_remove(q);
    ngx_fuzz_ncommands--;

    reply = len ? ngx_fuzz_redis_read(data, len) : NULL;

    if (!cmd->cancelled) {
        cmd->handler(cmd->data, reply);
    }

    ngx_free(cmd);

    if (reply) {
        freeReplyObject(reply);
    }
}


/*
 * A push for the subscribed channel the first byte picks (the fuzzer
 * cannot guess names), read by the adapter's own reader.
 */

static void
ngx_fuzz_redis_push(const u_char *data, size_t len)
{
    ngx_str_t            kind, channel, message;
    ngx_uint_t           i, n, pick;
    redisReply          *reply;
    ngx_fuzz_channel_t  *ch;

    if (len == 0 || !ngx_fuzz_redis_is_up) {
        return;
    }

    pick = data[0];
    reply = ngx_fuzz_redis_read(data + 1, len - 1);

    if (reply == NULL) {
        return;
    }

    if (ngx_chat_redis_push(reply, &kind, &channel, &message) != NGX_OK) {
        freeReplyObject(reply);
        return;
    }

    ch = NULL;

    for (i = 0, n = 0; i < NGX_FUZZ_CHANNELS; i++) {
        if (ngx_fuzz_channels[i].handler) {
            n++;
        }
    }

    for (i = 0; n && i < NGX_FUZZ_CHANNELS; i++) {
        if (ngx_fuzz_channels[i].handler && pick-- % n == 0) {
            ch = &ngx_fuzz_channels[i];
            break;
        }
    }

    if (ch) {
        if (kind.len == 9 && ngx_strncmp(kind.data, "subscribe", 9) == 0) {
            ch->handler(ch->data, NULL);

        } else if (kind.len == 7 && ngx_strncmp(kind.data, "message", 7) == 0
                   && message.data)
        {
            ch->handler(ch->data, &message);
        }
    }

    freeReplyObject(reply);
}


/*
 * The link goes: what was in flight fails.  It comes back: the command
 * link's handlers run, every channel is subscribed again and confirmed.
 */

static void
ngx_fuzz_redis_link(void)
{
    ngx_uint_t  i;

    if (ngx_fuzz_redis_is_up) {
        ngx_fuzz_redis_is_up = 0;

        while (ngx_fuzz_ncommands) {
            ngx_fuzz_redis_answer(NULL, 0);
        }

        return;
    }

    ngx_fuzz_redis_is_up = 1;

    for (i = 0; i < 8; i++) {
        if (ngx_fuzz_link_handlers[i]) {
            ngx_fuzz_link_handlers[i]();
        }
    }

    for (i = 0; i < NGX_FUZZ_CHANNELS; i++) {
        if (ngx_fuzz_channels[i].handler) {
            ngx_fuzz_channels[i].handler(ngx_fuzz_channels[i].data, NULL);
        }
    }
}


/* ------------------------------------------------------------ a session */


static ngx_int_t
ngx_fuzz_session_send(ngx_chat_session_t *s, ngx_chat_out_t *out)
{
    char                *text;
    u_char              *copy;
    size_t               len;
    json_t              *ev, *type;
    ngx_fuzz_session_t  *fs = (ngx_fuzz_session_t *) s;

    if (out->json) {
        text = json_dumps(out->json, JSON_COMPACT);
        if (text == NULL) {
            abort();
        }

        len = ngx_strlen(text);

    } else {
        text = (char *) out->text.data;
        len = out->text.len;

        /* read whole, as the socket would */
        copy = ngx_alloc(len + 1, s->log);
        if (copy == NULL) {
            abort();
        }

        if (len) {
            ngx_memcpy(copy, text, len);
        }

        ngx_free(copy);
    }

    /*
     * What the session makes is an event of PROTOCOL.md, whatever came
     * in; what PostgreSQL or Redis hold (a stored message, a published
     * one) goes out as they hold it: those are written by our own SQL and
     * workers, not by clients.
     */

    if (out->json) {
        ev = json_loadb(text, len, 0, NULL);
        type = json_object_get(ev, "type");

        if (!json_is_string(type)) {
            abort();
        }

        if (ngx_strcmp(json_string_value(type), "error") == 0) {
            if (!json_is_string(json_object_get(ev, "code"))) {
                abort();
            }

            fs->errors++;
        }

        json_decref(ev);
        free(text);
    }

    return fs->close_code ? NGX_ERROR : NGX_OK;
}


static ngx_uint_t
ngx_fuzz_session_room(ngx_chat_session_t *s, size_t len)
{
    ngx_fuzz_session_t  *fs = (ngx_fuzz_session_t *) s;

    return !fs->close_code && ngx_fuzz_room;
}


static void
ngx_fuzz_session_close(ngx_chat_session_t *s, ngx_uint_t code,
    const char *reason)
{
    ngx_fuzz_session_t  *fs = (ngx_fuzz_session_t *) s;

    if (fs->close_code) {
        return;
    }

    if (!((code >= 1000 && code <= 1015) || (code >= 4000 && code <= 4999))) {
        abort();
    }

    fs->close_code = code;
}


static ngx_chat_transport_t  ngx_fuzz_transport = {
    ngx_fuzz_session_send,
    ngx_fuzz_session_room,
    ngx_fuzz_session_close,
    NULL,
    NULL,
    NULL,
    0
};


ngx_fuzz_session_t *
ngx_fuzz_session_open(ngx_pool_t *pool, ngx_uint_t identified)
{
    ngx_log_t           *log;
    ngx_fuzz_session_t  *fs;

    static ngx_str_t  user = ngx_string("17");
    static ngx_str_t  device = ngx_string("42");

    fs = ngx_pcalloc(pool, sizeof(ngx_fuzz_session_t));
    log = ngx_pcalloc(pool, sizeof(ngx_log_t));

    if (fs == NULL || log == NULL) {
        abort();
    }

    *log = ngx_fuzz_log;

    ngx_chat_session_init(&fs->session, &ngx_fuzz_transport, fs,
                          &ngx_fuzz_clcf, log, pool);

    if (!identified) {
        ngx_chat_session_auth(&fs->session, NULL);
        return fs;
    }

    if (ngx_chat_session_identify(&fs->session, &user, &device) != NGX_OK) {
        abort();
    }

    ngx_chat_session_begin(&fs->session);
    ngx_fuzz_chat_settle();

    return fs;
}


void
ngx_fuzz_session_end(ngx_fuzz_session_t *fs)
{
    if (fs->ended) {
        return;
    }

    fs->ended = 1;

    if (!fs->close_code) {
        fs->close_code = 1006;
    }

    ngx_chat_session_end(&fs->session);
    ngx_fuzz_chat_settle();
}


/* --------------------------------------------- configuration stand-ins */


#define ngx_fuzz_conf_slot(name)                                              \
    char *                                                                    \
    name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)                      \
    {                                                                         \
        abort();                                                              \
    }

ngx_fuzz_conf_slot(ngx_conf_set_flag_slot)
ngx_fuzz_conf_slot(ngx_conf_set_msec_slot)
ngx_fuzz_conf_slot(ngx_conf_set_num_slot)
ngx_fuzz_conf_slot(ngx_conf_set_sec_slot)
ngx_fuzz_conf_slot(ngx_conf_set_size_slot)
ngx_fuzz_conf_slot(ngx_conf_set_str_slot)


void
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    abort();
}


ngx_http_variable_t *
ngx_http_add_variable(ngx_conf_t *cf, ngx_str_t *name, ngx_uint_t flags)
{
    abort();
}


ngx_shm_zone_t *
ngx_shared_memory_add(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    void *tag)
{
    abort();
}


ngx_int_t
ngx_parse_url(ngx_pool_t *pool, ngx_url_t *u)
{
    abort();
}


/* the shared zones (chat_send_rate, chat_metrics) are not configured */

void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    abort();
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    abort();
}


void *
ngx_slab_alloc(ngx_slab_pool_t *pool, size_t size)
{
    abort();
}


void *
ngx_slab_alloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    abort();
}


void *
ngx_slab_calloc(ngx_slab_pool_t *pool, size_t size)
{
    abort();
}


void
ngx_slab_free_locked(ngx_slab_pool_t *pool, void *p)
{
    abort();
}
