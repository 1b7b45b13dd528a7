# Configuration: invalid uses of the chat_ws_* directives stop nginx -t
# with a message naming the directive; valid ones load and are inherited.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

run_tests();

__DATA__

=== TEST 1: chat_ws_echo in the http block is refused
--- http_config
chat_ws_echo;
--- must_die
--- error_log
"chat_ws_echo" directive is not allowed here



=== TEST 2: chat_ws_echo in a server block is refused
--- config
chat_ws_echo;
--- must_die
--- error_log
"chat_ws_echo" directive is not allowed here



=== TEST 3: chat_ws_echo takes no arguments
--- config
location /echo { chat_ws_echo on; }
--- must_die
--- error_log
invalid number of arguments in "chat_ws_echo" directive



=== TEST 4: chat_ws_max_message_size needs a size
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size abc;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_max_message_size/



=== TEST 5: chat_ws_send_queue needs a size
--- config
location /echo {
    chat_ws_echo;
    chat_ws_send_queue lots;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_send_queue/



=== TEST 6: chat_ws_ping_interval needs a time
--- config
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval often;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_ping_interval/



=== TEST 7: chat_ws_idle_timeout needs a time
--- config
location /echo {
    chat_ws_echo;
    chat_ws_idle_timeout 5parsecs;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_idle_timeout/



=== TEST 8: chat_ws_close_timeout needs a time
--- config
location /echo {
    chat_ws_echo;
    chat_ws_close_timeout soon;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_close_timeout/



=== TEST 9: chat_ws_deflate is on or off
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate maybe;
}
--- must_die
--- error_log eval
qr/\[emerg\].*"maybe".*chat_ws_deflate|\[emerg\].*chat_ws_deflate.*maybe/



=== TEST 10: chat_ws_deflate_client_takeover is on or off
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate_client_takeover sometimes;
}
--- must_die
--- error_log eval
qr/\[emerg\].*chat_ws_deflate_client_takeover/



=== TEST 11: chat_ws_protocols needs at least one name
--- config
location /echo {
    chat_ws_echo;
    chat_ws_protocols;
}
--- must_die
--- error_log
invalid number of arguments in "chat_ws_protocols" directive



=== TEST 12: a duplicate chat_ws_max_message_size is refused
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
    chat_ws_max_message_size 2k;
}
--- must_die
--- error_log
"chat_ws_max_message_size" directive is duplicate



=== TEST 13: a duplicate chat_ws_echo is refused
--- config
location /echo {
    chat_ws_echo;
    chat_ws_echo;
}
--- must_die
--- error_log
"chat_ws_echo" directive is duplicate



=== TEST 14: a duplicate chat_ws_deflate is refused
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate on;
    chat_ws_deflate off;
}
--- must_die
--- error_log
"chat_ws_deflate" directive is duplicate



=== TEST 15: a duplicate chat_ws_protocols is refused
--- config
location /echo {
    chat_ws_echo;
    chat_ws_protocols a;
    chat_ws_protocols b;
}
--- must_die
--- error_log
"chat_ws_protocols" directive is duplicate



=== TEST 16: a duplicate chat_ws_idle_timeout is refused
--- config
location /echo {
    chat_ws_echo;
    chat_ws_idle_timeout 10s;
    chat_ws_idle_timeout 20s;
}
--- must_die
--- error_log
"chat_ws_idle_timeout" directive is duplicate



=== TEST 17: every directive with a valid value loads, at every level
--- http_config
chat_ws_max_message_size 64k;
chat_ws_send_queue 128k;
chat_ws_ping_interval 10s;
chat_ws_idle_timeout 30s;
chat_ws_close_timeout 2s;
chat_ws_deflate on;
chat_ws_deflate_client_takeover off;
chat_ws_protocols chat;
--- config
chat_ws_max_message_size 32k;
chat_ws_ping_interval 0;
location /echo {
    chat_ws_echo;
    chat_ws_deflate_client_takeover on;
    chat_ws_protocols chat v2;
}
--- ws_protocols: v2
--- ws_deflate: on
--- ws_response_headers
Sec-WebSocket-Protocol: v2
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover
--- ws_send
configured
--- ws_expect
configured
--- no_error_log
[error]



=== TEST 18: a limit set at http level is inherited by the location
--- http_config
chat_ws_max_message_size 1k;
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => "x" x 1024], [binary => "y" x 1025]]
--- ws_expect eval
[[binary => "x" x 1024], [close => 1009]]
--- no_error_log
[error]



=== TEST 19: a location overrides the server's setting
--- config
chat_ws_deflate off;
location /echo { chat_ws_echo; }
location /echo2 {
    chat_ws_echo;
    chat_ws_deflate on;
}
--- ws_path: /echo2
--- ws_deflate: on
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover
--- no_error_log
[error]



=== TEST 20: the server's setting reaches a location that does not set it
--- config
chat_ws_deflate off;
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 21: the directives are accepted in a nested location
--- config
location /chat {
    chat_ws_max_message_size 1k;
    location /chat/echo { chat_ws_echo; }
}
--- ws_path: /chat/echo
--- ws_send eval
[[binary => "z" x 1025]]
--- ws_expect eval
[[close => 1009]]
--- no_error_log
[error]
