# Presence (PROTOCOL.md section 4, docs/protocol.md "Presence"), on two
# hosts (two nginx instances of two workers each, sharing PostgreSQL and
# Redis): a watcher subscribed to a user who shares a chat with it gets
# the user's state at once, then every change, wherever the user's
# sockets are; offline only after chat_presence_debounce without a socket
# (flapping within it is not reported), with last_seen the moment the last
# socket went away; a worker killed with its sockets stops renewing its
# lease and its users go offline within chat_presence_lease and a bit;
# strangers cannot be watched; last_seen "nobody" hides one's own and
# everyone else's; unsubscribe stops the events.
#
#   scripts/test.sh t/ws_presence.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve :devices);
use Test::Chat::JSON qw(ms);
use JSON::PP ();
use List::Util qw(max);
use Time::HiRes qw(time);

needs_stack();

my $LEASE = 3;          # chat_presence_lease, seconds
my $DEBOUNCE = 2;       # chat_presence_debounce, seconds

# PostgreSQL and Redis outlive this file: a prefix of our own (the same on
# both hosts: one deployment), and new users in every behaviour. Every
# behaviour runs on both hosts.
serve(defaults => 1,
      http_config => chat_http_config(port2 => 1, extra => <<"END"));
chat_presence_lease ${LEASE}s;
chat_presence_debounce ${DEBOUNCE}s;
END


# ---------------------------------------------------------------------------
# Presence events: Test::Chat::Delivery's record() keeps them in
# $d->{presences}, with _types, _sync and _at; presences_of() picks those
# about a user, presence_ok() checks one.

sub subscribe {
    my ($d, @u) = @_;
    $d->{ws}->send_json({ type => 'presence',
                          subscribe => [map { $_->{user_id} } @u] });
}

sub unsubscribe {
    my ($d, @ids) = @_;
    $d->{ws}->send_json({ type => 'presence', unsubscribe => [@ids] });
}

# The next presence event about $u on $d that was not taken yet, within
# $within seconds (reading every device of @$devs meanwhile), or undef.
sub next_presence {
    my ($devs, $d, $u, $within) = @_;
    my $cur = $d->{pcur}{ $u->{user_id} } // 0;
    pump(alive(@$devs, $d), sub { presences_of($d, $u) > $cur },
         within => $within, quiet => $within);
    my @p = presences_of($d, $u);
    return undef if @p <= $cur;
    $d->{pcur}{ $u->{user_id} } = $cur + 1;
    return $p[$cur];
}

# $dw subscribes to $u, who has never connected: offline, last_seen null;
# then $u connects on host 2: online. Two assertions; returns $u's
# device, or undef.
sub watch_then_connect {
    my ($dw, $u) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    subscribe($dw, $u);
    presence_ok($dw, next_presence([], $dw, $u, 5), $u, 0, undef,
                "$dw->{name} subscribes to $u->{name}, never connected");
    my $du = device($u, $u->{name}, host => 2) or return undef;
    presence_ok($dw, next_presence([$du], $dw, $u, 5), $u, 1, undef,
                "$u->{name} connects on host 2");
    return $du;
}

# W (on host 2) and U (on host 1), who share a chat, both connected; W
# subscribes to U: online (one assertion). Returns (W, U, W's device, U's
# device), or () when one of them could not be made.
sub watcher_of_online {
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($uw, $uu) = users('W', 'U') or return;
    direct_chat($uw, $uu) or return;
    my $dw = device($uw, 'W', host => 2) or return;
    my $du = device($uu, 'U', host => 1) or return;
    subscribe($dw, $uu);
    presence_ok($dw, next_presence([$du], $dw, $uu, 5), $uu, 1, undef,
                'W subscribes: U online');
    return ($uw, $uu, $dw, $du);
}

