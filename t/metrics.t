# GET /metrics (PROTOCOL.md, section 6) counts what is true across the
# workers: chat_connections is the sessions open now, so a worker that
# is killed takes its sessions out of the count with it (each worker
# writes its own count in a slot of the shared zone; a scrape adds those
# of the workers alive), and the count is right again at once, not when
# the dead worker's sessions would have closed.
#
#   scripts/test.sh t/metrics.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations);

needs_stack();

ok nginx_start(workers => 2, http_config => chat_http_config(),
               config => chat_locations()
                         . "location = /metrics { chat_metrics; }\n"),
   'nginx starts with two workers and /metrics';

sub connections { metric('chat_connections') }

is connections(), 0, 'no session: chat_connections 0';

# sockets until both workers hold two at least
my (%on, @all);
for my $i (1 .. 40) {
    my $acct = api_signup(device_name => "d$i") or last;
    my ($ws) = ws_chat_open($acct, name => "d$i connects");
    my $pid = $ws && ws_worker_pid($ws) or last;
    push @{ $on{$pid} }, $ws;
    push @all, $ws;
    last if keys %on == 2 && !grep { @$_ < 2 } values %on;
}
my @pids = sort keys %on;
is scalar(@pids), 2, 'sockets on both workers ('
                     . join(', ', map { "$_: " . @{ $on{$_} } } @pids) . ')'
    or BAIL_OUT('cannot place sockets on both workers');
is connections(), scalar(@all), 'chat_connections counts them all ('
                                . @all . ')';

my ($dead, $alive) = @pids;
my $left = @{ $on{$alive} };
ok kill('KILL', $dead), "SIGKILL to worker $dead ("
                        . @{ $on{$dead} } . ' sessions)';
ok wait_until(5, sub { my @w = nginx_worker_pids();
                       @w == 2 && !grep { $_ == $dead } @w }),
   'the master runs a new worker in its place';
my $n;
ok wait_until(5, sub { ($n = connections() // -1) == $left }),
   "chat_connections is $left, the sessions of the worker alive"
    or diag("chat_connections is $n");

$_->close(1000) for @{ $on{$alive} };
ok wait_until(5, sub { ($n = connections() // -1) == 0 }),
   'they close: chat_connections 0'
    or diag("chat_connections is $n");

my $acct = api_signup(device_name => 'after');
my ($ws) = ws_chat_open($acct, name => 'a socket after the kill');
is connections(), 1, 'a new session on either worker counts: 1';
$ws->close(1000);

is_deeply [alert_lines(error_log_since(0),
                       qr/worker process $dead exited on signal 9/)], [],
          'no alert but the kill in the error log';

nginx_stop();
done_testing();
