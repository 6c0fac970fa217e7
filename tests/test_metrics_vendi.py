import pytest
import torch

from drawgap.metrics import Vendi, vendi_score


def test_orthogonal_items_count_as_distinct():
    assert float(vendi_score(torch.eye(5))) == pytest.approx(5.0)
    assert float(vendi_score(3.0 * torch.eye(7)[:4])) == pytest.approx(4.0)  # scale does not matter


def test_identical_items_count_as_one():
    assert float(vendi_score(torch.ones(6, 3))) == pytest.approx(1.0)


def test_duplicates_of_orthogonal_items_more_items_than_dims():
    # 8 items in 4 dims (the D x D path): 4 orthogonal directions, each twice -> 4
    assert float(vendi_score(torch.eye(4).repeat(2, 1))) == pytest.approx(4.0)


def test_hand_computed_two_items_at_sixty_degrees():
    # cos = 1/2: K/n = [[1, .5], [.5, 1]] / 2, eigenvalues 3/4 and 1/4
    x = torch.tensor([[1.0, 0.0], [0.5, 3**0.5 / 2]])
    entropy = -(0.75 * torch.log(torch.tensor(0.75)) + 0.25 * torch.log(torch.tensor(0.25)))
    assert float(vendi_score(x)) == pytest.approx(float(entropy.exp()))


def test_accumulator_per_class():
    metric = Vendi()
    metric.update_features(torch.stack([torch.eye(3), torch.ones(3, 3)]))
    out = metric.compute()
    assert out["per_class"].tolist() == pytest.approx([3.0, 1.0])
    assert out["vendi"] == pytest.approx(2.0)
