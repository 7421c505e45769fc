"""Why the forgotten digit returns under retain-only fine-tuning (issue 15 item 2; docs/durable.md).

For each method (10 updates from the cached VAE, seed ``--seed``), measures:

* distances ‖θ_u − θ_o‖ (unlearned to original), ‖θ_u − θ_ret‖ (to the retrained VAE), per layer;
* cos(−∇ℓ_r(θ_u), θ_o − θ_u): whether the retain gradient (all retain images, BatchNorm frozen) points
  back to the original, overall and per layer;
* attack (i) (100 retain-only Adam steps, ``uno.unlearn.attacks.retain_finetune``; the attacked model is
  its result's ``model``): f on fresh codes, and the share of the way back to θ_o that the
  attack travels, ⟨θ_a − θ_u, θ_o − θ_u⟩ / ‖θ_o − θ_u‖²;
* which layers carry the digit back: the attack restricted to one layer, and the attack with one layer
  held at its unlearned value (the attack's ``params``);
* the latent side: the share of fresh codes whose nearest encoded training image (μ of the encoder) is a
  ``digit`` ("its territory"), and f of the decoded μ of the forget images.

f here is the MLP judge's (the tables of docs/durable.md's section on why; ``*_cnn`` keys hold the CNN
judge's after the run and after attack (i)).

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
import measure as M

from uno.unlearn.models import set_batchnorm

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


def retain_grad(model: nn.Module, s: M.Setup) -> dict[str, Tensor]:
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


def territory(model: nn.Module, s: M.Setup, z: Tensor) -> float:
    """Share of ``z`` whose nearest encoded training image (posterior mean) is a ``digit``."""
    with torch.no_grad():
        mu, _ = model.eval().encode(s.train.x)  # type: ignore[operator]
        nearest = torch.cdist(z, mu).argmin(1)
    return float((s.train.y[nearest] == s.digit).float().mean())


def f_encoded(model: nn.Module, s: M.Setup) -> float:
    """f of the decoded posterior means of the forget images (does the decoder draw the digit where the
    encoder puts it?)."""
    with torch.no_grad():
        mu, _ = model.eval().encode(s.forget_x)  # type: ignore[operator]
        x = model.decode(mu)  # type: ignore[operator]
    return M.f_images(s.judge, x, s.digit)


def latent(model: nn.Module, s: M.Setup, z: Tensor) -> dict[str, float]:
    return {"territory": territory(model, s, z), "f_encoded": f_encoded(model, s)}


def attack_f(model: nn.Module, s: M.Setup, seed: int, params: Any = None) -> float:
    """Judge 1's f on every fresh code after attack (i) (restricted to ``params``)."""
    return M.attack(model, s, seed, params=params, every=100).final[0]


def per_layer_attacks(model: nn.Module, s: M.Setup, seed: int) -> dict[str, Any]:
    names = [n for n, _ in model.named_parameters()]
    only, held = {}, {}
    for prefix in LAYERS:
        mine = [n for n in names if n.startswith(prefix + ".")]
        rest = [n for n in names if n not in mine]
        only[prefix] = attack_f(model, s, seed, mine)
        held[prefix] = attack_f(model, s, seed, rest)
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


def hole_f(model: nn.Module, s: M.Setup, z: Tensor) -> float:
    """f on the fresh codes inside the digit's territory under the ORIGINAL encoder (the hole)."""
    with torch.no_grad():
        mu, _ = s.vae.eval().encode(s.train.x)  # type: ignore[operator]
        inside = s.train.y[torch.cdist(z, mu).argmin(1)] == s.digit
    return M.f_codes(model, s, z[inside])


def curve(a: Any) -> dict[str, float]:
    """Judge 1's f per measured attack step (the last on every fresh code)."""
    return {**{str(k): v for k, v in zip(a.at, a.f1)}, str(a.at[-1]): a.final[0]}


def study(s: M.Setup, spec: str, seed: int, ret: nn.Module) -> dict[str, Any]:
    method, run, hp = parse(spec)
    u = M.unlearn(s, method, seed, hparams=hp, **run)
    z = M.fresh(s, seed).z
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
    a, a_orig = M.attack(u.model, s, seed), M.attack(s.vae, s, seed, every=100)
    attacked, attacked_orig = a.model, a_orig.model
    assert attacked is not None and attacked_orig is not None
    a_flat = flat(attacked)
    return {
        "method": spec,
        "seed": seed,
        "f_unlearn": u.f1,
        "f_unlearn_cnn": u.f2,
        "attack_cnn": a.final[1],
        "dist_orig": float(gap.norm()),
        "dist_retrain": float((r_flat - u_flat).norm()),
        "orig_to_retrain": float((r_flat - o_flat).norm()),
        "norm_orig": float(o_flat.norm()),
        "cos_back": cos(-g_flat, gap),
        "layers": rows,
        "attack": curve(a),
        "attack_on_original": curve(a_orig),
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
    s = M.setup(args.digit)
    ret = s.retrain
    assert ret is not None
    res: dict[str, Any] = {
        "retrain_s": s.retrain_s,
        "retrained": {
            "f": M.fresh(s, args.seed).pair(ret)[0],
            "attack": curve(M.attack(ret, s, args.seed)),
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
