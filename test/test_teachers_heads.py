"""The heads stage with a teacher-labelled real pool: real frames teach person where the teacher
speaks, the synthetic world the rest; a synthetic-only run draws the batches it always drew."""

from __future__ import annotations

from pathlib import Path

import torch

from deltaworld_core.data.sampling import Sampler
from deltaworld_core.data.windows import Window
from deltaworld_core.heads import TaskHeads
from deltaworld_core.training.config import load_train_config
from deltaworld_core.training.heads import HeadsStage
from deltaworld_core.training.partial_labels import IGNORE, not_class

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["sky", "road", "person"]
GRID = (2, 2)


def synthetic_pool() -> list[Window]:
    """Features: channel 0 high = sky, channel 1 high = road; exact labels and depth."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 4, 4, generator=g) * 0.1
    cls = torch.randint(0, 2, (6, 4), generator=g)
    feats[..., 0] += (cls == 0) * 2.0
    feats[..., 1] += (cls == 1) * 2.0
    semantic = cls.view(6, 2, 2).repeat_interleave(2, 1).repeat_interleave(2, 2).to(torch.uint8)
    depth = torch.full((6, 4, 4), 5.0)
    return [Window(feats.half(), 25.0, "synthetic0", semantic, depth)]


def real_pool() -> list[Window]:
    """Features: channel 3 high where the teacher saw a person; everywhere else "not person" or unknown."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 4, 4, generator=g) * 0.1
    person = torch.zeros(6, 4, dtype=torch.bool)
    person[:, 0] = True
    feats[..., 3] += person * 2.0
    feats[..., 1] += (~person) * 2.0  # the real background looks like the synthetic road
    codes = torch.where(person, 2, not_class(2)).view(6, 2, 2).repeat_interleave(2, 1).repeat_interleave(2, 2)
    codes = codes.to(torch.uint8)
    codes[:, 0, 3] = IGNORE
    return [Window(feats.half(), 25.0, "teacher:clip", codes)]


def make_stage(real, fraction):
    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads.yaml")
    cfg.real_labels.fraction = fraction
    sampler = Sampler(0, [], synthetic_pool(), None, (0.16, 0.24))
    return HeadsStage(cfg, sampler, GRID, real), sampler


def train(stage, steps=150):
    torch.manual_seed(0)
    heads = TaskHeads(4, NAMES, depth_bins=8, max_depth=10.0).train()
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        items = [stage.item(g) for _ in range(16)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        loss = stage.loss(heads, batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return heads.eval()


def predicted(heads, feats):
    return heads.segmentation(feats.float(), GRID).argmax(1).flatten(1)


def test_real_frames_teach_person_where_the_teacher_speaks():
    real = real_pool()
    heads = train(make_stage(real, 0.5)[0])
    pred = predicted(heads, real[0].features)
    assert (pred[:, 0] == 2).all()  # the teacher's person
    assert (pred[:, 1:] != 2).all()  # its "not person" stays any other class
    synth = synthetic_pool()[0]
    assert torch.equal(predicted(heads, synth.features), synth.semantic[:, ::2, ::2].flatten(1).long())
    # without the real pool the teacher's person is not learnt: the synthetic world never shows
    # channel 3, so what an untrained direction says there is chance, not person
    alone = predicted(train(make_stage(real, 0.0)[0]), real[0].features)
    assert (alone[:, 0] == 2).float().mean() < 0.5


def test_real_items_carry_no_depth_and_the_share_follows_the_fraction():
    stage, _ = make_stage(real_pool(), 0.5)
    g = torch.Generator().manual_seed(3)
    items = [stage.item(g) for _ in range(400)]
    real = [it for it in items if torch.isnan(it["depth"]).all()]
    assert 0.4 < len(real) / len(items) < 0.6
    heads = TaskHeads(4, NAMES, depth_bins=8, max_depth=10.0).train()
    only_real = {k: torch.stack([it[k] for it in real[:8]]) for k in real[0]}
    loss = stage.loss(heads, only_real)
    loss.backward()
    assert torch.isfinite(loss) and heads.segmentation.conv.weight.grad.abs().sum() > 0


def test_a_synthetic_only_stage_draws_the_batches_it_always_drew():
    for stage, sampler in (make_stage(None, 0.5), make_stage([], 0.0)):
        g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        for _ in range(20):
            got = stage.item(g)
            w = sampler.synthetic[Sampler.integer(ref, len(sampler.synthetic))]
            j = Sampler.integer(ref, len(w.features))
            assert torch.equal(got["features"], w.features[j].float()) and torch.equal(got["semantic"], w.semantic[j])


def test_person_weight_weighs_person_pixels_only_with_a_real_pool():
    stage, _ = make_stage(real_pool(), 0.5)
    assert stage.class_weights(NAMES) is None  # the recipe's default weight is 1
    stage.person_weight = 4.0
    assert stage.class_weights(NAMES).tolist() == [1.0, 1.0, 4.0]
    cfg = load_train_config(ROOT / "deltaworld_core/configs/train_heads.yaml")
    cfg.real_labels.person_weight = 4.0
    alone = HeadsStage(cfg, Sampler(0, [], synthetic_pool(), None, (0.16, 0.24)), GRID, None)
    assert alone.class_weights(NAMES) is None  # a synthetic-only run trains as it always did
