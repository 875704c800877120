"""Param-group options that would be silently wrong: an optimizer-wide option set per group,
a non-bool ``adaptive``, a DetSAM score with a stale ρ."""

import pytest
import torch

from tiltedsam import SAM, TSAM

from ..conftest import closure_for, make_mlp, make_regression


def params():
    return make_mlp(dtype=torch.float32).parameters()


@pytest.mark.parametrize("option", [{"tilt": 100.0}, {"tilt": -5.0}, {"num_samples": 1},
                                    {"model": None}, {"seed": 3}])  # fmt: skip
def test_an_optimizer_wide_option_in_a_param_group_is_an_error_not_ignored(option):
    """TSAM takes t and s once for the whole step (one softmax over the s losses of the whole
    model); a group that sets them would be silently ignored."""
    model = make_mlp(dtype=torch.float32)
    groups = [{"params": model[0].parameters(), **option}, {"params": model[2].parameters()}]
    key = next(iter(option))
    with pytest.raises(
        ValueError, match=rf"param_groups\[0\] option\(s\) \['{key}'\].*constructor"
    ):
        TSAM(groups, torch.optim.SGD, lr=0.1)
    opt = TSAM(model[2].parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match=rf"param_groups\[1\] option\(s\) \['{key}'\]"):
        opt.add_param_group({"params": model[0].parameters(), **option})
    # per-group options (rho, noise_radius, the base optimizer's lr) stay allowed
    TSAM([{"params": model[0].parameters(), "rho": 0.1, "noise_radius": 0.0, "lr": 1.0}],
         torch.optim.SGD, lr=0.1)  # fmt: skip


@pytest.mark.parametrize("value", ["False", "no", 0, 1, None])
def test_sam_adaptive_must_be_a_bool(value):
    """bool("False") is True: a config string would silently switch on ASAM."""
    with pytest.raises(TypeError, match="adaptive must be True or False"):
        SAM(params(), torch.optim.SGD, lr=0.1, adaptive=value)
    model = make_mlp(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"param_groups\[0\] option adaptive must be True or False"):
        SAM([{"params": model.parameters(), "adaptive": value}], torch.optim.SGD, lr=0.1)


def test_detsam_scores_with_the_groups_rho_not_a_stale_default():
    """d_i = (L_i - L_0)/rho^2 must use the rho the step perturbs with: set per group, by a
    schedule or by a loaded checkpoint, not the constructor's."""
    from tiltedsam import DetSAM

    x, y = make_regression(dtype=torch.float64)

    def run(make_groups, rho, change=None):
        model = make_mlp()
        opt = DetSAM(make_groups(model), torch.optim.SGD, rho=rho, lr=0.1, num_samples=4, seed=0)
        if change is not None:
            opt.param_groups[0]["rho"] = change
        opt.step(closure_for(model, x, y))
        return opt.last_step.scores

    plain = run(lambda m: m.parameters(), 0.5)
    as_group = run(lambda m: [{"params": m.parameters(), "rho": 0.5}], 1.0)
    scheduled = run(lambda m: m.parameters(), 1.0, change=0.5)
    assert torch.equal(plain, as_group) and torch.equal(plain, scheduled)
    mixed = make_mlp()
    opt = DetSAM([{"params": mixed[0].parameters(), "rho": 0.5}, {"params": mixed[2].parameters()}],
                 torch.optim.SGD, rho=1.0, lr=0.1)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"DetSAM: .* one rho for all param groups, got rho = \[0.5, 1.0\]"
    ):
        opt.step(closure_for(mixed, x, y))


def test_a_base_optimizer_option_that_shares_a_name_is_the_groups_to_set():
    """tsam-intermittent's constructor takes ``alpha`` (the correction's weight); RMSprop's groups
    take their own ``alpha``: a group that sets it is RMSprop's business, not an error."""
    from tiltedsam.optim.tsam_intermittent import TSAMIntermittent

    model = make_mlp(dtype=torch.float32)
    groups = [{"params": model[0].parameters(), "alpha": 0.9}, {"params": model[2].parameters()}]
    opt = TSAMIntermittent(groups, torch.optim.RMSprop, lr=0.01, alpha=0.5)
    assert opt.param_groups[0]["alpha"] == 0.9 and opt.alpha == 0.5
    with pytest.raises(ValueError, match=r"param_groups\[0\] option\(s\) \['alpha'\]"):
        TSAMIntermittent(groups, torch.optim.SGD, lr=0.01)
