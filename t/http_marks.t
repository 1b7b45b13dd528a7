# Receipts in a sync count as the device's only once they were written
# (docs/protocol.md, "Receipts"): a long-poll that has no room for all
# the marks of its sync answers with what fits, and the next polls bring
# the rest; none is lost on the way.
#
#   scripts/test.sh t/http_marks.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);

needs_stack();

# A fallback with little room: a long-poll answers at most 4 KiB.
ok nginx_start(workers => 1,
               http_config => chat_http_config(), config => <<'END'),
location /v1/ { chat_api; chat_ws_send_queue 4k; }
END
   'nginx starts (a poll answers at most 4 KiB)';

my $owner = api_signup(device_name => 'owner');
my @members = map { api_signup(device_name => "m$_") } 1 .. 30;
my $chat = api_chat_create($owner, { type => 'group', title => 'marks',
                                     members => [map { $_->{user_id} }
                                                 @members] })->{chat_id};

my $sent = api_request(POST => '/v1/send', token => $owner->{token},
                       body => { id => 'hello', chat_id => $chat,
                                 text => 'read me' });
api_ok($sent, 200, 'the owner sends one message');
my $seq = $sent->{json}{seq};

for my $m (@members) {
    api_ok(api_request(POST => '/v1/read', token => $m->{token},
                       body => { chat_id => $chat, seq => $seq }),
           204, "$m->{name} reads it") or last;
}

# The owner's polls: 60 marks (30 delivered, 30 read) to come.
my (%marks, $synced);
for my $poll (1 .. 10) {
    my $r = api_request(GET => "/v1/events?wait=0&ack=$chat:$seq",
                        token => $owner->{token});
    is($r->{status}, 200, "poll $poll") or last;
    for my $ev (@{ ref $r->{json} eq 'ARRAY' ? $r->{json} : [] }) {
        $synced = 1 if $ev->{type} eq 'synced';
        $marks{"$ev->{user_id} $ev->{status}"} = $ev->{seq}
            if $ev->{type} eq 'receipt';
    }
    note(sprintf 'after poll %d: %d marks', $poll, scalar keys %marks);
    last if $synced;
}
ok $synced, 'a poll ends the sync ("synced")';
is_deeply [sort keys %marks],
          [sort map { ("$_->{user_id} delivered", "$_->{user_id} read") }
                @members],
          'every member\'s delivered and read marks came, none lost';

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'marks', no_error_log => ['[error]']);

done_testing();
