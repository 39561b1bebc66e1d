"""Augmentation presets: named lists of the OD API's own preprocessing steps.

Each preset is a list of `PreprocessingStep` text protos (the OD API's `preprocessor.proto`),
parsed with `text_format` into `train_config.data_augmentation_options`; the OD API's
`preprocessor_builder` turns them into the same `core.preprocessor` functions training runs.
Nothing here reimplements an augmentation.

| preset    | steps (in order, with their parameters)                               | for |
|-----------|------------------------------------------------------------------------|-----|
| `default` | the model template's own list, unchanged (what `config` renders without a preset): SSD `random_horizontal_flip` + `random_crop_image` (min_area 0.75, aspect 0.75-3.0, min_object_covered 0); Faster/Mask R-CNN `random_horizontal_flip` | natural-image habits of the TF2 Detection Zoo |
| `none`    | no step | a baseline; data that must be seen as acquired |
| `cxr`     | `random_image_scale` 0.9-1.1; `random_crop_image` min_area 0.8, aspect 0.9-1.1, min_object_covered 1.0, overlap_thresh 0.5, random_coef 0.5; `random_adjust_brightness` max_delta 0.1; `random_adjust_contrast` 0.9-1.1 | chest radiographs: **no horizontal flip** (the heart, aortic knob and gastric bubble are on the left: a mirrored film is not a plausible film, and side-specific findings change meaning); small zoom and exposure changes |
| `us`      | `random_horizontal_flip`; `random_image_scale` 0.8-1.25; `random_crop_image` min_area 0.6, aspect 0.75-1.33, min_object_covered 1.0, overlap_thresh 0.5, random_coef 0.25; `random_adjust_contrast` 0.7-1.4; `random_adjust_brightness` max_delta 0.2 | ultrasound: gain and dynamic range vary by machine and operator, probe position varies the depth and zoom; a lesion looks the same mirrored |

Notes on the steps (the OD API's behaviour, which the presets rely on):
  - `random_image_scale` resizes the whole image; the model's image resizer brings it back to
    the input size, so it jitters the pixel detail (resolution) the model sees, not the
    lesion's size relative to the image. `random_crop_image` is what zooms in: a crop of at
    least `min_area` of the image, so lesions appear up to 1/sqrt(min_area) larger.
  - `random_crop_image` with `min_object_covered: 1.0` keeps at least one box whole; a box
    whose overlap with the crop is under `overlap_thresh` is dropped, the others are clipped to
    the crop. `random_coef` is the chance that the image is left uncropped.
  - `random_adjust_brightness` adds a delta in [-max_delta, max_delta] (on the [0, 1] scale);
    `random_adjust_contrast` multiplies the contrast by a factor in [min_delta, max_delta].
    Neither moves a box.
  - The OD API has no speckle (multiplicative noise) step; `random_patch_gaussian` (additive
    noise on one patch, sizes in pixels) is the nearest, left out of `us` because its patch
    size depends on the image size. Add it with `--set` when wanted.

`medtfod augment-preview` draws what a config's steps do to its training images and boxes.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from ..core.errors import UserError, did_you_mean

DEFAULT = "default"

# name -> (what it is for, one line; the steps as text protos of `PreprocessingStep`).
PRESETS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    DEFAULT: ("the model template's own augmentation, unchanged", ()),
    "none": ("no augmentation", ()),
    "cxr": ("chest radiographs: no horizontal flip (anatomy has a side); small zoom, exposure changes", (
        "random_image_scale { min_scale_ratio: 0.9 max_scale_ratio: 1.1 }",
        "random_crop_image { min_object_covered: 1.0 min_aspect_ratio: 0.9 max_aspect_ratio: 1.1 "
        "min_area: 0.8 max_area: 1.0 overlap_thresh: 0.5 random_coef: 0.5 }",
        "random_adjust_brightness { max_delta: 0.1 }",
        "random_adjust_contrast { min_delta: 0.9 max_delta: 1.1 }",
    )),
    "us": ("ultrasound: flip, stronger contrast and brightness (gain) and scale jitter", (
        "random_horizontal_flip {}",
        "random_image_scale { min_scale_ratio: 0.8 max_scale_ratio: 1.25 }",
        "random_crop_image { min_object_covered: 1.0 min_aspect_ratio: 0.75 max_aspect_ratio: 1.33 "
        "min_area: 0.6 max_area: 1.0 overlap_thresh: 0.5 random_coef: 0.25 }",
        "random_adjust_contrast { min_delta: 0.7 max_delta: 1.4 }",
        "random_adjust_brightness { max_delta: 0.2 }",
    )),
}


def preset_names() -> List[str]:
    return list(PRESETS)


def preset_steps(name: str):
    """The `PreprocessingStep` protos of preset `name` (empty for `none` and `default`).

    Raises:
      UserError: an unknown preset, with the valid names.
    """
    from ..odapi import protos
    if name not in PRESETS:
        raise UserError(f"unknown augmentation preset {name!r}; valid presets: {', '.join(PRESETS)}"
                        + did_you_mean(name, PRESETS))
    return [protos.parse_text(text, protos.PreprocessingStep(), f"augmentation preset {name}")
            for text in PRESETS[name][1]]


def apply_preset(train_config, name: str) -> None:
    """Replace `train_config.data_augmentation_options` with preset `name`'s steps; `default`
    keeps the template's list as it is."""
    steps = preset_steps(name)
    if name == DEFAULT:
        return
    del train_config.data_augmentation_options[:]
    for step in steps:
        train_config.data_augmentation_options.add().CopyFrom(step)


def step_names(train_config) -> List[str]:
    """The names of `train_config`'s augmentation steps, in order."""
    return [s.WhichOneof("preprocessing_step") for s in train_config.data_augmentation_options]
