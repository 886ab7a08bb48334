# One truth per request, whatever the upstream sends.
#
# The emulator's [emu:mutate SEED] (emulator/mutate.py) breaks the answer
# it would have sent -- the payload (flipped bytes, cuts, garbage, odd line
# endings, absurd or mistyped counts, invalid UTF-8, lone surrogates, deep
# nesting, duplicate keys, extra or missing usage events, [DONE] in the
# middle, no final blank line) and the transport (bad chunk sizes, resets,
# random statuses, trickling) -- deterministically from the seed.  For
# seeds FIRST .. FIRST+N-1 this test sends one request per seed through the
# gateway (route, stream, include_usage and model also chosen from the
# seed), reads the raw answer, fetches every record from Redis once at the
# end, and checks the contract:
#
#  1. a complete HTTP response within 10 s (status line, headers, body to
#     its Content-Length or last chunk), with X-Cfcost-Request-Id;
#  2. exactly one record with that request id;
#  3. record status = the status the client got;
#  4. a non-streamed JSON body is strict RFC 8259 JSON in strict UTF-8
#     (no lone surrogate escapes, nesting <= 512, nothing trailing);
#  5. the cost, tokens and "estimated" the client is told (headers, the
#     chat body, usage.cost_usd, the cfcost event, the OpenAI usage chunk)
#     are the record's; no usage member in an OpenAI stream that did not
#     ask for it;
#  6. nothing after "data: [DONE]", and the cost before it;
#  7. every record's cost_pusd = tokens x its own price snapshot, counts
#     <= 16777216 (2^24, the most a count may be billed);
#  8. no [alert], [emerg] or "exited on signal" in the error log.
#
# Violations are collected, not emitted one test each: a handful of TAP
# tests, each listing up to 20 examples, and a table (mutation kind ->
# client outcome -> record) as diag and, when CFCOST_FUZZ_TABLE names a
# file, as Markdown there.
#
#   CFCOST_FUZZ_SEEDS   how many seeds (default 3000)
#   CFCOST_FUZZ_FIRST   the first seed (default 1)
#   CFCOST_FUZZ_JOBS    concurrent client processes (default 4)
#   CFCOST_FUZZ_TABLE   a file for the Markdown table
#   CFCOST_FUZZ_EXAMPLES  violations listed per failed rule (default 20)
#   CFCOST_FUZZ_DUMP    1: print each request and the raw answer (for a
#                       few seeds)
#
# Reproduce one seed: CFCOST_FUZZ_FIRST=123 CFCOST_FUZZ_SEEDS=1 prove -v
# t/470-fuzz.t; what the emulator sends for it:
# python3 emulator/mutate.py 123 (the plan).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use Math::BigInt;
use Math::BigFloat;
use Storable qw(nstore retrieve);
use Digest::SHA qw(sha256);
use POSIX ();
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostWire qw(%PRICE usd6 show_bytes);

my $N       = $ENV{CFCOST_FUZZ_SEEDS} // 3000;
my $FIRST   = $ENV{CFCOST_FUZZ_FIRST} // 1;
my $JOBS    = $ENV{CFCOST_FUZZ_JOBS}  // 4;
my $TIMEOUT = 10;                   # s per request: beyond it, a hang
my $EXAMPLES = $ENV{CFCOST_FUZZ_EXAMPLES} // 20;    # listed per failed rule
my $USAGE_MAX = Math::BigInt->new(16777216);    # CFCOST_USAGE_MAX

# mutate.STREAM_ONLY: these kinds only act on streams, so their seeds
# always ask for one
my %STREAM_ONLY = map { $_ => 1 } qw(usage_events done_mid no_final_blank);

my @MODELS = sort keys %PRICE;
my @ROUTES = qw(chat openai native);
my @WORDS = qw(alpha bravo charlie delta echo foxtrot golf hotel india
    juliet kilo lima mike november oscar papa quebec romeo sierra tango);

my $JS = JSON::PP->new->utf8->canonical;

plan skip_all => 'CFCOST_FUZZ_SEEDS must be a positive integer'
    unless $N =~ /^\d+$/ && $N > 0 && $FIRST =~ /^\d+$/;


# --------------------------------------------------------------------------
# the plans (mutate.plan, from Python, once) and the requests (from Perl)

my @SEEDS = ($FIRST .. $FIRST + $N - 1);
my %PLAN;
{
    my $mutate = CfcostTest->root . '/emulator/mutate.py';
    open my $p, '-|', $CfcostTest::PYTHON, $mutate, $FIRST, $SEEDS[-1]
        or die "run $mutate: $!";
    while (my $line = <$p>) {
        my $pl = $JS->decode($line);
        $PLAN{ $pl->{seed} } = $pl;
    }
    close $p or die "$mutate exited with status $?";
    die "mutate.py gave " . scalar(keys %PLAN) . " plans for $N seeds"
        unless keys %PLAN == $N;
}

