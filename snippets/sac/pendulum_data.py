"""The committed Pendulum-v1 runs: learning curves, their provenance, and a re-run.

Each run of `python -m snippets.sac.pendulum_data --csv X.csv [train flags]` trains
(sac_pendulum.train, the flags are sac_pendulum.Args plus --csv) and appends its
learning curve to X.csv (columns steps, seed, eval_return) and its provenance to X.json
beside it: the command, the Args, the git commit and whether the tree was clean,
the torch/gymnasium versions, the CPU, the wall time, and a fingerprint of the training
code. The tests that decide the Pendulum claims read the CSV through `load_runs`, which
fails when the CSV and the JSON disagree or when the training code no longer has the
fingerprint recorded with the runs: a change to the training code cannot leave a claim
standing on curves that the new code did not produce. The `experiment` test re-runs a
seed and compares it with the committed curve.

Imports go one way: this module imports the training code, never the reverse.
"""

# --8<-- [start:read_curve]
import csv
import pathlib

DATA = pathlib.Path(__file__).resolve().parents[2] / "docs/topics/sac/data"
CURVE_CSV = DATA / "pendulum_sac.csv"  # tau = 0.005 (with target critics)
TAU1_CSV = DATA / "pendulum_sac_tau1.csv"  # tau = 1 (no target network)


def read_curve(path=CURVE_CSV):
    """Curves written by --csv. -> {seed: ([steps...], [eval_return...])}."""
    curves = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            steps, rets = curves.setdefault(int(row["seed"]), ([], []))
            steps.append(int(row["steps"]))
            rets.append(float(row["eval_return"]))
    return curves


# --8<-- [end:read_curve]


# --8<-- [start:provenance]
import ast
import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys

import tyro

from snippets.sac.pendulum_data import DATA, read_curve
from snippets.sac.sac_pendulum import Args, eval_steps, train

ROOT = DATA.parents[3]  # DATA = ROOT / "docs/topics/sac/data"
# The code that determines the numbers in the CSVs: module -> top-level names.
TRAINING_CODE = {
    "snippets/sac/sac_pendulum.py": (
        "Args",
        "eval_steps",
        "LOG_STD_MIN",
        "Actor",
        "EnsembleLinear",
        "Critics",
        "ReplayBuffer",
        "sac_update",
        "evaluate",
        "train",
    ),
    "snippets/sac/distributions.py": ("tanh_normal",),
    "snippets/sac/critic.py": ("q_backup", "soft_td_target", "double_q_loss"),
    "snippets/sac/target.py": ("soft_update",),
}


def _is_text(stmt):
    """A bare string statement: a docstring, or a field's docstring in a dataclass."""
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _strip_docstrings(node):
    for n in ast.walk(node):
        body = getattr(n, "body", None)
        if isinstance(body, list) and body:
            n.body = [stmt for stmt in body if not _is_text(stmt)] or [ast.Pass()]
    return node


def _names(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {
            n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)
        }
    return set()


def mutated(root=ROOT):
    """Whether this is mutmut's rewritten copy of the code (`make mutate`)."""
    return "__mutmut_" in (root / "snippets" / "sac" / "sac_pendulum.py").read_text()


def code_fingerprint(root=ROOT):
    """sha256 of the syntax trees of TRAINING_CODE, docstrings removed: comments,
    docstrings and line breaks do not change it; any change to what runs does."""
    h = hashlib.sha256()
    for path, names in TRAINING_CODE.items():
        tree = ast.parse((pathlib.Path(root) / path).read_text(encoding="utf-8"))
        found = {}
        for node in tree.body:
            for name in _names(node) & set(names):
                found[name] = ast.dump(_strip_docstrings(node))
        missing = set(names) - set(found)
        assert not missing, f"{path}: {sorted(missing)} not found"
        for name in names:
            h.update(f"{path}:{name}\n{found[name]}\n".encode())
    return h.hexdigest()


