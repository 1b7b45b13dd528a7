# The HTTP fallback transport (docs/protocol.md "HTTP fallback
# transport") across a reload: a HUP ends open Server-Sent Events streams
# and long-polls within a few seconds, the old workers exit, and the new
# ones serve both.
#
#   scripts/test.sh t/http_events_reload.t

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

behaviour 'reload (HUP) with an SSE stream and a long-poll open: both end '
          . 'within a few seconds, the old workers exit; the new ones '
          . 'serve' => sub {
    my ($ux, $uy) = users('X', 'Y') or return;
    my $s = sse_open(token => $ux->{token});
    sse_head_ok($s, 'X opens a stream') or return;
    sse_sync_ok($s, $ux, 'X\'s stream');
    my $open = connections() // 0;
    my $h = poll_start($uy->{token}, 'wait=30');
    ok wait_until(10, sub { (connections() // 0) > $open }),
       'Y\'s long-poll is open (chat_connections counts it)';
    my $t0 = time;
    my @old = nginx_reload();
    ok scalar(@old), 'HUP: new workers run';

    while (!$s->{eof} && !$s->{ended} && time < $t0 + 8) {
        sse_read($s, 0.2);
    }
    my $sse_end = $s->{ended_at} // $s->{eof_at};
    ok defined $sse_end && $sse_end - $t0 < 5,
       sprintf('the SSE stream ends (%s after HUP)',
               defined $sse_end ? sprintf('%.2fs', $sse_end - $t0)
                                : 'not within 8s');
    ok $s->{ended}, '... with the last chunk (a complete HTTP answer)'
        or diag('the connection closed without it; the last bytes of the '
                . 'stream: ' . ws_chat_show(substr($s->{all}, -120))
                . ', undecoded: ' . ws_chat_show($s->{raw}));
    sse_close($s);

    my $r = poll_finish($h, timeout => 8);
    my $end = $r->{ended_at} - $t0;
    ok $end < 5, sprintf('the long-poll (?wait=30) ends %.2fs after HUP',
                         $end);
    ok !defined $r->{status}
       || ($r->{status} eq '200' && ref $r->{json} eq 'ARRAY'),
       '... closed, or answered 200 with a JSON array'
        or diag(api_show($r));
    note(defined $r->{status} ? "the long-poll was answered: $r->{status} "
                                . ($r->{body} // '')
                              : 'the long-poll was closed without an answer');
    ok nginx_wait_exit(5, @old), 'the old workers exit';

    $r = poll($uy->{token}, 'wait=0');
    is_deeply [map { canon($_) } @{ answer_ok($r, 'a poll after the reload')
                                     || [] }], [], '... []';
    my $s2 = sse_open(token => $ux->{token});
    sse_head_ok($s2, 'a stream after the reload');
    sse_sync_ok($s2, $ux, 'the new stream');
    sse_close($s2);
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
