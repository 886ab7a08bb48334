# A rollup key of the wrong type (here a user's, made a string by hand)
# must not leave a batch half applied.  Redis does not roll a script back:
# the apply script checks every key it will write before writing any, so a
# batch either counts whole or fails whole; the aggregator then applies the
# batch's records one at a time and sets aside, uncounted and logged, only
# those that write to the broken key.  Every total must still be the sum of
# the records counted.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start;
my $good = $env->create_key(user => 'good');
my $bad = $env->create_key(user => 'bad');

is($env->redis('SET', 'cfcost:r:u:bad', 'not a hash'), 'OK',
   'the user rollup of "bad" is a string');

# four records in one batch: the aggregator is not running yet
for my $k ($good, $bad, $good, $bad) {
    my $res = $env->chat(key => $k->{key}, content => 'hi [emu:usage 10 5]');
    is($res->{status}, 200, "a request of $k->{user}: 200");
}
$env->wait_records(4, 10);

$env->start_aggregator('--batch', 64);

my $log = $env->tmp . '/aggregator.log';
my $set_aside = sub {
    open my $fh, '<', $log or return 0;
    return scalar grep { /cannot be applied .*acknowledged without counting/ }
        <$fh>;
};

my $until = time + 15;
sleep 0.1 until $set_aside->() >= 2 || time > $until;
sleep 0.5;                         # the good ones are applied by then too

my $h = sub {
    my ($key, $field) = @_;
    my $v = $env->redis('HGET', $key, $field);
    return ref $v ? 'error' : ($v // 0);
};

is($set_aside->(), 2, 'the two records of "bad" are set aside, logged');
is($h->('cfcost:r:all', 'requests'), 2,
   'all: 2 requests, the good ones only (no half-applied batch)');
is($h->('cfcost:r:u:good', 'requests'), 2, 'user good: 2 requests');
is($h->("cfcost:r:k:$good->{id}", 'requests'), 2, 'key of good: 2 requests');
is($h->("cfcost:r:k:$bad->{id}", 'requests'), 0,
   'key of bad: nothing written for the records set aside');
is($h->('cfcost:r:all', 'input_tokens'),
   $h->('cfcost:r:u:good', 'input_tokens'),
   'all: the input tokens are the good user\'s');
is($env->redis('GET', 'cfcost:r:u:bad'), 'not a hash',
   'the broken key is left as it was');

my $pending = 0;
for my $s (@{ $env->record_streams }) {
    my $p = $env->redis('XPENDING', $s, 'cfcost-aggregator');
    $pending += ref $p eq 'ARRAY' ? $p->[0] : 1000;
}
is($pending, 0, 'every record acknowledged: none stuck pending');

$env->done;
done_testing;
