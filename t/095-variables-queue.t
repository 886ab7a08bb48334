#!/usr/bin/perl
# $cfcost_* variables in log_format, and the bounded record queue: what
# does not fit while Redis is away is dropped and counted, never blocks.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;

my $env = CfcostTest->start(nginx => 0, workers => 1);
my $t = $env->tmp;

my $conf = $env->conf_text;
$conf =~ s{cfcost_record_queue \d+;}{cfcost_record_queue 3;}
    or BAIL_OUT('no cfcost_record_queue in the shipped config');
# without a spool, what does not fit is dropped (t/450 tests the spool)
$conf =~ s{\n\s*cfcost_spool [^;]*;}{}
    or BAIL_OUT('no cfcost_spool in the shipped config');
$conf =~ s{(\n\s*server \{)}{
    log_format cost '\$cfcost_request_id|\$cfcost_key_id|\$cfcost_user|'
                    '\$cfcost_model|\$cfcost_input_tokens|'
                    '\$cfcost_output_tokens|\$cfcost_cost_usd|\$status';
$1
        access_log $t/cost.log cost;} or BAIL_OUT('no server block');
open my $fh, '>', "$t/nginx.conf" or die $!;
print $fh $conf;
close $fh;
$env->start_nginx;

my $k = $env->create_key(user => 'logger');

# --- variables
my $r = $env->chat(key => $k->{key}, content => 'hi [emu:usage 1000 2000]');
is($r->{status}, 200, 'chat');
my $rid = $r->{headers}{'x-cfcost-request-id'};
$env->chat(key => $k->{key}, content => 'no usage [emu:no-usage]');
$env->chat(key => 'cfk_wrong', content => 'x');

my @lines;
for (1 .. 50) {
    @lines = grep { length } split /\n/, (-e "$t/cost.log" ? do {
        local (@ARGV, $/) = ("$t/cost.log"); <> } : '');
    last if @lines >= 3;
    sleep 0.05;
}
is(scalar @lines, 3, 'three access log lines');
is($lines[0], join('|', $rid, $k->{id}, 'logger',
    '@cf/meta/llama-3.1-8b-instruct', 1000, 2000, '0.001936', 200),
   'every $cfcost_ variable in log_format');
like($lines[1], qr/^[0-9a-f]{32}\|\Q$k->{id}\E\|logger\|\@cf\/meta\/llama-3\.1-8b-instruct\|-\|-\|-\|200$/,
     'usage unknown: the usage variables are empty');
like($lines[2], qr/^[0-9a-f]{32}\|-\|-\|-\|-\|-\|-\|401$/,
     'a refused key: an id, no identity');

# --- the queue while Redis is away
$env->wait_records(2, 5);
$env->stop_redis;
sleep 1.2;                      # past the key cache ttl: stale serving

my $t0 = time;
for my $i (1 .. 7) {
    $r = $env->chat(key => $k->{key}, content => "while down $i [emu:usage 1 1]");
    is($r->{status}, 200, "request $i with Redis down: served");
}
cmp_ok(time - $t0, '<', 5, 'nothing waited on Redis');

$env->start_redis;               # an empty Redis: the queue refills it

my $until = time + 10;
my ($n, $dropped) = (0, undef);
while (time < $until) {
    $n = $env->record_count;
    $dropped = $env->redis('HGET', 'cfcost:gateway', 'records_dropped');
    last if $n >= 3 && defined $dropped && !ref $dropped;
    sleep 0.1;
}
is($n, 3, 'the queue held 3 records (cfcost_record_queue 3) and sent them');
is($dropped, 4, 'the 4 that did not fit are counted in cfcost:gateway');
my @recs = @{ $env->records };
is(scalar(grep { $_->{user} eq 'logger' && $_->{status} eq '200' } @recs), 3,
   'the kept records are whole');
like($env->error_log, qr/record queue is full \(3 records\)/,
     'the drop is logged, once');
my $st = $env->http('GET', '/cfcost/status')->{json} || {};
is($st->{records}{dropped_queue_full}, 4,
   'cfcost_status counts the drops too, without Redis');
is($st->{records}{made}, 9, 'cfcost_status: records made');
is($st->{records}{stored}, 5, 'cfcost_status: records stored');

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+/);
$env->allow_error(qr/record queue is full/);
$env->done;
done_testing;
