import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


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
