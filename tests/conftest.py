import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two threads spin against each other on a shared 2-core machine


@contextlib.contextmanager
def one_thread():
    """One torch thread, given back afterwards: on a shared 2-core machine two threads spin
    against other processes (a 24-step tiny run measured 0.5 s on one thread, up to 17 s on
    two; 712 greedy decodes 6.2 s against 28.3 s), and runs compared bit for bit must use the
    same thread count. Code under test may change the count (`train --threads`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: fixture -> its group: the browser reports (about a minute to build), the executed
#: notebook (about 40 s), the reference run of the training command's interruption tests
SHARED = {"reports": "reports", "pages": "reports", "executed": "notebook",
          "cli_reference": "train-cli"}


def _dist_asked(config) -> bool:
    """Whether the command line or PYTEST_ADDOPTS asks for a distribution mode."""
    import shlex

    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    return any(a == "-d" or a.startswith("--dist") for a in args)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`-n 2` distributes as `--dist loadgroup` (pytest-xdist's default `load`, with the
    groups below kept on one worker) unless a mode is asked for: here for the controller,
    in pytest_configure for each worker (which parses the command line anew)."""
    if getattr(config.option, "numprocesses", None) and not _dist_asked(config):
        config.option.dist = "loadgroup"


def pytest_configure(config):
    if hasattr(config, "workerinput") and not _dist_asked(config):
        config.option.loadgroup = True


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip, with their reason, on a machine without CUDA. Tests that share
    a costly fixture (SHARED) run on one pytest-xdist worker (`--dist loadgroup`), so it is
    built once."""
    for item in items:
        groups = {SHARED[f] for f in getattr(item, "fixturenames", ()) if f in SHARED}
        for group in sorted(groups):
            item.add_marker(pytest.mark.xdist_group(group))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def tiny_config(arch: str, n_ctx: int = 128):
    from interp.models.config import ModelConfig

    return ModelConfig(arch=arch, n_layers=2, d_model=32, n_heads=4, d_ff=64, n_ctx=n_ctx)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A randomly initialised tiny decoder and T5 saved as checkpoints: {arch: path}."""
    from interp.models import build_model, save_checkpoint
    from interp.tasks import get_task

    task = get_task("quadratic", "small")
    out = {}
    for arch in ("decoder", "t5"):
        cfg = tiny_config(arch)
        model = build_model(cfg, seed=1)
        path = tmp_path_factory.mktemp(f"ckpt-{arch}") / "model"
        save_checkpoint(model, path, {"task": task.describe(), "model": cfg.to_dict(),
                                      "arch": arch, "metrics": {}})
        out[arch] = path
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised tiny BERT saved as a plain HF directory (no interp.json)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    d = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij")
    (d / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(str(d))
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=64)).save_pretrained(str(d))
    return d


# the browser tests' reports and drawn pages (tests/browserkit.py), for any test file
from browserkit import browser, pages, reports  # noqa: E402,F401
