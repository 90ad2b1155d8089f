#!/usr/bin/env python3
"""Trains a tiny SentencePiece BPE model (the `sentencepiece` package, Llama 2's settings:
identity normalisation, no whitespace collapsing, a dummy prefix, byte fallback, digits
split), writes its vocabulary into a tokenizer-only GGUF with gguf-py's writer the way
llama.cpp's converter does (`tokenizer.ggml.model = llama`, tokens, scores, token types,
BOS/EOS/UNK ids, add_bos, add_space_prefix), and prints, for every text of TEXTS.json (a JSON
list of strings), SentencePiece's own ids and its decoding of them as one JSON object:

    python3 scripts/make_spm_gguf.py OUT_DIR TEXTS.json > reference.json

The runtime's tokenizer test compares `GgufFile::tokenizer()` against these ids.
"""
import json
import os
import sys

import gguf
import sentencepiece as spm

CORPUS = """The Normans were the people who in the 10th and 11th centuries gave their name to
Normandy, a region in France. They were descended from Norse raiders and pirates from
Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King
Charles III of West Francia. In 2016, the Denver Broncos won Super Bowl 50, beating the
Carolina Panthers 24 to 10. Hello world! The capital of France is Paris. Tokyo is the
capital of Japan. A café sells coffee; a naïve question is fine. Numbers: 1234567890 and
3.14159, e=mc^2. The printing press began in the fifteenth century, when Johannes Gutenberg
combined movable metal type, oil-based ink and a screw press adapted from wine making."""


def main() -> int:
    out_dir, texts_path = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    corpus = os.path.join(out_dir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(20):
            f.write(CORPUS + "\n")
    prefix = os.path.join(out_dir, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=400,
        character_coverage=1.0, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")

    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(os.path.join(out_dir, "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with open(texts_path, encoding="utf-8") as f:
        texts = json.load(f)
    ref = []
    for t in texts:
        ids = sp.encode(t)
        ref.append({"text": t, "ids": ids, "decoded": sp.decode(ids)})
    json.dump({"bos": sp.bos_id(), "sentencepiece": spm.__version__, "cases": ref}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
