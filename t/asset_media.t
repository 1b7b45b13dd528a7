# Media (PROTOCOL.md 3): POST /v1/media gives a presigned PUT, the blob
# store (an "asset_blob" location: the module stores, static serves) takes
# exactly what was signed, once, with the declared sha256, GET
# /v1/media/{id} gives a presigned GET to the uploader, the store serves
# media so that none runs as a page of its origin, and every forged,
# tampered, expired, oversize, racing or replayed request is refused
# before anything is stored.
#
#   scripts/test.sh t/asset_media.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Test::Chat::Media qw(:all);
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep);
use File::Temp qw(tempdir);

needs_stack();

my $CONFIG = chat_media_locations();
my $HTTP = chat_http_config(extra => <<'END');
asset_max_size 1m;
asset_url_ttl 3s;
asset_types image/* application/pdf;
END

ok nginx_start(workers => 2, config => $CONFIG, http_config => $HTTP),
   'nginx starts with the asset module';

my $me = api_signup(device_name => 'uploader');
my $other = api_signup(device_name => 'stranger');

my $png = "\x89PNG\r\n\x1a\n" . join('', map { chr($_ % 256) } 1 .. 3000);

subtest 'upload, then download the same bytes with the uploaded type' => sub {
    my $r = media_create($me, { content_type => 'image/png',
                                size => length $png,
                                sha256 => sha256_hex($png) });
    api_ok($r, 201, 'POST /v1/media') or return;
    my $m = $r->{json};
    like $m->{media_id}, qr/^[A-Za-z0-9_-]{22}$/, 'an opaque media id';
    is $m->{upload}{method}, 'PUT', 'upload.method PUT';
    is_deeply $m->{upload}{headers}, { 'Content-Type' => 'image/png' },
              'upload.headers: the type';
    ok $m->{upload}{expires_at} > time * 1000
       && $m->{upload}{expires_at} <= (time + 4) * 1000,
       'expires_at in ms, within asset_url_ttl';
    like $m->{upload}{url}, qr{^/blob/\Q$m->{media_id}\E\?}, 'url in /blob/';

    my $p = blob_put($m->{upload}{url}, $png);
    like $p->{status}, qr/^20[14]$/, 'the PUT is stored (201)'
        or diag(explain $p);
    ok blob_stored($m->{media_id}), 'the object is in the store';

    my $again = blob_put($m->{upload}{url}, $png);
    is $again->{status}, 403, 'the same PUT again: 403, no overwrite';

    my $g = api_request(GET => "/v1/media/$m->{media_id}",
                        token => $me->{token});
    api_ok($g, 200, 'GET /v1/media/{id} by the uploader') or return;
    is $g->{json}{content_type}, 'image/png', 'content_type';
    is $g->{json}{size}, length $png, 'size';
    my $d = blob_get($g->{json}{download}{url});
    is $d->{status}, 200, 'download: 200';
    is sha256_hex($d->{body} // ''), sha256_hex($png), 'the same bytes';
    like $d->{headers}{'content-type'} // '', qr{^image/png}, 'served as image/png';

    my $s = api_request(GET => "/v1/media/$m->{media_id}",
                        token => $other->{token});
    is $s->{status}, 404, 'another user (no shared chat): 404, not 403';
    is api_request(GET => "/v1/media/AAAAAAAAAAAAAAAAAAAAAA",
                   token => $me->{token})->{status}, 404,
       'an unknown id: 404';
    is api_request(GET => "/v1/media/$m->{media_id}")->{status}, 401,
       'no token: 401';
};

# found by fuzz/fuzz_asset_url.c: the store unescaped X-Type as a path,
# which ends at a "?", so a type with one never matched its signature
subtest 'a type with "?" and "%" in it: the URL signed for it is taken' => sub {
    my $type = 'image/x-odd?a=`b%20c';
    my $r = media_create($me, { content_type => $type, size => length $png });
    api_ok($r, 201, 'POST /v1/media') or return;
    my $m = $r->{json};
    my $p = blob_put($m->{upload}{url}, $png, type => $type);
    is $p->{status}, 201, 'the PUT with that Content-Type: 201'
        or diag(explain $p);
    my $g = api_request(GET => "/v1/media/$m->{media_id}",
                        token => $me->{token});
    api_ok($g, 200, 'GET /v1/media/{id}') or return;
    my $d = blob_get($g->{json}{download}{url});
    is $d->{status}, 200, 'download: 200';
    is $d->{headers}{'content-type'}, $type, 'served with the type signed';
};

subtest 'the API refuses what the store would not take' => sub {
    my $r = media_create($me, { content_type => 'video/mp4', size => 10 });
    is $r->{status}, 400, 'a type outside asset_types: 400';
    $r = media_create($me, { content_type => 'image/png',
                             size => 1024 * 1024 + 1 });
    is $r->{status}, 413, 'over asset_max_size: 413';
    is $r->{json}{error}{code}, 'too_large', '... too_large';
    for my $bad ({ size => 10 }, { content_type => 'image/png' },
                 { content_type => 'image/png', size => 0 },
                 { content_type => 'image/png', size => '10' },
                 { content_type => 'image/png', size => 10, sha256 => 'X' }) {
        is media_create($me, $bad)->{status}, 400,
           'bad body ' . join(',', sort keys %$bad) . ': 400';
    }
    # found by fuzz/fuzz_asset_url.c: nginx trims a header value, so a
    # type that ends or starts with a space could never be uploaded
    for my $type ('image/png ', ' image/png') {
        is media_create($me, { content_type => $type, size => 10 })->{status},
           400, "content_type \"$type\": 400 (no header carries it)";
    }
};

subtest 'forged, tampered, mismatched and expired uploads leave nothing' => sub {
    my $r = media_create($me, { content_type => 'image/png',
                                size => length $png });
    api_ok($r, 201, 'POST /v1/media') or return;
    my ($id, $url) = ($r->{json}{media_id}, $r->{json}{upload}{url});

    (my $tampered = $url) =~ s/X-Size=\d+/X-Size=99/;
    is blob_put($tampered, substr($png, 0, 99), length => 99)->{status}, 403,
       'X-Size changed: 403';
    (my $other_id = $url) =~ s{/blob/[^?]+}{/blob/AAAAAAAAAAAAAAAAAAAAAA};
    is blob_put($other_id, $png)->{status}, 403, 'another object: 403';
    (my $nosig = $url) =~ s/&X-Signature=[^&]+//;
    is blob_put($nosig, $png)->{status}, 403, 'no signature: 403';
    (my $badsig = $url) =~ s/(X-Signature=.)/${1}x/;
    is blob_put($badsig, $png)->{status}, 403, 'a wrong signature: 403';
    is blob_put($url, $png, type => 'image/gif')->{status}, 403,
       'another Content-Type than signed: 403';
    is blob_put($url, $png . 'x', length => length($png) + 1)->{status}, 403,
       'another Content-Length than signed: 403';
    my $chunked = blob_put($url, $png, length => undef,
                      headers => "Transfer-Encoding: chunked\r\n",
                      body => sprintf("%x\r\n", length $png)
                              . "$png\r\n0\r\n\r\n");
    is $chunked->{status}, 411, 'no length (chunked): 411';
    for my $path ("/blob/../conf/nginx.conf", "/blob/%2e%2e%2fx",
                  "/blob/$id/x", "/blob/${id}x", "/blob/") {
        my $q = (split /\?/, $url, 2)[1];
        my $s = blob_put("$path?$q", $png)->{status};
        # ".." is resolved by nginx before the locations: such a path
        # leaves the blob location (405 from the static handler)
        ok $s == 403 || $s == 404 || $s == 400 || $s == 405,
           "odd path $path: refused ($s)";
    }
    is blob_get($url)->{status}, 403, 'the PUT URL does not download';
    ok !blob_stored($id), 'nothing stored';

    # What is tested: the URL's time runs out (asset_url_ttl 3s).
    sleep 4;
    is blob_put($url, $png)->{status}, 403, 'after expires_at: 403';
    ok !blob_stored($id), 'still nothing stored';

    my $g = api_request(GET => "/v1/media/$id", token => $me->{token});
    api_ok($g, 200, 'a download URL for the never uploaded media') or return;
    is blob_get($g->{json}{download}{url})->{status}, 404,
       'which finds nothing: 404';
};

sub next_msg {
    my ($ws) = @_;
    return ws_chat_wait($ws, 10, sub { $_[0]{type} eq 'msg' });
}

subtest 'an image sent to a group reaches a member, who fetches the same '
        . 'bytes; only the sender\'s own or received media can be sent' => sub {
    my @u = map { api_signup(device_name => $_) } qw(author member outsider);
    my ($author, $member, $outsider) = @u;
    my $g = api_chat_create($author, { type => 'group', title => 'pics',
                                       members => [$member->{user_id}] })
        or return;
    my $chat = $g->{chat_id};
    my $solo = api_chat_create($member, { type => 'direct',
                                          user_id => $outsider->{user_id} })
        or return;

    my ($wa) = ws_chat_open($author);
    my ($wm) = ws_chat_open($member);
    my ($wo) = ws_chat_open($outsider);

    my $id = media_upload($author, $png, 'image/png');
    ok $id, 'the author uploads an image' or return;

    my $ev = ws_chat_send_wait($wa, 10, id => 'pic-1', chat_id => $chat,
                               media => [$id], text => 'look');
    is $ev && $ev->{type}, 'sent', 'send with media: sent'
        or diag(explain $ev);

    my $msg = next_msg($wm);
    is_deeply $msg && $msg->{media},
              [{ media_id => $id, content_type => 'image/png',
                 size => length $png }],
              'the member gets the msg with the media\'s id, type and size';
    is $msg && $msg->{text}, 'look', '... and the text';

    my $g2 = api_request(GET => "/v1/media/$id", token => $member->{token});
    api_ok($g2, 200, 'the member may fetch it') or return;
    my $d = blob_get($g2->{json}{download}{url});
    is sha256_hex($d->{body} // ''), sha256_hex($png),
       'the member downloads the same bytes (sha256)';
    is api_request(GET => "/v1/media/$id",
                   token => $outsider->{token})->{status}, 404,
       'an outsider: 404';

    $ev = ws_chat_send_wait($wo, 10, id => 'steal', chat_id => $solo->{chat_id},
                            media => [$id]);
    is $ev && $ev->{code}, 'unknown_media',
       'the outsider cannot send it: unknown_media';
    $ev = ws_chat_send_wait($wm, 10, id => 'fwd', chat_id => $solo->{chat_id},
                            media => [$id]);
    is $ev && $ev->{type}, 'sent', 'the member forwards it (received media)';
    $msg = next_msg($wo);
    is $msg && $msg->{media}[0]{media_id}, $id, 'the outsider gets it now';
    is api_request(GET => "/v1/media/$id",
                   token => $outsider->{token})->{status}, 200,
       '... and may fetch it now';

    my $r = media_create($author, { content_type => 'image/png', size => 10 });
    $ev = ws_chat_send_wait($wa, 10, id => 'early', chat_id => $chat,
                            media => [$r->{json}{media_id}]);
    is $ev && $ev->{code}, 'unknown_media',
       'media not uploaded yet: unknown_media';
    for my $bad ([], ['../x'], [1], [('AAAAAAAAAAAAAAAAAAAAAA') x 11], 'x') {
        $ev = ws_chat_send_wait($wa, 10, id => 'bad', chat_id => $chat,
                                media => $bad);
        is $ev && $ev->{code}, 'bad_request',
           'media ' . (ref $bad ? '[' . join(',', @$bad) . ']' : $bad)
           . ': bad_request';
    }
    $_->close(1000) for $wa, $wm, $wo;
};

# an upload whose last byte is held back: the PUT is past the access
# check and its body is being read
sub put_start {
    my ($url, $bytes, $type) = @_;
    return http_start("PUT $url HTTP/1.1\r\nHost: localhost\r\n"
                      . "Connection: close\r\nContent-Type: $type\r\n"
                      . 'Content-Length: ' . length($bytes) . "\r\n\r\n"
                      . substr($bytes, 0, -1));
}

sub put_last_byte {
    my ($h, $bytes) = @_;
    syswrite $h->{sock}, substr($bytes, -1) if $h->{sock};
}

sub blob {
    my ($id) = @_;
    open my $f, '<:raw', chat_blob_dir() . "/$id" or return '';
    local $/;
    return <$f>;
}

subtest 'an object is written once: of two PUTs racing, one stores, the '
        . 'other is refused, and nothing is replaced' => sub {
    my $first = "\x89PNG\r\n\x1a\n" . ('1' x 50000);
    my $second = "\x89PNG\r\n\x1a\n" . ('2' x 50000);
    my $r = media_create($me, { content_type => 'image/png',
                          size => length $first });
    api_ok($r, 201, 'POST /v1/media') or return;
    my ($id, $url) = ($r->{json}{media_id}, $r->{json}{upload}{url});

    my $a = put_start($url, $first, 'image/png');
    my $b = put_start($url, $second, 'image/png');
    sleep 0.5;          # both are past the access check, reading bodies
    ok !blob_stored($id), 'nothing is stored while the bodies come';
    put_last_byte($a, $first);
    my $ra = http_finish($a);
    is $ra->{status}, 201, 'the first to finish is stored (201)';
    put_last_byte($b, $second);
    my $rb = http_finish($b);
    ok $rb->{status} == 403 || $rb->{status} == 409,
       "the second, with the same URL, is refused ($rb->{status})";
    is blob($id), $first, 'the store holds the first upload\'s bytes';

    my $g = api_request(GET => "/v1/media/$id", token => $me->{token});
    my $d = blob_get($g->{json}{download}{url} // '');
    is sha256_hex($d->{body} // ''), sha256_hex($first),
       'and a download gets them';

    # finishing at the same instant: still exactly one
    $r = media_create($me, { content_type => 'image/png',
                             size => length $first });
    ($id, $url) = ($r->{json}{media_id}, $r->{json}{upload}{url});
    my @h = map { put_start($url, $_, 'image/png') } $first, $second;
    sleep 0.5;
    put_last_byte($h[0], $first);
    put_last_byte($h[1], $second);
    my @st = sort map { http_finish($_)->{status} // 0 } @h;
    is $st[0], 201, 'two PUTs finishing together: one is stored';
    ok $st[1] == 403 || $st[1] == 409, "... the other is refused ($st[1])";
    ok blob($id) eq $first || blob($id) eq $second,
       '... and the object is one of them, whole';
};

subtest 'the declared sha256 is checked before the media is usable' => sub {
    my $big = "\x89PNG\r\n\x1a\n" . join('', map { chr(($_ * 13) % 256) }
                                                1 .. 300000);
    my $other = $big;
    substr($other, 150000, 1) = chr(ord(substr($big, 150000, 1)) ^ 1);
    my $r = media_create($me, { content_type => 'image/png',
                                size => length $big,
                                sha256 => sha256_hex($big) });
    api_ok($r, 201, 'POST /v1/media with sha256') or return;
    my ($id, $url) = ($r->{json}{media_id}, $r->{json}{upload}{url});
    like $url, qr/[?&]X-SHA256=\Q${\ sha256_hex($big)}\E(&|$)/,
         'the upload URL carries the declared hash, signed';

    is blob_put($url, $other)->{status}, 403,
       'the same size, one byte changed: 403';
    ok !blob_stored($id), 'nothing is stored';
    my $g = api_request(GET => "/v1/media/$id", token => $me->{token});
    is blob_get($g->{json}{download}{url} // '')->{status}, 404,
       'and nothing is downloaded';
    (my $nohash = $url) =~ s/&X-SHA256=[0-9a-f]+//;
    is blob_put($nohash, $other)->{status}, 403,
       'the hash taken out of the URL: 403';
    my $other_sha = sha256_hex($other);
    (my $swapped = $url) =~ s/X-SHA256=[0-9a-f]+/X-SHA256=$other_sha/;
    is blob_put($swapped, $other)->{status}, 403,
       'another hash put in the URL: 403';
    ok !blob_stored($id), 'still nothing stored';

    is blob_put($url, $big)->{status}, 201, 'the declared bytes: 201';
    is sha256_hex(blob_get($g->{json}{download}{url})->{body} // ''),
       sha256_hex($big), 'and they download';
};

subtest 'media is served with nosniff; active types as attachments in a '
        . 'CSP sandbox' => sub {
    my $png_id = media_upload($me, $png, 'image/png');
    my $svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>';
    my $svg_id = media_upload($me, $svg, 'image/svg+xml');
    my $pdf_id = media_upload($me, "%PDF-1.4\n%%EOF\n", 'application/pdf');
    ok $png_id && $svg_id && $pdf_id, 'a PNG, an SVG and a PDF uploaded'
        or return;
    my %got = map {
        my $g = api_request(GET => "/v1/media/$_", token => $me->{token});
        ($_ => blob_get($g->{json}{download}{url} // ''))
    } $png_id, $svg_id, $pdf_id;

    for my $id ($png_id, $pdf_id) {
        my $h = $got{$id}{headers};
        is $got{$id}{status}, 200, "$h->{'content-type'}: 200";
        is $h->{'x-content-type-options'}, 'nosniff', '... nosniff';
        ok !exists $h->{'content-disposition'}, '... inline';
    }
    my $h = $got{$svg_id}{headers};
    is $got{$svg_id}{status}, 200, 'image/svg+xml: 200';
    like $h->{'content-type'} // '', qr{^image/svg\+xml}, '... its type';
    is $h->{'x-content-type-options'}, 'nosniff', '... nosniff';
    like $h->{'content-disposition'} // '', qr/^attachment/,
         '... as an attachment';
    like $h->{'content-security-policy'} // '', qr/\bsandbox\b/,
         '... in a CSP sandbox';
};

subtest 'a content_type that is not one printable header value is '
        . 'refused' => sub {
    for my $t ("image/png\r\nX-Injected: 1", "image/png\nX-Injected: 1",
               "image/\x00png", "image/p\x{e9}ng") {
        (my $name = $t) =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
        my $r = media_create($me, { content_type => $t, size => 10 });
        is $r->{status}, 400, "\"$name\": 400";
    }
};

subtest 'client_body_temp_path on another file system: the upload is '
        . 'copied beside the object, then linked, once' => sub {
    my $shm = -d '/dev/shm' && tempdir('asset_media_XXXXXX', DIR => '/dev/shm',
                                       CLEANUP => 1);
    plan skip_all => 'no /dev/shm on a file system of its own'
        unless $shm && (stat $shm)[0] != (stat chat_blob_dir())[0];
    chmod 0777, $shm;
    (my $config = $CONFIG) =~ s{(location /blob/ \{)}
                               {$1\n    client_body_temp_path $shm;};
    ok nginx_start(workers => 2, http_config => $HTTP, config => $config),
       "nginx with client_body_temp_path $shm";
    my $r = media_create($me, { content_type => 'image/png',
                                size => length $png,
                                sha256 => sha256_hex($png) });
    api_ok($r, 201, 'POST /v1/media') or return;
    my ($id, $url) = ($r->{json}{media_id}, $r->{json}{upload}{url});
    is blob_put($url, $png)->{status}, 201, 'the PUT is stored (201)';
    is blob($id), $png, 'the object holds the bytes';
    is blob_put($url, $png)->{status}, 403, 'the same PUT again: 403';
    is_deeply [grep { !/^\Q$id\E$/ } map { s{.*/}{}r }
               glob(chat_blob_dir() . "/$id*")],
              [], 'no copy is left beside the object';
};

