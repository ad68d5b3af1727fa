"""Issue 30, "The CLI": every argument, attack spec, config and data set is checked
before anything is trained, loaded or written (one line, exit 2, an empty run
directory); a run says what it will train before it trains; `train` without a config
is its help; a misspelt kind gets the registry's suggestion."""
import json

import pytest

from cli_helpers import run, spheres  # tests/cli/cli_helpers.py

SPHERES = spheres(4)
_run = run


def _nothing_written(root):
    return not root.exists() or not any(root.rglob("*"))


@pytest.mark.parametrize("args,msg", [
    (["evaluate", "--experiment", "demo", "--attacks", "nope"], "unknown attack 'nope'"),
    (["evaluate", "--experiment", "demo", "--eps", "0.1,abc"], "eps 'abc' is not a number"),
    (["evaluate", "--experiment", "demo", "--eps", "-0.1"], "eps must be finite and >= 0"),
    (["evaluate", "--experiment", "demo", "--norm", "l3"], "--norm must be one of linf, l2, got 'l3'"),
    (["evaluate", "--experiment", "demo", "--n", "0"], "--n must be a positive number of points"),
    (["evaluate", "--experiment", "demo", "--batch-size", "0"], "--batch-size must be positive"),
    (["evaluate", "--experiment", "demo", "--dataset", "mnsit"], "unknown dataset 'mnsit'; did you mean 'mnist'"),
    (["evaluate", "--experiment", "demo", "--profile", "cpu"], "has no profile 'cpu'"),
    (["evaluate", "--experiment", "demo", "--suite", "strong"], "unknown --suite 'strong'"),
    (["evaluate", "--experiment", "demo", "--smoke", "--db", "x.sqlite"], "do not give a results database"),
    (["reproduce", "demo", "--smoke", "--db", "x.sqlite"], "do not give a results database"),
    (["train", *SPHERES, 'objective="nope"'], "unknown defense 'nope'"),
    (["train", *SPHERES, "model_kwargs.widht=8"], "unknown argument 'widht'; did you mean 'width'"),
    (["train", *SPHERES, "batch_size=0"], "batch_size must be > 0"),
    (["train", *SPHERES, "optimizer=\"adam\"", "momentum=0.5"],
     "momentum=0.5 does nothing with optimizer 'adam' (only optimizer 'sgd' reads it)"),
    (["train", *SPHERES, "lr_knots=[0.0,1.0]", "lr_factors=[1.0,0.0]"], "does nothing with schedule 'step'"),
    (["evaluate", "--experiment", "demo", "--attacks", "pgd:loss=bogus"], "unknown loss 'bogus'"),
    (["evaluate", "--experiment", "demo", "--eps", "0.3,1.5"], "linf eps 1.5 > 1"),
    (["reproduce", "demo", "--plan", "--device", "cpu"], "--device would do nothing"),
    (["reproduce", "demo", "--plan", "--replace", "--db", "x.sqlite"], "--db, --replace would do nothing"),
    (["reproduce", "demo", "--plan", "--smoke", "--db", "x.sqlite"], "do not give a results database"),
    # usage errors (click's): one line too, naming the command and its --help
    (["reproduce", "demo", "--bogus"], "reproduce: No such option: --bogus (see "),
    (["reproduce", "demo", "--seed", "abc"], "Invalid value for '--seed'"),
    (["evaluate", "--experiment", "demo", "--n", "2.5"], "Invalid value for '--n'"),
    (["bogus"], "No such command 'bogus'"),
])
def test_bad_arguments_fail_before_anything_runs(tmp_path, args, msg):
    root = tmp_path / "runs"
    out = _run(*args, "--root", root)
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: ") and msg in out.output, out.output
    assert out.output.count("\n") == 1 and "Traceback" not in out.output
    assert _nothing_written(root), sorted(root.rglob("*"))


def test_a_run_directory_or_checkpoint_of_the_wrong_kind_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (["train", *SPHERES], ["reproduce", "demo", "--smoke"], ["evaluate", "--experiment", "demo"]):
        out = _run(*args, "--root", afile / "sub")
        assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
        assert f"{afile} is a file, not a directory" in out.output, out.output
    assert afile.read_text() == "x"
    root = tmp_path / "runs"
    for ckpt, msg in ((tmp_path, "is a directory"), (tmp_path / "none.pt", "no such file")):
        out = _run("evaluate", "--checkpoint", ckpt, "--dataset", "mnist", "--root", root)
        assert out.exit_code == 2 and msg in out.output and out.output.count("\n") == 1, out.output
    assert not root.exists()   # nothing written, not even the results database
    out = _run("--data-dir", afile, "list", "models")
    assert out.exit_code == 2 and "a file, not a directory" in out.output


