# permessage-deflate (RFC 7692): negotiation, compressed echo in both
# directions, context takeover, window sizes, and inflate limits.
#
# The client inflates every server message with a fresh context (the server
# always answers server_no_context_takeover) and within the negotiated
# server_max_window_bits, so a server that breaks either promise fails the
# "frames are well-formed" assertion of the block.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

our $LOREM = join ' ', ('Lorem ipsum dolor sit amet, consectetur adipiscing'
                        . ' elit, sed do eiusmod tempor incididunt') x 20;
# 2000 random letters from a 16-letter alphabet, twice: worth compressing
# even with a small window (4 bits a letter), and a compressor whose window
# is larger than 1024 bytes will refer back 2000 bytes, which a client
# inflating within server_max_window_bits=10 refuses.
our $FAR = do {
    my $r = join '', map { chr(97 + int rand 16) } 1 .. 2000;
    $r . $r;
};

run_tests();

__DATA__

=== TEST 1: a plain offer is accepted with both no_context_takeover params
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover
--- ws_send eval
[[text => $main::LOREM]]
--- ws_expect eval
[[text => $main::LOREM]]
--- no_error_log
[error]



=== TEST 2: chat_ws_deflate_client_takeover on lets the client keep its context
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate_client_takeover on;
}
--- ws_deflate: on
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover
--- no_error_log
[error]



=== TEST 3: chat_ws_deflate off: no extension, and messages still echo
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate off;
}
--- ws_deflate: on
--- ws_deflate_accepted: none
--- ws_send
uncompressed
--- ws_expect eval
[[text => "uncompressed", compressed => 0]]
--- no_error_log
[error]



=== TEST 4: chat_ws_deflate off: RSV1 is a protocol error
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate off;
}
--- ws_deflate: on
--- ws_send eval
[ws_text(ws_deflate_raw("compressed"), rsv1 => 1)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 5: no offer, no extension header
--- config
location /echo { chat_ws_echo; }
--- ws_send
plain
--- ws_deflate_accepted: none
--- ws_expect
plain
--- no_error_log
[error]



=== TEST 6: a compressed binary message is echoed intact
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[[binary => ("\x00\x01\x02\x03" x 5000) . "\xff"]]
--- ws_expect eval
[[binary => ("\x00\x01\x02\x03" x 5000) . "\xff"]]
--- no_error_log
[error]



=== TEST 7: an uncompressed message on a deflate connection is echoed
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[[text => "sent as is", compress => 0]]
--- ws_expect eval
[[text => "sent as is"]]
--- no_error_log
[error]



=== TEST 8: compressed and uncompressed messages mixed
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[[text => "one"], [text => "two", compress => 0], [text => "three"],
 [binary => $main::LOREM]]
--- ws_expect eval
[[text => "one"], [text => "two"], [text => "three"],
 [binary => $main::LOREM]]
--- no_error_log
[error]



=== TEST 9: a compressed message split into fragments (RSV1 on the first only)
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[[text => $main::LOREM, fragments => 3], [expect => text => $main::LOREM],
 [binary => "tiny", fragments => 2]]
--- ws_expect eval
[[binary => "tiny"]]
--- no_error_log
[error]



=== TEST 10: a compressed message with a ping between its fragments
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
my $p = ws_deflate_raw("hello " x 50);
[ws_text(substr($p, 0, 4), rsv1 => 1, fin => 0), ws_ping("mid"),
 ws_cont(substr($p, 4))]
--- ws_expect eval
[[pong => "mid"], [text => "hello " x 50]]
--- no_error_log
[error]



=== TEST 11: the same text twice: each server message inflates on its own
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[[text => $main::LOREM], [text => $main::LOREM], [text => $main::LOREM]]
--- ws_expect eval
[[text => $main::LOREM], [text => $main::LOREM], [text => $main::LOREM]]
--- no_error_log
[error]



=== TEST 12: client_no_context_takeover: the client resets, messages echo
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[sub {
    my $ws = shift;
    ok $ws->deflate->{client_no_context_takeover},
       'server asked the client not to take over its context';
    my $p1 = $ws->deflate_message($main::LOREM);
    my $p2 = $ws->deflate_message($main::LOREM);
    is length $p2, length $p1, 'each message compressed on its own';
    $ws->send_frame(opcode => 1, rsv1 => 1, payload => $p1);
    $ws->send_frame(opcode => 1, rsv1 => 1, payload => $p2);
 }]
--- ws_expect eval
[[text => $main::LOREM], [text => $main::LOREM]]
--- no_error_log
[error]



=== TEST 13: client context takeover on: a message may refer to the previous one
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate_client_takeover on;
}
--- ws_deflate: on
--- ws_send eval
[sub {
    my $ws = shift;
    ok !$ws->deflate->{client_no_context_takeover},
       'client may keep its context';
    my $p1 = $ws->deflate_message($main::LOREM);
    my $p2 = $ws->deflate_message($main::LOREM);
    my $p3 = $ws->deflate_message($main::LOREM . " and more");
    ok length $p2 < length($p1) / 4,
       'second message refers to the first (' . length($p2) . ' < '
       . length($p1) . ' bytes)';
    $ws->send_frame(opcode => 1, rsv1 => 1, payload => $_) for $p1, $p2, $p3;
 }]
