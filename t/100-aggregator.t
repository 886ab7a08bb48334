#!/usr/bin/perl
#
# cfcost-aggregator, end to end without nginx: its own redis-server, records
# written with XADD exactly as the gateway writes them (each writer its own
# stream, its own increasing entry ids, after SADD cfcost:writers), the
# aggregator on a loopback port, and the identity headers nginx would set,
# set by the test.
#
# Every number the API returns is checked against an independent sum
# computed here (Math::BigInt for picodollars).  Then the hard cases: a
# kill -9 in the middle of a backlog, entries left pending by a dead
# consumer, two aggregators at once, a Redis restart, retention, a writer
# appearing later, a consumer group destroyed under the aggregator, --block
# above --redis-timeout, a stale unix socket, Redis refusing with LOADING-
# like errors for a while.
#
# CFCOST_TEST_KEEP=1 keeps the temp dir (logs of redis and the aggregators).

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG strftime);
use Time::HiRes qw(time sleep);
use File::Temp ();
use Math::BigInt;
use Math::BigFloat;
use Cwd ();
use File::Basename ();

my $ROOT;
BEGIN { $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..') }
use lib "$ROOT/t/lib";
use CfcostTest ();      # CFCOST_BUILD, and CFCOST_SANITIZE's options
my $AGG = $ENV{CFCOST_TEST_AGGREGATOR} || $CfcostTest::AGGREGATOR;
my $REDIS_BIN = $ENV{CFCOST_TEST_REDIS} || 'redis-server';
my $PREFIX = 'cfcost:rec:{';
my @WRITERS = ('w00000000000000a1', 'w00000000000000b2', 'w00000000000000c3');
my %LAST_ID;        # writer -> [ms, seq] of its last entry
my $GROUP = 'cfcost-aggregator';
my $DAY_MS = 86400000;

$SIG{PIPE} = 'IGNORE';
$ENV{TZ} = 'UTC';
POSIX::tzset();

unless (-x $AGG) {
    fail("prerequisite missing: $AGG (build it: see aggregator/)");
    done_testing();
    exit 255;
}

my $TMP = File::Temp::tempdir('cfcost-agg-XXXXXX', TMPDIR => 1,
    CLEANUP => !$ENV{CFCOST_TEST_KEEP});
diag("test dir: $TMP") if $ENV{CFCOST_TEST_KEEP};

my $JSON = JSON::PP->new->utf8->allow_bignum;
my $HTTP = HTTP::Tiny->new(timeout => 10, keep_alive => 0);

my %PIDS;           # name -> pid of what we started
my %USED_PORTS;


# --------------------------------------------------------------------------
# processes

sub free_port {
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => 0, Proto => 'tcp', Listen => 1) or die "bind: $!";
        my $p = $s->sockport;
        close $s;
        return $p unless $USED_PORTS{$p}++;
    }
    die "no free port";
}


sub spawn {
    my ($name, $log, @cmd) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    $PIDS{$name} = $pid;
    return $pid;
}


# Waits up to $secs for $pid to exit; returns its status, or undef.
sub reap {
    my ($pid, $secs) = @_;
    my $end = time + $secs;
    while (time < $end) {
        my $r = waitpid($pid, WNOHANG);
        return $? if $r == $pid;
        return undef if $r == -1;
        sleep 0.02;
    }
    return undef;
}


# Signals a process and waits (bounded); SIGKILL if it does not exit.
sub stop {
    my ($name, $sig, $secs) = @_;
    my $pid = delete $PIDS{$name} or return undef;
    kill $sig, $pid;
    my $st = reap($pid, $secs // 15);
    return $st if defined $st;
    kill 'KILL', $pid;
    reap($pid, 5);
    return undef;
}


sub wait_for {
    my ($secs, $cond) = @_;
    my $end = time + $secs;
    while (time < $end) {
        my $ok = eval { $cond->() };
        return $ok if $ok;
        sleep 0.05;
    }
    return 0;
}


sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}


END {
    for my $name (keys %PIDS) {
        kill 'KILL', $PIDS{$name};
        waitpid($PIDS{$name}, 0);
    }
}


# --------------------------------------------------------------------------
# a minimal RESP client, with pipelining

package Resp {
    sub new {
        my ($class, $port) = @_;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $port, Proto => 'tcp', Timeout => 5) or return undef;
        binmode $s;
        return bless { s => $s, buf => '' }, $class;
    }

    sub enc {
        my $out = '*' . scalar(@_) . "\r\n";
        for my $a (@_) {
            my $v = "$a";
            utf8::encode($v) if utf8::is_utf8($v);
            $out .= '$' . length($v) . "\r\n$v\r\n";
        }
        return $out;
    }

    sub put {
        my ($self, $data) = @_;
        my $off = 0;
        while ($off < length $data) {
            my $n = syswrite($self->{s}, $data, length($data) - $off, $off);
            die "redis write: $!\n" unless defined $n;
            $off += $n;
        }
    }

    sub fill {
        my ($self) = @_;
        my $sel = IO::Select->new($self->{s});
        die "redis read timeout\n" unless $sel->can_read(20);
        my $n = sysread($self->{s}, my $chunk, 1 << 16);
        die "redis closed the connection\n" unless $n;
        $self->{buf} .= $chunk;
    }

    sub line {
        my ($self) = @_;
        my $i;
        $self->fill while ($i = index($self->{buf}, "\r\n")) < 0;
        my $l = substr($self->{buf}, 0, $i);
        substr($self->{buf}, 0, $i + 2, '');
        return $l;
    }

    sub reply {
        my ($self) = @_;
        my $l = $self->line;
        my ($t, $v) = (substr($l, 0, 1), substr($l, 1));
        return $v if $t eq '+' || $t eq ':';
        return { err => $v } if $t eq '-';
        if ($t eq '$') {
            return undef if $v < 0;
            $self->fill while length($self->{buf}) < $v + 2;
            my $s = substr($self->{buf}, 0, $v);
            substr($self->{buf}, 0, $v + 2, '');
            return $s;
        }
        if ($t eq '*') {
            return undef if $v < 0;
            return [ map { $self->reply } 1 .. $v ];
        }
        die "bad RESP line: $l\n";
    }

    sub cmd {
        my ($self, @a) = @_;
        $self->put(enc(@a));
        return $self->reply;
    }

    sub pipeline {
        my ($self, $cmds) = @_;
        my @out;
        for (my $i = 0; $i < @$cmds; $i += 1000) {
            my $j = $i + 999 < $#$cmds ? $i + 999 : $#$cmds;
            $self->put(join '', map { enc(@$_) } @$cmds[$i .. $j]);
            push @out, $self->reply for $i .. $j;
        }
        return \@out;
    }
}


# --------------------------------------------------------------------------
# Redis

my $RPORT = free_port();
my $R;

