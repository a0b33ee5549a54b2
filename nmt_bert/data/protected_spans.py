"""Protected spans: placeholders, markup and identifiers that must come through exactly.

A protected span is text a translation must copy verbatim: a printf or brace format, a shell
or template variable, an XML/HTML tag or entity, a URL, an e-mail address, a file path, or a
match of a user's own regex. `mask` replaces each span with a numbered placeholder that both
tokenizers keep intact (`⟨0⟩`, `⟨1⟩`, ...: the encoder reads it as a short, stable piece
sequence, the target SentencePiece model as one user-defined piece); `unmask` puts the spans
back by index, so a target that reorders them is honoured, and reports the indices the
translation dropped, repeated or invented.

    protector = Protector(("printf", "brace"))
    masked, spans = protector.mask("Abrir %s en {0}")  # "Abrir ⟨0⟩ en ⟨1⟩", ["%s", "{0}"]
    text, report = unmask("Open ⟨1⟩ in ⟨0⟩", spans)    # "Open {0} in %s", report.ok

Overlapping matches: the leftmost wins, then the longest. Text without a protected span is
returned unchanged, byte for byte. A literal `⟨N⟩` in the input is itself protected, so it
can never be mistaken for a placeholder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

# name -> regex. Each pattern is written so that ordinary prose does not match it (none
# matches a line of the bundled Bible corpus; tests/test_protected_spans.py checks this).
KINDS: dict[str, str] = {
    # %s %d %1$s %-5.2f %lu %% and Python's %(name)s; no space flag: "50 % de" is prose
    "printf": r"%%|%(?:\d+\$|\([A-Za-z_]\w*\))?[-+0#']*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
              r"(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcsSpn]",
    # {0} {name} {0:.2f} {} and the escapes {{ }}
    "brace": r"\{\{|\}\}|\{[A-Za-z0-9_.\[\]]*(?:![rsa])?(?::[^{}\s]{0,20})?\}",
    # $VAR ${var} @VAR@ (autoconf / template macros)
    "variable": r"\$\{[^{}\s]+\}|\$[A-Za-z_]\w*|@[A-Za-z_]\w*@",
    # HTML/Pango tags (<b> </b> <br/> <span weight="bold">), any tag with attributes, and
    # entities (&amp; &#39; &#x27;); a bare <name> is left out: in messages it is usually a
    # metavariable the translator translates (<fichero> for <file>)
    "markup": r"(?i:</?(?:a|abbr|b|big|blockquote|br|code|div|em|font|h[1-6]|hr|i|img|kbd|li|"
              r"ol|p|pre|q|s|samp|small|span|strike|strong|sub|sup|table|td|th|tr|tt|u|ul|var)"
              r"\s*/?>)|</?[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))+\s*/?>"
              r"|&(?:[A-Za-z][A-Za-z0-9]{1,9}|#\d{1,7}|#[xX][0-9A-Fa-f]{1,6});",
    "url": r"\b(?:https?|ftp|file)://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]|\bwww\.[\w-]+(?:\.[\w-]+)+",
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b",
    # /usr/share/x, ~/.config, ./configure, C:\Program Files\x: two parts at least, so that
    # "y/o" (and/or) stays prose
    "path": r"(?<![\w/.~])(?:~|\.{1,2})?/(?:[\w.+-]+/)+[\w.+-]*|(?<![\w/])~/[\w.+-]+"
            r"|(?<![\w/])\.{1,2}/[\w.+-]+|\b[A-Za-z]:\\(?:[\w.-]+\\)*[\w.-]+",
    # Identifiers: snake_case, ALL_CAPS_WITH_UNDERSCORE, CamelCase, dotted.names. Not on by
    # default: measured on software messages, translators often adapt them (bench/README.md).
    "identifier": r"\b[A-Za-z][a-z0-9]*(?:_[A-Za-z0-9]+)+\b|\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b"
                  r"|\b[a-z]+(?:[A-Z][a-z0-9]+)+\b|\b[a-z_]\w*(?:\.[a-z_]\w*){2,}\b",
}
DEFAULT_KINDS = ("printf", "brace", "variable", "markup", "url", "email", "path")

PLACEHOLDER = "⟨{}⟩"  # U+27E8/U+27E9: unchanged by NFC/NFKC, a known piece of XLM-R
_PLACEHOLDER = re.compile(r"⟨(\d{1,3})⟩")
MAX_SPANS = 32  # placeholders the target vocabulary knows; a line with more is not masked


def placeholder_symbols() -> list[str]:
    """The target SentencePiece user-defined symbols: ⟨0⟩ ... ⟨MAX_SPANS-1⟩."""
    return [PLACEHOLDER.format(i) for i in range(MAX_SPANS)]


def check_protection(kinds: Iterable[str], patterns: Iterable[str], where: str) -> str | None:
    """A one-line complaint about an unknown kind or a regex that does not compile, else None."""
    for kind in kinds:
        if kind not in KINDS:
            return f"{where}: unknown span kind {kind!r} (known: {', '.join(KINDS)})"
    for pattern in patterns:
        try:
            if re.compile(pattern).match(""):
                return f"{where}: pattern {pattern!r} matches the empty string"
        except re.error as err:
            return f"{where}: pattern {pattern!r} is not a valid regex ({err})"
    return None


@dataclass(frozen=True)
class Protector:
    """Finds, masks and counts protected spans of the given kinds plus user regexes."""

    kinds: tuple[str, ...] = DEFAULT_KINDS
    patterns: tuple[str, ...] = ()
    _regex: list[re.Pattern] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alternatives = [_PLACEHOLDER.pattern, *(KINDS[k] for k in self.kinds), *self.patterns]
        # One pattern per alternative, tried at each position: leftmost, then longest wins.
        object.__setattr__(self, "_regex", [re.compile(a) for a in alternatives])

    @classmethod
    def from_config(cls, data) -> "Protector | None":
        """From a DataConfig's `protect` and `protect_patterns`; None when both are empty."""
        if not data.protect and not data.protect_patterns:
            return None
        return cls(tuple(data.protect), tuple(data.protect_patterns))

    def find(self, text: str) -> list[tuple[int, int]]:
        """Non-overlapping (start, end) of every span, left to right; leftmost-longest wins."""
        matches = [(m.start(), -m.end()) for regex in self._regex for m in regex.finditer(text)
                   if m.end() > m.start()]
        spans, end = [], 0
        for start, neg_end in sorted(matches):
            if start >= end:
                spans.append((start, -neg_end))
                end = -neg_end
        return spans

    def spans(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.find(text)]

    def mask(self, text: str) -> tuple[str, list[str]]:
        """(text with span i replaced by ⟨i⟩, the spans); unchanged text and [] when there is
        no span, or more than MAX_SPANS of them."""
        found = self.find(text)
        if not found or len(found) > MAX_SPANS:
            return text, []
        pieces, spans, last = [], [], 0
        for i, (a, b) in enumerate(found):
            pieces += [text[last:a], PLACEHOLDER.format(i)]
            spans.append(text[a:b])
            last = b
        pieces.append(text[last:])
        return "".join(pieces), spans

    def mask_pair(self, src: str, tgt: str) -> tuple[str, str] | None:
        """Both sides masked with shared indices when they carry the same multiset of spans
        (at least one); None otherwise. A repeated span keeps its order on both sides."""
        masked_src, spans = self.mask(src)
        if not spans:
            return None
        found = self.find(tgt)
        if Counter(tgt[a:b] for a, b in found) != Counter(spans):
            return None
        free: dict[str, list[int]] = {}
        for i, span in enumerate(spans):
            free.setdefault(span, []).append(i)
        pieces, last = [], 0
        for a, b in found:
            pieces += [tgt[last:a], PLACEHOLDER.format(free[tgt[a:b]].pop(0))]
            last = b
        pieces.append(tgt[last:])
        return masked_src, "".join(pieces)


