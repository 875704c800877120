"""How far apart are TSAM's s perturbed losses when fine-tuning MiniLM's top layer on GLUE?

    python benchmarks/glue_tilt_weights.py [--task MRPC] [--examples 256] [--steps 8]

Trains the top layer + head (on the frozen-layer cache of the first ``--examples`` training
examples) with TSAM for a few steps at each tilt and prints the s = 3 perturbed losses, their
softmax(t·L) weights and the effective sample size of the first and last step.  With the
settings of docs/results-glue.md (ρ = 0.05, noise radius 1, dropout on) the losses differ by
about 1e-3, so t ≤ 5 gives uniform weights: TSAM then behaves as its t → 0 limit.
``--no-dropout`` trains in eval mode, so the spread comes from the perturbations alone.
"""

from __future__ import annotations

import argparse

import torch

from tiltedsam.data.glue import TASKS, load_glue_split
from tiltedsam.data.glue_cache import default_glue_root, encode_frozen
from tiltedsam.models.text import TopLayers, load_encoder, pad_states
from tiltedsam.optim import create_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="MRPC", choices=["RTE", "MRPC"])
    parser.add_argument("--data-path", default=str(default_glue_root()))
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--tilts", default="1,5,100")
    parser.add_argument("--no-dropout", action="store_true", help="train in eval mode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder, tokenizer = load_encoder(None)
    pairs = load_glue_split(args.data_path, args.task, "train")
    n = args.examples
    states = encode_frozen(encoder, tokenizer, pairs.text_a[:n], pairs.text_b[:n],
                           trainable_layers=1)  # fmt: skip
    labels = torch.tensor(pairs.labels[:n])
    assert not TASKS[args.task].regression
    for tilt in (float(t) for t in args.tilts.split(",")):
        torch.manual_seed(0)
        model = TopLayers(encoder, 1, 2).train(not args.no_dropout)
        opt = create_optimizer("tsam", model.parameters(), base="adamw", lr=1e-3, tilt=tilt,
                               num_samples=3, rho=0.05, noise_radius=1.0, model=model, seed=0)  # fmt: skip
        for step in range(args.steps):
            idx = [(32 * step + i) % n for i in range(32)]
            hidden, mask = pad_states([states[i] for i in idx])

            def closure(hidden=hidden, mask=mask, idx=idx, model=model):
                loss = torch.nn.functional.cross_entropy(model(hidden, mask), labels[idx])
                loss.backward()
                return loss

            opt.zero_grad()
            opt.step(closure)
            if step in (0, args.steps - 1):
                last = opt.last_step
                losses = ", ".join(f"{v:.4f}" for v in last.losses.tolist())
                weights = ", ".join(f"{v:.3f}" for v in last.weights.tolist())
                print(f"t={tilt:g} step {step}: losses [{losses}] weights [{weights}] "
                      f"ESS {float(last.effective_sample_size):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
