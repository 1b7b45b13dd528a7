
/*
 * Presence (PROTOCOL.md, section 4; docs/protocol.md, "Presence").
 *
 * Redis holds, per user, a hash "<prefix>p:<user>" with a lease per
 * worker that has sockets of the user ("w:<worker>" = expiry in ms), the
 * state watchers were last told ("state" = on|off) and "last_seen"; and
 * one sorted set "<prefix>presence" of users by the latest expiry of
 * their leases.  Changes of state are decided and published by Lua
 * scripts, atomically, on "<prefix>pc:<user>":
 *
 *   up     a worker takes or renews its lease: "on" if it was not;
 *   check  a worker's debounce timer, or the sweep of expired leases:
 *          drops the expired leases, and with none left, "off".
 *
 * So a worker that dies stops renewing, and the sweep (worker 0 of every
 * nginx, every second) turns its users off once their leases expire.
 *
 * Watchers: a worker subscribes "<prefix>pc:<user>" while one of its
 * sessions watches the user, and forwards what comes to each of them,
 * with last_seen hidden where privacy says so.  The API publishes there
 * too: a change of the user's "about" ({"type":"profile"}), and reads
 * the hash for GET /v1/users/{id}.
 *
 * A watch lasts while its right does: when a user changes who may see
 * their last seen, or leaves a chat or is removed from one, or writes
 * first in a direct chat, ngx_chat_fanout_recheck() (the API's, the send
 * feature's) publishes {"type":"recheck"} on the user's presence channel
 * (their watchers) and on their user channel (their own sessions'
 * watches), and each such watch is checked again: one that lost its
 * right ends, one whose last_seen right changed follows it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_chat_session.h"
#include "ngx_chat_features.h"
#include "ngx_chat_event.h"
#include "ngx_chat_fanout.h"
#include "ngx_chat_api.h"


#define NGX_CHAT_PRESENCE_IDS      256    /* ids in one subscribe */
#define NGX_CHAT_PRESENCE_WATCHES  1024   /* watched users a socket */
#define NGX_CHAT_PRESENCE_SWEEP    1000   /* ms between sweeps */
#define NGX_CHAT_PRESENCE_SWEPT    "256"  /* users a sweep checks */
#define NGX_CHAT_PRESENCE_KEY_MAX  (64 + sizeof("presence") + NGX_INT64_LEN)


/* a session's watches */
typedef struct {
    ngx_queue_t                    watches;  /* ngx_chat_presence_watch_t */
    ngx_uint_t                     nwatches;
    ngx_queue_t                    asks;     /* ngx_chat_presence_ask_t */
    ngx_uint_t                     asked;    /* users in the asks */
    ngx_uint_t                     reading;  /* watches with a state read
                                                on its way */
} ngx_chat_presence_t;


/* a user watched by sessions of this worker */
typedef struct {
    ngx_str_node_t                 node;     /* key: "<prefix>pc:<user>" */
    ngx_queue_t                    watches;
    ngx_str_t                      user;
    u_char                         data[1];
} ngx_chat_presence_watched_t;


/* a session watching a user */
typedef struct {
    ngx_queue_t                    queue;    /* in watched->watches */
    ngx_queue_t                    by_session;
    ngx_chat_session_t            *session;
    ngx_chat_presence_watched_t   *watched;
    ngx_chat_redis_cmd_t          *cmd;      /* the first state read */
    ngx_chat_pg_query_t           *check;    /* its right, checked again */
    int64_t                        known_seen;   /* what the client has */
    unsigned                       last_seen:1;  /* may see it */
    unsigned                       known:1;      /* the client told us */
    unsigned                       known_on:1;
} ngx_chat_presence_watch_t;


/* a subscribe waiting for PostgreSQL to say who may be watched */
typedef struct {
    ngx_queue_t                    queue;    /* in ngx_chat_presence_t */
    ngx_chat_session_t            *session;  /* NULL: the socket is gone */
    ngx_chat_pg_query_t           *query;
    json_t                        *id;       /* the request's, for errors */
    json_t                        *known;    /* {user: "on"|"off"|ms} */
    ngx_uint_t                     n;        /* users asked for */
} ngx_chat_presence_ask_t;


/* a user whose last socket here went away: offline after the debounce */
typedef struct {
    ngx_event_t                    ev;
    ngx_queue_t                    queue;
    int64_t                        away;
    ngx_str_t                      user;
    u_char                         data[NGX_INT64_LEN];
} ngx_chat_presence_away_t;


static const char  ngx_chat_presence_up_lua[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[3]) "
    "if redis.call('HGET', KEYS[1], 'state') ~= 'on' then "
    "  redis.call('HSET', KEYS[1], 'state', 'on') "
    "  redis.call('PUBLISH', ARGV[4], '{\"type\":\"presence\",\"user_id\":\"'"
    "             .. ARGV[3] .. '\",\"online\":true,\"last_seen\":null}') "
    "  return 1 "
    "end "
    "return 0";

