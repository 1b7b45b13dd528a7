# The opening handshake (RFC 6455 section 4): what upgrades, what is
# refused and with which status, and subprotocol selection.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use MIME::Base64 qw(encode_base64);

repeat_each(2);
run_tests();

__DATA__

=== TEST 1: a valid upgrade gets 101 with the right accept key and echoes
--- config
location /echo { chat_ws_echo; }
--- ws_path: /echo
--- ws_response_headers
Upgrade: websocket
!Sec-WebSocket-Extensions
!Sec-WebSocket-Protocol
--- response_headers_like
Connection: (?i)^upgrade$
--- ws_send
hello
--- ws_expect
hello
--- no_error_log
[error]



=== TEST 2: the accept key of RFC 6455's example
--- config
location /echo { chat_ws_echo; }
--- ws_key: dGhlIHNhbXBsZSBub25jZQ==
--- ws_response_headers
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
--- no_error_log
[error]



=== TEST 3: a POST upgrade is refused with 405
--- config
location /echo { chat_ws_echo; }
--- ws_method: POST
--- ws_headers
Content-Length: 0
--- ws_status: 405
--- no_error_log
[error]



=== TEST 4: HEAD is refused with 405
--- config
location /echo { chat_ws_echo; }
--- ws_method: HEAD
--- ws_status: 405
--- no_error_log
[error]



=== TEST 5: an HTTP/1.0 upgrade is refused with 400
--- config
location /echo { chat_ws_echo; }
--- ws_http_version: 1.0
--- ws_status: 400
--- no_error_log
[error]



=== TEST 6: a plain GET (no upgrade at all) gets 426 with the upgrade hints
--- config
location /echo { chat_ws_echo; }
--- request
GET /echo
--- error_code: 426
--- response_headers
Upgrade: websocket
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 7: no Upgrade header gets 426
--- config
location /echo { chat_ws_echo; }
--- ws_headers
!Upgrade
--- ws_status: 426
--- ws_response_headers
Upgrade: websocket
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 8: Upgrade to something else than websocket gets 426
--- config
location /echo { chat_ws_echo; }
--- ws_headers
Upgrade: h2c
--- ws_status: 426
--- ws_response_headers
Upgrade: websocket
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 9: no Connection: upgrade gets 426
--- config
location /echo { chat_ws_echo; }
--- ws_headers
Connection: keep-alive
--- ws_status: 426
--- ws_response_headers
Upgrade: websocket
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 10: no Connection header at all gets 426
--- config
location /echo { chat_ws_echo; }
--- ws_headers
!Connection
--- ws_status: 426
--- no_error_log
[error]



=== TEST 11: Connection is a token list, matched case-insensitively
--- config
location /echo { chat_ws_echo; }
--- ws_headers
Connection: keep-alive, UPGRADE
Upgrade: WebSocket
--- ws_status: 101
--- ws_send
still echoes
--- ws_expect
still echoes
--- no_error_log
[error]



=== TEST 12: a token that merely contains "upgrade" does not count
--- config
location /echo { chat_ws_echo; }
--- ws_headers
Connection: keep-alive, upgrade-insecure
--- ws_status: 426
--- no_error_log
[error]



=== TEST 13: Sec-WebSocket-Version 8 gets 426 naming version 13
--- config
location /echo { chat_ws_echo; }
--- ws_version: 8
--- ws_status: 426
--- ws_response_headers
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 14: a missing Sec-WebSocket-Version is "other than 13": 426
--- config
location /echo { chat_ws_echo; }
--- ws_headers
!Sec-WebSocket-Version
--- ws_status: 426
--- ws_response_headers
Sec-WebSocket-Version: 13
--- no_error_log
[error]



=== TEST 15: a missing Sec-WebSocket-Key gets 400
--- config
location /echo { chat_ws_echo; }
--- ws_headers
!Sec-WebSocket-Key
--- ws_status: 400
--- no_error_log
[error]



=== TEST 16: a key that is not base64 gets 400
--- config
location /echo { chat_ws_echo; }
--- ws_key: not-base64-at-all!!!!==
--- ws_status: 400
--- no_error_log
[error]



=== TEST 17: a key of 15 bytes gets 400
--- config
location /echo { chat_ws_echo; }
--- ws_key eval
encode_base64("x" x 15, '')
--- ws_status: 400
--- no_error_log
[error]



=== TEST 18: a key of 17 bytes gets 400
--- config
location /echo { chat_ws_echo; }
--- ws_key eval
encode_base64("x" x 17, '')
--- ws_status: 400
--- no_error_log
[error]



=== TEST 19: an empty key gets 400
--- config
location /echo { chat_ws_echo; }
--- ws_headers
Sec-WebSocket-Key:
--- ws_status: 400
--- no_error_log
[error]



=== TEST 20: the first offered subprotocol that is configured is chosen
--- config
location /echo {
    chat_ws_echo;
    chat_ws_protocols chat superchat;
}
--- ws_protocols: foo, superchat, chat
--- ws_response_headers
Sec-WebSocket-Protocol: superchat
--- ws_send
with a protocol
--- ws_expect
with a protocol
--- no_error_log
[error]



=== TEST 21: no offered subprotocol matches: 101 without the header
--- config
location /echo {
    chat_ws_echo;
    chat_ws_protocols chat;
}
--- ws_protocols: foo bar
--- ws_status: 101
--- ws_response_headers
!Sec-WebSocket-Protocol
--- no_error_log
[error]



=== TEST 22: no chat_ws_protocols: an offered subprotocol is not echoed
--- config
location /echo { chat_ws_echo; }
--- ws_protocols: chat
--- ws_status: 101
--- ws_response_headers
!Sec-WebSocket-Protocol
--- no_error_log
[error]



=== TEST 23: subprotocols offered in two header lines are both considered
--- config
location /echo {
    chat_ws_echo;
    chat_ws_protocols v2.chat;
}
--- raw_request eval
"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
. "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
. "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v1.chat\r\n"
. "Sec-WebSocket-Protocol: v2.chat\r\n\r\n"
--- timeout: 1
--- error_code: 101
--- response_headers
Sec-WebSocket-Protocol: v2.chat
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
--- no_error_log
[error]
