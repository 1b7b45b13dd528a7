package Test::Chat::Media;

# What the media suites (asset_media.t, api_group_icon.t) share: the
# locations of the media API and of a local blob store, and a client of
# both. POD at the end.

use strict;
use warnings;

use Carp ();
use Exporter qw(import);
use Test::More ();

# No import: Test::Chat::Nginx's import names the package its data-driven
# blocks run in, and that is the suite's, not this one.
use Test::Chat::Nginx ();
use Test::Chat::Delivery qw(chat_locations);

BEGIN {
    no strict 'refs';
    *{$_} = \&{"Test::Chat::Nginx::$_"}
        for qw(servroot http_request api_request);
}

our @EXPORT_OK = qw(chat_media_locations media_locations chat_blob_dir
                    media_create
                    media_announce media_upload blob_put blob_get
                    blob_stored);
our %EXPORT_TAGS = (all => \@EXPORT_OK);


sub chat_blob_dir {
    my $dir = servroot() . '/blob';
    unless (-d $dir) {
        mkdir $dir or Carp::croak("chat_blob_dir: mkdir $dir: $!");
        chmod 0777, $dir;
    }
    return $dir;
}

sub media_locations {
    my (%o) = @_;
    chat_blob_dir();
    return <<"END";
location /v1/media { asset_api; }
location /blob/ {
    asset_blob on;
    root ${\ servroot()};
    client_max_body_size ${\ ($o{max_body} // '1m')};
}
END
}

sub chat_media_locations { chat_locations() . media_locations() }

sub media_create {
    my ($acct, $body) = @_;
    return api_request(POST => '/v1/media', token => $acct->{token},
                       body => $body);
}

sub media_announce {
    my ($acct, $bytes, $type) = @_;
    my $r = media_create($acct, { content_type => $type,
                                  size => length $bytes });
    return ($r->{status} // 0) == 201 ? $r->{json} : undef;
}

sub media_upload {
    my ($acct, $bytes, $type) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $m = media_announce($acct, $bytes, $type);
    my $p = $m && blob_put($m->{upload}{url}, $bytes, type => $type);
    Test::More::ok($p && ($p->{status} // 0) =~ /^20[14]$/,
                   "$acct->{name} uploads a $type")
        or return undef;
    return $m->{media_id};
}

sub blob_put {
    my ($url, $bytes, %h) = @_;
    my $type = exists $h{type} ? $h{type} : 'image/png';
    my $len = exists $h{length} ? $h{length} : length $bytes;
    my $req = "PUT $url HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              . (defined $type ? "Content-Type: $type\r\n" : '')
              . (defined $len ? "Content-Length: $len\r\n" : '')
              . ($h{headers} // '') . "\r\n" . ($h{body} // $bytes);
    return http_request($req);
}

sub blob_get {
    my ($url) = @_;
    return http_request("GET $url HTTP/1.1\r\nHost: localhost\r\n"
                        . "Connection: close\r\n\r\n");
}

sub blob_stored {
    my ($id) = @_;
    return -e chat_blob_dir() . "/$id";
}

1;

__END__

=head1 NAME

Test::Chat::Media - the media API and the local blob store, for the suites

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::Chat::Nginx;
    use Test::Chat::Delivery qw(chat_http_config);
    use Test::Chat::Media qw(:all);

    ok nginx_start(http_config => chat_http_config(),
                   config => chat_media_locations());
    my $id = media_upload($acct, $png, 'image/png') or return;
    ok blob_stored($id), 'the object is in the store';

Nothing is exported unless asked for (C<:all> for everything).

=over

=item chat_media_locations(), media_locations(max_body => '1m')

=item chat_blob_dir()

L<Test::Chat::Delivery>'s chat locations plus the media locations: the
media API (C</v1/media>, C<asset_api>) and the local blob store
(C</blob/>: C<asset_blob>, bodies up to
C<max_body>) in the server root; C<chat_blob_dir()> is that store's
directory, made writable by the workers, where an object's file is its
media id.

=item media_create($acct, $body)

C<POST /v1/media> as the account, with C<$body>; the response.

=item media_announce($acct, $bytes, $type)

C<POST /v1/media> for those bytes; the answer's JSON when it is 201, else
undef.

=item media_upload($acct, $bytes, $type)

Announced, then C<PUT> to the blob store; one assertion ("<name> uploads
a <type>"). Returns the media id, or undef.

=item blob_put($url, $bytes, type => $t, length => $n, headers => $h, ...)

A C<PUT> of the bytes to a (presigned) URL of the store, with
Content-Type C<$t> (default image/png; undef: none), Content-Length
C<$n> (default the bytes' length; undef: none), more header lines C<$h>,
and C<body =E<gt> $b> sent instead of the bytes; the response.

=item blob_get($url), blob_stored($id)

A C<GET> of a URL of the store (the response); whether the store has an
object of that media id.

=back

=cut