static const char  ngx_chat_presence_check_lua[] =
    "local now = tonumber(ARGV[1]) "
    "local live = 0 "
    "local f = redis.call('HGETALL', KEYS[1]) "
    "for i = 1, #f, 2 do "
    "  if string.sub(f[i], 1, 2) == 'w:' then "
    "    if tonumber(f[i + 1]) > now then live = live + 1 "
    "    else redis.call('HDEL', KEYS[1], f[i]) end "
    "  end "
    "end "
    "if live > 0 then return 0 end "
    "redis.call('ZREM', KEYS[2], ARGV[3]) "
    "if redis.call('HGET', KEYS[1], 'state') == 'on' then "
    "  redis.call('HSET', KEYS[1], 'state', 'off', 'last_seen', ARGV[2]) "
    "  redis.call('PUBLISH', ARGV[4], '{\"type\":\"presence\",\"user_id\":\"'"
    "             .. ARGV[3] .. '\",\"online\":false,\"last_seen\":' "
    "             .. ARGV[2] .. '}') "
    "  return 1 "
    "end "
    "return 0";

static const char  ngx_chat_presence_peers_sql[] =
    "SELECT out_user, out_shares, out_last_seen "
    "FROM chat_presence_peers($1, $2::bigint[])";


static ngx_int_t ngx_chat_presence_init_worker(ngx_cycle_t *cycle);
static void ngx_chat_presence_exit_worker(ngx_cycle_t *cycle);
static void ngx_chat_presence_up(ngx_str_t *user);
static void ngx_chat_presence_down(ngx_str_t *user);
static void ngx_chat_presence_message(ngx_chat_session_t *s, json_t *msg);
static ngx_uint_t ngx_chat_presence_pending(ngx_chat_session_t *s);
static void ngx_chat_presence_end(ngx_chat_session_t *s);
static void ngx_chat_presence_link(void);
static void ngx_chat_presence_notice(void *data, ngx_str_t *message);
static ngx_chat_presence_t *ngx_chat_presence_state_of(
    ngx_chat_session_t *s);
static void ngx_chat_presence_recheck_own(ngx_chat_session_user_t *u,
    json_t *msg, ngx_str_t *text);
static void ngx_chat_presence_check_watch(ngx_chat_presence_watch_t *w);
static void ngx_chat_presence_checked(void *data, PGresult *res);
static void ngx_chat_presence_renew(ngx_event_t *ev);
static void ngx_chat_presence_lease(ngx_str_t *user);
static void ngx_chat_presence_check(ngx_str_t *user, int64_t away);
static void ngx_chat_presence_script(const char *lua, ngx_str_t *user,
    ngx_str_t *a1, ngx_str_t *a2);
static void ngx_chat_presence_expire(ngx_event_t *ev);
static void ngx_chat_presence_sweep(ngx_event_t *ev);
static void ngx_chat_presence_swept(void *data, redisReply *reply);
static void ngx_chat_presence_asked(void *data, PGresult *res);
static void ngx_chat_presence_unask(ngx_chat_session_t *s,
    ngx_chat_presence_ask_t *ask);
static void ngx_chat_presence_answer(ngx_chat_session_t *s, json_t *id,
    json_t *known, PGresult *res);
static ngx_int_t ngx_chat_presence_watch(ngx_chat_session_t *s,
    ngx_str_t *user, ngx_uint_t last_seen, json_t *known);
static void ngx_chat_presence_known(ngx_chat_presence_watch_t *w,
    json_t *known);
static void ngx_chat_presence_read(ngx_chat_presence_watch_t *w);
static void ngx_chat_presence_state(void *data, redisReply *reply);
static void ngx_chat_presence_unwatch(ngx_chat_presence_watch_t *w);
static ngx_chat_presence_watch_t *ngx_chat_presence_find(
    ngx_chat_session_t *s, ngx_str_t *user);
static ngx_int_t ngx_chat_presence_key(u_char *buf, const char *name,
    ngx_str_t *user, ngx_str_t *key);
static int64_t ngx_chat_presence_now(void);


static ngx_chat_command_t  ngx_chat_presence_commands[] = {
    { ngx_string("presence"), ngx_chat_presence_message },
    { ngx_null_string, NULL }
};


static ngx_chat_notice_t  ngx_chat_presence_notices[] = {
    { ngx_string("recheck"), ngx_chat_presence_recheck_own },
    { ngx_null_string, NULL }
};


ngx_chat_feature_t  ngx_chat_presence_feature = {
    .name = "presence",
    .commands = ngx_chat_presence_commands,
    .notices = ngx_chat_presence_notices,
    .init_worker = ngx_chat_presence_init_worker,
    .exit_worker = ngx_chat_presence_exit_worker,
    .pending = ngx_chat_presence_pending,
    .end = ngx_chat_presence_end,
    .user_up = ngx_chat_presence_up,
    .user_down = ngx_chat_presence_down,
};


static ngx_chat_main_conf_t  *ngx_chat_presence_conf;
static ngx_rbtree_t           ngx_chat_presence_tree;
static ngx_rbtree_node_t      ngx_chat_presence_sentinel;
static ngx_queue_t            ngx_chat_presence_aways;
static ngx_event_t            ngx_chat_presence_renew_ev;
static ngx_event_t            ngx_chat_presence_sweep_ev;
static ngx_chat_redis_cmd_t  *ngx_chat_presence_sweep_cmd;

/* "w:<host>:<pid>:<random>": this worker's field in the users' hashes */
static u_char                 ngx_chat_presence_field_buf[NGX_MAXHOSTNAMELEN
                                                          + 64];
static ngx_str_t              ngx_chat_presence_field;
static ngx_str_t              ngx_chat_presence_none = ngx_string("");


