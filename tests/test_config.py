"""Config hygiene: every key the code reads is declared (with its default) in every config, no
declared key goes unread, and an override of an unknown key fails with a clear message.

How reads are found: a static scan of the code (`resshift_jax/`, `train.py`, `infer.py`, `bench/`,
`scripts/`) for attribute chains, `["key"]` subscripts and `.get("key", ...)` calls on config
objects, plus a recording run for the one reader that picks keys by name at run time
(`DegradationSpec.from_config`). A chain is a config read when its root is a config variable:
a name like `cfg`, `config`, `rc`, `*_cfg`, `cfg_*` (also as `self.cfg`), or a local name assigned
from such a chain in the same function (`tc = cfg.train`). A chain whose root is the whole config
(`cfg.train.lr`) must exist at exactly that path; a chain on a section passed in under a config
name (`cfg.model_channels` in the UNet, which receives `cfg.model`) must exist as the tail of
some declared path. Keys under free-form sections (`*_kwargs`) and inside list/tuple values are
not keys of the config and are not checked.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import ml_collections
import pytest

from resshift_jax.config import CONFIG_DIR, UnknownConfigKeyError, check_overrides, load_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
# bench_official_torch.py reads the official OmegaConf YAML config (`cfg.diffusion.params.sf`), not ours.
SOURCES = sorted({*ROOT.glob("resshift_jax/**/*.py"), ROOT / "train.py", ROOT / "infer.py",
                  *ROOT.glob("bench/*.py"), *ROOT.glob("scripts/*.py")} - {ROOT / "bench/bench_official_torch.py"})
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))
CONFIG_NAME = re.compile(r"^(cfg|config|rc|run_cfg|\w+_cfg|cfg_\w+)$")
CONFIG_METHODS = {n for n in dir(ml_collections.ConfigDict) if not n.startswith("__")}

# Declared keys that no code reads, each with the reason it stays.
UNREAD_ALLOWED = {
}


# ----------------------------------------------------------------------------- declared keys
def _flatten(node, prefix=()):
    """{path: is_section} for every key of a ConfigDict (sections included)."""
    out = {}
    for k, v in node.items():
        p = prefix + (k,)
        section = isinstance(v, ml_collections.ConfigDict)
        out[p] = section and not k.endswith("_kwargs")  # *_kwargs: free-form, a leaf here
        if out[p]:
            out.update(_flatten(v, p))
    return out


DECLARED = {name: _flatten(load_config(CONFIG_DIR / f"{name}.py")) for name in CONFIG_FILES}
UNION = {p: s for d in DECLARED.values() for p, s in d.items()}  # path -> is a section
TOP_LEVEL = {p[0] for d in DECLARED.values() for p in d}
SECTION_NAMES = {p[-1] for d in DECLARED.values() for p, section in d.items() if section}


# ----------------------------------------------------------------------------- code reads
def _chain(node):
    """(root name, [keys]) of `a.b["c"].get("d")`, or None when the expression is no such chain."""
    if isinstance(node, ast.Name):
        return node.id, []
    if isinstance(node, ast.Attribute):
        inner = _chain(node.value)
        return None if inner is None else (inner[0], inner[1] + [node.attr])
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        inner = _chain(node.value)
        return None if inner is None else (inner[0], inner[1] + [node.slice.value])
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        inner = _chain(node.func.value)
        return None if inner is None else (inner[0], inner[1] + [node.args[0].value])
    return None


def _config_ref(chain, bound):
    """('root'|'tail'|'weak', keys) when the chain is on a config, else None."""
    root, keys = chain
    if root == "self" and keys[:1] and CONFIG_NAME.match(keys[0]):
        root, keys = keys[0], keys[1:]
    if root in bound:
        anchor, base = bound[root]
        keys = base + keys
    elif CONFIG_NAME.match(root):
        anchor = "root" if keys[:1] and keys[0] in TOP_LEVEL else "tail"
    elif root in SECTION_NAMES:  # `train.get("num_workers")` on a copy of data.train: weak evidence,
        anchor, keys = "weak", [root] + keys  # enough to count a key as read, not to demand one
    else:
        return None
    for i, k in enumerate(keys):  # `cfg.train.get` / `cfg.to_dict()`: a method, not a key
        if k in CONFIG_METHODS and not any(p[-1] == k for d in DECLARED.values() for p in d):
            keys = keys[:i]
            break
    return anchor, keys  # keys == []: the config (section) itself, e.g. passed to a function


def _scope_nodes(node):
    """The nodes of one scope: nested functions are scopes of their own (they see its aliases)."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _scope_nodes(child)


