"""Draw what an assigner did on one image: ground truth, positive and ignored anchors; write the
drawing as a PNG file marked as ``retina-focal visualize``'s."""
import os
from typing import List, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, PngImagePlugin

from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import check_output_file, make_output_dir

__all__ = ["PALETTE", "IGNORED_COLOR", "PNG_MARK", "check_output_png", "draw_assignment",
           "gt_index_labels", "legend_lines", "save_png"]

# one colour per ground truth (cycled); its positive anchors are drawn in the same colour
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128)]
IGNORED_COLOR = (160, 160, 160)


def gt_index_labels(matched_idxs: torch.Tensor, match_labels: torch.Tensor,
                    num_gt: int) -> torch.Tensor:
    """An assigner's output (see ``AnchorAssigner``) as one (R,) int64 tensor: the matched
    ground truth's index 0..M-1 for a positive anchor, -1 for an ignored one, M = ``num_gt``
    for a negative one."""
    labels = matched_idxs.clone()
    labels[match_labels == 0] = num_gt
    labels[match_labels == -1] = -1
    return labels


def draw_assignment(
    image: np.ndarray,
    gt_boxes: torch.Tensor,
    gt_text: Sequence[str],
    anchors: torch.Tensor,
    labels: torch.Tensor,
    scale: float = 1.0,
    title: str = "",
) -> Image.Image:
    """
    Args:
        image: (H, W, 3) uint8 RGB, the image as the model sees it.
        gt_boxes: (M, 4) XYXY in image pixels.
        gt_text: M captions drawn above the boxes.
        anchors: (R, 4) XYXY, all anchors of the image.
        labels: (R,) int64: ground-truth index 0..M-1 for a positive anchor, -1 ignored,
            M negative (:func:`gt_index_labels` of an assigner's output).
        scale: magnification of the drawing (nearest-neighbour), so small anchors stay visible.
        title: a line of text drawn in the top margin.

    Returns:
        The drawing: ignored anchors in grey, each ground truth's positive anchors (thin) and
        the ground truth itself (thick) in that ground truth's colour.
    """
    h, w = image.shape[:2]
    # Image.NEAREST: Pillow 9.0 (setup.py allows it) has no Image.Resampling; Pillow's own
    # annotations declare the constant only as Image.Resampling.NEAREST
    canvas = Image.fromarray(image).resize((round(w * scale), round(h * scale)),
                                           Image.NEAREST)  # type: ignore[attr-defined]
    # margin so that anchors reaching outside the image stay visible
    pad = int(round(0.15 * max(canvas.size)))
    out = Image.new("RGB", (canvas.width + 2 * pad, canvas.height + 2 * pad), (255, 255, 255))
    out.paste(canvas, (pad, pad))
    draw = ImageDraw.Draw(out)

    def rect(box, color, width):
        x0, y0, x1, y1 = [float(v) * scale + pad for v in box]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=width)

    m = len(gt_boxes)
    for box in anchors[labels == -1]:
        rect(box, IGNORED_COLOR, 1)
    for g in range(m):
        color = PALETTE[g % len(PALETTE)]
        for box in anchors[labels == g]:
            rect(box, color, 1)
    for g in range(m):
        color = PALETTE[g % len(PALETTE)]
        rect(gt_boxes[g], color, 3)
        x0, y0 = float(gt_boxes[g][0]) * scale + pad, float(gt_boxes[g][1]) * scale + pad
        draw.text((x0 + 2, max(y0 - 12, 0)), gt_text[g], fill=color)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0))
    return out


def legend_lines(gt_text: Sequence[str], labels: torch.Tensor, m: int) -> List[str]:
    """One line per ground truth: its caption and number of positive anchors."""
    counts = torch.bincount(labels[(labels >= 0) & (labels < m)], minlength=m).tolist()
    return [f"{t}: {c} positive anchor(s)" for t, c in zip(gt_text, counts)]


# the PNG text entry that marks a file as this command's drawing (it may be written again)
PNG_MARK = ("Software", "retina-focal visualize")


def check_output_png(path: str) -> None:
    """Refuse (:class:`DataError`, before anything is read) an ``--output`` that is not a
    ``.png`` path, is a folder, is in a folder that cannot be made (a file in the way:
    :func:`~retina_focal.utils.file_io.check_output_file`), or is an existing file this
    command did not write (an image of a dataset, say)."""
    if os.path.isdir(path):
        raise DataError(f"--output {path!r} is a folder; give the PNG file to write, e.g. "
                        f"{os.path.join(path, 'assignment.png')}")
    if not path.lower().endswith(".png"):
        raise DataError(f"--output {path!r} is not a .png file name; the drawing is a PNG")
    check_output_file(path, "--output")
    if os.path.lexists(path):
        try:
            with Image.open(path) as im:
                ours = im.format == "PNG" and im.info.get(PNG_MARK[0]) == PNG_MARK[1]
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise DataError(f"--output {path!r} exists and is not a drawing of this command; "
                            "give a new file name (it was left as it was)")


def save_png(drawing: Image.Image, path: str) -> None:
    """Write ``drawing`` to ``path`` (its folder created if needed; a file in the way is a
    :class:`DataError` naming ``--output``) as a PNG carrying :data:`PNG_MARK`, so that
    :func:`check_output_png` lets it be written again."""
    make_output_dir(os.path.dirname(os.path.abspath(path)), "--output")
    info = PngImagePlugin.PngInfo()
    info.add_text(*PNG_MARK)
    drawing.save(path, format="PNG", pnginfo=info)
