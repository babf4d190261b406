"""Checkpoints: a directory in the HF layout plus `interp.json`; safetensors only, atomic writes.

    DIR/config.json          HF config (GPT-2 or T5)
    DIR/model.safetensors    weights
    DIR/tokenizer.json       the character tokenizer (+ tokenizer_config.json)
    DIR/interp.json          task, preset, architecture, training recipe, seed, metrics
    DIR/resume/              a training run's last weights, optimiser state and step
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from interp.errors import InterpError
from interp.io import PARTIAL, make_temp_dir, replace_dir_atomic, umask_modes

REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "interp.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_models() -> list[str]:
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "interp.json").is_file())


def shipped_tasks() -> dict:
    """{shipped model name: its task} for the task models (not the text models)."""
    from interp.tasks import task_from_description

    out = {}
    for name in shipped_models():
        try:
            meta = json.loads((SHIPPED_DIR / name / "interp.json").read_text())
            if meta.get("task", {}).get("task") in ("quadratic", "arithmetic"):
                out[name] = task_from_description(meta["task"])
        except (OSError, ValueError, KeyError, InterpError):
            continue
    return out


def range_note(model: str, task, why: str, covering: list[str]) -> str:
    """The warning for input outside a model's training ranges: which ranges, and which
    shipped model covers the input."""
    def named(n: str) -> str:  # with its recorded held-out exact match, good or bad
        try:
            m = json.loads((SHIPPED_DIR / n / "interp.json").read_text())["evaluation"]
            return f"{n} ({m['exact_match']:.1%} exact on held-out inputs)"
        except (OSError, ValueError, KeyError, TypeError):
            return n

    better = (f"; {' and '.join(map(named, covering))} "
              f"{'covers' if len(covering) == 1 else 'cover'} it"
              if covering else "; no shipped model covers it")
    return (f"outside the training ranges of {model} (preset {task.preset}: "
            f"{task.ranges_text()}): {why}; expect wrong answers{better}")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory from a shipped model's name or a path."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    if isinstance(name_or_path, str) and "/" not in name_or_path and \
            (SHIPPED_DIR / name_or_path).is_dir():
        return SHIPPED_DIR / name_or_path
    if p.exists():
        raise InterpError(f"{str(p)!r} is a file; a checkpoint is a directory holding "
                          f"{', '.join(REQUIRED)}")
    names = ", ".join(shipped_models()) or "none installed"
    raise InterpError(f"no checkpoint directory or shipped model named {str(name_or_path)!r}; "
                      f"give a directory holding {', '.join(REQUIRED)} or one of: {names}")


def check_weights(file: Path) -> list[str]:
    """Read every tensor of a safetensors file once: one line naming the file when it is
    truncated or corrupt, or the first tensor holding NaN or infinite values. Returns the
    tensor names."""
    from safetensors import SafetensorError, safe_open

    nonfinite = None
    try:
        with safe_open(str(file), "pt") as f:
            keys = list(f.keys())
            for k in keys:  # reading every tensor catches truncated files and NaN/Inf
                t = f.get_tensor(k)
                if nonfinite is None and t.is_floating_point() and \
                        not bool(t.isfinite().all()):
                    nonfinite = (k, int((~t.isfinite()).sum()), t.numel())
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InterpError(f"{file} is corrupt or truncated ({e}); rebuild the "
                          "checkpoint") from None
    if nonfinite is not None:
        k, bad, n = nonfinite
        raise InterpError(f"{file}: tensor {k} holds {bad} NaN or infinite value(s) of {n}; "
                          "the weights are broken (a diverged run?): retrain, or load an "
                          "earlier checkpoint")
    return keys


def validate(directory: Path) -> dict:
    """Check a checkpoint directory and return its interp.json; raise InterpError if unusable.

    Checked: the four files exist; interp.json and config.json are JSON objects; every tensor
    of model.safetensors can be read; the architecture is known and named alike in
    interp.json (`model.arch`, and the top-level `arch` where present) and config.json; the
    tokenizer loads (and for task models has the package's character vocabulary). Pickled
    weights beside model.safetensors are never loaded: a warning says so."""
    pickles = [f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES]
    missing = [f for f in REQUIRED if not (directory / f).is_file()]
    if "model.safetensors" in missing and pickles:
        raise InterpError(f"{directory} holds pickled weights ({', '.join(pickles)}), which "
                          "interp never loads; convert them to model.safetensors")
    if pickles and not missing:
        from interp.errors import warn

        warn(f"{directory} holds pickled {', '.join(pickles)} beside model.safetensors; "
             "using model.safetensors, the pickle is ignored (never loaded)")
    if missing:
        raise InterpError(f"checkpoint {directory} lacks {', '.join(missing)}; a checkpoint "
                          f"directory holds {', '.join(REQUIRED)}")
    try:
        meta = json.loads((directory / "interp.json").read_text())
        hf = json.loads((directory / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterpError(f"{directory}: interp.json or config.json is not valid JSON ({e}); "
                          "re-save the checkpoint") from None
    if not isinstance(meta, dict) or not isinstance(hf, dict) or \
            not isinstance(meta.get("model", {}), dict):
        raise InterpError(f"{directory}: interp.json and config.json must each hold a JSON "
                          "object (interp.json with a 'model' object); re-save the checkpoint")
    keys = check_weights(directory / "model.safetensors")
    if not keys:
        raise InterpError(f"{directory / 'model.safetensors'} holds no tensors; rebuild the "
                          "checkpoint")
    if "model" not in meta:
        raise InterpError(f"{directory}/interp.json has no 'model' object (the architecture "
                          "and sizes); re-save the checkpoint with interp")
    arch = meta.get("model", {}).get("arch")
    model_type = hf.get("model_type")
    if (arch, model_type) not in {("decoder", "gpt2"), ("t5", "t5"),
                                  ("native", "interp-native")}:
        raise InterpError(f"{directory}: unknown architecture (interp.json arch={arch!r}, "
                          f"config.json model_type={model_type!r}); interp loads 'decoder' "
                          "(gpt2), 't5' and 'native' (interp-native) checkpoints")
    if "arch" in meta and meta["arch"] != arch:
        raise InterpError(f"{directory}: interp.json names two architectures (arch="
                          f"{meta['arch']!r}, model.arch={arch!r}); interp loads 'decoder', "
                          "'t5' and 'native' checkpoints, named alike in both places")
    check_tokenizer(directory, task_model=arch != "native")
    return meta


def check_tokenizer(directory: Path, task_model: bool = True) -> None:
    """Raise InterpError unless directory/tokenizer.json loads; a task model's tokenizer
    must hold the package's character vocabulary (the ids the model was trained on)."""
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exception subclasses
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InterpError(f"{path} is not a readable tokenizer ({first[:120]}); rebuild the "
                          "checkpoint or restore its tokenizer.json") from None
    if task_model:
        from interp.tasks.tokenizer import VOCAB

        vocab = tok.get_vocab()
        wrong = [t for t, i in VOCAB.items() if vocab.get(t) != i]
        if wrong:
            raise InterpError(f"{path} does not hold the character vocabulary of the task "
                              f"models (e.g. {', '.join(map(repr, wrong[:3]))} missing or "
                              "renumbered); restore it with interp.tasks.save_tokenizer")


def write_meta(folder: Path, meta: dict) -> None:
    """Write a checkpoint's interp.json (keys sorted, atomically) into `folder`."""
    from interp.io import write_json

    write_json(Path(folder) / "interp.json", meta, sort_keys=True, check=False)


def save_checkpoint(model, directory: str | Path, meta: dict) -> Path:
    """Save an HF model, the tokenizer and interp.json into `directory`.

    Everything is first written to a temporary folder beside `directory`; each file then
    replaces its old version with one atomic rename, interp.json last. A crash therefore never
    leaves a half-written file, and other entries of `directory` (a training run's `resume`
    folder) stay untouched.
    """
    from transformers.utils import logging as hf_logging

    from interp.tasks.tokenizer import save_tokenizer

    hf_logging.disable_progress_bar()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tmp)
        write_meta(tmp, meta)
        umask_modes(tmp)             # safetensors writes 0600; the rest is 0666 - umask
        names = sorted((f.name for f in tmp.iterdir() if f.name != PARTIAL),
                       key=lambda n: n == "interp.json")
        for name in names:
            os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# -- a training run's resume state (no pickle) ---------------------------------------------
