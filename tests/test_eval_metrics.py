"""Retrieval and zero-shot metrics on hand-computed cases: ties, several captions per image, a perfect
and a reversed model, chunking, and a slow reference implementation."""

import pytest
import torch

from veclip.evaluate.metrics import (class_ranks, mean_per_class_recall, normalize, recall_at_k, retrieval_ranks,
                                     topk)


def from_similarities(sims):
    """Embeddings whose image x text similarity matrix is exactly `sims` (images = identity rows)."""
    s = torch.tensor(sims, dtype=torch.float32)
    return torch.eye(s.shape[0]), s.T.contiguous()


def test_several_captions_per_image_with_ties_hand_computed():
    # Rows: images; columns: captions; captions 0,1 belong to image 0, 2,3 to image 1, 4,5 to image 2.
    images, texts = from_similarities([[5, 1, 3, 2, 4, 0],
                                       [6, 0, 1, 2, 3, 4],
                                       [0, 9, 8, 7, 6, 5]])
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    i2t, t2i = retrieval_ranks(images, texts, owner)
    # Image 0: its best caption (5) beats every other caption. Image 1: best own caption scores 2;
    # other captions scoring >= 2: 6, 3, 4. Image 2: best own 6; others >= 6: 9, 8, 7.
    assert i2t.tolist() == [0, 3, 3]
    # Caption 3 (image 1) scores 2 with image 0 too: the tie counts against the model.
    assert t2i.tolist() == [1, 1, 2, 2, 0, 0]
    assert recall_at_k(i2t, (1, 5, 10)) == pytest.approx({1: 100 / 3, 5: 100.0, 10: 100.0})
    assert recall_at_k(t2i, (1, 2, 3)) == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 100.0})


def test_tied_own_captions_do_not_count_but_a_tied_negative_does():
    images, texts = from_similarities([[2, 2, 2, 1],
                                       [0, 0, 3, 3]])
    i2t, _ = retrieval_ranks(images, texts, torch.tensor([0, 0, 1, 1]))
    assert i2t.tolist() == [1, 0]


def test_identical_images_tie_both_ways():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    i2t, t2i = retrieval_ranks(images, texts, torch.tensor([0, 1, 2]))
    assert i2t.tolist() == [1, 0, 1] and t2i.tolist() == [1, 0, 1]


def test_a_collapsed_model_gets_no_credit():
    images, texts = torch.ones(4, 3), torch.ones(8, 3)
    i2t, t2i = retrieval_ranks(images, texts, torch.arange(4).repeat_interleave(2))
    assert recall_at_k(i2t, (1,)) == {1: 0.0} and recall_at_k(t2i, (1,)) == {1: 0.0}


def test_perfect_and_reversed_models():
    n = 12
    images = torch.eye(n)
    owner = torch.arange(n).repeat_interleave(5)
    i2t, t2i = retrieval_ranks(images, images[owner], owner)
    assert recall_at_k(i2t, (1, 5, 10)) == {1: 100.0, 5: 100.0, 10: 100.0}
    assert recall_at_k(t2i, (1, 5, 10)) == {1: 100.0, 5: 100.0, 10: 100.0}
    # Reversed: every caption points away from its image (-1) and is orthogonal to the others (0).
    i2t, t2i = retrieval_ranks(images, -images[owner], owner)
    assert i2t.tolist() == [5 * (n - 1)] * n and t2i.tolist() == [n - 1] * (5 * n)
    assert recall_at_k(i2t, (1, 5, 10)) == {1: 0.0, 5: 0.0, 10: 0.0}
    assert recall_at_k(t2i, (1, 5, 10)) == {1: 0.0, 5: 0.0, 10: 0.0}


def reference_ranks(images, texts, owner):
    """Slow textbook version: sort every row, find the first positive."""
    sims = images @ texts.T
    i2t = []
    for i in range(images.shape[0]):
        order = torch.argsort(sims[i], descending=True).tolist()
        i2t.append(next(p for p, t in enumerate(order) if owner[t] == i))
    t2i = []
    for t in range(texts.shape[0]):
        order = torch.argsort(sims[:, t], descending=True).tolist()
        t2i.append(order.index(int(owner[t])))
    return i2t, t2i


@pytest.mark.parametrize("chunk", [1, 50, 16 * 1024 * 1024])
def test_chunked_ranks_match_the_textbook_definition(chunk):
    g = torch.Generator().manual_seed(7)
    owner = torch.cat([torch.arange(37).repeat_interleave(3), torch.arange(37)[::4]])  # 3 or 4 captions
    images = normalize(torch.randn(37, 8, generator=g))
    texts = normalize(torch.randn(len(owner), 8, generator=g))
    i2t, t2i = retrieval_ranks(images, texts, owner, chunk_elements=chunk)
    ref_i2t, ref_t2i = reference_ranks(images, texts, owner)
    assert i2t.tolist() == ref_i2t and t2i.tolist() == ref_t2i


def test_zero_shot_hand_computed_with_ties_and_imbalance():
    logits = torch.tensor([[3, 1, 2], [1, 3, 2], [2, 2, 0], [0, 5, 1], [1, 1, 1]], dtype=torch.float32)
    labels = torch.tensor([0, 0, 0, 1, 2])
    ranks = class_ranks(logits, torch.eye(3), labels)
    assert ranks.tolist() == [0, 2, 1, 0, 2]
    assert recall_at_k(ranks, (1, 2, 5)) == pytest.approx({1: 40.0, 2: 60.0, 5: 100.0})
    # Per class: 1/3, 1/1, 0/1 -> 44.4, unlike top-1 (40) which weights the big class more.
    assert mean_per_class_recall(ranks, labels, 3) == pytest.approx(100 * (1 / 3 + 1 + 0) / 3)
    # A class with no images is left out of the mean, not counted as zero.
    assert mean_per_class_recall(ranks, labels, 5) == pytest.approx(100 * (1 / 3 + 1 + 0) / 3)


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_class_ranks_are_chunk_invariant(chunk):
    g = torch.Generator().manual_seed(3)
    images, classes = normalize(torch.randn(29, 6, generator=g)), normalize(torch.randn(7, 6, generator=g))
    labels = torch.randint(0, 7, (29,), generator=g)
    expected = [int((torch.argsort(images[i] @ classes.T, descending=True) == labels[i]).nonzero())
                for i in range(29)]
    assert class_ranks(images, classes, labels, chunk_elements=chunk).tolist() == expected


def test_topk_keeps_candidate_order_on_ties():
    scores, idx = topk(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), 2)
    assert idx.tolist() == [[1, 2]] and scores.tolist() == [[1.0, 1.0]]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="1 of 2 embeddings contain NaN"):
        retrieval_ranks(torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]), torch.eye(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="1 of 2 images have no caption"):
        retrieval_ranks(torch.eye(2), torch.eye(2)[:1], torch.tensor([0]))
    with pytest.raises(ValueError, match="outside 0..1"):
        retrieval_ranks(torch.eye(2), torch.eye(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"labels outside 0..2"):
        class_ranks(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 3]))
