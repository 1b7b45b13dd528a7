# The closing handshake (RFC 6455 sections 5.5.1, 7.4): every class of
# close code, empty and malformed close payloads, and what happens after.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

run_tests(done_testing => 0);

# Every code a client may send is echoed; every other one is 1002. One
# nginx, one connection per code.

my @valid = (1000 .. 1003, 1007 .. 1014, 3000, 3999, 4000, 4999);
my @invalid = (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
               5000, 65535);

nginx_start(config => 'location /echo { chat_ws_echo; }');
my $mark = error_log_mark();

for my $code (@valid, @invalid) {
    my $want = (grep { $_ == $code } @valid) ? $code : 1002;
    my $what = $want == $code ? 'echoed' : 'is a protocol error (1002)';
    my $ws = ws_connect(path => '/echo');
    is $ws->status, 101, "close $code: handshake";
    $ws->close($code, "code $code");
    my $c = $ws->recv_close(3);
    is $c && $c->{code}, $want, "close code $code $what";
    ok $ws->wait_eof(3), "close code $code: server closes TCP";
    is_deeply [$ws->violations], [], "close code $code: well-formed frames";
}

nginx_stop();
check_error_log(name => 'close codes', since => $mark,
                no_error_log => ['[error]']);

done_testing();

__DATA__

=== TEST 1: a normal close is echoed and the server closes TCP
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close => 1000, reason => "bye"]]
--- ws_expect eval
[[close => 1000]]
--- no_error_log
[error]



=== TEST 2: a close with an empty payload is answered with 1000
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close => undef]]
--- ws_expect eval
[[close => 1000]]
--- no_error_log
[error]



=== TEST 3: a 1-byte close payload is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close_raw => "\x03"]]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 4: a close reason that is not UTF-8 is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close_raw => pack('n', 1000) . "bad \xff reason"]]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 5: a close reason cut inside a code point is 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close_raw => pack('n', 1000) . "\xce"]]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 6: a 123-byte UTF-8 reason (the most that fits) is fine
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close => 1000, reason => "\xce\xba" x 61 . "!"]]
--- ws_expect eval
[[close => 1000]]
--- no_error_log
[error]



=== TEST 7: a close payload of 126 bytes is a control frame too big: 1002
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close_raw => pack('n', 1000) . "r" x 124]]
--- ws_expect eval
[[close => 1002]]
--- no_error_log
[error]



=== TEST 8: data after the client's close frame is not echoed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_close(1000) . ws_text("too late") . ws_ping("too late")]
--- ws_expect eval
[[close => 1000]]
--- no_error_log
[error]



=== TEST 9: data before the close frame is echoed first
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("last words") . ws_close(1001, "going away")]
--- ws_expect eval
[[text => "last words"], [close => 1001]]
--- no_error_log
[error]



=== TEST 10: a client that never answers the close is dropped after the timeout
--- config
location /echo {
    chat_ws_echo;
    chat_ws_close_timeout 1s;
}
--- ws_send eval
[ws_text("unmasked", mask => 0)]
--- ws_expect eval
[[close => 1002], [eof => within => 3]]
--- ws_no_close_reply: 1
--- no_error_log
[error]



=== TEST 11: a client that half-closes TCP after its close: the server closes
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[close => 1000], sub { $_[0]->shutdown_write }]
--- ws_expect eval
[['eof']]
--- no_error_log
[error]



=== TEST 12: a client that drops TCP without a close frame is cleaned up
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[text => "hello"], [expect => text => "hello"], sub { $_[0]->disconnect }]
--- no_error_log
[error]



=== TEST 13: a client that drops TCP mid-frame is cleaned up
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[substr(ws_text("x" x 1000), 0, 500), sub { $_[0]->disconnect }]
--- no_error_log
[error]
