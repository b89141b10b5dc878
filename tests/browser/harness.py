"""Harness for NeoChat's real-browser tests.

A server on a temporary directory (start, stop, restart on the same port and
database), line clients over TCP or TLS, and a headless Chromium driven by
Playwright that records every console error, page error and dialog, so that
a scenario fails when the page logs one.

Every wait here polls a condition with a deadline; nothing sleeps a fixed
time and calls that an assertion (the machine is a noisy 2-core box).
"""

import contextlib
import json
import os
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

WAIT = 10.0  # seconds: the default deadline of every wait
SERVER_START = 20.0  # seconds to see "listening on" (a cold debug binary)


class Failure(AssertionError):
    pass


def check(cond, what):
    """Asserts, with a message that says what was expected."""
    if not cond:
        raise Failure(what)


# Playwright's sync API only dispatches events (console, dialogs) while one
# of its calls runs: a wait lets it run between polls instead of sleeping.
_PUMP = []


def pause(seconds):
    for page in list(_PUMP):
        if not page.is_closed():
            try:
                page.wait_for_timeout(seconds * 1000)
                return
            except Exception:
                pass
    time.sleep(seconds)


def wait_until(fn, what, timeout=WAIT, interval=0.05):
    """Polls fn() until it returns a truthy value, which is returned; fails
    with `what` (and the last value seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        pause(interval)


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


# --------------------------------------------------------------------------
# The server


class Server:
    """neochat-server on a temporary directory. `restart()` keeps the
    database, the certificate beside it and the port."""

    def __init__(self, binary=None, extra_args=()):
        self.binary = binary or os.environ.get("NEOCHAT_SERVER") or "neochat-server"
        self.dir = tempfile.mkdtemp(prefix="neochat-browser-")
        self.db = os.path.join(self.dir, "neochat.db")
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc = None
        self.lines = []  # every stderr/stdout line of every run, for the report
        self.runs = 0

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/"

    @property
    def origin(self):
        return f"https://127.0.0.1:{self.port}"

    def _pump(self, stream, tag, found):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(f"{tag}{self.runs}: {line}")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                found.put(int(m.group(1)))
        stream.close()

    def start(self):
        check(self.proc is None, "server already running")
        self.runs += 1
        found = queue.Queue()
        deadline = time.monotonic() + SERVER_START
        while True:
            args = [
                self.binary,
                "--listen", f"127.0.0.1:{self.port}",
                "--db", self.db,
                "--bcrypt-cost", "4",
                "--workers", "2",
                *self.extra_args,
            ]
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for stream, tag in ((self.proc.stderr, "server-err"), (self.proc.stdout, "server-out")):
                threading.Thread(target=self._pump, args=(stream, tag, found), daemon=True).start()
            port = None
            while port is None:
                try:
                    port = found.get(timeout=0.1)
                except queue.Empty:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        break
            if port is not None:
                self.port = port
                log(f"server run {self.runs} listening on 127.0.0.1:{port} (db {self.db})")
                return self
            rc = self.proc.poll()
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            # A restart on a fixed port may race the old listener's release:
            # retry until the deadline, then fail with the server's words.
            if self.port == 0 or time.monotonic() > deadline:
                raise Failure(
                    f"server did not start (exit {rc}):\n" + "\n".join(self.lines[-20:])
                )
            time.sleep(0.2)

    def stop(self):
        """SIGTERM and wait for the exit (the protocol: exits 0)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.proc = None
            raise Failure("server did not exit within 10 s of SIGTERM")
        self.proc = None
        log(f"server run {self.runs} stopped (exit {rc})")
        check(rc == 0, f"server exited {rc} on SIGTERM, expected 0")

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        try:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Line clients


