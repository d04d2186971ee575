"""Run a fixed list of CLI commands into one folder, to compare two versions of the code.

    python bench/reference_runs.py --osie OSIE_ROOT --out refs/before     # on the old code
    python bench/reference_runs.py --osie OSIE_ROOT --out refs/after      # on the new code
    python bench/compare_runs.py refs/before refs/after                   # byte-identical CSVs?

Every command runs with random weights (offline) on real OSIE images and generated pop-out
arrays: dissect (pop-out, OSIE with fixation clusters, the null and the bootstrap), stats,
attention (Grad-CAM and dense), evaluate (classical models on OSIE and pop-out), robustness,
train saliency, study finetune, shards and merge for dissect / attention / evaluate, Ray, and a
``kill -9`` then ``--resume`` of dissect and of an attention shard. Each command's console
output goes to ``OUT/<name>.log``. The numbers describe random networks: they are here to be
compared, not read.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, argv: list[str], out: Path, env: dict) -> float:
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.call([sys.executable, "cli.py", *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=env)
    if code != 0:
        raise SystemExit(f"{name} failed with exit code {code}; see {out / f'{name}.log'}")
    return time.perf_counter() - t0


def _finished_items(folder: Path) -> int:
    """Items a run folder has saved: ``progress.json``'s ``next_index``, or finished checkpoint pieces."""
    marker = folder / "progress.json"
    if marker.exists():
        try:
            done = json.loads(marker.read_text()).get("next_index", 0)
        except ValueError:
            return 0
        return done if isinstance(done, int) else 0
    return len(list(folder.glob("piece-*.json")))


def _killed_then_resumed(name: str, argv: list[str], out: Path, env: dict, folder: Path, at_least: int) -> None:
    """Start ``argv``, ``kill -9`` it once ``folder`` has saved ``at_least`` items, then resume it."""
    with open(out / f"{name}-killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "cli.py", *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            if folder.exists() and _finished_items(folder) >= at_least:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
    print(f"  {name}: killed with exit code {proc.returncode}", flush=True)
    _run(f"{name}-resumed", [*argv, "--resume"], out, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--osie", required=True, help="OSIE root (stimuli/, fixations.mat)")
    parser.add_argument("--out", required=True, help="folder for every run (created; must not exist)")
    parser.add_argument("--skip-ray", action="store_true", help="leave out the Ray run")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True)
    osie = str(Path(args.osie).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "2", "SALIENCY_DISSECT_REGION_CACHE": "", "PYTHONHASHSEED": "0"}

    ids = sorted(p.stem for p in (Path(osie) / "stimuli").glob("*.jpg"))
    (out / "train_ids.txt").write_text("\n".join(ids[:12]) + "\n")
    (out / "val_ids.txt").write_text("\n".join(ids[12:16]) + "\n")
    (out / "dissect_ids.txt").write_text("\n".join(ids[16:22]) + "\n")

    rw = ["--weights", "random", "--no-progress"]
    pop = ["dissect", "--model", "vgg16", "--layer", "conv5_3", "--max-images", "16", *rw]
    osie_dissect = ["dissect", "--model", "vgg16", "--layers", "conv4_3,conv5_3", "--dataset", "osie", "--data-root",
                    osie, "--regions", "clusters", "--max-images", "16", *rw]
    attention = ["attention", "--model", "vgg16", "--method", "gradcam", "--method", "dense", "--dataset", "osie",
                 "--data-root", osie, "--max-images", "8", "--dense-layer", "conv4_3", "--dense-layer", "conv5_3", *rw]
    evaluate_osie = ["evaluate", "--dataset", "osie", "--data-root", osie, "--max-images", "8", "--no-progress"]
    evaluate_pop = ["evaluate", "--max-images", "8", "--no-progress"]
    train = ["--dataset", "osie", "--data-root", osie, "--train-ids", str(out / "train_ids.txt"), "--val-ids",
             str(out / "val_ids.txt"), "--encoder-weights", "random", "--batch-size", "4", "--no-progress"]
    runs = [
        ("dissect-popout", [*pop, "--out", str(out / "dissect-popout")]),
        ("dissect-osie", [*osie_dissect, "--out", str(out / "dissect-osie")]),
        ("stats-osie", ["stats", str(out / "dissect-osie")]),
        ("attention-osie", [*attention, "--out", str(out / "attention-osie")]),
        ("evaluate-osie", [*evaluate_osie, "--out", str(out / "evaluate-osie")]),
        ("evaluate-popout", [*evaluate_pop, "--out", str(out / "evaluate-popout")]),
        ("robustness", ["robustness", "--model", "vgg16", "--model", "resnet50", "--epsilon", "0.004", "--epsilon",
                        "0.016", "--max-images", "8", *rw, "--out", str(out / "robustness")]),
        ("train-saliency", ["train", "saliency", *train, "--steps", "20", "--eval-every", "10",
                            "--out", str(out / "train-saliency")]),
        ("study-finetune", ["study", "finetune", "--finetune", "0,1", "--train-dataset", "osie", "--train-root", osie,
                            "--train-ids", str(out / "train_ids.txt"), "--val-ids", str(out / "val_ids.txt"),
                            "--dissect-dataset", "osie", "--dissect-root", osie, "--dissect-regions", "clusters",
                            "--dissect-ids", str(out / "dissect_ids.txt"), "--encoder-weights", "random",
                            "--steps", "6", "--eval-every", "3", "--batch-size", "4", "--popout-n", "1",
                            "--no-progress", "--out", str(out / "study-finetune")]),
    ]
    for i in range(2):
        runs.append((f"dissect-popout-shard{i}", [*pop, "--shard", f"{i}/2", "--out", str(out / f"dissect-popout-s{i}")]))
        runs.append((f"attention-shard{i}", [*attention, "--shard", f"{i}/2", "--checkpoint-every", "1",
                                             "--out", str(out / f"attention-s{i}")]))
        runs.append((f"evaluate-shard{i}", [*evaluate_osie, "--shard", f"{i}/2", "--out", str(out / f"evaluate-s{i}")]))
    runs += [
        ("dissect-popout-merge", ["merge", str(out / "dissect-popout-merged"), str(out / "dissect-popout-s1"),
                                  str(out / "dissect-popout-s0")]),
        ("attention-merge", ["merge", str(out / "attention-merged"), str(out / "attention-s0"),
                             str(out / "attention-s1")]),
        ("evaluate-merge", ["merge", str(out / "evaluate-merged"), str(out / "evaluate-s1"), str(out / "evaluate-s0")]),
    ]
    if not args.skip_ray:
        runs.append(("dissect-popout-ray", [*pop, "--ray", "--shards", "2", "--out", str(out / "dissect-popout-ray")]))
    timings = {}
    for name, argv in runs:
        print(f"{name} ...", flush=True)
        timings[name] = round(_run(name, argv, out, env), 1)
    print("dissect-osie kill -9 and --resume ...", flush=True)
    folder = out / "dissect-osie-resumed"
    _killed_then_resumed("dissect-osie", [*osie_dissect, "--checkpoint-seconds", "0", "--out", str(folder)], out, env,
                         folder, 8)
    print("attention shard kill -9 and --resume ...", flush=True)
    folder = out / "attention-s0-resumed"
    _killed_then_resumed("attention-shard0", [*attention, "--shard", "0/2", "--checkpoint-every", "1",
                                              "--out", str(folder)], out, env, folder, 1)
    _run("attention-merge-resumed", ["merge", str(out / "attention-merged-resumed"), str(folder),
                                     str(out / "attention-s1")], out, env)
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"done: {out}")


if __name__ == "__main__":
    main()
