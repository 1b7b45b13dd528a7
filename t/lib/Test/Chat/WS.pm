package Test::Chat::WS;

# A small, strict WebSocket client (RFC 6455, RFC 7692) for the test suites.
# It is deliberately picky about what the server sends: every deviation it
# notices is recorded in ->violations, which the harness asserts is empty.

use strict;
use warnings;

use Carp qw(croak);
use Compress::Raw::Zlib qw(Z_OK Z_BUF_ERROR Z_STREAM_END Z_SYNC_FLUSH);
use Digest::SHA qw(sha1);
use Errno qw(EAGAIN EINTR EWOULDBLOCK EINPROGRESS);
use Exporter qw(import);
use IO::Select;
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64 decode_base64);
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_RCVBUF SO_SNDBUF
              inet_aton pack_sockaddr_in);
use Time::HiRes qw(time sleep);
use JSON::PP ();

our @EXPORT_OK = qw(ws_frame ws_text ws_binary ws_cont ws_ping ws_pong
                    ws_close ws_close_payload ws_handshake ws_accept_for
                    ws_deflate_raw ws_inflate_raw ws_opcode ws_opname
                    ws_random_bytes);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

use constant GUID => '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
use constant TAIL => "\x00\x00\xff\xff";

$SIG{PIPE} = 'IGNORE';

my %OPCODE = (cont => 0, continuation => 0, text => 1, binary => 2,
              close => 8, ping => 9, pong => 10);
my %OPNAME = (0 => 'cont', 1 => 'text', 2 => 'binary', 8 => 'close',
              9 => 'ping', 10 => 'pong');


# ---------------------------------------------------------------------------
# Pure helpers: frame building, close payloads, deflate.

sub ws_opcode {
    my ($op) = @_;
    return $op if $op =~ /^\d+$/;
    return $OPCODE{lc $op} // croak "unknown opcode name '$op'";
}


sub ws_opname {
    my ($op) = @_;
    return $OPNAME{$op} // "op$op";
}


sub ws_random_bytes {
    my ($n) = @_;
    return join '', map { chr int rand 256 } 1 .. $n;
}


sub _bytes {
    my ($s) = @_;
    $s = '' unless defined $s;
    utf8::encode($s) if utf8::is_utf8($s);
    return $s;
}


