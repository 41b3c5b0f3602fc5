#!/usr/bin/env bash
# How the teachers shipped in gdistill/builtin/ were made, and how to remake them.
# toy2d: about a minute; digits: about 20 minutes on 2 CPU cores (12,000 steps at ~10 steps/s).
# Training is reproducible from the seed on the same machine and torch version.
set -euo pipefail
RUNS=${RUNS:-runs}

gdistill teach --dataset toy2d --out "$RUNS/teach-toy2d" --seed 0
gdistill teach --dataset digits --out "$RUNS/teach-digits" --seed 0

# Ship the EMA weights and the manifest (the raw weights stay behind: sampling uses the EMA).
for name in toy2d digits; do
  python - "$RUNS/teach-$name" "gdistill/builtin/$name" <<'EOF'
import shutil, sys
from pathlib import Path
import yaml
run, dest = Path(sys.argv[1]), Path(sys.argv[2])
dest.mkdir(parents=True, exist_ok=True)
manifest = yaml.safe_load((run / "manifest.yaml").read_text())
manifest["files"].pop("raw.safetensors", None)
shutil.copyfile(run / "model.safetensors", dest / "model.safetensors")
(dest / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
EOF
done
