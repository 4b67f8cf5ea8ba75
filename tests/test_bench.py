"""`cuts bench`: table and JSON layout, and the in-process workers on tiny sizes."""

from __future__ import annotations

import json

import cuts.bench as bench


def test_run_bench_json_layout(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "_in_fresh_process",
                        lambda kind, size: {"seconds": 0.5, "peak_mb": 10.0, "result_mb": 2.0, "levels": 7})
    monkeypatch.setattr(bench, "default_step_seconds", lambda *a, **k: 0.05)
    monkeypatch.setattr(bench, "reference_step_seconds", lambda *a, **k: 1.0)
    lines: list[str] = []
    out = tmp_path / "bench.json"
    bench.run_bench(json_path=str(out), quick=True, out=lines.append)
    data = json.loads(out.read_text())
    assert data["train"]["speedup"] == 20.0
    assert set(data["embed"]) == {"128", "512"} and set(data["hierarchy"]) == {"128", "256"}
    assert data["hierarchy"]["256"]["levels"] == 7
    assert any("float16" in line for line in lines)


def test_workers_measure_real_calls():
    emb = bench._worker("embed", 32)
    assert emb["result_mb"] == round(32 * 32 * 128 * 4 / 2**20, 1) and emb["seconds"] > 0
    hier = bench._worker("hierarchy", 48)
    assert hier["levels"] >= 1 and hier["peak_mb"] >= 0
