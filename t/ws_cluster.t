# Two hosts (PROTOCOL.md sections 4 and 5, issue 4 "How it is proven"):
# two nginx instances, each with two workers, sharing one PostgreSQL and
# one Redis (and one chat_redis_prefix: they are one deployment). Users
# spread over both get every message of a direct chat and a group once, in
# dense, strictly increasing seqs; four senders on the four workers of the
# two hosts hammering one group give every member all their messages in
# order (messages of one chat stored by different hosts reach a subscriber
# out of order: gap wait, then gap fill); a device that leaves host 1 and
# comes back on host 2 gets everything it is owed, in order, and what it
# acked there is never sent again on host 1.
#
#   scripts/test.sh t/ws_cluster.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use B ();
use IO::Select;
use List::Util qw(min);
use Time::HiRes qw(time sleep);

plan skip_all => 'CHAT_PG_DSN and CHAT_REDIS are not set (run me through '
                 . 'scripts/test.sh)'
    unless $ENV{CHAT_PG_DSN} && $ENV{CHAT_REDIS};

# PostgreSQL and Redis outlive this file: a prefix of our own (the same on
# both hosts), and new users (random_mobile) in every behaviour.
my $PREFIX = "t_ws_cluster_$$:";

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END

# On each host a second server on its port2 with reuseport: each worker has
# a listening socket of its own there, so sockets can be placed on either
# worker. $TEST_NGINX_PORT2 is each instance's own.
my $HTTP = <<"END";
chat_postgres "\$TEST_NGINX_PG_DSN";
chat_redis \$TEST_NGINX_REDIS;
chat_dev_codes on;
chat_redis_prefix "$PREFIX";

server {
    listen 127.0.0.1:\$TEST_NGINX_PORT2 reuseport;
$LOCATIONS
}
END

my $T = 10;         # no event for this long ends a wait, in seconds

END {
    nginx_stop() if nginx_running();
    nginx2_stop(no_check => 1) if nginx2_running();
}

sub hosts_up {
    my $ok = nginx_running()
             || nginx_start(http_config => $HTTP, config => $LOCATIONS,
                            workers => 2);
    ok $ok, 'host 1 (nginx 1) runs' or return 0;
    $ok = nginx2_running()
          || nginx2_start(http_config => $HTTP, config => $LOCATIONS,
                          workers => 2);
    ok $ok, 'host 2 (nginx 2) runs' or return 0;
    return 1;
}

