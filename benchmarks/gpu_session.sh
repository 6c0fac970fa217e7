#!/usr/bin/env bash
# One prepared GPU session (a lent single-GPU machine, under 10 minutes): the paper-preset training speed
# (issue 16 item 7), then, concurrently, the runs that a CPU session cannot afford: the QuickDraw-FS critics
# and generators (issue 15), omniglot-fsdm and wider Omniglot DDPM/CFGDM (issue 16), a second Omniglot
# critic pair (issue 16 item 4); then drawing with them on the GPU and evaluating on the CPUs. Every job is
# a plain `drawgap` command, so each one reruns on any machine.
#
# Expects (carried, `carry: ["runs/carry"]`): runs/carry/whl/ (diffusers, kornia, importlib_metadata wheels
# for the GPU image's Python 3.12), runs/carry/stub/kornia_rs (a stand-in: kornia imports kornia_rs for image
# file I/O only, and its wheel does not fit in what a call may carry), runs/carry/data/ with
# qdfs150/{train,test}.npz.xz (uncompressed npz, xz: a third of the zlib size), omniglot48/ and omniglot50/
# {train,test}.npz, omniglot50_human/test_samples.npz and omniglot50_human.json (the human Omniglot drawings
# and their metrics with the shipped critics).
# Writes $OUT/session.log and $OUT/part_NN (one .tgz split in 15 MB parts).
#   bash benchmarks/gpu_session.sh           environment: MINUTES (training budget), DEADLINE (s), DEV
#
# What the first run measured (H200, 2026-11-28; MINUTES=4, DEADLINE=545; output in the session's closing note):
# - the ten training jobs at once kept the GPU at 100 % and starved one another: each generator made 5 to 13
#   steps/s (quickdraw-cfgdm 722 steps of batch 128, omniglot-cfgdm-wide 1,530, omniglot-fsdm 1,410 of 32 sets)
#   where one alone makes 34 to 41 (benchmarks/bench_training.py there); the ResNet ProtoNet made 11.9 episodes/s;
# - drawing 100k QuickDraw drawings took ~155 s, so evaluation did not fit before the deadline.
# Next time: fewer jobs at once (the critics first, alone; then two or three generators), keep the last
# checkpoint of each run so a later session can resume it, and evaluate on the CPU from the returned samples.
set -u
OUT=${OUT:-/tmp/gpu_out}
MINUTES=${MINUTES:-4}
DEADLINE=${DEADLINE:-545}  # seconds after start: whatever still runs is stopped, and what exists is packed
DEV=${DEV:-cuda}
PAPER_STEPS=${PAPER_STEPS:-100}
R=${R:-/tmp/r}
PY=${PY:-python3}
T0=$(date +%s)
mkdir -p "$OUT" "$R"
if [ -z "${SKIP_WHL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site runs/carry/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/runs/carry/stub
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
DG="$PY -m drawgap.cli"
D=${D:-runs/data}
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/session.log"; }
log "$(nvidia-smi -L 2>&1 | head -1) | $($PY -c 'import torch;print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' 2>&1)"

unpack() {  # the carried data, as the local build wrote it (same arrays; only the compression differs)
  local C=${CARRY:-runs/carry}/data f
  [ -d $C ] || return 0
  mkdir -p $D/qdfs150 $D/omniglot48 $D/omniglot50
  for f in qdfs150/train qdfs150/test omniglot48/train omniglot50/train; do xz -dc $C/$f.npz.xz > $D/$f.npz & done
  cp $C/omniglot48/test.npz $D/omniglot48/; cp $C/omniglot50/test.npz $D/omniglot50/
  cp -r $C/omniglot50_human $C/omniglot50_human.json $D/
  wait
  $PY -c "from drawgap.data.formats import read_dataset, write_samples; write_samples(read_dataset('$D/qdfs150/test.npz').to_samples(), '$D/qdfs150/test_samples.npz')"
  log "data: $(cd $D && ls -l */*.npz | awk '{print $5, $9}' | tr '\n' ' ')"
}

stages() {
unpack
# 1. paper preset (13 M-parameter ConvNeXt U-Net, batch 128), alone on the GPU, fp32 then bf16
for prec in ${PAPER_PRECISIONS-fp32 bf16}; do
  flag=""; [ $prec = bf16 ] && flag="--bf16"
  timeout -k 10 90 $DG train cfgdm --preset paper --data $D/omniglot48/train.npz --out $R/paper_$prec --steps $PAPER_STEPS \
    --batch-size 128 --lr 1e-4 --checkpoint-every $PAPER_STEPS --seed 0 $flag > $R/paper_$prec.out 2>&1
  log "paper $prec rc=$? $(tail -n 1 $R/paper_$prec/log.jsonl 2>/dev/null)"
done

# 2. everything else at once (each small model leaves the GPU mostly idle)
job() { local name=$1; shift; log "start $name"; ( "$@" > $R/$name.out 2>&1; log "end $name rc=$?" ) & }
GEN="--batch-size 128 --lr 1e-3 --bf16 --checkpoint-every 1000 --seed 0 --minutes $MINUTES"
SETS="--batch-size 32 --lr 1e-3 --bf16 --checkpoint-every 1000 --seed 0 --minutes $MINUTES"
LIMIT=$(python3 -c "print(int($MINUTES*60+20))")
job qd-cfgdm   $DG train cfgdm --data $D/qdfs150/train.npz --out $R/quickdraw-cfgdm --augment-class $GEN
job qd-ddpm    $DG train ddpm  --data $D/qdfs150/train.npz --out $R/quickdraw-ddpm  --augment-class $GEN
job qd-fsdm    $DG train fsdm  --data $D/qdfs150/train.npz --out $R/quickdraw-fsdm  --augment-class $SETS
job om-fsdm    $DG train fsdm  --data $D/omniglot48/train.npz --out $R/omniglot-fsdm $SETS
job om-cfgdm-w $DG train cfgdm --data $D/omniglot48/train.npz --out $R/omniglot-cfgdm-wide --widths 32,64,128 $GEN
job om-ddpm-w  $DG train ddpm  --data $D/omniglot48/train.npz --out $R/omniglot-ddpm-wide  --widths 32,64,128 $GEN
CRIT="--device $DEV --bf16 --threads 2"
job qd-simclr  timeout -s TERM $LIMIT $DG critics train simclr --arch quickdraw --data $D/qdfs150/train.npz --val $D/qdfs150/test.npz \
    --out $R/quickdraw-simclr --threshold 0.3 --steps 6600 --batch-size 448 --val-every 1000 --seed 0 $CRIT
job qd-proto   timeout -s TERM $LIMIT $DG critics train protonet --arch quickdraw --data $D/qdfs150/train.npz --val $D/qdfs150/test.npz \
    --out $R/quickdraw-protonet --threshold 0.3 --steps 8000 --ways 60 --queries 5 --val-every 2000 --seed 0 $CRIT
job om-simclr-b timeout -s TERM $LIMIT $DG critics train simclr --arch omniglot --image-size 50 --data $D/omniglot50/train.npz --val $D/omniglot50/test.npz \
    --out $R/omniglot-simclr-b --threshold 0.5 --steps 6600 --batch-size 448 --strength strong --val-every 1000 --seed 7 $CRIT
job om-proto-b  timeout -s TERM $LIMIT $DG critics train protonet --arch omniglot --image-size 50 --data $D/omniglot50/train.npz --val $D/omniglot50/test.npz \
    --out $R/omniglot-protonet-b --threshold 0.5 --steps 8000 --ways 60 --queries 5 --val-every 2000 --seed 7 $CRIT
# learning-curve snapshots of the wide Omniglot CFGDM's EMA weights while it trains
( while sleep 70; do g=omniglot-cfgdm-wide; f=$R/$g/generator.json; [ -f $f ] || continue
    s=$($PY -c "import json;print(json.load(open('$f'))['training']['step'])" 2>/dev/null) || continue
    mkdir -p $R/snap/$g/$s && cp $R/$g/generator.json $R/$g/weights.safetensors $R/snap/$g/$s/ 2>/dev/null
  done ) & local snap=$!
( while sleep 20; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> $R/gpu_util.txt 2>/dev/null; done ) & local util=$!
sleep $(( ${MINUTES%.*} * 60 + 25 ))
kill $snap $util 2>/dev/null
wait
log "training ended; GPU utilization samples: $(sort $R/gpu_util.txt 2>/dev/null | uniq -c | sort -rn | head -3 | tr '\n' ';')"

# 3. critics stopped by the time limit: finish them from their checkpoint (validation + critic folder)
finish() { local c=$1 kind=$2 data=$3; { [ -f $R/$c/model.safetensors ] || [ ! -f $R/$c/checkpoint.pt ]; } && return
  local s=$($PY -c "import torch;print(torch.load('$R/$c/checkpoint.pt',map_location='cpu',weights_only=True)['step'])")
  timeout 60 $DG critics train $kind --data $D/$data/train.npz --val $D/$data/test.npz --out $R/$c --resume --steps $s --device $DEV > $R/$c.finish.out 2>&1
  log "finished $c at step $s rc=$?"; }
finish quickdraw-simclr simclr qdfs150 & finish quickdraw-protonet protonet qdfs150 &
finish omniglot-simclr-b simclr omniglot50 & finish omniglot-protonet-b protonet omniglot50 &
wait

# 4. weights stored as float16 (they load into float32 modules unchanged; halves the package), before any
#    drawing or evaluation, so every number below is measured with exactly the weights that ship
$PY - "$R" <<'PY' 2>&1 | tee -a "$OUT/session.log"
import glob, hashlib, json, os, sys
from safetensors.torch import load_file, save_file
R = sys.argv[1]
files = glob.glob(f"{R}/*/weights.safetensors") + glob.glob(f"{R}/*/model.safetensors") + glob.glob(f"{R}/snap/*/*/weights.safetensors")
for f in files:
    if "/paper_" in f:
        continue
    t = load_file(f)
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in t.items()}, f, metadata={"stored_as": "float16"})
    cfg = os.path.join(os.path.dirname(f), "config.json")
    if f.endswith("model.safetensors") and os.path.exists(cfg):  # critics record their weights file's sha256
        c = json.load(open(cfg))
        c["weights_sha256"] = hashlib.sha256(open(f, "rb").read()).hexdigest()
        c["weights_storage"] = "float16"
        json.dump(c, open(cfg, "w"), indent=2)
    print("float16", f, os.path.getsize(f))
