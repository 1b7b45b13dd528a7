# The HTTP fallback transport (docs/protocol.md "HTTP fallback transport")
# as Server-Sent Events: GET /v1/events with Accept: text/event-stream (or
# ?sse=1) streams ready, the sync, synced, then live events; msg events
# carry "id: <chat_id>:<seq>", Last-Event-ID (or ?last_event_id=) acks up
# to it and resumes after it; ": ping" comments keep an idle stream
# alive; a presence error is an event and the stream goes on.
#
#   scripts/test.sh t/http_events_sse.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::Events qw(:all);
use Time::HiRes qw(time);

needs_stack();

$SIG{PIPE} = 'IGNORE';

my $PING = 1;           # chat_ws_ping_interval of /v1/ (SSE ": ping")

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
serve(defaults => 1, workers => 2, http_config => chat_http_config(),
      config => <<"END");
location /v1/ {
    chat_api;
    chat_ws_ping_interval ${PING}s;
}
location = /v1/ws { chat_ws; }
END


# ---------------------------------------------------------------------------

behaviour 'SSE: ready, the sync, synced, then live, msg events with id '
          . 'chat:seq; ": ping" while idle; dropped mid-conversation and '
          . 'resumed with Last-Event-ID (then ?last_event_id= with ?sse=1 '
          . 'and ?token=): dense, nothing twice, live goes on' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    send_ok($da, $chat, [$da], "A sends $_ while B is away") or return
        for 1 .. 10;

    my $r = api_request(GET => '/v1/events',
                        headers => ['Accept: text/event-stream']);
    api_error_is($r, 401, 'unauthorized',
                 'Accept: text/event-stream without a token');

    my $s1 = sse_open(token => $ub->{token});
    sse_head_ok($s1, 'stream 1 (Accept: text/event-stream)') or return;
    my ($sync, $synced) = sse_sync_ok($s1, $ub, 'stream 1');
    is_deeply [map { $_->{seq} } @$sync], [1 .. 10],
              'stream 1: the sync brings 1..10 in order';
    is $synced && $synced->{count}, 10, 'stream 1: synced count 10';

    my $t_idle = time;
    my $ev = sse_next($s1, $PING * 2 + 1.5);
    ok !$ev && !$s1->{eof} && !$s1->{ended},
       "stream 1: nothing more while idle ($PING s ping interval)"
        or diag('got ' . sse_show($ev, $s1));
    ok sse_pings($s1) >= 1,
       sprintf('stream 1: ": ping" comments while idle (%d in %.1fs)',
               sse_pings($s1), time - $t_idle);

    # Live: A sends 11..15; B reads 3 of them and drops the stream.
    my $n = $da->{nsent};
    send_msg($da, $chat) for 1 .. 5;
    pump([$da], sub { $da->{nsent} >= $n + 5 });
    my @live = sse_msgs($s1, 3, 10);
    is_deeply [map { $_->{seq} } @live], [11, 12, 13],
              'stream 1: live 11, 12, 13';
    my $last_id = $s1->{events}[-1]{id};
    is $last_id, "$chat:13", 'stream 1: the last event id is chat:13';
    sse_close($s1);

    send_ok($da, $chat, [$da], "A sends $_ while B is away again") or return
        for 16 .. 20;
    my $s2 = sse_open(token => $ub->{token}, last_event_id => $last_id);
    sse_head_ok($s2, "stream 2 (Last-Event-ID: $last_id)") or return;
    ($sync, $synced) = sse_sync_ok($s2, $ub, 'stream 2');
    is_deeply [map { $_->{seq} } @$sync], [14 .. 20],
              'stream 2: the sync brings 14..20: not 13 or before (acked '
              . 'by Last-Event-ID), and 14, 15 that stream 1 did not read';
    is $synced && $synced->{count}, 7, 'stream 2: synced count 7';
    $n = $da->{nsent};
    send_msg($da, $chat) for 1 .. 2;
    pump([$da], sub { $da->{nsent} >= $n + 2 });
    my @live2 = sse_msgs($s2, 2, 10);
    is_deeply [map { $_->{seq} } @live2], [21, 22],
              'stream 2: live 21, 22';
    my $last_id2 = $s2->{events}[-1]{id} // '';
    sse_close($s2);

    for my $bad (['Last-Event-ID: garbage', undef],
                 [undef, "sse=1&token=$ub->{token}&last_event_id=$chat:x"]) {
        my $r = api_request(GET => '/v1/events' . (defined $bad->[1]
                                                   ? "?$bad->[1]" : ''),
                            (token => $ub->{token}) x !defined $bad->[1],
                            headers => ['Accept: text/event-stream',
                                        grep { defined } $bad->[0]]);
        api_error_is($r, 400, 'bad_request',
                     'a malformed last event id ('
                     . ($bad->[0] // "?last_event_id=$chat:x") . ')');
    }

    my $s3 = sse_open(query => "sse=1&token=$ub->{token}"
                               . "&last_event_id=$last_id2",
                      no_accept => 1);
    sse_head_ok($s3, "stream 3 (?sse=1&token=...&last_event_id="
                     . "$last_id2, no Accept, no Authorization)") or return;
    ($sync, $synced) = sse_sync_ok($s3, $ub, 'stream 3');
    is_deeply [map { $_->{seq} } @$sync], [], 'stream 3: an empty sync';
    is $synced && $synced->{count}, 0, 'stream 3: synced count 0';
    send_ok($da, $chat, [$da], 'A sends 23') or return;
    my @live3 = sse_msgs($s3, 1, 10);
    is_deeply [map { $_->{seq} } @live3], [23], 'stream 3: live 23';
    sse_close($s3);

    my @all = map { $_->{json} } grep { ($_->{type} // '') eq 'msg' }
              map { @{ $_->{events} } } $s1, $s2, $s3;
    is_deeply [map { $_->{seq} } @all], [1 .. 23],
              'over the three streams: 1..23, each once, in order'
        or diag(ranges_in_order(map { $_->{seq} } @all));
    msgs_ok(\@all, 'the streams');
    sse_format_ok('the streams', $s1, $s2, $s3);

    # A stream asked to watch a stranger: an error event, and it goes on.
    my ($us) = users('S') or return;
    my $s4 = sse_open(token => $ub->{token},
                      query => "presence=$us->{user_id}");
    sse_head_ok($s4, 'stream 4 (?presence=<a stranger>)') or return;
    my @ev;
    while (my $e = sse_next($s4, 5)) {
        push @ev, $e;
        last if grep { ($_->{type} // '') eq 'error' } @ev
                and grep { ($_->{type} // '') eq 'synced' } @ev;
    }
    my ($err) = grep { ($_->{type} // '') eq 'error' } @ev;
    is $err && $err->{json}{code}, 'forbidden',
       'stream 4: an error event, code forbidden'
        or diag(join "\n", map { sse_show($_) } @ev);
    ok !$s4->{eof} && !$s4->{ended}, 'stream 4: goes on';
    is_deeply [map { $_->{json}{seq} } grep { ($_->{type} // '') eq 'msg' }
               @ev], [23],
              'stream 4 (no last event id): its sync brings 23 again '
              . '(stream 3 got it but never acked it)';
    send_ok($da, $chat, [$da], 'A sends 24') or return;
    is_deeply [map { $_->{seq} } sse_msgs($s4, 1, 10)], [24],
              'stream 4: live 24';
    sse_format_ok('stream 4', $s4);
    sse_close($s4);
    no_errors_ok([$da], 'SSE');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
