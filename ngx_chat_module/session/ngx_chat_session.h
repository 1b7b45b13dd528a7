
/*
 * A chat session: one authenticated device connection (PROTOCOL.md,
 * section 4), over a WebSocket or a request of the HTTP fallback.
 *
 * The core knows no feature by name.  It runs the lifecycle and the
 * authentication, keeps the per-user index (a user's sessions on this
 * worker and their Redis channel), the per-chat table with the order of
 * delivery (ngx_chat_order.c), and the output: typed events to the
 * transport, with flow control.  Features plug into it through a table
 * (ngx_chat_feature_t): the client messages they take, what they take on
 * the user's channel, and hooks at the points of the lifecycle.  Each
 * feature owns its per-session state (one slot in s->ctx) and its
 * per-chat state (one slot in ch->ctx), and its timers.
 *
 *   AUTH_WAIT  -- "auth" or a Bearer header --> AUTH_CHECK
 *   AUTH_CHECK -- token valid: "ready", the user's channel subscribed,
 *                 every feature's begin() --> SYNCING;
 *                 invalid --> close 4001
 *   SYNCING    -- a feature (the sync) calls ngx_chat_session_synced()
 *                 once what was owed is out; every feature's synced()
 *                 adds its part, "synced" --> READY
 *   READY      -- live messages; a Redis outage sends it back to SYNCING
 *                 through the features' resync()
 */

#ifndef _NGX_CHAT_SESSION_H_INCLUDED_
#define _NGX_CHAT_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_chat_module.h"


#define NGX_CHAT_CLOSE_UNAUTHORIZED   4001
#define NGX_CHAT_CLOSE_AUTH_TIMEOUT   4002
#define NGX_CHAT_CLOSE_TRY_AGAIN      1013   /* PostgreSQL unavailable */
#define NGX_CHAT_CLOSE_ERROR          1011

#define NGX_CHAT_ID_LEN               20     /* a bigint in decimal */
#define NGX_CHAT_FEATURES_MAX         8      /* slots in s->ctx, ch->ctx */
#define NGX_CHAT_SESSION_OPS          256    /* client requests in flight */

/* a feature's client requests hold a closing session until applied */
#define NGX_CHAT_FEATURE_HOLDS_CLOSE  1


typedef struct ngx_chat_session_s       ngx_chat_session_t;
typedef struct ngx_chat_session_chat_s  ngx_chat_session_chat_t;
typedef struct ngx_chat_session_user_s  ngx_chat_session_user_t;
typedef struct ngx_chat_feature_s       ngx_chat_feature_t;


typedef enum {
    NGX_CHAT_SESSION_AUTH_WAIT = 0,
    NGX_CHAT_SESSION_AUTH_CHECK,
    NGX_CHAT_SESSION_SYNCING,            /* sending what is owed */
    NGX_CHAT_SESSION_READY
} ngx_chat_session_state_e;


/* ------------------------------------------------------------- output */


typedef enum {
    NGX_CHAT_OUT_READY = 0,
    NGX_CHAT_OUT_SYNCED,
    NGX_CHAT_OUT_MSG,                    /* chat, seq */
    NGX_CHAT_OUT_EXPIRED,                /* chat, seq: the range's last */
    NGX_CHAT_OUT_RECEIPT,                /* chat */
    NGX_CHAT_OUT_SENT,                   /* chat, seq */
    NGX_CHAT_OUT_PRESENCE,
    NGX_CHAT_OUT_PROFILE,
    NGX_CHAT_OUT_PONG,
    NGX_CHAT_OUT_ERROR                   /* code, message */
} ngx_chat_out_kind_e;


/* one event for the client, as PROTOCOL.md names it */
typedef struct {
    ngx_chat_out_kind_e        kind;
    int64_t                    chat;
    int64_t                    seq;
    json_t                    *json;         /* the object, or NULL and */
    ngx_str_t                  text;         /* ... the object serialised */
    const char                *code;         /* an error's */
    const char                *message;
    unsigned                   owed:1;       /* brought by the sync */
} ngx_chat_out_t;


