"""The conditions an evaluation compares, per task: one owner for the names that the runs, the
command line's choices and the reports share (a light module, so building the parser imports no
model code)."""

CONDITIONS = ("zero_shot_chat", "zero_shot_base", "random", "icm", "accuracy_matched", "gold", "inverted")
"""Classification (`run_eval`): every condition, in report order."""
FEW_SHOT = ("random", "icm", "accuracy_matched", "gold", "inverted")
"""Classification conditions that show an example set."""
GENERATION_CONDITIONS = ("zero_shot", "icm", "gold", "random", "accuracy_matched", "inverted")
"""Generation (`run_generation_eval`): every condition."""
DEFAULT_GENERATION_CONDITIONS = ("zero_shot", "icm", "gold", "random", "accuracy_matched")
"""Generation conditions run unless asked otherwise."""

__all__ = ["CONDITIONS", "DEFAULT_GENERATION_CONDITIONS", "FEW_SHOT", "GENERATION_CONDITIONS"]
