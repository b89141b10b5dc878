#!/usr/bin/env python3
"""Two attacks on what the server holds for readers, measured against any
neochat-server binary (before and after a change):

  who-flood  USERS users log in, then each sends /who at the allowed rate
             (10 a second) and never reads: every answer lists everybody.
             Prints the server's peak RSS (VmHWM) and how many attackers
             it cut off.
  slow-link  SENDERS users send 4,000-byte lines at the line rate (10 a
             second) to a reader on a LINK bytes/s link (4 KiB receive
             buffer, reads paced). Prints how long the reader stays
             connected (until the others hear `* mobile left`).

  python3 benches/output_attacks.py who-flood BINARY [--users 1500] [--seconds 20]
  python3 benches/output_attacks.py slow-link BINARY [--senders 16] [--link 100000] [--seconds 60]

The server runs with its defaults (bcrypt cost 4, database on tmpfs), on
port 59640; clients connect from 127.0.1.1-127.0.1.8 (loopback is exempt
from the per-address limits by default).
"""

import argparse
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

PORT = 59640
SOURCES = [f"127.0.1.{i}" for i in range(1, 9)]


def start(binary, extra=()):
    work = tempfile.mkdtemp(dir="/dev/shm", prefix="neochat-oa.")
    log = open(os.path.join(work, "log"), "w+")
    proc = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{PORT}", "--db", os.path.join(work, "db"),
         "--bcrypt-cost", "4", *extra],
        stderr=log, stdout=log)
    for _ in range(100):
        log.seek(0)
        if "listening on" in log.read():
            return proc, log, work
        time.sleep(0.1)
    sys.exit(f"{binary} did not start")


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def connect(i, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((SOURCES[i % len(SOURCES)], 0))
    s.connect(("127.0.0.1", PORT))
    return s


def register_all(names, rcvbuf=None, batch=100):
    """Connects and registers every name, a batch at a time; returns the sockets."""
    socks = []
    for start_at in range(0, len(names), batch):
        group = names[start_at:start_at + batch]
        pending = {}
        sel = selectors.DefaultSelector()
        for k, name in enumerate(group):
            s = connect(start_at + k, rcvbuf)
            s.sendall(f"R\n{name}\n{name}-secret-pw\n".encode())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, name)
            pending[s] = b""
            socks.append(s)
        deadline = time.time() + 60
        while pending and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                pending[s] += data
                if b"\n* online (" in pending[s]:
                    sel.unregister(s)
                    del pending[s]
        if pending:
            sys.exit(f"{len(pending)} registrations unanswered")
        sel.close()
    return socks


def who_flood(args):
    proc, log, work = start(args.binary)
    try:
        names = [f"user{i:04d}" for i in range(args.users)]
        t0 = time.time()
        socks = register_all(names, rcvbuf=4096)
        print(f"{len(socks)} users logged in in {time.time() - t0:.1f} s; "
              f"RSS {status(proc.pid, 'VmRSS') // 1024} MiB, "
              f"peak {status(proc.pid, 'VmHWM') // 1024} MiB")
        # From here on nobody reads. The burst of 20, then 10 a second.
        alive = set(range(len(socks)))
        start_at = time.time()
        tick = 0
        peak_seen = 0
        while time.time() - start_at < args.seconds:
            lines = 20 if tick == 0 else 1
            for i in list(alive):
                try:
                    socks[i].send(b"/who\n" * lines)
                except BlockingIOError:
                    pass
                except OSError:
                    alive.discard(i)
            tick += 1
            peak_seen = max(peak_seen, status(proc.pid, "VmRSS"))
            if tick % 10 == 0:
                print(f"  {time.time() - start_at:5.1f} s: RSS "
                      f"{status(proc.pid, 'VmRSS') // 1024} MiB, "
                      f"{len(os.listdir(f'/proc/{proc.pid}/fd'))} descriptors open")
            time.sleep(max(0, start_at + 0.1 * tick - time.time()))
        log.seek(0)
        text = log.read()
        cut = len(os.listdir(f"/proc/{proc.pid}/fd"))
        print(f"peak RSS (VmHWM) {status(proc.pid, 'VmHWM') // 1024} MiB; "
              f"descriptors open at the end {cut} (of {len(socks)} attackers + a few)")
        for w in ("--max-output", "--max-total-output"):
            print(f"  warnings naming {w}: {len(re.findall(re.escape('(' + w + ')'), text))}")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def slow_link(args):
    proc, log, work = start(args.binary)
    try:
        reader = connect(0, rcvbuf=4096)
        reader.sendall(b"R\nmobile\nmobile-secret-pw\n")
        time.sleep(0.5)
        names = [f"sender{i:02d}" for i in range(args.senders)]
        senders = register_all(names)
        left = {}
        stop = threading.Event()

        def drain(s):
            s.setblocking(True)
            s.settimeout(0.5)
            buf = b""
            while not stop.is_set():
                try:
                    data = s.recv(1 << 16)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf = (buf + data)[-256:]
                if b"* mobile left\n" in buf and "at" not in left:
                    left["at"] = time.time()

        def paced_read():
            reader.settimeout(0.2)
            got, t = 0, time.time()
            while not stop.is_set():
                time.sleep(max(0, t + got / args.link - time.time()))
                try:
                    data = reader.recv(1000)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                got += len(data)

        threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in senders]
        threads.append(threading.Thread(target=paced_read, daemon=True))
        for t in threads:
            t.start()
        line = b"s" * 4000 + b"\n"
        t0 = time.time()
        tick = 0
        while time.time() - t0 < args.seconds and "at" not in left:
            for s in senders:
                try:
                    s.sendall(line)
                except OSError:
                    pass
            tick += 1
            time.sleep(max(0, t0 + 0.1 * tick - time.time()))
        stop.set()
        if "at" in left:
            print(f"the reader on a {args.link} B/s link was cut off after "
                  f"{left['at'] - t0:.1f} s")
        else:
            print(f"the reader on a {args.link} B/s link is still connected after "
                  f"{time.time() - t0:.1f} s")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="attack", required=True)
    w = sub.add_parser("who-flood")
    w.add_argument("binary")
    w.add_argument("--users", type=int, default=1500)
    w.add_argument("--seconds", type=float, default=20)
    s = sub.add_parser("slow-link")
    s.add_argument("binary")
    s.add_argument("--senders", type=int, default=16)
    s.add_argument("--link", type=int, default=100_000)
    s.add_argument("--seconds", type=float, default=60)
    args = p.parse_args()
    {"who-flood": who_flood, "slow-link": slow_link}[args.attack](args)


if __name__ == "__main__":
    main()
