# Text messages must be UTF-8 (RFC 6455 section 8.1): invalid sequences
# close with 1007 as soon as they arrive, valid ones split anywhere echo.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

# "κόσμε" (Greek "cosmos"), the classic UTF-8 test word, as bytes.
our $KOSME = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

run_tests();

__DATA__

=== TEST 1: multi-byte text round-trips byte for byte
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[[text => $main::KOSME]]
--- ws_expect eval
[[text => $main::KOSME]]
--- no_error_log
[error]



=== TEST 2: a code point split across fragments echoes whole
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
# split inside the 3-byte "ό" (e1 bd b9): after its first byte, then its second
[ws_text(substr($main::KOSME, 0, 3), fin => 0),
 ws_cont(substr($main::KOSME, 3, 1), fin => 0),
 ws_cont(substr($main::KOSME, 4))]
--- ws_expect eval
[[text => $main::KOSME]]
--- no_error_log
[error]



=== TEST 3: a 4-byte code point split one byte per fragment echoes
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
# U+1F600 is f0 9f 98 80
[ws_text("\xf0", fin => 0), ws_cont("\x9f", fin => 0),
 ws_cont("\x98", fin => 0), ws_cont("\x80")]
--- ws_expect eval
[[text => "\xf0\x9f\x98\x80"]]
--- no_error_log
[error]



=== TEST 4: the edges of the valid ranges echo
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
# U+0000, U+007F, U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF,
# U+10000, U+10FFFF
[[text => "\x00\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
          . "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"]]
--- ws_expect eval
[[text => "\x00\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
          . "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"]]
--- no_error_log
[error]



=== TEST 5: a byte that never appears in UTF-8 (0xFF) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("abc\xffdef")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 6: a lone continuation byte is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 7: a message that ends inside a code point is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("ends with half \xce")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 8: a fragmented message that ends inside a code point is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("ok", fin => 0), ws_cont("\xe1\xbd")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 9: a bad sequence split across fragments is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
# ce must be followed by a continuation byte; "A" is not one
[ws_text("\xce", fin => 0), ws_cont("A")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 10: fail fast: a first fragment with an invalid byte closes at once
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("valid start \xff", fin => 0)]
--- ws_expect eval
[[close => 1007, within => 2]]
--- no_error_log
[error]



=== TEST 11: fail fast inside a code point: f4 90 can only exceed U+10FFFF
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xf4\x90", fin => 0)]
--- ws_expect eval
[[close => 1007, within => 2]]
--- no_error_log
[error]



=== TEST 12: fail fast in a middle fragment, before the final one
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("fine", fin => 0), ws_cont("\xc0\xaf", fin => 0)]
--- ws_expect eval
[[close => 1007, within => 2]]
--- no_error_log
[error]



=== TEST 13: an overlong 2-byte encoding (c0 af for "/") is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xc0\xaf")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 14: an overlong 3-byte encoding (e0 80 af) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xe0\x80\xaf")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 15: an overlong 4-byte encoding (f0 80 80 af) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xf0\x80\x80\xaf")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 16: the overlong form of NUL (c0 80) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xc0\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 17: a UTF-16 surrogate (ed a0 80, U+D800) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xed\xa0\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 18: the last surrogate (ed bf bf, U+DFFF) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xed\xbf\xbf")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 19: a code point above U+10FFFF (f4 90 80 80) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xf4\x90\x80\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 20: lead bytes f5..f7 (old 4-byte range beyond Unicode) are 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xf5\x80\x80\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 21: a 5-byte sequence (f8 88 80 80 80) is 1007
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("\xf8\x88\x80\x80\x80")]
--- ws_expect eval
[[close => 1007]]
--- no_error_log
[error]



=== TEST 22: binary messages are not checked for UTF-8
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_binary("\xff\xfe\xc0\xaf\xed\xa0\x80")]
--- ws_expect eval
[[binary => "\xff\xfe\xc0\xaf\xed\xa0\x80"]]
--- no_error_log
[error]



=== TEST 23: the UTF-8 state resets between messages
--- config
location /echo { chat_ws_echo; }
--- ws_send eval
[ws_text("a"), ws_binary("\xce"), ws_text("\xbachar")]
--- ws_expect eval
[[text => "a"], [binary => "\xce"], [close => 1007]]
--- no_error_log
[error]