def _git(*args):
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.rstrip("\n") if out.returncode == 0 else None


def machine():
    """What floating point depends on: library versions and the CPU kernels used."""
    import gymnasium
    import torch

    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in f
                    if line.startswith("model name")
                ),
                cpu,
            )
    return {
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def record_run(csv_path, args, curve, seconds, argv=None):
    """Append one run's curve (train(args)'s) to csv_path and its provenance to the
    .json beside it."""
    csv_path = pathlib.Path(csv_path)
    json_path = csv_path.with_suffix(".json")
    # Clean = nothing changed but the data directory that the runs are writing to.
    data_dir = os.path.relpath(csv_path.resolve().parent, ROOT) + "/"
    status = _git("status", "--porcelain", "--untracked-files=all")
    lines = ["?? (git status failed)"] if status is None else status.splitlines()
    dirty = sorted(line[3:] for line in lines if not line[3:].startswith(data_dir))
    argv = sys.argv[1:] if argv is None else argv
    run = {
        "seed": args.seed,
        "command": "python -m snippets.sac.pendulum_data " + " ".join(argv),
        "settings": dataclasses.asdict(args),
        "commit": _git("rev-parse", "HEAD"),
        "tree_clean": not dirty,
        "dirty": dirty,
        "code_fingerprint": code_fingerprint(),
        **machine(),
        "seconds": round(seconds, 1),
        "evaluations": len(curve),
        "final_return": round(curve[-1][1], 2),
    }
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["steps", "seed", "eval_return"])
        w.writerows((s, args.seed, f"{r:.2f}") for s, r in curve)
    log = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    log["runs"].append(run)
    json_path.write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n")


def load_runs(csv_path, root=ROOT):
    """Curves of csv_path, checked against the provenance beside it and against the
    training code under root (the project).
    -> ({seed: (steps, returns)}, {seed: provenance})."""
    csv_path = pathlib.Path(csv_path)
    curves = read_curve(csv_path)
    log = json.loads(csv_path.with_suffix(".json").read_text(encoding="utf-8"))
    runs = {r["seed"]: r for r in log["runs"]}
    name = csv_path.name
    assert len(runs) == len(log["runs"]), f"{name}: a seed recorded twice"
    assert sorted(runs) == sorted(curves), (
        f"{name}: seeds {sorted(curves)} in the CSV, {sorted(runs)} in the JSON"
    )
    fields = {f.name for f in dataclasses.fields(Args)}
    for seed, (steps, rets) in curves.items():
        run, cfg = runs[seed], runs[seed]["settings"]
        unknown = sorted(set(cfg) - fields)
        assert not unknown, f"{name} seed {seed}: {unknown} are not fields of Args"
        args = Args(**cfg)
        assert args.seed == seed and steps == eval_steps(args), f"{name} seed {seed}"
        # both rounded to 2 decimals when written: equal, not just close
        assert rets[-1] == run["final_return"], f"{name} seed {seed}"
        assert run["tree_clean"] and len(run["commit"] or "") == 40, run
        # (mutation testing rewrites the code on purpose: there, only this check is off)
        same_code = run["code_fingerprint"] == code_fingerprint(root)
        assert same_code or mutated(root), (
            f"{name} seed {seed} was made by other training code than this one "
            f"(commit {run['commit']}): re-run `{run['command']}`, commit the data"
        )
    return curves, runs


@dataclasses.dataclass(kw_only=True)
class RecordedRun(Args):
    """The training settings (Args) and where the run is recorded."""

    csv: pathlib.Path
    """append (steps, seed, eval_return) rows to this CSV, and the run's provenance
    to the .json beside it"""


def main(argv=None):
    """Train with the flags' Args, then record the run (commit the code first)."""
    cli = tyro.cli(RecordedRun, args=argv, description="Train SAC and record the run.")
    args = Args(**{f.name: getattr(cli, f.name) for f in dataclasses.fields(Args)})
    out = train(args)
    record_run(cli.csv, args, out["curve"], out["seconds"], argv)
    return args, out


