
/*
 * RFC 6455 / RFC 7692 codec.  Every function works on caller-owned bytes;
 * lengths are checked before anything is read.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <openssl/sha.h>

#include "ngx_chat_ws.h"


#define NGX_CHAT_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


static u_char *ngx_chat_ws_next_item(u_char *p, u_char *last, u_char sep,
    ngx_str_t *item);
static ngx_int_t ngx_chat_ws_deflate_param(ngx_str_t *param,
    ngx_chat_ws_deflate_t *d, ngx_uint_t *seen);


/*
 * Returns the header's size when it is complete, 0 when more bytes are
 * needed, NGX_ERROR for a 64-bit length with the most significant bit set.
 */

ssize_t
ngx_chat_ws_parse_header(u_char *p, size_t n, ngx_chat_ws_frame_t *f)
{
    size_t    size;
    uint64_t  len;

    if (n < 2) {
        return 0;
    }

    f->fin = p[0] >> 7;
    f->rsv1 = (p[0] >> 6) & 1;
    f->rsv2 = (p[0] >> 5) & 1;
    f->rsv3 = (p[0] >> 4) & 1;
    f->opcode = p[0] & 0x0f;
    f->masked = p[1] >> 7;

    len = p[1] & 0x7f;
    size = 2;

    if (len == 126) {
        size += 2;

    } else if (len == 127) {
        size += 8;
    }

    if (f->masked) {
        size += 4;
    }

    if (n < size) {
        return 0;
    }

    if (len == 126) {
        len = ((uint64_t) p[2] << 8) | p[3];
        p += 4;

    } else if (len == 127) {
        if (p[2] & 0x80) {
            return NGX_ERROR;
        }

        len = ((uint64_t) p[2] << 56) | ((uint64_t) p[3] << 48)
              | ((uint64_t) p[4] << 40) | ((uint64_t) p[5] << 32)
              | ((uint64_t) p[6] << 24) | ((uint64_t) p[7] << 16)
              | ((uint64_t) p[8] << 8) | p[9];
        p += 10;

    } else {
        p += 2;
    }

    f->len = len;

    if (f->masked) {
        ngx_memcpy(f->mask, p, 4);
    }

    return size;
}


/* offset: how many payload bytes of this frame came before p */

void
ngx_chat_ws_unmask(u_char *p, size_t n, u_char mask[4], uint64_t offset)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        p[i] ^= mask[(offset + i) & 3];
    }
}


size_t
ngx_chat_ws_header_size(uint64_t len)
{
    if (len < 126) {
        return 2;
    }

    return (len <= 0xffff) ? 4 : 10;
}


/* server frames: never masked, never fragmented */

u_char *
ngx_chat_ws_write_header(u_char *p, ngx_uint_t opcode, ngx_uint_t rsv1,
    uint64_t len)
{
    *p++ = (u_char) (0x80 | (rsv1 ? 0x40 : 0) | opcode);

    if (len < 126) {
        *p++ = (u_char) len;
        return p;
    }

    if (len <= 0xffff) {
        *p++ = 126;
        *p++ = (u_char) (len >> 8);
        *p++ = (u_char) len;
        return p;
    }

    *p++ = 127;
    *p++ = (u_char) (len >> 56);
    *p++ = (u_char) (len >> 48);
    *p++ = (u_char) (len >> 40);
    *p++ = (u_char) (len >> 32);
    *p++ = (u_char) (len >> 24);
    *p++ = (u_char) (len >> 16);
    *p++ = (u_char) (len >> 8);
    *p++ = (u_char) len;

    return p;
}


/*
 * Validates as bytes arrive, so a bad sequence is refused at once, even in
 * the first fragment of a message.  Rejects overlong forms, surrogates and
 * code points above U+10FFFF by narrowing the range of the byte after a
 * lead byte (RFC 3629, section 4).
 */

