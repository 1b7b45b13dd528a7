# Receipts (PROTOCOL.md section 4, docs/protocol.md "Receipts"): a
# member's "delivered" and "read" marks, per user and chat, reach the
# authors of what they newly cover (every device of theirs, on any worker
# or host), and "read" also the reader's other devices (not the reading
# one); a group's author sees each member's marks; a burst of hundreds of
# acks gives a few receipts, each with the latest mark; an author away
# gets the latest marks in the sync, before "synced", not every step;
# read_receipts off (PATCH /v1/me/privacy) stops "read" both ways but not
# "delivered"; bad reads get errors and the socket stays open.
#
#   scripts/test.sh t/ws_receipts.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve :devices);
use JSON::PP ();
use List::Util qw(min max);
use Time::HiRes qw(time);

needs_stack();

# PostgreSQL and Redis outlive this file: a prefix of our own (the same on
# both hosts: one deployment), and new users in every behaviour. A second
# server on port2 with reuseport on each host, so that sockets can be
# placed on either worker.
serve(defaults => 1, http_config => chat_http_config(port2 => 1));


# ---------------------------------------------------------------------------
# Receipt events: Test::Chat::Delivery's record() keeps them in
# $d->{receipts}, with _types, _sync and _at.

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub show {
    my ($ev) = @_;
    return ws_chat_show($ev) . ($ev && $ev->{_sync} ? ' (before synced)'
                                                    : '');
}

