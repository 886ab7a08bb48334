#!/usr/bin/perl
# The gateway's writer puts the records it has queued at once into batch
# entries (common/cfcost_schema.h): under concurrent load on every route
# there are entries of several records, each record is stored once, and
# the aggregator counts every one; a Redis that drops the replies of a
# whole batch entry (the connection closed after the XADD ran) has the
# entry sent again and refused as stored, never stored twice; with
# cfcost_record_linger, one client's records share entries too.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostLoad;

my $env = CfcostTest->start(aggregator => 1, workers => 2);
my $k = $env->create_key(user => 'batched');

sub entries {
    my %n;
    $n{"$_->{_stream} $_->{_entry}"}++ for @{ $env->records };
    return \%n;
}

my $load = CfcostLoad->start($env, key => $k->{key}, clients => 8,
                             seconds => 4);
my $res = $load->finish;
is(scalar(grep { $_->{status} != 200 } @$res), 0, 'every request a 200');
my $f = CfcostLoad::account($env, $res, name => 'batched load');

my $n = entries();
my @multi = grep { $_ > 1 } values %$n;
cmp_ok(scalar(@multi), '>', 0, 'some entries hold several records');
cmp_ok((sort { $b <=> $a } values %$n)[0], '<=', 32,
       'none more than 32');
diag(sprintf 'batched load: %d records in %d entries (%d of them batch '
     . 'entries, up to %d records)', $f->{records}, scalar(keys %$n),
     scalar(@multi), (sort { $b <=> $a } values %$n)[0]);

# Redis kills the gateway's connection after each reply, some of them
# after an XADD ran: the entries come again, and are refused as stored.
$env->redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
my $load2 = CfcostLoad->start($env, key => $k->{key}, clients => 8,
                              seconds => 4);
my $until = time + 3;
my $kills = 0;
while (time < $until) {
    my $list = $env->redis('CLIENT', 'LIST') // '';
    for my $line (split /\n/, $list) {
        next unless $line =~ /\bid=(\d+)\b.*\bcmd=(?:exec|xadd)\b/;
        $env->redis('CLIENT', 'KILL', 'ID', $1);
        $kills++;
    }
    sleep 0.02;
}
my $res2 = $load2->finish;
is(scalar(grep { $_->{status} != 200 } @$res2), 0,
   'connections killed: every request a 200');
cmp_ok($kills, '>', 0, "connections killed: $kills");
CfcostLoad::account($env, [ @$res, @$res2 ],
                    name => 'batched load, connections killed');

$env->allow_error(qr/Redis at 127\.0\.0\.1:\d+/);
$env->allow_alert(qr/cannot queue a batch/);
$env->done;

# cfcost_record_linger: one client's records, one at a time, wait for
# more and share entries (50 ms here, to see it whatever the machine's
# speed); at most the entry's records; none lost or doubled
{
    my $env2 = CfcostTest->start(nginx => 0, aggregator => 1, workers => 1);
    my $conf = $env2->conf_text;
    $conf =~ s/cfcost_record_linger [^;]*;/cfcost_record_linger 50ms;/
        or BAIL_OUT('no cfcost_record_linger in the shipped config');
    $env2->{conf_text} = $conf;
    open my $fh, '>', $env2->tmp . '/nginx.conf' or die $!;
    print $fh $conf;
    close $fh;
    $env2->start_nginx;
    my $k2 = $env2->create_key(user => 'lingered');

    my $t0 = time;
    my $l = CfcostLoad->start($env2, key => $k2->{key}, clients => 1,
                              seconds => 2, max => 200);
    my $r = $l->finish;
    my %n;
    CfcostLoad::account($env2, $r, name => 'one client, linger 50ms');
    $n{"$_->{_stream} $_->{_entry}"}++ for @{ $env2->records };
    my $most = (sort { $b <=> $a } values %n)[0];
    cmp_ok($most, '>', 1, "linger: one client's records share entries "
           . "(up to $most in one)");
    cmp_ok(scalar(keys %n), '<', scalar(@$r),
           sprintf('linger: %d records in %d entries', scalar(@$r),
                   scalar(keys %n)));
    $env2->done;
}

done_testing;
