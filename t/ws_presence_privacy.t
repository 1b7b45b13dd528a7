# Presence privacy means what it says (docs/protocol.md, "Presence"):
#
#   - "contacts" shows last seen to those the user wrote to in a direct
#     chat, not to whoever opened one with them;
#   - a watch follows the watched user's privacy as it changes;
#   - a watch ends when the watcher no longer shares a chat with the user.
#
#   scripts/test.sh t/ws_presence_privacy.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);

needs_stack();

my $http = chat_http_config(extra => <<"END");
chat_presence_debounce 300ms;
END
ok nginx_start(workers => 2, http_config => $http,
               config => <<'END'),
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END
   'nginx starts';

sub privacy {
    my ($acct, $to) = @_;
    return api_request(PATCH => '/v1/me/privacy', token => $acct->{token},
                       body => { last_seen => $to })->{status};
}

sub direct {
    my ($from, $to) = @_;
    return api_chat_create($from, { type => 'direct',
                                    user_id => $to->{user_id} })->{chat_id};
}

sub say_in {
    my ($acct, $chat, $text) = @_;
    return api_request(POST => '/v1/send', token => $acct->{token},
                       body => { id => "$text", chat_id => $chat,
                                 text => $text })->{status};
}

# the next presence event of the user (online or not, or either), or
# undef when none comes within the time
sub presence_of {
    my ($ws, $user, $within, $online) = @_;
    my $ev = ws_chat_wait($ws, $within, sub {
        $_[0]{type} eq 'presence' && $_[0]{user_id} eq $user->{user_id}
        && (!defined $online || !$_[0]{online} == !$online) });
    return $ev && $ev->{type} eq 'presence' ? $ev : undef;
}

# subscribes, and returns the first (current) state of the user
sub watch {
    my ($ws, $user) = @_;
    $ws->send_json({ type => 'presence', subscribe => [$user->{user_id}] });
    return presence_of($ws, $user, 5);
}

# the user comes online, then goes: what the watcher hears of it going
sub went_offline {
    my ($ws, $user) = @_;
    my ($wu) = ws_chat_open($user, name => "$user->{name} comes online");
    presence_of($ws, $user, 5, 1);
    $wu->close(1000);
    $wu->disconnect;
    return presence_of($ws, $user, 5, 0);
}

subtest '"contacts": those the user wrote to, not whoever wrote to them'
        => sub {
    my $u = api_signup(device_name => 'u');
    my $w1 = api_signup(device_name => 'w1');
    my $w2 = api_signup(device_name => 'w2');
    is privacy($u, 'contacts'), 200, 'u shows last seen to contacts';
    my $c1 = direct($u, $w1);
    is say_in($u, $c1, 'hello w1'), 200, 'u writes to w1';
    my $c2 = direct($w2, $u);
    is say_in($w2, $c2, 'hello u'), 200, 'w2 writes to u (u does not)';
    my ($ws1) = ws_chat_open($w1);
    my ($ws2) = ws_chat_open($w2);
    ok watch($ws1, $u), 'w1 watches u';
    ok watch($ws2, $u), 'w2 watches u';
    my $ev1 = went_offline($ws1, $u);
    ok $ev1 && defined $ev1->{last_seen}, 'w1 (a contact) sees last_seen';
    my $ev2 = presence_of($ws2, $u, 5, 0);
    ok $ev2, 'w2 hears u went offline';
    ok $ev2 && !defined $ev2->{last_seen}, 'w2 (not a contact) does not see '
                                           . 'last_seen';
    $_->close(1000) for $ws1, $ws2;
};

subtest 'a watch follows the watched user\'s privacy' => sub {
    my $u = api_signup(device_name => 'u');
    my $w = api_signup(device_name => 'w');
    my $c = direct($u, $w);
    is say_in($u, $c, 'hi'), 200, 'u writes to w';
    my ($ws) = ws_chat_open($w);
    ok watch($ws, $u), 'w watches u (last seen to everyone)';
    my $ev = went_offline($ws, $u);
    ok $ev && defined $ev->{last_seen}, 'w sees u\'s last_seen';
    is privacy($u, 'nobody'), 200, 'u hides last seen';
    $ev = presence_of($ws, $u, 10, 0);
    ok $ev, 'w gets u\'s state again';
    ok $ev && !defined $ev->{last_seen}, '... without last_seen, now';
    $ws->close(1000);
};

subtest 'a watch ends with the last chat the two shared' => sub {
    my $u = api_signup(device_name => 'u');
    my $w = api_signup(device_name => 'w');
    my $g = api_chat_create($u, { type => 'group', title => 'only',
                                  members => [$w->{user_id}] })->{chat_id};
    my ($ws) = ws_chat_open($w);
    ok watch($ws, $u), 'w watches u (they share a group)';
    my $mark = error_log_mark();
    is api_request(DELETE => "/v1/chats/$g/members/$w->{user_id}",
                   token => $u->{token})->{status}, 204,
       'u removes w from the group';
    ok error_log_wait($mark, qr/the watch of user $u->{user_id} ends/),
       'the server ends w\'s watch';
    my ($wu) = ws_chat_open($u, name => 'u comes online');
    my $ev = presence_of($ws, $u, 3);
    ok !$ev, 'w hears nothing of u any more'
        or diag(ws_chat_show($ev));
    $wu->close(1000);
    $ws->close(1000);
};

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'presence privacy', no_error_log => ['[alert]']);

done_testing();
