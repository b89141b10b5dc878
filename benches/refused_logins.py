#!/usr/bin/env python3
"""Cost of a login refused by --login-attempts, for BENCHMARKS.md.

Starts target/release/neochat-server with --exempt none (so 127.0.0.x
addresses count), makes five wrong guesses at one account, then sends N more
guesses (three per connection, from 50 addresses) and reports the wall time,
the server's CPU time (utime+stime from /proc) and the answers it gave.

    cargo build --release && python3 benches/refused_logins.py [N]
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

PORT = 59641
N = int(sys.argv[1]) if len(sys.argv) > 1 else 6000


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(host):
    s = socket.socket()
    s.bind((f"127.0.0.{host}", 0))
    s.connect(("127.0.0.1", PORT))
    return s


def lines(s, want):
    buf = b""
    while buf.count(b"\n") < want:
        data = s.recv(65536)
        if not data:
            break
        buf += data
    return buf.decode(errors="replace").splitlines()


def guess_three_times(host):
    """Welcome, choice, then per guess: username, password, answer, and
    the choice prompt or the closing line."""
    s = connect(host)
    s.sendall(b"L\nalice\nguess\n" * 3)
    got = lines(s, 2 + 3 * 4)
    s.close()
    return got


def main():
    db = os.path.join(tempfile.mkdtemp(), "neochat.db")
    server = subprocess.Popen(
        ["target/release/neochat-server", "--listen", f"127.0.0.1:{PORT}",
         "--db", db, "--exempt", "none", "--registrations-per-ip", "off"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in server.stderr.readline()
        s = connect(1)
        s.sendall(b"R\nalice\nalice-secret-pw\n/quit\n")
        lines(s, 6)
        s.close()
        # Five wrong guesses (and one refused) from two other addresses.
        for host in (200, 201):
            guess_three_times(host)
        time.sleep(1.5)  # let the bcrypt workers finish
        cpu0, t0 = cpu_seconds(server.pid), time.time()
        answers = {}
        done = 0
        while done < N:
            for line in guess_three_times(2 + (done // 3) % 50):
                if line.startswith("! "):
                    key = line[:30]
                    answers[key] = answers.get(key, 0) + 1
            done += 3
        wall, cpu = time.time() - t0, cpu_seconds(server.pid) - cpu0
        print(f"{done} attempts in {wall:.2f} s ({done / wall:.0f}/s), server CPU "
              f"{cpu:.2f} s ({1e6 * cpu / done:.0f} us per attempt)")
        print(answers)
    finally:
        server.terminate()
        warnings = sum("WARN" in l for l in server.communicate()[1].splitlines())
        print(f"{warnings} warnings in the server log")


if __name__ == "__main__":
    main()