subtest 'asset_ttl: media past it go, rows and objects, unless a stored '
        . 'message refers to them' => sub {
    ok nginx_start(workers => 2, config => $CONFIG,
                   http_config => chat_http_config(
                       extra => "asset_ttl 4s;\n")),
       'nginx starts with asset_ttl 4s';
    my ($a, $b) = map { api_signup(device_name => $_) } qw(a b);
    my $chat = api_chat_create($a, { type => 'direct',
                                     user_id => $b->{user_id} })
        or return;
    my ($wa) = ws_chat_open($a);
    # sent right after its upload: well within asset_ttl
    my $kept = media_upload($a, $png, 'image/png');
    my $ev = $kept && ws_chat_send_wait($wa, 10, id => 'keep',
                                        media => [$kept],
                                        chat_id => $chat->{chat_id});
    is $ev && $ev->{type}, 'sent', 'one is sent (b has not got it yet)'
        or diag(ws_chat_show($ev));
    my $gone = media_upload($a, $png, 'image/png');
    ok $kept && $gone, 'two uploads' or return;

    ok wait_until(15, sub { !blob_stored($gone) }),
       'the one never sent: its object is deleted after the TTL';
    is api_request(GET => "/v1/media/$gone", token => $a->{token})->{status},
       404, '... and its row: 404';
    # A later sweep has run once a media uploaded now is gone.
    my $probe = media_upload($a, $png, 'image/png');
    ok $probe && wait_until(15, sub { !blob_stored($probe) }),
       'another media, never sent, is swept after the TTL too';
    ok blob_stored($kept), 'the one a stored message refers to stays';
    is api_request(GET => "/v1/media/$kept", token => $b->{token})->{status},
       200, '... and b may fetch it';

    my ($wb, $sb) = ws_chat_open($b);
    my ($m) = grep { ($_->{id} // '') eq 'keep' } @{ $sb->{msgs} || [] };
    ok $m, 'b gets the message in its sync' or return;
    $wb->send_json({ type => 'ack', chat_id => $chat->{chat_id},
                     seq => $m->{seq} });
    ok wait_until(15, sub { !blob_stored($kept) }),
       'once b acked it (the message is gone), the media goes too';
    $_->close(1000) for $wa, $wb;
};

subtest 'a PUT is answered once the media is usable; with PostgreSQL '
        . 'down it is 503 and nothing is kept, and the same URL stores once '
        . 'PostgreSQL is back' => sub {
    ok nginx_start(workers => 2, config => $CONFIG,
                   http_config => chat_http_config(
                       extra => "asset_url_ttl 60s;\n")),
       'nginx starts with asset_url_ttl 60s';
    my $a = api_signup(device_name => 'a') or return;
    my $chat = api_chat_create($a, { type => 'group', title => 'quick',
                                     members => [] }) or return;
    my @late;
    for my $i (1 .. 10) {
        my $m = media_announce($a, $png, 'image/png') or last;
        blob_put($m->{upload}{url}, $png)->{status} == 201 or last;
        my $r = api_request(PATCH => "/v1/chats/$chat->{chat_id}",
                            token => $a->{token},
                            body => { icon => $m->{media_id} });
        push @late, $r->{status} unless $r->{status} == 200;
    }
    is_deeply \@late, [],
              'ten uploads, each set as an icon as soon as its PUT is '
              . 'answered: every one is usable';

    my $m = media_announce($a, $png, 'image/png') or return;
    ok pg_stop(), 'PostgreSQL stops' or return;
    my $p = blob_put($m->{upload}{url}, $png);
    is $p->{status}, 503, 'the PUT: 503 (the media cannot be marked)';
    ok !blob_stored($m->{media_id}), 'nothing is kept in the store';
    ok pg_start(), 'PostgreSQL starts again' or return;
    my $again;
    ok wait_until(15, sub {
           $again = blob_put($m->{upload}{url}, $png)->{status};
           $again != 503;
       }), 'the same URL is taken once PostgreSQL is back';
    is $again, 201, '... 201';
    is blob($m->{media_id}), $png, '... and the object holds the bytes';
    my $g = api_request(GET => "/v1/media/$m->{media_id}",
                        token => $a->{token});
    api_ok($g, 200, 'the media is usable: GET /v1/media/{id}');
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
