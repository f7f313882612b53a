"""`lorashear export-gguf MODEL -o OUT.gguf`: one GGUF file for llama.cpp (pruned layers of any shape)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorashear.deploy import DTYPES, QUANTS, export_gguf
from lorashear.deploy.gguf_layout import FAST_WIDTH


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-gguf", help="write a (pruned) model as a GGUF file that llama.cpp runs",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
One GGUF file for llama.cpp from any folder lorashear writes (uniform or not; LoRA merged), a dense
model or an adapter folder. Uniform folders keep their GGUF architecture (llama, qwen2); folders whose
layers differ are written as deci, llama.cpp's LLaMA with per-layer sizes. --quant quantizes the file
with llama.cpp's own quantizer (needs lorashear[gguf]). Details and limits: docs/deployment.md.""",
                       epilog="""\
examples:

    lorashear export-gguf runs/rand20 -o rand20.gguf
    lorashear export-gguf runs/rand20 -o rand20-q4.gguf --quant q4_k_m
""")
    p.add_argument("model", help="pruned or dense folder (uniform or not), peft adapter folder, built-in name")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.gguf", help="the .gguf file to write")
    p.add_argument("--dtype", default="f16", choices=list(DTYPES),
                   help="matrix precision of the file (norms stay f32; default f16); with --quant: of the "
                        "file llama.cpp quantizes from")
    p.add_argument("--quant", default=None, metavar="TYPE",
                   help=f"quantize with llama.cpp (needs lorashear[gguf]): {', '.join(QUANTS)}")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    layout = export_gguf(args.model, args.output, dtype=args.dtype, quant=args.quant)
    shapes = "every layer alike" if layout.uniform else "per-layer sizes"
    print(f"wrote {args.output} (GGUF architecture {layout.arch}, {len(layout.layers)} layers, {shapes}, "
          f"{args.quant or args.dtype})")
    slow = layout.slow_widths()
    if slow:
        some = ", ".join(f"layer {i}: {width:,}" for i, width in list(slow.items())[:3])
        print(f"note: {len(slow)} of {len(layout.layers)} layers have an MLP width that is not a multiple of "
              f"{FAST_WIDTH} ({some}{', ...' if len(slow) > 3 else ''}); llama.cpp runs such widths slower, "
              f"possibly slower than the dense model. Prune with --multiple-of {FAST_WIDTH} (a recipe's "
              f"prune.multiple_of) for widths it runs fast: docs/deployment.md")
    return 0
