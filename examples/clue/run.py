"""CLUE 1.1 baselines behind one entry point (bojone's CLUE-bert4keras, on Keras 3).

    python examples/clue/run.py TASK --data-dir DIR --model-dir MODEL [--model bert]
        [--output-dir OUT] [--epochs N] [--max-steps N] [--batch-size N] [--maxlen N]
        [--learning-rate LR] [--limit N] [--seed S]

TASK: afqmc tnews iflytek cmnli ocnli wsc csl cluener cmrc2018 c3 chid. Trains on the
task's train files, keeps the weights with the best dev score, and writes
``OUT/<task>_predict.json`` (CLUE submission format) and ``OUT/<task>_dev.json``.
See examples/clue/README.md.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (HERE, os.path.dirname(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from common import (  # noqa: E402
    base_parser,
    build_model,
    load_tokenizer,
    model_files,
    set_seed,
)

from clue_lib import train_and_predict  # noqa: E402
from clue_tasks import TASKS  # noqa: E402


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS), help="CLUE task")
    parser.add_argument("--optimizer", choices=("adafactor", "adamw"), default="adafactor",
                        help="adafactor (bojone's baselines, lr 5e-4) or adamw (lr 2e-5)")
    parser.add_argument("--grad-accum", type=int, default=None,
                        help="gradient accumulation steps (task default: 1, 2 or 4)")
    parser.add_argument("--head", choices=("global_pointer", "efficient_global_pointer", "crf"),
                        default=None, help="cluener only: the entity head")
    parser.add_argument("--score-test", action="store_true",
                        help="the test file carries labels: score it too (\"test\" in the record)")
    return parser.parse_args(argv)


def main(argv=None):
    """Run one task; returns the dev record written to ``<task>_dev.json``."""
    started = time.time()
    args = parse_args(argv)
    cls = TASKS[args.task]
    options = {}
    if args.head is not None:
        if not hasattr(cls, "head"):
            raise SystemExit(f"--head applies to cluener only, not to {args.task}")
        options["head"] = args.head
    task = cls(**options)
    set_seed(args.seed)
    model_files(args.model_dir)  # fail early, naming the files a model directory needs
    data = {split: task.load(args.data_dir, split, args.limit)
            for split in ("train", "dev", "test")}
    if args.score_test:
        data["labeled_test"] = task.load(args.data_dir, "labeled_test", args.limit)
    for split, examples in data.items():
        print(f"{args.task} {split}: {len(examples)} examples", flush=True)
    tokenizer = load_tokenizer(args.model_dir)
    encoder = build_model(args.model_dir, model=args.model)
    task.setup(tokenizer, encoder, args)
    record = train_and_predict(task, encoder, data, args, started=started)
    print(f"{args.task}: dev {record['metric']} = {record['score']:.5f} "
          f"({record['seconds']:.1f} s); wrote {record['predict_file']}", flush=True)
    return record


if __name__ == "__main__":
    main()
