#!/usr/bin/perl
# Redis killed (-9) under steady mixed load and started again from its
# AOF, which takes a while to load: the gateway sees LOADING, keeps the
# records, and every request ends up recorded once, with exact totals.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $scale = $ENV{CFCOST_FAULT_SCALE} || 1;

# appendfsync always: what Redis acknowledged is on disk before the reply
# (the gateway frees a record on that reply).  key-load-delay makes the
# restart's loading last long enough to be seen.
my $env = CfcostTest->start(aggregator => 1, redis_args => [
    '--appendonly', 'yes', '--appendfsync', 'always',
    '--key-load-delay', '25',
    '--loading-process-events-interval-bytes', '1024',
]);
$env->{redis_start_timeout} = 60;
my $k = $env->create_key(user => 'restarted');

# filler, in the AOF's base file, so that loading takes a couple of seconds
$env->redis('DEBUG', 'POPULATE', 30000, 'filler');
$env->redis('BGREWRITEAOF');
CfcostLoad::wait_until(30, sub {
    ($env->redis('INFO', 'persistence') // '') =~ /aof_rewrite_in_progress:0/
        && ($env->redis('INFO', 'persistence') // '')
           !~ /aof_rewrite_scheduled:1/;
});

my $name = 'kill -9 + AOF restart';
my $load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                             seconds => 12);
sleep 3;
$env->kill_redis;
sleep 1;
my $t0 = time;
$env->start_redis;                       # returns on PONG, after LOADING
diag(sprintf "%s: Redis loaded its AOF in %.1f s", $name, time - $t0);

my $res = $load->finish;
is(scalar(grep { $_->{status} != 200 } @$res), 0,
   "$name: every request answered 200");

CfcostLoad::account($env, $res, name => $name);

like($env->error_log, qr/LOADING/, "$name: the gateway saw LOADING");
is($env->redis('GET', 'filler:1'), 'value:1', "$name: the AOF was loaded");

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+|cannot store records|LOADING/);
$env->done;
done_testing;
