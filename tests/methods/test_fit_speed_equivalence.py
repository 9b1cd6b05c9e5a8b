"""The fast fits reach the previous implementations' results: KnoBo's numpy head against the
torch loop it replaced (issue 23), the linear probe's warm-started C path against from-scratch
scikit-learn fits."""

import copy

import numpy as np
import pytest
import torch

from conceptlens.methods.knobo import prior_loss
from conceptlens.methods.knobo_head import train_head
from conceptlens.methods.linear_probe import c_path


def torch_head(C, y, m, P, prior_weight, epochs, lr, batch_size, seed, positive=False,
               support=None, C_val=None, y_val=None):
    """The previous `KnoBo._train_head` (torch autograd + torch.optim.Adam), verbatim in effect."""
    n = len(C)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(C.shape[1], m)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(linear.parameters(), lr=lr)
    A, t = torch.from_numpy(C), torch.as_tensor(y, dtype=torch.long)
    prior = None if P is None else torch.as_tensor(P, dtype=torch.float32)
    mask = None if support is None else torch.as_tensor(support, dtype=torch.float32)
    if mask is not None:
        with torch.no_grad():
            linear.weight.clamp_(min=0).mul_(mask)
    best_acc, best_state, best_epoch, history = -1.0, None, epochs, []
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(A[idx]), t[idx])
            if prior is not None:
                loss = loss + prior_weight * prior_loss(linear.weight, prior)
            loss.backward()
            opt.step()
            if positive or mask is not None:
                with torch.no_grad():
                    linear.weight.clamp_(min=0)
                    if mask is not None:
                        linear.weight.mul_(mask)
        if C_val is not None:
            with torch.no_grad():
                acc = float((linear(torch.from_numpy(C_val)).argmax(1) == torch.as_tensor(y_val)).double().mean())
            history.append(acc)
            if acc > best_acc:
                best_acc, best_state, best_epoch = acc, copy.deepcopy(linear.state_dict()), epoch
    if best_state is not None:
        linear.load_state_dict(best_state)
    return {"W": linear.weight.detach().numpy(), "b": linear.bias.detach().numpy(),
            "final_loss": float(loss.detach()), "history": history, "best_epoch": best_epoch}


def _problem(seed=0, n=300, k=20, m=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, m, n)
    centres = rng.random((m, k))
    C = np.clip(centres[y] + 0.3 * rng.standard_normal((n, k)), 0, 1).astype(np.float32)
    yv = rng.integers(0, m, 80)
    Cv = np.clip(centres[yv] + 0.3 * rng.standard_normal((80, k)), 0, 1).astype(np.float32)
    P = np.where(centres > 0.5, 1.0, -1.0).astype(np.float32)
    return C, y, m, P, Cv, yv


@pytest.mark.parametrize("variant", ["prior", "no_prior", "positive", "support"])
def test_numpy_head_follows_the_torch_loop(variant):
    C, y, m, P, Cv, yv = _problem()
    kw = dict(prior_weight=1.0, epochs=15, lr=1e-2, batch_size=32, seed=3, C_val=Cv, y_val=yv)
    if variant == "no_prior":
        P = None
    if variant == "positive":
        kw["positive"] = True
    if variant == "support":
        kw["support"] = (np.random.default_rng(1).random((m, C.shape[1])) > 0.5).astype(np.float32)
    ours, ref = train_head(C, y, m, P, **kw), torch_head(C, y, m, P, **kw)
    # float32 arithmetic in another order: the trajectories agree to rounding
    np.testing.assert_allclose(ours["W"], ref["W"], atol=1e-4)
    np.testing.assert_allclose(ours["b"], ref["b"], atol=1e-4)
    assert ours["history"] == ref["history"] and ours["best_epoch"] == ref["best_epoch"]
    assert ours["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)
    if variant in ("positive", "support"):
        assert ours["W"].min() >= 0


def test_numpy_head_without_validation_keeps_the_last_epoch():
    C, y, m, P, _, _ = _problem(1)
    kw = dict(prior_weight=0.5, epochs=5, lr=1e-3, batch_size=64, seed=0)
    ours, ref = train_head(C, y, m, P, **kw), torch_head(C, y, m, P, **kw)
    np.testing.assert_allclose(ours["W"], ref["W"], atol=1e-5)
    assert ours["history"] == [] and ours["best_epoch"] == 5


def test_c_path_reaches_the_from_scratch_fits():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d, m = 400, 30, 4
    y = rng.integers(0, m, n)
    Z = rng.standard_normal((m, d))[y] * 0.5 + rng.standard_normal((n, d))
    Cs = [1.0, 0.001, 0.1, 0.01]
    path = c_path(Z, y, Cs, 1000)
    assert sorted(path) == sorted(Cs)
    for C in Cs:
        exact = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(Z, y).coef_
        scratch = LogisticRegression(C=C, max_iter=1000).fit(Z, y).coef_  # the previous fit
        # both stop at the same gradient tolerance: the path is as near the optimum as a fresh fit
        err_path, err_scratch = np.abs(path[C].coef_ - exact).max(), np.abs(scratch - exact).max()
        assert err_path <= 3 * err_scratch + 1e-3 * np.abs(exact).max()
        assert path[C].C == C


def test_linear_probe_does_not_depend_on_the_free_cores(monkeypatch):
    """L-BFGS stops at a tolerance, so threaded products would move where: the probe runs on one
    BLAS thread, and its weights are the same to the bit whatever the thread policy allows."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    from conceptlens import threads
    from conceptlens.methods import get_method
    from conceptlens.testing.toy import make_problem

    seen = []
    real_fit = LogisticRegression.fit

    def fit(self, *args, **kwargs):  # the BLAS threads numpy's products get during L-BFGS
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", fit)
    train, val, _, ctx = make_problem()
    monkeypatch.setattr(threads, "free_cores", lambda: 8)
    monkeypatch.setattr(threads, "GRAIN", 1.0)  # any work would fill every free core
    wide = get_method("linear_probe").fit(train, ctx, val)
    assert seen and set(seen) == {1}
    monkeypatch.setenv("CONCEPTLENS_THREADS", "1")
    narrow = get_method("linear_probe").fit(train, ctx, val)
    assert np.array_equal(wide.class_weights_, narrow.class_weights_)
    assert wide.C_ == narrow.C_
