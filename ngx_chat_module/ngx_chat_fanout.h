
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
 * publish.  A fan-out that Redis did not take (the command link down,
 * chat_redis_max_pending reached, a timeout, the link lost with it in
 * flight) is counted in chat_publish_failures_total, logged at warn
 * level ("<what> not published"), and kept (a bounded queue: 4096 of
 * them, 8 MiB) to go again, whole, once the command link is back; it
 * returns NGX_ERROR when it knows at once.  Receivers drop repeats.  What
 * the queue drops past its bounds is stored all the same (callers
 * publish only what PostgreSQL keeps: messages, marks, membership
 * changes, unlinked devices), so it reaches online devices when they read
 * PostgreSQL again: a gap fill, a resync, their next connection.
 */

#ifndef _NGX_CHAT_FANOUT_H_INCLUDED_
#define _NGX_CHAT_FANOUT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


ngx_int_t ngx_chat_fanout_init_worker(ngx_cycle_t *cycle);
void ngx_chat_fanout_exit_worker(void);
ngx_int_t ngx_chat_fanout(const char *name, ngx_str_t *users,
    ngx_str_t *message, const char *what, ngx_log_t *log);
ngx_int_t ngx_chat_fanout_receipt(ngx_str_t *chat, ngx_str_t *user,
    const char *status, int64_t seq, ngx_str_t *authors, ngx_str_t *device,
    ngx_log_t *log);
void ngx_chat_fanout_recheck(ngx_str_t *user, ngx_log_t *log);


#endif /* _NGX_CHAT_FANOUT_H_INCLUDED_ */
