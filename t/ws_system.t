# Group changes over the chat WebSocket (PROTOCOL.md sections 2, 4 and 5):
# creating, renaming, adding and removing are "msg" objects of kind
# "system" in the chat's own seq, sent live to every device of every member
# (after the change), not to the device that made the change, and not to a
# member removed; a member added later is owed its "member_added" and
# nothing older, a member removed nothing more, also in the sync of a later
# connection. Sockets are spread over two workers.
#
#   scripts/test.sh t/ws_system.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve);
use JSON::PP ();
use Test::Chat::JSON qw(is_json_int json_type now_ms);
use Time::HiRes qw(time);

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

needs_stack();

my $PREFIX = "t_ws_system_$$:";

# A second server on port2 with reuseport: each worker has a listening
# socket of its own there, so sockets land on both workers.
serve(defaults => 1,
      http_config => chat_http_config(prefix => $PREFIX, port2 => 1));

my $T = 5;          # seconds to wait for an event that must come
my $QUIET = 1;      # seconds of silence that show nothing more comes


# A device: an account, its open socket, and the system msgs it was sent.
sub device {
    my ($acct, $name) = @_;
    my ($ws, $sync) = ws_chat_open($acct, name => "$name connects",
                                   port => port2(), timeout => $T);
    return undef unless $sync;
    return { name => $name, acct => $acct, ws => $ws, sync => $sync,
             got => [] };
}

# Reads what a device was sent for $secs (or until $until returns true for
# a msg), keeping the msgs; other events are skipped.
sub drain {
    my ($d, $secs, $until) = @_;
    my $deadline = time + $secs;
    while ((my $left = $deadline - time) > 0) {
        my $ev = ws_chat_event($d->{ws}, $left);
        last if $ev->{type} =~ /^_(timeout|eof|close)$/;
        next unless $ev->{type} eq 'msg';
        push @{ $d->{got} }, $ev;
        return $ev if $until && $until->($ev);
    }
    return undef;
}

