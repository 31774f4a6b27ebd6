"""The one Settings object and the model registry, without loading a real model."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from ftchat import config
from ftchat.config import Settings, SettingsError
from ftchat.models import loader as models
from ftchat.models.cpu import resolve_dtype
from ftchat.models.generation import GenerationConfig, Generator
from ftchat.models.weights import resolve_embedder

PACKAGE = Path(config.__file__).resolve().parent  # src/ftchat, every subpackage included


# --- Settings validate and resolve what the generator needs -----------------------------


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FTCHAT_DTYPE", "float8",
     "Unknown dtype 'float8'; choose auto, float32, bfloat16, int4, int8 (FTCHAT_DTYPE)"),
    ("FTCHAT_DECODER", "vllm", "Unknown decoder 'vllm'; choose auto or transformers (FTCHAT_DECODER)"),
    ("FTCHAT_THREADS", "-1", "FTCHAT_THREADS must be at least 0, got '-1'"),
    ("FTCHAT_THREADS", "two", "FTCHAT_THREADS must be a whole number, got 'two'"),
])
def test_settings_reject_a_bad_variable_when_built(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        Settings()
    assert str(raised.value) == message


def test_settings_validate_values_given_in_code_too():
    with pytest.raises(SettingsError, match="FTCHAT_DTYPE"):
        Settings(dtype="float8")
    with pytest.raises(SettingsError, match="FTCHAT_DECODER"):
        replace(Settings(), decoder="llama.cpp")
    with pytest.raises(SettingsError, match="FTCHAT_THREADS"):
        Settings(threads=-2)


def test_settings_spell_dtype_and_decoder_one_way_and_resolve_auto(monkeypatch):
    monkeypatch.setenv("FTCHAT_DTYPE", " BF16 ")
    monkeypatch.setenv("FTCHAT_DECODER", "Transformers")
    monkeypatch.setenv("FTCHAT_THREADS", "1")
    s = Settings()
    assert (s.dtype, s.decoder, s.threads) == ("bfloat16", "transformers", 1)
    assert resolve_dtype(s.dtype) == "bfloat16"
    monkeypatch.delenv("FTCHAT_DTYPE")
    auto = Settings()
    assert auto.dtype == "auto" and resolve_dtype(auto.dtype) == resolve_dtype("auto")
    assert resolve_dtype(auto.dtype) in {"bfloat16", "float32"}


def test_settings_do_not_change_when_the_environment_does_later(monkeypatch):
    s = Settings()
    monkeypatch.setenv("FTCHAT_DTYPE", "int8")
    monkeypatch.setenv("FTCHAT_DECODER", "transformers")
    assert (s.dtype, s.decoder) == ("auto", "auto")
    assert models.generator_key(s)[2:4] == (resolve_dtype("auto"), "auto")


def test_a_child_process_reads_the_same_settings(monkeypatch, tmp_path):
    """child_environment() is what every child `ftchat` gets (bench, load test, tests): read
    back under it, every setting the environment can carry is the parent's, and the parent's
    own FTCHAT_* variables (its host, port, credentials) do not leak through."""
    import os

    monkeypatch.setenv("FTCHAT_AUTH", "parent:secret")
    monkeypatch.setenv("FTCHAT_PORT", "8123")
    parent = Settings(
        corpus_dir=tmp_path / "c", index_dir=tmp_path / "i", questions_file=tmp_path / "q.jsonl",
        cache_dir=tmp_path / "m", embedder="some-embedder", model="some-model", dense_weight=0.25,
        asked_weight=0.5, max_new_tokens=7, dtype="int8", threads=3, decoder="transformers",
    )
    env = parent.child_environment(FTCHAT_PORT="9000", OTHER="x")
    assert "FTCHAT_AUTH" not in env and env["OTHER"] == "x" and env["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setattr(os, "environ", env)
    child = Settings()
    assert child.port == 9000 and child.auth is None
    assert replace(child, port=parent.port, auth=parent.auth) == parent


# --- Only config.py reads FTCHAT_*; nothing writes os.environ ---------------------------


def _environ_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each read of an FTCHAT_* variable and each write to os.environ."""
    found = []

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    def ftchat_name(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and str(node.value).startswith("FTCHAT_")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target, method = node.func.value, node.func.attr
            first = node.args[0] if node.args else None
            if is_environ(target) and method in {"get", "pop"} and ftchat_name(first):
                found.append((node.lineno, f"reads {first.value}"))
            if is_environ(target) and method in {"setdefault", "update", "pop", "clear", "__setitem__"}:
                found.append((node.lineno, f"os.environ.{method}"))
            if method in {"getenv", "putenv"} and (method == "putenv" or ftchat_name(first)):
                found.append((node.lineno, method))
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            if isinstance(node.ctx, ast.Store | ast.Del):
                found.append((node.lineno, "os.environ[...] ="))
            elif ftchat_name(node.slice):
                found.append((node.lineno, f"reads {node.slice.value}"))
        elif isinstance(node, ast.Compare) and ftchat_name(node.left):
            if any(is_environ(c) for c in node.comparators):
                found.append((node.lineno, f"tests {node.left.value}"))
    return found


MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p != PACKAGE / "config.py")