def test_unreadable_evaluation_data_fails_before_training(tmp_path, monkeypatch):
    """The data an evaluation reads is loaded before any model is trained: no CIFAR-10 here
    is one line, and no run directory is written."""
    monkeypatch.delenv("ADVGEOM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "runs"
    out = _run("evaluate", "--experiment", "hyper-cifar", "--profile", "paper", "--attacks", "fgsm",
               "--eps", "8/255", "--root", root, "--no-progress")
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: cifar10") and out.output.count("\n") == 1, out.output
    assert "--download" in out.output  # the way to get it, in the CLI's words
    assert not (root / "train").exists()


def test_train_says_what_it_will_train_and_how_long_it_took_last_time(tmp_path):
    root = tmp_path / "runs"
    first = _run("train", *SPHERES, "--root", root, "--no-progress", "--device", "cpu")
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0] == "device: cpu"  # an explicit device is printed as given
    assert lines[1].startswith("will train relu_mlp [") and lines[1].endswith(": 4 steps (no earlier run of it recorded)")
    assert lines[2].startswith("trained: relu_mlp")
    # code changed since: fit sets the old final weights aside under final.code-<version>; the
    # next run says it trains again, and how long the set-aside run took for how many steps
    run = next((root / "train").iterdir())
    record = json.loads((run / "final.json").read_text())
    seconds = record["history"][-1]["seconds"]
    record["code"] = "0ld"
    (run / "final.code-0ld.json").write_text(json.dumps(record))
    (run / "final.json").unlink()
    (run / "final.safetensors").unlink()
    (run / "last.json").unlink(missing_ok=True)
    (run / "last.safetensors").unlink(missing_ok=True)
    again = _run("train", *SPHERES, "--root", root, "--no-progress")
    assert again.exit_code == 0, again.output
    assert f": 4 steps (last run: {round(seconds)} s for 4 steps)" in again.output.splitlines()[1]


def test_evaluate_an_experiment_announces_its_training_first(tmp_path):
    out = _run("evaluate", "--experiment", "demo", "--smoke", "--attacks", "fgsm", "--eps", "0.1",
               "--root", tmp_path / "runs", "--no-progress", "--no-strict")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    start = lines.index("device: cpu (auto)")
    assert lines[start + 1].startswith("will train hyper_mnist_cnn [") and lines[start + 1].endswith(
        ": 1 step (no earlier run of it recorded)")
    rerun = _run("evaluate", "--experiment", "demo", "--smoke", "--attacks", "fgsm", "--eps", "0.1",
                 "--root", tmp_path / "runs", "--no-progress", "--no-strict")
    assert any(line.startswith("cached: hyper_mnist_cnn [") and "(trained in " in line
               for line in rerun.output.splitlines())


def test_train_without_a_config_is_its_help(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _run("train")
    assert out.exit_code == 0, out.output
    assert "Usage" in out.output and "--config" in out.output
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.parametrize("typo,hint", [("attack", "did you mean 'attacks'?"),
                                       ("experimnts", "did you mean 'experiments'?")])
def test_list_suggests_the_kind(typo, hint):
    out = _run("list", typo)
    assert out.exit_code == 2
    assert out.output.strip() == (f"error: unknown kind {typo!r}; {hint} "
                                  "(kinds: datasets, models, attacks, defenses, experiments)")


def test_list_without_a_close_kind_names_the_kinds():
    out = _run("list", "zzz")
    assert out.exit_code == 2
    assert out.output.strip() == "error: unknown kind 'zzz' (kinds: datasets, models, attacks, defenses, experiments)"


def test_evaluate_a_released_state_dict(tmp_path):
    """A plain .pth of a released model (here a file shaped like Wong et al.'s MNIST net)
    is evaluated with --dataset; without it, one line and exit 2 before anything runs."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    path = tmp_path / "released.pth"
    torch.save(net.state_dict(), path)
    root = tmp_path / "runs"
    out = _run("evaluate", "--checkpoint", path, "--attacks", "fgsm", "--root", root)
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "names no data set: give --dataset" in out.output
    assert _nothing_written(root)
    out = _run("evaluate", "--checkpoint", path, "--dataset", "mnist", "--attacks", "fgsm", "--eps", "0.1",
               "--smoke", "--root", root, "--no-progress")
    assert out.exit_code == 0, out.output
    assert "fgsm" in out.output and "worst_case" in out.output
    rows = _run("results", "--long", "--format", "json", "--db", root / "smoke" / "results.sqlite")
    got = json.loads(rows.output)
    assert {r["model"] for r in got} == {"released"} and {r["defense"] for r in got} == {"released"}


def test_warnings_print_as_one_line_each(monkeypatch):
    import warnings

    import advgeom.registry

    def names(kind):
        warnings.warn("first line\nsecond line", UserWarning)
        return []

    monkeypatch.setattr(advgeom.registry, "names", names)
    out = _run("list", "models")
    assert out.exit_code == 0 and out.output == "warning: first line second line\n", out.output


@pytest.mark.parametrize("record, msg", [({"config": "x"}, "holds no training config"),
                                         ({"steps": 3}, "lacks a 'config' entry")])
def test_a_checkpoint_without_a_training_config_is_one_line(tmp_path, record, msg):
    import torch

    from advgeom.train.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "a.safetensors", {"w": torch.zeros(2)}, record)
    out = _run("evaluate", "--checkpoint", path, "--attacks", "fgsm", "--n", "5", "--root", tmp_path / "runs")
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert msg in out.output and "Traceback" not in out.output