sub show_receipts {
    my ($d) = @_;
    my @r = @{ $d->{receipts} || [] };
    return "$d->{name} got no receipt" unless @r;
    return "$d->{name} got:\n" . join "\n", map {
        '  ' . ($_->{status} // '?') . ' user ' . who($_->{user_id})
        . ' seq ' . ($_->{seq} // '?') . ': ' . show($_) } @r;
}

# The receipts $d got: chat => $c, user => $acct, status => $s (each
# optional), from => index into $d->{receipts}.
sub rcpts {
    my ($d, %m) = @_;
    my @all = @{ $d->{receipts} || [] };
    @all = @all[($m{from} // 0) .. $#all];
    return grep {
        (!defined $m{chat} || ($_->{chat_id} // '') eq $m{chat})
        && (!defined $m{user}
            || ($_->{user_id} // '') eq $m{user}{user_id})
        && (!defined $m{status} || ($_->{status} // '') eq $m{status})
    } @all;
}

# The latest mark $d was told for (chat, user, status), or 0.
sub mark_of {
    my ($d, $chat, $user, $status) = @_;
    my @r = rcpts($d, chat => $chat, user => $user, status => $status);
    return @r ? $r[-1]{seq} // 0 : 0;
}

sub nrcpts { scalar(@{ $_[0]{receipts} || [] }) }

sub read_to {
    my ($d, $chat, $seq) = @_;
    $d->{ws}->send_json({ type => 'read', chat_id => $chat,
                          seq => 0 + $seq });
}

# One assertion: $d gets (within 5 s) a receipt of $user's $status in
# $chat up to $seq, and the latest such receipt is exactly
# {"type":"receipt","chat_id","user_id","status","seq"} with strings and
# an integer.
sub receipt_ok {
    my ($devs, $d, $chat, $user, $status, $seq, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %m = (chat => $chat, user => $user, status => $status);
    my %seen;
    pump([grep { !$_->{dead} && !$seen{$_}++ } @$devs, $d],
         sub { grep { ($_->{seq} // 0) >= $seq } rcpts($d, %m) },
         within => 5, quiet => 5);
    my @r = rcpts($d, %m);
    my $r = $r[-1];
    my @why;
    if (!$r) {
        push @why, "no $status receipt for " . who($user->{user_id});
    } else {
        my $t = $r->{_types};
        push @why, "seq is $r->{seq}, expected $seq"
            unless ($r->{seq} // -1) == $seq;
        push @why, 'seq is not a JSON integer' unless $t->{seq} eq 'int';
        push @why, 'chat_id is not the string of the chat'
            unless $t->{chat_id} eq 'string' && $r->{chat_id} eq $chat;
        push @why, 'user_id is not the string of the user'
            unless $t->{user_id} eq 'string';
        my @extra = grep { !/^_/ && !/^(type|chat_id|user_id|status|seq)$/ }
                    keys %$r;
        push @why, "unexpected fields: @extra" if @extra;
    }
    ok !@why, "$name: $d->{name} gets {\"type\":\"receipt\",\"status\":"
              . "\"$status\",\"user_id\":" . who($user->{user_id})
              . ",\"seq\":$seq}"
        or diag(join('; ', @why) . "\n" . show_receipts($d));
    return !@why;
}

# One assertion: $d got no receipt (or none matching %m) since index $from.
sub no_receipt_ok {
    my ($d, $from, $name, %m) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @r = rcpts($d, %m, from => $from);
    ok !@r, "$name: $d->{name} gets no "
            . ($m{status} ? "$m{status} " : '') . 'receipt'
            . ($m{user} ? ' for ' . who($m{user}{user_id}) : '')
        or diag(join "\n", map { show($_) } @r);
}

sub counts { return { map { $_->{name} => nrcpts($_) } @_ } }

# Hangs up $d, then waits until the server has noted when it left
# (devices.marks_seen moves): the marks that move from then on are those
# its next sync brings. One assertion more than hang_up's.
sub leaves {
    my ($d) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @q = ('SELECT marks_seen FROM devices WHERE id = ?',
             $d->{acct}{device_id});
    my $before = pg_scalar(@q) // '';
    hang_up($d);
    ok wait_until(10, sub { (pg_scalar(@q) // $before) ne $before }),
       "$d->{name} is away: the server noted when it left";
}

# One assertion: $user's delivered and read marks in $chat come to be
# "$delivered $read" in PostgreSQL (members), within 10 s.
sub marks_are {
    my ($chat, $user, $delivered, $read, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @q = ("SELECT delivered || ' ' || read FROM members WHERE "
             . 'chat_id = ? AND user_id = ?', $chat, $user->{user_id});
    my $want = "$delivered $read";
    ok wait_until(10, sub { (pg_scalar(@q) // '') eq $want }),
       "$name: the marks are delivered $delivered, read $read"
        or diag('members has ' . (pg_scalar(@q) // 'nothing'));
}

sub privacy_is {
    my ($r, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $j = ref $r->{json} eq 'HASH' ? $r->{json} : {};
    my %got = map {
        my $v = $j->{$_};
        $_ => !exists $j->{$_} ? 'absent'
            : JSON::PP::is_bool($v) ? ($v ? 'true' : 'false')
            : defined $v && !ref $v ? "\"$v\"" : $JSON->encode($v)
    } keys %$j;
    is_deeply \%got, $want, $name or diag(api_show($r));
}

# ---------------------------------------------------------------------------

behaviour '1:1 over two workers: B\'s ack gives both of A\'s devices a '
          . '"delivered" receipt, B\'s read a "read" receipt, which also '
          . 'reaches B\'s other device but not the reading one; a mark '
          . 'that does not move sends nothing' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $chat = direct_chat($ua, $ub) or return;
    # A and A2 on different workers, B and B2 too.
    my ($da, $db, $db2, $da2) = spread($ua, $ub, $ub2, $ua2) or return;
    my @all = ($da, $da2, $db, $db2);

    send_ok($da, $chat, \@all, 'A sends 1') or return;
    send_ok($da, $chat, \@all, 'A sends 2') or return;
    ok pump(\@all, caught_up([$da2, $db, $db2], $chat, 2)),
       'B, B2 and A2 get 1..2';
    settle(\@all, 0.5);
    is_deeply counts(@all), { A => 0, A2 => 0, B => 0, B2 => 0 },
              'no receipt before any ack';

    ack($db, $chat, 2);
    receipt_ok(\@all, $_, $chat, $ub, 'delivered', 2, 'B acks 2')
        for $da, $da2;
    settle(\@all, 1.5);
    is scalar(rcpts($_, chat => $chat, user => $ub)), 1,
       "one ack, one receipt on $_->{name}"
        or diag(show_receipts($_)) for $da, $da2;
    no_receipt_ok($_, 0, 'B acks 2 (not to B itself)') for $db, $db2;

    my $c = counts(@all);
    ack($db2, $chat, 2);
    settle(\@all, 1.5);
    is_deeply counts(@all), $c,
              'B2 acks 2 too: B\'s mark does not move, nobody gets a '
              . 'receipt';

    read_to($db, $chat, 2);
    receipt_ok(\@all, $_, $chat, $ub, 'read', 2, 'B reads 2')
        for $da, $da2, $db2;
    settle(\@all, 1.5);
    no_receipt_ok($db, 0, 'B reads 2 (the reading device)');
    is scalar(rcpts($_, chat => $chat, user => $ub, status => 'read')), 1,
       "one read, one read receipt on $_->{name}"
        or diag(show_receipts($_)) for $da, $da2, $db2;

    $c = counts(@all);
    read_to($db2, $chat, 1);
    read_to($db, $chat, 2);
    settle(\@all, 1.5);
    is_deeply counts(@all), $c,
              'reads at or below the mark (1 on B2, 2 on B) send nothing';

    # The other way round: B writes, A's devices ack and read.
    send_ok($db, $chat, \@all, 'B sends 3') or return;
    ok pump(\@all, caught_up([$da, $da2, $db2], $chat, 3)),
       'A, A2 and B2 get 3';
    my %from = map { $_->{name} => nrcpts($_) } @all;
    ack($da2, $chat, 3);
    receipt_ok(\@all, $_, $chat, $ua, 'delivered', 3, 'A2 acks 3')
        for $db, $db2;
    read_to($da, $chat, 3);
    receipt_ok(\@all, $_, $chat, $ua, 'read', 3, 'A reads 3 on A')
        for $db, $db2, $da2;
    settle(\@all, 1.5);
    no_receipt_ok($da, $from{A}, 'A reads 3 (the reading device)',
                  user => $ua);
    no_receipt_ok($da2, $from{A2}, 'A2 acks 3 (not to A itself)',
                  user => $ua, status => 'delivered');
    no_receipt_ok($_, $from{ $_->{name} }, 'A\'s marks move',
                  user => $ub) for @all;
    no_errors_ok(\@all, '1:1');
};

behaviour 'one device each, the usual case: B\'s ack deletes the message '
          . '(every device has it), then B reads it: A still gets the '
          . '"read" receipt' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my ($da, $db) = spread($ua, $ub) or return;
    my @all = ($da, $db);
    send_ok($da, $chat, \@all, 'A sends 1') or return;
    send_ok($da, $chat, \@all, 'A sends 2') or return;
    ok pump(\@all, caught_up([$db], $chat, 2)), 'B gets 1..2';
    ack($db, $chat, 2);
    receipt_ok(\@all, $da, $chat, $ub, 'delivered', 2, 'B acks 2');
    ok $chat =~ /^\d+$/ && wait_until(3, sub {
           (pg_scalar("SELECT count(*) FROM messages WHERE chat_id = $chat")
            // '') eq '0' }),
       'both messages are deleted from the server (every device acked '
       . 'them)';
    read_to($db, $chat, 1);
    receipt_ok(\@all, $da, $chat, $ub, 'read', 1, 'then B reads 1');
    read_to($db, $chat, 2);
    receipt_ok(\@all, $da, $chat, $ub, 'read', 2, 'then B reads 2');
    settle(\@all, 1);
    is join(', ', map { "$_->{status} $_->{seq}" } rcpts($da)),
       'delivered 2, read 1, read 2', 'A got exactly those'
        or diag(show_receipts($da));
    is nrcpts($db), 0, 'B got none' or diag(show_receipts($db));
    no_errors_ok(\@all, 'one device each');
};

behaviour 'a group of 4: the author sees each member\'s delivered and '
          . 'read marks, one receipt per move, and can tell "delivered '
          . 'to all" and "read by all"' => sub {
    my @u = users(qw(G1 G2 G3 G4)) or return;
    my ($u1, $u2, $u3, $u4) = @u;
    my @d = spread(@u) or return;
    my ($d1, $d2, $d3, $d4) = @d;
    my $g = group_chat($u1, 'receipts', [$u2, $u3, $u4]) or return;
    ok pump(\@d, caught_up(\@d, $g, 1)), 'all four get created (1)';
    send_ok($d1, $g, \@d, "G1 sends $_") or return for 2, 3;
    ok pump(\@d, caught_up(\@d, $g, 3)), 'G2, G3, G4 get 2..3';
    settle(\@d, 0.5);

    my @members = ($u2, $u3, $u4);
    my $all_at = sub {
        my ($status, $seq) = @_;
        return !grep { mark_of($d1, $g, $_, $status) < $seq } @members;
    };
    my $marks = sub {
        my ($status) = @_;
        return join ' ', map { "$_->{name}:" . mark_of($d1, $g, $_, $status) }
                         @members;
    };

    ack($d2, $g, 3);
    ack($d3, $g, 2);
    ack($d4, $g, 3);
    receipt_ok(\@d, $d1, $g, $u2, 'delivered', 3, 'G2 acks 3');
    receipt_ok(\@d, $d1, $g, $u3, 'delivered', 2, 'G3 acks 2');
    receipt_ok(\@d, $d1, $g, $u4, 'delivered', 3, 'G4 acks 3');
    settle(\@d, 1);
    is $marks->('delivered'), 'G2:3 G3:2 G4:3',
       'G1\'s view of the delivered marks';
    ok !$all_at->('delivered', 3), 'G1 can tell 3 is not delivered to all';
    ok $all_at->('delivered', 2), '... and 2 is';

    ack($d3, $g, 3);
    receipt_ok(\@d, $d1, $g, $u3, 'delivered', 3, 'G3 acks 3');
    ok $all_at->('delivered', 3), 'G1 can tell 3 is delivered to all';

    read_to($d2, $g, 3);
    read_to($d3, $g, 3);
    read_to($d4, $g, 2);
    receipt_ok(\@d, $d1, $g, $u2, 'read', 3, 'G2 reads 3');
    receipt_ok(\@d, $d1, $g, $u3, 'read', 3, 'G3 reads 3');
    receipt_ok(\@d, $d1, $g, $u4, 'read', 2, 'G4 reads 2');
    settle(\@d, 1);
    is $marks->('read'), 'G2:3 G3:3 G4:2', 'G1\'s view of the read marks';
    ok !$all_at->('read', 3), 'G1 can tell 3 is not read by all';
    read_to($d4, $g, 3);
    receipt_ok(\@d, $d1, $g, $u4, 'read', 3, 'G4 reads 3');
    ok $all_at->('read', 3), 'G1 can tell 3 is read by all';
    settle(\@d, 1.5);

    my %n;
    $n{"$_->{status} " . who($_->{user_id})}++
        for rcpts($d1, chat => $g);
    is_deeply \%n, { 'delivered G2' => 1, 'delivered G3' => 2,
                     'delivered G4' => 1, 'read G2' => 1, 'read G3' => 1,
                     'read G4' => 2 },
              'G1 got one receipt per move of each member\'s mark, and '
              . 'none about itself'
        or diag(show_receipts($d1));
    is join(', ', map { show($_) } grep { ($_->{chat_id} // '') ne $g }
                                   @{ $d1->{receipts} || [] }), '',
       'G1 got no receipt of another chat';

    # Another author: G2 writes 4; G3's ack reaches G2.
    send_ok($d2, $g, \@d, 'G2 sends 4') or return;
    ok pump(\@d, caught_up(\@d, $g, 4)), 'all get 4';
    my $from2 = nrcpts($d2);
    ack($d3, $g, 4);
    receipt_ok(\@d, $d2, $g, $u3, 'delivered', 4, 'G3 acks 4');
    read_to($d4, $g, 4);
    receipt_ok(\@d, $d2, $g, $u4, 'read', 4, 'G4 reads 4');
    settle(\@d, 1);
    is join(', ', map { show($_) } rcpts($d2, from => $from2, user => $u2)),
       '', 'G2 gets no receipt about itself';
    no_errors_ok(\@d, 'group');
};

behaviour 'coalescing: B acks 300 messages one by one, as fast as it '
          . 'can (all in one write, then one write each); A gets a few '
          . '"delivered" receipts, increasing, the last at the last '
          . 'seq' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my ($da, $db) = spread($ua, $ub) or return;
    my @all = ($da, $db);
    my $N = 300;
    ok !$db->{ws}->deflate, 'B\'s socket is not compressed (raw frames)';

    my $round = sub {
        my ($first, $how, $max) = @_;
        my $last = $first + $N - 1;
        my $written = 0;
        my $sent = $da->{nsent};
        my $from = nrcpts($da);
        my $tick = sub {
            while ($written < $N && $written - ($da->{nsent} - $sent)
                                    - @{ $da->{errors} } < 64) {
                send_msg($da, $chat, 'm' . ($first + $written++));
            }
        };
        my $got_all = caught_up([$db], $chat, $last);
        ok pump(\@all, sub { $da->{nsent} - $sent + @{ $da->{errors} } >= $N
                             && $got_all->() }, tick => $tick,
                within => 60),
           "A sends $first..$last, B gets them"
            or diag("A wrote $written, sent " . ($da->{nsent} - $sent)
                    . ', B got ' . scalar(@{ $db->{got}{$chat} || [] }));
        is scalar(@{ $da->{errors} }), 0, 'no send failed';
        settle(\@all, 0.5);
        is nrcpts($da), $from, 'A: no receipt before B acks them';

        my @seqs = grep { $_ >= $first } map { $_->{seq} }
                   @{ $db->{got}{$chat} || [] };
        my @frames = map {
            ws_text($JSON->encode({ type => 'ack', chat_id => $chat,
                                    seq => 0 + $_ }))
        } @seqs;
        my $t0 = time;
        if ($how eq 'one write') {
            ok $db->{ws}->send_raw(join '', @frames),
               sprintf 'B writes %d acks, one frame each, in one go',
                       scalar(@seqs);
        } else {
            my $ok = 1;
            $ok &&= $db->{ws}->send_raw($_) for @frames;
            ok $ok, sprintf 'B writes %d acks, one write each (%.3fs)',
                            scalar(@seqs), time - $t0;
        }
        ok pump(\@all, sub { mark_of($da, $chat, $ub, 'delivered') >= $last },
                within => 10, quiet => 10),
           "A gets B's delivered mark $last";
        settle(\@all, 1.5);
        my @r = rcpts($da, chat => $chat, user => $ub,
                      status => 'delivered', from => $from);
        my @s = map { $_->{seq} // 0 } @r;
        ok @r > 0 && @r <= $max, "$how: A got between 1 and $max delivered "
                                 . 'receipts (' . scalar(@r) . ") for $N "
                                 . 'acks'
            or diag("seqs: @s");
        is $s[-1], $last, "the last one is at $last" or diag("seqs: @s");
        my @back = grep { $s[$_] <= $s[$_ - 1] } 1 .. $#s;
        ok !@back, 'the marks only go up' or diag("seqs: @s");
        is nrcpts($da) - $from, scalar(@r), 'A got no other receipt'
            or diag(show_receipts($da));
        diag("$how: the delivered seqs A got: @s");
    };
    $round->(1, 'one write', 20);
    # Paced by how fast this client writes, and how fast the worker's
    # batches go: more receipts, still far fewer than acks.
    $round->($N + 1, 'a write each', 60);
    is nrcpts($db), 0, 'B got no receipt' or diag(show_receipts($db));
    no_errors_ok(\@all, 'coalescing');
};

behaviour 'an author away: B acks and reads step by step while A is '
          . 'offline; A\'s sync brings one "delivered" and one "read" '
          . 'receipt with B\'s latest marks, before "synced"' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my ($da, $db) = spread($ua, $ub) or return;
    send_ok($da, $chat, [$db], "A sends $_") or return for 1 .. 3;
    ok pump([$da, $db], caught_up([$db], $chat, 3)), 'B gets 1..3';
    leaves($da);

    # Steps apart, each applied before the next: delivered 1, 2; read 2;
    # read 3 (which raises delivered to 3).
    ack($db, $chat, 1);
    marks_are($chat, $ub, 1, 0, 'B acks 1');
    ack($db, $chat, 2);
    marks_are($chat, $ub, 2, 0, 'B acks 2');
    read_to($db, $chat, 2);
    marks_are($chat, $ub, 2, 2, 'B reads 2');
    read_to($db, $chat, 3);
    marks_are($chat, $ub, 3, 3, 'B reads 3');

    $da = device($ua, 'A back') or return;
    my @sync = grep { $_->{_sync} } @{ $da->{receipts} || [] };
    my $list = sub {
        return [sort map { ($_->{status} // '?') . ' ' . who($_->{user_id})
                           . ' ' . ($_->{seq} // '?') . ' '
                           . (($_->{chat_id} // '') eq $chat ? 'chat'
                              : 'another chat') } @_];
    };
    is_deeply $list->(@sync), ['delivered B 3 chat', 'read B 3 chat'],
              'before "synced": B\'s latest delivered and read marks, '
              . 'once each'
        or diag(show_receipts($da));
    is_deeply [map { $_->{_types}{seq} } @sync], [('int') x @sync],
              'their seqs are JSON integers';
    is $da->{synced}{count}, 0, 'synced count 0 (nothing owed)';
    settle([$da, $db], 1.5);
    is nrcpts($da), scalar(@sync), 'and no receipt after "synced"'
        or diag(show_receipts($da));

    hang_up($da);
    $da = device($ua, 'A back again') or return;
    settle([$da, $db], 1);
    is nrcpts($da), 0, 'nothing moved since: no receipt in the next sync'
        or diag(show_receipts($da));

    # A moves on while it has a socket: live receipts, and the next sync
    # brings nothing again.
    send_ok($da, $chat, [$db], 'A sends 4') or return;
    ok pump([$da, $db], caught_up([$db], $chat, 4)), 'B gets 4';
    ack($db, $chat, 4);
    receipt_ok([$db], $da, $chat, $ub, 'delivered', 4, 'B acks 4, live');
    hang_up($da);
    $da = device($ua, 'A back a third time') or return;
    settle([$da, $db], 1);
    is nrcpts($da), 0, 'a mark A had live is not sent again in the sync'
        or diag(show_receipts($da));

    # A second device of B, linked now, never connected before: its sync
    # brings its own user's read mark (and no delivered mark of its own
    # user).
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $db2 = device($ub2, 'B2, first time') or return;
    is_deeply $list->(grep { $_->{_sync} } @{ $db2->{receipts} || [] }),
              ['read B 3 chat'],
              'B2\'s first sync: B\'s read mark, before "synced"'
        or diag(show_receipts($db2));
    no_errors_ok([$da, $db, $db2], 'away');
};

behaviour 'read_receipts off: the reader\'s reads reach its own devices '
          . 'but not the author, whose "delivered" still comes; an '
          . 'author with them off gets no "read"; GET and PATCH '
          . '/v1/me/privacy' => sub {
    my ($ua, $ub, $uc, $ud) = users('A', 'B', 'C', 'D') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;

    # The settings.
    my $r = api_request(GET => '/v1/me/privacy', token => $ub->{token});
    api_ok($r, 200, 'GET /v1/me/privacy') or return;
    privacy_is($r, { read_receipts => 'true', last_seen => '"everyone"' },
               'the defaults: read receipts on, last seen by everyone');
    $r = api_request(GET => '/v1/me/privacy');
    api_error_is($r, 401, 'unauthorized', 'GET /v1/me/privacy without a '
                                          . 'token');
    $r = set_privacy($ub, { read_receipts => JSON::PP::false },
                     'B: PATCH {"read_receipts":false}') or return;
    privacy_is($r, { read_receipts => 'false', last_seen => '"everyone"' },
               'the answer is the new settings');
    my $bad = sub {
        my ($body, $what) = @_;
        my $r = api_request(PATCH => '/v1/me/privacy',
                            token => $ub->{token}, body => $body);
        api_error_is($r, 400, 'bad_request', "PATCH $what");
    };
    $bad->({ read_receipts => 'no' }, '{"read_receipts":"no"}');
    $bad->({ read_receipts => 1 }, '{"read_receipts":1}');
    $bad->({ read_receipts => undef }, '{"read_receipts":null}');
    $bad->({ last_seen => 'friends' }, '{"last_seen":"friends"}');
    $bad->({ last_seen => JSON::PP::true }, '{"last_seen":true}');
    $bad->({ colour => 'blue' }, 'an unknown field');
    $bad->('read_receipts=false', 'a body that is not JSON');
    $bad->([], 'a JSON array');
    $r = api_request(PATCH => '/v1/me/privacy',
                     body => { read_receipts => JSON::PP::true });
    api_error_is($r, 401, 'unauthorized', 'PATCH without a token');
    $r = api_request(GET => '/v1/me/privacy', token => $ub2->{token});
    api_ok($r, 200, 'GET /v1/me/privacy from B\'s other device') or return;
    privacy_is($r, { read_receipts => 'false', last_seen => '"everyone"' },
               'the bad PATCHes changed nothing; the setting is the '
               . 'user\'s');
    $r = api_request(GET => '/v1/me/privacy', token => $ua->{token});
    privacy_is($r, { read_receipts => 'true', last_seen => '"everyone"' },
               'A\'s are still the defaults');

    # B (reader) has them off.
    my $chat = direct_chat($ua, $ub) or return;
    my ($da, $db, $db2) = spread($ua, $ub, $ub2) or return;
    my @all = ($da, $db, $db2);
    send_ok($da, $chat, \@all, 'A sends 1') or return;
    ok pump(\@all, caught_up([$db, $db2], $chat, 1)), 'B and B2 get 1';
    ack($db, $chat, 1);
    receipt_ok(\@all, $da, $chat, $ub, 'delivered', 1,
               'B (read receipts off) acks 1');
    read_to($db, $chat, 1);
    receipt_ok(\@all, $db2, $chat, $ub, 'read', 1,
               'B (read receipts off) reads 1: its own other device');
    settle(\@all, 1.5);
    no_receipt_ok($da, 0, 'B (read receipts off) reads 1',
                  status => 'read');

    set_privacy($ub, { read_receipts => JSON::PP::true },
                'B: PATCH {"read_receipts":true}') or return;
    send_ok($da, $chat, \@all, 'A sends 2') or return;
    ok pump(\@all, caught_up([$db, $db2], $chat, 2)), 'B and B2 get 2';
    read_to($db, $chat, 2);
    receipt_ok(\@all, $da, $chat, $ub, 'read', 2,
               'B, read receipts on again, reads 2: A');

    # C (author) has them off, D (reader) on.
    set_privacy($uc, { read_receipts => JSON::PP::false },
                'C: PATCH {"read_receipts":false}') or return;
    my $chat2 = direct_chat($uc, $ud) or return;
    my ($dc, $dd) = spread($uc, $ud) or return;
    send_ok($dc, $chat2, [$dd], 'C (read receipts off) sends 1') or return;
    ok pump([$dc, $dd], caught_up([$dd], $chat2, 1)), 'D gets 1';
    ack($dd, $chat2, 1);
    receipt_ok([$dd], $dc, $chat2, $ud, 'delivered', 1, 'D acks 1');
    read_to($dd, $chat2, 1);
    settle([$dc, $dd], 1.5);
    no_receipt_ok($dc, 0, 'D reads 1 (C has read receipts off)',
                  status => 'read');
    no_errors_ok([@all, $dc, $dd], 'privacy');
};

behaviour 'bad reads: no chat_id, seq 0, "x", -1, 1.5 get bad_request; a '
          . 'chat the user is not in gets no answer (PROTOCOL.md 4); the '
          . 'socket stays open; an ack past the last seq moves nothing'
          => sub {
    my ($ua, $ub, $uc) = users('A', 'B', 'C') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $other = direct_chat($ua, $uc) or return;
    my ($da, $db) = spread($ua, $ub) or return;
    my @all = ($da, $db);
    send_ok($da, $chat, \@all, 'A sends 1') or return;
    ok pump(\@all, caught_up([$db], $chat, 1)), 'B gets 1';

    my @cases = (
        [{ type => 'read', seq => 1 }, 'bad_request', 'no chat_id'],
        [{ type => 'read', chat_id => $chat }, 'bad_request', 'no seq'],
        [{ type => 'read', chat_id => $chat, seq => 0 }, 'bad_request',
         'seq 0'],
        [{ type => 'read', chat_id => $chat, seq => 'x' }, 'bad_request',
         'seq "x"'],
        [{ type => 'read', chat_id => $chat, seq => -1 }, 'bad_request',
         'seq -1'],
        [{ type => 'read', chat_id => $chat, seq => 1.5 }, 'bad_request',
         'seq 1.5'],
        [{ type => 'read', chat_id => undef, seq => 1 }, 'bad_request',
         'chat_id null'],
    );
    for my $c (@cases) {
        my ($msg, $code, $what) = @$c;
        my $n = @{ $db->{errors} };
        $db->{ws}->send_json($msg);
        pump(\@all, sub { @{ $db->{errors} } > $n || $db->{dead} },
             within => 5, quiet => 5);
        my $e = $db->{errors}[$n];
        ok $e && ($e->{code} // '') eq $code
           && defined $e->{message} && !ref $e->{message},
           "read with $what: {\"type\":\"error\",\"code\":\"$code\"}"
            or diag('got ' . ($e ? show($e) : 'nothing') . '; other: '
                    . join(', ', map { show($_) } @{ $db->{other} }));
        ok !$db->{dead}, "read with $what: the socket stays open"
            or return;
    }
    my $n = @{ $db->{errors} };
    $db->{ws}->send_json({ type => 'read', chat_id => $other, seq => 1 });
    ack($db, $chat, 99);
    settle(\@all, 1.5);
    is scalar(@{ $db->{errors} }), $n, 'a read of a chat B is not a member '
                                       . 'of has no answer';
    ok !$db->{dead}, '... and the socket stays open';
    is nrcpts($da), 0, 'bad reads and an ack past the last seq: A gets '
                       . 'no receipt'
        or diag(show_receipts($da));
    is scalar(@{ $db->{errors} }), $n, 'an ack past the last seq has no '
                                       . 'answer';
    read_to($db, $chat, 1);
    receipt_ok(\@all, $da, $chat, $ub, 'read', 1,
               'then a good read on the same socket');
    $db->{errors} = [];
    no_errors_ok(\@all, 'bad reads');
};

behaviour 'across two hosts: A on host 1, B reading on host 2; A\'s '
          . 'devices on both hosts get B\'s marks, and B\'s device on '
          . 'host 1 its read',
          hosts => 2 => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $chat = direct_chat($ua, $ub, host => 2) or return;
    my $da = device($ua, 'A', host => 1) or return;
    my $da2 = device($ua2, 'A2', host => 2) or return;
    my $db = device($ub, 'B', host => 2) or return;
    my $db2 = device($ub2, 'B2', host => 1) or return;
    my @all = ($da, $da2, $db, $db2);
    send_ok($da, $chat, \@all, 'A (host 1) sends 1') or return;
    send_ok($da, $chat, \@all, 'A (host 1) sends 2') or return;
    ok pump(\@all, caught_up([$da2, $db, $db2], $chat, 2)),
       'A2, B, B2 get 1..2';
    ack($db, $chat, 2);
    receipt_ok(\@all, $_, $chat, $ub, 'delivered', 2, 'B (host 2) acks 2')
        for $da, $da2;
    read_to($db, $chat, 1);
    receipt_ok(\@all, $_, $chat, $ub, 'read', 1, 'B (host 2) reads 1')
        for $da, $da2, $db2;
    read_to($db2, $chat, 2);
    receipt_ok(\@all, $_, $chat, $ub, 'read', 2, 'B2 (host 1) reads 2')
        for $da, $da2, $db;
    settle(\@all, 1.5);
    is scalar(rcpts($db, user => $ub, status => 'read')), 1,
       'B got only the read of its other device'
        or diag(show_receipts($db));
    is scalar(rcpts($db2, user => $ub, status => 'read')), 1,
       'B2 got only the read of its other device'
        or diag(show_receipts($db2));
    is join(' ', map { $_->{seq} } rcpts($da, status => 'read')), '1 2',
       'A: read 1, read 2' or diag(show_receipts($da));

    # Away on host 1, back on host 2.
    leaves($da);
    leaves($da2);
    send_ok($db, $chat, [$db, $db2], 'B (host 2) sends 3') or return;
    read_to($db2, $chat, 3);
    marks_are($chat, $ub, 3, 3, 'B2 (host 1) reads 3');
    $da = device($ua, 'A back on host 2', host => 2) or return;
    my @sync = grep { $_->{_sync} } @{ $da->{receipts} || [] };
    is join(', ', sort map { "$_->{status} " . who($_->{user_id})
                             . " $_->{seq}" } @sync),
       'delivered B 3, read B 3',
       'A back on host 2: B\'s marks moved on host 1, in the sync'
        or diag(show_receipts($da));
    is scalar(@{ $da->{sync} }), 1, 'and B\'s message 3';
    no_errors_ok([$da, $db, $db2], 'two hosts');
};

nginx_stop();
nginx2_stop() if nginx2_running();
done_testing();