static ngx_int_t
ngx_chat_presence_init_worker(ngx_cycle_t *cycle)
{
    u_char                *p;
    ngx_chat_main_conf_t  *cmcf;

    ngx_rbtree_init(&ngx_chat_presence_tree, &ngx_chat_presence_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&ngx_chat_presence_aways);

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_chat_module);

    if (cmcf->redis.host.len == 0 && cmcf->redis.unix_path.len == 0) {
        return NGX_OK;
    }

    ngx_chat_presence_conf = cmcf;

    /* Redis came back: the leases may have expired meanwhile */

    if (ngx_chat_redis_on_link(ngx_chat_presence_link) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_snprintf(ngx_chat_presence_field_buf,
                     sizeof(ngx_chat_presence_field_buf), "w:%V:%P:%08xD",
                     &cycle->hostname, ngx_pid, (uint32_t) ngx_random());
    ngx_chat_presence_field.data = ngx_chat_presence_field_buf;
    ngx_chat_presence_field.len = p - ngx_chat_presence_field_buf;

    ngx_chat_event_init(&ngx_chat_presence_renew_ev, ngx_chat_presence_renew,
                        cycle->log);
    ngx_chat_presence_renew_ev.cancelable = 1;
    ngx_add_timer(&ngx_chat_presence_renew_ev, cmcf->presence_lease / 3);

    if (ngx_worker == 0) {
        ngx_chat_event_init(&ngx_chat_presence_sweep_ev,
                            ngx_chat_presence_sweep, cycle->log);
        ngx_chat_presence_sweep_ev.cancelable = 1;
        ngx_add_timer(&ngx_chat_presence_sweep_ev, NGX_CHAT_PRESENCE_SWEEP);
    }

    return NGX_OK;
}


static void
ngx_chat_presence_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t               *q;
    ngx_chat_presence_away_t  *a;

    if (ngx_chat_presence_renew_ev.timer_set) {
        ngx_del_timer(&ngx_chat_presence_renew_ev);
    }

    if (ngx_chat_presence_sweep_ev.timer_set) {
        ngx_del_timer(&ngx_chat_presence_sweep_ev);
    }

    /* the sweep of another worker says "offline" once the leases expire */

    while (!ngx_queue_empty(&ngx_chat_presence_aways)) {
        q = ngx_queue_head(&ngx_chat_presence_aways);
        ngx_queue_remove(q);

        a = ngx_queue_data(q, ngx_chat_presence_away_t, queue);

        if (a->ev.timer_set) {
            ngx_del_timer(&a->ev);
        }

        ngx_free(a);
    }
}


/* ---------------------------------------------------------------- leases */


/* the first socket of a user on this worker */

static void
ngx_chat_presence_up(ngx_str_t *user)
{
    if (ngx_chat_presence_conf) {
        ngx_chat_presence_lease(user);
    }
}


/* the last socket of a user on this worker went away */

static void
ngx_chat_presence_down(ngx_str_t *user)
{
    u_char                    buf[NGX_CHAT_PRESENCE_KEY_MAX];
    ngx_str_t                 key;
    ngx_chat_presence_away_t  *a;

    if (ngx_chat_presence_conf == NULL
        || ngx_chat_presence_key(buf, "p:", user, &key) != NGX_OK)
    {
        return;
    }

    (void) ngx_chat_redis_command(ngx_chat_redis_ignore, NULL,
                                  ngx_cycle->log, "HDEL %b %b",
                                  key.data, key.len,
                                  ngx_chat_presence_field.data,
                                  ngx_chat_presence_field.len);

    if (user->len > NGX_INT64_LEN) {
        return;
    }

    a = ngx_calloc(sizeof(ngx_chat_presence_away_t), ngx_cycle->log);
    if (a == NULL) {
        return;                 /* the sweep will see to it */
    }

    a->away = ngx_chat_presence_now();
    a->user.data = a->data;
    a->user.len = user->len;
    ngx_memcpy(a->data, user->data, user->len);

    ngx_chat_event_init(&a->ev, ngx_chat_presence_expire, ngx_cycle->log);
    a->ev.data = a;
    a->ev.cancelable = 1;

    ngx_queue_insert_tail(&ngx_chat_presence_aways, &a->queue);
    ngx_add_timer(&a->ev, ngx_chat_presence_conf->presence_debounce);
}


static void
ngx_chat_presence_expire(ngx_event_t *ev)
{
    ngx_chat_presence_away_t  *a = ev->data;

    ngx_chat_presence_check(&a->user, a->away);

    ngx_queue_remove(&a->queue);
    ngx_free(a);
}


static void
ngx_chat_presence_renew(ngx_event_t *ev)
{
    ngx_chat_session_each_user(ngx_chat_presence_lease);

    ngx_add_timer(ev, ngx_chat_presence_conf->presence_lease / 3);
}


static void
ngx_chat_presence_lease(ngx_str_t *user)
{
    u_char     buf[NGX_INT64_LEN];
    ngx_str_t  expiry;

    expiry.data = buf;
    expiry.len = ngx_sprintf(buf, "%L", ngx_chat_presence_now()
                                        + ngx_chat_presence_conf
                                          ->presence_lease)
                 - buf;

    ngx_chat_presence_script(ngx_chat_presence_up_lua, user,
                             &ngx_chat_presence_field, &expiry);
}