def _callee(call):
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _params(fn):
    """Positional parameter names of a def as its callers count them (`self`/`cls` dropped)."""
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _is_section(anchor, keys):
    return not keys or any(UNION.get(p) for p in _resolve(anchor, keys, UNION))


def _scope_reads(scope, bound, where, passed):
    """Config accesses in one scope. `passed`: {function name: {parameter: ref}} from the call
    sites that pass a config section (`schedule.from_config(cfg.diffusion)` -> `d`)."""
    bound = dict(bound)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        bound.update(passed.get(scope.name, {}))
        if scope.name == "__init__" and hasattr(scope, "class_name"):
            bound.update(passed.get(scope.class_name, {}))
    nodes = list(_scope_nodes(scope))
    for node in nodes:  # aliases: `tc = cfg.train`, `for s in cfg.study.schemes`
        targets, value = [], None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.For):
            targets, value = [node.target], node.iter
        if isinstance(value, ast.IfExp):  # `sh = cfg.sharding if "sharding" in cfg else cfg`
            value = value.body
        chain = _chain(value) if value is not None else None
        ref = _config_ref(chain, bound) if chain else None
        for t in targets:
            if isinstance(t, ast.Name):
                if ref:
                    bound[t.id] = ref
                else:
                    bound.pop(t.id, None)
    reads, calls = [], []
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            sub_reads, sub_calls = _scope_reads(node, bound, where, passed)
            reads += sub_reads
            calls += sub_calls
            continue
        if isinstance(node, ast.Call) and _callee(node):
            args = [(i, a) for i, a in enumerate(node.args)] + [(k.arg, k.value) for k in node.keywords if k.arg]
            for slot, arg in args:
                chain = _chain(arg)
                ref = _config_ref(chain, bound) if chain else None
                if ref and _is_section(*ref):  # a leaf passed on is a value, no longer the config
                    calls.append((_callee(node), slot, ref))
        chain = _chain(node)
        ref = _config_ref(chain, bound) if chain else None
        if ref and ref[1]:
            kind = "write" if isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)) else "read"
            reads.append((f"{where}:{node.lineno}", kind, *ref))
    return reads, calls


def code_reads():
    """[(file:line, read|write, anchor, keys)] of every config access in SOURCES. Two passes:
    the first finds which functions receive config sections, the second reads them."""
    trees = {path.relative_to(ROOT): ast.parse(path.read_text(), str(path)) for path in SOURCES}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for fn in node.body:
                    fn.class_name = node.name
    defs = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(node.name, []).append(_params(node))
            if isinstance(node, ast.ClassDef):  # `Encoder(dd, ...)` calls Encoder.__init__
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                        defs.setdefault(node.name, []).append(_params(fn))
    passed = {}
    for _ in range(3):  # a section handed on through a few calls
        calls = [c for where, tree in trees.items() for c in _scope_reads(tree, {}, where, passed)[1]]
        passed = {}
        for name, slot, ref in calls:
            for params in defs.get(name, ()):
                param = params[slot] if isinstance(slot, int) and slot < len(params) else slot
                if param in params:
                    old = passed.setdefault(name, {}).setdefault(param, ref)
                    if old != ref:  # different sections under one name: match by the key's tail
                        passed[name][param] = ("tail", [])
    return [r for where, tree in trees.items() for r in _scope_reads(tree, {}, where, passed)[0]]


def recorded_reads():
    """Keys read by name at run time (`section[k]` over a dataclass's fields)."""
    from resshift_jax.data.params import DegradationSpec

    cfg = load_config("realsr_v3")
    where = {id(cfg): ()}
    where.update({id(v): p for p, v in _walk(cfg)})
    seen = set()
    original = ml_collections.ConfigDict.__getitem__

    def getitem(self, key):
        if id(self) in where:
            seen.add(where[id(self)] + (key,))
        return original(self, key)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ml_collections.ConfigDict, "__getitem__", getitem)
        DegradationSpec.from_config(cfg)
    return [("data/params.py:DegradationSpec.from_config", "read", "root", list(p)) for p in sorted(seen)]