sub behaviour {
    my ($name, @rest) = @_;
    my $code = pop @rest;
    my %o = @rest;
    subtest $name => sub {
        hosts_up() or return;
        my $mark1 = error_log_mark();
        my $mark2 = with_nginx2(sub { error_log_mark() });
        $code->();
        check_error_log(name => "$name (host 1)", since => $mark1,
                        no_error_log => $o{no_error_log} // ['[error]']);
        with_nginx2(sub {
            check_error_log(name => "$name (host 2)", since => $mark2,
                            no_error_log => $o{no_error_log} // ['[error]']);
        });
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

sub host_port {
    my ($host, $reuse) = @_;
    return $host == 2 ? ($reuse ? nginx2_port2() : nginx2_port())
                      : ($reuse ? port2() : port());
}

sub host_workers {
    my ($host) = @_;
    return $host == 2 ? with_nginx2(sub { nginx_worker_pids() })
                      : nginx_worker_pids();
}

sub host_pid_of {
    my ($host, $ws) = @_;
    return $host == 2 ? with_nginx2(sub { ws_worker_pid($ws) })
                      : ws_worker_pid($ws);
}


# ---------------------------------------------------------------------------
# A device's view of the conversation: one socket, and what it was sent.
#
# {name, acct, host, ws, pid, synced (the synced event), sync (msgs of the
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

# device($acct, $name, host => 1|2, worker => pid): a socket of the
# account's device on that host, read up to "synced" (one assertion). With
# worker, the socket goes to the host's reuseport server and is opened again
# (up to 30 times) until that worker holds it.
sub device {
    my ($acct, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $host = $o{host} // 1;
    my ($ws, $ready, $err, $pid);
    for my $try (1 .. ($o{worker} ? 30 : 1)) {
        ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token},
                                           timeout => $T,
                                           port => host_port($host,
                                                             $o{worker}));
        last unless $ready;
        $pid = host_pid_of($host, $ws);
        last if !$o{worker} || !defined $pid || $pid == $o{worker};
        $ws->close(1000);
        $ws->disconnect;
    }
    unless ($ready) {
        fail("$name: ready (host $host)");
        diag("got $err");
        return undef;
    }
    my $d = { name => $name, acct => $acct, host => $host, ws => $ws,
              pid => $pid, got => {}, sent => {}, nsent => 0, errors => [],
              other => [], pending => {}, ids => 0, sync => [], log => [] };
    while (1) {
        my $ev = ws_chat_event($ws, $T);
        if ($ev->{type} eq 'synced') {
            $d->{synced} = $ev;
            last;
        }
        if ($ev->{type} =~ /^_(timeout|eof|close)$/) {
            fail("$name: ready, then synced (host $host)");
            diag('after ' . @{ $d->{sync} } . ' msgs of the sync: '
                 . ws_chat_show($ev)
                 . ($ev->{type} eq '_timeout' ? " (nothing for ${T}s)" : ''));
            return undef;
        }
        push @{ $d->{sync} }, $ev if $ev->{type} eq 'msg';
        record($d, $ev);
    }
    pass("$name: ready, then synced (host $host"
         . (defined $pid ? ", worker $pid" : '') . ')');
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

sub ack {
    my ($d, $chat, $seq) = @_;
    $d->{ws}->send_json({ type => 'ack', chat_id => $chat, seq => 0 + $seq });
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

# The msg of $chat with this seq that $d got, if any.
sub got_seq {
    my ($d, $chat, $seq) = @_;
    my ($m) = grep { ($_->{seq} // -1) == $seq } @{ $d->{got}{$chat} || [] };
    return $m;
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

# What the device got, as "seq kind/event id" strings, for exact checks.
sub got_list {
    my ($d, $chat) = @_;
    return [map { join ' ', $_->{seq} // '?',
                  ($_->{kind} // '?') eq 'system' ? "system/"
                      . ($_->{event} // '?') : ($_->{id} // '?') }
            @{ $d->{got}{$chat} || [] }];
}

# The same list expected from %MSGS for seqs @s ('system/<event>' for the
# system messages given in %sys).
sub want_list {
    my ($chat, $sys, @s) = @_;
    return [map { $sys->{$_} ? "$_ system/$sys->{$_}"
                             : "$_ " . ($MSGS{$chat}{$_}{id} // '?') } @s];
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

# A clean close: close 1000, the server's close frame, then TCP closed.
sub hang_up {
    my ($d) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ws = $d->{ws};
    $ws->close(1000);
    my $ev;
    while (1) {
        $ev = ws_chat_event($ws, $T);
        last if $ev->{type} =~ /^_/;
        record($d, $ev);
    }
    ok $ev->{type} eq '_close' && ($ev->{code} // 0) == 1000,
       "$d->{name} closes: close 1000 comes back"
        or diag('got ' . ws_chat_show($ev));
    ok $ws->wait_eof($T), "$d->{name} closes: the server closes TCP";
    $ws->disconnect;
    $d->{dead} = 1;
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
    my ($x, $y, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $c = api_chat_create($x, { type => 'direct',
                                  user_id => $y->{user_id} },
                            name => "a direct chat $x->{name} - $y->{name}"
                                    . ($o{port} ? ' (host 2)' : ''),
                            (port => $o{port}) x !!$o{port})
        or return undef;
    return $c->{chat_id};
}

sub group_chat {
    my ($owner, $title, $members, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $c = api_chat_create($owner, { type => 'group', title => $title,
                                      members => [map { $_->{user_id} }
                                                  @$members] },
                            name => "a group '$title'"
                                    . ($o{port} ? ' (host 2)' : ''),
                            (port => $o{port}) x !!$o{port})
        or return undef;
    return $c->{chat_id};
}

# Users signed up alternately through host 1 and host 2.
sub users {
    my @names = @_;
    my $i = 0;
    my @u = map { api_signup(device_name => $_,
                             ($i++ % 2 ? (port => nginx2_port()) : ())) }
            @names;
    return if grep { !$_ } @u;
    return @u;
}

sub where {
    my ($d) = @_;
    return "host $d->{host}" . (defined $d->{pid} ? " worker $d->{pid}" : '');
}


behaviour 'spread over two hosts: A on host 1, A\'s second device and B on '
          . 'host 2, C on host 1; in a direct chat and a group every '
          . 'device gets everything the others send, once, dense' => sub {
    my ($ua, $ub, $uc) = users('A', 'B', 'C') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2',
                              port => nginx2_port()) or return;
    my $da = device($ua, 'A', host => 1) or return;
    my $da2 = device($ua2, 'A2', host => 2) or return;
    my $db = device($ub, 'B', host => 2) or return;
    my $dc = device($uc, 'C', host => 1) or return;
    my @all = ($da, $da2, $db, $dc);

    # The direct chat, created on host 2.
    my $direct = direct_chat($ub, $ua, port => nginx2_port()) or return;
    my @pair = ($da, $da2, $db);
    my @order = ($da, $db, $da2, $db, $db, $da, $da2, $da, $db);
    my $n = 0;
    for my $s (@order) {
        $n++;
        my $seq = send_ok($s, $direct, \@all,
                          "direct $n from $s->{name} (" . where($s) . ')')
            or return;
        is $seq, $n, "direct $n: seq $n";
        ok pump(\@all, caught_up(\@pair, $direct, $n)),
           "direct $n reaches the other two devices, live";
    }
    quiet_ok(\@all, 1, 'after the direct chat');
    for my $d (@pair) {
        my @want = grep { $MSGS{$direct}{$_}{writer} ne $d->{name} } 1 .. $n;
        is_deeply got_list($d, $direct), want_list($direct, {}, @want),
                  "$d->{name} got the others' messages in order";
        stream_ok($d, $direct, $n, "$d->{name} in the direct chat ("
                                   . where($d) . ')');
    }
    is_deeply got_list($dc, $direct), [], 'C got nothing of it';

    # The group, created on host 1: created, then two rounds, then a burst
    # from every device at once.
    my $g = group_chat($ua, 'spread', [$ub, $uc]) or return;
    ok pump(\@all, caught_up(\@all, $g, 1)),
       'every device of every member gets the group\'s seq 1';
    is_deeply got_list($_, $g), ['1 system/created'],
              "$_->{name}: seq 1 is created" for @all;
    my $seq = 1;
    for my $round (1, 2) {
        for my $s (@all) {
            my $got = send_ok($s, $g, \@all, "group round $round: "
                                             . "$s->{name}") or return;
            is $got, ++$seq, "group round $round, $s->{name}: seq $seq";
        }
    }
    for my $k (1 .. 5) {
        send_msg($_, $g, "burst $k from $_->{name}") for @all;
    }
    my $last = $seq + 5 * @all;
    my $in_g = caught_up(\@all, $g, $last);
    ok pump(\@all, sub {
        !grep { keys(%{ $_->{sent}{$g} || {} }) + @{ $_->{errors} } < 7 }
            @all and $in_g->();
    }), "every send answered; every device has the group's 1..$last";
    quiet_ok(\@all, 1, 'after the group');
    stream_ok($_, $g, $last, "$_->{name} in the group (" . where($_) . ')')
        for @all;
    no_errors_ok(\@all, 'spread');
};

behaviour 'concurrency across hosts: 4 senders, one on each worker of each '
          . 'host, write 100 messages each with 16 unanswered at most to '
          . 'one group of 6; every member gets all 401, dense, strictly '
          . 'increasing, once' => sub {
    my @u = users(qw(S1 S2 S3 S4 R1 R2)) or return;
    my @w1 = host_workers(1);
    my @w2 = host_workers(2);
    my @place = ([1, $w1[0]], [1, $w1[1]], [2, $w2[0]], [2, $w2[1]],
                 [1, $w1[1]], [2, $w2[0]]);
    my @d;
    for my $i (0 .. $#u) {
        my $d = device($u[$i], $u[$i]{name}, host => $place[$i][0],
                       worker => $place[$i][1]) or return;
        push @d, $d;
    }
    my %on;
    $on{"host $_->{host} worker " . ($_->{pid} // '?')}++ for @d[0 .. 3];
    if (grep { !defined $_->{pid} } @d) {
        diag('cannot map sockets to workers through /proc; cannot prove '
             . 'that the senders are on four workers');
    } else {
        is scalar(keys %on), 4, 'the four senders are on four workers ('
           . join(', ', sort keys %on) . ')';
    }
    my @senders = @d[0 .. 3];
    my @receivers = @d[4, 5];
    my $g = group_chat($u[0], 'hammered across hosts', [@u[1 .. 5]])
        or return;
    ok pump(\@d, caught_up(\@d, $g, 1)),
       'all six have the group\'s seq 1 (created)';

    my $N = 100;
    my $WINDOW = 16;
    my $total = 1 + 4 * $N;
    my %written = map { $_ => 0 } @senders;
    my $tick = sub {
        for my $s (@senders) {
            my $answered = $s->{nsent} + @{ $s->{errors} };
            while ($written{$s} < $N && $written{$s} - $answered < $WINDOW) {
                send_msg($s, $g, "$s->{name} #" . ($written{$s} + 1)
                                 . ' ' . int(time * 1000));
                $written{$s}++;
            }
        }
    };
    my $all = caught_up(\@d, $g, $total);
    my $t0 = time;
    my $done = pump(\@d, sub {
        !grep { $_->{nsent} + @{ $_->{errors} } < $N } @senders
            and $all->();
    }, tick => $tick, within => 180);
    ok $done, sprintf('all %d sends answered and delivered (%.1fs)',
                      4 * $N, time - $t0)
        or diag(join '; ', map {
                    "$_->{name}: wrote " . ($written{$_} // 0)
                    . ", sent $_->{nsent}, got "
                    . scalar(@{ $_->{got}{$g} || [] }) } @d);
    quiet_ok(\@d, 1, 'then');
    for my $d (@d) {
        stream_ok($d, $g, $total, "$d->{name} (" . where($d) . ')');
    }
    is scalar(@{ $_->{got}{$g} || [] }), $total,
       "$_->{name} got $total msgs: 400 texts and 'created'"
        for @receivers;
    for my $s (@senders) {
        my @n = map { $MSGS{$g}{$_}{n} }
                sort { $a <=> $b } keys %{ $s->{sent}{$g} || {} };
        is "@n", join(' ', 1 .. $N),
           "$s->{name}'s messages are in the order it wrote them";
    }
    # How often the chat's seqs alternated between hosts: evidence that
    # the two hosts really stored into the chat concurrently.
    my ($switches, $prev) = (0, 0);
    for my $s (2 .. $total) {
        my $w = $MSGS{$g}{$s}{writer} // next;
        my $h = $w =~ /^S[12]$/ ? 1 : 2;
        $switches++ if $prev && $h != $prev;
        $prev = $h;
    }
    ok $switches >= 10, "the hosts' messages interleave in the chat's "
                        . "order ($switches switches between hosts)";
    no_errors_ok(\@d, 'concurrency across hosts');
};

behaviour 'a device offline on host 1 comes back on host 2: it gets '
          . 'everything owed, in order per chat, then live messages; what '
          . 'it acked on host 2 never comes again on host 1' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2') or return;
    my $da = device($ua, 'A', host => 1) or return;
    my $da2 = device($ua2, 'A2', host => 2) or return;
    my $db = device($ub, 'B', host => 1) or return;
    my $g = group_chat($ua, 'away', [$ub]) or return;
    my $direct = direct_chat($ua, $ub) or return;
    my @devs = ($da, $da2, $db);
    ok pump(\@devs, caught_up(\@devs, $g, 1)), 'all have created';
    send_ok($da, $g, \@devs, "A: group $_ (B on host 1)") or return
        for 1 .. 2;
    ok pump(\@devs, caught_up(\@devs, $g, 3)), 'B has 1..3 live on host 1';
    ack($db, $g, 3);
    hang_up($db);

    # Away: both hosts store messages for B in both chats.
    my @live = ($da, $da2);
    send_ok($da, $g, \@live, 'A on host 1: group, B away') or return;      # 4
    send_ok($da2, $g, \@live, 'A2 on host 2: group, B away') or return;    # 5
    send_ok($da2, $direct, \@live, 'A2 on host 2: direct 1') or return;
    my $r = api_request(PATCH => "/v1/chats/$g", token => $ua2->{token},
                        body => { title => 'renamed on host 2' },
                        port => nginx2_port());
    api_ok($r, 200, 'A renames the group through host 2') or return;       # 6
    send_ok($da, $direct, \@live, 'A on host 1: direct 2') or return;
    send_ok($da, $g, \@live, 'A on host 1: group, B away') or return;      # 7
    send_ok($da2, $g, \@live, 'A2 on host 2: group, B away') or return;    # 8
    send_ok($da2, $direct, \@live, 'A2 on host 2: direct 3') or return;
    ok pump(\@live, sub { caught_up(\@live, $g, 8)->()
                          && caught_up(\@live, $direct, 3)->() }),
       "A and A2 have each other's messages";

    $db = device($ub, 'B back on host 2', host => 2) or return;
    my %per;
    push @{ $per{ $_->{chat_id} } }, $_ for @{ $db->{sync} };
    is_deeply [map { "$_->{seq} " . ($_->{id} // "system/$_->{event}") }
               @{ $per{$g} || [] }],
              want_list($g, { 6 => 'renamed' }, 4 .. 8),
              'the sync brings the group\'s 4..8 in order (6: renamed)';
    is_deeply [map { "$_->{seq} " . ($_->{id} // '?') }
               @{ $per{$direct} || [] }],
              want_list($direct, {}, 1 .. 3),
              'the sync brings the direct chat\'s 1..3 in order';
    is $db->{synced}{count}, 8, 'synced count 8';
    stream_ok($db, $g, 8, 'B back, group', from => 4);
    stream_ok($db, $direct, 3, 'B back, direct');

    @devs = ($da, $da2, $db);
    send_ok($da, $g, \@devs, 'A on host 1 sends while B is on host 2')
        or return;                                                         # 9
    ok pump(\@devs, sub { got_seq($db, $g, 9) }),
       'B on host 2 gets it live';
    send_ok($db, $direct, \@devs, 'B on host 2 answers in the direct chat')
        or return;                                                         # 4
    ok pump(\@devs, caught_up([$da, $da2], $direct, 4)),
       'A (host 1) and A2 (host 2) get B\'s answer';
    stream_ok($db, $g, 9, 'B on host 2, group', from => 4);
    stream_ok($_, $direct, 4, "$_->{name}, direct") for $da, $da2;
    ack($db, $g, 9);
    ack($db, $direct, 3);
    hang_up($db);

    $db = device($ub, 'B on host 1 again', host => 1) or return;
    is $db->{synced}{count}, 0, 'acked on host 2: synced count 0 on host 1';
    is join(', ', map { ($_->{chat_id} eq $g ? 'group' : 'direct')
                        . " $_->{seq}" } @{ $db->{sync} }), '',
       '... and no msg';
    @devs = ($da, $da2, $db);
    send_ok($da2, $g, \@devs, 'A2 on host 2 sends') or return;             # 10
    ok pump(\@devs, sub { got_seq($db, $g, 10) }),
       'B on host 1 gets it live';
    quiet_ok(\@devs, 1, 'then');
    is_deeply [map { $_->{seq} } @{ $db->{got}{$g} || [] }], [10],
              'B on host 1: only seq 10 in the group';
    no_errors_ok(\@devs, 'offline across hosts');
};

nginx_stop();
nginx2_stop();
done_testing();
