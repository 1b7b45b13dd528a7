# Live delivery recovers when only the Redis command link drops: what a
# worker could not publish while its command link was down goes as soon
# as the link is back (ngx_chat_fanout.h), so online devices get it
# within a bounded time, not only when a later message opens a gap.
#
#   scripts/test.sh t/ws_command_link.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Time::HiRes qw(time sleep);
use IO::Socket::INET;

needs_stack();

my ($rhost, $rport) = split /:/, $ENV{CHAT_REDIS};

ok nginx_start(workers => 1,
               http_config => chat_http_config(), config => <<'END'),
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END
   'nginx starts, one worker';

my $ua = api_signup(device_name => 'a');
my $ub = api_signup(device_name => 'b');
my $chat = api_chat_create($ua, { type => 'direct',
                                 user_id => $ub->{user_id} })->{chat_id};
my ($wa) = ws_chat_open($ua);
my ($wb) = ws_chat_open($ub);

# Kills the normal (command) clients of Redis every few milliseconds for
# three seconds, from a connection that spares itself (SKIPME is the
# default): the worker's command link is down nearly all that time, its
# subscription link (a pubsub client) stays.
my $killer = fork // die "fork: $!";
if ($killer == 0) {
    my $r = IO::Socket::INET->new(PeerAddr => $rhost, PeerPort => $rport)
        or exit 1;
    my $kill = "*4\r\n\$6\r\nCLIENT\r\n\$4\r\nKILL\r\n\$4\r\nTYPE\r\n"
               . "\$6\r\nnormal\r\n";
    my $until = time + 3;
    while (time < $until) {
        print {$r} $kill;
        $r->getline;
        sleep 0.005;
    }
    exit 0;
}
sleep 0.2;

my @seqs;
for my $i (1 .. 10) {
    my $ev = ws_chat_send_wait($wa, 5, id => "m$i", chat_id => $chat,
                               text => "while the link drops, $i");
    push @seqs, $ev->{seq} if $ev && $ev->{type} eq 'sent';
    sleep 0.1;
}
waitpid $killer, 0;
my $t_back = time;
is scalar(@seqs), 10, 'a\'s 10 sends are stored and answered meanwhile';

my %got;
while (keys %got < @seqs) {
    my ($ev, $why) = ws_chat_wait($wb, 5, sub { $_[0]{type} eq 'msg' });
    unless ($ev) {
        diag('b: ' . ws_chat_show($why)) if $why;
        last;
    }
    $got{ $ev->{seq} } = 1;
}
my $took = time - $t_back;
is_deeply [sort { $a <=> $b } keys %got], [sort { $a <=> $b } @seqs],
          sprintf('b gets all of them live, with no later message (%.1fs '
                  . 'after the link stopped dropping)', $took);
ok $took < 7, 'within the reconnect backoff (at most 5s) and a second';

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'command link', no_error_log => ['[alert]']);

done_testing();