# What the seed asks: route, stream, include_usage, model, and the body.
sub request_for {
    my ($seed) = @_;
    my @b = unpack 'C*', sha256("cfcost-fuzz:$seed");
    my $pl = $PLAN{$seed};
    my %q = (seed => $seed, kind => $pl->{kind}, kinds => $pl->{kinds});
    $q{route}  = $ROUTES[ $b[0] % 3 ];
    $q{stream} = ($b[1] % 2 || $STREAM_ONLY{ $pl->{kinds}[0] }) ? 1 : 0;
    $q{include_usage} = $q{route} eq 'openai' && $q{stream} && $b[2] % 2 ? 1 : 0;
    $q{model} = $MODELS[ $b[3] % @MODELS ];
    my @w = map { $WORDS[ $b[5 + $_] % @WORDS ] } 0 .. $b[4] % 12;
    my @dir = ("[emu:mutate $seed]");
    push @dir, '[emu:chat-completion]'
        if $q{route} ne 'openai' && $b[18] % 4 == 0;
    push @dir, '[emu:utf8]' if $b[19] % 5 == 0;
    push @dir, '[emu:cached ' . ($b[20] % (@w + 1)) . ']'
        if $b[21] % 3 == 0;
    $q{shape} = join ' ', map { /emu:(\S+?)[\] ]/ ? $1 : () } @dir[1 .. $#dir];
    my $content = join(' ', @w) . ' ' . join(' ', @dir);
    my %body = (messages => [{ role => 'user', content => $content }]);
    $body{model} = $q{model} if $q{route} ne 'native';
    $body{stream} = JSON::PP::true if $q{stream};
    $body{stream_options} = { include_usage => JSON::PP::true }
        if $q{include_usage};
    $body{max_tokens} = 16 + $b[22] if $b[23] % 3 == 0;
    $q{body} = $JS->encode(\%body);
    $q{path} = $q{route} eq 'chat' ? '/api/ai/chat'
        : $q{route} eq 'openai' ? '/v1/chat/completions'
        : "/client/v4/accounts/x/ai/run/$q{model}";
    $q{auth} = $q{route} eq 'chat' && $b[24] % 2 ? 'X-API-Key' : 'Authorization';
    return \%q;
}


# --------------------------------------------------------------------------
# raw HTTP: one request, the answer parsed strictly

# Parses what was read so far.  Returns undef while more is needed, else
# {status, headers, body, complete, error}.  At $eof, whatever came.
sub parse_http {
    my ($buf, $eof) = @_;
    my $i = index($buf, "\r\n\r\n");
    if ($i < 0) {
        return undef unless $eof;
        return { status => 0, headers => {}, body => '', complete => 0,
            error => length $buf ? 'cut inside the status line or headers'
                                 : 'no response at all' };
    }
    my ($sl, @hl) = split /\r\n/, substr($buf, 0, $i);
    my %h;
    my $r = { status => 0, headers => \%h, body => '', complete => 0,
              head_bytes => $i + 4 };
    if ($sl =~ m{^HTTP/1\.[01] (\d{3})(?: |$)}) {
        $r->{status} = $1;
    } else {
        $r->{error} = 'bad status line: ' . show_bytes($sl, 60);
        return $r;
    }
    for (@hl) {
        my ($n, $v) = /^([^:]+):[ \t]*(.*?)[ \t]*$/ or do {
            $r->{error} = 'bad header line: ' . show_bytes($_, 60);
            return $r;
        };
        $n = lc $n;
        $h{$n} = exists $h{$n} ? "$h{$n}, $v" : $v;
    }
    my $rest = substr($buf, $i + 4);
    my $no_body = $r->{status} =~ /^(1..|204|304)$/;
    if ($no_body) {
        $r->{complete} = 1;
        $r->{extra} = length $rest;
    } elsif (lc($h{'transfer-encoding'} // '') =~ /chunked/) {
        my $p = 0;
        while (1) {
            my $j = index($rest, "\r\n", $p);
            if ($j < 0) {
                return undef unless $eof;
                $r->{error} = 'chunked body cut';
                return $r;
            }
            my $line = substr($rest, $p, $j - $p);
            unless ($line =~ /^([0-9a-fA-F]{1,15})(?:;[^\r\n]*)?$/) {
                $r->{error} = 'bad chunk-size line: ' . show_bytes($line, 40);
                return $r;
            }
            my $size = hex $1;
            if ($size == 0) {
                # trailers, then the final CRLF
                my $k = $j + 2;
                while (1) {
                    my $e = index($rest, "\r\n", $k);
                    if ($e < 0) {
                        return undef unless $eof;
                        $r->{error} = 'chunked body cut in the last chunk';
                        return $r;
                    }
                    last if $e == $k;
                    $k = $e + 2;
                }
                $r->{complete} = 1;
                $r->{extra} = length($rest) - ($k + 2);
                return $r;
            }
            if (length($rest) < $j + 2 + $size + 2) {
                return undef unless $eof;
                $r->{body} .= substr($rest, $j + 2, $size);
                $r->{error} = 'chunked body cut';
                return $r;
            }
            unless (substr($rest, $j + 2 + $size, 2) eq "\r\n") {
                $r->{error} = 'chunk data not followed by CRLF';
                return $r;
            }
            $r->{body} .= substr($rest, $j + 2, $size);
            $p = $j + 2 + $size + 2;
        }
    } elsif (defined $h{'content-length'}) {
        my $cl = $h{'content-length'};
        unless ($cl =~ /^\d{1,15}$/) {
            $r->{error} = "bad Content-Length: $cl";
            return $r;
        }
        if (length $rest < $cl) {
            return undef unless $eof;
            $r->{body} = $rest;
            $r->{error} = 'body shorter than its Content-Length ('
                . length($rest) . " of $cl)";
            return $r;
        }
        $r->{body} = substr($rest, 0, $cl);
        $r->{extra} = length($rest) - $cl;
        $r->{complete} = 1;
    } else {
        return undef unless $eof;       # close-delimited
        $r->{body} = $rest;
        $r->{complete} = 1;
    }
    return $r;
}

sub do_request {
    my ($port, $key, $q) = @_;
    my $t0 = time;
    my $res;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 5);
    unless ($s) {
        return { status => 0, headers => {}, body => '', complete => 0,
                 error => "connect: $!" };
    }
    binmode $s;
    my $auth = $q->{auth} eq 'X-API-Key' ? "X-API-Key: $key"
        : "Authorization: Bearer $key";
    my $req = "POST $q->{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . "$auth\r\nContent-Length: " . length($q->{body}) . "\r\n\r\n"
        . $q->{body};
    my $off = 0;
    while ($off < length $req) {
        my $w = syswrite($s, $req, length($req) - $off, $off);
        last unless defined $w;
        $off += $w;
    }
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = $t0 + $TIMEOUT;
    while (1) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            $res = parse_http($buf, 1);
            $res->{timed_out} = 1;
            last;
        }
        my $n = sysread($s, my $chunk, 65536);
        if (!$n) {
            $res = parse_http($buf, 1);
            $res->{read_error} = "$!" unless defined $n;
            last;
        }
        $buf .= $chunk;
        $res = parse_http($buf, 0) and last;
    }
    close $s;
    $res->{elapsed} = time - $t0;
    $res->{raw} = $buf if $ENV{CFCOST_FUZZ_DUMP};
    return $res;
}