# --8<-- [end:provenance]


def test_committed_learning_curve_reaches_minus_200_at_20000_steps(at_step=20_000):
    """The tau = 0.005 runs (5 seeds, provenance checked): the mean evaluation
    return at 20,000 steps (at_step) is at least -200, the goal set for Pendulum-v1."""
    curves, runs = load_runs(CURVE_CSV)
    assert len(curves) == 5
    assert all(r["settings"]["tau"] == 0.005 for r in runs.values())
    final = [rets[steps.index(at_step)] for steps, rets in curves.values()]
    assert sum(final) / len(final) >= -200, final


def test_provenance_names_the_command_that_made_each_curve():
    for path, tau in ((CURVE_CSV, 0.005), (TAU1_CSV, 1.0)):
        curves, runs = load_runs(path)
        for seed, run in runs.items():
            cfg, words = run["settings"], run["command"].split()
            flags = dict(zip(words[3::2], words[4::2]))
            assert words[:3] == ["python", "-m", "snippets.sac.pendulum_data"]
            assert int(flags["--seed"]) == seed and cfg["tau"] == tau
            assert int(flags["--total-steps"]) == cfg["total_steps"]
            assert float(flags.get("--tau", 0.005)) == tau
            assert flags["--csv"] == os.path.relpath(path, ROOT)
            assert run["evaluations"] == len(curves[seed][0])


def test_committed_runs_used_the_defaults_of_train_except_their_flags():
    """The pages describe the defaults of Args (batch 256, lr 1e-3, gamma 0.99, ...):
    every setting a committed run did not take from its command line is Args'
    default."""
    defaults = dataclasses.asdict(Args())
    for path in (CURVE_CSV, TAU1_CSV):
        for seed, run in load_runs(path)[1].items():
            given = set(run["command"].split()[3::2])
            assert set(run["settings"]) == set(defaults), (path.name, seed)
            for k, v in run["settings"].items():
                if "--" + k.replace("_", "-") not in given:
                    assert v == defaults[k], (path.name, seed, k, v, defaults[k])


# --8<-- [start:rerun]
import pytest

from snippets.sac.pendulum_data import CURVE_CSV, load_runs, machine


def late_mean(steps, returns, from_step=20_000):
    """Mean evaluation return from `from_step` on: the summary compared across
    machines (single evaluations are too chaotic to compare one by one)."""
    late = [r for s, r in zip(steps, returns) if s >= from_step]
    return sum(late) / len(late)


def compare_rerun(committed, rerun, exact, tolerance):
    """committed, rerun: (steps, returns). exact: same torch, CPU model and kernels
    as the recorded run, where training is deterministic: every evaluation must
    match to the CSV's 2 decimals. Otherwise compare late_mean within `tolerance`.
    -> error message, or None."""
    if committed[0] != rerun[0]:
        return f"evaluation steps differ: {committed[0]} vs {rerun[0]}"
    if exact:
        worst = max(abs(a - b) for a, b in zip(committed[1], rerun[1]))
        return None if worst <= 0.005 + 1e-9 else f"max difference {worst:.3f}"
    gap = late_mean(*rerun) - late_mean(*committed)
    return None if abs(gap) <= tolerance else f"late mean differs by {gap:.1f}"


