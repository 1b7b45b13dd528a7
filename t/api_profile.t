# Profiles (docs/protocol.md "Profile"): PATCH /v1/me {"about"} takes up to
# 140 characters (code points, not bytes), "" clears it, anything else is
# 400; GET /v1/me shows it; GET /v1/users/{id} shows a user's about,
# online and last_seen to those who share a chat with them (404 to anyone
# else, as for an unknown id), online while one of their sockets is open,
# last_seen by the presence privacy rules; a change of about reaches the
# user's presence watchers on every worker as {"type":"profile"}, and is
# made, with a warning, while Redis is down.
#
#   scripts/test.sh t/api_profile.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve :devices);
use Test::Chat::JSON qw(json_type ms);
use JSON::PP ();
use Time::HiRes qw(time sleep);

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

needs_stack();

my $DEBOUNCE = 1;       # chat_presence_debounce, seconds

# Two workers, each with a listening socket of its own on port2
# (reuseport): sockets can be placed on either.
serve(defaults => 1,
      http_config => chat_http_config(prefix => "t_api_profile_$$:",
                                      port2 => 1,
                                      extra => "chat_presence_debounce "
                                               . "${DEBOUNCE}s;\n"));

# No user has this id: the largest bigint.
my $NOBODY = '9223372036854775807';

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub set_about {
    my ($acct, $about) = @_;
    return api_request(PATCH => '/v1/me', token => $acct->{token},
                       body => { about => $about });
}

sub user {
    my ($viewer, $id) = @_;
    return api_request(GET => "/v1/users/$id", token => $viewer->{token});
}

# One assertion: the user's last_seen setting is now $last_seen.
sub set_last_seen {
    my ($acct, $last_seen) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    set_privacy($acct, { last_seen => $last_seen },
                "$acct->{name}: last_seen \"$last_seen\"");
}

# What a decoded JSON value was on the wire: null, bool, string, int...
sub types {
    my ($h) = @_;
    return { map { $_ => json_type($h->{$_}) } keys %$h };
}

