# Fragmentation (RFC 6455 section 5.4): reassembly, control frames between
# fragments, and continuation errors.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

run_tests();

__DATA__

=== TEST 1: a text message in three fragments comes back as one message
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("Hel", fin => 0), ws_cont("lo, ", fin => 0), ws_cont("world")]
--- ws_expect eval
[[text => "Hello, world"]]
--- no_error_log
[error]



=== TEST 2: a binary message in two fragments comes back whole
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_binary("\x00\x01\x02", fin => 0), ws_cont("\xfd\xfe\xff")]
--- ws_expect eval
[[binary => "\x00\x01\x02\xfd\xfe\xff"]]
--- no_error_log
[error]



=== TEST 3: empty fragments, first, middle and last, are allowed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("", fin => 0), ws_cont("middle", fin => 0), ws_cont("", fin => 0),
 ws_cont("")]
--- ws_expect eval
[[text => "middle"]]
--- no_error_log
[error]



=== TEST 4: a message of one hundred 1-byte fragments
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("a", fin => 0), (map { ws_cont(chr(97 + $_ % 26), fin => 0) } 1 .. 98),
 ws_cont("!")]
--- ws_expect eval
[[text => join('', map { chr(97 + $_ % 26) } 0 .. 98) . "!"]]
--- no_error_log
[error]



=== TEST 5: fragments written in one packet reassemble
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("one ", fin => 0) . ws_cont("packet", fin => 0) . ws_cont("")]
--- ws_expect
one packet
--- no_error_log
[error]



=== TEST 6: fragments with 16- and 64-bit lengths reassemble
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_binary("a" x 200, fin => 0), ws_cont("b" x 70000, fin => 0),
 ws_cont("c" x 3)]
--- ws_expect eval
[[binary => ("a" x 200) . ("b" x 70000) . ("c" x 3)]]
--- no_error_log
[error]



=== TEST 7: a ping between fragments is answered before the message
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("frag", fin => 0), ws_ping("in the middle"),
 [expect => pong => "in the middle"],
 ws_cont("mented")]
--- ws_expect eval
[[text => "fragmented"]]
--- no_error_log
[error]



=== TEST 8: several pings and a pong between fragments
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_binary("1", fin => 0), ws_ping("a"), ws_cont("2", fin => 0),
 ws_pong("ignored"), ws_ping("b"), ws_cont("3")]
--- ws_expect eval
[[pong => "a"], [pong => "b"], [binary => "123"]]
--- no_error_log
[error]



=== TEST 9: a close between fragments ends the connection, message unsent
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("never ", fin => 0), ws_close(1000, "done"), ws_cont("finished")]
--- ws_expect eval
[[close => 1000]]
--- no_error_log
[error]



=== TEST 10: a continuation frame with no message started is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_cont("orphan")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 11: a non-final continuation with no message started is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_cont("orphan", fin => 0), ws_cont("end")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 12: a continuation after a complete message is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("complete"), ws_cont("late")]
--- ws_expect eval
[[text => "complete"], [close => 1002]]
--- no_error_log
[error]



=== TEST 13: a new text frame inside a fragmented message is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("start", fin => 0), ws_text("intruder")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 14: a new binary frame inside a fragmented text message is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("start", fin => 0), ws_binary("intruder", fin => 0),
 ws_cont("end")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 15: fragmented messages back to back do not leak into each other
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("ab", fin => 0), ws_cont("c"), ws_binary("de", fin => 0),
 ws_cont("f"), ws_text("g")]
--- ws_expect eval
[[text => "abc"], [binary => "def"], [text => "g"]]
--- no_error_log
[error]



=== TEST 16: fragments split across writes at every byte reassemble
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[raw => ws_text("split ", fin => 0) . ws_ping("!") . ws_cont("bytes"),
  split => 1]]
--- ws_expect eval
[[pong => "!"], [text => "split bytes"]]
--- no_error_log
[error]