@pytest.mark.experiment
@pytest.mark.timeout(1800)  # a 30,000-step training run: minutes, more when busy
def test_rerun_of_seed_1_reproduces_the_committed_curve():
    """Re-runs seed 1 of pendulum_sac.csv with its recorded settings (about 3-5 min).
    Same torch, CPU model and kernels: identical curve. Elsewhere floating point
    differs, the difference grows through training, and the re-run behaves like
    another seed: its late mean must lie within the spread (max - min) of the
    committed seeds' late means."""
    from snippets.sac.sac_pendulum import Args, train

    curves, runs = load_runs(CURVE_CSV)
    run = runs[1]
    out = train(Args(**run["settings"]), log=lambda *_: None)
    rerun = ([s for s, _ in out["curve"]], [r for _, r in out["curve"]])
    now = machine()
    exact = all(now[k] == run[k] for k in ("torch", "cpu", "cpu_capability"))
    lates = [late_mean(*c) for c in curves.values()]
    error = compare_rerun(curves[1], rerun, exact, max(lates) - min(lates))
    assert error is None, f"{error} (exact comparison: {exact}, {now})"


# --8<-- [end:rerun]


def test_compare_rerun_on_made_up_curves():
    steps = [10_000, 20_000, 30_000]
    committed = (steps, [-900.0, -150.0, -110.0])
    close, off = (steps, [-900.004, -150.0, -110.0]), (steps, [-900.02, -150.0, -110.0])
    assert compare_rerun(committed, close, True, 0) is None
    assert compare_rerun(committed, off, True, 99)  # exact: the tolerance is not used
    later = (steps, [-100.0, -170.0, -110.0])  # late mean -140 vs -130
    assert compare_rerun(committed, later, False, 10.1) is None
    assert compare_rerun(committed, later, False, 9.9)
    # The bounds are inclusive: half a unit of the CSV's last decimal (a re-run value
    # that rounds to the committed one), plus 1e-9 of float slack; a late-mean gap
    # equal to the tolerance.
    edge = (steps, [-900.005, -150.0, -110.0])
    assert compare_rerun(committed, edge, True, 0) is None
    assert compare_rerun(([1], [0.0]), ([1], [0.005 + 1e-9]), True, 0) is None
    assert compare_rerun(([1], [0.0]), ([1], [0.005 + 2e-9]), True, 0)
    assert compare_rerun(committed, later, False, 10.0) is None
    shorter = (steps[:2], [-900.0, -150.0])
    assert compare_rerun(committed, shorter, False, 1e9) == (
        f"evaluation steps differ: {steps} vs {steps[:2]}"
    )
    assert late_mean(*committed) == -130.0


def test_record_command_trains_then_appends_the_curve_and_the_provenance(tmp_path):
    """`python -m snippets.sac.pendulum_data [flags] --csv X.csv`, twice (two seeds, a
    short run): one CSV with both curves, one JSON with both runs; each run records
    the command, the Args it trained with (flags, the rest Args' defaults), the
    thread count, and its curve is train(args)'s, rounded to the CSV's 2 decimals."""
    csv_path = tmp_path / "runs.csv"
    short = ["--total-steps", "120", "--learning-starts", "100", "--batch-size", "32"]
    short += ["--eval-every", "60", "--eval-episodes", "1", "--csv", str(csv_path)]
    outs = {seed: main(["--seed", str(seed), *short]) for seed in (2, 3)}
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [(int(r["seed"]), int(r["steps"])) for r in rows] == [
        (2, 60),
        (2, 120),
        (3, 60),
        (3, 120),
    ]
    log = json.loads(csv_path.with_suffix(".json").read_text())
    assert [r["seed"] for r in log["runs"]] == [2, 3]
    for run, (seed, (args, out)) in zip(log["runs"], outs.items()):
        assert run["command"] == (
            f"python -m snippets.sac.pendulum_data --seed {seed} " + " ".join(short)
        )
        expected = Args(
            seed=seed,
            total_steps=120,
            learning_starts=100,
            batch_size=32,
            eval_every=60,
            eval_episodes=1,
        )
        assert args == expected and run["settings"] == dataclasses.asdict(expected)
        assert run["threads"] >= 1 and run["evaluations"] == 2
        mine = [float(r["eval_return"]) for r in rows if int(r["seed"]) == seed]
        assert mine == [round(r, 2) for _, r in out["curve"]]
        assert run["final_return"] == mine[-1]


