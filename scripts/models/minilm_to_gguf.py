"""Writes all-MiniLM-L6-v2 (safetensors + tokenizer.json) as one GGUF file
that llama.cpp runs as a BERT embedding model; run once at set-up by
scripts/fetch-models.sh. llama.cpp embeds a question several times faster
than candle's BERT on the same CPU (docs/benchmarks.md).

    python minilm_to_gguf.py MODEL_DIR OUT.gguf [--type q8_0|f16]

Tensor names come from the gguf package's own map for the BERT
architecture; the vocabulary is written the way llama.cpp's WordPiece
tokenizer expects (word-initial pieces get a "▁" prefix, "##" continuation
pieces lose theirs).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

QTYPES = {
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
# Looked up by row (get_rows), tiny or added to activations: stay F32.
KEEP_F32 = ("position_embd.weight", "token_types.weight")


def vocabulary(tokenizer: dict) -> tuple[list[str], list[int]]:
    model = tokenizer["model"]
    if model.get("type") != "WordPiece":
        sys.exit(f"tokenizer.json: expected a WordPiece model, found {model.get('type')}")
    vocab = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        sys.exit("tokenizer.json: vocabulary ids are not 0..n-1")
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for piece, _ in by_id:
        if piece in special:
            tokens.append(piece)
            types.append(gguf.TokenType.CONTROL)
        elif piece.startswith("[") and piece.endswith("]"):
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
        elif piece.startswith("##"):
            tokens.append(piece[2:])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append("\u2581" + piece)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", choices=sorted(QTYPES), default="q8_0")
    args = ap.parse_args()

    config = json.loads((args.model_dir / "config.json").read_text())
    tokenizer = json.loads((args.model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    weights = load_file(str(args.model_dir / "model.safetensors"))
    blocks = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)

    part = args.out.with_name(args.out.name + ".part")
    w = gguf.GGUFWriter(str(part), "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(int(config["max_position_embeddings"]))
    w.add_embedding_length(int(config["hidden_size"]))
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_block_count(blocks)
    w.add_head_count(int(config["num_attention_heads"]))
    w.add_layer_norm_eps(float(config["layer_norm_eps"]))
    w.add_causal_attention(False)
    # sentence-transformers' pooling for this model: the mean of the tokens.
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_file_type(
        gguf.LlamaFileType.MOSTLY_Q8_0 if args.type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    )

    tokens, types = vocabulary(tokenizer)
    w.add_token_type_count(int(config.get("type_vocab_size", 2)))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)

    for hf_name, data in weights.items():
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # the pooler is for [CLS] classification; ids are implicit
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            sys.exit(f"model.safetensors: no GGUF name for tensor {hf_name}")
        data = data.astype(np.float32)
        if data.ndim == 2 and name not in KEEP_F32:
            qtype = QTYPES[args.type]
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(part, args.out)


if __name__ == "__main__":
    main()
