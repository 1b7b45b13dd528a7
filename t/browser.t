# The web client (html/) end to end in headless Chromium: two people and a
# second device of one of them sign up, chat, see ticks, unread counts,
# presence, groups, an image, and a network cut, as a person would see
# them. nginx serves html/ at / with the chat API, the WebSocket and the
# media store, as conf/nginx.conf does; a second port of the same nginx
# serves the page and the API but refuses the WebSocket upgrade (403, as a
# hostile proxy would), for a person whose client has to fall back to
# the HTTP transport (long-poll GET /v1/events, POST /v1/send...) and
# still chat with the others. t/browser/run.mjs drives Chromium
# through playwright-core and reports one result per scenario, which
# become this file's tests. Screenshots of the key states go to
# t/browser/screenshots/ (or $CHAT_SCREENSHOTS).
#
#   scripts/test.sh t/browser.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);
use Test::Chat::Media qw(media_locations);
use Cwd qw(abs_path);
use IO::Select;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time);

needs_stack();
plan skip_all => 'no /usr/bin/chromium'
    unless -x '/usr/bin/chromium';
plan skip_all => 'no node, or t/node/node_modules/playwright-core (npm '
                 . 'install in t/node)'
    unless -d 't/node/node_modules/playwright-core'
           && `node --version 2>/dev/null`;

my $REPO = abs_path('.');
my $SHOTS = $ENV{CHAT_SCREENSHOTS} || "$REPO/t/browser/screenshots";
my $BOUND = 180;            # seconds for the whole browser run


# nginx's workers run as nobody, who may not enter the checkout (a clone
# under a 0700 mktemp directory): they serve a copy in the server root.
my $HTML = servroot() . '/client';
system('cp', '-R', "$REPO/html", $HTML) == 0
    or BAIL_OUT("cannot copy html/ to $HTML");

# As conf/nginx.conf, with a shorter presence debounce so that "last
# seen" shows within a second of a person going away; port2 is the
# network that refuses WebSockets.
my $PORT2 = port2();
my $HTTP = chat_http_config(extra => <<"END");
include $REPO/conf/mime/mime.types;
chat_presence_debounce 1s;

server {
    listen 127.0.0.1:$PORT2;
    server_name localhost;
    location / {
        root $HTML;
        index index.html;
    }
    # sync pages of 3: the 3 messages Dave is sent while away fill one
    # page exactly, so his client has to tell the end of the sync by a
    # poll that finds nothing (no "synced" comes)
    location /v1/ {
        chat_api;
        chat_sync_batch 3;
    }
    location = /v1/ws { return 403; }
}
END
ok nginx_start(workers => 2, http_config => $HTTP, config => <<"END"),
location / {
    root $HTML;
    index index.html;
}
location /v1/ { chat_api; }
location = /v1/ws {
    chat_ws;
    chat_send_rate 20r/s burst=50;
}
${\ media_locations(max_body => '64m')}
END
   'nginx serves html/, the API, the WebSocket and the blob store, and '
   . 'on a second port all but the WebSocket';

my $index = http_request("GET / HTTP/1.1\r\nHost: localhost\r\n"
                         . "Connection: close\r\n\r\n");
like $index->{body} // '', qr{<script type="module" src="js/app\.js">},
     'GET / is the web client';
my $js = http_request("GET /js/chat-client.js HTTP/1.1\r\nHost: localhost\r\n"
                      . "Connection: close\r\n\r\n");
like $js->{headers}{'content-type'} // '', qr{^(text|application)/javascript},
     'its modules are served as JavaScript (browsers refuse other types)';

my $refused = http_request("GET /v1/ws HTTP/1.1\r\nHost: localhost\r\n"
                           . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           . "Sec-WebSocket-Version: 13\r\n"
                           . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           . "\r\n", port => $PORT2);
is $refused->{status}, 403, 'the second port refuses the WebSocket upgrade';

# t/browser/run.mjs prints "RESULT {json}" per scenario and anything else
# as notes; it is killed if it outlives $BOUND.
my $base = 'http://127.0.0.1:' . port();
my $fallback_base = "http://127.0.0.1:$PORT2";
diag "screenshots: $SHOTS";
my $pid = open(my $out, '-|') // die "fork: $!";
if (!$pid) {
    open STDERR, '>&', \*STDOUT;
    { exec 'node', 't/browser/run.mjs', $base, $SHOTS, $fallback_base; }
    POSIX::_exit(127);
}
my $sel = IO::Select->new($out);
my $deadline = time + $BOUND;
my ($buf, $results, $finished) = ('', 0, undef);
while (1) {
    my $left = $deadline - time;
    last if $left <= 0;
    next unless $sel->can_read($left > 1 ? 1 : $left);
    my $n = sysread $out, my $chunk, 65536;
    last unless $n;
    $buf .= $chunk;
    while ($buf =~ s/^([^\n]*)\n//) {
        my $line = $1;
        if ($line =~ /^RESULT (.*)$/) {
            my $r = eval { JSON::PP->new->decode($1) }
                // { name => "unreadable result: $line", ok => 0 };
            $results++;
            ok $r->{ok}, "browser: $r->{name}"
                or diag($r->{error} // '');
        } elsif ($line =~ /^DONE (\d+)/) {
            $finished = $1;
        } else {
            note $line;
        }
    }
}
if (waitpid($pid, WNOHANG) == 0) {
    kill 'TERM', $pid;
    kill 'KILL', $pid
        unless wait_until(5, sub { waitpid($pid, WNOHANG) != 0 },
                          interval => 0.05);
    waitpid $pid, 0;
}
close $out;
ok defined $finished, "the browser run finished within ${BOUND}s"
    or diag("last output: $buf");
is $results, $finished // -1, "every scenario it ran reported a result";

is_deeply [alert_lines(error_log_since(0))], [],
          'no alert, crit, emerg or crash in the error log';

nginx_stop();
done_testing();
