# The test client itself, without a server: frame encoding against the
# examples of RFC 6455 and RFC 7692, deflate round trips and the window
# check, and offer/answer parsing. If these fail, the other suites' verdicts
# cannot be trusted.

use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Test::Chat::WS qw(:all);

# RFC 6455 section 1.3: the sample key and its accept value.
is ws_accept_for('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
   'accept key of the RFC example';

# RFC 6455 section 5.7 examples.
is unpack('H*', ws_text('Hello', mask => 0)), '810548656c6c6f',
   'unmasked text "Hello"';
is unpack('H*', ws_text('Hello', mask => "\x37\xfa\x21\x3d")),
   '818537fa213d7f9f4d5158', 'masked text "Hello"';
is unpack('H*', ws_text('Hel', fin => 0, mask => 0) . ws_cont('lo', mask => 0)),
   '010348656c' . '80026c6f', 'fragmented unmasked text';
is unpack('H*', ws_ping('Hello', mask => 0)), '890548656c6c6f',
   'unmasked ping';
is unpack('H*', substr(ws_binary('x' x 256, mask => 0), 0, 4)), '827e0100',
   '256 bytes: 16-bit length';
is unpack('H*', substr(ws_binary('x' x 65536, mask => 0), 0, 10)),
   '827f0000000000010000', '64 KiB: 64-bit length';

# Forced encodings and lies, for the server's checks.
is unpack('H*', ws_text('ab', mask => 0, len_bits => 16)), '817e00026162',
   'non-minimal 16-bit length';
is unpack('H*', ws_text('ab', mask => 0, len_bits => 64)),
   '817f00000000000000026162', 'non-minimal 64-bit length';
is unpack('H*', ws_frame(opcode => 2, mask => 0, len_bits => 64,
                         len => 2**63)),
   '827f8000000000000000', '64-bit length with the top bit set';
is unpack('H*', ws_frame(opcode => 0xB, rsv1 => 1, rsv2 => 1, rsv3 => 1,
                         fin => 0, mask => 0)),
   '7b00', 'reserved bits and opcode';
is unpack('H*', ws_close_payload(1000, 'ok')), '03e86f6b', 'close payload';
is ws_close_payload(undef), '', 'empty close payload';

# Masking is its own inverse, for any length.
for my $len (0, 1, 3, 4, 5, 127, 1000) {
    my $p = ws_random_bytes($len);
    my $f = ws_binary($p, mask => 'abcd');
    my $hl = $len > 125 ? 8 : 6;
    my $masked = substr $f, $hl;
    my $k = 'abcd' x ($len / 4 + 1);
    is $masked ^ substr($k, 0, $len), $p, "masking round trip, $len bytes";
}

# RFC 7692 section 7.2.3.1: "Hello" compressed.
is unpack('H*', ws_deflate_raw('Hello')), 'f248cdc9c90700',
   'deflate of "Hello" (tail removed)';
is ws_inflate_raw(pack('H*', 'f248cdc9c90700')), 'Hello', 'inflate of it';
is ws_inflate_raw("\x00"), '', 'a lone 0x00 inflates to the empty message';

for my $n (0, 1, 1000, 100_000) {
    my $d = ws_random_bytes($n) . ('z' x $n);
    is ws_inflate_raw(ws_deflate_raw($d)), $d, "deflate round trip, 2 x $n";
}

# The window check: 2000-byte back references need a window over 1024.
my $r = join '', map { chr(97 + int rand 16) } 1 .. 2000;
my $far = ws_deflate_raw($r . $r, 15);
ok !eval { ws_inflate_raw($far, 10); 1 },
   'a stream that refers 2000 bytes back is refused in a 1024-byte window';
like $@, qr/distance too far back/, '... as too far back';
is ws_inflate_raw(ws_deflate_raw($r . $r, 10), 10), $r . $r,
   'the same data compressed for the small window inflates in it';

# Offer strings and answer parsing.
is Test::Chat::WS::_deflate_offer(1), 'permessage-deflate', 'plain offer';
is Test::Chat::WS::_deflate_offer({ client_max_window_bits => 1,
                                    server_max_window_bits => 10,
                                    client_no_context_takeover => 1 }),
   'permessage-deflate; client_no_context_takeover; '
   . 'client_max_window_bits; server_max_window_bits=10', 'offer from a hash';
is Test::Chat::WS::_deflate_offer([{ server_max_window_bits => 9 }, 1]),
   'permessage-deflate; server_max_window_bits=9, permessage-deflate',
   'two offers';
is_deeply [Test::Chat::WS::_split_extensions(
              'permessage-deflate; a; b="1,2" , x-foo; c=3')],
          [['permessage-deflate', ['a', undef], ['b', '1,2']],
           ['x-foo', ['c', '3']]],
          'extension list with a quoted comma';

my $ws = bless { violations => [], deflate_offer => 'permessage-deflate' },
               'Test::Chat::WS';
$ws->_parse_extensions('permessage-deflate; server_no_context_takeover; '
                       . 'server_max_window_bits="10"');
is_deeply $ws->deflate, { server_no_context_takeover => 1,
                          server_max_window_bits => 10 },
          'accepted parameters';
is_deeply [$ws->violations], [], 'no complaint';
$ws->_parse_extensions('permessage-deflate; client_max_window_bits=10; '
                       . 'bogus');
is scalar(() = $ws->violations), 2,
   'unoffered client_max_window_bits and an unknown parameter are flagged';

# Header merging: replace, remove, add beside.
is_deeply [Test::Chat::WS::_merge_headers(
              [Host => 'h', Upgrade => 'websocket', 'Sec-WebSocket-Key' => 'k'],
              [upgrade => 'h2c', 'Sec-WebSocket-Key' => undef,
               '+Host' => 'second', 'X-New' => 1])],
          [Host => 'h', Upgrade => 'h2c', Host => 'second', 'X-New' => 1],
          'header merge';

done_testing();