--- ws_expect eval
[[text => $main::LOREM], [text => $main::LOREM],
 [text => $main::LOREM . " and more"]]
--- no_error_log
[error]



=== TEST 14: client context takeover on, with an uncompressed message between
--- config
location /echo {
    chat_ws_echo;
    chat_ws_deflate_client_takeover on;
}
--- ws_deflate: on
--- ws_send eval
[[text => "abcabcabc abcabcabc"], [binary => "raw", compress => 0],
 [text => "abcabcabc abcabcabc"]]
--- ws_expect eval
[[text => "abcabcabc abcabcabc"], [binary => "raw"],
 [text => "abcabcabc abcabcabc"]]
--- no_error_log
[error]



=== TEST 15: server_max_window_bits=10 is honoured and echoed
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=10
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10
--- ws_send eval
[[binary => $main::FAR]]
--- ws_expect eval
[[binary => $main::FAR, compressed => 1]]
--- no_error_log
[error]



=== TEST 16: server_max_window_bits=15 is accepted
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=15
--- ws_response_headers_like
Sec-WebSocket-Extensions: ^permessage-deflate\b.*server_max_window_bits=15
--- ws_send eval
[[binary => $main::FAR]]
--- ws_expect eval
[[binary => $main::FAR]]
--- no_error_log
[error]



=== TEST 17: client_max_window_bits=12 offered with a value is echoed
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; client_max_window_bits=12
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12
--- ws_send eval
[[binary => $main::FAR]]
--- ws_expect eval
[[binary => $main::FAR]]
--- no_error_log
[error]



=== TEST 18: client_max_window_bits without a value (what browsers send)
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; client_max_window_bits
--- ws_response_headers_like
Sec-WebSocket-Extensions: ^permessage-deflate\b
--- ws_send eval
[[text => $main::LOREM]]
--- ws_expect eval
[[text => $main::LOREM]]
--- no_error_log
[error]



=== TEST 19: a quoted parameter value is understood
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits="11"
--- ws_response_headers_like
Sec-WebSocket-Extensions: server_max_window_bits="?11
--- ws_send eval
[[binary => $main::FAR]]
--- ws_expect eval
[[binary => $main::FAR]]
--- no_error_log
[error]



=== TEST 20: client offers server_no_context_takeover itself: accepted
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_no_context_takeover
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover
--- no_error_log
[error]



=== TEST 21: an offer with an unknown parameter is declined, still 101
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; foo=1
--- ws_status: 101
--- ws_deflate_accepted: none
--- ws_send
not compressed
--- ws_expect
not compressed
--- no_error_log
[error]



