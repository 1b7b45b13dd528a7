# The s3 backend against a local S3-compatible server (s3rver):
# POST /v1/media gives a presigned PUT of the bucket's object, the bytes go
# straight to the store, GET /v1/media/{id} gives a presigned GET that
# returns them. s3rver does not check SigV4 signatures (its source says
# "unimplemented"): that the signatures are right is t/asset_sigv4.t's
# proof, against AWS's example and botocore. Nor does it honour
# If-None-Match on a PUT, S3's conditional write, which the module signs
# into every upload URL so that it cannot replace an object: here an
# independent check of the signature, written from the AWS documentation
# (s3_signature_ok), shows that a PUT without that header is refused
# (AWS S3 answers a PUT with it to an existing object 412 Precondition
# Failed). Needs node and t/node's packages (scripts/test.sh installs
# them with npm).
#
#   scripts/test.sh t/asset_s3.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Digest::SHA qw(sha256_hex hmac_sha256 hmac_sha256_hex);
use File::Temp qw(tempdir);
use IO::Socket::INET;

needs_stack();
plan skip_all => 'no node, or t/node/node_modules/s3rver (npm install in '
                 . 't/node)'
    unless -d 't/node/node_modules/s3rver' && `node --version 2>/dev/null`;

my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/store";
my @PIDS;
END {
    local $?;           # the children's status is not the suite's
    for my $pid (@PIDS) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}

# an s3rver on the store directory; with TLS when given a key and a cert
sub s3rver {
    my ($port, @tls) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$dir/s3rver.log" or exit 127;
        open STDERR, '>&', \*STDOUT or exit 127;
        exec 'node', 't/node/s3rver.js', $port, "$dir/store", 'media', @tls;
        exit 127;
    }
    push @PIDS, $pid;
    return wait_until(20, sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1)
    });
}

my $S3PORT = free_port();
ok s3rver($S3PORT), "s3rver listens on 127.0.0.1:$S3PORT"
    or diag(`cat $dir/s3rver.log`);

my $HTTP = chat_http_config(extra => <<"END");
asset_backend s3;
asset_s3_endpoint http://127.0.0.1:$S3PORT;
asset_s3_bucket media;
asset_s3_region us-east-1;
asset_s3_access_key S3RVER;
asset_s3_secret_key S3RVER;
asset_s3_path_style on;
END
my $CONFIG = <<'END';
location /v1/ { chat_api; }
location /v1/media { asset_api; }
END

ok nginx_start(workers => 2, http_config => $HTTP, config => $CONFIG),
   'nginx starts with the s3 backend';

