# chat_send_rate: a token bucket per socket; sends past it get
# "rate_limited" and are not stored, and the bucket refills with time.
#
#   scripts/test.sh t/ws_rate.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Time::HiRes qw(sleep);

needs_stack();

ok nginx_start(workers => 1, http_config => chat_http_config(),
               config => <<'END'),
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; chat_send_rate 2r/s burst=3; }
END
   'nginx starts with chat_send_rate 2r/s burst=3';

my ($a, $b) = (api_signup(device_name => 'a'), api_signup(device_name => 'b'));
my $chat = api_chat_create($a, { type => 'direct',
                                 user_id => $b->{user_id} })->{chat_id};
my ($ws) = ws_chat_open($a);

ws_chat_send($ws, id => "burst-$_", chat_id => $chat, text => "m$_")
    for 1 .. 5;

my (%sent, %limited);
for (1 .. 5) {
    my $ev = ws_chat_wait($ws, 5, sub { $_[0]{type} =~ /^(sent|error)$/ })
        or last;
    $sent{ $ev->{id} } = $ev->{seq} if $ev->{type} eq 'sent';
    $limited{ $ev->{id} } = 1
        if $ev->{type} eq 'error' && $ev->{code} eq 'rate_limited';
}

is_deeply [sort keys %sent], [map { "burst-$_" } 1 .. 3],
          'the burst of 3 is stored';
is_deeply [sort keys %limited], [map { "burst-$_" } 4, 5],
          'the 4th and 5th get rate_limited';

sleep 1.1;          # what is tested: the bucket refills with time (2r/s)
my $ev = ws_chat_send_wait($ws, 5, id => 'later', chat_id => $chat,
                           text => 'after a second');
is $ev && $ev->{type}, 'sent', 'a second later the bucket has refilled';
is $ev && $ev->{seq}, 4, '... and the refused sends used no seq';

my ($wb, $sync) = ws_chat_open($b);
is_deeply [map { $_->{id} } @{ $sync->{msgs} || [] }],
          [qw(burst-1 burst-2 burst-3 later)],
          'b gets exactly the stored ones';

# the old workers have exited, so a new socket reaches a new one
sub old_workers_gone {
    my (@old) = @_;
    ok wait_until(10, sub { !grep { kill 0, $_ } @old }),
       'the old workers exit';
}

# A reload keeps the zone of the buckets, and the new workers use the new
# configuration's: sends go on (they crashed the workers: the zone they
# used had gone with the old configuration).
$wb->close(1000);
$ws->close(1000);
my $mark = error_log_mark();
old_workers_gone(nginx_reload());
($ws) = ws_chat_open($a, name => 'a after a reload');
$ev = ws_chat_send_wait($ws, 5, id => 'reloaded', chat_id => $chat,
                        text => 'after a reload');
is $ev && $ev->{type}, 'sent', 'after a reload, a send is stored';
my @bad = alert_lines(error_log_since($mark));
is_deeply \@bad, [], 'and no worker crashed';
# a reload whose configuration has no chat_send_rate: its zone goes
$ws->close(1000);
old_workers_gone(nginx_reload(config => "location = /v1/ws { chat_ws; }\n"
                                        . "location /v1/ { chat_api; }\n"));
($ws) = ws_chat_open($a, name => 'a after a reload without the rate');
$ev = ws_chat_send_wait($ws, 5, id => 'unlimited', chat_id => $chat,
                        text => 'no rate');
is $ev && $ev->{type}, 'sent', 'without chat_send_rate, a send is stored'
    or diag(ws_chat_show($ev));
is_deeply [alert_lines(error_log_since($mark))], [],
          'and no worker crashed';

nginx_stop();
done_testing();
