#!/bin/sh
# Prints the presets' parameter counts and FLOPs per token at T = 1024 as a
# markdown table (the one in configs/README.md), from `flowhn info`.
echo "| preset | parameters | training FLOPs/token at T=1024 | FlowHN n_a at T=1024 |"
echo "|---|---|---|---|"
for f in configs/*-135m.json configs/*-350m.json configs/*-1b.json; do
    out=$(./flowhn info --config "$f" --seq-len 1024) || exit 1
    p=$(echo "$out" | awk '/^  total/ {print $3}' | tr -d '()')
    fl=$(echo "$out" | grep -o 'training (3x) [0-9.e+]*' | awk '{print $3}')
    na=$(echo "$out" | grep -o 'n_a = [0-9]* of [0-9]* (ratio [0-9.]*)' | sed 's/n_a = //')
    echo "| $(basename "$f" .json) | $p | $fl | ${na:--} |"
done
