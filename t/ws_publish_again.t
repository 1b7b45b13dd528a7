# A publish that Redis did not take while its link stayed up (here:
# chat_redis_max_pending 1, so a burst of sends finds a command in flight)
# is kept and goes again within a fraction of a second, not only when the
# link comes back after a loss: the receiver gets every message live, the
# last of a burst too (a gap fill brings those before a later one, but
# nothing came after the last). One warning says fan-outs wait for Redis.
#
#   scripts/test.sh t/ws_publish_again.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations users
                              direct_chat);

needs_stack();

ok nginx_start(workers => 1, config => chat_locations(),
               http_config => chat_http_config(
                   extra => "chat_redis_max_pending 1;\n")),
   'nginx starts with chat_redis_max_pending 1';

# ten senders, each in a direct chat with B: their sends are stored in
# one statement, and their ten publishes leave at once
my ($ub, @as) = users('B', map { "A$_" } 1 .. 10);
my @senders;
for my $u (@as) {
    my $c = direct_chat($u, $ub);
    my ($ws) = ws_chat_open($u, name => "$u->{name} connects");
    push @senders, [$ws, $c];
}
my ($wb) = ws_chat_open($ub, name => 'B connects');

my $mark = error_log_mark();
my $N = 3;
for my $n (1 .. $N) {
    ws_chat_send($_->[0], id => "b$n", chat_id => $_->[1], text => "m$n")
        for @senders;
    for my $s (@senders) {
        my ($ev) = ws_chat_wait($s->[0], 10, sub { $_[0]{type} eq 'sent' });
        ok $ev, "A's send $n in chat $s->[1] is stored"
            or diag('got nothing');
    }
}

my %got;
while (keys %got < $N * @senders) {
    my ($ev) = ws_chat_wait($wb, 3, sub { $_[0]{type} eq 'msg' });
    last unless $ev;
    $got{"$ev->{chat_id}:$ev->{seq}"}++;
}
is_deeply [sort keys %got],
          [sort map { my $c = $_->[1]; map { "$c:$_" } 1 .. $N } @senders],
          'B gets every message live, each once';
like error_log_since($mark), qr/fan-outs wait for Redis to take them/,
     'the log says fan-outs waited for Redis'
    or diag(join "\n", grep { /redis|publish|fan-out/i } split /\n/, error_log_since($mark));
is_deeply [alert_lines(error_log_since(0))], [],
          'no alert or crit in the error log';

$_->[0]->close(1000) for @senders;
$wb->close(1000);
nginx_stop();
done_testing();
