"""The knowledge probe's names (veclip.demo.crawl.probe_names) are held out of the demo captioner by
construction: names the crawl's relevant AltTexts use that no caption the captioner learns from can hold."""

from __future__ import annotations

import itertools

import pytest

from veclip.demo import captioner, crawl, describe, sources

CLASSES = [c for d in sources.DATASETS for c in sources.class_names(d)]


def every_caption():
    """Every caption describe() can write for the demo classes (all attribute combinations)."""
    colours = describe.PALETTE + describe.GREY_TONES
    backgrounds = describe.PALETTE + ("grey",)
    for cls, size, colour, bg, grey, light in itertools.product(
            CLASSES, ("small", "medium", "large"), colours, backgrounds, (True, False), ("dark", "mid", "bright")):
        yield describe.describe(cls, {"size": size, "colour": colour, "background": bg, "grey": grey,
                                      "brightness": light})


def test_probe_names_are_crawl_names_of_their_class_and_disjoint():
    probe = crawl.probe_names()
    assert set(probe) == set(crawl.NAMES)
    seen = set()
    for cls, names in probe.items():
        assert set(names) <= set(crawl.NAMES[cls])            # only the crawl's AltTexts use them
        assert not seen & set(names)
        seen |= set(names)
    assert "Nike runners" in probe["sneaker"] and "Maine Coon" in probe["cat"]
    assert "running shoes" in probe["sneaker"] and "tabby cat" not in probe["cat"] and "handbag" not in probe["bag"]
    assert sum(1 for names in probe.values() if names) >= 18


def test_no_probe_name_can_appear_in_a_captioner_caption():
    probe_words = {w for names in crawl.probe_names().values() for n in names for w in crawl.words(n)}
    vocabulary = describe.vocabulary(CLASSES)
    for caption in every_caption():
        assert set(caption.split()) <= vocabulary, caption         # vocabulary() is every word describe writes
        assert not crawl.words(caption) & probe_words, caption
    assert not crawl.words(captioner.PROMPT_WORDS) & probe_words


def test_the_real_captioner_tokenizer_holds_no_probe_word():
    if not sources.available("fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    data = captioner.load_data(captioner.usable_datasets(sources.DATASETS), "captioner", 2000)
    tokens = set(captioner.build_tokenizer(data.captions).get_vocab()) - set(captioner.SPECIALS)   # <s>, </s>: control
    probe_words = {w for names in crawl.probe_names().values() for n in names for w in crawl.words(n)}
    assert not {w for t in tokens for w in crawl.words(t)} & probe_words
    assert crawl.probe_mentions("Buy Nike runners online | Urban Closet", "Sneaker") == ["Nike runners"]
    assert crawl.probe_mentions("a white sneaker on a black background", "sneaker") == []
