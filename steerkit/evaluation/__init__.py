"""The seed paper's evaluation protocol: does an example set steer a model toward a persona?

One module per task, and what they share:

- `protocol`: folds and the search/test split, the labellings the conditions compare (gold,
  inverted, random, accuracy-matched), the metrics (ECE, standard errors, the bootstrap over
  questions, label accuracy, coherence U), provenance;
- `predictors`: predicting a persona's option with an example set as context (`ClaimPredictor`
  on a base model, `ChatPredictor` on a chat model), `test_accuracy`;
- `datasets`: gold-labelled questions per persona (OpinionQA, GlobalOpinionQA, JSONL) for
  `load_dataset`;
- `classification`: the k-fold run over multiple-choice questions (`run_eval`, `EvalReport`,
  `write_plots`);
- `preference`: the pairwise-preference task (Persona-Tailoring's styles), scored by the same run;
- `generation`: open-ended answers steered by the examples and scored by a judge
  (`run_generation_eval`, OvertonBench's task), with `answers` (answer pools: the OvertonBench
  importer, a JSONL format, a pack's ``[[answer_pool]]``, a generator) and `judge` (the rubric, strict parsing, the self-check);
- `chat`: the chat-model seam the generation task and its judge share.

Every name below is importable from ``steerkit.evaluation``; the modules may move.
"""

from steerkit.evaluation.answers import (
    Answer,
    AnswerPool,
    AnswerQuestion,
    PoolPersona,
    answer_pool_from_pack,
    generate_answers,
    import_overtonbench,
    pack_with_answer_pool,
    read_answer_pool,
    write_answer_pool,
)
from steerkit.evaluation.chat import CachedChat, ChatModel, OpenAIChat
from steerkit.evaluation.classification import (
    CONDITIONS,
    FEW_SHOT,
    EvalConfig,
    EvalReport,
    run_eval,
    write_plots,
)
from steerkit.evaluation.datasets import (
    GQA_COUNTRIES,
    OQA_PARTIES,
    DatasetKind,
    EvalPersona,
    load_dataset,
)
from steerkit.evaluation.generation import (
    DEFAULT_GENERATION_CONDITIONS,
    GENERATION_CONDITIONS,
    GenerationConfig,
    GenerationReport,
    run_generation_eval,
    write_generation_plots,
)
from steerkit.evaluation.judge import (
    RUBRIC_VERSION,
    Judge,
    KnownPair,
    SelfCheck,
    parse_score,
    self_check,
)
from steerkit.evaluation.predictors import (
    AccuracyReport,
    ChatPredictor,
    ClaimPredictor,
    Predictor,
    QuestionResult,
    normalise,
    prediction_confidence,
    question_outcome,
    score_claims,
    test_accuracy,
)
from steerkit.evaluation.preference import PT_NAMES, load_persona_tailoring
from steerkit.evaluation.protocol import (
    Progress,
    accuracy_matched,
    bootstrap_se,
    coherence,
    expected_calibration_error,
    gold_questions,
    label_accuracy,
    make_folds,
    mutual_predictability,
    random_labels,
    split_questions,
)

__all__ = [
    "CONDITIONS",
    "DEFAULT_GENERATION_CONDITIONS",
    "FEW_SHOT",
    "GENERATION_CONDITIONS",
    "GQA_COUNTRIES",
    "OQA_PARTIES",
    "PT_NAMES",
    "RUBRIC_VERSION",
    "AccuracyReport",
    "Answer",
    "AnswerPool",
    "AnswerQuestion",
    "CachedChat",
    "ChatModel",
    "ChatPredictor",
    "ClaimPredictor",
    "DatasetKind",
    "EvalConfig",
    "EvalPersona",
    "EvalReport",
    "GenerationConfig",
    "GenerationReport",
    "Judge",
    "KnownPair",
    "OpenAIChat",
    "PoolPersona",
    "Predictor",
    "Progress",
    "QuestionResult",
    "SelfCheck",
    "accuracy_matched",
    "answer_pool_from_pack",
    "bootstrap_se",
    "coherence",
    "expected_calibration_error",
    "generate_answers",
    "gold_questions",
    "import_overtonbench",
    "label_accuracy",
    "load_dataset",
    "load_persona_tailoring",
    "make_folds",
    "mutual_predictability",
    "normalise",
    "pack_with_answer_pool",
    "parse_score",
    "prediction_confidence",
    "question_outcome",
    "random_labels",
    "read_answer_pool",
    "run_eval",
    "run_generation_eval",
    "score_claims",
    "self_check",
    "split_questions",
    "test_accuracy",
    "write_answer_pool",
    "write_generation_plots",
    "write_plots",
]

test_accuracy.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
