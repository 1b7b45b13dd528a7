# The S3 backend's AWS Signature Version 4 presigned URLs
# (ngx_asset_module/ngx_asset_sigv4.c), built alone into a small program
# (t/c/sigv4.c) and checked against reference values at fixed times: the
# example of the AWS documentation ("Authenticating Requests: Using Query
# Parameters"), and botocore's signer (t/c/sigv4_botocore.py, Debian's
# python3-botocore), GET and PUT with the type and length signed, and
# the conditional PUT the module signs (If-None-Match: *).
#
#   prove t/asset_sigv4.t

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use IPC::Open2 qw(open2);

my $dir = tempdir(CLEANUP => 1);
my $bin = "$dir/sigv4";

my $cc = system('cc', '-Wall', '-Wextra', '-Werror', '-Ingx_asset_module',
                '-o', $bin, 't/c/sigv4.c', 'ngx_asset_module/ngx_asset_sigv4.c',
                '-lcrypto');
is $cc, 0, 'the signer builds alone (cc, OpenSSL)' or BAIL_OUT('no signer');

sub sign {
    my (@lines) = @_;
    my $pid = open2(my $out, my $in, $bin) or die "$bin: $!";
    print $in "$_\n" for @lines;
    close $in;
    my @got = map { chomp; $_ } <$out>;
    waitpid $pid, 0;
    return @got;
}

# AWS's example: GET examplebucket/test.txt on 2013-05-24, 86400 s
my ($aws) = sign('GET examplebucket.s3.amazonaws.com /test.txt '
                 . 'AKIAIOSFODNN7EXAMPLE '
                 . 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY us-east-1 '
                 . '20130524T000000Z 86400 - -1');
is $aws, 'X-Amz-Algorithm=AWS4-HMAC-SHA256'
         . '&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1'
         . '%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z'
         . '&X-Amz-Expires=86400&X-Amz-SignedHeaders=host'
         . '&X-Amz-Signature='
         . 'aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404',
   'the AWS documentation\'s example';

my ($bad) = sign('GET h /p k s r 2013 60 - -1');
is $bad, 'error', 'a malformed date is refused';

SKIP: {
    my @ref = `python3 t/c/sigv4_botocore.py 2>&1`;
    skip 'botocore (python3-botocore) is not installed', 1
        if $? != 0 && grep { /No module named .?botocore/ } @ref;
    is $?, 0, 'botocore signs the reference cases' or diag(@ref);
    chomp @ref;
    my @in = map { (split /\t/)[0] } @ref;
    my @want = map { (split /\t/)[1] } @ref;
    my @got = sign(@in);
    for my $i (0 .. $#in) {
        my ($m, $host, $path, @rest) = split / /, $in[$i];
        my $cond = @rest > 7 ? " If-None-Match: $rest[7]" : '';
        is $got[$i], $want[$i], "botocore: $m $host$path$cond";
    }
}

done_testing();
