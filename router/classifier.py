"""The classifier interface: a prompt in, a score in [0, 1] out (higher = needs a stronger model).

The kinds live beside this module: ``heuristic.py`` (zero training) and ``trained.py``
(a model file made by ``turnout train``). ``load_classifier`` picks one from the config.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.config import ClassifierConfig

#: The model shipped with the project, made by ``make model``; used when the config names none.
DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "default.json"


@dataclass(frozen=True)
class Score:
    """A classifier's verdict on one prompt."""

    value: float
    reasons: list[str] = field(default_factory=list)
    #: The prompt's kind when the classifier scores kinds on scales of their own (``trained``).
    kind: str | None = None


class Classifier(abc.ABC):
    """Scores prompts; ``score_batch`` is what the classify task calls on a chunk."""

    name: str = "classifier"

    @property
    def label(self) -> str:
        """What the summaries name it by (a trained one adds its model's name)."""
        return self.name

    @abc.abstractmethod
    def score(self, text: str) -> Score:
        """Score one prompt."""

    def score_batch(self, texts: Sequence[str]) -> list[Score]:
        """Score many prompts; kinds with vectorised scoring override this."""
        return [self.score(text) for text in texts]

    def kinds_on_own_scale(self) -> set[str]:
        """Prompt kinds whose scores measure something else than the rest's, so that one
        threshold cannot serve both (``turnout calibrate`` gives them thresholds of their own)."""
        return set()


def load_classifier(config: ClassifierConfig) -> Classifier:
    """The classifier the config asks for; ``auto`` means the default model, else the heuristic.

    Raises ModelFileError (a clear sentence) when a model file is named but unusable, so a
    worker fails at start rather than mid-batch.
    """
    from router.heuristic import HeuristicClassifier

    if config.kind == "heuristic":
        return HeuristicClassifier()
    path = Path(config.model_path) if config.model_path else DEFAULT_MODEL_PATH
    if config.kind == "auto" and not config.model_path and not path.exists():
        return HeuristicClassifier()  # only the shipped model may be absent: a named file is meant
    from router.trained import ModelFileError, TrainedClassifier

    try:
        return TrainedClassifier.load(path)
    except ModelFileError as exc:
        if not config.model_path or path.exists() or path.is_absolute():
            raise
        raise ModelFileError(f"{exc} (classifier.model_path in the config; a relative path is read from the "
                             f"current directory, {Path.cwd()})") from None
