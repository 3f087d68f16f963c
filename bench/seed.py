"""Bulk seeding speed: ``civicmap seed --count N`` against a raw COPY of exactly the same rows.

What it measures
    1. The seeder: on a fresh database (dropped, created, migrated, areas and
       categories loaded), ``service.seed.seed_reports(conn, N)`` inside one
       transaction, then COMMIT, as ``civicmap seed`` does (the CLI's ANALYZE
       afterwards is not timed). This includes generating the synthetic
       reports in Python (numpy/shapely), formatting them and streaming them
       to PostgreSQL with ``COPY reports`` and ``COPY report_events``.
    2. The physical limit: the rows just written are copied out
       (``COPY reports (...) TO STDOUT`` and ``COPY report_events (...) TO
       STDOUT``, same column lists as the seeder, to temporary files), both
       tables are TRUNCATEd, and the files are streamed back in 1 MB blocks
       with client-side ``COPY ... FROM STDIN`` in one transaction, then
       COMMIT. Same rows, same server-side work (defaults, checks, foreign
       keys, every index stays in place), none of the Python generation.
    A CHECKPOINT precedes each timed phase. Printed: both times, reports/s and
    rows/s (reports + events), the CPU time this (client) process spent in
    each phase, the ratio seed/raw, and the peak RSS of this process
    (ru_maxrss, and on Linux the high-water mark of each phase with the RSS
    it started from: the process keeps the memory the seeder used, so the raw
    phase starts high and its own need is the difference).

How to run it
    make bench-seed BENCH_ARGS="--count 1000000"
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/civicmap_bench .venv/bin/python bench/seed.py --count 200000

DATABASE_URL must name a database whose name contains "bench" (or pass
--force): it is DROPPED and re-created for every run and left filled with the
last run's rows. The temporary COPY files (about 0.7 GB per million reports)
are deleted at the end.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common as common  # also puts the repo on sys.path
import psycopg

from service import db as service_db
from service import seed as service_seed

# The column lists of service.seed._copy_chunk, so both phases write the same columns.
REPORT_COLUMNS = ("id, reference, category_code, description, location, accuracy_m, city_id, district_id, "
                  "commune_id, status, source, observed_at, received_at, updated_at, acknowledged_at, closed_at, "
                  "version, payload_sha256")
EVENT_COLUMNS = "report_id, at, actor_role, old_status, new_status, note"
BLOCK = 1024 * 1024


_LIFETIME_PEAK_MB = 0.0


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux ≥ 4.0); False where unsupported.

    The reset also lowers ru_maxrss, so the peak so far is kept first (see ru_maxrss_mb).
    """
    global _LIFETIME_PEAK_MB
    _LIFETIME_PEAK_MB = max(_LIFETIME_PEAK_MB, ru_maxrss_mb())
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float | None:
    """VmHWM of this process (peak RSS since start or since the last reset), in MiB."""
    return _status_mb("VmHWM")


def rss_mb() -> float | None:
    """VmRSS of this process now, in MiB."""
    return _status_mb("VmRSS")


def ru_maxrss_mb() -> float:
    """Peak RSS of the process (ru_maxrss, KiB on Linux) in MiB, including peaks before any reset."""
    return max(_LIFETIME_PEAK_MB, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used: the client side of a phase."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def checkpoint(libpq_url: str) -> None:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def counts(libpq_url: str) -> tuple[int, int]:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        reports = conn.execute("SELECT count(*) FROM reports").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM report_events").fetchone()[0]
    return int(reports), int(events)


def run_seed(sa_url: str, count: int, random_seed: int) -> tuple[float, int]:
    """seed_reports in one transaction plus its COMMIT, as the CLI does; returns (seconds, reports)."""
    engine = service_db.make_engine(sa_url)
    try:
        start = time.perf_counter()
        with engine.begin() as conn:
            added = service_seed.seed_reports(conn, count, seed=random_seed)
        return time.perf_counter() - start, added
    finally:
        engine.dispose()


