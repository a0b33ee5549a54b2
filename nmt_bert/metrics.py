"""BLEU, chrF and TER through sacreBLEU; every score carries its signature."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF, TER

from nmt_bert.errors import UserError
from nmt_bert.textio import read_lines


@dataclass
class MetricScore:
    name: str
    score: float
    signature: str
    detail: str  # sacreBLEU's own one-line rendering (n-gram precisions, BP, ...)


@dataclass
class ScoreReport:
    hypothesis: str
    references: list[str]
    sentences: int
    scores: list[MetricScore]
    # with a source file: protected-span agreement (nmt_bert.data.protected_spans)
    spans: dict | None = None

    def get(self, name: str) -> float:
        return next(s.score for s in self.scores if s.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


METRICS = {"BLEU": BLEU, "chrF2": CHRF, "TER": TER}  # sacreBLEU's defaults, named as it names them


def score_lines(hypotheses: list[str], references: list[list[str]],
                names: tuple[str, ...] = ("BLEU", "chrF2", "TER")) -> list[MetricScore]:
    """Corpus scores (BLEU, chrF and TER unless `names` picks fewer) of `hypotheses`
    against one or more reference streams, each with its signature."""
    results = []
    for metric in (METRICS[name]() for name in names):
        result = metric.corpus_score(hypotheses, references)
        results.append(MetricScore(result.name, float(result.score),
                                   str(metric.get_signature()), str(result)))
    return results


def score_files(hypothesis: Path, references: list[Path],
                source: Path | None = None) -> ScoreReport:
    """Scores of `hypothesis` against `references`; with `source`, also the share of lines
    with protected spans (the default kinds) whose hypothesis carries exactly those spans."""
    if not references:
        raise UserError("score needs at least one reference file")
    hyps = read_lines(hypothesis, "hypothesis file")
    refs = []
    for ref in references:
        lines = read_lines(ref, "reference file")
        if len(lines) != len(hyps):
            raise UserError(
                f"{ref}: {len(lines)} lines, but {hypothesis} has {len(hyps)}; "
                "hypothesis and references must be line-aligned"
            )
        refs.append(lines)
    if not hyps:
        raise UserError(f"{hypothesis}: empty file, nothing to score")
    report = ScoreReport(str(hypothesis), [str(r) for r in references], len(hyps),
                         score_lines(hyps, refs))
    if source is not None:
        report.spans = spans_report(read_lines(source, "source file"), hyps, source, hypothesis)
    return report


def spans_report(sources: list[str], hyps: list[str], source: Path, hypothesis: Path) -> dict:
    from nmt_bert.data.protected_spans import span_agreement

    if len(sources) != len(hyps):
        raise UserError(f"{source}: {len(sources)} lines, but {hypothesis} has {len(hyps)}; "
                        "source and hypothesis must be line-aligned")
    agreement = span_agreement(sources, hyps)
    return {"source": str(source), "lines_with_spans": agreement.lines_with_spans,
            "matching": agreement.matching, "exact_share": round(agreement.share, 2),
            "kinds": agreement.kinds}


def format_report(report: ScoreReport) -> str:
    lines = [f"{report.sentences} sentences, {len(report.references)} reference(s)"]
    for s in report.scores:
        lines.append(f"{s.name:<5} {s.score:6.2f}   {s.detail}")
        lines.append(f"      signature: {s.signature}")
    if report.spans is not None:
        s = report.spans
        lines.append(f"spans {s['exact_share']:6.2f}%  of {s['lines_with_spans']} lines with "
                     f"protected spans match the source exactly ({s['matching']} lines)")
    return "\n".join(lines)


def check_gate_values(min_bleu: float | None = None, min_chrf: float | None = None) -> None:
    """Raise UserError, naming the option, for a threshold that is not a finite number.

    A NaN threshold would let every score pass; call this before scoring to fail early.
    """
    for option, minimum in (("--min-bleu", min_bleu), ("--min-chrf", min_chrf)):
        if minimum is not None and not math.isfinite(minimum):
            raise UserError(f"{option} {minimum}: expected a finite number")


def check_thresholds(report: ScoreReport, min_bleu: float | None = None,
                     min_chrf: float | None = None) -> list[str]:
    """Messages for every threshold the report falls below (empty when all pass).

    Thresholds are checked by `check_gate_values` first; a NaN score never passes.
    """
    check_gate_values(min_bleu, min_chrf)
    failures = []
    for name, minimum in (("BLEU", min_bleu), ("chrF2", min_chrf)):
        if minimum is None:
            continue
        score = report.get(name)
        if math.isnan(score):
            failures.append(f"{name} is not a number (nan), required {minimum:.2f}")
        elif score < minimum:
            failures.append(f"{name} {score:.2f} < required {minimum:.2f}")
    return failures