sub start_redis {
    spawn('redis', "$TMP/redis.out", $REDIS_BIN, '--port', $RPORT,
        '--bind', '127.0.0.1', '--dir', $TMP, '--appendonly', 'yes',
        '--save', '', '--daemonize', 'no', '--logfile', "$TMP/redis.log");
    my $ok = wait_for(10, sub {
        my $c = Resp->new($RPORT) or return 0;
        my $r = $c->cmd('PING');
        return 0 unless defined $r && !ref $r && $r eq 'PONG';
        $R = $c;
        return 1;
    });
    die "redis-server did not start:\n" . slurp("$TMP/redis.log") unless $ok;
}

start_redis();


# --------------------------------------------------------------------------
# records, and the sums they should make

my $NOW = int(time * 1000);
my $NOW_MS = sub { int(time * 1000) };
my $seq = 0;
my %SEEN;           # request_id -> 1 once counted
my %EXP;            # scope -> {total, model{}, day{}}
my %RECS_OF;        # user -> [request ids]
my %ROWS;           # request_id -> record hash
my $DUP_ENTRIES = 0;

my @USERS = ('alice', 'bob', 'carol', 'd:ave');
my @MODELS = ('@cf/meta/llama-3.1-8b-instruct', '@cf/qwen/qwen1.5-7b-chat-awq',
    'model:with:colons', "we\"ird\\model", '');

srand(20240501);


sub day_of { strftime('%Y-%m-%d', gmtime(int($_[0] / 1000))) }


sub bucket_add {
    my ($b, $r) = @_;
    $b->{requests}++;
    $b->{input} += $r->{input_tokens};
    $b->{output} += $r->{output_tokens};
    $b->{cached} += $r->{cached_tokens};
    $b->{cost} //= Math::BigInt->new(0);
    $b->{cost}->badd(Math::BigInt->new($r->{cost_pusd}));
}


