# PROTOCOL.md 5.3: an ack is applied before the server answers the
# device's close frame, so a device that acks, closes and reconnects at
# once (to any worker) is not sent what it acked again. Acks sent just
# before the close are the ones at risk: they may still be in flight, or
# folded in behind one in flight.
#
#   scripts/test.sh t/ws_ack_close.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations);

needs_stack();

ok nginx_start(workers => 2, http_config => chat_http_config(),
               config => chat_locations()),
   'nginx starts';

my ($a, $b, $c) = map { api_signup(device_name => $_) } qw(a b c);
my $ab = api_chat_create($a, { type => 'direct',
                               user_id => $b->{user_id} })->{chat_id};
my $cb = api_chat_create($c, { type => 'direct',
                               user_id => $b->{user_id} })->{chat_id};
my ($wa) = ws_chat_open($a);
my ($wc) = ws_chat_open($c);

# Closes after the server's close frame and its TCP close.
sub close_fully {
    my ($ws) = @_;
    $ws->close(1000);
    1 while ws_chat_event($ws, 5)->{type} !~ /^_/;
    $ws->disconnect;
}

my @again;

for my $i (1 .. 20) {
    for my $k (1 .. 3) {
        ws_chat_send_wait($wa, 5, id => "a$i-$k", chat_id => $ab,
                          text => 'x');
        ws_chat_send_wait($wc, 5, id => "c$i-$k", chat_id => $cb,
                          text => 'y');
    }

    my ($wb, $sync) = ws_chat_open($b, name => "b connects ($i)");
    my %top;
    $top{ $_->{chat_id} } = $_->{seq} for @{ $sync->{msgs} || [] };

    $wb->send_json({ type => 'ack', chat_id => $_, seq => 0 + $top{$_} })
        for sort keys %top;
    close_fully($wb);

    my ($wb2, $sync2) = ws_chat_open($b, name => "b reconnects ($i)");
    push @again, "round $i: " . join ', ', map { "$_->{chat_id}:$_->{seq}" }
                                           @{ $sync2->{msgs} || [] }
        if $sync2 && $sync2->{synced}{count};
    close_fully($wb2);
}

is_deeply \@again, [], 'no reconnect right after ack and close was sent '
                       . 'an acked message again';

nginx_stop();
done_testing();
