package Test::Chat::Events;

# What the suites of the HTTP fallback (t/http_events_*.t) share: a
# long-poll client (GET /v1/events), a Server-Sent Events client that
# decodes the chunked stream as it comes, and the checks of the objects
# they get. POD at the end.

use strict;
use warnings;

use Exporter qw(import);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use List::Util qw(max min);
use Test::More import => [qw(ok diag)];
use Time::HiRes qw(time);

# No import: Test::Chat::Nginx's import names the package its data-driven
# blocks run in, and that is the suite's, not this one.
use Test::Chat::Nginx ();
use Test::Chat::Delivery qw(%MSGS pump);
use Test::Chat::JSON qw(json_type);

BEGIN {
    no strict 'refs';
    *{$_} = \&{"Test::Chat::Nginx::$_"}
        for qw(port http_start http_finish api_build_request api_show
               ws_chat_show metric);
}

our @EXPORT_OK = qw(connections canon annotate type_of msgs_of seqs_of msgs_ok
                    poll_start poll_finish poll answer_ok
                    poll_finish_pumping sse_open sse_read sse_next
                    sse_pings sse_close sse_show sse_head_ok sse_sync_ok
                    sse_msgs sse_format_ok);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my $JSON = JSON::PP->new->canonical->allow_nonref;
my $JSON_BYTES = JSON::PP->new->utf8->canonical->allow_nonref;


# ---------------------------------------------------------------------------
# The objects: their JSON types as they came, and what a msg must carry.

# The object without the keys a test adds (_types, _canon, _at...), as
# canonical JSON.
sub canon {
    my ($o) = @_;
    return $JSON->encode({ map { $_ => $o->{$_} } grep { !/^_/ } keys %$o });
}

# Records, once and as soon as it is decoded, the JSON types of an
# object's fields (_types) and its canonical JSON (_canon).
sub annotate {
    for my $o (@_) {
        next unless ref $o eq 'HASH';
        $o->{_types} //= { map { $_ => json_type($o->{$_}) }
                           grep { !/^_/ } keys %$o };
        $o->{_canon} //= canon($o);
    }
    return @_;
}

sub type_of {
    my ($o, $k) = @_;
    annotate($o);
    return $o->{_types}{$k} // 'absent';
}

