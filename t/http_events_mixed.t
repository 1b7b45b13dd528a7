# Switching transports (docs/protocol.md "HTTP fallback transport", with
# the guarantees of PROTOCOL.md section 5): a device that goes from
# WebSocket to long-poll, and back, gets every seq of each chat, in order
# on each connection, and nothing it acked again; a long-poll answer holds
# one page of the sync (chat_sync_batch) at most.
#
#   scripts/test.sh t/http_events_mixed.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::Events qw(:all);
use List::Util qw(max);
use Time::HiRes qw(time);

needs_stack();

$SIG{PIPE} = 'IGNORE';

my $BATCH = 16;         # chat_sync_batch: one long-poll answer holds a page

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
serve(defaults => 1, workers => 2,
      http_config => chat_http_config(extra => "chat_sync_batch $BATCH;\n"));


# ---------------------------------------------------------------------------
# Acks of a long-poll answer.

# "chat:seq,chat:seq" of a hash chat => seq.
sub ack_param {
    my ($h) = @_;
    return join ',', map { "$_:$h->{$_}" } sort keys %$h;
}

# The highest seq per chat of an answer.
sub highs {
    my ($list) = @_;
    my %h;
    for my $m (msgs_of($list)) {
        $h{ $m->{chat_id} } = $m->{seq}
            if $m->{seq} > ($h{ $m->{chat_id} } // 0);
    }
    return %h;
}

# ---------------------------------------------------------------------------
# A receiver across connections and transports: what each connection (a
# WebSocket, one long-poll answer, an SSE stream) got, and the acks that
# were applied before it started.

sub rx_new { { name => $_[0], conns => [], acked => {} } }

sub rx_conn {
    my ($rx, $label) = @_;
    my $c = { label => $label, floor => { %{ $rx->{acked} } }, msgs => [] };
    push @{ $rx->{conns} }, $c;
    return $c;
}

sub rx_got { my ($c, @m) = @_; push @{ $c->{msgs} }, annotate(msgs_of(\@m)) }

sub rx_acked {
    my ($rx, %a) = @_;
    for my $chat (keys %a) {
        $rx->{acked}{$chat} = $a{$chat}
            if $a{$chat} > ($rx->{acked}{$chat} // 0);
    }
}

# The seqs of a chat, over every connection in order.
sub rx_seqs {
    my ($rx, $chat) = @_;
    return map { seqs_of($_->{msgs}, $chat) } @{ $rx->{conns} };
}

# Four assertions: on each connection each chat's seqs strictly increase
# (no duplicate within one answer or stream); nothing at or below what was
# acked before the connection came again; every seq 1..last of each chat
# came (dense), nothing else; each msg carries what was sent.
sub rx_ok {
    my ($rx, $last, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my (@back, @again, @missing, @extra);
    for my $c (@{ $rx->{conns} }) {
        for my $chat (sort keys %$last) {
            my @s = seqs_of($c->{msgs}, $chat);
            push @back, "$c->{label}, chat $chat: "
                        . ranges_in_order(@s)
                if grep { $s[$_] <= $s[$_ - 1] } 1 .. $#s;
            my $floor = $c->{floor}{$chat} // 0;
            my @old = grep { $_ <= $floor } @s;
            push @again, "$c->{label}, chat $chat: " . ranges(@old)
                         . " (acked up to $floor before)" if @old;
        }
    }
    for my $chat (sort keys %$last) {
        my %n = map { $_ => 1 } rx_seqs($rx, $chat);
        my @m = grep { !$n{$_} } 1 .. $last->{$chat};
        my @x = grep { $_ < 1 || $_ > $last->{$chat} } keys %n;
        push @missing, "chat $chat: " . ranges(@m) if @m;
        push @extra, "chat $chat: " . ranges(@x) if @x;
    }
    ok !@back, "$name: each connection's seqs strictly increase per chat"
        or diag(join "\n", @back);
    ok !@again, "$name: nothing acked came again"
        or diag(join "\n", @again);
    ok !@missing && !@extra,
       "$name: every seq of each chat came ("
       . join(', ', map { "1..$last->{$_}" } sort keys %$last) . ')'
        or diag('missing: ' . join('; ', @missing) . "\noutside: "
                . join('; ', @extra) . "\n" . rx_show($rx));
    msgs_ok([map { @{ $_->{msgs} } } @{ $rx->{conns} }], $name);
}

sub rx_show {
    my ($rx) = @_;
    return join "\n", map {
        my $c = $_;
        my %chats = map { $_->{chat_id} => 1 } @{ $c->{msgs} };
        "  $c->{label}: " . join('; ', map {
            "chat $_ " . ranges_in_order(seqs_of($c->{msgs}, $_)) }
            sort keys %chats) } @{ $rx->{conns} };
}



# ---------------------------------------------------------------------------

behaviour 'mixed transports: B gets the first part of two chats over '
          . 'WebSocket and acks some, then the rest over long-poll (ack= '
          . 'the previous answer\'s highest) while A keeps sending: dense, '
          . 'in order, nothing acked again; and the reverse, long-poll '
          . 'then WebSocket with POST /v1/ack in between' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $c1 = direct_chat($ua, $ub) or return;
    my $c2 = group_chat($ua, 'A and B', [$ub]) or return;
    my $da = device($ua, 'A') or return;
    my $db = device($ub, 'B (WebSocket)') or return;
    my $rx = rx_new('B');
    my $ws = rx_conn($rx, 'WebSocket');

    send_msg($da, $c1) for 1 .. 60;
    send_msg($da, $c2) for 1 .. 5;
    ok pump([$da, $db], sub { $da->{nsent} >= 65
                              && caught_up([$db], $c1, 60)->()
                              && caught_up([$db], $c2, 6)->() }),
       'A sends 60 in chat 1 and 5 in chat 2 (after created): B gets them '
       . 'over WebSocket' or return;
    rx_got($ws, @{ $db->{log} });
    ack($db, $c1, 30);
    ack($db, $c2, 3);
    hang_up($db);
    rx_acked($rx, $c1 => 30, $c2 => 3);

    # Long-poll, with A sending 3 in chat 1 and 1 in chat 2 during each of
    # the first 8 polls.
    my $rounds = 8;
    my (%prev, %top, @answers, @big, @synced_wrong, $first);
    my $end = time + 60;
    my $i = 0;
    while (time < $end && $i < 60) {
        $i++;
        rx_acked($rx, %prev);          # applied before the sync starts
        my $q = 'wait=3' . (%prev ? '&ack=' . ack_param(\%prev) : '');
        my $conn = rx_conn($rx, "poll $i ($q)");
        my $h = poll_start($ub->{token}, $q);
        if ($i <= $rounds) {
            my $n = $da->{nsent};
            send_msg($da, $c1) for 1 .. 3;
            send_msg($da, $c2);
            pump([$da], sub { $da->{nsent} >= $n + 4 });
        }
        my $r = poll_finish_pumping($h, [$da], 10);
        my $a = answer_ok($r, "poll $i") or last;
        rx_got($conn, @$a);
        push @answers, $a;
        $first //= $a;
        my @m = msgs_of($a);
        push @big, "poll $i: " . scalar(@m) if @m > $BATCH;
        my ($si) = grep { $a->[$_]{type} eq 'synced' } 0 .. $#$a;
        if (defined $si) {
            my $before = () = msgs_of([@$a[0 .. $si - 1]]);
            # live msgs may come during the sync: count <= msgs before
            push @synced_wrong, "poll $i: count "
                                . ws_chat_show($a->[$si]{count})
                                . ", $before msgs before it"
                unless type_of($a->[$si], 'count') eq 'int'
                       && $a->[$si]{count} <= $before;
        }
        %prev = highs($a);
        $top{$_} = max($top{$_} // 0, $prev{$_}) for keys %prev;
        last if $i > $rounds
                && ($top{$c1} // 0) >= max(keys %{ $da->{sent}{$c1} })
                && ($top{$c2} // 0) >= max(keys %{ $da->{sent}{$c2} });
    }
    my %last = ($c1 => max(keys %{ $da->{sent}{$c1} }),
                $c2 => max(keys %{ $da->{sent}{$c2} }));
    is_deeply \%last, { $c1 => 60 + 3 * $rounds, $c2 => 6 + $rounds },
              'A\'s sends were all answered';
    my @fm = msgs_of($first || []);
    ok @fm >= 1 && @fm <= $BATCH
       && !(grep { $_->{type} eq 'synced' } @{ $first || [] }),
       "the first poll (33 owed): one sync page, 1..$BATCH msgs ("
       . scalar(@fm) . '), no synced' or diag(ws_chat_show($first));
    ok !@big, "no answer holds more than chat_sync_batch ($BATCH) msgs"
        or diag(join ', ', @big);
    ok !@synced_wrong, 'a synced in an answer: an integer count, at most '
                       . 'the msgs before it'
        or diag(join "\n", @synced_wrong);
    my @lp = @{ $rx->{conns} }[1 .. $#{ $rx->{conns} }];
    my %first_lp = map { my $chat = $_;
                         my ($s) = map { seqs_of($_->{msgs}, $chat) } @lp;
                         ($chat => $s) } $c1, $c2;
    is_deeply \%first_lp, { $c1 => 31, $c2 => 4 },
              'long-poll starts from the acked cursors: chat 1 at 31, '
              . 'chat 2 at 4 (what was not acked comes again)';
    my %lp_order = map { my $chat = $_;
                         my @s = map { seqs_of($_->{msgs}, $chat) } @lp;
                         ($chat => [@s]) } $c1, $c2;
    is_deeply \%lp_order, { $c1 => [31 .. $last{$c1}],
                            $c2 => [4 .. $last{$c2}] },
              'over the polls, each chat\'s seqs come once each, in order '
              . "(chat 1: 31..$last{$c1}, chat 2: 4..$last{$c2})"
        or diag(rx_show($rx));
    rx_ok($rx, \%last, 'WebSocket then long-poll');
    note(scalar(@answers) . ' polls');

    rx_acked($rx, %prev);
    my $q = 'wait=1' . (%prev ? '&ack=' . ack_param(\%prev) : '');
    my $r = poll($ub->{token}, $q);
    my $a = answer_ok($r, "a last poll ($q)");
    is_deeply [msgs_of($a || [])], [], '... nothing more, nothing again'
        or diag(ws_chat_show($a));

    # The reverse: long-poll first, then WebSocket.
    my ($ua2, $ub2) = users('A2', 'B2') or return;
    my $d1 = direct_chat($ua2, $ub2) or return;
    my $d2 = group_chat($ua2, 'A2 and B2', [$ub2]) or return;
    my $da2 = device($ua2, 'A2') or return;
    send_msg($da2, $d1) for 1 .. 40;
    send_msg($da2, $d2) for 1 .. 3;
    ok pump([$da2], sub { $da2->{nsent} >= 43 }),
       'A2 sends 40 in chat 1 and 3 in chat 2 while B2 is away' or return;
    my $rx2 = rx_new('B2');
    my $p1 = rx_conn($rx2, 'poll 1');
    $a = answer_ok(poll($ub2->{token}, 'wait=5'), 'B2\'s first poll')
        or return;
    rx_got($p1, @$a);
    my %h1 = highs($a);
    rx_acked($rx2, %h1);
    $q = 'wait=5&ack=' . ack_param(\%h1);
    my $p2 = rx_conn($rx2, "poll 2 ($q)");
    $a = answer_ok(poll($ub2->{token}, $q), 'B2\'s second poll') or return;
    rx_got($p2, @$a);
    my ($ch) = grep { seqs_of($a, $_) >= 2 } $d1, $d2;
    ok $ch, 'the second answer has 2 msgs or more of a chat' or return;
    my @s = seqs_of($a, $ch);
    my $mid = $s[int($#s / 2)];
    $r = api_request(POST => '/v1/ack', token => $ub2->{token},
                     body => { chat_id => $ch, seq => $mid });
    api_ok($r, 204, "B2: POST /v1/ack {chat $ch, seq $mid}");
    rx_acked($rx2, $ch => $mid);
    my %floor = %{ $rx2->{acked} };

    my $dbw = device($ub2, 'B2 (WebSocket)') or return;
    send_msg($da2, $d1) for 1 .. 5;
    ok pump([$da2, $dbw], sub { $da2->{nsent} >= 48
                                && caught_up([$dbw], $d1, 45,
                                             'B2 (WebSocket)'
                                             => ($floor{$d1} // 0) + 1)->()
                                && caught_up([$dbw], $d2, 4,
                                             'B2 (WebSocket)'
                                             => ($floor{$d2} // 0) + 1)->() }),
       'A2 sends 5 more: B2 gets the rest over WebSocket';
    my $wsc = rx_conn($rx2, 'WebSocket');
    $wsc->{floor} = \%floor;
    rx_got($wsc, @{ $dbw->{log} });
    is_deeply { map { $_ => [seqs_of($wsc->{msgs}, $_)] } $d1, $d2 },
              { $d1 => [($floor{$d1} // 0) + 1 .. 45],
                $d2 => [($floor{$d2} // 0) + 1 .. 4] },
              'the WebSocket starts right after what was acked (?ack= and '
              . 'POST /v1/ack), once each, in order, to the end'
        or diag(rx_show($rx2));
    rx_ok($rx2, { $d1 => 45, $d2 => 4 }, 'long-poll then WebSocket');
    no_errors_ok([$da, $da2, $dbw], 'mixed transports');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