static void
ngx_chat_presence_check(ngx_str_t *user, int64_t away)
{
    u_char     nbuf[NGX_INT64_LEN], wbuf[NGX_INT64_LEN];
    ngx_str_t  now, when;

    now.data = nbuf;
    now.len = ngx_sprintf(nbuf, "%L", ngx_chat_presence_now()) - nbuf;
    when.data = wbuf;
    when.len = ngx_sprintf(wbuf, "%L", away) - wbuf;

    ngx_chat_presence_script(ngx_chat_presence_check_lua, user, &now, &when);
}


/*
 * One of the scripts above on a user: KEYS are the user's hash and the
 * set of users by lease, ARGV the two values, the user and its presence
 * channel.  Nobody waits for it.
 */

static void
ngx_chat_presence_script(const char *lua, ngx_str_t *user, ngx_str_t *a1,
    ngx_str_t *a2)
{
    u_char     hbuf[NGX_CHAT_PRESENCE_KEY_MAX], zbuf[NGX_CHAT_PRESENCE_KEY_MAX];
    u_char     cbuf[NGX_CHAT_PRESENCE_KEY_MAX];
    ngx_str_t  hash, set, channel;

    if (ngx_chat_presence_key(hbuf, "p:", user, &hash) != NGX_OK
        || ngx_chat_presence_key(zbuf, "presence", &ngx_chat_presence_none,
                                  &set) != NGX_OK
        || ngx_chat_presence_key(cbuf, "pc:", user, &channel) != NGX_OK)
    {
        return;
    }

    (void) ngx_chat_redis_command(ngx_chat_redis_ignore, NULL,
                                  ngx_cycle->log,
                                  "EVAL %s 2 %b %b %b %b %b %b", lua,
                                  hash.data, hash.len, set.data, set.len,
                                  a1->data, a1->len, a2->data, a2->len,
                                  user->data, user->len,
                                  channel.data, channel.len);
}


/* worker 0: users whose leases all expired, dead workers' users */

static void
ngx_chat_presence_sweep(ngx_event_t *ev)
{
    u_char     now[NGX_INT64_LEN], zbuf[NGX_CHAT_PRESENCE_KEY_MAX];
    size_t     len;
    ngx_str_t  set;

    ngx_add_timer(ev, NGX_CHAT_PRESENCE_SWEEP);

    if (ngx_chat_presence_sweep_cmd) {
        return;                 /* the last one has not come back */
    }

    if (ngx_chat_presence_key(zbuf, "presence", &ngx_chat_presence_none, &set)
        != NGX_OK)
    {
        return;
    }

    len = ngx_sprintf(now, "%L", ngx_chat_presence_now()) - now;

    ngx_chat_presence_sweep_cmd = ngx_chat_redis_command(
                                      ngx_chat_presence_swept, NULL, ev->log,
                                      "ZRANGEBYSCORE %b -inf %b LIMIT 0 "
                                      NGX_CHAT_PRESENCE_SWEPT,
                                      set.data, set.len, now, len);
}


static void
ngx_chat_presence_swept(void *data, redisReply *reply)
{
    size_t      i;
    int64_t     now;
    ngx_str_t   user;

    ngx_chat_presence_sweep_cmd = NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    now = ngx_chat_presence_now();

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        user.data = (u_char *) reply->element[i]->str;
        user.len = reply->element[i]->len;

        ngx_chat_presence_check(&user, now);
    }
}


/* -------------------------------------------------------------- watchers */


/* {"type":"presence","subscribe":[ids]} or {"unsubscribe":[ids]} */

static void
ngx_chat_presence_message(ngx_chat_session_t *s, json_t *msg)
{
    size_t                      i, n;
    int64_t                     id;
    json_t                     *sub, *unsub, *v;
    ngx_str_t                   params[2], user;
    ngx_chat_presence_t        *ps;
    ngx_chat_pg_array_t         ids;
    ngx_chat_presence_ask_t    *ask;
    ngx_chat_presence_watch_t  *w;

    ps = ngx_chat_presence_state_of(s);
    if (ps == NULL) {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "unavailable",
                               "out of memory");
        return;
    }

    sub = json_object_get(msg, "subscribe");
    unsub = json_object_get(msg, "unsubscribe");
    v = sub ? sub : unsub;

    if ((sub != NULL) == (unsub != NULL)
        || !json_is_array(v)
        || json_array_size(v) > NGX_CHAT_PRESENCE_IDS)
    {
        goto bad;
    }

    n = json_array_size(v);

    for (i = 0; i < n; i++) {
        if (ngx_chat_session_parse_id(json_array_get(v, i), &id) != NGX_OK) {
            goto bad;
        }
    }

    if (unsub) {
        for (i = 0; i < n; i++) {
            user.data = (u_char *) json_string_value(json_array_get(v, i));
            user.len = json_string_length(json_array_get(v, i));

            w = ngx_chat_presence_find(s, &user);
            if (w) {
                ngx_chat_presence_unwatch(w);
            }
        }

        return;
    }

    if (n == 0) {
        return;
    }

    if (ngx_chat_presence_conf == NULL) {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "unavailable",
                               "presence needs chat_redis");
        return;
    }

    /* watched, and being checked to be: both count */

    if (ps->nwatches + ps->asked + n > NGX_CHAT_PRESENCE_WATCHES) {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "too_large",
                               "too many users watched on this socket");
        return;
    }

    if (ngx_chat_session_op(s, 1) != NGX_OK) {
        ngx_chat_session_error(s, json_object_get(msg, "id"), "rate_limited",
                               "too many requests in flight on this socket");
        return;
    }

    ask = ngx_calloc(sizeof(ngx_chat_presence_ask_t), s->log);

    if (ask == NULL || ngx_chat_pg_array_init(&ids, n, s->log) != NGX_OK) {
        ngx_free(ask);
        ngx_chat_session_op_done(s);
        ngx_chat_session_error(s, json_object_get(msg, "id"), "unavailable",
                               "out of memory");
        return;
    }

    for (i = 0; i < n; i++) {
        (void) ngx_chat_session_parse_id(json_array_get(v, i), &id);
        ngx_chat_pg_array_add(&ids, id);
    }

    params[0] = s->user_id;
    params[1] = *ngx_chat_pg_array_value(&ids);

    ask->query = ngx_chat_pg_query(ngx_chat_presence_peers_sql, 2, params,
                                   ngx_chat_presence_asked, ask,
                                   s->log);
    ngx_chat_pg_array_free(&ids);

    if (ask->query == NULL) {
        ngx_free(ask);
        ngx_chat_session_op_done(s);
        ngx_chat_session_error(s, json_object_get(msg, "id"), "unavailable",
                               "PostgreSQL is unavailable");
        return;
    }

    ask->session = s;
    ask->id = json_incref(json_object_get(msg, "id"));
    ask->known = json_incref(json_object_get(msg, "known"));
    ask->n = n;
    ngx_queue_insert_tail(&ps->asks, &ask->queue);
    ps->asked += n;

    return;

