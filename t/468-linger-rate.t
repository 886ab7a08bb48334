#!/usr/bin/perl
#
# --linger waits after a short read so that batches grow under load; under
# light load (fewer than --linger-rate records a second) it must not, or
# every record waits --linger before /api/usage counts it.  With --linger
# 1000, requests a few a second must each count well within 1 s; with
# --linger-rate 0 (always linger) the same requests must wait (which shows
# the probe can see a linger at all).  Each case warms up first: a
# writer's first record waits for the aggregator to discover its stream
# (once a second), which is not what this measures.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(aggregator => 0);
my $N = 8;

# ms from each answer until the caller's total_requests counts it
sub staleness {
    my ($key) = @_;
    my $count = sub {
        my $r = $env->http('GET', '/api/usage',
                           headers => { 'X-API-Key' => $key });
        return $r->{json} ? $r->{json}{total_requests} // -1 : -1;
    };
    for (1 .. 20) {
        my $r = $env->chat(key => $key, content => 'hi [emu:usage 1 1]');
        return "warm-up chat answered $r->{status}" if $r->{status} != 200;
    }
    my $until = time + 10;
    sleep 0.05 while $count->() < 20 && time < $until;
    my $seen = $count->();
    return "warm-up requests counted: $seen of 20" if $seen != 20;
    my @ms;
    for (1 .. $N) {
        my $r = $env->chat(key => $key, content => 'hi [emu:usage 10 5]');
        return "chat answered $r->{status}" if $r->{status} != 200;
        my $t0 = time;
        $seen++;
        my $c;
        do { $c = $count->(); sleep 0.002 if $c < $seen }
            while ($c < $seen && time - $t0 < 10);
        return "request $_ never counted" if $c < $seen;
        push @ms, (time - $t0) * 1000;
        sleep 0.1;
    }
    return [sort { $a <=> $b } @ms];
}

for my $case (['default --linger-rate', []], ['--linger-rate 0', ['--linger-rate', 0]]) {
    my ($name, $extra) = @$case;
    $env->start_aggregator('--linger', 1000, @$extra);
    my $k = $env->create_key(user => "u" . int rand 1e9);
    my $ms = staleness($k->{key});
    ok(ref $ms, "$name: every request counted") or diag($ms), next;
    my $med = $ms->[$N / 2];
    diag(sprintf "%s, --linger 1000: staleness ms %s", $name,
         join ' ', map { sprintf '%.0f', $_ } @$ms);
    if (@$extra) {
        cmp_ok($med, '>=', 300, "$name: records wait the linger (median)");
    } else {
        cmp_ok($ms->[-1], '<', 300, "$name: no record waits the linger "
               . "at a few a second (max)");
    }
    $env->stop_aggregator;
}

$env->done;
done_testing();
