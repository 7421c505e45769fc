"""Why the forgotten digit returns under retain-only fine-tuning (issue 15 item 2; docs/durable.md).

For each method (10 updates from the cached VAE, seed ``--seed``), measures:

* distances ‖θ_u − θ_o‖ (unlearned to original), ‖θ_u − θ_ret‖ (to the retrained VAE), per layer;
* cos(−∇ℓ_r(θ_u), θ_o − θ_u): whether the retain gradient (all retain images, BatchNorm frozen) points
  back to the original, overall and per layer;
* attack (i) (100 retain-only Adam steps): f on fresh codes, and the share of the way back to θ_o that the
  attack travels, ⟨θ_a − θ_u, θ_o − θ_u⟩ / ‖θ_o − θ_u‖²;
* which layers carry the digit back: the attack restricted to one layer, and the attack with one layer
  held at its unlearned value;
* the latent side: the share of fresh codes whose nearest encoded training image (μ of the encoder) is a
  ``digit`` ("its territory"), and f of the decoded μ of the forget images.

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/why.py \
        --methods retain-hat salun --seed 0 --out experiments/results/durable/why.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe

from uno.unlearn.models import set_batchnorm
from uno.unlearn.tasks import in_forget

#: parameter groups of the MNIST VAE (module prefix → name in the tables)
LAYERS = {
    "enc.0": "enc Linear 784→400",
    "enc.1": "enc BatchNorm",
    "mu": "μ head",
    "logvar": "log σ² head",
    "dec.0": "dec Linear 2→400",
    "dec.1": "dec BatchNorm",
    "dec.3": "dec Linear 400→784",
}


def flat(model: nn.Module, prefix: str = "") -> Tensor:
    return torch.cat(
        [p.detach().reshape(-1) for n, p in model.named_parameters() if n.startswith(prefix)]
    )


def retain_grad(model: nn.Module, s: probe.Setup) -> dict[str, Tensor]:
    """∇ℓ_r over every retain image (sum-reduced ELBO), BatchNorm statistics frozen, fixed noise."""
    m = model
    m.train()
    set_batchnorm(m, False)
    torch.manual_seed(4321)
    m.zero_grad(set_to_none=True)
    m.loss(s.retain_x).backward()  # type: ignore[operator]
    out = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    m.eval()
    return out


def cos(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def territory(model: nn.Module, s: probe.Setup, z: Tensor) -> float:
    """Share of ``z`` whose nearest encoded training image (posterior mean) is a ``digit``."""
    with torch.no_grad():
        mu, _ = model.eval().encode(s.train.x)  # type: ignore[operator]
        nearest = torch.cdist(z, mu).argmin(1)
    return float((s.train.y[nearest] == s.digit).float().mean())


def f_encoded(model: nn.Module, s: probe.Setup) -> float:
    """f of the decoded posterior means of the forget images (does the decoder draw the digit where the
    encoder puts it?)."""
    with torch.no_grad():
        mu, _ = model.eval().encode(s.forget_x)  # type: ignore[operator]
        x = model.decode(mu)  # type: ignore[operator]
    return float(in_forget(s.judge, x, [s.digit]).float().mean())


def latent(model: nn.Module, s: probe.Setup, z: Tensor) -> dict[str, float]:
    return {"territory": territory(model, s, z), "f_encoded": f_encoded(model, s)}


def per_layer_attacks(model: nn.Module, s: probe.Setup, seed: int) -> dict[str, Any]:
    names = [n for n, _ in model.named_parameters()]
    only, held = {}, {}
    for prefix in LAYERS:
        mine = [n for n in names if n.startswith(prefix + ".")]
        rest = [n for n in names if n not in mine]
        only[prefix] = probe.attack(model, s, seed, params=mine, at=(100,))[1][100]
        held[prefix] = probe.attack(model, s, seed, params=rest, at=(100,))[1][100]
    return {"only": only, "held": held}


def parse(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``"name[:k=v,...]"`` → (method, run options (steps, lr), method hyper-parameters)."""
    name, _, rest = spec.partition(":")
    run: dict[str, Any] = {"steps": 10}
    hp: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, v = item.split("=")
        val: Any = float(v) if "." in v or "e" in v else int(v)
        (run if k in ("steps", "lr") else hp)[k] = val
    return name, run, hp


