# nginx reload (SIGHUP) re-reads the pricing file: new prices apply to new
# requests, the record's pricing_version changes, and requests in flight
# during the reload all succeed.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX qw(WNOHANG);
use IO::Select;
use JSON::PP;
use CfcostTest;

my $L8 = '@cf/meta/llama-3.1-8b-instruct';

sub pricing {
    my ($version, $in, $out) = @_;
    return JSON::PP->new->pretty->canonical->encode({
        version  => $version,
        currency => 'USD',
        models   => [
            { id => $L8, name => 'Llama 3.1 8B Instruct', provider => 'Meta',
              description => 'test price', pricing => { input => $in, output => $out } },
            { id => '@cf/meta/llama-3.2-1b-instruct', name => 'Llama 3.2 1B Instruct',
              provider => 'Meta', description => '',
              pricing => { input => 0.027, output => 0.201 } },
        ],
    });
}

my $env = CfcostTest->start(pricing_json => pricing('test-1', 1, 2));
my $k = $env->create_key(user => 'reloader');

# 1000 in x 1 USD/M + 500 out x 2 USD/M = 0.002 USD = 2e9 pusd
my ($r1, $rec1) = $env->run_case({
    name    => 'before reload: input 1, output 2',
    chat    => { key => $k->{key}, content => 'price one [emu:usage 1000 500]' },
    status  => 200,
    json    => { cost_usd => sub { defined $_[0] && sprintf('%.6f', $_[0]) eq '0.002000' } },
    headers => { 'x-cfcost-cost-usd' => '0.002000' },
    record  => { cost_pusd => '2000000000', price_input => '1000000',
                 price_output => '2000000', pricing_version => qr/^test-1-[0-9a-f]{8}$/ },
});

my $m1 = $env->http(GET => '/api/ai/models');
my ($ml1) = grep { $_->{id} eq $L8 } @{ $m1->{json}{models} || [] };
is(sprintf('%.6f', $ml1->{pricing}{input} // -1), '1.000000', 'models lists input price 1');

# new prices: input 3, output 4
$env->write_pricing(pricing('test-2', 3, 4));

# fire requests from a child while the master reloads
pipe(my $rd, my $wr) or die "pipe: $!";
my $child = fork;
die "fork: $!" unless defined $child;
if ($child == 0) {
    close $rd;
    my @st;
    for my $i (1 .. 20) {
        my $r = $env->chat(key => $k->{key},
            content => "during reload $i [emu:usage 10 10]", timeout => 20);
        push @st, $r->{status};
        sleep 0.03;
    }
    print $wr join(',', @st), "\n";
    close $wr;
    POSIX::_exit(0);
}
close $wr;

sleep 0.15;
my @new = eval { $env->reload_nginx };
ok(!$@, 'reload: new workers started') or diag($@);

my $line = '';
{
    my $until = time + 60;
    my $sel = IO::Select->new($rd);
    while (time < $until) {
        last unless $sel->can_read(1);
        my $n = sysread($rd, my $buf, 4096);
        last unless $n;
        $line .= $buf;
    }
}
close $rd;
{
    my $until = time + 10;
    while (time < $until && waitpid($child, WNOHANG) == 0) { sleep 0.05 }
    kill 'KILL', $child if waitpid($child, WNOHANG) == 0;
}
chomp $line;
my @st = split /,/, $line;
is(scalar @st, 20, 'the child made 20 requests during the reload');
is(scalar(grep { $_ == 200 } @st), 20, 'all requests during the reload got 200')
    or diag("statuses: $line");

# 1000 x 3 + 500 x 4 = 5e9 pusd = 0.005 USD
my ($r2, $rec2) = $env->run_case({
    name    => 'after reload: input 3, output 4',
    chat    => { key => $k->{key}, content => 'price two [emu:usage 1000 500]' },
    status  => 200,
    json    => { cost_usd => sub { defined $_[0] && sprintf('%.6f', $_[0]) eq '0.005000' } },
    headers => { 'x-cfcost-cost-usd' => '0.005000' },
    record  => { cost_pusd => '5000000000', price_input => '3000000',
                 price_output => '4000000', pricing_version => qr/^test-2-[0-9a-f]{8}$/ },
});
isnt($rec2->{pricing_version} // '', $rec1->{pricing_version} // '',
    'pricing_version changed') if $rec1 && $rec2;

my $m2 = $env->http(GET => '/api/ai/models');
my ($ml2) = grep { $_->{id} eq $L8 } @{ $m2->{json}{models} || [] };
is(sprintf('%.6f', $ml2->{pricing}{input} // -1), '3.000000', 'models lists input price 3');

# the records made during the reload are all there, each priced by one
# table or the other, never a mix
my $recs = $env->wait_records(22, 10);
is(scalar @$recs, 22, 'every request left a record');
for my $rec (grep { ($_->{input_tokens} // '') eq '10' } @$recs) {
    my $ok = ($rec->{cost_pusd} eq '30000000' && $rec->{pricing_version} =~ /^test-1-/)
          || ($rec->{cost_pusd} eq '70000000' && $rec->{pricing_version} =~ /^test-2-/);
    ok($ok, "reload-time record priced consistently ($rec->{cost_pusd}, $rec->{pricing_version})");
}

# a reload with a broken pricing file keeps the old configuration running
$env->write_pricing('{"models": [');
my $master = $env->nginx_pid;
my @before = $env->worker_pids;
kill 'HUP', $master;
sleep 1.5;
is(join(',', $env->worker_pids), join(',', @before),
    'broken pricing on reload: the old workers keep running');
like($env->error_log, qr/\[emerg\].*pricing/i, 'broken pricing on reload: an [emerg] names it');
$env->run_case({
    name    => 'after a failed reload: still the test-2 prices',
    chat    => { key => $k->{key}, content => 'price three [emu:usage 1000 500]' },
    status  => 200,
    headers => { 'x-cfcost-cost-usd' => '0.005000' },
});

$env->allow_emerg(qr/pricing/i);
$env->done;
done_testing;
