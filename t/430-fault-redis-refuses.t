#!/usr/bin/perl
# Redis refuses writes for a while under steady mixed load: OOM (maxmemory
# set below what it uses, then restored) and MISCONF (a background save
# that fails, with stop-writes-on-bgsave-error, then one that succeeds).
# Error replies mean "later": every request is recorded once, exactly.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Path qw(make_path remove_tree);
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $scale = $ENV{CFCOST_FAULT_SCALE} || 1;

# "dir" is a protected setting in Redis 7: the test may change it
my $env = CfcostTest->start(aggregator => 1,
    redis_args => ['--enable-protected-configs', 'yes']);
my $k = $env->create_key(user => 'refused');
my @res;

sub phase {
    my ($name, $break, $mend) = @_;
    my $load = CfcostLoad->start($env, key => $k->{key},
                                 clients => 3 * $scale, seconds => 8);
    sleep 2;
    $break->();
    sleep 3;
    $mend->();
    push @res, @{ $load->finish };
}

# OOM: noeviction, and a limit far below what Redis already uses
phase('OOM', sub {
    $env->redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    is($env->redis('CONFIG', 'SET', 'maxmemory', '1mb'), 'OK',
       'OOM: maxmemory 1mb');
    my $r = $env->redis('SET', 'probe', 'x');
    like(ref $r eq 'HASH' ? $r->{error} // '' : '', qr/^OOM/,
         'OOM: Redis refuses writes');
}, sub {
    is($env->redis('CONFIG', 'SET', 'maxmemory', '0'), 'OK',
       'OOM: maxmemory restored');
});

# MISCONF: the save directory vanishes, so BGSAVE fails and Redis stops
# taking writes until a save succeeds again
my $dir = $env->tmp . '/rdb';
make_path($dir);
$env->redis('CONFIG', 'SET', 'dir', $dir);
$env->redis('CONFIG', 'SET', 'save', '3600 1');
$env->redis('CONFIG', 'SET', 'stop-writes-on-bgsave-error', 'yes');
phase('MISCONF', sub {
    remove_tree($dir);
    $env->redis('BGSAVE');
    ok(CfcostLoad::wait_until(10, sub {
        my $r = $env->redis('SET', 'probe', 'x');
        ref $r eq 'HASH' && ($r->{error} // '') =~ /^MISCONF/
    }), 'MISCONF: Redis refuses writes');
}, sub {
    make_path($dir);
    $env->redis('CONFIG', 'SET', 'dir', $dir);   # Redis's cwd was removed
    $env->redis('BGSAVE');
    ok(CfcostLoad::wait_until(10, sub {
        my $r = $env->redis('SET', 'probe', 'x');
        !ref $r && ($r // '') eq 'OK'
    }), 'MISCONF: writes accepted again');
});

is(scalar(grep { $_->{status} != 200 } @res), 0, 'every request answered 200');

my $log = $env->error_log;
like($log, qr/cannot store records now \(OOM/, 'the gateway saw OOM');
like($log, qr/cannot store records now \(MISCONF/, 'the gateway saw MISCONF');

CfcostLoad::account($env, \@res, name => 'OOM and MISCONF');

$env->allow_error(qr/cannot store records|Redis at 127\.0\.0\.1:\d+/);
$env->done;
done_testing;
