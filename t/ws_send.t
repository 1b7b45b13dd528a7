# Sending messages over the chat WebSocket (PROTOCOL.md sections 4 and 5):
# "send" is answered with "sent" carrying the chat's next seq (1, 2, 3 in a
# new direct chat) once the message is stored, and the peer gets it as a
# "msg"; resending an id from the same device gives the same seq and
# delivers nothing new; every refusal is an "error" with the protocol's
# code and the request's id, stores nothing, consumes no seq and leaves the
# socket open.
#
#   scripts/test.sh t/ws_send.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve);
use Test::Chat::JSON qw(is_json_int is_json_string now_ms);
use B ();

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

needs_stack();

# PostgreSQL and Redis outlive this file: a prefix of our own
# (chat_http_config's), and new users (random_mobile) in every behaviour.
serve(defaults => 1, http_config => chat_http_config());

my $T = 10;         # bound of every wait, in seconds

# Two users who share a direct chat: A and B connected; returns
# (A, B, chat_id, A's socket, B's socket) or ().
sub pair {
    my $ua = api_signup(device_name => 'A') or return;
    my $ub = api_signup(device_name => 'B') or return;
    my $chat = api_chat_create($ua, { type => 'direct',
                                     user_id => $ub->{user_id} },
                               name => 'A opens a direct chat with B')
        or return;
    my ($wa, $sa) = ws_chat_open($ua, name => 'A');
    my ($wb, $sb) = ws_chat_open($ub, name => 'B');
    return unless $sa && $sb;
    return ($ua, $ub, $chat->{chat_id}, $wa, $wb);
}