/*
 * What carries a session: a WebSocket, or a request of the HTTP
 * fallback.
 *
 *   send     one event; NGX_ERROR: the transport is closing, dropped
 *   room     flow control: may a paced producer queue len more bytes
 *            now (with len 0: may it start another batch)?  If not, the
 *            producer waits for ngx_chat_session_drained()
 *   close    ends the session with a WebSocket close code (an HTTP
 *            transport maps it); the session is ended later, by the
 *            transport, with ngx_chat_session_end()
 *   settled  nothing the client asked is in flight any more
 *   begun    "ready" went (or would have), the sync started
 *   synced   the sync is over
 *
 * The last three may be NULL.
 */

#define NGX_CHAT_TRANSPORT_CALL   1      /* one request: no live messages,
                                            no sync */
#define NGX_CHAT_TRANSPORT_POLL   2      /* a long-poll: what it has no
                                            room for, it leaves for the
                                            next poll */

typedef struct {
    ngx_int_t                (*send)(ngx_chat_session_t *s,
                                     ngx_chat_out_t *out);
    ngx_uint_t               (*room)(ngx_chat_session_t *s, size_t len);
    void                     (*close)(ngx_chat_session_t *s,
                                      ngx_uint_t code, const char *reason);
    void                     (*settled)(ngx_chat_session_t *s);
    void                     (*begun)(ngx_chat_session_t *s);
    void                     (*synced)(ngx_chat_session_t *s);
    ngx_uint_t                 flags;
} ngx_chat_transport_t;


/* a paced producer, resumed once the client has drained its queue */
typedef struct {
    ngx_queue_t                queue;        /* in s->waiters */
    void                     (*handler)(ngx_chat_session_t *s, void *data);
    void                      *data;
    unsigned                   waiting:1;
} ngx_chat_session_waiter_t;


/* ----------------------------------------------------------- features */


/* a client message type */
typedef struct {
    ngx_str_t                  type;
    void                     (*handler)(ngx_chat_session_t *s, json_t *msg);
} ngx_chat_command_t;


/* a message type on a user's channel, for the user's sessions here */
typedef struct {
    ngx_str_t                  type;
    void                     (*handler)(ngx_chat_session_user_t *u,
                                        json_t *msg, ngx_str_t *text);
} ngx_chat_notice_t;


/*
 * A feature.  Every hook may be NULL.
 *
 *   init_worker, exit_worker   its worker-wide state
 *   begin      the session is authenticated and its user's channel
 *              subscribed
 *   resync     the user's channel was lost for a while: what was
 *              published meanwhile must be read again
 *   synced     the sync is over: add what goes before "synced";
 *              NGX_AGAIN: it calls ngx_chat_session_resume() when done
 *   pending    client requests in flight (ngx_chat_session_settle())
 *   end        the session ends: its state goes
 *   chat_end   a chat of the table goes (with the session)
 *   user_up, user_down
 *              a user's first session on this worker came, its last went
 */

struct ngx_chat_feature_s {
    const char                *name;
    ngx_chat_command_t        *commands;     /* ends with an empty type */
    ngx_chat_notice_t         *notices;      /* ends with an empty type */

    ngx_int_t                (*init_worker)(ngx_cycle_t *cycle);
    void                     (*exit_worker)(ngx_cycle_t *cycle);
    void                     (*begin)(ngx_chat_session_t *s);
    void                     (*resync)(ngx_chat_session_t *s);
    ngx_int_t                (*synced)(ngx_chat_session_t *s);
    ngx_uint_t               (*pending)(ngx_chat_session_t *s);
    void                     (*end)(ngx_chat_session_t *s);
    void                     (*chat_end)(ngx_chat_session_t *s,
                                         ngx_chat_session_chat_t *ch);
    void                     (*user_up)(ngx_str_t *user);
    void                     (*user_down)(ngx_str_t *user);