sub account {
    my ($r) = @_;
    if ($SEEN{$r->{request_id}}++) {
        $DUP_ENTRIES++;
        return;
    }
    $ROWS{$r->{request_id}} = $r;
    push @{ $RECS_OF{$r->{user}} }, $r->{request_id};
    my $d = day_of($r->{ts_ms});
    for my $scope ('*', $r->{user}) {
        my $e = $EXP{$scope} //= {};
        bucket_add($e->{total} //= {}, $r);
        bucket_add($e->{model}{ $r->{model} } //= {}, $r);
        bucket_add($e->{day}{$d} //= {}, $r);
    }
}


# A record as the gateway writes it; %o overrides.
sub make_record {
    my (%o) = @_;
    $seq++;
    my $user = $o{user} // $USERS[int rand @USERS];
    my $in = int rand 4000;
    my $cost;
    my $p = rand;
    if ($p < 0.05) {
        $cost = '12345678901234567';            # beyond 2^53: no doubles
    } elsif ($p < 0.2) {
        $cost = 1099511627776 + int(rand(1e12)); # beyond 2^40: direct path
    } else {
        $cost = int(rand(5e9));
    }
    my $ts = $o{ts} // ($NOW - int(rand 75) * $DAY_MS - int(rand $DAY_MS));
    my $status = (200, 200, 200, 200, 400, 429, 502)[int rand 7];
    my %r = (
        v               => '1',
        request_id      => $o{request_id} // sprintf('%016x%016x', $$, $seq),
        ts_ms           => $ts,
        key_id          => "key_${user}_" . int(rand 2),
        user            => $user,
        model           => $o{model} // $MODELS[int rand @MODELS],
        route           => (qw(chat openai native))[int rand 3],
        status          => $status,
        upstream_status => $status,
        input_tokens    => $in,
        output_tokens   => int rand 3000,
        cached_tokens   => int rand($in + 1),
        cost_pusd       => $cost,
        price_input     => '282000',
        price_output    => '827000',
        price_cached    => '',
        pricing_version => '1-0123abcd',
        latency_us      => int rand 5e6,
        flags           => (rand() < 0.2 ? 'streamed,estimated' : ''),
        error           => ($status >= 400 ? "cf:5007, \"quoted\"" : ''),
        neurons         => '',
    );
    return \%r;
}


my @FIELDS = qw(v request_id ts_ms key_id user model route status
    upstream_status input_tokens output_tokens cached_tokens cost_pusd
    price_input price_output price_cached pricing_version latency_us flags
    error neurons);


sub stream_of { $PREFIX . $_[0] . '}' }

sub streams { map { stream_of($_) } sort keys %LAST_ID }

# The next entry id of a writer: its own clock, strictly increasing.
sub next_id {
    my ($w) = @_;
    my $ms = int(time * 1000);
    my $l = $LAST_ID{$w} //= [0, 0];
    if ($ms > $l->[0]) { @$l = ($ms, 0) } else { $l->[1]++ }
    return "$l->[0]-$l->[1]";
}

# A record as schema 2 writes it: one field, the fields as netstrings.
sub packed {
    my ($r) = @_;
    my %f = (%$r, v => '2');
    return join '', map { length($_) . ":$_," }
        map { my $v = $f{$_} // ''; utf8::encode($v) if utf8::is_utf8($v); $v }
        @CfcostTest::PACKED;
}

# XADDs records (pipelined) as writers do, spread over @writers (default
# @WRITERS), and accounts for them: every other one as the gateway writes
# it now (schema 2), the others as an older gateway did (schema 1).
sub add_records_by {
    my ($writers, @recs) = @_;
    my $i = 0;
    my @cmds = map { [ 'SADD', 'cfcost:writers', $_ ] } @$writers;
    for my $r (@recs) {
        my $w = $writers->[$i++ % @$writers];
        push @cmds, [ 'XADD', stream_of($w), next_id($w),
            $i % 2 ? ('r', packed($r)) : map { ($_, $r->{$_}) } @FIELDS ];
    }
    my $res = $R->pipeline(\@cmds);
    for my $k (0 .. $#$res) {
        die "SADD/XADD failed: $res->[$k]{err}\n" if ref $res->[$k];
    }
    account($_) for @recs;
}

sub add_records { add_records_by(\@WRITERS, @_) }

sub sum_streams {
    my ($cmd) = @_;
    my $n = 0;
    $n += $cmd->($_) for streams();
    return $n;
}


sub random_records {
    my ($n, %o) = @_;
    return map { make_record(%o) } 1 .. $n;
}


sub unique_count { scalar keys %ROWS }


sub usd6 {
    my ($pusd) = @_;
    my $micro = Math::BigInt->new($pusd)->badd(500000)->bdiv(1000000);
    my ($i, $f) = $micro->copy->bdiv(1000000);
    return sprintf('%s.%06d', $i->bstr, $f->numify);
}


# --------------------------------------------------------------------------
# the aggregator

my ($APORT, $C1PORT);

sub start_agg {
    my ($name, @args) = @_;
    my $port = free_port();
    spawn($name, "$TMP/$name.log", $AGG, '--listen', "127.0.0.1:$port",
        '--redis', "127.0.0.1:$RPORT", '--claim-idle', '1000',
        '--dedup-ttl', '691200',        # this test writes duplicates itself
        '--metrics-users',              # section 7 reads per-user series
        '--log-level', 'info', @args);
    my $ok = wait_for(10, sub {
        my $r = $HTTP->get("http://127.0.0.1:$port/healthz");
        return $r->{status} == 200;
    });
    ok($ok, "$name answers /healthz") or diag(slurp("$TMP/$name.log"));
    return $port;
}


sub get {
    my ($port, $path, %h) = @_;
    my %headers;
    $headers{'X-Cfcost-User'} = $h{user} if defined $h{user};
    $headers{'X-Cfcost-Key-Id'} = $h{key} if defined $h{key};
    $headers{'X-Cfcost-Admin'} = $h{admin} if defined $h{admin};
    my $r = $HTTP->get("http://127.0.0.1:$port$path",
        { headers => \%headers });
    my $json = eval { $JSON->decode($r->{content}) };
    return ($r->{status}, $json, $r->{content}, $r->{headers});
}


sub admin_total {
    my ($port) = @_;
    my ($st, $j) = get($port, '/api/usage', admin => 1);
    return $st == 200 ? $j->{total_requests} : -1;
}


# Checks a /api/usage answer against expected buckets.
sub check_usage {
    my ($what, $j, $raw, $exp, $models) = @_;
    $exp //= {};
    my $t = $exp->{total} // {};
    is($j->{total_requests}, $t->{requests} // 0, "$what: total_requests");
    is($j->{total_input_tokens}, $t->{input} // 0, "$what: input tokens");
    is($j->{total_output_tokens}, $t->{output} // 0, "$what: output tokens");
    is($j->{total_cached_tokens}, $t->{cached} // 0, "$what: cached tokens");
    is($j->{total_tokens}, ($t->{input} // 0) + ($t->{output} // 0),
        "$what: total_tokens");
    my ($cost) = $raw =~ /"total_cost_usd":([0-9.]+)/;
    is($cost, usd6($t->{cost} // 0), "$what: total_cost_usd exact, once "
        . "rounded");

    my $bad = 0;
    my %want = %{ $models // {} };
    for my $m (sort keys %want) {
        my $g = $j->{by_model}{$m};
        my $e = $want{$m};
        unless ($g && $g->{requests} == $e->{requests}
            && $g->{input_tokens} == $e->{input}
            && $g->{output_tokens} == $e->{output}
            && $g->{tokens} == $e->{input} + $e->{output}
            && Math::BigFloat->new("$g->{cost}")
                   ->bcmp(Math::BigFloat->new(usd6($e->{cost}))) == 0)
        {
            $bad++;
            diag("$what: model '$m': got " . JSON::PP->new->canonical
                ->allow_bignum->encode($g // {}) . ", want requests "
                . "$e->{requests} cost " . usd6($e->{cost}));
        }
    }
    is($bad, 0, "$what: by_model matches for every model");
    is(scalar(keys %{ $j->{by_model} }), scalar(keys %want),
        "$what: no other models");

    my @rank = @{ $j->{by_model_ranked} // [] };
    my $sorted = 1;
    for my $i (1 .. $#rank) {
        $sorted = 0 if Math::BigFloat->new("$rank[$i]{cost}")
            ->bcmp(Math::BigFloat->new("$rank[$i - 1]{cost}")) > 0;
    }
    ok($sorted && @rank == keys %want, "$what: by_model_ranked by cost");

    my @costs = $raw =~ /"(?:cost|total_cost_usd)":([0-9.eE+-]+)/g;
    is(scalar(grep { !/^\d+\.\d{6}$/ } @costs), 0,
        "$what: every money field has exactly 6 decimals");
}


# Sums the per-day buckets of $scope between two dates (inclusive).
sub range_exp {
    my ($scope, $from, $to) = @_;
    my %e;
    for my $d (keys %{ $EXP{$scope}{day} // {} }) {
        next if $d lt $from || $d gt $to;
        my $b = $EXP{$scope}{day}{$d};
        $e{total}{$_} += $b->{$_} for qw(requests input output cached);
        $e{total}{cost} //= Math::BigInt->new(0);
        $e{total}{cost}->badd($b->{cost});
    }
    # per model in range: recompute from the records
    my %m;
    for my $r (values %ROWS) {
        next unless $scope eq '*' || $r->{user} eq $scope;
        my $d = day_of($r->{ts_ms});
        next if $d lt $from || $d gt $to;
        bucket_add($m{ $r->{model} } //= {}, $r);
    }
    return (\%e, \%m);
}


# Reads every log page of a user (limit $limit); returns the rows.
sub all_logs {
    my ($port, $query, %who) = @_;
    my (@rows, $cursor, $pages);
    while (1) {
        my $q = $query . (defined $cursor ? "&cursor=$cursor" : '');
        my ($st, $j) = get($port, "/api/usage/logs?$q", %who);
        die "logs: status $st\n" unless $st == 200;
        push @rows, @{ $j->{logs} };
        $cursor = $j->{next_cursor};
        last unless defined $cursor;
        die "logs: too many pages\n" if ++$pages > 100000;
    }
    return @rows;
}


# ==========================================================================
# 1. command line

{
    my $out = `$AGG --help 2>&1`;
    is($? >> 8, 0, '--help exits 0');
    like($out, qr/--listen.*--redis.*--group.*--consumer.*--batch.*
        --claim-idle.*--retention-days.*--retention-max.*--log-level/sx,
        '--help names every flag');

    my $p = free_port();
    my $o = `$AGG --listen 0.0.0.0:$p --redis 127.0.0.1:$RPORT 2>&1`;
    isnt($? >> 8, 0, 'a non-loopback --listen is refused');
    like($o, qr/loopback/, '... saying why');

    $o = `$AGG --batch 0 2>&1`;
    is($? >> 8, 2, 'a bad flag value is a usage error');
}


# ==========================================================================
# 2. rollups equal the sums, for each user and for the admin

my @first = random_records(400);
# midnight boundaries, a user with a colon, and a record sent twice
push @first, make_record(user => 'alice', ts => int($NOW / $DAY_MS) * $DAY_MS);
push @first, make_record(user => 'alice',
    ts => int($NOW / $DAY_MS) * $DAY_MS - 1);
push @first, { %{ $first[3] } };            # the gateway re-sent it
push @first, { %{ $first[10] } };
add_records(@first);

$R->cmd('HSET', 'cfcost:gateway', 'records_dropped', 7);

$APORT = start_agg('agg-a', '--trim-interval', '1');

ok(wait_for(30, sub { admin_total($APORT) == unique_count() }),
    'all records applied') or diag('admin total: ' . admin_total($APORT)
    . ', want ' . unique_count());
is($DUP_ENTRIES, 2, 'the test wrote 2 duplicate entries');

for my $u (@USERS) {
    my ($st, $j, $raw) = get($APORT, '/api/usage', user => $u,
        key => "key_${u}_0");
    is($st, 200, "$u: /api/usage 200");
    is($j->{user}, $u, "$u: answer names the user");
    check_usage($u, $j, $raw, $EXP{$u}, $EXP{$u}{model});
}

{
    my ($st, $j, $raw) = get($APORT, '/api/usage', admin => 1);
    is($st, 200, 'admin: /api/usage 200');
    ok(!defined $j->{user}, 'admin: user null (everyone)');
    check_usage('admin', $j, $raw, $EXP{'*'}, $EXP{'*'}{model});

    ($st, $j, $raw) = get($APORT, '/api/usage?user=bob', admin => 1);
    is($j->{user}, 'bob', 'admin ?user=bob: names bob');
    check_usage('admin ?user=bob', $j, $raw, $EXP{bob}, $EXP{bob}{model});

    ($st, $j, $raw) = get($APORT, '/api/usage?user=d:ave', admin => 1);
    check_usage('admin ?user=d:ave', $j, $raw, $EXP{'d:ave'},
        $EXP{'d:ave'}{model});
}


# ==========================================================================
# 3. identity

{
    my ($st, $j) = get($APORT, '/api/usage');
    is($st, 401, 'no identity: 401');
    ok(defined $j->{detail}, '... with a detail');
    ($st) = get($APORT, '/api/usage', user => '');
    is($st, 401, 'empty X-Cfcost-User: 401');
    ($st) = get($APORT, '/api/usage', admin => '0');
    is($st, 401, 'X-Cfcost-Admin: 0 is not the admin');
    ($st, $j) = get($APORT, '/api/usage?user=bob', user => 'alice');
    is($st, 403, "a user asking for another user's usage: 403");
    ok(defined $j->{detail}, '... with a detail');
    ($st) = get($APORT, '/api/usage/logs?user=bob', user => 'alice');
    is($st, 403, '... on logs too');
    ($st) = get($APORT, '/api/usage/timeseries?user=bob', user => 'alice');
    is($st, 403, '... on timeseries too');
    ($st, $j) = get($APORT, '/api/usage?user=alice', user => 'alice');
    is($st, 200, 'a user asking for themselves: 200');
    ($st) = get($APORT, '/metrics', user => 'alice');
    is($st, 403, '/metrics is for the admin');
    ($st) = get($APORT, '/metrics', admin => 'metrics');
    is($st, 200, '/metrics: the metrics token too');
    ($st) = get($APORT, '/api/usage', admin => 'metrics');
    is($st, 401, 'the metrics token is no identity for the usage API');
    ($st) = get($APORT, '/nope', admin => 1);
    is($st, 404, 'unknown path: 404');
}


# ==========================================================================
# 4. date ranges and bad parameters

{
    my @days = sort keys %{ $EXP{alice}{day} };
    my ($from, $to) = @days[int(@days / 4), int(@days * 3 / 4)];
    my ($e, $m) = range_exp('alice', $from, $to);
    my ($st, $j, $raw) = get($APORT, "/api/usage?from=$from&to=$to",
        user => 'alice');
    is($st, 200, "alice $from..$to: 200");
    is($j->{from}, $from, '... echoes from');
    check_usage("alice $from..$to", $j, $raw, $e, $m);

    ($e, $m) = range_exp('*', $from, '9999-12-31');
    ($st, $j, $raw) = get($APORT, "/api/usage?from=$from", admin => 1);
    check_usage("admin from $from", $j, $raw, $e, $m);

    ($e, $m) = range_exp('bob', '1970-01-01', $to);
    ($st, $j, $raw) = get($APORT, "/api/usage?to=$to", user => 'bob');
    check_usage("bob to $to", $j, $raw, $e, $m);

    for my $q ('from=2024-02-30', 'from=abc', 'to=2024-1-01',
        'from=2024-03-02&to=2024-03-01', 'from=1969-12-31')
    {
        my ($s, $jj) = get($APORT, "/api/usage?$q", user => 'alice');
        is($s, 400, "/api/usage?$q: 400");
        ok(defined $jj->{detail}, '... with a detail');
    }
    for my $q ('limit=0', 'limit=5000', 'limit=x', 'cursor=garbage',
        'status=abc', 'format=xml', 'from=2024-13-01')
    {
        my ($s) = get($APORT, "/api/usage/logs?$q", user => 'alice');
        is($s, 400, "/api/usage/logs?$q: 400");
    }
    my ($s) = get($APORT, '/api/usage/timeseries?bucket=year',
        user => 'alice');
    is($s, 400, 'timeseries bucket=year: 400');
}


# ==========================================================================
# 5. logs: isolation, paging while records arrive, filters, CSV

{
    my %want = map { $_ => 1 } @{ $RECS_OF{alice} };
    my (%visited, @order, $cursor, $dups, @new, $pages, $bad_user);
    while (1) {
        my $q = 'limit=7' . (defined $cursor ? "&cursor=$cursor" : '');
        my ($st, $j) = get($APORT, "/api/usage/logs?$q", user => 'alice');
        last unless $st == 200;
        for my $row (@{ $j->{logs} }) {
            $dups++ if $visited{ $row->{request_id} }++;
            $bad_user++ if $row->{user} ne 'alice';
            push @order, $row->{timestamp};
        }
        $cursor = $j->{next_cursor};
        last unless defined $cursor;
        last if ++$pages > 1000;
        # records keep arriving between pages: old and new timestamps
        my @more = random_records(3, user => 'alice');
        push @new, map { $_->{request_id} } @more;
        add_records(@more, random_records(2, user => 'bob'));
    }
    ok(!$dups, 'logs paging: no record twice');
    ok(!$bad_user, "logs paging: only alice's records");
    my @missed = grep { !$visited{$_} } keys %want;
    is(scalar @missed, 0, 'logs paging: every record present at the start '
        . 'visited (' . scalar(keys %want) . ')');
    my %may = (%want, map { $_ => 1 } @new);
    is(scalar(grep { !$may{$_} } keys %visited), 0,
        'logs paging: nothing visited that does not exist');
    ok(!grep({ $order[$_] gt $order[$_ - 1] } 1 .. $#order),
        'logs paging: newest first');

    ok(wait_for(20, sub { admin_total($APORT) == unique_count() }),
        'records added while paging applied');

    # a row's fields
    my ($st, $j) = get($APORT, '/api/usage/logs?limit=1000', user => 'bob');
    my ($row) = grep { $_->{error} ne '' } @{ $j->{logs} };
    my $r = $ROWS{ $row->{request_id} };
    is_deeply([ @$row{qw(model input_tokens output_tokens cached_tokens
        status route key_id user flags error)} ],
        [ @$r{qw(model input_tokens output_tokens cached_tokens status route
        key_id user flags error)} ], 'a log row carries the record');
    is($row->{total_tokens}, $r->{input_tokens} + $r->{output_tokens},
        '... total_tokens');
    is(Math::BigFloat->new("$row->{cost_usd}")->bstr,
        Math::BigFloat->new(usd6($r->{cost_pusd}))->bstr, '... cost_usd');
    is($row->{timestamp}, strftime('%Y-%m-%dT%H:%M:%S', gmtime(
        int($r->{ts_ms} / 1000))) . sprintf('.%03dZ', $r->{ts_ms} % 1000),
        '... timestamp ISO-8601 UTC with ms');
    like($row->{id}, qr/^w[0-9a-f]{16}:\d+-\d+$/,
        '... id is the writer and its stream entry id');
    ok(!defined $j->{truncated_before}, 'nothing trimmed: '
        . 'truncated_before null');

    # filters
    my $model = '@cf/meta/llama-3.1-8b-instruct';
    (my $qm = $model) =~ s/([^A-Za-z0-9._-])/sprintf('%%%02X', ord $1)/ge;
    my @rows = all_logs($APORT, "limit=50&model=$qm", user => 'bob');
    my @exp = grep { $ROWS{$_}{model} eq $model } @{ $RECS_OF{bob} };
    is(scalar @rows, scalar @exp, 'model filter: every matching row');
    is(scalar(grep { $_->{model} ne $model } @rows), 0,
        'model filter: only matching rows');
    @rows = all_logs($APORT, 'limit=5&status=4xx', user => 'bob');
    @exp = grep { $ROWS{$_}{status} =~ /^4/ } @{ $RECS_OF{bob} };
    is(scalar @rows, scalar @exp, 'status=4xx: every matching row');
    @rows = all_logs($APORT, 'limit=20&status=502', user => 'bob');
    @exp = grep { $ROWS{$_}{status} == 502 } @{ $RECS_OF{bob} };
    is(scalar @rows, scalar @exp, 'status=502: every matching row');
    my @days = sort keys %{ $EXP{bob}{day} };
    my ($from, $to) = @days[1, -2];
    @rows = all_logs($APORT, "limit=9&from=$from&to=$to", user => 'bob');
    @exp = grep { my $d = day_of($ROWS{$_}{ts_ms});
                  $d ge $from && $d le $to } @{ $RECS_OF{bob} };
    is(scalar @rows, scalar @exp, "from/to on logs: every row $from..$to");

    # admin sees everyone
    @rows = all_logs($APORT, 'limit=1000', admin => 1);
    is(scalar @rows, unique_count(), 'admin logs: every record once');

    # CSV
    my $r2 = $HTTP->get("http://127.0.0.1:$APORT/api/usage/logs?format=csv",
        { headers => { 'X-Cfcost-User' => 'bob' } });
    is($r2->{status}, 200, 'CSV: 200');
    like($r2->{headers}{'content-type'}, qr{^text/csv}, 'CSV: text/csv');
    my @lines = csv_parse($r2->{content});
    is(join(',', @{ shift @lines }), 'id,request_id,timestamp,model,'
        . 'input_tokens,output_tokens,cached_tokens,total_tokens,cost_usd,'
        . 'status,route,key_id,user,flags,error,latency_ms', 'CSV: header');
    is(scalar @lines, scalar @{ $RECS_OF{bob} }, 'CSV: one row per record');
    is(scalar(grep { @$_ != 16 } @lines), 0, 'CSV: 16 columns each');
    my %csv = map { $_->[1] => $_ } @lines;
    my $cr = $csv{ $row->{request_id} };
    is($cr->[14], $r->{error}, 'CSV: quoted field with comma and quotes');
    is($cr->[8], usd6($r->{cost_pusd}), 'CSV: cost_usd');

    $r2 = $HTTP->head("http://127.0.0.1:$APORT/api/usage/logs?format=csv",
        { headers => { 'X-Cfcost-User' => 'bob' } });
    is($r2->{status}, 200, 'CSV: HEAD answers');

    $r2 = $HTTP->get("http://127.0.0.1:$APORT/api/usage/logs?format=csv"
        . '&limit=5', { headers => { 'X-Cfcost-User' => 'bob' } });
    @lines = csv_parse($r2->{content});
    is(scalar @lines, 6, 'CSV with limit=5: header and 5 rows');
}


# RFC 4180, enough for the test: returns arrayrefs of fields.
sub csv_parse {
    my ($text) = @_;
    my (@rows, @f, $cur, $inq);
    $cur = '';
    my $i = 0;
    while ($i < length $text) {
        my $c = substr($text, $i, 1);
        if ($inq) {
            if ($c eq '"') {
                if (substr($text, $i + 1, 1) eq '"') { $cur .= '"'; $i++ }
                else { $inq = 0 }
            } else {
                $cur .= $c;
            }
        } elsif ($c eq '"') {
            $inq = 1;
        } elsif ($c eq ',') {
            push @f, $cur;
            $cur = '';
        } elsif ($c eq "\r") {
        } elsif ($c eq "\n") {
            push @f, $cur;
            push @rows, [@f];
            @f = ();
            $cur = '';
        } else {
            $cur .= $c;
        }
        $i++;
    }
    return @rows;
}


# ==========================================================================
# 6. timeseries

{
    for my $bucket (qw(day week month)) {
        my ($st, $j, $raw) = get($APORT,
            "/api/usage/timeseries?bucket=$bucket", user => 'carol');
        is($st, 200, "timeseries $bucket: 200");
        is($j->{bucket}, $bucket, "timeseries $bucket: names the bucket");
        my @p = @{ $j->{points} };
        my (%sum, $cost);
        $cost = Math::BigFloat->new(0);
        for my $pt (@p) {
            $sum{$_} += $pt->{$_} for qw(requests input_tokens output_tokens
                tokens);
            $cost->badd(Math::BigFloat->new("$pt->{cost_usd}"));
        }
        my $t = $EXP{carol}{total};
        is($sum{requests}, $t->{requests}, "$bucket points: requests sum");
        is($sum{input_tokens}, $t->{input}, "$bucket points: input sum");
        is($sum{tokens}, $t->{input} + $t->{output},
            "$bucket points: tokens sum");
        my $diff = $cost->copy->bsub(Math::BigFloat->new(usd6($t->{cost})))
            ->babs;
        ok($diff->bcmp(Math::BigFloat->new('0.0000005')->bmul(scalar @p))
            <= 0, "$bucket points: cost sums to the total (each rounded)");

        my $ok = 1;
        for my $i (0 .. $#p) {
            my ($y, $m, $d) = split /-/, $p[$i]{start};
            my $wd = (gmtime(POSIX::mktime(0, 0, 12, $d, $m - 1, $y - 1900)))
                [6];
            $ok = 0 if $bucket eq 'week' && $wd != 1;
            $ok = 0 if $bucket eq 'month' && $d != 1;
            $ok = 0 if $i && $p[$i]{start} le $p[$i - 1]{start};
        }
        ok($ok, "$bucket points: ascending, starting on the "
            . ($bucket eq 'week' ? 'Monday' : $bucket eq 'month' ? '1st'
               : 'day'));
        if ($bucket eq 'day') {
            my @days = sort keys %{ $EXP{carol}{day} };
            my $span = (POSIX::mktime(0, 0, 0, (split /-/, $days[-1])[2],
                (split /-/, $days[-1])[1] - 1, (split /-/, $days[-1])[0]
                - 1900) - POSIX::mktime(0, 0, 0, (split /-/, $days[0])[2],
                (split /-/, $days[0])[1] - 1, (split /-/, $days[0])[0] -
                1900)) / 86400;
            is(scalar @p, int($span + 0.5) + 1, 'day points are dense');
        }
    }

    my ($st, $j) = get($APORT, '/api/usage/timeseries?bucket=day'
        . '&from=2024-01-01&to=2024-01-31', admin => 1);
    is(scalar @{ $j->{points} }, 31, 'a given range: one point per day');
    is($j->{points}[0]{start}, '2024-01-01', '... from the first day');
}


# ==========================================================================
# 7. /metrics

{
    my ($st, $j, $raw) = get($APORT, '/metrics', admin => 1);
    is($st, 200, '/metrics: 200');
    my $m = '@cf/qwen/qwen1.5-7b-chat-awq';
    my $e = $EXP{alice}{model}{$m};
    my $lab = qr/\{user="alice",model="\Q$m\E"\}/;
    like($raw, qr/^cfcost_requests_total$lab \Q$e->{requests}\E$/m,
        'metrics: requests by user and model');
    my $c = usd6($e->{cost});
    like($raw, qr/^cfcost_cost_usd_total$lab \Q$c\E$/m,
        'metrics: cost by user and model');
    my $w = $EXP{'*'}{model}{"we\"ird\\model"};
    like($raw, qr/^cfcost_model_requests_total\{model="we\\"ird\\\\model"\}
        \x20\Q$w->{requests}\E$/mx, 'metrics: label values escaped');
    like($raw, qr/^cfcost_stream_length \d+$/m, 'metrics: stream length');
    like($raw, qr/^cfcost_consumer_group_pending\{group="$GROUP"\} \d+$/m,
        'metrics: group pending');
    like($raw, qr/^cfcost_consumer_group_lag\{group="$GROUP"\} \d+$/m,
        'metrics: group lag');
    like($raw, qr/^cfcost_gateway_records_dropped_total 7$/m,
        "metrics: the gateway's dropped records");
    like($raw, qr/^cfcost_aggregator_records_applied_total \d+$/m,
        'metrics: records applied');
    like($raw, qr/^cfcost_aggregator_records_duplicate_total 2$/m,
        'metrics: duplicates');
    is(scalar(grep { !/^(#|cfcost_\w+(\{.*\})? \S+$)/ } split /\n/, $raw),
        0, 'metrics: every line is a comment or a sample');
}

is(stop('agg-a', 'TERM'), 0, 'SIGTERM: the aggregator exits 0');


# ==========================================================================
# 8. kill -9 in the middle of a backlog, and a dead consumer's pending

{
    my $before = unique_count();
    my @big = random_records(20000);
    push @big, { %{ $big[5] } }, { %{ $big[6000] } }, { %{ $big[19999] } };
    add_records(@big);

    # a consumer that read entries and died: they stay pending with it
    my $r = $R->cmd('XREADGROUP', 'GROUP', $GROUP, 'ghost', 'COUNT', 100,
        'STREAMS', stream_of($WRITERS[1]), '>');
    is(scalar @{ $r->[0][1] }, 100, 'a ghost consumer holds 100 entries');

    my $p = start_agg('agg-b', '--consumer', 'b1', '--batch', '8');
    my $mid = wait_for(30, sub {
        my $n = $R->cmd('HGET', 'cfcost:r:all', 'requests') // 0;
        return $n > $before + 2000;
    });
    my $applied = $R->cmd('HGET', 'cfcost:r:all', 'requests');
    stop('agg-b', 'KILL');
    ok($mid, "kill -9 after $applied of " . unique_count() . ' records');
    diag('the backlog was done before kill -9; crash not exercised')
        if $applied == unique_count();

    $p = start_agg('agg-b2', '--consumer', 'b2', '--batch', '256');
    ok(wait_for(60, sub { admin_total($p) == unique_count() }),
        'after restart: every record applied') or diag('admin total '
        . admin_total($p) . ', want ' . unique_count());
    sleep 1.5;                  # anything applied twice would show now
    for my $u (@USERS) {
        my ($st, $j, $raw) = get($p, '/api/usage', user => $u);
        check_usage("after kill -9: $u", $j, $raw, $EXP{$u},
            $EXP{$u}{model});
    }
    my ($st, $j, $raw) = get($p, '/api/usage', admin => 1);
    check_usage('after kill -9: admin', $j, $raw, $EXP{'*'},
        $EXP{'*'}{model});

    ok(wait_for(10, sub {
        return sum_streams(sub { $R->cmd('XPENDING', $_[0], $GROUP)->[0] })
            == 0;
    }), 'nothing left pending (the ghost\'s entries were reclaimed)');
    is(stop('agg-b2', 'TERM'), 0, 'agg-b2 exits 0');
}


# ==========================================================================
# 9. two aggregators on the same backlog

{
    my $before = unique_count();
    my @recs = random_records(10000);
    push @recs, map { { %{ $recs[$_ * 97] } } } 1 .. 20;
    add_records(@recs);
    my $new = unique_count() - $before;

    my $p1 = $C1PORT = start_agg('agg-c1', '--consumer', 'c1', '--batch',
        '32');
    my $p2 = start_agg('agg-c2', '--consumer', 'c2', '--batch', '32');
    ok(wait_for(60, sub { admin_total($p1) == unique_count() }),
        'two aggregators: every record applied');
    sleep 1.5;
    my ($st, $j, $raw) = get($p2, '/api/usage', admin => 1);
    check_usage('two aggregators: admin', $j, $raw, $EXP{'*'},
        $EXP{'*'}{model});
    ($st, $j, $raw) = get($p1, '/api/usage', user => 'carol');
    check_usage('two aggregators: carol', $j, $raw, $EXP{carol},
        $EXP{carol}{model});

    my $sum = 0;
    my @each;
    for my $p ($p1, $p2) {
        my (undef, undef, $m) = get($p, '/metrics', admin => 1);
        my ($n) = $m =~ /^cfcost_aggregator_records_applied_total (\d+)$/m;
        push @each, $n;
        $sum += $n;
    }
    is($sum, $new, "the two applied $new records between them, once each "
        . "(@each)");
    diag('one aggregator did all the work') if grep { $_ == 0 } @each;
    is(stop('agg-c2', 'TERM'), 0, 'agg-c2 exits 0');
}


# ==========================================================================
# 10. Redis restarts under a running aggregator

{
    my $port = $C1PORT;         # agg-c1 still runs
    ok($PIDS{'agg-c1'}, 'agg-c1 still running');

    stop('redis', 'TERM', 20);
    my ($st, $j) = get($port, '/api/usage', user => 'alice');
    is($st, 503, 'Redis down: 503');
    ok(defined $j->{detail}, '... with a detail');

    start_redis();
    ok(wait_for(20, sub {
        my $r = $HTTP->get("http://127.0.0.1:$port/healthz");
        return $r->{status} == 200;
    }), 'the aggregator reconnects');
    is(admin_total($port), unique_count(), 'the data survived the restart');

    add_records(random_records(500));
    ok(wait_for(30, sub { admin_total($port) == unique_count() }),
        'records written after the restart are applied');
    my ($s2, $j2, $raw) = get($port, '/api/usage', user => 'alice');
    check_usage('after Redis restart: alice', $j2, $raw, $EXP{alice},
        $EXP{alice}{model});
    is(stop('agg-c1', 'TERM'), 0, 'agg-c1 exits 0');
}


# ==========================================================================
# 11. retention

{
    my $xlen = sub { sum_streams(sub { $R->cmd('XLEN', $_[0]) }) };
    my $len = $xlen->();
    my $n = scalar streams();
    ok($len > 1000, "the $n streams hold $len entries");

    # the newest records are from the last minute: the index keeps a
    # record while a stream holds entries that old (less the clock skew
    # allowance), and forgets those older than every stream's beginning
    add_records(map { make_record(ts => $NOW_MS->() - int rand 60_000) }
        1 .. 60 * $n);
    $len = $xlen->();

    my $p = start_agg('agg-d', '--retention-max', '50', '--trim-interval',
        '1');
    ok(wait_for(30, sub { $xlen->() <= 50 * $n }),
        'each stream is trimmed to --retention-max');
    ok(wait_for(30, sub { admin_total($p) == unique_count() }),
        'every record applied');
    is(scalar(grep { $R->cmd('EXISTS', $_) } streams()), $n,
        '... and none is deleted');
    my ($st, $j, $raw) = get($p, '/api/usage', admin => 1);
    check_usage('after trimming: admin', $j, $raw, $EXP{'*'},
        $EXP{'*'}{model});
    ($st, $j, $raw) = get($p, '/api/usage', user => 'bob');
    check_usage('after trimming: bob', $j, $raw, $EXP{bob}, $EXP{bob}{model});

    ($st, $j) = get($p, '/api/usage/logs?limit=10', user => 'alice');
    is($st, 200, 'logs after trimming: 200');
    ok(defined $j->{truncated_before}
        && $j->{truncated_before} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
        'logs say where the stream now begins (truncated_before)');
    my @days = sort keys %{ $EXP{alice}{day} };
    ($st, $j) = get($p, "/api/usage/logs?from=$days[0]&to=$days[1]",
        user => 'alice');
    ok(defined $j->{truncated_before}, 'a range older than the stream: '
        . 'truncated_before set');

    ok(wait_for(15, sub {
        my @rows = all_logs($p, 'limit=1000', admin => 1);
        return @rows == $xlen->();
    }), 'the log index is trimmed with the stream');
    my $oldest;
    ok(wait_for(30, sub {
        my $r = $R->cmd('ZRANGE', 'cfcost:logbs:all', 0, 0, 'WITHSCORES');
        $oldest = $r->[1] * 100;
        return $oldest >= $NOW_MS->() - 600_000;
    }), '... its buckets from before the streams begin (less the skew '
        . 'allowance) go, a few thousand a pass: the oldest left is '
        . int(($NOW_MS->() - $oldest) / 1000) . ' s old');

    my @rows = all_logs($p, 'limit=1000', admin => 1);
    my @ids;
    for my $w (sort keys %LAST_ID) {
        push @ids, map { "$w:$_->[0]" }
            @{ $R->cmd('XRANGE', stream_of($w), '-', '+') };
    }
    is_deeply([ sort map { $_->{id} } @rows ], [ sort @ids ],
        'logs are exactly the entries the stream holds');

    is(stop('agg-d', 'TERM'), 0, 'agg-d exits 0');
}


# ==========================================================================
# 12. writers: several, one appearing later, a group lost under the
#     aggregator, --block above --redis-timeout

sub metric {
    my ($port, $name) = @_;
    my (undef, undef, $m) = get($port, '/metrics', admin => 1);
    my ($v) = $m =~ /^\Q$name\E (\d+)$/m;
    return $v;
}

{
    is(scalar(grep { $R->cmd('XLEN', $_) > 0 } streams()), 3,
        'three writers wrote records, each into its own stream');

    my $p = start_agg('agg-e', '--block', '3000', '--redis-timeout', '1000',
        '--consumer', 'e1');
    ok(wait_for(30, sub { admin_total($p) == unique_count() }),
        'every record of every writer counted once');
    sleep 4.5;                  # idle: BLOCK reads longer than the timeout
    is(admin_total($p), unique_count(), '--block 3000 with --redis-timeout '
        . '1000: still answering, nothing counted twice');
    my $log = slurp("$TMP/agg-e.log");
    unlike($log, qr/reply timed out/, '... and no reply timed out');

    # a writer that appears while the aggregator runs
    my $new = 'w00000000000000d4';
    add_records_by([$new], random_records(40));
    ok(wait_for(15, sub { admin_total($p) == unique_count() }),
        'a new writer\'s records are read') or diag('admin total '
        . admin_total($p) . ', want ' . unique_count());
    like(metric($p, 'cfcost_record_streams'), qr/^4$/,
        'metrics: four writer streams');
    is(metric($p, 'cfcost_stream_length'),
        sum_streams(sub { $R->cmd('XLEN', $_[0]) }),
        'metrics: stream length is the sum over the streams');

    # the group destroyed under the running aggregator: nothing again
    my $s0 = metric($p, 'cfcost_aggregator_records_applied_total');
    is($R->cmd('XGROUP', 'DESTROY', stream_of($WRITERS[0]), $GROUP), 1,
        'XGROUP DESTROY on one stream');
    add_records(random_records(30));
    ok(wait_for(20, sub { admin_total($p) == unique_count() }),
        'NOGROUP: records written after it are counted');
    sleep 1.5;
    my ($st, $j, $raw) = get($p, '/api/usage', admin => 1);
    check_usage('after NOGROUP: admin', $j, $raw, $EXP{'*'},
        $EXP{'*'}{model});
    is(metric($p, 'cfcost_aggregator_records_applied_total') - $s0, 30,
        '... and only those 30');
    ok(ref $R->cmd('XINFO', 'GROUPS', stream_of($WRITERS[0])) eq 'ARRAY'
        && @{ $R->cmd('XINFO', 'GROUPS', stream_of($WRITERS[0])) } == 1,
        '... the group exists again');
    is(stop('agg-e', 'TERM'), 0, 'agg-e exits 0');
}


# ==========================================================================
# 13. a group lost while a dead consumer held entries below what was
#     applied: those come again, nothing else is counted twice

{
    my $w = $WRITERS[1];
    my @a = random_records(10);
    add_records_by([$w], @a);
    my $r = $R->cmd('XREADGROUP', 'GROUP', $GROUP, 'ghost2', 'COUNT', 4,
        'STREAMS', stream_of($w), '>');
    is(scalar @{ $r->[0][1] }, 4, 'a ghost consumer holds 4 entries');
    add_records_by([$w], random_records(10));

    my $p = start_agg('agg-f', '--consumer', 'f1', '--claim-idle',
        '600000');
    ok(wait_for(20, sub { admin_total($p) == unique_count() - 4 }),
        'all but the ghost\'s 4 entries applied') or diag('admin total '
        . admin_total($p) . ', want ' . (unique_count() - 4));
    ok($R->cmd('ZCARD', 'cfcost:applied-holes:' . stream_of($w)) == 4,
        'the 4 are holes below the applied position');

    $R->cmd('XGROUP', 'DESTROY', stream_of($w), $GROUP);
    ok(wait_for(20, sub { admin_total($p) == unique_count() }),
        'group destroyed: the ghost\'s 4 entries are applied now');
    sleep 1.5;
    my ($st, $j, $raw) = get($p, '/api/usage', admin => 1);
    check_usage('after losing the group: admin', $j, $raw, $EXP{'*'},
        $EXP{'*'}{model});
    ok(metric($p, 'cfcost_aggregator_records_stale_total') > 0,
        '... the entries applied before came again and were not counted');
    is($R->cmd('ZCARD', 'cfcost:applied-holes:' . stream_of($w)), 0,
        '... no hole left');
    is(stop('agg-f', 'TERM'), 0, 'agg-f exits 0');
}


# ==========================================================================
# 14. Redis refusing writes for a while (OOM: like LOADING, BUSY, MISCONF,
#     READONLY): records wait, none is skipped

{
    add_records(random_records(50));
    $R->cmd('CONFIG', 'SET', 'maxmemory', '1');
    my $p = start_agg('agg-g', '--consumer', 'g1');
    my $before = admin_total($p);
    sleep 3;
    is(admin_total($p), $before, 'OOM: nothing applied meanwhile');
    $R->cmd('CONFIG', 'SET', 'maxmemory', '0');
    ok(wait_for(20, sub { admin_total($p) == unique_count() }),
        'OOM lifted: every record applied');
    sleep 1;
    my ($st, $j, $raw) = get($p, '/api/usage', admin => 1);
    check_usage('after OOM: admin', $j, $raw, $EXP{'*'}, $EXP{'*'}{model});
    is(metric($p, 'cfcost_aggregator_records_invalid_total'), 0,
        '... none acknowledged without counting');
    ok(metric($p, 'cfcost_aggregator_redis_errors_total') > 0,
        '... the errors were seen');
    like(slurp("$TMP/agg-g.log"), qr/OOM/, '... and logged');
    is(stop('agg-g', 'TERM'), 0, 'agg-g exits 0');
}


# ==========================================================================
# 15. the unix socket: a stale one is replaced, a live one refused; flags

sub unix_healthz {
    my ($path) = @_;
    my $s = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM)
        or return '';
    print $s "GET /healthz HTTP/1.0\r\n\r\n";
    local $/;
    return scalar <$s>;
}

{
    require IO::Socket::UNIX;
    IO::Socket::UNIX->import;
    my $sock = "$TMP/agg.sock";
    {
        my $l = IO::Socket::UNIX->new(Local => $sock, Type => SOCK_STREAM(),
            Listen => 1) or die "bind $sock: $!";
        close $l;               # the file stays: a killed aggregator's
    }
    ok(-S $sock, 'a stale socket file');
    spawn('agg-h', "$TMP/agg-h.log", $AGG, '--listen', "unix:$sock",
        '--redis', "127.0.0.1:$RPORT", '--consumer', 'h1');
    ok(wait_for(10, sub { unix_healthz($sock) =~ /^HTTP\/1\.\d 200/ }),
        'the aggregator replaced it and answers on it');
    like(slurp("$TMP/agg-h.log"), qr/stale socket/, '... saying so');

    my $o = `$AGG --listen unix:$sock --redis 127.0.0.1:$RPORT 2>&1`;
    isnt($? >> 8, 0, 'a second aggregator on a live socket is refused');
    like($o, qr/another process is listening/, '... saying why');
    ok(unix_healthz($sock) =~ /^HTTP\/1\.\d 200/, '... the first still '
        . 'answers');
    is(stop('agg-h', 'TERM'), 0, 'agg-h exits 0');

    $o = `$AGG --listen unix:$TMP/x.sock --redis unix:$TMP/x.sock 2>&1`;
    is($? >> 8, 2, 'the same socket for --listen and --redis is refused');
    like($o, qr/same unix socket/, '... saying why');

    # identity from the gateway's user only (SO_PEERCRED): a socket left
    # world-writable still gives another local user nothing
    SKIP: {
        my $nobody = getpwnam('nobody');
        skip 'needs root to act as another user', 3
            unless $> == 0 && defined $nobody;
        my $dir = File::Temp::tempdir('cfcost-open-XXXXXX', TMPDIR => 1,
                                      CLEANUP => 1);
        chmod 0755, $dir;
        my $open = "$dir/agg.sock";
        spawn('agg-o', "$TMP/agg-o.log", $AGG, '--listen', "unix:$open",
            '--socket-mode', '0666', '--redis', "127.0.0.1:$RPORT",
            '--consumer', 'o1');
        ok(wait_for(10, sub { unix_healthz($open) =~ /^HTTP\/1\.\d 200/ }),
            'agg-o answers on a 0666 socket');
        my $ask = sub {
            my $s = IO::Socket::UNIX->new(Peer => $open, Type => SOCK_STREAM())
                or return "connect: $!";
            print $s "GET /api/usage HTTP/1.0\r\nX-Cfcost-Admin: 1\r\n\r\n";
            local $/;
            return scalar <$s>;
        };
        like($ask->(), qr/^HTTP\/1\.\d 200/,
            'the gateway\'s own user: the admin identity counts');
        my $pid = open(my $fh, '-|');
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            POSIX::setgid((getpwnam('nobody'))[3]);
            POSIX::setuid($nobody);
            print $ask->() // '';
            POSIX::_exit(0);
        }
        my $got = join '', <$fh>;
        close $fh;
        like($got, qr/^HTTP\/1\.\d 403/,
            'user nobody, X-Cfcost-Admin: 1 on the same socket: 403')
            or diag($got);
        stop('agg-o', 'TERM');
    }
}

stop('redis', 'TERM', 20);

for my $log (glob "$TMP/agg-*.log") {
    my @bad = grep { / (error|alert): / } split /\n/, slurp($log);
    is(scalar @bad, 0, 'no error in ' . File::Basename::basename($log))
        or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
}

CfcostTest::sanitizer_ok();
done_testing();
