#!/usr/bin/perl
#
# The benchmark harness, once, at tiny size (BENCH_TINY=1 bench/run.sh),
# so that `make bench` cannot rot: it must exit 0 within a minute, write a
# result file with every expected key and non-zero throughputs, pass its
# own checks (every response a 200, records in Redis == requests sent),
# and leave no process or run directory behind.  The numbers themselves
# are not judged: a one-second run on a busy machine means nothing.
#
# Results go to a temp dir, not build/bench, so a real `make bench` result
# is never overwritten.  CFCOST_TEST_KEEP=1 keeps that dir.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use File::Temp ();
use File::Basename ();
use Cwd ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

my $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $LIMIT = 60;                 # seconds the smoke run may take
my $HARD = 150;                 # when it is stopped

for my $f ("$ROOT/build/ngx_http_cfcost_module.so", "$ROOT/build/cfcost",
           "$ROOT/bench/run.sh")
{
    next if -e $f;
    fail("prerequisite missing: $f (run make)");
    done_testing();
    exit 255;
}

my $out = File::Temp::tempdir('cfcost-bench-XXXXXX', TMPDIR => 1,
    CLEANUP => !$ENV{CFCOST_TEST_KEEP});
diag("bench output: $out") if $ENV{CFCOST_TEST_KEEP};
my $log = "$out/run.log";

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

sub tail {
    my ($text, $n) = @_;
    my @l = split /\n/, $text;
    @l = @l[-$n .. -1] if @l > $n;
    return join("\n", @l);
}

# run bench/run.sh in its own process group, so that a run that overstays
# can be stopped whole (its trap then stops what it started)
my $t0 = time;
my $pid = fork;
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    POSIX::setpgid(0, 0);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', $log or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
    $ENV{BENCH_TINY} = 1;
    $ENV{BENCH_OUT} = $out;
    delete $ENV{$_} for grep { /^BENCH_/ && !/^BENCH_(TINY|OUT)$/ } keys %ENV;
    { no warnings 'exec'; exec { "$ROOT/bench/run.sh" } "$ROOT/bench/run.sh"; }
    POSIX::_exit(127);
}

my ($status, $stopped);
while (1) {
    my $r = waitpid($pid, WNOHANG);
    if ($r == $pid) { $status = $?; last; }
    if (time - $t0 > $HARD && !$stopped) {
        kill 'TERM', -$pid;
        $stopped = time;
    }
    if ($stopped && time - $stopped > 20) {
        kill 'KILL', -$pid;
        waitpid($pid, 0);
        $status = $?;
        last;
    }
    sleep 0.1;
}
my $elapsed = time - $t0;
my $text = slurp($log);

is($status >> 8, 0, 'BENCH_TINY=1 bench/run.sh exits 0')
    or diag(tail($text, 40));
ok(!$stopped, "it finished by itself");
cmp_ok($elapsed, '<', $LIMIT, sprintf('it took %.1f s (under %d s)',
    $elapsed, $LIMIT));

# --------------------------------------------------------------------------
# the table

like($text, qr/^throughput \(req\/s, saturated\)/m, 'the table: throughput');
like($text, qr/^latency, 1 connection/m, 'the table: one-connection latency');
like($text, qr/^CPU per request \(us, saturated\)/m, 'the table: CPU per request');
like($text, qr/^cfcost worker RSS/m, 'the table: RSS');
like($text, qr/^streamed chat, first body byte/m, 'the table: TTFB');
like($text, qr/^\/api\/usage latency/m, 'the table: /api/usage');
like($text, qr/^bench: all checks passed$/m, 'the table: all checks passed');

# --------------------------------------------------------------------------
# the result file

