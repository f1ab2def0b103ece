#!/usr/bin/env bash
# Warn before the install when the disk is short: PyTorch from PyPI comes with
# its CUDA libraries (about 6 GiB installed, plus the downloaded wheels while
# pip unpacks them), and pip's own message is only "No space left on device".
# Usage: check_space.sh FOLDER NEEDED_GIB
set -u
folder=${1:-.}
need_gib=${2:-10}
tmp=${TMPDIR:-/tmp}
seen=""
for where in "$folder" "$tmp"; do
	read -r free_kib mount < <(df -Pk "$where" 2>/dev/null | awk 'NR == 2 { print $4, $6 }')
	[ -n "${free_kib:-}" ] || continue
	case " $seen " in *" $mount "*) continue ;; esac
	seen="$seen $mount"
	free_gib=$((free_kib / 1024 / 1024))
	if [ "$free_gib" -lt "$need_gib" ]; then
		echo "warning: only ${free_gib} GiB free under $where; installing mvcstore" \
			"with PyTorch needs about ${need_gib} GiB (the CUDA build from PyPI," \
			"which also runs on the CPU). If pip stops with 'No space left on" \
			"device', free some space there or point TMPDIR at a larger disk," \
			"then run the same make command again." >&2
	fi
done
exit 0
