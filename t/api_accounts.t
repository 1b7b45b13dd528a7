# Accounts and linked devices over HTTP (PROTOCOL.md section 1), driven
# through nginx against the PostgreSQL and Redis of scripts/test.sh:
# register and verify, link-code and link, listing and unlinking devices,
# /v1/me, lookup by mobile; and every kind of bad input, each answered with
# the protocol's error and nothing logged at error level.
#
#   scripts/test.sh t/api_accounts.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve);
use Test::Chat::JSON qw(json_int_ok json_string_ok now_ms);

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

needs_stack();

# PostgreSQL and Redis outlive this file: a prefix of our own
# (chat_http_config's), and numbers from random_mobile().
serve(defaults => 1, http_config => chat_http_config());

# Epoch milliseconds between two local clock readings (one minute of slack).
sub is_epoch_ms {
    my ($v, $t0, $t1, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    json_int_ok($v, $name);
    ok(defined $v && $v =~ /^\d+$/ && $v >= $t0 - 60_000
       && $v <= $t1 + 60_000, "$name is now, in epoch milliseconds")
        or diag("got " . ($v // 'undef') . ", local clock says $t0..$t1");
}

# At least 128 random bits in a string fit for an Authorization header.
sub token_ok {
    my ($t, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $bits_per_char = ($t // '') =~ /^[0-9a-fA-F]+$/ ? 4 : 6;
    ok(defined $t && $t =~ m{^[A-Za-z0-9\-._~+/]+=*$}
       && length($t =~ s/=+$//r) * $bits_per_char >= 128,
       "$name: a token of at least 128 bits in token68 characters")
        or diag('got ' . ($t // 'undef'));
}

sub verify {
    my ($mobile, $code, $name, %o) = @_;
    return api_request(POST => '/v1/verify',
                       body => { mobile => $mobile, code => $code,
                                 device_name => $name // 'phone' }, %o);
}

sub dev_code {
    my ($r) = @_;
    return ref $r->{json} eq 'HASH' ? $r->{json}{dev_code} : undef;
}

sub wrong_code {
    my ($code) = @_;
    return sprintf '%06d', ($code + 1) % 1_000_000;
}

sub devices {
    my ($token) = @_;
    my $r = api_request(GET => '/v1/devices', token => $token);
    return ($r, ref $r->{json} eq 'HASH'
                && ref $r->{json}{devices} eq 'ARRAY'
                ? $r->{json}{devices} : []);
}


# ------------------------------------------------------------------ register

behaviour 'register: 202 with expires_in 300 and a 6-digit dev_code, '
          . 'and the code is logged at notice level (no SMS relay)' => sub {
    my $mobile = random_mobile();
    my $mark = error_log_mark();
    my $r = api_register($mobile);
    api_ok($r, 202, 'POST /v1/register') or return;
    json_int_ok($r->{json}{expires_in}, 'expires_in');
    is $r->{json}{expires_in}, 300, 'expires_in is 300';
    my $code = dev_code($r);
    json_string_ok($code, 'dev_code');
    like $code // '', qr/^\d{6}\z/, 'dev_code is 6 digits';
    my $log = error_log_since($mark);
    my @lines = grep { index($_, $code // 'none') >= 0 } split /\n/, $log;
    ok @lines, 'the code appears in the error log'
        or diag("error log:\n$log");
    like $lines[0] // '', qr/\[notice\]/, '... at notice level';
};

behaviour 'register: bad input is refused with 400 bad_request' => sub {
    my $m = random_mobile();
    my @cases = (
        ['no body',                     undef],
        ['an empty body',               ''],
        ['not JSON',                    '{mobile: +15551234567}'],
        ['truncated JSON',              '{"mobile":"+15551234567"'],
        ['JSON with trailing garbage',  qq({"mobile":"$m"} x)],
        ['a JSON array',                qq(["$m"])],
        ['a JSON string',               qq("$m")],
        ['null',                        'null'],
        ['an empty object',             '{}'],
        ['mobile null',                 '{"mobile":null}'],
        ['mobile a number',             '{"mobile":15551234567}'],
        ['mobile an array',             qq({"mobile":["$m"]})],
        ['mobile an object',            qq({"mobile":{"n":"$m"}})],
        ['mobile true',                 '{"mobile":true}'],
        ['mobile empty',                '{"mobile":""}'],
        ['mobile without +',            '{"mobile":"15551234567"}'],
        ['mobile "+"',                  '{"mobile":"+"}'],
        ['first digit 0',               '{"mobile":"+05551234567"}'],
        ['7 digits',                    '{"mobile":"+1234567"}'],
        ['16 digits',                   '{"mobile":"+1234567890123456"}'],
        ['letters',                     '{"mobile":"+1555abc4567"}'],
        ['spaces inside',               '{"mobile":"+1 555 123 4567"}'],
        ['dashes inside',               '{"mobile":"+1-555-123-4567"}'],
        ['a trailing space',            qq({"mobile":"$m "})],
        ['a leading space',             qq({"mobile":" $m"})],
        ['a trailing newline escape',   qq({"mobile":"$m\\n"})],
        ['an escaped NUL',              qq({"mobile":"$m\\u0000"})],
        ['two plus signs',              qq({"mobile":"+$m"})],
        ['mobile twice',                qq({"mobile":"$m","mobile":"$m"})],
        ['fullwidth digits',            qq({"mobile":"+1\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95\xef\xbc\x95"})],
        ['invalid UTF-8',               qq({"mobile":"+1555\xff\xfe4567"})],
        ['a 10 kB number',             '{"mobile":"+1' . ('5' x 10_000) . '"}'],
    );
    for my $c (@cases) {
        my ($what, $body) = @$c;
        my $r = api_request(POST => '/v1/register', body => $body);
        api_error_is($r, 400, 'bad_request', "register with $what");
    }
};

behaviour 'register: 8 and 15 digits are E.164; Content-Type is ignored; '
          . 'a chunked body works' => sub {
    my $m8 = '+9' . join '', map { int rand 10 } 1 .. 7;
    my $m15 = '+1' . sprintf('%05d', $$ % 100000)
              . join '', map { int rand 10 } 1 .. 8;
    api_ok(api_register($m8), 202, "register $m8 (8 digits)");
    api_ok(api_register($m15), 202, "register $m15 (15 digits)");
    api_ok(api_register(random_mobile(), content_type => 'text/plain'), 202,
           'register with Content-Type: text/plain');
    api_ok(api_register(random_mobile(),
                    content_type => 'application/x-www-form-urlencoded'),
           202, 'register with a form Content-Type');
    api_ok(api_register(random_mobile(), content_type => undef), 202,
           'register without Content-Type');
    api_ok(api_register(random_mobile(), chunked => 1), 202,
           'register with a chunked body');
    my $m = random_mobile();
    api_ok(api_request(POST => '/v1/register',
                       body => qq(\n  { "mobile" :\t"$m" }\n)), 202,
           'register with whitespace around the JSON tokens');
};

behaviour 'register: a 4th request for one number within 10 minutes gets '
          . '429 rate_limited with Retry-After; other numbers go on' => sub {
    my $m = random_mobile();
    api_ok(api_register($m), 202, "register $m, $_ of 3") for 1 .. 3;
    my $r = api_register($m);
    api_error_is($r, 429, 'rate_limited', "register $m a 4th time");
    ok(($r->{headers}{'retry-after'} // 0) <= 600,
       'Retry-After is at most 10 minutes')
        or diag(api_show($r));
    api_ok(api_register(random_mobile()), 202,
           'another number is not limited');
};


# -------------------------------------------------------------------- verify

behaviour 'verify: the first verify creates the user and answers its ids '
          . 'and a token; /v1/me shows the user' => sub {
    my $m = random_mobile();
    my $t0 = now_ms();
    my $r = api_register($m);
    api_ok($r, 202, 'register') or return;
    my $v = verify($m, dev_code($r), 'first phone');
    my $t1 = now_ms();
    api_ok($v, 200, 'verify') or return;
    json_string_ok($v->{json}{$_}, $_) for qw(user_id device_id token);
    token_ok($v->{json}{token}, 'verify');

    my $me = api_me($v->{json}{token});
    api_ok($me, 200, 'GET /v1/me with the token') or return;
    is $me->{json}{user_id}, $v->{json}{user_id}, 'me: the same user_id';
    json_string_ok($me->{json}{user_id}, 'me: user_id');
    is $me->{json}{mobile}, $m, 'me: the verified mobile';
    is_epoch_ms($me->{json}{created_at}, $t0, $t1, 'me: created_at');

    my ($l, $devs) = devices($v->{json}{token});
    api_ok($l, 200, 'GET /v1/devices');
    is scalar @$devs, 1, 'one device';
    is $devs->[0]{device_id}, $v->{json}{device_id}, '... the verified one';
    is $devs->[0]{name}, 'first phone', '... with its name';
};

behaviour 'verify: verifying the same number again adds a device to the '
          . 'same user, with its own token' => sub {
    my $acct = api_signup(device_name => 'phone') or return;
    my $r = api_register($acct->{mobile});
    api_ok($r, 202, 'register again') or return;
    my $v = verify($acct->{mobile}, dev_code($r), 'tablet');
    api_ok($v, 200, 'verify again') or return;
    is $v->{json}{user_id}, $acct->{user_id}, 'the same user_id';
    isnt $v->{json}{device_id}, $acct->{device_id}, 'a new device_id';
    isnt $v->{json}{token}, $acct->{token}, 'a new token';
    token_ok($v->{json}{token}, 'second device');
    for my $t ($acct->{token}, $v->{json}{token}) {
        my $me = api_me($t);
        api_ok($me, 200, 'each token works on /v1/me');
        is $me->{json}{user_id}, $acct->{user_id}, '... for the same user';
    }
    my ($l, $devs) = devices($acct->{token});
    is_deeply [sort map { $_->{name} } @$devs], ['phone', 'tablet'],
              'both devices are listed';
};

behaviour 'verify: a wrong code gets 401; after 4 wrong tries the right '
          . 'code still works' => sub {
    my $m = random_mobile();
    my $code = dev_code(api_register($m)) or return fail('register');
    for my $i (1 .. 4) {
        api_error_is(verify($m, wrong_code($code)), 401, 'unauthorized',
                     "wrong code, try $i");
    }
    api_ok(verify($m, $code), 200, 'the right code on the 5th try');
};

behaviour 'verify: 5 wrong tries burn the code; a new register gives a '
          . 'code that works' => sub {
    my $m = random_mobile();
    my $code = dev_code(api_register($m)) or return fail('register');
    for my $i (1 .. 5) {
        api_error_is(verify($m, wrong_code($code)), 401, 'unauthorized',
                     "wrong code, try $i");
    }
    api_error_is(verify($m, $code), 401, 'unauthorized',
                 'the right code after 5 wrong tries');
    my $again = dev_code(api_register($m)) or return fail('register again');
    api_ok(verify($m, $again), 200, 'a fresh code works');
};

behaviour 'verify: a used code cannot be replayed; no code, no verify; '
          . 'the latest code works' => sub {
    my $m = random_mobile();
    my $code = dev_code(api_register($m)) or return fail('register');
    api_ok(verify($m, $code), 200, 'verify');
    api_error_is(verify($m, $code), 401, 'unauthorized',
                 'the same code again');
    api_error_is(verify(random_mobile(), '123456'), 401, 'unauthorized',
                 'a number that never registered');

    my $n = random_mobile();
    my $c1 = dev_code(api_register($n)) or return fail('register');
    my $c2 = dev_code(api_register($n)) or return fail('register again');
    api_ok(verify($n, $c2), 200, 'the second of two codes works');
    my $other = random_mobile();
    my $c3 = dev_code(api_register($other)) or return fail('register');
    api_error_is(verify($m, $c3), 401, 'unauthorized',
                 "another number's code");
};

behaviour 'verify: two verifies with one code at the same time: exactly '
          . 'one gets a token' => sub {
    my $m = random_mobile();
    my $code = dev_code(api_register($m)) or return fail('register');
    my @h = map {
        http_start(api_build_request(POST => '/v1/verify',
            body => { mobile => $m, code => $code,
                      device_name => "racer $_" }))
    } 1 .. 4;
    my @r = map { http_finish($_) } @h;
    my @won = grep { ($_->{status} // 0) == 200 } @r;
    is scalar @won, 1, 'one verify of four wins'
        or diag(join "\n---\n", map { api_show($_) } @r);
    for my $r (grep { ($_->{status} // 0) != 200 } @r) {
        api_error_is($r, 401, 'unauthorized', 'the others');
    }
    return unless @won == 1;
    my ($l, $devs) = devices($won[0]{json}{token});
    is scalar @$devs, 1, 'the user has one device';
};

behaviour 'verify: bad input gets 400 and leaves the code usable' => sub {
    my $m = random_mobile();
    my $code = dev_code(api_register($m)) or return fail('register');
    my @cases = (
        ['not JSON',             '{"mobile":'],
        ['no mobile',            { code => $code, device_name => 'x' }],
        ['no code',              { mobile => $m, device_name => 'x' }],
        ['code a number',        qq({"mobile":"$m","code":$code,)
                                 . '"device_name":"x"}'],
        ['mobile a number',      { mobile => 15551234567, code => $code,
                                   device_name => 'x' }],
        ['device_name a number', { mobile => $m, code => $code,
                                   device_name => 7 }],
        ['device_name an array', { mobile => $m, code => $code,
                                   device_name => ['x'] }],
        ['device_name of 65 characters',
                                 { mobile => $m, code => $code,
                                   device_name => 'n' x 65 }],
        ['device_name of 10 kB', { mobile => $m, code => $code,
                                    device_name => 'n' x 10_000 }],
        ['a non-E.164 mobile',   { mobile => '555-1234', code => $code,
                                   device_name => 'x' }],
        # docs/protocol.md: the code is a string of exactly 6 digits, and
        # device_name 1 to 64 characters.
        ['a 5-digit code',       { mobile => $m, code => substr($code, 1),
                                   device_name => 'x' }],
        ['a 7-digit code',       { mobile => $m, code => "${code}0",
                                   device_name => 'x' }],
        ['a code of letters',    { mobile => $m, code => 'abcdef',
                                   device_name => 'x' }],
        ['an empty device_name', { mobile => $m, code => $code,
                                   device_name => '' }],
        ['a device_name of 65 two-byte characters',
                                 { mobile => $m, code => $code,
                                   device_name => "\x{e9}" x 65 }],
    );
    for my $c (@cases) {
        my ($what, $body) = @$c;
        api_error_is(api_request(POST => '/v1/verify', body => $body), 400,
                     'bad_request', "verify with $what");
    }
    my $v = verify($m, $code, 'n' x 64);
    api_ok($v, 200, 'then the code works, with a 64-character name');
    my ($l, $devs) = devices($v->{json}{token} // '');
    is scalar @$devs, 1, 'and the user has one device, no half-made ones';
};

behaviour 'device names come back byte for byte (JSON escapes, UTF-8)'
          => sub {
    my @names = ("Ann\x{2019}s phone \x{1F4F1}", 'say "hi" \\ back/slash',
                 "tab\there", "\x{00e9}t\x{00e9} <b>&amp;</b>",
                 "\x{e9}" x 64);
    my $acct = api_signup(device_name => $names[0]) or return;
    my @linked = map { api_link_device($acct, device_name => $_) }
                 @names[1 .. $#names];
    my ($l, $devs) = devices($acct->{token});
    api_ok($l, 200, 'GET /v1/devices');
    is_deeply [sort map { $_->{name} } @$devs], [sort @names],
              'every name as it was sent';

    # docs/protocol.md: a missing or null device_name means "device".
    my $m = random_mobile();
    my $r = api_request(POST => '/v1/verify',
                        body => { mobile => $m,
                                  code => dev_code(api_register($m)) });
    api_ok($r, 200, 'verify without device_name') or return;
    (undef, $devs) = devices($r->{json}{token});
    is $devs->[0]{name}, 'device', '... names the device "device"';
};


# -------------------------------------------------------- link-code and link

behaviour 'link-code then link adds a device to the code\'s user; a code '
          . 'works once; made-up codes get 401' => sub {
    my $acct = api_signup(device_name => 'phone') or return;
    my $other = api_signup(device_name => 'stranger') or return;

    api_error_is(api_request(POST => '/v1/devices/link-code'), 401,
                 'unauthorized', 'link-code without a token');
    my $r = api_request(POST => '/v1/devices/link-code',
                        token => $acct->{token});
    api_ok($r, 200, 'link-code') or return;
    json_string_ok($r->{json}{code}, 'code');
    json_int_ok($r->{json}{expires_in}, 'expires_in');
    is $r->{json}{expires_in}, 120, 'expires_in is 120';
    my $code = $r->{json}{code};

    my $l = api_request(POST => '/v1/devices/link',
                        body => { code => $code, device_name => 'laptop' });
    api_ok($l, 200, 'link (no token needed)') or return;
    is $l->{json}{user_id}, $acct->{user_id}, "the code's user";
    json_string_ok($l->{json}{device_id}, 'device_id');
    isnt $l->{json}{device_id}, $acct->{device_id}, 'a new device';
    token_ok($l->{json}{token}, 'link');
    my $me = api_me($l->{json}{token});
    api_ok($me, 200, 'the new token works');
    is $me->{json}{user_id}, $acct->{user_id}, '... as the same user';
    is $me->{json}{mobile}, $acct->{mobile}, '... with the same mobile';

    api_error_is(api_request(POST => '/v1/devices/link',
                             body => { code => $code,
                                       device_name => 'again' }),
                 401, 'unauthorized', 'the same code a second time');
    api_error_is(api_request(POST => '/v1/devices/link',
                             body => { code => 'NOT-A-CODE',
                                       device_name => 'x' }),
                 401, 'unauthorized', 'a made-up code');
    api_error_is(api_request(POST => '/v1/devices/link',
                             body => { code => wrong_code(0),
                                       device_name => 'x' }),
                 401, 'unauthorized', 'a made-up numeric code');

    my ($dl, $devs) = devices($acct->{token});
    is scalar @$devs, 2, 'the user has two devices';
    my (undef, $odevs) = devices($other->{token});
    is scalar @$odevs, 1, 'the other user still has one';
};

behaviour 'link: bad input gets 400 and leaves the code usable' => sub {
    my $acct = api_signup() or return;
    my $r = api_request(POST => '/v1/devices/link-code',
                        token => $acct->{token});
    my $code = ref $r->{json} eq 'HASH' ? $r->{json}{code} : undef;
    ok defined $code, 'link-code' or return diag(api_show($r));
    my @cases = (
        ['not JSON',            '{"code"'],
        ['no code',             { device_name => 'x' }],
        ['code a number',       { code => 123456, device_name => 'x' }],
        ['code null',           { code => undef, device_name => 'x' }],
        ['device_name of 65 characters',
                                { code => $code, device_name => 'n' x 65 }],
        ['device_name an object',
                                { code => $code, device_name => {} }],
    );
    for my $c (@cases) {
        my ($what, $body) = @$c;
        api_error_is(api_request(POST => '/v1/devices/link', body => $body),
                     400, 'bad_request', "link with $what");
    }
    api_ok(api_request(POST => '/v1/devices/link',
                       body => { code => $code, device_name => 'n' x 64 }),
           200, 'then the code works');
};


# ----------------------------------------------------- list and unlink devices

behaviour 'GET /v1/devices lists the caller\'s devices, times in epoch '
          . 'milliseconds' => sub {
    my $t0 = now_ms();
    my $acct = api_signup(device_name => 'phone') or return;
    my $dev = api_link_device($acct, device_name => 'laptop') or return;
    my $t1 = now_ms();
    api_signup(device_name => 'someone else') or return;

    api_error_is(api_request(GET => '/v1/devices'), 401, 'unauthorized',
                 'without a token');
    my ($r, $devs) = devices($dev->{token});
    api_ok($r, 200, 'GET /v1/devices') or return;
    is ref $r->{json}{devices}, 'ARRAY', 'devices is an array';
    is_deeply [sort map { $_->{device_id} // '' } @$devs],
              [sort $acct->{device_id}, $dev->{device_id}],
              'exactly the two devices of the caller';
    for my $d (@$devs) {
        my $n = $d->{name} // 'unnamed';
        json_string_ok($d->{device_id}, "$n: device_id");
        json_string_ok($d->{name}, "$n: name");
        is_epoch_ms($d->{added_at}, $t0, $t1, "$n: added_at");
        ok exists $d->{last_seen}, "$n: last_seen is present";
        is_epoch_ms($d->{last_seen}, $t0, now_ms(), "$n: last_seen")
            if defined $d->{last_seen};
    }
};

behaviour 'DELETE /v1/devices/{id}: 204, the token stops working at once; '
          . 'other users\' and unknown ids get 404' => sub {
    my $acct = api_signup(device_name => 'phone') or return;
    my $dev = api_link_device($acct, device_name => 'old laptop') or return;
    my $c = api_link_device($acct, device_name => 'tablet') or return;
    my $x = api_signup(device_name => 'stranger') or return;

    api_error_is(api_request(DELETE => "/v1/devices/$dev->{device_id}"), 401,
                 'unauthorized', 'without a token');
    api_ok(api_me($dev->{token}), 200, 'the device still works');

    my $r = api_request(DELETE => "/v1/devices/$dev->{device_id}",
                        token => $acct->{token});
    api_ok($r, 204, 'unlink another own device');
    api_error_is(api_me($dev->{token}), 401, 'unauthorized',
                 'its token at once on /v1/me');
    api_error_is(api_request(GET => '/v1/devices', token => $dev->{token}),
                 401, 'unauthorized', 'its token on /v1/devices');
    api_error_is(api_request(POST => '/v1/devices/link-code',
                             token => $dev->{token}),
                 401, 'unauthorized', 'its token on link-code');
    my ($l, $devs) = devices($acct->{token});
    is_deeply [sort map { $_->{device_id} } @$devs],
              [sort $acct->{device_id}, $c->{device_id}], 'it is not listed';
    api_error_is(api_request(DELETE => "/v1/devices/$dev->{device_id}",
                             token => $acct->{token}),
                 404, 'not_found', 'unlinking it again');

    api_error_is(api_request(DELETE => "/v1/devices/$x->{device_id}",
                             token => $acct->{token}),
                 404, 'not_found', "another user's device");
    api_ok(api_me($x->{token}), 200, '... which still works');

    for my $id ('abc', '0', '-1', '1.5', '1e3', '99999999999999999999999999',
                '%27%3B--', 'x' x 300) {
        api_error_is(api_request(DELETE => "/v1/devices/$id",
                                 token => $acct->{token}),
                     [404, 400], undef, "device id '"
                     . (length $id > 20 ? substr($id, 0, 20) . '...' : $id)
                     . "'");
    }

    api_ok(api_request(DELETE => "/v1/devices/$c->{device_id}",
                       token => $c->{token}), 204,
           'a device unlinks itself');
    api_error_is(api_me($c->{token}), 401, 'unauthorized', '... and is out');
    api_ok(api_me($acct->{token}), 200, 'the first device still works');
};


# --------------------------------------------------------- /v1/me and tokens

behaviour 'missing, malformed and unknown tokens get 401 on every '
          . 'authenticated call' => sub {
    my $acct = api_signup() or return;
    my $t = $acct->{token};
    my @auth = (
        ['no Authorization',            undef],
        ['an empty Authorization',      'Authorization: '],
        ['"Bearer" alone',              'Authorization: Bearer'],
        ['"Bearer " and nothing',       'Authorization: Bearer '],
        ['Basic credentials',           'Authorization: Basic dXNlcjpwYXNz'],
        ['the token without a scheme',  "Authorization: $t"],
        ['a made-up token',             'Authorization: Bearer '
                                        . ('A' x length $t)],
        ['the token with a char more',  "Authorization: Bearer ${t}x"],
        ['the token less a char',       'Authorization: Bearer '
                                        . substr($t, 0, -1)],
        ['the token in other case',     'Authorization: Bearer ' . uc $t],
        ['a 4 kB token',                'Authorization: Bearer '
                                        . ('x' x 4096)],
        ['the token and %00',   "Authorization: Bearer $t%00"],
    );
    for my $c (@auth) {
        my ($what, $h) = @$c;
        next if $what eq 'the token in other case' && uc $t eq $t;
        for my $call (['GET', '/v1/me'], ['GET', '/v1/devices'],
                      ['POST', '/v1/devices/link-code'],
                      ['GET', "/v1/users/lookup?mobile=%2B1$$"],
                      ['DELETE', "/v1/devices/$acct->{device_id}"]) {
            my $r = api_request(@$call, headers => [grep { defined } $h]);
            api_error_is($r, 401, 'unauthorized', "$call->[0] $call->[1] "
                                                  . "with $what");
        }
    }
    api_ok(api_me($t), 200, 'the real token still works');
    my $r = api_me(undef);
    like $r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/,
         '401 carries WWW-Authenticate: Bearer (docs/protocol.md)';
    api_ok(api_request(GET => '/v1/me',
                       headers => ["Authorization: bearer $t"]), 200,
           'the scheme in lower case (docs/protocol.md)');
};


# -------------------------------------------------------------------- lookup

behaviour 'GET /v1/users/lookup finds a user by mobile, else 404' => sub {
    my $acct = api_signup() or return;
    my $dev = api_signup() or return;
    (my $q = $dev->{mobile}) =~ s/\+/%2B/;
    my $b_raw = $dev->{mobile};
    my $r = api_request(GET => "/v1/users/lookup?mobile=$q",
                        token => $acct->{token});
    api_ok($r, 200, "lookup $dev->{mobile}") or return;
    is $r->{json}{user_id}, $dev->{user_id}, "... is the other user";
    json_string_ok($r->{json}{user_id}, 'user_id');

    (my $self = $acct->{mobile}) =~ s/\+/%2B/;
    $r = api_request(GET => "/v1/users/lookup?mobile=$self",
                     token => $acct->{token});
    api_ok($r, 200, 'lookup of oneself');
    is $r->{json}{user_id}, $acct->{user_id}, '... is oneself';

    $r = api_request(GET => "/v1/users/lookup?mobile=$b_raw",
                     token => $acct->{token});
    api_ok($r, 200, 'lookup with the + not encoded (docs/protocol.md)');
    is $r->{json}{user_id}, $dev->{user_id}, '... finds the user too';

    (my $nobody = random_mobile()) =~ s/\+/%2B/;
    api_error_is(api_request(GET => "/v1/users/lookup?mobile=$nobody",
                             token => $acct->{token}),
                 404, 'not_found', 'a number nobody verified');
    my $m = random_mobile();
    api_register($m);
    (my $pending = $m) =~ s/\+/%2B/;
    api_error_is(api_request(GET => "/v1/users/lookup?mobile=$pending",
                             token => $acct->{token}),
                 404, 'not_found', 'a number registered but not verified');
    api_error_is(api_request(GET => "/v1/users/lookup?mobile=$q"), 401,
                 'unauthorized', 'without a token');
    api_error_is(api_request(GET => '/v1/users/lookup',
                             token => $acct->{token}),
                 400, 'bad_request', 'without mobile');
    api_error_is(api_request(GET => '/v1/users/lookup?mobile=',
                             token => $acct->{token}),
                 400, 'bad_request', 'with an empty mobile');
    api_error_is(api_request(GET => '/v1/users/lookup?mobile=555-1234',
                             token => $acct->{token}),
                 400, 'bad_request', 'with a non-E.164 mobile');
};


# ------------------------------------------------------------------- routing

behaviour 'unknown paths get 404 not_found; a known path with the wrong '
          . 'method gets 405 bad_request' => sub {
    my $acct = api_signup() or return;
    my $t = $acct->{token};
    for my $p ('/v1/', '/v1/nope', '/v1/registerx', '/v1/me/extra',
               '/v1/users', '/v1/users/lookupx', '/v1/devices/link-codes',
               "/v1/devices/$acct->{device_id}/extra", '/v1/me/') {
        api_error_is(api_request(GET => $p, token => $t), 404, 'not_found',
                     "GET $p");
    }
    api_error_is(api_request(POST => '/v1/nope', token => $t,
                             body => { a => 1 }),
                 404, 'not_found', 'POST /v1/nope');
    # [method, path, the method the path takes]
    my @wrong = (
        [GET => '/v1/register', 'POST'], [PUT => '/v1/register', 'POST'],
        [GET => '/v1/verify', 'POST'], [DELETE => '/v1/verify', 'POST'],
        [GET => '/v1/devices/link-code', 'POST'],
        [GET => '/v1/devices/link', 'POST'],
        [POST => '/v1/devices', 'GET'], [DELETE => '/v1/devices', 'GET'],
        [GET => "/v1/devices/$acct->{device_id}", 'DELETE'],
        [POST => "/v1/devices/$acct->{device_id}", 'DELETE'],
        [POST => '/v1/me', 'GET'], [DELETE => '/v1/me', 'GET'],
        [PUT => '/v1/me', 'GET'],
        [POST => "/v1/users/lookup?mobile=%2B1$$", 'GET'],
    );
    for my $w (@wrong) {
        my ($method, $path, $allowed) = @$w;
        my %body = $method =~ /^(POST|PUT)$/ ? (body => {}) : ();
        my $r = api_request($method, $path, token => $t, %body);
        api_error_is($r, 405, 'bad_request', "$method $path");
        like $r->{headers}{allow} // '', qr/\b$allowed\b/,
             "$method $path: Allow names $allowed (docs/protocol.md)";
    }
    api_ok(api_me($t), 200, 'and the token still works');
};


# ------------------------------------------------------------- body limits

behaviour 'bodies over the default 16k get 413 too_large' => sub {
    my $m = random_mobile();
    my $big = qq({"mobile":"$m"}) . (' ' x (17 * 1024));
    api_error_is(api_request(POST => '/v1/register', body => $big), 413,
                 'too_large', 'register with 17k');
    api_error_is(api_request(POST => '/v1/register', body => $big,
                             chunked => 1),
                 413, 'too_large', 'register with 17k, chunked');
    api_error_is(api_request(POST => '/v1/verify',
                             body => '{"a":"' . ('x' x 100_000) . '"}'),
                 413, 'too_large', 'verify with 100k');
    my $ok = qq({"mobile":"$m"}) . (' ' x (15 * 1024));
    api_ok(api_request(POST => '/v1/register', body => $ok), 202,
           'register with 15k of JSON whitespace');
};

behaviour 'chat_api_max_body_size 1k: 1.5k gets 413, 900 bytes pass',
    nginx => { http_config => chat_http_config(
                   extra => "chat_api_max_body_size 1k;\n") },
    sub {
    my $m = random_mobile();
    api_error_is(api_request(POST => '/v1/register',
                             body => qq({"mobile":"$m"}) . (' ' x 1500)),
                 413, 'too_large', 'register with 1.5k');
    api_ok(api_request(POST => '/v1/register',
                       body => qq({"mobile":"$m"}) . (' ' x 900)),
           202, 'register with 900 bytes');
};


# --------------------------------------------------------- chat_max_devices

behaviour 'chat_max_devices 2: a third device gets 409 conflict, by '
          . 'verify and by link; unlinking one frees the slot',
    nginx => { http_config => chat_http_config(
                   extra => "chat_max_devices 2;\n") },
    sub {
    my $acct = api_signup(device_name => 'one') or return;
    my $dev = api_link_device($acct, device_name => 'two') or return;

    my $code = dev_code(api_register($acct->{mobile}))
        or return fail('register');
    api_error_is(verify($acct->{mobile}, $code, 'three'), 409, 'conflict',
                 'a third device by verify');

    my $r = api_request(POST => '/v1/devices/link-code',
                        token => $acct->{token});
    if (($r->{status} // 0) == 409) {
        api_error_is($r, 409, 'conflict', 'link-code at the limit');
    } else {
        api_ok($r, 200, 'link-code at the limit');
        api_error_is(api_request(POST => '/v1/devices/link',
                                 body => { code => $r->{json}{code},
                                           device_name => 'three' }),
                     409, 'conflict', 'a third device by link');
    }
    my ($l, $devs) = devices($acct->{token});
    is scalar @$devs, 2, 'still two devices';

    api_ok(api_request(DELETE => "/v1/devices/$dev->{device_id}",
                       token => $acct->{token}), 204, 'unlink one');
    ok api_link_device($acct, device_name => 'three'),
       'now a device can be linked';
    ($l, $devs) = devices($acct->{token});
    is_deeply [sort map { $_->{name} } @$devs], ['one', 'three'],
              'the devices are one and three';
};


# ------------------------------------------------- dev codes and SMS relay

behaviour 'chat_dev_codes off: register answers without dev_code',
    nginx => { http_config => chat_http_config()
                              =~ s/chat_dev_codes on;/chat_dev_codes off;/r },
    sub {
    my $r = api_register(random_mobile());
    api_ok($r, 202, 'register');
    ok !exists $r->{json}{dev_code}, 'no dev_code in the answer'
        or diag(api_show($r));
    is $r->{json}{expires_in}, 300, 'expires_in is 300';
};

behaviour 'chat_sms_relay: the number and code are passed to the relay '
          . 'location',
    nginx => {
        http_config => chat_http_config(extra => <<'END'),
chat_sms_relay /sms;
log_subrequest on;
log_format sms '$request_method $request_uri args=$args body=$request_body';
END
        config => chat_locations() . <<'END',
location = /sms {
    internal;
    access_log logs/sms.log sms;
    return 204;
}
END
    },
    sub {
    my $m = random_mobile();
    my $r = api_register($m);
    api_ok($r, 202, 'register') or return;
    my $code = dev_code($r);
    my $log = servroot() . '/logs/sms.log';
    my $seen = wait_until(3, sub {
        open my $fh, '<', $log or return;
        local $/;
        my $d = <$fh> // '';
        return index($d, $code) >= 0 ? $d : undef;
    });
    ok $seen, 'the relay location saw the code'
        or diag("logs/sms.log:\n" . (-e $log ? `cat $log` : '(absent)'));
    (my $enc = $m) =~ s/\+/%2B/;
    like $seen // '', qr/\Q$m\E|\Q$enc\E|\Q${\ substr($m, 1)}\E/,
         '... and the number';
};

nginx_stop();
done_testing();
