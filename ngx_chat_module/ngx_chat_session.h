
/*
 * A chat session: the state machine of one authenticated device
 * connection (PROTOCOL.md, section 4), split by job:
 *
 *   ngx_chat_session.c  lifecycle, auth, message dispatch, Redis fan-in,
 *                       the WebSocket transport
 *   ngx_chat_events.c   the HTTP transports: long-poll, SSE, calls
 *   ngx_chat_sync.c     per-chat order: sync, live offers, gap fills
 *   ngx_chat_send.c     send
 *   ngx_chat_ack.c      ack
 *   ngx_chat_receipt.c  read, and the receipts of acks and reads
 *   ngx_chat_presence.c presence: leases, watchers
 */

#ifndef _NGX_CHAT_SESSION_H_INCLUDED_
#define _NGX_CHAT_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_chat_module.h"
#include "ngx_chat_ws_conn.h"


#define NGX_CHAT_CLOSE_UNAUTHORIZED   4001
#define NGX_CHAT_CLOSE_AUTH_TIMEOUT   4002
#define NGX_CHAT_CLOSE_TRY_AGAIN      1013   /* PostgreSQL unavailable */

#define NGX_CHAT_ID_LEN               20     /* a bigint in decimal */
#define NGX_CHAT_MAX_SENDS            256    /* sends queued on a socket */
#define NGX_CHAT_MAX_HELD             256    /* live messages past a gap */


typedef enum {
    NGX_CHAT_SESSION_AUTH_WAIT = 0,
    NGX_CHAT_SESSION_AUTH_CHECK,
    NGX_CHAT_SESSION_CURSORS,            /* loading where each chat stands */
    NGX_CHAT_SESSION_SYNCING,            /* sending what is owed */
    NGX_CHAT_SESSION_READY
} ngx_chat_session_state_e;


typedef struct ngx_chat_session_user_s  ngx_chat_session_user_t;
typedef struct ngx_chat_session_s       ngx_chat_session_t;
typedef struct ngx_chat_ack_s           ngx_chat_ack_t;


/*
 * What carries a session: a WebSocket, or an HTTP request of the
 * fallback (ngx_chat_events.c).
 *
 *   send     one JSON text, as the client gets it
 *   close    ends the session with a WebSocket close code (an HTTP
 *            transport maps it); the session is ended later, by the
 *            transport, with ngx_chat_session_end()
 *   busy     output waits: the sync reads no further page until the
 *            transport calls ngx_chat_sync_drained()
 *   settled  nothing the client asked is in flight any more (sends,
 *            acks, reads, presence reads)
 *   begun    "ready" went (or would have), the sync started
 *   synced   the sync is over
 *
 * The last three may be NULL.
 */

typedef struct {
    void                     (*send)(ngx_chat_session_t *s, u_char *text,
                                     size_t len);
    void                     (*close)(ngx_chat_session_t *s,
                                      ngx_uint_t code, const char *reason);
    ngx_uint_t               (*busy)(ngx_chat_session_t *s);
    void                     (*settled)(ngx_chat_session_t *s);
    void                     (*begun)(ngx_chat_session_t *s);
    void                     (*synced)(ngx_chat_session_t *s);
} ngx_chat_session_transport_t;


/* where one chat stands for this device */
typedef struct {
    ngx_rbtree_node_t          node;         /* key: the chat id */
    ngx_chat_session_t        *session;
    int64_t                    delivered;    /* highest seq handled, own
                                                sends included; -1: unknown */
    int64_t                    expired;      /* the chat's expired_seq */
    ngx_queue_t                held;         /* live messages past a gap */
    ngx_uint_t                 nheld;
    ngx_event_t                gap;          /* gap wait, then fill */
    ngx_chat_pg_query_t       *fill;         /* the fill in flight */
    ngx_chat_ack_t            *ack;          /* pending or being applied */
    int64_t                    ack_want;     /* the highest acked */
} ngx_chat_session_chat_t;


/* a send, waiting for its turn or being stored */
typedef struct {
    ngx_queue_t                queue;        /* in session->sends */
    ngx_queue_t                ready;        /* in the worker's next batch */
    ngx_chat_session_t        *session;      /* NULL: the socket is gone */
    void                      *batch;        /* the batch storing it */
    int64_t                    chat_id;
    json_t                    *id;           /* the client's "id" */
    json_t                    *body;         /* what is stored */
    unsigned                   batched:1;    /* in the worker's next batch */
} ngx_chat_session_op_t;


struct ngx_chat_session_s {
    ngx_chat_session_transport_t  *transport;
    void                      *data;         /* the transport's */
    ngx_log_t                 *log;
    ngx_pool_t                *pool;         /* lives as long as the session */
    ngx_chat_loc_conf_t       *conf;
    ngx_chat_session_state_e   state;
    ngx_event_t                auth_timer;
    ngx_chat_pg_query_t       *query;        /* auth, cursors or sync page */
    ngx_str_t                  token;        /* from a Bearer header */
    ngx_chat_session_user_t   *user;         /* its index node, once authed */
    ngx_queue_t                queue;        /* in user->sessions */

