#!/usr/bin/python3
#
# log-index-cost: what a log index costs Redis per record, today's design
# against a candidate, on a bare redis-server of its own (nothing else
# runs in it).  A measurement for the performance issue, not part of make
# bench.
#
#   bench/log-index-cost.py [RECORDS [USERS]]      (200000 20)
#
# Records arrive as the aggregator applies them: batches of 200, about
# 25,000 a second of completion time, each request's timestamp (its start)
# up to 3 s before its completion, users picked at random.  Every mode
# sends its batches as EVALSHA with the arguments the aggregator would
# send, 8 in flight, and reads Redis's own CPU time (INFO cpu) around
# them:
#
#   zadd       today: per record, ZADD cfcost:logs:u:<user> and the
#              everyone index, member "<ts_ms>:<writer>:<entry id>"
#   append     a candidate: members grouped in C per (scope, time bucket)
#              and appended to one string per bucket ("<member>\n"...),
#              the bucket noted in a per-scope sorted set when new.
#              Buckets: 100 ms for everyone, USER_BUCKET_MS (1000) per
#              user.  A reader would sort a bucket's members itself.
#   noop-*     the same arguments to a script that does nothing: the cost
#              of sending them, to subtract
#
# Prints, per mode: CPU per record (us), used_memory after, keys.

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
USERS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
BATCH = 200
USER_BUCKET_MS = int(os.environ.get('USER_BUCKET_MS', '1000'))

ZADD = """
local n = tonumber(ARGV[1])
for i = 2, n * 2, 2 do
  redis.call('ZADD', 'cfcost:logs:u:' .. ARGV[i], 0, ARGV[i + 1])
  redis.call('ZADD', 'cfcost:logs:all', 0, ARGV[i + 1])
end
return 0
"""

APPEND = """
for i = 1, #ARGV, 3 do
  local key, bucket, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('APPEND', key .. ':' .. bucket, data) == #data then
    redis.call('ZADD', key, bucket, bucket)
  end
end
return 0
"""


def resp(*args):
    out = [b'*%d\r\n' % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b'$%d\r\n%s\r\n' % (len(a), a))
    return b''.join(out)


class Redis:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile('rb')

    def read(self):
        line = self.f.readline()
        t, body = line[:1], line[1:-2]
        if t in (b'+', b':'):
            return body
        if t == b'-':
            raise RuntimeError(body.decode())
        if t == b'$':
            n = int(body)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b'*':
            return [self.read() for _ in range(int(body))]
        raise RuntimeError('bad reply: %r' % line)

    def cmd(self, *a):
        self.s.sendall(resp(*a))
        return self.read()

    def info(self, section, field):
        for line in self.cmd('INFO', section).decode().split('\r\n'):
            if line.startswith(field + ':'):
                return line.split(':', 1)[1]
        return None

    def cpu(self):
        return (float(self.info('cpu', 'used_cpu_user'))
                + float(self.info('cpu', 'used_cpu_sys')))


def records():
    random.seed(12)
    users = ['user%d' % i for i in range(USERS)]
    t0 = 1767225600000
    out = []
    for i in range(N):
        done = t0 + i // 25
        ts = done - random.randint(0, 3000)
        out.append((random.choice(users),
                    '%d:w%016x:%d-%d' % (ts, 0xabc, done, i), ts))
    return out


def args_zadd(sha, batch):
    a = ['EVALSHA', sha, 0, len(batch)]
    for user, member, _ in batch:
        a += [user, member]
    return a


def args_append(sha, batch):
    groups = {}
    for user, member, ts in batch:
        for scope, bucket in (('cfcost:logs:u:' + user, ts // USER_BUCKET_MS),
                              ('cfcost:logs:all', ts // 100)):
            groups.setdefault((scope, bucket), []).append(member)
    a = ['EVALSHA', sha, 0]
    for (scope, bucket), members in groups.items():
        a += [scope, bucket, '\n'.join(members) + '\n']
    return a


def run(r, name, script, make_args, recs):
    sha = r.cmd('SCRIPT', 'LOAD', script)
    payload = [resp(*make_args(sha, recs[b:b + BATCH]))
               for b in range(0, len(recs), BATCH)]
    r.cmd('FLUSHALL')
    c0 = r.cpu()
    for i in range(0, len(payload), 8):
        chunk = payload[i:i + 8]
        r.s.sendall(b''.join(chunk))
        for _ in chunk:
            r.read()
    c1 = r.cpu()
    print('%-12s %8.3f us/record   used_memory %10s   keys %s'
          % (name, (c1 - c0) / len(recs) * 1e6,
             r.info('memory', 'used_memory'), r.cmd('DBSIZE').decode()))


def main():
    tmp = tempfile.mkdtemp(prefix='cfcost-idx-')
    sock = os.path.join(tmp, 'redis.sock')
    proc = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket',
                             sock, '--save', '', '--appendonly', 'no'],
                            stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        r = Redis(sock)
        recs = records()
        print('%d records, %d users, batches of %d, user buckets %d ms'
              % (N, USERS, BATCH, USER_BUCKET_MS))
        for _ in range(2):
            run(r, 'noop-zadd', 'return 0', args_zadd, recs)
            run(r, 'zadd', ZADD, args_zadd, recs)
            run(r, 'noop-append', 'return 0', args_append, recs)
            run(r, 'append', APPEND, args_append, recs)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


main()
