from medtfod.core.progress import progress


def test_silent_bar_counts_like_tqdm():
    bar = progress(total=10, desc="x", quiet=True)
    bar.update(3)
    bar.update(max(0, 7 - bar.n))
    assert bar.n == 7
    bar.set_postfix_str("loss 1")
    bar.close()