my $latest = "$out/latest.json";
ok(-s $latest, 'latest.json written');
my @stamped = glob("$out/results-*.json");
is(scalar @stamped, 1, 'one results-<time>.json written');
is(slurp($stamped[0] // ''), slurp($latest), 'latest.json is that result');

my $res = eval { JSON::PP->new->utf8->decode(slurp($latest)) };
ok($res, 'latest.json parses') or diag($@);
$res ||= {};

ok($res->{tiny}, 'marked as a tiny run');
ok($res->{ok}, 'ok: true');

my $m = $res->{machine} || {};
cmp_ok($m->{nproc} // 0, '>', 0, 'machine: nproc');
ok(length($m->{cpu} // ''), "machine: cpu ($m->{cpu})");
ok(length($m->{kernel} // ''), 'machine: kernel');

my $tp = $res->{throughput} || {};
cmp_ok($tp->{baseline_rps_median} // 0, '>', 0, 'baseline throughput > 0');
cmp_ok($tp->{cfcost_rps_median} // 0, '>', 0, 'cfcost throughput > 0');
cmp_ok($tp->{ratio_median} // 0, '>', 0, 'throughput ratio > 0');

# CPU per request from /proc/<pid>/stat: present and positive (the values
# are not judged; one tick is 1/CLK_TCK s, so a 1 s round still shows some)
my $cpu = $res->{cpu_us_per_request} || {};
ok(%$cpu, 'cpu_us_per_request reported');
cmp_ok($cpu->{clk_tck} // 0, '>', 0, 'CPU: clk_tck');
my @cpu_keys = qw(baseline_nginx cfcost_nginx cfcost_nginx_to_settled redis
    cfcost_nginx_over_baseline_nginx redis_aggregator_over_baseline_nginx);
push @cpu_keys, 'aggregator' if -x "$ROOT/build/cfcost-aggregator";
for my $k (@cpu_keys) {
    cmp_ok($cpu->{$k} // 0, '>', 0, "CPU us per request: $k > 0"
        . (defined $cpu->{$k} ? " ($cpu->{$k})" : ''));
}
cmp_ok(scalar @{ $cpu->{rounds} || [] }, '>=', 1, 'CPU: one line per round');

my $lt = $res->{latency_1conn} || {};
for my $sys (qw(baseline cfcost)) {
    for my $p (qw(p50_us p99_us)) {
        cmp_ok($lt->{$sys}{$p} // 0, '>', 0, "1-connection $sys $p > 0");
    }
}
ok(defined $lt->{added_p50_us} && defined $lt->{added_p99_us},
    'added p50/p99 reported');

my $rss = $res->{rss} || {};
cmp_ok($rss->{before_kb} // 0, '>', 0, 'RSS before');
cmp_ok($rss->{after_kb} // 0, '>', 0, 'RSS after');
cmp_ok($rss->{requests} // 0, '>=', 2000, 'RSS run sent at least 2000 requests');

my $tt = $res->{ttfb_stream} || {};
is($tt->{cfcost}{ok}, $tt->{samples}, 'every streamed cfcost request ok');
cmp_ok($tt->{cfcost}{p50_us} // 0, '>', 0, 'TTFB cfcost p50 > 0');
cmp_ok($tt->{baseline}{p50_us} // 0, '>', 0, 'TTFB baseline p50 > 0');

my $rec = $res->{records} || {};
cmp_ok($rec->{sent} // 0, '>', 0, 'records: requests sent > 0');
is($rec->{in_redis}, $rec->{sent}, 'records in Redis == requests sent');
is($rec->{records_dropped}, 0, 'no record dropped');

my %check = map { $_->{name} => $_ } @{ $res->{checks} || [] };
for my $name ('every response a 200 (wrk)',
              'records in Redis == requests sent')
{
    ok($check{$name} && $check{$name}{ok}, "check passed: $name")
        or diag(explain($check{$name}));
}
my @failed = grep { !$_->{ok} } values %check;
is(scalar @failed, 0, 'no check failed') or diag(explain(\@failed));

my $ua = $res->{usage_api} || {};
if (-x "$ROOT/build/cfcost-aggregator") {
    my @rows = @{ $ua->{rows} || [] };
    ok(@rows >= 1, '/api/usage measured (the aggregator is built)');
    my $st = $res->{staleness} || {};
    for my $phase (qw(idle loaded)) {
        my $s = $st->{$phase} || {};
        cmp_ok($s->{n} // 0, '>', 0, "staleness $phase: requests timed");
        is($s->{lost}, 0, "staleness $phase: every request counted");
        cmp_ok($s->{p50_ms} // 0, '>', 0, "staleness $phase: p50 > 0");
    }
    for my $row (@rows) {
        cmp_ok($row->{p50_us} // 0, '>', 0,
            "/api/usage p50 at $row->{records} records: $row->{query}");
    }
} else {
    like($ua->{skipped} // '', qr/aggregator not built/,
        '/api/usage skipped: aggregator not built');
}

# --------------------------------------------------------------------------
# nothing left behind

my ($rundir) = $text =~ /^bench: run directory (\S+)$/m;
ok($rundir, 'run directory announced');
if ($rundir) {
    ok(!-e $rundir, 'run directory removed');
    my @left;
    opendir my $d, '/proc';
    for my $p (grep { /^\d+$/ } readdir $d) {
        my $cmd = slurp("/proc/$p/cmdline");
        push @left, "$p: $cmd" if index($cmd, $rundir) >= 0;
    }
    is(scalar @left, 0, 'no process of the run left') or diag(join "\n", @left);
}

done_testing();
