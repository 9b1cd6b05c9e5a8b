"""Word lists for naming discovered concepts (discovery/vocabulary.py)."""

from __future__ import annotations

import re

import pytest

from conceptlens.discovery import vocabulary as vocab
from conceptlens.discovery.vocabulary import load_vocabulary, parts_of_speech, split_pos
from conceptlens.errors import ConfigError, DataError


def _wordnet_noun_or_adjective(word: str) -> bool:
    """Independent check: WordNet has a noun or adjective synset for the word (or its base form)."""
    from conceptlens.concepts.sources.wordnet import wordnet

    wn = wordnet()
    return any(wn.synsets(word, pos) for pos in ("n", "a", "s"))


def test_file_bad_lines_are_reported_with_line_numbers(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("shoe\n\n123\ndog\nShoe\nred\tcar\n" + "x" * 51 + "\nfine\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_vocabulary(str(f))
    msg = str(e.value)
    assert "5 bad line(s)" in msg
    assert "line 2: empty line" in msg
    assert "line 3: '123' is not a word" in msg
    assert "line 5: duplicate of line 1" in msg
    assert "line 6: control or invisible character U+0009" in msg
    assert "line 7: 51 characters (at most 50)" in msg
    assert not re.search(r"line [148]:", msg)  # the good lines are not blamed


def test_file_words_in_order_bom_spaces_and_size(tmp_path):
    f = tmp_path / "words.txt"
    f.write_bytes("\ufeffzebra \n  striped shirt\napple\n".encode())
    assert load_vocabulary(str(f)) == ["zebra", "striped shirt", "apple"]
    assert load_vocabulary(str(f), size=2) == ["zebra", "striped shirt"]
    f.write_text("pear\n")  # a file is read afresh (not cached)
    assert load_vocabulary(str(f)) == ["pear"]


def test_file_not_utf8_empty_and_unknown_spec(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_vocabulary(str(f))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_vocabulary(str(empty))
    with pytest.raises(ConfigError, match="neither one of .*'wordfreq'.*nor an existing file"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="size must be an integer >= 1"):
            load_vocabulary("wordfreq", size=bad)


def test_wordfreq_source_alphabetic_nouns_adjectives_in_frequency_order():
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from wordfreq import iter_wordlist

    words = load_vocabulary("wordfreq", size=400)
    assert len(words) == 400 and len(set(words)) == 400
    assert all(re.fullmatch(r"[a-z]{2,}", w) for w in words)
    assert not set(words) & ENGLISH_STOP_WORDS
    assert all(_wordnet_noun_or_adjective(w) for w in words)
    # the 400 come in wordfreq's order (most frequent first) and are a prefix of the filter's output
    rank = {w: i for i, w in zip(range(20000), iter_wordlist("en"), strict=False)}
    assert [rank[w] for w in words] == sorted(rank[w] for w in words)
    assert load_vocabulary("wordfreq", size=100) == words[:100]
    for verb in ("make", "get", "said", "went", "know"):  # frequent, but verbs
        assert verb in rank and verb not in words
    for noun in ("water", "house", "car", "food"):
        assert noun in words


def test_wordfreq_source_is_deterministic():
    first = load_vocabulary("wordfreq", size=150)
    vocab._builtin.cache_clear()
    vocab._pos_index.cache_clear()
    assert load_vocabulary("wordfreq", size=150) == first


def test_wordnet_source_single_lowercase_nouns_and_adjectives():
    words = load_vocabulary("wordnet", size=200)
    assert len(words) == 200 and len(set(words)) == 200
    assert all(re.fullmatch(r"[a-z]{2,}", w) for w in words)
    assert all(_wordnet_noun_or_adjective(w) for w in words)
    assert "person" in words[:20]  # the most sense-tagged noun in WordNet's SemCor counts


def test_parts_of_speech_and_split():
    pos = parts_of_speech(["shoe", "quickly", "zqxw"])
    assert pos["shoe"] == {"noun", "verb"} and pos["quickly"] == {"adverb"} and pos["zqxw"] == set()
    adjectives, nouns = split_pos(["happy", "shoe", "quickly", "zqxw", "shoes", "green"])
    assert adjectives == ["happy", "green"]
    # unknown words count as nouns; verb/adverb-only words are left out; plural via WordNet's base form
    assert nouns == ["shoe", "zqxw", "shoes"]
