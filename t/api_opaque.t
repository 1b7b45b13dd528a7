# IDs are opaque (PROTOCOL.md conventions): a call with no credentials
# gets 401 before any route or id check, so it learns nothing of which
# ids or paths exist. The public calls (register, verify, link) stay
# public.
#
#   scripts/test.sh t/api_opaque.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(chat_http_config);

needs_stack();

ok nginx_start(workers => 1,
               http_config => chat_http_config(), config => <<'END'),
location /v1/ { chat_api; }
END
   'nginx starts';

my $acct = api_signup(device_name => 'a');

for my $c (['GET', '/v1/chats/some-chat'], ['GET', '/v1/chats/12345'],
           ['PATCH', '/v1/chats/some-chat'], ['GET', '/v1/users/nobody'],
           ['DELETE', '/v1/devices/x'], ['GET', '/v1/nope'],
           ['GET', '/v1/register'], ['POST', '/v1/chats/1/members'])
{
    my ($method, $path) = @$c;
    my %body = $method =~ /^(POST|PATCH)$/ ? (body => {}) : ();
    api_error_is(api_request($method, $path, %body), 401, 'unauthorized',
                 "$method $path with no token");
}

api_error_is(api_request(GET => '/v1/chats/some-chat',
                         token => $acct->{token}),
             404, 'not_found', 'GET /v1/chats/some-chat with a token: 404');
api_ok(api_request(POST => '/v1/register',
                   body => { mobile => random_mobile() }),
       202, 'POST /v1/register is public');
api_error_is(api_request(POST => '/v1/verify',
                         body => { mobile => random_mobile(),
                                   code => '000000',
                                   device_name => 'x' }),
             401, 'unauthorized', 'POST /v1/verify is public (a wrong code)');

ok nginx_stop(), 'nginx stops';
check_error_log(name => 'opaque', no_error_log => ['[alert]']);

done_testing();