# --------------------------------------------------------------------------
# strict JSON (RFC 8259, UTF-8 only)

my $UTF8_CHAR = qr/[\x00-\x7f]+|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]
    |[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]
    |\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}
    |\xf4[\x80-\x8f][\x80-\xbf]{2}/x;

# '' when the bytes are well-formed UTF-8, else where they are not
sub utf8_error {
    my ($s) = @_;
    (my $left = $s) =~ s/$UTF8_CHAR//g;
    return '' unless length $left;
    my $at = 0;
    $at = pos($s) while $s =~ /\G$UTF8_CHAR/gc;
    return 'invalid UTF-8 at byte ' . $at . ': '
        . show_bytes(substr($s, $at, 6));
}

sub json_string_error {
    my ($sr) = @_;          # pos() just after the opening quote
    while (1) {
        next if $$sr =~ /\G[^"\\\x00-\x1f]+/gc;
        return '' if $$sr =~ /\G"/gc;
        if ($$sr =~ /\G\\u([0-9a-fA-F]{4})/gc) {
            my $c = hex $1;
            if ($c >= 0xD800 && $c <= 0xDBFF) {
                return sprintf('lone surrogate \\u%04x at byte %d', $c, pos($$sr))
                    unless $$sr =~ /\G\\u[dD][c-fC-F][0-9a-fA-F]{2}/gc;
            } elsif ($c >= 0xDC00 && $c <= 0xDFFF) {
                return sprintf('lone surrogate \\u%04x at byte %d', $c, pos($$sr));
            }
            next;
        }
        next if $$sr =~ /\G\\["\\\/bfnrt]/gc;
        return 'control character in a string at byte ' . pos($$sr)
            if $$sr =~ /\G[\x00-\x1f]/gc;
        return 'bad escape at byte ' . pos($$sr) if $$sr =~ /\G\\/gc;
        return 'unterminated string';
    }
}

# '' when $s is one strict JSON text, else the reason
sub json_error {
    my ($s) = @_;
    my $e = utf8_error($s);
    return $e if $e;
    my @st;
    my $state = 'value';
    pos($s) = 0;
    $s =~ /\G[ \t\r\n]+/gc;
    while (1) {
        my $at = pos($s) // 0;
        if ($state eq 'value' || $state eq 'value_or_end') {
            if ($state eq 'value_or_end' && $s =~ /\G\]/gc) {
                pop @st;
                $state = 'after';
            } elsif ($s =~ /\G([\{\[])/gc) {
                push @st, $1;
                return 'nesting deeper than 512' if @st > 512;
                $state = $1 eq '{' ? 'key_or_end' : 'value_or_end';
            } elsif ($s =~ /\G"/gc) {
                $e = json_string_error(\$s);
                return $e if $e;
                $state = 'after';
            } elsif ($s =~ /\G-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/gc
                     || $s =~ /\G(?:true|false|null)/gc) {
                $state = 'after';
            } else {
                return "no JSON value at byte $at: " . show_bytes(substr($s, $at, 12));
            }
        } elsif ($state eq 'key_or_end' || $state eq 'key') {
            if ($state eq 'key_or_end' && $s =~ /\G\}/gc) {
                pop @st;
                $state = 'after';
            } elsif ($s =~ /\G"/gc) {
                $e = json_string_error(\$s);
                return $e if $e;
                $s =~ /\G[ \t\r\n]+/gc;
                return 'no ":" after a key at byte ' . (pos($s) // 0)
                    unless $s =~ /\G:/gc;
                $state = 'value';
            } else {
                return "no key at byte $at: " . show_bytes(substr($s, $at, 12));
            }
        } else {                                        # after a value
            last unless @st;
            if ($s =~ /\G,/gc) {
                $state = $st[-1] eq '{' ? 'key' : 'value';
            } elsif ($s =~ /\G([\}\]])/gc) {
                return "mismatched $1 at byte $at"
                    unless ($1 eq '}') == ($st[-1] eq '{');
                pop @st;
            } else {
                return "no , or close at byte $at: " . show_bytes(substr($s, $at, 12));
            }
        }
        $s =~ /\G[ \t\r\n]+/gc;
    }
    my $end = pos($s) // 0;
    return "bytes after the JSON value at byte $end: " . show_bytes(substr($s, $end, 12))
        if $end < length $s;
    # and what a strict decoder says
    my $ok = eval {
        local $SIG{__WARN__} = sub {};
        JSON::PP->new->utf8->allow_nonref->max_depth(512)->decode($s);
        1;
    };
    unless ($ok) {
        (my $m = $@) =~ s/ at \S+ line \d+.*//s;
        return "JSON::PP: $m";
    }
    return '';
}

# the decoded JSON (numbers exact: Math::BigFloat / BigInt), or undef
my $JSB = JSON::PP->new->utf8->allow_nonref->allow_bignum;
sub decode_exact {
    my ($s) = @_;
    local $SIG{__WARN__} = sub {};
    return eval { $JSB->decode($s) };
}

# a JSON number equal to the decimal string $want (exactly)
sub same_number {
    my ($v, $want) = @_;
    return 0 if !defined $v || ref($v) =~ /^(HASH|ARRAY|JSON::PP::Boolean)$/;
    return 0 unless "$v" =~ /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
    return Math::BigFloat->new("$v")->bcmp(Math::BigFloat->new($want)) == 0;
}


# --------------------------------------------------------------------------
# SSE (WHATWG parsing: \r\n, \r or \n; an event ends at a blank line)

# events of a stream body: {data (undef: no data line), start, end,
# terminated (a blank line ended it), raw}
sub sse_parse {
    my ($b) = @_;
    my @ev;
    my ($start, @data, $lines) = (0);
    pos($b) = 0;
    while (pos($b) < length $b) {
        my $at = pos($b);
        my ($line, $eol);
        if ($b =~ /\G([^\r\n]*)(\r\n|\r|\n)/gc) {
            ($line, $eol) = ($1, $2);
        } else {
            $b =~ /\G(.*)/gcs;
            $line = $1;
        }
        if (!length $line && defined $eol) {
            push @ev, { data => @data ? join("\n", @data) : undef,
                        start => $start, end => pos($b), terminated => 1,
                        raw => substr($b, $start, pos($b) - $start) }
                if $lines;
            ($start, @data, $lines) = (pos($b));
            next;
        }
        $lines++;
        if ($line =~ /^data(?::(.*))?$/s) {
            my $v = $1 // '';
            $v =~ s/^ //;
            push @data, $v;
        }
    }
    push @ev, { data => @data ? join("\n", @data) : undef, start => $start,
                end => length $b, terminated => 0,
                raw => substr($b, $start) }
        if $lines;
    return @ev;
}


# --------------------------------------------------------------------------
# the run

my $env = CfcostTest->start;
my $key = $env->create_key(user => 'fuzz', name => 'fuzz test');
$env->allow_error(qr/\[error\]/);           # the upstream is hostile (rule 8)

my @REQ = map { request_for($_) } @SEEDS;
my $t_start = time;
my @kids;
for my $j (0 .. $JOBS - 1) {
    my @mine = grep { ($_->{seed} - $FIRST) % $JOBS == $j } @REQ;
    next unless @mine;
    my $file = $env->tmp . "/fuzz-$j.sto";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my %out;
        $out{ $_->{seed} } = do_request($env->port, $key->{key}, $_) for @mine;
        nstore(\%out, $file);
        POSIX::_exit(0);
    }
    push @kids, [$pid, $file];
}
my %RES;
for my $k (@kids) {
    waitpid($k->[0], 0);
    my $st = $?;
    my $part = eval { retrieve($k->[1]) } || {};
    BAIL_OUT("client process $k->[0] died (status $st)") if $st || !%$part;
    %RES = (%RES, %$part);
}
my $t_requests = time - $t_start;

