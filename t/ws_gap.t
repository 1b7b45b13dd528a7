# Order across a gap (PROTOCOL.md 5.2): a live message that comes past a
# seq the device has not had is held, and after chat_gap_wait the gap is
# filled from PostgreSQL, so the device still gets the chat dense and in
# order. The gap is made the way a worker that dies between its commit and
# its PUBLISH makes one: a message stored, never published.
#
#   scripts/test.sh t/ws_gap.t

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;
use Test::Chat::Delivery qw(:all);

needs_stack();

serve(defaults => 1,
      http_config => chat_http_config(prefix => "t_ws_gap_$$:",
                                      extra => "chat_gap_wait 300ms;\n"),
      config => chat_locations() . "location = /metrics { chat_metrics; }\n");

# Stores a text of $acct's device in $chat as chat_send_batch() does for
# a send, without publishing it; returns its seq.
sub store_unpublished {
    my ($acct, $chat, $id, $text) = @_;
    return pg_scalar(sprintf(
        q{SELECT out_seq FROM chat_send_batch('[[%d, %d, %d, "%s", }
        . q{{"text": "%s"}]]'::jsonb)},
        $chat, $acct->{user_id}, $acct->{device_id}, $id, $text));
}

sub seqs { [map { $_->{seq} } @{ $_[0]{got}{$_[1]} || [] }] }


behaviour 'a message past a gap waits, and the gap is filled from '
          . 'PostgreSQL' => sub {
    my ($a, $b) = users('a', 'b') or return;
    my $chat = direct_chat($a, $b) or return;
    my $da = device($a, 'a') or return;
    my $db = device($b, 'b') or return;

    my $s1 = send_ok($da, $chat, [$db], 'a sends the first');
    ok pump([$db], sub { @{ seqs($db, $chat) } == 1 }), 'b gets it live';

    my $fills = metric('chat_gap_fills_total');
    ok defined $fills, '/metrics reports chat_gap_fills_total';

    my $s2 = store_unpublished($a, $chat, 'never-published',
                               'stored, never published');
    is $s2, $s1 + 1, 'a message stored without a PUBLISH takes the next seq';

    my $s3 = send_ok($da, $chat, [$db], 'a sends the third');
    is $s3, $s2 + 1, 'the next send takes the seq after it';

    ok pump([$db], sub { @{ seqs($db, $chat) } >= 3 }),
       'b gets the third, and what it waited for'
        or diag(explain seqs($db, $chat));
    is_deeply seqs($db, $chat), [$s1, $s2, $s3],
              'b: dense and in order, the unpublished one in its place';
    is got_seq($db, $chat, $s2)->{text}, 'stored, never published',
       'b: the filled message is the stored one';
    ok wait_until(5, sub {
           (metric('chat_gap_fills_total') // 0) > $fills }),
       'chat_gap_fills_total counts the fill';
    ok !pump([$db], sub { @{ seqs($db, $chat) } > 3 }, quiet => 0.5),
       'b: nothing twice';
};

done_testing();
