"""The hook adapter and the one run helper (`interp.hooks`), against the bridge and HF run
on their own."""

import pytest
import torch

from interp.errors import InterpError
from interp.hooks import (BLOCK_HOOKS, arch_of, capture, hook_name, kinds_of, layer_hooks,
                          n_layers, run)
from interp.models import load_checkpoint, load_model


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return {arch: load_model(path)[0] for arch, path in tiny_checkpoints.items()}


def ids(n=2, width=9):
    return torch.randint(4, 20, (n, width), generator=torch.Generator().manual_seed(0))


def test_every_name_the_adapter_spells_is_a_hook_the_bridge_has(models):
    for arch, bridge in models.items():
        names = set(bridge.hook_dict)
        for kind in kinds_of(bridge):
            cross = arch == "t5" and kind != "encoder"   # T5's decoder block only
            for hook in ("hook_pattern", "hook_z", "hook_q",
                         *(h for h in BLOCK_HOOKS if cross or h != "hook_cross_attn_out")):
                for name in layer_hooks(bridge, kind, hook):
                    assert name in names, (arch, kind, hook, name)


def test_t5_kinds_map_to_their_stacks_and_modules(models):
    t5 = models["t5"]
    assert arch_of(t5) == "t5" and kinds_of(t5) == ("encoder", "decoder_self", "cross")
    assert hook_name(t5, "encoder", 1, "hook_z") == "encoder_blocks.1.attn.hook_z"
    assert hook_name(t5, "decoder_self", 0) == "decoder_blocks.0.self_attn.hook_pattern"
    assert hook_name(t5, "cross", 1, "hook_pattern") == "decoder_blocks.1.cross_attn.hook_pattern"
    # self and cross attention share the decoder block and its residual stream
    assert hook_name(t5, "cross", 1, "hook_resid_pre") == \
        hook_name(t5, "decoder_self", 1, "hook_resid_pre") == "decoder_blocks.1.hook_resid_pre"
    assert hook_name(models["decoder"], "self", 1, "hook_mlp_out") == "blocks.1.hook_mlp_out"


def test_the_adapter_refuses_a_kind_or_layer_the_model_lacks(models):
    with pytest.raises(InterpError, match="kinds are self"):
        hook_name(models["decoder"], "cross", 0)
    with pytest.raises(InterpError, match=r"layers are 0\.\.1"):
        hook_name(models["t5"], "encoder", n_layers(models["t5"], "encoder"))


def test_run_gives_the_plain_hf_logits_and_restores_the_training_flag(models, tiny_checkpoints):
    bridge = models["decoder"]
    plain = load_checkpoint(tiny_checkpoints["decoder"]).model   # loaded on its own
    x = ids()
    bridge.train()
    out = run(bridge, x)
    assert bridge.training                       # restored
    assert not out.requires_grad                 # no graph by default
    torch.testing.assert_close(out, plain(input_ids=x).logits, atol=1e-5, rtol=1e-5)
    bridge.eval()
    assert run(bridge, x, grad=True).requires_grad


def test_run_applies_hooks_for_one_call_only_even_when_the_model_raises(models):
    bridge = models["decoder"]
    x = ids()
    clean = run(bridge, x)
    name = hook_name(bridge, "self", 0, "hook_resid_pre")
    zeroed = run(bridge, x, hooks=[(name, lambda t, hook: torch.zeros_like(t))])
    assert not torch.allclose(zeroed, clean)

    def boom(t, hook):
        raise RuntimeError("planted")

    with pytest.raises(RuntimeError, match="planted"):
        run(bridge, x, hooks=[(name, boom)])
    torch.testing.assert_close(run(bridge, x), clean)           # nothing left attached


def test_pre_and_module_hooks_are_removed_after_the_call(models):
    bridge = models["decoder"]
    x = ids()
    module = bridge.get_submodule("blocks.1")
    clean = run(bridge, x)
    calls = []
    run(bridge, x, pre_hooks=[(module, lambda m, a, k: calls.append("pre"))],
        module_hooks=[(module, lambda m, a, k, o: calls.append("post"))])
    assert calls == ["pre", "post"]
    run(bridge, x)
    assert calls == ["pre", "post"]
    torch.testing.assert_close(run(bridge, x), clean)


def test_capture_stops_after_the_last_wanted_hook_and_matches_a_full_cache(models):
    bridge = models["decoder"]
    x = ids()
    first = hook_name(bridge, "self", 0, "hook_pattern")
    later = hook_name(bridge, "self", 1, "hook_resid_post")
    seen = []
    got = capture(bridge, x, names=[first],
                  hooks=[(later, lambda t, hook: seen.append(hook.name))])
    assert seen == []                      # the pass ended before layer 1 finished
    _, cache = bridge.run_with_cache(x)
    torch.testing.assert_close(got[first], cache[first])
    full = capture(bridge, x, names=[first], stop=False,
                   hooks=[(later, lambda t, hook: seen.append(hook.name))])
    assert len(seen) == 1 and torch.equal(full[first], got[first])


def test_a_hook_name_the_model_lacks_is_one_interp_error(models):
    with pytest.raises(InterpError, match="does not exist"):
        capture(models["decoder"], ids(), names=["blocks.9.hook_resid_pre"])


def test_bfloat16_loading_puts_every_weight_in_bfloat16_and_stays_close(tiny_checkpoints):
    x = ids()
    ref = run(load_model(tiny_checkpoints["decoder"])[0], x)
    bridge, _ = load_model(tiny_checkpoints["decoder"], device="cpu", dtype="bfloat16")
    assert {p.dtype for p in bridge.parameters()} == {torch.bfloat16}
    low = run(bridge, x).float()
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("device, message", [("cuda:7", "CUDA"), ("gpu", "unknown device"),
                                              ("meta", "unsupported device")])
def test_devices_this_machine_lacks_are_refused_in_one_line(tiny_checkpoints, device, message):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    with pytest.raises(InterpError, match=message):
        load_model(tiny_checkpoints["decoder"], device=device)


def test_auto_device_is_cpu_without_cuda():
    from interp.models import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InterpError, match="unknown dtype 'int8'"):
        load_model("quadratic-small", dtype="int8")
