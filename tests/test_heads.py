"""Heads against their formulas by hand; IR-Softmax centers; Virtual Softmax; losses; e2e steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from reid.heads import HEADS, CenterSettings, build_head
from reid.heads.sphereface import psi
from reid.losses import CrossEntropyLabelSmooth, TripletLoss


def unit(v):
    return F.normalize(torch.as_tensor(v, dtype=torch.float32), dim=-1)


def head_with(name, weight, **kw):
    head = build_head(name, weight.shape[1], weight.shape[0], **kw)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def angles_case():
    # class weights along e0, e1; features at chosen angles θ to e0 (label 0), norm 2
    weight = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    thetas = torch.tensor([1e-4, 0.3, 1.5, math.pi - 0.2, math.pi - 1e-4])
    features = 2.0 * torch.stack([torch.cos(thetas), torch.sin(thetas)], 1)
    return weight, features, thetas, torch.zeros(len(thetas), dtype=torch.long)


def test_softmax_and_normface_and_cosface():
    weight, x, t, y = angles_case()
    cos0, cos1 = torch.cos(t), torch.sin(t)  # angle to e1 is π/2 − θ
    out = head_with("softmax", weight)(x, y)
    torch.testing.assert_close(
        out, torch.stack([2 * 3 * cos0, 2 * 0.5 * cos1], 1), atol=1e-5, rtol=1e-5
    )
    out = head_with("normface", weight, scale=16)(x, y)
    torch.testing.assert_close(out, 16 * torch.stack([cos0, cos1], 1), atol=1e-4, rtol=1e-5)
    out = head_with("cosface", weight, scale=30, margin=0.35)(x, y)
    torch.testing.assert_close(out, 30 * torch.stack([cos0 - 0.35, cos1], 1), atol=1e-4, rtol=1e-5)


def test_arcface_with_monotonic_fallback():
    weight, x, t, y = angles_case()
    m, s = 0.5, 64.0
    out = head_with("arcface", weight, scale=s, margin=m)(x, y)
    expected = torch.where(t + m <= math.pi, torch.cos(t + m), torch.cos(t) - m * math.sin(m))
    torch.testing.assert_close(out[:, 0], s * expected, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(out[:, 1], s * torch.sin(t), atol=1e-3, rtol=1e-4)
    # monotonic in θ across the switch at π − m
    thetas = torch.linspace(0.01, math.pi - 0.01, 400)
    feats = torch.stack([torch.cos(thetas), torch.sin(thetas)], 1)
    target = head_with("arcface", weight, scale=s, margin=m)(
        feats, torch.zeros(400, dtype=torch.long)
    )[:, 0]
    assert bool((target[1:] < target[:-1]).all())


def test_sphereface_psi_and_logits():
    # ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m]; continuous and decreasing
    theta = torch.tensor([0.0, math.pi / 8, math.pi / 4 + 0.1, math.pi / 2 + 0.1, math.pi - 0.01])
    k = torch.tensor([0, 0, 1, 2, 3.0])
    torch.testing.assert_close(psi(theta, 4), (-1) ** k * torch.cos(4 * theta) - 2 * k)
    grid = torch.linspace(0, math.pi, 1000)
    assert bool((psi(grid, 4)[1:] <= psi(grid, 4)[:-1] + 1e-6).all())
    weight, x, t, y = angles_case()
    head = head_with("sphereface", weight, margin=4, beta_fixed=10.0)
    out = head(x, y)
    torch.testing.assert_close(
        out[:, 0], 2 * (10 * torch.cos(t) + psi(t, 4)) / 11, atol=2e-3, rtol=1e-3
    )
    torch.testing.assert_close(out[:, 1], 2 * torch.sin(t), atol=1e-4, rtol=1e-4)
    annealed = head_with("sphereface", weight)
    assert annealed.beta == 1000.0
    for _ in range(100):
        annealed.step()
    assert annealed.beta == pytest.approx(max(5.0, 1000 / (1 + 0.12 * 100)))


def test_circle():
    weight, x, t, y = angles_case()
    s, m = 64.0, 0.35
    out = head_with("circle", weight, scale=s, margin=m)(x, y)
    cp, cn = torch.cos(t), torch.sin(t)
    torch.testing.assert_close(
        out[:, 0], s * torch.relu(1 + m - cp) * (cp - (1 - m)), atol=1e-3, rtol=1e-4
    )
    torch.testing.assert_close(out[:, 1], s * torch.relu(cn + m) * (cn - m), atol=1e-3, rtol=1e-4)


def test_virtual_softmax_extra_logit_per_sample():
    weight, x, t, y = angles_case()
    y = torch.tensor([0, 1, 0, 1, 0])
    head = head_with("virtual", weight)
    out = head(x, y)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out[:, 2], weight[y].norm(dim=1) * x.norm(dim=1))
    assert bool(
        (out[:, 2] >= out.gather(1, y[:, None]).squeeze(1) - 1e-5).all()
    )  # ‖w_y‖‖x‖ ≥ w_yᵀx
    assert head_with("virtual", weight, virtual_clamp=1.5)(x, y)[:, 2].max() == 1.5
    assert head.predict_logits(x).shape == (5, 2)  # accuracy on the first C columns


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("weights", ["learned", "centers"])
def test_no_nan_in_bf16_and_at_extreme_angles(name, weights):
    weight, x, t, y = angles_case()
    head = build_head(name, 2, 2, weights=weights)
    with torch.no_grad():
        if weights == "learned":
            head.weight.copy_(weight)
        else:
            head.centers.weight.copy_(unit(weight))
    features = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(features.to(torch.bfloat16), y)
    F.cross_entropy(out.float(), y).backward()
    assert torch.isfinite(out).all() and torch.isfinite(features.grad).all()


def test_unknown_head_lists_valid_names():
    with pytest.raises(
        KeyError, match="unknown head 'nope'; valid: softmax, normface, cosface, arcface"
    ):
        build_head("nope", 4, 2)
    with pytest.raises(ValueError, match="unknown weights"):
        build_head("softmax", 4, 2, weights="frozen")


# ------------------------------------------------------------------------------ IR-Softmax


@pytest.mark.parametrize("name", list(HEADS))
def test_classification_loss_gives_centers_no_gradient(name):
    head = build_head(name, 4, 3, weights="centers")
    assert not any(p is head.centers.weight for p in head.parameters())
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(head(x, y)[:, :3], y).backward()
    assert head.centers.weight.grad is None and x.grad is not None and x.grad.abs().sum() > 0


def test_center_updates_equal_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 0, 1, 0, 1])  # class 2 absent
    unit_x = unit(x)
    for mode in ("authors", "ema", "grad"):
        head = build_head(
            "cosface",
            3,
            3,
            weights="centers",
            centers=CenterSettings(update=mode, momentum=0.8, lr=0.4, lam=1.5),
        )
        head.centers.seen.fill_(True)  # steady state: every class initialised
        before = head.centers.weight.clone()
        head.on_train_step(x, y)
        for k in (0, 1):
            members = unit_x[y == k]
            if mode == "ema":
                expected = 0.8 * before[k] + 0.2 * members.mean(0)
            elif mode == "grad":
                expected = before[k] - 0.4 * (2 * 1.5 / 5) * (before[k] - members).sum(0)
            else:  # the authors' code: the unit center plus each sample's unit feature
                expected = before[k] + members.sum(0)
            torch.testing.assert_close(head.centers.weight[k], unit(expected))
        torch.testing.assert_close(head.centers.weight[2], before[2])  # absent: unchanged
        torch.testing.assert_close(head.centers.weight.norm(dim=1), torch.ones(3))


def test_authors_update_is_not_a_growing_sum():
    """After many steps a new batch still moves an ``authors`` center by a fixed share (the old
    ``cumulative`` sum let new batches weigh n/N → 0)."""
    head = build_head("softmax", 2, 1, weights="centers", centers=CenterSettings(update="authors"))
    y = torch.zeros(4, dtype=torch.long)
    for _ in range(200):
        head.on_train_step(torch.tensor([[1.0, 0.0]]).expand(4, 2), y)
    head.on_train_step(torch.tensor([[0.0, 1.0]]).expand(4, 2), y)
    # c = normalize(e0 + 4·e1): the new direction dominates at once
    torch.testing.assert_close(head.centers.weight[0], unit([1.0, 4.0]))


def test_old_cumulative_mode_is_refused_with_the_new_name():
    with pytest.raises(ValueError, match="unknown centers.update 'cumulative'; valid: authors"):
        build_head("softmax", 2, 2, weights="centers", centers=CenterSettings(update="cumulative"))


def test_init_centers_from_class_means_and_state_dict():
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    head = build_head("arcface", 4, 3, weights="centers")
    head.centers.init_from_features(x, y)
    for k in range(3):
        torch.testing.assert_close(head.centers.weight[k], unit(unit(x[y == k]).sum(0)))
    assert "centers.weight" in head.state_dict()


def test_center_pull_is_the_center_term():
    head = build_head("softmax", 3, 2, weights="centers", centers=CenterSettings(lam=2.0))
    x, y = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 1, 0])
    value = head.centers.pull(x, y)
    torch.testing.assert_close(
        value, 2.0 * (head.centers.weight[y] - unit(x.detach())).pow(2).sum(1).mean()
    )
    value.backward()
    assert head.centers.weight.grad is None and x.grad.abs().sum() > 0


def test_weight_angles_measure_center_lag():
    head = build_head("softmax", 2, 2, weights="centers")
    head.centers.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    classes, angles = head.weight_angles(x, torch.tensor([0, 0, 1]))
    assert classes.tolist() == [0, 1]
    torch.testing.assert_close(angles, torch.tensor([45.0, 0.0]), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------ losses


def test_label_smoothing_matches_torchreid():
    from torchreid.reid.losses import CrossEntropyLoss

    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ours = CrossEntropyLabelSmooth(5, 0.1)(logits, labels)
    theirs = CrossEntropyLoss(5, use_gpu=False, label_smooth=True)(logits, labels)
    torch.testing.assert_close(ours, theirs)
    virtual = CrossEntropyLabelSmooth(5, 0.1)(
        torch.cat([logits, torch.full((8, 1), -1e4)], 1), labels
    )
    torch.testing.assert_close(virtual, ours)  # a virtual column with no mass changes nothing


def test_triplet_matches_torchreid_and_degenerate_batches():
    from torchreid.reid.losses import TripletLoss as TorchreidTriplet

    features, labels = torch.randn(16, 8), torch.arange(4).repeat_interleave(4)
    torch.testing.assert_close(
        TripletLoss(0.3)(features, labels), TorchreidTriplet(0.3)(features, labels)
    )
    one_id = torch.randn(4, 8, requires_grad=True)
    loss = TripletLoss(0.3)(
        one_id, torch.zeros(4, dtype=torch.long)
    )  # no negative: no valid triplet
    loss.backward()
    assert loss.item() == 0.0
    singletons = TripletLoss(None)(torch.randn(4, 8), torch.arange(4))  # no positive anywhere
    assert singletons.item() == 0.0


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("weights", ["learned", "centers"])
def test_few_steps_reduce_the_loss(name, weights):
    torch.manual_seed(0)
    num_classes, dim = 6, 4
    means = torch.randn(num_classes, dim)  # overlapping classes: no head starts at zero loss
    y = torch.arange(num_classes).repeat(12)
    x = means[y] + 0.8 * torch.randn(len(y), dim)
    embed = torch.nn.Linear(dim, dim)
    head = build_head(name, dim, num_classes, weights=weights)
    if weights == "centers":
        head.centers.init_from_features(embed(x).detach(), y)
    optimizer = torch.optim.SGD(list(embed.parameters()) + list(head.parameters()), lr=0.05)
    criterion = CrossEntropyLabelSmooth(num_classes, 0.0)

    def loss_now():
        return criterion(head(embed(x), y), y)

    first = loss_now().item()
    assert first > 0.05
    for _ in range(150):
        optimizer.zero_grad()
        features = embed(x)
        criterion(head(features, y), y).backward()
        optimizer.step()
        head.on_train_step(features.detach(), y)
    # a real decrease, not noise; with unit centers Virtual Softmax's extra logit ‖x‖ always
    # beats the target ‖x‖cos θ_y, so its loss is bounded below by log 2 and falls slowly
    bound = 0.97 if (name, weights) == ("virtual", "centers") else 0.8
    assert loss_now().item() < bound * first


def test_first_batch_initialises_unseen_centers():
    head = build_head(
        "softmax", 3, 3, weights="centers", centers=CenterSettings(update="ema", momentum=0.9)
    )
    x, y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    head.on_train_step(x, y)  # first sight of classes 0 and 1: their batch means, no momentum
    torch.testing.assert_close(head.centers.weight[0], unit(unit(x[:2]).sum(0)))
    assert head.centers.seen.tolist() == [True, True, False]
    before = head.centers.weight[0].clone()
    head.on_train_step(
        x[2:3].expand(2, 3) * 0 + torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 0])
    )
    torch.testing.assert_close(
        head.centers.weight[0], unit(0.9 * before + 0.1 * torch.tensor([0.0, 0.0, 1.0]))
    )