ngx_int_t
ngx_chat_ws_utf8_feed(ngx_chat_ws_utf8_t *u, u_char *p, size_t n)
{
    u_char  c, *last;

    last = p + n;

    while (p < last) {
        c = *p++;

        if (u->need) {
            if (c < u->lo || c > u->hi) {
                return NGX_ERROR;
            }

            u->need--;
            u->lo = 0x80;
            u->hi = 0xbf;
            continue;
        }

        if (c < 0x80) {
            continue;
        }

        u->lo = 0x80;
        u->hi = 0xbf;

        if (c < 0xc2) {
            return NGX_ERROR;

        } else if (c < 0xe0) {
            u->need = 1;

        } else if (c < 0xf0) {
            u->need = 2;

            if (c == 0xe0) {
                u->lo = 0xa0;

            } else if (c == 0xed) {
                u->hi = 0x9f;
            }

        } else if (c < 0xf5) {
            u->need = 3;

            if (c == 0xf0) {
                u->lo = 0x90;

            } else if (c == 0xf4) {
                u->hi = 0x8f;
            }

        } else {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the codes a peer may send (RFC 6455, section 7.4) */

ngx_uint_t
ngx_chat_ws_close_code_valid(ngx_uint_t code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}


ngx_int_t
ngx_chat_ws_key_valid(ngx_str_t *key)
{
    u_char     buf[18];
    ngx_str_t  decoded;

    if (key->len != 24) {
        return NGX_ERROR;
    }

    decoded.data = buf;

    if (ngx_decode_base64(&decoded, key) != NGX_OK || decoded.len != 16) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* out: NGX_CHAT_WS_ACCEPT_LEN bytes */

void
ngx_chat_ws_accept_key(ngx_str_t *key, u_char *out)
{
    u_char     buf[24 + sizeof(NGX_CHAT_WS_GUID) - 1];
    u_char     digest[SHA_DIGEST_LENGTH];
    ngx_str_t  src, dst;

    ngx_memcpy(ngx_cpymem(buf, key->data, 24), NGX_CHAT_WS_GUID,
               sizeof(NGX_CHAT_WS_GUID) - 1);

    SHA1(buf, sizeof(buf), digest);

    src.data = digest;
    src.len = sizeof(digest);
    dst.data = out;

    ngx_encode_base64(&dst, &src);
}


/* a case-insensitive match in a comma-separated header value */

ngx_uint_t
ngx_chat_ws_has_token(ngx_str_t *value, ngx_str_t *token)
{
    u_char     *p, *last;
    ngx_str_t   item;

    p = value->data;
    last = p + value->len;

    while (p < last) {
        p = ngx_chat_ws_next_item(p, last, ',', &item);

        if (item.len == token->len
            && ngx_strncasecmp(item.data, token->data, token->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* the first of the offered subprotocols that is known, in offer order */

ngx_str_t *
ngx_chat_ws_known_protocol(ngx_str_t *value, ngx_array_t *known)
{
    u_char      *p, *last;
    ngx_str_t    item, *name;
    ngx_uint_t   i;

    name = known->elts;
    p = value->data;
    last = p + value->len;

    while (p < last) {
        p = ngx_chat_ws_next_item(p, last, ',', &item);

        for (i = 0; i < known->nelts; i++) {
            if (item.len == name[i].len
                && ngx_strncmp(item.data, name[i].data, item.len) == 0)
            {
                return &name[i];
            }
        }
    }

    return NULL;
}


/*
 * Looks for the first acceptable permessage-deflate offer in one
 * Sec-WebSocket-Extensions value.  An offer with an unknown, repeated or
 * malformed parameter is declined and the next one is considered
 * (RFC 7692, section 5).
 */

ngx_int_t
ngx_chat_ws_deflate_offer(ngx_str_t *value, ngx_chat_ws_deflate_t *d)
{
    u_char     *p, *last, *q, *end;
    ngx_str_t   offer, name, param;
    ngx_uint_t  seen, ok;

    static ngx_str_t  pmd = ngx_string("permessage-deflate");

    p = value->data;
    last = p + value->len;

    while (p < last) {
        p = ngx_chat_ws_next_item(p, last, ',', &offer);

        q = offer.data;
        end = q + offer.len;

        q = ngx_chat_ws_next_item(q, end, ';', &name);

        if (name.len != pmd.len
            || ngx_strncasecmp(name.data, pmd.data, pmd.len) != 0)
        {
            continue;
        }

        ngx_memzero(d, sizeof(ngx_chat_ws_deflate_t));
        seen = 0;
        ok = 1;

        while (q < end) {
            q = ngx_chat_ws_next_item(q, end, ';', &param);

            if (ngx_chat_ws_deflate_param(&param, d, &seen) != NGX_OK) {
                ok = 0;
                break;
            }
        }

        if (ok) {
            d->enabled = 1;
            return NGX_OK;
        }
    }

    ngx_memzero(d, sizeof(ngx_chat_ws_deflate_t));

    return NGX_DECLINED;
}


static ngx_int_t
ngx_chat_ws_deflate_param(ngx_str_t *param, ngx_chat_ws_deflate_t *d,
    ngx_uint_t *seen)
{
    u_char      *eq;
    ngx_int_t    bits;
    ngx_str_t    name, value;
    ngx_uint_t   i;

    static ngx_str_t  names[] = {
        ngx_string("server_no_context_takeover"),
        ngx_string("client_no_context_takeover"),
        ngx_string("server_max_window_bits"),
        ngx_string("client_max_window_bits"),
    };

    if (param->len == 0) {
        return NGX_ERROR;
    }

    name = *param;
    ngx_str_null(&value);

    eq = ngx_strlchr(param->data, param->data + param->len, '=');

    if (eq) {
        name.len = eq - param->data;
        value.data = eq + 1;
        value.len = param->data + param->len - value.data;

        while (name.len && name.data[name.len - 1] == ' ') {
            name.len--;
        }

        while (value.len && value.data[0] == ' ') {
            value.data++;
            value.len--;
        }

        if (value.len >= 2 && value.data[0] == '"'
            && value.data[value.len - 1] == '"')
        {
            value.data++;
            value.len -= 2;
        }
    }

    for (i = 0; i < sizeof(names) / sizeof(ngx_str_t); i++) {
        if (name.len == names[i].len
            && ngx_strncasecmp(name.data, names[i].data, name.len) == 0)
        {
            break;
        }
    }

    if (i == sizeof(names) / sizeof(ngx_str_t) || (*seen & (1 << i))) {
        return NGX_ERROR;
    }

    *seen |= 1 << i;

    bits = 0;

    if (value.data) {
        if (i < 2) {
            return NGX_ERROR;
        }

        bits = ngx_atoi(value.data, value.len);

        /* zlib cannot deflate with a 256-byte window: decline 8 */

        if (bits < (i == 2 ? 9 : 8) || bits > 15) {
            return NGX_ERROR;
        }
    }

    switch (i) {

    case 0:
        /* we never take over the context in this direction anyway */
        break;

    case 1:
        d->client_no_context_takeover = 1;
        break;

    case 2:
        if (bits == 0) {
            return NGX_ERROR;
        }

        d->server_max_window_bits = bits;
        break;

    default: /* 3 */
        d->client_max_window_bits_offered = 1;
        d->client_max_window_bits = bits;
        break;
    }

    return NGX_OK;
}


u_char *
ngx_chat_ws_deflate_response(u_char *p, ngx_chat_ws_deflate_t *d)
{
    p = ngx_cpymem(p, "permessage-deflate; server_no_context_takeover",
                   sizeof("permessage-deflate; server_no_context_takeover")
                   - 1);

    if (d->client_no_context_takeover) {
        p = ngx_cpymem(p, "; client_no_context_takeover",
                       sizeof("; client_no_context_takeover") - 1);
    }

    if (d->server_max_window_bits) {
        p = ngx_sprintf(p, "; server_max_window_bits=%ui",
                        d->server_max_window_bits);
    }

    if (d->client_max_window_bits) {
        p = ngx_sprintf(p, "; client_max_window_bits=%ui",
                        d->client_max_window_bits);
    }

    return p;
}


/* the next sep-separated item of [p, last), trimmed of spaces and tabs */

static u_char *
ngx_chat_ws_next_item(u_char *p, u_char *last, u_char sep, ngx_str_t *item)
{
    u_char  *start, *end;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    start = p;

    while (p < last && *p != sep) {
        p++;
    }

    end = p;

    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    item->data = start;
    item->len = end - start;

    return (p < last) ? p + 1 : p;
}