def test_the_environment_check_reads_every_module_of_the_package():
    # After the move into subpackages it read models/ alone for a while, and passed.
    expected = {"cli.py", "api.py", "models/loader.py", "page/serve.py", "tools/bench/cold_start.py"}
    assert expected <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_only_settings_read_ftchat_variables_and_nothing_writes_the_environment(module):
    uses = _environ_uses(ast.parse((PACKAGE / module).read_text(encoding="utf-8")))
    assert not uses, f"{module}: {uses} (read FTCHAT_* in config.Settings and pass it down)"


def test_the_environment_check_sees_what_it_looks_for():
    code = ('import os\nos.environ.setdefault("HF_HUB_OFFLINE", "1")\nos.environ["X"] = "1"\n'
            'a = os.environ.get("FTCHAT_DTYPE")\nb = os.getenv("FTCHAT_THREADS")\n'
            'c = os.environ["FTCHAT_DECODER"]\nd = "FTCHAT_MODEL" in os.environ\n'
            'e = os.environ.get("HOME")\n')
    assert [line for line, _ in _environ_uses(ast.parse(code))] == [2, 3, 4, 5, 6, 7]


# --- The registry ------------------------------------------------------------------------


class Scripted:
    """Enough of a Generator to be cached and reported."""

    backend = "scripted"

    def __init__(self, settings: Settings) -> None:
        self.name, self.dtype, self.source = settings.model, resolve_dtype(settings.dtype), "script"
        self.load_seconds = 0.0


@pytest.fixture
def registered():
    """A registered generator name whose factory counts its loads; removed afterwards."""
    loads: list[Settings] = []

    def factory(settings: Settings) -> Scripted:
        loads.append(settings)
        return Scripted(settings)

    with models.registered_generator("test-scripted-counter", factory) as name:
        yield name, loads


def test_registry_caches_one_model_per_key(registered, tmp_path):
    name, loads = registered
    base = Settings(model=name, cache_dir=tmp_path)
    first = models.get_generator(base)
    assert models.get_generator(replace(base)) is first and len(loads) == 1
    assert models.generator_is_loaded(base)

    other_dtype = "float32" if resolve_dtype(base.dtype) == "bfloat16" else "bfloat16"
    second = models.get_generator(replace(base, dtype=other_dtype))
    assert second is not first and second.dtype == other_dtype and len(loads) == 2
    # "auto" and the dtype it resolves to are the same model.
    assert models.get_generator(replace(base, dtype=resolve_dtype(base.dtype))) is first
    assert models.get_generator(replace(base, decoder="transformers")) is not first
    assert models.get_generator(replace(base, cache_dir=tmp_path / "other")) is not first
    assert len(loads) == 4
    # Settings that do not change the model share it.
    assert models.get_generator(replace(base, top_k=2, max_new_tokens=5)) is first and len(loads) == 4


