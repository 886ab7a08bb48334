#!/usr/bin/perl
# nginx reloaded, then stopped gracefully (quit), each while Redis is
# frozen and records wait in the workers: the exiting workers stay until
# their records are stored, so every request is recorded once.

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
my $k = $env->create_key(user => 'reloaded');
my $master = $env->nginx_pid;

# reload while frozen
my $load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                             seconds => 9);
sleep 2;
kill 'STOP', $env->redis_pid;
sleep 1;
my %old = map { $_ => 1 } $env->worker_pids;
kill 'HUP', $master;
sleep 3;
ok(scalar(grep { kill 0, $_ } keys %old) > 0,
   'reload: old workers wait for Redis with their records');
kill 'CONT', $env->redis_pid;
my @res = @{ $load->finish };
ok(CfcostLoad::wait_until(30, sub { !grep { kill 0, $_ } keys %old }),
   'reload: the old workers exit once their records are stored');

# quit while frozen: the load stops first (a stopping nginx takes no new
# connections), then nginx quits with records held
$load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                          seconds => 4);
sleep 1;
kill 'STOP', $env->redis_pid;
push @res, @{ $load->finish };
kill 'QUIT', $master;
sleep 2;
ok(kill(0, $master), 'quit: nginx waits for Redis with records held');
kill 'CONT', $env->redis_pid;
ok(CfcostLoad::wait_until(30, sub { !CfcostTest::_alive($master) }),
   'quit: nginx exits once the records are stored');
delete $env->{pids}{nginx};

is(scalar(grep { $_->{status} != 200 } @res), 0, 'every request answered 200');

my $log = $env->error_log;
like($log, qr/exiting with \d+ usage records held/,
     'an exiting worker said it holds records');
unlike($log, qr/lost at worker exit/, 'no record lost at worker exit');

$env->start_nginx;
CfcostLoad::account($env, \@res, name => 'reload and quit while frozen',
                    restarted => 1);

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+|cannot store records/);
$env->done;
done_testing;
