# Keepalive: chat_ws_ping_interval (server pings a quiet client) and
# chat_ws_idle_timeout (a client that sends nothing, pongs included, is
# closed with 1001). Every received frame counts as activity.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Time::HiRes qw(time sleep);

run_tests(done_testing => 0);

sub quiet_until_close {
    my ($ws, $bound) = @_;
    my $t0 = time;
    my $pings = 0;
    while (time - $t0 < $bound) {
        my $m = $ws->recv_message($bound - (time - $t0)) or last;
        if ($m->{type} eq 'ping') {
            $pings++;       # deliberately not answered
            next;
        }
        return ($m, time - $t0, $pings);
    }
    return (undef, time - $t0, $pings);
}

# Pings every second; a socket with nothing from the client for 2s goes.
my $PINGED = <<'END';
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval 1s;
    chat_ws_idle_timeout 2s;
}
END

nginx_subtest 'a client that answers nothing is closed with 1001',
              nginx => { config => $PINGED } => sub {
    my $ws = ws_connect(path => '/echo');
    is $ws->status, 101, 'handshake';
    my ($m, $elapsed, $pings) = quiet_until_close($ws, 6);
    is $m && $m->{type}, 'close', 'server sends a close frame';
    is $m && $m->{code}, 1001, 'with 1001 (going away)';
    cmp_ok $elapsed, '>=', 1.5, 'not before the idle timeout';
    cmp_ok $elapsed, '<=', 4.5, 'within ~4s';
    cmp_ok $pings, '>=', 1, "was pinged first ($pings)";
    $ws->close(1001);
    ok $ws->wait_eof(3), 'TCP closed';
    is_deeply [$ws->violations], [], 'frames well-formed';
};

nginx_subtest 'a client that answers pings stays connected',
              nginx => { config => $PINGED } => sub {
    my $ws = ws_connect(path => '/echo');
    is $ws->status, 101, 'handshake';
    my $t0 = time;
    my $pings = 0;
    my $closed;
    while (time - $t0 < 4.5) {
        my $m = $ws->recv_message(0.2) or next;
        if ($m->{type} eq 'ping') {
            $pings++;
            $ws->pong($m->{data});
        } elsif ($m->{type} eq 'close') {
            $closed = $m;
            last;
        }
    }
    ok !$closed, 'not closed after 4.5s of pongs only (idle timeout 2s)'
        or diag "closed with $closed->{code}";
    cmp_ok $pings, '>=', 3, "pinged about once a second ($pings)";
    $ws->send_text('still here');
    my $m = $ws->recv_message(2, auto_pong => 1);
    is $m && $m->{data}, 'still here', 'and still echoes';
    $ws->close(1000);
    my $c = $ws->recv_close(3, auto_pong => 1);
    is $c && $c->{code}, 1000, 'clean close';
    is_deeply [$ws->violations], [], 'frames well-formed';
};

nginx_subtest 'data keeps a connection alive without pings',
              nginx => { config => <<'END' } => sub {
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval 0;
    chat_ws_idle_timeout 2s;
}
END
    my $ws = ws_connect(path => '/echo');
    is $ws->status, 101, 'handshake';
    my $ok = 1;
    for my $i (1 .. 6) {
        sleep 0.6;      # paced on purpose: 3.6s in all, past the timeout
        $ws->send_text("tick $i");
        my $m = $ws->recv_message(2);
        $ok &&= $m && $m->{type} eq 'text' && $m->{data} eq "tick $i";
    }
    ok $ok, 'six messages 0.6s apart (3.6s > idle timeout) all echoed';
    my ($m, $elapsed, $pings) = quiet_until_close($ws, 5);
    is $m && $m->{code}, 1001, 'then quiet: closed with 1001';
    cmp_ok $elapsed, '>=', 1.5, 'not before the idle timeout';
    cmp_ok $elapsed, '<=', 3.5, 'about the idle timeout after the last frame';
    is $pings, 0, 'chat_ws_ping_interval 0: no pings';
    $ws->close(1001);
    ok $ws->wait_eof(3), 'TCP closed';
    is_deeply [$ws->violations], [], 'frames well-formed';
};

done_testing();

__DATA__

=== TEST 1: a quiet client is pinged within about the ping interval
--- config
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval 1s;
}
--- ws_expect eval
[[ping => undef, within => 2.5]]
--- no_error_log
[error]



=== TEST 2: chat_ws_ping_interval 0 turns pings off
--- config
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval 0;
    chat_ws_idle_timeout 10s;
}
--- ws_expect eval
[[nothing => 2]]
--- no_error_log
[error]



=== TEST 3: a ping from the client counts as activity
--- config
location /echo {
    chat_ws_echo;
    chat_ws_ping_interval 0;
    chat_ws_idle_timeout 2s;
}
--- ws_send eval
# paced on purpose: pings 0.6s apart, 3.6s in all, past the idle timeout
[(map { ([sleep => 0.6], [ping => "k$_"], [expect => pong => "k$_"]) } 1 .. 6),
 [text => "alive after 3.6s"]]
--- ws_expect eval
[[text => "alive after 3.6s"]]
--- no_error_log
[error]
