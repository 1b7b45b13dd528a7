package Test::Chat::JSON;

# The protocol's JSON values as they were on the wire: JSON::PP decodes a
# string and a number alike into a Perl scalar, and only the scalar's
# flags tell them apart; and times, which the protocol gives in epoch
# milliseconds. POD at the end.

use strict;
use warnings;

use B ();
use Exporter qw(import);
use JSON::PP ();
use Test::More ();
use Time::HiRes qw(time);

our @EXPORT_OK = qw(json_type is_json_int is_json_string json_int_ok
                    json_string_ok now_ms ms);
our %EXPORT_TAGS = (all => \@EXPORT_OK);


# 'null', 'bool', 'array', 'hash', 'string', 'int' or 'number'. Read it
# before anything uses the value as a string (a hash key, a regex, an
# interpolation): that caches a string in it, and it would look like a
# JSON string.
sub json_type {
    my $v = $_[0];      # a copy: the match below must not touch the caller's
    return 'null' unless defined $v;
    return JSON::PP::is_bool($v) ? 'bool' : lc ref $v if ref $v;
    my $f = B::svref_2object(\$v)->FLAGS;
    my $num = $f & (B::SVp_IOK | B::SVp_NOK);
    return 'string' if ($f & B::SVp_POK) && !$num;
    return $num && !($f & B::SVp_POK) && $v =~ /^-?\d+$/ ? 'int' : 'number';
}

# A JSON integer, 0 or more (a number, not a string, of digits only).
sub is_json_int {
    my ($v) = @_;
    return json_type($v) eq 'int' && $v =~ /^\d+$/;
}

# A JSON string (maybe empty).
sub is_json_string { json_type($_[0]) eq 'string' }

# One assertion: "$name is a JSON integer" (of any sign).
sub json_int_ok {
    my ($v, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok(json_type($v) eq 'int', "$name is a JSON integer")
        or Test::More::diag('got ' . (defined $v ? "'$v'" : 'null/absent'));
}

# One assertion: "$name is a non-empty JSON string".
sub json_string_ok {
    my ($v, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok(is_json_string($v) && length $v,
                   "$name is a non-empty JSON string")
        or Test::More::diag('got ' . (defined $v ? "'$v'" : 'null/absent'));
}

# Epoch milliseconds: now, or of a time() reading.
sub now_ms { int(time * 1000) }

sub ms { int($_[0] * 1000) }

1;

__END__

=head1 NAME

Test::Chat::JSON - the JSON types of decoded values, and epoch milliseconds

=head1 SYNOPSIS

    use Test::Chat::JSON qw(json_type is_json_int json_string_ok now_ms);

    my $t0 = now_ms();
    ok is_json_int($ev->{seq}), 'seq is a JSON integer';
    json_string_ok($ready->{user_id}, 'ready.user_id');

Nothing is exported unless asked for (C<:all> for everything).

=over

=item json_type($v)

What a value decoded by JSON::PP was on the wire: C<null>, C<bool>,
C<array>, C<hash>, C<string>, C<int> or C<number>. Ask before the value
is used as a string: Perl then caches a string in it, and a number looks
like a string from then on (keep the types at decode time, as
L<Test::Chat::Delivery>'s C<record> does in C<_types>).

=item is_json_int($v), is_json_string($v)

True for a JSON integer of 0 or more (not a string of digits), and for a
JSON string (maybe empty).

=item json_int_ok($v, $name), json_string_ok($v, $name)

One assertion each: "$name is a JSON integer" (any sign), "$name is a
non-empty JSON string".

=item now_ms(), ms($time)

Epoch milliseconds, now or of a C<time> reading, as the protocol's
timestamps are.

=back

=cut
