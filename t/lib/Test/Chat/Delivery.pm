package Test::Chat::Delivery;

# What the delivery suites (ws_delivery.t, ws_cluster.t, ws_receipts.t,
# ws_presence.t, ws_redis_outage.t...) share: devices that record what their
# socket is sent, a reader over many sockets, the checks of a device's
# stream and of presence events; and what most chat suites share: the
# http_config, the locations and a subtest on a running nginx (or two
# hosts). POD at the end.

use strict;
use warnings;

use Carp ();
use Exporter qw(import);
use File::Basename ();
use JSON::PP ();
use IO::Select;
use List::Util qw(min);
use Test::More ();
use Time::HiRes qw(time sleep);

use Test::Chat::JSON qw(json_type is_json_int now_ms);

# No import: Test::Chat::Nginx's import names the package its data-driven
# blocks run in, and that is the suite's, not this one.
use Test::Chat::Nginx ();

BEGIN {
    no strict 'refs';
    *{$_} = \&{"Test::Chat::Nginx::$_"}
        for qw(port port2 nginx_start nginx_running error_log_mark
               check_error_log with_nginx2 nginx2_port nginx2_port2
               nginx2_start
               nginx_worker_pids ws_chat_auth ws_chat_event ws_chat_send
               ws_chat_show ws_worker_pid api_chat_create api_signup
               api_request api_ok);
}

our @EXPORT_OK;
our %EXPORT_TAGS = (
    serve => [qw(chat_http_config chat_locations serve behaviour)],
    devices => [qw(%MSGS $T device record send_msg ack pump send_ok
                   got_seq own_seqs caught_up got_list want_list stream_ok
                   sends_in_order_ok quiet_ok hang_up no_errors_ok ranges
                   ranges_in_order direct_chat group_chat users
                   users_across_hosts who host_port host_workers spread
                   alive settle error_ok set_privacy presences_of
                   profiles_of presence_ok show_presences)],
);
@EXPORT_OK = do { my %s; grep { !$s{$_}++ } map { @$_ } values %EXPORT_TAGS };
$EXPORT_TAGS{all} = [@EXPORT_OK];

our $T = 10;        # no event for this long ends a wait, in seconds


# ---------------------------------------------------------------------------
# nginx.

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END

sub chat_locations { $LOCATIONS }

