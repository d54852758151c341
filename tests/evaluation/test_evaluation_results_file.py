"""A results file is checked detection by detection before pycocotools sees it
(retina_focal.evaluation.results_file): every field of the wrong type or value is an error naming
the detection, the field, the value and its type, and counting the other bad detections; a
malformed ground-truth box is named too."""
import json

import pytest
from helpers import make_gt, noisy_detections, pycocotools_stats

from retina_focal.evaluation import evaluate_results_file


def write(tmp_path, dets, name="dets.json"):
    path = tmp_path / name
    path.write_text(json.dumps(dets))
    return str(path)


BAD_FIELDS = [
    ("score", "0.9", "score '0.9' (str) is not a finite number"),
    ("score", None, "score None (NoneType) is not a finite number"),
    ("score", float("nan"), "score nan (float) is not a finite number"),
    ("score", float("inf"), "score inf (float) is not a finite number"),
    ("score", True, "score True (bool) is not a finite number"),
    ("image_id", "10", "image_id '10' (str) is not an integer id"),
    ("image_id", 10.0, "image_id 10.0 (float) is not an integer id"),
    ("category_id", True, "category_id True (bool) is not an integer id"),
    ("bbox", [1, 2, 3], "bbox [1, 2, 3] (list) has 3 values, not 4"),
    ("bbox", [1, 2, "3", 4], "bbox [1, 2, '3', 4] (list) has the value '3' of type str"),
    ("bbox", [1, 2, float("nan"), 4], "bbox [1, 2, nan, 4] (list) has the non-finite value nan"),
    ("bbox", None, "bbox None (NoneType) is a NoneType, not a list of 4 numbers"),
    ("bbox", [1, 2, -3, 4], "bbox [1, 2, -3, 4] (list) has a negative width or height"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS, ids=lambda v: repr(v)[:16])
def test_a_bad_field_names_detection_field_value_type_and_counts_the_rest(
        tmp_path, field, value, message):
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    for i in (3, 5, 8):
        dets[i] = dict(dets[i], **{field: value})
    path = write(tmp_path, dets)
    with pytest.raises(ValueError) as err:
        evaluate_results_file(path, gt_path)
    text = str(err.value)
    assert text.startswith(f"{path}: detection #3: {message}"), text
    assert text.endswith(f"; 2 more of the {len(dets)} detections are malformed"), text


def test_one_nan_score_would_change_ap_and_is_refused(tmp_path):
    """pycocotools sorts a NaN score last, without an error: a confident false positive with
    a NaN score stops counting and AP goes up."""
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    top_false_positive = max(dets[len(gt["annotations"]):], key=lambda d: d["score"])
    nan = [dict(d, score=float("nan")) if d is top_false_positive else d for d in dets]
    assert pycocotools_stats(gt_path, nan)[0] > pycocotools_stats(gt_path, dets)[0]
    with pytest.raises(ValueError, match=r"detection #\d+: score nan \(float\) is not a finite "
                                         r"number$"):
        evaluate_results_file(write(tmp_path, nan), gt_path)


def test_good_results_still_match_pycocotools(tmp_path):
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    dets[0] = dict(dets[0], bbox=[1, 2, 0, 0])  # zero width and height: allowed
    report = evaluate_results_file(write(tmp_path, dets), gt_path)
    assert report["metrics"]["AP"] == pytest.approx(100 * pycocotools_stats(gt_path, dets)[0])


@pytest.mark.parametrize("field,value,problem", [
    ("bbox", [1, 2, 3], r"bbox \[1, 2, 3\] has 3 values, not 4"),
    # pycocotools would count it under no category of the evaluation
    ("category_id", 99, r"category_id 99 is not defined in the file's 'categories'"),
], ids=["malformed-box", "undefined-category"])
def test_a_bad_ground_truth_annotation_is_named(field, value, problem, tmp_path):
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    gt["annotations"][4][field] = value
    with open(gt_path, "w") as f:
        json.dump(gt, f)
    with pytest.raises(ValueError, match=r"Dataset 'gt' \(.*gt\.json\), image '11\.png' "
                                         r"\(image_id 11\), annotation id 5: " + problem):
        evaluate_results_file(write(tmp_path, dets), gt_path)
