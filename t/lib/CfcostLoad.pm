package CfcostLoad;

# Steady mixed load for the fault tests: forked clients that send, in
# turn, plain and streamed requests on all three metered routes
# (/api/ai/chat, /v1/chat/completions, the native route), each with its
# own token counts, and write one line per answer.  Bounded in time and
# count; core Perl only.
#
#   my $load = CfcostLoad->start($env, key => $k->{key}, clients => 4,
#                                seconds => 10, max => 5000);
#   ... faults ...
#   my $res = $load->finish;  # [{ kind, status, rid, in, out, at, secs }]

use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);

our @KINDS = qw(chat chat_stream openai openai_stream native native_stream);

my $MODEL = '@cf/meta/llama-3.1-8b-instruct';
my $JSON  = JSON::PP->new->utf8->canonical;


# The request of kind $kind number $n: (path, headers, body, in, out).
sub request {
    my ($key, $kind, $n) = @_;
    my ($in, $out) = (1 + $n % 53, 1 + $n % 31);
    my $msg = [{ role => 'user', content => "load $n [emu:usage $in $out]" }];
    my $stream = $kind =~ /_stream$/ ? 1 : 0;
    my %h = ('Content-Type' => 'application/json');
    my ($path, $body);

    if ($kind =~ /^chat/) {
        $h{'X-API-Key'} = $key;
        $path = '/api/ai/chat';
        $body = { model => $MODEL, messages => $msg };
    } elsif ($kind =~ /^openai/) {
        $h{Authorization} = "Bearer $key";
        $path = '/v1/chat/completions';
        $body = { model => $MODEL, messages => $msg };
        $body->{stream_options} = { include_usage => JSON::PP::true }
            if $stream;
    } else {
        $h{Authorization} = "Bearer $key";
        $path = "/client/v4/accounts/test-account/ai/run/$MODEL";
        $body = { messages => $msg };
    }
    $body->{stream} = JSON::PP::true if $stream;

    return ($path, \%h, $JSON->encode($body), $in, $out);
}


sub _client {
    my ($port, $key, $file, $id, $clients, $until, $max, $pace) = @_;
    open my $fh, '>', $file or POSIX::_exit(1);
    # A connection a request: nginx closes idle keep-alive connections
    # when it reloads, and a POST sent on one at that instant fails in the
    # client (HTTP::Tiny does not resend a POST), never reaching nginx --
    # a race of keep-alive, not of the gateway, that would read as a lost
    # answer.
    my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 60,
                             agent => 'cfcost-load/1');
    for (my $n = $id; $n < $max && time < $until; $n += $clients) {
        my $kind = $KINDS[$n % @KINDS];
        my ($path, $h, $body, $in, $out) = request($key, $kind, $n);
        my $t0 = time;
        my $res = $ua->request('POST', "http://127.0.0.1:$port$path",
                               { headers => $h, content => $body });
        my $rid = $res->{headers}{'x-cfcost-request-id'} // '-';
        printf $fh "%s\t%d\t%s\t%d\t%d\t%.6f\t%.6f\n", $kind,
            $res->{status}, $rid, $in, $out, $t0, time - $t0;
        sleep $pace if $pace;
    }
    close $fh;
    POSIX::_exit(0);
}


