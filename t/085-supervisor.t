#!/usr/bin/perl
#
# `make run` (scripts/run.sh) as a supervisor: the whole gateway started the
# way a user starts it (no CF_API_TOKEN: the emulator is the upstream), in a
# temp CFCOST_VAR on a free port.  Then:
#   - the aggregator is killed (-9) three times: each time it comes back by
#     itself (a new pid) and chat requests keep being answered meanwhile;
#   - redis-server is killed (-9): it comes back, answers PONG, chat works;
#   - SIGTERM to run.sh: every process it started is gone within 10 s;
#   - run.sh again on the same CFCOST_VAR, after ~3M commands have been
#     appended to Redis' AOF (so that loading takes a while and PING gets
#     LOADING first): it waits for a real PONG, comes up with the same demo
#     key and all the data, and stops cleanly again.
#
# The usage totals are checked too: every request answered is counted once.
#
# CFCOST_TEST_KEEP=1 keeps the temp dir (run.sh's output is run.out there).

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use JSON::PP;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use File::Temp ();
use Cwd ();
use File::Basename ();

my $ROOT;
BEGIN { $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..') }
use lib "$ROOT/t/lib";
use CfcostTest ();

$SIG{PIPE} = 'IGNORE';

# the binaries run.sh starts: build/, or CFCOST_BUILD's (see CfcostTest)
my $BUILD = CfcostTest->build_dir;
for my $f ("$BUILD/ngx_http_cfcost_module.so", "$BUILD/cfcost",
           "$BUILD/cfcost-aggregator")
{
    BAIL_OUT("$f is missing (run make)") unless -x $f || -f $f;
}

my $tmp = File::Temp::tempdir('cfcost-sv-XXXXXX', TMPDIR => 1,
    CLEANUP => !$ENV{CFCOST_TEST_KEEP});
chmod 0700, $tmp;                   # private: the workers run as us
diag("cfcost test dir: $tmp") if $ENV{CFCOST_TEST_KEEP};
my $port = CfcostTest::free_port();
my $out = "$tmp/run.out";
my $JSON = JSON::PP->new->utf8->canonical;

my $run_pid;                        # scripts/run.sh, while it runs


sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}

sub cmdline {
    my $c = slurp("/proc/$_[0]/cmdline");
    $c =~ tr/\0/ /;
    return $c;
}

# a live process (not a zombie)
sub alive {
    my ($pid) = @_;
    my $st = slurp("/proc/$pid/stat") or return 0;
    return $st =~ /\)\s+([A-Za-z])/ && $1 ne 'Z';
}

# every process below $pid, from /proc (ppid links)
sub descendants {
    my ($top) = @_;
    my %kids;
    opendir my $d, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $d) {
        my $st = slurp("/proc/$p/stat") or next;
        next unless $st =~ /\)\s+\S+\s+(\d+)/;
        push @{ $kids{$1} }, $p;
    }
    my @all;
    my @queue = ($top);
    while (defined(my $p = shift @queue)) {
        for my $k (@{ $kids{$p} || [] }) {
            push @all, $k;
            push @queue, $k;
        }
    }
    return @all;
}

sub start_run {
    truncate $out, 0 if -e $out;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        delete @ENV{qw(CF_API_TOKEN CF_ACCOUNT_ID CFCOST_UPSTREAM CFCOST_REDIS)};
        $ENV{CFCOST_VAR} = $tmp;
        $ENV{CFCOST_PORT} = $port;
        $ENV{CFCOST_BUILD} = $BUILD;
        # under CFCOST_SANITIZE: nginx with the ASan runtime preloaded
        $ENV{CFCOST_NGINX} = $CfcostTest::NGINX if $CfcostTest::SANITIZE;
        exec 'bash', "$ROOT/scripts/run.sh" or POSIX::_exit(127);
    }
    $run_pid = $pid;
    # the demo key is printed once everything is up
    my $until = time + 40;
    while (time < $until) {
        if (slurp($out) =~ /demo API key: (cfk_\S+)/) {
            return $1;
        }
        if (waitpid($pid, WNOHANG) == $pid) {
            undef $run_pid;
            diag("run.sh exited early (status $?):\n" . slurp($out));
            return;
        }
        sleep 0.1;
    }
    diag("run.sh did not print the demo key within 40 s:\n" . slurp($out));
    return;
}

