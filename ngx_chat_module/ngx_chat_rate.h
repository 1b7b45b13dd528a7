
/*
 * Token buckets shared by the workers of an nginx, keyed by a number (a
 * device id), in one shared memory zone: a device's sockets on every
 * worker draw from the same bucket (chat_send_rate).
 *
 *     ngx_chat_rate_init(cf, &cmcf->rate_zone)   at configuration
 *     ngx_chat_rate_init_worker(cmcf->rate_zone) at worker start
 *     if (!ngx_chat_rate_take(device, rate, burst)) -> throttled
 *
 * rate is tokens a second, burst the bucket's size; a bucket that nobody
 * drew from for long enough to be full again is forgotten, and when the
 * zone is full the least recently used ones are.
 */

#ifndef _NGX_CHAT_RATE_H_INCLUDED_
#define _NGX_CHAT_RATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_CHAT_RATE_ZONE_SIZE  (4 * 1024 * 1024)


ngx_int_t ngx_chat_rate_init(ngx_conf_t *cf, ngx_shm_zone_t **zone);
void ngx_chat_rate_init_worker(ngx_shm_zone_t *zone);
ngx_uint_t ngx_chat_rate_take(uint64_t key, ngx_uint_t rate,
    ngx_uint_t burst);


#endif /* _NGX_CHAT_RATE_H_INCLUDED_ */