def hole_f(model: nn.Module, s: probe.Setup, z: Tensor) -> float:
    """f on the fresh codes inside the digit's territory under the ORIGINAL encoder (the hole)."""
    with torch.no_grad():
        mu, _ = s.vae.eval().encode(s.train.x)  # type: ignore[operator]
        inside = s.train.y[torch.cdist(z, mu).argmin(1)] == s.digit
    return probe.f_fresh(model, s.judge, z[inside], s.digit)


def study(s: probe.Setup, spec: str, seed: int, ret: nn.Module) -> dict[str, Any]:
    method, run, hp = parse(spec)
    u = probe.unlearn(s, method, seed, hparams=hp, **run)
    z = probe.fresh_codes(seed)
    o_flat, u_flat, r_flat = flat(s.vae), flat(u.model), flat(ret)
    gap = o_flat - u_flat
    g = retain_grad(u.model, s)
    g_flat = torch.cat([g[n].reshape(-1) for n, _ in u.model.named_parameters()])
    rows: dict[str, Any] = {}
    for prefix in LAYERS:
        gp = torch.cat([g[n].reshape(-1) for n in g if n.startswith(prefix + ".")])
        d_o = flat(s.vae, prefix + ".") - flat(u.model, prefix + ".")
        rows[prefix] = {
            "dist_orig": float(d_o.norm()),
            "dist_retrain": float((flat(ret, prefix + ".") - flat(u.model, prefix + ".")).norm()),
            "norm_orig": float(flat(s.vae, prefix + ".").norm()),
            "cos_back": cos(-gp, d_o),
        }
    attacked, curve = probe.attack(u.model, s, seed)
    a_flat = flat(attacked)
    attacked_orig, curve_orig = probe.attack(s.vae, s, seed, at=(0, 100))
    return {
        "method": spec,
        "seed": seed,
        "f_unlearn": u.f,
        "dist_orig": float(gap.norm()),
        "dist_retrain": float((r_flat - u_flat).norm()),
        "orig_to_retrain": float((r_flat - o_flat).norm()),
        "norm_orig": float(o_flat.norm()),
        "cos_back": cos(-g_flat, gap),
        "layers": rows,
        "attack": curve,
        "attack_on_original": curve_orig,
        "way_back": float((a_flat - u_flat) @ gap / (gap @ gap)),
        "attack_dist": float((a_flat - u_flat).norm()),
        # the same attack (same batches) from the original: how far apart the two attacked models end
        "attacked_gap": float((a_flat - flat(attacked_orig)).norm()),
        "hole_f": {
            "original": hole_f(s.vae, s, z),
            "unlearned": hole_f(u.model, s, z),
            "attacked": hole_f(attacked, s, z),
            "attacked_original": hole_f(attacked_orig, s, z),
        },
        "per_layer": per_layer_attacks(u.model, s, seed),
        "latent": {
            "original": latent(s.vae, s, z),
            "unlearned": latent(u.model, s, z),
            "attacked": latent(attacked, s, z),
            "retrained": latent(ret, s, z),
        },
    }


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["retain-hat", "salun"],
        help="name[:steps=..,lr=..,hparam=..] (default 10 steps at lr 1e-3)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--digit", type=int, default=1)
    ap.add_argument("--out", default="experiments/results/durable/why.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = probe.setup(args.digit)
    ret, ret_s = probe.retrained(s)
    z = probe.fresh_codes(args.seed)
    res: dict[str, Any] = {
        "retrain_s": ret_s,
        "retrained": {
            "f": probe.f_fresh(ret, s.judge, z, s.digit),
            "attack": probe.attack(ret, s, args.seed)[1],
        },
        "runs": [],
    }
    for m in args.methods:
        res["runs"].append(study(s, m, args.seed, ret))
        print(json.dumps(res["runs"][-1], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
