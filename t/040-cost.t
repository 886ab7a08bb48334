# Cost of a request: computed here independently (integer picodollars,
# rounded half up to 6 decimals) and compared with the response body, the
# X-Cfcost-* headers and the Redis record.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Math::BigInt;
use CfcostTest;

# micro-USD per 1M tokens, from the published prices
my %PRICE = (
    '@cf/meta/llama-3.1-8b-instruct'           => [282000, 827000],
    '@cf/openai/gpt-oss-120b'                  => [350000, 750000],
    '@cf/meta/llama-3.2-1b-instruct'           => [ 27000, 201000],
    '@cf/tinyllama/tinyllama-1.1b-chat-v1.0'   => [ 10000,  10000],
);

sub pusd {
    my ($model, $in, $out) = @_;
    my ($pi, $po) = @{ $PRICE{$model} };
    return Math::BigInt->new($in)->bmul($pi)
        ->badd(Math::BigInt->new($out)->bmul($po));
}

# round half up to whole micro-USD, then "D.DDDDDD"
sub usd6 {
    my ($p) = @_;
    my $micro = $p->copy->badd(500000)->bdiv(1000000);    # floor division
    my ($int, $frac) = $micro->copy->bdiv(1000000);
    return sprintf('%s.%06d', $int->bstr, $frac->numify);
}

# finds a usage (in >= 100, out >= $out_min) whose cost is congruent to
# $residue modulo 1e6 pusd (small native integers: exact)
sub usage_with_residue {
    my ($model, $residue, $out_min) = @_;
    my ($pi, $po) = @{ $PRICE{$model} };
    for my $out ($out_min .. $out_min + 50) {
        for my $in (100 .. 20000) {
            return ($in, $out) if ($in * $pi + $out * $po) % 1000000 == $residue;
        }
    }
    die "no usage with residue $residue for $model";
}

# self-check of the expectations' arithmetic
is(usd6(Math::BigInt->new(500000)),  '0.000001', 'usd6: half rounds up');
is(usd6(Math::BigInt->new(499999)),  '0.000000', 'usd6: under half rounds down');
is(usd6(Math::BigInt->new('1128000827000000')), '1128.000827', 'usd6: large');

my $L8  = '@cf/meta/llama-3.1-8b-instruct';
my $OSS = '@cf/openai/gpt-oss-120b';
my $L1  = '@cf/meta/llama-3.2-1b-instruct';
my $TL  = '@cf/tinyllama/tinyllama-1.1b-chat-v1.0';

my @tie_l8   = usage_with_residue($L8, 500000, 0);
my @under_l8 = usage_with_residue($L8, 499000, 1);
my @tie_l1   = usage_with_residue($L1, 500000, 3);
my @under_l1 = usage_with_residue($L1, 499000, 3);
my @tie_tl   = usage_with_residue($TL, 500000, 7);

my @usages = (
    [$L8,  10, 20,              'small'],
    [$L8,  1, 1,                'one token each'],
    [$L8,  0, 0,                'zero tokens'],
    [$L8,  1000000, 1000000,    'one million each'],
    [$L8,  16777216, 1000,      'the most input tokens billed (2^24)'],
    [$L8,  @tie_l8,             'exact half rounds up'],
    [$L8,  @under_l8,           'just under half rounds down'],
    [$OSS, 1234, 567,           'gpt-oss'],
    [$OSS, 1, 0,                'gpt-oss one input token'],
    [$L1,  5000, 3000,          'llama-3.2-1b'],
    [$L1,  @tie_l1,             'llama-3.2-1b exact half'],
    [$L1,  @under_l1,           'llama-3.2-1b just under half'],
    [$TL,  100000, 50000,       'tinyllama'],
    [$TL,  @tie_tl,             'tinyllama exact half'],
);

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'payer', name => 'cost test');

# sanity of the rounding cases themselves
ok(pusd($L8, @tie_l8)->copy->bmod(1000000) == 500000, 'tie case is a tie');
ok(pusd($L8, @under_l8)->copy->bmod(1000000) == 499000, 'under case is under');

for my $u (@usages) {
    my ($model, $in, $out, $label) = @$u;
    my $p   = pusd($model, $in, $out);
    my $usd = usd6($p);
    my ($pi, $po) = @{ $PRICE{$model} };
    my $name = "$label ($model $in/$out = $usd)";

    my ($res, $rec) = $env->run_case({
        name   => $name,
        chat   => { key => $k->{key}, model => $model,
                    content => "cost check [emu:usage $in $out]" },
        status => 200,
        json   => {
            model         => $model,
            input_tokens  => "$in",
            output_tokens => "$out",
            total_tokens  => $in + $out,
            cost_usd      => sub { defined $_[0] && !ref $_[0]
                                   && sprintf('%.6f', $_[0]) eq $usd },
            response      => sub { defined $_[0] && !ref $_[0] && length $_[0] },
            request_id    => qr/^[0-9a-f]{32}$/,
        },
        headers => {
            'x-cfcost-cost-usd'      => $usd,
            'x-cfcost-input-tokens'  => "$in",
            'x-cfcost-output-tokens' => "$out",
            'x-cfcost-request-id'    => qr/^[0-9a-f]{32}$/,
        },
        record => {
            v               => '2',
            cost_pusd       => $p->bstr,
            input_tokens    => "$in",
            output_tokens   => "$out",
            model           => $model,
            user            => 'payer',
            key_id          => $k->{id},
            status          => '200',
            upstream_status => '200',
            route           => 'chat',
            request_id      => sub { defined $_[0]
                && $_[0] eq ($_[1]{headers}{'x-cfcost-request-id'} // '-') },
            price_input     => "$pi",
            price_output    => "$po",
            pricing_version => qr/\S/,
            flags           => '',
            error           => '',
            ts_ms           => sub { defined $_[0] && $_[0] =~ /^\d{13}$/
                && abs($_[0] / 1000 - time) < 60 },
            latency_us      => qr/^\d+$/,
        },
    });
    if (ref $res->{json} eq 'HASH') {
        is($res->{json}{request_id}, $res->{headers}{'x-cfcost-request-id'},
            "$name: body request_id equals the header");
        like($res->{body}, qr/"cost_usd"\s*:\s*[0-9]/,
            "$name: cost_usd is a JSON number");
    }
}

# request ids are unique across records
my $recs = $env->records;
my %seen;
$seen{ $_->{request_id} // '' }++ for @$recs;
is(scalar(keys %seen), scalar(@$recs), 'request ids are unique');

$env->done;
done_testing;
