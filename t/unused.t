# Pay for what you use: with the modules loaded but no chat directive,
# nginx starts and serves as usual; locations without chat_ws_echo are left
# alone even when the request asks for a WebSocket.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

repeat_each(2);
run_tests();

__DATA__

=== TEST 1: no chat directives at all: nginx starts and serves
--- config
location / { return 200 "ok\n"; }
--- request
GET /
--- response_body
ok
--- no_error_log
[error]
[warn]



=== TEST 2: static files are served normally
--- config
location / { root html; }
--- user_files
>>> hello.txt
hello, file
--- request
GET /hello.txt
--- response_body
hello, file
--- no_error_log
[error]



=== TEST 3: an upgrade request to a plain location is not upgraded
--- config
location /echo { chat_ws_echo; }
location /plain { return 200 "plain\n"; }
--- ws_path: /plain
--- ws_status: 200
--- response_body
plain
--- ws_response_headers
!Sec-WebSocket-Accept
!Upgrade
--- no_error_log
[error]



=== TEST 4: an upgrade request to a location with no handler gets 404, not 101
--- config
location /echo { chat_ws_echo; }
location / { root html; log_not_found off; }
--- ws_path: /missing
--- ws_status: 404
--- ws_response_headers
!Sec-WebSocket-Accept
--- no_error_log
[error]



=== TEST 5: chat settings at server level do not touch other locations
--- config
chat_ws_max_message_size 1k;
chat_ws_ping_interval 1s;
chat_ws_idle_timeout 1s;
location / { return 200 "untouched\n"; }
--- request
POST /
--- more_headers
Content-Type: text/plain
--- error_code: 200
--- response_body
untouched
--- no_error_log
[error]



=== TEST 6: chat_ws_max_message_size does not limit plain request bodies
--- config
chat_ws_max_message_size 1k;
location / {
    client_max_body_size 1m;
    return 200 "body ok\n";
}
--- request eval
"POST /\n\n" . ("b" x 4096)
--- response_body
body ok
--- no_error_log
[error]



=== TEST 7: the module says nothing about WebSockets when no location uses it
--- config
location / { return 200 "quiet\n"; }
--- log_level: debug
--- request
GET /
--- response_body
quiet
--- no_error_log eval
[qr/websocket/i, '[error]']



=== TEST 8: a WebSocket location does not change plain requests next to it
--- config
location /echo { chat_ws_echo; }
location / { return 200 "neighbour\n"; }
--- request
GET /index
--- more_headers
Upgrade: websocket
Connection: Upgrade
--- response_body
neighbour
--- response_headers
!Sec-WebSocket-Accept
--- no_error_log
[error]



=== TEST 9: (the control for TEST 7) a WebSocket location does log at debug
--- config
location /echo { chat_ws_echo; }
--- log_level: debug
--- ws_send
hi
--- ws_expect
hi
--- error_log eval
qr/websocket/i
--- no_error_log
[error]