# SIGTERM to run.sh; returns (seconds it took, descendants still alive)
sub stop_run {
    my @kids = descendants($run_pid);
    my $t0 = time;
    kill 'TERM', $run_pid;
    my $gone;
    while (time < $t0 + 20) {
        if (waitpid($run_pid, WNOHANG) == $run_pid) { $gone = 1; last }
        sleep 0.05;
    }
    unless ($gone) {
        kill 'KILL', $run_pid;
        waitpid($run_pid, 0);
    }
    # run.sh has returned; its children must be gone too (give the kernel
    # a moment to finish the last exits)
    my @left = grep { alive($_) } @kids;
    my $w = time + 2;
    while (@left && time < $w) { sleep 0.05; @left = grep { alive($_) } @left }
    my $took = time - $t0;
    undef $run_pid;
    return ($took, map { "$_ " . cmdline($_) } @left);
}

END {
    # a test that died half-way leaves nothing behind
    if ($run_pid) {
        my @kids = descendants($run_pid);
        kill 'TERM', $run_pid;
        my $until = time + 15;
        sleep 0.1 while time < $until && waitpid($run_pid, WNOHANG) == 0;
        kill 'KILL', grep { alive($_) } @kids;
    }
}

sub http {
    my ($method, $path, %o) = @_;
    my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => $o{timeout} // 10);
    return $ua->request($method, "http://127.0.0.1:$port$path", {
        headers => $o{headers} || {},
        (defined $o{body} ? (content => $o{body}) : ()),
    });
}

sub chat {
    my ($key) = @_;
    my $r = http('POST', '/api/ai/chat',
        headers => { 'X-API-Key' => $key, 'Content-Type' => 'application/json' },
        body => $JSON->encode({
            model    => '@cf/meta/llama-3.1-8b-instruct',
            messages => [{ role => 'user', content => 'hi' }],
        }));
    my $j = eval { $JSON->decode($r->{content}) } || {};
    return ($r->{status}, $j, $r->{content});
}

my $answered = 0;                 # chat requests answered 200

sub chat_ok {
    my ($key, $name) = @_;
    my ($st, $j, $body) = chat($key);
    $answered++ if $st == 200;
    ok($st == 200 && defined $j->{response} && defined $j->{cost_usd}, $name)
        or diag("status $st: $body");
}

# the aggregator's total_requests reaches $n within 15 s, and stops there.
# Under CFCOST_SANITIZE within 60 s: with the slower binaries a kill -9 often
# lands between an entry's delivery and its XACK, and an entry left pending
# by a killed aggregator comes back only by XAUTOCLAIM, once idle for the
# claim-idle time (30 s; the new aggregator tries every 15 s).
sub total_is {
    my ($n, $name) = @_;
    my $admin = slurp("$tmp/admin-token");
    $admin =~ s/\s+//g;
    my $total = -1;
    my $until = time + ($CfcostTest::SANITIZE ? 60 : 15);
    while (time < $until) {
        my $r = http('GET', '/api/usage', headers => { 'X-API-Key' => $admin });
        my $j = eval { $JSON->decode($r->{content}) } || {};
        $total = $j->{total_requests} // -1;
        last if $total >= $n;
        sleep 0.1;
    }
    is($total, $n, $name);
}

sub pidfile {
    my $p = slurp("$tmp/$_[0].pid");
    return $p =~ /^(\d+)/ ? $1 : undef;
}

# waits for NAME.pid to name a live process other than $old whose command
# line matches $re; returns its pid or undef
sub wait_new_pid {
    my ($name, $old, $re, $timeout) = @_;
    my $until = time + $timeout;
    while (time < $until) {
        my $p = pidfile($name);
        return $p if $p && $p != $old && alive($p) && cmdline($p) =~ $re;
        sleep 0.05;
    }
    return undef;
}

# redis-cli as the admin (Redis's default user), as the README says (the password from the
# environment, never on a command line)
sub rcli {
    my ($args) = @_;
    my ($pass) = slurp("$tmp/redis-admin.auth") =~ /^\S+ (\S+)/;
    local $ENV{REDISCLI_AUTH} = $pass // '';
    return `redis-cli --no-auth-warning -s '$tmp/redis.sock' $args 2>&1`;
}

sub redis_ping {
    my $r = rcli('ping');
    chomp $r;
    return $r;
}

my $AGG_RE = qr/cfcost-aggregator .*\Q$tmp\E/;
my $REDIS_RE = qr/redis-server .*\Q$tmp\E/;


