# Redis lost under live conversations (PROTOCOL.md section 5, issue 4:
# "Redis outage"): with two workers, A, B's three devices (sockets on both
# workers) and C connected, Redis is stopped mid-conversation. Sends go on
# being stored and answered with "sent"; while Redis is away, sessions read
# PostgreSQL every chat_redis_down_poll (2 s), so every device has every
# message within 5 s of the last send; when Redis is back, every session
# reads back from PostgreSQL what was stored meanwhile, so within ~10 s
# every device has every message of the outage, in order, dense, once,
# without a second "synced"; then live delivery works again (within ~2 s).
# The same with a hung Redis (SIGSTOP: connections accepted, nothing
# answered; commands time out after chat_redis_timeout 1s).
#
#   scripts/test.sh t/ws_redis_outage.t
#
# The file stops and starts the throwaway Redis of scripts/test.sh; the
# harness restarts or resumes it when the file exits, whatever happened.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve :devices);
use List::Util qw(max);
use Time::HiRes qw(time);

needs_stack(qw(CHAT_REDIS_DIR CHAT_REDIS_PORT));

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour. A second server on port2 with
# reuseport: each worker has a listening socket of its own there, so
# sockets can be placed on either worker.
serve(defaults => 1, http_config => chat_http_config(
          port2 => 1, extra => "chat_redis_timeout 1s;\n"));

my $HOLD = 4;       # how long Redis stays away, in seconds

# What this file did to Redis and has not undone yet.
my $REDIS = 'up';

sub redis_back {
    if ($REDIS eq 'paused') {
        redis_resume();
    } elsif ($REDIS eq 'stopped') {
        redis_start() or diag('Redis did not start again');
    }
    $REDIS = 'up';
}

# A behaviour that brings Redis back after it, whatever happened, and
# notes the kinds of [error] lines it logged. Losing Redis is logged at
# error level: expected; alert, crit, emerg and crashes never.
sub outage_behaviour {
    my ($name, $code) = @_;
    behaviour $name, no_error_log => [], sub {
        my $mark = error_log_mark();
        my $died = !eval { $code->(); 1 };
        my $err = $@;
        redis_back();
        fail("died: $err") if $died;
        my @errors = grep { /\[(error|crit|alert|emerg)\]/ }
                     split /\n/, error_log_since($mark);
        my %kinds;
        $kinds{ s/^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?/[$1] /r }++
            for @errors;
        note(scalar(@errors) . ' [error] or worse lines in the error log'
             . join('', map { "\n  $kinds{$_} x $_" } sort keys %kinds));
    };
}

# How many msgs of $chat above $seq each device has: "B1 3, B2 0, ...".
sub counts_above {
    my ($devs, $chat, $seq) = @_;
    return join ', ', map { my $d = $_;
                            "$d->{name} " . scalar(grep { $_->{seq} > $seq }
                                                   @{ $d->{got}{$chat}
                                                      || [] }) } @$devs;
}

# What each device has of the chats, for a diag: "B1 direct: 1-3, 5".
sub holdings {
    my ($devs, %chats) = @_;
    return join "\n", map { my $d = $_;
        map { "$d->{name} $_: "
              . ranges_in_order(map { $_->{seq} }
                                @{ $d->{got}{ $chats{$_} } || [] })
              . ' (sent ' . ranges(keys %{ $d->{sent}{ $chats{$_} } || {} })
              . ')' } sort keys %chats } @$devs;
}

