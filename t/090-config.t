# Configuration errors are caught by `nginx -t`, with a message that names
# what is wrong.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use CfcostTest;

my $env = CfcostTest->start;
my $t = $env->tmp;

# the shipped template, rendered for this env, is valid
{
    my ($rc, $out) = $env->nginx_test_conf($env->render_conf);
    is($rc, 0, 'shipped configuration: nginx -t passes') or diag($out);
    like($out, qr/test is successful/, 'shipped configuration: test is successful');
}

open my $fh, '>', "$t/malformed.json" or die $!;
print $fh qq({"version": "x", "models": [ {"id": "\@cf/a/b", "pricing": {"input": 1,\n);
close $fh;

open $fh, '>', "$t/no-models.json" or die $!;
print $fh qq({"version": "x", "models": []}\n);
close $fh;

open $fh, '>', "$t/negative.json" or die $!;
print $fh qq({"models": [{"id": "\@cf/a/b", "name": "b", "pricing": {"input": -1, "output": 1}}]}\n);
close $fh;

open $fh, '>', "$t/seven-decimals.json" or die $!;
print $fh qq({"models": [{"id": "\@cf/a/b", "name": "b", "pricing": {"input": 0.0000001, "output": 1}}]}\n);
close $fh;

mkdir "$t/a-directory";

my @cases = (
    {
        name => 'pricing file does not exist',
        vars => { PRICING => "$t/no/such/pricing.json" },
        out  => qr{\Q$t\E/no/such/pricing\.json},
    },
    {
        name => 'pricing path is a directory',
        vars => { PRICING => "$t/a-directory" },
        out  => qr{\Q$t\E/a-directory},
    },
    {
        name => 'malformed pricing JSON',
        vars => { PRICING => "$t/malformed.json" },
        out  => qr{\Q$t\E/malformed\.json},
    },
    {
        name => 'pricing with no models',
        vars => { PRICING => "$t/no-models.json" },
        out  => qr{no-models\.json.*(models|empty)|(models|empty).*no-models\.json}s,
    },
    {
        name => 'negative price',
        vars => { PRICING => "$t/negative.json" },
        out  => qr{negative\.json},
    },
    {
        name => 'price finer than 6 decimals',
        vars => { PRICING => "$t/seven-decimals.json" },
        out  => qr{seven-decimals\.json},
    },
    {
        name => 'cfcost_redis not an address',
        vars => { REDIS => 'nonsense:port' },
        out  => qr{cfcost_redis|nonsense},
    },
    {
        name => 'cfcost_redis port out of range',
        vars => { REDIS => '127.0.0.1:70000' },
        out  => qr{cfcost_redis|70000},
    },
    {
        name => 'cfcost_redis host name that does not resolve',
        vars => { REDIS => 'no-such-host.invalid:6379' },
        out  => qr{cfcost_redis|no-such-host},
    },
);

for my $c (@cases) {
    my ($rc, $out) = $env->nginx_test_conf($env->render_conf(%{ $c->{vars} }));
    isnt($rc, 0, "$c->{name}: nginx -t fails") or diag($out);
    like($out, qr/\[emerg\]/, "$c->{name}: an [emerg] message");
    like($out, $c->{out}, "$c->{name}: the message names the problem")
        or diag($out);
    unlike($out, qr/\[alert\]|\[crit\]|Segmentation|core dumped/,
        "$c->{name}: no crash") or diag($out);
}

# directive-level mistakes, by editing the rendered text
my $base = $env->render_conf;
my @edits = (
    {
        name => 'cfcost with an unknown route',
        from => qr/cfcost chat;/, to => 'cfcost bogus;',
        out  => qr/bogus/,
    },
    {
        name => 'cfcost_redis_timeout not a time',
        from => qr/cfcost_redis_timeout [^;]*;/, to => 'cfcost_redis_timeout soon;',
        out  => qr/cfcost_redis_timeout|soon/,
    },
    {
        name => 'cfcost_record_linger not a time',
        from => qr/cfcost_record_linger [^;]*;/,
        to   => 'cfcost_record_linger briefly;',
        out  => qr/"cfcost_record_linger" directive invalid value/,
    },
    {
        name => 'cfcost_key_concurrency not a number',
        from => qr/cfcost_key_concurrency \d+;/,
        to   => 'cfcost_key_concurrency many;',
        out  => qr/"many" in "cfcost_key_concurrency"/,
    },
    {
        name => 'cfcost_key_concurrency_zone too small',
        from => qr/(cfcost_key_concurrency \d+;)/,
        to   => sub { "$_[0]\n    cfcost_key_concurrency_zone 1k;" },
        out  => qr/cfcost_key_concurrency_zone: invalid or too small size "1k"/,
    },
);
for my $e (@edits) {
    my $text = $base;
    my $ok = ref $e->{to} ? ($text =~ s/$e->{from}/$e->{to}->($1)/e)
                          : ($text =~ s/$e->{from}/$e->{to}/);
    ok($ok, "$e->{name}: edit applies") or next;
    my ($rc, $out) = $env->nginx_test_conf($text);
    isnt($rc, 0, "$e->{name}: nginx -t fails") or diag($out);
    like($out, $e->{out}, "$e->{name}: the message names the problem") or diag($out);
}

# the running gateway was never disturbed
is($env->http(GET => '/api/ai/models')->{status}, 200, 'gateway still serves');

$env->done;
done_testing;
