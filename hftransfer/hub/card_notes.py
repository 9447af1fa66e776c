"""What a model card says about how the exported model predicts, beyond its architecture: a token model's
decoding (a CRF, IOB2 constraints) and a classifier whose boundary was moved after training (label shift)."""

from __future__ import annotations

from typing import Any


def decoding_line(task: str, config: dict[str, Any]) -> str:
    """How the token predictions behind the results were decoded, where not transformers' argmax per token."""
    model = config.get("model", {})
    decoding = "crf" if model.get("head") == "crf" else model.get("decoding", "argmax")
    if task != "token-classification" or decoding == "argmax":
        return ""
    how = {
        "crf": "a linear-chain CRF head (its transition scores in `crf.safetensors`), Viterbi over valid IOB2 "
        "sequences",
        "iob2": "the best valid IOB2 tag sequence (constrained Viterbi over the token probabilities)",
    }[decoding]
    return (
        f"\n- **Decoding**: {how}. `pipeline` takes the argmax per token instead, which can score differently; "
        "`hftransfer.Predictor` decodes as the results were measured"
    )


def label_shift_note(config: dict[str, Any]) -> list[str]:
    """The strategy line's note on a run whose output layer was shifted to a target's class frequencies."""
    shift = config.get("label_shift") or {}
    if shift.get("method", "none") == "none":
        return []
    source = next(
        (s.get("data") for s in config.get("sources", []) if s.get("name") == shift.get("source")), None
    )
    how = {"em": "EM", "zeroshot": "estimated by a zero-shot classifier"}.get(
        shift["method"], shift["method"]
    )
    return [
        f"decision boundary moved to the class frequencies of `{source}` (label shift, {how}; "
        "validation and test scores are from before the shift)"
    ]