    ngx_rbtree_t               chats;        /* ngx_chat_session_chat_t */
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                early;        /* live, before the cursors */
    ngx_uint_t                 nearly;
    int64_t                    sync_chat;    /* the sync's keyset */
    int64_t                    sync_seq;
    ngx_uint_t                 synced;       /* messages sent by the sync */
    ngx_queue_t                sends;        /* ngx_chat_session_op_t, FIFO:
                                                one stored at a time, so a
                                                device's messages keep their
                                                order */
    ngx_uint_t                 nsends;
    ngx_uint_t                 acks;         /* its chats' pending acks */
    ngx_queue_t                reads;        /* "read"s being applied */
    ngx_uint_t                 nreads;
    void                     (*sync_done)(ngx_chat_session_t *s);
    ngx_queue_t                watches;      /* presence: users watched */
    ngx_uint_t                 nwatches;
    ngx_queue_t                presence_asks;  /* subscribes being checked */
    ngx_uint_t                 close_code;   /* the peer's, answered once
                                                the acks are applied */
    ngx_uint_t                 tokens;       /* chat_send_rate, in 1/1000 */
    ngx_msec_t                 refilled;

    int64_t                    device;       /* the ids as numbers, */
    ngx_str_t                  user_id;      /* and as text */
    ngx_str_t                  device_id;
    u_char                     ids[2 * NGX_CHAT_ID_LEN];

    unsigned                   bad_header:1; /* unusable Authorization */
    unsigned                   sync_again:1; /* live messages were dropped */
    unsigned                   sync_page_wanted:1;
    unsigned                   resync:1;     /* a sync after a Redis outage */
    unsigned                   marks_had:1;  /* receipts in a sync sent */
    unsigned                   poll:1;       /* a long-poll: no "ready", no
                                                empty "synced" */
    unsigned                   call:1;       /* one HTTP call: no sync, no
                                                live messages */
    unsigned                   begin_wait:1; /* begins once acks applied */
};


/* ngx_chat_session.c */
ngx_int_t ngx_chat_session_init_worker(ngx_cycle_t *cycle);
ngx_uint_t ngx_chat_session_count(void);
void ngx_chat_session_init(ngx_chat_session_t *s,
    ngx_chat_session_transport_t *transport, void *data,
    ngx_chat_loc_conf_t *conf, ngx_log_t *log, ngx_pool_t *pool);
ngx_int_t ngx_chat_session_identify(ngx_chat_session_t *s, ngx_str_t *user,
    ngx_str_t *device);
void ngx_chat_session_begin(ngx_chat_session_t *s);
void ngx_chat_session_dispatch(ngx_chat_session_t *s, json_t *msg);
void ngx_chat_session_end(ngx_chat_session_t *s);
void ngx_chat_session_settle(ngx_chat_session_t *s);
#define ngx_chat_session_close(s, code, reason)                              \
    (s)->transport->close(s, code, reason)
#define ngx_chat_session_busy(s)  (s)->transport->busy(s)
void ngx_chat_session_send(ngx_chat_session_t *s, json_t *msg);
void ngx_chat_session_send_text(ngx_chat_session_t *s, u_char *text,
    size_t len);
void ngx_chat_session_error(ngx_chat_session_t *s, json_t *id,
    const char *code, const char *message);
ngx_int_t ngx_chat_session_parse_id(json_t *value, int64_t *id);
void ngx_chat_session_acks_applied(ngx_chat_session_t *s);
void ngx_chat_session_each_user(void (*handler)(ngx_str_t *user_id));

/* ngx_chat_sync.c */
void ngx_chat_sync_start(ngx_chat_session_t *s);
void ngx_chat_sync_drained(ngx_chat_session_t *s);
void ngx_chat_sync_offer(ngx_chat_session_t *s, int64_t chat, int64_t seq,
    ngx_uint_t own, u_char *json, size_t len);
void ngx_chat_sync_resync(ngx_chat_session_t *s);
void ngx_chat_sync_cleanup(ngx_chat_session_t *s);
ngx_chat_session_chat_t *ngx_chat_sync_chat(ngx_chat_session_t *s,
    int64_t id);

/* ngx_chat_send.c */
ngx_int_t ngx_chat_send_init_worker(ngx_cycle_t *cycle);
void ngx_chat_send_message(ngx_chat_session_t *s, json_t *msg);

/* ngx_chat_receipt.c */
void ngx_chat_receipt_publish(ngx_str_t *chat, ngx_str_t *user,
    const char *status, int64_t seq, ngx_str_t *authors, ngx_str_t *device);
void ngx_chat_receipt_read(ngx_chat_session_t *s, json_t *msg);
void ngx_chat_receipt_cleanup(ngx_chat_session_t *s);
void ngx_chat_receipt_sync(ngx_chat_session_t *s,
    void (*done)(ngx_chat_session_t *s));

/* ngx_chat_presence.c */
ngx_int_t ngx_chat_presence_init_worker(ngx_chat_main_conf_t *cmcf,
    ngx_cycle_t *cycle);
void ngx_chat_presence_exit_worker(void);
void ngx_chat_presence_up(ngx_str_t *user);
void ngx_chat_presence_down(ngx_str_t *user);
void ngx_chat_presence_message(ngx_chat_session_t *s, json_t *msg);
ngx_int_t ngx_chat_presence_pubsub(ngx_str_t *channel, ngx_str_t *message);
void ngx_chat_presence_cleanup(ngx_chat_session_t *s);
void ngx_chat_presence_link(void);
ngx_uint_t ngx_chat_presence_pending(ngx_chat_session_t *s);

/* ngx_chat_ack.c */
ngx_int_t ngx_chat_ack_init_worker(ngx_cycle_t *cycle);
void ngx_chat_ack_message(ngx_chat_session_t *s, json_t *msg);
void ngx_chat_ack_add(ngx_chat_session_t *s, int64_t chat_id, int64_t seq);
void ngx_chat_ack_close(ngx_chat_session_t *s, ngx_chat_session_chat_t *ch);
void ngx_chat_send_cleanup(ngx_chat_session_t *s);


#endif /* _NGX_CHAT_SESSION_H_INCLUDED_ */
