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
use Test::Chat::Delivery qw(:serve :devices);
use Time::HiRes qw(time);

needs_stack();

# PostgreSQL and Redis outlive this file: a prefix of our own (the same on
# both hosts), and new users (random_mobile) in every behaviour. On each
# host a second server on its port2 with reuseport: each worker has a
# listening socket of its own there, so sockets can be placed on either
# worker. $TEST_NGINX_PORT2 is each instance's own.
serve(defaults => 1, http_config => chat_http_config(port2 => 1));


sub where {
    my ($d) = @_;
    return "host $d->{host}" . (defined $d->{pid} ? " worker $d->{pid}" : '');
}


behaviour 'spread over two hosts: A on host 1, A\'s second device and B on '
          . 'host 2, C on host 1; in a direct chat and a group every '
          . 'device gets everything the others send, once, dense',
          hosts => 2 => sub {
    my ($ua, $ub, $uc) = users_across_hosts('A', 'B', 'C') or return;
    my $ua2 = api_link_device($ua, device_name => 'A2',
                              port => nginx2_port()) or return;
    my $da = device($ua, 'A', host => 1) or return;
    my $da2 = device($ua2, 'A2', host => 2) or return;
    my $db = device($ub, 'B', host => 2) or return;
    my $dc = device($uc, 'C', host => 1) or return;
    my @all = ($da, $da2, $db, $dc);

    # The direct chat, created on host 2.
    my $direct = direct_chat($ub, $ua, host => 2) or return;
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
          . 'increasing, once',
          hosts => 2 => sub {
    my @u = users_across_hosts(qw(S1 S2 S3 S4 R1 R2)) or return;
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
    sends_in_order_ok($g, $N, @senders);
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
          . 'it acked on host 2 never comes again on host 1',
          hosts => 2 => sub {
    my ($ua, $ub) = users_across_hosts('A', 'B') or return;
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
