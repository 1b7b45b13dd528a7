# Minimal storage (PROTOCOL.md 5.5): a message is deleted once every
# device owed it has acked it (chat_messages_stored shows it), and expired
# messages (chat_message_ttl) are swept in the background; a device that
# missed them is told with {"type":"expired"} in their place.
#
#   scripts/test.sh t/ws_expiry.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve);

needs_stack();

my $T = 10;

serve(defaults => 1, http_config => chat_http_config(),
      config => chat_locations() . "location = /metrics { chat_metrics; }\n");

# What PostgreSQL still holds of one chat. (The chat_messages_stored
# gauge counts the whole database, which other files share.)
sub stored {
    my ($chat) = @_;
    return pg_scalar("SELECT count(*) FROM messages WHERE chat_id = "
                     . int($chat));
}

# How far a device has acked a chat (its cursor).
sub acked {
    my ($acct, $chat) = @_;
    return pg_scalar('SELECT acked FROM cursors WHERE chat_id = ? AND '
                     . 'device_id = ?', $chat, $acct->{device_id}) // -1;
}

sub send_ok {
    my ($ws, $chat, $id, $name) = @_;
    my $ev = ws_chat_send_wait($ws, $T, id => $id, chat_id => $chat,
                               text => "text of $id");
    ok $ev && $ev->{type} eq 'sent', "$name: sent"
        or diag(ws_chat_show($ev));
    return $ev && $ev->{seq};
}

sub ack {
    my ($ws, $chat, $seq) = @_;
    $ws->send_json({ type => 'ack', chat_id => $chat, seq => $seq });
}


subtest 'a group message is deleted after the last of the 5 devices owed '
        . 'it acks it, not before' => sub {
    ok serve(), 'nginx starts';
    my @u = map { api_signup(device_name => "u$_-1") } 1 .. 3;
    my @second = map { api_link_device($_, device_name => 'second') } @u;
    my $g = api_chat_create($u[0], { type => 'group', title => 'three',
                                     members => [map { $_->{user_id} }
                                                 @u[1, 2]] });
    my $chat = $g->{chat_id};
    my @devices = (@u, @second);
    my @ws = map { (ws_chat_open($_))[0] } @devices;
    my ($sender, @others) = @ws;

    # "created" (seq 1) goes to all six devices: acked everywhere, it goes
    is stored($chat), 1, 'stored: the created message';
    ok metric('chat_messages_stored') >= 1,
       '/metrics counts it in chat_messages_stored';
    ack($_, $chat, 1) for @ws;
    ok wait_until(5, sub { stored($chat) == 0 }),
       'the created message is gone once all six acked it';

    my $seq = send_ok($sender, $chat, 'm1', 'u1 sends to the group');
    is stored($chat), 1, 'stored: the sent message';

    for my $i (0 .. 3) {
        ack($others[$i], $chat, $seq);
        ok wait_until(10, sub { acked($devices[$i + 1], $chat) == $seq }),
           'the ack of device ' . ($i + 2) . ' is applied (its cursor)';
        is stored($chat), 1,
           'still stored after ' . ($i + 1) . ' of the 5 acked';
    }
    ack($others[4], $chat, $seq);
    ok wait_until(5, sub { stored($chat) == 0 }),
       'deleted after the 5th ack (the sending device is not owed it)';
    $_->close(1000) for @ws;
};

subtest 'expired messages are swept, and a device that missed them gets '
        . '"expired" in their place' => sub {
    ok serve(http_config => chat_http_config(
                 extra => "chat_message_ttl 2s;\n")),
       'nginx starts with a 2s TTL';
    my $mark = error_log_mark();
    my ($a, $b, $c) = map { api_signup(device_name => $_) } qw(a b c);
    my $ab = api_chat_create($a, { type => 'direct',
                                   user_id => $b->{user_id} })->{chat_id};
    my $ac = api_chat_create($a, { type => 'direct',
                                   user_id => $c->{user_id} })->{chat_id};
    my ($wa) = ws_chat_open($a);

    send_ok($wa, $ab, "old-$_", "old $_ to b") for 1 .. 3;
    send_ok($wa, $ac, "old-c-$_", "old $_ to c") for 1 .. 2;

    # past the TTL, the next sweep (every second) takes them
    ok wait_until(10, sub { stored($ab) == 0 && stored($ac) == 0 }),
       'the sweep deletes them after the TTL';
    like error_log_since($mark), qr/messages expired/,
         'the sweep logs what expired';
    send_ok($wa, $ab, 'new', 'a newer one to b');

    my ($wb, $sb) = ws_chat_open($b);
    my @ev = @{ $sb->{other} || [] };
    my ($exp) = grep { $_->{type} eq 'expired' } @ev;
    is_deeply $exp, { type => 'expired', chat_id => $ab, from_seq => 1,
                      to_seq => 3 }, 'b: expired 1..3 in the sync'
        or diag(join ', ', map { ws_chat_show($_) } @ev);
    is_deeply [map { $_->{seq} } @{ $sb->{msgs} }], [4], 'b: then seq 4';
    is $sb->{synced}{count}, 1, 'b: synced count 1';

    my ($wc, $sc) = ws_chat_open($c);
    ($exp) = grep { $_->{type} eq 'expired' } @{ $sc->{other} || [] };
    is_deeply $exp, { type => 'expired', chat_id => $ac, from_seq => 1,
                      to_seq => 2 },
              'c: expired 1..2, with nothing stored after them';
    is $sc->{synced}{count}, 0, 'c: synced count 0';
    $_->close(1000) for $wa, $wb, $wc;
};

nginx_stop();
done_testing();