bad:

    ngx_chat_session_error(s, json_object_get(msg, "id"), "bad_request",
                           "presence takes \"subscribe\" or \"unsubscribe\" "
                           "with an array of at most 256 user ids");
}


static void
ngx_chat_presence_asked(void *data, PGresult *res)
{
    json_t                   *id, *known;
    ngx_chat_session_t       *s;
    ngx_chat_presence_ask_t  *ask = data;

    s = ask->session;
    id = ask->id;
    known = ask->known;

    if (s) {
        ngx_chat_presence_unask(s, ask);
    }

    ngx_free(ask);

    if (s) {
        ngx_chat_presence_answer(s, id, known, res);
    }

    json_decref(id);
    json_decref(known);

    if (s) {
        ngx_chat_session_settle(s);
    }
}


/* a subscribe is checked, or its socket goes */

static void
ngx_chat_presence_unask(ngx_chat_session_t *s, ngx_chat_presence_ask_t *ask)
{
    ngx_chat_presence_t  *ps;

    ps = ngx_chat_presence_state_of(s);

    ngx_queue_remove(&ask->queue);
    ps->asked -= ask->n;
    ngx_chat_session_op_done(s);
}


static void
ngx_chat_presence_answer(ngx_chat_session_t *s, json_t *id, json_t *known,
    PGresult *res)
{
    int         i, n;
    ngx_str_t   user, shares, last_seen;

    if (!ngx_chat_pg_ok(res)) {
        ngx_chat_session_error(s, id, "unavailable",
                               "PostgreSQL is unavailable");
        return;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 1, &shares);

        if (shares.len == 0 || shares.data[0] != 't') {
            ngx_chat_pg_value(res, i, 0, &user);
            ngx_chat_session_error(s, id, "forbidden",
                                   "only users who share a chat can be "
                                   "watched");
            return;
        }
    }

    for (i = 0; i < n; i++) {
        ngx_chat_pg_value(res, i, 0, &user);
        ngx_chat_pg_value(res, i, 2, &last_seen);

        if (ngx_chat_presence_state_of(s)->nwatches
            >= NGX_CHAT_PRESENCE_WATCHES)
        {
            ngx_chat_session_error(s, id, "too_large",
                                   "too many users watched on this socket");
            return;
        }

        if (ngx_chat_presence_watch(s, &user,
                                    last_seen.len && last_seen.data[0] == 't',
                                    known)
            != NGX_OK)
        {
            ngx_chat_session_error(s, id, "unavailable", "out of memory");
            return;
        }
    }
}


static ngx_int_t
ngx_chat_presence_watch(ngx_chat_session_t *s, ngx_str_t *user,
    ngx_uint_t last_seen, json_t *known)
{
    u_char                       buf[NGX_CHAT_PRESENCE_KEY_MAX];
    uint32_t                     hash;
    ngx_str_t                    channel;
    ngx_chat_presence_t         *ps;
    ngx_chat_presence_watch_t   *w;
    ngx_chat_presence_watched_t *wd;

    ps = ngx_chat_presence_state_of(s);
    w = ngx_chat_presence_find(s, user);

    if (w) {
        w->last_seen = last_seen;       /* settings as of now */
        ngx_chat_presence_known(w, known);
        ngx_chat_presence_read(w);
        return NGX_OK;
    }

    if (ngx_chat_presence_key(buf, "pc:", user, &channel) != NGX_OK) {
        return NGX_ERROR;
    }

    hash = ngx_crc32_long(channel.data, channel.len);
    wd = (ngx_chat_presence_watched_t *)
             ngx_str_rbtree_lookup(&ngx_chat_presence_tree, &channel, hash);

    if (wd == NULL) {
        wd = ngx_alloc(sizeof(ngx_chat_presence_watched_t) + channel.len
                       + user->len, ngx_cycle->log);
        if (wd == NULL) {
            return NGX_ERROR;
        }

        wd->node.node.key = hash;
        wd->node.str.data = wd->data;
        wd->node.str.len = channel.len;
        wd->user.data = ngx_cpymem(wd->data, channel.data, channel.len);
        wd->user.len = user->len;
        ngx_memcpy(wd->user.data, user->data, user->len);
        ngx_queue_init(&wd->watches);

        if (ngx_chat_redis_subscribe(&wd->node.str,
                                     ngx_chat_presence_notice, wd)
            != NGX_OK)
        {
            ngx_free(wd);
            return NGX_ERROR;
        }

        ngx_rbtree_insert(&ngx_chat_presence_tree, &wd->node.node);
    }

    w = ngx_calloc(sizeof(ngx_chat_presence_watch_t), ngx_cycle->log);
    if (w == NULL) {
        if (ngx_queue_empty(&wd->watches)) {
            ngx_chat_redis_unsubscribe(&wd->node.str);
            ngx_rbtree_delete(&ngx_chat_presence_tree, &wd->node.node);
            ngx_free(wd);
        }

        return NGX_ERROR;
    }

    w->session = s;
    w->watched = wd;
    w->last_seen = last_seen;
    ngx_chat_presence_known(w, known);

    ngx_queue_insert_tail(&wd->watches, &w->queue);
    ngx_queue_insert_tail(&ps->watches, &w->by_session);
    ps->nwatches++;

    /* subscribed first: a change from now on is not missed */

    ngx_chat_presence_read(w);

    return NGX_OK;
}