# The scenario of both behaviours: $down->() takes Redis away (true once
# it is away: stopped and every worker has seen it, or hung), $up->()
# brings it back.
sub outage {
    my ($what, $down, $up, %o) = @_;
    my ($ua, $ub, $uc) = users('A', 'B1', 'C') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $ub3 = api_link_device($ub, device_name => 'B3') or return;
    my $direct = direct_chat($ua, $ub) or return;
    my $g = group_chat($ua, 'outage', [$ub, $uc]) or return;

    my @w = nginx_worker_pids();
    my @d;
    my @place = ([$ua, 'A', 0], [$ub, 'B1', 0], [$ub2, 'B2', 1],
                 [$ub3, 'B3', 1], [$uc, 'C', 0]);
    for my $p (@place) {
        my $d = device($p->[0], $p->[1], worker => $w[ $p->[2] ]) or return;
        push @d, $d;
    }
    my ($da, $b1, $b2, $b3, $dc) = @d;
    my @bs = ($b1, $b2, $b3);
    my %on;
    $on{ $_->{pid} // 'unknown' }++ for @bs;
    if ($on{unknown}) {
        diag('cannot map sockets to workers through /proc');
    } else {
        is scalar(keys %on), 2, 'B\'s sockets are on both workers ('
           . join(', ', map { "$_: $on{$_}" } sort keys %on) . ')';
    }
    my @in_direct = ($da, @bs);
    my %chats = (direct => $direct, group => $g);

    # Before: live delivery works.
    ok pump(\@d, caught_up(\@d, $g, 1)), 'all have the group\'s created';
    send_ok($da, $direct, \@d, 'before: A to B') or return;
    send_ok($dc, $g, \@d, 'before: C to the group') or return;
    send_ok($b2, $direct, \@d, 'before: B2 to A') or return;
    ok pump(\@d, sub { caught_up(\@in_direct, $direct, 2)->()
                       && caught_up(\@d, $g, 2)->() }, within => 5),
       'before the outage: all get everything live';
    my ($d0, $g0) = (2, 2);     # the last seqs before the outage

    # The outage.
    ok $down->(), "Redis $what" or return;
    my $t_down = time;
    my @order = ([$da, $direct], [$dc, $g], [$b1, $direct], [$da, $g],
                 [$da, $direct], [$b3, $g], [$dc, $g], [$b1, $direct],
                 [$da, $direct], [$b2, $g]);
    my ($nd, $ng, @took) = ($d0, $g0);
    for my $i (0 .. $#order) {
        # Spread over $HOLD seconds: longer than chat_redis_timeout and
        # than several reconnect backoffs.
        pump(\@d, undef, within => $t_down + $i * $HOLD / @order - time)
            if $t_down + $i * $HOLD / @order > time;
        my ($s, $chat) = @{ $order[$i] };
        my $label = $chat eq $direct ? 'direct' : 'group';
        my $t0 = time;
        my $seq = send_ok($s, $chat, \@d, sprintf('during the outage, '
                          . '%d: %s to the %s chat', $i + 1, $s->{name},
                          $label)) or return;
        push @took, time - $t0;
        my $want = $chat eq $direct ? ++$nd : ++$ng;
        is $seq, $want, "... seq $want";
    }
    my $slow = max(@took);
    ok $slow < 5, sprintf('every send was answered within 5s (slowest '
                          . '%.2fs)', $slow);
    pump(\@d, undef, within => max(0.5, $t_down + $HOLD - time));
    note(sprintf 'delivered live during the outage (%.1fs): direct: %s; '
         . 'group: %s', time - $t_down, counts_above(\@in_direct, $direct,
                                                     $d0),
         counts_above(\@d, $g, $g0));

    # Redis away for good: sessions poll PostgreSQL (chat_redis_down_poll,
    # 2s), so the outage's messages come without it.
    if ($o{polls}) {
        my $t0 = time;
        ok pump(\@d, sub { caught_up(\@in_direct, $direct, $nd)->()
                           && caught_up(\@d, $g, $ng)->() },
                within => 5, quiet => 5),
           sprintf('with Redis still away, every device has every message '
                   . 'of the outage within 5s of the last send (%.1fs)',
                   time - $t0)
            or diag("expected direct 1..$nd and group 1..$ng; got:\n"
                    . holdings(\@d, %chats));
    }

    # Back.
    ok $up->(), "Redis back" or return;
    my $t_up = time;
    my $all = sub { caught_up(\@in_direct, $direct, $nd)->()
                    && caught_up(\@d, $g, $ng)->() };
    my $done = pump(\@d, $all, within => 20, quiet => 20);
    my $took = time - $t_up;
    ok $done && $took <= 10,
       sprintf('within 10s of Redis coming back every device has every '
               . 'message of the outage (%s after %.1fs)',
               $done ? 'all' : 'not all', $took)
        or diag("expected direct 1..$nd and group 1..$ng; got:\n"
                . holdings(\@d, %chats));
    for my $d (@d) {
        my @s = grep { $_->{type} eq 'synced' } @{ $d->{log} };
        ok !@s, "$d->{name}: no second synced" or diag(ws_chat_show($s[0]));
    }

    # Live again.
    my $t0 = time;
    my $s1 = send_ok($da, $direct, \@d, 'after: A to B') or return;
    my $s2 = send_ok($dc, $g, \@d, 'after: C to the group') or return;
    ok pump(\@d, sub { caught_up(\@in_direct, $direct, $s1)->()
                       && caught_up(\@d, $g, $s2)->() }, within => 2),
       sprintf('after: both reach every device live within 2s (%.2fs)',
               time - $t0)
        or diag("expected direct 1..$s1 and group 1..$s2; got:\n"
                . holdings(\@d, %chats));
    quiet_ok(\@d, 1, 'then');
    stream_ok($_, $direct, $s1, "$_->{name} in the direct chat (worker "
                                . ($_->{pid} // '?') . ')') for @in_direct;
    stream_ok($_, $g, $s2, "$_->{name} in the group (worker "
                           . ($_->{pid} // '?') . ')') for @d;
    no_errors_ok(\@d, "Redis $what");
}


outage_behaviour 'Redis stopped mid-conversation: sends are stored and '
                 . 'answered; when it is back every socket reads back what '
                 . 'it missed, in order, once; live delivery works again'
                 => sub {
    outage('stops',
           sub { $REDIS = 'stopped';
                 my $mark = error_log_mark();
                 redis_stop() && redis_down_seen($mark) },
           sub { my $ok = redis_start(); $REDIS = 'up' if $ok; $ok },
           polls => 1);
};

outage_behaviour 'Redis hung (SIGSTOP) mid-conversation: sends are stored '
                 . 'and answered; when it resumes every socket reads back '
                 . 'what it missed, in order, once; live delivery works '
                 . 'again' => sub {
    outage('hangs',
           sub { $REDIS = 'paused'; scalar redis_pause() },
           sub { my $n = redis_resume(); $REDIS = 'up'; $n });
};

nginx_stop();
done_testing();
