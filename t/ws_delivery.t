# Delivery over the chat WebSocket (PROTOCOL.md sections 4 and 5): every
# device of every member gets each message once (the sending device none;
# a system message goes to every device, the acting one too: no socket
# sent it), live or in the sync after "ready" and before "synced"; per
# chat, the seqs
# a device gets are strictly increasing and, with its own sends, dense;
# acked messages never come again, unacked ones do; all of it across two
# workers, with thousands waiting offline, and with several senders
# writing to one group at once.
#
#   scripts/test.sh t/ws_delivery.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::JSON qw(is_json_int);
use Time::HiRes qw(time);

needs_stack();

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour. A second server on port2 with
# reuseport: each worker has a listening socket of its own there, so
# sockets can be placed on either worker.
my $PREFIX = "t_ws_delivery_$$:";
serve(defaults => 1,
      http_config => chat_http_config(prefix => $PREFIX, port2 => 1));


# Each device gets system message $seq of $chat with these fields.
sub system_ok {
    my ($devs, $chat, $seq, $want, $name, $all) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok pump($all, sub { !grep { !got_seq($_, $chat, $seq) } @$devs }),
       "$name: " . join(', ', map { $_->{name} } @$devs) . " get seq $seq";
    for my $d (@$devs) {
        my $m = got_seq($d, $chat, $seq) or next;
        my %got = map { $_ => $m->{$_} } keys %$want;
        is_deeply \%got, $want, "$name: $d->{name}'s msg $seq"
            or diag('got ' . ws_chat_show($m));
    }
}


behaviour '1:1: A and B each get what the other sends, live; the seqs '
          . 'are dense with their own sends' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    my $db = device($ub, 'B') or return;
    my @devs = ($da, $db);
    is $da->{synced}{count}, 0, 'A: synced count 0 in a new chat';
    is $db->{synced}{count}, 0, 'B: synced count 0 in a new chat';

    my @order = qw(A A B A B B A B);
    my $n = 0;
    for my $who (@order) {
        $n++;
        my ($from, $to) = $who eq 'A' ? ($da, $db) : ($db, $da);
        my $seq = send_ok($from, $chat, \@devs, "message $n from $who")
            or return;
        is $seq, $n, "message $n from $who: seq $n";
        pump(\@devs, sub { grep { $_->{seq} == $seq }
                           @{ $to->{got}{$chat} || [] } });
    }
    quiet_ok(\@devs, 1, 'after the 8');
    is_deeply got_list($db, $chat),
              [map { "$_ $MSGS{$chat}{$_}{id}" } 1, 2, 4, 7],
              "B got A's 4, in order";
    is_deeply got_list($da, $chat),
              [map { "$_ $MSGS{$chat}{$_}{id}" } 3, 5, 6, 8],
              "A got B's 4, in order";
    stream_ok($da, $chat, 8, 'A');
    stream_ok($db, $chat, 8, 'B');
    no_errors_ok(\@devs, '1:1');
};

