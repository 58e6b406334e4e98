"""A two-node Ray cluster on this machine (a head and a second node, each `ray start` with its
own --num-cpus and temporary directory), a 6-run demo sweep spread over both with
`harness sweep --ray ADDRESS`, one worker killed with `kill -9` while it writes a run, and
the sweep finishing with every run complete and identical (wall times and the node aside)
to the same sweep run sequentially with one thread per run.

    python benchmarks/ray_two_nodes.py [--report benchmarks/results/ray-two-nodes.md]

Stops every Ray process on this machine at the end (`ray stop --force`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SWEEP = """
method = ["cka", "random-walk", "layer-only"]
seed = [0, 1]
budget = "smoke"
iterations = 3
scratch_epochs = 10
candidate_epochs = 0.5
finetune_epochs = 1
runs_dir = "{runs}"
num_cpus = 1
"""
PORT = 6391


def sh(*args, env, check=True):
    return subprocess.run(list(args), env=env, capture_output=True, text=True, check=check)


def processes() -> list[tuple[int, int, str]]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, args = line.strip().split(None, 2) + [""] * (3 - len(line.strip().split(None, 2)))
        rows.append((int(pid), int(ppid), args))
    return rows


def strip(rows):
    from harness.schema import reproducible  # wall_time_s and phase_s (it compared phase_s, which differs)

    return [reproducible(r) for r in rows]


def same(a: Path, b: Path) -> bool:
    import torch

    from harness import records

    if strip(records.read_iterations(a)) != strip(records.read_iterations(b)):
        return False
    result = lambda d: {k: v for k, v in records.read_result(d).items() if k != "node"}  # noqa: E731
    if result(a) != result(b):
        return False
    for it in range(len(records.read_iterations(a))):
        x, y = (torch.load(records.model_path(d, it))["state_dict"] for d in (a, b))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default=None, help="also write the report (Markdown) here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-two-nodes-"))
    env = dict(os.environ, RAY_AUTH_MODE="disabled", HARNESS_CACHE=str(work / "cache"))
    env.pop("RAY_ADDRESS", None)
    report = ["# Two Ray nodes on one machine, one worker killed mid-sweep", "",
              f"`python benchmarks/ray_two_nodes.py`, {time.strftime('%Y-%m-%d')}, this project's 2-core CPU.", ""]
    try:
        sh("ray", "start", "--head", "--num-cpus", "1", "--port", str(PORT), "--temp-dir", str(work / "head"),
           "--include-dashboard=false", "--disable-usage-stats", env=env)
        sh("ray", "start", "--address", f"127.0.0.1:{PORT}", "--num-cpus", "1", "--temp-dir", str(work / "node2"),
           env=env)
        raylet2 = next(pid for pid, _, a in processes() if "raylet/raylet" in a and str(work / "node2") in a)
        import ray

        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(address=f"127.0.0.1:{PORT}", log_to_driver=False, configure_logging=False)
        node2 = next(n["NodeID"][:8] for n in ray.nodes() if str(work / "node2") in n.get("RayletSocketName", ""))
        nodes = sorted(n["NodeID"][:8] for n in ray.nodes())
        ray.shutdown()
        report += [f"Nodes: {', '.join(nodes)} (the second node: {node2}), 1 CPU each.", ""]

        (work / "ray.toml").write_text(SWEEP.format(runs=work / "ray-runs"))
        (work / "seq.toml").write_text(SWEEP.format(runs=work / "seq-runs"))
        t0 = time.perf_counter()
        sweep = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(work / "ray.toml"), "--ray",
                                  f"127.0.0.1:{PORT}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(sweep.stdout), daemon=True)
        reader.start()
        killed = None
        while sweep.poll() is None and killed is None:
            started = [line.split()[1] for line in list(lines) if line.startswith("start ") and f"/{node2} " in line]
            for name in started:
                run = work / "ray-runs" / name
                done = (run / "result.json").exists()
                n = len((run / "iterations.jsonl").read_text().splitlines()) if (run / "iterations.jsonl").exists() else 0
                workers = [pid for pid, ppid, a in processes() if ppid == raylet2 and a.startswith("ray::_sweep_task")]
                if not done and n >= 2 and workers:
                    os.kill(workers[0], signal.SIGKILL)
                    killed = (name, n - 1, workers[0], time.perf_counter() - t0)
                    break
            time.sleep(0.02)
        code = sweep.wait(timeout=900)
        reader.join(timeout=10)
        wall = time.perf_counter() - t0
        if killed is None:
            raise SystemExit("no run of the second node could be caught mid-run: nothing was killed")
        report += [f"Killed with `kill -9` after {killed[3]:.1f} s: worker pid {killed[2]} on node {node2}, "
                   f"writing run `{killed[0]}` with {killed[1]} iteration(s) recorded.", "",
                   f"The sweep exited with status {code} after {wall:.1f} s. Its output:", "", "```",
                   *[re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip()) for line in lines if not line.startswith("wrote ")],
                   "```", ""]

        seq = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(work / "seq.toml")],
                             env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True)
        assert seq.returncode == 0, seq.stderr
        from harness import records

        report += ["| run | complete | started on | finished on | same records as the sequential sweep |",
                   "|---|---|---|---|---|"]
        all_same = True
        for run in sorted(p for p in (work / "ray-runs").iterdir() if (p / "config.json").exists()):
            result = records.read_result(run)
            started_on = records.read_config(run)["hardware"].get("node")
            ok = result is not None and same(run, work / "seq-runs" / run.name)
            all_same = all_same and ok
            report.append(f"| {run.name} | {result is not None} | {started_on} | {(result or {}).get('node')} | {ok} |")
        runs = len([p for p in (work / "ray-runs").iterdir() if (p / "config.json").exists()])
        report += ["", f"**{runs} runs, every one complete and identical to the sequential sweep: {all_same}** "
                       f"(sweep exit status {code})."]
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)
    text = "\n".join(report) + "\n"
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    sys.exit(0 if code == 0 and all_same and runs == 6 else 1)


if __name__ == "__main__":
    main()