/*
 * What the client says it has of the user (the HTTP transports' "known"):
 * the first state read is not sent if it is just that.
 */

static void
ngx_chat_presence_known(ngx_chat_presence_watch_t *w, json_t *known)
{
    u_char       name[NGX_INT64_LEN + 1];
    json_t      *v;
    ngx_str_t   *user;
    const char  *state;

    w->known = 0;
    user = &w->watched->user;

    if (known == NULL || user->len > NGX_INT64_LEN) {
        return;
    }

    *ngx_cpymem(name, user->data, user->len) = '\0';

    v = json_object_get(known, (char *) name);
    state = json_string_value(v);

    if (state && ngx_strcmp(state, "on") == 0) {
        w->known = 1;
        w->known_on = 1;

    } else if (state && ngx_strcmp(state, "off") == 0) {
        w->known = 1;
        w->known_on = 0;
        w->known_seen = 0;

    } else if (json_is_integer(v)) {
        w->known = 1;
        w->known_on = 0;
        w->known_seen = json_integer_value(v);
    }
}


/* a subscribe is being checked, or a state read is on its way */

static ngx_uint_t
ngx_chat_presence_pending(ngx_chat_session_t *s)
{
    ngx_chat_presence_t  *ps;

    ps = ngx_chat_session_get_ctx(s, ngx_chat_presence_feature);

    return ps && (ps->reading || !ngx_queue_empty(&ps->asks));
}


static void
ngx_chat_presence_read(ngx_chat_presence_watch_t *w)
{
    if (w->cmd) {
        return;
    }

    w->cmd = ngx_chat_presence_fetch(&w->watched->user,
                                     ngx_chat_presence_state, w,
                                     ngx_cycle->log);

    if (w->cmd) {
        ngx_chat_presence_state_of(w->session)->reading++;
    }
}


static void
ngx_chat_presence_state(void *data, redisReply *reply)
{
    json_t                     *ev;
    int64_t                     seen;
    ngx_uint_t                  online, known;
    ngx_chat_session_t         *s;
    ngx_chat_presence_watch_t  *w = data;

    w->cmd = NULL;
    ngx_chat_presence_state_of(w->session)->reading--;
    s = w->session;

    known = w->known;
    w->known = 0;

    if (ngx_chat_presence_parse(reply, &online, &seen) != NGX_OK) {
        goto done;
    }

    if (!w->last_seen) {
        seen = -1;
    }

    /* nothing the client does not have */

    if (known
        && (online ? w->known_on
                   : !w->known_on && ngx_max(seen, 0) == w->known_seen))
    {
        goto done;
    }

    if (seen < 0) {
        ev = json_pack("{s:s,s:s%,s:b,s:n}", "type", "presence",
                       "user_id", w->watched->user.data,
                       w->watched->user.len, "online", (int) online,
                       "last_seen");

    } else {
        ev = json_pack("{s:s,s:s%,s:b,s:I}", "type", "presence",
                       "user_id", w->watched->user.data,
                       w->watched->user.len, "online", (int) online,
                       "last_seen", (json_int_t) seen);
    }

    (void) ngx_chat_session_send(s, NGX_CHAT_OUT_PRESENCE, ev);

done:

    ngx_chat_session_settle(s);
}


/*
 * Reads a user's state (watchers, GET /v1/users/{id}): the handler gets
 * the reply that ngx_chat_presence_parse() reads, or NULL.
 */

ngx_chat_redis_cmd_t *
ngx_chat_presence_fetch(ngx_str_t *user, ngx_chat_redis_handler_pt handler,
    void *data, ngx_log_t *log)
{
    u_char     buf[NGX_CHAT_PRESENCE_KEY_MAX];
    ngx_str_t  key;

    if (ngx_chat_presence_key(buf, "p:", user, &key) != NGX_OK) {
        return NULL;
    }

    return ngx_chat_redis_command(handler, data, log,
                                  "HMGET %b state last_seen",
                                  key.data, key.len);
}


