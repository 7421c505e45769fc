"""The audit of uno.optim and uno.per_sample's public API (issue 13's campaign): a table of bad or
degenerate inputs and what each must give.

Each :class:`Case` builds fresh objects and returns ``(call, watched)``: ``call()`` runs the public
function, ``watched`` lists the tensors it must leave untouched when it raises. ``expect`` is either
``ERROR`` (a TypeError/ValueError whose message contains every word of ``words``, nothing written) or a
predicate on ``call()``'s result (a documented, checked result). :func:`outcome` sorts a run into
``clean`` (the expected error), ``ok`` (the documented result), ``traceback`` (any other exception, or
a TypeError/ValueError that does not name what was wrong) or ``silent`` (no error where one was due,
a wrong result, or inputs written before an error). tests/test_audit.py asserts every case is clean
or ok; ``python tests/audit_cases.py`` prints the counts per class of defect.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import torch
from torch import nn

import uno
import uno.per_sample as ps
from uno.optim import ProjectedAdam, ProjectedSGD, project_adam_, project_sgd_

ERROR = "error"
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    group: str  # the class of defect
    name: str
    setup: Callable[[], Tuple[Callable[[], Any], Sequence[torch.Tensor]]]
    expect: Any = ERROR  # ERROR or a predicate on the result
    words: Tuple[str, ...] = ()  # what the error message must name


def outcome(case: Case) -> Tuple[str, str]:
    """(``clean`` | ``ok`` | ``traceback`` | ``silent``, detail) of one run of ``case``."""
    call, watched = case.setup()
    before = [t.detach().clone() for t in watched]

    def untouched() -> bool:
        return all(
            a.shape == b.shape and torch.equal(a.nan_to_num(1.5), b.detach().nan_to_num(1.5))
            for a, b in zip(before, watched)
        )

    try:
        result = call()
    except (TypeError, ValueError) as e:
        msg = str(e)
        if case.expect is not ERROR:
            return "traceback", f"{type(e).__name__}: {msg[:160]}"
        if not untouched():
            return "silent", f"raised after writing: {msg[:160]}"
        missing = [w for w in case.words if w.lower() not in msg.lower()]
        if missing:
            return "traceback", f"message lacks {missing}: {type(e).__name__}: {msg[:160]}"
        return "clean", msg[:160]
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {str(e)[:160]}"
    if case.expect is ERROR:
        return "silent", "no error"
    try:
        good = bool(case.expect(result))
    except Exception as e:
        return "silent", f"result check raised {type(e).__name__}: {e}"
    return ("ok", "") if good else ("silent", "wrong result")


# ---------------------------------------------------------------------------------------------------
# Fixtures.
# ---------------------------------------------------------------------------------------------------
def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def _backward(m: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    p = next(m.parameters())
    x = torch.randn(8, 4, generator=g, dtype=p.dtype)
    m.zero_grad()
    m(x).pow(2).sum().backward()


def _basis(params: Sequence[torch.Tensor], k: int = 2, seed: int = 3) -> uno.Basis:
    g = torch.Generator().manual_seed(seed)
    vecs = [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(k)]
    return uno.orthonormalize(vecs, backend="reference")


def _finite_params(m: nn.Module) -> Callable[[Any], bool]:
    return lambda _: all(bool(torch.isfinite(p).all()) for p in m.parameters())


def _ctor(cls: Any, **kw: Any) -> Callable[[], Tuple[Callable[[], Any], List[torch.Tensor]]]:
    """Construct ``cls`` with ``kw`` and run one step (a bad value may only surface there)."""

    def setup():
        m = _model()
        _backward(m)
        params = list(m.parameters())

        def call():
            opt = cls(params, **kw)
            opt.step()
            return opt

        return call, params

    return setup


def _stepper(cls: Any, act: Callable[[Any, List[torch.Tensor]], Any]):
    """``act(optimizer, params)`` on an optimizer over a model that has gradients."""

    def setup():
        m = _model()
        _backward(m)
        params = list(m.parameters())
        opt = cls(params, lr=0.1)
        return (lambda: act(opt, params)), params + [p.grad for p in params]

    return setup


def _group_change(cls: Any, key: str, value: Any, **kw: Any):
    """A scheduler-style change of one param_groups entry after construction, then a step."""

    def setup():
        m = _model()
        _backward(m)
        params = list(m.parameters())
        opt = cls(params, lr=1e-2, **kw)
        opt.param_groups[0][key] = value
        return opt.step, params + [p.grad for p in params]

    return setup


def _step_with(cls: Any, prepare: Callable[[nn.Module], Any], mode: str = "grad", **kw: Any):
    """One step after ``prepare(model)`` has set up the gradients (or the state)."""

    def setup():
        m = _model()
        _backward(m)
        params = list(m.parameters())
        basis = _basis(params)
        opt = cls(params, lr=1e-2, basis=basis, project=mode, **kw)
        extra = prepare(m) or []
        watched = params + [p.grad for p in params if p.grad is not None] + list(extra)
        return opt.step, watched

    return setup


# ---------------------------------------------------------------------------------------------------
# uno.optim cases.
# ---------------------------------------------------------------------------------------------------
def _optim_cases() -> List[Case]:
    cases: List[Case] = []
    add = cases.append
    hyper = {
        ProjectedSGD: [
            ("lr", NAN),
            ("lr", INF),
            ("lr", -1.0),
            ("lr", "0.1"),
            ("lr", None),
            ("momentum", NAN),
            ("momentum", INF),
            ("momentum", -0.5),
            ("dampening", NAN),
            ("dampening", INF),
            ("weight_decay", NAN),
            ("weight_decay", INF),
            ("weight_decay", -1.0),
        ],
        ProjectedAdam: [
            ("lr", NAN),
            ("lr", INF),
            ("lr", -1.0),
            ("lr", "0.1"),
            ("eps", NAN),
            ("eps", INF),
            ("eps", -1.0),
            ("weight_decay", NAN),
            ("weight_decay", INF),
            ("weight_decay", -1.0),
            ("betas", (NAN, 0.9)),
            ("betas", (0.9, INF)),
            ("betas", (1.0, 0.9)),
            ("betas", (-0.1, 0.9)),
            ("betas", (0.9, 0.99, 0.5)),
            ("betas", 0.9),
        ],
    }
    for cls, entries in hyper.items():
        for key, value in entries:
            kw = {"lr": 1e-2, key: value}
            add(Case("hyper", f"{cls.__name__}({key}={value!r})", _ctor(cls, **kw), words=(key,)))
            if key != "betas" and not isinstance(value, str) and value is not None:
                add(
                    Case(
                        "hyper",
                        f"{cls.__name__}: param_groups[0][{key!r}] = {value!r} before step",
                        _group_change(cls, key, value),
                        words=(key,),
                    )
                )
    for cls in (ProjectedSGD, ProjectedAdam):
        n = cls.__name__
        add(
            Case(
                "args",
                f"{n}(project='bogus')",
                _ctor(cls, lr=0.1, project="bogus"),
                words=("project", "bogus"),
            )
        )
        add(
            Case("args", f"{n}(project=None)", _ctor(cls, lr=0.1, project=None), words=("project",))
        )
        add(
            Case(
                "empty",
                f"{n}([])",
                lambda cls=cls: ((lambda: cls([], lr=0.1)), []),
                words=("empty",),
            )
        )
        add(Case("args", f"{n}(basis='abc')", _ctor(cls, lr=0.1, basis="abc"), words=("vectors",)))
        add(Case("empty", f"{n}(basis=[])", _ctor(cls, lr=0.1, basis=[]), words=("vectors",)))
        add(
            Case(
                "args",
                f"{n}(backend='bogus')",
                _ctor(cls, lr=0.1, basis=None, backend="bogus"),
                words=("backend", "bogus"),
            )
        )

        def nan_basis(cls=cls):
            m = _model()
            _backward(m)
            params = list(m.parameters())
            vec = [torch.full_like(p, NAN) for p in params]
            return (lambda: cls(params, lr=0.1, basis=vec)), params

        add(Case("nonfinite", f"{n}(basis with nan)", nan_basis, words=("non-finite",)))

        def wrong_shapes(cls=cls):
            m = _model()
            params = list(m.parameters())
            return (lambda: cls(params, lr=0.1, basis=_basis(params[:2]))), params

        add(Case("args", f"{n}(basis over other shapes)", wrong_shapes, words=("shapes",)))

        def f64_basis(cls=cls):
            m = _model()
            params = list(m.parameters())
            b = _basis([p.detach().double() for p in params])
            return (lambda: cls(params, lr=0.1, basis=b)), params

        add(Case("dtype", f"{n}(float64 basis, float32 params)", f64_basis, words=("dtype",)))

        def int_param(cls=cls):
            p = torch.zeros(3, dtype=torch.int64)
            p.grad = torch.ones(3, dtype=torch.int64)

            def call():
                cls([p], lr=0.1).step()

            return call, [p]

        add(Case("dtype", f"{n}: int64 parameter", int_param, words=("dtype",)))

        def swap_dtype(opt: Any, params: List[torch.Tensor]) -> Any:
            # torch refuses to assign a grad of another dtype; a .data swap bypasses it
            params[0].grad.data = params[0].grad.data.double()
            return opt.step()

        stepped = [
            ("dtype", "grad dtype differs from its parameter", swap_dtype, ("dtype",)),
            ("args", "grad_scale a float", lambda o, ps: o.step(grad_scale=2.0), ("grad_scale",)),
            ("args", "found_inf of 2 elements", lambda o, ps: o.step(found_inf=torch.zeros(2)),
             ("found_inf",)),
            ("args", "step(basis=over other shapes)", lambda o, ps: o.step(basis=_basis(ps[:1])),
             ("shapes",)),
        ]  # fmt: skip
        for group, what, act, words in stepped:
            add(Case(group, f"{n}: {what}", _stepper(cls, act), words=words))

        for mode in ("grad", "update"):

            def expanded(m: nn.Module) -> None:
                b = m[2].bias
                b.grad = torch.ones(1).expand(b.shape)

            add(
                Case(
                    "expanded",
                    f"{n}({mode}): expanded (stride-0) grad",
                    _step_with(cls, expanded, mode),
                    expect=lambda _: True,
                )
            )

            def expanded_write(cls=cls, mode=mode):
                m = _model()
                _backward(m)
                params = list(m.parameters())
                opt = cls(params, lr=1e-2, basis=_basis(params), project=mode, write_grad=True)
                b = params[3]
                b.grad = torch.ones(1).expand(b.shape)
                return opt.step, params

            add(
                Case(
                    "expanded",
                    f"{n}({mode}, write_grad=True): expanded grad",
                    expanded_write,
                    words=("expanded", "in place", "grad 3"),
                )
            )

            def grad_in_basis(cls=cls, mode=mode):
                m = _model()
                _backward(m)
                params = list(m.parameters())
                basis = _basis(params)
                opt = cls(params, lr=1e-2, basis=basis, project=mode, write_grad=True)
                p = params[3]
                o = basis.offsets[3]
                p.grad = basis.buffer[0, o : o + p.numel()].view(p.shape)  # grad aliases the basis
                return opt.step, [*params, basis.buffer]

            add(
                Case(
                    "aliasing",
                    f"{n}({mode}, write_grad=True): grad aliases the basis",
                    grad_in_basis,
                    words=("overlap", "basis"),
                )
            )

            def grad_is_param(cls=cls, mode=mode):
                m, ref = _model(), _model()
                p, q = m[2].bias, ref[2].bias
                p.grad, q.grad = p.detach(), q.detach().clone()
                opt = cls([p], lr=1e-2, project=mode)
                topt = (torch.optim.SGD if cls is ProjectedSGD else torch.optim.Adam)([q], lr=1e-2)
                topt.step()
                return (lambda: (opt.step(), torch.allclose(p, q))[1]), []

            add(
                Case(
                    "aliasing",
                    f"{n}({mode}): grad is the parameter's storage (as torch.optim)",
                    grad_is_param,
                    expect=lambda same: same,
                )
            )

            def zero_size(cls=cls, mode=mode):
                m = _model()
                _backward(m)
                e = nn.Parameter(torch.zeros(0, 3))
                e.grad = torch.zeros(0, 3)
                params = [*m.parameters(), e]
                opt = cls(params, lr=1e-2, basis=_basis(params), project=mode)
                return (
                    lambda: (opt.step(), all(bool(torch.isfinite(p).all()) for p in params))[1]
                ), []

            add(
                Case(
                    "zero-size",
                    f"{n}({mode}): a zero-size parameter",
                    zero_size,
                    expect=lambda ok: ok,
                )
            )

        def all_none(cls=cls):
            m = _model()
            params = list(m.parameters())
            opt = cls(params, lr=0.1, basis=_basis(params))
            return (lambda: (opt.step(), len(opt.state))[1]), params

        add(Case("none", f"{n}: every grad None", all_none, expect=lambda n_state: n_state == 0))

        def set_basis_keeps_old(cls=cls):
            m = _model()
            params = list(m.parameters())
            b = _basis(params)
            opt = cls(params, lr=0.1, basis=b)

            def call():
                try:
                    opt.set_basis(_basis(params[:1]))
                except ValueError:
                    return opt.basis is b
                return False

            return call, params

        add(
            Case(
                "args",
                f"{n}: set_basis(bad) keeps the old basis",
                set_basis_keeps_old,
                expect=lambda kept: kept,
            )
        )

    # state_dict round trips and corrupt loaded states.
    for cls, tcls in ((ProjectedSGD, torch.optim.SGD), (ProjectedAdam, torch.optim.Adam)):
        n = cls.__name__
        kw = dict(lr=1e-2, momentum=0.9) if cls is ProjectedSGD else dict(lr=1e-2)

        def round_trip(cls=cls, tcls=tcls, kw=kw):
            def call() -> bool:
                m = _model()
                opt = cls(m.parameters(), **kw)
                for s in range(2):  # the last layer unused in the first step: partial state
                    _backward(m, s)
                    if s == 0:
                        m[2].weight.grad = None
                    opt.step()
                ref = copy.deepcopy(m)
                topt = tcls(ref.parameters(), **kw)
                topt.load_state_dict(opt.state_dict())  # uno -> torch
                back = cls(m.parameters(), **kw)
                back.load_state_dict(copy.deepcopy(topt.state_dict()))  # torch -> uno
                for mm, o in ((m, back), (ref, topt)):
                    _backward(mm, 5)
                    o.step()
                return all(
                    torch.allclose(a, b, atol=1e-6)
                    for a, b in zip(m.parameters(), ref.parameters())
                )

            return call, []

        add(
            Case(
                "state",
                f"{n}: state_dict round trip via {tcls.__name__} (partial state)",
                round_trip,
                expect=lambda same: same,
            )
        )

        key = "momentum_buffer" if cls is ProjectedSGD else "exp_avg"

        def bad_state_shape(cls=cls, kw=kw, key=key):
            m = _model()
            params = list(m.parameters())
            opt = cls(params, **kw)
            _backward(m)
            opt.step()
            sd = opt.state_dict()
            sd["state"][0][key] = torch.zeros(3)
            opt.load_state_dict(sd)
            _backward(m, 2)
            return opt.step, params

        add(
            Case(
                "state",
                f"{n}: loaded {key} of the wrong shape",
                bad_state_shape,
                words=(key, "shape"),
            )
        )

        def nan_state(cls=cls, tcls=tcls, kw=kw, key=key):
            m, ref = _model(), _model()
            opt = cls(m.parameters(), **kw)
            topt = tcls(ref.parameters(), **kw)
            for mm, o in ((m, opt), (ref, topt)):
                _backward(mm)
                o.step()
                o.state[next(iter(o.state))][key][0, 0] = NAN
                _backward(mm, 2)
                o.step()
            return (
                lambda: all(
                    torch.allclose(a, b, atol=1e-6, equal_nan=True)
                    for a, b in zip(m.parameters(), ref.parameters())
                )
            ), []

        add(
            Case(
                "nonfinite",
                f"{n}: a nan in a loaded {key} (as torch.optim)",
                nan_state,
                expect=lambda same: same,
            )
        )

    # Functional forms.
    def fn_setup(adam: bool, mutate: Callable[[dict], None], **kw: Any):
        def setup():
            m = _model()
            _backward(m)
            params = [p.detach() for p in m.parameters()]
            grads = [p.grad for p in m.parameters()]
            args: dict = dict(params=params, grads=grads)
            if adam:
                args.update(
                    exp_avgs=[torch.zeros_like(p) for p in params],
                    exp_avg_sqs=[torch.zeros_like(p) for p in params],
                    max_exp_avg_sqs=[],
                    state_steps=[torch.zeros((), dtype=torch.float32) for _ in params],
                )
            else:
                args.update(momentum_buffers=[torch.zeros_like(p) for p in params])
            opts = {"lr": 1e-2, **kw}
            if not adam:
                opts.setdefault("momentum", 0.9)
            mutate(args)
            watched = [
                t
                for v in args.values()
                if isinstance(v, list)
                for t in v
                if isinstance(t, torch.Tensor)
            ]
            fn = project_adam_ if adam else project_sgd_
            return (lambda: fn(*args.values(), **opts)), watched

        return setup

    def put(key: str, value_of: Callable[[dict], Any]) -> Callable[[dict], None]:
        def mutate(a: dict) -> None:
            a[key] = value_of(a)

        return mutate

    def item(key: str, i: int, value_of: Callable[[dict], Any]) -> Callable[[dict], None]:
        def mutate(a: dict) -> None:
            a[key] = list(a[key])
            a[key][i] = value_of(a)

        return mutate

    same = lambda a: None  # noqa: E731

    def _twice(a: dict) -> None:  # parameter 0 listed twice, each entry with its own grad/state
        for key, v in a.items():
            if isinstance(v, list) and v:
                a[key] = [v[0], v[0] if key == "params" else v[0].clone(), *v[2:]]

    def expanded_like(key: str, i: int, fill: float) -> Callable[[dict], None]:
        return item(key, i, lambda a: torch.full((1,), fill).expand(a["params"][i].shape))

    empty_all = lambda a: a.update({k: [] for k in a})  # noqa: E731
    bare = lambda a: a.update(params=a["params"][1], grads=a["grads"][1])  # noqa: E731
    grad_is_param = item("grads", 1, lambda a: a["params"][1])
    # (group, what, mutate the arguments, keyword arguments, expected words; None: the step runs)
    both: List[Tuple[str, str, Callable[[dict], None], dict, Any]] = [
        ("empty", "empty lists", empty_all, {}, ("empty",)),
        ("none", "a None grad", item("grads", 1, lambda a: None), {}, ("grads[1]",)),
        ("args", "params a Tensor, not a list", bare, {}, ("params", "Tensor")),
        ("args", "grads one short", put("grads", lambda a: a["grads"][:-1]), {}, ("grads",)),
        ("aliasing", "params[0] twice", _twice, {}, ("overlap", "params")),
        ("aliasing", "grad is its parameter", grad_is_param, {"write_grad": True}, ("overlap",)),
        ("expanded", "an expanded grad (read only)", expanded_like("grads", 1, 1.0), {}, None),
        ("expanded", "an expanded grad, write_grad=True", expanded_like("grads", 1, 1.0),
         {"write_grad": True}, ("expanded", "grad 1")),
        ("hyper", "lr=nan", same, {"lr": NAN}, ("learning rate",)),
        ("hyper", "lr=inf", same, {"lr": INF}, ("learning rate",)),
    ]  # fmt: skip
    adam_only = [
        ("aliasing", "exp_avgs[0] is exp_avg_sqs[0]",
         item("exp_avgs", 0, lambda a: a["exp_avg_sqs"][0]), {}, ("overlap",)),
        ("hyper", "beta1=nan", same, {"beta1": NAN}, ("beta",)),
        ("hyper", "eps=inf", same, {"eps": INF}, ("eps",)),
        ("aliasing", "one state_step shared by two parameters",
         item("state_steps", 1, lambda a: a["state_steps"][0]), {}, ("overlap", "state_steps")),
        ("args", "state_steps one short", put("state_steps", lambda a: a["state_steps"][:-1]), {},
         ("state_steps",)),
        ("expanded", "an expanded exp_avg", expanded_like("exp_avgs", 1, 0.0), {}, ("exp_avgs[1]",)),
        ("dtype", "an int64 state_step",
         item("state_steps", 0, lambda a: torch.zeros((), dtype=torch.int64)), {},
         ("state_steps[0]",)),
    ]  # fmt: skip
    sgd_only = [
        ("aliasing", "momentum_buffers[0] is params[0]",
         item("momentum_buffers", 0, lambda a: a["params"][0]), {}, ("overlap",)),
        ("hyper", "momentum=nan", same, {"momentum": NAN}, ("momentum",)),
        ("hyper", "weight_decay=inf", same, {"weight_decay": INF}, ("weight_decay",)),
        ("args", "a momentum buffer of the wrong shape",
         item("momentum_buffers", 0, lambda a: torch.zeros(3)), {}, ("momentum_buffers[0]",)),
        ("dtype", "a float64 momentum buffer",
         item("momentum_buffers", 0, lambda a: a["params"][0].double()), {},
         ("momentum_buffers[0]",)),
        ("expanded", "an expanded momentum buffer", expanded_like("momentum_buffers", 1, 0.0), {},
         ("momentum_buffers[1]",)),
        ("args", "momentum_buffers a tuple with None",
         put("momentum_buffers", lambda a: tuple(None for _ in a["params"])), {},
         ("momentum_buffers", "list")),
    ]  # fmt: skip
    for adam in (False, True):
        n = "project_adam_" if adam else "project_sgd_"
        for group, what, mutate, kw, words in both + (adam_only if adam else sgd_only):
            setup = fn_setup(adam, mutate, **kw)
            if words is None:
                add(Case(group, f"{n}: {what}", setup, expect=lambda _: True))
            else:
                add(Case(group, f"{n}: {what}", setup, words=words))
    return cases


# ---------------------------------------------------------------------------------------------------
# uno.per_sample cases.
# ---------------------------------------------------------------------------------------------------
def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).pow(2).sum(1)


_X = object()  # placeholder for the batch tensor


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2)).train()


def _per_sample_cases() -> List[Case]:
    cases: List[Case] = []
    add = cases.append
    fns = [
        ("grads", ps.grads, (_loss, _X), {}),
        ("gram", ps.gram, (_loss, _X), {}),
        ("norms", ps.norms, (_loss, _X), {}),
        ("coefficients", ps.coefficients, (_loss, _X), {"basis": None}),
        ("weighted_sum", ps.weighted_sum, (_loss, _X), {"weights": torch.ones(6)}),
        ("cross_gram", ps.cross_gram, (_loss, (_X,), (_X,)), {}),
    ]

    for name, fn, args, kw in fns:
        base = dict(kw)
        if name == "coefficients":
            base["basis"] = torch.randn(2, 4 * 5 + 5 + 5 * 2 + 2)
        with_x = tuple(args)
        for bn_model in (None, _bn_model):
            add(
                Case(
                    "option",
                    f"{name}(batchnorm='bogus'){' BN model' if bn_model else ''}",
                    _cross_or(fn, name, with_x, model=bn_model, batchnorm="bogus", **base),
                    words=("batchnorm", "bogus", "frozen"),
                )
            )
        add(
            Case(
                "option",
                f"{name}(batchnorm=None)",
                _cross_or(fn, name, with_x, batchnorm=None, **base),
                words=("batchnorm",),
            )
        )
        if name != "cross_gram":
            add(
                Case(
                    "option",
                    f"{name}(check='yes')",
                    _cross_or(fn, name, with_x, check="yes", **base),
                    words=("check",),
                )
            )
        if name in ("gram", "norms", "cross_gram"):
            add(
                Case(
                    "option",
                    f"{name}(backend='bogus')",
                    _cross_or(fn, name, with_x, backend="bogus", **base),
                    words=("backend", "bogus"),
                )
            )
        add(
            Case(
                "args",
                f"{name}: model is a function",
                _cross_or(fn, name, with_x, model=lambda: lambda x: x, **base),
                words=("model",),
            )
        )
        add(
            Case(
                "args",
                f"{name}: loss_fn not callable",
                _cross_or(fn, name, (3, *with_x[1:]), **base),
                words=("loss_fn",),
            )
        )
        add(
            Case(
                "empty",
                f"{name}: params=[]",
                _cross_or(fn, name, with_x, params=[], **base),
                words=("parameters",),
            )
        )
        add(
            Case(
                "args",
                f"{name}: loss_fn returns a scalar",
                _cross_or(fn, name, (lambda m, x: m(x).sum(), *with_x[1:]), **base),
                words=("loss_fn", "1-D"),
            )
        )
        add(
            Case(
                "empty",
                f"{name}: an empty batch",
                _cross_or(fn, name, with_x, batch=torch.zeros(0, 4), **base),
                words=("batch",),
            )
        )
        add(
            Case(
                "expanded",
                f"{name}: an expanded batch",
                _cross_or(fn, name, with_x, batch=torch.randn(1, 4).expand(6, 4), **base),
                expect=lambda r: r is not None,
            )
        )
        add(
            Case(
                "nonfinite",
                f"{name}: nan in the batch gives nan (documented)",
                _cross_or(fn, name, with_x, batch=torch.full((6, 4), NAN), **base),
                expect=_has_nan,
            )
        )
    add(
        Case(
            "args",
            "coefficients(basis=None)",
            _cross_or(ps.coefficients, "coefficients", (_loss, _X), basis=None),
            words=("basis",),
        )
    )
    add(
        Case(
            "args",
            "coefficients(basis of other sizes)",
            _cross_or(ps.coefficients, "coefficients", (_loss, _X), basis=torch.randn(2, 7)),
            words=("basis",),
        )
    )
    add(
        Case(
            "args",
            "weighted_sum(weights=[1.0]*6)",
            _cross_or(ps.weighted_sum, "weighted_sum", (_loss, _X), weights=[1.0] * 6),
            words=("weights",),
        )
    )
    add(
        Case(
            "args",
            "weighted_sum(weights of shape (5,))",
            _cross_or(ps.weighted_sum, "weighted_sum", (_loss, _X), weights=torch.ones(5)),
            words=("weights",),
        )
    )
    add(
        Case(
            "args",
            "cross_gram(batch_a a Tensor, not a tuple)",
            _cross_or(ps.cross_gram, "cross_gram", (_loss, _X, (_X,)), bare_a=True),
            words=("batch_a", "tuple"),
        )
    )
    return cases


def _has_nan(r: Any) -> bool:
    ts = r if isinstance(r, list) else [r]
    return any(bool(torch.isnan(t).any()) for t in ts)


def _cross_or(
    fn: Callable[..., Any],
    name: str,
    args: Tuple[Any, ...],
    model: Any = None,
    batch: Any = None,
    bare_a: bool = False,
    **kw: Any,
):
    def setup():
        m = _model() if model is None else model()
        x = (
            torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
            if batch is None
            else batch
        )
        if name == "cross_gram":
            a = [args[0], (x,) if not bare_a else x, (x,)]
        else:
            a = [x if v is _X else v for v in args]
        watched = [x] + (list(m.parameters()) if isinstance(m, nn.Module) else [])
        return (lambda: fn(m, *a, **kw)), watched

    return setup


CASES: List[Case] = _optim_cases() + _per_sample_cases()


def _outcome_in_child(case: Case) -> Tuple[str, str]:
    """:func:`outcome` in a forked child, so that a crash (a kernel writing out of bounds) counts as a
    traceback instead of ending the tally."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        try:
            res = "\t".join(outcome(case))
        except BaseException as e:
            res = f"traceback\tsetup raised {type(e).__name__}: {e}"
        os.write(w, res.encode()[:4000])
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not data:
        return "traceback", f"the process died (status {status})"
    o, _, detail = data.decode().partition("\t")
    return o, detail


def tally(cases: Sequence[Case] = CASES) -> None:
    """Print counts per class of defect: tried / clean error / documented result / traceback / silent."""
    rows: dict = {}
    for c in cases:
        o, detail = _outcome_in_child(c)
        r = rows.setdefault(c.group, dict(tried=0, clean=0, ok=0, traceback=0, silent=0))
        r["tried"] += 1
        r[o] += 1
        if o in ("traceback", "silent"):
            print(f"  {o:9s} {c.name}: {detail}")
    tot = {
        k: sum(r[k] for r in rows.values()) for k in ("tried", "clean", "ok", "traceback", "silent")
    }
    print(f"{'class':10s} tried clean  ok  traceback silent")
    for g, r in [*sorted(rows.items()), ("total", tot)]:
        print(
            f"{g:10s} {r['tried']:5d} {r['clean']:5d} {r['ok']:3d} {r['traceback']:10d} {r['silent']:6d}"
        )


if __name__ == "__main__":
    tally()
