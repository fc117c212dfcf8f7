"""Training with several processes (torch.distributed, gloo on loopback, launched by torchrun through
`mtbert train --nproc 2`) gives the single process's weights, optimiser state and metrics; the run dir is
written once; a checkpoint resumes with another number of processes; a rank that dies stops the others."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtbert.training.checkpoint import checkpoints

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def dist_config(toy_config, tiny_bert_no_dropout, write_config):
    raw = {**toy_config, "backbone": tiny_bert_no_dropout}
    # batch 5 splits 3 + 2 over two ranks (the loss must still be the whole batch's mean), accumulation
    # exercises no_sync, and per-step checkpoints let a run be cut short at any step
    raw["training"] = {**raw["training"], "max_steps": 8, "eval_every": 4, "batch_size": 5,
                       "gradient_accumulation_steps": 2, "checkpoint_every": 1, "keep_checkpoints": 20,
                       "threads": 1, "schedule": "uniform",
                       # Adam divides by sqrt(v): on a weight whose gradient is ~0, float rounding (the two
                       # processes sum in another order) moves it by up to lr a step, so a small lr
                       "lr": 2e-4}
    for task in raw["tasks"].values():
        task["dropout"] = 0.0
    return write_config(raw)


def _train(config: Path, run_dir: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mtbert", "-q", "train", str(config), "--run-dir", str(run_dir), *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    wa = load_file(checkpoints(a)[-1] / "model.safetensors")
    wb = load_file(checkpoints(b)[-1] / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=0), (key, (wa[key] - wb[key]).abs().max())
    # AdamW's state too: a head that sat out a step must not have been stepped (DDP leaves its grad None)
    oa = torch.load(checkpoints(a)[-1] / "optimizer.pt", weights_only=True)["state"]
    ob = torch.load(checkpoints(b)[-1] / "optimizer.pt", weights_only=True)["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        assert oa[i]["step"] == ob[i]["step"], i
        assert torch.allclose(oa[i]["exp_avg"], ob[i]["exp_avg"], atol=1e-5, rtol=0), i
    first = load_file(checkpoints(a)[0] / "model.safetensors")
    assert max((wa[k] - first[k]).abs().max() for k in wa) > 20 * 1e-5  # the weights did move, well past the tolerance
    ma, mb = _metrics(a), _metrics(b)
    assert [m["step"] for m in ma] == [m["step"] for m in mb] == [4, 8]
    for x, y in zip(ma, mb, strict=True):
        assert x["dev"].keys() == y["dev"].keys()
        for task in x["dev"]:
            for metric, value in x["dev"][task].items():
                assert y["dev"][task][metric] == pytest.approx(value, abs=1e-4), (task, metric)
        for task, loss in x["train_loss"].items():
            assert y["train_loss"][task] == pytest.approx(loss, abs=1e-5), task


def test_two_processes_train_the_single_process_model(dist_config, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    _train(dist_config, single)
    out = _train(dist_config, double, nproc=2)
    _assert_same_run(single, double)
    # written once, by rank 0: one line per evaluation, one report, the same files as one process writes
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    assert out.stdout.count("run dir:") == 1
    assert out.stdout.count("step 4: target") == out.stdout.count("step 8: target") == 1
    heads = load_file(double / "model/heads.safetensors")
    assert heads.keys() == load_file(single / "model/heads.safetensors").keys()


@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_with_another_number_of_processes(dist_config, tmp_path, first, then):
    reference, run = tmp_path / "reference", tmp_path / "run"
    _train(dist_config, reference)
    _train(dist_config, run, nproc=first)
    for late in checkpoints(run):  # as if the run had died after step 5
        if int(late.name.split("-")[1]) > 5:
            shutil.rmtree(late)
    _train(dist_config, run, "--resume", str(run), nproc=then)
    _assert_same_run(reference, run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAIL_AT_THIRD_BATCH = """
import os, sys, time
from mtbert.data import schedule
real = schedule.BatchStream.next
calls = {"n": 0}
def dying_next(self):
    calls["n"] += 1
    if calls["n"] == 3:
        if os.environ["FAIL"] == "hang":
            time.sleep(600)
        os._exit(3)
    return real(self)
if os.environ["RANK"] == "1":
    schedule.BatchStream.next = dying_next
