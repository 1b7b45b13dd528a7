# A resend outlives the message it repeats (docs/protocol.md, "Messages"):
# a sender whose "sent" was lost resends by the same id; when every device
# acked the message meanwhile and it was deleted, the resend still gets
# the original seq and ts for chat_resend_window, and nothing is delivered
# again. Past the window the id is forgotten, and the same id is a new
# message (receivers' dedup by (chat_id, from_device, id) is the fallback).
# The same holds for a send answered "unavailable" whose commit happened
# all the same (the query timed out while it waited for a lock, and
# PostgreSQL went on with it once its connection was dropped): the retry
# gets the seq it was stored under, and is published then, since the
# first time it was not.
#
#   scripts/test.sh t/ws_resend_window.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config chat_locations users
                              direct_chat);

needs_stack();

# a window of 2 s: the sweep runs every second
ok nginx_start(workers => 2, config => chat_locations(),
               http_config => chat_http_config(
                   extra => "chat_resend_window 2s;\n"
                            . "chat_postgres_timeout 1s;\n")),
   'nginx starts';

my ($ua, $ub) = users('A', 'B');
my $chat = direct_chat($ua, $ub);
my ($wa) = ws_chat_open($ua, name => 'A connects');
my ($wb) = ws_chat_open($ub, name => 'B connects');

sub send_once {
    my ($ws, $id, $text) = @_;
    my ($ev, $end) = ws_chat_send_wait($ws, 10, id => $id, chat_id => $chat,
                                       text => $text);
    diag('got ' . ws_chat_show($ev // $end))
        unless $ev && $ev->{type} eq 'sent';
    return $ev && $ev->{type} eq 'sent' ? $ev : undef;
}

# B's next "msg" within $secs, or undef
sub next_msg {
    my ($secs) = @_;
    my ($ev) = ws_chat_wait($wb, $secs, sub { $_[0]{type} eq 'msg' });
    return $ev;
}

sub stored {
    return pg_scalar('SELECT count(*) FROM messages WHERE chat_id = ?',
                     $chat);
}

my $first = send_once($wa, 'r1', 'once') or BAIL_OUT('no sent');
is $first->{seq}, 1, 'A sends r1: seq 1';
my $got = next_msg(10);
is $got && $got->{id}, 'r1', 'B gets r1';
$wb->send_json({ type => 'ack', chat_id => $chat, seq => 1 });
ok wait_until(10, sub { (stored() // -1) == 0 }),
   'B acks it: every device has it, the message is deleted';

# A's "sent" was lost, say: A resends on a new socket.
$wa->close(1000);
($wa) = ws_chat_open($ua, name => 'A connects again');
my $again = send_once($wa, 'r1', 'once') or BAIL_OUT('no sent');
is $again->{seq}, 1, 'the resend of r1 gets the original seq';
is $again->{ts}, $first->{ts}, '... and the original ts';
is stored(), 0, 'nothing is stored again';
my $extra = next_msg(1.5);
ok !$extra, 'B is sent nothing' or diag('got ' . ws_chat_show($extra));

my $next = send_once($wa, 'r2', 'next');
is $next && $next->{seq}, 2, 'the next message is seq 2: no seq was used';
$got = next_msg(10);
is $got && $got->{seq}, 2, 'B gets seq 2';
$wb->send_json({ type => 'ack', chat_id => $chat, seq => 2 });

ok wait_until(15, sub {
       (pg_scalar('SELECT count(*) FROM sent_ids s JOIN devices d '
                  . 'ON d.id = s.sender_device WHERE d.user_id = ?',
                  $ua->{user_id}) // -1) == 0
       && (stored() // -1) == 0 }),
   'past the window the ids are forgotten';
my $late = send_once($wa, 'r1', 'once');
is $late && $late->{seq}, 3,
   'past the window the same id is a new message (seq 3)';
$got = next_msg(10);
is $got && $got->{id}, 'r1', 'B gets it, and drops it by its id';

# "unavailable", but stored: a psql session holds the chat's row for 3 s,
# so the send's query times out after 1 s and its connection is dropped;
# PostgreSQL goes on with it once the row is free, and commits.
my $holder = fork // BAIL_OUT("fork: $!");
if ($holder == 0) {
    exec 'psql', '-XAtq', '-d', $ENV{CHAT_PG_DSN}, '-c',
         "BEGIN; SELECT 1 FROM chats WHERE id = $chat FOR UPDATE; "
         . 'SELECT pg_sleep(3); COMMIT;';
    exit 1;
}
ok wait_until(5, sub {
       pg_scalar("SELECT count(*) FROM pg_stat_activity "
                 . "WHERE query LIKE '%FOR UPDATE; SELECT pg_sleep(3)%' "
                 . "AND pid <> pg_backend_pid()") }),
   'psql holds the chat\'s row';
my $t0 = time;
my ($ev, $end) = ws_chat_send_wait($wa, 10, id => 'lost', chat_id => $chat,
                                   text => 'answered unavailable');
is $ev && $ev->{type} eq 'error' && $ev->{code}, 'unavailable',
   'a send that waits for a lock past chat_postgres_timeout: unavailable'
    or diag('got ' . ws_chat_show($ev // $end) . ' after '
            . (time - $t0) . 's');
waitpid $holder, 0;
my $seq;
ok wait_until(5, sub {
       $seq = pg_scalar("SELECT seq FROM messages WHERE chat_id = ? "
                        . "AND client_id = 'lost'", $chat) }),
   'it was stored all the same, once the row was free';
my $early = next_msg(1);
ok !$early, 'and not published: B does not have it'
    or diag('got ' . ws_chat_show($early));
my $retry = send_once($wa, 'lost', 'answered unavailable');
is $retry && $retry->{seq}, $seq,
   'A\'s retry of the "unavailable" send gets the seq it was stored under';
$got = next_msg(10);
is $got && $got->{seq}, $seq, '... and is published: B gets it now';
$wb->send_json({ type => 'ack', chat_id => $chat, seq => 0 + ($seq // 0) });
ok wait_until(10, sub { (stored() // -1) == 0 }), 'B acks it: deleted';
$retry = send_once($wa, 'lost', 'answered unavailable');
is $retry && $retry->{seq}, $seq, 'a retry after that: the same seq';
my $extra2 = next_msg(1.5);
ok !$extra2, 'and B is sent nothing again'
    or diag('got ' . ws_chat_show($extra2));
$_->close(1000) for $wa, $wb;

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert or crit in the error log';

nginx_stop();
done_testing();
