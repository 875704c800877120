"""GLUE TSV loaders on generated fixtures, and the GLUE metrics against direct formulas."""

import math

import numpy as np
import pytest
from scipy import stats

from tiltedsam.data.glue import f1_binary, glue_metrics, load_glue_split, matthews


def write(root, task, split, text):
    (root / task).mkdir(parents=True, exist_ok=True)
    (root / task / f"{split}.tsv").write_text(text)


def test_pair_tasks_and_label_order(tmp_path):
    write(
        tmp_path,
        "RTE",
        "train",
        "index\tsentence1\tsentence2\tlabel\n0\ta b\tc\tnot_entailment\n1\td\te\tentailment\n",
    )
    write(tmp_path, "RTE", "test", "index\tsentence1\tsentence2\n0\tx\ty\n")
    rte = load_glue_split(tmp_path, "RTE", "train")
    assert rte.text_a == ["a b", "d"] and rte.text_b == ["c", "e"] and rte.labels == [1, 0]
    assert load_glue_split(tmp_path, "RTE", "test").labels is None
    write(
        tmp_path,
        "MRPC",
        "dev",
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tHe said "x".\tShe said\n',
    )
    mrpc = load_glue_split(tmp_path, "MRPC", "dev")
    assert mrpc.labels == [1] and mrpc.text_a == ['He said "x".']  # quotes kept verbatim
    write(tmp_path, "STS-B", "dev", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
          "0\tg\tf\ty\t1\tn\tn\tA man.\tA guy.\t4.25\n")  # fmt: skip
    assert load_glue_split(tmp_path, "STS-B", "dev").labels == [4.25]
    write(tmp_path, "SST-2", "train", "sentence\tlabel\nfine\t1\nbad\t0\n")
    sst = load_glue_split(tmp_path, "SST-2", "train")
    assert sst.text_b is None and sst.labels == [1, 0]
    write(tmp_path, "CoLA", "train", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode the.\n")
    cola = load_glue_split(tmp_path, "CoLA", "train")
    assert cola.text_a == ["The sailors rode.", "Rode the."] and cola.labels == [1, 0]
    write(
        tmp_path,
        "QQP",
        "dev",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tq?\tr?\t0\n",
    )
    assert load_glue_split(tmp_path, "QQP", "dev").labels == [0]
    write(tmp_path, "QNLI", "dev", "index\tquestion\tsentence\tlabel\n0\tq\ts\tentailment\n")
    assert load_glue_split(tmp_path, "QNLI", "dev").labels == [0]


def test_malformed_rows_and_files_are_named(tmp_path):
    write(tmp_path, "RTE", "train", "index\tsentence1\tsentence2\tlabel\n0\tonly one field\n")
    with pytest.raises(ValueError, match=r"RTE/train.tsv, line 2: expected at least 4"):
        load_glue_split(tmp_path, "RTE", "train")
    write(tmp_path, "RTE", "dev", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match="label 'maybe' is not one of"):
        load_glue_split(tmp_path, "RTE", "dev")
    with pytest.raises(FileNotFoundError, match="GLUE file not found"):
        load_glue_split(tmp_path, "MRPC", "train")
    with pytest.raises(ValueError, match="task must be one of"):
        load_glue_split(tmp_path, "WNLI", "train")


def test_metrics_against_direct_formulas():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, gold, 1 - gold)
    tp = ((pred == 1) & (gold == 1)).sum()
    fp = ((pred == 1) & (gold == 0)).sum()
    fn = ((pred == 0) & (gold == 1)).sum()
    tn = ((pred == 0) & (gold == 0)).sum()
    assert f1_binary(pred, gold) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews(pred, gold) == pytest.approx(mcc)
    assert glue_metrics("MRPC", pred, gold)["accuracy"] == pytest.approx((pred == gold).mean())
    scores, truth = rng.random(50), rng.random(50)
    m = glue_metrics("STS-B", scores, truth)
    assert m["pearson"] == pytest.approx(np.corrcoef(scores, truth)[0, 1])
    assert m["spearman"] == pytest.approx(
        stats.pearsonr(stats.rankdata(scores), stats.rankdata(truth))[0]
    )
    assert matthews([1, 1], [1, 1]) == 0.0 and f1_binary([0, 0], [1, 0]) == 0.0


@pytest.mark.skipif(not __import__("pathlib").Path("../shared/data/glue/RTE").exists(),
                    reason="shared GLUE data not present")  # fmt: skip
def test_shared_glue_files_load_with_documented_sizes():
    sizes = {("RTE", "train"): 2490, ("RTE", "dev"): 277, ("MRPC", "train"): 3668,
             ("MRPC", "dev"): 408, ("STS-B", "dev"): 1500, ("SST-2", "dev"): 872}  # fmt: skip
    for (task, split), n in sizes.items():
        assert len(load_glue_split("../shared/data/glue", task, split)) == n
