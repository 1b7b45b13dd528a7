
/*
 * ngx_asset_module: media through presigned URLs (PROTOCOL.md, section 3).
 * It runs on the PostgreSQL pool and auth of ngx_chat_module.so, which
 * must be loaded first.
 */

#ifndef _NGX_ASSET_MODULE_H_INCLUDED_
#define _NGX_ASSET_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


extern ngx_module_t  ngx_asset_module;


#endif /* _NGX_ASSET_MODULE_H_INCLUDED_ */
