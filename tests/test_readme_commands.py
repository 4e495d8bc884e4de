"""Every command the README documents still works: its entry point exists and its argument parser
accepts exactly the flags the README shows.

Commands are found by pattern, not listed: each line of a fenced ```bash block and each inline
code span that starts with `python`/`.venv/bin/python` (`-m MODULE` or `SCRIPT.py`), with a
repository script (`infer.py ...`, `bench/x.py ...`, `./run.sh ...`), or with a console entry
point from pyproject.toml (`resshift-...`), and has arguments. Each is run in-process up to its
argument parsing and stopped there (argparse's `parse_args` and absl's `app.run` are intercepted),
so nothing heavy runs; config overrides (`--config.a.b=...`) are checked against the config, and
config files named in a command must exist. The real runs of these commands are other tests'
work: COVERED_BY names them, and this file checks that each named test exists and runs the
entry point.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import runpy
import shlex
import subprocess
import sys
import tomllib

import pytest
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# entry point -> the test that really runs it (these runs take minutes, so they are not repeated
# here), or None with the reason nothing runs it in the suite.
COVERED_BY = {
    "infer.py": "tests/test_infer_cli.py",
    "app.py": "tests/test_app.py",  # demo.sh's server, driven in headless Chromium
    "train.py": "tests/test_train_loop.py",
    "resshift_jax.study": "tests/test_study.py",
    "resshift_jax.evaluate": "tests/test_evaluate.py",
    "resshift_jax.train.compile_check": "tests/test_compile_check.py",
    "resshift_jax.weights": "tests/test_weights.py",  # test_convert_cli
    "resshift_jax.data.pack": "tests/test_data_sources.py",  # pack.pack / pack.pack_tfds, the CLI's body
    "scripts/compact_report.py": "tests/test_compact_report.py",
    "scripts/average_predictions.py": "tests/test_average_predictions.py",
    "scripts/make_realsr_pairs.py": None,  # compiles the device degradation (~20 s): the trainer's data path, tested in test_train_input
    "scripts/sweep_compact.py": None,  # trains 6 arms with train.py (~20 min): train.py is covered; parse only
    "bench/bench_infer.py": None,  # a benchmark (timed runs): parse only
    "scripts/show_degradations.py": None,  # its device degradation step compiles for ~30 s: parse only
    "bench/bench_data.py": None,  # a benchmark (timed runs): parse only
    "bench/bench_official_torch.py": None,  # needs PyTorch and the official repository
    "bench/bench_folder.py": None,  # a benchmark (timed runs) of cli_infer.run, which test_infer_cli runs: parse only
    "bench/bench_first_image.py": None,  # two infer.py processes per model (minutes): test_compile_cache runs the pair
    "bench/bench_buckets.py": None,  # a benchmark over RealSet65 (minutes): test_tiling covers the buckets; parse only
}


def _code_spans(text):
    """Fenced ```bash lines (continuations joined) and inline `code` spans outside fences."""
    spans = []
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
    for lang, body in fence.findall(text):
        if lang in ("bash", "sh", "shell", "console"):  # (an unmarked fence is a layout or output)
            for line in body.replace("\\\n", " ").splitlines():
                spans.append(line.split(" #")[0] if not line.lstrip().startswith("#") else "")
    for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", fence.sub("", text)):
        spans.append(" ".join(span.split()))
    return [s.strip() for s in spans if s.strip()]


def _command(span):
    """(kind, target, args) for a documented command, or None when the span is not one."""
    try:
        tokens = shlex.split(span)
    except ValueError:
        return None
    tokens = [t for t in tokens if t not in ("...", "[", "]")]
    tokens = [t.strip("[]") if t.startswith("[") or t.endswith("]") else t for t in tokens]
    if not tokens:
        return None
    head, args = tokens[0], tokens[1:]
    if re.fullmatch(r"(\S*/)?python3?(\.\d+)?", head):
        if args[:1] == ["-m"] and len(args) > 1:  # this project's modules only (not `-m venv`, `-m pip`)
            return ("module", args[1], args[2:]) if args[1].startswith("resshift_jax") else None
        if args and args[0].endswith(".py"):
            return "script", args[0], args[1:]
        return None
    if head in SCRIPTS:  # a bare name in prose (`resshift-infer`) names the command, it is no run
        return ("entry", head, args) if args else None
    if head.endswith((".py", ".sh")) and (ROOT / head).is_file() and (args or head.startswith("./")):
        return ("script" if head.endswith(".py") else "shell"), head.removeprefix("./"), args
    return None


COMMANDS = sorted({(c[0], c[1], tuple(c[2])) for c in map(_command, _code_spans(README)) if c})


def _id(cmd):
    return " ".join([cmd[1], *cmd[2]])[:80]


class _Parsed(Exception):
    """Raised by the intercepted parsers once the command line has been parsed."""


def _parse_only(kind, target, args, monkeypatch):
    """Run the command's entry point up to its argument parsing; return what it parsed."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, a=None, namespace=None):
        raise _Parsed(original(self, a, namespace))

    def absl_run(main, argv=None, flags_parser=app.parse_flags_with_usage):
        flags_parser(list(sys.argv if argv is None else argv))
        raise _Parsed(flags.FLAGS)

    before, was_parsed = set(flags.FLAGS), flags.FLAGS.is_parsed()
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(app, "run", absl_run)
    monkeypatch.setattr(sys, "argv", [target, *args])
    monkeypatch.chdir(ROOT)
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        elif kind == "entry":
            module, func = SCRIPTS[target].split(":")
            getattr(__import__(module, fromlist=[func]), func)()
        else:
            runpy.run_path(str(ROOT / target), run_name="__main__")
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as e:
        pytest.fail(f"`{target} {' '.join(args)}` (README) exited {e.code} while parsing its arguments")
    finally:
        for name in set(flags.FLAGS) - before:  # the absl CLIs define their flags on the global FLAGS
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
        if was_parsed:  # leave absl's global state as the rest of the session had it
            flags.FLAGS.mark_as_parsed()
    pytest.fail(f"`{target}` returned without parsing arguments")


def test_the_readme_documents_the_main_commands():
    """The pattern finds the commands (a README rewrite that hid them would make this file vacuous)."""
    targets = {c[1] for c in COMMANDS}
    for expected in ("infer.py", "train.py", "resshift_jax.evaluate", "resshift_jax.study", "run.sh", "test.sh",
                     "demo.sh"):
        assert expected in targets, f"no README command runs {expected}: found {sorted(targets)}"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c[0] != "shell"], ids=_id)
def test_readme_command_parses(cmd, monkeypatch):
    kind, target, args = cmd
    for arg in args:  # config files named on a command line exist
        for path in re.findall(r"configs/\w+\.py", arg):
            assert (ROOT / path).is_file(), f"README: {target} names {path}, which does not exist"
    parsed = _parse_only(kind, target, list(args), monkeypatch)
    assert parsed is not None


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c[0] == "shell"], ids=_id)
def test_readme_shell_command(cmd, monkeypatch):
    """run.sh passes its arguments to infer.py, demo.sh to app.py, test.sh to pytest; other scripts
    take a mode word."""
    _, target, args = cmd
    if target == "run.sh":  # no arguments: its own default command line (`set -- ...`)
        default = re.search(r"^\s*set -- (.+)$", (ROOT / "run.sh").read_text(), re.M)
        _parse_only("script", "infer.py", list(args) or shlex.split(default.group(1)), monkeypatch)
    elif target == "demo.sh":
        _parse_only("script", "app.py", list(args), monkeypatch)
    elif target == "test.sh":
        res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              "tests/test_schedule.py", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode in (0, 5), f"pytest rejects `./test.sh {' '.join(args)}`:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
    else:
        text = (ROOT / target).read_text()
        for word in (w for a in args for w in a.split("|")):
            assert re.search(rf"\b{re.escape(word)}\b", text), f"README: {target} has no mode {word!r}"


def _entry_key(cmd):
    kind, target, _ = cmd
    if kind == "entry":
        return SCRIPTS[target].split(":")[0]
    if kind == "shell":
        return {"run.sh": "infer.py", "demo.sh": "app.py"}.get(target)
    return {"resshift_jax.cli_infer": "infer.py"}.get(target, target)


def test_every_documented_entry_point_has_a_real_run_or_a_reason():
    for cmd in COMMANDS:
        key = _entry_key(cmd)
        if key is None:
            continue
        assert key in COVERED_BY, f"README command `{_id(cmd)}`: add it to COVERED_BY (the test that runs it, or None)"
        test = COVERED_BY[key]
        if test is not None:
            text = (ROOT / test).read_text()
            name = key.removesuffix(".py").split(".")[-1]
            assert name in text, f"{test} is said to run {key} but never names {name!r}"
