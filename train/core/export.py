"""Export of a trained net: script it, save it, reload the file and check it against eager."""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def export_torchscript(
    net: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_dir: str | Path,
    meta: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Scripts `net`, checks it against eager on `example_inputs`, and writes the artifact folder.

    Writes model.pt (TorchScript), state_dict.pt (eager weights, for parity tests), meta.json
    (what the handler needs) and metrics.json (test metrics).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(*example_inputs), net(*example_inputs))
    scripted.save(str(out / "model.pt"))
    # A file that scripts and saves can still fail to load (PyG #8867): prove it round-trips.
    reloaded = torch.jit.load(str(out / "model.pt"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*example_inputs), net(*example_inputs))
    torch.save(net.state_dict(), out / "state_dict.pt")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("exported %s: %s", out, metrics)
    return out
