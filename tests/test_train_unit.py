import pytest

from medtfod.odapi.train import checkpoint_interval


@pytest.mark.parametrize("requested, steps, expected", [
    (1000, 600, 600),      # the OD API default would never save a 600-step run
    (1000, 50000, 1000),
    (1000, 650, 700),      # the loop runs whole blocks of 100: 700 steps, saved at 700
    (1000, 50050, 300),    # 501 blocks: the largest divisor <= 10 blocks is 3
    (200, 600, 200),
    (1, 250, 100),
])
def test_checkpoint_interval_saves_last_step(requested, steps, expected):
    every = checkpoint_interval(requested, steps)
    assert every == expected
    final = -(-steps // 100) * 100
    assert final % every == 0 and every <= max(requested, 100)
