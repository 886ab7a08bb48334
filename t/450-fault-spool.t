#!/usr/bin/perl
# The spool: records that find the memory queue full go to the worker's
# spool file and come back once Redis does; a worker that exits with
# records spools them and the next worker replays its file; with
# when_full=refuse, metered requests get a 503 instead of going unrecorded.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $scale = $ENV{CFCOST_FAULT_SCALE} || 1;

sub env_with {
    my (%sub) = @_;
    my $env = CfcostTest->start(nginx => 0, aggregator => 1);
    my $conf = $env->conf_text;
    while (my ($re, $to) = each %sub) {
        $conf =~ s{$re}{$to} or BAIL_OUT("no $re in the shipped config");
    }
    $env->{conf_text} = $conf;
    open my $fh, '>', $env->tmp . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
    $env->start_nginx;
    return $env;
}

sub spool_bytes {
    my ($env) = @_;
    my $n = 0;
    $n += -s $_ for glob($env->tmp . '/spool/*.spool');
    return $n;
}

# ---- spill while frozen, replay when back; then spool at exit, replay by
# the next workers
my $env = env_with('cfcost_record_queue \d+;' => 'cfcost_record_queue 20;',
                   'cfcost_record_drain \w+;' => 'cfcost_record_drain 1s;');
my $k = $env->create_key(user => 'spooled');
my $name = 'spill and replay';

my $load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                             seconds => 9);
sleep 1;
kill 'STOP', $env->redis_pid;
sleep 6;
my $frozen_bytes = spool_bytes($env);
kill 'CONT', $env->redis_pid;
my @res = @{ $load->finish };
cmp_ok($frozen_bytes, '>', 0, "$name: records went to the spool while frozen");

my $st = CfcostLoad::wait_until(30, sub {
    my $s = $env->http('GET', '/cfcost/status')->{json};
    $s && $s->{records}{queued} == 0
       && $s->{records}{replayed} >= $s->{records}{spooled} ? $s : undef;
});
cmp_ok($st->{records}{spooled}, '>', 0, "$name: status counts spooled records");
is($st->{records}{replayed}, $st->{records}{spooled},
   "$name: every spooled record was read back");
is(spool_bytes($env), 0, "$name: the spool files are empty again");

$name = 'spooled at exit';
$load = CfcostLoad->start($env, key => $k->{key}, clients => 3 * $scale,
                          seconds => 3);
sleep 0.5;
kill 'STOP', $env->redis_pid;
push @res, @{ $load->finish };
my $master = $env->nginx_pid;
kill 'QUIT', $master;
ok(CfcostLoad::wait_until(20, sub { !CfcostTest::_alive($master) }),
   "$name: nginx quits after cfcost_record_drain");
delete $env->{pids}{nginx};
cmp_ok(spool_bytes($env), '>', 0, "$name: the exiting workers spooled");
like($env->error_log, qr/usage records spooled at worker exit/,
     "$name: and said so");
kill 'CONT', $env->redis_pid;
$env->start_nginx;
ok(CfcostLoad::wait_until(30, sub {
       !grep { -s $_ } glob($env->tmp . '/spool/*.spool') }),
   "$name: the new workers replayed the files");

is(scalar(grep { $_->{status} != 200 } @res), 0, 'every request answered 200');
unlike($env->error_log, qr/lost at worker exit/, 'nothing lost at exit');
CfcostLoad::account($env, \@res, name => 'spool', restarted => 1);

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+|cannot store records/);
$env->done;

# ---- when_full=refuse: a 503 in the route's shape, never an unrecorded
# request
$env = env_with('cfcost_record_queue \d+;' => 'cfcost_record_queue 3;',
                'max_size=\w+ when_full=serve' =>
                    'max_size=1 when_full=refuse');
$k = $env->create_key(user => 'strict');
$env->chat(key => $k->{key}, content => 'warm [emu:usage 1 1]');
kill 'STOP', $env->redis_pid;
my (%by, @ok);
for my $i (1 .. 12) {
    my $r = $env->chat(key => $k->{key}, content => "x $i [emu:usage 2 3]");
    $by{ $r->{status} }++;
    push @ok, $r->{headers}{'x-cfcost-request-id'} if $r->{status} == 200;
    if ($r->{status} == 503) {
        like($r->{json} ? $r->{json}{detail} // '' : '',
             qr/cannot be recorded/, "refused request $i: a JSON detail");
    }
}
my $o = $env->http('POST', '/v1/chat/completions',
    headers => { Authorization => "Bearer $k->{key}" },
    body => { model => '@cf/meta/llama-3.1-8b-instruct',
              messages => [{ role => 'user', content => 'hi' }] });
is($o->{status}, 503, 'refuse: the OpenAI route too');
ok($o->{json} && $o->{json}{error}{message}, 'refuse: in OpenAI\'s shape');
kill 'CONT', $env->redis_pid;

cmp_ok($by{200} // 0, '>', 0, 'refuse: requests within the queue pass');
cmp_ok($by{503} // 0, '>', 0, 'refuse: the rest get 503');
my $recs = CfcostLoad::wait_until(10, sub {
    $env->record_count >= 1 + @ok ? $env->records : undef });
my %rid = map { $_->{request_id} => 1 } @{ $recs || [] };
is(scalar(grep { $rid{$_} } @ok), scalar @ok, 'refuse: every 200 recorded');
is(scalar @{ $recs || [] }, 1 + @ok, 'refuse: and nothing else');

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+|cannot store records/);
$env->done;
done_testing;
