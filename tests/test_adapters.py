"""Adapter inspection and validation rules, without a server."""

import shutil

import pytest

from serve.adapters import (
    AdapterError,
    check_base,
    inspect_adapter,
    served_name,
    validate_adapter,
)


@pytest.mark.parametrize("key, rule", [
    ("missing", "missing-path"),
    ("empty", "not-peft"),
    ("not_lora", "not-lora"),
    ("mts", "modules-to-save"),
])
def test_structural_rules(adapters, key, rule):
    with pytest.raises(AdapterError) as info:
        inspect_adapter(adapters[key])
    assert info.value.rule == rule and f"[{rule}]" in str(info.value)


def test_base_rules(adapters, tiny):
    with pytest.raises(AdapterError, match=r"\[base-mismatch\] trained on '.*tiny-wide'"):
        check_base(inspect_adapter(adapters["wrong_base"]), tiny)
    with pytest.raises(AdapterError, match=r"\[base-mismatch\] .* has shape .* does not fit"):
        check_base(inspect_adapter(adapters["wrong_shape"]), tiny)
    check_base(inspect_adapter(adapters["a"]), tiny)


def test_rank_rule(adapters, tiny):
    with pytest.raises(AdapterError, match=r"\[rank-too-large\] rank 32 exceeds .* 16"):
        validate_adapter(adapters["rank32"], tiny, max_rank=16)
    assert validate_adapter(adapters["rank32"], tiny, max_rank=32).rank == 32


def test_weights_file_missing(adapters, tmp_path):
    copy = shutil.copytree(adapters["a"], tmp_path / "a")
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError) as info:
        inspect_adapter(copy)
    assert info.value.rule == "no-weights"


def test_content_hash_follows_weights_not_location(adapters, tmp_path):
    a = inspect_adapter(adapters["a"])
    moved = inspect_adapter(shutil.copytree(adapters["a"], tmp_path / "elsewhere"))
    b = inspect_adapter(adapters["b"])
    assert a.content_hash == moved.content_hash
    assert a.content_hash != b.content_hash
    assert served_name("x", a) != served_name("x", b)
    assert served_name("x", a) == f"x-{a.content_hash[:12]}"
