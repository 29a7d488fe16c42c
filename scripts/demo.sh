#!/usr/bin/env bash
# `make demo`: the product's story on the embedded model, sized for 2 CPU cores (~10 min).
#   1. fine-tune: LoRA on the first N FineTuneBench fictional-people facts (file order, no picking)
#   2. compare base vs tuned: those N facts asked back (memorization) and rephrased
#      (generalization), and the forgetting check (ARC-Easy, WikiText-2 bits per byte)
#   3. analyze the weights: intruder dimensions and effective rank of the update
#   4. report: one offline HTML page + its Markdown summary
# Every step resumes: a finished step is skipped, an interrupted one continues from what it saved.
# Item counts live in the `demo` suite (tasks/suites.yml); N must match its FineTuneBench counts.
set -euo pipefail

BIN=${BIN:-.venv/bin}
DEMO=${DEMO:-demo}
BASE=builtin:smollm2-135m
N=40

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/4 Fine-tune: LoRA on the first $N of the 150 FineTuneBench fictional-people facts" \
     "(10 epochs, lr 1e-3; ~3 min)"
test -f "$DEMO/tuned/evalkit_finetune.json" ||
    "$BIN/evalkit" finetune "$BASE" --data finetunebench:fictional_people --limit "$N" \
        --method lora --out "$DEMO/tuned"

step "2/4 Compare base vs tuned: the $N trained facts asked back and rephrased," \
     "ARC-Easy (first 50 items), WikiText-2 (first 3 articles)"
"$BIN/evalkit" compare "$BASE" "$DEMO/tuned" --tasks demo \
    --runs-dir "$DEMO/runs" --out "$DEMO/compare"

step "3/4 Analyze the weights: intruder dimensions and effective rank of the update"
test -f "$DEMO/analyze/summary.json" ||
    "$BIN/evalkit" analyze "$BASE" "$DEMO/tuned" --out "$DEMO/analyze"

step "4/4 Report"
"$BIN/evalkit" report "$DEMO/compare" "$DEMO/analyze" "$DEMO/tuned" -o "$DEMO/report"
