# Chats over HTTP (PROTOCOL.md section 2), driven through nginx against the
# PostgreSQL and Redis of scripts/test.sh: direct chats (one per pair,
# whoever asks, also when both ask at once), groups (admin, title,
# members), listing, renaming, adding, removing and leaving with their
# admin rules, chat_max_group_size, and the system messages each change
# stores in the chat's own seq (read back from PostgreSQL: their delivery
# over the socket is t/ws_system.t's).
#
#   scripts/test.sh t/api_chats.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:serve users);
use JSON::PP ();
use Test::Chat::JSON qw(is_json_int is_json_string now_ms);

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

needs_stack();

# No user has this id: the largest bigint.
my $NOBODY = '9223372036854775807';

serve(defaults => 1, http_config => chat_http_config());


# ------------------------------------------------------------------ helpers

sub create_direct {
    my ($acct, $peer, %o) = @_;
    return api_request(POST => '/v1/chats', token => $acct->{token},
                       body => { type => 'direct', user_id => $peer });
}

sub create_group {
    my ($acct, $title, @members) = @_;
    return api_request(POST => '/v1/chats', token => $acct->{token},
                       body => { type => 'group', title => $title,
                                 members => [map { $_->{user_id} }
                                             @members] });
}

sub get_chat {
    my ($acct, $id) = @_;
    return api_request(GET => "/v1/chats/$id", token => $acct->{token});
}

sub list_chats {
    my ($acct) = @_;
    my $r = api_request(GET => '/v1/chats', token => $acct->{token});
    return ($r, ref $r->{json} eq 'HASH' && ref $r->{json}{chats} eq 'ARRAY'
                ? $r->{json}{chats} : []);
}

sub rename_chat {
    my ($acct, $id, $title) = @_;
    return api_request(PATCH => "/v1/chats/$id", token => $acct->{token},
                       body => { title => $title });
}

sub add_member {
    my ($acct, $id, $user_id) = @_;
    return api_request(POST => "/v1/chats/$id/members",
                       token => $acct->{token},
                       body => { user_id => $user_id });
}

sub remove_member {
    my ($acct, $id, $user_id) = @_;
    return api_request(DELETE => "/v1/chats/$id/members/$user_id",
                       token => $acct->{token});
}

