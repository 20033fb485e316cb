"""Loopsy's benchmarks, side by side with ssh in one run, reported as ratios.

Starts two release `loopsy node`s on loopback and pairs them; starts a private sshd on a
loopback port with keys made in a temporary directory; then times each operation with both
tools. Everything it starts is stopped, and its temporary directory removed, on exit.
"""

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOPSY = os.path.join(ROOT, "target", "release", "loopsy")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

EXEC_RUNS = 300
FRESH_SSH_RUNS = 50
STREAM_BYTES = 1 << 30
STREAM_RUNS = 3


class Lab:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="loopsy-bench-")
        self.procs = []

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p


def loopsy(home, *args, **kw):
    return subprocess.run([LOOPSY, "--home", home, *args], capture_output=True, **kw)


def start_nodes(lab):
    homes = []
    for name in ("alpha", "bravo"):
        home = lab.path(name)
        log = open(lab.path(name + ".log"), "w")
        lab.spawn(
            [LOOPSY, "--home", home, "node", "--name", name, "--no-mdns",
             "--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"],
            stdout=log, stderr=log,
        )
        homes.append(home)
    for home in homes:
        for _ in range(100):
            if loopsy(home, "id").returncode == 0:
                break
            time.sleep(0.1)
    alpha, bravo = homes
    invite = lab.spawn([LOOPSY, "--home", alpha, "pair", "--json", "--ttl", "60s"],
                       stdout=subprocess.PIPE, text=True)
    code = json.loads(invite.stdout.readline())["code"]
    joined = loopsy(bravo, "pair", "join", code)
    if joined.returncode != 0:
        sys.exit("pairing failed: " + joined.stderr.decode())
    invite.stdout.readline()
    return alpha, bravo


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BENCH_USER = "loopsy-bench"


def bench_user(lab):
    """A user for ssh whose shell is /bin/sh with no rc files: ssh runs every command
    through the user's shell, and a slow interactive setup (root's .bashrc here costs tens
    of milliseconds) would be counted against ssh, while Loopsy runs argv directly."""
    if subprocess.run(["id", BENCH_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/bin/sh", BENCH_USER], check=True)
    # No password, but not locked: sshd without PAM refuses locked accounts even with keys.
    subprocess.run(["usermod", "--password", "*", BENCH_USER], check=True)
    os.chmod(lab.dir, 0o755)
    return BENCH_USER


def start_sshd(lab):
    port = free_port()
    host_key, user_key = lab.path("host_key"), lab.path("user_key")
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    shutil.copy(user_key + ".pub", lab.path("authorized_keys"))
    config = lab.path("sshd_config")
    with open(config, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {lab.path("authorized_keys")}
PidFile {lab.path("sshd.pid")}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
""")
    os.chmod(lab.path("authorized_keys"), 0o644)
    os.makedirs("/run/sshd", exist_ok=True)
    lab.spawn([SSHD, "-D", "-e", "-f", config], stderr=open(lab.path("sshd.log"), "w"))
    base = ["ssh", "-q", "-p", str(port), "-i", user_key,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes"]
    mux = base + ["-o", "ControlMaster=auto", "-o", f"ControlPath={lab.path('cm')}",
                  "-o", "ControlPersist=300"]
    user = bench_user(lab)
    for _ in range(100):
        if subprocess.run(base + [f"{user}@127.0.0.1", "true"]).returncode == 0:
            break
        time.sleep(0.1)
    # Open the master connection once; later runs reuse it.
    subprocess.run(mux + [f"{user}@127.0.0.1", "true"], check=True)
    return base + [f"{user}@127.0.0.1"], mux + [f"{user}@127.0.0.1"]


def latencies(args, runs):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            sys.exit(f"{args} failed")
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.95) - 1]


def throughput(args, runs):
    """Best of `runs`, in MB/s, of a command that writes STREAM_BYTES to stdout."""
    best = 0.0
    for _ in range(runs):
        started = time.perf_counter()
        with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as p:
            total = 0
            while chunk := p.stdout.read1(1 << 20):
                total += len(chunk)
        elapsed = time.perf_counter() - started
        if total != STREAM_BYTES:
            sys.exit(f"{args} delivered {total} bytes, not {STREAM_BYTES}")
        best = max(best, STREAM_BYTES / elapsed / 1e6)
    return best


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def bench_exec(lab):
    alpha, bravo = start_nodes(lab)
    ssh, ssh_mux = start_sshd(lab)
    data = lab.path("stream.bin")
    with open(data, "wb") as f:
        f.truncate(STREAM_BYTES)
    os.chmod(data, 0o644)

    ex = [LOOPSY, "--home", bravo, "exec", "alpha", "--"]
    rows = []
    l50, l95 = latencies(ex + ["true"], EXEC_RUNS)
    m50, m95 = latencies(ssh_mux + ["true"], EXEC_RUNS)
    f50, f95 = latencies(ssh + ["true"], FRESH_SSH_RUNS)
    ms = lambda s: f"{s * 1000:.2f} ms"
    rows.append(("`exec PEER true`, p50", ms(l50), f"{ms(m50)} (ssh, ControlMaster)", f"{l50 / m50:.2f}×"))
    rows.append(("`exec PEER true`, p95", ms(l95), f"{ms(m95)} (ssh, ControlMaster)", f"{l95 / m95:.2f}×"))
    rows.append(("`exec PEER true`, p50", ms(l50), f"{ms(f50)} (ssh, new connection)", f"{l50 / f50:.2f}×"))
    lt = throughput(ex + ["cat", data], STREAM_RUNS)
    st = throughput(ssh_mux + ["cat", data], STREAM_RUNS)
    rows.append(("1 GiB through stdout (`cat`)", f"{lt:.0f} MB/s", f"{st:.0f} MB/s (ssh)", f"{lt / st:.2f}×"))
    return rows


def main():
    which = sys.argv[1:] or ["exec"]
    lab = Lab()
    try:
        rows = []
        if "exec" in which:
            rows += bench_exec(lab)
    finally:
        lab.close()
    print(f"Machine: {machine()}. One run of `bench/run`, {time.strftime('%Y-%m-%d')}.\n")
    print("| what | loopsy | the alternative | loopsy ÷ alternative |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nLatency ratios below 1 and throughput ratios above 1 favour Loopsy. ssh runs its"
          " commands as a user whose shell is /bin/sh with no rc files, so its times count"
          " no shell start-up; Loopsy runs argv directly.")


if __name__ == "__main__":
    main()
