"""Ground-truth descriptive captions for the demo: the class name plus visual attributes measured
from the pixels (object colour or tone, brightness, size in frame, background).

    from veclip.demo.describe import attributes, attributes_batch, describe
    attrs = attributes(image)            # image: uint8 H x W x 3 RGB
    describe("ankle boot", attrs)        # "a dark grey ankle boot filling the frame on a black background"
    describe("ship", attributes(img2))   # "a bright photo of a small white ship on a blue background"

How the attributes are measured (pure numpy, vectorised over a batch):
- background: the median colour of the border ring (the outer ~10% of each side);
- object: the pixels that differ from that background colour by more than OBJECT_DISTANCE (RGB
  distance); when almost none do, the centre of the frame stands for the object;
- size: the share of the frame the object covers: below FILL_GREY / FILL_PHOTO's first value "small",
  above its second "large" ("filling the frame"), else "medium" (no word);
- colour: the most common name among the object's pixels on an 11-colour palette (red, orange, yellow, green, blue,
  purple, pink, brown, white, grey, black); grey images (Fashion-MNIST) get a tone instead: white,
  light grey, dark grey or black;
- brightness: the whole image's mean luminance: "dark", "mid" or "bright" (said in the caption of
  colour photos only: a grey product shot on black is always dark).

`describe` is deterministic and stable: the demo crawl, retrieval evaluation and the reproduce
experiment use it as the ground truth, so change it only together with their version strings.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

VERSION = "describe-1"
OBJECT_DISTANCE = 40.0      # RGB distance from the background colour that makes a pixel "object"
MIN_OBJECT_FILL = 0.03      # below this the centre of the frame stands for the object
# (small below, large above) share of the frame: grey product shots on a plain background are cut out
# exactly; in photos textured backgrounds differ from the border too, so more of the frame counts.
FILL_GREY = (0.25, 0.55)
FILL_PHOTO = (0.4, 0.75)
DARK_LUMA, BRIGHT_LUMA = 80.0, 160.0
GREY_CHROMA = 8.0           # mean per-pixel chroma below which an image counts as grey
PALETTE = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "grey", "black")
GREY_TONES = ("white", "light grey", "dark grey", "black")
VOWELS = "aeiou"
SORTED_PALETTE = tuple(sorted(PALETTE))
CHROMATIC_SHARE = 0.4


def _border_ring(h: int, w: int) -> np.ndarray:
    b = max(2, min(h, w) // 10)
    ring = np.zeros((h, w), dtype=bool)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    return ring


def _centre(h: int, w: int) -> np.ndarray:
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4: h - h // 4, w // 4: w - w // 4] = True
    return centre


def name_colours(rgb: np.ndarray) -> np.ndarray:
    """Palette names for an (N, 3) array of RGB colours in 0..255 (vectorised HSV rules)."""
    x = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
    mx, mn = x.max(1), x.min(1)
    v, c = mx, mx - mn
    s = np.where(mx > 0, c / np.maximum(mx, 1e-9), 0.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    safe = np.maximum(c, 1e-9)
    h = np.select([mx == r, mx == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60.0
    achromatic = (s < 0.2) | (c < 0.08)
    names = np.select(
        [v < 0.18,
         achromatic & (v > 0.78), achromatic & (v < 0.3), achromatic,
         ((h < 15) | (h >= 340)) & (s < 0.5) & (v > 0.7),          # light red
         ((h < 45) | (h >= 340)) & (v < 0.45),                     # dark red / orange
         (h >= 15) & (h < 45) & ((v < 0.65) | (s < 0.45)),         # dull orange
         (h >= 45) & (h < 70) & (v < 0.5),                         # dark yellow
         (h < 15) | (h >= 340), h < 45, h < 70, h < 165, h < 260, h < 290,
         v < 0.4],
        ["black", "white", "black", "grey", "pink", "brown", "brown", "brown",
         "red", "orange", "yellow", "green", "blue", "purple", "purple"],
        "pink")
    return names


@lru_cache(maxsize=1)
def _palette_lut() -> np.ndarray:
    """Palette index (into SORTED_PALETTE) of every colour quantised to 32 levels per channel."""
    levels = np.arange(32) * 8 + 4
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    return np.searchsorted(np.array(SORTED_PALETTE), name_colours(grid)).astype(np.int64)


def _dominant_colour(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The most common palette name among each image's object pixels; a chromatic colour wins when
    at least CHROMATIC_SHARE of the object has one (a red car with grey windows is a red car)."""
    n = len(x)
    q = x.astype(np.int32) >> 3                                                    # 32 levels per channel
    codes = _palette_lut()[(q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]]
    counts = np.zeros((n, len(SORTED_PALETTE)))
    rows = np.broadcast_to(np.arange(n)[:, None, None], mask.shape)
    np.add.at(counts, (rows[mask], codes[mask]), 1.0)
    chromatic = np.array([p not in ("white", "grey", "black") for p in SORTED_PALETTE])
    total = np.maximum(counts.sum(1), 1.0)
    chroma_counts = np.where(chromatic, counts, 0.0)
    use_chroma = chroma_counts.sum(1) / total >= CHROMATIC_SHARE
    best = np.where(use_chroma, chroma_counts.argmax(1), counts.argmax(1))
    return np.array(SORTED_PALETTE)[best]


