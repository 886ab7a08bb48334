# Upstream response shapes: legacy {"result":{"response","usage"}},
# chat.completion inside result, cached tokens, chunked bodies, no usage,
# big and non-ASCII bodies.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Math::BigInt;
use CfcostTest;

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'shaper');

my $L8   = '@cf/meta/llama-3.1-8b-instruct';
my $KIMI = '@cf/moonshotai/kimi-k2.5';
my $G    = 'Hello from the cfcost emulator. You said:';

sub bi { Math::BigInt->new($_[0]) }

# cost in pusd: (in - cached) x input + cached x cached_rate + out x output
sub cost {
    my ($in, $cached, $out, $pi, $pc, $po) = @_;
    return bi($in - $cached)->bmul($pi)->badd(bi($cached)->bmul($pc))
        ->badd(bi($out)->bmul($po))->bstr;
}

sub usd6 {
    my ($p) = @_;
    my $micro = bi($p)->badd(500000)->bdiv(1000000);
    my ($int, $frac) = $micro->copy->bdiv(1000000);
    return sprintf('%s.%06d', $int->bstr, $frac->numify);
}

sub num_is {
    my ($want) = @_;
    return sub { defined $_[0] && !ref $_[0] && sprintf('%.6f', $_[0]) eq $want };
}

