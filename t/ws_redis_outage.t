# Redis lost under live conversations (PROTOCOL.md section 5, issue 4:
# "Redis outage"): with two workers, A, B's three devices (sockets on both
# workers) and C connected, Redis is stopped mid-conversation. Sends go on
# being stored and answered with "sent"; when Redis is back, every session
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
use B ();
use IO::Select;
use List::Util qw(max min);
use Time::HiRes qw(time sleep);

my @env = qw(CHAT_PG_DSN CHAT_REDIS CHAT_REDIS_DIR CHAT_REDIS_PORT);
plan skip_all => join(', ', @env) . ' must be set (run me through '
                 . 'scripts/test.sh)'
    if grep { !$ENV{$_} } @env;

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
my $PREFIX = "t_ws_redis_outage_$$:";

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END

# A second server on port2 with reuseport: each worker has a listening
# socket of its own there, so sockets can be placed on either worker.
my $HTTP = <<"END";
chat_postgres "\$TEST_NGINX_PG_DSN";
chat_redis \$TEST_NGINX_REDIS;
chat_redis_timeout 1s;
chat_dev_codes on;
chat_redis_prefix "$PREFIX";

server {
    listen 127.0.0.1:\$TEST_NGINX_PORT2 reuseport;
$LOCATIONS
}
END

my $T = 10;         # no event for this long ends a wait, in seconds
my $HOLD = 4;       # how long Redis stays away, in seconds

END { nginx_stop() if nginx_running() }

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

# A subtest on a running nginx (2 workers); Redis is brought back after it
# whatever happened. Losing Redis is logged at error level: expected;
# alert, crit, emerg and crashes never.
sub behaviour {
    my ($name, @rest) = @_;
    my $code = pop @rest;
    my %o = @rest;
    subtest $name => sub {
        my $ok = nginx_running()
                 || nginx_start(http_config => $HTTP, config => $LOCATIONS,
                                workers => 2);
        ok $ok, 'nginx runs' or return;
        my $mark = error_log_mark();
        my $died = !eval { $code->(); 1 };
        my $err = $@;
        redis_back();
        fail("died: $err") if $died;
        my @errors = grep { /\[(error|crit|alert|emerg)\]/ }
                     split /\n/, error_log_since($mark);
        # For the record: the kinds of [error] lines, counted.
        my %kinds;
        $kinds{ s/^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?/[$1] /r }++
            for @errors;
        note(scalar(@errors) . ' [error] or worse lines in the error log'
             . join('', map { "\n  $kinds{$_} x $_" } sort keys %kinds));
        check_error_log(name => $name, since => $mark,
                        no_error_log => $o{no_error_log});
    };
}

sub is_json_int {
    my ($v) = @_;
    my $f = defined $v && !ref $v ? B::svref_2object(\$v)->FLAGS : 0;
    return defined $v && ($f & (B::SVp_IOK | B::SVp_NOK))
           && !($f & B::SVp_POK) && $v =~ /^\d+$/;
}

# 1, 2, 3, 5, 7, 8 -> "1-3, 5, 7-8"
sub ranges {
    my @n = sort { $a <=> $b } @_;
    my @r;
    for my $x (@n) {
        if (@r && $x == $r[-1][1] + 1) {
            $r[-1][1] = $x;
        } else {
            push @r, [$x, $x];
        }
    }
    my $s = join ', ', map { $_->[0] == $_->[1] ? $_->[0]
                                                : "$_->[0]-$_->[1]" } @r;
    return length $s > 300 ? substr($s, 0, 300) . '...' : $s;
}

# ---------------------------------------------------------------------------
# A device's view of the conversation: one socket, and what it was sent.
#
# {name, acct, ws, pid, synced (the synced event), sync (msgs of the
#  sync), got => {chat_id => [msg events, in arrival order]},
#  sent => {chat_id => {seq => id}} (the "sent" answers), nsent,
#  errors => [error events], other => [events of any other type]}

my %MSGS;       # chat_id => seq => what "sent" confirmed: {from, ..., text}