def _grey_tones(level: np.ndarray) -> np.ndarray:
    return np.select([level >= 190, level >= 120, level >= 45], ["white", "light grey", "dark grey"], "black")


def attributes_batch(images: np.ndarray) -> list[dict]:
    """`attributes` for every image of a uint8 N x H x W x 3 batch (one vectorised pass)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"attributes_batch expects N x H x W x 3 RGB images, got shape {x.shape}")
    n, h, w, _ = x.shape
    if n == 0:
        return []
    x = x.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]      # per-channel planes: reductions over a 3-wide axis are slow
    ring, centre = _border_ring(h, w), _centre(h, w)
    background = np.median(x[:, ring], axis=1)                                  # N x 3
    chroma = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).mean((1, 2))
    grey = chroma < GREY_CHROMA
    bg = background[:, None, None, :]
    dist2 = (r - bg[..., 0]) ** 2 + (g - bg[..., 1]) ** 2 + (b - bg[..., 2]) ** 2
    mask = dist2 > OBJECT_DISTANCE ** 2                                          # N x H x W
    fill = mask.mean((1, 2))
    mask = np.where((fill < MIN_OBJECT_FILL)[:, None, None], centre[None], mask)
    weights = mask.astype(np.float32)
    obj = np.einsum("nhwc,nhw->nc", x, weights) / np.maximum(weights.sum((1, 2)), 1.0)[:, None]   # N x 3
    luma_w = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    luma = (0.299 * r + 0.587 * g + 0.114 * b).mean((1, 2))
    obj_luma = obj @ luma_w
    colour = _grey_tones(obj_luma).astype(object)
    if (~grey).any():  # palette names only for colour images (the grey ones keep their tone)
        colour[~grey] = _dominant_colour(x[~grey], mask[~grey])
    bg_luma = background @ luma_w
    bg_name = np.where(grey, np.select([bg_luma < 50, bg_luma > 200], ["black", "white"], "grey"),
                       name_colours(background))
    small, large = np.where(grey, FILL_GREY[0], FILL_PHOTO[0]), np.where(grey, FILL_GREY[1], FILL_PHOTO[1])
    size = np.select([fill < small, fill > large], ["small", "large"], "medium")
    brightness = np.select([luma < DARK_LUMA, luma > BRIGHT_LUMA], ["dark", "bright"], "mid")
    tone = np.where(obj_luma >= 120, "light", "dark")
    return [{"grey": bool(grey[i]), "colour": str(colour[i]), "tone": str(tone[i]),
             "brightness": str(brightness[i]), "size": str(size[i]), "fill": round(float(fill[i]), 3),
             "background": str(bg_name[i])} for i in range(n)]


def attributes(image: np.ndarray) -> dict:
    """Visual attributes of one uint8 H x W x 3 RGB image (H x W grey is accepted too).

    Keys: grey (bool), colour (palette name or grey tone), tone (light/dark), brightness
    (dark/mid/bright), size (small/medium/large), fill (share of the frame), background (a colour).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return attributes_batch(img[None])[0]


def article(word: str) -> str:
    return "an" if word[:1].lower() in VOWELS else "a"


def describe(class_name: str, attrs: dict) -> str:
    """The deterministic ground-truth caption, e.g. "a small white ship on a blue background"."""
    words = []
    if attrs["size"] == "small":
        words.append("small")
    words += [attrs["colour"], class_name.lower()]
    if attrs["size"] == "large":
        words += ["filling", "the", "frame"]
    bg = attrs["background"]
    words += ["on", article(bg), bg, "background"]
    phrase = f"{article(words[0])} {' '.join(words)}"
    if not attrs["grey"] and attrs["brightness"] in ("dark", "bright"):
        phrase = f"a {attrs['brightness']} photo of {phrase}"
    return phrase


def vocabulary(class_names) -> frozenset[str]:
    """Every whitespace-separated word describe() can write for these class names (lower-case): the
    demo captioner learns to say exactly these (veclip.demo.crawl keeps its probe names out of them)."""
    fixed = ("a", "an", "small", "filling", "the", "frame", "on", "background", "photo", "of", "dark", "bright")
    colours = " ".join(PALETTE + GREY_TONES + ("grey", "black", "white")).split()
    return frozenset(w for text in (*fixed, *colours, *(c.lower() for c in class_names)) for w in text.split())


def describe_batch(class_names: list[str], images: np.ndarray) -> list[str]:
    """Ground-truth captions for a batch: describe(class_names[i], attributes(images[i]))."""
    return [describe(c, a) for c, a in zip(class_names, attributes_batch(images))]
