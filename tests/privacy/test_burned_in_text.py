"""Text burned into pixels: found where the test draws it, redacted, not seen where there is none."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from synthmed.privacy.burned_in_text import find_text, parse_boxes, redact, to_uint8_rgb

NAME = "DOE^JOHN 1984"


def _gradient(size: int = 512, dtype=np.uint16, high: int = 3000) -> np.ndarray:
    return np.tile(np.linspace(0, high, size), (size, 1)).astype(dtype)


def _with_text(pixels: np.ndarray, text: str, xy=(40, 40), size: int = 40) -> np.ndarray:
    """Draw ``text`` at the image maximum with Pillow's default font, as scanners burn it in."""
    peak = int(pixels.max())
    canvas = Image.fromarray(pixels.astype(np.int32))  # mode "I": 16-bit values survive
    ImageDraw.Draw(canvas).text(xy, text, fill=peak, font=ImageFont.load_default(size=size))
    return np.asarray(canvas).astype(pixels.dtype)


def test_finds_text_drawn_into_a_16_bit_image_and_hides_it_in_repr():
    plain = _gradient()
    image = _with_text(plain, NAME)
    boxes = find_text(image)
    assert len(boxes) == 1
    (box,) = boxes
    assert "JOHN" in box.text  # read, not only detected
    drawn = image != plain
    inside = np.zeros_like(drawn)
    inside[max(box.row0 - 2, 0):box.row1 + 2, max(box.col0 - 2, 0):box.col1 + 2] = True
    assert (drawn & inside).sum() >= 0.98 * drawn.sum()  # the box is where the text was drawn
    assert "JOHN" not in repr(box) and "JOHN" not in box.as_text()
    assert parse_boxes(box.as_text()) == [(box.row0, box.row1, box.col0, box.col1)]
    assert find_text(image, min_confidence=min(box.confidence + 0.01, 1.0)) == []  # the score threshold applies


def test_finds_two_lines_in_an_rgb_image():
    rgb = np.stack([_with_text(_gradient(dtype=np.uint8, high=200), NAME)] * 3, axis=-1)
    rgb = _with_text(rgb[..., 0], "ID 123456", xy=(40, 400))[..., None].repeat(3, axis=-1)
    assert len(find_text(rgb)) == 2


def test_no_text_found_in_a_plain_gradient_or_the_sample_fundus_photograph():
    import skimage.data

    assert find_text(_gradient()) == []
    assert find_text(skimage.data.retina()) == []


def test_redacted_image_has_no_readable_text_and_is_unchanged_elsewhere():
    image = _with_text(_gradient(), NAME)
    boxes = [(b.row0, b.row1, b.col0, b.col1) for b in find_text(image)]
    clean = redact(image, boxes)
    assert find_text(clean) == []
    r0, r1, c0, c1 = boxes[0]
    assert (clean[r0:r1, c0:c1] == image.min()).all()
    outside = np.ones(image.shape, bool)
    outside[max(r0 - 2, 0):r1 + 2, max(c0 - 2, 0):c1 + 2] = False
    assert np.array_equal(clean[outside], image[outside])


def test_redact_fills_every_channel_of_a_channels_first_item():
    item = np.stack([_gradient(64, np.float32, 10), _gradient(64, np.float32, 20) + 5])
    clean = redact(item, [(10, 20, 10, 30)], pad_px=0, channel_axis=0)
    assert (clean[0, 10:20, 10:30] == 0).all() and (clean[1, 10:20, 10:30] == 5).all()
    assert np.array_equal(clean[:, 30:], item[:, 30:])


def test_rejects_volumes_and_bad_confidence():
    with pytest.raises(ValueError, match=r"2D image"):
        to_uint8_rgb(np.zeros((4, 4, 4, 4)))
    with pytest.raises(ValueError, match="min_confidence"):
        find_text(np.zeros((32, 32)), min_confidence=2)
