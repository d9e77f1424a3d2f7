"""Shared by the tiny-decoder fixture scripts: run texts through a causal LM and save what the
parity tests compare against.

reference.json: texts and token ids; reference.safetensors, per text t: `t.hidden_states`
(`output_hidden_states`, stacked), `t.last_block` (the last block's output before the final
norm) and `t.logits`.
"""
import json

import torch
import transformers
from safetensors.torch import save_file


def write_reference(model, last_block, tok, texts, out):
    refs, tensors = [], {}
    for t, text in enumerate(texts):
        ids = tok.encode(text).ids
        captured = {}
        hook = last_block.register_forward_hook(
            lambda m, i, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            result = model(torch.tensor([ids]), output_hidden_states=True)
        hook.remove()
        x = captured["x"]
        tensors[f"{t}.hidden_states"] = torch.stack([hs[0] for hs in result.hidden_states]).contiguous()
        tensors[f"{t}.last_block"] = (x[0] if x.dim() == 3 else x).contiguous()
        tensors[f"{t}.logits"] = result.logits[0].contiguous()
        refs.append({"text": text, "input_ids": ids})
    save_file(tensors, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({"transformers_version": transformers.__version__,
                                                    "torch_version": torch.__version__,
                                                    "texts": refs}, indent=1) + "\n")
    print(f"wrote {out}")
