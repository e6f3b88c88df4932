import pytest

from promptshrink import UnknownTokenizerError, get_tokenizer
from promptshrink.target_tokenizer import _bundled_encoding


def test_bundled_cl100k_matches_known_ids():
    tok = get_tokenizer("cl100k_base")
    assert tok.encode("hello world") == [15339, 1917]
    assert tok.count("") == 0


def test_bundled_o200k_and_model_names():
    assert get_tokenizer("o200k_base").encode("hello world") == [24912, 2375]
    assert get_tokenizer("gpt-4o").encode("hello world") == [24912, 2375]
    assert get_tokenizer("gpt-4").encode("hello world") == [15339, 1917]


def test_encodings_come_from_bundled_files_not_the_network(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: a download would be needed
    enc = _bundled_encoding("cl100k_base")
    assert enc is not None and enc.encode("offline") == get_tokenizer("cl100k_base").encode("offline")


def test_special_token_text_is_counted_not_rejected():
    assert get_tokenizer("cl100k_base").count("<|endoftext|>") > 1


def test_count_many_agrees_with_count():
    tok = get_tokenizer("cl100k_base")
    texts = ["a b c", " The quick brown fox.", "数字 123"]
    assert tok.count_many(texts) == [tok.count(t) for t in texts]


@pytest.mark.parametrize("name", ["", "nope_base", "gpt-99-ultra"])
def test_unknown_tokenizer_is_a_clear_error(name):
    with pytest.raises(UnknownTokenizerError, match="tokenizer"):
        get_tokenizer(name)


@pytest.fixture
def no_network(monkeypatch):
    """Any outbound connection fails the test."""
    import socket

    def refuse(*_args, **_kwargs):
        raise AssertionError("the tokenizer tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    ("name", "indent_tokens"),
    [("r50k_base", 10), ("gpt2", 10), ("davinci", 10), ("p50k_base", 4), ("text-davinci-003", 4), ("p50k_edit", 4)],
)
def test_legacy_openai_encodings_are_bundled_and_offline(no_network, name, indent_tokens):
    """r50k/p50k (GPT-3 era models) ship with the package; p50k merges runs of spaces, r50k does not."""
    get_tokenizer.cache_clear()
    _bundled_encoding.cache_clear()
    tok = get_tokenizer(name)
    assert tok.encode("hello world") == [31373, 995]
    assert tok.count("        x = 1") == indent_tokens


def test_every_bundled_file_matches_tiktokens_own_hash():
    """The manifest's sha256 is the one tiktoken itself pins for the public file (checked on every load)."""
    import hashlib
    import inspect
    import json

    from tiktoken_ext import openai_public

    from promptshrink.paths import models_dir

    folder = models_dir() / "tiktoken"
    entries = json.loads((folder / "manifest.json").read_text())["encodings"]
    assert {"r50k_base", "p50k_base", "cl100k_base", "o200k_base"} <= set(entries)
    for name, entry in entries.items():
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        source = inspect.getsource(openai_public.ENCODING_CONSTRUCTORS[entry.get("constructor", name)])
        if "expected_hash" in source:
            assert entry["sha256"] in source


def test_unbundled_encoding_is_refused_without_network(no_network):
    with pytest.raises(UnknownTokenizerError, match="r50k_base"):
        get_tokenizer("nope_base")


def test_model_names_share_one_encoding_per_file():
    """Arbitrary model names (the proxy's model field) never build a new vocabulary each."""
    assert get_tokenizer("gpt-4-0613").encoding is get_tokenizer("gpt-4-some-other-name").encoding
