#!/usr/bin/perl
# Redis frozen (SIGSTOP) for 2 s, 10 s and 30 s under steady mixed load:
# every request is recorded once, none twice, and the totals are exact.
# Requests with a cached key keep their latency while Redis is frozen.
#
# CFCOST_FAULT_SCALE=N multiplies the load's clients;
# CFCOST_FAULT_FREEZES=2,10,30 (the default) lists the freezes, in seconds.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $scale = $ENV{CFCOST_FAULT_SCALE} || 1;

for my $freeze (split /,/, $ENV{CFCOST_FAULT_FREEZES} || "2,10,30") {
    my $env = CfcostTest->start(aggregator => 1);
    my $k = $env->create_key(user => "frozen$freeze");
    my $name = "SIGSTOP ${freeze}s";

    my $before = 2;
    my $load = CfcostLoad->start($env, key => $k->{key},
                                 clients => 3 * $scale,
                                 seconds => $before + $freeze + 3);
    sleep $before;
    my $t0 = time;
    kill 'STOP', $env->redis_pid;
    sleep $freeze;
    kill 'CONT', $env->redis_pid;
    my $t1 = time;

    my $res = $load->finish;
    is(scalar(grep { $_->{status} != 200 } @$res), 0,
       "$name: every request answered 200");

    my @pre = grep { $_->{at} + $_->{secs} < $t0 } @$res;
    my @during = grep { $_->{at} >= $t0 + 0.1 && $_->{at} + $_->{secs} < $t1 }
                 @$res;
    cmp_ok(scalar @during, '>', 10, "$name: requests served while frozen");
    my ($p99a, $p99b) = (CfcostLoad::percentile(\@pre, 99),
                         CfcostLoad::percentile(\@during, 99));
    diag(sprintf "%s: p99 %.1f ms before (%d requests), %.1f ms frozen "
         . "(%d requests)", $name, $p99a, scalar @pre, $p99b,
         scalar @during);
    cmp_ok($p99b, '<', 500, "$name: known keys do not wait for Redis");

    CfcostLoad::account($env, $res, name => $name);

    $env->allow_error(qr/Redis at 127\.0\.0\.1:\d+|records are kept|cannot store records/);
    $env->done;
}

done_testing;