    ngx_uint_t                 flags;        /* NGX_CHAT_FEATURE_* */
    ngx_uint_t                 index;        /* its slot, set at start */
};


/* ------------------------------------------------------- session, chat */


/* where one chat stands for this device (ngx_chat_order.c) */
struct ngx_chat_session_chat_s {
    ngx_rbtree_node_t          node;         /* key: the chat id */
    ngx_chat_session_t        *session;
    int64_t                    delivered;    /* highest seq handled, own
                                                sends included; -1:
                                                unknown */
    int64_t                    expired;      /* the chat's expired_seq */
    void                      *order;        /* held messages, gap fill */
    void                      *ctx[NGX_CHAT_FEATURES_MAX];
};


/* a user with sessions on this worker, and its Redis channel */
struct ngx_chat_session_user_s {
    ngx_str_node_t             node;         /* key: the user's channel */
    ngx_queue_t                sessions;
    ngx_uint_t                 round;        /* the last poll that read it */
};


struct ngx_chat_session_s {
    ngx_chat_transport_t      *transport;
    void                      *data;         /* the transport's */
    ngx_log_t                 *log;          /* says whose session it is */
    ngx_pool_t                *pool;         /* lives as long as the session */
    ngx_chat_loc_conf_t       *conf;
    ngx_chat_session_state_e   state;

    ngx_event_t                auth_timer;   /* until "auth" */
    ngx_event_t                hold_timer;   /* bounds a wait for requests
                                                in flight */
    ngx_chat_pg_query_t       *auth;         /* the token check */
    ngx_queue_t                admit;        /* waiting to start */
    ngx_str_t                  token;        /* while it waits */

    ngx_chat_session_user_t   *user;         /* its index node, once authed */
    ngx_queue_t                queue;        /* in user->sessions */

    ngx_rbtree_t               chats;        /* ngx_chat_session_chat_t */
    ngx_rbtree_node_t          sentinel;

    ngx_queue_t                waiters;      /* ngx_chat_session_waiter_t */
    ngx_queue_t                behind;       /* chats a fill must bring
                                                up to date (order) */
    ngx_chat_session_waiter_t  behind_waiter;
    size_t                     held;         /* bytes of live messages held
                                                past gaps (order) */
    ngx_uint_t                 synced_feature;  /* whose synced() runs */
    ngx_uint_t                 synced_count; /* messages the sync sent */
    ngx_uint_t                 close_code;   /* the peer's, answered once
                                                its requests are applied */
    ngx_msec_t                 drained_at;   /* when the transport last had
                                                written all it was given */
    ngx_uint_t                 ops;          /* client requests in flight:
                                                sends, acks, reads,
                                                presence checks */
    ngx_log_handler_pt         log_handler;  /* the transport's log's */
    void                      *log_data;

    int64_t                    device;       /* the ids as numbers, */
    ngx_str_t                  user_id;      /* and as text */
    ngx_str_t                  device_id;
    u_char                     ids[2 * NGX_CHAT_ID_LEN];

    void                      *ctx[NGX_CHAT_FEATURES_MAX];

    unsigned                   loaded:1;     /* the table has the cursors */
    unsigned                   resyncing:1;  /* no "synced" at the end */
    unsigned                   finishing:1;  /* features' synced() run */
    unsigned                   resync_again:1;
    unsigned                   begin_held:1; /* begins once requests in
                                                flight are applied */
    unsigned                   starting:1;   /* holds a start slot */
    unsigned                   admitting:1;  /* in the admission queue */
};


#define ngx_chat_session_get_ctx(s, feature)  (s)->ctx[(feature).index]
#define ngx_chat_session_set_ctx(s, c, feature)  (s)->ctx[(feature).index] = c
#define ngx_chat_chat_get_ctx(ch, feature)  (ch)->ctx[(feature).index]
#define ngx_chat_chat_set_ctx(ch, c, feature)  (ch)->ctx[(feature).index] = c

#define ngx_chat_session_close(s, code, reason)                              \
    (s)->transport->close(s, code, reason)


