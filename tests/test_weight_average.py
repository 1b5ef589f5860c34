"""generator.ema: what deflate.model.train.fit validates and keeps is the exponential moving average
of the weights after every optimiser step, computed here by hand from the raw run."""
import torch

from deflate.model import train


class Batcher:
    def batches(self, examples, bs, shuffle, bucket, seed):
        return [list(range(i, min(i + bs, len(examples)))) for i in range(0, len(examples), bs)]

    def collate(self, exs):
        return {"x": torch.stack([e[0] for e in exs]), "y": torch.stack([e[1] for e in exs])}


def fit(tmp_path, name, ema, steps=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    examples = [(r, r.sum(0, keepdim=True)) for r in x]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    epochs = iter(range(100))
    cfg = {"optimizer": "adamax", "lr": 0.05, "weight_decay": 0.0, "epochs": 3, "batch_size": 6,
           "bucketing": False, "grad_clip": 1.0}
    seen = []

    def validate(m):  # the last epoch scores best, so it is what stays loaded
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"score": float(next(epochs))}

    make = train.make_optimizer
    if steps is not None:  # record the raw weights after every step
        def recording(model, cfg):
            opt = make(model, cfg)
            opt.register_step_post_hook(lambda *_: steps.append({k: v.clone() for k, v in model.state_dict().items()}))
            return opt
        train.make_optimizer = recording
    try:
        train.fit(model, examples, Batcher(), cfg, loss_fn=lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(),
                  validate=validate, ckpt_dir=tmp_path / name, run_hash=name, seed=1, ema=ema)
    finally:
        train.make_optimizer = make
    return model, seen


def test_fit_keeps_the_moving_average_of_every_steps_weights(tmp_path):
    steps = []
    raw, raw_seen = fit(tmp_path, "raw", 0.0, steps)
    assert len(steps) == 12  # 24 examples, batches of 6, 3 epochs
    expected = dict(steps[0])
    for s in steps[1:]:
        expected = {k: 0.9 * expected[k] + 0.1 * s[k] for k in s}
    averaged, seen = fit(tmp_path, "ema", 0.9)
    for k, v in averaged.state_dict().items():
        torch.testing.assert_close(v, expected[k])  # the average, loaded at the end
        assert not torch.allclose(v, raw.state_dict()[k])  # and not the raw weights
    assert all(not torch.equal(a["weight"], b["weight"]) for a, b in zip(seen, raw_seen))  # validated: the average
