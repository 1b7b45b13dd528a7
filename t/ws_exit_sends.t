# A worker that exits (reload, graceful shutdown) answers the sends it
# has taken before it closes a socket with 1001: a send stored gets its
# "sent" (within the 1 s a close waits for requests in flight), so the
# client does not send it again as a new message, and a resend by the
# same id gets the same seq.
#
#   scripts/test.sh t/ws_exit_sends.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations users
                              direct_chat);
use Time::HiRes qw(sleep);

needs_stack('CHAT_PG_DIR', 'CHAT_PG_PORT');

ok nginx_start(workers => 1, config => chat_locations(),
               http_config => chat_http_config(
                   extra => "chat_postgres_timeout 5s;\n")),
   'nginx starts';

my ($ua, $ub) = users('A', 'B');
my $chat = direct_chat($ua, $ub);
my ($wa) = ws_chat_open($ua, name => 'A connects');
my @old = nginx_worker_pids();

# The send is taken by the worker and waits for PostgreSQL when the
# reload comes.
ok pg_pause(), 'PostgreSQL is paused';
ws_chat_send($wa, id => 'inflight', chat_id => $chat, text => 'in flight');
ok kill('HUP', nginx_master_pid()), 'HUP: the worker holding A\'s socket '
                                    . 'exits';
sleep 0.2;              # pacing on purpose: the close waits meanwhile
ok pg_resume(), 'PostgreSQL goes on';

my @got;
my (undef, $end) = ws_chat_wait($wa, 10, sub { push @got, $_[0]; 0 });
push @got, $end;
my ($sent) = grep { $_->{type} eq 'sent' } @got;
ok $sent && $sent->{id} eq 'inflight',
   'A gets "sent" for the send in flight'
    or diag('got ' . join(', ', map { ws_chat_show($_) } @got));
my @order = map { $_->{type} } @got;
is_deeply [grep { /^(sent|_close|_eof)$/ } @order], ['sent', '_close'],
          '... before the socket closes';
is $end->{code}, 1001, 'then the socket closes with 1001';
ok wait_until(10, sub { !grep { kill 0, $_ } @old }), 'the old worker exits';

my ($wa2) = ws_chat_open($ua, name => 'A connects again');
my ($again) = ws_chat_send_wait($wa2, 10, id => 'inflight', chat_id => $chat,
                                text => 'in flight');
is $again && $again->{type}, 'sent', 'A sends it again by the same id';
is $again && $again->{seq}, $sent && $sent->{seq}, '... and gets the same seq';
is pg_scalar('SELECT count(*) FROM messages WHERE chat_id = ?', $chat), 1,
   'it is stored once';
$wa2->close(1000);

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert or crit in the error log';

nginx_stop();
done_testing();