PY
for c in quickdraw-simclr quickdraw-protonet omniglot-simclr-b omniglot-protonet-b; do
  case $c in quickdraw-*) data=qdfs150;; *) data=omniglot50;; esac
  [ -f $R/$c/model.safetensors ] && (timeout 90 $DG critics check $R/$c --data $D/$data/test.npz > $R/$c.check.out 2>&1; log "check $c rc=$? $(tail -n 2 $R/$c.check.out | tr '\n' ' ')") &
done

# 5. draw on the GPU, evaluate on the CPUs, with the critics just trained (QuickDraw) or shipped (Omniglot)
S=$R/samples; E=$R/eval; mkdir -p $S/qd $S/qdsweep $S/om $S/omsweep $E
SAMP="--sampler dpm++ --steps 20 --seed 0 --batch-size 1000"
draw() { local run=$1 data=$2 out=$3; shift 3; [ -f $R/$run/weights.safetensors ] || return
  $DG sample $R/$run --exemplars $D/$data/test.npz $SAMP --out $out "$@" > $R/sample_${run}_$(basename $out).out 2>&1; log "sample $run -> $out rc=$?"; }
draw quickdraw-cfgdm qdfs150 $S/qd --per-exemplar 150 --guidance 1 &
draw quickdraw-ddpm qdfs150 $S/qd --per-exemplar 150 &
draw quickdraw-fsdm qdfs150 $S/qd --per-exemplar 150 &
draw quickdraw-cfgdm qdfs150 $S/qdsweep --per-exemplar 50 --guidance 0,0.2,0.4,0.6,0.8,1,1.2,1.4,1.6,1.8,2 &
draw omniglot-fsdm omniglot48 $S/om --per-exemplar 10 &
draw omniglot-ddpm-wide omniglot48 $S/om --per-exemplar 10 &
draw omniglot-cfgdm-wide omniglot48 $S/omsweep --per-exemplar 10 --guidance 0,0.25,0.5,0.75,1,1.25,1.5,1.75,2 &
wait
QDC="--simclr $R/quickdraw-simclr --protonet $R/quickdraw-protonet"
OMB="--simclr $R/omniglot-simclr-b --protonet $R/omniglot-protonet-b"
ev() { local out=$1; shift; timeout 150 $DG evaluate "$@" --out $E/$out.json > $E/$out.out 2>&1; log "eval $out rc=$? $(tail -n 1 $E/$out.out)"; }
[ -f $R/quickdraw-protonet/model.safetensors ] && [ -f $R/quickdraw-simclr/model.safetensors ] && ev qd_human $D/qdfs150/test_samples.npz $QDC
for f in $S/qd/*.npz $S/qdsweep/*.npz; do [ -f $f ] && [ -f $E/qd_human.json ] && ev $(basename $(dirname $f))_$(basename $f .npz) $f $QDC --human $E/qd_human.json & done
for f in $S/om/*.npz $S/omsweep/*.npz; do [ -f $f ] && ev om_$(basename $f .npz) $f --critics omniglot --human $D/omniglot50_human.json & done
[ -f $R/omniglot-protonet-b/model.safetensors ] && [ -f $R/omniglot-simclr-b/model.safetensors ] && for f in $D/omniglot50_human/test_samples.npz $S/om/*.npz $S/omsweep/*_g1.npz; do
  [ -f $f ] && ev omb_$(basename $f .npz) $f $OMB & done
wait
log "stages done"
}

stages & WORK=$!
while kill -0 $WORK 2>/dev/null; do
  sleep 3
  if [ $(( $(date +%s) - T0 )) -ge $DEADLINE ]; then
    log "deadline: stopping what still runs"
    pkill -TERM -f drawgap.cli; sleep 4; pkill -KILL -f drawgap.cli; kill $WORK 2>/dev/null; break
  fi
done

# 6. pack: no optimizer state, no accelerate checkpoints, no paper-preset weights; samples of 12 classes
#    for the figures (the full files are remade by the printed commands)
cd $R
rm -rf */checkpoints paper_*/weights.safetensors
$PY - <<'PY'
import glob, os
import numpy as np
for f in glob.glob("samples/**/*.npz", recursive=True):
    z = dict(np.load(f, allow_pickle=False))
    np.savez_compressed(f[:-4] + ".head12.npz", **{k: (v[:12] if k in ("samples", "exemplars", "classes") else v) for k, v in z.items()})
    os.remove(f)
PY
tar -cf - --exclude='checkpoint.pt' quickdraw-* omniglot-* eval *.out gpu_util.txt paper_* samples snap 2>/dev/null | gzip -1 > $R/../all.tgz
ls -la $R/../all.tgz | tee -a "$OUT/session.log"
split -b 15M -d $R/../all.tgz "$OUT/part_"
log "packed $(ls $OUT | tr '\n' ' ')"
