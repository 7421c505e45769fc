"""Class unlearning for a small class-conditional diffusion model (issue 19, docs/diffusion.md).

``model`` (the UNet), ``schedule`` (the DDPM β schedule, ``q_sample``, the one-step x̂₀), ``sampling``
(deterministic DDIM with classifier-free guidance), ``train`` (DDPM training with label dropout, cached
like the VAE), ``task`` (the unlearning task of ``uno unlearn --model diffusion``) and ``esd`` (the
ESD-style negative-guidance baseline). Importing this package loads nothing heavy.
"""
