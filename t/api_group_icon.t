# Group icons (docs/protocol.md "Group icon"): PATCH /v1/chats/{id} takes
# "icon", a media id the admin may download (uploaded through the asset
# API and the blob store), or null; every chat object shows it; a change
# is an "icon_changed" system message in the chat's seq, delivered in
# order with the text around it; every member may fetch the icon while it
# is the icon; members who are not admins get 403, media the admin may
# not download 400 unknown_media; the asset_ttl sweep keeps a media while
# it is a chat's icon.
#
#   scripts/test.sh t/api_group_icon.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Test::Chat::Media qw(:all);
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use Time::HiRes qw(time);

needs_stack();

my $CONFIG = chat_media_locations();

my $TYPES = "asset_types image/*;\n";

ok nginx_start(workers => 2, http_config => chat_http_config(extra => $TYPES),
               config => $CONFIG),
   'nginx starts with the chat API and the asset module';

my $NOMEDIA = 'AAAAAAAAAAAAAAAAAAAAAA';
my $JSON = JSON::PP->new->canonical->allow_nonref;

my $png = "\x89PNG\r\n\x1a\n" . join('', map { chr($_ % 251) } 1 .. 2000);
my $gif = "GIF89a" . join('', map { chr($_ % 241) } 1 .. 1500);

sub patch {
    my ($acct, $chat, $body) = @_;
    return api_request(PATCH => "/v1/chats/$chat", token => $acct->{token},
                       body => $body);
}

sub chat_of {
    my ($acct, $chat) = @_;
    return api_request(GET => "/v1/chats/$chat",
                       token => $acct->{token})->{json} // {};
}

sub media {
    my ($acct, $id) = @_;
    return api_request(GET => "/v1/media/$id", token => $acct->{token});
}

# Three users, admin, member and stranger; a group of the first two titled
# $title, and their direct chat. Returns the three accounts and the two
# chats as POST /v1/chats answered them, or () after a failed assertion.
sub admin_member_stranger {
    my ($title) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($a, $m, $s) = map { api_signup(device_name => $_) }
                      qw(admin member stranger);
    my $g = api_chat_create($a, { type => 'group', title => $title,
                                  members => [$m->{user_id}] })
        or return;
    my $d = api_chat_create($a, { type => 'direct',
                                  user_id => $m->{user_id} })
        or return;
    return ($a, $m, $s, $g, $d);
}

