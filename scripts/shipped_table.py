"""Print the README's table of shipped task models from their interp.json (measured figures
only; the induction language models have no task and are measured by circuits.induction).

    python scripts/shipped_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from interp.models.checkpoint import SHIPPED_DIR, shipped_models

    print("| model | arch | task / preset | params | size | CPU minutes | "
          "steps x batch | exact match | char accuracy | per class exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in shipped_models():
        d = SHIPPED_DIR / name
        meta = json.loads((d / "interp.json").read_text())
        if meta["model"]["arch"] == "native":   # the induction models: see their own table
            continue
        ev = meta.get("evaluation", meta["metrics"])
        tr = meta["training"]
        size = (d / "model.safetensors").stat().st_size / 2**20
        per = ", ".join(f"{c} {v['exact_match']:.1%}" for c, v in ev["per_class"].items())
        m = meta["model"]
        cpu = tr.get("cpu_minutes_all_stages", tr["cpu_minutes"])
        steps = " + ".join(str(st["steps"]) for st in tr.get("stages", [])) or tr["total_steps"]
        print(f"| `{name}` | {m['arch']} {m['n_layers']}L d{m['d_model']} | "
              f"{meta['task']['task']} / {meta['task']['preset']} | {meta['params']:,} | "
              f"{size:.1f} MB | {cpu:.0f} | {steps} x "
              f"{tr['recipe']['batch_size']} | {ev['exact_match']:.1%} | "
              f"{ev['char_accuracy']:.1%} | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
