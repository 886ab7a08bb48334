# The dashboard (dashboard/index.html, app.js, style.css) in headless
# Chromium.
#
# 1. Static checks: no external resources, no HTML parsing of data.
# 2. The real gateway (nginx with the shipped configuration, the emulator,
#    Redis): nginx serves the page at /; the deep link
#    /#key=...&model=...&say=... fills the key, picks the model and sends
#    messages on load; `chromium --headless --dump-dom` (virtual time, so
#    every fetch settles) shows the replies, their cost and tokens, the
#    provider optgroups, escaped text, inline errors, and the usage panel
#    (served by the aggregator behind the gateway).
#    Screenshots go to build/ for humans.
# 3. The same gateway driven over the DevTools protocol (a pipe, no
#    WebSocket): key entry, persistence across a reload, model change, typing
#    a message and pressing Enter, "New chat", "Forget".
# 4. The usage panel against a fixture usage API (a tiny HTTP server in this
#    test that serves the dashboard files and canned JSON): the cards, the
#    cost-by-model bars, the log table with "load more", the daily chart,
#    escaping of API strings, a narrow window, and a 502 from the usage API.
#
# Chromium must be installed (Debian package chromium): without it this test
# fails, it does not skip.  CFCOST_TEST_CHROMIUM overrides /usr/bin/chromium.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/browser";
use Test::More;
use IO::Socket::INET;
use POSIX ();
use File::Temp ();
use JSON::PP ();
use Time::HiRes qw(time sleep);
use CfcostTest;
use CfcostBrowser;

my $ROOT  = CfcostTest->root;
my $DASH  = "$ROOT/dashboard";
my $BUILD = "$ROOT/build";
mkdir $BUILD unless -d $BUILD;

my $JSON = JSON::PP->new->utf8->canonical;
my $L8   = '@cf/meta/llama-3.1-8b-instruct';
my $OSS  = '@cf/openai/gpt-oss-120b';

# --------------------------------------------------------------------------
# helpers

sub slurp {
    my ($p) = @_;
    open my $fh, '<:raw', $p or return undef;
    local $/;
    my $t = <$fh>;
    return $t;
}