# ws_frame(opcode => 1, payload => 'x', fin => 1, rsv1 => 0, rsv2 => 0,
#          rsv3 => 0, mask => 1 | 0 | 'four', len_bits => 7|16|64,
#          len => declared length (a lie, to test the server's checks))
sub ws_frame {
    my %o = @_;
    my $payload = _bytes($o{payload});
    my $opcode = ws_opcode($o{opcode} // 1);
    my $fin = $o{fin} // 1;
    my $mask = $o{mask} // 1;
    my $len = $o{len} // length $payload;

    my $b0 = ($fin ? 0x80 : 0) | ($o{rsv1} ? 0x40 : 0)
             | ($o{rsv2} ? 0x20 : 0) | ($o{rsv3} ? 0x10 : 0) | ($opcode & 0x0f);
    my $mbit = $mask ? 0x80 : 0;

    my $bits = $o{len_bits}
               // ($len <= 125 ? 7 : $len <= 0xffff ? 16 : 64);
    my $hdr;
    if ($bits == 7) {
        croak "length $len does not fit in 7 bits" if $len > 125;
        $hdr = pack 'CC', $b0, $mbit | $len;
    } elsif ($bits == 16) {
        croak "length $len does not fit in 16 bits" if $len > 0xffff;
        $hdr = pack 'CCn', $b0, $mbit | 126, $len;
    } elsif ($bits == 64) {
        $hdr = pack 'CCQ>', $b0, $mbit | 127, $len;
    } else {
        croak "len_bits must be 7, 16 or 64";
    }

    return $hdr . $payload unless $mask;

    my $key = length($mask) == 4 && $mask !~ /^\d$/ ? $mask
              : ws_random_bytes(4);
    return $hdr . $key . _xor_mask($payload, $key);
}


sub _xor_mask {
    my ($data, $key) = @_;
    return '' unless length $data;
    my $k = $key x (int(length($data) / 4) + 1);
    return $data ^ substr($k, 0, length $data);
}


sub ws_text   { my $p = shift; ws_frame(opcode => 1, payload => $p, @_) }
sub ws_binary { my $p = shift; ws_frame(opcode => 2, payload => $p, @_) }
sub ws_cont   { my $p = shift; ws_frame(opcode => 0, payload => $p, @_) }
sub ws_ping   { my $p = shift; ws_frame(opcode => 9, payload => $p, @_) }
sub ws_pong   { my $p = shift; ws_frame(opcode => 10, payload => $p, @_) }


sub ws_close_payload {
    my ($code, $reason) = @_;
    return '' unless defined $code;
    return pack('n', $code) . _bytes($reason);
}


sub ws_close {
    my ($code, $reason, %o) = @_;
    return ws_frame(opcode => 8, payload => ws_close_payload($code, $reason),
                    %o);
}


sub ws_accept_for {
    my ($key) = @_;
    my $a = encode_base64(sha1($key . GUID), '');
    return $a;
}


# The raw bytes of an upgrade request, for --- raw_request blocks.
sub ws_handshake {
    my %o = @_;
    my $path = $o{path} // '/echo';
    my $key = $o{key} // 'dGhlIHNhbXBsZSBub25jZQ==';
    my $req = "GET $path HTTP/1.1\r\n"
              . "Host: " . ($o{host} // 'localhost') . "\r\n"
              . "Upgrade: websocket\r\n"
              . "Connection: Upgrade\r\n"
              . "Sec-WebSocket-Key: $key\r\n"
              . "Sec-WebSocket-Version: 13\r\n";
    $req .= "Sec-WebSocket-Extensions: $o{extensions}\r\n"
        if defined $o{extensions};
    $req .= "$_\r\n" for @{ $o{headers} || [] };
    return $req . "\r\n";
}


# Compress one message with a fresh context; the 00 00 ff ff tail is removed.
sub ws_deflate_raw {
    my ($data, $bits) = @_;
    my $d = _new_deflater($bits);
    return _deflate_message($d, _bytes($data));
}


sub ws_inflate_raw {
    my ($data, $bits) = @_;
    my $i = _new_inflater($bits);
    my ($out, $err) = _inflate_message($i, $data, $bits);
    croak "inflate: $err" if defined $err;
    return $out;
}


sub _new_deflater {
    my ($bits) = @_;
    $bits //= 15;
    # zlib cannot produce a raw stream with an 8-bit window; 9 is the
    # smallest it supports (and the closest to what the peer asked).
    $bits = 9 if $bits < 9;
    my ($d, $st) = Compress::Raw::Zlib::Deflate->new(
        -WindowBits => -$bits, -AppendOutput => 1, -Bufsize => 65536);
    croak "deflateInit: $st" unless $d;
    return $d;
}


sub _deflate_message {
    my ($d, $data) = @_;
    my $out = '';
    my $st = $d->deflate($data, $out);
    croak "deflate: $st" unless $st == Z_OK;
    # Compress::Raw::Zlib calls deflate() again when a flush exactly fills
    # its output buffer, which emits a second empty block: give it room.
    my $tail = ' ' x (length($data) + 65536);
    $tail = '';
    $st = $d->flush($tail, Z_SYNC_FLUSH);
    croak "deflate flush: $st" unless $st == Z_OK;
    $out .= $tail;
    croak "deflate output lacks the sync-flush tail"
        unless substr($out, -4) eq TAIL;
    return substr($out, 0, -4);
}


sub _new_inflater {
    my ($bits) = @_;
    $bits //= 15;
    # LimitOutput with a small buffer makes zlib check every back reference
    # against the window: a peer that ignores max_window_bits is caught.
    my ($i, $st) = Compress::Raw::Zlib::Inflate->new(
        -WindowBits => -$bits, -LimitOutput => 1,
        -Bufsize => $bits < 15 ? 256 : 65536);
    croak "inflateInit: $st" unless $i;
    return $i;
}


sub _inflate_message {
    my ($i, $data, $bits, $limit) = @_;
    my $in = $data . TAIL;
    my $out = '';
    my $chunk;
    for (;;) {
        # A fresh buffer each time: its size bounds one zlib call's output.
        undef $chunk;
        my $st = $i->inflate($in, $chunk);
        $out .= $chunk if defined $chunk;
        if ($st != Z_OK && $st != Z_BUF_ERROR && $st != Z_STREAM_END) {
            return (undef, "$st (" . ($i->msg // '') . ")");
        }
        return (undef, "inflated size over $limit")
            if defined $limit && length $out > $limit;
        last if !length $in && !length($chunk // '');
        last if $st == Z_STREAM_END;
    }
    return ($out, undef);
}


# ---------------------------------------------------------------------------
# The client object.

sub connect {
    my ($class, %o) = @_;
    my $self = bless {
        host       => $o{host} // '127.0.0.1',
        port       => $o{port} // croak("connect: port is required"),
        path       => $o{path} // '/echo',
        timeout    => $o{timeout} // 5,
        rbuf       => '',
        violations => [],
        eof        => 0,
        closed_sent => 0,
        client_takeover => $o{client_takeover},
    }, $class;

    $self->_open(%o) or return $self;

    my $key = $o{key} // encode_base64(ws_random_bytes(16), '');
    $self->{key} = $key;

    my @hdr = (
        Host                    => $o{host_header} // 'localhost',
        Upgrade                 => 'websocket',
        Connection              => 'Upgrade',
        'Sec-WebSocket-Key'     => $key,
        'Sec-WebSocket-Version' => $o{version} // 13,
    );
    if ($o{protocols}) {
        push @hdr, 'Sec-WebSocket-Protocol' => join ', ', @{ $o{protocols} };
    }
    if (my $offer = _deflate_offer($o{deflate})) {
        push @hdr, 'Sec-WebSocket-Extensions' => $offer;
        $self->{deflate_offer} = $offer;
        $self->{offered_client_no_takeover} =
            $offer =~ /client_no_context_takeover/ ? 1 : 0;
    }
    @hdr = _merge_headers(\@hdr, $o{headers} || []);

    my $method = $o{method} // 'GET';
    my $httpv = $o{http_version} // '1.1';
    my $req = "$method $self->{path} HTTP/$httpv\r\n";
    while (my ($n, $v) = splice @hdr, 0, 2) {
        $req .= "$n: $v\r\n";
    }
    $req .= "\r\n";
    $req .= $o{pipeline} if defined $o{pipeline};
    $self->{request} = $req;

    $self->send_raw($req) or return $self;
    $self->_read_response;
    return $self;
}


sub _deflate_offer {
    my ($d) = @_;
    return undef unless $d;
    return 'permessage-deflate' if !ref $d && $d =~ /^(1|on)$/;
    return $d unless ref $d;
    return join ', ', map { _deflate_offer($_) } @$d if ref $d eq 'ARRAY';
    my @p = ('permessage-deflate');
    for my $k (qw(client_no_context_takeover server_no_context_takeover)) {
        push @p, $k if $d->{$k};
    }
    for my $k (qw(client_max_window_bits server_max_window_bits)) {
        next unless defined $d->{$k};
        push @p, $d->{$k} eq '1' || $d->{$k} eq '' ? $k : "$k=$d->{$k}";
    }
    return join '; ', @p;
}


# Defaults first; a header named again replaces it, undef removes it.
sub _merge_headers {
    my ($defaults, $extra) = @_;
    my @out = @$defaults;
    my @add;
    for (my $i = 0; $i < @$extra; $i += 2) {
        my ($n, $v) = @$extra[$i, $i + 1];
        if ($n =~ s/^\+//) {
            push @add, $n, $v;
            next;
        }
        my $found = 0;
        for (my $j = 0; $j < @out; $j += 2) {
            next unless lc $out[$j] eq lc $n;
            $found = 1;
            if (defined $v) {
                $out[$j + 1] = $v;
            } else {
                splice @out, $j, 2;
                $j -= 2;
            }
        }
        push @add, $n, $v if !$found && defined $v;
    }
    return (@out, @add);
}


sub _open {
    my ($self, %o) = @_;
    my $sock = IO::Socket::INET->new(Proto => 'tcp')
        or return $self->_fail("socket: $!");
    if ($o{rcvbuf}) {
        setsockopt($sock, SOL_SOCKET, SO_RCVBUF, pack('i', $o{rcvbuf}))
            or return $self->_fail("SO_RCVBUF: $!");
    }
    if ($o{sndbuf}) {
        setsockopt($sock, SOL_SOCKET, SO_SNDBUF, pack('i', $o{sndbuf}))
            or return $self->_fail("SO_SNDBUF: $!");
    }
    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
    $sock->blocking(0);
    my $addr = pack_sockaddr_in($self->{port}, inet_aton($self->{host}));
    unless (CORE::connect($sock, $addr)) {
        return $self->_fail("connect: $!") unless $! == EINPROGRESS;
        my $sel = IO::Select->new($sock);
        return $self->_fail("connect: timeout")
            unless $sel->can_write($self->{timeout});
        my $err = unpack 'i', getsockopt($sock, SOL_SOCKET,
                                          Socket::SO_ERROR());
        if ($err) {
            $! = $err;
            return $self->_fail("connect: $!");
        }
    }
    # tls => { ca => 'cert.pem' }: wss://, the server's certificate
    # checked against that CA
    if ($o{tls}) {
        require IO::Socket::SSL;
        $sock->blocking(1);
        IO::Socket::SSL->start_SSL($sock,
            SSL_hostname => 'localhost',
            SSL_verifycn_name => 'localhost',
            SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_PEER(),
            SSL_ca_file => $o{tls}{ca},
            Timeout => $self->{timeout})
            or return $self->_fail('TLS: ' . IO::Socket::SSL::errstr());
        $sock->blocking(0);
        $self->{tls} = 1;
    }
    $self->{sock} = $sock;
    return 1;
}


sub _fail {
    my ($self, $msg) = @_;
    $self->{error} = $msg;
    return 0;
}


sub _read_response {
    my ($self) = @_;
    my $deadline = time + $self->{timeout};
    while ($self->{rbuf} !~ /\r\n\r\n/) {
        my $n = $self->_fill($deadline);
        unless ($n) {
            $self->_fail(length $self->{rbuf}
                ? "incomplete response head" : "no response")
                unless $self->{error};
            return;
        }
    }
    $self->{rbuf} =~ s/\A(.*?)\r\n\r\n//s;
    my $head = $1;
    $self->{response_head} = $head;
    my ($status_line, @lines) = split /\r\n/, $head;
    $self->{status_line} = $status_line;
    ($self->{status}) = $status_line =~ m{^HTTP/1\.[01] (\d{3})};
    $self->{status} //= 0;
    my %h;
    my @raw;
    for (@lines) {
        my ($n, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        push @raw, $n, $v;
        $n = lc $n;
        $h{$n} = exists $h{$n} ? "$h{$n}, $v" : $v;
    }
    $self->{headers} = \%h;
    $self->{raw_headers} = \@raw;

    if ($self->{status} == 101) {
        $self->_check_upgrade;
        return;
    }
    $self->_read_body($deadline);
}


sub _read_body {
    my ($self, $deadline) = @_;
    my $h = $self->{headers};
    if (defined $h->{'content-length'}) {
        my $len = $h->{'content-length'};
        while (length $self->{rbuf} < $len) {
            last unless $self->_fill($deadline);
        }
        $self->{body} = substr $self->{rbuf}, 0, $len, '';
        return;
    }
    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        my $body = '';
        for (;;) {
            while ($self->{rbuf} !~ /\r\n/) {
                last unless $self->_fill($deadline);
            }
            last unless $self->{rbuf} =~ s/\A([0-9a-fA-F]+)[^\r]*\r\n//;
            my $n = hex $1;
            while (length $self->{rbuf} < $n + 2) {
                last unless $self->_fill($deadline);
            }
            $body .= substr $self->{rbuf}, 0, $n, '';
            substr $self->{rbuf}, 0, 2, '';
            last if $n == 0;
        }
        $self->{body} = $body;
        return;
    }
    # No length: read what comes until EOF, but not long.
    my $short = time + 1;
    $deadline = $short if $short < $deadline;
    1 while $self->_fill($deadline);
    $self->{body} = $self->{rbuf};
    $self->{rbuf} = '';
}


sub _check_upgrade {
    my ($self) = @_;
    my $h = $self->{headers};
    my $want = ws_accept_for($self->{key});
    my $got = $h->{'sec-websocket-accept'} // '';
    croak "Sec-WebSocket-Accept is '$got', expected '$want' "
          . "for key '$self->{key}'" unless $got eq $want;
    $self->_violation("101 without 'Upgrade: websocket'")
        unless ($h->{upgrade} // '') =~ /^\s*websocket\s*$/i;
    $self->_violation("101 without 'Connection: upgrade'")
        unless ($h->{connection} // '') =~ /(^|,)\s*upgrade\s*(,|$)/i;
    $self->{open} = 1;
    $self->_parse_extensions($h->{'sec-websocket-extensions'});
}


# Parse the accepted extension; anything we did not offer is a violation.
sub _parse_extensions {
    my ($self, $value) = @_;
    $self->{deflate} = undef;
    return unless defined $value && length $value;

    my @exts = _split_extensions($value);
    $self->_violation("server accepted more than one extension: $value")
        if @exts > 1;
    my ($name, @params) = @{ $exts[0] };
    unless (lc $name eq 'permessage-deflate' && $self->{deflate_offer}) {
        $self->_violation("server accepted an extension not offered: $value");
        return;
    }
    my %p;
    for my $p (@params) {
        my ($k, $v) = @$p;
        $k = lc $k;
        $self->_violation("duplicate parameter $k in '$value'")
            if exists $p{$k};
        if ($k eq 'server_no_context_takeover'
            || $k eq 'client_no_context_takeover')
        {
            $self->_violation("$k has a value in '$value'") if defined $v;
            $p{$k} = 1;
        } elsif ($k eq 'server_max_window_bits'
                 || $k eq 'client_max_window_bits')
        {
            if (!defined $v || $v !~ /^(?:[89]|1[0-5])$/) {
                $self->_violation("$k needs a value 8..15 in '$value'");
                next;
            }
            $self->_violation("client_max_window_bits answered but not "
                              . "offered: '$value'")
                if $k eq 'client_max_window_bits'
                   && $self->{deflate_offer} !~ /client_max_window_bits/;
            $p{$k} = $v;
        } else {
            $self->_violation("unknown parameter $k in '$value'");
        }
    }
    $self->{deflate} = \%p;
    $self->{deflater} = undef;
    $self->{inflater} = undef;
}


# Returns ([name, [param, value|undef], ...], ...), honouring quoted values.
sub _split_extensions {
    my ($value) = @_;
    my @exts;
    my @cur;
    my $s = $value;
    while (length $s) {
        $s =~ s/^\s+//;
        last unless length $s;
        if ($s =~ s/^([^;,=\s]+)\s*//) {
            my $tok = $1;
            my $v;
            if ($s =~ s/^=\s*//) {
                if ($s =~ s/^"((?:[^"\\]|\\.)*)"\s*//) {
                    ($v = $1) =~ s/\\(.)/$1/g;
                } elsif ($s =~ s/^([^;,\s]*)\s*//) {
                    $v = $1;
                }
            }
            if (@cur) {
                push @cur, [$tok, $v];
            } else {
                push @cur, $tok;
            }
        }
        if ($s =~ s/^;//) {
            next;
        } elsif ($s =~ s/^,// || !length $s) {
            push @exts, [@cur] if @cur;
            @cur = ();
        } else {
            $s = substr $s, 1;    # junk: skip a character
        }
    }
    push @exts, [@cur] if @cur;
    return @exts;
}


sub _violation {
    my ($self, $msg) = @_;
    push @{ $self->{violations} }, $msg;
}


# ---------------------------------------------------------------------------
# Accessors.

sub status      { $_[0]{status} }
sub status_line { $_[0]{status_line} }
sub headers     { $_[0]{headers} || {} }
sub header      { $_[0]->headers->{ lc $_[1] } }
sub body        { $_[0]{body} }
sub error       { $_[0]{error} }
sub is_open     { $_[0]{open} && !$_[0]{eof} }
sub eof         { $_[0]{eof} }
sub reset       { $_[0]{reset} }
sub socket      { $_[0]{sock} }
sub deflate     { $_[0]{deflate} }
sub violations  { @{ $_[0]{violations} } }
sub key         { $_[0]{key} }
sub protocol    { $_[0]->header('Sec-WebSocket-Protocol') }


# ---------------------------------------------------------------------------
# Sending.

# send_raw($bytes, split => n | chunks => [sizes], delay => seconds)
sub send_raw {
    my ($self, $bytes, %o) = @_;
    return $self->_fail("not connected") unless $self->{sock};
    my @pieces;
    if ($o{chunks}) {
        my $off = 0;
        for my $n (@{ $o{chunks} }) {
            last if $off >= length $bytes;
            push @pieces, substr $bytes, $off, $n;
            $off += $n;
        }
        push @pieces, substr $bytes, $off if $off < length $bytes;
    } elsif ($o{split}) {
        push @pieces, substr $bytes, $_ * $o{split}, $o{split}
            for 0 .. int((length($bytes) - 1) / $o{split});
    } else {
        @pieces = ($bytes);
    }
    my $delay = $o{delay} // (@pieces > 1 ? 0.002 : 0);
    my $first = 1;
    for my $p (@pieces) {
        # paced on purpose: the pieces are to reach the server in separate
        # reads
        sleep $delay if $delay && !$first;
        $first = 0;
        $self->_write_all($p) or return 0;
    }
    return 1;
}


sub _write_all {
    my ($self, $data) = @_;
    my $deadline = time + $self->{timeout};
    my $sel = IO::Select->new($self->{sock});
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite $self->{sock}, $data, length($data) - $off, $off;
        if (defined $n) {
            $off += $n;
            next;
        }
        if ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR) {
            my $left = $deadline - time;
            return $self->_fail("write timeout") if $left <= 0;
            $sel->can_write($left < 0.1 ? $left : 0.1);
            next;
        }
        $self->{write_error} = "$!";
        return $self->_fail("write: $!");
    }
    return 1;
}


# Non-blocking write attempt: returns bytes written, 0 when the buffer is
# full, undef on error (for the slow-reader test).
sub try_send_raw {
    my ($self, $data) = @_;
    my $n = syswrite $self->{sock}, $data;
    return $n if defined $n;
    return 0 if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
    $self->{write_error} = "$!";
    return undef;
}


sub write_error { $_[0]{write_error} }


sub send_frame {
    my ($self, %o) = @_;
    my %send = map { $_ => delete $o{$_} } grep { exists $o{$_} }
               qw(split chunks delay);
    return $self->send_raw(ws_frame(%o), %send);
}


# Build a data message's payload: compressed when deflate was negotiated
# (unless compress => 0). Returns (payload, rsv1).
sub message_payload {
    my ($self, $data, %o) = @_;
    $data = _bytes($data);
    my $compress = $o{compress} // ($self->{deflate} ? 1 : 0);
    return ($data, 0) unless $compress;
    return ($self->deflate_message($data), 1);
}


# Compress with the client's context, resetting it when the negotiation
# says the client must not take over its context.
sub deflate_message {
    my ($self, $data) = @_;
    my $p = $self->{deflate} || {};
    my $reset = $p->{client_no_context_takeover}
                || $self->{offered_client_no_takeover};
    $reset = !$self->{client_takeover} if defined $self->{client_takeover};
    $self->{deflater} = undef if $reset;
    $self->{deflater} //= _new_deflater($p->{client_max_window_bits});
    return _deflate_message($self->{deflater}, _bytes($data));
}


sub send_message {
    my ($self, $opcode, $data, %o) = @_;
    my ($payload, $rsv1) = $self->message_payload($data, %o);
    my $frag = delete $o{fragments};
    delete $o{compress};
    if ($frag && $frag > 1) {
        my $size = int((length($payload) + $frag - 1) / $frag) || 1;
        my @parts = map { substr $payload, $_ * $size, $size } 0 .. $frag - 1;
        $parts[$_] //= '' for 0 .. $#parts;
        for my $i (0 .. $#parts) {
            $self->send_frame(opcode => $i ? 0 : $opcode,
                              payload => $parts[$i], fin => $i == $#parts,
                              rsv1 => $i ? 0 : $rsv1, %o)
                or return 0;
        }
        return 1;
    }
    return $self->send_frame(opcode => $opcode, payload => $payload,
                             rsv1 => $rsv1, %o);
}


sub send_text   { my ($s, $d, %o) = @_; $s->send_message(1, $d, %o) }
sub send_binary { my ($s, $d, %o) = @_; $s->send_message(2, $d, %o) }


sub ping {
    my ($self, $payload, %o) = @_;
    return $self->send_frame(opcode => 9, payload => $payload, %o);
}


sub pong {
    my ($self, $payload, %o) = @_;
    return $self->send_frame(opcode => 10, payload => $payload, %o);
}


sub close {
    my ($self, $code, $reason, %o) = @_;
    $self->{closed_sent} = 1;
    return $self->send_frame(opcode => 8,
                             payload => ws_close_payload($code, $reason), %o);
}


sub close_raw {
    my ($self, $payload, %o) = @_;
    $self->{closed_sent} = 1;
    return $self->send_frame(opcode => 8, payload => $payload, %o);
}


sub send_json {
    my ($self, $obj, %o) = @_;
    return $self->send_text(JSON::PP->new->canonical->utf8->encode($obj), %o);
}


# ---------------------------------------------------------------------------
# Receiving.

# Seconds until $deadline, 0 once it has passed.
sub _left {
    my ($deadline) = @_;
    my $left = $deadline - time;
    return $left > 0 ? $left : 0;
}


# Reads once into rbuf; returns bytes read, 0 on EOF/timeout/error.
sub _fill {
    my ($self, $deadline) = @_;
    return 0 unless $self->{sock};
    return 0 if $self->{eof};
    my $sel = IO::Select->new($self->{sock});
    for (;;) {
        my $left = _left($deadline);
        # TLS: bytes already decrypted do not make the socket readable
        unless (($self->{tls} && $self->{sock}->pending)
                || $sel->can_read($left))
        {
            $self->{timed_out} = 1;
            return 0;
        }
        my $n = sysread $self->{sock}, my $buf, 262144;
        if (!defined $n) {
            next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            $self->{eof} = 1;
            $self->{reset} = "$!";
            return 0;
        }
        if ($n == 0) {
            $self->{eof} = 1;
            return 0;
        }
        $self->{rbuf} .= $buf;
        return $n;
    }
}


sub _need {
    my ($self, $n, $deadline) = @_;
    while (length $self->{rbuf} < $n) {
        return 0 unless $self->_fill($deadline);
    }
    return 1;
}


# One raw frame: {fin, opcode, rsv1, rsv2, rsv3, masked, payload}, or undef
# on timeout or EOF (see ->eof).
sub recv_frame {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // $self->{timeout});
    $self->{timed_out} = 0;
    return undef unless $self->_need(2, $deadline);
    my ($b0, $b1) = unpack 'CC', $self->{rbuf};
    my $len = $b1 & 0x7f;
    my $masked = $b1 & 0x80 ? 1 : 0;
    my $hlen = 2;
    if ($len == 126) {
        return undef unless $self->_need(4, $deadline);
        $len = unpack 'n', substr $self->{rbuf}, 2, 2;
        $hlen = 4;
    } elsif ($len == 127) {
        return undef unless $self->_need(10, $deadline);
        $len = unpack 'Q>', substr $self->{rbuf}, 2, 8;
        $hlen = 10;
        if ($len > 0x7fffffff) {
            $self->_violation("server frame declares length $len");
            $self->{eof} = 1;
            return undef;
        }
    }
    $hlen += 4 if $masked;
    return undef unless $self->_need($hlen + $len, $deadline);
    my $hdr = substr $self->{rbuf}, 0, $hlen, '';
    my $payload = substr $self->{rbuf}, 0, $len, '';
    if ($masked) {
        $payload = _xor_mask($payload, substr $hdr, -4);
    }
    my $f = {
        fin    => $b0 & 0x80 ? 1 : 0,
        rsv1   => $b0 & 0x40 ? 1 : 0,
        rsv2   => $b0 & 0x20 ? 1 : 0,
        rsv3   => $b0 & 0x10 ? 1 : 0,
        opcode => $b0 & 0x0f,
        masked => $masked,
        payload => $payload,
        length => $len,
        header_length => $hlen,
    };
    $f->{type} = ws_opname($f->{opcode});
    $self->_check_frame($f);
    push @{ $self->{frames_seen} }, _frame_summary($f);
    shift @{ $self->{frames_seen} } if @{ $self->{frames_seen} } > 50;
    return $f;
}


sub _frame_summary {
    my ($f) = @_;
    my $p = $f->{payload};
    my $show = length $p > 40 ? substr($p, 0, 40) . '...' : $p;
    $show =~ s/([^\x20-\x7e])/sprintf '\\x%02x', ord $1/ge;
    return sprintf '%s fin=%d rsv=%d%d%d%s len=%d "%s"', $f->{type},
        $f->{fin}, $f->{rsv1}, $f->{rsv2}, $f->{rsv3},
        $f->{masked} ? ' MASKED' : '', length $p, $show;
}


# Frames received so far (last 50), as short strings for diagnostics.
sub frames_seen { @{ $_[0]{frames_seen} || [] } }


sub _check_frame {
    my ($self, $f) = @_;
    my $what = _frame_summary($f);
    $self->_violation("server frame is masked: $what") if $f->{masked};
    $self->_violation("server frame has RSV2/RSV3: $what")
        if $f->{rsv2} || $f->{rsv3};
    $self->_violation("server frame has RSV1 without deflate: $what")
        if $f->{rsv1} && !$self->{deflate};
    $self->_violation("server frame has a reserved opcode: $what")
        if ($f->{opcode} >= 3 && $f->{opcode} <= 7) || $f->{opcode} >= 11;
    if ($f->{opcode} >= 8) {
        $self->_violation("server control frame over 125 bytes: $what")
            if $f->{length} > 125;
        $self->_violation("server control frame fragmented: $what")
            unless $f->{fin};
        $self->_violation("server control frame with RSV1: $what")
            if $f->{rsv1};
    }
    $self->_violation("server sent a frame after its close frame: $what")
        if $self->{close_received};
    my $min = $f->{length} > 65535 ? 65536 : $f->{length} > 125 ? 126 : 0;
    my $hl = $f->{header_length} - ($f->{masked} ? 4 : 0);
    my $want_hl = $f->{length} > 65535 ? 10 : $f->{length} > 125 ? 4 : 2;
    $self->_violation("server frame length not minimally encoded: $what")
        if $hl != $want_hl;
}


# One message: fragments reassembled and inflated; control frames are
# returned as they come (pings too, unless auto_pong => 1).
# Returns {type, opcode, data, compressed, frames, code, reason} or undef.
sub recv_message {
    my ($self, $timeout, %o) = @_;
    my $deadline = time + ($timeout // $self->{timeout});
    for (;;) {
        my $left = _left($deadline);
        my $f = $self->recv_frame($left);
        return undef unless $f;
        my $op = $f->{opcode};

        if ($op >= 8) {
            if ($op == 9 && $o{auto_pong}) {
                $self->pong($f->{payload});
                next;
            }
            my $m = { type => $f->{type}, opcode => $op,
                      data => $f->{payload}, frames => 1 };
            $self->_close_received($m) if $op == 8;
            return $m;
        }

        if ($op == 0) {
            unless ($self->{partial}) {
                $self->_violation("server continuation without a message");
                next;
            }
            $self->_violation("server RSV1 on a continuation frame")
                if $f->{rsv1};
            $self->{partial}{data} .= $f->{payload};
            $self->{partial}{frames}++;
        } else {
            $self->_violation("server started a message inside another")
                if $self->{partial};
            $self->{partial} = { opcode => $op, data => $f->{payload},
                                 compressed => $f->{rsv1}, frames => 1 };
        }
        next unless $f->{fin};

        my $m = delete $self->{partial};
        $m->{type} = ws_opname($m->{opcode});
        if ($m->{compressed}) {
            $m->{raw} = $m->{data};
            my ($out, $err) = $self->_inflate($m->{data});
            if (defined $err) {
                $self->_violation("cannot inflate server message: $err");
                $m->{inflate_error} = $err;
                $out = '';
            }
            $m->{data} = $out;
        }
        if ($m->{opcode} == 1) {
            my $copy = $m->{data};
            $self->_violation("server text message is not valid UTF-8")
                unless utf8::decode($copy);
        }
        return $m;
    }
}


sub _inflate {
    my ($self, $data) = @_;
    my $p = $self->{deflate} || {};
    my $bits = $p->{server_max_window_bits} // 15;
    $self->{inflater} = undef if $p->{server_no_context_takeover};
    $self->{inflater} //= _new_inflater($bits);
    return _inflate_message($self->{inflater}, $data, $bits);
}


sub _close_received {
    my ($self, $m) = @_;
    my $p = $m->{data};
    $self->{close_received} = 1;
    if (length $p == 0) {
        $m->{code} = 1005;
        $m->{empty} = 1;
        $m->{reason} = '';
    } elsif (length $p == 1) {
        $self->_violation("server close frame with a 1-byte payload");
        $m->{code} = undef;
    } else {
        $m->{code} = unpack 'n', $p;
        $m->{reason} = substr $p, 2;
        my $c = $m->{code};
        $self->_violation("server close code $c is not one to send")
            unless ($c >= 1000 && $c <= 1003) || ($c >= 1007 && $c <= 1014)
                   || ($c >= 3000 && $c <= 4999);
        my $r = $m->{reason};
        $self->_violation("server close reason is not valid UTF-8")
            unless utf8::decode($r);
    }
    $self->{close} = $m;
}


# Waits for the server's close frame, skipping data (and answering nothing):
# returns {code, reason} or undef.
sub recv_close {
    my ($self, $timeout, %o) = @_;
    return $self->{close} if $self->{close};
    my $deadline = time + ($timeout // $self->{timeout});
    for (;;) {
        my $left = _left($deadline);
        my $m = $self->recv_message($left, %o);
        return undef unless $m;
        push @{ $self->{skipped} }, $m unless $m->{opcode} == 8;
        return $m if $m->{opcode} == 8;
    }
}


sub close_received { $_[0]{close} }


# True once the server closed the TCP connection (FIN or RST).
sub wait_eof {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // $self->{timeout});
    $self->{rbuf} = '';
    while (!$self->{eof}) {
        return 0 if time >= $deadline;
        $self->_fill($deadline);
        $self->{rbuf} = '';
    }
    return 1;
}


sub recv_json {
    my ($self, $timeout, %o) = @_;
    my $deadline = time + ($timeout // $self->{timeout});
    for (;;) {
        my $left = _left($deadline);
        my $m = $self->recv_message($left, auto_pong => 1, %o);
        return undef unless $m;
        next unless $m->{opcode} == 1;
        return JSON::PP->new->utf8->decode($m->{data});
    }
}


sub shutdown_write {
    my ($self) = @_;
    shutdown $self->{sock}, 1 if $self->{sock};
}


sub disconnect {
    my ($self) = @_;
    CORE::close $self->{sock} if $self->{sock};
    $self->{sock} = undef;
}


sub DESTROY {
    my ($self) = @_;
    CORE::close $self->{sock} if $self->{sock};
}

1;

__END__

=head1 NAME

Test::Chat::WS - a strict WebSocket client for the ngx_chat test suites

=head1 SYNOPSIS

    use Test::Chat::WS qw(:all);

    my $ws = Test::Chat::WS->connect(port => $port, path => '/echo',
                                     deflate => 1);
    $ws->status;                    # 101, or the refusal's status
    $ws->send_text("hello");        # compressed if deflate was negotiated
    my $m = $ws->recv_message(2);   # {type => 'text', data => 'hello', ...}
    $ws->close(1000, 'bye');
    my $c = $ws->recv_close(2);     # {code => 1000, reason => ...}
    $ws->wait_eof(2);               # the server closed TCP

    my $bytes = ws_text("hi", fin => 0) . ws_cont("!", rsv1 => 1);

=head1 CONNECT OPTIONS

port, host, path, timeout (5 s), headers (name => value pairs: a default
header named again is replaced, undef removes it), protocols (arrayref),
headers may also name '+Name' to add a line beside a default of that
name; deflate (1, a raw offer string, a hashref with client_no_context_takeover,
server_no_context_takeover, client_max_window_bits (N, or 1 for no value),
server_max_window_bits, or an arrayref of those for several offers), key,
version, method, http_version, host_header, pipeline (bytes written in the
same packet as the handshake), rcvbuf/sndbuf (socket buffer sizes set before
connecting).

A 101 whose Sec-WebSocket-Accept is wrong dies at once. Anything else the
server gets wrong (masked frames, reserved bits, bad close codes, oversized
control frames, extensions not offered, non-minimal lengths, invalid UTF-8
in text, a stream that does not inflate within the negotiated window...) is
listed by C<< ->violations >>.

=cut