/*
 * The answer to ngx_chat_presence_fetch(): whether the user is online,
 * and last_seen in epoch ms, -1 while online or when never seen.
 * NGX_ERROR: no answer, or not one of that shape.
 */

ngx_int_t
ngx_chat_presence_parse(redisReply *reply, ngx_uint_t *online,
    int64_t *last_seen)
{
    off_t        ms;
    redisReply  *state, *last;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2)
    {
        return NGX_ERROR;
    }

    state = reply->element[0];
    last = reply->element[1];

    *online = state->type == REDIS_REPLY_STRING && state->len == 2
              && ngx_strncmp(state->str, "on", 2) == 0;
    *last_seen = -1;

    if (!*online && last->type == REDIS_REPLY_STRING) {
        ms = ngx_atoof((u_char *) last->str, last->len);

        if (ms != NGX_ERROR) {
            *last_seen = (int64_t) ms;
        }
    }

    return NGX_OK;
}


/*
 * A user's "about" changed, and the change is committed: watchers hear
 * of it on the user's presence channel as {"type":"profile","user_id",
 * "about"}.  Nobody waits for the PUBLISH: a watcher that misses it
 * reads the profile with GET /v1/users/{id}.
 */

void
ngx_chat_presence_profile(ngx_str_t *user, ngx_str_t *about, ngx_log_t *log)
{
    char       *text;
    json_t     *ev;
    ngx_str_t   message;

    ev = json_pack("{s:s,s:s%,s:s%}", "type", "profile",
                   "user_id", user->data, user->len,
                   "about", about->data, about->len);

    text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);

    if (text == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "chat profile: user %V: no memory for the event",
                      user);
        return;
    }

    message.data = (u_char *) text;
    message.len = ngx_strlen(text);

    (void) ngx_chat_fanout("pc:", user, &message, "chat profile: change",
                           log);

    free(text);
}


/* on the user's channel: each of their sessions' watches */

static void
ngx_chat_presence_recheck_own(ngx_chat_session_user_t *u, json_t *msg,
    ngx_str_t *text)
{
    ngx_queue_t          *q, *wq;
    ngx_chat_session_t   *s;
    ngx_chat_presence_t  *ps;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_chat_session_t, queue);
        ps = ngx_chat_session_get_ctx(s, ngx_chat_presence_feature);

        if (ps == NULL) {
            continue;
        }

        for (wq = ngx_queue_head(&ps->watches);
             wq != ngx_queue_sentinel(&ps->watches);
             wq = ngx_queue_next(wq))
        {
            ngx_chat_presence_check_watch(ngx_queue_data(wq,
                                              ngx_chat_presence_watch_t,
                                              by_session));
        }
    }
}


static void
ngx_chat_presence_check_watch(ngx_chat_presence_watch_t *w)
{
    ngx_str_t            params[2];
    ngx_chat_pg_array_t  ids;

    if (w->check) {
        return;
    }

    if (ngx_chat_pg_array_init(&ids, 1, w->session->log) != NGX_OK) {
        return;
    }

    ngx_chat_pg_array_add(&ids, ngx_atoof(w->watched->user.data,
                                          w->watched->user.len));

    params[0] = w->session->user_id;
    params[1] = *ngx_chat_pg_array_value(&ids);

    w->check = ngx_chat_pg_query(ngx_chat_presence_peers_sql, 2, params,
                                 ngx_chat_presence_checked, w,
                                 w->session->log);
    ngx_chat_pg_array_free(&ids);
}


/* the watch's right now: gone, it ends; else its last_seen follows */

static void
ngx_chat_presence_checked(void *data, PGresult *res)
{
    ngx_str_t                   shares, last_seen;
    ngx_uint_t                  right;
    ngx_chat_presence_watch_t  *w = data;

    w->check = NULL;

    if (!ngx_chat_pg_ok(res) || PQntuples(res) != 1) {
        return;                 /* checked again at the next change */
    }

    ngx_chat_pg_value(res, 0, 1, &shares);
    ngx_chat_pg_value(res, 0, 2, &last_seen);

    if (shares.len == 0 || shares.data[0] != 't') {
        ngx_log_error(NGX_LOG_INFO, w->session->log, 0,
                      "chat presence: the watch of user %V ends: no chat "
                      "shared any more", &w->watched->user);
        ngx_chat_presence_unwatch(w);
        return;
    }

    right = (last_seen.len && last_seen.data[0] == 't');

    if (right != w->last_seen) {

        /* the client gets the state as it may see it now */

        w->last_seen = right;
        ngx_chat_presence_read(w);
    }
}


/*
 * What Redis brings on a watched user's presence channel, for each of
 * the watches here.  NULL: the channel was lost for a while, and every
 * watch reads the state anew.
 */

