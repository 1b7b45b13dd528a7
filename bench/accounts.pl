#!/usr/bin/perl
# Accounts API throughput: P client processes, each looping
# register -> verify -> GET /v1/me with a new phone number, for D seconds.
# Needs a server with chat_dev_codes on, e.g. `make run` in another
# terminal:
#
#   perl bench/accounts.pl [base_url] [processes] [seconds]
#   perl bench/accounts.pl http://127.0.0.1:8080 8 10
#
# Then, for GET /v1/me alone, wrk with the token it prints:
#   wrk -t2 -c64 -d10s -H "Authorization: Bearer TOKEN" \
#       http://127.0.0.1:8080/v1/me

use strict;
use warnings;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use JSON::PP;
use Time::HiRes qw(time);

my $base = shift // 'http://127.0.0.1:8080';
my $procs = shift // 8;
my $secs = shift // 10;
my $json = JSON::PP->new;

pipe(my $r, my $w) or die;

for my $p (1 .. $procs) {
    next if fork;
    close $r;
    my $http = Client->new($base);
    my ($ok, $err, $token) = (0, 0, '');
    my $end = time + $secs;
    my $n = 0;
    while (time < $end) {
        my $mobile = sprintf '+1%03d%07d', 200 + $p, $$ * 1000 + $n++ % 1000
                                                     + int(rand 1e6);
        my $reg = $http->post("$base/v1/register",
                              { content => qq({"mobile":"$mobile"}) });
        if ($reg->{status} != 202) { $err++; next }
        my $code = $json->decode($reg->{content})->{dev_code};
        my $ver = $http->post("$base/v1/verify", { content =>
            qq({"mobile":"$mobile","code":"$code","device_name":"bench"}) });
        if ($ver->{status} != 200) { $err++; next }
        $token = $json->decode($ver->{content})->{token};
        my $me = $http->get("$base/v1/me",
                            { headers => { Authorization => "Bearer $token" } });
        if ($me->{status} != 200) { $err++; next }
        $ok++;
    }
    print $w "$ok $err $token\n";
    exit 0;
}

close $w;
my ($ok, $err, $token) = (0, 0, '');
while (<$r>) {
    my @f = split;
    $ok += $f[0];
    $err += $f[1];
    $token = $f[2] if $f[2];
}
1 while wait != -1;

printf "%d processes, %d s: %d register+verify+me rounds (%.0f/s, "
    . "%.0f HTTP requests/s), %d errors\n",
    $procs, $secs, $ok, $ok / $secs, 3 * $ok / $secs, $err;
print "a token for wrk: $token\n";


# One keep-alive connection; each request leaves in one write (a request
# split in two writes meets Nagle and delayed ACKs: 40 ms a request).
package Client;

use Socket qw(IPPROTO_TCP TCP_NODELAY);

sub new {
    my ($class, $base) = @_;
    my ($host) = $base =~ m{^http://([^/]+)} or die "http:// URL expected";
    my $self = bless { host => $host }, $class;
    $self->connect;
    return $self;
}

sub connect {
    my ($self) = @_;
    $self->{s} = IO::Socket::INET->new(PeerAddr => $self->{host})
        or die "connect: $!";
    setsockopt($self->{s}, IPPROTO_TCP, TCP_NODELAY, 1);
}

sub get { my ($self, $url, $o) = @_; $self->request(GET => $url, $o) }
sub post { my ($self, $url, $o) = @_; $self->request(POST => $url, $o) }

sub request {
    my ($self, $method, $url, $o) = @_;
    my ($path) = $url =~ m{^http://[^/]+(/.*)$};
    my $body = $o->{content} // '';
    my $h = join '', map { "$_: $o->{headers}{$_}\r\n" }
                         keys %{ $o->{headers} // {} };
    my $req = "$method $path HTTP/1.1\r\nHost: $self->{host}\r\n$h"
            . "Content-Length: " . length($body) . "\r\n\r\n$body";
    syswrite $self->{s}, $req;
    my $buf = '';
    until ($buf =~ /\r\n\r\n/
           && length($buf) >= index($buf, "\r\n\r\n") + 4
                              + (($buf =~ /Content-Length: (\d+)/i)[0] // 0))
    {
        next if sysread($self->{s}, $buf, 65536, length $buf);
        die "read: $!" if length $buf;

        # keepalive_requests reached: the server closed between requests
        $self->connect;
        syswrite $self->{s}, $req;
    }
    my ($status) = $buf =~ m{^HTTP/1.1 (\d+)};
    my ($content) = $buf =~ /\r\n\r\n(.*)$/s;
    return { status => $status, content => $content };
}
