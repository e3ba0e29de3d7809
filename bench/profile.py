"""A CPU profile of omen's query loop: loads a data set into the server bench/run.sh starts,
builds the omen index, and runs the queries at one search list size for --seconds while
`perf record -e cpu-clock` samples the backend. Prints perf's flat report (the functions
with at least 0.5% of the samples).

Usage (through bench/run.sh, which starts the server): bench/run.sh DATA --profile [--list-size L]
"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from run import load

from common import fresh_db, metric_of, phase, say, vecs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--list-size", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    folder = Path(args.data)
    base, queries, _ = vecs.load(folder)
    ops, op = metric_of(folder.name)
    texts = [vecs.vector_text(q) for q in queries[:1000]]
    fresh_db("bench_profile")
    conn = psycopg.connect(dbname="bench_profile", autocommit=True)
    conn.execute("CREATE EXTENSION omendb")
    load(conn, base)
    with phase("CREATE INDEX … USING omen"):
        conn.execute(f"CREATE INDEX items_omen ON items USING omen (embedding {ops})")
    conn.execute(f"SET omen.search_list_size = {args.list_size}")
    sql = f"SELECT id FROM items ORDER BY embedding {op} %s::vector LIMIT 10"
    for q in texts[:200]:
        conn.execute(sql, (q,), prepare=True).fetchall()
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        perf = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "4000", "-p", str(pid), "-o", str(data)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            conn.execute(sql, (texts[done % len(texts)],), prepare=True).fetchall()
            done += 1
        elapsed = time.perf_counter() - t0
        perf.send_signal(2)
        perf.wait()
        say(f"{done} queries in {elapsed:.1f} s at search_list_size {args.list_size}: {done / elapsed:,.0f} queries/s")
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--percent-limit", "0.5", "--stdio"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    # cpu-clock samples at 4,000 a second: the share of the wall time the backend was on a CPU
    # (the rest is the client, the round trips and the scheduler).
    samples = next((line.split()[2] for line in report.splitlines() if line.startswith("# Samples:")), None)
    if samples:
        count = float(samples[:-1]) * 1000 if samples.endswith("K") else float(samples)
        say(f"backend on CPU {count / 4000 / elapsed:.0%} of the time, {count / 4000 / done * 1e6:.0f} µs a query")
    print("\n".join(line for line in report.splitlines() if line.strip() and not line.startswith("#")))


if __name__ == "__main__":
    main()