static void
ngx_chat_presence_notice(void *data, ngx_str_t *message)
{
    char                        *hidden;
    json_t                      *ev;
    const char                  *type;
    ngx_queue_t                 *q, *next;
    ngx_chat_out_t               out, out_hidden;
    ngx_chat_presence_watch_t   *w;
    ngx_chat_presence_watched_t *wd = data;

    if (message == NULL) {
        for (q = ngx_queue_head(&wd->watches);
             q != ngx_queue_sentinel(&wd->watches);
             q = ngx_queue_next(q))
        {
            ngx_chat_presence_read(ngx_queue_data(q,
                                                  ngx_chat_presence_watch_t,
                                                  queue));
        }

        return;
    }

    ev = json_loadb((char *) message->data, message->len, 0, NULL);
    if (ev == NULL) {
        return;
    }

    type = json_string_value(json_object_get(ev, "type"));

    if (type && ngx_strcmp(type, "recheck") == 0) {

        /* the watched user changed who may see them */

        for (q = ngx_queue_head(&wd->watches);
             q != ngx_queue_sentinel(&wd->watches);
             q = ngx_queue_next(q))
        {
            ngx_chat_presence_check_watch(ngx_queue_data(q,
                                              ngx_chat_presence_watch_t,
                                              queue));
        }

        json_decref(ev);
        return;
    }

    ngx_memzero(&out, sizeof(ngx_chat_out_t));
    out.kind = (type && ngx_strcmp(type, "profile") == 0)
               ? NGX_CHAT_OUT_PROFILE : NGX_CHAT_OUT_PRESENCE;
    out.text = *message;

    /*
     * Who may not see last_seen gets null: made once, when needed, and
     * only for events that have one (not "profile").
     */

    hidden = NULL;
    out_hidden = out;

    for (q = ngx_queue_head(&wd->watches);
         q != ngx_queue_sentinel(&wd->watches);
         q = next)
    {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_chat_presence_watch_t, queue);

        if (!w->last_seen && hidden == NULL
            && json_object_get(ev, "last_seen") != NULL)
        {
            if (json_object_set_new(ev, "last_seen", json_null()) != 0
                || (hidden = json_dumps(ev, JSON_COMPACT)) == NULL)
            {
                break;
            }

            out_hidden.text.data = (u_char *) hidden;
            out_hidden.text.len = ngx_strlen(hidden);
        }

        (void) ngx_chat_session_output(w->session,
                                       w->last_seen ? &out : &out_hidden);
    }

    json_decref(ev);
    free(hidden);
}


static void
ngx_chat_presence_unwatch(ngx_chat_presence_watch_t *w)
{
    ngx_chat_presence_watched_t  *wd = w->watched;

    if (w->cmd) {
        ngx_chat_redis_cancel(w->cmd);
        ngx_chat_presence_state_of(w->session)->reading--;
    }

    if (w->check) {
        ngx_chat_pg_cancel(w->check);
    }

    ngx_queue_remove(&w->queue);
    ngx_queue_remove(&w->by_session);
    ngx_chat_presence_state_of(w->session)->nwatches--;
    ngx_free(w);

    if (ngx_queue_empty(&wd->watches)) {
        ngx_chat_redis_unsubscribe(&wd->node.str);
        ngx_rbtree_delete(&ngx_chat_presence_tree, &wd->node.node);
        ngx_free(wd);
    }
}


static ngx_chat_presence_watch_t *
ngx_chat_presence_find(ngx_chat_session_t *s, ngx_str_t *user)
{
    ngx_queue_t                *q;
    ngx_chat_presence_t        *ps;
    ngx_chat_presence_watch_t  *w;

    ps = ngx_chat_presence_state_of(s);

    for (q = ngx_queue_head(&ps->watches);
         q != ngx_queue_sentinel(&ps->watches);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_chat_presence_watch_t, by_session);

        if (w->watched->user.len == user->len
            && ngx_strncmp(w->watched->user.data, user->data, user->len) == 0)
        {
            return w;
        }
    }

    return NULL;
}


static void
ngx_chat_presence_end(ngx_chat_session_t *s)
{
    ngx_queue_t              *q;
    ngx_chat_presence_t      *ps;
    ngx_chat_presence_ask_t  *ask;

    ps = ngx_chat_session_get_ctx(s, ngx_chat_presence_feature);

    if (ps == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ps->watches)) {
        q = ngx_queue_head(&ps->watches);
        ngx_chat_presence_unwatch(ngx_queue_data(q, ngx_chat_presence_watch_t,
                                                 by_session));
    }

    while (!ngx_queue_empty(&ps->asks)) {
        q = ngx_queue_head(&ps->asks);
        ask = ngx_queue_data(q, ngx_chat_presence_ask_t, queue);

        ngx_chat_presence_unask(s, ask);
        ask->session = NULL;
    }
}


/* the session's watches, made on first use */

static ngx_chat_presence_t *
ngx_chat_presence_state_of(ngx_chat_session_t *s)
{
    ngx_chat_presence_t  *ps;

    ps = ngx_chat_session_get_ctx(s, ngx_chat_presence_feature);

    if (ps) {
        return ps;
    }

    ps = ngx_pcalloc(s->pool, sizeof(ngx_chat_presence_t));
    if (ps == NULL) {
        return NULL;
    }

    ngx_queue_init(&ps->watches);
    ngx_queue_init(&ps->asks);

    ngx_chat_session_set_ctx(s, ps, ngx_chat_presence_feature);

    return ps;
}


/*
 * Redis came back: the leases may have expired meanwhile, and are taken
 * again (the watches read the state anew once their channels are back,
 * ngx_chat_presence_notice()).
 */

static void
ngx_chat_presence_link(void)
{
    ngx_chat_session_each_user(ngx_chat_presence_lease);
}


/* ------------------------------------------------------------------ misc */


static ngx_int_t
ngx_chat_presence_key(u_char *buf, const char *name, ngx_str_t *user,
    ngx_str_t *key)
{
    return ngx_chat_redis_key_buf(buf, NGX_CHAT_PRESENCE_KEY_MAX, name, user,
                                  0, key);
}


static int64_t
ngx_chat_presence_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}
