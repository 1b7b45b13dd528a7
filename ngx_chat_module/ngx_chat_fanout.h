
/*
 * Fan-out: one message to the Redis channel of each of a list of users,
 * in as few commands as it can.
 *
 *     (void) ngx_chat_fanout("u:", &users, &message, "chat: message", log);
 *
 * users are ids separated by commas ("1,2,3", as string_agg() makes
 * them); the channels are "<prefix><name><id>".  what names the message
 * in the log (a string that lives as long as the worker).
 *
 * The failure policy, the same for every caller: nobody waits for the
 * publish and nothing is retried.  A publish that does not happen (Redis
 * down, chat_redis_max_pending reached, a timeout) is counted in
 * chat_publish_failures_total and logged at warn level ("<what> not
 * published"); it returns NGX_ERROR when it knows at once.  Callers publish only what PostgreSQL
 * keeps (messages, marks, membership changes), so a lost publish delays
 * what online devices see until they read PostgreSQL again: a gap fill,
 * the resync when the subscription link comes back, their next
 * connection.
 */

#ifndef _NGX_CHAT_FANOUT_H_INCLUDED_
#define _NGX_CHAT_FANOUT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


ngx_int_t ngx_chat_fanout(const char *name, ngx_str_t *users,
    ngx_str_t *message, const char *what, ngx_log_t *log);
ngx_int_t ngx_chat_fanout_receipt(ngx_str_t *chat, ngx_str_t *user,
    const char *status, int64_t seq, ngx_str_t *authors, ngx_str_t *device,
    ngx_log_t *log);


#endif /* _NGX_CHAT_FANOUT_H_INCLUDED_ */
