"""Image data: the bundled digits and the class-folder loader."""

import numpy as np
import pytest
from PIL import Image

from keras_transformers.data.images import load_digits, load_image_folder


def test_digits_shapes_range_and_split():
    (x_train, y_train), (x_test, y_test), classes = load_digits(test_fraction=0.2, seed=0)
    assert classes == [str(i) for i in range(10)]
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32
    assert len(x_train) + len(x_test) == 1797
    assert len(x_test) == round(0.2 * 1797)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    assert set(np.unique(y_train)) == set(range(10)) and y_train.dtype == np.int32
    # Seeded and disjoint: the same seed gives the same split; no image is in both parts.
    (x_again, _), _, _ = load_digits(test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(x_train, x_again)
    train_rows = {row.tobytes() for row in x_train}
    overlap = sum(row.tobytes() in train_rows for row in x_test)
    assert overlap < 5  # the set has a handful of duplicate images, nothing more
    with pytest.raises(ValueError, match="test_fraction=1.5"):
        load_digits(test_fraction=1.5)


def _write_folder(root, colors):
    for name, color in colors.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((6, 10, 3), color, np.uint8)
            pixels[0, 0] = i  # images differ a little
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder_reads_classes_resizes_and_scales(tmp_path):
    _write_folder(tmp_path, {"red": (255, 0, 0), "blue": (0, 0, 255)})
    (x_train, y_train), (x_test, y_test), classes = load_image_folder(
        tmp_path, image_size=(6, 10), test_fraction=0.34, seed=1
    )
    assert classes == ["blue", "red"]
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test])
    assert x.shape == (6, 6, 10, 3) and len(x_test) == 2
    # Label 0 = blue, 1 = red: check the colour of a pixel away from the marked corner.
    np.testing.assert_allclose(x[y == 0][:, 3, 5], [[0.0, 0.0, 1.0]] * 3, atol=1e-6)
    np.testing.assert_allclose(x[y == 1][:, 3, 5], [[1.0, 0.0, 0.0]] * 3, atol=1e-6)
    (small, _), _, _ = load_image_folder(
        tmp_path, image_size=4, color_mode="grayscale", test_fraction=0.5
    )
    assert small.shape[1:] == (4, 4, 1)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", image_size=8)
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path, image_size=8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path, image_size=8)
    _write_folder(tmp_path / "one", {"only": (1, 2, 3)})
    with pytest.raises(ValueError, match="at least two"):
        load_image_folder(tmp_path / "one", image_size=8)
    with pytest.raises(ValueError, match="color_mode='cmyk'"):
        load_image_folder(tmp_path / "one" / "..", image_size=8, color_mode="cmyk")


def test_empty_class_and_corrupt_image_are_named(tmp_path):
    _write_folder(tmp_path / "empty", {"cats": (1, 2, 3)})
    (tmp_path / "empty" / "dogs").mkdir()
    with pytest.raises(ValueError, match=r"\['dogs'\] hold no image files"):
        load_image_folder(tmp_path / "empty", image_size=8)
    _write_folder(tmp_path / "corrupt", {"cats": (1, 2, 3), "dogs": (3, 2, 1)})
    bad = tmp_path / "corrupt" / "dogs" / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match=f"{bad}.* is not a readable image"):
        load_image_folder(tmp_path / "corrupt", image_size=8)