class LineClient:
    """A line-protocol client. A reader thread queues every line; `expect`
    takes lines off the queue until one matches, keeping the others in the
    transcript (shown when a scenario fails)."""

    clients = []

    def __init__(self, port, tls=False, name="line"):
        self.name = name
        self.transcript = []
        self.queue = queue.Queue()
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.settimeout(None)
        self.sock = sock
        self.closed = False
        self.lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()
        LineClient.clients.append(self)

    def _reader(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace")
                    self.transcript.append("< " + line)
                    self.queue.put(line)
        except OSError:
            pass
        self.transcript.append("<closed>")
        self.queue.put(None)

    def send(self, line):
        self.transcript.append("> " + line)
        with self.lock:
            self.sock.sendall(line.encode("utf-8") + b"\n")

    def expect(self, pattern, timeout=WAIT):
        """Reads lines until one matches `pattern` (re.search); returns the
        match. Fails on timeout or close."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(
                    f"{self.name}: no line matching {pattern!r} within {timeout:.0f} s; "
                    f"lines seen meanwhile: {skipped[-15:]!r}"
                )
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.queue.put(None)
                raise Failure(
                    f"{self.name}: connection closed while waiting for {pattern!r}; "
                    f"lines seen meanwhile: {skipped[-15:]!r}"
                )
            m = rx.search(line)
            if m:
                return m
            skipped.append(line)

    def read_until(self, pattern, timeout=WAIT):
        """Like expect, but returns every line read, the matching one last."""
        rx = re.compile(pattern)
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f"{self.name}: no line matching {pattern!r}; read {got[-15:]!r}")
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.queue.put(None)
                raise Failure(f"{self.name}: closed before {pattern!r}; read {got[-15:]!r}")
            got.append(line)
            if rx.search(line):
                return got

    def register(self, user, password):
        return self._enter("R", user, password, "registered and logged in")

    def login(self, user, password):
        return self._enter("L", user, password, "logged in")

    def _enter(self, choice, user, password, done):
        self.expect(r"^\? choice")
        self.send(choice)
        self.expect(r"^\? username")
        self.send(user)
        self.expect(r"^\? password")
        self.send(password)
        self.expect(rf"^\* {done} as {re.escape(user)}$")
        return self

    def sync(self):
        """A round trip: everything sent before has been handled (the lines
        the server sent before the reply are left in the transcript)."""
        self.send("/rooms")
        self.expect(r"^\* rooms \(")
        return self

    def close(self):
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.sock.close()


# --------------------------------------------------------------------------
# A TCP proxy whose connections can be cut: the page's network drops while
# the server (and the page) stay up. TLS passes through untouched; the page's
# origin is then the proxy's address, which is also the Host it sends.


class Proxy:
    def __init__(self, port):
        self.upstream = port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/"

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            stop = threading.Event()
            threads = [threading.Thread(target=self._pump, args=(a, b, stop), daemon=True)
                       for a, b in ((c, u), (u, c))]
            with self.lock:
                self.conns.append((c, u, stop, threads))
                self.accepted += 1
            for t in threads:
                t.start()

    @staticmethod
    def _pump(a, b, stop):
        # Short timeouts instead of a blocking recv, so that `cut` never
        # closes a socket another thread is blocked on (the close, and its
        # reset, would then wait for that recv to return).
        a.settimeout(0.05)
        try:
            while not stop.is_set():
                try:
                    data = a.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        if not stop.is_set():  # an orderly close from one side: pass it on
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

    def cut(self):
        """Resets every connection open through the proxy, on both sides (an
        RST, as when a network path dies and the kernel gives up)."""
        with self.lock:
            conns, self.conns = self.conns, []
        for c, u, stop, threads in conns:
            stop.set()
        for c, u, stop, threads in conns:
            for t in threads:
                t.join(timeout=2)
            for s in (c, u):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(OSError):
                    s.close()
        return len(conns)

    def close(self):
        with contextlib.suppress(OSError):
            self.lsock.close()
        self.cut()


# --------------------------------------------------------------------------
# The browser

# While the server is deliberately down (a restart), the page's reconnect
# attempts fail, and Chromium logs each failed WebSocket handshake as a
# console error ("WebSocket connection to 'wss://127.0.0.1:PORT/ws' failed:
# ...") whatever the page does. Those, and only those, are ignored inside an
# `expected_ws_failures()` window; the same message outside such a window
# still fails the scenario.
WS_FAILED = re.compile(r"^WebSocket connection to 'wss://127\.0\.0\.1:\d+/ws' failed")


class Browser:
    def __init__(self):
        from playwright.sync_api import sync_playwright, expect

        self._pw_cm = sync_playwright()
        self.pw = self._pw_cm.start()
        expect.set_options(timeout=WAIT * 1000)
        self.browser = self.pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True
        )
        self.errors = []  # (page label, text): console errors, page errors, dialogs
        self.ignored = []
        self.console = []  # every console message, for the report
        self.allow_ws_failures = False
        self.pages = []
        self.contexts = []

    def context(self, **kw):
        kw.setdefault("ignore_https_errors", True)
        kw.setdefault("viewport", {"width": 1280, "height": 800})
        ctx = self.browser.new_context(**kw)
        ctx.set_default_timeout(WAIT * 1000)
        mutate = os.environ.get("NEOCHAT_MUTATE")
        if mutate:
            self._mutate(ctx, json.loads(mutate))
        self.contexts.append(ctx)
        return ctx

    @staticmethod
    def _mutate(ctx, pairs):
        """For checking the suite itself: serves app.js with each [old, new]
        replaced (NEOCHAT_MUTATE='[["old", "new"]]'); a scenario that still
        passes against a broken page is a scenario that cannot fail."""

        def handle(route):
            resp = route.fetch()
            body = resp.text()
            for old, new in pairs:
                if old not in body:
                    raise Failure(f"NEOCHAT_MUTATE: {old!r} not in app.js")
                body = body.replace(old, new)
            route.fulfill(response=resp, body=body)

        ctx.route(re.compile(r"/app\.js(\?.*)?$"), handle)

    def page(self, ctx, label="page"):
        page = ctx.new_page()
        self.watch(page, label)
        return page

    def watch(self, page, label):
        self.pages.append((label, page))
        _PUMP.insert(0, page)

        def on_console(msg):
            text = msg.text
            self.console.append(f"{label} console.{msg.type}: {text}")
            if msg.type in ("error", "assert"):
                if self.allow_ws_failures and WS_FAILED.search(text):
                    self.ignored.append((label, text))
                else:
                    self.errors.append((label, f"console.{msg.type}: {text} @ {msg.location}"))

        def on_pageerror(err):
            self.errors.append((label, f"page error: {err}"))

        def on_dialog(dialog):
            self.errors.append((label, f"dialog {dialog.type}: {dialog.message!r}"))
            with contextlib.suppress(Exception):
                dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", on_pageerror)
        page.on("dialog", on_dialog)

    @contextlib.contextmanager
    def expected_ws_failures(self):
        self.allow_ws_failures = True
        try:
            yield
        finally:
            self.allow_ws_failures = False

    def check_no_errors(self):
        # A round trip to every open page delivers the events still queued.
        for _, page in self.pages:
            if not page.is_closed():
                try:
                    page.evaluate("0")
                except Exception:
                    pass
        check(not self.errors, "the page logged errors:\n  " + "\n  ".join(f"{l}: {t}" for l, t in self.errors))

    def artifacts(self, directory, scenario):
        os.makedirs(directory, exist_ok=True)
        for i, (label, page) in enumerate(self.pages):
            if page.is_closed():
                continue
            base = os.path.join(directory, f"{scenario}-{i}-{label}")
            with contextlib.suppress(Exception):
                page.screenshot(path=base + ".png", full_page=True, timeout=5000)
            with contextlib.suppress(Exception):
                with open(base + ".html", "w") as f:
                    f.write(page.content())
            log(f"artifacts: {base}.png / .html")

    def close(self):
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw_cm.__exit__(None, None, None)


# --------------------------------------------------------------------------
# Page helpers, from the DOM contract (web-contract.md)


def goto(page, server):
    """Opens the page from `server` (a Server or a Proxy in front of one)."""
    page.goto(server.url)
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_be_attached()


def fill_credentials(page, user, password, remember=True):
    page.get_by_label("Username", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    box = page.get_by_label("Remember me")
    if box.is_checked() != remember:
        box.set_checked(remember)


def expect_chat_view(page, user):
    """Logged in: the chat view shows, the login view is hidden, the status
    is empty (connected), and the user is listed among the online members."""
    from playwright.sync_api import expect

    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#login-view")).to_be_hidden()
    # Attached, not visible: on a phone the member list is in the closed drawer.
    expect(member(page, user)).to_have_count(1)
    expect(page.locator("#status")).to_have_text("")


def expect_login_view(page):
    from playwright.sync_api import expect

    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#chat-view")).to_be_hidden()
    expect(page.get_by_label("Username", exact=True)).to_be_visible()


def signup(page, user, password, remember=True):
    expect_login_view(page)
    fill_credentials(page, user, password, remember)
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect_chat_view(page, user)


def login(page, user, password, remember=True):
    expect_login_view(page)
    fill_credentials(page, user, password, remember)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect_chat_view(page, user)


def member(page, user):
    return page.locator("#members button.member").filter(
        has_text=re.compile("^" + re.escape(user) + "$")
    )


def composer(page):
    return page.get_by_label("Message", exact=True)


def say(page, text):
    """Types a line in the composer and sends it with Enter."""
    box = composer(page)
    box.fill(text)
    box.press("Enter")
    from playwright.sync_api import expect

    expect(box).to_have_value("")


def rows(page, text=None, who=None, cls=None):
    """The `.msg` rows of the log, optionally those whose `.text` is exactly
    `text` and whose `.who` is exactly `who`."""
    sel = "#log .msg" + (f".{cls}" if cls else "")
    loc = page.locator(sel)
    if text is not None:
        loc = loc.filter(has=page.locator(".text", has_text=re.compile("^" + re.escape(text) + "$")))
    if who is not None:
        loc = loc.filter(has=page.locator(".who", has_text=re.compile("^" + re.escape(who) + "$")))
    return loc


# The conversation buttons' text is the name followed by the unread count,
# so "#rust3" is ambiguous as text: read the name without the .unread child.
CONVS_JS = """
() => Array.from(document.querySelectorAll('#rooms button.conv')).map((b, i) => {
    const c = b.cloneNode(true);
    c.querySelectorAll('.unread').forEach(u => u.remove());
    const u = b.querySelector('.unread');
    return {
        index: i,
        label: c.textContent.trim(),
        accname: (b.getAttribute('aria-label') || b.textContent).trim(),
        unread: u ? u.textContent.trim() : '',
        current: b.getAttribute('aria-current') === 'true',
        visible: b.checkVisibility(),
    };
})
"""

NAME_CHAR = re.compile(r"[A-Za-z0-9_.\-]")


def convs(page):
    return page.evaluate(CONVS_JS)


def conv_named(cs, name):
    for c in cs:
        if c["label"].startswith(name) and not NAME_CHAR.match(c["label"][len(name):len(name) + 1] or " "):
            return c
    return None


def conv(page, name):
    return conv_named(convs(page), name)


def wait_conv(page, name, pred=lambda c: True, what=None, timeout=WAIT):
    return wait_until(
        lambda: (lambda c: c if c and pred(c) else None)(conv(page, name)),
        what or f"conversation {name}",
        timeout,
    )


def open_conv(page, name):
    c = wait_conv(page, name)
    page.locator("#rooms button.conv").nth(c["index"]).click()
    from playwright.sync_api import expect

    expect(page.locator("#room-title")).to_have_text(name)
    wait_conv(page, name, lambda c: c["current"], f"{name} to be aria-current")


def token_storage(page):
    return page.evaluate(
        "() => ({local: localStorage.getItem('neochat.token'), session: sessionStorage.getItem('neochat.token')})"
    )


# --------------------------------------------------------------------------
# Running a scenario


class Env:
    """What a scenario gets: a server, a browser, and line clients made with
    `env.line(...)`; everything is torn down and reported by `run`."""

    def __init__(self, server_args=()):
        self.server = Server(extra_args=server_args)
        try:
            self.server.start()
            self.browser = Browser()
        except BaseException:
            self.server.cleanup()
            raise
        self.soft_failures = []
        self.cleanups = []

    def proxy(self):
        p = Proxy(self.server.port)
        self.cleanups.append(p.close)
        return p

    def soft(self, what, fn):
        """Runs a check that the rest of the scenario does not depend on; a
        failure is recorded and fails the scenario at its end, so one run
        reports every such divergence instead of the first."""
        try:
            fn()
        except AssertionError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            log(f"SOFT FAILURE: {what}: {first}")
            self.soft_failures.append(f"{what}: {first}")

    def check_soft(self):
        check(not self.soft_failures, "checks failed:\n  " + "\n  ".join(self.soft_failures))

    def line(self, user=None, password=None, register=True, tls=False, name=None):
        c = LineClient(self.server.port, tls=tls, name=name or user or "line")
        if user:
            (c.register if register else c.login)(user, password)
        return c


def run(scenarios, argv):
    if argv[1:] == ["--list"]:
        print("\n".join(scenarios))
        return 0
    if len(argv) != 2 or argv[1] not in scenarios:
        print(f"usage: {argv[0]} SCENARIO\nscenarios: {', '.join(scenarios)}", file=sys.stderr)
        return 2
    name = argv[1]
    import signal

    def on_alarm(signum, frame):
        raise Failure("scenario took longer than 100 s")

    def on_term(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(100)
    started = time.monotonic()
    env = None
    ok = False
    try:
        fn = scenarios[name]
        if getattr(fn, "no_env", False):
            fn()
        else:
            env = Env(getattr(fn, "server_args", ()))
            fn(env)
            env.browser.check_no_errors()
            env.check_soft()
        ok = True
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        signal.alarm(0)
        if env is not None:
            if not ok:
                art = os.environ.get("NEOCHAT_ARTIFACTS") or os.path.join(tempfile.gettempdir(), "neochat-browser-artifacts")
                env.browser.artifacts(art, name)
                print("---- browser console ----")
                print("\n".join(env.browser.console[-60:]))
                if env.browser.errors:
                    print("---- errors recorded ----")
                    print("\n".join(f"{l}: {t}" for l, t in env.browser.errors))
            if env.browser.ignored:
                print("---- console errors ignored (deliberate server downtime) ----")
                print("\n".join(f"{l}: {t}" for l, t in env.browser.ignored))
            env.browser.close()
            if not ok:
                for c in LineClient.clients:
                    print(f"---- line client {c.name} ----")
                    print("\n".join(c.transcript[-40:]))
                print("---- server ----")
                print("\n".join(env.server.lines[-60:]))
            for c in LineClient.clients:
                c.close()
            for fn in env.cleanups:
                with contextlib.suppress(Exception):
                    fn()
            env.server.cleanup()
    log(f"{name}: {'ok' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1