#   DIR/resume/model.safetensors      the last weights (tied weights stored once)
#   DIR/resume/optimizer.safetensors  the optimiser's tensors, keyed "{param index}.{name}"
#   DIR/resume/optimizer.json         its param_groups
#   DIR/resume/state.json             the recipe, step, history ... (`Trainer.state()`)
RESUME = "resume"


def optimizer_tensors(opt) -> tuple[dict, dict]:
    """An optimiser's state as (tensors keyed "{param index}.{name}", {"param_groups": ...})."""
    import torch

    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{pid}.{k}"] = t.contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt, tensors: dict, groups: dict) -> None:
    """Give `opt` the state `optimizer_tensors` returned."""
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_resume_state(out: Path, model, opt, state: dict) -> None:
    """Write `out/resume/` whole (replaced atomically): weights, optimiser and `state`."""
    from safetensors.torch import save_file

    tensors, groups = optimizer_tensors(opt)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    def fill(tmp: Path) -> None:
        # tied weights (GPT-2 wte/lm_head) are stored once, under their first name
        seen, unique = {}, {}
        for k, v in weights.items():
            key = (v.data_ptr(), v.shape)
            if key not in seen:
                seen[key] = k
                unique[k] = v
        save_file(unique, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(groups))
        (tmp / "state.json").write_text(json.dumps(state, indent=1))

    replace_dir_atomic(fill, Path(out) / RESUME)


