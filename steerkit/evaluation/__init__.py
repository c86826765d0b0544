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
- `conditions`: the conditions each task compares (their names, in one place);
- `chat`: the chat-model seam the generation task and its judge share.

Every name below is importable from ``steerkit.evaluation``; the modules may move. They are imported
on first use (PEP 562), so a command that needs one submodule does not pay for the others (the
chat seam alone pulls in openai).
"""

from typing import TYPE_CHECKING

from steerkit._lazy import lazy_exports

if TYPE_CHECKING:  # the lazy exports below, for type checkers, IDEs and the API reference
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
    from steerkit.evaluation.conditions import CONDITIONS, DEFAULT_GENERATION_CONDITIONS, FEW_SHOT, GENERATION_CONDITIONS
    from steerkit.evaluation.generation import (
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

#: Export → the submodule that defines it, imported by `__getattr__` on first use.
_LAZY = {
    "Answer": "steerkit.evaluation.answers",
    "AnswerPool": "steerkit.evaluation.answers",
    "AnswerQuestion": "steerkit.evaluation.answers",
    "PoolPersona": "steerkit.evaluation.answers",
    "answer_pool_from_pack": "steerkit.evaluation.answers",
    "generate_answers": "steerkit.evaluation.answers",
    "import_overtonbench": "steerkit.evaluation.answers",
    "pack_with_answer_pool": "steerkit.evaluation.answers",
    "read_answer_pool": "steerkit.evaluation.answers",
    "write_answer_pool": "steerkit.evaluation.answers",
    "CachedChat": "steerkit.evaluation.chat",
    "ChatModel": "steerkit.evaluation.chat",
    "OpenAIChat": "steerkit.evaluation.chat",
    "CONDITIONS": "steerkit.evaluation.conditions",
    "FEW_SHOT": "steerkit.evaluation.conditions",
    "EvalConfig": "steerkit.evaluation.classification",
    "EvalReport": "steerkit.evaluation.classification",
    "run_eval": "steerkit.evaluation.classification",
    "write_plots": "steerkit.evaluation.classification",
    "GQA_COUNTRIES": "steerkit.evaluation.datasets",
    "OQA_PARTIES": "steerkit.evaluation.datasets",
    "DatasetKind": "steerkit.evaluation.datasets",
    "EvalPersona": "steerkit.evaluation.datasets",
    "load_dataset": "steerkit.evaluation.datasets",
    "DEFAULT_GENERATION_CONDITIONS": "steerkit.evaluation.conditions",
    "GENERATION_CONDITIONS": "steerkit.evaluation.conditions",
    "GenerationConfig": "steerkit.evaluation.generation",
    "GenerationReport": "steerkit.evaluation.generation",
    "run_generation_eval": "steerkit.evaluation.generation",
    "write_generation_plots": "steerkit.evaluation.generation",
    "RUBRIC_VERSION": "steerkit.evaluation.judge",
    "Judge": "steerkit.evaluation.judge",
    "KnownPair": "steerkit.evaluation.judge",
    "SelfCheck": "steerkit.evaluation.judge",
    "parse_score": "steerkit.evaluation.judge",
    "self_check": "steerkit.evaluation.judge",
    "AccuracyReport": "steerkit.evaluation.predictors",
    "ChatPredictor": "steerkit.evaluation.predictors",
    "ClaimPredictor": "steerkit.evaluation.predictors",
    "Predictor": "steerkit.evaluation.predictors",
    "QuestionResult": "steerkit.evaluation.predictors",
    "normalise": "steerkit.evaluation.predictors",
    "prediction_confidence": "steerkit.evaluation.predictors",
    "question_outcome": "steerkit.evaluation.predictors",
    "score_claims": "steerkit.evaluation.predictors",
    "test_accuracy": "steerkit.evaluation.predictors",
    "PT_NAMES": "steerkit.evaluation.preference",
    "load_persona_tailoring": "steerkit.evaluation.preference",
    "Progress": "steerkit.evaluation.protocol",
    "accuracy_matched": "steerkit.evaluation.protocol",
    "bootstrap_se": "steerkit.evaluation.protocol",
    "coherence": "steerkit.evaluation.protocol",
    "expected_calibration_error": "steerkit.evaluation.protocol",
    "gold_questions": "steerkit.evaluation.protocol",
    "label_accuracy": "steerkit.evaluation.protocol",
    "make_folds": "steerkit.evaluation.protocol",
    "mutual_predictability": "steerkit.evaluation.protocol",
    "random_labels": "steerkit.evaluation.protocol",
    "split_questions": "steerkit.evaluation.protocol",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

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