from mtbert.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("fail", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_stops_the_others_with_a_clear_error(dist_config, tmp_path, fail):
    """Two ranks started by hand, as torchrun on two machines would: rank 1 dies (or stops answering)
    mid-run; rank 0 must exit with a message, within training.dist_timeout, not hang."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "FAIL": fail,
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", FAIL_AT_THIRD_BATCH, "-q", "train", str(dist_config), "--run-dir",
             str(tmp_path / "run"), "--set", "training.dist_timeout=15"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, err0 = procs[0].communicate(timeout=120)
        assert procs[0].returncode == 2, err0
        assert "another training process stopped or did not answer" in err0
        assert "Traceback" not in err0
        if fail == "die":
            assert procs[1].wait(timeout=30) == 3
        else:
            assert procs[1].poll() is None  # still asleep: rank 0 gave up on it after the timeout
    finally:
        procs[1].kill()


def test_nproc_is_refused_under_torchrun_and_must_be_positive(dist_config, tmp_path):
    from mtbert.cli import main

    assert main(["train", str(dist_config), "--nproc", "0"]) == 2
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "0"}
    done = subprocess.run([sys.executable, "-m", "mtbert", "train", str(dist_config), "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "started by torchrun" in done.stderr


def test_shards_are_disjoint_and_cover_the_batch():
    from mtbert.training.distributed import Dist

    batch = list(range(7))
    parts = [Dist(rank, 3).shard(batch) for rank in range(3)]
    assert sorted(i for part, share in parts for i in part) == batch
    assert all(share == 1.0 for _, share in parts)
    # fewer examples than ranks: the rank left out runs one example that counts for nothing
    assert Dist(2, 3).shard([4, 5]) == ([4], 0.0)



def test_a_bad_data_file_under_nproc_is_one_message_per_process_and_no_traceback(dist_config, toy_data, tmp_path):
    (toy_data / "sent_train.tsv").write_text("sentence\tlabel\ngood\tpos\na row without its label\n")
    cmd = [sys.executable, "-m", "mtbert", "-q", "train", str(dist_config), "--run-dir", str(tmp_path / "run"),
           "--nproc", "2"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("mtbert: error: ") and "sent_train.tsv line 3" in line for line in lines)
    assert not (tmp_path / "run").exists()


def test_only_the_touched_word_embedding_rows_are_averaged():
    """DDP leaves the word embeddings out; train_step averages the rows the step's batches touched (every
    rank knows them: all draw the same batch) and sends nothing for the other ~30,000."""
    from mtbert.training.distributed import Dist, reduce_rows, touched_rows

    rows = touched_rows([[101, 7, 9, 102], [[101, 7, 102], [101, 12, 102]]], pad_id=0)
    assert rows.tolist() == [0, 7, 9, 12, 101, 102]

    class TwoRanks(Dist):  # the other rank's gradient is this one's plus 2 in every row it sends
        sent: list = []

        def sum(self, tensor):
            self.sent.append(tensor.shape)
            return tensor + (tensor + 2.0)

    weight = torch.nn.Parameter(torch.zeros(200, 4))
    weight.grad = torch.zeros(200, 4)
    weight.grad[rows] = 1.0
    reduce_rows(weight, rows, TwoRanks(0, 2))
    assert TwoRanks.sent == [torch.Size([6, 4])]  # 6 of 200 rows on the wire
    assert torch.equal(weight.grad[rows], torch.full((6, 4), 2.0))  # (1 + 3) / 2
    untouched = torch.ones(200, dtype=torch.bool)
    untouched[rows] = False
    assert not weight.grad[untouched].any()


def test_bf16_gradient_compression_stays_near_the_single_process_model(dist_config, tmp_path):
    """PyTorch's bf16_compress_hook halves what DDP sends; it rounds the gradients, so the model drifts from
    one process's: by how much is bounded here (relative to the weights' norm)."""
    single, double = tmp_path / "single", tmp_path / "double"
    _train(dist_config, single)
    _train(dist_config, double, "--set", "training.grad_compression=bf16", nproc=2)
    wa = load_file(checkpoints(single)[-1] / "model.safetensors")
    wb = load_file(checkpoints(double)[-1] / "model.safetensors")
    diff = torch.cat([(wa[k] - wb[k]).flatten() for k in wa]).norm() / torch.cat([wa[k].flatten() for k in wa]).norm()
    assert 0 < diff < 1e-3, diff