# One assertion: $r is 200 with exactly {"user_id","about","online",
# "last_seen"} for $u, online a JSON boolean, last_seen null (undef $ls)
# or an integer in [$ls->[0], $ls->[1]].
sub user_is {
    my ($r, $u, $about, $online, $ls, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @why;
    my $j = ref $r->{json} eq 'HASH' ? $r->{json} : undef;
    if (($r->{status} // 0) != 200 || !$j) {
        push @why, 'status ' . ($r->{status} // 'none') . ', not 200 with '
                   . 'a JSON object';
    } else {
        my $t = types($j);
        push @why, 'fields are ' . join(',', sort keys %$j)
            unless join(',', sort keys %$j) eq 'about,last_seen,online,'
                                                . 'user_id';
        push @why, "user_id is not the string $u->{user_id}"
            unless ($t->{user_id} // '') eq 'string'
                   && $j->{user_id} eq $u->{user_id};
        push @why, 'about is ' . $JSON->encode($j->{about})
                   . ', expected ' . $JSON->encode($about)
            unless ($t->{about} // '') eq 'string' && $j->{about} eq $about;
        push @why, 'online is not the JSON boolean '
                   . ($online ? 'true' : 'false')
            unless ($t->{online} // '') eq 'bool'
                   && ($j->{online} ? 1 : 0) == ($online ? 1 : 0);
        if (!defined $ls) {
            push @why, 'last_seen is not null' if defined $j->{last_seen};
        } elsif (($t->{last_seen} // '') ne 'int') {
            push @why, 'last_seen is not an integer';
        } elsif ($j->{last_seen} < $ls->[0] || $j->{last_seen} > $ls->[1]) {
            push @why, sprintf 'last_seen is %d, expected %d..%d',
                               $j->{last_seen}, @$ls;
        }
    }
    ok !@why, $name or diag(join('; ', @why) . "\n" . api_show($r));
    return $j;
}

# One assertion: $ev is exactly {"type":"profile","user_id","about"}.
sub profile_is {
    my ($d, $ev, $u, $about, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %got = map { $_ => $ev->{$_} } grep { !/^_/ } keys %{ $ev || {} };
    my $want = { type => 'profile', user_id => $u->{user_id},
                 about => $about };
    my @why;
    push @why, 'got ' . ($ev ? $JSON->encode(\%got) : 'nothing')
               . ', expected ' . $JSON->encode($want)
        unless $ev && $JSON->encode(\%got) eq $JSON->encode($want);
    push @why, 'user_id or about is not a JSON string'
        if $ev && grep { ($ev->{_types}{$_} // '') ne 'string' }
                       qw(user_id about);
    ok !@why, "$name: $d->{name} gets {\"type\":\"profile\"} of "
              . $u->{name} or diag(join '; ', @why);
}

sub wait_online {
    my ($viewer, $u, $online, $within) = @_;
    my $j;
    wait_until($within, sub {
        my $r = user($viewer, $u->{user_id});
        $j = $r->{json};
        return ref $j eq 'HASH' && defined $j->{online}
               && ($j->{online} ? 1 : 0) == ($online ? 1 : 0);
    });
    return $j;
}


# ---------------------------------------------------------------------------

behaviour 'PATCH /v1/me {"about"}: at most 140 characters (code points, '
          . 'not bytes), "" clears it, the answer is GET /v1/me\'s; '
          . 'anything else is 400' => sub {
    my $a = api_signup(device_name => 'A') or return;

    my $r = api_me($a->{token});
    api_ok($r, 200, 'GET /v1/me') or return;
    is_deeply [sort keys %{ $r->{json} }],
              [qw(about created_at mobile user_id)],
              'GET /v1/me: user_id, mobile, created_at, about';
    is $r->{json}{about}, '', 'about is "" before it is set';

    $r = set_about($a, 'at the gym');
    api_ok($r, 200, 'PATCH /v1/me {"about":"at the gym"}') or return;
    is_deeply $r->{json}, { user_id => $a->{user_id},
                            mobile => $a->{mobile},
                            created_at =>
                                api_me($a->{token})->{json}{created_at},
                            about => 'at the gym' },
              'the answer is the user as GET /v1/me shows it';
    is api_me($a->{token})->{json}{about}, 'at the gym', 'GET /v1/me shows it';

    my @ok = (['140 ASCII characters', 'x' x 140],
              ['140 two-byte characters (280 bytes)', "\x{e9}" x 140],
              ['140 four-byte characters (560 bytes)', "\x{1F600}" x 140],
              ['139 ASCII and one emoji', ('y' x 139) . "\x{1F44B}"],
              ['text with a newline, quotes and a backslash',
               "line 1\nline \"2\" \\ \x{4e2d}\x{6587}"]);
    for my $c (@ok) {
        $r = set_about($a, $c->[1]);
        api_ok($r, 200, "about: $c->[0]");
        is $r->{json}{about}, $c->[1], "$c->[0]: the answer has it exactly";
        is api_me($a->{token})->{json}{about}, $c->[1],
           "$c->[0]: GET /v1/me too";
    }

    my $kept = $ok[-1][1];
    my @bad = (['141 ASCII characters', 'x' x 141],
               ['141 two-byte characters', "\x{e9}" x 141],
               ['141 four-byte characters', "\x{1F600}" x 141],
               ['a number', 5], ['true', JSON::PP::true], ['null', undef],
               ['an array', ['x']], ['an object', { text => 'x' }]);
    for my $c (@bad) {
        api_error_is(set_about($a, $c->[1]), 400, 'bad_request',
                     "about: $c->[0]");
    }
    api_error_is(api_request(PATCH => '/v1/me', token => $a->{token},
                             body => {}),
                 400, 'bad_request', 'no about');
    api_error_is(api_request(PATCH => '/v1/me', token => $a->{token},
                             body => '"about"'),
                 400, 'bad_request', 'not a JSON object');
    is api_me($a->{token})->{json}{about}, $kept, 'about is as it was';
    api_error_is(api_request(PATCH => '/v1/me', body => { about => 'x' }),
                 401, 'unauthorized', 'no token');

    $r = set_about($a, '');
    api_ok($r, 200, 'PATCH /v1/me {"about":""}');
    is $r->{json}{about}, '', '"" clears it';
    is api_me($a->{token})->{json}{about}, '', 'GET /v1/me: ""';
};

behaviour 'GET /v1/users/{id}: about, online and last_seen for who shares '
          . 'a chat with the user, and the user; 404 not_found for a '
          . 'stranger, as for an unknown id; no mobile' => sub {
    my ($a, $b, $c, $s) = users(qw(A B C S)) or return;
    direct_chat($a, $b) or return;
    group_chat($c, 'with A', [$a]) or return;
    api_ok(set_about($a, 'on holiday'), 200, 'A sets an about') or return;

    user_is(user($b, $a->{user_id}), $a, 'on holiday', 0, undef,
            'B (a direct chat with A) sees A: never connected');
    user_is(user($c, $a->{user_id}), $a, 'on holiday', 0, undef,
            'C (a group with A) sees A');
    user_is(user($a, $a->{user_id}), $a, 'on holiday', 0, undef,
            'A sees itself');
    user_is(user($a, $b->{user_id}), $b, '', 0, undef,
            'A sees B: no about is ""');

    my $stranger = user($s, $a->{user_id});
    api_error_is($stranger, 404, 'not_found', 'S (no shared chat) asks for A');
    my $unknown = user($s, $NOBODY);
    api_error_is($unknown, 404, 'not_found', 'an unknown id');
    is $stranger->{body}, $unknown->{body},
       'a stranger and an unknown id get the same answer';
    api_error_is(user($b, $c->{user_id}), 404, 'not_found',
                 'B asks for C: they share no chat (both share one with '
                 . 'A)');
    api_error_is(user($b, 'abc'), 404, 'not_found', 'a path that is no id');
    api_error_is(user($b, '0'), 404, 'not_found', 'id 0');
    api_error_is(api_request(GET => "/v1/users/$a->{user_id}"), 401,
                 'unauthorized', 'no token');
    my $r = api_request(DELETE => "/v1/users/$a->{user_id}",
                        token => $b->{token});
    api_error_is($r, 405, 'bad_request', 'DELETE /v1/users/{id}');
    is $r->{headers}{allow}, 'GET', '... Allow: GET';

    api_ok(set_about($a, 'back'), 200, 'A changes its about');
    is user($b, $a->{user_id})->{json}{about}, 'back',
       'B sees the new about at once';
};

behaviour 'GET /v1/users/{id}: online while one of the user\'s sockets '
          . 'is open, on either worker; after the last closes, online '
          . "still during chat_presence_debounce (${DEBOUNCE}s), then "
          . 'false with last_seen when it closed' => sub {
    my ($a, $b) = users(qw(A B)) or return;
    my $a2 = api_link_device($a, device_name => 'A2') or return;
    direct_chat($a, $b) or return;
    my @w = nginx_worker_pids();
    is scalar(@w), 2, 'two workers' or return;

    my $da = device($a, 'A', worker => $w[0]) or return;
    my $j = wait_online($b, $a, 1, 3);
    user_is({ status => 200, json => $j }, $a, '', 1, undef,
            'A connects: online, last_seen null');
    my $da2 = device($a2, 'A2', worker => $w[1]) or return;
    hang_up($da);
    # What is tested: past the debounce A is still online (A2 is open).
    sleep $DEBOUNCE + 0.5;
    user_is(user($b, $a->{user_id}), $a, '', 1, undef,
            'A\'s first socket closed, A2\'s is open (other worker): '
            . 'online');

    my $t0 = time;
    hang_up($da2);
    my $t1 = time;
    user_is(user($b, $a->{user_id}), $a, '', 1, undef,
            'right after the last socket closed: still online');
    $j = wait_online($b, $a, 0, $DEBOUNCE + 3);
    my $t2 = time;
    user_is({ status => 200, json => $j }, $a, '', 0,
            [ms($t0) - 1000, ms($t1) + 1000],
            'then offline, last_seen when the last socket closed');
    ok $t2 - $t1 >= $DEBOUNCE - 0.3,
       sprintf 'not before the debounce (after %.2fs)', $t2 - $t1;
    my $seen = $j ? $j->{last_seen} : undef;
    user_is(user($a, $a->{user_id}), $a, '', 0, [$seen // 0, $seen // 0],
            'A sees its own last_seen, the same');

    $da = device($a, 'A again') or return;
    wait_online($b, $a, 1, 3);
    user_is(user($b, $a->{user_id}), $a, '', 1, undef,
            'A back: online, last_seen null');
    hang_up($da);
};

behaviour 'GET /v1/users/{id}: last_seen privacy as for watchers: an '
          . 'owner with "nobody" has it null; a viewer with "nobody" sees '
          . 'null for everyone; "contacts" shows it to those the owner '
          . 'wrote to in a direct chat; online is shown all the same' => sub {
    my ($o, $p, $v, $h) = users(qw(O P V H)) or return;
    group_chat($v, 'privacy', [$o, $p, $h]) or return;
    my $pv = direct_chat($p, $v) or return;
    set_last_seen($o, 'nobody');
    set_last_seen($p, 'contacts');
    set_last_seen($h, 'nobody');

    my @d = (device($o, 'O'), device($p, 'P'));
    return if grep { !$_ } @d;
    send_ok($d[1], $pv, [$d[1]], 'P writes to V in their direct chat')
        // return;
    for my $u ($o, $p) {
        my $j = wait_online($v, $u, 1, 3);
        user_is({ status => 200, json => $j }, $u, '', 1, undef,
                "$u->{name} connects: V sees it online");
        user_is(user($h, $u->{user_id}), $u, '', 1, undef,
                "H sees $u->{name} online");
    }
    my $t0 = time;
    hang_up($_) for @d;
    my $t1 = time;
    wait_online($v, $_, 0, $DEBOUNCE + 3) for $o, $p;

    my $range = [ms($t0) - 1000, ms($t1) + 1000];
    user_is(user($v, $p->{user_id}), $p, '', 0, $range,
            'V ("everyone", written to) sees P ("contacts") offline with '
            . 'last_seen');
    user_is(user($v, $o->{user_id}), $o, '', 0, undef,
            'V sees O ("nobody") offline, last_seen null');
    user_is(user($h, $p->{user_id}), $p, '', 0, undef,
            'H ("nobody") sees P offline, last_seen null');
    user_is(user($o, $o->{user_id}), $o, '', 0, undef,
            'O ("nobody") sees its own last_seen null too');

    set_last_seen($h, 'everyone');
    user_is(user($h, $p->{user_id}), $p, '', 0, undef,
            'H turns "everyone": P ("contacts") never wrote to H, '
            . 'last_seen still null');
    set_last_seen($p, 'everyone');
    user_is(user($h, $p->{user_id}), $p, '', 0, $range,
            'P turns "everyone": H sees P\'s last_seen');
};

behaviour 'a change of about reaches the user\'s presence watchers on both '
          . 'workers as {"type":"profile","user_id","about"}, also those '
          . 'who may not see last_seen; no event when nothing changed, '
          . 'none to sockets not watching' => sub {
    my ($u, $w1, $w2, $x) = users(qw(U W1 W2 X)) or return;
    group_chat($u, 'watchers', [$w1, $w2, $x]) or return;
    set_last_seen($w2, 'nobody');
    my @w = nginx_worker_pids();
    is scalar(@w), 2, 'two workers' or return;
    my $d1 = device($w1, 'W1', worker => $w[0]) or return;
    my $d2 = device($w2, 'W2', worker => $w[1]) or return;
    my $dx = device($x, 'X (not watching)', worker => $w[0]) or return;
    my @all = ($d1, $d2, $dx);

    for my $d ($d1, $d2) {
        $d->{ws}->send_json({ type => 'presence',
                              subscribe => [$u->{user_id}] });
    }
    ok pump(\@all, sub { $d1->{presences} && $d2->{presences} },
            within => 5),
       'W1 and W2 subscribe to U: the state comes';

    api_ok(set_about($u, "busy \x{1F4BC}"), 200, 'U sets its about');
    pump(\@all, sub { profiles_of($d1, $u) && profiles_of($d2, $u) },
         within => 5);
    profile_is($d1, (profiles_of($d1, $u))[0], $u, "busy \x{1F4BC}",
               'U sets its about');
    profile_is($d2, (profiles_of($d2, $u))[0], $u, "busy \x{1F4BC}",
               'U sets its about (W2 hides its last_seen)');

    api_ok(set_about($u, "busy \x{1F4BC}"), 200, 'U sets the same again');
    api_ok(set_about($u, ''), 200, 'then clears it');
    pump(\@all, sub { profiles_of($d1, $u) > 1 && profiles_of($d2, $u) > 1 },
         within => 5);
    pump(\@all, undef, within => 0.5);
    for my $d ($d1, $d2) {
        my @p = profiles_of($d, $u, 1);
        is scalar(@p), 1, "$d->{name}: one more event, not two (the same "
                          . 'about again is no change)';
        profile_is($d, $p[0], $u, '', 'U clears its about');
    }
    is scalar(@{ $dx->{profiles} || [] }), 0,
       'X, in the group but not watching U, gets nothing';

    $d1->{ws}->send_json({ type => 'presence',
                           unsubscribe => [$u->{user_id}] });
    # a socket's messages are answered in order: once a ping sent after
    # it is answered, the unsubscribe is done
    $d1->{ws}->send_json({ type => 'ping', t => 'unsubscribed' });
    ok ws_chat_wait($d1->{ws}, 5, sub { $_[0]{type} eq 'pong' }),
       'W1 unsubscribes from U (a ping after it is answered)';
    api_ok(set_about($u, 'later'), 200, 'U changes it again');
    pump(\@all, sub { profiles_of($d2, $u) > 2 }, within => 5);
    profile_is($d2, (profiles_of($d2, $u))[2], $u, 'later',
               'after W1 unsubscribed');
    pump(\@all, undef, within => 0.5);
    is scalar(profiles_of($d1, $u)), 2, 'W1 (unsubscribed) gets nothing more';
    no_errors_ok(\@all, 'profile events');
    hang_up($_) for @all;
};

behaviour 'Redis down: PATCH /v1/me still changes about (a warning in '
          . 'the log); GET /v1/users/{id} is 503 unavailable',
          no_error_log => [],
          # a worker that has not noticed yet sends it to a dead link
          error_log => [qr/chat profile: change (of user \d+ )?not published/,
                        qr/\[warn\] .*fan-outs wait for Redis to take them/]
          => sub {
    my ($u, $v) = users(qw(U V)) or return;
    direct_chat($u, $v) or return;
    ok redis_stop(), 'Redis stops';
    ok wait_until(5, sub {
           (user($v, $u->{user_id})->{status} // 0) == 503 }),
       'the workers notice';
    my $r = set_about($u, 'offline edit');
    api_ok($r, 200, 'PATCH /v1/me while Redis is down');
    is $r->{json}{about}, 'offline edit', '... the answer has the change';
    is api_me($u->{token})->{json}{about}, 'offline edit',
       'GET /v1/me shows it';
    api_error_is(user($v, $u->{user_id}), 503, 'unavailable',
                 'GET /v1/users/{id} needs the presence state: 503');
    ok redis_start(), 'Redis starts again';
    ok wait_until(10, sub {
           (user($v, $u->{user_id})->{status} // 0) == 200 }),
       'GET /v1/users/{id} works again';
    is user($v, $u->{user_id})->{json}{about}, 'offline edit',
       '... with the about changed while Redis was down';
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