# a request to an absolute URL of the store; headers: {name => value}
sub store {
    my ($method, $url, %o) = @_;
    my ($hostport, $path) = $url =~ m{^http://([^/]+)(/.*)$}
        or return { error => "not a URL: $url" };
    my $body = $o{body} // '';
    my $req = "$method $path HTTP/1.1\r\nHost: $hostport\r\n"
              . "Connection: close\r\n"
              . (defined $o{type} ? "Content-Type: $o{type}\r\n" : '')
              . join('', map { "$_: $o{headers}{$_}\r\n" }
                         sort keys %{ $o{headers} || {} })
              . ($method eq 'PUT' ? 'Content-Length: ' . length($body)
                                    . "\r\n" : '')
              . "\r\n$body";
    return http_request($req, port => $S3PORT);
}

my $me = api_signup(device_name => 'uploader');
my $jpeg = "\xff\xd8\xff\xe0" . join('', map { chr(($_ * 7) % 256) } 1 .. 5000);

my $r = api_request(POST => '/v1/media', token => $me->{token},
                    body => { content_type => 'image/jpeg',
                              size => length $jpeg });
api_ok($r, 201, 'POST /v1/media');
my $m = $r->{json} || {};
my $url = $m->{upload}{url} // '';
like $url, qr{^http://127\.0\.0\.1:$S3PORT/media/\Q$m->{media_id}\E\?X-Amz-},
     'the upload URL is the bucket\'s object, presigned';
like $url, qr/X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost/,
     'length and type are signed';

is_deeply $m->{upload}{headers},
          { 'Content-Type' => 'image/jpeg', 'If-None-Match' => '*' },
          'upload.headers: the type, and If-None-Match: * (write once)';
like $url, qr/X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost
              %3Bif-none-match&/x,
     'If-None-Match is signed';

# S3's check of a presigned request (AWS Signature Version 4, query
# parameters), written from the AWS documentation: whether the request's
# method, path, query and signed headers (lowercase names) give its
# X-Amz-Signature
sub s3_signature_ok {
    my ($method, $url, $secret, %h) = @_;
    my ($host, $path, $query) = $url =~ m{^https?://([^/]+)(/[^?]*)\?(.*)$}
        or return 0;
    my $dec = sub { (my $v = shift) =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $v };
    my $enc = sub {
        (my $v = shift) =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
        $v;
    };
    my %q = map { map { $dec->($_) } split /=/, $_, 2 } split /&/, $query;
    my $sig = delete $q{'X-Amz-Signature'} // return 0;
    $h{host} //= $host;
    my $headers = '';
    for my $name (split /;/, $q{'X-Amz-SignedHeaders'} // '') {
        return 0 unless defined $h{$name};     # signed, and not sent
        $headers .= "$name:$h{$name}\n";
    }
    my $creq = join "\n", $method, $path,
                          join('&', map { $enc->($_) . '=' . $enc->($q{$_}) }
                                    sort keys %q),
                          $headers, $q{'X-Amz-SignedHeaders'},
                          'UNSIGNED-PAYLOAD';
    my (undef, $date, $region, $service) = split m{/},
                                                 $q{'X-Amz-Credential'};
    my $key = "AWS4$secret";
    $key = hmac_sha256($_, $key) for $date, $region, $service, 'aws4_request';
    return hmac_sha256_hex(join("\n", 'AWS4-HMAC-SHA256', $q{'X-Amz-Date'},
                                "$date/$region/$service/aws4_request",
                                sha256_hex($creq)), $key) eq $sig;
}

my %sent = ('content-type' => 'image/jpeg',
            'content-length' => length $jpeg, 'if-none-match' => '*');
ok s3_signature_ok(PUT => $url, 'S3RVER', %sent),
   'the PUT with upload.headers passes S3\'s signature check';
ok !s3_signature_ok(PUT => $url, 'S3RVER', %sent, 'if-none-match' => undef),
   'without If-None-Match it does not: S3 refuses it (403)';
ok !s3_signature_ok(PUT => $url, 'S3RVER', %sent,
                    'if-none-match' => '"an-etag"'),
   'nor with another If-None-Match';
ok !s3_signature_ok(PUT => $url, 'S3RVER', %sent, 'content-length' => 1),
   'nor with another length (the check checks)';

my $put = store(PUT => $url, body => $jpeg, type => 'image/jpeg',
                headers => { 'If-None-Match' => '*' });
is $put->{status}, 200, 'the PUT as signed: stored' or diag(explain $put);

my $g = api_request(GET => "/v1/media/$m->{media_id}", token => $me->{token});
api_ok($g, 200, 'GET /v1/media/{id}');
my $d = store(GET => $g->{json}{download}{url} // '');
is $d->{status}, 200, 'the download URL: 200';
is sha256_hex($d->{body} // ''), sha256_hex($jpeg),
   'the same bytes back (sha256)';
like $d->{headers}{'content-type'} // '', qr{^image/jpeg},
     'with the uploaded type';

# asset_ttl: the sweep deletes the rows, then the objects, by presigned
# DELETE requests to the store
sub object {
    my ($id) = @_;
    my @files = glob("$dir/store/media/$id*_object");   # list context
    return scalar @files;
}

ok nginx_start(workers => 2, http_config => $HTTP . "asset_ttl 2s;\n",
               config => $CONFIG), 'nginx restarts with asset_ttl 2s';
$r = api_request(POST => '/v1/media', token => $me->{token},
                 body => { content_type => 'image/jpeg',
                           size => length $jpeg });
my $old = $r->{json}{media_id} // '';
is store(PUT => $r->{json}{upload}{url} // '', body => $jpeg,
         type => 'image/jpeg')->{status}, 200, 'another upload';
ok object($old), 'its object is in the store';
ok wait_until(10, sub { !object($old) && !object($m->{media_id}) }),
   'after asset_ttl the sweep deletes both objects from the store';
is api_request(GET => "/v1/media/$old", token => $me->{token})->{status},
   404, 'and the rows: 404';

# The same over HTTPS: a second s3rver with a certificate of its own for
# "localhost" (on the same store), trusted through
# asset_s3_trusted_certificate; with another CA the sweep refuses it.
SKIP: {
    my $ok = system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
                    . "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
                    . "-keyout $dir/key.pem -out $dir/cert.pem 2>/dev/null") == 0
             && system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
                       . "-subj /CN=other -keyout $dir/other.key "
                       . "-out $dir/other.pem 2>/dev/null") == 0;
    skip 'no openssl to make a certificate', 9 unless $ok;
    my $TLSPORT = free_port();
    ok s3rver($TLSPORT, "$dir/key.pem", "$dir/cert.pem"),
       "an https s3rver on localhost:$TLSPORT";

    my $tls = sub {
        my ($ca) = @_;
        (my $h = $HTTP) =~ s{http://127\.0\.0\.1:$S3PORT}
                            {https://localhost:$TLSPORT};
        return nginx_start(workers => 2, config => $CONFIG,
                           http_config => $h . "asset_ttl 2s;\n"
                                          . "asset_s3_trusted_certificate $ca;\n");
    };
    my $upload = sub {
        my $r = api_request(POST => '/v1/media', token => $me->{token},
                            body => { content_type => 'image/jpeg',
                                      size => length $jpeg });
        my $url = $r->{json}{upload}{url} // '';
        # s3rver does not check signatures: the bytes go in over HTTP
        $url =~ s{^https://localhost:$TLSPORT}{http://127.0.0.1:$S3PORT};
        store(PUT => $url, body => $jpeg, type => 'image/jpeg',
              headers => { 'If-None-Match' => '*' });
        return $r->{json}{media_id} // '';
    };

    ok $tls->("$dir/other.pem"), 'nginx with another CA';
    my $kept = $upload->();
    ok object($kept), 'an upload';
    my $mark = error_log_mark();
    ok wait_until(10, sub { error_log_since($mark)
                            =~ /certificate does not verify/ }),
       'the sweep refuses a certificate it cannot verify';
    ok object($kept), '... and deletes nothing';

    ok $tls->("$dir/cert.pem"), 'nginx trusting the store\'s certificate';
    my $gone = $upload->();
    ok object($gone), 'another upload';
    ok wait_until(10, sub { !object($gone) }),
       'the sweep deletes the object over HTTPS';
    ok object($kept), 'the one refused before stays (its row is gone: '
                      . 'a bucket lifecycle rule takes it)';
}

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