sub record {
    my ($d, $ev) = @_;
    my $t = $ev->{type};
    push @{ $d->{log} }, $ev
        unless $t eq 'receipt' || $t eq 'presence' || $t eq 'pong';
    if ($t eq 'msg') {
        push @{ $d->{got}{ $ev->{chat_id} // '' } }, $ev;
    } elsif ($t eq 'sent') {
        $d->{nsent}++;
        $d->{sent}{ $ev->{chat_id} }{ $ev->{seq} } = $ev->{id};
        my $p = $d->{pending}{ $ev->{id} } // {};
        $MSGS{ $ev->{chat_id} }{ $ev->{seq} } = {
            from => $d->{acct}{user_id}, from_device => $d->{acct}{device_id},
            id => $ev->{id}, text => $p->{text}, writer => $d->{name},
            n => $p->{n} };
    } elsif ($t eq 'error') {
        push @{ $d->{errors} }, $ev;
    } elsif ($t eq 'receipt' || $t eq 'presence' || $t eq 'pong') {
        # not what this file is about
    } else {
        push @{ $d->{other} }, $ev;
        $d->{dead} = 1 if $t eq '_eof' || $t eq '_close';
    }
}

# device($acct, $name, worker => pid): a socket of the account's device,
# read up to "synced" (one assertion). With worker, the socket goes to the
# reuseport server and is opened again (up to 30 times) until that worker
# holds it.
sub device {
    my ($acct, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($ws, $ready, $err, $pid);
    for my $try (1 .. ($o{worker} ? 30 : 1)) {
        ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token},
                                           timeout => $T,
                                           port => $o{worker} ? port2()
                                                              : port());
        last unless $ready;
        $pid = ws_worker_pid($ws);
        last if !$o{worker} || !defined $pid || $pid == $o{worker};
        $ws->close(1000);
        $ws->disconnect;
    }
    unless ($ready) {
        fail("$name: ready");
        diag("got $err");
        return undef;
    }
    my $d = { name => $name, acct => $acct, ws => $ws, pid => $pid,
              got => {}, sent => {}, nsent => 0, errors => [], other => [],
              pending => {}, ids => 0, sync => [], log => [] };
    while (1) {
        my $ev = ws_chat_event($ws, $T);
        if ($ev->{type} eq 'synced') {
            $d->{synced} = $ev;
            last;
        }
        if ($ev->{type} =~ /^_(timeout|eof|close)$/) {
            fail("$name: ready, then synced");
            diag('after ' . @{ $d->{sync} } . ' msgs of the sync: '
                 . ws_chat_show($ev)
                 . ($ev->{type} eq '_timeout' ? " (nothing for ${T}s)" : ''));
            return undef;
        }
        push @{ $d->{sync} }, $ev if $ev->{type} eq 'msg';
        record($d, $ev);
    }
    pass("$name: ready, then synced"
         . (defined $pid ? " (worker $pid)" : ''));
    return $d;
}

# Writes a send (without waiting); returns its id.
sub send_msg {
    my ($d, $chat, $text) = @_;
    my $n = ++$d->{ids};
    my $id = "$d->{name}-$n-" . int rand 1e6;
    $id =~ s/\s+/_/g;
    $d->{pending}{$id} = { text => $text // "$d->{name} says $n", n => $n };
    ws_chat_send($d->{ws}, id => $id, chat_id => $chat,
                 text => $d->{pending}{$id}{text});
    return $id;
}

# Reads every device's socket, recording what comes, until $done->() is
# true (returns 1), no event came for $o{quiet} (default $T) seconds, or
# $o{within} seconds passed (returns 0). Without $done: reads for
# $o{within} seconds. $o{tick}, if given, is called before every round
# (to write more while reading).
sub pump {
    my ($devs, $done, %o) = @_;
    my $quiet = $o{quiet} // $T;
    my $t0 = time;
    my $end = $t0 + ($o{within} // ($done ? 120 : 1));
    my $last = $t0;
    while (1) {
        $o{tick}->() if $o{tick};
        return 1 if $done && $done->();
        my $any = 0;
        for my $d (grep { !$_->{dead} } @$devs) {
            for (1 .. 1000) {
                my $ev = ws_chat_event($d->{ws}, 0.001);
                last if $ev->{type} eq '_timeout';
                $any = 1;
                record($d, $ev);
                last if $d->{dead};
            }
        }
        my $now = time;
        $last = $now if $any;
        return 0 if $now >= $end || $now - $last >= $quiet;
        next if $any;
        my @socks = map { $_->{ws}->socket } grep { !$_->{dead} } @$devs;
        @socks ? IO::Select->new(@socks)->can_read(0.05) : sleep 0.05;
    }
}

# Sends and waits for the answer, reading the other devices meanwhile;
# returns the seq.
sub send_ok {
    my ($d, $chat, $devs, $name, $text) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $id = send_msg($d, $chat, $text);
    my $before = @{ $d->{errors} };
    my $done = pump([$d, grep { $_ != $d } @$devs], sub {
        grep { $_ eq $id } values %{ $d->{sent}{$chat} || {} }
            or @{ $d->{errors} } > $before;
    });
    my ($seq) = grep { $d->{sent}{$chat}{$_} eq $id }
                keys %{ $d->{sent}{$chat} || {} };
    ok $done && defined $seq, "$name: sent"
        or diag('got ' . ($d->{errors}[-1] ? ws_chat_show($d->{errors}[-1])
                          : "nothing for ${T}s")
                . "; other events: "
                . join(', ', map { ws_chat_show($_) } @{ $d->{other} }));
    return $seq;
}

# The seqs of $chat the device sent itself ("sent" answers).
sub own_seqs {
    my ($d, $chat) = @_;
    return %{ $d->{sent}{$chat} || {} };
}

# A condition for pump: each device got or made every message of $chat up
# to $last (counting from its own first seq, $from{device name} or 1).
sub caught_up {
    my ($devs, $chat, $last, %from) = @_;
    return sub {
        !grep { my $d = $_;
                my %own = own_seqs($d, $chat);
                @{ $d->{got}{$chat} || [] } + keys(%own)
                < $last - ($from{ $d->{name} } // 1) + 1 } @$devs;
    };
}

# The device's stream in $chat: seqs strictly increasing, no duplicates,
# and with the device's own sends exactly $from..$last; text messages as
# their sender's "sent" confirmed them; system ones with an event.
sub stream_ok {
    my ($d, $chat, $last, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $from = $o{from} // 1;
    my @msgs = @{ $d->{got}{$chat} || [] };
    my @got = map { $_->{seq} // -1 } @msgs;
    my %own = own_seqs($d, $chat);

    my @back = map { "$got[$_ - 1] then $got[$_]" }
               grep { $got[$_] <= $got[$_ - 1] } 1 .. $#got;
    ok !@back, "$name: seqs strictly increasing (" . scalar(@got) . ' msgs)'
        or diag(join ', ', @back[0 .. min(9, $#back)]);

    my %n;
    $n{$_}++ for @got;
    my @dup = grep { $n{$_} > 1 } sort { $a <=> $b } keys %n;
    my @mine = grep { $own{$_} } sort { $a <=> $b } keys %n;
    ok !@dup && !@mine, "$name: no duplicates, none of its own sends"
        or diag('twice or more: ' . ranges(@dup)
                . '; its own sends, as msg: ' . ranges(@mine));

    my %all = (%n, %own);
    my @missing = grep { !$all{$_} } $from .. $last;
    my @extra = grep { $_ < $from || $_ > $last } keys %all;
    ok !@missing && !@extra,
       "$name: got or sent every seq $from..$last, nothing else"
        or diag('missing: ' . ranges(@missing) . '; outside the range: '
                . ranges(@extra) . '; arrival order: '
                . ranges_in_order(@got));

    my @wrong;
    for my $m (@msgs) {
        if (($m->{kind} // '') eq 'system') {
            push @wrong, 'system msg without event: ' . ws_chat_show($m)
                unless defined $m->{event};
            next;
        }
        my $w = $MSGS{$chat}{ $m->{seq} // '' };
        my @bad = !$w ? ('no "sent" gave this seq')
                : grep { ($m->{$_} // '') ne ($w->{$_} // '') }
                  qw(from from_device id text);
        push @bad, 'kind is not "text"' if ($m->{kind} // '') ne 'text';
        push @bad, 'ts is not an integer' unless is_json_int($m->{ts});
        push @wrong, join(', ', @bad) . ': ' . ws_chat_show($m) if @bad;
    }
    ok !@wrong, "$name: each msg carries what was sent"
        or diag(join "\n", @wrong[0 .. min(9, $#wrong)]);
}

# The seqs as they came, runs compressed: "1-5, 7, 6, 8-10".
sub ranges_in_order {
    my @r;
    for my $x (@_) {
        if (@r && $x == $r[-1][1] + 1) {
            $r[-1][1] = $x;
        } else {
            push @r, [$x, $x];
        }
    }
    my $s = join ', ', map { $_->[0] == $_->[1] ? $_->[0]
                                                : "$_->[0]-$_->[1]" } @r;
    return length $s > 400 ? substr($s, 0, 400) . '...' : $s;
}

# Nothing new (no msg, no error, nothing unexpected) within $secs.
sub quiet_ok {
    my ($devs, $secs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %before = map { $_ => scalar @{ $_->{log} } } @$devs;
    pump($devs, undef, within => $secs);
    for my $d (@$devs) {
        my @new = @{ $d->{log} }[$before{$d} .. $#{ $d->{log} }];
        ok !@new, "$name: $d->{name} gets nothing more in ${secs}s"
            or diag(join "\n", map { ws_chat_show($_) }
                                   @new[0 .. min(9, $#new)]);
    }
}

sub no_errors_ok {
    my ($devs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @e = map { my $d = $_; map { "$d->{name}: " . ws_chat_show($_) }
                                  @{ $d->{errors} }, @{ $d->{other} } }
            @$devs;
    ok !@e, "$name: no error nor unexpected event on any socket"
        or diag(join "\n", @e[0 .. min(9, $#e)]);
}

sub direct_chat {
    my ($x, $y) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $c = api_chat_create($x, { type => 'direct',
                                  user_id => $y->{user_id} },
                            name => "a direct chat $x->{name} - $y->{name}")
        or return undef;
    return $c->{chat_id};
}

sub group_chat {
    my ($owner, $title, @members) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $c = api_chat_create($owner, { type => 'group', title => $title,
                                      members => [map { $_->{user_id} }
                                                  @members] },
                            name => "a group '$title'")
        or return undef;
    return $c->{chat_id};
}

sub users {
    my @names = @_;
    my @u = map { api_signup(device_name => $_) } @names;
    return if grep { !$_ } @u;
    return @u;
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

# The scenario of both behaviours: $down->() takes Redis away, $up->()
# brings it back.
sub outage {
    my ($what, $down, $up) = @_;
    my ($ua, $ub, $uc) = users('A', 'B1', 'C') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $ub3 = api_link_device($ub, device_name => 'B3') or return;
    my $direct = direct_chat($ua, $ub) or return;
    my $g = group_chat($ua, 'outage', $ub, $uc) or return;

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
    sleep 0.3;
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


behaviour 'Redis stopped mid-conversation: sends are stored and answered; '
          . 'when it is back every socket reads back what it missed, in '
          . 'order, once; live delivery works again' => sub {
    outage('stops',
           sub { $REDIS = 'stopped'; redis_stop() },
           sub { my $ok = redis_start(); $REDIS = 'up' if $ok; $ok });
};

behaviour 'Redis hung (SIGSTOP) mid-conversation: sends are stored and '
          . 'answered; when it resumes every socket reads back what it '
          . 'missed, in order, once; live delivery works again' => sub {
    outage('hangs',
           sub { $REDIS = 'paused'; scalar redis_pause() },
           sub { my $n = redis_resume(); $REDIS = 'up'; $n });
};

nginx_stop();
done_testing();