=== TEST 22: an offer with a duplicate parameter is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_no_context_takeover; server_no_context_takeover
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 23: server_max_window_bits=7 is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=7
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 24: server_max_window_bits=16 is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=16
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 25: server_max_window_bits without a value is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 26: a non-numeric window size is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=abc
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 27: client_max_window_bits=7 is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; client_max_window_bits=7
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 28: a value on server_no_context_takeover is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_no_context_takeover=1
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 29: a value on client_no_context_takeover is declined
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; client_no_context_takeover=yes
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 30: an invalid first offer is skipped for a valid second one
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; foo, permessage-deflate; client_max_window_bits=10
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10
--- ws_send eval
[[text => $main::LOREM]]
--- ws_expect eval
[[text => $main::LOREM]]
--- no_error_log
[error]



=== TEST 31: offers in two header lines are considered in order
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; server_max_window_bits=99
--- ws_headers
X-Between: 1
+Sec-WebSocket-Extensions: permessage-deflate
--- ws_status: 101
--- ws_response_headers_like
Sec-WebSocket-Extensions: ^permessage-deflate\b
--- no_error_log
[error]



=== TEST 32: an unknown extension alone is not accepted
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: x-webkit-deflate-frame
--- ws_status: 101
--- ws_deflate_accepted: none
--- no_error_log
[error]



=== TEST 33: an unknown extension before permessage-deflate is skipped
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: x-webkit-deflate-frame, permessage-deflate
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover
--- no_error_log
[error]



=== TEST 34: RSV1 on a continuation frame is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
my $p = ws_deflate_raw("hello " x 50);
[ws_text(substr($p, 0, 4), rsv1 => 1, fin => 0),
 ws_cont(substr($p, 4), rsv1 => 1)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 35: RSV1 on a control frame is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[ws_ping("compressed?", rsv1 => 1)]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 36: a decompression bomb (1 MB of zeros in ~1 KB) is 1009
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 64k;
}
--- ws_deflate: on
--- ws_send eval
[ws_binary(ws_deflate_raw("\0" x 1_000_000), rsv1 => 1)]
--- ws_expect eval
[[close => 1009]]
--- no_error_log
[error]



=== TEST 37: a bomb split into fragments is 1009 too
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 64k;
}
--- ws_deflate: on
--- ws_send eval
my $p = ws_deflate_raw("\0" x 1_000_000);
my $h = int(length($p) / 2);
[ws_binary(substr($p, 0, $h), rsv1 => 1, fin => 0), ws_cont(substr($p, $h))]
--- ws_expect eval
[[close => 1009]]
--- no_error_log
[error]



=== TEST 38: a message that inflates to exactly the limit is echoed
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 64k;
}
--- ws_deflate: on
--- ws_send eval
[[binary => "\0" x 65536]]
--- ws_expect eval
[[binary => "\0" x 65536]]
--- no_error_log
[error]



=== TEST 39: compressed text that inflates to invalid UTF-8 is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[ws_text(ws_deflate_raw("bad \xff byte"), rsv1 => 1)]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 40: an empty compressed message is echoed empty
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
[ws_text("\x00", rsv1 => 1), ws_text(ws_deflate_raw(""), rsv1 => 1)]
--- ws_expect eval
[[text => ""], [text => ""]]
--- no_error_log
[error]



=== TEST 41: data that does not inflate fails the connection
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: on
--- ws_send eval
# block type 3 is reserved: no inflater accepts it
[ws_binary("\xff\xff\xff\xff\xff\xff", rsv1 => 1)]
--- ws_close_code eval
qr/^100[27]$/
--- no_error_log
[error]



=== TEST 42: client_max_window_bits=9: the client compresses within 512 bytes
--- config
location /echo { chat_ws_echo; }
--- ws_deflate: permessage-deflate; client_max_window_bits=9
--- ws_deflate_accepted
permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9
--- ws_send eval
[[binary => $main::FAR]]
--- ws_expect eval
[[binary => $main::FAR]]
--- no_error_log
[error]