sub start {
    my ($class, $env, %o) = @_;
    my $clients = $o{clients} // 4;
    my $self = bless {
        env   => $env,
        files => [],
        pids  => [],
        until => time + ($o{seconds} // 10),
    }, $class;

    for my $i (0 .. $clients - 1) {
        my $file = $env->tmp . "/load.$i." . int(rand 1e9);
        push @{ $self->{files} }, $file;
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            _client($env->port, $o{key}, $file, $i, $clients,
                    $self->{until}, $o{max} // 100000, $o{pace} // 0);
        }
        push @{ $self->{pids} }, $pid;
    }
    return $self;
}


# Waits for the clients (at most their time plus 90 s); returns every
# answer.
sub finish {
    my ($self) = @_;
    my $deadline = $self->{until} + 90;
    for my $pid (@{ $self->{pids} }) {
        while (waitpid($pid, POSIX::WNOHANG()) == 0) {
            if (time > $deadline) {
                kill 'KILL', $pid;
                waitpid($pid, 0);
                last;
            }
            sleep 0.05;
        }
    }
    my @res;
    for my $f (@{ $self->{files} }) {
        open my $fh, '<', $f or next;
        while (my $l = <$fh>) {
            chomp $l;
            my ($kind, $status, $rid, $in, $out, $t, $secs) = split /\t/, $l;
            push @res, { kind => $kind, status => $status, rid => $rid,
                         in => $in, out => $out, at => $t, secs => $secs };
        }
    }
    return \@res;
}


# The p-th percentile (0..100) of the latencies of @$res, in ms.
sub percentile {
    my ($res, $p) = @_;
    my @s = sort { $a <=> $b } map { $_->{secs} } @$res;
    return -1 unless @s;
    my $i = int($p / 100 * $#s + 0.5);
    return 1000 * $s[$i];
}


# micro-USD per 1M tokens of $model, from the price table $file
sub prices {
    my ($file, $model) = @_;
    open my $fh, '<', $file or die "$file: $!";
    my $t = $JSON->decode(do { local $/; <$fh> });
    for my $m (@{ $t->{models} }) {
        next unless $m->{id} eq $model;
        return map { int($m->{pricing}{$_} * 1e6 + 0.5) } qw(input output);
    }
    die "$model is not in $file\n";
}


# Polls $cond every 50 ms for at most $secs; returns its last value.
sub wait_until {
    my ($secs, $cond) = @_;
    my $until = time + $secs;
    my $v;
    while (1) {
        $v = $cond->();
        return $v if $v || time >= $until;
        sleep 0.05;
    }
}


# The promise of every fault case, checked: authenticated requests =
# distinct request ids in Redis = records in the streams (a batch entry
# holds several) = the aggregator's
# total_requests, every record where its answer says and at the price
# table's cost; the aggregator's total cost is the records' sum.  Returns
# the figures (for the closing line of the test).
sub account {
    my ($env, $res, %o) = @_;
    my $name = $o{name} // 'faults';
    my $wait = $o{wait} // 60;
    my ($pin, $pout) = prices($env->pricing, $MODEL);

    my %ans = map { $_->{rid} => $_ } grep { $_->{rid} =~ /^[0-9a-f]{32}$/ }
              @$res;
    my $n = keys %ans;
    Test::More::cmp_ok($n, '>', 0, "$name: requests answered");
    Test::More::is(scalar(grep { $_->{rid} !~ /^[0-9a-f]{32}$/ } @$res), 0,
                   "$name: every answer carries a request id");

    wait_until($wait, sub { $env->record_count >= $n });
    my $recs = $env->records;
    my (%seen, $sum);
    my ($bad_cost, $bad_tokens, $stranger) = (0, 0, 0);
    for my $r (@$recs) {
        $seen{ $r->{request_id} }++;
        my $a = $ans{ $r->{request_id} };
        $stranger++, next unless $a;
        $sum += $r->{cost_pusd};
        $bad_cost++ if $r->{cost_pusd} != $r->{input_tokens} * $pin
                                          + $r->{output_tokens} * $pout;
        $bad_tokens++ if $a->{status} == 200
            && ($r->{input_tokens} != $a->{in}
                || $r->{output_tokens} != $a->{out});
    }
    my $distinct = keys %seen;
    my $twice = grep { $_ > 1 } values %seen;

    Test::More::is($distinct, $n, "$name: distinct request ids in Redis = "
                                  . "authenticated requests ($n)");
    Test::More::is(scalar @$recs, $n, "$name: records in the streams = "
                                      . "requests");
    Test::More::is($twice, 0, "$name: no request id twice");
    Test::More::is($stranger, 0, "$name: no record without a request");
    Test::More::is($bad_cost, 0, "$name: every cost = tokens x the price "
                                 . "table");
    Test::More::is($bad_tokens, 0, "$name: every answered record has the "
                                   . "tokens its answer had");

    my $total;
    my $usage = wait_until($wait, sub {
        my $u = $env->http('GET', '/api/usage',
                           headers => { 'X-API-Key' => $env->admin_token });
        $total = $u->{json} ? $u->{json}{total_requests} // -1 : -1;
        return $total >= $n ? $u : undef;
    });
    Test::More::is($total, $n, "$name: the aggregator's total_requests");
    my $micro = int((($sum // 0) + 500000) / 1000000);
    Test::More::is(sprintf('%.6f', $usage ? $usage->{json}{total_cost_usd}
                                          : -1),
                   sprintf('%d.%06d', int($micro / 1e6), $micro % 1e6),
                   "$name: the aggregator's total cost = the records' sum");

    # the gateway's own count, from shared memory (not after a restart)
    my $st = $env->http('GET', '/cfcost/status')->{json} || {};
    my $c = $st->{records} || {};
    unless ($o{restarted}) {
        Test::More::is($c->{made}, $n, "$name: status: records made");
        Test::More::is($c->{stored}, $n, "$name: status: records stored");
    }
    Test::More::is($c->{queued}, 0, "$name: status: nothing left queued");
    Test::More::is(($c->{dropped_queue_full} // -1) + ($c->{dead_lettered} // -1)
                   + ($c->{lost_at_exit} // -1), 0, "$name: status: none lost");

    my %f = (requests => $n, records => scalar @$recs,
             distinct => $distinct, total => $total,
             cost_pusd => $sum // 0, retried => $c->{retried} // -1,
             already => $c->{already_stored} // -1,
             errors => $c->{redis_errors} // -1);
    Test::More::diag(sprintf "%s: requests %d, records %d, distinct ids %d, "
        . "aggregator total %d, cost %d pUSD; re-sent %d, of which already "
        . "stored %d; Redis error replies %d", $name, @f{qw(requests records
        distinct total cost_pusd retried already errors)});
    return \%f;
}

1;
