#!/usr/bin/perl
# Idle chat session memory: N users sign up, each opens an authenticated
# chat WebSocket (ready, synced, user channel subscribed), and the growth
# of the nginx workers' RSS is divided by N. Against `make run`:
#
#   perl bench/chat_idle.pl [N] [base]     (default 3000, http://127.0.0.1:8080)
#
# Raise `ulimit -n` above N first. Signs up N new users (chat_dev_codes on).

use strict;
use warnings;
use IO::Socket::INET;
use MIME::Base64;
use JSON::PP;
use Time::HiRes qw(time);

my $n = shift // 3000;
my $base = shift // 'http://127.0.0.1:8080';
my ($hostport) = $base =~ m{^http://([^/]+)} or die "http:// URL expected";
my $json = JSON::PP->new;

sub http {
    my ($method, $path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $hostport) or die "connect: $!";
    $body //= '';
    print $s "$method $path HTTP/1.0\r\nHost: x\r\nContent-Length: "
             . length($body) . "\r\n\r\n$body";
    local $/;
    my $r = <$s>;
    my ($st) = $r =~ m{^HTTP/1\.\d (\d+)};
    my ($b) = $r =~ /\r\n\r\n(.*)$/s;
    return ($st, $b ? eval { $json->decode($b) } : undef);
}

sub workers_rss {
    my $kib = 0;
    for my $pid (split ' ', `pgrep -f "nginx: worker process"`) {
        open my $f, '<', "/proc/$pid/status" or next;
        while (<$f>) { $kib += $1 if /^VmRSS:\s+(\d+)/ }
    }
    return $kib;
}

my @tokens;
my $t0 = time;
for my $i (1 .. $n) {
    my $m = sprintf '+1%03d%07d', 300 + $i % 600, int rand 1e7;
    my ($st, $r) = http(POST => '/v1/register', qq({"mobile":"$m"}));
    next unless $st == 202;
    ($st, $r) = http(POST => '/v1/verify',
                     qq({"mobile":"$m","code":"$r->{dev_code}"}));
    push @tokens, $r->{token} if $st == 200;
}
printf "signed up %d users in %.1f s\n", scalar @tokens, time - $t0;

my $before = workers_rss();
my @socks;
for my $token (@tokens) {
    my $s = IO::Socket::INET->new(PeerAddr => $hostport) or die "$!";
    my $key = encode_base64(join('', map { chr rand 256 } 1 .. 16), '');
    print $s "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
             . "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             . "Sec-WebSocket-Key: $key\r\n"
             . "Authorization: Bearer $token\r\n\r\n";
    my $buf = '';
    # the 101, then "ready" and "synced" (two small unmasked text frames)
    until ($buf =~ /"synced"/) {
        sysread($s, $buf, 4096, length $buf) or die "socket closed: $buf";
    }
    push @socks, $s;
}
sleep 2;
my $after = workers_rss();

printf "%d authenticated chat sessions: workers' RSS %d -> %d KiB, "
       . "%.2f KiB per session\n", scalar @socks, $before, $after,
       ($after - $before) / @socks;
