"""Small text helpers shared by the stages: cutting at a word, and the words that say nothing about an image.

    cut_at_word("a red bus in the rain", 12)   -> "a red bus in"
    IMAGE_WORDS      # words that name an image or its file ("photo", "thumbnail", "jpg")
    GENERIC_WORDS    # IMAGE_WORDS and page furniture ("click", "here", "logo"): an AltText of only these says nothing
    IMAGE_EXTENSIONS # a regular-expression alternation of image file extensions ("jpe?g|png|...")

Pure functions and constants, no Spark.
"""

from __future__ import annotations

# Words that name an image or its file, not what it shows.
IMAGE_WORDS = frozenset("image images photo photos picture pictures pic pics thumbnail thumb untitled download "
                        "enlarge jpg jpeg png gif img placeholder".split())
# Words an AltText made only of says nothing about its image: the image words and the page's furniture.
GENERIC_WORDS = IMAGE_WORDS | frozenset("stock photography click here view larger file banner logo icon default "
                                        "image_ no title null none home page".split())
# Extensions of image files, for regular expressions: an AltText that is a file name ("IMG_1234.jpg").
IMAGE_EXTENSIONS = r"jpe?g|png|gif|webp|bmp|tiff?|heic|svg"


def cut_at_word(text: str, max_chars: int) -> str:
    """`text` if short enough, else its first `max_chars` characters ending at a word boundary."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars + 1]
    space = head.rfind(" ")
    # Cut at the last space unless that would throw away more than a fifth of the budget
    # (one very long "word", e.g. a URL or text without spaces).
    cut = head[:space] if space >= max_chars * 0.8 else head[:max_chars]
    return cut.rstrip()
