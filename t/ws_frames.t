# Framing (RFC 6455 section 5): payload length encodings, masking, reserved
# bits and opcodes, control frames, frames split across reads and bytes
# sent with the handshake.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

our $ALL_BYTES = join '', map { chr } 0 .. 255;

run_tests();

__DATA__

=== TEST 1: an empty text message round-trips
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[text => '']]
--- ws_expect eval
[[text => '']]
--- no_error_log
[error]



=== TEST 2: 125 bytes, the largest 7-bit length, round-trip
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[text => 'a' x 125]]
--- ws_expect eval
[[text => 'a' x 125]]
--- no_error_log
[error]



=== TEST 3: 126 bytes, the smallest 16-bit length, round-trip
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[text => 'b' x 126]]
--- ws_expect eval
[[text => 'b' x 126]]
--- no_error_log
[error]



=== TEST 4: 127 bytes round-trip
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => 'c' x 127]]
--- ws_expect eval
[[binary => 'c' x 127]]
--- no_error_log
[error]



=== TEST 5: 65535 bytes, the largest 16-bit length, round-trip
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => ws_random_bytes(65535)]]
--- ws_expect eval
[[binary => sub { length $_[0] == 65535 }]]
--- no_error_log
[error]



=== TEST 6: 65536 bytes, the smallest 64-bit length, round-trip intact
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => $main::BIG = ws_random_bytes(65536)]]
--- ws_expect eval
[[binary => sub { $_[0] eq $main::BIG }]]
--- no_error_log
[error]



=== TEST 7: binary messages carry every byte value unchanged
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => $main::ALL_BYTES]]
--- ws_expect eval
[[binary => $main::ALL_BYTES]]
--- no_error_log
[error]



=== TEST 8: two frames in one write are both echoed, in order
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("one") . ws_binary("two")]
--- ws_expect eval
[[text => 'one'], [binary => 'two']]
--- no_error_log
[error]



=== TEST 9: a mask key of zeros is still a masked frame
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("zero key", mask => "\0\0\0\0")]
--- ws_expect
zero key
--- no_error_log
[error]



=== TEST 10: an unmasked client frame is a protocol error (1002), not echoed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("naked", mask => 0), ws_text("after")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 11: RSV1 without a negotiated extension is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("rsv1", rsv1 => 1), ws_text("after")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 12: RSV2 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("rsv2", rsv2 => 1)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 13: RSV3 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_binary("rsv3", rsv3 => 1)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 14: reserved data opcode 3 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 3, payload => "x"), ws_text("after")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 15: reserved data opcode 4 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 4, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 16: reserved data opcode 5 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 5, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 17: reserved data opcode 6 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 6, payload => "")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 18: reserved data opcode 7 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 7, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 19: reserved control opcode 0xB is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 0xB, payload => "x"), ws_text("after")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 20: reserved control opcode 0xC is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 0xC, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 21: reserved control opcode 0xD is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 0xD, payload => "")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 22: reserved control opcode 0xE is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 0xE, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 23: reserved control opcode 0xF is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 0xF, payload => "x")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 24: a ping with a 126-byte payload is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_ping("p" x 126)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 25: a fragmented ping (FIN=0) is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_ping("p", fin => 0), ws_cont("q")]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 26: a fragmented pong (FIN=0) is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_pong("p", fin => 0)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 27: a fragmented close (FIN=0) is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_close(1000, "bye", fin => 0)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 28: a 64-bit length with the most significant bit set is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 2, payload => "", len_bits => 64,
          len => 2 ** 63)]
--- ws_expect eval
[[close => 1002, within => 2]]
--- no_error_log
[error]



=== TEST 29: a ping is answered with a pong carrying the same payload
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[ping => "are you there?"]]
--- ws_expect eval
[[pong => "are you there?"]]
--- no_error_log
[error]



=== TEST 30: an empty ping gets an empty pong
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[ping => ""]]
--- ws_expect eval
[[pong => ""]]
--- no_error_log
[error]



=== TEST 31: a 125-byte binary ping gets the same 125 bytes back
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[ping => $main::P125 = ws_random_bytes(125)]]
--- ws_expect eval
[[pong => sub { $_[0] eq $main::P125 }]]
--- no_error_log
[error]



=== TEST 32: an unsolicited pong is ignored
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[pong => "nobody asked"], [text => "after the pong"]]
--- ws_expect eval
[[text => "after the pong"], [nothing => 0.3]]
--- no_error_log
[error]



=== TEST 33: a frame sent one byte per write (16-bit length) is echoed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[raw => ws_text("x" x 130), split => 1]]
--- ws_expect eval
[[text => "x" x 130]]
--- no_error_log
[error]



=== TEST 34: a frame with a 64-bit length, its header split at every byte
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[raw => ws_binary($main::B = ws_random_bytes(70000)),
  chunks => [(1) x 14, 7, 13, 1000, 4096, 1]]]
--- ws_expect eval
[[binary => sub { $_[0] eq $main::B }]]
--- no_error_log
[error]



=== TEST 35: pieces that straddle frame boundaries reassemble
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[raw => ws_text("first") . ws_ping("p") . ws_text("second"),
  chunks => [3, 5, 4, 2, 9]]]
--- ws_expect eval
[[text => "first"], [pong => "p"], [text => "second"]]
--- no_error_log
[error]



=== TEST 36: a text frame sent in the same packet as the handshake is echoed
--- config
location /echo { chat_ws_echo; }
--- ws_pipeline eval
ws_text("right behind the handshake")
--- ws_expect eval
[[text => "right behind the handshake"]]
--- no_error_log
[error]



=== TEST 37: a ping and two frames with the handshake are all answered
--- config
location /echo { chat_ws_echo; }
--- ws_pipeline eval
[ws_ping("early"), ws_text("a"), ws_binary("b" x 300)]
--- ws_expect eval
[[pong => "early"], [text => "a"], [binary => "b" x 300]]
--- no_error_log
[error]



=== TEST 38: after a protocol error nothing more is echoed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("ok before"), ws_frame(opcode => 3, payload => ""),
 ws_text("never echoed")]
--- ws_expect eval
[[text => "ok before"], [close => 1002]]
--- no_error_log
[error]
