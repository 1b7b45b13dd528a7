# The fuzz targets' smoke for CI (make fuzz-smoke, .ci/run): every target
# builds, runs FUZZ_SECONDS (10 by default) from its seeds without a crash,
# leak or sanitizer report, and every input of fuzz/regress/ (inputs that
# found a bug once) replays clean.  The long runs are make fuzz.
#
#   prove fuzz/smoke.t

use strict;
use warnings;
use Test::More;

chdir(($0 =~ m{^(.*)/fuzz/smoke\.t$})[0] // '.') or die "chdir: $!";

my $secs = $ENV{FUZZ_SECONDS} // 10;

is system('scripts/fuzz.sh build'), 0, 'every target builds'
    or BAIL_OUT('no targets');

my @targets = map { m{build/fuzz/fuzz_(\w+)$} ? $1 : () }
              sort glob 'build/fuzz/fuzz_*';
cmp_ok scalar @targets, '>=', 8, 'eight targets or more: ' . "@targets";

for my $t (@targets) {
    my $out = `FUZZ_SECONDS=$secs scripts/fuzz.sh run $t 2>&1`;
    my $rc = $?;
    my ($line) = $out =~ /^(\Q$t\E\s+\d+ execs.*)$/m;
    ok $rc == 0, "$t: ${secs} s without a crash"
        or diag($out);
    note($line // '');
}

for my $f (sort glob 'fuzz/regress/*/*') {
    my $out = `scripts/fuzz.sh repro $f 2>&1`;
    is $?, 0, "replays clean: $f" or diag($out);
}

done_testing();
