import math

import pytest

from facekit.engine.lr_schedules import ConstantLR, CosineLR, MultiStepLR, PolyLR, build_lr_schedule


def test_poly_linear_warmup_then_linear_decay_to_zero():
    s = PolyLR(base_lr=0.1, max_iters=100, warmup_iters=10)
    # warmup: 0.1 * it / 10
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.05)
    # after warmup: 0.1 * (1 - (it - 10) / 90)
    assert s(10) == pytest.approx(0.1)
    assert s(55) == pytest.approx(0.05)
    assert s(91) == pytest.approx(0.1 * 9 / 90)
    assert s(100) == pytest.approx(0.0)


def test_poly_power_and_min_lr():
    s = PolyLR(base_lr=1.0, max_iters=20, power=2.0, min_lr=0.1)
    # 0.1 + 0.9 * (1 - 10/20)^2 = 0.325
    assert s(10) == pytest.approx(0.325)
    assert s(20) == pytest.approx(0.1)


def test_cosine():
    s = CosineLR(base_lr=1.0, max_iters=10)
    assert s(0) == pytest.approx(1.0)
    assert s(5) == pytest.approx(0.5)
    # progress 2/10: 0.5 * (1 + cos(pi * 0.2))
    assert s(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert s(10) == pytest.approx(0.0, abs=1e-12)


def test_cosine_with_warmup_start_factor():
    s = CosineLR(base_lr=2.0, max_iters=14, warmup_iters=4, warmup_start_factor=0.5)
    assert s(0) == pytest.approx(1.0)
    assert s(2) == pytest.approx(1.5)
    assert s(4) == pytest.approx(2.0)
    assert s(9) == pytest.approx(1.0)


def test_multistep():
    s = MultiStepLR(base_lr=1.0, max_iters=10, milestones=[3, 6], gamma=0.1)
    assert [round(s(i), 6) for i in (0, 2, 3, 5, 6, 9)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]


def test_build_from_epochs():
    s = build_lr_schedule(dict(type='PolyLR', warmup_epochs=1), base_lr=0.4, iters_per_epoch=10, max_epochs=5)
    assert (s.warmup_iters, s.max_iters) == (10, 50)
    assert s(30) == pytest.approx(0.4 * (1 - 20 / 40))
    m = build_lr_schedule(dict(type='MultiStepLR', milestones_epochs=[2, 4]), 1.0, 10, 5)
    assert m.milestones == [20, 40]
    c = build_lr_schedule(dict(type='ConstantLR'), 0.3, 10, 1)
    assert isinstance(c, ConstantLR) and c(7) == 0.3


def test_bad_schedules_raise():
    with pytest.raises(ValueError, match='warmup_iters'):
        PolyLR(base_lr=0.1, max_iters=10, warmup_iters=11)
    with pytest.raises(KeyError, match='PolyLr'):
        build_lr_schedule(dict(type='PolyLr'), 0.1, 10, 1)