def copy_out(libpq_url: str, directory: Path, fmt: str) -> tuple[Path, Path, float]:
    reports, events = directory / f"reports.{fmt}", directory / f"report_events.{fmt}"
    option = " (FORMAT binary)" if fmt == "binary" else ""
    start = time.perf_counter()
    with psycopg.connect(libpq_url) as conn, conn.cursor() as cur:
        for path, sql in ((reports, f"COPY reports ({REPORT_COLUMNS}) TO STDOUT{option}"),
                          (events, f"COPY report_events ({EVENT_COLUMNS}) TO STDOUT{option}")):
            with open(path, "wb") as out, cur.copy(sql) as copy:
                out.writelines(copy)
    return reports, events, time.perf_counter() - start


def truncate(libpq_url: str) -> None:
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute("TRUNCATE reports, report_events, report_photos CASCADE")


def run_raw_copy(libpq_url: str, reports: Path, events: Path, fmt: str) -> float:
    """Stream both files back with COPY FROM STDIN in 1 MB blocks, one transaction; returns seconds."""
    option = " (FORMAT binary)" if fmt == "binary" else ""
    with psycopg.connect(libpq_url) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            for path, sql in ((reports, f"COPY reports ({REPORT_COLUMNS}) FROM STDIN{option}"),
                              (events, f"COPY report_events ({EVENT_COLUMNS}) FROM STDIN{option}")):
                with open(path, "rb") as source, cur.copy(sql) as copy:
                    while block := source.read(BLOCK):
                        copy.write(block)
        conn.commit()
        return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--count", "-n", type=int, default=200_000, help="synthetic reports to seed (≤ 1,000,000)")
    parser.add_argument("--repeat", "-r", type=int, default=3, help="runs (each on a fresh database); medians")
    parser.add_argument("--seed", type=int, default=42, help="random seed passed to seed_reports")
    parser.add_argument("--format", choices=("text", "binary"), default="text",
                        help="COPY format of the raw baseline (the seeder sends text)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--force", action="store_true", help="allow a database whose name lacks 'bench'")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1_000_000:
        parser.error("--count must be between 1 and 1,000,000 (the limit of `civicmap seed --count`)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sa_url, libpq_url = common.database_urls(force=args.force)
    machine = common.machine_facts()
    print(f"machine: {common.describe(machine)}; N={args.count}, repeat={args.repeat}, raw COPY format {args.format}")
    runs: list[dict[str, Any]] = []
    server: dict[str, str] = {}
    for r in range(1, args.repeat + 1):
        loaded = common.prepare_database(sa_url, fresh=True)
        if not server:
            server = common.server_facts(libpq_url)
            print(f"server:  {common.describe(server)}")
        print(f"run {r}/{args.repeat}: fresh database, areas {loaded['areas']}, categories {loaded['categories']}",
              flush=True)

        checkpoint(libpq_url)
        measured = reset_peak_rss()
        seed_rss0 = rss_mb()
        cpu0 = cpu_s()
        seed_s, added = run_seed(sa_url, args.count, args.seed)
        seed_cpu = cpu_s() - cpu0
        seed_peak = peak_rss_mb() if measured else None
        reports_n, events_n = counts(libpq_url)
        if reports_n != added or added != args.count:
            raise common.BenchError(f"seed_reports added {added}, the table holds {reports_n}, asked {args.count}")
        print(f"  seed:     {seed_s:.2f} s (client CPU {seed_cpu:.2f} s), {reports_n} reports + {events_n} events",
              flush=True)

        with tempfile.TemporaryDirectory(prefix="civicmap-bench-seed-") as tmp:
            reports_file, events_file, out_s = copy_out(libpq_url, Path(tmp), args.format)
            size_mb = (reports_file.stat().st_size + events_file.stat().st_size) / 1024 / 1024
            print(f"  copy out: {out_s:.2f} s, {size_mb:.0f} MiB ({args.format}), untimed", flush=True)
            truncate(libpq_url)
            checkpoint(libpq_url)
            reset_peak_rss()
            raw_rss0 = rss_mb()
            cpu0 = cpu_s()
            raw_s = run_raw_copy(libpq_url, reports_file, events_file, args.format)
            raw_cpu = cpu_s() - cpu0
            raw_peak = peak_rss_mb() if measured else None
        raw_counts = counts(libpq_url)
        if raw_counts != (reports_n, events_n):
            raise common.BenchError(f"raw COPY loaded {raw_counts}, the seeder {(reports_n, events_n)}")
        print(f"  raw COPY: {raw_s:.2f} s (client CPU {raw_cpu:.2f} s), "
              f"{raw_counts[0]} reports + {raw_counts[1]} events", flush=True)
        runs.append({"seed_s": seed_s, "raw_s": raw_s, "seed_client_cpu_s": seed_cpu, "raw_client_cpu_s": raw_cpu,
                     "reports": reports_n, "events": events_n,
                     "seed_reports_per_s": reports_n / seed_s, "raw_reports_per_s": reports_n / raw_s,
                     "seed_rows_per_s": (reports_n + events_n) / seed_s,
                     "raw_rows_per_s": (reports_n + events_n) / raw_s, "ratio": seed_s / raw_s,
                     "seed_peak_rss_mb": seed_peak, "raw_peak_rss_mb": raw_peak,
                     "seed_start_rss_mb": seed_rss0, "raw_start_rss_mb": raw_rss0, "copy_file_mb": size_mb})

    med = {key: common.median(run[key] for run in runs)
           for key in ("seed_s", "raw_s", "seed_client_cpu_s", "raw_client_cpu_s", "seed_reports_per_s",
                       "raw_reports_per_s", "seed_rows_per_s", "raw_rows_per_s")}
    med["ratio"] = med["seed_s"] / med["raw_s"]  # ratio of the medians, as bench/intake.py does
    maxrss = ru_maxrss_mb()

    def rss(phase: str) -> str:
        """The largest phase peak over the runs, with the RSS the phase started at."""
        peaks = [(run[f"{phase}_peak_rss_mb"], run[f"{phase}_start_rss_mb"]) for run in runs
                 if run[f"{phase}_peak_rss_mb"] is not None and run[f"{phase}_start_rss_mb"] is not None]
        if not peaks:
            return "n/a"
        peak, start = max(peaks)
        return f"{peak:.0f} (from {start:.0f})"

    reports_n, events_n = runs[-1]["reports"], runs[-1]["events"]
    print()
    print(f"Medians of {args.repeat} run(s): {reports_n:,} reports + {events_n:,} events "
          f"(machine: {machine['cores']} cores, Python {machine['python']}, PostgreSQL {server['postgresql']}, "
          f"PostGIS {server['postgis']})")
    common.print_table(
        ["phase", "reports", "events", "time s", "reports/s", "rows/s", "client CPU s", "peak RSS MiB"],
        [["civicmap seed (seed_reports + commit)", reports_n, events_n, med["seed_s"], med["seed_reports_per_s"],
          med["seed_rows_per_s"], med["seed_client_cpu_s"], rss("seed")],
         [f"raw COPY FROM ({args.format}, 1 tx)", reports_n, events_n, med["raw_s"], med["raw_reports_per_s"],
          med["raw_rows_per_s"], med["raw_client_cpu_s"], rss("raw")]])
    print(f"ratio seed/raw COPY: {med['ratio']:.2f}x slower; process peak RSS (ru_maxrss) {maxrss:.0f} MiB")

    common.write_json(args.json, {
        "bench": "seed", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine, "server": server,
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "force")},
        "runs": runs, "median": med, "ru_maxrss_mb": maxrss,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
