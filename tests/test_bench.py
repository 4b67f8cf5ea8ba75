"""`cuts bench`: table and JSON layout, and the in-process workers on tiny sizes."""

from __future__ import annotations

import json

import cuts.bench as bench


def test_run_bench_json_layout(monkeypatch, tmp_path):
    kinds: list[tuple[str, int]] = []

    def fake(kind, size):
        kinds.append((kind, size))
        return {"seconds": 0.5, "peak_mb": 10.0, "result_mb": 2.0, "levels": 7}

    monkeypatch.setattr(bench, "_in_fresh_process", fake)
    monkeypatch.setattr(bench, "default_step_seconds", lambda *a, **k: 0.05)
    monkeypatch.setattr(bench, "reference_step_seconds", lambda *a, **k: 1.0)
    lines: list[str] = []
    out = tmp_path / "bench.json"
    bench.run_bench(json_path=str(out), quick=True, out=lines.append)
    data = json.loads(out.read_text())
    assert data["train"]["speedup"] == 20.0
    assert set(data["embed"]) == {"128", "512"} and set(data["hierarchy"]) == {"128", "256"}
    assert data["embed"]["512"] == {"seconds": 0.5, "peak_mb": 10.0, "result_mb": 2.0, "levels": 7}
    assert set(data["embed_in_memory"]) == {"128", "512"} and set(data["embed_float16"]) == {"512"}
    assert data["hierarchy"]["256"]["levels"] == 7
    assert [k for k in kinds if k[0] != "hierarchy"] == [
        ("embed", 128), ("embed_memory", 128), ("embed", 512), ("embed_memory", 512), ("embed_f16", 512)]
    table = [line for line in lines if "512x512" in line]
    assert [line.split()[1:3] for line in table[:3]] == [["file,", "float32"], ["memory,", "float32"],
                                                         ["memory,", "float16"]]
    assert any("embed_to_file" in line for line in lines)


def test_workers_measure_real_calls():
    emb = bench._worker("embed", 32)  # streamed to a temporary .npy file
    assert emb["result_mb"] == round(32 * 32 * 128 * 4 / 2**20, 1) and emb["seconds"] > 0
    mem = bench._worker("embed_memory", 32)
    assert mem["result_mb"] == emb["result_mb"] and mem["peak_mb"] >= 0
    assert bench._worker("embed_f16", 32)["result_mb"] == round(32 * 32 * 128 * 2 / 2**20, 1)
    hier = bench._worker("hierarchy", 48)
    assert hier["levels"] >= 1 and hier["peak_mb"] >= 0


def test_only_some_sections_keeps_the_others_in_json(monkeypatch, tmp_path):
    import pytest

    monkeypatch.setattr(bench, "_in_fresh_process",
                        lambda kind, size: {"seconds": 0.5, "peak_mb": 10.0, "result_mb": 2.0, "levels": 7})
    monkeypatch.setattr(bench, "default_step_seconds", lambda *a, **k: pytest.fail("train ran"))
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"machine": {}, "train": {"default_seconds_per_step": 0.06},
                               "embed": {"128": {"seconds": 9.0}}, "hierarchy": {"128": {"levels": 3}}}))
    lines: list[str] = []
    res = bench.run_bench(json_path=str(out), quick=True, sections=["embed"], out=lines.append)
    assert set(res) == {"machine", "embed", "embed_in_memory", "embed_float16"}
    data = json.loads(out.read_text())
    assert data["train"] == {"default_seconds_per_step": 0.06} and data["hierarchy"] == {"128": {"levels": 3}}
    assert data["embed"]["128"]["seconds"] == 0.5 and "embed_in_memory" in data and data["machine"]
    assert "kept its train, hierarchy results" in lines[-1]
    assert not any("hierarchy by" in line or "training on" in line for line in lines)
    with pytest.raises(ValueError, match="unknown bench section"):
        bench.run_bench(sections=["embedding"], out=lines.append)
