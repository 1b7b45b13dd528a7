# The HTTP fallback transport (docs/protocol.md "HTTP fallback transport")
# as a long-poll: GET /v1/events answers a JSON array of what the WebSocket
# would have sent, at once when something is owed, [] after ?wait=N; a
# live msg ends a waiting poll; unacked msgs come again, ?ack= applies
# acks before the sync; malformed parameters are 400; chat_connections
# counts a poll and a stream while they last.
#
#   scripts/test.sh t/http_events_poll.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::Events qw(:all);
use Time::HiRes qw(time);

needs_stack();

$SIG{PIPE} = 'IGNORE';

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
serve(defaults => 1, workers => 2, http_config => chat_http_config(),
      config => chat_locations() . "location = /metrics { chat_metrics; }\n");


# ---------------------------------------------------------------------------

behaviour 'long-poll: 401 without or with a bad token, ?token= works; '
          . "nothing owed: [] after ?wait=1; a msg sent over WebSocket "
          . 'ends a waiting poll at once with the WebSocket\'s object; '
          . 'unacked it comes again, acked never; malformed wait, ack, '
          . 'presence: 400' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $chat = direct_chat($ua, $ub) or return;

    api_error_is(poll(undef, 'wait=0'), 401, 'unauthorized',
                 'GET /v1/events without a token');
    api_error_is(poll('x' x 43, 'wait=0'), 401, 'unauthorized',
                 'GET /v1/events with a bad bearer token');
    api_error_is(poll(undef, 'wait=0&token=' . ('y' x 43)), 401,
                 'unauthorized', 'GET /v1/events?token=<bad>');

    my $r = poll($ub->{token}, 'wait=1');
    my $a = answer_ok($r, 'B polls, ?wait=1, nothing owed');
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... the answer is []';
    ok $r->{elapsed} >= 0.8 && $r->{elapsed} < 3,
       sprintf('... after about a second (%.2fs)', $r->{elapsed});

    $r = poll(undef, "wait=0&token=$ub->{token}");
    $a = answer_ok($r, 'B polls with ?token= and ?wait=0');
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
    ok $r->{elapsed} < 0.8, sprintf('... at once (%.2fs)', $r->{elapsed});

    my $da = device($ua, 'A') or return;
    my $db2 = device($ub2, 'B2 (WebSocket)') or return;
    my $h = poll_start($ub->{token}, 'wait=20');
    pump([$da, $db2], undef, within => 0.5);
    my $seq = send_ok($da, $chat, [$da, $db2], 'A sends while B polls')
        or return;
    my $t_sent = time;
    $r = poll_finish_pumping($h, [$da, $db2], 10);
    $a = answer_ok($r, 'B\'s waiting poll') or return;
    ok $r->{ended_at} - $t_sent < 1.5,
       sprintf('... ends %.2fs after "sent" (of ?wait=20)',
               $r->{ended_at} - $t_sent);
    is_deeply [map { "$_->{type} " . ($_->{seq} // '') } @$a], ["msg $seq"],
              '... with that msg alone (a live answer has no synced)'
        or diag(ws_chat_show($a));
    msgs_ok($a, 'B\'s poll');
    pump([$da, $db2], sub { got_seq($db2, $chat, $seq) }, within => 5);
    my $ws = got_seq($db2, $chat, $seq);
    annotate($ws);
    ok $ws && @$a && $a->[0]{_canon} eq $ws->{_canon},
       '... the same object, field for field, that B2 got over WebSocket'
        or diag('poll: ' . ws_chat_show($a->[0]) . "\nWebSocket: "
                . ws_chat_show($ws));

    api_error_is(poll($ub->{token}, "wait=0&ack=$chat:$seq,zzz"), 400,
                 'bad_request', "GET /v1/events?ack=$chat:$seq,zzz (one "
                 . 'good pair, one malformed)');
    $r = poll($ub->{token}, 'wait=1');
    $a = answer_ok($r, 'B polls again, without an ack');
    is_deeply [map { $_->{type} eq 'msg' ? "msg $_->{seq}"
                     : $_->{type} eq 'synced' ? "synced $_->{count}"
                     : () } @{ $a || [] }],
              ["msg $seq", 'synced 1'],
              '... the unacked msg comes again, in a sync: [msg, synced '
              . '(count 1)]; nothing of the malformed request was applied'
        or diag(ws_chat_show($a));
    ok $r->{elapsed} < 0.8, sprintf('... at once (%.2fs)', $r->{elapsed});

    $r = poll($ub->{token}, "wait=1&ack=$chat:$seq");
    $a = answer_ok($r, "B polls with ?ack=$chat:$seq");
    is_deeply [msgs_of($a || [])], [], '... the acked msg does not come'
        or diag(ws_chat_show($a));
    ok $r->{elapsed} >= 0.8,
       sprintf('... nothing owed: the poll waits (%.2fs)', $r->{elapsed});
    $r = poll($ub->{token}, 'wait=0');
    is_deeply [msgs_of(answer_ok($r, 'and the next one, without ack')
                       || [])], [], '... nor there'
        or diag(api_show($r));

    my $ida = $ua->{user_id};
    my @bad = ('wait=abc', 'wait=61', 'wait=-1', 'wait=1&ack=abc',
               "wait=1&ack=$chat", "wait=1&ack=$chat:", "wait=1&ack=:1",
               "wait=1&ack=$chat:x", 'wait=1&ack='
               . join(',', map { "$chat:$_" } 1 .. 257),
               "wait=1&presence=$ida:maybe", "wait=1&presence=$ida:12ab",
               'wait=1&presence=:on');
    for my $q (@bad) {
        my $show = length $q > 60 ? substr($q, 0, 40) . '... (257 pairs)'
                                  : $q;
        api_error_is(poll($ub->{token}, $q, timeout => 5), 400,
                     'bad_request', "GET /v1/events?$show");
    }

    # chat_connections counts a long-poll and a stream while they last.
    my $c0 = connections();
    ok defined $c0, "chat_connections is there ($c0)"
        or diag(http_request("GET /metrics HTTP/1.0\r\n\r\n")->{body});
    $h = poll_start($ub->{token}, 'wait=3');
    my $st = sse_open(token => $ub2->{token});
    sse_sync_ok($st, $ub2, 'B2 opens a stream');
    my $c1 = connections();
    is $c1, ($c0 // 0) + 2, 'a long-poll and a stream open: '
                            . 'chat_connections + 2';
    poll_finish($h, timeout => 6);
    sse_close($st);
    ok wait_until(3, sub { (connections() // -1) == ($c0 // 0) }),
       'both ended: chat_connections as before (' . (connections() // '?')
       . ')';
    no_errors_ok([$da, $db2], 'long-poll basics');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
