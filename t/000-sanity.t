# The gateway starts from the shipped configuration, lists its models, and
# answers one chat request with the seed-shaped body.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use CfcostTest;

my $env = CfcostTest->start;

# --- GET /api/ai/models, no key needed
my $m = $env->http(GET => '/api/ai/models');
is($m->{status}, 200, 'models: 200');
like($m->{headers}{'content-type'} // '', qr{^application/json},
    'models: JSON content type');
my $models = ref $m->{json} eq 'HASH' ? $m->{json}{models} : undef;
ok(ref $models eq 'ARRAY' && @$models > 0, 'models: a non-empty array')
    or diag($m->{body});
$models = [] unless ref $models eq 'ARRAY';

my $shape_ok = 1;
for my $x (@$models) {
    for my $f (qw(id name provider description)) {
        $shape_ok = 0, diag("model without string $f: " . CfcostTest::_show($x))
            unless defined $x->{$f} && !ref $x->{$f};
    }
    $shape_ok = 0, diag("model without pricing: " . CfcostTest::_show($x))
        unless ref $x->{pricing} eq 'HASH'
            && defined $x->{pricing}{input} && defined $x->{pricing}{output};
}
ok($shape_ok, 'models: every entry has id, name, provider, description, '
    . 'pricing{input,output}');

my ($llama) = grep { $_->{id} eq '@cf/meta/llama-3.1-8b-instruct' } @$models;
ok($llama, 'models: lists @cf/meta/llama-3.1-8b-instruct');
if ($llama) {
    is(sprintf('%.6f', $llama->{pricing}{input}), '0.282000',
        'models: llama-3.1-8b input price');
    is(sprintf('%.6f', $llama->{pricing}{output}), '0.827000',
        'models: llama-3.1-8b output price');
}

# --- one chat request
my $k = $env->create_key(user => 'sanity', name => 'sanity key');
like($k->{key}, qr/^cfk_[0-9A-Za-z]{32}$/, 'key: cfk_ + 32 base62');
like($k->{id}, qr/^key_/, 'key id: key_...');

my ($res, $rec) = $env->run_case({
    name   => 'chat',
    chat   => { key => $k->{key}, content => 'Hello there [emu:usage 10 20]' },
    status => 200,
    json   => {
        response      => 'Hello from the cfcost emulator. You said: Hello there',
        model         => '@cf/meta/llama-3.1-8b-instruct',
        input_tokens  => 10,
        output_tokens => 20,
        total_tokens  => 30,
        # 10 x 282000 + 20 x 827000 = 19,360,000 pusd = 0.00001936 USD
        cost_usd      => sub { defined $_[0] && sprintf('%.6f', $_[0]) eq '0.000019' },
        request_id    => qr/^[0-9a-f]{32}$/,
    },
    headers => {
        'x-cfcost-cost-usd'      => '0.000019',
        'x-cfcost-input-tokens'  => '10',
        'x-cfcost-output-tokens' => '20',
        'x-cfcost-request-id'    => qr/^[0-9a-f]{32}$/,
        'content-type'           => qr{^application/json},
    },
    record => {
        user       => 'sanity',
        key_id     => $k->{id},
        status     => '200',
        cost_pusd  => '19360000',
        request_id => sub { $_[0] && $_[0] eq ($_[1]{headers}{'x-cfcost-request-id'} // '') },
    },
});

if (ref $res->{json} eq 'HASH') {
    is_deeply([sort keys %{ $res->{json} }],
        [sort qw(response model input_tokens output_tokens total_tokens
                 cost_usd estimated request_id)],
        'chat: exactly the seed fields plus estimated and request_id');
    ok(JSON::PP::is_bool($res->{json}{estimated}) && !$res->{json}{estimated},
        'chat: "estimated": false when Workers AI reported the usage');
    like($res->{body}, qr/"cost_usd"\s*:\s*[0-9]/, 'chat: cost_usd is a JSON number');
}

# --- several requests on one keep-alive connection
{
    my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => 20);
    my $url = 'http://127.0.0.1:' . $env->port . '/api/ai/chat';
    my (%ids, @st, @cost);
    for my $i (1 .. 5) {
        my $r = $ua->request('POST', $url, {
            headers => { 'X-API-Key' => $k->{key}, 'Content-Type' => 'application/json' },
            content => CfcostTest::json()->encode({
                model => '@cf/meta/llama-3.1-8b-instruct',
                messages => [{ role => 'user', content => "again $i [emu:usage $i $i]" }],
            }),
        });
        push @st, $r->{status};
        push @cost, $r->{headers}{'x-cfcost-input-tokens'} // '-';
        $ids{ $r->{headers}{'x-cfcost-request-id'} // '' }++;
    }
    is(join(',', @st), '200,200,200,200,200', 'keep-alive: five 200s');
    is(join(',', @cost), '1,2,3,4,5', 'keep-alive: each request has its own usage');
    is(scalar(grep { length } keys %ids), 5, 'keep-alive: five distinct request ids');
}

# --- a path that is not ours falls through to the dashboard root
my $nf = $env->http(GET => '/no-such-file-here');
is($nf->{status}, 404, 'unknown static path: 404');

$env->allow_error(qr/No such file or directory/);   # the 404 above
$env->done;
done_testing;