def test_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path):
    import shutil

    def fingerprint_of(edit, module="critic"):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for path in TRAINING_CODE:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, root / path)
        target = root / f"snippets/sac/{module}.py"
        target.write_text(edit(target.read_text(encoding="utf-8")), encoding="utf-8")
        return code_fingerprint(root)

    same = fingerprint_of(lambda s: s)
    assert same == code_fingerprint()
    reworded = fingerprint_of(
        lambda s: s.replace(
            "# y = r + gamma (1 - done) V(s')", "# the target\n    # (reworded)"
        ).replace("Soft Bellman target, one sample", "Soft target, one draw")
    )
    assert reworded == same
    # The docstrings under the fields of Args (the command line's help) are text too;
    # a default is code.
    help_text = fingerprint_of(
        lambda s: s.replace('"""discount factor of', '"""the discount factor of'),
        module="sac_pendulum",
    )
    assert help_text == same
    default = fingerprint_of(
        lambda s: s.replace("gamma: float = 0.99", "gamma: float = 0.98"),
        module="sac_pendulum",
    )
    assert default != same
    changed = fingerprint_of(
        lambda s: s.replace(
            "reward + discount * (1.0 - done) * next_v", "reward + discount * next_v"
        )
    )
    assert changed != same
    # The statement right after a docstring is code too (only the docstring goes).
    first = fingerprint_of(
        lambda s: s.replace(
            "num_critics, batch = next_qs.shape", "num_critics, batch = next_qs.T.shape"
        )
    )
    assert first != same
    # A name of TRAINING_CODE that is gone is an error that names it.
    gone = r"critic.py: \['double_q_loss'\] not found"
    with pytest.raises(AssertionError, match=gone):
        fingerprint_of(lambda s: s.replace("def double_q_loss(", "def q_loss("))


def _made_up_runs(root, edit=lambda log: None, seeds=(1, 2)):
    """A small project under root: stand-ins for the TRAINING_CODE names, and a CSV of
    short runs with the JSON of their provenance, as record_run writes them; edit(log)
    may change the JSON first. -> the CSV's path."""
    for path, names in TRAINING_CODE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("".join(f"{n} = 0\n" for n in names), encoding="utf-8")
    settings = {"eval_every": 2, "total_steps": 5}  # evaluations at 2, 4, 5
    rows, runs = ["steps,seed,eval_return"], []
    for seed in seeds:
        rets = [-1500.0 + seed, -300.25, -150.5 - seed]
        rows += [f"{s},{seed},{r:.2f}" for s, r in zip((2, 4, 5), rets)]
        runs.append(
            {
                "seed": seed,
                "settings": {"seed": seed, **settings},
                "command": f"python -m snippets.sac.sac_pendulum --seed {seed}",
                "commit": "0" * 40,
                "tree_clean": True,
                "code_fingerprint": code_fingerprint(root),
                "final_return": round(rets[-1], 2),
            }
        )
    log = {"runs": runs}
    edit(log)
    csv_path = root / "runs.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    csv_path.with_suffix(".json").write_text(json.dumps(log), encoding="utf-8")
    return csv_path


