# Accounts resist guessing and pumping, and limits cannot be dodged
# (README.md, "Security"):
#
#   - a number's wrong codes count across its codes; once its budget
#     (chat_verify_budget) is spent it is locked (chat_verify_lock): even
#     the right code is refused, and no code is sent to it;
#   - codes sent by everyone stay under chat_codes_per_minute;
#   - the shipped limits per client address (conf/chat_limits.conf,
#     conf/chat_api.conf) answer 429 with Retry-After;
#   - limits keyed on $chat_device_key see one device whatever form of
#     its Authorization header it sends;
#   - chat_send_rate is one bucket per device, whatever its sockets.
#
#   scripts/test.sh t/api_limits.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Cwd qw(getcwd);

needs_stack();

my $CONF = getcwd() . '/conf';

sub http_config {
    my ($name, $extra) = @_;
    return chat_http_config(prefix => "t_api_limits_${name}_$$:",
                            extra => $extra);
}

sub register {
    my ($mobile) = @_;
    return api_request(POST => '/v1/register', body => { mobile => $mobile });
}

sub verify {
    my ($mobile, $code) = @_;
    return api_request(POST => '/v1/verify',
                       body => { mobile => $mobile, code => $code,
                                 device_name => 'x' });
}

sub rate_limited_ok {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    api_error_is($r, 429, 'rate_limited', $name);
    like $r->{headers}{'retry-after'} // '', qr/^[1-9][0-9]*$/,
         "$name: Retry-After";
}

subtest 'a number\'s budget of wrong codes, across its codes' => sub {
    ok nginx_start(workers => 1, config => 'location /v1/ { chat_api; }',
                   http_config => http_config('budget', <<'END')),
chat_verify_budget 6;
chat_verify_lock 1h;
END
       'nginx starts with chat_verify_budget 6';
    my $mobile = random_mobile();
    my $r = register($mobile);
    api_ok($r, 202, 'register') or return;
    for my $i (1 .. 5) {
        api_error_is(verify($mobile, '000000'), 401, 'unauthorized',
                     "wrong code $i");
    }
    $r = register($mobile);
    api_ok($r, 202, 'a new code') or return;
    my $code = $r->{json}{dev_code};
    api_error_is(verify($mobile, '000000'), 401, 'unauthorized',
                 'wrong code 6: the budget is spent');
    rate_limited_ok(verify($mobile, $code), 'then the right code');
    rate_limited_ok(register($mobile), 'and a register');
    api_ok(register(random_mobile()), 202, 'another number is not locked');
    nginx_stop();
};

subtest 'codes sent by everyone stay under chat_codes_per_minute' => sub {
    ok nginx_start(workers => 1, config => 'location /v1/ { chat_api; }',
                   http_config => http_config('ceiling', <<'END')),
chat_codes_per_minute 3;
END
       'nginx starts with chat_codes_per_minute 3';
    api_ok(register(random_mobile()), 202, "number $_") for 1 .. 3;
    rate_limited_ok(register(random_mobile()), 'a 4th number');
    nginx_stop();
};

subtest 'the shipped limits per client address' => sub {
    ok nginx_start(workers => 1,
                   config => "include $CONF/chat_api.conf;",
                   http_config => http_config('addr')
                                  . "include $CONF/chat_limits.conf;\n"),
       'nginx starts with conf/chat_limits.conf and conf/chat_api.conf';
    my @status = map { register(random_mobile()) } 1 .. 6;
    is_deeply [map { $_->{status} } @status[0 .. 3]], [202, 202, 202, 202],
              'four registers from one address (a burst of 3)';
    rate_limited_ok($status[5], 'then 429');
    nginx_stop();
};

subtest '$chat_device_key: one device, whatever its header' => sub {
    ok nginx_start(workers => 1, config => <<'END',
location /v1/ { chat_api; }
location = /v1/send {
    chat_api;
    limit_req zone=send burst=1 nodelay;
}
END
                   http_config => http_config('key', <<'END')),
limit_req_zone $chat_device_key zone=send:1m rate=1r/m;
limit_req_status 429;
END
       'nginx starts, sends limited on $chat_device_key';
    my $ua = api_signup(device_name => 'a');
    my $ub = api_signup(device_name => 'b');
    my $chat = api_chat_create($ua, { type => 'direct',
                                     user_id => $ub->{user_id} })->{chat_id};
    my @forms = ("Bearer $ua->{token}", "bearer $ua->{token}",
                 "BEARER   $ua->{token}  ");
    my @got = map {
        my $form = $forms[$_];
        api_request(POST => '/v1/send',
                    headers => ["Authorization: $form"],
                    body => { id => "m$_", chat_id => $chat,
                              text => 'hi' })->{status};
    } 0 .. 2;
    is_deeply \@got, [200, 200, 429],
              'three forms of the same token: one bucket (a burst of 1)';
    nginx_stop();
};

subtest 'chat_send_rate: a bucket per device, not per socket' => sub {
    ok nginx_start(workers => 2, config => <<'END',
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; chat_send_rate 1r/s burst=3; }
END
                   http_config => http_config('rate')),
       'nginx starts with chat_send_rate 1r/s burst=3';
    my $ua = api_signup(device_name => 'a');
    my $ub = api_signup(device_name => 'b');
    my $chat = api_chat_create($ua, { type => 'direct',
                                     user_id => $ub->{user_id} })->{chat_id};
    my ($w1) = ws_chat_open($ua, name => 'a, socket 1');
    my ($w2) = ws_chat_open($ua, name => 'a, socket 2');
    my %got;
    for my $i (1 .. 6) {
        my $ws = $i % 2 ? $w1 : $w2;
        my $ev = ws_chat_send_wait($ws, 5, id => "s$i", chat_id => $chat,
                                   text => "send $i");
        $got{ $ev ? ($ev->{type} eq 'sent' ? 'sent' : $ev->{code}) : 'none' }++;
    }
    is_deeply \%got, { sent => 3, rate_limited => 3 },
              'six sends over two sockets of one device: three stored';
    nginx_stop();
};

check_error_log(name => 'limits', no_error_log => ['[alert]']);

done_testing();
