"""Every bad input gets one line, exit status 2, and nothing is lost (issue 11, section 2).

Each row of CASES is one bad input to one command. The command runs in this process through
its `main(argv)` (the same function `python -m` calls) in a scratch folder holding copies of
the models it reads; the test asserts exit status 2, exactly one `error: ` line on stderr that
names the problem, no traceback, and that every file of the scratch folder (the copied models
included) is byte-identical afterwards, with no file added: no output, no half-written file,
no lock left behind. WARNINGS are inputs that work but deserve a word: exit status 0 and one
`warning: ` line. A few rows also run as real subprocesses (`python -m ...`), the way a user
meets them.

Placeholders in argv: {dec}, {t5}: tiny random task models; {text}: a copy of the shipped
1-layer text model; {run}: a small finished training run (with its resume state); {long}: a
10,000-character string.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import hold_lock, one_line, release, run

from interp.models.checkpoint import SHIPPED_DIR

LONG = "z" * 10_000
DEAD_PID = None


def dead_pid() -> int:
    """The pid of a process that has exited (for stale locks and temporary files)."""
    global DEAD_PID
    if DEAD_PID is None:
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        DEAD_PID = p.pid
    return DEAD_PID


# -- damage done to copies before a command runs ------------------------------------------
def write(rel, text):
    def setup(tmp):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return setup


def foreign(rel):
    """A folder holding someone else's files, under the names the commands write."""
    def setup(tmp):
        d = tmp / rel
        d.mkdir()
        for name in ("heads.csv", "report.html", "config.json", "summary.csv"):
            (d / name).write_text(f"someone else's {name}\n")
    return setup


def edit_json(rel, fn):
    def setup(tmp):
        p = tmp / rel
        d = json.loads(p.read_text())
        fn(d)
        p.write_text(json.dumps(d))
    return setup


def truncate(rel, size=100):
    def setup(tmp):
        with open(tmp / rel, "r+b") as f:
            f.truncate(size)
    return setup


def remove(rel):
    return lambda tmp: (tmp / rel).unlink()


LIVE = []


def live_pid() -> int:
    """The pid of a live process other than this one (a run still writing)."""
    if not LIVE:
        LIVE.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
    return LIVE[0].pid


@pytest.fixture(scope="module", autouse=True)
def _stop_live_process():
    yield
    for p in LIVE:
        p.kill()
        p.wait()


def held(rel):
    """The output lock of `rel`, held by another live process (a second run writing it)."""
    def setup(tmp):
        LIVE.append(hold_lock(tmp / rel))
    return setup


def dot_debris(rel):
    """Someone else's folder holding dot-files whose names look like temporary files of
    some program, beside and inside it: none is ours, none may be removed."""
    def setup(tmp):
        d = tmp / rel
        d.mkdir()
        (d / "thesis.tex").write_text("mine\n")
        (d / ".thesis.tex.tmp-31337").write_text("my editor's\n")
        (d / ".cache.old-4242").mkdir()
        (d / ".cache.old-4242" / "data").write_text("my backup\n")
        (tmp / f".{rel}.tmp-{dead_pid()}").write_text("beside\n")
        (tmp / ".results.old-2023").mkdir()
        (tmp / ".results.old-2023" / "data").write_text("my 2023 backup\n")
    return setup


def earlier(rel, *names, extra=()):
    """An earlier output folder holding `names` (its own files) and `extra` (someone's)."""
    def setup(tmp):
        d = tmp / rel
        d.mkdir(parents=True)
        for n in (*names, *extra):
            (d / n).write_text(f"{n}\n")
    return setup


LONG_DIR = "/".join(["a-rather-long-folder-name-for-the-path"] * 4)   # 155 characters


def d_model_changed(d):
    d["config"]["model"]["d_model"] *= 2


PROC = "/proc/x"

