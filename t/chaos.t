# Faults under load, short (issue 14): bench/chaos.js sends at 50 msgs/s
# for 30 s from 40 devices (direct pairs and groups of 5; each reconnects
# with backoff, sends again with the same id what has no "sent", acks the
# highest contiguous seq) while this file kills a worker (SIGKILL), reloads
# nginx (HUP), restarts Redis and restarts PostgreSQL. Afterwards every
# committed message reached every member device, in order, stored once,
# and nothing came that was never sent; no [alert] or [crit] but the
# master's note of the worker this file killed.
#
# The WebSocket location is the shipped one (conf/nginx.conf,
# conf/chat_api.conf): with chat_send_rate.
#
# Needs node and the ws package (bench/node_modules, `cd bench && npm
# install`, or t/node/node_modules, which scripts/test.sh installs).
#
#   scripts/test.sh t/chaos.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use File::Temp qw(tempdir);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

needs_stack(qw(CHAT_PG_DIR CHAT_PG_PORT CHAT_REDIS_DIR CHAT_REDIS_PORT));
plan skip_all => 'no node' unless `node --version 2>/dev/null`;
plan skip_all => 'no ws package for node (cd bench && npm install, or '
                 . 'npm install in t/node)'
    unless -d 'bench/node_modules/ws' || -d 't/node/node_modules/ws';

my $SECONDS = 30;

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws {
    chat_ws;
    chat_send_rate 20r/s burst=50;
}
END

ok nginx_start(workers => 2, config => $LOCATIONS,
               http_config => chat_http_config()),
   'nginx starts with 2 workers';
my $mark = error_log_mark();

my $dir = tempdir(CLEANUP => 1);
my $faults = "$dir/faults.log";
my $out = "$dir/report.json";
my $err = "$dir/client.log";
open my $fh, '>', $faults or die "$faults: $!";
close $fh;

my $client = fork // die "fork: $!";
if ($client == 0) {
    open STDOUT, '>', $out or die "$out: $!";
    open STDERR, '>', $err or die "$err: $!";
    exec 'node', 'bench/chaos.js', '--json',
         '--base', 'http://127.0.0.1:' . port(),
         '--users', 40, '--rate', 50, '--seconds', $SECONDS,
         '--drain', 30, '--timeout', 100, '--faults-log', $faults;
    die "exec node: $!";
}
my $status;
END {
    local $?;
    if ($client && !defined $status) {
        kill 'TERM', $client;
        waitpid $client, 0;
    }
}

sub slurp {
    my ($f) = @_;
    open my $in, '<', $f or return '';
    local $/;
    return <$in> // '';
}

sub running {
    return 0 if defined $status;
    return 1 if waitpid($client, WNOHANG) == 0;
    $status = $? >> 8;
    return 0;
}

sub fault_mark {
    my ($what, $name) = @_;
    open my $log, '>>', $faults or die "$faults: $!";
    printf $log "%d %s %s\n", int(time * 1000), $what, $name;
    close $log;
}

# The client signs up, makes its chats and connects, then writes
# "<ms> begin sending" into the faults log.
my $begin = wait_until(60, sub {
    my ($ms) = slurp($faults) =~ /^(\d+) begin sending/m;
    return $ms || !running();
});
unless (ok $begin && $begin > 1, 'the client starts sending') {
    diag("chaos.js did not start:\n" . slurp($err));
    nginx_stop();
    done_testing();
    exit;
}
$begin /= 1000;

sub at {
    my ($s) = @_;
    my $left = $begin + $s - time;
    sleep $left if $left > 0;
}

# 5 s: a worker killed; the master starts another
at(5);
my @workers = nginx_worker_pids();
my $victim = $workers[int rand @workers];
fault_mark(start => 'kill-worker');
kill 'KILL', $victim;
ok wait_until(10, sub {
       my @now = nginx_worker_pids();
       @now >= 2 && !grep { $_ == $victim } @now;
   }), "worker $victim killed, a new one runs";
fault_mark(end => 'kill-worker');

# 10 s: reload; the old workers answer what their sockets sent, close
# with 1001 and exit
at(10);
fault_mark(start => 'reload');
my @old = nginx_reload();
ok nginx_wait_exit(10, @old), 'reload: the old workers exit';
fault_mark(end => 'reload');

# 15 s: Redis restarted
at(15);
fault_mark(start => 'redis-restart');
ok redis_stop(), 'Redis stops';
ok redis_start(), 'Redis starts again';
fault_mark(end => 'redis-restart');

# 20 s: PostgreSQL restarted
at(20);
fault_mark(start => 'pg-restart');
ok pg_stop(), 'PostgreSQL stops';
ok pg_start(), 'PostgreSQL starts again';
fault_mark(end => 'pg-restart');

ok wait_until($SECONDS + 30 + 30, sub { !running() }),
   'the client ends within its window, drain and report';
my $text = slurp($out);
my $r = eval { JSON::PP->new->decode((split /\n/, $text)[-1] // '') };
ok $r, 'the client reports (one JSON object)'
    or diag("stdout:\n$text\nstderr:\n" . slurp($err));
$r ||= {};
diag(slurp($err) =~ s/\n+\z//r) if $ENV{TEST_VERBOSE};

cmp_ok $r->{committed} // 0, '>', 0, 'sends are committed';
for my $f (@{ $r->{faults} || [] }) {
    cmp_ok $f->{committed}, '>', 0,
           "sends made during $f->{name} (and 5 s after) are committed";
}
is scalar(@{ $r->{faults} || [] }), 4, 'four fault windows';
is $r->{uncommitted}, 0, 'every send got its "sent" by the end';
# late_redeliveries: a message sent again that the device had acked at
# least a second before its socket went (the server had time to apply it)
for my $k (qw(lost reordered double_stored phantom in_session_duplicates
              own_echo seq_conflicts late_redeliveries)) {
    my @ev = $k eq 'reordered' ? qw(reordered gaps)
           : $k eq 'late_redeliveries' ? qw(late_redelivery) : ($k);
    is $r->{$k}, 0, "$k: 0"
        or diag(join "\n", map { "$_: " . JSON::PP->new->canonical->encode(
                                      $r->{evidence}{$_} || []) } @ev);
}
is $status, 0, 'chaos.js exits 0'
    or diag(slurp($err));
note sprintf 'committed %d, redeliveries %d, reconnects %d, longest '
             . 'without a session %d ms, delivered p99 %s ms (in the '
             . 'faults: %s ms)', map { $_ // 0 } $r->{committed},
             $r->{redeliveries}, $r->{reconnects},
             $r->{longest_without_session_ms},
             $r->{latency}{delivered}{p99},
             $r->{fault_window}{delivered}{p99};

my @bad = alert_lines(error_log_since($mark),
                      qr/worker process $victim exited on signal 9\b/);
is_deeply \@bad, [], 'no alert or crit in the error log (but the kill)'
    or diag(join "\n", @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);

nginx_stop();
done_testing();
