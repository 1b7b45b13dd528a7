# The HTTP fallback transport (docs/protocol.md "HTTP fallback transport"):
# the WebSocket's session over plain HTTP, with the guarantees of
# PROTOCOL.md section 5. GET /v1/events as a long-poll (a JSON array of
# what the WebSocket would have sent, at once when something is owed, []
# after ?wait=N) and as Server-Sent Events (ready, the sync, synced, live;
# msg events carry "id: <chat_id>:<seq>", Last-Event-ID resumes);
# ?ack= applies acks before the sync, ?presence= watches users for the
# request's length; POST /v1/send|ack|read|presence answer what the
# WebSocket would, errors as HTTP statuses. A device switching between
# WebSocket, long-poll and SSE gets every seq of each chat, in order on
# each connection, and nothing it acked again. A device that only polls
# is online for its watchers; a reload ends open streams and polls.
#
#   scripts/test.sh t/http_events.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);
use Test::Chat::JSON qw(json_type ms);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use List::Util qw(max min);
use Time::HiRes qw(time);

plan skip_all => 'CHAT_PG_DSN and CHAT_REDIS are not set (run me through '
                 . 'scripts/test.sh)'
    unless $ENV{CHAT_PG_DSN} && $ENV{CHAT_REDIS};

$SIG{PIPE} = 'IGNORE';

my $BATCH = 16;         # chat_sync_batch: one long-poll answer holds a page
my $LEASE = 3;          # chat_presence_lease, seconds
my $DEBOUNCE = 1;       # chat_presence_debounce, seconds
my $MAXMSG = 1000;      # chat_max_message_size, bytes
my $PING = 1;           # chat_ws_ping_interval of /v1/ (SSE ": ping")

# PostgreSQL and Redis outlive this file: a prefix of our own, and new
# users (random_mobile) in every behaviour.
my $PREFIX = "t_http_events_$$:";
my $HTTP = chat_http_config(prefix => $PREFIX, extra => <<"END");
chat_presence_lease ${LEASE}s;
chat_presence_debounce ${DEBOUNCE}s;
chat_max_message_size $MAXMSG;
chat_sync_batch $BATCH;
END
my $LOCATIONS = <<"END";
location /v1/ {
    chat_api;
    chat_ws_ping_interval ${PING}s;
}
location = /v1/ws { chat_ws; }
location = /metrics { chat_metrics; }
END
serve(defaults => 1, http_config => $HTTP, config => $LOCATIONS,
      workers => 2);

END { nginx_stop() if nginx_running() }


# ---------------------------------------------------------------------------
# Small things.

my $JSON = JSON::PP->new->canonical->allow_nonref;
my $JSON_BYTES = JSON::PP->new->utf8->canonical->allow_nonref;

# The chat_connections gauge (chat sessions open, the fallback's too).
sub connections {
    my $r = http_request("GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    my ($n) = ($r->{body} // '')
              =~ /^chat_connections(?:\{[^}]*\})?\s+(\d+)\s*$/m;
    return $n;
}

sub show {
    my ($v) = @_;
    return 'nothing' unless defined $v;
    my $strip = sub { my ($o) = @_;
                      ref $o eq 'HASH' ? { map { $_ => $o->{$_} }
                                           grep { !/^_/ } keys %$o } : $o };
    return $JSON->encode([map { $strip->($_) } @$v]) if ref $v eq 'ARRAY';
    return $JSON->encode($strip->($v));
}

# The object without the keys this file adds (_types, _canon, _at...), as
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
    my @bad = map { "$_ is " . show($m->{$_}) . ', expected '
                    . show($w->{$_}) }
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
                      @w ? join(', ', @w) . ': ' . show($_) : () }
                msgs_of($list);
    ok !@wrong, "$name: each msg carries what was sent"
        or diag(join "\n", @wrong[0 .. min(9, $#wrong)]);
}


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
                   . join(', ', map { show($_) } @odd) if @odd;
    }
    ok !@why, "$name: 200, a JSON array of objects"
        or diag(join('; ', @why) . "\n" . api_show($r));
    return @why ? undef : $r->{json};
}

# "chat:seq,chat:seq" of a hash chat => seq.
sub ack_param {
    my ($h) = @_;
    return join ',', map { "$_:$h->{$_}" } sort keys %$h;
}

# The highest seq per chat of an answer.
sub highs {
    my ($list) = @_;
    my %h;
    for my $m (msgs_of($list)) {
        $h{ $m->{chat_id} } = $m->{seq}
            if $m->{seq} > ($h{ $m->{chat_id} } // 0);
    }
    return %h;
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
        _sse_read($s, $end - time);
    }
    $s->{error} //= 'no response head' unless defined $s->{status};
    return $s;
}

