# conf/production.conf (README.md, "Security") is a configuration nginx
# takes: nginx -t on it, with its module and file paths pointed at this
# build and a throwaway certificate.
#
#   scripts/test.sh t/conf_production.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use Cwd qw(getcwd);

plan skip_all => 'no openssl to make a certificate'
    unless system('openssl version >/dev/null 2>&1') == 0;

my $top = getcwd();
my $dir = tempdir('chat-production-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;

is system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
          . "-subj /CN=localhost -keyout $dir/key.pem -out $dir/cert.pem "
          . ">/dev/null 2>&1"), 0, 'a throwaway certificate';

copy("$top/conf/$_", "$dir/$_") or die "copy $_: $!"
    for qw(chat_limits.conf chat_api.conf);
copy("$top/conf/mime/mime.types", "$dir/mime.types") or die "mime: $!";

open my $in, '<', "$top/conf/production.conf" or die $!;
my $conf = do { local $/; <$in> };
close $in;

my $modules = modules_dir();
my %paths = (
    'modules/ngx_chat_module.so'   => "$modules/ngx_chat_module.so",
    'modules/ngx_asset_module.so'  => "$modules/ngx_asset_module.so",
    '/run/nginx.pid'               => "$dir/nginx.pid",
    '/var/log/nginx/error.log'     => "$dir/error.log",
    '/var/log/nginx/access.log'    => "$dir/access.log",
    '/etc/ssl/chat/fullchain.pem'  => "$dir/cert.pem",
    '/etc/ssl/chat/privkey.pem'    => "$dir/key.pem",
);
for my $from (sort keys %paths) {
    ok $conf =~ s/\Q$from\E/$paths{$from}/g, "production.conf names $from";
}

open my $out, '>', "$dir/production.conf" or die $!;
print {$out} $conf;
close $out;

my $nginx = nginx_binary();
my $log = `$nginx -t -p $dir/ -c $dir/production.conf 2>&1`;
is $?, 0, 'nginx -t takes conf/production.conf' or diag($log);
like $log, qr/test is successful/, 'nginx says the test is successful';

unlike $conf, qr/^\s*chat_dev_codes\s+on/m, 'no development codes';
unlike $conf, qr/chat_ws_echo/, 'no echo endpoint';
like $conf, qr/^\s*chat_sms_relay\s+\/sms;/m, 'codes go to an SMS relay';
like $conf, qr/location = \/metrics \{[^}]*deny\s+all;/s,
     'metrics behind allow/deny';
like $conf, qr/access_log \S+ chat;/, 'the access log leaves tokens out';

done_testing();