behaviour 'a group: each message reaches every member\'s devices but '
          . 'the sending one; system messages every member\'s device, the '
          . 'acting one too, in the chat\'s seq; a member added starts at '
          . 'its member_added, one removed gets nothing after it' => sub {
    my ($u1, $u2, $u3, $u4) = users('U1', 'U2', 'U3', 'U4') or return;
    my $u1b = api_link_device($u1, device_name => 'U1b') or return;
    my @d = map { device($_, $_->{name}) } $u1, $u1b, $u2, $u3, $u4;
    return if grep { !$_ } @d;
    my ($d1, $d1b, $d2, $d3, $d4) = @d;
    my %by_u1 = (kind => 'system', from => $u1->{user_id},
                 from_device => undef, id => undef);

    my $chat = group_chat($u1, 'three', [$u2, $u3]) or return;
    system_ok([$d1, $d1b, $d2, $d3], $chat, 1,
              { %by_u1, event => 'created', title => 'three' },
              'created', \@d);

    # U1, U2, U3 send twice, round robin: seqs 2..7.
    my $seq = 1;
    for my $round (1, 2) {
        for my $s ($d1, $d2, $d3) {
            my $got = send_ok($s, $chat, \@d, "$s->{name} round $round")
                or return;
            is $got, ++$seq, "$s->{name} round $round: seq $seq";
        }
    }
    ok pump(\@d, caught_up([$d1, $d1b, $d2, $d3], $chat, 7)),
       'every member device has seqs 1..7';

    my $r = api_request(POST => "/v1/chats/$chat/members",
                        token => $u1->{token},
                        body => { user_id => $u4->{user_id} });
    api_ok($r, 200, 'U1 adds U4') or return;
    system_ok([$d1, $d1b, $d2, $d3, $d4], $chat, 8,
              { %by_u1, event => 'member_added', user_id => $u4->{user_id},
                by => $u1->{user_id} }, 'member_added', \@d);

    my $s9 = send_ok($d2, $chat, \@d, 'U2 after the add') or return;
    is $s9, 9, 'U2 after the add: seq 9';
    ok pump(\@d, sub { got_seq($d4, $chat, 9) }), 'U4 gets seq 9';

    $r = api_request(DELETE => "/v1/chats/$chat/members/$u3->{user_id}",
                     token => $u1->{token});
    api_ok($r, 204, 'U1 removes U3') or return;
    system_ok([$d1, $d1b, $d2, $d4], $chat, 10,
              { %by_u1, event => 'member_removed',
                user_id => $u3->{user_id}, by => $u1->{user_id} },
              'member_removed', \@d);
    my $s11 = send_ok($d4, $chat, \@d, 'U4 after the removal') or return;
    is $s11, 11, 'U4 after the removal: seq 11';
    ok pump(\@d, caught_up([$d1, $d1b, $d2], $chat, 11)),
       'U1, U1b and U2 have seqs 1..11';
    quiet_ok(\@d, 1, 'after the last message');

    stream_ok($_, $chat, 11, $_->{name}) for $d1, $d1b, $d2;
    is_deeply [map { $_->{seq} } @{ $d4->{got}{$chat} || [] }], [8, 9, 10],
              'U4 got 8 (its member_added), 9 and 10';
    stream_ok($d4, $chat, 11, 'U4', from => 8);
    stream_ok($d3, $chat, 9, 'U3, who got nothing after 9');
    no_errors_ok(\@d, 'group');
};

behaviour 'multi-device: A1\'s message reaches A2, B1 and B2 once each '
          . 'and not A1; every device\'s stream is dense' => sub {
    my ($ua, $ub) = users('A1', 'B1') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my @d = (device($ua, 'A1'), device($ua2, 'A2'), device($ub, 'B1'),
             device($ub2, 'B2'));
    return if grep { !$_ } @d;
    my ($a1, $a2, $b1, $b2) = @d;

    my $s1 = send_ok($a1, $chat, \@d, 'A1 sends') or return;
    ok pump(\@d, sub { !grep { !@{ $_->{got}{$chat} || [] } } $a2, $b1, $b2 }),
       'A2, B1 and B2 get a msg';
    quiet_ok(\@d, 1, "after A1's message");
    for my $d ($a2, $b1, $b2) {
        is_deeply got_list($d, $chat), ["1 $MSGS{$chat}{1}{id}"],
                  "$d->{name} got A1's message once";
        is $d->{got}{$chat}[0]{from_device}, $ua->{device_id},
           "$d->{name}: from_device is A1";
        is $d->{got}{$chat}[0]{from}, $ua->{user_id}, "$d->{name}: from is A";
    }
    is_deeply got_list($a1, $chat), [], 'A1 got nothing';

    for my $s ($b2, $a2, $b1, $a1) {
        send_ok($s, $chat, \@d, "$s->{name} sends") or return;
    }
    ok pump(\@d, caught_up(\@d, $chat, 5)),
       'every device got or sent seqs 1..5';
    quiet_ok(\@d, 1, 'after the 5 messages');
    stream_ok($_, $chat, 5, $_->{name}) for @d;
    no_errors_ok(\@d, 'multi-device');
};

behaviour 'offline: 5 messages sent while B is away come in the sync, in '
          . 'order, before synced (count 5); acked, they never come '
          . 'again' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    my $db = device($ub, 'B') or return;
    hang_up($db);

    send_ok($da, $chat, [$da], "A sends $_ while B is away") or return
        for 1 .. 5;
    $db = device($ub, 'B back') or return;
    is_deeply [map { "$_->{chat_id} $_->{seq} $_->{id}" } @{ $db->{sync} }],
              [map { "$chat $_ $MSGS{$chat}{$_}{id}" } 1 .. 5],
              'the sync brings the 5, in order';
    is $db->{synced}{count}, 5, 'synced count 5';
    ok is_json_int($db->{synced}{count}), 'count is a JSON integer';
    stream_ok($db, $chat, 5, 'B back');

    ack($db, $chat, 5);
    hang_up($db);
    $db = device($ub, 'B once more') or return;
    is $db->{synced}{count}, 0, 'after acking 5: synced count 0';
    is_deeply got_list($db, $chat), [], '... and no msg';

    my $s6 = send_ok($da, $chat, [$da, $db], 'A sends a 6th') or return;
    ok pump([$da, $db], sub { @{ $db->{got}{$chat} || [] } }),
       'B gets a live msg';
    is_deeply got_list($db, $chat), ["6 $MSGS{$chat}{6}{id}"],
              'it is seq 6, live after the sync';
    no_errors_ok([$da, $db], 'offline');
};

