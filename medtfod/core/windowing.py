"""Grey-level windows: how raw pixel values (DICOM modality values such as Hounsfield units, or the
raw samples of a 16-bit PNG/TIFF) become the 8-bit pixels the model sees.

A window is chosen once, at `convert --window SPEC`, recorded in the dataset manifest and in the
export's `export.json`, and applied again by `detect` / `ExportedModel.predict` to DICOM and
16-bit inputs, so training and inference see the same pixels. SPEC is one of:

    header            DICOM: the file's VOI LUT or window centre/width (pydicom's `apply_voi_lut`,
                      DICOM's own linear function), then a min-max stretch: exactly what convert did
                      before windows existed (the default). Other 16-bit files have no header
                      window: a 16-bit PNG is passed through untouched (TensorFlow reads its high
                      byte, as before) and a 16-bit TIFF is min-max stretched; as a part of multi:,
                      `header` on such a file is min-max too.
    minmax            the image's own minimum -> 0 and maximum -> 255
    percentile[:P1,P99]  the image's P1-th percentile -> 0, P99-th -> 255 (default 1,99; numpy's
                      linear interpolation), values outside clipped
    W,L               window width W (> 0) and level (centre) L in the file's units
    lung | mediastinum | bone | brain | abdomen   the named CT windows of `NAMED` (HU)
    multi:A;B;C       three of the above (not multi), one per RGB channel (A red, B green, C blue)

A W,L window maps `lo = L - W/2` to 0 and `hi = L + W/2` to 255, linearly, clipping outside:
`255 * clip((v - lo) / W, 0, 1)`. (This is the usual textbook window; DICOM's own linear VOI
function, used by `header`, differs by half a unit: centre c - 0.5, width w - 1.) MONOCHROME1
images are inverted after windowing (`255 - y`, so that bone is bright as in MONOCHROME2), then
values are rounded half to even (`np.round`). With CLAHE (`--clahe`), OpenCV's contrast-limited
adaptive histogram equalization (clip limit 2.0, 8x8 tiles) runs on each 8-bit channel last.
Windows and CLAHE apply to grey DICOM and to 16-bit (or float) grey PNG/TIFF images only; RGB and
palette DICOMs keep their colours, and 8-bit PNG/JPEG files pass into the TFRecords untouched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import UserError, did_you_mean

# Named CT windows, (width, level) in Hounsfield units, as Radiopaedia's "Windowing (CT)" article
# lists them (https://radiopaedia.org/articles/windowing-ct): lungs W1500 L-600, mediastinum W350
# L50, bone W1800 L400, brain W80 L40, abdomen soft tissues W400 L50. They assume HU, i.e. CT
# values after the modality LUT (rescale slope/intercept); on other data they are just numbers.
NAMED = {"lung": (1500.0, -600.0), "mediastinum": (350.0, 50.0), "bone": (1800.0, 400.0),
         "brain": (80.0, 40.0), "abdomen": (400.0, 50.0)}
KINDS = ("header", "minmax", "percentile") + tuple(NAMED)
DEFAULT = "header"
CLAHE_CLIP, CLAHE_TILES = 2.0, (8, 8)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class Window:
    """One parsed window (see the module docstring for the meaning of each kind).

    Attributes:
      kind: 'header', 'minmax', 'percentile', 'wl' (width/level, named windows included) or 'multi'.
      text: the spec as recorded in the manifest and export.json (canonical: 'lung', '400,40',
        'percentile:1,99', 'multi:lung;mediastinum;bone').
      width, level: for 'wl', in the image's raw units (HU for CT).
      percentiles: for 'percentile', (P1, P99) with 0 <= P1 < P99 <= 100.
      parts: for 'multi', the three channel windows.
      clahe: run CLAHE on the 8-bit result.
    """

    kind: str
    text: str
    width: float = 0.0
    level: float = 0.0
    percentiles: Tuple[float, float] = (1.0, 99.0)
    parts: Tuple["Window", ...] = ()
    clahe: bool = False

    @property
    def is_default(self) -> bool:
        """The `header` window without CLAHE: convert's behaviour before windows existed."""
        return self.kind == "header" and not self.clahe

    @property
    def channels(self) -> int:
        return 3 if self.kind == "multi" else 1

    @property
    def key(self) -> tuple:
        """What decides the pixels (not the spelling): '1500,-600' and 'lung' have one key."""
        return (self.kind, self.width, self.level, self.percentiles if self.kind == "percentile" else None,
                tuple(p.key for p in self.parts), self.clahe)

    def describe(self) -> str:
        return self.text + (" + CLAHE" if self.clahe else "")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _single(text: str, option: str, whole: str) -> Window:
    spec = text.strip().lower()
    expected = ("expected header, minmax, percentile, percentile:P1,P99, W,L (width > 0, level), "
                f"{', '.join(NAMED)} or multi:A;B;C")
    if spec in ("header", "minmax"):
        return Window(spec, spec)
    if spec in NAMED:
        width, level = NAMED[spec]
        return Window("wl", spec, width, level)
    if spec == "percentile" or spec.startswith("percentile:"):
        values = spec.split(":", 1)[1] if ":" in spec else "1,99"
        m = re.fullmatch(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*", values)
        if not m:
            raise UserError(f"{option} {whole!r}: {text!r} is not percentile:P1,P99 (e.g. percentile:1,99)")
        low, high = float(m.group(1)), float(m.group(2))
        if not 0 <= low < high <= 100:
            raise UserError(f"{option} {whole!r}: percentiles {_fmt(low)},{_fmt(high)} must satisfy "
                            "0 <= P1 < P99 <= 100")
        return Window("percentile", f"percentile:{_fmt(low)},{_fmt(high)}", percentiles=(low, high))
    m = re.fullmatch(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*", spec)
    if m:
        width, level = float(m.group(1)), float(m.group(2))
        if not width > 0 or not np.isfinite(width) or not np.isfinite(level):
            raise UserError(f"{option} {whole!r}: window width {m.group(1)} must be a number > 0 (W,L: width, "
                            "then level)")
        return Window("wl", f"{_fmt(width)},{_fmt(level)}", width, level)
    raise UserError(f"{option} {whole!r}: {text.strip()!r} is not a window; {expected}"
                    + did_you_mean(spec, KINDS))


def parse_window(text: Optional[str], clahe: bool = False, option: str = "--window") -> Window:
    """A `Window` from a SPEC string (None: the default, 'header').

    Raises:
      UserError: the spec does not parse, a width <= 0, percentiles out of order, or a multi
        window without exactly three parts (the message names the value and what is expected).
    """
    whole = DEFAULT if text is None else str(text)
    spec = whole.strip()
    if spec.lower().startswith("multi:"):
        parts = spec.split(":", 1)[1].split(";")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise UserError(f"{option} {whole!r}: multi: takes exactly three windows separated by ';' "
                            "(red;green;blue), e.g. multi:lung;mediastinum;bone")
        windows = tuple(_single(p, option, whole) for p in parts)
        return Window("multi", "multi:" + ";".join(w.text for w in windows), parts=windows, clahe=clahe)
    window = _single(spec, option, whole)
    return Window(window.kind, window.text, window.width, window.level, window.percentiles, clahe=clahe)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """255 * clip((v - lo) / (hi - lo), 0, 1) as float64; zeros when hi <= lo (a flat image)."""
    if not hi > lo:
        return np.zeros(values.shape, np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0


def window_channel(values: np.ndarray, window: Window, header=None) -> np.ndarray:
    """One window applied to raw values (H, W), as float64 in [0, 255] (not yet inverted or rounded).

    `header(values)` gives the values after the file's own VOI LUT/window (DICOM); for 'header'
    without one, the raw values are min-max stretched.
    """
    if window.kind == "header":  # the VOI LUT indexes a table by the raw (integer) values: not cast first
        values = np.asarray(header(values) if header is not None else values, np.float64)
        return _stretch(values, float(values.min()), float(values.max()))
    values = np.asarray(values, np.float64)
    if window.kind == "minmax":
        return _stretch(values, float(values.min()), float(values.max()))
    if window.kind == "percentile":
        lo, hi = np.percentile(values, window.percentiles)
        return _stretch(values, float(lo), float(hi))
    if window.kind == "wl":
        return _stretch(values, window.level - window.width / 2.0, window.level + window.width / 2.0)
    raise ValueError(f"window_channel: a {window.kind!r} window has channels of its own")


def apply_window(values: np.ndarray, window: Window, invert: bool = False, header=None) -> np.ndarray:
    """Raw grey values (H, W) -> uint8 pixels: (H, W) for one window, (H, W, 3) for multi.

    Args:
      values: raw values (modality values for DICOM: after rescale slope/intercept).
      window: the parsed window.
      invert: MONOCHROME1: 255 - y after windowing, before rounding.
      header: for 'header' parts, a function applying the file's VOI LUT/window (DICOM), else None.
    """
    parts = window.parts if window.kind == "multi" else (window,)
    channels = []
    for part in parts:
        scaled = window_channel(values, part, header)
        if invert:
            scaled = 255.0 - scaled
        channels.append(np.round(scaled).astype(np.uint8))
    if window.kind != "header" and all(c.min() == c.max() for c in channels) and np.ptp(values) > 0:
        _flat(values, window)
    out = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    return clahe(out) if window.clahe else out


def _flat(values: np.ndarray, window: Window) -> None:
    """Raises ImageError: an image with detail that `window` turns into one flat grey (a CT window on
    an image whose values are not Hounsfield units, say) would train and detect on nothing. (Not
    for 'header', the file's own window: it stays the pipeline it always was.)"""
    from .image_info import ImageError
    raise ImageError(f"the window {window.text} makes this image one flat grey: its values run "
                     f"{float(np.min(values)):g} to {float(np.max(values)):g}, all outside the window (is it in the "
                     "units the window expects, e.g. CT Hounsfield units for lung/bone?); use --window minmax, "
                     "percentile or W,L in the image's own units")


def clahe(pixels: np.ndarray) -> np.ndarray:
    """OpenCV CLAHE (clip limit `CLAHE_CLIP`, `CLAHE_TILES` tiles) on each channel of uint8 pixels."""
    import cv2
    tool = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)
    if pixels.ndim == 2:
        return tool.apply(pixels)
    return np.stack([tool.apply(np.ascontiguousarray(pixels[..., c])) for c in range(pixels.shape[2])], axis=-1)
