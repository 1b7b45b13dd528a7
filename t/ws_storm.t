# Many devices coming back, or going, at once (issue 14, "reconnect
# storm"): a worker starts a bounded number of sessions at a time and lets
# the others wait their turn, and gathers what closing sockets write, so
# PostgreSQL's queue is never full: every device gets "ready" and
# "synced" (no 1013 "unavailable"), and nothing is refused when they all
# go. The queue is made small here (chat_postgres_max_waiting 32) so that
# a few hundred devices are a storm for it.
#
#   scripts/test.sh t/ws_storm.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations users
                              direct_chat);
use Time::HiRes qw(time);

needs_stack();

my $N = 200;

ok nginx_start(workers => 1,
               config => chat_locations()
                         . "location = /metrics { chat_metrics; }\n",
               http_config => chat_http_config(
                   extra => "chat_postgres_max_waiting 32;\n"
                            . "chat_codes_per_minute 100000;\n")),
   'nginx starts';

my @users = users(map { "D$_" } 1 .. $N);
is scalar(@users), $N, "$N users sign up";

# each has a message waiting from the next one: its sync brings it
for my $i (0 .. $#users) {
    my $from = $users[ ($i + 1) % @users ];
    my $chat = direct_chat($from, $users[$i]) or next;
    api_request('POST', '/v1/send', token => $from->{token},
                body => { id => "storm-$i", chat_id => $chat,
                          text => 'hello' });
}

# every session of the worker has ended (its closing work is queued)
sub all_gone {
    return wait_until(10, sub { (metric('chat_connections') // -1) == 0 });
}

# The storm: every socket opens, then every one sends its auth at once.
my $mark = error_log_mark();
my @ws = map { ws_connect(path => '/v1/ws', timeout => 5) } @users;
is scalar(grep { ($_->status // 0) == 101 } @ws), $N,
   "$N WebSockets open";
my $t0 = time;
$ws[$_]->send_json({ type => 'auth', token => $users[$_]{token} })
    for 0 .. $#ws;

my (%got, @closed);
for my $i (0 .. $#ws) {
    my $deadline = $t0 + 30;
    while (!$got{$i}{synced}) {
        my ($what, @v) = ws_next($ws[$i], $deadline - time);
        if ($what eq 'json') {
            $got{$i}{ $v[0]{type} }++;
            $got{$i}{msgs}++ if $v[0]{type} eq 'msg';
            next;
        }
        push @closed, "D$i: $what" . (@v ? " @v" : '');
        last;
    }
}
my $took = time - $t0;
is scalar(grep { $got{$_}{ready} && $got{$_}{synced} } 0 .. $#ws), $N,
   sprintf('every device gets ready and synced (%.2fs for %d)', $took, $N)
    or diag(scalar(@closed) . " did not, e.g.: "
            . join('; ', @closed[0 .. ($#closed > 4 ? 4 : $#closed)]));
is scalar(grep { ($got{$_}{msgs} // 0) >= 1 } 0 .. $#ws), $N,
   'and the message waiting for it';
sub refusals {
    my @r = error_log_since($_[0]) =~ /(queries waiting, refusing more)/g;
    return scalar @r;
}
is refusals($mark), 0, 'PostgreSQL\'s queue refused nothing';

# Then all go at once (opened one after the other, so that this part
# does not depend on the first).
$_->disconnect for @ws;
ok all_gone(), 'the storm\'s sessions end';
@ws = ();
for my $u (@users) {
    my ($ws, $ready) = ws_chat_auth(token => $u->{token}, timeout => 5);
    ws_next($ws, 5) if $ready;      # synced
    push @ws, $ws if $ready;
}
is scalar(@ws), $N, "$N devices connect again, one after the other";
my $gone = error_log_mark();
$_->disconnect for @ws;
ok all_gone(), 'their sessions end';
is refusals($gone), 0, 'when they all go, PostgreSQL\'s queue refuses '
                       . 'nothing either';
is_deeply [alert_lines(error_log_since($mark))], [],
          'no alert or crit in the error log';

nginx_stop();
done_testing();