@dataclass
class SpanReport:
    """What `unmask` (or `compare`) found wrong; all empty when every span came through once."""

    missing: list[str] = field(default_factory=list)  # spans the translation dropped
    repeated: list[str] = field(default_factory=list)  # spans it has more than once
    invented: int = 0  # placeholders with an index the source never had (removed)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.repeated or self.invented)


def unmask(translation: str, spans: list[str], strict: bool = False) -> tuple[str, SpanReport]:
    """Restore spans by placeholder index; report dropped, repeated and invented indices.

    A repeated placeholder is restored each time; an invented one is removed. With `strict`,
    spans the translation dropped are appended to the line (space-separated), so none is lost.
    """
    report, seen = SpanReport(), Counter()

    def restore(match: re.Match) -> str:
        index = int(match.group(1))
        if index >= len(spans):
            report.invented += 1
            return ""
        seen[index] += 1
        return spans[index]

    text = _PLACEHOLDER.sub(restore, translation) if spans or "⟨" in translation else translation
    if report.invented:
        text = " ".join(text.split())
    report.missing = [s for i, s in enumerate(spans) if not seen[i]]
    report.repeated = [spans[i] for i, n in sorted(seen.items()) if n > 1]
    if strict and report.missing:
        text = " ".join([text, *report.missing]).strip()
    return text, report


def compare(source_spans: list[str], hypothesis_spans: list[str]) -> SpanReport:
    """The report for a translation made without masking: spans compared as multisets."""
    want, got = Counter(source_spans), Counter(hypothesis_spans)
    return SpanReport(missing=list((want - got).elements()),
                      repeated=[s for s in want if got[s] > want[s]],
                      invented=sum(n for s, n in got.items() if s not in want))


@dataclass
class SpanAgreement:
    """The share of lines with protected spans whose translation carries exactly those spans."""

    lines_with_spans: int
    matching: int
    kinds: list[str]

    @property
    def share(self) -> float:
        return 100.0 * self.matching / self.lines_with_spans if self.lines_with_spans else 100.0


def span_agreement(sources: list[str], hypotheses: list[str],
                   protector: Protector | None = None) -> SpanAgreement:
    """Exact-multiset agreement of protected spans between each source and its hypothesis."""
    protector = protector or Protector()
    lines = matching = 0
    for src, hyp in zip(sources, hypotheses):
        want = protector.spans(src)
        if want:
            lines += 1
            matching += Counter(want) == Counter(protector.spans(hyp))
    return SpanAgreement(lines, matching, list(protector.kinds))


def mask_train_file(path, protector: Protector) -> int:
    """Mask, in place, each "src<TAB>tgt" line of `path` whose sides carry the same spans;
    return how many pairs were masked. Other lines are copied byte for byte."""
    from pathlib import Path

    path, masked = Path(path), 0
    tmp = path.with_name(path.name + ".masking")
    with open(path, encoding="utf-8", newline="\n") as lines, \
            open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            src, tgt = line.rstrip("\n").split("\t", 1)
            pair = protector.mask_pair(src, tgt)
            if pair is not None:
                masked += 1
                line = f"{pair[0]}\t{pair[1]}\n"
            out.write(line)
    tmp.replace(path)
    return masked
