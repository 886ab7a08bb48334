#!/usr/bin/perl
# report.pl RESULTS.jsonl OUT.json: turns the raw lines bench/run.sh wrote
# into the result file and the table on stdout, and decides pass or fail.
#
# Exit status: 0 every check passed, 1 a check failed, 2 unreadable input.
#
# Medians are taken over rounds.  Paired numbers (ratio, added latency) are
# computed within a round first, where baseline and cfcost ran back to
# back, and the median of those is reported.

use strict;
use warnings;
use JSON::PP;

my ($in, $out) = @ARGV;
die "usage: report.pl RESULTS.jsonl OUT.json\n" unless defined $out;

my $J = JSON::PP->new->utf8->canonical->pretty;
my (@wrk, @records, @ttfb, @usage_load, @cpu, %rss, %meta, $dropped, %errlog,
    %stale);

open my $fh, '<', $in or do { warn "report.pl: $in: $!\n"; exit 2 };
while (my $line = <$fh>) {
    next unless $line =~ /\S/;
    my $r = eval { JSON::PP->new->utf8->decode($line) };
    unless ($r) { warn "report.pl: bad line in $in: $line"; exit 2 }
    my $t = $r->{type} // '';
    if    ($t eq 'wrk')        { push @wrk, $r }
    elsif ($t eq 'records')    { push @records, $r }
    elsif ($t eq 'ttfb')       { push @ttfb, $r }
    elsif ($t eq 'staleness')  { %stale = %$r }
    elsif ($t eq 'usage_load') { push @usage_load, $r }
    elsif ($t eq 'cpu')        { push @cpu, $r }
    elsif ($t eq 'rss')        { %rss = %$r }
    elsif ($t eq 'dropped')    { $dropped = $r->{records_dropped} }
    elsif ($t eq 'errorlog')   { %errlog = %$r }
    elsif ($t eq 'meta')       { %meta = %$r }
}
close $fh;
unless (%meta) { warn "report.pl: no meta line in $in\n"; exit 2 }

sub median {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    my $n = @v;
    return $n % 2 ? $v[($n - 1) / 2] : ($v[$n / 2 - 1] + $v[$n / 2]) / 2;
}

sub r1 { defined $_[0] ? 0 + sprintf('%.1f', $_[0]) : undef }
sub r3 { defined $_[0] ? 0 + sprintf('%.3f', $_[0]) : undef }
sub r0 { defined $_[0] ? 0 + sprintf('%.0f', $_[0]) : undef }

sub run_of {
    my ($system, $phase, $round) = @_;
    my ($r) = grep { $_->{system} eq $system && $_->{phase} eq $phase
                     && $_->{round} == $round } @wrk;
    return $r ? $r->{result} : undef;
}

my @checks;
sub check {
    my ($name, $ok, $detail) = @_;
    push @checks, { name => $name, ok => $ok ? JSON::PP::true : JSON::PP::false,
                    detail => $detail };
}

# --------------------------------------------------------------------------
# throughput and one-connection latency, per round

my $rounds = $meta{settings}{rounds};
my (@rounds_out, @ratio, @b_rps, @c_rps, %lat, @add50, @add99);
for my $r (1 .. $rounds) {
    my $bs = run_of('baseline', 'saturated', $r);
    my $cs = run_of('cfcost', 'saturated', $r);
    my $bl = run_of('baseline', 'latency', $r);
    my $cl = run_of('cfcost', 'latency', $r);
    my %row = (round => $r);
    if ($bs && $cs && $bs->{rps} > 0) {
        push @b_rps, $bs->{rps};
        push @c_rps, $cs->{rps};
        push @ratio, $cs->{rps} / $bs->{rps};
        @row{qw(baseline_rps cfcost_rps ratio)} =
            (r1($bs->{rps}), r1($cs->{rps}), r3($cs->{rps} / $bs->{rps}));
    }
    if ($bl && $cl) {
        for my $p (qw(p50_us p99_us)) {
            push @{ $lat{baseline}{$p} }, $bl->{$p};
            push @{ $lat{cfcost}{$p} }, $cl->{$p};
            $row{"baseline_1conn_$p"} = r1($bl->{$p});
            $row{"cfcost_1conn_$p"} = r1($cl->{$p});
        }
        push @add50, $cl->{p50_us} - $bl->{p50_us};
        push @add99, $cl->{p99_us} - $bl->{p99_us};
    }
    push @rounds_out, \%row;
}

