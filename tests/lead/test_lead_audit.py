"""``labelwheel audit``: suspected label errors on real data (sklearn digits, MNIST PNGs) with
labels flipped on purpose, the labels CSV, the CLI offline, and the view in a real Label Studio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from lead_helpers import choice_result
from PIL import Image

from labelwheel.cli import cli
from labelwheel.lead.audit import VIEW_TITLE, audit_pool
from labelwheel.lead.audit_io import AUDIT_FIELDS, RANK_FIELD, read_labels_csv, with_labels
from labelwheel.pool import Pool


def _flip(
    y: np.ndarray, share: float, seed: int, n_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = round(share * len(y))
    flipped = rng.choice(len(y), k, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, k)) % n_classes
    return noisy, flipped


@pytest.fixture(scope="module")
def flipped_digits(digits) -> tuple[Any, np.ndarray, np.ndarray]:
    """All 1,797 digits (raw pixels), 5% of the labels flipped to another class; the audit."""
    x, y = digits
    noisy, flipped = _flip(y, 0.05, seed=3)
    pool = Pool.from_arrays(x, [str(v) for v in noisy])
    return audit_pool(pool, seed=0), y, flipped


def test_flipped_labels_are_found(flipped_digits) -> None:
    audit, truth, flipped = flipped_digits
    k = flipped.size
    suspects = {s.task_id - 1 for s in audit.suspects}
    recall = len(suspects & set(flipped.tolist())) / k
    top_k = set(audit.ranking[:k].tolist())
    precision_at_k = len(top_k & set(flipped.tolist())) / k
    assert recall >= 0.8, recall
    assert precision_at_k >= 0.75, precision_at_k  # random flagging: 0.05
    # The suggestion is the true label for most flips the audit finds.
    found = [s for s in audit.suspects if s.task_id - 1 in set(flipped.tolist())]
    right = sum(s.suggested == str(truth[s.task_id - 1]) for s in found)
    assert right >= 0.8 * len(found)
    assert audit.labeled == audit.audited == len(truth) and audit.folds == 5
    assert 0.8 < audit.oof_accuracy < 0.95


def test_suspects_are_ranked_by_suspicion_with_reasons(flipped_digits) -> None:
    audit, _, _ = flipped_digits
    ranks = [s.rank for s in audit.suspects]
    assert ranks == list(range(1, len(ranks) + 1))
    scores = [s.suspicion for s in audit.suspects]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in scores)
    assert all(s.reasons for s in audit.suspects)
    first = audit.suspects[0]
    assert first.suggested is not None and first.suggested != first.given
    assert "confident learning" in first.reasons[0]
    assert first.given_probability is not None and first.given_probability < 0.2
    # ranking covers every label once, suspects first in the same order
    assert sorted(audit.ranking.tolist()) == list(range(audit.labeled))
    assert [s.task_id - 1 for s in audit.suspects][:20] == audit.ranking[:20].tolist()
    data = json.loads(json.dumps(audit.to_dict()))
    assert data["view_title"] == VIEW_TITLE and "ranking" not in data
    assert data["suspects"][0]["task_id"] == first.task_id


def test_near_duplicates_with_different_labels(digits) -> None:
    x, y = digits
    x, y = x[:400], y[:400]
    # the same image twice (as a re-upload would be), labelled differently the second time
    x2 = np.vstack([x, x[:1]])
    labels = [str(v) for v in y] + [str((y[0] + 1) % 10)]
    audit = audit_pool(Pool.from_arrays(x2, labels))
    assert [1, 401] in audit.duplicate_conflicts
    by_id = {s.task_id: s for s in audit.suspects}
    assert 1 in by_id and 401 in by_id
    assert any(r.startswith("near-duplicate of 401") for r in by_id[1].reasons)
    assert any(r.startswith("near-duplicate of 1 labelled") for r in by_id[401].reasons)
    # the wrong copy is the more suspicious one, and the model suggests the true label
    assert by_id[401].suspicion > by_id[1].suspicion
    assert by_id[401].suggested == str(y[0])


def test_weak_cluster_where_labels_are_systematically_wrong(digits) -> None:
    x, y = digits
    sub = np.random.default_rng(0).choice(len(y), 600, replace=False)
    x, y = x[sub], y[sub].copy()
    eights = np.flatnonzero(y == 8)
    y[eights[::2]] = 3  # an annotator who calls every other 8 a 3
    audit = audit_pool(Pool.from_arrays(x, [str(v) for v in y]))
    assert audit.weak_clusters, "the 8s' cluster should stand out"
    weak = audit.weak_clusters[0]
    assert weak.accuracy <= weak.overall - 0.15 and weak.labels >= 5
    flagged = [s for s in audit.suspects if any("weak cluster" in r for r in s.reasons)]
    assert flagged and all(
        s.cluster == weak.cluster or len(audit.weak_clusters) > 1 for s in flagged
    )
    hits = {s.task_id - 1 for s in audit.suspects} & set(eights[::2].tolist())
    assert len(hits) >= 0.5 * eights[::2].size


def test_outliers_and_unlabelled_items(digits) -> None:
    x, y = digits
    x, y = x[:300].copy(), y[:300]
    x[5] = 16.0 - x[5]  # an inverted image: far from every other digit
    labels: list[str | None] = [str(v) for v in y]
    for i in range(200, 300):
        labels[i] = None
    audit = audit_pool(Pool.from_arrays(x, labels))
    assert audit.labeled == 200 and audit.pool_size == 300
    assert np.isnan(audit.suspicion[200:]).all()
    assert all(s.task_id <= 200 for s in audit.suspects)
    by_id = {s.task_id: s for s in audit.suspects}
    assert 6 in by_id and any(r.startswith("outlier") for r in by_id[6].reasons)


def test_too_few_labels_and_multi_label(digits) -> None:
    x, y = digits
    labels: list[str | None] = [None] * 50
    for i in range(9):
        labels[i] = str(y[i])
    with pytest.raises(ValueError, match="too few labels to audit: need at least 10"):
        audit_pool(Pool.from_arrays(x[:50], labels))
    one_class = ["0"] * 20 + [None] * 30
    with pytest.raises(ValueError, match="of 1 class"):
        audit_pool(Pool.from_arrays(x[:50], one_class))
    pool = Pool.from_arrays(x[:50], [str(v) for v in y[:50]])
    pool.multi_label = True
    with pytest.raises(ValueError, match="multi-label"):
        audit_pool(pool)


def test_a_class_with_one_label_is_noted(digits) -> None:
    x, y = digits
    x, y = x[:200], y[:200]
    labels = [str(v) for v in y]
    labels[0] = "ten"  # the only 'ten'
    audit = audit_pool(Pool.from_arrays(x, labels))
    assert audit.audited == 199 and any("ten" in n for n in audit.notes)


# ----------------------------------------------------------------------------- labels CSV


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


def test_read_labels_csv(tmp_path) -> None:
    root = tmp_path / "imgs"
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    _png(root / "sub" / "c.png")
    _png(root / "other" / "c.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("filename,label\na.png,cat\nb.png,dog\nother/c.png,cat\n\n")
    assert read_labels_csv(csv_path, root) == {
        "a.png": "cat",
        "sub/b.png": "dog",
        "other/c.png": "cat",
    }

    def error(text: str) -> str:
        csv_path.write_text(text)
        with pytest.raises(ValueError) as exc:
            read_labels_csv(csv_path, root)
        return str(exc.value)

    assert "2 name(s)" in error("a.png,cat\nnope.png,dog\nmissing.jpg,dog\n")
    assert "nope.png, missing.jpg" in error("a.png,cat\nnope.png,dog\nmissing.jpg,dog\n")
    assert "ambiguous" in error("c.png,cat\n")
    assert "line 2: expected 'file name,label'" in error("a.png,cat\nb.png\n")
    assert "listed twice with different labels" in error("a.png,cat\na.png,dog\n")
    assert "has no labels" in error("filename,label\n")
    with pytest.raises(ValueError, match="does not exist"):
        read_labels_csv(tmp_path / "none.csv", root)
    with pytest.raises(ValueError, match="is not a directory"):
        csv_path.write_text("a.png,cat\n")
        read_labels_csv(csv_path, tmp_path / "no-dir")


def test_with_labels_replaces_labels(digits) -> None:
    x, _ = digits
    pool = Pool.from_arrays(x[:3], [None, None, None], refs=["a.png", "b.png", "c.png"])
    relabelled = with_labels(pool, {"a.png": "x", "c.png": "y"})
    assert relabelled.labels == ["x", None, "y"] and relabelled.classes == ("x", "y")
    assert relabelled.label_sets == [("x",), (), ("y",)]


# ------------------------------------------------------------------------------- CLI offline

WRONG = (3, 10, 25, 41)  # indices of images given a wrong label
OTHER = {"0": "1", "1": "7", "7": "0"}  # the wrong label given instead of the true one


@pytest.fixture(scope="module")
def offline_set(tmp_path_factory, mnist_images) -> tuple[Path, Path, dict[str, str]]:
    """60 MNIST digits (20 each of 0, 1, 7) as flat PNGs and a CSV with 4 wrong labels."""
    imgs, y = mnist_images
    root = tmp_path_factory.mktemp("audit-images")
    rows, truth, count = [], {}, {0: 0, 1: 0, 7: 0}
    for img, lab in zip(imgs, y, strict=True):
        lab = int(lab)
        if lab not in count or count[lab] == 20:
            continue
        count[lab] += 1
        name = f"img{len(rows):03d}.png"
        Image.fromarray(img).resize((56, 56)).save(root / name)
        given = OTHER[str(lab)] if len(rows) in WRONG else str(lab)
        rows.append(f"{name},{given}")
        truth[name] = str(lab)
        if len(rows) == 60:
            break
    csv_path = tmp_path_factory.mktemp("audit-csv") / "labels.csv"
    csv_path.write_text("file name,label\n" + "\n".join(rows) + "\n")
    return root, csv_path, truth


def _run(args: list[str], cache: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        [*args, "--image-size", "64", "--cache-dir", str(cache), "--quiet"],
        env=env,
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit-cache")


def test_cli_offline_json(offline_set, cache) -> None:
    import torch

    torch.set_num_threads(1)
    root, csv_path, truth = offline_set
    code, out, err = _run(
        ["audit", "--images", str(root), "--labels", str(csv_path), "--json"], cache
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["labeled"] == 60 and data["view"] is None
    wrong = {f"img{i:03d}.png" for i in WRONG}
    flagged = {s["ref"] for s in data["suspects"]}
    assert len(flagged & wrong) >= 3, data["suspects"]
    top = [s["ref"] for s in data["suspects"][: len(WRONG)]]
    assert len(set(top) & wrong) >= 3
    for s in data["suspects"]:
        if s["ref"] in wrong and s["suggested"] is not None:
            assert s["suggested"] == truth[s["ref"]]
    scores = [s["suspicion"] for s in data["suspects"]]
    assert scores == sorted(scores, reverse=True)

    code, out, err = _run(
        ["audit", "--images", str(root), "--labels", str(csv_path), "--limit", "3"], cache
    )
    assert code == 0, err
    assert "suggested" in out and "why" in out and "3 suspect(s)" in out


def test_cli_offline_errors(offline_set, cache, tmp_path) -> None:
    root, csv_path, _ = offline_set
    code, _, err = _run(
        ["audit", "--images", str(root), "--labels", str(tmp_path / "x.csv")], cache
    )
    assert code == 1 and "x.csv does not exist" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("img000.png,0\nghost.png,1\n")
    code, _, err = _run(["audit", "--images", str(root), "--labels", str(bad)], cache)
    assert code == 1 and "1 name(s)" in err and "ghost.png" in err and "Traceback" not in err
    few = tmp_path / "few.csv"
    few.write_text("img000.png,0\nimg001.png,0\nimg002.png,1\n")
    code, _, err = _run(["audit", "--images", str(root), "--labels", str(few)], cache)
    assert code == 1 and "too few labels to audit" in err
    code, _, err = _run(["audit", "--project", "1", "--labels", str(csv_path)], cache)
    assert code == 1 and "--labels goes with --images" in err
    code, _, err = _run(
        ["audit", "--images", str(tmp_path / "none"), "--labels", str(csv_path)], cache
    )
    assert code == 1 and "is not a directory" in err


# ---------------------------------------------------------------------- real Label Studio


@pytest.fixture(scope="module")
def ls_project(label_studio, tmp_path_factory, mnist_images) -> dict[str, Any]:
    """45 MNIST uploads (15 each of 0, 1, 7), every one annotated; 3 annotations are wrong and
    one task has a second annotator who disagrees."""
    from labelwheel.label_config import image_classification_config
    from labelwheel.ls_api import LabelStudioClient

    client = LabelStudioClient(label_studio.url, label_studio.token)
    imgs, y = mnist_images
    root = tmp_path_factory.mktemp("audit-upload")
    paths, truth, count = [], [], {0: 0, 1: 0, 7: 0}
    for img, lab in zip(imgs, y, strict=True):
        lab = int(lab)
        if lab not in count or count[lab] == 15:
            continue
        count[lab] += 1
        path = root / f"a{len(paths):03d}.png"
        Image.fromarray(img).resize((56, 56)).save(path)
        paths.append(path)
        truth.append(str(lab))
        if len(paths) == 45:
            break
    project = client.create_project("audit e2e", image_classification_config(["0", "1", "7"]))
    ids = client.import_files(project["id"], paths)
    wrong = {ids[i]: OTHER[truth[i]] for i in (4, 17, 30)}
    for tid, lab in zip(ids, truth, strict=True):
        client.create_annotation(tid, choice_result(wrong.get(tid, lab)))
    disputed = ids[8]
    client.create_annotation(disputed, choice_result("1" if truth[8] != "1" else "0"))
    return {"id": project["id"], "ids": ids, "wrong": wrong, "disputed": disputed}


def _views(client: Any, pid: int) -> list[dict[str, Any]]:
    return [v for v in client.list_views(pid) if v["data"]["title"] == VIEW_TITLE]


@pytest.mark.e2e
@pytest.mark.slow
def test_audit_writes_one_view_ordered_by_suspicion(label_studio, ls_project, tmp_path) -> None:
    import torch

    from labelwheel.ls_api import LabelStudioClient

    torch.set_num_threads(1)
    client = LabelStudioClient(label_studio.url, label_studio.token)
    pid = ls_project["id"]
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": "",
    }
    cache = tmp_path / "cache"
    code, out, err = _run(["audit", "--project", str(pid), "--json"], cache, env)
    assert code == 0, err
    data = json.loads(out)
    suspects = [s["task_id"] for s in data["suspects"]]
    assert len(set(suspects) & set(ls_project["wrong"])) >= 2, data["suspects"]
    disputed = next(s for s in data["suspects"] if s["task_id"] == ls_project["disputed"])
    assert any(r.startswith("annotators disagree") for r in disputed["reasons"])
    views = _views(client, pid)
    assert len(views) == 1 and data["view"]["id"] == views[0]["id"]
    in_view = list(client.iter_tasks(pid, view_id=views[0]["id"]))
    assert [t["id"] for t in in_view] == suspects
    marks = [t["data"]["labelwheel_suspicion"] for t in in_view]
    assert marks == sorted(marks, reverse=True)
    assert [t["data"][RANK_FIELD] for t in in_view] == list(range(1, len(suspects) + 1))
    first = in_view[0]["data"]
    assert first["labelwheel_why"] == "; ".join(data["suspects"][0]["reasons"])
    assert first["labelwheel_suggested"] == (data["suspects"][0]["suggested"] or "")

    # A stale mark from an earlier audit and a second view of the same title: both go.
    clean = next(t for t in client.iter_tasks(pid) if t["id"] not in set(suspects))
    stale = dict(clean["data"], **{f: 1 for f in AUDIT_FIELDS})
    client.request("PATCH", f"/api/tasks/{clean['id']}", json={"data": stale})
    client.request("POST", "/api/dm/views", json={"project": pid, "data": {"title": VIEW_TITLE}})
    assert len(_views(client, pid)) == 2
    code, out, err = _run(["audit", "--project", str(pid), "--json", "--limit", "2"], cache, env)
    assert code == 0, err
    again = [s["task_id"] for s in json.loads(out)["suspects"]]
    assert again == suspects[:2]
    views = _views(client, pid)
    assert [v["id"] for v in views] == [data["view"]["id"]]
    assert [t["id"] for t in client.iter_tasks(pid, view_id=views[0]["id"])] == again
    marked = {t["id"] for t in client.iter_tasks(pid) if any(f in t["data"] for f in AUDIT_FIELDS)}
    assert marked == set(again)


# ------------------------------------------------------------------- held-out leakage


def test_labelled_near_duplicates_of_held_out_items(digits) -> None:
    x, y = digits
    x, y = x[:400], y[:400]
    held = np.zeros(400 + 6, dtype=bool)
    held[300:400] = True  # the test split: 100 digits, the first 50 of them unlabelled
    labels: list[str | None] = [str(v) for v in y]
    for i in range(300, 350):
        labels[i] = None
    # six training images that are copies of test images (three exact, three with faint noise),
    # each labelled correctly: leakage, not a wrong label
    sources = [300, 310, 320, 360, 370, 380]
    noise = np.random.default_rng(1).normal(0.0, 0.05, (3, x.shape[1])).astype(np.float32)
    copies = np.vstack([x[sources[:3]], x[sources[3:]] + noise])
    pool = Pool.from_arrays(np.vstack([x, copies]), labels + [str(y[s]) for s in sources])
    audit = audit_pool(pool, holdout=held)
    assert audit.holdout == 100
    leaks = {leak.task_id: leak.held_out for leak in audit.holdout_leaks}
    copy_ids = list(range(401, 407))
    for cid, src in zip(copy_ids, sources, strict=True):
        assert src + 1 in leaks[cid], (cid, leaks.get(cid))
    # the sklearn digits hold few natural near-duplicates: the injected ones dominate
    assert len(set(leaks) - set(copy_ids)) <= 3, leaks
    assert not set(leaks) & set(range(301, 401)), "held-out items are never leaks themselves"
    by_id = {s.task_id: s for s in audit.suspects}
    for cid, src in zip(copy_ids, sources, strict=True):
        reason = f"near-duplicate of held-out {src + 1}"
        assert any(r.startswith(reason) for r in by_id[cid].reasons), by_id[cid].reasons
    data = json.loads(json.dumps(audit.to_dict()))
    assert data["holdout"] == 100 and {d["task_id"] for d in data["holdout_leaks"]} >= set(copy_ids)

    # without the mask the same copies are not suspects (their labels are right)
    plain = audit_pool(pool)
    assert plain.holdout == 0 and plain.holdout_leaks == []
    plain_ids = {s.task_id for s in plain.suspects}
    assert not any(
        r.startswith("near-duplicate of held-out") for s in plain.suspects for r in s.reasons
    )
    assert len(set(copy_ids) & plain_ids) <= 1
    with pytest.raises(ValueError, match="holdout mask has 3 entries for 406 items"):
        audit_pool(pool, holdout=[True, False, True])


def test_holdout_mask_from_task_fields_and_splits(digits) -> None:
    from labelwheel.lead.audit_io import holdout_mask, is_held_out, parse_holdout_values

    x, _ = digits
    pool = Pool.from_arrays(x[:4], ["a", "b", None, "a"], ids=[11, 12, 13, 14])
    pool.tasks = [
        {"id": 11, "data": {"image": "x", "split": "Test "}},
        {"id": 12, "data": {"image": "x", "split": "train"}},
        {"id": 13, "data": {"image": "x", "split": "validation"}},
        {"id": 14, "data": {"image": "x", "labelwheel_split": "holdout"}},
    ]
    assert holdout_mask(pool).tolist() == [True, False, True, False]
    assert holdout_mask(pool, values=("test",)).tolist() == [True, False, False, False]
    assert holdout_mask(pool, field="labelwheel_split").tolist() == [False, False, False, True]
    assert is_held_out({"data": {"split": "VAL"}}) and not is_held_out({"data": {}})
    assert parse_holdout_values(" Test, holdout,,test") == ("test", "holdout")
    with pytest.raises(ValueError, match="at least one split"):
        parse_holdout_values(" , ")
    pool.refs = ["a.png", "b.png", "c.png", "d.png"]
    splits = {"a.png": "train", "c.png": "Holdout", "d.png": "test"}  # offline: by file name
    assert holdout_mask(pool, splits=splits).tolist() == [False, False, True, True]


def test_read_label_table_with_a_split_column(tmp_path) -> None:
    from labelwheel.lead.audit_io import read_label_table

    root = tmp_path / "imgs"
    for name in ("a.png", "b.png", "c.png"):
        _png(root / name)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label,split\na.png,cat,train\nb.png,dog,test\nc.png,,test\n")
    labels, splits = read_label_table(csv_path, root)
    assert labels == {"a.png": "cat", "b.png": "dog"}
    assert splits == {"a.png": "train", "b.png": "test", "c.png": "test"}
    csv_path.write_text("a.png,cat\nb.png,dog,test\n")  # the split column is optional per row
    assert read_label_table(csv_path, root) == ({"a.png": "cat", "b.png": "dog"}, {"b.png": "test"})
    csv_path.write_text("a.png,cat\nc.png,\n")
    with pytest.raises(ValueError, match="line 2: expected 'file name,label'"):
        read_label_table(csv_path, root)
    csv_path.write_text("a.png,cat,test\na.png,cat,train\n")
    with pytest.raises(ValueError, match="listed twice with different splits"):
        read_label_table(csv_path, root)


@pytest.fixture(scope="module")
def split_set(tmp_path_factory, mnist_images) -> tuple[Path, Path, dict[str, str]]:
    """45 MNIST digits (0, 1, 7) as PNGs, the last 15 the test split (5 unlabelled), plus two
    training copies of test images (one the same file, one re-encoded as RGB), labelled right."""
    imgs, y = mnist_images
    root = tmp_path_factory.mktemp("split-images")
    rows: list[str] = []
    count = {0: 0, 1: 0, 7: 0}
    kept: list[tuple[np.ndarray, str]] = []
    for img, lab in zip(imgs, y, strict=True):
        if int(lab) in count and count[int(lab)] < 15:
            count[int(lab)] += 1
            kept.append((img, str(int(lab))))
        if len(kept) == 45:
            break
    for i, (img, lab) in enumerate(kept):
        name = f"s{i:03d}.png"
        Image.fromarray(img).resize((56, 56)).save(root / name)
        test = i >= 30
        rows.append(f"{name},{'' if i >= 40 else lab},{'test' if test else 'train'}")
    (root / "copy-of-s031.png").write_bytes((root / "s031.png").read_bytes())
    Image.open(root / "s042.png").convert("RGB").save(root / "copy-of-s042.png")  # re-encoded
    rows += [f"copy-of-s031.png,{kept[31][1]},train", f"copy-of-s042.png,{kept[42][1]}"]
    csv_path = tmp_path_factory.mktemp("split-csv") / "labels.csv"
    csv_path.write_text("file,label,split\n" + "\n".join(rows) + "\n")
    return root, csv_path, {"copy-of-s031.png": "s031.png", "copy-of-s042.png": "s042.png"}


def test_cli_offline_held_out_leakage(split_set, cache) -> None:
    root, csv_path, copies = split_set
    code, out, err = _run(
        ["audit", "--images", str(root), "--labels", str(csv_path), "--json"], cache
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["holdout"] == 15 and data["labeled"] == 42
    leaks = {leak["ref"]: leak for leak in data["holdout_leaks"]}
    assert set(copies) <= set(leaks), data["holdout_leaks"]
    by_ref = {s["ref"]: s for s in data["suspects"]}
    for copy, source in copies.items():
        assert f"near-duplicate of held-out {source}" in by_ref[copy]["reasons"]
    assert not {s for s in leaks if s.startswith("s0") and int(s[1:4]) >= 30}  # test ≠ leak

    code, out, err = _run(["audit", "--images", str(root), "--labels", str(csv_path)], cache)
    assert code == 0, err
    assert "15 held-out item(s)" in out and "near-duplicate of held-out s031.png" in out
    code, out, err = _run(
        ["audit", "--images", str(root), "--labels", str(csv_path), "--holdout-values", "dev"],
        cache,
    )
    assert code == 0, err
    assert "no item is held out" in out and "held-out s031" not in out
    code, _, err = _run(
        ["audit", "--images", str(root), "--labels", str(csv_path), "--holdout-field", "x"],
        cache,
    )
    assert code == 1 and "--holdout-field is for --project" in err


@pytest.mark.e2e
@pytest.mark.slow
def test_audit_flags_training_copies_of_held_out_tasks_in_label_studio(
    label_studio, mnist_images, tmp_path
) -> None:
    """24 annotated MNIST uploads, 4 tasks marked split=test (2 unlabelled), and a re-upload of
    a test image annotated as training data: the audit names the held-out task it copies."""
    import torch

    from labelwheel.label_config import image_classification_config
    from labelwheel.ls_api import LabelStudioClient

    torch.set_num_threads(1)
    client = LabelStudioClient(label_studio.url, label_studio.token)
    imgs, y = mnist_images
    paths, truth, count = [], [], {0: 0, 1: 0, 7: 0}
    for img, lab in zip(imgs, y, strict=True):
        if int(lab) in count and count[int(lab)] < 10:
            count[int(lab)] += 1
            path = tmp_path / f"h{len(paths):03d}.png"
            Image.fromarray(img).resize((56, 56)).save(path)
            paths.append(path)
            truth.append(str(int(lab)))
        if len(paths) == 30:
            break
    copy = tmp_path / "reupload.png"
    copy.write_bytes(paths[27].read_bytes())
    project = client.create_project("audit holdout", image_classification_config(["0", "1", "7"]))
    pid = project["id"]
    ids = client.import_files(pid, [*paths, copy])
    held = ids[26:30]
    for i, tid in enumerate(ids[:28]):
        client.create_annotation(tid, choice_result(truth[i]))
    client.create_annotation(ids[30], choice_result(truth[27]))  # the copy, labelled right
    for tid in held:
        data = {**client.get_task(tid)["data"], "split": "Test"}
        client.request("PATCH", f"/api/tasks/{tid}", json={"data": data})
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": "",
    }
    cache = tmp_path / "cache"
    code, out, err = _run(["audit", "--project", str(pid), "--json", "--dry-run"], cache, env)
    assert code == 0, err
    data = json.loads(out)
    # the unlabelled held-out tasks were embedded too (the audit loads labels + held-out)
    assert data["holdout"] == 4 and data["pool_size"] == 31 and data["labeled"] == 29
    assert [(leak["task_id"], leak["held_out"]) for leak in data["holdout_leaks"]] == [
        (ids[30], [ids[27]])
    ]
    copy_suspect = next(s for s in data["suspects"] if s["task_id"] == ids[30])
    assert f"near-duplicate of held-out task {ids[27]}" in copy_suspect["reasons"]
    assert _views(client, pid) == []  # --dry-run writes nothing

    # another convention: nothing carries the field, so the check does not run (and says so)
    code, out, err = _run(
        ["audit", "--project", str(pid), "--dry-run", "--holdout-field", "labelwheel_split"],
        cache,
        env,
    )
    assert code == 0, err
    assert "no item is held out (data field 'labelwheel_split'" in out
    assert "near-duplicate of held-out" not in out