# ---------------------------------------------------------------------------
# first start

my $key = start_run();
ok($key, 'run.sh starts and prints a demo key')
    or BAIL_OUT('run.sh did not start');
like(slurp($out), qr/CF_API_TOKEN is not set: using the local Workers AI emulator/,
    'the emulator is the upstream');
chat_ok($key, 'chat answers 200');

for my $name (qw(redis-server aggregator emulator)) {
    my $p = pidfile($name);
    ok($p && alive($p), "$name.pid names a live process");
}
like(cmdline(pidfile('aggregator') // 0), $AGG_RE, 'aggregator.pid is our aggregator');
like(cmdline(pidfile('redis-server') // 0), $REDIS_RE, 'redis-server.pid is our Redis');

# ---------------------------------------------------------------------------
# another local user reaches nothing: not the store, not the aggregator
# (which trusts the identity headers of whoever connects), not a token

is((stat $tmp)[2] & 07777, 0700, 'CFCOST_VAR is 0700');
for my $f (qw(admin-token metrics-token demo-key redis-gateway.auth
               redis-aggregator.auth redis-cli.auth redis-admin.auth
               redis-users.acl)) {
    is((stat "$tmp/$f")[2] & 0077, 0, "$f: no access for group or others");
}
like(`redis-cli -s '$tmp/redis.sock' ping 2>&1`, qr/NOAUTH/,
     'Redis answers nothing without a password, even to its own user');
is((stat "$tmp/redis.sock")[2] & 0077, 0, 'redis.sock: owner only');
is((stat "$tmp/agg.sock")[2] & 0077, 0, 'agg.sock: owner only');

SKIP: {
    my $nobody = getpwnam('nobody');
    skip 'needs root to act as another user', 4 unless $> == 0 && defined $nobody;
    for my $c (['redis.sock', "PING\r\n", 'Redis'],
               ['agg.sock', "GET /api/usage HTTP/1.0\r\nX-Cfcost-Admin: 1\r\n\r\n",
                'the aggregator'])
    {
        my ($sock, $req, $what) = @$c;
        # a child that becomes nobody and tries
        my $pid = open(my $fh, '-|');
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            POSIX::setgid((getpwnam('nobody'))[3]);
            POSIX::setuid($nobody);
            my $s = IO::Socket::UNIX->new(Peer => "$tmp/$sock", Type => SOCK_STREAM);
            if (!$s) { print "refused: $!"; POSIX::_exit(0) }
            print $s $req;
            my $got = '';
            sysread($s, $got, 200);
            print "connected: $got";
            POSIX::_exit(0);
        }
        my $got = join '', <$fh>;
        close $fh;
        like($got, qr/^refused: Permission denied/, "user nobody cannot reach $what")
            or diag($got);
    }
    my $pid = open(my $fh, '-|');
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setgid((getpwnam('nobody'))[3]);
        POSIX::setuid($nobody);
        print open(my $t, '<', "$tmp/admin-token") ? 'read' : "refused: $!";
        POSIX::_exit(0);
    }
    like(join('', <$fh>), qr/^refused/, 'user nobody cannot read the admin token');
    close $fh;
    ok(1, 'and the gateway answered as the invoking user (chat above)');
}

# ---------------------------------------------------------------------------
# the aggregator, killed three times

for my $round (1 .. 3) {
    my $old = pidfile('aggregator');
    # (never a pid that is not our aggregator)
    unless ($old && cmdline($old) =~ $AGG_RE) {
        fail("round $round: aggregator.pid names our aggregator");
        last;
    }
    kill 'KILL', $old;
    # requests keep being answered while it is away
    chat_ok($key, "round $round: chat while the aggregator is down");
    my $new = wait_new_pid('aggregator', $old, $AGG_RE, 8);
    ok($new, "round $round: the aggregator is back with a new pid")
        or diag(slurp($out));
    chat_ok($key, "round $round: chat after the aggregator came back");
    # nginx reaches the new aggregator (not a 502 from a dead socket)
    my $st;
    my $until = time + 5;
    while (time < $until) {
        $st = http('GET', '/healthz')->{status};
        last if $st != 502 && $st != 504;
        sleep 0.1;
    }
    ok($st != 502 && $st != 504, "round $round: /healthz reaches the aggregator")
        or diag("status $st");
}
total_is($answered, 'every request answered while the aggregator was '
         . 'killed three times is counted once');

my @lines = slurp($out) =~ /^cfcost: aggregator exited \(status \d+\); restarting in [\d.]+ s$/mg;
is(scalar @lines, 3, 'one "aggregator exited ...; restarting" line per kill')
    or diag(slurp($out));

# ---------------------------------------------------------------------------
# Redis, killed once

{
    my $old = pidfile('redis-server');
    $old && cmdline($old) =~ $REDIS_RE
        or BAIL_OUT('redis-server.pid does not name our Redis');
    kill 'KILL', $old;
    my $new = wait_new_pid('redis-server', $old, $REDIS_RE, 10);
    ok($new, 'redis-server is back with a new pid');
    my $pong = '';
    my $until = time + 10;
    while (time < $until) { $pong = redis_ping(); last if $pong eq 'PONG'; sleep 0.1 }
    is($pong, 'PONG', 'the new Redis answers PONG');
    like(slurp($out), qr/^cfcost: redis-server exited \(status \d+\); restarting in [\d.]+ s$/m,
        'its exit is logged');
    # allow the workers' reconnect backoff a moment
    my ($st, $j, $body);
    $until = time + 5;
    while (time < $until) { ($st, $j, $body) = chat($key); last if $st == 200; sleep 0.2 }
    is($st, 200, 'chat works after the Redis restart') or diag($body);
    $answered++ if $st == 200;
    total_is($answered, 'and is counted; nothing acknowledged before the '
             . 'kill is lost');
}

# ---------------------------------------------------------------------------
# SIGTERM: every child gone

{
    my ($took, @left) = stop_run();
    ok($took < 10, sprintf 'run.sh stopped within 10 s (%.1f s)', $took);
    is(scalar @left, 0, 'no child of run.sh is left') or diag(join "\n", @left);
    opendir my $d, '/proc' or die "/proc: $!";
    my @with_tmp = grep { /^\d+$/ && $_ != $$ && alive($_)
                          && index(cmdline($_), $tmp) >= 0 } readdir $d;
    is(scalar @with_tmp, 0, 'no process runs with the temp dir')
        or diag(join "\n", map { "$_ " . cmdline($_) } @with_tmp);
    like(slurp($out), qr/^cfcost: stopping$/m, 'it said it was stopping');
    my ($after) = slurp($out) =~ /^cfcost: stopping$(.*)\z/ms;
    unlike($after // '', qr/restarting/, 'nothing was restarted during the stop');
}

# ---------------------------------------------------------------------------
# restart on the same var/, with a large AOF to load

{
    my $dir = "$tmp/appendonlydir";
    my ($manifest) = glob "$dir/*.manifest";
    my ($incr) = slurp($manifest // '') =~ /^file (\S+) seq \d+ type i$/m;
    ok($incr && -f "$dir/$incr", 'Redis keeps an AOF under CFCOST_VAR')
        or diag(slurp($manifest // ''));
    my $n = 3_000_000;
    if ($incr) {
        # ballast: N commands appended to the AOF, as Redis would have
        # written them; loading them takes a while
        open my $fh, '>>', "$dir/$incr" or die "$dir/$incr: $!";
        my $cmd = "*2\r\n\$4\r\nINCR\r\n\$19\r\ncfcost:test:ballast\r\n";
        my $chunk = $cmd x 100_000;
        print $fh "*2\r\n\$6\r\nSELECT\r\n\$1\r\n0\r\n";
        print $fh $chunk for 1 .. $n / 100_000;
        close $fh or die "$dir/$incr: $!";
    }

    my $t0 = time;
    my $key2 = start_run();
    ok($key2, sprintf 'run.sh starts again on the same var dir (%.1f s)', time - $t0)
        or diag(slurp("$tmp/redis.log"));
    is($key2, $key, 'with the same demo key (Redis kept it)');
    like(slurp($out), qr/^cfcost: Redis is loading its data\.\.\.$/m,
        'it waited through LOADING');
    is(rcli('get cfcost:test:ballast'), "$n\n",
        'all the AOF was loaded before it went on');
    chat_ok($key2, 'chat answers 200 after the restart') if $key2;

    my ($took, @left) = stop_run();
    ok($took < 10, sprintf 'run.sh stopped within 10 s (%.1f s)', $took);
    is(scalar @left, 0, 'no child of run.sh is left') or diag(join "\n", @left);
}

CfcostTest::sanitizer_ok();
done_testing;