# One assertion: $d gets no presence event about $u (any user when $u is
# undef) within $secs, reading @$devs meanwhile.
sub no_presence_ok {
    my ($devs, $d, $u, $secs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $n = @{ $d->{presences} || [] };
    settle([@$devs, $d], $secs);
    my @new = @{ $d->{presences} || [] }[$n .. $#{ $d->{presences} || [] }];
    @new = grep { ($_->{user_id} // '') eq $u->{user_id} } @new if $u;
    ok !@new, sprintf '%s: %s gets no presence%s within %.1fs', $name,
                      $d->{name}, $u ? " about $u->{name}" : '', $secs
        or diag(show_presences($d));
}

# PATCH /v1/me/privacy, and the answer is the new settings: two
# assertions.
sub privacy_ok {
    my ($acct, $body, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = set_privacy($acct, $body, $name) or return 0;
    my $j = $r->{json};
    is_deeply { last_seen => $j->{last_seen},
                read_receipts => JSON::PP::is_bool($j->{read_receipts})
                                 ? ($j->{read_receipts} ? 'true' : 'false')
                                 : $j->{read_receipts} },
              $want, "$name: the answer is the new settings"
        or diag(api_show($r));
    return 1;
}

# A clean close, or a TCP close without a close frame.
sub drop {
    my ($d) = @_;
    $d->{ws}->disconnect;
    $d->{dead} = 1;
}


# ---------------------------------------------------------------------------

behaviour 'W on host 1 watches U: never seen, then online when U connects '
          . 'on host 2, online while one of U\'s devices is connected on '
          . 'any host, offline after the debounce with last_seen when the '
          . 'last socket closed; a watcher subscribing later gets that '
          . 'at once',
          hosts => 2 => sub {
    my ($uw, $uu, $uv) = users('W', 'U', 'V') or return;
    my $uu2 = api_link_device($uu, device_name => 'U2') or return;
    direct_chat($uw, $uu) or return;
    group_chat($uv, 'V and U', [$uu], host => 2) or return;
    my $dw = device($uw, 'W', host => 1) or return;

    my $du = watch_then_connect($dw, $uu) or return;
    my $du2 = device($uu2, 'U2', host => 1) or return;
    no_presence_ok([$du, $du2], $dw, $uu, 1,
                   'U\'s second device connects on host 1');
    hang_up($du);
    no_presence_ok([$du2], $dw, $uu, $DEBOUNCE + 1.5,
                   'U closes on host 2, U2 stays on host 1');

    my $t0 = time;
    hang_up($du2);
    my $t1 = time;
    no_presence_ok([], $dw, $uu, $DEBOUNCE - 0.7,
                   'U2 closes, U\'s last socket: not before the debounce');
    my $p = next_presence([], $dw, $uu, $DEBOUNCE + 3);
    my $t2 = time;
    presence_ok($dw, $p, $uu, 0, [ms($t0) - 1000, ms($t1) + 1000],
                'then, U offline, last_seen when U2 closed');
    diag(sprintf 'offline came %.2fs after the close', $p->{_at} - $t1)
        if $p;
    ok $p && $p->{_at} - $t1 <= $DEBOUNCE + 2,
       "within the debounce ($DEBOUNCE s) and 2 s";
    my $seen = $p ? $p->{last_seen} : undef;
    no_presence_ok([], $dw, $uu, 1, 'then nothing more');

    my $dv = device($uv, 'V', host => 2) or return;
    subscribe($dv, $uu);
    $p = next_presence([$dw], $dv, $uu, 5);
    presence_ok($dv, $p, $uu, 0, [$seen // 0, $seen // 0],
                'V (host 2) subscribes later: U offline, the same '
                . 'last_seen');
    no_errors_ok([$dw, $dv], 'online and offline');
};

behaviour 'a stranger (no shared chat) cannot be watched: forbidden, and '
          . 'nothing of that subscribe holds; malformed presence '
          . 'messages get bad_request; one\'s own id may be watched',
          hosts => 2 => sub {
    my ($uw, $uf, $us) = users('W', 'F', 'S') or return;
    direct_chat($uw, $uf) or return;
    my $dw = device($uw, 'W', host => 2) or return;

    my $sub = sub { { type => 'presence', subscribe => [@_] } };
    error_ok([], $dw, $sub->($us->{user_id}), 'forbidden',
             'W subscribes to a stranger');
    error_ok([], $dw, $sub->($uf->{user_id}, $us->{user_id}), 'forbidden',
             'W subscribes to F (a chat partner) and a stranger at once');
    error_ok([], $dw, { type => 'presence' }, 'bad_request',
             'presence without subscribe or unsubscribe');
    error_ok([], $dw, { type => 'presence', subscribe => $uf->{user_id} },
             'bad_request', 'subscribe with a string, not an array');
    error_ok([], $dw, { type => 'presence', subscribe => {} },
             'bad_request', 'subscribe with an object');
    error_ok([], $dw, $sub->([$uf->{user_id}]), 'bad_request',
             'subscribe with an array in the array');
    error_ok([], $dw, { type => 'presence', unsubscribe => 'x' },
             'bad_request', 'unsubscribe with a string');

    my $df = device($uf, 'F', host => 1) or return;
    no_presence_ok([$df], $dw, undef, 1,
                   'F connects: W is not subscribed to F');
    subscribe($dw, $uw, $uf);
    presence_ok($dw, next_presence([$df], $dw, $uw, 5), $uw, 1, undef,
                'W subscribes to itself');
    presence_ok($dw, next_presence([$df], $dw, $uf, 5), $uf, 1, undef,
                '... and to F');
    error_ok([$df], $df, $sub->($us->{user_id}), 'forbidden',
             'F subscribes to the stranger');
    no_presence_ok([$df], $dw, undef, 0.5, 'then');
    is scalar(@{ $df->{presences} || [] }), 0, 'F got no presence'
        or diag(show_presences($df));
    $_->{errors} = [] for $dw, $df;
    no_errors_ok([$dw, $df], 'forbidden and malformed');
};

behaviour "flapping: U closes and comes back within 0.5 s, four times, "
          . "on alternate hosts; with chat_presence_debounce ${DEBOUNCE}s "
          . 'W sees no offline, and no online either; then U goes for '
          . 'good and W sees it',
          hosts => 2 => sub {
    my ($uw, $uu, $dw, $du) = watcher_of_online() or return;
    my $from = presences_of($dw, $uu);

    my @gaps;
    for my $i (1 .. 4) {
        my $t = time;
        $i % 2 ? hang_up($du) : drop($du);
        pump([$dw], undef, within => 0.1);
        my $host = $i % 2 ? 2 : 1;
        $du = device($uu, "U back ($i) on host $host", host => $host)
            or return;
        push @gaps, time - $t;
        pump([$dw, $du], undef, within => 0.2);
    }
    diag(sprintf 'closed to synced again: %s s',
                 join ', ', map { sprintf '%.2f', $_ } @gaps);
    ok max(@gaps) < $DEBOUNCE - 0.5,
       'each time U was back well within the debounce';
    settle([$dw, $du], $DEBOUNCE + 1.5);
    my @ev = presences_of($dw, $uu, $from);
    my @off = grep { !$_->{online} } @ev;
    my @on = grep { $_->{online} } @ev;
    ok !@off, 'W got no offline' or diag(show_presences($dw));
    ok @on <= 1, 'W got at most one online (' . scalar(@on) . ')'
        or diag(show_presences($dw));
    $dw->{pcur}{ $uu->{user_id} } += @ev;

    my $t0 = time;
    drop($du);
    my $p = next_presence([], $dw, $uu, $DEBOUNCE + 3);
    presence_ok($dw, $p, $uu, 0, [ms($t0) - 1000, ms(time)],
                'U goes for good');
    ok $p && $p->{_at} - $t0 >= $DEBOUNCE - 0.5,
       'not before the debounce'
        or diag(sprintf 'after %.2fs', $p->{_at} - $t0);
    no_errors_ok([$dw], 'flapping');
};

behaviour 'last_seen privacy: B "nobody" is seen with last_seen null; W2 '
          . '"nobody" sees null for everyone; C "everyone" and D '
          . '"contacts" (who wrote to W1 and W3 in direct chats) are seen '
          . 'with their last_seen by W1 ("everyone"); online is shown to '
          . 'all',
          hosts => 2 => sub {
    my ($ub, $uc, $ud, $uw1, $uw2, $uw3)
        = users(qw(B C D W1 W2 W3)) or return;
    group_chat($uw1, 'privacy', [$ub, $uc, $ud, $uw2, $uw3]) or return;
    my @to = (direct_chat($ud, $uw1), direct_chat($ud, $uw3));
    return if grep { !$_ } @to;
    my $rr = 'true';
    privacy_ok($ub, { last_seen => 'nobody' },
               { read_receipts => $rr, last_seen => 'nobody' },
               'B: PATCH {"last_seen":"nobody"}') or return;
    privacy_ok($ud, { last_seen => 'contacts' },
               { read_receipts => $rr, last_seen => 'contacts' },
               'D: PATCH {"last_seen":"contacts"}') or return;
    privacy_ok($uw2, { last_seen => 'nobody' },
               { read_receipts => $rr, last_seen => 'nobody' },
               'W2: PATCH {"last_seen":"nobody"}') or return;
    my $r = api_request(GET => '/v1/me/privacy', token => $ub->{token});
    api_ok($r, 200, 'GET /v1/me/privacy');
    is $r->{json}{last_seen}, 'nobody', 'B\'s last_seen is "nobody"';
    for my $bad ('friends', '', 'Nobody') {
        $r = api_request(PATCH => '/v1/me/privacy', token => $ub->{token},
                         body => { last_seen => $bad });
        api_error_is($r, 400, 'bad_request',
                     "PATCH {\"last_seen\":\"$bad\"}");
    }

    my $dw1 = device($uw1, 'W1', host => 2) or return;
    my $dw2 = device($uw2, 'W2', host => 1) or return;
    my @watched = ($ub, $uc, $ud);
    subscribe($_, @watched) for $dw1, $dw2;
    for my $w ($dw1, $dw2) {
        presence_ok($w, next_presence([$dw1, $dw2], $w, $_, 5), $_, 0,
                    undef, "$w->{name} subscribes: $_->{name} never seen")
            for @watched;
    }
    my @d = (device($ub, 'B', host => 1), device($uc, 'C', host => 2),
             device($ud, 'D', host => 1));
    return if grep { !$_ } @d;
    for my $w ($dw1, $dw2) {
        presence_ok($w, next_presence([$dw1, $dw2, @d], $w, $_, 5), $_, 1,
                    undef, "$_->{name} connects") for @watched;
    }
    send_ok($d[2], $_, [$d[2]], 'D writes in a direct chat') // return
        for @to;
    presence_ok($dw1, next_presence([$dw1, $dw2, @d], $dw1, $ud, 5), $ud, 1,
                undef, 'D\'s first message to W1 makes a contact: W1 gets '
                       . 'D\'s state again');
    my $t0 = time;
    hang_up($_) for @d;
    my $t1 = time;
    my @range = (ms($t0) - 1000, ms($t1) + 1000);
    my %seen;
    for my $w ($dw1, $dw2) {
        for my $u (@watched) {
            my $p = next_presence([$dw1, $dw2], $w, $u, $DEBOUNCE + 3);
            my $shown = $w == $dw1 && $u != $ub;
            presence_ok($w, $p, $u, 0, $shown ? \@range : undef,
                        "$u->{name} closes");
            $seen{ $u->{name} } = $p->{last_seen} if $p && $shown;
        }
    }

    my $dw3 = device($uw3, 'W3 ("everyone")', host => 1) or return;
    subscribe($dw3, @watched);
    for my $u (@watched) {
        my $v = $seen{ $u->{name} };
        presence_ok($dw3, next_presence([$dw1, $dw2], $dw3, $u, 5), $u, 0,
                    $u == $ub ? undef : [$v // 0, $v // 0],
                    "W3 subscribes later: $u->{name}");
    }

    # The settings at the moment of subscribe apply: W3 turns "nobody"
    # and subscribes again on a new socket.
    privacy_ok($uw3, { last_seen => 'nobody' },
               { read_receipts => $rr, last_seen => 'nobody' },
               'W3: PATCH {"last_seen":"nobody"}') or return;
    my $dw3b = device($uw3, 'W3 ("nobody" now)', host => 2) or return;
    subscribe($dw3b, $uc);
    presence_ok($dw3b, next_presence([], $dw3b, $uc, 5), $uc, 0, undef,
                'W3, now "nobody", subscribes to C');
    no_errors_ok([$dw1, $dw2, $dw3, $dw3b], 'privacy');
};

behaviour 'unsubscribe stops the events; ids not watched are ignored, '
          . 'without an answer',
          hosts => 2 => sub {
    my ($uw, $uu, $ux, $us) = users('W', 'U', 'X', 'S') or return;
    direct_chat($uw, $uu) or return;
    direct_chat($uw, $ux) or return;
    my $dw = device($uw, 'W', host => 1) or return;
    my $du = watch_then_connect($dw, $uu) or return;
    unsubscribe($dw, $uu->{user_id}, $ux->{user_id}, $us->{user_id});
    subscribe($dw, $ux);            # answered after the unsubscribe
    presence_ok($dw, next_presence([$du], $dw, $ux, 5), $ux, 0, undef,
                'W unsubscribes from U (and X and S, not watched), then '
                . 'subscribes to X');
    hang_up($du);
    no_presence_ok([], $dw, $uu, $DEBOUNCE + 1.5,
                   'U closes, W no longer watches U');
    $du = device($uu, 'U again', host => 1) or return;
    no_presence_ok([$du], $dw, $uu, 1, 'U connects again');
    my $dx = device($ux, 'X', host => 2) or return;
    presence_ok($dw, next_presence([$du, $dx], $dw, $ux, 5), $ux, 1,
                undef, 'X connects: W still watches X');
    is scalar(@{ $dw->{errors} }), 0,
       'unsubscribing ids not watched got no answer'
        or diag(join ', ', map { ws_chat_show($_) } @{ $dw->{errors} });
    subscribe($dw, $uu);
    presence_ok($dw, next_presence([$du, $dx], $dw, $uu, 5), $uu, 1,
                undef, 'W subscribes to U again: online at once');
    no_errors_ok([$dw, $du, $dx], 'unsubscribe');
};

behaviour "lease: the worker holding U's only socket on host 1 is killed "
          . "(SIGKILL); W on host 2 sees U offline within "
          . "chat_presence_lease ($LEASE s) and 2 s; U back on the new "
          . 'worker is online again',
          hosts => 2,
          error_log => [qr/worker process \d+ exited on signal 9/] => sub {
    my ($uw, $uu, $dw, $du) = watcher_of_online() or return;
    my $pid = $du->{pid};
    ok defined $pid, 'the worker holding U\'s socket is known'
        or return;
    # Let a renewal or two pass: the lease is a live one.
    settle([$dw, $du], 1.5);
    my $t0 = time;
    ok kill('KILL', $pid), "SIGKILL to worker $pid of host 1";
    ok $du->{ws}->wait_eof(5), 'U\'s socket is gone with it';
    drop($du);
    my $p = next_presence([], $dw, $uu, $LEASE + 2);
    my $t1 = time;
    presence_ok($dw, $p, $uu, 0, [ms($t0) - 1000, ms($t1) + 500],
                'W sees U offline, last_seen about when it was noticed');
    diag(sprintf 'offline %.2fs after the kill', $p->{_at} - $t0) if $p;
    ok wait_until(5, sub { my @w = host_workers(1);
                           @w == 2 && !grep { $_ == $pid } @w }),
       'the master runs a new worker in its place';

    $du = device($uu, 'U back on host 1', host => 1) or return;
    presence_ok($dw, next_presence([$du], $dw, $uu, 5), $uu, 1, undef,
                'U connects again');
    no_presence_ok([$du], $dw, $uu, $LEASE + 1,
                   'and stays online across lease renewals');
    my $t2 = time;
    hang_up($du);
    presence_ok($dw, next_presence([], $dw, $uu, $DEBOUNCE + 3), $uu, 0,
                [ms($t2) - 1000, ms(time)], 'U closes');
    no_errors_ok([$dw], 'lease');
};

nginx_stop();
nginx2_stop();
done_testing();