behaviour 'offline in several chats: the sync keeps each chat\'s order '
          . 'and counts all' => sub {
    my ($ua, $uc, $ub) = users('A', 'C', 'B') or return;
    my $ab = direct_chat($ua, $ub) or return;
    my $cb = direct_chat($uc, $ub) or return;
    my $g = group_chat($ua, 'A B C', [$ub, $uc]) or return;
    my $da = device($ua, 'A') or return;
    my $c = device($uc, 'C') or return;
    for my $i (1 .. 4) {
        send_ok($da, $ab, [$da, $c], "A to B $i") or return;
        send_ok($c, $cb, [$da, $c], "C to B $i") or return;
        send_ok($i % 2 ? $da : $c, $g, [$da, $c], "group $i") or return;
    }
    my $db = device($ub, 'B') or return;
    my %per;
    push @{ $per{ $_->{chat_id} } }, $_->{seq} for @{ $db->{sync} };
    is_deeply $per{$ab}, [1 .. 4], 'the A-B chat: 1..4 in order';
    is_deeply $per{$cb}, [1 .. 4], 'the C-B chat: 1..4 in order';
    is_deeply $per{$g}, [1 .. 5], 'the group: created, then 2..5 in order';
    is $db->{synced}{count}, 13, 'synced count 13';
    stream_ok($db, $_, $_ eq $g ? 5 : 4, "B in chat $_") for $ab, $cb, $g;
    no_errors_ok([$da, $db, $c], 'several chats');
};

behaviour 'unacked messages come again on the next connection; after a '
          . 'partial ack only the rest; an ack is applied within 1s even '
          . 'without a close' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    my $db = device($ub, 'B') or return;
    send_ok($da, $chat, [$da, $db], "A sends $_") or return for 1 .. 3;
    ok pump([$db], sub { @{ $db->{got}{$chat} || [] } >= 3 }),
       'B gets 3 live';
    hang_up($db);

    $db = device($ub, 'B, second connection') or return;
    is_deeply [map { $_->{seq} } @{ $db->{sync} }], [1, 2, 3],
              'unacked, the 3 come again in the sync';
    is $db->{synced}{count}, 3, 'synced count 3';
    ack($db, $chat, 2);
    hang_up($db);

    $db = device($ub, 'B, third connection') or return;
    is_deeply [map { $_->{seq} } @{ $db->{sync} }], [3],
              'after acking 2: only seq 3';
    is $db->{synced}{count}, 1, 'synced count 1';
    send_ok($da, $chat, [$da, $db], 'A sends a 4th') or return;
    ok pump([$db], sub { @{ $db->{got}{$chat} || [] } >= 2 }),
       'B gets it live';
    stream_ok($db, $chat, 4, 'B, third connection', from => 3);
    ack($db, $chat, 4);
    ok wait_until(10, sub {
           (pg_scalar('SELECT acked FROM cursors WHERE chat_id = ? AND '
                      . 'device_id = ?', $chat, $ub->{device_id}) // 0) == 4
       }),
       'the ack of 4 is applied with the socket open (B\'s cursor at 4)';
    $db->{ws}->disconnect;           # TCP gone, no close frame

    send_ok($da, $chat, [$da], 'A sends a 5th while B is away') or return;
    $db = device($ub, 'B, fourth connection') or return;
    is_deeply [map { $_->{seq} } @{ $db->{sync} }], [5],
              'the ack of 4 held without a close: only seq 5';
    no_errors_ok([$da, $db], 'acks');
};