# (id, module, argv, words the error line must hold, setup)
CASES = [
    # -- tracebacks before ------------------------------------------------------------------
    ("solve-10000-digit-coefficient", "interp.solve",
     ["{dec}", "1" * 10_000 + "x^2+1x+1=0"], ["10,000 digits", "at most 18", "(10,010 characters)"],
     None),
    ("solve-10000-char-garbage", "interp.solve", ["{dec}", LONG],
     ["could not read", "(10,000 characters)"], None),
    ("classify-prompt-longer-than-context", "interp.classify_heads",
     ["{text}", "--prompts", "p.txt", "--out", "o"], ["prompt 2", "context of 128",
                                                     "(24,000 characters)"],
     write("p.txt", "short line\n" + "a = 1 + " * 3000 + "\n")),
    # unwritable destinations are refused before the model is even looked up
    ("classify-out-unwritable", "interp.classify_heads", ["no-such-model", "--out", PROC],
     [PROC, "not writable"], None),
    ("ablate-out-unwritable", "circuits.ablate", ["no-such-model", "--tokens", "x", "--out",
                                                  PROC], [PROC, "not writable"], None),
    ("ablate-json-unwritable", "circuits.ablate", ["no-such-model", "--tokens", "x", "--json",
                                                   PROC], [PROC, "not writable"], None),
    ("patch-out-unwritable", "circuits.patch", ["no-such-model", "--out", PROC],
     [PROC, "not writable"], None),
    ("patch-json-unwritable", "circuits.patch", ["no-such-model", "--json", PROC],
     [PROC, "not writable"], None),
    ("induction-out-unwritable", "circuits.induction.__main__", ["no-such-model", "--out",
                                                                 PROC], [PROC, "not writable"],
     None),
    ("evaluate-json-unwritable", "interp.evaluate", ["no-such-model", "--json", PROC],
     [PROC, "not writable"], None),
    ("train-out-unwritable", "interp.train", ["arithmetic", "--steps", "1", "--out", PROC],
     [PROC, "not writable"], None),
    ("train-out-is-a-file", "interp.train", ["arithmetic", "--steps", "1", "--out", "f.txt"],
     ["f.txt is a file"], write("f.txt", "mine\n")),
    ("train-negative-lr", "interp.train", ["arithmetic", "--steps", "1", "--lr", "-1",
                                           "--out", "r"], ["--lr must be a positive", "-1"],
     None),
    ("train-nan-lr", "interp.train", ["arithmetic", "--steps", "1", "--lr", "nan",
                                      "--out", "r"], ["--lr must be a positive"], None),
    ("train-dropout-above-1", "interp.train", ["arithmetic", "--steps", "1", "--dropout", "2",
                                               "--out", "r"], ["--dropout must be in [0, 1)"],
     None),
    ("resume-garbage-state", "interp.train", ["--resume", "{run}"],
     ["state.json is unreadable", "--init-from"], write("run/resume/state.json", "garbage{")),
    ("resume-state-without-step", "interp.train", ["--resume", "{run}"],
     ["state.json is unreadable", "'step'"], edit_json("run/resume/state.json",
                                                        lambda d: d.pop("step"))),
    ("resume-truncated-optimizer", "interp.train", ["--resume", "{run}"],
     ["optimiser state", "truncated"], truncate("run/resume/optimizer.safetensors")),
    ("resume-truncated-model", "interp.train", ["--resume", "{run}"],
     ["model.safetensors is missing or truncated"], truncate("run/resume/model.safetensors")),
    ("resume-missing-optimizer", "interp.train", ["--resume", "{run}"],
     ["optimiser state", "missing"], remove("run/resume/optimizer.safetensors")),
    ("resume-d_model-changed", "interp.train", ["--resume", "{run}"],
     ["does not match the model recorded", "size mismatch"],
     edit_json("run/resume/state.json", d_model_changed)),
    ("resume-not-a-run", "interp.train", ["--resume", "nowhere"], ["no run folder nowhere"],
     None),
    ("induction-corrupt-tokenizer", "circuits.induction.__main__", ["{text}", "--out", "o"],
     ["tokenizer.json is not a readable tokenizer"], write("text/tokenizer.json", '{"garb')),
    # -- other people's files -------------------------------------------------------------
    ("classify-out-foreign", "interp.classify_heads", ["{dec}", "--out", "theirs"],
     ["holds other files", "heads.csv"], foreign("theirs")),
    ("classify-out-foreign-beside-ours", "interp.classify_heads", ["{dec}", "--out", "theirs"],
     ["holds other files", "config.json"],
     lambda tmp: (foreign("theirs")(tmp), (tmp / "theirs" / "heads.json").write_text("[]"))),
    ("classify-save-cache-foreign", "interp.classify_heads", ["{dec}", "--save-cache",
                                                              "theirs"],
     ["--save-cache theirs", "holds other files"], foreign("theirs")),
    ("train-out-foreign", "interp.train", ["arithmetic", "--steps", "1", "--out", "theirs"],
     ["holds other files", "config.json"], foreign("theirs")),
    ("train-text-out-foreign", "interp.train_text", ["attn1l", "--out", "theirs"],
     ["holds other files", "heads.csv"], foreign("theirs")),
    ("ablate-out-foreign", "circuits.ablate", ["{dec}", "--tokens", "x", "--out", "theirs"],
     ["holds other files"], foreign("theirs")),
    ("patch-out-foreign", "circuits.patch", ["{dec}", "--out", "theirs"],
     ["holds other files"], foreign("theirs")),
    ("induction-out-foreign", "circuits.induction.__main__", ["{text}", "--out", "theirs"],
     ["holds other files"], foreign("theirs")),
    # dot-files of other programs, in and beside a refused folder, are not removed
    ("classify-out-foreign-with-dot-debris", "interp.classify_heads", ["{dec}", "--out", "u"],
     ["holds other files", "thesis.tex"], dot_debris("u")),
    ("train-out-foreign-with-dot-debris", "interp.train", ["arithmetic", "--steps", "1",
                                                           "--out", "u"],
     ["holds other files", "thesis.tex"], dot_debris("u")),
    # an earlier output holds a file the command never writes under that name
    ("patch-out-earlier-output-with-a-users-csv", "circuits.patch", ["{dec}", "--out", "o"],
     ["holds other files", "notes.csv"],
     earlier("o", "patching.json", "resid_pre.csv", "report.html", extra=["notes.csv"])),
    ("classify-save-cache-earlier-cache-with-a-users-file", "interp.classify_heads",
     ["{dec}", "--save-cache", "c"], ["--save-cache c", "holds other files", "mine.txt"],
     earlier("c", "cache.json", "shard-00000.safetensors", extra=["mine.txt"])),
    # --out . (the current folder, here holding the models) and a missing --out
    ("classify-out-dot", "interp.classify_heads", ["{dec}", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("ablate-out-dot", "circuits.ablate", ["{dec}", "--tokens", "x", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("patch-out-dot", "circuits.patch", ["{dec}", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("ablate-json-inside-out", "circuits.ablate",
     ["{dec}", "--tokens", "x", "--out", "a", "--json", "a/extra.json"],
     ["--json a/extra.json lies inside --out a"], None),
    ("patch-json-inside-out", "circuits.patch", ["{dec}", "--out", "p", "--json", "p/m.json"],
     ["--json p/m.json lies inside --out p"], None),
    ("induction-out-dot", "circuits.induction.__main__", ["{text}", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("train-out-dot", "interp.train", ["arithmetic", "--steps", "1", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("train-text-out-dot", "interp.train_text", ["attn1l", "--out", "."],
     ["--out . is a folder that holds other files"], None),
    ("train-without-out", "interp.train", ["quadratic", "--steps", "1"],
     ["give --out DIR"], None),
    # a long path in a message is shown whole
    ("classify-out-in-a-missing-long-folder", "interp.classify_heads",
     ["{dec}", "--out", f"{LONG_DIR}/o"], [f"folder {LONG_DIR} does not exist"], None),
    ("ablate-json-in-a-missing-long-folder", "circuits.ablate",
     ["{dec}", "--tokens", "x", "--json", f"{LONG_DIR}/a.json"],
     [f"folder {LONG_DIR} does not exist"], None),
    # --save-cache and --out would replace one another
    ("classify-save-cache-is-out", "interp.classify_heads", ["{dec}", "--out", "o",
                                                             "--save-cache", "o"],
     ["--save-cache o and --out o overlap"], None),
    ("classify-save-cache-inside-out", "interp.classify_heads", ["{dec}", "--out", "o",
                                                                 "--save-cache", "o/c"],
     ["--save-cache o/c and --out o overlap"], None),
    ("classify-out-inside-save-cache", "interp.classify_heads", ["{dec}", "--out", "c/o",
                                                                 "--save-cache", "c"],
     ["overlap"], lambda tmp: (tmp / "c").mkdir()),
    # a second command on an --out another live run is writing refuses at once
    ("classify-out-locked", "interp.classify_heads", ["{dec}", "--out", "o", "--n", "2"],
     ["being written by another run", "pid"], held("o")),
    ("classify-save-cache-locked", "interp.classify_heads", ["{dec}", "--out", "o", "--n", "2",
                                                             "--save-cache", "c"],
     ["--save-cache c is being written by another run"], held("c")),
    ("ablate-out-locked", "circuits.ablate", ["{dec}", "--tokens", "x", "--out", "o"],
     ["being written by another run"], held("o")),
    ("train-out-locked", "interp.train", ["arithmetic", "--steps", "1", "--out", "o"],
     ["being written by another run"], held("o")),
    ("resume-locked", "interp.train", ["--resume", "{run}"],
     ["being written by another run"], held("run")),
    # -- unbounded --------------------------------------------------------------------------
    # 1 layer x 4 heads x 128 x 128 float32 = 256 KiB of patterns a prompt: 4096 in 1 GiB
    ("induction-n-10M", "circuits.induction.__main__", ["{text}", "--n", "10000000"],
     ["--n 10000000", "1 GiB", "ask for fewer (--n 4096)"], None),
    ("induction-icl-windows-10M", "circuits.induction.__main__",
     ["{text}", "--icl-windows", "10000000"], ["ask for fewer (--icl-windows 16384)"], None),
    ("classify-n-10M", "interp.classify_heads", ["{dec}", "--n", "10000000"],
     ["ask for fewer (--n 20000)"], None),
    ("classify-examples-1000", "interp.classify_heads", ["{dec}", "--examples", "1000"],
     ["ask for fewer (--examples 16)"], None),
    ("classify-batch-size-10M", "interp.classify_heads", ["{dec}", "--batch-size", "10000000"],
     ["ask for fewer (--batch-size 1024)"], None),
    ("evaluate-batch-size-10M", "interp.evaluate", ["{dec}", "--batch-size", "10000000"],
     ["ask for fewer (--batch-size 4096)"], None),
    ("ablate-batch-size-10M", "circuits.ablate", ["{dec}", "--tokens", "x", "--batch-size",
                                                  "10000000"],
     ["ask for fewer (--batch-size 4096)"], None),
    ("evaluate-n-10M", "interp.evaluate", ["{dec}", "--n", "10000000"],
     ["ask for fewer (--n 100000)"], None),
    ("ablate-n-10M", "circuits.ablate", ["{dec}", "--tokens", "x", "--n", "10000000"],
     ["ask for fewer (--n 10000)"], None),
    ("ablate-controls-10M", "circuits.ablate", ["{dec}", "--tokens", "x", "--controls",
                                                "10000000"], ["ask for fewer (--controls 1000)"],
     None),
    ("train-eval-n-10M", "interp.train", ["arithmetic", "--steps", "1", "--eval-n", "10000000",
                                          "--out", "r"], ["ask for fewer (--eval-n 100000)"],
     None),
    ("train-rows-10M", "interp.train", ["arithmetic", "--epochs", "1", "--data", "fixed",
                                        "--rows", "10000000", "--out", "r"],
     ["ask for fewer (--rows 2000000)"], None),
    ("train-text-batch-10M", "interp.train_text", ["attn1l", "--out", "r", "--batch-size",
                                                   "10000000"],
     ["ask for fewer (--batch-size 4096)"], None),
    # -- accepted silently before -----------------------------------------------------------
    ("evaluate-preset-nonsense", "interp.evaluate", ["arithmetic", "--preset", "nonsense"],
     ["unknown arithmetic preset 'nonsense'", "default"], None),
    ("evaluate-quadratic-preset-nonsense", "interp.evaluate", ["{dec}", "--preset", LONG],
     ["unknown quadratic preset", "seed, small, medium", "(10,000 characters)"], None),
    ("evaluate-garbage-tokenizer", "interp.evaluate", ["{dec}", "--n", "2"],
     ["tokenizer.json is not a readable tokenizer"], write("dec/tokenizer.json", "garbage")),
    ("evaluate-foreign-vocabulary", "interp.evaluate", ["{dec}", "--n", "2"],
     ["character vocabulary"],
     edit_json("dec/tokenizer.json", lambda d: d["model"]["vocab"].update({"x": 3, "<sep>": 99}))),
    ("evaluate-arch-lstm", "interp.evaluate", ["{dec}", "--n", "2"],
     ["arch='lstm'", "'decoder'"], edit_json("dec/interp.json", lambda d: d.update(arch="lstm"))),
    ("evaluate-model-arch-lstm", "interp.evaluate", ["{dec}", "--n", "2"],
     ["unknown architecture", "'lstm'"],
     edit_json("dec/interp.json", lambda d: d["model"].update(arch="lstm"))),
    ("classify-prompts-to-a-task-model", "interp.classify_heads", ["{dec}", "--prompts",
                                                                   "p.txt"],
     ["--prompts is for text models", "task model"], write("p.txt", "hello\n")),
    # -- messages ---------------------------------------------------------------------------
    ("ablate-mode-choice", "circuits.ablate", ["--tokens", "x", "--mode", "bogus"],
     ["invalid choice: 'bogus'", "knockout", "--help"], None),
    ("ablate-tokens-empty-name", "circuits.ablate", ["--tokens", "x,," + LONG],
     ["empty name", "(10,003 characters)"], None),
    ("classify-format-choice", "interp.classify_heads", ["--format", "xml"],
     ["invalid choice: 'xml'", "table"], None),
    ("patch-direction-choice", "circuits.patch", ["--direction", "sideways"],
     ["invalid choice: 'sideways'", "denoise"], None),
    ("patch-answer-nonsense", "circuits.patch", ["{dec}", "--answer", "nonsense"],
     ["--answer 'nonsense'", "D_value", "x1", "x2_final"], None),
    ("patch-corrupt-long", "circuits.patch", ["{dec}", "--corrupt", LONG],
     ["(10,000 characters)", "a, b, c"], None),
    ("evaluate-n-not-a-number", "interp.evaluate", ["--n", "abc"],
     ["invalid int value: 'abc'"], None),
    ("evaluate-n-long", "interp.evaluate", ["--n", LONG], ["(10,000 characters)"], None),
    ("solve-unknown-option", "interp.solve", ["--bogus", "1x^2+1x+1=0"],
     ["unrecognized arguments: --bogus"], None),
    ("solve-three-arguments", "interp.solve", ["a", "b", "c"], ["at most a checkpoint"],
     None),
    ("train-task-choice", "interp.train", ["bogus"], ["invalid choice: 'bogus'",
                                                      "quadratic"], None),
    ("train-two-targets", "interp.train", ["--resume", "a", "--out", "b"],
     ["give one of --out"], None),
    ("train-text-model-choice", "interp.train_text", ["attn9l", "--out", "r"],
     ["invalid choice: 'attn9l'", "attn2l"], None),
    ("induction-n-not-a-number", "circuits.induction.__main__", ["--n", "two"],
     ["invalid int value: 'two'"], None),
    # -- more of the same kinds, on every command --------------------------------------------
    ("ablate-layers-unreadable", "circuits.ablate", ["{dec}", "--tokens", "x", "--layers",
                                                     "abc"], ["cannot read layers 'abc'"], None),
    ("ablate-layers-out-of-range", "circuits.ablate", ["{dec}", "--tokens", "x", "--layers",
                                                       "5-9", "--n", "2"],
     ["out of range", "layers 0-1"], None),
    ("ablate-unknown-token", "circuits.ablate", ["{dec}", "--tokens", "?", "--n", "2"],
     ["unknown token '?'", "the vocabulary is"], None),
    ("patch-unknown-site", "circuits.patch", ["{dec}", "--sites", "bogus", "--n", "2"],
     ["unknown site 'bogus'", "resid_pre"], None),
    ("solve-23-digit-operand", "interp.solve", ["arithmetic", "99999999999999999999999+1"],
     ["23 digits", "at most 18"], None),
    ("solve-roots-not-integers", "interp.solve", ["{dec}", "x^2+3x+1=0"],
     ["not a perfect square"], None),
    ("solve-checkpoint-is-a-file", "interp.solve", ["p.txt", "x^2-1=0"], ["is a file"],
     write("p.txt", "x\n")),
    ("classify-prompts-missing", "interp.classify_heads", ["{text}", "--prompts", "nowhere.txt"],
     ["cannot read --prompts nowhere.txt"], None),
    ("classify-unknown-kind", "interp.classify_heads", ["{dec}", "--kinds", "cross", "--n", "2",
                                                        "--no-report"],
     ["kinds ['cross']", "self"], None),
    ("induction-t5-refused", "circuits.induction.__main__", ["{t5}", "--n", "2"],
     ["decoder-only"], None),
    ("train-context-too-short", "interp.train", ["arithmetic", "--n-ctx", "4", "--steps", "1",
                                                 "--eval-n", "2", "--batch-size", "2",
                                                 "--out", "r"],
     ["context is 4"], None),
    ("train-heads-do-not-divide", "interp.train", ["--heads", "3", "--steps", "1", "--out", "r"],
     ["not divisible by n_heads 3"], None),
    ("train-unknown-preset", "interp.train", ["--preset", "huge", "--steps", "1", "--out", "r"],
     ["unknown quadratic preset 'huge'", "small"], None),
    ("resume-a-folder-without-a-run", "interp.train", ["--resume", "text"],
     ["holds no resumable run"], None),
    ("train-text-context-too-short", "interp.train_text", ["attn1l", "--out", "r", "--n-ctx",
                                                           "8"], ["at least 16"], None),
    ("umbrella-no-command", "interp.cli", [], ["give a command", "models"], None),
    ("umbrella-unknown-command", "interp.cli", [LONG], ["(10,000 characters)", "solve"], None),
    ("umbrella-models-with-argument", "interp.cli", ["models", "--all"],
     ["takes no arguments"], None),
    ("umbrella-subcommand-choice", "interp.cli", ["ablate", "--tokens", "x", "--scope", "b"],
     ["invalid choice: 'b'"], None),
]

# python -m probes / interp probe (issue #14)
PROBE = ["{dec}", "--target", "D_sign"]
CASES += [
    ("probe-out-unwritable", "probes.__main__", ["no-such-model", "--target", "D_sign",
                                                 "--out", PROC], [PROC, "not writable"], None),
    ("probe-json-unwritable", "probes.__main__", ["no-such-model", "--target", "D_sign",
                                                  "--json", PROC], [PROC, "not writable"], None),
    ("probe-out-foreign", "probes.__main__", PROBE + ["--out", "theirs"],
     ["holds other files"], foreign("theirs")),
    ("probe-unknown-target", "probes.__main__", ["{dec}", "--target", "D_nope", "--n", "50"],
     ["unknown target 'D_nope'", "D_sign", "D_value", "class", "D_digit_0..4"], None),
    ("probe-unknown-long-target", "probes.__main__", ["{dec}", "--target", LONG],
     ["unknown target", "(10,000 characters)"], None),
    ("probe-target-empty-name", "probes.__main__", ["{dec}", "--target", "D_sign,," + LONG],
     ["empty name", "(10,008 characters)"], None),
    ("probe-position-without-role", "probes.__main__", PROBE + ["--positions", "y", "--n", "50"],
     ["no position has the role 'y'", "a_digit", "c_sign"], None),
    ("probe-causal-at-without-role", "probes.__main__",
     PROBE + ["--n", "50", "--causal-at", "x,q"], ["no position has the role 'q'"], None),
    ("probe-too-few-examples", "probes.__main__", PROBE + ["--n", "4"],
     ["too few for the split", "--n"], None),
    ("probe-constant-label", "probes.__main__", ["{dec}", "--target", "D_digit_4", "--n", "12",
                                                 "--heldout"],
     ["'D_digit_4' is constant", "at least two values"], None),
    ("probe-bad-site", "probes.__main__", PROBE + ["--site", "resid"],
     ["--site", "invalid choice: 'resid'", "resid_pre"], None),
    ("probe-n-10M", "probes.__main__", PROBE + ["--n", "10000000"],
     ["--n 10000000 is more than", "--n 10000"], None),
    ("probe-controls-negative", "probes.__main__", PROBE + ["--controls", "-1"],
     ["--controls must be 0 or more"], None),
    ("probe-layers-out-of-range", "probes.__main__", PROBE + ["--n", "50", "--layers", "7"],
     ["out of range", "0-1"], None),
    ("probe-t5-unknown-solution-key", "probes.__main__",
     ["{t5}", "--target", "D_sign", "--n", "50", "--positions", "out:nope"],
     ["no position has the role 'out:nope'"], None),
    ("umbrella-probe-unknown-target", "interp.cli", ["probe", "{dec}", "--target", "nope",
                                                     "--n", "50"], ["unknown target 'nope'"],
     None),
]

# a language model given to a command that needs a task model (its task is asked first)
NO_TASK = ["without a task", "language model", "interp models"]
CASES += [
    ("ablate-language-model", "circuits.ablate", ["{text}", "--tokens", "x", "--out", "o"],
     NO_TASK, None),
    # a language model is patched on induction pairs: a task's option is refused
    ("patch-language-model-task-option", "circuits.patch",
     ["{text}", "--corrupt", "b", "--out", "o"], ["--corrupt", "language model",
                                                 "induction pairs"], None),
    ("evaluate-language-model", "interp.evaluate", ["{text}", "--json", "o.json"], NO_TASK, None),
    ("solve-language-model", "interp.solve", ["{text}", "1x^2+2x+1=0"], NO_TASK, None),
    ("probe-language-model", "probes.__main__", ["{text}", "--target", "D_sign", "--out", "o"],
     NO_TASK, None),
    ("train-init-from-language-model", "interp.train",
     ["arithmetic", "--steps", "1", "--init-from", "{text}", "--out", "o"], NO_TASK, None),
]

# --device and --dtype: every command refuses a device this machine lacks, or a dtype it does
# not know, in one line before any work (issue #12)
DEVICE_COMMANDS = [
    ("classify", "interp.classify_heads", ["{dec}", "--out", "o"]),
    ("ablate", "circuits.ablate", ["{dec}", "--tokens", "x", "--out", "o"]),
    ("patch", "circuits.patch", ["{dec}", "--out", "o"]),
    ("induction", "circuits.induction.__main__", ["{text}", "--out", "o"]),
    ("evaluate", "interp.evaluate", ["{dec}", "--json", "o.json"]),
    ("solve", "interp.solve", ["{dec}", "1x^2+2x+1=0"]),
    ("train", "interp.train", ["arithmetic", "--steps", "1", "--out", "o"]),
    ("train-text", "interp.train_text", ["attn1l", "--steps", "1", "--out", "o"]),
    ("probe", "probes.__main__", ["{dec}", "--target", "D_sign", "--out", "o"]),
]
CASES += [row for name, module, argv in DEVICE_COMMANDS for row in (
    (f"{name}-device-absent", module, argv + ["--device", "cuda:99"], ["'cuda:99'"], None),
    (f"{name}-device-unknown", module, argv + ["--device", "gpu"],
     ["unknown device 'gpu'", "cpu, cuda, cuda:N, mps or auto"], None),
    (f"{name}-dtype-unknown", module, argv + ["--dtype", "int8"],
     ["--dtype", "invalid choice: 'int8'"], None))]

# issue #23: rules, not cases. Output paths (never inside the loaded checkpoint, never over
# a file that is not this command's earlier output, never empty), one seed domain, one
# validation of every loaded model (config in range, config against the weights' shapes,
# finite weights, the fields interp.json needs)
def nan_weight(rel, key=None):
    """Overwrite one float tensor of a model.safetensors with a NaN at its first entry."""
    def setup(tmp):
        from safetensors.torch import load_file, save_file

        w = load_file(str(tmp / rel))
        k = key or sorted(w)[0]
        w[k] = w[k].clone()
        w[k].view(-1)[0] = float("nan")
        save_file(w, str(tmp / rel), metadata={"format": "pt"})
    return setup


SEED_WORDS = ["--seed", "0 to 2**63-1"]
CASES += [
    ("evaluate-json-into-the-checkpoint", "interp.evaluate",
     ["{dec}", "--n", "1", "--quiet", "--json", "dec/config.json"],
     ["--json dec/config.json", "inside the checkpoint"], None),
    ("evaluate-json-new-file-inside-the-checkpoint", "interp.evaluate",
     ["{dec}", "--n", "1", "--quiet", "--json", "dec/metrics.json"],
     ["inside the checkpoint"], None),
    ("ablate-json-onto-the-weights", "circuits.ablate",
     ["{dec}", "--tokens", "x", "--n", "2", "--json", "dec/model.safetensors"],
     ["--json dec/model.safetensors", "inside the checkpoint"], None),
    ("patch-out-inside-the-checkpoint", "circuits.patch", ["{dec}", "--out", "dec/o"],
     ["--out dec/o", "inside the checkpoint"], None),
    ("evaluate-json-over-a-users-file", "interp.evaluate",
     ["{dec}", "--n", "1", "--quiet", "--json", "data.txt"],
     ["--json data.txt exists", "not an earlier output", "--force"],
     write("data.txt", "my data\n")),
    ("evaluate-json-over-another-commands-json", "interp.evaluate",
     ["{dec}", "--n", "1", "--quiet", "--json", "existing.json"],
     ["--json existing.json exists", "--force"],
     write("existing.json", '{"interp_output": "patching.json", "x": 1}\n')),
    ("patch-json-over-a-users-json", "circuits.patch",
     ["{dec}", "--json", "existing.json"], ["--json existing.json exists", "--force"],
     write("existing.json", '{"mine": true}\n')),
    ("evaluate-json-empty", "interp.evaluate", ["{dec}", "--json", ""],
     ["--json", "is empty"], None),
    ("classify-out-empty", "interp.classify_heads", ["{dec}", "--out", ""],
     ["--out", "is empty"], None),
    ("patch-out-empty", "circuits.patch", ["{dec}", "--out", ""], ["--out", "is empty"], None),
    ("evaluate-seed-negative", "interp.evaluate", ["{dec}", "--seed=-1"], SEED_WORDS, None),
    ("evaluate-seed-2-70", "interp.evaluate", ["{dec}", "--seed", str(2**70)], SEED_WORDS,
     None),
    ("classify-seed-negative", "interp.classify_heads", ["{dec}", "--seed=-1"], SEED_WORDS,
     None),
    ("induction-seed-2-70", "circuits.induction.__main__", ["{text}", "--seed", str(2**70)],
     SEED_WORDS, None),
    ("train-seed-2-70", "interp.train", ["arithmetic", "--steps", "1", "--seed", str(2**70),
                                         "--out", "o"], ["--seed", "0 to 2**63-1"], None),
    ("train-seed-words", "interp.train", ["arithmetic", "--steps", "1", "--seed", "one",
                                          "--out", "o"], ["--seed", "not a whole number"],
     None),
    ("train-zero-heads", "interp.train", ["arithmetic", "--steps", "1", "--heads", "0",
                                          "--out", "o"], ["n_heads must be a positive"], None),
    ("train-zero-context", "interp.train", ["arithmetic", "--steps", "1", "--n-ctx", "0",
                                            "--out", "o"], ["n_ctx must be a positive"], None),
    ("evaluate-config-zero-heads", "interp.evaluate", ["{dec}", "--n", "1"],
     ["config.json: n_head is 0", "positive integer"],
     edit_json("dec/config.json", lambda d: d.update(n_head=0))),
    ("evaluate-config-negative-heads", "interp.evaluate", ["{dec}", "--n", "1"],
     ["n_head is -4"], edit_json("dec/config.json", lambda d: d.update(n_head=-4))),
    ("evaluate-t5-config-zero-heads", "interp.evaluate", ["{t5}", "--n", "1"],
     ["num_heads is 0"], edit_json("t5/config.json", lambda d: d.update(num_heads=0))),
    ("evaluate-context-shorter-than-the-embedding", "interp.evaluate", ["{dec}", "--n", "1"],
     ["transformer.wpe.weight", "[128, 32]", "describes [16, 32]"],
     edit_json("dec/config.json", lambda d: d.update(n_positions=16))),
    ("classify-nan-weights", "interp.classify_heads", ["{dec}", "--n", "2", "--out", "o"],
     ["NaN or infinite", "tensor"], nan_weight("dec/model.safetensors")),
    ("evaluate-nan-weights", "interp.evaluate", ["{t5}", "--n", "1"],
     ["NaN or infinite"], nan_weight("t5/model.safetensors")),
    ("evaluate-config-more-layers-than-the-weights", "interp.evaluate", ["{dec}", "--n", "1"],
     ["n_layer is 2000", "holds 2 such layers"],
     edit_json("dec/config.json", lambda d: d.update(n_layer=2000))),
    ("evaluate-config-without-n-embd", "interp.evaluate", ["{dec}", "--n", "1"],
     ["config.json describes"], edit_json("dec/config.json", lambda d: d.pop("n_embd"))),
    ("evaluate-config-negative-inner-width", "interp.evaluate", ["{dec}", "--n", "1"],
     ["describes no buildable model"],
     edit_json("dec/config.json", lambda d: d.update(n_inner=-5))),
    ("evaluate-t5-config-fewer-decoder-layers", "interp.evaluate", ["{t5}", "--n", "1"],
     ["num_decoder_layers is 1", "holds 2 such layers"],
     edit_json("t5/config.json", lambda d: d.update(num_decoder_layers=1))),
    ("train-text-seed-2-70", "interp.train_text", ["attn1l", "--steps", "1", "--seed",
                                                   str(2**70), "--out", "o"], SEED_WORDS, None),
    ("evaluate-interp-json-without-model", "interp.evaluate", ["{dec}", "--n", "1"],
     ["interp.json has no 'model' object"],
     edit_json("dec/interp.json", lambda d: d.pop("model"))),
]

# inputs that work but are probably not what was meant: (id, module, argv, words, setup)
WARNINGS = [
    ("solve-outside-the-training-ranges", "interp.solve",
     ["quadratic-small", "7x^2+3556x+451612=0"],
     ["quadratic-small", "preset small", "roots in [-20, 20]", "root -254 outside",
      "a = 7 outside 1..5", "quadratic-seed (", "exact on held-out inputs) covers it"], None),
    ("solve-opposite-roots-never-generated", "interp.solve", ["quadratic-small", "x^2-4=0"],
     ["opposite roots", "no shipped model covers it"], None),
    ("evaluate-preset-beyond-the-model", "interp.evaluate",
     ["{dec}", "--preset", "medium", "--n", "1", "--quiet"],
     ["preset medium", "roots in [-100, 100]", "preset small", "quadratic-seed (", "exact on held-out inputs) covers it"],
     None),
    ("classify-pickle-beside-safetensors", "interp.classify_heads",
     ["{dec}", "--n", "1", "--no-report", "--quiet", "--format", "csv", "--out", "o"],
     ["pytorch_model.bin", "using model.safetensors", "pickle is ignored"],
     write("dec/pytorch_model.bin", "not really a pickle")),
]

# run as real subprocesses too: the exit status and stderr a user sees
IN_SUBPROCESS = {"solve-10000-digit-coefficient", "umbrella-subcommand-choice",
                 "classify-n-10M", "train-negative-lr"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A two-step arithmetic run with its resume state (built once)."""
    from interp.models.config import ModelConfig
    from interp.training.recipe import TrainConfig
    from interp.training.task import train

    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(task="arithmetic", preset="default", steps=2, eval_every=2, eval_n=4,
                      batch_size=4, warmup=1, save_every=1,
                      model=ModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32, n_ctx=16))
    train(cfg, out, quiet=True)
    return out


@pytest.fixture
def scratch(tmp_path, tiny_checkpoints, finished_run, monkeypatch):
    """A folder holding copies of every model a case reads; the commands run in it."""
    shutil.copytree(tiny_checkpoints["decoder"], tmp_path / "dec")
    shutil.copytree(tiny_checkpoints["t5"], tmp_path / "t5")
    shutil.copytree(SHIPPED_DIR / "induction-attn1l", tmp_path / "text")
    shutil.copytree(finished_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fill(argv: list[str]) -> list[str]:
    names = {"{dec}": "dec", "{t5}": "t5", "{text}": "text", "{run}": "run", "{long}": LONG}
    return [names.get(a, a) for a in argv]


def call(module: str, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = importlib.import_module(module).main(list(argv))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case_id, module, argv, words, setup", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_changes(case_id, module, argv, words, setup,
                                                          scratch, capsys):
    if PROC in argv and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    if setup:
        setup(scratch)
    before = snapshot(scratch)
    rc, err = call(module, fill(argv), capsys)
    line = one_line(rc, err, *words)
    assert len(line) < 600, f"an echoed input was not shortened: {len(line)} characters"
    assert snapshot(scratch) == before, "files were added, changed or removed"
    if case_id in IN_SUBPROCESS:
        proc = run(module, *fill(argv), cwd=scratch)
        assert one_line(proc.returncode, proc.stderr, *words) == line
        assert snapshot(scratch) == before


@pytest.mark.parametrize("case_id, module, argv, words, setup", WARNINGS,
                         ids=[c[0] for c in WARNINGS])
def test_doubtful_input_gets_one_warning_line_and_runs(case_id, module, argv, words, setup,
                                                       scratch, capsys):
    if setup:
        setup(scratch)
    before = snapshot(scratch)
    rc, err = call(module, fill(argv), capsys)
    one_line(rc, err, *words, kind="warning")
    after = snapshot(scratch)
    assert {k: after.get(k) for k in before} == before, "a file that existed was changed"


def test_interp_models_shows_each_models_training_ranges(capsys):
    from interp.tasks import ARITHMETIC_PRESETS, QUADRATIC_PRESETS

    rc, out = importlib.import_module("interp.cli").main(["models"]), capsys.readouterr().out
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    for name in ("quadratic-small", "quadratic-t5-small", "quadratic-seed"):
        meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
        r = QUADRATIC_PRESETS[meta["task"]["preset"]]
        assert f"roots in [-{r.root_max}, {r.root_max}], a = k in 1..{r.k_max}" in rows[name]
        assert f"coefficients in [-{r.coef_max}, {r.coef_max}]" in rows[name]
    a = ARITHMETIC_PRESETS["default"]
    assert f"operands {a['lo']}..{a['hi']}" in rows["arithmetic"]


CLASSIFY = ["dec", "--n", "2", "--examples", "1", "--quiet", "--format", "csv"]


def test_a_killed_runs_leftovers_are_cleaned_and_the_next_run_replaces_its_output(
        scratch, capsys):
    """SIGKILL while writing leaves `.report.html.interp-tmp-PID-X` in the output folder, a
    half-built `.o.interp-tmp-PID-X` folder (holding the sentinel `.interp-partial`) beside it
    and a lock file: the next run removes those of dead processes only, and writes its output
    whole. Dot-files that are not provably ours stay: other names, a live writer's, a folder
    of our name form without the sentinel."""
    from interp.io import PARTIAL

    dead, live = dead_pid(), os.getpid()
    out = scratch / "o"
    out.mkdir()
    (out / "heads.json").write_text("[]")                   # an earlier output of the command
    (out / f".report.html.interp-tmp-{dead}-0123abcd").write_bytes(b"")
    half = scratch / f".o.interp-tmp-{dead}-abcdef12"
    half.mkdir()
    (half / PARTIAL).touch()
    (half / "heads.csv").write_text("half")
    (scratch / ".o.interp-lock").write_text(str(dead))
    kept = {f".o.interp-tmp-{live}-00000000": True,         # a live writer's
            f".o.interp-tmp-{dead}-11111111": False,        # no sentinel: not provably ours
            f".o.tmp-{dead}": True, ".o.old-2023": False,   # other programs' names
            ".o.notes": None}
    for name, sentinel in kept.items():
        if sentinel is None:
            (scratch / name).write_text("not ours")
            continue
        (scratch / name).mkdir()
        (scratch / name / "data").write_text("keep")
        if sentinel:
            (scratch / name / PARTIAL).touch()
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["heads.csv", "heads.json", "report.html"]
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith(".o")) == \
        sorted(kept)
    assert all((scratch / n / "data").read_text() == "keep" for n, v in kept.items()
               if v is not None)
    rows = json.loads((out / "heads.json").read_text())
    assert len(rows) == 2 * 4                                  # tiny model: 2 layers x 4 heads
    (scratch / "made-by-mkdir").mkdir()
    assert out.stat().st_mode == (scratch / "made-by-mkdir").stat().st_mode  # not private


def test_a_second_real_run_on_a_locked_out_refuses_and_succeeds_once_it_is_released(
        scratch, capsys):
    """Two real processes: another one holds the lock of `o` (as a run writing it does), the
    command on `o` here refuses with exit status 2 and changes nothing; once the holder
    ends, the same command writes `o`."""
    holder = hold_lock(scratch / "o")
    try:
        before = snapshot(scratch)
        rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
        one_line(rc, err, "--out o is being written by another run", f"pid {holder.pid}")
        assert snapshot(scratch) == before
    finally:
        release(holder)
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (scratch / "o").iterdir()) == \
        ["heads.csv", "heads.json", "report.html"]
    assert not (scratch / ".o.interp-lock").exists()


def test_the_lock_is_exclusive_within_one_process_and_a_dead_holders_lock_is_free(tmp_path):
    """The same path locked twice (e.g. --out X --save-cache X) refuses the second time; a
    lock file left by a killed holder (no process holds it) does not block."""
    from interp.errors import InterpError
    from interp.io import output_lock

    with output_lock(tmp_path / "x"):
        with pytest.raises(InterpError, match="being written by another run"):
            with output_lock(tmp_path / "x"):
                pass
    (tmp_path / ".y.interp-lock").write_text(str(os.getpid()))  # our own pid, but nobody holds it
    with output_lock(tmp_path / "y"):
        assert (tmp_path / ".y.interp-lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".y.interp-lock").exists()


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def test_a_failing_swap_puts_the_previous_output_back(tmp_path, monkeypatch):
    """replace_dir_atomic renames the old output aside, then the new one into place; when the
    second rename fails, the old output is back at its name byte for byte, nothing else
    is left beside it, and the error goes on to the caller."""
    from interp.io import replace_dir_atomic

    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_bytes(b"previous \x00\xff output")
    (target / "sub").mkdir()
    (target / "sub" / "b.bin").write_bytes(bytes(range(256)))
    before = tree(tmp_path)
    real_rename, calls = os.rename, []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(OSError, match="No space"):
        replace_dir_atomic(lambda tmp: (tmp / "a.txt").write_text("new"), target)
    assert calls[0][0] == "out" and calls[1][1] == "out"      # the failure was the swap-in
    assert tree(tmp_path) == before


def test_a_swap_killed_between_its_renames_is_restored_by_the_next_run(tmp_path):
    """A run killed after renaming the old output aside (`.out.interp-old-PID-X`, no sentinel)
    and before renaming the new one in: the next command writing `out` renames the old one
    back, and only then replaces it."""
    from interp.io import output_lock

    old = tmp_path / f".out.interp-old-{dead_pid()}-a1b2c3d4"
    old.mkdir()
    (old / "heads.json").write_text("[1]")
    with output_lock(tmp_path / "out"):
        assert (tmp_path / "out" / "heads.json").read_text() == "[1]"
        assert not old.exists()


def test_os_metadata_in_an_earlier_output_does_not_make_it_foreign(scratch, capsys):
    """A user browsed the earlier output (Finder): `.DS_Store` and `._report.html` appeared.
    The rerun replaces the folder (the OS files are dropped with it). A folder a user may have
    put work in (`.ipynb_checkpoints/`) makes it someone else's: refused, kept byte for byte."""
    assert call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)[0] == 0
    for name in (".DS_Store", "._report.html"):
        (scratch / "o" / name).write_bytes(b"\x00\x05\x16\x07")
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (scratch / "o").iterdir()) == \
        ["heads.csv", "heads.json", "report.html"]
    (scratch / "o" / ".ipynb_checkpoints").mkdir()
    (scratch / "o" / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    before = snapshot(scratch)
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
    one_line(rc, err, "holds other files (.ipynb_checkpoints)")
    assert snapshot(scratch) == before
    (scratch / "o" / ".ipynb_checkpoints" / "x-checkpoint.ipynb").unlink()
    (scratch / "o" / ".ipynb_checkpoints").rmdir()
    (scratch / "o" / ".DS_Store").write_bytes(b"\x00")
    (scratch / "o" / "mine.txt").write_text("mine")
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
    one_line(rc, err, "holds other files (mine.txt)")


def test_a_symlinked_or_read_only_out_is_refused_before_any_work(scratch, capsys):
    """--out through a symbolic link would swap the link for a folder and bypass the lock of
    the real path; a read-only earlier output would be replaced by a writable one."""
    assert call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)[0] == 0
    (scratch / "link").symlink_to(scratch / "o")
    before = snapshot(scratch)
    rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "link"], capsys)
    one_line(rc, err, "is a symbolic link")
    assert snapshot(scratch) == before and (scratch / "link").is_symlink()
    if os.geteuid() != 0:  # root writes anywhere; the probe is what is checked
        (scratch / "o").chmod(0o555)
        try:
            rc, err = call("interp.classify_heads", CLASSIFY + ["--out", "o"], capsys)
            one_line(rc, err, "not writable")
        finally:
            (scratch / "o").chmod(0o755)


def test_train_out_holding_its_own_debris_and_os_metadata_is_accepted(scratch, capsys):
    """A new training run's --out holding the debris of a killed run of ours (a half-written
    `.resume.interp-tmp-PID-X/` with its sentinel) and a `.DS_Store`: the run starts, removes
    the debris and trains; the metadata stays."""
    from interp.io import PARTIAL

    out = scratch / "r"
    debris = out / f".resume.interp-tmp-{dead_pid()}-abcdef12"
    debris.mkdir(parents=True)
    (debris / PARTIAL).touch()
    (debris / "model.safetensors").write_bytes(b"half")
    (out / ".DS_Store").write_bytes(b"\x00")
    rc, err = call("interp.train", ["arithmetic", "--steps", "1", "--eval-n", "2",
                                    "--eval-every", "1", "--batch-size", "2", "--layers", "1",
                                    "--d-model", "16", "--heads", "2", "--n-ctx", "16",
                                    "--quiet", "--out", "r"], capsys)
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert not debris.exists() and ".DS_Store" in names and "interp.json" in names


def test_out_dot_in_an_empty_folder_is_refused_not_swapped_away(tmp_path, monkeypatch,
                                                                 capsys):
    """`--out .` in an empty folder (or an earlier output) would rename the shell's current
    folder away: refused in one line, the folder stays the same inode."""
    empty = tmp_path / "e"
    empty.mkdir()
    inode = empty.stat().st_ino
    monkeypatch.chdir(empty)
    rc, err = call("interp.classify_heads", ["no-such-model", "--out", "."], capsys)
    one_line(rc, err, "--out . is the current folder")
    assert empty.stat().st_ino == inode and list(empty.iterdir()) == []


# -- issue #23: the --json rule's other side, and SIGTERM like SIGINT ----------------------
def test_json_may_replace_its_own_earlier_output_and_force_overwrites_a_foreign_file(
        scratch, capsys):
    """The output names its command (`interp_output`), so a second run may replace it; a
    user's file is kept unless --force, which then replaces it."""
    argv = ["dec", "--n", "1", "--quiet", "--json", "m.json"]
    assert call("interp.evaluate", argv, capsys)[0] == 0
    first = json.loads((scratch / "m.json").read_text())
    assert first["interp_output"] == "evaluate" and "exact_match" in json.dumps(first)
    assert call("interp.evaluate", argv, capsys)[0] == 0           # its own earlier output
    (scratch / "mine.json").write_text('{"mine": 1}\n')
    rc, err = call("interp.evaluate", ["dec", "--n", "1", "--quiet", "--json", "mine.json"],
                   capsys)
    one_line(rc, err, "--force")
    assert (scratch / "mine.json").read_text() == '{"mine": 1}\n'
    rc, _ = call("interp.evaluate", ["dec", "--n", "1", "--quiet", "--json", "mine.json",
                                     "--force"], capsys)
    assert rc == 0 and json.loads((scratch / "mine.json").read_text())["interp_output"] \
        == "evaluate"


def test_sigterm_is_handled_like_sigint_and_leaves_nothing_behind(tmp_path, capsys):
    """A SIGTERM that arrives while a command builds its output folder under its lock: one
    line, exit status 143, no temporary folder and no lock file left (the code that made
    them removes them, as for Ctrl-C)."""
    import signal

    from interp.cli.common import run_cli
    from interp.io import output_lock, replace_dir_atomic

    out = tmp_path / "o"

    def fill(tmp):
        (tmp / "half.csv").write_text("a,b\n")
        os.kill(os.getpid(), signal.SIGTERM)
        (tmp / "never.csv").write_text("c\n")

    def command(argv):
        with output_lock(out):
            replace_dir_atomic(fill, out)

    before = signal.getsignal(signal.SIGTERM)
    rc = run_cli(command, [])
    err = capsys.readouterr().err
    assert rc == 143, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("terminated"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) == before            # the handler given back


def test_sigterm_to_a_real_classify_run_removes_its_lock_and_temporaries(scratch):
    """`python -m interp.classify_heads ... --out o` killed by SIGTERM once it holds its
    lock: exit 143, one line, and nothing of ours left beside or in the output."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "interp.classify_heads", "dec", "--n", "64",
                             "--out", "o", "--quiet"], cwd=scratch, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lock = scratch / ".o.interp-lock"
    deadline = time.time() + 120
    while not lock.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run ended before it could be signalled")
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err
    assert [ln for ln in err.splitlines() if ln.strip()][-1].startswith("terminated"), err
    left = [p.name for p in scratch.iterdir() if "interp-" in p.name or p.name == "o"]
    assert left == [], left


def test_a_saved_checkpoint_and_cache_shards_follow_the_umask(tmp_path):
    """safetensors creates its files 0600; every file a save writes gets 0666 less the
    umask instead (checked against os.stat and the umask read here)."""
    import stat

    from interp.models import build_model, save_checkpoint
    from interp.models.config import ModelConfig
    from interp.tasks import get_task

    old = os.umask(0o022)
    try:
        task = get_task("arithmetic", "default")
        cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_ff=32, n_ctx=16)
        path = save_checkpoint(build_model(cfg, seed=0), tmp_path / "m",
                               {"task": task.describe(), "model": cfg.to_dict(),
                                "arch": "decoder", "metrics": {}})
        from interp.io import replace_dir_atomic

        def fill(tmp):
            from safetensors.torch import save_file
            import torch
            save_file({"x": torch.zeros(2)}, str(tmp / "shard-00000.safetensors"))

        replace_dir_atomic(fill, tmp_path / "cache")
        files = [*path.iterdir(), tmp_path / "cache" / "shard-00000.safetensors"]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.is_file()}
        assert set(modes.values()) == {0o644}, modes
    finally:
        os.umask(old)


def test_interp_models_help_prints_help_and_exits_0(capsys):
    rc = importlib.import_module("interp.cli").main(["models", "--help"])
    out = capsys.readouterr()
    assert rc == 0 and out.out.startswith("usage: interp models") and out.err == ""


def test_an_allocation_torch_refuses_is_one_line_in_every_command(capsys):
    """torch's CPU allocator raises a RuntimeError, not MemoryError: `run_cli` (which every
    command runs through) turns it into one line naming the size; other RuntimeErrors are
    not hidden."""
    import torch

    from interp.cli.common import run_cli

    def greedy(argv):
        return torch.empty(2**42)          # 16 TiB: refused by the allocator, not faked

    rc = run_cli(greedy, [])
    err = capsys.readouterr().err
    one_line(rc, err, "out of memory", "16,384.0 GiB", "--n")

    def broken(argv):
        raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(broken, [])


@pytest.mark.parametrize("at", ["fill", "rename"])
def test_a_run_killed_at_any_point_of_a_save_leaves_only_what_the_next_run_removes(
        tmp_path, at):
    """SIGKILL (os._exit, no handler runs) inside `replace_dir_atomic`, while filling or
    right at the rename into place, in a fresh process: what is left in the run folder is
    provably ours (the sentinel is still in it), so a new `train --out` into that folder is
    not refused as "holds other files", and the lock's cleaning removes it."""
    import textwrap

    from interp.io import clean_stale_temps
    from interp.training.task import check_new_out

    run = tmp_path / "run"
    run.mkdir()
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from interp import io
        real = os.rename
        def rename(a, b):
            if {at!r} == "rename" and ".interp-tmp-" in str(a):
                os._exit(9)
            return real(a, b)
        os.rename = rename
        def fill(tmp):
            (tmp / "model.safetensors").write_bytes(b"x" * 100)
            if {at!r} == "fill":
                os._exit(9)
        io.replace_dir_atomic(fill, Path({str(run / 'resume')!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert proc.returncode == 9
    left = [p.name for p in run.iterdir()]
    assert len(left) == 1 and left[0].startswith(".resume.interp-tmp-"), left
    check_new_out(run)                              # not "holds other files"
    assert clean_stale_temps(run) == left
    assert list(run.iterdir()) == []


def test_two_runs_killed_in_a_row_never_lose_the_finished_output(tmp_path):
    """Run A was killed right after renaming its output into place (the output is whole but
    still holds the sentinel); run B is killed right after setting A's output aside. The
    cleaning that the next run's lock does must put A's output back, not delete it."""
    import textwrap

    from interp.io import PARTIAL, clean_stale_temps

    out = tmp_path / "results"
    out.mkdir()
    (out / "results.csv").write_text("run A\n")
    (out / PARTIAL).touch()                          # A's state at its kill
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from interp import io
        real = os.rename
        def rename(a, b):
            real(a, b)
            if ".interp-old-" in str(b):
                os._exit(9)
        os.rename = rename
        io.replace_dir_atomic(lambda tmp: (tmp / "results.csv").write_text("run B\\n"),
                              Path({str(out)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert proc.returncode == 9 and not out.exists()
    clean_stale_temps(tmp_path)
    assert (out / "results.csv").read_text() == "run A\n"


def test_a_plain_hf_folder_with_nan_weights_is_refused_in_one_line(tiny_bert_dir, tmp_path,
                                                                    capsys, monkeypatch):
    """HF folders (no interp.json) get the same finite-weights check as task models."""
    import shutil

    d = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, d)
    nan_weight("bert/model.safetensors")(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    rc, err = call("interp.classify_heads", ["bert", "--n", "2", "--out", "o"], capsys)
    one_line(rc, err, "NaN or infinite", "bert/model.safetensors")
    assert snapshot(tmp_path) == before


def test_train_takes_the_largest_seed_of_the_domain(tmp_path, capsys):
    """2**63-1 is in the seed domain: the seeds train derives from it (seed * k + step) are
    folded into torch's range instead of overflowing."""
    rc = call("interp.train", ["arithmetic", "--steps", "1", "--layers", "1", "--d-model",
                               "16", "--heads", "2", "--batch-size", "4", "--eval-every", "1",
                               "--eval-n", "4", "--seed", str(2**63 - 1), "--quiet", "--out",
                               str(tmp_path / "o")], capsys)[0]
    assert rc == 0 and (tmp_path / "o" / "model.safetensors").is_file()


def test_an_old_copy_is_restored_whenever_its_name_is_missing(tmp_path):
    """The cleaning never deletes the only copy of an output: a set-aside folder of a dead
    writer is put back under its name when that name is missing, sentinel or not."""
    from interp.io import PARTIAL, clean_stale_temps

    old = tmp_path / f".results.interp-old-{dead_pid()}-0123abcd"
    old.mkdir()
    (old / "results.csv").write_text("the only copy\n")
    (old / PARTIAL).touch()
    clean_stale_temps(tmp_path)
    assert (tmp_path / "results" / "results.csv").read_text() == "the only copy\n"


# -- issue #23: the remaining cases, now that the commands' owners have merged ---------------
def _prompts(rel, data: bytes):
    def setup(tmp):
        (tmp / rel).write_bytes(data)
    return setup


CASES_23 = [
    ("classify-kinds-empty", "interp.classify_heads", ["{dec}", "--kinds", ""], ["--kinds", "is empty"]),
    ("ablate-layers-empty", "circuits.ablate", ["{dec}", "--tokens", "x", "--layers", ""], ["--layers", "is empty"]),
    ("probe-layers-empty", "probes.__main__", ["{dec}", "--target", "D_sign", "--layers", ""], ["--layers", "is empty"]),
    ("probe-causal-at-empty", "probes.__main__", ["{dec}", "--target", "D_sign", "--causal-at", ""], ["--causal-at", "is empty"]),
    ("probe-causal-layers-empty", "probes.__main__", ["{dec}", "--target", "D_sign", "--causal", "--causal-layers", ""], ["--causal-layers", "is empty"]),
    ("classify-save-cache-empty", "interp.classify_heads", ["{dec}", "--save-cache", ""], ["--save-cache", "is empty"]),
    ("classify-out-inside-the-checkpoint", "interp.classify_heads", ["{dec}", "--out", "dec/o"], ["--out dec/o", "inside the checkpoint"]),
    ("classify-save-cache-inside-the-checkpoint", "interp.classify_heads", ["{dec}", "--out", "o", "--save-cache", "dec/cache"], ["--save-cache dec/cache", "inside the checkpoint"]),
    ("ablate-data-seed-negative", "circuits.ablate", ["{dec}", "--tokens", "x", "--data-seed=-1"], ["--data-seed", "0 to 2**63-1"]),
    ("probe-data-seed-2-70", "probes.__main__", ["{dec}", "--target", "D_sign", "--data-seed", str(2**70)], ["--data-seed", "0 to 2**63-1"]),
    ("ablate-mean-one-example", "circuits.ablate", ["{dec}", "--tokens", "x", "--mode", "mean", "--n", "1"], ["--mode mean with --n 1", "--n 2 or more"]),
    ("ablate-route-too-many", "circuits.ablate", ["{dec}", "--route", ";".join(f"L1H{h % 4}:offset={d}" for h in range(4) for d in range(17)), "--n", "4"], ["--route names 68 routes", "at most 64"]),
    ("probe-target-twice", "probes.__main__", ["{dec}", "--target", "D_sign,D_sign"], ["--target names 'D_sign' more than once"]),
    ("ablate-route-twice", "circuits.ablate", ["{dec}", "--route", "L1H2:->c;L1H2:->c", "--n", "4"], ["L1H2:->c", "more than once"]),
    ("ablate-route-offset-beyond", "circuits.ablate", ["{dec}", "--route", "L1H2:offset=999", "--n", "4", "--controls", "1"], ["no selected query has a key at offset 999", "positions long"]),
    ("ablate-route-offset-negative", "circuits.ablate", ["{dec}", "--route", "L1H2:offset=-1", "--n", "4", "--controls", "1"], ["offset -1", "causal attention never reads"]),
    ("probe-causal-layers-not-probed", "probes.__main__", ["{dec}", "--target", "D_sign", "--n", "40", "--layers", "0", "--causal", "--causal-layers", "1"], ["--causal-layers [1]", "not among the probed --layers [0]"]),
    ("probe-causal-layers-without-causal", "probes.__main__", ["{dec}", "--target", "D_sign", "--n", "40", "--causal-layers", "1"], ["--causal-layers applies to the causal check"]),
    ("probe-causal-at-not-probed", "probes.__main__", ["{dec}", "--target", "D_sign", "--n", "40", "--positions", "x,^", "--causal-at", "="], ["--causal-at '='", "not among the probed ones"]),
]


@pytest.mark.parametrize("case_id, module, argv, words", CASES_23, ids=[c[0] for c in CASES_23])
def test_issue_23_cases_are_one_line_and_change_nothing(case_id, module, argv, words, scratch,
                                                        capsys):
    before = snapshot(scratch)
    rc, err = call(module, fill(argv), capsys)
    one_line(rc, err, *words)
    assert snapshot(scratch) == before


@pytest.mark.parametrize("data, words", [
    (b"def f():\n    return 1\n\xff\xfe not text\n", ["not UTF-8 text", "byte"]),
    (b"x" * (16 * 2**20 + 10), ["more than 16 MiB"]),
], ids=["not-utf8", "too-large"])
def test_a_prompts_file_is_read_bounded_and_as_utf8(data, words, scratch, capsys):
    _prompts("p.txt", data)(scratch)
    before = snapshot(scratch)
    rc, err = call("interp.classify_heads", ["text", "--prompts", "p.txt", "--out", "o"], capsys)
    one_line(rc, err, "--prompts p.txt", *words)
    assert snapshot(scratch) == before


def test_prompts_from_an_endless_device_are_refused_without_reading_it_all(scratch, capsys):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    rc, err = call("interp.classify_heads", ["text", "--prompts", "/dev/zero", "--out", "o"],
                   capsys)
    one_line(rc, err, "more than 16 MiB")
