#!/usr/bin/perl
# gen-records.pl COUNT FIRST_SEQ: COUNT synthetic usage records as Redis
# protocol, for `redis-cli --pipe`, written as one gateway writer does:
# SADD cfcost:writers <writer>, then XADD cfcost:rec:{<writer>} <id> ...
# with explicit, increasing ids; the writer id is made from FIRST_SEQ, so
# each batch is a writer of its own.
#
# The fields are those the gateway writes (common/cfcost_schema.h), with
# plausible values: 50 users with 2 keys each, 8 priced models, timestamps
# spread over the last 30 days, 95% status 200.  Every request_id is unique
# (FIRST_SEQ numbers them), so the aggregator counts each record once.
# Deterministic for a given COUNT and FIRST_SEQ, apart from the time base.

use strict;
use warnings;

my ($count, $first) = @ARGV;
die "usage: gen-records.pl COUNT FIRST_SEQ\n"
    unless defined $first && $count =~ /^\d+$/ && $first =~ /^\d+$/;

my $WRITER = sprintf('wbe%014x', $first);
my $STREAM = "cfcost:rec:{$WRITER}";
my @MODELS = (
    # id, micro-USD per 1M input, output
    ['@cf/meta/llama-3.1-8b-instruct',           282000,  827000],
    ['@cf/meta/llama-3.2-1b-instruct',            27000,  201000],
    ['@cf/meta/llama-3.2-3b-instruct',            51000,  335000],
    ['@cf/meta/llama-3.3-70b-instruct-fp8-fast', 293000, 2253000],
    ['@cf/mistral/mistral-7b-instruct-v0.1',     110000,  190000],
    ['@cf/openai/gpt-oss-120b',                  350000,  750000],
    ['@cf/openai/gpt-oss-20b',                   200000,  300000],
    ['@cf/qwen/qwq-32b',                         660000, 1000000],
);
my @ROUTES = qw(chat chat chat openai native);

my $now = int(time() * 1000);
my $span = 30 * 86400 * 1000;
my $x = 2463534242 ^ $first;            # xorshift32: fast, reproducible

sub rnd {
    my ($n) = @_;
    $x ^= ($x << 13) & 0xffffffff;
    $x ^= $x >> 17;
    $x ^= ($x << 5) & 0xffffffff;
    return $x % $n;
}

sub resp {
    my $out = '*' . scalar(@_) . "\r\n";
    $out .= '$' . length($_) . "\r\n$_\r\n" for @_;
    return $out;
}

binmode STDOUT;
my $buf = resp('SADD', 'cfcost:writers', $WRITER);
for my $i ($first .. $first + $count - 1) {
    my $u = rnd(50);
    my $m = $MODELS[rnd(scalar @MODELS)];
    my $in = 20 + rnd(4000);
    my $out = 1 + rnd(1500);
    my $ok = rnd(20) != 0;
    my $status = $ok ? 200 : (400, 429, 502)[rnd(3)];
    my $cost = $ok ? $in * $m->[1] + $out * $m->[2] : 0;
    $buf .= resp('XADD', $STREAM, "$now-$i",
        v               => '1',
        request_id      => sprintf('be%014x%016x', $$ & 0xffffff, $i),
        ts_ms           => $now - rnd($span),
        key_id          => sprintf('key_bench%02d%d', $u, rnd(2)),
        user            => sprintf('bench-user-%02d', $u),
        model           => $m->[0],
        route           => $ROUTES[rnd(scalar @ROUTES)],
        status          => $status,
        upstream_status => $status,
        input_tokens    => $ok ? $in : 0,
        output_tokens   => $ok ? $out : 0,
        cached_tokens   => 0,
        cost_pusd       => $cost,
        price_input     => $m->[1],
        price_output    => $m->[2],
        price_cached    => '',
        pricing_version => '2026-11-27-bench000',
        latency_us      => 20000 + rnd(2000000),
        flags           => '',
        error           => $ok ? '' : 'cf:3040',
        neurons         => '');
    if (length $buf > 1 << 20) {
        print $buf;
        $buf = '';
    }
}
print $buf;
