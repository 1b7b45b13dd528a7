# Flow control (docs/architecture.md): a device that reads gets every
# backlog the contract allows. The sync, the receipts at its end and
# bursts of live messages are paced by the socket's drain, so a backlog
# far larger than chat_ws_send_queue reaches a client that reads, in
# order, before "synced"; only a client that does not read is cut.
#
#   scripts/test.sh t/ws_flow.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use JSON::PP ();

needs_stack();

my $JSON = JSON::PP->new->utf8->canonical;

ok nginx_start(workers => 1,
               http_config => chat_http_config(), config => <<'END'),
location /v1/ { chat_api; }
location = /v1/ws { chat_ws; }
END
   'nginx starts (chat_ws_send_queue 256k, the default)';

# 65,536 bytes of random 3-byte UTF-8 (U+0800..U+FFFF, no surrogates):
# nothing permessage-deflate can shrink much.
sub incompressible {
    my $s = '';
    while (length $s < 21845) {
        my $c = 0x800 + int rand(0xF800);
        next if $c >= 0xD800 && $c <= 0xDFFF;
        $s .= chr $c;
    }
    return $s . 'x';
}

# Connects (with or without permessage-deflate), authenticates, and reads
# until "synced": (socket, [msg events], [other events]) or () on failure.
sub sync_of {
    my ($acct, %o) = @_;
    my $ws = Test::Chat::WS->connect(port => port(), path => '/v1/ws',
                                     timeout => 10,
                                     deflate => $o{deflate} ? 1 : 0);
    return () unless ($ws->status // 0) == 101;
    $ws->send_json({ type => 'auth', token => $acct->{token} });
    my (@msgs, @other, $synced);
    while (my $m = $ws->recv_message(15, auto_pong => 1)) {
        last if $m->{type} eq 'close';
        next unless $m->{opcode} == 1;
        my $ev = $JSON->decode($m->{data});
        if ($ev->{type} eq 'synced') {
            $synced = $ev;
            last;
        }
        push @{ $ev->{type} eq 'msg' ? \@msgs : \@other }, $ev;
    }
    return ($ws, \@msgs, \@other, $synced);
}

my $a = api_signup(device_name => 'a');
my $b = api_signup(device_name => 'b');
my $chat = api_chat_create($a, { type => 'direct',
                                 user_id => $b->{user_id} })->{chat_id};

my ($wa) = ws_chat_open($a);
my @texts = map { incompressible() } 1 .. 8;
for my $i (0 .. $#texts) {
    my $ev = ws_chat_send_wait($wa, 10, id => "big-$i", chat_id => $chat,
                               text => $texts[$i]);
    is $ev && $ev->{type}, 'sent', "a sends message $i: 65,536 bytes";
}

for my $round (['no deflate', 0], ['no deflate, again', 0],
               ['permessage-deflate', 1], ['permessage-deflate, again', 1])
{
    my ($name, $deflate) = @$round;
    my ($ws, $msgs, $other, $synced) = sync_of($b, deflate => $deflate);
    ok $ws && $ws->status == 101, "$name: b connects";
    is_deeply [map { $_->{seq} } @{ $msgs || [] }], [1 .. 8],
              "$name: the 8 messages, in order, before synced";
    ok !grep({ $msgs->[$_]{text} ne $texts[$_] } 0 .. $#$msgs),
       "$name: each whole" if $msgs && @$msgs;
    is $synced && $synced->{count}, 8, "$name: synced, count 8";
    ok $ws && !$ws->close_received && !$ws->eof,
       "$name: the socket is open (not cut as a slow client)";
    is_deeply [$ws ? $ws->violations : ()], [], "$name: frames well-formed";
    $ws->close(1000) if $ws;
}

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'flow', no_error_log => ['[error]',
                                                 'client too slow']);

done_testing();
