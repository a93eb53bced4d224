"""Turn a GGUF into a float32 Hugging Face folder vLLM can serve (`make test-vllm`; runs in the vLLM venv, offline).

transformers dequantizes the GGUF on load; save_pretrained refuses a model that still carries the GGUF quantizer, so
it is detached first. The folder gets the GGUF's own tokenizer and chat template.
Usage: python convert_gguf.py MODEL.gguf OUT_DIR
"""

import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer


def main(gguf: str, out: str) -> None:
    path = Path(gguf)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
