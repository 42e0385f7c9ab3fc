"""Names, resolution, front matter, runtime support: the pure rules, no cache needed."""

from __future__ import annotations

import pytest

from mlxk.cache.frontmatter import read_front_matter
from mlxk.cache.names import dirname_to_name, name_problem, name_to_dirname, split_revision
from mlxk.cache.resolve import matching_dirnames, resolve
from mlxk.cache.root import hub_cache_root, mlxk_cache_dir
from mlxk.cache.runtime import mlx_lm_support
from mlxk.errors import AmbiguousMatch, ModelNotFound, ValidationError


@pytest.mark.parametrize(
    "name", ["gpt2", "org/name", "mlx-community/Qwen2.5-0.5B-Instruct-4bit", "a_b/c.d-1"]
)
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None
    assert dirname_to_name(name_to_dirname(name)) == name


@pytest.mark.parametrize(
    "name", ["", "a/b/c", "a//b", "../x", "a--b", "a..b", "-a", "a.", "a b", "ä", "x" * 97, "/abs", "a/"]
)
def test_invalid_names(name: str) -> None:
    assert name_problem(name) is not None


def test_revision_suffix() -> None:
    assert split_revision("org/m@ABC1") == ("org/m", "abc1")
    assert split_revision("org/m") == ("org/m", None)
    with pytest.raises(ValidationError):
        split_revision("org/m@main!")


def test_resolution_order() -> None:
    dirs = ["models--org--Model", "models--org--Model-Instruct", "models--other--model-base"]
    assert matching_dirnames(dirs, "org/Model") == ["models--org--Model"]
    assert matching_dirnames(dirs, "ORG/MODEL") == ["models--org--Model"]
    assert matching_dirnames(dirs, "instruct") == ["models--org--Model-Instruct"]
    with pytest.raises(AmbiguousMatch) as info:
        resolve(dirs, "model", single=True)
    assert info.value.extra["matches"] == ["org/Model", "org/Model-Instruct", "other/model-base"]
    assert len(resolve(dirs, "model", single=False).dirnames) == 3
    with pytest.raises(ModelNotFound):
        resolve(dirs, "nothing", single=True)
    with pytest.raises(ValidationError):
        resolve(dirs, "./local-dir", single=True)


def test_cache_root_rules(tmp_path) -> None:
    assert hub_cache_root({"HF_HUB_CACHE": "/x/hub", "HF_HOME": "/y"}) == "/x/hub"
    assert hub_cache_root({"HF_HOME": "/y"}) == "/y/hub"
    assert hub_cache_root({"XDG_CACHE_HOME": "/z"}) == "/z/huggingface/hub"
    assert hub_cache_root({}).endswith("/.cache/huggingface/hub")
    assert mlxk_cache_dir({"XDG_CACHE_HOME": "/z"}) == "/z/mlxk"


def test_front_matter() -> None:
    text = (
        b"---\nlibrary_name: mlx\ntags:\n- mlx\n- 'chat'\npipeline_tag: text-generation\nbase_model: [a/b, c/d]\n"
        b"model-index:\n  - name: x\n---\n# card\nlibrary_name: not-this\n"
    )
    assert read_front_matter(text) == {
        "library_name": "mlx",
        "tags": ["mlx", "chat"],
        "pipeline_tag": "text-generation",
        "base_model": ["a/b", "c/d"],
    }
    assert read_front_matter(b"# no front matter\n---\nlibrary_name: mlx\n") == {}
    assert read_front_matter(None) == {}


def test_mlx_lm_support_reads_package_files() -> None:
    support = mlx_lm_support()
    if support.version is None:
        pytest.skip("mlx-lm is not installed")
    assert support.supports("llama") and support.supports("qwen2")
    assert support.supports("mistral")  # through mlx-lm's remapping table
    assert not support.supports("bert")
