#!/usr/bin/perl
# A spool file left by a worker that is gone is adopted and replayed; the
# replaying worker is killed (-9), or quits, half-way, and the next one
# replays the file again from its start: every record is stored once.  A
# record that was stored and then trimmed by retention is not stored
# again when a replay brings it back.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $N = $ENV{CFCOST_SPOOL_RECORDS} || 50000;

sub bulk { my $s = shift; '$' . length($s) . "\r\n$s\r\n" }

sub resp { '*' . @_ . "\r\n" . join '', map { bulk($_) } @_ }

# a spool file as a dead worker leaves it: its records, in id order
sub spool_file {
    my ($env, $w, $n, $first) = @_;
    my $dir = $env->tmp . '/spool';
    open my $fh, '>', "$dir/$w.spool" or die "$dir/$w.spool: $!";
    for my $i ($first .. $first + $n - 1) {
        print $fh resp('XADD', "cfcost:rec:{$w}", "$i-0",
                       'request_id', sprintf('%s%08d', $w, $i), 'v', '1');
    }
    close $fh;
    chmod 0666, "$dir/$w.spool";
}

sub env_drain {
    my $env = CfcostTest->start(nginx => 0, workers => 1);
    my $conf = $env->conf_text;
    $conf =~ s/cfcost_record_drain \w+;/cfcost_record_drain 1s;/
        or BAIL_OUT('no cfcost_record_drain in the shipped config');
    $env->{conf_text} = $conf;
    open my $fh, '>', $env->tmp . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
    mkdir $env->tmp . '/spool';
    chmod 0777, $env->tmp . '/spool';
    return $env;
}

sub stored {
    my ($env) = @_;
    my $s = $env->http('GET', '/cfcost/status')->{json};
    return $s ? $s->{records}{stored} : 0;
}

for my $how (qw(kill quit)) {
    my $env = env_drain();
    my $w = 'w00000000000000a' . ($how eq 'kill' ? '1' : '2');
    spool_file($env, $w, $N, 1);
    $env->start_nginx;

    ok(CfcostLoad::wait_until(30, sub { stored($env) >= 1000 }),
       "$how: the file is being replayed");

    # Redis frozen, so the replay surely stops half-way, whatever its speed
    kill 'STOP', $env->redis_pid;
    my $at = stored($env);
    cmp_ok($at, '<', $N, "$how: stopped half-way ($at of $N stored)");

    if ($how eq 'kill') {
        kill 'KILL', $env->worker_pids;
        kill 'CONT', $env->redis_pid;
    } else {
        my $master = $env->nginx_pid;
        kill 'QUIT', $master;             # gives up after the 1 s drain
        CfcostLoad::wait_until(30, sub { !CfcostTest::_alive($master) });
        delete $env->{pids}{nginx};
        kill 'CONT', $env->redis_pid;
        $env->start_nginx;
    }

    ok(CfcostLoad::wait_until(60, sub {
           !grep { -e $_ } glob($env->tmp . "/spool/$w.spool") }),
       "$how: the next worker replayed the file and removed it");

    my %n;
    $n{ $_->{request_id} }++ for @{ $env->records };
    is(scalar keys %n, $N, "$how: every spooled record is stored");
    is(scalar(grep { $_ > 1 } values %n), 0, "$how: none twice");
    is($env->record_count, $N, "$how: the stream holds $N entries");
    is(($env->redis('SISMEMBER', 'cfcost:writers', $w) // 0), 1,
       "$how: readers know the dead writer's stream");

    $env->allow_error(qr/Redis at 127\.0\.0\.1:\d+/);
    $env->allow_alert(qr/worker process \d+ exited on signal 9/);
    $env->done;
}

# stored, counted, trimmed by retention, then replayed: not again
{
    my $env = env_drain();
    my $w = 'w00000000000000b1';
    my $s = "cfcost:rec:{$w}";
    $env->redis('XADD', $s, '1-0', 'request_id', "${w}00000001", 'v', '1');
    $env->redis('XADD', $s, '2-0', 'request_id', "${w}00000002", 'v', '1');
    $env->redis('XTRIM', $s, 'MINID', '2');
    spool_file($env, $w, 3, 1);        # 1-0 (trimmed), 2-0 (there), 3-0
    $env->start_nginx;
    ok(CfcostLoad::wait_until(20, sub { stored($env) >= 3 }),
       'trimmed: the file is replayed');
    my @ids = map { $_->[0] } @{ $env->redis('XRANGE', $s, '-', '+') };
    is_deeply(\@ids, ['2-0', '3-0'],
              'trimmed: 1-0 is not stored again, 3-0 is stored');
    my $st = $env->http('GET', '/cfcost/status')->{json}{records};
    is($st->{already_stored}, 2, 'trimmed: two counted as already stored');
    $env->done;
}

done_testing;