sub ok_case {
    my (%a) = @_;
    my ($model, $in, $cached, $out, $pi, $pc, $po) =
        @a{qw(model in cached out pi pc po)};
    my $p = cost($in, $cached // 0, $out, $pi, $pc // $pi, $po);
    my $usd = usd6($p);
    return {
        name   => $a{name},
        chat   => { key => $k->{key}, model => $model, content => $a{content} },
        status => 200,
        json   => {
            response      => $a{response} // qr/^\Q$G\E/,
            model         => $model,
            input_tokens  => "$in",
            output_tokens => "$out",
            total_tokens  => $in + $out,
            cost_usd      => num_is($usd),
        },
        headers => {
            'x-cfcost-cost-usd'      => $usd,
            'x-cfcost-input-tokens'  => "$in",
            'x-cfcost-output-tokens' => "$out",
        },
        record => {
            cost_pusd       => $p,
            input_tokens    => "$in",
            output_tokens   => "$out",
            cached_tokens   => defined $cached ? "$cached" : qr/^0?$/,
            status          => '200',
            upstream_status => '200',
            flags           => '',
            %{ $a{record} || {} },
        },
    };
}

my @cases = (
    ok_case(name => 'legacy shape', model => $L8,
        content => 'plain words here [emu:usage 11 22]',
        in => 11, out => 22, pi => 282000, po => 827000,
        response => "$G plain words here",
        record => { neurons => '' }),

    ok_case(name => 'chat.completion shape', model => $L8,
        content => 'chat shaped please [emu:chat-completion] [emu:usage 12 34]',
        in => 12, out => 34, pi => 282000, po => 827000,
        response => "$G chat shaped please",
        record => { neurons => qr/^1\.77272725/ }),

    ok_case(name => 'kimi cached tokens, legacy shape', model => $KIMI,
        content => 'cached [emu:usage 1234 89] [emu:cached 567]',
        in => 1234, cached => 567, out => 89,
        pi => 600000, pc => 100000, po => 3000000,
        record => { price_input => '600000', price_cached => '100000',
                    price_output => '3000000' }),

    ok_case(name => 'kimi cached tokens, chat.completion shape', model => $KIMI,
        content => 'cached [emu:chat-completion] [emu:usage 1000 200] [emu:cached 999]',
        in => 1000, cached => 999, out => 200,
        pi => 600000, pc => 100000, po => 3000000),

    ok_case(name => 'kimi, no cached tokens', model => $KIMI,
        content => 'uncached [emu:chat-completion] [emu:usage 1000 200]',
        in => 1000, cached => 0, out => 200,
        pi => 600000, pc => 100000, po => 3000000),

    ok_case(name => 'cached tokens on a model without a cached rate', model => $L8,
        content => 'cached [emu:usage 100 10] [emu:cached 60]',
        in => 100, cached => 60, out => 10, pi => 282000, po => 827000,
        record => { price_cached => '' }),

    ok_case(name => 'chunked upstream body', model => $L8,
        content => 'in chunks [emu:chunked] [emu:usage 50 60]',
        in => 50, out => 60, pi => 282000, po => 827000,
        response => "$G in chunks"),

    ok_case(name => 'chunked chat.completion', model => $L8,
        content => 'in chunks [emu:chunked] [emu:chat-completion] [emu:usage 51 61]',
        in => 51, out => 61, pi => 282000, po => 827000,
        response => "$G in chunks"),

    ok_case(name => 'gzip directive (gateway asks for identity)', model => $L8,
        content => 'zipped [emu:gzip] [emu:usage 7 8]',
        in => 7, out => 8, pi => 282000, po => 827000,
        response => "$G zipped"),

    ok_case(name => 'non-ASCII response', model => $L8,
        content => "utf [emu:utf8] [emu:usage 3 3]",
        in => 3, out => 3, pi => 282000, po => 827000,
        response => "$G utf caf\x{e9} \x{2713} \x{65e5}\x{672c}\x{8a9e} \x{1f680}"),

    ok_case(name => 'big response (100 KB)', model => $L8,
        content => 'big [emu:big 100000] [emu:usage 5 25000]',
        in => 5, out => 25000, pi => 282000, po => 827000,
        response => 'x' x 100000),

    ok_case(name => 'usage without directive: word counts', model => $L8,
        content => 'one two three',
        in => 3, out => 10, pi => 282000, po => 827000,
        response => "$G one two three"),
);

$env->run_case($_) for @cases;

# no usage at all: the response still arrives, with the estimate the
# record carries (4 bytes of text a token: prompt text in, answer text
# out), flagged "estimated" in the body, the record and X-Cfcost-Usage
for my $shape ('', ' [emu:chat-completion]') {
    my $name = 'no usage' . ($shape ? ', chat.completion' : '');
    my $content = "nothing to count$shape [emu:no-usage]";
    my $est_in  = int((length($content) + 3) / 4);
    my $est_out = int((length("$G nothing to count") + 3) / 4);
    $env->run_case({
        name   => $name,
        chat   => { key => $k->{key}, content => $content },
        status => 200,
        json   => {
            response      => "$G nothing to count",
            model         => $L8,
            input_tokens  => $est_in,
            output_tokens => $est_out,
            total_tokens  => $est_in + $est_out,
            cost_usd      => sub {
                sprintf('%.6f', $_[0]) eq usd6(cost($est_in, 0, $est_out,
                                                   282000, 0, 827000))
            },
            estimated     => sub { $_[0] && JSON::PP::is_bool($_[0]) },
        },
        headers => {
            'x-cfcost-usage'    => 'estimated',
            'x-cfcost-cost-usd' => usd6(cost($est_in, 0, $est_out,
                                             282000, 0, 827000)),
        },
        record => {
            flags           => qr/^usage_unknown,estimated$/,
            input_tokens    => $est_in,
            output_tokens   => $est_out,
            cost_pusd       => cost($est_in, 0, $est_out, 282000, 0, 827000),
            status          => '200',
            upstream_status => '200',
        },
    });
}

# a response larger than the module's response buffer (4 MB by default):
# either passed whole with its cost, or refused as a gateway error, but
# always JSON and always recorded with the status sent
{
    my ($res, $rec) = $env->run_case({
        name   => 'response larger than the response buffer (5 MB)',
        chat   => { key => $k->{key}, content => 'huge [emu:big 5000000] [emu:usage 1 1250000]' },
        record => { status => sub { defined $_[0] && $_[0] eq "$_[1]{status}" } },
    });
    ok(ref $res->{json} eq 'HASH', 'huge response: a JSON body')
        or diag(substr($res->{body}, 0, 200));
    if ($res->{status} == 200) {
        is(length($res->{json}{response} // ''), 5000000, 'huge response: passed whole');
        is($rec->{cost_pusd}, 282000 + 1250000 * 827000, 'huge response: priced') if $rec;
    } else {
        is($res->{status}, 502, 'huge response: refused with 502');
        like($res->{json}{detail} // '', qr/\S/, 'huge response: detail');
        like($rec->{error} // '', qr/\S/, 'huge response: record names the error') if $rec;
    }
}

$env->done;
done_testing;
