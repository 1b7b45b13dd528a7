
/*
 * Shared token buckets (ngx_chat_rate.h), after nginx's limit_req: an
 * rbtree by key and an LRU queue in a slab pool, under the zone's mutex.
 * Tokens are counted in thousandths.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_rate.h"
#include "ngx_chat_module.h"


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                lru;          /* most recent first */
} ngx_chat_rate_sh_t;


typedef struct {
    ngx_rbtree_node_t          node;         /* key: the key */
    ngx_queue_t                lru;
    ngx_uint_t                 tokens;
    ngx_uint_t                 full;
    ngx_uint_t                 rate;
    ngx_msec_t                 drawn;        /* when last refilled */
} ngx_chat_rate_node_t;


static ngx_int_t ngx_chat_rate_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_chat_rate_node_t *ngx_chat_rate_lookup(ngx_chat_rate_sh_t *sh,
    uint64_t key);
static void ngx_chat_rate_refill(ngx_chat_rate_node_t *n);
static void ngx_chat_rate_forget(ngx_chat_rate_sh_t *sh, ngx_uint_t n,
    ngx_uint_t any);


/*
 * The zone of the worker's own configuration: set when the worker starts,
 * never while a configuration is read (a reload that fails, or one
 * without chat_send_rate, must not leave a worker with a zone that is
 * gone).
 */
static ngx_shm_zone_t  *ngx_chat_rate_zone;
static ngx_str_t        ngx_chat_rate_name = ngx_string("chat_send_rate");


ngx_int_t
ngx_chat_rate_init(ngx_conf_t *cf, ngx_shm_zone_t **zone)
{
    if (*zone) {
        return NGX_OK;
    }

    *zone = ngx_shared_memory_add(cf, &ngx_chat_rate_name,
                                  NGX_CHAT_RATE_ZONE_SIZE, &ngx_chat_module);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_chat_rate_init_zone;

    return NGX_OK;
}


void
ngx_chat_rate_init_worker(ngx_shm_zone_t *zone)
{
    ngx_chat_rate_zone = zone;
}


static ngx_int_t
ngx_chat_rate_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t     *shpool;
    ngx_chat_rate_sh_t  *sh;

    if (data) {
        shm_zone->data = data;  /* a reload keeps the buckets */
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_chat_rate_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_rbtree_insert_value);
    ngx_queue_init(&sh->lru);

    shpool->data = sh;
    shm_zone->data = sh;

    shpool->log_ctx = (u_char *) " in the chat_send_rate zone";

    return NGX_OK;
}


/* 1: a token is taken from key's bucket; 0: it is empty */

ngx_uint_t
ngx_chat_rate_take(uint64_t key, ngx_uint_t rate, ngx_uint_t burst)
{
    ngx_uint_t             ok;
    ngx_slab_pool_t       *shpool;
    ngx_chat_rate_sh_t    *sh;
    ngx_chat_rate_node_t  *n;

    if (ngx_chat_rate_zone == NULL) {
        return 1;
    }

    shpool = (ngx_slab_pool_t *) ngx_chat_rate_zone->shm.addr;
    sh = ngx_chat_rate_zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_chat_rate_forget(sh, 2, 0);

    n = ngx_chat_rate_lookup(sh, key);

    if (n == NULL) {
        n = ngx_slab_alloc_locked(shpool, sizeof(ngx_chat_rate_node_t));

        if (n == NULL) {
            ngx_chat_rate_forget(sh, 16, 1);
            n = ngx_slab_alloc_locked(shpool, sizeof(ngx_chat_rate_node_t));
        }

        if (n == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);
            return 1;           /* the zone is full: let it through */
        }

        n->node.key = (ngx_rbtree_key_t) key;
        n->tokens = burst * 1000;
        n->drawn = ngx_current_msec;

        ngx_rbtree_insert(&sh->rbtree, &n->node);

    } else {
        ngx_queue_remove(&n->lru);
    }

    ngx_queue_insert_head(&sh->lru, &n->lru);

    n->full = burst * 1000;
    n->rate = rate;

    ngx_chat_rate_refill(n);

    ok = (n->tokens >= 1000);

    if (ok) {
        n->tokens -= 1000;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return ok;
}


static ngx_chat_rate_node_t *
ngx_chat_rate_lookup(ngx_chat_rate_sh_t *sh, uint64_t key)
{
    ngx_rbtree_node_t  *node, *sentinel;

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {
        if ((ngx_rbtree_key_t) key < node->key) {
            node = node->left;

        } else if ((ngx_rbtree_key_t) key > node->key) {
            node = node->right;

        } else {
            return (ngx_chat_rate_node_t *) node;
        }
    }

    return NULL;
}


static void
ngx_chat_rate_refill(ngx_chat_rate_node_t *n)
{
    ngx_msec_int_t  elapsed;

    elapsed = (ngx_msec_int_t) (ngx_current_msec - n->drawn);

    if (elapsed > 0) {
        n->tokens = ngx_min(n->full,
                            n->tokens + (ngx_uint_t) elapsed * n->rate);
        n->drawn = ngx_current_msec;
    }
}


/* up to n least recently used buckets go: full ones, or (any) whatever */

static void
ngx_chat_rate_forget(ngx_chat_rate_sh_t *sh, ngx_uint_t n, ngx_uint_t any)
{
    ngx_queue_t           *q;
    ngx_slab_pool_t       *shpool;
    ngx_chat_rate_node_t  *node;

    shpool = (ngx_slab_pool_t *) ngx_chat_rate_zone->shm.addr;

    while (n-- && !ngx_queue_empty(&sh->lru)) {
        q = ngx_queue_last(&sh->lru);
        node = ngx_queue_data(q, ngx_chat_rate_node_t, lru);

        ngx_chat_rate_refill(node);

        if (!any && node->tokens < node->full) {
            return;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&sh->rbtree, &node->node);
        ngx_slab_free_locked(shpool, node);
    }
}
