#!/usr/bin/perl
#
# An entry whose fields are gone (trimmed while pending) is acknowledged,
# not counted, and cfcost_aggregator_records_invalid_total counts it --
# once, even when its batch is read twice: the summed script declines a
# batch with entries at or below the applied position, and the exact
# script applies it after the consumer reads it again.
#
# Set up as an aggregator that died after reading: ten entries pending
# with consumer "x", the first two deleted since, the position after the
# third (its reply lost).  An aggregator started as "x" reads them back.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(aggregator => 0);
my $w = 'w00000000000476a1';
my $s = "cfcost:rec:{$w}";
my $t0 = 1767225600000;
my @ids;

$env->redis('SADD', 'cfcost:writers', $w);
for my $i (1 .. 10) {
    my $id = ($t0 + $i) . '-0';
    my $r = $env->redis('XADD', $s, $id, v => 1,
        request_id => sprintf('%032x', 476_000 + $i), ts_ms => $t0 + $i,
        key_id => 'k1', user => 'u476', model => '@cf/meta/llama-3.1-8b-instruct',
        route => 'chat', status => 200, upstream_status => 200,
        input_tokens => 10, output_tokens => 5, cached_tokens => 0,
        cost_pusd => 1000, latency_us => 1000, flags => '', error => '');
    die "XADD: $r->{error}" if ref $r;
    push @ids, $id;
}
$env->redis('XGROUP', 'CREATE', $s, 'cfcost-aggregator', '0');
$env->redis('XREADGROUP', 'GROUP', 'cfcost-aggregator', 'x', 'COUNT', 100,
            'STREAMS', $s, '>');
$env->redis('XDEL', $s, @ids[0, 1]);
$env->redis('HSET', 'cfcost:applied-pos', $s, $ids[2]);

$env->start_aggregator('--consumer', 'x');

my $until = time + 20;
my ($got, $pending) = (0, -1);
while (time < $until) {
    $got = $env->redis('HGET', 'cfcost:r:all', 'requests') // 0;
    my $x = $env->redis('XPENDING', $s, 'cfcost-aggregator');
    $pending = ref $x eq 'ARRAY' ? $x->[0] : -1;
    last if $got == 7 && $pending == 0;
    sleep 0.1;
}
is($got, 7, 'the seven entries above the position counted');
is($pending, 0, 'nothing left pending');

my $m = $env->http('GET', '/metrics',
    headers => { Authorization => 'Bearer ' . $env->metrics_token });
is($m->{status}, 200, '/metrics: 200');
my ($exact) = $m->{body} =~ /^cfcost_aggregator_batches_exact_total (\d+)$/m;
my ($invalid) = $m->{body} =~ /^cfcost_aggregator_records_invalid_total (\d+)$/m;
cmp_ok($exact // 0, '>=', 1, 'the summed script declined, the exact applied');
is($invalid, 2, 'the two deleted entries counted invalid once each');

$env->done;
done_testing();
