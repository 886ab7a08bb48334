/*
 * Shared-memory rbtrees keyed by an API key's SHA-256, for the key cache
 * (_auth.c) and the requests in flight per key (_conc.c): a node begins
 * with an ngx_http_cfcost_keytree_node_t; the hash's first bytes are the
 * rbtree key, the whole hash breaks ties.  The caller holds the zone's
 * mutex.
 */

#include "ngx_http_cfcost_module.h"


void
ngx_http_cfcost_keytree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t               **p;
    ngx_http_cfcost_keytree_node_t   *kn, *kt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            kn = (ngx_http_cfcost_keytree_node_t *) node;
            kt = (ngx_http_cfcost_keytree_node_t *) temp;

            p = (ngx_memcmp(kn->hash, kt->hash, NGX_HTTP_CFCOST_HASH_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* The node of hash in tree, or NULL. */
void *
ngx_http_cfcost_keytree_find(ngx_rbtree_t *tree, u_char *hash)
{
    ngx_int_t                        rc;
    ngx_rbtree_key_t                 key;
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_http_cfcost_keytree_node_t  *kn;

    ngx_memcpy(&key, hash, sizeof(ngx_rbtree_key_t));

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        kn = (ngx_http_cfcost_keytree_node_t *) node;
        rc = ngx_memcmp(hash, kn->hash, NGX_HTTP_CFCOST_HASH_LEN);

        if (rc == 0) {
            return kn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* Adds kn (a new node) to tree under hash. */
void
ngx_http_cfcost_keytree_add(ngx_rbtree_t *tree,
    ngx_http_cfcost_keytree_node_t *kn, u_char *hash)
{
    ngx_memcpy(kn->hash, hash, NGX_HTTP_CFCOST_HASH_LEN);
    ngx_memcpy(&kn->node.key, hash, sizeof(ngx_rbtree_key_t));
    ngx_rbtree_insert(tree, &kn->node);
}