# One assertion: the chat object has "icon" and it is $icon (undef: null).
sub icon_is {
    my ($chat, $icon, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok ref $chat eq 'HASH' && exists $chat->{icon}
       && $JSON->encode($chat->{icon}) eq $JSON->encode($icon),
       "$name: \"icon\" is " . $JSON->encode($icon)
        or diag('the chat: ' . $JSON->encode($chat));
}

# The msgs of $chat a socket gets until the one of seq $seq, in order
# (within 10 s); other events are read and dropped.
sub msgs_upto {
    my ($ws, $chat, $seq) = @_;
    my @got;
    my $deadline = time + 10;
    while ((my $left = $deadline - time) > 0) {
        my $ev = ws_chat_event($ws, $left);
        last if $ev->{type} =~ /^_/;
        next unless $ev->{type} eq 'msg' && $ev->{chat_id} eq $chat;
        push @got, $ev;
        last if $ev->{seq} >= $seq;
    }
    return @got;
}

# One assertion: $ev is the icon_changed system msg of $seq, by $by.
sub icon_msg_is {
    my ($ev, $chat, $seq, $by, $icon, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my %got = %{ $ev // {} };
    delete $got{ts};
    my %want = (type => 'msg', chat_id => $chat, seq => $seq,
                from => $by->{user_id}, from_device => undef, id => undef,
                kind => 'system', event => 'icon_changed', icon => $icon);
    is $JSON->encode(\%got), $JSON->encode(\%want), $name;
}

sub send_text {
    my ($ws, $chat, $id, $text) = @_;
    my $ev = ws_chat_send_wait($ws, 10, id => $id, chat_id => $chat,
                               text => $text);
    return $ev && $ev->{type} eq 'sent' ? $ev->{seq} : undef;
}


subtest 'the admin sets an icon: every chat object shows it, members get '
        . 'icon_changed in order between texts, and download the '
        . 'icon\'s bytes' => sub {
    my ($a, $m, $s, $g, $d) = admin_member_stranger('icons') or return;
    my $chat = $g->{chat_id};
    icon_is($g, undef, 'POST /v1/chats (group)');
    icon_is($d, undef, 'POST /v1/chats (direct)');

    my $icon = media_upload($a, $png, 'image/png') or return;
    my ($wa) = ws_chat_open($a);
    my ($wm) = ws_chat_open($m);

    my $before = send_text($wa, $chat, 'before', 'before the icon');
    is $before, 2, 'A sends a text: seq 2';
    my $r = patch($a, $chat, { icon => $icon });
    api_ok($r, 200, 'A sets the icon') or return;
    icon_is($r->{json}, $icon, 'the PATCH answer');
    is $r->{json}{last_seq}, 3, '... last_seq 3 (the system message)';
    is $r->{json}{title}, 'icons', '... the title as it was';
    my $after = send_text($wa, $chat, 'after', 'after the icon');
    is $after, 4, 'A sends another text: seq 4';

    my @got = msgs_upto($wm, $chat, 4);
    is_deeply [map { $_->{seq} } @got], [2, 3, 4],
              'M gets seqs 2, 3, 4 in order';
    is $got[0]{text}, 'before the icon', 'seq 2: the first text';
    icon_msg_is($got[1], $chat, 3, $a, $icon,
                'seq 3: {"kind":"system","event":"icon_changed","icon"}, '
                . 'from A, from_device and id null');
    is $got[2]{text}, 'after the icon', 'seq 4: the second text';
    my @mine = msgs_upto($wa, $chat, 3);
    icon_msg_is($mine[-1], $chat, 3, $a, $icon,
                'A\'s own socket gets it too (no socket sent it)');

    icon_is(chat_of($m, $chat), $icon, 'GET /v1/chats/{id} by M');
    my $list = api_request(GET => '/v1/chats', token => $m->{token});
    my %by = map { $_->{chat_id} => $_ } @{ $list->{json}{chats} || [] };
    icon_is($by{$chat}, $icon, 'GET /v1/chats by M: the group');
    icon_is($by{ $d->{chat_id} }, undef, 'GET /v1/chats by M: the direct '
                                         . 'chat');

    my $f = media($m, $icon);
    api_ok($f, 200, 'M (a member) may fetch the icon') or return;
    is $f->{json}{content_type}, 'image/png', '... image/png';
    my $b = blob_get($f->{json}{download}{url});
    is $b->{status}, 200, 'M downloads it';
    is sha256_hex($b->{body} // ''), sha256_hex($png), '... the same bytes';
    is media($s, $icon)->{status}, 404, 'a stranger may not: 404';

    $r = patch($a, $chat, { icon => $icon });
    api_ok($r, 200, 'the same icon again');
    is $r->{json}{last_seq}, 4, '... appends nothing';
    my ($none) = ws_chat_wait($wm, 1, sub { $_[0]{type} eq 'msg' });
    ok !$none, 'and M gets nothing'
        or diag(ws_chat_show($none));

    my $added = api_request(POST => "/v1/chats/$chat/members",
                            token => $a->{token},
                            body => { user_id => $s->{user_id} });
    icon_is($added->{json}, $icon, 'POST /v1/chats/{id}/members');
    is media($s, $icon)->{status}, 200,
       'the stranger, now a member, may fetch the icon';
    $_->close(1000) for $wa, $wm;
};

subtest 'who may set which icon: members 403, others 404, direct chats '
        . '400; media the admin may not download 400 unknown_media; '
        . 'malformed icons 400' => sub {
    my ($a, $m, $s, $g, $d) = admin_member_stranger('rules') or return;
    my $chat = $g->{chat_id};
    my $mine = media_upload($a, $png, 'image/png') or return;
    my $theirs = media_upload($s, $gif, 'image/gif') or return;
    my $members = media_upload($m, $gif, 'image/gif') or return;
    my $pending = media_announce($a, $png, 'image/png');
    ok $pending, 'A announces a media it does not upload' or return;

    api_error_is(patch($m, $chat, { icon => $mine }), 403, 'forbidden',
                 'a member who is not admin');
    api_error_is(patch($m, $chat, { icon => $NOMEDIA }), 403, 'forbidden',
                 '... with an unknown media: 403 all the same');
    api_error_is(patch($s, $chat, { icon => $mine }), 404, 'not_found',
                 'a user who is not a member');
    api_error_is(patch($a, $d->{chat_id}, { icon => $mine }), 400,
                 'bad_request', 'a direct chat');
    api_error_is(patch($a, $chat, { icon => $theirs }), 400,
                 'unknown_media', 'another user\'s media, never sent to A');
    api_error_is(patch($a, $chat, { icon => $NOMEDIA }), 400,
                 'unknown_media', 'a media id that does not exist');
    api_error_is(patch($a, $chat, { icon => $pending->{media_id} }), 400,
                 'unknown_media', 'A\'s media, announced, not uploaded');
    api_error_is(patch($a, $chat, { icon => $members, title => 'x' }), 400,
                 'unknown_media', 'M\'s media, not sent to A, with a '
                 . 'title: nothing changes');
    for my $bad (['a number', 5], ['""', ''], ['"../x"', '../x'],
                 ['an array', [$mine]], ['an object', { id => $mine }],
                 ['true', JSON::PP::true]) {
        api_error_is(patch($a, $chat, { icon => $bad->[1] }), 400,
                     'bad_request', "icon $bad->[0]");
    }
    api_error_is(patch($a, $chat, { title => undef, icon => $mine }), 400,
                 'bad_request', 'a null title beside an icon');
    api_error_is(patch($a, $chat, {}), 400, 'bad_request',
                 'neither title nor icon');
    my $now = chat_of($a, $chat);
    icon_is($now, undef, 'after all that');
    is $now->{title}, 'rules', '... the title as it was';
    is $now->{last_seq}, 1, '... and nothing appended';

    my ($wm) = ws_chat_open($m);
    my $ev = ws_chat_send_wait($wm, 10, id => 'share', chat_id => $chat,
                               media => [$members]);
    is $ev && $ev->{type}, 'sent', 'M sends its media in the group';
    my $r = patch($a, $chat, { icon => $members });
    api_ok($r, 200, 'now A may download it: A sets it as the icon');
    icon_is($r->{json}, $members, 'the answer');
    $wm->close(1000);
};

subtest 'null removes the icon, and members lose access to it; title and '
        . 'icon in one PATCH: renamed, then icon_changed' => sub {
    my ($a, $m) = map { api_signup(device_name => $_) } qw(admin member);
    my $g = api_chat_create($a, { type => 'group', title => 'old',
                                  members => [$m->{user_id}] })
        or return;
    my $chat = $g->{chat_id};
    my $one = media_upload($a, $png, 'image/png') or return;
    my $two = media_upload($a, $gif, 'image/gif') or return;
    my ($wm) = ws_chat_open($m);

    api_ok(patch($a, $chat, { icon => $one }), 200, 'A sets an icon');
    is media($m, $one)->{status}, 200, 'M may fetch it';
    my $r = patch($a, $chat, { icon => undef });
    api_ok($r, 200, 'A sets the icon null');
    icon_is($r->{json}, undef, 'the answer');
    is $r->{json}{last_seq}, 3, '... last_seq 3';
    is media($m, $one)->{status}, 404,
       'M may not fetch the old icon any more (never sent in the chat)';
    is media($a, $one)->{status}, 200, '... A, its uploader, still may';
    $r = patch($a, $chat, { icon => undef });
    is $r->{json}{last_seq}, 3, 'null again: nothing appended';

    $r = patch($a, $chat, { title => 'new', icon => $two });
    api_ok($r, 200, 'A sets a title and an icon at once');
    is $r->{json}{title}, 'new', '... the new title';
    icon_is($r->{json}, $two, '... the new icon');
    is $r->{json}{last_seq}, 5, '... two messages';

    my @got = msgs_upto($wm, $chat, 5);
    is_deeply [map { [$_->{seq}, $_->{event}] } @got],
              [[2, 'icon_changed'], [3, 'icon_changed'], [4, 'renamed'],
               [5, 'icon_changed']],
              'M gets icon_changed, icon_changed, renamed, icon_changed';
    icon_msg_is($got[1], $chat, 3, $a, undef,
                'seq 3: icon_changed with "icon":null');
    is $got[2]{title}, 'new', 'seq 4: renamed with the title';
    icon_msg_is($got[3], $chat, 5, $a, $two, 'seq 5: icon_changed');
    $wm->close(1000);
};

subtest 'asset_ttl: the media of an icon stays while it is the icon, and '
        . 'goes after' => sub {
    ok nginx_start(workers => 2, config => $CONFIG,
                   http_config => chat_http_config(
                       extra => $TYPES . "asset_ttl 4s;\n")),
       'nginx starts with asset_ttl 4s';
    my ($a, $m) = map { api_signup(device_name => $_) } qw(admin member);
    my $g = api_chat_create($a, { type => 'group', title => 'ttl',
                                  members => [$m->{user_id}] })
        or return;
    my $chat = $g->{chat_id};
    # set right after its upload: well within asset_ttl
    my $icon = media_upload($a, $png, 'image/png') or return;
    api_ok(patch($a, $chat, { icon => $icon }), 200, 'A sets the icon');
    my $other = media_upload($a, $gif, 'image/gif') or return;

    ok wait_until(15, sub { !blob_stored($other) }),
       'the other media, never used, is swept after the TTL';
    ok blob_stored($icon), 'the icon\'s object stays';
    # A later sweep has run once a media uploaded now is gone.
    my $probe = media_upload($a, $gif, 'image/gif') or return;
    ok wait_until(15, sub { !blob_stored($probe) }),
       'a media uploaded since, never used, is swept too';
    ok blob_stored($icon), '... also after another sweep';
    my $f = media($m, $icon);
    api_ok($f, 200, 'M may fetch it');
    is sha256_hex(blob_get($f->{json}{download}{url})->{body} // ''),
       sha256_hex($png), '... and downloads its bytes';
    icon_is(chat_of($m, $chat), $icon, 'the chat still has it');

    api_ok(patch($a, $chat, { icon => undef }), 200, 'A removes the icon');
    ok wait_until(15, sub { !blob_stored($icon) }),
       'then the media is swept too';
    is media($a, $icon)->{status}, 404, '... its row too';
};

check_error_log(name => 'the suite', since => 0,
                no_error_log => ['[error]']);
is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
