# PostgreSQL and Redis failing under a running nginx: calls that need the
# lost service answer 503 unavailable within the configured timeout, the
# worker goes on serving everything else meanwhile, and once the service is
# back the same nginx (same master, same workers) works again within ~10 s.
# Both a stopped server (connections refused) and a hung one (SIGSTOP:
# connections accepted, nothing answered) are tried.
#
#   scripts/test.sh t/api_faults.t
#
# The file stops and starts the throwaway services of scripts/test.sh; the
# harness restarts whatever is still down when the file exits.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Time::HiRes qw(time);

needs_stack(qw(CHAT_PG_DIR CHAT_PG_PORT CHAT_REDIS_DIR CHAT_REDIS_PORT));

my $TIMEOUTS = "chat_postgres_timeout 2s;\nchat_redis_timeout 1s;\n";
my $HTTP = chat_http_config(extra => $TIMEOUTS);

my $LOCATIONS = <<'END';
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; chat_ws_auth_timeout 1s; }
location = /ok { return 200 "ok\n"; }
END

# For the unlink check: a reuseport listener spreads sockets over workers.
my $HTTP2 = chat_http_config(extra => $TIMEOUTS, port2 => 1,
                             locations => $LOCATIONS);


# One nginx per subtest; lost-connection errors are expected at error or
# warn level, alert/crit/emerg and crashes never.
sub outage {
    my ($name, %o) = @_;
    nginx_subtest $name, nginx => { http_config => $o{http} // $HTTP,
                                    config => $LOCATIONS,
                                    workers => $o{workers} // 1 },
                  no_error_log => [], $o{run};
}

# The calls of this file wait up to 10 s for their answer: an outage has
# to make them fail sooner.
sub me { api_me($_[0], timeout => 10) }

sub register { api_register($_[0], timeout => 10) }

sub processes {
    return (nginx_master_pid() // 0) . ' / '
           . join(',', nginx_worker_pids());
}

# The call answers 503 unavailable within $bound seconds.
sub unavailable_within {
    my ($r, $bound, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    api_error_is($r, 503, 'unavailable', $name);
    ok(($r->{elapsed} // 99) <= $bound,
       sprintf "$name: answered within %.1fs (%.2fs)", $bound,
               $r->{elapsed} // -1);
}

# While $req waits on the lost service, GET /ok answers at once: nothing
# blocks the (single) worker. Returns the slow request's response.
sub others_served {
    my ($req, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $h = http_start($req);
    # the worker has read it, and it has not been answered
    wait_until(10, sub { server_read_all($h) }, interval => 0.02);
    my $ok = api_request(GET => '/ok', timeout => 5);
    is $ok->{status}, 200, "$name: GET /ok answers meanwhile";
    ok(($ok->{elapsed} // 99) < 0.5,
       sprintf "$name: ... at once (%.2fs)", $ok->{elapsed} // -1);
    return http_finish($h, timeout => 10);
}

sub ws_ready {
    my ($acct, %o) = @_;
    my ($ws, $ready, $err) = ws_chat_auth(token => $acct->{token}, %o);
    return ($ws, $ready, $err);
}

# The pong to a ping ("synced", which follows "ready", may come first).
sub pongs {
    my ($ws, $t) = @_;
    $ws->send_json({ type => 'ping', t => $t });
    my ($what, $m) = ws_next($ws, 3);
    ($what, $m) = ws_next($ws, 3)
        if $what eq 'json' && ($m->{type} // '') eq 'synced';
    return $what eq 'json' && ($m->{type} // '') eq 'pong'
           && ($m->{t} // '') eq $t;
}

# Polls until the call gives $status; returns (response, seconds).
sub recovers {
    my ($call, $status, $bound) = @_;
    my $t0 = time;
    my $last;
    my $r = wait_until($bound, sub {
        $last = $call->();
        return ($last->{status} // 0) == $status ? $last : undef;
    }, interval => 0.25);
    return ($r || $last, time - $t0, !!$r);
}


# ---------------------------------------------------------------- PostgreSQL

outage 'PostgreSQL stopped: 503 within the query timeout, the worker '
       . 'serves on, and the same nginx recovers when it is back', run => sub {
    my $acct = api_signup() or return;
    api_ok(me($acct->{token}), 200, 'GET /v1/me before');
    my ($ws, $ready, $err) = ws_ready($acct);
    ok $ready, 'a socket is ready before the outage' or diag($err);
    my $procs = processes();

    ok pg_stop(), 'PostgreSQL stops' or return;
    for my $i (1 .. 3) {
        unavailable_within(me($acct->{token}), 3, "GET /v1/me #$i");
    }
    my $r = others_served(api_build_request(GET => '/v1/me',
                                            token => $acct->{token}),
                          'GET /v1/me');
    unavailable_within($r, 3, 'GET /v1/me beside /ok');

    my $m = random_mobile();
    my $reg = register($m);
    my $code = ref $reg->{json} eq 'HASH' ? $reg->{json}{dev_code} : undef;
    if (($reg->{status} // 0) == 202 && $code) {
        unavailable_within(api_request(POST => '/v1/verify', timeout => 10,
                                       body => { mobile => $m, code => $code,
                                                 device_name => 'x' }),
                           3, 'POST /v1/verify');
    } else {
        unavailable_within($reg, 3, 'POST /v1/register');
    }
    unavailable_within(api_request(GET => '/v1/devices', timeout => 10,
                                   token => $acct->{token}),
                       3, 'GET /v1/devices');

    # A token that cannot be checked is not a bad token: a client told 4001
    # would throw its credentials away (docs/protocol.md: 1013).
    my ($ws2, $ready2, $err2) = ws_ready($acct, timeout => 5);
    ok !$ready2, 'a new socket cannot authenticate during the outage';
    like $err2 // '', qr/^close 1013\b/,
         '... and is told to try again later (1013), not 4001'
        or diag("got $err2");
    ok $ws && pongs($ws, 'during'), 'the socket made before still answers';

    ok pg_start(), 'PostgreSQL starts again' or return;
    my ($back, $took, $ok) = recovers(sub { me($acct->{token}) }, 200, 10);
    ok $ok, sprintf('GET /v1/me answers 200 again within 10s (%.1fs)', $took)
        or diag(api_show($back));
    is $back->{json}{user_id}, $acct->{user_id}, '... for the same user';
    is processes(), $procs, 'the same master and workers (no restart)';
    ok api_signup(), 'a new user can sign up';
    ($ws2, $ready2, $err2) = ws_ready($acct);
    ok $ready2, 'a new socket authenticates' or diag($err2);
    ok $ws && pongs($ws, 'after'), 'the socket made before still answers';
};

outage 'PostgreSQL hung (SIGSTOP): 503 within the query timeout, the '
       . 'worker serves on, and it recovers on SIGCONT', run => sub {
    my $acct = api_signup() or return;
    api_ok(me($acct->{token}), 200, 'GET /v1/me before');
    my $procs = processes();

    ok pg_pause(), 'PostgreSQL hangs';
    unavailable_within(me($acct->{token}), 3.5, 'GET /v1/me');
    my $r = others_served(api_build_request(GET => '/v1/me',
                                            token => $acct->{token}),
                          'GET /v1/me');
    unavailable_within($r, 3.5, 'GET /v1/me beside /ok');
    # Reconnects hang too now: the connect timeout must bound them.
    unavailable_within(me($acct->{token}), 3.5, 'GET /v1/me, later');
    ok pg_resume(), 'PostgreSQL resumes';

    my ($back, $took, $ok) = recovers(sub { me($acct->{token}) }, 200, 10);
    ok $ok, sprintf('GET /v1/me answers 200 again within 10s (%.1fs)', $took)
        or diag(api_show($back));
    is processes(), $procs, 'the same master and workers (no restart)';
};


# --------------------------------------------------------------------- Redis

outage 'Redis stopped: register answers 503 within the Redis timeout, the '
       . 'worker serves on, and register works again when it is back',
       run => sub {
    api_ok(register(random_mobile()), 202, 'register before');
    my $acct = api_signup() or return;
    my $dev = api_link_device($acct) or return;
    my $procs = processes();

    ok redis_stop(), 'Redis stops' or return;
    # docs/protocol.md: the token is dead in PostgreSQL, so the unlink
    # succeeds even though the revocation cannot be published.
    api_ok(api_request(DELETE => "/v1/devices/$dev->{device_id}",
                       token => $acct->{token}, timeout => 10),
           204, 'unlinking a device still works (docs/protocol.md)');
    api_error_is(me($dev->{token}), 401, 'unauthorized',
                 '... and its token is dead');
    api_ok(me($acct->{token}), 200, 'GET /v1/me needs no Redis');
    unavailable_within(register(random_mobile()), 2, "register #$_")
        for 1 .. 3;
    my $r = others_served(api_build_request(POST => '/v1/register',
                              body => { mobile => random_mobile() }),
                          'register');
    unavailable_within($r, 2, 'register beside /ok');

    ok redis_start(), 'Redis starts again' or return;
    my ($back, $took, $ok) = recovers(sub { register(random_mobile()) },
                                      202, 10);
    ok $ok, sprintf('register answers 202 again within 10s (%.1fs)', $took)
        or diag(api_show($back));
    is processes(), $procs, 'the same master and workers (no restart)';
    ok api_signup(), 'register and verify work';
};

outage 'Redis hung (SIGSTOP): register answers 503 within the Redis '
       . 'timeout, the worker serves on, and it recovers on SIGCONT',
       run => sub {
    api_ok(register(random_mobile()), 202, 'register before');
    my $procs = processes();

    ok redis_pause(), 'Redis hangs';
    unavailable_within(register(random_mobile()), 2, 'register');
    my $r = others_served(api_build_request(POST => '/v1/register',
                              body => { mobile => random_mobile() }),
                          'register');
    unavailable_within($r, 2, 'register beside /ok');
    unavailable_within(register(random_mobile()), 2, 'register, later');
    ok redis_resume(), 'Redis resumes';

    my ($back, $took, $ok) = recovers(sub { register(random_mobile()) },
                                      202, 10);
    ok $ok, sprintf('register answers 202 again within 10s (%.1fs)', $took)
        or diag(api_show($back));
    is processes(), $procs, 'the same master and workers (no restart)';
};

outage 'after a Redis restart, unlinking still closes the device\'s '
       . 'sockets on both workers (subscriptions renewed)',
       http => $HTTP2, workers => 2, run => sub {
    my $acct = api_signup(device_name => 'A') or return;
    my $devb = api_link_device($acct, device_name => 'B') or return;
    my (@sb, %on);
    while (@sb < 6 || (keys %on < 2 && @sb < 24)) {
        my ($ws, $ready, $err) = ws_ready($devb, port => port2());
        ok $ready, 'B socket ' . (@sb + 1) . ' ready' or diag($err);
        last unless $ready;
        push @sb, $ws;
        my $pid = ws_worker_pid($ws) // last;
        $on{$pid}++;
    }
    is scalar(keys %on), 2, "B's sockets are on both workers" if %on;
    my $procs = processes();

    my $mark = error_log_mark();
    ok redis_stop(), 'Redis stops' or return;
    ok redis_down_seen($mark), 'both workers see it gone';
    $mark = error_log_mark();
    ok redis_start(), 'Redis starts again' or return;
    my ($back, $took, $ok) = recovers(sub { register(random_mobile()) },
                                      202, 10);
    ok $ok, sprintf('register answers 202 again (%.1fs)', $took)
        or diag(api_show($back));
    ok redis_up_seen($mark), 'both workers have their subscriptions link '
                             . 'back';
    is scalar(grep { pongs($_, 'still') } @sb), scalar @sb,
       'B sockets lived through the outage';

    my $t0 = time;
    api_ok(api_request(DELETE => "/v1/devices/$devb->{device_id}",
                       token => $acct->{token}), 204, 'A unlinks B');
    my $closed = 0;
    my @late;
    for my $ws (@sb) {
        my ($what, @v);
        do { ($what, @v) = ws_next($ws, 5 - (time - $t0)) }
            while $what eq 'json' || $what eq 'text';
        if ($what eq 'close' && ($v[0] // 0) == 4001 && time - $t0 <= 2.5) {
            $closed++;
        } else {
            push @late, sprintf '%s %s after %.2fs', $what, $v[0] // '',
                                time - $t0;
        }
    }
    is $closed, scalar @sb, 'every B socket closed with 4001 within ~2s'
        or diag(join "\n", @late);
    is processes(), $procs, 'the same master and workers (no restart)';
};

done_testing();
