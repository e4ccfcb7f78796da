"""A training run killed with SIGKILL mid-write leaves temporary files; the next start or resume
removes every one of them, whatever its name, and leaves real checkpoints byte for byte as they
were (issue 21, item 11: ``checkpoints/<stage>/.latest.*.tmp`` stayed forever)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deltaworld_core.checkpoint import atomic_write, remove_atomic_leftovers
from deltaworld_core.training.checkpoints import Metrics, checkpoint_dir, load_checkpoint, save_checkpoint
from deltaworld_core.training.config import load_train_config


def leftover_of(target: Path) -> Path:
    """The temporary file a writer killed inside atomic_write(target) leaves: the name the real
    writer used (it rewrites ``target`` with its own bytes), recreated with half a file."""
    names = []
    content = target.read_bytes() if target.exists() else b""
    atomic_write(target, lambda tmp: names.append(Path(tmp)) or Path(tmp).write_bytes(content))
    names[0].write_bytes(b"half")
    return names[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the run but TensorBoard's (each Metrics opens a new event file)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "tb" not in p.relative_to(root).parts}


def test_start_and_resume_remove_every_leftover_and_keep_real_checkpoints(tmp_path):
    out = tmp_path / "run"
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text(f"stage: tokenizer\nout: {out}\nsteps: 4\n")
    cfg = load_train_config(yaml_path)
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(cfg, net, opt, sched, 1)
    save_checkpoint(cfg, net, opt, sched, 2)
    root = checkpoint_dir(cfg)
    Metrics(out, cfg.stage, start_step=2).close()
    kept = snapshot(out)

    def plant() -> list[Path]:
        # what kill -9 leaves: atomic_write's temporary files (one made by a real killed writer), a
        # half-written checkpoint folder; and, to be kept, files that only look a little alike
        planted = [leftover_of(root / "latest"), leftover_of(out / "metrics_tokenizer.csv")]
        for path in (root / ".state.pt.abc_1234.tmp", out / ".tokenizer.safetensors.zz9xk2qa.tmp",
                     out / ".model.yaml.q1w2e3r4.tmp"):
            path.write_bytes(b"half")
            planted.append(path)
        half = root / ".tmp_step_00000003_4242"
        half.mkdir()
        (half / ".model.safetensors.a1b2c3d4.tmp").write_bytes(b"half")
        planted.append(half)
        return planted

    keep = [out / "notes.tmp", out / ".hidden", root / "step_00000002" / "user.tmp", out / ".x.toolong12.tmp"]
    for path in keep:
        path.write_text("mine")

    planted = plant()
    Metrics(out, cfg.stage, start_step=2).close()  # a run (re)starting: rank 0 builds its metrics first
    assert not [p for p in planted if p.exists()]
    assert all(p.read_text() == "mine" for p in keep)

    planted = plant()
    assert load_checkpoint(cfg, net, opt, sched) == 2  # a resume, on every rank
    assert not [p for p in planted if p.exists() and p.parent == root]
    for path in keep:
        path.unlink()
    # the real checkpoints, the latest pointer and the metrics are as they were
    assert {k: v for k, v in snapshot(out).items() if not Path(k).name.startswith(".")} == kept


def test_the_cleanup_pattern_is_the_name_atomic_write_uses(tmp_path):
    seen = []
    atomic_write(tmp_path / "weights.safetensors", lambda tmp: seen.append(Path(tmp)) or Path(tmp).write_text("x"))
    assert (tmp_path / "weights.safetensors").read_text() == "x"
    seen[0].write_text("as if left by a killed writer")
    assert remove_atomic_leftovers(tmp_path) == [seen[0]] and not seen[0].exists()
    assert (tmp_path / "weights.safetensors").exists()