# "sent" for this id, chat and seq (undef: any seq), with ts now; returns
# the sent event.
sub sent_ok {
    my ($ws, $f, $seq, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $t0 = now_ms();
    my ($ev, $end) = ws_chat_send_wait($ws, $T, %$f);
    my $t1 = now_ms();
    my $ok = ok($ev && $ev->{type} eq 'sent', "$name: sent");
    unless ($ok) {
        diag('got ' . ws_chat_show($ev // $end));
        return undef;
    }
    is $ev->{chat_id}, $f->{chat_id}, "$name: sent.chat_id";
    ok is_json_int($ev->{seq}), "$name: sent.seq is a JSON integer"
        or diag('sent: ' . ws_chat_show($ev));
    is $ev->{seq}, $seq, "$name: sent.seq is $seq" if defined $seq;
    ok is_json_int($ev->{ts}) && $ev->{ts} >= $t0 - 60_000
       && $ev->{ts} <= $t1 + 60_000, "$name: sent.ts is now, in epoch ms"
        or diag('sent: ' . ws_chat_show($ev));
    return $ev;
}

# An error answer with this code, echoing the request's id when it is a
# string; none when the request had no id.
sub send_error_ok {
    my ($ws, $f, $code, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ws_chat_send($ws, %$f);
    my ($ev, $end) = ws_chat_wait($ws, $T, sub {
        $_[0]{type} eq 'error' || $_[0]{type} eq 'sent';
    });
    my $ok = ok($ev && $ev->{type} eq 'error'
                && ($ev->{code} // '') eq $code
                && is_json_string($ev->{message}) && length $ev->{message},
                "$name: error $code with a message");
    diag('got ' . ws_chat_show($ev // $end)) unless $ok;
    return unless $ev;
    my $id = $f->{id};
    if (defined $id && B::svref_2object(\$id)->FLAGS & B::SVp_POK) {
        # An id that is a string is echoed, even one that is invalid.
        is $ev->{id}, $f->{id}, "$name: the error echoes the id";
    } elsif (!exists $f->{id}) {
        ok !defined $ev->{id}, "$name: no id in the request, none in the "
                               . 'error' or diag(ws_chat_show($ev));
    }
    return $ev;
}

# The next event on $ws is a msg with these fields.
sub msg_ok {
    my ($ws, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ev = ws_chat_event($ws, $T);
    my $ok = ok($ev->{type} eq 'msg', "$name: a msg");
    unless ($ok) {
        diag('got ' . ws_chat_show($ev));
        return undef;
    }
    my %got = map { $_ => $ev->{$_} } keys %$want;
    is_deeply \%got, $want, "$name: msg fields"
        or diag('msg: ' . ws_chat_show($ev));
    ok is_json_int($ev->{seq}) && is_json_int($ev->{ts}),
       "$name: seq and ts are JSON integers" or diag(ws_chat_show($ev));
    return $ev;
}

# Nothing but (optionally) receipts arrive on $ws for $secs.
sub quiet_ok {
    my ($ws, $secs, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($ev) = ws_chat_wait($ws, $secs, sub {
        $_[0]{type} ne 'receipt' && $_[0]{type} ne 'presence';
    });
    ok !$ev, "$name: nothing arrives in ${secs}s"
        or diag('got ' . ws_chat_show($ev));
}

sub ping_ok {
    my ($ws, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $t = int rand 1e6;
    $ws->send_json({ type => 'ping', t => $t });
    my ($ev, $end) = ws_chat_wait($ws, $T, sub { $_[0]{type} eq 'pong' });
    ok $ev && ($ev->{t} // '') eq $t, "$name: the socket still answers a ping"
        or diag('got ' . ws_chat_show($ev // $end));
}


behaviour 'send in a new direct chat: sent with seq 1, 2, 3, only once '
          . 'stored; the peer gets each as a msg, the sender none' => sub {
    my ($ua, $ub, $chat, $wa, $wb) = pair() or return;

    my $again = api_chat_create($ub, { type => 'direct',
                                      user_id => $ua->{user_id} },
                                name => 'B asks for the same pair');
    is $again && $again->{chat_id}, $chat, 'one direct chat per pair';

    my @texts = ('hello', "h\x{e9}llo w\x{f6}rld \x{1F44B}", 'x' x 1000);
    for my $i (1 .. 3) {
        my $f = { id => "m$i-" . int(rand 1e9), chat_id => $chat,
                  text => $texts[$i - 1] };
        my $sent = sent_ok($wa, $f, $i, "message $i") or return;
        my $m = msg_ok($wb, { type => 'msg', chat_id => $chat, seq => $i,
                              from => $ua->{user_id},
                              from_device => $ua->{device_id},
                              id => $f->{id}, kind => 'text',
                              text => $texts[$i - 1] },
                       "B gets message $i");
        is $m && $m->{ts}, $sent->{ts}, "message $i: msg.ts is sent.ts";
    }
    quiet_ok($wa, 1, 'A (the sending device)');
    quiet_ok($wb, 0.5, 'B, after the three');

    # B answers in the same chat: the chat's seq goes on.
    my $f = { id => 'reply', chat_id => $chat, text => 'hi A' };
    sent_ok($wb, $f, 4, "B's reply");
    msg_ok($wa, { type => 'msg', chat_id => $chat, seq => 4,
                  from => $ub->{user_id}, from_device => $ub->{device_id},
                  id => 'reply', kind => 'text', text => 'hi A' },
           "A gets B's reply");
    ok !($wa->violations || $wb->violations), 'frames well-formed';
};

behaviour 'sends written back to back on one socket keep their order '
          . 'in seq' => sub {
    my ($ua, $ub, $chat, $wa, $wb) = pair() or return;
    my @ids = map { "burst-$_" } 1 .. 20;
    ws_chat_send($wa, id => $_, chat_id => $chat, text => "text of $_")
        for @ids;
    my %seq;
    for my $id (@ids) {
        my ($ev, $end) = ws_chat_wait($wa, $T, sub {
            ($_[0]{type} eq 'sent' || $_[0]{type} eq 'error')
            && ($_[0]{id} // '') eq $id;
        });
        unless ($ev && $ev->{type} eq 'sent') {
            fail("$id: sent");
            diag('got ' . ws_chat_show($ev // $end));
            return;
        }
        $seq{$id} = $ev->{seq};
    }
    is_deeply [map { $seq{$_} } @ids], [1 .. 20],
              'the 20 sends got seqs 1..20 in the order they were written'
        or diag('written in this order, answered with these seqs: '
                . join(', ', map { "$_=$seq{$_}" } @ids));
    my @got;
    for (1 .. 20) {
        my $ev = ws_chat_event($wb, $T);
        last unless $ev->{type} eq 'msg';
        push @got, "$ev->{seq} $ev->{id}";
    }
    is_deeply \@got, [map { "$_ burst-$_" } 1 .. 20],
              'B gets them in that order';
};

behaviour 'resending an id from the same device returns the same seq; '
          . 'the peer gets the message once' => sub {
    my $ua = api_signup(device_name => 'A1') or return;
    my $a2 = api_link_device($ua, device_name => 'A2') or return;
    my $ub = api_signup(device_name => 'B') or return;
    my $chat = api_chat_create($ua, { type => 'direct',
                                     user_id => $ub->{user_id} }) or return;
    $chat = $chat->{chat_id};
    my ($wa, $sa) = ws_chat_open($ua, name => 'A1');
    my ($wb, $sb) = ws_chat_open($ub, name => 'B');
    return unless $sa && $sb;

    my $f = { id => 'dup-' . int(rand 1e9), chat_id => $chat,
              text => 'only once' };
    my $first = sent_ok($wa, $f, 1, 'the first send') or return;
    msg_ok($wb, { type => 'msg', seq => 1, id => $f->{id} },
           'B gets it');

    my $second = sent_ok($wa, $f, 1, 'the same id again');
    quiet_ok($wb, 1, 'B after the resend');

    # The first connection may have been lost before "sent" came: the
    # client resends on a new socket.
    $wa->close(1000);
    $wa->disconnect;
    ($wa, $sa) = ws_chat_open($ua, name => 'A1 again');
    return unless $sa;
    sent_ok($wa, $f, 1, 'the same id on a new socket of the same device');
    quiet_ok($wb, 1, 'B after the resend on a new socket');

    my $next = sent_ok($wa, { id => 'after-dup', chat_id => $chat,
                              text => 'next' }, 2, 'a new id')
        or return;
    msg_ok($wb, { type => 'msg', seq => 2, id => 'after-dup' },
           'B gets the next message as seq 2, and nothing in between');

    # Ids are unique per device: A2 sending A1's id is a new message, which
    # B gets, and so does A1 (the sender's other device).
    my ($wa2, $sa2) = ws_chat_open($a2, name => 'A2');
    return unless $sa2;
    sent_ok($wa2, $f, 3, "A2 sends A1's id: a message of its own");
    msg_ok($wb, { type => 'msg', seq => 3, id => $f->{id},
                  from_device => $a2->{device_id} }, 'B gets it');
    msg_ok($wa, { type => 'msg', seq => 3, id => $f->{id},
                  from_device => $a2->{device_id} }, 'A1 gets it');
};

behaviour 'bad_request: a send without an id, with an id of 0 or 65 '
          . 'characters, without chat_id or text; the id is echoed; '
          . 'nothing is stored and the socket stays open' => sub {
    my ($ua, $ub, $chat, $wa, $wb) = pair() or return;
    my $id65 = 'i' x 65;
    my @cases = (
        ['no id',              { chat_id => $chat, text => 'x' }],
        ['an empty id',        { id => '', chat_id => $chat, text => 'x' }],
        ['an id of 65 chars',  { id => $id65, chat_id => $chat,
                                 text => 'x' }],
        ['a numeric id',       { id => 42, chat_id => $chat, text => 'x' }],
        ['a null id',          { id => undef, chat_id => $chat,
                                 text => 'x' }],
        ['no chat_id',         { id => 'no-chat', text => 'x' }],
        ['a null chat_id',     { id => 'null-chat', chat_id => undef,
                                 text => 'x' }],
        ['no text (nor media)', { id => 'no-text', chat_id => $chat }],
        ['a null text',        { id => 'null-text', chat_id => $chat,
                                 text => undef }],
        ['a numeric text',     { id => 'num-text', chat_id => $chat,
                                 text => 12 }],
        ['an object text',     { id => 'obj-text', chat_id => $chat,
                                 text => { t => 'x' } }],
    );
    for my $uc (@cases) {
        my ($what, $f) = @$uc;
        send_error_ok($wa, $f, 'bad_request', $what);
    }
    ping_ok($wa, 'after the refusals');
    quiet_ok($wb, 0.5, 'B after the refusals');

    my $id64 = 'j' x 64;
    sent_ok($wa, { id => $id64, chat_id => $chat, text => 'fine' }, 1,
            'an id of 64 characters, after the refusals');
    msg_ok($wb, { type => 'msg', seq => 1, id => $id64, text => 'fine' },
           'B gets only that one, as seq 1');
    ok !$wa->violations, 'frames well-formed';
};

behaviour 'forbidden: sending to a chat one is not a member of, to a '
          . 'chat one was removed from, or to no chat' => sub {
    my $ua = api_signup(device_name => 'A') or return;
    my $ub = api_signup(device_name => 'B') or return;
    my $uc = api_signup(device_name => 'C') or return;
    my $direct = api_chat_create($ua, { type => 'direct',
                                       user_id => $ub->{user_id} })
        or return;
    my $group = api_chat_create($ua, { type => 'group', title => 'A and B',
                                      members => [$ub->{user_id}] })
        or return;
    my $left = api_chat_create($ua, { type => 'group', title => 'with C',
                                     members => [$ub->{user_id},
                                                 $uc->{user_id}] })
        or return;
    my ($wb, $sb) = ws_chat_open($ub, name => 'B');
    my ($wc, $sc) = ws_chat_open($uc, name => 'C');
    return unless $sb && $sc;

    send_error_ok($wc, { id => 'f1', chat_id => $direct->{chat_id},
                         text => 'let me in' }, 'forbidden',
                  "C to A and B's direct chat");
    send_error_ok($wc, { id => 'f2', chat_id => $group->{chat_id},
                         text => 'let me in' }, 'forbidden',
                  "C to A and B's group");
    send_error_ok($wc, { id => 'f3', chat_id => '999999999999',
                         text => 'anyone?' }, 'forbidden', 'C to no chat');

    my $r = api_request(DELETE => "/v1/chats/$left->{chat_id}/members/"
                                  . $uc->{user_id}, token => $ua->{token});
    api_ok($r, 204, 'A removes C from the third chat') or return;
    send_error_ok($wc, { id => 'f4', chat_id => $left->{chat_id},
                         text => 'still here?' }, 'forbidden',
                  'C to the chat it was removed from');
    ping_ok($wc, 'C after the refusals');

    # B got the system messages of its two groups (in the sync or live),
    # and not one text from C.
    my @got = @{ $sb->{msgs} };
    while (1) {
        my $ev = ws_chat_event($wb, 1);
        last if $ev->{type} =~ /^_/;
        push @got, $ev if $ev->{type} eq 'msg';
    }
    my @from_c = grep { ($_->{kind} // '') ne 'system'
                        && ($_->{from} // '') eq $uc->{user_id} } @got;
    ok !@from_c, 'B got no text from C'
        or diag(join "\n", map { ws_chat_show($_) } @from_c);
    ok !(grep { $_->{chat_id} eq $direct->{chat_id} } @got),
       'nothing in the direct chat, where nobody sent anything';
};

behaviour 'too_large: text over chat_max_message_size bytes of UTF-8 '
          . '(100 here), refused; 100 bytes are fine' =>
          nginx => { http_config => chat_http_config(extra =>
                         "chat_max_message_size 100;\n") } => sub {
    my ($ua, $ub, $chat, $wa, $wb) = pair() or return;
    send_error_ok($wa, { id => 'big', chat_id => $chat,
                         text => 'x' x 101 }, 'too_large', '101 ASCII bytes');
    # 51 x U+00E9 is 51 characters but 102 bytes.
    send_error_ok($wa, { id => 'big-utf8', chat_id => $chat,
                         text => "\x{e9}" x 51 }, 'too_large',
                  '51 two-byte characters (102 bytes)');
    send_error_ok($wa, { id => 'huge', chat_id => $chat,
                         text => 'y' x 5000 }, 'too_large', '5000 bytes');
    ping_ok($wa, 'after the refusals');
    quiet_ok($wb, 0.5, 'B after the refusals');

    sent_ok($wa, { id => 'max', chat_id => $chat, text => 'z' x 100 }, 1,
            '100 ASCII bytes, as seq 1');
    sent_ok($wa, { id => 'max-utf8', chat_id => $chat,
                   text => "\x{e9}" x 50 }, 2,
            '50 two-byte characters (100 bytes), as seq 2');
    msg_ok($wb, { type => 'msg', seq => 1, id => 'max', text => 'z' x 100 },
           'B gets the 100 bytes');
    msg_ok($wb, { type => 'msg', seq => 2, id => 'max-utf8',
                  text => "\x{e9}" x 50 },
           'B gets the 50 two-byte characters');
};

behaviour 'unavailable: with PostgreSQL down a send is refused, never '
          . 'answered sent; once it is back sends work and the peer gets '
          . 'exactly the sent ones' =>
          nginx => { http_config => chat_http_config(extra =>
                         "chat_postgres_timeout 2s;\n") },
          no_error_log => [] => sub {
    my @env = qw(CHAT_PG_DIR CHAT_PG_PORT);
    if (grep { !$ENV{$_} } @env) {
        diag('CHAT_PG_DIR/CHAT_PG_PORT not set: cannot stop PostgreSQL');
        pass('skipped');
        return;
    }
    my $ua = api_signup(device_name => 'A') or return;
    my $ub = api_signup(device_name => 'B') or return;
    my $chat = api_chat_create($ua, { type => 'direct',
                                     user_id => $ub->{user_id} }) or return;
    $chat = $chat->{chat_id};
    my ($wa, $sa) = ws_chat_open($ua, name => 'A');
    return unless $sa;
    sent_ok($wa, { id => 'before', chat_id => $chat, text => 'before' }, 1,
            'a send before the outage');

    ok pg_stop(), 'PostgreSQL stops' or return;
    my @sent = ('before');
    my ($ev, $end) = ws_chat_send_wait($wa, $T, id => 'during',
                                       chat_id => $chat, text => 'during');
    ok $ev && $ev->{type} eq 'error' && ($ev->{code} // '') eq 'unavailable'
       && ($ev->{id} // '') eq 'during',
       'a send while PostgreSQL is down: error unavailable with the id'
        or diag('got ' . ws_chat_show($ev // $end));
    push @sent, 'during' if $ev && $ev->{type} eq 'sent';
    ok pg_start(), 'PostgreSQL starts again' or return;

    # The socket may have been closed meanwhile (the protocol allows it);
    # a client reconnects and retries with new ids until one is sent.
    my $n = 0;
    my $ok = wait_until(15, sub {
        unless ($wa->is_open) {
            ($wa) = ws_chat_auth(token => $ua->{token}, timeout => 3);
        }
        my $id = 'after-' . ++$n;
        my ($e) = ws_chat_send_wait($wa, 3, id => $id, chat_id => $chat,
                                    text => $id);
        push @sent, $id if $e && $e->{type} eq 'sent';
        return $e && $e->{type} eq 'sent';
    }, interval => 0.5);
    ok $ok, "sends work again within ~15s ($n tries)" or return;

    my ($wb, $sb) = ws_chat_open($ub, name => 'B after the outage');
    return unless $sb;
    is_deeply [map { "$_->{seq} $_->{id}" } @{ $sb->{msgs} }],
              [map { ($_ + 1) . " $sent[$_]" } 0 .. $#sent],
              'B gets exactly the messages answered sent, with dense seqs';
};

nginx_stop();
done_testing();
