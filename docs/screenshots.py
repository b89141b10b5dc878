#!/usr/bin/env python3
"""Makes the screenshots in docs/ (desktop and phone, light and dark) from a
real server and the real page in headless Chromium:

    cargo build --release --bin neochat-server
    python3 docs/screenshots.py

Two line clients (bob and carol) talk in the lobby and in #rust, bob shares
an image, carol sends alice a private message; alice is the browser.
"""

import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs")


def png(width, height):
    """A small gradient, as a PNG."""
    rows = b""
    for y in range(height):
        rows += b"\x00" + b"".join(
            bytes((40 + x * 180 // width, 90 + y * 120 // height, 200 - x * 80 // width)) for x in range(width)
        )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class Line:
    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, line):
        self.sock.sendall((line + "\n").encode())
        time.sleep(0.15)

    def until(self, prefix):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line.decode().startswith(prefix):
                    return line.decode()
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("closed")
            self.buf += data

    def register(self, name):
        self.until("? choice")
        self.send("R")
        self.until("? username")
        self.send(name)
        self.until("? password")
        self.send(name + "-password")
        self.until("* registered")

    def upload(self, name, body):
        self.send(f"/upload {name} {len(body)}")
        url = self.until("* upload ")[len("* upload ") :]
        path = re.sub(r"^https?://[^/]+", "", url)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("PUT", path, body=body)
        assert conn.getresponse().status == 201


def main():
    binary = os.path.join(ROOT, "target/release/neochat-server")
    tmp = tempfile.mkdtemp(prefix="neochat-shots-")
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--db", os.path.join(tmp, "neochat.db"), "--bcrypt-cost", "4"],
        stderr=subprocess.PIPE,
        text=True,
    )
    port = None
    for line in proc.stderr:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    base = f"https://127.0.0.1:{port}"
    try:
        bob, carol = Line(port), Line(port)
        bob.register("bob")
        carol.register("carol")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 720})
            page = ctx.new_page()
            page.goto(base + "/")
            page.screenshot(path=os.path.join(OUT, "web-login.png"))
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill("alice-password")
            page.get_by_role("button", name="Sign up").click()
            page.get_by_role("log").wait_for()
            page.get_by_label("Join or create a room").fill("rust")
            page.get_by_role("button", name="Join").click()
            page.locator("#room-title", has_text="#rust").wait_for()
            page.get_by_label("Message", exact=True).fill("/topic Rust, borrowing and the event loop")
            page.keyboard.press("Enter")
            page.locator("button.conv", has_text="#lobby").click()
            carol.send("morning all! the release is out")
            bob.send("nice, the web client works on my phone")
            page.get_by_label("Message", exact=True).fill("and no app to install: just the link")
            page.keyboard.press("Enter")
            time.sleep(0.3)
            bob.upload("sunset.png", png(240, 150))
            carol.send("is that from the Pi? it serves 10k users on 2 KiB each")
            bob.send("/me waves at alice")
            for who, room in ((bob, "#rust"), (carol, "#rust")):
                who.send(f"/join {room}")
            bob.send("/to #rust mio or tokio for the next one?")
            carol.send("/to #rust mio: one thread, no surprises")
            carol.send("/msg alice lunch at noon?")
            page.locator(".thumb").wait_for()
            page.wait_for_function(
                "document.querySelector('.thumb') && document.querySelector('.thumb').naturalWidth > 0"
            )
            time.sleep(0.5)
            storage = ctx.storage_state()
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                time.sleep(0.2)
                page.screenshot(path=os.path.join(OUT, f"web-desktop-{scheme}.png"))
            ctx.close()
            phone = browser.new_context(
                ignore_https_errors=True,
                storage_state=storage,
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            page = phone.new_page()
            page.goto(base + "/")
            page.get_by_role("log").wait_for()
            page.locator(".thumb").wait_for()
            time.sleep(0.8)
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                time.sleep(0.2)
                page.screenshot(path=os.path.join(OUT, f"web-phone-{scheme}.png"))
            page.get_by_role("button", name="Rooms").click()
            time.sleep(0.4)
            page.emulate_media(color_scheme="light")
            page.screenshot(path=os.path.join(OUT, "web-phone-drawer.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print("screenshots in", OUT)


if __name__ == "__main__":
    sys.exit(main())