def test_registered_generator_is_used_through_settings_like_any_model(tmp_path):
    from ftchat.api import Assistant
    from ftchat.models.decoders import Decoder

    class Replay:
        """A Decoder that replays fixed token ids."""

        backend = "replay"

        def greedy(self, prompt, max_new_tokens, stop_ids):
            yield from [t for t in [10, 11, 12, 2][:max_new_tokens] if t not in stop_ids]

        def weight_bytes(self) -> int:
            return 0

    class Tokens:
        eos_token_id = 2

        def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
            return [1]

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(f"w{i}" for i in ids) + " "

    replay: Decoder = Replay()  # the protocol is all a backend needs
    name = "test-scripted-replay"
    with models.registered_generator(
        name, lambda s: Generator(s.model, Tokens(), replay, {2}, "script", s.dtype)
    ):
        assert name in models.generator_names()
        generator = Assistant(Settings(model=name, cache_dir=tmp_path)).load_generator()
        assert isinstance(generator, Generator) and generator.backend == "replay"
        messages = [{"role": "user", "content": "hi"}]
        text = "".join(generator.stream(messages, GenerationConfig(max_new_tokens=8)))
        assert text == "w10 w11 w12 " and generator.last_decoded_tokens == 3
        # Registering the name again replaces the model it stands for.
        models.register_generator(name, Scripted)
        assert isinstance(Assistant(Settings(model=name, cache_dir=tmp_path)).load_generator(), Scripted)
    assert name not in models.generator_names()


def test_a_registration_for_a_with_block_leaves_the_registry_as_it_found_it(tmp_path):
    """Inside the block the name loads the block's factory; after it, even when the block
    raised, the name stands for what it stood for before (or for nothing), and none of the
    block's models stays cached."""
    name = "test-scripted-scoped"
    settings = Settings(model=name, cache_dir=tmp_path)

    class Inner(Scripted):
        pass

    with models.registered_generator(name, Inner) as registered:
        assert registered == name and isinstance(models.get_generator(settings), Inner)
    assert name not in models.generator_names() and not models.generator_is_loaded(settings)

    with models.registered_generator(name, Scripted):
        outer = models.get_generator(settings)
        with pytest.raises(RuntimeError), models.registered_generator(name, Inner):
            assert isinstance(models.get_generator(settings), Inner)
            raise RuntimeError("a failing test")
        again = models.get_generator(settings)
        assert type(again) is Scripted and again is not outer  # reloaded, not the block's model
    assert name not in models.generator_names() and not models.generator_is_loaded(settings)


def test_an_unknown_model_name_says_what_to_choose(tmp_path):
    with pytest.raises(models.ModelNotAvailable, match="Unknown model 'no-such-model'. Choose a preset"):
        models.load_generator(Settings(model="no-such-model", cache_dir=tmp_path))


def test_presets_hold_generators_and_embedders_in_one_table():
    kinds = {preset.kind for preset in models.PRESETS.values()}
    assert kinds == {"generator", "embedder"}
    assert models.generator_names()[0] == Settings().model
    assert Path(resolve_embedder(Settings().embedder), "config.json").is_file()


def test_tests_see_no_ftchat_variables_and_a_private_model_cache():
    import os

    from guide_fixtures import MODEL_CACHE

    variables = sorted(k for k in os.environ if k.startswith("FTCHAT_"))
    assert variables == ["FTCHAT_CACHE_DIR", "FTCHAT_PROGRESS_FILE"]
    assert Settings().cache_dir == MODEL_CACHE
    assert Settings().progress_file.parent == MODEL_CACHE  # quiz attempts never reach the checkout
    assert not MODEL_CACHE.is_relative_to(Path.home() / ".cache")