sub uri {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# Visible text of an HTML fragment: tags removed, entities decoded.
sub text_of {
    my ($html) = @_;
    $html =~ s/<(script|style)\b.*?<\/\1>//gs;
    $html =~ s/<[^>]*>//g;
    my %ent = (lt => '<', gt => '>', amp => '&', quot => '"', '#39' => "'",
        nbsp => "\x{a0}");
    $html =~ s/&(lt|gt|amp|quot|#39|nbsp);/$ent{$1}/g;
    return $html;
}

# The element with this id, outer HTML (nested <div>s balanced).
sub element_by_id {
    my ($dom, $id, $tag) = @_;
    $tag //= 'div';
    return undef unless $dom =~ /(<$tag\b[^>]*\bid="\Q$id\E"[^>]*>)/g;
    my $start = $-[1];
    my $pos = pos($dom);
    my $depth = 1;
    while ($depth && $dom =~ /(<$tag\b[^>]*>|<\/$tag>)/g) {
        $depth += substr($1, 1, 1) eq '/' ? -1 : 1;
        $pos = pos($dom);
    }
    return substr($dom, $start, $pos - $start);
}

sub png_ok {
    my ($path, $w, $h, $name) = @_;
    my ($pw, $ph) = CfcostBrowser::png_size($path);
    ok(defined $pw && $pw == $w && (!defined $h || $ph == $h),
        "$name: a ${w}px-wide PNG in build/")
        or diag("got " . (defined $pw ? "${pw}x$ph" : 'no PNG') . " at $path");
}

# --------------------------------------------------------------------------
# 0. Chromium is required

unless (CfcostBrowser::available()) {
    fail("headless Chromium is required for the dashboard test, but "
        . "$CfcostBrowser::BIN is missing: install the Debian package "
        . "'chromium' (apt-get install chromium) or set CFCOST_TEST_CHROMIUM");
    done_testing();
    exit 1;
}

# --------------------------------------------------------------------------
# 1. static checks

my %file;
for my $f (qw(index.html app.js style.css)) {
    $file{$f} = slurp("$DASH/$f");
    ok(defined $file{$f} && length $file{$f}, "dashboard/$f exists");
    $file{$f} //= '';
}

{
    my @ext;
    while ($file{'index.html'} =~ /\b(?:src|href|action)\s*=\s*["']([^"']*)["']/gi) {
        push @ext, $1 if $1 =~ m{^(?:[a-z][a-z0-9+.-]*:)?//}i;
    }
    while ($file{'style.css'} =~ /(?:url\(\s*["']?|\@import\s+["'])([^"')]*)/gi) {
        push @ext, $1 if $1 =~ m{^(?:[a-z][a-z0-9+.-]*:)?//}i;
    }
    (my $js = $file{'app.js'}) =~ s{http://www\.w3\.org/2000/svg}{}g;
    push @ext, $1 while $js =~ m{((?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'"]*)}gi;
    ok(!@ext, 'no external resources (fonts, scripts, styles) are loaded')
        or diag("external: @ext");
}

unlike($file{'app.js'}, qr/\b(?:innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b/,
    'app.js never parses strings as HTML (textContent only)');
like($file{'index.html'}, qr/Content-Security-Policy/,
    'index.html sets a Content-Security-Policy');

# --------------------------------------------------------------------------
# 2. the real gateway: nginx serves the page; deep link + --dump-dom

# with the aggregator: the usage panel shows real numbers
my $env = CfcostTest->start(aggregator => 1);
my $key  = $env->create_key(user => 'dash')->{key};
my $base = 'http://127.0.0.1:' . $env->port;

{
    my $r = $env->http(GET => '/');
    is($r->{status}, 200, 'GET /: 200');
    like($r->{headers}{'content-type'} // '', qr{^text/html}, 'GET /: text/html');
    like($r->{body}, qr{<script src="app\.js"}, 'GET /: the dashboard page');
    for ([ '/app.js', qr{javascript} ], [ '/style.css', qr{^text/css} ]) {
        my $s = $env->http(GET => $_->[0]);
        is($s->{status}, 200, "GET $_->[0]: 200");
        like($s->{headers}{'content-type'} // '', $_->[1],
            "GET $_->[0]: content type");
    }
}

my $models_res = $env->http(GET => '/api/ai/models');
my @models = @{ ($models_res->{json} || {})->{models} || [] };
my %providers = map { $_->{provider} => 1 } @models;
ok(scalar(keys %providers) >= 2, 'the price table has several providers');

my $say2 = '<b>bold</b> & more [emu:usage 1000 2000]';
my $link = "$base/#key=" . uri($key) . '&model=' . uri($L8)
    . '&say=Hello&say=' . uri($say2) . '&say=' . uri('quiet [emu:no-usage]');

$env->emu_clear;
my $dom = eval { CfcostBrowser::dump_dom($link, width => 1400, height => 1000) };
ok(defined $dom, 'chromium --dump-dom on the deep link') or diag($@);
$dom //= '';

like($dom, qr/<body[^>]*data-ready="yes"/, 'deep link: the page finished its work');

# model picker: optgroups by provider, prices in each option
{
    my @groups = $dom =~ /<optgroup label="([^"]*)"/g;
    is(scalar @groups, scalar keys %providers,
        'model picker: one <optgroup> per provider');
    ok((grep { $_ eq 'Meta' } @groups) && (grep { $_ eq 'OpenAI' } @groups),
        'model picker: Meta and OpenAI groups');
    my @opts = $dom =~ /<option value="@[^"]*"/g;
    is(scalar @opts, scalar @models, 'model picker: one option per model');
    like($dom, qr{<option value="\Q$L8\E"[^>]*>Llama 3\.1 8B Instruct \(\$0\.282 / \$0\.827 per M\)</option>},
        'model picker: option shows the price per M tokens');
    my $price = text_of(element_by_id($dom, 'model-price') // '');
    is($price, "\x{1f4b0} \$0.282/M input \x{b7} \$0.827/M output",
        'the selected model\'s input/output price is shown beneath');
}

# the conversation
{
    my $msgs = element_by_id($dom, 'messages') // '';
    my $text = text_of($msgs);
    like($text, qr/Hello from the cfcost emulator\. You said: Hello/,
        'reply text from the emulator is shown');
    like($text, qr/You said: Hello\x{1f4b0} \$0\.0000\d\d \x{b7} \x{1fa99} \d+ tokens/,
        'under the reply: its cost ($0.0000..) and tokens');
    like($text, qr/\x{1f4b0} \$0\.001936 \x{b7} \x{1fa99} 3,000 tokens/,
        'a reply with 1000 in / 2000 out tokens costs $0.001936 (Llama 3.1 8B)');
    like($text, qr/You said: quiet\s*\x{1f4b0} \$0\.0000\d\d \x{b7} \x{1fa99} \d+ tokens \(estimated\)/,
        'a reply without usage shows the estimate billed, marked "(estimated)"');
    like($msgs, qr/&lt;b&gt;bold&lt;\/b&gt; &amp; more/,
        'markup in messages is shown as text');
    unlike($msgs, qr/<b>bold/, 'no markup from messages reaches the DOM');
    unlike($dom, qr/class="[^"]*\bmsg-error\b/, 'no error box in the conversation');
    like($dom, qr/<div id="models-error"[^>]*\bhidden\b/, 'no model-list error');
    like(text_of(element_by_id($dom, 'chat-totals') // ''),
        qr/This conversation: \$0\.0019\d\d \x{b7} \d[\d,]* tokens \x{b7} 3 replies \(1 estimated\)/,
        'conversation total');
    like($dom, qr/<body[^>]*data-key="set"/, 'deep link: the key is stored');
    like(text_of(element_by_id($dom, 'key-masked', 'code') // ''),
        qr/^cfk_..\x{2026}\Q${\ substr($key, -4)}\E$/, 'the key is shown masked');
    unlike($dom, qr/\Q$key\E/, 'the full key is not in the page');
}

# usage panel: the aggregator runs behind the gateway, so it has numbers
{
    my ($usage_state) = $dom =~ /<body[^>]*data-usage="([^"]*)"/;
    is($usage_state // '', 'ready', 'usage panel: ready');
    like(text_of(element_by_id($dom, 'card-cost') // ''), qr/^\$\d+\.\d{6}$/,
        'usage panel: total cost card with 6 decimals');
}

# what the gateway and the emulator saw: the whole conversation each time
{
    my $reqs = $env->emu_requests;
    is(scalar @$reqs, 3, 'the emulator got three chat requests');
    my @bodies = map { CfcostTest::decode_json_text(
        do { my $t = $_->{body} // ''; utf8::encode($t); $t }) || {} } @$reqs;
    like($reqs->[0]{path} // '', qr{/ai/run/\Q$L8\E$}, 'the selected model was used');
    is_deeply([ map { $_->{role} } @{ $bodies[2]{messages} || [] } ],
        [qw(user assistant user assistant user)],
        'each request carries the conversation so far');
    is($bodies[1]{messages}[1]{content} // '',
        'Hello from the cfcost emulator. You said: Hello',
        'the assistant reply is part of the next request');
    is($bodies[1]{messages}[2]{content} // '', $say2,
        'the user text is sent as typed');
    my $recs = $env->wait_records(3);
    is(scalar(grep { ($_->{user} // '') eq 'dash' } @$recs), 3,
        'three usage records for user dash');
}

# errors inline, in red, with the status
{
    my $d = eval { CfcostBrowser::dump_dom(
        "$base/#key=cfk_notavalidkey000000000000000000000&say=Hello") } // '';
    my $err = text_of(join '', $d =~ /(<div class="msg msg-error">.*?<\/div><\/div>)/gs);
    like($err, qr/HTTP 401: invalid API key/, 'a refused key: inline error with status and detail');
    like($d, qr/class="msg msg-user msg-failed"/, 'the unsent message is marked');

    $d = eval { CfcostBrowser::dump_dom(
        "$base/#key=" . uri($key) . '&say=' . uri('busy? [emu:error 3040]')) } // '';
    $err = text_of(join '', $d =~ /(<div class="msg msg-error">.*?<\/div><\/div>)/gs);
    like($err, qr/HTTP 429: .*3040/, 'an upstream error: its status and Cloudflare code');
    like($d, qr/<div class="error-box" role="alert">/, 'the error box is the red one');
    like($file{'style.css'}, qr/\.error-box\s*\{[^}]*color:\s*var\(--cost\)/s,
        'error boxes are red');
    like($file{'style.css'}, qr/--cost:\s*#dc2626/, 'cost red is #dc2626');
}

# screenshots for humans
{
    my $shot = "$BUILD/dashboard.png";
    eval { CfcostBrowser::screenshot($link, $shot, width => 1400, height => 1000) };
    diag($@) if $@;
    png_ok($shot, 1400, 1000, 'screenshot (wide)');
    my $narrow = "$BUILD/dashboard-narrow.png";
    eval { CfcostBrowser::screenshot($link, $narrow, width => 420, height => 1400) };
    diag($@) if $@;
    png_ok($narrow, 420, 1400, 'screenshot (narrow)');
}

# --------------------------------------------------------------------------
# 3. the real gateway, driven like a person: DevTools protocol over a pipe

{
    my $b = eval { CfcostBrowser->new(width => 1280, height => 900) };
    ok($b, 'chromium with --remote-debugging-pipe') or diag($@);
    if ($b) {
        eval {
            $b->load("$base/");
            ok($b->wait_for('document.body.dataset.ready === "yes"'), 'page loads');
            is($b->js('document.body.dataset.key'), 'none', 'no key at first');
            like($b->js('document.getElementById("usage-status").textContent'),
                qr/Enter your API key/, 'usage panel asks for a key');

            $b->focus('#key-input');
            $b->type("$key\n");
            ok($b->wait_for('document.body.dataset.key === "set"'), 'key saved');
            is($b->js('localStorage.getItem("cfcost.apiKey")'), $key,
                'the key is kept in localStorage');
            $b->reload;
            ok($b->wait_for('document.body.dataset.ready === "yes" && document.body.dataset.key === "set"'),
                'the key survives a reload');

            $b->js(qq{(function(){var s=document.getElementById("model-select");
                s.value="$OSS"; s.dispatchEvent(new Event("change")); return 1;})()});
            like($b->js('document.getElementById("model-price").textContent'),
                qr{\$0\.35/M input \x{b7} \$0\.75/M output}, 'changing the model updates the price line');
            is($b->js('localStorage.getItem("cfcost.model")'), $OSS, 'the model choice is remembered');

            $env->emu_clear;
            $b->focus('#chat-input');
            $b->type("Typed by hand\n");
            my $meta = $b->wait_for(
                'document.querySelector(".msg-assistant .msg-meta") && document.querySelector(".msg-assistant .msg-meta").textContent', 15);
            like($meta // '', qr/^\x{1f4b0} \$0\.0000\d\d \x{b7} \x{1fa99} \d+ tokens/,
                'Enter sends; the reply shows its cost and tokens');
            my $reqs = $env->emu_requests;
            like($reqs->[-1]{path} // '', qr{/ai/run/\Q$OSS\E$}, 'sent to the chosen model');
            is($env->emu_requests->[-1]{headers}{'x-api-key'}, undef,
                'the client key is not forwarded upstream');

            $b->click('#chat-clear');
            ok($b->wait_for('document.querySelectorAll("#messages .msg").length === 0'),
                '"New chat" clears the conversation');

            $b->click('#key-forget');
            ok($b->wait_for('document.body.dataset.key === "none"'), '"Forget" removes the key');
            is($b->js('localStorage.getItem("cfcost.apiKey")'), undef,
                'localStorage no longer holds the key');
            ok($b->js('!document.getElementById("key-form").hidden'), 'the key form is back');

            my @e = $b->page_errors;
            ok(!@e, 'no script errors or policy violations on the real gateway')
                or diag(join "\n", @e);
            1;
        } or fail("browser session on the gateway: $@");
        $b->quit;
    }
}

$env->done;

# --------------------------------------------------------------------------
# 4. the usage panel with data, from a fixture usage API

my $EVIL = '@cf/x/<img src=x onerror="window.__pwned=1">';
my %FIX = (
    '/api/ai/models' => { models => [
        { id => $L8, name => 'Llama 3.1 8B Instruct', provider => 'Meta',
          description => 'd', pricing => { input => 0.282, output => 0.827 } },
        { id => $OSS, name => 'gpt-oss-120b', provider => 'OpenAI',
          description => 'd', pricing => { input => 0.35, output => 0.75 } },
        { id => '@cf/moonshotai/kimi-k2.5', name => 'Kimi <K2.5>',
          provider => 'R&D <Labs>', description => '<i>x</i>',
          pricing => { input => 0.6, output => 3.0, cached_input => 0.1 } },
    ] },
    '/api/usage' => {
        total_requests => 7, total_input_tokens => 12000,
        total_output_tokens => 3456, total_tokens => 15456,
        total_cost_usd => 0.01234567,
        by_model => {
            $OSS  => { requests => 2, input_tokens => 2000, output_tokens => 400,
                       tokens => 2400, cost => 0.002 },
            $EVIL => { requests => 1, input_tokens => 1000, output_tokens => 56,
                       tokens => 1056, cost => 0.00034567 },
            $L8   => { requests => 4, input_tokens => 9000, output_tokens => 3000,
                       tokens => 12000, cost => 0.01 },
        },
    },
    '/api/usage/logs' => { logs => [
        { id => 'r3', timestamp => '2026-11-27T10:15:00Z', model => $L8,
          input_tokens => 1000, output_tokens => 2000, total_tokens => 3000,
          cost_usd => 0.001936, status => 200 },
        { id => 'r2', timestamp => 1795817700000, model => $EVIL,
          input_tokens => 1000, output_tokens => 56, total_tokens => 1056,
          cost_usd => 0.000346, status => 200 },
    ], next_cursor => 'cur-2' },
    '/api/usage/logs#cur-2' => { logs => [
        { id => 'r1', timestamp => 1795731300, model => $OSS,
          input_tokens => 0, output_tokens => 0, total_tokens => 0,
          cost_usd => 0, status => 429, error => 'budget' },
    ], next_cursor => undef },
    '/api/usage/timeseries' => { bucket => 'day', points => [
        { start => '2026-11-25', requests => 2, tokens => 2400, cost_usd => 0.002 },
        { start => '2026-11-26', requests => 0, tokens => 0, cost_usd => 0 },
        { start => '2026-11-27', requests => 5, tokens => 13056, cost_usd => 0.010346 },
    ] },
);

my $fx_dir = File::Temp::tempdir('cfcost-dash-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $fx_log = "$fx_dir/requests.log";
my $fx_down = "$fx_dir/usage-down";

my %TYPE = (html => 'text/html; charset=utf-8', js => 'application/javascript',
    css => 'text/css');

sub fx_handle {
    my ($c) = @_;
    local $SIG{ALRM} = sub { POSIX::_exit(0) };
    alarm 10;
    my $req = '';
    while ($req !~ /\r\n\r\n/) {
        my $n = sysread($c, my $buf, 8192);
        POSIX::_exit(0) unless $n;
        $req .= $buf;
    }
    my ($method, $target) = $req =~ /^(\S+) (\S+)/;
    my ($apikey) = $req =~ /^X-API-Key:\s*(\S*)\r?$/mi;
    my ($path, $query) = split /\?/, $target // '/', 2;
    $query //= '';
    if (open my $lf, '>>', $fx_log) {
        print $lf $JSON->encode({ method => $method, path => $path,
            query => $query, key => $apikey }), "\n";
        close $lf;
    }
    my ($status, $type, $body) = (404, 'application/json', '{"detail":"not found"}');
    if ($path =~ m{^/(?:index\.html)?$} || $path =~ m{^/(app\.js|style\.css)$}) {
        my $f = $1 // 'index.html';
        my ($ext) = $f =~ /\.(\w+)$/;
        ($status, $type, $body) = (200, $TYPE{$ext}, slurp("$DASH/$f") // '');
    } elsif ($path =~ m{^/api/usage} && -e $fx_down) {
        ($status, $body) = (502, '{"detail":"usage store offline"}');
    } elsif ($path eq '/api/usage/logs' && $query =~ /(?:^|&)cursor=([^&]*)/) {
        my $fx = $FIX{"/api/usage/logs#$1"};
        ($status, $body) = $fx ? (200, $JSON->encode($fx))
            : (400, '{"detail":"bad cursor"}');
    } elsif (my $fx = $FIX{$path}) {
        ($status, $body) = (200, $JSON->encode($fx));
    }
    my $resp = "HTTP/1.1 $status X\r\nContent-Type: $type\r\nContent-Length: "
        . length($body) . "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n$body";
    my $off = 0;
    while ($off < length $resp) {
        my $w = syswrite($c, $resp, length($resp) - $off, $off);
        last unless $w;
        $off += $w;
    }
    POSIX::_exit(0);
}

my $fx_sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
    Listen => 64, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $fx_port = $fx_sock->sockport;
my $fx_pid = fork;
die "fork: $!" unless defined $fx_pid;
if ($fx_pid == 0) {
    $SIG{CHLD} = 'IGNORE';
    $SIG{TERM} = sub { POSIX::_exit(0) };
    while (1) {
        my $c = $fx_sock->accept or next;
        my $k = fork;
        if (defined $k && $k == 0) { close $fx_sock; fx_handle($c); }
        close $c;
    }
}
close $fx_sock;

sub fx_requests {
    open my $fh, '<', $fx_log or return [];
    return [ map { $JSON->decode($_) } grep { /\S/ } <$fh> ];
}

{
    my $fbase = "http://127.0.0.1:$fx_port";
    my $b = eval { CfcostBrowser->new(width => 1280, height => 1000) };
    ok($b, 'chromium for the usage fixture') or diag($@);
    if ($b) {
        eval {
            $b->load("$fbase/#key=fixture-key");
            ok($b->wait_for('document.body.dataset.ready === "yes" && document.body.dataset.usage === "ready"'),
                'usage panel: ready with the fixture data')
                or diag($b->js('document.getElementById("usage-panel").innerText'));

            # cards: Total Cost first, red, 6 decimals
            my $cards = $b->js(q{Array.prototype.map.call(document.querySelectorAll(".cards .card"),
                function (c) { return c.querySelector(".card-label").textContent + "=" +
                    c.querySelector(".card-value").textContent; })});
            is_deeply($cards, ["\x{1f4b0} Total Cost=\$0.012346", 'Requests=7',
                "\x{1fa99} Tokens=15,456"], 'cards: total cost first (6 decimals), requests, tokens');
            is($b->js('getComputedStyle(document.getElementById("card-cost")).color'),
                'rgb(220, 38, 38)', 'total cost is red (#dc2626)');
            like($b->js('document.getElementById("card-tokens-sub").textContent'),
                qr/12,000 in \x{b7} 3,456 out/, 'tokens card: input and output');

            # cost by model, sorted by cost, proportional red bars
            my $rows = $b->js(q{Array.prototype.map.call(document.querySelectorAll("#by-model .model-cost"),
                function (r) { return [r.getAttribute("data-model"),
                    r.querySelector(".model-cost-label").textContent,
                    r.querySelector(".model-cost-value").textContent,
                    r.querySelector(".bar-fill").style.width,
                    getComputedStyle(r.querySelector(".bar-fill")).backgroundColor]; })});
            is_deeply([ map { $_->[0] } @$rows ], [ $L8, $OSS, $EVIL ],
                'cost by model: sorted by cost, highest first');
            is_deeply([ map { $_->[1] } @$rows ], [ 'Llama 3.1 8B Instruct', 'gpt-oss-120b', $EVIL ],
                'cost by model: names from the model list, unknown ids as text');
            is_deeply([ map { $_->[2] } @$rows ], [ '$0.010000', '$0.002000', '$0.000346' ],
                'cost by model: 6 decimals');
            is_deeply([ map { sprintf '%.1f%%', ($_->[3] =~ /^([\d.]+)%$/ ? $1 : -1) } @$rows ],
                [ '81.0%', '16.2%', '2.8%' ],
                'cost by model: bar width is the share of the total cost');
            is($rows->[0][4], 'rgb(220, 38, 38)', 'cost by model: the bars are red');

            # log table
            my $logs = $b->js(q{Array.prototype.map.call(document.querySelectorAll("#logs-body tr"),
                function (tr) { return Array.prototype.map.call(tr.cells, function (c) { return c.textContent; }); })});
            is(scalar @$logs, 2, 'log table: the first page');
            like($logs->[0][0] // '', qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, 'log table: time');
            is_deeply([ @{ $logs->[0] || [] }[1 .. 5] ],
                [ 'Llama 3.1 8B Instruct', '1,000', '2,000', '$0.001936', '200' ],
                'log table: model, input/output tokens, cost, status');
            is($logs->[1][1], $EVIL, 'log table: an unknown model id shown as text');
            ok($b->js('!document.getElementById("logs-more").hidden'),
                '"Load more" is offered when there is a next_cursor');
            $b->click('#logs-more');
            ok($b->wait_for('document.querySelectorAll("#logs-body tr").length === 3'),
                '"Load more" appends the next page');
            ok($b->wait_for('document.getElementById("logs-more").hidden'),
                '"Load more" goes away on the last page');
            like($b->js('document.querySelector("#logs-body tr:last-child .badge").className'),
                qr/badge-err/, 'a failed request\'s status is marked');
            my ($more) = grep { $_->{path} eq '/api/usage/logs' && $_->{query} =~ /cursor=/ }
                @{ fx_requests() };
            like($more->{query} // '', qr/(?:^|&)cursor=cur-2(?:&|$)/,
                'the next page is asked for with cursor=<next_cursor>');
            like($more->{query} // '', qr/(?:^|&)limit=50(?:&|$)/, 'pages of 50');

            # chart
            is($b->js('document.querySelectorAll("#chart svg rect.bar-rect").length'), 3,
                'daily chart: one bar per day');
            my $h = $b->js(q{Array.prototype.map.call(document.querySelectorAll("#chart rect.bar-rect"),
                function (r) { return +r.getAttribute("height"); })});
            ok($h->[2] > $h->[0] && $h->[0] > 0 && $h->[1] == 0,
                'daily chart: bar heights follow the cost') or diag("@$h");
            like($b->js('document.querySelector("#chart svg").textContent'),
                qr/Nov 25/, 'daily chart: day labels');

            # escaping: nothing from the API became markup
            is($b->js('document.querySelectorAll("#usage-panel img, #chat-panel img, #chat-panel i").length'), 0,
                'no element was made from API strings');
            is($b->js('typeof window.__pwned'), 'undefined', 'no handler from API strings ran');
            is($b->js('document.querySelector("optgroup[label^=\'R&D\']").label'), 'R&D <Labs>',
                'a provider name is an optgroup label, as text');

            # every API request carried the key
            my @api = grep { $_->{path} =~ m{^/api/} } @{ fx_requests() };
            ok(@api >= 4 && !grep({ ($_->{key} // '') ne 'fixture-key'
                && $_->{path} ne '/api/ai/models' } @api),
                'every API request sends X-API-Key') or diag($JSON->encode(\@api));

            $b->capture("$BUILD/dashboard-usage.png", full => 1);
            png_ok("$BUILD/dashboard-usage.png", 1280, undef, 'screenshot (usage panel)');

            # a narrow window: no page-wide horizontal scrolling
            $b->resize(390, 844);
            sleep 0.4;
            ok($b->js('document.documentElement.scrollWidth <= 390'),
                'narrow window (390px): nothing overflows the page')
                or diag('scrollWidth ' . $b->js('document.documentElement.scrollWidth'));
            ok($b->js('document.querySelector("#chart svg").getBoundingClientRect().width <= 390'),
                'narrow window: the chart fits');
            $b->capture("$BUILD/dashboard-usage-narrow.png", full => 1);
            png_ok("$BUILD/dashboard-usage-narrow.png", 390, undef, 'screenshot (usage, narrow)');
            $b->resize(1280, 1000);

            # the usage service goes away: a clear message, the page keeps working
            open my $fh, '>', $fx_down or die "touch $fx_down: $!";
            close $fh;
            $b->click('#usage-refresh');
            ok($b->wait_for('document.body.dataset.usage === "unavailable"'),
                'refresh with the usage API down');
            my $st = $b->js('document.getElementById("usage-status").textContent');
            like($st, qr/Usage service unavailable \(HTTP 502\)/, '"usage service unavailable (HTTP 502)"');
            like($st, qr/usage store offline/, 'with the detail from the API');
            ok($b->js('document.getElementById("usage-body").hidden'), 'no stale numbers stay shown');
            ok($b->js('document.getElementById("chat-form").offsetHeight > 0'), 'the chat panel still works');
            unlink $fx_down;
            $b->click('#usage-refresh');
            ok($b->wait_for('document.body.dataset.usage === "ready"'), 'and recovers on refresh');

            my @e = $b->page_errors;
            ok(!@e, 'no script errors or policy violations with the fixture')
                or diag(join "\n", @e);
            1;
        } or fail("browser session on the fixture: $@");
        $b->quit;
    }
}

kill 'TERM', $fx_pid;
waitpid($fx_pid, 0);

diag("screenshots: build/dashboard.png, build/dashboard-narrow.png, "
    . "build/dashboard-usage.png, build/dashboard-usage-narrow.png")
    if $ENV{CFCOST_TEST_VERBOSE};

done_testing;
