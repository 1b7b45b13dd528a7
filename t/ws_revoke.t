# Revocation does not depend on one Redis PUBLISH (PROTOCOL.md 1:
# DELETE /v1/devices/{id}: "the token stops working at once and that
# device's sockets close with 4001"):
#
#   - with the publish lost (Redis down), the device's socket closes
#     within chat_device_check all the same;
#   - a device that is gone stores nothing, whatever socket it still has:
#     its send is refused where messages are stored, and the socket closes
#     with 4001.
#
#   scripts/test.sh t/ws_revoke.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Time::HiRes qw(time);

needs_stack();

sub start {
    my ($check) = @_;
    my $http = chat_http_config(extra => <<"END");
chat_device_check $check;
END
    return nginx_start(workers => 2, http_config => $http,
                       config => <<'END');
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END
}

# The close the socket gets within $within seconds: its code, or undef.
sub closed_with {
    my ($ws, $within) = @_;
    my $ev = ws_chat_wait($ws, $within, sub { $_[0]{type} eq '_close' });
    return $ev && $ev->{code};
}

sub unlink_device {
    my ($acct, $device) = @_;
    my $r = api_request(DELETE => "/v1/devices/$device->{device_id}",
                        token => $acct->{token});
    return $r->{status};
}

subtest 'the revoke publish is lost: the socket closes all the same' => sub {
    ok start('1s'), 'nginx starts with chat_device_check 1s';
    my $a = api_signup(device_name => 'a');
    my $a2 = api_link_device($a, device_name => 'a2');
    my ($w2) = ws_chat_open($a2);

    ok redis_stop(), 'Redis stops: the revoke cannot be published';
    my $t0 = time;
    is unlink_device($a, $a2), 204, 'a unlinks a2 (204)';
    my $code = closed_with($w2, 5);
    my $took = time - $t0;
    is $code, 4001, sprintf('a2\'s socket closes with 4001 (after %.1fs)',
                            $took);
    ok $took < 3, 'within chat_device_check and a second';
    ok redis_start(), 'Redis is back';
    nginx_stop();
};

subtest 'a device that is gone stores nothing' => sub {
    ok start('1h'), 'nginx starts with chat_device_check 1h';
    my $a = api_signup(device_name => 'a');
    my $b = api_signup(device_name => 'b');
    my $chat = api_chat_create($a, { type => 'direct',
                                     user_id => $b->{user_id} })->{chat_id};
    my $a2 = api_link_device($a, device_name => 'a2');
    my ($w2) = ws_chat_open($a2);

    ok redis_stop(), 'Redis stops: the revoke cannot be published';
    is unlink_device($a, $a2), 204, 'a unlinks a2 (204)';

    ws_chat_send($w2, id => 'late', chat_id => $chat,
                 text => 'sent from an unlinked device');
    my $ev = ws_chat_wait($w2, 5, sub { $_[0]{type} =~ /^(sent|_close)$/ });
    is $ev && $ev->{type}, '_close', 'a2\'s send is not answered "sent"';
    is $ev && $ev->{code}, 4001, 'a2\'s socket closes with 4001';
    ok redis_start(), 'Redis is back';

    my ($wb, $sync) = ws_chat_open($b);
    is_deeply [map { $_->{id} } @{ $sync->{msgs} || [] }], [],
              'b has nothing from a2';
    is pg_scalar("SELECT count(*) FROM messages WHERE chat_id = $chat"), 0,
       'nothing is stored';
    nginx_stop();
};

check_error_log(name => 'revoke', no_error_log => ['[alert]']);

done_testing();