def resume_damaged(out: Path, what: str, e: BaseException | None = None) -> InterpError:
    """The one-line error for a damaged resume state: what is wrong and how to go on."""
    lines = [] if e is None else str(e).strip().splitlines() or [""]
    line = next((x.strip() for x in lines if "size mismatch" in x), lines[0] if lines else "")
    detail = "" if e is None else f" ({type(e).__name__}: {line[:200]})"
    return InterpError(f"cannot resume {out}: {what}{detail}; the resume state in "
                       f"{Path(out) / RESUME} is damaged. Its best checkpoint is separate: "
                       f"continue from it with --init-from {out} --out NEW_DIR (a fresh "
                       "schedule), or start again")


def read_resume_state(out: Path) -> dict:
    """`out/resume/state.json`; InterpError when there is none or it is unreadable."""
    rdir = Path(out) / RESUME
    if not (rdir / "state.json").is_file():
        raise InterpError(f"{out} holds no resumable run (no {RESUME}/state.json); start "
                          "a run with --out DIR first")
    try:
        return json.loads((rdir / "state.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise resume_damaged(out, "state.json is unreadable", e) from None


def load_resume_weights(out: Path, model, opt) -> None:
    """Load `out/resume/`'s weights into `model` and its optimiser state into `opt`, checking
    that both match them (InterpError naming the damaged file otherwise)."""
    from safetensors.torch import load_file

    rdir = Path(out) / RESUME
    try:
        weights = load_file(str(rdir / "model.safetensors"))
    except Exception as e:  # safetensors raises its own types for truncated files
        raise resume_damaged(out, "model.safetensors is missing or truncated", e) from None
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:   # size mismatch: the recipe's model differs
        raise resume_damaged(out, "model.safetensors does not match the model recorded in "
                             "state.json", e) from None
    if unexpected or any("lm_head" not in k for k in missing):
        raise resume_damaged(out, "model.safetensors does not match the model recorded in "
                             "state.json")
    model.tie_weights()
    try:
        tensors = load_file(str(rdir / "optimizer.safetensors"))
        groups = json.loads((rdir / "optimizer.json").read_text())
    except Exception as e:
        raise resume_damaged(out, "the optimiser state (optimizer.safetensors, optimizer.json) "
                             "is missing or truncated", e) from None
    params = list(model.parameters())
    try:
        for key, t in tensors.items():
            pid, name = key.split(".", 1)
            if name.startswith("exp_avg") and t.shape != params[int(pid)].shape:
                raise ValueError(f"{key} has shape {tuple(t.shape)}, the parameter "
                                 f"{tuple(params[int(pid)].shape)}")
        load_optimizer(opt, tensors, groups)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise resume_damaged(out, "the optimiser state does not match the model", e) from None