def test_load_runs_rejects_a_csv_its_provenance_does_not_describe(tmp_path):
    curves, runs = load_runs(_made_up_runs(tmp_path / "ok"), root=tmp_path / "ok")
    assert curves == {
        1: ([2, 4, 5], [-1499.0, -300.25, -151.5]),
        2: ([2, 4, 5], [-1498.0, -300.25, -152.5]),
    }
    assert sorted(runs) == [1, 2] and runs[2]["settings"]["seed"] == 2
    assert not mutated(tmp_path / "ok")  # so the fingerprint is checked below

    def first(key, value):
        return lambda log: log["runs"][0].update({key: value})

    def settings(**kw):
        return lambda log: log["runs"][0]["settings"].update(kw)

    seed_1 = r"^runs\.csv seed 1(\n|$)"  # the message alone (pytest may add a line)
    record_1 = r"^\{'seed': 1, "  # the message is seed 1's provenance record
    broken = [
        ("a seed recorded twice", lambda log: log["runs"].append(log["runs"][0])),
        (
            r"seeds \[1, 2\] in the CSV, \[1\] in the JSON",
            lambda log: log["runs"].pop(),
        ),
        (seed_1, settings(seed=3)),  # the settings name another seed
        (seed_1, settings(total_steps=6)),  # other evaluation steps
        (  # a setting train() does not have
            r"^runs\.csv seed 1: \['lr_decay'\] are not fields of Args",
            settings(lr_decay=0.5),
        ),
        (seed_1, first("final_return", -151.49)),  # not the CSV's last value
        (record_1, first("tree_clean", False)),  # made from uncommitted changes
        (record_1, first("commit", "000")),  # not a full commit hash
        (record_1, first("commit", None)),
        (
            "runs.csv seed 1 was made by other training code",
            first("code_fingerprint", "0" * 64),
        ),
    ]
    for n, (message, edit) in enumerate(broken):
        root = tmp_path / str(n)
        with pytest.raises(AssertionError, match=message):
            load_runs(_made_up_runs(root, edit), root=root)


