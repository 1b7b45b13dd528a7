#!/usr/bin/perl
# Idle WebSocket memory: opens N connections to chat_ws_echo on one nginx
# worker and reports the worker's RSS growth per connection.
#
#   perl bench/ws_idle.pl [N] [deflate]      (default N=10000; run `make` first)
#
# It starts its own nginx on a free loopback port and stops it at the end.

use strict;
use warnings;
use IO::Socket::INET;
use File::Temp qw(tempdir);
use MIME::Base64;
use Time::HiRes qw(sleep time);

my $n = shift // 10000;
my $deflate = (shift // '') eq 'deflate';
my $nginx = $ENV{CHAT_NGINX} // '/usr/sbin/nginx';
my $modules = $ENV{CHAT_MODULES} // 'build/modules';
$modules = `readlink -f $modules`; chomp $modules;

my $sock = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1:0')
    or die "no port: $!";
my $port = $sock->sockport;
close $sock;

my $prefix = tempdir(CLEANUP => 1);
mkdir "$prefix/$_" for qw(conf logs);
chmod 0777, $prefix, "$prefix/logs";

open my $fh, '>', "$prefix/conf/nginx.conf" or die;
print $fh <<"CONF";
load_module $modules/ngx_chat_module.so;
load_module $modules/ngx_asset_module.so;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections @{[ $n + 100 ]}; }
http {
    access_log off;
    client_body_temp_path $prefix/logs;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location /echo { chat_ws_echo; }
    }
}
CONF
close $fh;

system($nginx, '-p', $prefix, '-c', 'conf/nginx.conf') == 0
    or die "nginx did not start";
sleep 0.5;

my $master = `cat $prefix/logs/nginx.pid`; chomp $master;
my $worker = `pgrep -P $master`; chomp $worker;

sub rss_kib {
    open my $s, '<', "/proc/$worker/status" or die "no worker: $!";
    while (<$s>) { return $1 if /^VmRSS:\s+(\d+)/ }
}

# warm up: one connection and its echo touch the code paths once
my @conns = (ws_open());
my $before = rss_kib();
my $t0 = time;

for (2 .. $n) {
    push @conns, ws_open();
}

my $opened = time - $t0;
sleep 1;
my $after = rss_kib();

printf "connections: %d (deflate %s), opened in %.1f s\n",
    scalar @conns, $deflate ? 'on' : 'off', $opened;
printf "worker RSS: %d KiB before, %d KiB after: %.2f KiB per connection\n",
    $before, $after, ($after - $before) / ($n - 1);

close $_ for @conns;
system($nginx, '-p', $prefix, '-c', 'conf/nginx.conf', '-s', 'stop');
sleep 0.5;

sub ws_open {
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
        or die "connect: $! (raise ulimit -n?)";
    my $key = encode_base64(join('', map { chr rand 256 } 1 .. 16), '');
    my $ext = $deflate
        ? "Sec-WebSocket-Extensions: permessage-deflate\r\n" : '';
    print $s "GET /echo HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: $key\r\n$ext\r\n";
    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        sysread($s, $buf, 4096, length $buf) or die "handshake: $!";
    }
    die "no 101: $buf" unless $buf =~ m{^HTTP/1.1 101};
    return $s;
}
