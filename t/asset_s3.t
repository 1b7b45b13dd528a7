# The s3 backend against a local S3-compatible server (s3rver):
# POST /v1/media gives a presigned PUT of the bucket's object, the bytes go
# straight to the store, GET /v1/media/{id} gives a presigned GET that
# returns them. s3rver does not check SigV4 signatures (its source says
# "unimplemented"): that the signatures are right is t/asset_sigv4.t's
# proof, against AWS's example and botocore. Needs node and t/node's
# packages (scripts/test.sh installs them with npm).
#
#   scripts/test.sh t/asset_s3.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Digest::SHA qw(sha256_hex);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Time::HiRes qw(sleep);

plan skip_all => 'CHAT_PG_DSN and CHAT_REDIS are not set (run me through '
                 . 'scripts/test.sh)'
    unless $ENV{CHAT_PG_DSN} && $ENV{CHAT_REDIS};
plan skip_all => 'no node, or t/node/node_modules/s3rver (npm install in '
                 . 't/node)'
    unless -d 't/node/node_modules/s3rver' && `node --version 2>/dev/null`;

my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1) or die "no port: $!";
my $S3PORT = $probe->sockport;
close $probe;

my $dir = tempdir(CLEANUP => 1);
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>', "$dir/s3rver.log" or exit 127;
    open STDERR, '>&', \*STDOUT or exit 127;
    exec 'node', 't/node/s3rver.js', $S3PORT, "$dir/store", 'media';
    exit 127;
}
END {
    local $?;           # the child's status is not the suite's
    if ($pid) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}
mkdir "$dir/store";
ok wait_until(20, sub {
       IO::Socket::INET->new(PeerAddr => "127.0.0.1:$S3PORT", Timeout => 1)
   }), "s3rver listens on 127.0.0.1:$S3PORT"
    or diag(`cat $dir/s3rver.log`);

my $HTTP = <<"END";
chat_postgres "\$TEST_NGINX_PG_DSN";
chat_redis \$TEST_NGINX_REDIS;
chat_dev_codes on;
chat_redis_prefix "t_asset_s3_$$:";
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

# a request to an absolute URL of the store
sub store {
    my ($method, $url, %o) = @_;
    my ($hostport, $path) = $url =~ m{^http://([^/]+)(/.*)$}
        or return { error => "not a URL: $url" };
    my $body = $o{body} // '';
    my $req = "$method $path HTTP/1.1\r\nHost: $hostport\r\n"
              . "Connection: close\r\n"
              . (defined $o{type} ? "Content-Type: $o{type}\r\n" : '')
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

my $put = store(PUT => $url, body => $jpeg, type => 'image/jpeg');
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

nginx_stop();
done_testing();
