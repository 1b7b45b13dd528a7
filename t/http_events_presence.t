# Presence over the HTTP fallback transport (docs/protocol.md "HTTP
# fallback transport", "Presence"): a device that only long-polls is
# online for its watchers, offline chat_presence_debounce after its last
# poll; ?presence=<id>:<known> watches a user for the poll's length and
# answers at once only when the state differs, and on a change.
#
#   scripts/test.sh t/http_events_presence.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::Events qw(:all);
use List::Util qw(min);
use Test::Chat::JSON qw(ms);
use Time::HiRes qw(time);

needs_stack();

$SIG{PIPE} = 'IGNORE';

my $LEASE = 3;          # chat_presence_lease, seconds
my $DEBOUNCE = 1;       # chat_presence_debounce, seconds

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
serve(defaults => 1, workers => 2,
      http_config => chat_http_config(extra => <<"END"));
chat_presence_lease ${LEASE}s;
chat_presence_debounce ${DEBOUNCE}s;
END


# ---------------------------------------------------------------------------

behaviour "presence: a user who only long-polls (again at once after each "
          . 'answer) is online for a WebSocket watcher, offline with '
          . "last_seen $DEBOUNCE s (chat_presence_debounce) after the "
          . 'last poll; ?presence=<id>:<known> answers at once only when '
          . 'the state differs, and on a change' => sub {
    my ($uw, $uu, $up, $uv, $us) = users('W', 'U', 'P', 'V', 'S') or return;
    direct_chat($uw, $uu) or return;
    direct_chat($up, $uv) or return;
    my $dw = device($uw, 'W') or return;
    $dw->{ws}->send_json({ type => 'presence',
                           subscribe => [$uu->{user_id}] });
    pump([$dw], sub { presences_of($dw, $uu) >= 1 }, within => 5);
    presence_ok(undef, (presences_of($dw, $uu))[0], $uu, 0, undef,
                'W subscribes to U, never seen');

    # U polls, ?wait=1, again at once after each answer, for longer than
    # the lease.
    my $loop = $LEASE + 3;
    my $t0 = time;
    my ($polls, @bad, $t_last, $t_end, $online_at) = (0);
    while (time < $t0 + $loop) {
        $t_last = time;
        my $h = poll_start($uu->{token}, 'wait=1');
        my $r = poll_finish_pumping($h, [$dw], 5);
        $t_end = time;
        $polls++;
        push @bad, "poll $polls: " . api_show($r)
            unless ($r->{status} // 0) == 200;
        $online_at //= time if presences_of($dw, $uu) >= 2;
    }
    ok !@bad, "U polled $polls times, each 200" or diag(join "\n", @bad);
    my @p = presences_of($dw, $uu);
    presence_ok(undef, $p[1], $uu, 1, undef, 'W sees U online while U polls');
    ok $online_at && $online_at - $t0 < 3,
       sprintf('... within 3s of the first poll (%s)',
               $online_at ? sprintf('%.2fs', $online_at - $t0) : 'never');
    my @more = @p[2 .. $#p];
    ok !@more, "... and nothing else over ${loop}s of polls (the gaps "
               . 'between polls are within the debounce; lease renewals)'
        or diag(scalar(@more) . ' more presence events, the first: '
                . join("\n", map { sprintf '+%.2fs %s', $_->{_at} - $t0,
                                           ws_chat_show($_) }
                                 @more[0 .. min(5, $#more)]));

    my $n = @p;
    pump([$dw], sub { presences_of($dw, $uu) > $n }, within => $DEBOUNCE + 4,
         quiet => $DEBOUNCE + 4);
    my $off = (presences_of($dw, $uu))[$n];
    presence_ok(undef, $off, $uu, 0, [ms($t_last) - 1000, ms($t_end) + 1000],
                'U stops polling: W sees U offline, last_seen when the '
                . 'last poll ended');
    my $after = $off ? $off->{_at} - $t_end : undef;
    ok defined $after && $after >= $DEBOUNCE - 0.5
       && $after <= $DEBOUNCE + 2.5,
       sprintf('... after the debounce (%ds): %s', $DEBOUNCE,
               defined $after ? sprintf('%.2fs', $after) : 'never');

    # ?presence= on P's polls, V online over WebSocket.
    my $dv = device($uv, 'V') or return;
    my $iv = $uv->{user_id};
    my $pres_of = sub { my ($a) = @_;
                        (grep { $_->{type} eq 'presence' } @{ $a || [] })[0] };
    my $r = poll($up->{token}, "wait=2&presence=$iv:on");
    my $a = answer_ok($r, "P polls ?wait=2&presence=V:on, V online");
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
    ok $r->{elapsed} >= 1.8,
       sprintf('... the unchanged state does not end the poll (%.2fs)',
               $r->{elapsed});
    for my $known (':off', '') {
        $r = poll($up->{token}, "wait=10&presence=$iv$known");
        $a = answer_ok($r, "P polls ?presence=V$known, V online");
        ok $r->{elapsed} < 1.5,
           sprintf('... at once (%.2fs)', $r->{elapsed});
        ok $a && @$a == 1, '... with one object' or diag(ws_chat_show($a));
        presence_ok(undef, $pres_of->($a), $uv, 1, undef, '...');
    }
    api_error_is(poll($up->{token}, "wait=1&presence=$us->{user_id}:on"),
                 403, 'forbidden', 'P polls ?presence=S (no shared chat)');

    my $h = poll_start($up->{token}, "wait=15&presence=$iv:on");
    pump([$dv], undef, within => 0.3);
    my $t1 = time;
    hang_up($dv);
    my $t2 = time;
    $r = poll_finish($h, timeout => 15);
    $a = answer_ok($r, 'P polls ?wait=15&presence=V:on; V closes');
    ok $r->{ended_at} - $t2 >= $DEBOUNCE - 0.5
       && $r->{ended_at} - $t2 < $DEBOUNCE + 2.5,
       sprintf('... the poll ends %.2fs after the close (debounce %ds)',
               $r->{ended_at} - $t2, $DEBOUNCE);
    ok $a && @$a == 1, '... with one object' or diag(ws_chat_show($a));
    my $p = $pres_of->($a);
    presence_ok(undef, $p, $uv, 0, [ms($t1) - 1000, ms($t2) + 1000], '...');
    my $seen = $p && $p->{last_seen};
    if (defined $seen) {
        $r = poll($up->{token}, "wait=2&presence=$iv:$seen");
        $a = answer_ok($r, "P polls ?presence=V:<that last_seen>");
        is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
        ok $r->{elapsed} >= 1.8,
           sprintf('... unchanged: the poll waits (%.2fs)', $r->{elapsed});
    }
    for my $known ('on', 'off') {
        $r = poll($up->{token}, "wait=10&presence=$iv:$known");
        $a = answer_ok($r, "P polls ?presence=V:$known, V offline with a "
                           . 'last_seen');
        ok $r->{elapsed} < 1.5,
           sprintf('... at once: the state differs (%.2fs)', $r->{elapsed});
        ok $a && @$a == 1, '... with one object' or diag(ws_chat_show($a));
        presence_ok(undef, $pres_of->($a), $uv, 0, [$seen // 0, $seen // 0],
                    '...');
    }
    no_errors_ok([$dw], 'presence');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
