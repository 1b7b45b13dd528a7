#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

The seeds are the suites' own inputs in each target's input format
(see the comment at the top of each fuzz/fuzz_*.c): the frames of
t/ws_frames.t and t/ws_fragments.t, the UTF-8 cases of t/ws_utf8.t, the
handshake headers of t/ws_handshake.t, the client messages of the ws_*.t
suites, the API requests of the api_*.t and http_events_*.t suites, the
notices the workers publish.  Run it again after changing a format:

    python3 fuzz/seeds.py
"""

import hashlib
import json
import os
import re
import struct
import zlib

TOP = os.path.dirname(os.path.abspath(__file__))


def write(target, data):
    d = os.path.join(TOP, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def frame(opcode, payload, fin=True, rsv1=False, mask=b'\x11\x22\x33\x44'):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack('>H', n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack('>Q', n)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked


def deflate(data):
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b'\x00\x00\xff\xff') else out


def close(code, reason=b''):
    return frame(0x8, struct.pack('>H', code) + reason)


# ------------------------------------------------------------ ws_frames

def ws_frames():
    text = 'héllo, wörld ✓ 𝄞'.encode()
    streams = [
        frame(0x1, b'hello') + close(1000),
        frame(0x2, bytes(range(256))) + close(1000),
        frame(0x1, b'frag', fin=False) + frame(0x9, b'ping')
        + frame(0x0, b'ment', fin=False) + frame(0xa, b'')
        + frame(0x0, b'ed') + close(1001, b'bye'),
        frame(0x1, text[:3], fin=False) + frame(0x0, text[3:]),
        frame(0x1, b'\xce', fin=False) + frame(0x0, b'\xbb'),
        frame(0x1, b'\xed\xa0\x80'),                 # a surrogate: 1007
        frame(0x1, b'x' * 200) + frame(0x1, b'y' * 70000),
        frame(0x8, b'\x03'),                         # 1-byte close: 1002
        close(999), close(1005), close(4000, b'app'),
        frame(0x3, b'reserved'), frame(0x9, b'p' * 126),
        frame(0x1, b'unmasked')[0:1] + bytes([5]) + b'hello',
        frame(0x0, b'continuation first'),
        frame(0x1, deflate(b'compressed ' * 20), rsv1=True) + close(1000),
        frame(0x1, deflate(text * 3)[:5], fin=False, rsv1=True)
        + frame(0x0, deflate(text * 3)[5:]),
        frame(0x9, b'') * 20 + close(1000),
        bytes([0x81, 0xff]) + b'\x80' + b'\x00' * 7 + b'mask',
    ]
    for i, s in enumerate(streams):
        flags = [0x00, 0x01, 0x05, 0x13, 0x24, 0x41, 0xc7][i % 7]
        settings = bytes([flags, 12, 10, 0]) + bytes([64, 3, 200, 1, 17, 64,
                                                       0, 255])
        write('ws_frames', settings + s)


# ------------------------------------------------------------ ws_inflate

def ws_inflate():
    for data, flags in [(b'hello hello hello hello', 0x01),
                        ('ünïcödé ✓'.encode() * 10, 0x05),
                        (bytes(range(256)) * 4, 0x0a),
                        (b'a' * 5000, 0x21), (b'\xff\xfe' * 40, 0x1d)]:
        write('ws_inflate', bytes([flags, 6]) + deflate(data))
    write('ws_inflate', bytes([0x01, 2]) + deflate(b'z' * 100000))
    write('ws_inflate', bytes([0x00, 6]) + b'\x00\x05\x00\xfa\xffhello')


# ------------------------------------------------------------ ws_utf8

def ws_utf8():
    cases = ['κόσμε'.encode(), b'\xf4\x8f\xbf\xbf', b'\xf4\x90\x80\x80',
             b'\xed\x9f\xbf', b'\xed\xa0\x80', b'\xc0\xaf', b'\xe0\x80\xaf',
             b'\xf0\x80\x80\xaf', b'\xf8\x88\x80\x80\x80', b'\xef\xbf\xbf',
             b'\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited',
             b'\x80', b'\xbf', b'\xc2', b'\xe1\x80', '😀 ok'.encode()]
    for i, c in enumerate(cases):
        write('ws_utf8', bytes([i]) + c)


# ------------------------------------------------------------ ws_handshake

def ws_handshake():
    for v in [b'dGhlIHNhbXBsZSBub25jZQ==', b'dGhlIHNhbXBsZSBub25jZQ=',
              b'keep-alive, Upgrade', b'websocket', b'WebSocket, foo',
              b'chat.v2, chat.v1', b'x,, chat.v1 ,',
              b'permessage-deflate; client_max_window_bits',
              b'permessage-deflate; server_max_window_bits=10; '
              b'client_no_context_takeover',
              b'permessage-deflate; client_max_window_bits="12", '
              b'permessage-deflate',
              b'permessage-deflate; server_max_window_bits=8, x-webkit',
              b'permessage-deflate; server_no_context_takeover; '
              b'server_no_context_takeover',
              b'permessage-deflate;client_max_window_bits=15;'
              b'server_max_window_bits=15']:
        write('ws_handshake', v)


# ------------------------------------------------------------ the actions

def action(op, data=b''):
    return bytes([op]) + struct.pack('>H', len(data)) + data


def pg_rows(rows, status=0):
    ncols = max((len(r) for r in rows), default=0)
    out = bytes([status, ncols])
    for r in rows:
        for v in r:
            if v is None:
                out += b'\xff'
            else:
                v = str(v).encode()
                out += bytes([len(v)]) + v
    return out


def resp(value):
    if value is None:
        return b'$-1\r\n'
    if isinstance(value, int):
        return b':%d\r\n' % value
    if isinstance(value, list):
        return b'*%d\r\n' % len(value) + b''.join(resp(v) for v in value)
    value = value.encode() if isinstance(value, str) else value
    return b'$%d\r\n%s\r\n' % (len(value), value)


CLIENT = [
    {'type': 'send', 'id': 'c1', 'chat_id': '5', 'text': 'hello'},
    {'type': 'send', 'id': 'c2', 'chat_id': '5', 'media': {
        'media_id': 'AAAAAAAAAAAAAAAAAAAAAA', 'kind': 'image'}},
    {'type': 'ack', 'chat_id': '5', 'seq': 3},
    {'type': 'read', 'chat_id': '5', 'seq': 3},
    {'type': 'presence', 'subscribe': ['18', '19']},
    {'type': 'presence', 'unsubscribe': ['18']},
    {'type': 'ping', 't': 12345},
    {'type': 'nope'},
]
TEXTS = [json.dumps(m, separators=(',', ':')).encode() for m in CLIENT] + [
    b'not json', b'[1,2]', b'{"type":1}', b'{"type":"send","type":"ack"}',
    b'{"type":"send","chat_id":"99999999999999999999","text":"x"}']


def token_row(token):
    """The token check's row for a token: user, device, the hash's hex
    (ngx_chat_auth.c compares it with the token's own)."""
    return ['17', '42', hashlib.sha256(token.encode()).hexdigest()]


def client_json():
    token = b'{"type":"auth","token":"' + b'A' * 43 + b'"}'
    # waiting for "auth": the token check answers user and device
    write('client_json', b'\x00' + action(0, token)
          + action(1, pg_rows([token_row('A' * 43)])) + action(0, TEXTS[0])
          + action(1, pg_rows([['5', '0', '0']])) + action(0, TEXTS[3]))
    write('client_json', b'\x00' + action(0, b'{"type":"ping"}'))
    for t in TEXTS:
        write('client_json', b'\x01' + action(0, t))
    # a sync that sends a message, then a send answered "sent"
    write('client_json', b'\x01'
          + action(1, pg_rows([['5', '0', '0']]))
          + action(1, pg_rows([['5', '1', 'f',
                                '{"type":"msg","chat_id":"5","seq":1}', '0']]))
          + action(0, TEXTS[0])
          + action(1, pg_rows([['0', '5', '2', '1765000000000']]))
          + action(4, b'\x05') + action(5) + action(5)
          + action(0, TEXTS[2]) + action(4, b'\x0b') + action(7))


NOTICES = [
    {'type': 'msg', 'chat_id': '5', 'seq': 2, 'from': '18',
     'from_device': '43', 'id': 'c9', 'ts': 1765000000000, 'kind': 'text',
     'text': 'hi'},
    {'type': 'receipt', 'chat_id': '5', 'user_id': '18', 'status': 'read',
     'seq': 2},
    {'type': 'presence', 'user_id': '18', 'online': True},
    {'type': 'presence', 'user_id': '18', 'online': False,
     'last_seen': 1765000000000},
    {'type': 'profile', 'user_id': '18', 'about': 'hey'},
    {'type': 'revoke', 'device_id': '42'},
    {'type': 'recheck'},
    {'type': 'ack', 'device_id': '44', 'chat_id': '5', 'seq': 2},
]


def redis_events():
    for n in NOTICES:
        write('redis_events', action(0, json.dumps(n).encode()))
    write('redis_events', action(3, b'\x00' + resp(['subscribe', 'c', 1]))
          + action(2, resp([b'w:1', 1])) + action(2, resp('OK'))
          + action(5) + action(5) + action(7)
          + action(0, json.dumps(NOTICES[0]).encode()))


REQUESTS = [
    'POST /v1/register\nContent-Type: application/json\n\n'
    '{"phone":"+15550100","device_name":"phone"}',
    'POST /v1/verify\n\n{"phone":"+15550100","code":"123456",'
    '"device_name":"x"}',
    'GET /v1/me\nAuthorization: Bearer ' + 'A' * 43 + '\n',
    'PATCH /v1/me\nAuthorization: Bearer ' + 'A' * 43
    + '\n\n{"about":"hi","avatar":null}',
    'GET /v1/chats\nAuthorization: Bearer ' + 'B' * 43 + '\n',
    'POST /v1/chats\nAuthorization: Bearer ' + 'B' * 43
    + '\n\n{"type":"group","title":"t","members":["18","19"]}',
    'GET /v1/chats/5/members/18\nAuthorization: Bearer x\n',
    'DELETE /v1/devices/43\nAuthorization: Bearer ' + 'C' * 43 + '\n',
    'GET /v1/users/lookup?phones=%2B15550100,%2B15550101\n'
    'Authorization: Bearer ' + 'C' * 43 + '\n',
    'GET /v1/events?token=' + 'D' * 43 + '&ack=5:3,6:1\n'
    'Last-Event-ID: 12\nAccept: text/event-stream\n',
    'POST /v1/events/send\nAuthorization: Bearer ' + 'D' * 43
    + '\n\n{"id":"c1","chat_id":"5","text":"x"}',
    'PUT /v1/me/privacy\nAuthorization: Basic abc\n\n{}',
    'OPTIONS /v1/chats/\n', 'GET /v2/x\n',
]


def api_request():
    for r in REQUESTS:
        m = re.search(r'(?:Bearer |token=)([A-Za-z0-9_-]{43})', r)
        auth = pg_rows([token_row(m.group(1))]) if m else pg_rows([])
        write('api_request', r.encode() + b'\x00'
              + action(1, auth) + action(1, pg_rows([['1', '5', 'x']]))
              + action(1, b'') + action(2, resp('OK')) + action(0))


def asset_url():
    for r in ['GET /media/AAAAAAAAAAAAAAAAAAAAAA?X-Expires=1765003600'
              '&X-Type=image%2Fpng&X-Signature=' + 'a' * 43 + '\n',
              'PUT /media/AAAAAAAAAAAAAAAAAAAAAA?X-Expires=1&X-Size=10'
              '&X-SHA256=' + 'f' * 64 + '&X-Type=x&X-Signature=b\n'
              'Content-Type: x\n\n0123456789']:
        write('asset_url', b'\x00' + r.encode())
    write('asset_url', b'\x01\x09image/png\x0210' + bytes([64]) + b'h' * 64
          + b'\x01')
    write('asset_url', b'\x01\x05a?b%c\x00\x00\x00')
    write('asset_url', b'\x02\x0d/bucket/k%20y\x0es3.example.com\x09image/png'
          b'\x09us-east-1\x14AKIAIOSFODNN7EXAMPLE\x08secret!!\x01')


for f in (ws_frames, ws_inflate, ws_utf8, ws_handshake, client_json,
          redis_events, api_request, asset_url):
    f()
