package CfcostBrowser;

# Headless Chromium for the dashboard test, core Perl only.
#
# Two ways to use it:
#
#   CfcostBrowser::dump_dom($url, %opt)      # chromium --headless --dump-dom
#   CfcostBrowser::screenshot($url, $png, %opt)
#
# run Chromium once on a URL (with --virtual-time-budget, so the page's
# fetches and timers settle first) and return the serialized DOM / write a
# PNG.  And a DevTools-protocol session over --remote-debugging-pipe (file
# descriptors 3 and 4, NUL-terminated JSON: no WebSocket, no Node):
#
#   my $b = CfcostBrowser->new(width => 1280, height => 900);
#   $b->load($url);
#   $b->wait_for('document.body.dataset.ready === "yes"');
#   my $v = $b->js('document.title');
#   $b->click('#send');  $b->type("Hello\n");
#   $b->capture("build/x.png");
#   my @errors = $b->page_errors;   # uncaught exceptions, CSP violations
#   $b->quit;
#
# $ENV{CFCOST_TEST_CHROMIUM} overrides /usr/bin/chromium.

use strict;
use warnings;

use JSON::PP ();
use POSIX ();
use IO::Select;
use File::Temp ();
use MIME::Base64 ();
use Time::HiRes qw(time sleep);

our $BIN = $ENV{CFCOST_TEST_CHROMIUM} || '/usr/bin/chromium';

# The flags every run uses: no network beyond what the page asks for, no
# first-run UI, a private profile.
my @BASE_FLAGS = qw(
    --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-default-apps --disable-extensions --no-default-browser-check
    --mute-audio --hide-scrollbars --disable-dev-shm-usage
    --password-store=basic --use-mock-keychain
);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub available { return -x $BIN }

sub _profile {
    return File::Temp::tempdir('cfcost-chromium-XXXXXX', TMPDIR => 1,
        CLEANUP => 1);
}

# Runs chromium with @args (after the base flags) to completion; returns
# (exit code, stdout, stderr).  Killed after $timeout seconds.
sub _run {
    my ($timeout, @args) = @_;
    my $dir = _profile();
    my ($out, $err) = ("$dir.out", "$dir.err");
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setsid();
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>', $err or POSIX::_exit(126);
        my @cmd = ($BIN, @BASE_FLAGS, "--user-data-dir=$dir/profile", @args);
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    my $until = time + $timeout;
    my $rc;
    while (time < $until) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $rc = $? >> 8; last; }
        sleep 0.05;
    }
    unless (defined $rc) {
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
        waitpid($pid, 0);
        $rc = -1;
    }
    my ($o, $e) = (_slurp($out), _slurp($err));
    unlink $out, $err;
    return ($rc, $o, $e);
}

sub _slurp {
    my ($p) = @_;
    open my $fh, '<', $p or return '';
    binmode $fh;
    local $/;
    my $t = <$fh>;
    return $t // '';
}

