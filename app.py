#!/usr/bin/env python
"""Browser demo: upload a photo, see it super-resolved x4, compare with bicubic, download.

    bash demo.sh                      # sets up (.venv + requirements-demo.txt) and serves 127.0.0.1:7860
    .venv/bin/python app.py --port 7861 --weights_dir weights --max_pixels 4000000

Offline: the compact models bundled with the package always run; the official ResShift
checkpoints run when their files are in --weights_dir (the demo never downloads them). Each
request runs `infer.py`'s own code (`resshift_jax.demo`), so the downloaded PNG is the file
`infer.py` writes for the same input, model, steps, seed and tile size; the page shows that
command. Requests are queued (at most --queue_size waiting) and computed one at a time; the
compiled programs are kept and reused by later requests of the same model and size.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

import argparse  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"

# Radio choices of models whose files are missing are disabled in the page (Gradio's Radio has no
# per-choice switch): this script greys out every choice listed in the #model element's
# data attribute and keeps doing so when Gradio re-renders it.
_HEAD = """
<script>
(() => {
  const grey = () => {
    const box = document.querySelector('#model');
    const off = JSON.parse(document.querySelector('#unavailable [data-off]')?.dataset.off || '[]');
    if (!box) return;
    box.querySelectorAll('input[type=radio]').forEach((r) => {
      const dead = off.includes(r.value);
      if (r.disabled !== dead) r.disabled = dead;
      const label = r.closest('label');
      if (label) label.style.opacity = dead ? '0.45' : '';
      if (label) label.title = dead ? 'weights not found (see below)' : '';
    });
  };
  new MutationObserver(grey).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', grey);
})();
</script>
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ResShift x4 super-resolution in the browser (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--weights_dir", default=str(HERE / "weights"), help="where the official checkpoints are looked for")
    p.add_argument("--max_pixels", type=int, default=None,
                   help="largest upload in LR pixels (default 1048576 = 1 MP, 16 MP out)")
    p.add_argument("--queue_size", type=int, default=8, help="requests that may wait; more are refused")
    p.add_argument("--work_dir", default=None, help="folder for requests' files (default: a new temporary one)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--cache_dir", default=None, help="persistent XLA compilation cache (as infer.py)")
    p.add_argument("--no_compile_cache", action="store_true")
    return p


def _unavailable_html(choices, weights_dir) -> str:
    """The models that cannot run here and their missing files (small grey text under the
    controls; its data-off attribute is what the page's script greys out)."""
    off = [c for c in choices if not c.available]
    data = html.escape(json.dumps([c.label for c in off]))
    if not off:
        return f'<div data-off="{data}"></div>'
    rows = "".join(f"<li>{html.escape(c.label)}: {html.escape(', '.join(c.missing))}</li>" for c in off)
    return (f'<div data-off="{data}" style="opacity:0.65;font-size:0.8em">Greyed out: weights not found in '
            f"<code>{html.escape(str(weights_dir))}</code> (<code>infer.py</code> downloads them once on a "
            f"machine with network)<ul>{rows}</ul></div>")


def _status(r) -> str:
    (w, h), (W, H) = r.lr_size, r.sr_size
    note = " (includes compiling the program for this model and size; later requests reuse it)" if r.compiled else ""
    return (f"**{r.output.name}**: {w} x {h} → {W} x {H} in **{r.seconds:.2f} s**{note}.  \n"
            f"{html.escape(r.model_line)}")


def build(demo, examples_dir=EXAMPLES):
    import gradio as gr

    from resshift_jax.demo import TILE_CHOICES, DemoError
    from resshift_jax.imageio import IMAGE_EXTS

    choices = demo.choices()
    by_label = {c.label: c for c in choices}
    first = next(c for c in choices if c.available)
    examples = [[str(p)] for p in sorted(pathlib.Path(examples_dir).glob("*.png"))]

    def tile_options(c):
        return [(f"model default ({c.chop})", 0)] + [(str(t), t) for t in TILE_CHOICES if t]

    def on_model(label):
        c = by_label[label]
        if not c.available:
            return gr.update(), gr.update(), f"**{html.escape(label)}** cannot run here: {html.escape(c.reason)}"
        return (gr.update(minimum=1, maximum=c.steps, value=c.default_steps),
                gr.update(choices=tile_options(c), value=0), "")

    def on_run(upload, label, steps, seed, tile, progress=gr.Progress()):
        try:
            r = demo.run(upload, None, label, steps=int(steps), seed=int(seed or 0), tile=int(tile or 0),
                         progress=lambda frac, desc: progress(frac, desc=desc))
        except DemoError as e:
            return None, None, f"⚠️ **Could not process** — {html.escape(str(e))}", ""
        except Exception as e:  # noqa: BLE001 - a failure of this request only: report it and keep serving
            traceback.print_exc()
            return None, None, (f"⚠️ **Failed** — {html.escape(type(e).__name__)}: {html.escape(str(e))} "
                                "(the server log has the traceback)"), ""
        return (str(r.bicubic_preview), str(r.sr_preview)), str(r.output), _status(r), r.command

    # delete_cache: Gradio's copies of uploads and results older than an hour, checked hourly
    with gr.Blocks(title="ResShift-JAX x4 super-resolution", delete_cache=(3600, 3600)) as page:
        gr.Markdown("## ResShift-JAX: x4 image super-resolution\n"
                    "Upload an image (PNG, JPEG, WebP, BMP, TIFF, GIF; 8/16-bit, gray, alpha) or pick an example, "
                    "choose the model, and press **Super-resolve**. Drag the slider to compare bicubic "
                    "upsampling (left) with the result (right).")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Low-resolution image", file_types=list(IMAGE_EXTS), type="filepath",
                                 elem_id="upload")
                if examples:
                    gr.Examples(examples=examples, inputs=[upload], label="Examples (one click)")
                model = gr.Radio([c.label for c in choices], value=first.label, label="Model", elem_id="model")
                steps = gr.Slider(1, first.steps, value=first.default_steps, step=1, elem_id="steps",
                                  label="Network calls (steps of the chain, then its x0 prediction)")
                with gr.Row():
                    seed = gr.Number(12345, precision=0, label="Seed", elem_id="seed")
                    tile = gr.Dropdown(tile_options(first), value=0, label="LR tile size (large inputs)",
                                       elem_id="tile")
                go = gr.Button("Super-resolve", variant="primary", elem_id="run")
                gr.HTML(_unavailable_html(choices, demo.weights_dir), elem_id="unavailable")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                compare = gr.ImageSlider(label="bicubic | ResShift", type="filepath", format="png",
                                         interactive=False, elem_id="compare", max_height=640)
                result = gr.File(label="Download (PNG with the input's bit depth and alpha)", interactive=False,
                                 elem_id="download")
                command = gr.Code(label="The same result from the command line", language="shell",
                                  interactive=False, elem_id="command")
        model.change(on_model, inputs=model, outputs=[steps, tile, status])
        go.click(on_run, inputs=[upload, model, steps, seed, tile], outputs=[compare, result, status, command],
                 concurrency_limit=1)
    return page


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import gradio as gr
    except ImportError:
        print("error: the demo needs Gradio: bash demo.sh (or .venv/bin/pip install -r requirements-demo.txt)",
              file=sys.stderr)
        return 2
    from resshift_jax import compile_cache
    from resshift_jax.demo import DEFAULT_MAX_PIXELS, Demo

    if args.queue_size < 1:
        print("error: --queue_size must be >= 1", file=sys.stderr)
        return 2
    cache = compile_cache.configure(args.cache_dir, enabled=not args.no_compile_cache)
    work = pathlib.Path(args.work_dir) if args.work_dir else pathlib.Path(tempfile.mkdtemp(prefix="resshift_demo_"))
    demo = Demo(work, weights_dir=args.weights_dir, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                dtype=args.dtype)
    for c in demo.choices():
        print(f"model {c.label}: " + ("available" if c.available else c.reason), flush=True)
    print(f"requests' files: {work}; compile cache: {cache or 'off'}", flush=True)
    page = build(demo)
    page.queue(max_size=args.queue_size, default_concurrency_limit=1)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # local fonts only (offline)
                              font_mono=["ui-monospace", "monospace"])
    page.launch(server_name=args.host, server_port=args.port, theme=theme, head=_HEAD, max_file_size="64mb",
                allowed_paths=[str(EXAMPLES)], show_error=False, footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