# the records: once, after they have all come (or 15 s)
my %with_rid = map { ($RES{$_}{headers}{'x-cfcost-request-id'} // '') => 1 } @SEEDS;
delete $with_rid{''};
{
    my $until = time + 15;
    sleep 0.1 while $env->record_count < keys(%with_rid) && time < $until;
    sleep 1;                            # stray second records
}
my $records = $env->records;
my %BY_RID;
push @{ $BY_RID{ $_->{request_id} // '' } }, $_ for @$records;
my $error_log = $env->error_log;


# --------------------------------------------------------------------------
# the checks

my %RULES = (
    hang          => '0 hangs: a response within 10 s',
    incomplete    => 'every response complete (status line, headers, whole body)',
    request_id    => '0 responses without a request id',
    one_record    => 'exactly one record per request',
    status        => 'record status = client status',
    json          => 'valid JSON bodies (strict RFC 8259, UTF-8)',
    cost          => 'client cost = record cost',
    tokens        => 'client tokens = record tokens',
    estimated     => 'client "estimated" = record flags',
    cost_event    => 'exactly one cost event / usage chunk per stream',
    done          => 'nothing after [DONE], the cost before it',
    unasked_usage => 'usage chunks only when asked',
    record_cost   => 'cost = tokens x price on every record',
    log           => 'no worker crash / [alert] / [emerg] in the error log',
);
my @RULE_ORDER = qw(hang incomplete request_id one_record status json cost
    tokens estimated cost_event done unasked_usage record_cost log);
my %VIOL = map { $_ => [] } @RULE_ORDER;

sub violate {
    my ($q, $rule, $reason) = @_;
    die "no rule $rule" unless $VIOL{$rule};
    push @{ $VIOL{$rule} }, { seed => $q ? $q->{seed} : undef, q => $q,
        reason => $reason };
    $q->{viol}{$rule}++ if $q;
}

# A stream Workers AI broke off (reset, cut, broken framing) ends without
# the last chunk, so the client sees the break (README, "Streams"): the
# record must say so; the cost event must still have come (rule 5).
sub stream_broke_off {
    my ($r, $is_sse) = @_;
    return 0 unless $is_sse && $r->{status};
    my @recs = @{ $BY_RID{ $r->{headers}{'x-cfcost-request-id'} // '' } || [] };
    return @recs == 1 && ($recs[0]{error} // '') eq 'upstream_incomplete';
}

sub usd_of { return usd6(Math::BigInt->new($_[0])) }

sub rec_estimated {
    my ($rec) = @_;
    return (grep { $_ eq 'estimated' } split /,/, $rec->{flags} // '') ? 1 : 0;
}

sub show_val {
    my ($v) = @_;
    return 'absent' unless defined $v;
    return ref $v eq 'JSON::PP::Boolean' ? ($v ? 'true' : 'false')
        : ref $v ? JSON::PP->new->canonical->allow_bignum->allow_blessed
            ->encode($v) : "$v";
}

# the usage object the client sees in a non-stream 200, by route
sub body_usage {
    my ($q, $j) = @_;
    return undef unless ref $j eq 'HASH';
    return $j->{usage} if $q->{route} eq 'openai';
    return ref $j->{result} eq 'HASH' ? $j->{result}{usage} : undef;
}

# checks a {cost_usd, *tokens, estimated} the client was told against the
# record; $what names it; %f maps in/out/est to the member names
sub compare_told {
    my ($q, $rec, $what, $obj, %f) = @_;
    my $usd = usd_of($rec->{cost_pusd});
    my $cv = $obj->{cost_usd};
    violate($q, 'cost', "$what cost_usd " . show_val($cv) . ", record $usd")
        unless same_number($cv, $usd)
            || (!defined $cv && $f{null_ok} && $rec->{cost_pusd} eq '0');
    for (['in', 'input_tokens'], ['out', 'output_tokens']) {
        my ($short, $rf) = @$_;
        my $name = $f{$short};
        my $v = $obj->{$name};
        # an embedding-style usage: output is total - input (README, "One
        # reading")
        $v = $obj->{total_tokens} - $obj->{ $f{in} }
            if $short eq 'out' && !defined $v && !$f{null_ok}
               && defined $obj->{total_tokens} && !ref $obj->{total_tokens}
               && defined $obj->{ $f{in} } && !ref $obj->{ $f{in} };
        violate($q, 'tokens', "$what $name " . show_val($v)
            . ", record $rec->{$rf}")
            unless same_number($v, $rec->{$rf})
                || (!defined $v && $f{null_ok} && $rec->{cost_pusd} eq '0');
    }
    if ($f{est}) {
        my $v = $obj->{ $f{est} };
        violate($q, 'estimated', "$what estimated " . show_val($v)
            . ', record flags ' . ($rec->{flags} // ''))
            unless JSON::PP::is_bool($v) && !!$v == rec_estimated($rec);
    }
}

for my $q (@REQ) {
    my $r = $RES{ $q->{seed} };
    $q->{res} = $r;
    my $h = $r->{headers};
    my $ct = lc($h->{'content-type'} // '');
    my $is_sse = $ct =~ m{^text/event-stream};
    $q->{is_sse} = $is_sse;

    # 1. a complete response, with a request id
    if ($r->{timed_out}) {
        violate($q, 'hang', sprintf('no complete response in %d s (%s; %d body bytes)',
            $TIMEOUT, $r->{status} ? "status $r->{status}" : 'no status line',
            length $r->{body}));
    } elsif (!$r->{complete} && !stream_broke_off($r, $is_sse)) {
        violate($q, 'incomplete', ($r->{error} // 'incomplete')
            . ($r->{status} ? " (status $r->{status})" : '')
            . ($r->{read_error} ? " (read: $r->{read_error})" : ''));
    } elsif ($r->{extra}) {
        violate($q, 'incomplete', "$r->{extra} bytes after the end of the response");
    }
    my $rid = $h->{'x-cfcost-request-id'};
    if ($r->{status} && ($rid // '') !~ /^[0-9a-f]{32}$/) {
        violate($q, 'request_id', 'X-Cfcost-Request-Id ' . show_val($rid)
            . " on a $r->{status}");
    } elsif (!$r->{status}) {
        violate($q, 'request_id', 'no response head: '
            . ($r->{error} // 'nothing'));
    }

    # 2. exactly one record
    my @recs = defined $rid ? @{ $BY_RID{$rid} || [] } : ();
    if (defined $rid && @recs != 1) {
        violate($q, 'one_record', scalar(@recs) . " records for request id $rid");
    }
    my $rec = @recs == 1 ? $recs[0] : undef;
    $q->{rec} = $rec;
    $q->{nrec} = defined $rid ? scalar @recs : undef;

    # 3. the status
    if ($rec && $r->{status} && ($rec->{status} // '') ne $r->{status}) {
        violate($q, 'status', "client got $r->{status}, record says "
            . show_val($rec->{status}) . ' (error ' . ($rec->{error} // '') . ')');
    }

    # 4. JSON bodies (of complete answers: a cut one is rule 1's)
    if (!$is_sse && $ct =~ m{^application/json} && $r->{complete}) {
        my $e = json_error($r->{body});
        if ($e) {
            violate($q, 'json', "$r->{status} body: $e");
            $q->{bad_json} = 1;
        }
    }

    # 5, 6. what the client is told
    $q->{shown} = 'no cost';
    if (!$is_sse) {
        my $hc = $h->{'x-cfcost-cost-usd'};
        $q->{shown} = defined $hc ? 'cost' : 'no cost';
        next unless $rec;
        my $usd = usd_of($rec->{cost_pusd});
        if ($rec->{cost_pusd} ne '0') {
            violate($q, 'cost', 'X-Cfcost-Cost-USD ' . show_val($hc)
                . ", record $usd ($r->{status})")
                unless defined $hc && $hc eq $usd;
            for (['x-cfcost-input-tokens', 'input_tokens'],
                 ['x-cfcost-output-tokens', 'output_tokens']) {
                my ($hn, $rf) = @$_;
                violate($q, 'tokens', "$hn " . show_val($h->{$hn})
                    . ", record $rec->{$rf}")
                    unless defined $h->{$hn} && $h->{$hn} eq $rec->{$rf};
            }
            my $hu = $h->{'x-cfcost-usage'};
            if (rec_estimated($rec)) {
                violate($q, 'estimated', 'X-Cfcost-Usage ' . show_val($hu)
                    . ' on an estimated record')
                    unless ($hu // '') eq 'estimated';
            } elsif (($hu // '') eq 'estimated') {
                violate($q, 'estimated', 'X-Cfcost-Usage: estimated on a record'
                    . ' not estimated (flags ' . ($rec->{flags} // '') . ')');
            }
        } else {
            violate($q, 'cost', "X-Cfcost-Cost-USD $hc on a record of cost 0")
                if defined $hc && $hc ne '0.000000';
            for (['x-cfcost-input-tokens', 'input_tokens'],
                 ['x-cfcost-output-tokens', 'output_tokens']) {
                my ($hn, $rf) = @$_;
                violate($q, 'tokens', "$hn $h->{$hn}, record $rec->{$rf}")
                    if defined $h->{$hn} && $h->{$hn} ne $rec->{$rf};
            }
        }
        next unless $r->{status} eq '200' && !$q->{bad_json};
        my $j = decode_exact($r->{body});
        next unless ref $j eq 'HASH';
        if ($q->{route} eq 'chat') {
            compare_told($q, $rec, 'chat body', $j, in => 'input_tokens',
                out => 'output_tokens', est => 'estimated', null_ok => 1);
        } else {
            my $u = body_usage($q, $j);
            if (ref $u eq 'HASH' && exists $u->{cost_usd}) {
                compare_told($q, $rec, ($q->{route} eq 'openai' ? '' : 'result.')
                    . 'usage', $u, in => 'prompt_tokens', out => 'completion_tokens');
                $q->{shown} = 'cost';
            }
        }
        next;
    }

    # a stream
    my @ev = sse_parse($r->{body});
    my ($done) = grep { ($ev[$_]{data} // '') eq '[DONE]' } 0 .. $#ev;
    $q->{done} = defined $done;
    $q->{clean} = $r->{complete} && defined $done && $done == $#ev
        && $ev[-1]{terminated};
    if (defined $done) {
        my $after = substr($r->{body}, $ev[$done]{end});
        violate($q, 'done', 'after [DONE]: ' . show_bytes($after, 80))
            if $after =~ /\S/;
    }
    my (@cost_ev, @bad_ev, @unasked);
    for my $i (0 .. $#ev) {
        my $e = $ev[$i];
        next unless defined $e->{data} && $e->{data} ne '[DONE]';
        my $j = decode_exact($e->{data});
        $e->{json} = $j;
        if (!defined $j) {
            push @bad_ev, $i;
            next;
        }
        next unless ref $j eq 'HASH';
        if ($q->{route} eq 'openai') {
            push @cost_ev, $i if ref $j->{choices} eq 'ARRAY'
                && !@{ $j->{choices} } && ref $j->{usage} eq 'HASH';
            # "usage":null in every chunk is what include_usage looks like
            push @unasked, $i if !$q->{include_usage} && defined $j->{usage};
        } else {
            push @cost_ev, $i if exists $j->{cfcost};
        }
    }
    if ($q->{route} eq 'openai' && !$q->{include_usage}) {
        # the data as an SSE client assembles it (a CR ends a line: what
        # follows it on the raw line is another field, ignored)
        my @unreadable = grep { $ev[$_]{data} =~ /"usage"/ } @bad_ev;
        violate($q, 'unasked_usage', scalar(@unasked) . ' of ' . scalar(@ev)
            . ' events carry a usage member (first: '
            . show_bytes($ev[$unasked[0]]{data} =~ s/^.*?(.{0,30}"usage".{0,60}).*$/$1/sr, 100)
            . ')') if @unasked;
        violate($q, 'unasked_usage', scalar(@unreadable)
            . ' unreadable event(s) with "usage": '
            . show_bytes($ev[$unreadable[0]]{data}, 100)) if @unreadable;
    }
    my $asked = $q->{route} ne 'openai' || $q->{include_usage};
    $q->{shown} = !$asked ? 'cost not asked' : @cost_ev ? 'cost' : 'no cost';
    next unless $asked;
    my $what = $q->{route} eq 'openai' ? 'usage chunk' : 'cfcost event';
    my $mark = $q->{route} eq 'openai' ? qr/"usage"\s*:\s*\{/ : qr/"cfcost"/;
    my @unreadable = grep { $ev[$_]{data} =~ $mark } @bad_ev;
    if (@cost_ev != 1 || @unreadable) {
        violate($q, 'cost_event', scalar(@cost_ev) . " ${what}s"
            . (@unreadable ? ', ' . scalar(@unreadable) . ' unreadable ('
               . json_error($ev[$unreadable[0]]{data}) . ')' : '')
            . " ($r->{status}, " . scalar(@ev) . ' events, '
            . ($r->{complete} ? 'complete' : 'cut') . ')');
    }
    if (@cost_ev) {
        my $i = $cost_ev[-1];
        violate($q, 'cost_event', "the $what is not terminated by a blank line")
            unless $ev[$i]{terminated};
        violate($q, 'done', "the $what comes after [DONE]")
            if defined $done && $i > $done;
        if ($rec) {
            my $j = $ev[$i]{json};
            if ($q->{route} eq 'openai') {
                compare_told($q, $rec, $what, $j->{usage},
                    in => 'prompt_tokens', out => 'completion_tokens');
            } elsif (ref $j->{cfcost} eq 'HASH') {
                compare_told($q, $rec, $what, $j->{cfcost},
                    in => 'input_tokens', out => 'output_tokens', est => 'estimated');
            } else {
                violate($q, 'cost', "$what: cfcost is " . show_val($j->{cfcost}));
            }
        }
    }
}

if ($ENV{CFCOST_FUZZ_DUMP}) {
    for my $q (@REQ) {
        diag('--- ' . label($q) . "\n" . "POST $q->{path} $q->{body}\n"
            . show_bytes($q->{res}{raw} // '', 6000) . "\n"
            . 'record: ' . CfcostTest::_show($q->{rec}));
    }
}

# records nobody was told about
my %told = map { ($_->{res}{headers}{'x-cfcost-request-id'} // '') => 1 } @REQ;
for my $rid (sort keys %BY_RID) {
    next if $told{$rid};
    violate(undef, 'one_record', scalar(@{ $BY_RID{$rid} })
        . " record(s) of a request id no client got: $rid (status "
        . ($BY_RID{$rid}[0]{status} // '?') . ', error '
        . ($BY_RID{$rid}[0]{error} // '') . ')');
}

# 7. every record's arithmetic
my %q_by_rid = map { ($_->{res}{headers}{'x-cfcost-request-id'} // '-') => $_ } @REQ;
for my $rec (@$records) {
    my $q = $q_by_rid{ $rec->{request_id} // '' };
    my @f = qw(input_tokens output_tokens cached_tokens cost_pusd price_input price_output);
    my @bad = grep { ($rec->{$_} // '') !~ /^\d+$/ } @f;
    push @bad, 'price_cached' if ($rec->{price_cached} // '') !~ /^\d*$/;
    if (@bad) {
        violate($q, 'record_cost', 'record ' . ($rec->{request_id} // '?')
            . ': not a whole number: '
            . join(', ', map { "$_=" . show_val($rec->{$_}) } @bad));
        next;
    }
    my ($in, $out, $ca) = map { Math::BigInt->new($rec->{$_}) }
        qw(input_tokens output_tokens cached_tokens);
    my @big = grep { Math::BigInt->new($rec->{$_}) > $USAGE_MAX }
        qw(input_tokens output_tokens cached_tokens);
    violate($q, 'record_cost', 'counts over 16777216: '
        . join(', ', map { "$_=$rec->{$_}" } @big)) if @big;
    violate($q, 'record_cost', "cached_tokens $ca > input_tokens $in")
        if $ca > $in;
    my $pc = length $rec->{price_cached} ? $rec->{price_cached} : $rec->{price_input};
    my $want = $in->copy->bsub($ca)->bmul($rec->{price_input})
        ->badd($ca->copy->bmul($pc))
        ->badd($out->copy->bmul($rec->{price_output}));
    violate($q, 'record_cost', "cost_pusd $rec->{cost_pusd} != "
        . "($in-$ca)x$rec->{price_input} + ${ca}x$pc + ${out}x$rec->{price_output}"
        . " = $want") if $want->bstr ne $rec->{cost_pusd};
}

# 8. the error log
my @crash = grep { /\[(alert|emerg)\]|exited on signal/ } split /\n/, $error_log;
violate(undef, 'log', $_) for @crash;


# --------------------------------------------------------------------------
# the report

sub label {
    my ($q) = @_;
    return 'record' unless $q;
    return sprintf('seed %d [%s] %s %s%s%s', $q->{seed}, $q->{kind}, $q->{route},
        $q->{stream} ? 'stream' : 'plain',
        $q->{include_usage} ? ' include_usage' : '',
        $q->{shape} ? " ($q->{shape})" : '');
}

for my $rule (@RULE_ORDER) {
    my @v = @{ $VIOL{$rule} };
    my %seeds = map { ($_->{seed} // "r$_") => 1 } @v;
    ok(!@v, "$RULES{$rule}")
        or diag(scalar(@v) . ' violation(s), ' . scalar(keys %seeds)
            . " request(s):\n" . join "\n", map {
                '  ' . label($_->{q}) . ': ' . $_->{reason}
            } @v[0 .. ($#v < $EXAMPLES - 1 ? $#v : $EXAMPLES - 1)]);
}

# the harness itself: the emulator did what plan(seed) says
{
    my @wrong = grep {
        my $m = $_->{res}{headers}{'x-emu-mutation'};
        defined $m && $m ne $_->{kind};
    } @REQ;
    ok(!@wrong, 'harness: X-Emu-Mutation, where it arrives, is plan(seed)')
        or diag(join "\n", map { label($_) . ': ' . $_->{res}{headers}{'x-emu-mutation'} }
            @wrong[0 .. ($#wrong > 9 ? 9 : $#wrong)]);
}

# the table: kind -> client outcome -> record
sub group_of {
    my ($q) = @_;
    my @k = @{ $q->{kinds} };
    return @k > 1 ? "*+$k[1]" : $k[0];
}

sub client_outcome {
    my ($q) = @_;
    my $r = $q->{res};
    return 'hang' if $r->{timed_out};
    return 'no response' unless $r->{status};
    my $s = substr($r->{status}, 0, 1) . 'xx';
    my $ct = lc($r->{headers}{'content-type'} // '');
    my $body = $q->{is_sse}
        ? 'sse ' . ($q->{clean} ? 'clean' : !$r->{complete} ? 'cut'
                    : $q->{done} ? 'messy' : 'no [DONE]')
        : $ct =~ m{^application/json} ? ($q->{bad_json} ? 'bad json' : 'json')
        : length $r->{body} ? ($ct =~ m{^([\w-]+/[\w.+-]+)} ? $1 : 'untyped')
        : 'empty';
    $body .= ' cut' if !$q->{is_sse} && !$r->{complete};
    return "$s $body, $q->{shown}";
}

sub record_outcome {
    my ($q) = @_;
    return 'no request id' unless defined $q->{nrec};
    return "$q->{nrec} records" unless $q->{rec};
    my $rec = $q->{rec};
    my $flags = join ',', sort grep { length && $_ ne 'streamed' }
        split /,/, $rec->{flags} // '';
    return join ' ', $rec->{status} // '?', length($rec->{error} // '')
        ? $rec->{error} : '-', $flags ? "[$flags]" : '',
        $rec->{cost_pusd} eq '0' ? '$0' : '';
}

my (%rows, %groups);
for my $q (@REQ) {
    my $g = group_of($q);
    my $row = $rows{$g}{ client_outcome($q) . "\t" . record_outcome($q) } //= { n => 0, v => 0 };
    $row->{n}++;
    $row->{v}++ if $q->{viol};
    my $gs = $groups{$g} //= { n => 0, v => 0, rules => {} };
    $gs->{n}++;
    $gs->{v}++ if $q->{viol};
    $gs->{rules}{$_} += $q->{viol}{$_} for keys %{ $q->{viol} || {} };
}
my $total = 0;
$total += @{ $VIOL{$_} } for @RULE_ORDER;
my $bad_requests = grep { $_->{viol} } @REQ;
diag(sprintf('%d requests in %.1f s (%.1f s per 1000 seeds, %d client processes)',
    scalar(@REQ), $t_requests, $t_requests * 1000 / @REQ, $JOBS));
my @md;
push @md, sprintf('cfcost fuzz: seeds %d..%d (%d requests), %d records;'
    . ' %d disagreements, %d requests with at least one',
    $FIRST, $SEEDS[-1], scalar(@REQ), scalar(@$records), $total, $bad_requests), '';
push @md, '| rule | violations | requests |', '|---|---:|---:|';
for my $rule (@RULE_ORDER) {
    my %s = map { ($_->{seed} // "r$_") => 1 } @{ $VIOL{$rule} };
    push @md, sprintf('| %s | %d | %d |', $RULES{$rule}, scalar @{ $VIOL{$rule} },
        scalar keys %s);
}
push @md, '', '| kind | requests | with violations | violations by rule |',
    '|---|---:|---:|---|';
for my $g (sort keys %groups) {
    my $gs = $groups{$g};
    push @md, sprintf('| %s | %d | %d | %s |', $g, $gs->{n}, $gs->{v},
        join(', ', map { "$_ $gs->{rules}{$_}" }
            grep { $gs->{rules}{$_} } @RULE_ORDER) || '-');
}
push @md, '', '| kind | client (status, body, cost shown) | record (status, error, flags) | count | with violations |',
    '|---|---|---|---:|---:|';
for my $g (sort keys %rows) {
    for my $k (sort { $rows{$g}{$b}{n} <=> $rows{$g}{$a}{n} || $a cmp $b }
               keys %{ $rows{$g} }) {
        my ($c, $rc) = split /\t/, $k;
        push @md, sprintf('| %s | %s | %s | %d | %d |', $g, $c, $rc,
            $rows{$g}{$k}{n}, $rows{$g}{$k}{v});
    }
}
diag(join "\n", @md);
if (my $f = $ENV{CFCOST_FUZZ_TABLE}) {
    if (open my $fh, '>', $f) {
        print $fh join("\n", @md), "\n";
        close $fh;
    } else {
        diag("cannot write $f: $!");
    }
}

$env->done;
done_testing;