# The DOM after the page settled (virtual time: fetches and timers run to
# completion first).  Returns the HTML text (UTF-8 decoded); dies with
# Chromium's stderr when it fails.
sub dump_dom {
    my ($url, %o) = @_;
    my ($rc, $out, $err) = _run($o{timeout} // 60,
        '--window-size=' . ($o{width} // 1280) . ',' . ($o{height} // 900),
        '--virtual-time-budget=' . ($o{budget} // 5000),
        '--dump-dom', $url);
    die "chromium --dump-dom exited $rc:\n" . _tail($err) if $rc != 0;
    utf8::decode($out);
    return $out;
}

sub screenshot {
    my ($url, $png, %o) = @_;
    unlink $png;
    my ($rc, $out, $err) = _run($o{timeout} // 60,
        '--window-size=' . ($o{width} // 1280) . ',' . ($o{height} // 900),
        '--virtual-time-budget=' . ($o{budget} // 5000),
        "--screenshot=$png", $url);
    die "chromium --screenshot exited $rc:\n" . _tail($err) if $rc != 0;
    die "chromium --screenshot wrote no file $png:\n" . _tail($err)
        unless -s $png;
    return $png;
}

sub _tail {
    my ($t) = @_;
    my @l = grep { !/dbus|Fontconfig/ } split /\n/, $t // '';
    @l = @l[-15 .. -1] if @l > 15;
    return join("\n", @l) . "\n";
}

# Width and height of a PNG file, from its IHDR chunk.
sub png_size {
    my ($path) = @_;
    my $d = _slurp($path);
    return () unless length($d) >= 24
        && substr($d, 0, 8) eq "\x89PNG\r\n\x1a\n"
        && substr($d, 12, 4) eq 'IHDR';
    return unpack('NN', substr($d, 16, 8));
}


# --------------------------------------------------------------------------
# DevTools protocol over a pipe

sub new {
    my ($class, %o) = @_;
    my $dir = _profile();
    my $log = "$dir.log";
    pipe(my $to_r, my $to_w) or die "pipe: $!";       # we write, it reads (fd 3)
    pipe(my $from_r, my $from_w) or die "pipe: $!";   # it writes (fd 4), we read
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setsid();
        my $r = POSIX::dup(fileno $to_r);
        my $w = POSIX::dup(fileno $from_w);
        POSIX::dup2($r, 3) or POSIX::_exit(125);
        POSIX::dup2($w, 4) or POSIX::_exit(125);
        POSIX::close($r) if $r > 4;
        POSIX::close($w) if $w > 4;
        # dup and dup2 leave close-on-exec off: fds 3 and 4 survive exec
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        my @cmd = ($BIN, @BASE_FLAGS, "--user-data-dir=$dir/profile",
            '--remote-debugging-pipe',
            '--window-size=' . ($o{width} // 1280) . ',' . ($o{height} // 900),
            'about:blank');
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    close $to_r;
    close $from_w;
    binmode $to_w;
    binmode $from_r;
    my $self = bless {
        pid => $pid, log => $log, w => $to_w, r => $from_r, buf => '',
        id => 0, events => [], replies => {}, session => undef,
        width => $o{width} // 1280, height => $o{height} // 900,
        timeout => $o{timeout} // 30, errors => [], owner => $$,
    }, $class;
    # the first command answers once the browser is up
    $self->call('Browser.getVersion');
    return $self;
}

sub _write_msg {
    my ($self, $msg) = @_;
    my $data = $JSON->encode($msg) . "\0";
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($self->{w}, $data, length($data) - $off, $off);
        die "write to chromium: $!\n" . $self->log_tail unless defined $n;
        $off += $n;
    }
}

# Reads what is available (waiting up to $wait s); queues replies and events.
sub _pump {
    my ($self, $wait) = @_;
    my $sel = IO::Select->new($self->{r});
    return 0 unless $sel->can_read($wait);
    my $n = sysread($self->{r}, my $chunk, 1 << 20);
    die "read from chromium: $!\n" . $self->log_tail unless defined $n;
    die "chromium closed the DevTools pipe\n" . $self->log_tail if $n == 0;
    $self->{buf} .= $chunk;
    while ((my $i = index($self->{buf}, "\0")) >= 0) {
        my $text = substr($self->{buf}, 0, $i);
        substr($self->{buf}, 0, $i + 1, '');
        my $m = eval { $JSON->decode($text) } or next;
        if (defined $m->{id}) {
            $self->{replies}{ $m->{id} } = $m;
        } else {
            $self->_event($m);
        }
    }
    return 1;
}

sub _event {
    my ($self, $m) = @_;
    my $method = $m->{method} // '';
    my $p = $m->{params} || {};
    if ($method eq 'Runtime.exceptionThrown') {
        my $d = $p->{exceptionDetails} || {};
        my $text = ($d->{exception} && $d->{exception}{description})
            || $d->{text} || 'exception';
        push @{ $self->{errors} }, "uncaught: $text";
    } elsif ($method eq 'Log.entryAdded') {
        my $e = $p->{entry} || {};
        my $text = $e->{text} // '';
        # a failed fetch (e.g. a 404 from an API not yet deployed) is the
        # page's business; a policy violation or a script error is not
        if (($e->{source} // '') =~ /^(security|violation|javascript)$/
            || $text =~ /Content Security Policy|Refused to/)
        {
            push @{ $self->{errors} }, "$e->{level} ($e->{source}): $text";
        }
    } elsif ($method eq 'Runtime.consoleAPICalled' && ($p->{type} // '') eq 'error') {
        my $text = join ' ', map { $_->{value} // $_->{description} // '' }
            @{ $p->{args} || [] };
        push @{ $self->{errors} }, "console.error: $text";
    }
    push @{ $self->{events} }, $m;
    shift @{ $self->{events} } while @{ $self->{events} } > 500;
}

# Sends a command (to the attached page unless $browser_level) and waits for
# its reply; returns the result hash, dies on a protocol error.
sub call {
    my ($self, $method, $params, $browser_level) = @_;
    my $id = ++$self->{id};
    my $msg = { id => $id, method => $method, params => $params || {} };
    $msg->{sessionId} = $self->{session}
        if $self->{session} && !$browser_level && $method !~ /^(Browser|Target)\./;
    $self->_write_msg($msg);
    my $until = time + $self->{timeout};
    while (!$self->{replies}{$id}) {
        die "chromium: no reply to $method within $self->{timeout} s\n"
            if time > $until;
        $self->_pump(0.2);
    }
    my $r = delete $self->{replies}{$id};
    die "chromium: $method failed: " . $JSON->encode($r->{error}) . "\n"
        if $r->{error};
    return $r->{result} || {};
}

sub load {
    my ($self, $url) = @_;
    unless ($self->{session}) {
        my $t = $self->call('Target.createTarget', { url => 'about:blank' });
        my $a = $self->call('Target.attachToTarget',
            { targetId => $t->{targetId}, flatten => JSON::PP::true });
        $self->{target}  = $t->{targetId};
        $self->{session} = $a->{sessionId};
        $self->call($_) for qw(Page.enable Runtime.enable Log.enable);
        $self->resize($self->{width}, $self->{height});
    }
    $self->navigate($url);
}

sub resize {
    my ($self, $w, $h) = @_;
    @$self{qw(width height)} = ($w, $h);
    $self->call('Emulation.setDeviceMetricsOverride', {
        width => $w + 0, height => $h + 0, deviceScaleFactor => 1,
        mobile => JSON::PP::false });
}

sub navigate {
    my ($self, $url) = @_;
    @{ $self->{events} } = ();
    my $r = $self->call('Page.navigate', { url => $url });
    die "navigate $url: $r->{errorText}\n" if $r->{errorText};
    $self->wait_event('Page.loadEventFired');
}

sub reload {
    my ($self) = @_;
    @{ $self->{events} } = ();
    $self->call('Page.reload', { ignoreCache => JSON::PP::true });
    $self->wait_event('Page.loadEventFired');
}

sub wait_event {
    my ($self, $method, $timeout) = @_;
    my $until = time + ($timeout // $self->{timeout});
    while (1) {
        for my $i (0 .. $#{ $self->{events} }) {
            my $e = $self->{events}[$i];
            if (($e->{method} // '') eq $method) {
                splice @{ $self->{events} }, $i, 1;
                return $e->{params};
            }
        }
        die "chromium: no $method within the timeout\n" if time > $until;
        $self->_pump(0.2);
    }
}

# Evaluates a JavaScript expression in the page (promises are awaited);
# returns its value (JSON-compatible).  Dies on an exception.
sub js {
    my ($self, $js) = @_;
    my $r = $self->call('Runtime.evaluate', {
        expression => $js, returnByValue => JSON::PP::true,
        awaitPromise => JSON::PP::true });
    if (my $d = $r->{exceptionDetails}) {
        die "page eval failed: "
            . (($d->{exception} && $d->{exception}{description}) || $d->{text})
            . "\n  in: $js\n";
    }
    return $r->{result}{value};
}

# Polls a JavaScript condition until it is true; returns its value, or
# undef after $timeout s.
sub wait_for {
    my ($self, $js, $timeout) = @_;
    my $until = time + ($timeout // 10);
    while (1) {
        my $v = $self->js($js);
        return $v if $v;
        return undef if time > $until;
        $self->_pump(0.1);
    }
}

# A real mouse click in the middle of the element (scrolled into view).
# Dies if the element is missing or has no box (hidden).
sub click {
    my ($self, $selector) = @_;
    my $sel = $JSON->encode($selector);
    my $box = $self->js(qq{(function () {
        var e = document.querySelector($sel);
        if (!e) return null;
        e.scrollIntoView({block: 'center'});
        var r = e.getBoundingClientRect();
        if (!r.width || !r.height) return null;
        return {x: r.left + r.width / 2, y: r.top + r.height / 2};
    })()});
    die "click: no visible element $selector\n" unless $box;
    for my $type (qw(mouseMoved mousePressed mouseReleased)) {
        $self->call('Input.dispatchMouseEvent', {
            type => $type, x => $box->{x}, y => $box->{y},
            ($type eq 'mouseMoved' ? () : (button => 'left', clickCount => 1)),
        });
    }
    return 1;
}

# Types text into the focused element; "\n" presses Enter.
sub type {
    my ($self, $text) = @_;
    for my $part (split /(\n)/, $text) {
        next unless length $part;
        if ($part eq "\n") {
            for my $type (qw(keyDown keyUp)) {
                $self->call('Input.dispatchKeyEvent', {
                    type => $type, key => 'Enter', code => 'Enter',
                    windowsVirtualKeyCode => 13, nativeVirtualKeyCode => 13,
                    ($type eq 'keyDown' ? (text => "\r") : ()),
                });
            }
        } else {
            $self->call('Input.insertText', { text => $part });
        }
    }
}

sub focus {
    my ($self, $selector) = @_;
    my $sel = $JSON->encode($selector);
    $self->js(qq{document.querySelector($sel).focus(), 1})
        or die "focus: no element $selector\n";
}

# PNG of the viewport, or of the whole page with full => 1.
sub capture {
    my ($self, $png, %o) = @_;
    my %p = (format => 'png');
    if ($o{full}) {
        my $m = $self->call('Page.getLayoutMetrics');
        my $cs = $m->{cssContentSize} || $m->{contentSize};
        $p{clip} = { x => 0, y => 0, width => $cs->{width} + 0,
            height => $cs->{height} + 0, scale => 1 };
        $p{captureBeyondViewport} = JSON::PP::true;
    }
    my $r = $self->call('Page.captureScreenshot', \%p);
    open my $fh, '>', $png or die "write $png: $!";
    binmode $fh;
    print $fh MIME::Base64::decode_base64($r->{data});
    close $fh or die "close $png: $!";
    return $png;
}

sub page_errors { @{ $_[0]{errors} } }
sub clear_errors { @{ $_[0]{errors} } = () }

sub log_tail { "chromium log:\n" . _tail(_slurp($_[0]{log})) }

sub quit {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    return if $self->{owner} != $$;
    eval {
        local $self->{timeout} = 5;
        $self->{session} = undef;
        $self->call('Browser.close');
    };
    my $until = time + 5;
    while (time < $until) {
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.05;
    }
    if (kill 0, $pid) {
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    close $self->{w} if $self->{w};
    close $self->{r} if $self->{r};
    unlink $self->{log};
}

sub DESTROY { $_[0]->quit }

1;
