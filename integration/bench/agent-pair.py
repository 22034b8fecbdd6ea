#!/usr/bin/env python3
"""One pair of agents through one relay, durable state: alice sends N texts to bob,
bob shows them. Reports messages/s (from alice's start to bob showing the last) and the
latency from a text's creation (its payload timestamp, same clock) to bob's `message`
event: median, p99, max.

Modes:
  script    alice runs a script of `send bob ...` steps (each step waits for the
            relay's SentAck before the next: the agent's per-message cost, serial)
  pipelined alice reads `/msg bob ...` lines from stdin, all written at once

Usage: integration/bench/agent-pair.py [--messages 2000] [--mode script|pipelined]
       [--warmup 0] [--bin target/release]
--warmup sends that many texts first (not measured), to show that the cost per message
does not grow with the conversation's length.
cpu_seconds: user + system CPU each process used during the measured run (alice's
includes its start).
Every process is started on 127.0.0.1 and stopped by its pid; every wait is bounded.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

WAIT = 600.0


def start_relay(binary, data):
    # The send bucket is raised (as e2ee-load does) so that long runs measure the
    # agents, not the relay's rate limit (default 2 000, refilled by 1 000 a second).
    # Likewise the sender's quota of unacknowledged messages (default 10 000), which a
    # pipelined sender faster than its receiver reaches.
    env = dict(os.environ, E2EE_RELAY_LIMITS__RATE_CAPACITY="1000000",
               E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC="1000000",
               E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES="1000000")
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("msg") == "relay listening":
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, event["addr"]
        if time.time() > deadline:
            break
    proc.kill()
    sys.exit("the relay did not start")


def agent(binary, name, relay, state, extra=(), stdin=subprocess.DEVNULL):
    env = dict(os.environ, E2EE_AGENT_LOG_LEVEL="warn", E2EE_RELAY_LOG_LEVEL="warn")
    return subprocess.Popen(
        [binary, "--name", name, "--relay", relay, "--state", state, "--json", *extra],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def read_events(proc, sink, stop_when=None):
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        sink.append((time.time(), event))
        if stop_when and stop_when(event):
            return


def cpu_seconds(proc):
    """User + system CPU seconds the process has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(events, pred, what, timeout=WAIT):
    """Waits for an event matching `pred`, looking at each event once (a scan of the
    whole list at every poll would compete with the agents for the CPU)."""
    deadline = time.time() + timeout
    seen = 0
    while time.time() < deadline:
        end = len(events)
        if any(pred(e) for _, e in events[seen:end]):
            return
        seen = end
        time.sleep(0.01)
    sys.exit(f"timed out waiting for {what}")


def run_alice(args, relay, state, texts, tmp, tag):
    if args.mode == "script":
        script = os.path.join(tmp, f"alice-{tag}.script")
        with open(script, "w") as f:
            f.write("wait-peer bob timeout=30000\n")
            for text in texts:
                f.write(f"send bob {text}\n")
        proc = agent(os.path.join(args.bin, "e2ee-agent"), "alice", relay, state, ["--script", script])
    else:
        proc = agent(os.path.join(args.bin, "e2ee-agent"), "alice", relay, state, stdin=subprocess.PIPE)
        proc.stdin.write("".join(f"/msg bob {t}\n" for t in texts))
        proc.stdin.flush()
    events = []
    threading.Thread(target=read_events, args=(proc, events), daemon=True).start()
    return proc, events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--mode", choices=["script", "pipelined"], default="script")
    ap.add_argument("--bin", default="target/release")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="agent-pair-")
    procs = []
    try:
        relay, addr = start_relay(os.path.join(args.bin, "e2ee-relay"), os.path.join(tmp, "relay"))
        procs.append(relay)
        bob = agent(os.path.join(args.bin, "e2ee-agent"), "bob", addr, os.path.join(tmp, "bob"),
                    stdin=subprocess.PIPE)
        procs.append(bob)
        bob_events = []
        threading.Thread(target=read_events, args=(bob, bob_events), daemon=True).start()
        wait_for(bob_events, lambda e: e.get("event") == "connection" and e.get("state") == "connected",
                 "bob to connect", 30)

        alice_state = os.path.join(tmp, "alice")
        if args.warmup:
            texts = [f"warm-{i}" for i in range(args.warmup)]
            alice, _ = run_alice(args, addr, alice_state, texts, tmp, "warmup")
            procs.append(alice)
            last = texts[-1]
            wait_for(bob_events, lambda e: e.get("event") == "message" and e.get("text") == last,
                     "the warm-up")
            stop(alice)

        texts = [f"m-{i:06d}" for i in range(args.messages)]
        last = texts[-1]
        mark = len(bob_events)
        cpu_before = {"relay": cpu_seconds(relay), "bob": cpu_seconds(bob)}
        start = time.time()
        alice, alice_events = run_alice(args, addr, alice_state, texts, tmp, "run")
        procs.append(alice)
        wait_for(bob_events, lambda e: e.get("event") == "message" and e.get("text") == last,
                 "the last message")
        elapsed = time.time() - start
        cpu = {"relay": cpu_seconds(relay), "bob": cpu_seconds(bob), "alice": cpu_seconds(alice)}
        for who, before in cpu_before.items():
            if cpu[who] is not None and before is not None:
                cpu[who] = round(cpu[who] - before, 2)
        shown = [(t, e) for t, e in bob_events[mark:] if e.get("event") == "message"
                 and str(e.get("text", "")).startswith("m-")]
        latencies = sorted(t * 1000 - e["timestamp_ms"] for t, e in shown)

        def pct(p):
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))]
        print(json.dumps({
            "mode": args.mode,
            "messages": args.messages,
            "warmup": args.warmup,
            "shown": len(shown),
            "distinct": len({e["text"] for _, e in shown}),
            "seconds": round(elapsed, 3),
            "messages_per_s": round(args.messages / elapsed, 1),
            "latency_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1),
                           "max": round(latencies[-1], 1)},
            "cpu_seconds": cpu,
        }))
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