# The msg objects of a list of events (hashes), or those of one chat.
sub msgs_of {
    my ($list, $chat) = @_;
    return grep { ref $_ eq 'HASH' && ($_->{type} // '') eq 'msg'
                  && (!defined $chat || ($_->{chat_id} // '') eq $chat) }
           @$list;
}

sub seqs_of { map { $_->{seq} } msgs_of(@_) }

# What a text msg must carry, from what "sent" confirmed (%MSGS): a list
# of what is wrong with it.
sub msg_wrong {
    my ($m) = @_;
    annotate($m);
    return ('not a msg') unless ($m->{type} // '') eq 'msg';
    if (($m->{kind} // '') eq 'system') {
        return defined $m->{event} ? () : ('system msg without event');
    }
    my $w = $MSGS{ $m->{chat_id} // '' }{ $m->{seq} // '' };
    return ('no "sent" gave this seq') unless $w;
    my @bad = map { "$_ is " . ws_chat_show($m->{$_}) . ', expected '
                    . ws_chat_show($w->{$_}) }
              grep { ($m->{$_} // '') ne ($w->{$_} // '') }
              qw(from from_device id text);
    push @bad, 'kind is not "text"' if ($m->{kind} // '') ne 'text';
    push @bad, 'ts is not an integer' unless type_of($m, 'ts') eq 'int';
    push @bad, 'chat_id is not a string'
        unless type_of($m, 'chat_id') eq 'string';
    push @bad, 'seq is not an integer' unless type_of($m, 'seq') eq 'int';
    push @bad, 'from_device is not a string'
        unless type_of($m, 'from_device') eq 'string';
    return @bad;
}

sub msgs_ok {
    my ($list, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @wrong = map { my @w = msg_wrong($_);
                      @w ? join(', ', @w) . ': ' . ws_chat_show($_) : () }
                msgs_of($list);
    ok !@wrong, "$name: each msg carries what was sent"
        or diag(join "\n", @wrong[0 .. min(9, $#wrong)]);
}


# The chat_connections gauge: chat sessions open, the fallback's long-polls
# and streams too (a /metrics location must be in the config).
sub connections { metric('chat_connections') }


# ---------------------------------------------------------------------------
# Long-poll: GET /v1/events?... ; the answer is http_finish's (json: the
# decoded body, elapsed: seconds since the request was written).

sub poll_start {
    my ($token, $query, %o) = @_;
    my $path = '/v1/events' . (defined $query && length $query ? "?$query"
                                                               : '');
    return http_start(api_build_request(GET => $path,
                                        (token => $token) x !!defined $token,
                                        headers => $o{headers} || []));
}

sub poll_finish {
    my ($h, %o) = @_;
    my $r = http_finish($h, timeout => $o{timeout} // 10);
    $r->{ended_at} = time;
    annotate(@{ $r->{json} }) if ref $r->{json} eq 'ARRAY';
    return $r;
}

sub poll {
    my ($token, $query, %o) = @_;
    return poll_finish(poll_start($token, $query, %o), %o);
}

# One assertion: 200, application/json, a JSON array of objects with a
# "type" and without "ready". Returns the array, or undef.
sub answer_ok {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @why;
    push @why, 'status ' . ($r->{status} // 'none') . ', expected 200'
        unless ($r->{status} // '') eq '200';
    push @why, "Content-Type is '" . ($r->{headers}{'content-type'}
                                      // 'absent') . "'"
        unless ($r->{headers}{'content-type'} // '') =~ m{^application/json}i;
    if (ref $r->{json} ne 'ARRAY') {
        push @why, 'body is not a JSON array';
    } else {
        my @odd = grep { ref $_ ne 'HASH' || !defined $_->{type}
                         || $_->{type} eq 'ready' } @{ $r->{json} };
        push @why, 'objects without a type, or a ready: '
                   . join(', ', map { ws_chat_show($_) } @odd) if @odd;
    }
    ok !@why, "$name: 200, a JSON array of objects"
        or diag(join('; ', @why) . "\n" . api_show($r));
    return @why ? undef : $r->{json};
}


# Reads the devices' sockets until the poll's answer is there (at most
# $bound seconds), then reads the answer.
sub poll_finish_pumping {
    my ($h, $devs, $bound) = @_;
    my $end = time + ($bound // 10);
    if ($h->{sock}) {
        my $sel = IO::Select->new($h->{sock});
        while (time < $end && !$sel->can_read(0)) {
            pump($devs, undef, within => 0.05);
        }
    }
    return poll_finish($h, timeout => max(0.5, $end - time));
}



# ---------------------------------------------------------------------------
# Server-Sent Events: a raw HTTP/1.1 client that decodes the chunked body
# as it comes and splits it into events.

sub sse_open {
    my (%o) = @_;
    my $path = '/v1/events' . (defined $o{query} ? "?$o{query}" : '');
    my @h = ('Host: localhost');
    push @h, "Authorization: Bearer $o{token}" if defined $o{token};
    push @h, 'Accept: text/event-stream' unless $o{no_accept};
    push @h, "Last-Event-ID: $o{last_event_id}" if defined $o{last_event_id};
    my $s = { raw => '', body => '', all => '', events => [], t0 => time,
              headers => {} };
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => port(), Proto => 'tcp',
                                     Timeout => 5);
    unless ($sock) {
        $s->{error} = "connect: $!";
        return $s;
    }
    $s->{sock} = $sock;
    my $req = "GET $path HTTP/1.1\r\n" . join('', map { "$_\r\n" } @h)
              . "\r\n";
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite $sock, $req, length($req) - $off, $off;
        unless (defined $n) {
            $s->{error} = "write: $!";
            return $s;
        }
        $off += $n;
    }
    my $end = time + ($o{timeout} // 5);
    while (!defined $s->{status} && !$s->{eof} && time < $end) {
        sse_read($s, $end - time);
    }
    $s->{error} //= 'no response head' unless defined $s->{status};
    return $s;
}

# Reads what comes within $wait seconds (once); false when nothing came.
sub sse_read {
    my ($s, $wait) = @_;
    return 0 if !$s->{sock} || $s->{eof};
    my $sel = IO::Select->new($s->{sock});
    return 0 unless $sel->can_read(max(0, $wait));
    my $n = sysread $s->{sock}, my $buf, 65536;
    if (!$n) {
        $s->{eof} = 1;
        $s->{eof_at} = time;
        $s->{reset} = "$!" unless defined $n;
        return 1;
    }
    $s->{raw} .= $buf;
    _sse_decode($s);
    return 1;
}

sub _sse_decode {
    my ($s) = @_;
    unless (defined $s->{status}) {
        my $i = index $s->{raw}, "\r\n\r\n";
        return if $i < 0;
        my $head = substr $s->{raw}, 0, $i + 4, '';
        $s->{head} = $head;
        my ($status_line, @lines) = split /\r\n/, $head;
        ($s->{status}) = $status_line =~ m{^HTTP/\d\.\d (\d{3})};
        $s->{status} //= 0;
        for (@lines) {
            my ($n, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
            $s->{headers}{ lc $n } = $v;
        }
        $s->{chunked} = ($s->{headers}{'transfer-encoding'} // '')
                        =~ /chunked/i;
    }
    if (!$s->{chunked}) {
        $s->{body} .= $s->{raw};
        $s->{all} .= $s->{raw};
        $s->{raw} = '';
        return;
    }
    while (!$s->{ended}) {
        last unless $s->{raw} =~ /\A([0-9a-fA-F]+)[^\r\n]*\r\n/;
        my ($n, $hl) = (hex $1, length $&);
        if ($n == 0) {
            if ($s->{raw} =~ /\A[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n/) {
                $s->{ended} = 1;        # the last chunk: a clean end
                $s->{ended_at} = time;
                $s->{raw} = substr $s->{raw}, length $&;
            }
            last;
        }
        last if length $s->{raw} < $hl + $n + 2;
        my $data = substr $s->{raw}, $hl, $n;
        $s->{body} .= $data;
        $s->{all} .= $data;
        substr $s->{raw}, 0, $hl + $n + 2, '';
    }
}

# The next event (comment-only blocks are skipped; ": ping" lines are
# counted in sse_pings), within $timeout seconds, or undef (then ->{eof}
# or ->{ended} tell why, else a timeout). An event: {data => [lines], id
# (undef when no id line), event, json (data decoded), type (json's)}.
sub sse_next {
    my ($s, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (1) {
        $s->{body} =~ s/\r\n/\n/g;
        if ($s->{body} =~ s/\A(.*?)\n\n//s) {
            my $block = $1;
            my $ev = { data => [], lines => [split /\n/, $block],
                       at => time };
            my $fields = 0;
            for my $line (@{ $ev->{lines} }) {
                next if $line =~ /^:/;
                $fields++;
                my ($f, $v) = $line =~ /^([^:]*)(?::[ ]?(.*))?\z/s;
                $v //= '';
                if ($f eq 'data') {
                    push @{ $ev->{data} }, $v;
                } elsif ($f eq 'id' || $f eq 'event' || $f eq 'retry') {
                    $ev->{$f} = $v;
                } else {
                    push @{ $ev->{unknown} }, $line;
                }
            }
            next unless $fields;
            $ev->{json} = eval { $JSON_BYTES->decode(join "\n",
                                                     @{ $ev->{data} }) };
            annotate($ev->{json});
            $ev->{type} = ref $ev->{json} eq 'HASH' ? $ev->{json}{type}
                                                    : undef;
            push @{ $s->{events} }, $ev;
            return $ev;
        }
        return undef if $s->{eof} || $s->{ended};
        my $left = $end - time;
        return undef if $left <= 0;
        sse_read($s, $left);
    }
}

sub sse_pings {
    my ($s) = @_;
    my $n = () = $s->{all} =~ /(?:^|\n): ?ping\r?\n/g;
    return $n;
}

sub sse_close {
    my ($s) = @_;
    close $s->{sock} if $s->{sock};
    $s->{sock} = undef;
    $s->{eof} = 1;
}

sub sse_show {
    my ($ev, $s) = @_;
    return $ev ? join(' | ', @{ $ev->{lines} })
         : $s && $s->{ended} ? 'the end of the stream (last chunk)'
         : $s && $s->{eof} ? 'EOF' . ($s->{reset} ? " ($s->{reset})" : '')
         : 'nothing (timeout)';
}

# One assertion: a 200 text/event-stream answer.
sub sse_head_ok {
    my ($s, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = ok(($s->{status} // 0) == 200
                && ($s->{headers}{'content-type'} // '')
                   =~ m{^text/event-stream}i,
                "$name: 200 text/event-stream");
    diag('got ' . ($s->{error} // '') . "\n" . ($s->{head} // '')
         . substr($s->{body} // '', 0, 300)) unless $ok;
    return $ok;
}

# Reads the stream up to "synced": ready first, then the sync. Returns
# ([msg objects of the sync], synced object) after one assertion.
sub sse_sync_ok {
    my ($s, $acct, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @why;
    my $first = sse_next($s, 10);
    push @why, 'first event is ' . sse_show($first, $s) . ', not ready'
        unless $first && ($first->{type} // '') eq 'ready'
               && ($first->{json}{user_id} // '') eq $acct->{user_id}
               && ($first->{json}{device_id} // '') eq $acct->{device_id};
    my (@msgs, $synced);
    while (!@why) {
        my $ev = sse_next($s, 10);
        if (!$ev) {
            push @why, 'before synced: ' . sse_show($ev, $s);
            last;
        }
        my $t = $ev->{type} // '';
        if ($t eq 'synced') {
            $synced = $ev->{json};
            last;
        }
        if ($t eq 'msg') {
            push @msgs, $ev->{json};
        } elsif ($t ne 'receipt' && $t ne 'expired') {
            push @why, 'in the sync: ' . sse_show($ev);
        }
    }
    ok !@why, "$name: ready, then the sync, then synced"
        or diag(join '; ', @why);
    return (\@msgs, $synced);
}

# Waits for $n live msg events; returns them.
sub sse_msgs {
    my ($s, $n, $timeout) = @_;
    my $end = time + ($timeout // 10);
    my @m;
    while (@m < $n) {
        my $ev = sse_next($s, $end - time) or last;
        push @m, $ev->{json} if ($ev->{type} // '') eq 'msg';
    }
    return @m;
}

# One assertion over every event of the streams: a single data line of a
# JSON object; msg events "id: <chat_id>:<seq>", expired
# "<chat_id>:<to_seq>", the others no id.
sub sse_format_ok {
    my ($name, @streams) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @bad;
    my $n = 0;
    for my $ev (map { @{ $_->{events} } } @streams) {
        $n++;
        my @why;
        push @why, scalar(@{ $ev->{data} }) . ' data lines'
            unless @{ $ev->{data} } == 1;
        push @why, 'data is not a JSON object'
            unless ref $ev->{json} eq 'HASH';
        push @why, 'unknown fields' if $ev->{unknown};
        my $j = ref $ev->{json} eq 'HASH' ? $ev->{json} : {};
        my $t = $j->{type} // '';
        my $want = $t eq 'msg' ? ($j->{chat_id} // '?') . ':'
                                 . ($j->{seq} // '?')
                 : $t eq 'expired' ? ($j->{chat_id} // '?') . ':'
                                     . ($j->{to_seq} // '?')
                 : undef;
        if (defined $want) {
            push @why, 'id is ' . ($ev->{id} // 'absent')
                       . ", expected $want"
                unless ($ev->{id} // '') eq $want;
        } else {
            push @why, "a $t event with an id" if defined $ev->{id};
        }
        push @bad, join(', ', @why) . ': ' . sse_show($ev) if @why;
    }
    ok $n && !@bad, "$name: each of the $n events is one data line of "
                    . 'JSON; msg events have id chat:seq, others none'
        or diag(join "\n", @bad[0 .. min(9, $#bad)]);
}




1;

__END__

=head1 NAME

Test::Chat::Events - long-poll and Server-Sent Events clients of GET
/v1/events, and checks of what they get

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::Chat::Nginx;
    use Test::Chat::Delivery qw(:all);
    use Test::Chat::Events qw(:all);

    my $r = poll($acct->{token}, 'wait=1');
    my $a = answer_ok($r, 'a poll') or return;
    msgs_ok($a, 'its msgs');

    my $s = sse_open(token => $acct->{token});
    sse_head_ok($s, 'a stream') or return;
    my ($sync, $synced) = sse_sync_ok($s, $acct, 'the stream');

Load it after L<Test::Chat::Nginx> and L<Test::Chat::Delivery> (whose
C<%MSGS>, what the "sent" answers confirmed, C<msgs_ok> checks msgs
against). Nothing is exported unless asked for (C<:all> for
everything).

=head1 OBJECTS

=over

=item connections()

The C<chat_connections> gauge at C</metrics> (a location of the config):
chat sessions open, long-polls and streams too.

=item annotate(@objects)

Records in each object, once and as soon as it is decoded, the JSON
types of its fields (C<_types>, see L<Test::Chat::JSON>) and its
canonical JSON (C<_canon>); returns them. C<canon($o)> is that JSON (the
keys a test added left out); C<type_of($o, $key)> a field's type
(C<absent> when there is none).

=item msgs_of(\@list, $chat), seqs_of(\@list, $chat)

The msg objects of a list of events (of one chat), and their seqs.

=item msgs_ok(\@list, $name)

One assertion: each msg of the list carries what its "sent" confirmed
(C<%MSGS>: from, from_device, id, text), kind "text", and the JSON types
of the protocol; a system msg has an event.

=back

=head1 LONG-POLL

=over

=item poll_start($token, $query, headers => [...])

=item poll_finish($h, timeout => 10), poll($token, $query, %o)

C<GET /v1/events?$query> with the token (undef: none) as
C<http_start>/C<http_finish> do it; the answer has C<json> (annotated),
C<elapsed> and C<ended_at> (when it was read).

=item poll_finish_pumping($h, \@devs, $bound)

Reads the devices' sockets (L<Test::Chat::Delivery>'s C<pump>) until the
poll's answer is there, at most C<$bound> (10) seconds, then reads it.

=item answer_ok($r, $name)

One assertion: 200, application/json, a JSON array of objects with a
"type" and without "ready". Returns the array, or undef.

=back

=head1 SERVER-SENT EVENTS

=over

=item sse_open(token => $t, query => $q, last_event_id => $id, ...)

Opens C<GET /v1/events> (with C<Accept: text/event-stream> unless
C<no_accept =E<gt> 1>) and reads up to the response head (within
C<timeout>, 5 s); returns the stream: C<{status, headers, head, events
=E<gt> [...], eof, ended (the last chunk came), error}>.

=item sse_read($s, $wait)

Reads what comes within C<$wait> seconds (once); false when nothing
came.

=item sse_next($s, $timeout)

The next event (comment-only blocks skipped; ": ping" lines are counted
by C<sse_pings($s)>) within C<$timeout> (10) seconds, or undef (then
C<eof> or C<ended> tell why, else a timeout). An event: C<{data =E<gt>
[lines], id, event, json (the data decoded and annotated), type (the
json's)}>.

=item sse_close($s), sse_show($ev, $s)

Closes the stream; an event (or what came instead) for a diag.

=item sse_head_ok($s, $name)

One assertion: a 200 text/event-stream answer.

=item sse_sync_ok($s, $acct, $name)

Reads the stream up to "synced" (ready, then the sync); one assertion.
Returns ([msg objects of the sync], the synced object).

=item sse_msgs($s, $n, $timeout)

Waits for C<$n> live msg events; returns their objects.

=item sse_format_ok($name, @streams)

One assertion over every event of the streams: one data line of a JSON
object; msg events "id: <chat_id>:<seq>", expired
"<chat_id>:<to_seq>", the others no id.

=back

=cut
