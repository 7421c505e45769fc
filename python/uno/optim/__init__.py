"""Projected optimizers: SGD and Adam/AdamW steps that move orthogonally to a basis, fused.

:class:`ProjectedSGD` and :class:`ProjectedAdam` are ``torch.optim.Optimizer`` subclasses with the
semantics, state names and ``state_dict`` layout of ``torch.optim.SGD`` and ``torch.optim.Adam`` /
``torch.optim.AdamW``: a state saved by one loads into the other. Given a basis (a :class:`uno.Basis`
over the optimizer's parameters in order, or raw vectors, orthonormalised once by
:func:`uno.orthonormalize`), each step removes the basis directions in one of two places:

``project="grad"`` (default)
    The gradient is projected, ``g' = g − Qᵀ(Q g)``, and the optimizer runs on ``g'``: exactly
    ``uno.project_`` on the gradients followed by the stock optimizer. Right when the *loss signal*
    along the basis must be ignored (e.g. "do not use what the retained data's gradients say"): the
    optimizer's states never see those directions. The parameter change itself is not orthogonal to
    the basis when momentum carries older components, when weight decay acts, or with Adam (its
    per-coordinate scaling ``1/(√v̂+ε)`` rotates an orthogonal gradient out of the complement).
``project="update"``
    The optimizer runs on the raw gradient (its states see everything) and the final parameter change
    ``u`` (after momentum, Adam's preconditioning and weight decay) is projected:
    ``p ← p + u − Qᵀ(Q u)``. Right when the *parameters* must not move along the basis (e.g. a
    constraint "do not change the model's outputs on retained data to first order"): each step's
    parameter change is orthogonal to the basis, up to the final rounding of ``p``.

Cost per step (one parameter group, fp32, k basis vectors; bytes per parameter moved):
* ``project="grad"``: pass 1 reads g and Q (``4 + 4k``): ``c = Q g`` (float64 sums); pass 2 reads g, Q,
  p, states and writes p, states (SGD with momentum ``4+4k+16``; Adam ``4+4k+24``). Adam: ``32 + 8k``.
* ``project="update"``: pass 1 recomputes the update without writing (reads g, p, states, Q) to get
  ``a = Q u``; pass 2 as above. Adam: ``52 + 8k``.
* no basis: one pass (the stock optimizer's maths; Adam 28 bytes).

On the cpu backend a step reuses what the previous step built (its kernel calls and pointer tables) while
nothing they depend on changed: the parameter groups, the states, the parameters' storage, the basis,
the modes (checked on every step in O(T) reads; docs/kernels.md, "The cached step plan"); the results are
those of a step built from scratch, bit for bit.

Precision: the element-wise optimizer maths runs in float32 for float32/float16/bfloat16 parameters and
float64 for float64 ones (as torch's optimizers); the projection is formed in float64 and rounded
once; reductions accumulate in float64. float16/bfloat16 parameters keep float32 states (torch keeps
them in the parameter's dtype; loading either way converts). One classical Gram-Schmidt pass is made
per step (the component left along Q is at rounding level relative to ``|g|``, not ``|g'|``).

Mixed precision: ``grad_scale`` / ``found_inf`` behave as in ``torch.optim.Adam(fused=True)`` (also
read from the attributes ``torch.amp.GradScaler`` sets): gradients are divided by ``grad_scale``;
when ``found_inf`` is nonzero the step is skipped entirely, no state (not even Adam's step count)
moves. On CUDA the kernels read both tensors on the device: no host synchronisation (one exception:
the first step of SGD with momentum, where creating the momentum buffers or not depends on found_inf,
reads it once on the host).

Projected gradients are not written back into ``p.grad`` unless ``write_grad=True`` (then ``p.grad``
holds the gradient the optimizer used: projected in ``"grad"`` mode, unscaled). An expanded
(stride-0) ``p.grad`` is read through a contiguous copy; with ``write_grad=True`` it is a ValueError
(expanded/overlapping memory cannot be written in place), raised before anything moves. The
functional forms (``uno.project_sgd_``, ``uno.project_adam_``) step leaf parameters in grad mode as
well as under ``torch.no_grad()``; a parameter, state or written grad that is a non-leaf of an
autograd graph (``requires_grad`` and a ``grad_fn``) raises RuntimeError in grad mode: no uno op is
differentiable, so autograd would not see the write.

Parameters without a gradient (``p.grad is None``, e.g. an unused head after ``zero_grad()``) are not
updated and keep their state, as in ``torch.optim``. The projection then runs within the parameters
that are updated: the basis is restricted to them and re-orthonormalised there (:func:`uno.orthonormalize`
of the restricted rows; the rank rule drops directions that vanish on them), so the step's change,
zero on the skipped parameters, is still orthogonal to every vector of the full basis. The restricted
basis is cached while the set of updated parameters and the basis stay the same. A restricted basis of
rank 0 gives an unprojected step; no gradient at all, no step.

Non-finite gradients: when the projection coefficients of a step are not finite (an inf/nan gradient
element; in ``"update"`` mode an inf/nan update element), the step does not project, in every
backend (decided on the device, no host synchronisation): ``"grad"`` mode is then exactly
``uno.project_`` (which leaves a non-finite gradient untouched) followed by the stock optimizer, and
``"update"`` mode the stock step. Only the non-finite elements become non-finite, as in
``torch.optim``; a nan is never broadcast into every parameter. (With AMP, ``found_inf`` skips the
step before that.)

Hyperparameters (``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``betas``, ``eps``) must be
finite real numbers in torch's ranges; they are checked at construction and again at every step (a
scheduler may change ``param_groups``), before anything is written.

FSDP2 (DTensor parameters and gradients, ``Shard(0)`` or ``Replicate()``): the fused passes run on
every rank's local shards; the k coefficients of a step are summed over the mesh with one
``all_reduce`` (replicated parameters counted once), so every rank subtracts the same global
projection; the basis must be built over DTensors distributed like the parameters, and the states
are DTensors like the parameters. Under DDP the gradients are already global and nothing is reduced.
See docs/distributed.md.

The functional forms :func:`project_sgd_` and :func:`project_adam_` take parameter, gradient and
state tensor lists, for users with their own optimizer loops. They update every parameter they are
given with the basis as it is (there is no None gradient there): to leave parameters out, pass the
subset and a basis over that subset. The tensors they write (parameters, states, and gradients with
``write_grad=True``) must not overlap one another, the gradients or the basis (ValueError).
"""

from uno.optim.adam import ProjectedAdam, project_adam_
from uno.optim.sgd import ProjectedSGD, project_sgd_

__all__ = ["ProjectedAdam", "ProjectedSGD", "project_adam_", "project_sgd_"]
