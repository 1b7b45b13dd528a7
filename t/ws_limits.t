# Limits: chat_ws_max_message_size (1009, from the frame header or after
# reassembly) and chat_ws_send_queue (a client that does not read is cut).

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use IO::Select;
use Time::HiRes qw(time);

run_tests(done_testing => 0);

# A client that sends and never reads: its echoes pile up in the server's
# send queue until the server gives up on it. The worker survives.

nginx_subtest 'slow reader is disconnected',
              error_log => ['client too slow'],
              nginx => { config => <<'END', workers => 1 } => sub {
location /echo {
    chat_ws_echo;
    chat_ws_send_queue 64k;
}
END
    my $ws = ws_connect(path => '/echo', rcvbuf => 4096);
    is $ws->status, 101, 'handshake';

    # Bounded: at most 64 MB or 20 s, whichever comes first.
    my $frame = ws_binary('s' x 16384);
    my ($sent, $stuck_since, $pending) = (0, undef, '');
    my $deadline = time + 20;
    my $cut = 0;
    while ($sent < 64 * 1024 * 1024 && time < $deadline) {
        $pending = $frame unless length $pending;
        my $n = $ws->try_send_raw($pending);
        if (!defined $n) {
            $cut = 1;
            last;
        }
        if ($n == 0) {
            # The server stopped reading us: it must be about to give up.
            $stuck_since //= time;
            last if time - $stuck_since > 5;
            IO::Select->new($ws->socket)->can_write(0.1);
            next;
        }
        $stuck_since = undef;
        $sent += $n;
        substr($pending, 0, $n, '');
    }
    $cut ||= $ws->wait_eof(5);
    ok $cut, "the server cut the connection (after ${\ int($sent / 1024)} KB"
             . ", write error: " . ($ws->write_error // 'none') . ')';
    $ws->disconnect;

    my $again = ws_connect(path => '/echo');
    is $again->status, 101, 'a new connection is accepted afterwards';
    $again->send_text('still alive');
    my $m = $again->recv_message(3);
    is $m && $m->{data}, 'still alive', 'and echoes';
    $again->close(1000);
    $again->recv_close(3);
    $again->disconnect;
};

done_testing();

__DATA__

=== TEST 1: a message of exactly chat_ws_max_message_size is echoed
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[[binary => "m" x 1024]]
--- ws_expect eval
[[binary => "m" x 1024]]
--- no_error_log
[error]



=== TEST 2: one byte over chat_ws_max_message_size in one frame is 1009
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[[binary => "m" x 1025]]
--- ws_expect eval
[[close => 1009]]
--- no_error_log
[error]



=== TEST 3: an oversized length is refused from the header, before any payload
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
# declares 1 TB and sends none of it: waiting for the payload would hang
[ws_frame(opcode => 2, payload => "", len => 2 ** 40)]
--- ws_expect eval
[[close => 1009, within => 2]]
--- no_error_log
[error]



=== TEST 4: a 16-bit length just over the limit is refused from the header
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[ws_frame(opcode => 1, payload => "", len => 1025)]
--- ws_expect eval
[[close => 1009, within => 2]]
--- no_error_log
[error]



=== TEST 5: fragments that add up to more than the limit are 1009
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[ws_binary("a" x 400, fin => 0), ws_cont("b" x 400, fin => 0),
 ws_cont("c" x 400)]
--- ws_expect eval
[[close => 1009]]
--- no_error_log
[error]



=== TEST 6: fragments over the limit are refused before the final one
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[ws_text("a" x 600, fin => 0), ws_frame(opcode => 0, fin => 0,
                                       payload => "", len => 600)]
--- ws_expect eval
[[close => 1009, within => 2]]
--- no_error_log
[error]



=== TEST 7: fragments that add up to exactly the limit are echoed
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[ws_text("a" x 512, fin => 0), ws_cont("b" x 512)]
--- ws_expect eval
[[text => ("a" x 512) . ("b" x 512)]]
--- no_error_log
[error]



=== TEST 8: the limit is per message, not per connection
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[map { [binary => "$_" x 1000] } 1 .. 5]
--- ws_expect eval
[map { [binary => "$_" x 1000] } 1 .. 5]
--- no_error_log
[error]



=== TEST 9: the default limit is 128k: 131072 bytes are echoed
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[binary => "d" x 131072]]
--- ws_expect eval
[[binary => sub { $_[0] eq "d" x 131072 }]]
--- no_error_log
[error]



=== TEST 10: the default limit is 128k: 131073 bytes are 1009
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_frame(opcode => 2, payload => "", len => 131073)]
--- ws_expect eval
[[close => 1009, within => 2]]
--- no_error_log
[error]



=== TEST 11: control frames do not count towards a message's size
--- config
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
--- ws_send eval
[ws_text("a" x 1000, fin => 0), ws_ping("p" x 125), ws_ping("q" x 125),
 ws_cont("b" x 24)]
--- ws_expect eval
[[pong => "p" x 125], [pong => "q" x 125],
 [text => ("a" x 1000) . ("b" x 24)]]
--- no_error_log
[error]