# sac_update's wiring, decided with the update as a parameter; the counterfactuals are
# the usual slips, made by calling the real sac_update with other arguments.
def sac_update_online_target(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: the Bellman target computed by the online critics (no target)."""
    from snippets.sac.sac_pendulum import sac_update

    return sac_update(batch, actor, critics, critics, log_alpha, opts, args)


def sac_update_done_as_mask(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: the target multiplied by d instead of (1 - d)."""
    from snippets.sac.sac_pendulum import sac_update

    obs, act, rew, next_obs, done = batch
    return sac_update(
        (obs, act, rew, next_obs, 1.0 - done),
        actor,
        critics,
        target_critics,
        log_alpha,
        opts,
        args,
    )


def sac_update_buffer_next_action(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: Q' evaluated at the buffer's action instead of a' ~ pi(.|s')."""
    import torch

    from snippets.sac.sac_pendulum import sac_update

    class AtBufferAction(torch.nn.Module):  # same parameters, other action
        def __init__(self):
            super().__init__()
            self.critics = target_critics

        def forward(self, obs, act):
            return self.critics(obs, batch[1])

    return sac_update(batch, actor, critics, AtBufferAction(), log_alpha, opts, args)


def sac_update_without_reparam(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: the actor's action is the same draw, detached (what sample() gives):
    the loss has the same value, but no gradient reaches the actor through a~."""
    import torch

    from snippets.sac.sac_pendulum import sac_update

    class Detached(torch.nn.Module):  # the actor's parameters, detached draws
        def __init__(self):
            super().__init__()
            self.actor = actor

        def forward(self, obs):
            dist = self.actor(obs)
            draw = dist.rsample
            dist.rsample = lambda *shape: draw(*shape).detach()
            return dist

    return sac_update(batch, Detached(), critics, target_critics, log_alpha, opts, args)


def sac_update_actor_on_next_states(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: the actor's step taken on the batch's next states s' instead of
    the buffer's states s (the actor's second call gets next_obs)."""
    import torch

    from snippets.sac.sac_pendulum import sac_update

    next_obs = batch[3]

    class OnNextStates(torch.nn.Module):  # the actor's parameters, other states
        def __init__(self):
            super().__init__()
            self.actor, self.calls = actor, 0

        def forward(self, obs):
            self.calls += 1  # call 1: a' at s' (the target); call 2: the actor step
            return self.actor(next_obs if self.calls == 2 else obs)

    return sac_update(
        batch, OnNextStates(), critics, target_critics, log_alpha, opts, args
    )


def sac_update_actor_before_critic_step(
    batch, actor, critics, target_critics, log_alpha, opts, args
):
    """The slip: the actor's loss uses the critics as they were before this update's
    critic step (the critic optimizer steps only after the actor's)."""
    from snippets.sac.sac_pendulum import sac_update

    real = opts["critic"]

    class StepLater:  # the critic's gradients are kept; its step comes last
        def zero_grad(self, set_to_none=True):
            real.zero_grad(set_to_none=set_to_none)

        def step(self):
            pass

    late = {**opts, "critic": StepLater()}
    logs = sac_update(batch, actor, critics, target_critics, log_alpha, late, args)
    real.step()
    return logs


def test_update_target_uses_target_critics_current_policy_and_mask(update=None):
    """One update against the formulas with the same random draws (Eqs. (2)-(3),
    (7), (9), arXiv:1812.05905): the critic's target is r + gamma (1 - d)
    (min_i Q'_i(s', a') - alpha log pi(a'|s')) with the TARGET critics Q' and
    a' ~ the CURRENT actor at s'; the actor's loss is alpha log pi(a~|s) -
    min_i Q_i(s, a~) on the buffer's states, a fresh rsample a~, the updated critics,
    and its gradient reaches the actor through a~ (the pathwise, reparameterised
    gradient). update: None is sac_update itself."""
    import copy
    import math

    import torch

    from snippets.sac.sac_pendulum import Actor, Args, Critics, sac_update

    update = sac_update if update is None else update
    torch.manual_seed(0)
    actor, critics = Actor(3, 1, hidden=16), Critics(3, 1, hidden=16)
    target = copy.deepcopy(critics).requires_grad_(False)
    with torch.no_grad():  # make the target critics differ from the online ones
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    log_alpha = torch.tensor(-0.5, requires_grad=True)
    n = 32
    batch = (
        torch.randn(n, 3),
        torch.rand(n, 1) * 2 - 1,
        torch.randn(n),
        torch.randn(n, 3),
        (torch.arange(n) % 4 == 0).float(),
    )
    obs, act, rew, next_obs, done = batch
    args = Args(gamma=0.9, tau=0.1, backup="min", target_entropy=-1.0)
    opts = {
        "actor": torch.optim.Adam(actor.parameters(), lr=1e-3),
        "critic": torch.optim.Adam(critics.parameters(), lr=1e-3),
        "alpha": torch.optim.Adam([log_alpha], lr=1e-3),
    }
    actor0, critics0, target0 = (copy.deepcopy(m) for m in (actor, critics, target))
    alpha, rng = math.exp(log_alpha.item()), torch.get_rng_state()
    logs = update(batch, actor, critics, target, log_alpha, opts, args)

    torch.set_rng_state(rng)  # replay the same draws by hand
    with torch.no_grad():
        d = actor0(next_obs)
        a2 = d.sample()
        soft_v = target0(next_obs, a2).min(0).values - alpha * d.log_prob(a2)
        y = rew + 0.9 * (1 - done) * soft_v
        critic_loss = ((critics0(obs, act) - y) ** 2).mean(1).sum()
    dist = actor0(obs)
    new = dist.rsample()
    actor_loss = (alpha * dist.log_prob(new) - critics(obs, new).min(0).values).mean()
    actor_grads = torch.autograd.grad(actor_loss, list(actor0.parameters()))
    # float32 sums of 32 terms: 1e-5 relative; the actor's loss: 1e-4 absolute
    assert abs(logs["critic_loss"] - critic_loss.item()) < 1e-5 * critic_loss.item()
    assert abs(logs["actor_loss"] - actor_loss.item()) < 1e-4
    # The gradient the update left on the actor is the pathwise one (float32: 1e-6
    # absolute, 1e-5 relative): a~ = rsample carries the gradient of Q into the actor.
    for p, g in zip(actor.parameters(), actor_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # once, where the process starts (provenance: threads)
    main()