# {user_id => role} of a chat object.
sub roles {
    my ($chat) = @_;
    return {} unless ref $chat eq 'HASH' && ref $chat->{members} eq 'ARRAY';
    return { map { (ref $_ eq 'HASH' ? ($_->{user_id} // '?') : '?')
                   => (ref $_ eq 'HASH' ? $_->{role} : undef) }
             @{ $chat->{members} } };
}

# The chat object of PROTOCOL.md section 2 and docs/protocol.md: every
# field there, of its JSON type; then what %want says.
sub chat_is {
    my ($chat, $name, %want) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @why;
    if (ref $chat ne 'HASH') {
        push @why, 'not an object';
    } else {
        push @why, 'chat_id is not a JSON string of digits'
            unless is_json_string($chat->{chat_id})
                   && $chat->{chat_id} =~ /^[1-9]\d*$/;
        push @why, 'type is ' . ($chat->{type} // 'absent')
            unless ($chat->{type} // '') =~ /^(direct|group)$/;
        push @why, 'title is absent' unless exists $chat->{title};
        push @why, 'members is not an array'
            unless ref $chat->{members} eq 'ARRAY';
        for my $m (@{ ref $chat->{members} eq 'ARRAY'
                      ? $chat->{members} : [] }) {
            push @why, 'a member is not {"user_id","role"}'
                unless ref $m eq 'HASH' && is_json_string($m->{user_id})
                       && length $m->{user_id}
                       && ($m->{role} // '') =~ /^(admin|member)$/;
        }
        push @why, 'last_seq is not a JSON integer'
            unless is_json_int($chat->{last_seq});
        push @why, 'created_at is not epoch milliseconds of now'
            unless is_json_int($chat->{created_at})
                   && abs($chat->{created_at} - now_ms()) < 300_000;
        for my $k (sort keys %want) {
            my $got = $k eq 'roles' ? roles($chat) : $chat->{$k};
            my $j = JSON::PP->new->canonical->allow_nonref;
            push @why, "$k is " . $j->encode($got) . ', expected '
                       . $j->encode($want{$k})
                unless $j->encode($got) eq $j->encode($want{$k});
        }
    }
    ok(!@why, "$name: the chat") or diag(join("\n", @why) . "\n"
                                         . JSON::PP->new->canonical
                                           ->encode($chat // {}));
    return !@why;
}


# PostgreSQL, to see what a client cannot see over HTTP: the system
# messages stored and the cursors. Returns the rows as arrays of strings.
my $PSQL = (grep { -x } map { "$_/psql" } split /:/, $ENV{PATH})[0];

sub pg_rows {
    my ($sql) = @_;
    return unless $PSQL;
    open my $fh, '-|', $PSQL, '-X', '-q', '-t', '-A', '-F', "\t",
         '-v', 'ON_ERROR_STOP=1', '-d', $ENV{CHAT_PG_DSN}, '-c', $sql
        or die "psql: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return map { [split /\t/, $_, -1] } grep { length } split /\n/, $out;
}

# The messages of a chat: [{seq, kind, sender_user, sender_device,
# client_id, body (decoded)}], by seq.
sub stored {
    my ($chat_id) = @_;
    die "bad chat id\n" unless ($chat_id // '') =~ /^\d+$/;
    return [map {
        { seq => $_->[0], kind => $_->[1], sender_user => $_->[2],
          sender_device => $_->[3], client_id => $_->[4],
          body => JSON::PP->new->decode($_->[5]) }
    } pg_rows("SELECT seq, kind, coalesce(sender_user::text, 'NULL'), "
              . "coalesce(sender_device::text, 'NULL'), "
              . "coalesce(client_id, 'NULL'), body::text "
              . "FROM messages WHERE chat_id = $chat_id ORDER BY seq")];
}

# {device_id => acked} of a chat.
sub cursors {
    my ($chat_id) = @_;
    die "bad chat id\n" unless ($chat_id // '') =~ /^\d+$/;
    return { map { $_->[0] => $_->[1] }
             pg_rows("SELECT device_id, acked FROM cursors "
                     . "WHERE chat_id = $chat_id") };
}

# The system message of seq $seq: stored, from $actor's device, its body.
sub system_is {
    my ($chat_id, $seq, $actor, $body, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    SKIP: {
        skip 'no psql', 1 unless $PSQL;
        my ($m) = grep { $_->{seq} == $seq } @{ stored($chat_id) };
        is_deeply $m, { seq => $seq, kind => 'system',
                        sender_user => $actor->{user_id},
                        # no socket sent it: every device is sent it
                        sender_device => 'NULL',
                        client_id => 'NULL', body => $body },
                  "$name: system message $seq stored";
    }
}

# ------------------------------------------------------------------- direct

behaviour 'direct: the same chat for the same pair, whoever asks; both '
          . 'users\' devices get cursors; no system message' => sub {
    my ($ann) = users('a') or return;
    my $ann2 = api_link_device($ann, device_name => 'a2') or return;
    my ($bob) = users('b') or return;
    my $r = create_direct($ann, $bob->{user_id});
    api_ok($r, 200, 'A opens a direct chat with B') or return;
    my $chat = $r->{json};
    chat_is($chat, 'A with B', type => 'direct', title => undef,
            last_seq => 0,
            roles => { $ann->{user_id} => 'member',
                       $bob->{user_id} => 'member' }) or return;
    my $id = $chat->{chat_id};

    $r = create_direct($bob, $ann->{user_id});
    api_ok($r, 200, 'B opens a direct chat with A');
    is $r->{json}{chat_id}, $id, '... and gets the same chat';
    $r = create_direct($ann, $bob->{user_id});
    api_ok($r, 200, 'A asks again');
    is $r->{json}{chat_id}, $id, '... the same chat again';
    is_deeply $r->{json}, $chat, '... unchanged';

    for my $u ($ann, $bob) {
        $r = get_chat($u, $id);
        api_ok($r, 200, "GET /v1/chats/$id as $u->{name}");
        is_deeply $r->{json}, $chat, '... is the chat';
    }
    SKIP: {
        skip 'no psql', 2 unless $PSQL;
        is_deeply cursors($id),
                  { map { $_->{device_id} => 0 } $ann, $ann2, $bob },
                  'every device of both users has a cursor at 0';
        is_deeply stored($id), [], 'no message is stored';
    }
};

behaviour 'direct: two users asking for their chat at the same time get '
          . 'one chat' => sub {
    my ($ann, $bob) = users(qw(a b)) or return;
    my @h = map {
        my ($me, $peer) = $_ % 2 ? ($ann, $bob) : ($bob, $ann);
        http_start(api_build_request(POST => '/v1/chats',
                                     token => $me->{token},
                                     body => { type => 'direct',
                                               user_id => $peer->{user_id} }))
    } 1 .. 6;
    my @r = map { http_finish($_) } @h;
    is scalar(grep { ($_->{status} // 0) == 200 } @r), 6, 'six 200s'
        or diag(join "\n---\n", map { api_show($_) } @r);
    my %ids = map { ($_->{json}{chat_id} // 'none') => 1 } @r;
    is scalar(keys %ids), 1, 'one chat_id' or diag(join ', ', keys %ids);
    my (undef, $chats) = list_chats($ann);
    is scalar(@$chats), 1, 'A has one chat';
};

behaviour 'direct: with oneself 400, with an unknown user 404, bad input '
          . '400, no token 401' => sub {
    my ($ann) = users('a') or return;
    api_error_is(create_direct($ann, $ann->{user_id}), 400, 'bad_request',
                 'a direct chat with oneself');
    api_error_is(create_direct($ann, $NOBODY), 404, 'not_found',
                 'a direct chat with a user who does not exist');
    my $u = $ann->{user_id};
    my @bad = (
        ['no type',             { user_id => $u }],
        ['type null',           { type => undef, user_id => $u }],
        ['an unknown type',     { type => 'channel', user_id => $u }],
        ['type in capitals',    { type => 'DIRECT', user_id => $u }],
        ['type a number',       { type => 1, user_id => $u }],
        ['no user_id',          { type => 'direct' }],
        ['user_id null',        { type => 'direct', user_id => undef }],
        ['user_id a number',    qq({"type":"direct","user_id":$u})],
        ['user_id an array',    { type => 'direct', user_id => [$u] }],
        ['user_id empty',       { type => 'direct', user_id => '' }],
        ['user_id 0',           { type => 'direct', user_id => '0' }],
        ['user_id -1',          { type => 'direct', user_id => '-1' }],
        ['user_id with a leading 0',
                                { type => 'direct', user_id => "0$u" }],
        ['user_id not digits',  { type => 'direct', user_id => 'abc' }],
        ['user_id past bigint', { type => 'direct',
                                  user_id => '9223372036854775808' }],
        ['not JSON',            '{"type":"direct",'],
        ['a JSON array',        '["direct"]'],
        ['an empty body',       ''],
    );
    for my $cat (@bad) {
        my ($what, $body) = @$cat;
        api_error_is(api_request(POST => '/v1/chats', token => $ann->{token},
                                 body => $body),
                     400, 'bad_request', "POST /v1/chats with $what");
    }
    my $r = api_request(POST => '/v1/chats',
                        body => { type => 'direct', user_id => $u });
    api_error_is($r, 401, 'unauthorized', 'POST /v1/chats without a token');
    is $r->{headers}{'www-authenticate'}, 'Bearer',
       '... with WWW-Authenticate: Bearer';
    my (undef, $chats) = list_chats($ann);
    is_deeply $chats, [], 'and A has no chat';
};


# -------------------------------------------------------------------- group

behaviour 'group: 201 with the creator as admin, the members once each, '
          . 'last_seq 1: the "created" system message' => sub {
    my ($ann, $bob, $cat) = users(qw(a b c)) or return;
    my $cat2 = api_link_device($cat, device_name => 'c2') or return;
    my $r = api_request(POST => '/v1/chats', token => $ann->{token},
                        body => { type => 'group', title => 'Team',
                                  members => [$bob->{user_id}, $cat->{user_id},
                                              $bob->{user_id},
                                              $ann->{user_id}] });
    api_ok($r, 201, 'A creates "Team" with B, C, B again and A') or return;
    my $chat = $r->{json};
    chat_is($chat, 'the group', type => 'group', title => 'Team',
            last_seq => 1,
            roles => { $ann->{user_id} => 'admin', $bob->{user_id} => 'member',
                       $cat->{user_id} => 'member' }) or return;
    is scalar @{ $chat->{members} }, 3, 'three members, no duplicates';
    my $id = $chat->{chat_id};
    system_is($id, 1, $ann, { event => 'created', title => 'Team' },
              'created');
    SKIP: {
        skip 'no psql', 1 unless $PSQL;
        is_deeply cursors($id),
                  { map { $_->{device_id} => 0 } $ann, $bob, $cat, $cat2 },
                  'every device of every member is owed seq 1';
    }
    for my $u ($bob, $cat) {
        my $g = get_chat($u, $id);
        api_ok($g, 200, "$u->{name} sees the group");
        is_deeply $g->{json}, $chat, '... as A was shown it';
    }
};

behaviour 'group: members absent, null or empty make a group of one; '
          . 'titles are 1 to 100 characters, as sent' => sub {
    my ($ann) = users('a') or return;
    for my $m (['absent'], ['null', undef], ['empty', []]) {
        my ($what, @v) = @$m;
        my $r = api_request(POST => '/v1/chats', token => $ann->{token},
                            body => { type => 'group', title => "t $what",
                                      (members => $v[0]) x !!@v });
        api_ok($r, 201, "members $what");
        chat_is($r->{json}, "members $what",
                roles => { $ann->{user_id} => 'admin' });
    }
    for my $t ('x', 'y' x 100, "\x{e9}" x 100, "\x{1F600}" x 100,
               "say \"hi\" \\ <b>&amp;</b>\ttab", ' ') {
        my $r = create_group($ann, $t);
        api_ok($r, 201, 'a title of ' . length($t) . ' characters');
        is $r->{json}{title}, $t, '... comes back as sent';
    }
};

behaviour 'group: bad input 400, unknown members 404, and nothing is '
          . 'created' => sub {
    my ($ann, $bob) = users(qw(a b)) or return;
    my $u = $bob->{user_id};
    my @bad = (
        ['no title',              { type => 'group', members => [$u] }],
        ['title null',            { type => 'group', title => undef }],
        ['an empty title',        { type => 'group', title => '' }],
        ['a title of 101 characters',
                                  { type => 'group', title => 'x' x 101 }],
        ['a title of 101 two-byte characters',
                                  { type => 'group',
                                    title => "\x{e9}" x 101 }],
        ['a title of 10k',        { type => 'group', title => 'x' x 10000 }],
        ['title a number',        { type => 'group', title => 7 }],
        ['title an array',        { type => 'group', title => ['t'] }],
        ['members a string',      { type => 'group', title => 't',
                                    members => $u }],
        ['members an object',     { type => 'group', title => 't',
                                    members => { $u => 1 } }],
        ['a member id a number',  qq({"type":"group","title":"t",)
                                  . qq("members":[$u]})],
        ['a member id null',      { type => 'group', title => 't',
                                    members => [$u, undef] }],
        ['a member id not digits',
                                  { type => 'group', title => 't',
                                    members => [$u, 'b'] }],
        ['a member id 0',         { type => 'group', title => 't',
                                    members => ['0'] }],
        ['a member {"user_id"}',  { type => 'group', title => 't',
                                    members => [{ user_id => $u }] }],
    );
    for my $cat (@bad) {
        my ($what, $body) = @$cat;
        api_error_is(api_request(POST => '/v1/chats', token => $ann->{token},
                                 body => $body),
                     400, 'bad_request', "a group with $what");
    }
    api_error_is(api_request(POST => '/v1/chats', token => $ann->{token},
                             body => { type => 'group', title => 't',
                                       members => [$u, $NOBODY] }),
                 404, 'not_found', 'a group with a user who does not exist');
    for my $x ($ann, $bob) {
        my ($r, $chats) = list_chats($x);
        api_ok($r, 200, "GET /v1/chats as $x->{name}");
        is_deeply $chats, [], '... no chat was created';
    }
};


# ------------------------------------------------------------ list and get

behaviour 'GET /v1/chats lists the caller\'s chats, oldest first, with '
          . 'last_seq; GET /v1/chats/{id} is for members only' => sub {
    my ($ann, $bob, $cat) = users(qw(a b c)) or return;
    my ($r, $chats) = list_chats($cat);
    api_ok($r, 200, 'GET /v1/chats of a user with no chat');
    is_deeply $r->{json}, { chats => [] }, '... is {"chats":[]}';

    my $dm = create_direct($ann, $bob->{user_id})->{json}
        or return fail('direct');
    my $g1 = create_group($ann, 'one', $bob)->{json} or return fail('group');
    my $g2 = create_group($bob, 'two', $ann, $cat)->{json}
        or return fail('group');
    api_ok(rename_chat($bob, $g2->{chat_id}, 'two!'), 200, 'rename two');

    ($r, $chats) = list_chats($ann);
    api_ok($r, 200, 'GET /v1/chats as A');
    is_deeply [map { $_->{chat_id} } @$chats],
              [map { $_->{chat_id} } $dm, $g1, $g2],
              'A: the three chats, oldest first';
    chat_is($_, "A's list") for @$chats;
    is_deeply [map { $_->{last_seq} } @$chats], [0, 1, 2],
              'their last_seq: 0, 1 and 2';
    is $chats->[2]{title}, 'two!', 'the title as renamed';
    is_deeply $chats->[2], get_chat($ann, $g2->{chat_id})->{json},
              'each as GET /v1/chats/{id} shows it';

    (undef, $chats) = list_chats($cat);
    is_deeply [map { $_->{chat_id} } @$chats], [$g2->{chat_id}],
              'C: the one group C is in';

    api_error_is(get_chat($cat, $g1->{chat_id}), 404, 'not_found',
                 'GET a group one is not a member of');
    api_error_is(get_chat($cat, $dm->{chat_id}), 404, 'not_found',
                 'GET a direct chat of others');
    api_error_is(get_chat($ann, $NOBODY), 404, 'not_found',
                 'GET a chat that does not exist');
    api_error_is(api_request(GET => "/v1/chats/$dm->{chat_id}"), 401,
                 'unauthorized', 'GET /v1/chats/{id} without a token');
    api_error_is(api_request(GET => '/v1/chats'), 401, 'unauthorized',
                 'GET /v1/chats without a token');
};


# ------------------------------------------------------------------- rename

behaviour 'PATCH /v1/chats/{id}: admins rename (a "renamed" message), '
          . 'members 403, others 404, direct chats 400' => sub {
    my ($ann, $bob, $cat) = users(qw(a b c)) or return;
    my $g = create_group($ann, 'old', $bob)->{json} or return fail('group');
    my $id = $g->{chat_id};

    my $r = rename_chat($ann, $id, 'new');
    api_ok($r, 200, 'the admin renames') or return;
    chat_is($r->{json}, 'renamed', chat_id => $id, title => 'new',
            last_seq => 2);
    is_deeply get_chat($bob, $id)->{json}, $r->{json},
              'members see the new title';
    system_is($id, 2, $ann, { event => 'renamed', title => 'new' },
              'renamed');

    $r = rename_chat($ann, $id, 'new');
    api_ok($r, 200, 'renaming to the same title');
    is $r->{json}{last_seq}, 2, '... appends nothing';

    api_error_is(rename_chat($bob, $id, 'mine'), 403, 'forbidden',
                 'a member who is not admin renames');
    api_error_is(rename_chat($cat, $id, 'mine'), 404, 'not_found',
                 'a user who is not a member renames');
    api_error_is(rename_chat($ann, $NOBODY, 'x'), 404, 'not_found',
                 'renaming a chat that does not exist');
    my $dan = create_direct($ann, $bob->{user_id})->{json}
        or return fail('direct');
    api_error_is(rename_chat($ann, $dan->{chat_id}, 'x'), 400, 'bad_request',
                 'renaming a direct chat');
    for my $t (['empty', ''], ['101 characters', 'x' x 101],
               ['a number', 5], ['null', undef]) {
        api_error_is(rename_chat($ann, $id, $t->[1]), 400, 'bad_request',
                     "a title $t->[0]");
    }
    api_error_is(api_request(PATCH => "/v1/chats/$id", token => $ann->{token},
                             body => {}),
                 400, 'bad_request', 'no title');
    is get_chat($ann, $id)->{json}{title}, 'new', 'the title is still "new"';
    is get_chat($ann, $id)->{json}{last_seq}, 2, 'and last_seq still 2';
};


# -------------------------------------------------------------- add members

behaviour 'POST /v1/chats/{id}/members: admins add; the new member is '
          . 'owed the "member_added" message and nothing older' => sub {
    my ($ann, $bob, $cat) = users(qw(a b c)) or return;
    my $cat2 = api_link_device($cat, device_name => 'c2') or return;
    my $g = create_group($ann, 'g', $bob)->{json} or return fail('group');
    my $id = $g->{chat_id};
    api_ok(rename_chat($ann, $id, 'g2'), 200, 'a rename first (seq 2)');

    my $r = add_member($ann, $id, $cat->{user_id});
    api_ok($r, 200, 'the admin adds C') or return;
    chat_is($r->{json}, 'C added', last_seq => 3,
            roles => { $ann->{user_id} => 'admin', $bob->{user_id} => 'member',
                       $cat->{user_id} => 'member' });
    system_is($id, 3, $ann, { event => 'member_added',
                            user_id => $cat->{user_id},
                            by => $ann->{user_id} }, 'member_added');
    SKIP: {
        skip 'no psql', 1 unless $PSQL;
        my $cur = cursors($id);
        is_deeply [@$cur{$cat->{device_id}, $cat2->{device_id}}], [2, 2],
                  "C's devices start after seq 2: owed member_added only";
    }
    my $cv = get_chat($cat, $id);
    api_ok($cv, 200, 'C sees the group');
    is_deeply $cv->{json}, $r->{json}, '... as it is now';

    $r = add_member($ann, $id, $cat->{user_id});
    api_ok($r, 200, 'adding C again');
    is $r->{json}{last_seq}, 3, '... changes nothing';

    my ($dan) = users('d') or return;
    api_error_is(add_member($bob, $id, $dan->{user_id}), 403, 'forbidden',
                 'a member who is not admin adds');
    api_error_is(add_member($dan, $id, $dan->{user_id}), 404, 'not_found',
                 'a user who is not a member adds themselves');
    api_error_is(add_member($ann, $id, $NOBODY), 404, 'not_found',
                 'adding a user who does not exist');
    api_error_is(add_member($ann, $NOBODY, $dan->{user_id}), 404, 'not_found',
                 'adding to a chat that does not exist');
    my $dc = create_direct($ann, $bob->{user_id})->{json}
        or return fail('direct');
    api_error_is(add_member($ann, $dc->{chat_id}, $dan->{user_id}), 400,
                 'bad_request', 'adding to a direct chat');
    for my $v (['empty', ''], ['a number', 7], ['null', undef],
               ['not digits', 'x'], ['an array', [$dan->{user_id}]]) {
        api_error_is(add_member($ann, $id, $v->[1]), 400, 'bad_request',
                     "a user_id $v->[0]");
    }
    is get_chat($ann, $id)->{json}{last_seq}, 3, 'last_seq is still 3';
    api_error_is(get_chat($dan, $id), 404, 'not_found', 'D is not a member');
};


# ----------------------------------------------------------- remove, leave

behaviour 'DELETE /v1/chats/{id}/members/{user_id}: admins remove, members '
          . 'leave; a "member_removed" message; the removed member\'s '
          . 'cursors go' => sub {
    my ($ann, $bob, $cat, $dan) = users(qw(a b c d)) or return;
    my $g = create_group($ann, 'g', $bob, $cat, $dan)->{json}
        or return fail('group');
    my $id = $g->{chat_id};

    api_error_is(remove_member($bob, $id, $cat->{user_id}), 403, 'forbidden',
                 'a member who is not admin removes another');
    my $r = remove_member($ann, $id, $bob->{user_id});
    api_ok($r, 204, 'the admin removes B');
    system_is($id, 2, $ann, { event => 'member_removed',
                            user_id => $bob->{user_id},
                            by => $ann->{user_id} }, 'member_removed');
    SKIP: {
        skip 'no psql', 1 unless $PSQL;
        ok !exists cursors($id)->{$bob->{device_id}}, "B's cursor is gone";
    }
    api_error_is(get_chat($bob, $id), 404, 'not_found', 'B no longer sees it');
    my (undef, $chats) = list_chats($bob);
    is_deeply $chats, [], "and it is not in B's list";
    api_error_is(remove_member($ann, $id, $bob->{user_id}), 404, 'not_found',
                 'removing B again');
    api_error_is(remove_member($bob, $id, $bob->{user_id}), 404, 'not_found',
                 'B leaving a group B is no longer in');

    $r = remove_member($cat, $id, $cat->{user_id});
    api_ok($r, 204, 'C leaves');
    system_is($id, 3, $cat, { event => 'member_removed',
                            user_id => $cat->{user_id},
                            by => $cat->{user_id} }, 'C left');
    my $now = get_chat($ann, $id);
    chat_is($now->{json}, 'after B and C', last_seq => 3,
            roles => { $ann->{user_id} => 'admin',
                       $dan->{user_id} => 'member' });

    api_error_is(remove_member($ann, $NOBODY, $dan->{user_id}),
                 404, 'not_found',
                 'a chat that does not exist');
    api_error_is(remove_member($ann, $id, $NOBODY), 404, 'not_found',
                 'a user who does not exist');
    my $dc = create_direct($ann, $dan->{user_id})->{json}
        or return fail('direct');
    api_error_is(remove_member($ann, $dc->{chat_id}, $dan->{user_id}), 400,
                 'bad_request', 'removing from a direct chat');
    api_error_is(remove_member($ann, $dc->{chat_id}, $ann->{user_id}), 400,
                 'bad_request', 'leaving a direct chat');
    api_error_is(remove_member($bob, $dc->{chat_id}, $ann->{user_id}), 404,
                 'not_found', 'a non-member removing from a direct chat');
};

behaviour 'the last admin leaving makes the longest-standing member admin; '
          . 'the last member leaving deletes the group' => sub {
    my ($ann, $bob, $cat) = users(qw(a b c)) or return;
    my $g = create_group($ann, 'g')->{json} or return fail('group');
    my $id = $g->{chat_id};
    # C joins before B, although B's user id is the smaller.
    api_ok(add_member($ann, $id, $cat->{user_id}), 200, 'A adds C');
    # B's join (its transaction's now()) is later than C's
    wait_until(5, sub {
        (pg_scalar('SELECT now() > joined_at FROM members WHERE chat_id = ? '
                   . 'AND user_id = ?', $id, $cat->{user_id}) // '') eq 't'
    });
    api_ok(add_member($ann, $id, $bob->{user_id}), 200, 'then B');

    api_ok(remove_member($ann, $id, $ann->{user_id}), 204,
           'A, the admin, leaves');
    my $r = get_chat($bob, $id);
    chat_is($r->{json}, 'after A left', last_seq => 4,
            roles => { $cat->{user_id} => 'admin',
                       $bob->{user_id} => 'member' });
    api_ok(rename_chat($cat, $id, 'C rules'), 200, 'C can rename now');
    api_error_is(rename_chat($bob, $id, 'B rules'), 403, 'forbidden',
                 'B still cannot');

    api_ok(remove_member($cat, $id, $cat->{user_id}), 204, 'C leaves');
    chat_is(get_chat($bob, $id)->{json}, 'after C left',
            roles => { $bob->{user_id} => 'admin' });
    api_ok(remove_member($bob, $id, $bob->{user_id}), 204,
           'B, the last member, leaves');
    api_error_is(get_chat($bob, $id), 404, 'not_found', 'the group is gone');
    SKIP: {
        skip 'no psql', 2 unless $PSQL;
        is_deeply [pg_rows("SELECT id FROM chats WHERE id = $id")], [],
                  'no chat row';
        is_deeply stored($id), [], 'no message of it';
    }

    my $f = create_group($ann, 'founders', $cat, $bob)->{json}
        or return fail('group');
    api_ok(remove_member($ann, $f->{chat_id}, $ann->{user_id}), 204,
           'the admin of a group created with B and C leaves');
    my ($first) = sort { $a <=> $b } $bob->{user_id}, $cat->{user_id};
    is roles(get_chat($bob, $f->{chat_id})->{json})->{$first}, 'admin',
       'founders joined together: the smaller user id becomes admin';
};


# ---------------------------------------------------- chat_max_group_size

behaviour 'chat_max_group_size 3: a 4th member is 409 conflict, by create '
          . 'and by add',
    nginx => { http_config => chat_http_config(
                   extra => "chat_max_group_size 3;\n") },
    sub {
    my ($ann, $bob, $cat, $dan) = users(qw(a b c d));
    return fail('sign up') if grep { !$_ } $ann, $bob, $cat, $dan;
    my $r = create_group($ann, 'three', $bob, $cat);
    api_ok($r, 201, 'A, B and C: 3 members');
    my $id = $r->{json}{chat_id};
    api_ok(create_group($ann, 'dups', $bob, $bob, $cat), 201,
           'B, B and C: with A, still 3 members');
    api_error_is(create_group($ann, 'four', $bob, $cat, $dan), 409, 'conflict',
                 'A with B, C and D: 4 members');
    api_error_is(create_group($ann, 'long', $bob, $cat, $bob, $cat),
                 409, 'conflict',
                 'a members array longer than the limit');
    api_error_is(add_member($ann, $id, $dan->{user_id}), 409, 'conflict',
                 'adding D to the full group');
    api_ok(add_member($ann, $id, $cat->{user_id}), 200,
           'adding C, a member already, is fine');
    is get_chat($ann, $id)->{json}{last_seq}, 1, 'last_seq is still 1';
    api_ok(remove_member($ann, $id, $bob->{user_id}), 204, 'B goes');
    api_ok(add_member($ann, $id, $dan->{user_id}), 200, 'then D fits');
    my (undef, $chats) = list_chats($dan);
    is scalar @$chats, 1, 'D is in one group';
    api_ok(create_direct($ann, $bob->{user_id}), 200,
           'direct chats are not groups');
};

behaviour 'chat_max_group_size takes a positive number' => sub {
    for my $v ('0', '-1', 'many') {
        my ($ok, $out) = nginx_test_config(
            http_config => chat_http_config(
                extra => "chat_max_group_size $v;\n"),
            config => chat_locations());
        ok !$ok, "chat_max_group_size $v is refused";
        like $out, qr/chat_max_group_size/, '... naming the directive';
    }
    my ($ok, $out) = nginx_test_config(
        http_config => chat_http_config(extra => "chat_max_group_size 1;\n"),
        config => chat_locations());
    ok $ok, 'chat_max_group_size 1 is fine' or diag($out);
};


# ------------------------------------------------------------------ routing

behaviour 'routing: IDs in paths, 404 for what cannot name a chat, 405 '
          . 'with Allow for the wrong method' => sub {
    my ($ann) = users('a') or return;
    my $g = create_group($ann, 'g')->{json} or return fail('group');
    my $id = $g->{chat_id};
    my $u = $ann->{user_id};
    for my $p ('/v1/chats/abc', '/v1/chats/0', "/v1/chats/0$id",
               "/v1/chats/$id/x", "/v1/chats/$id/members/abc",
               "/v1/chats/$id/members/$u/x", '/v1/chats/',
               '/v1/chats/-1', '/v1/chats/99999999999999999999') {
        api_error_is(api_request(GET => $p, token => $ann->{token}), 404,
                     'not_found', "GET $p");
    }
    my @wrong = (
        [PUT => '/v1/chats', 'GET, POST'],
        [DELETE => '/v1/chats', 'GET, POST'],
        [POST => "/v1/chats/$id", 'GET, PATCH'],
        [DELETE => "/v1/chats/$id", 'GET, PATCH'],
        [GET => "/v1/chats/$id/members", 'POST'],
        [DELETE => "/v1/chats/$id/members", 'POST'],
        [GET => "/v1/chats/$id/members/$u", 'DELETE'],
        [PATCH => "/v1/chats/$id/members/$u", 'DELETE'],
    );
    for my $w (@wrong) {
        my ($method, $path, $allow) = @$w;
        my %body = $method =~ /^(POST|PUT|PATCH)$/ ? (body => {}) : ();
        my $r = api_request($method, $path, token => $ann->{token}, %body);
        api_error_is($r, 405, 'bad_request', "$method $path");
        is $r->{headers}{allow}, $allow, "... Allow: $allow";
    }
    is get_chat($ann, $id)->{json}{last_seq}, 1, 'the group is as it was';
};


# ------------------------------------------------------------- Redis down

SKIP: {
    skip 'CHAT_REDIS_DIR and CHAT_REDIS_PORT are not set', 1
        unless $ENV{CHAT_REDIS_DIR} && $ENV{CHAT_REDIS_PORT};

    # Losing Redis is logged at error level by the adapter: expected here.
    behaviour 'Redis down: changes are still made and their system messages '
              . 'stored; the publish is kept to go again, with a warning',
        no_error_log => ['[alert]'],
        error_log => ['not published: Redis did not take it',
                      'fan-outs wait for Redis to take them'],
        sub {
        my ($ann, $bob) = users(qw(a b)) or return;
        my $mark = error_log_mark();
        redis_stop() or return fail('redis stops');
        ok redis_down_seen($mark), 'both workers see Redis gone';
        my $r = create_group($ann, 'offline', $bob);
        api_ok($r, 201, 'a group is created');
        my $id = $r->{json}{chat_id};
        api_ok(rename_chat($ann, $id, 'still offline'), 200, 'and renamed');
        redis_start() or return fail('redis starts');
        system_is($id, 1, $ann, { event => 'created', title => 'offline' },
                  'created');
        system_is($id, 2, $ann, { event => 'renamed',
                                title => 'still offline' }, 'renamed');
        # the adapter reconnects with a backoff; a rename is published
        # when B's socket gets it
        my ($wb) = ws_chat_open($bob, name => 'B connects');
        my $n = 0;
        ok $wb && wait_until(15, sub {
            my $mark = error_log_mark();
            my $title = 'online ' . ++$n;
            my $t = rename_chat($ann, $id, $title);
            my ($ev) = ws_chat_wait($wb, 2, sub {
                ($_[0]{event} // '') eq 'renamed'
                && ($_[0]{title} // '') eq $title });
            return ($t->{status} // 0) == 200 && $ev
                   && error_log_since($mark) !~ /not published/;
        }, interval => 0.5), 'once Redis is back, system messages are '
                             . 'published again';
    };
}

nginx_stop();
done_testing();