# Reads what comes within $wait seconds (once); false when nothing came.
sub _sse_read {
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
        _sse_read($s, $left);
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


# ---------------------------------------------------------------------------
# A receiver across connections and transports: what each connection (a
# WebSocket, one long-poll answer, an SSE stream) got, and the acks that
# were applied before it started.

sub rx_new { { name => $_[0], conns => [], acked => {} } }

sub rx_conn {
    my ($rx, $label) = @_;
    my $c = { label => $label, floor => { %{ $rx->{acked} } }, msgs => [] };
    push @{ $rx->{conns} }, $c;
    return $c;
}

sub rx_got { my ($c, @m) = @_; push @{ $c->{msgs} }, annotate(msgs_of(\@m)) }

sub rx_acked {
    my ($rx, %a) = @_;
    for my $chat (keys %a) {
        $rx->{acked}{$chat} = $a{$chat}
            if $a{$chat} > ($rx->{acked}{$chat} // 0);
    }
}

# The seqs of a chat, over every connection in order.
sub rx_seqs {
    my ($rx, $chat) = @_;
    return map { seqs_of($_->{msgs}, $chat) } @{ $rx->{conns} };
}

# Four assertions: on each connection each chat's seqs strictly increase
# (no duplicate within one answer or stream); nothing at or below what was
# acked before the connection came again; every seq 1..last of each chat
# came (dense), nothing else; each msg carries what was sent.
sub rx_ok {
    my ($rx, $last, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my (@back, @again, @missing, @extra);
    for my $c (@{ $rx->{conns} }) {
        for my $chat (sort keys %$last) {
            my @s = seqs_of($c->{msgs}, $chat);
            push @back, "$c->{label}, chat $chat: "
                        . ranges_in_order(@s)
                if grep { $s[$_] <= $s[$_ - 1] } 1 .. $#s;
            my $floor = $c->{floor}{$chat} // 0;
            my @old = grep { $_ <= $floor } @s;
            push @again, "$c->{label}, chat $chat: " . ranges(@old)
                         . " (acked up to $floor before)" if @old;
        }
    }
    for my $chat (sort keys %$last) {
        my %n = map { $_ => 1 } rx_seqs($rx, $chat);
        my @m = grep { !$n{$_} } 1 .. $last->{$chat};
        my @x = grep { $_ < 1 || $_ > $last->{$chat} } keys %n;
        push @missing, "chat $chat: " . ranges(@m) if @m;
        push @extra, "chat $chat: " . ranges(@x) if @x;
    }
    ok !@back, "$name: each connection's seqs strictly increase per chat"
        or diag(join "\n", @back);
    ok !@again, "$name: nothing acked came again"
        or diag(join "\n", @again);
    ok !@missing && !@extra,
       "$name: every seq of each chat came ("
       . join(', ', map { "1..$last->{$_}" } sort keys %$last) . ')'
        or diag('missing: ' . join('; ', @missing) . "\noutside: "
                . join('; ', @extra) . "\n" . rx_show($rx));
    msgs_ok([map { @{ $_->{msgs} } } @{ $rx->{conns} }], $name);
}

sub rx_show {
    my ($rx) = @_;
    return join "\n", map {
        my $c = $_;
        my %chats = map { $_->{chat_id} => 1 } @{ $c->{msgs} };
        "  $c->{label}: " . join('; ', map {
            "chat $_ " . ranges_in_order(seqs_of($c->{msgs}, $_)) }
            sort keys %chats) } @{ $rx->{conns} };
}


# ---------------------------------------------------------------------------

behaviour 'long-poll: 401 without or with a bad token, ?token= works; '
          . "nothing owed: [] after ?wait=1; a msg sent over WebSocket "
          . 'ends a waiting poll at once with the WebSocket\'s object; '
          . 'unacked it comes again, acked never; malformed wait, ack, '
          . 'presence: 400' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $ub2 = api_link_device($ub, device_name => 'B2') or return;
    my $chat = direct_chat($ua, $ub) or return;

    api_error_is(poll(undef, 'wait=0'), 401, 'unauthorized',
                 'GET /v1/events without a token');
    api_error_is(poll('x' x 43, 'wait=0'), 401, 'unauthorized',
                 'GET /v1/events with a bad bearer token');
    api_error_is(poll(undef, 'wait=0&token=' . ('y' x 43)), 401,
                 'unauthorized', 'GET /v1/events?token=<bad>');

    my $r = poll($ub->{token}, 'wait=1');
    my $a = answer_ok($r, 'B polls, ?wait=1, nothing owed');
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... the answer is []';
    ok $r->{elapsed} >= 0.8 && $r->{elapsed} < 3,
       sprintf('... after about a second (%.2fs)', $r->{elapsed});

    $r = poll(undef, "wait=0&token=$ub->{token}");
    $a = answer_ok($r, 'B polls with ?token= and ?wait=0');
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
    ok $r->{elapsed} < 0.8, sprintf('... at once (%.2fs)', $r->{elapsed});

    my $da = device($ua, 'A') or return;
    my $db2 = device($ub2, 'B2 (WebSocket)') or return;
    my $h = poll_start($ub->{token}, 'wait=20');
    pump([$da, $db2], undef, within => 0.5);
    my $seq = send_ok($da, $chat, [$da, $db2], 'A sends while B polls')
        or return;
    my $t_sent = time;
    $r = poll_finish_pumping($h, [$da, $db2], 10);
    $a = answer_ok($r, 'B\'s waiting poll') or return;
    ok $r->{ended_at} - $t_sent < 1.5,
       sprintf('... ends %.2fs after "sent" (of ?wait=20)',
               $r->{ended_at} - $t_sent);
    is_deeply [map { "$_->{type} " . ($_->{seq} // '') } @$a], ["msg $seq"],
              '... with that msg alone (a live answer has no synced)'
        or diag(show($a));
    msgs_ok($a, 'B\'s poll');
    pump([$da, $db2], sub { got_seq($db2, $chat, $seq) }, within => 5);
    my $ws = got_seq($db2, $chat, $seq);
    annotate($ws);
    ok $ws && @$a && $a->[0]{_canon} eq $ws->{_canon},
       '... the same object, field for field, that B2 got over WebSocket'
        or diag('poll: ' . show($a->[0]) . "\nWebSocket: " . show($ws));

    api_error_is(poll($ub->{token}, "wait=0&ack=$chat:$seq,zzz"), 400,
                 'bad_request', "GET /v1/events?ack=$chat:$seq,zzz (one "
                 . 'good pair, one malformed)');
    $r = poll($ub->{token}, 'wait=1');
    $a = answer_ok($r, 'B polls again, without an ack');
    is_deeply [map { $_->{type} eq 'msg' ? "msg $_->{seq}"
                     : $_->{type} eq 'synced' ? "synced $_->{count}"
                     : () } @{ $a || [] }],
              ["msg $seq", 'synced 1'],
              '... the unacked msg comes again, in a sync: [msg, synced '
              . '(count 1)]; nothing of the malformed request was applied'
        or diag(show($a));
    ok $r->{elapsed} < 0.8, sprintf('... at once (%.2fs)', $r->{elapsed});

    $r = poll($ub->{token}, "wait=1&ack=$chat:$seq");
    $a = answer_ok($r, "B polls with ?ack=$chat:$seq");
    is_deeply [msgs_of($a || [])], [], '... the acked msg does not come'
        or diag(show($a));
    ok $r->{elapsed} >= 0.8,
       sprintf('... nothing owed: the poll waits (%.2fs)', $r->{elapsed});
    $r = poll($ub->{token}, 'wait=0');
    is_deeply [msgs_of(answer_ok($r, 'and the next one, without ack')
                       || [])], [], '... nor there'
        or diag(api_show($r));

    my $ida = $ua->{user_id};
    my @bad = ('wait=abc', 'wait=61', 'wait=-1', 'wait=1&ack=abc',
               "wait=1&ack=$chat", "wait=1&ack=$chat:", "wait=1&ack=:1",
               "wait=1&ack=$chat:x", 'wait=1&ack='
               . join(',', map { "$chat:$_" } 1 .. 257),
               "wait=1&presence=$ida:maybe", "wait=1&presence=$ida:12ab",
               'wait=1&presence=:on');
    for my $q (@bad) {
        my $show = length $q > 60 ? substr($q, 0, 40) . '... (257 pairs)'
                                  : $q;
        api_error_is(poll($ub->{token}, $q, timeout => 5), 400,
                     'bad_request', "GET /v1/events?$show");
    }

    # chat_connections counts a long-poll and a stream while they last.
    my $c0 = connections();
    ok defined $c0, "chat_connections is there ($c0)"
        or diag(http_request("GET /metrics HTTP/1.0\r\n\r\n")->{body});
    $h = poll_start($ub->{token}, 'wait=3');
    my $st = sse_open(token => $ub2->{token});
    sse_sync_ok($st, $ub2, 'B2 opens a stream');
    my $c1 = connections();
    is $c1, ($c0 // 0) + 2, 'a long-poll and a stream open: '
                            . 'chat_connections + 2';
    poll_finish($h, timeout => 6);
    sse_close($st);
    ok wait_until(3, sub { (connections() // -1) == ($c0 // 0) }),
       'both ended: chat_connections as before (' . (connections() // '?')
       . ')';
    no_errors_ok([$da, $db2], 'long-poll basics');
};

behaviour 'mixed transports: B gets the first part of two chats over '
          . 'WebSocket and acks some, then the rest over long-poll (ack= '
          . 'the previous answer\'s highest) while A keeps sending: dense, '
          . 'in order, nothing acked again; and the reverse, long-poll '
          . 'then WebSocket with POST /v1/ack in between' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $c1 = direct_chat($ua, $ub) or return;
    my $c2 = group_chat($ua, 'A and B', [$ub]) or return;
    my $da = device($ua, 'A') or return;
    my $db = device($ub, 'B (WebSocket)') or return;
    my $rx = rx_new('B');
    my $ws = rx_conn($rx, 'WebSocket');

    send_msg($da, $c1) for 1 .. 60;
    send_msg($da, $c2) for 1 .. 5;
    ok pump([$da, $db], sub { $da->{nsent} >= 65
                              && caught_up([$db], $c1, 60)->()
                              && caught_up([$db], $c2, 6)->() }),
       'A sends 60 in chat 1 and 5 in chat 2 (after created): B gets them '
       . 'over WebSocket' or return;
    rx_got($ws, @{ $db->{log} });
    ack($db, $c1, 30);
    ack($db, $c2, 3);
    hang_up($db);
    rx_acked($rx, $c1 => 30, $c2 => 3);

    # Long-poll, with A sending 3 in chat 1 and 1 in chat 2 during each of
    # the first 8 polls.
    my $rounds = 8;
    my (%prev, %top, @answers, @big, @synced_wrong, $first);
    my $end = time + 60;
    my $i = 0;
    while (time < $end && $i < 60) {
        $i++;
        rx_acked($rx, %prev);          # applied before the sync starts
        my $q = 'wait=3' . (%prev ? '&ack=' . ack_param(\%prev) : '');
        my $conn = rx_conn($rx, "poll $i ($q)");
        my $h = poll_start($ub->{token}, $q);
        if ($i <= $rounds) {
            my $n = $da->{nsent};
            send_msg($da, $c1) for 1 .. 3;
            send_msg($da, $c2);
            pump([$da], sub { $da->{nsent} >= $n + 4 });
        }
        my $r = poll_finish_pumping($h, [$da], 10);
        my $a = answer_ok($r, "poll $i") or last;
        rx_got($conn, @$a);
        push @answers, $a;
        $first //= $a;
        my @m = msgs_of($a);
        push @big, "poll $i: " . scalar(@m) if @m > $BATCH;
        my ($si) = grep { $a->[$_]{type} eq 'synced' } 0 .. $#$a;
        if (defined $si) {
            my $before = () = msgs_of([@$a[0 .. $si - 1]]);
            # live msgs may come during the sync: count <= msgs before
            push @synced_wrong, "poll $i: count "
                                . show($a->[$si]{count})
                                . ", $before msgs before it"
                unless type_of($a->[$si], 'count') eq 'int'
                       && $a->[$si]{count} <= $before;
        }
        %prev = highs($a);
        $top{$_} = max($top{$_} // 0, $prev{$_}) for keys %prev;
        last if $i > $rounds
                && ($top{$c1} // 0) >= max(keys %{ $da->{sent}{$c1} })
                && ($top{$c2} // 0) >= max(keys %{ $da->{sent}{$c2} });
    }
    my %last = ($c1 => max(keys %{ $da->{sent}{$c1} }),
                $c2 => max(keys %{ $da->{sent}{$c2} }));
    is_deeply \%last, { $c1 => 60 + 3 * $rounds, $c2 => 6 + $rounds },
              'A\'s sends were all answered';
    my @fm = msgs_of($first || []);
    ok @fm >= 1 && @fm <= $BATCH
       && !(grep { $_->{type} eq 'synced' } @{ $first || [] }),
       "the first poll (33 owed): one sync page, 1..$BATCH msgs ("
       . scalar(@fm) . '), no synced' or diag(show($first));
    ok !@big, "no answer holds more than chat_sync_batch ($BATCH) msgs"
        or diag(join ', ', @big);
    ok !@synced_wrong, 'a synced in an answer: an integer count, at most '
                       . 'the msgs before it'
        or diag(join "\n", @synced_wrong);
    my @lp = @{ $rx->{conns} }[1 .. $#{ $rx->{conns} }];
    my %first_lp = map { my $chat = $_;
                         my ($s) = map { seqs_of($_->{msgs}, $chat) } @lp;
                         ($chat => $s) } $c1, $c2;
    is_deeply \%first_lp, { $c1 => 31, $c2 => 4 },
              'long-poll starts from the acked cursors: chat 1 at 31, '
              . 'chat 2 at 4 (what was not acked comes again)';
    my %lp_order = map { my $chat = $_;
                         my @s = map { seqs_of($_->{msgs}, $chat) } @lp;
                         ($chat => [@s]) } $c1, $c2;
    is_deeply \%lp_order, { $c1 => [31 .. $last{$c1}],
                            $c2 => [4 .. $last{$c2}] },
              'over the polls, each chat\'s seqs come once each, in order '
              . "(chat 1: 31..$last{$c1}, chat 2: 4..$last{$c2})"
        or diag(rx_show($rx));
    rx_ok($rx, \%last, 'WebSocket then long-poll');
    note(scalar(@answers) . ' polls');

    rx_acked($rx, %prev);
    my $q = 'wait=1' . (%prev ? '&ack=' . ack_param(\%prev) : '');
    my $r = poll($ub->{token}, $q);
    my $a = answer_ok($r, "a last poll ($q)");
    is_deeply [msgs_of($a || [])], [], '... nothing more, nothing again'
        or diag(show($a));

    # The reverse: long-poll first, then WebSocket.
    my ($ua2, $ub2) = users('A2', 'B2') or return;
    my $d1 = direct_chat($ua2, $ub2) or return;
    my $d2 = group_chat($ua2, 'A2 and B2', [$ub2]) or return;
    my $da2 = device($ua2, 'A2') or return;
    send_msg($da2, $d1) for 1 .. 40;
    send_msg($da2, $d2) for 1 .. 3;
    ok pump([$da2], sub { $da2->{nsent} >= 43 }),
       'A2 sends 40 in chat 1 and 3 in chat 2 while B2 is away' or return;
    my $rx2 = rx_new('B2');
    my $p1 = rx_conn($rx2, 'poll 1');
    $a = answer_ok(poll($ub2->{token}, 'wait=5'), 'B2\'s first poll')
        or return;
    rx_got($p1, @$a);
    my %h1 = highs($a);
    rx_acked($rx2, %h1);
    $q = 'wait=5&ack=' . ack_param(\%h1);
    my $p2 = rx_conn($rx2, "poll 2 ($q)");
    $a = answer_ok(poll($ub2->{token}, $q), 'B2\'s second poll') or return;
    rx_got($p2, @$a);
    my ($ch) = grep { seqs_of($a, $_) >= 2 } $d1, $d2;
    ok $ch, 'the second answer has 2 msgs or more of a chat' or return;
    my @s = seqs_of($a, $ch);
    my $mid = $s[int($#s / 2)];
    $r = api_request(POST => '/v1/ack', token => $ub2->{token},
                     body => { chat_id => $ch, seq => $mid });
    api_ok($r, 204, "B2: POST /v1/ack {chat $ch, seq $mid}");
    rx_acked($rx2, $ch => $mid);
    my %floor = %{ $rx2->{acked} };

    my $dbw = device($ub2, 'B2 (WebSocket)') or return;
    send_msg($da2, $d1) for 1 .. 5;
    ok pump([$da2, $dbw], sub { $da2->{nsent} >= 48
                                && caught_up([$dbw], $d1, 45,
                                             'B2 (WebSocket)'
                                             => ($floor{$d1} // 0) + 1)->()
                                && caught_up([$dbw], $d2, 4,
                                             'B2 (WebSocket)'
                                             => ($floor{$d2} // 0) + 1)->() }),
       'A2 sends 5 more: B2 gets the rest over WebSocket';
    my $wsc = rx_conn($rx2, 'WebSocket');
    $wsc->{floor} = \%floor;
    rx_got($wsc, @{ $dbw->{log} });
    is_deeply { map { $_ => [seqs_of($wsc->{msgs}, $_)] } $d1, $d2 },
              { $d1 => [($floor{$d1} // 0) + 1 .. 45],
                $d2 => [($floor{$d2} // 0) + 1 .. 4] },
              'the WebSocket starts right after what was acked (?ack= and '
              . 'POST /v1/ack), once each, in order, to the end'
        or diag(rx_show($rx2));
    rx_ok($rx2, { $d1 => 45, $d2 => 4 }, 'long-poll then WebSocket');
    no_errors_ok([$da, $da2, $dbw], 'mixed transports');
};

behaviour 'SSE: ready, the sync, synced, then live, msg events with id '
          . 'chat:seq; ": ping" while idle; dropped mid-conversation and '
          . 'resumed with Last-Event-ID (then ?last_event_id= with ?sse=1 '
          . 'and ?token=): dense, nothing twice, live goes on' => sub {
    my ($ua, $ub) = users('A', 'B') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $da = device($ua, 'A') or return;
    send_ok($da, $chat, [$da], "A sends $_ while B is away") or return
        for 1 .. 10;

    my $r = api_request(GET => '/v1/events',
                        headers => ['Accept: text/event-stream']);
    api_error_is($r, 401, 'unauthorized',
                 'Accept: text/event-stream without a token');

    my $s1 = sse_open(token => $ub->{token});
    sse_head_ok($s1, 'stream 1 (Accept: text/event-stream)') or return;
    my ($sync, $synced) = sse_sync_ok($s1, $ub, 'stream 1');
    is_deeply [map { $_->{seq} } @$sync], [1 .. 10],
              'stream 1: the sync brings 1..10 in order';
    is $synced && $synced->{count}, 10, 'stream 1: synced count 10';

    my $t_idle = time;
    my $ev = sse_next($s1, $PING * 2 + 1.5);
    ok !$ev && !$s1->{eof} && !$s1->{ended},
       "stream 1: nothing more while idle ($PING s ping interval)"
        or diag('got ' . sse_show($ev, $s1));
    ok sse_pings($s1) >= 1,
       sprintf('stream 1: ": ping" comments while idle (%d in %.1fs)',
               sse_pings($s1), time - $t_idle);

    # Live: A sends 11..15; B reads 3 of them and drops the stream.
    my $n = $da->{nsent};
    send_msg($da, $chat) for 1 .. 5;
    pump([$da], sub { $da->{nsent} >= $n + 5 });
    my @live = sse_msgs($s1, 3, 10);
    is_deeply [map { $_->{seq} } @live], [11, 12, 13],
              'stream 1: live 11, 12, 13';
    my $last_id = $s1->{events}[-1]{id};
    is $last_id, "$chat:13", 'stream 1: the last event id is chat:13';
    sse_close($s1);

    send_ok($da, $chat, [$da], "A sends $_ while B is away again") or return
        for 16 .. 20;
    my $s2 = sse_open(token => $ub->{token}, last_event_id => $last_id);
    sse_head_ok($s2, "stream 2 (Last-Event-ID: $last_id)") or return;
    ($sync, $synced) = sse_sync_ok($s2, $ub, 'stream 2');
    is_deeply [map { $_->{seq} } @$sync], [14 .. 20],
              'stream 2: the sync brings 14..20: not 13 or before (acked '
              . 'by Last-Event-ID), and 14, 15 that stream 1 did not read';
    is $synced && $synced->{count}, 7, 'stream 2: synced count 7';
    $n = $da->{nsent};
    send_msg($da, $chat) for 1 .. 2;
    pump([$da], sub { $da->{nsent} >= $n + 2 });
    my @live2 = sse_msgs($s2, 2, 10);
    is_deeply [map { $_->{seq} } @live2], [21, 22],
              'stream 2: live 21, 22';
    my $last_id2 = $s2->{events}[-1]{id} // '';
    sse_close($s2);

    for my $bad (['Last-Event-ID: garbage', undef],
                 [undef, "sse=1&token=$ub->{token}&last_event_id=$chat:x"]) {
        my $r = api_request(GET => '/v1/events' . (defined $bad->[1]
                                                   ? "?$bad->[1]" : ''),
                            (token => $ub->{token}) x !defined $bad->[1],
                            headers => ['Accept: text/event-stream',
                                        grep { defined } $bad->[0]]);
        api_error_is($r, 400, 'bad_request',
                     'a malformed last event id ('
                     . ($bad->[0] // "?last_event_id=$chat:x") . ')');
    }

    my $s3 = sse_open(query => "sse=1&token=$ub->{token}"
                               . "&last_event_id=$last_id2",
                      no_accept => 1);
    sse_head_ok($s3, "stream 3 (?sse=1&token=...&last_event_id="
                     . "$last_id2, no Accept, no Authorization)") or return;
    ($sync, $synced) = sse_sync_ok($s3, $ub, 'stream 3');
    is_deeply [map { $_->{seq} } @$sync], [], 'stream 3: an empty sync';
    is $synced && $synced->{count}, 0, 'stream 3: synced count 0';
    send_ok($da, $chat, [$da], 'A sends 23') or return;
    my @live3 = sse_msgs($s3, 1, 10);
    is_deeply [map { $_->{seq} } @live3], [23], 'stream 3: live 23';
    sse_close($s3);

    my @all = map { $_->{json} } grep { ($_->{type} // '') eq 'msg' }
              map { @{ $_->{events} } } $s1, $s2, $s3;
    is_deeply [map { $_->{seq} } @all], [1 .. 23],
              'over the three streams: 1..23, each once, in order'
        or diag(ranges_in_order(map { $_->{seq} } @all));
    msgs_ok(\@all, 'the streams');
    sse_format_ok('the streams', $s1, $s2, $s3);

    # A stream asked to watch a stranger: an error event, and it goes on.
    my ($us) = users('S') or return;
    my $s4 = sse_open(token => $ub->{token},
                      query => "presence=$us->{user_id}");
    sse_head_ok($s4, 'stream 4 (?presence=<a stranger>)') or return;
    my @ev;
    while (my $e = sse_next($s4, 5)) {
        push @ev, $e;
        last if grep { ($_->{type} // '') eq 'error' } @ev
                and grep { ($_->{type} // '') eq 'synced' } @ev;
    }
    my ($err) = grep { ($_->{type} // '') eq 'error' } @ev;
    is $err && $err->{json}{code}, 'forbidden',
       'stream 4: an error event, code forbidden'
        or diag(join "\n", map { sse_show($_) } @ev);
    ok !$s4->{eof} && !$s4->{ended}, 'stream 4: goes on';
    is_deeply [map { $_->{json}{seq} } grep { ($_->{type} // '') eq 'msg' }
               @ev], [23],
              'stream 4 (no last event id): its sync brings 23 again '
              . '(stream 3 got it but never acked it)';
    send_ok($da, $chat, [$da], 'A sends 24') or return;
    is_deeply [map { $_->{seq} } sse_msgs($s4, 1, 10)], [24],
              'stream 4: live 24';
    sse_format_ok('stream 4', $s4);
    sse_close($s4);
    no_errors_ok([$da], 'SSE');
};

behaviour 'POST /v1/send: sent with a seq, a resend the same seq and '
          . 'nothing new delivered; errors as statuses; POST /v1/ack, '
          . '/v1/read (receipts to the author\'s WebSocket), /v1/presence'
          => sub {
    my ($ua, $ub, $uc) = users('A', 'B', 'C') or return;
    my $chat = direct_chat($ua, $ub) or return;
    my $cb = direct_chat($ub, $uc) or return;
    my $da = device($ua, 'A (WebSocket, watching receipts)') or return;
    my $db = device($ub, 'B') or return;
    my @devs = ($da, $db);
    my $send = sub {
        my ($acct, $body, %o) = @_;
        return api_request(POST => '/v1/send', token => $acct->{token},
                           body => $body, %o);
    };

    api_error_is(api_request(POST => '/v1/send',
                             body => { id => 'n', chat_id => $chat,
                                       text => 'x' }),
                 401, 'unauthorized', 'POST /v1/send without a token');

    my $t0 = ms(time);
    my $r = $send->($ua, { id => 'h1', chat_id => $chat,
                           text => 'hello over HTTP' });
    api_ok($r, 200, 'A: POST /v1/send') or return;
    my $s = $r->{json};
    annotate($s);
    is_deeply { map { $_ => $s->{$_} } qw(type id chat_id seq) },
              { type => 'sent', id => 'h1', chat_id => $chat, seq => 1 },
              '... {"type":"sent","id":"h1","chat_id","seq":1,"ts"}'
        or diag(show($s));
    ok type_of($s, 'chat_id') eq 'string' && type_of($s, 'seq') eq 'int'
       && type_of($s, 'ts') eq 'int' && $s->{ts} >= $t0 - 60_000
       && $s->{ts} <= ms(time) + 60_000,
       '... chat_id a string, seq an integer, ts epoch ms now'
        or diag(show($s));
    ok pump(\@devs, sub { got_seq($db, $chat, 1) }, within => 5),
       'B gets it over WebSocket';
    my $m = got_seq($db, $chat, 1);
    is_deeply { map { $_ => $m && $m->{$_} }
                qw(type chat_id seq from from_device id kind text ts) },
              { type => 'msg', chat_id => $chat, seq => 1,
                from => $ua->{user_id}, from_device => $ua->{device_id},
                id => 'h1', kind => 'text', text => 'hello over HTTP',
                ts => $s->{ts} },
              '... from A\'s device, with the id, text and ts of the send'
        or diag(show($m));

    $r = $send->($ua, { id => 'h1', chat_id => $chat,
                        text => 'hello over HTTP' });
    api_ok($r, 200, 'A resends h1');
    is_deeply { map { $_ => $r->{json}{$_} } qw(id seq ts) },
              { id => 'h1', seq => 1, ts => $s->{ts} },
              '... the same seq and ts' or diag(api_show($r));
    quiet_ok([$db], 1, 'B after the resend');

    $r = $send->($ua, { type => 'send', id => 'h2', chat_id => $chat,
                        text => 'with "type"' });
    api_ok($r, 200, 'A sends h2 with "type":"send"');
    is $r->{json}{seq}, 2, '... seq 2';
    api_error_is($send->($ua, { type => 'ack', id => 'h3',
                                chat_id => $chat, text => 'x' }),
                 400, 'bad_request', '"type":"ack" to /v1/send');
    api_error_is($send->($ua, { chat_id => $chat, text => 'no id' }),
                 400, 'bad_request', 'no id');
    api_error_is($send->($ua, { id => 'x' x 65, chat_id => $chat,
                                text => '65-byte id' }),
                 400, 'bad_request', 'a 65-byte id');
    api_error_is($send->($ua, { id => 'h4', chat_id => $chat }),
                 400, 'bad_request', 'no text');
    api_error_is($send->($ua, '{"id":"h5",'), 400, 'bad_request',
                 'invalid JSON');
    api_error_is($send->($ua, { id => 'h6', chat_id => $cb,
                                text => 'not mine' }),
                 403, 'forbidden', 'A sends to the chat of B and C');
    api_error_is($send->($ua, { id => 'h7', chat_id => $chat,
                                text => 'x' x ($MAXMSG + 1) }),
                 413, 'too_large', 'A sends ' . ($MAXMSG + 1) . ' bytes');
    $r = $send->($ua, { id => 'h8', chat_id => $chat,
                        text => 'y' x $MAXMSG });
    api_ok($r, 200, "A sends $MAXMSG bytes");
    is $r->{json}{seq}, 3, '... seq 3: the refusals took no seq';
    pump(\@devs, sub { got_seq($db, $chat, 3) }, within => 5);
    quiet_ok([$db], 0.5, 'then');
    is_deeply [map { "$_->{seq} $_->{id}" } @{ $db->{got}{$chat} || [] }],
              ['1 h1', '2 h2', '3 h8'],
              'B got h1, h2 and h8, once each, nothing refused';

    # ack and read over HTTP.
    $r = api_request(POST => '/v1/ack', token => $ub->{token},
                     body => { chat_id => $chat, seq => 2 });
    api_ok($r, 204, 'B: POST /v1/ack {seq 2}');
    api_error_is(api_request(POST => '/v1/ack', token => $ub->{token},
                             body => { chat_id => $chat, seq => 'x' }),
                 400, 'bad_request', 'B: POST /v1/ack with seq "x"');
    pump(\@devs, sub { grep { $_->{status} eq 'delivered' }
                       @{ $da->{receipts} || [] } }, within => 5);
    my ($rc) = grep { $_->{status} eq 'delivered' }
               @{ $da->{receipts} || [] };
    is_deeply $rc && { map { $_ => $rc->{$_} }
                       qw(type chat_id user_id status seq) },
              { type => 'receipt', chat_id => $chat,
                user_id => $ub->{user_id}, status => 'delivered', seq => 2 },
              'A gets B\'s delivered receipt, seq 2'
        or diag(join ', ', map { show($_) } @{ $da->{receipts} || [] });
    hang_up($db);
    $r = poll($ub->{token}, 'wait=1');
    my $a = answer_ok($r, 'B polls after closing');
    is_deeply [seqs_of($a || [], $chat)], [3],
              '... only seq 3: 1 and 2 were acked by POST /v1/ack'
        or diag(show($a));

    $r = api_request(POST => '/v1/read', token => $ub->{token},
                     body => { chat_id => $chat, seq => 3 });
    api_ok($r, 204, 'B: POST /v1/read {seq 3}');
    pump([$da], sub { grep { $_->{status} eq 'read' }
                      @{ $da->{receipts} || [] } }, within => 5);
    my ($rd) = grep { $_->{status} eq 'read' } @{ $da->{receipts} || [] };
    is_deeply $rd && { map { $_ => $rd->{$_} }
                       qw(type chat_id user_id status seq) },
              { type => 'receipt', chat_id => $chat,
                user_id => $ub->{user_id}, status => 'read', seq => 3 },
              'A gets B\'s read receipt, seq 3'
        or diag(join ', ', map { show($_) } @{ $da->{receipts} || [] });
    api_error_is(api_request(POST => '/v1/read', token => $ub->{token},
                             body => { chat_id => $chat, seq => 'x' }),
                 400, 'bad_request', 'POST /v1/read with seq "x"');
    api_error_is(api_request(POST => '/v1/read', token => $uc->{token},
                             body => { chat_id => $chat, seq => 1 }),
                 403, 'forbidden', 'C reads the chat of A and B');

    # presence.
    $r = api_request(POST => '/v1/presence', token => $ub->{token},
                     body => { subscribe => [$ua->{user_id}] });
    is $r->{status}, 200, 'B: POST /v1/presence {subscribe: [A]}: 200'
        or diag(api_show($r));
    ok ref $r->{json} eq 'ARRAY' && @{ $r->{json} } == 1,
       '... an array of one presence object' or diag(api_show($r));
    presence_ok(undef, ref $r->{json} eq 'ARRAY' ? $r->{json}[0] : undef,
                $ua, 1, undef, '... A (connected over WebSocket)');
    $r = api_request(POST => '/v1/presence', token => $ub->{token},
                     body => { type => 'presence',
                               unsubscribe => [$ua->{user_id}] });
    is $r->{status}, 200, 'B: POST /v1/presence {unsubscribe: [A]}: 200';
    is_deeply $r->{json}, [], '... []' or diag(api_show($r));
    api_error_is(api_request(POST => '/v1/presence', token => $uc->{token},
                             body => { subscribe => [$ua->{user_id}] }),
                 403, 'forbidden', 'C subscribes to A (no shared chat)');
    api_error_is(api_request(POST => '/v1/presence', token => $ub->{token},
                             body => { subscribe => $ua->{user_id} }),
                 400, 'bad_request', 'subscribe with a string');
    no_errors_ok([$da], 'POST calls');
};

behaviour "presence: a user who only long-polls (again at once after each "
          . 'answer) is online for a WebSocket watcher, offline with '
          . "last_seen $DEBOUNCE s (chat_presence_debounce) after the "
          . 'last poll; ?presence=<id>:<known> answers at once only when '
          . 'the state differs, and on a change' => sub {
    my ($uw, $uu, $up, $uv, $us) = users('W', 'U', 'P', 'V', 'S') or return;
    direct_chat($uw, $uu) or return;
    direct_chat($up, $uv) or return;
    my $dw = device($uw, 'W') or return;
    $dw->{ws}->send_json({ type => 'presence',
                           subscribe => [$uu->{user_id}] });
    pump([$dw], sub { presences_of($dw, $uu) >= 1 }, within => 5);
    presence_ok(undef, (presences_of($dw, $uu))[0], $uu, 0, undef,
                'W subscribes to U, never seen');

    # U polls, ?wait=1, again at once after each answer, for longer than
    # the lease.
    my $loop = $LEASE + 3;
    my $t0 = time;
    my ($polls, @bad, $t_last, $t_end, $online_at) = (0);
    while (time < $t0 + $loop) {
        $t_last = time;
        my $h = poll_start($uu->{token}, 'wait=1');
        my $r = poll_finish_pumping($h, [$dw], 5);
        $t_end = time;
        $polls++;
        push @bad, "poll $polls: " . api_show($r)
            unless ($r->{status} // 0) == 200;
        $online_at //= time if presences_of($dw, $uu) >= 2;
    }
    ok !@bad, "U polled $polls times, each 200" or diag(join "\n", @bad);
    my @p = presences_of($dw, $uu);
    presence_ok(undef, $p[1], $uu, 1, undef, 'W sees U online while U polls');
    ok $online_at && $online_at - $t0 < 3,
       sprintf('... within 3s of the first poll (%s)',
               $online_at ? sprintf('%.2fs', $online_at - $t0) : 'never');
    my @more = @p[2 .. $#p];
    ok !@more, "... and nothing else over ${loop}s of polls (the gaps "
               . 'between polls are within the debounce; lease renewals)'
        or diag(scalar(@more) . ' more presence events, the first: '
                . join("\n", map { sprintf '+%.2fs %s', $_->{_at} - $t0,
                                           show($_) }
                                 @more[0 .. min(5, $#more)]));

    my $n = @p;
    pump([$dw], sub { presences_of($dw, $uu) > $n }, within => $DEBOUNCE + 4,
         quiet => $DEBOUNCE + 4);
    my $off = (presences_of($dw, $uu))[$n];
    presence_ok(undef, $off, $uu, 0, [ms($t_last) - 1000, ms($t_end) + 1000],
                'U stops polling: W sees U offline, last_seen when the '
                . 'last poll ended');
    my $after = $off ? $off->{_at} - $t_end : undef;
    ok defined $after && $after >= $DEBOUNCE - 0.5
       && $after <= $DEBOUNCE + 2.5,
       sprintf('... after the debounce (%ds): %s', $DEBOUNCE,
               defined $after ? sprintf('%.2fs', $after) : 'never');

    # ?presence= on P's polls, V online over WebSocket.
    my $dv = device($uv, 'V') or return;
    my $iv = $uv->{user_id};
    my $pres_of = sub { my ($a) = @_;
                        (grep { $_->{type} eq 'presence' } @{ $a || [] })[0] };
    my $r = poll($up->{token}, "wait=2&presence=$iv:on");
    my $a = answer_ok($r, "P polls ?wait=2&presence=V:on, V online");
    is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
    ok $r->{elapsed} >= 1.8,
       sprintf('... the unchanged state does not end the poll (%.2fs)',
               $r->{elapsed});
    for my $known (':off', '') {
        $r = poll($up->{token}, "wait=10&presence=$iv$known");
        $a = answer_ok($r, "P polls ?presence=V$known, V online");
        ok $r->{elapsed} < 1.5,
           sprintf('... at once (%.2fs)', $r->{elapsed});
        ok $a && @$a == 1, '... with one object' or diag(show($a));
        presence_ok(undef, $pres_of->($a), $uv, 1, undef, '...');
    }
    api_error_is(poll($up->{token}, "wait=1&presence=$us->{user_id}:on"),
                 403, 'forbidden', 'P polls ?presence=S (no shared chat)');

    my $h = poll_start($up->{token}, "wait=15&presence=$iv:on");
    pump([$dv], undef, within => 0.3);
    my $t1 = time;
    hang_up($dv);
    my $t2 = time;
    $r = poll_finish($h, timeout => 15);
    $a = answer_ok($r, 'P polls ?wait=15&presence=V:on; V closes');
    ok $r->{ended_at} - $t2 >= $DEBOUNCE - 0.5
       && $r->{ended_at} - $t2 < $DEBOUNCE + 2.5,
       sprintf('... the poll ends %.2fs after the close (debounce %ds)',
               $r->{ended_at} - $t2, $DEBOUNCE);
    ok $a && @$a == 1, '... with one object' or diag(show($a));
    my $p = $pres_of->($a);
    presence_ok(undef, $p, $uv, 0, [ms($t1) - 1000, ms($t2) + 1000], '...');
    my $seen = $p && $p->{last_seen};
    if (defined $seen) {
        $r = poll($up->{token}, "wait=2&presence=$iv:$seen");
        $a = answer_ok($r, "P polls ?presence=V:<that last_seen>");
        is_deeply [map { canon($_) } @{ $a || [] }], [], '... []';
        ok $r->{elapsed} >= 1.8,
           sprintf('... unchanged: the poll waits (%.2fs)', $r->{elapsed});
    }
    for my $known ('on', 'off') {
        $r = poll($up->{token}, "wait=10&presence=$iv:$known");
        $a = answer_ok($r, "P polls ?presence=V:$known, V offline with a "
                           . 'last_seen');
        ok $r->{elapsed} < 1.5,
           sprintf('... at once: the state differs (%.2fs)', $r->{elapsed});
        ok $a && @$a == 1, '... with one object' or diag(show($a));
        presence_ok(undef, $pres_of->($a), $uv, 0, [$seen // 0, $seen // 0],
                    '...');
    }
    no_errors_ok([$dw], 'presence');
};

behaviour 'reload (HUP) with an SSE stream and a long-poll open: both end '
          . 'within a few seconds, the old workers exit; the new ones '
          . 'serve' => sub {
    my ($ux, $uy) = users('X', 'Y') or return;
    my $s = sse_open(token => $ux->{token});
    sse_head_ok($s, 'X opens a stream') or return;
    sse_sync_ok($s, $ux, 'X\'s stream');
    my $open = connections() // 0;
    my $h = poll_start($uy->{token}, 'wait=30');
    ok wait_until(10, sub { (connections() // 0) > $open }),
       'Y\'s long-poll is open (chat_connections counts it)';
    my $t0 = time;
    my @old = nginx_reload();
    ok scalar(@old), 'HUP: new workers run';

    while (!$s->{eof} && !$s->{ended} && time < $t0 + 8) {
        _sse_read($s, 0.2);
    }
    my $sse_end = $s->{ended_at} // $s->{eof_at};
    ok defined $sse_end && $sse_end - $t0 < 5,
       sprintf('the SSE stream ends (%s after HUP)',
               defined $sse_end ? sprintf('%.2fs', $sse_end - $t0)
                                : 'not within 8s');
    ok $s->{ended}, '... with the last chunk (a complete HTTP answer)'
        or diag('the connection closed without it; the last bytes of the '
                . 'stream: ' . show(substr($s->{all}, -120))
                . ', undecoded: ' . show($s->{raw}));
    sse_close($s);

    my $r = poll_finish($h, timeout => 8);
    my $end = $r->{ended_at} - $t0;
    ok $end < 5, sprintf('the long-poll (?wait=30) ends %.2fs after HUP',
                         $end);
    ok !defined $r->{status}
       || ($r->{status} eq '200' && ref $r->{json} eq 'ARRAY'),
       '... closed, or answered 200 with a JSON array'
        or diag(api_show($r));
    note(defined $r->{status} ? "the long-poll was answered: $r->{status} "
                                . ($r->{body} // '')
                              : 'the long-poll was closed without an answer');
    ok nginx_wait_exit(5, @old), 'the old workers exit';

    $r = poll($uy->{token}, 'wait=0');
    is_deeply [map { canon($_) } @{ answer_ok($r, 'a poll after the reload')
                                     || [] }], [], '... []';
    my $s2 = sse_open(token => $ux->{token});
    sse_head_ok($s2, 'a stream after the reload');
    sse_sync_ok($s2, $ux, 'the new stream');
    sse_close($s2);
};

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