behaviour 'two workers: users whose sockets are spread over both get '
          . 'everything, dense, in a group and in a direct chat' => sub {
    my @u = users(map { "U$_" } 1 .. 6) or return;
    my @d = spread(@u) or return;
    my $g = group_chat($u[0], 'six', [@u[1 .. 5]]) or return;
    my $direct = direct_chat($u[0], $u[1]) or return;
    ok pump(\@d, caught_up(\@d, $g, 1)),
       'all six have the group\'s seq 1 (created)';

    # Each writes 3 to the group and U1, U2 5 each to their chat, without
    # waiting.
    for my $k (1 .. 3) {
        send_msg($_, $g) for @d;
    }
    for my $k (1 .. 5) {
        send_msg($_, $direct) for @d[0, 1];
    }
    my $group_done = caught_up(\@d, $g, 19);
    my $direct_done = caught_up([@d[0, 1]], $direct, 10);
    ok pump(\@d, sub {
        !grep { $_->{nsent} < 3 + ($_ == $d[0] || $_ == $d[1] ? 5 : 0) } @d
            and $group_done->() and $direct_done->();
    }), 'every send answered; every device has the group\'s 19, U1 and '
        . 'U2 their chat\'s 10';
    quiet_ok(\@d, 1, 'then');
    stream_ok($_, $g, 19, "$_->{name} in the group (worker "
                          . ($_->{pid} // '?') . ')') for @d;
    stream_ok($_, $direct, 10, "$_->{name} in the direct chat") for @d[0, 1];
    no_errors_ok(\@d, 'two workers');
};

behaviour 'many offline: 1200 sent quickly while B is away all come in '
          . 'the sync, in order, once, before synced (count 1200)' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    my $N = 1200;
    my $window = 100;
    my $t0 = time;
    my $written = 0;
    while ($da->{nsent} < $N && !@{ $da->{errors} }) {
        while ($written < $N && $written - $da->{nsent} < $window) {
            send_msg($da, $chat, "offline $written " . ('.' x 50));
            $written++;
        }
        my $had = $da->{nsent};
        pump([$da], sub { $da->{nsent} > $had || @{ $da->{errors} } })
            or last;
    }
    my @seqs = sort { $a <=> $b } keys %{ $da->{sent}{$chat} || {} };
    ok $da->{nsent} == $N && "@seqs" eq join(' ', 1 .. $N),
       sprintf('A: %d sends answered with seqs 1..%d (%.1fs)', $N, $N,
               time - $t0)
        or diag("answered $da->{nsent}; seqs " . ranges(@seqs) . '; errors: '
                . join(', ', map { ws_chat_show($_) }
                                 @{ $da->{errors} }[0 .. 4]));

    $t0 = time;
    my $db = device($ub, 'B') or return;
    my $took = time - $t0;
    my @got = map { $_->{seq} } @{ $db->{sync} };
    is scalar(@got), $N, sprintf('the sync brings %d msgs (%.1fs)',
                                 scalar @got, $took);
    ok "@got" eq join(' ', 1 .. $N), "... exactly 1..$N in order"
        or diag('got ' . ranges(@got));
    is $db->{synced}{count}, $N, "synced count $N";
    stream_ok($db, $chat, $N, 'B');
    quiet_ok([$db], 1, 'after synced');

    ack($db, $chat, $N);
    hang_up($db);
    $db = device($ub, 'B again') or return;
    is $db->{synced}{count}, 0, "after acking $N: synced count 0";
    no_errors_ok([$da, $db], '1200 offline');
};

behaviour 'concurrency: 3 senders on both workers write 100 messages each '
          . 'to one group at once; every member sees dense, strictly '
          . 'increasing seqs, no duplicate, all 301' => sub {
    my @u = users(qw(S1 S2 S3 R1 R2)) or return;
    my @d = spread(@u) or return;
    my @senders = @d[0 .. 2];
    my @receivers = @d[3, 4];
    my $g = group_chat($u[0], 'hammered', [@u[1 .. 4]]) or return;
    ok pump(\@d, caught_up(\@d, $g, 1)),
       'all five have the group\'s seq 1 (created)';

    my $N = 100;
    my $t0 = time;
    for my $k (1 .. $N) {
        send_msg($_, $g) for @senders;
    }
    my $total = 1 + 3 * $N;
    my $all = caught_up(\@d, $g, $total);
    my $done = pump(\@d, sub {
        !grep { $_->{nsent} < $N } @senders and $all->();
    });
    ok $done, sprintf('all %d sends answered and delivered (%.1fs)',
                      3 * $N, time - $t0)
        or diag(join '; ', map {
                    "$_->{name}: sent $_->{nsent}, got "
                    . scalar(@{ $_->{got}{$g} || [] }) } @d);
    quiet_ok(\@d, 1, 'then');
    for my $d (@d) {
        stream_ok($d, $g, $total, "$d->{name} (worker "
                                  . ($d->{pid} // '?') . ')');
    }
    is scalar(@{ $_->{got}{$g} || [] }), $total,
       "$_->{name} got $total msgs: 300 texts and 'created'"
        for @receivers;
    sends_in_order_ok($g, $N, @senders);
    no_errors_ok(\@d, 'concurrency');
};

nginx_stop();
done_testing();