# PostgreSQL and Redis outlive a suite: by default a Redis prefix of the
# suite's own, "t_<suite>_<pid>:".
sub chat_http_config {
    my (%o) = @_;
    my $prefix = $o{prefix}
                 // 't_' . File::Basename::basename($0, '.t') . "_$$:";
    my $c = <<"END" . ($o{extra} // '');
chat_postgres "\$TEST_NGINX_PG_DSN";
chat_redis \$TEST_NGINX_REDIS;
chat_dev_codes on;
chat_redis_prefix "$prefix";
END
    $c .= <<"END" if $o{port2};

server {
    listen 127.0.0.1:\$TEST_NGINX_PORT2 reuseport;
${\ ($o{locations} // $LOCATIONS)}
}
END
    return $c;
}

my %DEFAULTS;
my %STARTED;        # host => the configuration it runs

# The sub's value, with Test::Chat::Nginx pointed at host 1 or 2.
sub _on_host {
    my ($host, $code) = @_;
    return $host == 2 ? with_nginx2($code) : $code->();
}

sub serve {
    my (%c) = @_;
    if (delete $c{defaults}) {
        %DEFAULTS = %c;
        return 1;
    }
    my $host = delete $c{host} // 1;
    %c = (%DEFAULTS, %c);
    defined $c{http_config} or Carp::croak('serve: no http_config');
    $c{config} //= $LOCATIONS;
    $c{workers} //= 2;
    my $key = join "\0", map { "$_=$c{$_}" } sort keys %c;
    return 1 if ($STARTED{$host} // '') eq $key
                && _on_host($host, sub { nginx_running() });
    $STARTED{$host} = '';
    ($host == 2 ? nginx2_start(%c) : nginx_start(%c)) or return 0;
    $STARTED{$host} = $key;
    return 1;
}

sub behaviour {
    my ($name, @rest) = @_;
    my $code = pop @rest;
    my %o = @rest;
    my @hosts = 1 .. ($o{hosts} // 1);
    Test::More::subtest($name => sub {
        for my $h (@hosts) {
            my $ok = serve(%{ $o{nginx} || {} }, host => $h);
            if (@hosts > 1) {
                Test::More::ok($ok, "host $h (nginx $h) runs") or return;
            } elsif (!$ok) {
                Test::More::fail('nginx starts');
                return;
            }
        }
        my %mark = map { my $h = $_; ($h => _on_host($h, sub {
                                          error_log_mark() })) } @hosts;
        $code->();
        for my $h (@hosts) {
            _on_host($h, sub {
                check_error_log(name => @hosts > 1 ? "$name (host $h)"
                                                   : $name,
                                since => $mark{$h},
                                error_log => $h == 1 ? $o{error_log}
                                                     : undef,
                                no_error_log => $o{no_error_log}
                                                // ['[error]']);
            });
        }
    });
}


# ---------------------------------------------------------------------------
# Small things.

sub _runs {
    my ($max, @n) = @_;
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
    return length $s > $max ? substr($s, 0, $max) . '...' : $s;
}

sub ranges { _runs(300, sort { $a <=> $b } @_) }

sub ranges_in_order { _runs(400, @_) }

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

sub _host_pid_of {
    my ($host, $ws) = @_;
    return $host == 2 ? with_nginx2(sub { ws_worker_pid($ws) })
                      : ws_worker_pid($ws);
}


# ---------------------------------------------------------------------------
# Devices.

our %MSGS;      # chat_id => seq => what "sent" confirmed: {from, ..., text}
my %SYSTEM;     # chat_id => seq => from_device of a system message seen

sub record {
    my ($d, $ev) = @_;
    my $t = $ev->{type};
    my %kept = (receipt => 'receipts', presence => 'presences',
                profile => 'profiles');
    push @{ $d->{log} }, $ev
        unless $kept{$t} || $t eq 'pong';
    if ($t eq 'msg') {
        push @{ $d->{got}{ $ev->{chat_id} // '' } }, $ev;
        $SYSTEM{ $ev->{chat_id} }{ $ev->{seq} } = $ev->{from_device} // ''
            if ($ev->{kind} // '') eq 'system' && defined $ev->{seq};
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
    } elsif ($kept{$t}) {
        # in $d->{receipts}, $d->{presences} and $d->{profiles} for the
        # suites about them, with the JSON types of the fields as decoded
        # (_types), whether it came before "synced" (_sync), and when (_at)
        $ev->{_types} = { map { $_ => json_type($ev->{$_}) } keys %$ev };
        $ev->{_sync} = $d->{synced} ? 0 : 1;
        $ev->{_at} = time;
        push @{ $d->{ $kept{$t} } }, $ev;
    } elsif ($t eq 'pong') {
        # not what these suites are about
    } else {
        push @{ $d->{other} }, $ev;
        $d->{dead} = 1 if $t eq '_eof' || $t eq '_close';
    }
}

sub device {
    my ($acct, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $host = $o{host};
    my $at = defined $host ? " (host $host)" : '';
    my ($ws, $ready, $err, $pid);
    for my $try (1 .. ($o{worker} ? 30 : 1)) {
        my $p = $o{port} // (defined $host ? host_port($host, $o{worker})
                             : $o{worker} ? port2() : port());
        ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token},
                                           timeout => $T, port => $p);
        last unless $ready;
        $pid = _host_pid_of($host // 1, $ws);
        last if !$o{worker} || !defined $pid || $pid == $o{worker};
        $ws->close(1000);
        $ws->disconnect;
    }
    unless ($ready) {
        Test::More::fail("$name: ready$at");
        Test::More::diag("got $err");
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
            Test::More::fail("$name: ready, then synced$at");
            Test::More::diag('after ' . @{ $d->{sync} } . ' msgs of the '
                             . 'sync: ' . ws_chat_show($ev)
                             . ($ev->{type} eq '_timeout'
                                ? " (nothing for ${T}s)" : ''));
            return undef;
        }
        push @{ $d->{sync} }, $ev if $ev->{type} eq 'msg';
        record($d, $ev);
    }
    my $where = defined $host
              ? " (host $host" . (defined $pid ? ", worker $pid" : '') . ')'
              : $o{worker} && defined $pid ? " (worker $pid)" : '';
    Test::More::pass("$name: ready, then synced$where");
    return $d;
}

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
    Test::More::ok($done && defined $seq, "$name: sent")
        or Test::More::diag('got ' . ($d->{errors}[-1]
                                      ? ws_chat_show($d->{errors}[-1])
                                      : "nothing for ${T}s")
                            . "; other events: "
                            . join(', ', map { ws_chat_show($_) }
                                             @{ $d->{other} }));
    return $seq;
}

sub got_seq {
    my ($d, $chat, $seq) = @_;
    my ($m) = grep { ($_->{seq} // -1) == $seq } @{ $d->{got}{$chat} || [] };
    return $m;
}

sub own_seqs {
    my ($d, $chat) = @_;
    my $dev = $d->{acct}{device_id};
    my $sys = $SYSTEM{$chat} || {};
    return (%{ $d->{sent}{$chat} || {} },
            map { $_ => 'system' } grep { $sys->{$_} eq $dev } keys %$sys);
}

sub caught_up {
    my ($devs, $chat, $last, %from) = @_;
    return sub {
        !grep { my $d = $_;
                my %own = own_seqs($d, $chat);
                @{ $d->{got}{$chat} || [] } + keys(%own)
                < $last - ($from{ $d->{name} } // 1) + 1 } @$devs;
    };
}

sub got_list {
    my ($d, $chat) = @_;
    return [map { join ' ', $_->{seq} // '?',
                  ($_->{kind} // '?') eq 'system' ? "system/"
                      . ($_->{event} // '?') : ($_->{id} // '?') }
            @{ $d->{got}{$chat} || [] }];
}

sub want_list {
    my ($chat, $sys, @s) = @_;
    return [map { $sys->{$_} ? "$_ system/$sys->{$_}"
                             : "$_ " . ($MSGS{$chat}{$_}{id} // '?') } @s];
}

sub stream_ok {
    my ($d, $chat, $last, $name, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $from = $o{from} // 1;
    my @msgs = @{ $d->{got}{$chat} || [] };
    my @got = map { $_->{seq} // -1 } @msgs;
    my %own = own_seqs($d, $chat);

    my @back = map { "$got[$_ - 1] then $got[$_]" }
               grep { $got[$_] <= $got[$_ - 1] } 1 .. $#got;
    Test::More::ok(!@back, "$name: seqs strictly increasing ("
                           . scalar(@got) . ' msgs)')
        or Test::More::diag(join ', ', @back[0 .. min(9, $#back)]);

    my %n;
    $n{$_}++ for @got;
    my @dup = grep { $n{$_} > 1 } sort { $a <=> $b } keys %n;
    my @mine = grep { $own{$_} } sort { $a <=> $b } keys %n;
    Test::More::ok(!@dup && !@mine,
                   "$name: no duplicates, none of its own sends")
        or Test::More::diag('twice or more: ' . ranges(@dup)
                            . '; its own sends (or system messages), as '
                            . 'msg: ' . ranges(@mine));

    my %all = (%n, %own);
    my @missing = grep { !$all{$_} } $from .. $last;
    my @extra = grep { $_ < $from || $_ > $last } keys %all;
    Test::More::ok(!@missing && !@extra,
                   "$name: got or sent every seq $from..$last, nothing else")
        or Test::More::diag('missing: ' . ranges(@missing)
                            . '; outside the range: ' . ranges(@extra)
                            . '; arrival order: ' . ranges_in_order(@got));

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
    Test::More::ok(!@wrong, "$name: each msg carries what was sent")
        or Test::More::diag(join "\n", @wrong[0 .. min(9, $#wrong)]);
}

sub sends_in_order_ok {
    my ($chat, $n, @senders) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    for my $s (@senders) {
        my @n = map { $MSGS{$chat}{$_}{n} }
                sort { $a <=> $b } keys %{ $s->{sent}{$chat} || {} };
        Test::More::is("@n", join(' ', 1 .. $n),
                       "$s->{name}'s messages are in the order it wrote them");
    }
}

sub quiet_ok {
    my ($devs, $secs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %before = map { $_ => scalar @{ $_->{log} } } @$devs;
    pump($devs, undef, within => $secs);
    for my $d (@$devs) {
        my @new = @{ $d->{log} }[$before{$d} .. $#{ $d->{log} }];
        Test::More::ok(!@new, "$name: $d->{name} gets nothing more in "
                              . "${secs}s")
            or Test::More::diag(join "\n", map { ws_chat_show($_) }
                                               @new[0 .. min(9, $#new)]);
    }
}

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
    Test::More::ok($ev->{type} eq '_close' && ($ev->{code} // 0) == 1000,
                   "$d->{name} closes: close 1000 comes back")
        or Test::More::diag('got ' . ws_chat_show($ev));
    Test::More::ok($ws->wait_eof($T),
                   "$d->{name} closes: the server closes TCP");
    $ws->disconnect;
    $d->{dead} = 1;
}

sub no_errors_ok {
    my ($devs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @e = map { my $d = $_; map { "$d->{name}: " . ws_chat_show($_) }
                                  @{ $d->{errors} }, @{ $d->{other} } }
            @$devs;
    Test::More::ok(!@e, "$name: no error nor unexpected event on any socket")
        or Test::More::diag(join "\n", @e[0 .. min(9, $#e)]);
}

sub spread {
    my (@accts) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @w = nginx_worker_pids();
    my @d;
    for my $i (0 .. $#accts) {
        my $d = device($accts[$i], $accts[$i]{name}, port => port2(),
                       worker => $w[$i % 2]) or return;
        push @d, $d;
    }
    my %on;
    $on{ $_->{pid} // 'unknown' }++ for @d;
    if ($on{unknown}) {
        Test::More::diag('cannot map sockets to workers through /proc; '
                         . 'cannot prove that both workers hold sockets');
    } else {
        Test::More::is(scalar(keys %on), 2, 'the sockets are on both '
                       . 'workers (' . join(', ', map { "$_: $on{$_}" }
                                                  sort keys %on) . ')');
    }
    return @d;
}

sub alive {
    my %seen;
    return [grep { $_ && !$_->{dead} && !$seen{$_}++ } @_];
}

sub settle {
    my ($devs, $secs) = @_;
    pump(alive(@$devs), undef, within => $secs);
}

sub error_ok {
    my ($devs, $d, $msg, $code, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $n = @{ $d->{errors} };
    $d->{ws}->send_json($msg);
    pump(alive(@$devs, $d), sub { @{ $d->{errors} } > $n || $d->{dead} },
         within => 5, quiet => 5);
    my $e = $d->{errors}[$n];
    Test::More::ok($e && ($e->{code} // '') eq $code && !$d->{dead},
                   "$name: {\"type\":\"error\",\"code\":\"$code\"}, the "
                   . 'socket stays open')
        or Test::More::diag('got ' . ws_chat_show($e)
                            . ($d->{dead} ? '; the socket closed' : '')
                            . '; other: ' . join(', ', map { ws_chat_show($_) }
                                                      @{ $d->{other} }));
}


# ---------------------------------------------------------------------------
# Presence and profiles.

sub set_privacy {
    my ($acct, $body, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = api_request(PATCH => '/v1/me/privacy', token => $acct->{token},
                        body => $body);
    return api_ok($r, 200, $name) ? $r : undef;
}

sub _about {
    my ($kind, $d, $u, $from) = @_;
    my @e = grep { ($_->{user_id} // '') eq $u->{user_id} }
            @{ $d->{$kind} || [] };
    @e = @e[($from // 0) .. $#e];
    return @e;          # in scalar context: how many
}

sub presences_of { _about(presences => @_) }

sub profiles_of { _about(profiles => @_) }

sub show_presences {
    my ($d) = @_;
    my @p = @{ $d->{presences} || [] };
    return "$d->{name} got no presence" unless @p;
    my $t0 = $p[0]{_at};
    return "$d->{name} got:\n" . join "\n", map {
        sprintf '  +%.2fs %s (%s)', $_->{_at} - $t0, ws_chat_show($_),
                who($_->{user_id}) } @p;
}

# What is wrong with $ev as the presence of $u (see presence_ok).
sub _presence_wrong {
    my ($ev, $u, $online, $ls) = @_;
    return "no presence event about $u->{name}" unless ref $ev eq 'HASH';
    my @why;
    push @why, 'type is not "presence"'
        unless ($ev->{type} // '') eq 'presence';
    my $t = $ev->{_types}
            // { map { $_ => json_type($ev->{$_}) } keys %$ev };
    push @why, "user_id is not the string of $u->{name}"
        unless ($t->{user_id} // '') eq 'string'
               && $ev->{user_id} eq $u->{user_id};
    push @why, 'online is not a JSON boolean'
        unless ($t->{online} // '') eq 'bool';
    push @why, 'online is not ' . ($online ? 'true' : 'false')
        unless ($ev->{online} ? 1 : 0) == ($online ? 1 : 0);
    if (!exists $ev->{last_seen}) {
        push @why, 'no last_seen field';
    } elsif (!defined $ls) {
        push @why, 'last_seen is not null' if defined $ev->{last_seen};
    } elsif (($t->{last_seen} // '') ne 'int') {
        push @why, "last_seen is a JSON $t->{last_seen}, not an integer";
    } elsif ($ev->{last_seen} < $ls->[0] || $ev->{last_seen} > $ls->[1]) {
        push @why, sprintf 'last_seen is %d, expected %d..%d (now %d)',
                           $ev->{last_seen}, @$ls, now_ms();
    }
    my @extra = grep { !/^_/ && !/^(type|user_id|online|last_seen)$/ }
                keys %$ev;
    push @why, "unexpected fields: @extra" if @extra;
    return @why;
}

sub presence_ok {
    my ($d, $ev, $u, $online, $ls, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @why = _presence_wrong($ev, $u, $online, $ls);
    Test::More::ok(!@why, "$name: " . ($d ? "$d->{name} gets " : '')
                          . "$u->{name} " . ($online ? 'online' : 'offline')
                          . ', last_seen ' . (defined $ls ? 'a time'
                                                          : 'null'))
        or Test::More::diag(join('; ', @why) . "\n"
                            . ($d ? show_presences($d)
                                  : ws_chat_show($ev)));
    return !@why;
}


# ---------------------------------------------------------------------------
# Users and chats.

sub _through {
    my ($host) = @_;
    return ($host // 1) == 2 ? (' (host 2)', port => nginx2_port()) : ('');
}

sub direct_chat {
    my ($x, $y, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($at, @port) = _through($o{host});
    my $c = api_chat_create($x, { type => 'direct',
                                  user_id => $y->{user_id} },
                            name => "a direct chat $x->{name} - $y->{name}"
                                    . $at, @port)
        or return undef;
    return $c->{chat_id};
}

sub group_chat {
    my ($owner, $title, $members, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($at, @port) = _through($o{host});
    my $c = api_chat_create($owner, { type => 'group', title => $title,
                                      members => [map { $_->{user_id} }
                                                  @$members] },
                            name => "a group '$title'$at", @port)
        or return undef;
    return $c->{chat_id};
}

my %NAME;       # user_id => name, for diagnostics

sub _named {
    my (@u) = @_;
    return if grep { !$_ } @u;
    $NAME{ $_->{user_id} } = $_->{name} for @u;
    return @u;
}

sub users { _named(map { api_signup(device_name => $_) } @_) }

sub users_across_hosts {
    my $i = 0;
    return _named(map { api_signup(device_name => $_,
                                   ($i++ % 2 ? (port => nginx2_port()) : ()))
                      } @_);
}

sub who { $NAME{ $_[0] // '' } // $_[0] // '?' }

1;

__END__

=head1 NAME

Test::Chat::Delivery - devices, stream checks and the common nginx setup of
the chat suites

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::Chat::Nginx;
    use Test::Chat::Delivery qw(:serve :devices);

    my $PREFIX = "t_ws_example_$$:";
    serve(defaults => 1,
          http_config => chat_http_config(prefix => $PREFIX, port2 => 1));

    behaviour 'A gets what B sends' => sub {
        my ($ua, $ub) = users('A', 'B') or return;
        my $chat = direct_chat($ua, $ub) or return;
        my $da = device($ua, 'A') or return;
        my $db = device($ub, 'B') or return;
        send_ok($db, $chat, [$da, $db], 'B sends') or return;
        ok pump([$da, $db], caught_up([$da, $db], $chat, 1)), 'A has it';
        stream_ok($da, $chat, 1, 'A');
        no_errors_ok([$da, $db], 'A and B');
    };

Load it after L<Test::Chat::Nginx> (which gives the suite Test::More and
the nginx, API and WebSocket helpers). Nothing is exported unless asked
for; the tags are C<:serve>, C<:devices> and C<:all>. The JSON types of
what devices are sent are L<Test::Chat::JSON>'s.

=head1 NGINX (C<:serve>)

=over

=item chat_locations()

The two locations of every chat suite: C</v1/> (C<chat_api>) and
C</v1/ws> (C<chat_ws>).

=item chat_http_config(prefix => $p, extra => $t, port2 => 1, locations => $l)

The http-level directives: C<chat_postgres>, C<chat_redis>,
C<chat_dev_codes on> and C<chat_redis_prefix $p> (PostgreSQL and Redis
outlive a suite: a prefix of its own, by default "t_", the suite's name,
"_", its pid and ":"), then C<$t> as it is (more directives). With
C<port2>, a second server on C<$TEST_NGINX_PORT2> with C<reuseport> and
the same locations (or C<$l>): each worker has a listening socket of its
own there, so a socket can be placed on either worker (see C<device>'s
C<worker>).

=item serve(%config, host => 2)

Starts nginx (C<nginx_start>) unless it already runs with this
configuration; returns true when it runs. C<%config> is C<nginx_start>'s,
over the defaults; C<config> defaults to C<chat_locations()> and
C<workers> to 2. C<serve(defaults =E<gt> 1, %config)> only sets the
defaults (a suite's C<http_config>, say). With C<host =E<gt> 2>, the same
for L<Test::Chat::Nginx>'s second instance (C<nginx2_start>), another host
of the deployment.

=item behaviour $name, %options, sub { ... }

Options: C<nginx =E<gt> {...}>, C<hosts =E<gt> 2>, C<error_log>,
C<no_error_log>.

A subtest named C<$name> on a running nginx (C<serve> with C<nginx>'s
settings; "nginx starts" fails when it cannot; with C<hosts =E<gt> 2> on
both hosts, one assertion each that it runs), then C<check_error_log> on
what the subtest wrote to the error log (of each host): C<error_log> must
be there (host 1's), C<no_error_log> (default C<[error]>) must not, and
no alert, crit, emerg or crash.

=back

=head1 DEVICES (C<:devices>)

A device is one socket of an account's device and what it was sent:

    { name, acct, host, ws, pid (the worker holding the socket, if /proc
      tells), synced (the synced event), sync (msg events of the sync),
      got => { chat_id => [msg events, in arrival order] },
      sent => { chat_id => { seq => id } } (the "sent" answers), nsent,
      errors => [error events], other => [events of any other type],
      receipts => [receipt events], presences => [presence events],
      profiles => [profile events] (each with _types => {field => its
      JSON type}, _sync => 1 if before "synced", _at => when), log =>
      [every event but receipt, presence, profile and pong], dead }

C<%MSGS> (exported) is what the "sent" answers confirmed, over every
device: C<< $MSGS{$chat}{$seq} = {from, from_device, id, text, writer
(the device's name), n (its how-manyth send)} >>. C<$T> (10) is how long
with no event ends a wait, in seconds.

=over

=item device($acct, $name, host => 1|2, worker => $pid, port => $port)

Opens a socket of the account's device and reads up to "synced" (one
assertion, "$name: ready, then synced", with the host and worker where the
socket is when C<host> or C<worker> is given). The port is C<port>, else
the host's (C<host> 2 is L<Test::Chat::Nginx>'s second instance), its
reuseport one with C<worker>. With C<worker> the socket is opened again, up
to 30 times, until that worker holds it. Returns the device, or undef after
a failed assertion.

=item record($d, $ev)

Files an event where the device record above has it (pump and device do).

=item send_msg($d, $chat, $text)

Writes a send without waiting (text by default "<name> says <n>"); returns
its id.

=item ack($d, $chat, $seq)

Writes an ack.

=item pump(\@devs, $done, quiet => $s, within => $s, tick => sub {...})

Reads every device's socket, recording what comes, until C<< $done->() >>
is true (returns 1), no event came for C<quiet> (default C<$T>) seconds,
or C<within> seconds passed (default 120 with C<$done>, 1 without; returns
0). C<tick>, if given, is called before every round (to write more while
reading).

=item send_ok($d, $chat, \@devs, $name, $text)

Sends and waits for the answer, reading the other devices meanwhile;
asserts "$name: sent" and returns the seq.

=item got_seq($d, $chat, $seq)

The msg of C<$chat> with this seq that the device got, if any.

=item own_seqs($d, $chat)

The seqs of C<$chat> that count as the device's own, as a hash list: those
its "sent" answers gave, and any system message naming it as
C<from_device> (the server makes none such: system messages have no
device; one would fail C<stream_ok>).

=item caught_up(\@devs, $chat, $last, %from)

A condition for C<pump>: each device got or made every message of C<$chat>
up to C<$last>, counting from its own first seq (C<$from{device name}> or
1).

=item got_list($d, $chat)

What the device got of the chat, as "seq id" or "seq system/event"
strings, for exact checks; C<want_list($chat, {seq =E<gt> event}, @seqs)>
is the same list expected from C<%MSGS>.

=item stream_ok($d, $chat, $last, $name, from => $first)

Four assertions on the device's stream in C<$chat>: seqs strictly
increasing; no duplicates and none of its own sends; with its own sends,
exactly every seq C<$first> (default 1) .. C<$last>; every text msg as its
sender's "sent" confirmed it (from, from_device, id, text, kind "text", ts
a JSON integer), every system one with an event.

=item sends_in_order_ok($chat, $n, @senders)

For each sender, the seqs its "sent" answers gave, in order, belong to its
sends 1 .. C<$n> in the order it wrote them (one assertion a sender).

=item quiet_ok(\@devs, $secs, $name)

No device gets anything (no msg, no error, nothing unexpected) within
C<$secs>.

=item hang_up($d)

A clean close: close 1000, the server's close 1000 back, then TCP closed
(two assertions).

=item no_errors_ok(\@devs, $name)

No error and no unexpected event came on any of the sockets.

=item ranges(@n), ranges_in_order(@n)

For diagnostics: 1, 2, 3, 5, 7, 8 as "1-3, 5, 7-8", sorted first (cut at
300 characters) or as they came (cut at 400).

=item users(@names), users_across_hosts(@names)

New accounts, one a name (its device named so too), signed up through
host 1, or alternately through host 1 and host 2; () when one fails.
C<who($user_id)> is the name of such an account (else the id), for
diagnostics.

=item spread(@accts)

Devices of the accounts, named by their names, on alternate workers of
host 1 (through its reuseport port2), and one assertion that they are on
both workers (a diag instead when /proc cannot tell). Returns the
devices, or () after a failed assertion.

=item alive(@devs), settle(\@devs, $secs)

The devices still connected, once each (an arrayref); and a quiet
window: every live device read for C<$secs> seconds, what comes
recorded.

=item error_ok(\@devs, $d, $msg, $code, $name)

Writes C<$msg> on C<$d>'s socket; one assertion that an error of
C<$code> comes back and the socket stays open (reading C<@devs>
meanwhile).

=item set_privacy($acct, $body, $name)

C<PATCH /v1/me/privacy>; one assertion (200). Returns the answer, or
undef.

=item presences_of($d, $u, $from), profiles_of($d, $u, $from)

The presence (profile) events C<$d> got about account C<$u>, from index
C<$from> of those; in scalar context, how many.

=item presence_ok($d, $ev, $u, $online, $ls, $name)

One assertion: C<$ev> is exactly
C<{"type":"presence","user_id","online","last_seen"}> about C<$u>,
C<online> the JSON boolean C<$online>, C<last_seen> null (C<$ls> undef)
or an integer within C<[$ls-E<gt>[0], $ls-E<gt>[1]]> (epoch ms). C<$d>,
if given, is the device that got it (named in the assertion; a failure
shows every presence it got: C<show_presences($d)>).

=item direct_chat($x, $y, host => 2)

=item group_chat($owner, $title, \@members, host => 2)

Creates the chat through host 1 (or 2) and returns its id; undef after a
failed assertion.

=item host_port($host, $reuseport), host_workers($host)

The port (the reuseport one when asked) and the worker pids of host 1 or 2.

=back

=cut
