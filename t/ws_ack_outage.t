# An ack PostgreSQL cannot take is not thrown away (PROTOCOL.md: an ack is
# applied within a second): the worker keeps it, one per device and chat,
# and applies it as soon as PostgreSQL is back, so the device is not sent
# again what it acked during the outage.
#
#   scripts/test.sh t/ws_ack_outage.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations users
                              direct_chat);

needs_stack('CHAT_PG_DIR', 'CHAT_PG_PORT');

ok nginx_start(workers => 1, config => chat_locations(),
               http_config => chat_http_config(
                   extra => "chat_postgres_timeout 2s;\n")),
   'nginx starts';

my ($ua, $ub) = users('A', 'B');
my $chat = direct_chat($ua, $ub);
my ($wa) = ws_chat_open($ua, name => 'A connects');
my ($wb) = ws_chat_open($ub, name => 'B connects');

for my $i (1 .. 3) {
    my ($ev) = ws_chat_send_wait($wa, 10, id => "m$i", chat_id => $chat,
                                 text => "m$i");
    is $ev && $ev->{type}, 'sent', "A sends m$i";
}
my $got = ws_chat_wait($wb, 10, sub { $_[0]{type} eq 'msg'
                                      && $_[0]{seq} == 3 });
is $got && $got->{seq}, 3, 'B gets up to seq 3';

sub acked {
    return pg_scalar('SELECT c.acked FROM cursors c JOIN devices d '
                     . 'ON d.id = c.device_id WHERE d.user_id = ? '
                     . 'AND c.chat_id = ?', $ub->{user_id}, $chat);
}
is acked(), 0, 'B\'s cursor is at 0';

my $mark = error_log_mark();
ok pg_stop(), 'PostgreSQL stops';
$wb->send_json({ type => 'ack', chat_id => $chat, seq => 3 });
ok error_log_wait($mark, qr/acks not applied, kept until PostgreSQL takes/,
                  within => 10),
   'B acks 3: the ack cannot be applied, and is kept';
ok pg_start(), 'PostgreSQL starts again';

my $n;
ok wait_until(15, sub { ($n = acked() // -1) == 3 }),
   'the kept ack is applied once PostgreSQL is back: B\'s cursor is 3'
    or diag("B's cursor is at $n; the log:\n"
            . join "\n", grep { /chat|postgres/i }
                          split /\n/, error_log_since($mark));
ok error_log_wait($mark, qr/PostgreSQL takes acks again/, within => 5),
   'the log says that PostgreSQL takes acks again';

$wb->close(1000);
my ($wb2, $sync) = ws_chat_open($ub, name => 'B connects again');
is_deeply [map { $_->{seq} } @{ $sync->{msgs} || [] }], [],
          'B\'s sync brings nothing again';
is pg_scalar('SELECT count(*) FROM messages WHERE chat_id = ?', $chat), 0,
   'every device has them: the messages are deleted';
$_->close(1000) for $wa, $wb2;

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert or crit in the error log';

nginx_stop();
done_testing();