/* ngx_chat_session.c: lifecycle, auth, the per-user index, output */
ngx_int_t ngx_chat_session_init_worker(ngx_chat_feature_t **features,
    ngx_msec_t redis_down_poll, ngx_cycle_t *cycle);
void ngx_chat_session_exit_worker(ngx_cycle_t *cycle);
ngx_uint_t ngx_chat_session_count(void);

void ngx_chat_session_init(ngx_chat_session_t *s,
    ngx_chat_transport_t *transport, void *data, ngx_chat_loc_conf_t *conf,
    ngx_log_t *log, ngx_pool_t *pool);
void ngx_chat_session_auth(ngx_chat_session_t *s, ngx_str_t *token);
ngx_int_t ngx_chat_session_identify(ngx_chat_session_t *s, ngx_str_t *user,
    ngx_str_t *device);
void ngx_chat_session_begin(ngx_chat_session_t *s);
void ngx_chat_session_message(ngx_chat_session_t *s, u_char *data,
    size_t len);
void ngx_chat_session_dispatch(ngx_chat_session_t *s, json_t *msg);
ngx_int_t ngx_chat_session_closing(ngx_chat_session_t *s, ngx_uint_t code);
void ngx_chat_session_end(ngx_chat_session_t *s);

void ngx_chat_session_chat_end(ngx_chat_session_chat_t *ch);
void ngx_chat_session_synced(ngx_chat_session_t *s, ngx_uint_t count);
void ngx_chat_session_resume(ngx_chat_session_t *s);
void ngx_chat_session_resync(ngx_chat_session_t *s);
void ngx_chat_session_settle(ngx_chat_session_t *s);
ngx_int_t ngx_chat_session_op(ngx_chat_session_t *s, ngx_uint_t bounded);
void ngx_chat_session_op_done(ngx_chat_session_t *s);
void ngx_chat_session_each_user(void (*handler)(ngx_str_t *user_id));
void ngx_chat_session_each(void (*handler)(ngx_chat_session_t *s,
    void *data), void *data);

ngx_int_t ngx_chat_session_output(ngx_chat_session_t *s, ngx_chat_out_t *out);
ngx_int_t ngx_chat_session_send(ngx_chat_session_t *s,
    ngx_chat_out_kind_e kind, json_t *json);
void ngx_chat_session_error(ngx_chat_session_t *s, json_t *id,
    const char *code, const char *message);
ngx_uint_t ngx_chat_session_room(ngx_chat_session_t *s, size_t len);
void ngx_chat_session_wait(ngx_chat_session_t *s,
    ngx_chat_session_waiter_t *w);
void ngx_chat_session_unwait(ngx_chat_session_waiter_t *w);
void ngx_chat_session_drained(ngx_chat_session_t *s);

ngx_int_t ngx_chat_session_parse_id(json_t *value, int64_t *id);
ngx_int_t ngx_chat_session_chat_seq(json_t *msg, int64_t *chat,
    int64_t *seq);

/* ngx_chat_order.c: the per-chat table and the order of delivery */
ngx_chat_session_chat_t *ngx_chat_order_chat(ngx_chat_session_t *s,
    int64_t id, ngx_uint_t create);
void ngx_chat_order_position(ngx_chat_session_t *s, int64_t chat,
    int64_t acked, int64_t expired);
void ngx_chat_order_loaded(ngx_chat_session_t *s);
void ngx_chat_order_offer(ngx_chat_session_t *s, int64_t chat, int64_t seq,
    ngx_uint_t own, ngx_str_t *json);
ngx_int_t ngx_chat_order_rows(ngx_chat_session_t *s, PGresult *res,
    ngx_uint_t owed, int *row, ngx_uint_t *sent);
void ngx_chat_order_ready(ngx_chat_session_t *s);
void ngx_chat_order_drained(ngx_chat_session_t *s, void *data);
void ngx_chat_order_cleanup(ngx_chat_session_t *s);


#endif /* _NGX_CHAT_SESSION_H_INCLUDED_ */
