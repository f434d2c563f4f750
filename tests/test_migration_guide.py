"""migration_guide.md works as written, and its reference parts agree with the code.

The blocks of the guide run in order in an empty folder, sharing one namespace:

- ```python blocks are executed; a block preceded by ``<!-- file: NAME -->`` is written to NAME
  instead and imported (a ``test_*.py`` file: its test functions are called, with the
  ``fxai_parity`` and ``tmp_path`` fixtures), as the guide tells the reader to;
- ```yaml blocks preceded by ``<!-- file: NAME -->`` are written to NAME;
- ```bash blocks are run command by command through ``fxai_compat.cli.main`` (the console script's
  entry point) when they start with ``fxai-compat``, and must exit 0; a ```text block preceded by
  ``<!-- output-of: COMMAND -->`` must be an excerpt of that command's output (lines with a file path
  aside, which depend on where the package is installed);
- a block preceded by ``<!-- not-run -->`` is skipped, for the reason given in ``NOT_RUN`` below
  (every such block must have one, and every bash block must either run or be listed).
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fxai_compat.audit import generated_block, render_departures_markdown, render_event_map_markdown
from legacy_callbacks import TRAINER_SURFACE

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "migration_guide.md"

#: First line of each block marked <!-- not-run --> -> why it is not run here.
NOT_RUN = {
    "fxai-compat parity --config run.yaml --callbacks all --out runs/parity":
        "trace and port parity of four callbacks is twelve training runs (~30 s on a CI core); "
        "fxai-compat parity has its own tests, and test_my_callbacks.py below runs the same checks",
    "torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=head-node:29500 train_ddp.py":
        "needs several GPUs / nodes / a SLURM cluster; DDP runs are tested on CPU by "
        "tests/test_native_ddp.py and tests/test_lightning_host.py",
    "fxai-compat tune --config run.yaml --study fx --n-trials 200 --storage postgresql://fx:secret@db-host/optuna":
        "needs a PostgreSQL server; the sqlite tune block above runs",
}

#: Files written by the guide that are imported as modules (removed from sys.modules afterwards).
GUIDE_MODULES = ("my_callbacks", "test_my_callbacks", "train_ddp", "my_module")


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marker: str | None  # the HTML comment right before the fence, if any

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")


def guide_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^```(\w+)\s*$", lines[i])
        if not match:
            i += 1
            continue
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = previous if previous.startswith("<!--") else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        blocks.append(Block(match.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1, marker))
        i = end + 1
    return blocks


def marker_value(block: Block, name: str) -> str | None:
    if block.marker is None:
        return None
    match = re.fullmatch(rf"<!--\s*{name}:\s*(.+?)\s*-->", block.marker)
    return match.group(1) if match else None


def not_run(block: Block) -> bool:
    return block.marker is not None and re.fullmatch(r"<!--\s*not-run\s*-->", block.marker) is not None


@pytest.fixture
def guide_sandbox(tmp_path, monkeypatch):
    """An empty working folder on sys.path; the port registry and imported guide modules restored after."""
    from fxai_compat.toggle import REGISTRY

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("FXAI_CALLBACK_IMPL", raising=False)
    registry = dict(REGISTRY)
    yield tmp_path
    REGISTRY.clear()
    REGISTRY.update(registry)
    for name in GUIDE_MODULES:
        sys.modules.pop(name, None)


def run_guide_test_file(module_name: str, workdir: Path) -> list[str]:
    """Call the test functions of a guide test file with the fixtures it names (as pytest would)."""
    from fxai_compat.parity.plugin import ParityFixture

    module = importlib.import_module(module_name)
    ran = []
    for name, func in vars(module).items():
        if not (name.startswith("test_") and inspect.isfunction(func)):
            continue
        folder = workdir / name
        folder.mkdir(parents=True)
        fixtures = {"fxai_parity": ParityFixture(folder), "tmp_path": folder}
        params = inspect.signature(func).parameters
        unknown = [p for p in params if p not in fixtures]
        assert not unknown, f"{module_name}.{name} asks for fixtures this test does not provide: {unknown}"
        func(**{p: fixtures[p] for p in params})
        ran.append(name)
    return ran


def run_cli_line(line: str, capsys) -> str:
    from fxai_compat.cli import main

    argv = shlex.split(line, comments=True)
    assert argv and argv[0] == "fxai-compat", line
    capsys.readouterr()
    code = main(argv[1:])
    captured = capsys.readouterr()
    assert code == 0, f"`{line}` exited with {code}:\n{captured.out[-3000:]}\n{captured.err[-3000:]}"
    return captured.out


def test_every_block_of_the_guide_runs_in_order(guide_sandbox, capsys):
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "migration_guide"}
    outputs: dict[str, str] = {}
    skipped, ran_tests, executed = [], [], 0
    for index, block in enumerate(blocks):
        where = f"migration_guide.md line {block.line}"
        if not_run(block):
            assert block.first_line in NOT_RUN, f"{where}: a <!-- not-run --> block needs a reason in NOT_RUN"
            skipped.append(block.first_line)
            continue
        file_name = marker_value(block, "file")
        if file_name is not None:
            (guide_sandbox / file_name).write_text(block.code, encoding="utf-8")
            if block.lang == "python":
                module = Path(file_name).stem
                if module.startswith("test_"):
                    ran_tests += run_guide_test_file(module, guide_sandbox / "pytest")
                else:
                    importlib.import_module(module)
                executed += 1
            continue
        if block.lang == "python":
            exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - the guide's own examples
            executed += 1
        elif block.lang == "bash":
            assert block.first_line.startswith("fxai-compat"), (
                f"{where}: a bash block that does not start with fxai-compat must be marked <!-- not-run -->")
            for line in block.code.splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    outputs[shlex.join(shlex.split(line, comments=True))] = run_cli_line(line, capsys)
            executed += 1
        elif block.lang == "text" and marker_value(block, "output-of") is not None:
            command = shlex.join(shlex.split(marker_value(block, "output-of")))
            assert command in outputs, f"{where}: output of `{command}`, which no earlier block ran"
            actual = {ln.rstrip() for ln in outputs[command].splitlines()}
            for line in block.code.splitlines():
                if line.strip() and ".py:" not in line:
                    assert line.rstrip() in actual, f"{where}: {line!r} is not in the output of `{command}`"
    assert set(skipped) == set(NOT_RUN), "NOT_RUN lists a block the guide no longer has"
    assert ran_tests == ["test_best_episode_sees_the_same_events", "test_best_episode_port_agrees"]
    assert executed >= 15
    # What the blocks left behind: the runs the guide describes really happened.
    assert (guide_sandbox / "runs" / "shadow-metrics" / "shadow" / "mismatches.jsonl").is_file()
    assert (guide_sandbox / "runs" / "native-metrics" / "checkpoints" / "cycle-0001.ckpt").is_file()
    assert (guide_sandbox / "runs" / "optuna.db").is_file()
    assert "best_episode" in namespace["built"].impls


def test_event_map_table_is_generated_from_event_map():
    text = GUIDE.read_text(encoding="utf-8")
    hint = ("regenerate it: python -c \"from fxai_compat.audit import sync_guide; sync_guide('migration_guide.md')\"")
    assert generated_block(text, "event-map") == render_event_map_markdown(), hint
    assert generated_block(text, "departures") == render_departures_markdown(), hint


def test_departures_name_every_row_that_differs_from_the_original_guide():
    from fxai_compat.events import EVENT_MAP

    departures = generated_block(GUIDE.read_text(encoding="utf-8"), "departures")
    for route in EVENT_MAP:
        assert f"`{route.event}`" in departures
        if route.departure:
            assert route.departure[1:] in departures, route.event


def test_links_inside_the_guide_lead_to_its_headings():
    text = GUIDE.read_text(encoding="utf-8")
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and sorted(set(links) - slugs) == []


def test_trainer_surface_table_is_the_contracts():
    lines = GUIDE.read_text(encoding="utf-8").split("<!-- trainer-surface -->", 1)[1].strip().splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(re.match(r"\|\s*`trainer\.(\w+)", line).group(1))
    assert tuple(rows) == TRAINER_SURFACE


def test_the_builtin_pairs_table_matches_the_registry():
    from fxai_compat.toggle import BUILTIN_PORTS, REGISTRY

    text = GUIDE.read_text(encoding="utf-8")
    for name in BUILTIN_PORTS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        pair = REGISTRY[name]
        assert f"`{pair.legacy.__name__}`" in row
        for observable in pair.observables:
            assert f"`{observable.name}`" in row, (name, observable.name)


#: Fragments of the FAQ's messages -> the file that raises them. Each must be in the guide and in the code
#: (whitespace and case aside): a reworded message shows up here.
FAQ_MESSAGES = {
    "has no default and is not offered by": "legacy_callbacks/callback_manager.py",
    "is not a legacy callback: it defines none of the 16 events": "legacy_callbacks/callback_manager.py",
    "Define at least one of them, or subclass legacy_callbacks.BaseCallback.": "legacy_callbacks/callback_manager.py",
    "raised in legacy callback": "legacy_callbacks/callback_manager.py",
    "names unknown Lightning hook": "fxai_compat/adapter/core.py",
    "supported hooks are: ": "fxai_compat/adapter/core.py",
    "names unknown RL event": "fxai_compat/adapter/core.py",
    "mapping names unknown legacy event(s)": "fxai_compat/adapter/core.py",
    "is already a Lightning callback; pass it to the": "fxai_compat/adapter/core.py",
    "callback that runs on rank 0 only (ranks='zero') of": "fxai_compat/adapter/trainer_view.py",
    "Under DDP, load checkpoints in on_training_start (every rank": "fxai_compat/adapter/trainer_view.py",
    "in the callbacks section": "fxai_compat/toggle.py",
    "choose one of": "fxai_compat/toggle.py",
    "which the config does not have": "fxai_compat/toggle.py",
    "has no native port yet": "fxai_compat/toggle.py",
    "implementation does not accept option(s)": "fxai_compat/toggle.py",
    "is already registered; pass replace=True to override it.": "fxai_compat/toggle.py",
    "which was not logged this cycle": "fxai_compat/callbacks/base.py",
    "is logged as": "fxai_compat/callbacks/base.py",
    "which is not in the metrics": "legacy_callbacks/checkpoint.py",
    "it holds Python objects that weights_only loading does not": "fxai_compat/checkpoints.py",
    "is a bare model state dict (as written by torch.save(model.state_dict()))": "fxai_compat/checkpoints.py",
    "is truncated or not a PyTorch checkpoint": "fxai_compat/checkpoints.py",
    "is not an fxai training checkpoint (top-level keys:": "fxai_compat/checkpoints.py",
    "A PPO cycle runs many backward passes in one training_step": "fxai_compat/lightning_host.py",
    "DistributedDataParallel wrapper of DDPStrategy refuses": "fxai_compat/lightning_host.py",
    "checkpoint events need": "fxai_compat/lightning_host.py",
    "native port disagrees with its legacy control at cycle": "fxai_compat/shadow.py",
    "got trial=None on global rank 0, which reports to Optuna": "fxai_compat/callbacks/optuna.py",
    "Cannot open Optuna storage": "fxai_compat/studies.py",
}


def _flat(text: str) -> str:
    return " ".join(text.split()).lower()


@pytest.mark.parametrize("fragment", list(FAQ_MESSAGES))
def test_faq_quotes_the_real_messages(fragment):
    assert _flat(fragment) in _flat(GUIDE.read_text(encoding="utf-8")), "the guide no longer quotes it"
    source = (ROOT / FAQ_MESSAGES[fragment]).read_text(encoding="utf-8")
    assert _flat(fragment) in _flat(source), f"{FAQ_MESSAGES[fragment]} no longer says it: update the FAQ"
