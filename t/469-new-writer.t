#!/usr/bin/perl
#
# A new writer (a worker started by a reload) is found by the aggregator's
# look at cfcost:writers, once a second.  Its read of the known streams
# must not block past that look (--block is 2 s by default, 5 s here), or
# a new worker's records wait the whole block before they count.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(workers => 1, aggregator => 0);
my $k = $env->create_key(user => 'fresh');
my $content = 'hi [emu:usage 2 3]';

# stop_aggregator/start_aggregator: the harness's own --block 200 comes
# first; a later --block wins
$env->start_aggregator('--block', 5000);

sub total {
    my $r = $env->http('GET', '/api/usage', headers => { 'X-API-Key' => $k->{key} });
    return $r->{json} ? $r->{json}{total_requests} // -1 : -1;
}

sub counted_within {
    my ($want, $limit) = @_;
    my $t0 = time;
    while (time - $t0 < $limit) {
        return time - $t0 if total() >= $want;
        sleep 0.01;
    }
    return undef;
}

is($env->chat(key => $k->{key}, content => $content)->{status}, 200,
   'first worker: 200');
ok(defined counted_within(1, 10), 'first worker: counted');
sleep 0.5;          # the aggregator is now blocked on the first stream

$env->reload_nginx;
is($env->chat(key => $k->{key}, content => $content)->{status}, 200,
   'new worker: 200');
my $t = counted_within(2, 10);
ok(defined $t, 'new worker: counted');
cmp_ok($t // 99, '<', 2.5, sprintf 'new worker: counted within 2.5 s '
       . '(%.2f s), not after the 5 s block', $t // 99);

$env->done;
done_testing();
