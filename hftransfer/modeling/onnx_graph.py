"""Read a BERT encoder's weights and configuration out of an ONNX graph (see :mod:`hftransfer.modeling.onnx_import`
for how the graph maps onto ``BertModel``): named initializers by name, anonymous MatMul weights by the named bias
their Add node adds, the configuration from table shapes, LayerNorm attributes and the head-splitting Reshape."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hftransfer.errors import AssetError

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
QUERY_BIAS = "encoder.layer.0.attention.self.query.bias"


def not_bert(path: Path, why: str) -> AssetError:
    return AssetError(f"{path} is not a BERT encoder graph that can be converted: {why}")


class BertGraph:
    """An ONNX graph's initializers and node links, for walking from a weight to the node that uses it."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.inputs = [value.name for value in model.graph.input]
        self.initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
        self.producer = {name: node for node in model.graph.node for name in node.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def nodes(self, op_type: str) -> list[Any]:
        return [node for node in self.graph.node if node.op_type == op_type]

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a Constant node's output, else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return self.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(attribute.t)
        return None

    def linear(self, node: Any) -> tuple[str, np.ndarray] | None:
        """``(bias name, weight [out, in])`` when ``node`` is the matrix product of a Linear layer, else None."""
        from onnx import helper

        if node.op_type == "Gemm" and len(node.input) == 3 and node.input[1] in self.initializers:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            weight = self.initializers[node.input[1]]
            return node.input[2], weight if attributes.get("transB", 0) else weight.T
        if node.op_type != "MatMul" or len(node.input) != 2:
            return None
        operand = node.input[1]
        if operand in self.initializers:
            weight = self.initializers[operand].T  # the exporter stores x @ W.T's W.T
        else:
            transpose = self.producer.get(operand)
            if (
                transpose is None
                or transpose.op_type != "Transpose"
                or transpose.input[0] not in self.initializers
            ):
                return None  # attention's products of two activations
            weight = self.initializers[transpose.input[0]]
        if weight.ndim != 2:
            return None
        for add in self.consumers[node.output[0]]:
            if add.op_type != "Add":
                continue
            bias = next((name for name in add.input if name != node.output[0]), "")
            if bias in self.initializers and self.initializers[bias].ndim == 1:
                return bias, weight
        return None


def read_weights(graph: BertGraph, path: Path) -> dict[str, np.ndarray]:
    """BertModel state-dict name -> array, from the named initializers and the MatMul/Add pairs."""
    word_table = next(
        (
            node.input[0]
            for node in graph.nodes("Gather")
            if len(node.input) == 2 and node.input[1] in graph.inputs and node.input[0] in graph.initializers
        ),
        None,
    )
    if word_table is None or not word_table.endswith(WORD_EMBEDDINGS):
        raise not_bert(path, f"no initializer named *{WORD_EMBEDDINGS} is indexed by a graph input")
    prefix = word_table[: -len(WORD_EMBEDDINGS)]
    weights = {
        name[len(prefix) :]: value for name, value in graph.initializers.items() if name.startswith(prefix)
    }
    for node in graph.graph.node:
        found = graph.linear(node)
        if found is None:
            continue
        bias, weight = found
        if bias.startswith(prefix) and bias.endswith(".bias"):
            weights[bias[len(prefix) : -len("bias")] + "weight"] = weight
    return weights


def _head_count(graph: BertGraph, hidden: int, path: Path) -> int:
    """Heads from the Reshape that splits layer 0's query into ``[..., heads or -1, head_dim]``."""
    bias = next((name for name in graph.initializers if name.endswith(QUERY_BIAS)), None)
    if bias is None:
        raise not_bert(path, f"no initializer named *{QUERY_BIAS}")
    adds = [node for node in graph.consumers[bias] if node.op_type == "Add"]
    for add in adds:
        for reshape in graph.consumers[add.output[0]]:
            if reshape.op_type != "Reshape":
                continue
            shape = graph.constant(reshape.input[1])
            if shape is not None:
                tail = [int(value) for value in shape.reshape(-1)[-2:]]
            else:
                concat = graph.producer.get(reshape.input[1])
                if concat is None or concat.op_type != "Concat":
                    continue
                parts = [graph.constant(name) for name in concat.input[-2:]]
                if any(part is None or part.size != 1 for part in parts):
                    continue
                tail = [int(part.reshape(-1)[0]) for part in parts]
            heads, head_dim = tail
            if head_dim > 0 and hidden % head_dim == 0 and heads in (-1, 0, hidden // head_dim):
                return hidden // head_dim
    raise not_bert(path, "the number of attention heads cannot be read from the query's Reshape")


def infer_config(graph: BertGraph, weights: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    try:
        vocab_size, hidden = weights[WORD_EMBEDDINGS].shape
        max_positions = weights["embeddings.position_embeddings.weight"].shape[0]
        type_vocab = weights["embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = weights["encoder.layer.0.intermediate.dense.bias"].shape[0]
    except (KeyError, ValueError) as err:
        raise not_bert(path, f"no weight {err} of BERT's embeddings or first layer") from None
    layers = {
        int(match.group(1)) for name in weights if (match := re.match(r"encoder\.layer\.(\d+)\.", name))
    }
    if layers != set(range(len(layers))):
        raise not_bert(path, f"encoder layers {sorted(layers)} are not numbered 0..n-1")
    if not graph.nodes("Erf"):
        raise not_bert(path, "no Erf node: only BERT's exact GELU activation is supported")
    epsilons = {
        float(attribute.f)
        for node in graph.nodes("LayerNormalization")
        for attribute in node.attribute
        if attribute.name == "epsilon"
    }
    if len(epsilons) > 1:
        raise not_bert(path, f"the LayerNorms use different epsilons {sorted(epsilons)}")
    # The attribute is a float32: 1e-12 reads back as 9.99999996e-13; six significant digits restore it.
    eps = float(f"{epsilons.pop():.6g}") if epsilons else 1e-12
    return {
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "num_attention_heads": _head_count(graph, int(hidden), path),
        "intermediate_size": int(intermediate),
        "hidden_act": "gelu",
        "max_position_embeddings": int(max_positions),
        "type_vocab_size": int(type_vocab),
        "layer_norm_eps": eps,
    }
