# The calls of the HTTP fallback transport (docs/protocol.md "HTTP
# fallback transport"): POST /v1/send, /v1/ack, /v1/read and /v1/presence
# answer what the WebSocket would, errors as HTTP statuses; what they do
# reaches WebSockets (msgs, receipts) and the long-poll.
#
#   scripts/test.sh t/http_events_calls.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::Events qw(:all);
use Test::Chat::JSON qw(ms);
use Time::HiRes qw(time);

needs_stack();

$SIG{PIPE} = 'IGNORE';

my $MAXMSG = 1000;      # chat_max_message_size, bytes

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
serve(defaults => 1, workers => 2, http_config => chat_http_config(
          extra => "chat_max_message_size $MAXMSG;\n"));


# ---------------------------------------------------------------------------

behaviour 'POST /v1/send: sent with a seq, a resend the same seq and '
          . 'nothing new delivered; errors as statuses; POST /v1/ack, '
          . '/v1/read (receipts to the author\'s WebSocket), /v1/presence'
          => sub {
    my ($ua, $ub, $uc) = users('A', 'B', 'C') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $cb = direct_chat($ub, $uc) or return;
    my $da = device($ua, 'A (WebSocket, watching receipts)') or return;
    my $db = device($ub, 'B') or return;
    my @devs = ($da, $db);
    my $send = sub {
        my ($acct, $body, %o) = @_;
        return api_request(POST => '/v1/send', token => $acct->{token},
                           body => $body, %o);
    };

    api_error_is(api_request(POST => '/v1/send',
                             body => { id => 'n', chat_id => $chat,
                                       text => 'x' }),
                 401, 'unauthorized', 'POST /v1/send without a token');

    my $t0 = ms(time);
    my $r = $send->($ua, { id => 'h1', chat_id => $chat,
                           text => 'hello over HTTP' });
    api_ok($r, 200, 'A: POST /v1/send') or return;
    my $s = $r->{json};
    annotate($s);
    is_deeply { map { $_ => $s->{$_} } qw(type id chat_id seq) },
              { type => 'sent', id => 'h1', chat_id => $chat, seq => 1 },
              '... {"type":"sent","id":"h1","chat_id","seq":1,"ts"}'
        or diag(ws_chat_show($s));
    ok type_of($s, 'chat_id') eq 'string' && type_of($s, 'seq') eq 'int'
       && type_of($s, 'ts') eq 'int' && $s->{ts} >= $t0 - 60_000
       && $s->{ts} <= ms(time) + 60_000,
       '... chat_id a string, seq an integer, ts epoch ms now'
        or diag(ws_chat_show($s));
    ok pump(\@devs, sub { got_seq($db, $chat, 1) }, within => 5),
       'B gets it over WebSocket';
    my $m = got_seq($db, $chat, 1);
    is_deeply { map { $_ => $m && $m->{$_} }
                qw(type chat_id seq from from_device id kind text ts) },
              { type => 'msg', chat_id => $chat, seq => 1,
                from => $ua->{user_id}, from_device => $ua->{device_id},
                id => 'h1', kind => 'text', text => 'hello over HTTP',
                ts => $s->{ts} },
              '... from A\'s device, with the id, text and ts of the send'
        or diag(ws_chat_show($m));

    $r = $send->($ua, { id => 'h1', chat_id => $chat,
                        text => 'hello over HTTP' });
    api_ok($r, 200, 'A resends h1');
    is_deeply { map { $_ => $r->{json}{$_} } qw(id seq ts) },
              { id => 'h1', seq => 1, ts => $s->{ts} },
              '... the same seq and ts' or diag(api_show($r));
    quiet_ok([$db], 1, 'B after the resend');

    $r = $send->($ua, { type => 'send', id => 'h2', chat_id => $chat,
                        text => 'with "type"' });
    api_ok($r, 200, 'A sends h2 with "type":"send"');
    is $r->{json}{seq}, 2, '... seq 2';
    api_error_is($send->($ua, { type => 'ack', id => 'h3',
                                chat_id => $chat, text => 'x' }),
                 400, 'bad_request', '"type":"ack" to /v1/send');
    api_error_is($send->($ua, { chat_id => $chat, text => 'no id' }),
                 400, 'bad_request', 'no id');
    api_error_is($send->($ua, { id => 'x' x 65, chat_id => $chat,
                                text => '65-byte id' }),
                 400, 'bad_request', 'a 65-byte id');
    api_error_is($send->($ua, { id => 'h4', chat_id => $chat }),
                 400, 'bad_request', 'no text');
    api_error_is($send->($ua, '{"id":"h5",'), 400, 'bad_request',
                 'invalid JSON');
    api_error_is($send->($ua, { id => 'h6', chat_id => $cb,
                                text => 'not mine' }),
                 403, 'forbidden', 'A sends to the chat of B and C');
    api_error_is($send->($ua, { id => 'h7', chat_id => $chat,
                                text => 'x' x ($MAXMSG + 1) }),
                 413, 'too_large', 'A sends ' . ($MAXMSG + 1) . ' bytes');
    $r = $send->($ua, { id => 'h8', chat_id => $chat,
                        text => 'y' x $MAXMSG });
    api_ok($r, 200, "A sends $MAXMSG bytes");
    is $r->{json}{seq}, 3, '... seq 3: the refusals took no seq';
    pump(\@devs, sub { got_seq($db, $chat, 3) }, within => 5);
    quiet_ok([$db], 0.5, 'then');
    is_deeply [map { "$_->{seq} $_->{id}" } @{ $db->{got}{$chat} || [] }],
              ['1 h1', '2 h2', '3 h8'],
              'B got h1, h2 and h8, once each, nothing refused';

    # ack and read over HTTP.
    $r = api_request(POST => '/v1/ack', token => $ub->{token},
                     body => { chat_id => $chat, seq => 2 });
    api_ok($r, 204, 'B: POST /v1/ack {seq 2}');
    api_error_is(api_request(POST => '/v1/ack', token => $ub->{token},
                             body => { chat_id => $chat, seq => 'x' }),
                 400, 'bad_request', 'B: POST /v1/ack with seq "x"');
    pump(\@devs, sub { grep { $_->{status} eq 'delivered' }
                       @{ $da->{receipts} || [] } }, within => 5);
    my ($rc) = grep { $_->{status} eq 'delivered' }
               @{ $da->{receipts} || [] };
    is_deeply $rc && { map { $_ => $rc->{$_} }
                       qw(type chat_id user_id status seq) },
              { type => 'receipt', chat_id => $chat,
                user_id => $ub->{user_id}, status => 'delivered', seq => 2 },
              'A gets B\'s delivered receipt, seq 2'
        or diag(join ', ', map { ws_chat_show($_) }
                                   @{ $da->{receipts} || [] });
    hang_up($db);
    $r = poll($ub->{token}, 'wait=1');
    my $a = answer_ok($r, 'B polls after closing');
    is_deeply [seqs_of($a || [], $chat)], [3],
              '... only seq 3: 1 and 2 were acked by POST /v1/ack'
        or diag(ws_chat_show($a));

    $r = api_request(POST => '/v1/read', token => $ub->{token},
                     body => { chat_id => $chat, seq => 3 });
    api_ok($r, 204, 'B: POST /v1/read {seq 3}');
    pump([$da], sub { grep { $_->{status} eq 'read' }
                      @{ $da->{receipts} || [] } }, within => 5);
    my ($rd) = grep { $_->{status} eq 'read' } @{ $da->{receipts} || [] };
    is_deeply $rd && { map { $_ => $rd->{$_} }
                       qw(type chat_id user_id status seq) },
              { type => 'receipt', chat_id => $chat,
                user_id => $ub->{user_id}, status => 'read', seq => 3 },
              'A gets B\'s read receipt, seq 3'
        or diag(join ', ', map { ws_chat_show($_) }
                                   @{ $da->{receipts} || [] });
    api_error_is(api_request(POST => '/v1/read', token => $ub->{token},
                             body => { chat_id => $chat, seq => 'x' }),
                 400, 'bad_request', 'POST /v1/read with seq "x"');
    # a read of a chat one is not in changes nothing, and is not answered
    # otherwise (PROTOCOL.md 4)
    is api_request(POST => '/v1/read', token => $uc->{token},
                   body => { chat_id => $chat, seq => 1 })->{status}, 204,
       'C reads the chat of A and B: 204, nothing changes';

    # presence.
    $r = api_request(POST => '/v1/presence', token => $ub->{token},
                     body => { subscribe => [$ua->{user_id}] });
    is $r->{status}, 200, 'B: POST /v1/presence {subscribe: [A]}: 200'
        or diag(api_show($r));
    ok ref $r->{json} eq 'ARRAY' && @{ $r->{json} } == 1,
       '... an array of one presence object' or diag(api_show($r));
    presence_ok(undef, ref $r->{json} eq 'ARRAY' ? $r->{json}[0] : undef,
                $ua, 1, undef, '... A (connected over WebSocket)');
    $r = api_request(POST => '/v1/presence', token => $ub->{token},
                     body => { type => 'presence',
                               unsubscribe => [$ua->{user_id}] });
    is $r->{status}, 200, 'B: POST /v1/presence {unsubscribe: [A]}: 200';
    is_deeply $r->{json}, [], '... []' or diag(api_show($r));
    api_error_is(api_request(POST => '/v1/presence', token => $uc->{token},
                             body => { subscribe => [$ua->{user_id}] }),
                 403, 'forbidden', 'C subscribes to A (no shared chat)');
    api_error_is(api_request(POST => '/v1/presence', token => $ub->{token},
                             body => { subscribe => $ua->{user_id} }),
                 400, 'bad_request', 'subscribe with a string');
    no_errors_ok([$da], 'POST calls');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