# The msg of a system event as PROTOCOL.md section 4 has it: the event's
# fields at the top level, no text, no client id (absent or null).
sub system_msg_is {
    my ($ev, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %got = %{ $ev // {} };
    my @why;
    my $ts = delete $got{ts};
    push @why, 'ts is not epoch milliseconds of now'
        unless is_json_int($ts) && abs($ts - now_ms()) < 60_000;
    push @why, 'id is not null' if exists $got{id} && defined $got{id};
    delete $got{id};
    for my $k (qw(chat_id from from_device user_id by title)) {
        push @why, "$k is not a JSON string"
            if defined $got{$k} && json_type($got{$k}) ne 'string';
    }
    push @why, 'seq is not a JSON number'
        unless json_type($got{seq}) =~ /^(int|number)$/;
    my $j = JSON::PP->new->canonical;
    my %w = (type => 'msg', kind => 'system', %$want);
    push @why, 'got ' . $j->encode(\%got) . ', expected ' . $j->encode(\%w)
        unless $j->encode(\%got) eq $j->encode(\%w);
    ok(!@why, $name) or diag(join "\n", @why);
}

# Each device in @to gets the msg of seq $seq in chat $chat, as %want.
sub arrives {
    my ($chat, $seq, $want, $what, @to) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    for my $d (@to) {
        my $ev = drain($d, $T, sub {
            ($_[0]{chat_id} // '') eq $chat && ($_[0]{seq} // 0) == $seq
        });
        if ($ev) {
            system_msg_is($ev, { chat_id => $chat, seq => $seq, %$want },
                          "$d->{name} gets $what (seq $seq)");
        } else {
            fail("$d->{name} gets $what (seq $seq) within ${T}s");
            diag('it got: ' . join(', ', map { ws_chat_show($_) }
                                        @{ $d->{got} }) || 'nothing');
        }
    }
}

# After a quiet second, every system msg each device got in chat $chat,
# as seqs.
sub seqs_are {
    my ($chat, %want) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @d = map { $_->[0] } values %want;
    drain($_, $QUIET) for @d;
    for my $name (sort keys %want) {
        my ($d, @seqs) = @{ $want{$name} };
        my @got = map { $_->{seq} }
                  grep { ($_->{chat_id} // '') eq $chat } @{ $d->{got} };
        is_deeply \@got, \@seqs,
                  "$name got seqs (" . join(', ', @seqs) . ') of the chat'
            or diag(join "\n", map { ws_chat_show($_) } @{ $d->{got} });
    }
}

sub api {
    my ($acct, $method, $path, $body, $status, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = api_request($method, $path, token => $acct->{token},
                        (body => $body) x !!$body, port => port2());
    api_ok($r, $status, $name);
    return $r->{json};
}


behaviour 'system messages reach members\' devices live, in seq order, '
          . 'the acting device too, not removed members' => sub {
    my $ann = api_signup(device_name => 'ann1') or return;
    my $ann_2 = api_link_device($ann, device_name => 'ann2') or return;
    my $bob = api_signup(device_name => 'bob1') or return;
    my $cat = api_signup(device_name => 'cat1') or return;
    my %dev;
    for ([ann1 => $ann], [ann2 => $ann_2], [bob1 => $bob], [cat1 => $cat]) {
        $dev{ $_->[0] } = device($_->[1], $_->[0]) or return;
    }
    my ($ann1, $ann2, $bob1, $cat1) = @dev{qw(ann1 ann2 bob1 cat1)};
    my %from_ann = (from => $ann->{user_id}, from_device => undef);

    my $g = api($ann, POST => '/v1/chats',
                { type => 'group', title => 'Team',
                  members => [$bob->{user_id}] },
                201, 'ann1 creates "Team" with bob') or return;
    my $id = $g->{chat_id};
    arrives($id, 1, { %from_ann, event => 'created', title => 'Team' },
            'created', $ann1, $ann2, $bob1);

    api($ann, POST => "/v1/chats/$id/members",
        { user_id => $cat->{user_id} }, 200, 'ann1 adds cat');
    arrives($id, 2, { %from_ann, event => 'member_added',
                      user_id => $cat->{user_id}, by => $ann->{user_id} },
            'member_added', $ann1, $ann2, $bob1, $cat1);

    api($ann, PATCH => "/v1/chats/$id", { title => 'Team 2' }, 200,
        'ann1 renames');
    arrives($id, 3, { %from_ann, event => 'renamed', title => 'Team 2' },
            'renamed', $ann1, $ann2, $bob1, $cat1);

    my $r = api_request(DELETE => "/v1/chats/$id/members/$bob->{user_id}",
                        token => $ann->{token}, port => port2());
    api_ok($r, 204, 'ann1 removes bob');
    arrives($id, 4, { %from_ann, event => 'member_removed',
                      user_id => $bob->{user_id}, by => $ann->{user_id} },
            'member_removed', $ann1, $ann2, $cat1);

    $r = api_request(DELETE => "/v1/chats/$id/members/$cat->{user_id}",
                     token => $cat->{token}, port => port2());
    api_ok($r, 204, 'cat leaves (from cat1)');
    arrives($id, 5, { from => $cat->{user_id}, from_device => undef,
                      event => 'member_removed', user_id => $cat->{user_id},
                      by => $cat->{user_id} },
            'cat\'s member_removed', $ann1, $ann2);

    api($ann, PATCH => "/v1/chats/$id", { title => 'Team 3' }, 200,
        'ann1 renames again');
    arrives($id, 6, { %from_ann, event => 'renamed', title => 'Team 3' },
            'renamed', $ann1, $ann2);

    seqs_are($id, ann1 => [$ann1, 1 .. 6], ann2 => [$ann2, 1 .. 6],
             bob1 => [$bob1, 1 .. 3], cat1 => [$cat1, 2 .. 4]);
};

behaviour 'a direct chat sends nothing; a member added later is owed '
          . 'member_added and nothing older, a removed member nothing more, '
          . 'also on a new connection' => sub {
    my $ann = api_signup(device_name => 'ann1') or return;
    my $bob = api_signup(device_name => 'bob1') or return;
    my $dan = api_signup(device_name => 'dan1') or return;
    my $ann1 = device($ann, 'ann1') or return;
    my $bob1 = device($bob, 'bob1') or return;
    my $dan1 = device($dan, 'dan1') or return;

    my $d = api($bob, POST => '/v1/chats',
                { type => 'direct', user_id => $ann->{user_id} },
                200, 'bob opens a direct chat with ann') or return;
    my $g = api($ann, POST => '/v1/chats',
                { type => 'group', title => 'g',
                  members => [$bob->{user_id}] },
                201, 'ann creates a group with bob') or return;
    my $id = $g->{chat_id};
    api($ann, PATCH => "/v1/chats/$id", { title => 'g2' }, 200,
        'ann renames it');
    api($ann, POST => "/v1/chats/$id/members", { user_id => $dan->{user_id} },
        200, 'ann adds dan');
    arrives($id, 3, { from => $ann->{user_id}, from_device => undef,
                      event => 'member_added', user_id => $dan->{user_id},
                      by => $ann->{user_id} },
            'member_added', $ann1, $bob1, $dan1);
    my $r = api_request(DELETE => "/v1/chats/$id/members/$bob->{user_id}",
                        token => $ann->{token}, port => port2());
    api_ok($r, 204, 'ann removes bob');
    arrives($id, 4, { from => $ann->{user_id}, from_device => undef,
                      event => 'member_removed', user_id => $bob->{user_id},
                      by => $ann->{user_id} },
            'member_removed', $ann1, $dan1);
    seqs_are($id, ann1 => [$ann1, 1 .. 4], bob1 => [$bob1, 1 .. 3],
             dan1 => [$dan1, 3, 4]);
    seqs_are($d->{chat_id}, ann1 => [$ann1], bob1 => [$bob1]);

    # Nothing was acked: a new connection's sync has everything still owed
    # (ann's device too: it made every change, but no socket sent them).
    for my $x ([$dan, 'dan', [3, 4]], [$bob, 'bob', []],
               [$ann, 'ann', [1 .. 4]])
    {
        my ($acct, $name, $want) = @$x;
        my ($ws, $sync) = ws_chat_open($acct, name => "$name reconnects",
                                       port => port2(), timeout => $T);
        next unless $sync;
        is_deeply [map { $_->{seq} }
                   grep { ($_->{chat_id} // '') eq $id } @{ $sync->{msgs} }],
                  $want, "$name\'s sync: seqs (@$want) of the group";
        $ws->close(1000);
    }
};

nginx_stop();
done_testing();
