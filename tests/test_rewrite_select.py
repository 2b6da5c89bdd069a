"""Best-of-n selection (veclip.rewrite.select): the documented, deterministic rule on hand-made candidates."""

import pytest

from veclip.rewrite.select import Score, choose, kept_words, score, source_words

ALT = "Golden Gate Bridge at sunset, San Francisco"
CAP = "a large red suspension bridge over water at dusk"


def test_the_candidate_keeping_most_alt_text_and_caption_words_wins():
    cands = ["A red bridge over water at dusk.",                                     # caption only
             "The Golden Gate Bridge in San Francisco at sunset.",                    # AltText only
             "The Golden Gate Bridge in San Francisco, a large red suspension bridge over water at dusk."]
    assert choose(cands, ALT, CAP) == 2
    s = [score(c, ALT, CAP) for c in cands]
    assert s[2].kept > s[1].kept and s[2].kept > s[0].kept


def test_invalid_candidates_never_win_and_none_valid_is_none():
    assert choose([None, "A red bridge over water at dusk.", None], ALT, CAP) == 1
    assert choose([None, None], ALT, CAP) is None
    assert choose([], ALT, CAP) is None


def test_one_candidate_is_that_candidate():
    assert choose(["A red bridge."], ALT, CAP) == 0


def test_ties_go_to_fewer_new_words_then_fewer_clip_tokens_then_the_lowest_index():
    # Same kept words; the second adds one word that neither text has ("famous").
    assert choose(["Golden Gate Bridge at dusk over water.", "The famous Golden Gate Bridge at dusk over water."],
                  ALT, CAP) == 0
    assert choose(["The famous Golden Gate Bridge at dusk over water.", "Golden Gate Bridge at dusk over water."],
                  ALT, CAP) == 1
    # Same kept and new words: the shorter (fewer CLIP tokens) wins whatever its index.
    long_, short = "The Golden Gate Bridge, seen at dusk, over the water.", "Golden Gate Bridge at dusk over water."
    assert score(long_, ALT, CAP).kept == score(short, ALT, CAP).kept
    assert score(long_, ALT, CAP).clip_tokens > score(short, ALT, CAP).clip_tokens
    assert choose([long_, short], ALT, CAP) == 1 and choose([short, long_], ALT, CAP) == 0
    # A full tie: candidate 0 (the greedy answer) wins; the choice is the same on every call.
    same = "Golden Gate Bridge at dusk over water."
    assert choose([None, same, same, same], ALT, CAP) == 1
    assert {choose([same, same], ALT, CAP) for _ in range(5)} == {0}


def test_shop_words_and_skus_earn_nothing_and_a_word_both_texts_have_counts_once():
    alt = "Kenwood UBZ-S20 (UBZ-S20B/UBZ-S20WH) transceiver sale, free shipping"
    cap = "a black walkie talkie on a white table"
    assert "sale" not in source_words(alt, cap) and "ubz" not in source_words(alt, cap)
    seo = "A black Kenwood walkie talkie on sale with free shipping, UBZ-S20."
    plain = "A black Kenwood walkie talkie on a white table."
    assert choose([seo, plain], alt, cap) == 1
    assert kept_words("a bridge", {"bridge"}) == 1 and kept_words("bridges and a bridge", {"bridge"}) == 1
    # A flagged (low-information) AltText gives no points: the caption alone decides.
    assert score("Kenwood on a white table.", alt, cap, low_info=True).kept == \
        score("Kenwood on a white table.", None, cap).kept


def test_inflections_count_as_kept():
    assert kept_words("Two dogs run on sandy beaches.", {"dog", "runs", "sand", "beach", "sandcastle"}) == 4


def test_score_orders_as_documented():
    assert Score(5, 0, 20).key(3) < Score(4, 0, 10).key(0)     # kept words first
    assert Score(5, 0, 20).key(3) < Score(5, 1, 10).key(0)     # then new words
    assert Score(5, 0, 10).key(3) < Score(5, 0, 11).key(0)     # then CLIP tokens
    assert Score(5, 0, 10).key(0) < Score(5, 0, 10).key(1)     # then the index


@pytest.mark.parametrize("alt", [None, "", "IMG_1234.jpg"])
def test_rows_without_an_informative_alt_text_are_scored_on_the_caption(alt):
    assert choose(["A red suspension bridge over water.", "A bridge."], alt, CAP) == 0
