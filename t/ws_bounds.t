# What one socket may cost a worker is bounded by what its device may
# touch and by chat_ws_send_queue, whatever it sends:
#
#   - acks for chats the device is not in leave nothing behind; a flood of
#     them does not grow the worker, and the worker goes on serving;
#   - requests in flight are bounded per socket (256), presence checks
#     included;
#   - every frame the server queues counts, pongs too: a client that pings
#     and never reads is cut;
#   - a frame header declaring a large payload costs nothing until the
#     payload comes.
#
#   scripts/test.sh t/ws_bounds.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Time::HiRes qw(time);

needs_stack();

plan skip_all => 'needs /proc to read the worker\'s memory'
    unless -r "/proc/$$/status";

ok nginx_start(workers => 1,
               http_config => chat_http_config(), config => <<'END'),
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
location /echo { chat_ws_echo; chat_ws_send_queue 64k; }
END
   'nginx starts, one worker';

my ($worker) = nginx_worker_pids();

# The worker's memory in KiB: resident, or with 'VmData' all it mapped
# (a large malloc() that nothing has touched yet is not resident).
sub rss_kb {
    my ($field) = @_;
    $field //= 'VmRSS';
    open my $fh, '<', "/proc/$worker/status" or return 0;
    while (<$fh>) {
        return $1 if /^\Q$field\E:\s+(\d+)/;
    }
    return 0;
}

# A ping answered: what the socket sent before it has been processed.
# (The first subtest runs on a fresh worker: what later ones free, malloc
# may hand out again without mapping more.)
sub round_trip {
    my ($ws, $t) = @_;
    $ws->send_json({ type => 'ping', t => $t });
    my $ev = ws_chat_wait($ws, 30, sub { $_[0]{type} eq 'pong'
                                         && ($_[0]{t} // '') eq $t });
    return $ev;
}

my $a = api_signup(device_name => 'a');
my $b = api_signup(device_name => 'b');
my $chat = api_chat_create($a, { type => 'direct',
                                 user_id => $b->{user_id} })->{chat_id};

subtest 'a declared payload costs nothing until it comes' => sub {
    my $before = rss_kb('VmData');
    my @ws;
    for (1 .. 100) {
        my $ws = ws_connect(path => '/echo');
        last unless ($ws->status // 0) == 101;
        # a header declaring 128 KiB (the default limit), and no payload
        my $frame = ws_binary('x' x 131072);
        $ws->send_raw(substr $frame, 0, 14);
        push @ws, $ws;
    }
    is scalar(@ws), 100, '100 sockets, each with a 128 KiB frame begun';
    my $probe = ws_connect(path => '/echo');
    $probe->send_text('still there');
    my $m = $probe->recv_message(5);
    is $m && $m->{data}, 'still there', 'the worker is served';
    my $grew = rss_kb('VmData') - $before;
    ok $grew < 6 * 1024, "the worker mapped ${grew} KiB more (< 6 MiB)";
    $_->disconnect for @ws, $probe;
};

subtest 'a flood of acks for chats the device is not in' => sub {
    my ($wa) = ws_chat_open($a);
    my ($wb) = ws_chat_open($b);
    my ($wc) = ws_chat_open($b, name => 'b, a second socket');

    # warm up: the worker has seen an ack batch before the measure
    ok round_trip($wb, 'warm'), 'b answers a ping';
    my $before = rss_kb();

    my $frames = '';
    my $n = 200_000;
    for my $i (1 .. $n) {
        $frames .= ws_text(sprintf '{"type":"ack","chat_id":"%d","seq":%d}',
                           9_000_000 + $i, 1 + $i % 7);
        if (length $frames > 1 << 20) {
            $wb->send_raw($frames) or last;
            $frames = '';
        }
    }
    $wb->send_raw($frames) if length $frames;
    note(sprintf '%d acks for made-up chats sent', $n);

    # meanwhile, another socket of the same worker: send, delivery, ack,
    # receipt
    my $t0 = time;
    my $sent = ws_chat_send_wait($wa, 5, id => 'during', chat_id => $chat,
                                 text => 'while b floods');
    is $sent && $sent->{type}, 'sent', 'a sends meanwhile';
    my $msg = ws_chat_wait($wc, 5, sub { $_[0]{type} eq 'msg' });
    ok $msg, "b's other socket gets it";
    $wc->send_json({ type => 'ack', chat_id => $chat,
                     seq => $msg ? $msg->{seq} : 1 });
    my $rcpt = ws_chat_wait($wa, 5, sub { $_[0]{type} eq 'receipt'
                                          && $_[0]{status} eq 'delivered' });
    my $took = time - $t0;
    ok $rcpt, 'a gets the delivered receipt';
    ok $took < 1, sprintf('send, delivery, ack and receipt within a second '
                          . '(%.2fs)', $took);

    ok round_trip($wb, 'after'), 'the flooding socket is still served';
    my $grew = rss_kb() - $before;
    ok $grew < 8 * 1024, "the worker grew by ${grew} KiB (< 8 MiB)";
    is_deeply [map { $_->{type} } grep { $_->{type} eq 'error' }
               @{ $wb->{chat_inbox} || [] }], [],
              'acks have no answer, not even for a foreign chat';
    $_->close(1000) for $wa, $wb, $wc;
};

subtest 'requests in flight: 256 a socket, presence checks included' => sub {
    my ($wb) = ws_chat_open($b);
    ok pg_pause(), 'PostgreSQL hangs (its checks wait)';
    $wb->send_json({ type => 'presence', subscribe => [$a->{user_id}],
                     id => "p$_" }) for 1 .. 300;
    my %codes;
    for (1 .. 44) {
        my $ev = ws_chat_wait($wb, 5, sub { $_[0]{type} eq 'error' }) or last;
        $codes{ $ev->{code} }++;
    }
    is $codes{rate_limited}, 44, 'the 44 past 256 get rate_limited at once';
    ok pg_resume(), 'PostgreSQL resumes';
    ok round_trip($wb, 'after'), 'the socket is served';
    $wb->close(1000);
};

subtest 'pongs count against chat_ws_send_queue' => sub {
    my $ws = ws_connect(path => '/echo', rcvbuf => 4096);
    is $ws->status, 101, 'handshake';
    my $before = rss_kb();
    my $ping = ws_ping('p' x 125);
    my ($sent, $cut, $stuck) = (0, 0, undef);
    my $deadline = time + 20;
    while ($sent < 64 * 1024 * 1024 && time < $deadline) {
        my $n = $ws->try_send_raw($ping x 64);
        if (!defined $n) {
            $cut = 1;
            last;
        }
        if ($n == 0) {
            $stuck //= time;
            last if time - $stuck > 5;
            next;
        }
        $stuck = undef;
        $sent += $n;
    }
    my $grew = rss_kb() - $before;
    ok $cut, sprintf('a client that pings and never reads is cut (after '
                     . '%d KiB of pings)', $sent / 1024);
    ok $grew < 4 * 1024, "the worker grew by ${grew} KiB (< 4 MiB)";
    $ws->disconnect;
};

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'bounds', no_error_log => ['[error]']);

done_testing();
