#!/usr/bin/perl
# The aggregator killed (-9) three times under steady mixed load and
# started again each time, as make run's supervisor does (t/085 checks
# that it does): its rollups, applied position and acknowledgements change
# in one atomic step, so nothing is counted twice or skipped.  (The stale
# socket a killed aggregator leaves is t/100's case.)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $scale = $ENV{CFCOST_FAULT_SCALE} || 1;

my $env = CfcostTest->start(aggregator => 1);
my $k = $env->create_key(user => 'aggregated');

my $load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                             seconds => 10);
for my $i (1 .. 3) {
    sleep 2;
    my $old = $env->{pids}{aggregator};
    $env->stop_aggregator('KILL');
    ok(!CfcostTest::_alive($old), "kill -9 $i: the aggregator is gone");
    sleep 0.3;
    isnt($env->start_aggregator('--claim-idle', 1000), $old,
         "kill -9 $i: a new aggregator runs");
}
my $res = $load->finish;
is(scalar(grep { $_->{status} != 200 } @$res), 0, 'every request answered 200');

CfcostLoad::account($env, $res, name => 'aggregator kill -9 x3');

$env->done;
done_testing;
