"""`data.seed`: the data itself (synthetic scenes, NYU-v2's carved val split) follows it; batch order and
augmentation follow the run's seed."""
import torch

from adapmtl.engine.data import build_dataset, train_loader
from tests.data_helpers import nyu_root  # noqa: F401  (fixture)
from tests.engine_helpers import tiny_config


def equal_samples(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_split(a, b, split):
    """Both configs' `split` holds the same samples, read through its transform."""
    x, y = build_dataset(a, split), build_dataset(b, split)
    return len(x) == len(y) and all(equal_samples(x[i], y[i]) for i in range(len(x)))


def first_batches(config, steps=4):
    """The (epoch, index) pairs of the run's first `steps` batches."""
    sampler = train_loader(config, build_dataset(config, "train"), start=0).batch_sampler
    return [batch for batch, _ in zip(sampler, range(steps))]


def test_one_data_seed_gives_every_run_seed_the_same_data_and_its_own_batches(tmp_path):
    a = tiny_config(tmp_path, "seed=0", "data.seed=7")
    b = tiny_config(tmp_path, "seed=1", "data.seed=7")
    assert same_split(a, b, "test") and same_split(a, b, "val")
    train_a, train_b = build_dataset(a, "train"), build_dataset(b, "train")
    assert all(equal_samples(train_a.load(i), train_b.load(i)) for i in range(len(train_a)))  # same scenes
    assert not equal_samples(train_a[0], train_b[0])  # augmented by each run's own draws
    assert first_batches(a) != first_batches(b)


def test_without_a_data_seed_the_data_follows_the_run_seed(tmp_path):
    unset = tiny_config(tmp_path, "seed=1")
    assert unset.data.seed is None
    assert same_split(unset, tiny_config(tmp_path, "seed=1", "data.seed=1"), "train")  # augmentation included
    assert not same_split(unset, tiny_config(tmp_path, "seed=0"), "test")
    assert first_batches(unset) == first_batches(tiny_config(tmp_path, "seed=1", "data.seed=1"))


def test_nyuv2_carves_its_val_split_with_the_data_seed(tmp_path, nyu_root):  # noqa: F811
    def val_files(*overrides):
        config = tiny_config(tmp_path, "data.dataset=nyuv2", f"data.root={nyu_root}", *overrides)
        return build_dataset(config, "val").files

    assert val_files("seed=0", "data.seed=3") == val_files("seed=1", "data.seed=3")
    assert val_files("seed=1") == val_files("seed=0", "data.seed=1")
    assert val_files("data.seed=0") != val_files("data.seed=1")  # 6 train scenes: val is scene 3, then 4
