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
