# Upstream failures: Cloudflare error envelopes keep their status and name
# the code and message; a 200 with success:false, a non-JSON body, an HTML
# 200 and a dropped connection become gateway errors.  Each leaves one
# record with the client status, the upstream status and the error.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CfcostTest;

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'unlucky');

my $L8 = '@cf/meta/llama-3.1-8b-instruct';

sub err_case {
    my (%a) = @_;
    return {
        name     => $a{name},
        chat     => { key => $k->{key}, content => "oops $a{directive}" },
        status   => $a{status},
        detail   => $a{detail},
        upstream => { count => 1 },
        # an estimate billed is an estimate told (t/470 checks it is the
        # record's to the picodollar)
        headers  => defined $a{cost}
            ? { 'x-cfcost-cost-usd' => qr/^\d+\.\d{6}$/,
                'x-cfcost-usage'    => 'estimated' }
            : { 'x-cfcost-cost-usd' => sub { !defined $_[0] || $_[0] eq '0.000000' } },
        record   => {
            status          => "$a{status}",
            upstream_status => "$a{upstream_status}",
            error           => $a{error},
            user            => 'unlucky',
            key_id          => $k->{id},
            model           => $L8,
            cost_pusd       => $a{cost} // '0',
            route           => 'chat',
            (defined $a{flags} ? (flags => $a{flags}) : ()),
        },
    };
}

my @cases = (
    err_case(name => 'no such model (5007, 400)', directive => '[emu:error 5007 400]',
        status => 400, upstream_status => 400, error => 'cf:5007',
        detail => qr/5007.*No such model \Q$L8\E or task|No such model \Q$L8\E or task.*5007/s),
    err_case(name => 'invalid data (5004, default 400)', directive => '[emu:error 5004]',
        status => 400, upstream_status => 400, error => 'cf:5004',
        detail => qr/5004/),
    err_case(name => 'out of capacity (3040, 429)', directive => '[emu:error 3040 429]',
        status => 429, upstream_status => 429, error => 'cf:3040',
        detail => qr/3040.*Capacity temporarily exceeded|Capacity temporarily exceeded.*3040/s),
    err_case(name => 'daily allocation (4006, 429)', directive => '[emu:error 4006 429]',
        status => 429, upstream_status => 429, error => 'cf:4006',
        detail => qr/4006/),
    err_case(name => 'invalid model id (3042, 404)', directive => '[emu:error 3042 404]',
        status => 404, upstream_status => 404, error => 'cf:3042',
        detail => qr/3042.*Invalid model ID|Invalid model ID.*3042/s),
    err_case(name => 'paid plan required (5035, 403)', directive => '[emu:error 5035 403]',
        status => 403, upstream_status => 403, error => 'cf:5035',
        detail => qr/5035/),
    err_case(name => 'too large upstream (3006, 413)', directive => '[emu:error 3006 413]',
        status => 413, upstream_status => 413, error => 'cf:3006',
        detail => qr/3006/),
    err_case(name => 'upstream 500 with an envelope', directive => '[emu:error 7010 500]',
        status => 500, upstream_status => 500, error => 'cf:7010',
        detail => qr/7010/),
    err_case(name => '200 with success:false', directive => '[emu:fail200]',
        status => 502, upstream_status => 200, error => 'cf:3040',
        detail => qr/3040/),
    err_case(name => 'non-JSON 503', directive => '[emu:status 503]',
        status => 503, upstream_status => 503, error => qr/\S/),
    err_case(name => 'non-JSON 500', directive => '[emu:status 500]',
        status => 500, upstream_status => 500, error => qr/\S/),
    err_case(name => 'HTML 200', directive => '[emu:html200]',
        status => 502, upstream_status => 200, error => qr/\S/),
    err_case(name => 'connection closed without a response', directive => '[emu:close]',
        status => 502, upstream_status => 0, error => qr/\S/),
    err_case(name => 'upstream body cut short (Content-Length)',
        directive => '[emu:die-after 1] [emu:usage 1 1]',
        status => 502, upstream_status => 200, error => 'upstream_incomplete',
        cost => qr/^[1-9]\d*$/, flags => 'usage_unknown,estimated'),
    err_case(name => 'upstream body cut short (chunked)',
        directive => '[emu:die-after 1] [emu:chunked] [emu:usage 1 1]',
        status => 502, upstream_status => 200, error => 'upstream_incomplete',
        cost => qr/^[1-9]\d*$/, flags => 'usage_unknown,estimated'),
    err_case(name => 'error envelope sent chunked', directive => '[emu:error 5007 400] [emu:chunked]',
        status => 400, upstream_status => 400, error => 'cf:5007',
        detail => qr/5007/),
);

$env->run_case($_) for @cases;

# Upstream authentication failure (10000) is the operator's problem, not the
# client's: the key the client sent was fine.  Whatever status the module
# maps it to, it is an error naming 10000.
{
    my ($res, $rec) = $env->run_case({
        name     => 'upstream auth failure (10000, 401)',
        chat     => { key => $k->{key}, content => 'oops [emu:error 10000 401]' },
        upstream => { count => 1 },
        detail   => qr/10000/,
        record   => { upstream_status => '401', error => 'cf:10000',
                      cost_pusd => '0' },
    });
    ok($res->{status} >= 400, "upstream 10000: an error status ($res->{status})");
    ok($res->{status} == 502 || $res->{status} == 401,
        "upstream 10000: 502 (gateway misconfigured) or 401, got $res->{status}");
    is($rec->{status}, "$res->{status}", 'upstream 10000: record has the client status')
        if $rec;
}

# a slow upstream that does answer is simply slow
$env->run_case({
    name   => 'delayed response (300 ms)',
    chat   => { key => $k->{key}, content => 'slow [emu:delay 300] [emu:usage 2 2]' },
    status => 200,
    json   => { input_tokens => 2, output_tokens => 2 },
    record => { status => '200', upstream_status => '200', error => '',
                latency_us => sub { defined $_[0] && $_[0] =~ /^\d+$/
                                    && $_[0] >= 300000 && $_[0] < 10000000 } },
});

# the gateway still works after all of that
$env->run_case({
    name   => 'healthy request afterwards',
    chat   => { key => $k->{key}, content => 'fine [emu:usage 1 1]' },
    status => 200,
    record => { status => '200', error => '' },
});

$env->allow_error(qr/upstream prematurely closed connection/);
$env->done;
done_testing;
