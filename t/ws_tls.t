# A wss:// conversation through nginx's own TLS (conf/production.conf
# serves the chat over TLS only): two devices authenticate, one sends,
# the other gets it live, with a throwaway certificate checked by the
# clients.
#
#   scripts/test.sh t/ws_tls.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use File::Temp qw(tempdir);
use JSON::PP ();

needs_stack();
plan skip_all => 'IO::Socket::SSL is not installed'
    unless eval { require IO::Socket::SSL; 1 };
plan skip_all => 'no openssl to make a certificate'
    unless system('openssl version >/dev/null 2>&1') == 0;

my $dir = tempdir('chat-tls-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
is system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
          . "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
          . "-keyout $dir/key.pem -out $dir/cert.pem >/dev/null 2>&1"), 0,
   'a throwaway certificate';
chmod 0644, "$dir/key.pem";

my $tls = port2();
my $http = chat_http_config(extra => <<"END");

server {
    listen 127.0.0.1:$tls ssl;
    ssl_certificate     $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    location = /v1/ws { chat_ws; }
}
END
ok nginx_start(workers => 2, http_config => $http,
               config => <<'END'),
location /v1/ { chat_api; }
END
   'nginx starts with a TLS server';

my $JSON = JSON::PP->new->utf8;
my $ua = api_signup(device_name => 'a');
my $ub = api_signup(device_name => 'b');
my $chat = api_chat_create($ua, { type => 'direct',
                                  user_id => $ub->{user_id} })->{chat_id};

# over wss://, with permessage-deflate: "ready", then "synced"
sub wss_open {
    my ($acct) = @_;
    my $ws = Test::Chat::WS->connect(port => $tls, path => '/v1/ws',
                                     tls => { ca => "$dir/cert.pem" },
                                     deflate => 1, timeout => 10);
    return undef unless ($ws->status // 0) == 101;
    $ws->send_json({ type => 'auth', token => $acct->{token} });
    while (my $ev = $ws->recv_json(10)) {
        return $ws if $ev->{type} eq 'synced';
    }
    return undef;
}

sub next_of {
    my ($ws, $type) = @_;
    while (my $ev = $ws->recv_json(10)) {
        return $ev if $ev->{type} eq $type;
    }
    return undef;
}

my $wa = wss_open($ua);
ok $wa, 'a over wss://: ready, synced';
ok $wa && $wa->deflate, 'a: permessage-deflate over TLS';
my $wb = wss_open($ub);
ok $wb, 'b over wss://: ready, synced';

$wa->send_json({ type => 'send', id => 'tls-1', chat_id => $chat,
                 text => 'over TLS' }) if $wa;
my $sent = $wa && next_of($wa, 'sent');
is $sent && $sent->{seq}, 1, 'a gets "sent"';
my $msg = $wb && next_of($wb, 'msg');
is $msg && $msg->{text}, 'over TLS', 'b gets the message live';
$wb->send_json({ type => 'ack', chat_id => $chat, seq => 1 }) if $wb;
my $rcpt = $wa && next_of($wa, 'receipt');
is $rcpt && $rcpt->{status}, 'delivered', 'a gets the delivered receipt';
is_deeply [map { $_ ? $_->violations : () } $wa, $wb], [],
          'frames well-formed both ways';

$_ && $_->close(1000) for $wa, $wb;
ok nginx_stop(), 'nginx stops';
check_error_log(name => 'tls', no_error_log => ['[error]']);

done_testing();
