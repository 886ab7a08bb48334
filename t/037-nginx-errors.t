# nginx's own errors on the gateway's port are JSON in the shape of the
# route family asked for (README, "Errors"): {"detail"} under /api/ and
# elsewhere, OpenAI's error object under /v1/, Cloudflare's envelope under
# /client/v4/ -- for unknown paths, wrong methods, URIs and headers too
# large.  cfcost's own locations still answer their errors themselves and
# keep the request's record (a 502 from the upstream is billed as before).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use CfcostTest;
use CfcostWire qw(request);

my $env = CfcostTest->start;
my $k = $env->create_key(user => 'lost');
my $JS = JSON::PP->new->utf8;

sub shape_ok {
    my ($name, $r, $status, $family) = @_;
    is($r->{status}, $status, "$name: $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON");
    my $j = eval { $JS->decode($r->{body}) };
    ok(ref $j eq 'HASH', "$name: the body parses") or diag($r->{body});
    $j = {} unless ref $j eq 'HASH';
    ok(defined $j->{detail} && !ref $j->{detail}, "$name: a detail string");
    if ($family eq 'openai') {
        ok(ref $j->{error} eq 'HASH' && defined $j->{error}{message}
           && defined $j->{error}{type}, "$name: OpenAI's error object");
    } elsif ($family eq 'native') {
        ok(JSON::PP::is_bool($j->{success}) && !$j->{success}
           && ref $j->{errors} eq 'ARRAY' && @{ $j->{errors} },
           "$name: Cloudflare's envelope");
    } else {
        ok(!exists $j->{error} && !exists $j->{errors},
           "$name: {\"detail\"} only");
    }
}

my $port = $env->port;
shape_ok('unknown /api path', request($port, 'GET', '/api/nope'), 404, 'detail');
shape_ok('unknown /v1 path', request($port, 'POST', '/v1/embeddings', '{}'),
         404, 'openai');
shape_ok('unknown /client/v4 path',
         request($port, 'GET', '/client/v4/accounts/x/ai/models/search'),
         404, 'native');
shape_ok('unknown path at the root', request($port, 'GET', '/nope.html'),
         404, 'detail');
shape_ok('a method /v1/models does not take',
         request($port, 'POST', '/v1/models', '{}'), 405, 'openai');
shape_ok('a URI too long', request($port, 'GET', '/v1/' . ('x' x 10000)),
         414, 'detail');
shape_ok('a header too large',
         request($port, 'GET', '/api/usage', undef, 'X-Big' => 'y' x 20000),
         400, 'detail');

# cfcost's own locations: unchanged, and the record stays
my $r = $env->chat(key => $k->{key}, content => 'x [emu:close]');
is($r->{status}, 502, 'a cfcost route, upstream gone: 502');
like($r->{headers}{'content-type'} // '', qr{^application/json}, '... JSON');
my $rec = $env->wait_record($r->{headers}{'x-cfcost-request-id'} // '-', 5);
ok($rec && $rec->{status} eq '502', '... and its record is there, status 502');

$env->allow_error(qr/client sent too long URI|client sent too large request/,
                  qr/upstream prematurely closed|no live upstreams|connect\(\) failed/);
$env->done;
done_testing;
