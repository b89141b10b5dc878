#!/usr/bin/env python3
"""The web client in a real browser (Debian's Chromium, headless, driven by
Playwright): how soon the page renders, and how a conversation of 10,000
messages scrolls.

    cargo build --release --bin neochat-server
    python3 benches/web_render.py [--runs 10] [--messages 10000]

It starts target/release/neochat-server on a temporary database (TLS with the
self-signed certificate, as a user gets it) and reports, as medians of --runs
fresh browser contexts:

  * the page's size (HTML, CSS, JS as served);
  * first render: first-contentful-paint minus the document's responseEnd
    (from the last byte of the page to its first paint, the login form),
    in one running browser with its cache off (a first visit: the script,
    the boot script and the style each on a new TLS connection), and in a
    new browser context each time (which adds a cold renderer process);
    and for a returning user (cache on, token kept), the time from
    responseEnd to the chat being shown (the "neochat:chat" mark the page
    sets after logging in with its token);
  * scrolling: a line client sends --messages messages to the lobby while the
    page watches; then the page's log is scrolled from the bottom to the top,
    one step per animation frame, and every frame's interval is recorded:
    median, p99, max, and frames over 1.5x the display's frame time (each one
    a dropped frame at the rate the browser ran). Also the most message rows
    that were in the DOM at once (the log renders only what is near the
    viewport).

Nothing here is a test: the figures go to BENCHMARKS.md.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"


def start_server(binary, db):
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--db", db, "--bcrypt-cost", "4", "--rate", "off"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 15
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"listening on (\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            # Keep draining the log so that the server never blocks on it.
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(port)
    proc.kill()
    sys.exit("the server did not start")


class Line:
    """A line client over plain TCP (loopback is allowed plain text)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(30)
        self.buf = b""

    def send(self, line):
        self.sock.sendall((line + "\n").encode())

    def until(self, prefix):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode()
                if text.startswith(prefix):
                    return text
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("closed")
            self.buf += data

    def register(self, name, password):
        self.until("? choice")
        self.send("R")
        self.until("? username")
        self.send(name)
        self.until("? password")
        self.send(password)
        self.until("* registered")


def page_size(page, base):
    html = page.request.get(base + "/").body()
    total = len(html)
    for url in re.findall(rb'"(/(?:app\.js|boot\.js|style\.css)\?v=[0-9a-f]+)"', html):
        total += len(page.request.get(base + url.decode()).body())
    return total


FCP = (
    "performance.getEntriesByName('first-contentful-paint')[0].startTime"
    " - performance.getEntriesByType('navigation')[0].responseEnd"
)
CHAT = (
    "performance.getEntriesByName('neochat:chat')[0].startTime"
    " - performance.getEntriesByType('navigation')[0].responseEnd"
)

FRAME_LOOP = """
async (steps) => {
  const log = document.getElementById('log');
  const intervals = [];
  let maxRows = 0;
  let last = await new Promise(requestAnimationFrame);
  while (log.scrollTop > 0) {
    log.scrollTop = Math.max(0, log.scrollTop - steps);
    const now = await new Promise(requestAnimationFrame);
    intervals.push(now - last);
    last = now;
    maxRows = Math.max(maxRows, document.querySelectorAll('#rows > .msg').length);
  }
  return { intervals, maxRows, height: log.scrollHeight };
}
"""


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--server", default=os.path.join(ROOT, "target/release/neochat-server"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="neochat-web-bench-")
    proc, port = start_server(args.server, os.path.join(tmp, "neochat.db"))
    base = f"https://127.0.0.1:{port}"
    out = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            # An account with a token, as a remembered browser holds it.
            ctx = browser.new_context(ignore_https_errors=True, bypass_csp=True)
            page = ctx.new_page()
            page.goto(base + "/")
            out["page_bytes"] = page_size(page, base)
            page.get_by_label("Username").fill("reader")
            page.get_by_label("Password").fill("reader-password")
            page.get_by_role("button", name="Sign up").click()
            page.wait_for_function("localStorage.getItem('neochat.token') !== null")
            storage = ctx.storage_state()
            ctx.close()

            # First render, in one running browser (as a visitor's is: a
            # new browser context starts a cold renderer process, which
            # is the browser's start-up, not the page's): a first visit
            # with the cache off and no token, and a returning user (cache
            # on, token kept) until the chat shows.
            paint, chat, cold = [], [], []
            ctx = browser.new_context(ignore_https_errors=True, bypass_csp=True)
            pg = ctx.new_page()
            cdp = ctx.new_cdp_session(pg)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            for _ in range(args.runs + 1):
                pg.goto(base + "/")
                pg.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
                paint.append(pg.evaluate(FCP))
            paint = paint[1:]  # the first also starts the renderer
            ctx.close()
            ctx = browser.new_context(ignore_https_errors=True, bypass_csp=True, storage_state=storage)
            pg = ctx.new_page()
            for _ in range(args.runs + 1):
                pg.goto(base + "/")
                pg.wait_for_function("performance.getEntriesByName('neochat:chat').length > 0", timeout=15000)
                chat.append(pg.evaluate(CHAT))
            chat = chat[1:]
            ctx.close()
            for _ in range(args.runs):
                c = browser.new_context(ignore_https_errors=True, bypass_csp=True)
                p2 = c.new_page()
                p2.goto(base + "/")
                p2.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
                cold.append(p2.evaluate(FCP))
                c.close()
            out["first_paint_ms_median"] = round(statistics.median(paint), 1)
            out["first_paint_ms_max"] = round(max(paint), 1)
            out["first_paint_new_context_ms_median"] = round(statistics.median(cold), 1)
            out["chat_shown_ms_median"] = round(statistics.median(chat), 1)
            out["chat_shown_ms_max"] = round(max(chat), 1)

            # 10,000 messages into the lobby while the page is open.
            c = browser.new_context(
                ignore_https_errors=True, bypass_csp=True, storage_state=storage, viewport={"width": 1280, "height": 800}
            )
            pg = c.new_page()
            pg.goto(base + "/")
            pg.wait_for_function("performance.getEntriesByName('neochat:chat').length > 0", timeout=15000)
            writer = Line(port)
            writer.register("writer", "writer-password")
            t0 = time.time()
            batch = []
            for i in range(args.messages):
                words = " ".join(["lorem", "ipsum", "dolor"] * (1 + i % 7))
                batch.append(f"message {i} {words}")
                if len(batch) == 500:
                    writer.sock.sendall(("\n".join(batch) + "\n").encode())
                    batch = []
            if batch:
                writer.sock.sendall(("\n".join(batch) + "\n").encode())
            last = f"message {args.messages - 1} "
            pg.get_by_text(re.compile("^" + re.escape(last))).wait_for(timeout=120000)
            out["messages"] = args.messages
            out["arrival_secs"] = round(time.time() - t0, 2)
            runs = []
            for _ in range(3):
                pg.evaluate("document.getElementById('log').scrollTop = 1e9")
                pg.wait_for_timeout(300)
                runs.append(pg.evaluate(FRAME_LOOP, 200))
            intervals = [i for r in runs for i in r["intervals"]]
            frame = statistics.median(intervals)
            out["scroll_frames"] = len(intervals)
            out["frame_ms_median"] = round(frame, 2)
            out["frame_ms_p99"] = round(pct(intervals, 99), 2)
            out["frame_ms_max"] = round(max(intervals), 2)
            out["dropped_frames"] = sum(1 for i in intervals if i > 1.5 * frame)
            out["max_rows_in_dom"] = max(r["maxRows"] for r in runs)
            out["log_height_px"] = runs[0]["height"]
            c.close()
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
