# Reload (HUP) and graceful shutdown (QUIT) with WebSockets open: the old
# worker says goodbye with 1001, closes TCP within about two seconds and
# exits; nothing is logged at alert level.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Time::HiRes qw(time);

my $ECHO = 'location /echo { chat_ws_echo; }';

# An echo that waits 1s for the answer to its close frame.
my $IMPATIENT = <<'END';
location /echo {
    chat_ws_echo;
    chat_ws_close_timeout 1s;
}
END

sub open_echo {
    my ($label) = @_;
    my $ws = ws_connect(path => '/echo');
    is $ws->status, 101, "$label: handshake";
    $ws->send_text("hello $label");
    my $m = $ws->recv_message(3);
    is $m && $m->{data}, "hello $label", "$label: echoes";
    return $ws;
}

# Waits for the server's close; answers it unless told not to; returns
# (code, seconds until TCP closed).
sub goodbye {
    my ($ws, $t0, %o) = @_;
    my $c = $ws->recv_close(3);
    $ws->close($c->{code}) if $c && !$o{silent};
    my $eof = $ws->wait_eof($o{eof_within} // 3);
    return ($c && $c->{code}, $eof ? time - $t0 : undef);
}

nginx_subtest 'HUP: open sockets get 1001 and the old workers exit',
              nginx => { config => $ECHO, workers => 2 } => sub {
    my @ws = map { open_echo("socket $_") } 1 .. 4;

    my $t0 = time;
    my @old = nginx_reload();
    for my $i (0 .. $#ws) {
        my ($code, $closed) = goodbye($ws[$i], $t0);
        is $code, 1001, "socket $i: close 1001 (going away)";
        ok defined $closed && $closed <= 2.5,
           "socket $i: TCP closed within ~2s of HUP ("
           . (defined $closed ? sprintf('%.2fs', $closed) : 'not closed')
           . ')';
        is_deeply [$ws[$i]->violations], [], "socket $i: frames well-formed";
    }
    ok nginx_wait_exit(5, @old), 'old workers exit';

    my $new = open_echo('after reload');
    $new->close(1000);
    my $c = $new->recv_close(3);
    is $c && $c->{code}, 1000, 'new socket closes normally';
};

nginx_subtest 'HUP: a client that ignores the close is dropped anyway',
              nginx => { config => $IMPATIENT, workers => 1 } => sub {
    my $ws = open_echo('silent');
    my $t0 = time;
    my @old = nginx_reload();
    my ($code, $closed) = goodbye($ws, $t0, silent => 1, eof_within => 5);
    is $code, 1001, 'close 1001';
    ok defined $closed && $closed <= 3,
       'TCP closed within the close timeout ('
       . (defined $closed ? sprintf('%.2fs', $closed) : 'not closed') . ')';
    ok nginx_wait_exit(5, @old), 'old worker exits';
};

nginx_subtest 'HUP: a message half received when the reload comes',
              nginx => { config => $ECHO, workers => 1 } => sub {
    my $ws = open_echo('fragmented');
    $ws->send_raw(ws_text('first half', fin => 0)
                  . substr(ws_cont('second half'), 0, 5));
    ok wait_until(10, sub { server_read_all($ws) }, interval => 0.02),
       'the worker has read the half message';
    my $t0 = time;
    my @old = nginx_reload();
    my ($code, $closed) = goodbye($ws, $t0);
    is $code, 1001, 'close 1001';
    ok defined $closed && $closed <= 2.5, 'TCP closed within ~2s';
    # its close frame went into the frame it had begun: an exiting worker
    # waits 1s for it, not chat_ws_close_timeout (5s)
    ok nginx_wait_exit(3, @old), 'old worker exits within 3s';
};

nginx_subtest 'HUP with a new config: new connections get the new settings',
              nginx => { config => $ECHO, workers => 1 } => sub {
    my $ws = open_echo('before');
    my $t0 = time;
    nginx_reload(config => <<'END');
location /echo {
    chat_ws_echo;
    chat_ws_max_message_size 1k;
}
END
    my ($code) = goodbye($ws, $t0);
    is $code, 1001, 'old socket: close 1001';

    my $new = ws_connect(path => '/echo');
    is $new->status, 101, 'new socket: handshake';
    $new->send_binary('x' x 2048);
    my $c = $new->recv_close(3);
    is $c && $c->{code}, 1009, 'new socket: the new 1k limit applies (1009)';
    # answered, as RFC 6455 asks, after the rest of the refused message:
    # the server reads past it and takes the answer (it used to discard
    # it and wait chat_ws_close_timeout, 5s)
    $new->close(1009);
    ok $new->wait_eof(3), 'new socket: TCP closed';
    my $t1 = time;
    ok nginx_stop(timeout => 3), 'nginx stops gracefully';
    ok time - $t1 < 2, 'nginx stops without waiting for a close timeout';
};

nginx_subtest 'QUIT: open sockets get 1001 and nginx exits',
              nginx => { config => $ECHO, workers => 2 } => sub {
    my @ws = map { open_echo("socket $_") } 1 .. 2;
    my $master = nginx_master_pid();
    my @workers = nginx_worker_pids();
    my $t0 = time;
    kill 'QUIT', $master;
    for my $i (0 .. $#ws) {
        my ($code, $closed) = goodbye($ws[$i], $t0);
        is $code, 1001, "socket $i: close 1001";
        ok defined $closed && $closed <= 2.5,
           "socket $i: TCP closed within ~2s of QUIT";
    }
    ok nginx_wait_exit(5, @workers, $master), 'workers and master exit';
};

nginx_subtest 'QUIT: a client that ignores the close does not hold nginx',
              nginx => { config => $IMPATIENT, workers => 1 } => sub {
    my $ws = open_echo('silent');
    my $master = nginx_master_pid();
    my $t0 = time;
    kill 'QUIT', $master;
    my ($code, $closed) = goodbye($ws, $t0, silent => 1, eof_within => 5);
    is $code, 1001, 'close 1001';
    ok nginx_wait_exit(5, $master), 'nginx exits within 5s';
};

done_testing();