my %result = (
    schema    => 1,
    started   => $meta{started},
    tiny      => $meta{tiny} ? JSON::PP::true : JSON::PP::false,
    machine   => $meta{machine},
    settings  => $meta{settings},
    throughput => {
        baseline_rps_median => r1(median(@b_rps)),
        cfcost_rps_median   => r1(median(@c_rps)),
        ratio_median        => r3(median(@ratio)),
        note => 'ratio: median over rounds of cfcost/baseline within a round',
    },
    latency_1conn => {
        baseline     => { map { $_ => r1(median(@{ $lat{baseline}{$_} || [] })) }
                          qw(p50_us p99_us) },
        cfcost       => { map { $_ => r1(median(@{ $lat{cfcost}{$_} || [] })) }
                          qw(p50_us p99_us) },
        added_p50_us => r1(median(@add50)),
        added_p99_us => r1(median(@add99)),
        note => 'exact percentiles of every request of a round (wrk -t1 -c1);'
                . ' added: median over rounds of cfcost - baseline',
    },
    rounds => \@rounds_out,
);

# --------------------------------------------------------------------------
# CPU time per request in the saturated rounds (/proc/<pid>/stat utime +
# stime): per round, ticks -> us / the requests wrk completed; medians over
# rounds; the ratios within a round first, then their median

sub cpu_of {
    my ($system, $round) = @_;
    my ($c) = grep { $_->{system} eq $system && $_->{round} == $round } @cpu;
    return $c;
}
sub us_per_req {
    my ($c, $what) = @_;
    return undef unless $c && $c->{requests} && defined $c->{ticks}{$what};
    return $c->{ticks}{$what} * 1e6 / $c->{clk_tck} / $c->{requests};
}