def _walk(node, prefix=()):
    for k, v in node.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield prefix + (k,), v
            yield from _walk(v, prefix + (k,))


def _resolve(anchor, keys, declared):
    """The declared paths a read refers to in one config (empty: undeclared), and whether the
    read is `complete` (stops at a declared leaf or section, not beyond a section)."""
    keys = tuple(keys)
    for n in range(len(keys), 0, -1):  # longest prefix that is declared
        head = keys[:n]
        if anchor == "root":
            hits = [head] if head in declared else []
        else:
            hits = [p for p in declared if p[-n:] == head]
        if hits:
            if n < len(keys):  # reading below a leaf (a list of dicts, *_kwargs) is not a key
                hits = [p for p in hits if not declared[p]]
            return hits
    return []


READS = code_reads() + recorded_reads()


def _applies(anchor, keys, declared):
    """`study.*` is read only by the study runner, whose configs have a `study` section."""
    matches = _resolve(anchor, keys, UNION)
    only_study = bool(matches) and all(p[0] == "study" for p in matches)
    return not (only_study and ("study",) not in declared)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_key_the_code_reads_is_declared(name):
    """Reads and writes: a write to an undeclared key would add it only on an unlocked config."""
    declared = DECLARED[name]
    missing = sorted({f"{'.'.join(keys)} ({where})" for where, _, anchor, keys in READS
                      if anchor != "weak" and _applies(anchor, keys, declared) and not _resolve(anchor, keys, declared)})
    assert not missing, f"configs/{name}.py lacks keys the code reads (declare them in resshift_jax/config.py " \
                        "with their default):\n  " + "\n  ".join(missing)


def test_no_declared_key_is_unread():
    read = set()
    for _, kind, anchor, keys in READS:
        if kind == "read":
            for p in _resolve(anchor, keys, UNION):
                read.update(p[:i] for i in range(1, len(p) + 1))
    unread = sorted({".".join(p) for p, section in UNION.items()
                     if not section and p not in read and ".".join(p) not in UNREAD_ALLOWED})
    assert not unread, ("declared keys that no code reads (an override of them would do nothing): remove them, "
                        "or list them in UNREAD_ALLOWED with the reason:\n  " + "\n  ".join(unread))


# ----------------------------------------------------------------------------- overrides
def _argv(*overrides, config="tiny"):
    return ["prog", f"--config={CONFIG_DIR / f'{config}.py'}", *overrides]


@pytest.mark.parametrize("override, message", [
    ("--config.train.nope=1", r"no key 'train\.nope' \(train has: accum_steps, batch"),
    ("--config.trian.lr=1", r"no key 'trian\.lr'; did you mean train\?"),
    ("--config.train.lr.x=1", r"train\.lr is a value, not a section"),
    ("--noconfig.train.use_ampp", r"no key 'train\.use_ampp'; did you mean use_amp\?"),
])
def test_an_override_of_an_undeclared_key_fails_with_a_clear_message(override, message):
    with pytest.raises(UnknownConfigKeyError, match=message):
        check_overrides(_argv(override))


def test_declared_overrides_pass_the_check():
    check_overrides(_argv("--config.train.lr=1e-4", "--config.data.train.tfds_split=validation",
                          "--noconfig.train.use_amp", "--config.degradation.use_queue=false"))
    check_overrides(["prog", "--config", str(CONFIG_DIR / "study_wt.py"), "--config.study.only=kl"])


def test_study_command_line_locks_its_config():
    """The study runner's own flags (its __main__): an unknown key stops it before any work."""
    res = subprocess.run([sys.executable, "-m", "resshift_jax.study", f"--config={CONFIG_DIR / 'study_wt.py'}",
                          "--workdir=unused", "--config.study.nope=1"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode != 0 and "nope" in res.stderr
    assert not (ROOT / "unused").exists()
