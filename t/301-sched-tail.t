#!/usr/bin/perl
#
# bench/sched-tail.py (BENCH_TAIL=N bench/run.sh) on a scheduler trace
# made by hand, whose answer is known: one slow request during which the
# gateway worker waits 400 us queued behind Redis while the other CPU is
# idle, and the client 10 us on an idle CPU.

use strict;
use warnings;

use Test::More;
use File::Temp ();
use File::Basename ();
use Cwd ();

my $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $dir = File::Temp::tempdir('cfcost-tail-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);

# perf script -F cpu,time,comm,pid,event,trace
my @events = (
    [1, '100.000000', 'switch', 'swapper/1', 0, 'reqtimes', 500],
    [0, '100.000001', 'switch', 'nginx', 400, 'swapper/0', 0],
    [1, '100.000010', 'switch', 'reqtimes', 500, 'swapper/1', 0],
    [0, '100.000100', 'wakeup', 'redis-server', 300, 0],
    [0, '100.000100', 'switch', 'swapper/0', 0, 'redis-server', 300],
    [0, '100.000200', 'wakeup', 'nginx', 400, 0],
    [0, '100.000600', 'switch', 'redis-server', 300, 'nginx', 400],
    [0, '100.000650', 'wakeup', 'reqtimes', 500, 1],
    [0, '100.000650', 'switch', 'nginx', 400, 'swapper/0', 0],
    [1, '100.000660', 'switch', 'swapper/1', 0, 'reqtimes', 500],
    [1, '100.000700', 'switch', 'reqtimes', 500, 'swapper/1', 0],
    [0, '100.001000', 'switch', 'swapper/0', 0, 'perf', 1],
    [1, '100.001000', 'switch', 'swapper/1', 0, 'perf', 1],
);

open(my $tr, '>', "$dir/trace.txt") or die $!;
for my $e (@events) {
    my ($cpu, $t, $kind, @a) = @$e;
    if ($kind eq 'wakeup') {
        printf $tr "%16s %5d [%03d] %s: sched:sched_wakeup: comm=%s pid=%d "
                   . "prio=120 target_cpu=%03d\n",
                   'perf', 1, $cpu, $t, $a[0], $a[1], $a[2];
    } else {
        printf $tr "%16s %5d [%03d] %s: sched:sched_switch: prev_comm=%s "
                   . "prev_pid=%d prev_prio=120 prev_state=S ==> "
                   . "next_comm=%s next_pid=%d next_prio=120\n",
                   $a[0], $a[1], $cpu, $t, @a;
    }
}
close $tr;

# one slow request over the trace, 99 quick ones away from it
open(my $rq, '>', "$dir/times.txt") or die $!;
print $rq "100000000000 700000\n";
printf $rq "%d 50000\n", 200_000_000_000 + $_ * 1_000_000 for 1 .. 99;
close $rq;

my $out = `python3 '$ROOT/bench/sched-tail.py' '$dir/times.txt' '$dir/trace.txt' nginx reqtimes 2>&1`;
is($?, 0, 'sched-tail.py ran') or diag($out);

my ($slow) = $out =~ /(1 requests at or above p99.*?)(?:\n\d+ requests near|\z)/s;
ok(defined $slow, 'a section for the slow request') or diag($out);
$slow //= '';

like($out, qr/p50 50\.0 us\s+p99 700\.0 us/, 'p50 and p99 of the requests');
like($slow, qr/waiting to run: 410\.0/, 'the request path waited 410 us');
like($slow, qr/on an idle CPU\s+10\.0/, '10 us of it on an idle CPU');
like($slow, qr/behind a task, another CPU idle\s+400\.0/,
     '400 us behind Redis while the other CPU idled');
like($slow, qr/behind a task, no CPU idle\s+0\.0/, 'none with every CPU busy');
like($slow, qr/idle 799\.0/, 'idle CPU time while it ran');
like($slow, qr/redis-server 500\.0/, 'Redis ran 500 us meanwhile');

my ($mid) = $out =~ /(requests near the median.*)/s;
like($mid // '', qr/waiting to run: 0\.0/, 'the quick requests waited for nothing');

done_testing();