if (@cpu) {
    my (%v, @cpu_rounds);
    for my $r (1 .. $rounds) {
        my $b = cpu_of('baseline', $r);
        my $c = cpu_of('cfcost', $r);
        next unless $b && $c && $b->{requests} && $c->{requests};
        my %x = (
            baseline_nginx => us_per_req($b, 'nginx'),
            cfcost_nginx   => us_per_req($c, 'nginx'),
            cfcost_nginx_to_settled => us_per_req($c, 'nginx_to_settled'),
            redis          => us_per_req($c, 'redis'),
            aggregator     => $c->{aggregator} ? us_per_req($c, 'aggregator') : undef,
        );
        $x{cfcost_total} = $x{cfcost_nginx_to_settled} + $x{redis}
                           + ($x{aggregator} // 0);
        if ($x{baseline_nginx}) {
            $x{cfcost_nginx_over_baseline_nginx} =
                $x{cfcost_nginx} / $x{baseline_nginx};
            $x{redis_aggregator_over_baseline_nginx} =
                ($x{redis} + ($x{aggregator} // 0)) / $x{baseline_nginx};
            $x{cfcost_total_over_baseline_nginx} =
                $x{cfcost_total} / $x{baseline_nginx};
            for my $k (qw(cfcost_nginx_to_settled redis aggregator)) {
                $x{"${k}_over_baseline_nginx"} = $x{$k} / $x{baseline_nginx}
                    if defined $x{$k};
            }
        }
        push @{ $v{$_} }, $x{$_} for keys %x;
        push @cpu_rounds, {
            round => $r,
            baseline_requests => $b->{requests},
            cfcost_requests   => $c->{requests},
            cfcost_settle_ms  => $c->{settle_ms},
            (map { $_ => r3($x{$_}) } keys %x),
        };
    }
    my %cpu_out = map { $_ => r3(median(@{ $v{$_} })) } keys %v;
    $cpu_out{clk_tck} = $cpu[0]{clk_tck};
    $cpu_out{rounds} = \@cpu_rounds;
    $cpu_out{note} = 'CPU us per request wrk completed in a saturated round, '
        . 'median over rounds (ratios: within a round, then the median); '
        . 'utime+stime from /proc/<pid>/stat. nginx: the workers (children '
        . 'of the master) from just before to just after wrk; '
        . 'cfcost_nginx_to_settled: until the records were in Redis and the '
        . 'aggregator caught up; redis, aggregator: over that whole window; '
        . 'cfcost_total: cfcost_nginx_to_settled + redis + aggregator';
    $result{cpu_us_per_request} = \%cpu_out;
}

# --------------------------------------------------------------------------
# every response a 200, every request a record

my ($responses, $bad, @bad_runs) = (0, 0);
for my $w (@wrk) {
    my $x = $w->{result};
    my $e = $x->{errors} || {};
    my $sock = 0;
    $sock += $e->{$_} // 0 for qw(connect read write timeout);
    $responses += $x->{responses} if $w->{system} eq 'cfcost';
    if ($x->{non200} || $sock) {
        $bad += $x->{non200} + $sock;
        push @bad_runs, "$w->{system}/$w->{phase}/$w->{round}: "
            . "non-200 $x->{non200} " . JSON::PP->new->canonical->encode($x->{statuses})
            . ", socket errors $sock";
    }
}
check('every response a 200 (wrk)', !$bad,
      $bad ? join('; ', @bad_runs) : "$responses cfcost responses, all 200");

my %ttfb_out;
if (my $t = $ttfb[-1]) {
    my $x = $t->{result};
    my $n = $t->{samples};
    for my $s (qw(baseline cfcost)) {
        $ttfb_out{$s} = { map { $_ => r1($x->{$s}{$_}) }
                          qw(min_us p50_us p90_us p99_us mean_us) };
        $ttfb_out{$s}{ok} = $x->{$s}{ok};
    }
    $ttfb_out{samples} = $n;
    $ttfb_out{added_p50_us} = r1($x->{cfcost}{p50_us} - $x->{baseline}{p50_us});
    $ttfb_out{added_p90_us} = r1($x->{cfcost}{p90_us} - $x->{baseline}{p90_us});
    my $ok = $x->{cfcost}{ok} == $n && $x->{baseline}{ok} == $n;
    check('every streamed response a 200 ending in [DONE]', $ok,
          "cfcost $x->{cfcost}{ok}/$n, baseline $x->{baseline}{ok}/$n");
} else {
    check('streaming TTFB measured', 0, 'no TTFB result');
}
$result{ttfb_stream} = \%ttfb_out;

if (%stale) {
    $result{staleness} = { map { $_ => $stale{$_} }
                           qw(idle loaded load_connections load_s) };
    my $lost = ($stale{idle}{lost} // 0) + ($stale{loaded}{lost} // 0);
    check('/api/usage counted every staleness probe', !$lost,
          $lost ? "$lost not counted within 30 s"
                : "idle $stale{idle}{n}, under load $stale{loaded}{n}");
}

my @rec_bad = grep { $_->{xlen} != $_->{expected} } @records;
my $last = $records[-1];
check('records in Redis == requests sent', @records && !@rec_bad,
      @rec_bad
      ? join('; ', map { "$_->{phase}: $_->{xlen} records in Redis vs sent $_->{expected}" } @rec_bad)
      : sprintf('%d == %d (checked after each of %d phases)',
                $last->{xlen}, $last->{expected}, scalar @records));
check('no record dropped (cfcost:gateway records_dropped)',
      ($dropped // 0) == 0, 'records_dropped ' . ($dropped // 0));
# records still in the workers' queues when wrk stopped: how far Redis
# writes fell behind the traffic (they all arrived later: checked above)
my ($backlog, $backlog_phase) = (0, '');
for my $r (@records) {
    next unless $r->{xlen_at_end};
    my $b = $r->{expected} - $r->{xlen_at_end};
    ($backlog, $backlog_phase) = ($b, $r->{phase}) if $b > $backlog;
}
$result{records} = {
    sent => $last ? $last->{expected} : undef,
    in_redis => $last ? $last->{xlen} : undef,
    max_backlog_when_wrk_stopped => $backlog,
    max_backlog_phase => $backlog_phase,
    by_phase => [ map { { phase => $_->{phase}, sent => $_->{expected},
                          in_redis => $_->{xlen},
                          in_redis_when_wrk_stopped => $_->{xlen_at_end} } }
                  @records ],
    records_dropped => $dropped // 0,
};

if (%errlog) {
    my $c = $errlog{counts};
    my $severe = ($c->{emerg} // 0) + ($c->{alert} // 0) + ($c->{crit} // 0);
    check('gateway error log: no [emerg], [alert] or [crit]', !$severe,
          join(', ', map { "$_ " . ($c->{$_} // 0) } qw(emerg alert crit error warn))
          . ($errlog{sample} ? "; first: $errlog{sample}" : ''));
    $result{gateway_error_log} = { counts => $c, first => $errlog{sample} };
}

# --------------------------------------------------------------------------
# RSS

if (%rss) {
    my $growth = $rss{after_kb} - $rss{before_kb};
    my $peak = $rss{after_kb};
    for my $p (@{ $rss{series} || [] }) { $peak = $p->[1] if $p->[1] > $peak }
    $result{rss} = {
        workers  => $rss{workers},
        requests => $rss{requests},
        start_kb => $rss{start_kb},
        before_kb => $rss{before_kb},
        peak_kb  => $peak,
        after_kb => $rss{after_kb},
        series   => $rss{series},
        series_columns => ['seconds', 'worker_rss_kb', 'stream_xlen'],
        growth_kb => $growth,
        growth_bytes_per_request =>
            $rss{requests} ? r3($growth * 1024 / $rss{requests}) : undef,
        note => 'sum of VmRSS of the cfcost workers; start: before any '
                . 'traffic; before/after: around the RSS run (after the '
                . 'rounds), after once the records reached Redis; peak: '
                . 'highest of the per-second samples (series)',
    };
}

# --------------------------------------------------------------------------
# /api/usage

if (@usage_load) {
    my @rows;
    for my $l (@usage_load) {
        my @runs = grep { $_->{system} eq 'usage'
                          && $_->{phase} eq "usage-$l->{records}" } @wrk;
        for my $w (@runs) {
            push @rows, {
                records  => $l->{records},
                stream_entries => $l->{stream},
                query    => $w->{path} // '',
                p50_us   => r1($w->{result}{p50_us}),
                p99_us   => r1($w->{result}{p99_us}),
                rps      => r1($w->{result}{rps}),
                load_and_apply_s => r1($l->{load_and_apply_s}),
            };
        }
        check("aggregator counted all $l->{stream} records",
              $l->{applied}, "total_requests == records in Redis: "
              . ($l->{applied} ? 'yes' : 'no, not within the time limit'));
    }
    $result{usage_api} = {
        via  => 'the gateway with the admin token (cfcost usage, then the '
                . 'aggregator on its unix socket), wrk -t1 -c1',
        rows => \@rows,
    };
} else {
    $result{usage_api} = { skipped => $meta{aggregator} };
}
$result{aggregator} = $meta{aggregator};

my $ok = !grep { !$_->{ok} } @checks;
$result{checks} = \@checks;
$result{ok} = $ok ? JSON::PP::true : JSON::PP::false;

open my $o, '>', "$out.tmp" or do { warn "report.pl: $out: $!\n"; exit 2 };
print $o $J->encode(\%result);
close $o or exit 2;
rename "$out.tmp", $out or exit 2;

# --------------------------------------------------------------------------
# the table

my $m = $meta{machine};
my $s = $meta{settings};
binmode STDOUT, ':utf8';
sub fmt { my ($v, $f) = @_; defined $v ? sprintf($f, $v) : '-' }
sub num {                                   # 12345.6 -> 12,346
    my ($v) = @_;
    return '-' unless defined $v;
    my $t = sprintf('%.0f', $v);
    1 while $t =~ s/^(\d+)(\d{3})/$1,$2/;
    return $t;
}

my $tp = $result{throughput};
my $lt = $result{latency_1conn};
print "\n";
printf "cfcost bench  %s%s\n", $meta{started}, $meta{tiny} ? '  (TINY: smoke run, numbers meaningless)' : '';
printf "machine  %d x %s, %s; nginx %s, wrk %s, redis %s\n",
    $m->{nproc}, $m->{cpu}, $m->{kernel}, $m->{nginx}, $m->{wrk}, $m->{redis};
printf "settings %d round(s) x %d s, %d workers each, saturated: wrk -t%d -c%d\n",
    $s->{rounds}, $s->{duration_s}, $s->{workers}, $s->{threads}, $s->{connections};
print "\n";
printf "%-38s %12s %12s %12s\n", 'throughput (req/s, saturated)', 'baseline', 'cfcost', 'cfcost/base';
for my $row (@rounds_out) {
    printf "%-38s %12s %12s %12s\n", "  round $row->{round}",
        num($row->{baseline_rps}), num($row->{cfcost_rps}), fmt($row->{ratio}, '%.3f');
}
printf "%-38s %12s %12s %12s\n", '  median', num($tp->{baseline_rps_median}),
    num($tp->{cfcost_rps_median}), fmt($tp->{ratio_median}, '%.3f');
print "\n";
printf "%-38s %12s %12s %12s\n", 'latency, 1 connection (us)', 'baseline', 'cfcost', 'added';
for my $p (qw(p50 p99)) {
    printf "%-38s %12s %12s %12s\n", "  $p (median of rounds)",
        fmt($lt->{baseline}{"${p}_us"}, '%.1f'), fmt($lt->{cfcost}{"${p}_us"}, '%.1f'),
        fmt($lt->{"added_${p}_us"}, '%+.1f');
}
if (defined $lt->{added_p50_us} && $lt->{added_p50_us} < 0) {
    print "  note: a negative added latency is most likely the machine: at one\n"
        . "  connection, waking an idle CPU costs more than cfcost's work, and\n"
        . "  cfcost's own Redis/aggregator traffic keeps the CPUs awake\n";
}
if (my $cu = $result{cpu_us_per_request}) {
    print "\n";
    printf "%-38s %12s %12s %12s\n", 'CPU per request (us, saturated)',
        'baseline', 'cfcost', 'x baseline';
    my $bn = $cu->{baseline_nginx};
    my $x = sub { fmt($cu->{"$_[0]_over_baseline_nginx"}, '%.3f') };
    printf "%-38s %12s %12s %12s\n", '  nginx workers (during wrk)',
        fmt($bn, '%.1f'), fmt($cu->{cfcost_nginx}, '%.1f'),
        fmt($cu->{cfcost_nginx_over_baseline_nginx}, '%.3f');
    printf "%-38s %12s %12s %12s\n", '  nginx workers (until records settled)',
        '', fmt($cu->{cfcost_nginx_to_settled}, '%.1f'),
        $x->('cfcost_nginx_to_settled');
    printf "%-38s %12s %12s %12s\n", '  redis-server', '',
        fmt($cu->{redis}, '%.1f'), $x->('redis');
    printf "%-38s %12s %12s %12s\n", '  aggregator', '',
        fmt($cu->{aggregator}, '%.1f'), $x->('aggregator');
    printf "%-38s %12s %12s %12s\n", '  redis + aggregator', '', '',
        fmt($cu->{redis_aggregator_over_baseline_nginx}, '%.3f');
    printf "%-38s %12s %12s %12s\n", '  cfcost total (settled)', fmt($bn, '%.1f'),
        fmt($cu->{cfcost_total}, '%.1f'),
        fmt($cu->{cfcost_total_over_baseline_nginx}, '%.3f');
    print "  (medians of $s->{rounds} round(s); x baseline: ratio within a round,\n"
        . "  median; baseline nginx is the denominator of every ratio)\n";
}
if (%ttfb_out) {
    print "\n";
    printf "%-38s %12s %12s %12s\n",
        "streamed chat, first body byte (us)", 'baseline', 'cfcost', 'added';
    for my $p (qw(p50 p90)) {
        printf "%-38s %12s %12s %12s\n", "  $p of $ttfb_out{samples} each",
            fmt($ttfb_out{baseline}{"${p}_us"}, '%.1f'),
            fmt($ttfb_out{cfcost}{"${p}_us"}, '%.1f'),
            fmt($ttfb_out{"added_${p}_us"}, '%+.1f');
    }
}
if (my $s = $result{staleness}) {
    print "\n";
    printf "%-38s %8s %8s %8s %8s %8s\n",
        'staleness: answer to /api/usage (ms)', 'n', 'p50', 'p90', 'p99', 'max';
    for my $k (qw(idle loaded)) {
        my $x = $s->{$k};
        printf "%-38s %8s %8s %8s %8s %8s\n",
            $k eq 'idle' ? '  idle'
                         : "  beside wrk -c$s->{load_connections}",
            $x->{n}, map { fmt($x->{$_}, '%.1f') } qw(p50_ms p90_ms p99_ms max_ms);
    }
}
if (my $r = $result{rss}) {
    print "\n";
    printf "%-38s %12s %12s %12s %12s\n", "cfcost worker RSS ($r->{workers} workers, kB)",
        'before', 'peak', 'after', 'growth';
    printf "%-38s %12s %12s %12s %12s\n", '  around ' . num($r->{requests}) . ' requests',
        num($r->{before_kb}), num($r->{peak_kb}), num($r->{after_kb}),
        sprintf('%+d', $r->{growth_kb});
    printf "%-38s %12s %12s %12s\n", '  (at start, before any traffic)',
        num($r->{start_kb}), '', '';
    printf "%-38s %12s %12s %12s %12s\n", '  growth per request (bytes)', '', '', '',
        fmt($r->{growth_bytes_per_request}, '%.3f');
}
print "\n";
if (my $rows = $result{usage_api}{rows}) {
    print "/api/usage latency (1 connection, through cfcost with the admin token)\n";
    printf "  %-12s %-40s %10s %10s %10s\n", 'records', 'query', 'p50 us', 'p99 us', 'load+apply';
    for my $row (@$rows) {
        (my $q = $row->{query}) =~ s/\?.*/?from=30 days ago&to=today/;
        printf "  %-12s %-40s %10s %10s %9ss\n", num($row->{records}), $q,
            fmt($row->{p50_us}, '%.1f'), fmt($row->{p99_us}, '%.1f'),
            fmt($row->{load_and_apply_s}, '%.1f');
    }
} else {
    print "/api/usage latency: skipped ($result{usage_api}{skipped})\n";
}
my $rec = $result{records};
printf "\nrecords: %s sent, %s in Redis; still in the workers' queues when wrk\n"
    . "  stopped: %s\n", num($rec->{sent}), num($rec->{in_redis}),
    $rec->{max_backlog_when_wrk_stopped}
    ? sprintf('at most %s (%s)', num($rec->{max_backlog_when_wrk_stopped}),
              $rec->{max_backlog_phase})
    : 'none';
print "\nchecks\n";
for my $c (@checks) {
    printf "  %-4s %-50s %s\n", $c->{ok} ? 'ok' : 'FAIL', $c->{name}, $c->{detail};
}
printf "\n%s\n\n", $ok ? 'bench: all checks passed' : 'bench: CHECKS FAILED';

exit($ok ? 0 : 1);
