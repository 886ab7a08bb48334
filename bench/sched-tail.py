#!/usr/bin/env python3
"""Where the slowest requests wait: requests laid over a scheduler trace.

    sched-tail.py REQTIMES.txt TRACE.txt [COMM...]

REQTIMES.txt: bench/reqtimes output (start and duration of every request,
ns of CLOCK_MONOTONIC).  TRACE.txt: `perf script -F cpu,time,comm,pid,
event,trace` of `perf record -k CLOCK_MONOTONIC -a -e sched:sched_switch
-e sched:sched_wakeup` taken while reqtimes ran.  COMM: the processes of
the request path (default: nginx, reqtimes, wrk).

For the requests at or above the p99 (and, to compare, those near the
median) it prints, per request: what ran on the CPUs meanwhile, and how
long the request path's tasks waited between being woken and running,
split three ways:

  on an idle CPU      the CPU it was woken on was idle: the wait is the
                      CPU coming out of idle (on a VM, the host running
                      the vCPU again)
  behind a task, another CPU idle
                      queued behind another task although a CPU was idle:
                      the scheduler placed it there and did not move it
  behind a task, no CPU idle
                      every CPU was busy
"""

import bisect
import collections
import re
import sys

EVENT = re.compile(r'\s*(.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+'
                   r'sched:(sched_switch|sched_wakeup):\s+(.*)')
SWITCH = re.compile(r'prev_comm=(.*?) prev_pid=(\d+) .*'
                    r'next_comm=(.*?) next_pid=(\d+)')
WAKEUP = re.compile(r'comm=(.*?) pid=(\d+) ')


def load_trace(path):
    """Running intervals per CPU, and (woken, ran, comm, cpu) waits."""
    runs = collections.defaultdict(list)    # cpu -> [(start, end, comm)]
    current = {}
    woken = {}
    waits = []

    with open(path, errors='replace') as f:
        for line in f:
            m = EVENT.match(line)
            if not m:
                continue
            cpu = int(m.group(3))
            t = int(round(float(m.group(4)) * 1e9))
            if m.group(5) == 'sched_wakeup':
                w = WAKEUP.search(m.group(6))
                if w:
                    woken[int(w.group(2))] = t
                continue
            s = SWITCH.search(m.group(6))
            if not s:
                continue
            if cpu in current:
                start, comm = current[cpu]
                runs[cpu].append((start, t, comm))
            nxt_comm, nxt_pid = s.group(3), int(s.group(4))
            current[cpu] = (t, nxt_comm)
            if nxt_pid in woken:
                waits.append((woken.pop(nxt_pid), t, nxt_comm, cpu))

    for cpu in runs:
        runs[cpu].sort()
    waits.sort()
    return runs, waits


def name(comm):
    return 'idle' if comm.startswith('swapper') else re.sub(r'[/:]?\d+$', '',
                                                             comm)


def overlap(runs, cpu, a, b, pred):
    """Time in [a, b) that cpu ran tasks for which pred(comm) holds."""
    iv = runs.get(cpu, [])
    i = max(0, bisect.bisect_left(iv, (a, 0, '')) - 1)
    total = 0
    while i < len(iv) and iv[i][0] < b:
        s, e, c = iv[i]
        if e > a and pred(c):
            total += min(e, b) - max(s, a)
        i += 1
    return total


def profile(reqs, runs, waits, path_comms):
    ran = collections.Counter()
    split = collections.Counter()
    cpus = sorted(runs)
    starts = [w[0] for w in waits]

    def idle(c):
        return c.startswith('swapper')

    for t0, d in reqs:
        t1 = t0 + d
        for cpu in cpus:
            for comm in ('idle', ):
                ran[comm] += overlap(runs, cpu, t0, t1, idle)
            iv = runs[cpu]
            i = max(0, bisect.bisect_left(iv, (t0, 0, '')) - 1)
            while i < len(iv) and iv[i][0] < t1:
                s, e, c = iv[i]
                if e > t0 and not idle(c):
                    ran[name(c)] += min(e, t1) - max(s, t0)
                i += 1
        i = bisect.bisect_left(starts, t0)
        while i < len(waits) and waits[i][0] <= t1:
            w, r, comm, cpu = waits[i]
            i += 1
            if name(comm) not in path_comms:
                continue
            own_idle = overlap(runs, cpu, w, r, idle)
            other_idle = max((overlap(runs, o, w, r, idle)
                              for o in cpus if o != cpu), default=0)
            busy = (r - w) - own_idle
            behind_idle = min(busy, other_idle)
            split['on an idle CPU'] += own_idle
            split['behind a task, another CPU idle'] += behind_idle
            split['behind a task, no CPU idle'] += busy - behind_idle
    n = max(1, len(reqs))
    return ({k: v / n / 1000 for k, v in ran.most_common(8)},
            {k: v / n / 1000 for k, v in split.items()})


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path_comms = set(sys.argv[3:]) or {'nginx', 'reqtimes', 'wrk'}
    with open(sys.argv[1]) as f:
        reqs = [tuple(map(int, line.split())) for line in f if line.strip()]
    runs, waits = load_trace(sys.argv[2])
    durs = sorted(d for _, d in reqs)
    p50, p99 = durs[len(durs) // 2], durs[int(len(durs) * 0.99)]
    slow = [r for r in reqs if r[1] >= p99]
    mid = sorted(reqs, key=lambda r: abs(r[1] - p50))[:len(slow)]
    print('requests %d  p50 %.1f us  p99 %.1f us' % (len(reqs), p50 / 1000,
                                                      p99 / 1000))
    for label, sel in (('at or above p99', slow), ('near the median', mid)):
        ran, split = profile(sel, runs, waits, path_comms)
        print('%d requests %s (us per request)' % (len(sel), label))
        print('  ran meanwhile (CPU time over all CPUs): ' +
              ', '.join('%s %.1f' % kv for kv in ran.items()))
        print('  request path waiting to run: %.1f' % sum(split.values()))
        for k in ('on an idle CPU', 'behind a task, another CPU idle',
                  'behind a task, no CPU idle'):
            print('    %-34s %.1f' % (k, split.get(k, 0)))


if __name__ == '__main__':
    main()
