# WebSocket authentication on the chat endpoint (PROTOCOL.md section 4):
# the auth message or an Authorization header gives "ready"; bad tokens
# close with 4001, silence with 4002; once ready, ping/pong and bad JSON
# answered without closing; unlinking a device closes its sockets on every
# worker with 4001 while the user's other devices stay connected.
#
#   scripts/test.sh t/ws_auth.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve);
use Test::Chat::JSON qw(is_json_int is_json_string now_ms);
use Time::HiRes qw(time sleep);

needs_stack();

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; chat_ws_auth_timeout 1s; }
END

# A second server on port2 with reuseport: each worker has its own listening
# socket there and the kernel spreads connections over them by address, so
# a handful of sockets lands on both workers.
serve(defaults => 1, config => $LOCATIONS,
      http_config => chat_http_config(port2 => 1, locations => $LOCATIONS));

sub show {
    my ($what, @v) = @_;
    return "close $v[0]" . (length($v[1] // '') ? " '$v[1]'" : '')
        if $what eq 'close';
    return 'message ' . JSON::PP->new->canonical->encode($v[0])
        if $what eq 'json';
    return "$what '$v[0]'" if @v;
    return $what;
}

# The server closes with $code (skipping anything sent before), then closes
# TCP once we answer; returns the seconds it took, or undef.
sub closes_with {
    my ($ws, $code, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $t0 = $o{since} // time;
    my $within = $o{within} // 3;
    my @seen;
    my ($what, @v);
    while (1) {
        ($what, @v) = ws_next($ws, $within - (time - $t0));
        last unless $what eq 'json' || $what eq 'text';
        push @seen, show($what, @v);
    }
    my $took = time - $t0;
    my $ok = ok($what eq 'close' && ($v[0] // 0) == $code,
                "$name: close $code");
    diag("got " . show($what, @v) . sprintf(' after %.2fs', $took)
         . (@seen ? '; before it: ' . join(', ', @seen) : ''))
        unless $ok;
    return undef unless $what eq 'close';
    $ws->close($v[0]) unless $ws->eof;
    ok $ws->wait_eof(3), "$name: the server closes TCP";
    is_deeply [$ws->violations], [], "$name: frames well-formed";
    return $ok ? $took : undef;
}

sub ready_ok {
    my ($ready, $acct, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is $ready->{user_id}, $acct->{user_id}, "$name: ready.user_id";
    is $ready->{device_id}, $acct->{device_id}, "$name: ready.device_id";
    ok is_json_string($ready->{user_id}) && is_json_string($ready->{device_id}),
       "$name: the ids are strings";
    my $st = $ready->{server_time};
    ok is_json_int($st) && abs($st - now_ms()) < 60_000,
       "$name: server_time is now, as integer epoch milliseconds"
        or diag('server_time: ' . ($st // 'absent'));
}

# The pong to a ping; "synced" (after "ready") may come first.
sub ping_pong {
    my ($ws, $t, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $ws->send_json({ type => 'ping', t => $t });
    my ($what, @v) = ws_next($ws, 3);
    ($what, @v) = ws_next($ws, 3)
        if $what eq 'json' && ref $v[0] eq 'HASH'
           && ($v[0]{type} // '') eq 'synced';
    my $ok = ok($what eq 'json' && ref $v[0] eq 'HASH'
                && ($v[0]{type} // '') eq 'pong'
                && exists $v[0]{t}, "$name: pong");
    diag('got ' . show($what, @v)) unless $ok;
    return $ok unless $ok;
    is_deeply $v[0]{t}, $t, "$name: pong echoes t";
    return $ok;
}

sub open_socket {
    my ($acct, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token}, %o);
    ok $ready, "$name: ready" or diag("got $err");
    return undef unless $ready;

    # "synced" follows "ready": read it, so what comes next is an answer
    my ($what, @v) = ws_next($ws, 3);
    ok $what eq 'json' && ref $v[0] eq 'HASH'
       && ($v[0]{type} // '') eq 'synced', "$name: synced"
        or diag('got ' . show($what, @v));
    return $ws;
}


behaviour 'the auth message gives ready with the device\'s ids; the '
          . 'auth timeout no longer applies' => sub {
    my $acct = api_signup() or return;
    my ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token});
    is $ws->status, 101, 'handshake';
    ok $ready, 'ready after the auth message' or return diag("got $err");
    ready_ok($ready, $acct, 'auth message');
    sleep 1.5;          # what is tested: past chat_ws_auth_timeout (1s)
    ping_pong($ws, 123, 'after the auth timeout');
    ok $ws->is_open, 'still open';
    is_deeply [$ws->violations], [], 'frames well-formed';
};

behaviour 'an Authorization: Bearer header on the upgrade gives ready '
          . 'without an auth message' => sub {
    my $acct = api_signup() or return;
    my ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token},
                                          via => 'header');
    is $ws->status, 101, 'handshake';
    ok $ready, 'ready, unasked' or return diag("got $err");
    ready_ok($ready, $acct, 'header');
    sleep 1.5;          # what is tested: past chat_ws_auth_timeout (1s)
    ping_pong($ws, 'x', 'after the auth timeout');
};

behaviour 'bad tokens in the auth message close with 4001' => sub {
    my $acct = api_signup() or return;
    my $gone = api_link_device($acct, device_name => 'gone') or return;
    api_ok(api_request(DELETE => "/v1/devices/$gone->{device_id}",
                       token => $acct->{token}), 204, 'unlink a device');
    my @cases = (
        ['a made-up token',      { type => 'auth', token => 'A' x 43 }],
        ['an empty token',       { type => 'auth', token => '' }],
        ['no token',             { type => 'auth' }],
        ['a numeric token',      { type => 'auth', token => 12345 }],
        ['a null token',         { type => 'auth', token => undef }],
        ['the token with a char more',
                                 { type => 'auth',
                                   token => "$acct->{token}x" }],
        ['an unlinked device\'s token',
                                 { type => 'auth', token => $gone->{token} }],
    );
    for my $c (@cases) {
        my ($what, $msg) = @$c;
        my $ws = ws_connect(path => '/v1/ws');
        is $ws->status, 101, "$what: handshake" or next;
        $ws->send_json($msg);
        closes_with($ws, 4001, $what);
    }
};

behaviour 'bad tokens in the Authorization header close with 4001' => sub {
    my $acct = api_signup() or return;
    for my $c (['a made-up token', 'Bearer ' . ('A' x 43)],
               ['the token with a char more', "Bearer $acct->{token}x"],
               ['"Bearer" and no token', 'Bearer']) {
        my ($what, $h) = @$c;
        my $ws = ws_connect(path => '/v1/ws',
                            headers => [Authorization => $h]);
        is $ws->status, 101, "$what: handshake" or next;
        closes_with($ws, 4001, $what);
    }
};

behaviour 'an Authorization header of another scheme is no token: the '
          . 'auth message still works (a site behind Basic auth)' => sub {
    my $acct = api_signup() or return;
    my $ws = ws_connect(path => '/v1/ws',
                        headers => [Authorization => 'Basic dXNlcjpwYXNz']);
    is $ws->status, 101, 'handshake';
    $ws->send_json({ type => 'auth', token => $acct->{token} });
    my ($what, @v) = ws_next($ws, 3);
    ok $what eq 'json' && ($v[0]{type} // '') eq 'ready', 'ready'
        or diag('got ' . show($what, @v));
};

behaviour 'no auth within chat_ws_auth_timeout (1s) closes with 4002'
          => sub {
    my $t0 = time;
    my $ws = ws_connect(path => '/v1/ws');
    is $ws->status, 101, 'handshake';
    my $took = closes_with($ws, 4002, 'silence', since => $t0, within => 4);
    ok defined $took && $took >= 0.8 && $took <= 2.5,
       sprintf 'after about 1s (%s)',
       defined $took ? sprintf('%.2fs', $took) : 'never';

    $t0 = time;
    $ws = ws_connect(path => '/v1/ws');
    $ws->ping('are you there');
    sleep 0.5;          # pings spread over the auth timeout, on purpose
    $ws->ping('still here');
    $took = closes_with($ws, 4002, 'only pings', since => $t0, within => 4);
    ok defined $took && $took <= 2.5, 'pings do not count as auth';
};

behaviour 'anything but an auth message before ready closes with 4001 '
          . '(invalid UTF-8: 1007)' => sub {
    my $acct = api_signup() or return;
    my @cases = (
        ['a ping message',      ['json', { type => 'ping', t => 1 }]],
        ['a send message',      ['json', { type => 'send', id => 'm1',
                                           chat_id => '1', text => 'hi' }]],
        ['a message without type',
                                ['json', { token => $acct->{token} }]],
        ['invalid JSON',        ['text', '{"type":"auth","token":']],
        ['plain text',          ['text', 'hello']],
        ['a JSON array',        ['text', qq(["auth","$acct->{token}"])]],
        ['an empty message',    ['text', '']],
        ['a binary message',    ['binary', qq({"type":"auth","token":"$acct->{token}"})]],
    );
    for my $c (@cases) {
        my ($what, $send) = @$c;
        my $ws = ws_connect(path => '/v1/ws');
        is $ws->status, 101, "$what: handshake" or next;
        if ($send->[0] eq 'json') {
            $ws->send_json($send->[1]);
        } elsif ($send->[0] eq 'binary') {
            $ws->send_binary($send->[1]);
        } else {
            $ws->send_text($send->[1]);
        }
        closes_with($ws, 4001, $what);
    }
    my $ws = ws_connect(path => '/v1/ws');
    $ws->send_raw(ws_text("{\"type\":\"auth\",\"token\":\"\xff\xfe\"}"));
    closes_with($ws, 1007, 'invalid UTF-8 in the auth message');
};

behaviour 'after ready: ping gets pong with the same t; invalid JSON gets '
          . 'an error and the socket stays open' => sub {
    my $acct = api_signup() or return;
    my $ws = open_socket($acct, 'socket') or return;
    ping_pong($ws, 123, 'ping 123');
    ping_pong($ws, 'abc', 'ping "abc"');
    ping_pong($ws, { k => [1, 2, 'three'] }, 'ping with an object');

    # docs/protocol.md: an unknown type is bad_request too.
    for my $bad ('{"type":"ping",', 'not json', '[1,2]',
                 '{"type":"no-such-type"}') {
        $ws->send_text($bad);
        my ($what, @v) = ws_next($ws, 3);
        my $e = $what eq 'json' ? $v[0] : {};
        ok ref $e eq 'HASH' && ($e->{type} // '') eq 'error'
           && ($e->{code} // '') eq 'bad_request'
           && defined $e->{message} && length $e->{message},
           "'$bad': error bad_request with a message"
            or diag('got ' . show($what, @v));
        ping_pong($ws, 7, "'$bad': the socket still answers");
    }
    ok $ws->is_open, 'still open';
    $ws->close(1000);
    my $c = $ws->recv_close(3);
    is $c && $c->{code}, 1000, 'a normal close at the end';
    is_deeply [$ws->violations], [], 'frames well-formed';
};

behaviour 'twenty sockets authenticate at once' => sub {
    my $acct = api_signup() or return;
    my @ws = map { ws_connect(path => '/v1/ws') } 1 .. 20;
    is scalar(grep { ($_->status // 0) == 101 } @ws), 20, '20 handshakes';
    $_->send_json({ type => 'auth', token => $acct->{token} }) for @ws;
    my @got = map { [ws_next($_, 5)] } @ws;
    my @ready = grep { $_->[0] eq 'json' && ($_->[1]{type} // '') eq 'ready' }
                @got;
    is scalar @ready, 20, 'all 20 are ready'
        or diag(join "\n", map { show(@$_) } grep {
                    !($_->[0] eq 'json' && ($_->[1]{type} // '') eq 'ready')
                } @got);
};

behaviour 'unlinking a device closes all its sockets on both workers with '
          . '4001; the other device stays connected' => sub {
    my $acct = api_signup(device_name => 'A') or return;
    my $devb = api_link_device($acct, device_name => 'B') or return;
    my $p2 = port2();

    my @sa = grep { defined }
            map { open_socket($acct, "A socket $_", port => $p2) } 1 .. 4;
    my (@sb, %on);
    my $proc = 1;
    while (@sb < 6 || ($proc && keys %on < 2 && @sb < 24)) {
        my $ws = open_socket($devb, 'B socket ' . (@sb + 1), port => $p2)
            or last;
        push @sb, $ws;
        my $pid = ws_worker_pid($ws);
        $proc = 0 unless defined $pid;
        $on{$pid}++ if defined $pid;
    }
    ok @sb >= 6, 'B has at least 6 sockets (' . scalar(@sb) . ')';
    if ($proc) {
        is scalar(keys %on), 2, "B's sockets are on both workers ("
            . join(', ', map { "$_: $on{$_}" } sort keys %on) . ')';
    } else {
        diag('cannot map sockets to workers through /proc (not root?); '
             . 'cannot prove that both workers hold B sockets');
    }

    my $t0 = time;
    my $r = api_request(DELETE => "/v1/devices/$devb->{device_id}",
                        token => $acct->{token});
    api_ok($r, 204, 'A unlinks B') or return;
    my @took;
    for my $i (0 .. $#sb) {
        my $pid = ws_worker_pid($sb[$i]) // '?';
        my $t = closes_with($sb[$i], 4001, "B socket " . ($i + 1)
                                          . " (worker $pid)",
                            since => $t0, within => 5);
        push @took, $t if defined $t;
    }
    my ($max) = sort { $b <=> $a } @took;
    ok @took == @sb && $max <= 2.5,
       sprintf 'every B socket closed within ~2s of the unlink '
               . '(slowest %s)', defined $max ? sprintf('%.2fs', $max) : '-';

    for my $i (0 .. $#sa) {
        ping_pong($sa[$i], $i, "A socket " . ($i + 1) . ' after the unlink');
    }
    ok !(grep { !$_->is_open } @sa), 'A sockets are all open';

    my ($ws, $ready, $err) = ws_chat_auth(token => $devb->{token});
    ok !$ready, "B's token no longer authenticates a socket";
    like $err // '', qr/^close 4001/, '... it closes with 4001'
        or diag("got $err");
    api_error_is(api_request(GET => '/v1/me', token => $devb->{token}),
                 401, 'unauthorized', "B's token on /v1/me");
};

nginx_stop();
done_testing();
